/* Decoding kernels: stored weights to f32 or bf16 (convert, linear and
 * conv2d tiles, get_rows), the bias add, f32 -> bf16 activations and
 * im2col. One thread per output value; the decoders (cuda_decode.cuh)
 * reproduce the CPU's values bit for bit. Built with --fmad=false. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backend/cuda/cuda_decode.cuh"
#include "backend/cuda/cuda_kernels.h"

using namespace mgpu_cuda;

namespace {

const int THREADS = 256;

/* Blocks for a grid-stride loop over n items: enough to fill any GPU, never
 * more than the grid allows. */
unsigned grid_for(int64_t n)
{
    int64_t b = (n + THREADS - 1) / THREADS;
    if (b > (1 << 20))
        b = 1 << 20;
    return (unsigned)(b < 1 ? 1 : b);
}

__device__ __forceinline__ void store(float *p, float v)
{
    *p = v;
}

__device__ __forceinline__ void store(__nv_bfloat16 *p, float v)
{
    *p = __float2bfloat16_rn(v);
}

template <int DT, typename T>
__global__ void dequant_kernel(const uint8_t *src, int64_t n, T *out)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        store(out + i, decode_at<DT>(src, i));
}

template <int DT>
__global__ void get_rows_kernel(const uint8_t *table, int64_t dim, const int32_t *ids, int64_t n,
                                float *out)
{
    const int64_t total = n * dim;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / dim, c = i - r * dim;
        out[i] = decode_at<DT>(table, (int64_t)ids[r] * dim + c);
    }
}

__global__ void to_bf16_kernel(const float *x, int64_t n, __nv_bfloat16 *out)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(x[i]);
}

__global__ void to_f16_kernel(const float *x, int64_t n, __half *out)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = __float2half_rn(x[i]);
}

/* amax of |x| as float bits: for non-negative floats the bit patterns
 * order as the values, so an unsigned atomicMax finds it, in any order. */
__global__ void amax_kernel(const float *x, int64_t n, unsigned *amax)
{
    unsigned m = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const unsigned b = __float_as_uint(fabsf(x[i]));
        m = b > m ? b : m;
    }
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned v = __shfl_xor_sync(0xFFFFFFFFu, m, o);
        m = v > m ? v : m;
    }
    if ((threadIdx.x & 31) == 0)
        atomicMax(amax, m);
}

/* q = e4m3(x / scale), saturating, scale = amax / 448 (1 for an all-zero
 * x); the first thread stores the scale for the GEMM. */
__global__ void quant_e4m3_kernel(const float *x, int64_t n, float *scalars, __nv_fp8_storage_t *q)
{
    const float amax = __uint_as_float(((const unsigned *)scalars)[0]);
    const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
    if (blockIdx.x == 0 && threadIdx.x == 0)
        scalars[1] = scale;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        q[i] = __nv_cvt_float_to_fp8(x[i] / scale, __NV_SATFINITE, __NV_E4M3);
}

__global__ void bias_add_kernel(float *y, int64_t rows, int64_t cols, const uint8_t *bias,
                                int dtype, bool per_row)
{
    const int64_t total = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], decode_any(dtype, bias, per_row ? i / cols : i % cols));
}

template <typename T>
__global__ void im2col_kernel(const float *x, mgpu_conv2d_shape sh, int64_t out_w, int64_t p0,
                              int64_t band, T *col)
{
    const int64_t kk = (int64_t)sh.kh * sh.kw;
    const int64_t total = sh.c_in * kk * band;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t k = i / band, j = i - k * band;
        const int64_t p = p0 + j;
        const int64_t oy = p / out_w, ox = p - oy * out_w;
        const int64_t ci = k / kk, r = k - ci * kk;
        const int64_t ky = r / sh.kw, kx = r - ky * sh.kw;
        const int64_t iy = oy * sh.stride - sh.pad_top + ky;
        const int64_t ix = ox * sh.stride - sh.pad_left + kx;
        float v = 0.0f;
        if (iy >= 0 && iy < sh.h && ix >= 0 && ix < sh.w)
            v = x[(ci * sh.h + iy) * sh.w + ix];
        store(col + i, v);
    }
}

