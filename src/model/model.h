/* Decoder-only transformer models read from GGUF.
 *
 * A model is its hyperparameters, its architecture description and views
 * of its weights inside the mapped file (nothing is copied but small 1-D
 * tensors that need converting). A model_ctx is one sequence's state: KV
 * cache, activation buffers and threads. Many contexts may share a model.
 *
 * Each architecture has a description (which optional pieces it has, RoPE
 * style) and one explicit forward function; they share the layer helpers.
 */
#ifndef PLUMB_MODEL_MODEL_H
#define PLUMB_MODEL_MODEL_H

#include "base/err.h"
#include "gguf/gguf.h"
#include "ops/ops.h"
#include "plumb/profile.h"

#include <stdbool.h>
#include <stdint.h>

struct model_hparams {
    char arch[64];        /* general.architecture */
    int64_t n_vocab;      /* rows of token_embd (0 until weights are read) */
    int64_t n_ctx_train;  /* <arch>.context_length */
    int64_t n_embd;       /* <arch>.embedding_length */
    int64_t n_layer;      /* <arch>.block_count */
    int64_t n_head;       /* <arch>.attention.head_count */
    int64_t n_head_kv;    /* <arch>.attention.head_count_kv (GQA), default n_head */
    int64_t head_dim;     /* <arch>.attention.key_length, default n_embd / n_head */
    int64_t n_ff;         /* <arch>.feed_forward_length */
    int64_t n_rot;        /* <arch>.rope.dimension_count, default head_dim */
    float rms_eps;        /* <arch>.attention.layer_norm_rms_epsilon */
    float rope_base;      /* <arch>.rope.freq_base, default 10000 */
    enum rope_scaling {
        ROPE_SCALING_NONE,
        ROPE_SCALING_LINEAR,
        ROPE_SCALING_YARN,
        ROPE_SCALING_OTHER,
        ROPE_SCALING_LONGROPE, /* Phi-3's: per-pair factors from rope_factors_{short,long}.weight */
    } rope_scaling;
    float rope_scale;     /* <arch>.rope.scaling.factor (context multiple), 1 when none */

    /* RoPE scaling details (YaRN, LongRoPE) */
    int64_t n_ctx_orig;     /* <arch>.rope.scaling.original_context_length, default n_ctx_train */
    float rope_attn_factor; /* <arch>.rope.scaling.attn_factor, default 1 */
    float yarn_beta_fast;   /* <arch>.rope.scaling.yarn_beta_fast, default 32 */
    float yarn_beta_slow;   /* <arch>.rope.scaling.yarn_beta_slow, default 1 */
    float yarn_log_mul;     /* <arch>.rope.scaling.yarn_log_multiplier, default 0 */

    /* mixture of experts; n_expert 0 for a dense model */
    int64_t n_expert;       /* <arch>.expert_count */
    int64_t n_expert_used;  /* <arch>.expert_used_count */
    int64_t n_ff_exp;       /* <arch>.expert_feed_forward_length, default n_ff */

    /* sliding-window attention; n_swa 0 when none */
    int64_t n_swa;          /* <arch>.attention.sliding_window (keys a query sees) */
    int64_t swa_pattern;    /* layer l is global when (l + 1) % swa_pattern == 0, else local (with n_swa):
                             * the family's (arch.c) */
    float rope_base_swa;    /* <arch>.rope.freq_base_swa: the sliding layers' RoPE base */

    /* encoders (bert) */
    bool causal;            /* <arch>.attention.causal: a token sees only those before it (decoders) */
    enum model_pooling {    /* <arch>.pooling_type, numbered as GGUF's: how a text's embedding is made */
        MODEL_POOL_NONE = 0,
        MODEL_POOL_MEAN = 1,
        MODEL_POOL_CLS = 2,  /* the first token's state */
        MODEL_POOL_LAST = 3, /* the last token's state (decoders' default) */
    } pooling;

    /* soft-capping (cap * tanh(x / cap)), 0 when none */
    float attn_softcap;     /* <arch>.attn_logit_softcapping: attention scores */
    float final_softcap;    /* <arch>.final_logit_softcapping: output logits */
};

/* Whether layer l of a model with these hyperparameters attends through a
 * sliding window (and keeps only its window in the KV cache). */
bool model_layer_is_swa(const struct model_hparams *hp, int l);

/* Whether plumb has a forward pass for general.architecture `arch`. */
bool model_arch_supported(const char *arch);

/* Reads and checks the hyperparameters of f (any supported or unsupported
 * architecture; n_vocab is filled from token_embd when present). */
int model_hparams_read(const struct gguf_file *f, struct model_hparams *hp, pb_err *err);

/* A layer's weights. Fused tensors (Phi-3's attn_qkv and gate/up ffn_up)
 * are bound as views of their row ranges, and a 3-D expert tensor as one
 * 2-D view per expert, so every product below is an ordinary matrix. */
