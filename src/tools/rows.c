#include "tools/rows.h"

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

void rows_convert(struct pool *pool, rows_source_fn src, void *ctx, int64_t r0, int64_t n_rows, int64_t n,
                  enum pb_type t, void *dst, float *tmp)
{
    struct rows_job j = {src, ctx, r0, n_rows, n, pb_type_get(t), pb_row_size(t, n), dst, tmp};
    pool_run(pool, rows_worker, &j);
}
