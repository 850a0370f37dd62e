/* What mgpu knows about one stored tensor. Shapes are always row-major,
 * outermost dimension first, as safetensors and PyTorch write them; GGUF's
 * fastest-first ne[] is reversed on read and on write. */
#ifndef MGPU_TENSOR_H
#define MGPU_TENSOR_H

#include <stdint.h>

#include "mgpu/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { MGPU_MAX_DIMS = 8 };

typedef struct mgpu_tensor_info {
    const char *name;
    mgpu_dtype dtype;
    int ndim;
    uint64_t shape[MGPU_MAX_DIMS]; /* row-major: shape[ndim-1] varies fastest */
    uint64_t n_elems;
    uint64_t nbytes;
    uint64_t file_offset; /* absolute offset of the first byte in its file */
    const void *data;     /* inside the read-only mapping; valid until close */
} mgpu_tensor_info;

#ifdef __cplusplus
}
#endif
#endif
