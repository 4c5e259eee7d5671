/* Template parser: tokens to a tree, with Jinja2's operator precedence:
 *   a if c else b  <  or  <  and  <  not  <  comparisons, in  <  + -
 *   <  ~  <  * / // %  <  **  <  unary -  <  postfix (. [] ()), filters, tests
 */
#include "template/tmpl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 200 /* nesting of expressions and statements */

struct parser {
    struct arena *a;
    const struct token *t;
    size_t n, pos;
    int depth;
    pb_err *err;
};

static const struct token *peek(const struct parser *p)
{
    return &p->t[p->pos < p->n ? p->pos : p->n - 1];
}

static const struct token *peek2(const struct parser *p)
{
    return &p->t[p->pos + 1 < p->n ? p->pos + 1 : p->n - 1];
}

static const struct token *next(struct parser *p)
{
    const struct token *t = peek(p);
    if (p->pos < p->n - 1)
        p->pos++;
    return t;
}

static bool is_op(const struct token *t, const char *op)
{
    return t->kind == TK_OP && strcmp(t->text->s, op) == 0;
}

static bool is_name(const struct token *t, const char *name)
{
    return t->kind == TK_NAME && strcmp(t->text->s, name) == 0;
}

static const char *describe(const struct token *t)
{
    switch (t->kind) {
    case TK_NAME:
    case TK_OP: return t->text->s;
    case TK_STRING: return "a string";
    case TK_INT:
    case TK_FLOAT: return "a number";
    case TK_VAR_END: return "}}";
    case TK_BLOCK_END: return "%}";
    case TK_EOF: return "the end of the template";
    default: return "text";
    }
}

static int syntax(struct parser *p, const char *what)
{
    const struct token *t = peek(p);
    return pb_fail(p->err, PB_EFORMAT, "template line %d: %s (found '%s')", t->line, what, describe(t));
}

static int expect_op(struct parser *p, const char *op)
{
    if (!is_op(peek(p), op)) {
        char msg[64];
        snprintf(msg, sizeof msg, "expected '%s'", op);
        return syntax(p, msg);
    }
    next(p);
    return PB_OK;
}

static struct node *new_node(struct parser *p, enum nkind kind, int line)
{
    struct node *n = arena_alloc(p->a, sizeof *n);
    if (!n) {
        pb_fail(p->err, PB_ENOMEM, "out of memory parsing the template");
        return NULL;
    }
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->line = line;
    return n;
}

/* A growable array of node pointers (copied into the arena when done). */
struct nvec {
    struct node **v;
    const char **names;
    int n, cap;
};

static int nvec_push(struct parser *p, struct nvec *v, struct node *x, const char *name)
{
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 8;
        struct node **nv = realloc(v->v, (size_t)cap * sizeof *nv);
        const char **nn = nv ? realloc(v->names, (size_t)cap * sizeof *nn) : NULL;
        if (nv)
            v->v = nv;
        if (!nn)
            return pb_fail(p->err, PB_ENOMEM, "out of memory parsing the template");
        v->names = nn;
        v->cap = cap;
    }
    v->v[v->n] = x;
    v->names[v->n] = name;
    v->n++;
    return PB_OK;
}

/* Moves the vector into the arena; returns NULL (and fails) on no memory. */
static struct node **nvec_done(struct parser *p, struct nvec *v, const char ***names)
{
    struct node **out = arena_alloc(p->a, (size_t)(v->n ? v->n : 1) * sizeof *out);
    const char **nout = names ? arena_alloc(p->a, (size_t)(v->n ? v->n : 1) * sizeof *nout) : NULL;
    if (out && (!names || nout)) {
        if (v->n)
            memcpy(out, v->v, (size_t)v->n * sizeof *out);
        if (names) {
            if (v->n)
                memcpy(nout, v->names, (size_t)v->n * sizeof *nout);
            *names = nout;
        }
    } else {
        pb_fail(p->err, PB_ENOMEM, "out of memory parsing the template");
        out = NULL;
    }
    free(v->v);
    free(v->names);
    v->v = NULL;
    v->names = NULL;
    return out;
}

