/* The image kernels (src/ops/cpu_image.c) against plain double-precision
 * loops on random data: convolutions of odd sizes with 1x1, 3x3 and 3x1
 * kernels, strides 1 and 2, symmetric and the VAE downsample's right/bottom
 * padding, f32/f16/bf16/Q8_0 weights, with and without bias, one band and
 * several; group norm with and without affine parameters, in place, on data
 * with a large mean; nearest 2x upsampling. Every kernel gives the same
 * bits with 1 and 3 threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/cpu_image.h"
#include "ops/threadpool.h"
#include "test_random.h"

static float *random_floats(int64_t n, double lo, double hi)
{
    float *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = rng_float(lo, hi);
    return v;
}

static mgpu_threadpool *pool_of(int threads)
{
    mgpu_threadpool *p = NULL;
    mgpu_error err = {0};
    assert_int_equal(mgpu_threadpool_create(threads, &p, &err), MGPU_OK);
    return p;
}

/* ---- conv2d ------------------------------------------------------------- */

typedef struct conv_case {
    int64_t c_in, h, w, c_out;
    int kh, kw, stride, pt, pb, pl, pr;
    mgpu_dtype dtype;
    int with_bias;
} conv_case;

/* The weight as stored in `dtype`, and the values it decodes to (what the
 * reference multiplies by). */
static void *encode_weight(const float *w, int64_t n, mgpu_dtype dtype, float *decoded)
{
    uint64_t bytes = 0;
    assert_true(mgpu_dtype_bytes_for(dtype, (uint64_t)n, &bytes));
    void *stored = malloc(bytes);
    assert_non_null(stored);
    assert_int_equal(mgpu_quantize(dtype, w, stored, (uint64_t)n), MGPU_OK);
    assert_int_equal(mgpu_dequantize(dtype, stored, decoded, (uint64_t)n), MGPU_OK);
    return stored;
}

/* Plain direct convolution in double; also the sum of |terms| per output,
 * the scale rounding errors are measured against. */
static void conv_reference(const conv_case *c, const float *x, const float *w, const float *b,
                           int64_t oh, int64_t ow, double *ref, double *mag)
{
    for (int64_t o = 0; o < c->c_out; o++)
        for (int64_t oy = 0; oy < oh; oy++)
            for (int64_t ox = 0; ox < ow; ox++) {
                double acc = b ? b[o] : 0.0, m = b ? fabs(b[o]) : 0.0;
                for (int64_t ci = 0; ci < c->c_in; ci++)
                    for (int ky = 0; ky < c->kh; ky++)
                        for (int kx = 0; kx < c->kw; kx++) {
                            int64_t iy = oy * c->stride + ky - c->pt;
                            int64_t ix = ox * c->stride + kx - c->pl;
                            if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w)
                                continue;
                            double t = (double)w[((o * c->c_in + ci) * c->kh + ky) * c->kw + kx] *
                                       x[(ci * c->h + iy) * c->w + ix];
                            acc += t;
                            m += fabs(t);
                        }
                ref[(o * oh + oy) * ow + ox] = acc;
                mag[(o * oh + oy) * ow + ox] = m;
            }
}

static void run_conv_case(const conv_case *c)
{
    mgpu_conv2d_shape s = {c->c_in, c->h, c->w, c->c_out, c->kh, c->kw, c->stride,
                           c->pt,   c->pb, c->pl, c->pr};
    int64_t oh = (c->h + c->pt + c->pb - c->kh) / c->stride + 1;
    int64_t ow = (c->w + c->pl + c->pr - c->kw) / c->stride + 1;
    int64_t nw = c->c_out * c->c_in * c->kh * c->kw, ny = c->c_out * oh * ow;
    float *x = random_floats(c->c_in * c->h * c->w, -1.0, 1.0);
    float *w = random_floats(nw, -0.5, 0.5);
    float *b = c->with_bias ? random_floats(c->c_out, -1.0, 1.0) : NULL;
    float *wdec = malloc((size_t)nw * sizeof *wdec);
    assert_non_null(wdec);
    void *stored = encode_weight(w, nw, c->dtype, wdec);
    double *ref = malloc((size_t)ny * sizeof *ref), *mag = malloc((size_t)ny * sizeof *mag);
    float *y1 = malloc((size_t)ny * sizeof *y1), *y3 = malloc((size_t)ny * sizeof *y3);
    assert_true(ref && mag && y1 && y3);
    conv_reference(c, x, wdec, b, oh, ow, ref, mag);

    mgpu_threadpool *p1 = pool_of(1), *p3 = pool_of(3);
    mgpu_cpu_scratch scratch = {0};
    assert_int_equal(mgpu_cpu_conv2d(x, &s, stored, c->dtype, b, y1, p1, NULL), MGPU_OK);
    assert_int_equal(mgpu_cpu_conv2d(x, &s, stored, c->dtype, b, y3, p3, &scratch), MGPU_OK);
    assert_memory_equal(y1, y3, (size_t)ny * sizeof *y1);
    double worst = 0.0;
    for (int64_t i = 0; i < ny; i++) {
        /* f32 accumulation of the same products: a few ulps of the sum of
         * their magnitudes, far below 1e-5 of it. */
        double e = fabs(y1[i] - ref[i]) / (mag[i] + 1e-30);
        if (e > worst)
            worst = e;
    }
    print_message("conv %lldx%lldx%lld -> %lld k%dx%d s%d pad %d,%d,%d,%d %s: worst %.2e\n",
                  (long long)c->c_in, (long long)c->h, (long long)c->w, (long long)c->c_out, c->kh,
                  c->kw, c->stride, c->pt, c->pb, c->pl, c->pr, mgpu_dtype_name(c->dtype), worst);
    assert_true(worst < 1e-5);
    mgpu_cpu_scratch_free(&scratch);
    mgpu_threadpool_free(p1);
    mgpu_threadpool_free(p3);
    free(x);
    free(w);
    free(b);
    free(wdec);
    free(stored);
    free(ref);
    free(mag);
    free(y1);
    free(y3);
}

