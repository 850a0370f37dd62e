/* Every op of backend.h on every available backend, on random inputs,
 * against a plain double-precision reference written here, and for each
 * backend other than the CPU also against the CPU backend's output.
 *
 * Backends: the CPU always (so the test means something on any machine);
 * CUDA when the plugin loads and sees a device. Without one the CUDA test
 * says "no CUDA device: CUDA checks skipped" and is skipped, not failed.
 *
 * Tolerances, per op:
 * - exact (memcmp): convert and get_rows (the decoders are byte-exact
 *   ports of core/quant.c), the layout ops, add/mul/scale against f32
 *   arithmetic; and on other backends, modulate, gate_add and rope against
 *   the CPU (same f32 operations in the same order, no contraction).
 * - GEMMs (linear, conv2d) in f32: |y - ref| <= (k + 4) 2^-24 sum|x w|,
 *   the classic bound for a k-term f32 dot product plus the bias add.
 * - GEMMs with bf16 operands (CUDA for every weight dtype but F32): each
 *   operand is rounded to bf16 (relative error <= 2^-8 each), so each
 *   product is off by at most 2^-7 + 2^-16 of its size; plus the f32
 *   accumulation: (2^-7 + 2^-16 + (k + 4) 2^-24) sum|x w|. Against the CPU
 *   the two bounds add.
 * - norms, softmax, activations, attention: a few f32 roundings and one
 *   libm call each (1e-5 relative, or 4e-7 absolute per unit of |x| where
 *   gelu_erf's 1 + erf cancels), far below what a wrong index or formula
 *   gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda_loader.h"
#include "test_random.h"

static mgpu_backend *cpu;
static mgpu_backend *gpu; /* NULL without a CUDA device */

#define HAS(be, op) ((be)->ops->op != NULL)

/* ------------------------------------------------------------ device helpers */

static void *up(mgpu_backend *be, const void *host, size_t bytes)
{
    void *d = NULL;
    mgpu_error err = {0};
    assert_int_equal(be->ops->alloc(be, bytes ? bytes : 1, &d, &err), MGPU_OK);
    if (bytes)
        assert_int_equal(mgpu_backend_upload(be, d, host, bytes, &err), MGPU_OK);
    return d;
}

static float *dzeros(mgpu_backend *be, int64_t n)
{
    float *h = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    assert_non_null(h);
    float *d = up(be, h, (size_t)n * sizeof(float));
    free(h);
    return d;
}

/* Downloads n floats, frees nothing. Fails the test on a backend error. */
static float *down(mgpu_backend *be, const float *d, int64_t n)
{
    float *h = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(h);
    mgpu_error err = {0};
    mgpu_status s = mgpu_backend_download(be, h, d, (size_t)n * sizeof(float), &err);
    if (s != MGPU_OK)
        fail_msg("%s: %s", be->name, err.message);
    return h;
}

static void dfree(mgpu_backend *be, const void *d)
{
    be->ops->free(be, (void *)d);
}

static float *rand_floats(int64_t n, double lo, double hi)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++)
        p[i] = rng_float(lo, hi);
    return p;
}

/* Either CPU variant: the CPU's ops and precision. */
static bool is_cpu(const mgpu_backend *be)
{
    return mgpu_backend_is_cpu(be);
}

/* |got - ref| <= tol[i] for every i (tol NULL: exact equality of floats). */
static void expect_close(const char *what, const mgpu_backend *be, const float *got,
                         const double *ref, const double *tol, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= (tol ? tol[i] : 0.0)))
            fail_msg("%s on %s: element %lld is %.9g, reference %.9g (tolerance %.3g)", what,
                     be->name, (long long)i, (double)got[i], ref[i], tol ? tol[i] : 0.0);
    }
}

static void expect_same_bits(const char *what, const mgpu_backend *be, const float *a,
                             const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            fail_msg("%s on %s: element %lld is %.9g, expected %.9g exactly", what, be->name,
                     (long long)i, (double)a[i], (double)b[i]);
}

/* ------------------------------------------------------------ weights */

static const mgpu_dtype floating[] = {
    MGPU_DTYPE_F64,  MGPU_DTYPE_F32,  MGPU_DTYPE_F16,    MGPU_DTYPE_BF16,   MGPU_DTYPE_F8_E4M3,
    MGPU_DTYPE_F8_E5M2, MGPU_DTYPE_Q4_0, MGPU_DTYPE_Q4_1, MGPU_DTYPE_Q5_0, MGPU_DTYPE_Q5_1,
    MGPU_DTYPE_Q8_0, MGPU_DTYPE_Q2_K, MGPU_DTYPE_Q3_K,   MGPU_DTYPE_Q4_K,   MGPU_DTYPE_Q5_K,
    MGPU_DTYPE_Q6_K, MGPU_DTYPE_IQ4_NL, MGPU_DTYPE_IQ4_XS,
};
#define N_FLOATING (sizeof floating / sizeof floating[0])

/* Offsets of a block's f16 scale fields (d, then dmin or m when present). */
static int scale_fields(mgpu_dtype t, int off[2])
{
    switch (t) {
    case MGPU_DTYPE_Q4_0: case MGPU_DTYPE_Q5_0: case MGPU_DTYPE_Q8_0: case MGPU_DTYPE_IQ4_NL:
    case MGPU_DTYPE_IQ4_XS: off[0] = 0; return 1;
    case MGPU_DTYPE_Q4_1: case MGPU_DTYPE_Q5_1: case MGPU_DTYPE_Q4_K: case MGPU_DTYPE_Q5_K:
        off[0] = 0, off[1] = 2; return 2;
    case MGPU_DTYPE_Q2_K: off[0] = 80, off[1] = 82; return 2;
    case MGPU_DTYPE_Q3_K: off[0] = 108; return 1;
    case MGPU_DTYPE_Q6_K: off[0] = 208; return 1;
    default: return 0;
    }
}

/* n values of dtype t: scalars encode random floats in [-1, 1); block
 * types are random bytes (every quant, scale and high bit pattern) with
 * small finite f16 scales. *dec gets the CPU decoder's values. */
static uint8_t *make_weights(mgpu_dtype t, int64_t n, size_t *bytes, float **dec)
{
    const mgpu_dtype_info *info = mgpu_dtype_get_info(t);
    uint64_t b;
    assert_true(mgpu_dtype_bytes_for(t, (uint64_t)n, &b));
    uint8_t *w = malloc(b ? b : 1);
    assert_non_null(w);
    if (!info->quantized) {
        float *f = rand_floats(n, -1.0, 1.0);
        assert_int_equal(mgpu_quantize(t, f, w, (uint64_t)n), MGPU_OK);
        free(f);
    } else {
        for (uint64_t i = 0; i < b; i++)
            w[i] = (uint8_t)rng_next();
        int off[2];
        int nf = scale_fields(t, off);
        assert_true(nf > 0);
        for (uint64_t blk = 0; blk < b / info->block_bytes; blk++)
            for (int f = 0; f < nf; f++) {
                uint16_t h = mgpu_f32_to_f16(rng_float(-0.02, 0.02));
                uint8_t *p = w + blk * info->block_bytes + off[f];
                p[0] = (uint8_t)(h & 0xFF);
                p[1] = (uint8_t)(h >> 8);
            }
    }
    *dec = malloc((size_t)n * sizeof(float));
    assert_non_null(*dec);
    assert_int_equal(mgpu_dequantize(t, w, *dec, (uint64_t)n), MGPU_OK);
    *bytes = (size_t)b;
    return w;
}

