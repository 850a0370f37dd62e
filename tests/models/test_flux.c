/* The FLUX.1 DiT forward pass (src/models/flux.c) against an independent
 * double-precision reference (flux_reference.c) on tiny synthetic models:
 * flux-dev in F32 with batch 2, flux-schnell as a prefixed Q8_0 GGUF with a
 * non-square latent and overridden rope settings, flux-dev in BF16; and the
 * errors of load and forward (a missing tensor, a model that is not FLUX,
 * an odd latent size, missing guidance). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/source.h"
#include "mgpu/model.h"
#include "mgpu/safetensors.h"
#include "models/flux.h"
#include "models/flux_reference.h"
#include "backend/backend.h"
#include "synth_write.h"
#include "test_models.h"
#include "test_util.h"

/* Max |real - ref| over max |ref| that the comparison accepts. Both sides
 * decode the same stored weights, so the only difference is the real pass
 * running in f32 with its own summation orders: observed 1.7e-7 to 2.2e-7
 * on these cases and at most 5.1e-7 over a sweep of seeds, latent sizes,
 * batch, dtypes and inputs up to 3x larger. 2e-6 keeps a 4-10x margin over
 * that and still fails on subtle mistakes, which were measured by mutating
 * the reference: GELU with erf instead of tanh gives 1e-5 to 1.5e-5,
 * LayerNorm eps 1e-5 instead of 1e-6 gives 4e-5, and wrong rope sign, rope
 * axes, time factor, attention scale or final shift/scale order give 1e-2
 * to 1e-1. (RMSNorm eps 1e-5 gives 9e-7 and goes unnoticed.) A kernel that
 * rounds activations (say to bf16 or q8) would need this loosened. */
#define REL_TOLERANCE 2e-6

/* Deterministic values uniform in [-amp, amp]. */
static void fill(float *v, size_t n, uint64_t seed, float amp)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = amp * (float)((double)(s >> 11) * 0x1p-53 * 2.0 - 1.0);
    }
}

/* Owned input buffers for one forward pass. */
typedef struct case_inputs {
    mgpu_flux_inputs in;
    float *x, *t, *ctx, *y, *g;
} case_inputs;

static case_inputs make_inputs(int64_t batch, int64_t height, int64_t width, int64_t text_len,
                               int64_t ctx_dim, int64_t vec_dim, const float *timesteps,
                               const float *guidance, uint64_t seed)
{
    case_inputs c = {0};
    size_t nx = (size_t)(batch * 16 * height * width);
    c.x = malloc(nx * sizeof *c.x);
    c.t = malloc((size_t)batch * sizeof *c.t);
    c.ctx = malloc((size_t)(batch * text_len * ctx_dim) * sizeof *c.ctx);
    c.y = malloc((size_t)(batch * vec_dim) * sizeof *c.y);
    c.g = guidance ? malloc((size_t)batch * sizeof *c.g) : NULL;
    assert_true(c.x && c.t && c.ctx && c.y && (!guidance || c.g));
    fill(c.x, nx, seed, 1.0f);
    fill(c.ctx, (size_t)(batch * text_len * ctx_dim), seed + 1, 1.0f);
    fill(c.y, (size_t)(batch * vec_dim), seed + 2, 1.0f);
    for (int64_t b = 0; b < batch; b++) {
        c.t[b] = timesteps[b];
        if (guidance)
            c.g[b] = guidance[b];
    }
    c.in = (mgpu_flux_inputs){.batch = batch,
                              .height = height,
                              .width = width,
                              .text_len = text_len,
                              .x = c.x,
                              .timestep = c.t,
                              .context = c.ctx,
                              .y = c.y,
                              .guidance = c.g};
    return c;
}

static void free_inputs(case_inputs *c)
{
    free(c->x);
    free(c->t);
    free(c->ctx);
    free(c->y);
    free(c->g);
}

static mgpu_flux_ref_inputs ref_inputs(const mgpu_flux_inputs *in)
{
    return (mgpu_flux_ref_inputs){.batch = in->batch,
                                  .height = in->height,
                                  .width = in->width,
                                  .text_len = in->text_len,
                                  .x = in->x,
                                  .timestep = in->timestep,
                                  .context = in->context,
                                  .y = in->y,
                                  .guidance = in->guidance};
}

