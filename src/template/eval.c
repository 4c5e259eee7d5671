/* Template interpreter: walks the tree, writing output. Scoping follows
 * Jinja2: the template and each macro call have a scope; a for loop gets
 * a fresh scope per iteration (so `set` inside a loop does not leak out);
 * if blocks share their enclosing scope; namespace() objects carry state
 * across iterations. */
#include "template/tmpl_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NOMEM(r) pb_fail((r)->err, PB_ENOMEM, "the template needs too much memory (over 256 MiB)")
#define MAX_MACRO_DEPTH 64
#define MAX_EVAL_DEPTH 400 /* nested expressions and bodies: bounds the C stack */
/* Work units per render: a loop iteration or call is one, builtins charge
 * for the items and bytes they process. About seconds of work at most. */
#define BUDGET 10000000u

struct vars {
    const char *name;
    struct value v;
};

struct frame {
    struct frame *parent;
    struct vars *v;
    size_t n, cap;
};

static struct value *frame_find(struct frame *f, const char *name)
{
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (!strcmp(f->v[i].name, name))
                return &f->v[i].v;
    return NULL;
}

static int frame_set(struct render *r, struct frame *f, const char *name, struct value v)
{
    for (size_t i = 0; i < f->n; i++) {
        if (!strcmp(f->v[i].name, name)) {
            f->v[i].v = v;
            return PB_OK;
        }
    }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct vars *nv = arena_alloc(&r->a, cap * sizeof *nv);
        if (!nv)
            return NOMEM(r);
        if (f->n)
            memcpy(nv, f->v, f->n * sizeof *nv);
        f->v = nv;
        f->cap = cap;
    }
    f->v[f->n++] = (struct vars){name, v};
    return PB_OK;
}

struct ctx {
    struct render *r;
    struct frame *globals;
};

static int eval(struct ctx *c, struct frame *f, const struct node *n, struct value *out);
static int exec_body(struct ctx *c, struct frame *f, struct node *const *body, int n_body);

static int spend(struct ctx *c, int line)
{
    return r_spend(c->r, line, 1);
}

/* ---- access ---- */

static int index_of(struct ctx *c, int line, const struct value *key, size_t len, size_t *out, bool *ok)
{
    if (key->k != VK_INT && key->k != VK_BOOL)
        return r_fail(c->r, line, "indices must be integers, not %s", v_kind_name(key));
    int64_t i = key->k == VK_INT ? key->u.i : key->u.b;
    if (i < 0)
        i += (int64_t)len;
    *ok = i >= 0 && (uint64_t)i < len;
    *out = *ok ? (size_t)i : 0;
    return PB_OK;
}

static int get_item(struct ctx *c, int line, const struct value *obj, const struct value *key, struct value *out)
{
    size_t i = 0;
    bool ok = false;
    int rc;
    switch (obj->k) {
    case VK_LIST:
        if ((rc = index_of(c, line, key, obj->u.l->n, &i, &ok)))
            return rc;
        *out = ok ? obj->u.l->v[i] : v_undef();
        return PB_OK;
    case VK_STR: {
        size_t len = utf8_count(obj->u.s->s, obj->u.s->len);
        if ((rc = index_of(c, line, key, len, &i, &ok)))
            return rc;
        if (!ok) {
            *out = v_undef();
            return PB_OK;
        }
        size_t a = utf8_offset(obj->u.s->s, obj->u.s->len, i), b = utf8_offset(obj->u.s->s, obj->u.s->len, i + 1);
        *out = v_substr(c->r, obj->u.s, a, b - a);
        return out->u.s ? PB_OK : NOMEM(c->r);
    }
    case VK_DICT:
    case VK_NS: {
        struct value *v = dict_get(obj->u.d, *key);
        *out = v ? *v : v_undef();
        return PB_OK;
    }
    case VK_UNDEF: return r_fail(c->r, line, "cannot index an undefined value");
    default: *out = v_undef(); return PB_OK;
    }
}

static int get_attr(struct ctx *c, int line, const struct value *obj, const char *name, struct value *out)
{
    if (obj->k == VK_DICT || obj->k == VK_NS) {
        struct value *v = dict_get_str(obj->u.d, name);
        *out = v ? *v : v_undef();
        return PB_OK;
    }
    if (obj->k == VK_UNDEF)
        return r_fail(c->r, line, "cannot read '%s' of an undefined value", name);
    *out = v_undef(); /* strings, numbers, None: no such attribute */
    return PB_OK;
}

