/* Whole-file tools built on the library: quantizing a model to another
 * file type, and synthesizing a random-weight model of a real shape.
 * Both stream tensor by tensor (memory stays at a few buffers, whatever
 * the model size), convert rows on all threads, report progress through a
 * callback and write atomically (a failed run leaves no output file).
 */
#ifndef PLUMB_TOOLS_TOOLS_H
#define PLUMB_TOOLS_TOOLS_H

#include "base/err.h"
#include "quant/ftype.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Called after each tensor: bytes written so far of total, and its name. */
typedef void (*tools_progress_fn)(void *user, uint64_t done, uint64_t total, const char *tensor);

/* ---- quantize ---- */

struct quantize_params {
    enum pb_ftype ftype;
    int n_threads; /* 0: all CPUs */
    tools_progress_fn progress;
    void *user;
};

struct quantize_report {
    uint64_t n_tensors, n_converted, n_params;
    uint64_t bytes_in, bytes_out; /* tensor data */
    bool requantized;             /* some source tensors were already quantized */
    char source_ftype[16];
};

int quantize_file(const char *in, const char *out, const struct quantize_params *p, struct quantize_report *r,
                  pb_err *err);

/* ---- synth ---- */

struct synth_shape {
    char name[48];
    char arch[16];     /* "llama", "qwen2", "qwen3" */
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
 * ctx=512[,head_dim=,rope_base=,eps=,tied=0|1]" over *shape (which holds
 * defaults or a preset to modify). */
int synth_parse_dims(const char *spec, struct synth_shape *shape, pb_err *err);

struct synth_params {
    struct synth_shape shape;
    enum pb_ftype ftype;
    uint64_t seed;
    float stddev;            /* weights ~ normal(0, stddev); 0: 0.02 */
    const char *vocab_from;  /* GGUF whose tokenizer.* keys are copied, or NULL */
    int n_threads;
    tools_progress_fn progress;
    void *user;
};

/* Bytes of tensor data the model will have (before writing). */
int synth_write(const char *out, const struct synth_params *p, uint64_t *bytes_written, pb_err *err);
/* The same into fd (a memfd, for a model that lives only in memory). */
int synth_write_fd(int fd, const struct synth_params *p, uint64_t *bytes_written, pb_err *err);

/* ---- memory bandwidth ---- */

enum membw_kind {
    MEMBW_READ,  /* sum every word: the access pattern of generation */
    MEMBW_TRIAD, /* a = b + s * c on doubles (STREAM's triad, 24 bytes per element) */
};

/* Median bandwidth (GB/s) of `passes` runs (at most 16) of the kernel by
 * n_threads over a buffer of `bytes` (use several times the last-level
 * cache), measured in a child process so the buffer never counts in the
 * caller's memory. */
int membw_measure_kind(enum membw_kind kind, int n_threads, size_t bytes, int passes, double *gbs, pb_err *err);
/* The read kernel, 5 passes: what plumb bench reports. */
int membw_measure(int n_threads, size_t bytes, double *gbs, pb_err *err);

/* ---- bench ---- */

#define BENCH_MAX_TESTS 8

struct bench_test {
    char name[16];   /* "pp512", "tg128" */
    int n_tokens;
    bool generation; /* tg: one token per evaluation */
    int reps;
    double t_s_median, t_s_min, t_s_max; /* tokens per second over the repetitions */
};

struct bench_params {
    const char *model_path;   /* a GGUF file, or NULL: synthesize shape/ftype in memory */
    const char *model_label;  /* the model's name in the report; NULL: model_path's file name */
    struct synth_shape shape;
    enum pb_ftype ftype;
    int pp[BENCH_MAX_TESTS], n_pp; /* prompt-processing tests: prompt lengths */
    int tg[BENCH_MAX_TESTS], n_tg; /* generation tests: tokens generated */
    int n_threads;            /* 0: all CPUs */
    int reps;                 /* repetitions of each test (>= 1) */
    int kv_type;              /* enum kv_type */
    tools_progress_fn progress; /* synthesis progress (may be NULL) */
    void (*on_test)(void *user, const struct bench_test *t); /* each test as it ends (may be NULL) */
    void *user;
};

struct bench_report {
    char model[96];           /* file name, or "SHAPE QUANT (synthesized)" */
    char ftype[16];           /* the file type (general.file_type), "" when unknown */
    uint64_t model_bytes;     /* the GGUF image */
    uint64_t weight_bytes;    /* bytes of weights a generated token reads */
    uint64_t n_params;
    const char *kernels;      /* kernel level */
    int n_threads;
    double load_s;
    double bandwidth_gbs;     /* the higher of the measurements before and after the tests */
    double bandwidth_before_gbs, bandwidth_after_gbs;
    double tg_bandwidth_share; /* of the first tg test: weight_bytes x t/s / bandwidth */
    uint64_t peak_rss_bytes;
    uint64_t kv_bytes;        /* the KV cache of the context the tests used */
    struct bench_test tests[2 * BENCH_MAX_TESTS];
    int n_tests;
};

/* Loads (or synthesizes) the model and runs every test reps times after a
 * warm-up, llama-bench style: a pp test evaluates a prompt of random
 * tokens into an empty cache, a tg test generates token by token from an
 * empty cache. */
int bench_run(const struct bench_params *p, struct bench_report *r, pb_err *err);

#endif
