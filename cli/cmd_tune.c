/* plumb tune: the serving settings that meet the users' targets here,
 * measured (tune.h), and the winner written as a [model] section. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/config.h"
#include "plumb/store.h"
#include "plumb/tune.h"

#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("Usage: plumb tune MODEL [--users N] [--slo-ttft S] [--slo-tps X] [OPTIONS]\n"
           "\n"
           "Finds, by measuring on this machine, the serving settings under which N\n"
           "users at once get at least X tokens/s each and their first token within S\n"
           "seconds (p95). Each trial serves MODEL with one setting on a loopback port\n"
           "and puts plumb bench --serve's load on it (N clients streaming requests).\n"
           "The settings tried, one at a time from plumb serve's defaults: the\n"
           "quantizations of MODEL in the store (other tags of its name), parallel\n"
           "slots, threads, KV-cache type, step time and batch size; a change is kept\n"
           "when it serves the users better. It stops when all were tried or the\n"
           "--budget is spent, prints what it tried, and with --write puts the winning\n"
           "[model] section (and the threads) into a configuration file that plumb\n"
           "serve --config reads.\n"
           "\n"
           "Exit status: 0 when a setting met the targets, 1 when none did (or the\n"
           "model could not be served), 2 bad usage.\n"
           "\n"
           "Options:\n"
           "      --users N          clients at once (default 1)\n"
           "      --slo-ttft S       time to first token, p95, at most S seconds\n"
           "      --slo-tps X        tokens/s per user (median) at least X\n"
           "      --budget TIME      stop starting trials after TIME: 90s, 10m, 1h or\n"
           "                         seconds (default 10m)\n"
           "      --prompt-tokens N  prompt of each request (default 256)\n"
           "      --gen-tokens N     tokens each answer streams (default 64)\n"
           "      --requests N       requests of each user per trial (default 2)\n"
           "  -c, --ctx N            context per slot (default: plumb serve's)\n"
           "      --write FILE       write the winner into FILE's [model NAME] section (the\n"
           "                         file is created, or its other sections kept)\n"
           "      --alias NAME       that section's name (default: MODEL's name)\n"
           "      --json             print JSON\n"
           "  -h, --help             this help\n"
           "\n"
           "Examples:\n"
           "  plumb tune qwen2.5-7b:q4_k_m --users 8 --slo-ttft 2 --slo-tps 5 --budget 15m\n"
           "  plumb tune model.gguf --users 4 --slo-tps 10 --write /etc/plumb/plumb.ini\n");
}

/* "90s", "10m", "1h" or plain seconds. */
static bool parse_duration(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0))
        return false;
    double unit = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        unit = 60, end++;
    else if (*end == 'h')
        unit = 3600, end++;
    if (*end)
        return false;
    *out = v * unit;
    return true;
}

static const char *setting_text(const struct tune_params *p, const struct tune_setting *s, char *buf, size_t size)
{
    snprintf(buf, size, "%s, %d thread%s, %d slot%s, batch %d, step %g ms, KV %s", p->labels[s->model], s->threads,
             s->threads == 1 ? "" : "s", s->slots, s->slots == 1 ? "" : "s", s->batch, s->step_ms,
             pb_kv_type_name(s->kv_type));
    return buf;
}

struct progress {
    const struct tune_params *p;
    bool quiet;
};

static void on_progress(void *user, int i, const struct tune_trial *t, bool done, double elapsed)
{
    struct progress *pr = user;
    if (pr->quiet)
        return;
    char what[256];
    if (!done) {
        fprintf(stderr, "tune: trial %d (%.0f of %.0f s): %s\n", i + 1, elapsed, pr->p->budget_s,
                setting_text(pr->p, &t->s, what, sizeof what));
    } else if (!t->ran) {
        fprintf(stderr, "tune:   could not run: %s\n", cli_esc(t->error));
    } else {
        fprintf(stderr, "tune:   %.1f t/s per user, %.1f in all, TTFT p95 %.2f s, ITL p95 %.0f ms: %s\n",
                t->tps_per_user, t->agg_tps, t->ttft_p95, t->itl_p95 * 1000,
                t->meets ? "meets the targets" : "misses");
    }
}