static void nvec_free(struct nvec *v)
{
    free(v->v);
    free(v->names);
}

static struct node *parse_expr(struct parser *p);
static struct node *parse_or(struct parser *p);
static struct node *parse_unary(struct parser *p);

/* Call arguments after '(' up to ')': positional and name=value. */
static int parse_args(struct parser *p, struct node *n)
{
    struct nvec pos = {0}, kw = {0};
    int rc = PB_OK;
    while (!is_op(peek(p), ")")) {
        if (peek(p)->kind == TK_NAME && is_op(peek2(p), "=")) {
            const char *name = next(p)->text->s;
            next(p);
            struct node *v = parse_expr(p);
            if (!v || (rc = nvec_push(p, &kw, v, name)))
                goto fail;
        } else {
            if (kw.n) {
                rc = syntax(p, "a positional argument after keyword arguments");
                goto fail;
            }
            struct node *v = parse_expr(p);
            if (!v || (rc = nvec_push(p, &pos, v, NULL)))
                goto fail;
        }
        if (!is_op(peek(p), ","))
            break;
        next(p);
    }
    if ((rc = expect_op(p, ")")))
        goto fail;
    n->n_args = pos.n;
    n->n_kw = kw.n;
    n->args = nvec_done(p, &pos, NULL);
    n->kw_val = nvec_done(p, &kw, &n->kw);
    return n->args && n->kw_val ? PB_OK : PB_ENOMEM;
fail:
    nvec_free(&pos);
    nvec_free(&kw);
    return rc ? rc : PB_EFORMAT;
}

static struct node *parse_primary(struct parser *p)
{
    const struct token *t = peek(p);
    struct node *n;
    switch (t->kind) {
    case TK_NAME: {
        next(p);
        const char *s = t->text->s;
        n = new_node(p, N_LIT, t->line);
        if (!n)
            return NULL;
        if (!strcmp(s, "true") || !strcmp(s, "True")) {
            n->lit = (struct value){.k = VK_BOOL, .u.b = true};
        } else if (!strcmp(s, "false") || !strcmp(s, "False")) {
            n->lit = (struct value){.k = VK_BOOL, .u.b = false};
        } else if (!strcmp(s, "none") || !strcmp(s, "None")) {
            n->lit = (struct value){.k = VK_NONE};
        } else {
            n->kind = N_NAME;
            n->name = s;
        }
        return n;
    }
    case TK_STRING: {
        /* adjacent literals concatenate */
        size_t len = 0, k = p->pos;
        while (k < p->n && p->t[k].kind == TK_STRING)
            len += p->t[k++].text->len;
        char *buf = arena_alloc(p->a, len + 1);
        n = new_node(p, N_LIT, t->line);
        if (!buf || !n)
            return NULL;
        size_t o = 0;
        while (peek(p)->kind == TK_STRING) {
            const struct tstr *s = next(p)->text;
            memcpy(buf + o, s->s, s->len);
            o += s->len;
        }
        n->lit = (struct value){.k = VK_STR, .u.s = tstr_new(p->a, buf, o)};
        return n->lit.u.s ? n : NULL;
    }
    case TK_INT:
    case TK_FLOAT:
        next(p);
        n = new_node(p, N_LIT, t->line);
        if (n)
            n->lit = t->kind == TK_INT ? (struct value){.k = VK_INT, .u.i = t->i}
                                       : (struct value){.k = VK_FLOAT, .u.f = t->f};
        return n;
    case TK_OP:
        if (is_op(t, "(")) {
            next(p);
            if (is_op(peek(p), ")")) { /* empty tuple */
                next(p);
                return new_node(p, N_TUPLE, t->line);
            }
            struct node *e = parse_expr(p);
            if (!e)
                return NULL;
            if (is_op(peek(p), ",")) { /* a tuple */
                struct nvec items = {0};
                if (nvec_push(p, &items, e, NULL))
                    return NULL;
                while (is_op(peek(p), ",")) {
                    next(p);
                    if (is_op(peek(p), ")"))
                        break;
                    struct node *x = parse_expr(p);
                    if (!x || nvec_push(p, &items, x, NULL)) {
                        nvec_free(&items);
                        return NULL;
                    }
                }
                n = new_node(p, N_TUPLE, t->line);
                if (!n) {
                    nvec_free(&items);
                    return NULL;
                }
                n->n_args = items.n;
                n->args = nvec_done(p, &items, NULL);
                e = n->args ? n : NULL;
            }
            return e && !expect_op(p, ")") ? e : NULL;
        }
        if (is_op(t, "[") || is_op(t, "{")) {
            bool dict = is_op(t, "{");
            const char *close = dict ? "}" : "]";
            next(p);
            struct nvec items = {0};
            while (!is_op(peek(p), close)) {
                struct node *x = parse_expr(p);
                if (!x || nvec_push(p, &items, x, NULL))
                    goto fail_items;
                if (dict) {
                    if (expect_op(p, ":"))
                        goto fail_items;
                    struct node *v = parse_expr(p);
                    if (!v || nvec_push(p, &items, v, NULL))
                        goto fail_items;
                }
                if (!is_op(peek(p), ","))
                    break;
                next(p);
            }
            if (expect_op(p, close))
                goto fail_items;
            n = new_node(p, dict ? N_DICT : N_LIST, t->line);
            if (!n)
                goto fail_items;
            n->n_args = items.n;
            n->args = nvec_done(p, &items, NULL);
            return n->args ? n : NULL;
        fail_items:
            nvec_free(&items);
            return NULL;
        }
        /* fall through */
    default:
        syntax(p, "expected a value");
        return NULL;
    }
}

