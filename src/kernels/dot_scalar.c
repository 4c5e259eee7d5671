/* Scalar reference dot products. Integer parts are summed exactly in int;
 * float parts in the order of blocks. Clear over fast: these define the
 * results the SIMD kernels must reproduce. */
#include "base/fp16.h"
#include "kernels/kernels.h"
#include "quant/blocks.h"

#include <math.h>
#include <string.h>

float dot_f32_f32_scalar(int64_t n, const void *w, const void *a)
{
    const float *x = w, *y = a;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)x[i] * (double)y[i];
    return (float)sum;
}

float dot_f16_f16_scalar(int64_t n, const void *w, const void *a)
{
    const uint16_t *x = w, *y = a;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)fp16_to_f32(x[i]) * (double)fp16_to_f32(y[i]);
    return (float)sum;
}

float dot_bf16_bf16_scalar(int64_t n, const void *w, const void *a)
{
    const uint16_t *x = w, *y = a;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)bf16_to_f32(x[i]) * (double)bf16_to_f32(y[i]);
    return (float)sum;
}

/* Blocks are accumulated in order with one fused multiply-add each,
 * acc = fma(block sum, d_w * d_a, acc): the order of the row-interleaved
 * x86 kernels the reference outputs were computed with (see the note at
 * dot_q8_0_q8_0_scalar on why the order matters). */
float dot_q4_0_q8_0_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q4_0 *x = w;
    const struct block_q8_0 *y = a;
    float acc = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            sumi += ((x[i].qs[j] & 0x0F) - 8) * y[i].qs[j];
            sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + QK4_0 / 2];
        }
        acc = fmaf((float)sumi, fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d), acc);
    }
    return acc;
}

/* (q*d + m) . (p*e) = d*e*sum(q*p) + m * (e*sum(p)), the second factor
 * being the precomputed s of the Q8_1 block. */
float dot_q4_1_q8_1_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q4_1 *x = w;
    const struct block_q8_1 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_1 / 2; j++) {
            sumi += (x[i].qs[j] & 0x0F) * y[i].qs[j];
            sumi += (x[i].qs[j] >> 4) * y[i].qs[j + QK4_1 / 2];
        }
        sum += (float)sumi * fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d) +
               fp16_to_f32(x[i].m) * fp16_to_f32(y[i].s);
    }
    return sum;
}

static uint32_t q5_high_bits(const uint8_t qh[4])
{
    uint32_t v;
    memcpy(&v, qh, sizeof v);
    return v; /* little-endian host (checked at build time) */
}

float dot_q5_0_q8_0_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q5_0 *x = w;
    const struct block_q8_0 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        uint32_t qh = q5_high_bits(x[i].qh);
        int sumi = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            int q0 = ((x[i].qs[j] & 0x0F) | (int)((qh >> j) & 1u) << 4) - 16;
            int q1 = ((x[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4) - 16;
            sumi += q0 * y[i].qs[j] + q1 * y[i].qs[j + QK5_0 / 2];
        }
        sum += (float)sumi * fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d);
    }
    return sum;
}

float dot_q5_1_q8_1_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q5_1 *x = w;
    const struct block_q8_1 *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        uint32_t qh = q5_high_bits(x[i].qh);
        int sumi = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            int q0 = (x[i].qs[j] & 0x0F) | (int)((qh >> j) & 1u) << 4;
            int q1 = (x[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
            sumi += q0 * y[i].qs[j] + q1 * y[i].qs[j + QK5_1 / 2];
        }
        sum += (float)sumi * fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d) +
               fp16_to_f32(x[i].m) * fp16_to_f32(y[i].s);
    }
    return sum;
}

/* Summation order is part of this kernel's contract, so that SIMD
 * versions can reproduce it bit for bit: each block's 32 products are
 * summed in 8 lanes of 4 adjacent products; lane l accumulates
 * fma(d_w * d_a, lane sum, acc[l]) over the blocks; the lanes are reduced
 * as ((0+4)+(2+6)) + ((1+5)+(3+7)). That is the order of the usual 256-bit
 * x86 kernels, which produced the reference outputs in testdata: an
 * activation that rounds differently shifts logits by ~1e-3, enough to
 * flip near-ties, so matching the order matters. */
float dot_q8_0_q8_0_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q8_0 *x = w;
    const struct block_q8_0 *y = a;
    float acc[8] = {0};
    for (int64_t i = 0; i < n / QK8_0; i++) {
        float d = fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d);
        for (int l = 0; l < 8; l++) {
            int sumi = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++)
                sumi += x[i].qs[j] * y[i].qs[j];
            acc[l] = fmaf(d, (float)sumi, acc[l]);
        }
    }
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

/* sum over sub-blocks of (d*sc*q - dmin*m) . p*e
 *   = e * (d * sum(sc * q.p) - dmin * sum(m * sum(p))),
 * where sum(p) per 32 comes from two 16-element bsums of the Q8_K block. */
