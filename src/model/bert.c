/* BERT-style encoders (bert): token, position and token-type embeddings
 * summed and LayerNorm-ed; each block self-attention both ways (biases on
 * Q/K/V and the output) -> residual -> LayerNorm, then up -> GELU -> down
 * (biases) -> residual -> LayerNorm. No output head: the final states are
 * pooled into a text's embedding (model_eval_hidden, the engine's
 * embeddings). */
#include "model/model_internal.h"

#include "base/sys.h"

#include <inttypes.h>
#include <string.h>

/* rows[t] += bias for n rows of len. */
static void add_rows(float *rows, const float *bias, int n, int64_t len)
{
    for (int t = 0; t < n; t++)
        op_add(rows + (size_t)t * (size_t)len, bias, len);
}

int bert_forward(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err)
{
    const struct model *m = c->m;
    const struct model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff;
    int rc;
    if (logits)
        return pb_fail(err, PB_EUNSUPPORTED, "a %s model is an encoder: it makes embeddings, not next-token logits",
                       hp->arch);
    float *row = c->xb; /* scratch for one row */
    double t = sys_now();
    for (int s = 0; s < c->n_segs; s++) {
        const struct ctx_seg *sg = &c->segs[s];
        if (sg->pos0 + sg->n > m->pos_embd.ne[1])
            return pb_fail(err, PB_ERANGE, "a text of %" PRId64 " tokens is longer than the %" PRId64
                           " positions the model learned", sg->pos0 + sg->n, m->pos_embd.ne[1]);
        for (int i = 0; i < sg->n; i++) {
            float *x = c->x + (size_t)(sg->off + i) * (size_t)E;
            op_get_row(&m->tok_embd, tokens[sg->off + i], x);
            op_get_row(&m->pos_embd, sg->pos0 + i, row);
            op_add(x, row, E);
            if (m->type_embd.data) { /* every token is of type 0 */
                op_get_row(&m->type_embd, 0, row);
                op_add(x, row, E);
            }
        }
    }
    t = layer_timed(c, PB_PART_EMBED, t);
    op_layernorm_rows(c->x, c->x, m->embd_norm.data, m->embd_norm_b.data, n, E, hp->rms_eps);
    layer_timed(c, PB_PART_NORM, t);
    for (int l = 0; l < (int)hp->n_layer; l++) {
        const struct layer_weights *lw = &m->layers[l];
        memcpy(c->xb, c->x, (size_t)n * (size_t)E * sizeof *c->xb);
        if ((rc = layer_attention(c, l, n, err)))
            return rc;
        op_add(c->x, c->xb, (int64_t)n * E);
        t = sys_now();
        op_layernorm_rows(c->x, c->x, lw->attn_post_norm.data, lw->attn_post_norm_b.data, n, E, hp->rms_eps);
        layer_timed(c, PB_PART_NORM, t);
        for (int t0 = 0; t0 < n; t0 += FFN_ROWS) { /* the hidden buffer holds FFN_ROWS tokens */
            const int k = n - t0 < FFN_ROWS ? n - t0 : FFN_ROWS;
            if ((rc = layer_matmul(c, PB_PART_FFN_UP, &lw->ffn_up, c->x + (size_t)t0 * (size_t)E, k, c->up, err)))
                return rc;
            add_rows(c->up, lw->ffn_up_b.data, k, F);
            t = sys_now();
            op_gelu(c->up, (int64_t)k * F);
            layer_timed(c, PB_PART_FFN_ACT, t);
            if ((rc = layer_matmul(c, PB_PART_FFN_DOWN, &lw->ffn_down, c->up, k, c->xb + (size_t)t0 * (size_t)E, err)))
                return rc;
        }
        add_rows(c->xb, lw->ffn_down_b.data, n, E);
        op_add(c->x, c->xb, (int64_t)n * E);
        t = sys_now();
        op_layernorm_rows(c->x, c->x, lw->ffn_post_norm.data, lw->ffn_post_norm_b.data, n, E, hp->rms_eps);
        layer_timed(c, PB_PART_NORM, t);
    }
    return PB_OK;
}
