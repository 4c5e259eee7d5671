/* plumb search: catalog models matching a word, with the size of each
 * quantization, whether it fits this machine (plan's verdict) and where
 * its GGUF file is (the catalog's repository). */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/engine.h"
#include "plumb/plan.h"
#include "plumb/survey.h"

#include <getopt.h>
#include <string.h>
#include <strings.h>

static void help(void)
{
    printf("Usage: plumb search WORD [OPTIONS]\n"
           "\n"
           "Lists the catalog's models whose id or name holds WORD (any case), with, per\n"
           "quantization:\n"
           "  size     the weights' size in GiB, as plumb plan computes it from the model's\n"
           "           dimensions and the tensor types the quantization gives each tensor\n"
           "           (a file is that plus a little metadata)\n"
           "  here     plumb plan's verdict for this machine with one user and a context of\n"
           "           %d tokens (or the model's, when shorter): 'meets' (fits in memory\n"
           "           and generates at least 10 tokens/s), 'slow', 'too big'. From the\n"
           "           machine profile (plumb survey); without one, from the memory free\n"
           "           now: 'fits' or 'too big'. A '*' marks a type or an architecture\n"
           "           plumb does not run yet (another engine may)\n"
           "  file     the GGUF file of the catalog's repository: what plumb pull NAME:QUANT\n"
           "           fetches; '-' when the catalog knows none\n"
           "Models with a repository show its quantizations; the others show plan's.\n"
           "\n"
           "Options:\n"
           "      --json             an array: per model id, name, parameters, architecture,\n"
           "                         context, gguf (repo, revision, or null), fit_from\n"
           "                         (\"profile\" or \"memory\") and quants (quant, file, sha256,\n"
           "                         size_bytes, size_gib, memory_gib, fits, verdict, runs;\n"
           "                         size and fit null where plan does not model the type)\n"
           "      --catalog DIR      catalog files overriding the built-in ones (as plan)\n"
           "  -h, --help             this help\n"
           "\n"
           "Examples:\n"
           "  plumb search qwen\n"
           "  plumb search llama-3.2 --json\n"
           "  plumb search 8b && plumb pull qwen3-8b:q4_k_m\n",
           ENGINE_DEFAULT_MAX_CTX);
}

/* ---- this machine ---- */

/* The saved profile (*profile true), else the memory facts alone: the
 * target's speeds are then placeholders and only `fits` means anything. */
static int this_machine(struct plan_target *t, bool *profile)
{
    static struct survey s;
    static struct survey_calib cal[SURVEY_MAX_CALIB];
    char dir[600];
    pb_err err = {0};
    int n_cal = 0;
    *profile = false;
    if (survey_dir(dir, sizeof dir, &err) == PB_OK && survey_load(dir, &s, &err) == PB_OK) {
        *profile = true;
        if (survey_calib_load(dir, cal, SURVEY_MAX_CALIB, &n_cal, &err))
            n_cal = 0;
    } else if (err.code == PB_EFORMAT) {
        fprintf(stderr, "plumb search: %s: fits judged from free memory alone (plumb survey measures again)\n",
                err.msg);
    }
    struct survey now;
    memset(&now, 0, sizeof now);
    if (survey_read_memory(&now, &err))
        return cli_error("search", "%s", err.msg);
    if (!*profile)
        memset(&s, 0, sizeof s);
    s.memory.available = now.memory.available; /* memory free now, as plan */
    plan_target_this(&s, cal, n_cal, t);
    if (!*profile)
        t->bw_gbs = t->int8_ops = t->fp_ops = 1; /* unknown: only memory is judged */
    return CLI_OK;
}

/* ---- one model ---- */

struct qrow {
    const char *quant;
    const struct cat_gguf_file *file;
    const struct plan_row *row; /* NULL: a type plan does not model */
};

static int collect(const struct cat_model *m, const struct plan_result *r, struct qrow *out)
{
    int n = 0;
    for (int i = 0; i < r->n_rows; i++)
        out[n++] = (struct qrow){r->rows[i].quant, cat_gguf_file_of(m, r->rows[i].quant), &r->rows[i]};
    for (int i = 0; i < m->gguf.n_files; i++) {
        bool seen = false;
        for (int k = 0; k < r->n_rows && !seen; k++)
            seen = !strcasecmp(r->rows[k].quant, m->gguf.files[i].quant);
        if (!seen && n < PLAN_MAX_QUANTS + CAT_GGUF_MAX_FILES)
            out[n++] = (struct qrow){m->gguf.files[i].quant, &m->gguf.files[i], NULL};
    }
    return n;
}

static const char *verdict(const struct plan_row *w, bool profile)
{
    if (!w->fits)
        return "too big";
    if (!profile)
        return "fits";
    return w->meets ? "meets" : "slow";
}

static double gib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0 * 1024.0);
}

