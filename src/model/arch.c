/* The architectures plumb runs. Adding one is a row here, a forward
 * function when its block structure is new (usually a few lines over the
 * layer helpers) and, when it has new tensors, their names in model.c's
 * loader.
 *
 * The Llama family shares one pre-norm block: RMSNorm -> attention ->
 * residual, RMSNorm -> gated FFN -> residual. qwen2 adds biases to the
 * Q/K/V projections, qwen3 normalizes each head of Q and K; both rotate
 * NeoX-style. A mixture of experts replaces the FFN: qwen3moe always,
 * llama when the file has expert_count (Mixtral's layout). phi3 fuses Q/K/V
 * and gate/up into single tensors (bound as views of their rows) and may
 * carry LongRoPE factors. The layer helpers apply biases, head norms,
 * windows and experts when present, so all of them share llama_forward;
 * the `needs` flags make their loader insist on those tensors.
 *
 * gemma2 and gemma3 (gemma_forward) add norms after each block, GELU-gated
 * FFNs, embeddings scaled by sqrt(n_embd) and sliding-window layers (every
 * other layer; five of six), gemma2 soft-caps, gemma3 normalizes Q/K heads
 * and gives its local layers their own RoPE base. gpt-oss keeps Llama's
 * block (llama_forward) with attention sinks, biases, a mixture of
 * clamped-SwiGLU experts and sliding windows on every other layer.
 *
 * bert (bert_forward) is an encoder: learned position and token-type
 * embeddings, LayerNorm after each residual, a plain GELU FFN, biases
 * everywhere, attention both ways; it makes embeddings, not logits. */
#include "model/model_internal.h"

#include <stdio.h>
#include <string.h>

static const struct arch_desc archs[] = {
    {"llama", ROPE_NORM, 0, 0, 0, llama_forward},
    {"qwen2", ROPE_NEOX, ARCH_QKV_BIAS, 0, 0, llama_forward},
    {"qwen3", ROPE_NEOX, ARCH_QK_NORM, 0, 0, llama_forward},
    {"qwen3moe", ROPE_NEOX, ARCH_QK_NORM | ARCH_MOE, 0, 0, llama_forward},
    {"phi3", ROPE_NEOX, 0, 0, 0, llama_forward},
    {"gemma2", ROPE_NEOX, ARCH_POST_NORMS | ARCH_EMBD_SCALE | ARCH_SOFTCAP, 2, 0, gemma_forward},
    {"gemma3", ROPE_NEOX, ARCH_POST_NORMS | ARCH_EMBD_SCALE | ARCH_QK_NORM | ARCH_SWA_ROPE, 6, 10000.0f,
     gemma_forward},
    {"gpt-oss", ROPE_NEOX, ARCH_MOE | ARCH_OAI, 2, 0, llama_forward},
    {"bert", ROPE_NORM, ARCH_ENCODER, 0, 0, bert_forward},
};

const struct arch_desc *arch_find(const char *name)
{
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strcmp(archs[i].name, name) == 0)
            return &archs[i];
    return NULL;
}

const char *arch_names(char *buf, size_t size)
{
    size_t o = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0] && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? ", " : "", archs[i].name);
    return buf;
}

bool model_arch_supported(const char *arch)
{
    return arch_find(arch) != NULL;
}
