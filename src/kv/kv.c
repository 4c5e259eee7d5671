#include "kv/kv.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const names[] = {"f16", "f32", "q8_0"};

const char *pb_kv_type_name(enum pb_kv_type t)
{
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

bool pb_kv_type_parse(const char *name, enum pb_kv_type *out)
{
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(name, names[i])) {
            *out = (enum pb_kv_type)i;
            return true;
        }
    return false;
}

enum pb_type kv_type_pb(enum pb_kv_type t)
{
    return t == PB_KV_F32 ? PB_TYPE_F32 : t == PB_KV_Q8_0 ? PB_TYPE_Q8_0 : PB_TYPE_F16;
}

uint64_t kv_bytes(int n_layer, int64_t n_ctx, int64_t kv_dim, enum pb_kv_type type)
{
    return 2ull * (uint64_t)n_layer * (uint64_t)n_ctx * pb_row_size(kv_type_pb(type), kv_dim);
}

int kv_alloc(struct kv_cache *kv, int n_layer, int64_t n_ctx, int64_t kv_dim, enum pb_kv_type type, pb_err *err)
{
    kv->k = kv->v = NULL;
    if (n_layer <= 0 || n_ctx <= 0 || kv_dim <= 0)
        return pb_fail(err, PB_EINVAL, "bad KV cache shape (%d layers, %lld positions, %lld dims)", n_layer,
                       (long long)n_ctx, (long long)kv_dim);
    if ((unsigned)type > PB_KV_Q8_0)
        return pb_fail(err, PB_EINVAL, "unknown KV cache type %d", (int)type);
    if (type == PB_KV_Q8_0 && kv_dim % 32 != 0)
        return pb_fail(err, PB_EINVAL, "a q8_0 KV cache needs rows of a multiple of 32 values, not %lld",
                       (long long)kv_dim);
    size_t row = pb_row_size(kv_type_pb(type), kv_dim);
    size_t rows = (size_t)n_layer * (size_t)n_ctx;
    if (rows / (size_t)n_layer != (size_t)n_ctx || rows > SIZE_MAX / row)
        return pb_fail(err, PB_ENOMEM, "KV cache size overflows");
    /* calloc of a large block maps zero pages lazily */
    kv->k = calloc(rows, row);
    kv->v = calloc(rows, row);
    if (!kv->k || !kv->v) {
        kv_free(kv);
        return pb_fail(err, PB_ENOMEM, "cannot allocate the KV cache (%.1f MiB)",
                       (double)kv_bytes(n_layer, n_ctx, kv_dim, type) / (1024.0 * 1024.0));
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
    kv->k = kv->v = NULL;
}

void kv_store(struct kv_cache *kv, int l, int64_t pos0, int n, const float *k_rows, const float *v_rows)
{
    const struct pb_type_traits *tr = pb_type_get(kv_type_pb(kv->type));
    size_t at = ((size_t)l * (size_t)kv->n_ctx + (size_t)pos0) * kv->row_bytes;
    for (int i = 0; i < n; i++) {
        tr->from_float(k_rows + (size_t)i * (size_t)kv->kv_dim, kv->k + at + (size_t)i * kv->row_bytes, kv->kv_dim);
        tr->from_float(v_rows + (size_t)i * (size_t)kv->kv_dim, kv->v + at + (size_t)i * kv->row_bytes, kv->kv_dim);
    }
}

void kv_copy(struct kv_cache *dst, const struct kv_cache *src, int64_t n)
{
    if (n <= 0)
        return;
    const size_t bytes = (size_t)n * src->row_bytes;
    for (int l = 0; l < src->n_layer; l++) {
        const size_t at = (size_t)l * (size_t)src->n_ctx * src->row_bytes;
        memcpy(dst->k + at, src->k + at, bytes);
        memcpy(dst->v + at, src->v + at, bytes);
    }
}
