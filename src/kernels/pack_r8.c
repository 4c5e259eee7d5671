/* Repacking weight rows into the r8 layouts of pack_r8.h. */
#include "kernels/pack_r8.h"

#include "quant/blocks.h"

#include <stddef.h>
#include <string.h>

#define SIZE_FN(t, QK, blk)                                                                                            \
    size_t pack_r8_size_##t(int64_t n_in, int64_t n_rows)                                                              \
    {                                                                                                                  \
        return (size_t)(n_rows / 8) * (size_t)(n_in / QK) * sizeof(struct blk);                                        \
    }

SIZE_FN(f16, 8, blk_f16_r8)
SIZE_FN(f32, 8, blk_f32_r8)
SIZE_FN(q4_0, QK4_0, blk_q4_0_r8)
SIZE_FN(q8_0, QK8_0, blk_q8_0_r8)
SIZE_FN(q4_K, QK_K, blk_q4_K_r8)
SIZE_FN(q5_K, QK_K, blk_q5_K_r8)
SIZE_FN(q6_K, QK_K, blk_q6_K_r8)
SIZE_FN(mxfp4, QK_MXFP4, blk_mxfp4_r8)
SIZE_FN(q4_1, QK4_1, blk_q4_1_r8)
SIZE_FN(q5_0, QK5_0, blk_q5_0_r8)
SIZE_FN(q5_1, QK5_1, blk_q5_1_r8)
SIZE_FN(q2_K, QK_K, blk_q2_K_r8)
SIZE_FN(q3_K, QK_K, blk_q3_K_r8)
SIZE_FN(iq4_xs, QK_K, blk_iq4_xs_r8)

_Static_assert(sizeof(struct block_iq4_nl) == sizeof(struct block_q4_0) &&
                   offsetof(struct block_iq4_nl, qs) == offsetof(struct block_q4_0, qs),
               "IQ4_NL packs as Q4_0");

/* Block b of row r (0..7) of group g. */
#define SRC_BLOCK(type, src, row_bytes, g, r, b)                                                                       \
    ((const struct type *)(const void *)((const uint8_t *)(src) + (size_t)(8 * (g) + (r)) * (row_bytes)) + (b))

/* vec[32k + 4r + i] = bytes[4k + i] of row r, for k < n_vec. */
static void interleave4(uint8_t *vec, const uint8_t *const rows[8], int n_vec)
{
    for (int k = 0; k < n_vec; k++)
        for (int r = 0; r < 8; r++)
            memcpy(vec + 32 * k + 4 * r, rows[r] + 4 * k, 4);
}

/* F16 and F32: element e of the 8 rows side by side, 8 elements a block. */
#define PACK_ELEMENTS(t, blk, elem_t)                                                                                  \
    void pack_r8_##t(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)           \
    {                                                                                                                  \
        const int64_t nb = n_in / 8;                                                                                   \
        for (int64_t g = g0; g < g1; g++) {                                                                            \
            struct blk *out = (struct blk *)dst + g * nb;                                                              \
            for (int r = 0; r < 8; r++) {                                                                              \
                const elem_t *row =                                                                                    \
                    (const elem_t *)(const void *)((const uint8_t *)src + (size_t)(8 * g + r) * src_row_bytes);        \
                for (int64_t b = 0; b < nb; b++)                                                                       \
                    for (int e = 0; e < 8; e++)                                                                        \
                        out[b].w[8 * e + r] = row[8 * b + e];                                                          \
            }                                                                                                          \
        }                                                                                                              \
    }

PACK_ELEMENTS(f16, blk_f16_r8, uint16_t)
PACK_ELEMENTS(f32, blk_f32_r8, float)

void pack_r8_q4_0(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    const int64_t nb = n_in / QK4_0;
    for (int64_t g = g0; g < g1; g++) {
        struct blk_q4_0_r8 *out = (struct blk_q4_0_r8 *)dst + g * nb;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *rows[8];
            for (int r = 0; r < 8; r++) {
                const struct block_q4_0 *x = SRC_BLOCK(block_q4_0, src, src_row_bytes, g, r, b);
                out[b].d[r] = x->d;
                rows[r] = x->qs;
            }
            interleave4(out[b].qs, rows, 4);
        }
    }
}

