/* plumb bench: prompt-processing and generation speed, with the memory
 * bandwidth of the machine measured in the same run. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/sampler.h"

#include "plumb/bench.h"
#include "plumb/engine.h"
#include "plumb/survey.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb bench (MODEL | --shape NAME:QUANT) [OPTIONS]\n"
           "       plumb bench --serve URL [--concurrency N,N,...] [LOAD OPTIONS]\n"
           "\n"
           "Measures prompt processing (ppN: a prompt of N tokens into an empty cache)\n"
           "and generation (tgN: N tokens one at a time) in tokens per second, as\n"
           "llama-bench does: the median of the repetitions with their spread. In the\n"
           "same run it measures the memory bandwidth of the machine (a streaming read\n"
           "with the same threads, before and after the tests; the higher is used, as\n"
           "other load on the machine only lowers it) and the share of it generation\n"
           "used (weight bytes per token x tokens per second / bandwidth); then where\n"
           "the first tg test's time went: the weight matrices' products, the rest of\n"
           "the forward passes (attention, norms, RoPE, activations), and sampling and\n"
           "scheduling.\n"
           "\n"
           "Options:\n"
           "      --shape NAME:QUANT  synthesize the model in memory instead of reading a\n"
           "                          file: a shape of 'plumb synth --list' and a type\n"
           "                          (%s)\n"
           "  -p, --n-prompt N[,N]    prompt lengths (default 512; 0: no pp test)\n"
           "  -n, --n-gen N[,N]       generation lengths (default 128; 0: no tg test)\n"
           "  -r, --repetitions N     repetitions of each test (default 3)\n"
           "  -t, --threads N         threads (default: all CPUs)\n"
           "      --kv-type T         KV cache type: f16 (default), f32 or q8_0\n"
           "      --json-schema FILE  run each tg test again with its output constrained to this\n"
           "                          JSON Schema (answers that end are followed by others until\n"
           "                          N tokens), and print constrained / unconstrained t/s\n"
           "      --grammar FILE      the same with a GBNF grammar\n"
           "      --embed [B,B,...]   embeddings instead: texts of 10-16 tokens in batches of B\n"
           "                          (default 1,16,64), texts/s and tokens/s\n"
           "      --profile           then the first pp and tg tests' time part by part (Q/K/V,\n"
           "                          attention, FFN, norms, activations' quantization, ...): ms\n"
           "                          per token and share, largest first (--json always has them:\n"
           "                          pp_profile, tg_profile)\n"
           "      --no-save           do not add this run to the machine's calibration\n"
           "      --save-calibration  add it even when it does not represent larger models\n"
           "      --json              print the results as JSON\n"
           "  -h, --help              this help\n"
           "\n"
           "A run is saved as a calibration record of this machine\n"
           "($PLUMB_HOME/machine/calibration.json), from which plumb plan derives the\n"
           "efficiency of the kernels for models of that file type and size class, when it\n"
           "represents them: at least 256 MiB of weights (smaller ones run from the CPU's\n"
           "caches) and tests of -p 32 / -n 16 tokens or more; plumb plan says which\n"
           "record it used and when.\n"
           "\n"
           "With --serve, load on a running OpenAI-compatible server (http:// or\n"
           "https://, through libcurl) instead: at each\n"
           "concurrency level that many clients stream completions at once (prompts of\n"
           "random token ids, answers of exactly --gen-tokens tokens), and the table\n"
           "gives aggregate generation t/s, time to first token and inter-token\n"
           "latency (median, p95). Load options:\n"
           "      --concurrency N,N   clients at once, per level (default 1,4,16)\n"
           "      --prompt-tokens N   prompt length (default 32)\n"
           "      --gen-tokens N      answer length (default 64)\n"
           "      --requests N        requests per client and level (default 2)\n"
           "      --model NAME        the model field to send (default: none)\n"
           "      --api-key-file FILE the key to send as 'Authorization: Bearer KEY': the first\n"
           "                          key of FILE, in plumb serve's format (KEY, ID KEY or ID KEY admin per\n"
           "                          line); '-' reads it from standard input\n"
           "      --vocab N           prompt token ids are drawn below N (default 1000)\n"
           "      --session-header H  each client is a session: it sends 'H: bench-LEVEL-CLIENT'\n"
           "                          (e.g. X-Session-Id, for a balancer's affinity)\n"
           "      --repeat-prompt     each client sends one prompt every time (a cached prefix)\n"
           "      --shared-prefix N   every prompt begins with the same N tokens (a shared system\n"
           "                          prompt; default 0), then its own --prompt-tokens\n"
           "      --per-request       every request: start, end, status, the replica that\n"
           "                          answered (X-Plumb-Instance), reused prompt tokens, error\n"
           "\n"
           "Examples:\n"
           "  plumb bench model.gguf -p 128,512 -n 64\n"
           "  plumb bench --shape tinyllama-1.1b:Q4_0 -t 2 --json\n"
           "  plumb bench model.gguf -p 0 -n 64 --profile\n"
           "  plumb bench --serve http://127.0.0.1:8080 --concurrency 1,4,16\n"
           "  plumb bench --serve http://127.0.0.1:8000 --concurrency 8 --per-request --json\n"
           "  plumb bench --serve http://127.0.0.1:8080 --shared-prefix 1000 --prompt-tokens 45\n",
           pb_ftype_names());
}

/* "128,512" into up to BENCH_MAX_TESTS lengths; 0 entries are dropped. */
static bool parse_lengths(const char *opt, const char *arg, int *out, int *n)
{
    *n = 0;
    char *copy = strdup(arg), *save = NULL;
    bool ok = copy != NULL;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok && ok; tok = strtok_r(NULL, ",", &save)) {
        long long v;
        if (!cli_parse_int("bench", opt, tok, 0, 1 << 20, &v)) {
            ok = false;
            break;
        }
        if (v == 0)
            continue;
        if (*n == BENCH_MAX_TESTS) {
            cli_usage_error("bench", "%s takes at most %d lengths", opt, BENCH_MAX_TESTS);
            ok = false;
            break;
        }
        out[(*n)++] = (int)v;
    }
    free(copy);
    return ok;
}

