/* Tests of mgpu_cpu_attention (ops/cpu_attention.c).
 *
 * The kernel is compared with a naive reference in this file: the full
 * score row in double, max-subtracted softmax with exp(), then the weighted
 * sum of the value rows, on random data from a fixed-seed PRNG. Shapes
 * cover head_dim 1, 3, 17, 64, 128 and sizes past the kernel's 128-wide
 * head_dim slices (129, 257), query and key lengths around its block sizes
 * (1, 5, 63, 64, 65, 300, 1000, i.e. one row, partial, exact and one-over
 * blocks), several heads, and a 4096 x 4096 sequence checked on a few rows.
 * Special cases: one key (the output is that value row, exactly), scores
 * around 1e3 to 1e4 (a softmax that overflows unless the max is taken out),
 * negative and zero scale, empty shapes, and bit-identical output with no
 * pool and with pools of 2 and 3 threads.
 *
 * Tolerance: |out - ref| <= 1e-5 * (|ref| + max|v|). The output is a convex
 * combination of value rows, so its error is naturally measured against the
 * size of the values, max|v|, not against |ref|, which can cancel to near
 * zero. The kernel rounds to f32 in three places that matter: the score dot
 * products (d terms), exp2 (Cephes polynomial, < 2e-7 relative, plus the
 * rounding of its argument, both small for the weights that count) and the
 * sums over keys (kv_len terms, P.V and the denominator). With random
 * signs these errors grow like sqrt(n) * 2^-24, about 4e-6 for n = 4096;
 * the largest error seen over all cases here is ~2e-7 of max|v|, with
 * OpenBLAS's GEMMs or the kernel's own. A wrong index, a missed rescale or
 * a dropped block gives errors of 1e-2 and up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/cpu_ops.h"
#include "ops/threadpool.h"
#include "test_random.h"

#define TOL 1e-5

/* ------------------------------------------------------------ helpers */


static float *alloc_floats(int64_t n)
{
    /* exact size, so ASan sees any write past the end */
    float *p = malloc((size_t)n * sizeof(float));
    assert_non_null(p);
    return p;
}

static float *rand_floats(int64_t n, double lo, double hi)
{
    float *p = alloc_floats(n);
    for (int64_t i = 0; i < n; i++)
        p[i] = rng_float(lo, hi);
    return p;
}

/* Integers in [-m, m], as floats. */
static float *rand_ints(int64_t n, int m)
{
    float *p = alloc_floats(n);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)((int)(rng_next() % (uint64_t)(2 * m + 1)) - m);
    return p;
}

/* One output row of the reference: out[c] for query row `row` of head h. */
static void reference_row(const float *q, const float *k, const float *v, int64_t h, int64_t row,
                          int64_t q_len, int64_t kv_len, int64_t d, float scale, double *out)
{
    const float *qr = q + (h * q_len + row) * d;
    const float *kh = k + h * kv_len * d;
    const float *vh = v + h * kv_len * d;
    double *s = malloc((size_t)kv_len * sizeof(double));
    assert_non_null(s);
    double max = -INFINITY;
    for (int64_t j = 0; j < kv_len; j++) {
        double dot = 0.0;
        for (int64_t c = 0; c < d; c++)
            dot += (double)qr[c] * (double)kh[j * d + c];
        s[j] = dot * (double)scale;
        if (s[j] > max)
            max = s[j];
    }
    double sum = 0.0;
    for (int64_t j = 0; j < kv_len; j++) {
        s[j] = exp(s[j] - max);
        sum += s[j];
    }
    for (int64_t c = 0; c < d; c++)
        out[c] = 0.0;
    for (int64_t j = 0; j < kv_len; j++)
        for (int64_t c = 0; c < d; c++)
            out[c] += s[j] / sum * (double)vh[j * d + c];
    free(s);
}

/* Compares rows [row0, row0 + nrows) of every head (clipped to q_len, with
 * `step` between rows) against the reference; returns the largest error in
 * units of max|v|. */
