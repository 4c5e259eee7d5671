/* Layer helpers shared by the forward functions of every architecture. */
#include "model/model_internal.h"

#include "base/sys.h"
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

/* A tile of keys lies in one cache, shared or own: the kernels then read
 * it in one piece. */
_Static_assert(KV_BLOCK % KERN_ATTN_TILE == 0, "shared KV blocks are whole attention tiles");

double layer_timed(struct model_ctx *c, enum pb_part part, double t0)
{
    const double now = sys_now();
    c->t_part[part] += now - t0;
    return now;
}

int layer_matmul_tasks(struct model_ctx *c, enum pb_part part, int n, const struct op_mm_task *tasks, pb_err *err)
{
    const double t0 = sys_now();
    double quantize = 0;
    const int rc = op_matmul_tasks_timed(c->pool, n, tasks, c->act, &quantize, err);
    c->t_part[part] += sys_now() - t0 - quantize;
    c->t_part[PB_PART_QUANTIZE] += quantize;
    return rc;
}

int layer_matmul_n(struct model_ctx *c, enum pb_part part, int n, const struct pb_tensor *const *w, const float *x,
                   int n_tok, float *const *y, pb_err *err)
{
    struct op_mm_task t[OP_MATMUL_MAX];
    if (n < 1 || n > OP_MATMUL_MAX)
        return pb_fail(err, PB_EINVAL, "layer_matmul_n: %d matrices (1..%d)", n, OP_MATMUL_MAX);
    for (int i = 0; i < n; i++)
        t[i] = (struct op_mm_task){.w = w[i], .x = x, .n_tok = n_tok, .y = y[i]};
    return layer_matmul_tasks(c, part, n, t, err);
}

int layer_matmul(struct model_ctx *c, enum pb_part part, const struct pb_tensor *w, const float *x, int n_tok,
                 float *y, pb_err *err)
{
    return layer_matmul_n(c, part, 1, &w, x, n_tok, &y, err);
}

/* Row `id` of token_embd into out, read through the file rather than the
 * mapping. Touching the mapping brings in a large page-cache folio per
 * token (hundreds of KiB each) where one row is wanted: a 512-token prompt
 * mapped 275 MiB of gemma-3's tied table into the process, and prompts of
 * 128 and 512 tokens 31 MiB of qwen3-30b-a3b's untied one. A failed read
 * falls back to the mapping, which still holds the row (also where a tied
 * table's pages were evicted after repacking). */
static void embed_row(const struct model *m, int32_t id, float *out)
{
    const struct pb_tensor *t = &m->tok_embd;
    const uint8_t *src = (const uint8_t *)t->data + (size_t)id * t->row_bytes;
    uint8_t buf[1 << 16];
    if (t->row_bytes <= sizeof buf && gguf_read_at(m->file, src, t->row_bytes, buf) == 0)
        pb_type_get(t->type)->to_float(buf, out, t->ne[0]);
    else
        op_get_row(t, id, out);
}

void layer_embed(struct model_ctx *c, const int32_t *tokens, int n, float *x)
{
    const struct model *m = c->m;
    const double t0 = sys_now();
    const int64_t E = m->hp.n_embd;
    for (int t = 0; t < n; t++) {
        float *row = x + (size_t)t * (size_t)E;
        embed_row(m, tokens[t], row);
        if (m->embd_scale != 1.0f)
            for (int64_t i = 0; i < E; i++)
                row[i] *= m->embd_scale;
    }
    layer_timed(c, PB_PART_EMBED, t0);
}

void layer_norm_rows(struct model_ctx *c, const struct pb_tensor *w, const float *x, float *xb, int n)
{
    const double t0 = sys_now();
    op_rmsnorm_rows(c->pool, xb, x, w->data, n, c->m->hp.n_embd, c->m->hp.rms_eps);
    layer_timed(c, PB_PART_NORM, t0);
}

/* rows[t] += bias for n rows of len (no-op for an absent bias). */
static void add_bias(float *rows, const struct pb_tensor *bias, int n, int64_t len)
{
    if (!bias->data)
        return;
    for (int t = 0; t < n; t++)
        op_add(rows + (size_t)t * len, bias->data, len);
}

/* Per-head RMS norm (Qwen3's and Gemma 3's q_norm / k_norm); no-op when absent. */
static void norm_heads(float *rows, const struct pb_tensor *w, int n, int n_head, int64_t head_dim, float eps)
{
    if (!w->data)
        return;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < n_head; h++) {
            float *v = rows + ((size_t)t * n_head + h) * head_dim;
            op_rmsnorm(v, v, w->data, head_dim, eps);
        }
}

