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
/* The same with tools (an array, may be NULL) for the template's "tools". */
int chat_render_tools(const struct chat *c, const json_t *messages, const json_t *tools, bool add_generation_prompt,
                      const json_t *extra, struct tmpl_output *out, pb_err *err);


/* ---- template variables ---- */

/* Per-request switches that chat templates read. */
struct chat_opts {
    bool no_thinking;             /* enable_thinking = false (Qwen3, DeepSeek-R1 distills, SmolLM3) */
    const json_t *tools;          /* OpenAI's tools for the template (NULL: none) */
    const char *reasoning_effort; /* gpt-oss's "low", "medium" or "high"; NULL: the template's default */
};

/* The template variables opts set, as a JSON object for chat_render's
 * extra (a new reference; NULL when out of memory). enable_thinking is
 * always set, true unless no_thinking, as llama.cpp's chat layer does:
 * left undefined, DeepSeek-R1's template closes the thinking block. */
json_t *chat_opts_vars(const struct chat_opts *opts);

/* ---- reasoning ----
 * Reasoning models write their thinking before the answer: Qwen3, QwQ,
 * DeepSeek-R1 and SmolLM3 between <think> and </think> (DeepSeek-R1's and
 * Qwen3's templates may open the block in the prompt), gpt-oss in its
 * harmony "analysis" channel, the answer in "final". A chat_reasoning
 * splits the generated text as it streams in, piece by piece (markers may
 * be cut anywhere), into reasoning and answer, without the markup: the
 * text around a marker that could still be completed is held back until
 * the next piece or chat_reasoning_finish. Thinking is trimmed of the
 * newlines around it, the answer of those that follow </think>. */

enum chat_reasoning_style {
    CHAT_REASONING_NONE,    /* everything is answer */
    CHAT_REASONING_THINK,   /* <think> ... </think> */
    CHAT_REASONING_HARMONY, /* <|channel|>analysis<|message|> ... <|end|> */
};

enum chat_part {
    CHAT_PART_REASONING,
    CHAT_PART_ANSWER,
};

/* Receives the pieces, in order (a piece is never empty). */
typedef void (*chat_part_fn)(void *user, enum chat_part part, const char *text, size_t len);

struct chat_reasoning;

/* The reasoning markup of the chat's template or format. */
enum chat_reasoning_style chat_reasoning_style(const struct chat *c);

/* How an answer to a rendered prompt starts: the chat's reasoning markup,
 * and whether the prompt opened a thinking block it did not close. */
struct chat_start {
    enum chat_reasoning_style style;
    bool in_reasoning;
};
void chat_start_of(const struct chat *c, const char *prompt, size_t prompt_len, struct chat_start *out);

/* Renders (with opts' variables; opts may be NULL) and tokenizes (special
 * tokens parsed; BOS added unless the rendered text already starts with
 * it). *ids is allocated; start (may be NULL) says how the answer starts. */
int chat_tokenize(const struct chat *c, const struct tokenizer *tok, const json_t *messages,
                  bool add_generation_prompt, const struct chat_opts *opts, int32_t **ids, size_t *n_ids,
                  struct chat_start *start, pb_err *err);

/* A splitter for the output that follows prompt (the rendered prompt
 * text, as chat_render made it), for the chat's template or format: the
 * style is that of the template's markup, and the output starts inside a
 * thinking block when the prompt opened one and did not close it. */
int chat_reasoning_open(const struct chat *c, const char *prompt, size_t prompt_len, struct chat_reasoning **out,
                        pb_err *err);
/* A splitter of a given style; in_reasoning: the output starts inside a
 * thinking block. */
int chat_reasoning_create(enum chat_reasoning_style style, bool in_reasoning, struct chat_reasoning **out,
                          pb_err *err);
/* Feeds len bytes of generated text (any split, UTF-8 or not). */
void chat_reasoning_feed(struct chat_reasoning *r, const char *text, size_t len, chat_part_fn fn, void *user);
/* The end of the output: whatever was held back is given out. */
void chat_reasoning_finish(struct chat_reasoning *r, chat_part_fn fn, void *user);
void chat_reasoning_free(struct chat_reasoning *r);

/* ---- tool calls ----
 * How a template's model writes tool calls (chosen by the markers its
 * source holds), and whether the template renders the tools itself. */
enum chat_tool_style {
    CHAT_TOOLS_GENERIC, /* {"tool_calls": [{"name", "arguments"}]} (templates without tools) */
    CHAT_TOOLS_HERMES,  /* Qwen 2.5/3, Hermes: <tool_call>{"name", "arguments"}</tool_call> */
    CHAT_TOOLS_LLAMA3,  /* Llama 3.x: [<|python_tag|>]{"name", "parameters"} */
    CHAT_TOOLS_MISTRAL, /* [TOOL_CALLS][{"name", "arguments"}] */
    CHAT_TOOLS_HARMONY, /* gpt-oss: <|channel|>commentary to=functions.NAME ...<|message|>{args} */
};

enum chat_tool_style chat_tool_style_of(const char *src, size_t len, bool *knows_tools);
const char *chat_tool_style_name(enum chat_tool_style s);
/* The chat's style and whether its template renders tools. */
enum chat_tool_style chat_tool_style(const struct chat *c, bool *knows_tools);

/* messages made ready for a template: assistant tool_calls' arguments as
 * objects (templates write them with tojson), null contents as "". For a
 * template that knows no tools (knows_tools false) and tools offered:
 * the tools and the generic way to call them in the system message, and
 * earlier calls and their results written as text. A new reference, NULL
 * when out of memory. Mistral's templates get call ids of the 9
 * alphanumeric characters they insist on. */
json_t *chat_tool_messages(const json_t *messages, const json_t *tools, bool knows_tools, enum chat_tool_style style);

/* The grammar of calls to the tools (OpenAI's [{"type": "function",
 * "function": {"name", "parameters"}}]) in the style's format; only: one
 * function (NULL: any); parallel: several calls where the format can. */
int chat_tool_grammar(enum chat_tool_style style, const json_t *tools, const char *only, bool parallel, char **gbnf,
                      pb_err *err);

/* Reads an answer: when it holds calls to offered tools in the style's
 * format (or a generic JSON form), *calls is a new array of {"name",
 * "arguments" (JSON text)} and *content_len the length of the text before
 * them; else *calls is NULL. PB_ENOMEM only. */
int chat_tool_parse(enum chat_tool_style style, const json_t *tools, const char *text, size_t len, json_t **calls,
                    size_t *content_len);

/* While an answer streams: how many of its leading bytes are surely text
 * and not a part of a call (the rest is held back). */
size_t chat_tool_safe(enum chat_tool_style style, const char *text, size_t len);

#endif
