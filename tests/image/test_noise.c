/* Seeded noise: MT19937 against its published check values, torch.randn
 * against values PyTorch printed for torch.manual_seed(0) in public
 * documentation and notes, the Box-Muller pairing against a double-precision
 * reference built from the raw draws, and the distribution's moments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample/noise.h"

static const double TEST_PI = 3.14159265358979323846;

/* torch prints 4 decimals: a correct value is within 0.00005 of the print. */
static void assert_printed(const float *got, const double *want, int n)
{
    for (int i = 0; i < n; i++)
        if (fabs((double)got[i] - want[i]) > 0.00005 + 1e-7)
            fail_msg("element %d: got %.6f, torch printed %.4f", i, got[i], want[i]);
}

static void test_mt19937_check_values(void **state)
{
    (void)state;
    mgpu_noise_generator g;
    mgpu_noise_seed(&g, 5489); /* the reference default seed */
    /* First output of the reference mt19937ar for seed 5489, and the
     * 10000th, which C++ [rand.predef] requires of std::mt19937. */
    assert_int_equal(mgpu_noise_next_u32(&g), 3499211612u);
    uint32_t v = 0;
    for (int i = 2; i <= 10000; i++)
        v = mgpu_noise_next_u32(&g);
    assert_int_equal(v, 4123659995u);
}

/* torch.manual_seed(0); torch.randn(n) for n < 16 (the per-element double
 * Box-Muller path, second value cached): kornia's DistributionWithMapper
 * docstring (kornia/augmentation/random_generator/base.py, a doctest) prints
 * Normal(0,1).rsample((8,)); torch.randn(3) and randn(2, 3) print the
 * same leading values. */
static void test_torch_small(void **state)
{
    (void)state;
    static const double want8[8] = {1.5410, -0.2934, -2.1788, 0.5684,
                                    -1.0845, -1.3986, 0.4033, 0.8380};
    float out[8];
    for (int n = 1; n <= 8; n++) {
        memset(out, 0, sizeof out);
        assert_int_equal(mgpu_noise_randn(0, out, n, NULL), MGPU_OK);
        assert_printed(out, want8, n);
    }
}

/* torch.manual_seed(0); torch.randn(1, 1, 4, 4): kornia's CenterCrop
 * docstring (kornia/augmentation/_2d/geometric/center_crop.py). */
static const double want16[16] = {-1.1258, -1.1524, -0.2506, -0.4339, 0.8487, 0.6920,
                                  -0.3160, -2.1152, 0.3223,  -1.2633, 0.3500, 0.3081,
                                  0.1198,  1.2377,  1.1168,  -0.2473};

/* torch.manual_seed(0); X = torch.randn(10, 4); W = torch.randn(4, 4);
 * Y = torch.randn(10, 4), as printed in several independent public
 * notebooks on autograd (matrix-derivative checks); 40 is not a multiple of
 * 16, so this covers the redrawn tail, and W and Y the continued stream. */
static const double wantX[40] = {
    -1.1258, -1.1524, -0.2506, -0.4339, 0.8487,  0.6920,  -0.3160, -2.1152, 0.3223,  -1.2633,
    0.3500,  0.3081,  0.1198,  1.2377,  1.1168,  -0.2473, -1.3527, -1.6959, 0.5667,  0.7935,
    0.5988,  -1.5551, -0.3414, 1.8530,  -0.2159, -0.7425, 0.5627,  0.2596,  -0.1740, -0.6787,
    0.9383,  0.4889,  1.2032,  0.0845,  -1.2001, -0.0048, -0.5181, -0.3067, -1.5810, 1.7066};
static const double wantW[16] = {0.2055,  -0.4503, -0.5731, -0.5554, 0.5943,  1.5419,
                                 0.5073,  -0.5910, -1.3253, 0.1886,  -0.0691, -0.4949,
                                 -1.4959, -0.1938, 0.4455,  1.3253};
static const double wantY[40] = {
    1.5091,  2.0820,  1.7067,  2.3804,  -1.1256, -0.3170, -1.0925, -0.0852, 0.3276,  -0.7607,
    -1.5991, 0.0185,  -0.7504, 0.1854,  0.6211,  0.6382,  -0.0033, -0.5344, 1.1687,  0.3945,
    1.9415,  0.7915,  -0.0203, -0.4372, -0.2188, -2.4351, -0.0729, -0.0340, 0.9625,  0.3492,
    -0.9215, -0.0562, -0.6227, -0.4637, 1.9218,  -0.4025, 0.1239,  1.1648,  0.9234,  1.3873};

