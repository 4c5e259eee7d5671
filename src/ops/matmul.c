/* Matrix products: choosing and preparing each matrix's kernels, and
 * running them over the thread pool.
 *
 * Work is cut into units of consecutive row groups (at most 128 KiB of
 * weights each, so that a unit stays in the L2 cache while every
 * activation row of the batch passes over it; smaller for larger
 * batches; 512 KiB for one or two rows, where nothing is reused and a
 * thread's stream of weights should run long: each unit starts where the
 * kernels' prefetches did not reach) and handed out through an
 * atomic counter: a thread slowed by something else on the machine takes
 * fewer units instead of holding the others up.
 */
#include "ops/ops.h"

#include "base/sys.h"
#include "kernels/kernels.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#define UNIT_BYTES (128u << 10)
#define UNIT_TOKENS 128
#define UNIT_MIN_GROUPS 4
#ifndef UNIT_STREAM_BYTES
#define UNIT_STREAM_BYTES (512u << 10)
#endif

int op_matrix_plan(struct pb_tensor *t, int level, size_t *packed_bytes, pb_err *err)
{
    *packed_bytes = 0;
    const struct kern_mm *k = kern_mm_for(t->type, t->ne[0], t->ne[1], (enum kern_level)level);
    if (!k)
        return pb_fail(err, PB_EUNSUPPORTED, "no matrix kernel for %s weights (tensor '%s')", pb_type_name(t->type),
                       t->name);
    t->mm = k;
    t->mm_data = t->data;
    if (k->pack)
        *packed_bytes = k->packed_size(t->ne[0], t->ne[1]);
    return PB_OK;
}

struct pack_job {
    const struct pb_tensor *t;
    void *dst;
    int64_t g0, g1;
};

static void pack_worker(void *arg, int ith, int nth)
{
    const struct pack_job *j = arg;
    const struct kern_mm *k = j->t->mm;
    long a, b;
    pool_range((long)(j->g1 - j->g0), ith, nth, &a, &b);
    if (b > a)
        k->pack(j->t->data, j->t->row_bytes, j->dst, j->t->ne[0], j->g0 + a, j->g0 + b);
}

int64_t op_matrix_groups(const struct pb_tensor *t)
{
    return t->mm ? t->ne[1] / t->mm->group : t->ne[1];
}

void op_matrix_pack_groups(struct pool *pool, const struct pb_tensor *t, void *dst, int64_t g0, int64_t g1)
{
    struct pack_job j = {t, dst, g0, g1};
    pool_run(pool, pack_worker, &j);
}

void op_matrix_use_packed(struct pb_tensor *t, const void *dst)
{
    t->mm_data = dst;
}

void op_matrix_pack(struct pool *pool, struct pb_tensor *t, void *dst)
{
    op_matrix_pack_groups(pool, t, dst, 0, op_matrix_groups(t));
    op_matrix_use_packed(t, dst);
}

static const struct kern_mm *kernels_of(const struct pb_tensor *w)
{
    /* a tensor nobody planned (tests, tools): the scalar kernels on its rows */
    return w->mm ? w->mm : kern_mm_for(w->type, w->ne[0], w->ne[1], KERN_SCALAR);
}

static const void *data_of(const struct pb_tensor *w)
{
    return w->mm ? w->mm_data : w->data;
}

size_t op_matmul_scratch(const struct pb_tensor *w, int n_tok)
{
    const struct kern_mm *k = kernels_of(w);
    if (!k)
        return 0;
    return ((k->act_size(w->ne[0]) + 63) / 64 * 64) * (size_t)n_tok;
}

struct quant_job {
    const struct kern_mm *k;
    const float *x;
    int64_t n_in;
    int n_tok;
    uint8_t *out;
    size_t stride;
};

static void quant_worker(void *arg, int ith, int nth)
{
    const struct quant_job *j = arg;
    long t0, t1;
    pool_range(j->n_tok, ith, nth, &t0, &t1);
    for (long t = t0; t < t1; t++)
        j->k->act_quantize(j->x + (size_t)t * (size_t)j->n_in, j->out + (size_t)t * j->stride, j->n_in);
}

struct mm_job {
    int n;
    const struct pb_tensor *w[OP_MM_JOB_TASKS];
    const struct kern_mm *k[OP_MM_JOB_TASKS];
    const uint8_t *act[OP_MM_JOB_TASKS];
    size_t act_stride[OP_MM_JOB_TASKS];
    float *y[OP_MM_JOB_TASKS];
    int n_tok[OP_MM_JOB_TASKS];
    int64_t chunk[OP_MM_JOB_TASKS];     /* groups per unit */
    int64_t first[OP_MM_JOB_TASKS + 1]; /* first unit of each matrix; first[n]: total */
    atomic_long next;
};

