/* Tensor element types: plain scalars, fp8, and GGUF block-quantized types.
 * A block type stores block_elems values in block_bytes bytes; a scalar type
 * is a block of one. Dequantization always produces f32. */
#ifndef MGPU_DTYPE_H
#define MGPU_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mgpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mgpu_dtype {
    MGPU_DTYPE_INVALID = 0,
    MGPU_DTYPE_F64,
    MGPU_DTYPE_F32,
    MGPU_DTYPE_F16,
    MGPU_DTYPE_BF16,
    MGPU_DTYPE_F8_E4M3, /* e4m3fn: no infinities, 0x7F/0xFF are NaN */
    MGPU_DTYPE_F8_E5M2,
    MGPU_DTYPE_I8,
    MGPU_DTYPE_I16,
    MGPU_DTYPE_I32,
    MGPU_DTYPE_I64,
    MGPU_DTYPE_U8,
    MGPU_DTYPE_U16,
    MGPU_DTYPE_U32,
    MGPU_DTYPE_U64,
    MGPU_DTYPE_BOOL,
    MGPU_DTYPE_Q4_0,
    MGPU_DTYPE_Q4_1,
    MGPU_DTYPE_Q5_0,
    MGPU_DTYPE_Q5_1,
    MGPU_DTYPE_Q8_0,
    MGPU_DTYPE_Q2_K,
    MGPU_DTYPE_Q3_K,
    MGPU_DTYPE_Q4_K,
    MGPU_DTYPE_Q5_K,
    MGPU_DTYPE_Q6_K,
    MGPU_DTYPE_IQ4_NL,
    MGPU_DTYPE_IQ4_XS,
    MGPU_DTYPE_COUNT
} mgpu_dtype;

typedef struct mgpu_dtype_info {
    const char *name;     /* "Q4_K", "BF16", "F8_E4M3" */
    uint32_t block_elems; /* values per block; 1 for scalar types */
    uint32_t block_bytes; /* bytes per block */
    bool quantized;       /* a GGUF block type */
    bool floating;        /* holds real numbers (floats and block types) */
} mgpu_dtype_info;

/* NULL for MGPU_DTYPE_INVALID or out-of-range values. */
const mgpu_dtype_info *mgpu_dtype_get_info(mgpu_dtype dtype);
const char *mgpu_dtype_name(mgpu_dtype dtype);
/* Case-sensitive match of mgpu's own names (as mgpu_dtype_name returns). */
mgpu_dtype mgpu_dtype_from_name(const char *name);

/* Bytes that n_elems values occupy. False when n_elems is not a whole number
 * of blocks or the product overflows 64 bits. */
bool mgpu_dtype_bytes_for(mgpu_dtype dtype, uint64_t n_elems, uint64_t *bytes);

/* safetensors dtype strings ("F16", "F8_E4M3", "BOOL" ...); block types
 * have none. */
mgpu_dtype mgpu_dtype_from_safetensors(const char *name);
const char *mgpu_dtype_safetensors_name(mgpu_dtype dtype);

/* GGUF ggml_type ids. False for ids mgpu does not know or does not handle. */
bool mgpu_dtype_from_gguf(uint32_t type_id, mgpu_dtype *out);
bool mgpu_dtype_to_gguf(mgpu_dtype dtype, uint32_t *type_id);
/* The ggml name of a GGUF type id ("Q8_0", "IQ2_XXS"), or NULL if unknown. */
const char *mgpu_gguf_type_name(uint32_t type_id);

/* Scalar conversions. f16 and bf16 encode with round-to-nearest-even (f16
 * overflows to infinity as IEEE says). fp8 encodes round-to-nearest-even and
 * saturates finite values to the largest finite one; NaN stays NaN, and
 * infinity becomes e5m2's infinity or e4m3fn's largest finite value (it has
 * no infinity). */
float mgpu_f16_to_f32(uint16_t h);
uint16_t mgpu_f32_to_f16(float f);
float mgpu_bf16_to_f32(uint16_t h);
uint16_t mgpu_f32_to_bf16(float f);
float mgpu_fp8_e4m3_to_f32(uint8_t v);
uint8_t mgpu_f32_to_fp8_e4m3(float f);
float mgpu_fp8_e5m2_to_f32(uint8_t v);
uint8_t mgpu_f32_to_fp8_e5m2(float f);

/* Decode n_elems values of any dtype into f32 (integers convert by value,
 * BOOL to 0/1). n_elems must be a whole number of blocks. */
mgpu_status mgpu_dequantize(mgpu_dtype dtype, const void *src, float *dst, uint64_t n_elems);

/* Encode f32 into dtype. Supported: the float types, Q8_0, Q4_0, Q4_K and
 * Q6_K. Returns MGPU_ERR_UNSUPPORTED for others. */
bool mgpu_dtype_can_quantize(mgpu_dtype dtype);
mgpu_status mgpu_quantize(mgpu_dtype dtype, const float *src, void *dst, uint64_t n_elems);

#ifdef __cplusplus
}
#endif
#endif