/* ------------------------------------------------------------ GEMM ops */

static double gemm_rel(const mgpu_backend *be, mgpu_dtype wt, int64_t k)
{
    double f32 = (double)(k + 4) * 0x1p-24;
    return is_cpu(be) || wt == MGPU_DTYPE_F32 ? f32 : 0x1p-7 + 0x1p-16 + f32;
}

typedef struct linear_case {
    int64_t rows, in, out;
    mgpu_dtype wt, bt; /* bt INVALID: no bias */
} linear_case;

/* Runs the linear on be; returns y on the host. */
static float *run_linear(mgpu_backend *be, const linear_case *lc, const float *x, const uint8_t *w,
                         size_t wbytes, const uint8_t *bias, size_t bbytes)
{
    float *dx = up(be, x, (size_t)(lc->rows * lc->in) * sizeof(float));
    void *dw = up(be, w, wbytes);
    void *db = bias ? up(be, bias, bbytes) : NULL;
    float *dy = dzeros(be, lc->rows * lc->out);
    be->ops->linear(be, dx, lc->rows, lc->in, (mgpu_wref){dw, lc->wt}, lc->out,
                    (mgpu_wref){db, lc->bt}, dy);
    float *y = down(be, dy, lc->rows * lc->out);
    dfree(be, dx), dfree(be, dw), dfree(be, dy);
    if (db)
        dfree(be, db);
    return y;
}

static void check_linear_case(mgpu_backend *be, const linear_case *lc)
{
    char what[64];
    snprintf(what, sizeof what, "linear %lldx%lld %s", (long long)lc->out, (long long)lc->in,
             mgpu_dtype_name(lc->wt));
    float *x = rand_floats(lc->rows * lc->in, -1.0, 1.0);
    size_t wbytes, bbytes = 0;
    float *wf, *bf = NULL;
    uint8_t *w = make_weights(lc->wt, lc->out * lc->in, &wbytes, &wf);
    uint8_t *b = lc->bt != MGPU_DTYPE_INVALID ? make_weights(lc->bt, lc->out, &bbytes, &bf) : NULL;
    int64_t n = lc->rows * lc->out;
    double *ref = malloc((size_t)n * sizeof(double)), *tol = malloc((size_t)n * sizeof(double));
    assert_true(ref && tol);
    const double rel = gemm_rel(be, lc->wt, lc->in);
    for (int64_t r = 0; r < lc->rows; r++)
        for (int64_t o = 0; o < lc->out; o++) {
            double s = 0.0, mag = 0.0;
            for (int64_t i = 0; i < lc->in; i++) {
                double p = (double)x[r * lc->in + i] * (double)wf[o * lc->in + i];
                s += p;
                mag += fabs(p);
            }
            if (bf) {
                s += bf[o];
                mag += fabs(bf[o]);
            }
            ref[r * lc->out + o] = s;
            tol[r * lc->out + o] = rel * mag + 1e-30;
        }
    float *y = run_linear(be, lc, x, w, wbytes, b, bbytes);
    expect_close(what, be, y, ref, tol, n);
    if (!is_cpu(be)) { /* against the CPU backend: both bounds */
        float *yc = run_linear(cpu, lc, x, w, wbytes, b, bbytes);
        const double crel = gemm_rel(cpu, lc->wt, lc->in);
        for (int64_t i = 0; i < n; i++) {
            ref[i] = yc[i];
            tol[i] = tol[i] / rel * (rel + crel);
        }
        expect_close(what, be, y, ref, tol, n);
        free(yc);
    }
    /* determinism: the same bits again */
    float *y2 = run_linear(be, lc, x, w, wbytes, b, bbytes);
    expect_same_bits(what, be, y2, y, n);
    free(y2), free(y), free(ref), free(tol), free(x), free(w), free(wf), free(b), free(bf);
}

static void check_linear(mgpu_backend *be)
{
    for (size_t i = 0; i < N_FLOATING; i++) {
        /* 256 inputs: whole blocks for every type; 70 outputs: a partial tile */
        linear_case lc = {5, 256, 70, floating[i], i % 2 ? MGPU_DTYPE_BF16 : MGPU_DTYPE_F32};
        check_linear_case(be, &lc);
    }
    linear_case big = {67, 512, 300, MGPU_DTYPE_Q8_0, MGPU_DTYPE_INVALID};
    check_linear_case(be, &big);
    linear_case f32 = {1, 96, 33, MGPU_DTYPE_F32, MGPU_DTYPE_F16};
    check_linear_case(be, &f32);
}

/* --gemm fp8: F8_E4M3 weights on fp8 tensor cores where the GPU has them:
 * the activations rounded to e4m3 as x / s with s = max|x| / 448 (in f32,
 * as the kernel), the products summed by the tensor cores and scaled by s.
 * The reference takes those rounded activations as exact inputs; what
 * remains is the accumulation, which cuBLASLt promotes to f32 only
 * periodically: bounded here by (in + 4) 2^-14 of sum|x w| per output and,
 * overall, 2^-8 of the output's rms (a wrong scale or layout is far off
 * both). Elsewhere (the CPU, older GPUs) the usual path: against the exact
 * activations, within the e4m3 rounding bound it is far inside. */
