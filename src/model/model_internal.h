/* Shared by the model module's files only: the loaded model, a context,
 * the architecture descriptions and the layer helpers every forward
 * function is built from. */
#ifndef PLUMB_MODEL_INTERNAL_H
#define PLUMB_MODEL_INTERNAL_H

#include "kernels/kernels.h"
#include "kv/kv.h"
#include "model/model.h"

/* Rows of the dense FFN's hidden buffers (gate, up): a longer batch runs
 * its FFN in pieces of this many tokens. The FFN treats tokens one by
 * one, so the pieces change no result; at 512 tokens the buffers of a
 * 4B model would hold 40 MiB, and each piece re-reads the FFN's weights
 * once, about 1 % of a prompt's time. */
#define FFN_ROWS 256

struct model_ctx;

typedef int (*forward_fn)(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err);

/* What an architecture requires or does beyond the common tensors. */
enum arch_needs {
    ARCH_QKV_BIAS = 1 << 0,   /* attn_{q,k,v}.bias */
    ARCH_QK_NORM = 1 << 1,    /* attn_{q,k}_norm.weight, per-head RMS norm */
    ARCH_MOE = 1 << 2,        /* every layer is a mixture of experts (others: when expert_count > 0) */
    ARCH_POST_NORMS = 1 << 3, /* post_attention_norm and post_ffw_norm on the blocks' outputs (gemma) */
    ARCH_OAI = 1 << 4,        /* gpt-oss: attention sinks, attn_output / router / expert biases,
                               * post_attention_norm before the FFN instead of ffn_norm */
    ARCH_EMBD_SCALE = 1 << 5, /* embeddings multiplied by sqrt(n_embd) (gemma) */
    ARCH_SOFTCAP = 1 << 6,    /* attention and final soft-caps, 50 and 30 unless the file says (gemma2) */
    ARCH_SWA_ROPE = 1 << 7,   /* sliding layers rotate with their own base and no scaling (gemma3) */
    ARCH_ENCODER = 1 << 8,    /* bert: learned positions and token types, post-LayerNorm blocks with
                               * biases, a plain GELU FFN, no RoPE, no output head */
};

