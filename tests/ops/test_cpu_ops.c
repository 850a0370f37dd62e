/* Tests of the CPU kernels in ops/cpu_ops.c (all but attention).
 *
 * Each kernel is compared with a reference in this file written a different
 * way and computed in double (Welford for layernorm statistics, log-sum-exp
 * for softmax, the tanh forms of gelu and silu, RoPE as ComfyUI's explicit
 * 2x2 rotation matrices) on random data from a fixed-seed PRNG, over odd
 * sizes and rows of one element, with the aliasing the header allows. The
 * RoPE table is also checked against values worked out by hand. Last, every
 * pooled kernel must give bit-identical output with no pool and with pools
 * of 2 and 3 threads.
 *
 * Tolerance: the kernels store f32 and chain a handful of roundings of
 * 2^-24 each (plus expf's error scaled by the size of its argument, at
 * most ~20 here), so their error against a double reference stays well
 * under 1e-6 relative; 1e-5 leaves margin yet is orders of magnitude below
 * what a wrong constant, index or formula gives. "Relative" is taken
 * against the size of the terms that were summed, not of the result, since
 * a sum that cancels to near zero has only an absolute error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/cpu_ops.h"
#include "ops/threadpool.h"
#include "test_random.h"

#define REL_TOL 1e-5

static const int64_t sizes[] = {1, 3, 17, 255, 1031, 3072};
#define N_SIZES (sizeof sizes / sizeof sizes[0])
static const int64_t row_counts[] = {1, 3, 17};
#define N_ROWS (sizeof row_counts / sizeof row_counts[0])

/* ------------------------------------------------------------ helpers */


static float *rand_floats(int64_t n, double lo, double hi)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++)
        p[i] = rng_float(lo, hi);
    return p;
}

static float *copy_floats(const float *src, int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

static double *new_doubles(int64_t n)
{
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    assert_non_null(p);
    return p;
}

/* |got - ref| <= rel * mag + abs for every element; mag NULL means |ref|. */
static void check_close_at(const float *got, const double *ref, const double *mag, int64_t n,
                           double rel, double abs_tol, const char *what, int line)
{
    for (int64_t i = 0; i < n; i++) {
        double m = mag ? mag[i] : fabs(ref[i]);
        double tol = rel * m + abs_tol;
        if (!(fabs((double)got[i] - ref[i]) <= tol))
            fail_msg("%s (line %d): element %lld: got %.9g, want %.17g, tol %.3g", what, line,
                     (long long)i, (double)got[i], ref[i], tol);
    }
}
#define check_close(got, ref, mag, n, rel, abs_tol, what)                                          \
    check_close_at(got, ref, mag, n, rel, abs_tol, what, __LINE__)

static void check_bits_at(const float *a, const float *b, int64_t n, const char *what, int line)
{
    if (memcmp(a, b, (size_t)n * sizeof(float)) != 0)
        for (int64_t i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
                fail_msg("%s (line %d): element %lld differs: %.9g vs %.9g", what, line,
                         (long long)i, (double)a[i], (double)b[i]);
}
#define check_bits(a, b, n, what) check_bits_at(a, b, n, what, __LINE__)

/* ------------------------------------------------------------ layernorm */

/* Welford's running mean and variance, in double. */
static void ref_layernorm(const float *x, double *y, double *mag, int64_t rows, int64_t dim,
                          const float *w, const float *b, double eps)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        double mean = 0.0, m2 = 0.0;
        for (int64_t i = 0; i < dim; i++) {
            double d = xr[i] - mean;
            mean += d / (double)(i + 1);
            m2 += d * (xr[i] - mean);
        }
        double sd = sqrt(m2 / (double)dim + eps);
        for (int64_t i = 0; i < dim; i++) {
            double n = (xr[i] - mean) / sd;
            double scaled = w ? n * w[i] : n;
            double bias = b ? b[i] : 0.0;
            y[r * dim + i] = scaled + bias;
            mag[r * dim + i] = fabs(scaled) + fabs(bias);
        }
    }
}

static void test_layernorm(void **state)
{
    (void)state;
    rng_seed(1);
    for (size_t ri = 0; ri < N_ROWS; ri++)
        for (size_t si = 0; si < N_SIZES; si++)
            for (int affine = 0; affine < 2; affine++) {
                const int64_t rows = row_counts[ri], dim = sizes[si], n = rows * dim;
                /* An offset mean, so the statistics are not the trivial ones. */
                float *x = rand_floats(n, 3.0, 5.0);
                float *w = affine ? rand_floats(dim, -2.0, 2.0) : NULL;
                float *b = affine ? rand_floats(dim, -1.0, 1.0) : NULL;
                float *y = rand_floats(n, -1.0, 1.0);
                double *ref = new_doubles(n), *mag = new_doubles(n);
                ref_layernorm(x, ref, mag, rows, dim, w, b, 1e-6);

                mgpu_cpu_layernorm(x, y, rows, dim, w, b, 1e-6f, NULL);
                check_close(y, ref, mag, n, REL_TOL, 1e-6, "layernorm");
                /* In place. */
                float *xy = copy_floats(x, n);
                mgpu_cpu_layernorm(xy, xy, rows, dim, w, b, 1e-6f, NULL);
                check_bits(xy, y, n, "layernorm in place");
                free(xy);
                free(x), free(w), free(b), free(y), free(ref), free(mag);
            }
}