static void check_linear_fp8(mgpu_backend *be)
{
    mgpu_error err = {0};
    assert_int_equal(mgpu_backend_set_gemm(be, MGPU_GEMM_FP8, &err), MGPU_OK);
    const char *how = mgpu_backend_gemm_name(be);
    const bool fp8 = strncmp(how, "fp8", 3) == 0;
    print_message("linear with --gemm fp8 on %s: %s\n", be->name, how);
    /* every dimension a multiple of 16, as cuBLASLt's fp8 kernels prefer */
    const linear_case lc = {32, 256, 96, MGPU_DTYPE_F8_E4M3, MGPU_DTYPE_F32};
    float *x = rand_floats(lc.rows * lc.in, -1.0, 1.0);
    x[5] = 1e-5f; /* x / s about 0.0045: one of e4m3's subnormals */
    size_t wbytes, bbytes;
    float *wf, *bf;
    uint8_t *w = make_weights(lc.wt, lc.out * lc.in, &wbytes, &wf);
    uint8_t *b = make_weights(lc.bt, lc.out, &bbytes, &bf);
    const int64_t n = lc.rows * lc.out;
    double *ref = malloc((size_t)n * sizeof(double)), *tol = malloc((size_t)n * sizeof(double));
    float amax = 0.0f;
    for (int64_t i = 0; i < lc.rows * lc.in; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    const float s = amax / 448.0f;
    for (int64_t r = 0; r < lc.rows; r++)
        for (int64_t o = 0; o < lc.out; o++) {
            double sum = 0.0, mag = 0.0, round = 0.0;
            for (int64_t i = 0; i < lc.in; i++) {
                const float xv = x[r * lc.in + i];
                const double wv = wf[o * lc.in + i];
                const double xq = (double)mgpu_fp8_e4m3_to_f32(mgpu_f32_to_fp8_e4m3(xv / s)) * s;
                sum += (fp8 ? xq : xv) * wv;
                mag += fabs((fp8 ? xq : xv) * wv);
                round += fabs(wv) * fmax(fabs(xv) * 0x1p-4, s * 0x1p-10);
            }
            ref[r * lc.out + o] = sum + bf[o];
            tol[r * lc.out + o] = (fp8 ? (double)(lc.in + 4) * 0x1p-14 * mag : round) +
                                  (double)(lc.in + 4) * 0x1p-24 * (mag + fabs(bf[o])) + 1e-30;
        }
    float *y = run_linear(be, &lc, x, w, wbytes, b, bbytes);
    expect_close("linear F8_E4M3 (--gemm fp8)", be, y, ref, tol, n);
    double err2 = 0.0, ref2 = 0.0;
    for (int64_t i = 0; i < n; i++) {
        err2 += (y[i] - ref[i]) * (y[i] - ref[i]);
        ref2 += ref[i] * ref[i];
    }
    if (fp8)
        assert_true(sqrt(err2) <= 0x1p-8 * sqrt(ref2));
    float *y2 = run_linear(be, &lc, x, w, wbytes, b, bbytes);
    expect_same_bits("linear F8_E4M3 (--gemm fp8, repeat)", be, y2, y, n);
    assert_int_equal(mgpu_backend_set_gemm(be, is_cpu(be) ? MGPU_GEMM_F32 : MGPU_GEMM_AUTO, &err),
                     MGPU_OK);
    free(y), free(y2), free(ref), free(tol), free(x), free(w), free(wf), free(b), free(bf);
}

typedef struct conv_case {
    mgpu_conv2d_shape sh;
    mgpu_dtype wt;
} conv_case;

static float *run_conv(mgpu_backend *be, const conv_case *cc, const float *x, const uint8_t *w,
                       size_t wbytes, const float *bias, int64_t ysize)
{
    const mgpu_conv2d_shape *s = &cc->sh;
    float *dx = up(be, x, (size_t)(s->c_in * s->h * s->w) * sizeof(float));
    void *dw = up(be, w, wbytes);
    void *db = up(be, bias, (size_t)s->c_out * sizeof(float));
    float *dy = dzeros(be, ysize);
    be->ops->conv2d(be, dx, s, (mgpu_wref){dw, cc->wt}, (mgpu_wref){db, MGPU_DTYPE_F32}, dy);
    float *y = down(be, dy, ysize);
    dfree(be, dx), dfree(be, dw), dfree(be, db), dfree(be, dy);
    return y;
}

static void check_conv2d(mgpu_backend *be)
{
    if (!HAS(be, conv2d))
        return;
    const conv_case cases[] = {
        {{32, 9, 11, 5, 3, 3, 2, 1, 0, 1, 2}, MGPU_DTYPE_F32},
        {{32, 9, 11, 5, 3, 3, 2, 1, 0, 1, 2}, MGPU_DTYPE_BF16},
        {{32, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1}, MGPU_DTYPE_Q8_0},
        {{64, 6, 7, 3, 1, 1, 1, 0, 0, 0, 0}, MGPU_DTYPE_F16},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case *cc = &cases[ci];
        const mgpu_conv2d_shape *s = &cc->sh;
        const int64_t oh = (s->h + s->pad_top + s->pad_bottom - s->kh) / s->stride + 1;
        const int64_t ow = (s->w + s->pad_left + s->pad_right - s->kw) / s->stride + 1;
        const int64_t k = s->c_in * s->kh * s->kw, ysize = s->c_out * oh * ow;
        float *x = rand_floats(s->c_in * s->h * s->w, -1.0, 1.0);
        float *bias = rand_floats(s->c_out, -1.0, 1.0);
        size_t wbytes;
        float *wf;
        uint8_t *w = make_weights(cc->wt, s->c_out * k, &wbytes, &wf);
        double *ref = malloc((size_t)ysize * sizeof(double));
        double *tol = malloc((size_t)ysize * sizeof(double));
        const double rel = gemm_rel(be, cc->wt, k);
        for (int64_t co = 0; co < s->c_out; co++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    double sum = bias[co], mag = fabs(bias[co]);
                    for (int64_t c = 0; c < s->c_in; c++)
                        for (int ky = 0; ky < s->kh; ky++)
                            for (int kx = 0; kx < s->kw; kx++) {
                                int64_t iy = oy * s->stride - s->pad_top + ky;
                                int64_t ix = ox * s->stride - s->pad_left + kx;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w)
                                    continue;
                                double p = (double)x[(c * s->h + iy) * s->w + ix] *
                                           wf[((co * s->c_in + c) * s->kh + ky) * s->kw + kx];
                                sum += p;
                                mag += fabs(p);
                            }
                    ref[(co * oh + oy) * ow + ox] = sum;
                    tol[(co * oh + oy) * ow + ox] = rel * mag + 1e-30;
                }
        float *y = run_conv(be, cc, x, w, wbytes, bias, ysize);
        expect_close("conv2d", be, y, ref, tol, ysize);
        if (!is_cpu(be) && HAS(cpu, conv2d)) {
            float *yc = run_conv(cpu, cc, x, w, wbytes, bias, ysize);
            const double crel = gemm_rel(cpu, cc->wt, k);
            for (int64_t i = 0; i < ysize; i++) {
                ref[i] = yc[i];
                tol[i] = tol[i] / rel * (rel + crel);
            }
            expect_close("conv2d vs cpu", be, y, ref, tol, ysize);
            free(yc);
        }
        free(y), free(ref), free(tol), free(x), free(bias), free(w), free(wf);
    }
}

/* ------------------------------------------------------------ decoding ops */

static void check_convert_get_rows(mgpu_backend *be)
{
    for (size_t i = 0; i < N_FLOATING; i++) {
        const mgpu_dtype t = floating[i];
        const int64_t be_n = mgpu_dtype_get_info(t)->block_elems;
        const int64_t dim = be_n > 1 ? 2 * be_n : 48, rows = 7, n = rows * dim;
        size_t bytes;
        float *dec;
        uint8_t *w = make_weights(t, n, &bytes, &dec);
        void *dw = up(be, w, bytes);
        float *dy = dzeros(be, n);
        be->ops->convert(be, (mgpu_wref){dw, t}, n, dy);
        float *y = down(be, dy, n);
        char what[48];
        snprintf(what, sizeof what, "convert %s", mgpu_dtype_name(t));
        expect_same_bits(what, be, y, dec, n);
        /* get_rows: rows by id, repeats included */
        const int32_t ids[] = {3, 0, 6, 3, 1};
        const int64_t nid = 5;
        int32_t *did = up(be, ids, sizeof ids);
        float *dout = dzeros(be, nid * dim);
        be->ops->get_rows(be, (mgpu_wref){dw, t}, dim, did, nid, dout);
        float *out = down(be, dout, nid * dim);
        snprintf(what, sizeof what, "get_rows %s", mgpu_dtype_name(t));
        for (int64_t r = 0; r < nid; r++)
            expect_same_bits(what, be, out + r * dim, dec + ids[r] * dim, dim);
        dfree(be, dw), dfree(be, dy), dfree(be, did), dfree(be, dout);
        free(w), free(dec), free(y), free(out);
    }
}

