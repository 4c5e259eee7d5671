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

/* Products of two halves are exact in float; they are accumulated in
 * order with one fused multiply-add each, the order a SIMD kernel with one
 * row per lane follows. */
float dot_f16_f16_scalar(int64_t n, const void *w, const void *a)
{
    const uint16_t *x = w, *y = a;
    float sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum = fmaf(fp16_to_f32(x[i]), fp16_to_f32(y[i]), sum);
    return sum;
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
 * x86 kernels the reference outputs were computed with. (The order of
 * float operations decides the last bits of a result, and a last bit can
 * flip the rounding of an activation quantized downstream.) */
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
 * being the precomputed s of the Q8_1 block. Two running sums, as in
 * llama.cpp's x86 kernel: blocks in order with acc = fma(block sum,
 * d_w * d_a, acc), and the minimums' part with summs = fma(m, s, summs);
 * the result is acc + summs. (llama.cpp keeps acc as eight partial sums
 * of 4 products each and adds them at the end; one sum per block, as
 * here, is what the row-interleaved SIMD kernels compute at full speed.
 * The two differ in the last bits.) */
float dot_q4_1_q8_1_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q4_1 *x = w;
    const struct block_q8_1 *y = a;
    float acc = 0, summs = 0;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_1 / 2; j++) {
            sumi += (x[i].qs[j] & 0x0F) * y[i].qs[j];
            sumi += (x[i].qs[j] >> 4) * y[i].qs[j + QK4_1 / 2];
        }
        acc = fmaf((float)sumi, fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d), acc);
        summs = fmaf(fp16_to_f32(x[i].m), fp16_to_f32(y[i].s), summs);
    }
    return acc + summs;
}

static uint32_t q5_high_bits(const uint8_t qh[4])
{
    uint32_t v;
    memcpy(&v, qh, sizeof v);
    return v; /* little-endian host (checked at build time) */
}

/* Q5_0: acc = fma(block sum, d_w * d_a, acc), blocks in order; Q5_1 as
 * Q4_1. (The same per-block form of llama.cpp's x86 order as Q4_1.) */
float dot_q5_0_q8_0_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q5_0 *x = w;
    const struct block_q8_0 *y = a;
    float acc = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        uint32_t qh = q5_high_bits(x[i].qh);
        int sumi = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            int q0 = ((x[i].qs[j] & 0x0F) | (int)((qh >> j) & 1u) << 4) - 16;
            int q1 = ((x[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4) - 16;
            sumi += q0 * y[i].qs[j] + q1 * y[i].qs[j + QK5_0 / 2];
        }
        acc = fmaf((float)sumi, fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d), acc);
    }
    return acc;
}

float dot_q5_1_q8_1_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q5_1 *x = w;
    const struct block_q8_1 *y = a;
    float acc = 0, summs = 0;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        uint32_t qh = q5_high_bits(x[i].qh);
        int sumi = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            int q0 = (x[i].qs[j] & 0x0F) | (int)((qh >> j) & 1u) << 4;
            int q1 = (x[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
            sumi += q0 * y[i].qs[j] + q1 * y[i].qs[j + QK5_1 / 2];
        }
        acc = fmaf((float)sumi, fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d), acc);
        summs = fmaf(fp16_to_f32(x[i].m), fp16_to_f32(y[i].s), summs);
    }
    return acc + summs;
}

/* As Q4_0: one exact integer sum per block, blocks accumulated in order
 * with acc = fma(block sum, d_w * d_a, acc). (llama.cpp's 256-bit kernel
 * keeps eight partial sums per row instead; the two orders differ in the
 * last bits, well inside the reference tolerances, and this one is what
 * row-interleaved SIMD kernels compute naturally.) */
float dot_q8_0_q8_0_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q8_0 *x = w;
    const struct block_q8_0 *y = a;
    float acc = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++)
            sumi += x[i].qs[j] * y[i].qs[j];
        acc = fmaf((float)sumi, fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d), acc);
    }
    return acc;
}

/* sum over sub-blocks of (d*sc*q - dmin*m) . p*e
 *   = e * (d * sum(sc * q.p) - dmin * sum(m * sum(p))),
 * where sum(p) per 32 comes from two 16-element bsums of the Q8_K block. */
static float dot_scale_min_q8_K(uint16_t d, uint16_t dmin, const uint8_t *scales, const uint8_t *q,
                                const struct block_q8_K *y)
{
    int sumi = 0, summ = 0;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        q4k_get_scale_min(j, scales, &sc, &m);
        int s = 0;
        for (int l = 0; l < 32; l++)
            s += q[32 * j + l] * y->qs[32 * j + l];
        sumi += sc * s;
        summ += m * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
    }
    return y->d * (fp16_to_f32(d) * (float)sumi - fp16_to_f32(dmin) * (float)summ);
}

float dot_q4_K_q8_K_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q4_K *x = w;
    const struct block_q8_K *y = a;
    uint8_t q[QK_K];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        q4k_unpack(x[i].qs, q);
        sum += dot_scale_min_q8_K(x[i].d, x[i].dmin, x[i].scales, q, &y[i]);
    }
    return sum;
}

float dot_q5_K_q8_K_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q5_K *x = w;
    const struct block_q8_K *y = a;
    uint8_t q[QK_K];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        q5k_unpack(x[i].qs, x[i].qh, q);
        sum += dot_scale_min_q8_K(x[i].d, x[i].dmin, x[i].scales, q, &y[i]);
    }
    return sum;
}