static void test_layernorm_constant_row(void **state)
{
    (void)state;
    /* Zero variance: every output is 0 (eps keeps the division finite),
     * then the bias. A row of one element is always such a row. */
    float x[5] = {7.5f, 7.5f, 7.5f, 7.5f, 7.5f}, y[5], b[5] = {1, 2, 3, 4, 5};
    mgpu_cpu_layernorm(x, y, 1, 5, NULL, NULL, 1e-6f, NULL);
    for (int i = 0; i < 5; i++)
        assert_true(y[i] == 0.0f);
    mgpu_cpu_layernorm(x, y, 5, 1, NULL, b, 1e-6f, NULL);
    for (int i = 0; i < 5; i++)
        assert_true(y[i] == b[0]);
}

/* ------------------------------------------------------------ rmsnorm */

static void ref_rmsnorm(const float *x, double *y, double *mag, int64_t rows, int64_t dim,
                        const float *w, double eps)
{
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0.0;
        for (int64_t i = dim - 1; i >= 0; i--) /* backwards: a different order */
            ss += pow(x[r * dim + i], 2.0);
        double rms = sqrt(ss / (double)dim + eps);
        for (int64_t i = 0; i < dim; i++) {
            double v = x[r * dim + i] / rms * (w ? w[i] : 1.0);
            y[r * dim + i] = v;
            mag[r * dim + i] = fabs(v);
        }
    }
}

static void test_rmsnorm(void **state)
{
    (void)state;
    rng_seed(2);
    for (size_t ri = 0; ri < N_ROWS; ri++)
        for (size_t si = 0; si < N_SIZES; si++)
            for (int affine = 0; affine < 2; affine++) {
                const int64_t rows = row_counts[ri], dim = sizes[si], n = rows * dim;
                float *x = rand_floats(n, -3.0, 3.0);
                float *w = affine ? rand_floats(dim, 0.0, 2.0) : NULL;
                float *y = rand_floats(n, -1.0, 1.0);
                double *ref = new_doubles(n), *mag = new_doubles(n);
                ref_rmsnorm(x, ref, mag, rows, dim, w, 1e-6);

                mgpu_cpu_rmsnorm(x, y, rows, dim, w, 1e-6f, NULL);
                check_close(y, ref, mag, n, REL_TOL, 0.0, "rmsnorm");
                float *xy = copy_floats(x, n);
                mgpu_cpu_rmsnorm(xy, xy, rows, dim, w, 1e-6f, NULL);
                check_bits(xy, y, n, "rmsnorm in place");
                free(xy);
                free(x), free(w), free(y), free(ref), free(mag);
            }
    /* A zero row stays zero: eps keeps it from being 0/0. */
    float z[4] = {0};
    mgpu_cpu_rmsnorm(z, z, 1, 4, NULL, 1e-6f, NULL);
    for (int i = 0; i < 4; i++)
        assert_true(z[i] == 0.0f);
}

/* ------------------------------------------------------------ activations */

static void test_gelu_tanh(void **state)
{
    (void)state;
    rng_seed(3);
    const double k = sqrt(2.0 / acos(-1.0));
    for (size_t si = 0; si < N_SIZES; si++) {
        const int64_t n = sizes[si];
        /* |x| <= 5: beyond that the reference's own 1 + tanh(u) cancels
         * below our tolerance for negative x (the far tails are checked
         * separately below). */
        float *x = rand_floats(n, -5.0, 5.0);
        double *ref = new_doubles(n);
        for (int64_t i = 0; i < n; i++) {
            double v = x[i];
            ref[i] = 0.5 * v * (1.0 + tanh(k * (v + 0.044715 * v * v * v)));
        }
        mgpu_cpu_gelu_tanh(x, n, NULL);
        check_close(x, ref, NULL, n, REL_TOL, 1e-30, "gelu_tanh");
        free(x), free(ref);
    }
    /* Fixed points and tails: gelu(0) = 0, gelu(x) = x for large x, and
     * large negative x go to (minus) zero, never NaN. */
    float t[6] = {0.0f, 30.0f, 1e30f, -30.0f, -1e30f, 1.0f};
    mgpu_cpu_gelu_tanh(t, 6, NULL);
    assert_true(t[0] == 0.0f);
    assert_true(t[1] == 30.0f);
    assert_true(t[2] == 1e30f);
    assert_true(t[3] <= 0.0f && t[3] > -1e-30f);
    assert_true(t[4] == 0.0f);
    /* gelu_tanh(1) = 0.5 (1 + tanh(sqrt(2/pi) * 1.044715)) = 0.841191990607... */
    assert_true(fabs(t[5] - 0.8411919906082768) < 1e-6);
}

