/* plumb service lb and plumb service k8s: plumb serve replicas behind a
 * load balancer, and on Kubernetes. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/config.h"
#include "plumb/service.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Writes text to path (whole or not at all), or prints it with print.
 * An existing file is replaced only with force. */
static int emit(const char *cmd, const char *text, const char *path, bool print, bool force)
{
    if (print || !strcmp(path, "-")) { /* -o -: standard output, as --print */
        fputs(text, stdout);
        return CLI_OK;
    }
    struct stat st;
    if (!force && stat(path, &st) == 0)
        return cli_error(cmd, "%s exists: give --force to replace it, --output FILE to write elsewhere, or --print",
                         path);
    pb_err err = {0};
    if (pb_write_small(path, text, strlen(text), 0644, &err))
        return cli_error(cmd, "%s", err.msg);
    printf("wrote %s\n", path);
    return CLI_OK;
}

/* ---- plumb service lb ---- */

static void lb_help(void)
{
    printf("Usage: plumb service lb --kind haproxy|nginx --backend URL... [OPTIONS]\n"
           "\n"
           "Writes the configuration of a load balancer in front of several plumb serve\n"
           "replicas (Debian's haproxy or nginx package): least connections, no buffering of\n"
           "streamed answers, read timeouts as long as a request may run, and a retry on\n"
           "another replica when one refuses the connection, closes it without answering,\n"
           "or answers 503 (busy or draining): nothing has reached the client then. A stream\n"
           "cut after its first bytes (a replica killed) is not retried.\n"
           "\n"
           "HAProxy checks each replica's /ready every --check seconds (a draining replica\n"
           "answers 503 and leaves the rotation; it comes back when ready). nginx open\n"
           "source has passive checks only: a replica that fails a request is skipped for\n"
           "--check seconds, the request retried elsewhere. plumb closes every connection\n"
           "after its response, so each request and each check is a new connection.\n"
           "\n"
           "Options:\n"
           "      --kind K            haproxy (a whole haproxy.cfg) or nginx (a file for the\n"
           "                          http context, e.g. conf.d/plumb.conf)\n"
           "      --backend URL       a replica, http://HOST:PORT (repeat, or comma-separated)\n"
           "      --listen ADDR       where the balancer listens: HOST:PORT, [V6]:PORT or PORT\n"
           "                          for every address (default %s)\n"
           "      --affinity A        none (default: least connections), header (consistent\n"
           "                          hash of --affinity-header: one conversation stays on one\n"
           "                          replica, which reuses its cached prefix) or api-key (of\n"
           "                          the Authorization header)\n"
           "      --affinity-header H the session header (default %s)\n"
           "      --config FILE       the replicas' configuration: its timeout and max_body\n"
           "      --timeout S         longest a request may run (default plumb's, 600)\n"
           "      --max-body BYTES    largest request body (default plumb's, 1 MiB)\n"
           "      --check S           HAProxy's check interval; nginx's rest for a failed\n"
           "                          replica (default %g)\n"
           "  -o, --output FILE       where to write (default /etc/haproxy/haproxy.cfg or\n"
           "                          /etc/nginx/conf.d/plumb.conf; '-': standard output)\n"
           "      --force             replace the file when it exists\n"
           "      --print             print the configuration, write nothing\n"
           "  -h, --help              this help\n"
           "\n"
           "Examples:\n"
           "  plumb service lb --kind haproxy --listen 0.0.0.0:8000 \\\n"
           "      --backend http://10.0.0.11:8080,http://10.0.0.12:8080 --force\n"
           "  plumb service lb --kind nginx --backend http://10.0.0.11:8080 \\\n"
           "      --backend http://10.0.0.12:8080 --affinity header --print\n",
           LB_DEFAULT_LISTEN, LB_DEFAULT_AFFINITY_HEADER, LB_DEFAULT_CHECK_S);
}

