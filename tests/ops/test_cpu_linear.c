/* The CPU linear layer on every encodable weight dtype against a plain
 * double-precision reference over the decoded weights, across tiles, with
 * and without bias, thread counts and weight addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/cpu_gemm_bf16.h"
#include "ops/cpu_linear.h"

static uint64_t rng = 12345;

static float uniform(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 11) * 0x1p-53 * 2.0 - 1.0);
}

typedef struct setup {
    int64_t rows, in, out;
    mgpu_dtype dtype;
    float *x, *bias, *wf; /* wf: decoded weights */
    uint8_t *w;
    uint64_t w_bytes;
} setup;

static void make(setup *s, mgpu_dtype dtype, int64_t rows, int64_t in, int64_t out)
{
    s->rows = rows;
    s->in = in;
    s->out = out;
    s->dtype = dtype;
    s->x = malloc((size_t)(rows * in) * sizeof(float));
    s->bias = malloc((size_t)out * sizeof(float));
    s->wf = malloc((size_t)(out * in) * sizeof(float));
    float *src = malloc((size_t)(out * in) * sizeof(float));
    for (int64_t i = 0; i < rows * in; i++)
        s->x[i] = uniform();
    for (int64_t i = 0; i < out; i++)
        s->bias[i] = uniform();
    for (int64_t i = 0; i < out * in; i++)
        src[i] = uniform() / sqrtf((float)in);
    assert_true(mgpu_dtype_bytes_for(dtype, (uint64_t)(out * in), &s->w_bytes));
    s->w = malloc(s->w_bytes + 1);
    assert_int_equal(mgpu_quantize(dtype, src, s->w, (uint64_t)(out * in)), MGPU_OK);
    assert_int_equal(mgpu_dequantize(dtype, s->w, s->wf, (uint64_t)(out * in)), MGPU_OK);
    free(src);
}

static void release(setup *s)
{
    free(s->x);
    free(s->bias);
    free(s->wf);
    free(s->w);
}

/* Every element within a bound proportional to sum |x||w| of its dot
 * product: f32 accumulation over `in` terms in any order stays within about
 * in * 2^-24 of that sum; 1e-5 leaves room for in up to a few thousand. */
static void check(const setup *s, const float *y, bool with_bias)
{
    for (int64_t r = 0; r < s->rows; r++)
        for (int64_t o = 0; o < s->out; o++) {
            double acc = with_bias ? s->bias[o] : 0.0, mag = fabs(acc);
            for (int64_t i = 0; i < s->in; i++) {
                double t = (double)s->x[r * s->in + i] * (double)s->wf[o * s->in + i];
                acc += t;
                mag += fabs(t);
            }
            double got = y[r * s->out + o];
            if (fabs(got - acc) > 1e-5 * mag + 1e-30)
                fail_msg("%s [%lld x %lld] row %lld out %lld: %.9g vs %.9g", mgpu_dtype_name(s->dtype),
                         (long long)s->rows, (long long)s->in, (long long)r, (long long)o, got, acc);
        }
}

static void test_dtypes(void **state)
{
    (void)state;
    const mgpu_dtype dtypes[] = {MGPU_DTYPE_F32,     MGPU_DTYPE_F16,     MGPU_DTYPE_BF16,
                                 MGPU_DTYPE_F8_E4M3, MGPU_DTYPE_F8_E5M2, MGPU_DTYPE_Q8_0,
                                 MGPU_DTYPE_Q4_0,    MGPU_DTYPE_Q4_K,    MGPU_DTYPE_Q6_K};
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        setup s;
        make(&s, dtypes[d], 7, 256, 33);
        float *y = malloc((size_t)(s.rows * s.out) * sizeof(float));
        assert_int_equal(mgpu_cpu_linear(s.x, s.rows, s.in, s.w, s.dtype, s.out, s.bias, y, NULL, NULL),
                         MGPU_OK);
        check(&s, y, true);
        assert_int_equal(mgpu_cpu_linear(s.x, s.rows, s.in, s.w, s.dtype, s.out, NULL, y, NULL, NULL),
                         MGPU_OK);
        check(&s, y, false);
        free(y);
        release(&s);
    }
}

static void test_tiles_threads_addresses(void **state)
{
    (void)state;
    setup s;
    /* in 4096 gives 256-row tiles: 600 outputs take three, the last partial */
    make(&s, MGPU_DTYPE_Q8_0, 5, 4096, 600);
    assert_int_equal(mgpu_cpu_linear_tile_rows(4096), 256);
    size_t ybytes = (size_t)(s.rows * s.out) * sizeof(float);
    float *a = malloc(ybytes), *b = malloc(ybytes), *c = malloc(ybytes);
    assert_int_equal(mgpu_cpu_linear(s.x, s.rows, s.in, s.w, s.dtype, s.out, s.bias, a, NULL, NULL),
                     MGPU_OK);
    check(&s, a, true);
    /* the same bytes at an odd address (as inside a file) and with threads:
     * the same bits */
    uint8_t *moved = malloc(s.w_bytes + 1);
    memcpy(moved + 1, s.w, s.w_bytes);
    mgpu_threadpool *pool;
    mgpu_error err = {0};
    assert_int_equal(mgpu_threadpool_create(3, &pool, &err), MGPU_OK);
    assert_int_equal(mgpu_cpu_linear(s.x, s.rows, s.in, moved + 1, s.dtype, s.out, s.bias, b, pool, NULL),
                     MGPU_OK);
    assert_memory_equal(a, b, ybytes);
    mgpu_threadpool_free(pool);
    assert_int_equal(mgpu_threadpool_create(2, &pool, &err), MGPU_OK);
    assert_int_equal(mgpu_cpu_linear(s.x, s.rows, s.in, s.w, s.dtype, s.out, s.bias, c, pool, NULL),
                     MGPU_OK);
    assert_memory_equal(a, c, ybytes);
    mgpu_threadpool_free(pool);
    free(moved);
    free(a);
    free(b);
    free(c);
    release(&s);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    float x[32] = {0}, y[4];
    uint8_t w[64] = {0};
    /* a row of 31 values is not whole Q8_0 blocks */
    assert_int_equal(mgpu_cpu_linear(x, 1, 31, w, MGPU_DTYPE_Q8_0, 1, NULL, y, NULL, NULL),
                     MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_cpu_linear(x, 1, 32, w, MGPU_DTYPE_INVALID, 1, NULL, y, NULL, NULL),
                     MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_cpu_linear(x, 0, 32, w, MGPU_DTYPE_Q8_0, 1, NULL, y, NULL, NULL), MGPU_OK);
}

