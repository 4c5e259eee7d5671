/* Types whose codes index a table of values instead of standing for
 * evenly spaced levels: MXFP4 (the E2M1 values of the OCP microscaling
 * format, one power-of-two scale per 32), IQ4_NL (a non-uniform 16-value
 * grid, one fp16 scale per 32) and IQ4_XS (the same grid, 6-bit scales per
 * 32 under one fp16 scale per 256).
 *
 * Their quantizers pick, per block, the scale whose table lookups give the
 * least squared error among a few candidates, then each element's nearest
 * table value.
 */
#include "base/fp16.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/round.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

const int8_t pb_mxfp4_values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
const int8_t pb_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* A 16-value grid for nearest-value searches: the values in ascending
 * order, the code of each, and the midpoints between neighbours. */
struct grid {
    float mid[15];
    uint8_t code[16];
};

static void grid_init(struct grid *g, const int8_t *table)
{
    int8_t v[16];
    for (int i = 0; i < 16; i++) { /* insertion sort of the codes by value */
        int j = i;
        while (j > 0 && v[j - 1] > table[i]) {
            v[j] = v[j - 1];
            g->code[j] = g->code[j - 1];
            j--;
        }
        v[j] = table[i];
        g->code[j] = (uint8_t)i;
    }
    for (int i = 0; i < 15; i++)
        g->mid[i] = 0.5f * ((float)v[i] + (float)v[i + 1]);
}

/* The code of the grid value nearest to x (a tie goes to the lower
 * value); infinities take the extremes, NaN the lowest. */
static uint8_t grid_nearest(const struct grid *g, float x)
{
    int i = 0;
    i += x > g->mid[i + 7] ? 8 : 0;
    i += x > g->mid[i + 3] ? 4 : 0;
    i += x > g->mid[i + 1] ? 2 : 0;
    i += x > g->mid[i] ? 1 : 0;
    return g->code[i];
}

static struct grid grids[2]; /* MXFP4's, IQ4's */
static pthread_once_t grids_once = PTHREAD_ONCE_INIT;

static void grids_init(void)
{
    grid_init(&grids[0], pb_mxfp4_values);
    grid_init(&grids[1], pb_iq4nl_values);
}

static const struct grid *mxfp4_grid(void)
{
    pthread_once(&grids_once, grids_init);
    return &grids[0];
}

static const struct grid *iq4_grid(void)
{
    pthread_once(&grids_once, grids_init);
    return &grids[1];
}

/* ---- MXFP4 ---- */

void dequant_row_mxfp4(const void *src, float *dst, int64_t n)
{
    const struct block_mxfp4 *b = src;
    for (int64_t i = 0; i < n / QK_MXFP4; i++, dst += QK_MXFP4) {
        float d = mxfp4_scale(b[i].e);
        for (int j = 0; j < QK_MXFP4 / 2; j++) {
            dst[j] = (float)pb_mxfp4_values[b[i].qs[j] & 0x0F] * d;
            dst[j + QK_MXFP4 / 2] = (float)pb_mxfp4_values[b[i].qs[j] >> 4] * d;
        }
    }
}

/* Squared error of block x coded with scale exponent e (codes to q). */
static float mxfp4_try(const float *x, uint8_t e, uint8_t *q)
{
    const struct grid *g = mxfp4_grid();
    float d = mxfp4_scale(e), err = 0;
    for (int j = 0; j < QK_MXFP4; j++) {
        q[j] = grid_nearest(g, x[j] / d);
        float diff = x[j] - (float)pb_mxfp4_values[q[j]] * d;
        err += diff * diff;
    }
    return err;
}

/* The exponent that puts the largest magnitude between 8 and 16 units
 * (the top code is 12: the largest values may clip, the others keep their
 * resolution), or one more (nothing clips); the better of the two. */
