/* AVX2 matrix kernels (with FMA and F16C): row-interleaved weights
 * (pack_r8.h), 8-bit activations, integer multiply-adds on 8 rows at once.
 *
 * Each 32-bit lane of a vector belongs to one weight row, so a block's
 * integer dot products of 8 rows end up in one vector with no horizontal
 * sums, and the float accumulation of each row follows exactly the
 * scalar reference's order: the results are bit for bit those of
 * dot_*_scalar (the tests compare them). A tile is 8 rows x up to 8
 * activation rows: the unpacked weights of a block are reused for every
 * activation row of the tile.
 *
 * vpmaddubsw multiplies unsigned by signed bytes and adds pairs into int16
 * with saturation; every use below is bounded so that it cannot saturate:
 * 4-bit codes (0..15) times activations (-127..127) give pairs of at most
 * 3810, eight such add to at most 30480; 6-bit codes (0..63) give pairs of
 * at most 16002, two of which add to 32004. Activations never reach -128:
 * the quantizers scale the largest magnitude to 127.
 *
 * This file is compiled with -mavx2 -mfma -mf16c and only called after a
 * CPU check (kernels.c).
 */
#include "kernels/kernels.h"

#include "base/fp16.h"
#include "kernels/mm_x86.h"
#include "quant/quant.h"

#include <math.h>

/* Activation rows per tile, per type: more rows share each unpacked
 * weight vector, fewer keep a tile's accumulators in registers. Each is
 * the faster of 4 and 8 measured with bench_kernels on Zen 3. */
#define TILE_MAX 8
#define T_F16 8
#define T_Q4_0 4
#define T_Q8_0 8
#define T_Q4_K 4
#define T_Q5_K 4
#define T_Q6_K 8
#define T_B32 4
#define T_K16 4

static inline float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline int hsum8_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Packs four vectors of 8 int32 (in -127..127) into 32 int8 in order. */
static inline __m256i pack_i32_to_i8(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i v = _mm256_packs_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* True when every value of the 32 is finite (no NaN, no infinity). */
static inline int all_finite(__m256 x0, __m256 x1, __m256 x2, __m256 x3)
{
    const __m256 big = _mm256_set1_ps(3.402823466e+38f);
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 ok = _mm256_and_ps(_mm256_cmp_ps(_mm256_and_ps(x0, abs), big, _CMP_LE_OQ),
                              _mm256_cmp_ps(_mm256_and_ps(x1, abs), big, _CMP_LE_OQ));
    ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_and_ps(x2, abs), big, _CMP_LE_OQ));
    ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_and_ps(x3, abs), big, _CMP_LE_OQ));
    return _mm256_movemask_ps(ok) == 0xff;
}


/* One block of 32 values as quant_row_q8_0 / quant_row_q8_1 code it: the
 * codes to qs, amax / 127 (before any rounding to fp16) to *d and the
 * codes' sum to *sum. Returns 0, writing nothing, when a value is NaN or
 * infinite (the caller then takes the reference quantizer's rules). */
static inline int q8_block32(const float *x, int8_t *qs, float *d, int *sum)
{
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), x2 = _mm256_loadu_ps(x + 16),
           x3 = _mm256_loadu_ps(x + 24);
    if (!all_finite(x0, x1, x2, x3))
        return 0;
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(x0, abs), _mm256_and_ps(x1, abs)),
                             _mm256_max_ps(_mm256_and_ps(x2, abs), _mm256_and_ps(x3, abs)));
    float amax = hmax8(m);
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    *d = amax / 127.0f;
    const __m256 vid = _mm256_set1_ps(id);
    /* cvtps rounds to nearest even, as rintf */
    __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(x0, vid)), q1 = _mm256_cvtps_epi32(_mm256_mul_ps(x1, vid));
    __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(x2, vid)), q3 = _mm256_cvtps_epi32(_mm256_mul_ps(x3, vid));
    _mm256_storeu_si256((__m256i *)(void *)qs, pack_i32_to_i8(q0, q1, q2, q3));
    *sum = hsum8_epi32(_mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3)));
    return 1;
}

static inline float round_fp16(float f)
{
    return _cvtsh_ss(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

size_t kern_act_size_q8x(int64_t n)
{
    return (size_t)n + (size_t)(n / QK8_0) * (sizeof(float) + sizeof(int32_t));
}

void kern_act_quantize_q8x_avx2(const float *x, void *out, int64_t n)
{
    int8_t *qs = out;
    float *dv = (float *)(void *)(qs + n);
    int32_t *sv = (int32_t *)(void *)(dv + n / QK8_0);
    for (int64_t b = 0; b < n / QK8_0; b++, x += QK8_0) {
        float d;
        int s;
        if (!q8_block32(x, qs + QK8_0 * b, &d, &s)) { /* the reference's clamping rules */
            struct block_q8_0 blk;
            quant_row_q8_0(x, &blk, QK8_0);
            s = 0;
            for (int j = 0; j < QK8_0; j++)
                s += (qs[QK8_0 * b + j] = blk.qs[j]);
            dv[b] = fp16_to_f32(blk.d);
            sv[b] = 8 * s;
            continue;
        }
        dv[b] = round_fp16(d);
        sv[b] = 8 * s;
    }
}

size_t kern_act_size_q8x1(int64_t n)
{
    return (size_t)n + (size_t)(n / QK8_1) * 2 * sizeof(float);
}

void kern_act_quantize_q8x1_avx2(const float *x, void *out, int64_t n)
{
    int8_t *qs = out;
    float *dv = (float *)(void *)(qs + n), *sv = dv + n / QK8_1;
    for (int64_t b = 0; b < n / QK8_1; b++, x += QK8_1) {
        float d;
        int s;
        if (!q8_block32(x, qs + QK8_1 * b, &d, &s)) {
            struct block_q8_1 blk;
            quant_row_q8_1(x, &blk, QK8_1);
            memcpy(qs + QK8_1 * b, blk.qs, QK8_1);
            dv[b] = fp16_to_f32(blk.d);
            sv[b] = fp16_to_f32(blk.s);
            continue;
        }
        dv[b] = round_fp16(d);
        sv[b] = round_fp16((float)s * d);
    }
}


size_t kern_act_size_q8Kx(int64_t n)
{
    return (size_t)(n / QK_K) * sizeof(struct q8Kx);
}

/* The first of a block's QK_K (finite) values whose magnitude is amax, as
 * the reference takes it: its sign sets the scale's. */
static float first_of_magnitude(const float *x, float amax)
{
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), m = _mm256_set1_ps(amax);
    for (int j = 0; j < QK_K; j += 8) {
        const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), abs), m, _CMP_EQ_OQ));
        if (hit)
            return x[j + __builtin_ctz((unsigned)hit)];
    }
    return 0;
}

void kern_act_quantize_q8Kx_avx2(const float *x, void *out, int64_t n)
{
    struct q8Kx *o = out;
    const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, o++) {
        __m256 m = _mm256_setzero_ps();
        int finite = 1;
        for (int j = 0; j < QK_K; j += 32) {
            __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8), x2 = _mm256_loadu_ps(x + j + 16),
                   x3 = _mm256_loadu_ps(x + j + 24);
            finite &= all_finite(x0, x1, x2, x3);
            m = _mm256_max_ps(m, _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(x0, abs), _mm256_and_ps(x1, abs)),
                                               _mm256_max_ps(_mm256_and_ps(x2, abs), _mm256_and_ps(x3, abs))));
        }
        if (!finite) { /* the reference's rules for NaN and infinities */
            struct block_q8_K k;
            quant_row_q8_K(x, &k, QK_K);
            o->d = k.d;
            memcpy(o->qs, k.qs, QK_K);
        } else {
            float amax = hmax8(m);
            if (amax == 0.0f) {
                memset(o, 0, sizeof *o);
                continue;
            }
            const float max = first_of_magnitude(x, amax);
            float iscale = -127.0f / max;
            const __m256 vs = _mm256_set1_ps(iscale);
            for (int j = 0; j < QK_K; j += 32) {
                __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j)));
                __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8)));
                __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 16)));
                __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 24)));
                _mm256_storeu_si256((__m256i *)(void *)(o->qs + j), pack_i32_to_i8(q0, q1, q2, q3));
            }
            o->d = 1.0f / iscale;
        }
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int k = 0; k < 16; k++)
                s += o->qs[16 * g + k];
            o->bs16[g] = (int16_t)s;
        }
        for (int g = 0; g < 8; g++)
            o->bs32[g] = (int16_t)(o->bs16[2 * g] + o->bs16[2 * g + 1]);
        for (int g = 0; g < 16; g++) {
            o->bs16w[g] = (int32_t)(uint16_t)o->bs16[g];
            o->bs16o[g] = -32 * o->bs16[g];
        }
    }
}

