/* Counters and histograms in Prometheus' text format (metrics.h). */
#include "server/metrics.h"

#include "base/sys.h"

#include <jansson.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds in seconds, shared by the three latency histograms. */
static const double bounds[METRICS_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                               1.0,   2.5,  5.0,   10,   30,  60,  120};

void metrics_init(struct metrics *m)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i < METRICS_RATE_PERIODS; i++)
        m->rate_period[i] = -1;
    pthread_mutex_init(&m->mu, NULL);
}

void metrics_destroy(struct metrics *m)
{
    pthread_mutex_destroy(&m->mu);
}

void metrics_request(struct metrics *m, const char *endpoint, int status)
{
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_req && !(m->req[i].status == status && !strcmp(m->req[i].endpoint, endpoint)))
        i++;
    if (i == m->n_req && m->n_req < METRICS_MAX_SERIES) {
        snprintf(m->req[i].endpoint, sizeof m->req[i].endpoint, "%s", endpoint);
        m->req[i].status = status;
        m->n_req++;
    }
    if (i < m->n_req)
        m->req[i].n++;
    if (status == 503 || status == 429)
        m->rejected_busy++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_tokens(struct metrics *m, uint64_t prompt, uint64_t generated, uint64_t reused)
{
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += prompt;
    m->generated_tokens += generated;
    m->reused_tokens += reused;
    pthread_mutex_unlock(&m->mu);
}


/* The series of model (created when new; the last slot is shared when
 * more models than slots came and went). Under m->mu. */
static struct model_series *series_of(struct metrics *m, const char *model)
{
    for (int i = 0; i < m->n_models; i++)
        if (!strcmp(m->models[i].model, model))
            return &m->models[i];
    if (m->n_models == METRICS_MAX_MODELS)
        return &m->models[METRICS_MAX_MODELS - 1];
    struct model_series *s = &m->models[m->n_models++];
    snprintf(s->model, sizeof s->model, "%s", model);
    return s;
}

static void observe_locked(struct histogram *h, double v)
{
    int b = 0;
    while (b < METRICS_BUCKETS && v > bounds[b])
        b++;
    h->count[b]++;
    h->sum += v;
    h->n++;
}

static void observe(struct metrics *m, struct histogram *h, double v)
{
    pthread_mutex_lock(&m->mu);
    observe_locked(h, v);
    pthread_mutex_unlock(&m->mu);
}

void metrics_model_request(struct metrics *m, const struct metrics_obs *o)
{
    pthread_mutex_lock(&m->mu);
    struct model_series *s = series_of(m, o->model);
    s->prompt_tokens += o->prompt_tokens;
    s->generation_tokens += o->generation_tokens;
    if (o->ttft >= 0)
        observe_locked(&s->ttft, o->ttft);
    observe_locked(&s->e2e, o->e2e);
    observe_locked(&s->queue, o->queue);
    static const char *const names[METRICS_N_FINISH] = {"stop", "length", "tool_calls", "cancelled"};
    for (int f = 0; f < METRICS_N_FINISH && o->finish; f++)
        if (!strcmp(o->finish, names[f]))
            s->finished[f]++;
    pthread_mutex_unlock(&m->mu);
}

/* n tokens generated at now into the rate window. Under m->mu. */
static void rate_add_locked(struct metrics *m, double now, uint64_t n)
{
    const int64_t period = (int64_t)(now / METRICS_RATE_PERIOD_S);
    const int slot = (int)(period % METRICS_RATE_PERIODS);
    if (m->rate_period[slot] != period) { /* a slot last used 5 minutes or more ago */
        m->rate_period[slot] = period;
        m->rate_tokens[slot] = 0;
    }
    m->rate_tokens[slot] += n;
}

void metrics_generated(struct metrics *m, double now, uint64_t n)
{
    pthread_mutex_lock(&m->mu);
    rate_add_locked(m, now, n);
    pthread_mutex_unlock(&m->mu);
}

void metrics_token(struct metrics *m, const char *model, double now, double itl)
{
    pthread_mutex_lock(&m->mu);
    rate_add_locked(m, now, 1);
    if (itl >= 0) {
        observe_locked(&m->itl, itl);
        observe_locked(&series_of(m, model)->itl, itl);
    }
    pthread_mutex_unlock(&m->mu);
}

