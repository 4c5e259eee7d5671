/* The OpenAI-compatible HTTP server (server.h): libmicrohttpd glue,
 * routing, keys and limits; the API's request and response shapes are in
 * oai.c. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "plumb/server.h"
#include "plumb/store.h"
#include "base/err.h"

#include "base/sbuf.h"
#include "base/sys.h"
#include "server/gate.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/models.h"
#include "server/oai.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_KEYS 256
#define MAX_KEY_LEN 256

struct api_key {
    char id[64];
    char key[MAX_KEY_LEN];
    size_t len;
    bool admin; /* may read the operations data and load or unload models (/v1/plumb/...) */
};

struct server {
    struct server_params p;
    struct engine_threads *threads; /* shared by every model */
    struct models *models;          /* the names served and their loaded copies (models.h) */
    struct MHD_Daemon *mhd;
    struct gate *gate;  /* accepts, and hands over connections whose request head has come */
    atomic_int n_conn;  /* connections libmicrohttpd holds */
    int port;
    struct metrics metrics;
    struct api_key *keys;
    int n_keys;
    atomic_bool draining;
    atomic_int running; /* generation requests in progress */
    char instance_id[72]; /* "" when none */
    double t_start;       /* sys_now() at server_open */
    bool ui;              /* the console's page is served (GET /) */
};

struct server_params server_defaults(void)
{
    return (struct server_params){
        .host = SERVER_DEFAULT_HOST,
        .port = SERVER_DEFAULT_PORT,
        .max_queue = ENGINE_DEFAULT_QUEUE,
        .max_body = SERVER_DEFAULT_MAX_BODY,
        .timeout_s = SERVER_DEFAULT_TIMEOUT_S,
        .max_connections = SERVER_DEFAULT_MAX_CONNECTIONS,
        .header_timeout_s = SERVER_DEFAULT_HEADER_TIMEOUT_S,
        .min_rate = SERVER_DEFAULT_MIN_RATE,
        .max_per_client = SERVER_DEFAULT_MAX_PER_CLIENT,
        .max_waiting = SERVER_DEFAULT_MAX_WAITING,
    };
}

struct server_model server_model_defaults(void)
{
    struct server_model m = {.engine = engine_defaults(), .keep_alive_s = SERVER_KEEP_ALIVE_DEFAULT};
    m.engine.n_slots = SERVER_DEFAULT_PARALLEL;
    return m;
}

int server_port(const struct server *s) { return s->port; }

bool server_instance_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && !strchr("._-", id[i]))
            return false;
    return true;
}

static void logf_(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct server *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    server_vlog(s->p.log, s->p.log_user, fmt, ap);
    va_end(ap);
}

void server_vlog(void (*log)(void *user, const char *line), void *user, const char *fmt, va_list ap)
{
    if (!log)
        return;
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    log(user, line);
}

/* ---- API keys ---- */

/* The key file: one key per line, optionally after an id ("ID KEY");
 * blank lines and lines starting with '#' are skipped. */
static int load_keys(struct server *s, const char *path, pb_err *err)
{
    int fd, rc0 = pb_open_input(path, &fd, err); /* a FIFO or /dev/zero would never end */
    if (rc0)
        return pb_wrap(err, rc0, "the API key file");
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        logf_(s, "warning: the API key file %s has mode %03o: other users of this machine can read (or change) the "
                 "keys; chmod 600 it (owned by the server's user)", path, (unsigned)(st.st_mode & 0777));
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return pb_fail(err, PB_EIO, "%s: %s", path, strerror(errno));
    }
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
        /* KEY, ID KEY, or ID KEY admin */
        char *field[4];
        int nf = 0;
        for (char *q = p; *q && nf < 4;) {
            field[nf++] = q;
            q += strcspn(q, " \t");
            if (*q)
                *q++ = '\0';
            q += strspn(q, " \t");
        }
        if (nf == 4 || (nf == 3 && strcmp(field[2], "admin") != 0)) {
            rc = pb_fail(err, PB_EFORMAT, "%s:%d: expected KEY, ID KEY or ID KEY admin", path, lineno);
            break;
        }
        char *id = nf >= 2 ? field[0] : NULL, *key = nf >= 2 ? field[1] : field[0];
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
        k->admin = nf == 3;
    }
    fclose(f);
    if (!rc && s->n_keys == 0)
        rc = pb_fail(err, PB_EFORMAT, "%s: no keys in the file", path);
    return rc;
}

