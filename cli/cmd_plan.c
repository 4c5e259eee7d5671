/* plumb plan: what fits, how fast, for how many users; per quantization,
 * on this machine (measured) or on catalog devices. */
#define _GNU_SOURCE
#include "cli.h"

#include "plumb/engine.h"
#include "plumb/plan.h"
#include "plumb/store.h"
#include "plumb/survey.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_TARGETS 16

static void help(void)
{
    printf("Usage: plumb plan [MODEL | FILE] [OPTIONS]\n"
           "\n"
           "For a catalog model or a GGUF file, per quantization (F16, Q8_0, Q6_K,\n"
           "Q5_K_M, Q4_K_M, MXFP4 for mixtures, IQ4_XS, Q4_0, Q3_K_M, Q2_K, IQ2_M): the\n"
           "memory of the weights (from the real bits per weight), of the KV cache for the\n"
           "context and users, and of the runtime; whether it fits; predicted generation\n"
           "speed per user and in all, prompt speed and time to the first token; how many\n"
           "users meet the targets; a recommendation (the best quality that meets them)\n"
           "and, when nothing does, the smallest catalog device that would. Without a\n"
           "model it ranks the catalog's models on the device.\n"
           "\n"
           "On this machine the figures come from its profile (plumb survey; measured now\n"
           "with --quick when there is none) and the efficiency from plumb bench runs\n"
           "(assumed when there are none); on catalog devices from the catalog with\n"
           "assumed efficiencies. The output says which is which.\n"
           "\n"
           "Options:\n"
           "  -c, --ctx N          context per user in tokens (default %d, at most the\n"
           "                       model's)\n"
           "      --users N        concurrent users (default 1)\n"
           "      --slo-tps X      generation tokens/s each user needs (default 10; 0: none)\n"
           "      --slo-ttft S     seconds to the first token (default: no target)\n"
           "      --prompt N       prompt tokens for the time to first token (default %d)\n"
           "      --kv-type T      KV cache type: f16 (default), f32 or q8_0\n"
           "      --device LIST    this, or catalog device ids, comma separated or repeated\n"
           "                       (default: this)\n"
           "      --catalog DIR    catalog files to use instead of the built-in ones\n"
           "      --list-models    list the catalog's models\n"
           "      --list-devices   list the catalog's devices\n"
           "      --json           print the plan as JSON\n"
           "  -h, --help           this help\n"
           "\n"
           "Examples:\n"
           "  plumb plan llama-3.1-8b --ctx 8192 --users 4\n"
           "  plumb plan qwen2.5-72b --device rtx-4090,h100-sxm,m2-ultra-192gb\n"
           "  plumb plan model.gguf --slo-tps 20 --slo-ttft 2\n"
           "  plumb plan --users 10\n",
           ENGINE_DEFAULT_MAX_CTX, PLAN_BATCH);
}

struct opts {
    struct plan_params p;
    const char *on[MAX_TARGETS];
    int n_on;
    const char *catalog_dir;
    bool json, ctx_given;
};

static void fmt_tps(double v, char *buf, size_t n)
{
    if (v >= 100)
        snprintf(buf, n, "%.0f", v);
    else if (v >= 10)
        snprintf(buf, n, "%.1f", v);
    else
        snprintf(buf, n, "%.2f", v);
}

/* ---- targets ---- */

