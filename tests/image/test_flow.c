/* FLUX flow-matching schedules and the Euler step, against values worked
 * out by hand from the BFL / ComfyUI formulas (arithmetic in the comments)
 * and a double-precision reference on random data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample/flow.h"
#include "test_random.h"

static void assert_close(double got, double want, double tol)
{
    if (fabs(got - want) > tol)
        fail_msg("got %.17g, want %.17g (tolerance %g)", got, want, tol);
}

static void test_tokens_and_mu(void **state)
{
    (void)state;
    /* 1024x1024: latent 128x128, 2x2 patches: 64 * 64 = 4096 tokens. */
    assert_int_equal(mgpu_flow_image_tokens(1024, 1024), 4096);
    assert_int_equal(mgpu_flow_image_tokens(768, 1360), 48 * 85);
    /* 1000 / 16 = 62.5 rounds up to 63, as BFL's ceil(h / 16). */
    assert_int_equal(mgpu_flow_image_tokens(1000, 1000), 63 * 63);
    assert_int_equal(mgpu_flow_image_tokens(0, 1024), 0);
    /* mu = 0.5 + 0.65 * (tokens - 256) / 3840 */
    assert_close(mgpu_flow_flux_mu(256), 0.5, 1e-12);
    assert_close(mgpu_flow_flux_mu(4096), 1.15, 1e-12);
    /* 512x512: 1024 tokens: 0.5 + 0.65 * 768 / 3840 = 0.5 + 0.65 * 0.2 = 0.63 */
    assert_close(mgpu_flow_flux_mu(1024), 0.63, 1e-12);
    /* Beyond 4096 the line continues: 8192 tokens: 0.5 + 0.65 * 7936 / 3840 */
    assert_close(mgpu_flow_flux_mu(8192), 0.5 + 0.65 * 7936.0 / 3840.0, 1e-12);
}

static void test_time_shift(void **state)
{
    (void)state;
    /* e^0 / (e^0 + 1/t - 1) = 1 / (1/t) = t: mu 0 is no shift. */
    for (int i = 1; i < 10; i++)
        assert_close(mgpu_flow_time_shift(0.0, i / 10.0), i / 10.0, 1e-15);
    /* mu = 0.63 (512x512), t = 0.5: e^0.63 = 1.87761057926434,
     * 1.87761057926434 / (1.87761057926434 + 1) = 0.65248946219274 */
    assert_close(mgpu_flow_time_shift(0.63, 0.5), 0.65248946219274, 1e-12);
    assert_close(mgpu_flow_time_shift(1.15, 0.0), 0.0, 0.0);
    assert_close(mgpu_flow_time_shift(1.15, 1.0), 1.0, 0.0);
    assert_close(mgpu_flow_time_shift(1.15, NAN), 0.0, 0.0);
    /* A huge mu must not overflow into NaN. */
    double s = mgpu_flow_time_shift(5000.0, 0.5);
    assert_true(s > 0.999 && s <= 1.0);
}

