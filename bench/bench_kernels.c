#define _POSIX_C_SOURCE 200809L
/* Kernel micro-benchmark: multiply-accumulates per second of each matrix
 * kernel on one thread, for a batch of activation rows (prompt
 * processing: compute-bound, weights in cache), for one row over a
 * large matrix (generation: memory-bound), and for 16 and 4 rows in
 * cache (pp16, pp4: a server's batched decoding step, which should run
 * at prompt speed). Compare kernel sets and builds on one machine, in
 * one run.
 *
 * Then the products of a TinyLlama-1.1B layer's FFN (2048 -> 5632 and
 * back) through op_matmul on all CPUs, for 128 and 512 activation rows:
 * the kernels with the thread pool's split, as prompt processing runs them.
 *
 * With Q4_K among the types, each kernel's speed is also printed as a
 * ratio to Q4_K's at the same level and case, measured in the same run
 * (the figure to compare across a loaded machine: both sides see the same
 * load). --cpu times each product by the thread's CPU time instead of the
 * wall clock, which a machine shared with other work disturbs less.
 *
 * --no-ffn leaves out the multi-threaded FFN products.
 *
 * Usage: bench_kernels [--cpu] [--no-ffn] [TYPE...]
 *        (default: Q4_0 Q8_0 Q4_K Q6_K Q2_K Q3_K IQ4_XS IQ4_NL MXFP4 Q4_1 Q5_0 Q5_1)
 */
#include "base/pool.h"
#include "base/rng.h"
#include "base/sys.h"
#include "kernels/kernels.h"
#include "ops/ops.h"
#include "quant/types.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_CASES 5
static const char *const case_names[N_CASES] = {"pp128", "tg1", "tg1-L2", "pp16", "pp4"};
static int use_cpu_time, skip_ffn;
/* GMAC/s per type, level and case (0: not measured) */
static double results[PB_TYPE_COUNT][KERN_LEVEL_COUNT][N_CASES];

static double now(void)
{
    if (!use_cpu_time)
        return sys_now();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint8_t *random_matrix(enum pb_type t, int64_t n_in, int64_t n_rows)
{
    size_t rb = pb_row_size(t, n_in);
    uint8_t *w = malloc(rb * (size_t)n_rows);
    float *row = malloc((size_t)n_in * sizeof *row);
    struct rng g;
    rng_seed(&g, 1);
    for (int64_t r = 0; r < n_rows && r < 1024; r++) {
        for (int64_t i = 0; i < n_in; i++)
            row[i] = rng_normal(&g) * 0.02f;
        pb_type_get(t)->from_float(row, w + rb * (size_t)r, n_in);
    }
    for (int64_t r = 1024; r < n_rows; r++) /* big matrices repeat the first 1024 rows */
        memcpy(w + rb * (size_t)r, w + rb * (size_t)(r % 1024), rb);
    free(row);
    return w;
}

/* Seconds per product of an n_rows x n_in matrix with n_tok rows (best of reps). */
static double time_product(const struct kern_mm *k, const void *wk, size_t rb, int64_t n_in, int64_t n_rows,
                           const void *a, size_t as, int n_tok, float *y, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        k->gemm(wk, rb, n_in, 0, n_rows / k->group, a, as, n_tok, y, (size_t)n_rows);
        double s = now() - t0;
        best = s < best ? s : best;
    }
    return best;
}

static void run(enum pb_type t, enum kern_level level)
{
    const struct kern_mm *k = kern_mm_for(t, 2048, 2048, level);
    if (!k)
        return;
    /* pp: 256 rows x 2048 (weights stay in L2), 128 activation rows;
     * tg: 256 MiB of rows of 2048 (beyond the caches), one activation row;
     * tg1-L2: the same from the L2 cache (the kernel's own speed);
     * pp16, pp4: 16 and 4 activation rows, weights in L2 */
    const struct {
        const char *name;
        int64_t n_in, n_rows;
        int n_tok, reps;
    } cases[N_CASES] = {{"pp128", 2048, 256, 128, 25}, {"tg1", 2048, 0, 1, 5}, {"tg1-L2", 2048, 128, 1, 2000}, {"pp16", 2048, 256, 16, 200}, {"pp4", 2048, 256, 4, 500}};
    for (int c = 0; c < N_CASES; c++) {
        int64_t n_in = cases[c].n_in, n_rows = cases[c].n_rows;
        if (n_rows == 0) /* far beyond the last-level cache: 256 MiB of weights */
            n_rows = (int64_t)((256u << 20) / pb_row_size(t, n_in)) / 8 * 8;
        int n_tok = cases[c].n_tok;
        uint8_t *w = random_matrix(t, n_in, n_rows);
        size_t rb = pb_row_size(t, n_in);
        const void *wk = w;
        void *packed = NULL;
        if (k->pack) {
            packed = sys_alloc_large(k->packed_size(n_in, n_rows)); /* as the model loader does */
            k->pack(w, rb, packed, n_in, 0, n_rows / k->group);
            wk = packed;
        }
        size_t as = k->act_size(n_in);
        uint8_t *a = malloc(as * (size_t)n_tok);
        float *x = malloc((size_t)n_in * sizeof *x), *y = malloc((size_t)(n_rows * n_tok) * sizeof *y);
        struct rng g;
        rng_seed(&g, 2);
        for (int tk = 0; tk < n_tok; tk++) {
            for (int64_t i = 0; i < n_in; i++)
                x[i] = rng_normal(&g);
            k->act_quantize(x, a + as * (size_t)tk, n_in);
        }
        double s = time_product(k, wk, rb, n_in, n_rows, a, as, n_tok, y, cases[c].reps);
        double macs = (double)n_in * (double)n_rows * n_tok;
        printf("%-20s %-6s %8.2f GMAC/s  %8.2f GB/s of weights\n", k->name, cases[c].name, macs / s / 1e9,
               (double)rb * (double)n_rows / s / 1e9);
        if (k != kern_mm_scalar(t) || level == KERN_SCALAR)
            results[t][level][c] = macs / s / 1e9;
        free(w);
        sys_free_large(packed, packed ? k->packed_size(n_in, n_rows) : 0);
        free(a);
        free(x);
        free(y);
    }
}

