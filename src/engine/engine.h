/* The engine: a loaded model with its tokenizer and one sequence context,
 * and the generation loop (prompt, then sample / evaluate token by token)
 * that the CLI (and later the server's scheduler) drive.
 */
#ifndef PLUMB_ENGINE_ENGINE_H
#define PLUMB_ENGINE_ENGINE_H

#include "base/err.h"
#include "model/model.h"
#include "sampler/sampler.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct engine_params {
    int64_t n_ctx;  /* 0: the model's training context, capped at 4096 */
    int n_batch;    /* 0: 512 */
    int n_threads;  /* 0: all CPUs this process may use */
    int kv_type;    /* enum kv_type; 0 is F16 */
};

struct engine;

int engine_open(const char *path, const struct engine_params *p, struct engine **out, pb_err *err);
void engine_free(struct engine *e);

const struct model *engine_model(const struct engine *e);
const struct tokenizer *engine_tokenizer(const struct engine *e);
struct model_ctx *engine_ctx(struct engine *e);
/* Drops the cached sequence (the next prompt is evaluated in full). */
void engine_forget(struct engine *e);
/* Seconds engine_open took. */
double engine_load_seconds(const struct engine *e);
/* The context size in use and whether it exceeds the training context. */
int64_t engine_n_ctx(const struct engine *e);

struct gen_params {
    struct sampler_params sampling;
    int n_predict;   /* tokens to generate; < 0: until end of generation or a full context */
    int top_k_report;/* > 0: report the K highest logits of every step */
    bool ignore_eog; /* keep going past end-of-generation tokens */
};

/* One generated token, given to the callback. logits are the raw
 * n_vocab logits it was drawn from (valid during the call); top_* hold
 * top_k_report of them, highest first. */
struct gen_step {
    int index; /* 0 for the token right after the prompt */
    int32_t id;
    const char *piece;
    size_t piece_len;
    const float *logits;
    int32_t n_vocab;
    const int32_t *top_ids;
    const float *top_logits;
    int n_top;
};

/* Returning non-zero stops generation (stop reason GEN_STOP_CALLER). */
typedef int (*gen_callback)(void *user, const struct gen_step *step);

enum gen_stop {
    GEN_STOP_EOG,    /* an end-of-generation token was drawn (not reported) */
    GEN_STOP_LENGTH, /* n_predict tokens were generated */
    GEN_STOP_CONTEXT,/* the context is full */
    GEN_STOP_CALLER,
};

struct gen_stats {
    int n_prompt, n_gen;
    int n_reused;           /* prompt tokens whose cache was reused */
    double t_prompt, t_gen; /* seconds evaluating the prompt / generating */
    enum gen_stop stop;
};

/* Generates: evaluates the prompt (n_prompt >= 1 ids), then samples and
 * evaluates one token at a time. The longest prefix the prompt shares
 * with what the context already holds is not evaluated again. */
int engine_generate(struct engine *e, const int32_t *prompt, size_t n_prompt, const struct gen_params *gp,
                    gen_callback cb, void *user, struct gen_stats *st, pb_err *err);

#endif