static void test_silu(void **state)
{
    (void)state;
    rng_seed(4);
    for (size_t si = 0; si < N_SIZES; si++) {
        const int64_t n = sizes[si];
        float *x = rand_floats(n, -20.0, 20.0);
        double *ref = new_doubles(n);
        for (int64_t i = 0; i < n; i++) /* sigmoid(v) = (1 + tanh(v / 2)) / 2 */
            ref[i] = x[i] * 0.5 * (1.0 + tanh(0.5 * x[i]));
        mgpu_cpu_silu(x, n, NULL);
        check_close(x, ref, NULL, n, REL_TOL, 1e-30, "silu");
        free(x), free(ref);
    }
    float t[4] = {0.0f, 200.0f, -200.0f, 1.0f};
    mgpu_cpu_silu(t, 4, NULL);
    assert_true(t[0] == 0.0f);
    assert_true(t[1] == 200.0f);
    assert_true(t[2] <= 0.0f && t[2] > -1e-30f);
    assert_true(fabs(t[3] - 0.7310585786300049) < 1e-7); /* 1 / (1 + e^-1) */
}

/* The other activations and scale, against their definitions in double. */
static void test_other_activations(void **state)
{
    (void)state;
    rng_seed(41);
    for (size_t si = 0; si < N_SIZES; si++) {
        const int64_t n = sizes[si];
        float *x = rand_floats(n, -8.0, 8.0);
        float *y = malloc((size_t)(n ? n : 1) * sizeof(float));
        double *ref = new_doubles(n);
        assert_non_null(y);

        for (int64_t i = 0; i < n; i++)
            ref[i] = 0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0)));
        memcpy(y, x, (size_t)n * sizeof(float));
        mgpu_cpu_gelu_erf(y, n, NULL);
        check_close(y, ref, NULL, n, REL_TOL, 1e-6, "gelu_erf");

        for (int64_t i = 0; i < n; i++)
            ref[i] = x[i] / (1.0 + exp(-1.702 * x[i]));
        memcpy(y, x, (size_t)n * sizeof(float));
        mgpu_cpu_gelu_quick(y, n, NULL);
        check_close(y, ref, NULL, n, REL_TOL, 1e-6, "gelu_quick");

        memcpy(y, x, (size_t)n * sizeof(float));
        mgpu_cpu_relu(y, n, NULL);
        for (int64_t i = 0; i < n; i++)
            assert_true(y[i] == (x[i] > 0.0f ? x[i] : 0.0f));

        mgpu_cpu_scale(y, x, -0.375f, n, NULL); /* a power of two ratio: exact */
        for (int64_t i = 0; i < n; i++)
            assert_true(y[i] == x[i] * -0.375f);
        free(x), free(y), free(ref);
    }
}

/* ------------------------------------------------------------ softmax */

/* p_i = exp(x_i - logsumexp(x)), in double. */
static void ref_softmax(const float *x, double *p, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        double m = -INFINITY;
        for (int64_t i = 0; i < cols; i++)
            m = fmax(m, xr[i]);
        double s = 0.0;
        for (int64_t i = 0; i < cols; i++)
            s += exp(xr[i] - m);
        double lse = m + log(s);
        for (int64_t i = 0; i < cols; i++)
            p[r * cols + i] = exp(xr[i] - lse);
    }
}

static void test_softmax(void **state)
{
    (void)state;
    rng_seed(5);
    /* Centres 0 (ordinary), +-1e4 (plain exp would overflow / underflow). */
    const double centres[] = {0.0, 1e4, -1e4};
    for (size_t ci = 0; ci < 3; ci++)
        for (size_t ri = 0; ri < N_ROWS; ri++)
            for (size_t si = 0; si < N_SIZES; si++) {
                const int64_t rows = row_counts[ri], cols = sizes[si], n = rows * cols;
                float *x = rand_floats(n, centres[ci] - 10.0, centres[ci] + 10.0);
                double *ref = new_doubles(n);
                ref_softmax(x, ref, rows, cols);
                mgpu_cpu_softmax_rows(x, rows, cols, NULL);
                check_close(x, ref, NULL, n, REL_TOL, 1e-30, "softmax");
                free(x), free(ref);
            }
}

