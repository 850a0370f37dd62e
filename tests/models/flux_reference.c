/* See flux_reference.h. The model, as BFL's flux/model.py and ComfyUI's
 * comfy/ldm/flux/{model,layers,math}.py define it:
 *
 *   img  = img_in(patchify(x))            "b c (h 2) (w 2) -> b (h w) (c 2 2)"
 *   vec  = time_in(temb(t)) [+ guidance_in(temb(g))] + vector_in(y)
 *          temb: 1000 * t, half = 128, freq_i = exp(-ln(1e4) i / half),
 *                [cos(args), sin(args)]; MLPEmbedder = out(silu(in(x)))
 *   txt  = txt_in(context)
 *   pe   : ids = [txt ids (0,0,0); img ids (0,row,col)], per axis a rope of
 *          axes_dim[a] dims, omega_i = theta^(-2i/dim); pairs of adjacent
 *          head dims rotate by [[cos, -sin], [sin, cos]]
 *   double block (per stream mod = lin(silu(vec)) -> shift1 scale1 gate1
 *          shift2 scale2 gate2): qkv(LN(x)(1+scale1)+shift1) viewed as
 *          (3, heads, head_dim); RMSNorm q and k per head; one joint
 *          attention over [txt; img] with rope; x += gate1 proj(attn);
 *          x += gate2 mlp(LN(x)(1+scale2)+shift2), mlp = Linear-GELU(tanh)-Linear
 *   single block (mod -> shift scale gate): linear1(LN(x)(1+scale)+shift)
 *          splits into qkv (3 hidden) and mlp; x += gate linear2([attn,
 *          gelu(mlp)])
 *   final: shift, scale = adaLN_modulation.1(silu(vec)) (shift first);
 *          linear(LN(img)(1+scale)+shift); unpatchify
 *
 * LayerNorm has no affine and eps 1e-6; RMSNorm is x rsqrt(mean(x^2)+1e-6)
 * times scale; attention scale is head_dim^-0.5. */
#include "flux_reference.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgpu/dtype.h"

typedef struct ref {
    const mgpu_model *model;
    int component;
    char *err;
    size_t err_size;
    int failed;
} ref;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void fail(ref *r, const char *fmt, ...)
{
    if (r->failed)
        return;
    r->failed = 1;
    if (r->err && r->err_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, r->err_size, fmt, ap);
        va_end(ap);
    }
}

static double *alloc(ref *r, int64_t n)
{
    if (r->failed)
        return NULL;
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
    if (!p)
        fail(r, "out of memory (%lld doubles)", (long long)n);
    return p;
}

static const mgpu_model_tensor *find(const ref *r, const char *name)
{
    for (size_t i = 0; i < mgpu_model_tensor_count(r->model); i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(r->model, i);
        if ((int)t->component == r->component && strcmp(t->name, name) == 0)
            return t;
    }
    return NULL;
}

/* The tensor `name` decoded into doubles; rows x cols must match its shape
 * (cols 0 for a 1-D tensor of `rows` values). */
static double *weight(ref *r, const char *name, int64_t rows, int64_t cols)
{
    if (r->failed)
        return NULL;
    const mgpu_model_tensor *t = find(r, name);
    if (!t) {
        fail(r, "reference: no tensor '%s'", name);
        return NULL;
    }
    int ok = cols ? t->info.ndim == 2 && (int64_t)t->info.shape[0] == rows &&
                        (int64_t)t->info.shape[1] == cols
                  : t->info.ndim == 1 && (int64_t)t->info.shape[0] == rows;
    if (!ok) {
        fail(r, "reference: tensor '%s' has an unexpected shape", name);
        return NULL;
    }
    float *f = malloc(t->info.n_elems * sizeof *f);
    double *d = alloc(r, (int64_t)t->info.n_elems);
    if (!f || !d) {
        free(f);
        free(d);
        fail(r, "out of memory");
        return NULL;
    }
    if (mgpu_dequantize(t->info.dtype, t->info.data, f, t->info.n_elems) != MGPU_OK) {
        fail(r, "reference: cannot decode '%s'", name);
        free(f);
        free(d);
        return NULL;
    }
    for (uint64_t i = 0; i < t->info.n_elems; i++)
        d[i] = f[i];
    free(f);
    return d;
}

