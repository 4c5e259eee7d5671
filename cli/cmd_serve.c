/* plumb serve: the OpenAI-compatible server, until SIGTERM or SIGINT,
 * then a graceful drain. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/config.h"
#include "plumb/engine.h"
#include "plumb/server.h"
#include "plumb/store.h"
#include "plumb/survey.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <errno.h>
#include <unistd.h>

static void help(void)
{
    printf("Usage: plumb serve MODEL [OPTIONS]\n"
           "       plumb serve --config FILE [OPTIONS]\n"
           "\n"
           "MODEL is a GGUF file or a name in the model store (NAME[:TAG]).\n"
           "Serves it over an OpenAI-compatible HTTP API: GET /v1/models,\n"
           "POST /v1/chat/completions and /v1/completions (streamed with \"stream\":\n"
           "true), GET /health, /ready and /metrics (Prometheus). Up to --parallel\n"
           "requests generate together, batched into one forward pass per token;\n"
           "more wait in a queue of --max-queue, beyond which requests get 503 with\n"
           "Retry-After. SIGTERM (or Ctrl-C) stops accepting, lets running answers\n"
           "finish for up to --drain-timeout seconds, and exits 0.\n"
           "\n"
           "With --config, the models and settings come from an INI file (see\n"
           "docs/configuration.md); options given as well override its [server]\n"
           "settings. SIGHUP re-reads the file: a model whose source or settings\n"
           "changed is loaded beside the old one, new requests go to it, and the old\n"
           "one leaves when its requests finish. With several models, each is loaded at\n"
           "its first request and unloaded after keep_alive idle (or to make room within\n"
           "--memory-limit, least recently used first); plumb ps shows them.\n"
           "\n"
           "Options:\n"
           "      --config FILE         the configuration file\n"
           "      --alias NAME          the model's id in the API (default: the store name\n"
           "                            as given, or the file name without .gguf)\n"
           "      --host ADDR           address to listen on (default %s: this machine only)\n"
           "      --port N              port (default %d; 0: any free one, printed)\n"
           "  -np, --parallel N         requests generating at once (default %d)\n"
           "  -c, --ctx N               context of each request, prompt and answer (default: the\n"
           "                            model's training context, at most %d)\n"
           "      --api-key-file FILE   require 'Authorization: Bearer KEY' on /v1/*; FILE has one\n"
           "                            key per line, optionally 'ID KEY' (the id is what logs show)\n"
           "                            or 'ID KEY admin' (may also read /v1/plumb/: the dashboard)\n"
           "      --max-queue N         requests that may wait for a slot (default %d)\n"
           "      --timeout S           longest a request may run once it has come in (default %d)\n"
           "      --header-timeout S    a connection must send its request's headers within S\n"
           "                            seconds (default %d); it never holds a thread meanwhile\n"
           "      --min-rate BYTES      bytes a second a request body must come at (default %d)\n"
           "      --max-connections-per-client N\n"
           "                            connections of one address that have not sent their\n"
           "                            request yet (default %d; 0: no limit, e.g. behind a proxy)\n"
           "      --drain-timeout S     how long SIGTERM waits for running answers (default %d)\n"
           "      --max-tokens N        cap on a request's max_tokens (default: the context)\n"
           "      --max-body BYTES      largest request body (default %u)\n"
           "      --max-connections N   connections with a request in progress (default %d)\n"
           "  -t, --threads N           threads, shared by every model (default: all CPUs)\n"
           "  -b, --batch N             tokens per forward pass (default %d)\n"
           "      --step-ms MS          while answers stream, a step (one token for each) aims at\n"
           "                            this time: prompts of new requests are fed in as it allows\n"
           "                            (bounds inter-token latency; default %d)\n"
           "      --prefill-chunk N     prompt tokens per step at most while others generate (default %d)\n"
           "      --kv-type T           KV cache type: f16 (default), f32 or q8_0\n"
           "      --chat-format NAME    a built-in chat format instead of the model's template\n"
           "      --log-format F        text (default) or json: one line per request on stderr\n"
           "      --pid-file FILE       write the process id there (for plumb service reload)\n"
           "      --instance-id ID      send 'X-Plumb-Instance: ID' with every response, so that\n"
           "                            replicas behind a load balancer can be told apart\n"
           "      --memory-limit SIZE   memory the models may use together, the process included\n"
           "                            (2GiB, 512M, bytes; default: what is available at start):\n"
           "                            a model loaded on demand first unloads idle ones, least\n"
           "                            recently used first, or its requests get 503\n"
           "      --ignore-memory       serve even when the models' memory estimates exceed the\n"
           "                            memory available (they are refused otherwise)\n"
           "      --insecure            serve on a --host beyond loopback without --api-key-file\n"
           "                            (refused otherwise: anyone reaching the port could use it)\n"
           "      --cors-origins LIST   origins web pages may call the API from (\"https://a.example,...\" or\n"
           "                            \"*\"; default: none, no CORS headers)\n"
           "      --ui on|off|auto      the console, a web page for chat and operations, at\n"
           "                            http://HOST:PORT/ (default auto: on when HOST is loopback)\n"
           "  -h, --help                this help\n"
           "\n"
           "Example:\n"
           "  plumb serve model.gguf --alias assistant --parallel 16 --port 8080\n"
           "  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\\n"
           "       -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'\n",
           SERVER_DEFAULT_HOST, SERVER_DEFAULT_PORT, SERVER_DEFAULT_PARALLEL, ENGINE_DEFAULT_MAX_CTX,
           ENGINE_DEFAULT_QUEUE, SERVER_DEFAULT_TIMEOUT_S, SERVER_DEFAULT_HEADER_TIMEOUT_S, SERVER_DEFAULT_MIN_RATE,
           SERVER_DEFAULT_MAX_PER_CLIENT, SERVER_DEFAULT_DRAIN_S, SERVER_DEFAULT_MAX_BODY,
           SERVER_DEFAULT_MAX_CONNECTIONS, ENGINE_DEFAULT_BATCH, ENGINE_DEFAULT_STEP_MS,
           ENGINE_DEFAULT_PREFILL_CHUNK);
}

/* A log line on stderr (journald takes it under the service), stamped in
 * RFC 3339 with its level: "warning: " and "error: " at the start of a
 * line give it. JSON lines (request events) pass as they are in JSON
 * mode, other events become {"event":"log","time","level","message"}. */
