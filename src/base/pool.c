/* Thread pool: workers spin briefly on a job counter, then sleep.
 *
 * A forward pass runs a few hundred short parallel jobs per token (every
 * matrix product, attention, ...), each a few tens of microseconds on a
 * small model. Waking a sleeping thread costs several microseconds, so
 * workers first spin on the job counter (with the CPU's pause hint) and
 * only block on the condition variable after about a millisecond without
 * work: a tight generation loop never sleeps, an idle chat session does
 * not burn a core.
 *
 * Publishing a job: fn/ctx are written, then the generation counter is
 * incremented with release order; a worker that reads the new generation
 * (acquire) sees fn/ctx. A worker about to sleep registers in `sleepers`
 * and re-checks the generation under the mutex; the caller checks
 * `sleepers` after incrementing the generation (both sequentially
 * consistent), so one of the two always sees the other and no wake-up is
 * lost.
 */
#define _GNU_SOURCE
#include "base/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define SPIN_NS 1000000L /* spin this long for the next job before sleeping */

struct worker_arg {
    struct pool *p;
    int ith;
};

struct pool {
    int n;                   /* threads including the caller */
    pthread_t *threads;      /* n - 1 workers */
    struct worker_arg *args; /* one per worker */
    pool_fn fn;
    void *ctx;
    atomic_ulong generation; /* incremented once per job */
    atomic_int pending;      /* workers still running the current job */
    atomic_int sleepers;     /* workers blocked (or about to block) on wake */
    atomic_int quit;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_mutex_t run_mu;  /* one job at a time, whoever the caller */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static long elapsed_ns(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000000000L + (t.tv_nsec - t0->tv_nsec);
}

/* Waits until the generation differs from seen; returns the new one. */
static unsigned long wait_job(struct pool *p, unsigned long seen)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned spins = 1;; spins++) {
        unsigned long g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&p->quit, memory_order_relaxed))
            return g;
        cpu_relax();
        if (spins % 1024 == 0) {
            if (elapsed_ns(&t0) > SPIN_NS)
                break;
            sched_yield(); /* lets the thread we wait for run if it shares our CPU */
        }
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    unsigned long g;
    while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->quit))
        pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *arg)
{
    const struct worker_arg *wa = arg;
    struct pool *p = wa->p;
    unsigned long seen = 0;
    for (;;) {
        seen = wait_job(p, seen);
        if (atomic_load(&p->quit))
            return NULL;
        p->fn(p->ctx, wa->ith, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
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
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->quit, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_mutex_init(&p->run_mu, NULL);
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
        atomic_store(&p->quit, 1);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n; i++)
            pthread_join(p->threads[i - 1], NULL);
    }
    free(p->threads);
    free(p->args);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run_mu);
    free(p);
}

int pool_size(const struct pool *p)
{
    return p ? p->n : 1;
}

void pool_run(struct pool *p, pool_fn fn, void *ctx)
{
    if (!p) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->run_mu);
    if (p->n == 1) {
        fn(ctx, 0, 1);
        pthread_mutex_unlock(&p->run_mu);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: see the header comment */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }

    fn(ctx, 0, p->n);

    for (unsigned spins = 1; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; spins++) {
        cpu_relax();
        if (spins % 4096 == 0)
            sched_yield(); /* more threads than CPUs: let the workers finish */
    }
    pthread_mutex_unlock(&p->run_mu);
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
