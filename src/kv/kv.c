#include "kv/kv.h"

#include <stdlib.h>

uint64_t kv_bytes(int n_layer, int64_t n_ctx, int64_t kv_dim)
{
    return 2ull * (uint64_t)n_layer * (uint64_t)n_ctx * (uint64_t)kv_dim * sizeof(float);
}

int kv_alloc(struct kv_cache *kv, int n_layer, int64_t n_ctx, int64_t kv_dim, pb_err *err)
{
    kv->k = kv->v = NULL;
    if (n_layer <= 0 || n_ctx <= 0 || kv_dim <= 0)
        return pb_fail(err, PB_EINVAL, "bad KV cache shape (%d layers, %lld positions, %lld dims)", n_layer,
                       (long long)n_ctx, (long long)kv_dim);
    size_t n = (size_t)n_layer * (size_t)n_ctx * (size_t)kv_dim;
    if (n / (size_t)n_layer / (size_t)n_ctx != (size_t)kv_dim || n > SIZE_MAX / sizeof(float))
        return pb_fail(err, PB_ENOMEM, "KV cache size overflows");
    /* calloc of a large block maps zero pages lazily */
    kv->k = calloc(n, sizeof(float));
    kv->v = calloc(n, sizeof(float));
    if (!kv->k || !kv->v) {
        kv_free(kv);
        return pb_fail(err, PB_ENOMEM, "cannot allocate the KV cache (%.1f MiB)",
                       (double)kv_bytes(n_layer, n_ctx, kv_dim) / (1024.0 * 1024.0));
    }
    kv->n_layer = n_layer;
    kv->n_ctx = n_ctx;
    kv->kv_dim = kv_dim;
    return PB_OK;
}

void kv_free(struct kv_cache *kv)
{
    free(kv->k);
    free(kv->v);
    kv->k = kv->v = NULL;
}