bool server_key_pick(char *text, bool admin_first, char *key, size_t size)
{
    key[0] = 0;
    bool found_admin = false;
    for (char *save = NULL, *line = strtok_r(text, "\r\n", &save); line && !found_admin;
         line = strtok_r(NULL, "\r\n", &save)) {
        char *words[4] = {0};
        int n = 0;
        for (char *s2 = NULL, *w = strtok_r(line, " \t", &s2); w && n < 4; w = strtok_r(NULL, " \t", &s2))
            words[n++] = w;
        if (n == 0 || words[0][0] == '#' || n == 4 || (n == 3 && strcmp(words[2], "admin") != 0))
            continue;
        const char *k = n == 1 ? words[0] : words[1];
        if (admin_first && n == 3) {
            snprintf(key, size, "%s", k);
            found_admin = true;
        } else if (!key[0]) {
            snprintf(key, size, "%s", k);
        }
    }
    return key[0] != 0;
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

/* ---- served models ---- */

static void on_itl(void *user, const char *model, double seconds);

/* ---- responses ---- */

/* What a connection's current request has gathered. */
struct conn {
    struct server *srv;
    char endpoint[48];
    struct sbuf body;
    bool too_large;
    int status; /* of the response queued, for the metrics */
    double t0;
    struct oai_gen *gen; /* a generation request, streaming or not */
    struct served *model;/* its model (a reference) */
    struct oai_model om; /* the model as the request uses it (when using) */
    bool using;          /* a use of the model's loaded copy (models_use) */
    char key_id[64];
    bool admin;              /* the key has the admin flag, or the server has no keys */
    struct MHD_Connection *connection;
    uint64_t content_length; /* 0 when none (or chunked) */
    char request_id[72];     /* X-Request-Id: the client's, or made here */
    int n_embedded;          /* tokens of /v1/embeddings */
    int retry_after;         /* a model's 503: seconds to wait */
    char origin[256];        /* Origin, when CORS allows it ("" otherwise) */
    bool counted;            /* in the metrics (count) */
    bool left;               /* the client went away while its answer was made */
};

static void count(struct conn *cn, int status);

/* The headers every response of a request carries: its id, and CORS's
 * when the origin is allowed. */
static void common_headers(const struct conn *cn, struct MHD_Response *r)
{
    if (cn->srv->instance_id[0])
        MHD_add_response_header(r, "X-Plumb-Instance", cn->srv->instance_id);
    if (cn->request_id[0])
        MHD_add_response_header(r, "X-Request-Id", cn->request_id);
    if (cn->origin[0]) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", cn->origin);
        MHD_add_response_header(r, "Vary", "Origin");
        MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
    }
}

/* Queues response r with status (one request per connection: see
 * on_request) and lets go of it. */
static enum MHD_Result queue(struct conn *cn, int status, struct MHD_Response *r)
{
    MHD_add_response_header(r, "Connection", "close");
    if (!cn->gen || !oai_gen_streaming(cn->gen)) /* a whole answer: counted before it can arrive */
        count(cn, status);
    enum MHD_Result ret = MHD_queue_response(cn->connection, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_buffer(struct conn *cn, int status, const char *type, const char *body, size_t len,
                                   const char *retry_after)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    common_headers(cn, r);
    if (retry_after)
        MHD_add_response_header(r, "Retry-After", retry_after);
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    return queue(cn, status, r);
}

static enum MHD_Result send_json(struct conn *cn, int status, json_t *v, const char *retry_after)
{
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!text)
        return send_buffer(cn, 500, "application/json", "{\"error\":{\"message\":\"out of memory\"}}", 38, NULL);
    enum MHD_Result r = send_buffer(cn, status, "application/json", text, strlen(text), retry_after);
    free(text);
    return r;
}

/* ---- connections ---- */

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
                                        "/v1/completions", "/v1/embeddings", "/tokenize", "/detokenize"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(url, names[i]))
            return names[i];
    if (!strncmp(url, "/v1/models/", 11))
        return "/v1/models";
    if (!strncmp(url, "/v1/plumb/", 10))
        return "/v1/plumb";
    if (!strcmp(url, "/") || !strncmp(url, "/ui/", 4))
        return "/ui";
    return "other";
}

static enum MHD_Result reply_error(struct conn *cn, int status, const char *type,
                                   const char *code, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static enum MHD_Result reply_error(struct conn *cn, int status, const char *type,
                                   const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cn->status = status;
    return send_json(cn, status, oai_error(msg, type, code), status == 503 ? "1" : NULL);
}

/* A streamed answer: SSE events as the scheduler hands over text; a
 * client that goes away while waiting cancels it. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct conn *cn = cls;
    for (;;) {
        bool last;
        ssize_t n = oai_stream_read(cn->gen, buf, max, 0.1, &last);
        if (n == OAI_STREAM_END)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (last)
            count(cn, 200); /* before the stream's last events ([DONE]) can arrive */
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

static int body_model(struct conn *cn, struct oai_error *e);
static enum MHD_Result reply_model_error(struct conn *cn, int status, const struct oai_error *e);

static enum MHD_Result handle_generation(struct conn *cn, struct MHD_Connection *c, bool chat)
{
    struct server *s = cn->srv;
    if (atomic_load(&s->draining))
        return reply_error(cn, 503, "server_error", "draining", "the server is shutting down");
    struct oai_error e = {0};
    int status = body_model(cn, &e);
    if (status != 200)
        return reply_model_error(cn, status, &e);
    struct oai_gen *g = NULL;
    status = oai_gen_start(&cn->om, chat, cn->body.data, cn->body.len, s->p.max_tokens, s->p.timeout_s, &g, &e);
    if (status != 200) {
        if (status == 503)
            logf_(s, "busy: %s", e.message);
        return reply_error(cn, status, e.type, e.code[0] ? e.code : NULL, "%s", e.message);
    }
    cn->gen = g;
    atomic_fetch_add(&s->running, 1);
    if (oai_gen_streaming(g)) {
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 << 10, stream_reader, cn, stream_free);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        common_headers(cn, r);
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        cn->status = 200;
        return queue(cn, 200, r);
    }
    /* the whole answer, waiting here while checking that the client stays */
    while (!oai_gen_wait(g, 0.1))
        if (client_gone(c)) {
            cn->left = true;
            oai_gen_cancel(g);
        }
    json_t *body = NULL;
    status = oai_gen_result(g, &body, &e);
    if (status != 200)
        return reply_error(cn, status, e.type, e.code[0] ? e.code : NULL, "%s", e.message);
    cn->status = 200;
    return send_json(cn, 200, body, NULL);
}