static json_t *trial_json(const struct tune_params *p, const struct tune_trial *t)
{
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:f, s:s, s:b, s:I}", "model", p->labels[t->s.model], "path",
                          p->models[t->s.model], "threads", t->s.threads, "slots", t->s.slots, "batch", t->s.batch,
                          "step_ms", t->s.step_ms, "kv_type", pb_kv_type_name(t->s.kv_type), "ran", t->ran,
                          "memory_bytes", (json_int_t)t->memory);
    if (t->ran)
        json_object_update_new(o, json_pack("{s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:b}", "requests", t->requests,
                                            "failed", t->failed, "agg_t_s", t->agg_tps, "t_s_per_user",
                                            t->tps_per_user, "ttft_median_s", t->ttft_p50, "ttft_p95_s", t->ttft_p95,
                                            "itl_median_s", t->itl_p50, "itl_p95_s", t->itl_p95, "meets", t->meets));
    json_object_set_new(o, "error", t->error[0] ? json_string(t->error) : json_null());
    json_object_set_new(o, "seconds", json_real(t->seconds));
    return o;
}

static void print_table(const struct tune_params *p, const struct tune_report *r)
{
    printf("| %-2s | %-24s | %3s | %5s | %5s | %4s | %4s | %8s | %8s | %13s | %13s | %9s | %-7s |\n", "#", "model",
           "thr", "slots", "batch", "step", "KV", "t/s all", "t/s user", "TTFT p50/p95", "ITL p50/p95", "memory",
           "verdict");
    printf("| -- | ------------------------ | --- | ----- | ----- | ---- | ---- | -------- | -------- | ------------- "
           "| ------------- | --------- | ------- |\n");
    for (int i = 0; i < r->n_trials; i++) {
        const struct tune_trial *t = &r->trials[i];
        char mem[32], ttft[32], itl[32];
        cli_fmt_bytes(t->memory, mem, sizeof mem);
        snprintf(ttft, sizeof ttft, "%.2f/%.2f s", t->ttft_p50, t->ttft_p95);
        snprintf(itl, sizeof itl, "%.0f/%.0f ms", t->itl_p50 * 1000, t->itl_p95 * 1000);
        printf("| %2d | %-24.24s | %3d | %5d | %5d | %4g | %4s | %8.1f | %8.1f | %13s | %13s | %9s | %-7s |%s\n", i + 1,
               cli_esc(p->labels[t->s.model]), t->s.threads, t->s.slots, t->s.batch, t->s.step_ms,
               pb_kv_type_name(t->s.kv_type), t->agg_tps, t->tps_per_user, t->ran ? ttft : "-", t->ran ? itl : "-",
               mem, !t->ran ? "failed" : t->meets ? "meets" : "misses", i == r->best ? " <- best" : "");
    }
}

/* The winner into path's [model alias] section (the file read first when
 * it exists: its other sections and settings stay). */
static int write_config(const char *path, const char *alias, const struct tune_params *p, const struct tune_trial *t,
                        bool first_is_file, pb_err *err)
{
    static struct config c;
    config_defaults(&c);
    if (access(path, F_OK) == 0 && config_load(path, &c, err))
        return err->code;
    int i = 0;
    while (i < c.n_models && strcmp(c.models[i].alias, alias) != 0)
        i++;
    if (i == c.n_models) {
        if (c.n_models == CONFIG_MAX_MODELS) {
            snprintf(err->msg, sizeof err->msg, "%s already has %d models", path, CONFIG_MAX_MODELS);
            return err->code = PB_ERANGE;
        }
        memset(&c.models[i], 0, sizeof c.models[i]);
        snprintf(c.models[i].alias, sizeof c.models[i].alias, "%s", alias);
        c.models[i].prefill_chunk = ENGINE_DEFAULT_PREFILL_CHUNK;
        c.n_models++;
    }
    struct config_model *m = &c.models[i];
    /* a store name as it is; a file by its absolute path (the configuration may live elsewhere) */
    char abs[PATH_MAX];
    const char *file = p->models[t->s.model];
    const char *source = t->s.model == 0 && first_is_file ? (realpath(file, abs) ? abs : file) : p->labels[t->s.model];
    if (strlen(source) >= sizeof m->source) {
        snprintf(err->msg, sizeof err->msg, "the model's path is too long for a configuration");
        return err->code = PB_ERANGE;
    }
    memcpy(m->source, source, strlen(source) + 1);
    m->parallel = t->s.slots;
    m->batch = t->s.batch;
    m->step_ms = t->s.step_ms;
    m->kv_type = (int)t->s.kv_type;
    m->ctx = p->n_ctx;
    c.threads = t->s.threads;
    char *text;
    int rc = config_format(&c, &text, err);
    if (rc)
        return rc;
    rc = pb_write_small(path, text, strlen(text), 0644, err);
    free(text);
    return rc;
}

