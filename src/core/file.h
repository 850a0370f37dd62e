/* Read-only file mappings and crash-safe output files (written under a
 * temporary name in the same folder, renamed into place only when complete). */
#ifndef MGPU_CORE_FILE_H
#define MGPU_CORE_FILE_H

#include <stdint.h>
#include <stdio.h>

#include "mgpu/status.h"

typedef struct mgpu_mapped_file {
    const uint8_t *data; /* NULL for an empty file */
    uint64_t size;
} mgpu_mapped_file;

mgpu_status mgpu_file_map(const char *path, mgpu_mapped_file *out, mgpu_error *err);
void mgpu_file_unmap(mgpu_mapped_file *file);

/* Reads the whole (small) file into a NUL-terminated malloc'd buffer. */
mgpu_status mgpu_file_read_all(const char *path, uint64_t max_bytes, char **out, uint64_t *size,
                               mgpu_error *err);

typedef struct mgpu_output_file {
    FILE *stream;
    char *final_path;
    char *temp_path;
} mgpu_output_file;

mgpu_status mgpu_output_open(const char *path, mgpu_output_file *out, mgpu_error *err);
/* Flushes, syncs and renames into place. Closes in every case. */
mgpu_status mgpu_output_commit(mgpu_output_file *file, mgpu_error *err);
/* Removes the temporary file. Safe on a file that was never opened. */
void mgpu_output_abort(mgpu_output_file *file);

#endif
