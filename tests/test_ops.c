/* Forward-pass operations against plain definitions, and the thread
 * pool. */
#include "testutil.h"

#include "base/pool.h"
#include "kernels/kernels.h"
#include "ops/ops.h"
#include "quant/types.h"

#include <math.h>

#define PI 3.14159265358979323846
#include <stdlib.h>
#include <string.h>

static void test_rmsnorm(void **state)
{
    (void)state;
    float x[5] = {1, -2, 3, -4, 5}, w[5] = {1, 1, 2, 1, 0.5f}, out[5];
    op_rmsnorm(out, x, w, 5, 1e-5f);
    double ms = (1 + 4 + 9 + 16 + 25) / 5.0;
    for (int i = 0; i < 5; i++)
        assert_float_equal(out[i], x[i] / sqrt(ms + 1e-5) * w[i], 1e-6);
    op_rmsnorm(out, x, NULL, 5, 1e-5f);
    assert_float_equal(out[4], 5 / sqrt(ms + 1e-5), 1e-6);
}

static void test_swiglu(void **state)
{
    (void)state;
    float g[3] = {0, 2, -3}, u[3] = {5, 0.5f, 2};
    op_swiglu(NULL, g, u, 3);
    assert_float_equal(g[0], 0, 1e-7);
    assert_float_equal(g[1], 2 / (1 + exp(-2)) * 0.5, 1e-6);
    assert_float_equal(g[2], -3 / (1 + exp(3)) * 2, 1e-6);
    /* a prompt-sized batch, split over the pool's threads (and the SIMD
     * kernel where there is one) */
    enum { N = 40003 };
    float *big = malloc(N * sizeof *big), *up = malloc(N * sizeof *up), *ref = malloc(N * sizeof *ref);
    test_randn(big, N, 11, 4.0f);
    test_randn(up, N, 12, 1.0f);
    for (int i = 0; i < N; i++)
        ref[i] = (float)(big[i] / (1 + exp(-(double)big[i])) * up[i]);
    struct pool *pool;
    pb_err err;
    assert_int_equal(pool_create(2, &pool, &err), 0);
    op_swiglu(pool, big, up, N);
    for (int i = 0; i < N; i++)
        assert_float_equal(big[i], ref[i], 1e-5 * (1 + fabs(ref[i])));
    pool_free(pool);
    free(big);
    free(up);
    free(ref);
}

/* Rotates n_head heads of head_dim in x as a token at position pos
 * (op_rope_angles, then op_rope_apply: what a layer does). */
static void rope_at(float *x, int n_head, int head_dim, int64_t pos, const struct rope_params *rp)
{
    float cs[256];
    assert_true(rp->n_rot <= 256);
    op_rope_angles(pos, rp, cs);
    op_rope_apply(x, n_head, head_dim, cs, rp);
}

static void test_rope(void **state)
{
    (void)state;
    float x[2 * 8], y[2 * 8];
    test_randn(x, 16, 3, 1.0f);
    /* position 0 is the identity */
    memcpy(y, x, sizeof x);
    struct rope_params rp = {.n_rot = 8, .base = 10000.0f, .freq_scale = 1.0f, .style = ROPE_NORM};
    rope_at(y, 2, 8, 0, &rp);
    assert_memory_equal(x, y, sizeof x);
    /* norm style rotates (2i, 2i+1) by pos * base^(-2i/n) */
    memcpy(y, x, sizeof x);
    rope_at(y, 2, 8, 7, &rp);
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++) {
            double th = 7 * pow(10000.0, -2.0 * i / 8);
            float a = x[8 * h + 2 * i], b = x[8 * h + 2 * i + 1];
            assert_float_equal(y[8 * h + 2 * i], a * cos(th) - b * sin(th), 1e-5);
            assert_float_equal(y[8 * h + 2 * i + 1], a * sin(th) + b * cos(th), 1e-5);
        }
    /* neox style rotates (i, i + n/2); partial rotation leaves the rest */
    memcpy(y, x, sizeof x);
    struct rope_params neox = {.n_rot = 4, .base = 100.0f, .freq_scale = 1.0f, .style = ROPE_NEOX};
    rope_at(y, 2, 8, 3, &neox);
    for (int h = 0; h < 2; h++) {
        for (int i = 0; i < 2; i++) {
            double th = 3 * pow(100.0, -2.0 * i / 4);
            float a = x[8 * h + i], b = x[8 * h + i + 2];
            assert_float_equal(y[8 * h + i], a * cos(th) - b * sin(th), 1e-5);
            assert_float_equal(y[8 * h + i + 2], a * sin(th) + b * cos(th), 1e-5);
        }
        for (int i = 4; i < 8; i++)
            assert_true(y[8 * h + i] == x[8 * h + i]);
    }
    /* frequency factors divide the angle */
    float ff[4] = {1, 2, 4, 8};
    struct rope_params scaled = {.n_rot = 8, .base = 10000.0f, .freq_scale = 0.25f, .style = ROPE_NORM, .freq_factors = ff};
    memcpy(y, x, sizeof x);
    rope_at(y, 1, 8, 5, &scaled);
    double th = 5 * pow(10000.0, -2.0 * 3 / 8) / 8 * 0.25; /* linear scaling multiplies on top */
    assert_float_equal(y[6], x[6] * cos(th) - x[7] * sin(th), 1e-5);
}

