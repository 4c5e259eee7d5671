/* The architectures plumb runs. Adding one is a row here, a forward
 * function when its block structure is new (usually a few lines over the
 * layer helpers) and, when it has new tensors, their names in model.c's
 * loader.
 *
 * qwen2 and qwen3 share Llama's pre-norm block: qwen2 adds biases to the
 * Q/K/V projections, qwen3 normalizes each head of Q and K; both rotate
 * NeoX-style. The layer helpers apply biases and head norms when present,
 * so they share llama_forward; the `needs` flags make their loader insist
 * on those tensors. */
#include "model/model_internal.h"

#include <stdio.h>
#include <string.h>

static const struct arch_desc archs[] = {
    {"llama", ROPE_NORM, 0, llama_forward},
    {"qwen2", ROPE_NEOX, ARCH_QKV_BIAS, llama_forward},
    {"qwen3", ROPE_NEOX, ARCH_QK_NORM, llama_forward},
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