/* The angles of the pass's rows for rope[which], made once per pass. */
static const float *rope_angles(struct model_ctx *c, int which)
{
    const struct rope_params *rp = &c->rope[which];
    float *cs = c->rope_cs[which];
    if (!c->rope_ready[which]) {
        for (int s = 0; s < c->n_segs; s++)
            for (int r = 0; r < c->segs[s].n; r++)
                op_rope_angles(c->segs[s].pos0 + r, rp, cs + (size_t)(c->segs[s].off + r) * (size_t)rp->n_rot);
        c->rope_ready[which] = true;
    }
    return cs;
}

/* Stores the batch's rows [r0, r1) of keys and values (c->k_new, c->v_new)
 * in their sequences' caches at layer l (each thread its rows, after
 * rotating them). */
struct store_rows {
    struct model_ctx *c;
    int l;
};

static void store_rows(void *arg, int r0, int r1)
{
    const struct store_rows *st = arg;
    struct model_ctx *c = st->c;
    const size_t kv_dim = (size_t)(c->m->hp.n_head_kv * c->m->hp.head_dim);
    for (int s = 0; s < c->n_segs; s++) {
        const struct ctx_seg *sg = &c->segs[s];
        const int a = r0 > sg->off ? r0 : sg->off, b = r1 < sg->off + sg->n ? r1 : sg->off + sg->n;
        if (a < b)
            kv_store(&c->kv[sg->seq], st->l, sg->pos0 + (a - sg->off), b - a, c->k_new + (size_t)a * kv_dim,
                     c->v_new + (size_t)a * kv_dim);
    }
}

int layer_attention(struct model_ctx *c, int l, int n, pb_err *err)
{
    const struct model *m = c->m;
    const struct model_hparams *hp = &m->hp;
    const struct layer_weights *lw = &m->layers[l];
    const int H = (int)hp->n_head, KV = (int)hp->n_head_kv, D = (int)hp->head_dim;
    const int64_t q_dim = (int64_t)H * D, kv_dim = (int64_t)KV * D;
    const bool swa = model_layer_is_swa(hp, l);
    const struct rope_params *rope = &c->rope[swa];
    int rc;

    const struct pb_tensor *w[3] = {&lw->wq, &lw->wk, &lw->wv};
    float *y[3] = {c->q, c->k_new, c->v_new};
    if ((rc = layer_matmul_n(c, PB_PART_QKV, 3, w, c->xb, n, y, err)))
        return rc;
    add_bias(c->q, &lw->bq, n, q_dim);
    add_bias(c->k_new, &lw->bk, n, kv_dim);
    add_bias(c->v_new, &lw->bv, n, kv_dim);
    double t = sys_now();
    norm_heads(c->q, &lw->q_norm, n, H, D, hp->rms_eps);
    norm_heads(c->k_new, &lw->k_norm, n, KV, D, hp->rms_eps);
    t = layer_timed(c, PB_PART_NORM, t);
    const bool rotate = !(m->arch->needs & ARCH_ENCODER); /* encoders learn their positions */
    struct store_rows st = {c, l};
    op_rope_qk_rows(c->pool, c->q, H, c->k_new, KV, D, n, rotate ? rope_angles(c, swa) : NULL, rope, store_rows,
                    &st);
    for (int s = 0; s < c->n_segs; s++) {
        const struct ctx_seg *sg = &c->segs[s];
        struct kv_cache *kv = &c->kv[sg->seq];
        float *q = c->q + (size_t)sg->off * (size_t)q_dim;
        c->attn[s] = (struct kern_attn_args){
            .q = q,
            .k = kv_k(kv, l),
            .v = kv_v(kv, l),
            .k_shared = kv->shared ? kv_k(kv->shared, l) : NULL,
            .v_shared = kv->shared ? kv_v(kv->shared, l) : NULL,
            .n_shared = kv_layer_shared(kv, l),
            .kv_type = kv_type_pb(kv->type),
            .kv_row_bytes = kv->row_bytes,
            .out = c->att + (size_t)sg->off * (size_t)q_dim,
            .n_tok = sg->n,
            .n_head = H,
            .n_head_kv = KV,
            .head_dim = D,
            .pos0 = sg->pos0,
            .scale = m->attn_scale,
            .window = swa ? hp->n_swa : 0,
            .kv_cap = kv->cap[l],
            .softcap = hp->attn_softcap,
            .sinks = lw->sinks.data,
            .non_causal = !hp->causal,
        };
    }
    t = layer_timed(c, PB_PART_ROPE_KV, t);
    op_attention_n(c->pool, c->attn, c->n_segs, c->att_scratch);
    layer_timed(c, PB_PART_ATTENTION, t);
    if ((rc = layer_matmul(c, PB_PART_ATTN_OUT, &lw->wo, c->att, n, c->xb, err)))
        return rc;
    add_bias(c->xb, &lw->bo, n, hp->n_embd);
    return PB_OK;
}

