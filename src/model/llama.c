/* Llama (and the many models that share its shape: Mistral, SmolLM,
 * Qwen2/3, Qwen3-MoE, Mixtral, Phi-3, gpt-oss): pre-norm blocks of RMSNorm
 * -> attention with RoPE -> residual, RMSNorm -> SwiGLU (or a mixture of
 * SwiGLU experts; gpt-oss's clamped variant) -> residual; final RMSNorm
 * and the output projection. (gpt-oss's sinks, biases and windows are the
 * layer helpers'; its file names the FFN's norm post_attention_norm.) */
#include "model/model_internal.h"

int llama_forward(struct model_ctx *c, const int32_t *tokens, int n, float *logits, pb_err *err)
{
    const struct model *m = c->m;
    const int64_t E = m->hp.n_embd;
    const enum ffn_act act = m->arch->needs & ARCH_OAI ? FFN_OAI : FFN_SILU;
    int rc;

    layer_embed(c, tokens, n, c->x);
    for (int l = 0; l < (int)m->hp.n_layer; l++) {
        const struct layer_weights *lw = &m->layers[l];
        layer_norm_rows(c, &lw->attn_norm, c->x, c->xb, n);
        if ((rc = layer_attention(c, l, n, err)))
            return rc;
        op_add(c->x, c->xb, (int64_t)n * E);
        layer_norm_rows(c, &lw->ffn_norm, c->x, c->xb, n);
        rc = lw->gate_exps ? layer_ffn_moe(c, l, n, act, err) : layer_ffn(c, l, n, act, err);
        if (rc)
            return rc;
        op_add(c->x, c->xb, (int64_t)n * E);
    }
    return logits ? layer_logits(c, n, logits, err) : PB_OK;
}