static bool parse_shape(const char *arg, struct bench_params *p)
{
    const char *colon = strchr(arg, ':');
    if (!colon)
        return cli_usage_error("bench", "--shape wants NAME:QUANT, e.g. tinyllama-1.1b:Q4_0"), false;
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(colon - arg), arg);
    const struct synth_shape *s = synth_shape_find(name);
    if (!s)
        return cli_usage_error("bench", "unknown shape '%s' (see 'plumb synth --list')", name), false;
    if (!pb_ftype_from_name(colon + 1, &p->ftype))
        return cli_usage_error("bench", "unknown type '%s' (one of %s)", colon + 1, pb_ftype_names()), false;
    p->shape = *s;
    return true;
}

struct progress {
    bool json;
};

static void on_test(void *user, const struct bench_test *t)
{
    const struct progress *pr = user;
    if (!pr->json && cli_stderr_is_tty())
        fprintf(stderr, "  %s: %.2f t/s\n", t->name, t->t_s_median);
}

/* A test's share of time outside the forward passes: sampling and
 * scheduling. */
static double sampling_share(const struct bench_profile *pf)
{
    return pf->forward < 1 ? 1 - pf->forward : 0;
}

static void print_table(const struct bench_report *r)
{
    char size[32], params[32];
    cli_fmt_bytes(r->model_bytes, size, sizeof size);
    cli_fmt_count(r->n_params, params, sizeof params);
    printf("| %-40s | %10s | %8s | %-10s | %7s | %7s | %22s |\n", "model", "size", "params", "kernels", "threads",
           "test", "t/s");
    printf("| %.40s | %.10s | %.8s | %.10s | %.7s | %.7s | %.22s |\n", "----------------------------------------",
           "----------", "--------", "----------", "-------", "-------", "----------------------");
    for (int i = 0; i < r->n_tests; i++) {
        const struct bench_test *t = &r->tests[i];
        char ts[48];
        snprintf(ts, sizeof ts, "%.2f (%.2f-%.2f)", t->t_s_median, t->t_s_min, t->t_s_max);
        printf("| %-40.40s | %10s | %8s | %-10s | %7d | %7s | %22s |\n", cli_esc(r->model), size, params, r->kernels,
               r->n_threads, t->name, ts);
    }
    /* embeddings: texts per second beside the tokens */
    for (int i = 0; i < r->n_tests; i++)
        if (r->tests[i].embed_batch)
            printf("%s%s: %.1f texts/s, %.1f tokens/s (%d tokens a batch)\n", i ? "" : "\n", r->tests[i].name,
                   r->tests[i].inputs_s_median, r->tests[i].t_s_median, r->tests[i].n_tokens);
    if (r->n_tests && r->tests[0].embed_batch) {
        char rss[32];
        cli_fmt_bytes(r->peak_rss_bytes, rss, sizeof rss);
        printf("peak RSS %s, load %.2f s, median of %d (min-max)\n", rss, r->load_s, r->tests[0].reps);
        return;
    }
    /* constrained decoding: each constrained test against its twin */
    for (int i = 0; i < r->n_tests; i++)
        for (int k = 0; r->tests[i].constrained && k < r->n_tests; k++)
            if (!r->tests[k].constrained && r->tests[k].generation && r->tests[k].n_tokens == r->tests[i].n_tokens)
                printf("%s / %s: %.3f (constrained / unconstrained generation: medians of repetitions that "
                       "alternate)\n", r->tests[i].name, r->tests[k].name,
                       r->tests[k].t_s_median > 0 ? r->tests[i].t_s_median / r->tests[k].t_s_median : 0);
    char rss[32], wb[32];
    cli_fmt_bytes(r->peak_rss_bytes, rss, sizeof rss);
    cli_fmt_bytes(r->weight_bytes, wb, sizeof wb);
    printf("\nmemory bandwidth (%d-thread read): %.1f GB/s (%.1f before, %.1f after the tests)\n", r->n_threads,
           r->bandwidth_gbs, r->bandwidth_before_gbs, r->bandwidth_after_gbs);
    for (int i = 0; i < r->n_tests; i++)
        if (r->tests[i].generation) {
            printf("%s reads %s of weights per token: %.2f of that bandwidth\n", r->tests[i].name, wb,
                   r->tg_bandwidth_share);
            if (r->tg_profile.wall_s > 0)
                printf("%s's time: %.2f in the weight matrices' products, %.2f elsewhere in the forward passes "
                       "(attention, norms, RoPE, activations), %.2f sampling and scheduling\n",
                       r->tests[i].name, r->tg_profile.matrices, r->tg_profile.forward - r->tg_profile.matrices,
                       sampling_share(&r->tg_profile));
            break;
        }
    char kv[32];
    cli_fmt_bytes(r->kv_bytes, kv, sizeof kv);
    printf("peak RSS %s (KV cache %s), load %.2f s, t/s: median of %d (min-max)\n", rss, kv, r->load_s,
           r->n_tests ? r->tests[0].reps : 0);
}

