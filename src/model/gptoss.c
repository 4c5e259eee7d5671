/* gpt-oss: pre-norm blocks of RMSNorm -> attention (with sinks and an
 * output bias; sliding windows on every other layer) -> residual, then
 * RMSNorm (the file's post_attention_norm) -> a mixture of experts with
 * biases and gpt-oss's clamped SwiGLU, routed by a softmax over the chosen
 * experts' logits -> residual; final RMSNorm and the output projection. */
#include "model/model_internal.h"

int gptoss_forward(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err)
{
    const struct model *m = c->m;
    const int64_t E = m->hp.n_embd;
    int rc;

    layer_embed(m, tokens, n, c->x);
    for (int l = 0; l < (int)m->hp.n_layer; l++) {
        const struct layer_weights *lw = &m->layers[l];
        layer_norm_rows(c, &lw->attn_norm, c->x, c->xb, n);
        if ((rc = layer_attention(c, l, n, err)))
            return rc;
        op_add(c->x, c->xb, (int64_t)n * E);
        layer_norm_rows(c, &lw->attn_post_norm, c->x, c->xb, n);
        if ((rc = layer_ffn_moe(c, l, n, FFN_OAI, err)))
            return rc;
        op_add(c->x, c->xb, (int64_t)n * E);
    }
    return logits ? layer_logits(c, n, logits, err) : PB_OK;
}