static void test_dev_hand_values(void **state)
{
    (void)state;
    double sig[5];
    /* 1024x1024 (4096 tokens, mu = 1.15), 4 steps: t = 1, 0.75, 0.5, 0.25, 0.
     * e^1.15 = 3.15819290968977
     * t=0.75: 1/t - 1 = 1/3: 3.15819290968977 / 3.49152624302310 = 0.90453076673864
     * t=0.5:  1/t - 1 = 1:   3.15819290968977 / 4.15819290968977 = 0.75951091694911
     * t=0.25: 1/t - 1 = 3:   3.15819290968977 / 6.15819290968977 = 0.51284410150913 */
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, 4096, 4, sig, NULL), MGPU_OK);
    assert_close(sig[0], 1.0, 0.0);
    assert_close(sig[1], 0.90453076673864, 1e-12);
    assert_close(sig[2], 0.75951091694911, 1e-12);
    assert_close(sig[3], 0.51284410150913, 1e-12);
    assert_close(sig[4], 0.0, 0.0);

    /* ComfyUI simple over the 10000-entry table: ss = 10000 / 4 = 2500 is
     * exact, so the same t and the same sigmas. */
    double comfy[5];
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV_COMFY, 4096, 4, comfy, NULL), MGPU_OK);
    for (int i = 0; i < 5; i++)
        assert_close(comfy[i], sig[i], 1e-15);

    /* 3 steps: ss = 3333.33.., int(1 * ss) = 3333, int(2 * ss) = 6666, so
     * ComfyUI reads t = 6667/10000 = 0.6667 and t = 3334/10000 = 0.3334
     * where BFL has 2/3 and 1/3:
     * t=0.6667: 1/t - 1 = 0.49992500374981: 3.15819290968977 / 3.65811791343958 = 0.86333819314213
     * t=0.3334: 1/t - 1 = 1.99940011997600: 3.15819290968977 / 5.15759302966577 = 0.61233852526252 */
    double c3[4];
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV_COMFY, 4096, 3, c3, NULL), MGPU_OK);
    assert_close(c3[0], 1.0, 0.0);
    assert_close(c3[1], 0.86333819314213, 1e-12);
    assert_close(c3[2], 0.61233852526252, 1e-12);
    assert_close(c3[3], 0.0, 0.0);
    /* BFL, t = 2/3: 1/t - 1 = 0.5: 3.15819290968977 / 3.65819290968977 = 0.86331997660... */
    double b3[4];
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, 4096, 3, b3, NULL), MGPU_OK);
    assert_close(b3[1], 3.15819290968977 / 3.65819290968977, 1e-12);
}

static void test_schnell_hand_values(void **state)
{
    (void)state;
    double sig[5];
    /* No shift: linspace(1, 0, 5). */
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_SCHNELL, 0, 4, sig, NULL), MGPU_OK);
    const double want[5] = {1.0, 0.75, 0.5, 0.25, 0.0};
    for (int i = 0; i < 5; i++)
        assert_close(sig[i], want[i], 1e-15);
    /* ComfyUI, 1000-entry table: ss = 1000 / 3 = 333.33..: t = 1, 667/1000, 334/1000, then 0. */
    double c3[4];
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_SCHNELL_COMFY, 12345, 3, c3, NULL), MGPU_OK);
    assert_close(c3[0], 1.0, 0.0);
    assert_close(c3[1], 0.667, 1e-15);
    assert_close(c3[2], 0.334, 1e-15);
    assert_close(c3[3], 0.0, 0.0);
    /* One step: straight from noise to the prediction. */
    double one[2];
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_SCHNELL, 0, 1, one, NULL), MGPU_OK);
    assert_close(one[0], 1.0, 0.0);
    assert_close(one[1], 0.0, 0.0);
}

static void test_monotonic_endpoints(void **state)
{
    (void)state;
    static double sig[MGPU_FLOW_MAX_STEPS + 1];
    const mgpu_flow_kind kinds[] = {MGPU_FLOW_FLUX_DEV, MGPU_FLOW_FLUX_SCHNELL,
                                    MGPU_FLOW_FLUX_DEV_COMFY, MGPU_FLOW_FLUX_SCHNELL_COMFY};
    const int64_t tokens[] = {1, 256, 1024, 4096, 16384, 65536};
    const int steps[] = {1, 2, 3, 4, 7, 20, 28, 30, 50, 333, 1000};
    for (size_t k = 0; k < 4; k++)
        for (size_t t = 0; t < sizeof tokens / sizeof tokens[0]; t++)
            for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
                int n = steps[s];
                assert_int_equal(mgpu_flow_schedule(kinds[k], tokens[t], n, sig, NULL), MGPU_OK);
                assert_true(sig[0] == 1.0);
                assert_true(sig[n] == 0.0);
                for (int i = 0; i < n; i++)
                    if (!(sig[i + 1] < sig[i]))
                        fail_msg("kind %d tokens %lld steps %d: sigma[%d]=%.17g !> sigma[%d]=%.17g",
                                 (int)kinds[k], (long long)tokens[t], n, i, sig[i], i + 1,
                                 sig[i + 1]);
            }
    /* The largest accepted token count: still finite, 1 and 0 at the ends,
     * never increasing (neighbours may round to the same double). */
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, MGPU_FLOW_MAX_IMAGE_TOKENS, 50, sig, NULL),
                     MGPU_OK);
    assert_true(sig[0] == 1.0 && sig[50] == 0.0);
    for (int i = 0; i < 50; i++)
        assert_true(isfinite(sig[i]) && sig[i + 1] <= sig[i]);
}