static void test_conv_small(void **state)
{
    (void)state;
    rng_seed(1);
    static const conv_case cases[] = {
        {3, 7, 9, 5, 3, 3, 1, 1, 1, 1, 1, MGPU_DTYPE_F32, 1},   /* same-size 3x3 */
        {5, 5, 11, 7, 1, 1, 1, 0, 0, 0, 0, MGPU_DTYPE_F32, 1},  /* 1x1 */
        {4, 8, 6, 6, 3, 3, 2, 0, 1, 0, 1, MGPU_DTYPE_F32, 1},   /* VAE downsample */
        {4, 9, 7, 3, 3, 3, 2, 0, 1, 0, 1, MGPU_DTYPE_F32, 0},   /* odd input, no bias */
        {2, 9, 9, 3, 3, 3, 2, 1, 1, 1, 1, MGPU_DTYPE_F16, 1},   /* stride 2, pad 1 */
        {3, 6, 7, 4, 3, 1, 1, 1, 1, 0, 0, MGPU_DTYPE_BF16, 1},  /* 3x1 kernel */
        {6, 5, 5, 2, 3, 3, 1, 2, 0, 0, 2, MGPU_DTYPE_BF16, 0},  /* lopsided pads */
        {32, 6, 5, 9, 3, 3, 1, 1, 1, 1, 1, MGPU_DTYPE_Q8_0, 1}, /* 288 = 9 blocks */
        {64, 3, 4, 5, 1, 1, 1, 0, 0, 0, 0, MGPU_DTYPE_Q8_0, 1}, /* 1x1, 2 blocks */
        {1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, MGPU_DTYPE_F32, 1},   /* one pixel */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_conv_case(&cases[i]);
}

/* An image large enough for several bands (the last one partial). */
static void test_conv_bands(void **state)
{
    (void)state;
    rng_seed(2);
    conv_case c = {64, 97, 83, 8, 3, 3, 1, 1, 1, 1, 1, MGPU_DTYPE_BF16, 1};
    int64_t band = mgpu_cpu_conv2d_band_pixels(64 * 9, 8);
    assert_true(band < 97 * 83);
    assert_true((97 * 83) % band != 0);
    /* The column buffer is bounded by the band, whatever the image. */
    assert_true(band * 64 * 9 * (int64_t)sizeof(float) <= MGPU_CPU_CONV_BAND_BYTES);
    assert_true(mgpu_cpu_conv2d_band_pixels(512 * 9, 512) * 512 * 9 * (int64_t)sizeof(float) <=
                MGPU_CPU_CONV_BAND_BYTES);
    run_conv_case(&c);
}

static void test_conv_errors(void **state)
{
    (void)state;
    float x[16] = {0}, y[16], w[64] = {0};
    mgpu_conv2d_shape too_small = {1, 2, 2, 1, 3, 3, 1, 0, 0, 0, 0};
    assert_int_equal(mgpu_cpu_conv2d(x, &too_small, w, MGPU_DTYPE_F32, NULL, y, NULL, NULL),
                     MGPU_ERR_ARGUMENT);
    mgpu_conv2d_shape no_stride = {1, 4, 4, 1, 1, 1, 0, 0, 0, 0, 0};
    assert_int_equal(mgpu_cpu_conv2d(x, &no_stride, w, MGPU_DTYPE_F32, NULL, y, NULL, NULL),
                     MGPU_ERR_ARGUMENT);
    /* Q8_0 rows of 3 * 3 values are not whole 32-value blocks. */
    mgpu_conv2d_shape partial = {1, 4, 4, 1, 3, 3, 1, 1, 1, 1, 1};
    assert_int_equal(mgpu_cpu_conv2d(x, &partial, w, MGPU_DTYPE_Q8_0, NULL, y, NULL, NULL),
                     MGPU_ERR_ARGUMENT);
    mgpu_conv2d_shape integers = {1, 4, 4, 1, 1, 1, 1, 0, 0, 0, 0};
    assert_int_equal(mgpu_cpu_conv2d(x, &integers, w, MGPU_DTYPE_I32, NULL, y, NULL, NULL),
                     MGPU_ERR_ARGUMENT);
}

/* ---- group norm --------------------------------------------------------- */

static void gn_reference(const float *x, double *ref, int64_t channels, int64_t spatial,
                         int64_t groups, const float *w, const float *b, double eps)
{
    int64_t per = channels / groups;
    for (int64_t g = 0; g < groups; g++) {
        double mean = 0.0, var = 0.0;
        for (int64_t c = g * per; c < (g + 1) * per; c++)
            for (int64_t i = 0; i < spatial; i++)
                mean += x[c * spatial + i];
        mean /= (double)(per * spatial);
        for (int64_t c = g * per; c < (g + 1) * per; c++)
            for (int64_t i = 0; i < spatial; i++)
                var += (x[c * spatial + i] - mean) * (x[c * spatial + i] - mean);
        var /= (double)(per * spatial);
        for (int64_t c = g * per; c < (g + 1) * per; c++)
            for (int64_t i = 0; i < spatial; i++)
                ref[c * spatial + i] = (x[c * spatial + i] - mean) / sqrt(var + eps) *
                                           (w ? w[c] : 1.0) +
                                       (b ? b[c] : 0.0);
    }
}

static void run_gn_case(int64_t channels, int64_t spatial, int64_t groups, double offset,
                        int affine)
{
    int64_t n = channels * spatial;
    float *x = random_floats(n, offset - 2.0, offset + 2.0);
    float *w = affine ? random_floats(channels, 0.5, 1.5) : NULL;
    float *b = affine ? random_floats(channels, -1.0, 1.0) : NULL;
    double *ref = malloc((size_t)n * sizeof *ref);
    float *y1 = malloc((size_t)n * sizeof *y1), *y3 = malloc((size_t)n * sizeof *y3);
    assert_true(ref && y1 && y3);
    gn_reference(x, ref, channels, spatial, groups, w, b, 1e-6);
    mgpu_threadpool *p1 = pool_of(1), *p3 = pool_of(3);
    mgpu_cpu_group_norm(x, y1, channels, spatial, groups, w, b, 1e-6f, p1);
    memcpy(y3, x, (size_t)n * sizeof *y3);
    mgpu_cpu_group_norm(y3, y3, channels, spatial, groups, w, b, 1e-6f, p3); /* in place */
    assert_memory_equal(y1, y3, (size_t)n * sizeof *y1);
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(y1[i] - ref[i]));
    print_message("group norm %lld x %lld / %lld, offset %g: worst %.2e\n", (long long)channels,
                  (long long)spatial, (long long)groups, offset, worst);
    /* Outputs are O(1); rounding the centred value costs a few 1e-7. With
     * the offset the float mean itself is off by up to half an ulp of 100
     * (3.8e-6), observed 4.1e-6. */
    assert_true(worst < (offset > 10.0 ? 2e-5 : 2e-6));
    mgpu_threadpool_free(p1);
    mgpu_threadpool_free(p3);
    free(x);
    free(w);
    free(b);
    free(ref);
    free(y1);
    free(y3);
}

