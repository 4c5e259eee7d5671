/* Tensor types: float conversions, block layouts (hand-built blocks and
 * blocks written by llama.cpp), quantization error bounds, dot kernels. */
#include "testutil.h"

#include "base/fp16.h"
#include "gguf/gguf.h"
#include "kernels/kernels.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/ftype.h"
#include "quant/types.h"
#include "plumb/quantize.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- fp16 / bf16 ---- */

static void test_fp16_known_values(void **state)
{
    (void)state;
    struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},       {-0.0f, 0x8000},         {1.0f, 0x3C00},       {-2.0f, 0xC000},
        {0.5f, 0x3800},       {65504.0f, 0x7BFF},      {6.1035156e-05f, 0x0400}, {5.9604645e-08f, 0x0001},
        {0.099975586f, 0x2E66}, {INFINITY, 0x7C00},    {-INFINITY, 0xFC00},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(f32_to_fp16(cases[i].f), cases[i].h);
        assert_true(fp16_to_f32(cases[i].h) == cases[i].f);
    }
    /* rounding: overflow, ties to even, subnormal ties, underflow */
    assert_int_equal(f32_to_fp16(65520.0f), 0x7C00);
    assert_int_equal(f32_to_fp16(65519.0f), 0x7BFF);
    assert_int_equal(f32_to_fp16(1.0f + 0x1p-11f), 0x3C00);        /* tie -> even */
    assert_int_equal(f32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3C02);    /* tie -> even (up) */
    assert_int_equal(f32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);
    assert_int_equal(f32_to_fp16(0x1p-25f), 0x0000);               /* tie -> even zero */
    assert_int_equal(f32_to_fp16(0x1p-25f * 1.0001f), 0x0001);
    assert_int_equal(f32_to_fp16(3 * 0x1p-25f), 0x0002);           /* 1.5 units -> 2 */
    assert_int_equal(f32_to_fp16(1e-10f), 0x0000);
    assert_true(isnan(fp16_to_f32(f32_to_fp16(NAN))));
}

static void test_fp16_round_trip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = fp16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true(isnan(fp16_to_f32(f32_to_fp16(f))));
            continue;
        }
        assert_int_equal(f32_to_fp16(f), h);
    }
}

static void test_bf16(void **state)
{
    (void)state;
    assert_int_equal(f32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(f32_to_bf16(-2.0f), 0xC000);
    assert_true(bf16_to_f32(0x3F80) == 1.0f);
    assert_int_equal(f32_to_bf16(1.0f + 0x1p-8f), 0x3F80);           /* tie -> even */
    assert_int_equal(f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3F82);       /* tie -> even (up) */
    assert_true(isnan(bf16_to_f32(f32_to_bf16(NAN))));
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = bf16_to_f32((uint16_t)h);
        if (!isnan(f))
            assert_int_equal(f32_to_bf16(f), h);
    }
}

/* ---- type table ---- */

static void test_type_table(void **state)
{
    (void)state;
    struct {
        enum pb_type t;
        int64_t block;
        size_t size;
    } expect[] = {
        {PB_TYPE_F32, 1, 4},      {PB_TYPE_F16, 1, 2},      {PB_TYPE_BF16, 1, 2},     {PB_TYPE_Q4_0, 32, 18},
        {PB_TYPE_Q4_1, 32, 20},   {PB_TYPE_Q5_0, 32, 22},   {PB_TYPE_Q5_1, 32, 24},   {PB_TYPE_Q8_0, 32, 34},
        {PB_TYPE_Q8_1, 32, 36},   {PB_TYPE_Q2_K, 256, 84},  {PB_TYPE_Q3_K, 256, 110}, {PB_TYPE_Q4_K, 256, 144},
        {PB_TYPE_Q5_K, 256, 176}, {PB_TYPE_Q6_K, 256, 210}, {PB_TYPE_Q8_K, 256, 292}, {PB_TYPE_IQ4_NL, 32, 18},
        {PB_TYPE_IQ4_XS, 256, 136},
    };
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        const struct pb_type_traits *tr = pb_type_get(expect[i].t);
        assert_non_null(tr);
        assert_int_equal(tr->block, expect[i].block);
        assert_int_equal(tr->size, expect[i].size);
    }
    /* ids the format retired, and ids past the end, are unknown */
    assert_null(pb_type_get(4));
    assert_null(pb_type_get(5));
    assert_null(pb_type_get(31));
    assert_null(pb_type_get(PB_TYPE_COUNT));
    assert_null(pb_type_get(0xFFFFFFFFu));
    enum pb_type t;
    assert_true(pb_type_from_name("q4_k", &t));
    assert_int_equal(t, PB_TYPE_Q4_K);
    assert_false(pb_type_from_name("Q4_K_M", &t));
    /* the types the issue lists all read; the reference quantizers exist */
    enum pb_type readable[] = {PB_TYPE_F32,  PB_TYPE_F16,  PB_TYPE_BF16, PB_TYPE_Q8_0, PB_TYPE_Q4_0, PB_TYPE_Q4_1,
                               PB_TYPE_Q5_0, PB_TYPE_Q5_1, PB_TYPE_Q4_K, PB_TYPE_Q5_K, PB_TYPE_Q6_K, PB_TYPE_Q8_K,
                               PB_TYPE_MXFP4, PB_TYPE_Q2_K, PB_TYPE_Q3_K, PB_TYPE_IQ4_NL, PB_TYPE_IQ4_XS};
    for (size_t i = 0; i < sizeof readable / sizeof readable[0]; i++) {
        assert_non_null(pb_type_get(readable[i])->to_float);
        assert_non_null(pb_type_get(readable[i])->from_float);
    }
}

/* ---- hand-built blocks: the layout stated element by element ---- */

