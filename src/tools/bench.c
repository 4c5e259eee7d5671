/* plumb bench: prompt-processing and generation speed, the way llama-bench
 * measures them, with the machine's memory bandwidth measured in the same
 * run (generation on a CPU is bounded by it). */
#define _GNU_SOURCE
#include "tools/tools.h"

#include "base/rng.h"
#include "base/sys.h"
#include "kernels/kernels.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BW_BYTES (512u << 20) /* far beyond any last-level cache here */

static int load_model(const struct bench_params *p, struct bench_report *r, struct model **m, pb_err *err)
{
    if (p->model_path) {
        const char *base = p->model_label ? NULL : strrchr(p->model_path, '/');
        snprintf(r->model, sizeof r->model, "%s",
                 p->model_label ? p->model_label : base ? base + 1 : p->model_path);
        struct stat st;
        if (stat(p->model_path, &st) == 0)
            r->model_bytes = (uint64_t)st.st_size;
        return model_load(p->model_path, m, err);
    }
    snprintf(r->model, sizeof r->model, "%s %s (synthesized)", p->shape.name, pb_ftype_name(p->ftype));
    int fd = memfd_create("plumb-bench", MFD_CLOEXEC);
    if (fd < 0)
        return pb_fail(err, PB_EIO, "cannot create an in-memory file for the synthesized model");
    struct synth_params sp = {
        .shape = p->shape,
        .ftype = p->ftype,
        .seed = 1234,
        .n_threads = p->n_threads,
        .progress = p->progress,
        .user = p->user,
    };
    uint64_t written;
    int rc = synth_write_fd(fd, &sp, &written, err);
    struct stat st;
    if (rc == PB_OK && fstat(fd, &st) == 0)
        r->model_bytes = (uint64_t)st.st_size;
    /* discardable: the image's pages are freed as the weights are repacked */
    if (rc == PB_OK)
        rc = model_load_fd(fd, r->model, true, m, err);
    close(fd);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One repetition: seconds to evaluate n tokens (all at once, or one by one). */
static int run_once(struct model_ctx *c, const int32_t *tokens, int n, bool one_by_one, float *logits, double *secs,
                    pb_err *err)
{
    model_ctx_truncate(c, 0);
    double t0 = sys_now();
    int rc = PB_OK;
    if (one_by_one) {
        for (int i = 0; i < n && rc == PB_OK; i++)
            rc = model_eval(c, tokens + i, 1, logits, err);
    } else {
        rc = model_eval(c, tokens, n, logits, err);
    }
    *secs = sys_now() - t0;
    return rc;
}

static int run_test(struct model_ctx *c, const int32_t *tokens, struct bench_test *t, int reps, float *logits,
                    pb_err *err)
{
    double *rate = malloc((size_t)reps * sizeof *rate);
    if (!rate)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    int rc = PB_OK;
    for (int i = 0; i < reps && rc == PB_OK; i++) {
        double s;
        rc = run_once(c, tokens, t->n_tokens, t->generation, logits, &s, err);
        rate[i] = s > 0 ? t->n_tokens / s : 0;
    }
    if (rc == PB_OK) {
        qsort(rate, (size_t)reps, sizeof *rate, cmp_double);
        t->reps = reps;
        t->t_s_min = rate[0];
        t->t_s_max = rate[reps - 1];
        t->t_s_median = reps % 2 ? rate[reps / 2] : (rate[reps / 2 - 1] + rate[reps / 2]) / 2;
    }
    free(rate);
    return rc;
}

int bench_run(const struct bench_params *p, struct bench_report *r, pb_err *err)
{
    memset(r, 0, sizeof *r);
    if (p->n_pp + p->n_tg == 0)
        return pb_fail(err, PB_EINVAL, "no tests: give -p and/or -n lengths above 0");
    if (p->n_pp > BENCH_MAX_TESTS || p->n_tg > BENCH_MAX_TESTS)
        return pb_fail(err, PB_EINVAL, "at most %d lengths each for -p and -n", BENCH_MAX_TESTS);
    const int reps = p->reps > 0 ? p->reps : 1;
    r->n_threads = p->n_threads > 0 ? p->n_threads : pool_cpu_count();
    r->kernels = kern_level_name(kern_level());

    /* bandwidth before the model takes memory, and again at the end */
    int rc = membw_measure(r->n_threads, BW_BYTES, &r->bandwidth_before_gbs, err);
    if (rc)
        return rc;

    struct model *m = NULL;
    struct model_ctx *c = NULL;
    int32_t *tokens = NULL;
    float *logits = NULL;
    double t0 = sys_now();
    if ((rc = load_model(p, r, &m, err)))
        goto done;
    r->load_s = sys_now() - t0;
    r->weight_bytes = model_weight_bytes(m);
    const struct gguf_file *f = model_gguf(m);
    int64_t ft;
    if (gguf_get_int(f, "general.file_type", &ft, NULL) == 1 && pb_ftype_name(ft))
        snprintf(r->ftype, sizeof r->ftype, "%s", pb_ftype_name(ft));
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++)
        r->n_params += (uint64_t)gguf_tensor_nelements(gguf_tensor(f, i));

    int max_pp = 1, max_tg = 1;
    for (int i = 0; i < p->n_pp; i++)
        max_pp = p->pp[i] > max_pp ? p->pp[i] : max_pp;
    for (int i = 0; i < p->n_tg; i++)
        max_tg = p->tg[i] > max_tg ? p->tg[i] : max_tg;
    const int n_tok = max_pp > max_tg ? max_pp : max_tg;
    const struct model_hparams *hp = model_hparams(m);
    struct model_ctx_params cp = {.n_ctx = n_tok, .n_batch = max_pp, .n_threads = r->n_threads, .kv_type = p->kv_type};
    if ((rc = model_ctx_create(m, &cp, &c, err)))
        goto done;
    r->kv_bytes = model_ctx_kv_bytes(c);
    tokens = malloc((size_t)n_tok * sizeof *tokens);
    logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    if (!tokens || !logits) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto done;
    }
    struct rng g;
    rng_seed(&g, 42);
    for (int i = 0; i < n_tok; i++)
        tokens[i] = (int32_t)(rng_u64(&g) % (uint64_t)hp->n_vocab);

    /* warm-up: fault in every page, spin up the threads */
    double s;
    if ((rc = run_once(c, tokens, max_pp < 32 ? max_pp : 32, false, logits, &s, err)) ||
        (rc = run_once(c, tokens, 4, true, logits, &s, err)))
        goto done;

    for (int k = 0; k < 2; k++) {
        int n = k == 0 ? p->n_pp : p->n_tg;
        for (int i = 0; i < n && rc == PB_OK; i++) {
            struct bench_test *t = &r->tests[r->n_tests];
            t->generation = k == 1;
            t->n_tokens = k == 0 ? p->pp[i] : p->tg[i];
            snprintf(t->name, sizeof t->name, "%s%d", k == 0 ? "pp" : "tg", t->n_tokens);
            if ((rc = run_test(c, tokens, t, reps, logits, err)))
                break;
            r->n_tests++;
            if (p->on_test)
                p->on_test(p->user, t);
        }
    }
    r->peak_rss_bytes = sys_peak_rss();
done:
    free(tokens);
    free(logits);
    model_ctx_free(c);
    model_free(m);
    if (rc)
        return rc;
    if ((rc = membw_measure(r->n_threads, BW_BYTES, &r->bandwidth_after_gbs, err)))
        return rc;
    /* Another process on the machine can only lower a measurement, so the
     * higher of the two is the better estimate of what the machine can do
     * (and the stricter denominator for the share below). */
    r->bandwidth_gbs = r->bandwidth_before_gbs > r->bandwidth_after_gbs ? r->bandwidth_before_gbs : r->bandwidth_after_gbs;
    for (int i = 0; i < r->n_tests; i++)
        if (r->tests[i].generation) {
            r->tg_bandwidth_share = (double)r->weight_bytes * r->tests[i].t_s_median / (r->bandwidth_gbs * 1e9);
            break;
        }
    return PB_OK;
}
