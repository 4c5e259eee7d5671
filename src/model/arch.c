/* The architectures plumb runs. Adding one is a row here, a forward
 * function (usually a few lines over the layer helpers) and, when it has
 * new tensors, their names in model.c's loader. */
#include "model/model_internal.h"

#include <string.h>

static const struct arch_desc archs[] = {
    {"llama", ROPE_NORM, llama_forward},
};

const struct arch_desc *arch_find(const char *name)
{
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strcmp(archs[i].name, name) == 0)
            return &archs[i];
    return NULL;
}