/* Python slice bounds for a sequence of len items. */
static int slice_bounds(struct ctx *c, const struct node *n, struct frame *f, int64_t len, int64_t *start,
                        int64_t *stop, int64_t *step)
{
    struct value v;
    int rc;
    *step = 1;
    if (n->n_args && n->args[0]) {
        if ((rc = eval(c, f, n->args[0], &v)))
            return rc;
        if (v.k == VK_INT)
            *step = v.u.i;
        else if (v.k != VK_NONE)
            return r_fail(c->r, n->line, "slice step must be an integer");
    }
    if (*step == 0)
        return r_fail(c->r, n->line, "slice step cannot be zero");
    const struct node *ends[2] = {n->b, n->c};
    int64_t *outs[2] = {start, stop};
    for (int k = 0; k < 2; k++) {
        bool fwd = *step > 0;
        int64_t def = k == 0 ? (fwd ? 0 : len - 1) : (fwd ? len : -1);
        if (!ends[k]) {
            *outs[k] = def;
            continue;
        }
        if ((rc = eval(c, f, ends[k], &v)))
            return rc;
        if (v.k == VK_NONE) {
            *outs[k] = def;
            continue;
        }
        if (v.k != VK_INT)
            return r_fail(c->r, n->line, "slice indices must be integers");
        int64_t x = v.u.i;
        if (x < 0)
            x += len;
        if (fwd)
            x = x < 0 ? 0 : x > len ? len : x;
        else
            x = x < -1 ? -1 : x > len - 1 ? len - 1 : x;
        *outs[k] = x;
    }
    return PB_OK;
}

/* Number of items a slice visits; no overflow for any step. */
static uint64_t slice_count(int64_t start, int64_t stop, int64_t step)
{
    if (step > 0)
        return start < stop ? ((uint64_t)stop - (uint64_t)start - 1) / (uint64_t)step + 1 : 0;
    uint64_t mag = (uint64_t)0 - (uint64_t)step; /* |step|, INT64_MIN included */
    return start > stop ? ((uint64_t)start - (uint64_t)stop - 1) / mag + 1 : 0;
}

static int eval_slice(struct ctx *c, struct frame *f, const struct node *n, struct value *out)
{
    struct value obj;
    int rc = eval(c, f, n->a, &obj);
    if (rc)
        return rc;
    int64_t len;
    if (obj.k == VK_LIST)
        len = (int64_t)obj.u.l->n;
    else if (obj.k == VK_STR)
        len = (int64_t)utf8_count(obj.u.s->s, obj.u.s->len);
    else if (obj.k == VK_UNDEF)
        return r_fail(c->r, n->line, "cannot slice an undefined value");
    else
        return r_fail(c->r, n->line, "cannot slice a %s", v_kind_name(&obj));
    int64_t start = 0, stop = 0, step = 1;
    if ((rc = slice_bounds(c, n, f, len, &start, &stop, &step)))
        return rc;
    uint64_t count = slice_count(start, stop, step);
    if ((rc = r_spend(c->r, n->line, 1 + count / 16)))
        return rc;
    if (obj.k == VK_LIST) {
        struct tlist *l = list_new(c->r, (size_t)count + 1);
        if (!l)
            return NOMEM(c->r);
        /* start + k * step stays within [-1, len] for k < count */
        for (uint64_t k = 0; k < count && rc == PB_OK; k++)
            rc = list_push(c->r, l, obj.u.l->v[start + (int64_t)k * step]);
        *out = (struct value){.k = VK_LIST, .u.l = l};
        return rc;
    }
    const struct tstr *s = obj.u.s;
    if (step == 1) { /* the common case: one contiguous run of bytes */
        size_t a = utf8_offset(s->s, s->len, (size_t)start);
        size_t b = count ? utf8_offset(s->s, s->len, (size_t)stop) : a;
        *out = v_substr(c->r, s, a, b - a);
        return out->u.s ? PB_OK : NOMEM(c->r);
    }
    /* byte offset of every code point, found in one pass */
    size_t *at = malloc(((size_t)len + 1) * sizeof *at);
    if (!at)
        return NOMEM(c->r);
    size_t k = 0;
    for (size_t i = 0; i < s->len; i++)
        if (((unsigned char)s->s[i] & 0xC0) != 0x80 && k < (size_t)len)
            at[k++] = i;
    at[len] = s->len;
    struct obuf o = {0};
    for (uint64_t j = 0; j < count && rc == PB_OK; j++) {
        size_t i = (size_t)(start + (int64_t)j * step);
        rc = obuf_put_sub(c->r, &o, s, at[i], at[i + 1] - at[i]);
    }
    free(at);
    if (rc == PB_OK)
        rc = obuf_value(c->r, &o, out);
    obuf_free(&o);
    return rc;
}

/* ---- calls ---- */

