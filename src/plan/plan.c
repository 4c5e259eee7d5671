/* The memory and speed model behind plumb plan (see plan.h). */
#define _GNU_SOURCE
#include "plumb/plan.h"

#include "base/err.h"

#include "gguf/gguf.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "plumb/engine.h"
#include "quant/ftype.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    int ftype;   /* general.file_type */
    bool approx; /* llama.cpp's mix for it has more rules than plumb's ftype table */
} quants[] = {
    {"F16", PB_FTYPE_F16, false},       {"Q8_0", PB_FTYPE_Q8_0, false},     {"Q6_K", PB_FTYPE_Q6_K, false},
    {"Q5_K_M", PB_FTYPE_Q5_K_M, false}, {"Q4_K_M", PB_FTYPE_Q4_K_M, false}, {"MXFP4", PB_FTYPE_MXFP4_MOE, false},
    {"IQ4_XS", PB_FTYPE_IQ4_XS, false}, {"Q4_0", PB_FTYPE_Q4_0, false},     {"Q3_K_M", PB_FTYPE_Q3_K_M, false},
    {"Q2_K", PB_FTYPE_Q2_K, false},     {"IQ2_M", 29, true},
};
/* MXFP4 is a mixture's file type (experts MXFP4, the rest Q8_0): planned
 * for mixtures only */
#define N_QUANTS ((int)(sizeof quants / sizeof quants[0]))


int plan_quant_find(const char *name)
{
    for (int i = 0; i < N_QUANTS; i++)
        if (!strcasecmp(quants[i].name, name))
            return i;
    return -1;
}

/* ---- weights ---- */

enum role { R_EMBED, R_OUTPUT, R_DENSE, R_EXPERT, R_OTHER };

struct wsum {
    struct plan_weights w;
    bool kernels;      /* plumb can multiply every matrix */
    int ftype;
    int n_layer;
    const struct cat_model *m;
};

/* One tensor of ne0 x ne1 x ne2 elements. */
static void add(struct wsum *s, const char *name, int layer, int n_dims, int64_t ne0, int64_t ne1, int64_t ne2,
                enum role role)
{
    const bool tied = s->m->tied_embeddings;
    struct ftype_tensor info = {name, (uint32_t)n_dims, ne0, layer, s->n_layer,
                                role == R_OUTPUT || (role == R_EMBED && tied)};
    const struct ftype_model fm = {s->m->kv_heads > 0 ? (int)(s->m->heads / s->m->kv_heads) : 1,
                                   (int)s->m->experts};
    /* the rules plumb quantize and llama-quantize apply (routers stay F32) */
    enum pb_type t = pb_ftype_model_tensor_type((enum pb_ftype)s->ftype, &fm, &info);
    uint64_t bytes = (uint64_t)pb_row_size(t, ne0) * (uint64_t)ne1 * (uint64_t)ne2;
    double n = (double)ne0 * (double)ne1 * (double)ne2;
    s->w.bytes += bytes;
    s->w.params += n;
    bool matrix = n_dims >= 2 && role != R_EMBED;
    if (matrix && !kern_dot_for(t))
        s->kernels = false;
    if (role == R_EMBED && tied) /* the output projection reads the embedding table */
        role = R_OUTPUT;
    switch (role) {
    case R_OUTPUT:
    case R_DENSE:
        s->w.read_dense += bytes;
        s->w.active_params += n;
        break;
    case R_EXPERT:
        s->w.read_experts += bytes;
        s->w.active_params += n * (double)s->m->experts_used / (double)s->m->experts;
        break;
    case R_EMBED:
        s->w.active_params += n; /* counted in 2 x params, as plumb bench counts */
        break;
    case R_OTHER:
        s->w.active_params += n;
        break;
    }
}

