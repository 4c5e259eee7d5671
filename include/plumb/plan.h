/* Planning: what fits on a machine, how fast it runs, and what it costs.
 *
 * Three parts, from the bottom: the catalogs (models, devices, API
 * prices), capacity planning over them (memory and speed per
 * quantization), and the total cost of ownership against a cloud API.
 */
#ifndef PLUMB_PLAN_H
#define PLUMB_PLAN_H

#include "plumb/base.h"
#include "plumb/engine.h"
#include "plumb/survey.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ==== catalogs ====
 *
 * The catalogs plan and tco work from: open-weight models (their real
 * dimensions), devices (memory, bandwidth, throughput, power, price) and
 * cloud API prices. Each entry names its source.
 *
 * The data are the JSON files in the source tree's catalog/ folder,
 * compiled into the binary at build time (so an installed plumb needs no
 * data files beside it). A folder given to catalog_load, or named by
 * $PLUMB_CATALOG, overrides them file by file: models.json, hardware.json,
 * api-prices.json, whichever it holds.
 *
 * Loading checks every entry: required fields, types, ranges, unknown
 * field names (typos) and duplicate ids, and fails naming the file, the
 * entry and the field.
 */

/* Where a model's GGUF files live: a repository in Hugging Face's layout,
 * a file per quantization, with its SHA-256 where it is known for
 * certain. The file of quantization Q is fetched from
 * {registry}/{repo}/resolve/{revision}/{file} (catalog_gguf_url). */
#define CAT_GGUF_MAX_FILES 16
struct cat_gguf_file {
    char quant[16];          /* canonical name, upper case: Q4_K_M, IQ4_XS, MXFP4, ... */
    char file[128];          /* file name in the repository (may hold '/': a folder) */
    char sha256[65];         /* lower-case hex, "" when not pinned */
};
struct cat_gguf {
    char repo[96];           /* "owner/name"; "" when the catalog names no repository */
    char revision[64];       /* branch, tag or commit ("main" unless given) */
    struct cat_gguf_file files[CAT_GGUF_MAX_FILES];
    int n_files;
};

struct cat_model {
    char id[48];
    char name[80];
    char arch[16];           /* GGUF general.architecture: llama, qwen2, qwen3, gemma3, ... */
    int64_t layers, hidden, ffn, heads, kv_heads, head_dim, vocab, context;
    bool tied_embeddings;
    double params_b;         /* published parameter count, billions */
    int64_t experts, experts_used, expert_ffn; /* MoE (0 when dense) */
    double active_params_b;  /* MoE: published active parameters */
    int64_t sliding_window;  /* 0: every layer attends to the whole context */
    int64_t swa_pattern;     /* one layer in this many attends globally, the others within the window */
    char license[32];
    char note[160];
    char source[200];
    struct cat_gguf gguf;    /* optional ("gguf" in models.json) */
};

enum cat_kind { CAT_GPU, CAT_APPLE, CAT_APU, CAT_CPU };

struct cat_device {
    char id[48];
    char name[96];
    enum cat_kind kind;
    char vendor[24];
    double memory_gb;        /* 1e9 bytes */
    double usable_fraction;  /* of memory available to the model (1 unless given) */
    double bandwidth_gbs, fp16_tflops, int8_tops, power_w, price_usd;
    char price_date[16];     /* "2024-06" */
    char price_note[96];
    char note[256];
    char source[200];
};

struct cat_price {
    char id[48];
    char provider[32];
    char model[64];
    double input_per_mtok, output_per_mtok;
    char currency[8];
    char date[16];
    char source[200];
};

struct catalog {
    struct cat_model *models;
    int n_models;
    struct cat_device *devices;
    int n_devices;
    struct cat_price *prices;
    int n_prices;
    char origin[3][300]; /* where each file came from ("built in" or a path) */
};

/* Loads the catalogs: built in, overridden by files in dir (or, when dir
 * is NULL, in $PLUMB_CATALOG). */
int catalog_load(const char *dir, struct catalog **out, pb_err *err);
void catalog_free(struct catalog *c);

/* Parses one catalog file's text into c (replacing that part); which is
 * "models.json", "hardware.json" or "api-prices.json"; origin names it in
 * messages. */
int catalog_parse(struct catalog *c, const char *which, const char *text, size_t len, const char *origin,
                  pb_err *err);

