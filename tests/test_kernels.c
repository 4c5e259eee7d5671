/* SIMD kernels against the scalar reference, on random data: every matrix
 * kernel of every level this CPU runs must give bit for bit the scalar
 * kernel's results (same integers, same float operations in the same
 * order), for several shapes and batch sizes; its activation quantizer
 * must give the reference quantizer's codes and scales, NaN and infinity
 * included. Levels the CPU lacks are skipped with a printed reason; a
 * level the CPU has must compare something for every type that has SIMD
 * kernels (a test that compared nothing fails).
 * The attention kernels are checked against the definition (in double). */
#include "testutil.h"

#include "base/fp16.h"
#include "base/pool.h"
#include "kernels/kernels.h"
#include "ops/ops.h"
#include "quant/blocks.h"
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const enum pb_type weight_types[] = {
    PB_TYPE_F32,  PB_TYPE_F16,  PB_TYPE_Q4_0, PB_TYPE_Q4_1,  PB_TYPE_Q5_0,  PB_TYPE_Q5_1,  PB_TYPE_Q8_0,
    PB_TYPE_Q4_K, PB_TYPE_Q5_K, PB_TYPE_Q6_K, PB_TYPE_Q2_K,  PB_TYPE_Q3_K,  PB_TYPE_IQ4_NL, PB_TYPE_IQ4_XS,
    PB_TYPE_MXFP4,
};

/* The types every SIMD level has matrix kernels for (its own or a lower
 * level's): each must have been compared at each level the CPU runs. */
static const enum pb_type simd_types[] = {
    PB_TYPE_F32,  PB_TYPE_F16,  PB_TYPE_Q4_0, PB_TYPE_Q4_1,   PB_TYPE_Q5_0,   PB_TYPE_Q5_1, PB_TYPE_Q8_0, PB_TYPE_Q4_K, PB_TYPE_Q5_K,
    PB_TYPE_Q6_K, PB_TYPE_Q2_K, PB_TYPE_Q3_K, PB_TYPE_IQ4_NL, PB_TYPE_IQ4_XS, PB_TYPE_MXFP4,
};

/* A quantized n_rows x n_in matrix of random weights (rows with varied
 * magnitudes so that scales differ). */
static uint8_t *random_matrix(enum pb_type t, int64_t n_in, int64_t n_rows, uint64_t seed)
{
    size_t rb = pb_row_size(t, n_in);
    uint8_t *w = malloc(rb * (size_t)n_rows);
    float *row = malloc((size_t)n_in * sizeof *row);
    for (int64_t r = 0; r < n_rows; r++) {
        test_randn(row, (size_t)n_in, seed * 1000 + (uint64_t)r, 0.02f * (float)(1 + r % 5));
        pb_type_get(t)->from_float(row, w + rb * (size_t)r, n_in);
    }
    free(row);
    return w;
}

/* y = W x with the kernels k (packing first when they want it). */
static void product(const struct kern_mm *k, const uint8_t *w, int64_t n_in, int64_t n_rows, const float *x, int n_tok,
                    float *y)
{
    size_t rb = pb_row_size(k->wtype, n_in);
    const void *wk = w;
    void *packed = NULL;
    if (k->pack) {
        packed = malloc(k->packed_size(n_in, n_rows));
        k->pack(w, rb, packed, n_in, 0, n_rows / k->group);
        wk = packed;
    }
    size_t as = k->act_size(n_in);
    uint8_t *a = malloc(as * (size_t)n_tok);
    for (int t = 0; t < n_tok; t++)
        k->act_quantize(x + (size_t)t * (size_t)n_in, a + as * (size_t)t, n_in);
    k->gemm(wk, rb, n_in, 0, n_rows / k->group, a, as, n_tok, y, (size_t)n_rows);
    free(a);
    free(packed);
}

/* Activation row t of a batch: Gaussian, one outlier (a block with a
 * large scale), and in two rows NaN or infinities, which the activation
 * quantizers must treat as the reference ones do. */
static void activation_rows(float *x, int64_t n_in, int n_tok)
{
    test_randn(x, (size_t)(n_in * n_tok), 77 + (uint64_t)n_tok, 1.0f);
    x[3] = 40.0f;
    if (n_tok >= 3) {
        x[n_in + 5] = NAN;
        x[2 * n_in + 40] = INFINITY;
        x[2 * n_in + 41] = -INFINITY;
    }
}

