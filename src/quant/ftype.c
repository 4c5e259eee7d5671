#include "quant/ftype.h"

#include <string.h>
#include <strings.h>

static const struct {
    int64_t id;
    const char *name;
    bool writable;
    enum pb_type base;
} ftypes[] = {
    {0, "F32", true, PB_TYPE_F32},        {1, "F16", true, PB_TYPE_F16},
    {2, "Q4_0", true, PB_TYPE_Q4_0},      {3, "Q4_1", true, PB_TYPE_Q4_1},
    {7, "Q8_0", true, PB_TYPE_Q8_0},      {8, "Q5_0", true, PB_TYPE_Q5_0},
    {9, "Q5_1", true, PB_TYPE_Q5_1},      {10, "Q2_K", true, PB_TYPE_Q2_K},
    {11, "Q3_K_S", true, PB_TYPE_Q3_K},   {12, "Q3_K_M", true, PB_TYPE_Q3_K},
    {13, "Q3_K_L", true, PB_TYPE_Q3_K},   {14, "Q4_K_S", true, PB_TYPE_Q4_K},
    {15, "Q4_K_M", true, PB_TYPE_Q4_K},   {16, "Q5_K_S", true, PB_TYPE_Q5_K},
    {17, "Q5_K_M", true, PB_TYPE_Q5_K},   {18, "Q6_K", true, PB_TYPE_Q6_K},
    {19, "IQ2_XXS", false, PB_TYPE_IQ2_XXS}, {20, "IQ2_XS", false, PB_TYPE_IQ2_XS},
    {21, "Q2_K_S", false, PB_TYPE_Q2_K},  {22, "IQ3_XS", false, PB_TYPE_IQ3_S},
    {23, "IQ3_XXS", false, PB_TYPE_IQ3_XXS}, {24, "IQ1_S", false, PB_TYPE_IQ1_S},
    {25, "IQ4_NL", true, PB_TYPE_IQ4_NL}, {26, "IQ3_S", false, PB_TYPE_IQ3_S},
    {27, "IQ3_M", false, PB_TYPE_IQ3_S},  {28, "IQ2_S", false, PB_TYPE_IQ2_S},
    {29, "IQ2_M", false, PB_TYPE_IQ2_S},  {30, "IQ4_XS", true, PB_TYPE_IQ4_XS},
    {31, "IQ1_M", false, PB_TYPE_IQ1_M},  {32, "BF16", true, PB_TYPE_BF16},
    {36, "TQ1_0", false, PB_TYPE_TQ1_0},  {37, "TQ2_0", false, PB_TYPE_TQ2_0},
    {38, "MXFP4_MOE", true, PB_TYPE_MXFP4},
};
#define N_FTYPES (sizeof ftypes / sizeof ftypes[0])

const char *pb_ftype_name(int64_t ftype)
{
    for (size_t i = 0; i < N_FTYPES; i++)
        if (ftypes[i].id == ftype)
            return ftypes[i].name;
    return NULL;
}

bool pb_ftype_from_name(const char *name, enum pb_ftype *out)
{
    for (size_t i = 0; i < N_FTYPES; i++) {
        if (ftypes[i].writable && strcasecmp(ftypes[i].name, name) == 0) {
            *out = (enum pb_ftype)ftypes[i].id;
            return true;
        }
    }
    return false;
}

const char *pb_ftype_names(void)
{
    return "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, "
           "Q5_K_M, Q6_K, IQ4_NL, IQ4_XS, MXFP4_MOE";
}

static enum pb_type base_type(enum pb_ftype ft)
{
    for (size_t i = 0; i < N_FTYPES; i++)
        if (ftypes[i].id == (int64_t)ft)
            return ftypes[i].base;
    return PB_TYPE_F32;
}

/* Layers that get more bits in the _M mixes: the first and last eighth,
 * and every third layer in between. */