/* Lookups by id (case-insensitive); NULL when absent. */
const struct cat_model *catalog_model(const struct catalog *c, const char *id);
const struct cat_device *catalog_device(const struct catalog *c, const char *id);
const struct cat_price *catalog_price(const struct catalog *c, const char *id);

/* Up to 5 ids near `name` (edit distance, or sharing a prefix), comma
 * separated, into buf ("" when none): for "unknown model" messages. */
enum cat_table { CAT_MODELS, CAT_DEVICES, CAT_PRICES };
void catalog_near(const struct catalog *c, enum cat_table t, const char *name, char *buf, size_t size);

const char *cat_kind_name(enum cat_kind k);

/* ---- GGUF files by name (plumb pull NAME[:QUANT], plumb search) ---- */

/* The quantization names a catalog "gguf" entry may list (canonical, upper
 * case), NULL-terminated. */
extern const char *const cat_gguf_quants[];

/* The file of quantization quant (case-insensitive) in m's repository;
 * NULL when m has no repository or not that file. */
const struct cat_gguf_file *cat_gguf_file_of(const struct cat_model *m, const char *quant);

/* A model name resolved to the file to download. */
#define CAT_GGUF_DEFAULT_QUANT "Q4_K_M"
struct cat_gguf_ref {
    const struct cat_model *m;
    const struct cat_gguf_file *f;
    char url[1024];          /* {registry}/{repo}/resolve/{revision}/{file} */
    char name[112];          /* the store name it defaults to: "id:quant", lower case */
};

/* Checks a registry's base URL: http:// or https://, with a host, no
 * query, fragment, spaces or control characters. */
int catalog_registry_check(const char *registry, pb_err *err);

/* Resolves "NAME[:QUANT]" (both case-insensitive) against the catalog's
 * models: the quantization defaults to Q4_K_M when the repository has it.
 * Fails, with a message for the user, with PB_ENOTFOUND for an unknown
 * name (naming close ids), PB_EUNSUPPORTED for a model without a known
 * repository, and PB_EINVAL for a quantization the catalog does not list
 * for the model, or no default (listing those it does), or a bad
 * registry URL. Nothing is fetched. */
int catalog_gguf_resolve(const struct catalog *c, const char *spec, const char *registry, struct cat_gguf_ref *out,
                         pb_err *err);

/* ==== capacity planning ====
 *
 * Capacity planning: for a model's shape on a device, per quantization,
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
 * records of models of the same size (survey_calib_applies), the same file
 * type's when there is one; the row says which record (eff_from); elsewhere they are the
 * catalog's figures with an assumed efficiency per kind of device.
 */

#define PLAN_MAX_QUANTS 16
#define PLAN_MAX_CAL 32
#define PLAN_BATCH ENGINE_DEFAULT_BATCH /* tokens per forward pass of a prompt */

/* The quantizations plan considers are the rows of a plan_result, best
 * quality first. Index of a quantization by name (case-insensitive), -1 when unknown. */
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

/* KV cache bytes of one sequence of ctx positions (kv_type: enum pb_kv_type). */
uint64_t plan_kv_bytes(const struct cat_model *m, int64_t ctx, enum pb_kv_type kv_type);

