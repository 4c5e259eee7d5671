#define _POSIX_C_SOURCE 200809L
/* Filters, tests, methods and global functions of the template language:
 * the ones real chat templates use, with Jinja2 / Python semantics. Lists
 * and dicts are immutable (as in transformers' sandbox); only namespace
 * attributes can be assigned. */
#include "template/tmpl_internal.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOMEM(r) pb_fail((r)->err, PB_ENOMEM, "the template needs too much memory (over 256 MiB)")

/* ---- argument access ---- */

/* Positional argument i, or keyword `name`, or NULL. */
static const struct value *arg(const struct call_args *a, int i, const char *name)
{
    if (i >= 0 && i < a->n_pos)
        return &a->pos[i];
    for (int k = 0; name && k < a->n_kw; k++)
        if (!strcmp(a->kw[k], name))
            return &a->kw_val[k];
    return NULL;
}

static bool arg_bool(const struct call_args *a, int i, const char *name, bool def)
{
    const struct value *v = arg(a, i, name);
    return v ? v_truthy(v) : def;
}

static int arg_int(struct render *r, int line, const struct call_args *a, int i, const char *name, int64_t def,
                   int64_t *out)
{
    const struct value *v = arg(a, i, name);
    if (!v || v->k == VK_NONE || v->k == VK_UNDEF) {
        *out = def;
        return PB_OK;
    }
    if (v->k == VK_INT || v->k == VK_BOOL) {
        *out = v->k == VK_INT ? v->u.i : v->u.b;
        return PB_OK;
    }
    return r_fail(r, line, "argument %s must be an integer, not %s", name ? name : "", v_kind_name(v));
}

static int arg_str(struct render *r, int line, const struct call_args *a, int i, const char *name,
                   const struct tstr **out)
{
    const struct value *v = arg(a, i, name);
    if (!v || v->k == VK_NONE || v->k == VK_UNDEF) {
        *out = NULL;
        return PB_OK;
    }
    if (v->k != VK_STR)
        return r_fail(r, line, "argument %s must be a string, not %s", name ? name : "", v_kind_name(v));
    *out = v->u.s;
    return PB_OK;
}

static struct value str_value(struct render *r, const char *s, size_t n, int *rc)
{
    struct value v = v_str(r, s, n);
    if (!v.u.s)
        *rc = NOMEM(r);
    return v;
}

/* ---- Unicode bits ---- */

static uint32_t next_cp(const char *s, size_t n, size_t *i)
{
    unsigned char c = (unsigned char)s[*i];
    size_t len = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (len > n - *i)
        len = 1;
    uint32_t cp = len == 1 ? c : c & (0x7Fu >> len);
    for (size_t k = 1; k < len; k++)
        cp = cp << 6 | ((unsigned char)s[*i + k] & 0x3Fu);
    *i += len;
    return cp;
}

/* Python's str.isspace() characters. */
static bool py_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static bool in_chars(uint32_t cp, const struct tstr *chars)
{
    if (!chars)
        return py_space(cp);
    for (size_t i = 0; i < chars->len;)
        if (next_cp(chars->s, chars->len, &i) == cp)
            return true;
    return false;
}

/* strip / lstrip / rstrip: which = 1 left, 2 right, 3 both. */
static struct value strip(struct render *r, const struct tstr *s, const struct tstr *chars, int which, int *rc)
{
    size_t start = 0, end = s->len;
    if (which & 1) {
        while (start < end) {
            size_t i = start;
            if (!in_chars(next_cp(s->s, s->len, &i), chars))
                break;
            start = i;
        }
    }
    if (which & 2) {
        while (end > start) {
            size_t b = end - 1;
            while (b > start && ((unsigned char)s->s[b] & 0xC0) == 0x80)
                b--;
            size_t i = b;
            if (!in_chars(next_cp(s->s, s->len, &i), chars))
                break;
            end = b;
        }
    }
    return str_value(r, s->s + start, end - start, rc);
}

static struct value map_case(struct render *r, const struct tstr *s, int mode, int *rc)
{
    /* mode 0 lower, 1 upper, 2 capitalize, 3 title (ASCII letters) */
    struct value v = str_value(r, s->s, s->len, rc);
    if (*rc)
        return v;
    char *p = (char *)v.u.s->s;
    bool word_start = true;
    for (size_t i = 0; i < s->len; i++) {
        unsigned char c = (unsigned char)p[i];
        bool up = mode == 1 || ((mode == 2 && i == 0) || (mode == 3 && word_start));
        if (c < 0x80)
            p[i] = (char)(up ? toupper(c) : tolower(c));
        word_start = !isalpha(c) && c < 0x80;
    }
    return v;
}

static bool starts_with(const struct tstr *s, const struct tstr *p)
{
    return p->len <= s->len && memcmp(s->s, p->s, p->len) == 0;
}

static bool ends_with(const struct tstr *s, const struct tstr *p)
{
    return p->len <= s->len && memcmp(s->s + s->len - p->len, p->s, p->len) == 0;
}

static const char *find_bytes(const char *h, size_t hn, const char *n, size_t nn)
{
    if (nn == 0)
        return h;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == n[0] && memcmp(h + i, n, nn) == 0)
            return h + i;
    return NULL;
}

