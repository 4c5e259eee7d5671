/* JSON mode: a byte-level check that text so far can still become one
 * JSON object (RFC 8259), used to restrict sampling to tokens that keep
 * it so (the OpenAI API's response_format {"type": "json_object"}).
 *
 * The state is a small value (copied to try a token's bytes without
 * committing them): a stack of open containers, and where the lexer is
 * inside a string, number or literal. Runs of whitespace between tokens
 * are capped (JSON_GUARD_MAX_WS) so that a model cannot stall in blank
 * space; nesting deeper than JSON_GUARD_MAX_DEPTH is refused. Strings
 * hold valid UTF-8, and \u escapes of UTF-16 surrogates only in pairs
 * (strict parsers refuse a lone one).
 */
#ifndef PLUMB_SAMPLER_JSON_GUARD_H
#define PLUMB_SAMPLER_JSON_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_GUARD_MAX_DEPTH 64
#define JSON_GUARD_MAX_WS 16

struct json_guard {
    uint8_t stack[JSON_GUARD_MAX_DEPTH]; /* '{' or '[' per open container */
    uint8_t depth;
    uint8_t state;   /* enum in json_guard.c */
    uint8_t sub;     /* progress inside the state (literal letters, \u digits) */
    uint8_t utf8;    /* continuation bytes still expected in a string */
    uint8_t utf8_lo, utf8_hi; /* range of the next continuation byte */
    uint8_t hex;     /* the first two hex digits of the \u escape being read */
    bool low_next;   /* a \uD800-\uDBFF escape ended: a \uDC00-\uDFFF escape must follow */
    uint8_t ws;      /* whitespace bytes in the current run */
    bool done;       /* the top-level object is closed */
};

/* The state before any text (expects an object). */
void json_guard_init(struct json_guard *g);
/* Feeds n bytes; false (g then undefined) when they cannot continue a
 * JSON object. */
bool json_guard_feed(struct json_guard *g, const char *bytes, size_t n);
/* True when the text so far is one complete JSON object. */
bool json_guard_complete(const struct json_guard *g);

#endif
