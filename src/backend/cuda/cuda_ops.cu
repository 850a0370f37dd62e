/* The CUDA backend's elementwise, per-row and layout kernels. Built with
 * --fmad=false and written in the CPU kernels' order of operations
 * (src/ops/cpu_ops.c), so elementwise results match the CPU bit for bit
 * except where a libm function (expf, erff) rounds differently by an ulp.
 * Reductions (norm statistics, softmax sums) run in double, each row in one
 * thread block with a fixed tree: the bits depend only on the shapes. */
#include <cuda_bf16.h>

#include "backend/cuda/cuda_decode.cuh"
#include "backend/cuda/cuda_kernels.h"

using namespace mgpu_cuda;

namespace {

const int THREADS = 256;

unsigned grid_for(int64_t n, int threads = THREADS)
{
    int64_t b = (n + threads - 1) / threads;
    if (b > (1 << 20))
        b = 1 << 20;
    return (unsigned)(b < 1 ? 1 : b);
}

/* Blocks for one-block-per-row kernels (grid-stride over rows). */
unsigned rows_grid(int64_t rows)
{
    return (unsigned)(rows > (1 << 20) ? (1 << 20) : rows);
}

#define GRID_STRIDE(i, n)                                                                          \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)gridDim.x * blockDim.x)

/* Sum over the block, in a fixed tree (blockDim.x a power of two); every
 * thread gets the result. sh holds blockDim.x doubles. */
__device__ double block_sum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads(); /* sh is reused by the next reduction */
    return r;
}

__device__ float block_max(float v, float *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            const float o = sh[threadIdx.x + s];
            sh[threadIdx.x] = o > sh[threadIdx.x] ? o : sh[threadIdx.x];
        }
        __syncthreads();
    }
    const float r = sh[0];
    __syncthreads();
    return r;
}

/* ------------------------------------------------------------ norms */

struct param {
    const uint8_t *p;
    int dtype;
};

__device__ __forceinline__ float pget(param w, int64_t i)
{
    return decode_any(w.dtype, w.p, i);
}

/* One block per row; two passes in double as the CPU (mean, then squared
 * deviations), the normalised value rounded to f32 before the affine
 * parameters, as mgpu_cpu_layernorm. */
__global__ void layernorm_kernel(const float *x, float *y, int64_t rows, int64_t dim, param w,
                                 param b, float eps)
{
    __shared__ double sh[THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        double s = 0.0;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
            s += xr[i];
        const double mean = block_sum(s, sh) / (double)dim;
        double q = 0.0;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
            const double d = (double)xr[i] - mean;
            q += d * d;
        }
        const double rstd = 1.0 / sqrt(block_sum(q, sh) / (double)dim + (double)eps);
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
            float v = (float)(((double)xr[i] - mean) * rstd);
            if (w.p)
                v = __fmul_rn(v, pget(w, i));
            if (b.p)
                v = __fadd_rn(v, pget(b, i));
            yr[i] = v;
        }
    }
}

__global__ void rmsnorm_kernel(const float *x, float *y, int64_t rows, int64_t dim, param w,
                               float eps)
{
    __shared__ double sh[THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        double q = 0.0;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
            q += (double)xr[i] * (double)xr[i];
        const float rrms = (float)(1.0 / sqrt(block_sum(q, sh) / (double)dim + (double)eps));
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
            float v = __fmul_rn(xr[i], rrms);
            if (w.p)
                v = __fmul_rn(v, pget(w, i));
            yr[i] = v;
        }
    }
}

const int GN_THREADS = 1024;

/* One block per group of channels / groups consecutive channels. */
__global__ void group_norm_kernel(const float *x, float *y, int64_t spatial, int64_t groups,
                                  int64_t per_group, param w, param b, float eps)
{
    __shared__ double sh[GN_THREADS];
    const int64_t n = per_group * spatial;
    for (int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
        const float *xg = x + g * n;
        float *yg = y + g * n;
        double s = 0.0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
            s += xg[i];
        const double mean = block_sum(s, sh) / (double)n;
        double q = 0.0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            const double d = (double)xg[i] - mean;
            q += d * d;
        }
        const double rstd = 1.0 / sqrt(block_sum(q, sh) / (double)n + (double)eps);
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            const int64_t c = g * per_group + i / spatial;
            float v = (float)(((double)xg[i] - mean) * rstd);
            if (w.p)
                v = __fmul_rn(v, pget(w, c));
            if (b.p)
                v = __fadd_rn(v, pget(b, c));
            yg[i] = v;
        }
    }
}