static int replace(struct render *r, const struct tstr *s, const struct tstr *old, const struct tstr *new,
                   int64_t count, struct value *out)
{
    struct obuf o = {0};
    int rc = PB_OK;
    size_t i = 0;
    int64_t done = 0;
    if (old->len == 0) { /* Python inserts new between characters */
        for (size_t k = 0; k <= s->len && rc == PB_OK;) {
            if (count < 0 || done < count) {
                rc = obuf_put(r, &o, new->s, new->len);
                done++;
            }
            if (k == s->len)
                break;
            size_t j = k;
            next_cp(s->s, s->len, &j);
            if (rc == PB_OK)
                rc = obuf_put(r, &o, s->s + k, j - k);
            k = j;
        }
    } else {
        while (rc == PB_OK) {
            const char *hit = count >= 0 && done >= count ? NULL : find_bytes(s->s + i, s->len - i, old->s, old->len);
            if (!hit) {
                rc = obuf_put(r, &o, s->s + i, s->len - i);
                break;
            }
            rc = obuf_put(r, &o, s->s + i, (size_t)(hit - (s->s + i)));
            if (rc == PB_OK)
                rc = obuf_put(r, &o, new->s, new->len);
            i = (size_t)(hit - s->s) + old->len;
            done++;
        }
    }
    if (rc == PB_OK)
        *out = str_value(r, o.p ? o.p : "", o.n, &rc);
    free(o.p);
    return rc;
}

/* str.split(sep=None, maxsplit=-1) */
static int split(struct render *r, const struct tstr *s, const struct tstr *sep, int64_t maxsplit, struct value *out)
{
    struct tlist *l = list_new(r, 4);
    if (!l)
        return NOMEM(r);
    int rc = PB_OK;
    if (sep && sep->len == 0)
        return pb_fail(r->err, PB_EINVAL, "template: split: empty separator");
    size_t i = 0;
    int64_t splits = 0;
    if (!sep) { /* runs of whitespace, no empty pieces */
        while (rc == PB_OK) {
            while (i < s->len) {
                size_t j = i;
                if (!py_space(next_cp(s->s, s->len, &j)))
                    break;
                i = j;
            }
            if (i >= s->len)
                break;
            size_t start = i;
            if (maxsplit >= 0 && splits >= maxsplit) {
                size_t end = s->len; /* the rest, trailing whitespace removed */
                while (end > start && py_space((unsigned char)s->s[end - 1]))
                    end--;
                rc = list_push(r, l, str_value(r, s->s + start, end - start, &rc));
                break;
            }
            while (i < s->len) {
                size_t j = i;
                if (py_space(next_cp(s->s, s->len, &j)))
                    break;
                i = j;
            }
            struct value piece = str_value(r, s->s + start, i - start, &rc);
            if (rc == PB_OK)
                rc = list_push(r, l, piece);
            splits++;
        }
    } else {
        while (rc == PB_OK) {
            const char *hit = maxsplit >= 0 && splits >= maxsplit ? NULL
                                                                   : find_bytes(s->s + i, s->len - i, sep->s, sep->len);
            size_t end = hit ? (size_t)(hit - s->s) : s->len;
            struct value piece = str_value(r, s->s + i, end - i, &rc);
            if (rc == PB_OK)
                rc = list_push(r, l, piece);
            if (!hit)
                break;
            i = end + sep->len;
            splits++;
        }
    }
    *out = (struct value){.k = VK_LIST, .u.l = l};
    return rc;
}

/* Items of a value iterated as a sequence (strings by character, dicts
 * by key, undefined as empty). */
static int as_list(struct render *r, int line, const struct value *v, struct tlist **out)
{
    int rc = PB_OK;
    switch (v->k) {
    case VK_LIST: *out = v->u.l; return PB_OK;
    case VK_UNDEF:
    case VK_NONE:
        *out = list_new(r, 1);
        return *out ? PB_OK : NOMEM(r);
    case VK_DICT:
    case VK_NS: {
        struct tlist *l = list_new(r, v->u.d->n + 1);
        if (!l)
            return NOMEM(r);
        for (size_t i = 0; i < v->u.d->n && rc == PB_OK; i++)
            rc = list_push(r, l, v->u.d->keys[i]);
        *out = l;
        return rc;
    }
    case VK_STR: {
        struct tlist *l = list_new(r, v->u.s->len + 1);
        if (!l)
            return NOMEM(r);
        for (size_t i = 0; i < v->u.s->len && rc == PB_OK;) {
            size_t j = i;
            next_cp(v->u.s->s, v->u.s->len, &j);
            struct value c = str_value(r, v->u.s->s + i, j - i, &rc);
            if (rc == PB_OK)
                rc = list_push(r, l, c);
            i = j;
        }
        *out = l;
        return rc;
    }
    default: return r_fail(r, line, "a %s is not iterable", v_kind_name(v));
    }
}

/* obj.name for filters like map(attribute=) and selectattr: dict keys,
 * with "a.b" paths. */
static struct value get_attr_path(const struct value *obj, const struct tstr *path)
{
    struct value cur = *obj;
    const char *p = path->s, *end = path->s + path->len;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        if (cur.k != VK_DICT && cur.k != VK_NS)
            return v_undef();
        struct value *found = NULL;
        for (size_t i = 0; i < cur.u.d->n && !found; i++)
            if (cur.u.d->keys[i].k == VK_STR && cur.u.d->keys[i].u.s->len == n &&
                memcmp(cur.u.d->keys[i].u.s->s, p, n) == 0)
                found = &cur.u.d->vals[i];
        if (!found)
            return v_undef();
        cur = *found;
        if (!dot)
            break;
        p = dot + 1;
    }
    return cur;
}