/* encode: f32 -> F32/F16/BF16 with round to nearest even, bit for bit the
 * scalar encoders of mgpu/dtype.h, and each result the nearest value:
 * decoded, it is within half a unit in the last place of the input. */
static void check_encode(mgpu_backend *be)
{
    const int64_t n = 4099;
    float *x = rand_floats(n, -3, 3);
    x[0] = 1.0f + 0x1p-8f; /* bf16 tie between 1 and 1 + 2^-7: even is 1 */
    x[1] = 1.0f + 3 * 0x1p-8f;
    x[2] = 1.0f + 0x1p-11f; /* f16 tie */
    x[3] = -0.0f;
    const mgpu_dtype types[] = {MGPU_DTYPE_F32, MGPU_DTYPE_F16, MGPU_DTYPE_BF16};
    float *dx = up(be, x, (size_t)n * sizeof(float));
    for (size_t k = 0; k < 3; k++) {
        const mgpu_dtype t = types[k];
        const size_t size = mgpu_dtype_get_info(t)->block_bytes;
        void *dy = dzeros(be, n);
        be->ops->encode(be, dx, n, t, dy);
        uint8_t *y = (uint8_t *)down(be, dy, n);
        for (int64_t i = 0; i < n; i++) {
            float back;
            if (t == MGPU_DTYPE_F32) {
                memcpy(&back, y + 4 * i, 4);
                assert_memory_equal(&back, &x[i], 4);
                continue;
            }
            uint16_t h, want = t == MGPU_DTYPE_F16 ? mgpu_f32_to_f16(x[i]) : mgpu_f32_to_bf16(x[i]);
            memcpy(&h, y + size * (size_t)i, 2);
            if (h != want)
                fail_msg("encode %s [%lld]: %04x, want %04x", mgpu_dtype_name(t), (long long)i, h,
                         want);
            back = t == MGPU_DTYPE_F16 ? mgpu_f16_to_f32(h) : mgpu_bf16_to_f32(h);
            double ulp = ldexp(1.0, ilogb(x[i] == 0 ? 1 : x[i]) - (t == MGPU_DTYPE_F16 ? 10 : 7));
            if (t == MGPU_DTYPE_F16 && ulp < 0x1p-24)
                ulp = 0x1p-24; /* subnormal f16 */
            assert_true(fabs((double)back - x[i]) <= 0.5 * ulp);
        }
        assert_int_equal(mgpu_bf16_to_f32(((uint16_t *)y)[0]) == 1.0f, t == MGPU_DTYPE_BF16);
        dfree(be, dy);
        free(y);
    }
    dfree(be, dx);
    free(x);
}

/* ------------------------------------------------------------ norms */

/* A parameter vector of n values in dtype t (INVALID: absent). */
typedef struct param {
    mgpu_dtype t;
    uint8_t *bytes;
    float *dec;
    void *dev;
} param;

static param make_param(mgpu_backend *be, mgpu_dtype t, int64_t n)
{
    param p = {t, NULL, NULL, NULL};
    if (t == MGPU_DTYPE_INVALID)
        return p;
    size_t bytes;
    p.bytes = make_weights(t, n, &bytes, &p.dec);
    p.dev = up(be, p.bytes, bytes);
    return p;
}

static void free_param(mgpu_backend *be, param *p)
{
    if (p->dev)
        dfree(be, p->dev);
    free(p->bytes);
    free(p->dec);
}

static double pv(const param *p, int64_t i, double absent)
{
    return p->dec ? p->dec[i] : absent;
}

static void check_norms(mgpu_backend *be)
{
    const mgpu_dtype ptypes[] = {MGPU_DTYPE_INVALID, MGPU_DTYPE_F32, MGPU_DTYPE_BF16};
    const int64_t rows = 3, dim = 1031, n = rows * dim;
    const float eps = 1e-6f;
    double *ref = malloc((size_t)n * sizeof(double)), *tol = malloc((size_t)n * sizeof(double));
    for (int v = 0; v < 3; v++) {
        float *x = rand_floats(n, -3.0, 5.0);
        param w = make_param(be, ptypes[v], dim), b = make_param(be, ptypes[(v + 1) % 3], dim);
        /* layernorm, in place */
        float *dx = up(be, x, (size_t)n * sizeof(float));
        be->ops->layernorm(be, dx, dx, rows, dim, (mgpu_wref){w.dev, w.t}, (mgpu_wref){b.dev, b.t},
                           eps);
        float *y = down(be, dx, n);
        for (int64_t r = 0; r < rows; r++) {
            double mean = 0.0, var = 0.0;
            for (int64_t i = 0; i < dim; i++)
                mean += x[r * dim + i];
            mean /= (double)dim;
            for (int64_t i = 0; i < dim; i++)
                var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
            var /= (double)dim;
            for (int64_t i = 0; i < dim; i++) {
                double v0 = (x[r * dim + i] - mean) / sqrt(var + eps) * pv(&w, i, 1.0);
                ref[r * dim + i] = v0 + pv(&b, i, 0.0);
                tol[r * dim + i] = 1e-5 * (fabs(v0) + fabs(pv(&b, i, 0.0)) + 1e-3);
            }
        }
        expect_close("layernorm", be, y, ref, tol, n);
        free(y);
        /* rmsnorm, out of place */
        dfree(be, dx);
        dx = up(be, x, (size_t)n * sizeof(float));
        float *dy = dzeros(be, n);
        be->ops->rmsnorm(be, dx, dy, rows, dim, (mgpu_wref){w.dev, w.t}, eps);
        y = down(be, dy, n);
        for (int64_t r = 0; r < rows; r++) {
            double sq = 0.0;
            for (int64_t i = 0; i < dim; i++)
                sq += (double)x[r * dim + i] * x[r * dim + i];
            double rr = 1.0 / sqrt(sq / (double)dim + eps);
            for (int64_t i = 0; i < dim; i++) {
                ref[r * dim + i] = x[r * dim + i] * rr * pv(&w, i, 1.0);
                tol[r * dim + i] = 1e-5 * fabs(ref[r * dim + i]) + 1e-7;
            }
        }
        expect_close("rmsnorm", be, y, ref, tol, n);
        free(y);
        dfree(be, dx), dfree(be, dy);
        free_param(be, &w), free_param(be, &b);
        free(x);
    }
    if (HAS(be, group_norm)) {
        const int64_t ch = 12, groups = 3, sp = 77, gn = ch * sp, per = ch / groups;
        float *x = rand_floats(gn, -2.0, 3.0);
        param w = make_param(be, MGPU_DTYPE_F32, ch), b = make_param(be, MGPU_DTYPE_BF16, ch);
        float *dx = up(be, x, (size_t)gn * sizeof(float));
        be->ops->group_norm(be, dx, dx, ch, sp, groups, (mgpu_wref){w.dev, w.t},
                            (mgpu_wref){b.dev, b.t}, 1e-5f);
        float *y = down(be, dx, gn);
        for (int64_t g = 0; g < groups; g++) {
            const float *xg = x + g * per * sp;
            double mean = 0.0, var = 0.0;
            for (int64_t i = 0; i < per * sp; i++)
                mean += xg[i];
            mean /= (double)(per * sp);
            for (int64_t i = 0; i < per * sp; i++)
                var += (xg[i] - mean) * (xg[i] - mean);
            var /= (double)(per * sp);
            for (int64_t i = 0; i < per * sp; i++) {
                int64_t c = g * per + i / sp;
                double v0 = (xg[i] - mean) / sqrt(var + 1e-5) * w.dec[c];
                ref[g * per * sp + i] = v0 + b.dec[c];
                tol[g * per * sp + i] = 1e-5 * (fabs(v0) + fabs(b.dec[c]) + 1e-3);
            }
        }
        expect_close("group_norm", be, y, ref, tol, gn);
        free(y), free(x);
        dfree(be, dx);
        free_param(be, &w), free_param(be, &b);
    }
    free(ref), free(tol);
}

