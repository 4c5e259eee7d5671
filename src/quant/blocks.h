/* Block layouts of the quantized types, byte for byte as GGUF stores them.
 *
 * fp16 fields are stored as raw uint16_t; convert with fp16_to_f32. The
 * static asserts pin the sizes: a layout change here would silently corrupt
 * every model file.
 */
#ifndef PLUMB_QUANT_BLOCKS_H
#define PLUMB_QUANT_BLOCKS_H

#include <stdint.h>

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

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

#endif