/* ---- activations for F16: "f32h" ----
 * The values rounded to half precision (as quant_row_f16), kept as floats
 * so that the kernel broadcasts them without converting. */

static size_t act_size_f32h(int64_t n)
{
    return (size_t)n * sizeof(float);
}

static void act_quantize_f32h(const float *x, void *out, int64_t n)
{
    float *o = out;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8), x2 = _mm256_loadu_ps(x + i + 16),
                     x3 = _mm256_loadu_ps(x + i + 24);
        if (!all_finite(x0, x1, x2, x3))
            break; /* the rest through the reference conversion (its NaN) */
        const __m256 xs[4] = {x0, x1, x2, x3};
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(o + i + 8 * k, _mm256_cvtph_ps(_mm256_cvtps_ph(xs[k], _MM_FROUND_TO_NEAREST_INT)));
    }
    for (; i < n; i++)
        o[i] = fp16_to_f32(f32_to_fp16(x[i]));
}

/* ---- F32 (routers and other matrices kept in full precision) ----
 * The reference's arithmetic: per row, sum += (double)w * (double)a in
 * element order, rounded to float at the end. The product of two floats
 * is exact in double, so one fused multiply-add in double rounds as the
 * reference's add does, and the results are bit for bit the scalar
 * kernel's. The activations are widened to double once ("f64"); a group of
 * 8 rows is two chains of 4 doubles, and tiles of up to 4 groups keep
 * enough chains in flight to hide the multiply-add's latency. */

static size_t act_size_f64(int64_t n)
{
    return (size_t)n * sizeof(double);
}

static void act_quantize_f64(const float *x, void *out, int64_t n)
{
    double *o = out;
    for (int64_t i = 0; i < n; i++)
        o[i] = x[i];
}

/* ng groups from w (nb blocks each) x nt activation rows; ng x nt <= 4. */
static inline __attribute__((always_inline)) void tile_f32(const struct blk_f32_r8 *w, int64_t nb, const int ng,
                                                           const double *const *a, const int nt, float *y,
                                                           size_t y_stride)
{
    __m256d acc[4][2];
    for (int i = 0; i < ng * nt; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_pd();
    for (int64_t b = 0; b < nb; b++) {
        for (int g = 0; g < ng; g++)
            prefetch_block(&w[g * nb + b], sizeof w[b]);
        for (int e = 0; e < 8; e++)
            for (int g = 0; g < ng; g++) {
                const float *wp = w[g * nb + b].w + 8 * e;
                const __m256d lo = _mm256_cvtps_pd(_mm_loadu_ps(wp)), hi = _mm256_cvtps_pd(_mm_loadu_ps(wp + 4));
                for (int t = 0; t < nt; t++) {
                    const __m256d av = _mm256_broadcast_sd(a[t] + 8 * b + e);
                    acc[g * nt + t][0] = _mm256_fmadd_pd(lo, av, acc[g * nt + t][0]);
                    acc[g * nt + t][1] = _mm256_fmadd_pd(hi, av, acc[g * nt + t][1]);
                }
            }
    }
    for (int g = 0; g < ng; g++)
        for (int t = 0; t < nt; t++) {
            float *yt = y + (size_t)t * y_stride + 8 * g;
            _mm_storeu_ps(yt, _mm256_cvtpd_ps(acc[g * nt + t][0]));
            _mm_storeu_ps(yt + 4, _mm256_cvtpd_ps(acc[g * nt + t][1]));
        }
}

static void gemm_f32(const void *w, size_t w_row_bytes, int64_t n_in, int64_t g0, int64_t g1, const void *a,
                     size_t a_stride, int n_tok, float *y, size_t y_stride)
{
    (void)w_row_bytes;
    const int64_t nb = n_in / 8;
    const struct blk_f32_r8 *wb = w;
    for (int t0 = 0; t0 < n_tok; t0 += 4) {
        const int nt = n_tok - t0 < 4 ? n_tok - t0 : 4;
        const double *av[4] = {0};
        for (int t = 0; t < nt; t++)
            av[t] = (const double *)(const void *)((const uint8_t *)a + (size_t)(t0 + t) * a_stride);
        float *yt = y + (size_t)t0 * y_stride;
        int64_t g = g0;
        /* one activation row: four groups a tile; two: two; more: one */
        if (nt == 1)
            for (; g + 4 <= g1; g += 4)
                tile_f32(wb + g * nb, nb, 4, av, 1, yt + 8 * g, y_stride);
        if (nt <= 2)
            for (; g + 2 <= g1; g += 2)
                tile_f32(wb + g * nb, nb, 2, av, nt, yt + 8 * g, y_stride);
        for (; g < g1; g++)
            switch (nt) {
            case 1: tile_f32(wb + g * nb, nb, 1, av, 1, yt + 8 * g, y_stride); break;
            case 2: tile_f32(wb + g * nb, nb, 1, av, 2, yt + 8 * g, y_stride); break;
            case 3: tile_f32(wb + g * nb, nb, 1, av, 3, yt + 8 * g, y_stride); break;
            default: tile_f32(wb + g * nb, nb, 1, av, 4, yt + 8 * g, y_stride); break;
            }
    }
}

/* ---- F16 ----
 * One fused multiply-add per element and row, in element order: the
 * scalar kernel's arithmetic. 8 activation rows give 8 independent
 * chains per row group, enough to hide the latency of the FMA. */
static inline __attribute__((always_inline)) void tile_f16(const struct blk_f16_r8 *w, int64_t nb,
                                                           const float *const *a, const int nt, float *y,
                                                           size_t y_stride)
{
    __m256 acc[TILE_MAX];
    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        prefetch_block(&w[b], sizeof w[b]);
        for (int e = 0; e < 8; e++) {
            const __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w[b].w + 8 * e)));
            for (int t = 0; t < nt; t++)
                acc[t] = _mm256_fmadd_ps(wv, _mm256_broadcast_ss(a[t] + 8 * b + e), acc[t]);
        }
    }
    for (int t = 0; t < nt; t++)
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc[t]);
}

/* Two groups: with few activation rows (generation) the two groups' chains
 * run side by side instead of one after the other. */
static inline __attribute__((always_inline)) void tile2_f16(const struct blk_f16_r8 *w0, const struct blk_f16_r8 *w1,
                                                            int64_t nb, const float *const *a, const int nt, float *y,
                                                            size_t y_stride)
{
    if (nt > 4) {
        tile_f16(w0, nb, a, nt, y, y_stride);
        tile_f16(w1, nb, a, nt, y + 8, y_stride);
        return;
    }
    __m256 acc0[4], acc1[4];
    for (int t = 0; t < nt; t++)
        acc0[t] = acc1[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        prefetch_block(&w0[b], sizeof w0[b]);
        prefetch_block(&w1[b], sizeof w1[b]);
        for (int e = 0; e < 8; e++) {
            const __m256 v0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w0[b].w + 8 * e)));
            const __m256 v1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w1[b].w + 8 * e)));
            for (int t = 0; t < nt; t++) {
                const __m256 x = _mm256_broadcast_ss(a[t] + 8 * b + e);
                acc0[t] = _mm256_fmadd_ps(v0, x, acc0[t]);
                acc1[t] = _mm256_fmadd_ps(v1, x, acc1[t]);
            }
        }
    }
    for (int t = 0; t < nt; t++) {
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc0[t]);
        _mm256_storeu_ps(y + (size_t)t * y_stride + 8, acc1[t]);
    }
}

/* ---- Q4_0 ---- */