void pack_r8_q8_0(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    const int64_t nb = n_in / QK8_0;
    for (int64_t g = g0; g < g1; g++) {
        struct blk_q8_0_r8 *out = (struct blk_q8_0_r8 *)dst + g * nb;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *rows[8];
            for (int r = 0; r < 8; r++) {
                const struct block_q8_0 *x = SRC_BLOCK(block_q8_0, src, src_row_bytes, g, r, b);
                out[b].d[r] = x->d;
                rows[r] = (const uint8_t *)x->qs;
            }
            interleave4((uint8_t *)out[b].qs, rows, 8);
        }
    }
}

_Static_assert(offsetof(struct block_q4_K, dmin) == offsetof(struct block_q5_K, dmin) &&
                   offsetof(struct block_q4_K, scales) == offsetof(struct block_q5_K, scales),
               "Q4_K and Q5_K blocks start alike");

/* Q4_K and Q5_K blocks of 8 rows (Q5_K's fifth bits at qh_off, Q4_K has
 * none): the scales as halves and the byte arrays interleaved. */
static void pack_k_group(uint16_t d[8], uint16_t dmin[8], uint8_t *scales, uint8_t *qh, uint8_t *qs,
                         const uint8_t *const blk[8], size_t qh_off, size_t qs_off)
{
    const uint8_t *sc[8], *h[8], *q[8];
    for (int r = 0; r < 8; r++) {
        memcpy(&d[r], blk[r] + offsetof(struct block_q4_K, d), sizeof d[r]);
        memcpy(&dmin[r], blk[r] + offsetof(struct block_q4_K, dmin), sizeof dmin[r]);
        sc[r] = blk[r] + offsetof(struct block_q4_K, scales);
        h[r] = blk[r] + qh_off;
        q[r] = blk[r] + qs_off;
    }
    interleave4(scales, sc, 3);
    if (qh)
        interleave4(qh, h, 8);
    interleave4(qs, q, 32);
}

void pack_r8_q8_0_u8(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    pack_r8_q8_0(src, src_row_bytes, dst, n_in, g0, g1);
    const int64_t nb = n_in / QK8_0;
    for (int64_t g = g0; g < g1; g++) {
        struct blk_q8_0_r8 *out = (struct blk_q8_0_r8 *)dst + g * nb;
        for (int64_t b = 0; b < nb; b++)
            for (size_t i = 0; i < sizeof out[b].qs; i++)
                out[b].qs[i] = (int8_t)((uint8_t)out[b].qs[i] ^ 0x80u); /* q + 128 as a byte */
    }
}

void pack_r8_q4_K(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    const int64_t nb = n_in / QK_K;
    for (int64_t g = g0; g < g1; g++) {
        struct blk_q4_K_r8 *out = (struct blk_q4_K_r8 *)dst + g * nb;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk[8];
            for (int r = 0; r < 8; r++)
                blk[r] = (const uint8_t *)SRC_BLOCK(block_q4_K, src, src_row_bytes, g, r, b);
            pack_k_group(out[b].d, out[b].dmin, out[b].scales, NULL, out[b].qs, blk, 0, offsetof(struct block_q4_K, qs));
        }
    }
}

void pack_r8_q5_K(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    const int64_t nb = n_in / QK_K;
    for (int64_t g = g0; g < g1; g++) {
        struct blk_q5_K_r8 *out = (struct blk_q5_K_r8 *)dst + g * nb;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk[8];
            for (int r = 0; r < 8; r++)
                blk[r] = (const uint8_t *)SRC_BLOCK(block_q5_K, src, src_row_bytes, g, r, b);
            pack_k_group(out[b].d, out[b].dmin, out[b].scales, out[b].qh, out[b].qs, blk,
                         offsetof(struct block_q5_K, qh), offsetof(struct block_q5_K, qs));
        }
    }
}