/* ------------------------------------------------------------ elementwise */

__global__ void unary_kernel(int op, float *x, int64_t n)
{
    GRID_STRIDE(i, n)
    {
        const float v = x[i];
        float r;
        switch (op) {
        case MGPU_UNARY_SILU: r = v / (1.0f + expf(-v)); break;
        case MGPU_UNARY_GELU_TANH: {
            /* v / (1 + exp(-2u)) == 0.5 v (1 + tanh(u)), as the CPU */
            const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            r = v / (1.0f + expf(-2.0f * u));
            break;
        }
        case MGPU_UNARY_GELU_ERF: r = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); break;
        case MGPU_UNARY_GELU_QUICK: r = v / (1.0f + expf(-1.702f * v)); break;
        default: r = v > 0.0f ? v : 0.0f; break; /* relu */
        }
        x[i] = r;
    }
}

__global__ void add_kernel(float *y, const float *a, const float *b, int64_t n)
{
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

__global__ void mul_kernel(float *y, const float *a, const float *b, int64_t n)
{
    GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

__global__ void scale_kernel(float *y, const float *x, float k, int64_t n)
{
    GRID_STRIDE(i, n) y[i] = x[i] * k;
}

__global__ void modulate_kernel(float *y, const float *x, int64_t rows, int64_t dim,
                                const float *shift, const float *scale)
{
    GRID_STRIDE(i, rows * dim)
    {
        const int64_t c = i % dim;
        y[i] = x[i] * (1.0f + scale[c]) + shift[c];
    }
}

__global__ void gate_add_kernel(float *y, const float *x, int64_t rows, int64_t dim,
                                const float *gate)
{
    GRID_STRIDE(i, rows * dim) y[i] += gate[i % dim] * x[i];
}

/* The largest value of a row, for a softmax; NaN when the row holds one,
 * so that the whole row comes out NaN, as on the CPU. */
__device__ float row_max(const float *xr, int64_t cols, float *shf)
{
    float m = -INFINITY;
    bool nan = false;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
        m = xr[i] > m ? xr[i] : m;
        nan |= xr[i] != xr[i];
    }
    m = block_max(m, shf);
    return __syncthreads_or(nan) ? __int_as_float(0x7FC00000) : m;
}

/* Softmax of each row: max, then exp and its sum in double, then scale by
 * the f32 reciprocal, as mgpu_cpu_softmax_rows. */
__global__ void softmax_kernel(float *x, int64_t rows, int64_t cols)
{
    __shared__ double sh[THREADS];
    __shared__ float shf[THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float *xr = x + r * cols;
        const float m = row_max(xr, cols, shf);
        double s = 0.0;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
            const float e = expf(xr[i] - m);
            xr[i] = e;
            s += e;
        }
        const float inv = (float)(1.0 / block_sum(s, sh));
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
            xr[i] *= inv;
    }
}

/* p[r][i] = bf16(softmax of row r of s): the tensor-core attention's
 * probabilities. Three passes over a row (max, sum, write), which stays in
 * cache between them; sums in double as softmax_kernel. A NaN anywhere in a
 * row makes it NaN. */
__global__ void softmax_bf16_kernel(const float *x, int64_t rows, int64_t cols,
                                    __nv_bfloat16 *p)
{
    __shared__ double sh[THREADS];
    __shared__ float shf[THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        const float m = row_max(xr, cols, shf);
        double s = 0.0;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
            s += expf(xr[i] - m);
        const float inv = (float)(1.0 / block_sum(s, sh));
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
            p[r * cols + i] = __float2bfloat16_rn(expf(xr[i] - m) * inv);
    }
}

