/* The parts of a forward pass that every step times (the model fills
 * them, the engine sums them into engine_stats, plumb bench --profile
 * prints them per generated token). What no part covers (residual adds,
 * biases, the experts' grouping, the glue between ops) is the pass's
 * time less their sum. */
#ifndef PLUMB_PROFILE_H
#define PLUMB_PROFILE_H

enum pb_part {
    PB_PART_EMBED,       /* token rows looked up */
    PB_PART_NORM,        /* RMS and layer norms (the final one too), Q/K head norms */
    PB_PART_QKV,         /* the Q, K and V products */
    PB_PART_ROPE_KV,     /* RoPE, and the new rows stored in the KV cache */
    PB_PART_ATTENTION,   /* attention over the cache */
    PB_PART_ATTN_OUT,    /* the attention output product */
    PB_PART_FFN_UP,      /* the gate and up products of a dense FFN */
    PB_PART_FFN_ACT,     /* the FFN's activation (SwiGLU, GeGLU, GELU) */
    PB_PART_FFN_DOWN,    /* the down product of a dense FFN */
    PB_PART_ROUTER,      /* a mixture's router product and choice of experts */
    PB_PART_EXPERTS,     /* the chosen experts' products */
    PB_PART_OUTPUT,      /* the output product (logits) */
    PB_PART_QUANTIZE,    /* activations quantized for the products above (not in their times) */
    PB_PART_COUNT
};

/* A short name ("qkv", "attention", ...) for tables and JSON. */
const char *pb_part_name(enum pb_part p);
/* Whether the part is a weight matrix product (or its activations'
 * quantization): the parts plumb bench adds up as the matrices' share. */
int pb_part_is_matrix(enum pb_part p);

#endif