/* a[...]: an index or a slice [start:stop:step] */
static struct node *parse_subscript(struct parser *p, struct node *obj, int line)
{
    struct node *parts[3] = {NULL, NULL, NULL};
    int colons = 0;
    for (;;) {
        if (is_op(peek(p), "]"))
            break;
        if (is_op(peek(p), ":")) {
            if (++colons > 2) {
                syntax(p, "too many ':' in a slice");
                return NULL;
            }
            next(p);
            continue;
        }
        if (parts[colons]) {
            syntax(p, "expected ']' or ':'");
            return NULL;
        }
        if (!(parts[colons] = parse_expr(p)))
            return NULL;
    }
    next(p); /* ] */
    struct node *n = new_node(p, colons ? N_SLICE : N_ITEM, line);
    if (!n)
        return NULL;
    if (!colons && !parts[0]) {
        syntax(p, "empty subscript");
        return NULL;
    }
    n->a = obj;
    n->b = parts[0];
    n->c = parts[1];
    if (colons) {
        if (!(n->args = arena_alloc(p->a, sizeof *n->args))) {
            pb_fail(p->err, PB_ENOMEM, "out of memory parsing the template");
            return NULL;
        }
        n->n_args = 1;
        n->args[0] = parts[2];
    }
    return n;
}

static struct node *parse_postfix(struct parser *p, struct node *n)
{
    while (n) {
        const struct token *t = peek(p);
        if (is_op(t, ".")) {
            next(p);
            const struct token *name = next(p);
            struct node *x;
            if (name->kind == TK_NAME) {
                x = new_node(p, N_ATTR, t->line);
                if (x)
                    x->name = name->text->s;
            } else if (name->kind == TK_INT) { /* a.0 is a[0] */
                x = new_node(p, N_ITEM, t->line);
                struct node *k = new_node(p, N_LIT, t->line);
                if (!x || !k)
                    return NULL;
                k->lit = (struct value){.k = VK_INT, .u.i = name->i};
                x->b = k;
            } else {
                syntax(p, "expected an attribute name after '.'");
                return NULL;
            }
            if (!x)
                return NULL;
            x->a = n;
            n = x;
        } else if (is_op(t, "[")) {
            next(p);
            n = parse_subscript(p, n, t->line);
        } else if (is_op(t, "(")) {
            next(p);
            struct node *x = new_node(p, N_CALL, t->line);
            if (!x || parse_args(p, x))
                return NULL;
            x->a = n;
            n = x;
        } else {
            break;
        }
    }
    return n;
}

