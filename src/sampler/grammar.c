/* GBNF grammars, their matcher and token masks (grammar.h). */
#include "sampler/grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the compiled form ----
 * Every alternative of every rule is a run of symbols in syms[] ending
 * with SYM_END; a position is an index into syms[]. */

enum { SYM_END, SYM_RULE, SYM_CLASS };

struct gsym {
    uint32_t kind; /* SYM_* */
    uint32_t arg;  /* rule or class index */
};

struct gclass {
    uint32_t first, n; /* ranges[first .. first + n): sorted, merged [lo, hi] pairs */
    bool neg;
};

struct grule {
    uint32_t first_alt, n_alts; /* alts[first_alt ..]: start positions */
};

struct grammar {
    struct gsym *syms;
    uint32_t n_syms;
    uint32_t *alts;
    struct grule *rules;
    uint32_t n_rules;
    uint32_t (*ranges)[2];
    struct gclass *classes;
    uint32_t n_classes;
    uint32_t root;
};

uint32_t grammar_n_rules(const struct grammar *g)
{
    return g->n_rules;
}

void grammar_free(struct grammar *g)
{
    if (!g)
        return;
    free(g->syms);
    free(g->alts);
    free(g->rules);
    free(g->ranges);
    free(g->classes);
    free(g);
}

static bool class_has(const struct grammar *g, uint32_t c, uint32_t cp)
{
    const struct gclass *k = &g->classes[c];
    bool in = false;
    for (uint32_t i = 0; i < k->n && !in; i++)
        in = cp >= g->ranges[k->first + i][0] && cp <= g->ranges[k->first + i][1];
    return in != k->neg;
}

/* Whether class c accepts some code point in [lo, hi]. */
static bool class_meets(const struct grammar *g, uint32_t c, uint32_t lo, uint32_t hi)
{
    const struct gclass *k = &g->classes[c];
    for (uint32_t i = 0; i < k->n; i++) {
        const uint32_t a = g->ranges[k->first + i][0], b = g->ranges[k->first + i][1];
        if (!k->neg && a <= hi && b >= lo)
            return true;
        if (k->neg && a <= lo && b >= hi)
            return false; /* the whole span is excluded (ranges are merged) */
    }
    return k->neg;
}

/* ---- building (while parsing) ---- */

struct balt { /* an alternative being built */
    struct gsym *s;
    size_t n, cap;
};

struct brule {
    char *name;
    bool defined;
    struct balt *alts;
    size_t n_alts, cap_alts;
};

struct builder {
    const char *text;
    size_t len, at;
    struct brule *rules;
    size_t n_rules, cap_rules;
    uint32_t *by_name;   /* open addressing: rule index + 1 by its name's hash (0: empty) */
    size_t cap_by_name;  /* a power of two, at least twice n_rules */
    uint32_t (*ranges)[2];
    size_t n_ranges, cap_ranges;
    struct gclass *classes;
    size_t n_classes, cap_classes;
    size_t n_syms; /* in all, for the bound */
    int depth;     /* nested groups */
    pb_err *err;
    int rc;
};

#define MAX_GROUP_DEPTH 64

static int where(const struct builder *b, size_t at, int *col)
{
    int line = 1;
    size_t ls = 0;
    for (size_t i = 0; i < at && i < b->len; i++)
        if (b->text[i] == '\n') {
            line++;
            ls = i + 1;
        }
    *col = (int)(at - ls) + 1;
    return line;
}

static int fail_at(struct builder *b, size_t at, const char *what)
{
    if (b->rc)
        return b->rc;
    int col, line = where(b, at, &col);
    b->rc = pb_fail(b->err, PB_EINVAL, "grammar: line %d, column %d: %s", line, col, what);
    return b->rc;
}

static int oom(struct builder *b)
{
    if (!b->rc)
        b->rc = pb_fail(b->err, PB_ENOMEM, "grammar: out of memory");
    return b->rc;
}

static int grow(struct builder *b, void **p, size_t *cap, size_t need, size_t elem)
{
    size_t c = *cap ? *cap : 8;
    while (c < need)
        c *= 2;
    if (c == *cap)
        return 0;
    void *q = realloc(*p, c * elem);
    if (!q)
        return oom(b);
    *p = q;
    *cap = c;
    return 0;
}

static int alt_push(struct builder *b, struct balt *a, uint32_t kind, uint32_t arg)
{
    if (++b->n_syms > GRAMMAR_MAX_SYMS) {
        if (!b->rc)
            b->rc = pb_fail(b->err, PB_EINVAL, "grammar: more than %u symbols once repetitions are expanded",
                            GRAMMAR_MAX_SYMS);
        return b->rc;
    }
    if (a->n == a->cap && grow(b, (void **)&a->s, &a->cap, a->n + 1, sizeof *a->s))
        return b->rc;
    a->s[a->n++] = (struct gsym){kind, arg};
    return 0;
}

static uint64_t name_hash(const char *name, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)name[i]) * 0x100000001b3ull;
    return h;
}

/* The slot of name in b->by_name: where its rule is, or the empty one
 * where it goes. */
static size_t name_slot(const struct builder *b, const char *name, size_t n)
{
    size_t i = (size_t)name_hash(name, n) & (b->cap_by_name - 1);
    for (;; i = (i + 1) & (b->cap_by_name - 1)) {
        const uint32_t r = b->by_name[i];
        if (!r || (strlen(b->rules[r - 1].name) == n && !memcmp(b->rules[r - 1].name, name, n)))
            return i;
    }
}

/* A rule by name (created when new); -1 when out of memory. Names are
 * looked up in a hash table: repetitions create a rule per count, and a
 * scan of them all per lookup made x{0,100000} take minutes. */
static long rule_id(struct builder *b, const char *name, size_t n)
{
    if (b->cap_by_name) {
        const uint32_t r = b->by_name[name_slot(b, name, n)];
        if (r)
            return (long)r - 1;
    }
    if ((b->n_rules + 1) * 2 > b->cap_by_name) { /* rehash into twice the room */
        const size_t c = b->cap_by_name ? b->cap_by_name * 2 : 64;
        uint32_t *t = calloc(c, sizeof *t);
        if (!t) {
            oom(b);
            return -1;
        }
        free(b->by_name);
        b->by_name = t;
        b->cap_by_name = c;
        for (size_t i = 0; i < b->n_rules; i++)
            b->by_name[name_slot(b, b->rules[i].name, strlen(b->rules[i].name))] = (uint32_t)i + 1;
    }
    if (grow(b, (void **)&b->rules, &b->cap_rules, b->n_rules + 1, sizeof *b->rules))
        return -1;
    struct brule *r = &b->rules[b->n_rules];
    memset(r, 0, sizeof *r);
    if (!(r->name = malloc(n + 1))) {
        oom(b);
        return -1;
    }
    memcpy(r->name, name, n);
    r->name[n] = 0;
    b->by_name[name_slot(b, name, n)] = (uint32_t)b->n_rules + 1;
    return (long)b->n_rules++;
}