static int eval_args(struct ctx *c, struct frame *f, const struct node *n, struct call_args *a)
{
    a->n_pos = n->n_args;
    a->n_kw = n->n_kw;
    a->kw = n->kw;
    a->pos = arena_alloc(&c->r->a, (size_t)(n->n_args + 1) * sizeof *a->pos);
    a->kw_val = arena_alloc(&c->r->a, (size_t)(n->n_kw + 1) * sizeof *a->kw_val);
    if (!a->pos || !a->kw_val)
        return NOMEM(c->r);
    int rc = PB_OK;
    for (int i = 0; i < n->n_args && rc == PB_OK; i++)
        rc = eval(c, f, n->args[i], &a->pos[i]);
    for (int i = 0; i < n->n_kw && rc == PB_OK; i++)
        rc = eval(c, f, n->kw_val[i], &a->kw_val[i]);
    return rc;
}

static int call_macro(struct ctx *c, int line, const struct node *m, const struct call_args *a, struct value *out)
{
    struct render *r = c->r;
    if (r->depth >= MAX_MACRO_DEPTH)
        return r_fail(r, line, "macro '%s' recurses deeper than %d", m->name, MAX_MACRO_DEPTH);
    if (a->n_pos > m->n_targets)
        return r_fail(r, line, "macro '%s' takes %d arguments, %d given", m->name, m->n_targets, a->n_pos);
    int rc = spend(c, line);
    struct frame scope = {.parent = c->globals};
    for (int i = 0; i < m->n_targets && rc == PB_OK; i++) {
        struct value v = v_undef();
        bool given = false;
        if (i < a->n_pos) {
            v = a->pos[i];
            given = true;
        }
        for (int k = 0; k < a->n_kw && !given; k++)
            if (!strcmp(a->kw[k], m->targets[i])) {
                v = a->kw_val[k];
                given = true;
            }
        if (!given && m->defaults[i])
            rc = eval(c, &scope, m->defaults[i], &v);
        if (rc == PB_OK)
            rc = frame_set(r, &scope, m->targets[i], v);
    }
    for (int k = 0; k < a->n_kw && rc == PB_OK; k++) {
        bool known = false;
        for (int i = 0; i < m->n_targets && !known; i++)
            known = !strcmp(a->kw[k], m->targets[i]);
        if (!known)
            rc = r_fail(r, line, "macro '%s' has no parameter '%s'", m->name, a->kw[k]);
    }
    if (rc)
        return rc;
    struct obuf o = {0}, *saved = r->out;
    r->out = &o;
    r->depth++;
    rc = exec_body(c, &scope, m->body, m->n_body);
    r->depth--;
    r->out = saved;
    if (rc > 0)
        rc = r_fail(r, line, "break or continue outside a loop");
    if (rc == PB_OK)
        rc = obuf_value(r, &o, out);
    obuf_free(&o);
    return rc;
}

static int eval_call(struct ctx *c, struct frame *f, const struct node *n, struct value *out)
{
    struct call_args a;
    int rc;
    if (n->a->kind == N_ATTR) { /* obj.method(...) */
        struct value obj;
        if ((rc = eval(c, f, n->a->a, &obj)))
            return rc;
        if ((obj.k == VK_DICT || obj.k == VK_NS)) {
            struct value *fn = dict_get_str(obj.u.d, n->a->name);
            if (fn && fn->k == VK_MACRO) {
                if ((rc = eval_args(c, f, n, &a)))
                    return rc;
                return call_macro(c, n->line, fn->u.macro, &a, out);
            }
        }
        if ((rc = eval_args(c, f, n, &a)))
            return rc;
        return call_method(c->r, n->line, &obj, n->a->name, &a, out);
    }
    struct value fn;
    if ((rc = eval(c, f, n->a, &fn)) || (rc = eval_args(c, f, n, &a)))
        return rc;
    if (fn.k == VK_BUILTIN)
        return call_global(c->r, n->line, fn.u.builtin, &a, out);
    if (fn.k == VK_MACRO)
        return call_macro(c, n->line, fn.u.macro, &a, out);
    if (n->a->kind == N_NAME && fn.k == VK_UNDEF)
        return r_fail(c->r, n->line, "'%s' is undefined (not a known function)", n->a->name);
    return r_fail(c->r, n->line, "a %s is not callable", v_kind_name(&fn));
}

/* ---- operators ---- */

static bool number(const struct value *v)
{
    return v->k == VK_INT || v->k == VK_FLOAT || v->k == VK_BOOL;
}

static double as_f(const struct value *v)
{
    return v->k == VK_FLOAT ? v->u.f : (double)(v->k == VK_INT ? v->u.i : v->u.b);
}

static int64_t as_i(const struct value *v)
{
    return v->k == VK_INT ? v->u.i : v->u.b;
}

