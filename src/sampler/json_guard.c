/* A prefix checker for one JSON object, byte by byte (json_guard.h). */
#include "sampler/json_guard.h"

#include <string.h>

enum {
    S_TOP,          /* nothing yet: only '{' */
    S_VALUE,        /* a value (after ':' or ',' in an array) */
    S_ARR_FIRST,    /* after '[': a value or ']' */
    S_OBJ_FIRST,    /* after '{': a key or '}' */
    S_OBJ_KEY,      /* after ',' in an object: a key */
    S_COLON,        /* after a key */
    S_AFTER,        /* after a value in a container: ',' or its closing bracket */
    S_STRING,       /* inside a string; sub: 1 for a key */
    S_ESC,          /* after a backslash */
    S_HEX,          /* \u and sub & 7 hex digits so far (sub & 8: a key) */
    S_NUM_MINUS,    /* '-': a digit */
    S_NUM_ZERO,     /* a leading 0: '.', 'e', or the end */
    S_NUM_INT,      /* integer digits */
    S_NUM_DOT,      /* '.': a digit */
    S_NUM_FRAC,     /* fraction digits */
    S_NUM_E,        /* 'e': a sign or a digit */
    S_NUM_ESIGN,    /* exponent sign: a digit */
    S_NUM_EXP,      /* exponent digits */
    S_LITERAL,      /* true / false / null; sub: literal * 8 + letters matched */
    S_DONE,         /* the object is closed */
};

static const char *const literals[3] = {"true", "false", "null"};

void json_guard_init(struct json_guard *g)
{
    memset(g, 0, sizeof *g);
    g->state = S_TOP;
}

bool json_guard_complete(const struct json_guard *g)
{
    return g->done;
}

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A value has ended inside the current container (or closed the top one). */
static void value_ended(struct json_guard *g)
{
    g->state = g->depth == 0 ? S_DONE : S_AFTER;
    g->done = g->depth == 0;
}

static bool push(struct json_guard *g, unsigned char open)
{
    if (g->depth >= JSON_GUARD_MAX_DEPTH)
        return false;
    g->stack[g->depth++] = open;
    g->state = open == '{' ? S_OBJ_FIRST : S_ARR_FIRST;
    return true;
}

/* The start of a value (after whitespace was skipped). */
static bool value_start(struct json_guard *g, unsigned char c)
{
    switch (c) {
    case '{':
    case '[': return push(g, c);
    case '"': g->state = S_STRING; g->sub = 0; return true;
    case '-': g->state = S_NUM_MINUS; return true;
    case '0': g->state = S_NUM_ZERO; return true;
    case 't': g->state = S_LITERAL; g->sub = 0 * 8 + 1; return true;
    case 'f': g->state = S_LITERAL; g->sub = 1 * 8 + 1; return true;
    case 'n': g->state = S_LITERAL; g->sub = 2 * 8 + 1; return true;
    default:
        if (c >= '1' && c <= '9') {
            g->state = S_NUM_INT;
            return true;
        }
        return false;
    }
}

/* A closing bracket or a comma after a value. */
static bool after_value(struct json_guard *g, unsigned char c)
{
    unsigned char open = g->stack[g->depth - 1];
    if (c == ',') {
        g->state = open == '{' ? S_OBJ_KEY : S_VALUE;
        return true;
    }
    if ((c == '}' && open == '{') || (c == ']' && open == '[')) {
        g->depth--;
        value_ended(g);
        return true;
    }
    return false;
}

/* One byte inside a string (not after a backslash). */
static bool string_byte(struct json_guard *g, unsigned char c)
{
    if (g->utf8) {
        if (c < g->utf8_lo || c > g->utf8_hi)
            return false;
        g->utf8--;
        g->utf8_lo = 0x80;
        g->utf8_hi = 0xBF;
        return true;
    }
    if (g->low_next && c != '\\')
        return false; /* a high surrogate's escape without its low half */
    if (c == '"') {
        if (g->sub) { /* a key: its colon next */
            g->state = S_COLON;
        } else {
            value_ended(g);
        }
        return true;
    }
    if (c == '\\') {
        g->state = S_ESC;
        return true;
    }
    if (c < 0x20)
        return false; /* control characters must be escaped */
    if (c < 0x80)
        return true;
    /* UTF-8 lead bytes and the range of the byte after each (no overlong
     * forms, no surrogates, nothing above U+10FFFF) */
    g->utf8_lo = 0x80;
    g->utf8_hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        g->utf8 = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        g->utf8 = 2;
        if (c == 0xE0)
            g->utf8_lo = 0xA0;
        if (c == 0xED)
            g->utf8_hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        g->utf8 = 3;
        if (c == 0xF0)
            g->utf8_lo = 0x90;
        if (c == 0xF4)
            g->utf8_hi = 0x8F;
    } else
        return false;
    return true;
}