static double check_rows(const float *q, const float *k, const float *v, const float *out,
                         int64_t heads, int64_t q_len, int64_t kv_len, int64_t d, float scale,
                         int64_t step)
{
    double *ref = malloc((size_t)d * sizeof(double));
    assert_non_null(ref);
    double worst = 0.0;
    for (int64_t h = 0; h < heads; h++) {
        double vmax = 0.0;
        for (int64_t i = 0; i < kv_len * d; i++)
            vmax = fmax(vmax, fabs((double)v[h * kv_len * d + i]));
        for (int64_t row = 0; row < q_len; row += step) {
            reference_row(q, k, v, h, row, q_len, kv_len, d, scale, ref);
            const float *o = out + (h * q_len + row) * d;
            for (int64_t c = 0; c < d; c++) {
                double err = fabs((double)o[c] - ref[c]);
                if (!(err <= TOL * (fabs(ref[c]) + vmax)))
                    fail_msg("heads %lld q_len %lld kv_len %lld d %lld: head %lld row %lld col "
                             "%lld: got %.9g, want %.9g",
                             (long long)heads, (long long)q_len, (long long)kv_len, (long long)d,
                             (long long)h, (long long)row, (long long)c, (double)o[c], ref[c]);
                if (vmax > 0.0 && err / vmax > worst)
                    worst = err / vmax;
            }
        }
    }
    free(ref);
    return worst;
}

/* Random q, k, v in [-1, 1), the usual 1/sqrt(d) scale; checks every row
 * (or every step-th). */
static double run_random_case(int64_t heads, int64_t q_len, int64_t kv_len, int64_t d,
                              int64_t step, mgpu_threadpool *pool)
{
    float *q = rand_floats(heads * q_len * d, -1.0, 1.0);
    float *k = rand_floats(heads * kv_len * d, -1.0, 1.0);
    float *v = rand_floats(heads * kv_len * d, -1.0, 1.0);
    float *out = alloc_floats(heads * q_len * d);
    float scale = (float)(1.0 / sqrt((double)d));
    mgpu_cpu_attention(q, k, v, out, heads, q_len, kv_len, d, scale, pool);
    double worst = check_rows(q, k, v, out, heads, q_len, kv_len, d, scale, step);
    free(q), free(k), free(v), free(out);
    return worst;
}

/* ------------------------------------------------------------ tests */

static const int64_t lens[] = {1, 5, 63, 64, 65, 300, 1000};
#define N_LENS (sizeof lens / sizeof lens[0])

/* Every pair of lengths up to 300 with every head_dim, two heads. */
static void test_shapes(void **state)
{
    (void)state;
    static const int64_t dims[] = {1, 3, 17, 64, 128};
    rng_seed(1);
    double worst = 0.0;
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (size_t a = 0; a < N_LENS - 1; a++)
            for (size_t b = 0; b < N_LENS - 1; b++)
                worst = fmax(worst, run_random_case(2, lens[a], lens[b], dims[di], 1, NULL));
    print_message("largest error / max|v|: %.3g\n", worst);
}

/* Length 1000 against every other length, both ways, for a few head_dims
 * (every 7th query row when there are 1000 of them, to bound the time). */
static void test_long_lengths(void **state)
{
    (void)state;
    static const int64_t dims[] = {3, 17, 128};
    rng_seed(2);
    double worst = 0.0;
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (size_t a = 0; a < N_LENS; a++) {
            worst = fmax(worst, run_random_case(1, 1000, lens[a], dims[di], 7, NULL));
            if (lens[a] != 1000)
                worst = fmax(worst, run_random_case(1, lens[a], 1000, dims[di], 1, NULL));
        }
    print_message("largest error / max|v|: %.3g\n", worst);
}

/* head_dim past the kernel's slice width (one and two slices over), and
 * small odd ones, with several heads. */
static void test_wide_heads(void **state)
{
    (void)state;
    rng_seed(3);
    double worst = 0.0;
    worst = fmax(worst, run_random_case(3, 65, 63, 129, 1, NULL));
    worst = fmax(worst, run_random_case(2, 33, 300, 257, 1, NULL));
    worst = fmax(worst, run_random_case(4, 5, 129, 200, 1, NULL));
    worst = fmax(worst, run_random_case(5, 37, 41, 2, 1, NULL));
    print_message("largest error / max|v|: %.3g\n", worst);
}

/* 4096 x 4096, d = 64, one head: blocks far past the first rescales, and
 * denominators summed over many blocks; a few rows in every query block
 * region are checked. */
static void test_long_sequence(void **state)
{
    (void)state;
    rng_seed(4);
    double worst = run_random_case(1, 4096, 4096, 64, 257, NULL);
    print_message("largest error / max|v|: %.3g\n", worst);
}

/* One key: the softmax weight is exactly 1, so every output row is the
 * value row, bit for bit, whatever the scores. */
