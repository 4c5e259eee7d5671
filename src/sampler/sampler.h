/* Choosing the next token from logits: the sampler behind the public
 * parameters (plumb/sampler.h). */
#ifndef PLUMB_SAMPLER_SAMPLER_H
#define PLUMB_SAMPLER_SAMPLER_H

#include "base/err.h"
#include "plumb/sampler.h"

#include <stdbool.h>
#include <stdint.h>

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
/* Draws as sampler_sample does, but a token counts only when take(user,
 * id) takes it; at most `tries` tokens are offered. Returns the first
 * token taken, or -1 when none was (the caller then samples under a mask)
 * or when the sampling has cut-offs (top-k, top-p, min-p: they would cut
 * differently under a mask), which this never draws for.
 * Greedy offers the candidates best first, so the one taken is the best
 * the mask would allow. Plain temperature draws again from the same
 * distribution after a refusal (rejection sampling): a token taken has
 * the distribution sampling under the mask has. Either way the choice
 * equals sampler_sample_allowed's over the tokens take() accepts, without
 * computing a mask over the vocabulary. */
int32_t sampler_sample_checked(struct sampler *s, const float *logits, int tries, bool (*take)(void *user, int32_t id),
                               void *user);
/* Whether sampler_sample_checked draws for these parameters. */
bool sampler_can_check(const struct sampler_params *p);

/* Index of the highest value, the lowest index on ties. */
int32_t sampler_argmax(const float *logits, int32_t n);

#endif
