/* badfiles: small valid safetensors and GGUF files and many malformed
 * variants of them, built in memory by our own serializer, each with the
 * status and the error-message substring the readers must produce; and
 * checkers that walk everything an open handle exposes. Shared by the
 * mgpu-badfiles tool, tests/formats/test_malformed.c and the fuzz targets,
 * so they agree on what a case is and on what a consistent handle is. */
#ifndef MGPU_TOOLS_BADFILES_H
#define MGPU_TOOLS_BADFILES_H

#include <stddef.h>
#include <stdint.h>

#include "mgpu/gguf.h"
#include "mgpu/model.h"
#include "mgpu/safetensors.h"
#include "mgpu/status.h"

enum { BADFILE_NAME_BYTES = 64, BADFILE_EXPECT_BYTES = 128 };

typedef struct badfile {
    char name[BADFILE_NAME_BYTES]; /* file name, e.g. "gguf_bad_magic.gguf" */
    mgpu_file_format format;       /* the reader the case is aimed at */
    mgpu_status status;            /* expected status; MGPU_OK for a valid file */
    /* Substring of mgpu_model_open's message ("" for a valid file). */
    char expect[BADFILE_EXPECT_BYTES];
    /* Substring of the *_open_memory message when it differs from `expect`
     * ("" when not): mgpu_model_open picks the reader by content, while the
     * direct call uses the reader the case is aimed at. */
    char expect_memory[BADFILE_EXPECT_BYTES];
    uint8_t *data;
    size_t size;
} badfile;

typedef struct badfile_set {
    badfile *items;
    size_t count, capacity;
} badfile_set;

/* Builds every case. 0 on success; -1 when out of memory (the set is then
 * already freed). */
int badfiles_build(badfile_set *set);
void badfiles_free(badfile_set *set);

/* The substring expected from the *_open_memory call of a malformed case. */
const char *badfiles_expect_memory(const badfile *f);

/* Writes the cases whose format is `format` (0 for all) into the existing
 * folder `dir`, plus dir/manifest.tsv (one "name<TAB>expected substring" line
 * per malformed file) unless `manifest` is 0. 0 on success; -1 with a message
 * in `error` otherwise. */
int badfiles_write(const badfile_set *set, const char *dir, int format, int manifest, char *error,
                   size_t error_size);

/* Walk everything a handle opened from the image data[0, size) exposes:
 * every tensor info (checked against its shape, dtype and the image), each
 * lookup by name, every metadata entry or key-value pair with nested arrays
 * read element by element, and each tensor's bytes decoded to f32. NULL when
 * all is consistent, else a description of the first problem (in a static
 * buffer). */
const char *badfiles_check_safetensors(const mgpu_safetensors *st, const void *data,
                                       uint64_t size);
const char *badfiles_check_gguf(const mgpu_gguf *gguf, const void *data, uint64_t size);

/* What is wrong with a failure report, or NULL, for any call: a failing
 * status equal to err->status, no handle left behind, and a message that is
 * non-empty, NUL-terminated and (unless `lax`) one line without control
 * characters below 0x20. */
const char *badfiles_check_error(mgpu_status status, const void *handle, const mgpu_error *err,
                                 int lax);

/* What is wrong with a failed open, or NULL: the status must be a format,
 * unsupported or out-of-memory one, equal to err->status, the handle must be
 * NULL, and the message must start with `label`, be NUL-terminated and (unless
 * `lax`) be one line of printable text. */
const char *badfiles_check_failure(mgpu_status status, const void *handle, const mgpu_error *err,
                                   const char *label, int lax);

#endif
