#define _POSIX_C_SOURCE 200809L
/* JSON Schema to GBNF (plumb/sampler.h): each schema node becomes a rule
 * whose sentences are JSON texts the schema accepts.
 *
 * What is written is a subset of what a schema accepts, chosen so that
 * every sentence validates: properties come in the schema's order,
 * optional ones may be left out, none is repeated; strings use the
 * escapes \" \\ \/ \b \f \n \r \t (never \u); numbers have at most 16
 * digits before and after the point; dates have days 01-28 (always a
 * real date); times and date-times end in Z. additionalProperties: true
 * or a schema allows further properties (keys of 1 to 64 characters);
 * absent, the object has only the listed ones (as OpenAI's strict mode
 * asks).
 *
 * Keywords: type (and lists of types), properties, required,
 * additionalProperties, enum, const, items, prefixItems, minItems,
 * maxItems, minLength, maxLength, pattern, format (date, time, date-time,
 * uuid, email, ipv4), anyOf, oneOf (the branches should not overlap: the
 * grammar lets any one through), allOf of object schemas, $ref into
 * $defs / definitions / "#" (recursion included), minimum, maximum,
 * exclusiveMinimum, exclusiveMaximum on integers (any bounds up to 1e15)
 * and minimum 0 on numbers. Annotations (title, description, default,
 * examples, $schema, $id, $comment, deprecated, readOnly, writeOnly) are
 * ignored. Any other keyword is an error naming it and where it is.
 *
 * pattern: a regular expression subset, matched whole (an anchored match
 * is also a match of the unanchored pattern): literals and escapes
 * (\. \\ \/ \- \t \n ...), . (any character but line breaks), \d \w \s
 * \D \W \S, classes [a-z] [^...], groups ( ) and (?: ), alternation |,
 * quantifiers * + ? {m} {m,} {m,n} (lazy forms accepted: the language is
 * the same), ^ at the start and $ at the end. Back-references,
 * look-arounds and Unicode properties are refused.
 */
#include "plumb/sampler.h"
#include "base/err.h"

#include "base/sbuf.h"
#include "sampler/grammar.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SCHEMA_DEPTH 64
#define MAX_REFS 1024
#define MAX_INT_BOUND 1000000000000000LL /* 1e15 */

/* The grammar every JSON text follows, and its rule names used below. */
static const char json_rules[] =
    "ws ::= (\" \" | \"\\n\" [ \\t]{0,20})?\n"
    "char ::= [^\"\\\\\\x00-\\x1f] | \"\\\\\" [\"\\\\/bfnrt]\n"
    "string ::= \"\\\"\" char* \"\\\"\"\n"
    "integer ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15})\n"
    "number ::= integer (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?\n"
    "boolean ::= \"true\" | \"false\"\n"
    "null ::= \"null\"\n"
    "key ::= \"\\\"\" char{1,64} \"\\\"\"\n"
    "value ::= object | array | string | number | boolean | null\n"
    "object ::= \"{\" ws ( string ws \":\" ws value ws ( \",\" ws string ws \":\" ws value ws )* )? \"}\"\n"
    "array ::= \"[\" ws ( value ws ( \",\" ws value ws )* )? \"]\"\n";

const char *sampler_json_grammar(void)
{
    /* JSON mode: any object, \u escapes included; UTF-16 surrogate
     * escapes only as a high half followed by a low half (a lone half is
     * not a character: strict parsers refuse it) */
    return "root ::= ws object ws\n"
           "ws ::= (\" \" | \"\\n\" [ \\t]{0,20})?\n"
           "hex ::= [0-9a-fA-F]\n"
           "u-char ::= [0-9a-cA-CeEfF] hex hex hex | [dD] [0-7] hex hex\n"
           "u-pair ::= [dD] [89abAB] hex hex \"\\\\u\" [dD] [c-fC-F] hex hex\n"
           "char ::= [^\"\\\\\\x00-\\x1f] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" (u-char | u-pair))\n"
           "string ::= \"\\\"\" char* \"\\\"\"\n"
           "integer ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15})\n"
           "number ::= integer (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?\n"
           "value ::= object | array | string | number | \"true\" | \"false\" | \"null\"\n"
           "object ::= \"{\" ws ( string ws \":\" ws value ws ( \",\" ws string ws \":\" ws value ws )* )? \"}\"\n"
           "array ::= \"[\" ws ( value ws ( \",\" ws value ws )* )? \"]\"\n";
}

int sampler_grammar_check(const char *gbnf, size_t len, pb_err *err)
{
    struct grammar *g;
    int rc = grammar_parse(gbnf, len, &g, err);
    grammar_free(g);
    return rc;
}

struct ref {
    char *ptr;   /* the $ref string */
    int rule;
};

struct conv {
    struct sbuf out;
    const json_t *root;
    pb_err *err;
    int rc;
    int n_rules;
    struct ref refs[MAX_REFS];
    int n_refs;
    int depth;
    char path[512]; /* where in the schema, for messages */
};

static int cfail(struct conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfail(struct conv *c, const char *fmt, ...)
{
    if (c->rc)
        return c->rc;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->rc = pb_fail(c->err, PB_EINVAL, "%s (at %s)", msg, c->path[0] ? c->path : "the schema's root");
    return c->rc;
}

static int check_mem(struct conv *c, int rc)
{
    if (rc && !c->rc)
        c->rc = pb_fail(c->err, PB_ENOMEM, "out of memory");
    if (!c->rc && c->out.len > GRAMMAR_MAX_TEXT)
        c->rc = pb_fail(c->err, PB_EINVAL, "the schema's grammar grows beyond %u bytes", GRAMMAR_MAX_TEXT);
    return c->rc;
}

/* text as a GBNF string literal. */
static int put_literal(struct sbuf *b, const char *s, size_t n)
{
    int rc = sbuf_add(b, "\"", 1);
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            rc = sbuf_addf(b, "\\%c", ch);
        else if (ch < 0x20)
            rc = sbuf_addf(b, "\\x%02x", ch);
        else
            rc = sbuf_add(b, s + i, 1);
    }
    return rc ? rc : sbuf_add(b, "\"", 1);
}

/* A JSON value, as written (compact), as a literal. */
static int put_json_literal(struct conv *c, struct sbuf *b, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        return check_mem(c, PB_ENOMEM);
    int rc = put_literal(b, s, strlen(s));
    free(s);
    return check_mem(c, rc);
}

static int visit(struct conv *c, const json_t *s, int *rule);

/* ---- code point sets, for the regex subset ---- */

#define MAX_RANGES 256
struct cpset {
    uint32_t r[MAX_RANGES][2];
    int n;
    bool overflow;
};

static void cps_add(struct cpset *s, uint32_t lo, uint32_t hi)
{
    if (s->n == MAX_RANGES) {
        s->overflow = true;
        return;
    }
    s->r[s->n][0] = lo;
    s->r[s->n][1] = hi;
    s->n++;
}

