/* Pieces shared by the x86 matrix kernel sets (mm_avx2.c, mm_vnni.c):
 * the activation formats, the r8 block helpers of the K-quants, and the
 * loops that run tiles over row groups and activation rows. Static inline,
 * so each set compiles them with its own instruction-set flags; include
 * only from files built with at least -mavx2 -mfma -mf16c.
 *
 * The activation quantizers themselves are defined once, in mm_avx2.c,
 * and shared by every x86 set: a CPU with a later set has AVX2, and two
 * products with the same quantizer share one quantized copy of their
 * input (op_matmul_n).
 */
#ifndef PLUMB_KERNELS_MM_X86_H
#define PLUMB_KERNELS_MM_X86_H

#include "kernels/pack_r8.h"
#include "quant/blocks.h"

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Prefetch distance: a token's product streams every weight once from
 * memory, and the hardware prefetchers alone leave bandwidth unused.
 * (Defined outside: a tuning experiment.) */
#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 8192
#endif

/* Always inlined: as a function of its own, GCC 12 finds it "looping
 * const" (a prefetch changes no memory it can see) and deletes every call
 * to it, so no kernel prefetched at all. */
static inline __attribute__((always_inline)) void prefetch_block(const void *blk, size_t size)
{
    const char *p = (const char *)blk + PREFETCH_BYTES;
    for (size_t o = 0; o < size; o += 64)
        _mm_prefetch(p + o, _MM_HINT_T0);
}

static inline __m256i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

static inline __m256i load32(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

static inline __m256 load_d8(const uint16_t *d)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)d));
}

/* acc + float(s) * (d_w * d_a), row by row: the reference's per-block step
 * (fma(s, d, acc) and fma(d, s, acc) are the same operation). */
static inline __m256 block_fma(__m256i s, __m256 dw, float da, __m256 acc)
{
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(da)), acc);
}

/* ---- activations for Q4_0 and Q8_0: "q8x" ----
 * A row of n values: int8 qs[n], then float d[n / 32] (the scale, rounded
 * through fp16 exactly as quant_row_q8_0 stores it), then int32 s8[n / 32]
 * (8 x the sum of each block's qs: the offset of Q4_0's codes). The
 * integers are quant_row_q8_0's. */

struct q8x_view {
    const int8_t *qs;
    const float *d;
    const int32_t *s8; /* 8 x the sum of each block's codes */
};

static inline struct q8x_view q8x_at(const void *row, int64_t n)
{
    const int8_t *qs = row;
    const float *d = (const float *)(const void *)(qs + n);
    return (struct q8x_view){qs, d, (const int32_t *)(const void *)(d + n / QK8_0)};
}

/* ---- activations for Q4_1 and Q5_1: "q8x1" ----
 * A row of n values: int8 qs[n], then float d[n / 32] and float s[n / 32],
 * quant_row_q8_1's codes, scale and block sum (both as its fp16 values). */

struct q8x1_view {
    const int8_t *qs;
    const float *d;
    const float *s;
};

static inline struct q8x1_view q8x1_at(const void *row, int64_t n)
{
    const int8_t *qs = row;
    const float *d = (const float *)(const void *)(qs + n);
    return (struct q8x1_view){qs, d, d + n / QK8_1};
}

/* ---- weights whose codes index a table (IQ4_NL, IQ4_XS, MXFP4) ----
 * The table in both 128-bit halves, for vpshufb: byte k of the result is
 * entry (byte k of the index & 15). With add = 128 the entries become
 * unsigned (for u8 x s8 products; the kernel then subtracts 128 x the
 * activations' sum). */
static inline __m256i lut16(const int8_t *table, int add)
{
    uint8_t t[16];
    for (int i = 0; i < 16; i++)
        t[i] = (uint8_t)(table[i] + add);
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)t));
}

/* The nibbles of 32 bytes (high: the upper nibbles) looked up in lut. */
static inline __m256i lut_nibbles(__m256i lut, __m256i raw, const int high)
{
    const __m256i nib = _mm256_and_si256(high ? _mm256_srli_epi16(raw, 4) : raw, _mm256_set1_epi8(0x0F));
    return _mm256_shuffle_epi8(lut, nib);
}