/* x [heads][tokens][head_dim]; one thread per pair. */
__global__ void rope_kernel(float *x, int64_t rows, int64_t tokens, int64_t head_dim,
                            const float *cos_t, const float *sin_t)
{
    const int64_t pairs = head_dim / 2; /* an odd last element stays as it is */
    GRID_STRIDE(i, rows * pairs)
    {
        const int64_t r = i / pairs, p = i - r * pairs;
        const int64_t t = r % tokens;
        const float c = cos_t[t * pairs + p], s = sin_t[t * pairs + p];
        float *xp = x + r * head_dim + 2 * p;
        const float a = xp[0], b = xp[1];
        xp[0] = c * a - s * b;
        xp[1] = s * a + c * b;
    }
}

/* ------------------------------------------------------------ layout */

const int TT = 32; /* transpose tile */

__global__ void transpose_kernel(const float *x, int64_t rows, int64_t cols, float *y)
{
    __shared__ float tile[TT][TT + 1];
    const int64_t c0 = (int64_t)blockIdx.x * TT, r0 = (int64_t)blockIdx.y * TT;
    for (int j = threadIdx.y; j < TT; j += blockDim.y) {
        const int64_t r = r0 + j, c = c0 + threadIdx.x;
        if (r < rows && c < cols)
            tile[j][threadIdx.x] = x[r * cols + c];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < TT; j += blockDim.y) {
        const int64_t c = c0 + j, r = r0 + threadIdx.x;
        if (r < rows && c < cols)
            y[c * rows + r] = tile[threadIdx.x][j];
    }
}

/* One thread per element of the output. */
__global__ void heads_kernel(const float *x, int64_t tokens, int64_t heads, int64_t d, float *out,
                             bool to_heads)
{
    GRID_STRIDE(i, tokens * heads * d)
    {
        const int64_t c = i % d, rest = i / d;
        if (to_heads) { /* i indexes [h][t][c] */
            const int64_t t = rest % tokens, h = rest / tokens;
            out[i] = x[(t * heads + h) * d + c];
        } else { /* i indexes [t][h][c] */
            const int64_t h = rest % heads, t = rest / heads;
            out[i] = x[(h * tokens + t) * d + c];
        }
    }
}

__global__ void axpy_2d_kernel(float *dst, int64_t dst_stride, const float *src,
                               int64_t src_stride, int64_t rows, int64_t cols, float k)
{
    GRID_STRIDE(i, rows * cols)
    {
        const int64_t r = i / cols, c = i - r * cols;
        dst[r * dst_stride + c] += k * src[r * src_stride + c]; /* --fmad=false: no FMA */
    }
}

__global__ void copy_2d_kernel(float *dst, int64_t dst_stride, const float *src,
                               int64_t src_stride, int64_t rows, int64_t cols)
{
    GRID_STRIDE(i, rows * cols)
    {
        const int64_t r = i / cols, c = i - r * cols;
        dst[r * dst_stride + c] = src[r * src_stride + c];
    }
}

__global__ void upsample_kernel(const float *x, int64_t channels, int64_t h, int64_t w, float *y)
{
    const int64_t ow = 2 * w, oh = 2 * h;
    GRID_STRIDE(i, channels * oh * ow)
    {
        const int64_t ox = i % ow, rest = i / ow;
        const int64_t oy = rest % oh, c = rest / oh;
        y[i] = x[(c * h + oy / 2) * w + ox / 2];
    }
}

param P(mgpu_wref w)
{
    param p = {(const uint8_t *)w.data, (int)w.dtype};
    return p;
}

} // namespace

