/* plumb fleet: the sites a technician looks after (add, rm, ls), what each
 * runs and how it does (status), and which sites still run an old version
 * of a model (check). The list and the asking are the library's
 * (plumb/fleet.h); this prints. */
#include "cli.h"

#include "plumb/fleet.h"

#include <stdlib.h>
#include <string.h>

static void help_all(void)
{
    printf("Usage: plumb fleet add NAME URL [--api-key-file FILE]\n"
           "       plumb fleet rm NAME\n"
           "       plumb fleet ls [--json]\n"
           "       plumb fleet status [--json] [--timeout S]\n"
           "       plumb fleet check NAME[:TAG] [--json] [--timeout S]\n"
           "\n"
           "The plumb serve installations you look after, at a glance. The list of sites\n"
           "is kept in the store's home ($PLUMB_HOME/fleet.json, mode 0600): each site's\n"
           "name, URL and the path of a file holding its admin key (never the key).\n"
           "Sites are asked through their operations API (/v1/plumb/status, /usage,\n"
           "/doctor), which needs a key with the admin flag: a line 'ID KEY admin' in\n"
           "the site's key file (a site without keys answers anyone on its network).\n"
           "\n"
           "  add     adds a site; NAME is 1-64 of letters, digits, . _ : - (like a model\n"
           "          alias), URL is http(s)://HOST[:PORT]; --api-key-file FILE holds the\n"
           "          key to send (KEY, ID KEY or ID KEY admin per line; an admin line is\n"
           "          preferred), checked now and read again at each status\n"
           "  rm      removes a site from the list\n"
           "  ls      lists the sites\n"
           "  status  asks every site at once, each request bounded by --timeout (default\n"
           "          5 s, connection and answer), so one slow or dead site never holds up\n"
           "          the others: reachable or why not, plumb version, the models served\n"
           "          with their store digests, requests running and waiting, tokens/s\n"
           "          over the last minute and 5 minutes, today's requests and tokens\n"
           "          (UTC, the site's clock), and the site's doctor verdict\n"
           "  check   which sites serve which digest of a model (the store name their\n"
           "          configuration named, any tag when none is given, or the model's id),\n"
           "          and which do not serve it: who still needs an update bundle\n"
           "\n"
           "Options:\n"
           "      --api-key-file FILE  add: the site's admin key\n"
           "      --timeout S          status, check: seconds per request (default 5)\n"
           "      --json               print JSON (status: an array of sites, each with\n"
           "                           \"error\" null or why it did not answer)\n"
           "  -h, --help               this help\n"
           "\n"
           "Exit status: status and check exit 0 when every site answered, 1 when any did\n"
           "not (they still report the others), 2 on bad usage.\n"
           "\n"
           "Examples:\n"
           "  plumb fleet add acme https://llm.acme.example:8080 --api-key-file ~/keys/acme\n"
           "  plumb fleet add lab http://10.0.0.11:8080\n"
           "  plumb fleet ls\n"
           "  plumb fleet rm lab\n"
           "  plumb fleet status\n"
           "  plumb fleet status --json --timeout 2\n"
           "  plumb fleet check support-bot:2\n"
           "  plumb fleet check support-bot --json\n");
}

/* ---- add, rm, ls ---- */

static int load(struct fleet *f, char *path, size_t size)
{
    pb_err err = {0};
    if (fleet_default_path(path, size, &err) || fleet_load(path, f, &err))
        return cli_error("fleet", "%s", err.msg);
    return CLI_OK;
}

static int save(const struct fleet *f, const char *path)
{
    pb_err err = {0};
    if (fleet_save(path, f, &err))
        return cli_error("fleet", "%s", err.msg);
    return CLI_OK;
}

static int fleet_add_cmd(const char *name, const char *url, const char *key_file)
{
    struct fleet f;
    char path[FLEET_PATH_MAX];
    int rc = load(&f, path, sizeof path);
    if (rc)
        return rc;
    pb_err err = {0};
    if (fleet_add(&f, name, url, key_file, &err)) {
        fleet_free(&f);
        return cli_error("fleet", "%s", err.msg);
    }
    rc = save(&f, path);
    if (!rc)
        printf("added %s %s%s%s\n", cli_esc(name), cli_esc(f.sites[f.n - 1].url), key_file ? " key file " : "",
               key_file ? cli_esc(f.sites[f.n - 1].key_file) : "");
    fleet_free(&f);
    return rc;
}

