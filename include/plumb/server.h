/* plumb serve: an OpenAI-compatible HTTP API over the scheduler.
 *
 * Endpoints: GET /health (alive), GET /ready (not draining), GET /metrics
 * (Prometheus), GET /v1/models[/ID] (every model served, loaded or not,
 * with its "status"), POST /v1/chat/completions, POST /v1/completions
 * (streamed as Server-Sent Events with "stream": true), /v1/embeddings,
 * /tokenize, /detokenize. Errors are OpenAI error objects with the status
 * that fits (400, 401, 403, 404, 405, 413, 503 with Retry-After, 500 only
 * for the server's own failures). The console, a web page for chat and
 * operations, is at GET / (its files under /ui/).
 *
 * The operations API, for keys with the admin flag (every client when the
 * server has no keys):
 *   GET  /v1/plumb/status             counters, latency histograms and
 *        gauges, all models and each (metrics_json); /usage, /doctor,
 *        /machine: server_params.report's
 *   GET  /v1/plumb/models             {"models": [{"id", "source", "path",
 *        "state": "loaded"|"loading"|"unloading"|"unloaded", "load":
 *        "start"|"demand", "memory_bytes" (the estimate; what it took once
 *        loaded), "slots", "slots_busy", "queued", "context_length",
 *        "idle_s" (null unless loaded and idle), "keep_alive_s" (-1:
 *        forever), "expires_in_s" (null unless it will expire),
 *        "load_error" (the last failed load's reason, or null), "preset":
 *        server_preset_json}], "memory": {"limit_bytes" (null: none),
 *        "used_bytes" (the process's own and each loaded copy once)}}
 *   POST /v1/plumb/models/NAME/load   loads it as a request would: 200 and
 *        its object, 404, or 503 (model_memory, model_load_failed,
 *        model_loading)
 *   POST /v1/plumb/models/NAME/unload unloads it at once when idle, else
 *        once no request uses it: 200 and its object, or 404
 *
 * Models on demand: a model with load demand is loaded at its first
 * request; other requests for it wait (up to timeout_s) while one loads
 * it; a failed load is a 503 with the reason and is tried again by the
 * next request. Before a load, the model's memory estimate is weighed
 * against memory_limit (else what was available at server_open) less what
 * the loaded models take; idle models (no request running or waiting) are
 * unloaded, least recently used first, to make room, and when that is not
 * enough the request gets 503 model_memory. A model stays loaded for
 * keep_alive_s after its last request (a request's "keep_alive" replaces
 * that), then a reaper thread unloads it.
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

#define SERVER_DEFAULT_KEEP_ALIVE_S 300 /* a model loaded on demand stays this long after its last request */
#define SERVER_KEEP_ALIVE_DEFAULT (-2.0) /* keep_alive_s: the load mode's default (below) */
#define SERVER_KEEP_FOREVER (-1.0)       /* keep_alive_s: never unloaded for being idle */

/* When a model is loaded. */
enum server_load {
    SERVER_LOAD_DEFAULT, /* start when the server has one model, demand when it has several */
    SERVER_LOAD_START,   /* at server_open (or server_reload): refused there when it does not fit */
    SERVER_LOAD_DEMAND,  /* at its first request (or POST /v1/plumb/models/NAME/load) */
};
/* "start", "demand" ("default" for SERVER_LOAD_DEFAULT). */
const char *server_load_name(enum server_load l);

/* A model's preset (what an Ollama Modelfile gives): defaults for the
 * requests made to it. A request's own field wins, unless the field is
 * fixed: then the preset's value is used whatever the request says (a
 * fixed system prompt replaces the request's system and developer
 * messages; a fixed field without a value holds the API's default).
 * max_tokens is a cap, fixed or not: a request asking more, or nothing,
 * gets at most that many tokens. */
