/* The OpenAI-compatible HTTP server (server.h): libmicrohttpd glue,
 * routing, keys and limits; the API's request and response shapes are in
 * oai.c. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "server/server.h"

#include "base/sys.h"
#include "server/metrics.h"
#include "server/oai.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_KEYS 256
#define MAX_KEY_LEN 256

struct api_key {
    char id[64];
    char key[MAX_KEY_LEN];
    size_t len;
};

struct server {
    struct server_params p;
    struct oai_model model;
    struct MHD_Daemon *mhd;
    int port;
    struct metrics metrics;
    struct api_key *keys;
    int n_keys;
    atomic_bool draining;
    atomic_int running; /* generation requests in progress */
};

struct server_params server_defaults(void)
{
    return (struct server_params){
        .host = "127.0.0.1",
        .port = 8080,
        .n_parallel = 4,
        .n_ctx = 4096,
        .max_queue = 64,
        .max_body = 1u << 20,
        .timeout_s = 600,
        .max_connections = 256,
    };
}

int server_port(const struct server *s) { return s->port; }
const char *server_model_id(const struct server *s) { return s->model.id; }

static void logf_(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct server *s, const char *fmt, ...)
{
    if (!s->p.log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->p.log(s->p.log_user, line);
}

/* ---- API keys ---- */

/* The key file: one key per line, optionally after an id ("ID KEY");
 * blank lines and lines starting with '#' are skipped. */
static int load_keys(struct server *s, const char *path, pb_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return pb_fail(err, PB_EIO, "%s: %s", path, strerror(errno));
    s->keys = calloc(MAX_KEYS, sizeof *s->keys);
    if (!s->keys) {
        fclose(f);
        return pb_fail(err, PB_ENOMEM, "out of memory");
    }
    char line[1024];
    int lineno = 0, rc = PB_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            rc = pb_fail(err, PB_EFORMAT, "%s:%d: line too long", path, lineno);
            break;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
            line[--n] = '\0';
        char *p = line + strspn(line, " \t");
        if (!*p || *p == '#')
            continue;
        char *sp = p + strcspn(p, " \t"), *id = NULL, *key = p;
        if (*sp) {
            *sp = '\0';
            id = p;
            key = sp + 1 + strspn(sp + 1, " \t");
            if (strpbrk(key, " \t")) {
                rc = pb_fail(err, PB_EFORMAT, "%s:%d: expected KEY or ID KEY", path, lineno);
                break;
            }
        }
        size_t kl = strlen(key);
        if (kl < 8 || kl >= MAX_KEY_LEN) {
            rc = pb_fail(err, PB_EFORMAT, "%s:%d: a key must have 8 to %d characters", path, lineno, MAX_KEY_LEN - 1);
            break;
        }
        for (size_t i = 0; i < kl; i++)
            if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e) {
                rc = pb_fail(err, PB_EFORMAT, "%s:%d: a key is printable ASCII without spaces", path, lineno);
                break;
            }
        if (rc)
            break;
        if (s->n_keys == MAX_KEYS) {
            rc = pb_fail(err, PB_ERANGE, "%s: more than %d keys", path, MAX_KEYS);
            break;
        }
        struct api_key *k = &s->keys[s->n_keys++];
        snprintf(k->id, sizeof k->id, "%s", id ? id : "");
        if (!id)
            snprintf(k->id, sizeof k->id, "key%d", s->n_keys);
        memcpy(k->key, key, kl);
        k->len = kl;
    }
    fclose(f);
    if (!rc && s->n_keys == 0)
        rc = pb_fail(err, PB_EFORMAT, "%s: no keys in the file", path);
    return rc;
}

/* Compares in time that depends only on the key's length bound, not on
 * where the first difference is; every key is compared. */
static const struct api_key *find_key(const struct server *s, const char *given)
{
    size_t gl = strnlen(given, MAX_KEY_LEN);
    const struct api_key *found = NULL;
    for (int i = 0; i < s->n_keys; i++) {
        const struct api_key *k = &s->keys[i];
        unsigned diff = (unsigned)(gl ^ k->len);
        for (size_t j = 0; j < MAX_KEY_LEN; j++) {
            unsigned char a = j < gl ? (unsigned char)given[j] : 0, b = j < k->len ? (unsigned char)k->key[j] : 0;
            diff |= (unsigned)(a ^ b);
        }
        if (diff == 0 && !found)
            found = k;
    }
    return found;
}