static void test_known_q4_0_q4_1_q8_0(void **state)
{
    (void)state;
    float out[32];
    struct block_q4_0 b4 = {.d = f32_to_fp16(0.5f)};
    for (int j = 0; j < 16; j++)
        b4.qs[j] = (uint8_t)(j | (15 - j) << 4);
    dequant_row_q4_0(&b4, out, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == (float)(j - 8) * 0.5f);
        assert_true(out[j + 16] == (float)(15 - j - 8) * 0.5f);
    }

    struct block_q4_1 b41 = {.d = f32_to_fp16(0.25f), .m = f32_to_fp16(-1.0f)};
    for (int j = 0; j < 16; j++)
        b41.qs[j] = (uint8_t)(j | (15 - j) << 4);
    dequant_row_q4_1(&b41, out, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == (float)j * 0.25f - 1.0f);
        assert_true(out[j + 16] == (float)(15 - j) * 0.25f - 1.0f);
    }

    struct block_q8_0 b8 = {.d = f32_to_fp16(0.125f)};
    for (int j = 0; j < 32; j++)
        b8.qs[j] = (int8_t)(j * 8 - 127);
    dequant_row_q8_0(&b8, out, 32);
    for (int j = 0; j < 32; j++)
        assert_true(out[j] == (float)(j * 8 - 127) * 0.125f);
}

static void test_known_q5(void **state)
{
    (void)state;
    /* element j has 5-bit value (j * 7) % 32: low 4 bits in the nibbles,
     * bit 4 in bit j of the little-endian qh word */
    struct block_q5_0 b = {.d = f32_to_fp16(2.0f)};
    struct block_q5_1 b1 = {.d = f32_to_fp16(0.5f), .m = f32_to_fp16(3.0f)};
    uint32_t qh = 0;
    for (int j = 0; j < 32; j++) {
        int q = (j * 7) % 32;
        int byte = j % 16, high = j / 16;
        b.qs[byte] |= (uint8_t)((q & 15) << (4 * high));
        qh |= (uint32_t)(q >> 4) << j;
    }
    for (int k = 0; k < 4; k++)
        b.qh[k] = b1.qh[k] = (uint8_t)(qh >> (8 * k));
    memcpy(b1.qs, b.qs, sizeof b.qs);
    float out[32], out1[32];
    dequant_row_q5_0(&b, out, 32);
    dequant_row_q5_1(&b1, out1, 32);
    for (int j = 0; j < 32; j++) {
        int q = (j * 7) % 32;
        assert_true(out[j] == (float)(q - 16) * 2.0f);
        assert_true(out1[j] == (float)q * 0.5f + 3.0f);
    }
}

/* Packs 6-bit scale/min of sub-block j as GGUF defines it. */
static void put_scale_min(uint8_t *s, int j, int sc, int m)
{
    if (j < 4) {
        s[j] = (uint8_t)((s[j] & 0xC0) | sc);
        s[j + 4] = (uint8_t)((s[j + 4] & 0xC0) | m);
    } else {
        s[j + 4] = (uint8_t)((sc & 15) | (m & 15) << 4);
        s[j - 4] = (uint8_t)((s[j - 4] & 0x3F) | (sc >> 4) << 6);
        s[j] = (uint8_t)((s[j] & 0x3F) | (m >> 4) << 6);
    }
}

static void test_known_q4_K_q5_K(void **state)
{
    (void)state;
    struct block_q4_K b = {.d = f32_to_fp16(0.5f), .dmin = f32_to_fp16(0.25f)};
    struct block_q5_K b5 = {.d = f32_to_fp16(0.5f), .dmin = f32_to_fp16(0.25f)};
    int sc[8] = {1, 5, 17, 63, 33, 2, 48, 9}, mn[8] = {0, 62, 3, 40, 21, 63, 7, 16};
    for (int j = 0; j < 8; j++) {
        put_scale_min(b.scales, j, sc[j], mn[j]);
        put_scale_min(b5.scales, j, sc[j], mn[j]);
    }
    /* element i: chunk c = i / 64 holds sub-blocks 2c (low nibbles of
     * qs[32c .. 32c+31]) and 2c+1 (high nibbles); Q5_K's fifth bit of
     * sub-block s is bit s of qh[i % 32] */
    for (int i = 0; i < 256; i++) {
        int q = (i * 11 + 3) % 32, c = i / 64, hi = (i % 64) / 32, l = i % 32;
        b.qs[32 * c + l] |= (uint8_t)((q & 15) << (4 * hi));
        b5.qs[32 * c + l] |= (uint8_t)((q & 15) << (4 * hi));
        b5.qh[l] |= (uint8_t)((q >> 4) << (2 * c + hi));
    }
    float out[256], out5[256];
    dequant_row_q4_K(&b, out, 256);
    dequant_row_q5_K(&b5, out5, 256);
    for (int i = 0; i < 256; i++) {
        int q = (i * 11 + 3) % 32, j = i / 32;
        assert_float_equal(out[i], 0.5f * (float)sc[j] * (float)(q & 15) - 0.25f * (float)mn[j], 1e-6);
        assert_float_equal(out5[i], 0.5f * (float)sc[j] * (float)q - 0.25f * (float)mn[j], 1e-6);
    }
}

