/* Template values with Python's semantics where templates rely on them:
 * truthiness, equality (1 == 1.0 == True), str() and repr() formats,
 * json.dumps output. */
#include "template/tmpl_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int r_fail(struct render *r, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        return pb_fail(r->err, PB_EINVAL, "template line %d: %s", line, msg);
    return pb_fail(r->err, PB_EINVAL, "template: %s", msg);
}

int obuf_put_marked(struct render *r, struct obuf *o, const char *s, size_t n, const uint8_t *taint, bool all)
{
    if (n == 0)
        return PB_OK;
    if (n > r->max_output || o->n > r->max_output - n)
        return pb_fail(r->err, PB_ERANGE, "template output exceeds %zu bytes", r->max_output);
    if (o->n + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->n + n + 1)
            cap *= 2;
        char *p = realloc(o->p, cap);
        if (!p)
            return pb_fail(r->err, PB_ENOMEM, "out of memory rendering the template");
        o->p = p;
        if (o->taint) {
            uint8_t *t = realloc(o->taint, cap);
            if (!t)
                return pb_fail(r->err, PB_ENOMEM, "out of memory rendering the template");
            o->taint = t;
        }
        o->cap = cap;
    }
    bool marked = all;
    for (size_t i = 0; !marked && taint && i < n; i++)
        marked = taint[i];
    if (marked && !o->taint) { /* the first marked byte: start the marks */
        if (!(o->taint = calloc(o->cap, 1)))
            return pb_fail(r->err, PB_ENOMEM, "out of memory rendering the template");
    }
    memcpy(o->p + o->n, s, n);
    if (o->taint) {
        if (all)
            memset(o->taint + o->n, 1, n);
        else if (taint)
            memcpy(o->taint + o->n, taint, n);
        else
            memset(o->taint + o->n, 0, n);
    }
    o->n += n;
    o->p[o->n] = 0;
    return PB_OK;
}

int obuf_put(struct render *r, struct obuf *o, const char *s, size_t n)
{
    return obuf_put_marked(r, o, s, n, NULL, false);
}

int obuf_put_sub(struct render *r, struct obuf *o, const struct tstr *s, size_t off, size_t n)
{
    return obuf_put_marked(r, o, s->s + off, n, s->taint ? s->taint + off : NULL, false);
}

void obuf_free(struct obuf *o)
{
    free(o->p);
    free(o->taint);
    o->p = NULL;
    o->taint = NULL;
    o->n = o->cap = 0;
}

int obuf_value(struct render *r, const struct obuf *o, struct value *out)
{
    *out = (struct value){.k = VK_STR, .u.s = tstr_new_marked(&r->a, o->p ? o->p : "", o->n, o->taint, false)};
    return out->u.s ? PB_OK : pb_fail(r->err, PB_ENOMEM, "the template needs too much memory (over 256 MiB)");
}

int r_spend(struct render *r, int line, uint64_t units)
{
    if (units > r->budget) {
        r->budget = 0;
        return r_fail(r, line, "the template runs too long (its work budget is spent)");
    }
    r->budget -= units;
    return PB_OK;
}

static int put_c(struct render *r, struct obuf *o, const char *s)
{
    return obuf_put(r, o, s, strlen(s));
}

/* ---- constructors ---- */

struct value v_undef(void) { return (struct value){.k = VK_UNDEF}; }
struct value v_none(void) { return (struct value){.k = VK_NONE}; }
struct value v_bool(bool b) { return (struct value){.k = VK_BOOL, .u.b = b}; }
struct value v_int(int64_t i) { return (struct value){.k = VK_INT, .u.i = i}; }
struct value v_float(double f) { return (struct value){.k = VK_FLOAT, .u.f = f}; }

struct value v_str(struct render *r, const char *s, size_t n)
{
    return (struct value){.k = VK_STR, .u.s = tstr_new(&r->a, s, n)};
}

struct value v_cstr(struct render *r, const char *s)
{
    return v_str(r, s, strlen(s));
}