int cmd_service_lb(int argc, char **argv)
{
    enum { OPT_KIND = 1000, OPT_BACKEND, OPT_LISTEN, OPT_AFF, OPT_AFF_HEADER, OPT_CONFIG, OPT_TIMEOUT, OPT_BODY,
           OPT_CHECK, OPT_FORCE, OPT_PRINT };
    static const struct option longopts[] = {
        {"kind", required_argument, 0, OPT_KIND},       {"backend", required_argument, 0, OPT_BACKEND},
        {"listen", required_argument, 0, OPT_LISTEN},   {"affinity", required_argument, 0, OPT_AFF},
        {"affinity-header", required_argument, 0, OPT_AFF_HEADER},
        {"config", required_argument, 0, OPT_CONFIG},   {"timeout", required_argument, 0, OPT_TIMEOUT},
        {"max-body", required_argument, 0, OPT_BODY},   {"check", required_argument, 0, OPT_CHECK},
        {"output", required_argument, 0, 'o'},          {"force", no_argument, 0, OPT_FORCE},
        {"print", no_argument, 0, OPT_PRINT},           {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct lb_params p = {0};
    bool kind = false, force = false, print = false;
    const char *output = NULL, *config = NULL;
    char *lists[LB_MAX_BACKENDS]; /* copies of comma-separated --backend values */
    int n_lists = 0, rc = CLI_OK;
    long long v;
    int c;
    struct cli_parser par = {.cmd = "service", .shortopts = "o:h", .longopts = longopts, .files = "config"};
    while (rc == CLI_OK && (c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_KIND:
            if (!service_lb_kind_parse(optarg, &p.kind))
                rc = cli_usage_error("service", "--kind is haproxy or nginx, not '%s'", optarg);
            kind = true;
            break;
        case OPT_BACKEND: {
            if (n_lists == LB_MAX_BACKENDS || !(lists[n_lists] = strdup(optarg))) {
                rc = cli_usage_error("service", "too many --backend options");
                break;
            }
            char *save = NULL;
            for (char *t = strtok_r(lists[n_lists++], ",", &save); t && rc == CLI_OK; t = strtok_r(NULL, ",", &save)) {
                if (p.n_backends == LB_MAX_BACKENDS)
                    rc = cli_usage_error("service", "more than %d backends", LB_MAX_BACKENDS);
                else
                    p.backends[p.n_backends++] = t;
            }
            break;
        }
        case OPT_LISTEN: p.listen = optarg; break;
        case OPT_AFF:
            if (!strcmp(optarg, "none"))
                p.affinity = LB_AFFINITY_NONE;
            else if (!strcmp(optarg, "header"))
                p.affinity = LB_AFFINITY_HEADER;
            else if (!strcmp(optarg, "api-key"))
                p.affinity = LB_AFFINITY_API_KEY;
            else
                rc = cli_usage_error("service", "--affinity is none, header or api-key, not '%s'", optarg);
            break;
        case OPT_AFF_HEADER:
            p.affinity_header = optarg;
            if (p.affinity == LB_AFFINITY_NONE)
                p.affinity = LB_AFFINITY_HEADER;
            break;
        case OPT_CONFIG: config = optarg; break;
        case OPT_TIMEOUT:
            if (!cli_parse_float("service", "--timeout", optarg, 1, 1e6, &p.timeout_s))
                rc = CLI_USAGE;
            break;
        case OPT_BODY:
            if (!cli_parse_int("service", "--max-body", optarg, 1024, 1ll << 32, &v))
                rc = CLI_USAGE;
            p.max_body = (size_t)v;
            break;
        case OPT_CHECK:
            if (!cli_parse_float("service", "--check", optarg, 0.1, 3600, &p.check_s))
                rc = CLI_USAGE;
            break;
        case 'o': output = optarg; break;
        case OPT_FORCE: force = true; break;
        case OPT_PRINT: print = true; break;
        case 'h': lb_help(); goto done;
        default: rc = CLI_USAGE; break; /* cli_getopt said why */
        }
    }
    if (rc != CLI_OK)
        goto done;
    if (optind < argc) {
        rc = cli_usage_error("service", "unexpected argument '%s'", argv[optind]);
        goto done;
    }
    if (!kind) {
        rc = cli_usage_error("service", "lb needs --kind haproxy or --kind nginx");
        goto done;
    }
    if (config) {
        struct config cfg;
        config_defaults(&cfg);
        pb_err err = {0};
        if (config_load(config, &cfg, &err)) {
            rc = cli_error("service", "%s", err.msg);
            goto done;
        }
        if (p.timeout_s == 0)
            p.timeout_s = cfg.timeout_s;
        if (p.max_body == 0)
            p.max_body = cfg.max_body;
    }
    char *text = NULL;
    pb_err err = {0};
    if (service_lb(&p, &text, &err)) {
        rc = cli_error("service", "%s", err.msg);
        goto done;
    }
    if (!output)
        output = p.kind == LB_HAPROXY ? "/etc/haproxy/haproxy.cfg" : "/etc/nginx/conf.d/plumb.conf";
    rc = emit("service", text, output, print, force);
    if (rc == CLI_OK && !print)
        printf("check it with '%s', then reload: systemctl reload %s\n",
               p.kind == LB_HAPROXY ? "haproxy -c -f FILE" : "nginx -t", service_lb_kind_name(p.kind));
    free(text);
done:
    for (int i = 0; i < n_lists; i++)
        free(lists[i]);
    return rc;
}

/* ---- plumb service k8s ---- */

static void k8s_help(void)
{
    printf("Usage: plumb service k8s --config FILE --mirror URL [OPTIONS]\n"
           "\n"
           "Prints Kubernetes manifests for replicas of plumb serve with this configuration\n"
           "(or writes them with -o): a ConfigMap (the configuration as the pods read it), a\n"
           "Secret with the API keys of its api_key_file, a Service, a StatefulSet, a\n"
           "PodDisruptionBudget and, with --hpa, a HorizontalPodAutoscaler. Apply them with\n"
           "kubectl apply -f FILE.\n"
           "\n"
           "Each replica keeps its own store on a PersistentVolumeClaim, filled before it\n"
           "starts by init containers running 'plumb pull MIRROR/blobs/sha256-HEX --sha256\n"
           "HEX --name NAME --if-absent' for each model (nothing is downloaded again after a\n"
           "restart). The mirror is any HTTP server with the models' files under\n"
           "blobs/sha256-HEX: a store's folder ($PLUMB_HOME) or an unpacked 'plumb export'\n"
           "bundle. The models are looked up in the store here (the configuration's store,\n"
           "else the default): their digests, sizes and memory estimates.\n"
           "\n"
           "The pods: readiness on /ready, liveness on /health (after a startup probe that\n"
           "allows ten minutes of loading), a preStop pause (--prestop) before SIGTERM starts\n"
           "plumb's drain, terminationGracePeriodSeconds = pause + drain_timeout + 5, CPU\n"
           "requests and limits of --cpus (plumb's threads), memory requested as plumb\n"
           "estimates it (limit 20%% above), Prometheus scrape annotations, user %d, a\n"
           "read-only root file system, no privileges.\n"
           "\n"
           "Options:\n"
           "      --config FILE       the configuration (its models: names in the store)\n"
           "      --mirror URL        where the pods pull the models from (http or https)\n"
           "      --replicas N        replicas (default 2)\n"
           "      --cpus N            CPUs of each replica, its threads (default: the\n"
           "                          configuration's threads; required when that is 0)\n"
           "      --image REF         the container image (default %s, what 'make image'\n"
           "                          builds; push it where the cluster pulls from)\n"
           "      --name NAME         the objects' name (default %s)\n"
           "      --namespace NS      their namespace (default: none written)\n"
           "      --keys-secret NAME  take the API keys from this existing Secret (its key\n"
           "                          'keys') instead of writing the key file into one\n"
           "      --storage SIZE      each replica's store (default: the models' files + 20%%\n"
           "                          + 1 GiB)\n"
           "      --storage-class C   its storage class (default: the cluster's)\n"
           "      --hpa MIN:MAX[:CPU] a HorizontalPodAutoscaler between MIN and MAX replicas at\n"
           "                          CPU %% use (default 70)\n"
           "      --prestop S         the pause before the drain (default 5)\n"
           "      --json              one JSON List instead of YAML documents\n"
           "  -o, --output FILE       write there (--force: replace it; '-': standard output)\n"
           "  -h, --help              this help\n"
           "\n"
           "Example:\n"
           "  plumb service k8s --config /etc/plumb/plumb.ini --mirror http://models.internal/plumb \\\n"
           "      --replicas 3 --cpus 8 --image registry.internal/plumb:%s | kubectl apply -f -\n",
           K8S_USER, K8S_DEFAULT_IMAGE, K8S_DEFAULT_NAME, PLUMB_VERSION);
}

int cmd_service_k8s(int argc, char **argv)
{
    enum { OPT_CONFIG = 1000, OPT_MIRROR, OPT_REPLICAS, OPT_CPUS, OPT_IMAGE, OPT_NAME, OPT_NS, OPT_KEYS_SECRET,
           OPT_STORAGE, OPT_CLASS, OPT_HPA, OPT_PRESTOP, OPT_JSON, OPT_FORCE };
    static const struct option longopts[] = {
        {"config", required_argument, 0, OPT_CONFIG},     {"mirror", required_argument, 0, OPT_MIRROR},
        {"replicas", required_argument, 0, OPT_REPLICAS}, {"cpus", required_argument, 0, OPT_CPUS},
        {"image", required_argument, 0, OPT_IMAGE},       {"name", required_argument, 0, OPT_NAME},
        {"namespace", required_argument, 0, OPT_NS},      {"keys-secret", required_argument, 0, OPT_KEYS_SECRET},
        {"storage", required_argument, 0, OPT_STORAGE},   {"storage-class", required_argument, 0, OPT_CLASS},
        {"hpa", required_argument, 0, OPT_HPA},           {"prestop", required_argument, 0, OPT_PRESTOP},
        {"json", no_argument, 0, OPT_JSON},               {"output", required_argument, 0, 'o'},
        {"force", no_argument, 0, OPT_FORCE},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static struct k8s_params p; /* (large: the models) */
    memset(&p, 0, sizeof p);
    p.replicas = 2;
    const char *config = NULL, *output = NULL;
    bool json = false, force = false;
    long long v;
    int c;
    struct cli_parser par = {.cmd = "service", .shortopts = "o:h", .longopts = longopts, .files = "config"};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_CONFIG: config = optarg; break;
        case OPT_MIRROR: p.mirror = optarg; break;
        case OPT_REPLICAS:
            if (!cli_parse_int("service", "--replicas", optarg, 1, 1000, &v))
                return CLI_USAGE;
            p.replicas = (int)v;
            break;
        case OPT_CPUS:
            if (!cli_parse_int("service", "--cpus", optarg, 1, 1024, &v))
                return CLI_USAGE;
            p.cpus = (int)v;
            break;
        case OPT_IMAGE: p.image = optarg; break;
        case OPT_NAME: p.name = optarg; break;
        case OPT_NS: p.namespace_ = optarg; break;
        case OPT_KEYS_SECRET: p.keys_secret = optarg; break;
        case OPT_STORAGE: p.storage = optarg; break;
        case OPT_CLASS: p.storage_class = optarg; break;
        case OPT_HPA: {
            int a = 0, b = 0, t = 0, n = 0;
            if ((sscanf(optarg, "%d:%d%n", &a, &b, &n) != 2 && sscanf(optarg, "%d:%d:%d%n", &a, &b, &t, &n) != 3) ||
                (optarg[n] && sscanf(optarg, "%d:%d:%d%n", &a, &b, &t, &n) != 3) || optarg[n] || a < 1 || b < a ||
                b > 1000 || (t && (t < 1 || t > 1000)))
                return cli_usage_error("service", "--hpa MIN:MAX[:CPU%%], 1 <= MIN <= MAX <= 1000 (got '%s')", optarg);
            p.hpa_min = a;
            p.hpa_max = b;
            p.hpa_cpu_percent = t;
            break;
        }
        case OPT_PRESTOP:
            if (!cli_parse_float("service", "--prestop", optarg, 0, 3600, &p.prestop_s))
                return CLI_USAGE;
            break;
        case OPT_JSON: json = true; break;
        case 'o': output = optarg; break;
        case OPT_FORCE: force = true; break;
        case 'h': k8s_help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (optind < argc)
        return cli_usage_error("service", "unexpected argument '%s'", argv[optind]);
    if (!config)
        return cli_usage_error("service", "k8s needs --config FILE (the configuration the pods serve)");
    if (!p.mirror)
        return cli_usage_error("service", "k8s needs --mirror URL (where the pods pull the models from)");
    static struct config cfg;
    config_defaults(&cfg);
    pb_err err = {0};
    if (config_load(config, &cfg, &err))
        return cli_error("service", "%s", err.msg);
    if (!p.cpus && cfg.threads == 0)
        return cli_error("service", "%s says threads = 0 (every CPU of the machine), which a pod does not have: give "
                         "--cpus N (the CPUs each replica requests and the threads it runs)", config);
    if (!p.cpus)
        p.cpus = cfg.threads;
    p.cfg = &cfg;
    if (service_k8s_models(&cfg, NULL, p.models, &err))
        return cli_error("service", "%s", err.msg);
    char *keys = NULL;
    if (cfg.api_key_file[0] && !p.keys_secret &&
        pb_read_small(cfg.api_key_file, 1u << 20, &keys, NULL, &err) != PB_OK)
        return cli_error("service", "api_key_file: %s", err.msg);
    p.keys_text = keys;
    char *text = NULL;
    int rc = service_k8s(&p, json, &text, &err);
    if (keys) { /* keys do not linger in freed memory */
        volatile char *k = keys;
        for (size_t i = 0; k[i]; i++)
            k[i] = 0;
        free(keys);
    }
    if (rc)
        return cli_error("service", "%s", err.msg);
    rc = emit("service", text, output, !output, force);
    free(text);
    return rc;
}
