/* Shared by the attention kernels (internal to src/kernels): the layout of
 * a thread's scratch (kern_attn_scratch sizes it) and the work items.
 *
 * An item is a block of up to KERN_ATTN_QBLOCK consecutive tokens and one
 * KV head: its H = tokens x G query heads ("rows" below) share every K/V
 * tile, which is converted to floats once for all of them. Row i is token
 * t0 + i / G, query head g * G + i % G; it attends to the positions up to
 * its own (causal; an encoder's rows see all the block's keys) and, with a
 * window, from its own first key, in tiles of
 * KERN_ATTN_TILE at fixed multiples of KERN_ATTN_TILE, skipping the tiles
 * it sees nothing of, so each row's arithmetic is the same whatever block
 * it is in. */
#ifndef PLUMB_KERNELS_ATTN_ITEM_H
#define PLUMB_KERNELS_ATTN_ITEM_H

#include "kernels/kernels.h"
#include "kernels/poly.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

struct attn_work {
    float *kt, *vt;  /* K and V tiles as floats */
    float *s;        /* scores: rows x KERN_ATTN_TILE */
    float *o;        /* outputs: rows x head_dim */
    float *mx, *sum; /* running max and sum of each row */
};

static inline struct attn_work attn_work_at(float *scratch, int hd, int G)
{
    const int rows = KERN_ATTN_QBLOCK * G;
    struct attn_work w;
    w.kt = scratch;
    w.vt = w.kt + KERN_ATTN_TILE * hd;
    w.s = w.vt + KERN_ATTN_TILE * hd;
    w.o = w.s + rows * KERN_ATTN_TILE;
    w.mx = w.o + rows * hd;
    w.sum = w.mx + rows;
    return w;
}

struct attn_item {
    int t0, g;      /* first token of the block, KV head */
    int rows;       /* tokens of the block x G */
    int64_t k_lo;   /* first key position of the block's first tile (a tile boundary) */
    int64_t n_keys; /* positions the block's last token attends to: keys below n_keys */
};

/* The first key position query position p sees. */
static inline int64_t attn_first_key(const struct kern_attn_args *a, int64_t p)
{
    return a->window > 0 && p - a->window + 1 > 0 ? p - a->window + 1 : 0;
}

/* Decodes item and resets the outputs and running figures of its rows
 * (a head with a sink starts with the sink as its only term). */
static inline struct attn_item attn_item_begin(const struct kern_attn_args *a, int64_t item, const struct attn_work *w)
{
    const int hd = a->head_dim, G = a->n_head / a->n_head_kv;
    struct attn_item it;
    it.t0 = (int)(item / a->n_head_kv) * KERN_ATTN_QBLOCK;
    it.g = (int)(item % a->n_head_kv);
    const int nq = a->n_tok - it.t0 < KERN_ATTN_QBLOCK ? a->n_tok - it.t0 : KERN_ATTN_QBLOCK;
    it.rows = nq * G;
    it.n_keys = a->non_causal ? a->pos0 + a->n_tok : a->pos0 + it.t0 + nq;
    it.k_lo = attn_first_key(a, a->pos0 + it.t0) / KERN_ATTN_TILE * KERN_ATTN_TILE;
    memset(w->o, 0, (size_t)(it.rows * hd) * sizeof *w->o);
    for (int i = 0; i < it.rows; i++) {
        if (a->sinks) {
            w->mx[i] = a->sinks[it.g * G + i % G];
            w->sum[i] = 1.0f;
        } else {
            w->mx[i] = -INFINITY;
            w->sum[i] = 0;
        }
    }
    return it;
}

/* Offset (in floats) of row i's query in a->q and its output in a->out. */
static inline size_t attn_row_offset(const struct kern_attn_args *a, const struct attn_item *it, int i)
{
    const int G = a->n_head / a->n_head_kv;
    const size_t t = (size_t)(it->t0 + i / G);
    return (t * (size_t)a->n_head + (size_t)(it->g * G + i % G)) * (size_t)a->head_dim;
}

/* The keys [*j0, *j1) of the tile's n keys from position k0 that row i
 * attends to; false when none. */
static inline bool attn_row_keys(const struct kern_attn_args *a, const struct attn_item *it, int i, int64_t k0, int n,
                                 int *j0, int *j1)
{
    const int G = a->n_head / a->n_head_kv;
    const int64_t p = a->pos0 + it->t0 + i / G; /* the row's own position */
    const int64_t lo = attn_first_key(a, p) - k0, hi = (a->non_causal ? a->pos0 + a->n_tok : p + 1) - k0;
    *j0 = lo > 0 ? (int)lo : 0;
    *j1 = hi < n ? (int)(hi > 0 ? hi : 0) : n;
    return *j0 < *j1;
}

/* Position j's row of the keys (values when v): below n_shared in the
 * shared rows, else in the layer's own (a ring's row j % kv_cap). */
static inline const uint8_t *attn_row(const struct kern_attn_args *a, bool v, int64_t j)
{
    if (j < a->n_shared)
        return (const uint8_t *)(v ? a->v_shared : a->k_shared) + (size_t)j * a->kv_row_bytes;
    return (const uint8_t *)(v ? a->v : a->k) + (size_t)(a->kv_cap > 0 ? j % a->kv_cap : j) * a->kv_row_bytes;
}

/* The score of a dot product: scaled, then soft-capped when asked. */
static inline float attn_score(const struct kern_attn_args *a, float dot)
{
    const float s = dot * a->scale;
    return a->softcap > 0 ? poly_softcap(s, a->softcap) : s;
}

#endif
