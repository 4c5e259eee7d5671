/* Choosing the next token from logits: the sampler behind the public
 * parameters (plumb/sampler.h). */
#ifndef PLUMB_SAMPLER_SAMPLER_H
#define PLUMB_SAMPLER_SAMPLER_H

#include "base/err.h"
#include "plumb/sampler.h"

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

/* Index of the highest value, the lowest index on ties. */
int32_t sampler_argmax(const float *logits, int32_t n);

#endif
