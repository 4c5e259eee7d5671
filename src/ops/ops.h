/* Tensor operations of the forward pass, over [n_tokens x dim] float
 * activations in row-major order. Weights are struct pb_tensor views into
 * the mapped file, or into a copy repacked for their kernels; matmul
 * converts activations to the weight type's activation type once and
 * calls the matrix kernels (kernels.h: struct kern_mm).
 *
 * The functions that take a pool split their work over its threads (by
 * rows, or by work items handed out through an atomic counter); the
 * others are plain loops on the calling thread.
 */
#ifndef PLUMB_OPS_OPS_H
#define PLUMB_OPS_OPS_H

#include "base/err.h"
#include "base/pool.h"
#include "quant/types.h"

#include <stddef.h>
#include <stdint.h>

struct kern_mm;

/* A weight tensor: ne[0] elements per row, ne[1] rows (higher dims 1).
 * A matrix also has its kernels (see op_matrix_plan) and the data they
 * read: the file's rows, or a copy repacked for them. */
struct pb_tensor {
    const char *name;
    enum pb_type type;
    int64_t ne[4];
    size_t row_bytes;
    const void *data;         /* NULL when the tensor is absent (optional weights) */
    const struct kern_mm *mm; /* NULL: chosen (scalar) at the first product */
    const void *mm_data;      /* what mm->gemm reads */
};

enum rope_style {
    ROPE_NORM, /* rotate pairs (x[2i], x[2i+1]): Llama as converted to GGUF */
    ROPE_NEOX, /* rotate pairs (x[i], x[i + n_rot/2]): Qwen, GPT-NeoX */
};

/* out = (x - mean(x)) / sqrt(var(x) + eps) * w + b over n_rows rows of n
 * (LayerNorm; sums in double; w and b may be NULL). */
void op_layernorm_rows(float *out, const float *x, const float *w, const float *b, int n_rows, int64_t n, float eps);

/* x = gelu(x) over n elements (the table op_geglu reads). */
void op_gelu(float *x, int64_t n);

/* out = x / rms(x) * w over one row of n (w may be NULL: no scaling). */
void op_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);

/* Rotary position embedding. The first n_rot dims of each head rotate by
 * angle pos * base^(-2i/n_rot) / freq_factors[i] * freq_scale for pair i
 * (freq_factors may be NULL: all 1; freq_scale < 1 is linear context
 * extension).
 *
 * YaRN (ext_factor != 0): pair i's angle blends the interpolated angle
 * above with the unscaled one by ramp(i) * ext_factor, where ramp is 1 for
 * i below corr_dims[0], 0 above corr_dims[1] and linear between (see
 * op_rope_yarn_corr_dims); the magnitude is then multiplied by
 * 1 + 0.1 ln(1 / freq_scale). Both cos and sin are multiplied by
 * attn_factor (0 stands for 1): YaRN's and LongRoPE's attention factor. */
struct rope_params {
    int n_rot;
    float base;
    float freq_scale;
    enum rope_style style;
    const float *freq_factors; /* n_rot / 2 values, or NULL */
    float ext_factor;          /* YaRN blend, 0: none */
    float attn_factor;         /* 0: 1 */
    float corr_dims[2];        /* YaRN: first and last pair of the ramp */
};

/* YaRN's correction range: the pairs whose wavelength fits beta_fast and
 * beta_slow rotations in the original context n_ctx_orig, i.e. for each
 * beta the pair i with n_rot * ln(n_ctx_orig / (beta 2 pi)) / (2 ln base),
 * the first rounded down and the second up, clamped to [0, n_rot - 1]. */
void op_rope_yarn_corr_dims(int n_rot, int64_t n_ctx_orig, float base, float beta_fast, float beta_slow,
                            float dims[2]);

/* A token's angles at position pos: for each of the n_rot / 2 pairs, its
 * cos and sin (times the attention factor) at cs[2i] and cs[2i + 1]. They
 * depend on the position and rp only, so one table serves every layer
 * (and the queries and keys) of a forward pass. */
void op_rope_angles(int64_t pos, const struct rope_params *rp, float *cs);

/* Rotates n_head heads of head_dim in x by the angles cs. */
void op_rope_apply(float *x, int n_head, int head_dim, const float *cs, const struct rope_params *rp);

/* x += y, n elements. */
void op_add(float *x, const float *y, int64_t n);

/* Row `row` of tensor t as floats (embedding lookup). */
void op_get_row(const struct pb_tensor *t, int64_t row, float *out);

/* Chooses the matrix kernels of t for kernel level `level` (an enum
 * kern_level) and returns the bytes of the repacked copy they need, 0
 * when they read the file's rows (t is then ready). Fails when no kernel
 * can multiply t's type. */
int op_matrix_plan(struct pb_tensor *t, int level, size_t *packed_bytes, pb_err *err);
/* Repacks t into dst (op_matrix_plan's bytes, 64-byte aligned) on the
 * pool's threads; t then reads dst. */
void op_matrix_pack(struct pool *pool, struct pb_tensor *t, void *dst);
/* The same in steps, so that a loader can release the source rows of each
 * step: op_matrix_groups(t) row groups (of t's kernels, after
 * op_matrix_plan), groups [g0, g1) packed into dst (the whole matrix's
 * buffer), and t pointed at dst once all are. */
