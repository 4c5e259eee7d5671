/* The 256-element "K" types: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and the
 * activation type Q8_K.
 *
 * Quantizing a super-block is two-level: first the best scale (and min) of
 * each sub-block in floating point, by a small search that refits the
 * scale by weighted least squares for each candidate rounding; then those
 * scales are themselves quantized (6 or 8 bits) against one fp16 super
 * scale, and the elements are re-rounded with the scale actually stored.
 */
#include "base/fp16.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/round.h"

#include <math.h>
#include <string.h>

/* ---- sub-block fitting ---- */

/* Fits x[i] ~ scale * q[i] - min with q in 0..nmax, scale >= 0, min >= 0
 * (the offset is never positive, as Q4_K/Q5_K store it as a subtracted
 * non-negative min), minimising sum w[i] * err^2. Tries several roundings
 * around the plain (max - min) / nmax grid and refits each by least
 * squares. Writes the codes to q and returns the scale. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *q, float *min_out)
{
    float xmin = x[0], xmax = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < xmin)
            xmin = x[i];
        if (x[i] > xmax)
            xmax = x[i];
    }
    if (xmin > 0)
        xmin = 0;
    if (!(xmax > xmin)) { /* constant block (or NaN): all codes 0 */
        memset(q, 0, (size_t)n);
        *min_out = -xmin;
        return 0.0f;
    }

    float best_err = INFINITY, best_scale = (xmax - xmin) / (float)nmax, best_off = xmin;
    uint8_t cand[QK_K];
    for (int step = -10; step <= 10; step++) {
        float iscale = ((float)nmax + 0.1f * (float)step) / (xmax - xmin);
        float sw = 0, sq = 0, sqq = 0, sx = 0, sqx = 0;
        for (int i = 0; i < n; i++) {
            int l = pb_round_clamp(iscale * (x[i] - xmin), 0, nmax);
            cand[i] = (uint8_t)l;
            sw += w[i];
            sq += w[i] * (float)l;
            sqq += w[i] * (float)(l * l);
            sx += w[i] * x[i];
            sqx += w[i] * (float)l * x[i];
        }
        /* least squares for x ~ s * l + b */
        float det = sw * sqq - sq * sq;
        float s, b;
        if (det > 0) {
            s = (sw * sqx - sq * sx) / det;
            b = (sqq * sx - sq * sqx) / det;
        } else {
            s = sqq > 0 ? sqx / sqq : 0;
            b = 0;
        }
        if (b > 0) { /* offset must be <= 0: refit the scale alone */
            b = 0;
            s = sqq > 0 ? sqx / sqq : 0;
        }
        if (s < 0)
            continue;
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = s * (float)cand[i] + b - x[i];
            err += w[i] * diff * diff;
        }
        if (err < best_err) {
            best_err = err;
            best_scale = s;
            best_off = b;
            memcpy(q, cand, (size_t)n);
        }
    }
    if (best_err == INFINITY) { /* no candidate was usable */
        for (int i = 0; i < n; i++)
            q[i] = (uint8_t)pb_round_clamp((x[i] - xmin) / best_scale, 0, nmax);
    }
    *min_out = -best_off;
    return best_scale;
}

/* Fits x[i] ~ scale * q[i] with q in -nmax..nmax-1 (one more step on the
 * negative side), minimising sum w[i] * err^2 over a few candidate
 * roundings. Returns the scale, which may be negative. */
static float fit_scale_symmetric(int n, int nmax, const float *x, const float *w)
{
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    if (!(amax > 0))
        return 0.0f;
    float best_err = INFINITY, best_scale = -max / (float)nmax;
    for (int step = -9; step <= 9; step++) {
        /* negative so that the extreme value lands on -nmax */
        float iscale = -((float)nmax + 0.1f * (float)step) / max;
        float sqq = 0, sqx = 0;
        for (int i = 0; i < n; i++) {
            int l = pb_round_clamp(iscale * x[i], -nmax, nmax - 1);
            sqq += w[i] * (float)(l * l);
            sqx += w[i] * (float)l * x[i];
        }
        if (!(sqq > 0))
            continue;
        float s = sqx / sqq;
        float err = 0;
        for (int i = 0; i < n; i++) {
            int l = pb_round_clamp(iscale * x[i], -nmax, nmax - 1);
            float diff = s * (float)l - x[i];
            err += w[i] * diff * diff;
        }
        if (err < best_err) {
            best_err = err;
            best_scale = s;
        }
    }
    return best_scale;
}

