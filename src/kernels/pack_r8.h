/* Row-interleaved layouts ("r8"): the blocks of 8 consecutive rows stored
 * together so that a 256-bit register holds 4 values of each of the 8
 * rows, and one integer multiply-add works on all 8 rows. Portable C:
 * used by the AVX2 kernels (and any later SIMD set with 8 x 32-bit lanes).
 *
 * In every layout a group holds, for each block column of the matrix, one
 * struct below; groups follow each other (group g starts at g * blocks per
 * row * sizeof(struct)). "lane r, byte i" means byte 4 * r + i of a 32-byte
 * vector.
 */
#ifndef PLUMB_KERNELS_PACK_R8_H
#define PLUMB_KERNELS_PACK_R8_H

#include <stddef.h>
#include <stdint.h>

/* Q4_0: vector c (0..3), lane r, byte i = row r's qs[4c + i]: its low
 * nibble is element 4c + i, its high nibble element 16 + 4c + i. */
struct blk_q4_0_r8 {
    uint16_t d[8];
    uint8_t qs[4 * 32];
};

/* F16, 8 elements at a time: w[8e + r] = row r's element e (one 128-bit
 * load holds an element of 8 rows). */
struct blk_f16_r8 {
    uint16_t w[8 * 8];
};

/* F32, 8 elements at a time: w[8e + r] = row r's element e (two 128-bit
 * loads hold an element of 8 rows). */
struct blk_f32_r8 {
    float w[8 * 8];
};

/* Q8_0: vector l (0..7), lane r, byte i = row r's element 4l + i. */
struct blk_q8_0_r8 {
    uint16_t d[8];
    int8_t qs[8 * 32];
};

/* Q4_K: scales vector k (0..2), lane r, byte i = row r's scales[4k + i]
 * (the packed 6-bit scales and mins); qs vector k (0..31), lane r, byte
 * i = row r's qs[4k + i] (low nibble: element 64(k/8) + 4(k%8) + i, high
 * nibble: 32 elements further). */
struct blk_q4_K_r8 {
    uint16_t d[8];
    uint16_t dmin[8];
    uint8_t scales[3 * 32];
    uint8_t qs[32 * 32];
};

/* Q5_K: as Q4_K, with qh vector k (0..7), lane r, byte i = row r's
 * qh[4k + i]: bit j is the fifth bit of element 4k + i of sub-block j. */
struct blk_q5_K_r8 {
    uint16_t d[8];
    uint16_t dmin[8];
    uint8_t scales[3 * 32];
    uint8_t qh[8 * 32];
    uint8_t qs[32 * 32];
};

/* Q6_K, codes e = q + 32 in 0..63, in 4 chunks of 64 elements stored one
 * after the other (one linear stream for the prefetchers). Chunk c:
 * scales[8p + r] = row r's scale of sub-block 4c + p (p = 0..3);
 * ql vector k (0..7), lane r, byte i: low nibble = low 4 bits of element
 * 64c + 4k + i, high nibble = of element 64c + 32 + 4k + i;
 * qh vector k (0..3), lane r, byte i: bits 0-1, 2-3, 4-5, 6-7 = top 2
 * bits of elements 64c + 4k + i, + 16, + 32, + 48. */
struct blk_q6_K_r8 {
    uint16_t d[8];
    struct {
        int8_t scales[4 * 8];
        uint8_t ql[8 * 32];
        uint8_t qh[4 * 32];
    } c[4];
};

/* IQ4_NL: the Q4_0 layout (blk_q4_0_r8, pack_r8_q4_0): the blocks are
 * alike (fp16 scale, 16 bytes of nibbles). */

/* MXFP4: the 8 rows' exponents, then the nibbles as Q4_0's. */
struct blk_mxfp4_r8 {
    uint8_t e[8];
    uint8_t qs[4 * 32];
};

/* Q4_1: as Q4_0 with the 8 rows' minimums. */
struct blk_q4_1_r8 {
    uint16_t d[8];
    uint16_t m[8];
    uint8_t qs[4 * 32];
};

/* Q5_0 / Q5_1: as Q4_0 / Q4_1, with lane r, byte i of qh holding the fifth
 * bits of row r's elements 4c + i at bit c and 16 + 4c + i at bit 4 + c
 * (c = 0..3): the bit of the codes in qs vector c, low or high nibble. */
struct blk_q5_0_r8 {
    uint16_t d[8];
    uint8_t qh[32];
    uint8_t qs[4 * 32];
};

