/* plumb synth: a random-weight model of a real architecture's shape, for
 * tests and benchmarks (to qualify a machine for a model before
 * downloading it). Written tensor by tensor like quantize: a few buffers
 * of memory, progress after each tensor, an atomic final rename.
 */
#ifndef PLUMB_SYNTH_H
#define PLUMB_SYNTH_H

#include "plumb/base.h"

struct synth_shape {
    char name[48];
    char arch[16];     /* "llama", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3", "gpt-oss" */
    int64_t n_vocab;
    int64_t n_ctx;
    int64_t n_embd;
    int64_t n_layer;
    int64_t n_head;
    int64_t n_head_kv;
    int64_t head_dim;  /* 0: n_embd / n_head */
    int64_t n_ff;
    double rope_base;
    double rms_eps;
    bool tied;         /* output projection shares token_embd */
    bool qkv_bias;     /* Q/K/V biases (qwen2) */
    bool qk_norm;      /* per-head Q/K RMS norm (qwen3) */
    const char *source;/* where the dimensions come from */
    /* Llama 3 RoPE scaling (written as rope_freqs.weight); factor 0: none */
    double rope_factor, rope_low, rope_high, rope_orig_ctx;
    /* the newer families (arch gemma2, gemma3, qwen3moe, phi3, gpt-oss,
     * llama with experts); zero when absent */
    int64_t n_expert, n_expert_used, n_ff_exp; /* a mixture of experts */
    int64_t n_swa;         /* sliding window (the family's layer pattern) */
    double rope_base_swa;  /* the sliding layers' RoPE base (gemma3) */
    double attn_softcap, final_softcap; /* gemma2 */
    int64_t n_rot;         /* rotated dims per head (0: all) */
    const char *rope_scaling; /* "linear" or "yarn" with rope_scale, or "longrope" (factors written) */
    double rope_scale;     /* the scaling factor */
    int64_t rope_scaling_orig_ctx; /* YaRN's and LongRoPE's original context */
};

/* Built-in presets of real models' shapes. */
size_t synth_n_shapes(void);
const struct synth_shape *synth_shape_at(size_t i);
const struct synth_shape *synth_shape_find(const char *name);

/* Parses "arch=llama,dim=256,layers=4,heads=8,kv_heads=4,ffn=768,vocab=32000,
 * ctx=512[,head_dim=,rope_base=,eps=,tied=0|1,experts=N:K:FFN,swa=WINDOW,
 * softcap=ATTN:FINAL]" over *shape (which holds defaults or a preset to
 * modify). */
int synth_parse_dims(const char *spec, struct synth_shape *shape, pb_err *err);

struct synth_params {
    struct synth_shape shape;
    enum pb_ftype ftype;
    uint64_t seed;
    float stddev;            /* weights ~ normal(0, stddev); 0: 0.02 */
    const char *vocab_from;  /* GGUF whose tokenizer.* keys are copied, or NULL */
    int n_threads;
    int64_t distinct_rows;   /* > 0: each tensor's rows repeat after this many (a fast synthesis for
                              * benchmarks: the same bytes to stream, a fraction of the quantizing) */
    pb_progress_fn progress;
    void *user;
};

/* Bytes of tensor data the model will have (before writing). */
int synth_write(const char *out, const struct synth_params *p, uint64_t *bytes_written, pb_err *err);
/* The same into fd (a memfd, for a model that lives only in memory). */
int synth_write_fd(int fd, const struct synth_params *p, uint64_t *bytes_written, pb_err *err);

#endif