void quant_row_mxfp4(const float *src, void *dst, int64_t n)
{
    struct block_mxfp4 *b = dst;
    for (int64_t i = 0; i < n / QK_MXFP4; i++, src += QK_MXFP4) {
        float amax = 0;
        for (int j = 0; j < QK_MXFP4; j++)
            if (fabsf(src[j]) > amax) /* NaN never compares greater */
                amax = fabsf(src[j]);
        uint8_t q[QK_MXFP4];
        uint8_t e = 0;
        if (amax > 0 && isfinite(amax)) {
            int k = (int)floorf(log2f(amax)) + 125; /* 2^(e - 128) = 2^(floor(log2 amax) - 3) */
            e = (uint8_t)(k < 0 ? 0 : k > 254 ? 254 : k);
            uint8_t q1[QK_MXFP4];
            float err0 = mxfp4_try(src, e, q), err1 = mxfp4_try(src, (uint8_t)(e + 1), q1);
            if (err1 < err0) {
                e = (uint8_t)(e + 1);
                memcpy(q, q1, sizeof q);
            }
        } else if (amax > 0) { /* infinities: the largest scale, saturated codes */
            e = 255;
            mxfp4_try(src, e, q);
        } else {
            memset(q, 0, sizeof q);
        }
        b[i].e = e;
        for (int j = 0; j < QK_MXFP4 / 2; j++)
            b[i].qs[j] = (uint8_t)(q[j] | q[j + QK_MXFP4 / 2] << 4);
    }
}

/* ---- IQ4_NL and IQ4_XS ---- */

/* Per-element weights of a block's fit: the square, with a floor of the
 * block's mean square so that small values are not ignored. */
static void iq4_weights(const float *x, int n, float *w)
{
    float sum2 = 0;
    for (int i = 0; i < n; i++)
        sum2 += x[i] * x[i];
    for (int i = 0; i < n; i++)
        w[i] = sum2 / (float)n + x[i] * x[i];
}

/* Fits x[i] ~ d * pb_iq4nl_values[q[i]] over n elements: for inverse scales
 * that put the largest magnitude near either end of the table, every
 * element takes its nearest table value and d is refitted by weighted
 * least squares; the fit with the least weighted error wins. Returns d
 * (0 for an all-zero block), codes to q. */
static float iq4_fit(const float *x, const float *w, int n, uint8_t *q)
{
    const struct grid *g = iq4_grid();
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (!(amax > 0) || !isfinite(amax)) {
        for (int i = 0; i < n; i++)
            q[i] = grid_nearest(g, x[i] > 0 ? INFINITY : x[i] < 0 ? -INFINITY : 0.0f);
        return amax > 0 ? 1.0f : 0.0f; /* infinities: codes only say the sign */
    }
    uint8_t cand[QK_K];
    float best_d = max / (float)pb_iq4nl_values[0], best_err = INFINITY;
    for (int i = 0; i < n; i++)
        q[i] = grid_nearest(g, x[i] / best_d);
    for (int end = 0; end < 2; end++) {
        float extreme = (float)(end ? pb_iq4nl_values[15] : pb_iq4nl_values[0]);
        for (int step = -8; step <= 8; step++) {
            float id = (extreme + (float)step) / max;
            float sxv = 0, svv = 0;
            for (int i = 0; i < n; i++) {
                cand[i] = grid_nearest(g, id * x[i]);
                float v = (float)pb_iq4nl_values[cand[i]];
                sxv += w[i] * x[i] * v;
                svv += w[i] * v * v;
            }
            if (!(svv > 0))
                continue;
            /* at the least-squares d the weighted error is
             * sum w x^2 - sxv^2 / svv: the best fit has the largest
             * sxv^2 / svv */
            float err = -sxv * sxv / svv;
            if (err < best_err) {
                best_err = err;
                best_d = sxv / svv;
                memcpy(q, cand, (size_t)n);
            }
        }
    }
    return best_d;
}