struct value v_substr(struct render *r, const struct tstr *s, size_t off, size_t n)
{
    return (struct value){.k = VK_STR,
                          .u.s = tstr_new_marked(&r->a, s->s + off, n, s->taint ? s->taint + off : NULL, false)};
}

struct tlist *list_new(struct render *r, size_t cap)
{
    struct tlist *l = arena_alloc(&r->a, sizeof *l);
    if (!l)
        return NULL;
    l->n = 0;
    l->tuple = false;
    l->cap = cap ? cap : 4;
    l->v = arena_alloc(&r->a, l->cap * sizeof *l->v);
    return l->v ? l : NULL;
}

int list_push(struct render *r, struct tlist *l, struct value v)
{
    if (l->n == l->cap) {
        struct value *nv = arena_alloc(&r->a, l->cap * 2 * sizeof *nv);
        if (!nv)
            return pb_fail(r->err, PB_ENOMEM, "the template needs too much memory (over 256 MiB)");
        memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap *= 2;
    }
    l->v[l->n++] = v;
    return PB_OK;
}

struct tdict *dict_new(struct render *r, size_t cap)
{
    struct tdict *d = arena_alloc(&r->a, sizeof *d);
    if (!d)
        return NULL;
    d->n = 0;
    d->cap = cap ? cap : 4;
    d->keys = arena_alloc(&r->a, d->cap * sizeof *d->keys);
    d->vals = arena_alloc(&r->a, d->cap * sizeof *d->vals);
    return d->keys && d->vals ? d : NULL;
}

struct value *dict_get(const struct tdict *d, struct value key)
{
    for (size_t i = 0; i < d->n; i++)
        if (v_equal(&d->keys[i], &key))
            return &d->vals[i];
    return NULL;
}

struct value *dict_get_str(const struct tdict *d, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].k == VK_STR && d->keys[i].u.s->len == n && memcmp(d->keys[i].u.s->s, key, n) == 0)
            return &d->vals[i];
    return NULL;
}

int dict_set(struct render *r, struct tdict *d, struct value key, struct value v)
{
    struct value *cur = dict_get(d, key);
    if (cur) {
        *cur = v;
        return PB_OK;
    }
    if (d->n == d->cap) {
        struct value *nk = arena_alloc(&r->a, d->cap * 2 * sizeof *nk);
        struct value *nv = arena_alloc(&r->a, d->cap * 2 * sizeof *nv);
        if (!nk || !nv)
            return pb_fail(r->err, PB_ENOMEM, "the template needs too much memory (over 256 MiB)");
        memcpy(nk, d->keys, d->n * sizeof *nk);
        memcpy(nv, d->vals, d->n * sizeof *nv);
        d->keys = nk;
        d->vals = nv;
        d->cap *= 2;
    }
    d->keys[d->n] = key;
    d->vals[d->n] = v;
    d->n++;
    return PB_OK;
}

/* ---- truth, equality, order ---- */

bool v_truthy(const struct value *v)
{
    switch (v->k) {
    case VK_UNDEF:
    case VK_NONE: return false;
    case VK_BOOL: return v->u.b;
    case VK_INT: return v->u.i != 0;
    case VK_FLOAT: return v->u.f != 0;
    case VK_STR: return v->u.s->len > 0;
    case VK_LIST: return v->u.l->n > 0;
    case VK_DICT: return v->u.d->n > 0;
    default: return true;
    }
}

static bool is_number(const struct value *v)
{
    return v->k == VK_BOOL || v->k == VK_INT || v->k == VK_FLOAT;
}

static double as_double(const struct value *v)
{
    return v->k == VK_FLOAT ? v->u.f : v->k == VK_INT ? (double)v->u.i : (double)v->u.b;
}

static bool equal_at(const struct value *a, const struct value *b, int level);

bool v_equal(const struct value *a, const struct value *b)
{
    return equal_at(a, b, 0);
}

/* Deeper than this, values compare unequal: a template cannot build
 * nesting that exhausts the stack. */