static inline __attribute__((always_inline)) void tile_q4_0(const struct blk_q4_0_r8 *w, int64_t nb,
                                                            const struct q8x_view *a, const int nt, float *y,
                                                            size_t y_stride)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[TILE_MAX];
    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        prefetch_block(&w[b], sizeof w[b]);
        __m256i p[TILE_MAX];
        /* two halves of the block keep fewer registers live: low nibbles
         * are elements 4c..4c+3, high nibbles elements 16 + 4c.. */
        for (int half = 0; half < 2; half++) {
            __m256i v[4];
            for (int c = 0; c < 4; c++) {
                __m256i raw = _mm256_loadu_si256((const __m256i *)(const void *)(w[b].qs + 32 * c));
                v[c] = _mm256_and_si256(half ? _mm256_srli_epi16(raw, 4) : raw, m4);
            }
            for (int t = 0; t < nt; t++) {
                const int8_t *q = a[t].qs + QK4_0 * b + 16 * half;
                __m256i x = _mm256_add_epi16(_mm256_maddubs_epi16(v[0], bcast4(q)), _mm256_maddubs_epi16(v[1], bcast4(q + 4)));
                x = _mm256_add_epi16(x, _mm256_maddubs_epi16(v[2], bcast4(q + 8)));
                x = _mm256_add_epi16(x, _mm256_maddubs_epi16(v[3], bcast4(q + 12)));
                p[t] = half ? _mm256_add_epi16(p[t], x) : x;
            }
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)w[b].d));
        for (int t = 0; t < nt; t++) {
            /* sum (c - 8) y = sum c y - 8 sum y */
            __m256i s = _mm256_sub_epi32(_mm256_madd_epi16(p[t], ones), _mm256_set1_epi32(a[t].s8[b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(a[t].d[b])), acc[t]);
        }
    }
    for (int t = 0; t < nt; t++)
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc[t]);
}

/* Adds the products of weight vectors v0 (group 0) and v1 (group 1) with
 * the 4 activation bytes at q: one broadcast feeds both groups. Used by
 * the paired tiles (Q4_0, Q4_K, Q5_K). */
#define PAIR_STEP(q, p0, p1)                                                                                           \
    do {                                                                                                               \
        const __m256i x_ = bcast4(q);                                                                                  \
        p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(v0, x_));                                                       \
        p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(v1, x_));                                                       \
        /* an empty asm keeps the sums as they are: re-associated, the     \
         * adds need a register per product and the sums spill */           \
        __asm__("" : "+x"(p0), "+x"(p1));                                                                              \
    } while (0)

/* PAIR_STEP for the 4 activation rows of a paired tile, bytes at `at`
 * (an expression in t) of each. */
#define PAIR_STEP_X4(at)                                                                                               \
    do {                                                                                                               \
        { const int t = 0; PAIR_STEP(at, p00, p10); }                                                                  \
        { const int t = 1; PAIR_STEP(at, p01, p11); }                                                                  \
        { const int t = 2; PAIR_STEP(at, p02, p12); }                                                                  \
        { const int t = 3; PAIR_STEP(at, p03, p13); }                                                                  \
    } while (0)

/* A block's sums of activation row t into y. */
#define Q4_0_PAIR_FINISH(t, p0, p1)                                                                                    \
    do {                                                                                                               \
        const __m256 da_ = _mm256_set1_ps(a[t].d[b]);                                                                  \
        const __m256i s8_ = _mm256_set1_epi32(a[t].s8[b]);                                                             \
        const __m256i i0_ = _mm256_sub_epi32(_mm256_madd_epi16(p0, ones), s8_);                                        \
        const __m256i i1_ = _mm256_sub_epi32(_mm256_madd_epi16(p1, ones), s8_);                                        \
        float *yt_ = y + (size_t)(t) * y_stride;                                                                       \
        _mm256_storeu_ps(yt_, _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0_), _mm256_mul_ps(dw0, da_), _mm256_loadu_ps(yt_))); \
        _mm256_storeu_ps(yt_ + 8,                                                                                      \
                         _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1_), _mm256_mul_ps(dw1, da_), _mm256_loadu_ps(yt_ + 8))); \
    } while (0)

/* tile2_q4_0 for exactly 4 activation rows, with the partial sums in
 * named variables: the compiler keeps those in registers, where it
 * spills arrays. */
static inline __attribute__((always_inline)) void tile2_q4_0_x4(const struct blk_q4_0_r8 *w0,
                                                                const struct blk_q4_0_r8 *w1, int64_t nb,
                                                                const struct q8x_view *a, float *y, size_t y_stride)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    for (int t = 0; t < 4; t++) {
        _mm256_storeu_ps(y + (size_t)t * y_stride, _mm256_setzero_ps());
        _mm256_storeu_ps(y + (size_t)t * y_stride + 8, _mm256_setzero_ps());
    }
    for (int64_t b = 0; b < nb; b++) {
        prefetch_block(&w0[b], sizeof w0[b]);
        prefetch_block(&w1[b], sizeof w1[b]);
        __m256i p00 = _mm256_setzero_si256(), p01 = p00, p02 = p00, p03 = p00;
        __m256i p10 = p00, p11 = p00, p12 = p00, p13 = p00;
#pragma GCC unroll 1
        for (int c = 0; c < 4; c++) {
            /* low nibbles (elements 4c..4c+3), then high (16 + 4c..): two
             * weight vectors live at a time leave registers for the sums */
            const uint8_t *q0 = w0[b].qs + 32 * c, *q1 = w1[b].qs + 32 * c;
            __m256i v0 = _mm256_and_si256(load32(q0), m4), v1 = _mm256_and_si256(load32(q1), m4);
            PAIR_STEP_X4(a[t].qs + QK4_0 * b + 4 * c);
            v0 = _mm256_and_si256(_mm256_srli_epi16(load32(q0), 4), m4);
            v1 = _mm256_and_si256(_mm256_srli_epi16(load32(q1), 4), m4);
            PAIR_STEP_X4(a[t].qs + QK4_0 * b + 16 + 4 * c);
        }
        const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)w0[b].d));
        const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)w1[b].d));
        Q4_0_PAIR_FINISH(0, p00, p10);
        Q4_0_PAIR_FINISH(1, p01, p11);
        Q4_0_PAIR_FINISH(2, p02, p12);
        Q4_0_PAIR_FINISH(3, p03, p13);
    }
}

/* 16 rows (two groups) x nt activation rows: each broadcast activation
 * word feeds both groups, which halves the loads per product; the 4-row
 * tile has its own code. */
static inline __attribute__((always_inline)) void tile2_q4_0(const struct blk_q4_0_r8 *w0,
                                                             const struct blk_q4_0_r8 *w1, int64_t nb,
                                                             const struct q8x_view *a, const int nt, float *y,
                                                             size_t y_stride)
{
    if (nt == 4) {
        tile2_q4_0_x4(w0, w1, nb, a, y, y_stride);
        return;
    }
    if (nt <= 2) { /* memory-bound: one stream of weights (as in mm_vnni.inc) */
        tile_q4_0(w0, nb, a, nt, y, y_stride);
        tile_q4_0(w1, nb, a, nt, y + 8, y_stride);
        return;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    /* the sums of the tile live in y, not in registers: the partial
     * integer sums need every register the loop has */
    for (int t = 0; t < nt; t++) {
        _mm256_storeu_ps(y + (size_t)t * y_stride, _mm256_setzero_ps());
        _mm256_storeu_ps(y + (size_t)t * y_stride + 8, _mm256_setzero_ps());
    }
    for (int64_t b = 0; b < nb; b++) {
        prefetch_block(&w0[b], sizeof w0[b]);
        prefetch_block(&w1[b], sizeof w1[b]);
        __m256i p0[TILE_MAX], p1[TILE_MAX];
        for (int t = 0; t < nt; t++)
            p0[t] = p1[t] = _mm256_setzero_si256();
        /* not unrolled: unrolled, the compiler interleaves the quarters and
         * spills the partial sums */
#pragma GCC unroll 1
        for (int c = 0; c < 4; c++) {
            /* low nibbles: elements 4c..4c+3; high nibbles: 16 + 4c.. */
            const __m256i r0 = _mm256_loadu_si256((const __m256i *)(const void *)(w0[b].qs + 32 * c));
            const __m256i r1 = _mm256_loadu_si256((const __m256i *)(const void *)(w1[b].qs + 32 * c));
            const __m256i lo0 = _mm256_and_si256(r0, m4), hi0 = _mm256_and_si256(_mm256_srli_epi16(r0, 4), m4);
            const __m256i lo1 = _mm256_and_si256(r1, m4), hi1 = _mm256_and_si256(_mm256_srli_epi16(r1, 4), m4);
            for (int t = 0; t < nt; t++) {
                const int8_t *q = a[t].qs + QK4_0 * b + 4 * c;
                const __m256i xl = bcast4(q), xh = bcast4(q + 16);
                p0[t] = _mm256_add_epi16(p0[t], _mm256_add_epi16(_mm256_maddubs_epi16(lo0, xl), _mm256_maddubs_epi16(hi0, xh)));
                p1[t] = _mm256_add_epi16(p1[t], _mm256_add_epi16(_mm256_maddubs_epi16(lo1, xl), _mm256_maddubs_epi16(hi1, xh)));
            }
        }
        const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)w0[b].d));
        const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)w1[b].d));
        for (int t = 0; t < nt; t++) {
            const __m256 da = _mm256_set1_ps(a[t].d[b]);
            const __m256i s8 = _mm256_set1_epi32(a[t].s8[b]);
            const __m256i i0 = _mm256_sub_epi32(_mm256_madd_epi16(p0[t], ones), s8);
            const __m256i i1 = _mm256_sub_epi32(_mm256_madd_epi16(p1[t], ones), s8);
            float *yt = y + (size_t)t * y_stride;
            _mm256_storeu_ps(yt, _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(dw0, da), _mm256_loadu_ps(yt)));
            _mm256_storeu_ps(yt + 8,
                             _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(dw1, da), _mm256_loadu_ps(yt + 8)));
        }
    }
}

