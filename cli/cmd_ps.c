/* plumb ps, plumb load, plumb unload: the models of a running plumb serve,
 * through its operations API (GET /v1/plumb/models, POST
 * /v1/plumb/models/NAME/load and .../unload). */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/config.h"
#include "plumb/service.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_URL "http://127.0.0.1:8080"

static const char *const common_help =
    "      --url URL           the server (default " DEFAULT_URL ")\n"
    "      --api-key-file FILE a key to send (plumb serve's key file: the first key with\n"
    "                          the admin flag, else the first; '-' reads standard input)\n"
    "      --config FILE       take the url and the key file from the server's configuration\n"
    "      --json              print JSON\n"
    "  -h, --help              this help\n";

static void help_ps(void)
{
    printf("Usage: plumb ps [--url URL] [--api-key-file FILE] [--json]\n"
           "\n"
           "What a running plumb serve has: each model it serves, whether it is loaded,\n"
           "loading or unloaded, when it loads (at start or on demand), its memory (the\n"
           "estimate, or what it took once loaded), its slots busy and in all, requests\n"
           "waiting, how long it has been idle and when it will be unloaded (its\n"
           "keep_alive); then the memory the models use against the limit. The server's\n"
           "operations API needs a key with the admin flag when the server has keys.\n"
           "\n"
           "Options:\n"
           "%s"
           "\n"
           "Examples:\n"
           "  plumb ps\n"
           "  plumb ps --config /etc/plumb/plumb.ini --json\n",
           common_help);
}

static void help_load(const char *cmd)
{
    const bool load = !strcmp(cmd, "load");
    printf("Usage: plumb %s NAME [--url URL] [--api-key-file FILE] [--json]\n"
           "\n",
           cmd);
    if (load)
        printf("Loads model NAME of a running plumb serve now, as its first request would:\n"
               "idle models are unloaded first, least recently used first, when it does not\n"
               "fit beside them; it fails when it cannot fit (the others are busy, or it is\n"
               "larger than the memory limit). It then stays for its keep_alive.\n");
    else
        printf("Unloads model NAME of a running plumb serve: at once when no request uses it,\n"
               "else as soon as its requests have ended (new ones are still served meanwhile).\n"
               "Its next request loads it again. Names on one file with the same settings\n"
               "share one loaded copy: unloading one unloads it for all.\n");
    printf("\n"
           "Options:\n"
           "%s"
           "      --timeout S         how long to wait for the server (default %s)\n"
           "\n"
           "Example:\n"
           "  plumb %s assistant\n",
           common_help, load ? "600" : "30", cmd);
}

struct target {
    const char *url;
    char url_buf[600];
    char key[300];
    bool has_key;
    bool json;
    double timeout_s;
};

/* The options every one of the three takes; returns -1 to go on with
 * optind at the operands, else the exit status. */