/* y = W x by kernels k and by the scalar ones, for n_tok activation rows
 * (activation_rows), compared bit for bit; what says which matrix. */
static void compare_product(const struct kern_mm *k, const uint8_t *w, int64_t n_in, int64_t n_rows, int n_tok,
                            const char *what)
{
    float *x = malloc((size_t)(n_in * n_tok) * sizeof *x);
    float *y = malloc((size_t)(n_rows * n_tok) * sizeof *y), *yr = malloc((size_t)(n_rows * n_tok) * sizeof *yr);
    activation_rows(x, n_in, n_tok);
    product(k, w, n_in, n_rows, x, n_tok, y);
    product(kern_mm_scalar(k->wtype), w, n_in, n_rows, x, n_tok, yr);
    for (int64_t i = 0; i < n_rows * n_tok; i++)
        if (memcmp(&y[i], &yr[i], sizeof(float)) != 0)
            fail_msg("%s, %s, %lld x %lld, %d rows of activations: element %lld is %.9g, scalar %.9g", k->name, what,
                     (long long)n_rows, (long long)n_in, n_tok, (long long)i, y[i], yr[i]);
    free(x);
    free(y);
    free(yr);
}

/* The kernels of level on matrices of random-byte blocks (every code,
 * scale and minimum value, test_random_blocks), 24 rows x 768 (a multiple
 * of every block size), 1..11 rows of activations. Returns the comparisons made (counted in compared). */
static int compare_hostile(int level, int compared[PB_TYPE_COUNT])
{
    const int64_t n_in = 768, n_rows = 24;
    int n = 0;
    for (size_t ti = 0; ti < sizeof weight_types / sizeof weight_types[0]; ti++) {
        enum pb_type t = weight_types[ti];
        const struct kern_mm *k = kern_mm_for(t, n_in, n_rows, (enum kern_level)level), *ref = kern_mm_scalar(t);
        if (!pb_type_is_quantized(t) || k == ref)
            continue;
        uint8_t *w = malloc(pb_row_size(t, n_in) * (size_t)n_rows);
        test_random_blocks(t, w, n_in * n_rows, 900 + ti);
        for (int n_tok = 1; n_tok <= 11; n_tok++) {
            compare_product(k, w, n_in, n_rows, n_tok, "random-byte blocks");
            compared[t]++;
            n++;
        }
        free(w);
    }
    return n;
}

static void test_matrix_kernels(void **state)
{
    (void)state;
    static const struct {
        int64_t n_in, n_rows;
    } shapes[] = {{256, 8}, {512, 24}, {2048, 16}, {768, 64}};
    int checked = 0;
    for (int level = KERN_SCALAR + 1; level < KERN_LEVEL_COUNT; level++) {
        if (!kern_level_available((enum kern_level)level)) {
            print_message("  level %s: not available on this CPU or build, skipped\n",
                          kern_level_name((enum kern_level)level));
            continue;
        }
        int compared[PB_TYPE_COUNT] = {0}, level_checked = 0;
        for (size_t ti = 0; ti < sizeof weight_types / sizeof weight_types[0]; ti++) {
            enum pb_type t = weight_types[ti];
            for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
                int64_t n_in = shapes[si].n_in, n_rows = shapes[si].n_rows;
                if (n_in % pb_type_get(t)->block)
                    continue;
                const struct kern_mm *k = kern_mm_for(t, n_in, n_rows, (enum kern_level)level);
                const struct kern_mm *ref = kern_mm_scalar(t);
                assert_non_null(k);
                if (k == ref)
                    continue; /* this level has no kernel of its own for t */
                uint8_t *w = random_matrix(t, n_in, n_rows, 10 + si);
                for (int n_tok = 1; n_tok <= 11; n_tok++) { /* every tile width and remainder */
                    compare_product(k, w, n_in, n_rows, n_tok, "quantized random weights");
                    compared[t]++;
                    level_checked++;
                }
                free(w);
            }
        }
        level_checked += compare_hostile(level, compared);
        for (size_t ti = 0; ti < sizeof simd_types / sizeof simd_types[0]; ti++)
            if (!compared[simd_types[ti]])
                fail_msg("level %s: no kernel of %s was compared with the scalar one",
                         kern_level_name((enum kern_level)level), pb_type_name(simd_types[ti]));
        print_message("  level %s: %d kernel/shape/batch combinations equal to the scalar reference\n",
                      kern_level_name((enum kern_level)level), level_checked);
        checked += level_checked;
    }
    if (!kern_level_available(KERN_AVX2))
        print_message("  no SIMD level on this CPU or build: nothing to compare (the scalar kernels are the "
                      "reference)\n");
    else
        assert_true(checked > 0);
}

