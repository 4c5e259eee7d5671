/* plumb ls, rm, verify, tag, rollback: the model store's names. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/store.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define REF_LEN (STORE_NAME_MAX + STORE_TAG_MAX + 2)

/* The options every store command shares: --json and --help. Returns -1
 * to go on (optind at the first operand), else the exit status. */
static int parse_common(const char *cmd, int argc, char **argv, void (*help)(void), bool *json)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    *json = false;
    struct cli_parser par = {.cmd = cmd, .shortopts = "h", .longopts = opts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case 'j': *json = true; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    return -1;
}

/* The store for a command that changes it; with readonly, for one that
 * only reads it (which works on a full disk). For rm (may_free), a disk
 * too full to write the registry opens it read-only: store_rm then frees
 * the model's files first. */
static int open_store(const char *cmd, struct store **s, bool readonly, bool may_free)
{
    pb_err err = {0};
    int rc = readonly ? store_open_readonly(NULL, s, &err) : store_open(NULL, s, &err);
    if (rc == PB_ENOSPC && may_free && store_open_readonly(NULL, s, NULL) == PB_OK)
        return CLI_OK;
    if (rc)
        return cli_error(cmd, "%s", err.msg);
    return CLI_OK;
}

/* ---- ls ---- */

static void ls_help(void)
{
    printf("Usage: plumb ls [--json]\n"
           "\n"
           "Lists the models in the store: name:tag, the first digits of the file's\n"
           "SHA-256, size, architecture, quantization, parameters, when the name took its\n"
           "current file. A model appears only once its pull is complete.\n"
           "\n"
           "Options:\n"
           "      --json       print {\"models\":[...]} (full digests, times in UTC)\n"
           "  -h, --help       this help\n"
           "\n"
           "Example:\n"
           "  plumb ls\n");
}

int cmd_ls(int argc, char **argv)
{
    bool json;
    int rc = parse_common("ls", argc, argv, ls_help, &json);
    if (rc >= 0)
        return rc;
    if (optind < argc)
        return cli_usage_error("ls", "unexpected argument '%s'", argv[optind]);
    struct store *s;
    if ((rc = open_store("ls", &s, true, false)))
        return rc;
    struct store_entry *v;
    size_t n;
    pb_err err = {0};
    if (store_list(s, &v, &n, &err)) {
        store_close(s);
        return cli_error("ls", "%s", err.msg);
    }
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, cli_store_entry_json(&v[i]));
        rc = cli_print_json(json_pack("{s:o}", "models", a), true);
    } else if (n == 0) {
        fprintf(stderr, "no models in the store at %s ('plumb pull' adds one)\n", store_home(s));
    } else {
        printf("%-40s %-19s %10s  %-8s %-8s %9s  %s\n", "NAME", "DIGEST", "SIZE", "ARCH", "QUANT", "PARAMS",
               "MODIFIED");
        for (size_t i = 0; i < n; i++) {
            char ref[REF_LEN], size[32], params[32], when[32];
            store_ref_format(&v[i].ref, ref, sizeof ref);
            cli_fmt_bytes(v[i].size, size, sizeof size);
            cli_fmt_count(v[i].n_params, params, sizeof params);
            cli_fmt_time(v[i].modified, when, sizeof when);
            printf("%-40s sha256:%.12s %10s  %-8s %-8s %9s  %s\n", ref, v[i].digest, size,
                   v[i].arch[0] ? cli_esc(v[i].arch) : "-", v[i].quant[0] ? cli_esc(v[i].quant) : "-", params, when);
        }
    }
    free(v);
    store_close(s);
    return rc;
}

/* ---- rm ---- */

static void rm_help(void)
{
    printf("Usage: plumb rm NAME[:TAG]... [--json]\n"
           "\n"
           "Removes names and their history from the store (the tag defaults to\n"
           "'latest'). A file goes when no name, nor any name's history, uses it.\n"
           "\n"
           "Options:\n"
           "      --json       print what was removed as JSON\n"
           "  -h, --help       this help\n"
           "\n"
           "Example:\n"
           "  plumb rm support-bot:1\n");
}

