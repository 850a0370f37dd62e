/* Launchers of the CUDA backend's kernels, callable from C. Each enqueues
 * on `stream` and returns cudaGetLastError() (a launch failure), never
 * waiting. Shapes were validated by the caller (cuda_backend.c); every
 * count is > 0. dtype arguments are mgpu_dtype values the decoders handle
 * (mgpu_cuda_dtype_supported). bf16 buffers are void * (no cuda_bf16.h in
 * C). */
#ifndef MGPU_BACKEND_CUDA_KERNELS_H
#define MGPU_BACKEND_CUDA_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" { /* backend.h has no C++ guards of its own */
#endif

#include "backend/backend.h"

/* True for every dtype the decoders read: F64, F32, F16, BF16, both fp8
 * and the GGUF block types of mgpu/dtype.h. */
bool mgpu_cuda_dtype_supported(int dtype);

/* n values (whole blocks) of dtype at src -> f32 or bf16 (round to nearest
 * even). */
cudaError_t mgpu_cuda_dequant_f32(cudaStream_t s, int dtype, const void *src, int64_t n,
                                  float *out);
cudaError_t mgpu_cuda_dequant_bf16(cudaStream_t s, int dtype, const void *src, int64_t n,
                                   void *out);
/* f32 -> bf16 or f16, round to nearest even. */
cudaError_t mgpu_cuda_f32_to_bf16(cudaStream_t s, const float *x, int64_t n, void *out);
cudaError_t mgpu_cuda_f32_to_f16(cudaStream_t s, const float *x, int64_t n, void *out);
/* q [n] e4m3 = x / scale, saturating, with scale = max|x| / 448 (1 when x
 * is all zero) left in scalars[1] (device memory; scalars[0] is scratch
 * for the maximum). */
cudaError_t mgpu_cuda_quant_e4m3(cudaStream_t s, const float *x, int64_t n, float *scalars,
                                 void *q);
/* out[i][c] = table row ids[i], value c; rows of dim values (whole blocks). */
cudaError_t mgpu_cuda_get_rows(cudaStream_t s, int dtype, const void *table, int64_t dim,
                               const int32_t *ids, int64_t n, float *out);
/* y[r][i] += bias[i], or bias[r] when per_row (conv2d's channels). */
cudaError_t mgpu_cuda_bias_add(cudaStream_t s, float *y, int64_t rows, int64_t cols,
                               const void *bias, int bias_dtype, bool per_row);
/* Column j of the im2col matrix of one NCHW image, for output pixels
 * p0..p0+band: col[k][j] with k = (ci*kh + ky)*kw + kx, zero where the
 * window falls in the padding. f32 or bf16 output. */
cudaError_t mgpu_cuda_im2col(cudaStream_t s, const float *x, const mgpu_conv2d_shape *shape,
                             int64_t out_w, int64_t p0, int64_t band, void *col, bool bf16);

/* Weights and biases of norms: data NULL when absent. */
cudaError_t mgpu_cuda_layernorm(cudaStream_t s, const float *x, float *y, int64_t rows,
                                int64_t dim, mgpu_wref w, mgpu_wref b, float eps);
cudaError_t mgpu_cuda_rmsnorm(cudaStream_t s, const float *x, float *y, int64_t rows, int64_t dim,
                              mgpu_wref w, float eps);
cudaError_t mgpu_cuda_group_norm(cudaStream_t s, const float *x, float *y, int64_t channels,
                                 int64_t spatial, int64_t groups, mgpu_wref w, mgpu_wref b,
                                 float eps);

cudaError_t mgpu_cuda_unary(cudaStream_t s, int op, float *x, int64_t n);
cudaError_t mgpu_cuda_add(cudaStream_t s, float *y, const float *a, const float *b, int64_t n);
cudaError_t mgpu_cuda_mul(cudaStream_t s, float *y, const float *a, const float *b, int64_t n);
cudaError_t mgpu_cuda_scale(cudaStream_t s, float *y, const float *x, float k, int64_t n);
/* p [rows][cols] bf16 = softmax of each row of x (f32, left as it is). */
cudaError_t mgpu_cuda_softmax_bf16(cudaStream_t s, const float *x, int64_t rows, int64_t cols,
                                   void *p);
cudaError_t mgpu_cuda_softmax_rows(cudaStream_t s, float *x, int64_t rows, int64_t cols);
cudaError_t mgpu_cuda_modulate(cudaStream_t s, float *y, const float *x, int64_t rows,
                               int64_t dim, const float *shift, const float *scale);
cudaError_t mgpu_cuda_gate_add(cudaStream_t s, float *y, const float *x, int64_t rows,
                               int64_t dim, const float *gate);
cudaError_t mgpu_cuda_rope(cudaStream_t s, float *x, int64_t heads, int64_t tokens,
                           int64_t head_dim, const float *cos_t, const float *sin_t);
cudaError_t mgpu_cuda_transpose(cudaStream_t s, const float *x, int64_t rows, int64_t cols,
                                float *y);
/* to_heads: [tokens][heads*d] -> [heads][tokens][d]; else the reverse. */
cudaError_t mgpu_cuda_heads(cudaStream_t s, const float *x, int64_t tokens, int64_t heads,
                            int64_t head_dim, float *out, bool to_heads);
/* dst[r][c] += k * src[r][c] (no FMA). */
cudaError_t mgpu_cuda_axpy_2d(cudaStream_t s, float *dst, int64_t dst_stride, const float *src,
                              int64_t src_stride, int64_t rows, int64_t cols, float k);
cudaError_t mgpu_cuda_copy_2d(cudaStream_t s, float *dst, int64_t dst_stride, const float *src,
                              int64_t src_stride, int64_t rows, int64_t cols);
cudaError_t mgpu_cuda_upsample2x(cudaStream_t s, const float *x, int64_t channels, int64_t h,
                                 int64_t w, float *y);

/* Dynamic shared memory the attention kernel needs for head_dim. */
size_t mgpu_cuda_attention_smem(int64_t head_dim);
/* smem_limit: the device's opt-in maximum per block (the caller checked
 * mgpu_cuda_attention_smem(head_dim) <= smem_limit). */
cudaError_t mgpu_cuda_attention(cudaStream_t s, const float *q, const float *k, const float *v,
                                float *out, int64_t heads, int64_t q_len, int64_t kv_len,
                                int64_t head_dim, float scale, const float *bias, bool causal);

#ifdef __cplusplus
}
#endif
#endif
