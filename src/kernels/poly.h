/* The exponential and tanh of the element-wise kernels, one element at a
 * time, as the vector kernels compute them lane by lane (internal to
 * src/kernels). The scalar kernels and the vector kernels' remainders use
 * these, so that a SIMD kernel and its scalar twin agree bit for bit:
 * every operation is a correctly rounded float operation (fmaf is fused
 * in both, with or without -mfma), done in the vector kernel's order. */
#ifndef PLUMB_KERNELS_POLY_H
#define PLUMB_KERNELS_POLY_H

#include <math.h>

/* exp(x) for x in [-87.3, 88.3] (inputs outside are clamped): x = n ln2 + r
 * with |r| <= ln2 / 2, exp(r) by a degree-6 polynomial (the classic Cephes
 * coefficients), times 2^n. About 1 ulp. */
static inline float poly_exp(float x)
{
    x = fminf(fmaxf(x, -87.3f), 88.3f);
    const float n = nearbyintf(x * 1.44269504088896341f); /* ties to even, as the vector round */
    float r = fmaf(-n, 0.693359375f, x);
    r = fmaf(-n, -2.12194440e-4f, r);
    float y = 1.9875691500e-4f;
    y = fmaf(y, r, 1.3981999507e-3f);
    y = fmaf(y, r, 8.3334519073e-3f);
    y = fmaf(y, r, 4.1665795894e-2f);
    y = fmaf(y, r, 1.6666665459e-1f);
    y = fmaf(y, r, 5.0000001201e-1f);
    y = fmaf(y, r * r, r + 1.0f);
    return y * ldexpf(1.0f, (int)n); /* 2^n is exact: n in [-126, 127] */
}

/* tanh(x) = 1 - 2 / (exp(2|x|) + 1), with x's sign: within a few 1e-7. */
static inline float poly_tanh(float x)
{
    const float ax = fabsf(x);
    const float t = 1.0f - 2.0f / (poly_exp(ax + ax) + 1.0f);
    return copysignf(t, x);
}

/* A score soft-capped to (-cap, cap): cap * tanh(s / cap), the division
 * as a multiplication by 1 / cap. */
static inline float poly_softcap(float s, float cap)
{
    return cap * poly_tanh(s * (1.0f / cap));
}

#endif