/* This machine: its saved profile, or a quick survey saved now. */
static int load_this(struct plan_target *t, struct survey *s, bool quiet)
{
    char dir[600];
    pb_err err = {0};
    if (survey_dir(dir, sizeof dir, &err))
        return cli_error("plan", "%s", err.msg);
    if (survey_load(dir, s, &err)) {
        if (err.code != PB_EIO)
            return cli_error("plan", "%s (run plumb survey to measure it again)", err.msg);
        if (!quiet)
            fprintf(stderr, "plumb plan: no machine profile yet: measuring this machine (plumb survey --quick)\n");
        struct survey_params sp = {.quick = true};
        if (survey_run(&sp, s, &err))
            return cli_error("plan", "%s", err.msg);
        snprintf(s->plumb_version, sizeof s->plumb_version, "%s", PLUMB_VERSION);
        if (survey_save(s, dir, &err))
            fprintf(stderr, "plumb plan: warning: profile not saved: %s\n", err.msg);
    }
    struct survey now;
    if (survey_read_memory(&now, &err) == PB_OK) /* memory free now, not when surveyed */
        s->memory.available = now.memory.available;
    static struct survey_calib cal[SURVEY_MAX_CALIB];
    int n_cal = 0;
    if (survey_calib_load(dir, cal, SURVEY_MAX_CALIB, &n_cal, &err)) {
        fprintf(stderr, "plumb plan: warning: calibration records ignored: %s\n", err.msg);
        n_cal = 0;
    }
    plan_target_this(s, cal, n_cal, t);
    return CLI_OK;
}

static int resolve_targets(const struct opts *o, const struct catalog *cat, struct plan_target *t, int *n,
                           struct survey *s)
{
    *n = 0;
    const char *def[] = {"this"};
    const char *const *on = o->n_on ? o->on : def;
    int n_on = o->n_on ? o->n_on : 1;
    for (int i = 0; i < n_on; i++) {
        if (!strcmp(on[i], "this")) {
            int rc = load_this(&t[*n], s, o->json);
            if (rc)
                return rc;
        } else {
            const struct cat_device *d = catalog_device(cat, on[i]);
            if (!d) {
                char near[300];
                catalog_near(cat, CAT_DEVICES, on[i], near, sizeof near);
                return cli_usage_error("plan", "unknown device '%s'%s%s%s ('plumb plan --list-devices' lists them)",
                                       on[i], near[0] ? "; did you mean " : "", near, near[0] ? "?" : "");
            }
            plan_target_device(d, &t[*n]);
        }
        (*n)++;
    }
    return CLI_OK;
}

/* ---- one model ---- */

static const char *kv_name(enum pb_kv_type kv)
{
    return pb_kv_type_name(kv);
}

static void print_model(const struct cat_model *m, const char *file_ftype)
{
    char a[32];
    cli_fmt_count((uint64_t)(m->params_b * 1e9), a, sizeof a);
    printf("model        %s (%s): %s parameters", cli_esc(m->id), cli_esc(m->name), a);
    if (m->experts) {
        cli_fmt_count((uint64_t)(m->active_params_b * 1e9), a, sizeof a);
        printf(", %s active (%lld of %lld experts)", a, (long long)m->experts_used, (long long)m->experts);
    }
    printf(", %s\n", cli_esc(m->license));
    printf("shape        %s, %lld layers, hidden %lld, FFN %lld, %lld heads / %lld KV heads x %lld, vocabulary %lld, "
           "context %lld%s\n",
           cli_esc(m->arch), (long long)m->layers, (long long)m->hidden, m->experts ? (long long)m->expert_ffn : (long long)m->ffn,
           (long long)m->heads, (long long)m->kv_heads, (long long)m->head_dim, (long long)m->vocab,
           (long long)m->context, m->tied_embeddings ? ", tied embeddings" : "");
    if (m->sliding_window)
        printf("             sliding window %lld on %lld of every %lld layers\n", (long long)m->sliding_window,
               (long long)m->swa_pattern - 1, (long long)m->swa_pattern);
    if (file_ftype && file_ftype[0])
        printf("file type    %s\n", file_ftype);
    printf("source       %s\n", cli_esc(m->source));
}

