/* A fixed pool of worker threads that run one parallel job at a time.
 *
 * pool_run(p, fn, ctx) calls fn(ctx, ith, nth) once for each ith in
 * [0, nth) where nth = pool_size(p), the calling thread taking ith = 0, and
 * returns when every call has returned. Work is split by the callee (rows,
 * heads, ...), so the pool knows nothing about tensors.
 *
 * One pool serves a whole process: several callers (the contexts of
 * several served models, a model loading beside them) may share it, and
 * their jobs then run one after the other (pool_run takes a lock), so the
 * process never has more busy threads than the pool has. A job must not
 * call pool_run on its own pool.
 *
 * Workers spin on an atomic job counter between jobs (a fraction of a
 * microsecond to start one) and sleep on a condition variable after about
 * a millisecond without work.
 */
#ifndef PLUMB_BASE_POOL_H
#define PLUMB_BASE_POOL_H

#include "base/err.h"

struct pool;

typedef void (*pool_fn)(void *ctx, int ith, int nth);

/* n_threads >= 1 (1 means no worker threads: pool_run calls fn inline). */
int pool_create(int n_threads, struct pool **out, pb_err *err);
void pool_free(struct pool *p);
int pool_size(const struct pool *p);
void pool_run(struct pool *p, pool_fn fn, void *ctx);

/* Splits [0, n) evenly into nth parts; part ith is [*begin, *end). */
static inline void pool_range(long n, int ith, int nth, long *begin, long *end)
{
    long per = n / nth, extra = n % nth;
    *begin = ith * per + (ith < extra ? ith : extra);
    *end = *begin + per + (ith < extra ? 1 : 0);
}

/* Logical CPUs this process may run on (at least 1). */
int pool_cpu_count(void);

#endif