/* The run as a calibration record for plumb plan: the first pp and tg
 * tests; saved when it represents the models it would calibrate, or when
 * forced. A failure to save is a warning, not a failed benchmark. */
static void save_calibration(const struct bench_report *r, bool quiet, bool force)
{
    struct survey_calib c = {0};
    survey_now_iso(c.created, sizeof c.created);
    snprintf(c.model, sizeof c.model, "%s", r->model);
    snprintf(c.ftype, sizeof c.ftype, "%s", r->ftype);
    snprintf(c.kernels, sizeof c.kernels, "%s", r->kernels);
    c.threads = r->n_threads;
    c.model_bytes = r->model_bytes;
    c.weight_bytes = r->weight_bytes;
    c.n_params = r->n_params;
    c.bandwidth_gbs = r->bandwidth_gbs;
    for (int i = r->n_tests - 1; i >= 0; i--) {
        const struct bench_test *t = &r->tests[i];
        if (t->generation) {
            c.tg_tps = t->t_s_median;
            c.tg_tokens = t->n_tokens;
        } else {
            c.pp_tps = t->t_s_median;
            c.pp_tokens = t->n_tokens;
        }
    }
    char dir[600], why[300];
    pb_err err = {0};
    if (!force && !survey_calib_representative(&c, why, sizeof why)) {
        if (!quiet)
            printf("not saved as a calibration record: %s (--save-calibration saves it anyway)\n", why);
        return;
    }
    if (survey_dir(dir, sizeof dir, &err) || survey_calib_add(dir, &c, &err))
        fprintf(stderr, "plumb bench: warning: calibration not saved: %s\n", err.msg);
    else if (!quiet)
        printf("calibration record saved to %s/calibration.json (used by plumb plan)\n", dir);
}

