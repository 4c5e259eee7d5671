#define _GNU_SOURCE
#include "base/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

struct pool {
    int n;                 /* threads including the caller */
    pthread_t *threads;    /* n - 1 workers */
    pthread_mutex_t mu;
    pthread_cond_t start;  /* signalled when a new job (generation) begins */
    pthread_cond_t done;   /* signalled when the last worker finishes */
    unsigned long generation;
    int pending;           /* workers still running the current job */
    int quit;
    pool_fn fn;
    void *ctx;
    struct worker_arg {
        struct pool *p;
        int ith;
    } *args;               /* one per worker, alive as long as the pool */
};

static void *worker_main(void *arg)
{
    const struct worker_arg *wa = arg;
    struct pool *p = wa->p;
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->generation == seen && !p->quit)
            pthread_cond_wait(&p->start, &p->mu);
        if (p->quit) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->generation;
        pool_fn fn = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);

        fn(ctx, wa->ith, p->n);

        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

int pool_create(int n_threads, struct pool **out, pb_err *err)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return pb_fail(err, PB_EINVAL, "thread count %d out of range 1..1024", n_threads);
    struct pool *p = calloc(1, sizeof *p);
    if (!p)
        return pb_fail(err, PB_ENOMEM, "out of memory creating thread pool");
    p->n = 1; /* grows as workers start, so pool_free joins only those */
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        p->args = calloc((size_t)n_threads - 1, sizeof *p->args);
        if (!p->threads || !p->args) {
            pool_free(p);
            return pb_fail(err, PB_ENOMEM, "out of memory creating thread pool");
        }
        for (int i = 1; i < n_threads; i++) {
            p->args[i - 1].p = p;
            p->args[i - 1].ith = i;
            if (pthread_create(&p->threads[i - 1], NULL, worker_main, &p->args[i - 1]) != 0) {
                pool_free(p);
                return pb_fail(err, PB_ENOMEM, "cannot start thread %d of %d", i, n_threads);
            }
            p->n = i + 1;
        }
    }
    *out = p;
    return PB_OK;
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    if (p->threads) {
        pthread_mutex_lock(&p->mu);
        p->quit = 1;
        pthread_cond_broadcast(&p->start);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n; i++)
            pthread_join(p->threads[i - 1], NULL);
    }
    free(p->threads);
    free(p->args);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int pool_size(const struct pool *p)
{
    return p ? p->n : 1;
}

void pool_run(struct pool *p, pool_fn fn, void *ctx)
{
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->pending = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);

    fn(ctx, 0, p->n);

    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int pool_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
