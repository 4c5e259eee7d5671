/* plumb serve: an OpenAI-compatible HTTP API over the scheduler.
 *
 * Endpoints: GET /health (alive), GET /ready (model loaded, not
 * draining), GET /metrics (Prometheus), GET /v1/models[/ID],
 * POST /v1/chat/completions, POST /v1/completions (streamed as
 * Server-Sent Events with "stream": true), POST /v1/embeddings,
 * /tokenize, /detokenize; the operations API under /v1/plumb/ (status,
 * usage, doctor, machine, models: admin keys only); the console, a web
 * page for chat and operations, at GET / (its files under /ui/). Errors are OpenAI error
 * objects with the status that fits (400, 401, 404, 405, 413, 503 with
 * Retry-After, 500 only for the server's own failures).
 *
 * Connections: the server accepts them itself and holds each, on one
 * thread for all, until its request head has come (within
 * header_timeout_s of the accept; at most max_per_client of one client
 * address and max_waiting in all wait so); then libmicrohttpd runs it on
 * a thread of its own (at most max_connections). Idle or dripping
 * connections thus never take a thread, and /health answers beside
 * hundreds of them. The body must come within header_timeout_s plus its
 * length at min_rate bytes a second. Each connection carries one request
 * (every response says "Connection: close"): a request pipelined behind
 * another is never run. A request's thread waits for its tokens, which
 * the scheduler's thread hands over; a client that goes away cancels its
 * request at the next step.
 *
 * The port is never shared (no SO_REUSEPORT): a port in use is an error
 * naming the process that holds it where /proc shows it. A host that is
 * not a loopback address without an API key file is refused unless
 * insecure is set.
 */
#ifndef PLUMB_SERVER_H
#define PLUMB_SERVER_H

#include "plumb/base.h"
#include "plumb/engine.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- defaults (the one place they are written) ---- */

#define SERVER_DEFAULT_HOST "127.0.0.1"  /* this machine only */
#define SERVER_DEFAULT_PORT 8080
#define SERVER_DEFAULT_PARALLEL 4        /* slots of a model */
#define SERVER_DEFAULT_MAX_BODY (1u << 20)
#define SERVER_DEFAULT_TIMEOUT_S 600
#define SERVER_DEFAULT_DRAIN_S 30
#define SERVER_DEFAULT_MAX_CONNECTIONS 256 /* connections with a request in progress */
#define SERVER_DEFAULT_HEADER_TIMEOUT_S 10  /* to send a request's headers (and start its body) */
#define SERVER_DEFAULT_MIN_RATE 4096        /* bytes a second of a request body, at least */
#define SERVER_DEFAULT_MAX_PER_CLIENT 64    /* connections of one address waiting to send their request */
#define SERVER_DEFAULT_MAX_WAITING 1024     /* connections waiting to send their request, in all */
#define SERVER_MAX_HEAD (64u << 10)         /* bytes of a request's line and headers */
#define SERVER_MAX_MODELS 16

/* One served model: the API's id and the engine it runs on. */
struct server_model {
    const char *alias;       /* the model's id in the API (NULL: the file's name without .gguf) */
    const char *path;        /* GGUF file */
    const char *source;      /* what the user named, a store name or a path, for logs (NULL: path) */
    struct engine_params engine; /* slots, context, batch, KV type, chat format; the server's
                                  * threads and queue length replace threads and max_queue */
};

/* What a finished request did, for logs and usage accounting (never the
 * key itself: key_id is the key's name in the key file). */
struct server_record {
    double time;             /* seconds since the epoch, at the end */
    const char *endpoint;
    int status;
    const char *key_id;      /* "" without keys */
    const char *model;       /* "" when none was chosen */
    int prompt_tokens, completion_tokens, cached_tokens;
    double ttft_s, duration_s;
    const char *finish;      /* "stop", "length", "cancelled", ... or "" */
    const char *request_id;  /* X-Request-Id (the client's or made by the server) */
    bool client_gone;
};

enum server_ui { SERVER_UI_AUTO, SERVER_UI_ON, SERVER_UI_OFF };

struct server_params {
    const struct server_model *models;
    int n_models;
    const char *host;        /* NULL: 127.0.0.1 */
    int port;                /* 0: any free port (server_port tells) */
    int n_threads;           /* threads shared by every model (0: all CPUs) */
    int max_queue;           /* requests waiting for a slot, per model */
    const char *api_key_file;/* NULL: no keys needed */
    size_t max_body;         /* bytes of a request body */
    int max_tokens;          /* cap on a request's max_tokens (0: the context) */
    double timeout_s;        /* longest a request may run (once it has come in), and idle time while it runs */
    int max_connections;     /* connections with a whole request head, in progress */
    double header_timeout_s; /* a connection's request head must come within this of its accept */
    double min_rate;         /* ... and its body within header_timeout_s + its length / min_rate */
    int max_per_client;      /* connections of one address waiting for their heads (0: no limit) */
    int max_waiting;         /* connections waiting for their heads, in all */
    bool insecure;           /* serve on a non-loopback host without API keys */
    const char *cors_origins;/* origins browsers may call from ("https://a.example, https://b.example", or "*");
                              * NULL: none (no CORS headers) */
    bool log_json;           /* request lines as JSON objects, else key=value text */
    bool ignore_memory;      /* load models even when their memory estimates exceed what is available */
    const char *instance_id; /* sent as X-Plumb-Instance on every response, so that a replica behind a load
                              * balancer can be told apart (NULL: no such header); server_instance_id_valid */
    /* one line per event (start, request, reload, drain), never holding a key */
    void (*log)(void *user, const char *line);
    void *log_user;
    /* each finished generation request (may be NULL) */
    void (*on_record)(void *user, const struct server_record *r);
    void *record_user;
    enum server_ui ui;       /* the console page at GET / (SERVER_UI_AUTO: on when the host is a loopback address) */
    /* What the server's owner knows and the console shows: what is "usage"
     * (the usage table's sums), "doctor" (doctor's findings) or "machine"
     * (the machine profile); JSON text into *json (malloc'd). Called on a
     * request's thread, for admin keys only. NULL: those reports are 404. */
    int (*report)(void *user, const char *what, char **json, pb_err *err);
    void *report_user;
};

/* An instance id: 1-64 of letters, digits, '.', '_' and '-' (a header value
 * and a Kubernetes pod name both fit). */
bool server_instance_id_valid(const char *id);

/* Defaults for everything but the models. */
struct server_params server_defaults(void);
/* Defaults for a model but its path: the engine's, with
 * SERVER_DEFAULT_PARALLEL slots. */
struct server_model server_model_defaults(void);

struct server;

/* Loads the models, starts their schedulers and listens. */
int server_open(const struct server_params *p, struct server **out, pb_err *err);
int server_port(const struct server *s);
/* Serves these models from now on (SIGHUP): a model whose alias, file and
 * settings are unchanged stays as it is; a changed or new one is loaded
 * beside the old, new requests go to it, and the old one is unloaded when
 * its running requests finish; a removed one likewise. Nothing changes
 * when a model fails to load. */
int server_reload(struct server *s, const struct server_model *models, int n_models, pb_err *err);
/* Stops accepting connections, reports not-ready, and waits up to
 * timeout_s for running requests to finish. Returns how many were still
 * running. */
int server_drain(struct server *s, double timeout_s);
/* Closes every connection and frees everything. */
void server_free(struct server *s);

#endif