/* Arguments from index `from` on, for a test named by an argument. */
static struct call_args tail_args(const struct call_args *a, int from)
{
    struct call_args t = *a;
    t.pos = a->n_pos > from ? a->pos + from : NULL;
    t.n_pos = a->n_pos > from ? a->n_pos - from : 0;
    return t;
}

static int select_filter(struct render *r, int line, const struct value *in, const struct call_args *a, bool attr,
                         bool keep, struct value *out)
{
    struct tlist *src, *l;
    int rc = as_list(r, line, in, &src);
    if (rc)
        return rc;
    const struct tstr *attr_name = NULL, *test = NULL;
    int first_test_arg = attr ? 2 : 1;
    if (attr && (rc = arg_str(r, line, a, 0, "attribute", &attr_name)))
        return rc;
    if (attr && !attr_name)
        return r_fail(r, line, "selectattr/rejectattr need an attribute name");
    if ((rc = arg_str(r, line, a, attr ? 1 : 0, NULL, &test)))
        return rc;
    if (!(l = list_new(r, src->n + 1)))
        return NOMEM(r);
    struct call_args targs = tail_args(a, first_test_arg);
    for (size_t i = 0; i < src->n && rc == PB_OK; i++) {
        struct value x = attr ? get_attr_path(&src->v[i], attr_name) : src->v[i];
        bool ok;
        if (test)
            rc = call_test(r, line, test->s, &x, &targs, &ok);
        else
            ok = v_truthy(&x);
        if (rc == PB_OK && ok == keep)
            rc = list_push(r, l, src->v[i]);
    }
    *out = (struct value){.k = VK_LIST, .u.l = l};
    return rc;
}

static int html_escape(struct render *r, const struct value *in, int line, struct value *out)
{
    struct value s;
    int rc = v_stringify(r, line, in, &s);
    struct obuf o = {0};
    for (size_t i = 0; rc == PB_OK && i < s.u.s->len; i++) {
        const char *e = NULL;
        switch (s.u.s->s[i]) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&#34;"; break;
        case '\'': e = "&#39;"; break;
        }
        rc = e ? obuf_put(r, &o, e, strlen(e)) : obuf_put(r, &o, s.u.s->s + i, 1);
    }
    if (rc == PB_OK)
        *out = str_value(r, o.p ? o.p : "", o.n, &rc);
    free(o.p);
    return rc;
}

static int cmp_for_sort(struct render *r, int line, const struct value *a, const struct value *b, bool *failed)
{
    int c = 0;
    if (v_compare(r, line, a, b, &c))
        *failed = true;
    return c;
}

/* Insertion sort: stable, and comparisons can fail cleanly. Lists in
 * templates are short. */
static int sort_list(struct render *r, int line, struct tlist *l, const struct tstr *attr, bool reverse)
{
    bool failed = false;
    for (size_t i = 1; i < l->n && !failed; i++) {
        struct value x = l->v[i];
        struct value kx = attr ? get_attr_path(&x, attr) : x;
        size_t j = i;
        while (j > 0 && !failed) {
            struct value ky = attr ? get_attr_path(&l->v[j - 1], attr) : l->v[j - 1];
            int c = cmp_for_sort(r, line, &ky, &kx, &failed);
            if (reverse ? c >= 0 : c <= 0)
                break;
            l->v[j] = l->v[j - 1];
            j--;
        }
        l->v[j] = x;
    }
    return failed ? PB_EINVAL : PB_OK;
}

static struct tlist *copy_list(struct render *r, const struct tlist *src)
{
    struct tlist *l = list_new(r, src->n + 1);
    if (l) {
        memcpy(l->v, src->v, src->n * sizeof *l->v);
        l->n = src->n;
    }
    return l;
}

/* ---- filters ---- */