/* The SIMD activation formats hold the reference quantizers' numbers. */
static void test_activation_quantizers(void **state)
{
    (void)state;
    if (!kern_level_available(KERN_AVX2)) {
        print_message("  avx2 not available, skipped\n");
        return;
    }
    enum { N = 512 };
    float x[N];
    for (int trial = 0; trial < 6; trial++) {
        test_randn(x, N, 500 + (uint64_t)trial, trial == 0 ? 1e-30f : 1.0f);
        if (trial == 2)
            memset(x + 32, 0, 32 * sizeof(float)); /* an all-zero block */
        if (trial == 3)
            x[40] = NAN;
        if (trial == 4)
            x[300] = INFINITY, x[10] = -INFINITY;
        if (trial == 5)
            x[7] = -x[5] > 0 ? -fabsf(x[5]) * 3 : fabsf(x[5]) * 3, x[9] = -x[7]; /* a tie in magnitude */
        /* Q8_0 activations (Q4_0 and Q8_0 weights) */
        const struct kern_mm *k = kern_mm_avx2(PB_TYPE_Q4_0);
        assert_non_null(k);
        uint8_t *a = malloc(k->act_size(N));
        k->act_quantize(x, a, N);
        struct block_q8_0 ref[N / QK8_0];
        quant_row_q8_0(x, ref, N);
        const int8_t *qs = (const int8_t *)a;
        const float *d = (const float *)(const void *)(a + N);
        const int32_t *s = (const int32_t *)(const void *)(d + N / QK8_0);
        for (int b = 0; b < N / QK8_0; b++) {
            int sum = 0;
            for (int j = 0; j < QK8_0; j++) {
                assert_int_equal(qs[QK8_0 * b + j], ref[b].qs[j]);
                sum += ref[b].qs[j];
            }
            float rd = fp16_to_f32(ref[b].d);
            assert_memory_equal(&d[b], &rd, sizeof rd);
            assert_int_equal(s[b], 8 * sum);
        }
        free(a);
        /* Q8_1 activations (Q4_1 and Q5_1 weights): codes, then the fp16
         * scales and block sums as floats */
        k = kern_mm_avx2(PB_TYPE_Q4_1);
        assert_non_null(k);
        a = malloc(k->act_size(N));
        k->act_quantize(x, a, N);
        struct block_q8_1 ref1[N / QK8_1];
        quant_row_q8_1(x, ref1, N);
        const float *d1 = (const float *)(const void *)(a + N), *s1 = d1 + N / QK8_1;
        for (int b = 0; b < N / QK8_1; b++) {
            assert_memory_equal(a + QK8_1 * b, ref1[b].qs, QK8_1);
            float rd = fp16_to_f32(ref1[b].d), rs = fp16_to_f32(ref1[b].s);
            assert_memory_equal(&d1[b], &rd, sizeof rd);
            assert_memory_equal(&s1[b], &rs, sizeof rs);
        }
        free(a);
        /* Q8_K activations: the codes and scale first in the format */
        k = kern_mm_avx2(PB_TYPE_Q4_K);
        assert_non_null(k);
        a = malloc(k->act_size(N));
        k->act_quantize(x, a, N);
        struct block_q8_K refk[N / QK_K];
        quant_row_q8_K(x, refk, N);
        size_t per = k->act_size(N) / (N / QK_K);
        for (int b = 0; b < N / QK_K; b++) {
            const uint8_t *blk = a + per * (size_t)b;
            float dk;
            memcpy(&dk, blk, sizeof dk);
            assert_memory_equal(&dk, &refk[b].d, sizeof dk);
            assert_memory_equal(blk + per - QK_K, refk[b].qs, QK_K);
        }
        free(a);
    }
}

/* Through op_matmul_n with repacked matrices of types ta and tb (sharing
 * one quantized input when their activation formats agree), on a pool:
 * the same numbers as the scalar path on the file's rows. */