void pack_r8_q6_K(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    const int64_t nb = n_in / QK_K;
    for (int64_t g = g0; g < g1; g++) {
        struct blk_q6_K_r8 *out = (struct blk_q6_K_r8 *)dst + g * nb;
        for (int64_t b = 0; b < nb; b++) {
            struct blk_q6_K_r8 *o = &out[b];
            for (int r = 0; r < 8; r++) {
                const struct block_q6_K *x = SRC_BLOCK(block_q6_K, src, src_row_bytes, g, r, b);
                int8_t q[QK_K];
                q6k_unpack(x->ql, x->qh, q);
                o->d[r] = x->d;
                for (int c = 0; c < 4; c++) {
                    for (int p = 0; p < 4; p++)
                        o->c[c].scales[8 * p + r] = x->scales[4 * c + p];
                    const int8_t *e = q + 64 * c; /* this chunk's codes, minus 32 */
                    for (int k = 0; k < 8; k++)
                        for (int i = 0; i < 4; i++) {
                            int lo = (e[4 * k + i] + 32) & 0x0F, hi = (e[32 + 4 * k + i] + 32) & 0x0F;
                            o->c[c].ql[32 * k + 4 * r + i] = (uint8_t)(lo | hi << 4);
                        }
                    for (int k = 0; k < 4; k++)
                        for (int i = 0; i < 4; i++) {
                            int v = 0;
                            for (int part = 0; part < 4; part++) /* elements 16 apart */
                                v |= (((e[16 * part + 4 * k + i] + 32) >> 4) & 3) << (2 * part);
                            o->c[c].qh[32 * k + 4 * r + i] = (uint8_t)v;
                        }
                }
            }
        }
    }
}

/* The row groups [g0, g1) of src, block by block: EACH(out, blocks of the
 * 8 rows) fills one packed block from the 8 rows' blocks. */
#define PACK_EACH(src_t, out_t, QK, EACH)                                                                              \
    const int64_t nb = n_in / (QK);                                                                                    \
    for (int64_t g = g0; g < g1; g++) {                                                                                \
        struct out_t *out = (struct out_t *)dst + g * nb;                                                              \
        for (int64_t b = 0; b < nb; b++) {                                                                             \
            const struct src_t *x[8];                                                                                  \
            for (int r = 0; r < 8; r++)                                                                                \
                x[r] = SRC_BLOCK(src_t, src, src_row_bytes, g, r, b);                                                  \
            EACH(&out[b], x);                                                                                          \
        }                                                                                                              \
    }

/* Interleaves field f (n_vec words of 4 bytes) of the 8 blocks x. */
#define INTERLEAVE_FIELD(o, x, f, n_vec)                                                                               \
    do {                                                                                                               \
        const uint8_t *rows_[8];                                                                                       \
        for (int r_ = 0; r_ < 8; r_++)                                                                                 \
            rows_[r_] = (const uint8_t *)x[r_]->f;                                                                     \
        interleave4((uint8_t *)(o)->f, rows_, n_vec);                                                                  \
    } while (0)

/* Q5_0/Q5_1's fifth bits, regrouped (blk_q5_0_r8): bit c of byte i gets
 * element 4c + i's, bit 4 + c element 16 + 4c + i's. */
static uint32_t q5_qh_regroup(const uint8_t qh[4])
{
    uint32_t v = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24, out = 0;
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < 4; c++) {
            out |= ((v >> (4 * c + i)) & 1u) << (8 * i + c);
            out |= ((v >> (16 + 4 * c + i)) & 1u) << (8 * i + 4 + c);
        }
    return out;
}

static void put_q5_qh(uint8_t *qh, int r, const uint8_t src[4])
{
    uint32_t v = q5_qh_regroup(src);
    for (int i = 0; i < 4; i++)
        qh[4 * r + i] = (uint8_t)(v >> (8 * i));
}

#define EACH_MXFP4(o, x)                                                                                               \
    do {                                                                                                               \
        for (int r = 0; r < 8; r++)                                                                                    \
            (o)->e[r] = x[r]->e;                                                                                       \
        INTERLEAVE_FIELD(o, x, qs, 4);                                                                                 \
    } while (0)

#define EACH_Q4_1(o, x)                                                                                                \
    do {                                                                                                               \
        for (int r = 0; r < 8; r++) {                                                                                  \
            (o)->d[r] = x[r]->d;                                                                                       \
            (o)->m[r] = x[r]->m;                                                                                       \
        }                                                                                                              \
        INTERLEAVE_FIELD(o, x, qs, 4);                                                                                 \
    } while (0)