static void test_validation(void **state)
{
    (void)state;
    double sig[1002];
    mgpu_error err = {0};
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, 4096, 0, sig, &err), MGPU_ERR_ARGUMENT);
    assert_non_null(strstr(err.message, "steps 0"));
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, 4096, -3, sig, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, 4096, 1001, sig, &err),
                     MGPU_ERR_ARGUMENT);
    assert_non_null(strstr(err.message, "1001"));
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, 4096, 1000, sig, &err), MGPU_OK);
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, 0, 4, sig, &err), MGPU_ERR_ARGUMENT);
    assert_non_null(strstr(err.message, "token"));
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV_COMFY, -5, 4, sig, &err),
                     MGPU_ERR_ARGUMENT);
    assert_int_equal(
        mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, MGPU_FLOW_MAX_IMAGE_TOKENS + 1, 4, sig, &err),
        MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_flow_schedule((mgpu_flow_kind)99, 4096, 4, sig, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, 4096, 4, NULL, &err), MGPU_ERR_ARGUMENT);
    /* Schnell ignores the token count. */
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_SCHNELL, 0, 4, sig, &err), MGPU_OK);
}

static void test_euler_step(void **state)
{
    (void)state;
    rng_seed(41);
    enum { N = 1027 };
    float *x = malloc(N * sizeof *x), *v = malloc(N * sizeof *v);
    double *ref = malloc(N * sizeof *ref);
    assert_true(x && v && ref);
    for (int i = 0; i < N; i++) {
        x[i] = rng_float(-3, 3);
        v[i] = rng_float(-3, 3);
        ref[i] = (double)x[i] + (0.4 - 0.7) * (double)v[i];
    }
    mgpu_flow_euler_step(x, v, N, 0.7, 0.4);
    for (int i = 0; i < N; i++)
        assert_close(x[i], ref[i], 1e-6 * (1.0 + fabs(ref[i])));
    free(x);
    free(v);
    free(ref);
}

/* With a constant velocity v = noise - data (the straight path FLUX is
 * trained on, x_t = t * noise + (1 - t) * data), Euler is exact on any
 * schedule: the steps' dt sum to -1 and the end point is the data. */
static void test_euler_straight_path(void **state)
{
    (void)state;
    rng_seed(7);
    enum { N = 256 };
    float x[N], v[N], data[N];
    for (int i = 0; i < N; i++) {
        data[i] = rng_float(-1, 1);
        x[i] = rng_float(-3, 3); /* the noise, at sigma 1 */
        v[i] = x[i] - data[i];
    }
    double sig[29];
    assert_int_equal(mgpu_flow_schedule(MGPU_FLOW_FLUX_DEV, 4096, 28, sig, NULL), MGPU_OK);
    for (int s = 0; s < 28; s++)
        mgpu_flow_euler_step(x, v, N, sig[s], sig[s + 1]);
    for (int i = 0; i < N; i++)
        assert_close(x[i], data[i], 1e-5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_and_mu),     cmocka_unit_test(test_time_shift),
        cmocka_unit_test(test_dev_hand_values),   cmocka_unit_test(test_schnell_hand_values),
        cmocka_unit_test(test_monotonic_endpoints), cmocka_unit_test(test_validation),
        cmocka_unit_test(test_euler_step),        cmocka_unit_test(test_euler_straight_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
