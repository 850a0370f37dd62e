/* See vae_reference.h. Every activation is a freshly allocated double
 * array [channels][height][width]; each step returns a new one. */
#include "models/vae_reference.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref {
    const mgpu_model *model;
    int component;
    char *err;
    size_t err_size;
    int failed;
} ref;

typedef struct act {
    double *v;
    int64_t c, h, w;
} act;

static void fail(ref *r, const char *fmt, ...)
{
    if (r->failed)
        return;
    r->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->err_size, fmt, ap);
    va_end(ap);
}

static act make(ref *r, int64_t c, int64_t h, int64_t w)
{
    act a = {calloc((size_t)(c * h * w) + 1, sizeof(double)), c, h, w};
    if (!a.v)
        fail(r, "out of memory");
    return a;
}

/* A parameter as doubles, checked for its element count. */
static double *param(ref *r, const char *prefix, const char *suffix, int64_t n)
{
    char name[320];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    const mgpu_model_tensor *t = mgpu_model_find_in(r->model, (size_t)r->component, name);
    if (!t || (int64_t)t->info.n_elems != n) {
        fail(r, "reference: tensor %s missing or not %lld values", name, (long long)n);
        return NULL;
    }
    float *f = malloc((size_t)n * sizeof *f);
    double *d = malloc((size_t)n * sizeof *d);
    if (!f || !d || mgpu_dequantize(t->info.dtype, t->info.data, f, (uint64_t)n) != MGPU_OK) {
        fail(r, "reference: cannot decode %s", name);
        free(f);
        free(d);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    free(f);
    return d;
}

/* nn.Conv2d(in, out, k, stride) after zero padding top/bottom/left/right. */
static act conv(ref *r, act x, const char *name, int64_t out, int k, int stride, int pt, int pb,
                int pl, int pr)
{
    act y = {NULL, 0, 0, 0};
    double *wt = param(r, name, "weight", out * x.c * k * k);
    double *b = param(r, name, "bias", out);
    if (r->failed || !x.v) {
        free(wt);
        free(b);
        return y;
    }
    y = make(r, out, (x.h + pt + pb - k) / stride + 1, (x.w + pl + pr - k) / stride + 1);
    for (int64_t o = 0; y.v && o < out; o++)
        for (int64_t i = 0; i < y.h; i++)
            for (int64_t j = 0; j < y.w; j++) {
                double s = b[o];
                for (int64_t c = 0; c < x.c; c++)
                    for (int u = 0; u < k; u++)
                        for (int v = 0; v < k; v++) {
                            int64_t yy = i * stride + u - pt, xx = j * stride + v - pl;
                            if (yy >= 0 && yy < x.h && xx >= 0 && xx < x.w)
                                s += wt[((o * x.c + c) * k + u) * k + v] *
                                     x.v[(c * x.h + yy) * x.w + xx];
                        }
                y.v[(o * y.h + i) * y.w + j] = s;
            }
    free(wt);
    free(b);
    return y;
}

static act conv_same(ref *r, act x, const char *name, int64_t out, int k)
{
    return conv(r, x, name, out, k, 1, k / 2, k / 2, k / 2, k / 2);
}

/* nn.GroupNorm(32, c, eps=1e-6), then swish when asked. */
static act group_norm(ref *r, act x, const char *name, int silu)
{
    act y = {NULL, 0, 0, 0};
    double *g = param(r, name, "weight", x.c), *b = param(r, name, "bias", x.c);
    if (!r->failed && x.v)
        y = make(r, x.c, x.h, x.w);
    int64_t per = x.c / 32, s = x.h * x.w;
    for (int64_t grp = 0; y.v && grp < 32; grp++) {
        double mean = 0, var = 0;
        for (int64_t i = grp * per * s; i < (grp + 1) * per * s; i++)
            mean += x.v[i];
        mean /= (double)(per * s);
        for (int64_t i = grp * per * s; i < (grp + 1) * per * s; i++)
            var += (x.v[i] - mean) * (x.v[i] - mean);
        var /= (double)(per * s);
        for (int64_t c = grp * per; c < (grp + 1) * per; c++)
            for (int64_t i = 0; i < s; i++) {
                double v = (x.v[c * s + i] - mean) / sqrt(var + 1e-6) * g[c] + b[c];
                y.v[c * s + i] = silu ? v / (1.0 + exp(-v)) : v;
            }
    }
    free(g);
    free(b);
    return y;
}

static void add_into(act *y, act x)
{
    if (y->v && x.v)
        for (int64_t i = 0; i < y->c * y->h * y->w; i++)
            y->v[i] += x.v[i];
}

static act resnet(ref *r, act x, const char *p, int64_t out)
{
    char n[256];
    snprintf(n, sizeof n, "%s.norm1", p);
    act h1 = group_norm(r, x, n, 1);
    snprintf(n, sizeof n, "%s.conv1", p);
    act h2 = conv_same(r, h1, n, out, 3);
    free(h1.v);
    snprintf(n, sizeof n, "%s.norm2", p);
    act h3 = group_norm(r, h2, n, 1);
    free(h2.v);
    snprintf(n, sizeof n, "%s.conv2", p);
    act h4 = conv_same(r, h3, n, out, 3);
    free(h3.v);
    if (x.c != out) {
        snprintf(n, sizeof n, "%s.nin_shortcut", p);
        act s = conv_same(r, x, n, out, 1);
        add_into(&h4, s);
        free(s.v);
    } else {
        add_into(&h4, x);
    }
    return h4;
}

/* AttnBlock: single-head attention over the h*w positions of norm(x), the
 * channels as the head dimension, scale 1/sqrt(c), then proj_out and the
 * residual. */
static act attention(ref *r, act x, const char *p)
{
    char n[256];
    snprintf(n, sizeof n, "%s.norm", p);
    act hn = group_norm(r, x, n, 0);
    snprintf(n, sizeof n, "%s.q", p);
    act q = conv_same(r, hn, n, x.c, 1);
    snprintf(n, sizeof n, "%s.k", p);
    act k = conv_same(r, hn, n, x.c, 1);
    snprintf(n, sizeof n, "%s.v", p);
    act v = conv_same(r, hn, n, x.c, 1);
    free(hn.v);
    int64_t s = x.h * x.w, c = x.c;
    act o = {NULL, 0, 0, 0};
    double *row = malloc((size_t)s * sizeof *row);
    if (!r->failed && row)
        o = make(r, c, x.h, x.w);
    for (int64_t i = 0; o.v && i < s; i++) {
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < s; j++) {
            double d = 0;
            for (int64_t ch = 0; ch < c; ch++)
                d += q.v[ch * s + i] * k.v[ch * s + j];
            row[j] = d / sqrt((double)c);
            mx = fmax(mx, row[j]);
        }
        for (int64_t j = 0; j < s; j++) {
            row[j] = exp(row[j] - mx);
            sum += row[j];
        }
        for (int64_t ch = 0; ch < c; ch++) {
            double acc = 0;
            for (int64_t j = 0; j < s; j++)
                acc += row[j] / sum * v.v[ch * s + j];
            o.v[ch * s + i] = acc;
        }
    }
    free(row);
    free(q.v);
    free(k.v);
    free(v.v);
    snprintf(n, sizeof n, "%s.proj_out", p);
    act y = conv_same(r, o, n, c, 1);
    free(o.v);
    add_into(&y, x);
    return y;
}