float dot_q6_K_q8_K_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q6_K *x = w;
    const struct block_q8_K *y = a;
    int8_t q[QK_K];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        q6k_unpack(x[i].ql, x[i].qh, q);
        int sumi = 0;
        for (int j = 0; j < 16; j++) { /* 16 sub-blocks of 16, int8 scales */
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += q[16 * j + l] * y[i].qs[16 * j + l];
            sumi += x[i].scales[j] * s;
        }
        sum += fp16_to_f32(x[i].d) * y[i].d * (float)sumi;
    }
    return sum;
}

/* The products of 32 codes (the nibbles of qs, ordered as Q4_0's) looked
 * up in table, with 32 activations: IQ4_NL's and MXFP4's blocks and
 * IQ4_XS's sub-blocks. */
static int table_dot32(const int8_t *table, const uint8_t *qs, const int8_t *q8)
{
    int s = 0;
    for (int j = 0; j < 16; j++)
        s += table[qs[j] & 0x0F] * q8[j] + table[qs[j] >> 4] * q8[j + 16];
    return s;
}

/* MXFP4: as Q4_0 with the codes' table values and the block scale
 * 2^(e - 128): acc = fma(block sum, d_w * d_a, acc), blocks in order, the
 * order of llama.cpp's row-interleaved x86 kernels for MXFP4 (its gemv and
 * gemm over 8 interleaved rows), which is what runs gpt-oss's experts. */
float dot_mxfp4_q8_0_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_mxfp4 *x = w;
    const struct block_q8_0 *y = a;
    float acc = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int sumi = table_dot32(pb_mxfp4_values, x[i].qs, y[i].qs);
        acc = fmaf((float)sumi, mxfp4_scale(x[i].e) * fp16_to_f32(y[i].d), acc);
    }
    return acc;
}

/* IQ4_NL: as Q4_0 with the codes' table values, in the same order:
 * llama.cpp runs IQ4_NL matrices with the row-interleaved x86 kernels of
 * Q4_0 and MXFP4 (gemv and gemm), acc = fma(block sum, d_w * d_a, acc). */
float dot_iq4_nl_q8_0_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_iq4_nl *x = w;
    const struct block_q8_0 *y = a;
    float acc = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int sumi = table_dot32(pb_iq4nl_values, x[i].qs, y[i].qs);
        acc = fmaf((float)sumi, fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d), acc);
    }
    return acc;
}

/* Q2_K: per block, the codes' products times the sub-block scales
 * (sumi) and the minimums times the activations' 16-element sums (summ),
 * each exact; then two running sums over the blocks,
 * A = fma(sumi, d_w * d_a, A) and M = fma(summ, dmin_w * d_a, M), and the
 * result A - M: the order of llama.cpp's 8-row interleaved x86 kernels for
 * Q2_K (used on CPUs with AVX-512). */
float dot_q2_K_q8_K_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q2_K *x = w;
    const struct block_q8_K *y = a;
    uint8_t q[QK_K];
    float accd = 0, accm = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        q2k_unpack(x[i].qs, q);
        int sumi = 0, summ = 0;
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += q[16 * j + l] * y[i].qs[16 * j + l];
            sumi += (x[i].scales[j] & 0x0F) * s;
            summ += (x[i].scales[j] >> 4) * y[i].bsums[j];
        }
        accd = fmaf((float)sumi, fp16_to_f32(x[i].d) * y[i].d, accd);
        accm = fmaf((float)summ, fp16_to_f32(x[i].dmin) * y[i].d, accm);
    }
    return accd - accm;
}

/* Q3_K and IQ4_XS: one exact sum per block of the codes' products times
 * the sub-block scales, and acc = fma(d_w * d_a, block sum, acc) in block
 * order. llama.cpp's x86 kernels for these keep eight partial sums per
 * row (4 products each, scaled, then a horizontal sum at the end); the
 * per-block form gives the same integers and differs in the last bits of
 * the float sum, and lets the row-interleaved SIMD kernels run at the
 * speed of Q4_K's instead of half of it. */
float dot_q3_K_q8_K_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_q3_K *x = w;
    const struct block_q8_K *y = a;
    int8_t q[QK_K];
    float acc = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        q3k_unpack(x[i].qs, x[i].hmask, q);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += q[16 * j + l] * y[i].qs[16 * j + l];
            sumi += q3k_scale(x[i].scales, j) * s;
        }
        acc = fmaf(fp16_to_f32(x[i].d) * y[i].d, (float)sumi, acc);
    }
    return acc;
}

float dot_iq4_xs_q8_K_scalar(int64_t n, const void *w, const void *a)
{
    const struct block_iq4_xs *x = w;
    const struct block_q8_K *y = a;
    float acc = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sumi = 0;
        for (int j = 0; j < 8; j++)
            sumi += iq4xs_scale(x[i].scales_h, x[i].scales_l, j) *
                    table_dot32(pb_iq4nl_values, x[i].qs + 16 * j, y[i].qs + 32 * j);
        acc = fmaf(fp16_to_f32(x[i].d) * y[i].d, (float)sumi, acc);
    }
    return acc;
}

/* Weight type -> activation type and reference kernel. */
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
    [PB_TYPE_MXFP4] = {PB_TYPE_Q8_0, dot_mxfp4_q8_0_scalar},
    [PB_TYPE_IQ4_NL] = {PB_TYPE_Q8_0, dot_iq4_nl_q8_0_scalar},
    [PB_TYPE_Q2_K] = {PB_TYPE_Q8_K, dot_q2_K_q8_K_scalar},
    [PB_TYPE_Q3_K] = {PB_TYPE_Q8_K, dot_q3_K_q8_K_scalar},
    [PB_TYPE_IQ4_XS] = {PB_TYPE_Q8_K, dot_iq4_xs_q8_K_scalar},
};

const struct kern_dot *kern_dot_for(enum pb_type t)
{
    if ((unsigned)t >= PB_TYPE_COUNT || !dot_table[t].dot)
        return NULL;
    return &dot_table[t];
}
