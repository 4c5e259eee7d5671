/* The rule that picks each tensor's type within a file type's mix.
 *
 * The mixes follow llama-quantize's rules so that a
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

#include "plumb/base.h"
#include "quant/types.h"

#include <stdbool.h>
#include <stdint.h>

/* enum pb_ftype and its names are public: plumb/base.h. */

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