/* YaRN (gpt-oss's shape: 64 dims, base 150000, factor 32, original
 * context 4096, betas 32 and 1) against its definition in double: the
 * correction range, the blend of interpolated and original angles, and
 * the magnitude; LongRoPE's attention factor scales cos and sin. */
static void test_rope_yarn(void **state)
{
    (void)state;
    enum { D = 64, POS = 100 };
    struct rope_params rp = {.n_rot = D, .base = 150000.0f, .freq_scale = 1.0f / 32, .style = ROPE_NEOX,
                             .ext_factor = 1.0f, .attn_factor = 0.75f};
    op_rope_yarn_corr_dims(D, 4096, rp.base, 32.0f, 1.0f, rp.corr_dims);
    const double lo = floor(D * log(4096 / (32 * 2 * PI)) / (2 * log(150000.0)));
    const double hi = ceil(D * log(4096 / (1 * 2 * PI)) / (2 * log(150000.0)));
    assert_float_equal(rp.corr_dims[0], lo, 0);
    assert_float_equal(rp.corr_dims[1], hi, 0);
    assert_float_equal(lo, 8, 0);
    assert_float_equal(hi, 18, 0);
    float x[D], y[D];
    test_randn(x, D, 11, 1.0f);
    memcpy(y, x, sizeof x);
    rope_at(y, 1, D, POS, &rp);
    const double mscale = 0.75 * (1 + 0.1 * log(32.0));
    for (int i = 0; i < D / 2; i++) {
        const double extrap = POS * pow(150000.0, -2.0 * i / D), interp = extrap / 32;
        const double ramp = 1 - fmin(1, fmax(0, (i - lo) / fmax(0.001, hi - lo)));
        const double th = interp * (1 - ramp) + extrap * ramp;
        const double a = x[i], b = x[i + D / 2];
        assert_float_equal(y[i], (a * cos(th) - b * sin(th)) * mscale, 2e-4);
        assert_float_equal(y[i + D / 2], (a * sin(th) + b * cos(th)) * mscale, 2e-4);
    }
    /* the low pairs keep their full angle, the high ones are interpolated */
    float z[D];
    memcpy(z, x, sizeof x);
    struct rope_params plain = {.n_rot = D, .base = 150000.0f, .freq_scale = 1.0f, .style = ROPE_NEOX};
    rope_at(z, 1, D, POS, &plain);
    assert_float_equal(y[0], z[0] * mscale, 1e-5);
    /* an attention factor alone (LongRoPE) scales the rotation */
    struct rope_params lr = {.n_rot = D, .base = 10000.0f, .freq_scale = 1.0f, .style = ROPE_NEOX, .attn_factor = 1.19f};
    float u[D], v[D];
    memcpy(u, x, sizeof x);
    memcpy(v, x, sizeof x);
    rope_at(u, 1, D, 7, &lr);
    lr.attn_factor = 0;
    rope_at(v, 1, D, 7, &lr);
    for (int i = 0; i < D; i++)
        assert_float_equal(u[i], v[i] * 1.19f, 1e-5);
}

/* GeGLU through llama.cpp's half-precision GELU table, gpt-oss's clamped
 * SwiGLU and soft-capping against their formulas. */