extern "C" cudaError_t mgpu_cuda_layernorm(cudaStream_t s, const float *x, float *y, int64_t rows,
                                           int64_t dim, mgpu_wref w, mgpu_wref b, float eps)
{
    layernorm_kernel<<<rows_grid(rows), THREADS, 0, s>>>(x, y, rows, dim, P(w), P(b), eps);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_rmsnorm(cudaStream_t s, const float *x, float *y, int64_t rows,
                                         int64_t dim, mgpu_wref w, float eps)
{
    rmsnorm_kernel<<<rows_grid(rows), THREADS, 0, s>>>(x, y, rows, dim, P(w), eps);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_group_norm(cudaStream_t s, const float *x, float *y,
                                            int64_t channels, int64_t spatial, int64_t groups,
                                            mgpu_wref w, mgpu_wref b, float eps)
{
    group_norm_kernel<<<rows_grid(groups), GN_THREADS, 0, s>>>(x, y, spatial, groups,
                                                              channels / groups, P(w), P(b), eps);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_unary(cudaStream_t s, int op, float *x, int64_t n)
{
    unary_kernel<<<grid_for(n), THREADS, 0, s>>>(op, x, n);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_add(cudaStream_t s, float *y, const float *a, const float *b,
                                     int64_t n)
{
    add_kernel<<<grid_for(n), THREADS, 0, s>>>(y, a, b, n);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_mul(cudaStream_t s, float *y, const float *a, const float *b,
                                     int64_t n)
{
    mul_kernel<<<grid_for(n), THREADS, 0, s>>>(y, a, b, n);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_scale(cudaStream_t s, float *y, const float *x, float k,
                                       int64_t n)
{
    scale_kernel<<<grid_for(n), THREADS, 0, s>>>(y, x, k, n);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_softmax_rows(cudaStream_t s, float *x, int64_t rows, int64_t cols)
{
    softmax_kernel<<<rows_grid(rows), THREADS, 0, s>>>(x, rows, cols);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_softmax_bf16(cudaStream_t s, const float *x, int64_t rows,
                                              int64_t cols, void *p)
{
    softmax_bf16_kernel<<<rows_grid(rows), THREADS, 0, s>>>(x, rows, cols, (__nv_bfloat16 *)p);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_modulate(cudaStream_t s, float *y, const float *x, int64_t rows,
                                          int64_t dim, const float *shift, const float *scale)
{
    modulate_kernel<<<grid_for(rows * dim), THREADS, 0, s>>>(y, x, rows, dim, shift, scale);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_gate_add(cudaStream_t s, float *y, const float *x, int64_t rows,
                                          int64_t dim, const float *gate)
{
    gate_add_kernel<<<grid_for(rows * dim), THREADS, 0, s>>>(y, x, rows, dim, gate);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_rope(cudaStream_t s, float *x, int64_t heads, int64_t tokens,
                                      int64_t head_dim, const float *cos_t, const float *sin_t)
{
    const int64_t pairs = head_dim / 2;
    rope_kernel<<<grid_for(heads * tokens * pairs), THREADS, 0, s>>>(x, heads * tokens, tokens,
                                                                     head_dim, cos_t, sin_t);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_transpose(cudaStream_t s, const float *x, int64_t rows,
                                           int64_t cols, float *y)
{
    const int64_t gx = (cols + TT - 1) / TT, gy = (rows + TT - 1) / TT;
    if (gy > 65535) /* gridDim.y limit; x allows 2^31 - 1 */
        return cudaErrorInvalidConfiguration;
    transpose_kernel<<<dim3((unsigned)gx, (unsigned)gy), dim3(TT, 8), 0, s>>>(x, rows, cols, y);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_heads(cudaStream_t s, const float *x, int64_t tokens,
                                       int64_t heads, int64_t head_dim, float *out, bool to_heads)
{
    heads_kernel<<<grid_for(tokens * heads * head_dim), THREADS, 0, s>>>(x, tokens, heads,
                                                                         head_dim, out, to_heads);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_axpy_2d(cudaStream_t s, float *dst, int64_t dst_stride,
                                         const float *src, int64_t src_stride, int64_t rows,
                                         int64_t cols, float k)
{
    axpy_2d_kernel<<<grid_for(rows * cols), THREADS, 0, s>>>(dst, dst_stride, src, src_stride,
                                                             rows, cols, k);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_copy_2d(cudaStream_t s, float *dst, int64_t dst_stride,
                                         const float *src, int64_t src_stride, int64_t rows,
                                         int64_t cols)
{
    copy_2d_kernel<<<grid_for(rows * cols), THREADS, 0, s>>>(dst, dst_stride, src, src_stride,
                                                             rows, cols);
    return cudaGetLastError();
}

extern "C" cudaError_t mgpu_cuda_upsample2x(cudaStream_t s, const float *x, int64_t channels,
                                            int64_t h, int64_t w, float *y)
{
    upsample_kernel<<<grid_for(channels * 4 * h * w), THREADS, 0, s>>>(x, channels, h, w, y);
    return cudaGetLastError();
}
