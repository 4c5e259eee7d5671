/* Shared by the model module's files only: the loaded model, a context,
 * the architecture descriptions and the layer helpers every forward
 * function is built from. */
#ifndef PLUMB_MODEL_INTERNAL_H
#define PLUMB_MODEL_INTERNAL_H

#include "kernels/kernels.h"
#include "kv/kv.h"
#include "model/model.h"

struct model_ctx;

typedef int (*forward_fn)(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err);

/* What an architecture requires beyond the common tensors. */
enum arch_needs {
    ARCH_QKV_BIAS = 1 << 0, /* attn_{q,k,v}.bias */
    ARCH_QK_NORM = 1 << 1,  /* attn_{q,k}_norm.weight, per-head RMS norm */
};

struct arch_desc {
    const char *name;       /* general.architecture */
    enum rope_style rope;
    unsigned needs;         /* enum arch_needs */
    forward_fn forward;
};

const struct arch_desc *arch_find(const char *name);
/* "llama, qwen2, ..." for messages, into buf; returns buf. */
const char *arch_names(char *buf, size_t size);

struct model {
    struct model_hparams hp;
    const struct arch_desc *arch;
    struct gguf_file *file;
    struct pb_tensor tok_embd;   /* [n_embd] x n_vocab rows */
    struct pb_tensor out_norm;   /* [n_embd] */
    struct pb_tensor output;     /* [n_embd] x n_vocab rows (token_embd when tied) */
    struct pb_tensor rope_freqs; /* optional [n_rot/2] frequency divisors */
    struct rope_params rope;     /* everything op_rope needs */
    struct layer_weights *layers;
    float **owned;               /* 1-D tensors converted to F32 */
    int n_owned;
    uint64_t weight_bytes;
    void *packed;                /* repacked matrices (sys_alloc_large) */
    size_t packed_bytes;
};

/* One sequence's part of the batch being evaluated: rows [off, off + n)
 * of the activations, at positions pos0 .. pos0 + n - 1 of sequence seq. */
struct ctx_seg {
    int seq, off, n;
    int64_t pos0;
    bool logits; /* the logits after its last row are wanted */
};

struct model_ctx {
    const struct model *m;
    struct pool *pool;     /* shared, or own_pool */
    struct pool *own_pool; /* NULL when the pool is borrowed */
    int n_seq;
    struct kv_cache *kv; /* [n_seq] */
    int64_t *seq_pos;    /* [n_seq]: positions cached */
    int32_t *tokens;     /* [n_seq][n_ctx]: the tokens cached, seq_pos[s] of each */
    int64_t n_ctx;       /* per sequence */
    int n_batch;
    /* the batch being evaluated: n_segs <= n_batch segments */
    struct ctx_seg *segs;
    int n_segs;
    struct kern_attn_args *attn; /* [n_batch]: one per segment */
    /* activations, n_batch rows each */
    float *x;     /* [n_batch x n_embd] residual stream */
    float *xb;    /* [n_batch x n_embd] normed input / block output */
    float *q;     /* [n_batch x n_head*head_dim] */
    float *att;   /* [n_batch x n_head*head_dim] attention output */
    float *k_new, *v_new; /* [n_batch x n_head_kv*head_dim] rows before the cache stores them */
    float *gate;  /* [n_batch x n_ff] */
    float *up;    /* [n_batch x n_ff] */
    float *att_scratch; /* n_threads x op_attention_scratch */
    void *act;    /* quantized activations for op_matmul */
};

/* ---- layer helpers (layers.c) ---- */

/* xb[t] = rmsnorm(x[t]) * w for n rows. */
void layer_norm_rows(struct model_ctx *c, const struct pb_tensor *w, const float *x, float *xb, int n);
/* Self-attention block of layer l for the n rows of the batch (c->segs:
 * each sequence's rows attend to its own cache): reads c->xb (normed
 * input), writes the projected output to c->xb. */
int layer_attention(struct model_ctx *c, int l, int n, pb_err *err);
/* SwiGLU feed-forward of layer l: reads c->xb, writes c->xb. */
int layer_ffn_swiglu(struct model_ctx *c, int l, int n, pb_err *err);
/* Final norm of the last row of each segment that wants logits and the
 * output projection into logits (n_vocab floats per such segment, in
 * order). */
int layer_logits(struct model_ctx *c, int n, float *logits, pb_err *err);
/* x[t] = embedding of tokens[t]. */
void layer_embed(const struct model *m, const int32_t *tokens, int n, float *x);

/* ---- forward functions (one file per architecture) ---- */

int llama_forward(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err);

#endif
