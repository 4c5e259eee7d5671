/* Converting tensors row by row to a type and writing them, on all
 * threads, a chunk at a time (tools only). */
#ifndef PLUMB_TOOLS_ROWS_H
#define PLUMB_TOOLS_ROWS_H

#include "base/pool.h"
#include "gguf/gguf.h"
#include "quant/types.h"

#include <stdint.h>

/* Fills row r (n floats) of the source. Must be safe to call from several
 * threads for different rows. */
typedef void (*rows_source_fn)(void *ctx, int64_t r, float *dst, int64_t n);

struct rows_writer {
    struct pool *pool;
    uint8_t *buf; /* one chunk of converted rows */
    float *tmp;   /* a float row per thread */
    int64_t max_row;
};

/* Buffers for rows up to max_row elements; n_threads 0 means all CPUs. */
int rows_writer_init(struct rows_writer *rw, int n_threads, int64_t max_row, pb_err *err);
void rows_writer_free(struct rows_writer *rw);

/* Converts rows [0, n_rows) of n elements from src to type t and appends
 * them to w (the current tensor's data). With period > 0, only the first
 * period rows are converted and repeat after that (row r is row r %
 * period). */
int rows_write(struct rows_writer *rw, struct gguf_writer *w, rows_source_fn src, void *ctx, int64_t n_rows,
               int64_t n, enum pb_type t, int64_t period, pb_err *err);

#endif