/* The model a body names (or the only one), with a reference in
 * cn->model and a use of its loaded copy (loaded first if need be) in
 * cn->om; else the status of the error in *e. */
static int body_model(struct conn *cn, struct oai_error *e)
{
    struct server *s = cn->srv;
    char name[400];
    int has = oai_peek_model(cn->body.data, cn->body.len, name, sizeof name);
    if (has < 0) { /* not a JSON object, or a 'model' that is no name: said without loading a model */
        struct oai_request r;
        int st = oai_request_read("", 1, true, cn->body.data, cn->body.len, NULL, &r, e);
        if (st == 404) /* a name too long to be one */
            snprintf(e->message, sizeof e->message, "the model named does not exist (GET /v1/models lists them)");
        if (st == 200) {
            oai_request_free(&r);
            snprintf(e->message, sizeof e->message, "'model' must be the name of a model (GET /v1/models)");
            snprintf(e->type, sizeof e->type, "invalid_request_error");
            snprintf(e->code, sizeof e->code, "invalid_value");
            st = 400;
        }
        return st;
    }
    int status = models_pick(s->models, has == 1 ? name : NULL, &cn->model, e);
    if (status != 200)
        return status;
    status = models_use(s->models, cn->model, s->p.timeout_s, &cn->om, e, &cn->retry_after);
    cn->using = status == 200;
    if (status == 503)
        logf_(s, "busy: %s", e->message);
    return status;
}

/* A model's error: a 503's Retry-After as the model said. */
static enum MHD_Result reply_model_error(struct conn *cn, int status, const struct oai_error *e)
{
    if (status != 503 || cn->retry_after <= 0)
        return reply_error(cn, status, e->type, e->code[0] ? e->code : NULL, "%s", e->message);
    char ra[16];
    snprintf(ra, sizeof ra, "%d", cn->retry_after);
    cn->status = status;
    return send_json(cn, status, oai_error(e->message, e->type, e->code[0] ? e->code : NULL), ra);
}

/* POST /v1/embeddings, /tokenize, /detokenize */
static enum MHD_Result handle_model_call(struct conn *cn, const char *url)
{
    struct oai_error e = {0};
    int status = body_model(cn, &e);
    json_t *out = NULL;
    if (status != 200)
        return reply_model_error(cn, status, &e);
    if (status == 200) {
        struct oai_model *om = &cn->om;
        if (!strcmp(url, "/v1/embeddings")) {
            int n_tok = 0;
            status = oai_embeddings(om, cn->body.data, cn->body.len, &out, &n_tok, &e);
            cn->n_embedded = n_tok;
        } else if (!strcmp(url, "/tokenize")) {
            status = oai_tokenize(om, cn->body.data, cn->body.len, &out, &e);
        } else {
            status = oai_detokenize(om, cn->body.data, cn->body.len, &out, &e);
        }
    }
    if (status != 200)
        return reply_error(cn, status, e.type, e.code[0] ? e.code : NULL, "%s", e.message);
    cn->status = 200;
    return send_json(cn, 200, out, NULL);
}

/* GET /v1/models and /v1/models/ID: every model served, loaded or not */
static enum MHD_Result list_models(struct conn *cn, const char *id)
{
    struct server *s = cn->srv;
    json_t *data = models_openai(s->models, NULL), *one = id ? models_openai(s->models, id) : NULL;
    if (id) {
        json_decref(data);
        if (!one)
            return reply_error(cn, 404, "invalid_request_error", "model_not_found", "the model '%.400s' does not exist",
                               id);
        cn->status = 200;
        return send_json(cn, 200, one, NULL);
    }
    cn->status = 200;
    return send_json(cn, 200, json_pack("{s:s, s:o}", "object", "list", "data", data), NULL);
}

/* ---- the console (src/server/ui, embedded by cmake/embed.cmake) ---- */

extern const char plumb_ui_index_html[], plumb_ui_app_js[], plumb_ui_app_css[];
extern const size_t plumb_ui_index_html_len, plumb_ui_app_js_len, plumb_ui_app_css_len;

/* GET / and /ui/FILE. The page runs only its own script and style (no
 * inline code, nothing from elsewhere), in no frame, and talks only to
 * this server: model output it shows can never become code. */
static enum MHD_Result serve_ui(struct conn *cn, const char *url, bool get)
{
    const char *body = NULL, *type = NULL;
    size_t len = 0;
    if (!strcmp(url, "/") || !strcmp(url, "/ui") || !strcmp(url, "/ui/") || !strcmp(url, "/ui/index.html"))
        body = plumb_ui_index_html, len = plumb_ui_index_html_len, type = "text/html; charset=utf-8";
    else if (!strcmp(url, "/ui/app.js"))
        body = plumb_ui_app_js, len = plumb_ui_app_js_len, type = "text/javascript; charset=utf-8";
    else if (!strcmp(url, "/ui/app.css"))
        body = plumb_ui_app_css, len = plumb_ui_app_css_len, type = "text/css; charset=utf-8";
    else
        return reply_error(cn, 404, "invalid_request_error", "not_found", "no such page: %s", url);
    if (!get)
        return reply_error(cn, 405, "invalid_request_error", NULL, "use GET for %s", url);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    common_headers(cn, r);
    cn->status = 200;
    return queue(cn, 200, r);
}