static void mm_worker(void *arg, int ith, int nth)
{
    (void)ith;
    (void)nth;
    struct mm_job *j = arg;
    int m = 0;
    for (;;) {
        long u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (u >= j->first[j->n])
            return;
        while (u >= j->first[m + 1])
            m++;
        const struct kern_mm *k = j->k[m];
        const struct pb_tensor *w = j->w[m];
        const int64_t n_groups = w->ne[1] / k->group;
        int64_t g0 = (u - j->first[m]) * j->chunk[m], g1 = g0 + j->chunk[m];
        if (g1 > n_groups)
            g1 = n_groups;
        k->gemm(data_of(w), w->row_bytes, w->ne[0], g0, g1, j->act[m], j->act_stride[m], j->n_tok[m], j->y[m],
                (size_t)w->ne[1]);
    }
}

static size_t act_stride_of(const struct kern_mm *k, int64_t n_in)
{
    return (k->act_size(n_in) + 63) / 64 * 64;
}

/* Whether products a and b (a before b) read the same activations: the
 * same rows of the same input, in the same format. */
static bool same_activations(const struct op_mm_task *a, const struct kern_mm *ka, const struct op_mm_task *b,
                             const struct kern_mm *kb)
{
    return a->x == b->x && a->rows == b->rows && a->n_tok == b->n_tok && ka->act_quantize == kb->act_quantize;
}

/* Whether a (before b) quantizes the whole input b chooses rows from. */
static bool same_source(const struct op_mm_task *a, const struct kern_mm *ka, const struct op_mm_task *b,
                        const struct kern_mm *kb)
{
    return a->rows && a->x == b->x && a->n_x == b->n_x && ka->act_quantize == kb->act_quantize;
}

size_t op_matmul_tasks_scratch(int n, const struct op_mm_task *tasks)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const struct kern_mm *k = kernels_of(tasks[i].w);
        if (!k)
            continue;
        bool same = false, source = false;
        for (int e = 0; e < i; e++) {
            const struct kern_mm *ke = kernels_of(tasks[e].w);
            same |= ke && same_activations(&tasks[e], ke, &tasks[i], k);
            source |= ke && same_source(&tasks[e], ke, &tasks[i], k);
        }
        const size_t stride = act_stride_of(k, tasks[i].w->ne[0]);
        if (tasks[i].rows && !same && !source)
            total += stride * (size_t)tasks[i].n_x;
        if (!same)
            total += stride * (size_t)tasks[i].n_tok;
    }
    return total;
}

/* n rows of x quantized by k into out (stride bytes apart), over the pool
 * for more than one; the seconds it took added to *quantize_s. */
static void quantize_rows(struct pool *pool, const struct kern_mm *k, const float *x, int64_t n_in, int n, uint8_t *out,
                          size_t stride, double *quantize_s)
{
    struct quant_job q = {k, x, n_in, n, out, stride};
    const double q0 = quantize_s ? sys_now() : 0;
    if (n > 1)
        pool_run(pool, quant_worker, &q);
    else
        quant_worker(&q, 0, 1);
    if (quantize_s)
        *quantize_s += sys_now() - q0;
}

/* One pool job over tasks [0, n) (n <= OP_MM_JOB_TASKS); the time spent
 * quantizing activations is added to *quantize_s when given. */