/* A new rule named after parent ("parent-N"). */
static long rule_new(struct builder *b, uint32_t parent)
{
    char name[160];
    snprintf(name, sizeof name, "%.100s-%zu", b->rules[parent].name, b->n_rules);
    long r = rule_id(b, name, strlen(name));
    if (r >= 0)
        b->rules[r].defined = true;
    return r;
}

static struct balt *rule_add_alt(struct builder *b, uint32_t r)
{
    struct brule *ru = &b->rules[r];
    if (grow(b, (void **)&ru->alts, &ru->cap_alts, ru->n_alts + 1, sizeof *ru->alts))
        return NULL;
    struct balt *a = &ru->alts[ru->n_alts++];
    memset(a, 0, sizeof *a);
    return a;
}

static int cmp_range(const void *x, const void *y)
{
    const uint32_t *a = x, *c = y;
    return a[0] < c[0] ? -1 : a[0] > c[0];
}

/* Adds a class of n ranges (sorted and merged here); its index. */
static long class_add(struct builder *b, uint32_t (*r)[2], size_t n, bool neg)
{
    if (n)
        qsort(r, n, sizeof *r, cmp_range);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && r[i][0] <= r[m - 1][1] + 1) {
            if (r[i][1] > r[m - 1][1])
                r[m - 1][1] = r[i][1];
        } else {
            r[m][0] = r[i][0];
            r[m][1] = r[i][1];
            m++;
        }
    }
    /* a single character reuses its class */
    if (m == 1 && !neg && r[0][0] == r[0][1])
        for (size_t i = 0; i < b->n_classes; i++)
            if (!b->classes[i].neg && b->classes[i].n == 1 && b->ranges[b->classes[i].first][0] == r[0][0] &&
                b->ranges[b->classes[i].first][1] == r[0][0])
                return (long)i;
    if (grow(b, (void **)&b->ranges, &b->cap_ranges, b->n_ranges + m, sizeof *b->ranges) ||
        grow(b, (void **)&b->classes, &b->cap_classes, b->n_classes + 1, sizeof *b->classes))
        return -1;
    if (m)
        memcpy(b->ranges + b->n_ranges, r, m * sizeof *r);
    b->classes[b->n_classes] = (struct gclass){(uint32_t)b->n_ranges, (uint32_t)m, neg};
    b->n_ranges += m;
    return (long)b->n_classes++;
}

/* ---- the notation ---- */

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* Skips blanks and comments; newlines too when nl. */
static void skip_space(struct builder *b, bool nl)
{
    while (b->at < b->len) {
        char c = b->text[b->at];
        if (c == ' ' || c == '\t' || c == '\r' || (nl && c == '\n')) {
            b->at++;
        } else if (c == '#') {
            while (b->at < b->len && b->text[b->at] != '\n')
                b->at++;
        } else {
            break;
        }
    }
}

/* Whether a rule definition ("name ::=") starts at the next non-blank
 * position (skipping newlines). */
static bool at_rule_start(struct builder *b)
{
    size_t save = b->at;
    skip_space(b, true);
    size_t p = b->at;
    while (p < b->len && is_name_char(b->text[p]))
        p++;
    bool named = p > b->at;
    b->at = p;
    skip_space(b, false);
    bool def = named && b->len - b->at >= 3 && !memcmp(b->text + b->at, "::=", 3);
    b->at = save;
    return def;
}

