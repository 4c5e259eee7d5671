/* Chat formatting: turning a conversation (a JSON array of {role,
 * content} messages) into the prompt text a model was trained on, with
 * the model's own Jinja template or a named built-in format.
 *
 * When the model's template is missing or cannot be parsed, chat_open
 * falls back to the built-in format its special tokens suggest (chatml
 * when nothing does) and says so in *notice.
 */
#ifndef PLUMB_CHAT_CHAT_H
#define PLUMB_CHAT_CHAT_H

#include "base/err.h"
#include "gguf/gguf.h"
#include "template/template.h"
#include "tokenizer/tokenizer.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct chat;

/* Names of the built-in formats, for help and errors. */
const char *chat_format_names(void);
bool chat_format_known(const char *name);

/* format: NULL for the model's template, or a built-in name. notice (may
 * be NULL) receives a message when a fallback was taken, else "". */
int chat_open(const struct gguf_file *f, const struct tokenizer *tok, const char *format, struct chat **out,
              char *notice, size_t notice_size, pb_err *err);
void chat_free(struct chat *c);

/* "model template" or the built-in format's name. */
const char *chat_name(const struct chat *c);

/* Renders messages (extra: more template variables, may be NULL). out
 * holds the text and which bytes came from the messages (user text);
 * free it with tmpl_output_free. */
int chat_render(const struct chat *c, const json_t *messages, bool add_generation_prompt, const json_t *extra,
                struct tmpl_output *out, pb_err *err);

/* Renders and tokenizes (special tokens parsed; BOS added unless the
 * rendered text already starts with it). *ids is allocated. */
int chat_tokenize(const struct chat *c, const struct tokenizer *tok, const json_t *messages,
                  bool add_generation_prompt, int32_t **ids, size_t *n_ids, pb_err *err);

#endif