/* Tokens that can start a test argument written without parentheses
 * ("is divisibleby 3", "is sameas false"). */
static bool starts_test_arg(const struct token *t)
{
    if (t->kind == TK_STRING || t->kind == TK_INT || t->kind == TK_FLOAT)
        return true;
    if (t->kind != TK_NAME)
        return is_op(t, "[") || is_op(t, "{");
    static const char *stop[] = {"else", "or", "and", "if", "in", "is", "not", "for", "recursive"};
    for (size_t i = 0; i < sizeof stop / sizeof stop[0]; i++)
        if (is_name(t, stop[i]))
            return false;
    return true;
}

static struct node *parse_filters(struct parser *p, struct node *n)
{
    while (n) {
        const struct token *t = peek(p);
        if (is_op(t, "|")) {
            next(p);
            const struct token *name = next(p);
            if (name->kind != TK_NAME) {
                syntax(p, "expected a filter name after '|'");
                return NULL;
            }
            struct node *f = new_node(p, N_FILTER, t->line);
            if (!f)
                return NULL;
            f->name = name->text->s;
            f->a = n;
            if (is_op(peek(p), "(")) {
                next(p);
                if (parse_args(p, f))
                    return NULL;
            }
            n = f;
        } else if (is_name(t, "is")) {
            next(p);
            struct node *x = new_node(p, N_TEST, t->line);
            if (!x)
                return NULL;
            if (is_name(peek(p), "not")) {
                next(p);
                x->negated = true;
            }
            const struct token *name = next(p);
            if (name->kind != TK_NAME) {
                syntax(p, "expected a test name after 'is'");
                return NULL;
            }
            x->name = name->text->s;
            x->a = n;
            if (is_op(peek(p), "(")) {
                next(p);
                if (parse_args(p, x))
                    return NULL;
            } else if (starts_test_arg(peek(p))) {
                struct node *arg = parse_primary(p);
                arg = parse_postfix(p, arg);
                if (!arg)
                    return NULL;
                x->args = arena_alloc(p->a, sizeof *x->args);
                if (!x->args)
                    return NULL;
                x->args[0] = arg;
                x->n_args = 1;
            }
            n = x;
        } else {
            break;
        }
    }
    return n;
}

/* Unary minus, then postfix, then (unless inside a minus: "-x | abs" is
 * abs(-x)) filters and tests. */
static struct node *parse_unary_f(struct parser *p, bool with_filters)
{
    if (++p->depth > MAX_DEPTH) {
        syntax(p, "expression nested too deeply");
        return NULL;
    }
    const struct token *t = peek(p);
    struct node *n;
    if (is_op(t, "-") || is_op(t, "+")) {
        next(p);
        struct node *x = parse_unary_f(p, false);
        if (!x)
            return NULL;
        if (is_op(t, "+"))
            n = x;
        else if ((n = new_node(p, N_NEG, t->line)))
            n->a = x;
    } else {
        n = parse_postfix(p, parse_primary(p));
    }
    if (with_filters)
        n = parse_filters(p, n);
    p->depth--;
    return n;
}

static struct node *parse_unary(struct parser *p)
{
    return parse_unary_f(p, true);
}

static struct node *binop(struct parser *p, const char *op, struct node *a, struct node *b, int line)
{
    if (!a || !b)
        return NULL;
    struct node *n = new_node(p, N_BINOP, line);
    if (n) {
        snprintf(n->op, sizeof n->op, "%s", op);
        n->a = a;
        n->b = b;
    }
    return n;
}

static struct node *parse_pow(struct parser *p)
{
    struct node *n = parse_unary(p);
    while (n && is_op(peek(p), "**")) {
        int line = next(p)->line;
        n = binop(p, "**", n, parse_unary(p), line);
    }
    return n;
}

