/* Filters, tests, methods and global functions of the template language:
 * the ones real chat templates use, with Jinja2 / Python semantics (as
 * transformers configures Jinja2). Lists and dicts are immutable, as in
 * transformers' sandbox; only namespace attributes can be assigned.
 *
 * Every call is charged to the render's work budget in proportion to the
 * data it touches, and strings derived from user text keep their marks
 * (see struct tstr). */
#define _POSIX_C_SOURCE 200809L
#include "template/tmpl_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOMEM(r) pb_fail((r)->err, PB_ENOMEM, "the template needs too much memory (over 256 MiB)")

/* ---- arguments ---- */

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

/* A new unmarked string (made by the template, not from user text). */
static struct value str_value(struct render *r, const char *s, size_t n, int *rc)
{
    struct value v = v_str(r, s, n);
    if (!v.u.s)
        *rc = NOMEM(r);
    return v;
}

static int substr(struct render *r, const struct tstr *s, size_t off, size_t n, struct value *out)
{
    *out = v_substr(r, s, off, n);
    return out->u.s ? PB_OK : NOMEM(r);
}

/* Work a call does on v: its bytes (by 16) and items. */
static uint64_t size_of(const struct value *v)
{
    switch (v->k) {
    case VK_STR: return v->u.s->len / 16;
    case VK_LIST: return v->u.l->n;
    case VK_DICT:
    case VK_NS: return v->u.d->n;
    default: return 0;
    }
}

/* ---- Unicode ---- */

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

/* Case pairs whose two forms have the same UTF-8 length: ASCII, Latin-1,
 * Latin Extended-A, Greek, Cyrillic. Other characters keep their case. */
static uint32_t cp_case(uint32_t c, bool upper)
{
    if (c < 0x80) {
        if (upper && c >= 'a' && c <= 'z')
            return c - 32;
        if (!upper && c >= 'A' && c <= 'Z')
            return c + 32;
        return c;
    }
    if (c >= 0xC0 && c <= 0xFE && c != 0xD7 && c != 0xF7 && c != 0xDF) {
        bool is_upper = c <= 0xDE;
        return upper == is_upper ? c : upper ? c - 0x20 : c + 0x20;
    }
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) { /* even upper, odd lower */
        bool is_upper = !(c & 1);
        return upper == is_upper ? c : upper ? c - 1 : c + 1;
    }
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) { /* odd upper, even lower */
        bool is_upper = c & 1;
        return upper == is_upper ? c : upper ? c - 1 : c + 1;
    }
    if ((c >= 0x391 && c <= 0x3A9 && c != 0x3A2) || (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2)) {
        bool is_upper = c <= 0x3A9;
        return upper == is_upper ? c : upper ? c - 0x20 : c + 0x20;
    }
    if (c >= 0x400 && c <= 0x45F) {
        bool is_upper = c <= 0x42F;
        if (upper == is_upper)
            return c;
        if (c >= 0x410 && c <= 0x44F)
            return upper ? c - 0x20 : c + 0x20;
        return upper ? c - 0x50 : c + 0x50; /* U+0400..040F <-> U+0450..045F */
    }
    return c;
}

static bool cp_cased(uint32_t c)
{
    return cp_case(c, true) != c || cp_case(c, false) != c;
}

static int put_cp(struct render *r, struct obuf *o, uint32_t cp, const uint8_t *mark)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return obuf_put_marked(r, o, b, n, NULL, mark && *mark);
}

/* mode 0 lower, 1 upper, 2 capitalize, 3 title. Marks follow the
 * characters (a mapped character has the same length). */
