/* Linear layers on fp8 tensor cores (cuBLASLt), for F8_E4M3 weights when
 * the user asks for --gemm fp8 on a GPU of compute capability 8.9 or more.
 * The activations are rounded to e4m3 under one scale per call (their
 * largest magnitude maps to 448, e4m3's largest finite value); the weights
 * are used as stored (unscaled e4m3fn, as ComfyUI's fp8 checkpoints); the
 * products accumulate in f32 and land in f32. Internal to the plugin. */
#ifndef MGPU_BACKEND_CUDA_FP8_H
#define MGPU_BACKEND_CUDA_FP8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

typedef struct mgpu_cuda_fp8 mgpu_cuda_fp8;

/* NULL (with the reason in `why`) when the device has no fp8 tensor cores
 * or cuBLASLt cannot be set up. Ops run on `stream` with `workspace`. */
mgpu_cuda_fp8 *mgpu_cuda_fp8_create(int device, cudaStream_t stream, void *workspace,
                                    size_t workspace_bytes, char *why, size_t why_bytes);
void mgpu_cuda_fp8_destroy(mgpu_cuda_fp8 *f);

typedef enum mgpu_cuda_fp8_result {
    MGPU_CUDA_FP8_DONE,
    MGPU_CUDA_FP8_UNSUPPORTED, /* this shape or alignment: use the bf16 path */
    MGPU_CUDA_FP8_FAILED,      /* an error, described in `why` */
} mgpu_cuda_fp8_result;

/* y [rows][out] = x [rows][in] W^T for W e4m3 [out][in], all on the device;
 * xq: scratch of rows * in bytes for the rounded activations. in and out
 * must be multiples of 16 and W, xq and y 16-byte aligned, else
 * UNSUPPORTED before anything is enqueued. */
mgpu_cuda_fp8_result mgpu_cuda_fp8_linear(mgpu_cuda_fp8 *f, const float *x, int64_t rows,
                                          int64_t in, const void *w, int64_t out, float *y,
                                          void *xq, char *why, size_t why_bytes);

#endif
