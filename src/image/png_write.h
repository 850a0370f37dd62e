/* PNG output: 8-bit RGB with text chunks that carry the generation
 * parameters, written crash-safe (temporary name in the same folder,
 * renamed into place only when complete; nothing is left on failure). */
#ifndef MGPU_IMAGE_PNG_WRITE_H
#define MGPU_IMAGE_PNG_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "mgpu/status.h"

/* One text chunk. key: 1..79 printable ASCII characters, no leading,
 * trailing or doubled spaces (the PNG keyword rules, kept to ASCII so the
 * key means the same in every reader). text: UTF-8; pure ASCII goes in a
 * tEXt chunk, anything else in an uncompressed iTXt chunk (tEXt is
 * Latin-1). Keys in use: "parameters" (A1111-style summary), "prompt",
 * "mgpu" (JSON of everything needed to regenerate). */
typedef struct mgpu_png_text {
    const char *key;
    const char *text;
} mgpu_png_text;

enum { MGPU_PNG_KEY_MAX = 79 };

/* rgb: height rows of width * 3 bytes (R G B). Width and height must be
 * positive; libpng itself rejects more than 1,000,000 either way (its
 * default user limit). */
mgpu_status mgpu_png_write(const char *path, const uint8_t *rgb, int width, int height,
                           const mgpu_png_text *texts, size_t n_texts, mgpu_error *err);

#endif
