/* Floats and the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * Q8_1): reference conversions. */
#include "base/fp16.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/round.h"

#include <math.h>
#include <string.h>


/* ---- floats ---- */

void dequant_row_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void quant_row_f32(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void dequant_row_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = fp16_to_f32(s[i]);
}

void quant_row_f16(const float *src, void *dst, int64_t n)
{
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++)
        d[i] = f32_to_fp16(src[i]);
}

void dequant_row_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(s[i]);
}

void quant_row_bf16(const float *src, void *dst, int64_t n)
{
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++)
        d[i] = f32_to_bf16(src[i]);
}

/* ---- helpers shared by the 32-element types ---- */

/* The value of largest magnitude, with its sign (0 for an all-zero block). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void min_max(const float *x, int n, float *min, float *max)
{
    *min = x[0];
    *max = x[0];
    for (int j = 1; j < n; j++) {
        if (x[j] < *min)
            *min = x[j];
        if (x[j] > *max)
            *max = x[j];
    }
}

static uint32_t load_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* ---- Q4_0: symmetric 4-bit; the extreme value maps to -8 so the whole
 * range [-8, 7] is used ---- */

void dequant_row_q4_0(const void *src, float *dst, int64_t n)
{
    const struct block_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, dst += QK4_0) {
        float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[j] = (float)((b[i].qs[j] & 0x0F) - 8) * d;
            dst[j + QK4_0 / 2] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void quant_row_q4_0(const float *src, void *dst, int64_t n)
{
    struct block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, src += QK4_0) {
        float d = signed_absmax(src, QK4_0) / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = f32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int q0 = pb_floor_clamp(src[j] * id + 8.5f, 0, 15);
            int q1 = pb_floor_clamp(src[j + QK4_0 / 2] * id + 8.5f, 0, 15);
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

/* ---- Q4_1: 4-bit with a minimum ---- */

void dequant_row_q4_1(const void *src, float *dst, int64_t n)
{
    const struct block_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK4_1; i++, dst += QK4_1) {
        float d = fp16_to_f32(b[i].d), m = fp16_to_f32(b[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            dst[j] = (float)(b[i].qs[j] & 0x0F) * d + m;
            dst[j + QK4_1 / 2] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

void quant_row_q4_1(const float *src, void *dst, int64_t n)
{
    struct block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / QK4_1; i++, src += QK4_1) {
        float min, max;
        min_max(src, QK4_1, &min, &max);
        float d = (max - min) / 15.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = f32_to_fp16(d);
        b[i].m = f32_to_fp16(min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            int q0 = pb_floor_clamp((src[j] - min) * id + 0.5f, 0, 15);
            int q1 = pb_floor_clamp((src[j + QK4_1 / 2] - min) * id + 0.5f, 0, 15);
            b[i].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

/* ---- Q5_0 / Q5_1: as Q4_0 / Q4_1 with a fifth bit kept in qh ---- */

void dequant_row_q5_0(const void *src, float *dst, int64_t n)
{
    const struct block_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK5_0; i++, dst += QK5_0) {
        float d = fp16_to_f32(b[i].d);
        uint32_t qh = load_u32le(b[i].qh);
        for (int j = 0; j < QK5_0 / 2; j++) {
            int q0 = (b[i].qs[j] & 0x0F) | (int)((qh >> j) & 1u) << 4;
            int q1 = (b[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
            dst[j] = (float)(q0 - 16) * d;
            dst[j + QK5_0 / 2] = (float)(q1 - 16) * d;
        }
    }
}

void quant_row_q5_0(const float *src, void *dst, int64_t n)
{
    struct block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / QK5_0; i++, src += QK5_0) {
        float d = signed_absmax(src, QK5_0) / -16.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint32_t qh = 0;
        b[i].d = f32_to_fp16(d);
        for (int j = 0; j < QK5_0 / 2; j++) {
            int q0 = pb_floor_clamp(src[j] * id + 16.5f, 0, 31);
            int q1 = pb_floor_clamp(src[j + QK5_0 / 2] * id + 16.5f, 0, 31);
            b[i].qs[j] = (uint8_t)((q0 & 0x0F) | (q1 & 0x0F) << 4);
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        store_u32le(b[i].qh, qh);
    }
}

void dequant_row_q5_1(const void *src, float *dst, int64_t n)
{
    const struct block_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK5_1; i++, dst += QK5_1) {
        float d = fp16_to_f32(b[i].d), m = fp16_to_f32(b[i].m);
        uint32_t qh = load_u32le(b[i].qh);
        for (int j = 0; j < QK5_1 / 2; j++) {
            int q0 = (b[i].qs[j] & 0x0F) | (int)((qh >> j) & 1u) << 4;
            int q1 = (b[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
            dst[j] = (float)q0 * d + m;
            dst[j + QK5_1 / 2] = (float)q1 * d + m;
        }
    }
}

void quant_row_q5_1(const float *src, void *dst, int64_t n)
{
    struct block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / QK5_1; i++, src += QK5_1) {
        float min, max;
        min_max(src, QK5_1, &min, &max);
        float d = (max - min) / 31.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint32_t qh = 0;
        b[i].d = f32_to_fp16(d);
        b[i].m = f32_to_fp16(min);
        for (int j = 0; j < QK5_1 / 2; j++) {
            int q0 = pb_floor_clamp((src[j] - min) * id + 0.5f, 0, 31);
            int q1 = pb_floor_clamp((src[j + QK5_1 / 2] - min) * id + 0.5f, 0, 31);
            b[i].qs[j] = (uint8_t)((q0 & 0x0F) | (q1 & 0x0F) << 4);
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        store_u32le(b[i].qh, qh);
    }
}

/* ---- Q8_0 / Q8_1: 8-bit, also the activation types of the 32-element
 * weights. Rounding follows the reference implementation's x86 path (scale
 * 127 / amax, round half to even, before the scale is stored as fp16) so
 * that integer dot products agree with it. ---- */

void dequant_row_q8_0(const void *src, float *dst, int64_t n)
{
    const struct block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++, dst += QK8_0) {
        float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < QK8_0; j++)
            dst[j] = (float)b[i].qs[j] * d;
    }
}

void quant_row_q8_0(const float *src, void *dst, int64_t n)
{
    struct block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, src += QK8_0) {
        float amax = fabsf(signed_absmax(src, QK8_0));
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        b[i].d = f32_to_fp16(amax / 127.0f);
        for (int j = 0; j < QK8_0; j++)
            b[i].qs[j] = (int8_t)pb_rint_clamp(src[j] * id, -127, 127);
    }
}

void dequant_row_q8_1(const void *src, float *dst, int64_t n)
{
    const struct block_q8_1 *b = src;
    for (int64_t i = 0; i < n / QK8_1; i++, dst += QK8_1) {
        float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < QK8_1; j++)
            dst[j] = (float)b[i].qs[j] * d;
    }
}

void quant_row_q8_1(const float *src, void *dst, int64_t n)
{
    struct block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / QK8_1; i++, src += QK8_1) {
        float amax = fabsf(signed_absmax(src, QK8_1));
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            b[i].qs[j] = (int8_t)pb_rint_clamp(src[j] * id, -127, 127);
            sum += b[i].qs[j];
        }
        b[i].d = f32_to_fp16(d);
        b[i].s = f32_to_fp16((float)sum * d);
    }
}
