/* plumb pull: fetch (http/https) or import (a file, a directory of files)
 * models into the store, verified and registered. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/store.h"

#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

static void help(void)
{
    printf("Usage: plumb pull SOURCE [OPTIONS]\n"
           "\n"
           "Fetches or imports a GGUF model into the store ($PLUMB_HOME, default\n"
           "~/.local/share/plumb), where it is named by its SHA-256, and points a name at\n"
           "it. SOURCE is:\n"
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
           "      --if-absent        with --sha256, for a URL: when the store holds that file\n"
           "                         intact, just point the name at it (no download)\n"
           "      --link             hard-link a local file on the store's file system instead\n"
           "                         of copying it: no space is used, but the store shares the\n"
           "                         file, and if the original is edited, run and serve refuse\n"
           "                         the model until it is pulled again\n"
           "      --copy             copy (the default; kept for scripts)\n"
           "      --retries N        downloads: attempts after the first (default 7)\n"
           "      --retry-delay S    downloads: first pause in seconds, doubling up to 30\n"
           "                         (default 1)\n"
           "      --json             print the result as JSON\n"
           "  -h, --help             this help\n"
           "\n"
           "Examples:\n"
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

static int pull_one(struct store *s, const char *source, struct store_pull_opts *o, json_t *json_out)
{
    struct store_pull_result r;
    pb_err err = {0};
    if (store_pull(s, source, o, &r, &err)) {
        if (cli_interrupted)
            return cli_error("pull", "%s: interrupted; the store is unchanged", source);
        return cli_error("pull", "%s; the store is unchanged", err.msg);
    }
    print_result(&r, json_out);
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
        if (pull_one(s, items[i].path, o, json_out) != CLI_OK) {
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

enum { OPT_NAME = 256, OPT_SHA, OPT_COPY, OPT_LINK, OPT_RETRIES, OPT_DELAY, OPT_JSON, OPT_IF_ABSENT };

int cmd_pull(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, 0, OPT_NAME},       {"sha256", required_argument, 0, OPT_SHA},
        {"copy", no_argument, 0, OPT_COPY},             {"link", no_argument, 0, OPT_LINK},
        {"retries", required_argument, 0, OPT_RETRIES},
        {"retry-delay", required_argument, 0, OPT_DELAY}, {"json", no_argument, 0, OPT_JSON},
        {"if-absent", no_argument, 0, OPT_IF_ABSENT},
        {"help", no_argument, 0, 'h'},                  {0, 0, 0, 0},
    };
    struct store_pull_opts o = {.max_attempts = 8, .cancel = &cli_interrupted};
    bool json = false;
    long long v;
    double d;
    int c;
    struct cli_parser par = {.cmd = "pull", .shortopts = "h", .longopts = opts};
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
    if (o.if_absent && !o.sha256)
        return cli_usage_error("pull", "--if-absent needs --sha256 (the file it looks for)");
    struct stat st;
    bool exists = stat(source, &st) == 0, dir = exists && S_ISDIR(st.st_mode);
    if (!exists && !strstr(source, "://"))
        return cli_error("pull", "%s is neither a file, a directory nor a URL: SOURCE is a GGUF file, a directory of "
                         "them or an http(s):// URL (names of a catalog are not pulled yet)", source);
    if (dir && (o.name || o.sha256))
        return cli_usage_error("pull", "a directory's models take their names from their files and their digests "
                                       "from its SHA256SUMS: --name and --sha256 are for one file");
    if (!json)
        o.progress = cli_progress_cb;
    cli_trap_interrupts(true);
    struct store *s;
    int status;
    if (store_open(NULL, &s, &err)) {
        status = cli_error("pull", "%s", err.msg);
    } else {
        json_t *out = json ? json_array() : NULL;
        status = dir ? pull_dir(s, source, &o, out) : pull_one(s, source, &o, out);
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
    return status;
}
