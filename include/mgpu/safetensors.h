/* safetensors files: an 8-byte little-endian header length, a JSON header
 * mapping tensor names to {dtype, shape, data_offsets} (plus an optional
 * string-to-string "__metadata__"), then the data. Opened by mmap and
 * validated completely before any tensor is handed out. */
#ifndef MGPU_SAFETENSORS_H
#define MGPU_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "mgpu/status.h"
#include "mgpu/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mgpu_safetensors mgpu_safetensors;

mgpu_status mgpu_safetensors_open(const char *path, mgpu_safetensors **out, mgpu_error *err);
/* Parses a file image held by the caller, which must outlive the handle.
 * `label` names it in error messages. */
mgpu_status mgpu_safetensors_open_memory(const void *data, uint64_t size, const char *label,
                                         mgpu_safetensors **out, mgpu_error *err);
void mgpu_safetensors_close(mgpu_safetensors *st);

/* Tensors in data-offset order. */
size_t mgpu_safetensors_tensor_count(const mgpu_safetensors *st);
const mgpu_tensor_info *mgpu_safetensors_tensor(const mgpu_safetensors *st, size_t index);
const mgpu_tensor_info *mgpu_safetensors_find(const mgpu_safetensors *st, const char *name);

size_t mgpu_safetensors_metadata_count(const mgpu_safetensors *st);
void mgpu_safetensors_metadata(const mgpu_safetensors *st, size_t index, const char **key,
                               const char **value);
uint64_t mgpu_safetensors_header_bytes(const mgpu_safetensors *st);
uint64_t mgpu_safetensors_file_bytes(const mgpu_safetensors *st);

/* Writer. Declare every tensor first, then write their data in the same
 * order; the file appears under `path` only after a successful finish. */
typedef struct mgpu_safetensors_writer mgpu_safetensors_writer;

mgpu_status mgpu_safetensors_writer_create(const char *path, mgpu_safetensors_writer **out,
                                           mgpu_error *err);
mgpu_status mgpu_safetensors_writer_add_metadata(mgpu_safetensors_writer *w, const char *key,
                                                 const char *value, mgpu_error *err);
mgpu_status mgpu_safetensors_writer_add_tensor(mgpu_safetensors_writer *w, const char *name,
                                               mgpu_dtype dtype, int ndim, const uint64_t *shape,
                                               mgpu_error *err);
/* Appends data bytes (the header is written on the first call). NULL data
 * leaves a hole of zeros without writing it, for sparse benchmark files. */
mgpu_status mgpu_safetensors_writer_write(mgpu_safetensors_writer *w, const void *data,
                                          uint64_t bytes, mgpu_error *err);
/* Checks every declared byte was written, then renames into place. Frees w
 * whatever the outcome. */
mgpu_status mgpu_safetensors_writer_finish(mgpu_safetensors_writer *w, mgpu_error *err);
/* Discards the partial file and frees w. */
void mgpu_safetensors_writer_abort(mgpu_safetensors_writer *w);

#ifdef __cplusplus
}
#endif
#endif