static void test_single_key(void **state)
{
    (void)state;
    rng_seed(5);
    const int64_t heads = 3, q_len = 70, d = 19;
    float *q = rand_floats(heads * q_len * d, -30.0, 30.0);
    float *k = rand_floats(heads * d, -30.0, 30.0);
    float *v = rand_floats(heads * d, -1.0, 1.0);
    float *out = alloc_floats(heads * q_len * d);
    mgpu_cpu_attention(q, k, v, out, heads, q_len, 1, d, 0.125f, NULL);
    for (int64_t h = 0; h < heads; h++)
        for (int64_t i = 0; i < q_len; i++)
            assert_memory_equal(out + (h * q_len + i) * d, v + h * d, (size_t)d * sizeof(float));
    free(q), free(k), free(v), free(out);
}

/* Scores of 1e3 to 1e4 (exp overflows float past 88): integer q and k
 * make every dot product exact in f32, so the reference and the kernel see
 * the same scores and only the softmax's own rounding remains. The weights
 * then sit on a handful of keys, which also tests the underflow of the
 * rest to 0. */
static void test_large_scores(void **state)
{
    (void)state;
    rng_seed(6);
    const int64_t heads = 2, q_len = 70, kv_len = 300, d = 64;
    float *q = rand_ints(heads * q_len * d, 16);
    float *k = rand_ints(heads * kv_len * d, 16);
    float *v = rand_floats(heads * kv_len * d, -1.0, 1.0);
    float *out = alloc_floats(heads * q_len * d);
    /* how large the scores really are */
    double smax = 0.0;
    for (int64_t j = 0; j < kv_len; j++) {
        double dot = 0.0;
        for (int64_t c = 0; c < d; c++)
            dot += (double)q[c] * (double)k[j * d + c];
        smax = fmax(smax, fabs(dot));
    }
    assert_true(smax > 1000.0);
    for (int s = 0; s < 2; s++) {
        float scale = s ? 1.0f : 3.0f;
        mgpu_cpu_attention(q, k, v, out, heads, q_len, kv_len, d, scale, NULL);
        check_rows(q, k, v, out, heads, q_len, kv_len, d, scale, 1);
    }
    free(q), free(k), free(v), free(out);
}

/* A negative scale reverses the ranking (the max must be of the scaled
 * scores); a zero scale gives the plain mean of the value rows. */
static void test_negative_and_zero_scale(void **state)
{
    (void)state;
    rng_seed(7);
    const int64_t heads = 2, q_len = 40, kv_len = 150, d = 24;
    float *q = rand_floats(heads * q_len * d, -2.0, 2.0);
    float *k = rand_floats(heads * kv_len * d, -2.0, 2.0);
    float *v = rand_floats(heads * kv_len * d, -1.0, 1.0);
    float *out = alloc_floats(heads * q_len * d);
    static const float scales[] = {-0.7f, -8.0f, 0.0f};
    for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
        mgpu_cpu_attention(q, k, v, out, heads, q_len, kv_len, d, scales[s], NULL);
        check_rows(q, k, v, out, heads, q_len, kv_len, d, scales[s], 1);
    }
    free(q), free(k), free(v), free(out);
}

/* No keys: the weighted sum over nothing, zeros (as q k^T v with an
 * empty inner dimension). No queries or heads: nothing is written. */
static void test_empty(void **state)
{
    (void)state;
    float q[6] = {1, 2, 3, 4, 5, 6}, kv[3] = {1, 1, 1}, out[6];
    for (int i = 0; i < 6; i++)
        out[i] = -1.0f;
    mgpu_cpu_attention(q, kv, kv, out, 1, 2, 0, 3, 1.0f, NULL);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == 0.0f);
    for (int i = 0; i < 6; i++)
        out[i] = -1.0f;
    mgpu_cpu_attention(q, kv, kv, out, 1, 0, 1, 3, 1.0f, NULL);
    mgpu_cpu_attention(q, kv, kv, out, 0, 2, 1, 3, 1.0f, NULL);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == -1.0f);
}

/* Bit-identical output with no pool and with 2 and 3 threads, on shapes
 * with more (head, query block) pairs than threads, fewer, and partial
 * blocks. */