/* ---- responses ---- */

static enum MHD_Result send_buffer(struct MHD_Connection *c, int status, const char *type, const char *body,
                                   size_t len, const char *retry_after)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (retry_after)
        MHD_add_response_header(r, "Retry-After", retry_after);
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *v, const char *retry_after)
{
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!text)
        return send_buffer(c, 500, "application/json", "{\"error\":{\"message\":\"out of memory\"}}", 38, NULL);
    enum MHD_Result r = send_buffer(c, status, "application/json", text, strlen(text), retry_after);
    free(text);
    return r;
}

/* ---- connections ---- */

/* What a connection's current request has gathered. */
struct conn {
    struct server *srv;
    char endpoint[48];
    struct sbuf body;
    bool too_large;
    int status; /* of the response queued, for the metrics */
    double t0;
    struct oai_gen *gen; /* a generation request, streaming or not */
    struct MHD_Connection *connection;
};

/* True when the client closed its side (or the socket broke). */
static bool client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd pfd = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static const char *known_endpoint(const char *url)
{
    static const char *const names[] = {"/health", "/ready", "/metrics", "/v1/models", "/v1/chat/completions",
                                        "/v1/completions"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(url, names[i]))
            return names[i];
    if (!strncmp(url, "/v1/models/", 11))
        return "/v1/models";
    return "other";
}

static enum MHD_Result reply_error(struct conn *cn, struct MHD_Connection *c, int status, const char *type,
                                   const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result reply_error(struct conn *cn, struct MHD_Connection *c, int status, const char *type,
                                   const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cn->status = status;
    return send_json(c, status, oai_error(msg, type, code), status == 503 ? "1" : NULL);
}

/* A streamed answer: SSE events as the scheduler hands over text; a
 * client that goes away while waiting cancels it. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct conn *cn = cls;
    for (;;) {
        ssize_t n = oai_stream_read(cn->gen, buf, max, 0.1);
        if (n == OAI_STREAM_END)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (n > 0)
            return n;
        if (client_gone(cn->connection)) {
            oai_gen_cancel(cn->gen);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void stream_free(void *cls)
{
    (void)cls; /* the connection's completion callback frees it */
}

static enum MHD_Result handle_generation(struct conn *cn, struct MHD_Connection *c, bool chat)
{
    struct server *s = cn->srv;
    if (atomic_load(&s->draining))
        return reply_error(cn, c, 503, "server_error", "draining", "the server is shutting down");
    struct oai_error e = {0};
    struct oai_gen *g = NULL;
    int status = oai_gen_start(&s->model, chat, cn->body.data, cn->body.len, s->p.max_tokens, s->p.timeout_s, &g, &e);
    if (status != 200) {
        if (status == 503)
            logf_(s, "busy: %s", e.message);
        return reply_error(cn, c, status, e.type, e.code[0] ? e.code : NULL, "%s", e.message);
    }
    cn->gen = g;
    atomic_fetch_add(&s->running, 1);
    if (oai_gen_streaming(g)) {
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 << 10, stream_reader, cn, stream_free);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        cn->status = 200;
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    /* the whole answer, waiting here while checking that the client stays */
    while (!oai_gen_wait(g, 0.1))
        if (client_gone(c))
            oai_gen_cancel(g);
    json_t *body = NULL;
    status = oai_gen_result(g, &body, &e);
    if (status != 200)
        return reply_error(cn, c, status, e.type, e.code[0] ? e.code : NULL, "%s", e.message);
    cn->status = 200;
    return send_json(c, 200, body, NULL);
}

