/* Types whose codes index a table of values instead of standing for
 * evenly spaced levels: MXFP4 (the E2M1 values of the OCP microscaling
 * format, one power-of-two scale per 32) and, below, the IQ4 types.
 *
 * Their quantizers pick, per block, the scale whose table lookups give the
 * least squared error among a few candidates, then each element's nearest
 * table value.
 */
#include "quant/blocks.h"
#include "quant/quant.h"

#include <math.h>
#include <string.h>

const int8_t pb_mxfp4_values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* Index of the table value nearest to v (the first of equals), among n
 * entries. Infinities take the extreme values; NaN maps to index 0. */
static int nearest_index(const int8_t *table, int n, float v)
{
    v = v > 1e30f ? 1e30f : v < -1e30f ? -1e30f : v;
    int best = 0;
    float best_err = INFINITY;
    for (int i = 0; i < n; i++) {
        float err = fabsf(v - (float)table[i]);
        if (err < best_err) {
            best_err = err;
            best = i;
        }
    }
    return best;
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
    float d = mxfp4_scale(e), err = 0;
    for (int j = 0; j < QK_MXFP4; j++) {
        q[j] = (uint8_t)nearest_index(pb_mxfp4_values, 16, x[j] / d);
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