/* Per-element weights for the sub-block fits: larger magnitudes matter
 * more, with a floor so small values are not ignored. */
static void importance_weights(const float *x, float *w)
{
    float sum2 = 0;
    for (int i = 0; i < QK_K; i++)
        sum2 += x[i] * x[i];
    float floor_w = sqrtf(sum2 / QK_K);
    for (int i = 0; i < QK_K; i++)
        w[i] = floor_w + fabsf(x[i]);
}

/* Packs 6-bit scales and mins of the 8 sub-blocks into 12 bytes (the
 * inverse of q4k_get_scale_min). */
static void pack_scale_min(const uint8_t *sc, const uint8_t *m, uint8_t *s)
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | (m[j + 4] & 0x0F) << 4);
    }
}

/* Fits the n_sub sub-blocks of len elements of one super-block with
 * x ~ scale * q - min, q in 0..nmax (Q4_K, Q5_K: 8 of 32; Q2_K: 16 of 16),
 * then quantizes the scales and the mins to 0..smax steps of one fp16
 * super scale each (d_out, dmin_out; the steps to sc and mn) and re-rounds
 * every element with the scale and min as stored (codes to L). */
static void fit_superblock_scale_min(const float *x, int nmax, int n_sub, int len, int smax, uint16_t *d_out,
                                     uint16_t *dmin_out, uint8_t *sc, uint8_t *mn, uint8_t *L)
{
    float w[QK_K], scale[16], min[16];
    importance_weights(x, w);
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < n_sub; j++) {
        scale[j] = fit_scale_min(len, nmax, x + len * j, w + len * j, L + len * j, &min[j]);
        if (scale[j] > max_scale)
            max_scale = scale[j];
        if (min[j] > max_min)
            max_min = min[j];
    }
    float inv_scale = max_scale > 0 ? (float)smax / max_scale : 0.0f;
    float inv_min = max_min > 0 ? (float)smax / max_min : 0.0f;
    for (int j = 0; j < n_sub; j++) {
        sc[j] = (uint8_t)pb_round_clamp(inv_scale * scale[j], 0, smax);
        mn[j] = (uint8_t)pb_round_clamp(inv_min * min[j], 0, smax);
    }
    *d_out = f32_to_fp16(max_scale / (float)smax);
    *dmin_out = f32_to_fp16(max_min / (float)smax);

    /* re-round every element with the scale and min as stored */
    float d = fp16_to_f32(*d_out), dmin = fp16_to_f32(*dmin_out);
    for (int j = 0; j < n_sub; j++) {
        float ds = d * (float)sc[j];
        if (!(ds > 0)) {
            memset(L + len * j, 0, (size_t)len);
            continue;
        }
        float dm = dmin * (float)mn[j];
        for (int i = 0; i < len; i++)
            L[len * j + i] = (uint8_t)pb_round_clamp((x[len * j + i] + dm) / ds, 0, nmax);
    }
}

/* Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins, packed. */
static void quant_superblock_scale_min(const float *x, int nmax, uint16_t *d_out, uint16_t *dmin_out,
                                       uint8_t *scales_out, uint8_t *L)
{
    uint8_t sc[8], mn[8];
    fit_superblock_scale_min(x, nmax, 8, 32, 63, d_out, dmin_out, sc, mn, L);
    pack_scale_min(sc, mn, scales_out);
}

/* ---- Q4_K ---- */

/* Sub-block j of 32 elements: x = d * sc_j * q - dmin * m_j. */
static void dequant_scale_min(uint16_t d16, uint16_t dmin16, const uint8_t *scales, const uint8_t *q, float *dst)
{
    float d = fp16_to_f32(d16), dmin = fp16_to_f32(dmin16);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        q4k_get_scale_min(j, scales, &sc, &m);
        float dj = d * sc, mj = dmin * m;
        for (int l = 0; l < 32; l++)
            dst[32 * j + l] = dj * (float)q[32 * j + l] - mj;
    }
}

void dequant_row_q4_K(const void *src, float *dst, int64_t n)
{
    const struct block_q4_K *b = src;
    uint8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        q4k_unpack(b[i].qs, q);
        dequant_scale_min(b[i].d, b[i].dmin, b[i].scales, q, dst);
    }
}

void quant_row_q4_K(const float *src, void *dst, int64_t n)
{
    struct block_q4_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        quant_superblock_scale_min(src, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
    }
}

/* ---- Q5_K ---- */