/* gpt-oss's constants for its clamped SwiGLU (fixed in the model, not in
 * the file). */
#define OAI_ALPHA 1.702f
#define OAI_LIMIT 7.0f

/* g = act(g) * u over n elements. */
static void activate(struct model_ctx *c, enum ffn_act act, float *g, const float *u, int64_t n)
{
    const double t0 = sys_now();
    switch (act) {
    case FFN_SILU: op_swiglu(c->pool, g, u, n); break;
    case FFN_GELU: op_geglu(c->pool, g, u, n); break;
    case FFN_OAI: op_swiglu_oai(g, u, n, OAI_ALPHA, OAI_LIMIT); break;
    }
    layer_timed(c, PB_PART_FFN_ACT, t0);
}

int layer_ffn(struct model_ctx *c, int l, int n, enum ffn_act act, pb_err *err)
{
    const struct layer_weights *lw = &c->m->layers[l];
    const size_t E = (size_t)c->m->hp.n_embd;
    const struct pb_tensor *w[2] = {&lw->ffn_gate, &lw->ffn_up};
    float *y[2] = {c->gate, c->up};
    for (int t0 = 0; t0 < n; t0 += FFN_ROWS) { /* xb's rows in pieces, each replaced by its output */
        const int k = n - t0 < FFN_ROWS ? n - t0 : FFN_ROWS;
        float *xb = c->xb + (size_t)t0 * E;
        int rc = layer_matmul_n(c, PB_PART_FFN_UP, 2, w, xb, k, y, err);
        if (rc)
            return rc;
        activate(c, act, c->gate, c->up, (int64_t)k * c->m->hp.n_ff);
        if ((rc = layer_matmul(c, PB_PART_FFN_DOWN, &lw->ffn_down, c->gate, k, xb, err)))
            return rc;
    }
    return PB_OK;
}

/* The experts token t uses and their weights, from its router logits:
 * softmax over all experts, the best k, renormalized (Qwen3-MoE, Mixtral);
 * or, for gpt-oss, the best k logits and a softmax over those. Ties go to
 * the lower expert. */
static void route(const float *logits, int64_t n_expert, int k, bool softmax_selected, int32_t *sel, float *w)
{
    for (int j = 0; j < k; j++) {
        int32_t best = -1;
        for (int32_t e = 0; e < (int32_t)n_expert; e++) {
            bool taken = false;
            for (int i = 0; i < j && !taken; i++)
                taken = sel[i] == e;
            if (!taken && (best < 0 || logits[e] > logits[best]))
                best = e;
        }
        sel[j] = best;
    }
    float mx = softmax_selected ? logits[sel[0]] : -INFINITY;
    if (!softmax_selected)
        for (int64_t e = 0; e < n_expert; e++)
            mx = logits[e] > mx ? logits[e] : mx;
    double all = 0;
    for (int64_t e = 0; !softmax_selected && e < n_expert; e++)
        all += (double)expf(logits[e] - mx);
    float sum = 0;
    for (int j = 0; j < k; j++) {
        w[j] = softmax_selected ? expf(logits[sel[j]] - mx) : (float)((double)expf(logits[sel[j]] - mx) / all);
        sum += w[j];
    }
    /* renormalized over the chosen (the bound is llama.cpp's, against 0) */
    sum = sum > 6.103515625e-5f ? sum : 6.103515625e-5f;
    for (int j = 0; j < k; j++)
        w[j] /= sum;
}

