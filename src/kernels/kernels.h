/* Kernels: the arithmetic inner loops, one set per instruction-set level.
 *
 * Dot products (the scalar reference). A matrix product converts each
 * activation row once to the weight type's activation type (F32 for F32
 * weights, Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL/MXFP4, Q8_1 for Q4_1/Q5_1, Q8_K
 * for the K-quants and IQ4_XS) and multiplies each weight row with it, quantized weights
 * with integer arithmetic. These kernels define the results: every SIMD
 * kernel of the same weight type reproduces them bit for bit (the
 * integer part is exact, and the float operations are done in the same
 * order), which the tests check on random data.
 *
 * Matrix kernels (struct kern_mm). What op_matmul calls: for a weight type
 * at a level, how activations are quantized, how the weight rows may be
 * repacked at load time (the SIMD kernels interleave groups of 8 rows so
 * that one vector instruction works on 8 rows at once), and the product
 * of a range of row groups with a batch of activation rows. The scalar
 * set uses the file's rows as they are (groups of one row).
 */
#ifndef PLUMB_KERNELS_KERNELS_H
#define PLUMB_KERNELS_KERNELS_H

#include "quant/types.h"

#include <stddef.h>
#include <stdint.h>

/* ---- levels ---- */

/* Each level needs the one before it, except that avx512vnni does not
 * need avxvnni (CPUs have either or both); a level without a kernel for
 * some type uses the best lower level's. */
enum kern_level {
    KERN_SCALAR,
    KERN_AVX2,       /* x86-64 with AVX2, FMA and F16C */
    KERN_AVXVNNI,    /* + AVX-VNNI (VEX vpdpbusd, 16 vector registers) */
    KERN_AVX512VNNI, /* AVX2 set + AVX-512 F/BW/VL + AVX512-VNNI */
    KERN_LEVEL_COUNT,
};

/* The level in use: the best this CPU and build support, capped by the
 * environment variable PLUMB_SIMD (a level's name), read once. */
enum kern_level kern_level(void);
/* The PLUMB_SIMD value when it names no level (it is then ignored), for
 * the caller to report; NULL otherwise. */
const char *kern_level_ignored_env(void);
const char *kern_level_name(enum kern_level l);
/* Whether this build and CPU can run level l. */
int kern_level_available(enum kern_level l);

/* ---- reference dot products ---- */

typedef float (*kern_dot_fn)(int64_t n, const void *w, const void *a);

struct kern_dot {
    enum pb_type act_type; /* what activations are converted to */
    kern_dot_fn dot;
};

/* The dot kernel for weights of type t, or NULL when there is none. */
const struct kern_dot *kern_dot_for(enum pb_type t);

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
float dot_mxfp4_q8_0_scalar(int64_t n, const void *w, const void *a);
float dot_iq4_nl_q8_0_scalar(int64_t n, const void *w, const void *a);
float dot_q2_K_q8_K_scalar(int64_t n, const void *w, const void *a);
float dot_q3_K_q8_K_scalar(int64_t n, const void *w, const void *a);
float dot_iq4_xs_q8_K_scalar(int64_t n, const void *w, const void *a);

/* ---- matrix kernels ---- */

struct kern_mm {
    const char *name;    /* "q4_0_r8/avx2", for messages and benchmarks */
    enum pb_type wtype;  /* weight type */
    int group;           /* rows per packed group (1: the file's row layout) */
    int in_block;        /* n_in must be a multiple of this (0: of the type's block) */

    /* Activations: bytes per row of n_in values, and the conversion. Two
     * kernels with the same act_quantize take the same activations. */
    size_t (*act_size)(int64_t n_in);
    void (*act_quantize)(const float *x, void *out, int64_t n_in);

    /* Packing (NULL when group is 1): bytes of the packed matrix, and the
     * packing of row groups [g0, g1) of src (rows src_row_bytes apart). */
    size_t (*packed_size)(int64_t n_in, int64_t n_rows);
    void (*pack)(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);

    /* y[t * y_stride + r] = row r of w . activation row t, for the rows of
     * groups [g0, g1) and t < n_tok; activation rows are a_stride bytes
     * apart. w is the packed matrix (or the file's rows when group is 1,
     * w_row_bytes apart). */
    void (*gemm)(const void *w, size_t w_row_bytes, int64_t n_in, int64_t g0, int64_t g1, const void *a,
                 size_t a_stride, int n_tok, float *y, size_t y_stride);
};