/* The 8 scales 2^(e - 128) of an MXFP4 r8 block (mxfp4_scale, 8 lanes). */
static inline __m256 mxfp4_scale8(const uint8_t *e)
{
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)e));
    const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(v, _mm256_set1_epi32(1)), 23);
    const __m256i subnormal = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), v);
    const __m256i small = _mm256_cmpgt_epi32(_mm256_set1_epi32(2), v);
    return _mm256_castsi256_ps(_mm256_blendv_epi8(normal, subnormal, small));
}

/* Byte j (0..3) of each 32-bit lane as an (x, x) int16 pair, zero-extended. */
static inline __m256i byte_pair_same(__m256i v, int j)
{
    const __m128i idx = _mm_setr_epi8((char)j, -128, (char)j, -128, (char)(4 + j), -128, (char)(4 + j), -128,
                                      (char)(8 + j), -128, (char)(8 + j), -128, (char)(12 + j), -128, (char)(12 + j),
                                      -128);
    return _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(idx));
}

/* Two adjacent int16 of a q8Kx block's sums (bs16 or bs32 from index i)
 * broadcast as one 32-bit lane. */
static inline __m256i bsum_pair(const int16_t *bs, int i)
{
    int32_t p;
    memcpy(&p, bs + i, sizeof p);
    return _mm256_set1_epi32(p);
}

/* ---- Q3_K's packed 6-bit scales, 8 rows (blk_q3_K_r8.scales) ----
 * v[q], byte i of row r's lane = the stored value (0..63, the scale + 32)
 * of sub-block 4q + i. The 16-bit shifts move bits across bytes only
 * where the masks drop them. */
static inline void q3k_scales8(const uint8_t *scales, __m256i v[4])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    const __m256i A = load32(scales), B = load32(scales + 32), C = load32(scales + 64);
    v[0] = _mm256_or_si256(_mm256_and_si256(A, m4), _mm256_slli_epi16(_mm256_and_si256(C, m2), 4));
    v[1] = _mm256_or_si256(_mm256_and_si256(B, m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(C, 2), m2), 4));
    v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(A, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(C, 4), m2), 4));
    v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(B, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(C, 6), m2), 4));
}

/* IQ4_XS's scale values (the scale + 32, 0..63) of 8 rows
 * (blk_iq4_xs_r8.sa, .sb): v[q], byte i of row r's lane = sub-block 4q + i. */
static inline void iq4xs_scales8(const uint8_t *sa, const uint8_t *sb, __m256i v[2])
{
    const __m256i A = load32(sa);
    /* sb's 2 bytes per row to bytes (b0, b0, b1, b1) of its lane, then the
     * low nibble of the even bytes and the high one of the odd bytes */
    const __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)sb));
    const __m256i y = _mm256_shuffle_epi8(b, _mm256_setr_epi8(0, 0, 1, 1, 4, 4, 5, 5, 8, 8, 9, 9, 12, 12, 13, 13, 0, 0,
                                                              1, 1, 4, 4, 5, 5, 8, 8, 9, 9, 12, 12, 13, 13));
    const __m256i low = _mm256_or_si256(_mm256_and_si256(y, _mm256_set1_epi16(0x000F)),
                                        _mm256_and_si256(_mm256_srli_epi16(y, 4), _mm256_set1_epi16(0x0F00)));
    const __m256i high = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(A, 6), _mm256_set1_epi8(3)), 4);
    v[0] = _mm256_and_si256(A, _mm256_set1_epi8(63));
    v[1] = _mm256_or_si256(low, high);
}

/* The codes of vector v8 (0..7) of 32-element chunk (h, s) of a Q2_K or
 * Q3_K r8 block: bits 2s of qs vector 8h + v8, and for Q3_K (hmask given)
 * bit 4h + s of hmask vector v8 moved to bit 2 (u = q + 4, 0..7). */
static inline __m256i q2k_codes(const uint8_t *qs, const uint8_t *hmask, const int h, const int s, const int v8)
{
    const __m256i low = _mm256_and_si256(_mm256_srli_epi16(load32(qs + 32 * (8 * h + v8)), 2 * s), _mm256_set1_epi8(3));
    if (!hmask)
        return low;
    const int bit = 4 * h + s;
    const __m256i hm = load32(hmask + 32 * v8);
    const __m256i at2 = bit >= 2 ? _mm256_srli_epi16(hm, bit - 2) : _mm256_slli_epi16(hm, 2 - bit);
    return _mm256_or_si256(low, _mm256_and_si256(at2, _mm256_set1_epi8(4)));
}

