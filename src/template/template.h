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
#include <time.h>

struct tmpl;

/* Parses a template. */
int tmpl_parse(const char *src, size_t len, struct tmpl **out, pb_err *err);
void tmpl_free(struct tmpl *t);

struct tmpl_opts {
    time_t now;          /* the clock strftime_now reads (UTC); 0: now */
    size_t max_output;   /* 0: 16 MiB */
};

/* Renders with the variables of the JSON object ctx (messages,
 * add_generation_prompt, bos_token, tools, ...). *out is allocated and
 * NUL-terminated. A raise_exception() gives PB_EINVAL with its message. */
int tmpl_render(const struct tmpl *t, const json_t *ctx, const struct tmpl_opts *opts, char **out, size_t *out_len,
                pb_err *err);

#endif