/* One UTF-8 character of the grammar text; false when invalid. */
static bool read_utf8(struct builder *b, uint32_t *cp)
{
    const unsigned char *s = (const unsigned char *)b->text + b->at;
    size_t n = b->len - b->at;
    if (n == 0)
        return false;
    uint32_t c = s[0];
    size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!k || k > n)
        return false;
    if (k > 1)
        c &= 0x3fu >> (k - 1);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return false;
        c = (c << 6) | (s[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[k] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return false;
    b->at += k;
    *cp = c;
    return true;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A character inside a literal or class (with escapes); false on error. */
static bool read_char(struct builder *b, uint32_t *cp)
{
    if (b->at >= b->len)
        return fail_at(b, b->at, "unexpected end of the grammar"), false;
    if (b->text[b->at] != '\\') {
        if (!read_utf8(b, cp))
            return fail_at(b, b->at, "invalid UTF-8"), false;
        return true;
    }
    size_t at = b->at++;
    if (b->at >= b->len)
        return fail_at(b, at, "an escape at the end of the grammar"), false;
    char e = b->text[b->at++];
    int digits = 0;
    switch (e) {
    case 'n': *cp = '\n'; return true;
    case 'r': *cp = '\r'; return true;
    case 't': *cp = '\t'; return true;
    case '\\': case '"': case '[': case ']': case '-': case '^': case '\'': *cp = (uint32_t)e; return true;
    case 'x': digits = 2; break;
    case 'u': digits = 4; break;
    case 'U': digits = 8; break;
    default: return fail_at(b, at, "unknown escape (\\n \\r \\t \\\\ \\\" \\[ \\] \\xHH \\uHHHH \\UHHHHHHHH)"), false;
    }
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int h = b->at < b->len ? hexval(b->text[b->at]) : -1;
        if (h < 0)
            return fail_at(b, at, "expected hexadecimal digits after the escape"), false;
        v = v * 16 + (uint32_t)h;
        b->at++;
    }
    if (v > 0x10ffff)
        return fail_at(b, at, "a code point beyond U+10FFFF"), false;
    *cp = v;
    return true;
}

static int parse_alternatives(struct builder *b, uint32_t rule, bool nested);

/* The symbols of the last element of a are [from, a->n): make them one
 * symbol (a rule of their own when several). */
static int as_one(struct builder *b, uint32_t rule, size_t alt_i, size_t from, struct gsym *out)
{
    if (b->rules[rule].alts[alt_i].n - from == 1) {
        *out = b->rules[rule].alts[alt_i].s[from];
        return 0;
    }
    long r = rule_new(b, rule); /* may move b->rules: alternatives are found again by index */
    if (r < 0)
        return b->rc;
    struct balt *na = rule_add_alt(b, (uint32_t)r);
    if (!na)
        return b->rc;
    const struct balt *a = &b->rules[rule].alts[alt_i];
    for (size_t i = from; i < a->n; i++)
        if (alt_push(b, na, a->s[i].kind, a->s[i].arg))
            return b->rc;
    *out = (struct gsym){SYM_RULE, (uint32_t)r};
    return 0;
}

/* x{min,max} (max UINT32_MAX: no bound) in place of the last element. */
static int repeat(struct builder *b, uint32_t rule, size_t alt_i, size_t from, uint32_t min, uint32_t max)
{
    struct gsym x = {SYM_END, 0};
    if (as_one(b, rule, alt_i, from, &x))
        return b->rc;
    b->n_syms -= b->rules[rule].alts[alt_i].n - from;
    b->rules[rule].alts[alt_i].n = from;
    for (uint32_t i = 0; i < min; i++)
        if (alt_push(b, &b->rules[rule].alts[alt_i], x.kind, x.arg))
            return b->rc;
    if (max == min)
        return 0;
    if (max == UINT32_MAX) { /* s ::= x s | (empty) */
        long s = rule_new(b, rule);
        if (s < 0)
            return b->rc;
        struct balt *a1 = rule_add_alt(b, (uint32_t)s);
        if (!a1 || alt_push(b, a1, x.kind, x.arg) || alt_push(b, a1, SYM_RULE, (uint32_t)s) ||
            !rule_add_alt(b, (uint32_t)s))
            return b->rc ? b->rc : oom(b);
        return alt_push(b, &b->rules[rule].alts[alt_i], SYM_RULE, (uint32_t)s);
    }
    /* c_k ::= x c_{k+1} | (empty), the last ::= x | (empty) */
    long next = -1;
    for (uint32_t k = max - min; k > 0; k--) {
        long c = rule_new(b, rule);
        if (c < 0)
            return b->rc;
        struct balt *a1 = rule_add_alt(b, (uint32_t)c);
        if (!a1 || alt_push(b, a1, x.kind, x.arg))
            return b->rc ? b->rc : oom(b);
        if (next >= 0 && alt_push(b, &b->rules[c].alts[0], SYM_RULE, (uint32_t)next))
            return b->rc;
        if (!rule_add_alt(b, (uint32_t)c))
            return b->rc;
        next = c;
    }
    return alt_push(b, &b->rules[rule].alts[alt_i], SYM_RULE, (uint32_t)next);
}

static bool read_count(struct builder *b, uint32_t *v)
{
    size_t start = b->at;
    uint64_t x = 0;
    while (b->at < b->len && b->text[b->at] >= '0' && b->text[b->at] <= '9') {
        x = x * 10 + (uint64_t)(b->text[b->at++] - '0');
        if (x > GRAMMAR_MAX_REPEAT)
            return fail_at(b, start, "a repetition count above 100000"), false;
    }
    if (b->at == start)
        return fail_at(b, start, "expected a number"), false;
    *v = (uint32_t)x;
    return true;
}

/* One sequence (an alternative) into rules[rule].alts[alt_i]. */
static int parse_sequence(struct builder *b, uint32_t rule, size_t alt_i, bool nested)
{
    size_t last = SIZE_MAX; /* where the last element's symbols start */
    for (;;) {
        skip_space(b, nested);
        if (b->at >= b->len)
            return 0;
        if (!nested && b->text[b->at] == '\n') {
            if (at_rule_start(b))
                return 0;
            skip_space(b, true);
            continue;
        }
        const size_t at = b->at;
        const char c = b->text[at];
#define ALT (&b->rules[rule].alts[alt_i])
        if (c == '|' || c == ')')
            return 0;
        if (c == '"') {
            b->at++;
            last = ALT->n;
            while (b->at < b->len && b->text[b->at] != '"') {
                uint32_t cp;
                if (!read_char(b, &cp))
                    return b->rc;
                uint32_t r[1][2] = {{cp, cp}};
                long k = class_add(b, r, 1, false);
                if (k < 0 || alt_push(b, ALT, SYM_CLASS, (uint32_t)k))
                    return b->rc;
            }
            if (b->at >= b->len)
                return fail_at(b, at, "a string literal without its closing quote");
            b->at++;
            if (ALT->n == last)
                last = SIZE_MAX; /* "": nothing to repeat */
        } else if (c == '[') {
            b->at++;
            bool neg = b->at < b->len && b->text[b->at] == '^';
            if (neg)
                b->at++;
            uint32_t(*r)[2] = NULL;
            size_t n = 0, cap = 0;
            while (b->at < b->len && b->text[b->at] != ']') {
                uint32_t lo, hi;
                if (!read_char(b, &lo)) {
                    free(r);
                    return b->rc;
                }
                hi = lo;
                if (b->at + 1 < b->len && b->text[b->at] == '-' && b->text[b->at + 1] != ']') {
                    b->at++;
                    if (!read_char(b, &hi)) {
                        free(r);
                        return b->rc;
                    }
                    if (hi < lo) {
                        free(r);
                        return fail_at(b, at, "a character range whose end comes before its start");
                    }
                }
                if (grow(b, (void **)&r, &cap, n + 1, sizeof *r)) {
                    free(r);
                    return b->rc;
                }
                r[n][0] = lo;
                r[n][1] = hi;
                n++;
            }
            if (b->at >= b->len) {
                free(r);
                return fail_at(b, at, "a character class without its closing ]");
            }
            b->at++;
            long k = n || neg ? class_add(b, r, n, neg) : -2;
            free(r);
            if (k == -2)
                return fail_at(b, at, "an empty character class matches nothing");
            last = ALT->n;
            if (k < 0 || alt_push(b, ALT, SYM_CLASS, (uint32_t)k))
                return b->rc;
        } else if (c == '.') {
            b->at++;
            long k = class_add(b, NULL, 0, true);
            last = ALT->n;
            if (k < 0 || alt_push(b, ALT, SYM_CLASS, (uint32_t)k))
                return b->rc;
        } else if (c == '(') {
            b->at++;
            if (++b->depth > MAX_GROUP_DEPTH)
                return fail_at(b, at, "groups nested more than 64 deep");
            long g = rule_new(b, rule);
            if (g < 0 || parse_alternatives(b, (uint32_t)g, true))
                return b->rc;
            b->depth--;
            skip_space(b, true);
            if (b->at >= b->len || b->text[b->at] != ')')
                return fail_at(b, at, "a group without its closing )");
            b->at++;
            last = ALT->n;
            if (alt_push(b, ALT, SYM_RULE, (uint32_t)g))
                return b->rc;
        } else if (is_name_char(c)) {
            size_t e = at;
            while (e < b->len && is_name_char(b->text[e]))
                e++;
            long r = rule_id(b, b->text + at, e - at);
            if (r < 0)
                return b->rc;
            b->at = e;
            last = ALT->n;
            if (alt_push(b, ALT, SYM_RULE, (uint32_t)r))
                return b->rc;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last == SIZE_MAX)
                return fail_at(b, at, "a repetition operator without anything before it to repeat");
            b->at++;
            uint32_t min = 0, max = UINT32_MAX;
            if (c == '+')
                min = 1;
            else if (c == '?')
                max = 1;
            else if (c == '{') {
                skip_space(b, false);
                if (!read_count(b, &min))
                    return b->rc;
                skip_space(b, false);
                max = min;
                if (b->at < b->len && b->text[b->at] == ',') {
                    b->at++;
                    skip_space(b, false);
                    max = UINT32_MAX;
                    if (b->at < b->len && b->text[b->at] != '}' && !read_count(b, &max))
                        return b->rc;
                    skip_space(b, false);
                }
                if (b->at >= b->len || b->text[b->at] != '}')
                    return fail_at(b, at, "expected } after a repetition count");
                b->at++;
                if (max < min)
                    return fail_at(b, at, "a repetition {m,n} with n below m");
            }
            if (repeat(b, rule, alt_i, last, min, max))
                return b->rc;
            last = SIZE_MAX; /* x** is refused */
        } else {
            char msg[96];
            snprintf(msg, sizeof msg, "unexpected character '%c' (0x%02x)", c >= 0x20 && c < 0x7f ? c : '?',
                     (unsigned char)c);
            return fail_at(b, at, msg);
        }
#undef ALT
    }
}