void dequant_row_q5_K(const void *src, float *dst, int64_t n)
{
    const struct block_q5_K *b = src;
    uint8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        q5k_unpack(b[i].qs, b[i].qh, q);
        dequant_scale_min(b[i].d, b[i].dmin, b[i].scales, q, dst);
    }
}

void quant_row_q5_K(const float *src, void *dst, int64_t n)
{
    struct block_q5_K *b = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        quant_superblock_scale_min(src, 31, &b[i].d, &b[i].dmin, b[i].scales, L);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
                b[i].qs[32 * c + l] = (uint8_t)((lo & 0x0F) | (hi & 0x0F) << 4);
                b[i].qh[l] |= (uint8_t)((lo >> 4) << (2 * c) | (hi >> 4) << (2 * c + 1));
            }
        }
    }
}

/* ---- Q6_K ---- */

void dequant_row_q6_K(const void *src, float *dst, int64_t n)
{
    const struct block_q6_K *b = src;
    int8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        float d = fp16_to_f32(b[i].d);
        q6k_unpack(b[i].ql, b[i].qh, q);
        for (int k = 0; k < QK_K; k++)
            dst[k] = d * (float)b[i].scales[k / 16] * (float)q[k];
    }
}

void quant_row_q6_K(const float *src, void *dst, int64_t n)
{
    struct block_q6_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        float w[QK_K], scale[16];
        for (int k = 0; k < QK_K; k++)
            w[k] = src[k] * src[k];
        float max_scale = 0, amax_scale = 0;
        for (int j = 0; j < 16; j++) {
            scale[j] = fit_scale_symmetric(16, 32, src + 16 * j, w + 16 * j);
            if (fabsf(scale[j]) > amax_scale) {
                amax_scale = fabsf(scale[j]);
                max_scale = scale[j];
            }
        }
        uint8_t L[QK_K];
        if (!(amax_scale > 0)) {
            memset(b[i].scales, 0, sizeof b[i].scales);
            b[i].d = 0;
            memset(L, 32, sizeof L);
        } else {
            float iscale = -128.0f / max_scale;
            for (int j = 0; j < 16; j++)
                b[i].scales[j] = (int8_t)pb_round_clamp(iscale * scale[j], -128, 127);
            b[i].d = f32_to_fp16(1.0f / iscale);
            float d = fp16_to_f32(b[i].d);
            for (int j = 0; j < 16; j++) {
                float ds = d * (float)b[i].scales[j];
                for (int k = 0; k < 16; k++) {
                    int q = ds != 0 ? pb_round_clamp(src[16 * j + k] / ds, -32, 31) : 0;
                    L[16 * j + k] = (uint8_t)(q + 32);
                }
            }
        }
        for (int half = 0; half < 2; half++) {
            uint8_t *ql = b[i].ql + 64 * half, *qh = b[i].qh + 32 * half;
            const uint8_t *Lh = L + 128 * half;
            for (int l = 0; l < 32; l++) {
                int q1 = Lh[l], q2 = Lh[l + 32], q3 = Lh[l + 64], q4 = Lh[l + 96];
                ql[l] = (uint8_t)((q1 & 0x0F) | (q3 & 0x0F) << 4);
                ql[l + 32] = (uint8_t)((q2 & 0x0F) | (q4 & 0x0F) << 4);
                qh[l] = (uint8_t)((q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
            }
        }
    }
}

/* ---- Q2_K ---- */

void dequant_row_q2_K(const void *src, float *dst, int64_t n)
{
    const struct block_q2_K *b = src;
    uint8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        float d = fp16_to_f32(b[i].d), dmin = fp16_to_f32(b[i].dmin);
        q2k_unpack(b[i].qs, q);
        for (int j = 0; j < 16; j++) {
            float dl = d * (float)(b[i].scales[j] & 0x0F), ml = dmin * (float)(b[i].scales[j] >> 4);
            for (int l = 0; l < 16; l++)
                dst[16 * j + l] = dl * (float)q[16 * j + l] - ml;
        }
    }
}

/* Packs codes 0..3 of element order into Q2_K's qs (the inverse of
 * q2k_unpack); with Q3_K's codes + 4, only their low 2 bits. */
static void pack_q2k_low(const uint8_t *L, uint8_t qs[QK_K / 4])
{
    memset(qs, 0, QK_K / 4);
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++)
                qs[32 * h + l] |= (uint8_t)((L[128 * h + 32 * s + l] & 3) << (2 * s));
}

