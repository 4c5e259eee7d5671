/* Shared by the attention kernels (internal to src/kernels): the layout of
 * a thread's scratch (kern_attn_scratch sizes it) and the start of one
 * work item, a (token, KV head) pair. */
#ifndef PLUMB_KERNELS_ATTN_ITEM_H
#define PLUMB_KERNELS_ATTN_ITEM_H

#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

struct attn_work {
    float *kt, *vt; /* K and V tiles as floats */
    float *s;       /* scores: G x KERN_ATTN_TILE */
    float *o;       /* outputs: G x head_dim */
    float *mx, *sum; /* running max and sum of each of the G heads */
};

static inline struct attn_work attn_work_at(float *scratch, int hd, int G)
{
    struct attn_work w;
    w.kt = scratch;
    w.vt = w.kt + KERN_ATTN_TILE * hd;
    w.s = w.vt + KERN_ATTN_TILE * hd;
    w.o = w.s + G * KERN_ATTN_TILE;
    w.mx = w.o + G * hd;
    w.sum = w.mx + G;
    return w;
}

struct attn_item {
    int t, g;         /* token of the batch, KV head */
    int64_t n_keys;   /* positions it attends to (causal) */
    const float *q;   /* the G query heads that share KV head g */
};

/* Decodes item and resets the outputs and running figures of its heads. */
static inline struct attn_item attn_item_begin(const struct kern_attn_args *a, int64_t item, const struct attn_work *w)
{
    const int hd = a->head_dim, G = a->n_head / a->n_head_kv;
    struct attn_item it;
    it.t = (int)(item / a->n_head_kv);
    it.g = (int)(item % a->n_head_kv);
    it.n_keys = a->pos0 + it.t + 1;
    it.q = a->q + ((size_t)it.t * (size_t)a->n_head + (size_t)it.g * (size_t)G) * (size_t)hd;
    memset(w->o, 0, (size_t)(G * hd) * sizeof *w->o);
    for (int i = 0; i < G; i++) {
        w->mx[i] = -INFINITY;
        w->sum[i] = 0;
    }
    return it;
}

#endif
