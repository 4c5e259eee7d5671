/* The KV cache of one sequence: for each layer, keys and values of every
 * position, [n_ctx x kv_dim] floats each, position-major so that the K/V
 * projections of a batch are written in place.
 *
 * F32 only for now; F16 and Q8_0 caches (with their attention kernels) are
 * the planned extension, which is why the layout is hidden behind kv_k /
 * kv_v rather than used as raw arrays by callers that write it.
 */
#ifndef PLUMB_KV_KV_H
#define PLUMB_KV_KV_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

struct kv_cache {
    int n_layer;
    int64_t n_ctx;
    int64_t kv_dim; /* n_head_kv * head_dim */
    float *k, *v;   /* [n_layer][n_ctx][kv_dim] */
};

/* Memory is reserved, not touched: pages are committed as positions fill. */
int kv_alloc(struct kv_cache *kv, int n_layer, int64_t n_ctx, int64_t kv_dim, pb_err *err);
void kv_free(struct kv_cache *kv);

/* Start of layer l's keys / values (position 0). */
static inline float *kv_k(const struct kv_cache *kv, int l)
{
    return kv->k + (size_t)l * (size_t)kv->n_ctx * (size_t)kv->kv_dim;
}

static inline float *kv_v(const struct kv_cache *kv, int l)
{
    return kv->v + (size_t)l * (size_t)kv->n_ctx * (size_t)kv->kv_dim;
}

/* Bytes both caches take at full context. */
uint64_t kv_bytes(int n_layer, int64_t n_ctx, int64_t kv_dim);

#endif