/* max |a - b| / max |b| over n values; b must not be all zeros. */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(isfinite(a[i]));
        double dd = fabs((double)a[i] - (double)b[i]);
        if (dd > diff)
            diff = dd;
        if (fabs((double)b[i]) > scale)
            scale = fabs((double)b[i]);
    }
    assert_true(scale > 0);
    return diff / scale;
}

/* Loads the model, runs the real forward (without and with a thread pool)
 * and the reference, and checks they agree within REL_TOLERANCE. */
static void check_forward(const char *label, const char *path, int64_t heads,
                          const int axes_dim[3], float theta, int set_rope, case_inputs *c)
{
    mgpu_model *m = open_ok(path);
    mgpu_error err = {0};
    mgpu_flux_settings set = {.heads = heads};
    if (set_rope) {
        memcpy(set.axes_dim, axes_dim, sizeof set.axes_dim);
        set.theta = theta;
    }
    mgpu_flux *flux = NULL;
    if (mgpu_flux_load(m, 0, &set, &flux, &err) != MGPU_OK)
        fail_msg("%s: load: %s", label, err.message);
    const mgpu_flux_config *cfg = mgpu_flux_get_config(flux);
    assert_int_equal(cfg->hidden, 256);
    assert_int_equal(cfg->heads, heads);
    assert_int_equal(cfg->head_dim, 256 / heads);
    assert_int_equal(cfg->mlp_hidden, 1024);
    assert_int_equal(cfg->depth_double, 2);
    assert_int_equal(cfg->depth_single, 2);
    for (int a = 0; a < 3; a++)
        assert_int_equal(cfg->axes_dim[a], axes_dim[a]);
    assert_true(cfg->theta == theta);

    const mgpu_flux_inputs *in = &c->in;
    size_t n = (size_t)(in->batch * (cfg->out_channels / 4) * in->height * in->width);
    float *real = malloc(n * sizeof *real);
    float *pooled = malloc(n * sizeof *pooled);
    float *want = malloc(n * sizeof *want);
    assert_true(real && pooled && want);

    mgpu_tensor_source source = mgpu_resident_source();
    mgpu_backend *one = NULL, *four = NULL;
    if (mgpu_backend_cpu_create(1, &one, &err) != MGPU_OK ||
        mgpu_backend_cpu_create(4, &four, &err) != MGPU_OK)
        fail_msg("backend: %s", err.message);
    if (mgpu_flux_forward(flux, &source, in, real, one, &err) != MGPU_OK)
        fail_msg("%s: forward: %s", label, err.message);
    if (mgpu_flux_forward(flux, &source, in, pooled, four, &err) != MGPU_OK)
        fail_msg("%s: forward with 4 threads: %s", label, err.message);
    mgpu_backend_free(one);
    mgpu_backend_free(four);

    char msg[256];
    mgpu_flux_ref_inputs rin = ref_inputs(in);
    if (flux_reference_forward(m, 0, (int)heads, axes_dim, theta, &rin, want, msg, sizeof msg))
        fail_msg("%s: reference: %s", label, msg);

    double d_real = rel_diff(real, want, n), d_pool = rel_diff(pooled, want, n);
    print_message("%s: max|real-ref|/max|ref| = %.3g (1 thread), %.3g (4 threads)\n", label,
                  d_real, d_pool);
    assert_true(d_real <= REL_TOLERANCE);
    assert_true(d_pool <= REL_TOLERANCE);

    /* The bf16 GEMM, where this CPU has it: inputs and weights of every
     * linear rounded to 8 significant bits (2^-9 relative), so the output
     * moves by about that much per layer; 1e-2 of the output's scale allows
     * the ~20 layers of this model to add up without hiding a wrong result
     * (those are off by O(1)). */
    mgpu_backend *bf = NULL;
    if (mgpu_backend_cpu_create(2, &bf, &err) != MGPU_OK)
        fail_msg("backend: %s", err.message);
    if (mgpu_backend_set_gemm(bf, MGPU_GEMM_BF16, &err) == MGPU_OK) {
        if (mgpu_flux_forward(flux, &source, in, pooled, bf, &err) != MGPU_OK)
            fail_msg("%s: forward in bf16: %s", label, err.message);
        double d_bf16 = rel_diff(pooled, want, n);
        print_message("%s: bf16 GEMM: max|out-ref|/max|ref| = %.3g\n", label, d_bf16);
        assert_true(d_bf16 <= 1e-2);
        /* f32 weights multiply in f32 whatever the setting; narrower ones
         * are rounded */
        if (mgpu_model_find_in(m, 0, "double_blocks.0.img_mlp.0.weight")->info.dtype ==
            MGPU_DTYPE_F32)
            assert_true(d_bf16 <= REL_TOLERANCE);
        else
            assert_true(d_bf16 > 10 * REL_TOLERANCE);
    }
    mgpu_backend_free(bf);

    /* Per batch item the outputs differ (each item has its own inputs). */
    if (in->batch > 1) {
        size_t per = n / (size_t)in->batch;
        assert_true(rel_diff(real, real + per, per) > 1e-3);
    }
    free(real);
    free(pooled);
    free(want);
    mgpu_flux_free(flux);
    mgpu_model_close(m);
}

