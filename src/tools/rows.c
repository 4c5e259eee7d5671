#include "tools/rows.h"

#include <stdlib.h>

#define CHUNK_BYTES (16u << 20) /* converted bytes per write */

int rows_writer_init(struct rows_writer *rw, int n_threads, int64_t max_row, pb_err *err)
{
    rw->buf = NULL;
    rw->tmp = NULL;
    rw->max_row = max_row < 1 ? 1 : max_row;
    int rc = pool_create(n_threads > 0 ? n_threads : pool_cpu_count(), &rw->pool, err);
    if (rc)
        return rc;
    /* a chunk holds at least one row of the widest type (F32) */
    rw->buf = malloc(CHUNK_BYTES + (size_t)rw->max_row * sizeof(float));
    rw->tmp = malloc((size_t)pool_size(rw->pool) * (size_t)rw->max_row * sizeof *rw->tmp);
    if (!rw->buf || !rw->tmp) {
        rows_writer_free(rw);
        return pb_fail(err, PB_ENOMEM, "out of memory for conversion buffers");
    }
    return PB_OK;
}

void rows_writer_free(struct rows_writer *rw)
{
    pool_free(rw->pool);
    free(rw->buf);
    free(rw->tmp);
    rw->pool = NULL;
    rw->buf = NULL;
    rw->tmp = NULL;
}

struct rows_job {
    rows_source_fn src;
    void *ctx;
    int64_t r0, n_rows, n;
    const struct pb_type_traits *tr;
    size_t row_bytes;
    uint8_t *dst;
    float *tmp;
};

static void rows_worker(void *arg, int ith, int nth)
{
    const struct rows_job *j = arg;
    float *row = j->tmp + (size_t)ith * (size_t)j->n;
    long a, b;
    pool_range((long)j->n_rows, ith, nth, &a, &b);
    for (long i = a; i < b; i++) {
        j->src(j->ctx, j->r0 + i, row, j->n);
        j->tr->from_float(row, j->dst + (size_t)i * j->row_bytes, j->n);
    }
}

/* The first period rows, converted once, written again and again. */
static int write_periodic(struct rows_writer *rw, struct gguf_writer *w, rows_source_fn src, void *ctx,
                          int64_t n_rows, int64_t n, enum pb_type t, int64_t period, pb_err *err)
{
    const size_t row_bytes = pb_row_size(t, n);
    uint8_t *tile = malloc((size_t)period * row_bytes);
    if (!tile)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    struct rows_job j = {src, ctx, 0, period, n, pb_type_get(t), row_bytes, tile, rw->tmp};
    pool_run(rw->pool, rows_worker, &j);
    int rc = PB_OK;
    for (int64_t r = 0; r < n_rows && rc == PB_OK; r += period) {
        const int64_t k = n_rows - r < period ? n_rows - r : period;
        rc = gguf_writer_write(w, tile, (size_t)k * row_bytes, err);
    }
    free(tile);
    return rc;
}

int rows_write(struct rows_writer *rw, struct gguf_writer *w, rows_source_fn src, void *ctx, int64_t n_rows,
               int64_t n, enum pb_type t, int64_t period, pb_err *err)
{
    if (n > rw->max_row)
        return pb_fail(err, PB_EINVAL, "row of %lld elements is longer than the buffers (%lld)", (long long)n,
                       (long long)rw->max_row);
    if (period > 0 && period < n_rows)
        return write_periodic(rw, w, src, ctx, n_rows, n, t, period, err);
    const size_t row_bytes = pb_row_size(t, n);
    int64_t per = row_bytes ? (int64_t)(CHUNK_BYTES / row_bytes) : n_rows;
    if (per < 1)
        per = 1;
    for (int64_t r = 0; r < n_rows; r += per) {
        int64_t k = n_rows - r < per ? n_rows - r : per;
        struct rows_job j = {src, ctx, r, k, n, pb_type_get(t), row_bytes, rw->buf, rw->tmp};
        pool_run(rw->pool, rows_worker, &j);
        int rc = gguf_writer_write(w, rw->buf, (size_t)k * row_bytes, err);
        if (rc)
            return rc;
    }
    return PB_OK;
}
