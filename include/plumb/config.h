/* The configuration file of plumb serve (and of the service and doctor
 * built on it): INI, read with libinih.
 *
 *   [server]
 *   host = 127.0.0.1          ; address to listen on
 *   port = 8080
 *   api_key_file = /etc/plumb/keys
 *   max_queue = 64            ; requests waiting for a slot, per model
 *   max_body = 1048576        ; bytes
 *   max_tokens = 0            ; cap on max_tokens (0: the context)
 *   max_connections = 256     ; connections with a request in progress
 *   max_connections_per_client = 64 ; of one address, waiting to send their request
 *   header_timeout = 10       ; seconds to send a request's headers
 *   min_rate = 4096           ; bytes a second of a request body, at least
 *   timeout = 600             ; seconds a request may run
 *   insecure = no             ; yes: serve a non-loopback host without API keys
 *   cors_origins =            ; origins web pages may call from ("*": any; empty: none)
 *   drain_timeout = 30        ; seconds SIGTERM waits for running answers
 *   threads = 0               ; 0: all CPUs
 *   log_format = text         ; or json: one line per request
 *   store = /var/lib/plumb    ; the model store (PLUMB_HOME) for names and usage
 *   pid_file = /run/plumb/plumb.pid
 *   instance_id = box-1       ; sent as X-Plumb-Instance (replicas behind a balancer)
 *   memory_limit = 24GiB      ; what the models may use together (default: what is
 *                             ; available at start); bytes, or K/M/G/T(iB), KB/MB/GB/TB
 *
 *   [store]                   ; where plumb pull NAME[:QUANT] fetches from
 *   registry = https://huggingface.co ; a base URL in Hugging Face's layout
 *                             ; ({registry}/{repo}/resolve/{revision}/{file}):
 *                             ; the hub, or a company mirror
 *   registry_token_file = /etc/plumb/registry-token ; a bearer token for it
 *
 *   [model assistant]         ; the API's model id
 *   source = qwen2.5-7b:q4_k_m; a store name or a GGUF file
 *   parallel = 4              ; requests generating at once
 *   ctx = 0                   ; tokens per request, prompt and answer (0: the
 *                             ; model's training context, at most 4096)
 *   kv_type = f16             ; f16, f32, q8_0
 *   batch = 512
 *   step_ms = 130
 *   prefill_chunk = 256
 *   chat_format =             ; a built-in format instead of the model's template
 *   load = demand             ; start: at start; demand: at its first request (default:
 *                             ; start with one model, demand with several)
 *   keep_alive = 5m           ; idle time before it is unloaded: seconds, or 90s, 5m,
 *                             ; 1h30m; -1 or forever: never (default: forever for load =
 *                             ; start, 5m for demand)
 *   ; the preset: defaults for requests (plumb/server.h, struct server_preset)
 *   system = You are terse.   ; continued on indented lines (joined with line breaks);
 *                             ; escapes \n \t \s (a space) \\ \; \#, and a line ending
 *                             ; in \ joins the next without a line break
 *   temperature = 0.2         ; 0..2
 *   top_p = 0.9               ; 0..1
 *   top_k = 40
 *   min_p = 0.05              ; 0..1
 *   repeat_penalty = 1.1      ; 0.01..10
 *   seed = 42
 *   stop = "<|end|>", "\nUser:" ; up to 4 strings in double quotes, comma separated (the
 *                             ; escapes above and \"), or one without quotes
 *   max_tokens = 512          ; a cap on every answer
 *   reasoning = off           ; on or off: think before answering (models that can)
 *   fixed = temperature, system ; fields a request cannot change
 *
 * Several sections may name one source: with the same engine settings
 * (parallel, ctx, kv_type, batch, step_ms, prefill_chunk, chat_format)
 * they share one loaded copy.
 *
 * The defaults are the server's and the engine's (plumb/server.h,
 * plumb/engine.h).
 *
 * Unknown sections and keys, bad values and duplicates are errors naming
 * the file and line.
 */
