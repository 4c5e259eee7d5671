/* The scalar matrix kernels: the file's rows as they are, one reference
 * dot product per (row, activation row). Always built; the fallback for
 * every type and shape the SIMD sets do not cover. */
#include "kernels/kernels.h"
#include "quant/quant.h"

#include <string.h>

#define ACT_FORMAT(name, type)                                                                                         \
    static size_t act_size_##name(int64_t n)                                                                           \
    {                                                                                                                  \
        return pb_row_size(type, n);                                                                                   \
    }

ACT_FORMAT(f32, PB_TYPE_F32)
ACT_FORMAT(f16, PB_TYPE_F16)
ACT_FORMAT(bf16, PB_TYPE_BF16)
ACT_FORMAT(q8_0, PB_TYPE_Q8_0)
ACT_FORMAT(q8_1, PB_TYPE_Q8_1)
ACT_FORMAT(q8_K, PB_TYPE_Q8_K)

/* Row outer, activation rows inner: a weight row is read from memory once
 * per call and reused from cache for every activation row. */
#define GEMM_SCALAR(wt, dotfn)                                                                                         \
    static void gemm_##wt(const void *w, size_t w_row_bytes, int64_t n_in, int64_t g0, int64_t g1, const void *a,     \
                          size_t a_stride, int n_tok, float *y, size_t y_stride)                                       \
    {                                                                                                                  \
        for (int64_t r = g0; r < g1; r++) {                                                                            \
            const void *wr = (const uint8_t *)w + (size_t)r * w_row_bytes;                                             \
            for (int t = 0; t < n_tok; t++)                                                                            \
                y[(size_t)t * y_stride + (size_t)r] = dotfn(n_in, wr, (const uint8_t *)a + (size_t)t * a_stride);      \
        }                                                                                                              \
    }

GEMM_SCALAR(f32, dot_f32_f32_scalar)
GEMM_SCALAR(f16, dot_f16_f16_scalar)
GEMM_SCALAR(bf16, dot_bf16_bf16_scalar)
GEMM_SCALAR(q4_0, dot_q4_0_q8_0_scalar)
GEMM_SCALAR(q4_1, dot_q4_1_q8_1_scalar)
GEMM_SCALAR(q5_0, dot_q5_0_q8_0_scalar)
GEMM_SCALAR(q5_1, dot_q5_1_q8_1_scalar)
GEMM_SCALAR(q8_0, dot_q8_0_q8_0_scalar)
GEMM_SCALAR(q4_K, dot_q4_K_q8_K_scalar)
GEMM_SCALAR(q5_K, dot_q5_K_q8_K_scalar)
GEMM_SCALAR(q6_K, dot_q6_K_q8_K_scalar)
GEMM_SCALAR(mxfp4, dot_mxfp4_q8_0_scalar)
GEMM_SCALAR(iq4_nl, dot_iq4_nl_q8_0_scalar)
GEMM_SCALAR(q2_K, dot_q2_K_q8_K_scalar)
GEMM_SCALAR(q3_K, dot_q3_K_q8_K_scalar)
GEMM_SCALAR(iq4_xs, dot_iq4_xs_q8_K_scalar)

#define MM(wt, WT, act)                                                                                                \
    [PB_TYPE_##WT] = {                                                                                                 \
        .name = #wt "/scalar",                                                                                         \
        .wtype = PB_TYPE_##WT,                                                                                         \
        .group = 1,                                                                                                    \
        .act_size = act_size_##act,                                                                                    \
        .act_quantize = quant_row_##act,                                                                               \
        .gemm = gemm_##wt,                                                                                             \
    }

static const struct kern_mm scalar_table[PB_TYPE_COUNT] = {
    MM(f32, F32, f32),    MM(f16, F16, f16),    MM(bf16, BF16, bf16), MM(q4_0, Q4_0, q8_0),
    MM(q4_1, Q4_1, q8_1), MM(q5_0, Q5_0, q8_0), MM(q5_1, Q5_1, q8_1), MM(q8_0, Q8_0, q8_0),
    MM(q4_K, Q4_K, q8_K), MM(q5_K, Q5_K, q8_K), MM(q6_K, Q6_K, q8_K), MM(mxfp4, MXFP4, q8_0),
    MM(iq4_nl, IQ4_NL, q8_0), MM(q2_K, Q2_K, q8_K), MM(q3_K, Q3_K, q8_K), MM(iq4_xs, IQ4_XS, q8_K),
};

const struct kern_mm *kern_mm_scalar(enum pb_type t)
{
    if ((unsigned)t >= PB_TYPE_COUNT || !scalar_table[t].gemm)
        return NULL;
    return &scalar_table[t];
}