static struct node *parse_mul(struct parser *p)
{
    struct node *n = parse_pow(p);
    while (n) {
        const struct token *t = peek(p);
        if (!is_op(t, "*") && !is_op(t, "/") && !is_op(t, "//") && !is_op(t, "%"))
            break;
        next(p);
        n = binop(p, t->text->s, n, parse_pow(p), t->line);
    }
    return n;
}

static struct node *parse_concat(struct parser *p)
{
    struct node *n = parse_mul(p);
    while (n && is_op(peek(p), "~")) {
        int line = next(p)->line;
        n = binop(p, "~", n, parse_mul(p), line);
    }
    return n;
}

static struct node *parse_add(struct parser *p)
{
    struct node *n = parse_concat(p);
    while (n) {
        const struct token *t = peek(p);
        if (!is_op(t, "+") && !is_op(t, "-"))
            break;
        next(p);
        n = binop(p, t->text->s, n, parse_concat(p), t->line);
    }
    return n;
}

/* a < b < c means (a < b) and (b < c), as in Python (b is evaluated
 * twice here: template expressions have no side effects that matter). */
static struct node *parse_compare(struct parser *p)
{
    struct node *n = parse_add(p), *last = NULL; /* last: the rightmost comparison */
    while (n) {
        const struct token *t = peek(p);
        const char *op = NULL;
        if (t->kind == TK_OP && (is_op(t, "==") || is_op(t, "!=") || is_op(t, "<") || is_op(t, ">") ||
                                 is_op(t, "<=") || is_op(t, ">=")))
            op = t->text->s;
        else if (is_name(t, "in"))
            op = "in";
        else if (is_name(t, "not") && is_name(peek2(p), "in"))
            op = "ni";
        if (!op)
            break;
        next(p);
        if (!strcmp(op, "ni"))
            next(p);
        struct node *x = new_node(p, N_CMP, t->line);
        if (!x)
            return NULL;
        snprintf(x->op, sizeof x->op, "%s", op);
        if (!(x->b = parse_add(p)))
            return NULL;
        if (!last) {
            x->a = n;
            n = x;
        } else {
            struct node *both = new_node(p, N_AND, t->line);
            if (!both)
                return NULL;
            x->a = last->b;
            both->a = n;
            both->b = x;
            n = both;
        }
        last = x;
    }
    return n;
}

static struct node *parse_not(struct parser *p)
{
    if (is_name(peek(p), "not")) {
        if (++p->depth > MAX_DEPTH) {
            syntax(p, "expression nested too deeply");
            return NULL;
        }
        int line = next(p)->line;
        struct node *n = new_node(p, N_NOT, line);
        if (!n || !(n->a = parse_not(p)))
            return NULL;
        p->depth--;
        return n;
    }
    return parse_compare(p);
}

static struct node *parse_and(struct parser *p)
{
    struct node *n = parse_not(p);
    while (n && is_name(peek(p), "and")) {
        int line = next(p)->line;
        struct node *x = new_node(p, N_AND, line);
        if (!x)
            return NULL;
        x->a = n;
        x->b = parse_not(p);
        n = x->b ? x : NULL;
    }
    return n;
}

static struct node *parse_or(struct parser *p)
{
    struct node *n = parse_and(p);
    while (n && is_name(peek(p), "or")) {
        int line = next(p)->line;
        struct node *x = new_node(p, N_OR, line);
        if (!x)
            return NULL;
        x->a = n;
        x->b = parse_and(p);
        n = x->b ? x : NULL;
    }
    return n;
}

/* expr [if cond [else expr]] */
static struct node *parse_expr(struct parser *p)
{
    if (++p->depth > MAX_DEPTH) {
        syntax(p, "expression nested too deeply");
        return NULL;
    }
    struct node *n = parse_or(p);
    while (n && is_name(peek(p), "if")) {
        int line = next(p)->line;
        struct node *x = new_node(p, N_COND, line);
        if (!x)
            return NULL;
        x->b = n;
        if (!(x->a = parse_or(p)))
            return NULL;
        if (is_name(peek(p), "else")) {
            next(p);
            if (!(x->c = parse_expr(p)))
                return NULL;
        }
        n = x;
    }
    p->depth--;
    return n;
}