static void test_known_q6_K(void **state)
{
    (void)state;
    struct block_q6_K b = {.d = f32_to_fp16(0.125f)};
    for (int s = 0; s < 16; s++)
        b.scales[s] = (int8_t)(s * 9 - 70);
    /* element i: half h = i / 128, group g = (i % 128) / 32, l = i % 32;
     * low 4 bits in ql[64h + 32(g % 2) + l] (low nibble for g < 2),
     * high 2 bits at bit 2g of qh[32h + l] */
    for (int i = 0; i < 256; i++) {
        int q = (i * 13 + 5) % 64, h = i / 128, g = (i % 128) / 32, l = i % 32;
        b.ql[64 * h + 32 * (g % 2) + l] |= (uint8_t)((q & 15) << (4 * (g / 2)));
        b.qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * g));
    }
    float out[256];
    dequant_row_q6_K(&b, out, 256);
    for (int i = 0; i < 256; i++) {
        int q = (i * 13 + 5) % 64;
        assert_float_equal(out[i], 0.125f * (float)(i / 16 * 9 - 70) * (float)(q - 32), 1e-5);
    }
}

/* MXFP4: each code's E2M1 value (times 2) times 2^(e - 128), computed
 * here in double with ldexp, for exponents from the subnormal ones to the
 * largest. */
static void test_known_mxfp4(void **state)
{
    (void)state;
    static const double e2m1[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};
    const uint8_t exps[] = {0, 1, 2, 100, 127, 128, 130, 254, 255};
    for (size_t k = 0; k < sizeof exps / sizeof exps[0]; k++) {
        struct block_mxfp4 b = {.e = exps[k]};
        for (int j = 0; j < 16; j++)
            b.qs[j] = (uint8_t)(j | (15 - j) << 4);
        float out[32];
        dequant_row_mxfp4(&b, out, 32);
        for (int j = 0; j < 16; j++) {
            /* the E8M0 exponent e means 2^(e - 127) for the E2M1 values;
             * the largest exponents overflow float (as in llama.cpp) */
            assert_true(out[j] == (float)ldexp(e2m1[j], exps[k] - 127));
            assert_true(out[j + 16] == (float)ldexp(e2m1[15 - j], exps[k] - 127));
        }
    }
}

/* Q2_K and Q3_K: element e = 128h + 32s + l (half, shift, l < 32) has its
 * low 2 bits at bits 2s of qs[32h + l] and lies in sub-block e / 16; Q3_K's
 * third bit is bit 4h + s of hmask[l] (clear: minus 4), its 6-bit scales
 * split between a nibble of scales[j % 8] and 2 bits of scales[8 + j % 4]. */
static void test_known_q2_K_q3_K(void **state)
{
    (void)state;
    struct block_q2_K b2 = {.d = f32_to_fp16(0.5f), .dmin = f32_to_fp16(0.25f)};
    struct block_q3_K b3 = {.d = f32_to_fp16(0.125f)};
    int sc2[16], mn2[16], v3[16];
    for (int j = 0; j < 16; j++) {
        sc2[j] = (j * 7 + 2) % 16;
        mn2[j] = (j * 5 + 1) % 16;
        v3[j] = (j * 29 + 11) % 64; /* stored 6-bit value; the scale is v - 32 */
        b2.scales[j] = (uint8_t)(sc2[j] | mn2[j] << 4);
        b3.scales[j % 8] |= (uint8_t)((v3[j] & 15) << (4 * (j / 8)));
        b3.scales[8 + j % 4] |= (uint8_t)((v3[j] >> 4) << (2 * (j / 4)));
    }
    for (int e = 0; e < 256; e++) {
        int h = e / 128, sh = (e % 128) / 32, l = e % 32;
        int c2 = (e * 7 + 3) % 4, q3 = (e * 5 + 1) % 8 - 4, u3 = q3 + 4;
        b2.qs[32 * h + l] |= (uint8_t)(c2 << (2 * sh));
        b3.qs[32 * h + l] |= (uint8_t)((u3 & 3) << (2 * sh));
        b3.hmask[l] |= (uint8_t)((u3 >> 2) << (4 * h + sh));
    }
    float out2[256], out3[256];
    dequant_row_q2_K(&b2, out2, 256);
    dequant_row_q3_K(&b3, out3, 256);
    for (int e = 0; e < 256; e++) {
        int j = e / 16, c2 = (e * 7 + 3) % 4, q3 = (e * 5 + 1) % 8 - 4;
        assert_float_equal(out2[e], 0.5 * sc2[j] * c2 - 0.25 * mn2[j], 1e-6);
        assert_float_equal(out3[e], 0.125 * (v3[j] - 32) * q3, 1e-6);
    }
}

/* IQ4_NL and IQ4_XS: codes index the 16-value grid; IQ4_XS's sub-block j
 * has the 6-bit scale (nibble j % 2 of scales_l[j / 2], bits 2j of
 * scales_h) minus 32, and its codes in qs[16j ..] as Q4_0's nibbles. */
static void test_known_iq4(void **state)
{
    (void)state;
    static const int grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    struct block_iq4_nl bn = {.d = f32_to_fp16(0.0625f)};
    for (int j = 0; j < 16; j++)
        bn.qs[j] = (uint8_t)(j | (15 - j) << 4);
    float out[256];
    dequant_row_iq4_nl(&bn, out, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == 0.0625f * (float)grid[j]);
        assert_true(out[j + 16] == 0.0625f * (float)grid[15 - j]);
    }
    struct block_iq4_xs bx = {.d = f32_to_fp16(0.5f)};
    int ls[8];
    for (int j = 0; j < 8; j++) {
        ls[j] = (j * 23 + 5) % 64;
        bx.scales_l[j / 2] |= (uint8_t)((ls[j] & 15) << (4 * (j % 2)));
        bx.scales_h |= (uint16_t)((ls[j] >> 4) << (2 * j));
    }
    for (int e = 0; e < 256; e++) {
        int j = e / 32, k = e % 32, c = (e * 11 + 7) % 16;
        bx.qs[16 * j + k % 16] |= (uint8_t)(c << (4 * (k / 16)));
    }
    dequant_row_iq4_xs(&bx, out, 256);
    for (int e = 0; e < 256; e++) {
        int c = (e * 11 + 7) % 16;
        assert_float_equal(out[e], 0.5 * (ls[e / 32] - 32) * grid[c], 1e-4);
    }
}