int call_filter(struct render *r, int line, const char *name, const struct value *in, const struct call_args *a,
                struct value *out)
{
    int rc = PB_OK;
    const struct tstr *s1 = NULL, *s2 = NULL;
    int64_t n;

    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        const struct value *def = arg(a, 0, "default_value");
        bool use = in->k == VK_UNDEF || (arg_bool(a, 1, "boolean", false) && !v_truthy(in));
        *out = use ? (def ? *def : str_value(r, "", 0, &rc)) : *in;
        return rc;
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        switch (in->k) {
        case VK_STR: *out = v_int((int64_t)utf8_count(in->u.s->s, in->u.s->len)); return PB_OK;
        case VK_LIST: *out = v_int((int64_t)in->u.l->n); return PB_OK;
        case VK_DICT:
        case VK_NS: *out = v_int((int64_t)in->u.d->n); return PB_OK;
        case VK_UNDEF: *out = v_int(0); return PB_OK;
        default: return r_fail(r, line, "length: a %s has no length", v_kind_name(in));
        }
    }
    if (!strcmp(name, "safe")) {
        *out = *in;
        return PB_OK;
    }
    if (!strcmp(name, "string")) {
        if (in->k == VK_UNDEF) {
            *out = str_value(r, "", 0, &rc);
            return rc;
        }
        return v_stringify(r, line, in, out);
    }
    if (!strcmp(name, "tojson")) {
        int64_t indent;
        if ((rc = arg_int(r, line, a, 0, "indent", -1, &indent)))
            return rc;
        struct obuf o = {0};
        rc = v_to_json(r, line, in, (int)(indent > 64 ? 64 : indent), arg_bool(a, -1, "sort_keys", false), &o);
        if (rc == PB_OK)
            *out = str_value(r, o.p ? o.p : "", o.n, &rc);
        free(o.p);
        return rc;
    }
    if (!strcmp(name, "e") || !strcmp(name, "escape") || !strcmp(name, "forceescape"))
        return html_escape(r, in, line, out);
    if (!strcmp(name, "int") || !strcmp(name, "float")) {
        bool want_int = name[0] == 'i';
        const struct value *def = arg(a, 0, "default");
        double f = 0;
        bool ok = true;
        if (in->k == VK_INT || in->k == VK_BOOL || in->k == VK_FLOAT) {
            f = in->k == VK_FLOAT ? in->u.f : (double)(in->k == VK_INT ? in->u.i : in->u.b);
            if (want_int && in->k != VK_FLOAT) {
                *out = v_int(in->k == VK_INT ? in->u.i : in->u.b);
                return PB_OK;
            }
        } else if (in->k == VK_STR) {
            char *end;
            f = strtod(in->u.s->s, &end);
            ok = end != in->u.s->s && *end == 0;
        } else {
            ok = false;
        }
        if (!ok) {
            *out = def ? *def : want_int ? v_int(0) : v_float(0.0);
            return PB_OK;
        }
        *out = want_int ? v_int(isfinite(f) && fabs(f) < 9e18 ? (int64_t)f : 0) : v_float(f);
        return PB_OK;
    }
    if (!strcmp(name, "abs")) {
        if (in->k == VK_INT)
            *out = v_int(in->u.i < 0 && in->u.i != INT64_MIN ? -in->u.i : in->u.i);
        else if (in->k == VK_FLOAT)
            *out = v_float(fabs(in->u.f));
        else
            return r_fail(r, line, "abs: expected a number, not %s", v_kind_name(in));
        return PB_OK;
    }
    if (!strcmp(name, "round")) {
        int64_t prec;
        if ((rc = arg_int(r, line, a, 0, "precision", 0, &prec)))
            return rc;
        double f = in->k == VK_FLOAT ? in->u.f : in->k == VK_INT ? (double)in->u.i : NAN;
        if (isnan(f) && in->k != VK_FLOAT)
            return r_fail(r, line, "round: expected a number, not %s", v_kind_name(in));
        double m = pow(10.0, (double)(prec > 15 ? 15 : prec < -15 ? -15 : prec));
        *out = v_float(round(f * m) / m);
        return PB_OK;
    }
    if (!strcmp(name, "select") || !strcmp(name, "reject"))
        return select_filter(r, line, in, a, false, name[0] == 's', out);
    if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr"))
        return select_filter(r, line, in, a, true, name[0] == 's', out);

    /* the rest work on strings or sequences */
    if (!strcmp(name, "trim") || !strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") ||
        !strcmp(name, "title") || !strcmp(name, "replace") || !strcmp(name, "indent") || !strcmp(name, "wordcount")) {
        struct value s;
        if ((rc = v_stringify(r, line, in->k == VK_UNDEF ? &(struct value){.k = VK_STR, .u.s = tstr_new(&r->a, "", 0)}
                                                         : in,
                              &s)))
            return rc;
        if (!s.u.s)
            return NOMEM(r);
        if (!strcmp(name, "trim")) {
            if ((rc = arg_str(r, line, a, 0, "chars", &s1)))
                return rc;
            *out = strip(r, s.u.s, s1, 3, &rc);
        } else if (!strcmp(name, "replace")) {
            if ((rc = arg_str(r, line, a, 0, "old", &s1)) || (rc = arg_str(r, line, a, 1, "new", &s2)) ||
                (rc = arg_int(r, line, a, 2, "count", -1, &n)))
                return rc;
            if (!s1 || !s2)
                return r_fail(r, line, "replace needs two strings");
            rc = replace(r, s.u.s, s1, s2, n, out);
        } else if (!strcmp(name, "indent")) {
            int64_t width;
            if ((rc = arg_int(r, line, a, 0, "width", 4, &width)))
                return rc;
            bool first = arg_bool(a, 1, "first", false), blank = arg_bool(a, 2, "blank", false);
            char pad[65];
            width = width < 0 ? 0 : width > 64 ? 64 : width;
            memset(pad, ' ', (size_t)width);
            struct obuf o = {0};
            size_t i = 0;
            bool line_start = true, first_line = true;
            while (i < s.u.s->len && rc == PB_OK) {
                const char *nl = memchr(s.u.s->s + i, '\n', s.u.s->len - i);
                size_t end = nl ? (size_t)(nl - s.u.s->s) : s.u.s->len;
                bool empty = end == i;
                if (line_start && (first || !first_line) && (blank || !empty))
                    rc = obuf_put(r, &o, pad, (size_t)width);
                if (rc == PB_OK)
                    rc = obuf_put(r, &o, s.u.s->s + i, end - i + (nl ? 1 : 0));
                i = end + (nl ? 1 : 0);
                first_line = false;
            }
            if (rc == PB_OK)
                *out = str_value(r, o.p ? o.p : "", o.n, &rc);
            free(o.p);
        } else if (!strcmp(name, "wordcount")) {
            struct value words;
            if ((rc = split(r, s.u.s, NULL, -1, &words)) == PB_OK)
                *out = v_int((int64_t)words.u.l->n);
        } else {
            int mode = !strcmp(name, "lower") ? 0 : !strcmp(name, "upper") ? 1 : !strcmp(name, "capitalize") ? 2 : 3;
            struct value low = mode >= 2 ? map_case(r, s.u.s, 0, &rc) : s;
            if (rc == PB_OK)
                *out = map_case(r, low.u.s, mode, &rc);
        }
        return rc;
    }

    struct tlist *l;
    if (!strcmp(name, "items")) {
        if (in->k == VK_UNDEF) {
            *out = (struct value){.k = VK_LIST, .u.l = list_new(r, 1)};
            return out->u.l ? PB_OK : NOMEM(r);
        }
        if (in->k != VK_DICT && in->k != VK_NS)
            return r_fail(r, line, "items: expected a mapping, not %s", v_kind_name(in));
        return call_method(r, line, in, "items", a, out);
    }
    if ((rc = as_list(r, line, in, &l)))
        return rc;
    if (!strcmp(name, "list")) {
        *out = (struct value){.k = VK_LIST, .u.l = l == in->u.l ? copy_list(r, l) : l};
        return out->u.l ? PB_OK : NOMEM(r);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        *out = l->n == 0 ? v_undef() : l->v[name[0] == 'f' ? 0 : l->n - 1];
        return PB_OK;
    }
    if (!strcmp(name, "join")) {
        const struct tstr *attr = NULL;
        if ((rc = arg_str(r, line, a, 0, "d", &s1)) || (rc = arg_str(r, line, a, 1, "attribute", &attr)))
            return rc;
        struct obuf o = {0};
        for (size_t i = 0; i < l->n && rc == PB_OK; i++) {
            if (i && s1)
                rc = obuf_put(r, &o, s1->s, s1->len);
            struct value x = attr ? get_attr_path(&l->v[i], attr) : l->v[i];
            if (rc == PB_OK)
                rc = v_to_str(r, line, &x, &o);
        }
        if (rc == PB_OK)
            *out = str_value(r, o.p ? o.p : "", o.n, &rc);
        free(o.p);
        return rc;
    }
    if (!strcmp(name, "map")) {
        const struct tstr *attr = NULL;
        if ((rc = arg_str(r, line, a, -1, "attribute", &attr)))
            return rc;
        const struct value *def = arg(a, -1, "default");
        struct tlist *res = list_new(r, l->n + 1);
        if (!res)
            return NOMEM(r);
        if (!attr && (rc = arg_str(r, line, a, 0, NULL, &s1)))
            return rc;
        if (!attr && !s1)
            return r_fail(r, line, "map needs a filter name or attribute=");
        struct call_args fargs = tail_args(a, 1);
        for (size_t i = 0; i < l->n && rc == PB_OK; i++) {
            struct value x;
            if (attr) {
                x = get_attr_path(&l->v[i], attr);
                if (x.k == VK_UNDEF && def)
                    x = *def;
            } else {
                rc = call_filter(r, line, s1->s, &l->v[i], &fargs, &x);
            }
            if (rc == PB_OK)
                rc = list_push(r, res, x);
        }
        *out = (struct value){.k = VK_LIST, .u.l = res};
        return rc;
    }
    if (!strcmp(name, "reverse")) {
        struct tlist *res = list_new(r, l->n + 1);
        if (!res)
            return NOMEM(r);
        for (size_t i = l->n; i-- > 0 && rc == PB_OK;)
            rc = list_push(r, res, l->v[i]);
        if (in->k == VK_STR && rc == PB_OK) { /* a reversed string stays a string */
            struct value join_args[1] = {str_value(r, "", 0, &rc)};
            struct call_args ja = {join_args, 1, NULL, NULL, 0};
            struct value lv = {.k = VK_LIST, .u.l = res};
            return rc ? rc : call_filter(r, line, "join", &lv, &ja, out);
        }
        *out = (struct value){.k = VK_LIST, .u.l = res};
        return rc;
    }
    if (!strcmp(name, "unique")) {
        struct tlist *res = list_new(r, l->n + 1);
        if (!res)
            return NOMEM(r);
        for (size_t i = 0; i < l->n && rc == PB_OK; i++) {
            bool seen = false;
            for (size_t k = 0; k < res->n && !seen; k++)
                seen = v_equal(&res->v[k], &l->v[i]);
            if (!seen)
                rc = list_push(r, res, l->v[i]);
        }
        *out = (struct value){.k = VK_LIST, .u.l = res};
        return rc;
    }
    if (!strcmp(name, "sort") || !strcmp(name, "min") || !strcmp(name, "max")) {
        const struct tstr *attr = NULL;
        if ((rc = arg_str(r, line, a, -1, "attribute", &attr)))
            return rc;
        struct tlist *res = copy_list(r, l);
        if (!res)
            return NOMEM(r);
        if ((rc = sort_list(r, line, res, attr, !strcmp(name, "sort") && arg_bool(a, 0, "reverse", false))))
            return rc;
        if (!strcmp(name, "sort"))
            *out = (struct value){.k = VK_LIST, .u.l = res};
        else
            *out = res->n == 0 ? v_undef() : res->v[name[1] == 'i' ? 0 : res->n - 1];
        return PB_OK;
    }
    if (!strcmp(name, "sum")) {
        const struct tstr *attr = NULL;
        if ((rc = arg_str(r, line, a, -1, "attribute", &attr)))
            return rc;
        const struct value *start = arg(a, -1, "start");
        int64_t si = 0;
        double sf = 0;
        bool is_float = false;
        if (start && start->k == VK_FLOAT) {
            is_float = true;
            sf = start->u.f;
        } else if (start && start->k == VK_INT) {
            si = start->u.i;
        }
        for (size_t i = 0; i < l->n; i++) {
            struct value x = attr ? get_attr_path(&l->v[i], attr) : l->v[i];
            if (x.k == VK_FLOAT) {
                if (!is_float)
                    sf = (double)si;
                is_float = true;
                sf += x.u.f;
            } else if (x.k == VK_INT || x.k == VK_BOOL) {
                int64_t v = x.k == VK_INT ? x.u.i : x.u.b;
                if (is_float)
                    sf += (double)v;
                else if (__builtin_add_overflow(si, v, &si))
                    return r_fail(r, line, "sum: integer overflow");
            } else {
                return r_fail(r, line, "sum: cannot add a %s", v_kind_name(&x));
            }
        }
        *out = is_float ? v_float(sf) : v_int(si);
        return PB_OK;
    }
    return r_fail(r, line, "unknown filter '%s'", name);
}

