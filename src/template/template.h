/* Chat templates: a Jinja2 subset interpreter.
 *
 * Renders the tokenizer.chat_template of GGUF files the way Hugging Face
 * transformers does (Jinja2 with trim_blocks and lstrip_blocks, loop
 * controls, tojson without HTML escaping, raise_exception, strftime_now).
 *
 * Supported: text, {{ }}, {% %}, {# #} with whitespace control (- and +);
 * if/elif/else, for (tuple targets, `if` filter, else, loop.*, break,
 * continue), set (names, namespace attributes, blocks), macro, raw,
 * generation; literals, lists, dicts, attribute and item access, slicing,
 * arithmetic, comparison, in, is-tests, filters, string/list/dict methods
 * and the globals range, namespace, dict, raise_exception, strftime_now.
 *
 * Errors (syntax and run time) name the template line and the construct.
 * Rendering is bounded (output size, loop iterations, recursion), so no
 * template can hang or exhaust memory.
 */
#ifndef PLUMB_TEMPLATE_TEMPLATE_H
#define PLUMB_TEMPLATE_TEMPLATE_H

#include "base/err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct tmpl;

/* Parses a template. */
int tmpl_parse(const char *src, size_t len, struct tmpl **out, pb_err *err);
void tmpl_free(struct tmpl *t);

struct tmpl_opts {
    time_t now;          /* the clock strftime_now reads (UTC); 0: now */
    size_t max_output;   /* 0: 16 MiB */
};

/* The template's variables, two JSON objects (either may be NULL).
 * plain: values the program sets (add_generation_prompt, bos_token, ...).
 * user: values that carry user text (messages, tools, documents): every
 * byte of their strings stays marked as user text through the render. */
struct tmpl_vars {
    const json_t *plain;
    const json_t *user;
};

/* A rendering: text (NUL-terminated, len bytes) and, for each byte, user
 * (1 where it came from user text, 0 where the template or a plain
 * variable wrote it) so that a tokenizer can refuse to read special tokens
 * in what a user typed. */
struct tmpl_output {
    char *text;
    uint8_t *user;
    size_t len;
};

/* Renders the template. A raise_exception() gives PB_EINVAL with its
 * message. Free the output with tmpl_output_free. */
int tmpl_render(const struct tmpl *t, const struct tmpl_vars *vars, const struct tmpl_opts *opts,
                struct tmpl_output *out, pb_err *err);
void tmpl_output_free(struct tmpl_output *out);

#endif
