/* Block-quantized (GGUF) layouts: decoding every block type to f32 and
 * encoding the types mgpu writes. Internal to libmgpu; the public entry
 * points are mgpu_dequantize / mgpu_quantize in mgpu/dtype.h. */
#ifndef MGPU_CORE_QUANT_H
#define MGPU_CORE_QUANT_H

#include "mgpu/dtype.h"

/* dtype must be a block type (info->quantized). Decodes n_blocks blocks. */
void mgpu_dequantize_blocks(mgpu_dtype dtype, const void *src, float *dst, uint64_t n_blocks);

/* Encodes n_blocks blocks; MGPU_ERR_UNSUPPORTED for block types mgpu cannot
 * write (everything but Q8_0, Q4_0, Q4_K, Q6_K). */
mgpu_status mgpu_quantize_blocks(mgpu_dtype dtype, const float *src, void *dst, uint64_t n_blocks);

#endif