#ifndef PLUMB_CONFIG_H
#define PLUMB_CONFIG_H

#include "plumb/base.h"
#include "plumb/server.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_MODELS SERVER_MAX_MODELS
#define CONFIG_STR 512
#define CONFIG_PATH_MAX 1024
#define CONFIG_SYSTEM_MAX 8192 /* bytes of a system prompt */
#define CONFIG_STOP_MAX 64     /* bytes of a stop string */

struct config_model {
    char alias[72];
    char source[CONFIG_STR];
    int parallel;
    int64_t ctx;
    int kv_type;
    int batch;
    double step_ms;
    int prefill_chunk;
    char chat_format[32];
    int load;                /* enum server_load */
    double keep_alive_s;     /* SERVER_KEEP_ALIVE_DEFAULT when not given */
    /* the preset (config_model_preset) */
    unsigned preset_set, preset_fixed; /* SERVER_PRESET_* */
    char system[CONFIG_SYSTEM_MAX];
    double temperature, top_p, min_p, repeat_penalty;
    int top_k;
    long long seed;
    char stop[ENGINE_MAX_STOPS][CONFIG_STOP_MAX];
    int n_stop;
    int max_tokens;
    bool reasoning;
};

struct config {
    char path[CONFIG_STR];
    char host[256];
    int port;
    char api_key_file[CONFIG_STR];
    int max_queue;
    size_t max_body;
    int max_tokens;
    int max_connections;
    int max_per_client;
    double header_timeout_s, min_rate;
    bool insecure;
    char cors_origins[CONFIG_STR]; /* origins allowed to call from browsers ("" none, "*" any) */
    double timeout_s, drain_timeout_s;
    int threads;
    bool log_json;
    char store[CONFIG_STR];
    char pid_file[CONFIG_STR];
    char instance_id[72];    /* "" when none */
    enum server_ui ui;       /* the console page: auto (on for a loopback host), on, off */
    char registry[CONFIG_STR];            /* [store]: base URL plumb pull NAME fetches from ("" unset) */
    char registry_token_file[CONFIG_STR]; /* [store]: file holding its bearer token ("" none) */
    uint64_t memory_limit;   /* bytes; 0: what is available at start */
    struct config_model models[CONFIG_MAX_MODELS];
    int n_models;
};

/* The defaults (no models). */
void config_defaults(struct config *c);
/* Reads path over c (which holds defaults or earlier values). */
int config_load(const char *path, struct config *c, pb_err *err);
/* The same for len bytes of INI text in memory; name (recorded as the
 * path) labels the messages. */
int config_parse(const char *name, const char *text, size_t len, struct config *c, pb_err *err);
/* [server] ui's values: auto, on, off. */
bool config_ui_parse(const char *s, enum server_ui *out);
const char *config_ui_name(enum server_ui ui);
/* Checks a model alias: 1-64 of [A-Za-z0-9._:-], starting with a letter or digit. */
bool config_alias_valid(const char *s);

/* The configuration as an INI file's text (*out, malloc'd) that
 * config_load reads back into the same values: every key, defaults
 * included. Refuses a value the format cannot carry (a line break, a ';'
 * or '#' that would start a comment, spaces at either end). */
int config_format(const struct config *c, char **out, pb_err *err);

/* A model section's engine settings. */
struct engine_params config_engine_params(const struct config_model *m);
/* Its preset (pointing at m's strings). */
struct server_preset config_model_preset(const struct config_model *m);
/* The units the file takes, for the command line too: a duration
 * ("300", "5m", "1h30m"; "-1" or "forever": *out -1) and a size ("2GiB",
 * "512M", "1500000000"). False when s is neither. */
bool config_parse_duration(const char *s, double *out);
bool config_parse_size(const char *s, uint64_t *out);
/* The models to serve: each source resolved (in the configuration's
 * store, else the default one) into paths[i], out[i] pointing at it and
 * at c's strings. */
int config_server_models(const struct config *c, struct server_model *out, char (*paths)[CONFIG_PATH_MAX],
                         pb_err *err);

#endif
