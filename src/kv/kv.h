/* The KV cache of one sequence: for each layer, keys and values of every
 * position, position-major ([n_ctx][kv_dim] each) so that a batch's rows
 * are appended in place.
 *
 * Stored as F16 by default (half the memory and memory traffic of F32,
 * and what llama.cpp keeps), or F32, or Q8_0 (blocks of 32 along each
 * row; needs kv_dim a multiple of 32). Rows arrive as floats and are
 * converted by kv_store; the attention kernels read the stored type.
 */
#ifndef PLUMB_KV_KV_H
#define PLUMB_KV_KV_H

#include "base/err.h"
#include "plumb/base.h"
#include "quant/types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The cache types (enum pb_kv_type) and their names are public: plumb/base.h. */

/* The tensor type a cache type stores. */
enum pb_type kv_type_pb(enum pb_kv_type t);

struct kv_cache {
    int n_layer;
    int64_t n_ctx;
    int64_t kv_dim;   /* n_head_kv * head_dim */
    enum pb_kv_type type;
    size_t row_bytes; /* one position's keys (or values) */
    uint8_t *k, *v;   /* [n_layer][n_ctx] rows */
};

/* Memory is reserved, not touched: pages are committed as positions fill. */
int kv_alloc(struct kv_cache *kv, int n_layer, int64_t n_ctx, int64_t kv_dim, enum pb_kv_type type, pb_err *err);
void kv_free(struct kv_cache *kv);

/* Layer l's keys / values from position 0. */
static inline const void *kv_k(const struct kv_cache *kv, int l)
{
    return kv->k + (size_t)l * (size_t)kv->n_ctx * kv->row_bytes;
}

static inline const void *kv_v(const struct kv_cache *kv, int l)
{
    return kv->v + (size_t)l * (size_t)kv->n_ctx * kv->row_bytes;
}

/* Converts n rows of keys and values (kv_dim floats each) into layer l at
 * positions pos0 .. pos0 + n - 1. */
void kv_store(struct kv_cache *kv, int l, int64_t pos0, int n, const float *k_rows, const float *v_rows);

/* dst's first n positions of every layer become src's (same shape). */
void kv_copy(struct kv_cache *dst, const struct kv_cache *src, int64_t n);

/* Bytes both caches take at full context. */
uint64_t kv_bytes(int n_layer, int64_t n_ctx, int64_t kv_dim, enum pb_kv_type type);

#endif
