/* Planar float image to interleaved RGB8. */
#include <math.h>
#include <stddef.h>

#include "core/error.h"
#include "image/image.h"

static uint8_t to_byte(float x)
{
    /* Double keeps (x + 1) / 2 * 255 free of float rounding, so a value just
     * below a half-step never rounds up. The comparisons are written so NaN
     * fails both and lands on 0. */
    double v = ((double)x + 1.0) * 0.5;
    if (!(v > 0.0))
        return 0;
    if (v >= 1.0)
        return 255;
    return (uint8_t)round(v * 255.0); /* v * 255 + 0.5 could itself round up */
}

mgpu_status mgpu_image_to_rgb8(const float *chw, int width, int height, uint8_t *rgb,
                               mgpu_error *err)
{
    if (!chw || !rgb || width <= 0 || height <= 0)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "image to rgb8: invalid arguments (%dx%d, input %s, output %s)", width,
                              height, chw ? "set" : "NULL", rgb ? "set" : "NULL");
    size_t plane = (size_t)width * (size_t)height;
    for (size_t i = 0; i < plane; i++)
        for (size_t c = 0; c < 3; c++)
            rgb[i * 3 + c] = to_byte(chw[c * plane + i]);
    return MGPU_OK;
}
