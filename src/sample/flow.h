/* Rectified-flow (flow-matching) sampling for FLUX.1: the sigma schedule
 * and the Euler step. The model predicts a velocity v; one step moves the
 * latent along it: x_next = x + (sigma_next - sigma) * v. Sigma is also the
 * timestep the FLUX model is given (BFL passes t itself; ComfyUI's
 * ModelSamplingFlux.timestep(sigma) is sigma). Formulas and sources: see
 * docs/sampling.md. */
#ifndef MGPU_SAMPLE_FLOW_H
#define MGPU_SAMPLE_FLOW_H

#include <stdint.h>

#include "mgpu/status.h"

typedef enum mgpu_flow_kind {
    /* BFL flux sampling.py get_schedule(shift=True): linspace(1, 0, steps+1)
     * through time_shift(mu, 1, t), mu linear in the image token count. */
    MGPU_FLOW_FLUX_DEV = 0,
    /* BFL get_schedule(shift=False), used for flux-schnell: linspace(1, 0). */
    MGPU_FLOW_FLUX_SCHNELL,
    /* ComfyUI "simple" scheduler over ModelSamplingFlux's 10000-entry sigma
     * table with the shift the ModelSamplingFlux node derives from the image
     * size: the dev sigmas with t quantised to the table's grid. */
    MGPU_FLOW_FLUX_DEV_COMFY,
    /* ComfyUI "simple" over ModelSamplingDiscreteFlow's 1000-entry table
     * with shift 1 (FLUX.1-schnell's sampling_settings). */
    MGPU_FLOW_FLUX_SCHNELL_COMFY,
} mgpu_flow_kind;

enum { MGPU_FLOW_MAX_STEPS = 1000 };
#define MGPU_FLOW_MAX_IMAGE_TOKENS (INT64_C(1) << 24)

/* Image tokens of a FLUX latent for a width x height image: the VAE
 * downsamples by 8 and the transformer packs 2x2 latent patches, so
 * ceil(h/16) * ceil(w/16) (BFL get_noise/prepare round up the same way).
 * 0 for a non-positive size. */
int64_t mgpu_flow_image_tokens(int64_t width, int64_t height);

/* mu = base_shift + (max_shift - base_shift) * (tokens - 256) / (4096 - 256)
 * with base_shift 0.5 and max_shift 1.15: BFL get_lin_function and the
 * ComfyUI ModelSamplingFlux node's shift. */
double mgpu_flow_flux_mu(int64_t image_tokens);

/* time_shift(mu, 1, t) = e^mu / (e^mu + (1/t - 1)), written as
 * 1 / (1 + e^-mu (1/t - 1)) so a large mu cannot overflow; 0 at t <= 0,
 * 1 at t >= 1. */
double mgpu_flow_time_shift(double mu, double t);

/* Fills sigmas[0..steps] (steps + 1 values, 1 down to 0, non-increasing and
 * strictly decreasing for every realistic image size). steps must be in
 * 1..MGPU_FLOW_MAX_STEPS; image_tokens in 1..MGPU_FLOW_MAX_IMAGE_TOKENS for
 * the dev kinds (ignored by the schnell kinds). */
mgpu_status mgpu_flow_schedule(mgpu_flow_kind kind, int64_t image_tokens, int steps, double *sigmas,
                               mgpu_error *err);

/* One Euler step in place: x[i] += (sigma_next - sigma) * v[i]. */
void mgpu_flow_euler_step(float *x, const float *v, int64_t n, double sigma, double sigma_next);

#endif