static int weights(const struct cat_model *m, int quant, struct wsum *s, pb_err *err)
{
    if (quant < 0 || quant >= N_QUANTS)
        return pb_fail(err, PB_EINVAL, "no quantization %d", quant);
    memset(s, 0, sizeof *s);
    s->kernels = true;
    s->ftype = quants[quant].ftype;
    s->n_layer = (int)m->layers;
    s->m = m;
    const int64_t E = m->hidden, QD = m->heads * m->head_dim, KVD = m->kv_heads * m->head_dim;
    /* names as GGUF writes them: the rules match on them */
    add(s, "token_embd.weight", -1, 2, E, m->vocab, 1, R_EMBED);
    if (!m->tied_embeddings)
        add(s, "output.weight", -1, 2, E, m->vocab, 1, R_OUTPUT);
    add(s, "output_norm.weight", -1, 1, E, 1, 1, R_OTHER);
    for (int l = 0; l < m->layers; l++) {
        char n[7][64];
        const char *sfx[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        for (int i = 0; i < 7; i++)
            snprintf(n[i], sizeof n[i], "blk.%d.%s%s.weight", l, sfx[i], i >= 4 && m->experts ? "_exps" : "");
        add(s, "attn_norm.weight", l, 1, E, 1, 1, R_OTHER);
        add(s, "ffn_norm.weight", l, 1, E, 1, 1, R_OTHER);
        add(s, n[0], l, 2, E, QD, 1, R_DENSE);
        add(s, n[1], l, 2, E, KVD, 1, R_DENSE);
        add(s, n[2], l, 2, E, KVD, 1, R_DENSE);
        add(s, n[3], l, 2, QD, E, 1, R_DENSE);
        if (m->experts) {
            add(s, "ffn_gate_inp.weight", l, 2, E, m->experts, 1, R_DENSE);
            add(s, n[4], l, 3, E, m->expert_ffn, m->experts, R_EXPERT);
            add(s, n[5], l, 3, E, m->expert_ffn, m->experts, R_EXPERT);
            add(s, n[6], l, 3, m->expert_ffn, E, m->experts, R_EXPERT);
        } else {
            add(s, n[4], l, 2, E, m->ffn, 1, R_DENSE);
            add(s, n[5], l, 2, E, m->ffn, 1, R_DENSE);
            add(s, n[6], l, 2, m->ffn, E, 1, R_DENSE);
        }
    }
    s->w.bpw = 8.0 * (double)s->w.bytes / s->w.params;
    return PB_OK;
}

int plan_weights(const struct cat_model *m, int quant, struct plan_weights *w, pb_err *err)
{
    struct wsum s;
    int rc = weights(m, quant, &s, err);
    *w = s.w;
    return rc;
}

/* Layers attending globally, and those within the sliding window. */
static void layer_split(const struct cat_model *m, int64_t *global, int64_t *local)
{
    *global = m->sliding_window ? m->layers / m->swa_pattern : m->layers;
    *local = m->layers - *global;
}

/* The catalog entry as the engine's shape. */
static struct engine_shape shape_of(const struct cat_model *m, uint64_t weight_bytes, bool float_weights)
{
    return (struct engine_shape){
        .n_vocab = m->vocab,
        .n_embd = m->hidden,
        .n_layer = m->layers,
        .n_head = m->heads,
        .n_head_kv = m->kv_heads,
        .head_dim = m->head_dim,
        .n_ff = m->experts ? m->expert_ffn * m->experts_used : m->ffn,
        .n_ctx_train = m->context,
        .n_swa = m->sliding_window,
        .swa_pattern = m->sliding_window ? m->swa_pattern : 0,
        .weight_bytes = weight_bytes,
        .float_weights = float_weights,
    };
}

/* The engine's estimate for one slot of ctx positions. */
static int engine_figures(const struct cat_model *m, uint64_t weight_bytes, bool float_weights, int64_t ctx,
                          enum pb_kv_type kv_type, struct engine_memory *mem, pb_err *err)
{
    const struct engine_shape sh = shape_of(m, weight_bytes, float_weights);
    struct engine_params ep = engine_defaults();
    ep.n_ctx = ctx;
    ep.kv_type = kv_type;
    ep.n_threads = 1; /* attention scratch grows with threads: a few KB each */
    return engine_estimate_shape(&sh, &ep, mem, err);
}

uint64_t plan_kv_bytes(const struct cat_model *m, int64_t ctx, enum pb_kv_type kv_type)
{
    struct engine_memory mem;
    return engine_figures(m, 0, false, ctx, kv_type, &mem, NULL) == PB_OK ? mem.kv : 0;
}

/* Attention FLOP of one token attending over pos earlier positions. */
static double attn_flops(const struct cat_model *m, double pos)
{
    int64_t global, local;
    layer_split(m, &global, &local);
    double win = m->sliding_window && m->sliding_window < pos ? (double)m->sliding_window : pos;
    return 4.0 * (double)(m->heads * m->head_dim) * ((double)global * pos + (double)local * win);
}


/* ---- targets ---- */

static const struct {
    double tg, pp, overhead;
} kind_defaults[] = {
    /* assumed shares of the catalog's peak figures that inference engines
     * reach, and the runtime's fixed memory (CUDA context and library
     * workspaces on GPUs) */
    [CAT_GPU] = {0.70, 0.35, 768.0 * 1024 * 1024},
    [CAT_APPLE] = {0.70, 0.50, 256.0 * 1024 * 1024},
    [CAT_APU] = {0.65, 0.35, 256.0 * 1024 * 1024},
    [CAT_CPU] = {0.70, 0.25, 64.0 * 1024 * 1024},
};
/* this machine's fixed memory is the engine's own estimate (its runtime
 * and buffers); fixed_overhead is 0 there */
/* this machine without calibration: plumb's generation reaches about 3/4
 * of the read bandwidth, prompts about half the measured kernel rate */
#define THIS_EFF_TG 0.75
#define THIS_EFF_PP 0.50

static bool is_float_type(const char *ftype)
{
    return !strcasecmp(ftype, "F16") || !strcasecmp(ftype, "F32") || !strcasecmp(ftype, "BF16");
}

static double clampd(double x, double lo, double hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

void plan_target_this(const struct survey *s, const struct survey_calib *cal, int n_cal, struct plan_target *t)
{
    memset(t, 0, sizeof *t);
    snprintf(t->id, sizeof t->id, "this");
    snprintf(t->name, sizeof t->name, "this machine (%s, %d threads)", s->cpu.model, s->cpu.threads);
    t->kind = CAT_CPU;
    t->this_machine = true;
    t->mem_bytes = (double)s->memory.available;
    t->bw_gbs = s->memory.bandwidth_gbs;
    t->int8_ops = s->compute.int8_gops * 1e9;
    t->fp_ops = s->compute.f32_gflops * 1e9;
    t->fixed_overhead = 0;
    t->eff_tg = THIS_EFF_TG;
    t->eff_pp = THIS_EFF_PP;
    snprintf(t->figures_from, sizeof t->figures_from,
             "measured by plumb survey %s (%.1f GB/s read, int8 %.0f GOPS, FP32 %.0f GFLOP/s)", s->created,
             s->memory.bandwidth_gbs, s->compute.int8_gops, s->compute.f32_gflops);
    /* Each record's efficiency: its roofline time (bandwidth of the same
     * bench run, this profile's kernel throughput) over the measured time.
     * It may exceed 1: the throughput is measured on prompt-sized products,
     * and one-row products of some kernels (the scalar ones) run faster
     * per operation; the bounds only catch nonsense records. */
    for (int i = 0; i < n_cal && t->n_cal < PLAN_MAX_CAL; i++) {
        const struct survey_calib *r = &cal[i];
        if (strcmp(r->kernels, s->cpu.kernels) || r->bandwidth_gbs <= 0 || r->n_params == 0)
            continue;
        double rate = is_float_type(r->ftype) ? t->fp_ops : t->int8_ops;
        if (rate <= 0)
            continue;
        struct plan_cal *c = &t->cal[t->n_cal];
        memset(c, 0, sizeof *c);
        snprintf(c->ftype, sizeof c->ftype, "%s", r->ftype);
        c->bw_gbs = r->bandwidth_gbs;
        c->weight_bytes = r->weight_bytes;
        double flops = 2.0 * (double)r->n_params;
        if (r->tg_tps > 0) {
            double roof = fmax((double)r->weight_bytes / (r->bandwidth_gbs * 1e9), flops / rate);
            c->eff_tg = clampd(roof * r->tg_tps, 0.01, 10);
        }
        if (r->pp_tps > 0) {
            double batch = r->pp_tokens > 0 && r->pp_tokens < PLAN_BATCH ? r->pp_tokens : PLAN_BATCH;
            double roof = fmax(flops / rate, (double)r->weight_bytes / (r->bandwidth_gbs * 1e9 * batch));
            c->eff_pp = clampd(roof * r->pp_tps, 0.01, 10);
        }
        snprintf(c->from, sizeof c->from, "plumb bench %.60s (%s, %.1f MiB of weights), %d threads, %.20s", r->model,
                 r->ftype[0] ? r->ftype : "?", (double)r->weight_bytes / 1048576.0, r->threads, r->created);
        c->same_threads = r->threads == s->cpu.threads; /* others only when nothing matches */
        t->n_cal++;
    }
}

void plan_target_device(const struct cat_device *d, struct plan_target *t)
{
    memset(t, 0, sizeof *t);
    snprintf(t->id, sizeof t->id, "%s", d->id);
    snprintf(t->name, sizeof t->name, "%s", d->name);
    t->kind = d->kind;
    t->mem_bytes = d->memory_gb * 1e9 * d->usable_fraction;
    t->bw_gbs = d->bandwidth_gbs;
    t->int8_ops = d->int8_tops * 1e12;
    t->fp_ops = d->fp16_tflops * 1e12;
    t->fixed_overhead = kind_defaults[d->kind].overhead;
    t->eff_tg = kind_defaults[d->kind].tg;
    t->eff_pp = kind_defaults[d->kind].pp;
    snprintf(t->figures_from, sizeof t->figures_from, "catalog (%.0f GB/s, FP16 %.1f TFLOPS, INT8 %.1f TOPS)",
             d->bandwidth_gbs, d->fp16_tflops, d->int8_tops);
}

/* The median of v[0..n-1] (n > 0), sorting v. */
static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The efficiency for a quantization whose weights are weight_bytes: among
 * the records of models of that size (survey_calib_applies: a tiny
 * model's bench does not calibrate large ones), one of the same file type
 * (the nearest in size, then the newest), else the median of the others,
 * else the assumed default. */
/* With records, *bw (may be NULL) becomes the bandwidth their bench runs
 * measured (the record's own, or the median of the others'): the
 * efficiency was derived with it, and the
 * machine's bandwidth drifts between measurements on shared hosts (other
 * load only lowers it), so the record's own pair predicts best. */
static void pick_eff(const struct plan_target *t, const char *quant, uint64_t weight_bytes, bool tg, double *eff,
                     bool *calibrated, char *from, size_t from_size, double *bw)
{
    *eff = tg ? t->eff_tg : t->eff_pp;
    *calibrated = false;
    snprintf(from, from_size, "assumed");
    double v[PLAN_MAX_CAL], vbw[PLAN_MAX_CAL];
    const struct plan_cal *newest = NULL; /* of the others, for the median's note */
    int n = 0;
    const int cls = survey_calib_size_class(weight_bytes);
    for (int pass = 0; pass < 2 && n == 0; pass++) { /* this thread count first, then any */
        const struct plan_cal *best = NULL;
        int best_dist = 1 << 30;
        for (int i = t->n_cal - 1; i >= 0; i--) { /* newest first */
            const struct plan_cal *c = &t->cal[i];
            double e = tg ? c->eff_tg : c->eff_pp;
            if (e <= 0 || c->same_threads != (pass == 0) || !survey_calib_applies(c->weight_bytes, weight_bytes))
                continue;
            const int dist = abs(survey_calib_size_class(c->weight_bytes) - cls);
            if (!strcasecmp(c->ftype, quant) && dist < best_dist) {
                best = c;
                best_dist = dist;
            }
            if (!newest)
                newest = c;
            vbw[n] = c->bw_gbs;
            v[n++] = e;
        }
        if (best) {
            *eff = tg ? best->eff_tg : best->eff_pp;
            *calibrated = true;
            snprintf(from, from_size, "%s", best->from);
            if (bw && best->bw_gbs > 0)
                *bw = best->bw_gbs * 1e9;
            return;
        }
    }
    if (n == 0)
        return;
    *eff = median(v, n);
    /* the other types' efficiencies were derived with their runs'
     * bandwidths too: predicting with the survey's reading instead moved
     * a cross-type figure by the drift between the two (26.7 against
     * 44.5 GB/s in one CI run) */
    if (bw) {
        const double b = median(vbw, n);
        if (b > 0)
            *bw = b * 1e9;
    }
    *calibrated = true;
    snprintf(from, from_size, "median of %d plumb bench record%s of other types of this size, the newest %.150s", n,
             n == 1 ? "" : "s", newest->from);
}

/* ---- evaluation ---- */

struct speed {
    const struct cat_model *m;
    const struct plan_weights *w;
    double kv_read;   /* bytes of one user's cache at the full context */
    double bw, rate;  /* bytes/s, ops/s */
    double eff_tg, eff_pp;
    int64_t ctx, prompt;
};

/* Seconds of one decoding step serving u users; *compute when arithmetic
 * is the bound. */
static double step_time(const struct speed *s, int u, bool *compute)
{
    double touched = 1.0;
    if (s->m->experts)
        touched = 1.0 - pow(1.0 - (double)s->m->experts_used / (double)s->m->experts, u);
    double bytes = (double)s->w->read_dense + (double)s->w->read_experts * touched + u * s->kv_read;
    double flops = u * (2.0 * s->w->active_params + attn_flops(s->m, (double)s->ctx));
    double tm = bytes / s->bw, tc = flops / s->rate;
    if (compute)
        *compute = tc > tm;
    return fmax(tm, tc) / s->eff_tg;
}

static double prompt_tps(const struct speed *s)
{
    double P = (double)s->prompt;
    double flops = 2.0 * s->w->active_params + attn_flops(s->m, P / 2);
    double batch = P < PLAN_BATCH ? (P > 0 ? P : 1) : PLAN_BATCH;
    double t = fmax(flops / s->rate, (double)s->w->bytes / (s->bw * batch));
    return s->eff_pp / t;
}

int plan_evaluate(const struct cat_model *m, const struct plan_target *t, const struct plan_params *p,
                  struct plan_result *r, pb_err *err)
{
    memset(r, 0, sizeof *r);
    r->recommended = -1;
    if (p->ctx < 1 || p->users < 1 || p->prompt < 0 || p->slo_tps < 0 || p->slo_ttft < 0)
        return pb_fail(err, PB_EINVAL, "context and users must be at least 1, prompt and targets not negative");
    if (t->bw_gbs <= 0 || t->int8_ops <= 0 || t->fp_ops <= 0)
        return pb_fail(err, PB_EINVAL, "%s has no bandwidth or throughput figures (run plumb survey)", t->name);
    r->arch_supported = model_arch_supported(m->arch);
    const int64_t prompt = p->prompt < p->ctx ? p->prompt : p->ctx;
    for (int q = 0; q < N_QUANTS; q++) {
        if (quants[q].ftype == PB_FTYPE_MXFP4_MOE && !m->experts)
            continue;
        struct plan_row *row = &r->rows[r->n_rows++];
        struct wsum ws;
        int rc = weights(m, q, &ws, err);
        if (rc)
            return rc;
        /* memory: the engine's estimate for one slot, each user a slot;
         * on other devices their runtime's fixed overhead instead of
         * plumb's own */
        struct engine_memory mem;
        const bool float_w = quants[q].ftype == PB_FTYPE_F16;
        if ((rc = engine_figures(m, ws.w.bytes, float_w, p->ctx, p->kv_type, &mem, err)))
            return rc;
        const double kv_user = (double)mem.per_slot;
        snprintf(row->quant, sizeof row->quant, "%s", quants[q].name);
        row->approx = quants[q].approx;
        row->w = ws.w;
        row->runs = !t->this_machine || (r->arch_supported && ws.kernels);
        row->kv_bytes = (uint64_t)((double)mem.kv * p->users);
        const double fixed = (double)(mem.total - mem.weights - mem.per_slot) +
                             (t->this_machine ? 0 : t->fixed_overhead - (double)mem.runtime);
        row->overhead_bytes = (uint64_t)(fixed + (double)(mem.per_slot - mem.kv) * p->users);
        row->total_bytes = row->w.bytes + row->kv_bytes + row->overhead_bytes;
        row->fits = (double)row->total_bytes <= t->mem_bytes;
        double room = t->mem_bytes - (double)row->w.bytes - fixed;
        row->users_max = room <= 0 ? 0 : (int)fmin(room / kv_user, 1e6);

        struct speed s = {m, &row->w, (double)mem.kv, t->bw_gbs * 1e9, quants[q].ftype == PB_FTYPE_F16 ? t->fp_ops : t->int8_ops,
                          0, 0, p->ctx, prompt};
        bool cal_tg, cal_pp;
        char from_pp[sizeof row->eff_from];
        /* records are matched by the weights a token reads, as plumb bench
         * records them (of a mixture, the experts a token picks): a
         * 30B-A3B reads what a 3B dense model reads */
        const double used = m->experts ? (double)m->experts_used / (double)m->experts : 1.0;
        const uint64_t per_token = row->w.read_dense + (uint64_t)((double)row->w.read_experts * used);
        pick_eff(t, row->quant, per_token, true, &s.eff_tg, &cal_tg, row->eff_from, sizeof row->eff_from, &s.bw);
        pick_eff(t, row->quant, per_token, false, &s.eff_pp, &cal_pp, from_pp, sizeof from_pp, NULL);
        row->eff_tg = s.eff_tg;
        row->eff_pp = s.eff_pp;
        row->eff_calibrated = cal_tg;
        double step = step_time(&s, p->users, &row->compute_bound);
        row->tg_user = 1.0 / step;
        row->tg_total = p->users / step;
        row->pp_tps = prompt_tps(&s);
        row->ttft_s = (double)prompt / row->pp_tps + step_time(&s, 1, NULL);
        bool ttft_ok = p->slo_ttft <= 0 || row->ttft_s <= p->slo_ttft;
        /* most users within memory whose per-user speed still meets the
         * target: the step time grows with users, so bisect */
        int lo = 0, hi = row->users_max;
        if (!ttft_ok)
            hi = 0;
        while (lo < hi) {
            int mid = lo + (hi - lo + 1) / 2;
            if (p->slo_tps <= 0 || 1.0 / step_time(&s, mid, NULL) >= p->slo_tps)
                lo = mid;
            else
                hi = mid - 1;
        }
        row->users_slo = lo;
        row->meets = row->fits && ttft_ok && (p->slo_tps <= 0 || row->tg_user >= p->slo_tps);
        /* plumb cannot run the architecture yet: still recommend, for
         * another engine, rather than nothing */
        bool eligible = row->runs || (t->this_machine && !r->arch_supported);
        if (r->recommended < 0 && row->meets && eligible)
            r->recommended = r->n_rows - 1;
    }
    return PB_OK;
}

int plan_smallest_device(const struct catalog *c, const struct cat_model *m, const struct plan_params *p,
                         struct plan_result *r)
{
    int best = -1;
    struct plan_result tmp;
    for (int i = 0; i < c->n_devices; i++) {
        const struct cat_device *d = &c->devices[i];
        struct plan_target t;
        plan_target_device(d, &t);
        if (plan_evaluate(m, &t, p, &tmp, NULL) || tmp.recommended < 0)
            continue;
        if (best >= 0) {
            const struct cat_device *b = &c->devices[best];
            double mb = b->memory_gb * b->usable_fraction, md = d->memory_gb * d->usable_fraction;
            if (md > mb || (md == mb && d->price_usd >= b->price_usd))
                continue;
        }
        best = i;
        *r = tmp;
    }
    return best;
}

int plan_model_from_gguf(const char *path, struct cat_model *m, char *ftype, size_t ftype_size, pb_err *err)
{
    memset(m, 0, sizeof *m);
    ftype[0] = 0;
    struct gguf_file *f;
    int rc = gguf_open(path, &f, err);
    if (rc)
        return rc;
    struct model_hparams hp;
    if ((rc = model_hparams_read(f, &hp, err)))
        goto done;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(m->id, sizeof m->id, "%.47s", base);
    struct gguf_str name;
    if (gguf_get_str(f, "general.name", &name, NULL) == 1 && name.len > 0)
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name.len < 79 ? name.len : 79), name.data);
    else
        snprintf(m->name, sizeof m->name, "%.79s", base);
    snprintf(m->arch, sizeof m->arch, "%.15s", hp.arch);
    m->layers = hp.n_layer;
    m->hidden = hp.n_embd;
    m->ffn = hp.n_ff;
    m->heads = hp.n_head;
    m->kv_heads = hp.n_head_kv;
    m->head_dim = hp.head_dim;
    m->vocab = hp.n_vocab;
    m->context = hp.n_ctx_train;
    m->tied_embeddings = gguf_find_tensor(f, "output.weight") == NULL;
    char key[128];
    int64_t v;
    snprintf(key, sizeof key, "%s.expert_count", hp.arch);
    if (gguf_get_int(f, key, &v, NULL) == 1 && v > 0) {
        m->experts = v;
        snprintf(key, sizeof key, "%s.expert_used_count", hp.arch);
        m->experts_used = gguf_get_int(f, key, &v, NULL) == 1 && v > 0 && v <= m->experts ? v : 1;
        snprintf(key, sizeof key, "%s.expert_feed_forward_length", hp.arch);
        m->expert_ffn = gguf_get_int(f, key, &v, NULL) == 1 && v > 0 ? v : m->ffn;
    }
    snprintf(key, sizeof key, "%s.attention.sliding_window", hp.arch);
    if (gguf_get_int(f, key, &v, NULL) == 1 && v > 0) {
        m->sliding_window = v;
        m->swa_pattern = !strcmp(hp.arch, "gemma2") ? 2 : 6; /* GGUF does not say; the families' patterns */
    }
    double params = 0;
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++)
        params += (double)gguf_tensor_nelements(gguf_tensor(f, i));
    m->params_b = params / 1e9;
    if (m->experts)
        m->active_params_b = m->params_b; /* refined by plan_weights */
    int64_t ft;
    if (gguf_get_int(f, "general.file_type", &ft, NULL) == 1 && pb_ftype_name(ft))
        snprintf(ftype, ftype_size, "%s", pb_ftype_name(ft));
    snprintf(m->license, sizeof m->license, "(from the file)");
    snprintf(m->source, sizeof m->source, "%.190s", path);
done:
    gguf_close(f);
    return rc;
}

