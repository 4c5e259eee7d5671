/* Scalar attention and element-wise kernels: the reference the SIMD ones
 * are compared with (within rounding: they use their own exp). */
#include "kernels/kernels.h"

#include "kernels/attn_item.h"

#include <math.h>
#include <string.h>

size_t kern_attn_scratch(const struct kern_attn_args *a)
{
    const size_t rows = KERN_ATTN_QBLOCK * (size_t)(a->n_head / a->n_head_kv), hd = (size_t)a->head_dim;
    /* K and V tiles, scores, outputs, running max and sum (attn_work_at) */
    return 2 * KERN_ATTN_TILE * hd + rows * KERN_ATTN_TILE + rows * hd + 2 * rows + 16;
}

int64_t kern_attn_items(const struct kern_attn_args *a)
{
    return (int64_t)((a->n_tok + KERN_ATTN_QBLOCK - 1) / KERN_ATTN_QBLOCK) * a->n_head_kv;
}

/* Rows of positions [k0, k0 + n) of KV head g as floats, hd apart. */
static void tile_to_float(const struct kern_attn_args *a, const void *base, int g, int64_t k0, int n, float *dst)
{
    const struct pb_type_traits *tr = pb_type_get(a->kv_type);
    const size_t off = pb_row_size(a->kv_type, (int64_t)g * a->head_dim);
    for (int j = 0; j < n; j++)
        tr->to_float((const uint8_t *)base + attn_row_at(a, k0 + j) + off, dst + (size_t)j * a->head_dim,
                     a->head_dim);
}

void kern_attn_scalar(const struct kern_attn_args *a, int64_t i0, int64_t i1, float *scratch)
{
    const int hd = a->head_dim, G = a->n_head / a->n_head_kv;
    const struct attn_work w = attn_work_at(scratch, hd, G);
    float *kt = w.kt, *vt = w.vt, *s = w.s, *o = w.o, *mx = w.mx, *sum = w.sum;
    for (int64_t item = i0; item < i1; item++) {
        const struct attn_item it = attn_item_begin(a, item, &w);
        for (int64_t k0 = it.k_lo; k0 < it.n_keys; k0 += KERN_ATTN_TILE) {
            int n = it.n_keys - k0 < KERN_ATTN_TILE ? (int)(it.n_keys - k0) : KERN_ATTN_TILE;
            tile_to_float(a, a->k, it.g, k0, n, kt);
            tile_to_float(a, a->v, it.g, k0, n, vt);
            for (int i = 0; i < it.rows; i++) {
                int j0, j1;
                if (!attn_row_keys(a, &it, i, k0, n, &j0, &j1))
                    continue;
                const float *qi = a->q + attn_row_offset(a, &it, i);
                float *si = s + (size_t)i * KERN_ATTN_TILE, *oi = o + (size_t)i * hd;
                float m = mx[i];
                for (int j = j0; j < j1; j++) {
                    float d = 0;
                    for (int e = 0; e < hd; e++)
                        d += qi[e] * kt[(size_t)j * hd + e];
                    si[j] = attn_score(a, d);
                    if (si[j] > m)
                        m = si[j];
                }
                /* rescale what was accumulated under the old maximum */
                float corr = mx[i] == -INFINITY ? 0.0f : expf(mx[i] - m), ps = 0;
                for (int e = 0; e < hd; e++)
                    oi[e] *= corr;
                for (int j = j0; j < j1; j++) {
                    float p = expf(si[j] - m);
                    ps += p;
                    for (int e = 0; e < hd; e++)
                        oi[e] += p * vt[(size_t)j * hd + e];
                }
                sum[i] = sum[i] * corr + ps;
                mx[i] = m;
            }
        }
        for (int i = 0; i < it.rows; i++) {
            float *out = a->out + attn_row_offset(a, &it, i);
            for (int e = 0; e < hd; e++)
                out[e] = o[(size_t)i * hd + e] / sum[i];
        }
    }
}

void kern_swiglu_scalar(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
