/* See cpu_image.h. The convolution is a GEMM per band of output pixels:
 * im2col gathers each pixel's receptive field into a row of c_in * kh * kw
 * values (the weight's own [c_in][kh][kw] order), mgpu_cpu_linear multiplies
 * the rows by the weight (decoding it a tile at a time, whatever its dtype)
 * and the [pixels][c_out] result is transposed into the channel-major
 * output. Gathers and transposes are pure copies, so threads never change
 * a value; the band size depends on the shape alone. */
#include <math.h>
#include <stdlib.h>

#include "ops/cpu_image.h"

int64_t mgpu_cpu_conv2d_band_pixels(int64_t k, int64_t c_out)
{
    const int64_t floats = MGPU_CPU_CONV_BAND_BYTES / (int64_t)sizeof(float);
    int64_t p = floats / (k > 0 ? k : 1);
    int64_t q = floats / (c_out > 0 ? c_out : 1);
    if (q < p)
        p = q;
    return p < 1 ? 1 : p;
}

typedef struct conv_job {
    const float *x;
    const mgpu_conv2d_shape *s;
    int64_t oh, ow, k;
    int64_t p0, n; /* band: output pixels p0 .. p0 + n */
    float *col;    /* [n][k] */
    const float *out; /* [n][c_out] */
    float *y;
} conv_job;

static void im2col_rows(void *ctx, int64_t begin, int64_t end)
{
    const conv_job *j = ctx;
    const mgpu_conv2d_shape *s = j->s;
    for (int64_t i = begin; i < end; i++) {
        int64_t p = j->p0 + i, oy = p / j->ow, ox = p % j->ow;
        int64_t y0 = oy * s->stride - s->pad_top, x0 = ox * s->stride - s->pad_left;
        float *row = j->col + i * j->k;
        for (int64_t c = 0; c < s->c_in; c++) {
            const float *plane = j->x + c * s->h * s->w;
            for (int ky = 0; ky < s->kh; ky++) {
                int64_t iy = y0 + ky;
                bool row_in = iy >= 0 && iy < s->h;
                for (int kx = 0; kx < s->kw; kx++) {
                    int64_t ix = x0 + kx;
                    *row++ = row_in && ix >= 0 && ix < s->w ? plane[iy * s->w + ix] : 0.0f;
                }
            }
        }
    }
}

/* out [n][c_out] -> y[c][p0 .. p0 + n] for channels begin .. end. */
static void scatter_channels(void *ctx, int64_t begin, int64_t end)
{
    const conv_job *j = ctx;
    int64_t c_out = j->s->c_out, plane = j->oh * j->ow;
    enum { STRIP = 64 }; /* pixels per strip: reads stay in a few cache lines */
    for (int64_t i0 = 0; i0 < j->n; i0 += STRIP) {
        int64_t i1 = i0 + STRIP < j->n ? i0 + STRIP : j->n;
        for (int64_t c = begin; c < end; c++) {
            float *dst = j->y + c * plane + j->p0;
            for (int64_t i = i0; i < i1; i++)
                dst[i] = j->out[i * c_out + c];
        }
    }
}