#define MAX_VALUE_DEPTH 100

static bool equal_at(const struct value *a, const struct value *b, int level)
{
    if (level > MAX_VALUE_DEPTH)
        return false;
    if (is_number(a) && is_number(b)) {
        if (a->k != VK_FLOAT && b->k != VK_FLOAT)
            return (a->k == VK_INT ? a->u.i : a->u.b) == (b->k == VK_INT ? b->u.i : b->u.b);
        return as_double(a) == as_double(b);
    }
    if (a->k != b->k)
        return false;
    switch (a->k) {
    case VK_UNDEF:
    case VK_NONE: return true;
    case VK_STR: return a->u.s->len == b->u.s->len && memcmp(a->u.s->s, b->u.s->s, a->u.s->len) == 0;
    case VK_LIST:
        if (a->u.l->n != b->u.l->n)
            return false;
        for (size_t i = 0; i < a->u.l->n; i++)
            if (!equal_at(&a->u.l->v[i], &b->u.l->v[i], level + 1))
                return false;
        return true;
    case VK_DICT:
    case VK_NS:
        if (a->u.d->n != b->u.d->n)
            return false;
        for (size_t i = 0; i < a->u.d->n; i++) {
            struct value *o = dict_get(b->u.d, a->u.d->keys[i]);
            if (!o || !equal_at(&a->u.d->vals[i], o, level + 1))
                return false;
        }
        return true;
    case VK_MACRO: return a->u.macro == b->u.macro;
    case VK_BUILTIN: return a->u.builtin == b->u.builtin;
    default: return false;
    }
}

const char *v_kind_name(const struct value *v)
{
    static const char *names[] = {"Undefined", "NoneType", "bool", "int", "float", "str",
                                  "list", "dict", "Namespace", "Macro", "builtin_function"};
    return names[v->k];
}

static int compare_at(struct render *r, int line, const struct value *a, const struct value *b, int *cmp, int level);

int v_compare(struct render *r, int line, const struct value *a, const struct value *b, int *cmp)
{
    return compare_at(r, line, a, b, cmp, 0);
}

static int compare_at(struct render *r, int line, const struct value *a, const struct value *b, int *cmp, int level)
{
    if (level > MAX_VALUE_DEPTH)
        return r_fail(r, line, "values nested too deeply to compare");
    if (is_number(a) && is_number(b)) {
        if (a->k != VK_FLOAT && b->k != VK_FLOAT) {
            int64_t x = a->k == VK_INT ? a->u.i : a->u.b, y = b->k == VK_INT ? b->u.i : b->u.b;
            *cmp = x < y ? -1 : x > y;
        } else {
            double x = as_double(a), y = as_double(b);
            *cmp = x < y ? -1 : x > y;
        }
        return PB_OK;
    }
    if (a->k == VK_STR && b->k == VK_STR) {
        size_t n = a->u.s->len < b->u.s->len ? a->u.s->len : b->u.s->len;
        int c = memcmp(a->u.s->s, b->u.s->s, n);
        *cmp = c ? (c < 0 ? -1 : 1) : (a->u.s->len < b->u.s->len ? -1 : a->u.s->len > b->u.s->len);
        return PB_OK;
    }
    if (a->k == VK_LIST && b->k == VK_LIST) {
        for (size_t i = 0; i < a->u.l->n && i < b->u.l->n; i++) {
            int rc = compare_at(r, line, &a->u.l->v[i], &b->u.l->v[i], cmp, level + 1);
            if (rc || *cmp)
                return rc;
        }
        *cmp = a->u.l->n < b->u.l->n ? -1 : a->u.l->n > b->u.l->n;
        return PB_OK;
    }
    return r_fail(r, line, "cannot order %s and %s", v_kind_name(a), v_kind_name(b));
}

/* ---- text forms ---- */

/* Python's repr(float): the shortest digits that read back exactly, in
 * fixed notation when the exponent is in [-4, 16), else scientific. */
