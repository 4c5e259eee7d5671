/* Block layouts of the quantized types, byte for byte as GGUF stores them.
 *
 * fp16 fields are stored as raw uint16_t; convert with fp16_to_f32. The
 * static asserts pin the sizes: a layout change here would silently corrupt
 * every model file.
 */
#ifndef PLUMB_QUANT_BLOCKS_H
#define PLUMB_QUANT_BLOCKS_H

#include <stdint.h>
#include <string.h>

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12
#define QK4_NL 32
#define QK_MXFP4 32

/* x = (q - 8) * d, q in 0..15; qs[j] holds element j (low nibble) and
 * element j + 16 (high nibble). */
struct block_q4_0 {
    uint16_t d;
    uint8_t qs[QK4_0 / 2];
};

/* x = q * d + m, q in 0..15, nibbles as in Q4_0. */
struct block_q4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[QK4_1 / 2];
};

/* x = (q - 16) * d, q in 0..31: low 4 bits as Q4_0, bit 4 of element j is
 * bit j of qh (little-endian 32-bit). */
struct block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
};

/* x = q * d + m, q in 0..31, bits as Q5_0. */
struct block_q5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
};

/* x = q * d, q in -127..127. */
struct block_q8_0 {
    uint16_t d;
    int8_t qs[QK8_0];
};

/* Activation type paired with Q4_1/Q5_1: x = q * d, s = d * sum(q). */
struct block_q8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[QK8_1];
};

/* 256 elements in 8 sub-blocks of 32; each sub-block has a 6-bit scale and
 * a 6-bit min packed in scales[12]; x = d * sc * q - dmin * m, q in 0..15.
 * qs holds 4 chunks of 64 elements: 32 bytes, low nibbles first sub-block,
 * high nibbles the next. */
struct block_q4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};

/* As Q4_K with a fifth bit per element in qh: for chunk c (0..3) of 64,
 * the low sub-block uses bit 2c of qh[l], the high one bit 2c + 1. */
struct block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};

/* 256 elements in 16 sub-blocks of 16 with int8 scales; x = d * sc * (q - 32),
 * q in 0..63: low 4 bits in ql, high 2 bits in qh. */
struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
};

/* Activation type for the K-quants: float scale, int8 values, and the sum
 * of each group of 16 values (used for the min terms). */
struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};

/* 256 elements in 16 sub-blocks of 16; scales[j] holds sub-block j's
 * 4-bit scale (low nibble) and 4-bit min (high nibble);
 * x = d * sc * q - dmin * m, q in 0..3. Element 128h + 32s + l (half h,
 * shift s = 0..3, l = 0..31) is bits 2s, 2s + 1 of qs[32h + l]; it lies in
 * sub-block 8h + 2s + l / 16. */
struct block_q2_K {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    uint16_t d;
    uint16_t dmin;
};

/* 256 elements in 16 sub-blocks of 16; x = d * (sc - 32) * q, q in -4..3.
 * The low 2 bits of q are laid out as Q2_K's codes; a set bit 4h + s of
 * hmask[l] (element 128h + 32s + l) means q is those bits, a clear one
 * that they minus 4. The 6-bit scales: scale j has its low 4 bits in
 * nibble j / 8 of scales[j % 8], its high 2 bits at bit 2 (j / 4) of
 * scales[8 + j % 4]. */
struct block_q3_K {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
};

/* x = d * pb_iq4nl_values[q], q in 0..15, nibbles as in Q4_0. */
struct block_iq4_nl {
    uint16_t d;
    uint8_t qs[QK4_NL / 2];
};

/* 256 elements in 8 sub-blocks of 32: x = d * (ls_j - 32) *
 * pb_iq4nl_values[q]. The 6-bit ls_j has its low 4 bits in nibble j % 2 of
 * scales_l[j / 2] and its high 2 bits at bit 2j of scales_h; sub-block j's
 * codes are the nibbles of qs[16j .. 16j + 15] as in Q4_0. */
struct block_iq4_xs {
    uint16_t d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
};

/* MXFP4 (OCP microscaling FP4): 32 elements, one power-of-two scale.
 * x = mxfp4_value(q) * mxfp4_scale(e), q in 0..15 indexes the E2M1 values
 * (doubled, so that they are integers: 0, 1, 2, 3, 4, 6, 8, 12 and their
 * negatives); the scale is 2^(e - 128), the E8M0 exponent halved to make
 * up for the doubling. Nibbles as in Q4_0: qs[j] holds element j (low)
 * and j + 16 (high). */
struct block_mxfp4 {
    uint8_t e;
    uint8_t qs[QK_MXFP4 / 2];
};