/* ---- Q8_0 ---- */

static inline __attribute__((always_inline)) void tile_q8_0(const struct blk_q8_0_r8 *w, int64_t nb,
                                                            const struct q8x_view *a, const int nt, float *y,
                                                            size_t y_stride)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[TILE_MAX];
    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        prefetch_block(&w[b], sizeof w[b]);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)w[b].d));
        __m256i s[TILE_MAX];
        for (int t = 0; t < nt; t++)
            s[t] = _mm256_setzero_si256();
        for (int l = 0; l < 8; l++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(w[b].qs + 32 * l));
            __m256i ax = _mm256_sign_epi8(x, x);
            for (int t = 0; t < nt; t++) {
                /* x y = |x| (y * sign x) */
                __m256i yb = _mm256_sign_epi8(bcast4(a[t].qs + QK8_0 * b + 4 * l), x);
                s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, yb), ones));
            }
        }
        for (int t = 0; t < nt; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(dw, _mm256_set1_ps(a[t].d[b])), acc[t]);
    }
    for (int t = 0; t < nt; t++)
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc[t]);
}

/* ---- Q4_K ---- */

/* Scale (or min) of sub-block j as an int16 pair in each row's lane, from
 * a vector holding 4 of them per lane (bytes 0..3). */
static inline __m256i q4k_pair_same(__m256i v, int j)
{
    const __m128i idx = _mm_setr_epi8((char)j, -128, (char)j, -128, (char)(4 + j), -128, (char)(4 + j), -128,
                                      (char)(8 + j), -128, (char)(8 + j), -128, (char)(12 + j), -128, (char)(12 + j),
                                      -128);
    return _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(idx));
}

/* The scale of each sub-block j as an (sc, sc) int16 pair per row. */
static inline void q4k_scales(const uint8_t *scales, __m256i sc[8])
{
    __m256i sc_lo, sc_hi;
    q4k_scales6(scales, &sc_lo, &sc_hi);
    for (int j = 0; j < 8; j++)
        sc[j] = q4k_pair_same(j < 4 ? sc_lo : sc_hi, j % 4);
}


/* The block loop of a one-group K-quant tile (Q4_K, Q5_K): SUBBLOCKS
 * adds block x's sub-block sums into s (int32, per activation row). */
#define K_TILE_BODY(blk_t, SUBBLOCKS)                                                                                  \
    const __m256i m4 = _mm256_set1_epi8(0x0F);                                                                         \
    __m256 acc[TILE_MAX];                                                                                              \
    for (int t = 0; t < nt; t++)                                                                                       \
        acc[t] = _mm256_setzero_ps();                                                                                  \
    for (int64_t b = 0; b < nb; b++) {                                                                                 \
        prefetch_block(&w[b], sizeof w[b]);                                                                            \
        const struct blk_t *x = &w[b];                                                                                 \
        __m256i sc[8];                                                                                                 \
        q4k_scales(x->scales, sc);                                                                                     \
        __m256i s[TILE_MAX];                                                                                           \
        for (int t = 0; t < nt; t++)                                                                                   \
            s[t] = _mm256_setzero_si256();                                                                             \
        SUBBLOCKS;                                                                                                     \
        const struct q4k_tail tail = q4k_tail_of(x->d, x->dmin, x->scales);                                            \
        for (int t = 0; t < nt; t++)                                                                                   \
            acc[t] = q4k_finish(&tail, &a[t][b], s[t], acc[t]);                                                        \
    }                                                                                                                  \
    for (int t = 0; t < nt; t++)                                                                                       \
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc[t]);

static inline __attribute__((always_inline)) void tile_q4_K(const struct blk_q4_K_r8 *w, int64_t nb,
                                                            const struct q8Kx *const *a, const int nt, float *y,
                                                            size_t y_stride)
{
#define Q4_K_SUBBLOCKS \
        for (int j = 0; j < 8; j++) { /* sub-block j: nibbles (j odd: high) of vectors 8 (j / 2) .. + 7 */             \
            const uint8_t *q = x->qs + 32 * 8 * (j / 2);                                                               \
            __m256i v[8];                                                                                              \
            for (int k = 0; k < 8; k++) {                                                                              \
                __m256i raw = load32(q + 32 * k);                                                                      \
                v[k] = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(raw, 4) : raw, m4);                                  \
            }                                                                                                          \
            for (int t = 0; t < nt; t++) {                                                                             \
                const int8_t *qa = a[t][b].qs + 32 * j;                                                                \
                __m256i p = _mm256_maddubs_epi16(v[0], bcast4(qa));                                                    \
                for (int k = 1; k < 8; k++)                                                                            \
                    p = _mm256_add_epi16(p, _mm256_maddubs_epi16(v[k], bcast4(qa + 4 * k)));                           \
                s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(p, sc[j]));                                            \
            }                                                                                                          \
        }
    K_TILE_BODY(blk_q4_K_r8, Q4_K_SUBBLOCKS)
#undef Q4_K_SUBBLOCKS
}

/* s += the partial sums of sub-block j times its scale, for the 4
 * activation rows of both groups. */
#define K_PAIR_SCALE(j)                                                                                                \
    do {                                                                                                               \
        s0[0] = _mm256_add_epi32(s0[0], _mm256_madd_epi16(p00, sc0[j]));                                               \
        s0[1] = _mm256_add_epi32(s0[1], _mm256_madd_epi16(p01, sc0[j]));                                               \
        s0[2] = _mm256_add_epi32(s0[2], _mm256_madd_epi16(p02, sc0[j]));                                               \
        s0[3] = _mm256_add_epi32(s0[3], _mm256_madd_epi16(p03, sc0[j]));                                               \
        s1[0] = _mm256_add_epi32(s1[0], _mm256_madd_epi16(p10, sc1[j]));                                               \
        s1[1] = _mm256_add_epi32(s1[1], _mm256_madd_epi16(p11, sc1[j]));                                               \
        s1[2] = _mm256_add_epi32(s1[2], _mm256_madd_epi16(p12, sc1[j]));                                               \
        s1[3] = _mm256_add_epi32(s1[3], _mm256_madd_epi16(p13, sc1[j]));                                               \
    } while (0)

/* The block loop of a paired 4-row K-quant tile (Q4_K, Q5_K): SUBBLOCKS
 * adds block b's sub-block sums into s0 and s1 (int32, per group and
 * activation row); the rest is common. */