static act mid(ref *r, act x, const char *side)
{
    char n[128];
    snprintf(n, sizeof n, "%s.mid.block_1", side);
    act a = resnet(r, x, n, x.c);
    snprintf(n, sizeof n, "%s.mid.attn_1", side);
    act b = attention(r, a, n);
    free(a.v);
    snprintf(n, sizeof n, "%s.mid.block_2", side);
    act c = resnet(r, b, n, b.c);
    free(b.v);
    return c;
}

/* Swaps x for y, freeing x. */
static void step(act *x, act y)
{
    free(x->v);
    *x = y;
}

int vae_reference_decode(const mgpu_model *model, int component, const vae_ref_config *cfg,
                         const float *z, int64_t h, int64_t w, double *image, char *err,
                         size_t err_size)
{
    ref r = {model, component, err, err_size, 0};
    act x = make(&r, cfg->z_channels, h, w);
    for (int64_t i = 0; x.v && i < cfg->z_channels * h * w; i++)
        x.v[i] = z[i] / cfg->scale_factor + cfg->shift_factor;
    char n[128];
    step(&x, conv_same(&r, x, "decoder.conv_in", cfg->channels[cfg->levels - 1], 3));
    step(&x, mid(&r, x, "decoder"));
    for (int l = cfg->levels - 1; l >= 0; l--) {
        for (int b = 0; b <= cfg->res_blocks; b++) {
            snprintf(n, sizeof n, "decoder.up.%d.block.%d", l, b);
            step(&x, resnet(&r, x, n, cfg->channels[l]));
        }
        if (l > 0 && x.v) { /* Upsample: nearest 2x, then a 3x3 conv */
            act u = make(&r, x.c, 2 * x.h, 2 * x.w);
            for (int64_t c = 0; u.v && c < x.c; c++)
                for (int64_t i = 0; i < u.h; i++)
                    for (int64_t j = 0; j < u.w; j++)
                        u.v[(c * u.h + i) * u.w + j] = x.v[(c * x.h + i / 2) * x.w + j / 2];
            step(&x, u);
            snprintf(n, sizeof n, "decoder.up.%d.upsample.conv", l);
            step(&x, conv_same(&r, x, n, x.c, 3));
        }
    }
    step(&x, group_norm(&r, x, "decoder.norm_out", 1));
    step(&x, conv_same(&r, x, "decoder.conv_out", cfg->image_channels, 3));
    if (!r.failed && x.v)
        memcpy(image, x.v, (size_t)(x.c * x.h * x.w) * sizeof *image);
    free(x.v);
    return r.failed ? -1 : 0;
}

