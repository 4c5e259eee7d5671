/* Measured figures: memory bandwidth (tools/membw's read and triad
 * kernels) and the arithmetic throughput of plumb's own matrix kernels,
 * the two numbers generation and prompt speed are predicted from.
 *
 * Throughput runs op_matmul, exactly what a prompt's products call, on a
 * matrix that stays in the caches (2048 x 1024: 2.1 MiB in Q8_0, 4 MiB in
 * F16) with a batch of 64 activation rows, so memory does not limit it:
 * the figure is what the kernels compute at best, activation quantization
 * included. The best of the timed calls is kept.
 */
#define _GNU_SOURCE
#include "survey/survey_internal.h"

#include "base/pool.h"
#include "base/rng.h"
#include "base/sys.h"
#include "kernels/kernels.h"
#include "ops/ops.h"
#include "plumb/survey.h"

#include <stdlib.h>
#include <string.h>

#define BW_BYTES (512u << 20) /* as plumb bench measures: far beyond the caches */
#define MM_IN 2048
#define MM_ROWS 1024
#define MM_TOK 64

/* Operations per second of op_matmul for weights of type t, over about
 * `seconds` of calls. */
static int matmul_rate(struct pool *pool, enum pb_type t, double seconds, double *ops, pb_err *err)
{
    *ops = 0;
    const struct pb_type_traits *tr = pb_type_get(t);
    const size_t row = pb_row_size(t, MM_IN);
    struct pb_tensor w = {.name = "survey", .type = t, .ne = {MM_IN, MM_ROWS, 1, 1}, .row_bytes = row};
    void *data = aligned_alloc(64, row * MM_ROWS);
    float *x = malloc(sizeof(float) * MM_IN * MM_TOK);
    float *y = malloc(sizeof(float) * MM_ROWS * MM_TOK);
    void *packed = NULL, *scratch = NULL;
    int rc = PB_OK;
    if (!data || !x || !y) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory for the throughput test");
        goto done;
    }
    struct rng g;
    rng_seed(&g, 7);
    for (size_t i = 0; i < (size_t)MM_IN * MM_TOK; i++)
        x[i] = (float)((double)(rng_u64(&g) >> 11) / 9007199254740992.0 - 0.5);
    for (int r = 0; r < MM_ROWS; r++) /* weight rows from the same values */
        tr->from_float(x + (size_t)(r % MM_TOK) * MM_IN, (char *)data + (size_t)r * row, MM_IN);
    w.data = data;
    size_t packed_bytes = 0;
    if ((rc = op_matrix_plan(&w, kern_level(), &packed_bytes, err)))
        goto done;
    if (packed_bytes) {
        if (!(packed = aligned_alloc(64, (packed_bytes + 63) / 64 * 64))) {
            rc = pb_fail(err, PB_ENOMEM, "out of memory for the throughput test");
            goto done;
        }
        op_matrix_pack(pool, &w, packed);
    }
    size_t sb = op_matmul_scratch(&w, MM_TOK);
    if (!(scratch = aligned_alloc(64, (sb + 63) / 64 * 64 + 64))) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory for the throughput test");
        goto done;
    }
    if ((rc = op_matmul(pool, &w, x, MM_TOK, y, scratch, err))) /* warm-up */
        goto done;
    const double flops = 2.0 * MM_IN * MM_ROWS * MM_TOK;
    double best = 1e30, t_end = sys_now() + seconds;
    for (int calls = 0; calls < 3 || sys_now() < t_end; calls++) {
        double t0 = sys_now();
        if ((rc = op_matmul(pool, &w, x, MM_TOK, y, scratch, err)))
            goto done;
        double dt = sys_now() - t0;
        best = dt > 0 && dt < best ? dt : best;
    }
    *ops = flops / best;
done:
    free(data);
    free(x);
    free(y);
    free(packed);
    free(scratch);
    return rc;
}

int survey_measure(const struct survey_params *p, struct survey *s, pb_err *err)
{
    const int threads = p->n_threads > 0 ? p->n_threads : s->cpu.threads;
    const int passes = p->quick ? 5 : 11;
    double t0 = sys_now();
    s->memory.bw_threads = threads;
    s->memory.bw_bytes = BW_BYTES;
    int rc = membw_measure_kind(MEMBW_READ, threads, BW_BYTES, passes, &s->memory.bandwidth_gbs, err);
    if (rc == PB_OK)
        rc = membw_measure_kind(MEMBW_TRIAD, threads, BW_BYTES, passes, &s->memory.triad_gbs, err);
    if (rc)
        return rc;
    struct pool *pool = NULL;
    if ((rc = pool_create(threads, &pool, err)))
        return rc;
    double secs = p->quick ? 0.2 : 1.0, ops;
    s->compute.threads = threads;
    if ((rc = matmul_rate(pool, PB_TYPE_Q8_0, secs, &ops, err)) == PB_OK) {
        s->compute.int8_gops = ops / 1e9;
        if ((rc = matmul_rate(pool, PB_TYPE_F16, secs, &ops, err)) == PB_OK)
            s->compute.f32_gflops = ops / 1e9;
    }
    pool_free(pool);
    s->measure_s = sys_now() - t0;
    return rc;
}