static int concat_str(struct ctx *c, const struct value *a, const struct value *b, int line, struct value *out)
{
    struct obuf o = {0};
    int rc = v_to_str(c->r, line, a, &o);
    if (rc == PB_OK)
        rc = v_to_str(c->r, line, b, &o);
    if (rc == PB_OK)
        rc = r_spend(c->r, line, o.n / 16);
    if (rc == PB_OK)
        rc = obuf_value(c->r, &o, out);
    obuf_free(&o);
    return rc;
}

static int repeat(struct ctx *c, const struct value *seq, int64_t times, int line, struct value *out)
{
    if (times < 0)
        times = 0;
    size_t unit = seq->k == VK_STR ? seq->u.s->len : seq->u.l->n * sizeof(struct value);
    if (unit && (uint64_t)times > c->r->max_output / unit)
        return r_fail(c->r, line, "repetition is too large");
    int rc = r_spend(c->r, line, 1 + (uint64_t)times * unit / 16);
    if (rc)
        return rc;
    if (seq->k == VK_STR) {
        struct obuf o = {0};
        for (int64_t i = 0; i < times && rc == PB_OK; i++)
            rc = obuf_put_sub(c->r, &o, seq->u.s, 0, seq->u.s->len);
        if (rc == PB_OK)
            rc = obuf_value(c->r, &o, out);
        obuf_free(&o);
        return rc;
    }
    struct tlist *l = list_new(c->r, seq->u.l->n * (size_t)times + 1);
    if (!l)
        return NOMEM(c->r);
    for (int64_t i = 0; i < times && rc == PB_OK; i++)
        for (size_t k = 0; k < seq->u.l->n && rc == PB_OK; k++)
            rc = list_push(c->r, l, seq->u.l->v[k]);
    *out = (struct value){.k = VK_LIST, .u.l = l};
    return rc;
}

static int binop(struct ctx *c, const struct node *n, const struct value *a, const struct value *b,
                 struct value *out)
{
    const char *op = n->op;
    struct render *r = c->r;
    if (!strcmp(op, "~"))
        return concat_str(c, a, b, n->line, out);
    if (!strcmp(op, "+")) {
        if (a->k == VK_STR && b->k == VK_STR)
            return concat_str(c, a, b, n->line, out);
        if (a->k == VK_LIST && b->k == VK_LIST) {
            struct tlist *l = list_new(r, a->u.l->n + b->u.l->n + 1);
            if (!l)
                return NOMEM(r);
            int rc = PB_OK;
            for (size_t i = 0; i < a->u.l->n && rc == PB_OK; i++)
                rc = list_push(r, l, a->u.l->v[i]);
            for (size_t i = 0; i < b->u.l->n && rc == PB_OK; i++)
                rc = list_push(r, l, b->u.l->v[i]);
            *out = (struct value){.k = VK_LIST, .u.l = l};
            return rc;
        }
    }
    if (!strcmp(op, "*")) {
        if ((a->k == VK_STR || a->k == VK_LIST) && (b->k == VK_INT || b->k == VK_BOOL))
            return repeat(c, a, as_i(b), n->line, out);
        if ((b->k == VK_STR || b->k == VK_LIST) && (a->k == VK_INT || a->k == VK_BOOL))
            return repeat(c, b, as_i(a), n->line, out);
    }
    if (!number(a) || !number(b)) {
        if (a->k == VK_UNDEF || b->k == VK_UNDEF)
            return r_fail(r, n->line, "'%s' used with an undefined value", op);
        return r_fail(r, n->line, "unsupported operands for '%s': %s and %s", op, v_kind_name(a), v_kind_name(b));
    }
    bool ints = a->k != VK_FLOAT && b->k != VK_FLOAT;
    if (!strcmp(op, "/")) {
        if (as_f(b) == 0)
            return r_fail(r, n->line, "division by zero");
        *out = v_float(as_f(a) / as_f(b));
        return PB_OK;
    }
    if (ints) {
        int64_t x = as_i(a), y = as_i(b), z = 0;
        bool overflow = false;
        switch (op[0]) {
        case '+': overflow = __builtin_add_overflow(x, y, &z); break;
        case '-': overflow = __builtin_sub_overflow(x, y, &z); break;
        case '*':
            if (op[1] == '*') { /* ** */
                if (y < 0) {
                    *out = v_float(pow((double)x, (double)y));
                    return PB_OK;
                }
                if (x == 0 || x == 1 || x == -1) {
                    z = y == 0 ? 1 : x == -1 ? (y % 2 ? -1 : 1) : x;
                } else { /* |x| >= 2 overflows within 63 steps */
                    z = 1;
                    for (int64_t i = 0; i < y && !overflow; i++)
                        overflow = __builtin_mul_overflow(z, x, &z);
                }
            } else {
                overflow = __builtin_mul_overflow(x, y, &z);
            }
            break;
        case '/': /* // */
        case '%':
            if (y == 0)
                return r_fail(r, n->line, "division by zero");
            if (x == INT64_MIN && y == -1) {
                overflow = true;
                break;
            }
            z = op[0] == '%' ? x % y : x / y;
            /* Python floors: fix C's truncation */
            if (op[0] == '%' ? (z != 0 && ((z < 0) != (y < 0))) : ((x % y != 0) && ((x < 0) != (y < 0)))) {
                if (op[0] == '%')
                    z += y;
                else
                    z -= 1;
            }
            break;
        default: return r_fail(r, n->line, "unknown operator '%s'", op);
        }
        if (overflow)
            return r_fail(r, n->line, "integer overflow in '%s'", op);
        *out = v_int(z);
        return PB_OK;
    }
    double x = as_f(a), y = as_f(b), z;
    switch (op[0]) {
    case '+': z = x + y; break;
    case '-': z = x - y; break;
    case '*': z = op[1] == '*' ? pow(x, y) : x * y; break;
    case '/':
        if (y == 0)
            return r_fail(r, n->line, "division by zero");
        z = floor(x / y);
        break;
    case '%':
        if (y == 0)
            return r_fail(r, n->line, "division by zero");
        z = fmod(x, y);
        if (z != 0 && ((z < 0) != (y < 0)))
            z += y;
        break;
    default: return r_fail(r, n->line, "unknown operator '%s'", op);
    }
    *out = v_float(z);
    return PB_OK;
}