/* ------------------------------------------------------------ elementwise */

static double unary_ref(mgpu_unary_op op, double x)
{
    switch (op) {
    case MGPU_UNARY_SILU: return x / (1.0 + exp(-x));
    case MGPU_UNARY_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    case MGPU_UNARY_GELU_ERF: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case MGPU_UNARY_GELU_QUICK: return x / (1.0 + exp(-1.702 * x));
    case MGPU_UNARY_RELU: return x > 0.0 ? x : 0.0;
    }
    return NAN;
}

/* Runs f(be, device buffers) and downloads `out` (index into bufs). */
static void check_elementwise(mgpu_backend *be)
{
    const int64_t n = 3001;
    float *a = rand_floats(n, -6.0, 6.0), *b = rand_floats(n, -6.0, 6.0);
    double *ref = malloc((size_t)n * sizeof(double)), *tol = malloc((size_t)n * sizeof(double));
    for (int op = MGPU_UNARY_SILU; op <= MGPU_UNARY_RELU; op++) {
        float *d = up(be, a, (size_t)n * sizeof(float));
        be->ops->unary(be, (mgpu_unary_op)op, d, n);
        float *y = down(be, d, n);
        for (int64_t i = 0; i < n; i++) {
            ref[i] = unary_ref((mgpu_unary_op)op, a[i]);
            tol[i] = 1e-5 * fabs(ref[i]) + 4e-7 * (1.0 + fabs(a[i]));
        }
        char what[32];
        snprintf(what, sizeof what, "unary %d", op);
        expect_close(what, be, y, ref, tol, n);
        free(y);
        dfree(be, d);
    }
    /* add, mul, scale are single f32 roundings: exact against f32 */
    float *da = up(be, a, (size_t)n * sizeof(float)), *db = up(be, b, (size_t)n * sizeof(float));
    float *dy = dzeros(be, n), *want = malloc((size_t)n * sizeof(float));
    be->ops->add(be, dy, da, db, n);
    float *y = down(be, dy, n);
    for (int64_t i = 0; i < n; i++)
        want[i] = a[i] + b[i];
    expect_same_bits("add", be, y, want, n);
    free(y);
    be->ops->mul(be, da, da, db, n); /* aliasing y == a */
    y = down(be, da, n);
    for (int64_t i = 0; i < n; i++)
        want[i] = a[i] * b[i];
    expect_same_bits("mul", be, y, want, n);
    free(y);
    be->ops->scale(be, dy, db, -0.37f, n);
    y = down(be, dy, n);
    for (int64_t i = 0; i < n; i++)
        want[i] = b[i] * -0.37f;
    expect_same_bits("scale", be, y, want, n);
    free(y), free(want);
    dfree(be, da), dfree(be, db), dfree(be, dy);
    free(a), free(b), free(ref), free(tol);
}

/* modulate, gate_add, rope, softmax: double references, and on other
 * backends the CPU's bits for the first three. */
static float *run_rowwise(mgpu_backend *be, int which, const float *x, const float *p1,
                          const float *p2, int64_t rows, int64_t dim, int64_t n1, int64_t n2)
{
    const int64_t n = rows * dim;
    float *dx = up(be, x, (size_t)n * sizeof(float));
    float *d1 = up(be, p1, (size_t)n1 * sizeof(float));
    float *d2 = up(be, p2, (size_t)n2 * sizeof(float));
    switch (which) {
    case 0: be->ops->modulate(be, dx, dx, rows, dim, d1, d2); break;
    case 1: be->ops->gate_add(be, dx, d2, rows, dim, d1); break;
    case 2: be->ops->rope(be, dx, 2, rows / 2, dim, d1, d2); break;
    default: be->ops->softmax_rows(be, dx, rows, dim); break;
    }
    float *y = down(be, dx, n);
    dfree(be, dx), dfree(be, d1), dfree(be, d2);
    return y;
}

static void check_rowwise(mgpu_backend *be)
{
    const char *names[] = {"modulate", "gate_add", "rope", "softmax_rows"};
    const int64_t dims[] = {130, 130, 12, 300};
    for (int which = 0; which < 4; which++) {
        for (int odd = 0; odd < (which == 2 ? 2 : 1); odd++) {
            const int64_t rows = 6, dim = dims[which] + odd, n = rows * dim;
            const int64_t tokens = rows / 2, pairs = dim / 2;
            float *x = rand_floats(n, which == 3 ? -10.0 : -2.0, which == 3 ? 10.0 : 2.0);
            int64_t n1 = which == 2 ? tokens * pairs : dim, n2 = which == 1 ? n : n1;
            float *p1 = rand_floats(n1, -1.0, 1.0), *p2 = rand_floats(n2, -1.0, 1.0);
            double *ref = malloc((size_t)n * sizeof(double));
            double *tol = malloc((size_t)n * sizeof(double));
            for (int64_t r = 0; r < rows; r++) {
                const float *xr = x + r * dim;
                double m = -INFINITY, sum = 0.0;
                if (which == 3) {
                    for (int64_t i = 0; i < dim; i++)
                        m = xr[i] > m ? xr[i] : m;
                    for (int64_t i = 0; i < dim; i++)
                        sum += exp(xr[i] - m);
                }
                for (int64_t i = 0; i < dim; i++) {
                    double v, mag;
                    if (which == 0) {
                        v = xr[i] * (1.0 + p2[i]) + p1[i];
                        mag = fabs(xr[i]) * (1.0 + fabs(p2[i])) + fabs(p1[i]);
                    } else if (which == 1) {
                        v = xr[i] + (double)p1[i] * p2[r * dim + i];
                        mag = fabs(xr[i]) + fabs((double)p1[i] * p2[r * dim + i]);
                    } else if (which == 2) {
                        const int64_t t = r % tokens, j = i / 2;
                        if (j >= pairs) {
                            v = xr[i], mag = 0.0; /* odd tail: untouched */
                        } else {
                            /* the rotation as a 2x2 matrix times the pair */
                            const double c = p1[t * pairs + j], s = p2[t * pairs + j];
                            const double a0 = xr[2 * j], a1 = xr[2 * j + 1];
                            v = i % 2 ? s * a0 + c * a1 : c * a0 - s * a1;
                            mag = fabs(a0) + fabs(a1);
                        }
                    } else {
                        v = exp(xr[i] - m) / sum;
                        mag = 10.0 * v; /* expf's error grows with its argument */
                    }
                    ref[r * dim + i] = v;
                    tol[r * dim + i] = 1e-6 * mag + 1e-30;
                }
            }
            float *y = run_rowwise(be, which, x, p1, p2, rows, dim, n1, n2);
            expect_close(names[which], be, y, ref, tol, n);
            if (!is_cpu(be) && which < 3) {
                float *yc = run_rowwise(cpu, which, x, p1, p2, rows, dim, n1, n2);
                expect_same_bits(names[which], be, y, yc, n);
                free(yc);
            }
            free(y), free(x), free(p1), free(p2), free(ref), free(tol);
        }
    }
}

