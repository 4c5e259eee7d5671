/* AVX2 attention and element-wise kernels (compiled with -mavx2 -mfma
 * -mf16c, called after a CPU check). Same algorithm as attn_scalar.c, and
 * the same results bit for bit: the exponential and tanh are poly.h's,
 * eight lanes at a time here, one element at a time for what is left of a
 * row (and in the scalar kernels). */
#include "kernels/kernels.h"

#include "kernels/attn_item.h"
#include "kernels/poly.h"

#include "quant/blocks.h"
#include "quant/quant.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* poly_exp in eight lanes (2^n built in the exponent field). */
static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void kern_swiglu_avx2(float *g, const float *u, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 e = exp8(_mm256_sub_ps(zero, x));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + poly_exp(-g[i])) * u[i];
}

void kern_to_f16_avx2(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(h + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (i < n)
        quant_row_f16(src + i, h + i, n - i);
}

/* poly_tanh in eight lanes. */
static inline __m256 tanh8(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 e = exp8(_mm256_add_ps(ax, ax));
    const __m256 t = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
    return _mm256_or_ps(t, _mm256_and_ps(sign, x));
}

/* Rows of positions [k0, k0 + n) of KV head g as floats (hd apart), or a
 * pointer into the cache itself for F32 when they are contiguous (rows
 * *stride floats apart). */
static const float *tile(const struct kern_attn_args *a, bool v, int g, int64_t k0, int n, float *dst,
                         size_t *stride)
{
    const int hd = a->head_dim;
    const bool contiguous = (a->kv_cap <= 0 || k0 % a->kv_cap + n <= a->kv_cap) &&
                            (k0 + n <= a->n_shared || k0 >= a->n_shared);
    if (a->kv_type == PB_TYPE_F32 && contiguous) {
        *stride = a->kv_row_bytes / sizeof(float);
        return (const float *)(const void *)attn_row(a, v, k0) + (size_t)g * (size_t)hd;
    }
    *stride = (size_t)hd;
    for (int j = 0; j < n; j++) {
        const uint8_t *row = attn_row(a, v, k0 + j);
        float *d = dst + (size_t)j * hd;
        if (a->kv_type == PB_TYPE_F32) {
            memcpy(d, (const float *)(const void *)row + (size_t)g * (size_t)hd, (size_t)hd * sizeof *d);
        } else if (a->kv_type == PB_TYPE_F16) {
            const uint16_t *h = (const uint16_t *)(const void *)row + (size_t)g * (size_t)hd;
            for (int e = 0; e < hd; e += 8)
                _mm256_storeu_ps(d + e, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(h + e))));
        } else { /* Q8_0 */
            const struct block_q8_0 *b = (const struct block_q8_0 *)(const void *)row + (size_t)g * (size_t)hd / QK8_0;
            for (int e = 0; e < hd; e += QK8_0, b++) {
                const __m256 s = _mm256_set1_ps(_cvtsh_ss(b->d));
                for (int k = 0; k < QK8_0; k += 8) {
                    __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b->qs + k)));
                    _mm256_storeu_ps(d + e + k, _mm256_mul_ps(_mm256_cvtepi32_ps(q), s));
                }
            }
        }
    }
    return dst;
}

/* Soft-caps scores [j0, j1) of si in place. */
static void softcap_scores(float *si, int j0, int j1, float cap)
{
    const __m256 c = _mm256_set1_ps(cap), inv = _mm256_set1_ps(1.0f / cap);
    int j = j0;
    for (; j + 8 <= j1; j += 8)
        _mm256_storeu_ps(si + j, _mm256_mul_ps(c, tanh8(_mm256_mul_ps(_mm256_loadu_ps(si + j), inv))));
    for (; j < j1; j++)
        si[j] = poly_softcap(si[j], cap);
}

/* The outputs' vectors e0 .. e0 + NE - 1 of R rows: scaled by corr, plus
 * the tile's probabilities times V, key by key. */
static inline __attribute__((always_inline)) void rows_pv(const int R, const int NE, const int e0,
                                                          float *const *ss, float *const *os, const __m256 *cv,
                                                          const float *V, size_t vs, int j0, int n)
{
    __m256 acc[2][4];
    for (int r = 0; r < R; r++)
        for (int e = 0; e < NE; e++)
            acc[r][e] = _mm256_mul_ps(_mm256_loadu_ps(os[r] + 8 * (e0 + e)), cv[r]);
    for (int j = j0; j < n; j++) {
        const float *vr = V + (size_t)j * vs + 8 * e0;
        for (int r = 0; r < R; r++) {
            const __m256 p = _mm256_set1_ps(ss[r][j]);
            for (int e = 0; e < NE; e++)
                acc[r][e] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 8 * e), acc[r][e]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int e = 0; e < NE; e++)
            _mm256_storeu_ps(os[r] + 8 * (e0 + e), acc[r][e]);
}

/* One tile for R rows (1 or 2: two query heads of one token, which see the
 * same keys [j0, n)): scores, their softmax step, and the outputs. Each
 * K and V vector loaded serves the R rows; each row's arithmetic is the
 * one-row path's, so the results are the same whichever way rows go. */