static void print_target_header(const struct plan_target *t, const struct opts *o)
{
    char mem[32];
    cli_fmt_bytes((uint64_t)t->mem_bytes, mem, sizeof mem);
    printf("\non           %s: %s %s\n", t->name, mem, t->this_machine ? "available now" : "usable");
    printf("figures      %s\n", t->figures_from);
    printf("targets      context %lld x %d user%s, KV cache %s, prompt %lld tokens", (long long)o->p.ctx, o->p.users,
           o->p.users == 1 ? "" : "s", kv_name(o->p.kv_type), (long long)o->p.prompt);
    if (o->p.slo_tps > 0)
        printf("; each user >= %g t/s", o->p.slo_tps);
    if (o->p.slo_ttft > 0)
        printf("; first token <= %g s", o->p.slo_ttft);
    printf("\n");
    if (!t->this_machine && t->kind != CAT_CPU)
        printf("note         plumb itself runs on the CPU: on this %s the figures are for an engine that uses it "
               "(llama.cpp, vLLM, ...)\n",
               t->kind == CAT_GPU ? "GPU" : "device");
    printf("\n");
}

static void print_rows(const struct plan_target *t, const struct plan_result *r)
{
    printf("| quant   | bits/w | weights    | KV cache   | overhead   | total      | fits | gen t/s/user | gen t/s all "
           "| prompt t/s | TTFT s | users at target |%s\n",
           t->this_machine ? " plumb |" : "");
    printf("| ------- | ------ | ---------- | ---------- | ---------- | ---------- | ---- | ------------ | ----------- "
           "| ---------- | ------ | --------------- |%s\n",
           t->this_machine ? " ----- |" : "");
    for (int i = 0; i < r->n_rows; i++) {
        const struct plan_row *w = &r->rows[i];
        char wb[32], kv[32], ov[32], tot[32], tu[16], ta[16], pp[16];
        cli_fmt_bytes(w->w.bytes, wb, sizeof wb);
        cli_fmt_bytes(w->kv_bytes, kv, sizeof kv);
        cli_fmt_bytes(w->overhead_bytes, ov, sizeof ov);
        cli_fmt_bytes(w->total_bytes, tot, sizeof tot);
        fmt_tps(w->tg_user, tu, sizeof tu);
        fmt_tps(w->tg_total, ta, sizeof ta);
        fmt_tps(w->pp_tps, pp, sizeof pp);
        char name[16];
        snprintf(name, sizeof name, "%s%s%s", i == r->recommended ? "*" : "", w->quant, w->approx ? "~" : "");
        printf("| %-7s | %6.2f | %10s | %10s | %10s | %10s | %-4s | %12s | %11s | %10s | %6.2f | %15d |", name,
               w->w.bpw, wb, kv, ov, tot, w->fits ? "yes" : "no", tu, ta, pp, w->ttft_s, w->users_slo);
        if (t->this_machine)
            printf(" %-5s |", w->runs ? "yes" : "no");
        printf("\n");
    }
}

static void print_efficiency(const struct plan_target *t, const struct plan_result *r)
{
    /* the efficiency of the rows plumb runs (or all), once per distinct source */
    const char *seen[PLAN_MAX_QUANTS];
    const struct plan_row *first[PLAN_MAX_QUANTS];
    int n_seen = 0;
    printf("\nefficiency  ");
    for (int i = 0; i < r->n_rows; i++) {
        const struct plan_row *w = &r->rows[i];
        bool dup = false; /* the same source, or the same figures */
        for (int k = 0; k < n_seen && !dup; k++)
            dup = !strcmp(seen[k], w->eff_from) ||
                  (first[k]->eff_tg == w->eff_tg && first[k]->eff_pp == w->eff_pp &&
                   first[k]->eff_calibrated == w->eff_calibrated);
        if (dup)
            continue;
        first[n_seen] = w;
        seen[n_seen++] = w->eff_from;
        printf("%s generation %.2f, prompt %.2f of the roofline (%s%s)", n_seen > 1 ? ";\n            " : "",
               w->eff_tg, w->eff_pp, w->eff_calibrated ? "calibrated: " : "", w->eff_from);
        if (!w->eff_calibrated && t->this_machine)
            printf(" - run plumb bench to calibrate");
    }
    printf("\n");
}