/* ---- statements ---- */

static int parse_body(struct parser *p, const char *const *ends, struct nvec *body, const char **found);

static int expect_block_end(struct parser *p)
{
    if (peek(p)->kind != TK_BLOCK_END)
        return syntax(p, "expected '%}'");
    next(p);
    return PB_OK;
}

/* Target names: a, or a, b (for loops and tuple assignment). */
static int parse_targets(struct parser *p, struct node *n)
{
    struct nvec v = {0};
    int rc;
    do {
        if (v.n)
            next(p); /* , */
        const struct token *t = next(p);
        if (t->kind != TK_NAME) {
            nvec_free(&v);
            return syntax(p, "expected a variable name");
        }
        if ((rc = nvec_push(p, &v, NULL, t->text->s)))
            return rc;
    } while (is_op(peek(p), ","));
    n->n_targets = v.n;
    return nvec_done(p, &v, &n->targets) ? PB_OK : PB_ENOMEM;
}

static int body_into(struct parser *p, struct node *n, const char *const *ends, const char **found, bool else_part)
{
    struct nvec v = {0};
    int rc = parse_body(p, ends, &v, found);
    if (rc) {
        nvec_free(&v);
        return rc;
    }
    if (else_part) {
        n->n_else = v.n;
        n->else_body = nvec_done(p, &v, NULL);
        return n->else_body ? PB_OK : PB_ENOMEM;
    }
    n->n_body = v.n;
    n->body = nvec_done(p, &v, NULL);
    return n->body ? PB_OK : PB_ENOMEM;
}

static struct node *parse_if(struct parser *p, int line)
{
    struct node *n = new_node(p, N_IF, line);
    if (!n || !(n->a = parse_expr(p)) || expect_block_end(p))
        return NULL;
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    const char *found;
    if (body_into(p, n, ends, &found, false))
        return NULL;
    if (!strcmp(found, "elif")) { /* an elif is an if in the else branch */
        if (++p->depth > MAX_DEPTH) {
            syntax(p, "too many elif branches");
            return NULL;
        }
        struct node *sub = parse_if(p, peek(p)->line);
        if (!sub)
            return NULL;
        p->depth--;
        n->else_body = arena_alloc(p->a, sizeof *n->else_body);
        if (!n->else_body) {
            pb_fail(p->err, PB_ENOMEM, "out of memory parsing the template");
            return NULL;
        }
        n->else_body[0] = sub;
        n->n_else = 1;
        return n;
    }
    if (!strcmp(found, "else")) {
        if (expect_block_end(p))
            return NULL;
        static const char *const end[] = {"endif", NULL};
        if (body_into(p, n, end, &found, true))
            return NULL;
    }
    return expect_block_end(p) ? NULL : n;
}

static struct node *parse_for(struct parser *p, int line)
{
    struct node *n = new_node(p, N_FOR, line);
    if (!n || parse_targets(p, n))
        return NULL;
    if (!is_name(peek(p), "in")) {
        syntax(p, "expected 'in' in a for loop");
        return NULL;
    }
    next(p);
    if (!(n->a = parse_or(p))) /* no conditional here: "if" filters the loop */
        return NULL;
    if (is_name(peek(p), "if")) {
        next(p);
        if (!(n->b = parse_or(p)))
            return NULL;
    }
    if (is_name(peek(p), "recursive")) {
        syntax(p, "recursive loops are not supported");
        return NULL;
    }
    if (expect_block_end(p))
        return NULL;
    static const char *const ends[] = {"else", "endfor", NULL};
    const char *found;
    if (body_into(p, n, ends, &found, false))
        return NULL;
    if (!strcmp(found, "else")) {
        static const char *const end[] = {"endfor", NULL};
        if (expect_block_end(p) || body_into(p, n, end, &found, true))
            return NULL;
    }
    return expect_block_end(p) ? NULL : n;
}