/* ---- tests ---- */

int call_test(struct render *r, int line, const char *name, const struct value *in, const struct call_args *a,
              bool *out)
{
    const struct value *x = arg(a, 0, NULL);
    int cmp;
    int rc;
    if (!strcmp(name, "defined")) *out = in->k != VK_UNDEF;
    else if (!strcmp(name, "undefined")) *out = in->k == VK_UNDEF;
    else if (!strcmp(name, "none")) *out = in->k == VK_NONE;
    else if (!strcmp(name, "boolean")) *out = in->k == VK_BOOL;
    else if (!strcmp(name, "true")) *out = in->k == VK_BOOL && in->u.b;
    else if (!strcmp(name, "false")) *out = in->k == VK_BOOL && !in->u.b;
    else if (!strcmp(name, "integer")) *out = in->k == VK_INT;
    else if (!strcmp(name, "float")) *out = in->k == VK_FLOAT;
    else if (!strcmp(name, "number")) *out = in->k == VK_INT || in->k == VK_FLOAT || in->k == VK_BOOL;
    else if (!strcmp(name, "string")) *out = in->k == VK_STR;
    else if (!strcmp(name, "mapping")) *out = in->k == VK_DICT || in->k == VK_NS;
    else if (!strcmp(name, "iterable")) *out = in->k == VK_LIST || in->k == VK_DICT || in->k == VK_STR || in->k == VK_NS;
    else if (!strcmp(name, "sequence")) *out = in->k == VK_LIST || in->k == VK_DICT || in->k == VK_STR;
    else if (!strcmp(name, "callable")) *out = in->k == VK_MACRO || in->k == VK_BUILTIN;
    else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        *out = in->k == VK_STR;
        for (size_t i = 0; *out && i < in->u.s->len; i++) {
            unsigned char c = (unsigned char)in->u.s->s[i];
            if (isalpha(c) && (name[0] == 'l' ? isupper(c) : islower(c)))
                *out = false;
        }
    } else if (!strcmp(name, "even") || !strcmp(name, "odd") || !strcmp(name, "divisibleby")) {
        if (in->k != VK_INT)
            return r_fail(r, line, "test '%s' needs an integer, not %s", name, v_kind_name(in));
        int64_t d = 2;
        if (name[0] == 'd' && (rc = arg_int(r, line, a, 0, "num", 0, &d)))
            return rc;
        if (d == 0)
            return r_fail(r, line, "divisibleby 0");
        int64_t m = d == -1 ? 0 : in->u.i % d;
        *out = name[0] == 'o' ? m != 0 : m == 0;
    } else if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==") || !strcmp(name, "sameas")) {
        *out = x && v_equal(in, x) && (name[0] != 's' || in->k == x->k);
    } else if (!strcmp(name, "ne") || !strcmp(name, "!=")) {
        *out = !x || !v_equal(in, x);
    } else if (!strcmp(name, "lt") || !strcmp(name, "le") || !strcmp(name, "gt") || !strcmp(name, "ge") ||
               !strcmp(name, "lessthan") || !strcmp(name, "greaterthan")) {
        if (!x)
            return r_fail(r, line, "test '%s' needs an argument", name);
        if ((rc = v_compare(r, line, in, x, &cmp)))
            return rc;
        bool less = name[0] == 'l';
        bool eq = name[1] == 'e' && name[2] == 0;
        *out = less ? (cmp < 0 || (eq && cmp == 0)) : (cmp > 0 || (eq && cmp == 0));
    } else if (!strcmp(name, "in")) {
        if (!x)
            return r_fail(r, line, "test 'in' needs an argument");
        if (x->k == VK_STR && in->k == VK_STR)
            *out = find_bytes(x->u.s->s, x->u.s->len, in->u.s->s, in->u.s->len) != NULL;
        else {
            struct tlist *l;
            if ((rc = as_list(r, line, x, &l)))
                return rc;
            *out = false;
            for (size_t i = 0; i < l->n && !*out; i++)
                *out = v_equal(&l->v[i], in);
        }
    } else {
        return r_fail(r, line, "unknown test '%s'", name);
    }
    return PB_OK;
}

