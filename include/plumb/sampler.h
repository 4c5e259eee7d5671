/* How the next token is chosen from the logits (the parameters every
 * generation request carries).
 *
 * Order of the steps, as llama.cpp's default chain: repetition, presence
 * and frequency penalties, then (unless greedy) top-k, top-p and min-p on
 * the unscaled distribution, temperature, and a draw from what remains.
 * temp <= 0 means greedy: the highest logit, ties to the lowest id.
 */
#ifndef PLUMB_SAMPLER_H
#define PLUMB_SAMPLER_H

#include "plumb/base.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sampler_params {
    float temp;            /* <= 0: greedy */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int32_t repeat_last_n; /* how many recent tokens the penalties look at */
    float presence_penalty;  /* OpenAI's: logit -= this once for a token seen in the window (0: off) */
    float frequency_penalty; /* OpenAI's: logit -= this x the times it was seen (0: off) */
    uint64_t seed;
};

/* llama.cpp's defaults: temp 0.8, top-k 40, top-p 0.95, min-p 0.05,
 * no repetition penalty (window 64). */
struct sampler_params sampler_defaults(void);

/* ---- constrained output ----
 * A request may carry a grammar (GBNF text, the notation llama.cpp's
 * "grammar" field takes; src/sampler/grammar.h describes it): only tokens
 * that keep the output a prefix of one of its sentences are drawn, and
 * end of generation only once the output is whole. */

/* Compiles gbnf to check it (the message names the line, column and what
 * is wrong). */
int sampler_grammar_check(const char *gbnf, size_t len, pb_err *err);

/* The GBNF of one JSON object (JSON mode: response_format json_object). */
const char *sampler_json_grammar(void);

/* A JSON Schema as GBNF (*gbnf allocated, free() it); a keyword that is
 * not supported, or bad values, are an error naming it and where it is
 * (src/sampler/schema.c lists what is supported and what the grammar
 * writes). */
int sampler_schema_grammar(const json_t *schema, char **gbnf, pb_err *err);

/* How a model writes tool calls, for sampler_tools_grammar: the calls
 * between open and close, separated by sep, each one call_open, the
 * function's name, call_mid, its arguments (a JSON object following the
 * function's parameters schema) and call_close. */
struct sampler_call_format {
    const char *open, *sep, *close;
    const char *call_open, *call_mid, *call_close;
};

/* The grammar of tool calls: tools is an array of {"name", "parameters"
 * (a JSON Schema, may be absent)}; only (may be NULL) restricts the calls
 * to that function; several allows more than one call. */
int sampler_tools_grammar(const json_t *tools, const char *only, const struct sampler_call_format *f, bool several,
                          char **gbnf, pb_err *err);

#endif
