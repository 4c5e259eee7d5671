/* The catalogs plan and tco work from: open-weight models (their real
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
#ifndef PLUMB_PLAN_CATALOG_H
#define PLUMB_PLAN_CATALOG_H

#include "base/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

#endif
