/* Choosing the next token from logits.
 *
 * Order of the steps, as llama.cpp's default chain: repetition, presence
 * and frequency penalties, then (unless greedy) top-k, top-p and min-p on the unscaled
 * distribution, temperature, and a draw from what remains.
 * temp <= 0 means greedy: the highest logit, ties to the lowest id.
 */
#ifndef PLUMB_SAMPLER_SAMPLER_H
#define PLUMB_SAMPLER_SAMPLER_H

#include "base/err.h"

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

struct sampler;

int sampler_create(const struct sampler_params *p, int32_t n_vocab, struct sampler **out, pb_err *err);
void sampler_free(struct sampler *s);
/* Records a token (prompt or generated) for the repetition penalty. */
void sampler_accept(struct sampler *s, int32_t id);
/* Forgets the history (the RNG state continues). */
void sampler_reset(struct sampler *s);
/* Picks a token from n_vocab logits (not modified). */
int32_t sampler_sample(struct sampler *s, const float *logits);
/* The same among the tokens whose allowed[id] is non-zero (a grammar's
 * choice); -1 when none is. */
int32_t sampler_sample_allowed(struct sampler *s, const float *logits, const uint8_t *allowed);

/* Index of the highest value, the lowest index on ties. */
int32_t sampler_argmax(const float *logits, int32_t n);

#endif