static void test_softmax_special_rows(void **state)
{
    (void)state;
    /* One element: exactly 1. */
    float one[3] = {1e4f, -1e4f, 0.0f};
    mgpu_cpu_softmax_rows(one, 3, 1, NULL);
    for (int i = 0; i < 3; i++)
        assert_true(one[i] == 1.0f);
    /* A dominant entry: exactly one-hot, no overflow. */
    float dom[4] = {-1e4f, 1e4f, -1e4f, 0.0f};
    mgpu_cpu_softmax_rows(dom, 1, 4, NULL);
    assert_true(dom[0] == 0.0f && dom[1] == 1.0f && dom[2] == 0.0f && dom[3] == 0.0f);
    /* Masked (-inf) entries get exactly 0; the rest share the mass. */
    float mask[4] = {-INFINITY, 2.0f, -INFINITY, 2.0f};
    mgpu_cpu_softmax_rows(mask, 1, 4, NULL);
    assert_true(mask[0] == 0.0f && mask[2] == 0.0f);
    assert_true(mask[1] == 0.5f && mask[3] == 0.5f);
    /* Equal entries: uniform. */
    float eq[8];
    for (int i = 0; i < 8; i++)
        eq[i] = 1e4f;
    mgpu_cpu_softmax_rows(eq, 1, 8, NULL);
    for (int i = 0; i < 8; i++)
        assert_true(eq[i] == 0.125f);
}

/* ------------------------------------------------------------ elementwise */

static void test_add_mul(void **state)
{
    (void)state;
    rng_seed(6);
    const int64_t ns[] = {1, 3, 17, 255, 1031, 100003};
    for (size_t si = 0; si < sizeof ns / sizeof ns[0]; si++) {
        const int64_t n = ns[si];
        float *a = rand_floats(n, -4.0, 4.0), *b = rand_floats(n, -4.0, 4.0);
        float *y = rand_floats(n, -1.0, 1.0);
        /* The product of two floats is exact in double, and so is the sum
         * of two floats of this range, so one rounding to float is the
         * correctly rounded result: the kernels must match it exactly. */
        float *sum = malloc((size_t)n * sizeof(float)), *prod = malloc((size_t)n * sizeof(float));
        assert_non_null(sum);
        assert_non_null(prod);
        for (int64_t i = 0; i < n; i++) {
            sum[i] = (float)((double)a[i] + (double)b[i]);
            prod[i] = (float)((double)a[i] * (double)b[i]);
        }
        mgpu_cpu_add(y, a, b, n, NULL);
        check_bits(y, sum, n, "add");
        mgpu_cpu_mul(y, a, b, n, NULL);
        check_bits(y, prod, n, "mul");

        /* Aliasing: y == a, y == b. */
        float *t = copy_floats(a, n);
        mgpu_cpu_add(t, t, b, n, NULL);
        check_bits(t, sum, n, "add y == a");
        memcpy(t, b, (size_t)n * sizeof(float));
        mgpu_cpu_mul(t, a, t, n, NULL);
        check_bits(t, prod, n, "mul y == b");
        /* y == a == b: doubling and squaring. */
        memcpy(t, a, (size_t)n * sizeof(float));
        mgpu_cpu_add(t, t, t, n, NULL);
        for (int64_t i = 0; i < n; i++)
            assert_true(t[i] == 2.0f * a[i]);
        memcpy(t, a, (size_t)n * sizeof(float));
        mgpu_cpu_mul(t, t, t, n, NULL);
        for (int64_t i = 0; i < n; i++)
            assert_true(t[i] == (float)((double)a[i] * a[i]));
        free(t), free(a), free(b), free(y), free(sum), free(prod);
    }
}

/* ------------------------------------------------------------ modulation */

static void test_modulate(void **state)
{
    (void)state;
    rng_seed(7);
    for (size_t ri = 0; ri < N_ROWS; ri++)
        for (size_t si = 0; si < N_SIZES; si++) {
            const int64_t rows = row_counts[ri], dim = sizes[si], n = rows * dim;
            float *x = rand_floats(n, -3.0, 3.0);
            float *shift = rand_floats(dim, -1.0, 1.0), *scale = rand_floats(dim, -1.0, 1.0);
            float *y = rand_floats(n, -1.0, 1.0);
            double *ref = new_doubles(n), *mag = new_doubles(n);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t i = 0; i < dim; i++) {
                    double xv = x[r * dim + i];
                    ref[r * dim + i] = xv + xv * scale[i] + shift[i];
                    mag[r * dim + i] = fabs(xv) + fabs(xv * scale[i]) + fabs(shift[i]);
                }
            mgpu_cpu_modulate(y, x, rows, dim, shift, scale, NULL);
            check_close(y, ref, mag, n, REL_TOL, 0.0, "modulate");
            float *xy = copy_floats(x, n);
            mgpu_cpu_modulate(xy, xy, rows, dim, shift, scale, NULL);
            check_bits(xy, y, n, "modulate in place");
            free(xy), free(x), free(shift), free(scale), free(y), free(ref), free(mag);
        }
}

