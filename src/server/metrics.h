/* The server's counters and latency histograms, and their Prometheus
 * text form (GET /metrics). Thread-safe: one mutex, held briefly. */
#ifndef PLUMB_SERVER_METRICS_H
#define PLUMB_SERVER_METRICS_H

#include "base/err.h"
#include "base/sbuf.h"
#include "plumb/profile.h"
#include "server/gate.h"

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#define METRICS_BUCKETS 14
#define METRICS_MAX_SERIES 64

struct histogram {
    uint64_t count[METRICS_BUCKETS + 1]; /* per bucket (cumulated when printed); last: +Inf */
    double sum;
    uint64_t n;
};

/* Per served model, under plumb's "plumb:" prefix with the names vLLM's
 * dashboards use (docs/metrics.md). */
#define METRICS_MAX_MODELS 32
enum metrics_finish { METRICS_STOP, METRICS_LENGTH, METRICS_TOOL_CALLS, METRICS_ABORT, METRICS_N_FINISH };

struct model_series {
    char model[128];
    uint64_t prompt_tokens, generation_tokens;
    uint64_t finished[METRICS_N_FINISH];
    struct histogram ttft, itl, e2e, queue;
};

/* Generated tokens per 10-second period over the last 5 minutes, for
 * tokens/s over the last minute and the last 5 (a ring of periods; each
 * slot knows which period it counts, so a quiet spell needs no sweep). */
#define METRICS_RATE_PERIOD_S 10
#define METRICS_RATE_PERIODS 30

struct metrics {
    pthread_mutex_t mu;
    uint64_t rate_tokens[METRICS_RATE_PERIODS];
    int64_t rate_period[METRICS_RATE_PERIODS]; /* floor(t / period) counted in that slot; -1: none yet */
    struct model_series models[METRICS_MAX_MODELS];
    int n_models;
    /* requests by endpoint and status */
    struct {
        char endpoint[48];
        int status;
        uint64_t n;
    } req[METRICS_MAX_SERIES];
    int n_req;
    uint64_t prompt_tokens, generated_tokens, reused_tokens, rejected_busy;
    struct histogram ttft, itl, duration;
};

void metrics_init(struct metrics *m);
void metrics_destroy(struct metrics *m);
void metrics_request(struct metrics *m, const char *endpoint, int status);
void metrics_tokens(struct metrics *m, uint64_t prompt, uint64_t generated, uint64_t reused);
void metrics_ttft(struct metrics *m, double seconds);
void metrics_duration(struct metrics *m, double seconds);
/* n tokens generated at now (sys_now()'s monotonic seconds). */
void metrics_generated(struct metrics *m, double now, uint64_t n);
/* Generated tokens per second over the window_s seconds before now
 * (at most METRICS_RATE_PERIODS periods; whole periods, the current one
 * counted for the part that has passed). */
double metrics_rate(struct metrics *m, double now, double window_s);
/* One generated token of model (the hook of every token): the rate window,
 * and the inter-token latency itl into the server's and the model's
 * histograms (itl < 0: a choice's first token, none), under one lock. */
void metrics_token(struct metrics *m, const char *model, double now, double itl);

/* A finished generation (or embedding) request of model: its tokens,
 * latencies and finish reason ("stop", "length", "tool_calls",
 * "cancelled"; others are not counted as finished). ttft < 0: none. */
struct metrics_obs {
    const char *model;
    uint64_t prompt_tokens, generation_tokens;
    double ttft, e2e, queue;
    const char *finish;
};
void metrics_model_request(struct metrics *m, const struct metrics_obs *o);

/* A model's gauges at the time of the scrape. */
struct metrics_model_gauges {
    const char *model;
    const char *source; /* what the configuration named: a store name or a file */
    const char *digest; /* "sha256:HEX" when the file is a store's, else NULL */
    int running, waiting;
    double kv_usage; /* 0..1 */
};

/* Gauges that belong to others (the scheduler), given when printing. */
struct metrics_gauges {
    int slots_total, slots_active, queue_depth;
    int64_t kv_used, kv_capacity, kv_shared;
    int ready, n_models;
    uint64_t steps, step_tokens;
    double step_seconds, sample_seconds;
    double part_seconds[PB_PART_COUNT]; /* of step_seconds, per part of the passes */
    int conn_open;            /* connections with a request in progress */
    const struct metrics_model_gauges *models; /* per model */
    int n_model_gauges;
    struct gate_stats gate;   /* connections waiting for their requests, and those dropped */
};

/* The Prometheus text exposition of everything into out. */
int metrics_render(struct metrics *m, const struct metrics_gauges *g, struct sbuf *out);
/* The same as JSON (GET /v1/plumb/status): counters, latency histograms
 * as count, sum and estimated p50/p95 (seconds), gauges, tokens/s over the
 * last minute and 5 minutes (tokens_per_s_1m, _5m), and per model (id,
 * source, digest, running, waiting, ...). A new reference. */
json_t *metrics_json(struct metrics *m, const struct metrics_gauges *g);

#endif