static void log_line(void *user, const char *line)
{
    const bool json = *(const bool *)user;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char stamp[40];
    pb_time_rfc3339((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9, stamp, sizeof stamp);
    const char *level = "info";
    if (!strncmp(line, "warning: ", 9))
        level = "warn", line += 9;
    else if (!strncmp(line, "error: ", 7))
        level = "error", line += 7;
    if (json && line[0] == '{') {
        fprintf(stderr, "%s\n", line);
    } else if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:o}", "event", "log", "time", stamp, "level", level, "message",
                              json_string(line));
        char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
        fprintf(stderr, "%s\n", txt ? txt : line);
        free(txt);
        json_decref(o);
    } else {
        /* lines quote paths, names, key ids */
        fprintf(stderr, "%s %-5s plumb serve: %s\n", stamp, level, cli_esc(line));
    }
}

/* What the command line sets (over the configuration file's values). */
struct overrides {
    const char *host, *keys, *cors;
    int port, queue, max_tokens, conn, threads, per_client;
    double timeout, drain, header_timeout, min_rate;
    bool insecure;
    long long body;
    bool log_json, log_set;
    const char *pid_file;
    const char *instance_id;
    enum server_ui ui;
    bool ui_set;
    uint64_t memory_limit;
    bool memory_limit_set;
};

/* Usage accounting: each finished request into the store's registry
 * (records come from the connection threads; a store handle is for one
 * thread at a time). */
struct usage_sink {
    pthread_mutex_t mu;
    struct store *store;
    bool warned;
    bool *log_json;
};