static int parse_alternatives(struct builder *b, uint32_t rule, bool nested)
{
    for (;;) {
        if (!rule_add_alt(b, rule))
            return b->rc;
        if (parse_sequence(b, rule, b->rules[rule].n_alts - 1, nested))
            return b->rc;
        skip_space(b, nested);
        if (b->at < b->len && b->text[b->at] == '|') {
            b->at++;
            skip_space(b, true);
            continue;
        }
        return 0;
    }
}

static int parse_rules(struct builder *b)
{
    for (;;) {
        skip_space(b, true);
        if (b->at >= b->len)
            return 0;
        size_t at = b->at, e = at;
        while (e < b->len && is_name_char(b->text[e]))
            e++;
        if (e == at)
            return fail_at(b, at, "expected a rule name");
        long r = rule_id(b, b->text + at, e - at);
        if (r < 0)
            return b->rc;
        if (b->rules[r].defined)
            return fail_at(b, at, "a rule defined twice");
        b->rules[r].defined = true;
        b->at = e;
        skip_space(b, false);
        if (b->len - b->at < 3 || memcmp(b->text + b->at, "::=", 3) != 0)
            return fail_at(b, b->at, "expected ::= after the rule name");
        b->at += 3;
        skip_space(b, true);
        if (parse_alternatives(b, (uint32_t)r, false))
            return b->rc;
        skip_space(b, false);
        if (b->at < b->len && b->text[b->at] != '\n')
            return fail_at(b, b->at, b->text[b->at] == ')' ? "a ) without its (" : "expected the end of the rule");
    }
}

/* Refuses rules that reach themselves without consuming a character. */
static int check_left_recursion(struct builder *b)
{
    const size_t n = b->n_rules;
    bool *nullable = calloc(n, 1);
    uint8_t *mark = calloc(n, 1); /* 0 new, 1 on the path, 2 done */
    size_t *path = malloc(n * sizeof *path), *next_alt = calloc(n, sizeof *next_alt),
           *next_sym = calloc(n, sizeof *next_sym);
    if (!nullable || !mark || !path || !next_alt || !next_sym) {
        free(nullable), free(mark), free(path), free(next_alt), free(next_sym);
        return oom(b);
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t r = 0; r < n; r++) {
            if (nullable[r])
                continue;
            for (size_t a = 0; a < b->rules[r].n_alts && !nullable[r]; a++) {
                const struct balt *al = &b->rules[r].alts[a];
                bool all = true;
                for (size_t i = 0; i < al->n && all; i++)
                    all = al->s[i].kind == SYM_RULE && nullable[al->s[i].arg];
                if (all)
                    nullable[r] = changed = true;
            }
        }
    }
    /* depth-first over "r may start with s", iteratively */
    int rc = 0;
    for (size_t s0 = 0; s0 < n && !rc; s0++) {
        if (mark[s0])
            continue;
        size_t sp = 0;
        path[sp++] = s0;
        mark[s0] = 1;
        next_alt[s0] = next_sym[s0] = 0;
        while (sp && !rc) {
            const size_t r = path[sp - 1];
            const struct brule *ru = &b->rules[r];
            long child = -1;
            while (child < 0 && next_alt[r] < ru->n_alts) {
                const struct balt *al = &ru->alts[next_alt[r]];
                size_t i = next_sym[r];
                /* the symbols an alternative may start with: up to the
                 * first one that is not nullable */
                bool reach = true;
                for (size_t k = 0; k < i && reach; k++)
                    reach = al->s[k].kind == SYM_RULE && nullable[al->s[k].arg];
                if (reach && i < al->n && al->s[i].kind == SYM_RULE) {
                    child = (long)al->s[i].arg;
                    next_sym[r] = i + 1;
                } else {
                    next_alt[r]++;
                    next_sym[r] = 0;
                }
            }
            if (child < 0) {
                mark[r] = 2;
                sp--;
                continue;
            }
            if (mark[child] == 1) {
                rc = pb_fail(b->err, PB_EINVAL, "grammar: rule '%s' can reach itself before consuming any "
                             "character (left recursion, or a repetition of something that may be empty)",
                             b->rules[child].name);
            } else if (mark[child] == 0) {
                mark[child] = 1;
                next_alt[child] = next_sym[child] = 0;
                path[sp++] = (size_t)child;
            }
        }
    }
    free(nullable), free(mark), free(path), free(next_alt), free(next_sym);
    if (rc)
        b->rc = rc;
    return rc;
}