static void test_activations(void **state)
{
    (void)state;
    enum { N = 20000 };
    float *g = malloc(N * sizeof *g), *u = malloc(N * sizeof *u), *g0 = malloc(N * sizeof *g0);
    test_randn(g, N, 21, 4.0f);
    test_randn(u, N, 22, 1.0f);
    g[0] = -12;
    g[1] = 11;
    memcpy(g0, g, N * sizeof *g);
    struct pool *pool;
    pb_err err;
    assert_int_equal(pool_create(2, &pool, &err), 0);
    op_geglu(pool, g, u, N);
    for (int i = 0; i < N; i++) {
        const double x = g0[i];
        const double gelu = 0.5 * x * (1 + tanh(sqrt(2 / PI) * (x + 0.044715 * x * x * x)));
        const double want = x <= -10 ? 0 : x >= 10 ? x * u[i] : gelu * u[i];
        /* the input and the value are rounded to half precision */
        assert_float_equal(g[i], want, 2e-3 * fabs(want) + 2e-3 * fabs(u[i]) * (1 + fabs(x)) + 1e-6);
    }
    assert_true(g[0] == 0.0f);
    assert_true(g[1] == 11.0f * u[1]);
    memcpy(g, g0, N * sizeof *g);
    op_swiglu_oai(g, u, N, 1.702f, 7.0f);
    for (int i = 0; i < N; i++) {
        const double x = fmin(g0[i], 7.0), y = fmin(fmax(u[i], -7.0), 7.0);
        const double want = x / (1 + exp(-1.702 * x)) * (y + 1);
        assert_float_equal(g[i], want, 1e-5 * (1 + fabs(want)));
    }
    memcpy(g, g0, N * sizeof *g);
    op_softcap(g, N, 2.5f);
    for (int i = 0; i < N; i++)
        assert_float_equal(g[i], 2.5 * tanh(g0[i] / 2.5), 1e-6);
    pool_free(pool);
    free(g);
    free(u);
    free(g0);
}

static void test_matmul_threads(void **state)
{
    (void)state;
    enum { N_IN = 256, N_OUT = 37, N_TOK = 3 };
    float w[N_OUT * N_IN], x[N_TOK * N_IN], y1[N_TOK * N_OUT], y2[N_TOK * N_OUT];
    test_randn(w, N_OUT * N_IN, 1, 0.1f);
    test_randn(x, N_TOK * N_IN, 2, 1.0f);
    enum pb_type types[] = {PB_TYPE_F32, PB_TYPE_Q8_0, PB_TYPE_Q4_K};
    struct pool *p1, *p3;
    pb_err err;
    assert_int_equal(pool_create(1, &p1, &err), 0);
    assert_int_equal(pool_create(3, &p3, &err), 0);
    for (int k = 0; k < 3; k++) {
        size_t rb = pb_row_size(types[k], N_IN);
        uint8_t *wq = malloc(rb * N_OUT);
        for (int r = 0; r < N_OUT; r++)
            pb_type_get(types[k])->from_float(w + r * N_IN, wq + rb * (size_t)r, N_IN);
        struct pb_tensor t = {.name = "w", .type = types[k], .ne = {N_IN, N_OUT, 1, 1}, .row_bytes = rb, .data = wq};
        void *scratch = aligned_alloc(64, 64 * ((op_matmul_scratch(&t, N_TOK) + 63) / 64 + 1));
        assert_int_equal(op_matmul(p1, &t, x, N_TOK, y1, scratch, &err), 0);
        assert_int_equal(op_matmul(p3, &t, x, N_TOK, y2, scratch, &err), 0);
        assert_memory_equal(y1, y2, sizeof y1);
        for (int tk = 0; tk < N_TOK; tk++)
            for (int r = 0; r < N_OUT; r++) {
                double ref = 0, mag = 0;
                for (int i = 0; i < N_IN; i++) {
                    ref += (double)w[r * N_IN + i] * x[tk * N_IN + i];
                    mag += fabs((double)w[r * N_IN + i] * x[tk * N_IN + i]);
                }
                assert_true(fabs(y1[tk * N_OUT + r] - ref) <= (k == 0 ? 1e-5 : 0.1) * mag);
            }
        free(scratch);
        free(wq);
    }
    struct pb_tensor bad = {.name = "iq", .type = PB_TYPE_IQ2_XXS, .ne = {256, 1, 1, 1}, .row_bytes = 66, .data = w};
    assert_int_equal(op_matmul(p1, &bad, x, 1, y1, NULL, &err), PB_EUNSUPPORTED);
    pool_free(p1);
    pool_free(p3);
}

/* Products over chosen rows of one input (a mixture's experts over the
 * tokens that chose them): bit for bit the products of the same rows
 * copied out, in the scratch op_matmul_tasks_scratch asks for; a row
 * outside the input is refused. */