int cmd_rm(int argc, char **argv)
{
    bool json;
    int rc = parse_common("rm", argc, argv, rm_help, &json);
    if (rc >= 0)
        return rc;
    if (optind == argc)
        return cli_usage_error("rm", "no model name given");
    pb_err err = {0};
    struct store_ref ref;
    for (int i = optind; i < argc; i++)
        if (store_ref_parse(argv[i], &ref, &err))
            return cli_usage_error("rm", "%s", err.msg);
    struct store *s;
    if ((rc = open_store("rm", &s, false, true)))
        return rc;
    json_t *a = json ? json_array() : NULL;
    int status = CLI_OK;
    for (int i = optind; i < argc; i++) {
        struct store_rm_result r;
        if (store_rm(s, argv[i], &r, &err)) {
            status = cli_error("rm", "%s", err.msg);
            continue;
        }
        char name[REF_LEN], freed[32];
        store_ref_parse(argv[i], &ref, NULL);
        store_ref_format(&ref, name, sizeof name);
        cli_fmt_bytes(r.bytes_freed, freed, sizeof freed);
        if (a)
            json_array_append_new(a, json_pack("{s:s,s:o,s:i,s:I}", "name", name, "digest", cli_json_digest(r.digest),
                                               "blobs_removed", r.blobs_removed, "bytes_freed",
                                               (json_int_t)r.bytes_freed));
        else if (r.blobs_removed)
            printf("removed %s (%d file%s, %s freed)\n", name, r.blobs_removed, r.blobs_removed == 1 ? "" : "s",
                   freed);
        else
            printf("removed %s (its file sha256:%.12s stays: other names use it)\n", name, r.digest);
    }
    if (a && cli_print_json(json_pack("{s:o}", "removed", a), true) != CLI_OK)
        status = CLI_FAIL;
    store_close(s);
    return status;
}

/* ---- verify ---- */

static void verify_help(void)
{
    printf("Usage: plumb verify [NAME[:TAG]] [--json]\n"
           "\n"
           "Re-hashes the store's files (streamed) and compares each with its name, its\n"
           "SHA-256. Without NAME, every file, and the registry itself: SQLite's\n"
           "integrity check and the links between names, history and files; files an\n"
           "interrupted pull left behind are removed. Exits 1 when anything is wrong.\n"
           "\n"
           "Options:\n"
           "      --json       print the findings as JSON\n"
           "  -h, --help       this help\n"
           "\n"
           "Example:\n"
           "  plumb verify qwen2.5-7b:q4_k_m\n");
}

static const char *state_name(enum store_blob_state st)
{
    switch (st) {
    case STORE_BLOB_OK: return "ok";
    case STORE_BLOB_MISSING: return "missing";
    case STORE_BLOB_SIZE: return "wrong-size";
    case STORE_BLOB_CORRUPT: return "corrupt";
    }
    return "?";
}

struct verify_out {
    json_t *blobs; /* --json */
};

static void on_blob(void *user, const struct store_blob_check *c)
{
    struct verify_out *vo = user;
    if (vo->blobs) {
        json_t *names = json_array(); /* "a:latest, b:2" as a list */
        for (const char *p = c->names; *p;) {
            size_t k = strcspn(p, ",");
            json_array_append_new(names, json_stringn(p, k));
            p += k;
            p += strspn(p, ", ");
        }
        json_array_append_new(vo->blobs, json_pack("{s:o,s:o,s:s,s:I,s:I}", "digest", cli_json_digest(c->digest), "names", names,
                                                   "state", state_name(c->state), "size", (json_int_t)c->size,
                                                   "actual_size", (json_int_t)c->actual_size));
        return;
    }
    char size[32];
    cli_fmt_bytes(c->size, size, sizeof size);
    printf("%-10s sha256:%.12s %10s  %s\n", state_name(c->state), c->digest, size,
           c->names[0] ? c->names : "(history only)");
    if (c->state == STORE_BLOB_CORRUPT)
        printf("           its SHA-256 is %s: pull it again\n", c->actual);
    else if (c->state == STORE_BLOB_SIZE)
        printf("           %llu bytes on disk, %llu registered: pull it again\n", (unsigned long long)c->actual_size,
               (unsigned long long)c->size);
    else if (c->state == STORE_BLOB_MISSING)
        printf("           the file is gone: pull it again\n");
}