static void builder_free(struct builder *b)
{
    for (size_t i = 0; i < b->n_rules; i++) {
        for (size_t a = 0; a < b->rules[i].n_alts; a++)
            free(b->rules[i].alts[a].s);
        free(b->rules[i].alts);
        free(b->rules[i].name);
    }
    free(b->rules);
    free(b->by_name);
    free(b->ranges);
    free(b->classes);
}

int grammar_parse(const char *text, size_t len, struct grammar **out, pb_err *err)
{
    *out = NULL;
    if (len > GRAMMAR_MAX_TEXT)
        return pb_fail(err, PB_EINVAL, "grammar: %zu bytes, more than the %u accepted", len, GRAMMAR_MAX_TEXT);
    struct builder b = {.text = text ? text : "", .len = len, .err = err};
    struct grammar *g = NULL;
    if (rule_id(&b, "root", 4) < 0 || parse_rules(&b))
        goto fail;
    for (size_t i = 0; i < b.n_rules; i++)
        if (!b.rules[i].defined) {
            pb_fail(err, PB_EINVAL, i == 0 ? "grammar: no rule 'root' (the start rule)"
                                           : "grammar: rule '%s' is used but not defined",
                    b.rules[i].name);
            b.rc = PB_EINVAL;
            goto fail;
        }
    if (check_left_recursion(&b))
        goto fail;
    if (!(g = calloc(1, sizeof *g))) {
        oom(&b);
        goto fail;
    }
    size_t n_alts = 0, n_syms = 0;
    for (size_t i = 0; i < b.n_rules; i++) {
        n_alts += b.rules[i].n_alts;
        for (size_t a = 0; a < b.rules[i].n_alts; a++)
            n_syms += b.rules[i].alts[a].n + 1;
    }
    g->syms = malloc((n_syms + 1) * sizeof *g->syms);
    g->alts = malloc((n_alts + 1) * sizeof *g->alts);
    g->rules = malloc(b.n_rules * sizeof *g->rules);
    if (!g->syms || !g->alts || !g->rules) {
        oom(&b);
        goto fail;
    }
    uint32_t s = 0, a_at = 0;
    for (size_t i = 0; i < b.n_rules; i++) {
        g->rules[i] = (struct grule){a_at, (uint32_t)b.rules[i].n_alts};
        for (size_t a = 0; a < b.rules[i].n_alts; a++) {
            g->alts[a_at++] = s;
            if (b.rules[i].alts[a].n)
                memcpy(g->syms + s, b.rules[i].alts[a].s, b.rules[i].alts[a].n * sizeof *g->syms);
            s += (uint32_t)b.rules[i].alts[a].n;
            g->syms[s++] = (struct gsym){SYM_END, 0};
        }
    }
    g->syms[s] = (struct gsym){SYM_END, 0};
    g->n_syms = s;
    g->n_rules = (uint32_t)b.n_rules;
    g->ranges = b.ranges;
    g->classes = b.classes;
    g->n_classes = (uint32_t)b.n_classes;
    b.ranges = NULL;
    b.classes = NULL;
    g->root = 0;
    builder_free(&b);
    *out = g;
    return PB_OK;
fail:
    builder_free(&b);
    grammar_free(g);
    return b.rc ? b.rc : PB_EINVAL;
}

/* ---- states ----
 * A state: stacks of positions, the top of each at a SYM_CLASS symbol (an
 * empty stack: the root rule has ended there), and a partial UTF-8
 * character: the bits so far, the bytes still expected and its length. */

struct sset {
    uint32_t n;             /* stacks */
    uint32_t *off;          /* [n + 1]: stack i is pos[off[i] .. off[i + 1]) */
    uint32_t *pos;
    uint64_t *hash;         /* [n] */
    size_t cap_off, cap_pos;
};

struct partial {
    uint32_t val;
    uint8_t rem, len;
};

static void sset_free(struct sset *s)
{
    free(s->off);
    free(s->pos);
    free(s->hash);
    memset(s, 0, sizeof *s);
}

static void sset_clear(struct sset *s)
{
    s->n = 0;
    if (s->off)
        s->off[0] = 0;
}

static uint64_t hash_stack(const uint32_t *p, uint32_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001B3ull;
        h ^= h >> 29;
    }
    return h;
}

/* Adds a stack unless the set holds it already or is full; false when
 * out of memory. */
static bool sset_add(struct sset *s, const uint32_t *p, uint32_t n)
{
    const uint64_t h = hash_stack(p, n);
    for (uint32_t i = 0; i < s->n; i++)
        if (s->hash[i] == h && s->off[i + 1] - s->off[i] == n &&
            (n == 0 || !memcmp(s->pos + s->off[i], p, n * sizeof *p)))
            return true;
    if (s->n >= GRAMMAR_MAX_STACKS)
        return true; /* dropped (grammar.h) */
    if (s->n + 2 > s->cap_off) {
        size_t c = s->cap_off ? s->cap_off * 2 : 16;
        uint32_t *o = realloc(s->off, c * sizeof *o);
        if (!o)
            return false;
        s->off = o;
        uint64_t *hh = realloc(s->hash, c * sizeof *hh);
        if (!hh)
            return false;
        s->hash = hh;
        s->cap_off = c;
        if (s->n == 0)
            s->off[0] = 0;
    }
    if (s->n == 0)
        s->off[0] = 0;
    const uint32_t at = s->off[s->n];
    if (at + n > s->cap_pos || !s->pos) { /* allocated for an empty stack too: readers offset pos */
        size_t c = s->cap_pos ? s->cap_pos : 64;
        while (c < at + n)
            c *= 2;
        uint32_t *q = realloc(s->pos, c * sizeof *q);
        if (!q)
            return false;
        s->pos = q;
        s->cap_pos = c;
    }
    if (n) /* an empty stack: nothing to copy, and pos may still be NULL */
        memcpy(s->pos + at, p, n * sizeof *p);
    s->hash[s->n] = h;
    s->off[++s->n] = at + n;
    return true;
}

/* Scratch for expanding: a stack being built. */
struct scratch {
    uint32_t *p;
    size_t cap;
};

/* Expands the stack in sc->p[base .. base + depth) until its top is at a
 * character class (or it is empty) and adds the results to out. The
 * region above base + depth is free for the copies alternatives need. */