/* The gauges of every model, for /metrics and /v1/plumb/status. */
struct gauges {
    struct metrics_gauges g;
    struct metrics_model_gauges per[SERVER_MAX_MODELS];
    char ids[SERVER_MAX_MODELS][128], sources[SERVER_MAX_MODELS][1024], digests[SERVER_MAX_MODELS][72];
};

static void gather_gauges(struct server *s, struct gauges *gs)
{
    struct metrics_gauges *g = &gs->g;
    *g = (struct metrics_gauges){.ready = !atomic_load(&s->draining)};
    /* all models together, and each */
    models_gauges(s->models, g, gs->per, gs->ids, gs->sources, gs->digests, SERVER_MAX_MODELS);
    g->conn_open = atomic_load(&s->n_conn);
    gate_get_stats(s->gate, &g->gate);
}

/* GET /v1/plumb/status: the server's counters and gauges now. */
static enum MHD_Result plumb_status(struct conn *cn)
{
    struct server *s = cn->srv;
    struct gauges gs;
    gather_gauges(s, &gs);
    json_t *v = metrics_json(&s->metrics, &gs.g);
    json_object_update_new(v, json_pack("{s:s, s:f, s:f, s:b, s:b, s:s?}", "version", PLUMB_VERSION, "time",
                                        sys_wall_now(), "uptime_s", sys_now() - s->t_start, "ready",
                                        !atomic_load(&s->draining), "keys", s->n_keys > 0, "instance_id",
                                        s->instance_id[0] ? s->instance_id : NULL));
    cn->status = 200;
    return send_json(cn, 200, v, NULL);
}

/* GET /v1/plumb/usage, /doctor, /machine: what the server's owner reports
 * (server_params.report). */
static enum MHD_Result plumb_report(struct conn *cn, const char *what)
{
    struct server *s = cn->srv;
    if (!s->p.report)
        return reply_error(cn, 404, "invalid_request_error", "not_found", "this server has no %s report", what);
    char *text = NULL;
    pb_err err = {0};
    if (s->p.report(s->p.report_user, what, &text, &err) || !text) {
        free(text);
        return reply_error(cn, 500, "server_error", NULL, "%s: %s", what, err.msg[0] ? err.msg : "no report");
    }
    cn->status = 200;
    enum MHD_Result r = send_buffer(cn, 200, "application/json", text, strlen(text), NULL);
    free(text);
    return r;
}

/* /v1/plumb/WHAT: the operations data (the console's dashboard, plumb
 * ps); only for admin keys.
 *   GET  models               every model served: state, memory, slots, keep-alive, preset
 *   POST models/NAME/load     loads it (as a request would) and answers its object
 *   POST models/NAME/unload   unloads it now, or once its requests end */
static enum MHD_Result plumb_route(struct conn *cn, struct MHD_Connection *c, const char *what, bool get, bool post)
{
    (void)c;
    struct server *s = cn->srv;
    const bool status = !strcmp(what, "status"),
               report = !strcmp(what, "usage") || !strcmp(what, "doctor") || !strcmp(what, "machine");
    if ((status || report) && !get)
        return reply_error(cn, 405, "invalid_request_error", NULL, "use GET for /v1/plumb/%s", what);
    if (status)
        return plumb_status(cn);
    if (report)
        return plumb_report(cn, what);
    if (!strcmp(what, "models")) {
        if (!get)
            return reply_error(cn, 405, "invalid_request_error", NULL, "use GET for /v1/plumb/models");
        cn->status = 200;
        return send_json(cn, 200, models_status(s->models), NULL);
    }
    if (!strncmp(what, "models/", 7)) {
        const char *name = what + 7, *slash = strrchr(name, '/');
        const bool load = slash && !strcmp(slash, "/load"), unload = slash && !strcmp(slash, "/unload");
        if (!load && !unload)
            return reply_error(cn, 404, "invalid_request_error", "not_found", "no such route: /v1/plumb/%.300s "
                               "(models/NAME/load, models/NAME/unload)", what);
        if (!post)
            return reply_error(cn, 405, "invalid_request_error", NULL, "use POST for /v1/plumb/%.300s", what);
        char id[200];
        snprintf(id, sizeof id, "%.*s", (int)(slash - name < 199 ? slash - name : 199), name);
        if (load && atomic_load(&s->draining))
            return reply_error(cn, 503, "server_error", "draining", "the server is shutting down");
        struct oai_error e = {0};
        json_t *out = NULL;
        int st = load ? models_load(s->models, id, s->p.timeout_s, &out, &e, &cn->retry_after)
                      : models_unload(s->models, id, &out, &e);
        if (st != 200)
            return reply_model_error(cn, st, &e);
        cn->status = 200;
        return send_json(cn, 200, out, NULL);
    }
    return reply_error(cn, 404, "invalid_request_error", "not_found", "no such route: /v1/plumb/%.300s", what);
}

