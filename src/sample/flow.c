/* FLUX flow-matching schedules (BFL flux src/flux/sampling.py and ComfyUI
 * comfy/model_sampling.py, comfy/samplers.py simple_scheduler,
 * comfy_extras ModelSamplingFlux node; formulas in docs/sampling.md). */
#include <math.h>

#include "core/error.h"
#include "sample/flow.h"

int64_t mgpu_flow_image_tokens(int64_t width, int64_t height)
{
    if (width <= 0 || height <= 0)
        return 0;
    return ((height + 15) / 16) * ((width + 15) / 16);
}

double mgpu_flow_flux_mu(int64_t image_tokens)
{
    /* Same arithmetic order as BFL: m = (y2 - y1) / (x2 - x1), b = y1 - m x1. */
    const double x1 = 256.0, y1 = 0.5, x2 = 4096.0, y2 = 1.15;
    double m = (y2 - y1) / (x2 - x1);
    double b = y1 - m * x1;
    return m * (double)image_tokens + b;
}

double mgpu_flow_time_shift(double mu, double t)
{
    if (!(t > 0.0)) /* also NaN */
        return 0.0;
    if (t >= 1.0)
        return 1.0;
    return 1.0 / (1.0 + exp(-mu) * (1.0 / t - 1.0));
}

/* ComfyUI simple_scheduler: ss = len/steps; entry -(1 + int(i*ss)) of an
 * ascending table whose entry k (0-based) is at t = (k+1)/len. So step i
 * reads t = (len - int(i * ss)) / len, in the same double arithmetic. */
static double comfy_simple_t(int table_len, int steps, int i)
{
    double ss = (double)table_len / (double)steps;
    int64_t back = (int64_t)((double)i * ss);
    return (double)(table_len - back) / (double)table_len;
}

mgpu_status mgpu_flow_schedule(mgpu_flow_kind kind, int64_t image_tokens, int steps, double *sigmas,
                               mgpu_error *err)
{
    if (!sigmas)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "flow schedule: sigmas is NULL");
    if (steps < 1 || steps > MGPU_FLOW_MAX_STEPS)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "flow schedule: steps %d outside 1..%d", steps,
                              MGPU_FLOW_MAX_STEPS);
    int shifted = kind == MGPU_FLOW_FLUX_DEV || kind == MGPU_FLOW_FLUX_DEV_COMFY;
    if (kind != MGPU_FLOW_FLUX_DEV && kind != MGPU_FLOW_FLUX_SCHNELL &&
        kind != MGPU_FLOW_FLUX_DEV_COMFY && kind != MGPU_FLOW_FLUX_SCHNELL_COMFY)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "flow schedule: unknown kind %d", (int)kind);
    if (shifted && (image_tokens < 1 || image_tokens > MGPU_FLOW_MAX_IMAGE_TOKENS))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "flow schedule: image token count %lld outside 1..%lld",
                              (long long)image_tokens, (long long)MGPU_FLOW_MAX_IMAGE_TOKENS);
    double mu = shifted ? mgpu_flow_flux_mu(image_tokens) : 0.0;
    for (int i = 0; i < steps; i++) {
        double t;
        switch (kind) {
        case MGPU_FLOW_FLUX_DEV_COMFY: t = comfy_simple_t(10000, steps, i); break;
        case MGPU_FLOW_FLUX_SCHNELL_COMFY: t = comfy_simple_t(1000, steps, i); break;
        default: t = 1.0 - (double)i / (double)steps; break; /* linspace(1, 0, steps+1) */
        }
        sigmas[i] = shifted ? mgpu_flow_time_shift(mu, t) : t;
    }
    sigmas[steps] = 0.0; /* linspace's last point; ComfyUI appends 0 */
    return MGPU_OK;
}

void mgpu_flow_euler_step(float *x, const float *v, int64_t n, double sigma, double sigma_next)
{
    /* dt once in double, then float per element like the model's dtype. */
    float dt = (float)(sigma_next - sigma);
    for (int64_t i = 0; i < n; i++)
        x[i] += dt * v[i];
}