#define K_PAIR_X4_BODY(SUBBLOCKS)                                                                                      \
    const __m256i m4 = _mm256_set1_epi8(0x0F);                                                                         \
    for (int t = 0; t < 4; t++) {                                                                                      \
        _mm256_storeu_ps(y + (size_t)t * y_stride, _mm256_setzero_ps());                                               \
        _mm256_storeu_ps(y + (size_t)t * y_stride + 8, _mm256_setzero_ps());                                           \
    }                                                                                                                  \
    for (int64_t b = 0; b < nb; b++) {                                                                                 \
        prefetch_block(&w0[b], sizeof w0[b]);                                                                          \
        prefetch_block(&w1[b], sizeof w1[b]);                                                                          \
        __m256i sc0[8], sc1[8], s0[4], s1[4];                                                                          \
        q4k_scales(w0[b].scales, sc0);                                                                                 \
        q4k_scales(w1[b].scales, sc1);                                                                                 \
        for (int t = 0; t < 4; t++)                                                                                    \
            s0[t] = s1[t] = _mm256_setzero_si256();                                                                    \
        SUBBLOCKS;                                                                                                     \
        const struct q4k_tail tail0 = q4k_tail_of(w0[b].d, w0[b].dmin, w0[b].scales),                                  \
                              tail1 = q4k_tail_of(w1[b].d, w1[b].dmin, w1[b].scales);                                  \
        for (int t = 0; t < 4; t++) {                                                                                  \
            float *yt = y + (size_t)t * y_stride;                                                                      \
            _mm256_storeu_ps(yt, q4k_finish(&tail0, &a[t][b], s0[t], _mm256_loadu_ps(yt)));                            \
            _mm256_storeu_ps(yt + 8, q4k_finish(&tail1, &a[t][b], s1[t], _mm256_loadu_ps(yt + 8)));                    \
        }                                                                                                              \
    }

/* Sub-block j (its nibbles at shift) of both groups into s0, s1. */
#define Q4_K_PAIR_SUB(j, shift)                                                                                        \
    do {                                                                                                               \
        const uint8_t *q0_ = w0[b].qs + 32 * 8 * ((j) / 2), *q1_ = w1[b].qs + 32 * 8 * ((j) / 2);                      \
        __m256i p00 = _mm256_setzero_si256(), p01 = p00, p02 = p00, p03 = p00;                                         \
        __m256i p10 = p00, p11 = p00, p12 = p00, p13 = p00;                                                            \
        _Pragma("GCC unroll 1") for (int k = 0; k < 8; k++)                                                           \
        {                                                                                                              \
            const __m256i v0 = _mm256_and_si256(_mm256_srli_epi16(load32(q0_ + 32 * k), shift), m4);                   \
            const __m256i v1 = _mm256_and_si256(_mm256_srli_epi16(load32(q1_ + 32 * k), shift), m4);                   \
            PAIR_STEP_X4(a[t][b].qs + 32 * (j) + 4 * k);                                                               \
        }                                                                                                              \
        K_PAIR_SCALE(j);                                                                                               \
    } while (0)

/* 16 rows (two groups) x 4 activation rows, as tile2_q4_0_x4: the partial
 * sums of a sub-block in registers, the sums of the block (s) and of the
 * tile (y) in memory. */
static inline __attribute__((always_inline)) void tile2_q4_K_x4(const struct blk_q4_K_r8 *w0,
                                                                const struct blk_q4_K_r8 *w1, int64_t nb,
                                                                const struct q8Kx *const *a, float *y,
                                                                size_t y_stride)
{
#define Q4_K_SUBBLOCKS                                                                                                 \
    _Pragma("GCC unroll 1") for (int j2 = 0; j2 < 4; j2++)                                                            \
    {                                                                                                                  \
        /* sub-blocks 2 j2 (low nibbles) and 2 j2 + 1 (high nibbles) of the \
         * same 8 vectors: constant shifts */                                                                          \
        Q4_K_PAIR_SUB(2 * j2, 0);                                                                                      \
        Q4_K_PAIR_SUB(2 * j2 + 1, 4);                                                                                  \
    }
    K_PAIR_X4_BODY(Q4_K_SUBBLOCKS)
#undef Q4_K_SUBBLOCKS
}

/* Two groups: the 4-row tile paired, other widths one group at a time. */
static inline __attribute__((always_inline)) void tile2_q4_K(const struct blk_q4_K_r8 *w0,
                                                             const struct blk_q4_K_r8 *w1, int64_t nb,
                                                             const struct q8Kx *const *a, const int nt, float *y,
                                                             size_t y_stride)
{
    if (nt == 4) {
        tile2_q4_K_x4(w0, w1, nb, a, y, y_stride);
        return;
    }
    tile_q4_K(w0, nb, a, nt, y, y_stride);
    tile_q4_K(w1, nb, a, nt, y + 8, y_stride);
}

/* ---- Q5_K ---- */


/* Codes 0..31 times activations: pairs of at most 7874, so four
 * vpmaddubsw results add up in int16 (31496) and eight would not; each
 * sub-block is summed as two halves of 4 vectors. */
static inline __attribute__((always_inline)) void tile_q5_K(const struct blk_q5_K_r8 *w, int64_t nb,
                                                            const struct q8Kx *const *a, const int nt, float *y,
                                                            size_t y_stride)
{
#define Q5_K_SUBBLOCKS \
        for (int j = 0; j < 8; j++) {                                                                                  \
            const uint8_t *q = x->qs + 32 * 8 * (j / 2);                                                               \
            for (int h = 0; h < 2; h++) {                                                                              \
                __m256i v[4];                                                                                          \
                for (int k = 0; k < 4; k++) {                                                                          \
                    const __m256i raw = load32(q + 32 * (4 * h + k));                                                  \
                    v[k] = _mm256_or_si256(_mm256_and_si256(j & 1 ? _mm256_srli_epi16(raw, 4) : raw, m4),              \
                                           q5k_high(load32(x->qh + 32 * (4 * h + k)), j));                             \
                }                                                                                                      \
                for (int t = 0; t < nt; t++) {                                                                         \
                    const int8_t *qa = a[t][b].qs + 32 * j + 16 * h;                                                   \
                    __m256i p = _mm256_maddubs_epi16(v[0], bcast4(qa));                                                \
                    for (int k = 1; k < 4; k++)                                                                        \
                        p = _mm256_add_epi16(p, _mm256_maddubs_epi16(v[k], bcast4(qa + 4 * k)));                       \
                    s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(p, sc[j]));                                        \
                }                                                                                                      \
            }                                                                                                          \
        }
    K_TILE_BODY(blk_q5_K_r8, Q5_K_SUBBLOCKS)
#undef Q5_K_SUBBLOCKS
}

/* Half h of sub-block j of both groups into s0, s1 (as Q4_K_PAIR_SUB). */
#define Q5_K_PAIR_HALF(j, h)                                                                                           \
    do {                                                                                                               \
        const uint8_t *q0_ = w0[b].qs + 32 * 8 * ((j) / 2) + 32 * 4 * (h), *q1_ = w1[b].qs + 32 * 8 * ((j) / 2) + 32 * 4 * (h); \
        const uint8_t *h0_ = w0[b].qh + 32 * 4 * (h), *h1_ = w1[b].qh + 32 * 4 * (h);                                  \
        __m256i p00 = _mm256_setzero_si256(), p01 = p00, p02 = p00, p03 = p00;                                         \
        __m256i p10 = p00, p11 = p00, p12 = p00, p13 = p00;                                                            \
        _Pragma("GCC unroll 1") for (int k = 0; k < 4; k++)                                                           \
        {                                                                                                              \
            const __m256i v0 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(load32(q0_ + 32 * k), 4 * ((j) & 1)), m4), \
                                               q5k_high(load32(h0_ + 32 * k), (j)));                                   \
            const __m256i v1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(load32(q1_ + 32 * k), 4 * ((j) & 1)), m4), \
                                               q5k_high(load32(h1_ + 32 * k), (j)));                                   \
            PAIR_STEP_X4(a[t][b].qs + 32 * (j) + 16 * (h) + 4 * k);                                                    \
        }                                                                                                              \
        K_PAIR_SCALE(j);                                                                                               \
    } while (0)

/* 16 rows (two groups) x 4 activation rows, as tile2_q4_K_x4. */
static inline __attribute__((always_inline)) void tile2_q5_K_x4(const struct blk_q5_K_r8 *w0,
                                                                const struct blk_q5_K_r8 *w1, int64_t nb,
                                                                const struct q8Kx *const *a, float *y,
                                                                size_t y_stride)
{
    /* sub-blocks one after the other, each a constant (the shifts) */
#define Q5_K_SUBBLOCKS                                                                                                 \
    do {                                                                                                               \
        Q5_K_PAIR_HALF(0, 0);                                                                                          \
        Q5_K_PAIR_HALF(0, 1);                                                                                          \
        Q5_K_PAIR_HALF(1, 0);                                                                                          \
        Q5_K_PAIR_HALF(1, 1);                                                                                          \
        Q5_K_PAIR_HALF(2, 0);                                                                                          \
        Q5_K_PAIR_HALF(2, 1);                                                                                          \
        Q5_K_PAIR_HALF(3, 0);                                                                                          \
        Q5_K_PAIR_HALF(3, 1);                                                                                          \
        Q5_K_PAIR_HALF(4, 0);                                                                                          \
        Q5_K_PAIR_HALF(4, 1);                                                                                          \
        Q5_K_PAIR_HALF(5, 0);                                                                                          \
        Q5_K_PAIR_HALF(5, 1);                                                                                          \
        Q5_K_PAIR_HALF(6, 0);                                                                                          \
        Q5_K_PAIR_HALF(6, 1);                                                                                          \
        Q5_K_PAIR_HALF(7, 0);                                                                                          \
        Q5_K_PAIR_HALF(7, 1);                                                                                          \
    } while (0)
    K_PAIR_X4_BODY(Q5_K_SUBBLOCKS)
#undef Q5_K_SUBBLOCKS
}