static enum MHD_Result route(struct conn *cn, struct MHD_Connection *c, const char *url, const char *method)
{
    struct server *s = cn->srv;
    const bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (!get)
            return reply_error(cn, c, 405, "invalid_request_error", NULL, "use GET for %s", url);
        cn->status = 200;
        return send_buffer(c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    }
    if (!strcmp(url, "/ready")) {
        if (!get)
            return reply_error(cn, c, 405, "invalid_request_error", NULL, "use GET for %s", url);
        bool ready = !atomic_load(&s->draining);
        cn->status = ready ? 200 : 503;
        return ready ? send_buffer(c, 200, "application/json", "{\"status\":\"ready\"}", 18, NULL)
                     : send_buffer(c, 503, "application/json", "{\"status\":\"draining\"}", 21, "1");
    }
    if (!strcmp(url, "/metrics")) {
        if (!get)
            return reply_error(cn, c, 405, "invalid_request_error", NULL, "use GET for %s", url);
        struct sched_stats st;
        sched_get_stats(s->model.sched, &st);
        struct metrics_gauges g = {st.n_slots,      st.active,         st.queued,
                                   st.kv_used,      st.kv_capacity,    !atomic_load(&s->draining),
                                   st.steps,        st.step_tokens,    st.step_seconds,
                                   st.sample_seconds};
        struct sbuf out = {0};
        if (metrics_render(&s->metrics, &g, &out)) {
            sbuf_free(&out);
            return MHD_NO;
        }
        cn->status = 200;
        enum MHD_Result r = send_buffer(c, 200, "text/plain; version=0.0.4", out.data, out.len, NULL);
        sbuf_free(&out);
        return r;
    }
    if (strncmp(url, "/v1/", 4) != 0)
        return reply_error(cn, c, 404, "invalid_request_error", "not_found", "no such route: %s %s", method, url);

    /* /v1: keys, then the API */
    if (s->n_keys) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        const struct api_key *k = NULL;
        if (auth && !strncasecmp(auth, "Bearer ", 7))
            k = find_key(s, auth + 7 + strspn(auth + 7, " "));
        if (!k)
            return reply_error(cn, c, 401, "invalid_request_error", "invalid_api_key",
                               auth ? "incorrect API key provided" : "missing API key (Authorization: Bearer KEY)");
    }
    if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11)) {
        if (!get)
            return reply_error(cn, c, 405, "invalid_request_error", NULL, "use GET for %s", url);
        if (url[10] == '/') {
            if (strcmp(url + 11, s->model.id) != 0)
                return reply_error(cn, c, 404, "invalid_request_error", "model_not_found",
                                   "the model '%s' does not exist", url + 11);
            cn->status = 200;
            return send_json(c, 200, oai_model_object(&s->model), NULL);
        }
        cn->status = 200;
        return send_json(c, 200, oai_models_list(&s->model), NULL);
    }
    const bool is_chat = !strcmp(url, "/v1/chat/completions"), is_cmpl = !strcmp(url, "/v1/completions");
    if (!is_chat && !is_cmpl)
        return reply_error(cn, c, 404, "invalid_request_error", "not_found", "no such route: %s %s", method, url);
    if (!post)
        return reply_error(cn, c, 405, "invalid_request_error", NULL, "use POST for %s", url);
    return handle_generation(cn, c, is_chat);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    struct server *s = cls;
    struct conn *cn = *con_cls;
    if (!cn) {
        if (!(cn = calloc(1, sizeof *cn)))
            return MHD_NO;
        cn->srv = s;
        cn->connection = c;
        cn->t0 = sys_now();
        snprintf(cn->endpoint, sizeof cn->endpoint, "%s", known_endpoint(url));
        *con_cls = cn;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->p.max_body)
            cn->too_large = true;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cn->too_large && cn->body.len + *upload_size > s->p.max_body)
            cn->too_large = true;
        if (!cn->too_large && sbuf_add(&cn->body, upload, *upload_size))
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (cn->too_large)
        return reply_error(cn, c, 413, "invalid_request_error", "request_too_large",
                           "the request body is larger than %zu bytes", s->p.max_body);
    return route(cn, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)c;
    struct server *s = cls;
    struct conn *cn = *con_cls;
    if (!cn)
        return;
    *con_cls = NULL;
    const double dt = sys_now() - cn->t0;
    if (cn->gen) {
        struct oai_gen_info info;
        oai_gen_info(cn->gen, &info);
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            oai_gen_cancel(cn->gen);
        metrics_tokens(&s->metrics, (uint64_t)info.n_prompt, (uint64_t)info.n_gen, (uint64_t)info.n_reused);
        if (info.n_gen > 0)
            metrics_ttft(&s->metrics, info.ttft);
        logf_(s, "%s %d prompt=%d cached=%d completion=%d ttft=%.3fs duration=%.3fs finish=%s%s", cn->endpoint,
              cn->status, info.n_prompt, info.n_reused, info.n_gen, info.ttft, dt, info.finish,
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (client gone)");
        oai_gen_free(cn->gen);
        atomic_fetch_sub(&s->running, 1);
    }
    metrics_request(&s->metrics, cn->endpoint, cn->status ? cn->status : 400);
    metrics_duration(&s->metrics, dt);
    sbuf_free(&cn->body);
    free(cn);
}