enum server_preset_field {
    SERVER_PRESET_SYSTEM = 1u << 0,         /* chat: a system message when the request has none */
    SERVER_PRESET_TEMPERATURE = 1u << 1,
    SERVER_PRESET_TOP_P = 1u << 2,
    SERVER_PRESET_TOP_K = 1u << 3,
    SERVER_PRESET_MIN_P = 1u << 4,
    SERVER_PRESET_REPEAT_PENALTY = 1u << 5,
    SERVER_PRESET_SEED = 1u << 6,
    SERVER_PRESET_STOP = 1u << 7,
    SERVER_PRESET_MAX_TOKENS = 1u << 8,
    SERVER_PRESET_REASONING = 1u << 9,      /* chat: thinking on or off (enable_thinking) */
};
#define SERVER_PRESET_FIELDS 10
struct server_preset {
    unsigned set;            /* SERVER_PRESET_* of the fields given a value */
    unsigned fixed;          /* SERVER_PRESET_* a request cannot change (max_tokens: never in it) */
    const char *system;
    double temperature;      /* 0..2 */
    double top_p, min_p;     /* 0..1 */
    int top_k;               /* 0: off */
    double repeat_penalty;   /* 0.01..10 */
    int64_t seed;
    const char *stop[ENGINE_MAX_STOPS];
    int n_stop;
    int max_tokens;          /* >= 1 */
    bool reasoning;          /* think before answering (models that can) */
};
/* A field's name as the configuration and the API write it ("top_p"),
 * and back; bit is one SERVER_PRESET_*. */
const char *server_preset_field_name(unsigned bit);
bool server_preset_field_parse(const char *name, unsigned *bit);
/* The preset as a JSON object: every field, null when not set, and
 * "fixed": [names]. */
json_t *server_preset_json(const struct server_preset *p);

/* One served model: the API's id, the engine it runs on and its preset.
 * Models of one file with the same engine settings share one loaded copy
 * (and its slots), whatever their names and presets. */
struct server_model {
    const char *alias;       /* the model's id in the API (NULL: the file's name without .gguf) */
    const char *path;        /* GGUF file */
    const char *source;      /* what the user named, a store name or a path, for logs (NULL: path) */
    struct engine_params engine; /* slots, context, batch, KV type, chat format; the server's
                                  * threads and queue length replace threads and max_queue */
    enum server_load load;
    double keep_alive_s;     /* seconds an idle model stays loaded after its last request; SERVER_KEEP_FOREVER;
                              * SERVER_KEEP_ALIVE_DEFAULT: forever for load start, SERVER_DEFAULT_KEEP_ALIVE_S
                              * for demand. A request's "keep_alive" replaces it for the time after it. */
    struct server_preset preset;
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
    uint64_t memory_limit;   /* bytes the models may use together, the process's own ENGINE_PROCESS_BYTES
                              * included (0: what is available at server_open) */
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

/* The key a client sends, from a key file's text (changed in place): the
 * first line's (KEY, ID KEY or ID KEY admin; empty lines and # comments
 * skipped), or with admin_first the first admin line's when there is one.
 * False when the text holds no key. */
bool server_key_pick(char *text, bool admin_first, char *key, size_t size);

/* Defaults for everything but the models. */
struct server_params server_defaults(void);
/* Defaults for a model but its path: the engine's, with
 * SERVER_DEFAULT_PARALLEL slots, load and keep-alive as the number of
 * models decides (SERVER_LOAD_DEFAULT, SERVER_KEEP_ALIVE_DEFAULT), no
 * preset. */
struct server_model server_model_defaults(void);

struct server;

/* Loads the models, starts their schedulers and listens. */
int server_open(const struct server_params *p, struct server **out, pb_err *err);
int server_port(const struct server *s);
/* Serves these models from now on (SIGHUP): a model whose alias, file and
 * settings are unchanged stays as it is; a changed or new one is loaded
 * beside the old (load start; demand: at its first request), new requests
 * go to it, and the old one is unloaded when its running requests finish;
 * a removed one likewise. One whose engine settings and file are unchanged
 * (only its preset, load or keep-alive) keeps its loaded copy. Nothing
 * changes when a model fails to load. */
int server_reload(struct server *s, const struct server_model *models, int n_models, pb_err *err);
/* Stops accepting connections, reports not-ready, and waits up to
 * timeout_s for running requests to finish. Returns how many were still
 * running. */
int server_drain(struct server *s, double timeout_s);
/* Closes every connection and frees everything. */
void server_free(struct server *s);

#endif