static struct node *parse_set(struct parser *p, int line)
{
    const struct token *t = next(p);
    if (t->kind != TK_NAME) {
        syntax(p, "expected a variable name after 'set'");
        return NULL;
    }
    struct node *n = new_node(p, N_SET, line);
    if (!n)
        return NULL;
    n->name = t->text->s;
    if (is_op(peek(p), ".")) { /* set ns.attr = ... */
        next(p);
        const struct token *attr = next(p);
        if (attr->kind != TK_NAME) {
            syntax(p, "expected an attribute name");
            return NULL;
        }
        struct node *obj = new_node(p, N_NAME, line);
        if (!obj)
            return NULL;
        obj->name = n->name;
        n->a = obj;
        n->name = attr->text->s;
    } else if (is_op(peek(p), ",")) { /* set a, b = ... */
        p->pos--;
        if (parse_targets(p, n))
            return NULL;
        n->name = NULL;
    }
    if (peek(p)->kind == TK_BLOCK_END && !n->a && !n->n_targets) { /* {% set x %}...{% endset %} */
        next(p);
        n->kind = N_SET_BLOCK;
        static const char *const end[] = {"endset", NULL};
        const char *found;
        if (body_into(p, n, end, &found, false))
            return NULL;
        return expect_block_end(p) ? NULL : n;
    }
    if (expect_op(p, "="))
        return NULL;
    struct node *v = parse_expr(p);
    if (v && is_op(peek(p), ",")) { /* a tuple without parentheses */
        struct nvec items = {0};
        if (nvec_push(p, &items, v, NULL))
            return NULL;
        while (is_op(peek(p), ",")) {
            next(p);
            struct node *x = parse_expr(p);
            if (!x || nvec_push(p, &items, x, NULL)) {
                nvec_free(&items);
                return NULL;
            }
        }
        v = new_node(p, N_TUPLE, line);
        if (!v) {
            nvec_free(&items);
            return NULL;
        }
        v->n_args = items.n;
        v->args = nvec_done(p, &items, NULL);
    }
    if (!v)
        return NULL;
    n->b = v;
    return expect_block_end(p) ? NULL : n;
}

static struct node *parse_macro(struct parser *p, int line)
{
    const struct token *t = next(p);
    if (t->kind != TK_NAME) {
        syntax(p, "expected a macro name");
        return NULL;
    }
    struct node *n = new_node(p, N_MACRO, line);
    if (!n || expect_op(p, "("))
        return NULL;
    n->name = t->text->s;
    struct nvec params = {0};
    while (!is_op(peek(p), ")")) {
        const struct token *a = next(p);
        if (a->kind != TK_NAME) {
            nvec_free(&params);
            syntax(p, "expected a parameter name");
            return NULL;
        }
        struct node *def = NULL;
        if (is_op(peek(p), "=")) {
            next(p);
            if (!(def = parse_expr(p))) {
                nvec_free(&params);
                return NULL;
            }
        }
        if (nvec_push(p, &params, def, a->text->s))
            return NULL;
        if (!is_op(peek(p), ","))
            break;
        next(p);
    }
    n->n_targets = params.n;
    n->defaults = nvec_done(p, &params, &n->targets);
    if (!n->defaults || expect_op(p, ")") || expect_block_end(p))
        return NULL;
    static const char *const end[] = {"endmacro", NULL};
    const char *found;
    if (body_into(p, n, end, &found, false))
        return NULL;
    if (peek(p)->kind == TK_NAME) /* {% endmacro name %} */
        next(p);
    return expect_block_end(p) ? NULL : n;
}

