/* Decoded images: the VAE's planar float output to 8-bit interleaved RGB. */
#ifndef MGPU_IMAGE_IMAGE_H
#define MGPU_IMAGE_IMAGE_H

#include <stdint.h>

#include "mgpu/status.h"

/* chw is one image [3][height][width] in nominally [-1, 1]; rgb receives
 * height * width * 3 bytes, row-major, R G B per pixel:
 *   value = round(clamp((x + 1) / 2, 0, 1) * 255), halves rounded up,
 * so -1 -> 0, 0 -> 128, 1 -> 255; out-of-range values clamp and NaN gives 0.
 * A batch is the caller's loop, one image at a time. */
mgpu_status mgpu_image_to_rgb8(const float *chw, int width, int height, uint8_t *rgb,
                               mgpu_error *err);

#endif
