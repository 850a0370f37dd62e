/* An independent reference of the FLUX autoencoder for the tests: written
 * from the published model (BFL's flux/modules/autoencoder.py), not from
 * src/models/vae.c, as plainly as possible. The structure comes from the
 * caller (the synthetic model's known sizes), weights are read by stripped
 * name and decoded with mgpu_dequantize, and everything after that runs in
 * double precision with naive loops (direct convolutions, attention with
 * the full score matrix): only for tiny models and images. */
#ifndef MGPU_TESTS_VAE_REFERENCE_H
#define MGPU_TESTS_VAE_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "mgpu/model.h"

typedef struct vae_ref_config {
    int levels;
    int64_t channels[8]; /* per level */
    int res_blocks;      /* per encoder level; decoder levels have one more */
    int64_t z_channels, image_channels;
    double scale_factor, shift_factor;
} vae_ref_config;

/* z [z][h][w] in the diffusion latent space -> image [3][8h][8w] (for 4
 * levels). Returns 0, or -1 with a message in err. */
int vae_reference_decode(const mgpu_model *model, int component, const vae_ref_config *cfg,
                         const float *z, int64_t h, int64_t w, double *image, char *err,
                         size_t err_size);

/* image [3][H][W] -> the scaled and shifted posterior mean [z][H/8][W/8]. */
int vae_reference_encode(const mgpu_model *model, int component, const vae_ref_config *cfg,
                         const float *image, int64_t H, int64_t W, double *z, char *err,
                         size_t err_size);

#endif