/* Dimension `dim` of tensor `name`, or -1 when absent. */
static int64_t dim_of(const ref *r, const char *name, int dim)
{
    const mgpu_model_tensor *t = find(r, name);
    return t && dim < t->info.ndim ? (int64_t)t->info.shape[dim] : -1;
}

/* Number of blocks named "<stem>.N." (the largest N plus one). */
static int count_blocks(const ref *r, const char *stem)
{
    size_t len = strlen(stem);
    int count = 0;
    for (size_t i = 0; i < mgpu_model_tensor_count(r->model); i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(r->model, i);
        if ((int)t->component != r->component || strncmp(t->name, stem, len) != 0 ||
            t->name[len] != '.')
            continue;
        int n = atoi(t->name + len + 1);
        if (n + 1 > count)
            count = n + 1;
    }
    return count;
}

/* ---- plain operations ------------------------------------------------- */

/* y[n][out] = x[n][in] W[out][in]^T + b, with W and b read from `prefix`. */
static double *linear(ref *r, const char *prefix, const double *x, int64_t n, int64_t in,
                      int64_t out)
{
    char name[256];
    snprintf(name, sizeof name, "%s.weight", prefix);
    double *w = weight(r, name, out, in);
    snprintf(name, sizeof name, "%s.bias", prefix);
    double *b = weight(r, name, out, 0);
    double *y = alloc(r, n * out);
    if (!r->failed) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t o = 0; o < out; o++) {
                double s = b[o];
                for (int64_t k = 0; k < in; k++)
                    s += x[i * in + k] * w[o * in + k];
                y[i * out + o] = s;
            }
    }
    free(w);
    free(b);
    if (r->failed) {
        free(y);
        return NULL;
    }
    return y;
}

static double silu(double v)
{
    return v / (1.0 + exp(-v));
}

static double gelu_tanh(double v)
{
    const double c = 0.79788456080286535588; /* sqrt(2 / pi) */
    return 0.5 * v * (1.0 + tanh(c * (v + 0.044715 * v * v * v)));
}

/* LayerNorm without affine (eps 1e-6) of each row, then (1 + scale) x + shift. */
static void norm_modulate(const double *x, double *y, int64_t n, int64_t dim, const double *shift,
                          const double *scale)
{
    for (int64_t i = 0; i < n; i++) {
        const double *row = x + i * dim;
        double mean = 0, var = 0;
        for (int64_t k = 0; k < dim; k++)
            mean += row[k];
        mean /= (double)dim;
        for (int64_t k = 0; k < dim; k++)
            var += (row[k] - mean) * (row[k] - mean);
        var /= (double)dim; /* biased, as torch's layer_norm */
        double inv = 1.0 / sqrt(var + 1e-6);
        for (int64_t k = 0; k < dim; k++)
            y[i * dim + k] = (1.0 + scale[k]) * ((row[k] - mean) * inv) + shift[k];
    }
}

/* Sinusoidal embedding of 1000 t: [cos(args), sin(args)], dim even. */
static void timestep_embedding(double t, double *out, int64_t dim)
{
    int64_t half = dim / 2;
    for (int64_t i = 0; i < half; i++) {
        double freq = exp(-log(10000.0) * (double)i / (double)half);
        double arg = 1000.0 * t * freq;
        out[i] = cos(arg);
        out[half + i] = sin(arg);
    }
}

/* MLPEmbedder: out_layer(silu(in_layer(x))), one row. Adds into acc[hidden]. */
static void mlp_embedder_add(ref *r, const char *prefix, const double *x, int64_t in,
                             int64_t hidden, double *acc)
{
    char name[256];
    snprintf(name, sizeof name, "%s.in_layer", prefix);
    double *h = linear(r, name, x, 1, in, hidden);
    if (!h)
        return;
    for (int64_t k = 0; k < hidden; k++)
        h[k] = silu(h[k]);
    snprintf(name, sizeof name, "%s.out_layer", prefix);
    double *o = linear(r, name, h, 1, hidden, hidden);
    if (o)
        for (int64_t k = 0; k < hidden; k++)
            acc[k] += o[k];
    free(h);
    free(o);
}

/* The model's shapes and the rope table of one forward pass. */
typedef struct dims {
    int64_t hidden, heads, head_dim, mlp, n_txt, n_img, n;
    const double *cosv, *sinv; /* [n][head_dim / 2] */
} dims;