/* The matrix kernels for an n_rows x n_in matrix of type t at level l:
 * the level's own when it has them for this type and shape, else the
 * scalar ones; NULL when t cannot be multiplied at all. */
const struct kern_mm *kern_mm_for(enum pb_type t, int64_t n_in, int64_t n_rows, enum kern_level l);

/* The level sets' tables (used by kern_mm_for). */
const struct kern_mm *kern_mm_scalar(enum pb_type t);
const struct kern_mm *kern_mm_avx2(enum pb_type t);
const struct kern_mm *kern_mm_avxvnni(enum pb_type t);
const struct kern_mm *kern_mm_avx512vnni(enum pb_type t);

/* ---- attention ----
 * Causal attention of n_tok query rows at positions pos0 .. pos0 + n_tok - 1
 * over a layer's cached keys and values, one (query token, KV head) pair
 * at a time: the query heads sharing that KV head (grouped-query
 * attention) are done together, so each key and value row is read once
 * for all of them, tile by tile, with the softmax computed online (a
 * running maximum and sum per row) so no row of scores is ever stored
 * whole: memory stays flat at any context length.
 *
 * Variants: a sliding window (a query at position p sees the keys at
 * p - window + 1 .. p); a ring cache (position j in row j % kv_cap);
 * soft-capped scores (s = softcap * tanh(s / softcap), after the scale);
 * attention sinks (a per-head logit that joins the softmax's denominator
 * and adds no value). */
struct kern_attn_args {
    const float *q;       /* [n_tok][n_head * head_dim] */
    const void *k, *v;    /* the layer's cache rows */
    const void *k_shared, *v_shared; /* rows of positions below n_shared, read from another cache */
    int64_t n_shared;                /* 0: every position in k and v */
    enum pb_type kv_type; /* F32, F16 or Q8_0 */
    size_t kv_row_bytes;  /* bytes per position (all KV heads) */
    float *out;           /* [n_tok][n_head * head_dim] */
    int n_tok, n_head, n_head_kv, head_dim;
    int64_t pos0;
    float scale;          /* applied to q.k before the softmax */
    int64_t window;       /* keys seen per query (0: all before it) */
    int64_t kv_cap;       /* rows of the cache: position j is row j % kv_cap (0: row j) */
    float softcap;        /* 0: none */
    const float *sinks;   /* [n_head] sink logits, or NULL */
    bool non_causal;      /* every row sees all pos0 + n_tok keys (encoders), not just those up to its own */
};

/* Attends work items [i0, i1) of kern_attn_items(a) (item = block of
 * KERN_ATTN_QBLOCK tokens * n_head_kv + KV head); scratch holds
 * kern_attn_scratch(a) floats. */
typedef void (*kern_attn_fn)(const struct kern_attn_args *a, int64_t i0, int64_t i1, float *scratch);
size_t kern_attn_scratch(const struct kern_attn_args *a);
int64_t kern_attn_items(const struct kern_attn_args *a);
/* The attention kernel for a cache type at level l (scalar when the level
 * has none for this type or head size). */
kern_attn_fn kern_attn_for(const struct kern_attn_args *a, enum kern_level l);
void kern_attn_scalar(const struct kern_attn_args *a, int64_t i0, int64_t i1, float *scratch);
void kern_attn_avx2(const struct kern_attn_args *a, int64_t i0, int64_t i1, float *scratch);

/* Keys and values per tile of the attention kernels, and tokens per work
 * item (their query heads share each K/V tile). */
#define KERN_ATTN_TILE 32
#define KERN_ATTN_QBLOCK 4

/* ---- element-wise ---- */

/* g[i] = silu(g[i]) * u[i] = g / (1 + exp(-g)) * u. */
typedef void (*kern_swiglu_fn)(float *g, const float *u, int64_t n);
kern_swiglu_fn kern_swiglu_for(enum kern_level l);
void kern_swiglu_scalar(float *g, const float *u, int64_t n);
void kern_swiglu_avx2(float *g, const float *u, int64_t n);

/* n floats to IEEE half (dst: uint16_t), rounded to nearest even: the
 * F16 KV cache's rows. The scalar kernel is quant_row_f16 (the F16
 * type's from_float); the vector one gives its bits for every value but
 * NaN (a NaN either way). */
typedef void (*kern_to_f16_fn)(const float *src, void *dst, int64_t n);
kern_to_f16_fn kern_to_f16_for(enum kern_level l);
void kern_to_f16_avx2(const float *src, void *dst, int64_t n);

#endif
