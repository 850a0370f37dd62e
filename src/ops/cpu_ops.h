/* CPU kernels for the ops diffusion models need. Activations are f32,
 * row-major, contiguous; accumulation is f32 (norm statistics in double where
 * it costs nothing). Every kernel takes an optional thread pool (NULL runs
 * on the calling thread) and gives bit-identical results for any thread
 * count: work is split by rows or elements, never by the reduction axis.
 * Internal to libmgpu; the model code reaches them through the backend. */
#ifndef MGPU_OPS_CPU_OPS_H
#define MGPU_OPS_CPU_OPS_H

#include <stdint.h>

#include "ops/threadpool.h"

/* y = layernorm(x) over the last dim; weight and bias may be NULL (FLUX's
 * norms have no affine parameters). y may alias x. */
void mgpu_cpu_layernorm(const float *x, float *y, int64_t rows, int64_t dim, const float *weight,
                        const float *bias, float eps, mgpu_threadpool *pool);

/* y = x / sqrt(mean(x^2) + eps) * weight over the last dim (weight may be
 * NULL). y may alias x. */
void mgpu_cpu_rmsnorm(const float *x, float *y, int64_t rows, int64_t dim, const float *weight,
                      float eps, mgpu_threadpool *pool);

/* In place. gelu with the tanh approximation, as FLUX's MLPs use it. */
void mgpu_cpu_gelu_tanh(float *x, int64_t n, mgpu_threadpool *pool);
void mgpu_cpu_silu(float *x, int64_t n, mgpu_threadpool *pool);
/* Exact GELU, 0.5 x (1 + erf(x / sqrt 2)). */
void mgpu_cpu_gelu_erf(float *x, int64_t n, mgpu_threadpool *pool);
/* CLIP's quick GELU, x * sigmoid(1.702 x). */
void mgpu_cpu_gelu_quick(float *x, int64_t n, mgpu_threadpool *pool);
void mgpu_cpu_relu(float *x, int64_t n, mgpu_threadpool *pool);

/* Softmax of each row, in place, max-subtracted. */
void mgpu_cpu_softmax_rows(float *x, int64_t rows, int64_t cols, mgpu_threadpool *pool);

/* Elementwise; y may alias a or b. */
void mgpu_cpu_add(float *y, const float *a, const float *b, int64_t n, mgpu_threadpool *pool);
void mgpu_cpu_mul(float *y, const float *a, const float *b, int64_t n, mgpu_threadpool *pool);
/* y = x * s; y may alias x. */
void mgpu_cpu_scale(float *y, const float *x, float s, int64_t n, mgpu_threadpool *pool);

/* Modulation: y[r][i] = x[r][i] * (1 + scale[i]) + shift[i]; y may alias x. */
void mgpu_cpu_modulate(float *y, const float *x, int64_t rows, int64_t dim, const float *shift,
                       const float *scale, mgpu_threadpool *pool);
/* Gated residual: y[r][i] += gate[i] * x[r][i]. */
void mgpu_cpu_gate_add(float *y, const float *x, int64_t rows, int64_t dim, const float *gate,
                       mgpu_threadpool *pool);

/* FLUX's rotary embedding tables (EmbedND): for each token and each axis a,
 * axes_dim[a] / 2 frequencies theta^(-2j/axes_dim[a]); angle = pos * freq.
 * positions: tokens x n_axes. cos and sin: tokens x (sum(axes_dim) / 2),
 * axis 0's pairs first. */
void mgpu_cpu_rope_table(const float *positions, int64_t tokens, int n_axes, const int *axes_dim,
                         float theta, float *cos_out, float *sin_out);
/* Rotates x, laid out [heads][tokens][head_dim], in place: each pair
 * (x[2j], x[2j+1]) becomes (c*x[2j] - s*x[2j+1], s*x[2j] + c*x[2j+1]) with
 * c, s from the table row of the token, pair j. head_dim = 2 * pairs. */
void mgpu_cpu_rope_apply(float *x, int64_t heads, int64_t tokens, int64_t head_dim,
                         const float *cos_t, const float *sin_t, mgpu_threadpool *pool);

/* Scaled dot-product attention without the L x L matrix: q [heads][q_len][d],
 * k and v [heads][kv_len][d], out [heads][q_len][d]; out = softmax(q k^T *
 * scale) v, computed in blocks with an online softmax so memory is
 * O(block x kv_block), whatever the sequence length. */
void mgpu_cpu_attention(const float *q, const float *k, const float *v, float *out, int64_t heads,
                        int64_t q_len, int64_t kv_len, int64_t head_dim, float scale,
                        mgpu_threadpool *pool);
/* The same with an additive bias [heads][q_len][kv_len] (may be NULL) and
 * an optional causal mask (key j hidden from query i when j > i). Without
 * either it is mgpu_cpu_attention, bit for bit. */
void mgpu_cpu_attention_ex(const float *q, const float *k, const float *v, float *out,
                           int64_t heads, int64_t q_len, int64_t kv_len, int64_t head_dim,
                           float scale, const float *bias, int causal, mgpu_threadpool *pool);

/* Layout moves. rows x cols floats, row strides in floats: slices,
 * concatenations and column splits are all this. Overlap allowed within a
 * row (memmove), not across rows. */
void mgpu_cpu_copy_2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                      int64_t rows, int64_t cols);
/* dst[r][c] += k * src[r][c], the product rounded before the sum. */
void mgpu_cpu_axpy_2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                      int64_t rows, int64_t cols, float k, mgpu_threadpool *pool);
/* y[c][r] = x[r][c]; y must not overlap x. */
void mgpu_cpu_transpose(const float *x, int64_t rows, int64_t cols, float *y);
/* [tokens][heads * head_dim] <-> [heads][tokens][head_dim]. */
void mgpu_cpu_tokens_to_heads(const float *x, int64_t tokens, int64_t heads, int64_t head_dim,
                              float *out);
void mgpu_cpu_heads_to_tokens(const float *x, int64_t tokens, int64_t heads, int64_t head_dim,
                              float *out);

#endif
