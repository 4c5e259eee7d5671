/* Gemma 2 and Gemma 3 (text): embeddings scaled by sqrt(n_embd); each
 * block is RMSNorm -> attention -> RMSNorm of its output -> residual, then
 * RMSNorm -> GELU-gated FFN -> RMSNorm of its output -> residual. The norm
 * weights are stored with Gemma's "1 +" already added, so they multiply
 * as they are. Sliding-window layers, Gemma 2's soft-caps and Gemma 3's
 * Q/K norms and local RoPE base come from the layer helpers and the
 * model's settings (arch.c). */
#include "model/model_internal.h"

int gemma_forward(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err)
{
    const struct model *m = c->m;
    const int64_t E = m->hp.n_embd;
    int rc;

    layer_embed(c, tokens, n, c->x);
    for (int l = 0; l < (int)m->hp.n_layer; l++) {
        const struct layer_weights *lw = &m->layers[l];
        layer_norm_rows(c, &lw->attn_norm, c->x, c->xb, n);
        if ((rc = layer_attention(c, l, n, err)))
            return rc;
        layer_norm_rows(c, &lw->attn_post_norm, c->xb, c->xb, n);
        op_add(c->x, c->xb, (int64_t)n * E);
        layer_norm_rows(c, &lw->ffn_norm, c->x, c->xb, n);
        if ((rc = layer_ffn(c, l, n, FFN_GELU, err)))
            return rc;
        layer_norm_rows(c, &lw->ffn_post_norm, c->xb, c->xb, n);
        op_add(c->x, c->xb, (int64_t)n * E);
    }
    return logits ? layer_logits(c, n, logits, err) : PB_OK;
}
