/* Layer helpers shared by the forward functions of every architecture. */
#include "model/model_internal.h"

#include "kernels/kernels.h"

#include <math.h>

void layer_embed(const struct model *m, const int32_t *tokens, int n, float *x)
{
    for (int t = 0; t < n; t++)
        op_get_row(&m->tok_embd, tokens[t], x + (size_t)t * (size_t)m->hp.n_embd);
}

void layer_norm_rows(struct model_ctx *c, const struct pb_tensor *w, const float *x, float *xb, int n)
{
    op_rmsnorm_rows(c->pool, xb, x, w->data, n, c->m->hp.n_embd, c->m->hp.rms_eps);
}

/* rows[t] += bias for n rows of len (no-op for an absent bias). */
static void add_bias(float *rows, const struct pb_tensor *bias, int n, int64_t len)
{
    if (!bias->data)
        return;
    for (int t = 0; t < n; t++)
        op_add(rows + (size_t)t * len, bias->data, len);
}

/* Per-head RMS norm (Qwen3's q_norm / k_norm); no-op when absent. */
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

int layer_attention(struct model_ctx *c, int l, int n, pb_err *err)
{
    const struct model *m = c->m;
    const struct model_hparams *hp = &m->hp;
    const struct layer_weights *lw = &m->layers[l];
    const int H = (int)hp->n_head, KV = (int)hp->n_head_kv, D = (int)hp->head_dim;
    const int64_t q_dim = (int64_t)H * D, kv_dim = (int64_t)KV * D;
    int rc;

    const struct pb_tensor *w[3] = {&lw->wq, &lw->wk, &lw->wv};
    float *y[3] = {c->q, c->k_new, c->v_new};
    if ((rc = op_matmul_n(c->pool, 3, w, c->xb, n, y, c->act, err)))
        return rc;
    add_bias(c->q, &lw->bq, n, q_dim);
    add_bias(c->k_new, &lw->bk, n, kv_dim);
    add_bias(c->v_new, &lw->bv, n, kv_dim);
    norm_heads(c->q, &lw->q_norm, n, H, D, hp->rms_eps);
    norm_heads(c->k_new, &lw->k_norm, n, KV, D, hp->rms_eps);
    for (int s = 0; s < c->n_segs; s++) {
        const struct ctx_seg *sg = &c->segs[s];
        struct kv_cache *kv = &c->kv[sg->seq];
        float *q = c->q + (size_t)sg->off * (size_t)q_dim;
        float *k = c->k_new + (size_t)sg->off * (size_t)kv_dim, *v = c->v_new + (size_t)sg->off * (size_t)kv_dim;
        op_rope_rows(c->pool, q, sg->n, (size_t)q_dim, H, D, sg->pos0, &m->rope);
        op_rope_rows(c->pool, k, sg->n, (size_t)kv_dim, KV, D, sg->pos0, &m->rope);
        kv_store(kv, l, sg->pos0, sg->n, k, v);
        c->attn[s] = (struct kern_attn_args){
            .q = q,
            .k = kv_k(kv, l),
            .v = kv_v(kv, l),
            .kv_type = kv_type_pb(kv->type),
            .kv_row_bytes = kv->row_bytes,
            .out = c->att + (size_t)sg->off * (size_t)q_dim,
            .n_tok = sg->n,
            .n_head = H,
            .n_head_kv = KV,
            .head_dim = D,
            .pos0 = sg->pos0,
            .scale = 1.0f / sqrtf((float)D),
        };
    }
    op_attention_n(c->pool, c->attn, c->n_segs, c->att_scratch);
    return op_matmul(c->pool, &lw->wo, c->att, n, c->xb, c->act, err);
}

int layer_ffn_swiglu(struct model_ctx *c, int l, int n, pb_err *err)
{
    const struct layer_weights *lw = &c->m->layers[l];
    int rc;
    const struct pb_tensor *w[2] = {&lw->ffn_gate, &lw->ffn_up};
    float *y[2] = {c->gate, c->up};
    if ((rc = op_matmul_n(c->pool, 2, w, c->xb, n, y, c->act, err)))
        return rc;
    op_swiglu(c->pool, c->gate, c->up, (int64_t)n * c->m->hp.n_ff);
    return op_matmul(c->pool, &lw->ffn_down, c->gate, n, c->xb, c->act, err);
}

int layer_logits(struct model_ctx *c, int n, float *logits, pb_err *err)
{
    (void)n;
    const struct model *m = c->m;
    const int64_t E = m->hp.n_embd;
    int k = 0;
    for (int s = 0; s < c->n_segs; s++) {
        const struct ctx_seg *sg = &c->segs[s];
        if (!sg->logits)
            continue;
        op_rmsnorm(c->xb + (size_t)k * (size_t)E, c->x + (size_t)(sg->off + sg->n - 1) * (size_t)E, m->out_norm.data,
                   E, m->hp.rms_eps);
        k++;
    }
    return k ? op_matmul(c->pool, &m->output, c->xb, k, logits, c->act, err) : PB_OK;
}