/* A test's passes part by part (--profile): time per token evaluated and
 * share of the test's time, the largest first; what no part covers, and
 * sampling with scheduling, last. */
static void print_profile(const char *test, const struct bench_profile *pf)
{
    const double ms = 1000.0 * pf->wall_s / (double)pf->tokens; /* per token, all of it */
    int order[PB_PART_COUNT];
    double covered = 0;
    for (int p = 0; p < PB_PART_COUNT; p++) {
        order[p] = p;
        covered += pf->parts[p];
    }
    for (int a = 1; a < PB_PART_COUNT; a++) /* largest first */
        for (int b = a; b > 0 && pf->parts[order[b]] > pf->parts[order[b - 1]]; b--) {
            const int x = order[b];
            order[b] = order[b - 1];
            order[b - 1] = x;
        }
    printf("\n%s, part by part (%llu tokens evaluated, %.3f ms each):\n\n", test, (unsigned long long)pf->tokens, ms);
    printf("| part | kind | ms per token | share |\n|---|---|---|---|\n");
    for (int i = 0; i < PB_PART_COUNT; i++) {
        const enum pb_part p = (enum pb_part)order[i];
        if (pf->parts[p] > 0)
            printf("| %s | %s | %.3f | %.3f |\n", pb_part_name(p), pb_part_is_matrix(p) ? "matrix" : "other",
                   ms * pf->parts[p], pf->parts[p]);
    }
    const double rest = pf->forward - covered, sampling = sampling_share(pf);
    printf("| rest of the passes (residual adds, biases, glue) | other | %.3f | %.3f |\n", ms * (rest > 0 ? rest : 0),
           rest > 0 ? rest : 0);
    printf("| sampling and scheduling | other | %.3f | %.3f |\n", ms * sampling, sampling);
}

/* The first pp test's and the first tg test's profiles. */
static void print_profiles(const struct bench_report *r)
{
    for (int k = 0; k < 2; k++) {
        const struct bench_profile *pf = k == 0 ? &r->pp_profile : &r->tg_profile;
        bool shown = false;
        for (int i = 0; i < r->n_tests && !shown; i++)
            if (r->tests[i].generation == (k == 1) && pf->wall_s > 0 && pf->tokens > 0) {
                print_profile(r->tests[i].name, pf);
                shown = true;
            }
        if (!shown)
            printf("\nno %s profile: no %s test ran\n", k == 0 ? "pp" : "tg", k == 0 ? "pp" : "tg");
    }
}

/* A profile as JSON: tokens, ms per token, the shares in the passes and
 * in the matrices' products, and each part's time. */
static json_t *profile_json(const struct bench_profile *pf)
{
    json_t *parts = json_object();
    const double ms = 1000.0 * pf->wall_s / (double)pf->tokens;
    for (int p = 0; p < PB_PART_COUNT; p++)
        json_object_set_new(parts, pb_part_name((enum pb_part)p),
                            json_pack("{s:f,s:f,s:b}", "ms_per_token", ms * pf->parts[p], "share", pf->parts[p],
                                      "matrix", pb_part_is_matrix((enum pb_part)p)));
    return json_pack("{s:I,s:f,s:f,s:f,s:o}", "tokens", (json_int_t)pf->tokens, "ms_per_token", ms, "forward",
                     pf->forward, "matrices", pf->matrices, "parts", parts);
}

