/* The rule that picks each tensor's type within a file type's mix.
 *
 * The mixes follow llama.cpp's conventions so that a
 * "Q4_K_M" from plumb is what users expect: the output projection in Q6_K,
 * and in the _M mixes the attention V and FFN down projections of the
 * first and last eighth of the layers (and every third in between) in
 * Q6_K.
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
