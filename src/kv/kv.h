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
 *
 * Sequences that share a prompt prefix share its rows: a cache may read
 * positions [0, n_shared) of its full layers from another cache's rows
 * (`shared`, which reads nothing from a third) in whole blocks of
 * KV_BLOCK positions, and holds no memory of its own for them (the pages
 * are given back). Ring layers are small and rewritten as positions
 * advance: each cache keeps its own. Writing is the caller's to order:
 * before the owner of shared rows overwrites them, whoever reads them
 * takes a copy (kv_before_write), so sharing is copy-on-write by blocks.
 */
#ifndef PLUMB_KV_KV_H
#define PLUMB_KV_KV_H

#include "base/err.h"
#include "plumb/base.h"
#include "quant/types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Positions per shared block: a multiple of the attention kernels' tile,
 * so that a tile of keys never straddles two caches. */
#define KV_BLOCK 32

/* The cache types (enum pb_kv_type) and their names are public: plumb/base.h. */

/* The tensor type a cache type stores. */
enum pb_type kv_type_pb(enum pb_kv_type t);

struct kv_cache {
    int n_layer;
    int64_t n_ctx;
    int64_t kv_dim;   /* n_head_kv * head_dim */
    enum pb_kv_type type;
    size_t row_bytes; /* one position's keys (or values) */
    uint8_t *k, *v;   /* the layers' rows, one after the other */
    int64_t *cap;     /* [n_layer]: rows of each layer (n_ctx, or a ring) */
    size_t *off;      /* [n_layer]: byte offset of each layer's rows */
    size_t bytes;     /* of k (and of v): mapped, committed as touched */
    void (*to_row)(const float *src, void *dst, int64_t n); /* floats to the stored type */
    const struct kv_cache *shared; /* whose rows positions [0, n_shared) of full layers are read from */
    int64_t n_shared;              /* a multiple of KV_BLOCK; 0 when shared is NULL */
};

/* Memory is reserved, not touched: pages are committed as positions fill.
 * layer_cap gives each layer's rows (at most n_ctx; NULL: n_ctx for all). */
int kv_alloc(struct kv_cache *kv, int n_layer, int64_t n_ctx, int64_t kv_dim, enum pb_kv_type type,
             const int64_t *layer_cap, pb_err *err);
void kv_free(struct kv_cache *kv);

/* Layer l's own rows (row r at r * row_bytes). */
static inline const void *kv_k(const struct kv_cache *kv, int l)
{
    return kv->k + kv->off[l];
}

static inline const void *kv_v(const struct kv_cache *kv, int l)
{
    return kv->v + kv->off[l];
}

/* Whether layer l holds every position (not a ring): the layers whose
 * rows are shared. */
static inline bool kv_layer_full(const struct kv_cache *kv, int l)
{
    return kv->cap[l] == kv->n_ctx;
}

/* Positions of layer l read from kv->shared's rows (0 for a ring). */
static inline int64_t kv_layer_shared(const struct kv_cache *kv, int l)
{
    return kv->shared && kv_layer_full(kv, l) ? kv->n_shared : 0;
}

/* Converts n rows of keys and values (kv_dim floats each) into layer l at
 * positions pos0 .. pos0 + n - 1 (rows modulo the layer's cap; n <= cap). */
void kv_store(struct kv_cache *kv, int l, int64_t pos0, int n, const float *k_rows, const float *v_rows);

/* The caches of a context's sequences, set[0 .. n_set), sharing rows
 * only among themselves. */

/* Before set[w] is written at positions >= from: it stops reading shared
 * rows there (keeping the whole blocks below and copying the rest of
 * [block, from) into its own), and every cache that reads set[w]'s rows
 * at or after from's block takes them first: each a copy of what it
 * needs, or, when that is less to copy, the one that reads most copies
 * all it reads and the others read from it instead. */
void kv_before_write(struct kv_cache *set, int n_set, int w, int64_t from);
/* set[dst]'s positions [0, n) become set[src]'s (same shape): the whole
 * blocks of full layers by sharing src's rows (or those src shares), the
 * rest and every ring layer by copying. */
void kv_copy(struct kv_cache *set, int n_set, int dst, int src, int64_t n);
/* Positions kv reads from another cache (0: none). */
static inline int64_t kv_n_shared(const struct kv_cache *kv)
{
    return kv->shared ? kv->n_shared : 0;
}

/* Bytes both caches take: n_layer layers of n_ctx rows. */
uint64_t kv_bytes(int n_layer, int64_t n_ctx, int64_t kv_dim, enum pb_kv_type type);
/* Bytes a cache's keys and values take in all (its layers' caps). */
uint64_t kv_cache_bytes(const struct kv_cache *kv);

#endif
