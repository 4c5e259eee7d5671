#include "kv/kv.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const names[] = {"f16", "f32", "q8_0"};

const char *kv_type_name(enum kv_type t)
{
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

bool kv_type_from_name(const char *name, enum kv_type *out)
{
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(name, names[i])) {
            *out = (enum kv_type)i;
            return true;
        }
    return false;
}

enum pb_type kv_type_pb(enum kv_type t)
{
    return t == KV_F32 ? PB_TYPE_F32 : t == KV_Q8_0 ? PB_TYPE_Q8_0 : PB_TYPE_F16;
}

uint64_t kv_bytes(int n_layer, int64_t n_ctx, int64_t kv_dim, enum kv_type type)
{
    return 2ull * (uint64_t)n_layer * (uint64_t)n_ctx * pb_row_size(kv_type_pb(type), kv_dim);
}

uint64_t kv_cache_bytes(const struct kv_cache *kv)
{
    uint64_t rows = 0;
    for (int l = 0; l < kv->n_layer; l++)
        rows += (uint64_t)kv->cap[l];
    return 2ull * rows * kv->row_bytes;
}

int kv_alloc(struct kv_cache *kv, int n_layer, int64_t n_ctx, int64_t kv_dim, enum kv_type type,
             const int64_t *layer_cap, pb_err *err)
{
    memset(kv, 0, sizeof *kv);
    if (n_layer <= 0 || n_ctx <= 0 || kv_dim <= 0)
        return pb_fail(err, PB_EINVAL, "bad KV cache shape (%d layers, %lld positions, %lld dims)", n_layer,
                       (long long)n_ctx, (long long)kv_dim);
    if ((unsigned)type > KV_Q8_0)
        return pb_fail(err, PB_EINVAL, "unknown KV cache type %d", (int)type);
    if (type == KV_Q8_0 && kv_dim % 32 != 0)
        return pb_fail(err, PB_EINVAL, "a q8_0 KV cache needs rows of a multiple of 32 values, not %lld",
                       (long long)kv_dim);
    const size_t row = pb_row_size(kv_type_pb(type), kv_dim);
    kv->cap = malloc((size_t)n_layer * sizeof *kv->cap);
    kv->off = malloc((size_t)n_layer * sizeof *kv->off);
    if (!kv->cap || !kv->off) {
        kv_free(kv);
        return pb_fail(err, PB_ENOMEM, "out of memory for the KV cache's layers");
    }
    size_t rows = 0;
    for (int l = 0; l < n_layer; l++) {
        const int64_t cap = layer_cap ? layer_cap[l] : n_ctx;
        if (cap < 1 || cap > n_ctx) {
            kv_free(kv);
            return pb_fail(err, PB_EINVAL, "KV cache layer %d: %lld rows, expected 1..%lld", l, (long long)cap,
                           (long long)n_ctx);
        }
        kv->cap[l] = cap;
        kv->off[l] = rows * row;
        rows += (size_t)cap;
        if (rows > SIZE_MAX / row) {
            kv_free(kv);
            return pb_fail(err, PB_ENOMEM, "KV cache size overflows");
        }
    }
    /* calloc of a large block maps zero pages lazily */
    kv->k = calloc(rows, row);
    kv->v = calloc(rows, row);
    if (!kv->k || !kv->v) {
        kv_free(kv);
        return pb_fail(err, PB_ENOMEM, "cannot allocate the KV cache (%.1f MiB)",
                       2.0 * (double)rows * (double)row / (1024.0 * 1024.0));
    }
    kv->n_layer = n_layer;
    kv->n_ctx = n_ctx;
    kv->kv_dim = kv_dim;
    kv->type = type;
    kv->row_bytes = row;
    return PB_OK;
}

void kv_free(struct kv_cache *kv)
{
    free(kv->k);
    free(kv->v);
    free(kv->cap);
    free(kv->off);
    kv->k = kv->v = NULL;
    kv->cap = NULL;
    kv->off = NULL;
}

void kv_store(struct kv_cache *kv, int l, int64_t pos0, int n, const float *k_rows, const float *v_rows)
{
    const struct pb_type_traits *tr = pb_type_get(kv_type_pb(kv->type));
    const int64_t cap = kv->cap[l];
    for (int i = 0; i < n; i++) {
        const size_t at = kv->off[l] + (size_t)((pos0 + i) % cap) * kv->row_bytes;
        tr->from_float(k_rows + (size_t)i * (size_t)kv->kv_dim, kv->k + at, kv->kv_dim);
        tr->from_float(v_rows + (size_t)i * (size_t)kv->kv_dim, kv->v + at, kv->kv_dim);
    }
}

void kv_copy(struct kv_cache *dst, const struct kv_cache *src, int64_t n)
{
    for (int l = 0; l < src->n_layer; l++) {
        const bool ring = src->cap[l] < src->n_ctx;
        const size_t bytes = (size_t)(ring ? src->cap[l] : n) * src->row_bytes;
        if (bytes == 0)
            continue;
        memcpy(dst->k + dst->off[l], src->k + src->off[l], bytes);
        memcpy(dst->v + dst->off[l], src->v + src->off[l], bytes);
    }
}