static int cmp_r(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

static void cps_norm(struct cpset *s)
{
    qsort(s->r, (size_t)s->n, sizeof s->r[0], cmp_r);
    int m = 0;
    for (int i = 0; i < s->n; i++) {
        if (m && s->r[i][0] <= s->r[m - 1][1] + 1) {
            if (s->r[i][1] > s->r[m - 1][1])
                s->r[m - 1][1] = s->r[i][1];
        } else {
            s->r[m][0] = s->r[i][0];
            s->r[m][1] = s->r[i][1];
            m++;
        }
    }
    s->n = m;
}

static void cps_invert(struct cpset *s)
{
    cps_norm(s);
    struct cpset o = {.n = 0};
    uint32_t at = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->r[i][0] > at)
            cps_add(&o, at, s->r[i][0] - 1);
        at = s->r[i][1] + 1;
    }
    if (at <= 0x10ffff)
        cps_add(&o, at, 0x10ffff);
    *s = o;
}

static bool cps_has(const struct cpset *s, uint32_t cp)
{
    for (int i = 0; i < s->n; i++)
        if (cp >= s->r[i][0] && cp <= s->r[i][1])
            return true;
    return false;
}

static void put_cp(struct sbuf *b, uint32_t cp)
{
    if (cp < 0x20 || cp == '"' || cp == '\\' || cp == ']' || cp == '[' || cp == '-' || cp == '^' || cp == 0x7f)
        sbuf_addf(b, cp > 0xffff ? "\\U%08" PRIx32 : "\\u%04" PRIx32, cp);
    else if (cp < 0x80)
        sbuf_addf(b, "%c", (char)cp);
    else
        sbuf_addf(b, cp > 0xffff ? "\\U%08" PRIx32 : "\\u%04" PRIx32, cp);
}

/* A set of characters as they appear inside a JSON string: the printable
 * ones raw, quote, backslash and the usual controls as escapes. */
static int put_json_chars(struct conv *c, struct sbuf *b, struct cpset *s)
{
    cps_norm(s);
    static const struct {
        uint32_t cp;
        const char *esc;
    } escs[] = {{'"', "\"\\\\\\\"\""}, {'\\', "\"\\\\\\\\\""}, {'\n', "\"\\\\n\""}, {'\t', "\"\\\\t\""},
                {'\r', "\"\\\\r\""},   {'\b', "\"\\\\b\""},     {'\f', "\"\\\\f\""}};
    struct sbuf cls = {0};
    int n_parts = 0;
    for (int i = 0; i < s->n; i++) {
        uint32_t lo = s->r[i][0] < 0x20 ? 0x20 : s->r[i][0], hi = s->r[i][1];
        /* split around the quote and the backslash */
        const uint32_t cut[2] = {'"', '\\'};
        for (int k = 0; k < 2 && lo <= hi; k++) {
            if (cut[k] < lo || cut[k] > hi)
                continue;
            if (cut[k] > lo) {
                put_cp(&cls, lo);
                if (cut[k] - 1 > lo) {
                    sbuf_addf(&cls, "-");
                    put_cp(&cls, cut[k] - 1);
                }
            }
            lo = cut[k] + 1;
        }
        if (lo <= hi) {
            put_cp(&cls, lo);
            if (hi > lo) {
                sbuf_addf(&cls, "-");
                put_cp(&cls, hi);
            }
        }
    }
    int rc = sbuf_add(b, "(", 1);
    if (cls.len) {
        rc |= sbuf_addf(b, "[%s]", cls.data);
        n_parts++;
    }
    sbuf_free(&cls);
    for (size_t k = 0; k < sizeof escs / sizeof escs[0]; k++)
        if (cps_has(s, escs[k].cp)) {
            rc |= sbuf_addf(b, "%s%s", n_parts ? " | " : "", escs[k].esc);
            n_parts++;
        }
    rc |= sbuf_add(b, ")", 1);
    if (rc)
        return check_mem(c, PB_ENOMEM);
    if (!n_parts)
        return cfail(c, "'pattern': a character class that matches no character a JSON string can hold");
    if (s->overflow)
        return cfail(c, "'pattern': a character class too complex");
    return 0;
}

/* ---- regular expressions ---- */

struct rx {
    struct conv *c;
    const char *s;
    size_t n, at;
    int depth;
};

static int rx_alt(struct rx *r, struct sbuf *b);

static int rx_fail(struct rx *r, const char *what)
{
    return cfail(r->c, "'pattern' at character %zu: %s", r->at + 1, what);
}

/* One UTF-8 code point of the pattern. */
static bool rx_utf8(struct rx *r, uint32_t *cp)
{
    const unsigned char *p = (const unsigned char *)r->s + r->at;
    size_t left = r->n - r->at;
    uint32_t c0 = p[0];
    size_t k = c0 < 0x80 ? 1 : (c0 >> 5) == 6 ? 2 : (c0 >> 4) == 14 ? 3 : (c0 >> 3) == 30 ? 4 : 0;
    if (!k || k > left)
        return false;
    uint32_t v = k == 1 ? c0 : c0 & (0x3fu >> (k - 1));
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return false;
        v = (v << 6) | (p[i] & 0x3f);
    }
    r->at += k;
    *cp = v;
    return true;
}

static void cls_digit(struct cpset *s) { cps_add(s, '0', '9'); }
static void cls_word(struct cpset *s)
{
    cps_add(s, '0', '9');
    cps_add(s, 'A', 'Z');
    cps_add(s, 'a', 'z');
    cps_add(s, '_', '_');
}
static void cls_space(struct cpset *s)
{
    cps_add(s, '\t', '\r');
    cps_add(s, ' ', ' ');
}

/* After a backslash: a class escape into s (true), or a character *cp. */
static int rx_escape(struct rx *r, struct cpset *s, bool *is_set, uint32_t *cp)
{
    *is_set = false;
    if (r->at >= r->n)
        return rx_fail(r, "a backslash at the end");
    char e = r->s[r->at++];
    struct cpset t = {.n = 0};
    switch (e) {
    case 'd': case 'D': cls_digit(&t); break;
    case 'w': case 'W': cls_word(&t); break;
    case 's': case 'S': cls_space(&t); break;
    case 'n': *cp = '\n'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'v': *cp = '\v'; return 0;
    case 'b': case 'B': return rx_fail(r, "word boundaries (\\b) are not supported");
    default:
        if ((e >= '0' && e <= '9') || e == 'k')
            return rx_fail(r, "back-references are not supported");
        if (e == 'p' || e == 'P')
            return rx_fail(r, "Unicode property classes (\\p) are not supported");
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z'))
            return rx_fail(r, "an unknown escape");
        r->at--;
        if (!rx_utf8(r, cp))
            return rx_fail(r, "invalid UTF-8");
        return 0;
    }
    if (e == 'D' || e == 'W' || e == 'S')
        cps_invert(&t);
    *s = t;
    *is_set = true;
    return 0;
}

