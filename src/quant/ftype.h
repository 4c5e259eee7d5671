/* File types (general.file_type): the named mixes a whole model is
 * quantized to, and the rule that picks each tensor's type within a mix.
 *
 * The numbers are the ecosystem's (llama.cpp's LLAMA_FTYPE_*) and are
 * written into files. The mixes follow llama-quantize's rules so that a
 * "Q4_K_M" from plumb is what users expect: the output projection in Q6_K,
 * and in the _M mixes the attention V and FFN down projections of the
 * first and last eighth of the layers (and every third in between) in
 * Q6_K. Q2_K, Q3_K_S/M/L, IQ4_NL, IQ4_XS and MXFP4_MOE take llama-quantize's
 * per-tensor rules in full (those of its rules that depend on the model
 * being a 70B or Falcon excepted); the older K mixes take the rules above
 * only (llama-quantize also gives Q4_K_S's first attention V and FFN down
 * projections Q5_K, and fused QKV projections more bits).
 *
 * Rows whose length is not a multiple of a type's block take another type
 * as llama-quantize does: Q2_K and Q3_K fall back to Q4_0, Q4_K to Q5_0,
 * Q5_K to Q5_1, Q6_K to Q8_0, the 256-element IQ types to IQ4_NL, and a
 * row that fits none of those to F16. IQ4_NL and IQ4_XS are written
 * without an importance matrix.
 */
#ifndef PLUMB_QUANT_FTYPE_H
#define PLUMB_QUANT_FTYPE_H

#include "quant/types.h"

#include <stdbool.h>
#include <stdint.h>

enum pb_ftype {
    PB_FTYPE_F32 = 0,
    PB_FTYPE_F16 = 1,
    PB_FTYPE_Q4_0 = 2,
    PB_FTYPE_Q4_1 = 3,
    PB_FTYPE_Q8_0 = 7,
    PB_FTYPE_Q5_0 = 8,
    PB_FTYPE_Q5_1 = 9,
    PB_FTYPE_Q2_K = 10,
    PB_FTYPE_Q3_K_S = 11,
    PB_FTYPE_Q3_K_M = 12,
    PB_FTYPE_Q3_K_L = 13,
    PB_FTYPE_Q4_K_S = 14,
    PB_FTYPE_Q4_K_M = 15,
    PB_FTYPE_Q5_K_S = 16,
    PB_FTYPE_Q5_K_M = 17,
    PB_FTYPE_Q6_K = 18,
    PB_FTYPE_IQ4_NL = 25,
    PB_FTYPE_IQ4_XS = 30,
    PB_FTYPE_BF16 = 32,
    PB_FTYPE_MXFP4_MOE = 38,
};

/* Name of any known file type number ("Q4_K_M"), or NULL. */
const char *pb_ftype_name(int64_t ftype);

/* The file types plumb can write, by name (case-insensitive). */
bool pb_ftype_from_name(const char *name, enum pb_ftype *out);
/* Comma-separated list of those names, for help and errors. */
const char *pb_ftype_names(void);

/* What a tensor is, for choosing its type. */
struct ftype_tensor {
    const char *name;   /* GGUF tensor name */
    uint32_t n_dims;    /* 3 for the experts of a mixture */
    int64_t ne0;        /* row length */
    int layer;          /* block index parsed from "blk.N.", -1 otherwise */
    int n_layer;
    bool is_output;     /* output.weight, or token_embd.weight when tied */
};

/* What of the whole model the rules look at. */
struct ftype_model {
    int n_gqa;    /* query heads per KV head (0: unknown, taken as 1) */
    int n_expert; /* experts of a mixture (0 or 1: dense) */
};

/* The type tensor t of model m gets in file type ft. 1-D tensors,
 * non-weights and mixture routers stay F32; a type whose block does not
 * divide the row length falls back as above. */
enum pb_type pb_ftype_model_tensor_type(enum pb_ftype ft, const struct ftype_model *m, const struct ftype_tensor *t);
/* The same for a dense model whose attention grouping is not known (the
 * rules that depend on it take it as 1). */
enum pb_type pb_ftype_tensor_type(enum pb_ftype ft, const struct ftype_tensor *t);

#endif