/* The vectorisable bf16 rounding agrees with the scalar encoder. */
static void test_to_bf16(void **state)
{
    (void)state;
    enum { N = 4096 };
    float v[N];
    uint16_t got[N];
    for (int i = 0; i < N - 8; i++) {
        (void)uniform(); /* steps the generator */
        uint32_t bits = (uint32_t)(rng >> 32);
        memcpy(&v[i], &bits, sizeof bits); /* every kind of bit pattern */
    }
    const float special[8] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1.00390625f, 1.01171875f,
                              3.3895314e38f};
    memcpy(v + N - 8, special, sizeof special);
    mgpu_cpu_to_bf16(v, got, N);
    for (int i = 0; i < N; i++) {
        if (isnan(v[i])) {
            assert_true(isnan(mgpu_bf16_to_f32(got[i])));
            continue;
        }
        if (got[i] != mgpu_f32_to_bf16(v[i]))
            fail_msg("%.9g: %04x, want %04x", (double)v[i], got[i], mgpu_f32_to_bf16(v[i]));
    }
}

/* The bf16 path: against the exact products of the bf16-rounded inputs
 * (which it must reproduce up to f32 accumulation), within bf16's rounding
 * of the true ones, and the same bits whether bf16 weights are used in place
 * or decoded from an odd address, with or without threads. */
static void test_bf16_gemm(void **state)
{
    (void)state;
    if (!mgpu_cpu_bf16_gemm_available()) {
        print_message("bf16 GEMM not available here (no oneDNN or no native bf16): skipped\n");
        skip();
    }
    const mgpu_dtype dtypes[] = {MGPU_DTYPE_BF16, MGPU_DTYPE_F16, MGPU_DTYPE_Q8_0, MGPU_DTYPE_Q4_K};
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        setup s;
        make(&s, dtypes[d], 9, 512, 300);
        size_t ybytes = (size_t)(s.rows * s.out) * sizeof(float);
        float *y = malloc(ybytes), *y2 = malloc(ybytes);
        assert_int_equal(mgpu_cpu_linear_ex(s.x, s.rows, s.in, s.w, s.dtype, s.out, s.bias, y,
                                            NULL, NULL, MGPU_CPU_GEMM_BF16),
                         MGPU_OK);
        for (int64_t r = 0; r < s.rows; r++)
            for (int64_t o = 0; o < s.out; o++) {
                double rounded = s.bias[o], exact = s.bias[o], mag = fabs(exact);
                for (int64_t i = 0; i < s.in; i++) {
                    float xv = s.x[r * s.in + i], wv = s.wf[o * s.in + i];
                    rounded += (double)mgpu_bf16_to_f32(mgpu_f32_to_bf16(xv)) *
                               mgpu_bf16_to_f32(mgpu_f32_to_bf16(wv));
                    exact += (double)xv * wv;
                    mag += fabs((double)xv * wv);
                }
                double got = y[r * s.out + o];
                if (fabs(got - rounded) > 1e-5 * mag)
                    fail_msg("%s: %.9g vs bf16-rounded %.9g", mgpu_dtype_name(s.dtype), got, rounded);
                /* each product is off by at most 2 * 2^-9 relative */
                if (fabs(got - exact) > 4.0 * 0x1p-9 * mag)
                    fail_msg("%s: %.9g vs exact %.9g", mgpu_dtype_name(s.dtype), got, exact);
            }
        uint8_t *moved = malloc(s.w_bytes + 1);
        memcpy(moved + 1, s.w, s.w_bytes);
        mgpu_threadpool *pool;
        mgpu_error err = {0};
        assert_int_equal(mgpu_threadpool_create(3, &pool, &err), MGPU_OK);
        assert_int_equal(mgpu_cpu_linear_ex(s.x, s.rows, s.in, moved + 1, s.dtype, s.out, s.bias,
                                            y2, pool, NULL, MGPU_CPU_GEMM_BF16),
                         MGPU_OK);
        assert_memory_equal(y, y2, ybytes);
        mgpu_threadpool_free(pool);
        free(moved);
        free(y);
        free(y2);
        release(&s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtypes),
        cmocka_unit_test(test_tiles_threads_addresses),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_to_bf16),
        cmocka_unit_test(test_bf16_gemm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