/* One statement after '{%'. */
static struct node *parse_statement(struct parser *p)
{
    const struct token *t = next(p);
    if (t->kind != TK_NAME) {
        syntax(p, "expected a statement name after '{%'");
        return NULL;
    }
    const char *s = t->text->s;
    if (!strcmp(s, "if"))
        return parse_if(p, t->line);
    if (!strcmp(s, "for"))
        return parse_for(p, t->line);
    if (!strcmp(s, "set"))
        return parse_set(p, t->line);
    if (!strcmp(s, "macro"))
        return parse_macro(p, t->line);
    if (!strcmp(s, "break") || !strcmp(s, "continue")) {
        struct node *n = new_node(p, !strcmp(s, "break") ? N_BREAK : N_CONTINUE, t->line);
        return n && !expect_block_end(p) ? n : NULL;
    }
    if (!strcmp(s, "generation")) { /* transformers' assistant-mask marker: renders its body */
        struct node *n = new_node(p, N_BODY, t->line);
        static const char *const end[] = {"endgeneration", NULL};
        const char *found;
        if (!n || expect_block_end(p) || body_into(p, n, end, &found, false) || expect_block_end(p))
            return NULL;
        return n;
    }
    pb_fail(p->err, PB_EFORMAT, "template line %d: unknown or unsupported statement '%s'", t->line, s);
    return NULL;
}

/* Statements until a block whose name is in ends (consumed, left before
 * its '%}'), or the end of the template when ends is NULL. */
static int parse_body(struct parser *p, const char *const *ends, struct nvec *body, const char **found)
{
    if (++p->depth > MAX_DEPTH)
        return syntax(p, "blocks nested too deeply");
    int rc = PB_OK;
    for (;;) {
        const struct token *t = peek(p);
        struct node *n = NULL;
        if (t->kind == TK_EOF) {
            if (ends) {
                const char *want = ends[0];
                for (int i = 0; ends[i]; i++)
                    if (!strncmp(ends[i], "end", 3))
                        want = ends[i];
                char msg[96];
                snprintf(msg, sizeof msg, "missing {%% %s %%}", want);
                return syntax(p, msg);
            }
            break;
        }
        if (t->kind == TK_TEXT) {
            next(p);
            if ((n = new_node(p, N_TEXT, t->line)))
                n->lit = (struct value){.k = VK_STR, .u.s = t->text};
        } else if (t->kind == TK_VAR_BEGIN) {
            next(p);
            if ((n = new_node(p, N_OUTPUT, t->line)) && (n->a = parse_expr(p))) {
                if (peek(p)->kind != TK_VAR_END)
                    return syntax(p, "expected '}}'");
                next(p);
            } else {
                n = NULL;
            }
        } else if (t->kind == TK_BLOCK_BEGIN) {
            const struct token *name = peek2(p);
            if (ends && name->kind == TK_NAME) {
                for (int i = 0; ends[i]; i++) {
                    if (!strcmp(name->text->s, ends[i])) {
                        p->pos += 2;
                        *found = ends[i];
                        p->depth--;
                        return PB_OK;
                    }
                }
            }
            if (name->kind == TK_NAME && (!strncmp(name->text->s, "end", 3) || !strcmp(name->text->s, "elif") ||
                                          !strcmp(name->text->s, "else"))) {
                p->pos++;
                char msg[96];
                snprintf(msg, sizeof msg, "unexpected '%s'", name->text->s);
                return syntax(p, msg);
            }
            next(p);
            n = parse_statement(p);
        } else {
            return syntax(p, "unexpected token");
        }
        if (!n)
            return p->err && p->err->code ? p->err->code : PB_EFORMAT;
        if ((rc = nvec_push(p, body, n, NULL)))
            return rc;
    }
    p->depth--;
    return PB_OK;
}

int tmpl_parse_tokens(struct tmpl *t, const struct token *toks, size_t n, pb_err *err)
{
    pb_err local = {0};
    struct parser p = {.a = &t->arena, .t = toks, .n = n, .err = err ? err : &local};
    p.err->code = 0;
    struct nvec body = {0};
    int rc = parse_body(&p, NULL, &body, NULL);
    if (rc) {
        nvec_free(&body);
        return rc;
    }
    t->n_body = body.n;
    t->body = nvec_done(&p, &body, NULL);
    return t->body ? PB_OK : PB_ENOMEM;
}