/* ---- methods ---- */

static int str_method(struct render *r, int line, const struct tstr *s, const char *name, const struct call_args *a,
                      struct value *out)
{
    int rc = PB_OK;
    const struct tstr *s1 = NULL, *s2 = NULL;
    int64_t n;
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        if ((rc = arg_str(r, line, a, 0, "chars", &s1)))
            return rc;
        *out = strip(r, s, s1, name[0] == 'l' ? 1 : name[0] == 'r' ? 2 : 3, &rc);
        return rc;
    }
    if (!strcmp(name, "split")) {
        if ((rc = arg_str(r, line, a, 0, "sep", &s1)) || (rc = arg_int(r, line, a, 1, "maxsplit", -1, &n)))
            return rc;
        return split(r, s, s1, n, out);
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        const struct value *p = arg(a, 0, NULL);
        if (!p)
            return r_fail(r, line, "%s needs an argument", name);
        bool (*fn)(const struct tstr *, const struct tstr *) = name[0] == 's' ? starts_with : ends_with;
        if (p->k == VK_STR) {
            *out = v_bool(fn(s, p->u.s));
        } else if (p->k == VK_LIST) { /* a tuple of prefixes */
            bool any = false;
            for (size_t i = 0; i < p->u.l->n && !any; i++)
                any = p->u.l->v[i].k == VK_STR && fn(s, p->u.l->v[i].u.s);
            *out = v_bool(any);
        } else {
            return r_fail(r, line, "%s needs a string", name);
        }
        return PB_OK;
    }
    if (!strcmp(name, "replace")) {
        if ((rc = arg_str(r, line, a, 0, "old", &s1)) || (rc = arg_str(r, line, a, 1, "new", &s2)) ||
            (rc = arg_int(r, line, a, 2, "count", -1, &n)))
            return rc;
        if (!s1 || !s2)
            return r_fail(r, line, "replace needs two strings");
        return replace(r, s, s1, s2, n, out);
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "title") || !strcmp(name, "capitalize")) {
        struct value v = {.k = VK_STR, .u.s = s};
        return call_filter(r, line, name, &v, a, out);
    }
    if (!strcmp(name, "find") || !strcmp(name, "count")) {
        if ((rc = arg_str(r, line, a, 0, "sub", &s1)))
            return rc;
        if (!s1)
            return r_fail(r, line, "%s needs a string", name);
        if (name[0] == 'f') {
            const char *hit = find_bytes(s->s, s->len, s1->s, s1->len);
            *out = v_int(hit ? (int64_t)utf8_count(s->s, (size_t)(hit - s->s)) : -1);
        } else {
            int64_t k = 0;
            for (size_t i = 0; s1->len && i + s1->len <= s->len;) {
                const char *hit = find_bytes(s->s + i, s->len - i, s1->s, s1->len);
                if (!hit)
                    break;
                k++;
                i = (size_t)(hit - s->s) + s1->len;
            }
            *out = v_int(s1->len ? k : (int64_t)utf8_count(s->s, s->len) + 1);
        }
        return PB_OK;
    }
    if (!strcmp(name, "join")) {
        const struct value *seq = arg(a, 0, NULL);
        if (!seq)
            return r_fail(r, line, "join needs a sequence");
        struct value sep = {.k = VK_STR, .u.s = s};
        struct call_args ja = {&sep, 1, NULL, NULL, 0};
        return call_filter(r, line, "join", seq, &ja, out);
    }
    if (!strcmp(name, "splitlines")) {
        struct tlist *l = list_new(r, 4);
        if (!l)
            return NOMEM(r);
        for (size_t i = 0; i < s->len && rc == PB_OK;) {
            const char *nl = memchr(s->s + i, '\n', s->len - i);
            size_t end = nl ? (size_t)(nl - s->s) : s->len;
            size_t e = end > i && s->s[end - 1] == '\r' ? end - 1 : end;
            struct value piece = str_value(r, s->s + i, e - i, &rc);
            if (rc == PB_OK)
                rc = list_push(r, l, piece);
            i = end + 1;
        }
        *out = (struct value){.k = VK_LIST, .u.l = l};
        return rc;
    }
    if (!strcmp(name, "isdigit") || !strcmp(name, "isalpha") || !strcmp(name, "isspace") ||
        !strcmp(name, "isalnum")) {
        bool ok = s->len > 0;
        for (size_t i = 0; ok && i < s->len; i++) {
            unsigned char c = (unsigned char)s->s[i];
            ok = name[2] == 'd' ? isdigit(c) : name[2] == 'a' && name[3] == 'l' && name[4] == 'p' ? isalpha(c)
                 : name[2] == 's'                                                                 ? isspace(c)
                                                                                                  : isalnum(c);
        }
        *out = v_bool(ok);
        return PB_OK;
    }
    return r_fail(r, line, "str has no method '%s'", name);
}

