/* plumb serve: the OpenAI-compatible server, until SIGTERM or SIGINT,
 * then a graceful drain. */
#define _GNU_SOURCE
#include "cli.h"

#include "chat/chat.h"
#include "server/server.h"
#include "store/store.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void help(void)
{
    printf("Usage: plumb serve MODEL [OPTIONS]\n"
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
           "Options:\n"
           "      --alias NAME          the model's id in the API (default: the store name\n"
           "                            as given, or the file name without .gguf)\n"
           "      --host ADDR           address to listen on (default 127.0.0.1: this machine only)\n"
           "      --port N              port (default 8080; 0: any free one, printed)\n"
           "  -np, --parallel N         requests generating at once (default 4)\n"
           "  -c, --ctx N               context of each request, prompt and answer (default 4096)\n"
           "      --api-key-file FILE   require 'Authorization: Bearer KEY' on /v1/*; FILE has one\n"
           "                            key per line, optionally 'ID KEY' (the id is what logs show)\n"
           "      --max-queue N         requests that may wait for a slot (default 64)\n"
           "      --timeout S           longest a request may run, and a connection stay idle (default 600)\n"
           "      --drain-timeout S     how long SIGTERM waits for running answers (default 30)\n"
           "      --max-tokens N        cap on a request's max_tokens (default: the context)\n"
           "      --max-body BYTES      largest request body (default 1048576)\n"
           "      --max-connections N   open connections at most (default 256)\n"
           "  -t, --threads N           threads (default: all CPUs)\n"
           "      --batch N             tokens per forward pass (default 512)\n"
           "      --step-ms MS          while answers stream, a step (one token for each) aims at\n"
           "                            this time: prompts of new requests are fed in as it allows\n"
           "                            (bounds inter-token latency; default 150)\n"
           "      --prefill-chunk N     prompt tokens per step at most while others generate (default 256)\n"
           "      --kv-type T           KV cache type: f16 (default), f32 or q8_0\n"
           "      --chat-format NAME    a built-in chat format instead of the model's template\n"
           "  -h, --help                this help\n"
           "\n"
           "Example:\n"
           "  plumb serve model.gguf --alias assistant --parallel 16 --port 8080\n"
           "  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\\n"
           "       -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'\n");
}

static void log_line(void *user, const char *line)
{
    (void)user;
    time_t t = time(NULL);
    struct tm tm;
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    fprintf(stderr, "%s plumb serve: %s\n", stamp, line);
}

int cmd_serve(int argc, char **argv)
{
    enum {
        OPT_ALIAS = 1000, OPT_HOST, OPT_PORT, OPT_KEYS, OPT_QUEUE, OPT_TIMEOUT, OPT_DRAIN, OPT_MAXTOK, OPT_BODY,
        OPT_CONN, OPT_BATCH, OPT_CHUNK, OPT_KV, OPT_FORMAT, OPT_NP, OPT_STEP,
    };
    static const struct option longopts[] = {
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
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct server_params p = server_defaults();
    double drain = 30, d;
    long long v;
    int c;
    /* llama-server's -np for --parallel */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-np"))
            argv[i] = "--parallel";
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:t:h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_ALIAS: p.alias = optarg; break;
        case OPT_HOST: p.host = optarg; break;
        case OPT_PORT:
            if (!cli_parse_int("serve", "--port", optarg, 0, 65535, &v))
                return CLI_USAGE;
            p.port = (int)v;
            break;
        case OPT_NP:
            if (!cli_parse_int("serve", "--parallel", optarg, 1, 256, &v))
                return CLI_USAGE;
            p.n_parallel = (int)v;
            break;
        case 'c':
            if (!cli_parse_int("serve", "--ctx", optarg, 16, 1 << 24, &v))
                return CLI_USAGE;
            p.n_ctx = v;
            break;
        case OPT_KEYS: p.api_key_file = optarg; break;
        case OPT_QUEUE:
            if (!cli_parse_int("serve", "--max-queue", optarg, 0, 1 << 20, &v))
                return CLI_USAGE;
            p.max_queue = (int)v;
            break;
        case OPT_TIMEOUT:
            if (!cli_parse_float("serve", "--timeout", optarg, 0.1, 1e7, &d))
                return CLI_USAGE;
            p.timeout_s = d;
            break;
        case OPT_DRAIN:
            if (!cli_parse_float("serve", "--drain-timeout", optarg, 0, 1e7, &drain))
                return CLI_USAGE;
            break;
        case OPT_MAXTOK:
            if (!cli_parse_int("serve", "--max-tokens", optarg, 1, 1 << 24, &v))
                return CLI_USAGE;
            p.max_tokens = (int)v;
            break;
        case OPT_BODY:
            if (!cli_parse_int("serve", "--max-body", optarg, 1024, 1ll << 32, &v))
                return CLI_USAGE;
            p.max_body = (size_t)v;
            break;
        case OPT_CONN:
            if (!cli_parse_int("serve", "--max-connections", optarg, 1, 100000, &v))
                return CLI_USAGE;
            p.max_connections = (int)v;
            break;
        case 't':
            if (!cli_parse_int("serve", "--threads", optarg, 1, 1024, &v))
                return CLI_USAGE;
            p.n_threads = (int)v;
            break;
        case OPT_BATCH:
            if (!cli_parse_int("serve", "--batch", optarg, 1, 1 << 16, &v))
                return CLI_USAGE;
            p.n_batch = (int)v;
            break;
        case OPT_CHUNK:
            if (!cli_parse_int("serve", "--prefill-chunk", optarg, 1, 1 << 16, &v))
                return CLI_USAGE;
            p.prefill_chunk = (int)v;
            break;
        case OPT_STEP:
            if (!cli_parse_float("serve", "--step-ms", optarg, 1, 1e6, &d))
                return CLI_USAGE;
            p.step_target_s = d / 1000;
            break;
        case OPT_KV:
            if (!cli_parse_kv_type("serve", optarg, &p.kv_type))
                return CLI_USAGE;
            break;
        case OPT_FORMAT:
            if (!chat_format_known(optarg))
                return cli_usage_error("serve", "unknown chat format '%s' (%s)", optarg, chat_format_names());
            p.chat_format = optarg;
            break;
        case 'h': help(); return CLI_OK;
        case ':': return cli_usage_error("serve", "option %s needs a value", argv[optind - 1]);
        default: return cli_usage_error("serve", "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return cli_usage_error("serve", "missing MODEL");
    if (optind + 1 < argc)
        return cli_usage_error("serve", "unexpected argument '%s'", argv[optind + 1]);
    char path[4096];
    struct store_entry entry;
    if (!cli_resolve_model("serve", argv[optind], path, sizeof path, &entry))
        return CLI_FAIL;
    p.model_path = path;
    /* a store name, not the blob's file name (its digest), is the id */
    if (!p.alias && entry.digest[0])
        p.alias = argv[optind];
    p.log = log_line;

    /* signals are taken by this thread alone, with sigwait */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct server *s;
    pb_err err = {0};
    if (server_open(&p, &s, &err))
        return cli_error("serve", "%s", err.msg);
    /* the port line on stdout: scripts that asked for port 0 read it */
    printf("listening on http://%s:%d\n", p.host, server_port(s));
    fflush(stdout);
    int sig = 0;
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            log_line(NULL, "SIGHUP: configuration reload is not available yet; ignored");
            continue;
        }
        break;
    }
    log_line(NULL, sig == SIGTERM ? "SIGTERM: draining" : "SIGINT: draining");
    int left = server_drain(s, drain);
    server_free(s);
    (void)left;
    return CLI_OK;
}