static int print_plan(const struct cat_model *m, const struct plan_target *t, const struct plan_result *r,
                      const struct opts *o, const struct catalog *cat)
{
    print_target_header(t, o);
    print_rows(t, r);
    print_efficiency(t, r);
    printf("notes        * recommended; ~ mix approximated (llama.cpp types plumb does not write); "
           "generation: a token at the full context, users batched\n");
    if (t->this_machine && !r->arch_supported)
        printf("             plumb does not run the %s architecture%s yet: the figures are for an engine that does\n",
               m->arch, m->experts ? " (mixture of experts)" : m->sliding_window ? " (sliding-window attention)" : "");
    if (r->recommended >= 0) {
        const struct plan_row *w = &r->rows[r->recommended];
        char tu[16], tot[32];
        fmt_tps(w->tg_user, tu, sizeof tu);
        cli_fmt_bytes(w->total_bytes, tot, sizeof tot);
        printf("recommended  %s: %s, %s t/s per user, first token in %.2f s, up to %d user%s at the target\n",
               w->quant, tot, tu, w->ttft_s, w->users_slo, w->users_slo == 1 ? "" : "s");
        return CLI_OK;
    }
    bool any_fits = false;
    for (int i = 0; i < r->n_rows; i++)
        any_fits |= r->rows[i].fits;
    printf("recommended  none: %s\n", any_fits ? "nothing that fits meets the targets" : "nothing fits");
    struct plan_result best;
    int d = plan_smallest_device(cat, m, &o->p, &best);
    if (d >= 0) {
        const struct plan_row *w = &best.rows[best.recommended];
        char tu[16];
        fmt_tps(w->tg_user, tu, sizeof tu);
        printf("would fit    %s (%s, %.0f GB, about $%.0f as of %s) with %s: %s t/s per user (catalog figures, "
               "assumed efficiency)\n",
               cat->devices[d].id, cat->devices[d].name, cat->devices[d].memory_gb, cat->devices[d].price_usd,
               cat->devices[d].price_date, w->quant, tu);
    } else {
        printf("would fit    no single catalog device meets these targets\n");
    }
    return CLI_OK;
}

static json_t *row_json(const struct plan_row *w)
{
    json_t *o = json_pack("{s:s,s:b,s:b,s:f,s:I,s:I,s:I,s:I,s:b,s:i,s:f,s:f,s:f,s:f,s:b,s:i,s:b}", "quant", w->quant,
                          "approximate_mix", w->approx, "runs", w->runs, "bits_per_weight", w->w.bpw, "weights_bytes",
                          (json_int_t)w->w.bytes, "kv_bytes", (json_int_t)w->kv_bytes, "overhead_bytes",
                          (json_int_t)w->overhead_bytes, "total_bytes", (json_int_t)w->total_bytes, "fits", w->fits,
                          "users_max_memory", w->users_max, "gen_tps_per_user", w->tg_user, "gen_tps_total",
                          w->tg_total, "prompt_tps", w->pp_tps, "ttft_s", w->ttft_s, "compute_bound",
                          w->compute_bound, "users_at_target", w->users_slo, "meets", w->meets);
    json_object_set_new(o, "efficiency", json_pack("{s:f,s:f,s:s,s:s}", "generation", w->eff_tg, "prompt", w->eff_pp,
                                                   "kind", w->eff_calibrated ? "calibrated" : "assumed", "from",
                                                   w->eff_from));
    json_object_set_new(o, "bytes_read_per_token", json_integer((json_int_t)(w->w.read_dense + w->w.read_experts)));
    return o;
}

static json_t *target_json(const struct plan_target *t)
{
    return json_pack("{s:s,s:s,s:s,s:b,s:f,s:f,s:f,s:f,s:s,s:s}", "id", t->id, "name", t->name, "kind",
                     cat_kind_name(t->kind), "measured", t->this_machine, "memory_bytes", t->mem_bytes,
                     "bandwidth_gbs", t->bw_gbs, "int8_ops", t->int8_ops, "fp_ops", t->fp_ops, "figures",
                     t->this_machine ? "measured" : "catalog", "figures_from", t->figures_from);
}

