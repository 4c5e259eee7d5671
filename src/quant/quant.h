/* Reference (scalar) conversion of rows between float and each block type.
 *
 * dequant_row_*: n elements (a multiple of the block size) to floats.
 * quant_row_*:   n floats to blocks. For weight types these are the
 *                reference quantizers used to write files; for activation
 *                types (Q8_0, Q8_1, Q8_K) they are what the matmul path
 *                runs on every input row, rounding as the reference
 *                implementation does so that logits agree.
 * Reach these through pb_type_get(t)->to_float / from_float; they are
 * exported for tests and kernels.
 */
#ifndef PLUMB_QUANT_QUANT_H
#define PLUMB_QUANT_QUANT_H

#include <stdint.h>

void dequant_row_f32(const void *src, float *dst, int64_t n);
void dequant_row_f16(const void *src, float *dst, int64_t n);
void dequant_row_bf16(const void *src, float *dst, int64_t n);
void dequant_row_q4_0(const void *src, float *dst, int64_t n);
void dequant_row_q4_1(const void *src, float *dst, int64_t n);
void dequant_row_q5_0(const void *src, float *dst, int64_t n);
void dequant_row_q5_1(const void *src, float *dst, int64_t n);
void dequant_row_q8_0(const void *src, float *dst, int64_t n);
void dequant_row_q8_1(const void *src, float *dst, int64_t n);
void dequant_row_q4_K(const void *src, float *dst, int64_t n);
void dequant_row_q5_K(const void *src, float *dst, int64_t n);
void dequant_row_q6_K(const void *src, float *dst, int64_t n);
void dequant_row_q8_K(const void *src, float *dst, int64_t n);
void dequant_row_mxfp4(const void *src, float *dst, int64_t n);
void dequant_row_q2_K(const void *src, float *dst, int64_t n);
void dequant_row_q3_K(const void *src, float *dst, int64_t n);
void dequant_row_iq4_nl(const void *src, float *dst, int64_t n);
void dequant_row_iq4_xs(const void *src, float *dst, int64_t n);

void quant_row_f32(const float *src, void *dst, int64_t n);
void quant_row_f16(const float *src, void *dst, int64_t n);
void quant_row_bf16(const float *src, void *dst, int64_t n);
void quant_row_q4_0(const float *src, void *dst, int64_t n);
void quant_row_q4_1(const float *src, void *dst, int64_t n);
void quant_row_q5_0(const float *src, void *dst, int64_t n);
void quant_row_q5_1(const float *src, void *dst, int64_t n);
void quant_row_q8_0(const float *src, void *dst, int64_t n);
void quant_row_q8_1(const float *src, void *dst, int64_t n);
void quant_row_q4_K(const float *src, void *dst, int64_t n);
void quant_row_q5_K(const float *src, void *dst, int64_t n);
void quant_row_q6_K(const float *src, void *dst, int64_t n);
void quant_row_q8_K(const float *src, void *dst, int64_t n);
void quant_row_mxfp4(const float *src, void *dst, int64_t n);
void quant_row_q2_K(const float *src, void *dst, int64_t n);
void quant_row_q3_K(const float *src, void *dst, int64_t n);
void quant_row_iq4_nl(const float *src, void *dst, int64_t n);
void quant_row_iq4_xs(const float *src, void *dst, int64_t n);

#endif