double metrics_rate(struct metrics *m, double now, double window_s)
{
    const int64_t period = (int64_t)(now / METRICS_RATE_PERIOD_S);
    int periods = (int)(window_s / METRICS_RATE_PERIOD_S);
    if (periods < 1)
        periods = 1;
    if (periods > METRICS_RATE_PERIODS)
        periods = METRICS_RATE_PERIODS;
    uint64_t tokens = 0;
    pthread_mutex_lock(&m->mu);
    for (int64_t p = period - periods + 1; p <= period; p++) {
        const int slot = (int)(p % METRICS_RATE_PERIODS);
        if (p >= 0 && m->rate_period[slot] == p)
            tokens += m->rate_tokens[slot];
    }
    pthread_mutex_unlock(&m->mu);
    /* the earlier periods whole, the current one as far as it has gone */
    const double span = (periods - 1) * (double)METRICS_RATE_PERIOD_S + (now - (double)period * METRICS_RATE_PERIOD_S);
    return span > 0 ? (double)tokens / span : 0;
}

void metrics_ttft(struct metrics *m, double s) { observe(m, &m->ttft, s); }
void metrics_duration(struct metrics *m, double s) { observe(m, &m->duration, s); }

/* A model's histogram: its buckets, sum and count with the model label
 * (the HELP and TYPE lines are written once by the caller). */
static int put_model_histogram(struct sbuf *out, const char *name, const char *model, const struct histogram *h)
{
    uint64_t cum = 0;
    int rc = 0;
    for (int b = 0; b < METRICS_BUCKETS && !rc; b++) {
        cum += h->count[b];
        rc = sbuf_addf(out, "%s_bucket{model=\"%s\",le=\"%g\"} %llu\n", name, model, bounds[b], (unsigned long long)cum);
    }
    cum += h->count[METRICS_BUCKETS];
    if (!rc)
        rc = sbuf_addf(out, "%s_bucket{model=\"%s\",le=\"+Inf\"} %llu\n%s_sum{model=\"%s\"} %.6f\n%s_count{model=\"%s\"} %llu\n",
                 name, model, (unsigned long long)cum, name, model, h->sum, name, model, (unsigned long long)h->n);
    return rc;
}

/* The per-model series (vLLM's names under "plumb:"). Under m->mu. */
static int render_models(struct metrics *m, const struct metrics_gauges *g, struct sbuf *out)
{
    static const struct {
        const char *name, *help;
    } gauges[3] = {
        {"plumb:num_requests_running", "Requests generating or reading their prompt, per model."},
        {"plumb:num_requests_waiting", "Requests waiting for a slot, per model."},
        {"plumb:kv_cache_usage_perc", "Share of the KV cache in use (0 to 1), per model."},
    };
    int rc = 0;
    for (int k = 0; k < 3 && !rc; k++) {
        rc = sbuf_addf(out, "# HELP %s %s\n# TYPE %s gauge\n", gauges[k].name, gauges[k].help, gauges[k].name);
        for (int i = 0; i < g->n_model_gauges && !rc; i++) {
            const struct metrics_model_gauges *mg = &g->models[i];
            const double v = k == 0 ? mg->running : k == 1 ? mg->waiting : mg->kv_usage;
            rc = sbuf_addf(out, "%s{model=\"%s\"} %.6g\n", gauges[k].name, mg->model, v);
        }
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } hists[] = {
        {"plumb:time_to_first_token_seconds", "Seconds from a request to its first token.",
         offsetof(struct model_series, ttft)},
        {"plumb:inter_token_latency_seconds", "Seconds between consecutive tokens of a request.",
         offsetof(struct model_series, itl)},
        {"plumb:e2e_request_latency_seconds", "Seconds from a request to its end.", offsetof(struct model_series, e2e)},
        {"plumb:request_queue_time_seconds", "Seconds a request waited for a slot.",
         offsetof(struct model_series, queue)},
    };
    for (size_t h = 0; h < sizeof hists / sizeof hists[0] && !rc; h++) {
        rc = sbuf_addf(out, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].name, hists[h].help, hists[h].name);
        for (int i = 0; i < m->n_models && !rc; i++)
            rc = put_model_histogram(out, hists[h].name, m->models[i].model,
                                     (const struct histogram *)((const char *)&m->models[i] + hists[h].off));
    }
    if (!rc)
        rc = sbuf_addf(out, "# HELP plumb:prompt_tokens_total Prompt tokens of finished requests, per model.\n"
                      "# TYPE plumb:prompt_tokens_total counter\n");
    for (int i = 0; i < m->n_models && !rc; i++)
        rc = sbuf_addf(out, "plumb:prompt_tokens_total{model=\"%s\"} %llu\n", m->models[i].model,
                 (unsigned long long)m->models[i].prompt_tokens);
    if (!rc)
        rc = sbuf_addf(out, "# HELP plumb:generation_tokens_total Tokens generated, per model.\n"
                      "# TYPE plumb:generation_tokens_total counter\n");
    for (int i = 0; i < m->n_models && !rc; i++)
        rc = sbuf_addf(out, "plumb:generation_tokens_total{model=\"%s\"} %llu\n", m->models[i].model,
                 (unsigned long long)m->models[i].generation_tokens);
    if (!rc)
        rc = sbuf_addf(out, "# HELP plumb:request_success_total Requests finished, per model and finish reason.\n"
                      "# TYPE plumb:request_success_total counter\n");
    static const char *const reasons[METRICS_N_FINISH] = {"stop", "length", "tool_calls", "abort"};
    for (int i = 0; i < m->n_models && !rc; i++)
        for (int f = 0; f < METRICS_N_FINISH && !rc; f++)
            rc = sbuf_addf(out, "plumb:request_success_total{model=\"%s\",finished_reason=\"%s\"} %llu\n",
                     m->models[i].model, reasons[f], (unsigned long long)m->models[i].finished[f]);
    return rc;
}