static json_t *plan_json(const struct cat_model *m, const struct plan_target *t, const struct plan_result *r,
                         const struct opts *o, const struct catalog *cat)
{
    json_t *rows = json_array();
    for (int i = 0; i < r->n_rows; i++)
        json_array_append_new(rows, row_json(&r->rows[i]));
    json_t *j = json_pack("{s:o,s:o,s:b,s:o}", "device", target_json(t), "rows", rows, "architecture_supported",
                          r->arch_supported, "recommended",
                          r->recommended >= 0 ? json_string(r->rows[r->recommended].quant) : json_null());
    if (r->recommended < 0) {
        struct plan_result best;
        int d = plan_smallest_device(cat, m, &o->p, &best);
        json_object_set_new(j, "smallest_device",
                            d < 0 ? json_null()
                                  : json_pack("{s:s,s:s,s:f}", "id", cat->devices[d].id, "quant",
                                              best.rows[best.recommended].quant, "gen_tps_per_user",
                                              best.rows[best.recommended].tg_user));
    }
    return j;
}

static json_t *model_json(const struct cat_model *m)
{
    json_t *j = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:f,s:s,s:s}", "id", m->id, "name", m->name,
                          "arch", m->arch, "layers", (json_int_t)m->layers, "hidden", (json_int_t)m->hidden, "ffn",
                          (json_int_t)m->ffn, "heads", (json_int_t)m->heads, "kv_heads", (json_int_t)m->kv_heads,
                          "head_dim", (json_int_t)m->head_dim, "vocab", (json_int_t)m->vocab, "context",
                          (json_int_t)m->context, "tied_embeddings", m->tied_embeddings, "params_b", m->params_b,
                          "license", m->license, "source", m->source);
    if (m->experts)
        json_object_set_new(j, "moe", json_pack("{s:I,s:I,s:I,s:f}", "experts", (json_int_t)m->experts,
                                                "experts_used", (json_int_t)m->experts_used, "expert_ffn",
                                                (json_int_t)m->expert_ffn, "active_params_b", m->active_params_b));
    return j;
}

static json_t *params_json(const struct opts *o)
{
    /* a target not set is null, not 0 */
    return json_pack("{s:I,s:i,s:o,s:o,s:I,s:s}", "ctx", (json_int_t)o->p.ctx, "users", o->p.users, "slo_tps",
                     o->p.slo_tps > 0 ? json_real(o->p.slo_tps) : json_null(), "slo_ttft",
                     o->p.slo_ttft > 0 ? json_real(o->p.slo_ttft) : json_null(), "prompt", (json_int_t)o->p.prompt, "kv_type",
                     kv_name(o->p.kv_type));
}

/* ---- ranking (no model) ---- */

