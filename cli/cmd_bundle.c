/* plumb export / import: models into and out of the store as one tar
 * bundle, for sites without a network. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/store.h"

#include <getopt.h>
#include <string.h>
#include <unistd.h>

#define REF_LEN (STORE_NAME_MAX + STORE_TAG_MAX + 2)

static json_t *result_json(const struct store_bundle_result *r, const char *file, bool imported)
{
    json_t *models = json_array();
    for (size_t i = 0; i < r->n_models; i++) {
        const struct store_bundle_model *m = &r->models[i];
        char ref[REF_LEN], d[72];
        store_ref_format(&m->ref, ref, sizeof ref);
        snprintf(d, sizeof d, "sha256:%s", m->digest);
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I}", "name", ref, "model", m->ref.name, "tag", m->ref.tag, "digest",
                              d, "size", (json_int_t)m->size);
        if (imported) {
            json_object_set_new(o, "new_blob", json_boolean(m->new_blob));
            json_object_set_new(o, "changed", json_boolean(m->changed));
        }
        json_array_append_new(models, o);
    }
    json_t *o = json_pack("{s:s,s:o,s:I,s:I}", "bundle", file, "models", models, "blobs", (json_int_t)r->n_blobs,
                          "blob_bytes", (json_int_t)r->blob_bytes);
    if (r->plumb_version[0])
        json_object_set_new(o, "plumb_version", json_string(r->plumb_version));
    if (r->created[0])
        json_object_set_new(o, "created", json_string(r->created));
    return o;
}

/* ---- export ---- */

static void export_help(void)
{
    printf("Usage: plumb export NAME[:TAG]... -o FILE.tar [--json]\n"
           "\n"
           "Writes the named models of the store into one tar bundle, to carry to a site\n"
           "without a network (plumb import FILE.tar there). The bundle holds each model\n"
           "file once, named by its SHA-256, and a manifest.json with the names, tags,\n"
           "sizes and digests and the plumb version that wrote it. Every file is re-hashed\n"
           "as it is written: a damaged store is not exported. FILE is written under a\n"
           "temporary name and renamed when complete; it must be a new path or a regular\n"
           "file (a device or a FIFO is refused). '-o -' streams the tar to standard output\n"
           "(the summary then goes to standard error).\n"
           "\n"
           "Options:\n"
           "  -o, --output FILE  the bundle to write (replaced if it exists; '-': standard output)\n"
           "      --json         print what was written as JSON\n"
           "  -h, --help         this help\n"
           "\n"
           "Example:\n"
           "  plumb export qwen2.5-7b:q4_k_m support-bot:2 -o /media/usb/models.tar\n");
}

int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *out = NULL;
    bool json = false;
    int c;
    struct cli_parser par = {.cmd = "export", .shortopts = "ho:", .longopts = opts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'j': json = true; break;
        case 'h': export_help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (optind == argc)
        return cli_usage_error("export", "no model named");
    if (!out || !*out)
        return cli_usage_error("export", "no bundle given (-o FILE.tar)");
    const bool to_stdout = !strcmp(out, "-");
    if (to_stdout && json)
        return cli_usage_error("export", "-o - writes the bundle to standard output: --json cannot go there too");
    if (to_stdout && isatty(STDOUT_FILENO))
        return cli_usage_error("export", "-o - would write a tar to the terminal: redirect standard output");
    pb_err err = {0};
    for (int i = optind; i < argc; i++) {
        struct store_ref r;
        if (store_ref_parse(argv[i], &r, &err))
            return cli_usage_error("export", "%s", err.msg);
    }
    struct store *s;
    if (store_open(NULL, &s, &err))
        return cli_error("export", "%s", err.msg);
    struct store_bundle_opts o = {.plumb_version = PLUMB_VERSION, .cancel = &cli_interrupted};
    if (!json)
        o.progress = cli_progress_cb;
    struct store_bundle_result r;
    cli_trap_interrupts(true);
    int rc = store_export(s, (const char *const *)argv + optind, (size_t)(argc - optind), out, &o, &r, &err);
    cli_trap_interrupts(false);
    store_close(s);
    if (rc)
        return cli_error("export", "%s; %s not written", cli_interrupted ? "interrupted" : err.msg,
                         to_stdout ? "the bundle was" : out);
    int status = CLI_OK;
    if (json) {
        status = cli_print_json(result_json(&r, out, false), true);
    } else {
        FILE *say = to_stdout ? stderr : stdout; /* stdout holds the tar */
        char size[32];
        cli_fmt_bytes(r.blob_bytes, size, sizeof size);
        for (size_t i = 0; i < r.n_models; i++) {
            char ref[REF_LEN];
            store_ref_format(&r.models[i].ref, ref, sizeof ref);
            fprintf(say, "%s  sha256:%.12s\n", ref, r.models[i].digest);
        }
        fprintf(say, "wrote %s: %zu model%s, %zu file%s, %s\n", to_stdout ? "standard output" : out, r.n_models,
                r.n_models == 1 ? "" : "s", r.n_blobs, r.n_blobs == 1 ? "" : "s", size);
    }
    store_bundle_result_free(&r);
    return status;
}