/* ------------------------------------------------------------ attention */

typedef struct att_case {
    int64_t heads, q_len, kv_len, d;
    bool bias, causal;
} att_case;

static float *run_attention(mgpu_backend *be, const att_case *ac, const float *q, const float *k,
                            const float *v, const float *bias)
{
    const int64_t nq = ac->heads * ac->q_len * ac->d, nk = ac->heads * ac->kv_len * ac->d;
    float *dq = up(be, q, (size_t)nq * sizeof(float)), *dk = up(be, k, (size_t)nk * sizeof(float));
    float *dv = up(be, v, (size_t)nk * sizeof(float)), *dout = dzeros(be, nq);
    float *db = bias ? up(be, bias, (size_t)(ac->heads * ac->q_len * ac->kv_len) * sizeof(float))
                     : NULL;
    be->ops->attention(be, dq, dk, dv, dout, ac->heads, ac->q_len, ac->kv_len, ac->d,
                       (float)(1.0 / sqrt((double)ac->d)), db, ac->causal);
    float *out = down(be, dout, nq);
    dfree(be, dq), dfree(be, dk), dfree(be, dv), dfree(be, dout);
    if (db)
        dfree(be, db);
    return out;
}

static void check_attention(mgpu_backend *be)
{
    const att_case cases[] = {
        {2, 37, 45, 64, false, false}, {3, 33, 33, 40, true, true},
        {1, 5, 70, 128, true, false},  {2, 40, 20, 16, false, true},
        {1, 64, 200, 128, false, false}, {2, 96, 130, 128, false, false},
        {1, 20, 20, 512, false, false}, /* the VAE's head size, short */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const att_case *ac = &cases[ci];
        const int64_t nq = ac->heads * ac->q_len * ac->d, nk = ac->heads * ac->kv_len * ac->d;
        float *q = rand_floats(nq, -1.0, 1.0), *k = rand_floats(nk, -1.0, 1.0);
        float *v = rand_floats(nk, -1.0, 1.0);
        float *bias = ac->bias ? rand_floats(ac->heads * ac->q_len * ac->kv_len, -2.0, 2.0) : NULL;
        double *ref = malloc((size_t)nq * sizeof(double)), *tol = malloc((size_t)nq * sizeof(double));
        double *p = malloc((size_t)ac->kv_len * sizeof(double));
        const double scale = (float)(1.0 / sqrt((double)ac->d));
        /* a GPU may take this case to tensor cores (backend.h): q, k, v
         * rounded to bf16 (the reference then uses the rounded values, as
         * exact inputs), the scores summed in f32, the probabilities
         * rounded to bf16. A score moves by at most (d + 4) 2^-24 scale
         * sum|q||k|, a probability by twice that (relative, through the
         * softmax), then by 2^-9 (its rounding): times sum p|v|. */
        const bool bf16 = !is_cpu(be) && !ac->bias && !ac->causal &&
                          ((ac->q_len >= MGPU_ATTENTION_BF16_MIN &&
                            ac->kv_len >= MGPU_ATTENTION_BF16_MIN) ||
                           ac->d > 256);
        float *qr = malloc((size_t)nq * sizeof(float)), *kr = malloc((size_t)nk * sizeof(float));
        float *vr = malloc((size_t)nk * sizeof(float));
        for (int64_t i = 0; i < nq; i++)
            qr[i] = bf16 ? mgpu_bf16_to_f32(mgpu_f32_to_bf16(q[i])) : q[i];
        for (int64_t i = 0; i < nk; i++) {
            kr[i] = bf16 ? mgpu_bf16_to_f32(mgpu_f32_to_bf16(k[i])) : k[i];
            vr[i] = bf16 ? mgpu_bf16_to_f32(mgpu_f32_to_bf16(v[i])) : v[i];
        }
        double err2 = 0.0, ref2 = 0.0; /* for the rms check below */
        for (int64_t h = 0; h < ac->heads; h++)
            for (int64_t i = 0; i < ac->q_len; i++) {
                double m = -INFINITY, sum = 0.0, qk_max = 0.0;
                for (int64_t j = 0; j < ac->kv_len; j++) {
                    double s = 0.0, qk = 0.0;
                    for (int64_t c = 0; c < ac->d; c++) {
                        const double t = (double)qr[(h * ac->q_len + i) * ac->d + c] *
                                         kr[(h * ac->kv_len + j) * ac->d + c];
                        s += t;
                        qk += fabs(t);
                    }
                    qk_max = qk > qk_max ? qk : qk_max;
                    s *= scale;
                    if (bias)
                        s += bias[(h * ac->q_len + i) * ac->kv_len + j];
                    if (ac->causal && j > i)
                        s = -INFINITY;
                    p[j] = s;
                    m = s > m ? s : m;
                }
                for (int64_t j = 0; j < ac->kv_len; j++)
                    sum += (p[j] = exp(p[j] - m));
                const double e_s = (double)(ac->d + 4) * 0x1p-24 * scale * qk_max;
                for (int64_t c = 0; c < ac->d; c++) {
                    double o = 0.0, pv = 0.0;
                    for (int64_t j = 0; j < ac->kv_len; j++) {
                        const double vj = vr[(h * ac->kv_len + j) * ac->d + c];
                        o += p[j] / sum * vj;
                        pv += p[j] / sum * fabs(vj);
                    }
                    ref[(h * ac->q_len + i) * ac->d + c] = o;
                    tol[(h * ac->q_len + i) * ac->d + c] =
                        bf16 ? (2 * e_s + 0x1p-9) * pv + 2e-6 : 2e-5; /* |v| <= 1 */
                }
            }
        float *out = run_attention(be, ac, q, k, v, bias);
        expect_close("attention", be, out, ref, tol, nq);
        /* and overall: the probabilities' rounding errors are independent,
         * so their rms stays near 2^-9 of the output's, where a wrong scale
         * or a misplaced block would not */
        for (int64_t i = 0; i < nq; i++) {
            err2 += (out[i] - ref[i]) * (out[i] - ref[i]);
            ref2 += ref[i] * ref[i];
        }
        assert_true(sqrt(err2) <= 0x1p-7 * sqrt(ref2));
        float *again = run_attention(be, ac, q, k, v, bias);
        expect_same_bits("attention (repeat)", be, again, out, nq);
        free(out), free(again), free(q), free(k), free(v), free(bias), free(ref), free(tol), free(p);
        free(qr), free(kr), free(vr);
    }
}

/* ------------------------------------------------------------ layout */

