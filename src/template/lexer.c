/* Template lexer: text and tags, whitespace control, expression tokens.
 *
 * Whitespace rules, as Jinja2 with trim_blocks and lstrip_blocks:
 *  - newlines are normalized to \n and one trailing newline is dropped;
 *  - "{%-", "{{-", "{#-" strip all whitespace before the tag; "-%}" etc.
 *    strip all whitespace after it;
 *  - trim_blocks: one newline right after a block or comment tag is
 *    removed (unless the tag ends with "+%}");
 *  - lstrip_blocks: spaces and tabs between the start of a line and a
 *    block or comment tag are removed (unless it opens with "{%+").
 */
#include "template/tmpl_internal.h"

#include "base/vec.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct lexer {
    struct arena *a;
    const char *s; /* normalized source */
    size_t n, pos;
    int line;
    struct token *toks;
    size_t n_toks, cap;
    pb_err *err;
};

static int push(struct lexer *lx, struct token t)
{
    if (vec_reserve((void **)&lx->toks, &lx->cap, lx->n_toks + 1, sizeof *lx->toks))
        return pb_fail(lx->err, PB_ENOMEM, "out of memory lexing the template");
    lx->toks[lx->n_toks++] = t;
    return PB_OK;
}

static int push_text(struct lexer *lx, const char *p, size_t n, int line)
{
    if (n == 0)
        return PB_OK;
    struct token t = {.kind = TK_TEXT, .line = line, .text = tstr_new(lx->a, p, n)};
    if (!t.text)
        return pb_fail(lx->err, PB_ENOMEM, "out of memory lexing the template");
    return push(lx, t);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int count_lines(const char *p, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += p[i] == '\n';
    return k;
}

/* ---- expression tokens ---- */

static int lex_string(struct lexer *lx)
{
    char quote = lx->s[lx->pos++];
    int start_line = lx->line;
    char *buf = arena_alloc(lx->a, lx->n - lx->pos + 1);
    if (!buf)
        return pb_fail(lx->err, PB_ENOMEM, "out of memory lexing the template");
    size_t o = 0;
    while (lx->pos < lx->n && lx->s[lx->pos] != quote) {
        char c = lx->s[lx->pos++];
        if (c == '\n')
            lx->line++;
        if (c != '\\' || lx->pos >= lx->n) {
            buf[o++] = c;
            continue;
        }
        char e = lx->s[lx->pos++];
        switch (e) {
        case 'n': buf[o++] = '\n'; break;
        case 't': buf[o++] = '\t'; break;
        case 'r': buf[o++] = '\r'; break;
        case 'b': buf[o++] = '\b'; break;
        case 'f': buf[o++] = '\f'; break;
        case 'v': buf[o++] = '\v'; break;
        case '0': buf[o++] = '\0'; break;
        case '\\': buf[o++] = '\\'; break;
        case '\'': buf[o++] = '\''; break;
        case '"': buf[o++] = '"'; break;
        case '\n': lx->line++; break; /* line continuation */
        case 'x':
        case 'u':
        case 'U': {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            unsigned long cp = 0;
            for (int k = 0; k < digits; k++) {
                char h = lx->pos < lx->n ? lx->s[lx->pos] : 0;
                if (!isxdigit((unsigned char)h))
                    return pb_fail(lx->err, PB_EFORMAT, "template line %d: bad \\%c escape in a string", lx->line, e);
                cp = cp * 16 + (unsigned long)(isdigit((unsigned char)h) ? h - '0' : (tolower((unsigned char)h) - 'a' + 10));
                lx->pos++;
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return pb_fail(lx->err, PB_EFORMAT, "template line %d: escape \\%c names no character", lx->line, e);
            if (cp < 0x80) {
                buf[o++] = (char)cp;
            } else if (cp < 0x800) {
                buf[o++] = (char)(0xC0 | (cp >> 6));
                buf[o++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                buf[o++] = (char)(0xE0 | (cp >> 12));
                buf[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                buf[o++] = (char)(0x80 | (cp & 0x3F));
            } else {
                buf[o++] = (char)(0xF0 | (cp >> 18));
                buf[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                buf[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                buf[o++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: /* unknown escapes stay as written, as in Python */
            buf[o++] = '\\';
            buf[o++] = e;
        }
    }
    if (lx->pos >= lx->n)
        return pb_fail(lx->err, PB_EFORMAT, "template line %d: unterminated string", start_line);
    lx->pos++; /* closing quote */
    struct token t = {.kind = TK_STRING, .line = start_line, .text = tstr_new(lx->a, buf, o)};
    if (!t.text)
        return pb_fail(lx->err, PB_ENOMEM, "out of memory lexing the template");
    return push(lx, t);
}

static int lex_number(struct lexer *lx)
{
    char buf[64];
    size_t o = 0;
    bool is_float = false;
    while (lx->pos < lx->n && o < sizeof buf - 1) {
        char c = lx->s[lx->pos];
        bool exp_sign = (c == '+' || c == '-') && o > 0 && (buf[o - 1] == 'e' || buf[o - 1] == 'E');
        if (isdigit((unsigned char)c) || exp_sign) {
            buf[o++] = c;
        } else if (c == '_') {
            /* digit separator */
        } else if (c == '.' && !is_float && lx->pos + 1 < lx->n && isdigit((unsigned char)lx->s[lx->pos + 1])) {
            buf[o++] = c;
            is_float = true;
        } else if ((c == 'e' || c == 'E') && lx->pos + 1 < lx->n &&
                   (isdigit((unsigned char)lx->s[lx->pos + 1]) || lx->s[lx->pos + 1] == '+' ||
                    lx->s[lx->pos + 1] == '-')) {
            buf[o++] = c;
            is_float = true;
        } else {
            break;
        }
        lx->pos++;
    }
    buf[o] = 0;
    struct token t = {.kind = is_float ? TK_FLOAT : TK_INT, .line = lx->line};
    errno = 0;
    if (is_float)
        t.f = strtod(buf, NULL);
    else
        t.i = strtoll(buf, NULL, 10);
    if (errno)
        return pb_fail(lx->err, PB_EFORMAT, "template line %d: number %s is out of range", lx->line, buf);
    return push(lx, t);
}

/* Lexes the inside of a tag up to its end delimiter ("}}" or "%}",
 * optionally preceded by '-' or '+'), which it consumes; *strip is the
 * modifier found. As in Jinja2, a delimiter inside open brackets is not
 * the end: {{ {'a': {'b': 1}} }} is one tag. */
static int lex_tag(struct lexer *lx, char close, char *strip)
{
    static const char *ops[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                                ">",  "=",  "(",  ")",  "[",  "]",  "{", "}", ".", ",", ":", "|"};
    int start_line = lx->line;
    size_t open = 0; /* brackets opened and not closed */
    for (;;) {
        while (lx->pos < lx->n && is_space(lx->s[lx->pos])) {
            lx->line += lx->s[lx->pos] == '\n';
            lx->pos++;
        }
        if (lx->pos >= lx->n)
            return pb_fail(lx->err, PB_EFORMAT, "template line %d: tag is not closed (expected '%c}')", start_line,
                           close);
        const char *p = lx->s + lx->pos;
        size_t left = lx->n - lx->pos;
        if (open == 0 && left >= 3 && (p[0] == '-' || p[0] == '+') && p[1] == close && p[2] == '}') {
            *strip = p[0];
            lx->pos += 3;
            return PB_OK;
        }
        if (open == 0 && left >= 2 && p[0] == close && p[1] == '}') {
            *strip = 0;
            lx->pos += 2;
            return PB_OK;
        }
        int rc;
        if (*p == '"' || *p == '\'') {
            rc = lex_string(lx);
        } else if (isdigit((unsigned char)*p)) {
            rc = lex_number(lx);
        } else if (isalpha((unsigned char)*p) || *p == '_') {
            size_t k = 1;
            while (k < left && (isalnum((unsigned char)p[k]) || p[k] == '_'))
                k++;
            struct token t = {.kind = TK_NAME, .line = lx->line, .text = tstr_new(lx->a, p, k)};
            if (!t.text)
                return pb_fail(lx->err, PB_ENOMEM, "out of memory lexing the template");
            lx->pos += k;
            rc = push(lx, t);
        } else {
            const char *op = NULL;
            for (size_t i = 0; i < sizeof ops / sizeof ops[0] && !op; i++)
                if (strncmp(p, ops[i], strlen(ops[i])) == 0)
                    op = ops[i];
            if (!op)
                return pb_fail(lx->err, PB_EFORMAT, "template line %d: unexpected character '%c'", lx->line,
                               isprint((unsigned char)*p) ? *p : '?');
            struct token t = {.kind = TK_OP, .line = lx->line, .text = tstr_new(lx->a, op, strlen(op))};
            if (!t.text)
                return pb_fail(lx->err, PB_ENOMEM, "out of memory lexing the template");
            lx->pos += strlen(op);
            if (strchr("([{", op[0]))
                open++;
            else if (strchr(")]}", op[0]) && open > 0)
                open--;
            rc = push(lx, t);
        }
        if (rc)
            return rc;
    }
}

/* After a tag: "-" eats all following whitespace; a block or comment tag
 * without "+" eats one newline. Returns whether the text that follows
 * starts a line (for lstrip_blocks). */
static bool after_tag(struct lexer *lx, char strip, bool is_block)
{
    bool ate_newline = false;
    if (strip == '-') {
        while (lx->pos < lx->n && is_space(lx->s[lx->pos])) {
            ate_newline = lx->s[lx->pos] == '\n';
            lx->line += ate_newline;
            lx->pos++;
        }
    } else if (is_block && strip != '+' && lx->pos < lx->n && lx->s[lx->pos] == '\n') {
        lx->pos++;
        lx->line++;
        ate_newline = true;
    }
    return ate_newline;
}

/* The text before a tag, with its left whitespace control applied. */
static size_t text_before_tag(const char *text, size_t n, char mod, bool is_block, bool line_start)
{
    if (mod == '-') {
        while (n > 0 && is_space(text[n - 1]))
            n--;
        return n;
    }
    if (!is_block || mod == '+')
        return n;
    /* lstrip_blocks: only blanks between the line start and the tag */
    size_t l = n;
    while (l > 0 && text[l - 1] != '\n')
        l--;
    if (l == 0 && !line_start)
        return n;
    for (size_t i = l; i < n; i++)
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\v' && text[i] != '\f')
            return n;
    return l;
}

/* {% raw %} ... {% endraw %}: text taken as it is. lx->pos is just after
 * the raw tag. */
static int lex_raw(struct lexer *lx, int line, bool *line_start)
{
    for (size_t i = lx->pos; i + 1 < lx->n; i++) {
        if (lx->s[i] != '{' || lx->s[i + 1] != '%')
            continue;
        size_t j = i + 2;
        char lmod = 0;
        if (j < lx->n && (lx->s[j] == '-' || lx->s[j] == '+'))
            lmod = lx->s[j++];
        while (j < lx->n && is_space(lx->s[j]))
            j++;
        if (lx->n - j < 6 || strncmp(lx->s + j, "endraw", 6) != 0)
            continue;
        j += 6;
        while (j < lx->n && is_space(lx->s[j]))
            j++;
        char rmod = 0;
        if (j < lx->n && (lx->s[j] == '-' || lx->s[j] == '+'))
            rmod = lx->s[j++];
        if (lx->n - j < 2 || lx->s[j] != '%' || lx->s[j + 1] != '}')
            continue;
        size_t n = text_before_tag(lx->s + lx->pos, i - lx->pos, lmod, true, false);
        int rc = push_text(lx, lx->s + lx->pos, n, line);
        lx->line += count_lines(lx->s + lx->pos, j + 2 - lx->pos);
        lx->pos = j + 2;
        *line_start = after_tag(lx, rmod, true);
        return rc;
    }
    return pb_fail(lx->err, PB_EFORMAT, "template line %d: {%% raw %%} without {%% endraw %%}", line);
}

int tmpl_lex(struct arena *a, const char *src, size_t len, struct token **out, size_t *n_out, pb_err *err)
{
    struct lexer lx = {.a = a, .line = 1, .err = err};
    *out = NULL;
    *n_out = 0;
    /* normalize newlines; drop one trailing newline */
    char *s = arena_alloc(a, len + 1);
    if (!s)
        return pb_fail(err, PB_ENOMEM, "out of memory lexing the template");
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n > 0 && s[n - 1] == '\n')
        n--;
    lx.s = s;
    lx.n = n;

    bool line_start = true;
    int rc = PB_OK;
    while (rc == PB_OK && lx.pos < lx.n) {
        /* the next tag */
        size_t q = lx.pos;
        while (q + 1 < lx.n && !(lx.s[q] == '{' && (lx.s[q + 1] == '{' || lx.s[q + 1] == '%' || lx.s[q + 1] == '#')))
            q++;
        if (q + 1 >= lx.n) {
            rc = push_text(&lx, lx.s + lx.pos, lx.n - lx.pos, lx.line);
            break;
        }
        char kind = lx.s[q + 1];
        char mod = q + 2 < lx.n ? lx.s[q + 2] : 0;
        if (mod != '-' && mod != '+')
            mod = 0;
        bool is_block = kind != '{';
        size_t keep = text_before_tag(lx.s + lx.pos, q - lx.pos, mod, is_block, line_start);
        int text_line = lx.line;
        lx.line += count_lines(lx.s + lx.pos, q - lx.pos);
        if ((rc = push_text(&lx, lx.s + lx.pos, keep, text_line)))
            break;
        lx.pos = q + 2 + (mod ? 1 : 0);
        int tag_line = lx.line;

        if (kind == '#') {
            const char *end = NULL;
            for (size_t i = lx.pos; i + 1 < lx.n && !end; i++)
                if (lx.s[i] == '#' && lx.s[i + 1] == '}')
                    end = lx.s + i;
            if (!end) {
                rc = pb_fail(err, PB_EFORMAT, "template line %d: comment is not closed (expected '#}')", tag_line);
                break;
            }
            char strip = end > lx.s + lx.pos && (end[-1] == '-' || end[-1] == '+') ? end[-1] : 0;
            lx.line += count_lines(lx.s + lx.pos, (size_t)(end - (lx.s + lx.pos)));
            lx.pos = (size_t)(end - lx.s) + 2;
            line_start = after_tag(&lx, strip, true);
            continue;
        }

        size_t first = lx.n_toks;
        if ((rc = push(&lx, (struct token){.kind = kind == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, .line = tag_line})))
            break;
        char strip = 0;
        if ((rc = lex_tag(&lx, kind == '{' ? '}' : '%', &strip)))
            break;
        if ((rc = push(&lx, (struct token){.kind = kind == '{' ? TK_VAR_END : TK_BLOCK_END, .line = lx.line})))
            break;
        /* {% raw %}: the tokens of the tag go, its text comes verbatim;
         * trim_blocks does not apply after it (Jinja2), only "-%}" does */
        if (is_block && lx.n_toks == first + 3 && lx.toks[first + 1].kind == TK_NAME &&
            strcmp(lx.toks[first + 1].text->s, "raw") == 0) {
            lx.n_toks = first;
            after_tag(&lx, strip, false);
            rc = lex_raw(&lx, tag_line, &line_start);
            continue;
        }
        line_start = after_tag(&lx, strip, is_block);
    }
    if (rc == PB_OK)
        rc = push(&lx, (struct token){.kind = TK_EOF, .line = lx.line});
    if (rc) {
        free(lx.toks);
        return rc;
    }
    *out = lx.toks;
    *n_out = lx.n_toks;
    return PB_OK;
}