/* Calls F::template run<DT>() for the dtype, or returns invalid value. */
#define MGPU_DTYPE_CASES(X)                                                                        \
    X(MGPU_DTYPE_F64) X(MGPU_DTYPE_F32) X(MGPU_DTYPE_F16) X(MGPU_DTYPE_BF16)                       \
    X(MGPU_DTYPE_F8_E4M3) X(MGPU_DTYPE_F8_E5M2) X(MGPU_DTYPE_Q4_0) X(MGPU_DTYPE_Q4_1)              \
    X(MGPU_DTYPE_Q5_0) X(MGPU_DTYPE_Q5_1) X(MGPU_DTYPE_Q8_0) X(MGPU_DTYPE_Q2_K)                    \
    X(MGPU_DTYPE_Q3_K) X(MGPU_DTYPE_Q4_K) X(MGPU_DTYPE_Q5_K) X(MGPU_DTYPE_Q6_K)                    \
    X(MGPU_DTYPE_IQ4_NL) X(MGPU_DTYPE_IQ4_XS)

template <typename T>
cudaError_t dequant(cudaStream_t s, int dtype, const void *src, int64_t n, T *out)
{
    const uint8_t *b = (const uint8_t *)src;
    switch (dtype) {
#define X(dt)                                                                                      \
    case dt: dequant_kernel<dt, T><<<grid_for(n), THREADS, 0, s>>>(b, n, out); break;
        MGPU_DTYPE_CASES(X)
#undef X
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

} // namespace

extern "C" bool mgpu_cuda_dtype_supported(int dtype)
{
    switch (dtype) {
#define X(dt) case dt:
        MGPU_DTYPE_CASES(X)
#undef X
        return true;
    default: return false;
    }
}

extern "C" cudaError_t mgpu_cuda_dequant_f32(cudaStream_t s, int dtype, const void *src, int64_t n,
                                             float *out)
{
    return dequant(s, dtype, src, n, out);
}

extern "C" cudaError_t mgpu_cuda_dequant_bf16(cudaStream_t s, int dtype, const void *src,
                                              int64_t n, void *out)
{
    return dequant(s, dtype, src, n, (__nv_bfloat16 *)out);
}

extern "C" cudaError_t mgpu_cuda_f32_to_bf16(cudaStream_t s, const float *x, int64_t n, void *out)
{
    to_bf16_kernel<<<grid_for(n), THREADS, 0, s>>>(x, n, (__nv_bfloat16 *)out);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_f32_to_f16(cudaStream_t s, const float *x, int64_t n, void *out)
{
    to_f16_kernel<<<grid_for(n), THREADS, 0, s>>>(x, n, (__half *)out);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_quant_e4m3(cudaStream_t s, const float *x, int64_t n,
                                            float *scalars, void *q)
{
    cudaError_t e = cudaMemsetAsync(scalars, 0, sizeof(unsigned), s);
    if (e != cudaSuccess)
        return e;
    amax_kernel<<<grid_for(n), THREADS, 0, s>>>(x, n, (unsigned *)scalars);
    if ((e = cudaGetLastError()) != cudaSuccess)
        return e;
    quant_e4m3_kernel<<<grid_for(n), THREADS, 0, s>>>(x, n, scalars, (__nv_fp8_storage_t *)q);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_get_rows(cudaStream_t s, int dtype, const void *table,
                                          int64_t dim, const int32_t *ids, int64_t n, float *out)
{
    const uint8_t *b = (const uint8_t *)table;
    switch (dtype) {
#define X(dt)                                                                                      \
    case dt: get_rows_kernel<dt><<<grid_for(n * dim), THREADS, 0, s>>>(b, dim, ids, n, out); break;
        MGPU_DTYPE_CASES(X)
#undef X
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_bias_add(cudaStream_t s, float *y, int64_t rows, int64_t cols,
                                          const void *bias, int bias_dtype, bool per_row)
{
    bias_add_kernel<<<grid_for(rows * cols), THREADS, 0, s>>>(
        y, rows, cols, (const uint8_t *)bias, bias_dtype, per_row);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_im2col(cudaStream_t s, const float *x,
                                        const mgpu_conv2d_shape *shape, int64_t out_w, int64_t p0,
                                        int64_t band, void *col, bool bf16)
{
    const int64_t total = shape->c_in * shape->kh * shape->kw * band;
    if (bf16)
        im2col_kernel<<<grid_for(total), THREADS, 0, s>>>(x, *shape, out_w, p0, band,
                                                          (__nv_bfloat16 *)col);
    else
        im2col_kernel<<<grid_for(total), THREADS, 0, s>>>(x, *shape, out_w, p0, band,
                                                          (float *)col);
    return cudaGetLastError();
}