static int fleet_rm_cmd(const char *name)
{
    struct fleet f;
    char path[FLEET_PATH_MAX];
    int rc = load(&f, path, sizeof path);
    if (rc)
        return rc;
    pb_err err = {0};
    if (fleet_rm(&f, name, &err))
        rc = cli_error("fleet", "%s", err.msg);
    else if (!(rc = save(&f, path)))
        printf("removed %s\n", cli_esc(name));
    fleet_free(&f);
    return rc;
}

static int fleet_ls_cmd(bool json)
{
    struct fleet f;
    char path[FLEET_PATH_MAX];
    int rc = load(&f, path, sizeof path);
    if (rc)
        return rc;
    if (json) {
        json_t *a = json_array();
        for (int i = 0; i < f.n; i++)
            json_array_append_new(a, json_pack("{s:s, s:s, s:s?}", "name", f.sites[i].name, "url", f.sites[i].url,
                                               "api_key_file", f.sites[i].key_file[0] ? f.sites[i].key_file : NULL));
        rc = cli_print_json(json_pack("{s:o}", "sites", a), true);
    } else if (f.n == 0) {
        fprintf(stderr, "no sites in %s ('plumb fleet add NAME URL' adds one)\n", path);
    } else {
        printf("%-20s %-44s %s\n", "NAME", "URL", "KEY FILE");
        for (int i = 0; i < f.n; i++)
            printf("%-20s %-44s %s\n", cli_esc(f.sites[i].name), cli_esc(f.sites[i].url),
                   f.sites[i].key_file[0] ? cli_esc(f.sites[i].key_file) : "-");
    }
    fleet_free(&f);
    return rc;
}

/* ---- status, check ---- */

static const char *str_of(json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

/* A number or "-" when unknown, into buf. */
static const char *num_of(json_t *o, const char *key, const char *fmt, char *buf, size_t size)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    else if (json_is_number(v))
        snprintf(buf, size, fmt, json_number_value(v));
    else
        snprintf(buf, size, "-");
    return buf;
}

/* "sha256:1f62a9010268" (12 digits, as plumb ls) or "-". */
static const char *short_digest(const char *d, char *buf, size_t size)
{
    if (!d)
        return "-";
    snprintf(buf, size, "%.19s", d);
    return buf;
}

/* Every site, or an error printed: NULL. */
static json_t *poll_all(double timeout_s, bool full, int *n_down)
{
    struct fleet f;
    char path[FLEET_PATH_MAX];
    if (load(&f, path, sizeof path))
        return NULL;
    if (f.n == 0)
        fprintf(stderr, "no sites in %s ('plumb fleet add NAME URL' adds one)\n", path);
    pb_err err = {0};
    json_t *sites = fleet_poll(&f, timeout_s, full, &err);
    fleet_free(&f);
    if (!sites) {
        cli_error("fleet", "%s", err.msg);
        return NULL;
    }
    *n_down = 0;
    json_t *s;
    size_t i;
    json_array_foreach(sites, i, s)
        *n_down += !json_is_true(json_object_get(s, "reachable"));
    return sites;
}