int call_method(struct render *r, int line, const struct value *obj, const char *name, const struct call_args *a,
                struct value *out)
{
    int rc = PB_OK;
    if (obj->k == VK_STR)
        return str_method(r, line, obj->u.s, name, a, out);
    if (obj->k == VK_DICT || obj->k == VK_NS) {
        const struct tdict *d = obj->u.d;
        if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
            struct tlist *l = list_new(r, d->n + 1);
            if (!l)
                return NOMEM(r);
            for (size_t i = 0; i < d->n && rc == PB_OK; i++) {
                if (name[0] == 'k') {
                    rc = list_push(r, l, d->keys[i]);
                } else if (name[0] == 'v') {
                    rc = list_push(r, l, d->vals[i]);
                } else {
                    struct tlist *pair = list_new(r, 2);
                    if (!pair)
                        return NOMEM(r);
                    pair->v[0] = d->keys[i];
                    pair->v[1] = d->vals[i];
                    pair->n = 2;
                    rc = list_push(r, l, (struct value){.k = VK_LIST, .u.l = pair});
                }
            }
            *out = (struct value){.k = VK_LIST, .u.l = l};
            return rc;
        }
        if (!strcmp(name, "get")) {
            const struct value *key = arg(a, 0, "key"), *def = arg(a, 1, "default");
            if (!key)
                return r_fail(r, line, "get needs a key");
            const struct value *v = dict_get(d, *key);
            *out = v ? *v : def ? *def : v_none();
            return PB_OK;
        }
        const struct value *fn = dict_get_str(d, name);
        if (fn && fn->k == VK_MACRO)
            return r_fail(r, line, "calling a macro stored in a mapping is not supported");
        return r_fail(r, line, "a mapping has no method '%s'", name);
    }
    if (obj->k == VK_LIST) {
        const struct value *x = arg(a, 0, NULL);
        if (!strcmp(name, "index") || !strcmp(name, "count")) {
            if (!x)
                return r_fail(r, line, "%s needs an argument", name);
            int64_t k = 0;
            for (size_t i = 0; i < obj->u.l->n; i++) {
                if (v_equal(&obj->u.l->v[i], x)) {
                    if (name[0] == 'i') {
                        *out = v_int((int64_t)i);
                        return PB_OK;
                    }
                    k++;
                }
            }
            if (name[0] == 'i')
                return r_fail(r, line, "index: value not in list");
            *out = v_int(k);
            return PB_OK;
        }
        if (!strcmp(name, "append") || !strcmp(name, "extend") || !strcmp(name, "pop") || !strcmp(name, "insert") ||
            !strcmp(name, "remove") || !strcmp(name, "clear") || !strcmp(name, "sort") || !strcmp(name, "reverse"))
            return r_fail(r, line, "lists cannot be modified in a template (%s); use a namespace or a new list", name);
        return r_fail(r, line, "list has no method '%s'", name);
    }
    if (obj->k == VK_UNDEF)
        return r_fail(r, line, "'%s' called on an undefined value", name);
    return r_fail(r, line, "%s has no method '%s'", v_kind_name(obj), name);
}