int64_t op_matrix_groups(const struct pb_tensor *t);
void op_matrix_pack_groups(struct pool *pool, const struct pb_tensor *t, void *dst, int64_t g0, int64_t g1);
void op_matrix_use_packed(struct pb_tensor *t, const void *dst);

/* Bytes of scratch op_matmul / op_matmul_n need for n_tok rows. */
size_t op_matmul_scratch(const struct pb_tensor *w, int n_tok);

/* y[t][r] = dot(w row r, x[t]) for t < n_tok, r < w->ne[1].
 * x is [n_tok x w->ne[0]], y is [n_tok x w->ne[1]]; scratch holds at least
 * op_matmul_scratch(w, n_tok) bytes aligned to 64. */
int op_matmul(struct pool *pool, const struct pb_tensor *w, const float *x, int n_tok, float *y, void *scratch,
              pb_err *err);

/* n products of the same input (Q, K and V; gate and up): x is quantized
 * once per activation format and all rows of all matrices are shared out
 * in one parallel job. The matrices have the same row length; scratch
 * holds the sum of their op_matmul_scratch. n <= OP_MATMUL_MAX. */
#define OP_MATMUL_MAX 4
int op_matmul_n(struct pool *pool, int n, const struct pb_tensor *const *w, const float *x, int n_tok, float *const *y,
                void *scratch, pb_err *err);

/* One product of a batch of them: y = w x for n_tok rows (x is
 * [n_tok x w->ne[0]], y is [n_tok x w->ne[1]]). With rows, row r of the
 * product is row rows[r] of x, which holds n_x rows (the experts of a
 * mixture, each over the tokens that chose it: every token's row is
 * quantized once, not once for each expert it chose). */
struct op_mm_task {
    const struct pb_tensor *w;
    const float *x;
    int n_tok;
    float *y;
    const int32_t *rows; /* NULL: rows 0..n_tok-1 of x */
    int n_x;             /* with rows: rows of x */
};

/* Any number of products with inputs of their own (the experts of a
 * mixture, each over the tokens that chose it): each distinct input is
 * quantized once per activation format (with rows: the rows a product
 * chooses are copied from its input's, quantized once per job), and the
 * rows of all matrices are shared out over the pool (in jobs of up to
 * OP_MM_JOB_TASKS products).
 * Each row is computed as op_matmul computes it. scratch holds
 * op_matmul_tasks_scratch(n, tasks) bytes aligned to 64. */
#define OP_MM_JOB_TASKS 64
size_t op_matmul_tasks_scratch(int n, const struct op_mm_task *tasks);
int op_matmul_tasks(struct pool *pool, int n, const struct op_mm_task *tasks, void *scratch, pb_err *err);
/* The same, adding the seconds spent quantizing the activations (on the
 * caller's thread or the pool's) to *quantize_s. */
int op_matmul_tasks_timed(struct pool *pool, int n, const struct op_mm_task *tasks, void *scratch, double *quantize_s,
                          pb_err *err);

/* ---- on the pool: work split over its threads ---- */

/* out[r] = rmsnorm(x[r]) * w for n_rows rows of n. */
void op_rmsnorm_rows(struct pool *pool, float *out, const float *x, const float *w, int n_rows, int64_t n, float eps);

/* g = silu(g) * u over n elements. */
void op_swiglu(struct pool *pool, float *g, const float *u, int64_t n);

/* g = gelu(g) * u over n elements: GELU's tanh approximation, read from a
 * table of its values at every half-precision input as llama.cpp does
 * (the input rounded to F16, the result an F16; 0 below -10, x above 10). */
void op_geglu(struct pool *pool, float *g, const float *u, int64_t n);

/* gpt-oss's gated unit: with x = min(g, limit) and y = clamp(u, -limit,
 * limit), g = x * sigmoid(alpha x) * (y + 1). */
void op_swiglu_oai(float *g, const float *u, int64_t n, float alpha, float limit);

/* x = cap * tanh(x / cap) over n elements (soft-capping). */
void op_softcap(float *x, int64_t n, float cap);

/* op_rope_apply on n_rows rows of queries q (q_heads heads each) and of
 * keys k (k_heads), row r by the angles at cs + r * rp->n_rot (NULL: no
 * rotation), split across the pool in one job; then each thread hands its
 * rows [r0, r1) to then(ctx, r0, r1) (may be NULL): the cache stores them
 * while they are in its core's cache. */
typedef void (*op_rows_fn)(void *ctx, int r0, int r1);
void op_rope_qk_rows(struct pool *pool, float *q, int q_heads, float *k, int k_heads, int head_dim, int n_rows,
                     const float *cs, const struct rope_params *rp, op_rows_fn then, void *ctx);

/* Causal grouped-query attention over a layer's KV cache (see
 * kernels.h: struct kern_attn_args), of n sequences of the same head
 * shape in one job: their work items are shared out together. scratch
 * holds n_threads x op_attention_scratch(a) floats. */
struct kern_attn_args;
size_t op_attention_scratch(const struct kern_attn_args *a);
#define OP_ATTENTION_MAX_SEQ 64
void op_attention_n(struct pool *pool, const struct kern_attn_args *a, int n, float *scratch);

#endif
