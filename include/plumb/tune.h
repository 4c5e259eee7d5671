/* plumb tune: the serving settings that meet a number of users' targets on
 * this machine, found by measuring them.
 *
 * Each trial serves the model in this process (plumb serve's own server,
 * on a loopback port) with one setting and puts plumb bench --serve's load
 * on it: users clients at once, each streaming requests of prompt_tokens
 * and gen_tokens. A setting meets the targets when no request failed, the
 * median user's generation speed is at least slo_tps and the p95 time to
 * first token at most slo_ttft_s.
 *
 * The search goes one setting at a time rather than over every
 * combination: from plumb serve's defaults (and as many slots as users),
 * the quantizations first, then slots, threads, KV-cache type, step time
 * and batch size; an alternative is kept when it scores better, until
 * every alternative was tried or the time budget is spent. Among settings
 * that meet the targets the faster per user wins; when none does, the
 * closest to them.
 */
#ifndef PLUMB_TUNE_H
#define PLUMB_TUNE_H

#include "plumb/base.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#define TUNE_MAX_MODELS 8
#define TUNE_MAX_TRIALS 64

struct tune_setting {
    int model;         /* index into tune_params.models */
    int threads;
    int slots;
    int batch;
    double step_ms;
    enum pb_kv_type kv_type;
};

struct tune_trial {
    struct tune_setting s;
    bool ran;              /* false: the server could not start (error says why) */
    char error[600];
    int requests, failed;
    double agg_tps;        /* generated tokens per second, all users together */
    double tps_per_user;   /* median request's generation speed */
    double ttft_p50, ttft_p95, itl_p50, itl_p95; /* seconds */
    uint64_t memory;       /* estimate of the setting's memory (weights, KV at full context, buffers) */
    bool meets;
    double score;
    double seconds;        /* the trial's wall time */
};

struct tune_params {
    const char *models[TUNE_MAX_MODELS]; /* GGUF files: quantizations of one model; models[0] is the one named */
    const char *labels[TUNE_MAX_MODELS]; /* how to show each (a store name, a file name) */
    int n_models;
    int users;             /* clients at once */
    double slo_ttft_s;     /* 0: no target */
    double slo_tps;        /* per user; 0: no target */
    double budget_s;       /* no new trial starts after this */
    int prompt_tokens, gen_tokens, requests_per_user;
    int64_t n_ctx;         /* context per slot (0: plumb serve's default) */
    const volatile sig_atomic_t *cancel;
    /* before each trial (i, the setting) and after it (done) */
    void (*progress)(void *user, int i, const struct tune_trial *t, bool done, double elapsed_s);
    void *user;
};

struct tune_report {
    struct tune_trial trials[TUNE_MAX_TRIALS];
    int n_trials;
    int best;              /* index of the best trial, -1 when none ran */
};

/* The defaults: 1 user, no targets, 10 minutes, prompts of 256 tokens and
 * answers of 64, 2 requests per user. */
struct tune_params tune_defaults(void);
int tune_run(const struct tune_params *p, struct tune_report *r, pb_err *err);

#endif