static void test_gate_add(void **state)
{
    (void)state;
    rng_seed(8);
    for (size_t ri = 0; ri < N_ROWS; ri++)
        for (size_t si = 0; si < N_SIZES; si++) {
            const int64_t rows = row_counts[ri], dim = sizes[si], n = rows * dim;
            float *x = rand_floats(n, -3.0, 3.0), *gate = rand_floats(dim, -1.0, 1.0);
            float *y = rand_floats(n, -3.0, 3.0);
            double *ref = new_doubles(n), *mag = new_doubles(n);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t i = 0; i < dim; i++) {
                    double g = (double)gate[i] * x[r * dim + i];
                    ref[r * dim + i] = y[r * dim + i] + g;
                    mag[r * dim + i] = fabs(y[r * dim + i]) + fabs(g);
                }
            mgpu_cpu_gate_add(y, x, rows, dim, gate, NULL);
            check_close(y, ref, mag, n, REL_TOL, 0.0, "gate_add");
            free(x), free(gate), free(y), free(ref), free(mag);
        }
}

/* ------------------------------------------------------------ RoPE */

/* ComfyUI's rope() for one axis, literally: scale = linspace(0, (dim-2)/dim,
 * dim/2); omega = 1 / theta^scale; M = [[cos, -sin], [sin, cos]] of
 * pos * omega. Writes M for pair j to m[j]. */
static void ref_rope_axis(double pos, int dim, double theta, double (*m)[2][2])
{
    const int steps = dim / 2;
    const double end = (double)(dim - 2) / dim;
    for (int j = 0; j < steps; j++) {
        double scale = steps > 1 ? end * j / (steps - 1) : 0.0;
        double a = pos * (1.0 / pow(theta, scale));
        m[j][0][0] = cos(a);
        m[j][0][1] = -sin(a);
        m[j][1][0] = sin(a);
        m[j][1][1] = cos(a);
    }
}

/* EmbedND: the axes' matrices concatenated along the pair axis, axis 0 first. */
static void ref_embed_nd(const float *positions, int64_t tokens, int n_axes, const int *axes_dim,
                         double theta, double (*m)[2][2], int64_t pairs)
{
    for (int64_t t = 0; t < tokens; t++) {
        int64_t off = 0;
        for (int a = 0; a < n_axes; a++) {
            ref_rope_axis(positions[t * n_axes + a], axes_dim[a], theta, m + t * pairs + off);
            off += axes_dim[a] / 2;
        }
        assert_int_equal(off, pairs);
    }
}

static void test_rope_table_by_hand(void **state)
{
    (void)state;
    float c[3], s[3];
    /* theta 10000, one axis of dim 2: omega_0 = 1, so position 1 -> 1 rad. */
    const float pos1 = 1.0f;
    const int axes1[] = {2};
    mgpu_cpu_rope_table(&pos1, 1, 1, axes1, 10000.0f, c, s);
    assert_true(c[0] == (float)0.54030230586813972); /* cos 1 */
    assert_true(s[0] == (float)0.84147098480789651); /* sin 1 */

    /* Two axes {2, 4}, positions (3, 100): axis 0 pair 0 has omega 1
     * (angle 3); axis 1 has omega 1 (angle 100) and 10000^(-2/4) = 0.01
     * (angle 1). Row layout: axis 0's pair, then axis 1's two pairs. */
    const float pos2[2] = {3.0f, 100.0f};
    const int axes2[] = {2, 4};
    mgpu_cpu_rope_table(pos2, 1, 2, axes2, 10000.0f, c, s);
    const double want_c[3] = {-0.98999249660044542, 0.86231887228768389, 0.54030230586813972};
    const double want_s[3] = {0.14112000805986722, -0.50636564110975879, 0.84147098480789651};
    for (int j = 0; j < 3; j++) {
        assert_true(fabs(c[j] - want_c[j]) <= 1e-7);
        assert_true(fabs(s[j] - want_s[j]) <= 1e-7);
    }

    /* Position 0: the identity, for every pair. */
    const float pos0[2] = {0.0f, 0.0f};
    mgpu_cpu_rope_table(pos0, 1, 2, axes2, 10000.0f, c, s);
    for (int j = 0; j < 3; j++)
        assert_true(c[j] == 1.0f && s[j] == 0.0f);
}

