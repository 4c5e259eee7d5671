/* File types (general.file_type): the named mixes a whole model is
 * quantized to, and the rule that picks each tensor's type within a mix.
 *
 * The numbers are the ecosystem's (llama.cpp's LLAMA_FTYPE_*) and are
 * written into files. The mixes follow llama.cpp's conventions so that a
 * "Q4_K_M" from plumb is what users expect: the output projection in Q6_K,
 * and in the _M mixes the attention V and FFN down projections of the
 * first and last eighth of the layers (and every third in between) in
 * Q6_K.
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
    PB_FTYPE_Q4_K_S = 14,
    PB_FTYPE_Q4_K_M = 15,
    PB_FTYPE_Q5_K_S = 16,
    PB_FTYPE_Q5_K_M = 17,
    PB_FTYPE_Q6_K = 18,
    PB_FTYPE_BF16 = 32,
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
    uint32_t n_dims;
    int64_t ne0;        /* row length */
    int layer;          /* block index parsed from "blk.N.", -1 otherwise */
    int n_layer;
    bool is_output;     /* output.weight, or token_embd.weight when tied */
};

/* The type tensor t gets in file type ft. 1-D tensors and non-weights
 * stay F32; a type whose block does not divide the row length falls back
 * to the nearest one that does. */
enum pb_type pb_ftype_tensor_type(enum pb_ftype ft, const struct ftype_tensor *t);

#endif