/* ---- ranking the catalog ---- */

static int cmp_ranked(const void *a, const void *b)
{
    const struct plan_ranked *x = a, *y = b;
    if (x->verdict != y->verdict)
        return (int)x->verdict - (int)y->verdict;
    return x->m->params_b < y->m->params_b ? 1 : x->m->params_b > y->m->params_b ? -1 : 0;
}

int plan_rank(const struct catalog *cat, const struct plan_target *t, const struct plan_params *p, bool ctx_given,
              struct plan_ranked **out, pb_err *err)
{
    *out = NULL;
    struct plan_ranked *rk = calloc((size_t)cat->n_models, sizeof *rk);
    if (!rk)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    for (int i = 0; i < cat->n_models; i++) {
        struct plan_params mp = *p;
        const struct cat_model *m = &cat->models[i];
        if (!ctx_given && mp.ctx > m->context)
            mp.ctx = m->context;
        if (mp.prompt > mp.ctx)
            mp.prompt = mp.ctx;
        rk[i].m = m;
        int rc = plan_evaluate(m, t, &mp, &rk[i].r, err);
        if (rc) {
            free(rk);
            return pb_wrap(err, rc, "%s", m->id);
        }
        rk[i].pick = rk[i].r.recommended;
        rk[i].verdict = PLAN_MEETS;
        if (rk[i].pick < 0) {
            int smallest_fit = -1;
            /* an architecture plumb lacks: any type (another engine runs it) */
            const bool any_type = t->this_machine && !rk[i].r.arch_supported;
            for (int q = 0; q < rk[i].r.n_rows; q++)
                if (rk[i].r.rows[q].fits && (rk[i].r.rows[q].runs || any_type))
                    smallest_fit = q;
            rk[i].verdict = smallest_fit >= 0 ? PLAN_SLOW : PLAN_TOO_BIG;
            rk[i].pick = smallest_fit >= 0 ? smallest_fit : rk[i].r.n_rows - 1;
        }
    }
    qsort(rk, (size_t)cat->n_models, sizeof *rk, cmp_ranked);
    *out = rk;
    return PB_OK;
}