static int contains(struct ctx *c, int line, const struct value *item, const struct value *seq, bool *out)
{
    switch (seq->k) {
    case VK_STR:
        if (item->k != VK_STR)
            return r_fail(c->r, line, "'in <string>' needs a string on the left, not %s", v_kind_name(item));
        *out = false;
        for (size_t i = 0; !*out && i + item->u.s->len <= seq->u.s->len; i++)
            *out = memcmp(seq->u.s->s + i, item->u.s->s, item->u.s->len) == 0;
        return PB_OK;
    case VK_LIST:
        *out = false;
        for (size_t i = 0; i < seq->u.l->n && !*out; i++)
            *out = v_equal(&seq->u.l->v[i], item);
        return PB_OK;
    case VK_DICT:
    case VK_NS: *out = dict_get(seq->u.d, *item) != NULL; return PB_OK;
    case VK_UNDEF: *out = false; return PB_OK;
    default: return r_fail(c->r, line, "a %s cannot contain anything", v_kind_name(seq));
    }
}

/* ---- expressions ---- */

static int eval_node(struct ctx *c, struct frame *f, const struct node *n, struct value *out)
{
    struct value a, b;
    int rc;
    switch (n->kind) {
    case N_LIT: *out = n->lit; return PB_OK;
    case N_NAME: {
        struct value *v = frame_find(f, n->name);
        if (v) {
            *out = *v;
        } else {
            int g = global_find(n->name);
            *out = g >= 0 ? (struct value){.k = VK_BUILTIN, .u.builtin = g} : v_undef();
        }
        return PB_OK;
    }
    case N_ATTR:
        if ((rc = eval(c, f, n->a, &a)))
            return rc;
        return get_attr(c, n->line, &a, n->name, out);
    case N_ITEM:
        if ((rc = eval(c, f, n->a, &a)) || (rc = eval(c, f, n->b, &b)))
            return rc;
        return get_item(c, n->line, &a, &b, out);
    case N_SLICE: return eval_slice(c, f, n, out);
    case N_CALL: return eval_call(c, f, n, out);
    case N_FILTER: {
        struct call_args args;
        if ((rc = eval(c, f, n->a, &a)) || (rc = eval_args(c, f, n, &args)))
            return rc;
        return call_filter(c->r, n->line, n->name, &a, &args, out);
    }
    case N_TEST: {
        struct call_args args;
        bool ok;
        if ((rc = eval(c, f, n->a, &a)) || (rc = eval_args(c, f, n, &args)) ||
            (rc = call_test(c->r, n->line, n->name, &a, &args, &ok)))
            return rc;
        *out = v_bool(ok != n->negated);
        return PB_OK;
    }
    case N_NOT:
        if ((rc = eval(c, f, n->a, &a)))
            return rc;
        *out = v_bool(!v_truthy(&a));
        return PB_OK;
    case N_NEG:
        if ((rc = eval(c, f, n->a, &a)))
            return rc;
        if (a.k == VK_INT && a.u.i != INT64_MIN)
            *out = v_int(-a.u.i);
        else if (a.k == VK_BOOL)
            *out = v_int(-(int64_t)a.u.b);
        else if (a.k == VK_FLOAT)
            *out = v_float(-a.u.f);
        else
            return r_fail(c->r, n->line, "cannot negate a %s", v_kind_name(&a));
        return PB_OK;
    case N_BINOP:
        if ((rc = eval(c, f, n->a, &a)) || (rc = eval(c, f, n->b, &b)))
            return rc;
        return binop(c, n, &a, &b, out);
    case N_AND:
    case N_OR:
        if ((rc = eval(c, f, n->a, &a)))
            return rc;
        if (v_truthy(&a) == (n->kind == N_OR)) {
            *out = a;
            return PB_OK;
        }
        return eval(c, f, n->b, out);
    case N_CMP: {
        if ((rc = eval(c, f, n->a, &a)) || (rc = eval(c, f, n->b, &b)))
            return rc;
        bool res = false;
        if (!strcmp(n->op, "in") || !strcmp(n->op, "ni")) {
            if ((rc = contains(c, n->line, &a, &b, &res)))
                return rc;
            if (n->op[0] == 'n')
                res = !res;
        } else if (!strcmp(n->op, "==") || !strcmp(n->op, "!=")) {
            res = v_equal(&a, &b) == (n->op[0] == '=');
        } else {
            int cmp;
            if ((rc = v_compare(c->r, n->line, &a, &b, &cmp)))
                return rc;
            res = n->op[0] == '<' ? (n->op[1] ? cmp <= 0 : cmp < 0) : (n->op[1] ? cmp >= 0 : cmp > 0);
        }
        *out = v_bool(res);
        return PB_OK;
    }
    case N_COND:
        if ((rc = eval(c, f, n->a, &a)))
            return rc;
        if (v_truthy(&a))
            return eval(c, f, n->b, out);
        if (n->c)
            return eval(c, f, n->c, out);
        *out = v_undef();
        return PB_OK;
    case N_LIST:
    case N_TUPLE: {
        struct tlist *l = list_new(c->r, (size_t)n->n_args + 1);
        if (!l)
            return NOMEM(c->r);
        for (int i = 0; i < n->n_args; i++) {
            if ((rc = eval(c, f, n->args[i], &a)) || (rc = list_push(c->r, l, a)))
                return rc;
        }
        l->tuple = n->kind == N_TUPLE;
        *out = (struct value){.k = VK_LIST, .u.l = l};
        return PB_OK;
    }
    case N_DICT: {
        struct tdict *d = dict_new(c->r, (size_t)n->n_args / 2 + 1);
        if (!d)
            return NOMEM(c->r);
        for (int i = 0; i + 1 < n->n_args; i += 2) {
            if ((rc = eval(c, f, n->args[i], &a)) || (rc = eval(c, f, n->args[i + 1], &b)) ||
                (rc = dict_set(c->r, d, a, b)))
                return rc;
        }
        *out = (struct value){.k = VK_DICT, .u.d = d};
        return PB_OK;
    }
    default: return r_fail(c->r, n->line, "not an expression");
    }
}

