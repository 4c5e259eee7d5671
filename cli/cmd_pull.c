/* plumb pull: fetch (http/https, or a catalog model's file from a
 * registry) or import (a file, a directory of files) models into the
 * store, verified and registered. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/config.h"
#include "plumb/plan.h"
#include "plumb/store.h"

#include <ctype.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define DEFAULT_REGISTRY "https://huggingface.co"
#define TOKEN_MAX 4096

static void help(void)
{
    printf("Usage: plumb pull SOURCE [OPTIONS]\n"
           "\n"
           "Fetches or imports a GGUF model into the store ($PLUMB_HOME, default\n"
           "~/.local/share/plumb), where it is named by its SHA-256, and points a name at\n"
           "it. SOURCE is:\n"
           "  NAME[:QUANT]                a catalog model (plumb search WORD finds them; any\n"
           "                              case), its file of quantization QUANT (default\n"
           "                              Q4_K_M) fetched from the registry as\n"
           "                              {registry}/{repo}/resolve/{revision}/{file}, checked\n"
           "                              against the catalog's SHA-256 where it pins one, and\n"
           "                              named NAME:quant (qwen2.5-7b:q4_k_m) unless --name\n"
           "  an http:// or https:// URL  downloaded with redirects followed; an interrupted\n"
           "                              transfer resumes where it stopped (Range), with\n"
           "                              retries and growing pauses, when the server names\n"
           "                              the file's version (ETag, Last-Modified): only the\n"
           "                              same version is resumed (If-Range), else it starts over\n"
           "  a GGUF file                 copied (cloned where the file system can: instant,\n"
           "                              and an edit of either file stays in it); --link\n"
           "                              hard-links it instead\n"
           "  a directory                 every *.gguf in it (a removable disk at an\n"
           "                              air-gapped site); a SHA256SUMS file beside them\n"
           "                              (sha256sum's format) is checked against each\n"
           "\n"
           "The file is written under a temporary name, hashed as it is written, checked\n"
           "against --sha256, checked to be a valid GGUF, and only then moved into place and\n"
           "registered in one transaction: an interrupted, corrupt or mismatched pull leaves\n"
           "the store as it was. Pulling to a name that exists moves it to the new file and\n"
           "keeps the old one for 'plumb rollback'.\n"
           "\n"
           "Options:\n"
           "      --name NAME[:TAG]  the name (default: the file name without .gguf; the\n"
           "                         tag defaults to 'latest')\n"
           "      --sha256 HEX       the digest the file must have\n"
           "      --if-absent        with --sha256 (or a catalog name whose digest the catalog\n"
           "                         pins), for a download: when the store holds that file\n"
           "                         intact, just point the name at it (no download)\n"
           "      --link             hard-link a local file on the store's file system instead\n"
           "                         of copying it: no space is used, but the store shares the\n"
           "                         file, and if the original is edited, run and serve refuse\n"
           "                         the model until it is pulled again\n"
           "      --copy             copy (the default; kept for scripts)\n"
           "      --retries N        downloads: attempts after the first (default 7)\n"
           "      --retry-delay S    downloads: first pause in seconds, doubling up to 30\n"
           "                         (default 1)\n"
           "      --registry URL     catalog names: the registry's base URL, Hugging Face's\n"
           "                         layout (default: $PLUMB_REGISTRY, else [store] registry\n"
           "                         of --config, else " DEFAULT_REGISTRY "): a company\n"
           "                         mirror (Artifactory, Nexus, a web server's folder)\n"
           "      --token-file FILE  a bearer token for the registry (default:\n"
           "                         $PLUMB_REGISTRY_TOKEN_FILE, else [store]\n"
           "                         registry_token_file); sent to the registry's host only,\n"
           "                         never after a redirect to another host (a CDN). With a\n"
           "                         URL, sent to that URL's host\n"
           "      --config FILE      read [store] registry and registry_token_file from it\n"
           "      --json             print the result as JSON\n"
           "  -h, --help             this help\n"
           "\n"
           "Examples:\n"
           "  plumb pull qwen2.5-7b                  (Q4_K_M, named qwen2.5-7b:q4_k_m)\n"
           "  plumb pull Qwen3-8B:Q8_0 --name assistant:1\n"
           "  plumb pull llama-3.2-3b:q4_k_m --registry https://artifactory.corp/api/huggingfaceml/hf \\\n"
           "             --token-file /etc/plumb/registry-token\n"
           "  plumb pull https://example.com/qwen2.5-0.5b-instruct-q4_k_m.gguf --name qwen2.5-0.5b:q4_k_m\n"
           "  plumb pull ./support-bot.gguf --name support-bot:2 --sha256 9f86d0...\n"
           "  plumb pull /media/usb/models\n");
}

static void print_result(const struct store_pull_result *r, json_t *json_out)
{
    if (json_out) {
        json_t *o = cli_store_entry_json(&r->entry);
        json_object_set_new(o, "new_blob", json_boolean(r->new_blob));
        json_object_set_new(o, "changed", json_boolean(r->changed));
        json_object_set_new(o, "linked", json_boolean(r->linked));
        json_object_set_new(o, "reflinked", json_boolean(r->reflinked));
        json_array_append_new(json_out, o);
        return;
    }
    char ref[STORE_NAME_MAX + STORE_TAG_MAX + 2], size[32], params[32];
    store_ref_format(&r->entry.ref, ref, sizeof ref);
    cli_fmt_bytes(r->entry.size, size, sizeof size);
    cli_fmt_count(r->entry.n_params, params, sizeof params);
    printf("%s  sha256:%.12s  %s, %s %s, %s parameters%s\n", ref, r->entry.digest, size,
           r->entry.arch[0] ? cli_esc(r->entry.arch) : "-", r->entry.quant[0] ? cli_esc(r->entry.quant) : "-", params,
           !r->changed ? " (already there)" : !r->new_blob ? " (file already in the store)"
                                                          : r->linked ? " (hard link)"
                                                          : r->reflinked ? " (reflink)" : "");
}

/* A catalog name being pulled: what the messages of a failure say. */
struct by_name {
    char spec[128];          /* "qwen2.5-7b:Q4_K_M" */
    const char *registry;
    bool token;              /* a token was sent */
    bool pinned;             /* the catalog pinned the digest */
};