/* ---- activations for the K-quants: "q8Kx" ----
 * Per 256 values: quant_row_q8_K's scale and codes, with the sums of
 * each 16 and of each 32 codes. */

struct q8Kx {
    float d;
    int16_t bs16[16];
    int16_t bs32[8];
    int32_t bs16w[16]; /* bs16 zero-extended: (bs16, 0) int16 pairs for madd */
    int32_t bs16o[16]; /* -32 bs16: where a Q6_K sub-block's sum starts (codes q + 32) */
    int8_t qs[QK_K];
};

/* Sub-blocks j and j + 1 as an int16 pair per lane. */
static inline __m256i q4k_pair_next(__m256i v, int j)
{
    const __m128i idx = _mm_setr_epi8((char)j, -128, (char)(j + 1), -128, (char)(4 + j), -128, (char)(5 + j), -128,
                                      (char)(8 + j), -128, (char)(9 + j), -128, (char)(12 + j), -128, (char)(13 + j),
                                      -128);
    return _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(idx));
}


/* The 6-bit scales of 8 rows (r8 scales vectors): byte i of row r's lane
 * of *lo is the scale of sub-block i, of *hi that of sub-block 4 + i. */
static inline void q4k_scales6(const uint8_t *scales, __m256i *lo, __m256i *hi)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m6 = _mm256_set1_epi8(63), m2 = _mm256_set1_epi8(3);
    const __m256i A = load32(scales), C = load32(scales + 64);
    *lo = _mm256_and_si256(A, m6);
    *hi = _mm256_or_si256(_mm256_and_si256(C, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(A, 6), m2), 4));
}

/* A block's minimums and scales in the forms q4k_finish uses. */
struct q4k_tail {
    __m256i mins[4]; /* sub-blocks (2k, 2k + 1) as int16 pairs per row */
    __m256 d, dmin;
};

/* (Q4_K and Q5_K: the scales and minimums of 8 rows, as stored in r8.) */
static inline struct q4k_tail q4k_tail_of(const uint16_t *d, const uint16_t *dmin, const uint8_t *scales)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m6 = _mm256_set1_epi8(63), m2 = _mm256_set1_epi8(3);
    const __m256i B = load32(scales + 32), C = load32(scales + 64);
    const __m256i mn_lo = _mm256_and_si256(B, m6);
    const __m256i mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(C, 4), m4),
                                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(B, 6), m2), 4));
    struct q4k_tail r;
    r.mins[0] = q4k_pair_next(mn_lo, 0);
    r.mins[1] = q4k_pair_next(mn_lo, 2);
    r.mins[2] = q4k_pair_next(mn_hi, 0);
    r.mins[3] = q4k_pair_next(mn_hi, 2);
    r.d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)d));
    r.dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)dmin));
    return r;
}

/* acc + d_a * (d * sumi - dmin * summ) for one block of 8 rows and one
 * activation row, in the reference's order. */
static inline __m256 q4k_finish(const struct q4k_tail *k, const struct q8Kx *q, __m256i sumi, __m256 acc)
{
    int32_t p[4];
    memcpy(p, q->bs32, sizeof p); /* (bs32[2k], bs32[2k + 1]) pairs */
    const __m256i summ = _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(k->mins[0], _mm256_set1_epi32(p[0])),
                                                           _mm256_madd_epi16(k->mins[1], _mm256_set1_epi32(p[1]))),
                                          _mm256_add_epi32(_mm256_madd_epi16(k->mins[2], _mm256_set1_epi32(p[2])),
                                                           _mm256_madd_epi16(k->mins[3], _mm256_set1_epi32(p[3]))));
    const __m256 v =
        _mm256_sub_ps(_mm256_mul_ps(k->d, _mm256_cvtepi32_ps(sumi)), _mm256_mul_ps(k->dmin, _mm256_cvtepi32_ps(summ)));
    return _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q->d), v));
}

/* The fifth bits of sub-block j (bit j of each qh byte) at bit 4. Within
 * a 16-bit lane the shifts move no bit across a byte boundary that the
 * mask keeps. */