/* One atom into b (a parenthesized GBNF expression). */
static int rx_atom(struct rx *r, struct sbuf *b)
{
    const char ch = r->s[r->at];
    struct cpset set = {.n = 0};
    if (ch == '(') {
        r->at++;
        if (r->at + 1 < r->n && r->s[r->at] == '?') {
            if (r->s[r->at + 1] != ':')
                return rx_fail(r, "look-arounds and named groups are not supported");
            r->at += 2;
        }
        if (++r->depth > MAX_SCHEMA_DEPTH)
            return rx_fail(r, "groups nested too deep");
        if (sbuf_add(b, "(", 1) || rx_alt(r, b))
            return check_mem(r->c, PB_ENOMEM);
        r->depth--;
        if (r->at >= r->n || r->s[r->at] != ')')
            return rx_fail(r, "a group without its closing )");
        r->at++;
        return check_mem(r->c, sbuf_add(b, ")", 1));
    }
    if (ch == '[') {
        r->at++;
        bool neg = r->at < r->n && r->s[r->at] == '^';
        if (neg)
            r->at++;
        bool first = true;
        while (r->at < r->n && (r->s[r->at] != ']' || first)) {
            first = false;
            uint32_t lo;
            bool is_set = false;
            if (r->s[r->at] == '\\') {
                r->at++;
                struct cpset t;
                if (rx_escape(r, &t, &is_set, &lo))
                    return r->c->rc;
                if (is_set) {
                    for (int i = 0; i < t.n; i++)
                        cps_add(&set, t.r[i][0], t.r[i][1]);
                    continue;
                }
            } else if (!rx_utf8(r, &lo)) {
                return rx_fail(r, "invalid UTF-8");
            }
            uint32_t hi = lo;
            if (r->at + 1 < r->n && r->s[r->at] == '-' && r->s[r->at + 1] != ']') {
                r->at++;
                if (r->s[r->at] == '\\') {
                    r->at++;
                    struct cpset t;
                    if (rx_escape(r, &t, &is_set, &hi))
                        return r->c->rc;
                    if (is_set)
                        return rx_fail(r, "a range ending in a class");
                } else if (!rx_utf8(r, &hi)) {
                    return rx_fail(r, "invalid UTF-8");
                }
                if (hi < lo)
                    return rx_fail(r, "a range whose end comes before its start");
            }
            cps_add(&set, lo, hi);
        }
        if (r->at >= r->n)
            return rx_fail(r, "a class without its closing ]");
        r->at++;
        if (neg)
            cps_invert(&set);
        return put_json_chars(r->c, b, &set);
    }
    if (ch == '.') {
        r->at++;
        cps_add(&set, '\n', '\n');
        cps_add(&set, '\r', '\r');
        cps_add(&set, 0x2028, 0x2029);
        cps_invert(&set);
        return put_json_chars(r->c, b, &set);
    }
    if (ch == '\\') {
        r->at++;
        uint32_t cp;
        bool is_set;
        if (rx_escape(r, &set, &is_set, &cp))
            return r->c->rc;
        if (!is_set)
            cps_add(&set, cp, cp);
        return put_json_chars(r->c, b, &set);
    }
    if (ch == '*' || ch == '+' || ch == '?' || ch == '{')
        return rx_fail(r, "a quantifier with nothing to repeat");
    if (ch == '^' || ch == '$')
        return rx_fail(r, "anchors (^ $) are supported only at the start and the end");
    uint32_t cp;
    if (!rx_utf8(r, &cp))
        return rx_fail(r, "invalid UTF-8");
    cps_add(&set, cp, cp);
    return put_json_chars(r->c, b, &set);
}

static bool rx_num(struct rx *r, uint32_t *v)
{
    size_t s = r->at;
    uint64_t x = 0;
    while (r->at < r->n && r->s[r->at] >= '0' && r->s[r->at] <= '9' && x <= GRAMMAR_MAX_REPEAT)
        x = x * 10 + (uint64_t)(r->s[r->at++] - '0');
    *v = (uint32_t)x;
    return r->at > s && x <= GRAMMAR_MAX_REPEAT;
}

static int rx_seq(struct rx *r, struct sbuf *b)
{
    while (r->at < r->n && r->s[r->at] != '|' && r->s[r->at] != ')') {
        if (r->s[r->at] == '$' && r->at + 1 == r->n) {
            r->at++;
            break;
        }
        if (rx_atom(r, b))
            return r->c->rc;
        if (r->at < r->n) {
            const char q = r->s[r->at];
            int rc = 0;
            if (q == '*' || q == '+' || q == '?') {
                r->at++;
                rc = sbuf_addf(b, "%c ", q);
            } else if (q == '{') {
                size_t save = r->at++;
                uint32_t m, n;
                if (!rx_num(r, &m)) {
                    r->at = save;
                    return rx_fail(r, "a { that is not a repetition {m,n} (write \\{ for the character)");
                }
                n = m;
                bool open = false;
                if (r->at < r->n && r->s[r->at] == ',') {
                    r->at++;
                    open = !(r->at < r->n && r->s[r->at] >= '0' && r->s[r->at] <= '9');
                    if (!open && !rx_num(r, &n))
                        return rx_fail(r, "a bad repetition count");
                }
                if (r->at >= r->n || r->s[r->at] != '}')
                    return rx_fail(r, "a repetition without its closing }");
                r->at++;
                if (!open && n < m)
                    return rx_fail(r, "a repetition {m,n} with n below m");
                rc = open ? sbuf_addf(b, "{%" PRIu32 ",} ", m) : sbuf_addf(b, "{%" PRIu32 ",%" PRIu32 "} ", m, n);
            } else {
                rc = sbuf_add(b, " ", 1);
            }
            if (rc)
                return check_mem(r->c, rc);
            if (r->at < r->n && r->s[r->at] == '?' && (q == '*' || q == '+' || q == '?' || q == '{'))
                r->at++; /* lazy: the same language */
            if (r->at < r->n && (r->s[r->at] == '*' || r->s[r->at] == '+' || r->s[r->at] == '{'))
                return rx_fail(r, "a quantifier after a quantifier");
        }
    }
    return 0;
}

static int rx_alt(struct rx *r, struct sbuf *b)
{
    for (;;) {
        size_t before = b->len;
        if (rx_seq(r, b))
            return r->c->rc;
        if (b->len == before && sbuf_add(b, "\"\"", 2))
            return check_mem(r->c, PB_ENOMEM);
        if (r->at < r->n && r->s[r->at] == '|') {
            r->at++;
            if (sbuf_add(b, " | ", 3))
                return check_mem(r->c, PB_ENOMEM);
            continue;
        }
        return 0;
    }
}

/* A pattern as the GBNF expression of a JSON string's contents. */
static int put_pattern(struct conv *c, struct sbuf *b, const char *pat, size_t n)
{
    struct rx r = {c, pat, n, 0, 0};
    if (r.n && pat[0] == '^')
        r.at = 1;
    if (sbuf_add(b, "(", 1))
        return check_mem(c, PB_ENOMEM);
    if (rx_alt(&r, b))
        return c->rc;
    if (r.at < r.n)
        return rx_fail(&r, r.s[r.at] == ')' ? "a ) without its (" : "unexpected character");
    return check_mem(c, sbuf_add(b, ")", 1));
}

/* ---- integers in a range ---- */

/* Non-negative integers in [lo, hi] with as many digits as hi and lo
 * (given as strings of equal length n). */