static int map_case(struct render *r, const struct tstr *s, int mode, struct value *out)
{
    struct obuf o = {0};
    int rc = PB_OK;
    bool word_start = true;
    for (size_t i = 0; i < s->len && rc == PB_OK;) {
        size_t at = i;
        uint32_t cp = next_cp(s->s, s->len, &i);
        bool up = mode == 1 || (mode == 2 && at == 0) || (mode == 3 && word_start);
        if (i - at == 1 && (unsigned char)s->s[at] >= 0x80) /* a stray byte stays as it is */
            rc = obuf_put_sub(r, &o, s, at, 1);
        else
            rc = put_cp(r, &o, cp_case(cp, up), s->taint ? s->taint + at : NULL);
        if (mode == 3)
            word_start = !cp_cased(cp);
    }
    if (rc == PB_OK)
        rc = obuf_value(r, &o, out);
    obuf_free(&o);
    return rc;
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
static int strip(struct render *r, const struct tstr *s, const struct tstr *chars, int which, struct value *out)
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
    return substr(r, s, start, end - start, out);
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
    int64_t done = 0;
    if (old->len == 0) { /* Python inserts new between characters */
        for (size_t k = 0; k <= s->len && rc == PB_OK;) {
            if (count < 0 || done < count) {
                rc = obuf_put_sub(r, &o, new, 0, new->len);
                done++;
            }
            if (k == s->len)
                break;
            size_t j = k;
            next_cp(s->s, s->len, &j);
            if (rc == PB_OK)
                rc = obuf_put_sub(r, &o, s, k, j - k);
            k = j;
        }
    } else {
        size_t i = 0;
        while (rc == PB_OK) {
            const char *hit = count >= 0 && done >= count ? NULL : find_bytes(s->s + i, s->len - i, old->s, old->len);
            if (!hit) {
                rc = obuf_put_sub(r, &o, s, i, s->len - i);
                break;
            }
            rc = obuf_put_sub(r, &o, s, i, (size_t)(hit - (s->s + i)));
            if (rc == PB_OK)
                rc = obuf_put_sub(r, &o, new, 0, new->len);
            i = (size_t)(hit - s->s) + old->len;
            done++;
        }
    }
    if (rc == PB_OK)
        rc = obuf_value(r, &o, out);
    obuf_free(&o);
    return rc;
}