static int matmul_job(struct pool *pool, int n, const struct op_mm_task *tasks, void *scratch, double *quantize_s,
                      pb_err *err)
{
    struct mm_job j = {.n = n};
    const uint8_t *src[OP_MM_JOB_TASKS] = {0}; /* with rows: where the whole input was quantized */
    uint8_t *free_at = scratch;
    const int64_t nth = pool_size(pool);
    j.first[0] = 0;
    for (int m = 0; m < n; m++) {
        const struct op_mm_task *t = &tasks[m];
        const struct kern_mm *k = kernels_of(t->w);
        if (!k)
            return pb_fail(err, PB_EUNSUPPORTED, "no matrix kernel for %s weights (tensor '%s')",
                           pb_type_name(t->w->type), t->w->name);
        j.w[m] = t->w;
        j.k[m] = k;
        j.y[m] = t->y;
        j.n_tok[m] = t->n_tok;
        /* activations: shared with an earlier product of the same input and format */
        int same = -1, source = -1;
        for (int e = 0; e < m; e++) {
            if (same < 0 && same_activations(&tasks[e], j.k[e], t, k))
                same = e;
            if (source < 0 && same_source(&tasks[e], j.k[e], t, k))
                source = e;
        }
        const size_t stride = act_stride_of(k, t->w->ne[0]);
        if (same >= 0) {
            j.act[m] = j.act[same];
            src[m] = src[same];
        } else {
            if (!t->rows) {
                quantize_rows(pool, k, t->x, t->w->ne[0], t->n_tok, free_at, stride, quantize_s);
            } else { /* the input's rows quantized once, then the chosen ones copied */
                if (source >= 0) {
                    src[m] = src[source];
                } else {
                    src[m] = free_at;
                    quantize_rows(pool, k, t->x, t->w->ne[0], t->n_x, free_at, stride, quantize_s);
                    free_at += stride * (size_t)t->n_x;
                }
                const double q0 = quantize_s ? sys_now() : 0;
                for (int r = 0; r < t->n_tok; r++) {
                    if (t->rows[r] < 0 || t->rows[r] >= t->n_x)
                        return pb_fail(err, PB_EINVAL, "product of '%s': row %d chooses input row %d of %d",
                                       t->w->name, r, (int)t->rows[r], t->n_x);
                    memcpy(free_at + (size_t)r * stride, src[m] + (size_t)t->rows[r] * stride, stride);
                }
                if (quantize_s)
                    *quantize_s += sys_now() - q0;
            }
            j.act[m] = free_at;
            free_at += stride * (size_t)t->n_tok;
        }
        j.act_stride[m] = stride;
        const int64_t n_groups = t->w->ne[1] / k->group;
        const size_t group_bytes = t->w->row_bytes * (size_t)k->group;
        /* a batch multiplies the work per weight: smaller units keep the
         * threads' shares even (the last unit handed out is what the
         * others wait for) */
        size_t unit = t->n_tok > UNIT_TOKENS ? UNIT_BYTES / (size_t)(t->n_tok / UNIT_TOKENS) : UNIT_BYTES;
        int64_t chunk = (int64_t)(unit / (group_bytes ? group_bytes : 1));
        if (t->n_tok <= 2) {
            /* streams: long units, but two per thread at least, so that a
             * small matrix still keeps every thread reading */
            int64_t stream = (int64_t)(UNIT_STREAM_BYTES / (group_bytes ? group_bytes : 1));
            const int64_t share = (n_groups + 2 * nth - 1) / (2 * nth);
            stream = stream < share ? stream : share;
            chunk = stream > chunk ? stream : chunk;
        }
        /* kernels may take groups in pairs (two groups share each
         * activation load): whole pairs, and a few of them */
        chunk = chunk < UNIT_MIN_GROUPS ? UNIT_MIN_GROUPS : chunk & ~(int64_t)1;
        if (chunk > n_groups)
            chunk = n_groups;
        j.chunk[m] = chunk;
        j.first[m + 1] = j.first[m] + (n_groups + chunk - 1) / chunk;
    }
    atomic_init(&j.next, 0);
    pool_run(pool, mm_worker, &j);
    return PB_OK;
}

int op_matmul_tasks_timed(struct pool *pool, int n, const struct op_mm_task *tasks, void *scratch, double *quantize_s,
                          pb_err *err)
{
    for (int i = 0; i < n; i += OP_MM_JOB_TASKS) {
        int rc = matmul_job(pool, n - i < OP_MM_JOB_TASKS ? n - i : OP_MM_JOB_TASKS, tasks + i, scratch, quantize_s,
                            err);
        if (rc)
            return rc;
    }
    return PB_OK;
}

int op_matmul_tasks(struct pool *pool, int n, const struct op_mm_task *tasks, void *scratch, pb_err *err)
{
    return op_matmul_tasks_timed(pool, n, tasks, scratch, NULL, err);
}

int op_matmul_n(struct pool *pool, int n, const struct pb_tensor *const *w, const float *x, int n_tok, float *const *y,
                void *scratch, pb_err *err)
{
    if (n < 1 || n > OP_MATMUL_MAX)
        return pb_fail(err, PB_EINVAL, "op_matmul_n: %d matrices (1..%d)", n, OP_MATMUL_MAX);
    struct op_mm_task t[OP_MATMUL_MAX];
    for (int m = 0; m < n; m++)
        t[m] = (struct op_mm_task){.w = w[m], .x = x, .n_tok = n_tok, .y = y[m]};
    return matmul_job(pool, n, t, scratch, NULL, err);
}

int op_matmul(struct pool *pool, const struct pb_tensor *w, const float *x, int n_tok, float *y, void *scratch,
              pb_err *err)
{
    return op_matmul_n(pool, 1, &w, x, n_tok, &y, scratch, err);
}