static int rank(const struct catalog *cat, const struct plan_target *t, struct opts *o, json_t *jtargets)
{
    struct plan_ranked *rk;
    pb_err err = {0};
    if (plan_rank(cat, t, &o->p, o->ctx_given, &rk, &err))
        return cli_error("plan", "%s", err.msg);
    if (jtargets) {
        json_t *list = json_array();
        for (int i = 0; i < cat->n_models; i++) {
            const struct plan_row *w = &rk[i].r.rows[rk[i].pick];
            json_t *e = json_pack("{s:s,s:f,s:s,s:s}", "model", rk[i].m->id, "params_b", rk[i].m->params_b, "verdict",
                                  plan_verdict_name(rk[i].verdict), "quant", w->quant);
            json_object_set_new(e, "row", row_json(w));
            json_object_set_new(e, "architecture_supported", json_boolean(rk[i].r.arch_supported));
            json_array_append_new(list, e);
        }
        json_array_append_new(jtargets, json_pack("{s:o,s:o}", "device", target_json(t), "ranking", list));
        free(rk);
        return CLI_OK;
    }
    print_target_header(t, o);
    printf("| model                         | params   | quant   | memory     | gen t/s/user | gen t/s all | "
           "prompt t/s | users at target | verdict                      |\n");
    printf("| ----------------------------- | -------- | ------- | ---------- | ------------ | ----------- | "
           "---------- | --------------- | ---------------------------- |\n");
    bool unsupported = false;
    for (int i = 0; i < cat->n_models; i++) {
        const struct plan_row *w = &rk[i].r.rows[rk[i].pick];
        const bool too_big = rk[i].verdict == PLAN_TOO_BIG;
        unsupported |= t->this_machine && !rk[i].r.arch_supported;
        char params[32], mem[32], tu[16], ta[16], pp[16], verdict[160];
        cli_fmt_count((uint64_t)(rk[i].m->params_b * 1e9), params, sizeof params);
        cli_fmt_bytes(w->total_bytes, mem, sizeof mem);
        fmt_tps(w->tg_user, tu, sizeof tu);
        fmt_tps(w->tg_total, ta, sizeof ta);
        fmt_tps(w->pp_tps, pp, sizeof pp);
        snprintf(verdict, sizeof verdict, "%s%s%s%s",
                 rk[i].verdict == PLAN_MEETS  ? "meets the target"
                 : rk[i].verdict == PLAN_SLOW ? "fits, too slow"
                                              : "too big",
                 t->this_machine && !rk[i].r.arch_supported ? "; needs an engine with " : "",
                 t->this_machine && !rk[i].r.arch_supported ? rk[i].m->arch : "",
                 t->this_machine && !rk[i].r.arch_supported ? " support" : "");
        printf("| %-29s | %8s | %-7s | %10s | %12s | %11s | %10s | %15d | %-28s |\n", rk[i].m->id, params, w->quant,
               mem, too_big ? "-" : tu, too_big ? "-" : ta, too_big ? "-" : pp, w->users_slo, verdict);
    }
    printf("\nquant: the recommended one (best quality meeting the target), else the smallest that fits.%s\n"
           "Details: plumb plan MODEL.\n",
           unsupported ? "\n'needs an engine with ... support': plumb does not run that architecture yet, the figures\n"
                         "are for an engine that does."
                       : "");
    free(rk);
    return CLI_OK;
}

/* ---- listing ---- */

static void list_models(const struct catalog *c)
{
    printf("| id                            | name                                | params   | arch     | context | "
           "license       |\n");
    printf("| ----------------------------- | ----------------------------------- | -------- | -------- | ------- | "
           "------------- |\n");
    for (int i = 0; i < c->n_models; i++) {
        const struct cat_model *m = &c->models[i];
        char p[32];
        cli_fmt_count((uint64_t)(m->params_b * 1e9), p, sizeof p);
        printf("| %-29s | %-35.35s | %8s | %-8s | %7lld | %-13s |\n", m->id, m->name, p, m->arch,
               (long long)m->context, m->license);
    }
    printf("\n%d models (%s)\n", c->n_models, c->origin[CAT_MODELS]);
}

static void list_devices(const struct catalog *c)
{
    printf("| id                  | name                                          | kind  | memory  | GB/s   | FP16 "
           "TFLOPS | INT8 TOPS | watts | price (date)        |\n");
    printf("| ------------------- | --------------------------------------------- | ----- | ------- | ------ | "
           "----------- | --------- | ----- | ------------------- |\n");
    for (int i = 0; i < c->n_devices; i++) {
        const struct cat_device *d = &c->devices[i];
        char price[32];
        snprintf(price, sizeof price, "$%.0f (%s)", d->price_usd, d->price_date);
        printf("| %-19s | %-45.45s | %-5s | %4.0f GB | %6.0f | %11.1f | %9.1f | %5.0f | %-19s |\n", d->id, d->name,
               cat_kind_name(d->kind), d->memory_gb, d->bandwidth_gbs, d->fp16_tflops, d->int8_tops, d->power_w,
               price);
    }
    printf("\n%d devices (%s)\n", c->n_devices, c->origin[CAT_DEVICES]);
}

/* ---- main ---- */