static void record_usage(void *user, const struct server_record *r)
{
    struct usage_sink *u = user;
    struct store_usage_row row = {r->time, r->key_id, r->model, r->endpoint, r->status, r->prompt_tokens,
                                  r->completion_tokens, r->cached_tokens, r->duration_s};
    pb_err err = {0};
    pthread_mutex_lock(&u->mu);
    if (store_usage_add(u->store, &row, &err) && !u->warned) {
        char msg[700];
        snprintf(msg, sizeof msg, "warning: usage accounting failed (requests go on): %s", err.msg);
        log_line(u->log_json, msg);
        u->warned = true;
    }
    pthread_mutex_unlock(&u->mu);
}

/* The console's reports (server_params.report): the usage of the last 30
 * days by key, model and day; doctor's findings (the configuration read
 * again, as plumb doctor --config would); the machine profile plumb survey
 * saved (else the facts of this machine, unmeasured). */
struct console_reports {
    struct usage_sink *usage;
    const char *config_path;
};

static int report_fail(pb_err *err, int code, const char *msg)
{
    err->code = code;
    snprintf(err->msg, sizeof err->msg, "%s", msg);
    return code;
}

static int console_report(void *user, const char *what, char **out, pb_err *err)
{
    struct console_reports *r = user;
    json_t *v = NULL;
    if (!strcmp(what, "usage")) {
        if (!r->usage->store)
            return report_fail(err, PB_EIO, "no usage accounting (the store could not be opened)");
        const double since = (double)time(NULL) - 30 * 86400.0;
        static const enum store_usage_by by[] = {STORE_USAGE_KEY, STORE_USAGE_MODEL, STORE_USAGE_DAY};
        static const char *const names[] = {"by_key", "by_model", "by_day"};
        v = json_pack("{s:o}", "since", cli_json_time((int64_t)since));
        for (int i = 0; i < 3; i++) {
            struct store_usage_sum *rows;
            size_t n;
            pthread_mutex_lock(&r->usage->mu);
            int rc = store_usage_query(r->usage->store, since, by[i], &rows, &n, err);
            pthread_mutex_unlock(&r->usage->mu);
            if (rc) {
                json_decref(v);
                return rc;
            }
            json_object_set_new(v, names[i], cli_usage_json(rows, n, by[i]));
            free(rows);
        }
    } else if (!strcmp(what, "doctor")) {
        static struct config cfg; /* large; one report at a time */
        static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        static struct doctor_report rep;
        pthread_mutex_lock(&mu);
        config_defaults(&cfg);
        pb_err cerr = {0};
        struct doctor_params dp = {0};
        if (r->config_path && config_load(r->config_path, &cfg, &cerr))
            dp.config_error = cerr.msg;
        else if (r->config_path)
            dp.config = &cfg;
        int rc = doctor_run(&dp, &rep, err);
        if (!rc)
            v = cli_doctor_json(&rep);
        pthread_mutex_unlock(&mu);
        if (rc)
            return rc;
    } else if (!strcmp(what, "machine")) {
        static struct survey sv;
        static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        char dir[600];
        pthread_mutex_lock(&mu);
        pb_err lerr = {0};
        bool saved = survey_dir(dir, sizeof dir, &lerr) == PB_OK && survey_load(dir, &sv, &lerr) == PB_OK;
        struct survey_params sp = {.no_measure = true}; /* the facts, no bandwidth runs beside the server */
        int rc = saved ? PB_OK : survey_run(&sp, &sv, err);
        if (!rc) {
            v = survey_to_json(&sv);
            json_object_set_new(v, "measured", json_boolean(saved));
        }
        pthread_mutex_unlock(&mu);
        if (rc)
            return rc;
    } else {
        return report_fail(err, PB_EINVAL, "no such report");
    }
    *out = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    return *out ? PB_OK : report_fail(err, PB_ENOMEM, "out of memory");
}

static int write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "%ld\n", (long)getpid());
    return fclose(f);
}

/* Removes the pid file at exit, only when it is still a regular file
 * holding this process's id (never a device node someone named, nor the
 * file of a server started since). */
static void remove_pid_file(const char *path)
{
    pb_err err = {0};
    char *text = NULL;
    if (pb_read_small(path, 64, &text, NULL, &err) == PB_OK && strtol(text, NULL, 10) == (long)getpid())
        unlink(path);
    free(text);
}

