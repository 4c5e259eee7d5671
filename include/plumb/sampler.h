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

#endif