/* MODEL's other quantizations in the store: the other tags of its name,
 * each digest once. */
static void add_store_siblings(struct tune_params *p, const struct store_entry *named, char (*paths)[1024],
                               char (*labels)[300])
{
    struct store *st;
    pb_err err = {0};
    if (!named->digest[0] || store_open_readonly(NULL, &st, &err))
        return;
    struct store_entry *all;
    size_t n;
    if (store_list(st, &all, &n, &err) == PB_OK) {
        for (size_t i = 0; i < n && p->n_models < TUNE_MAX_MODELS; i++) {
            if (strcmp(all[i].ref.name, named->ref.name) != 0 || !strcmp(all[i].digest, named->digest))
                continue;
            bool seen = false;
            for (size_t k = 0; k < i && !seen; k++)
                seen = !strcmp(all[k].ref.name, named->ref.name) && !strcmp(all[k].digest, all[i].digest);
            char ref[300];
            snprintf(ref, sizeof ref, "%s:%s", all[i].ref.name, all[i].ref.tag);
            struct store_entry e;
            if (seen || store_resolve(NULL, ref, paths[p->n_models], sizeof paths[0], &e, &err))
                continue;
            snprintf(labels[p->n_models], sizeof labels[0], "%s", ref);
            p->models[p->n_models] = paths[p->n_models];
            p->labels[p->n_models] = labels[p->n_models];
            p->n_models++;
        }
        free(all);
    }
    store_close(st);
}