/* flux-dev, F32 safetensors: 8x8 latent (16 image tokens), 7 text tokens,
 * batch 2 with different timesteps and guidance; FLUX's default rope. */
static void test_dev_f32(void **state)
{
    (void)state;
    const char *path = test_path("flux-dev-f32.safetensors");
    synth("flux-dev", 0, MGPU_DTYPE_F32, "", 11, path);
    const float t[2] = {0.3f, 0.85f}, g[2] = {3.5f, 1.0f};
    case_inputs c = make_inputs(2, 8, 8, 7, 256, 256, t, g, 100);
    static const int axes[3] = {16, 56, 56};
    check_forward("flux-dev F32", path, 2, axes, 10000.0f, 0, &c);
    free_inputs(&c);
    remove(path);
}

/* flux-schnell, Q8_0 GGUF with the ComfyUI prefix: 6x10 latent (15 image
 * tokens on a 3x5 grid), 5 text tokens, rope overridden. */
static void test_schnell_q8_gguf(void **state)
{
    (void)state;
    const char *path = test_path("flux-schnell-q8.gguf");
    synth("flux-schnell", 1, MGPU_DTYPE_Q8_0, "model.diffusion_model.", 12, path);
    const float t[2] = {1.0f, 0.05f};
    case_inputs c = make_inputs(2, 6, 10, 5, 256, 256, t, NULL, 200);
    static const int axes[3] = {32, 48, 48};
    check_forward("flux-schnell Q8_0 gguf", path, 2, axes, 2000.0f, 1, &c);
    free_inputs(&c);
    remove(path);
}

/* flux-dev in BF16, 4x6 latent, 3 text tokens, one batch item. */
static void test_dev_bf16(void **state)
{
    (void)state;
    const char *path = test_path("flux-dev-bf16.safetensors");
    synth("flux-dev", 0, MGPU_DTYPE_BF16, "", 13, path);
    const float t[1] = {0.5f}, g[1] = {4.0f};
    case_inputs c = make_inputs(1, 4, 6, 3, 256, 256, t, g, 300);
    static const int axes[3] = {16, 56, 56};
    check_forward("flux-dev BF16", path, 2, axes, 10000.0f, 0, &c);
    free_inputs(&c);
    remove(path);
}

static int contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               (hay[i] | 0x20) == (needle[i] | 0x20)) /* ASCII letters only */
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

/* A FLUX checkpoint without txt_in.bias: load fails naming the tensor. */
static void test_missing_tensor(void **state)
{
    (void)state;
    const char *full = test_path("flux-full.safetensors");
    const char *cut = test_path("flux-cut.safetensors");
    synth("flux-dev", 0, MGPU_DTYPE_F32, "", 14, full);
    copy_without(full, cut, "txt_in.bias");
    mgpu_model *m = open_ok(cut);
    assert_null(mgpu_model_find(m, "txt_in.bias"));
    mgpu_flux_settings set = {.heads = 2};
    mgpu_flux *flux = NULL;
    mgpu_error err = {0};
    assert_int_not_equal(mgpu_flux_load(m, 0, &set, &flux, &err), MGPU_OK);
    assert_null(flux);
    print_message("missing tensor: %s\n", err.message);
    assert_non_null(strstr(err.message, "txt_in.bias"));
    mgpu_model_close(m);
    remove(full);
    remove(cut);
}

