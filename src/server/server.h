/* plumb serve: an OpenAI-compatible HTTP API over the scheduler.
 *
 * Endpoints: GET /health (alive), GET /ready (model loaded, not
 * draining), GET /metrics (Prometheus), GET /v1/models[/ID],
 * POST /v1/chat/completions, POST /v1/completions (streamed as
 * Server-Sent Events with "stream": true). Errors are OpenAI error
 * objects with the status that fits (400, 401, 404, 405, 413, 503 with
 * Retry-After, 500 only for the server's own failures).
 *
 * Threads: libmicrohttpd runs one thread per connection (bounded by
 * max_connections); a request's thread waits for its tokens, which the
 * scheduler's thread hands over. A client that goes away cancels its
 * request at the next step.
 */
#ifndef PLUMB_SERVER_SERVER_H
#define PLUMB_SERVER_SERVER_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

struct server_params {
    const char *model_path;  /* GGUF file */
    const char *alias;       /* the model's id in the API (NULL: the file's name without .gguf) */
    const char *host;        /* NULL: 127.0.0.1 */
    int port;                /* 0: any free port (server_port tells) */
    int n_parallel;          /* slots generating at once */
    int64_t n_ctx;           /* context per slot */
    int n_threads, n_batch, kv_type, prefill_chunk;
    double step_target_s;    /* see sched_params */
    int max_queue;           /* requests waiting for a slot beyond those */
    const char *api_key_file;/* NULL: no keys needed */
    const char *chat_format; /* NULL: the model's template */
    size_t max_body;         /* bytes of a request body */
    int max_tokens;          /* cap on a request's max_tokens (0: the context) */
    double timeout_s;        /* longest a request may run, and idle time of a connection */
    int max_connections;
    /* one line per event (start, request, drain), never holding a key */
    void (*log)(void *user, const char *line);
    void *log_user;
};

/* Defaults for everything but model_path. */
struct server_params server_defaults(void);

struct server;

/* Loads the model, starts the scheduler and listens. */
int server_open(const struct server_params *p, struct server **out, pb_err *err);
int server_port(const struct server *s);
const char *server_model_id(const struct server *s);
/* Stops accepting connections, reports not-ready, and waits up to
 * timeout_s for running requests to finish. Returns how many were still
 * running. */
int server_drain(struct server *s, double timeout_s);
/* Closes every connection and frees everything. */
void server_free(struct server *s);

#endif