/* Why a download of a catalog file failed, for the technician. */
static void name_hint(const struct by_name *n, const struct store_pull_result *r, const pb_err *err, char *buf,
                      size_t size)
{
    buf[0] = 0;
    if (r->http_status == 404)
        snprintf(buf, size, " (the registry %s has no such file: a mirror may lack %s, or hold it under another "
                 "revision)", n->registry, n->spec);
    else if ((r->http_status == 401 || r->http_status == 403) && !n->token)
        snprintf(buf, size, " (the registry %s asks for credentials: give a bearer token with --token-file FILE, "
                 "$PLUMB_REGISTRY_TOKEN_FILE or [store] registry_token_file)", n->registry);
    else if (r->http_status == 401 || r->http_status == 403)
        snprintf(buf, size, " (the registry %s refused the token given: check the token file, and that the "
                 "token may read this repository)", n->registry);
    else if (n->pinned && err->code == PB_EFORMAT && strstr(err->msg, "SHA-256 mismatch"))
        snprintf(buf, size, " (the catalog pins the published file's digest: the registry's file is another one)");
}

static int pull_one(struct store *s, const char *source, struct store_pull_opts *o, json_t *json_out,
                    const struct by_name *n)
{
    struct store_pull_result r;
    pb_err err = {0};
    if (store_pull(s, source, o, &r, &err)) {
        if (cli_interrupted)
            return cli_error("pull", "%s: interrupted; the store is unchanged", source);
        char hint[600] = "";
        if (n)
            name_hint(n, &r, &err, hint, sizeof hint);
        return cli_error("pull", "%s%s; the store is unchanged", err.msg, hint);
    }
    print_result(&r, json_out);
    return CLI_OK;
}

/* The token in path: its first line, without surrounding spaces; one
 * word of printable ASCII. */
static int read_token(const char *path, char *buf, size_t size)
{
    char *text = NULL;
    size_t len = 0;
    pb_err err = {0};
    if (pb_read_small(path, TOKEN_MAX, &text, &len, &err))
        return cli_error("pull", "token file: %s", err.msg);
    char *p = text;
    while (*p && isspace((unsigned char)*p))
        p++;
    size_t n = 0;
    while (p[n] && p[n] != '\n' && p[n] != '\r')
        n++;
    while (n > 0 && isspace((unsigned char)p[n - 1]))
        n--;
    bool ok = n > 0 && n < size;
    for (size_t i = 0; i < n && ok; i++)
        ok = p[i] > 0x20 && p[i] < 0x7f;
    if (ok) {
        memcpy(buf, p, n);
        buf[n] = 0;
    }
    memset(text, 0, len);
    free(text);
    if (!ok)
        return cli_error("pull", "token file %s: expected one token (printable characters, no spaces) on its "
                         "first line", path);
    return CLI_OK;
}