int layer_ffn_moe(struct model_ctx *c, int l, int n, enum ffn_act act, pb_err *err)
{
    const struct model *m = c->m;
    const struct model_hparams *hp = &m->hp;
    const struct layer_weights *lw = &m->layers[l];
    const int64_t E = hp->n_embd, F = hp->n_ff_exp, X = hp->n_expert;
    const int k = (int)hp->n_expert_used;
    int rc;

    /* routing */
    if ((rc = layer_matmul(c, PB_PART_ROUTER, &lw->ffn_gate_inp, c->xb, n, c->moe_logits, err)))
        return rc;
    const double t0 = sys_now();
    for (int t = 0; t < n; t++) {
        float *lg = c->moe_logits + (size_t)t * (size_t)X;
        if (lw->ffn_gate_inp_b.data)
            op_add(lg, lw->ffn_gate_inp_b.data, X);
        route(lg, X, k, act == FFN_OAI, c->moe_sel + (size_t)t * k, c->moe_w + (size_t)t * k);
    }
    layer_timed(c, PB_PART_ROUTER, t0);

    /* the (token, choice) pairs grouped by expert, tokens in order: each
     * expert's rows are one matrix-matrix product over its own tokens,
     * chosen from xb by index (each token's row is quantized once) */
    int n_tasks = 0, row = 0;
    for (int64_t e = 0; e < X; e++) {
        const int first = row;
        for (int t = 0; t < n; t++)
            for (int j = 0; j < k; j++)
                if (c->moe_sel[t * k + j] == e) {
                    c->moe_slot[t * k + j] = row;
                    c->moe_rows[row++] = t;
                }
        if (row == first)
            continue; /* no token chose it: its weights are not read */
        const int32_t *rows = c->moe_rows + first;
        c->moe_tasks[n_tasks++] = (struct op_mm_task){.w = &lw->gate_exps[e], .x = c->xb, .n_tok = row - first,
                                                      .y = c->moe_g + (size_t)first * F, .rows = rows, .n_x = n};
        c->moe_tasks[n_tasks++] = (struct op_mm_task){.w = &lw->up_exps[e], .x = c->xb, .n_tok = row - first,
                                                      .y = c->moe_u + (size_t)first * F, .rows = rows, .n_x = n};
    }
    if ((rc = layer_matmul_tasks(c, PB_PART_EXPERTS, n_tasks, c->moe_tasks, err)))
        return rc;

    /* biases and the activation, then the down products into moe_x */
    for (int t = 0; t < n; t++)
        for (int j = 0; j < k; j++) {
            const int r = c->moe_slot[t * k + j], e = c->moe_sel[t * k + j];
            if (lw->gate_exps_b.data)
                op_add(c->moe_g + (size_t)r * F, (const float *)lw->gate_exps_b.data + (size_t)e * F, F);
            if (lw->up_exps_b.data)
                op_add(c->moe_u + (size_t)r * F, (const float *)lw->up_exps_b.data + (size_t)e * F, F);
        }
    activate(c, act, c->moe_g, c->moe_u, (int64_t)row * F);
    for (int i = 0; i < n_tasks; i += 2) {
        const struct op_mm_task *gt = &c->moe_tasks[i];
        const int first = (int)((gt->y - c->moe_g) / F);
        const int64_t e = gt->w - lw->gate_exps;
        c->moe_tasks[i / 2] =
            (struct op_mm_task){.w = &lw->down_exps[e], .x = gt->y, .n_tok = gt->n_tok, .y = c->moe_x + (size_t)first * E};
    }
    if ((rc = layer_matmul_tasks(c, PB_PART_EXPERTS, n_tasks / 2, c->moe_tasks, err)))
        return rc;

    /* each token's experts, weighted, summed in the order they were chosen */
    for (int t = 0; t < n; t++) {
        float *out = c->xb + (size_t)t * (size_t)E;
        for (int j = 0; j < k; j++) {
            const int e = c->moe_sel[t * k + j];
            float *y = c->moe_x + (size_t)c->moe_slot[t * k + j] * (size_t)E;
            if (lw->down_exps_b.data)
                op_add(y, (const float *)lw->down_exps_b.data + (size_t)e * E, E);
            const float w = c->moe_w[t * k + j];
            for (int64_t i = 0; i < E; i++)
                out[i] = j == 0 ? y[i] * w : out[i] + y[i] * w;
        }
    }
    return PB_OK;
}

int layer_logits(struct model_ctx *c, int n, float *logits, pb_err *err)
{
    (void)n;
    const struct model *m = c->m;
    const int64_t E = m->hp.n_embd;
    int k = 0, rc;
    const double t0 = sys_now();
    for (int s = 0; s < c->n_segs; s++) {
        const struct ctx_seg *sg = &c->segs[s];
        if (!sg->logits)
            continue;
        op_rmsnorm(c->xb + (size_t)k * (size_t)E, c->x + (size_t)(sg->off + sg->n - 1) * (size_t)E, m->out_norm.data,
                   E, m->hp.rms_eps);
        k++;
    }
    layer_timed(c, PB_PART_NORM, t0);
    if (!k || (rc = layer_matmul(c, PB_PART_OUTPUT, &m->output, c->xb, k, logits, err)))
        return k ? rc : PB_OK;
    if (m->final_softcap > 0)
        op_softcap(logits, (int64_t)k * m->hp.n_vocab, m->final_softcap);
    return PB_OK;
}