struct layer_weights {
    struct pb_tensor attn_norm;  /* [n_embd] */
    struct pb_tensor wq;         /* [n_embd] x n_head*head_dim rows */
    struct pb_tensor wk, wv;     /* [n_embd] x n_head_kv*head_dim rows */
    struct pb_tensor wo;         /* [n_head*head_dim] x n_embd rows */
    struct pb_tensor bq, bk, bv; /* optional biases */
    struct pb_tensor bo;         /* optional attention output bias [n_embd] (gpt-oss) */
    struct pb_tensor q_norm, k_norm; /* optional per-head RMS norm [head_dim] */
    struct pb_tensor sinks;      /* optional attention sink logits [n_head] (gpt-oss) */
    struct pb_tensor attn_post_norm; /* post_attention_norm [n_embd] (gemma, on the attention output);
                                      * bert: attn_output_norm, a LayerNorm after the residual */
    struct pb_tensor attn_post_norm_b; /* bert: its bias */
    struct pb_tensor ffn_norm;   /* [n_embd] (gpt-oss's file calls it post_attention_norm) */
    struct pb_tensor ffn_post_norm; /* post_ffw_norm [n_embd] (gemma); bert: layer_output_norm */
    struct pb_tensor ffn_post_norm_b; /* bert: its bias */
    struct pb_tensor ffn_up_b, ffn_down_b; /* bert: the FFN's biases [n_ff], [n_embd] */
    struct pb_tensor ffn_gate, ffn_up; /* [n_embd] x n_ff rows (dense layers) */
    struct pb_tensor ffn_down;   /* [n_ff] x n_embd rows */
    /* mixture of experts (exps NULL in a dense layer) */
    struct pb_tensor ffn_gate_inp;   /* router: [n_embd] x n_expert rows */
    struct pb_tensor ffn_gate_inp_b; /* optional router bias [n_expert] */
    struct pb_tensor *gate_exps, *up_exps; /* [n_expert]: [n_embd] x n_ff_exp rows each */
    struct pb_tensor *down_exps;           /* [n_expert]: [n_ff_exp] x n_embd rows each */
    struct pb_tensor gate_exps_b, up_exps_b; /* optional [n_expert][n_ff_exp] biases */
    struct pb_tensor down_exps_b;            /* optional [n_expert][n_embd] biases */
};

struct model;
struct model_ctx;

/* Opens path and loads the model. Weights are mapped, and the matrices
 * the kernels in use read in another layout are repacked once into memory
 * of their own (the file's pages are then released): one copy either way.
 * The repacking runs on pool (NULL: a pool of this process's CPUs for the
 * load alone). */
int model_load(const char *path, struct pool *pool, struct model **out, pb_err *err);
/* The same from a GGUF image in fd (see gguf_open_fd). */
int model_load_fd(int fd, const char *name, bool discardable, struct pool *pool, struct model **out, pb_err *err);
void model_free(struct model *m);

const struct model_hparams *model_hparams(const struct model *m);
const struct gguf_file *model_gguf(const struct model *m);
/* Bytes of weights a decode step reads per token: every matrix, but of a
 * mixture's experts only the n_expert_used a token picks. */
uint64_t model_weight_bytes(const struct model *m);

struct model_ctx_params {
    int64_t n_ctx;   /* KV cache positions (of each sequence) */
    int n_batch;     /* tokens per forward pass (longer inputs are split) */
    int n_threads;   /* the context's own pool when pool is NULL */
    struct pool *pool; /* a pool shared with others (borrowed), or NULL */
    int kv_type;     /* enum pb_kv_type: PB_KV_F16 (0) unless set */
    int n_seq;       /* independent sequences, each with its own cache (0: 1) */
};

int model_ctx_create(const struct model *m, const struct model_ctx_params *p, struct model_ctx **out, pb_err *err);
void model_ctx_free(struct model_ctx *c);

int64_t model_ctx_n_ctx(const struct model_ctx *c);
/* Bytes the KV cache holds at full context (all sequences). */
uint64_t model_ctx_kv_bytes(const struct model_ctx *c);
/* Seconds in each part of the passes so far (plumb/profile.h) into out. */
void model_ctx_part_seconds(const struct model_ctx *c, double out[PB_PART_COUNT]);

/* Evaluates n tokens of sequence 0 at its next positions (in batches of
 * n_batch) and, when logits is non-NULL, writes the n_vocab logits after
 * the last one. Fails with PB_ERANGE if the context would overflow,
 * PB_EINVAL for a token id out of range. */
int model_eval(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err);