static json_t *model_json(const struct cat_model *m, const struct qrow *q, int n, bool profile)
{
    json_t *quants = json_array();
    for (int i = 0; i < n; i++) {
        const struct plan_row *w = q[i].row;
        json_t *o = json_pack("{s:s,s:o,s:o}", "quant", q[i].quant, "file",
                              q[i].file ? json_string(q[i].file->file) : json_null(), "sha256",
                              q[i].file && q[i].file->sha256[0] ? json_string(q[i].file->sha256) : json_null());
        json_object_set_new(o, "size_bytes", w ? json_integer((json_int_t)w->w.bytes) : json_null());
        json_object_set_new(o, "size_gib", w ? json_real(gib(w->w.bytes)) : json_null());
        json_object_set_new(o, "memory_gib", w ? json_real(gib(w->total_bytes)) : json_null());
        json_object_set_new(o, "fits", w ? json_boolean(w->fits) : json_null());
        json_object_set_new(o, "verdict", w ? json_string(verdict(w, profile)) : json_null());
        json_object_set_new(o, "runs", w ? json_boolean(w->runs) : json_null());
        json_array_append_new(quants, o);
    }
    json_t *gguf = m->gguf.repo[0] ? json_pack("{s:s,s:s}", "repo", m->gguf.repo, "revision", m->gguf.revision)
                                   : json_null();
    return json_pack("{s:s,s:s,s:f,s:s,s:I,s:o,s:s,s:o}", "id", m->id, "name", m->name, "params_b", m->params_b,
                     "arch", m->arch, "context", (json_int_t)m->context, "gguf", gguf, "fit_from",
                     profile ? "profile" : "memory", "quants", quants);
}

static void print_model(const struct cat_model *m, const struct qrow *q, int n, bool profile, bool *starred)
{
    printf("%s  %s, %.3g B parameters, context %lld\n", m->id, cli_esc(m->name), m->params_b, (long long)m->context);
    if (m->gguf.repo[0])
        printf("  GGUF: %s (%s)\n", cli_esc(m->gguf.repo), cli_esc(m->gguf.revision));
    else
        printf("  GGUF: no repository in the catalog (pull a file by URL)\n");
    printf("  %-8s %10s  %-9s %s\n", "QUANT", "SIZE", "HERE", "FILE");
    for (int i = 0; i < n; i++) {
        if (m->gguf.repo[0] && !q[i].file)
            continue; /* the repository's quantizations only */
        const struct plan_row *w = q[i].row;
        char size[32] = "?", here[24] = "?";
        if (w) {
            snprintf(size, sizeof size, "%.2f GiB", gib(w->w.bytes));
            snprintf(here, sizeof here, "%s%s", verdict(w, profile), w->runs ? "" : "*");
            *starred |= !w->runs;
        }
        printf("  %-8s %10s  %-9s %s\n", q[i].quant, size, here, q[i].file ? cli_esc(q[i].file->file) : "-");
    }
}

static bool matches(const struct cat_model *m, const char *word)
{
    return strcasestr(m->id, word) || strcasestr(m->name, word);
}

enum { OPT_JSON = 256, OPT_CATALOG };

int cmd_search(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, OPT_JSON},
        {"catalog", required_argument, 0, OPT_CATALOG},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    bool json = false;
    const char *catalog_dir = NULL;
    int c;
    struct cli_parser par = {.cmd = "search", .shortopts = "h", .longopts = opts, .files = "catalog"};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_JSON: json = true; break;
        case OPT_CATALOG: catalog_dir = optarg; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("search", argc == optind ? "no word given" : "expected one word");
    const char *word = argv[optind];
    if (!*word)
        return cli_usage_error("search", "the word is empty ('plumb plan --list-models' lists every model)");
    struct catalog *cat;
    pb_err err = {0};
    if (catalog_load(catalog_dir, &cat, &err))
        return cli_error("search", "%s", err.msg);
    static struct plan_target t;
    bool profile;
    int rc = this_machine(&t, &profile);
    json_t *out = json ? json_array() : NULL;
    int found = 0;
    bool starred = false;
    static struct plan_result r;
    static struct qrow q[PLAN_MAX_QUANTS + CAT_GGUF_MAX_FILES];
    for (int i = 0; i < cat->n_models && rc == CLI_OK; i++) {
        const struct cat_model *m = &cat->models[i];
        if (!matches(m, word))
            continue;
        struct plan_params p = {.ctx = ENGINE_DEFAULT_MAX_CTX < m->context ? ENGINE_DEFAULT_MAX_CTX : m->context,
                                .users = 1, .slo_tps = 10, .prompt = PLAN_BATCH, .kv_type = PB_KV_F16};
        if (p.prompt > p.ctx)
            p.prompt = p.ctx;
        if (plan_evaluate(m, &t, &p, &r, &err)) {
            rc = cli_error("search", "%s: %s", m->id, err.msg);
            break;
        }
        int n = collect(m, &r, q);
        if (out)
            json_array_append_new(out, model_json(m, q, n, profile));
        else
            print_model(m, q, n, profile, &starred);
        if (!out)
            printf("\n");
        found++;
    }
    catalog_free(cat);
    if (rc) {
        json_decref(out);
        return rc;
    }
    if (out)
        return cli_print_json(out, true);
    if (!found) {
        printf("no catalog model matches '%s' ('plumb plan --list-models' lists them all)\n", cli_esc(word));
        return CLI_OK;
    }
    printf("%d model%s. HERE: %s, one user, context up to %d.%s\n", found, found == 1 ? "" : "s",
           profile ? "plan's verdict from this machine's profile" : "from the memory free now (no machine profile: "
                                                                   "plumb survey measures speed too)",
           ENGINE_DEFAULT_MAX_CTX, starred ? " *: plumb does not run this type or architecture yet." : "");
    printf("Pull one with: plumb pull NAME[:QUANT]\n");
    return CLI_OK;
}
