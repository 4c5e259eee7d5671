/* Load on an OpenAI-compatible server (servebench.h): streamed
 * completions through libcurl (http or https), one thread per client. */
#define _GNU_SOURCE
#include "plumb/bench.h"

#include "base/err.h"
#include "base/http.h"

#include "base/rng.h"
#include "base/sbuf.h"
#include "base/sys.h"
#include "tools/url.h"

#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct target {
    char base[1400]; /* SCHEME://AUTHORITY: the API's paths follow */
};

/* http(s)://HOST[:PORT][/...]: the path is not used (the API's own are). */
static int parse_target(const char *url, struct target *t, pb_err *err)
{
    struct url u;
    int rc = url_parse(url, "server", "http,https", &u, err);
    if (rc)
        return rc;
    char h[300];
    snprintf(t->base, sizeof t->base, "%s://%s:%d", u.scheme, url_host_bracketed(&u, h, sizeof h), u.port);
    return PB_OK;
}

/* A handle with what every request of the run shares. */
static CURL *easy(const char *url, char *errbuf)
{
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a stream silent for 10 minutes is cut */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 600L);
    return h;
}

/* One request's figures. */
struct sample {
    bool sent;
    bool ok;
    int tokens;
    double ttft, gen_s;
    double *itl;
    int n_itl;
    struct servebench_request rec;
};

/* A token id drawn from g within the load's vocabulary. */
static json_t *draw_id(const struct servebench_params *p, struct rng *g)
{
    return json_integer(p->vocab_lo + (json_int_t)(rng_u64(g) % (uint64_t)(p->vocab_hi - p->vocab_lo)));
}

/* The request body: the shared prefix (the same ids in every request of
 * the run), then a prompt of token ids from g (the same ids each time
 * when g is reseeded for it). */