/* Every nested evaluation passes here, so that no template (deeply
 * nested brackets, recursion through macros) can exhaust the C stack. */
static int eval(struct ctx *c, struct frame *f, const struct node *n, struct value *out)
{
    if (c->r->eval_depth >= MAX_EVAL_DEPTH)
        return r_fail(c->r, n->line, "the template nests deeper than %d levels", MAX_EVAL_DEPTH);
    c->r->eval_depth++;
    int rc = eval_node(c, f, n, out);
    c->r->eval_depth--;
    return rc;
}

/* ---- statements ---- */

static int iterable_items(struct ctx *c, int line, const struct value *v, struct tlist **out)
{
    static const struct call_args none = {0};
    struct value l;
    if (v->k == VK_LIST) {
        *out = v->u.l;
        return PB_OK;
    }
    if (v->k != VK_UNDEF && v->k != VK_NONE && v->k != VK_DICT && v->k != VK_NS && v->k != VK_STR)
        return r_fail(c->r, line, "cannot loop over a %s", v_kind_name(v));
    if (v->k == VK_NONE)
        return r_fail(c->r, line, "cannot loop over None");
    int rc = call_filter(c->r, line, "list", v, &none, &l);
    *out = l.u.l;
    return rc;
}

/* Binds the loop targets to item (unpacking a pair for "k, v"). */
static int bind_targets(struct ctx *c, struct frame *f, const struct node *n, const struct value *item)
{
    if (n->n_targets == 1)
        return frame_set(c->r, f, n->targets[0], *item);
    if (item->k != VK_LIST || item->u.l->n != (size_t)n->n_targets)
        return r_fail(c->r, n->line, "cannot unpack a %s into %d variables", v_kind_name(item), n->n_targets);
    int rc = PB_OK;
    for (int i = 0; i < n->n_targets && rc == PB_OK; i++)
        rc = frame_set(c->r, f, n->targets[i], item->u.l->v[i]);
    return rc;
}