/* ---- import ---- */

static void import_help(void)
{
    printf("Usage: plumb import FILE.tar [--check] [--json]\n"
           "\n"
           "Adds the models of a bundle written by plumb export to the store. Every file\n"
           "is hashed and checked against the manifest's SHA-256 and size, and checked to\n"
           "be a valid GGUF, before anything enters the store; then all files and names are\n"
           "registered in one transaction. A truncated or tampered bundle is refused and\n"
           "the store is left as it was. A name that exists moves to the bundle's file and\n"
           "keeps its previous one for 'plumb rollback'. FILE may be '-' (standard input)\n"
           "and may be compressed (gzip, xz, zstd).\n"
           "\n"
           "Options:\n"
           "      --check     verify the bundle only; the store is not changed\n"
           "      --json      print what was imported as JSON\n"
           "  -h, --help      this help\n"
           "\n"
           "Example:\n"
           "  plumb import /media/usb/models.tar\n");
}

int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        {"check", no_argument, 0, 'c'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct store_bundle_opts o = {.cancel = &cli_interrupted};
    bool json = false;
    int c;
    struct cli_parser par = {.cmd = "import", .shortopts = "h", .longopts = opts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case 'c': o.check_only = true; break;
        case 'j': json = true; break;
        case 'h': import_help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("import", argc == optind ? "no bundle given" : "expected one bundle");
    const char *file = argv[optind];
    pb_err err = {0};
    struct store *s;
    if (store_open(NULL, &s, &err))
        return cli_error("import", "%s", err.msg);
    if (!json)
        o.progress = cli_progress_cb;
    struct store_bundle_result r;
    cli_trap_interrupts(true);
    int rc = store_import(s, file, &o, &r, &err);
    cli_trap_interrupts(false);
    store_close(s);
    if (rc)
        return cli_error("import", "%s: %s; the store is unchanged", file, cli_interrupted ? "interrupted" : err.msg);
    int status = CLI_OK;
    if (json) {
        status = cli_print_json(result_json(&r, file, !o.check_only), true);
    } else {
        char size[32];
        cli_fmt_bytes(r.blob_bytes, size, sizeof size);
        for (size_t i = 0; i < r.n_models; i++) {
            const struct store_bundle_model *m = &r.models[i];
            char ref[REF_LEN];
            store_ref_format(&m->ref, ref, sizeof ref);
            printf("%s  sha256:%.12s%s\n", ref, m->digest,
                   o.check_only ? "  verified"
                   : !m->changed ? "  (already there)"
                   : !m->new_blob ? "  (file already in the store)" : "");
        }
        printf("%s %s: %zu model%s, %zu file%s, %s (written %s by plumb %s)\n",
               o.check_only ? "verified" : "imported", cli_esc(file), r.n_models, r.n_models == 1 ? "" : "s",
               r.n_blobs, r.n_blobs == 1 ? "" : "s", size, r.created[0] ? cli_esc(r.created) : "?",
               r.plumb_version[0] ? cli_esc(r.plumb_version) : "?");
    }
    store_bundle_result_free(&r);
    return status;
}