static int print_json(const struct bench_report *r)
{
    json_t *res = json_array();
    for (int i = 0; i < r->n_tests; i++) {
        const struct bench_test *t = &r->tests[i];
        json_t *o = json_pack("{s:s,s:i,s:f,s:f,s:f,s:i}", "test", t->name, "n_tokens", t->n_tokens, "t_s",
                              t->t_s_median, "t_s_min", t->t_s_min, "t_s_max", t->t_s_max, "repetitions", t->reps);
        if (t->constrained)
            json_object_set_new(o, "constrained", json_true());
        if (t->embed_batch) {
            json_object_set_new(o, "embed_batch", json_integer(t->embed_batch));
            json_object_set_new(o, "texts_s", json_real(t->inputs_s_median));
        }
        json_array_append_new(res, o);
    }
    json_t *o = json_pack("{s:s,s:o,s:f,s:f,s:f,s:f,s:I,s:I,s:I,s:I,s:I,s:s,s:i,s:f}", "model", r->model, "results", res,
                          "bandwidth_gbs", r->bandwidth_gbs, "bandwidth_before_gbs", r->bandwidth_before_gbs,
                          "bandwidth_after_gbs", r->bandwidth_after_gbs, "tg_bandwidth_share", r->tg_bandwidth_share,
                          "model_bytes", (json_int_t)r->model_bytes, "weight_bytes_per_token",
                          (json_int_t)r->weight_bytes, "n_params", (json_int_t)r->n_params, "peak_rss_bytes",
                          (json_int_t)r->peak_rss_bytes, "kv_bytes", (json_int_t)r->kv_bytes, "kernels", r->kernels, "threads", r->n_threads, "load_s",
                          r->load_s);
    if (o)
        json_object_set_new(o, "ftype", json_string(r->ftype));
    if (o && r->tg_profile.wall_s > 0) /* the first tg test's time, as the table's line says */
        json_object_set_new(o, "tg_time_shares",
                            json_pack("{s:f,s:f,s:f}", "matrices", r->tg_profile.matrices, "forward_other",
                                      r->tg_profile.forward - r->tg_profile.matrices, "sampling_scheduling",
                                      sampling_share(&r->tg_profile)));
    if (o && r->tg_profile.wall_s > 0 && r->tg_profile.tokens > 0) /* the same time, part by part */
        json_object_set_new(o, "tg_profile", profile_json(&r->tg_profile));
    if (o && r->pp_profile.wall_s > 0 && r->pp_profile.tokens > 0) /* the first pp test's */
        json_object_set_new(o, "pp_profile", profile_json(&r->pp_profile));
    return cli_print_json(o, true);
}

/* Which replica answered how many requests (the per-request records),
 * as "r1 12, r2 11" into out. */
static void instance_counts(const struct servebench_report *r, char *out, size_t size)
{
    char names[16][72];
    int counts[16], n = 0, other = 0;
    for (int i = 0; i < r->n_requests; i++) {
        const char *id = r->requests[i].instance[0] ? r->requests[i].instance : "(none)";
        int k = 0;
        while (k < n && strcmp(names[k], id))
            k++;
        if (k == n && n == 16) {
            other++;
            continue;
        }
        if (k == n) {
            snprintf(names[n], sizeof names[n], "%s", id);
            counts[n++] = 0;
        }
        counts[k]++;
    }
    size_t at = 0;
    out[0] = '\0';
    for (int k = 0; k < n && at < size; k++)
        at += (size_t)snprintf(out + at, size - at, "%s%s %d", k ? ", " : "", names[k], counts[k]);
    if (other && at < size)
        snprintf(out + at, size - at, ", %d more elsewhere", other);
}

static json_t *request_json(const struct servebench_request *q)
{
    return json_pack("{s:i, s:i, s:i, s:f, s:f, s:i, s:b, s:i, s:i, s:s, s:s}", "level", q->level, "client", q->client,
                     "index", q->index, "start", q->start, "end", q->end, "status", q->status, "ok", q->ok, "tokens",
                     q->tokens, "cached_tokens", q->cached_tokens, "instance", q->instance, "error", q->error);
}