const char *plan_verdict_name(enum plan_verdict v)
{
    return v == PLAN_MEETS ? "meets" : v == PLAN_SLOW ? "slow" : "too big";
}

/* ---- a device's capacity for the TCO ---- */

int plan_capacity(const struct catalog *cat, const char *model_id, const struct cat_device *d, const char *quant,
                  double tokens_out_day, struct plan_capacity *cap, pb_err *err)
{
    memset(cap, 0, sizeof *cap);
    const struct cat_model *m = catalog_model(cat, model_id);
    if (!m) {
        char near[300];
        catalog_near(cat, CAT_MODELS, model_id, near, sizeof near);
        return pb_fail(err, PB_ENOTFOUND, "unknown model '%s'%s%s%s ('plumb plan --list-models' lists them)",
                       model_id, near[0] ? "; did you mean " : "", near, near[0] ? "?" : "");
    }
    if (!d)
        return pb_fail(err, PB_EINVAL, "a model needs a device: the capacity comes from the device's figures");
    struct plan_target t;
    plan_target_device(d, &t);
    struct plan_params p = {.ctx = ENGINE_DEFAULT_MAX_CTX < m->context ? ENGINE_DEFAULT_MAX_CTX : m->context,
                            .users = 1, .prompt = PLAN_BATCH, .kv_type = PB_KV_F16};
    struct plan_result *r = malloc(sizeof *r);
    if (!r)
        return pb_fail(err, PB_ENOMEM, "out of memory");
    int rc = plan_evaluate(m, &t, &p, r, err);
    if (rc)
        goto done;
    int q = r->recommended;
    if (quant) {
        q = -1;
        for (int i = 0; i < r->n_rows; i++)
            if (!strcasecmp(r->rows[i].quant, quant))
                q = i;
        if (q < 0) {
            char names[200] = "";
            for (int i = 0, at = 0; i < r->n_rows && at < (int)sizeof names; i++)
                at += snprintf(names + at, sizeof names - (size_t)at, "%s%s", i ? ", " : "", r->rows[i].quant);
            rc = pb_fail(err, PB_EINVAL, "unknown quantization '%s' (%s)", quant, names);
            goto done;
        }
    }
    if (q < 0) {
        for (int i = 0; i < r->n_rows; i++)
            if (r->rows[i].fits)
                q = i;
        if (q < 0) {
            rc = pb_fail(err, PB_ERANGE, "%s does not fit on %s in any quantization", m->id, d->id);
            goto done;
        }
    }
    if (!r->rows[q].fits) {
        rc = pb_fail(err, PB_ERANGE, "%s in %s does not fit on %s", m->id, r->rows[q].quant, d->id);
        goto done;
    }
    /* users batched up to what memory allows: the device's best aggregate */
    p.users = r->rows[q].users_max > 0 ? (r->rows[q].users_max < 64 ? r->rows[q].users_max : 64) : 1;
    if ((rc = plan_evaluate(m, &t, &p, r, err)))
        goto done;
    cap->known = true;
    snprintf(cap->quant, sizeof cap->quant, "%s", r->rows[q].quant);
    cap->tps = r->rows[q].tg_total;
    cap->needed_share = tokens_out_day / (cap->tps * 86400.0);
done:
    free(r);
    return rc;
}
