/* Scalar attention and element-wise kernels: the reference the SIMD ones
 * reproduce bit for bit. They compute in the vector kernels' order: a dot
 * product in 8 lanes, reduced in the order the AVX2 kernel reduces it
 * (which differs between its groups of four keys and the keys left over),
 * the probabilities of a tile summed in 8 lanes, the exponential and tanh
 * of poly.h. */
#include "kernels/kernels.h"

#include "kernels/attn_item.h"
#include "kernels/poly.h"

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
static void tile_to_float(const struct kern_attn_args *a, bool v, int g, int64_t k0, int n, float *dst)
{
    const struct pb_type_traits *tr = pb_type_get(a->kv_type);
    const size_t off = pb_row_size(a->kv_type, (int64_t)g * a->head_dim);
    for (int j = 0; j < n; j++)
        tr->to_float(attn_row(a, v, k0 + j) + off, dst + (size_t)j * a->head_dim,
                     a->head_dim);
}

/* q . k over hd values in 8 lanes, as the vector kernel's fused
 * multiply-adds leave them. */
static void dot_lanes(const float *q, const float *k, int hd, float lane[8])
{
    for (int l = 0; l < 8; l++)
        lane[l] = 0;
    for (int e = 0; e < hd; e++)
        lane[e % 8] = fmaf(q[e], k[e], lane[e % 8]);
}

/* The two reductions of 8 lanes: the AVX2 kernel's horizontal adds of a
 * group of four keys, and its hsum8 of a single key. */
static float reduce_grouped(const float v[8])
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

static float reduce_single(const float v[8])
{
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
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
            tile_to_float(a, false, it.g, k0, n, kt);
            tile_to_float(a, true, it.g, k0, n, vt);
            for (int i = 0; i < it.rows; i++) {
                int j0, j1;
                if (!attn_row_keys(a, &it, i, k0, n, &j0, &j1))
                    continue;
                const float *qi = a->q + attn_row_offset(a, &it, i);
                float *si = s + (size_t)i * KERN_ATTN_TILE, *oi = o + (size_t)i * hd;
                float lane[8];
                /* scores: keys in groups of four from j0, then one by one */
                const int grouped = j0 + (j1 - j0) / 4 * 4;
                for (int j = j0; j < j1; j++) {
                    dot_lanes(qi, kt + (size_t)j * hd, hd, lane);
                    si[j] = attn_score(a, j < grouped ? reduce_grouped(lane) : reduce_single(lane));
                }
                float m = mx[i];
                for (int j = j0; j < j1; j++)
                    m = si[j] > m ? si[j] : m;
                /* rescale what was accumulated under the old maximum */
                const float corr = mx[i] == -INFINITY ? 0.0f : poly_exp(mx[i] - m);
                /* probabilities: eight at a time summed in lanes, then the rest */
                const int vec = j0 + (j1 - j0) / 8 * 8;
                for (int l = 0; l < 8; l++)
                    lane[l] = 0;
                for (int j = j0; j < j1; j++) {
                    si[j] = poly_exp(si[j] - m);
                    if (j < vec)
                        lane[(j - j0) % 8] += si[j];
                }
                float ps = reduce_single(lane);
                for (int j = vec; j < j1; j++)
                    ps += si[j];
                sum[i] = sum[i] * corr + ps;
                mx[i] = m;
                for (int e = 0; e < hd; e++) {
                    float acc = oi[e] * corr;
                    for (int j = j0; j < j1; j++)
                        acc = fmaf(si[j], vt[(size_t)j * hd + e], acc);
                    oi[e] = acc;
                }
            }
        }
        for (int i = 0; i < it.rows; i++) {
            float *out = a->out + attn_row_offset(a, &it, i);
            const float inv = 1.0f / sum[i];
            for (int e = 0; e < hd; e++)
                out[e] = o[(size_t)i * hd + e] * inv;
        }
    }
}

void kern_swiglu_scalar(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + poly_exp(-g[i])) * u[i];
}
