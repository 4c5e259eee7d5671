/* Small deterministic random numbers: splitmix64 seeding a xoshiro256**
 * generator. Used for sampling and for synthesizing weights, where the same
 * seed must give the same file on every machine, so no libc rand(). */
#ifndef PLUMB_BASE_RNG_H
#define PLUMB_BASE_RNG_H

#include <stdint.h>

struct rng {
    uint64_t s[4];
    int has_spare;   /* Box-Muller gives normals in pairs */
    float spare;
};

void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_u64(struct rng *r);
/* Uniform in [0, 1), 24 bits of precision. */
float rng_uniform(struct rng *r);
/* Standard normal (mean 0, deviation 1). */
float rng_normal(struct rng *r);
/* 64-bit FNV-1a of a string, to derive per-tensor seeds from names. */
uint64_t rng_hash_str(const char *s);

#endif
