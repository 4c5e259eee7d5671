/* plumb tune (tune.h): serving settings measured one at a time, each trial
 * a server in this process under plumb bench --serve's load. */
#include "plumb/tune.h"
#include "base/err.h"

#include "base/sys.h"
#include "plumb/bench.h"
#include "plumb/engine.h"
#include "plumb/server.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

struct tune_params tune_defaults(void)
{
    return (struct tune_params){
        .users = 1, .budget_s = 600, .prompt_tokens = 256, .gen_tokens = 64, .requests_per_user = 2};
}

/* How good a trial is: above 1000 (1000 + the median user's tokens/s)
 * when it meets the targets, else in [0, 1]: how close it came (the share
 * of requests that succeeded times each target's attained fraction); -1
 * when it did not run. */
static double score_of(const struct tune_params *p, struct tune_trial *t)
{
    if (!t->ran || t->requests == 0)
        return -1;
    const double ok = 1.0 - (double)t->failed / (double)t->requests;
    const double tps = p->slo_tps > 0 ? fmin(1.0, t->tps_per_user / p->slo_tps) : 1.0;
    const double ttft = p->slo_ttft_s > 0 ? (t->ttft_p95 > 0 ? fmin(1.0, p->slo_ttft_s / t->ttft_p95) : 0) : 1.0;
    t->meets = t->failed == 0 && (p->slo_tps <= 0 || t->tps_per_user >= p->slo_tps) &&
               (p->slo_ttft_s <= 0 || t->ttft_p95 <= p->slo_ttft_s);
    return t->meets ? 1000 + t->tps_per_user : ok * tps * ttft;
}

static void trial_fail(struct tune_trial *t, const char *what, const pb_err *e)
{
    snprintf(t->error, sizeof t->error, "%s: %s", what, e->msg);
}

/* Serves the setting on a loopback port and loads it. A setting that
 * cannot run (it does not fit, the server refuses it) is a trial that did
 * not run, not an error of the search. */
static void trial_run(const struct tune_params *p, struct tune_trial *t)
{
    const double t0 = sys_now();
    struct server_model m = server_model_defaults();
    m.path = p->models[t->s.model];
    m.alias = "tune";
    m.engine.n_slots = t->s.slots;
    m.engine.n_batch = t->s.batch;
    m.engine.step_target_s = t->s.step_ms / 1000;
    m.engine.kv_type = t->s.kv_type;
    if (p->n_ctx)
        m.engine.n_ctx = p->n_ctx;
    pb_err e = {0};
    struct engine_memory mem;
    if (engine_estimate(m.path, &m.engine, &mem, &e) == PB_OK)
        t->memory = mem.total;
    struct server_params sp = server_defaults();
    sp.models = &m;
    sp.n_models = 1;
    sp.host = "127.0.0.1";
    sp.port = 0;
    sp.n_threads = t->s.threads;
    sp.max_queue = p->users * p->requests_per_user + 16;
    sp.ui = SERVER_UI_OFF;
    struct server *srv;
    if (server_open(&sp, &srv, &e)) {
        trial_fail(t, "serving it", &e);
        t->seconds = sys_now() - t0;
        t->score = -1;
        return;
    }
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", server_port(srv));
    struct servebench_params bp = {.url = url,
                                   .model = "tune",
                                   .levels = {p->users},
                                   .n_levels = 1,
                                   .prompt_tokens = p->prompt_tokens,
                                   .gen_tokens = p->gen_tokens,
                                   .requests_per_client = p->requests_per_user,
                                   .vocab_lo = 100,
                                   .vocab_hi = 1000};
    struct servebench_report br = {0};
    if (servebench_run(&bp, &br, &e)) {
        trial_fail(t, "loading it", &e);
    } else {
        const struct servebench_level *l = &br.levels[0];
        t->ran = true;
        t->requests = l->requests;
        t->failed = l->failed;
        t->agg_tps = l->agg_tps;
        t->tps_per_user = l->tps_per_user;
        t->ttft_p50 = l->ttft_median;
        t->ttft_p95 = l->ttft_p95;
        t->itl_p50 = l->itl_median;
        t->itl_p95 = l->itl_p95;
        if (l->failed)
            snprintf(t->error, sizeof t->error, "%d of %d requests failed: %s", l->failed, l->requests,
                     l->first_error);
    }
    servebench_report_free(&br);
    server_drain(srv, 5);
    server_free(srv);
    t->seconds = sys_now() - t0;
    t->score = score_of(p, t);
}

static bool same_setting(const struct tune_setting *a, const struct tune_setting *b)
{
    return a->model == b->model && a->threads == b->threads && a->slots == b->slots && a->batch == b->batch &&
           a->step_ms == b->step_ms && a->kv_type == b->kv_type;
}

