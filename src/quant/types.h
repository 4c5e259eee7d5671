/* Tensor element types as GGUF numbers them, and what plumb knows of each.
 *
 * The enum values are GGUF's (ggml's) type ids and never change: they are
 * written into files. Every id GGUF defines has its block geometry here, so
 * any valid file can be parsed and described; which types can be converted
 * or computed is in the traits (to_float / from_float / dot).
 */
#ifndef PLUMB_QUANT_TYPES_H
#define PLUMB_QUANT_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pb_type {
    PB_TYPE_F32 = 0,
    PB_TYPE_F16 = 1,
    PB_TYPE_Q4_0 = 2,
    PB_TYPE_Q4_1 = 3,
    /* 4, 5: Q4_2, Q4_3, removed from the format */
    PB_TYPE_Q5_0 = 6,
    PB_TYPE_Q5_1 = 7,
    PB_TYPE_Q8_0 = 8,
    PB_TYPE_Q8_1 = 9,
    PB_TYPE_Q2_K = 10,
    PB_TYPE_Q3_K = 11,
    PB_TYPE_Q4_K = 12,
    PB_TYPE_Q5_K = 13,
    PB_TYPE_Q6_K = 14,
    PB_TYPE_Q8_K = 15,
    PB_TYPE_IQ2_XXS = 16,
    PB_TYPE_IQ2_XS = 17,
    PB_TYPE_IQ3_XXS = 18,
    PB_TYPE_IQ1_S = 19,
    PB_TYPE_IQ4_NL = 20,
    PB_TYPE_IQ3_S = 21,
    PB_TYPE_IQ2_S = 22,
    PB_TYPE_IQ4_XS = 23,
    PB_TYPE_I8 = 24,
    PB_TYPE_I16 = 25,
    PB_TYPE_I32 = 26,
    PB_TYPE_I64 = 27,
    PB_TYPE_F64 = 28,
    PB_TYPE_IQ1_M = 29,
    PB_TYPE_BF16 = 30,
    /* 31..33: Q4_0_4_4, Q4_0_4_8, Q4_0_8_8, removed */
    PB_TYPE_TQ1_0 = 34,
    PB_TYPE_TQ2_0 = 35,
    /* 36..38: IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8, removed */
    PB_TYPE_MXFP4 = 39,
    PB_TYPE_NVFP4 = 40,
    PB_TYPE_Q1_0 = 41,
    PB_TYPE_COUNT = 42,
};

/* Converts n values (a multiple of the block size) of a row. */
typedef void (*pb_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*pb_from_float_fn)(const float *src, void *dst, int64_t n);

struct pb_type_traits {
    const char *name;      /* "Q4_K"; NULL for ids the format does not use */
    int64_t block;         /* elements per block */
    size_t size;           /* bytes per block */
    size_t align;          /* alignment the block struct needs in memory */
    pb_to_float_fn to_float;     /* NULL when plumb cannot read it */
    pb_from_float_fn from_float; /* NULL when plumb cannot write it */
};

/* Traits of type t, or NULL when t is not a type GGUF defines. */
const struct pb_type_traits *pb_type_get(uint32_t t);

/* "Q4_K", or "unknown" for an undefined id. */
const char *pb_type_name(uint32_t t);

/* Looks a type up by name, case-insensitive. Returns false if unknown. */
bool pb_type_from_name(const char *name, enum pb_type *out);

/* Bytes for a row of n elements; n must be a multiple of the block size. */
size_t pb_row_size(enum pb_type t, int64_t n);

/* True for the block-quantized types (everything but floats and ints). */
bool pb_type_is_quantized(enum pb_type t);

#endif