static bool add_targets(struct opts *o, char *arg)
{
    for (char *save = NULL, *tok = strtok_r(arg, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (o->n_on == MAX_TARGETS) {
            cli_usage_error("plan", "--device takes at most %d devices", MAX_TARGETS);
            return false;
        }
        o->on[o->n_on++] = tok;
    }
    return true;
}

static bool looks_like_file(const char *s)
{
    struct stat st;
    size_t n = strlen(s);
    return stat(s, &st) == 0 || strchr(s, '/') || (n > 5 && !strcmp(s + n - 5, ".gguf"));
}

int cmd_plan(int argc, char **argv)
{
    enum { OPT_CTX = 1000, OPT_USERS, OPT_SLO_TPS, OPT_SLO_TTFT, OPT_PROMPT, OPT_KV, OPT_ON, OPT_CATALOG, OPT_JSON,
           OPT_LIST_MODELS, OPT_LIST_DEVICES };
    static const struct option longopts[] = {
        {"ctx", required_argument, 0, OPT_CTX},
        {"users", required_argument, 0, OPT_USERS},
        {"slo-tps", required_argument, 0, OPT_SLO_TPS},
        {"slo-ttft", required_argument, 0, OPT_SLO_TTFT},
        {"prompt", required_argument, 0, OPT_PROMPT},
        {"kv-type", required_argument, 0, OPT_KV},
        {"device", required_argument, 0, OPT_ON},
        {"on", required_argument, 0, OPT_ON}, /* the old name, kept for scripts */
        {"catalog", required_argument, 0, OPT_CATALOG},
        {"json", no_argument, 0, OPT_JSON},
        {"list-models", no_argument, 0, OPT_LIST_MODELS},
        {"list-devices", no_argument, 0, OPT_LIST_DEVICES},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static struct opts o;
    memset(&o, 0, sizeof o);
    o.p = (struct plan_params){.ctx = ENGINE_DEFAULT_MAX_CTX, .users = 1, .slo_tps = 10, .prompt = PLAN_BATCH,
                               .kv_type = PB_KV_F16};
    bool prompt_given = false, lm = false, ld = false;
    long long v;
    double d;
    int c;
    struct cli_parser par = {.cmd = "plan", .shortopts = "c:h", .longopts = longopts, .files = "catalog"};
    while ((c = cli_getopt(argc, argv, &par)) != -1) {
        switch (c) {
        case 'c':
        case OPT_CTX:
            if (!cli_parse_int("plan", "--ctx", optarg, 1, 1 << 24, &v))
                return CLI_USAGE;
            o.p.ctx = v;
            o.ctx_given = true;
            break;
        case OPT_USERS:
            if (!cli_parse_int("plan", "--users", optarg, 1, 100000, &v))
                return CLI_USAGE;
            o.p.users = (int)v;
            break;
        case OPT_SLO_TPS:
            if (!cli_parse_float("plan", "--slo-tps", optarg, 0, 1e6, &d))
                return CLI_USAGE;
            o.p.slo_tps = d;
            break;
        case OPT_SLO_TTFT:
            if (!cli_parse_float("plan", "--slo-ttft", optarg, 0, 1e6, &d))
                return CLI_USAGE;
            o.p.slo_ttft = d;
            break;
        case OPT_PROMPT:
            if (!cli_parse_int("plan", "--prompt", optarg, 0, 1 << 24, &v))
                return CLI_USAGE;
            o.p.prompt = v;
            prompt_given = true;
            break;
        case OPT_KV:
            if (!cli_parse_kv_type("plan", optarg, &o.p.kv_type))
                return CLI_USAGE;
            break;
        case OPT_ON:
            if (!add_targets(&o, optarg))
                return CLI_USAGE;
            break;
        case OPT_CATALOG: o.catalog_dir = optarg; break;
        case OPT_JSON: o.json = true; break;
        case OPT_LIST_MODELS: lm = true; break;
        case OPT_LIST_DEVICES: ld = true; break;
        case 'h': help(); return CLI_OK;
        default: return CLI_USAGE; /* cli_getopt said why */
        }
    }
    if (optind + 1 < argc)
        return cli_usage_error("plan", "unexpected argument '%s'", argv[optind + 1]);
    struct catalog *cat;
    pb_err err = {0};
    if (catalog_load(o.catalog_dir, &cat, &err))
        return cli_error("plan", "%s", err.msg);
    int rc = CLI_OK;
    static struct plan_target targets[MAX_TARGETS];
    static struct survey survey;
    int n_targets = 0;
    json_t *jtargets = NULL;
    if (lm || ld) {
        if (lm)
            list_models(cat);
        if (ld)
            list_devices(cat);
        goto done;
    }
    /* the model first: a misspelt name fails before any measuring */
    static struct cat_model file_model;
    const struct cat_model *m = NULL;
    char file_ftype[16] = "";
    if (optind < argc) {
        const char *name = argv[optind];
        /* a file, then a model installed in the store, then the catalog */
        char stored[4096] = "";
        struct store_entry entry;
        pb_err serr;
        if (!looks_like_file(name) && store_resolve(NULL, name, stored, sizeof stored, &entry, &serr) == PB_OK &&
            entry.digest[0])
            name = stored;
        else
            m = catalog_model(cat, name);
        if (!m && looks_like_file(name)) {
            if (plan_model_from_gguf(name, &file_model, file_ftype, sizeof file_ftype, &err)) {
                rc = cli_error("plan", "%s", err.msg);
                goto done;
            }
            if (stored[0]) /* the store's name, not the blob's file name */
                snprintf(file_model.id, sizeof file_model.id, "%.47s", argv[optind]);
            m = &file_model;
        } else if (!m) {
            char near[300];
            catalog_near(cat, CAT_MODELS, name, near, sizeof near);
            rc = cli_usage_error("plan", "unknown model '%s'%s%s%s (not a file either; 'plumb plan --list-models' lists "
                                 "the catalog)", name, near[0] ? "; did you mean " : "", near, near[0] ? "?" : "");
            goto done;
        }
        if (o.p.ctx > m->context && m->context > 0) {
            if (o.ctx_given)
                fprintf(stderr, "plumb plan: note: context %lld is beyond %s's trained %lld\n", (long long)o.p.ctx,
                        m->id, (long long)m->context);
            else
                o.p.ctx = m->context;
        }
    }
    if (o.p.prompt > o.p.ctx) {
        if (prompt_given) {
            rc = cli_usage_error("plan", "--prompt %lld is longer than the context %lld", (long long)o.p.prompt,
                                 (long long)o.p.ctx);
            goto done;
        }
        o.p.prompt = o.p.ctx;
    }
    if ((rc = resolve_targets(&o, cat, targets, &n_targets, &survey)))
        goto done;
    if (o.json)
        jtargets = json_array();
    if (!m) {
        for (int i = 0; i < n_targets && rc == CLI_OK; i++)
            rc = rank(cat, &targets[i], &o, jtargets);
    } else {
        if (!o.json)
            print_model(m, file_ftype);
        for (int i = 0; i < n_targets && rc == CLI_OK; i++) {
            static struct plan_result r;
            if (plan_evaluate(m, &targets[i], &o.p, &r, &err)) {
                rc = cli_error("plan", "%s", err.msg);
                break;
            }
            if (o.json)
                json_array_append_new(jtargets, plan_json(m, &targets[i], &r, &o, cat));
            else
                rc = print_plan(m, &targets[i], &r, &o, cat);
        }
    }
    if (o.json && rc == CLI_OK) {
        json_t *j = json_pack("{s:o,s:o,s:o}", "model", m ? model_json(m) : json_null(), "params", params_json(&o),
                              "targets", jtargets);
        jtargets = NULL;
        if (file_ftype[0])
            json_object_set_new(j, "file_type", json_string(file_ftype));
        rc = cli_print_json(j, true);
    }
done:
    json_decref(jtargets);
    catalog_free(cat);
    return rc;
}