static void py_float(double f, char *buf, size_t size)
{
    if (isnan(f)) {
        snprintf(buf, size, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, size, f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f)
            break;
    }
    /* e is d.ddde±XX: split into sign, digits and exponent */
    const char *p = e;
    bool neg = *p == '-';
    if (neg)
        p++;
    char digits[24];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    int exp = atoi(p + 1);
    char out[64];
    int o = 0;
    if (neg)
        out[o++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            o += snprintf(out + o, sizeof out - (size_t)o, "0.");
            for (int i = 0; i < -exp - 1; i++)
                out[o++] = '0';
            o += snprintf(out + o, sizeof out - (size_t)o, "%s", digits);
        } else if (nd <= exp + 1) {
            o += snprintf(out + o, sizeof out - (size_t)o, "%s", digits);
            for (int i = nd; i < exp + 1; i++)
                out[o++] = '0';
            o += snprintf(out + o, sizeof out - (size_t)o, ".0");
        } else {
            o += snprintf(out + o, sizeof out - (size_t)o, "%.*s.%s", exp + 1, digits, digits + exp + 1);
        }
    } else {
        o += snprintf(out + o, sizeof out - (size_t)o, "%c", digits[0]);
        if (nd > 1)
            o += snprintf(out + o, sizeof out - (size_t)o, ".%s", digits + 1);
        o += snprintf(out + o, sizeof out - (size_t)o, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
    out[o] = 0;
    snprintf(buf, size, "%s", out);
}

static int repr_str(struct render *r, const struct tstr *s, struct obuf *o)
{
    /* a marked string is marked whole, quotes and escapes included */
    struct obuf tmp = {0};
    bool mark = tstr_marked(s);
    struct obuf *dst = mark ? &tmp : o;
    char q = memchr(s->s, '\'', s->len) && !memchr(s->s, '"', s->len) ? '"' : '\'';
    int rc = obuf_put(r, dst, &q, 1);
    for (size_t i = 0; i < s->len && rc == PB_OK; i++) {
        unsigned char c = (unsigned char)s->s[i];
        char esc[8];
        if (c == '\\' || c == (unsigned char)q) {
            esc[0] = '\\';
            esc[1] = (char)c;
            rc = obuf_put(r, dst, esc, 2);
        } else if (c == '\n') {
            rc = put_c(r, dst, "\\n");
        } else if (c == '\r') {
            rc = put_c(r, dst, "\\r");
        } else if (c == '\t') {
            rc = put_c(r, dst, "\\t");
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            rc = put_c(r, dst, esc);
        } else {
            rc = obuf_put(r, dst, (const char *)&c, 1);
        }
    }
    if (rc == PB_OK)
        rc = obuf_put(r, dst, &q, 1);
    if (rc == PB_OK && mark)
        rc = obuf_put_marked(r, o, tmp.p, tmp.n, NULL, true);
    obuf_free(&tmp);
    return rc;
}

static int repr_at(struct render *r, int line, const struct value *v, struct obuf *o, int level);

int v_repr(struct render *r, int line, const struct value *v, struct obuf *o)
{
    return repr_at(r, line, v, o, 0);
}

static int repr_at(struct render *r, int line, const struct value *v, struct obuf *o, int level)
{
    int rc = PB_OK;
    if (level > MAX_VALUE_DEPTH)
        return r_fail(r, line, "value nested too deeply to print");
    switch (v->k) {
    case VK_STR: return repr_str(r, v->u.s, o);
    case VK_LIST:
        rc = put_c(r, o, v->u.l->tuple ? "(" : "[");
        for (size_t i = 0; i < v->u.l->n && rc == PB_OK; i++) {
            if (i)
                rc = put_c(r, o, ", ");
            if (rc == PB_OK)
                rc = repr_at(r, line, &v->u.l->v[i], o, level + 1);
        }
        return rc ? rc : put_c(r, o, v->u.l->tuple ? (v->u.l->n == 1 ? ",)" : ")") : "]");
    case VK_DICT:
    case VK_NS:
        rc = put_c(r, o, v->k == VK_NS ? "<Namespace {" : "{");
        for (size_t i = 0; i < v->u.d->n && rc == PB_OK; i++) {
            if (i)
                rc = put_c(r, o, ", ");
            if (rc == PB_OK)
                rc = repr_at(r, line, &v->u.d->keys[i], o, level + 1);
            if (rc == PB_OK)
                rc = put_c(r, o, ": ");
            if (rc == PB_OK)
                rc = repr_at(r, line, &v->u.d->vals[i], o, level + 1);
        }
        return rc ? rc : put_c(r, o, v->k == VK_NS ? "}>" : "}");
    default:
        return v_to_str(r, line, v, o);
    }
}

int v_to_str(struct render *r, int line, const struct value *v, struct obuf *o)
{
    char buf[64];
    switch (v->k) {
    case VK_UNDEF: return PB_OK;
    case VK_NONE: return put_c(r, o, "None");
    case VK_BOOL: return put_c(r, o, v->u.b ? "True" : "False");
    case VK_INT:
        snprintf(buf, sizeof buf, "%" PRId64, v->u.i);
        return put_c(r, o, buf);
    case VK_FLOAT:
        py_float(v->u.f, buf, sizeof buf);
        return put_c(r, o, buf);
    case VK_STR: return obuf_put_sub(r, o, v->u.s, 0, v->u.s->len);
    case VK_MACRO: return put_c(r, o, "<Macro>");
    case VK_BUILTIN: return put_c(r, o, "<built-in function>");
    default: return v_repr(r, line, v, o);
    }
}

int v_stringify(struct render *r, int line, const struct value *v, struct value *out)
{
    if (v->k == VK_STR) {
        *out = *v;
        return PB_OK;
    }
    struct obuf o = {0};
    int rc = v_to_str(r, line, v, &o);
    if (rc == PB_OK)
        rc = obuf_value(r, &o, out);
    obuf_free(&o);
    return rc;
}

/* ---- JSON ---- */

static int json_str_plain(struct render *r, const char *s, size_t n, struct obuf *o, bool ascii)
{
    int rc = put_c(r, o, "\"");
    size_t run = 0; /* bytes copied as they are */
    for (size_t i = 0; i <= n && rc == PB_OK; i++) {
        unsigned char c = i < n ? (unsigned char)s[i] : 0;
        const char *esc = NULL;
        char hex[16];
        size_t skip = 1;
        if (i < n && c >= 0x20 && c != '"' && c != '\\' && (c < 0x80 || !ascii))
            continue;
        if (i < n) {
            switch (c) {
            case '"': esc = "\\\""; break;
            case '\\': esc = "\\\\"; break;
            case '\n': esc = "\\n"; break;
            case '\r': esc = "\\r"; break;
            case '\t': esc = "\\t"; break;
            case '\b': esc = "\\b"; break;
            case '\f': esc = "\\f"; break;
            default:
                if (c < 0x80) {
                    snprintf(hex, sizeof hex, "\\u%04x", c);
                } else { /* ensure_ascii: a code point as \uXXXX, surrogate pairs above U+FFFF */
                    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
                    if (len > n - i)
                        len = 1;
                    uint32_t cp = len == 1 ? 0xFFFD : c & (0x7Fu >> len);
                    for (size_t k = 1; k < len; k++)
                        cp = cp << 6 | ((unsigned char)s[i + k] & 0x3Fu);
                    if (cp >= 0x10000)
                        snprintf(hex, sizeof hex, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10),
                                 0xDC00 + ((cp - 0x10000) & 0x3FF));
                    else
                        snprintf(hex, sizeof hex, "\\u%04x", cp);
                    skip = len;
                }
                esc = hex;
            }
        }
        rc = obuf_put(r, o, s + run, i - run);
        if (rc == PB_OK && esc)
            rc = put_c(r, o, esc);
        run = i + skip;
        i += skip - 1;
    }
    return rc ? rc : put_c(r, o, "\"");
}