int vae_reference_encode(const mgpu_model *model, int component, const vae_ref_config *cfg,
                         const float *image, int64_t H, int64_t W, double *z, char *err,
                         size_t err_size)
{
    ref r = {model, component, err, err_size, 0};
    act x = make(&r, cfg->image_channels, H, W);
    for (int64_t i = 0; x.v && i < cfg->image_channels * H * W; i++)
        x.v[i] = image[i];
    char n[128];
    step(&x, conv_same(&r, x, "encoder.conv_in", cfg->channels[0], 3));
    for (int l = 0; l < cfg->levels; l++) {
        for (int b = 0; b < cfg->res_blocks; b++) {
            snprintf(n, sizeof n, "encoder.down.%d.block.%d", l, b);
            step(&x, resnet(&r, x, n, cfg->channels[l]));
        }
        if (l < cfg->levels - 1) { /* Downsample: F.pad (0, 1, 0, 1), 3x3 stride 2 */
            snprintf(n, sizeof n, "encoder.down.%d.downsample.conv", l);
            step(&x, conv(&r, x, n, x.c, 3, 2, 0, 1, 0, 1));
        }
    }
    step(&x, mid(&r, x, "encoder"));
    step(&x, group_norm(&r, x, "encoder.norm_out", 1));
    step(&x, conv_same(&r, x, "encoder.conv_out", 2 * cfg->z_channels, 3));
    /* DiagonalGaussian: the first z channels are the mean. */
    for (int64_t i = 0; !r.failed && x.v && i < cfg->z_channels * x.h * x.w; i++)
        z[i] = (x.v[i] - cfg->shift_factor) * cfg->scale_factor;
    free(x.v);
    return r.failed ? -1 : 0;
}