static void test_matmul_chosen_rows(void **state)
{
    (void)state;
    enum { N_IN = 512, N_OUT = 24, N_SRC = 5 };
    enum pb_type types[] = {PB_TYPE_Q4_K, PB_TYPE_Q8_0, PB_TYPE_F32};
    float x[N_SRC * N_IN], w[N_OUT * N_IN];
    test_randn(x, N_SRC * N_IN, 11, 1.0f);
    test_randn(w, N_OUT * N_IN, 12, 0.1f);
    struct pool *pool;
    pb_err err;
    assert_int_equal(pool_create(2, &pool, &err), 0);
    for (int ti = 0; ti < 3; ti++) {
        struct pb_tensor t[2];
        void *wq[2], *packed[2] = {0};
        size_t packed_bytes[2] = {0};
        const size_t rb = pb_row_size(types[ti], N_IN);
        for (int m = 0; m < 2; m++) {
            wq[m] = malloc(rb * N_OUT);
            for (int r = 0; r < N_OUT; r++) /* the second matrix: the rows in reverse */
                pb_type_get(types[ti])->from_float(w + (m ? N_OUT - 1 - r : r) * N_IN, (uint8_t *)wq[m] + rb * (size_t)r,
                                                   N_IN);
            t[m] = (struct pb_tensor){.name = m ? "up" : "gate", .type = types[ti], .ne = {N_IN, N_OUT, 1, 1},
                                      .row_bytes = rb, .data = wq[m]};
            assert_int_equal(op_matrix_plan(&t[m], kern_level(), &packed_bytes[m], &err), 0);
            if (packed_bytes[m]) {
                packed[m] = malloc(packed_bytes[m]);
                op_matrix_pack(pool, &t[m], packed[m]);
            }
        }
        static const int32_t rows_a[] = {4, 0, 4}, rows_b[] = {1, 3};
        float ya[2][3 * N_OUT], yb[2 * N_OUT];
        const struct op_mm_task tasks[] = {
            {.w = &t[0], .x = x, .n_tok = 3, .y = ya[0], .rows = rows_a, .n_x = N_SRC},
            {.w = &t[1], .x = x, .n_tok = 3, .y = ya[1], .rows = rows_a, .n_x = N_SRC},
            {.w = &t[1], .x = x, .n_tok = 2, .y = yb, .rows = rows_b, .n_x = N_SRC},
        };
        const size_t need = op_matmul_tasks_scratch(3, tasks);
        assert_true(need > 0);
        void *scratch = aligned_alloc(64, (need + 63) / 64 * 64);
        assert_int_equal(op_matmul_tasks(pool, 3, tasks, scratch, &err), 0);
        free(scratch);
        /* the same rows copied out, one product at a time */
        const struct {
            const int32_t *rows;
            int n, m;
            const float *y;
        } cases[] = {{rows_a, 3, 0, ya[0]}, {rows_a, 3, 1, ya[1]}, {rows_b, 2, 1, yb}};
        for (int c = 0; c < 3; c++) {
            float xs[3 * N_IN], ys[3 * N_OUT];
            for (int r = 0; r < cases[c].n; r++)
                memcpy(xs + r * N_IN, x + cases[c].rows[r] * N_IN, sizeof(float) * N_IN);
            void *s1 = aligned_alloc(64, (op_matmul_scratch(&t[cases[c].m], cases[c].n) + 63) / 64 * 64 + 64);
            assert_int_equal(op_matmul(pool, &t[cases[c].m], xs, cases[c].n, ys, s1, &err), 0);
            free(s1);
            assert_memory_equal(ys, cases[c].y, sizeof(float) * (size_t)(cases[c].n * N_OUT));
        }
        /* a row the input does not have */
        static const int32_t rows_bad[] = {2, N_SRC};
        const struct op_mm_task bad = {.w = &t[0], .x = x, .n_tok = 2, .y = yb, .rows = rows_bad, .n_x = N_SRC};
        scratch = aligned_alloc(64, (op_matmul_tasks_scratch(1, &bad) + 63) / 64 * 64);
        assert_int_equal(op_matmul_tasks(pool, 1, &bad, scratch, &err), PB_EINVAL);
        assert_non_null(strstr(err.msg, "input row 5 of 5"));
        free(scratch);
        for (int m = 0; m < 2; m++) {
            free(packed[m]);
            free(wq[m]);
        }
    }
    pool_free(pool);
}

struct count_job {
    int hits[64];
};

static void count_worker(void *arg, int ith, int nth)
{
    struct count_job *j = arg;
    long a, b;
    pool_range(1000, ith, nth, &a, &b);
    j->hits[ith] += (int)(b - a);
}

static void test_pool(void **state)
{
    (void)state;
    for (int n = 1; n <= 5; n++) {
        struct pool *p;
        pb_err err;
        assert_int_equal(pool_create(n, &p, &err), 0);
        assert_int_equal(pool_size(p), n);
        struct count_job j = {{0}};
        for (int rep = 0; rep < 100; rep++)
            pool_run(p, count_worker, &j);
        int total = 0;
        for (int i = 0; i < n; i++)
            total += j.hits[i];
        assert_int_equal(total, 100 * 1000);
        pool_free(p);
    }
    struct pool *p;
    pb_err err;
    assert_int_equal(pool_create(0, &p, &err), PB_EINVAL);
    long a, b;
    pool_range(10, 2, 3, &a, &b);
    assert_int_equal(a, 7);
    assert_int_equal(b, 10);
    assert_true(pool_cpu_count() >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_rope_yarn),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_matmul_threads),
        cmocka_unit_test(test_matmul_chosen_rows),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests_name("ops", tests, NULL, NULL);
}