static int put_digits_range(struct sbuf *b, const char *lo, const char *hi, size_t n)
{
    if (n == 0)
        return sbuf_add(b, "\"\"", 2);
    if (lo[0] == hi[0]) {
        int rc = sbuf_addf(b, "\"%c\" ", lo[0]);
        return rc ? rc : put_digits_range(b, lo + 1, hi + 1, n - 1);
    }
    bool lo_zero = true, hi_nine = true;
    for (size_t i = 1; i < n; i++) {
        lo_zero &= lo[i] == '0';
        hi_nine &= hi[i] == '9';
    }
    char lo2[20], hi2[20];
    int rc = sbuf_add(b, "(", 1);
    char first_lo = lo[0], first_hi = hi[0];
    bool any = false;
    if (!lo_zero) { /* lo[0] followed by [lo[1..], 99..] */
        memset(hi2, '9', n - 1);
        rc |= sbuf_addf(b, "\"%c\" (", lo[0]);
        rc |= put_digits_range(b, lo + 1, hi2, n - 1);
        rc |= sbuf_add(b, ")", 1);
        first_lo++;
        any = true;
    }
    if (!hi_nine)
        first_hi--;
    if (first_lo <= first_hi) {
        rc |= sbuf_addf(b, "%s[%c-%c]", any ? " | " : "", first_lo, first_hi);
        if (n > 1)
            rc |= sbuf_addf(b, " [0-9]{%zu}", n - 1);
        any = true;
    }
    if (!hi_nine) { /* hi[0] followed by [00.., hi[1..]] */
        memset(lo2, '0', n - 1);
        rc |= sbuf_addf(b, "%s\"%c\" (", any ? " | " : "", hi[0]);
        rc |= put_digits_range(b, lo2, hi + 1, n - 1);
        rc |= sbuf_add(b, ")", 1);
    }
    return rc | sbuf_add(b, ")", 1);
}

/* Non-negative integers in [lo, hi] (hi < 0: no bound). */
static int put_nonneg_range(struct sbuf *b, int64_t lo, int64_t hi)
{
    char ls[24], hs[24];
    int nl = snprintf(ls, sizeof ls, "%" PRId64, lo);
    int rc = sbuf_add(b, "(", 1);
    bool any = false;
    for (int len = nl; len <= 16; len++) {
        /* the numbers of len digits within the bounds */
        char a[24], z[24];
        if (len == nl)
            memcpy(a, ls, (size_t)len + 1);
        else {
            memset(a, '0', (size_t)len);
            a[0] = '1';
            a[len] = 0;
        }
        memset(z, '9', (size_t)len);
        z[len] = 0;
        if (hi >= 0) {
            int nh = snprintf(hs, sizeof hs, "%" PRId64, hi);
            if (len > nh)
                break;
            if (len == nh)
                memcpy(z, hs, (size_t)nh + 1);
        }
        if (strcmp(a, z) > 0)
            continue;
        if (any)
            rc |= sbuf_add(b, " | ", 3);
        rc |= put_digits_range(b, a, z, (size_t)len);
        any = true;
    }
    if (!any)
        rc |= sbuf_add(b, "[^\\x00-\\U0010ffff]", 19); /* nothing: cannot happen for lo <= hi */
    return rc | sbuf_add(b, ")", 1);
}

/* ---- schema nodes ---- */

static bool is_annotation(const char *k)
{
    static const char *const a[] = {"title",  "description", "default",  "examples",  "$schema",  "$id",
                                     "$comment", "deprecated", "readOnly", "writeOnly", "$defs",    "definitions"};
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
        if (!strcmp(k, a[i]))
            return true;
    return false;
}

static bool is_known(const char *k)
{
    static const char *const a[] = {
        "type",      "properties", "required",  "additionalProperties", "enum",     "const",
        "items",     "prefixItems", "minItems", "maxItems",             "minLength", "maxLength",
        "pattern",   "format",     "anyOf",     "oneOf",                "allOf",     "$ref",
        "minimum",   "maximum",    "exclusiveMinimum", "exclusiveMaximum"};
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
        if (!strcmp(k, a[i]))
            return true;
    return is_annotation(k);
}

static int new_rule(struct conv *c)
{
    return c->n_rules++;
}

/* Starts rule n's definition. */
static int open_rule(struct conv *c, int n)
{
    return check_mem(c, sbuf_addf(&c->out, "r%d ::= ", n));
}

static int close_rule(struct conv *c, struct sbuf *body)
{
    int rc = sbuf_add(&c->out, body->data ? body->data : "\"\"", body->len ? body->len : 2);
    sbuf_free(body);
    return check_mem(c, rc ? rc : sbuf_add(&c->out, "\n", 1));
}

static int get_count(struct conv *c, const json_t *s, const char *k, int64_t def, int64_t *out)
{
    const json_t *v = json_object_get(s, k);
    *out = def;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return cfail(c, "'%s' must be a non-negative integer", k);
    if (json_integer_value(v) > GRAMMAR_MAX_REPEAT)
        return cfail(c, "'%s' above %d is not supported", k, GRAMMAR_MAX_REPEAT);
    *out = json_integer_value(v);
    return 0;
}

/* A sub-schema's rule, with the path extended for messages. */
static int visit_at(struct conv *c, const json_t *s, const char *step, int *rule)
{
    size_t l = strlen(c->path);
    snprintf(c->path + l, sizeof c->path - l, "%s", step);
    int rc = visit(c, s, rule);
    if (!rc)
        c->path[l] = 0;
    return rc;
}

static int string_body(struct conv *c, const json_t *s, struct sbuf *b)
{
    const json_t *pat = json_object_get(s, "pattern"), *fmt = json_object_get(s, "format");
    int64_t mn, mx;
    if (get_count(c, s, "minLength", 0, &mn) || get_count(c, s, "maxLength", -1, &mx))
        return c->rc;
    const bool lengths = json_object_get(s, "minLength") || json_object_get(s, "maxLength");
    if ((pat || fmt) && lengths)
        return cfail(c, "minLength/maxLength together with '%s' is not supported", pat ? "pattern" : "format");
    if (pat && fmt)
        return cfail(c, "'pattern' together with 'format' is not supported");
    int rc = sbuf_add(b, "\"\\\"\" ", 5);
    if (pat) {
        if (!json_is_string(pat))
            return cfail(c, "'pattern' must be a string");
        if (put_pattern(c, b, json_string_value(pat), json_string_length(pat)))
            return c->rc;
    } else if (fmt) {
        static const struct {
            const char *name, *g;
        } fmts[] = {
            {"date", "[0-9]{4} \"-\" (\"0\" [1-9] | \"1\" [0-2]) \"-\" (\"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8])"},
            {"time", "([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] (\".\" [0-9]{1,6})? \"Z\""},
            {"date-time", "[0-9]{4} \"-\" (\"0\" [1-9] | \"1\" [0-2]) \"-\" (\"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8]) "
                          "\"T\" ([01] [0-9] | \"2\" [0-3]) \":\" [0-5] [0-9] \":\" [0-5] [0-9] (\".\" [0-9]{1,6})? \"Z\""},
            {"uuid", "[0-9a-f]{8} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{12}"},
            {"email", "[a-zA-Z0-9_+-]{1,24} (\".\" [a-zA-Z0-9_+-]{1,24}){0,2} \"@\" [a-z0-9]{1,20} "
                      "(\"-\" [a-z0-9]{1,20})? (\".\" [a-z0-9]{1,20}){0,2} \".\" [a-z]{2,6}"},
            {"ipv4", "(\"25\" [0-5] | \"2\" [0-4] [0-9] | \"1\" [0-9] [0-9] | [1-9]? [0-9]) (\".\" (\"25\" [0-5] | "
                     "\"2\" [0-4] [0-9] | \"1\" [0-9] [0-9] | [1-9]? [0-9])){3}"},
        };
        if (!json_is_string(fmt))
            return cfail(c, "'format' must be a string");
        size_t i = 0;
        while (i < sizeof fmts / sizeof fmts[0] && strcmp(fmts[i].name, json_string_value(fmt)) != 0)
            i++;
        if (i == sizeof fmts / sizeof fmts[0])
            return cfail(c, "format '%.100s' is not supported (date, time, date-time, uuid, email, ipv4)",
                         json_string_value(fmt));
        rc |= sbuf_addf(b, "(%s)", fmts[i].g);
    } else if (mx >= 0) {
        if (mx < mn)
            return cfail(c, "'maxLength' is below 'minLength'");
        rc |= sbuf_addf(b, "char{%" PRId64 ",%" PRId64 "}", mn, mx);
    } else {
        rc |= sbuf_addf(b, "char{%" PRId64 ",}", mn);
    }
    rc |= sbuf_add(b, " \"\\\"\"", 5);
    return check_mem(c, rc);
}