#define EACH_Q5_0(o, x)                                                                                                \
    do {                                                                                                               \
        for (int r = 0; r < 8; r++) {                                                                                  \
            (o)->d[r] = x[r]->d;                                                                                       \
            put_q5_qh((o)->qh, r, x[r]->qh);                                                                           \
        }                                                                                                              \
        INTERLEAVE_FIELD(o, x, qs, 4);                                                                                 \
    } while (0)

#define EACH_Q5_1(o, x)                                                                                                \
    do {                                                                                                               \
        for (int r = 0; r < 8; r++) {                                                                                  \
            (o)->d[r] = x[r]->d;                                                                                       \
            (o)->m[r] = x[r]->m;                                                                                       \
            put_q5_qh((o)->qh, r, x[r]->qh);                                                                           \
        }                                                                                                              \
        INTERLEAVE_FIELD(o, x, qs, 4);                                                                                 \
    } while (0)

#define EACH_Q2_K(o, x)                                                                                                \
    do {                                                                                                               \
        for (int r = 0; r < 8; r++) {                                                                                  \
            (o)->d[r] = x[r]->d;                                                                                       \
            (o)->dmin[r] = x[r]->dmin;                                                                                 \
        }                                                                                                              \
        INTERLEAVE_FIELD(o, x, scales, 4);                                                                             \
        INTERLEAVE_FIELD(o, x, qs, 16);                                                                                \
    } while (0)

#define EACH_Q3_K(o, x)                                                                                                \
    do {                                                                                                               \
        for (int r = 0; r < 8; r++)                                                                                    \
            (o)->d[r] = x[r]->d;                                                                                       \
        INTERLEAVE_FIELD(o, x, scales, 3);                                                                             \
        INTERLEAVE_FIELD(o, x, hmask, 8);                                                                              \
        INTERLEAVE_FIELD(o, x, qs, 16);                                                                                \
    } while (0)

/* IQ4_XS's scales of row r in blk_iq4_xs_r8's form. */
static void put_iq4xs_scales(struct blk_iq4_xs_r8 *o, int r, const struct block_iq4_xs *x)
{
    int v[8];
    for (int j = 0; j < 8; j++)
        v[j] = iq4xs_scale(x->scales_h, x->scales_l, j) + 32;
    for (int i = 0; i < 4; i++)
        o->sa[4 * r + i] = (uint8_t)(v[i] | (v[4 + i] >> 4) << 6);
    for (int k = 0; k < 2; k++)
        o->sb[2 * r + k] = (uint8_t)((v[4 + 2 * k] & 15) | (v[5 + 2 * k] & 15) << 4);
}

#define EACH_IQ4_XS(o, x)                                                                                              \
    do {                                                                                                               \
        for (int r = 0; r < 8; r++) {                                                                                  \
            (o)->d[r] = x[r]->d;                                                                                       \
            put_iq4xs_scales(o, r, x[r]);                                                                              \
        }                                                                                                              \
        INTERLEAVE_FIELD(o, x, qs, 32);                                                                                \
    } while (0)

void pack_r8_mxfp4(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    PACK_EACH(block_mxfp4, blk_mxfp4_r8, QK_MXFP4, EACH_MXFP4)
}

void pack_r8_q4_1(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    PACK_EACH(block_q4_1, blk_q4_1_r8, QK4_1, EACH_Q4_1)
}

void pack_r8_q5_0(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    PACK_EACH(block_q5_0, blk_q5_0_r8, QK5_0, EACH_Q5_0)
}

void pack_r8_q5_1(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    PACK_EACH(block_q5_1, blk_q5_1_r8, QK5_1, EACH_Q5_1)
}

void pack_r8_q2_K(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    PACK_EACH(block_q2_K, blk_q2_K_r8, QK_K, EACH_Q2_K)
}

void pack_r8_q3_K(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    PACK_EACH(block_q3_K, blk_q3_K_r8, QK_K, EACH_Q3_K)
}

void pack_r8_iq4_xs(const void *src, size_t src_row_bytes, void *dst, int64_t n_in, int64_t g0, int64_t g1)
{
    PACK_EACH(block_iq4_xs, blk_iq4_xs_r8, QK_K, EACH_IQ4_XS)
}