/* In place on q[n][stride] at column `col0`: per head RMSNorm with `scale`
 * (eps 1e-6), then the rotary embedding. */
static void qk_norm_rope(const dims *d, double *q, int64_t stride, int64_t col0,
                         const double *scale)
{
    for (int64_t i = 0; i < d->n; i++)
        for (int64_t h = 0; h < d->heads; h++) {
            double *v = q + i * stride + col0 + h * d->head_dim;
            double ms = 0;
            for (int64_t k = 0; k < d->head_dim; k++)
                ms += v[k] * v[k];
            ms /= (double)d->head_dim;
            double inv = 1.0 / sqrt(ms + 1e-6);
            for (int64_t k = 0; k < d->head_dim; k++)
                v[k] = v[k] * inv * scale[k];
            /* pair p = (v[2p], v[2p+1]) rotates by angle p of token i */
            for (int64_t p = 0; p < d->head_dim / 2; p++) {
                double c = d->cosv[i * (d->head_dim / 2) + p];
                double s = d->sinv[i * (d->head_dim / 2) + p];
                double a = v[2 * p], b = v[2 * p + 1];
                v[2 * p] = c * a - s * b;
                v[2 * p + 1] = s * a + c * b;
            }
        }
}

/* Full softmax attention over all d->n tokens. qkv rows hold q, k, v at
 * columns 0, hidden, 2 hidden (stride `stride`), each (heads, head_dim).
 * out: [n][hidden] with heads side by side. */
static void attention(ref *r, const dims *d, const double *qkv, int64_t stride, double *out)
{
    double *score = alloc(r, d->n);
    if (!score)
        return;
    double sc = 1.0 / sqrt((double)d->head_dim);
    for (int64_t h = 0; h < d->heads; h++)
        for (int64_t i = 0; i < d->n; i++) {
            const double *q = qkv + i * stride + h * d->head_dim;
            double mx = -INFINITY;
            for (int64_t j = 0; j < d->n; j++) {
                const double *k = qkv + j * stride + d->hidden + h * d->head_dim;
                double s = 0;
                for (int64_t e = 0; e < d->head_dim; e++)
                    s += q[e] * k[e];
                score[j] = s * sc;
                if (score[j] > mx)
                    mx = score[j];
            }
            double sum = 0;
            for (int64_t j = 0; j < d->n; j++) {
                score[j] = exp(score[j] - mx);
                sum += score[j];
            }
            double *o = out + i * d->hidden + h * d->head_dim;
            for (int64_t e = 0; e < d->head_dim; e++)
                o[e] = 0;
            for (int64_t j = 0; j < d->n; j++) {
                const double *v = qkv + j * stride + 2 * d->hidden + h * d->head_dim;
                for (int64_t e = 0; e < d->head_dim; e++)
                    o[e] += score[j] / sum * v[e];
            }
        }
    free(score);
}

/* lin(silu(vec)): the modulation vector of `mult` chunks of hidden. */
static double *modulation(ref *r, const dims *d, const char *prefix, const double *vec, int mult)
{
    double *sv = alloc(r, d->hidden);
    if (!sv)
        return NULL;
    for (int64_t k = 0; k < d->hidden; k++)
        sv[k] = silu(vec[k]);
    double *m = linear(r, prefix, sv, 1, d->hidden, mult * d->hidden);
    free(sv);
    return m;
}

/* ---- blocks ----------------------------------------------------------- */