static void print_status(json_t *sites)
{
    printf("%-16s %-11s %-8s %5s %5s %8s %8s %9s %10s  %s\n", "SITE", "STATE", "VERSION", "RUN", "WAIT", "T/S 1M",
           "T/S 5M", "REQ TODAY", "TOK TODAY", "DOCTOR");
    json_t *s;
    size_t i;
    json_array_foreach(sites, i, s) {
        const char *name = cli_esc(str_of(s, "name", "?"));
        if (!json_is_true(json_object_get(s, "reachable"))) {
            printf("%-16s %-11s %s\n", name, "unreachable", cli_esc(str_of(s, "error", "")));
            continue;
        }
        json_t *load = json_object_get(s, "load"), *today = json_object_get(s, "usage_today"),
               *doc = json_object_get(s, "doctor");
        char run[24], wait[24], r1[24], r5[24], req[24], tok[24], verdict[64];
        if (json_is_object(doc)) {
            const json_int_t ne = json_integer_value(json_object_get(doc, "errors")),
                             nw = json_integer_value(json_object_get(doc, "warnings"));
            snprintf(verdict, sizeof verdict, "%s", str_of(doc, "status", "?"));
            if (ne || nw)
                snprintf(verdict + strlen(verdict), sizeof verdict - strlen(verdict), " (%lld error%s, %lld warning%s)",
                         (long long)ne, ne == 1 ? "" : "s", (long long)nw, nw == 1 ? "" : "s");
        } else {
            snprintf(verdict, sizeof verdict, "-");
        }
        printf("%-16s %-11s %-8s %5s %5s %8s %8s %9s %10s  %s\n", name,
               json_is_false(json_object_get(s, "ready")) ? "draining" : "ok", cli_esc(str_of(s, "version", "-")),
               num_of(load, "running", "%g", run, sizeof run), num_of(load, "waiting", "%g", wait, sizeof wait),
               num_of(load, "tokens_per_s_1m", "%.1f", r1, sizeof r1), num_of(load, "tokens_per_s_5m", "%.1f", r5, sizeof r5),
               num_of(today, "requests", "%g", req, sizeof req), num_of(today, "total_tokens", "%g", tok, sizeof tok),
               verdict);
    }
    /* the models of those that answered, and what could not be read */
    bool header = false;
    json_array_foreach(sites, i, s) {
        json_t *m;
        size_t k;
        json_array_foreach(json_object_get(s, "models"), k, m) {
            if (!header) {
                printf("\n%-16s %-24s %-32s %s\n", "SITE", "MODEL", "SOURCE", "DIGEST");
                header = true;
            }
            char d[32];
            printf("%-16s %-24s %-32s %s\n", cli_esc(str_of(s, "name", "?")), cli_esc(str_of(m, "id", "?")),
                   cli_esc(str_of(m, "source", "-")), short_digest(json_string_value(json_object_get(m, "digest")), d,
                                                                   sizeof d));
        }
    }
    json_array_foreach(sites, i, s) {
        json_t *p;
        size_t k;
        json_array_foreach(json_object_get(s, "problems"), k, p)
            fprintf(stderr, "plumb fleet: %s: %s\n", cli_esc(str_of(s, "name", "?")), cli_esc(json_string_value(p)));
    }
}

static void print_check(json_t *c)
{
    printf("%-16s %-24s %-32s %s\n", "SITE", "MODEL", "SOURCE", "DIGEST");
    json_t *s;
    size_t i;
    json_array_foreach(json_object_get(c, "sites"), i, s) {
        const char *name = cli_esc(str_of(s, "name", "?"));
        if (!json_is_true(json_object_get(s, "reachable"))) {
            printf("%-16s unreachable: %s\n", name, cli_esc(str_of(s, "error", "")));
            continue;
        }
        json_t *served = json_object_get(s, "served"), *m;
        if (json_array_size(served) == 0)
            printf("%-16s %-24s %-32s %s\n", name, "-", "(not served)", "-");
        size_t k;
        json_array_foreach(served, k, m) {
            char d[32];
            printf("%-16s %-24s %-32s %s\n", name, cli_esc(str_of(m, "id", "?")), cli_esc(str_of(m, "source", "-")),
                   short_digest(json_string_value(json_object_get(m, "digest")), d, sizeof d));
        }
    }
    json_t *digests = json_object_get(c, "digests"), *d;
    printf("\n%s: ", cli_esc(str_of(c, "model", "?")));
    if (json_array_size(digests) == 0)
        printf("served nowhere");
    json_array_foreach(digests, i, d) {
        char buf[32];
        json_t *names = json_object_get(d, "sites"), *n;
        size_t k;
        printf("%s%s on", i ? "; " : "", short_digest(json_string_value(json_object_get(d, "digest")), buf, sizeof buf));
        json_array_foreach(names, k, n)
            printf("%s %s", k ? "," : "", cli_esc(json_string_value(n)));
    }
    static const char *const lists[2][2] = {{"not_served", "not served on"}, {"unreachable", "no answer from"}};
    for (int l = 0; l < 2; l++) {
        json_t *names = json_object_get(c, lists[l][0]), *n;
        size_t k;
        if (json_array_size(names) == 0)
            continue;
        printf("; %s", lists[l][1]);
        json_array_foreach(names, k, n)
            printf("%s %s", k ? "," : "", cli_esc(json_string_value(n)));
    }
    printf("\n");
}