/* ---- quantization round trips ---- */

static double rel_rmse(const float *x, const float *y, size_t n)
{
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        s += (double)x[i] * x[i];
    }
    return sqrt(e / s);
}

static double round_trip_error(enum pb_type t, const float *x, size_t n)
{
    const struct pb_type_traits *tr = pb_type_get(t);
    void *q = malloc(pb_row_size(t, (int64_t)n));
    float *y = malloc(n * sizeof *y);
    assert_non_null(q);
    assert_non_null(y);
    tr->from_float(x, q, (int64_t)n);
    tr->to_float(q, y, (int64_t)n);
    double e = rel_rmse(x, y, n);
    free(q);
    free(y);
    return e;
}

static void test_round_trip_error_bounds(void **state)
{
    (void)state;
    const size_t n = 256 * 64;
    float *x = malloc(n * sizeof *x);
    test_randn(x, n, 7, 0.02f);
    /* bounds: a little above what these quantizers reach on Gaussian data
     * (the theoretical step / sqrt(12) relative to the deviation) */
    struct {
        enum pb_type t;
        double max_err;
    } bounds[] = {
        {PB_TYPE_F16, 5e-4},  {PB_TYPE_BF16, 3e-3}, {PB_TYPE_Q8_0, 0.008}, {PB_TYPE_Q8_K, 0.008},
        {PB_TYPE_Q6_K, 0.03}, {PB_TYPE_Q5_0, 0.07}, {PB_TYPE_Q5_1, 0.06},  {PB_TYPE_Q5_K, 0.045},
        {PB_TYPE_Q4_0, 0.14}, {PB_TYPE_Q4_1, 0.12}, {PB_TYPE_Q4_K, 0.10}, {PB_TYPE_MXFP4, 0.20},
        {PB_TYPE_IQ4_NL, 0.12}, {PB_TYPE_IQ4_XS, 0.12}, {PB_TYPE_Q3_K, 0.25}, {PB_TYPE_Q2_K, 0.40},
    };
    double err[PB_TYPE_COUNT] = {0};
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        err[bounds[i].t] = round_trip_error(bounds[i].t, x, n);
        print_message("  %-5s relative RMS error %.5f (bound %.4f)\n", pb_type_name(bounds[i].t), err[bounds[i].t],
                      bounds[i].max_err);
        assert_true(err[bounds[i].t] < bounds[i].max_err);
        assert_true(err[bounds[i].t] > 0 || bounds[i].t == PB_TYPE_F32);
    }
    /* more bits, less error; the K-quants' fitted scales beat the plain
     * 32-element types of similar size */
    assert_true(err[PB_TYPE_Q6_K] < err[PB_TYPE_Q5_K]);
    assert_true(err[PB_TYPE_Q5_K] < err[PB_TYPE_Q4_K]);
    assert_true(err[PB_TYPE_Q4_K] < err[PB_TYPE_Q4_0]);
    assert_true(err[PB_TYPE_Q5_K] < err[PB_TYPE_Q5_0]);
    assert_true(err[PB_TYPE_Q4_K] < err[PB_TYPE_Q3_K]);
    assert_true(err[PB_TYPE_Q3_K] < err[PB_TYPE_Q2_K]);
    assert_true(err[PB_TYPE_IQ4_NL] < err[PB_TYPE_Q4_0]); /* the grid fits Gaussian values better */
    assert_true(err[PB_TYPE_IQ4_XS] < err[PB_TYPE_Q3_K]);
    free(x);
}

static void test_q8_0_error_per_element(void **state)
{
    (void)state;
    float x[32 * 8], y[32 * 8];
    struct block_q8_0 q[8];
    test_randn(x, 256, 11, 1.0f);
    x[5] = 40.0f; /* an outlier sets its block's scale */
    quant_row_q8_0(x, q, 256);
    dequant_row_q8_0(q, y, 256);
    for (int b = 0; b < 8; b++) {
        float d = fp16_to_f32(q[b].d);
        for (int j = 0; j < 32; j++)
            assert_true(fabsf(x[32 * b + j] - y[32 * b + j]) <= d * 0.5f + fabsf(x[32 * b + j]) * 1e-3f);
    }
}

static void test_quant_edge_inputs(void **state)
{
    (void)state;
    enum pb_type types[] = {PB_TYPE_Q4_0, PB_TYPE_Q4_1, PB_TYPE_Q5_0, PB_TYPE_Q5_1, PB_TYPE_Q8_0, PB_TYPE_Q8_1,
                            PB_TYPE_Q4_K, PB_TYPE_Q5_K, PB_TYPE_Q6_K, PB_TYPE_Q8_K, PB_TYPE_MXFP4,
                            PB_TYPE_Q2_K, PB_TYPE_Q3_K, PB_TYPE_IQ4_NL, PB_TYPE_IQ4_XS};
    float zeros[256] = {0}, consts[256], wild[256], y[256];
    uint8_t buf[512];
    for (int i = 0; i < 256; i++) {
        consts[i] = 0.75f;
        wild[i] = i % 7 == 0 ? NAN : i % 11 == 0 ? INFINITY : i % 13 == 0 ? -1e30f : (float)i;
    }
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const struct pb_type_traits *tr = pb_type_get(types[k]);
        tr->from_float(zeros, buf, 256);
        tr->to_float(buf, y, 256);
        for (int i = 0; i < 256; i++)
            assert_true(y[i] == 0.0f);
        tr->from_float(consts, buf, 256);
        tr->to_float(buf, y, 256);
        for (int i = 0; i < 256; i++)
            assert_float_equal(y[i], 0.75f, 0.75f * 0.07f);
        tr->from_float(wild, buf, 256); /* must not crash or hit undefined behaviour */
        tr->to_float(buf, y, 256);
    }
}