static int parse(const char *cmd, int argc, char **argv, struct target *t)
{
    enum { OPT_URL = 1000, OPT_KEY_FILE, OPT_CONFIG, OPT_JSON, OPT_TIMEOUT };
    static const struct option longopts[] = {
        {"url", required_argument, 0, OPT_URL},
        {"api-key-file", required_argument, 0, OPT_KEY_FILE},
        {"config", required_argument, 0, OPT_CONFIG},
        {"json", no_argument, 0, OPT_JSON},
        {"timeout", required_argument, 0, OPT_TIMEOUT},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *key_file = NULL, *config = NULL;
    int c;
    struct cli_parser par = {.cmd = cmd, .shortopts = "h", .longopts = longopts, .files = "config"};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_URL: t->url = optarg; break;
        case OPT_KEY_FILE: key_file = optarg; break;
        case OPT_CONFIG: config = optarg; break;
        case OPT_JSON: t->json = true; break;
        case OPT_TIMEOUT:
            if (!cli_parse_float(cmd, "--timeout", optarg, 0.1, 86400, &t->timeout_s))
                return CLI_USAGE;
            break;
        case 'h':
            if (!strcmp(cmd, "ps"))
                help_ps();
            else
                help_load(cmd);
            return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (config) {
        struct config cfg;
        pb_err err = {0};
        config_defaults(&cfg);
        if (config_load(config, &cfg, &err))
            return cli_error(cmd, "%s", err.msg);
        /* a server listening on every address answers on loopback */
        const char *host = cfg.host;
        if (!strcmp(host, "0.0.0.0") || !strcmp(host, ""))
            host = "127.0.0.1";
        else if (!strcmp(host, "::"))
            host = "::1";
        if (!t->url) {
            snprintf(t->url_buf, sizeof t->url_buf, strchr(host, ':') ? "http://[%s]:%d" : "http://%s:%d", host,
                     cfg.port);
            t->url = t->url_buf;
        }
        if (!key_file && cfg.api_key_file[0]) {
            if (!cli_read_key(cmd, cfg.api_key_file, true, t->key, sizeof t->key))
                return CLI_FAIL;
            t->has_key = true;
        }
    }
    if (key_file) {
        if (!cli_read_key(cmd, key_file, true, t->key, sizeof t->key))
            return CLI_USAGE;
        t->has_key = true;
    }
    if (!t->url)
        t->url = DEFAULT_URL;
    return -1;
}

/* The request; an error printed (exit status returned) unless the
 * server answered 200, whose body is then *out. */
static int call(const char *cmd, const struct target *t, const char *method, const char *path, const char *name,
                json_t **out)
{
    int status;
    json_t *body = NULL;
    pb_err err = {0};
    if (service_call(t->url, t->has_key ? t->key : NULL, method, path, t->timeout_s, &status, &body, &err))
        return cli_error(cmd, "%s", err.msg);
    if (status == 200 && json_is_object(body)) {
        *out = body;
        return CLI_OK;
    }
    const char *msg = json_string_value(json_object_get(json_object_get(body, "error"), "message"));
    char said[700];
    snprintf(said, sizeof said, "%s", msg ? msg : "");
    json_decref(body);
    if (status == 200)
        return cli_error(cmd, "%s answered something other than JSON: is it plumb serve?", t->url);
    if (status == 401)
        return cli_error(cmd, "%s needs an API key: give --api-key-file FILE (its key file; a key with the admin "
                         "flag)%s%s", t->url, said[0] ? ": " : "", said);
    if (status == 403)
        return cli_error(cmd, "the key is not an admin key: the operations API needs one (\"ID KEY admin\" in the "
                         "server's key file)");
    if (status == 404 && name)
        return cli_error(cmd, "%s serves no model '%s' (plumb ps lists them)", t->url, name);
    if (status == 404)
        return cli_error(cmd, "%s has no operations API (/v1/plumb/models): is it plumb serve, and a recent one?",
                         t->url);
    return cli_error(cmd, "%s answered %d%s%s", t->url, status, said[0] ? ": " : "", said[0] ? said : "");
}

/* "12s", "4m05s", "2h03m". */
static void fmt_secs(double s, char *buf, size_t size)
{
    long long t = (long long)floor(s);
    if (t < 60)
        snprintf(buf, size, "%llds", t);
    else if (t < 3600)
        snprintf(buf, size, "%lldm%02llds", t / 60, t % 60);
    else
        snprintf(buf, size, "%lldh%02lldm", t / 3600, t % 3600 / 60);
}

static void print_table(const json_t *doc)
{
    const json_t *models = json_object_get(doc, "models");
    printf("%-24s %-9s %-6s %10s %7s %6s %8s %9s\n", "MODEL", "STATE", "LOAD", "MEMORY", "SLOTS", "QUEUE", "IDLE",
           "UNLOADS");
    for (size_t i = 0; i < json_array_size(models); i++) {
        const json_t *m = json_array_get(models, i);
        char mem[32], slots[48], idle[32] = "-", expires[48] = "-";
        cli_fmt_bytes((uint64_t)json_integer_value(json_object_get(m, "memory_bytes")), mem, sizeof mem);
        snprintf(slots, sizeof slots, "%lld/%lld", (long long)json_integer_value(json_object_get(m, "slots_busy")),
                 (long long)json_integer_value(json_object_get(m, "slots")));
        const char *state = json_string_value(json_object_get(m, "state"));
        const json_t *id = json_object_get(m, "idle_s"), *ex = json_object_get(m, "expires_in_s");
        if (json_is_number(id))
            fmt_secs(json_number_value(id), idle, sizeof idle);
        else if (state && !strcmp(state, "loaded"))
            snprintf(idle, sizeof idle, "busy");
        if (json_is_number(ex)) {
            char t[32];
            fmt_secs(json_number_value(ex), t, sizeof t);
            snprintf(expires, sizeof expires, "in %s", t);
        } else if (state && !strcmp(state, "loaded")) {
            snprintf(expires, sizeof expires, json_is_number(id) ? "never" : "after use");
        }
        printf("%-24s %-9s %-6s %10s %7s %6lld %8s %9s\n", cli_esc(json_string_value(json_object_get(m, "id"))),
               state ? state : "?", json_string_value(json_object_get(m, "load")), mem, slots,
               (long long)json_integer_value(json_object_get(m, "queued")), idle, expires);
    }
    const json_t *memo = json_object_get(doc, "memory");
    char used[32], limit[32] = "no limit";
    cli_fmt_bytes((uint64_t)json_integer_value(json_object_get(memo, "used_bytes")), used, sizeof used);
    if (json_is_integer(json_object_get(memo, "limit_bytes")))
        cli_fmt_bytes((uint64_t)json_integer_value(json_object_get(memo, "limit_bytes")), limit, sizeof limit);
    printf("\nmemory: %s in use by the models and the server, of %s\n", used, limit);
}

int cmd_ps(int argc, char **argv)
{
    struct target t = {.timeout_s = 30};
    int rc = parse("ps", argc, argv, &t);
    if (rc >= 0)
        return rc;
    if (optind < argc)
        return cli_usage_error("ps", "unexpected argument '%s'", argv[optind]);
    json_t *doc = NULL;
    if ((rc = call("ps", &t, "GET", "/v1/plumb/models", NULL, &doc)))
        return rc;
    if (t.json)
        return cli_print_json(doc, true);
    print_table(doc);
    json_decref(doc);
    return CLI_OK;
}

/* load and unload */
static int load_or_unload(const char *cmd, int argc, char **argv)
{
    const bool load = !strcmp(cmd, "load");
    struct target t = {.timeout_s = load ? 600 : 30};
    int rc = parse(cmd, argc, argv, &t);
    if (rc >= 0)
        return rc;
    if (optind >= argc)
        return cli_usage_error(cmd, "missing NAME (plumb ps lists the models)");
    if (optind + 1 < argc)
        return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
    const char *name = argv[optind];
    if (!config_alias_valid(name))
        return cli_usage_error(cmd, "'%s' is not a model name (1-64 of letters, digits, . _ : -)", name);
    char path[200];
    snprintf(path, sizeof path, "/v1/plumb/models/%s/%s", name, cmd);
    json_t *m = NULL;
    if ((rc = call(cmd, &t, "POST", path, name, &m)))
        return rc;
    if (t.json)
        return cli_print_json(m, true);
    const char *state = json_string_value(json_object_get(m, "state"));
    char mem[32];
    cli_fmt_bytes((uint64_t)json_integer_value(json_object_get(m, "memory_bytes")), mem, sizeof mem);
    if (load) {
        const json_t *ka = json_object_get(m, "keep_alive_s");
        char keep[64] = "stays loaded";
        if (json_is_number(ka) && json_number_value(ka) >= 0) {
            char d[32];
            fmt_secs(json_number_value(ka), d, sizeof d);
            snprintf(keep, sizeof keep, "unloads after %s idle", d);
        }
        printf("%s: %s, %s, %lld slot%s; %s\n", name, state ? state : "?", mem,
               (long long)json_integer_value(json_object_get(m, "slots")),
               json_integer_value(json_object_get(m, "slots")) == 1 ? "" : "s", keep);
    } else if (state && !strcmp(state, "loaded")) {
        printf("%s: unloads when its running requests end (%lld slot%s busy)\n", name,
               (long long)json_integer_value(json_object_get(m, "slots_busy")),
               json_integer_value(json_object_get(m, "slots_busy")) == 1 ? "" : "s");
    } else {
        printf("%s: %s (%s freed)\n", name, state ? state : "?", mem);
    }
    json_decref(m);
    return CLI_OK;
}

int cmd_load(int argc, char **argv)
{
    return load_or_unload("load", argc, argv);
}

int cmd_unload(int argc, char **argv)
{
    return load_or_unload("unload", argc, argv);
}