static void test_torch_large(void **state)
{
    (void)state;
    float out[40];
    assert_int_equal(mgpu_noise_randn(0, out, 16, NULL), MGPU_OK);
    assert_printed(out, want16, 16);

    mgpu_noise_generator g;
    mgpu_noise_seed(&g, 0);
    assert_int_equal(mgpu_noise_fill(&g, out, 40, NULL), MGPU_OK);
    assert_printed(out, wantX, 40);
    assert_int_equal(mgpu_noise_fill(&g, out, 16, NULL), MGPU_OK);
    assert_printed(out, wantW, 16);
    assert_int_equal(mgpu_noise_fill(&g, out, 40, NULL), MGPU_OK);
    assert_printed(out, wantY, 40);
}

static double u24(uint32_t w)
{
    return (double)(w & 0xFFFFFFu) / 16777216.0;
}

/* Build the expected values of one n >= 16 call from the raw MT stream, in
 * double: pairs (j, j + 8) in blocks of 16, radius sqrt(-2 ln(1 - u_j)),
 * angle 2 pi u_{j+8}; a ragged end redraws 16 uniforms for the last 16. */
static void reference_large(uint64_t seed, int n, double *ref)
{
    mgpu_noise_generator g;
    mgpu_noise_seed(&g, seed);
    double *u = malloc((size_t)(n + 16) * sizeof *u);
    assert_non_null(u);
    for (int i = 0; i < n; i++)
        u[i] = u24(mgpu_noise_next_u32(&g));
    for (int b = 0; b + 16 <= n; b += 16)
        for (int j = 0; j < 8; j++) {
            double r = sqrt(-2.0 * log(1.0 - u[b + j])), a = 2.0 * TEST_PI * u[b + j + 8];
            ref[b + j] = r * cos(a);
            ref[b + j + 8] = r * sin(a);
        }
    if (n % 16) {
        double t[16];
        for (int i = 0; i < 16; i++)
            t[i] = u24(mgpu_noise_next_u32(&g));
        for (int j = 0; j < 8; j++) {
            double r = sqrt(-2.0 * log(1.0 - t[j])), a = 2.0 * TEST_PI * t[j + 8];
            ref[n - 16 + j] = r * cos(a);
            ref[n - 16 + j + 8] = r * sin(a);
        }
    }
    free(u);
}

static void test_large_against_reference(void **state)
{
    (void)state;
    const int sizes[] = {16, 17, 20, 31, 32, 33, 100, 1000, 4096 + 5};
    const uint64_t seeds[] = {0, 1, 42, 0xDEADBEEFCAFEull};
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            int n = sizes[k];
            float *out = malloc((size_t)n * sizeof *out);
            double *ref = malloc((size_t)n * sizeof *ref);
            assert_true(out && ref);
            assert_int_equal(mgpu_noise_randn(seeds[s], out, n, NULL), MGPU_OK);
            reference_large(seeds[s], n, ref);
            /* float arithmetic (log, sin, cos, angle rounded to float):
             * a few float ulps, more where the radius is large. */
            for (int i = 0; i < n; i++)
                if (fabs(out[i] - ref[i]) > 2e-6 * (1.0 + fabs(ref[i])))
                    fail_msg("seed %llu n %d element %d: %.9g vs %.9g",
                             (unsigned long long)seeds[s], n, i, out[i], ref[i]);
            free(out);
            free(ref);
        }
}

/* n < 16: per value, two 53-bit uniforms (high word first), radius from
 * the second, angle from the first; cos now, sin kept for the next value,
 * also across calls. */