int cmd_tune(int argc, char **argv)
{
    enum { OPT_USERS = 1000, OPT_TTFT, OPT_TPS, OPT_BUDGET, OPT_PROMPT, OPT_GEN, OPT_REQ, OPT_WRITE, OPT_ALIAS,
           OPT_JSON };
    static const struct option longopts[] = {
        {"users", required_argument, 0, OPT_USERS},     {"slo-ttft", required_argument, 0, OPT_TTFT},
        {"slo-tps", required_argument, 0, OPT_TPS},     {"budget", required_argument, 0, OPT_BUDGET},
        {"prompt-tokens", required_argument, 0, OPT_PROMPT}, {"gen-tokens", required_argument, 0, OPT_GEN},
        {"requests", required_argument, 0, OPT_REQ},    {"ctx", required_argument, 0, 'c'},
        {"write", required_argument, 0, OPT_WRITE},     {"alias", required_argument, 0, OPT_ALIAS},
        {"json", no_argument, 0, OPT_JSON},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct tune_params p = tune_defaults();
    const char *write = NULL, *alias = NULL;
    bool json = false;
    long long v;
    int c;
    struct cli_parser par = {.cmd = "tune", .shortopts = "c:h", .longopts = longopts};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case OPT_USERS:
            if (!cli_parse_int("tune", "--users", optarg, 1, ENGINE_MAX_SLOTS, &v))
                return CLI_USAGE;
            p.users = (int)v;
            break;
        case OPT_TTFT:
            if (!cli_parse_float("tune", "--slo-ttft", optarg, 0.001, 3600, &p.slo_ttft_s))
                return CLI_USAGE;
            break;
        case OPT_TPS:
            if (!cli_parse_float("tune", "--slo-tps", optarg, 0.001, 1e6, &p.slo_tps))
                return CLI_USAGE;
            break;
        case OPT_BUDGET:
            if (!parse_duration(optarg, &p.budget_s))
                return cli_usage_error("tune", "--budget: a time like 90s, 10m or 1h, not '%s'", optarg);
            break;
        case OPT_PROMPT:
            if (!cli_parse_int("tune", "--prompt-tokens", optarg, 1, 1 << 20, &v))
                return CLI_USAGE;
            p.prompt_tokens = (int)v;
            break;
        case OPT_GEN:
            if (!cli_parse_int("tune", "--gen-tokens", optarg, 2, 1 << 20, &v))
                return CLI_USAGE;
            p.gen_tokens = (int)v;
            break;
        case OPT_REQ:
            if (!cli_parse_int("tune", "--requests", optarg, 1, 1000, &v))
                return CLI_USAGE;
            p.requests_per_user = (int)v;
            break;
        case 'c':
            if (!cli_parse_int("tune", "--ctx", optarg, 16, 1 << 24, &v))
                return CLI_USAGE;
            p.n_ctx = v;
            break;
        case OPT_WRITE:
            if (cli_refuse_dash("tune", "--write", optarg))
                return CLI_USAGE;
            write = optarg;
            break;
        case OPT_ALIAS:
            if (!config_alias_valid(optarg))
                return cli_usage_error("tune", "--alias '%s': 1-64 of letters, digits, '.', '_', ':' and '-'",
                                       optarg);
            alias = optarg;
            break;
        case OPT_JSON: json = true; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (optind >= argc)
        return cli_usage_error("tune", "missing MODEL");
    if (optind + 1 < argc)
        return cli_usage_error("tune", "unexpected argument '%s'", argv[optind + 1]);
    const char *model = argv[optind];
    static char paths[TUNE_MAX_MODELS][1024], labels[TUNE_MAX_MODELS][300];
    struct store_entry named = {0};
    if (!cli_resolve_model("tune", model, paths[0], sizeof paths[0], &named))
        return CLI_FAIL;
    {
        char copy[1024];
        snprintf(copy, sizeof copy, "%s", model);
        snprintf(labels[0], sizeof labels[0], "%s", named.digest[0] ? model : basename(copy));
    }
    p.models[0] = paths[0];
    p.labels[0] = labels[0];
    p.n_models = 1;
    add_store_siblings(&p, &named, paths, labels);
    /* the section's name: the store name, or the file's name without .gguf */
    char name[72];
    if (alias) {
        snprintf(name, sizeof name, "%s", alias);
    } else {
        char copy[1024];
        snprintf(copy, sizeof copy, "%s", named.digest[0] ? named.ref.name : model);
        snprintf(name, sizeof name, "%s", basename(copy));
        char *dot = strstr(name, ".gguf");
        if (dot)
            *dot = 0;
        if (!config_alias_valid(name))
            snprintf(name, sizeof name, "model");
    }

    struct progress pr = {&p, false};
    p.progress = on_progress;
    p.user = &pr;
    p.cancel = &cli_interrupted;
    cli_trap_interrupts(true);
    static struct tune_report r;
    pb_err err = {0};
    int rc = tune_run(&p, &r, &err);
    cli_trap_interrupts(false);
    if (rc)
        return cli_error("tune", "%s", err.msg);
    const struct tune_trial *best = r.best >= 0 ? &r.trials[r.best] : NULL;
    const bool met = best && best->meets;
    bool written = false;
    if (write && met) {
        if (write_config(write, name, &p, best, !named.digest[0], &err))
            return cli_error("tune", "%s: %s", write, err.msg);
        written = true;
    }
    if (json) {
        json_t *trials = json_array();
        for (int i = 0; i < r.n_trials; i++)
            json_array_append_new(trials, trial_json(&p, &r.trials[i]));
        json_t *targets = json_pack("{s:i, s:o, s:o, s:i, s:i}", "users", p.users, "slo_ttft_s",
                                    p.slo_ttft_s > 0 ? json_real(p.slo_ttft_s) : json_null(), "slo_tps",
                                    p.slo_tps > 0 ? json_real(p.slo_tps) : json_null(), "prompt_tokens",
                                    p.prompt_tokens, "gen_tokens", p.gen_tokens);
        cli_print_json(json_pack("{s:o, s:o, s:o, s:b, s:o}", "targets", targets, "trials", trials, "best",
                                 best ? json_integer(r.best) : json_null(), "met", met, "written",
                                 written ? json_pack("{s:s, s:s}", "file", write, "section", name) : json_null()),
                       true);
        return met ? CLI_OK : CLI_FAIL;
    }
    print_table(&p, &r);
    char what[256];
    if (met)
        printf("\nbest: %s: %.1f t/s per user for %d user%s, TTFT p95 %.2f s\n",
               setting_text(&p, &best->s, what, sizeof what), best->tps_per_user, p.users, p.users == 1 ? "" : "s",
               best->ttft_p95);
    else
        printf("\nno setting met the targets%s%s\n", best ? "; the closest: " : "",
               best ? setting_text(&p, &best->s, what, sizeof what) : "");
    if (written)
        printf("wrote [model %s] into %s (plumb serve --config %s)\n", name, write, write);
    else if (write)
        printf("%s not written: no setting met the targets\n", write);
    return met ? CLI_OK : CLI_FAIL;
}