/* ---- blocks written by llama.cpp ----
 * tiny-llama-q8_0 and -q4_0 hold the same F32 weights quantized by
 * llama-quantize; the Q4_0 file's token_embd is Q6_K. Dequantizing both
 * must agree within the coarser type's error. */
static void test_llamacpp_blocks(void **state)
{
    (void)state;
    REQUIRE_TESTDATA(p8, "tiny-llama-q8_0.gguf");
    REQUIRE_TESTDATA(p4, "tiny-llama-q4_0.gguf");
    struct gguf_file *f8, *f4;
    pb_err err;
    assert_int_equal(gguf_open(p8, &f8, &err), 0);
    assert_int_equal(gguf_open(p4, &f4, &err), 0);
    const char *names[] = {"blk.0.attn_q.weight", "blk.3.ffn_down.weight", "token_embd.weight"};
    enum pb_type expect4[] = {PB_TYPE_Q4_0, PB_TYPE_Q4_0, PB_TYPE_Q6_K};
    double bound[] = {0.14, 0.14, 0.03};
    for (int k = 0; k < 3; k++) {
        const struct gguf_tensor *a = gguf_find_tensor(f8, names[k]), *b = gguf_find_tensor(f4, names[k]);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(a->type, PB_TYPE_Q8_0);
        assert_int_equal(b->type, expect4[k]);
        size_t n = (size_t)gguf_tensor_nelements(a);
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        pb_type_get(a->type)->to_float(a->data, x, (int64_t)n);
        pb_type_get(b->type)->to_float(b->data, y, (int64_t)n);
        double e = rel_rmse(x, y, n);
        print_message("  %s: %s vs Q8_0 relative RMS difference %.4f\n", names[k], pb_type_name(b->type), e);
        assert_true(e < bound[k]);
        assert_true(e > 1e-4); /* they do differ: the test compares real data */
        /* the weights were normal(0, 0.02): the Q8_0 values say so too */
        double s = 0;
        for (size_t i = 0; i < n; i++)
            s += (double)x[i] * x[i];
        assert_float_equal(sqrt(s / (double)n), 0.02, 0.001);
        free(x);
        free(y);
    }
    gguf_close(f8);
    gguf_close(f4);
}

/* The reference files of the newer quantization types (llama-quantize's
 * output): every tensor of those types dequantizes to values distributed
 * as the weights were drawn, normal(0, 0.02) (README); where the same
 * weights exist as Q8_0 (same shape, seed and tensor), the two
 * dequantizations agree within the coarser type's error. */
static void test_llamacpp_new_types(void **state)
{
    (void)state;
    static const struct {
        const char *file, *twin; /* twin: the Q8_0 file of the same weights, or NULL */
        enum pb_type type;
        double bound; /* relative RMS difference from the Q8_0 twin */
    } cases[] = {
        {"tiny-gpt-oss-mxfp4_moe.gguf", NULL, PB_TYPE_MXFP4, 0},
        {"tiny-gemma3-q2_k.gguf", "tiny-gemma3-q8_0.gguf", PB_TYPE_Q2_K, 0.35},
        {"tiny-gemma3-q2_k.gguf", "tiny-gemma3-q8_0.gguf", PB_TYPE_Q3_K, 0.19},
        {"tiny-gemma3-iq4_xs.gguf", "tiny-gemma3-q8_0.gguf", PB_TYPE_IQ4_XS, 0.10},
        {"tiny-qwen3moe-q3_k_m.gguf", "tiny-qwen3moe-q8_0.gguf", PB_TYPE_Q3_K, 0.19},
        {"tiny-qwen3moe-q3_k_m.gguf", "tiny-qwen3moe-q8_0.gguf", PB_TYPE_Q5_0, 0.06},
        {"tiny-qwen3moe-iq4_nl.gguf", "tiny-qwen3moe-q8_0.gguf", PB_TYPE_IQ4_NL, 0.10},
    };
    int checked = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char buf[1024], tbuf[1024];
        const char *path = testdata_file(cases[c].file, buf, sizeof buf);
        const char *twin = cases[c].twin ? testdata_file(cases[c].twin, tbuf, sizeof tbuf) : NULL;
        if (!path)
            continue;
        struct gguf_file *f, *f8 = NULL;
        pb_err err;
        assert_int_equal(gguf_open(path, &f, &err), 0);
        if (twin)
            assert_int_equal(gguf_open(twin, &f8, &err), 0);
        int n_type = 0;
        double worst = 0;
        for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
            const struct gguf_tensor *t = gguf_tensor(f, i);
            if (t->type != cases[c].type)
                continue;
            size_t n = (size_t)gguf_tensor_nelements(t);
            float *x = malloc(n * sizeof *x);
            assert_non_null(x);
            pb_type_get(t->type)->to_float(t->data, x, (int64_t)n);
            double s = 0, s2 = 0;
            for (size_t k = 0; k < n; k++) {
                assert_true(isfinite(x[k]));
                s += x[k];
                s2 += (double)x[k] * x[k];
            }
            double mean = s / (double)n, rms = sqrt(s2 / (double)n);
            if (fabs(mean) > 0.002 || fabs(rms - 0.02) > 0.003)
                fail_msg("%s %s (%s): mean %.5f, RMS %.5f: not normal(0, 0.02)", cases[c].file, t->name,
                         pb_type_name(t->type), mean, rms);
            if (f8) {
                const struct gguf_tensor *t8 = gguf_find_tensor(f8, t->name);
                assert_non_null(t8);
                assert_int_equal(gguf_tensor_nelements(t8), (int64_t)n);
                float *y = malloc(n * sizeof *y);
                assert_non_null(y);
                pb_type_get(t8->type)->to_float(t8->data, y, (int64_t)n);
                double e = rel_rmse(y, x, n);
                worst = e > worst ? e : worst;
                if (!(e < cases[c].bound && e > 1e-4))
                    fail_msg("%s %s: %s vs %s relative RMS difference %.4f (bound %.3f)", cases[c].file, t->name,
                             pb_type_name(t->type), pb_type_name(t8->type), e, cases[c].bound);
                free(y);
            }
            free(x);
            n_type++;
        }
        if (f8)
            print_message("  %s: %d %s tensors look like the weights drawn; relative RMS difference from the Q8_0 "
                          "file's at most %.4f\n", cases[c].file, n_type, pb_type_name(cases[c].type), worst);
        else
            print_message("  %s: %d %s tensors look like the weights drawn\n", cases[c].file, n_type,
                          pb_type_name(cases[c].type));
        assert_true(n_type > 0);
        checked++;
        gguf_close(f);
        if (f8)
            gguf_close(f8);
    }
    if (!checked)
        skip();
}