static char *request_body(const struct servebench_params *p, struct rng *g)
{
    json_t *ids = json_array();
    struct rng shared;
    rng_seed(&shared, p->seed ^ 0x5ca1ab1e5eedull);
    for (int i = 0; i < p->shared_prefix; i++)
        json_array_append_new(ids, draw_id(p, &shared));
    for (int i = 0; i < p->prompt_tokens; i++)
        json_array_append_new(ids, draw_id(p, g));
    json_t *body = json_pack("{s:o, s:i, s:b, s:b, s:f, s:{s:b}}", "prompt", ids, "max_tokens", p->gen_tokens, "stream",
                             1, "ignore_eos", 1, "temperature", 0.0, "stream_options", "include_usage", 1);
    if (p->model)
        json_object_set_new(body, "model", json_string(p->model));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

/* The server-sent events whole in body (each "data: ..." up to a blank
 * line) into s; what they used is removed from body. */
static void take_events(const struct servebench_params *p, struct sbuf *body, double t0, double now, double *last,
                        int *events, bool *saw_done, struct sample *s)
{
    char *p0 = body->data;
    for (;;) {
        char *d = strstr(p0, "data: ");
        if (!d)
            break;
        char *end = strstr(d, "\n\n");
        if (!end)
            break;
        *end = '\0';
        if (!strncmp(d + 6, "[DONE]", 6)) {
            *saw_done = true;
        } else {
            json_t *ev = json_loads(d + 6, JSON_ALLOW_NUL, NULL);
            json_t *c = json_array_get(json_object_get(ev, "choices"), 0);
            const char *tx = json_string_value(json_object_get(c, "text"));
            if (tx && *tx) {
                if ((*events)++ == 0)
                    s->ttft = now - t0;
                else if (s->n_itl < p->gen_tokens + 8)
                    s->itl[s->n_itl++] = now - *last;
                *last = now;
            }
            json_t *u = json_object_get(ev, "usage");
            if (json_is_object(u)) {
                s->tokens = (int)json_integer_value(json_object_get(u, "completion_tokens"));
                s->rec.cached_tokens = (int)json_integer_value(
                    json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
            }
            json_decref(ev);
        }
        p0 = end + 2;
    }
    size_t used = (size_t)(p0 - body->data);
    memmove(body->data, p0, body->len - used + 1);
    body->len -= used;
}

/* What a transfer's callbacks fill. */
struct transfer {
    const struct servebench_params *p;
    struct sample *s;
    CURL *h;
    struct sbuf body; /* the events not yet taken; an error's body */
    double t0, last;
    int events;
    bool saw_done, failed; /* out of memory */
};

static size_t on_header(char *data, size_t size, size_t n, void *user)
{
    struct transfer *x = user;
    size_t len = size * n, vl;
    const char *v = http_field_value(data, len, "X-Plumb-Instance", &vl);
    if (v)
        snprintf(x->s->rec.instance, sizeof x->s->rec.instance, "%.*s", (int)vl, v);
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    struct transfer *x = user;
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 && x->body.len > 4096)
        return len; /* enough of an error's body to say why */
    if (sbuf_add(&x->body, data, len)) {
        x->failed = true;
        return 0;
    }
    if (status == 200)
        take_events(x->p, &x->body, x->t0, sys_now(), &x->last, &x->events, &x->saw_done, x->s);
    return len;
}

/* Why an answer that is not 200 failed: the OpenAI error's message, or
 * the start of the body. */
static void status_reason(struct sample *s, const struct sbuf *body)
{
    json_t *j = body->len ? json_loadb(body->data, body->len, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    char text[160] = "";
    if (msg)
        snprintf(text, sizeof text, "%s", msg);
    else if (body->len)
        snprintf(text, sizeof text, "%.*s", (int)strcspn(body->data, "\r\n"), body->data);
    snprintf(s->rec.error, sizeof s->rec.error, "status %d%s%s", s->rec.status, text[0] ? ": " : "", text);
    json_decref(j);
}

/* Streams one completion with the body text; fills s. session: the
 * session header's value, or NULL. */
static void one_request(const struct servebench_params *p, const struct target *t, const char *text,
                        const char *session, struct sample *s)
{
    struct servebench_request rec = s->rec; /* level, client, index */
    memset(s, 0, sizeof *s);
    s->rec = rec;
    s->sent = true;
    char url[1500], errbuf[CURL_ERROR_SIZE];
    snprintf(url, sizeof url, "%s/v1/completions", t->base);
    struct transfer x = {.p = p, .s = s};
    struct curl_slist *hdrs = NULL;
    char line[400];
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip before the prompt */
    if (p->api_key) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", p->api_key);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (session) {
        snprintf(line, sizeof line, "%s: %s", p->session_header, session);
        hdrs = curl_slist_append(hdrs, line);
    }
    s->itl = malloc((size_t)(p->gen_tokens + 8) * sizeof *s->itl);
    x.h = easy(url, errbuf);
    s->rec.start = sys_wall_now();
    if (!x.h || !hdrs || !s->itl) {
        snprintf(s->rec.error, sizeof s->rec.error, "out of memory");
        goto done;
    }
    curl_easy_setopt(x.h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(x.h, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(x.h, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
    curl_easy_setopt(x.h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(x.h, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(x.h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(x.h, CURLOPT_WRITEDATA, &x);
    x.t0 = sys_now();
    CURLcode cc = curl_easy_perform(x.h);
    long status = 0;
    curl_easy_getinfo(x.h, CURLINFO_RESPONSE_CODE, &status);
    s->rec.status = (int)status;
    s->ok = cc == CURLE_OK && status == 200 && x.saw_done && s->tokens > 0;
    s->gen_s = x.last - x.t0 - s->ttft;
    if (s->ok)
        goto done;
    if (x.failed)
        snprintf(s->rec.error, sizeof s->rec.error, "out of memory");
    else if (status != 200 && status != 0)
        status_reason(s, &x.body);
    else if (cc != CURLE_OK) /* libcurl's words, cut to the field: "Failed to connect to ...: Connection refused" */
        snprintf(s->rec.error, sizeof s->rec.error, "%.*s", (int)sizeof s->rec.error - 1,
                 errbuf[0] ? errbuf : curl_easy_strerror(cc));
    else
        snprintf(s->rec.error, sizeof s->rec.error, "stream cut%s", x.saw_done ? " (no usage at its end)" : "");
done:
    s->rec.end = sys_wall_now();
    s->rec.ok = s->ok;
    s->rec.tokens = s->tokens;
    sbuf_free(&x.body);
    curl_slist_free_all(hdrs);
    if (x.h)
        curl_easy_cleanup(x.h);
}

struct client_job {
    const struct servebench_params *p;
    const struct target *t;
    uint64_t seed;
    int level, client;
    struct sample *samples; /* requests_per_client (those after a stop: not sent) */
};

static void *client_main(void *arg)
{
    struct client_job *j = arg;
    struct rng g;
    rng_seed(&g, j->seed);
    char session[64];
    snprintf(session, sizeof session, "bench-%d-%d", j->level, j->client);
    char *text = NULL;
    for (int i = 0; i < j->p->requests_per_client; i++) {
        if (j->p->stop && atomic_load(j->p->stop))
            break;
        if (!text || !j->p->repeat_prompt) {
            free(text);
            text = request_body(j->p, &g);
        }
        j->samples[i].rec = (struct servebench_request){.level = j->level, .client = j->client, .index = i};
        if (text) {
            one_request(j->p, j->t, text, j->p->session_header ? session : NULL, &j->samples[i]);
        } else {
            j->samples[i].sent = true;
            j->samples[i].rec.start = j->samples[i].rec.end = sys_wall_now();
            snprintf(j->samples[i].rec.error, sizeof j->samples[i].rec.error, "out of memory");
        }
    }
    free(text);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(double *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* A level's figures from its samples (their inter-token times freed), and
 * with keep_requests its records appended to the report's. */
static int level_figures(const struct servebench_params *p, struct sample *all, int n_req,
                         struct servebench_level *lv, struct servebench_report *r)
{
    size_t n_itl = 0;
    for (int i = 0; i < n_req; i++)
        n_itl += (size_t)all[i].n_itl;
    double *itl = malloc((n_itl + 1) * sizeof *itl), *ttft = malloc((size_t)n_req * sizeof *ttft),
           *tpu = malloc((size_t)n_req * sizeof *tpu);
    struct servebench_request *kept =
        p->keep_requests ? realloc(r->requests, (size_t)(r->n_requests + n_req) * sizeof *kept) : NULL;
    int rc = !itl || !ttft || !tpu || (p->keep_requests && !kept) ? PB_ENOMEM : PB_OK;
    if (kept)
        r->requests = kept;
    size_t ni = 0, nt = 0, ntpu = 0;
    for (int i = 0; i < n_req && rc == PB_OK; i++) {
        if (!all[i].sent)
            continue; /* after a stop */
        if (kept)
            r->requests[r->n_requests++] = all[i].rec;
        if (!all[i].ok) {
            if (!lv->failed)
                snprintf(lv->first_error, sizeof lv->first_error, "%s", all[i].rec.error);
            lv->failed++;
            continue;
        }
        lv->tokens += all[i].tokens;
        lv->prompt_tokens += p->shared_prefix + p->prompt_tokens;
        lv->cached_tokens += all[i].rec.cached_tokens;
        ttft[nt++] = all[i].ttft;
        /* an answer whose tokens all came in one read has no rate of its
         * own (not a rate of 0): its tokens over the whole request, a
         * bound below, stands for it */
        if (all[i].gen_s > 0 && all[i].tokens > 1)
            tpu[ntpu++] = (all[i].tokens - 1) / all[i].gen_s;
        else if (all[i].ttft + all[i].gen_s > 0)
            tpu[ntpu++] = all[i].tokens / (all[i].ttft + all[i].gen_s);
        memcpy(itl + ni, all[i].itl, (size_t)all[i].n_itl * sizeof *itl);
        ni += (size_t)all[i].n_itl;
    }
    for (int i = 0; i < n_req; i++)
        free(all[i].itl);
    if (rc == PB_OK) {
        lv->agg_tps = lv->wall_s > 0 ? (double)lv->tokens / lv->wall_s : 0;
        lv->ttft_median = quantile(ttft, nt, 0.5);
        lv->ttft_p95 = quantile(ttft, nt, 0.95);
        lv->itl_median = quantile(itl, ni, 0.5);
        lv->itl_p95 = quantile(itl, ni, 0.95);
        lv->tps_per_user = quantile(tpu, ntpu, 0.5);
    }
    free(itl);
    free(ttft);
    free(tpu);
    return rc;
}

int servebench_run(const struct servebench_params *p, struct servebench_report *r, pb_err *err)
{
    memset(r, 0, sizeof *r);
    struct target t;
    int rc = parse_target(p->url, &t, err);
    if (rc)
        return rc;
    if (p->n_levels < 1 || p->n_levels > SERVEBENCH_MAX_LEVELS || p->prompt_tokens < 1 || p->shared_prefix < 0 || p->gen_tokens < 1 ||
        p->requests_per_client < 1 || p->vocab_hi <= p->vocab_lo)
        return pb_fail(err, PB_EINVAL, "bad load parameters");
    if (p->session_header) {
        const char *h = p->session_header;
        bool token = *h && strlen(h) < 200;
        for (; *h && token; h++) /* an HTTP header name: a token */
            token = isalnum((unsigned char)*h) || strchr("!#$%&'*+-.^_`|~", *h);
        if (!token)
            return pb_fail(err, PB_EINVAL, "'%s' is not a header name", p->session_header);
    }
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before the clients' threads */
    char errbuf[CURL_ERROR_SIZE];
    CURL *probe = easy(t.base, errbuf);
    if (!probe)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    curl_easy_setopt(probe, CURLOPT_CONNECT_ONLY, 1L);
    CURLcode cc = curl_easy_perform(probe);
    curl_easy_cleanup(probe);
    if (cc != CURLE_OK)
        return pb_fail(err, PB_EIO, "cannot connect to %s: %s", p->url, errbuf[0] ? errbuf : curl_easy_strerror(cc));
    for (int li = 0; li < p->n_levels; li++) {
        const int c = p->levels[li], n_req = c * p->requests_per_client;
        struct client_job *jobs = calloc((size_t)c, sizeof *jobs);
        pthread_t *th = calloc((size_t)c, sizeof *th);
        struct sample *all = calloc((size_t)n_req, sizeof *all);
        if (!jobs || !th || !all) {
            free(jobs);
            free(th);
            free(all);
            servebench_report_free(r);
            return pb_fail(err, PB_ENOMEM, "out of memory");
        }
        const double t0 = sys_now();
        for (int k = 0; k < c; k++) {
            jobs[k] = (struct client_job){p, &t, p->seed * 0x9e3779b97f4a7c15ull + 1000003ull * (uint64_t)(li + 1) + (uint64_t)k,
                                          li, k, all + (size_t)k * (size_t)p->requests_per_client};
            pthread_create(&th[k], NULL, client_main, &jobs[k]);
        }
        for (int k = 0; k < c; k++)
            pthread_join(th[k], NULL);
        struct servebench_level *lv = &r->levels[li];
        lv->concurrency = c;
        lv->wall_s = sys_now() - t0;
        for (int i = 0; i < n_req; i++)
            lv->requests += all[i].sent;
        rc = level_figures(p, all, n_req, lv, r);
        r->n_levels = li + 1;
        free(all);
        free(jobs);
        free(th);
        if (rc) {
            servebench_report_free(r);
            return pb_fail(err, rc, "out of memory");
        }
    }
    return PB_OK;
}

void servebench_report_free(struct servebench_report *r)
{
    free(r->requests);
    r->requests = NULL;
    r->n_requests = 0;
}