static void prepared_pair(struct pool *pool, enum pb_type ta, enum pb_type tb)
{
    enum { N_IN = 512, N_ROWS = 40, N_TOK = 7 };
    const enum pb_type ts[2] = {ta, tb};
    pb_err err;
    uint8_t *w[2];
    struct pb_tensor fast[2], slow[2];
    void *packed[2];
    for (int i = 0; i < 2; i++) {
        w[i] = random_matrix(ts[i], N_IN, N_ROWS, 90 + (uint64_t)i);
        struct pb_tensor t = {.name = "w", .type = ts[i], .ne = {N_IN, N_ROWS, 1, 1},
                              .row_bytes = pb_row_size(ts[i], N_IN), .data = w[i]};
        fast[i] = slow[i] = t;
        size_t bytes;
        assert_int_equal(op_matrix_plan(&fast[i], KERN_AVX2, &bytes, &err), 0);
        assert_true(bytes > 0);
        packed[i] = aligned_alloc(64, (bytes + 63) / 64 * 64);
        op_matrix_pack(pool, &fast[i], packed[i]);
        assert_int_equal(op_matrix_plan(&slow[i], KERN_SCALAR, &bytes, &err), 0);
        assert_int_equal(bytes, 0);
    }
    float x[N_TOK * N_IN], y0[N_TOK * N_ROWS], y1[N_TOK * N_ROWS], r0[N_TOK * N_ROWS], r1[N_TOK * N_ROWS];
    test_randn(x, N_TOK * N_IN, 5, 1.0f);
    const struct pb_tensor *fw[2] = {&fast[0], &fast[1]}, *sw[2] = {&slow[0], &slow[1]};
    float *fy[2] = {y0, y1}, *sy[2] = {r0, r1};
    size_t scratch_bytes = op_matmul_scratch(&fast[0], N_TOK) + op_matmul_scratch(&fast[1], N_TOK) +
                           op_matmul_scratch(&slow[0], N_TOK) + op_matmul_scratch(&slow[1], N_TOK);
    void *scratch = aligned_alloc(64, (scratch_bytes + 63) / 64 * 64);
    assert_int_equal(op_matmul_n(pool, 2, fw, x, N_TOK, fy, scratch, &err), 0);
    assert_int_equal(op_matmul_n(pool, 2, sw, x, N_TOK, sy, scratch, &err), 0);
    assert_memory_equal(y0, r0, sizeof y0);
    assert_memory_equal(y1, r1, sizeof y1);
    free(scratch);
    for (int i = 0; i < 2; i++) {
        free(packed[i]);
        free(w[i]);
    }
}

static void test_prepared_products(void **state)
{
    (void)state;
    if (!kern_level_available(KERN_AVX2)) {
        print_message("  avx2 not available, skipped\n");
        return;
    }
    struct pool *pool;
    pb_err err;
    assert_int_equal(pool_create(2, &pool, &err), 0);
    prepared_pair(pool, PB_TYPE_Q4_0, PB_TYPE_Q6_K);
    prepared_pair(pool, PB_TYPE_IQ4_XS, PB_TYPE_Q3_K); /* IQ4_XS's r8 layout is larger than the file's */
    prepared_pair(pool, PB_TYPE_MXFP4, PB_TYPE_IQ4_NL); /* one Q8_0 input shared */
    prepared_pair(pool, PB_TYPE_Q4_1, PB_TYPE_Q5_1);   /* one Q8_1 input shared */
    pool_free(pool);
}

/* Causal attention in double over the dequantized cache: the definition
 * the kernels are checked against, with the variants (a window of keys
 * p - window + 1 .. p, soft-capped scores, sinks joining the softmax's
 * denominator). kf/vf hold every position, not the ring. */