/* One DoubleStreamBlock on txt[n_txt][hidden] and img[n_img][hidden]. */
static void double_block(ref *r, const dims *d, int index, double *txt, double *img,
                         const double *vec)
{
    const int64_t H = d->hidden;
    double *x[2] = {txt, img}; /* stream 0 is text: text tokens come first */
    const int64_t rows[2] = {d->n_txt, d->n_img};
    const int64_t first[2] = {0, d->n_txt};
    static const char *const side[2] = {"txt", "img"};
    char name[256];
    double *mod[2] = {NULL, NULL};
    double *joint = alloc(r, d->n * 3 * H); /* [n][q k v] over both streams */
    double *attn = alloc(r, d->n * H);
    for (int s = 0; s < 2 && !r->failed; s++) {
        snprintf(name, sizeof name, "double_blocks.%d.%s_mod.lin", index, side[s]);
        mod[s] = modulation(r, d, name, vec, 6);
        double *xm = alloc(r, rows[s] * H);
        if (!r->failed) {
            norm_modulate(x[s], xm, rows[s], H, mod[s], mod[s] + H);
            snprintf(name, sizeof name, "double_blocks.%d.%s_attn.qkv", index, side[s]);
            double *qkv = linear(r, name, xm, rows[s], H, 3 * H);
            if (qkv)
                memcpy(joint + first[s] * 3 * H, qkv, (size_t)(rows[s] * 3 * H) * sizeof *qkv);
            free(qkv);
        }
        free(xm);
    }
    /* QK norm is per stream (own scales); rope then runs on the joint rows. */
    if (!r->failed) {
        for (int s = 0; s < 2 && !r->failed; s++) {
            for (int qk = 0; qk < 2; qk++) {
                snprintf(name, sizeof name, "double_blocks.%d.%s_attn.norm.%s.scale", index,
                         side[s], qk ? "key_norm" : "query_norm");
                double *scale = weight(r, name, d->head_dim, 0);
                if (!scale)
                    break;
                /* norm + rope on this stream's rows only */
                dims sub = *d;
                sub.n = rows[s];
                sub.cosv = d->cosv + first[s] * (d->head_dim / 2);
                sub.sinv = d->sinv + first[s] * (d->head_dim / 2);
                qk_norm_rope(&sub, joint + first[s] * 3 * H, 3 * H, qk * H, scale);
                free(scale);
            }
        }
    }
    if (!r->failed)
        attention(r, d, joint, 3 * H, attn);
    for (int s = 0; s < 2 && !r->failed; s++) {
        const double *shift2 = mod[s] + 3 * H, *scale2 = mod[s] + 4 * H;
        const double *gate1 = mod[s] + 2 * H, *gate2 = mod[s] + 5 * H;
        snprintf(name, sizeof name, "double_blocks.%d.%s_attn.proj", index, side[s]);
        double *p = linear(r, name, attn + first[s] * H, rows[s], H, H);
        if (!p)
            break;
        for (int64_t i = 0; i < rows[s]; i++)
            for (int64_t k = 0; k < H; k++)
                x[s][i * H + k] += gate1[k] * p[i * H + k];
        free(p);
        double *xm = alloc(r, rows[s] * H);
        if (!xm)
            break;
        norm_modulate(x[s], xm, rows[s], H, shift2, scale2);
        snprintf(name, sizeof name, "double_blocks.%d.%s_mlp.0", index, side[s]);
        double *h = linear(r, name, xm, rows[s], H, d->mlp);
        free(xm);
        if (!h)
            break;
        for (int64_t i = 0; i < rows[s] * d->mlp; i++)
            h[i] = gelu_tanh(h[i]);
        snprintf(name, sizeof name, "double_blocks.%d.%s_mlp.2", index, side[s]);
        double *o = linear(r, name, h, rows[s], d->mlp, H);
        free(h);
        if (!o)
            break;
        for (int64_t i = 0; i < rows[s]; i++)
            for (int64_t k = 0; k < H; k++)
                x[s][i * H + k] += gate2[k] * o[i * H + k];
        free(o);
    }
    free(mod[0]);
    free(mod[1]);
    free(joint);
    free(attn);
}

/* One SingleStreamBlock on x[n][hidden] (text rows then image rows). */
static void single_block(ref *r, const dims *d, int index, double *x, const double *vec)
{
    const int64_t H = d->hidden, W1 = 3 * H + d->mlp;
    char name[256];
    snprintf(name, sizeof name, "single_blocks.%d.modulation.lin", index);
    double *mod = modulation(r, d, name, vec, 3);
    double *xm = alloc(r, d->n * H);
    double *h1 = NULL, *cat = NULL, *o = NULL;
    if (!r->failed) {
        norm_modulate(x, xm, d->n, H, mod, mod + H);
        snprintf(name, sizeof name, "single_blocks.%d.linear1", index);
        h1 = linear(r, name, xm, d->n, H, W1);
    }
    for (int qk = 0; qk < 2 && !r->failed; qk++) {
        snprintf(name, sizeof name, "single_blocks.%d.norm.%s.scale", index,
                 qk ? "key_norm" : "query_norm");
        double *scale = weight(r, name, d->head_dim, 0);
        if (scale)
            qk_norm_rope(d, h1, W1, qk * H, scale);
        free(scale);
    }
    cat = alloc(r, d->n * (H + d->mlp)); /* [attn, gelu(mlp)] */
    double *attn = alloc(r, d->n * H);
    if (!r->failed) {
        attention(r, d, h1, W1, attn);
        for (int64_t i = 0; i < d->n; i++) {
            for (int64_t k = 0; k < H; k++)
                cat[i * (H + d->mlp) + k] = attn[i * H + k];
            for (int64_t k = 0; k < d->mlp; k++)
                cat[i * (H + d->mlp) + H + k] = gelu_tanh(h1[i * W1 + 3 * H + k]);
        }
        snprintf(name, sizeof name, "single_blocks.%d.linear2", index);
        o = linear(r, name, cat, d->n, H + d->mlp, H);
    }
    if (o) {
        const double *gate = mod + 2 * H;
        for (int64_t i = 0; i < d->n; i++)
            for (int64_t k = 0; k < H; k++)
                x[i * H + k] += gate[k] * o[i * H + k];
    }
    free(mod);
    free(xm);
    free(h1);
    free(cat);
    free(attn);
    free(o);
}

