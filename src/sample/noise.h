/* Seeded Gaussian noise for the initial latent, reproducible from the seed
 * alone: the same seed gives the same numbers on every run, for any thread
 * count and any device placement, because it is always drawn on the host by
 * one sequential generator.
 *
 * The generator follows PyTorch's CPU generator (torch.manual_seed(seed)
 * then torch.randn of a float32 tensor), which is what ComfyUI draws its
 * initial noise with, so a seed names the same noise there and here; see
 * docs/sampling.md for the algorithm, the published values it is checked
 * against, and its precision limits. */
#ifndef MGPU_SAMPLE_NOISE_H
#define MGPU_SAMPLE_NOISE_H

#include <stdint.h>

#include "mgpu/status.h"

enum { MGPU_MT19937_N = 624 };

/* PyTorch's CPU generator state: MT19937 plus the second Box-Muller value
 * the small-tensor path keeps for the next call. */
typedef struct mgpu_noise_generator {
    uint32_t state[MGPU_MT19937_N];
    int next;           /* index of the next word of state to temper */
    int has_cached;     /* a cached standard normal is waiting */
    double cached;
} mgpu_noise_generator;

/* torch.manual_seed(seed): MT19937 seeded with the low 32 bits of the seed,
 * cached normal cleared. */
void mgpu_noise_seed(mgpu_noise_generator *gen, uint64_t seed);

/* One raw 32-bit MT19937 output. */
uint32_t mgpu_noise_next_u32(mgpu_noise_generator *gen);

/* One torch.randn call filling n float32 values (n >= 0), continuing the
 * generator's stream: repeated calls match repeated torch.randn calls. */
mgpu_status mgpu_noise_fill(mgpu_noise_generator *gen, float *out, int64_t n, mgpu_error *err);

/* torch.manual_seed(seed); torch.randn(n). For a batch, draw the whole
 * [B, C, H, W] tensor in one call, as ComfyUI does: image b of a batch is
 * not the same as a batch of one with the same seed. */
mgpu_status mgpu_noise_randn(uint64_t seed, float *out, int64_t n, mgpu_error *err);

#endif