static enum MHD_Result route(struct conn *cn, struct MHD_Connection *c, const char *url, const char *method)
{
    struct server *s = cn->srv;
    const bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    if (!strcmp(method, "OPTIONS")) { /* a CORS preflight: no key needed, the methods and headers allowed */
        struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!r)
            return MHD_NO;
        common_headers(cn, r);
        MHD_add_response_header(r, "Allow", "GET, POST, OPTIONS");
        if (cn->origin[0]) {
            const char *want = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
            MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
            MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                    want && strlen(want) < 1024 ? want
                                                                : "Authorization, Content-Type, X-Request-Id");
            MHD_add_response_header(r, "Access-Control-Max-Age", "600");
        }
        cn->status = 204;
        return queue(cn, 204, r);
    }
    if (!strcmp(url, "/health")) {
        if (!get)
            return reply_error(cn, 405, "invalid_request_error", NULL, "use GET for %s", url);
        cn->status = 200;
        return send_buffer(cn, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    }
    if (!strcmp(url, "/ready")) {
        if (!get)
            return reply_error(cn, 405, "invalid_request_error", NULL, "use GET for %s", url);
        bool ready = !atomic_load(&s->draining);
        cn->status = ready ? 200 : 503;
        return ready ? send_buffer(cn, 200, "application/json", "{\"status\":\"ready\"}", 18, NULL)
                     : send_buffer(cn, 503, "application/json", "{\"status\":\"draining\"}", 21, "1");
    }
    if (!strcmp(url, "/metrics")) {
        if (!get)
            return reply_error(cn, 405, "invalid_request_error", NULL, "use GET for %s", url);
        struct gauges gs;
        gather_gauges(s, &gs);
        struct sbuf out = {0};
        if (metrics_render(&s->metrics, &gs.g, &out)) {
            sbuf_free(&out);
            return MHD_NO;
        }
        cn->status = 200;
        enum MHD_Result r = send_buffer(cn, 200, "text/plain; version=0.0.4", out.data, out.len, NULL);
        sbuf_free(&out);
        return r;
    }
    if (s->ui && (!strcmp(url, "/") || !strncmp(url, "/ui", 3)))
        return serve_ui(cn, url, get);
    const bool tokens = !strcmp(url, "/tokenize") || !strcmp(url, "/detokenize");
    if (strncmp(url, "/v1/", 4) != 0 && !tokens)
        return reply_error(cn, 404, "invalid_request_error", "not_found", "no such route: %s %s", method, url);

    /* /v1 (and /tokenize, /detokenize): keys, then the API */
    if (s->n_keys) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        const struct api_key *k = NULL;
        if (auth && !strncasecmp(auth, "Bearer ", 7))
            k = find_key(s, auth + 7 + strspn(auth + 7, " "));
        if (!k)
            return reply_error(cn, 401, "invalid_request_error", "invalid_api_key",
                               auth ? "incorrect API key provided" : "missing API key (Authorization: Bearer KEY)");
        snprintf(cn->key_id, sizeof cn->key_id, "%s", k->id);
        cn->admin = k->admin;
    } else {
        cn->admin = true; /* no keys: whoever reaches the server runs it */
    }
    if (!strncmp(url, "/v1/plumb/", 10)) {
        if (!cn->admin)
            return reply_error(cn, 403, "permission_error", "admin_required",
                               "%s needs a key with the admin flag (\"ID KEY admin\" in the key file)", url);
        return plumb_route(cn, c, url + 10, get, post);
    }
    if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11)) {
        if (!get)
            return reply_error(cn, 405, "invalid_request_error", NULL, "use GET for %s", url);
        return list_models(cn, url[10] == '/' ? url + 11 : NULL);
    }
    if (tokens || !strcmp(url, "/v1/embeddings")) {
        if (!post)
            return reply_error(cn, 405, "invalid_request_error", NULL, "use POST for %s", url);
        if (atomic_load(&s->draining))
            return reply_error(cn, 503, "server_error", "draining", "the server is shutting down");
        return handle_model_call(cn, url);
    }
    const bool is_chat = !strcmp(url, "/v1/chat/completions"), is_cmpl = !strcmp(url, "/v1/completions");
    if (!is_chat && !is_cmpl)
        return reply_error(cn, 404, "invalid_request_error", "not_found", "no such route: %s %s", method, url);
    if (!post)
        return reply_error(cn, 405, "invalid_request_error", NULL, "use POST for %s", url);
    return handle_generation(cn, c, is_chat);
}

/* Seconds as libmicrohttpd's idle timeout of a connection. */
static unsigned timeout_arg(double s)
{
    return s > 1e6 ? 1000000u : (unsigned)ceil(s);
}

/* The request's id (a client's X-Request-Id of up to 64 characters
 * [A-Za-z0-9._:-], else one made here) and its Origin when CORS allows
 * it (server_params.cors_origins). */
