/* An independent reference of the FLUX.1 DiT forward pass for the tests:
 * written from the published model definition (BFL's flux and ComfyUI's
 * comfy/ldm/flux), not from src/models/flux.c, and as plainly as possible.
 * Weights are read by stripped name from the model view and decoded with
 * mgpu_dequantize; everything after that runs in double precision with
 * naive loops (linear layers as triple loops, attention with the full score
 * matrix), so it is only meant for the tiny synthetic models. */
#ifndef MGPU_TESTS_FLUX_REFERENCE_H
#define MGPU_TESTS_FLUX_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "mgpu/model.h"

/* The same fields as mgpu_flux_inputs. */
typedef struct mgpu_flux_ref_inputs {
    int64_t batch, height, width; /* latent size; height and width even */
    int64_t text_len;
    const float *x;        /* [batch][16][height][width] */
    const float *timestep; /* [batch], the sigma; the embedding uses t * 1000 */
    const float *context;  /* [batch][text_len][context_dim] */
    const float *y;        /* [batch][vec_dim] */
    const float *guidance; /* [batch]; required when the model has guidance_in */
} mgpu_flux_ref_inputs;

/* Runs the FLUX forward pass of `component` of `model` with `heads`
 * attention heads, rope axes `axes_dim` (summing to the head dimension) and
 * rope base `theta`. out: [batch][out_channels / 4][height][width]. Returns
 * 0 on success, -1 with a message in err otherwise. */
int flux_reference_forward(const mgpu_model *model, int component, int heads,
                           const int axes_dim[3], double theta, const mgpu_flux_ref_inputs *in,
                           float *out, char *err, size_t err_size);

#endif
