/* Converting many rows to a tensor type on all threads (tools only). */
#ifndef PLUMB_TOOLS_ROWS_H
#define PLUMB_TOOLS_ROWS_H

#include "base/pool.h"
#include "quant/types.h"

#include <stdint.h>

/* Fills row r (n floats) of the source. Must be safe to call from several
 * threads for different rows. */
typedef void (*rows_source_fn)(void *ctx, int64_t r, float *dst, int64_t n);

/* dst receives rows [r0, r0 + n_rows) of length n converted to type t,
 * packed (pb_row_size(t, n) bytes each). tmp holds pool_size * n floats. */
void rows_convert(struct pool *pool, rows_source_fn src, void *ctx, int64_t r0, int64_t n_rows, int64_t n,
                  enum pb_type t, void *dst, float *tmp);

#endif
