/* What every model's load step shares: finding a component's tensors by
 * stripped name and checking each one's shape and that it holds numbers,
 * with one message naming the model and the tensor at fault. Internal. */
#ifndef MGPU_MODELS_LOADER_H
#define MGPU_MODELS_LOADER_H

#include <stdint.h>

#include "mgpu/model.h"
#include "mgpu/status.h"

typedef struct mgpu_loader {
    const mgpu_model *model;
    int component;
    const char *label; /* "FLUX", "CLIP" ...: the messages' prefix */
    mgpu_error *err;
} mgpu_loader;

/* NULL if the component has no tensor of that name. */
const mgpu_model_tensor *mgpu_loader_find(const mgpu_loader *l, const char *name);

/* The tensor `name` with exactly this shape and a floating dtype;
 * MGPU_ERR_FORMAT naming it otherwise. */
mgpu_status mgpu_loader_need(const mgpu_loader *l, const char *name, int ndim,
                             const int64_t *shape, const mgpu_model_tensor **out);

#endif
