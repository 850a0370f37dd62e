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

/* Weights of scaled-fp8 checkpoints (NAME.scale_weight or NAME.weight_scale
 * beside NAME.weight) are refused by mgpu_loader_need: used alone they
 * would compute the wrong thing. A layer that multiplies its output by a
 * scale takes them through mgpu_loader_need_scaled: a one-number
 * NAME.scale_weight (ComfyUI's *_fp8_scaled) lands in *scale (1 without
 * one); other forms (per-channel weight_scale) are still refused. */
mgpu_status mgpu_loader_need_scaled(const mgpu_loader *l, const char *name, int ndim,
                                    const int64_t *shape, const mgpu_model_tensor **out,
                                    float *scale);

/* NAME.weight with this shape and NAME.bias [shape[0]], as a Linear or a
 * Conv2d stores them. */
mgpu_status mgpu_loader_need_with_bias(const mgpu_loader *l, const char *name, int ndim,
                                       const int64_t *shape, const mgpu_model_tensor **weight,
                                       const mgpu_model_tensor **bias);

/* The index of the component's block `name` in the model view (what the
 * tensor source's enter/leave take), -1 if there is none. */
int mgpu_loader_block(const mgpu_loader *l, const char *name);

#endif