static int bound(struct conv *c, const json_t *s, const char *k, bool *has, double *v)
{
    const json_t *x = json_object_get(s, k);
    *has = false;
    if (!x)
        return 0;
    if (!json_is_number(x))
        return cfail(c, "'%s' must be a number", k);
    *has = true;
    *v = json_number_value(x);
    return 0;
}

static int number_body(struct conv *c, const json_t *s, bool integer, struct sbuf *b)
{
    bool hmin, hmax, hxmin, hxmax;
    double mn = 0, mx = 0, xmn = 0, xmx = 0;
    if (bound(c, s, "minimum", &hmin, &mn) || bound(c, s, "maximum", &hmax, &mx) ||
        bound(c, s, "exclusiveMinimum", &hxmin, &xmn) || bound(c, s, "exclusiveMaximum", &hxmax, &xmx))
        return c->rc;
    if (!integer) {
        if (hmax || hxmin || hxmax || (hmin && mn != 0))
            return cfail(c, "bounds on a number are supported only as \"minimum\": 0 (use an integer for others)");
        return check_mem(c, hmin ? sbuf_addf(b, "(\"0\" | [1-9] [0-9]{0,15}) (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?")
                                 : sbuf_addf(b, "number"));
    }
    if (!hmin && !hmax && !hxmin && !hxmax)
        return check_mem(c, sbuf_addf(b, "integer"));
    /* integer bounds */
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    if (hmin)
        lo = (int64_t)ceil(mn);
    if (hxmin && (int64_t)floor(xmn) + 1 > lo)
        lo = (int64_t)floor(xmn) + 1;
    if (hmax)
        hi = (int64_t)floor(mx);
    if (hxmax && (int64_t)ceil(xmx) - 1 < hi)
        hi = (int64_t)ceil(xmx) - 1;
    if ((lo != INT64_MIN && (lo > MAX_INT_BOUND || lo < -MAX_INT_BOUND)) ||
        (hi != INT64_MAX && (hi > MAX_INT_BOUND || hi < -MAX_INT_BOUND)))
        return cfail(c, "integer bounds beyond 1e15 are not supported");
    if (lo > hi)
        return cfail(c, "the bounds leave no integer");
    int rc = sbuf_add(b, "(", 1);
    bool any = false;
    if (lo < 0) { /* "-" and the magnitudes in [max(1, -hi), -lo] */
        int64_t mlo = hi < 0 ? -hi : 1, mhi = lo == INT64_MIN ? -1 : -lo;
        rc |= sbuf_add(b, "\"-\" ", 4);
        rc |= put_nonneg_range(b, mlo, mhi);
        any = true;
    }
    if (hi >= 0) {
        if (any)
            rc |= sbuf_add(b, " | ", 3);
        rc |= put_nonneg_range(b, lo < 0 ? 0 : lo, hi == INT64_MAX ? -1 : hi);
    }
    return check_mem(c, rc | sbuf_add(b, ")", 1));
}

static int array_body(struct conv *c, const json_t *s, struct sbuf *b)
{
    const json_t *items = json_object_get(s, "items"), *pre = json_object_get(s, "prefixItems");
    int64_t mn, mx;
    if (get_count(c, s, "minItems", 0, &mn) || get_count(c, s, "maxItems", -1, &mx))
        return c->rc;
    if (pre && !json_is_array(pre))
        return cfail(c, "'prefixItems' must be an array of schemas");
    const int64_t k = pre ? (int64_t)json_array_size(pre) : 0;
    if (k > 1000)
        return cfail(c, "more than 1000 'prefixItems'");
    int item_rule = -1;
    if (json_is_false(items)) {
        if (mx < 0 || mx > k)
            mx = k;
    } else if (items) {
        if (visit_at(c, items, "/items", &item_rule))
            return c->rc;
    }
    if (mx >= 0 && mx < mn)
        return cfail(c, "'maxItems' is below 'minItems' (or items: false leaves too few)");
    int *pr = k ? calloc((size_t)k, sizeof *pr) : NULL;
    if (k && !pr)
        return check_mem(c, PB_ENOMEM);
    for (int64_t i = 0; i < k; i++) {
        char step[32];
        snprintf(step, sizeof step, "/prefixItems/%" PRId64, i);
        if (visit_at(c, json_array_get(pre, (size_t)i), step, &pr[i])) {
            free(pr);
            return c->rc;
        }
    }
    /* element i: prefix rule, then items (or any value) */
#define ELEM(i) ((i) < k ? sbuf_addf(b, "r%d ws", pr[i]) : item_rule >= 0 ? sbuf_addf(b, "r%d ws", item_rule) : sbuf_addf(b, "value ws"))
    int rc = sbuf_add(b, "\"[\" ws ", 7);
    if (mx != 0) {
        if (mn == 0)
            rc |= sbuf_add(b, "(", 1);
        rc |= ELEM(0);
        int64_t i = 1, open = 0;
        for (; i < k && (mx < 0 || i < mx); i++) {
            if (i >= mn) {
                rc |= sbuf_add(b, " (", 2);
                open++;
            }
            rc |= sbuf_add(b, " \",\" ws ", 8);
            rc |= ELEM(i);
        }
        if (mx < 0 || i < mx) { /* the items beyond the prefix */
            const int64_t need = mn > i ? mn - i : 0;
            for (int64_t r = 0; r < need; r++) {
                rc |= sbuf_add(b, " \",\" ws ", 8);
                rc |= ELEM(i);
            }
            if (mx < 0) {
                rc |= sbuf_add(b, " (\",\" ws ", 9);
                rc |= ELEM(i);
                rc |= sbuf_add(b, ")*", 2);
            } else if (mx - i - need > 0) {
                rc |= sbuf_add(b, " (\",\" ws ", 9);
                rc |= ELEM(i);
                rc |= sbuf_addf(b, "){0,%" PRId64 "}", mx - i - need);
            }
        }
        for (int64_t o = 0; o < open; o++)
            rc |= sbuf_add(b, ")?", 2);
        if (mn == 0)
            rc |= sbuf_add(b, ")?", 2);
    }
#undef ELEM
    free(pr);
    return check_mem(c, rc | sbuf_add(b, " \"]\"", 4));
}