static int set_key(struct render *r, struct tdict *d, const char *k, struct value v)
{
    struct value *cur = dict_get_str(d, k);
    if (cur) { /* no allocation when updating */
        *cur = v;
        return PB_OK;
    }
    struct value key = v_cstr(r, k);
    return key.u.s ? dict_set(r, d, key, v) : NOMEM(r);
}

/* Sets the loop object's fields for item i of items. One object serves
 * the whole loop (as Jinja's LoopContext does), so an iteration costs no
 * memory of its own. */
static int update_loop(struct render *r, struct tdict *loop, const struct tlist *items, size_t i)
{
    int64_t len = (int64_t)items->n, idx = (int64_t)i;
    int rc;
    if ((rc = set_key(r, loop, "index", v_int(idx + 1))) || (rc = set_key(r, loop, "index0", v_int(idx))) ||
        (rc = set_key(r, loop, "revindex", v_int(len - idx))) ||
        (rc = set_key(r, loop, "revindex0", v_int(len - idx - 1))) ||
        (rc = set_key(r, loop, "first", v_bool(i == 0))) || (rc = set_key(r, loop, "last", v_bool(i + 1 == items->n))) ||
        (rc = set_key(r, loop, "length", v_int(len))) || (rc = set_key(r, loop, "depth", v_int(1))) ||
        (rc = set_key(r, loop, "depth0", v_int(0))) ||
        (rc = set_key(r, loop, "previtem", i ? items->v[i - 1] : v_undef())))
        return rc;
    return set_key(r, loop, "nextitem", i + 1 < items->n ? items->v[i + 1] : v_undef());
}

static int exec_for(struct ctx *c, struct frame *f, const struct node *n)
{
    struct value seq;
    struct tlist *all = NULL, *items;
    int rc = eval(c, f, n->a, &seq);
    if (rc || (rc = iterable_items(c, n->line, &seq, &all)))
        return rc;
    items = all;
    struct frame it = {.parent = f}; /* reused: cleared each iteration */
    if (n->b) { /* for x in xs if cond */
        if (!(items = list_new(c->r, all->n + 1)))
            return NOMEM(c->r);
        for (size_t i = 0; i < all->n && rc == PB_OK; i++) {
            struct value keep;
            it.n = 0;
            if ((rc = spend(c, n->line)) || (rc = bind_targets(c, &it, n, &all->v[i])) ||
                (rc = eval(c, &it, n->b, &keep)))
                return rc;
            if (v_truthy(&keep))
                rc = list_push(c->r, items, all->v[i]);
        }
        if (rc)
            return rc;
    }
    if (items->n == 0)
        return exec_body(c, f, n->else_body, n->n_else);
    struct tdict *loop = dict_new(c->r, 12);
    if (!loop)
        return NOMEM(c->r);
    for (size_t i = 0; i < items->n; i++) {
        it.n = 0;
        if ((rc = spend(c, n->line)) || (rc = update_loop(c->r, loop, items, i)) ||
            (rc = frame_set(c->r, &it, "loop", (struct value){.k = VK_DICT, .u.d = loop})) ||
            (rc = bind_targets(c, &it, n, &items->v[i])))
            return rc;
        rc = exec_body(c, &it, n->body, n->n_body);
        if (rc == FLOW_BREAK)
            break;
        if (rc == FLOW_CONTINUE)
            continue;
        if (rc)
            return rc;
    }
    return PB_OK;
}

static int exec_set(struct ctx *c, struct frame *f, const struct node *n)
{
    struct value v;
    int rc;
    if (n->kind == N_SET_BLOCK) {
        struct obuf o = {0}, *saved = c->r->out;
        c->r->out = &o;
        rc = exec_body(c, f, n->body, n->n_body);
        c->r->out = saved;
        if (rc == PB_OK)
            rc = obuf_value(c->r, &o, &v);
        if (rc == PB_OK)
            rc = frame_set(c->r, f, n->name, v);
        obuf_free(&o);
        return rc;
    }
    if ((rc = eval(c, f, n->b, &v)))
        return rc;
    if (n->a) { /* ns.attr = v */
        struct value ns;
        if ((rc = eval(c, f, n->a, &ns)))
            return rc;
        if (ns.k != VK_NS)
            return r_fail(c->r, n->line, "can only set attributes of a namespace(), not of a %s", v_kind_name(&ns));
        return set_key(c->r, ns.u.d, n->name, v);
    }
    if (n->n_targets) /* set a, b = pair */
        return bind_targets(c, f, n, &v);
    return frame_set(c->r, f, n->name, v);
}