static inline __m256i q5k_high(__m256i qh, const int j)
{
    const __m256i v = j < 4 ? _mm256_slli_epi16(qh, 4 - j) : j > 4 ? _mm256_srli_epi16(qh, j - 4) : qh;
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* ---- the gemm entry points: groups x tiles of activation rows ---- */

/* The activation row views the tiles take. */
static inline struct q8x_view q8x_view_of(const void *row, int64_t n_in)
{
    return q8x_at(row, n_in);
}

static inline const float *f32_view_of(const void *row, int64_t n_in)
{
    (void)n_in;
    return row;
}

static inline struct q8x1_view q8x1_view_of(const void *row, int64_t n_in)
{
    return q8x1_at(row, n_in);
}

static inline const struct q8Kx *q8Kx_view_of(const void *row, int64_t n_in)
{
    (void)n_in;
    return row;
}

#define CALL_TILE(fn, n) fn(wg, nb, av, n, yg, y_stride)
#define CALL_TILE2(fn, n) fn(wg, wg + nb, nb, av, n, yg, y_stride)

/* One tile call for each width 1..TILE (a constant nt lets the compiler
 * keep the tile's vectors in registers; widths above TILE are never
 * compiled). */
#define TILE_SWITCH(call, fn, TILE)                                                                                    \
    switch (nt) {                                                                                                      \
    case 8: if (TILE >= 8) call(fn, 8); break;                                                                         \
    case 7: if (TILE >= 7) call(fn, 7); break;                                                                         \
    case 6: if (TILE >= 6) call(fn, 6); break;                                                                         \
    case 5: if (TILE >= 5) call(fn, 5); break;                                                                         \
    case 4: if (TILE >= 4) call(fn, 4); break;                                                                         \
    case 3: if (TILE >= 3) call(fn, 3); break;                                                                         \
    case 2: if (TILE >= 2) call(fn, 2); break;                                                                         \
    default: call(fn, 1); break;                                                                                       \
    }

/* Groups two at a time through tile2 (PAIR 1), or none (PAIR 0). */
#define PAIRS_0(blk, tile2, TILE)
#define PAIRS_1(blk, tile2, TILE)                                                                                            \
    for (; g + 1 < g1; g += 2) {                                                                                       \
        const struct blk *wg = (const struct blk *)w + g * nb;                                                         \
        float *yg = y + (size_t)t0 * y_stride + (size_t)(8 * g);                                                       \
        TILE_SWITCH(CALL_TILE2, tile2, TILE)                                                                                    \
    }

/* gemm_NAME: row groups [g0, g1) x every activation row, TILE at a time;
 * with PAIR 1, two groups at a time through tile2. (PAIR may be a macro:
 * GEMM expands it before GEMM_ pastes it.) */
#define GEMM(name, blk, tile, tile2, PAIR, QK, TILE, view_t, view_of)                                                  \
    GEMM_(name, blk, tile, tile2, PAIR, QK, TILE, view_t, view_of)
#define GEMM_(name, blk, tile, tile2, PAIR, QK, TILE, view_t, view_of)                                                 \
    static void gemm_##name(const void *w, size_t w_row_bytes, int64_t n_in, int64_t g0, int64_t g1, const void *a,  \
                            size_t a_stride, int n_tok, float *y, size_t y_stride)                                     \
    {                                                                                                                  \
        (void)w_row_bytes;                                                                                             \
        const int64_t nb = n_in / QK;                                                                                  \
        for (int t0 = 0; t0 < n_tok; t0 += TILE) {                                                                     \
            int nt = n_tok - t0 < TILE ? n_tok - t0 : TILE;                                                            \
            view_t av[TILE];                                                                                           \
            for (int t = 0; t < nt; t++)                                                                               \
                av[t] = view_of((const uint8_t *)a + (size_t)(t0 + t) * a_stride, n_in);                               \
            int64_t g = g0;                                                                                            \
            PAIRS_##PAIR(blk, tile2, TILE)                                                                                   \
            for (; g < g1; g++) {                                                                                      \
                const struct blk *wg = (const struct blk *)w + g * nb;                                                 \
                float *yg = y + (size_t)t0 * y_stride + (size_t)(8 * g);                                               \
                TILE_SWITCH(CALL_TILE, tile, TILE)                                                                            \
            }                                                                                                          \
        }                                                                                                              \
    }

/* The x86 activation quantizers (mm_avx2.c). */
size_t kern_act_size_q8x(int64_t n);
void kern_act_quantize_q8x_avx2(const float *x, void *out, int64_t n);
size_t kern_act_size_q8x1(int64_t n);
void kern_act_quantize_q8x1_avx2(const float *x, void *out, int64_t n);
size_t kern_act_size_q8Kx(int64_t n);
void kern_act_quantize_q8Kx_avx2(const float *x, void *out, int64_t n);

#endif