/* ---- memory ----
 * What running a model takes, from the same sizes its loading and
 * model_ctx_create allocate (the tokenizer and the process are the
 * engine's to add). KV caches and activation buffers are reserved whole
 * and committed as they fill: the figures are what a full context uses. */
struct model_mem {
    uint64_t weights;  /* matrices as the kernels read them (repacked or mapped) and the embedding table */
    uint64_t vectors;  /* norms, biases and other 1-D tensors, converted to F32 */
    uint64_t kv;       /* KV caches of every sequence at full context */
    uint64_t compute;  /* activation buffers of one batch, attention scratch, cached-token records */
    uint64_t total;
};

/* The figures for a loaded model and context parameters p. */
int model_mem(const struct model *m, const struct model_ctx_params *p, struct model_mem *out, pb_err *err);
/* The figures for a model known by its shape alone (a catalog entry):
 * weight_bytes as given, and the buffers for activations of
 * act_bytes_per_value bytes per input value (about 1.14 for quantized
 * weights, whose activations are 8-bit blocks; 4 for F16 and F32). */
int model_mem_shape(const struct model_hparams *hp, uint64_t weight_bytes, double act_bytes_per_value,
                    const struct model_ctx_params *p, struct model_mem *out, pb_err *err);
/* KV cache bytes of one sequence of n_ctx positions: global layers hold
 * every position, local (sliding-window) layers their window. */
uint64_t model_kv_bytes(const struct model_hparams *hp, int64_t n_ctx, enum pb_kv_type type);
/* The same without loading the model of file f (its tensors are read, not
 * repacked; f stays open); hp (may be NULL) receives its hyperparameters. */
int model_mem_estimate(const struct gguf_file *f, const struct model_ctx_params *p, struct model_hparams *hp,
                       struct model_mem *out, pb_err *err);

/* ---- several sequences (a server's slots) ----
 * A context holds n_seq sequences, each with its own cache and position.
 * One forward pass can carry tokens of many of them: every matrix product
 * then reads its weights once for all (continuous batching), and each
 * token attends to its own sequence only. A token's results do not depend
 * on what else is in the batch: rows are computed independently, in the
 * same arithmetic. */
int64_t model_seq_pos(const struct model_ctx *c, int seq);
/* The tokens whose keys and values sequence seq holds (model_seq_pos of
 * them, in order): what a new prompt can share a prefix with. The context
 * is the one record of them. */
const int32_t *model_seq_tokens(const struct model_ctx *c, int seq);
/* Forgets positions >= pos of sequence seq.
 *
 * With sliding-window layers the cache of such a layer keeps only its
 * window (and a batch) of the latest positions, so truncating further
 * back than that leaves those layers without the keys the next token
 * needs: the context then recomputes the kept positions (it remembers the
 * tokens of every sequence) at that sequence's next evaluation, which
 * gives the same results as never having truncated, at the cost of
 * evaluating the kept prefix again. model_seq_n_recompute says how many
 * positions are pending. */
void model_seq_truncate(struct model_ctx *c, int seq, int64_t pos);
/* Sequence dst becomes the first n positions of sequence src (a shared
 * prompt prefix, taken rather than computed again; with sliding-window
 * layers the same rule as model_seq_truncate applies). Whole blocks of
 * the prefix are shared, not copied: both sequences read the same cache
 * rows until one of them writes over its own, when the other takes a
 * copy first (so memory holds a shared system prompt once). */
int model_seq_copy(struct model_ctx *c, int dst, int src, int64_t n, pb_err *err);
/* Positions of sequence seq whose keys and values it reads from another
 * sequence's cache rows (held once for both). */
int64_t model_seq_n_shared(const struct model_ctx *c, int seq);
/* Positions of sequence seq whose cache must be computed again before its
 * next token (0 unless a truncation or copy went further back than the
 * sliding windows keep). */
int64_t model_seq_n_recompute(const struct model_ctx *c, int seq);

/* A batch segment: the next n tokens of sequence seq, contiguous in the
 * batch's token array. */
struct model_seg {
    int seq;
    int n;
    bool logits; /* write the logits after its last token */
};

/* Evaluates the segments (distinct sequences, at most n_batch tokens in
 * all) in one forward pass; logits receives n_vocab floats for each
 * segment that wants them, in segment order. */
int model_eval_batch(struct model_ctx *c, const int32_t *tokens, const struct model_seg *segs, int n_segs,
                     float *logits, pb_err *err);

/* Embeddings: each segment is a whole text, evaluated in one forward pass
 * from position 0 of its sequence (what the sequence held is forgotten);
 * hidden receives every token's final state (after the model's last norm),
 * n_embd floats per token in batch order. An encoder's tokens see the
 * whole text (non-causal attention). */
int model_eval_hidden(struct model_ctx *c, const int32_t *tokens, const struct model_seg *segs, int n_segs,
                      float *hidden, pb_err *err);

#endif