/* One property: its rule and whether it is required. */
struct prop {
    const char *name;
    int rule;
    bool req;
};

static int object_body(struct conv *c, const json_t *props, const json_t *required, const json_t *addl,
                       struct sbuf *b)
{
    if (props && !json_is_object(props))
        return cfail(c, "'properties' must be an object");
    if (required && !json_is_array(required))
        return cfail(c, "'required' must be an array of names");
    const size_t n = props ? json_object_size(props) : 0;
    struct prop *p = calloc(n + 1, sizeof *p);
    if (!p)
        return check_mem(c, PB_ENOMEM);
    size_t i = 0;
    const char *key;
    json_t *v;
    int rc = 0;
    if (props)
        json_object_foreach((json_t *)props, key, v) {
            char step[160];
            snprintf(step, sizeof step, "/properties/%.140s", key);
            p[i].name = key;
            if ((rc = visit_at(c, v, step, &p[i].rule)))
                break;
            for (size_t r = 0; r < json_array_size(required); r++)
                if (json_is_string(json_array_get(required, r)) &&
                    !strcmp(json_string_value(json_array_get(required, r)), key))
                    p[i].req = true;
            i++;
        }
    for (size_t r = 0; !rc && r < json_array_size(required); r++) {
        const json_t *nm = json_array_get(required, r);
        bool found = false;
        for (size_t k = 0; k < n && json_is_string(nm); k++)
            found |= !strcmp(p[k].name, json_string_value(nm));
        if (!json_is_string(nm))
            rc = cfail(c, "'required' must be an array of names");
        else if (!found && !(addl && !json_is_false(addl)))
            rc = cfail(c, "'%.100s' is required but not among the properties", json_string_value(nm));
        else if (!found)
            rc = cfail(c, "a required property ('%.100s') that only additionalProperties would allow is not supported",
                       json_string_value(nm));
    }
    int add_rule = -1; /* -1: none; -2: any value */
    if (!rc && addl && !json_is_false(addl)) {
        if (json_is_true(addl))
            add_rule = -2;
        else
            rc = visit_at(c, addl, "/additionalProperties", &add_rule);
    }
    if (rc) {
        free(p);
        return c->rc;
    }
    /* a_i: none written yet, from property i; b_i: some written. The
     * rules are numbered now and written after this one. */
    int base = c->n_rules;
    c->n_rules += 2 * (int)n + 2;
    struct sbuf rules = {0};
    char kv_add[64] = "";
    if (add_rule == -2)
        snprintf(kv_add, sizeof kv_add, "key ws \":\" ws value ws");
    else if (add_rule >= 0)
        snprintf(kv_add, sizeof kv_add, "key ws \":\" ws r%d ws", add_rule);
    for (size_t k = 0; k <= n && !rc; k++) {
        const int a = base + 2 * (int)k, bb = a + 1;
        if (k == n) {
            if (add_rule != -1) {
                rc |= sbuf_addf(&rules, "r%d ::= (%s (\",\" ws %s)*)?\n", a, kv_add, kv_add);
                rc |= sbuf_addf(&rules, "r%d ::= (\",\" ws %s)*\n", bb, kv_add);
            } else {
                rc |= sbuf_addf(&rules, "r%d ::= \"\"\nr%d ::= \"\"\n", a, bb);
            }
            break;
        }
        struct sbuf kv = {0};
        /* the key as JSON text inside the literal */
        json_t *ks = json_string(p[k].name);
        char *kj = ks ? json_dumps(ks, JSON_ENCODE_ANY) : NULL;
        json_decref(ks);
        if (!kj) {
            sbuf_free(&kv);
            sbuf_free(&rules);
            free(p);
            return check_mem(c, PB_ENOMEM);
        }
        rc |= put_literal(&kv, kj, strlen(kj));
        free(kj);
        rc |= sbuf_addf(&kv, " ws \":\" ws r%d ws", p[k].rule);
        if (p[k].req) {
            rc |= sbuf_addf(&rules, "r%d ::= %s r%d\n", a, kv.data, bb + 2);
            rc |= sbuf_addf(&rules, "r%d ::= \",\" ws %s r%d\n", bb, kv.data, bb + 2);
        } else {
            rc |= sbuf_addf(&rules, "r%d ::= %s r%d | r%d\n", a, kv.data, bb + 2, a + 2);
            rc |= sbuf_addf(&rules, "r%d ::= \",\" ws %s r%d | r%d\n", bb, kv.data, bb + 2, bb + 2);
        }
        sbuf_free(&kv);
    }
    free(p);
    rc |= sbuf_addf(b, "\"{\" ws r%d \"}\"", base);
    rc |= sbuf_add(&c->out, rules.data ? rules.data : "", rules.len);
    sbuf_free(&rules);
    return check_mem(c, rc);
}

/* The schema a $ref points at (JSON pointer into the root). */
static const json_t *resolve(struct conv *c, const char *ref)
{
    if (ref[0] != '#')
        return cfail(c, "only local references ('#/...') are supported, not '%.100s'", ref), NULL;
    const json_t *at = c->root;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        char tok[256];
        size_t n = 0;
        while (*p && *p != '/' && n < sizeof tok - 1) {
            if (p[0] == '~' && p[1] == '1') {
                tok[n++] = '/';
                p += 2;
            } else if (p[0] == '~' && p[1] == '0') {
                tok[n++] = '~';
                p += 2;
            } else {
                tok[n++] = *p++;
            }
        }
        tok[n] = 0;
        if (json_is_object(at))
            at = json_object_get(at, tok);
        else if (json_is_array(at)) {
            char *e;
            long i = strtol(tok, &e, 10);
            at = *e || i < 0 ? NULL : json_array_get(at, (size_t)i);
        } else {
            at = NULL;
        }
        if (!at)
            return cfail(c, "the reference '%.100s' points at nothing", ref), NULL;
    }
    if (*p)
        return cfail(c, "the reference '%.100s' is not a JSON pointer", ref), NULL;
    return at;
}