static void test_small_against_reference(void **state)
{
    (void)state;
    mgpu_noise_generator raw, g;
    mgpu_noise_seed(&raw, 1234);
    mgpu_noise_seed(&g, 1234);
    double ref[12];
    for (int p = 0; p < 6; p++) {
        double u[2];
        for (int k = 0; k < 2; k++) {
            uint64_t hi = mgpu_noise_next_u32(&raw), lo = mgpu_noise_next_u32(&raw);
            u[k] = (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) / 9007199254740992.0;
        }
        double r = sqrt(-2.0 * log(1.0 - u[1])), a = 2.0 * TEST_PI * u[0];
        ref[2 * p] = r * cos(a);
        ref[2 * p + 1] = r * sin(a);
    }
    float out[12];
    /* 3 + 5 + 4 values: the odd calls leave a cached sine behind. */
    assert_int_equal(mgpu_noise_fill(&g, out, 3, NULL), MGPU_OK);
    assert_int_equal(mgpu_noise_fill(&g, out + 3, 5, NULL), MGPU_OK);
    assert_int_equal(mgpu_noise_fill(&g, out + 8, 4, NULL), MGPU_OK);
    for (int i = 0; i < 12; i++)
        assert_true(fabs(out[i] - ref[i]) <= 1e-7 * (1.0 + fabs(ref[i])));
}

static void test_reproducible(void **state)
{
    (void)state;
    enum { N = 16 * 64 * 64 + 7 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    assert_true(a && b);
    assert_int_equal(mgpu_noise_randn(987654321, a, N, NULL), MGPU_OK);
    assert_int_equal(mgpu_noise_randn(987654321, b, N, NULL), MGPU_OK);
    assert_memory_equal(a, b, N * sizeof *a);
    /* torch seeds MT19937 with the low 32 bits only. */
    assert_int_equal(mgpu_noise_randn(987654321 + (1ull << 32), b, N, NULL), MGPU_OK);
    assert_memory_equal(a, b, N * sizeof *a);
    assert_int_equal(mgpu_noise_randn(987654322, b, N, NULL), MGPU_OK);
    assert_true(memcmp(a, b, N * sizeof *a) != 0);
    /* A call's first 16k values do not depend on its length beyond them:
     * the first 32 of a 40-value call equal those of a 32-value call
     * except the redrawn tail (24..39). */
    assert_int_equal(mgpu_noise_randn(5, a, 32, NULL), MGPU_OK);
    assert_int_equal(mgpu_noise_randn(5, b, 40, NULL), MGPU_OK);
    assert_memory_equal(a, b, 24 * sizeof *a);
    free(a);
    free(b);
}

static void test_moments(void **state)
{
    (void)state;
    enum { N = 1 << 20 };
    float *x = malloc(N * sizeof *x);
    assert_non_null(x);
    assert_int_equal(mgpu_noise_randn(2024, x, N, NULL), MGPU_OK);
    double sum = 0, sq = 0, inside = 0, fourth = 0;
    for (int i = 0; i < N; i++) {
        assert_true(isfinite(x[i]));
        sum += x[i];
        sq += (double)x[i] * x[i];
        fourth += (double)x[i] * x[i] * x[i] * x[i];
        inside += fabs(x[i]) < 1.0;
    }
    double mean = sum / N, var = sq / N - mean * mean;
    /* Standard errors at N = 2^20: mean 0.001, variance 0.0014,
     * P(|x|<1) 0.00045, fourth moment 0.009; tolerances are ~5 sigma. */
    assert_true(fabs(mean) < 0.005);
    assert_true(fabs(var - 1.0) < 0.007);
    assert_true(fabs(inside / N - 0.682689492) < 0.0025);
    assert_true(fabs(fourth / N - 3.0) < 0.05);
    free(x);
}

static void test_arguments(void **state)
{
    (void)state;
    mgpu_error err = {0};
    float x[4];
    assert_int_equal(mgpu_noise_randn(0, x, -1, &err), MGPU_ERR_ARGUMENT);
    assert_non_null(strstr(err.message, "n=-1"));
    assert_int_equal(mgpu_noise_randn(0, NULL, 4, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_noise_randn(0, NULL, 0, &err), MGPU_OK);
    assert_int_equal(mgpu_noise_fill(NULL, x, 4, &err), MGPU_ERR_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mt19937_check_values),
        cmocka_unit_test(test_torch_small),
        cmocka_unit_test(test_torch_large),
        cmocka_unit_test(test_large_against_reference),
        cmocka_unit_test(test_small_against_reference),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_moments),
        cmocka_unit_test(test_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
