/* CPU kernels for image models (the VAE, UNets): 2-D convolution, group
 * normalisation and nearest 2x upsampling of one NCHW image. Like the other
 * CPU kernels they take an optional thread pool (NULL runs on the calling
 * thread) and give the same bits for any thread count. Internal to libmgpu;
 * model code reaches them through the backend's conv2d, group_norm and
 * upsample2x. */
#ifndef MGPU_OPS_CPU_IMAGE_H
#define MGPU_OPS_CPU_IMAGE_H

#include <stdint.h>

#include "backend/backend.h"
#include "mgpu/dtype.h"
#include "ops/cpu_linear.h"
#include "ops/threadpool.h"

/* y [c_out][oh][ow] = conv(x [c_in][h][w], W [c_out][c_in][kh][kw]) + bias,
 * zero padding as given per side (the VAE's downsample pads only right and
 * bottom). W may be any floating dtype mgpu_cpu_linear decodes, block types
 * when c_in * kh * kw is whole blocks; bias is f32 [c_out] or NULL.
 * Computed as im2col + mgpu_cpu_linear over bands of output pixels whose
 * size depends only on the shape, so the column buffer stays under
 * MGPU_CPU_CONV_BAND_BYTES whatever the image size and the bits never
 * depend on the thread count. MGPU_ERR_ARGUMENT for an impossible shape or
 * an undecodable dtype; MGPU_ERR_NO_MEMORY when the band cannot be had. */
enum { MGPU_CPU_CONV_BAND_BYTES = 16 << 20 };
mgpu_status mgpu_cpu_conv2d(const float *x, const mgpu_conv2d_shape *shape, const void *weight,
                            mgpu_dtype weight_dtype, const float *bias, float *y,
                            mgpu_threadpool *pool, mgpu_cpu_scratch *scratch);

/* Output pixels per band for a conv whose columns are `k` = c_in * kh * kw
 * long and that writes `c_out` channels (exposed for tests and planning). */
int64_t mgpu_cpu_conv2d_band_pixels(int64_t k, int64_t c_out);

/* x [channels][spatial], `groups` dividing channels: each group of
 * channels / groups consecutive channels is normalised by its own mean and
 * (biased) variance, computed in double, then scaled by weight[c] and
 * shifted by bias[c] (either may be NULL). y may alias x. */
void mgpu_cpu_group_norm(const float *x, float *y, int64_t channels, int64_t spatial,
                         int64_t groups, const float *weight, const float *bias, float eps,
                         mgpu_threadpool *pool);

/* [channels][h][w] -> [channels][2h][2w], nearest neighbour. */
void mgpu_cpu_upsample2x(const float *x, int64_t channels, int64_t h, int64_t w, float *y,
                         mgpu_threadpool *pool);

#endif