/* SOURCE as a catalog name: the URL to fetch, the name and digest to
 * give it, the token to send. */
static int resolve_name(const char *source, const char *registry, const char *token_file, const char *config_path,
                        struct store_pull_opts *o, char *url, size_t url_size, char *name, size_t name_size,
                        char *sha, char *token, struct by_name *n, bool quiet)
{
    static struct config cfg; /* large */
    pb_err err = {0};
    config_defaults(&cfg);
    if (config_path && config_load(config_path, &cfg, &err))
        return cli_error("pull", "%s", err.msg);
    const char *env = getenv("PLUMB_REGISTRY");
    if (!registry)
        registry = env && *env ? env : cfg.registry[0] ? cfg.registry : DEFAULT_REGISTRY;
    env = getenv("PLUMB_REGISTRY_TOKEN_FILE");
    if (!token_file)
        token_file = env && *env ? env : cfg.registry_token_file[0] ? cfg.registry_token_file : NULL;
    struct catalog *cat;
    if (catalog_load(NULL, &cat, &err))
        return cli_error("pull", "%s", err.msg);
    struct cat_gguf_ref ref;
    int rc = catalog_gguf_resolve(cat, source, registry, &ref, &err);
    if (rc) {
        catalog_free(cat);
        if (rc == PB_ENOTFOUND && !strchr(source, ':'))
            return cli_error("pull", "%s is neither a file, a directory, a URL nor a catalog model: %s", source,
                             err.msg);
        return cli_error("pull", "%s", err.msg);
    }
    snprintf(url, url_size, "%s", ref.url);
    if (!o->name) {
        snprintf(name, name_size, "%s", ref.name);
        o->name = name;
    }
    if (!o->sha256 && ref.f->sha256[0]) {
        memcpy(sha, ref.f->sha256, 65);
        o->sha256 = sha;
        n->pinned = true;
    }
    snprintf(n->spec, sizeof n->spec, "%s:%s", ref.m->id, ref.f->quant);
    n->registry = registry;
    catalog_free(cat);
    if (token_file) {
        if ((rc = read_token(token_file, token, TOKEN_MAX)))
            return rc;
        o->bearer_token = token;
        n->token = true;
    }
    if (!quiet)
        fprintf(stderr, "plumb pull: %s is %s\n", n->spec, url);
    return CLI_OK;
}

static int pull_dir(struct store *s, const char *dir, struct store_pull_opts *o, json_t *json_out)
{
    struct store_dir_item *items;
    size_t n;
    bool sums;
    pb_err err = {0};
    if (store_scan_dir(dir, &items, &n, &sums, &err))
        return cli_error("pull", "%s", err.msg);
    if (n == 0) {
        store_dir_free(items, n);
        return cli_error("pull", "%s holds no .gguf files", dir);
    }
    int status = CLI_OK, failed = 0;
    for (size_t i = 0; i < n && !cli_interrupted; i++) {
        if (sums && !items[i].sha256[0]) {
            cli_error("pull", "%s is not listed in %s/SHA256SUMS: not imported", items[i].path, dir);
            status = CLI_FAIL;
            failed++;
            continue;
        }
        o->sha256 = items[i].sha256[0] ? items[i].sha256 : NULL;
        if (pull_one(s, items[i].path, o, json_out, NULL) != CLI_OK) {
            status = CLI_FAIL;
            failed++;
        }
    }
    if (!json_out)
        fprintf(stderr, "%zu of %zu models imported from %s%s\n", n - (size_t)failed, n, dir,
                sums ? " (checked against SHA256SUMS)" : "");
    store_dir_free(items, n);
    return status;
}

enum { OPT_NAME = 256, OPT_SHA, OPT_COPY, OPT_LINK, OPT_RETRIES, OPT_DELAY, OPT_JSON, OPT_IF_ABSENT, OPT_REGISTRY,
       OPT_TOKEN_FILE, OPT_CONFIG };