void quant_row_q2_K(const float *src, void *dst, int64_t n)
{
    struct block_q2_K *b = dst;
    uint8_t L[QK_K], sc[16], mn[16];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        fit_superblock_scale_min(src, 3, 16, 16, 15, &b[i].d, &b[i].dmin, sc, mn, L);
        for (int j = 0; j < 16; j++)
            b[i].scales[j] = (uint8_t)(sc[j] | mn[j] << 4);
        pack_q2k_low(L, b[i].qs);
    }
}

/* ---- Q3_K ---- */

void dequant_row_q3_K(const void *src, float *dst, int64_t n)
{
    const struct block_q3_K *b = src;
    int8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        float d = fp16_to_f32(b[i].d);
        q3k_unpack(b[i].qs, b[i].hmask, q);
        for (int j = 0; j < 16; j++) {
            float dl = d * (float)q3k_scale(b[i].scales, j);
            for (int l = 0; l < 16; l++)
                dst[16 * j + l] = dl * (float)q[16 * j + l];
        }
    }
}

/* Symmetric sub-block scales (codes -4..3), quantized to 6 signed bits
 * against one fp16 scale whose sign maps the largest to -32, as Q6_K. */
void quant_row_q3_K(const float *src, void *dst, int64_t n)
{
    struct block_q3_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        float w[QK_K], scale[16];
        importance_weights(src, w);
        float max_scale = 0, amax_scale = 0;
        for (int j = 0; j < 16; j++) {
            scale[j] = fit_scale_symmetric(16, 4, src + 16 * j, w + 16 * j);
            if (fabsf(scale[j]) > amax_scale) {
                amax_scale = fabsf(scale[j]);
                max_scale = scale[j];
            }
        }
        int ls[16];
        uint8_t L[QK_K]; /* codes + 4: 0..7 */
        if (!(amax_scale > 0)) {
            b[i].d = 0;
            for (int j = 0; j < 16; j++)
                ls[j] = 0;
            memset(L, 4, sizeof L);
        } else {
            float iscale = -32.0f / max_scale;
            for (int j = 0; j < 16; j++)
                ls[j] = pb_round_clamp(iscale * scale[j], -32, 31);
            b[i].d = f32_to_fp16(1.0f / iscale);
            float d = fp16_to_f32(b[i].d);
            for (int j = 0; j < 16; j++) {
                float ds = d * (float)ls[j];
                for (int k = 0; k < 16; k++)
                    L[16 * j + k] = (uint8_t)((ds != 0 ? pb_round_clamp(src[16 * j + k] / ds, -4, 3) : 0) + 4);
            }
        }
        memset(b[i].scales, 0, sizeof b[i].scales);
        for (int j = 0; j < 16; j++) {
            int v = ls[j] + 32;
            b[i].scales[j % 8] |= (uint8_t)((v & 0x0F) << (4 * (j / 8)));
            b[i].scales[8 + j % 4] |= (uint8_t)((v >> 4) << (2 * (j / 4)));
        }
        pack_q2k_low(L, b[i].qs);
        memset(b[i].hmask, 0, sizeof b[i].hmask);
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int l = 0; l < 32; l++)
                    b[i].hmask[l] |= (uint8_t)((L[128 * h + 32 * s + l] >> 2) << (4 * h + s));
    }
}

/* ---- Q8_K: activations for the K-quant dot products. The extreme value
 * maps to -127 and rounding is to nearest even, as in the reference
 * implementation, so integer dot products agree with it. ---- */

void dequant_row_q8_K(const void *src, float *dst, int64_t n)
{
    const struct block_q8_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++)
        for (int j = 0; j < QK_K; j++)
            *dst++ = b[i].d * (float)b[i].qs[j];
}

void quant_row_q8_K(const float *src, void *dst, int64_t n)
{
    struct block_q8_K *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        float amax = 0, max = 0;
        for (int j = 0; j < QK_K; j++) {
            if (fabsf(src[j]) > amax) {
                amax = fabsf(src[j]);
                max = src[j];
            }
        }
        if (!(amax > 0) || !isfinite(amax)) {
            memset(&b[i], 0, sizeof b[i]);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++)
            b[i].qs[j] = (int8_t)pb_rint_clamp(iscale * src[j], -128, 127);
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int k = 0; k < 16; k++)
                sum += b[i].qs[16 * g + k];
            b[i].bsums[g] = (int16_t)sum;
        }
        b[i].d = 1.0f / iscale;
    }
}
