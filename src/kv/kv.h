/* The KV cache of one sequence: for each layer, keys and values, one row
 * per position ([cap][kv_dim] each) so that a batch's rows are appended in
 * place.
 *
 * A layer holds either every position of the context (cap == n_ctx) or,
 * for a sliding-window layer, a ring of cap rows: position p lives in row
 * p % cap, so the layer's memory stays at its window whatever the context.
 * (cap is the window plus a batch, so a batch's new rows never overwrite
 * a key its own first token still attends to.) Rows are addressed the same
 * way in both cases, since p % n_ctx == p.
 *
 * Stored as F16 by default (half the memory and memory traffic of F32,
 * and what llama.cpp keeps), or F32, or Q8_0 (blocks of 32 along each
 * row; needs kv_dim a multiple of 32). Rows arrive as floats and are
 * converted by kv_store; the attention kernels read the stored type.
 */
#ifndef PLUMB_KV_KV_H
#define PLUMB_KV_KV_H

#include "base/err.h"
#include "quant/types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kv_type {
    KV_F16, /* the default */
    KV_F32,
    KV_Q8_0,
};

const char *kv_type_name(enum kv_type t);
/* "f16", "f32", "q8_0" (any case); false when unknown. */
bool kv_type_from_name(const char *name, enum kv_type *out);
/* The tensor type a cache type stores. */
enum pb_type kv_type_pb(enum kv_type t);

struct kv_cache {
    int n_layer;
    int64_t n_ctx;
    int64_t kv_dim;   /* n_head_kv * head_dim */
    enum kv_type type;
    size_t row_bytes; /* one position's keys (or values) */
    uint8_t *k, *v;   /* the layers' rows, one after the other */
    int64_t *cap;     /* [n_layer]: rows of each layer (n_ctx, or a ring) */
    size_t *off;      /* [n_layer]: byte offset of each layer's rows */
};

/* Memory is reserved, not touched: pages are committed as positions fill.
 * layer_cap gives each layer's rows (at most n_ctx; NULL: n_ctx for all). */
int kv_alloc(struct kv_cache *kv, int n_layer, int64_t n_ctx, int64_t kv_dim, enum kv_type type,
             const int64_t *layer_cap, pb_err *err);
void kv_free(struct kv_cache *kv);

/* Layer l's rows (row r at r * row_bytes). */
static inline const void *kv_k(const struct kv_cache *kv, int l)
{
    return kv->k + kv->off[l];
}

static inline const void *kv_v(const struct kv_cache *kv, int l)
{
    return kv->v + kv->off[l];
}

/* Converts n rows of keys and values (kv_dim floats each) into layer l at
 * positions pos0 .. pos0 + n - 1 (rows modulo the layer's cap; n <= cap). */
void kv_store(struct kv_cache *kv, int l, int64_t pos0, int n, const float *k_rows, const float *v_rows);

/* dst's positions [0, n) of every full layer become src's, and every ring
 * layer becomes a copy of src's ring (same shape). */
void kv_copy(struct kv_cache *dst, const struct kv_cache *src, int64_t n);

/* Bytes both caches take: n_layer layers of n_ctx rows. */
uint64_t kv_bytes(int n_layer, int64_t n_ctx, int64_t kv_dim, enum kv_type type);
/* Bytes a cache's keys and values take in all (its layers' caps). */
uint64_t kv_cache_bytes(const struct kv_cache *kv);

#endif