float dot_q4_K_q8_K_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q4_K *x = w;
    const struct block_q8_K *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *q = x[i].qs;
        const int8_t *p = y[i].qs;
        int sumi = 0, summ = 0;
        for (int c = 0; c < 4; c++, q += 32, p += 64) {
            uint8_t sc0, m0, sc1, m1;
            q4k_get_scale_min(2 * c, x[i].scales, &sc0, &m0);
            q4k_get_scale_min(2 * c + 1, x[i].scales, &sc1, &m1);
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                s0 += (q[l] & 0x0F) * p[l];
                s1 += (q[l] >> 4) * p[l + 32];
            }
            sumi += sc0 * s0 + sc1 * s1;
            summ += m0 * (y[i].bsums[4 * c] + y[i].bsums[4 * c + 1]) +
                    m1 * (y[i].bsums[4 * c + 2] + y[i].bsums[4 * c + 3]);
        }
        sum += y[i].d * (fp16_to_f32(x[i].d) * (float)sumi - fp16_to_f32(x[i].dmin) * (float)summ);
    }
    return sum;
}

float dot_q5_K_q8_K_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q5_K *x = w;
    const struct block_q8_K *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        const int8_t *p = y[i].qs;
        int sumi = 0, summ = 0;
        for (int c = 0; c < 4; c++, ql += 32, p += 64) {
            uint8_t sc0, m0, sc1, m1;
            q4k_get_scale_min(2 * c, x[i].scales, &sc0, &m0);
            q4k_get_scale_min(2 * c + 1, x[i].scales, &sc1, &m1);
            int s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                int q0 = (ql[l] & 0x0F) | ((qh[l] >> (2 * c)) & 1) << 4;
                int q1 = (ql[l] >> 4) | ((qh[l] >> (2 * c + 1)) & 1) << 4;
                s0 += q0 * p[l];
                s1 += q1 * p[l + 32];
            }
            sumi += sc0 * s0 + sc1 * s1;
            summ += m0 * (y[i].bsums[4 * c] + y[i].bsums[4 * c + 1]) +
                    m1 * (y[i].bsums[4 * c + 2] + y[i].bsums[4 * c + 3]);
        }
        sum += y[i].d * (fp16_to_f32(x[i].d) * (float)sumi - fp16_to_f32(x[i].dmin) * (float)summ);
    }
    return sum;
}

float dot_q6_K_q8_K_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q6_K *x = w;
    const struct block_q8_K *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales, *p = y[i].qs;
        int sumi = 0;
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, p += 128) {
            int s[8] = {0}; /* per 16-element sub-block of this half */
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0x0F) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q2 = ((ql[l + 32] & 0x0F) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                s[is] += q1 * p[l];
                s[is + 2] += q2 * p[l + 32];
                s[is + 4] += q3 * p[l + 64];
                s[is + 6] += q4 * p[l + 96];
            }
            for (int k = 0; k < 8; k++)
                sumi += sc[k] * s[k];
        }
        sum += fp16_to_f32(x[i].d) * y[i].d * (float)sumi;
    }
    return sum;
}

/* Weight type -> activation type and kernel. SIMD variants will replace
 * entries here at start-up after checking the CPU. */
static const struct kern_dot dot_table[PB_TYPE_COUNT] = {
    [PB_TYPE_F32] = {PB_TYPE_F32, dot_f32_f32_scalar},
    [PB_TYPE_F16] = {PB_TYPE_F16, dot_f16_f16_scalar},
    [PB_TYPE_BF16] = {PB_TYPE_BF16, dot_bf16_bf16_scalar},
    [PB_TYPE_Q4_0] = {PB_TYPE_Q8_0, dot_q4_0_q8_0_scalar},
    [PB_TYPE_Q4_1] = {PB_TYPE_Q8_1, dot_q4_1_q8_1_scalar},
    [PB_TYPE_Q5_0] = {PB_TYPE_Q8_0, dot_q5_0_q8_0_scalar},
    [PB_TYPE_Q5_1] = {PB_TYPE_Q8_1, dot_q5_1_q8_1_scalar},
    [PB_TYPE_Q8_0] = {PB_TYPE_Q8_0, dot_q8_0_q8_0_scalar},
    [PB_TYPE_Q4_K] = {PB_TYPE_Q8_K, dot_q4_K_q8_K_scalar},
    [PB_TYPE_Q5_K] = {PB_TYPE_Q8_K, dot_q5_K_q8_K_scalar},
    [PB_TYPE_Q6_K] = {PB_TYPE_Q8_K, dot_q6_K_q8_K_scalar},
};

const struct kern_dot *kern_dot_for(enum pb_type t)
{
    if ((unsigned)t >= PB_TYPE_COUNT || !dot_table[t].dot)
        return NULL;
    return &dot_table[t];
}
