/* See shape.h. */
#include <inttypes.h>
#include <stdio.h>

#include "formats/shape.h"

bool mgpu_shape_elements(const uint64_t *shape, int ndim, uint64_t *out)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && n > UINT64_MAX / shape[i])
            return false;
        n *= shape[i];
    }
    *out = n;
    return true;
}

void mgpu_shape_format(const uint64_t *shape, int ndim, char *buf, size_t size)
{
    size_t used = 0;
    if (size == 0)
        return;
    buf[0] = '\0';
    int w = snprintf(buf, size, "[");
    used = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < ndim && used < size; i++) {
        w = snprintf(buf + used, size - used, "%s%" PRIu64, i ? ", " : "", shape[i]);
        if (w < 0)
            return;
        used += (size_t)w;
    }
    if (used < size)
        snprintf(buf + used, size - used, "]");
}
