/* The CPU linear layer over weights of any stored dtype. Internal. */
#ifndef MGPU_OPS_CPU_LINEAR_H
#define MGPU_OPS_CPU_LINEAR_H

#include <stdint.h>

#include "mgpu/dtype.h"
#include "ops/threadpool.h"

/* y[rows][out] = x[rows][in] * W^T (+ bias[out]), with W stored [out][in]
 * as `w_dtype` (rows of `in` values, whole blocks). W is decoded a tile of
 * output rows at a time into f32 scratch and multiplied with OpenBLAS
 * sgemm, so no f32 copy of a whole weight ever exists. The tiling depends
 * only on the shapes and dtype, never on where W lives, so the result is
 * the same bits whether W is resident, streamed or read from disk.
 * MGPU_ERR_ARGUMENT for a dtype that cannot be decoded or a row that is not
 * whole blocks; MGPU_ERR_NO_MEMORY if the scratch cannot be allocated. */
/* Reusable decode buffer: allocating a 4 MiB tile per call costs page
 * faults on every call (thousands per forward pass). */
typedef struct mgpu_cpu_scratch {
    float *data;
    size_t floats;
    uint16_t *half; /* bf16 tile and activations, for the bf16 path */
    size_t halves;
} mgpu_cpu_scratch;
void mgpu_cpu_scratch_free(mgpu_cpu_scratch *scratch);

/* scratch may be NULL (a buffer per call). */
mgpu_status mgpu_cpu_linear(const float *x, int64_t rows, int64_t in, const void *w,
                            mgpu_dtype w_dtype, int64_t out, const float *bias, float *y,
                            mgpu_threadpool *pool, mgpu_cpu_scratch *scratch);

/* How the multiply rounds: f32 throughout, or x and W rounded to bf16 with
 * f32 accumulation (oneDNN, where the CPU has native bf16 kernels: about
 * twice as fast, relative error near 2^-9 per product). */
typedef enum mgpu_cpu_gemm {
    MGPU_CPU_GEMM_F32,
    MGPU_CPU_GEMM_BF16,
} mgpu_cpu_gemm;

/* mgpu_cpu_linear with a choice of GEMM; MGPU_ERR_UNSUPPORTED for bf16
 * where mgpu_cpu_bf16_gemm_available() is false. */
mgpu_status mgpu_cpu_linear_ex(const float *x, int64_t rows, int64_t in, const void *w,
                               mgpu_dtype w_dtype, int64_t out, const float *bias, float *y,
                               mgpu_threadpool *pool, mgpu_cpu_scratch *scratch,
                               mgpu_cpu_gemm gemm);

/* Output rows per decoded tile for a given row length: about 4 MiB of f32,
 * a multiple of 16. */
int64_t mgpu_cpu_linear_tile_rows(int64_t in);

#endif