int cmd_fleet(int argc, char **argv)
{
    enum { OPT_KEY_FILE = 1000, OPT_TIMEOUT, OPT_JSON };
    static const struct option longopts[] = {
        {"api-key-file", required_argument, 0, OPT_KEY_FILE},
        {"timeout", required_argument, 0, OPT_TIMEOUT},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    /* the action first; options before one (--help) are parsed alone */
    static const char *const verbs[] = {"add", "rm", "ls", "status", "check"};
    const char *verb = argc >= 2 && argv[1][0] != '-' ? argv[1] : NULL;
    const int off = verb ? 1 : 0;
    if (verb) {
        size_t v = 0;
        while (v < sizeof verbs / sizeof verbs[0] && strcmp(verb, verbs[v]))
            v++;
        if (v == sizeof verbs / sizeof verbs[0])
            return cli_usage_error("fleet", "unknown action '%s' (add, rm, ls, status, check)", verb);
    }
    const char *key_file = NULL;
    double timeout_s = FLEET_DEFAULT_TIMEOUT_S;
    bool json = false, timeout_given = false;
    int c;
    struct cli_parser par = {.cmd = "fleet", .shortopts = "h", .longopts = longopts, .files = "api-key-file"};
    while ((c = cli_getopt(argc - off, argv + off, &par)) != -1) {
        switch (c) {
        case OPT_KEY_FILE: key_file = optarg; break;
        case OPT_TIMEOUT:
            if (!cli_parse_float("fleet", "--timeout", optarg, 0.1, 600, &timeout_s))
                return CLI_USAGE;
            timeout_given = true;
            break;
        case OPT_JSON: json = true; break;
        case 'h': help_all(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (!verb)
        return cli_usage_error("fleet", "no action given (add, rm, ls, status, check)");
    char **args = argv + off + optind;
    const int n_args = argc - off - optind;
    const bool add = !strcmp(verb, "add"), rm = !strcmp(verb, "rm"), check = !strcmp(verb, "check"),
               status = !strcmp(verb, "status");
    const int want = add ? 2 : rm || check ? 1 : 0;
    if (n_args < want)
        return cli_usage_error("fleet", "%s needs %s", verb,
                               add ? "NAME URL" : check ? "a model, NAME[:TAG]" : "the site's NAME");
    if (n_args > want)
        return cli_usage_error("fleet", "unexpected argument '%s'", args[want]);
    if (key_file && !add)
        return cli_usage_error("fleet", "--api-key-file belongs to 'fleet add'");
    if (json && (add || rm))
        return cli_usage_error("fleet", "--json: %s prints no result to format", verb);
    if (timeout_given && !status && !check)
        return cli_usage_error("fleet", "--timeout belongs to 'fleet status' and 'fleet check'");
    pb_err err = {0};
    if (add && fleet_site_valid(args[0], args[1], &err))
        return cli_usage_error("fleet", "%s", err.msg);
    if (add)
        return fleet_add_cmd(args[0], args[1], key_file);
    if (rm)
        return fleet_rm_cmd(args[0]);
    if (!status && !check)
        return fleet_ls_cmd(json);

    struct store_ref ref; /* check's model first: a typo is bad usage, before any site is asked */
    if (check && store_ref_parse(args[0], &ref, &err))
        return cli_usage_error("fleet", "%s", err.msg);
    int n_down = 0;
    json_t *sites = poll_all(timeout_s, status, &n_down);
    if (!sites)
        return CLI_FAIL;
    const int rc = n_down ? CLI_FAIL : CLI_OK;
    if (status) {
        if (json)
            cli_print_json(sites, true);
        else if (json_array_size(sites)) {
            print_status(sites);
            json_decref(sites);
        } else {
            json_decref(sites);
        }
    } else {
        json_t *c2 = fleet_check(sites, args[0], &err);
        json_decref(sites);
        if (!c2)
            return cli_error("fleet", "%s", err.msg);
        if (json)
            cli_print_json(c2, true);
        else {
            print_check(c2);
            json_decref(c2);
        }
    }
    if (n_down) /* after the report; with --json, the one JSON error line */
        cli_error("fleet", "%d site%s did not answer", n_down, n_down == 1 ? "" : "s");
    return rc;
}