static int exec_statements(struct ctx *c, struct frame *f, struct node *const *body, int n_body)
{
    int rc = PB_OK;
    for (int i = 0; i < n_body && rc == PB_OK; i++) {
        const struct node *n = body[i];
        struct value v;
        switch (n->kind) {
        case N_TEXT: rc = obuf_put(c->r, c->r->out, n->lit.u.s->s, n->lit.u.s->len); break;
        case N_OUTPUT:
            if ((rc = eval(c, f, n->a, &v)) == PB_OK)
                rc = v_to_str(c->r, n->line, &v, c->r->out);
            break;
        case N_IF:
            if ((rc = eval(c, f, n->a, &v)) == PB_OK)
                rc = v_truthy(&v) ? exec_body(c, f, n->body, n->n_body) : exec_body(c, f, n->else_body, n->n_else);
            break;
        case N_FOR: rc = exec_for(c, f, n); break;
        case N_SET:
        case N_SET_BLOCK: rc = exec_set(c, f, n); break;
        case N_MACRO: rc = frame_set(c->r, f, n->name, (struct value){.k = VK_MACRO, .u.macro = n}); break;
        case N_BREAK: return FLOW_BREAK;
        case N_CONTINUE: return FLOW_CONTINUE;
        case N_BODY: rc = exec_body(c, f, n->body, n->n_body); break;
        default: rc = r_fail(c->r, n->line, "not a statement");
        }
    }
    return rc;
}

static int exec_body(struct ctx *c, struct frame *f, struct node *const *body, int n_body)
{
    if (c->r->eval_depth >= MAX_EVAL_DEPTH)
        return r_fail(c->r, n_body ? body[0]->line : 0, "the template nests deeper than %d levels", MAX_EVAL_DEPTH);
    c->r->eval_depth++;
    int rc = exec_statements(c, f, body, n_body);
    c->r->eval_depth--;
    return rc;
}

/* ---- entry points ---- */

int tmpl_parse(const char *src, size_t len, struct tmpl **out, pb_err *err)
{
    *out = NULL;
    struct tmpl *t = calloc(1, sizeof *t);
    if (!t)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    t->arena.limit = 64u << 20;
    struct token *toks = NULL;
    size_t n = 0;
    int rc = tmpl_lex(&t->arena, src, len, &toks, &n, err);
    if (rc == PB_OK)
        rc = tmpl_parse_tokens(t, toks, n, err);
    free(toks);
    if (rc) {
        tmpl_free(t);
        return rc;
    }
    *out = t;
    return PB_OK;
}

void tmpl_free(struct tmpl *t)
{
    if (!t)
        return;
    arena_free(&t->arena);
    free(t);
}

/* Binds the members of the JSON object vars as template globals. */
static int bind_json(struct render *r, struct frame *globals, const json_t *vars, bool user)
{
    if (!vars)
        return PB_OK;
    if (!json_is_object(vars))
        return pb_fail(r->err, PB_EINVAL, "template variables must be a JSON object");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vars, key, val)
    {
        struct value v;
        char *name = arena_strndup(&r->a, key, strlen(key));
        if (!name)
            return NOMEM(r);
        int rc = v_from_json(r, val, user, &v);
        if (rc == PB_OK)
            rc = frame_set(r, globals, name, v);
        if (rc)
            return rc;
    }
    return PB_OK;
}

int tmpl_render(const struct tmpl *t, const struct tmpl_vars *vars, const struct tmpl_opts *opts,
                struct tmpl_output *out, pb_err *err)
{
    *out = (struct tmpl_output){0};
    struct obuf o = {0};
    struct render r = {
        .a = {.limit = 256u << 20},
        .err = err,
        .out = &o,
        .max_output = opts && opts->max_output ? opts->max_output : 16u << 20,
        .now = opts && opts->now ? opts->now : time(NULL),
        .budget = BUDGET,
    };
    struct frame globals = {0};
    struct ctx c = {&r, &globals};
    int rc = PB_OK;
    if (vars && (rc = bind_json(&r, &globals, vars->plain, false)) == PB_OK)
        rc = bind_json(&r, &globals, vars->user, true);
    if (rc == PB_OK)
        rc = exec_body(&c, &globals, t->body, t->n_body);
    if (rc > 0)
        rc = pb_fail(err, PB_EINVAL, "template: break or continue outside a loop");
    arena_free(&r.a);
    if (rc == PB_OK && !o.p && !(o.p = calloc(1, 1)))
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
    if (rc == PB_OK && !o.taint && !(o.taint = calloc(o.n + 1, 1)))
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
    if (rc) {
        obuf_free(&o);
        return rc;
    }
    out->text = o.p;
    out->len = o.n;
    out->user = o.taint;
    return PB_OK;
}

void tmpl_output_free(struct tmpl_output *out)
{
    free(out->text);
    free(out->user);
    *out = (struct tmpl_output){0};
}
