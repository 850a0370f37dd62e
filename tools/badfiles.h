/* badfiles: small valid safetensors and GGUF files and many malformed
 * variants of them, built in memory by our own serializer, each with the
 * status and the error-message substring the readers must produce. Shared by
 * the mgpu-badfiles tool, tests/formats/test_malformed.c and the fuzz seed
 * corpus, so the three always agree on what a case is. */
#ifndef MGPU_TOOLS_BADFILES_H
#define MGPU_TOOLS_BADFILES_H

#include <stddef.h>
#include <stdint.h>

#include "mgpu/model.h"
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

#endif
