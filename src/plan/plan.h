/* Capacity planning: for a model's shape on a device, per quantization,
 * the memory it takes and the speed it runs at, for a context length and
 * a number of concurrent users.
 *
 * Memory: weights from the tensor types each file type really gives each
 * tensor (quant/ftype.h's rules, the ones plumb quantize and synth use),
 * the KV cache for context x users (sliding-window layers hold only their
 * window), and the runtime's activation buffers and fixed overhead.
 *
 * Speed, a roofline with a measured efficiency:
 *   generation  one decoding step serves every user (batched decoding):
 *               it reads the weights once (for a mixture of experts, the
 *               experts the users' tokens pick, expected share
 *               1 - (1 - used/experts)^users) and each user's KV cache at
 *               the full context (the slowest token of a conversation);
 *               time = max(bytes / bandwidth, users x 2 x params /
 *               throughput) / efficiency;
 *   prompt      2 x params FLOP per token plus attention at half the
 *               prompt, against the throughput (int8 for quantized
 *               weights, FP for F16), or the weights read once per batch
 *               of 512 tokens when that is slower, / efficiency;
 *   TTFT        the prompt plus one decoding step, on an idle machine.
 * On this machine bandwidth and throughput are plumb survey's
 * measurements and the efficiencies come from plumb bench's calibration
 * records (the same file type's when there is one); elsewhere they are the
 * catalog's figures with an assumed efficiency per kind of device.
 */
#ifndef PLUMB_PLAN_PLAN_H
#define PLUMB_PLAN_PLAN_H

#include "base/err.h"
#include "plan/catalog.h"
#include "survey/survey.h"

#include <stdbool.h>
#include <stdint.h>

#define PLAN_MAX_QUANTS 12
#define PLAN_MAX_CAL 32
#define PLAN_BATCH 512 /* tokens per forward pass of a prompt */

/* The quantizations plan considers, best quality first. */
int plan_n_quants(void);
const char *plan_quant_name(int i);
/* Index of a quantization by name (case-insensitive), -1 when unknown. */
int plan_quant_find(const char *name);

/* Weights of a shape in one file type. */
struct plan_weights {
    uint64_t bytes;          /* all tensors */
    uint64_t read_dense;     /* read by every token: attention, dense FFN, output matrix */
    uint64_t read_experts;   /* all experts' matrices (a token reads experts_used / experts of them) */
    double params;           /* elements of all tensors */
    double active_params;    /* elements a token multiplies (embedding table included, as in 2 x params) */
    double bpw;              /* bits per weight over all tensors */
};
int plan_weights(const struct cat_model *m, int quant, struct plan_weights *w, pb_err *err);

/* KV cache bytes of one sequence of ctx positions (kv_type: enum kv_type). */
uint64_t plan_kv_bytes(const struct cat_model *m, int64_t ctx, int kv_type);

struct plan_cal {
    char ftype[16];
    double eff_tg, eff_pp;   /* 0: that test was not run */
    double bw_gbs;           /* the bandwidth that bench run measured */
    bool same_threads;       /* measured with the thread count plan assumes */
    char from[160];          /* "plumb bench tinyllama-1.1b Q4_0 (synthesized), 2 threads, 2026-..." */
};

/* A device to plan for. */
struct plan_target {
    char id[48];
    char name[160];
    enum cat_kind kind;
    bool this_machine;       /* plumb's CPU kernels, measured figures */
    double mem_bytes;        /* memory model, cache and buffers may use */
    double bw_gbs;
    double int8_ops, fp_ops; /* operations per second */
    double fixed_overhead;   /* bytes the runtime takes besides buffers */
    double eff_tg, eff_pp;   /* defaults (assumed) */
    struct plan_cal cal[PLAN_MAX_CAL]; /* this machine: from plumb bench */
    int n_cal;
    char figures_from[200];  /* where bandwidth and throughput come from */
};

/* This machine from its profile (with memory.available current) and the
 * calibration records matching its kernels. */
void plan_target_this(const struct survey *s, const struct survey_calib *cal, int n_cal, struct plan_target *t);
void plan_target_device(const struct cat_device *d, struct plan_target *t);

struct plan_params {
    int64_t ctx;       /* context per user */
    int users;         /* concurrent users */
    double slo_tps;    /* generation tokens/s each user must get (0: none) */
    double slo_ttft;   /* seconds to the first token (0: none) */
    int64_t prompt;    /* prompt tokens for TTFT */
    int kv_type;       /* enum kv_type */
};

struct plan_row {
    char quant[16];
    bool approx;             /* mix approximated (a type plumb does not write) */
    bool runs;               /* the engine can run it there (this machine: plumb has the kernels and the architecture) */
    struct plan_weights w;
    uint64_t kv_bytes;       /* all users */
    uint64_t overhead_bytes;
    uint64_t total_bytes;
    bool fits;
    int users_max;           /* users whose KV cache fits beside the weights */
    double tg_user, tg_total, pp_tps, ttft_s;
    bool compute_bound;      /* generation with the requested users */
    int users_slo;           /* most users that still meet the targets (within memory) */
    bool meets;
    double eff_tg, eff_pp;
    bool eff_calibrated;     /* from a plumb bench record (else assumed) */
    const char *eff_from;
};

struct plan_result {
    struct plan_row rows[PLAN_MAX_QUANTS];
    int n_rows;
    int recommended;         /* best quality that fits and meets the targets; -1: none */
    bool arch_supported;     /* plumb has a forward pass for this architecture */
};

int plan_evaluate(const struct cat_model *m, const struct plan_target *t, const struct plan_params *p,
                  struct plan_result *r, pb_err *err);

/* The smallest catalog device (by usable memory, then price) on which the
 * model meets the targets: its index in c->devices (r filled), or -1. */
int plan_smallest_device(const struct catalog *c, const struct cat_model *m, const struct plan_params *p,
                         struct plan_result *r);

/* A GGUF file's shape as a catalog model (id: the file name); *ftype gets
 * the file's general.file_type name ("" when absent). */
int plan_model_from_gguf(const char *path, struct cat_model *m, char *ftype, size_t ftype_size, pb_err *err);

#endif