static void request_ident(struct server *s, struct MHD_Connection *c, struct conn *cn)
{
    static atomic_uint_fast64_t counter;
    const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = id ? strlen(id) : 0;
    bool ok = n > 0 && n <= 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = (id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') || (id[i] >= '0' && id[i] <= '9') ||
             id[i] == '.' || id[i] == '_' || id[i] == ':' || id[i] == '-';
    if (ok) {
        snprintf(cn->request_id, sizeof cn->request_id, "%s", id);
    } else {
        uint64_t x = (uint64_t)(sys_now() * 1e6) * 0x9E3779B97F4A7C15ull ^ (atomic_fetch_add(&counter, 1) + 1) *
                                                                              0xBF58476D1CE4E5B9ull;
        x ^= x >> 31;
        snprintf(cn->request_id, sizeof cn->request_id, "req-%016llx", (unsigned long long)x);
    }
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    const char *list = s->p.cors_origins;
    if (!origin || !list || !*list || strlen(origin) >= sizeof cn->origin)
        return;
    const size_t ol = strlen(origin);
    for (const char *p = list; *p;) {
        const size_t k = strcspn(p, ", ");
        if ((k == 1 && *p == '*') || (k == ol && !memcmp(p, origin, k))) {
            snprintf(cn->origin, sizeof cn->origin, "%s", origin);
            return;
        }
        p += k;
        p += strspn(p, ", ");
    }
}

/* Every connection carries one request: each response says "Connection:
 * close", so a second request sent behind the first on the same
 * connection (pipelining) is never run; the client sees the connection
 * end after the first answer and sends it again. Every request thus
 * passes the gate, whose deadline covers its head. The body must then
 * come within the header timeout plus its length at min_rate (a client
 * that trickles it is cut off), and meanwhile a quiet connection is
 * closed after the header timeout; the generation timeout starts when the
 * whole request is in. */
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
        request_ident(s, c, cn);
        /* the gate let only plain decimal lengths through */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        cn->content_length = cl ? strtoull(cl, NULL, 10) : 0;
        if (cn->content_length > s->p.max_body)
            cn->too_large = true;
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, timeout_arg(s->p.header_timeout_s));
        return MHD_YES;
    }
    if (*upload_size) {
        const uint64_t n = cn->body.len + *upload_size > cn->content_length ? cn->body.len + *upload_size
                                                                             : cn->content_length;
        if (sys_now() - cn->t0 > s->p.header_timeout_s + (double)n / s->p.min_rate) {
            logf_(s, "a request body came slower than %.0f bytes/s: connection closed", s->p.min_rate);
            return MHD_NO;
        }
        if (!cn->too_large && cn->body.len + *upload_size > s->p.max_body)
            cn->too_large = true;
        if (!cn->too_large && sbuf_add(&cn->body, upload, *upload_size))
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, timeout_arg(s->p.timeout_s));
    if (cn->too_large)
        return reply_error(cn, 413, "invalid_request_error", "request_too_large",
                           "the request body is larger than %zu bytes", s->p.max_body);
    return route(cn, c, url, method);
}

/* The request's line in the log: key=value text or one JSON object. */
static void log_record(struct server *s, const struct server_record *r)
{
    if (!s->p.log)
        return;
    if (s->p.log_json) {
        char when[40];
        pb_time_rfc3339(r->time, when, sizeof when);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:i, s:i, s:i, s:f, s:f, s:s, s:b}", "event",
                              "request", "time", when, "level", r->status >= 500 ? "error" : "info", "id", r->request_id ? r->request_id : "", "endpoint",
                              r->endpoint, "status", r->status, "key", r->key_id, "model",
                              r->model, "prompt_tokens", r->prompt_tokens, "completion_tokens", r->completion_tokens,
                              "cached_tokens", r->cached_tokens, "ttft_s", r->ttft_s, "duration_s", r->duration_s,
                              "finish", r->finish, "client_gone", r->client_gone);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (line)
            s->p.log(s->p.log_user, line);
        free(line);
        return;
    }
    logf_(s, "request id=%s endpoint=%s status=%d key=%s model=%s prompt=%d cached=%d completion=%d ttft=%.3fs "
             "duration=%.3fs finish=%s%s",
          r->request_id && r->request_id[0] ? r->request_id : "-", r->endpoint, r->status, r->key_id[0] ? r->key_id : "-", r->model[0] ? r->model : "-", r->prompt_tokens,
          r->cached_tokens, r->completion_tokens, r->ttft_s, r->duration_s, r->finish[0] ? r->finish : "-",
          r->client_gone ? " client_gone" : "");
}

/* A request in the metrics, once: when its whole answer is queued or its
 * stream's last events are handed over, so that a client that reads
 * /metrics or the status right after its answer finds it counted; else
 * when the connection ends. */
static void count(struct conn *cn, int status)
{
    if (cn->counted)
        return;
    cn->counted = true;
    struct server *s = cn->srv;
    const double dt = sys_now() - cn->t0;
    metrics_request(&s->metrics, cn->endpoint, status);
    metrics_duration(&s->metrics, dt);
    if (!cn->gen && !cn->model)
        return;
    struct oai_gen_info info = {.finish = "", .n_prompt = cn->n_embedded};
    if (cn->gen)
        oai_gen_info(cn->gen, &info);
    metrics_tokens(&s->metrics, (uint64_t)info.n_prompt, (uint64_t)info.n_gen, (uint64_t)info.n_reused);
    if (info.n_gen > 0)
        metrics_ttft(&s->metrics, info.ttft);
    if (cn->model && status == 200 && (cn->gen || !strcmp(cn->endpoint, "/v1/embeddings"))) {
        const struct metrics_obs o = {models_id(cn->model), (uint64_t)info.n_prompt, (uint64_t)info.n_gen,
                                      info.n_gen > 0 ? info.ttft : -1, dt, info.queue_s,
                                      cn->gen ? info.finish : NULL};
        metrics_model_request(&s->metrics, &o);
    }
}