static void check_layout(mgpu_backend *be)
{
    /* copy_2d between strided buffers, then overlapping within rows */
    const int64_t rows = 7, cols = 13, ss = 20, ds = 16;
    float *src = rand_floats(rows * ss, -1.0, 1.0), *dst0 = rand_floats(rows * ds, -1.0, 1.0);
    float *dsrc = up(be, src, (size_t)(rows * ss) * sizeof(float));
    float *ddst = up(be, dst0, (size_t)(rows * ds) * sizeof(float));
    be->ops->copy_2d(be, ddst, ds, dsrc, ss, rows, cols);
    float *y = down(be, ddst, rows * ds);
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst0 + r * ds, src + r * ss, (size_t)cols * sizeof(float));
    expect_same_bits("copy_2d", be, y, dst0, rows * ds);
    free(y);
    be->ops->copy_2d(be, dsrc, ss, dsrc + 3, ss, rows, cols); /* shift each row left by 3 */
    y = down(be, dsrc, rows * ss);
    for (int64_t r = 0; r < rows; r++)
        memmove(src + r * ss, src + r * ss + 3, (size_t)cols * sizeof(float));
    expect_same_bits("copy_2d (overlapping)", be, y, src, rows * ss);
    free(y), free(src), free(dst0);
    dfree(be, dsrc), dfree(be, ddst);

    /* axpy_2d into a column slice of a wider matrix; product then sum */
    {
        const int64_t r2 = 9, c2 = 11, ld = 30, off = 7;
        const float k = 0.37f;
        float *x = rand_floats(r2 * c2, -2.0, 2.0), *y0 = rand_floats(r2 * ld, -1.0, 1.0);
        float *dx = up(be, x, (size_t)(r2 * c2) * sizeof(float));
        float *dy = up(be, y0, (size_t)(r2 * ld) * sizeof(float));
        be->ops->axpy_2d(be, dy + off, ld, dx, c2, r2, c2, k);
        float *got = down(be, dy, r2 * ld);
        for (int64_t r = 0; r < r2; r++)
            for (int64_t c = 0; c < c2; c++) {
                volatile float v = k * x[r * c2 + c]; /* rounded, as specified */
                y0[r * ld + off + c] = y0[r * ld + off + c] + v;
            }
        expect_same_bits("axpy_2d", be, got, y0, r2 * ld);
        free(x), free(y0), free(got);
        dfree(be, dx), dfree(be, dy);
    }

    /* transpose */
    const int64_t tr = 37, tc = 53;
    float *x = rand_floats(tr * tc, -1.0, 1.0), *want = malloc((size_t)(tr * tc) * sizeof(float));
    float *dx = up(be, x, (size_t)(tr * tc) * sizeof(float)), *dy = dzeros(be, tr * tc);
    be->ops->transpose(be, dx, tr, tc, dy);
    y = down(be, dy, tr * tc);
    for (int64_t r = 0; r < tr; r++)
        for (int64_t c = 0; c < tc; c++)
            want[c * tr + r] = x[r * tc + c];
    expect_same_bits("transpose", be, y, want, tr * tc);
    free(y), free(x), free(want);
    dfree(be, dx), dfree(be, dy);

    /* tokens_to_heads and back */
    const int64_t t = 7, h = 3, d = 5, n = t * h * d;
    x = rand_floats(n, -1.0, 1.0);
    want = malloc((size_t)n * sizeof(float));
    dx = up(be, x, (size_t)n * sizeof(float));
    dy = dzeros(be, n);
    float *dz = dzeros(be, n);
    be->ops->tokens_to_heads(be, dx, t, h, d, dy);
    be->ops->heads_to_tokens(be, dy, t, h, d, dz);
    y = down(be, dy, n);
    for (int64_t ti = 0; ti < t; ti++)
        for (int64_t hi = 0; hi < h; hi++)
            for (int64_t c = 0; c < d; c++)
                want[(hi * t + ti) * d + c] = x[(ti * h + hi) * d + c];
    expect_same_bits("tokens_to_heads", be, y, want, n);
    free(y);
    y = down(be, dz, n);
    expect_same_bits("heads_to_tokens", be, y, x, n);
    free(y), free(x), free(want);
    dfree(be, dx), dfree(be, dy), dfree(be, dz);

    /* upsample2x */
    if (HAS(be, upsample2x)) {
        const int64_t ch = 3, ih = 4, iw = 5, on = ch * 4 * ih * iw;
        x = rand_floats(ch * ih * iw, -1.0, 1.0);
        want = malloc((size_t)on * sizeof(float));
        dx = up(be, x, (size_t)(ch * ih * iw) * sizeof(float));
        dy = dzeros(be, on);
        be->ops->upsample2x(be, dx, ch, ih, iw, dy);
        y = down(be, dy, on);
        for (int64_t c = 0; c < ch; c++)
            for (int64_t oy = 0; oy < 2 * ih; oy++)
                for (int64_t ox = 0; ox < 2 * iw; ox++)
                    want[(c * 2 * ih + oy) * 2 * iw + ox] = x[(c * ih + oy / 2) * iw + ox / 2];
        expect_same_bits("upsample2x", be, y, want, on);
        free(y), free(x), free(want);
        dfree(be, dx), dfree(be, dy);
    }
}

/* ------------------------------------------------------------ queues, errors */

/* Pinned host memory, a copy on the copy queue, the compute queue waiting
 * on its event, an op, and the event the host waits for. */
static void check_queues(mgpu_backend *be)
{
    const int64_t n = 4099;
    mgpu_error err = {0};
    float *host = NULL, *dev = NULL;
    assert_int_equal(be->ops->host_alloc(be, (size_t)n * sizeof(float), (void **)&host, &err),
                     MGPU_OK);
    assert_int_equal((uintptr_t)host % 4096, 0);
    assert_int_equal(mgpu_backend_alloc_f32(be, n, &dev, &err), MGPU_OK);
    assert_int_equal((uintptr_t)dev % 4096, 0);
    for (int64_t i = 0; i < n; i++)
        host[i] = (float)i;
    mgpu_event *copied = NULL, *done = NULL;
    assert_int_equal(be->ops->event_create(be, &copied, &err), MGPU_OK);
    assert_int_equal(be->ops->event_create(be, &done, &err), MGPU_OK);
    assert_int_equal(be->ops->copy(be, MGPU_QUEUE_COPY, dev, host, (size_t)n * sizeof(float),
                                   MGPU_COPY_HOST_TO_DEVICE, &err),
                     MGPU_OK);
    assert_int_equal(be->ops->event_record(be, copied, MGPU_QUEUE_COPY, &err), MGPU_OK);
    assert_int_equal(be->ops->queue_wait(be, MGPU_QUEUE_COMPUTE, copied, &err), MGPU_OK);
    be->ops->scale(be, dev, dev, 2.0f, n);
    assert_int_equal(be->ops->event_record(be, done, MGPU_QUEUE_COMPUTE, &err), MGPU_OK);
    assert_int_equal(be->ops->queue_wait(be, MGPU_QUEUE_COPY, done, &err), MGPU_OK);
    assert_int_equal(be->ops->copy(be, MGPU_QUEUE_COPY, host, dev, (size_t)n * sizeof(float),
                                   MGPU_COPY_DEVICE_TO_HOST, &err),
                     MGPU_OK);
    assert_int_equal(be->ops->event_record(be, copied, MGPU_QUEUE_COPY, &err), MGPU_OK);
    assert_int_equal(be->ops->event_sync(be, copied, &err), MGPU_OK);
    for (int64_t i = 0; i < n; i++)
        assert_true(host[i] == (float)(2 * i));
    /* a bad queue is refused, not crashed on */
    assert_int_not_equal(be->ops->copy(be, 7, dev, host, 4, MGPU_COPY_HOST_TO_DEVICE, &err),
                         MGPU_OK);
    be->ops->event_destroy(be, copied);
    be->ops->event_destroy(be, done);
    dfree(be, dev);
    be->ops->host_free(be, host);
    assert_int_equal(be->ops->synchronize(be, &err), MGPU_OK);
}

