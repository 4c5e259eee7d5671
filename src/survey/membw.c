/* Memory bandwidth: how fast n threads can stream a buffer much larger
 * than the caches. The figure generation speed is compared with: a token
 * reads every weight once, so bytes per token x tokens per second cannot
 * exceed it. Two kernels: a pure read (what generation does) and STREAM's
 * triad a[i] = b[i] + s * c[i] (reads and writes; counted as STREAM counts
 * it, 24 bytes per element, without the write-allocate traffic).
 *
 * Measured in a child process so that its buffer never counts in the
 * caller's peak memory (the benchmark reports that too).
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "plumb/survey.h"

#include "base/sys.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct reader {
    enum membw_kind kind;
    const uint64_t *p;  /* read: the part to read */
    double *a;          /* triad: a = b + s * c over n elements */
    const double *b, *c;
    size_t n;
    uint64_t sum;
    pthread_barrier_t *go;
};

static void triad_part(struct reader *r)
{
    double *restrict a = r->a;
    const double *restrict b = r->b, *restrict c = r->c;
    for (size_t i = 0; i < r->n; i++)
        a[i] = b[i] + 3.0 * c[i];
    r->sum = (uint64_t)a[r->n / 2];
}

static void *read_part(void *arg)
{
    struct reader *r = arg;
    pthread_barrier_wait(r->go);
    if (r->kind == MEMBW_TRIAD) {
        triad_part(r);
        return NULL;
    }
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= r->n; i += 4) {
        /* software prefetch well ahead, as the matrix kernels do: the
         * hardware prefetchers alone leave bandwidth unused */
        if (i % 8 == 0)
            __builtin_prefetch(r->p + i + 1024);
        a += r->p[i];
        b += r->p[i + 1];
        c += r->p[i + 2];
        d += r->p[i + 3];
    }
    r->sum = a + b + c + d;
    return NULL;
}

/* Median GB/s of `passes` runs of the kernel over the buffer by n threads
 * (triad: the buffer holds its three arrays one after the other). */
static double measure(enum membw_kind kind, uint64_t *buf, size_t words, int n_threads, int passes)
{
    double best[16];
    if (passes > 16)
        passes = 16;
    pthread_t th[64];
    struct reader rd[64];
    if (n_threads > 64)
        n_threads = 64;
    for (int p = 0; p < passes; p++) {
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, (unsigned)n_threads + 1);
        /* elements per thread: of the buffer (read) or of each array (triad) */
        size_t arr = words / 3, per = (kind == MEMBW_TRIAD ? arr : words) / (size_t)n_threads;
        double *a = (double *)buf, *b = a + arr, *c = b + arr;
        int started = 0;
        for (int t = 0; t < n_threads; t++) {
            size_t o = per * (size_t)t;
            rd[t] = (struct reader){kind, buf + o, a + o, b + o, c + o, per, 0, &go};
            if (pthread_create(&th[t], NULL, read_part, &rd[t]) != 0)
                break;
            started++;
        }
        if (started < n_threads) { /* release the ones that started and give up */
            for (int t = started; t < n_threads; t++)
                pthread_barrier_wait(&go);
            for (int t = 0; t < started; t++)
                pthread_join(th[t], NULL);
            pthread_barrier_destroy(&go);
            return 0;
        }
        double t0 = sys_now();
        pthread_barrier_wait(&go);
        for (int t = 0; t < n_threads; t++)
            pthread_join(th[t], NULL);
        double s = sys_now() - t0;
        pthread_barrier_destroy(&go);
        size_t bytes = per * (size_t)n_threads * (kind == MEMBW_TRIAD ? 24 : 8);
        best[p] = s > 0 ? (double)bytes / s / 1e9 : 0;
    }
    /* median */
    for (int i = 1; i < passes; i++)
        for (int j = i; j > 0 && best[j - 1] > best[j]; j--) {
            double x = best[j];
            best[j] = best[j - 1];
            best[j - 1] = x;
        }
    return best[passes / 2];
}

int membw_measure(int n_threads, size_t bytes, double *gbs, pb_err *err)
{
    return membw_measure_kind(MEMBW_READ, n_threads, bytes, 5, gbs, err);
}

int membw_measure_kind(enum membw_kind kind, int n_threads, size_t bytes, int passes, double *gbs, pb_err *err)
{
    *gbs = 0;
    if (passes < 1)
        passes = 1;
    if (n_threads < 1)
        n_threads = 1;
    int fds[2];
    if (pipe(fds) != 0)
        return pb_fail(err, PB_EIO, "cannot measure memory bandwidth: no pipe");
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return pb_fail(err, PB_EIO, "cannot measure memory bandwidth: fork failed");
    }
    if (pid == 0) { /* the child: measure, report, leave */
        close(fds[0]);
        double r = 0;
        size_t words = bytes / 8;
        uint64_t *buf = sys_alloc_large(words * 8);
        if (buf) {
            memset(buf, 0, words * 8); /* fault every page in before timing */
            r = measure(kind, buf, words, n_threads, passes);
        }
        ssize_t w = write(fds[1], &r, sizeof r);
        (void)w;
        _exit(0);
    }
    close(fds[1]);
    double r = 0;
    ssize_t got = read(fds[0], &r, sizeof r);
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    if (got != (ssize_t)sizeof r || r <= 0)
        return pb_fail(err, PB_EIO, "cannot measure memory bandwidth (no memory for a %zu MiB buffer?)", bytes >> 20);
    *gbs = r;
    return PB_OK;
}