/* When the connection ends: the request counted (if its answer was not),
 * its log line and record (written now, not before the answer: the
 * record may wait on the registry's disk), and its resources let go. */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)c;
    struct server *s = cls;
    struct conn *cn = *con_cls;
    if (!cn)
        return;
    *con_cls = NULL;
    const double dt = sys_now() - cn->t0;
    const int status = cn->status ? cn->status : 400;
    const bool gone = cn->left || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (cn->gen && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        oai_gen_cancel(cn->gen);
    count(cn, status);
    if (cn->gen || cn->model) {
        struct oai_gen_info info = {.finish = "", .n_prompt = cn->n_embedded};
        if (cn->gen)
            oai_gen_info(cn->gen, &info);
        struct server_record rec = {
            .time = sys_wall_now(),
            .endpoint = cn->endpoint,
            .status = status,
            .key_id = cn->key_id,
            .model = cn->model ? models_id(cn->model) : "",
            .prompt_tokens = info.n_prompt,
            .completion_tokens = info.n_gen,
            .cached_tokens = info.n_reused,
            .ttft_s = info.ttft,
            .duration_s = dt,
            .finish = info.finish,
            .client_gone = gone,
            .request_id = cn->request_id,
        };
        log_record(s, &rec);
        if (s->p.on_record)
            s->p.on_record(s->p.record_user, &rec);
        if (cn->gen) {
            oai_gen_free(cn->gen);
            atomic_fetch_sub(&s->running, 1);
        }
        if (cn->using)
            models_done(s->models, cn->model, info.has_keep_alive, info.keep_alive_s);
        if (cn->model)
            models_unref(s->models, cn->model);
    }
    sbuf_free(&cn->body);
    free(cn);
}

/* Each generated token: the tokens/s window, and the latency since the
 * token before (seconds < 0 for a choice's first). */
static void on_itl(void *user, const char *model, double seconds)
{
    struct server *s = user;
    metrics_token(&s->metrics, model, sys_now(), seconds);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)c;
    (void)socket_context;
    struct server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&s->n_conn, 1);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        atomic_fetch_sub(&s->n_conn, 1);
    }
}

