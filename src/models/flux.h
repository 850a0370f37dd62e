/* The FLUX.1 diffusion transformer (dev and schnell): 19 double-stream and
 * 38 single-stream blocks at full size, with time, guidance and pooled-text
 * embeddings, 3-axis rotary positions over text and image tokens, and 2x2
 * latent packing. Sizes come from the tensor shapes; what the weights do
 * not store (head count, rope axes, theta) takes FLUX.1's published values
 * unless overridden. Written once against the tensor source and the
 * backend interface. Internal to libmgpu. */
#ifndef MGPU_MODELS_FLUX_H
#define MGPU_MODELS_FLUX_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "exec/source.h"
#include "mgpu/model.h"

typedef struct mgpu_flux_config {
    int64_t hidden;       /* 3072 */
    int64_t heads;        /* 24: not in the weights */
    int64_t head_dim;     /* hidden / heads */
    int64_t mlp_hidden;   /* 12288 */
    int64_t in_channels;  /* 64: 16 latent channels x 2 x 2 */
    int64_t out_channels; /* 64 */
    int64_t context_dim;  /* 4096: T5-XXL */
    int64_t vec_dim;      /* 768: CLIP-L pooled */
    int depth_double, depth_single;
    int axes_dim[3]; /* 16, 56, 56: not in the weights */
    float theta;     /* 10000: not in the weights */
    bool guidance;   /* dev has a guidance embedding, schnell not */
} mgpu_flux_config;

typedef struct mgpu_flux mgpu_flux;

/* Overrides of the values the weights do not store; zero keeps FLUX.1's. */
typedef struct mgpu_flux_settings {
    int64_t heads;
    int axes_dim[3];
    float theta;
} mgpu_flux_settings;

/* Checks every tensor FLUX needs is present with the shape the config
 * implies; errors name the missing or misshapen tensor. */
mgpu_status mgpu_flux_load(const mgpu_model *model, int component, const mgpu_flux_settings *set,
                           mgpu_flux **out, mgpu_error *err);
void mgpu_flux_free(mgpu_flux *flux);
const mgpu_flux_config *mgpu_flux_get_config(const mgpu_flux *flux);

typedef struct mgpu_flux_inputs {
    int64_t batch, height, width; /* latent size; height and width even */
    int64_t text_len;
    const float *x;        /* [batch][16][height][width] */
    const float *timestep; /* [batch], the sigma in [0, 1] */
    const float *context;  /* [batch][text_len][context_dim] */
    const float *y;        /* [batch][vec_dim] */
    const float *guidance; /* [batch], required when config.guidance */
} mgpu_flux_inputs;

/* Host inputs, host out: [batch][out_channels / 4][height][width]. The
 * weights come from `source` as pointers on `be`'s device. */
mgpu_status mgpu_flux_forward(const mgpu_flux *flux, const mgpu_tensor_source *source,
                              const mgpu_flux_inputs *in, float *out, mgpu_backend *be,
                              mgpu_error *err);

#endif
