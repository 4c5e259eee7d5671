/* plumb bench: prompt-processing and generation speed, the way llama-bench
 * measures them, with the machine's memory bandwidth measured in the same
 * run (generation on a CPU is bounded by it). */
#define _GNU_SOURCE
#include "plumb/bench.h"

#include "base/err.h"

#include "base/rng.h"
#include "base/sys.h"
#include "plumb/engine.h"
#include "plumb/survey.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BW_BYTES (512u << 20) /* far beyond any last-level cache here */

static int open_engine(const struct bench_params *p, const struct engine_params *ep, struct bench_report *r,
                       struct engine **e, pb_err *err)
{
    if (p->model_path) {
        const char *base = p->model_label ? NULL : strrchr(p->model_path, '/');
        snprintf(r->model, sizeof r->model, "%s",
                 p->model_label ? p->model_label : base ? base + 1 : p->model_path);
        struct stat st;
        if (stat(p->model_path, &st) == 0)
            r->model_bytes = (uint64_t)st.st_size;
        return engine_open(p->model_path, ep, e, err);
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
        /* rows repeat after 256: the same bytes stream through the kernels
         * (speed does not depend on the values), in a fraction of the
         * quantizing time, which is what made a 30B shape take an hour */
        .distinct_rows = 256,
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
        rc = engine_open_fd(fd, r->model, true, ep, e, err);
    close(fd);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Where a generation's time went: the whole, the forward passes, and of
 * those each part (the engine's counters around each request; the rest of
 * the whole is sampling and scheduling). */
struct step_split {
    double wall, forward;
    double parts[PB_PART_COUNT];
    uint64_t tokens; /* evaluated */
};

/* One repetition through the engine, from an empty cache (random tokens:
 * no prefix is shared with the last run): tokens per second of a prompt
 * of n tokens (pp), or of n generated tokens after a one-token prompt
 * (tg: n + 1 tokens are sampled, n of them evaluated one by one; sampling
 * is part of what is measured). */
static int run_once(struct engine *e, struct rng *g, int32_t n_vocab, int32_t *tokens, int n, bool generation,
                    const char *grammar, struct step_split *split, double *tps, pb_err *err)
{
    struct engine_request_params rp = engine_request_defaults();
    rp.sampling.temp = 0;
    rp.ignore_eog = true;
    rp.grammar = grammar;
    const int n_prompt = generation ? 1 : n;
    /* under a grammar an answer ends when the grammar does: generations
     * follow each other until n tokens were evaluated */
    int done = 0;
    double t = 0;
    for (int round = 0; done < n && round < 1000; round++) {
        for (int i = 0; i < n_prompt; i++)
            tokens[i] = (int32_t)(rng_u64(g) % (uint64_t)n_vocab);
        rp.n_predict = generation ? n - done + 1 : 1;
        struct engine_result res;
        struct engine_stats st0, st1;
        if (split)
            engine_get_stats(e, &st0);
        const double w0 = sys_now();
        int rc = engine_generate(e, tokens, (size_t)n_prompt, &rp, NULL, &res, err);
        if (rc)
            return rc;
        if (split) {
            split->wall += sys_now() - w0;
            engine_get_stats(e, &st1);
            split->forward += st1.step_seconds - st0.step_seconds;
            for (int k = 0; k < PB_PART_COUNT; k++)
                split->parts[k] += st1.part_seconds[k] - st0.part_seconds[k];
            split->tokens += st1.step_tokens - st0.step_tokens;
        }
        if (!grammar && res.n_gen != rp.n_predict)
            return pb_fail(err, PB_EIO, "a bench run stopped after %d of %d tokens (%s)", res.n_gen, rp.n_predict,
                           engine_finish_name(res.finish));
        if (!generation) {
            done = n;
            t = res.t_prompt;
        } else if (res.n_gen > 1) {
            done += res.n_gen - 1; /* evaluated between the first sampled token and the last */
            t += res.t_gen;
        }
    }
    if (done < n)
        return pb_fail(err, PB_EIO, "the grammar's answers stayed too short to generate %d tokens", n);
    *tps = t > 0 ? done / t : 0;
    return PB_OK;
}

static void summarize(struct bench_test *t, double *rate, int reps)
{
    qsort(rate, (size_t)reps, sizeof *rate, cmp_double);
    t->reps = reps;
    t->t_s_min = rate[0];
    t->t_s_max = rate[reps - 1];
    t->t_s_median = reps % 2 ? rate[reps / 2] : (rate[reps / 2 - 1] + rate[reps / 2]) / 2;
}

/* Runs test t reps times; with twin (its constrained copy) the two
 * alternate, repetition by repetition, so that other load on the machine
 * weighs on both alike. */
static int run_test(struct engine *e, struct rng *g, int32_t n_vocab, int32_t *tokens, struct bench_test *t,
                    struct bench_test *twin, int reps, const char *grammar, struct step_split *split, pb_err *err)
{
    double *rate = malloc(2 * (size_t)reps * sizeof *rate), *rate2 = rate + reps;
    if (!rate)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    int rc = PB_OK;
    for (int i = 0; i < reps && rc == PB_OK; i++) {
        rc = run_once(e, g, n_vocab, tokens, t->n_tokens, t->generation, NULL, split, &rate[i], err);
        if (!rc && twin)
            rc = run_once(e, g, n_vocab, tokens, twin->n_tokens, true, grammar, NULL, &rate2[i], err);
    }
    if (rc == PB_OK) {
        summarize(t, rate, reps);
        if (twin)
            summarize(twin, rate2, reps);
    }
    free(rate);
    return rc;
}

/* ---- embeddings ---- */

/* Short texts of 10 to 16 tokens, made of common words (fixed seed). */
static int make_texts(struct engine *e, int n, int32_t **toks, size_t *n_toks, pb_err *err)
{
    static const char *const words[] = {"the", "little", "dog", "ran", "over", "a", "green", "hill", "while", "her",
                                        "friend", "read", "an", "old", "book", "about", "ships", "and", "stars"};
    struct rng g;
    rng_seed(&g, 7);
    for (int i = 0; i < n; i++) {
        char text[256];
        size_t at = 0;
        int rc;
        n_toks[i] = 0;
        for (int w = 0; w < 40; w++) {
            const char *word = words[rng_u64(&g) % (sizeof words / sizeof words[0])];
            at += (size_t)snprintf(text + at, sizeof text - at, "%s%s", at ? " " : "", word);
            free(toks[i]);
            toks[i] = NULL;
            if ((rc = tok_encode(engine_tokenizer(e), text, at, true, false, &toks[i], &n_toks[i], err)))
                return rc;
            if (n_toks[i] >= 10 + (size_t)(i % 7))
                break;
        }
    }
    return PB_OK;
}

static int bench_embed(const struct bench_params *p, struct bench_report *r, pb_err *err)
{
    int max_b = 1;
    for (int i = 0; i < p->n_embed; i++)
        max_b = p->embed[i] > max_b ? p->embed[i] : max_b;
    if (max_b > ENGINE_MAX_SLOTS)
        return pb_fail(err, PB_EINVAL, "at most %d texts per batch", ENGINE_MAX_SLOTS);
    const int reps = p->reps > 0 ? p->reps : 1;
    struct engine_params ep = engine_defaults();
    ep.n_slots = max_b;
    ep.n_ctx = 32;              /* short texts */
    ep.n_batch = max_b * 24;    /* a batch of them in one forward pass */
    ep.n_threads = r->n_threads;
    ep.kv_type = p->kv_type;
    ep.ignore_memory = true;
    struct engine *e = NULL;
    int32_t **toks = calloc((size_t)max_b, sizeof *toks);
    size_t *n_toks = calloc((size_t)max_b, sizeof *n_toks);
    double *rate = calloc((size_t)reps, sizeof *rate), *irate = calloc((size_t)reps, sizeof *irate);
    float *out = NULL;
    int rc = !toks || !n_toks || !rate || !irate ? pb_fail(err, PB_ENOMEM, "out of memory") : PB_OK;
    if (!rc)
        rc = open_engine(p, &ep, r, &e, err);
    if (!rc) {
        struct engine_info info;
        engine_get_info(e, &info);
        r->load_s = info.load_s;
        r->weight_bytes = info.weight_bytes;
        r->n_params = info.n_params;
        r->kv_bytes = info.mem.kv;
        snprintf(r->ftype, sizeof r->ftype, "%s", info.file_type);
        if (!(out = malloc((size_t)max_b * (size_t)engine_embed_dim(e) * sizeof *out)))
            rc = pb_fail(err, PB_ENOMEM, "out of memory");
    }
    if (!rc)
        rc = make_texts(e, max_b, toks, n_toks, err);
    const struct engine_embed_params emp = {.pooling = ENGINE_POOL_DEFAULT, .normalize = true};
    if (!rc) /* warm-up */
        rc = engine_embed(e, (const int32_t *const *)toks, n_toks, max_b, &emp, out, err);
    for (int i = 0; i < p->n_embed && !rc; i++) {
        struct bench_test *t = &r->tests[r->n_tests];
        const int b = p->embed[i];
        t->embed_batch = b;
        snprintf(t->name, sizeof t->name, "embed b%d", b);
        /* at least 64 texts a repetition, for a timing above the noise */
        const int calls = b >= 64 ? 1 : (64 + b - 1) / b;
        size_t tokens = 0;
        for (int k = 0; k < b; k++)
            tokens += n_toks[k];
        t->n_tokens = (int)tokens;
        for (int rep = 0; rep < reps && !rc; rep++) {
            const double t0 = sys_now();
            for (int k = 0; k < calls && !rc; k++)
                rc = engine_embed(e, (const int32_t *const *)toks, n_toks, b, &emp, out, err);
            const double dt = sys_now() - t0;
            rate[rep] = dt > 0 ? (double)tokens * calls / dt : 0;
            irate[rep] = dt > 0 ? (double)b * calls / dt : 0;
        }
        if (rc)
            break;
        struct bench_test texts = *t;
        summarize(t, rate, reps);
        summarize(&texts, irate, reps);
        t->inputs_s_median = texts.t_s_median;
        r->n_tests++;
        if (p->on_test)
            p->on_test(p->user, t);
    }
    r->peak_rss_bytes = pb_peak_rss();
    for (int k = 0; toks && k < max_b; k++)
        free(toks[k]);
    free(toks);
    free(n_toks);
    free(rate);
    free(irate);
    free(out);
    engine_close(e);
    return rc;
}

int bench_run(const struct bench_params *p, struct bench_report *r, pb_err *err)
{
    memset(r, 0, sizeof *r);
    if (p->n_embed > 0) {
        if (p->n_embed > BENCH_MAX_TESTS)
            return pb_fail(err, PB_EINVAL, "at most %d embedding batch sizes", BENCH_MAX_TESTS);
        r->n_threads = p->n_threads > 0 ? p->n_threads : engine_cpu_count();
        r->kernels = engine_kernels();
        return bench_embed(p, r, err);
    }
    if (p->n_pp + p->n_tg == 0)
        return pb_fail(err, PB_EINVAL, "no tests: give -p and/or -n lengths above 0");
    if (p->n_pp > BENCH_MAX_TESTS || p->n_tg > BENCH_MAX_TESTS)
        return pb_fail(err, PB_EINVAL, "at most %d lengths each for -p and -n", BENCH_MAX_TESTS);
    const int reps = p->reps > 0 ? p->reps : 1;
    r->n_threads = p->n_threads > 0 ? p->n_threads : engine_cpu_count();
    r->kernels = engine_kernels();

    /* bandwidth before the model takes memory, and again at the end */
    int rc = membw_measure(r->n_threads, BW_BYTES, &r->bandwidth_before_gbs, err);
    if (rc)
        return rc;

    int max_pp = 1, max_tg = 1;
    for (int i = 0; i < p->n_pp; i++)
        max_pp = p->pp[i] > max_pp ? p->pp[i] : max_pp;
    for (int i = 0; i < p->n_tg; i++)
        max_tg = p->tg[i] > max_tg ? p->tg[i] : max_tg;
    /* a prompt of max_pp (and one token for its answer), or one token and
     * max_tg + 1 generated: every test fits one slot, a prompt one batch */
    const int n_tok = max_pp + 1 > max_tg + 2 ? max_pp + 1 : max_tg + 2;
    struct engine_params ep = engine_defaults();
    ep.n_ctx = n_tok;
    ep.n_batch = max_pp;
    ep.n_threads = r->n_threads;
    ep.kv_type = p->kv_type;
    ep.ignore_memory = true; /* a benchmark measures what happens */

    struct engine *e = NULL;
    int32_t *tokens = NULL;
    if ((rc = open_engine(p, &ep, r, &e, err)))
        goto done;
    struct engine_info info;
    engine_get_info(e, &info);
    r->load_s = info.load_s;
    r->weight_bytes = info.weight_bytes;
    r->n_params = info.n_params;
    r->kv_bytes = info.mem.kv;
    snprintf(r->ftype, sizeof r->ftype, "%s", info.file_type);
    tokens = malloc((size_t)n_tok * sizeof *tokens);
    if (!tokens) {
        rc = pb_fail(err, PB_ENOMEM, "out of memory");
        goto done;
    }
    struct rng g;
    rng_seed(&g, 42);

    /* warm-up: fault in every page, spin up the threads */
    double s;
    if ((rc = run_once(e, &g, info.n_vocab, tokens, max_pp < 32 ? max_pp : 32, false, NULL, NULL, &s, err)) ||
        (rc = run_once(e, &g, info.n_vocab, tokens, 4, true, NULL, NULL, &s, err)))
        goto done;

    for (int k = 0; k < 2; k++) {
        /* pp tests, then tg tests (each with its constrained twin under a grammar) */
        int n = k == 0 ? p->n_pp : p->n_tg;
        for (int i = 0; i < n && rc == PB_OK; i++) {
            struct bench_test *t = &r->tests[r->n_tests], *twin = k == 1 && p->grammar ? t + 1 : NULL;
            t->generation = k == 1;
            t->n_tokens = k == 0 ? p->pp[i] : p->tg[i];
            snprintf(t->name, sizeof t->name, "%s%d", k == 0 ? "pp" : "tg", t->n_tokens);
            if (twin) {
                *twin = *t;
                twin->constrained = true;
                snprintf(twin->name, sizeof twin->name, "tg%d+grammar", t->n_tokens);
            }
            /* the first pp and tg tests: where their time went */
            struct bench_profile *prof = k == 0 ? &r->pp_profile : &r->tg_profile;
            struct step_split split = {0}, *sp = prof->wall_s == 0 ? &split : NULL;
            if ((rc = run_test(e, &g, info.n_vocab, tokens, t, twin, reps, p->grammar, sp, err)))
                break;
            if (sp && split.wall > 0) {
                prof->wall_s = split.wall;
                prof->forward = split.forward / split.wall;
                prof->matrices = 0;
                for (int q = 0; q < PB_PART_COUNT; q++) {
                    prof->parts[q] = split.parts[q] / split.wall;
                    if (pb_part_is_matrix((enum pb_part)q))
                        prof->matrices += prof->parts[q];
                }
                prof->tokens = split.tokens;
            }
            r->n_tests += twin ? 2 : 1;
            if (p->on_test)
                p->on_test(p->user, t);
            if (twin && p->on_test)
                p->on_test(p->user, twin);
        }
    }
    r->peak_rss_bytes = pb_peak_rss();
done:
    free(tokens);
    engine_close(e);
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