static inline __attribute__((always_inline)) void tile2_q5_K(const struct blk_q5_K_r8 *w0,
                                                             const struct blk_q5_K_r8 *w1, int64_t nb,
                                                             const struct q8Kx *const *a, const int nt, float *y,
                                                             size_t y_stride)
{
    if (nt == 4) {
        tile2_q5_K_x4(w0, w1, nb, a, y, y_stride);
        return;
    }
    tile_q5_K(w0, nb, a, nt, y, y_stride);
    tile_q5_K(w1, nb, a, nt, y + 8, y_stride);
}

/* ---- Q6_K ---- */

/* One Q6_K sub-block (16 elements of 8 rows) against nt activation rows. */
static inline __attribute__((always_inline)) void q6k_sub(const int8_t *scales, const struct q8Kx *const *a,
                                                          const int nt, int64_t b, const int j, const __m256i *L,
                                                          const __m256i *H, const int part, const __m256i m4,
                                                          __m256i *s, __m256i *off)
{
    /* scale of sub-block j as an (sc, sc) int16 pair per row */
    __m256i sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(scales + 8 * part)));
    sc = _mm256_blend_epi16(sc, _mm256_slli_epi32(sc, 16), 0xAA);
    const __m256i hmask = _mm256_set1_epi8((char)(3 << (2 * part)));
    __m256i e[4];
    for (int k = 0; k < 4; k++) {
        const __m256i lo = _mm256_and_si256(part < 2 ? L[k] : _mm256_srli_epi16(L[k], 4), m4);
        __m256i hi = _mm256_and_si256(H[k], hmask); /* to bits 4-5 */
        hi = part == 0 ? _mm256_slli_epi16(hi, 4) : part == 1 ? _mm256_slli_epi16(hi, 2)
           : part == 3 ? _mm256_srli_epi16(hi, 2) : hi;
        e[k] = _mm256_or_si256(lo, hi);
    }
    for (int t = 0; t < nt; t++) {
        const struct q8Kx *q = &a[t][b];
        const int8_t *qa = q->qs + 16 * j;
        __m256i pa = _mm256_add_epi16(_mm256_maddubs_epi16(e[0], bcast4(qa)), _mm256_maddubs_epi16(e[1], bcast4(qa + 4)));
        __m256i pb =
            _mm256_add_epi16(_mm256_maddubs_epi16(e[2], bcast4(qa + 8)), _mm256_maddubs_epi16(e[3], bcast4(qa + 12)));
        s[t] = _mm256_add_epi32(s[t], _mm256_add_epi32(_mm256_madd_epi16(pa, sc), _mm256_madd_epi16(pb, sc)));
        /* sc * (sum of the sub-block's activations), for the offset of the codes */
        off[t] = _mm256_add_epi32(off[t], _mm256_madd_epi16(sc, _mm256_set1_epi32(q->bs16w[j])));
    }
}

static inline __attribute__((always_inline)) void tile_q6_K(const struct blk_q6_K_r8 *w, int64_t nb,
                                                            const struct q8Kx *const *a, const int nt, float *y,
                                                            size_t y_stride)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[TILE_MAX];
    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        prefetch_block(&w[b], sizeof w[b]);
        const struct blk_q6_K_r8 *x = &w[b];
        __m256i s[TILE_MAX], off[TILE_MAX];
        for (int t = 0; t < nt; t++)
            s[t] = off[t] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const uint8_t *ql = x->c[c].ql, *qh = x->c[c].qh;
            const __m256i L0[4] = {load32(ql), load32(ql + 32), load32(ql + 64), load32(ql + 96)};
            const __m256i L1[4] = {load32(ql + 128), load32(ql + 160), load32(ql + 192), load32(ql + 224)};
            const __m256i H[4] = {load32(qh), load32(qh + 32), load32(qh + 64), load32(qh + 96)};
            /* part p = sub-block 4c + p: low bits from L0 (p even) or L1, low
             * or high nibble (p >= 2); top bits from bits 2p, 2p + 1 of H */
            q6k_sub(x->c[c].scales, a, nt, b, 4 * c + 0, L0, H, 0, m4, s, off);
            q6k_sub(x->c[c].scales, a, nt, b, 4 * c + 1, L1, H, 1, m4, s, off);
            q6k_sub(x->c[c].scales, a, nt, b, 4 * c + 2, L0, H, 2, m4, s, off);
            q6k_sub(x->c[c].scales, a, nt, b, 4 * c + 3, L1, H, 3, m4, s, off);
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)x->d));
        for (int t = 0; t < nt; t++) {
            /* codes are q + 32: sum sc (q y) = sum sc (code y) - 32 sum sc (sum y) */
            __m256i sumi = _mm256_sub_epi32(s[t], _mm256_slli_epi32(off[t], 5));
            __m256 v = _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a[t][b].d)), _mm256_cvtepi32_ps(sumi));
            acc[t] = _mm256_add_ps(acc[t], v);
        }
    }
    for (int t = 0; t < nt; t++)
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc[t]);
}


/* ---- 32-element blocks: Q4_1, Q5_0, Q5_1, MXFP4 (unsigned codes) and
 * IQ4_NL (signed table values) ----
 * Unsigned codes are at most 31 (MXFP4's are its values + 12, at most
 * 24): pairs of products at most 7874, so the 4 vectors of half a block
 * add up in int16. IQ4_NL's values reach -127: a pair can reach 32258,
 * so each vector's pairs go to int32 on their own (|v| x sign-adjusted
 * activations, as for Q8_0). CODES(x, c, h) as in mm_vnni.inc. */
#define B32_AVX2_SUMS(CODES, SIGNED)                                                                                   \
    __m256i s[TILE_MAX];                                                                                               \
    for (int t = 0; t < nt; t++)                                                                                       \
        s[t] = _mm256_setzero_si256();                                                                                 \
    for (int half = 0; half < 2; half++) {                                                                             \
        /* vectors c = 2 half, 2 half + 1, low and high nibbles: elements \
         * 8 half + 4k (k = 0, 1) and 16 further */                         \
        __m256i v[4], av[4];                                                                                           \
        for (int k = 0; k < 4; k++) {                                                                                  \
            v[k] = CODES(x, 2 * half + k / 2, k % 2);                                                                  \
            av[k] = SIGNED ? _mm256_sign_epi8(v[k], v[k]) : v[k];                                                      \
        }                                                                                                              \
        for (int t = 0; t < nt; t++) {                                                                                 \
            const int8_t *q = a[t].qs + QK8_0 * b + 8 * half;                                                          \
            const __m256i xs[4] = {bcast4(q), bcast4(q + 16), bcast4(q + 4), bcast4(q + 20)};                          \
            if (SIGNED) {                                                                                              \
                for (int k = 0; k < 4; k++)                                                                            \
                    s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(_mm256_maddubs_epi16(av[k], _mm256_sign_epi8(xs[k], v[k])), ones)); \
            } else {                                                                                                   \
                __m256i p = _mm256_maddubs_epi16(v[0], xs[0]);                                                         \
                for (int k = 1; k < 4; k++)                                                                            \
                    p = _mm256_add_epi16(p, _mm256_maddubs_epi16(v[k], xs[k]));                                        \
                s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(p, ones));                                             \
            }                                                                                                          \
        }                                                                                                              \
    }

/* The block loop of a 32-element type with an offset: acc = fma(sum -
 * OFFV(s8), d_w * d_a, acc) (s8 = 8 x the activations' sum). */