static void test_rope_table_flux(void **state)
{
    (void)state;
    rng_seed(9);
    /* FLUX.1's layout: theta 10000, axes {16, 56, 56}; ids are (0, row, col)
     * for image tokens and 0 for text. Odd-looking extra axes check the
     * generic path. */
    const int flux_axes[] = {16, 56, 56}, odd_axes[] = {2, 6, 10, 4};
    const struct {
        const int *axes;
        int n_axes;
        float theta;
    } cases[] = {{flux_axes, 3, 10000.0f}, {odd_axes, 4, 10000.0f}, {odd_axes, 4, 500.0f}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int64_t tokens = 37;
        const int n_axes = cases[ci].n_axes;
        int64_t pairs = 0;
        for (int a = 0; a < n_axes; a++)
            pairs += cases[ci].axes[a] / 2;
        float *pos = malloc((size_t)(tokens * n_axes) * sizeof(float));
        assert_non_null(pos);
        for (int64_t i = 0; i < tokens * n_axes; i++)
            pos[i] = (float)(rng_next() % 128);
        float *c = malloc((size_t)(tokens * pairs) * sizeof(float));
        float *s = malloc((size_t)(tokens * pairs) * sizeof(float));
        double(*m)[2][2] = malloc((size_t)(tokens * pairs) * sizeof *m);
        assert_non_null(c);
        assert_non_null(s);
        assert_non_null(m);
        mgpu_cpu_rope_table(pos, tokens, n_axes, cases[ci].axes, cases[ci].theta, c, s);
        ref_embed_nd(pos, tokens, n_axes, cases[ci].axes, cases[ci].theta, m, pairs);
        /* Values of magnitude <= 1 rounded once to float: 2^-25 apart. */
        for (int64_t i = 0; i < tokens * pairs; i++) {
            if (fabs(c[i] - m[i][0][0]) > 1e-7 || fabs(s[i] - m[i][1][0]) > 1e-7)
                fail_msg("rope table case %zu entry %lld: (%.9g, %.9g) vs (%.17g, %.17g)", ci,
                         (long long)i, (double)c[i], (double)s[i], m[i][0][0], m[i][1][0]);
        }
        free(pos), free(c), free(s), free(m);
    }
}

static void test_rope_apply(void **state)
{
    (void)state;
    rng_seed(10);
    const int axes[] = {2, 4, 6}; /* pairs 6, head_dim 12 */
    const int64_t pairs = 6, head_dim = 12;
    const int64_t heads_list[] = {1, 3}, tokens_list[] = {1, 17};
    for (size_t hi = 0; hi < 2; hi++)
        for (size_t ti = 0; ti < 2; ti++) {
            const int64_t heads = heads_list[hi], tokens = tokens_list[ti];
            const int64_t n = heads * tokens * head_dim;
            float *pos = malloc((size_t)(tokens * 3) * sizeof(float));
            assert_non_null(pos);
            for (int64_t i = 0; i < tokens * 3; i++)
                pos[i] = (float)(rng_next() % 64);
            float *c = malloc((size_t)(tokens * pairs) * sizeof(float));
            float *s = malloc((size_t)(tokens * pairs) * sizeof(float));
            double(*m)[2][2] = malloc((size_t)(tokens * pairs) * sizeof *m);
            assert_non_null(c);
            assert_non_null(s);
            assert_non_null(m);
            mgpu_cpu_rope_table(pos, tokens, 3, axes, 10000.0f, c, s);
            /* The reference matrices are built from the kernel's own table
             * (as floats) so this checks the rotation alone. */
            for (int64_t i = 0; i < tokens * pairs; i++) {
                m[i][0][0] = c[i], m[i][0][1] = -(double)s[i];
                m[i][1][0] = s[i], m[i][1][1] = c[i];
            }
            float *x = rand_floats(n, -2.0, 2.0);
            double *ref = new_doubles(n), *mag = new_doubles(n);
            /* apply_rope: x viewed as [..., pairs, 1, 2];
             * out[.., j, i] = M[j][i][0] * x[2j] + M[j][i][1] * x[2j+1]. */
            for (int64_t h = 0; h < heads; h++)
                for (int64_t t = 0; t < tokens; t++)
                    for (int64_t j = 0; j < pairs; j++) {
                        const float *xp = x + (h * tokens + t) * head_dim + 2 * j;
                        double(*mt)[2] = m[t * pairs + j];
                        for (int i = 0; i < 2; i++) {
                            int64_t o = (h * tokens + t) * head_dim + 2 * j + i;
                            ref[o] = mt[i][0] * xp[0] + mt[i][1] * xp[1];
                            mag[o] = fabs(mt[i][0] * xp[0]) + fabs(mt[i][1] * xp[1]);
                        }
                    }
            mgpu_cpu_rope_apply(x, heads, tokens, head_dim, c, s, NULL);
            check_close(x, ref, mag, n, REL_TOL, 0.0, "rope_apply");
            free(pos), free(c), free(s), free(m), free(x), free(ref), free(mag);
        }

    /* Position 0 everywhere: x comes back bit for bit. */
    const float zero_pos[3] = {0};
    float c[6], s[6];
    mgpu_cpu_rope_table(zero_pos, 1, 3, axes, 10000.0f, c, s);
    float *x = rand_floats(2 * head_dim, -2.0, 2.0), *x0 = copy_floats(x, 2 * head_dim);
    mgpu_cpu_rope_apply(x, 2, 1, head_dim, c, s, NULL);
    check_bits(x, x0, 2 * head_dim, "rope at position 0");
    free(x), free(x0);

    /* Adjacent pairs, not halves: a quarter turn (cos 0, sin 1) maps
     * (a, b) -> (-b, a) within each adjacent pair. */
    float cq[2] = {0.0f, 0.0f}, sq[2] = {1.0f, 1.0f};
    float v[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    mgpu_cpu_rope_apply(v, 1, 1, 4, cq, sq, NULL);
    assert_true(v[0] == -2.0f && v[1] == 1.0f && v[2] == -4.0f && v[3] == 3.0f);
}

/* ------------------------------------------------------------ layout */

static void test_layout(void **state)
{
    (void)state;
    rng_seed(11);
    const int64_t rows_list[] = {1, 7}, parts_list[] = {1, 3}, width_list[] = {1, 5};
    for (size_t a = 0; a < 2; a++)
        for (size_t b = 0; b < 2; b++)
            for (size_t c = 0; c < 2; c++) {
                const int64_t rows = rows_list[a], parts = parts_list[b], width = width_list[c];
                const int64_t n = rows * parts * width;
                float *x = rand_floats(n, -1.0, 1.0);
                float *out = malloc((size_t)(rows * width) * sizeof(float));
                assert_non_null(out);
                for (int64_t p = 0; p < parts; p++) {
                    /* a column split: part p of each row */
                    mgpu_cpu_copy_2d(out, width, x + p * width, parts * width, rows, width);
                    for (int64_t r = 0; r < rows; r++)
                        for (int64_t i = 0; i < width; i++)
                            assert_true(out[r * width + i] == x[r * parts * width + p * width + i]);
                }
                free(out);

                /* Read the same buffer as [tokens=rows][heads=parts][width]. */
                float *heads = malloc((size_t)n * sizeof(float));
                float *back = malloc((size_t)n * sizeof(float));
                assert_non_null(heads);
                assert_non_null(back);
                mgpu_cpu_tokens_to_heads(x, rows, parts, width, heads);
                for (int64_t h = 0; h < parts; h++)
                    for (int64_t t = 0; t < rows; t++)
                        for (int64_t d = 0; d < width; d++)
                            assert_true(heads[(h * rows + t) * width + d] ==
                                        x[t * parts * width + h * width + d]);
                mgpu_cpu_heads_to_tokens(heads, rows, parts, width, back);
                check_bits(back, x, n, "heads_to_tokens(tokens_to_heads(x))");
                free(heads), free(back), free(x);
            }

    const int64_t dim = 3;
    for (int64_t ar = 0; ar <= 2; ar++)
        for (int64_t br = 0; br <= 3; br++) {
            float *xa = rand_floats(ar * dim, -1.0, 1.0), *xb = rand_floats(br * dim, -1.0, 1.0);
            float *out = malloc((size_t)((ar + br) * dim + 1) * sizeof(float));
            assert_non_null(out);
            out[(ar + br) * dim] = 42.0f; /* sentinel: nothing written past the end */
            /* a row concatenation: two copies into one buffer */
            mgpu_cpu_copy_2d(out, dim, xa, dim, ar, dim);
            mgpu_cpu_copy_2d(out + ar * dim, dim, xb, dim, br, dim);
            check_bits(out, xa, ar * dim, "concat head");
            check_bits(out + ar * dim, xb, br * dim, "concat tail");
            assert_true(out[(ar + br) * dim] == 42.0f);
            free(xa), free(xb), free(out);
        }

    /* transpose against the index definition, sizes around the 32-block */
    const int64_t sizes[] = {1, 5, 32, 33, 70};
    for (size_t a = 0; a < 5; a++)
        for (size_t b = 0; b < 5; b++) {
            int64_t rows = sizes[a], cols = sizes[b];
            float *x = rand_floats(rows * cols, -1.0, 1.0);
            float *y = malloc((size_t)(rows * cols) * sizeof(float));
            assert_non_null(y);
            mgpu_cpu_transpose(x, rows, cols, y);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t c = 0; c < cols; c++)
                    assert_true(y[c * rows + r] == x[r * cols + c]);
            free(x), free(y);
        }
}