int cmd_serve(int argc, char **argv)
{
    enum {
        OPT_ALIAS = 1000, OPT_HOST, OPT_PORT, OPT_KEYS, OPT_QUEUE, OPT_TIMEOUT, OPT_DRAIN, OPT_MAXTOK, OPT_BODY,
        OPT_CONN, OPT_BATCH, OPT_CHUNK, OPT_KV, OPT_FORMAT, OPT_NP, OPT_STEP, OPT_CONFIG, OPT_LOGFMT, OPT_PID,
        OPT_IGNORE_MEMORY, OPT_HEADER_TIMEOUT, OPT_MIN_RATE, OPT_PER_CLIENT, OPT_INSECURE, OPT_INSTANCE, OPT_CORS,
        OPT_UI,
        OPT_MEMORY_LIMIT,
    };
    static const struct option longopts[] = {
        {"config", required_argument, 0, OPT_CONFIG},
        {"alias", required_argument, 0, OPT_ALIAS},
        {"host", required_argument, 0, OPT_HOST},
        {"port", required_argument, 0, OPT_PORT},
        {"parallel", required_argument, 0, OPT_NP},
        {"ctx", required_argument, 0, 'c'},
        {"api-key-file", required_argument, 0, OPT_KEYS},
        {"max-queue", required_argument, 0, OPT_QUEUE},
        {"timeout", required_argument, 0, OPT_TIMEOUT},
        {"drain-timeout", required_argument, 0, OPT_DRAIN},
        {"max-tokens", required_argument, 0, OPT_MAXTOK},
        {"max-body", required_argument, 0, OPT_BODY},
        {"max-connections", required_argument, 0, OPT_CONN},
        {"threads", required_argument, 0, 't'},
        {"batch", required_argument, 0, OPT_BATCH},
        {"prefill-chunk", required_argument, 0, OPT_CHUNK},
        {"step-ms", required_argument, 0, OPT_STEP},
        {"kv-type", required_argument, 0, OPT_KV},
        {"chat-format", required_argument, 0, OPT_FORMAT},
        {"log-format", required_argument, 0, OPT_LOGFMT},
        {"pid-file", required_argument, 0, OPT_PID},
        {"ignore-memory", no_argument, 0, OPT_IGNORE_MEMORY},
        {"memory-limit", required_argument, 0, OPT_MEMORY_LIMIT},
        {"header-timeout", required_argument, 0, OPT_HEADER_TIMEOUT},
        {"min-rate", required_argument, 0, OPT_MIN_RATE},
        {"max-connections-per-client", required_argument, 0, OPT_PER_CLIENT},
        {"insecure", no_argument, 0, OPT_INSECURE},
        {"instance-id", required_argument, 0, OPT_INSTANCE},
        {"cors-origins", required_argument, 0, OPT_CORS},
        {"ui", required_argument, 0, OPT_UI},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct server_model m = server_model_defaults();
    bool ignore_memory = false;
    struct overrides ov = {.port = -1, .queue = -1, .max_tokens = -1, .conn = -1, .threads = -1, .timeout = -1,
                           .drain = -1, .body = -1, .per_client = -1, .header_timeout = -1, .min_rate = -1};
    const char *config_path = NULL;
    bool model_opts = false; /* options that only make sense without --config */
    double d;
    long long v;
    int c;
    struct cli_parser par = {.cmd = "serve", .shortopts = "c:t:b:h", .longopts = longopts, .files = "config,api-key-file,pid-file"};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_CONFIG: config_path = optarg; break;
        case OPT_ALIAS: m.alias = optarg; model_opts = true; break;
        case OPT_HOST: ov.host = optarg; break;
        case OPT_PORT:
            if (!cli_parse_int("serve", "--port", optarg, 0, 65535, &v))
                return CLI_USAGE;
            ov.port = (int)v;
            break;
        case OPT_NP:
            if (!cli_parse_int("serve", "--parallel", optarg, 1, 256, &v))
                return CLI_USAGE;
            m.engine.n_slots = (int)v;
            model_opts = true;
            break;
        case 'c':
            if (!cli_parse_int("serve", "--ctx", optarg, 16, 1 << 24, &v))
                return CLI_USAGE;
            m.engine.n_ctx = v;
            model_opts = true;
            break;
        case OPT_KEYS: ov.keys = optarg; break;
        case OPT_QUEUE:
            if (!cli_parse_int("serve", "--max-queue", optarg, 0, 1 << 20, &v))
                return CLI_USAGE;
            ov.queue = (int)v;
            break;
        case OPT_TIMEOUT:
            if (!cli_parse_float("serve", "--timeout", optarg, 0.1, 1e7, &ov.timeout))
                return CLI_USAGE;
            break;
        case OPT_DRAIN:
            if (!cli_parse_float("serve", "--drain-timeout", optarg, 0, 1e7, &ov.drain))
                return CLI_USAGE;
            break;
        case OPT_MAXTOK:
            if (!cli_parse_int("serve", "--max-tokens", optarg, 1, 1 << 24, &v))
                return CLI_USAGE;
            ov.max_tokens = (int)v;
            break;
        case OPT_BODY:
            if (!cli_parse_int("serve", "--max-body", optarg, 1024, 1ll << 32, &ov.body))
                return CLI_USAGE;
            break;
        case OPT_CONN:
            if (!cli_parse_int("serve", "--max-connections", optarg, 1, 100000, &v))
                return CLI_USAGE;
            ov.conn = (int)v;
            break;
        case 't':
            if (!cli_parse_int("serve", "--threads", optarg, 1, 1024, &v))
                return CLI_USAGE;
            ov.threads = (int)v;
            break;
        case 'b':
        case OPT_BATCH:
            if (!cli_parse_int("serve", "--batch", optarg, 1, 1 << 16, &v))
                return CLI_USAGE;
            m.engine.n_batch = (int)v;
            model_opts = true;
            break;
        case OPT_CHUNK:
            if (!cli_parse_int("serve", "--prefill-chunk", optarg, 1, 1 << 16, &v))
                return CLI_USAGE;
            m.engine.prefill_chunk = (int)v;
            model_opts = true;
            break;
        case OPT_STEP:
            if (!cli_parse_float("serve", "--step-ms", optarg, 1, 1e6, &d))
                return CLI_USAGE;
            m.engine.step_target_s = d / 1000;
            model_opts = true;
            break;
        case OPT_KV:
            if (!cli_parse_kv_type("serve", optarg, &m.engine.kv_type))
                return CLI_USAGE;
            model_opts = true;
            break;
        case OPT_FORMAT:
            if (!engine_chat_format_known(optarg))
                return cli_usage_error("serve", "unknown chat format '%s' (%s)", optarg, engine_chat_formats());
            m.engine.chat_format = optarg;
            model_opts = true;
            break;
        case OPT_LOGFMT:
            if (strcmp(optarg, "json") && strcmp(optarg, "text"))
                return cli_usage_error("serve", "--log-format is json or text, not '%s'", optarg);
            ov.log_json = !strcmp(optarg, "json");
            ov.log_set = true;
            break;
        case OPT_PID: ov.pid_file = optarg; break;
        case OPT_IGNORE_MEMORY: ignore_memory = true; break;
        case OPT_MEMORY_LIMIT:
            if (!config_parse_size(optarg, &ov.memory_limit) || ov.memory_limit == 0)
                return cli_usage_error("serve", "--memory-limit '%s': a size such as 2GiB, 512M or a number of bytes",
                                       optarg);
            ov.memory_limit_set = true;
            break;
        case OPT_HEADER_TIMEOUT:
            if (!cli_parse_float("serve", "--header-timeout", optarg, 0.1, 3600, &ov.header_timeout))
                return CLI_USAGE;
            break;
        case OPT_MIN_RATE:
            if (!cli_parse_float("serve", "--min-rate", optarg, 1, 1e12, &ov.min_rate))
                return CLI_USAGE;
            break;
        case OPT_PER_CLIENT:
            if (!cli_parse_int("serve", "--max-connections-per-client", optarg, 0, 100000, &v))
                return CLI_USAGE;
            ov.per_client = (int)v;
            break;
        case OPT_INSECURE: ov.insecure = true; break;
        case OPT_INSTANCE:
            if (!server_instance_id_valid(optarg))
                return cli_usage_error("serve", "--instance-id '%s': 1-64 of letters, digits, '.', '_' and '-'", optarg);
            ov.instance_id = optarg;
            break;
        case OPT_CORS: ov.cors = optarg; break;
        case OPT_UI:
            if (!config_ui_parse(optarg, &ov.ui))
                return cli_usage_error("serve", "--ui is on, off or auto, not '%s'", optarg);
            ov.ui_set = true;
            break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (config_path && (optind < argc || model_opts))
        return cli_usage_error("serve", "with --config the models and their settings come from the file");
    if (!config_path && optind >= argc)
        return cli_usage_error("serve", "missing MODEL (or --config FILE)");
    if (optind + 1 < argc)
        return cli_usage_error("serve", "unexpected argument '%s'", argv[optind + 1]);

    pb_err err = {0};
    struct config cfg;
    config_defaults(&cfg);
    if (config_path && config_load(config_path, &cfg, &err))
        return cli_error("serve", "%s", err.msg);
    /* the command line over the file */
    if (ov.host)
        snprintf(cfg.host, sizeof cfg.host, "%s", ov.host);
    if (ov.port >= 0)
        cfg.port = ov.port;
    if (ov.keys)
        snprintf(cfg.api_key_file, sizeof cfg.api_key_file, "%s", ov.keys);
    if (ov.queue >= 0)
        cfg.max_queue = ov.queue;
    if (ov.max_tokens >= 0)
        cfg.max_tokens = ov.max_tokens;
    if (ov.conn >= 0)
        cfg.max_connections = ov.conn;
    if (ov.threads >= 0)
        cfg.threads = ov.threads;
    if (ov.timeout >= 0)
        cfg.timeout_s = ov.timeout;
    if (ov.header_timeout >= 0)
        cfg.header_timeout_s = ov.header_timeout;
    if (ov.min_rate >= 0)
        cfg.min_rate = ov.min_rate;
    if (ov.per_client >= 0)
        cfg.max_per_client = ov.per_client;
    if (ov.insecure)
        cfg.insecure = true;
    if (ov.cors)
        snprintf(cfg.cors_origins, sizeof cfg.cors_origins, "%s", ov.cors);
    if (ov.drain >= 0)
        cfg.drain_timeout_s = ov.drain;
    if (ov.body >= 0)
        cfg.max_body = (size_t)ov.body;
    if (ov.log_set)
        cfg.log_json = ov.log_json;
    if (ov.pid_file)
        snprintf(cfg.pid_file, sizeof cfg.pid_file, "%s", ov.pid_file);
    if (ov.instance_id)
        snprintf(cfg.instance_id, sizeof cfg.instance_id, "%s", ov.instance_id);
    if (ov.ui_set)
        cfg.ui = ov.ui;
    if (ov.memory_limit_set)
        cfg.memory_limit = ov.memory_limit;

    /* the pid file is replaced at start and removed at exit: only a
     * regular file (or a new one) may be */
    if (cfg.pid_file[0] && pb_check_output(cfg.pid_file, &err))
        return cli_error("serve", "pid_file: %s", err.msg);

    /* store names resolve in the configuration's store (else the default one) */
    const char *store = cfg.store[0] ? cfg.store : NULL;
    static char paths[CONFIG_MAX_MODELS][CONFIG_PATH_MAX];
    struct server_model models[CONFIG_MAX_MODELS];
    int n_models = 1;
    if (config_path) {
        if (config_server_models(&cfg, models, paths, &err))
            return cli_error("serve", "%s", err.msg);
        n_models = cfg.n_models;
    } else {
        struct store_entry entry;
        if (store_resolve(store, argv[optind], paths[0], sizeof paths[0], &entry, &err))
            return cli_error("serve", "%s", err.msg);
        m.path = paths[0];
        m.source = argv[optind];
        /* a store name, not the blob's file name (its digest), is the id */
        if (!m.alias && entry.digest[0])
            m.alias = argv[optind];
        models[0] = m;
    }
    struct server_params p = server_defaults();
    p.models = models;
    p.n_models = n_models;
    p.host = cfg.host;
    p.port = cfg.port;
    p.n_threads = cfg.threads;
    p.max_queue = cfg.max_queue;
    p.api_key_file = cfg.api_key_file[0] ? cfg.api_key_file : NULL;
    p.max_body = cfg.max_body;
    p.max_tokens = cfg.max_tokens;
    p.timeout_s = cfg.timeout_s;
    p.max_connections = cfg.max_connections;
    p.max_per_client = cfg.max_per_client;
    p.header_timeout_s = cfg.header_timeout_s;
    p.min_rate = cfg.min_rate;
    p.insecure = cfg.insecure;
    p.cors_origins = cfg.cors_origins[0] ? cfg.cors_origins : NULL;
    p.log_json = cfg.log_json;
    p.ignore_memory = ignore_memory;
    p.memory_limit = cfg.memory_limit;
    p.instance_id = cfg.instance_id[0] ? cfg.instance_id : NULL;
    p.log = log_line;
    p.log_user = &p.log_json;
    p.ui = cfg.ui;

    /* connections waiting for their requests hold a descriptor each:
     * allow as many as the system lets this process have */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &nofile);
    }

    /* signals are taken by this thread alone, with sigwait */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct usage_sink usage = {.log_json = &p.log_json};
    pthread_mutex_init(&usage.mu, NULL);
    pb_err serr = {0};
    struct console_reports reports = {&usage, config_path};
    p.report = console_report;
    p.report_user = &reports;
    if (store_open(store, &usage.store, &serr) == PB_OK) {
        p.on_record = record_usage;
        p.record_user = &usage;
    } else {
        char msg[700];
        snprintf(msg, sizeof msg, "warning: no usage accounting: %s", serr.msg);
        log_line(&p.log_json, msg);
    }

    struct server *s;
    if (server_open(&p, &s, &err)) {
        store_close(usage.store);
        return cli_error("serve", "%s%s", err.msg,
                         err.code == PB_ENOMEM ? " (--ignore-memory serves them anyway)" : "");
    }
    if (cfg.pid_file[0] && write_pid_file(cfg.pid_file) != 0)
        fprintf(stderr, "plumb serve: cannot write the pid file %s: %s\n", cfg.pid_file, strerror(errno));
    /* the port line on stdout: scripts that asked for port 0 read it */
    printf("listening on http://%s:%d\n", p.host, server_port(s));
    fflush(stdout);
    int sig = 0;
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig != SIGHUP)
            break;
        if (!config_path) {
            log_line(&p.log_json, "SIGHUP: no --config to re-read; nothing changes");
            continue;
        }
        struct config next;
        config_defaults(&next);
        pb_err rerr = {0};
        char msg[700];
        if (config_load(config_path, &next, &rerr) || config_server_models(&next, models, paths, &rerr) ||
            server_reload(s, models, next.n_models, &rerr)) {
            snprintf(msg, sizeof msg, "error: SIGHUP: reload failed, serving as before: %s", rerr.msg);
            log_line(&p.log_json, msg);
            continue;
        }
        if (strcmp(next.host, cfg.host) || next.port != cfg.port || strcmp(next.api_key_file, cfg.api_key_file) ||
            (!ov.memory_limit_set && next.memory_limit != cfg.memory_limit))
            log_line(&p.log_json, "SIGHUP: host, port, key file and memory_limit changes take effect at a restart");
    }
    log_line(&p.log_json, sig == SIGTERM ? "SIGTERM: draining" : "SIGINT: draining");
    server_drain(s, cfg.drain_timeout_s);
    server_free(s);
    store_close(usage.store);
    pthread_mutex_destroy(&usage.mu);
    if (cfg.pid_file[0])
        remove_pid_file(cfg.pid_file);
    return CLI_OK;
}