/* An undecodable weight fails the op; synchronize and download report it
 * (naming the backend) every time after. Run on a backend of its own. */
static void check_failure(mgpu_backend *be)
{
    mgpu_error err = {0};
    float *x = NULL, *y = NULL;
    void *w = NULL;
    assert_int_equal(mgpu_backend_alloc_f32(be, 64, &x, &err), MGPU_OK);
    assert_int_equal(mgpu_backend_alloc_f32(be, 64, &y, &err), MGPU_OK);
    assert_int_equal(be->ops->alloc(be, 64 * 64 * 4, &w, &err), MGPU_OK);
    be->ops->linear(be, x, 1, 64, (mgpu_wref){w, MGPU_DTYPE_INVALID}, 64, (mgpu_wref){NULL, 0}, y);
    assert_int_not_equal(be->ops->synchronize(be, &err), MGPU_OK);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s: ", be->name);
    assert_int_equal(strncmp(err.message, prefix, strlen(prefix)), 0);
    assert_null(strchr(err.message, '\n'));
    be->ops->add(be, y, x, x, 64); /* does nothing */
    float h[64];
    mgpu_error err2 = {0};
    assert_int_not_equal(mgpu_backend_download(be, h, y, sizeof h, &err2), MGPU_OK);
    assert_string_equal(err2.message, err.message);
    dfree(be, x), dfree(be, y), dfree(be, w);
}

/* ------------------------------------------------------------ the tests */

static void run_all(mgpu_backend *be)
{
    rng_seed(42);
    check_convert_get_rows(be);
    check_encode(be);
    check_linear(be);
    check_linear_fp8(be);
    check_conv2d(be);
    check_norms(be);
    check_elementwise(be);
    check_rowwise(be);
    check_attention(be);
    check_layout(be);
    check_queues(be);
}

static void test_cpu_backend(void **state)
{
    (void)state;
    run_all(cpu);
    mgpu_backend *fresh = NULL;
    mgpu_error err = {0};
    assert_int_equal(mgpu_backend_cpu_create(1, &fresh, &err), MGPU_OK);
    check_failure(fresh);
    mgpu_backend_free(fresh);
}

/* The discrete CPU variant: the same ops, with the copy queue of a GPU
 * (copies from pinned memory run behind, ordered only by events). */
static void test_cpu_discrete_backend(void **state)
{
    (void)state;
    mgpu_backend *d = NULL;
    mgpu_error err = {0};
    assert_int_equal(mgpu_backend_cpu_create_discrete(2, &d, &err), MGPU_OK);
    run_all(d);
    /* pinned source: lands by the event; a pageable source may be reused
     * as soon as copy returns */
    const size_t n = 1 << 16;
    uint8_t *pinned = NULL, *dev = NULL, *page = malloc(n), *back = malloc(n);
    assert_int_equal(d->ops->host_alloc(d, n, (void **)&pinned, &err), MGPU_OK);
    assert_int_equal(d->ops->alloc(d, 2 * n, (void **)&dev, &err), MGPU_OK);
    memset(pinned, 0xA5, n);
    memset(page, 0x5A, n);
    mgpu_event *ev = NULL;
    assert_int_equal(d->ops->event_create(d, &ev, &err), MGPU_OK);
    assert_int_equal(d->ops->copy(d, MGPU_QUEUE_COPY, dev, pinned, n, MGPU_COPY_HOST_TO_DEVICE, &err),
                     MGPU_OK);
    assert_int_equal(d->ops->copy(d, MGPU_QUEUE_COPY, dev + n, page, n, MGPU_COPY_HOST_TO_DEVICE,
                                  &err),
                     MGPU_OK);
    memset(page, 0, n); /* allowed: the pageable copy has completed */
    assert_int_equal(d->ops->event_record(d, ev, MGPU_QUEUE_COPY, &err), MGPU_OK);
    assert_int_equal(d->ops->event_sync(d, ev, &err), MGPU_OK);
    memcpy(back, dev, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(back[i], 0xA5);
    memcpy(back, dev + n, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(back[i], 0x5A);
    d->ops->event_destroy(d, ev);
    d->ops->free(d, dev);
    d->ops->host_free(d, pinned);
    free(page), free(back);
    mgpu_backend_free(d);
}

static void test_cuda_backend(void **state)
{
    (void)state;
    if (!gpu) {
        print_message("no CUDA device: CUDA checks skipped\n");
        skip();
    }
    run_all(gpu);
    mgpu_backend *fresh = NULL;
    mgpu_error err = {0};
    assert_int_equal(mgpu_backend_cuda_create(0, &fresh, &err), MGPU_OK);
    check_failure(fresh);
    mgpu_backend_free(fresh);
}

/* Whatever the machine, asking for a device that is not there gives one
 * line that names it: the plugin missing, no driver, or no such device. */
static void test_cuda_errors(void **state)
{
    (void)state;
    mgpu_backend *be = (mgpu_backend *)&be;
    mgpu_error err = {0};
    assert_int_not_equal(mgpu_backend_cuda_create(9999, &be, &err), MGPU_OK);
    assert_null(be);
    assert_int_equal(strncmp(err.message, "cuda:9999: ", 11), 0);
    assert_null(strchr(err.message, '\n'));
    assert_true(strstr(err.message, "plugin") || strstr(err.message, "no CUDA") ||
                strstr(err.message, "no such device"));
    print_message("cuda:9999 -> %s\n", err.message);
    if (!gpu) { /* and device 0 fails the same way */
        err.message[0] = '\0';
        assert_int_not_equal(mgpu_backend_cuda_create(0, &be, &err), MGPU_OK);
        assert_int_equal(strncmp(err.message, "cuda:0: ", 8), 0);
        print_message("cuda:0 -> %s\n", err.message);
    }
}

static int setup(void **state)
{
    (void)state;
    mgpu_error err = {0};
    if (mgpu_backend_cpu_create(2, &cpu, &err) != MGPU_OK)
        return -1;
    if (mgpu_backend_cuda_available() && mgpu_backend_cuda_create(0, &gpu, &err) != MGPU_OK) {
        fprintf(stderr, "CUDA device present but unusable: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mgpu_backend_free(gpu);
    mgpu_backend_free(cpu);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_backend),
        cmocka_unit_test(test_cpu_discrete_backend),
        cmocka_unit_test(test_cuda_backend),
        cmocka_unit_test(test_cuda_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