static int run_serve(struct servebench_params *sp, bool json)
{
    struct servebench_report r;
    pb_err err = {0};
    if (!json)
        fprintf(stderr, "load on %s: prompts of %d tokens%s, answers of %d, %d requests per client...\n", sp->url,
                sp->prompt_tokens, sp->shared_prefix ? " after a shared prefix" : "", sp->gen_tokens,
                sp->requests_per_client);
    if (servebench_run(sp, &r, &err))
        return cli_error("bench", "%s", err.msg);
    int rc = CLI_OK;
    if (json) {
        json_t *levels = json_array();
        for (int i = 0; i < r.n_levels; i++) {
            const struct servebench_level *l = &r.levels[i];
            json_array_append_new(levels, json_pack("{s:i, s:i, s:i, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:s?}",
                                                    "concurrency", l->concurrency, "requests", l->requests, "failed",
                                                    l->failed, "tokens", (json_int_t)l->tokens, "wall_s", l->wall_s,
                                                    "agg_t_s", l->agg_tps, "t_s_per_user", l->tps_per_user,
                                                    "ttft_median_s", l->ttft_median, "ttft_p95_s", l->ttft_p95,
                                                    "itl_median_s", l->itl_median, "itl_p95_s", l->itl_p95,
                                                    "first_error", l->first_error[0] ? l->first_error : NULL));
            json_t *lo = json_array_get(levels, json_array_size(levels) - 1);
            json_object_set_new(lo, "prompt_tokens", json_integer((json_int_t)l->prompt_tokens));
            json_object_set_new(lo, "cached_tokens", json_integer((json_int_t)l->cached_tokens));
        }
        json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:o}", "url", sp->url, "prompt_tokens", sp->prompt_tokens,
                              "shared_prefix", sp->shared_prefix, "gen_tokens", sp->gen_tokens, "levels", levels);
        if (o && sp->keep_requests) {
            json_t *reqs = json_array();
            for (int i = 0; i < r.n_requests; i++)
                json_array_append_new(reqs, request_json(&r.requests[i]));
            json_object_set_new(o, "requests", reqs);
        }
        servebench_report_free(&r);
        return cli_print_json(o, true);
    }
    printf("| users | requests | failed | aggregate t/s | t/s per user | TTFT median | TTFT p95 | ITL median | ITL p95 "
           "| prompt reused |\n"
           "| ----- | -------- | ------ | ------------- | ------------ | ----------- | -------- | ---------- | ------- "
           "| ------------- |\n");
    for (int i = 0; i < r.n_levels; i++) {
        const struct servebench_level *l = &r.levels[i];
        printf("| %5d | %8d | %6d | %13.1f | %12.1f | %9.3f s | %6.3f s | %8.3f s | %5.3f s | %11.1f %% |\n",
               l->concurrency, l->requests, l->failed, l->agg_tps, l->tps_per_user, l->ttft_median, l->ttft_p95,
               l->itl_median, l->itl_p95, l->prompt_tokens ? 100.0 * (double)l->cached_tokens / (double)l->prompt_tokens : 0);
    }
    if (sp->keep_requests) {
        char counts[1200];
        instance_counts(&r, counts, sizeof counts);
        printf("\nanswered by  %s\n", counts);
        for (int i = 0; i < r.n_requests; i++)
            if (!r.requests[i].ok)
                printf("failed       level %d client %d request %d: %s%s%s\n", r.requests[i].level + 1,
                       r.requests[i].client + 1, r.requests[i].index + 1, r.requests[i].error,
                       r.requests[i].instance[0] ? " from " : "", cli_esc(r.requests[i].instance));
    }
    servebench_report_free(&r);
    for (int i = 0; i < r.n_levels && rc == CLI_OK; i++)
        if (r.levels[i].failed)
            rc = cli_error("bench", "%d of %d requests failed at %d user%s; the first: %s", r.levels[i].failed,
                           r.levels[i].requests, r.levels[i].concurrency, r.levels[i].concurrency == 1 ? "" : "s",
                           r.levels[i].first_error);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    enum { OPT_SHAPE = 1000, OPT_JSON, OPT_KV, OPT_NO_SAVE, OPT_SAVE, OPT_SERVE, OPT_CONC, OPT_PT, OPT_GT, OPT_REQ, OPT_MODEL, OPT_KEY, OPT_KEY_FILE,
           OPT_VOCAB, OPT_SESSION, OPT_REPEAT, OPT_SHARED, OPT_PER_REQUEST, OPT_SCHEMA, OPT_GRAMMAR, OPT_EMBED, OPT_PROFILE };
    static const struct option longopts[] = {
        {"serve", required_argument, 0, OPT_SERVE},   {"concurrency", required_argument, 0, OPT_CONC},
        {"prompt-tokens", required_argument, 0, OPT_PT}, {"gen-tokens", required_argument, 0, OPT_GT},
        {"requests", required_argument, 0, OPT_REQ},  {"model", required_argument, 0, OPT_MODEL},
        {"api-key-file", required_argument, 0, OPT_KEY_FILE},
        {"api-key", required_argument, 0, OPT_KEY}, /* the old way, the key itself (shows in ps) */   {"vocab", required_argument, 0, OPT_VOCAB},
        {"session-header", required_argument, 0, OPT_SESSION}, {"repeat-prompt", no_argument, 0, OPT_REPEAT},
        {"per-request", no_argument, 0, OPT_PER_REQUEST}, {"shared-prefix", required_argument, 0, OPT_SHARED},
        {"shape", required_argument, 0, OPT_SHAPE},   {"n-prompt", required_argument, 0, 'p'},
        {"n-gen", required_argument, 0, 'n'},         {"repetitions", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 't'},       {"kv-type", required_argument, 0, OPT_KV},
        {"json", no_argument, 0, OPT_JSON},           {"help", no_argument, 0, 'h'},
        {"no-save", no_argument, 0, OPT_NO_SAVE},     {"save-calibration", no_argument, 0, OPT_SAVE},
        {"json-schema", required_argument, 0, OPT_SCHEMA}, {"grammar", required_argument, 0, OPT_GRAMMAR},
        {"embed", optional_argument, 0, OPT_EMBED},   {"profile", no_argument, 0, OPT_PROFILE},
        {0, 0, 0, 0},
    };
    struct bench_params p = {.pp = {512}, .n_pp = 1, .tg = {128}, .n_tg = 1, .reps = 3};
    struct servebench_params sp = {.levels = {1, 4, 16}, .n_levels = 3, .prompt_tokens = 32, .gen_tokens = 64,
                                   .requests_per_client = 2, .vocab_lo = 100, .vocab_hi = 1000};
    bool shape = false, json = false, save = true, force_save = false, profile = false;
    char *grammar = NULL; /* --json-schema or --grammar as GBNF */
    static char key[512];
    long long v;
    int c;
    struct cli_parser par = {.cmd = "bench", .shortopts = "p:n:r:t:h", .longopts = longopts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_SHAPE:
            if (!parse_shape(optarg, &p))
                return CLI_USAGE;
            shape = true;
            break;
        case 'p':
            if (!parse_lengths("--n-prompt", optarg, p.pp, &p.n_pp))
                return CLI_USAGE;
            break;
        case 'n':
            if (!parse_lengths("--n-gen", optarg, p.tg, &p.n_tg))
                return CLI_USAGE;
            break;
        case 'r':
            if (!cli_parse_int("bench", "--repetitions", optarg, 1, 1000, &v))
                return CLI_USAGE;
            p.reps = (int)v;
            break;
        case 't':
            if (!cli_parse_int("bench", "--threads", optarg, 1, 1024, &v))
                return CLI_USAGE;
            p.n_threads = (int)v;
            break;
        case OPT_KV:
            if (!cli_parse_kv_type("bench", optarg, &p.kv_type))
                return CLI_USAGE;
            break;
        case OPT_SERVE: sp.url = optarg; break;
        case OPT_CONC:
            if (!parse_lengths("--concurrency", optarg, sp.levels, &sp.n_levels))
                return CLI_USAGE;
            break;
        case OPT_PT:
            if (!cli_parse_int("bench", "--prompt-tokens", optarg, 1, 1 << 20, &v))
                return CLI_USAGE;
            sp.prompt_tokens = (int)v;
            break;
        case OPT_GT:
            if (!cli_parse_int("bench", "--gen-tokens", optarg, 1, 1 << 20, &v))
                return CLI_USAGE;
            sp.gen_tokens = (int)v;
            break;
        case OPT_REQ:
            if (!cli_parse_int("bench", "--requests", optarg, 1, 10000, &v))
                return CLI_USAGE;
            sp.requests_per_client = (int)v;
            break;
        case OPT_VOCAB:
            if (!cli_parse_int("bench", "--vocab", optarg, 101, 1 << 24, &v))
                return CLI_USAGE;
            sp.vocab_hi = (int)v;
            break;
        case OPT_MODEL: sp.model = optarg; break;
        case OPT_KEY: sp.api_key = optarg; break;
        case OPT_KEY_FILE:
            if (!cli_read_key("bench", optarg, false, key, sizeof key))
                return CLI_USAGE;
            sp.api_key = key;
            break;
        case OPT_SESSION: sp.session_header = optarg; break;
        case OPT_REPEAT: sp.repeat_prompt = true; break;
        case OPT_SHARED:
            if (!cli_parse_int("bench", "--shared-prefix", optarg, 0, 1 << 20, &v))
                return CLI_USAGE;
            sp.shared_prefix = (int)v;
            break;
        case OPT_PER_REQUEST: sp.keep_requests = true; break;
        case OPT_JSON: json = true; break;
        case OPT_NO_SAVE: save = false; break;
        case OPT_EMBED:
            if (optarg) {
                if (!parse_lengths("--embed", optarg, p.embed, &p.n_embed))
                    return CLI_USAGE;
            } else {
                p.embed[0] = 1, p.embed[1] = 16, p.embed[2] = 64, p.n_embed = 3;
            }
            break;
        case OPT_SCHEMA:
        case OPT_GRAMMAR:
            if (!cli_read_grammar("bench", optarg, c == OPT_GRAMMAR, &grammar))
                return CLI_USAGE;
            p.grammar = grammar;
            break;
        case OPT_SAVE: force_save = true; break;
        case OPT_PROFILE: profile = true; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (sp.url) {
        if (shape || optind < argc)
            return cli_usage_error("bench", "--serve measures a running server: no MODEL or --shape with it");
        if (sp.n_levels == 0 || sp.n_levels > SERVEBENCH_MAX_LEVELS)
            return cli_usage_error("bench", "--concurrency takes 1 to %d levels", SERVEBENCH_MAX_LEVELS);
        for (int i = 0; i < sp.n_levels; i++)
            if (sp.levels[i] > 1024)
                return cli_usage_error("bench", "--concurrency: at most 1024 clients");
        return run_serve(&sp, json);
    }
    if (shape == (optind < argc))
        return cli_usage_error("bench", shape ? "give a model file or --shape, not both" : "missing MODEL (or --shape)");
    if (optind + 1 < argc)
        return cli_usage_error("bench", "unexpected argument '%s'", argv[optind + 1]);
    if (p.n_pp + p.n_tg == 0)
        return cli_usage_error("bench", "nothing to measure: -p and -n are both 0");
    char path[4096];
    if (!shape) {
        if (!cli_resolve_model("bench", argv[optind], path, sizeof path, NULL))
            return CLI_FAIL;
        p.model_path = path;
        p.model_label = argv[optind];
    }
    char warn[512];
    if (engine_threads_advice(p.n_threads, warn, sizeof warn))
        fprintf(stderr, "plumb bench: warning: %s\n", warn);
    struct progress pr = {json};
    p.on_test = on_test;
    p.user = &pr;
    p.progress = json ? NULL : cli_progress_cb;
    if (shape && !json)
        fprintf(stderr, "synthesizing %s %s in memory...\n", p.shape.name, pb_ftype_name(p.ftype));
    struct bench_report r;
    pb_err err = {0};
    int rc = CLI_OK;
    int brc = bench_run(&p, &r, &err);
    free(grammar);
    if (brc)
        return cli_error("bench", "%s", err.msg);
    if (json) {
        rc = print_json(&r);
    } else {
        print_table(&r);
        if (profile)
            print_profiles(&r);
    }
    if (save && !p.n_embed) /* a calibration is of generation speed */
        save_calibration(&r, json, force_save);
    return rc;
}