/* allOf of object schemas: their properties and required lists merged. */
static int merge_all_of(struct conv *c, const json_t *s, const json_t *all, json_t **props, json_t **req,
                        json_t **addl)
{
    *props = json_object();
    *req = json_array();
    *addl = NULL;
    const json_t *parts[64];
    size_t np = 0;
    parts[np++] = s;
    for (size_t i = 0; i < json_array_size(all) && np < 64; i++) {
        const json_t *x = json_array_get(all, i);
        for (int hop = 0; hop < 16 && json_is_object(x) && json_object_get(x, "$ref"); hop++) {
            const json_t *r = json_object_get(x, "$ref");
            if (!json_is_string(r))
                return cfail(c, "'$ref' must be a string");
            if (!(x = resolve(c, json_string_value(r))))
                return c->rc;
        }
        if (!json_is_object(x))
            return cfail(c, "allOf is supported for object schemas only");
        parts[np++] = x;
    }
    if (json_array_size(all) >= 63)
        return cfail(c, "allOf with more than 62 schemas");
    for (size_t i = 0; i < np; i++) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)parts[i], k, v) {
            if (!strcmp(k, "properties") && json_is_object(v))
                json_object_update(*props, v);
            else if (!strcmp(k, "required") && json_is_array(v))
                json_array_extend(*req, v);
            else if (!strcmp(k, "additionalProperties"))
                *addl = v;
            else if (!strcmp(k, "type") && !(json_is_string(v) && !strcmp(json_string_value(v), "object")))
                return cfail(c, "allOf is supported for object schemas only");
            else if (i > 0 && strcmp(k, "properties") && strcmp(k, "required") && strcmp(k, "type") &&
                     strcmp(k, "additionalProperties") && !is_annotation(k))
                return cfail(c, "'%.100s' inside allOf is not supported (only objects' properties, required, "
                                "additionalProperties)", k);
        }
    }
    return 0;
}

/* The body of a schema of one type into b. */
static int typed_body(struct conv *c, const json_t *s, const char *type, struct sbuf *b)
{
    if (!strcmp(type, "string"))
        return string_body(c, s, b);
    if (!strcmp(type, "number") || !strcmp(type, "integer"))
        return number_body(c, s, !strcmp(type, "integer"), b);
    if (!strcmp(type, "boolean"))
        return check_mem(c, sbuf_addf(b, "boolean"));
    if (!strcmp(type, "null"))
        return check_mem(c, sbuf_addf(b, "null"));
    if (!strcmp(type, "array"))
        return array_body(c, s, b);
    if (!strcmp(type, "object")) {
        const json_t *all = json_object_get(s, "allOf");
        if (all) {
            json_t *props, *req, *addl;
            int rc = merge_all_of(c, s, all, &props, &req, &addl);
            if (!rc)
                rc = object_body(c, props, req, addl, b);
            json_decref(props);
            json_decref(req);
            return rc;
        }
        return object_body(c, json_object_get(s, "properties"), json_object_get(s, "required"),
                           json_object_get(s, "additionalProperties"), b);
    }
    return cfail(c, "unknown type '%.60s' (object, array, string, number, integer, boolean, null)", type);
}

/* The type a schema without "type" has by its keywords (NULL: any). */
static const char *implied_type(const json_t *s)
{
    if (json_object_get(s, "properties") || json_object_get(s, "required") ||
        json_object_get(s, "additionalProperties") || json_object_get(s, "allOf"))
        return "object";
    if (json_object_get(s, "items") || json_object_get(s, "prefixItems") || json_object_get(s, "minItems") ||
        json_object_get(s, "maxItems"))
        return "array";
    if (json_object_get(s, "minLength") || json_object_get(s, "maxLength") || json_object_get(s, "pattern") ||
        json_object_get(s, "format"))
        return "string";
    if (json_object_get(s, "minimum") || json_object_get(s, "maximum") || json_object_get(s, "exclusiveMinimum") ||
        json_object_get(s, "exclusiveMaximum"))
        return "number";
    return NULL;
}

static int visit(struct conv *c, const json_t *s, int *rule)
{
    if (c->rc)
        return c->rc;
    if (json_is_true(s)) {
        *rule = new_rule(c);
        return check_mem(c, sbuf_addf(&c->out, "r%d ::= value\n", *rule));
    }
    if (json_is_false(s))
        return cfail(c, "the schema false accepts nothing");
    if (!json_is_object(s))
        return cfail(c, "a schema must be an object or a boolean");
    if (++c->depth > MAX_SCHEMA_DEPTH)
        return cfail(c, "schemas nested more than %d deep", MAX_SCHEMA_DEPTH);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        if (!is_known(k))
            return cfail(c, "the JSON Schema keyword '%.100s' is not supported", k);
    }
    const json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        if (!json_is_string(ref))
            return cfail(c, "'$ref' must be a string");
        const char *r = json_string_value(ref);
        for (int i = 0; i < c->n_refs; i++)
            if (!strcmp(c->refs[i].ptr, r)) {
                *rule = c->refs[i].rule;
                c->depth--;
                return 0;
            }
        if (c->n_refs == MAX_REFS)
            return cfail(c, "more than %d references", MAX_REFS);
        const json_t *target = resolve(c, r);
        if (!target)
            return c->rc;
        struct ref *e = &c->refs[c->n_refs];
        if (!(e->ptr = strdup(r)))
            return check_mem(c, PB_ENOMEM);
        e->rule = new_rule(c);
        c->n_refs++;
        *rule = e->rule;
        /* the target's own rule, named by the reference (recursion finds it) */
        int inner;
        char step[160];
        snprintf(step, sizeof step, " -> %.140s", r);
        if (visit_at(c, target, step, &inner))
            return c->rc;
        c->depth--;
        return check_mem(c, sbuf_addf(&c->out, "r%d ::= r%d\n", *rule, inner));
    }
    *rule = new_rule(c);
    struct sbuf b = {0};
    const json_t *cst = json_object_get(s, "const"), *en = json_object_get(s, "enum"),
                 *any = json_object_get(s, "anyOf"), *one = json_object_get(s, "oneOf"),
                 *type = json_object_get(s, "type");
    int rc = 0;
    if (cst) {
        rc = put_json_literal(c, &b, cst);
    } else if (en) {
        if (!json_is_array(en) || json_array_size(en) == 0)
            return cfail(c, "'enum' must be a non-empty array");
        for (size_t i = 0; i < json_array_size(en) && !rc; i++) {
            if (i)
                rc = check_mem(c, sbuf_add(&b, " | ", 3));
            if (!rc)
                rc = put_json_literal(c, &b, json_array_get(en, i));
        }
    } else if (any || one) {
        const json_t *alts = any ? any : one;
        if (any && one)
            return cfail(c, "anyOf and oneOf together are not supported");
        if (!json_is_array(alts) || json_array_size(alts) == 0)
            return cfail(c, "'%s' must be a non-empty array of schemas", any ? "anyOf" : "oneOf");
        for (size_t i = 0; i < json_array_size(alts) && !rc; i++) {
            char step[48];
            int r;
            snprintf(step, sizeof step, "/%s/%zu", any ? "anyOf" : "oneOf", i);
            if (!(rc = visit_at(c, json_array_get(alts, i), step, &r)))
                rc = check_mem(c, sbuf_addf(&b, "%sr%d", i ? " | " : "", r));
        }
    } else if (json_is_array(type)) {
        if (json_array_size(type) == 0)
            return cfail(c, "'type' must not be an empty list");
        for (size_t i = 0; i < json_array_size(type) && !rc; i++) {
            const json_t *t = json_array_get(type, i);
            if (!json_is_string(t))
                return cfail(c, "'type' must be a string or a list of strings");
            if (i)
                rc = check_mem(c, sbuf_add(&b, " | ", 3));
            if (!rc) {
                rc = check_mem(c, sbuf_add(&b, "(", 1));
                if (!rc)
                    rc = typed_body(c, s, json_string_value(t), &b);
                if (!rc)
                    rc = check_mem(c, sbuf_add(&b, ")", 1));
            }
        }
    } else if (type) {
        if (!json_is_string(type))
            return cfail(c, "'type' must be a string or a list of strings");
        rc = typed_body(c, s, json_string_value(type), &b);
    } else {
        const char *t = implied_type(s);
        rc = t ? typed_body(c, s, t, &b) : check_mem(c, sbuf_addf(&b, "value"));
    }
    if (rc) {
        sbuf_free(&b);
        return c->rc;
    }
    c->depth--;
    if (open_rule(c, *rule))
        return sbuf_free(&b), c->rc;
    return close_rule(c, &b);
}