/* ---- the forward pass ------------------------------------------------- */

int flux_reference_forward(const mgpu_model *model, int component, int heads,
                           const int axes_dim[3], double theta, const mgpu_flux_ref_inputs *in,
                           float *out, char *err, size_t err_size)
{
    ref rr = {.model = model, .component = component, .err = err, .err_size = err_size};
    ref *r = &rr;
    if (err && err_size)
        err[0] = '\0';

    /* Sizes from the shapes. */
    const int64_t hidden = dim_of(r, "img_in.weight", 0);
    const int64_t in_ch = dim_of(r, "img_in.weight", 1);
    const int64_t out_ch = dim_of(r, "final_layer.linear.weight", 0);
    const int64_t ctx_dim = dim_of(r, "txt_in.weight", 1);
    const int64_t vec_dim = dim_of(r, "vector_in.in_layer.weight", 1);
    const int64_t t_dim = dim_of(r, "time_in.in_layer.weight", 1);
    const int64_t mlp = dim_of(r, "double_blocks.0.img_mlp.0.weight", 0);
    const int guidance = find(r, "guidance_in.in_layer.weight") != NULL;
    const int n_double = count_blocks(r, "double_blocks");
    const int n_single = count_blocks(r, "single_blocks");
    if (hidden <= 0 || in_ch <= 0 || out_ch <= 0 || ctx_dim <= 0 || vec_dim <= 0 || t_dim <= 0 ||
        mlp <= 0) {
        fail(r, "reference: not a FLUX model (a core tensor is missing)");
        return -1;
    }
    if (heads <= 0 || hidden % heads != 0 || (hidden / heads) % 2 != 0 ||
        axes_dim[0] + axes_dim[1] + axes_dim[2] != hidden / heads || in_ch != 64 ||
        out_ch % 4 != 0 || in->height % 2 != 0 || in->width % 2 != 0 || in->batch <= 0 ||
        in->height <= 0 || in->width <= 0 || in->text_len < 0) {
        fail(r, "reference: unsupported configuration or input size");
        return -1;
    }
    if (guidance && !in->guidance) {
        fail(r, "reference: the model has guidance_in but no guidance was given");
        return -1;
    }
    const int64_t H = hidden, C = 16, Hh = in->height / 2, Wh = in->width / 2;
    const int64_t oc = out_ch / 4;
    dims d = {.hidden = H,
              .heads = heads,
              .head_dim = H / heads,
              .mlp = mlp,
              .n_txt = in->text_len,
              .n_img = Hh * Wh};
    d.n = d.n_txt + d.n_img;

    /* Rope table: per token the angle of each of head_dim / 2 pairs; the
     * pairs run through axis 0's, then axis 1's, then axis 2's frequencies. */
    const int64_t pairs = d.head_dim / 2;
    double *cosv = alloc(r, d.n * pairs), *sinv = alloc(r, d.n * pairs);
    if (!r->failed) {
        for (int64_t i = 0; i < d.n; i++) {
            double pos[3] = {0, 0, 0}; /* text tokens sit at (0, 0, 0) */
            if (i >= d.n_txt) {
                pos[1] = (double)((i - d.n_txt) / Wh);
                pos[2] = (double)((i - d.n_txt) % Wh);
            }
            int64_t p = 0;
            for (int a = 0; a < 3; a++)
                for (int64_t j = 0; j < axes_dim[a] / 2; j++, p++) {
                    double omega = 1.0 / pow(theta, (double)(2 * j) / (double)axes_dim[a]);
                    cosv[i * pairs + p] = cos(pos[a] * omega);
                    sinv[i * pairs + p] = sin(pos[a] * omega);
                }
        }
    }
    d.cosv = cosv;
    d.sinv = sinv;

    double *patches = alloc(r, d.n_img * in_ch);
    double *ctx = alloc(r, d.n_txt * ctx_dim);
    double *vec = alloc(r, H);
    double *temb = alloc(r, t_dim);
    double *yv = alloc(r, vec_dim);
    double *joint = alloc(r, d.n * H);
    for (int64_t b = 0; b < in->batch && !r->failed; b++) {
        /* patchify: token (h w), feature (c ph pw) */
        const float *xb = in->x + b * C * in->height * in->width;
        for (int64_t i = 0; i < Hh; i++)
            for (int64_t j = 0; j < Wh; j++)
                for (int64_t c = 0; c < C; c++)
                    for (int64_t ph = 0; ph < 2; ph++)
                        for (int64_t pw = 0; pw < 2; pw++)
                            patches[(i * Wh + j) * in_ch + c * 4 + ph * 2 + pw] =
                                xb[(c * in->height + 2 * i + ph) * in->width + 2 * j + pw];
        double *img = linear(r, "img_in", patches, d.n_img, in_ch, H);
        for (int64_t k = 0; k < d.n_txt * ctx_dim; k++)
            ctx[k] = in->context[b * d.n_txt * ctx_dim + k];
        double *txt = linear(r, "txt_in", ctx, d.n_txt, ctx_dim, H);

        /* vec = time_in(temb(t)) + guidance_in(temb(g)) + vector_in(y) */
        if (!r->failed) {
            memset(vec, 0, (size_t)H * sizeof *vec);
            timestep_embedding(in->timestep[b], temb, t_dim);
            mlp_embedder_add(r, "time_in", temb, t_dim, H, vec);
            if (guidance) {
                timestep_embedding(in->guidance[b], temb, t_dim);
                mlp_embedder_add(r, "guidance_in", temb, t_dim, H, vec);
            }
            for (int64_t k = 0; k < vec_dim; k++)
                yv[k] = in->y[b * vec_dim + k];
            mlp_embedder_add(r, "vector_in", yv, vec_dim, H, vec);
        }

        for (int i = 0; i < n_double && !r->failed; i++)
            double_block(r, &d, i, txt, img, vec);

        /* single blocks on the joint sequence [txt; img] */
        if (!r->failed) {
            memcpy(joint, txt, (size_t)(d.n_txt * H) * sizeof *joint);
            memcpy(joint + d.n_txt * H, img, (size_t)(d.n_img * H) * sizeof *joint);
        }
        for (int i = 0; i < n_single && !r->failed; i++)
            single_block(r, &d, i, joint, vec);

        /* final layer on the image rows */
        double *fm = modulation(r, &d, "final_layer.adaLN_modulation.1", vec, 2);
        double *xm = alloc(r, d.n_img * H);
        double *o = NULL;
        if (!r->failed) {
            norm_modulate(joint + d.n_txt * H, xm, d.n_img, H, fm, fm + H);
            o = linear(r, "final_layer.linear", xm, d.n_img, H, out_ch);
        }
        if (o) {
            /* unpatchify: "b (h w) (c ph pw) -> b c (h ph) (w pw)" */
            float *ob = out + b * oc * in->height * in->width;
            for (int64_t i = 0; i < Hh; i++)
                for (int64_t j = 0; j < Wh; j++)
                    for (int64_t c = 0; c < oc; c++)
                        for (int64_t ph = 0; ph < 2; ph++)
                            for (int64_t pw = 0; pw < 2; pw++)
                                ob[(c * in->height + 2 * i + ph) * in->width + 2 * j + pw] =
                                    (float)o[(i * Wh + j) * out_ch + c * 4 + ph * 2 + pw];
        }
        free(fm);
        free(xm);
        free(o);
        free(img);
        free(txt);
    }
    free(cosv);
    free(sinv);
    free(patches);
    free(ctx);
    free(vec);
    free(temb);
    free(yv);
    free(joint);
    return r->failed ? -1 : 0;
}