int cmd_verify(int argc, char **argv)
{
    bool json;
    int rc = parse_common("verify", argc, argv, verify_help, &json);
    if (rc >= 0)
        return rc;
    if (argc - optind > 1)
        return cli_usage_error("verify", "expected at most one model name");
    const char *ref = optind < argc ? argv[optind] : NULL;
    pb_err err = {0};
    struct store_ref r;
    if (ref && store_ref_parse(ref, &r, &err))
        return cli_usage_error("verify", "%s", err.msg);
    /* verify writes only to tidy up (leftovers of interrupted pulls, the
     * recorded time of an intact file): on a full disk it checks read-only */
    struct store *s;
    if ((rc = store_open(NULL, &s, &err)) == PB_ENOSPC) {
        if ((rc = open_store("verify", &s, true, false)))
            return rc;
        if (!json)
            fprintf(stderr, "plumb verify: the disk is full: checking without tidying up (%s)\n", err.msg);
    } else if (rc) {
        return cli_error("verify", "%s", err.msg);
    }
    struct verify_out vo = {json ? json_array() : NULL};
    struct store_verify_summary sum;
    rc = store_verify(s, ref, on_blob, json ? NULL : cli_progress_cb, &vo, &sum, &err);
    store_close(s);
    if (rc) {
        json_decref(vo.blobs);
        return cli_error("verify", "%s", err.msg);
    }
    bool ok = sum.n_bad == 0 && sum.registry_ok;
    if (json)
        return cli_print_json(json_pack("{s:b,s:o,s:b,s:s,s:i,s:i}", "ok", ok, "blobs", vo.blobs, "registry_ok",
                                        sum.registry_ok, "registry", sum.registry_msg, "tmp_removed",
                                        sum.tmp_removed, "orphans_removed", sum.orphans_removed),
                              true) == CLI_OK &&
                       ok
                   ? CLI_OK
                   : CLI_FAIL;
    if (!ref)
        printf("registry   %s\n", sum.registry_msg);
    if (sum.tmp_removed || sum.orphans_removed)
        printf("removed    %d stale temporary file%s, %d file%s no name knew (interrupted pulls)\n", sum.tmp_removed,
               sum.tmp_removed == 1 ? "" : "s", sum.orphans_removed, sum.orphans_removed == 1 ? "" : "s");
    printf("%zu file%s checked, %s\n", sum.n_blobs, sum.n_blobs == 1 ? "" : "s",
           ok ? "all good" : sum.n_bad ? "some are damaged" : "the registry is damaged");
    return ok ? CLI_OK : CLI_FAIL;
}

/* ---- tag and rollback ---- */

static void print_moved(const char *verb, const struct store_entry *e, const char *before, bool json)
{
    if (json) {
        json_t *o = cli_store_entry_json(e);
        json_object_set_new(o, "previous_digest", cli_json_digest(before));
        cli_print_json(o, true);
        return;
    }
    char ref[REF_LEN];
    store_ref_format(&e->ref, ref, sizeof ref);
    if (!before[0])
        printf("%s %s -> sha256:%.12s\n", verb, ref, e->digest);
    else if (strcmp(before, e->digest) == 0)
        printf("%s already points at sha256:%.12s\n", ref, e->digest);
    else
        printf("%s %s -> sha256:%.12s (was sha256:%.12s)\n", verb, ref, e->digest, before);
}

static void tag_help(void)
{
    printf("Usage: plumb tag SRC[:TAG] DST[:TAG] [--json]\n"
           "\n"
           "Points DST at the file SRC points at (no copy). When DST exists it moves,\n"
           "and 'plumb rollback DST' brings it back.\n"
           "\n"
           "Options:\n"
           "      --json       print DST's entry as JSON\n"
           "  -h, --help       this help\n"
           "\n"
           "Example:\n"
           "  plumb tag qwen2.5-7b:q4_k_m support-bot:2\n");
}

/* tag and rollback: checks the names, notes where the moved name (the
 * last) pointed, moves it, says so. */
static int move_name(const char *cmd, int argc, char **argv, void (*help)(void), int n_names)
{
    bool json;
    int rc = parse_common(cmd, argc, argv, help, &json);
    if (rc >= 0)
        return rc;
    if (argc - optind != n_names)
        return cli_usage_error(cmd, n_names == 2 ? "expected SRC and DST" : "expected one model name");
    pb_err err = {0};
    struct store_ref r;
    for (int i = optind; i < argc; i++)
        if (store_ref_parse(argv[i], &r, &err))
            return cli_usage_error(cmd, "%s", err.msg);
    struct store *s;
    if ((rc = open_store(cmd, &s, false, false)))
        return rc;
    const char *moved = argv[argc - 1];
    struct store_entry before, after;
    char was[65] = "";
    if (store_lookup(s, moved, &before, NULL) == PB_OK)
        memcpy(was, before.digest, sizeof was);
    rc = n_names == 2 ? store_tag(s, argv[optind], moved, &after, &err) : store_rollback(s, moved, &after, &err);
    store_close(s);
    if (rc)
        return cli_error(cmd, "%s", err.msg);
    print_moved(n_names == 2 ? "tagged" : "rolled back", &after, was, json);
    return CLI_OK;
}

int cmd_tag(int argc, char **argv)
{
    return move_name("tag", argc, argv, tag_help, 2);
}

static void rollback_help(void)
{
    printf("Usage: plumb rollback NAME[:TAG] [--json]\n"
           "\n"
           "Points NAME again at the file it had before its last pull or tag. Each\n"
           "rollback goes one version further back; every step stays in the history\n"
           "('plumb show NAME' lists it).\n"
           "\n"
           "Options:\n"
           "      --json       print the entry as JSON\n"
           "  -h, --help       this help\n"
           "\n"
           "Example:\n"
           "  plumb rollback support-bot:2\n");
}

int cmd_rollback(int argc, char **argv)
{
    return move_name("rollback", argc, argv, rollback_help, 1);
}
