/* GGUF files (versions 2 and 3): typed key-value metadata, tensor infos and
 * aligned tensor data. Opened by mmap and validated completely: every count
 * is bounded by the bytes that could hold it, every size is computed with
 * overflow checks, every tensor lies inside the data section. Shapes are
 * reported row-major (GGUF's ne[] reversed). */
#ifndef MGPU_GGUF_H
#define MGPU_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mgpu/status.h"
#include "mgpu/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mgpu_gguf_type {
    MGPU_GGUF_UINT8 = 0,
    MGPU_GGUF_INT8 = 1,
    MGPU_GGUF_UINT16 = 2,
    MGPU_GGUF_INT16 = 3,
    MGPU_GGUF_UINT32 = 4,
    MGPU_GGUF_INT32 = 5,
    MGPU_GGUF_FLOAT32 = 6,
    MGPU_GGUF_BOOL = 7,
    MGPU_GGUF_STRING = 8,
    MGPU_GGUF_ARRAY = 9,
    MGPU_GGUF_UINT64 = 10,
    MGPU_GGUF_INT64 = 11,
    MGPU_GGUF_FLOAT64 = 12,
    MGPU_GGUF_TYPE_COUNT
} mgpu_gguf_type;

typedef struct mgpu_gguf_value mgpu_gguf_value;
struct mgpu_gguf_value {
    mgpu_gguf_type type;
    union {
        uint64_t u64; /* UINT8/16/32/64 */
        int64_t i64;  /* INT8/16/32/64 */
        double f64;   /* FLOAT32/64 */
        bool b;
        struct {
            const char *data; /* NUL-terminated copy; may contain inner NULs */
            uint64_t length;
        } string;
        struct {
            mgpu_gguf_type elem_type;
            uint64_t count;
            /* Scalar elements stay in the file as stored (little-endian);
             * read them with mgpu_gguf_array_get. */
            const void *raw;
            /* Strings and nested arrays are decoded here. */
            const mgpu_gguf_value *items;
        } array;
    };
};

const char *mgpu_gguf_type_name_of(mgpu_gguf_type type);
/* Element i of an array value, decoded; false if out of range. */
bool mgpu_gguf_array_get(const mgpu_gguf_value *array, uint64_t i, mgpu_gguf_value *out);

typedef struct mgpu_gguf mgpu_gguf;

mgpu_status mgpu_gguf_open(const char *path, mgpu_gguf **out, mgpu_error *err);
/* As mgpu_safetensors_open_memory: the buffer must outlive the handle. */
mgpu_status mgpu_gguf_open_memory(const void *data, uint64_t size, const char *label,
                                  mgpu_gguf **out, mgpu_error *err);
void mgpu_gguf_close(mgpu_gguf *gguf);

uint32_t mgpu_gguf_version(const mgpu_gguf *gguf);
uint32_t mgpu_gguf_alignment(const mgpu_gguf *gguf);
uint64_t mgpu_gguf_data_offset(const mgpu_gguf *gguf);
uint64_t mgpu_gguf_file_bytes(const mgpu_gguf *gguf);

size_t mgpu_gguf_kv_count(const mgpu_gguf *gguf);
const char *mgpu_gguf_kv_key(const mgpu_gguf *gguf, size_t index);
const mgpu_gguf_value *mgpu_gguf_kv_value(const mgpu_gguf *gguf, size_t index);
const mgpu_gguf_value *mgpu_gguf_find_kv(const mgpu_gguf *gguf, const char *key);

/* Tensors in the order of the file's tensor infos. */
size_t mgpu_gguf_tensor_count(const mgpu_gguf *gguf);
const mgpu_tensor_info *mgpu_gguf_tensor(const mgpu_gguf *gguf, size_t index);
const mgpu_tensor_info *mgpu_gguf_find(const mgpu_gguf *gguf, const char *name);

/* Writer (version 3). Add keys and declare tensors, then write each tensor's
 * data in declaration order; padding to the alignment is inserted for you.
 * A UINT32 "general.alignment" key sets the alignment (default 32). */
typedef struct mgpu_gguf_writer mgpu_gguf_writer;

mgpu_status mgpu_gguf_writer_create(const char *path, mgpu_gguf_writer **out, mgpu_error *err);
/* Any value, including nested arrays (scalars of an array come from raw). */
mgpu_status mgpu_gguf_writer_add_kv(mgpu_gguf_writer *w, const char *key,
                                    const mgpu_gguf_value *value, mgpu_error *err);
mgpu_status mgpu_gguf_writer_add_string(mgpu_gguf_writer *w, const char *key, const char *value,
                                        mgpu_error *err);
mgpu_status mgpu_gguf_writer_add_u32(mgpu_gguf_writer *w, const char *key, uint32_t value,
                                     mgpu_error *err);
/* shape is row-major; it is written as ne[] (reversed). */
mgpu_status mgpu_gguf_writer_add_tensor(mgpu_gguf_writer *w, const char *name, mgpu_dtype dtype,
                                        int ndim, const uint64_t *shape, mgpu_error *err);
/* NULL data leaves a hole of zeros, for sparse benchmark files. */
mgpu_status mgpu_gguf_writer_write(mgpu_gguf_writer *w, const void *data, uint64_t bytes,
                                   mgpu_error *err);
mgpu_status mgpu_gguf_writer_finish(mgpu_gguf_writer *w, mgpu_error *err);
void mgpu_gguf_writer_abort(mgpu_gguf_writer *w);

#ifdef __cplusplus
}
#endif
#endif