static void test_group_norm(void **state)
{
    (void)state;
    rng_seed(3);
    run_gn_case(64, 35, 32, 0.0, 1);
    run_gn_case(96, 13, 32, 0.5, 0);
    run_gn_case(6, 7, 3, 0.0, 1);
    run_gn_case(5, 9, 1, 0.0, 1);
    run_gn_case(64, 50, 32, 100.0, 1); /* mean 50x the deviation */
}

/* ---- upsample ----------------------------------------------------------- */

static void test_upsample(void **state)
{
    (void)state;
    rng_seed(4);
    int64_t c = 5, h = 7, w = 3;
    float *x = random_floats(c * h * w, -1.0, 1.0);
    float *y1 = malloc((size_t)(4 * c * h * w) * sizeof *y1);
    float *y3 = malloc((size_t)(4 * c * h * w) * sizeof *y3);
    assert_true(y1 && y3);
    mgpu_threadpool *p3 = pool_of(3);
    mgpu_cpu_upsample2x(x, c, h, w, y1, NULL);
    mgpu_cpu_upsample2x(x, c, h, w, y3, p3);
    assert_memory_equal(y1, y3, (size_t)(4 * c * h * w) * sizeof *y1);
    for (int64_t ch = 0; ch < c; ch++)
        for (int64_t oy = 0; oy < 2 * h; oy++)
            for (int64_t ox = 0; ox < 2 * w; ox++)
                assert_true(y1[(ch * 2 * h + oy) * 2 * w + ox] ==
                            x[(ch * h + oy / 2) * w + ox / 2]);
    mgpu_threadpool_free(p3);
    free(x);
    free(y1);
    free(y3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_small), cmocka_unit_test(test_conv_bands),
        cmocka_unit_test(test_conv_errors), cmocka_unit_test(test_group_norm),
        cmocka_unit_test(test_upsample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