void dequant_row_iq4_nl(const void *src, float *dst, int64_t n)
{
    const struct block_iq4_nl *b = src;
    for (int64_t i = 0; i < n / QK4_NL; i++, dst += QK4_NL) {
        float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < QK4_NL / 2; j++) {
            dst[j] = d * (float)pb_iq4nl_values[b[i].qs[j] & 0x0F];
            dst[j + QK4_NL / 2] = d * (float)pb_iq4nl_values[b[i].qs[j] >> 4];
        }
    }
}

/* Nibbles of 32 codes in Q4_0's order. */
static void pack_nibbles32(const uint8_t *q, uint8_t *qs)
{
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
}

/* Codes of the block x for the scale d as stored (0: all codes of 1). */
static void iq4_round(const float *x, int n, float d, uint8_t *q)
{
    const struct grid *g = iq4_grid();
    float id = d != 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++)
        q[i] = grid_nearest(g, id * x[i]);
}

void quant_row_iq4_nl(const float *src, void *dst, int64_t n)
{
    struct block_iq4_nl *b = dst;
    for (int64_t i = 0; i < n / QK4_NL; i++, src += QK4_NL) {
        float w[QK4_NL];
        uint8_t q[QK4_NL];
        iq4_weights(src, QK4_NL, w);
        b[i].d = f32_to_fp16(iq4_fit(src, w, QK4_NL, q));
        iq4_round(src, QK4_NL, fp16_to_f32(b[i].d), q);
        pack_nibbles32(q, b[i].qs);
    }
}

void dequant_row_iq4_xs(const void *src, float *dst, int64_t n)
{
    const struct block_iq4_xs *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < 8; j++, dst += 32) {
            float dl = d * (float)iq4xs_scale(b[i].scales_h, b[i].scales_l, j);
            const uint8_t *qs = b[i].qs + 16 * j;
            for (int k = 0; k < 16; k++) {
                dst[k] = dl * (float)pb_iq4nl_values[qs[k] & 0x0F];
                dst[k + 16] = dl * (float)pb_iq4nl_values[qs[k] >> 4];
            }
        }
    }
}

/* Each sub-block of 32 fitted as an IQ4_NL block, the 8 scales then
 * quantized to 6 signed bits (-32..31) of one fp16 scale whose sign maps
 * the largest to -32; the codes are re-rounded with the scales as stored.
 * No importance matrix: the weights are the values' squares. */
void quant_row_iq4_xs(const float *src, void *dst, int64_t n)
{
    struct block_iq4_xs *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        float w[QK_K], scale[8], max_scale = 0, amax_scale = 0;
        uint8_t q[QK_K];
        iq4_weights(src, QK_K, w);
        for (int j = 0; j < 8; j++) {
            scale[j] = iq4_fit(src + 32 * j, w + 32 * j, 32, q + 32 * j);
            if (fabsf(scale[j]) > amax_scale) {
                amax_scale = fabsf(scale[j]);
                max_scale = scale[j];
            }
        }
        int ls[8] = {0};
        float d = 0;
        if (amax_scale > 0 && isfinite(amax_scale)) {
            float iscale = -32.0f / max_scale;
            b[i].d = f32_to_fp16(1.0f / iscale);
            d = fp16_to_f32(b[i].d);
            for (int j = 0; j < 8; j++)
                ls[j] = pb_round_clamp(iscale * scale[j], -32, 31);
        } else {
            b[i].d = 0;
        }
        b[i].scales_h = 0;
        memset(b[i].scales_l, 0, sizeof b[i].scales_l);
        for (int j = 0; j < 8; j++) {
            int v = ls[j] + 32;
            b[i].scales_l[j / 2] |= (uint8_t)((v & 0x0F) << (4 * (j % 2)));
            b[i].scales_h |= (uint16_t)((v >> 4) << (2 * j));
            iq4_round(src + 32 * j, 32, d * (float)ls[j], q + 32 * j);
            pack_nibbles32(q + 32 * j, b[i].qs + 16 * j);
        }
    }
}