/* ---- globals ---- */

enum { G_RANGE, G_NAMESPACE, G_DICT, G_RAISE, G_STRFTIME, G_COUNT };
static const char *global_names[G_COUNT] = {"range", "namespace", "dict", "raise_exception", "strftime_now"};

int global_find(const char *name)
{
    for (int i = 0; i < G_COUNT; i++)
        if (!strcmp(name, global_names[i]))
            return i;
    return -1;
}

#define MAX_RANGE 1000000

int call_global(struct render *r, int line, int id, const struct call_args *a, struct value *out)
{
    int rc = PB_OK;
    switch (id) {
    case G_RANGE: {
        int64_t start = 0, stop = 0, step = 1;
        if (a->n_pos == 1) {
            if ((rc = arg_int(r, line, a, 0, NULL, 0, &stop)))
                return rc;
        } else if (a->n_pos == 2 || a->n_pos == 3) {
            if ((rc = arg_int(r, line, a, 0, NULL, 0, &start)) || (rc = arg_int(r, line, a, 1, NULL, 0, &stop)) ||
                (rc = arg_int(r, line, a, 2, NULL, 1, &step)))
                return rc;
        } else {
            return r_fail(r, line, "range takes 1 to 3 arguments");
        }
        if (step == 0)
            return r_fail(r, line, "range step must not be zero");
        double count = ceil(((double)stop - (double)start) / (double)step);
        if (count > MAX_RANGE)
            return r_fail(r, line, "range of %.0f items is too large (limit %d)", count, MAX_RANGE);
        struct tlist *l = list_new(r, count > 0 ? (size_t)count : 1);
        if (!l)
            return NOMEM(r);
        for (int64_t i = start; (step > 0 ? i < stop : i > stop) && rc == PB_OK; i += step)
            rc = list_push(r, l, v_int(i));
        *out = (struct value){.k = VK_LIST, .u.l = l};
        return rc;
    }
    case G_NAMESPACE:
    case G_DICT: {
        struct tdict *d = dict_new(r, 4);
        if (!d)
            return NOMEM(r);
        for (int i = 0; i < a->n_pos && rc == PB_OK; i++) { /* namespace(mapping) */
            if (a->pos[i].k != VK_DICT && a->pos[i].k != VK_NS)
                return r_fail(r, line, "%s: positional arguments must be mappings", global_names[id]);
            for (size_t k = 0; k < a->pos[i].u.d->n && rc == PB_OK; k++)
                rc = dict_set(r, d, a->pos[i].u.d->keys[k], a->pos[i].u.d->vals[k]);
        }
        for (int i = 0; i < a->n_kw && rc == PB_OK; i++) {
            struct value k = v_cstr(r, a->kw[i]);
            rc = k.u.s ? dict_set(r, d, k, a->kw_val[i]) : NOMEM(r);
        }
        *out = (struct value){.k = id == G_NAMESPACE ? VK_NS : VK_DICT, .u.d = d};
        return rc;
    }
    case G_RAISE: {
        struct value msg = a->n_pos ? a->pos[0] : v_undef();
        struct obuf o = {0};
        rc = v_to_str(r, line, &msg, &o);
        if (rc == PB_OK)
            rc = r_fail(r, line, "%s", o.p ? o.p : "");
        free(o.p);
        return rc;
    }
    case G_STRFTIME: {
        const struct tstr *fmt;
        if ((rc = arg_str(r, line, a, 0, "format", &fmt)))
            return rc;
        if (!fmt)
            return r_fail(r, line, "strftime_now needs a format");
        struct tm tm;
        gmtime_r(&r->now, &tm);
        char buf[256];
        size_t n = fmt->len < 200 ? strftime(buf, sizeof buf, fmt->s, &tm) : 0;
        *out = str_value(r, buf, n, &rc);
        return rc;
    }
    default: return r_fail(r, line, "unknown function");
    }
}