/* A marked string's JSON form is marked whole. */
static int json_str(struct render *r, const struct tstr *s, struct obuf *o, bool ascii)
{
    if (!tstr_marked(s))
        return json_str_plain(r, s->s, s->len, o, ascii);
    struct obuf tmp = {0};
    int rc = json_str_plain(r, s->s, s->len, &tmp, ascii);
    if (rc == PB_OK)
        rc = obuf_put_marked(r, o, tmp.p, tmp.n, NULL, true);
    obuf_free(&tmp);
    return rc;
}

static int json_newline(struct render *r, const struct json_opts *jo, int level, struct obuf *o)
{
    int rc = put_c(r, o, "\n");
    for (int i = 0; i < jo->indent * level && rc == PB_OK; i++)
        rc = put_c(r, o, " ");
    return rc;
}

/* A dict key as json.dumps writes it (keys become strings). */
static int json_key(struct render *r, int line, const struct value *k, const struct json_opts *jo, struct obuf *o)
{
    char buf[64];
    switch (k->k) {
    case VK_STR: return json_str(r, k->u.s, o, jo->ascii);
    case VK_INT: snprintf(buf, sizeof buf, "\"%" PRId64 "\"", k->u.i); return put_c(r, o, buf);
    case VK_BOOL: return put_c(r, o, k->u.b ? "\"true\"" : "\"false\"");
    case VK_NONE: return put_c(r, o, "\"null\"");
    case VK_FLOAT:
        buf[0] = '"';
        py_float(k->u.f, buf + 1, sizeof buf - 2);
        strcat(buf, "\"");
        return put_c(r, o, buf);
    default: return r_fail(r, line, "keys must be str, int, float, bool or None, not %s", v_kind_name(k));
    }
}