static void attention_naive(const struct kern_attn_args *a, const float *kf, const float *vf, double *out)
{
    const int hd = a->head_dim, G = a->n_head / a->n_head_kv, kvd = a->n_head_kv * hd;
    double *p = malloc((size_t)(a->pos0 + a->n_tok) * sizeof *p);
    for (int t = 0; t < a->n_tok; t++)
        for (int h = 0; h < a->n_head; h++) {
            const float *q = a->q + ((size_t)t * a->n_head + h) * hd;
            const int g = h / G;
            /* an encoder's rows (non_causal) see every key of the batch */
            const int64_t own = a->pos0 + t, last = a->non_causal ? a->pos0 + a->n_tok - 1 : own,
                          first = a->window && own - a->window + 1 > 0 ? own - a->window + 1 : 0;
            double m = a->sinks ? a->sinks[h] : -INFINITY, sum = 0;
            for (int64_t j = first; j <= last; j++) {
                double d = 0;
                for (int e = 0; e < hd; e++)
                    d += (double)q[e] * kf[(size_t)j * kvd + (size_t)g * hd + e];
                d *= a->scale;
                if (a->softcap > 0)
                    d = a->softcap * tanh(d / a->softcap);
                p[j] = d;
                m = d > m ? d : m;
            }
            for (int64_t j = first; j <= last; j++)
                sum += p[j] = exp(p[j] - m);
            if (a->sinks)
                sum += exp(a->sinks[h] - m);
            for (int e = 0; e < hd; e++) {
                double o = 0;
                for (int64_t j = first; j <= last; j++)
                    o += p[j] * vf[(size_t)j * kvd + (size_t)g * hd + e];
                out[((size_t)t * a->n_head + h) * hd + e] = o / sum;
            }
        }
    free(p);
}

struct attn_case {
    int n_tok, n_head, n_head_kv, hd, pos0;
    int window, cap; /* keys seen (0: all), rows of a ring cache (0: one per position) */
    float softcap;
    bool sinks;
    bool non_causal; /* an encoder's attention */
    int shared;      /* positions read from another cache's rows (not a ring) */
};

/* Runs case cs with cache type kt through every kernel this CPU has and
 * compares each with the definition (within abs + rel * |ref|) and with
 * the scalar kernel (bit for bit: the scalar kernel is the SIMD one's
 * twin); returns the runs checked, 0 when the case does not fit the
 * type. */
