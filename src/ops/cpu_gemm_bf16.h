/* bf16 GEMM on the CPU through oneDNN's matmul (AVX512-BF16 / AMX), for
 * linear layers whose weights and activations are rounded to bf16 with f32
 * accumulation and output. Built when oneDNN is found (Debian:
 * libdnnl-dev); otherwise, and on CPUs where oneDNN has only its slow
 * reference bf16 kernels, it reports itself unavailable and callers use
 * f32. Internal. */
#ifndef MGPU_OPS_CPU_GEMM_BF16_H
#define MGPU_OPS_CPU_GEMM_BF16_H

#include <stdbool.h>
#include <stdint.h>

#include "mgpu/status.h"

/* True when a native (JIT) bf16 matmul exists on this CPU. */
bool mgpu_cpu_bf16_gemm_available(void);

/* y[r][j] (row stride ldy) = sum_k x[r][k] * w[j][k] for r < rows, j < n:
 * x [rows][in] and w [n][in] bf16 bits, y f32. The same shapes give the
 * same bits on every call. MGPU_ERR_UNSUPPORTED when unavailable. */
mgpu_status mgpu_cpu_gemm_bf16(const uint16_t *x, int64_t rows, int64_t in, const uint16_t *w,
                               int64_t n, float *y, int64_t ldy);

/* Round-to-nearest-even f32 -> bf16 of n values (NaN stays NaN), written to
 * be vectorised: it runs over every decoded weight. */
void mgpu_cpu_to_bf16(const float *src, uint16_t *dst, int64_t n);

#endif