int cmd_pull(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, 0, OPT_NAME},       {"sha256", required_argument, 0, OPT_SHA},
        {"copy", no_argument, 0, OPT_COPY},             {"link", no_argument, 0, OPT_LINK},
        {"retries", required_argument, 0, OPT_RETRIES},
        {"retry-delay", required_argument, 0, OPT_DELAY}, {"json", no_argument, 0, OPT_JSON},
        {"if-absent", no_argument, 0, OPT_IF_ABSENT},   {"registry", required_argument, 0, OPT_REGISTRY},
        {"token-file", required_argument, 0, OPT_TOKEN_FILE}, {"config", required_argument, 0, OPT_CONFIG},
        {"help", no_argument, 0, 'h'},                  {0, 0, 0, 0},
    };
    const char *registry = NULL, *token_file = NULL, *config_path = NULL;
    struct store_pull_opts o = {.max_attempts = 8, .cancel = &cli_interrupted};
    bool json = false;
    long long v;
    double d;
    int c;
    struct cli_parser par = {.cmd = "pull", .shortopts = "h", .longopts = opts, .files = "token-file,config"};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_NAME: o.name = optarg; break;
        case OPT_SHA: o.sha256 = optarg; break;
        case OPT_COPY: o.link = false; break;
        case OPT_LINK: o.link = true; break;
        case OPT_RETRIES:
            if (!cli_parse_int("pull", "--retries", optarg, 0, 100, &v))
                return CLI_USAGE;
            o.max_attempts = (int)v + 1;
            break;
        case OPT_DELAY:
            if (!cli_parse_float("pull", "--retry-delay", optarg, 0.001, 30, &d))
                return CLI_USAGE;
            o.retry_delay_ms = (int)(d * 1000 + 0.5);
            break;
        case OPT_JSON: json = true; break;
        case OPT_IF_ABSENT: o.if_absent = true; break;
        case OPT_REGISTRY: registry = optarg; break;
        case OPT_TOKEN_FILE: token_file = optarg; break;
        case OPT_CONFIG: config_path = optarg; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("pull", argc == optind ? "no source given" : "expected one source");
    const char *source = argv[optind];
    if (cli_refuse_dash("pull", "SOURCE", source))
        return CLI_USAGE;
    pb_err err = {0};
    struct store_ref ref;
    if (o.name && store_ref_parse(o.name, &ref, &err))
        return cli_usage_error("pull", "--name: %s", err.msg);
    char digest[65];
    if (o.sha256 && store_digest_parse(o.sha256, digest, &err))
        return cli_usage_error("pull", "--sha256: %s", err.msg);
    struct stat st;
    bool exists = stat(source, &st) == 0, dir = exists && S_ISDIR(st.st_mode), url = strstr(source, "://");
    bool by_name = !exists && !url;
    size_t len = strlen(source);
    if (by_name && (strchr(source, '/') || (len > 5 && !strcasecmp(source + len - 5, ".gguf"))))
        return cli_error("pull", "%s: no such file or directory (SOURCE is a GGUF file, a directory of them, an "
                         "http(s):// URL or a catalog model NAME[:QUANT])", source);
    if (dir && (o.name || o.sha256))
        return cli_usage_error("pull", "a directory's models take their names from their files and their digests "
                                       "from its SHA256SUMS: --name and --sha256 are for one file");
    if (!by_name && (registry || config_path))
        return cli_usage_error("pull", "--registry and --config are for catalog names (NAME[:QUANT]); %s is a %s",
                               source, url ? "URL" : dir ? "directory" : "file");
    if (exists && token_file)
        return cli_usage_error("pull", "--token-file is for downloads; %s is a local %s", source,
                               dir ? "directory" : "file");
    static char fetch[1024], name[128], sha[65], token[TOKEN_MAX];
    struct by_name n = {0};
    if (by_name) {
        int rc = resolve_name(source, registry, token_file, config_path, &o, fetch, sizeof fetch, name, sizeof name,
                              sha, token, &n, json);
        if (rc)
            return rc;
        source = fetch;
    } else if (token_file) {
        int rc = read_token(token_file, token, sizeof token);
        if (rc)
            return rc;
        o.bearer_token = token;
    }
    if (o.if_absent && !o.sha256)
        return cli_usage_error("pull", "--if-absent needs --sha256 (the file it looks for)%s",
                               by_name ? ": the catalog pins no digest for this file" : "");
    if (!json)
        o.progress = cli_progress_cb;
    cli_trap_interrupts(true);
    struct store *s;
    int status;
    if (store_open(NULL, &s, &err)) {
        status = cli_error("pull", "%s", err.msg);
    } else {
        json_t *out = json ? json_array() : NULL;
        status = dir ? pull_dir(s, source, &o, out) : pull_one(s, source, &o, out, by_name ? &n : NULL);
        store_close(s);
        if (out) {
            int js = dir ? cli_print_json(json_pack("{s:o}", "models", out), true)
                         : json_array_size(out) ? cli_print_json(json_incref(json_array_get(out, 0)), true) : CLI_OK;
            if (!dir)
                json_decref(out);
            if (js != CLI_OK)
                status = js;
        }
    }
    cli_trap_interrupts(false);
    memset(token, 0, sizeof token);
    return status;
}