static int check_attention(const struct attn_case *cs, enum pb_type kt, uint64_t seed, double abs, double rel)
{
    const int hd = cs->hd, kvd = cs->n_head_kv * hd, n_pos = cs->pos0 + cs->n_tok;
    if (kvd % pb_type_get(kt)->block || hd % pb_type_get(kt)->block)
        return 0;
    /* a ring must hold every key the batch's first token sees */
    assert_true(!cs->cap || cs->cap >= cs->window + cs->n_tok - 1);
    const int rows = cs->cap ? cs->cap : n_pos;
    const size_t row_bytes = pb_row_size(kt, kvd);
    uint8_t *kc = malloc(row_bytes * (size_t)rows), *vc = malloc(row_bytes * (size_t)rows);
    float *kf = malloc((size_t)(n_pos * kvd) * sizeof *kf), *vf = malloc((size_t)(n_pos * kvd) * sizeof *vf);
    float *q = malloc((size_t)(cs->n_tok * cs->n_head * hd) * sizeof *q);
    float sinks[16];
    test_randn(kf, (size_t)(n_pos * kvd), 30 + seed, 1.0f);
    test_randn(vf, (size_t)(n_pos * kvd), 40 + seed, 1.0f);
    test_randn(q, (size_t)(cs->n_tok * cs->n_head * hd), 50 + seed, 1.0f);
    test_randn(sinks, 16, 60 + seed, 2.0f);
    for (int j = 0; j < n_pos; j++) { /* the cache as stored (later positions overwrite a ring), and what it holds */
        uint8_t *kr = kc + row_bytes * (size_t)(j % rows), *vr = vc + row_bytes * (size_t)(j % rows);
        pb_type_get(kt)->from_float(kf + (size_t)j * kvd, kr, kvd);
        pb_type_get(kt)->from_float(vf + (size_t)j * kvd, vr, kvd);
        pb_type_get(kt)->to_float(kr, kf + (size_t)j * kvd, kvd);
        pb_type_get(kt)->to_float(vr, vf + (size_t)j * kvd, kvd);
    }
    /* shared rows: the first positions in buffers of their own, and the
     * cache's own rows there spoiled (NaN in F32 and F16), so a kernel that
     * reads the wrong ones fails */
    uint8_t *ks = NULL, *vs = NULL;
    if (cs->shared) {
        assert_true(!cs->cap && cs->shared <= n_pos);
        ks = malloc(row_bytes * (size_t)cs->shared);
        vs = malloc(row_bytes * (size_t)cs->shared);
        memcpy(ks, kc, row_bytes * (size_t)cs->shared);
        memcpy(vs, vc, row_bytes * (size_t)cs->shared);
        memset(kc, 0xff, row_bytes * (size_t)cs->shared);
        memset(vc, 0xff, row_bytes * (size_t)cs->shared);
    }
    const size_t n_out = (size_t)(cs->n_tok * cs->n_head * hd);
    float *out = malloc(n_out * sizeof *out);
    double *ref = malloc(n_out * sizeof *ref);
    assert_true(cs->n_head <= 16);
    struct kern_attn_args a = {.q = q, .k = kc, .v = vc, .kv_type = kt, .kv_row_bytes = row_bytes, .out = out,
                               .n_tok = cs->n_tok, .n_head = cs->n_head, .n_head_kv = cs->n_head_kv, .head_dim = hd,
                               .pos0 = cs->pos0, .scale = 1.0f / sqrtf((float)hd), .window = cs->window,
                               .kv_cap = cs->cap, .softcap = cs->softcap, .sinks = cs->sinks ? sinks : NULL,
                               .non_causal = cs->non_causal, .k_shared = ks, .v_shared = vs, .n_shared = cs->shared};
    attention_naive(&a, kf, vf, ref);
    float *scalar = malloc(n_out * sizeof *scalar);
    int checked = 0;
    for (int level = 0; level < KERN_LEVEL_COUNT; level++) {
        if (!kern_level_available((enum kern_level)level))
            continue;
        kern_attn_fn fn = kern_attn_for(&a, (enum kern_level)level);
        float *scratch = malloc(kern_attn_scratch(&a) * sizeof *scratch);
        memset(out, 0xff, n_out * sizeof *out); /* NaN: every output must be written */
        /* items in reverse, as the pool hands them out */
        for (int64_t i = kern_attn_items(&a) - 1; i >= 0; i--)
            fn(&a, i, i + 1, scratch);
        for (size_t i = 0; i < n_out; i++)
            if (!(fabs(out[i] - ref[i]) <= abs + rel * fabs(ref[i])))
                fail_msg("attention %s, case seed %llu (%s cache): out[%zu] = %.8g, expected %.8g",
                         kern_level_name((enum kern_level)level), (unsigned long long)seed, pb_type_name(kt), i,
                         out[i], ref[i]);
        if (level == KERN_SCALAR)
            memcpy(scalar, out, n_out * sizeof *out);
        else if (memcmp(out, scalar, n_out * sizeof *out) != 0)
            for (size_t i = 0; i < n_out; i++)
                if (out[i] != scalar[i])
                    fail_msg("attention %s, case seed %llu (%s cache): out[%zu] = %.9g, the scalar kernel %.9g",
                             kern_level_name((enum kern_level)level), (unsigned long long)seed, pb_type_name(kt), i,
                             out[i], scalar[i]);
        free(scratch);
        checked++;
    }
    free(scalar);
    free(kc);
    free(vc);
    free(ks);
    free(vs);
    free(kf);
    free(vf);
    free(q);
    free(out);
    free(ref);
    return checked;
}

static const enum pb_type kv_types[] = {PB_TYPE_F32, PB_TYPE_F16, PB_TYPE_Q8_0};

/* check_attention on each of n cases in every cache type (case c's seed
 * seed0 + c); at least `least` runs must fit their types. */
static void check_attention_cases(const struct attn_case *cases, size_t n, uint64_t seed0, double abs, double rel,
                                  const char *what, int least)
{
    int checked = 0;
    for (size_t c = 0; c < n; c++)
        for (size_t k = 0; k < sizeof kv_types / sizeof kv_types[0]; k++)
            checked += check_attention(&cases[c], kv_types[k], seed0 + c, abs, rel);
    print_message("  %d %s match the definition\n", checked, what);
    assert_true(checked >= least);
}

/* Every attention kernel (scalar and this CPU's SIMD) against the naive
 * definition: several head layouts, KV types, batches that do and do not
 * fill the token blocks, and caches spanning several tiles. */
static void test_attention_kernels(void **state)
{
    (void)state;
    static const struct attn_case cases[] = {
        {1, 4, 4, 64, 0, 0, 0, 0, false, false, 0},   {1, 8, 2, 64, 100, 0, 0, 0, false, false, 0},
        {7, 8, 2, 32, 0, 0, 0, 0, false, false, 0},   {13, 6, 3, 64, 29, 0, 0, 0, false, false, 0},
        {4, 2, 1, 128, 70, 0, 0, 0, false, false, 0}, {33, 4, 1, 64, 5, 0, 0, 0, false, false, 0},
        {2, 4, 2, 40, 37, 0, 0, 0, false, false, 0}};
    check_attention_cases(cases, sizeof cases / sizeof cases[0], 0, 1e-5, 1e-4, "attention kernel runs", 14);
}

