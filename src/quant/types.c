#include "quant/types.h"

#include "quant/blocks.h"
#include "quant/quant.h"

#include <strings.h>

/* Block geometry for every id GGUF defines, including the types plumb
 * cannot convert yet (their to_float is NULL), so that files holding them
 * can still be parsed, sized and described. */
static const struct pb_type_traits traits[PB_TYPE_COUNT] = {
    [PB_TYPE_F32] = {"F32", 1, 4, 4, dequant_row_f32, quant_row_f32},
    [PB_TYPE_F16] = {"F16", 1, 2, 2, dequant_row_f16, quant_row_f16},
    [PB_TYPE_Q4_0] = {"Q4_0", QK4_0, sizeof(struct block_q4_0), 2, dequant_row_q4_0, quant_row_q4_0},
    [PB_TYPE_Q4_1] = {"Q4_1", QK4_1, sizeof(struct block_q4_1), 2, dequant_row_q4_1, quant_row_q4_1},
    [PB_TYPE_Q5_0] = {"Q5_0", QK5_0, sizeof(struct block_q5_0), 2, dequant_row_q5_0, quant_row_q5_0},
    [PB_TYPE_Q5_1] = {"Q5_1", QK5_1, sizeof(struct block_q5_1), 2, dequant_row_q5_1, quant_row_q5_1},
    [PB_TYPE_Q8_0] = {"Q8_0", QK8_0, sizeof(struct block_q8_0), 2, dequant_row_q8_0, quant_row_q8_0},
    [PB_TYPE_Q8_1] = {"Q8_1", QK8_1, sizeof(struct block_q8_1), 2, dequant_row_q8_1, quant_row_q8_1},
    [PB_TYPE_Q2_K] = {"Q2_K", QK_K, sizeof(struct block_q2_K), 2, dequant_row_q2_K, quant_row_q2_K},
    [PB_TYPE_Q3_K] = {"Q3_K", QK_K, sizeof(struct block_q3_K), 2, dequant_row_q3_K, quant_row_q3_K},
    [PB_TYPE_Q4_K] = {"Q4_K", QK_K, sizeof(struct block_q4_K), 2, dequant_row_q4_K, quant_row_q4_K},
    [PB_TYPE_Q5_K] = {"Q5_K", QK_K, sizeof(struct block_q5_K), 2, dequant_row_q5_K, quant_row_q5_K},
    [PB_TYPE_Q6_K] = {"Q6_K", QK_K, sizeof(struct block_q6_K), 2, dequant_row_q6_K, quant_row_q6_K},
    [PB_TYPE_Q8_K] = {"Q8_K", QK_K, sizeof(struct block_q8_K), 4, dequant_row_q8_K, quant_row_q8_K},
    [PB_TYPE_IQ2_XXS] = {"IQ2_XXS", QK_K, 66, 2, NULL, NULL},
    [PB_TYPE_IQ2_XS] = {"IQ2_XS", QK_K, 74, 2, NULL, NULL},
    [PB_TYPE_IQ3_XXS] = {"IQ3_XXS", QK_K, 98, 2, NULL, NULL},
    [PB_TYPE_IQ1_S] = {"IQ1_S", QK_K, 50, 2, NULL, NULL},
    [PB_TYPE_IQ4_NL] = {"IQ4_NL", QK4_NL, sizeof(struct block_iq4_nl), 2, dequant_row_iq4_nl, quant_row_iq4_nl},
    [PB_TYPE_IQ3_S] = {"IQ3_S", QK_K, 110, 2, NULL, NULL},
    [PB_TYPE_IQ2_S] = {"IQ2_S", QK_K, 82, 2, NULL, NULL},
    [PB_TYPE_IQ4_XS] = {"IQ4_XS", QK_K, sizeof(struct block_iq4_xs), 2, dequant_row_iq4_xs, quant_row_iq4_xs},
    [PB_TYPE_I8] = {"I8", 1, 1, 1, NULL, NULL},
    [PB_TYPE_I16] = {"I16", 1, 2, 2, NULL, NULL},
    [PB_TYPE_I32] = {"I32", 1, 4, 4, NULL, NULL},
    [PB_TYPE_I64] = {"I64", 1, 8, 8, NULL, NULL},
    [PB_TYPE_F64] = {"F64", 1, 8, 8, NULL, NULL},
    [PB_TYPE_IQ1_M] = {"IQ1_M", QK_K, 56, 1, NULL, NULL},
    [PB_TYPE_BF16] = {"BF16", 1, 2, 2, dequant_row_bf16, quant_row_bf16},
    [PB_TYPE_TQ1_0] = {"TQ1_0", QK_K, 54, 2, NULL, NULL},
    [PB_TYPE_TQ2_0] = {"TQ2_0", QK_K, 66, 2, NULL, NULL},
    [PB_TYPE_MXFP4] = {"MXFP4", QK_MXFP4, sizeof(struct block_mxfp4), 1, dequant_row_mxfp4, quant_row_mxfp4},
    [PB_TYPE_NVFP4] = {"NVFP4", 64, 36, 1, NULL, NULL},
    [PB_TYPE_Q1_0] = {"Q1_0", 128, 18, 2, NULL, NULL},
};

const struct pb_type_traits *pb_type_get(uint32_t t)
{
    if (t >= PB_TYPE_COUNT || !traits[t].name)
        return NULL;
    return &traits[t];
}

const char *pb_type_name(uint32_t t)
{
    const struct pb_type_traits *tr = pb_type_get(t);
    return tr ? tr->name : "unknown";
}

bool pb_type_from_name(const char *name, enum pb_type *out)
{
    for (int t = 0; t < PB_TYPE_COUNT; t++) {
        if (traits[t].name && strcasecmp(traits[t].name, name) == 0) {
            *out = (enum pb_type)t;
            return true;
        }
    }
    return false;
}

size_t pb_row_size(enum pb_type t, int64_t n)
{
    const struct pb_type_traits *tr = pb_type_get((uint32_t)t);
    return tr ? (size_t)(n / tr->block) * tr->size : 0;
}

bool pb_type_is_quantized(enum pb_type t)
{
    const struct pb_type_traits *tr = pb_type_get((uint32_t)t);
    return tr && tr->block > 1;
}
