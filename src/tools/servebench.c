/* Load on an OpenAI-compatible server over HTTP/1.1 (servebench.h): a
 * small streaming client on plain sockets, one thread per client. */
#define _GNU_SOURCE
#include "plumb/bench.h"

#include "base/err.h"

#include "base/rng.h"
#include "base/sbuf.h"
#include "base/sys.h"
#include "tools/url.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct target {
    char host[256];
    char port[16];
    char authority[300]; /* the Host header: HOST:PORT, IPv6 in brackets */
};

/* http://HOST[:PORT][/...]: the path is not used (the API's own are). */
static int parse_target(const char *url, struct target *t, pb_err *err)
{
    struct url u;
    int rc = url_parse(url, "server", "http", &u, err);
    if (rc)
        return rc;
    snprintf(t->host, sizeof t->host, "%s", u.host);
    snprintf(t->port, sizeof t->port, "%d", u.port);
    char h[300];
    snprintf(t->authority, sizeof t->authority, "%s:%d", url_host_bracketed(&u, h, sizeof h), u.port);
    return PB_OK;
}

static int dial(const struct target *t)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(t->host, t->port, &hints, &res))
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        struct timeval tv = {600, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    return fd;
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

static double epoch_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The value of header name (case-insensitive) in the head, into out. */
static void header_value(const char *head, const char *name, char *out, size_t size)
{
    out[0] = '\0';
    const size_t n = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (!strncasecmp(h, name, n) && h[n] == ':') {
            const char *v = h + n + 1 + strspn(h + n + 1, " \t");
            size_t len = strcspn(v, "\r\n");
            while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
                len--;
            snprintf(out, size, "%.*s", (int)len, v);
            return;
        }
    }
}

/* The request body: a prompt of token ids from g (the same ids each time
 * when g is reseeded for it). */