/* Sliding windows over full and ring caches (the ring holding only the
 * last cap positions, wrapping inside tiles), soft-capping and sinks: the
 * soft-cap's vector tanh allows a little more rounding. */
static void test_attention_variants(void **state)
{
    (void)state;
    static const struct attn_case cases[] = {
        {1, 4, 2, 64, 100, 8, 0, 0, false, false, 0},    {1, 4, 2, 64, 100, 8, 9, 0, false, false, 0},
        {6, 4, 2, 64, 57, 20, 25, 0, false, false, 0},   {13, 8, 2, 32, 70, 33, 45, 0, false, false, 0},
        {5, 4, 4, 64, 3, 16, 20, 0, false, false, 0},    {7, 4, 2, 64, 40, 0, 0, 0.7f, false, false, 0},
        {3, 4, 2, 64, 20, 0, 0, 0, true, false, 0},      {9, 8, 2, 64, 90, 32, 40, 2.0f, true, false, 0},
        {1, 2, 1, 128, 300, 128, 128, 50, true, false, 0},
    };
    check_attention_cases(cases, sizeof cases / sizeof cases[0], 100, 2e-5, 2e-4, "attention variant runs", 27);
}

/* Keys and values of the first positions read from another cache's rows
 * (a shared prefix): at a tile boundary as the caches share them, and
 * inside a tile, in several layouts and in caches of every type. */
static void test_attention_shared_rows(void **state)
{
    (void)state;
    static const struct attn_case cases[] = {
        {1, 4, 2, 64, 100, 0, 0, 0, false, false, 64},  {1, 8, 2, 64, 100, 0, 0, 0, false, false, 45},
        {7, 8, 2, 32, 60, 0, 0, 0, false, false, 32},   {13, 6, 3, 64, 29, 0, 0, 0, false, false, 29},
        {5, 4, 2, 64, 90, 40, 0, 0.7f, true, false, 64}, {3, 4, 4, 128, 33, 0, 0, 0, false, false, 36},
    };
    check_attention_cases(cases, sizeof cases / sizeof cases[0], 300, 2e-5, 2e-4, "attention runs over shared rows",
                          18);
}

/* Attention both ways (encoders): every row sees all the batch's keys,
 * with batches that fill several token blocks and tiles, and from a
 * cache that already holds earlier positions. */
static void test_attention_non_causal(void **state)
{
    (void)state;
    static const struct attn_case cases[] = {
        {1, 4, 4, 32, 0, 0, 0, 0, false, true, 0},   {6, 4, 4, 32, 0, 0, 0, 0, false, true, 0},
        {37, 4, 4, 32, 0, 0, 0, 0, false, true, 0},  {70, 8, 2, 64, 0, 0, 0, 0, false, true, 0},
        {9, 4, 2, 64, 30, 0, 0, 0, false, true, 0},
    };
    check_attention_cases(cases, sizeof cases / sizeof cases[0], 200, 2e-5, 2e-4, "non-causal attention runs", 15);
}

/* SwiGLU: every level's kernel the scalar one's twin, bit for bit, on
 * values across the exponential's range and its clamps, and remainders. */
static void test_swiglu_kernels(void **state)
{
    (void)state;
    enum { N = 1000 };
    float g[N], u[N], want[N], got[N];
    test_randn(g, N, 7, 8.0f);
    test_randn(u, N, 8, 1.0f);
    g[0] = 0.0f;
    g[1] = -0.0f;
    g[2] = 100.0f;
    g[3] = -100.0f;
    g[4] = 87.0f;
    g[5] = -90.0f;
    int checked = 0;
    for (int level = 0; level < KERN_LEVEL_COUNT; level++) {
        if (!kern_level_available((enum kern_level)level))
            continue;
        for (int n = 1; n <= N; n += 333) {
            memcpy(got, g, sizeof g);
            kern_swiglu_for((enum kern_level)level)(got, u, n);
            if (level == KERN_SCALAR) {
                memcpy(want, got, (size_t)n * sizeof *got);
            } else {
                for (int i = 0; i < n; i++)
                    if (memcmp(&got[i], &want[i], sizeof got[i]) != 0)
                        fail_msg("swiglu %s: element %d of %d is %.9g, the scalar kernel %.9g",
                                 kern_level_name((enum kern_level)level), i, n, got[i], want[i]);
            }
            for (int i = 0; i < n; i++) {
                const double ref = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
                if (!(fabs(got[i] - ref) <= 1e-6 + 1e-5 * fabs(ref)))
                    fail_msg("swiglu %s: element %d is %.9g, expected %.9g", kern_level_name((enum kern_level)level),
                             i, got[i], ref);
            }
            checked++;
        }
    }
    print_message("  %d swiglu runs agree with the scalar kernel and the definition\n", checked);
    assert_true(checked >= 4);
}