struct blk_q5_1_r8 {
    uint16_t d[8];
    uint16_t m[8];
    uint8_t qh[32];
    uint8_t qs[4 * 32];
};

/* Q2_K: scales vector k (0..3), lane r, byte i = row r's scales[4k + i]
 * (sub-block 4k + i: scale low nibble, minimum high); qs vector v (0..15),
 * lane r, byte i = row r's qs[4v + i], whose bits 2s hold element
 * 128(v / 8) + 32s + 4(v % 8) + i. */
struct blk_q2_K_r8 {
    uint16_t d[8];
    uint16_t dmin[8];
    uint8_t scales[4 * 32];
    uint8_t qs[16 * 32];
};

/* Q3_K: scales vector k (0..2), lane r, byte i = row r's scales[4k + i]
 * (the packed 6-bit scales); hmask vector v (0..7) = row r's
 * hmask[4v + i]; qs as Q2_K's. */
struct blk_q3_K_r8 {
    uint16_t d[8];
    uint8_t scales[3 * 32];
    uint8_t hmask[8 * 32];
    uint8_t qs[16 * 32];
};

/* IQ4_XS: the 6-bit scale values v_j (the scale + 32) of row r regrouped
 * in its 6 bytes so that 8 rows unpack in a few vector operations:
 * sa[4r + i] = v_i (bits 0-5) | (v_{4+i} >> 4) << 6 (i = 0..3),
 * sb[2r + k] = (v_{4+2k} & 15) | (v_{5+2k} & 15) << 4 (k = 0, 1); qs vector v
 * (0..31), lane r, byte i = row r's qs[4v + i]: nibbles of elements
 * 32(v / 4) + 4(v % 4) + i (low) and 16 further (high). */
struct blk_iq4_xs_r8 {
    uint16_t d[8];
    uint8_t sa[32];
    uint8_t sb[16];
    uint8_t qs[32 * 32];
};

_Static_assert(sizeof(struct blk_f16_r8) == 8 * 16, "f16_r8 size");
_Static_assert(sizeof(struct blk_f32_r8) == 8 * 32, "f32_r8 size");
_Static_assert(sizeof(struct blk_mxfp4_r8) == 8 * 17, "mxfp4_r8 size");
_Static_assert(sizeof(struct blk_q4_1_r8) == 8 * 20, "q4_1_r8 size");
_Static_assert(sizeof(struct blk_q5_0_r8) == 8 * 22, "q5_0_r8 size");
_Static_assert(sizeof(struct blk_q5_1_r8) == 8 * 24, "q5_1_r8 size");
_Static_assert(sizeof(struct blk_q2_K_r8) == 8 * 84, "q2_K_r8 size");
_Static_assert(sizeof(struct blk_q3_K_r8) == 8 * 110, "q3_K_r8 size");
_Static_assert(sizeof(struct blk_iq4_xs_r8) == 8 * 136, "iq4_xs_r8 size");
_Static_assert(sizeof(struct blk_q4_0_r8) == 8 * 18, "q4_0_r8 size");
_Static_assert(sizeof(struct blk_q8_0_r8) == 8 * 34, "q8_0_r8 size");
_Static_assert(sizeof(struct blk_q4_K_r8) == 8 * 144, "q4_K_r8 size");
_Static_assert(sizeof(struct blk_q5_K_r8) == 8 * 176, "q5_K_r8 size");
_Static_assert(sizeof(struct blk_q6_K_r8) == 8 * 210, "q6_K_r8 size");

/* Bytes of an r8-packed matrix (the same as the file's). */
size_t pack_r8_size_f16(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_f32(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_q4_0(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_q8_0(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_q4_K(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_q5_K(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_q6_K(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_mxfp4(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_q4_1(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_q5_0(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_q5_1(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_q2_K(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_q3_K(int64_t n_in, int64_t n_rows);
size_t pack_r8_size_iq4_xs(int64_t n_in, int64_t n_rows);

/* Packs row groups [g0, g1) (rows 8 g0 .. 8 g1 - 1) of src. */
void pack_r8_f16(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_f32(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_q4_0(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_q8_0(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
/* As pack_r8_q8_0, with each code q stored as the unsigned byte q + 128
 * (for unsigned x signed byte products such as vpdpbusd; the kernel
 * subtracts 128 x the activations' sum). */
void pack_r8_q8_0_u8(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_q4_K(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_q5_K(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_q6_K(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_mxfp4(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_q4_1(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_q5_0(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_q5_1(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_q2_K(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_q3_K(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);
void pack_r8_iq4_xs(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1);

#endif