/* str.split(sep=None, maxsplit=-1) */
static int split(struct render *r, const struct tstr *s, const struct tstr *sep, int64_t maxsplit, struct value *out)
{
    if (sep && sep->len == 0)
        return pb_fail(r->err, PB_EINVAL, "template: split: empty separator");
    struct tlist *l = list_new(r, 4);
    if (!l)
        return NOMEM(r);
    int rc = PB_OK;
    size_t i = 0;
    int64_t splits = 0;
    struct value piece;
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
            if (maxsplit >= 0 && splits >= maxsplit) { /* the rest, as it is */
                if ((rc = substr(r, s, start, s->len - start, &piece)) == PB_OK)
                    rc = list_push(r, l, piece);
                break;
            }
            while (i < s->len) {
                size_t j = i;
                if (py_space(next_cp(s->s, s->len, &j)))
                    break;
                i = j;
            }
            if ((rc = substr(r, s, start, i - start, &piece)) == PB_OK)
                rc = list_push(r, l, piece);
            splits++;
        }
    } else {
        while (rc == PB_OK) {
            const char *hit = maxsplit >= 0 && splits >= maxsplit ? NULL
                                                                   : find_bytes(s->s + i, s->len - i, sep->s, sep->len);
            size_t end = hit ? (size_t)(hit - s->s) : s->len;
            if ((rc = substr(r, s, i, end - i, &piece)) == PB_OK)
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

/* Python's str.splitlines(): \n, \r, \r\n, \v, \f, \x1c-\x1e, U+0085,
 * U+2028, U+2029 end lines. */
static int splitlines(struct render *r, const struct tstr *s, struct value *out)
{
    struct tlist *l = list_new(r, 4);
    if (!l)
        return NOMEM(r);
    int rc = PB_OK;
    size_t start = 0;
    for (size_t i = 0; i < s->len && rc == PB_OK;) {
        size_t at = i;
        uint32_t cp = next_cp(s->s, s->len, &i);
        bool brk = cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' || (cp >= 0x1C && cp <= 0x1E) ||
                   cp == 0x85 || cp == 0x2028 || cp == 0x2029;
        if (!brk)
            continue;
        if (cp == '\r' && i < s->len && s->s[i] == '\n')
            i++;
        struct value piece;
        if ((rc = substr(r, s, start, at - start, &piece)) == PB_OK)
            rc = list_push(r, l, piece);
        start = i;
    }
    if (rc == PB_OK && start < s->len) {
        struct value piece;
        if ((rc = substr(r, s, start, s->len - start, &piece)) == PB_OK)
            rc = list_push(r, l, piece);
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
            struct value c;
            if ((rc = substr(r, v->u.s, i, j - i, &c)) == PB_OK)
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
    if (attr && (rc = arg_str(r, line, a, 0, "attribute", &attr_name)))
        return rc;
    if (attr && !attr_name)
        return r_fail(r, line, "selectattr/rejectattr need an attribute name");
    if ((rc = arg_str(r, line, a, attr ? 1 : 0, NULL, &test)))
        return rc;
    if (!(l = list_new(r, src->n + 1)))
        return NOMEM(r);
    struct call_args targs = tail_args(a, attr ? 2 : 1);
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
        rc = e ? obuf_put_marked(r, &o, e, strlen(e), NULL, s.u.s->taint && s.u.s->taint[i])
               : obuf_put_sub(r, &o, s.u.s, i, 1);
    }
    if (rc == PB_OK)
        rc = obuf_value(r, &o, out);
    obuf_free(&o);
    return rc;
}

/* ---- ordering for sort / min / max / unique ---- */

struct sort_key {
    const struct tstr *attr;
    bool case_sensitive;
};

/* The value sorting looks at: the attribute, lowercased unless
 * case_sensitive (Jinja's default is not). */
static int key_of(struct render *r, const struct value *v, const struct sort_key *k, struct value *out)
{
    *out = k->attr ? get_attr_path(v, k->attr) : *v;
    if (out->k == VK_STR && !k->case_sensitive)
        return map_case(r, out->u.s, 0, out);
    return PB_OK;
}

/* Stable merge sort of keys[] with values alongside; comparisons may fail. */
static int merge_sort(struct render *r, int line, struct value *keys, struct value *vals, size_t n, bool reverse,
                      struct value *tk, struct value *tv)
{
    if (n < 2)
        return PB_OK;
    size_t h = n / 2;
    int rc = merge_sort(r, line, keys, vals, h, reverse, tk, tv);
    if (rc == PB_OK)
        rc = merge_sort(r, line, keys + h, vals + h, n - h, reverse, tk, tv);
    if (rc)
        return rc;
    size_t i = 0, j = h, o = 0;
    while (i < h && j < n) {
        int c;
        if ((rc = v_compare(r, line, &keys[j], &keys[i], &c)))
            return rc;
        bool take_right = reverse ? c > 0 : c < 0; /* ties keep the left (stable) */
        size_t from = take_right ? j++ : i++;
        tk[o] = keys[from];
        tv[o++] = vals[from];
    }
    while (i < h) {
        tk[o] = keys[i];
        tv[o++] = vals[i++];
    }
    while (j < n) {
        tk[o] = keys[j];
        tv[o++] = vals[j++];
    }
    memcpy(keys, tk, n * sizeof *keys);
    memcpy(vals, tv, n * sizeof *vals);
    return PB_OK;
}

static int sorted(struct render *r, int line, const struct tlist *src, const struct sort_key *k, bool reverse,
                  struct tlist **out)
{
    size_t n = src->n;
    uint64_t log = 1;
    while ((1ull << log) < n)
        log++;
    int rc = r_spend(r, line, n * log);
    if (rc)
        return rc;
    struct tlist *l = list_new(r, n + 1);
    struct value *keys = arena_alloc(&r->a, (n + 1) * sizeof *keys * 3);
    if (!l || !keys)
        return NOMEM(r);
    for (size_t i = 0; i < n && rc == PB_OK; i++)
        rc = key_of(r, &src->v[i], k, &keys[i]);
    if (rc)
        return rc;
    memcpy(l->v, src->v, n * sizeof *l->v);
    l->n = n;
    rc = merge_sort(r, line, keys, l->v, n, reverse, keys + n, keys + 2 * n);
    *out = l;
    return rc;
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

/* ---- numbers from text, as Python's int() and float() ---- */

static bool parse_py_int(const struct tstr *s, int64_t *out)
{
    char buf[64];
    size_t o = 0, i = 0, n = s->len;
    while (i < n && isspace((unsigned char)s->s[i]))
        i++;
    while (n > i && isspace((unsigned char)s->s[n - 1]))
        n--;
    if (i < n && (s->s[i] == '+' || s->s[i] == '-'))
        buf[o++] = s->s[i++];
    bool digit = false;
    for (; i < n && o < sizeof buf - 1; i++) {
        if (isdigit((unsigned char)s->s[i])) {
            buf[o++] = s->s[i];
            digit = true;
        } else if (s->s[i] == '_' && digit && i + 1 < n && isdigit((unsigned char)s->s[i + 1])) {
            continue;
        } else {
            return false;
        }
    }
    buf[o] = 0;
    if (!digit || i < n)
        return false;
    errno = 0;
    *out = strtoll(buf, NULL, 10);
    return errno == 0;
}

static bool parse_py_float(const struct tstr *s, double *out)
{
    char *end;
    const char *p = s->s;
    while (isspace((unsigned char)*p))
        p++;
    if (!*p || (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))) /* strtod takes hex; Python does not */
        return false;
    *out = strtod(p, &end);
    while (isspace((unsigned char)*end))
        end++;
    return end != p && *end == 0 && (size_t)(end - s->s) == s->len;
}

/* ---- filters ---- */

static int f_tojson(struct render *r, int line, const struct value *in, const struct call_args *a,
                    struct value *out)
{
    /* transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
    int64_t indent;
    int rc = arg_int(r, line, a, 1, "indent", -1, &indent);
    if (rc)
        return rc;
    struct json_opts jo = {
        .indent = (int)(indent > 64 ? 64 : indent),
        .ascii = arg_bool(a, 0, "ensure_ascii", false),
        .sort = arg_bool(a, 3, "sort_keys", false),
        .item_sep = indent >= 0 ? "," : ", ",
        .key_sep = ": ",
    };
    const struct value *sep = arg(a, 2, "separators");
    if (sep && sep->k != VK_NONE && sep->k != VK_UNDEF) {
        if (sep->k != VK_LIST || sep->u.l->n != 2 || sep->u.l->v[0].k != VK_STR || sep->u.l->v[1].k != VK_STR)
            return r_fail(r, line, "tojson: separators must be a pair of strings");
        jo.item_sep = sep->u.l->v[0].u.s->s;
        jo.key_sep = sep->u.l->v[1].u.s->s;
    }
    struct obuf o = {0};
    rc = v_to_json(r, line, in, &jo, &o);
    if (rc == PB_OK)
        rc = obuf_value(r, &o, out);
    obuf_free(&o);
    return rc;
}

static int f_number(struct render *r, int line, const char *name, const struct value *in, const struct call_args *a,
                    struct value *out)
{
    (void)r;
    (void)line;
    bool want_int = name[0] == 'i';
    const struct value *def = arg(a, 0, "default");
    double f = 0;
    int64_t i = 0;
    switch (in->k) {
    case VK_BOOL:
    case VK_INT:
        i = in->k == VK_INT ? in->u.i : in->u.b;
        *out = want_int ? v_int(i) : v_float((double)i);
        return PB_OK;
    case VK_FLOAT:
        f = in->u.f;
        break;
    case VK_STR:
        if (want_int && parse_py_int(in->u.s, &i)) {
            *out = v_int(i);
            return PB_OK;
        }
        if (parse_py_float(in->u.s, &f))
            break;
        /* fall through */
    default:
        *out = def ? *def : want_int ? v_int(0) : v_float(0.0);
        return PB_OK;
    }
    if (!want_int) {
        *out = v_float(f);
        return PB_OK;
    }
    if (!isfinite(f) || fabs(f) >= 9.2e18) {
        *out = def ? *def : v_int(0);
        return PB_OK;
    }
    *out = v_int((int64_t)f); /* toward zero, as int(float) */
    return PB_OK;
}

static int f_round(struct render *r, int line, const struct value *in, const struct call_args *a, struct value *out)
{
    int64_t prec;
    const struct tstr *method;
    int rc;
    if ((rc = arg_int(r, line, a, 0, "precision", 0, &prec)) || (rc = arg_str(r, line, a, 1, "method", &method)))
        return rc;
    if (in->k != VK_FLOAT && in->k != VK_INT && in->k != VK_BOOL)
        return r_fail(r, line, "round: expected a number, not %s", v_kind_name(in));
    if (in->k != VK_FLOAT && (!method || !strcmp(method->s, "common"))) { /* round(int) stays an int */
        *out = v_int(in->k == VK_INT ? in->u.i : in->u.b);
        return PB_OK;
    }
    double f = in->k == VK_FLOAT ? in->u.f : (double)(in->k == VK_INT ? in->u.i : in->u.b);
    if (prec > 17)
        prec = 17;
    if (prec < -17)
        prec = -17;
    double m = pow(10.0, (double)prec);
    bool common = !method || !strcmp(method->s, "common");
    if (common && prec >= 0 && isfinite(f)) {
        /* Python rounds the exact binary value, halves to even; printf
         * with the digits wanted does the same (round(2.675, 2) is 2.67) */
        char buf[400];
        snprintf(buf, sizeof buf, "%.*f", (int)prec, f);
        f = strtod(buf, NULL);
    } else if (common)
        f = nearbyint(f * m) / m;
    else if (!strcmp(method->s, "ceil"))
        f = ceil(f * m) / m;
    else if (!strcmp(method->s, "floor"))
        f = floor(f * m) / m;
    else
        return r_fail(r, line, "round: method must be common, ceil or floor");
    *out = v_float(f);
    return PB_OK;
}

static int f_indent(struct render *r, int line, const struct tstr *s, const struct call_args *a, struct value *out)
{
    int64_t width;
    int rc = arg_int(r, line, a, 0, "width", 4, &width);
    if (rc)
        return rc;
    bool first = arg_bool(a, 1, "first", false), blank = arg_bool(a, 2, "blank", false);
    char pad[65];
    width = width < 0 ? 0 : width > 64 ? 64 : width;
    memset(pad, ' ', (size_t)width);
    struct obuf o = {0};
    bool first_line = true;
    for (size_t i = 0; i < s->len && rc == PB_OK;) {
        const char *nl = memchr(s->s + i, '\n', s->len - i);
        size_t end = nl ? (size_t)(nl - s->s) : s->len;
        if ((first || !first_line) && (blank || end > i))
            rc = obuf_put(r, &o, pad, (size_t)width);
        if (rc == PB_OK)
            rc = obuf_put_sub(r, &o, s, i, end - i + (nl ? 1 : 0));
        i = end + (nl ? 1 : 0);
        first_line = false;
    }
    if (rc == PB_OK)
        rc = obuf_value(r, &o, out);
    obuf_free(&o);
    return rc;
}

static int f_join(struct render *r, int line, const struct tlist *l, const struct call_args *a, struct value *out)
{
    const struct tstr *sep = NULL, *attr = NULL;
    int rc;
    if ((rc = arg_str(r, line, a, 0, "d", &sep)) || (rc = arg_str(r, line, a, 1, "attribute", &attr)))
        return rc;
    struct obuf o = {0};
    for (size_t i = 0; i < l->n && rc == PB_OK; i++) {
        if (i && sep)
            rc = obuf_put_sub(r, &o, sep, 0, sep->len);
        struct value x = attr ? get_attr_path(&l->v[i], attr) : l->v[i];
        if (rc == PB_OK)
            rc = v_to_str(r, line, &x, &o);
    }
    if (rc == PB_OK)
        rc = obuf_value(r, &o, out);
    obuf_free(&o);
    return rc;
}

static int f_map(struct render *r, int line, const struct tlist *l, const struct call_args *a, struct value *out)
{
    const struct tstr *attr = NULL, *filter = NULL;
    int rc = arg_str(r, line, a, -1, "attribute", &attr);
    if (rc || (!attr && (rc = arg_str(r, line, a, 0, NULL, &filter))))
        return rc;
    if (!attr && !filter)
        return r_fail(r, line, "map needs a filter name or attribute=");
    const struct value *def = arg(a, -1, "default");
    struct tlist *res = list_new(r, l->n + 1);
    if (!res)
        return NOMEM(r);
    struct call_args fargs = tail_args(a, 1);
    for (size_t i = 0; i < l->n && rc == PB_OK; i++) {
        struct value x;
        if (attr) {
            x = get_attr_path(&l->v[i], attr);
            if (x.k == VK_UNDEF && def)
                x = *def;
        } else {
            rc = call_filter(r, line, filter->s, &l->v[i], &fargs, &x);
        }
        if (rc == PB_OK)
            rc = list_push(r, res, x);
    }
    *out = (struct value){.k = VK_LIST, .u.l = res};
    return rc;
}

static int f_sum(struct render *r, int line, const struct tlist *l, const struct call_args *a, struct value *out)
{
    const struct tstr *attr = NULL;
    int rc = arg_str(r, line, a, -1, "attribute", &attr);
    if (rc)
        return rc;
    const struct value *start = arg(a, -1, "start");
    int64_t si = start && (start->k == VK_INT || start->k == VK_BOOL) ? (start->k == VK_INT ? start->u.i : start->u.b)
                                                                       : 0;
    double sf = start && start->k == VK_FLOAT ? start->u.f : 0;
    bool is_float = start && start->k == VK_FLOAT;
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

/* Filters of sequences: l is the input as a list. */
static int seq_filter(struct render *r, int line, const char *name, const struct value *in, struct tlist *l,
                      const struct call_args *a, struct value *out)
{
    int rc = PB_OK;
    struct sort_key key = {NULL, arg_bool(a, -1, "case_sensitive", false)};
    if (!strcmp(name, "list")) {
        *out = (struct value){.k = VK_LIST, .u.l = l == in->u.l ? copy_list(r, l) : l};
        if (out->u.l)
            out->u.l->tuple = false;
        return out->u.l ? PB_OK : NOMEM(r);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        *out = l->n == 0 ? v_undef() : l->v[name[0] == 'f' ? 0 : l->n - 1];
        return PB_OK;
    }
    if (!strcmp(name, "join"))
        return f_join(r, line, l, a, out);
    if (!strcmp(name, "map"))
        return f_map(r, line, l, a, out);
    if (!strcmp(name, "sum"))
        return f_sum(r, line, l, a, out);
    if (!strcmp(name, "reverse")) {
        struct tlist *res = list_new(r, l->n + 1);
        if (!res)
            return NOMEM(r);
        for (size_t i = l->n; i-- > 0 && rc == PB_OK;)
            rc = list_push(r, res, l->v[i]);
        if (rc == PB_OK && in->k == VK_STR) { /* a reversed string stays a string */
            struct value lv = {.k = VK_LIST, .u.l = res};
            struct call_args none = {0};
            return f_join(r, line, lv.u.l, &none, out);
        }
        *out = (struct value){.k = VK_LIST, .u.l = res};
        return rc;
    }
    if (!strcmp(name, "sort") || !strcmp(name, "min") || !strcmp(name, "max")) {
        if ((rc = arg_str(r, line, a, -1, "attribute", &key.attr)))
            return rc;
        bool reverse = !strcmp(name, "sort") && arg_bool(a, 0, "reverse", false);
        struct tlist *res;
        if ((rc = sorted(r, line, l, &key, reverse, &res)))
            return rc;
        if (!strcmp(name, "sort"))
            *out = (struct value){.k = VK_LIST, .u.l = res};
        else /* the first smallest / the last largest, as Python's min / max */
            *out = res->n == 0 ? v_undef() : res->v[name[1] == 'i' ? 0 : res->n - 1];
        if (!strcmp(name, "max") && res->n > 1) { /* max keeps the first of equal largest */
            size_t k = res->n - 1;
            struct value kk, kp;
            while (k > 0 && key_of(r, &res->v[k - 1], &key, &kp) == PB_OK &&
                   key_of(r, &res->v[k], &key, &kk) == PB_OK && v_equal(&kp, &kk))
                k--;
            *out = res->v[k];
        }
        return PB_OK;
    }
    if (!strcmp(name, "unique")) {
        if ((rc = arg_str(r, line, a, -1, "attribute", &key.attr)))
            return rc;
        struct tlist *res = list_new(r, l->n + 1), *seen = list_new(r, l->n + 1);
        if (!res || !seen)
            return NOMEM(r);
        for (size_t i = 0; i < l->n && rc == PB_OK; i++) {
            struct value k;
            if ((rc = key_of(r, &l->v[i], &key, &k)) || (rc = r_spend(r, line, seen->n)))
                return rc;
            bool dup = false;
            for (size_t j = 0; j < seen->n && !dup; j++)
                dup = v_equal(&seen->v[j], &k);
            if (!dup && (rc = list_push(r, seen, k)) == PB_OK)
                rc = list_push(r, res, l->v[i]);
        }
        *out = (struct value){.k = VK_LIST, .u.l = res};
        return rc;
    }
    return r_fail(r, line, "unknown filter '%s'", name);
}

int call_filter(struct render *r, int line, const char *name, const struct value *in, const struct call_args *a,
                struct value *out)
{
    int rc = r_spend(r, line, 1 + size_of(in));
    if (rc)
        return rc;
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
    if (!strcmp(name, "tojson"))
        return f_tojson(r, line, in, a, out);
    if (!strcmp(name, "e") || !strcmp(name, "escape") || !strcmp(name, "forceescape"))
        return html_escape(r, in, line, out);
    if (!strcmp(name, "int") || !strcmp(name, "float"))
        return f_number(r, line, name, in, a, out);
    if (!strcmp(name, "round"))
        return f_round(r, line, in, a, out);
    if (!strcmp(name, "abs")) {
        if (in->k == VK_INT)
            *out = v_int(in->u.i < 0 && in->u.i != INT64_MIN ? -in->u.i : in->u.i);
        else if (in->k == VK_FLOAT)
            *out = v_float(fabs(in->u.f));
        else
            return r_fail(r, line, "abs: expected a number, not %s", v_kind_name(in));
        return PB_OK;
    }
    if (!strcmp(name, "attr")) {
        if ((rc = arg_str(r, line, a, 0, "name", &s1)))
            return rc;
        *out = s1 && (in->k == VK_DICT || in->k == VK_NS) ? get_attr_path(in, s1) : v_undef();
        return PB_OK;
    }
    if (!strcmp(name, "select") || !strcmp(name, "reject"))
        return select_filter(r, line, in, a, false, name[0] == 's', out);
    if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr"))
        return select_filter(r, line, in, a, true, name[0] == 's', out);
    if (!strcmp(name, "items") || !strcmp(name, "dictsort")) {
        if (in->k == VK_UNDEF) {
            *out = (struct value){.k = VK_LIST, .u.l = list_new(r, 1)};
            return out->u.l ? PB_OK : NOMEM(r);
        }
        if (in->k != VK_DICT && in->k != VK_NS)
            return r_fail(r, line, "%s: expected a mapping, not %s", name, v_kind_name(in));
        static const struct call_args none = {0};
        if ((rc = call_method(r, line, in, "items", &none, out)) || name[0] == 'i')
            return rc;
        /* dictsort: by key, case-insensitive unless told */
        struct sort_key key = {NULL, arg_bool(a, 0, "case_sensitive", false)};
        struct tlist *pairs = out->u.l, *keys = list_new(r, pairs->n + 1), *res;
        if (!keys)
            return NOMEM(r);
        for (size_t i = 0; i < pairs->n && rc == PB_OK; i++)
            rc = list_push(r, keys, pairs->v[i].u.l->v[0]);
        if (rc || (rc = sorted(r, line, keys, &key, arg_bool(a, 2, "reverse", false), &res)))
            return rc;
        struct tlist *sorted_pairs = list_new(r, pairs->n + 1);
        if (!sorted_pairs)
            return NOMEM(r);
        for (size_t i = 0; i < res->n && rc == PB_OK; i++)
            for (size_t j = 0; j < pairs->n; j++)
                if (v_equal(&pairs->v[j].u.l->v[0], &res->v[i])) {
                    rc = list_push(r, sorted_pairs, pairs->v[j]);
                    break;
                }
        *out = (struct value){.k = VK_LIST, .u.l = sorted_pairs};
        return rc;
    }

    /* string filters: the input as a string (undefined as "") */
    if (!strcmp(name, "trim") || !strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") ||
        !strcmp(name, "title") || !strcmp(name, "replace") || !strcmp(name, "indent") || !strcmp(name, "wordcount")) {
        struct value s;
        if (in->k == VK_UNDEF)
            s = str_value(r, "", 0, &rc);
        else
            rc = v_stringify(r, line, in, &s);
        if (rc)
            return rc;
        if (!strcmp(name, "trim")) {
            if ((rc = arg_str(r, line, a, 0, "chars", &s1)))
                return rc;
            return strip(r, s.u.s, s1, 3, out);
        }
        if (!strcmp(name, "replace")) {
            if ((rc = arg_str(r, line, a, 0, "old", &s1)) || (rc = arg_str(r, line, a, 1, "new", &s2)) ||
                (rc = arg_int(r, line, a, 2, "count", -1, &n)))
                return rc;
            if (!s1 || !s2)
                return r_fail(r, line, "replace needs two strings");
            return replace(r, s.u.s, s1, s2, n, out);
        }
        if (!strcmp(name, "indent"))
            return f_indent(r, line, s.u.s, a, out);
        if (!strcmp(name, "wordcount")) {
            struct value words;
            if ((rc = split(r, s.u.s, NULL, -1, &words)) == PB_OK)
                *out = v_int((int64_t)words.u.l->n);
            return rc;
        }
        int mode = !strcmp(name, "lower") ? 0 : !strcmp(name, "upper") ? 1 : !strcmp(name, "capitalize") ? 2 : 3;
        return map_case(r, s.u.s, mode, out);
    }

    struct tlist *l;
    if ((rc = as_list(r, line, in, &l)))
        return rc;
    return seq_filter(r, line, name, in, l, a, out);
}

/* ---- tests ---- */

int call_test(struct render *r, int line, const char *name, const struct value *in, const struct call_args *a,
              bool *out)
{
    const struct value *x = arg(a, 0, NULL);
    int cmp;
    int rc = r_spend(r, line, 1);
    if (rc)
        return rc;
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
        /* Python: no character of the other case, and at least one cased */
        bool want_upper = name[0] == 'u', cased = false;
        *out = in->k == VK_STR;
        for (size_t i = 0; *out && i < in->u.s->len;) {
            uint32_t cp = next_cp(in->u.s->s, in->u.s->len, &i);
            if (cp_cased(cp)) {
                cased = true;
                if (cp_case(cp, want_upper) != cp)
                    *out = false;
            }
        }
        *out = *out && cased;
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
        if ((rc = r_spend(r, line, size_of(x))))
            return rc;
        if (x->k == VK_STR && in->k == VK_STR) {
            *out = find_bytes(x->u.s->s, x->u.s->len, in->u.s->s, in->u.s->len) != NULL;
        } else {
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
        return strip(r, s, s1, name[0] == 'l' ? 1 : name[0] == 'r' ? 2 : 3, out);
    }
    if (!strcmp(name, "split")) {
        if ((rc = arg_str(r, line, a, 0, "sep", &s1)) || (rc = arg_int(r, line, a, 1, "maxsplit", -1, &n)))
            return rc;
        return split(r, s, s1, n, out);
    }
    if (!strcmp(name, "splitlines"))
        return splitlines(r, s, out);
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
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "title") || !strcmp(name, "capitalize"))
        return map_case(r, s, !strcmp(name, "lower") ? 0 : !strcmp(name, "upper") ? 1 : name[0] == 'c' ? 2 : 3, out);
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
    if (!strcmp(name, "isdigit") || !strcmp(name, "isalpha") || !strcmp(name, "isspace") ||
        !strcmp(name, "isalnum")) {
        bool ok = s->len > 0;
        for (size_t i = 0; ok && i < s->len;) {
            uint32_t cp = next_cp(s->s, s->len, &i);
            bool digit = cp < 0x80 && isdigit((int)cp), alpha = (cp < 0x80 && isalpha((int)cp)) || cp_cased(cp);
            ok = !strcmp(name, "isdigit") ? digit : !strcmp(name, "isalpha") ? alpha
                 : !strcmp(name, "isspace")                                   ? py_space(cp)
                                                                              : digit || alpha;
        }
        *out = v_bool(ok);
        return PB_OK;
    }
    return r_fail(r, line, "str has no method '%s'", name);
}

int call_method(struct render *r, int line, const struct value *obj, const char *name, const struct call_args *a,
                struct value *out)
{
    int rc = r_spend(r, line, 1 + size_of(obj));
    if (rc)
        return rc;
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
                    pair->tuple = true;
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
    int rc = r_spend(r, line, 1);
    if (rc)
        return rc;
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
        /* the count in floating point first: no overflow whatever the ends */
        double span = step > 0 ? (double)stop - (double)start : (double)start - (double)stop;
        double count = span <= 0 ? 0 : ceil(span / fabs((double)step));
        if (count > MAX_RANGE)
            return r_fail(r, line, "range of %.0f items is too large (limit %d)", count, MAX_RANGE);
        if ((rc = r_spend(r, line, (uint64_t)count)))
            return rc;
        struct tlist *l = list_new(r, (size_t)count + 1);
        if (!l)
            return NOMEM(r);
        for (int64_t k = 0; k < (int64_t)count && rc == PB_OK; k++)
            rc = list_push(r, l, v_int(start + k * step)); /* within the range: no overflow */
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
        obuf_free(&o);
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
