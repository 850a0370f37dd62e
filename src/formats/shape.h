/* Shape arithmetic shared by the file formats: overflow-checked element
 * counts and the one way shapes are printed. */
#ifndef MGPU_FORMATS_SHAPE_H
#define MGPU_FORMATS_SHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Product of the dimensions (1 for a scalar); false on 64-bit overflow. */
bool mgpu_shape_elements(const uint64_t *shape, int ndim, uint64_t *out);
/* "[3072, 64]"; truncated to fit. */
void mgpu_shape_format(const uint64_t *shape, int ndim, char *buf, size_t size);

#endif
