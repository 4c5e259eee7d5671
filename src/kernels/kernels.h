/* Dot-product kernels: one weight row times one activation row.
 *
 * A matrix product converts each activation row once to the weight type's
 * activation type (F32 for F32 weights, Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for
 * Q4_1/Q5_1, Q8_K for the K-quants, ...) and then calls dot() per weight
 * row, so quantized weights are multiplied with integer arithmetic as in the
 * reference implementation.
 *
 * Kernels see only pointers to blocks: n is the row length in elements (a
 * multiple of both types' block sizes). Each kernel is named weight type x
 * activation type x ISA; the scalar ones are the reference every SIMD
 * variant is tested against.
 */
#ifndef PLUMB_KERNELS_KERNELS_H
#define PLUMB_KERNELS_KERNELS_H

#include "quant/types.h"

#include <stdint.h>

typedef float (*kern_dot_fn)(int64_t n, const void *w, const void *a);

struct kern_dot {
    enum pb_type act_type; /* what activations are converted to */
    kern_dot_fn dot;
};

/* The dot kernel for weights of type t, or NULL when there is none. */
const struct kern_dot *kern_dot_for(enum pb_type t);

/* The portable reference kernels. */
float dot_f32_f32_scalar(int64_t n, const void *w, const void *a);
float dot_f16_f16_scalar(int64_t n, const void *w, const void *a);
float dot_bf16_bf16_scalar(int64_t n, const void *w, const void *a);
float dot_q4_0_q8_0_scalar(int64_t n, const void *w, const void *a);
float dot_q4_1_q8_1_scalar(int64_t n, const void *w, const void *a);
float dot_q5_0_q8_0_scalar(int64_t n, const void *w, const void *a);
float dot_q5_1_q8_1_scalar(int64_t n, const void *w, const void *a);
float dot_q8_0_q8_0_scalar(int64_t n, const void *w, const void *a);
float dot_q4_K_q8_K_scalar(int64_t n, const void *w, const void *a);
float dot_q5_K_q8_K_scalar(int64_t n, const void *w, const void *a);
float dot_q6_K_q8_K_scalar(int64_t n, const void *w, const void *a);

#endif