static int put_histogram(struct sbuf *out, const char *name, const char *help, const struct histogram *h)
{
    int rc = sbuf_addf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int b = 0; b < METRICS_BUCKETS && !rc; b++) {
        cum += h->count[b];
        rc = sbuf_addf(out, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[b], (unsigned long long)cum);
    }
    cum += h->count[METRICS_BUCKETS];
    if (!rc)
        rc = sbuf_addf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)cum,
                 name, h->sum, name, (unsigned long long)h->n);
    return rc;
}

int metrics_render(struct metrics *m, const struct metrics_gauges *g, struct sbuf *out)
{
    pthread_mutex_lock(&m->mu);
    int rc = sbuf_addf(out, "# HELP plumb_requests_total HTTP requests by endpoint and status.\n"
                      "# TYPE plumb_requests_total counter\n");
    for (int i = 0; i < m->n_req && !rc; i++)
        rc = sbuf_addf(out, "plumb_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", m->req[i].endpoint,
                 m->req[i].status, (unsigned long long)m->req[i].n);
    if (!rc)
        rc = sbuf_addf(out,
                 "# HELP plumb_prompt_tokens_total Prompt tokens of finished requests.\n"
                 "# TYPE plumb_prompt_tokens_total counter\nplumb_prompt_tokens_total %llu\n"
                 "# HELP plumb_prompt_tokens_reused_total Prompt tokens taken from a cached prefix, not computed.\n"
                 "# TYPE plumb_prompt_tokens_reused_total counter\nplumb_prompt_tokens_reused_total %llu\n"
                 "# HELP plumb_generated_tokens_total Tokens generated.\n"
                 "# TYPE plumb_generated_tokens_total counter\nplumb_generated_tokens_total %llu\n"
                 "# HELP plumb_requests_rejected_busy_total Requests refused because the queue was full.\n"
                 "# TYPE plumb_requests_rejected_busy_total counter\nplumb_requests_rejected_busy_total %llu\n",
                 (unsigned long long)m->prompt_tokens, (unsigned long long)m->reused_tokens,
                 (unsigned long long)m->generated_tokens, (unsigned long long)m->rejected_busy);
    if (!rc)
        rc = sbuf_addf(out,
                 "# HELP plumb_slots Parallel generation slots.\n# TYPE plumb_slots gauge\nplumb_slots %d\n"
                 "# HELP plumb_slots_active Slots generating or reading a prompt.\n"
                 "# TYPE plumb_slots_active gauge\nplumb_slots_active %d\n"
                 "# HELP plumb_queue_depth Requests waiting for a slot.\n"
                 "# TYPE plumb_queue_depth gauge\nplumb_queue_depth %d\n"
                 "# HELP plumb_kv_cache_tokens Positions held in the KV cache of all slots.\n"
                 "# TYPE plumb_kv_cache_tokens gauge\nplumb_kv_cache_tokens %lld\n"
                 "# HELP plumb_kv_cache_shared_tokens Positions a slot reads from another slot's cache rows "
                 "(a shared prefix held once).\n"
                 "# TYPE plumb_kv_cache_shared_tokens gauge\nplumb_kv_cache_shared_tokens %lld\n"
                 "# HELP plumb_kv_cache_capacity_tokens Positions the KV cache of all slots can hold.\n"
                 "# TYPE plumb_kv_cache_capacity_tokens gauge\nplumb_kv_cache_capacity_tokens %lld\n"
                 "# HELP plumb_kv_cache_usage_ratio Share of the KV cache in use.\n"
                 "# TYPE plumb_kv_cache_usage_ratio gauge\nplumb_kv_cache_usage_ratio %.6f\n"
                 "# HELP plumb_ready 1 when the models are loaded and the server not draining.\n"
                 "# TYPE plumb_ready gauge\nplumb_ready %d\n"
                 "# HELP plumb_models Models served.\n# TYPE plumb_models gauge\nplumb_models %d\n",
                 g->slots_total, g->slots_active, g->queue_depth, (long long)g->kv_used, (long long)g->kv_shared,
                 (long long)g->kv_capacity, g->kv_capacity ? (double)g->kv_used / (double)g->kv_capacity : 0.0,
                 g->ready, g->n_models);
    if (!rc)
        rc = sbuf_addf(out,
                 "# HELP plumb_forward_passes_total Batched forward passes (scheduler steps).\n"
                 "# TYPE plumb_forward_passes_total counter\nplumb_forward_passes_total %llu\n"
                 "# HELP plumb_forward_tokens_total Tokens evaluated by those passes (prompts and generated).\n"
                 "# TYPE plumb_forward_tokens_total counter\nplumb_forward_tokens_total %llu\n"
                 "# HELP plumb_forward_seconds_total Seconds spent in forward passes.\n"
                 "# TYPE plumb_forward_seconds_total counter\nplumb_forward_seconds_total %.6f\n"
                 "# HELP plumb_sampling_seconds_total Seconds spent sampling and handing tokens over.\n"
                 "# TYPE plumb_sampling_seconds_total counter\nplumb_sampling_seconds_total %.6f\n",
                 (unsigned long long)g->steps, (unsigned long long)g->step_tokens, g->step_seconds, g->sample_seconds);
    if (!rc)
        rc = sbuf_addf(out, "# HELP plumb_forward_part_seconds_total Seconds of the forward passes in each part "
                            "(plumb bench --profile's parts; the matrix parts are the weight products).\n"
                            "# TYPE plumb_forward_part_seconds_total counter\n");
    for (int p = 0; p < PB_PART_COUNT && !rc; p++)
        rc = sbuf_addf(out, "plumb_forward_part_seconds_total{part=\"%s\",kind=\"%s\"} %.6f\n",
                       pb_part_name((enum pb_part)p), pb_part_is_matrix((enum pb_part)p) ? "matrix" : "other",
                       g->part_seconds[p]);
    if (!rc)
        rc = sbuf_addf(out,
                 "# HELP plumb_connections_open Connections with a request in progress.\n"
                 "# TYPE plumb_connections_open gauge\nplumb_connections_open %d\n"
                 "# HELP plumb_connections_waiting Connections that have not sent their request yet.\n"
                 "# TYPE plumb_connections_waiting gauge\nplumb_connections_waiting %d\n"
                 "# HELP plumb_connections_dropped_total Connections closed before their request came, by reason.\n"
                 "# TYPE plumb_connections_dropped_total counter\n",
                 g->conn_open, g->gate.waiting);
    for (int d = 0; d < GATE_DROP_N && !rc; d++)
        rc = sbuf_addf(out, "plumb_connections_dropped_total{reason=\"%s\"} %llu\n", gate_drop_name((enum gate_drop)d),
                 (unsigned long long)g->gate.dropped[d]);
    if (!rc)
        rc = put_histogram(out, "plumb_time_to_first_token_seconds", "Seconds from a request to its first token.",
                           &m->ttft);
    if (!rc)
        rc = put_histogram(out, "plumb_inter_token_latency_seconds", "Seconds between consecutive tokens of a request.",
                           &m->itl);
    if (!rc)
        rc = put_histogram(out, "plumb_request_duration_seconds", "Seconds from a request to its last byte.",
                           &m->duration);
    if (!rc)
        rc = render_models(m, g, out);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* The q-quantile of h, interpolated inside its bucket (the last finite
 * bound for the +Inf bucket); 0 when empty. */
static double quantile(const struct histogram *h, double q)
{
    if (!h->n)
        return 0;
    const double want = q * (double)h->n;
    uint64_t below = 0;
    for (int b = 0; b <= METRICS_BUCKETS; b++) {
        if (below + h->count[b] >= want && h->count[b]) {
            if (b == METRICS_BUCKETS)
                return bounds[METRICS_BUCKETS - 1];
            const double lo = b ? bounds[b - 1] : 0;
            return lo + (bounds[b] - lo) * (want - (double)below) / (double)h->count[b];
        }
        below += h->count[b];
    }
    return bounds[METRICS_BUCKETS - 1];
}

static json_t *histogram_json(const struct histogram *h)
{
    return json_pack("{s:I, s:f, s:f, s:f}", "count", (json_int_t)h->n, "sum", h->sum, "p50", quantile(h, 0.5), "p95",
                     quantile(h, 0.95));
}

json_t *metrics_json(struct metrics *m, const struct metrics_gauges *g)
{
    const double now = sys_now();
    const double rate_1m = metrics_rate(m, now, 60), rate_5m = metrics_rate(m, now, 300);
    json_t *req = json_array(), *models = json_array();
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n_req; i++)
        json_array_append_new(req, json_pack("{s:s, s:i, s:I}", "endpoint", m->req[i].endpoint, "status",
                                             m->req[i].status, "count", (json_int_t)m->req[i].n));
    for (int i = 0; i < g->n_model_gauges; i++) {
        const struct metrics_model_gauges *mg = &g->models[i];
        json_t *o = json_pack("{s:s, s:s?, s:s?, s:i, s:i, s:f}", "id", mg->model, "source", mg->source, "digest",
                              mg->digest, "running", mg->running, "waiting", mg->waiting, "kv_usage", mg->kv_usage);
        for (int k = 0; k < m->n_models; k++) {
            const struct model_series *ms = &m->models[k];
            if (strcmp(ms->model, mg->model) != 0)
                continue;
            json_object_set_new(o, "prompt_tokens", json_integer((json_int_t)ms->prompt_tokens));
            json_object_set_new(o, "generated_tokens", json_integer((json_int_t)ms->generation_tokens));
            json_object_set_new(o, "ttft", histogram_json(&ms->ttft));
            json_object_set_new(o, "itl", histogram_json(&ms->itl));
        }
        json_array_append_new(models, o);
    }
    json_t *v = json_pack("{s:o, s:I, s:I, s:I, s:I, s:o, s:o, s:o}", "requests", req, "prompt_tokens",
                          (json_int_t)m->prompt_tokens, "generated_tokens", (json_int_t)m->generated_tokens,
                          "reused_tokens", (json_int_t)m->reused_tokens, "rejected_busy",
                          (json_int_t)m->rejected_busy, "ttft", histogram_json(&m->ttft), "itl",
                          histogram_json(&m->itl), "duration", histogram_json(&m->duration));
    pthread_mutex_unlock(&m->mu);
    json_object_update_new(v, json_pack("{s:i, s:i, s:i, s:I, s:I, s:f, s:I, s:I, s:i, s:o}", "slots", g->slots_total,
                                        "slots_active", g->slots_active, "queue_depth", g->queue_depth, "kv_used",
                                        (json_int_t)g->kv_used, "kv_capacity", (json_int_t)g->kv_capacity,
                                        "kv_usage",
                                        g->kv_capacity ? (double)g->kv_used / (double)g->kv_capacity : 0.0, "steps",
                                        (json_int_t)g->steps, "step_tokens", (json_int_t)g->step_tokens,
                                        "connections", g->conn_open, "models", models));
    json_object_set_new(v, "kv_shared", json_integer((json_int_t)g->kv_shared));
    json_object_set_new(v, "tokens_per_s_1m", json_real(rate_1m));
    json_object_set_new(v, "tokens_per_s_5m", json_real(rate_5m));
    return v;
}