mgpu_status mgpu_cpu_conv2d(const float *x, const mgpu_conv2d_shape *s, const void *weight,
                            mgpu_dtype weight_dtype, const float *bias, float *y,
                            mgpu_threadpool *pool, mgpu_cpu_scratch *scratch)
{
    if (s->c_in <= 0 || s->h <= 0 || s->w <= 0 || s->c_out <= 0 || s->kh <= 0 || s->kw <= 0 ||
        s->stride <= 0 || s->pad_top < 0 || s->pad_bottom < 0 || s->pad_left < 0 ||
        s->pad_right < 0)
        return MGPU_ERR_ARGUMENT;
    const mgpu_dtype_info *info = mgpu_dtype_get_info(weight_dtype);
    if (!info || !info->floating)
        return MGPU_ERR_ARGUMENT;
    int64_t span_h = s->h + s->pad_top + s->pad_bottom - s->kh;
    int64_t span_w = s->w + s->pad_left + s->pad_right - s->kw;
    if (span_h < 0 || span_w < 0)
        return MGPU_ERR_ARGUMENT;
    int64_t oh = span_h / s->stride + 1, ow = span_w / s->stride + 1;
    int64_t k = s->c_in * s->kh * s->kw, pixels = oh * ow;
    int64_t band = mgpu_cpu_conv2d_band_pixels(k, s->c_out);
    if (band > pixels)
        band = pixels;
    float *col = malloc((size_t)(band * k) * sizeof *col);
    float *out = malloc((size_t)(band * s->c_out) * sizeof *out);
    mgpu_status st = col && out ? MGPU_OK : MGPU_ERR_NO_MEMORY;
    for (int64_t p0 = 0; p0 < pixels && st == MGPU_OK; p0 += band) {
        conv_job j = {x, s, oh, ow, k, p0, pixels - p0 < band ? pixels - p0 : band, col, out, y};
        mgpu_threadpool_run(pool, im2col_rows, &j, j.n, 16);
        st = mgpu_cpu_linear(col, j.n, k, weight, weight_dtype, s->c_out, bias, out, pool, scratch);
        if (st == MGPU_OK)
            mgpu_threadpool_run(pool, scatter_channels, &j, s->c_out, 4);
    }
    free(col);
    free(out);
    return st;
}

/* ---- group norm --------------------------------------------------------- */

typedef struct gn_job {
    const float *x;
    float *y;
    int64_t per_group, spatial;
    const float *weight, *bias;
    float eps;
} gn_job;

/* One group per index: statistics in double over its channels, then the
 * affine normalisation of those channels. */
static void gn_groups(void *ctx, int64_t begin, int64_t end)
{
    const gn_job *j = ctx;
    int64_t n = j->per_group * j->spatial;
    for (int64_t g = begin; g < end; g++) {
        const float *xg = j->x + g * n;
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++)
            sum += xg[i];
        double mean = sum / (double)n, sq = 0.0;
        for (int64_t i = 0; i < n; i++) {
            double d = xg[i] - mean;
            sq += d * d;
        }
        double rstd = 1.0 / sqrt(sq / (double)n + (double)j->eps);
        /* Centre first: folding the mean into the shift would cancel
         * badly when the mean is large against the deviation. */
        float m = (float)mean;
        for (int64_t c = g * j->per_group; c < (g + 1) * j->per_group; c++) {
            float a = (float)rstd * (j->weight ? j->weight[c] : 1.0f);
            float b = j->bias ? j->bias[c] : 0.0f;
            const float *xc = j->x + c * j->spatial;
            float *yc = j->y + c * j->spatial;
            for (int64_t i = 0; i < j->spatial; i++)
                yc[i] = (xc[i] - m) * a + b;
        }
    }
}

void mgpu_cpu_group_norm(const float *x, float *y, int64_t channels, int64_t spatial,
                         int64_t groups, const float *weight, const float *bias, float eps,
                         mgpu_threadpool *pool)
{
    if (channels <= 0 || spatial <= 0 || groups <= 0 || channels % groups != 0)
        return;
    gn_job j = {x, y, channels / groups, spatial, weight, bias, eps};
    mgpu_threadpool_run(pool, gn_groups, &j, groups, 1);
}

/* ---- upsample ----------------------------------------------------------- */

typedef struct up_job {
    const float *x;
    float *y;
    int64_t w;
} up_job;

/* Input row r (of channels * h) becomes output rows 2r and 2r + 1. */
static void up_rows(void *ctx, int64_t begin, int64_t end)
{
    const up_job *j = ctx;
    for (int64_t r = begin; r < end; r++) {
        const float *src = j->x + r * j->w;
        float *d0 = j->y + 2 * r * 2 * j->w, *d1 = d0 + 2 * j->w;
        for (int64_t i = 0; i < j->w; i++) {
            d0[2 * i] = d0[2 * i + 1] = src[i];
            d1[2 * i] = d1[2 * i + 1] = src[i];
        }
    }
}

void mgpu_cpu_upsample2x(const float *x, int64_t channels, int64_t h, int64_t w, float *y,
                         mgpu_threadpool *pool)
{
    if (channels <= 0 || h <= 0 || w <= 0)
        return;
    up_job j = {x, y, w};
    mgpu_threadpool_run(pool, up_rows, &j, channels * h, 16);
}