/* llama-quantize's mixes: the Q8_0 twin of each reference file quantized
 * by plumb to the reference file's type gives every tensor the type
 * llama-quantize gave it (the rules by role, layer, attention grouping and
 * experts, and the fallbacks for 128-element rows). */
static void test_llamacpp_mixes(void **state)
{
    (void)state;
    static const struct {
        const char *twin, *file, *ftype;
    } cases[] = {
        {"tiny-gemma3-q8_0.gguf", "tiny-gemma3-q2_k.gguf", "Q2_K"},
        {"tiny-gemma3-q8_0.gguf", "tiny-gemma3-iq4_xs.gguf", "IQ4_XS"},
        {"tiny-gemma3-q8_0.gguf", "tiny-gemma3-q4_k_m.gguf", "Q4_K_M"},
        {"tiny-qwen3moe-q8_0.gguf", "tiny-qwen3moe-q3_k_m.gguf", "Q3_K_M"},
        {"tiny-qwen3moe-q8_0.gguf", "tiny-qwen3moe-iq4_nl.gguf", "IQ4_NL"},
    };
    int checked = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char b1[1024], b2[1024], out[1024];
        const char *twin = testdata_file(cases[c].twin, b1, sizeof b1), *ref = testdata_file(cases[c].file, b2, sizeof b2);
        if (!twin || !ref)
            continue;
        struct quantize_params qp = {.n_threads = 2};
        assert_true(pb_ftype_from_name(cases[c].ftype, &qp.ftype));
        struct quantize_report rep;
        pb_err err;
        test_tmpfile(cases[c].file, out, sizeof out);
        if (quantize_file(twin, out, &qp, &rep, &err))
            fail_msg("quantize %s to %s: %s", cases[c].twin, cases[c].ftype, err.msg);
        struct gguf_file *fo, *fr;
        assert_int_equal(gguf_open(out, &fo, &err), 0);
        assert_int_equal(gguf_open(ref, &fr, &err), 0);
        assert_int_equal(gguf_n_tensors(fo), gguf_n_tensors(fr));
        int differ = 0;
        for (uint64_t i = 0; i < gguf_n_tensors(fr); i++) {
            const struct gguf_tensor *tr = gguf_tensor(fr, i), *to = gguf_find_tensor(fo, tr->name);
            assert_non_null(to);
            if (to->type != tr->type) {
                print_message("  %s: %s is %s, llama-quantize wrote %s\n", cases[c].ftype, tr->name,
                              pb_type_name(to->type), pb_type_name(tr->type));
                differ++;
            }
        }
        print_message("  %s from %s: %d tensors, %d with another type than %s's\n", cases[c].ftype, cases[c].twin,
                      (int)gguf_n_tensors(fr), differ, cases[c].file);
        assert_int_equal(differ, 0);
        checked++;
        gguf_close(fo);
        gguf_close(fr);
        unlink(out);
    }
    if (!checked)
        skip();
}

/* The mixes' rules case by case (llama-quantize's, as its source states
 * them), for what the reference files do not show: 4 query heads per KV
 * head, 32 layers, Q3_K_S/L, and rows that fit no 256-element block. */