struct arch_desc {
    const char *name;    /* general.architecture */
    enum rope_style rope;
    unsigned needs;      /* enum arch_needs */
    int swa_pattern;     /* with attention.sliding_window: layer l slides when l % p < p - 1 (0: never) */
    float rope_base_swa; /* the sliding layers' RoPE base when rope.freq_base_swa is absent (0: the global one) */
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
    struct pb_tensor rope_freqs; /* optional [n_rot/2] frequency divisors (Llama 3) */
    struct pb_tensor rope_long, rope_short; /* optional [n_rot/2] LongRoPE factors (Phi-3) */
    struct pb_tensor pos_embd;   /* encoders: [n_embd] x n_ctx_train learned positions */
    struct pb_tensor type_embd;  /* encoders: [n_embd] x token types (type 0 is used) */
    struct pb_tensor embd_norm, embd_norm_b; /* encoders: LayerNorm of the embeddings */
    float attn_scale;            /* applied to q.k */
    float embd_scale;            /* applied to the embeddings (1: none) */
    float final_softcap;         /* on the logits (0: none) */
    struct layer_weights *layers;
    struct pb_tensor *exp_views; /* every layer's per-expert views */
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

/* What a context knows of each sequence's cache beyond its position. */
struct seq_state {
    int64_t computed; /* positions whose cache rows are valid (< seq_pos after a deep truncation:
                       * the others are computed again from the sequence's tokens) */
    int64_t ring_lo;  /* the oldest position the sliding layers' rings still hold */
};

struct model_ctx {
    const struct model *m;
    struct pool *pool;     /* shared, or own_pool */
    struct pool *own_pool; /* NULL when the pool is borrowed */
    int n_seq;
    struct kv_cache *kv; /* [n_seq] */
    int64_t *seq_pos;    /* [n_seq]: positions cached */
    int32_t *tokens;     /* [n_seq][n_ctx]: the tokens cached, seq_pos[s] of each */
    struct seq_state *st;/* [n_seq] */
    int64_t n_ctx;       /* per sequence */
    int64_t swa_cap;     /* rows of a sliding layer's ring (n_ctx when it never wraps) */
    int n_batch;
    double t_part[PB_PART_COUNT]; /* seconds in each part of the passes so far (plumb/profile.h) */
    struct rope_params rope[2]; /* full layers, sliding-window layers */
    /* the RoPE angles of the pass's rows for rope[0] and rope[1]
     * (op_rope_angles, n_rot floats a row): made by the first layer that
     * needs them, used by every layer of the pass */
    float *rope_cs[2];
    bool rope_ready[2];
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
    float *gate;  /* [n_batch x n_ff] (dense layers) */
    float *up;    /* [n_batch x n_ff] */
    float *att_scratch; /* n_threads x op_attention_scratch */
    void *act;    /* quantized activations for op_matmul */
    /* mixture of experts, k = n_expert_used */
    float *moe_logits;   /* [n_batch x n_expert] router output */
    int32_t *moe_sel;    /* [n_batch x k] chosen experts, best first */
    float *moe_w;        /* [n_batch x k] their weights */
    int32_t *moe_slot;   /* [n_batch x k] row of (token, choice) in the grouped buffers */
    int32_t *moe_rows;   /* [n_batch x k] the token of each grouped row */
    float *moe_x;        /* [n_batch*k x n_embd] the down products' outputs, grouped by expert */
    float *moe_g, *moe_u;/* [n_batch*k x n_ff_exp] */
    struct op_mm_task *moe_tasks; /* [2 * n_expert] */
};

/* ---- layer helpers (layers.c) ---- */

/* xb[t] = rmsnorm(x[t]) * w for n rows. */
void layer_norm_rows(struct model_ctx *c, const struct pb_tensor *w, const float *x, float *xb, int n);
/* Self-attention block of layer l for the n rows of the batch (c->segs:
 * each sequence's rows attend to its own cache): reads c->xb (normed
 * input), writes the projected output to c->xb. The layer's window, RoPE,
 * sinks, biases and head norms are the model's. */
int layer_attention(struct model_ctx *c, int l, int n, pb_err *err);

enum ffn_act {
    FFN_SILU, /* SwiGLU */
    FFN_GELU, /* GeGLU (GELU's tanh approximation) */
    FFN_OAI,  /* gpt-oss's clamped SwiGLU */
};
/* Gated feed-forward of a dense layer l: reads c->xb, writes c->xb. */
int layer_ffn(struct model_ctx *c, int l, int n, enum ffn_act act, pb_err *err);
/* Mixture-of-experts feed-forward of layer l: reads c->xb, writes c->xb. */
int layer_ffn_moe(struct model_ctx *c, int l, int n, enum ffn_act act, pb_err *err);
/* Final norm of the last row of each segment that wants logits and the
 * output projection into logits (n_vocab floats per such segment, in
 * order; soft-capped when the model says). */
int layer_logits(struct model_ctx *c, int n, float *logits, pb_err *err);
/* The weight matrices' products of a forward pass (op_matmul_tasks on
 * the context's pool and scratch), timed into c->t_part[part], their
 * activations' quantization into PB_PART_QUANTIZE. */
int layer_matmul(struct model_ctx *c, enum pb_part part, const struct pb_tensor *w, const float *x, int n_tok,
                 float *y, pb_err *err);
int layer_matmul_n(struct model_ctx *c, enum pb_part part, int n, const struct pb_tensor *const *w, const float *x,
                   int n_tok, float *const *y, pb_err *err);
int layer_matmul_tasks(struct model_ctx *c, enum pb_part part, int n, const struct op_mm_task *tasks, pb_err *err);
/* The time since t0 (sys_now) into c->t_part[part]; returns now, for the
 * next part's start. */
double layer_timed(struct model_ctx *c, enum pb_part part, double t0);
/* x[t] = embedding of tokens[t] (times the model's embedding scale). */
void layer_embed(struct model_ctx *c, const int32_t *tokens, int n, float *x);

/* ---- forward functions (one file per architecture family) ---- */

int llama_forward(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err);
int gemma_forward(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err);
int bert_forward(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err);

#endif