/* ------------------------------------------------------------ threads */

/* Sizes large enough that the pool cuts them into several chunks. */
enum { T_ROWS = 67, T_DIM = 1031, T_N = 300007, T_HEADS = 3, T_TOKENS = 300, T_HEAD_DIM = 128 };

typedef struct thread_inputs {
    float *a, *b, *w, *bias, *cos_t, *sin_t;
} thread_inputs;

static thread_inputs tin;

static void k_layernorm(float *y, mgpu_threadpool *p)
{
    mgpu_cpu_layernorm(tin.a, y, T_ROWS, T_DIM, tin.w, tin.bias, 1e-6f, p);
}
static void k_rmsnorm(float *y, mgpu_threadpool *p)
{
    mgpu_cpu_rmsnorm(tin.a, y, T_ROWS, T_DIM, tin.w, 1e-6f, p);
}
static void k_gelu(float *y, mgpu_threadpool *p)
{
    memcpy(y, tin.a, T_N * sizeof(float));
    mgpu_cpu_gelu_tanh(y, T_N, p);
}
static void k_silu(float *y, mgpu_threadpool *p)
{
    memcpy(y, tin.a, T_N * sizeof(float));
    mgpu_cpu_silu(y, T_N, p);
}
static void k_softmax(float *y, mgpu_threadpool *p)
{
    memcpy(y, tin.a, T_ROWS * T_DIM * sizeof(float));
    mgpu_cpu_softmax_rows(y, T_ROWS, T_DIM, p);
}
static void k_add(float *y, mgpu_threadpool *p)
{
    mgpu_cpu_add(y, tin.a, tin.b, T_N, p);
}
static void k_mul(float *y, mgpu_threadpool *p)
{
    mgpu_cpu_mul(y, tin.a, tin.b, T_N, p);
}
static void k_modulate(float *y, mgpu_threadpool *p)
{
    mgpu_cpu_modulate(y, tin.a, T_ROWS, T_DIM, tin.bias, tin.w, p);
}
static void k_gate_add(float *y, mgpu_threadpool *p)
{
    memcpy(y, tin.b, T_ROWS * T_DIM * sizeof(float));
    mgpu_cpu_gate_add(y, tin.a, T_ROWS, T_DIM, tin.w, p);
}
static void k_rope(float *y, mgpu_threadpool *p)
{
    memcpy(y, tin.a, T_HEADS * T_TOKENS * T_HEAD_DIM * sizeof(float));
    mgpu_cpu_rope_apply(y, T_HEADS, T_TOKENS, T_HEAD_DIM, tin.cos_t, tin.sin_t, p);
}