static void test_ftype_rules(void **state)
{
    (void)state;
    static const struct {
        const char *ftype, *name;
        uint32_t n_dims;
        int64_t ne0;
        int layer;
        bool is_output;
        int n_gqa, n_expert;
        enum pb_type want;
    } cases[] = {
        {"Q2_K", "blk.5.attn_v.weight", 2, 4096, 5, false, 4, 0, PB_TYPE_Q4_K},
        {"Q2_K", "blk.5.attn_v.weight", 2, 4096, 5, false, 2, 0, PB_TYPE_Q3_K},
        {"Q2_K", "blk.5.attn_q.weight", 2, 4096, 5, false, 4, 0, PB_TYPE_Q2_K},
        {"Q2_K", "blk.5.ffn_down.weight", 2, 14336, 5, false, 4, 0, PB_TYPE_Q3_K},
        {"Q2_K", "blk.5.attn_output.weight", 2, 4096, 5, false, 4, 0, PB_TYPE_Q3_K},
        {"Q2_K", "output.weight", 2, 4096, -1, true, 4, 0, PB_TYPE_Q6_K},
        {"Q2_K", "blk.5.ffn_up.weight", 2, 2880, 5, false, 4, 0, PB_TYPE_Q4_0},    /* 2880 % 256 != 0 */
        {"Q3_K_S", "blk.0.attn_v.weight", 2, 4096, 0, false, 4, 0, PB_TYPE_Q3_K},
        {"Q3_K_S", "blk.0.ffn_down.weight", 2, 14336, 0, false, 4, 0, PB_TYPE_Q3_K},
        {"Q3_K_M", "blk.1.attn_v.weight", 2, 4096, 1, false, 4, 0, PB_TYPE_Q5_K},
        {"Q3_K_M", "blk.2.attn_v.weight", 2, 4096, 2, false, 4, 0, PB_TYPE_Q4_K},
        {"Q3_K_M", "blk.1.ffn_down.weight", 2, 14336, 1, false, 4, 0, PB_TYPE_Q5_K}, /* < 32 / 16 */
        {"Q3_K_M", "blk.2.ffn_down.weight", 2, 14336, 2, false, 4, 0, PB_TYPE_Q4_K},
        {"Q3_K_M", "blk.9.attn_output.weight", 2, 4096, 9, false, 4, 0, PB_TYPE_Q4_K},
        {"Q3_K_M", "blk.9.ffn_gate.weight", 2, 4096, 9, false, 4, 0, PB_TYPE_Q3_K},
        {"Q3_K_M", "blk.9.attn_qkv.weight", 2, 4096, 9, false, 4, 0, PB_TYPE_Q4_K},
        {"Q3_K_L", "blk.9.attn_v.weight", 2, 4096, 9, false, 4, 0, PB_TYPE_Q5_K},
        {"Q3_K_L", "blk.9.ffn_down.weight", 2, 14336, 9, false, 4, 0, PB_TYPE_Q5_K},
        {"Q3_K_L", "blk.9.attn_output.weight", 2, 4096, 9, false, 4, 0, PB_TYPE_Q5_K},
        {"Q3_K_L", "blk.9.attn_output.weight", 2, 4096, 9, false, 4, 8, PB_TYPE_Q3_K},
        {"Q3_K_M", "blk.9.attn_k.weight", 2, 4096, 9, false, 4, 8, PB_TYPE_Q8_0},
        {"IQ4_XS", "blk.9.attn_v.weight", 2, 4096, 9, false, 4, 0, PB_TYPE_Q5_K},
        {"IQ4_XS", "blk.9.attn_v.weight", 2, 4096, 9, false, 2, 0, PB_TYPE_IQ4_XS},
        {"IQ4_XS", "blk.3.ffn_down.weight", 2, 14336, 3, false, 4, 0, PB_TYPE_Q5_K}, /* < 32 / 8 */
        {"IQ4_XS", "blk.4.ffn_down.weight", 2, 14336, 4, false, 4, 0, PB_TYPE_IQ4_XS},
        {"IQ4_XS", "blk.4.ffn_up.weight", 2, 2880, 4, false, 4, 0, PB_TYPE_IQ4_NL},
        {"IQ4_XS", "blk.4.ffn_up.weight", 2, 100, 4, false, 4, 0, PB_TYPE_F16},
        {"IQ4_NL", "output.weight", 2, 2880, -1, true, 4, 0, PB_TYPE_Q8_0}, /* Q6_K, which falls back to Q8_0 */
        {"IQ4_NL", "output.weight", 2, 4096, -1, true, 4, 0, PB_TYPE_Q6_K},
        {"Q3_K_M", "output.weight", 2, 2880, -1, true, 4, 0, PB_TYPE_Q8_0},
        {"Q3_K_M", "blk.1.ffn_gate_inp.weight", 2, 4096, 1, false, 4, 8, PB_TYPE_F32},
        {"MXFP4_MOE", "blk.1.ffn_down_exps.weight", 3, 2880, 1, false, 8, 32, PB_TYPE_MXFP4},
        {"MXFP4_MOE", "blk.1.attn_q.weight", 2, 2880, 1, false, 8, 32, PB_TYPE_Q8_0},
        {"MXFP4_MOE", "output.weight", 2, 2880, -1, true, 8, 32, PB_TYPE_Q8_0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum pb_ftype ft;
        assert_true(pb_ftype_from_name(cases[i].ftype, &ft));
        struct ftype_tensor t = {cases[i].name, cases[i].n_dims, cases[i].ne0, cases[i].layer, 32, cases[i].is_output};
        struct ftype_model m = {cases[i].n_gqa, cases[i].n_expert};
        enum pb_type got = pb_ftype_model_tensor_type(ft, &m, &t);
        if (got != cases[i].want)
            fail_msg("%s %s (%lld columns, layer %d of 32, %d query heads per KV head, %d experts): %s, expected %s",
                     cases[i].ftype, cases[i].name, (long long)cases[i].ne0, cases[i].layer, cases[i].n_gqa,
                     cases[i].n_expert, pb_type_name(got), pb_type_name(cases[i].want));
    }
}

/* ---- dot kernels ---- */

/* The reference of a dot product of type t with its activations: the
 * dequantized operands multiplied in double. Q8_1's block sums are stored
 * as fp16 (s = d * sum(q)) and the kernels use them as stored: the
 * reference accounts for their rounding. *mag gets the sum of the
 * products' magnitudes. */
static double dot_reference(enum pb_type t, const void *wq, const void *xq, const float *wd, const float *xd,
                            int64_t n, double *mag)
{
    double ref = 0;
    *mag = 0;
    for (int64_t i = 0; i < n; i++) {
        ref += (double)wd[i] * xd[i];
        *mag += fabs((double)wd[i] * xd[i]);
    }
    if (kern_dot_for(t)->act_type == PB_TYPE_Q8_1) {
        const struct block_q8_1 *ab = xq;
        for (int64_t b = 0; b < n / 32; b++) {
            float m = fp16_to_f32(t == PB_TYPE_Q4_1 ? ((const struct block_q4_1 *)wq)[b].m
                                                    : ((const struct block_q5_1 *)wq)[b].m);
            double exact_s = 0;
            for (int j = 0; j < 32; j++)
                exact_s += xd[32 * b + j];
            ref += (double)m * ((double)fp16_to_f32(ab[b].s) - exact_s);
        }
    }
    return ref;
}

static const enum pb_type dot_types[] = {PB_TYPE_F32,  PB_TYPE_F16,    PB_TYPE_BF16,  PB_TYPE_Q4_0, PB_TYPE_Q4_1,
                                         PB_TYPE_Q5_0, PB_TYPE_Q5_1,   PB_TYPE_Q8_0,  PB_TYPE_Q4_K, PB_TYPE_Q5_K,
                                         PB_TYPE_Q6_K, PB_TYPE_MXFP4,  PB_TYPE_Q2_K,  PB_TYPE_Q3_K, PB_TYPE_IQ4_NL,
                                         PB_TYPE_IQ4_XS};

static void test_dot_kernels_match_dequantized(void **state)
{
    (void)state;
    const int64_t n = 1024;
    float w[1024], x[1024], wd[1024], xd[1024];
    _Alignas(64) uint8_t wq[4096 + 64];
    _Alignas(64) uint8_t xq[4096 + 64];
    for (int trial = 0; trial < 20; trial++) {
        test_randn(w, (size_t)n, 100 + (uint64_t)trial, 0.05f);
        test_randn(x, (size_t)n, 200 + (uint64_t)trial, trial % 2 ? 3.0f : 0.01f);
        for (size_t k = 0; k < sizeof dot_types / sizeof dot_types[0]; k++) {
            const struct kern_dot *kd = kern_dot_for(dot_types[k]);
            assert_non_null(kd);
            const struct pb_type_traits *wt = pb_type_get(dot_types[k]), *at = pb_type_get(kd->act_type);
            wt->from_float(w, wq, n);
            at->from_float(x, xq, n);
            wt->to_float(wq, wd, n);
            at->to_float(xq, xd, n);
            double mag, ref = dot_reference(dot_types[k], wq, xq, wd, xd, n, &mag);
            float got = kd->dot(n, wq, xq);
            if (fabs(got - ref) > 1e-5 * mag + 1e-30)
                fail_msg("%s trial %d: dot %.9g, dequantized reference %.9g", pb_type_name(dot_types[k]), trial, got,
                         ref);
            /* and the quantized product approximates the exact one */
            double exact = 0;
            for (int64_t i = 0; i < n; i++)
                exact += (double)w[i] * x[i];
            assert_true(fabs(got - exact) < 0.15 * mag + 1e-30);
        }
    }
    assert_null(kern_dot_for(PB_TYPE_IQ2_XXS));
    assert_null(kern_dot_for(PB_TYPE_TQ2_0));
}

/* Blocks no quantizer would write (test_random_blocks): every code,
 * scale and minimum value occurs. The dot kernels must read them as the
 * dequantizers do. */
static void test_dot_kernels_hostile_blocks(void **state)
{
    (void)state;
    const int64_t n = 2048;
    float x[2048], wd[2048], xd[2048];
    _Alignas(64) uint8_t wq[8192];
    _Alignas(64) uint8_t xq[8192];
    int checked = 0;
    for (int trial = 0; trial < 8; trial++) {
        test_randn(x, (size_t)n, 300 + (uint64_t)trial, 1.0f);
        for (size_t k = 0; k < sizeof dot_types / sizeof dot_types[0]; k++) {
            enum pb_type t = dot_types[k];
            if (!pb_type_is_quantized(t))
                continue;
            const struct kern_dot *kd = kern_dot_for(t);
            test_random_blocks(t, wq, n, 400 + (uint64_t)trial * 31 + k);
            pb_type_get(kd->act_type)->from_float(x, xq, n);
            pb_type_get(t)->to_float(wq, wd, n);
            pb_type_get(kd->act_type)->to_float(xq, xd, n);
            double mag, ref = dot_reference(t, wq, xq, wd, xd, n, &mag);
            float got = kd->dot(n, wq, xq);
            if (!(fabs(got - ref) <= 1e-5 * mag + 1e-30))
                fail_msg("%s random blocks, trial %d: dot %.9g, dequantized reference %.9g", pb_type_name(t), trial,
                         got, ref);
            checked++;
        }
    }
    print_message("  %d dot products of random-byte blocks equal the dequantized reference\n", checked);
    assert_true(checked >= 8 * 13);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_known_values),
        cmocka_unit_test(test_fp16_round_trip_all),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_known_q4_0_q4_1_q8_0),
        cmocka_unit_test(test_known_q5),
        cmocka_unit_test(test_known_q4_K_q5_K),
        cmocka_unit_test(test_known_q6_K),
        cmocka_unit_test(test_known_mxfp4),
        cmocka_unit_test(test_known_q2_K_q3_K),
        cmocka_unit_test(test_known_iq4),
        cmocka_unit_test(test_round_trip_error_bounds),
        cmocka_unit_test(test_q8_0_error_per_element),
        cmocka_unit_test(test_quant_edge_inputs),
        cmocka_unit_test(test_llamacpp_blocks),
        cmocka_unit_test(test_llamacpp_new_types),
        cmocka_unit_test(test_llamacpp_mixes),
        cmocka_unit_test(test_ftype_rules),
        cmocka_unit_test(test_dot_kernels_match_dequantized),
        cmocka_unit_test(test_dot_kernels_hostile_blocks),
    };
    return cmocka_run_group_tests_name("quant", tests, NULL, NULL);
}