static bool feed_byte(struct json_guard *g, unsigned char c)
{
    /* whitespace between tokens, counted */
    switch (g->state) {
    case S_TOP: case S_VALUE: case S_ARR_FIRST: case S_OBJ_FIRST: case S_OBJ_KEY: case S_COLON: case S_AFTER:
    case S_DONE:
        if (is_ws(c))
            return ++g->ws <= JSON_GUARD_MAX_WS;
        g->ws = 0;
        break;
    default: break;
    }
    switch (g->state) {
    case S_TOP:
        return c == '{' && push(g, c);
    case S_VALUE: return value_start(g, c);
    case S_ARR_FIRST:
        if (c == ']') {
            g->depth--;
            value_ended(g);
            return true;
        }
        return value_start(g, c);
    case S_OBJ_FIRST:
        if (c == '}') {
            g->depth--;
            value_ended(g);
            return true;
        }
        __attribute__((fallthrough)); /* a key */
    case S_OBJ_KEY:
        if (c != '"')
            return false;
        g->state = S_STRING;
        g->sub = 1;
        return true;
    case S_COLON:
        if (c != ':')
            return false;
        g->state = S_VALUE;
        return true;
    case S_AFTER: return after_value(g, c);
    case S_STRING: return string_byte(g, c);
    case S_ESC:
        if (c == 'u') {
            g->state = S_HEX;
            g->sub = (uint8_t)(g->sub ? 8 : 0);
            g->hex = 0;
            return true;
        }
        if (g->low_next || !strchr("\"\\/bfnrt", c) || c == 0)
            return false;
        g->state = S_STRING;
        return true;
    case S_HEX:
        if (!is_hex(c))
            return false;
        if ((g->sub & 7) < 2)
            g->hex = (uint8_t)(g->hex * 16 + (is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10));
        if ((g->sub & 7) == 1) { /* the first two digits say whether it is a surrogate */
            const bool high = g->hex >= 0xD8 && g->hex <= 0xDB, low = g->hex >= 0xDC && g->hex <= 0xDF;
            if (low != g->low_next)
                return false; /* a lone low half, or a high half not followed by one */
            g->low_next = high;
        }
        if ((g->sub & 7) == 3) {
            g->state = S_STRING;
            g->sub = (uint8_t)((g->sub & 8) ? 1 : 0);
        } else {
            g->sub++;
        }
        return true;
    case S_NUM_MINUS:
        if (c == '0')
            g->state = S_NUM_ZERO;
        else if (c >= '1' && c <= '9')
            g->state = S_NUM_INT;
        else
            return false;
        return true;
    case S_NUM_ZERO:
    case S_NUM_INT:
    case S_NUM_FRAC:
    case S_NUM_EXP:
        if (is_digit(c) && g->state != S_NUM_ZERO)
            return true;
        if (c == '.' && g->state != S_NUM_FRAC && g->state != S_NUM_EXP) {
            g->state = S_NUM_DOT;
            return true;
        }
        if ((c == 'e' || c == 'E') && g->state != S_NUM_EXP) {
            g->state = S_NUM_E;
            return true;
        }
        /* the number ended: this byte follows it */
        value_ended(g);
        return feed_byte(g, c);
    case S_NUM_DOT:
        if (!is_digit(c))
            return false;
        g->state = S_NUM_FRAC;
        return true;
    case S_NUM_E:
        if (c == '+' || c == '-') {
            g->state = S_NUM_ESIGN;
            return true;
        }
        __attribute__((fallthrough));
    case S_NUM_ESIGN:
        if (!is_digit(c))
            return false;
        g->state = S_NUM_EXP;
        return true;
    case S_LITERAL: {
        const char *lit = literals[g->sub / 8];
        unsigned at = g->sub % 8;
        if ((unsigned char)lit[at] != c)
            return false;
        if (lit[at + 1] == '\0')
            value_ended(g);
        else
            g->sub++;
        return true;
    }
    case S_DONE: return false;
    default: return false;
    }
}

bool json_guard_feed(struct json_guard *g, const char *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!feed_byte(g, (unsigned char)bytes[i]))
            return false;
    return true;
}