static void on_itl(void *user, double seconds)
{
    struct server *s = user;
    metrics_itl(&s->metrics, seconds);
}

/* ---- start and stop ---- */

static int resolve_host(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len, bool *v6, pb_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int e = getaddrinfo(host, ps, &hints, &res);
    if (e)
        return pb_fail(err, PB_EINVAL, "cannot use host '%s': %s", host, gai_strerror(e));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return PB_OK;
}

int server_open(const struct server_params *p, struct server **out, pb_err *err)
{
    *out = NULL;
    if (!p->model_path)
        return pb_fail(err, PB_EINVAL, "no model to serve");
    if (p->port < 0 || p->port > 65535)
        return pb_fail(err, PB_EINVAL, "port %d out of range 0..65535", p->port);
    if (p->max_body < 1024)
        return pb_fail(err, PB_EINVAL, "a body limit below 1 KiB");
    if (!(p->timeout_s > 0))
        return pb_fail(err, PB_EINVAL, "the timeout must be positive");
    struct server *s = calloc(1, sizeof *s);
    if (!s)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    s->p = *p;
    if (!s->p.host)
        s->p.host = "127.0.0.1";
    if (s->p.max_connections <= 0)
        s->p.max_connections = 256;
    metrics_init(&s->metrics);
    atomic_init(&s->draining, false);
    atomic_init(&s->running, 0);
    int rc = PB_OK;
    if (p->api_key_file && (rc = load_keys(s, p->api_key_file, err)))
        goto fail;
    struct sched_params sp = {
        .n_slots = p->n_parallel,
        .n_ctx = p->n_ctx,
        .n_batch = p->n_batch,
        .n_threads = p->n_threads,
        .kv_type = p->kv_type,
        .max_queue = p->max_queue,
        .prefill_chunk = p->prefill_chunk,
        .step_target_s = p->step_target_s,
    };
    if ((rc = oai_model_open(&s->model, p->model_path, p->alias, p->chat_format, &sp, err)))
        goto fail;
    s->model.on_itl = on_itl;
    s->model.on_itl_user = s;
    struct sockaddr_storage ss;
    socklen_t sl;
    bool v6 = false;
    if ((rc = resolve_host(s->p.host, p->port, &ss, &sl, &v6, err)))
        goto fail;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     (v6 ? MHD_USE_IPv6 : 0);
    unsigned timeout = p->timeout_s > 1e6 ? 1000000u : (unsigned)(p->timeout_s + 0.999);
    s->mhd = MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &ss,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)s->p.max_connections, MHD_OPTION_CONNECTION_TIMEOUT, timeout,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64u << 10), MHD_OPTION_LISTENING_ADDRESS_REUSE,
                              1u, MHD_OPTION_END);
    if (!s->mhd) {
        rc = pb_fail(err, PB_EIO, "cannot listen on %s:%d (in use, or not allowed)", s->p.host, p->port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : p->port;
    logf_(s, "serving %s as '%s' on http://%s:%d (%d slots x %lld tokens, %s)", p->model_path, s->model.id,
          s->p.host, s->port, p->n_parallel, (long long)p->n_ctx, s->n_keys ? "API keys required" : "no API keys");
    *out = s;
    return PB_OK;
fail:
    server_free(s);
    return rc;
}

int server_drain(struct server *s, double timeout_s)
{
    atomic_store(&s->draining, true);
    if (s->mhd) {
        MHD_socket fd = MHD_quiesce_daemon(s->mhd);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
    }
    double end = sys_now() + timeout_s;
    int left;
    while ((left = atomic_load(&s->running)) > 0 && sys_now() < end) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    logf_(s, "drained: %d requests still running", left);
    return left;
}

void server_free(struct server *s)
{
    if (!s)
        return;
    if (s->model.sched)
        sched_cancel_all(s->model.sched); /* waiting connections end */
    if (s->mhd)
        MHD_stop_daemon(s->mhd); /* joins the connection threads */
    oai_model_close(&s->model);
    metrics_destroy(&s->metrics);
    if (s->keys) {
        volatile char *k = (volatile char *)s->keys; /* keys do not linger in freed memory */
        for (size_t i = 0; i < MAX_KEYS * sizeof *s->keys; i++)
            k[i] = 0;
    }
    free(s->keys);
    free(s);
}