/* A CLIP-L checkpoint is not FLUX: load fails and says so. */
static void test_not_flux(void **state)
{
    (void)state;
    const char *path = test_path("clip-l.safetensors");
    synth("clip-l", 0, MGPU_DTYPE_F32, "", 15, path);
    mgpu_model *m = open_ok(path);
    mgpu_flux_settings set = {.heads = 2};
    mgpu_flux *flux = NULL;
    mgpu_error err = {0};
    assert_int_not_equal(mgpu_flux_load(m, 0, &set, &flux, &err), MGPU_OK);
    assert_null(flux);
    print_message("not flux: %s\n", err.message);
    assert_true(contains_nocase(err.message, "flux"));
    mgpu_model_close(m);
    remove(path);
}

/* Forward rejects an odd latent size and, for dev, missing guidance. */
static void test_forward_errors(void **state)
{
    (void)state;
    const char *path = test_path("flux-dev-err.safetensors");
    synth("flux-dev", 0, MGPU_DTYPE_F32, "", 16, path);
    mgpu_model *m = open_ok(path);
    mgpu_flux_settings set = {.heads = 2};
    mgpu_flux *flux = NULL;
    mgpu_error err = {0};
    if (mgpu_flux_load(m, 0, &set, &flux, &err) != MGPU_OK)
        fail_msg("load: %s", err.message);
    const float t[1] = {0.5f}, g[1] = {3.0f};
    case_inputs c = make_inputs(1, 8, 8, 4, 256, 256, t, g, 400);
    float *out = calloc(16 * 8 * 8, sizeof *out);
    assert_non_null(out);
    mgpu_tensor_source source = mgpu_resident_source();
    mgpu_backend *be = NULL;
    if (mgpu_backend_cpu_create(1, &be, &err) != MGPU_OK)
        fail_msg("backend: %s", err.message);

    mgpu_flux_inputs odd = c.in;
    odd.height = 7; /* x holds 8x8 values, more than a 7x8 latent reads */
    err = (mgpu_error){0};
    assert_int_not_equal(mgpu_flux_forward(flux, &source, &odd, out, be, &err), MGPU_OK);
    print_message("odd latent: %s\n", err.message);
    assert_true(err.message[0] != '\0');
    odd = c.in;
    odd.width = 5;
    err = (mgpu_error){0};
    assert_int_not_equal(mgpu_flux_forward(flux, &source, &odd, out, be, &err), MGPU_OK);

    mgpu_flux_inputs no_guidance = c.in;
    no_guidance.guidance = NULL;
    err = (mgpu_error){0};
    assert_int_not_equal(mgpu_flux_forward(flux, &source, &no_guidance, out, be, &err),
                         MGPU_OK);
    print_message("missing guidance: %s\n", err.message);
    assert_true(contains_nocase(err.message, "guidance"));

    /* the reference refuses the same inputs */
    char msg[256];
    static const int axes[3] = {16, 56, 56};
    mgpu_flux_ref_inputs rin = ref_inputs(&no_guidance);
    assert_int_equal(flux_reference_forward(m, 0, 2, axes, 10000.0, &rin, out, msg, sizeof msg),
                     -1);

    /* and the valid inputs still run after the rejected ones */
    err = (mgpu_error){0};
    if (mgpu_flux_forward(flux, &source, &c.in, out, be, &err) != MGPU_OK)
        fail_msg("forward: %s", err.message);
    mgpu_backend_free(be);
    free(out);
    free_inputs(&c);
    mgpu_flux_free(flux);
    mgpu_model_close(m);
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dev_f32),        cmocka_unit_test(test_schnell_q8_gguf),
        cmocka_unit_test(test_dev_bf16),       cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_not_flux),       cmocka_unit_test(test_forward_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