#define B32_AVX2_OFFSET_TILE(blk_t, PREP, CODES, SIGNED, OFFV, DW)                                                     \
    const __m256i ones = _mm256_set1_epi16(1);                                                                         \
    __m256 acc[TILE_MAX];                                                                                              \
    for (int t = 0; t < nt; t++)                                                                                       \
        acc[t] = _mm256_setzero_ps();                                                                                  \
    for (int64_t b = 0; b < nb; b++) {                                                                                 \
        const blk_t *x = &w[b];                                                                                        \
        prefetch_block(x, sizeof *x);                                                                                  \
        PREP(x);                                                                                                       \
        B32_AVX2_SUMS(CODES, SIGNED)                                                                                   \
        const __m256 dw = DW(x);                                                                                       \
        for (int t = 0; t < nt; t++)                                                                                   \
            acc[t] = block_fma(_mm256_sub_epi32(s[t], _mm256_set1_epi32(OFFV(a[t].s8[b]))), dw, a[t].d[b], acc[t]);    \
    }                                                                                                                  \
    for (int t = 0; t < nt; t++)                                                                                       \
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc[t]);

/* The block loop of a 32-element type with a minimum (Q4_1, Q5_1). */
#define B32_AVX2_MIN_TILE(blk_t, PREP, CODES)                                                                          \
    const __m256i ones = _mm256_set1_epi16(1);                                                                         \
    __m256 acc[TILE_MAX], mins[TILE_MAX];                                                                              \
    for (int t = 0; t < nt; t++)                                                                                       \
        acc[t] = mins[t] = _mm256_setzero_ps();                                                                        \
    for (int64_t b = 0; b < nb; b++) {                                                                                 \
        const blk_t *x = &w[b];                                                                                        \
        prefetch_block(x, sizeof *x);                                                                                  \
        PREP(x);                                                                                                       \
        B32_AVX2_SUMS(CODES, 0)                                                                                        \
        const __m256 dw = load_d8(x->d), mw = load_d8(x->m);                                                           \
        for (int t = 0; t < nt; t++) {                                                                                 \
            acc[t] = block_fma(s[t], dw, a[t].d[b], acc[t]);                                                           \
            mins[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(a[t].s[b]), mins[t]);                                         \
        }                                                                                                              \
    }                                                                                                                  \
    for (int t = 0; t < nt; t++)                                                                                       \
        _mm256_storeu_ps(y + (size_t)t * y_stride, _mm256_add_ps(acc[t], mins[t]));

#define NO_PREP(x) (void)(x)
#define PREP_QH(x) const __m256i qh = load32((x)->qh)
#define NIBBLES(x, c, h)                                                                                               \
    _mm256_and_si256((h) ? _mm256_srli_epi16(load32((x)->qs + 32 * (c)), 4) : load32((x)->qs + 32 * (c)), _mm256_set1_epi8(0x0F))
#define NIBBLES_Q5(x, c, h) _mm256_or_si256(NIBBLES(x, c, h), q5k_high(qh, 4 * (h) + (c)))
#define TABLE_CODES(x, c, h) lut_nibbles(lut, load32((x)->qs + 32 * (c)), h)
#define D8(x) load_d8((x)->d)
#define E8(x) mxfp4_scale8((x)->e)
#define OFF_Q5_0(s8) (2 * (s8))       /* codes - 16 */
#define OFF_NONE(s8) 0
#define OFF_MXFP4(s8) ((s8) + (s8) / 2) /* values + 12; s8 is a multiple of 8 */

#define B32_AVX2_FN(name, blk_t, view_t, BODY)                                                                         \
    static inline __attribute__((always_inline)) void tile_##name(const blk_t *w, int64_t nb, const view_t *a,       \
                                                                  const int nt, float *y, size_t y_stride)             \
    {                                                                                                                  \
        BODY                                                                                                           \
    }

B32_AVX2_FN(q4_1, struct blk_q4_1_r8, struct q8x1_view, B32_AVX2_MIN_TILE(struct blk_q4_1_r8, NO_PREP, NIBBLES))
B32_AVX2_FN(q5_1, struct blk_q5_1_r8, struct q8x1_view, B32_AVX2_MIN_TILE(struct blk_q5_1_r8, PREP_QH, NIBBLES_Q5))
B32_AVX2_FN(q5_0, struct blk_q5_0_r8, struct q8x_view,
            B32_AVX2_OFFSET_TILE(struct blk_q5_0_r8, PREP_QH, NIBBLES_Q5, 0, OFF_Q5_0, D8))
B32_AVX2_FN(iq4_nl, struct blk_q4_0_r8, struct q8x_view, const __m256i lut = lut16(pb_iq4nl_values, 0);
            B32_AVX2_OFFSET_TILE(struct blk_q4_0_r8, NO_PREP, TABLE_CODES, 1, OFF_NONE, D8))
B32_AVX2_FN(mxfp4, struct blk_mxfp4_r8, struct q8x_view, const __m256i lut = lut16(pb_mxfp4_values, 12);
            B32_AVX2_OFFSET_TILE(struct blk_mxfp4_r8, NO_PREP, TABLE_CODES, 0, OFF_MXFP4, E8))

/* ---- Q2_K, Q3_K (16 sub-blocks of 16), IQ4_XS (8 of 32) ----
 * As mm_vnni.inc's kernels, with each sub-block's products summed in int16
 * (Q2_K's codes at most 3, Q3_K's q + 4 at most 7: 4 vectors add up to
 * at most 7112) and multiplied by the sub-block's scale with vpmaddwd
 * ((sc, sc) int16 pairs). IQ4_XS's signed values: each vector's pairs
 * times the scale on its own (a pair reaches 32258). */
#define K16_AVX2_SUMS(HMASK, SCALE_PAIR, CORR_PAIR)                                                                    \
    __m256i sumi[TILE_MAX], corr[TILE_MAX];                                                                            \
    for (int t = 0; t < nt; t++)                                                                                       \
        sumi[t] = corr[t] = _mm256_setzero_si256();                                                                    \
    for (int j = 0; j < 16; j++) {                                                                                     \
        __m256i v[4];                                                                                                  \
        for (int k = 0; k < 4; k++)                                                                                    \
            v[k] = q2k_codes(x->qs, HMASK(x), j / 8, j % 8 / 2, 4 * (j % 2) + k);                                      \
        const __m256i sc = SCALE_PAIR(j);                                                                              \
        for (int t = 0; t < nt; t++) {                                                                                 \
            const int8_t *q = a[t][b].qs + 16 * j;                                                                     \
            __m256i p = _mm256_maddubs_epi16(v[0], bcast4(q));                                                         \
            for (int k = 1; k < 4; k++)                                                                                \
                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(v[k], bcast4(q + 4 * k)));                                \
            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, sc));                                             \
        }                                                                                                              \
    }                                                                                                                  \
    for (int k = 0; k < 8; k++) {                                                                                      \
        const __m256i f = CORR_PAIR(k);                                                                                \
        for (int t = 0; t < nt; t++)                                                                                   \
            corr[t] = _mm256_add_epi32(corr[t], _mm256_madd_epi16(f, bsum_pair(a[t][b].bs16, 2 * k)));               \
    }

#define NO_HMASK(x) ((const uint8_t *)0)
#define Q3_HMASK(x) ((x)->hmask)
#define Q2_SCALE_PAIR(j) _mm256_and_si256(byte_pair_same(sc8[(j) / 4], (j) % 4), _mm256_set1_epi16(0x0F))
#define Q2_MIN_PAIR(k) _mm256_srli_epi16(q4k_pair_next(sc8[(k) / 2], 2 * ((k) % 2)), 4)
#define Q3_SCALE_PAIR(j) _mm256_sub_epi16(byte_pair_same(sc8[(j) / 4], (j) % 4), _mm256_set1_epi16(32))
#define Q3_CORR_PAIR(k) _mm256_sub_epi16(q4k_pair_next(sc8[(k) / 2], 2 * ((k) % 2)), _mm256_set1_epi16(32))

static inline __attribute__((always_inline)) void tile_q2_K(const struct blk_q2_K_r8 *w, int64_t nb,
                                                            const struct q8Kx *const *a, const int nt, float *y,
                                                            size_t y_stride)
{
    __m256 acc[TILE_MAX], macc[TILE_MAX];
    for (int t = 0; t < nt; t++)
        acc[t] = macc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const struct blk_q2_K_r8 *x = &w[b];
        prefetch_block(x, sizeof *x);
        __m256i sc8[4];
        for (int k = 0; k < 4; k++)
            sc8[k] = load32(x->scales + 32 * k);
        K16_AVX2_SUMS(NO_HMASK, Q2_SCALE_PAIR, Q2_MIN_PAIR)
        const __m256 dw = load_d8(x->d), mw = load_d8(x->dmin);
        for (int t = 0; t < nt; t++) {
            acc[t] = block_fma(sumi[t], dw, a[t][b].d, acc[t]);
            macc[t] = block_fma(corr[t], mw, a[t][b].d, macc[t]);
        }
    }
    for (int t = 0; t < nt; t++)
        _mm256_storeu_ps(y + (size_t)t * y_stride, _mm256_sub_ps(acc[t], macc[t]));
}