static bool expand(const struct grammar *g, struct scratch *sc, size_t base, uint32_t depth, struct sset *out)
{
    for (;;) {
        if (depth == 0)
            return sset_add(out, sc->p + base, 0);
        if (depth > GRAMMAR_MAX_DEPTH)
            return true; /* dropped (grammar.h) */
        uint32_t *stk = sc->p + base;
        const uint32_t p = stk[depth - 1];
        const struct gsym sy = g->syms[p];
        if (sy.kind == SYM_CLASS)
            return sset_add(out, stk, depth);
        if (sy.kind == SYM_END) {
            depth--;
            continue;
        }
        /* a rule: its continuation stays below (unless it is the end of
         * this alternative: a tail call), each alternative on top */
        uint32_t keep = depth;
        if (g->syms[p + 1].kind == SYM_END)
            keep = depth - 1;
        else
            stk[depth - 1] = p + 1;
        const struct grule *ru = &g->rules[sy.arg];
        const size_t nb = base + depth + 1; /* room for the copy, above this stack */
        if (nb + keep + 1 > sc->cap) {
            size_t c = sc->cap ? sc->cap : 256;
            while (c < nb + keep + 1)
                c *= 2;
            uint32_t *q = realloc(sc->p, c * sizeof *q);
            if (!q)
                return false;
            sc->p = q;
            stk = sc->p + base;
            sc->cap = c;
        }
        for (uint32_t a = 0; a < ru->n_alts; a++) {
            memcpy(sc->p + nb, sc->p + base, keep * sizeof *sc->p);
            sc->p[nb + keep] = g->alts[ru->first_alt + a];
            if (!expand(g, sc, nb, keep + 1, out))
                return false;
        }
        return true;
    }
}

/* out = the stacks of in that accept code point cp, advanced past it. */
static bool advance(const struct grammar *g, struct scratch *sc, const struct sset *in, uint32_t cp, struct sset *out)
{
    sset_clear(out);
    for (uint32_t i = 0; i < in->n; i++) {
        const uint32_t n = in->off[i + 1] - in->off[i];
        if (n == 0)
            continue;
        const uint32_t *stk = in->pos + in->off[i];
        const struct gsym sy = g->syms[stk[n - 1]];
        if (!class_has(g, sy.arg, cp))
            continue;
        if (n + 1 > sc->cap) {
            size_t c = sc->cap ? sc->cap : 256;
            while (c < n + 1)
                c *= 2;
            uint32_t *q = realloc(sc->p, c * sizeof *q);
            if (!q)
                return false;
            sc->p = q;
            sc->cap = c;
        }
        memcpy(sc->p, stk, n * sizeof *stk);
        sc->p[n - 1]++;
        if (!expand(g, sc, 0, n, out))
            return false;
    }
    return true;
}

/* Whether some stack of s accepts a code point in [lo, hi]. */
static bool can_take(const struct grammar *g, const struct sset *s, uint32_t lo, uint32_t hi)
{
    for (uint32_t i = 0; i < s->n; i++) {
        const uint32_t n = s->off[i + 1] - s->off[i];
        if (n && class_meets(g, g->syms[s->pos[s->off[i] + n - 1]].arg, lo, hi))
            return true;
    }
    return false;
}

enum byte_step { B_NO, B_PARTIAL, B_CHAR };

static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};

/* Whether a partial character can still become one some stack takes:
 * the code points it may end as, without overlong forms, surrogates and
 * what lies beyond U+10FFFF. */
static bool partial_ok(const struct grammar *g, const struct sset *in, struct partial p)
{
    uint32_t lo = p.val << (6 * p.rem), hi = lo | ((1u << (6 * p.rem)) - 1);
    if (lo < least[p.len])
        lo = least[p.len];
    if (hi > 0x10ffff)
        hi = 0x10ffff;
    if (lo > hi || (lo >= 0xd800 && hi <= 0xdfff))
        return false;
    return can_take(g, in, lo, hi);
}

/* One byte after state (in, pin): B_NO (refused), B_PARTIAL (a character
 * goes on: the stacks stay in, *pout is new) or B_CHAR (a character ended:
 * the stacks are in out). */