static int json_value(struct render *r, int line, const struct value *v, const struct json_opts *jo, int level,
                      struct obuf *o);

static int cmp_keys(const void *a, const void *b)
{
    const struct value *x = *(const struct value *const *)a, *y = *(const struct value *const *)b;
    if (x->k != VK_STR || y->k != VK_STR)
        return 0;
    size_t n = x->u.s->len < y->u.s->len ? x->u.s->len : y->u.s->len;
    int c = memcmp(x->u.s->s, y->u.s->s, n);
    return c ? c : (x->u.s->len > y->u.s->len) - (x->u.s->len < y->u.s->len);
}

/* Items of a list (keys NULL) or dict, with separators and indentation. */
static int json_items(struct render *r, int line, size_t n, const struct value *const *keys, const struct value *vals,
                      const struct value *keys_base, const struct json_opts *jo, int level, struct obuf *o,
                      const char *open, const char *close)
{
    if (n == 0) {
        int rc = put_c(r, o, open);
        return rc ? rc : put_c(r, o, close);
    }
    int rc = put_c(r, o, open);
    for (size_t i = 0; i < n && rc == PB_OK; i++) {
        if (i)
            rc = put_c(r, o, jo->item_sep);
        if (rc == PB_OK && jo->indent >= 0)
            rc = json_newline(r, jo, level + 1, o);
        if (rc == PB_OK && keys) {
            rc = json_key(r, line, keys[i], jo, o);
            if (rc == PB_OK)
                rc = put_c(r, o, jo->key_sep);
        }
        if (rc == PB_OK)
            rc = json_value(r, line, keys ? &vals[keys[i] - keys_base] : &vals[i], jo, level + 1, o);
    }
    if (rc == PB_OK && jo->indent >= 0)
        rc = json_newline(r, jo, level, o);
    return rc ? rc : put_c(r, o, close);
}

