/* The FLUX.1 autoencoder (BFL's flux/modules/autoencoder.py; the LDM
 * Encoder/Decoder of ComfyUI's comfy/ldm/modules/diffusionmodules/model.py
 * without quant convs): 16 latent channels, 8x spatial compression at full
 * size. Sizes (levels, channels per level, res blocks, latent channels) come
 * from the tensor shapes; what the weights do not store takes FLUX's
 * published values: GroupNorm of 32 groups with eps 1e-6, latent scale
 * 0.3611 and shift 0.1159. Written against the compute backend (backend.h)
 * and a tensor source. Internal to libmgpu. */
#ifndef MGPU_MODELS_VAE_H
#define MGPU_MODELS_VAE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "exec/source.h"
#include "mgpu/model.h"

enum { MGPU_VAE_MAX_LEVELS = 8 };

typedef struct mgpu_vae_config {
    int64_t z_channels;     /* 16 */
    int64_t image_channels; /* 3 */
    int levels;             /* 4 */
    int64_t channels[MGPU_VAE_MAX_LEVELS]; /* per level: 128, 256, 512, 512 */
    int num_res_blocks;     /* 2 in the encoder; the decoder has one more per level */
    int64_t downscale;      /* 2^(levels - 1): 8 */
    int64_t groups;         /* 32: not in the weights */
    float eps;              /* 1e-6: not in the weights */
    float scale_factor;     /* 0.3611: not in the weights */
    float shift_factor;     /* 0.1159: not in the weights */
    bool has_encoder;       /* a decoder-only checkpoint can still decode */
} mgpu_vae_config;

typedef struct mgpu_vae mgpu_vae;

/* Checks every tensor of the decoder (and of the encoder when the
 * checkpoint has one) is present with the shape the config implies; errors
 * name the missing or misshapen tensor. */
mgpu_status mgpu_vae_load(const mgpu_model *model, int component, mgpu_vae **out, mgpu_error *err);
void mgpu_vae_free(mgpu_vae *vae);
const mgpu_vae_config *mgpu_vae_get_config(const mgpu_vae *vae);

/* Tiled decoding, in latent pixels: tiles of tile x tile (clipped to the
 * latent) overlapping by `overlap`, blended with linear ramps across each
 * overlap. tile 0 (or a NULL tiling, or a tile covering the latent) decodes
 * the whole latent at once. 0 <= overlap < tile. */
typedef struct mgpu_vae_tiling {
    int64_t tile;
    int64_t overlap;
} mgpu_vae_tiling;

/* Device activation bytes a decode of an h x w latent allocates (with
 * tiling, those of one tile: independent of the latent's size). Excludes
 * weights and the backend's own bounded scratch (the CPU conv's im2col
 * bands, MGPU_CPU_CONV_BAND_BYTES x 2). 0 for an invalid size or tiling. */
uint64_t mgpu_vae_decode_bytes(const mgpu_vae *vae, int64_t h, int64_t w,
                               const mgpu_vae_tiling *tiling);
/* Likewise for encoding an H x W image (never tiled). */
uint64_t mgpu_vae_encode_bytes(const mgpu_vae *vae, int64_t H, int64_t W);

/* z: host [z_channels][h][w] in the diffusion model's latent space (decode
 * applies z / scale_factor + shift_factor first). image: host
 * [image_channels][downscale * h][downscale * w], nominally in [-1, 1].
 * With tiling, the host also holds a double accumulator of the image's
 * size. */
mgpu_status mgpu_vae_decode(const mgpu_vae *vae, mgpu_backend *be, const mgpu_tensor_source *src,
                            const float *z, int64_t h, int64_t w, const mgpu_vae_tiling *tiling,
                            float *image, mgpu_error *err);

/* image: host [image_channels][H][W], H and W multiples of downscale.
 * z: host [z_channels][H / downscale][W / downscale], the posterior mean in
 * the diffusion model's latent space ((mean - shift_factor) * scale_factor;
 * no sampling, so the result is deterministic). */
mgpu_status mgpu_vae_encode(const mgpu_vae *vae, mgpu_backend *be, const mgpu_tensor_source *src,
                            const float *image, int64_t H, int64_t W, float *z, mgpu_error *err);

#endif