struct plan_cal {
    char ftype[16];
    double eff_tg, eff_pp;   /* 0: that test was not run */
    double bw_gbs;           /* the bandwidth that bench run measured */
    bool same_threads;       /* measured with the thread count plan assumes */
    uint64_t weight_bytes;   /* of the model benchmarked: it calibrates models of its size class */
    char from[200];          /* "plumb bench tinyllama-1.1b:Q4_0 (Q4_0, 606.5 MiB), 2 threads, 2026-12-02T09:23:15Z" */
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
    enum pb_kv_type kv_type;
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
    char eff_from[256];      /* "assumed", the record used (model, type, size, threads, when), or the median's */
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

/* The catalog ranked for a target: every model evaluated (with the
 * context capped at the model's own unless ctx_given), its row picked
 * (the recommended one, else the smallest that fits, else the smallest),
 * sorted by verdict and then by size, largest first. *out has
 * cat->n_models entries; free() it. */
enum plan_verdict { PLAN_MEETS, PLAN_SLOW, PLAN_TOO_BIG };
const char *plan_verdict_name(enum plan_verdict v); /* "meets", "slow", "too big" */
struct plan_ranked {
    const struct cat_model *m;
    struct plan_result r;
    int pick;
    enum plan_verdict verdict;
};
int plan_rank(const struct catalog *cat, const struct plan_target *t, const struct plan_params *p, bool ctx_given,
              struct plan_ranked **out, pb_err *err);

/* What one device produces of a model for the TCO: the quantization
 * (given, else the recommended one, else the largest that fits), with as
 * many users batched as memory allows (at most 64), its aggregate
 * generation rate, and the share of the day it must run to produce
 * tokens_out_day. PB_ENOTFOUND for an unknown model, PB_EINVAL for an
 * unknown quantization or no device, PB_ERANGE when it does not fit. */
struct plan_capacity {
    bool known;
    char quant[16];
    double tps;          /* aggregate generation tokens/s */
    double needed_share; /* of the day under load to produce the output volume */
};
int plan_capacity(const struct catalog *cat, const char *model_id, const struct cat_device *d, const char *quant,
                  double tokens_out_day, struct plan_capacity *cap, pb_err *err);

/* A GGUF file's shape as a catalog model (id: the file name); *ftype gets
 * the file's general.file_type name ("" when absent). */
int plan_model_from_gguf(const char *path, struct cat_model *m, char *ftype, size_t ftype_size, pb_err *err);

/* ==== total cost of ownership ====
 *
 * Total cost of ownership: running a model on premise against paying a
 * cloud API per token.
 *
 * The arithmetic, all per month of 365.25 / 12 = 30.4375 days (730.5 h):
 *   average power  = idle + utilisation x (load - idle)             W
 *   energy         = average power x 730.5 / 1000 x price per kWh
 *   capex          = (purchase + extra) / (12 x years)
 *   upkeep         = hours x rate
 *   on premise     = capex + energy + upkeep; opex = energy + upkeep
 *   tokens         = (input + output per day) x 30.4375
 *   API            = (input x in price + output x out price) per day
 *                    x 30.4375 / 1e6
 *   per Mtok       = monthly cost / (tokens / 1e6), both sides
 *   break-even volume: tokens a month at which the API bill equals the
 *                    on-premise month (same input:output mix)
 *   break-even time: months until the cumulative costs meet, the machine
 *                    bought up front: purchase / (API - opex); never when
 *                    the API costs no more than the opex
 */

#define TCO_DAYS_PER_MONTH (365.25 / 12.0)
#define TCO_HOURS_PER_MONTH (TCO_DAYS_PER_MONTH * 24.0)

struct tco_inputs {
    double capex;            /* purchase price of the hardware */
    double extra_capex;      /* the rest of the machine, installation */
    double power_w;          /* draw under load */
    double idle_w;           /* draw when idle */
    double kwh_price;
    double utilisation;      /* share of the time under load, 0..1 */
    double years;            /* amortisation */
    double upkeep_hours;     /* per month */
    double upkeep_rate;      /* per hour */
    double tokens_in_day, tokens_out_day;
    double api_in, api_out;  /* price per million tokens */
};

struct tco_result {
    double avg_power_w, energy_kwh_month;
    double capex_month, energy_month, upkeep_month, opex_month, onprem_month;
    double tokens_month, api_month;
    double onprem_per_mtok, api_per_mtok;
    double breakeven_tokens_month;  /* inf when the API is free */
    double breakeven_months;        /* < 0: never */
    double saving_month;            /* API - on premise (negative: the API is cheaper) */
};

/* Checks the inputs (no negative money, power or volume; utilisation
 * 0..1; idle <= load; years > 0) and computes. */
int tco_compute(const struct tco_inputs *in, struct tco_result *r, pb_err *err);

/* The sensitivity table's variations of the inputs (volume, electricity,
 * hardware and upkeep halved and doubled, full utilisation, five years):
 * fills v (at least TCO_MAX_VARIANTS) and returns how many. */
#define TCO_MAX_VARIANTS 12
struct tco_variant {
    const char *what;
    struct tco_inputs in;
};
int tco_variants(const struct tco_inputs *in, struct tco_variant *v);

/* The chart: cumulative cost over `months` months, on premise (starting at
 * the purchase) against the API, with the break-even point. Written as SVG
 * or PNG by the file name's extension. */
struct tco_chart {
    const char *title;
    const char *onprem_label, *api_label;
    const char *currency;
    double months;
};
int tco_chart_write(const char *path, const struct tco_inputs *in, const struct tco_result *r,
                    const struct tco_chart *c, pb_err *err);

#endif