/* The gate's hand-over: a connection whose request head has come. */
static void admit(void *user, int fd, const struct sockaddr *addr, socklen_t len)
{
    struct server *s = user;
    if (atomic_load(&s->n_conn) >= s->p.max_connections) {
        gate_reply(fd, 503, NULL, "the server has all the connections it takes: try again");
        close(fd);
        return;
    }
    (void)MHD_add_connection(s->mhd, fd, addr, len); /* it closes fd on failure */
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

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

/* Served beyond this machine without keys, anyone who reaches the port
 * uses the models: refused unless insecure is set. */
static int check_exposure(struct server *s, pb_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    bool v6;
    int rc = resolve_host(s->p.host, s->p.port, &ss, &sl, &v6, err);
    if (rc)
        return rc;
    /* the page itself holds nothing; what it shows needs the API's keys */
    s->ui = s->p.ui == SERVER_UI_ON || (s->p.ui == SERVER_UI_AUTO && is_loopback(&ss));
    if (is_loopback(&ss) || s->p.api_key_file)
        return rc;
    if (!s->p.insecure)
        return pb_fail(err, PB_EINVAL, "host %s is reachable from other machines and no API key file is given: anyone "
                       "who reaches port %d could use the models; give --api-key-file FILE (api_key_file), listen on "
                       "127.0.0.1, or add --insecure (insecure = yes) to serve without keys anyway",
                       s->p.host, s->p.port);
    logf_(s, "warning: listening on %s without API keys (--insecure): anyone who reaches port %d can use the "
             "models", s->p.host, s->p.port);
    return PB_OK;
}

/* The listening socket on host:port. No SO_REUSEPORT: a port another
 * process listens on is an error naming that process where /proc shows it
 * (two servers sharing a port took each other's requests, keys or not). */
static int listen_on(const char *host, int port, int *fd_out, int *bound, pb_err *err)
{
    *fd_out = -1;
    struct sockaddr_storage ss;
    socklen_t sl;
    bool v6 = false;
    int rc = resolve_host(host, port, &ss, &sl, &v6, err);
    if (rc)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return pb_fail(err, PB_EIO, "socket: %s", strerror(errno));
    int one = 1;
    /* SO_REUSEADDR on Linux lets a restart bind over connections in
     * TIME_WAIT, never over another listener */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (v6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        int e = errno;
        close(fd);
        int pid = 0;
        char comm[64] = "";
        if (e == EADDRINUSE && sys_port_owner(port, &pid, comm, sizeof comm))
            return pb_fail(err, PB_EIO, "port %d is in use by pid %d (%s): stop it, or choose another --port", port,
                           pid, comm[0] ? comm : "?");
        if (e == EADDRINUSE)
            return pb_fail(err, PB_EIO, "port %d is in use by another program (ss -ltnp shows which): stop it, or "
                           "choose another --port", port);
        if (e == EACCES)
            return pb_fail(err, PB_EIO, "cannot listen on %s:%d: ports below 1024 need privileges", host, port);
        return pb_fail(err, PB_EIO, "cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    if (listen(fd, 1024) != 0) {
        int e = errno;
        close(fd);
        return pb_fail(err, PB_EIO, "cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return PB_OK;
}

int server_open(const struct server_params *p, struct server **out, pb_err *err)
{
    *out = NULL;
    if (p->port < 0 || p->port > 65535)
        return pb_fail(err, PB_EINVAL, "port %d out of range 0..65535", p->port);
    if (p->max_body < 1024)
        return pb_fail(err, PB_EINVAL, "a body limit below 1 KiB");
    if (!(p->timeout_s > 0) || !(p->header_timeout_s > 0))
        return pb_fail(err, PB_EINVAL, "the timeouts must be positive");
    if (!(p->min_rate > 0))
        return pb_fail(err, PB_EINVAL, "the minimum rate of a request body must be positive");
    if (p->max_per_client < 0 || p->max_waiting < 1)
        return pb_fail(err, PB_EINVAL, "bad connection limits");
    if (p->instance_id && !server_instance_id_valid(p->instance_id))
        return pb_fail(err, PB_EINVAL, "instance id '%.100s': 1-64 of letters, digits, '.', '_' and '-'",
                       p->instance_id);
    struct server *s = calloc(1, sizeof *s);
    if (!s)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    s->p = *p;
    s->p.models = NULL;
    if (p->instance_id)
        snprintf(s->instance_id, sizeof s->instance_id, "%s", p->instance_id);
    s->p.instance_id = NULL; /* the copy above */
    if (!s->p.host)
        s->p.host = "127.0.0.1";
    if (s->p.max_connections <= 0)
        s->p.max_connections = 256;
    metrics_init(&s->metrics);
    s->t_start = sys_now();
    atomic_init(&s->draining, false);
    atomic_init(&s->running, 0);
    atomic_init(&s->n_conn, 0);
    int rc = PB_OK;
    if ((rc = check_exposure(s, err)))
        goto fail;
    if (p->api_key_file && (rc = load_keys(s, p->api_key_file, err)))
        goto fail;
    char warn[512];
    if (engine_threads_advice(p->n_threads, warn, sizeof warn))
        logf_(s, "warning: %s", warn);
    if ((rc = engine_threads_create(p->n_threads, &s->threads, err)))
        goto fail;
    const struct models_params mp = {
        .threads = s->threads,
        .max_queue = s->p.max_queue,
        .memory_limit = s->p.memory_limit,
        .ignore_memory = s->p.ignore_memory,
        .log = s->p.log,
        .log_user = s->p.log_user,
        .on_itl = on_itl,
        .on_itl_user = s,
    };
    if ((rc = models_create(&mp, &s->models, err)) || (rc = models_set(s->models, p->models, p->n_models, false, err)))
        goto fail;
    int lfd = -1;
    if ((rc = listen_on(s->p.host, p->port, &lfd, &s->port, err)))
        goto fail;
    /* libmicrohttpd gets connections from the gate (MHD_add_connection)
     * and counts them; max_connections is enforced at the hand-over, its
     * own limit is the backstop */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     MHD_USE_NO_LISTEN_SOCKET;
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)s->p.max_connections + 64u, MHD_OPTION_CONNECTION_TIMEOUT,
                              timeout_arg(p->timeout_s), MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64u << 10),
                              MHD_OPTION_END);
    if (!s->mhd) {
        close(lfd);
        rc = pb_fail(err, PB_EIO, "cannot start the HTTP server (libmicrohttpd)");
        goto fail;
    }
    struct gate_params gp = {
        .listen_fd = lfd,
        .header_timeout_s = s->p.header_timeout_s,
        .max_per_client = s->p.max_per_client,
        .max_waiting = s->p.max_waiting,
        .max_head = SERVER_MAX_HEAD,
        .max_body = s->p.max_body,
        .admit = admit,
        .user = s,
    };
    if ((rc = gate_start(&gp, &s->gate, err))) {
        close(lfd);
        goto fail;
    }
    logf_(s, "listening on http://%s:%d (%s%s%s)", s->p.host, s->port, s->n_keys ? "API keys required" : "no API keys",
          s->instance_id[0] ? ", instance " : "", s->instance_id);
    *out = s;
    return PB_OK;
fail:
    server_free(s);
    return rc;
}

int server_reload(struct server *s, const struct server_model *models, int n_models, pb_err *err)
{
    int rc = models_set(s->models, models, n_models, true, err);
    if (rc)
        logf_(s, "error: reload failed, serving as before: %s", err ? err->msg : "");
    return rc;
}

int server_drain(struct server *s, double timeout_s)
{
    atomic_store(&s->draining, true);
    gate_stop_listening(s->gate);
    double end = sys_now() + timeout_s;
    int left;
    while ((left = atomic_load(&s->running)) > 0 && sys_now() < end) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    logf_(s, "drained: %d request%s still running", left, left == 1 ? "" : "s");
    return left;
}

void server_free(struct server *s)
{
    if (!s)
        return;
    models_cancel_all(s->models); /* waiting connections end */
    gate_free(s->gate); /* no more hand-overs */
    if (s->mhd)
        MHD_stop_daemon(s->mhd); /* joins the connection threads */
    models_free(s->models);
    engine_threads_free(s->threads);
    metrics_destroy(&s->metrics);
    if (s->keys) {
        volatile char *k = (volatile char *)s->keys; /* keys do not linger in freed memory */
        for (size_t i = 0; i < MAX_KEYS * sizeof *s->keys; i++)
            k[i] = 0;
    }
    free(s->keys);
    free(s);
}
