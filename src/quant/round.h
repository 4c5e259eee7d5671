/* Float-to-integer rounding for quantizers that stays defined for any
 * input: NaN, infinities and out-of-range values clamp instead of hitting
 * the undefined float-to-int conversion. Model files are untrusted, so a
 * NaN in an F32 tensor must not become undefined behaviour. */
#ifndef PLUMB_QUANT_ROUND_H
#define PLUMB_QUANT_ROUND_H

#include <math.h>

static inline float pb_clampf(float v, int lo, int hi)
{
    if (v != v)
        return lo > 0 ? (float)lo : hi < 0 ? (float)hi : 0.0f;
    if (v < (float)lo)
        return (float)lo;
    if (v > (float)hi)
        return (float)hi;
    return v;
}

/* floor(v), clamped to [lo, hi]. */
static inline int pb_floor_clamp(float v, int lo, int hi)
{
    return (int)floorf(pb_clampf(v, lo, hi));
}

/* round half away from zero, clamped to [lo, hi]. */
static inline int pb_round_clamp(float v, int lo, int hi)
{
    return (int)roundf(pb_clampf(v, lo, hi));
}

/* round half to even, clamped to [lo, hi]. */
static inline int pb_rint_clamp(float v, int lo, int hi)
{
    return (int)rintf(pb_clampf(v, lo, hi));
}

#endif