static inline __attribute__((always_inline)) void rows_tile(const struct kern_attn_args *a, const int R,
                                                            const float *const *qs, float *const *ss, float *const *os,
                                                            float *mx, float *sum, const float *K, size_t ks,
                                                            const float *V, size_t vs, int j0, int n)
{
    const int hd = a->head_dim, nv = hd / 8;
    /* scores, four keys at a time */
    int j = j0;
    for (; j + 4 <= n; j += 4) {
        __m256 c[2][4];
        for (int r = 0; r < R; r++)
            for (int k = 0; k < 4; k++)
                c[r][k] = _mm256_setzero_ps();
        for (int e = 0; e < hd; e += 8) {
            __m256 kv[4];
            for (int k = 0; k < 4; k++)
                kv[k] = _mm256_loadu_ps(K + (size_t)(j + k) * ks + e);
            for (int r = 0; r < R; r++) {
                const __m256 qv = _mm256_loadu_ps(qs[r] + e);
                for (int k = 0; k < 4; k++)
                    c[r][k] = _mm256_fmadd_ps(qv, kv[k], c[r][k]);
            }
        }
        for (int r = 0; r < R; r++) {
            __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(c[r][0], c[r][1]), _mm256_hadd_ps(c[r][2], c[r][3]));
            __m128 x = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            _mm_storeu_ps(ss[r] + j, _mm_mul_ps(x, _mm_set1_ps(a->scale)));
        }
    }
    for (; j < n; j++)
        for (int r = 0; r < R; r++) {
            __m256 c = _mm256_setzero_ps();
            for (int e = 0; e < hd; e += 8)
                c = _mm256_fmadd_ps(_mm256_loadu_ps(qs[r] + e), _mm256_loadu_ps(K + (size_t)j * ks + e), c);
            ss[r][j] = hsum8(c) * a->scale;
        }
    __m256 cv[2];
    for (int r = 0; r < R; r++) {
        float *si = ss[r];
        if (a->softcap > 0)
            softcap_scores(si, j0, n, a->softcap);
        float m = mx[r];
        for (j = j0; j < n; j++)
            m = si[j] > m ? si[j] : m;
        const float corr = mx[r] == -INFINITY ? 0.0f : poly_exp(mx[r] - m);
        /* probabilities of this tile */
        __m256 psum = _mm256_setzero_ps(), mv = _mm256_set1_ps(m);
        for (j = j0; j + 8 <= n; j += 8) {
            __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(si + j), mv));
            _mm256_storeu_ps(si + j, p);
            psum = _mm256_add_ps(psum, p);
        }
        float ps = hsum8(psum);
        for (; j < n; j++) {
            si[j] = poly_exp(si[j] - m);
            ps += si[j];
        }
        sum[r] = sum[r] * corr + ps;
        mx[r] = m;
        cv[r] = _mm256_set1_ps(corr);
    }
    /* o = o * corr + sum_j p_j v_j, eight output values per vector */
    for (int e0 = 0; e0 < nv; e0 += 4) {
        if (nv - e0 >= 4)
            rows_pv(R, 4, e0, ss, os, cv, V, vs, j0, n);
        else
            rows_pv(R, nv - e0, e0, ss, os, cv, V, vs, j0, n);
    }
}

void kern_attn_avx2(const struct kern_attn_args *a, int64_t i0, int64_t i1, float *scratch)
{
    const int hd = a->head_dim, G = a->n_head / a->n_head_kv;
    const struct attn_work w = attn_work_at(scratch, hd, G);
    float *kt = w.kt, *vt = w.vt, *s = w.s, *o = w.o, *mx = w.mx, *sum = w.sum;
    for (int64_t item = i0; item < i1; item++) {
        const struct attn_item it = attn_item_begin(a, item, &w);
        for (int64_t k0 = it.k_lo; k0 < it.n_keys; k0 += KERN_ATTN_TILE) {
            const int nt = it.n_keys - k0 < KERN_ATTN_TILE ? (int)(it.n_keys - k0) : KERN_ATTN_TILE;
            size_t ks, vs;
            const float *K = tile(a, false, it.g, k0, nt, kt, &ks), *V = tile(a, true, it.g, k0, nt, vt, &vs);
            for (int i = 0; i < it.rows;) {
                int j0, n;
                if (!attn_row_keys(a, &it, i, k0, nt, &j0, &n)) {
                    i++;
                    continue;
                }
                /* the next row is the same token's next head: the same keys */
                const int R = i + 1 < it.rows && (i + 1) / G == i / G ? 2 : 1;
                const float *qs[2];
                float *ss[2], *os[2];
                for (int r = 0; r < R; r++) {
                    qs[r] = a->q + attn_row_offset(a, &it, i + r);
                    ss[r] = s + (size_t)(i + r) * KERN_ATTN_TILE;
                    os[r] = o + (size_t)(i + r) * hd;
                }
                if (R == 2)
                    rows_tile(a, 2, qs, ss, os, mx + i, sum + i, K, ks, V, vs, j0, n);
                else
                    rows_tile(a, 1, qs, ss, os, mx + i, sum + i, K, ks, V, vs, j0, n);
                i += R;
            }
        }
        for (int i = 0; i < it.rows; i++) {
            float *out = a->out + attn_row_offset(a, &it, i);
            const __m256 inv = _mm256_set1_ps(1.0f / sum[i]);
            for (int e = 0; e < hd; e += 8)
                _mm256_storeu_ps(out + e, _mm256_mul_ps(_mm256_loadu_ps(o + (size_t)i * hd + e), inv));
        }
    }
}