static inline __attribute__((always_inline)) void tile_q3_K(const struct blk_q3_K_r8 *w, int64_t nb,
                                                            const struct q8Kx *const *a, const int nt, float *y,
                                                            size_t y_stride)
{
    __m256 acc[TILE_MAX];
    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const struct blk_q3_K_r8 *x = &w[b];
        prefetch_block(x, sizeof *x);
        __m256i sc8[4];
        q3k_scales8(x->scales, sc8);
        K16_AVX2_SUMS(Q3_HMASK, Q3_SCALE_PAIR, Q3_CORR_PAIR)
        const __m256 dw = load_d8(x->d);
        for (int t = 0; t < nt; t++)
            acc[t] = block_fma(_mm256_sub_epi32(sumi[t], _mm256_slli_epi32(corr[t], 2)), dw, a[t][b].d, acc[t]);
    }
    for (int t = 0; t < nt; t++)
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc[t]);
}

static inline __attribute__((always_inline)) void tile_iq4_xs(const struct blk_iq4_xs_r8 *w, int64_t nb,
                                                              const struct q8Kx *const *a, const int nt, float *y,
                                                              size_t y_stride)
{
    const __m256i lut = lut16(pb_iq4nl_values, 0);
    __m256 acc[TILE_MAX];
    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const struct blk_iq4_xs_r8 *x = &w[b];
        prefetch_block(x, sizeof *x);
        __m256i sc8[2];
        iq4xs_scales8(x->sa, x->sb, sc8);
        __m256i sumi[TILE_MAX];
        for (int t = 0; t < nt; t++)
            sumi[t] = _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            const __m256i sc = _mm256_sub_epi16(byte_pair_same(sc8[j / 4], j % 4), _mm256_set1_epi16(32));
            for (int k = 0; k < 4; k++) {
                const __m256i raw = load32(x->qs + 32 * (4 * j + k));
                const __m256i vl = lut_nibbles(lut, raw, 0), vh = lut_nibbles(lut, raw, 1);
                const __m256i al = _mm256_sign_epi8(vl, vl), ah = _mm256_sign_epi8(vh, vh);
                for (int t = 0; t < nt; t++) {
                    const int8_t *q = a[t][b].qs + 32 * j + 4 * k;
                    const __m256i pl = _mm256_maddubs_epi16(al, _mm256_sign_epi8(bcast4(q), vl));
                    const __m256i ph = _mm256_maddubs_epi16(ah, _mm256_sign_epi8(bcast4(q + 16), vh));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm256_madd_epi16(pl, sc), _mm256_madd_epi16(ph, sc)));
                }
            }
        }
        const __m256 dw = load_d8(x->d);
        for (int t = 0; t < nt; t++)
            acc[t] = block_fma(sumi[t], dw, a[t][b].d, acc[t]);
    }
    for (int t = 0; t < nt; t++)
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc[t]);
}


GEMM(f16, blk_f16_r8, tile_f16, tile2_f16, 1, 8, T_F16, const float *, f32_view_of)
GEMM(q4_0, blk_q4_0_r8, tile_q4_0, tile2_q4_0, 1, QK4_0, T_Q4_0, struct q8x_view, q8x_view_of)
GEMM(q8_0, blk_q8_0_r8, tile_q8_0, tile_q8_0, 0, QK8_0, T_Q8_0, struct q8x_view, q8x_view_of)
GEMM(q4_K, blk_q4_K_r8, tile_q4_K, tile2_q4_K, 1, QK_K, T_Q4_K, const struct q8Kx *, q8Kx_view_of)
GEMM(q5_K, blk_q5_K_r8, tile_q5_K, tile2_q5_K, 1, QK_K, T_Q5_K, const struct q8Kx *, q8Kx_view_of)
GEMM(q6_K, blk_q6_K_r8, tile_q6_K, tile_q6_K, 0, QK_K, T_Q6_K, const struct q8Kx *, q8Kx_view_of)
GEMM(q4_1, blk_q4_1_r8, tile_q4_1, tile_q4_1, 0, QK4_1, T_B32, struct q8x1_view, q8x1_view_of)
GEMM(q5_1, blk_q5_1_r8, tile_q5_1, tile_q5_1, 0, QK5_1, T_B32, struct q8x1_view, q8x1_view_of)
GEMM(q5_0, blk_q5_0_r8, tile_q5_0, tile_q5_0, 0, QK5_0, T_B32, struct q8x_view, q8x_view_of)
GEMM(iq4_nl, blk_q4_0_r8, tile_iq4_nl, tile_iq4_nl, 0, QK4_NL, T_B32, struct q8x_view, q8x_view_of)
GEMM(mxfp4, blk_mxfp4_r8, tile_mxfp4, tile_mxfp4, 0, QK_MXFP4, T_B32, struct q8x_view, q8x_view_of)
GEMM(q2_K, blk_q2_K_r8, tile_q2_K, tile_q2_K, 0, QK_K, T_K16, const struct q8Kx *, q8Kx_view_of)
GEMM(q3_K, blk_q3_K_r8, tile_q3_K, tile_q3_K, 0, QK_K, T_K16, const struct q8Kx *, q8Kx_view_of)
GEMM(iq4_xs, blk_iq4_xs_r8, tile_iq4_xs, tile_iq4_xs, 0, QK_K, T_K16, const struct q8Kx *, q8Kx_view_of)

#define MM_AS(t, T, act, layout)                                                                                       \
    [PB_TYPE_##T] = {                                                                                                  \
        .name = #t "_r8/avx2",                                                                                         \
        .wtype = PB_TYPE_##T,                                                                                          \
        .group = 8,                                                                                                    \
        .act_size = kern_act_size_##act,                                                                               \
        .act_quantize = kern_act_quantize_##act##_avx2,                                                                \
        .packed_size = pack_r8_size_##layout,                                                                          \
        .pack = pack_r8_##layout,                                                                                      \
        .gemm = gemm_##t,                                                                                              \
    }
#define MM(t, T, act) MM_AS(t, T, act, t)
/* F32 and F16: 8 elements a block, the activations' formats of this file. */
#define MM_ELEMENTS(t, T, act)                                                                                         \
    [PB_TYPE_##T] = {                                                                                                  \
        .name = #t "_r8/avx2",                                                                                         \
        .wtype = PB_TYPE_##T,                                                                                          \
        .group = 8,                                                                                                    \
        .in_block = 8,                                                                                                 \
        .act_size = act_size_##act,                                                                                    \
        .act_quantize = act_quantize_##act,                                                                            \
        .packed_size = pack_r8_size_##t,                                                                               \
        .pack = pack_r8_##t,                                                                                           \
        .gemm = gemm_##t,                                                                                              \
    }

static const struct kern_mm avx2_table[PB_TYPE_COUNT] = {
    MM_ELEMENTS(f32, F32, f64),
    MM_ELEMENTS(f16, F16, f32h),
    MM(q4_0, Q4_0, q8x),
    MM(q8_0, Q8_0, q8x),
    MM(q4_K, Q4_K, q8Kx),
    MM(q5_K, Q5_K, q8Kx),
    MM(q6_K, Q6_K, q8Kx),
    MM(q4_1, Q4_1, q8x1),
    MM(q5_1, Q5_1, q8x1),
    MM(q5_0, Q5_0, q8x),
    MM_AS(iq4_nl, IQ4_NL, q8x, q4_0),
    MM(mxfp4, MXFP4, q8x),
    MM(q2_K, Q2_K, q8Kx),
    MM(q3_K, Q3_K, q8Kx),
    MM(iq4_xs, IQ4_XS, q8Kx),
};

const struct kern_mm *kern_mm_avx2(enum pb_type t)
{
    if ((unsigned)t >= PB_TYPE_COUNT || !avx2_table[t].gemm)
        return NULL;
    return &avx2_table[t];
}