/* Floats to half: every level's kernel gives the scalar one's bits, which
 * round to nearest even (checked through the half's value), across the
 * range, at the subnormal and overflow edges, for signed zeros and
 * infinities, with remainders; a NaN stays a NaN. */
static void test_to_f16_kernels(void **state)
{
    (void)state;
    enum { N = 4103 };
    static float x[N];
    static uint16_t want[N], got[N];
    test_randn(x, N, 17, 1.0f);
    for (int i = 0; i < N; i++) /* magnitudes from 2^-30 to 2^17 */
        x[i] = ldexpf(x[i], (i * 7) % 48 - 30);
    const float edges[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65504.0f, 65519.99f, 65520.0f, -65520.0f,
                           0x1p-14f, 0x1.ffcp-15f, 0x1p-24f, 0x1p-25f, 0x1.000002p-25f, 0x1.8p-24f, 1.00048828125f,
                           1.000488281250001f, 1.00146484375f, 2049.0f, 2051.0f};
    for (size_t e = 0; e < sizeof edges / sizeof edges[0]; e++)
        x[e * 97] = edges[e];
    int checked = 0;
    for (int level = 0; level < KERN_LEVEL_COUNT; level++) {
        if (!kern_level_available((enum kern_level)level))
            continue;
        kern_to_f16_fn fn = kern_to_f16_for((enum kern_level)level);
        for (int n = N; n >= N - 9; n -= 3) {
            memset(got, 0xaa, sizeof got);
            fn(x, got, n);
            if (level == KERN_SCALAR && n == N) {
                memcpy(want, got, sizeof got);
                for (int i = 0; i < N; i++) { /* nearest, ties to even, or inf beyond the range */
                    if (isnan(x[i])) {
                        assert_true((got[i] & 0x7c00) == 0x7c00 && (got[i] & 0x3ff) != 0);
                        continue;
                    }
                    const double h = fp16_to_f32(got[i]), d = fabs((double)x[i] - h);
                    const double ulp = fabs(h) < 0x1p-14 ? 0x1p-24 : ldexp(1.0, ilogb(fabs(h) ? h : 1.0) - 10);
                    if (isinf(h) ? fabs(x[i]) < 65520.0 : d > ulp / 2 || (d == ulp / 2 && (got[i] & 1)))
                        fail_msg("half of %.9g is %.9g (bits %04x)", x[i], h, got[i]);
                }
            }
            for (int i = 0; i < n; i++)
                if (got[i] != want[i] && !(isnan(x[i]) && (got[i] & 0x7c00) == 0x7c00 && (got[i] & 0x3ff)))
                    fail_msg("to_f16 %s: %.9g gives %04x, the scalar kernel %04x",
                             kern_level_name((enum kern_level)level), x[i], got[i], want[i]);
            if (n < N && got[n] != 0xaaaa)
                fail_msg("to_f16 %s wrote past %d values", kern_level_name((enum kern_level)level), n);
            checked++;
        }
    }
    print_message("  %d half conversions agree with the scalar kernel\n", checked);
    assert_true(checked >= 4);
}

int main(void)
{
    print_message("kernel level in use: %s\n", kern_level_name(kern_level()));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matrix_kernels),
        cmocka_unit_test(test_activation_quantizers),
        cmocka_unit_test(test_prepared_products),
        cmocka_unit_test(test_attention_kernels),
        cmocka_unit_test(test_attention_variants),
        cmocka_unit_test(test_attention_non_causal),
        cmocka_unit_test(test_attention_shared_rows),
        cmocka_unit_test(test_swiglu_kernels),
        cmocka_unit_test(test_to_f16_kernels),
    };
    return cmocka_run_group_tests_name("kernels", tests, NULL, NULL);
}