/* The FFN products of one layer (gate 2048 -> 5632, down 5632 -> 2048)
 * through op_matmul with n_tok activation rows, on the pool. */
static void run_ffn(enum pb_type t, struct pool *pool, int n_threads)
{
    const int64_t dims[2][2] = {{2048, 5632}, {5632, 2048}};
    const int toks[2] = {128, 512};
    for (int ti = 0; ti < 2; ti++) {
        const int n_tok = toks[ti];
        double total_s = 0, total_macs = 0;
        const char *name = "?";
        for (int d = 0; d < 2; d++) {
            const int64_t n_in = dims[d][0], n_rows = dims[d][1];
            if (n_in % pb_type_get(t)->block)
                return;
            uint8_t *w = random_matrix(t, n_in, n_rows);
            struct pb_tensor tw = {.name = "w", .type = t, .ne = {n_in, n_rows, 1, 1}, .row_bytes = pb_row_size(t, n_in),
                                   .data = w};
            size_t packed_bytes = 0;
            pb_err err;
            void *packed = NULL;
            if (op_matrix_plan(&tw, kern_level(), &packed_bytes, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                free(w);
                return;
            }
            if (packed_bytes) {
                packed = sys_alloc_large(packed_bytes);
                op_matrix_pack(pool, &tw, packed);
            }
            name = tw.mm->name;
            float *x = malloc((size_t)(n_in * n_tok) * sizeof *x), *y = malloc((size_t)(n_rows * n_tok) * sizeof *y);
            void *scratch = aligned_alloc(64, (op_matmul_scratch(&tw, n_tok) + 63) / 64 * 64);
            struct rng g;
            rng_seed(&g, 3);
            for (int64_t i = 0; i < n_in * n_tok; i++)
                x[i] = rng_normal(&g);
            double best = 1e30;
            for (int r = 0; r < 5; r++) {
                double t0 = sys_now();
                if (op_matmul(pool, &tw, x, n_tok, y, scratch, &err))
                    fprintf(stderr, "%s\n", err.msg);
                double sec = sys_now() - t0;
                best = sec < best ? sec : best;
            }
            total_s += best;
            total_macs += (double)n_in * (double)n_rows * n_tok;
            free(scratch);
            free(x);
            free(y);
            free(w);
            sys_free_large(packed, packed_bytes);
        }
        printf("%-20s ffn%-3d %8.2f GMAC/s  (op_matmul, %d threads, best of 5)\n", name, n_tok, total_macs / total_s / 1e9,
               n_threads);
    }
}

/* Each type's speed over Q4_K's, level by level and case by case. */
static void print_ratios(const enum pb_type *types, int n)
{
    printf("\nspeed / Q4_K's, same level and case (%s time)\n%-8s %-11s", use_cpu_time ? "CPU" : "wall", "type",
           "level");
    for (int c = 0; c < N_CASES; c++)
        printf(" %8s", case_names[c]);
    printf("\n");
    for (int i = 0; i < n; i++)
        for (int l = KERN_LEVEL_COUNT - 1; l >= 0; l--) {
            if (types[i] == PB_TYPE_Q4_K || !results[types[i]][l][0] || !results[PB_TYPE_Q4_K][l][0])
                continue;
            printf("%-8s %-11s", pb_type_name(types[i]), kern_level_name((enum kern_level)l));
            for (int c = 0; c < N_CASES; c++)
                printf(" %8.2f", results[types[i]][l][c] / results[PB_TYPE_Q4_K][l][c]);
            printf("\n");
        }
}

int main(int argc, char **argv)
{
    enum pb_type types[32];
    int n = 0;
    for (int i = 1; i < argc && n < 32; i++) {
        if (!strcmp(argv[i], "--cpu") || !strcmp(argv[i], "--no-ffn")) {
            use_cpu_time |= !strcmp(argv[i], "--cpu");
            skip_ffn |= !strcmp(argv[i], "--no-ffn");
            continue;
        }
        if (!pb_type_from_name(argv[i], &types[n++])) {
            fprintf(stderr, "unknown type %s\n", argv[i]);
            return 2;
        }
    }
    if (n == 0) {
        enum pb_type def[] = {PB_TYPE_Q4_0, PB_TYPE_Q8_0, PB_TYPE_Q4_K,   PB_TYPE_Q6_K,  PB_TYPE_Q2_K, PB_TYPE_Q3_K,
                              PB_TYPE_IQ4_XS, PB_TYPE_IQ4_NL, PB_TYPE_MXFP4, PB_TYPE_Q4_1, PB_TYPE_Q5_0, PB_TYPE_Q5_1};
        memcpy(types, def, sizeof def);
        n = (int)(sizeof def / sizeof def[0]);
    }
    for (int i = 0; i < n; i++)
        for (int l = KERN_LEVEL_COUNT - 1; l >= 0; l--)
            if (kern_level_available((enum kern_level)l))
                run(types[i], (enum kern_level)l);
    struct pool *pool;
    pb_err err;
    const int n_threads = pool_cpu_count();
    if (pool_create(n_threads, &pool, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < n && !skip_ffn; i++)
        run_ffn(types[i], pool, n_threads);
    pool_free(pool);
    for (int i = 0; i < n; i++)
        if (types[i] == PB_TYPE_Q4_K)
            print_ratios(types, n);
    return 0;
}