static bool more_bits(int layer, int n_layer)
{
    return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A type whose block divides the row length, as llama-quantize falls
 * back: Q2_K/Q3_K to Q4_0, Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, the
 * 256-element IQ types (which plumb only sizes, for planning, apart from
 * IQ4_XS) to IQ4_NL; one step only, then F16. */
static enum pb_type fit_row(enum pb_type t, int64_t ne0)
{
    if (ne0 % pb_type_get(t)->block == 0)
        return t;
    switch (t) {
    case PB_TYPE_Q2_K:
    case PB_TYPE_Q3_K: t = PB_TYPE_Q4_0; break;
    case PB_TYPE_Q4_K: t = PB_TYPE_Q5_0; break;
    case PB_TYPE_Q5_K: t = PB_TYPE_Q5_1; break;
    case PB_TYPE_Q6_K: t = PB_TYPE_Q8_0; break;
    case PB_TYPE_IQ2_S:
    case PB_TYPE_IQ3_S:
    case PB_TYPE_IQ4_XS: t = PB_TYPE_IQ4_NL; break;
    default: return PB_TYPE_F16;
    }
    return ne0 % pb_type_get(t)->block == 0 ? t : PB_TYPE_F16;
}

/* The per-tensor rules of llama-quantize for the low-bit mixes (Q2_K,
 * Q3_K_S/M/L, IQ4_NL, IQ4_XS): the type of a tensor that is not the
 * output, from its role, its layer and the model's attention grouping
 * and experts; base when no rule applies. */
static enum pb_type low_bit_rule(enum pb_ftype ft, const struct ftype_model *m, const struct ftype_tensor *t,
                                 enum pb_type base)
{
    const bool moe8 = m->n_expert == 8, iq4 = ft == PB_FTYPE_IQ4_NL || ft == PB_FTYPE_IQ4_XS;
    const int gqa = m->n_gqa;
    if (has_suffix(t->name, ".attn_v.weight")) {
        enum pb_type type = base;
        if (ft == PB_FTYPE_Q2_K)
            type = gqa >= 4 ? PB_TYPE_Q4_K : PB_TYPE_Q3_K;
        else if (ft == PB_FTYPE_Q3_K_M)
            type = t->layer < 2 ? PB_TYPE_Q5_K : PB_TYPE_Q4_K;
        else if (ft == PB_FTYPE_Q3_K_L)
            type = PB_TYPE_Q5_K;
        else if (iq4 && gqa >= 4)
            type = PB_TYPE_Q5_K;
        return moe8 ? PB_TYPE_Q8_0 : type;
    }
    if (has_suffix(t->name, ".attn_k.weight"))
        return moe8 ? PB_TYPE_Q8_0 : base;
    if (strstr(t->name, ".ffn_down")) {
        if (ft == PB_FTYPE_Q2_K)
            return PB_TYPE_Q3_K;
        if (ft == PB_FTYPE_Q3_K_M)
            return t->layer < t->n_layer / 16 ? PB_TYPE_Q5_K : PB_TYPE_Q4_K;
        if (ft == PB_FTYPE_Q3_K_L)
            return PB_TYPE_Q5_K;
        if (iq4 && t->layer < t->n_layer / 8) /* no importance matrix */
            return PB_TYPE_Q5_K;
        return base;
    }
    if (has_suffix(t->name, ".attn_output.weight")) {
        if (moe8)
            return ft == PB_FTYPE_Q3_K_L ? base : PB_TYPE_Q5_K;
        return ft == PB_FTYPE_Q2_K ? PB_TYPE_Q3_K
             : ft == PB_FTYPE_Q3_K_M ? PB_TYPE_Q4_K
             : ft == PB_FTYPE_Q3_K_L ? PB_TYPE_Q5_K
             : base;
    }
    if (has_suffix(t->name, ".attn_qkv.weight") && (ft == PB_FTYPE_Q3_K_M || ft == PB_FTYPE_Q3_K_L))
        return PB_TYPE_Q4_K;
    return base;
}

enum pb_type pb_ftype_model_tensor_type(enum pb_ftype ft, const struct ftype_model *m, const struct ftype_tensor *t)
{
    if (t->n_dims < 2 || !has_suffix(t->name, ".weight") || has_suffix(t->name, "ffn_gate_inp.weight"))
        return PB_TYPE_F32;
    enum pb_type base = base_type(ft), type = base;
    if (!pb_type_is_quantized(base))
        return base; /* F32 / F16 / BF16: every matrix */
    if (ft == PB_FTYPE_MXFP4_MOE) /* experts MXFP4, everything else Q8_0 */
        return fit_row(!t->is_output && t->n_dims >= 3 ? PB_TYPE_MXFP4 : PB_TYPE_Q8_0, t->ne0);
    bool mix_m = ft == PB_FTYPE_Q4_K_M || ft == PB_FTYPE_Q5_K_M;
    if (t->is_output) {
        if (t->ne0 % pb_type_get(base)->block != 0)
            type = PB_TYPE_Q8_0;
        else if (base != PB_TYPE_Q8_0)
            type = PB_TYPE_Q6_K;
    } else if (mix_m && t->layer >= 0 &&
               (has_suffix(t->name, ".attn_v.weight") || has_suffix(t->name, ".ffn_down.weight")) &&
               more_bits(t->layer, t->n_layer)) {
        type = PB_TYPE_Q6_K;
    } else if (t->layer >= 0 && (ft == PB_FTYPE_Q2_K || ft == PB_FTYPE_Q3_K_S || ft == PB_FTYPE_Q3_K_M ||
                                 ft == PB_FTYPE_Q3_K_L || ft == PB_FTYPE_IQ4_NL || ft == PB_FTYPE_IQ4_XS)) {
        type = low_bit_rule(ft, m, t, base);
    }
    return fit_row(type, t->ne0);
}

enum pb_type pb_ftype_tensor_type(enum pb_ftype ft, const struct ftype_tensor *t)
{
    const struct ftype_model dense = {0, 0};
    return pb_ftype_model_tensor_type(ft, &dense, t);
}