static enum byte_step step_byte(const struct grammar *g, struct scratch *sc, const struct sset *in,
                                struct partial pin, uint8_t byte, struct sset *out, struct partial *pout, bool *oom_)
{
    uint32_t cp;
    if (pin.rem) {
        if ((byte & 0xc0) != 0x80)
            return B_NO;
        pin.val = (pin.val << 6) | (byte & 0x3f);
        pin.rem--;
        if (pin.rem) {
            if (!partial_ok(g, in, pin))
                return B_NO;
            *pout = pin;
            return B_PARTIAL;
        }
        cp = pin.val;
        if (cp < least[pin.len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return B_NO;
    } else if (byte < 0x80) {
        cp = byte;
    } else {
        struct partial p = {0, 0, 0};
        if (byte >= 0xc2 && byte <= 0xdf)
            p = (struct partial){byte & 0x1fu, 1, 2};
        else if (byte >= 0xe0 && byte <= 0xef)
            p = (struct partial){byte & 0x0fu, 2, 3};
        else if (byte >= 0xf0 && byte <= 0xf4)
            p = (struct partial){byte & 0x07u, 3, 4};
        else
            return B_NO;
        if (!partial_ok(g, in, p))
            return B_NO;
        *pout = p;
        return B_PARTIAL;
    }
    if (!advance(g, sc, in, cp, out)) {
        *oom_ = true;
        return B_NO;
    }
    *pout = (struct partial){0, 0, 0};
    /* only stacks that can go on, or an empty one (the end), count */
    return out->n ? B_CHAR : B_NO;
}

/* ---- the trie ---- */

struct tnode {
    uint32_t child, n_child; /* nodes[child .. child + n_child) */
    uint32_t tok, n_tok;     /* toks[tok .. tok + n_tok): tokens ending here */
    uint8_t byte;
};

struct gtrie {
    struct tnode *nodes;
    uint32_t n_nodes;
    int32_t *toks;
    int32_t n_vocab;
};

static size_t piece_len(const uint32_t *off, int32_t id)
{
    return off[id + 1] - off[id];
}

void gtrie_free(struct gtrie *t)
{
    if (!t)
        return;
    free(t->nodes);
    free(t->toks);
    free(t);
}

int gtrie_build(const char *pieces, const uint32_t *off, int32_t n_vocab, const uint8_t *skip, struct gtrie **out,
                pb_err *err)
{
    *out = NULL;
    struct gtrie *t = calloc(1, sizeof *t);
    int32_t *ids = malloc(((size_t)n_vocab + 1) * sizeof *ids);
    /* one node per distinct prefix at most: the pieces' bytes bound it */
    size_t cap = 1;
    int32_t n = 0;
    if (!t || !ids)
        goto oom;
    for (int32_t i = 0; i < n_vocab; i++) {
        size_t l = piece_len(off, i);
        if ((skip && skip[i]) || l == 0 || l > GRAMMAR_MAX_TOKEN)
            continue;
        ids[n++] = i;
        cap += l;
    }
    /* sorted by (bytes, id): a merge sort, as qsort has no user pointer */
    {
        int32_t *tmp = malloc(((size_t)n + 1) * sizeof *tmp);
        if (!tmp)
            goto oom;
        /* bottom-up merge sort by (bytes, id) */
        for (int32_t w = 1; w < n; w *= 2) {
            for (int32_t lo = 0; lo < n; lo += 2 * w) {
                int32_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
                int32_t i = lo, j = mid, k = lo;
                while (i < mid && j < hi) {
                    const int32_t a = ids[i], b = ids[j];
                    const size_t la = piece_len(off, a), lb = piece_len(off, b);
                    int c = memcmp(pieces + off[a], pieces + off[b], la < lb ? la : lb);
                    if (!c)
                        c = la < lb ? -1 : la > lb ? 1 : (a < b ? -1 : 1);
                    tmp[k++] = c <= 0 ? ids[i++] : ids[j++];
                }
                while (i < mid)
                    tmp[k++] = ids[i++];
                while (j < hi)
                    tmp[k++] = ids[j++];
            }
            memcpy(ids, tmp, (size_t)n * sizeof *ids);
        }
        free(tmp);
    }
    t->nodes = calloc(cap, sizeof *t->nodes);
    t->toks = malloc(((size_t)n + 1) * sizeof *t->toks);
    if (!t->nodes || !t->toks)
        goto oom;
    t->n_vocab = n_vocab;
    /* breadth-first: a node covers a range of sorted ids sharing its
     * prefix of length depth; its children are consecutive nodes */
    struct qitem {
        uint32_t node;
        int32_t lo, hi;
        uint32_t depth;
    } *q = malloc(cap * sizeof *q);
    if (!q)
        goto oom;
    size_t qh = 0, qt = 0;
    t->n_nodes = 1;
    q[qt++] = (struct qitem){0, 0, n, 0};
    uint32_t n_tok = 0;
    while (qh < qt) {
        const struct qitem it = q[qh++];
        struct tnode *nd = &t->nodes[it.node];
        int32_t i = it.lo;
        nd->tok = n_tok;
        while (i < it.hi && piece_len(off, ids[i]) == it.depth)
            t->toks[n_tok++] = ids[i++];
        nd->n_tok = n_tok - nd->tok;
        nd->child = t->n_nodes;
        while (i < it.hi) {
            const uint8_t byte = (uint8_t)pieces[off[ids[i]] + it.depth];
            int32_t j = i;
            while (j < it.hi && (uint8_t)pieces[off[ids[j]] + it.depth] == byte)
                j++;
            const uint32_t c = t->n_nodes++;
            t->nodes[c].byte = byte;
            q[qt++] = (struct qitem){c, i, j, it.depth + 1};
            nd = &t->nodes[it.node];
            nd->n_child++;
            i = j;
        }
    }
    free(q);
    free(ids);
    *out = t;
    return PB_OK;
oom:
    free(ids);
    gtrie_free(t);
    return pb_fail(err, PB_ENOMEM, "out of memory for the vocabulary's trie");
}

/* ---- the matcher ---- */

struct centry {
    uint64_t hash;
    uint32_t *key; /* partial (3 words) then the stacks: count, then length + positions each */
    uint32_t key_n;
    uint8_t *bits;
    int32_t n_allowed;
    bool used;
};

struct gmatch {
    const struct grammar *g;
    struct sset cur, tmp;
    struct partial part;
    struct scratch sc;
    /* the trie walk: a state per depth */
    struct sset lv[GRAMMAR_MAX_TOKEN + 1];
    struct centry cache[GRAMMAR_CACHE];
    uint32_t n_cached;
    int32_t cache_vocab;
    uint32_t *key;
    size_t key_cap;
    uint64_t computed, hits;
    bool oom;
};

int gmatch_create(const struct grammar *g, struct gmatch **out, pb_err *err)
{
    *out = NULL;
    struct gmatch *m = calloc(1, sizeof *m);
    if (!m)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    m->g = g;
    /* the start: root's alternatives */
    const struct grule *ru = &g->rules[g->root];
    m->sc.p = malloc(256 * sizeof *m->sc.p);
    m->sc.cap = 256;
    bool ok = m->sc.p != NULL;
    for (uint32_t a = 0; a < ru->n_alts && ok; a++) {
        m->sc.p[0] = g->alts[ru->first_alt + a];
        ok = expand(g, &m->sc, 0, 1, &m->cur);
    }
    if (!ok) {
        gmatch_free(m);
        return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    *out = m;
    return PB_OK;
}

void gmatch_free(struct gmatch *m)
{
    if (!m)
        return;
    sset_free(&m->cur);
    sset_free(&m->tmp);
    for (int i = 0; i <= GRAMMAR_MAX_TOKEN; i++)
        sset_free(&m->lv[i]);
    for (int i = 0; i < GRAMMAR_CACHE; i++) {
        free(m->cache[i].key);
        free(m->cache[i].bits);
    }
    free(m->key);
    free(m->sc.p);
    free(m);
}

static void sset_swap(struct sset *a, struct sset *b)
{
    struct sset t = *a;
    *a = *b;
    *b = t;
}

/* Feeds bytes to a copy of the state: true and the copy in *out (when
 * out is not NULL) when the grammar takes them. */
static bool feed_copy(struct gmatch *m, const char *bytes, size_t n, struct sset *out, struct partial *pout);

bool gmatch_accepts(struct gmatch *m, const char *bytes, size_t n)
{
    return feed_copy(m, bytes, n, NULL, NULL);
}

bool gmatch_feed(struct gmatch *m, const char *bytes, size_t n)
{
    struct sset a;
    struct partial p;
    if (!feed_copy(m, bytes, n, &a, &p))
        return false;
    sset_free(&m->cur);
    m->cur = a;
    m->part = p;
    return true;
}

static bool feed_copy(struct gmatch *m, const char *bytes, size_t n, struct sset *out, struct partial *pout)
{
    /* work on a copy so that a refusal leaves the state as it was */
    struct sset a = {0}, b = {0};
    for (uint32_t i = 0; i < m->cur.n; i++)
        if (!sset_add(&a, m->cur.pos + m->cur.off[i], m->cur.off[i + 1] - m->cur.off[i])) {
            sset_free(&a);
            return false;
        }
    struct partial p = m->part;
    bool ok = true, oom_ = false;
    for (size_t i = 0; i < n && ok; i++) {
        struct partial np;
        switch (step_byte(m->g, &m->sc, &a, p, (uint8_t)bytes[i], &b, &np, &oom_)) {
        case B_NO: ok = false; break;
        case B_PARTIAL: p = np; break;
        case B_CHAR: p = np; sset_swap(&a, &b); break;
        }
    }
    sset_free(&b);
    if (!ok || !out) {
        sset_free(&a);
        return ok;
    }
    *out = a;
    *pout = p;
    return true;
}

bool gmatch_complete(const struct gmatch *m)
{
    if (m->part.rem)
        return false;
    for (uint32_t i = 0; i < m->cur.n; i++)
        if (m->cur.off[i + 1] == m->cur.off[i])
            return true;
    return false;
}

bool gmatch_done(const struct gmatch *m)
{
    return gmatch_complete(m) && m->cur.n == 1;
}

void gmatch_counts(const struct gmatch *m, uint64_t *computed, uint64_t *cached)
{
    *computed = m->computed;
    *cached = m->hits;
}

/* The cache key of the current state into m->key; its length. */
static uint32_t make_key(struct gmatch *m, uint64_t *hash)
{
    size_t need = 4 + (size_t)m->cur.n + m->cur.off[m->cur.n];
    if (need > m->key_cap) {
        uint32_t *k = realloc(m->key, need * sizeof *k);
        if (!k)
            return 0;
        m->key = k;
        m->key_cap = need;
    }
    uint32_t *k = m->key, n = 0;
    k[n++] = m->part.val;
    k[n++] = m->part.rem;
    k[n++] = m->part.len;
    k[n++] = m->cur.n;
    /* the stacks in a canonical order would make equal sets equal keys;
     * sets are built in a deterministic order from equal states, so the
     * order of insertion is canonical enough for a cache */
    for (uint32_t i = 0; i < m->cur.n; i++) {
        const uint32_t l = m->cur.off[i + 1] - m->cur.off[i];
        k[n++] = l;
        if (l) /* an empty stack (the grammar may end): pos may be NULL */
            memcpy(k + n, m->cur.pos + m->cur.off[i], l * sizeof *k);
        n += l;
    }
    *hash = hash_stack(k, n);
    return n;
}

struct walk {
    const struct grammar *g;
    const struct gtrie *t;
    struct gmatch *m;
    uint8_t *bits;
    int32_t n_allowed;
};

static void walk(struct walk *w, uint32_t node, const struct sset *st, struct partial part, int depth)
{
    const struct tnode *nd = &w->t->nodes[node];
    struct sset *next = &w->m->lv[depth + 1];
    for (uint32_t c = 0; c < nd->n_child; c++) {
        const struct tnode *ch = &w->t->nodes[nd->child + c];
        struct partial np;
        bool oom_ = false;
        const enum byte_step r = step_byte(w->g, &w->m->sc, st, part, ch->byte, next, &np, &oom_);
        if (oom_)
            w->m->oom = true;
        if (r == B_NO)
            continue;
        const struct sset *ns = r == B_CHAR ? next : st;
        /* a token ending inside a character is allowed: the state keeps
         * the partial character and the next token must complete it */
        for (uint32_t k = 0; k < ch->n_tok; k++) {
            const int32_t id = w->t->toks[ch->tok + k];
            w->bits[id >> 3] |= (uint8_t)(1u << (id & 7));
            w->n_allowed++;
        }
        /* the children write their sets one level further down, so this
         * level's set stays for the next sibling */
        if (ch->n_child && depth + 1 < GRAMMAR_MAX_TOKEN)
            walk(w, nd->child + c, ns, np, depth + 1);
    }
}

int32_t gmatch_mask(struct gmatch *m, const struct gtrie *t, uint8_t *allowed)
{
    const size_t nbytes = ((size_t)t->n_vocab + 7) / 8;
    if (m->cache_vocab != t->n_vocab) { /* another trie: start over */
        for (int i = 0; i < GRAMMAR_CACHE; i++) {
            free(m->cache[i].key);
            free(m->cache[i].bits);
            memset(&m->cache[i], 0, sizeof m->cache[i]);
        }
        m->n_cached = 0;
        m->cache_vocab = t->n_vocab;
    }
    uint64_t h = 0;
    const uint32_t kn = make_key(m, &h);
    struct centry *e = NULL;
    if (kn) {
        for (uint32_t i = 0; i < GRAMMAR_CACHE; i++) {
            struct centry *c = &m->cache[(h + i) % GRAMMAR_CACHE];
            if (!c->used)
                break;
            if (c->hash == h && c->key_n == kn && !memcmp(c->key, m->key, kn * sizeof *m->key)) {
                e = c;
                break;
            }
        }
    }
    uint8_t *bits = NULL;
    int32_t n_allowed = 0;
    if (e) {
        m->hits++;
        bits = e->bits;
        n_allowed = e->n_allowed;
    } else {
        m->computed++;
        bits = calloc(nbytes, 1);
        if (!bits) {
            memset(allowed, 0, (size_t)t->n_vocab);
            return 0;
        }
        /* the walk recurses one level per byte; its sets are per level */
        struct walk w = {m->g, t, m, bits, 0};
        walk(&w, 0, &m->cur, m->part, 0);
        n_allowed = w.n_allowed;
        if (kn) {
            if (m->n_cached >= GRAMMAR_CACHE * 3 / 4) { /* full: start over */
                for (int i = 0; i < GRAMMAR_CACHE; i++) {
                    free(m->cache[i].key);
                    free(m->cache[i].bits);
                    memset(&m->cache[i], 0, sizeof m->cache[i]);
                }
                m->n_cached = 0;
            }
            struct centry *c = NULL;
            for (uint32_t i = 0; i < GRAMMAR_CACHE && !c; i++)
                if (!m->cache[(h + i) % GRAMMAR_CACHE].used)
                    c = &m->cache[(h + i) % GRAMMAR_CACHE];
            uint32_t *key = malloc(kn * sizeof *key);
            if (c && key) {
                memcpy(key, m->key, kn * sizeof *key);
                *c = (struct centry){h, key, kn, bits, n_allowed, true};
                m->n_cached++;
                key = NULL;
                e = c;
            }
            free(key);
        }
    }
    for (int32_t i = 0; i < t->n_vocab; i++)
        allowed[i] = (bits[i >> 3] >> (i & 7)) & 1;
    if (!e)
        free(bits);
    return n_allowed;
}