static char *request_body(const struct servebench_params *p, struct rng *g)
{
    json_t *ids = json_array();
    for (int i = 0; i < p->prompt_tokens; i++)
        json_array_append_new(ids, json_integer(p->vocab_lo + (json_int_t)(rng_u64(g) % (uint64_t)(p->vocab_hi - p->vocab_lo))));
    json_t *body = json_pack("{s:o, s:i, s:b, s:b, s:f, s:{s:b}}", "prompt", ids, "max_tokens", p->gen_tokens, "stream",
                             1, "ignore_eos", 1, "temperature", 0.0, "stream_options", "include_usage", 1);
    if (p->model)
        json_object_set_new(body, "model", json_string(p->model));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

/* A response body in chunked transfer coding, decoded as it comes
 * (balancers re-chunk a stream as they like: an event may span chunks). */
struct dechunk {
    bool chunked;
    int state;      /* 0: size line, 1: data, 2: the CRLF after data, 3: the end */
    size_t left;    /* of the current chunk's data */
    char line[40];  /* the size line so far */
    size_t ll;
};

/* Decodes n bytes at p onto body; false on a framing error. */
static bool dechunk_feed(struct dechunk *d, const char *p, size_t n, struct sbuf *body)
{
    if (!d->chunked)
        return sbuf_add(body, p, n) == PB_OK;
    for (size_t i = 0; i < n;) {
        if (d->state == 0) {
            const char c = p[i++];
            if (c == '\n') {
                d->line[d->ll] = '\0';
                char *end;
                d->left = strtoul(d->line, &end, 16);
                if (end == d->line)
                    return false;
                d->ll = 0;
                d->state = d->left ? 1 : 3;
            } else if (d->ll < sizeof d->line - 1) {
                d->line[d->ll++] = c;
            } else {
                return false;
            }
        } else if (d->state == 1) {
            size_t k = n - i < d->left ? n - i : d->left;
            if (sbuf_add(body, p + i, k))
                return false;
            i += k;
            d->left -= k;
            if (d->left == 0)
                d->state = 2;
        } else if (d->state == 2) {
            if (p[i++] == '\n')
                d->state = 0;
        } else {
            i = n; /* trailers */
        }
    }
    return true;
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

/* Streams one completion with the body text; fills s. session: the
 * session header's value, or NULL. */
static void one_request(const struct servebench_params *p, const struct target *t, const char *text,
                        const char *session, struct sample *s)
{
    struct servebench_request rec = s->rec; /* level, client, index */
    memset(s, 0, sizeof *s);
    s->rec = rec;
    s->sent = true;
    char auth[400] = "", sess[300] = "";
    if (p->api_key)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", p->api_key);
    if (session)
        snprintf(sess, sizeof sess, "%s: %s\r\n", p->session_header, session);
    char head[1600];
    int hn = snprintf(head, sizeof head,
                      "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Type: application/json\r\n"
                      "%s%sContent-Length: %zu\r\n\r\n",
                      t->authority, auth, sess, strlen(text));
    s->rec.start = epoch_now();
    int fd = dial(t);
    const double t0 = sys_now();
    double last = 0;
    s->itl = malloc((size_t)(p->gen_tokens + 8) * sizeof *s->itl);
    const char *why = NULL;
    struct sbuf resp = {0}, body = {0}; /* the head until it is whole; the decoded body */
    struct dechunk dc = {0};
    if (fd < 0 || !s->itl) {
        why = "connect";
        goto done;
    }
    if (send(fd, head, (size_t)hn, MSG_NOSIGNAL) != hn ||
        send(fd, text, strlen(text), MSG_NOSIGNAL) != (ssize_t)strlen(text)) {
        why = "send";
        goto done;
    }
    bool headers = false, saw_done = false;
    int events = 0;
    char raw[16384];
    while (!saw_done) {
        ssize_t k = recv(fd, raw, sizeof raw, 0);
        if (k <= 0)
            break;
        const double now = sys_now();
        const char *from = raw;
        size_t n = (size_t)k;
        if (!headers) {
            if (sbuf_add(&resp, raw, n))
                break;
            char *e = strstr(resp.data, "\r\n\r\n");
            if (!e)
                continue;
            sscanf(resp.data, "HTTP/1.%*d %d", &s->rec.status);
            e[2] = '\0';
            header_value(resp.data, "X-Plumb-Instance", s->rec.instance, sizeof s->rec.instance);
            char te[64];
            header_value(resp.data, "Transfer-Encoding", te, sizeof te);
            dc.chunked = strcasestr(te, "chunked") != NULL;
            if (s->rec.status != 200)
                break;
            headers = true;
            from = e + 4;
            n = resp.len - (size_t)(from - resp.data);
        }
        if (!dechunk_feed(&dc, from, n, &body)) {
            why = "bad chunked framing";
            break;
        }
        if (body.len)
            take_events(p, &body, t0, now, &last, &events, &saw_done, s);
    }
    s->ok = saw_done && s->tokens > 0;
    s->gen_s = last - t0 - s->ttft;
    if (!s->ok && !why)
        why = s->rec.status == 0 ? "no response" : s->rec.status != 200 ? "status" : "stream cut";
done:
    sbuf_free(&resp);
    sbuf_free(&body);
    s->rec.end = epoch_now();
    s->rec.ok = s->ok;
    s->rec.tokens = s->tokens;
    if (why && !strcmp(why, "status"))
        snprintf(s->rec.error, sizeof s->rec.error, "status %d", s->rec.status);
    else if (why)
        snprintf(s->rec.error, sizeof s->rec.error, "%s", why);
    if (fd >= 0)
        close(fd);
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
            j->samples[i].rec.start = j->samples[i].rec.end = epoch_now();
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
    size_t ni = 0, nt = 0;
    for (int i = 0; i < n_req && rc == PB_OK; i++) {
        if (!all[i].sent)
            continue; /* after a stop */
        if (kept)
            r->requests[r->n_requests++] = all[i].rec;
        if (!all[i].ok) {
            lv->failed++;
            continue;
        }
        lv->tokens += all[i].tokens;
        ttft[nt] = all[i].ttft;
        tpu[nt++] = all[i].gen_s > 0 ? (all[i].tokens - 1) / all[i].gen_s : 0;
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
        lv->tps_per_user = quantile(tpu, nt, 0.5);
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
    if (p->n_levels < 1 || p->n_levels > SERVEBENCH_MAX_LEVELS || p->prompt_tokens < 1 || p->gen_tokens < 1 ||
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
    int probe = dial(&t);
    if (probe < 0)
        return pb_fail(err, PB_EIO, "cannot connect to %s", p->url);
    close(probe);
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