/* The rules of a schema alone, without the shared JSON rules, into *out:
 * the top rule is "root". */
static int schema_rules(const json_t *schema, char **out, size_t *len, pb_err *err);

int sampler_schema_grammar(const json_t *schema, char **gbnf, pb_err *err)
{
    size_t len;
    char *rules;
    int rc = schema_rules(schema, &rules, &len, err);
    if (rc)
        return rc;
    struct sbuf b = {0};
    if (sbuf_add(&b, rules, len) || sbuf_add(&b, json_rules, sizeof json_rules - 1)) {
        free(rules);
        sbuf_free(&b);
        return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    free(rules);
    /* compiled once here, so that what a schema makes is known good */
    struct grammar *g;
    rc = grammar_parse(b.data, b.len, &g, err);
    grammar_free(g);
    if (rc) {
        sbuf_free(&b);
        return pb_wrap(err, rc, "the schema's grammar");
    }
    *gbnf = b.data;
    return PB_OK;
}

static int schema_rules(const json_t *schema, char **out, size_t *len, pb_err *err)
{
    char **gbnf = out;
    *gbnf = NULL;
    struct conv *c = calloc(1, sizeof *c);
    if (!c)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    c->root = schema;
    c->err = err;
    int top = 0;
    int rc = visit(c, schema, &top);
    if (!rc)
        rc = check_mem(c, sbuf_addf(&c->out, "root ::= ws r%d\n", top));
    for (int i = 0; i < c->n_refs; i++)
        free(c->refs[i].ptr);
    if (rc) {
        sbuf_free(&c->out);
    } else {
        *gbnf = c->out.data;
        *len = c->out.len;
    }
    free(c);
    return rc;
}

/* Appends text (the rules schema_rules writes) with every rule name
 * (rN, root) prefixed, quoted literals and classes left as they are. */
static int add_renamed(struct sbuf *b, const char *text, size_t n, const char *prefix)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        const char ch = text[i];
        if (ch == '"' || ch == '[') { /* a literal or a class, escapes inside */
            const char end = ch == '"' ? '"' : ']';
            size_t j = i + 1;
            while (j < n && text[j] != end)
                j += text[j] == '\\' ? 2 : 1;
            j = j < n ? j + 1 : n;
            rc = sbuf_add(b, text + i, j - i);
            i = j;
            continue;
        }
        const bool start = i == 0 || !((text[i - 1] >= 'a' && text[i - 1] <= 'z') ||
                                       (text[i - 1] >= '0' && text[i - 1] <= '9') || text[i - 1] == '-');
        if (start && ch == 'r') {
            size_t j = i + 1;
            while (j < n && text[j] >= '0' && text[j] <= '9')
                j++;
            const bool rn = j > i + 1, root = n - i >= 4 && !memcmp(text + i, "root", 4);
            if (rn || root) {
                const size_t e = rn ? j : i + 4;
                rc = sbuf_addf(b, "%s", prefix);
                if (!rc)
                    rc = sbuf_add(b, text + i, e - i);
                i = e;
                continue;
            }
        }
        rc = sbuf_add(b, text + i, 1);
        i++;
    }
    return rc;
}

int sampler_tools_grammar(const json_t *tools, const char *only, const struct sampler_call_format *f, bool several,
                          char **gbnf, pb_err *err)
{
    *gbnf = NULL;
    struct sbuf b = {0}, calls = {0};
    int rc = 0, n = 0;
    for (size_t i = 0; i < json_array_size(tools) && !rc; i++) {
        const json_t *t = json_array_get(tools, i);
        const char *name = json_string_value(json_object_get(t, "name"));
        const json_t *params = json_object_get(t, "parameters");
        if (!name)
            return sbuf_free(&b), sbuf_free(&calls), pb_fail(err, PB_EINVAL, "tools[%zu] has no name", i);
        if (only && strcmp(only, name) != 0)
            continue;
        char prefix[32];
        snprintf(prefix, sizeof prefix, "f%zu", i);
        if (params && !json_is_null(params)) {
            char *rules;
            size_t len;
            if ((rc = schema_rules(params, &rules, &len, err))) {
                pb_wrap(err, rc, "function '%.64s' parameters", name);
                break;
            }
            rc = add_renamed(&b, rules, len, prefix);
            free(rules);
        } else {
            rc = sbuf_addf(&b, "%sroot ::= ws \"{\" ws \"}\" ws\n", prefix);
        }
        rc |= sbuf_addf(&b, "%scall ::= ", prefix);
        rc |= put_literal(&b, f->call_open, strlen(f->call_open));
        rc |= put_literal(&b, name, strlen(name));
        rc |= put_literal(&b, f->call_mid, strlen(f->call_mid));
        rc |= sbuf_addf(&b, " %sroot ", prefix);
        rc |= put_literal(&b, f->call_close, strlen(f->call_close));
        rc |= sbuf_addf(&b, "\n");
        rc |= sbuf_addf(&calls, "%s%scall", n ? " | " : "", prefix);
        n++;
    }
    if (!rc && n == 0)
        rc = pb_fail(err, PB_EINVAL, only ? "no tool named '%.64s'" : "no tools", only ? only : "");
    if (!rc) {
        rc |= sbuf_addf(&b, "call ::= %s\nroot ::= ", calls.data);
        rc |= put_literal(&b, f->open, strlen(f->open));
        rc |= sbuf_addf(&b, " call ");
        if (several) {
            rc |= sbuf_addf(&b, "(");
            rc |= put_literal(&b, f->sep, strlen(f->sep));
            rc |= sbuf_addf(&b, " call)* ");
        }
        rc |= put_literal(&b, f->close, strlen(f->close));
        rc |= sbuf_addf(&b, "\n%s", json_rules);
        if (rc)
            rc = pb_fail(err, PB_ENOMEM, "out of memory");
    }
    sbuf_free(&calls);
    if (!rc) {
        struct grammar *g;
        if ((rc = grammar_parse(b.data, b.len, &g, err)) == PB_OK)
            grammar_free(g);
    }
    if (rc) {
        sbuf_free(&b);
        return rc;
    }
    *gbnf = b.data;
    return PB_OK;
}
