/* Tensor operations of the forward pass, over [n_tokens x dim] float
 * activations in row-major order. Weights are struct pb_tensor views into
 * the mapped file; matmul converts activations to the weight type's
 * activation type and calls the dot kernels.
 *
 * These are plain loops on one thread except op_matmul and op_attention,
 * which split their work over the pool.
 */
#ifndef PLUMB_OPS_OPS_H
#define PLUMB_OPS_OPS_H

#include "base/err.h"
#include "base/pool.h"
#include "quant/types.h"

#include <stddef.h>
#include <stdint.h>

/* A weight tensor: ne[0] elements per row, ne[1] rows (higher dims 1). */
struct pb_tensor {
    const char *name;
    enum pb_type type;
    int64_t ne[4];
    size_t row_bytes;
    const void *data; /* NULL when the tensor is absent (optional weights) */
};

enum rope_style {
    ROPE_NORM, /* rotate pairs (x[2i], x[2i+1]): Llama as converted to GGUF */
    ROPE_NEOX, /* rotate pairs (x[i], x[i + n_rot/2]): Qwen, GPT-NeoX */
};

/* out = x / rms(x) * w over one row of n (w may be NULL: no scaling). */
void op_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);

/* Rotary position embedding. The first n_rot dims of each head rotate by
 * angle pos * base^(-2i/n_rot) / freq_factors[i] * freq_scale for pair i
 * (freq_factors may be NULL: all 1; freq_scale < 1 is linear context
 * extension). */
struct rope_params {
    int n_rot;
    float base;
    float freq_scale;
    enum rope_style style;
    const float *freq_factors; /* n_rot / 2 values, or NULL */
};

/* Rotates n_head heads of head_dim in x (one token at position pos). */
void op_rope(float *x, int n_head, int head_dim, int64_t pos, const struct rope_params *rp);

/* g = silu(g) * u, n elements. */
void op_swiglu(float *g, const float *u, int64_t n);

/* x += y, n elements. */
void op_add(float *x, const float *y, int64_t n);

/* In-place softmax of n values. */
void op_softmax(float *x, int64_t n);

/* Row `row` of tensor t as floats (embedding lookup). */
void op_get_row(const struct pb_tensor *t, int64_t row, float *out);

/* Bytes of scratch op_matmul needs for n_tok rows of x against w. */
size_t op_matmul_scratch(const struct pb_tensor *w, int n_tok);

/* y[t][r] = dot(w row r, x[t]) for t < n_tok, r < w->ne[1].
 * x is [n_tok x w->ne[0]], y is [n_tok x w->ne[1]]; scratch holds at least
 * op_matmul_scratch(w, n_tok) bytes aligned to 64. Fails when there is no
 * kernel for the weight type. */
int op_matmul(struct pool *pool, const struct pb_tensor *w, const float *x, int n_tok, float *y, void *scratch,
              pb_err *err);

/* Causal multi-head attention with grouped KV heads, for n_tok query
 * tokens at positions pos0 .. pos0 + n_tok - 1.
 * q:   [n_tok x n_head * head_dim]
 * k,v: the layer's cache, [n_ctx x n_head_kv * head_dim], filled up to
 *      position pos0 + n_tok - 1
 * out: [n_tok x n_head * head_dim]
 * scratch: n_threads * (pos0 + n_tok) floats. */
struct attn_args {
    const float *q, *k, *v;
    float *out;
    int n_tok, n_head, n_head_kv, head_dim;
    int64_t pos0;
    float scale;
    float *scratch;
};
void op_attention(struct pool *pool, const struct attn_args *a);

#endif