static void test_thread_invariance(void **state)
{
    (void)state;
    rng_seed(12);
    tin.a = rand_floats(T_N, -4.0, 4.0);
    tin.b = rand_floats(T_N, -4.0, 4.0);
    tin.w = rand_floats(T_DIM, -1.0, 1.0);
    tin.bias = rand_floats(T_DIM, -1.0, 1.0);
    /* FLUX's table: axes {16, 56, 56}, ids (0, row, col). */
    const int axes[] = {16, 56, 56};
    float *pos = malloc(T_TOKENS * 3 * sizeof(float));
    assert_non_null(pos);
    for (int t = 0; t < T_TOKENS; t++) {
        pos[3 * t] = 0.0f;
        pos[3 * t + 1] = (float)(t / 20);
        pos[3 * t + 2] = (float)(t % 20);
    }
    tin.cos_t = malloc(T_TOKENS * 64 * sizeof(float));
    tin.sin_t = malloc(T_TOKENS * 64 * sizeof(float));
    assert_non_null(tin.cos_t);
    assert_non_null(tin.sin_t);
    mgpu_cpu_rope_table(pos, T_TOKENS, 3, axes, 10000.0f, tin.cos_t, tin.sin_t);
    free(pos);

    const struct {
        const char *name;
        void (*run)(float *y, mgpu_threadpool *p);
        int64_t n;
    } kernels[] = {
        {"layernorm", k_layernorm, T_ROWS * T_DIM}, {"rmsnorm", k_rmsnorm, T_ROWS * T_DIM},
        {"gelu_tanh", k_gelu, T_N},                 {"silu", k_silu, T_N},
        {"softmax", k_softmax, T_ROWS * T_DIM},     {"add", k_add, T_N},
        {"mul", k_mul, T_N},                        {"modulate", k_modulate, T_ROWS * T_DIM},
        {"gate_add", k_gate_add, T_ROWS * T_DIM},
        {"rope_apply", k_rope, T_HEADS * T_TOKENS * T_HEAD_DIM},
    };
    mgpu_threadpool *pools[2] = {NULL, NULL};
    const int threads[2] = {2, 3};
    for (int i = 0; i < 2; i++) {
        mgpu_error err = {0};
        assert_int_equal(mgpu_threadpool_create(threads[i], &pools[i], &err), MGPU_OK);
        assert_int_equal(mgpu_threadpool_size(pools[i]), threads[i]);
    }
    float *base = malloc(T_N * sizeof(float)), *got = malloc(T_N * sizeof(float));
    assert_non_null(base);
    assert_non_null(got);
    for (size_t k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
        kernels[k].run(base, NULL);
        for (int i = 0; i < 2; i++) {
            memset(got, 0xff, T_N * sizeof(float)); /* NaN fill: a skipped chunk shows */
            kernels[k].run(got, pools[i]);
            check_bits(got, base, kernels[k].n, kernels[k].name);
        }
    }
    for (int i = 0; i < 2; i++)
        mgpu_threadpool_free(pools[i]);
    free(base), free(got);
    free(tin.a), free(tin.b), free(tin.w), free(tin.bias), free(tin.cos_t), free(tin.sin_t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_layernorm_constant_row),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_gelu_tanh),
        cmocka_unit_test(test_other_activations),
        cmocka_unit_test(test_silu),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_softmax_special_rows),
        cmocka_unit_test(test_add_mul),
        cmocka_unit_test(test_modulate),
        cmocka_unit_test(test_gate_add),
        cmocka_unit_test(test_rope_table_by_hand),
        cmocka_unit_test(test_rope_table_flux),
        cmocka_unit_test(test_rope_apply),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_thread_invariance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