static int json_value(struct render *r, int line, const struct value *v, const struct json_opts *jo, int level,
                      struct obuf *o)
{
    char buf[64];
    if (level > MAX_VALUE_DEPTH)
        return r_fail(r, line, "tojson: value nested too deeply");
    switch (v->k) {
    case VK_NONE: return put_c(r, o, "null");
    case VK_BOOL: return put_c(r, o, v->u.b ? "true" : "false");
    case VK_INT:
        snprintf(buf, sizeof buf, "%" PRId64, v->u.i);
        return put_c(r, o, buf);
    case VK_FLOAT:
        if (isnan(v->u.f))
            return put_c(r, o, "NaN");
        if (isinf(v->u.f))
            return put_c(r, o, v->u.f < 0 ? "-Infinity" : "Infinity");
        py_float(v->u.f, buf, sizeof buf);
        return put_c(r, o, buf);
    case VK_STR: return json_str(r, v->u.s, o, jo->ascii);
    case VK_LIST: return json_items(r, line, v->u.l->n, NULL, v->u.l->v, NULL, jo, level, o, "[", "]");
    case VK_DICT: {
        const struct tdict *d = v->u.d;
        const struct value **order = malloc((d->n ? d->n : 1) * sizeof *order);
        if (!order)
            return pb_fail(r->err, PB_ENOMEM, "out of memory rendering the template");
        for (size_t i = 0; i < d->n; i++)
            order[i] = &d->keys[i];
        if (jo->sort)
            qsort(order, d->n, sizeof *order, cmp_keys);
        int rc = json_items(r, line, d->n, order, d->vals, d->keys, jo, level, o, "{", "}");
        free(order);
        return rc;
    }
    default: return r_fail(r, line, "tojson: a %s is not JSON serializable", v_kind_name(v));
    }
}

int v_to_json(struct render *r, int line, const struct value *v, const struct json_opts *jo, struct obuf *o)
{
    return json_value(r, line, v, jo, 0, o);
}

int v_from_json(struct render *r, const json_t *j, bool user, struct value *out)
{
    switch (json_typeof(j)) {
    case JSON_NULL: *out = v_none(); return PB_OK;
    case JSON_TRUE: *out = v_bool(true); return PB_OK;
    case JSON_FALSE: *out = v_bool(false); return PB_OK;
    case JSON_INTEGER: *out = v_int(json_integer_value(j)); return PB_OK;
    case JSON_REAL: *out = v_float(json_real_value(j)); return PB_OK;
    case JSON_STRING:
        *out = (struct value){.k = VK_STR,
                              .u.s = tstr_new_marked(&r->a, json_string_value(j), json_string_length(j), NULL, user)};
        return out->u.s ? PB_OK : pb_fail(r->err, PB_ENOMEM, "out of memory");
    case JSON_ARRAY: {
        struct tlist *l = list_new(r, json_array_size(j));
        if (!l)
            return pb_fail(r->err, PB_ENOMEM, "out of memory");
        for (size_t i = 0; i < json_array_size(j); i++) {
            struct value x;
            int rc = v_from_json(r, json_array_get(j, i), user, &x);
            if (rc || (rc = list_push(r, l, x)))
                return rc;
        }
        *out = (struct value){.k = VK_LIST, .u.l = l};
        return PB_OK;
    }
    case JSON_OBJECT: {
        struct tdict *d = dict_new(r, json_object_size(j));
        if (!d)
            return pb_fail(r->err, PB_ENOMEM, "out of memory");
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)j, key, val)
        {
            struct value k = v_cstr(r, key), x;
            if (!k.u.s)
                return pb_fail(r->err, PB_ENOMEM, "out of memory");
            int rc = v_from_json(r, val, user, &x);
            if (rc || (rc = dict_set(r, d, k, x)))
                return rc;
        }
        *out = (struct value){.k = VK_DICT, .u.d = d};
        return PB_OK;
    }
    default: *out = v_undef(); return PB_OK;
    }
}

/* ---- UTF-8 ---- */

size_t utf8_count(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

size_t utf8_offset(const char *s, size_t n, size_t i)
{
    size_t off = 0, seen = 0;
    while (off < n) {
        if (((unsigned char)s[off] & 0xC0) != 0x80) {
            if (seen == i)
                return off;
            seen++;
        }
        off++;
    }
    return n;
}