static void test_thread_invariance(void **state)
{
    (void)state;
    static const struct {
        int64_t heads, q_len, kv_len, d;
    } shapes[] = {
        {3, 100, 77, 17}, {2, 65, 300, 128}, {1, 5, 1000, 64}, {5, 33, 129, 257}, {4, 1, 1, 1},
    };
    static const int threads[] = {2, 3};
    mgpu_threadpool *pools[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        mgpu_error err = {0};
        assert_int_equal(mgpu_threadpool_create(threads[i], &pools[i], &err), MGPU_OK);
        assert_int_equal(mgpu_threadpool_size(pools[i]), threads[i]);
    }
    rng_seed(8);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t h = shapes[s].heads, ql = shapes[s].q_len, kl = shapes[s].kv_len,
                      d = shapes[s].d;
        float *q = rand_floats(h * ql * d, -3.0, 3.0);
        float *k = rand_floats(h * kl * d, -3.0, 3.0);
        float *v = rand_floats(h * kl * d, -1.0, 1.0);
        float *want = alloc_floats(h * ql * d), *got = alloc_floats(h * ql * d);
        mgpu_cpu_attention(q, k, v, want, h, ql, kl, d, 0.3f, NULL);
        for (int i = 0; i < 2; i++) {
            memset(got, 0xff, (size_t)(h * ql * d) * sizeof(float));
            mgpu_cpu_attention(q, k, v, got, h, ql, kl, d, 0.3f, pools[i]);
            assert_memory_equal(got, want, (size_t)(h * ql * d) * sizeof(float));
        }
        free(q), free(k), free(v), free(want), free(got);
    }
    for (int i = 0; i < 2; i++)
        mgpu_threadpool_free(pools[i]);
}

/* Additive bias and the causal mask, against a plain reference: scores in
 * double, bias added, keys past the query masked, softmax, weighted sum. */
static void test_bias_and_causal(void **state)
{
    (void)state;
    rng_seed(77);
    const int64_t shapes[][4] = {{2, 5, 5, 8}, {3, 65, 65, 17}, {1, 300, 300, 64}, {2, 40, 170, 8}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        int64_t heads = shapes[c][0], ql = shapes[c][1], kl = shapes[c][2], d = shapes[c][3];
        float *q = rand_floats(heads * ql * d, -1, 1), *k = rand_floats(heads * kl * d, -1, 1);
        float *v = rand_floats(heads * kl * d, -1, 1);
        float *bias = rand_floats(heads * ql * kl, -3, 3);
        float *out = alloc_floats(heads * ql * d);
        for (int mode = 0; mode < 3; mode++) { /* bias, causal, both */
            const float *b = mode != 1 ? bias : NULL;
            int causal = mode != 0 && ql == kl;
            float scale = 1.0f / sqrtf((float)d);
            mgpu_cpu_attention_ex(q, k, v, out, heads, ql, kl, d, scale, b, causal, NULL);
            double worst = 0;
            for (int64_t h = 0; h < heads; h++)
                for (int64_t i = 0; i < ql; i++) {
                    double *p = malloc((size_t)kl * sizeof(double)), mx = -INFINITY, sum = 0,
                           vmax = 0;
                    assert_non_null(p);
                    for (int64_t j = 0; j < kl; j++) {
                        double sdot = 0;
                        for (int64_t e = 0; e < d; e++)
                            sdot += (double)q[(h * ql + i) * d + e] * k[(h * kl + j) * d + e];
                        p[j] = sdot * scale + (b ? b[(h * ql + i) * kl + j] : 0.0);
                        if (causal && j > i)
                            p[j] = -INFINITY;
                        mx = p[j] > mx ? p[j] : mx;
                    }
                    for (int64_t j = 0; j < kl; j++)
                        sum += p[j] = exp(p[j] - mx);
                    for (int64_t e = 0; e < d; e++) {
                        double o = 0;
                        for (int64_t j = 0; j < kl; j++) {
                            o += p[j] * v[(h * kl + j) * d + e];
                            vmax = fmax(vmax, fabs(v[(h * kl + j) * d + e]));
                        }
                        o /= sum;
                        double err = fabs(out[(h * ql + i) * d + e] - o) / (fabs(o) + vmax);
                        worst = err > worst ? err : worst;
                    }
                    free(p);
                }
            if (worst > TOL)
                fail_msg("case %zu mode %d: error %.3g", c, mode, worst);
        }
        /* without bias or mask it is the plain kernel, bit for bit */
        float *plain = alloc_floats(heads * ql * d);
        mgpu_cpu_attention(q, k, v, plain, heads, ql, kl, d, 0.5f, NULL);
        mgpu_cpu_attention_ex(q, k, v, out, heads, ql, kl, d, 0.5f, NULL, 0, NULL);
        assert_memory_equal(plain, out, (size_t)(heads * ql * d) * sizeof(float));
        free(plain), free(q), free(k), free(v), free(bias), free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_long_lengths),
        cmocka_unit_test(test_wide_heads),
        cmocka_unit_test(test_long_sequence),
        cmocka_unit_test(test_single_key),
        cmocka_unit_test(test_large_scores),
        cmocka_unit_test(test_negative_and_zero_scale),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_thread_invariance),
        cmocka_unit_test(test_bias_and_causal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