_Static_assert(sizeof(struct block_q4_0) == 18, "block_q4_0 size");
_Static_assert(sizeof(struct block_q4_1) == 20, "block_q4_1 size");
_Static_assert(sizeof(struct block_q5_0) == 22, "block_q5_0 size");
_Static_assert(sizeof(struct block_q5_1) == 24, "block_q5_1 size");
_Static_assert(sizeof(struct block_q8_0) == 34, "block_q8_0 size");
_Static_assert(sizeof(struct block_q8_1) == 36, "block_q8_1 size");
_Static_assert(sizeof(struct block_q4_K) == 144, "block_q4_K size");
_Static_assert(sizeof(struct block_q5_K) == 176, "block_q5_K size");
_Static_assert(sizeof(struct block_q6_K) == 210, "block_q6_K size");
_Static_assert(sizeof(struct block_q8_K) == 292, "block_q8_K size");
_Static_assert(sizeof(struct block_mxfp4) == 17, "block_mxfp4 size");
_Static_assert(sizeof(struct block_q2_K) == 84, "block_q2_K size");
_Static_assert(sizeof(struct block_q3_K) == 110, "block_q3_K size");
_Static_assert(sizeof(struct block_iq4_nl) == 18, "block_iq4_nl size");
_Static_assert(sizeof(struct block_iq4_xs) == 136, "block_iq4_xs size");

/* The 16 values an MXFP4 code stands for (E2M1, times 2). */
extern const int8_t pb_mxfp4_values[16];
/* The 16 values an IQ4_NL / IQ4_XS code stands for (a non-uniform grid,
 * denser near zero, as the reference implementation defines it). */
extern const int8_t pb_iq4nl_values[16];

/* 2^(e - 128) as a float, exactly (e = 0 and 1 give subnormals): the
 * E8M0 scale of an MXFP4 block, halved. */
static inline float mxfp4_scale(uint8_t e)
{
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Unpacks the 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K
 * block: the first four live in the low 6 bits of bytes 0..3 and 4..7, the
 * last four are split between bytes 8..11 and the top bits of 0..7. */
static inline void q4k_get_scale_min(int j, const uint8_t *s, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* The 256 codes of a K-quant block in element order: what the layouts
 * above mean, stated once for the dequantizers and the dot kernels. */

/* Q4_K: 0..15. Chunk c of 64 elements: low nibbles of qs[32c..32c+31],
 * then their high nibbles. */
static inline void q4k_unpack(const uint8_t qs[QK_K / 2], uint8_t q[QK_K])
{
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = qs[32 * c + l] & 0x0F;
            q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
}

/* Q5_K: 0..31, the Q4_K nibbles plus bit 2c (low half of chunk c) or
 * 2c + 1 (high half) of qh[l]. */
static inline void q5k_unpack(const uint8_t qs[QK_K / 2], const uint8_t qh[QK_K / 8], uint8_t q[QK_K])
{
    q4k_unpack(qs, q);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] |= (uint8_t)(((qh[l] >> (2 * c)) & 1) << 4);
            q[64 * c + 32 + l] |= (uint8_t)(((qh[l] >> (2 * c + 1)) & 1) << 4);
        }
}

/* Q6_K: -32..31. Half h of 128 elements, quarter g of 32: low 4 bits in
 * ql[64h + 32(g % 2) + l] (high nibble when g >= 2), top 2 bits at bit 2g
 * of qh[32h + l]. */
static inline void q6k_unpack(const uint8_t ql[QK_K / 2], const uint8_t qh[QK_K / 4], int8_t q[QK_K])
{
    for (int h = 0; h < 2; h++)
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) {
                int low = (ql[64 * h + 32 * (g % 2) + l] >> (4 * (g / 2))) & 0x0F;
                int high = (qh[32 * h + l] >> (2 * g)) & 3;
                q[128 * h + 32 * g + l] = (int8_t)((low | high << 4) - 32);
            }
}

/* Q2_K: 0..3, and the low 2 bits of Q3_K. Element 128h + 32s + l: bits
 * 2s, 2s + 1 of qs[32h + l]. */
static inline void q2k_unpack(const uint8_t qs[QK_K / 4], uint8_t q[QK_K])
{
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++)
                q[128 * h + 32 * s + l] = (uint8_t)((qs[32 * h + l] >> (2 * s)) & 3);
}

/* Q3_K: -4..3, the low bits as Q2_K minus 4 where bit 4h + s of hmask[l]
 * is clear. */
static inline void q3k_unpack(const uint8_t qs[QK_K / 4], const uint8_t hmask[QK_K / 8], int8_t q[QK_K])
{
    uint8_t low[QK_K];
    q2k_unpack(qs, low);
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                int e = 128 * h + 32 * s + l;
                q[e] = (int8_t)(low[e] - ((hmask[l] >> (4 * h + s)) & 1 ? 0 : 4));
            }
}

/* Q3_K's scale of sub-block j (0..15), minus 32: -32..31. */
static inline int q3k_scale(const uint8_t scales[12], int j)
{
    int low = (scales[j % 8] >> (4 * (j / 8))) & 0x0F;
    int high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (low | high << 4) - 32;
}

/* IQ4_XS's scale of sub-block j (0..7), minus 32: -32..31. */
static inline int iq4xs_scale(uint16_t scales_h, const uint8_t scales_l[QK_K / 64], int j)
{
    int low = (scales_l[j / 2] >> (4 * (j % 2))) & 0x0F;
    int high = (scales_h >> (2 * j)) & 3;
    return (low | high << 4) - 32;
}

#endif
