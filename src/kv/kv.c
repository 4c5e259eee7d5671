#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, madvise */
#include "kv/kv.h"

#include "kernels/kernels.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

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

uint64_t kv_cache_bytes(const struct kv_cache *kv)
{
    uint64_t rows = 0;
    for (int l = 0; l < kv->n_layer; l++)
        rows += (uint64_t)kv->cap[l];
    return 2ull * rows * kv->row_bytes;
}

int kv_alloc(struct kv_cache *kv, int n_layer, int64_t n_ctx, int64_t kv_dim, enum pb_kv_type type,
             const int64_t *layer_cap, pb_err *err)
{
    memset(kv, 0, sizeof *kv);
    if (n_layer <= 0 || n_ctx <= 0 || kv_dim <= 0)
        return pb_fail(err, PB_EINVAL, "bad KV cache shape (%d layers, %lld positions, %lld dims)", n_layer,
                       (long long)n_ctx, (long long)kv_dim);
    if ((unsigned)type > PB_KV_Q8_0)
        return pb_fail(err, PB_EINVAL, "unknown KV cache type %d", (int)type);
    if (type == PB_KV_Q8_0 && kv_dim % 32 != 0)
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
    /* mapped, not allocated: zero pages are committed as positions fill,
     * and the pages of positions read from another cache can be given
     * back (release_rows) */
    kv->bytes = rows * row;
    kv->k = mmap(NULL, kv->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    kv->v = mmap(NULL, kv->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (kv->k == MAP_FAILED || kv->v == MAP_FAILED) {
        kv_free(kv);
        return pb_fail(err, PB_ENOMEM, "cannot allocate the KV cache (%.1f MiB)",
                       2.0 * (double)rows * (double)row / (1024.0 * 1024.0));
    }
    /* F16 rows by the CPU's conversion instruction where it has one */
    kv->to_row = type == PB_KV_F16 ? kern_to_f16_for(kern_level()) : pb_type_get(kv_type_pb(type))->from_float;
    kv->n_layer = n_layer;
    kv->n_ctx = n_ctx;
    kv->kv_dim = kv_dim;
    kv->type = type;
    kv->row_bytes = row;
    return PB_OK;
}

void kv_free(struct kv_cache *kv)
{
    if (kv->k && kv->k != MAP_FAILED)
        munmap(kv->k, kv->bytes);
    if (kv->v && kv->v != MAP_FAILED)
        munmap(kv->v, kv->bytes);
    free(kv->cap);
    free(kv->off);
    kv->k = kv->v = NULL;
    kv->cap = NULL;
    kv->off = NULL;
    kv->shared = NULL;
    kv->n_shared = 0;
}

void kv_store(struct kv_cache *kv, int l, int64_t pos0, int n, const float *k_rows, const float *v_rows)
{
    const int64_t cap = kv->cap[l];
    for (int i = 0; i < n; i++) {
        const size_t at = kv->off[l] + (size_t)((pos0 + i) % cap) * kv->row_bytes;
        kv->to_row(k_rows + (size_t)i * (size_t)kv->kv_dim, kv->k + at, kv->kv_dim);
        kv->to_row(v_rows + (size_t)i * (size_t)kv->kv_dim, kv->v + at, kv->kv_dim);
    }
}

/* ---- sharing ---- */

static int64_t block_floor(int64_t pos)
{
    return pos / KV_BLOCK * KV_BLOCK;
}

/* Gives back the whole pages of kv's own rows of positions [lo, hi) in
 * the full layers (they read as zeros if touched again). */
static void release_rows(struct kv_cache *kv, int64_t lo, int64_t hi)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (int l = 0; l < kv->n_layer && lo < hi; l++) {
        if (!kv_layer_full(kv, l))
            continue;
        size_t a = kv->off[l] + (size_t)lo * kv->row_bytes, b = kv->off[l] + (size_t)hi * kv->row_bytes;
        a = (a + page - 1) / page * page;
        b = b / page * page;
        if (a < b) {
            madvise(kv->k + a, b - a, MADV_DONTNEED);
            madvise(kv->v + a, b - a, MADV_DONTNEED);
        }
    }
}

/* Copies layer l's own rows [lo, hi) of from into dst's own rows. */
static void copy_layer_rows(struct kv_cache *dst, const struct kv_cache *from, int l, int64_t lo, int64_t hi)
{
    if (lo >= hi)
        return;
    const size_t at = (size_t)lo * from->row_bytes, bytes = (size_t)(hi - lo) * from->row_bytes;
    memcpy(dst->k + dst->off[l] + at, from->k + from->off[l] + at, bytes);
    memcpy(dst->v + dst->off[l] + at, from->v + from->off[l] + at, bytes);
}

/* Copies the full layers' rows [lo, hi) of src's positions (those it
 * shares, then its own) into dst's own rows. */
static void copy_rows(struct kv_cache *dst, const struct kv_cache *src, int64_t lo, int64_t hi)
{
    for (int l = 0; l < src->n_layer; l++) {
        if (!kv_layer_full(src, l))
            continue;
        const int64_t split = kv_layer_shared(src, l);
        if (split > 0)
            copy_layer_rows(dst, src->shared, l, lo, hi < split ? hi : split);
        copy_layer_rows(dst, src, l, lo > split ? lo : split, hi);
    }
}

/* kv reads shared rows only below `keep` (a block boundary), holding its
 * own copy of those of [keep, upto). */
static void shrink_sharing(struct kv_cache *kv, int64_t keep, int64_t upto)
{
    if (kv_n_shared(kv) <= keep)
        return;
    if (upto > kv->n_shared)
        upto = kv->n_shared;
    struct kv_cache reader = *kv; /* the rows as they are read now */
    copy_rows(kv, &reader, keep, upto);
    kv->n_shared = keep;
    if (keep == 0)
        kv->shared = NULL;
}

void kv_before_write(struct kv_cache *set, int n_set, int w, int64_t from)
{
    struct kv_cache *kv = &set[w];
    const int64_t keep = block_floor(from);
    shrink_sharing(kv, keep, from);
    /* the readers of rows at or after keep: copy each (cost: what each
     * needs beyond keep), or hand all of it to the one reading most */
    int most = -1;
    int64_t each = 0;
    for (int r = 0; r < n_set; r++) {
        if (set[r].shared != kv || set[r].n_shared <= keep)
            continue;
        each += set[r].n_shared - keep;
        if (most < 0 || set[r].n_shared > set[most].n_shared)
            most = r;
    }
    if (most < 0)
        return;
    if (each <= set[most].n_shared) {
        for (int r = 0; r < n_set; r++)
            if (set[r].shared == kv)
                shrink_sharing(&set[r], keep, set[r].n_shared);
        return;
    }
    struct kv_cache *heir = &set[most];
    shrink_sharing(heir, 0, heir->n_shared);
    for (int r = 0; r < n_set; r++)
        if (set[r].shared == kv && set[r].n_shared > keep)
            set[r].shared = heir; /* heir holds at least as many rows */
}

void kv_copy(struct kv_cache *set, int n_set, int dst, int src, int64_t n)
{
    struct kv_cache *d = &set[dst];
    const struct kv_cache *s = &set[src];
    kv_before_write(set, n_set, dst, 0);
    /* the blocks to share, from whoever holds them */
    const struct kv_cache *owner = s->shared ? s->shared : s;
    int64_t share = block_floor(n);
    if (s->shared && share > s->n_shared)
        share = s->n_shared;
    if (share > 0) {
        release_rows(d, 0, share);
        d->shared = owner;
        d->n_shared = share;
    }
    copy_rows(d, s, share, n);
    for (int l = 0; l < s->n_layer; l++) { /* rings: whole */
        if (kv_layer_full(s, l))
            continue;
        const size_t bytes = (size_t)s->cap[l] * s->row_bytes;
        memcpy(d->k + d->off[l], s->k + s->off[l], bytes);
        memcpy(d->v + d->off[l], s->v + s->off[l], bytes);
    }
}