/* The alternatives of one setting, in the order they are tried. */
enum dim { DIM_MODEL, DIM_SLOTS, DIM_THREADS, DIM_KV, DIM_STEP, DIM_BATCH, N_DIMS };

static int alternatives(const struct tune_params *p, enum dim d, const struct tune_setting *base,
                        struct tune_setting *out, int max)
{
    int n = 0;
    const int cpus = engine_cpu_count() > 0 ? engine_cpu_count() : 1;
#define ALT(field, value)                                                                                             \
    do {                                                                                                               \
        if (n < max) {                                                                                                 \
            out[n] = *base;                                                                                            \
            out[n].field = (value);                                                                                    \
            if (!same_setting(&out[n], base))                                                                          \
                n++;                                                                                                   \
        }                                                                                                              \
    } while (0)
    switch (d) {
    case DIM_MODEL:
        for (int i = 0; i < p->n_models; i++)
            ALT(model, i);
        break;
    case DIM_SLOTS: /* fewer slots than users queue some; more leave room for bursts */
        if (p->users / 2 >= 1)
            ALT(slots, p->users / 2);
        if (p->users * 2 <= ENGINE_MAX_SLOTS)
            ALT(slots, p->users * 2);
        break;
    case DIM_THREADS: /* all the CPUs, or one left for the server's connections */
        if (cpus > 1)
            ALT(threads, cpus - 1);
        if (cpus / 2 > 1 && cpus / 2 != cpus - 1)
            ALT(threads, cpus / 2);
        break;
    case DIM_KV:
        ALT(kv_type, PB_KV_Q8_0);
        ALT(kv_type, PB_KV_F16);
        break;
    case DIM_STEP: /* shorter steps: smoother streams; longer: prompts in bigger pieces */
        ALT(step_ms, 50);
        ALT(step_ms, 400);
        break;
    case DIM_BATCH:
        ALT(batch, 128);
        ALT(batch, 1024);
        break;
    default:
        break;
    }
#undef ALT
    return n;
}

int tune_run(const struct tune_params *p, struct tune_report *r, pb_err *err)
{
    memset(r, 0, sizeof *r);
    r->best = -1;
    if (p->n_models < 1 || p->n_models > TUNE_MAX_MODELS)
        return pb_fail(err, PB_EINVAL, "1 to %d model files", TUNE_MAX_MODELS);
    if (p->users < 1 || p->users > ENGINE_MAX_SLOTS)
        return pb_fail(err, PB_EINVAL, "users: 1 to %d", ENGINE_MAX_SLOTS);
    if (p->prompt_tokens < 1 || p->gen_tokens < 2 || p->requests_per_user < 1 || !(p->budget_s > 0))
        return pb_fail(err, PB_EINVAL, "bad load: prompts, answers (at least 2 tokens), requests and the budget "
                       "must be positive");
    const double t0 = sys_now();
    struct tune_setting best = {.model = 0,
                                .threads = engine_cpu_count() > 0 ? engine_cpu_count() : 1,
                                .slots = p->users,
                                .batch = ENGINE_DEFAULT_BATCH,
                                .step_ms = ENGINE_DEFAULT_STEP_MS,
                                .kv_type = PB_KV_F16};
    struct tune_setting todo[8];
    int n_todo = 1;
    todo[0] = best;
    enum dim d = DIM_MODEL;
    for (;;) {
        for (int k = 0; k < n_todo; k++) {
            if (r->n_trials == TUNE_MAX_TRIALS || (p->cancel && *p->cancel))
                goto done;
            /* the next trial must fit in the budget, judged by those before it */
            const double elapsed = sys_now() - t0;
            if (r->n_trials > 0 && elapsed + elapsed / r->n_trials > p->budget_s)
                goto done;
            struct tune_trial *t = &r->trials[r->n_trials];
            t->s = todo[k];
            if (p->progress)
                p->progress(p->user, r->n_trials, t, false, elapsed);
            trial_run(p, t);
            r->n_trials++;
            if (p->progress)
                p->progress(p->user, r->n_trials - 1, t, true, sys_now() - t0);
            if (r->best < 0 || t->score > r->trials[r->best].score) {
                r->best = r->n_trials - 1;
                best = t->s;
            }
        }
        if (d == N_DIMS)
            break;
        n_todo = alternatives(p, d, &best, todo, 8);
        d++;
    }
done:
    if (p->cancel && *p->cancel)
        return pb_fail(err, PB_EIO, "interrupted");
    if (r->best >= 0 && !r->trials[r->best].ran)
        return pb_fail(err, PB_EIO, "no setting could be served: %s", r->trials[r->best].error);
    return PB_OK;
}
