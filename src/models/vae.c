/* The FLUX autoencoder; see vae.h. The structure follows the published
 * model (BFL's flux/modules/autoencoder.py): tensor names are theirs, every
 * computation is written here against the backend's ops.
 *
 * Activations live in three device buffers of the largest activation the
 * pass meets, rotated so that a ResnetBlock keeps its input for the skip
 * connection while the other two hold the normalised input and the inner
 * convolution; the mid attention adds q, k and v in token-major layout.
 * That fixed set is all a pass allocates, which is what makes the memory
 * of a (tiled) decode computable in advance. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "models/vae.h"
#include "models/loader.h"

enum { MAX_RES = 8, MAX_LATENT = 1 << 16 };
static const float FLUX_SCALE = 0.3611f, FLUX_SHIFT = 0.1159f, NORM_EPS = 1e-6f;
static const int64_t NORM_GROUPS = 32;

typedef struct conv_w {
    const mgpu_model_tensor *w, *b;
    int64_t out, in;
    int k;
} conv_w;

typedef struct norm_w {
    const mgpu_model_tensor *w, *b;
} norm_w;

typedef struct resnet {
    norm_w norm1, norm2;
    conv_w conv1, conv2, nin;
    bool has_nin;
    int64_t in, out;
} resnet;

typedef struct attn_w {
    norm_w norm;
    conv_w q, k, v, proj;
} attn_w;

typedef struct level {
    int block; /* model block "encoder.down.L" / "decoder.up.L", -1 if none */
    int nres;
    resnet res[MAX_RES];
    bool has_sample;
    conv_w sample; /* downsample.conv / upsample.conv */
} level;

typedef struct side {
    conv_w conv_in, conv_out;
    level lv[MGPU_VAE_MAX_LEVELS];
    resnet mid1, mid2;
    attn_w attn;
    norm_w norm_out;
} side;

struct mgpu_vae {
    mgpu_vae_config cfg;
    side enc, dec;
};

/* ---- loading ------------------------------------------------------------ */

typedef mgpu_loader loader;

/* A Conv2d: NAME.weight [out, in, k, k] and NAME.bias [out]. */
static mgpu_status need_conv(const loader *l, const char *name, int64_t out, int64_t in, int k,
                             conv_w *c)
{
    *c = (conv_w){NULL, NULL, out, in, k};
    return mgpu_loader_need_with_bias(l, name, 4, (const int64_t[]){out, in, k, k}, &c->w, &c->b);
}

/* A GroupNorm(32) over `c` channels: NAME.weight and NAME.bias [c]. */
static mgpu_status need_norm(const loader *l, const char *name, int64_t c, norm_w *n)
{
    char buf[160];
    if (c % NORM_GROUPS != 0)
        return mgpu_error_set(l->err, MGPU_ERR_FORMAT,
                              "VAE: '%s' normalises %lld channels, not a multiple of %lld groups",
                              name, (long long)c, (long long)NORM_GROUPS);
    snprintf(buf, sizeof buf, "%.150s.weight", name);
    mgpu_status s = mgpu_loader_need(l, buf, 1, (const int64_t[]){c}, &n->w);
    snprintf(buf, sizeof buf, "%.150s.bias", name);
    return s == MGPU_OK ? mgpu_loader_need(l, buf, 1, (const int64_t[]){c}, &n->b) : s;
}

static mgpu_status need_resnet(const loader *l, const char *p, int64_t in, int64_t out, resnet *r)
{
    char n[160];
    r->in = in;
    r->out = out;
    r->has_nin = in != out;
    snprintf(n, sizeof n, "%s.norm1", p);
    mgpu_status s = need_norm(l, n, in, &r->norm1);
    snprintf(n, sizeof n, "%s.conv1", p);
    if (s == MGPU_OK)
        s = need_conv(l, n, out, in, 3, &r->conv1);
    snprintf(n, sizeof n, "%s.norm2", p);
    if (s == MGPU_OK)
        s = need_norm(l, n, out, &r->norm2);
    snprintf(n, sizeof n, "%s.conv2", p);
    if (s == MGPU_OK)
        s = need_conv(l, n, out, out, 3, &r->conv2);
    snprintf(n, sizeof n, "%s.nin_shortcut", p);
    if (s == MGPU_OK && r->has_nin)
        s = need_conv(l, n, out, in, 1, &r->nin);
    return s;
}

static mgpu_status need_mid(const loader *l, const char *sd, int64_t c, side *d)
{
    char n[160];
    snprintf(n, sizeof n, "%s.mid.block_1", sd);
    mgpu_status s = need_resnet(l, n, c, c, &d->mid1);
    const char *parts[4] = {"q", "k", "v", "proj_out"};
    conv_w *convs[4] = {&d->attn.q, &d->attn.k, &d->attn.v, &d->attn.proj};
    snprintf(n, sizeof n, "%s.mid.attn_1.norm", sd);
    if (s == MGPU_OK)
        s = need_norm(l, n, c, &d->attn.norm);
    for (int i = 0; i < 4 && s == MGPU_OK; i++) {
        snprintf(n, sizeof n, "%s.mid.attn_1.%s", sd, parts[i]);
        s = need_conv(l, n, c, c, 1, convs[i]);
    }
    snprintf(n, sizeof n, "%s.mid.block_2", sd);
    if (s == MGPU_OK)
        s = need_resnet(l, n, c, c, &d->mid2);
    return s;
}

/* How many of PREFIX.0., PREFIX.1., ... have tensors (up to `limit`). */
static int count_numbered(const loader *l, const char *prefix, int limit)
{
    char name[160];
    for (int n = 0;; n++) {
        snprintf(name, sizeof name, "%s.%d.", prefix, n);
        size_t len = strlen(name);
        bool found = false;
        for (size_t i = 0; i < mgpu_model_tensor_count(l->model) && !found; i++) {
            const mgpu_model_tensor *t = mgpu_model_tensor_at(l->model, i);
            found = (int)t->component == l->component && strncmp(t->name, name, len) == 0;
        }
        if (!found || n == limit)
            return n;
    }
}

static mgpu_status load_decoder(const loader *l, mgpu_vae_config *c, side *d)
{
    char p[96], n[160];
    const int last = c->levels - 1;
    const int64_t top = c->channels[last];
    mgpu_status s = need_conv(l, "decoder.conv_in", top, c->z_channels, 3, &d->conv_in);
    if (s == MGPU_OK)
        s = need_mid(l, "decoder", top, d);
    int64_t cur = top;
    for (int lv = last; lv >= 0 && s == MGPU_OK; lv--) {
        level *L = &d->lv[lv];
        snprintf(p, sizeof p, "decoder.up.%d", lv);
        L->block = mgpu_loader_block(l, p);
        snprintf(n, sizeof n, "%s.block", p);
        L->nres = count_numbered(l, n, MAX_RES + 1);
        if (L->nres != c->num_res_blocks + 1)
            return mgpu_error_set(l->err, MGPU_ERR_FORMAT,
                                  "VAE: '%s' has %d res blocks where decoder.up.0 has %d", p,
                                  L->nres, c->num_res_blocks + 1);
        for (int r = 0; r < L->nres && s == MGPU_OK; r++) {
            snprintf(n, sizeof n, "%s.block.%d", p, r);
            s = need_resnet(l, n, cur, c->channels[lv], &L->res[r]);
            cur = c->channels[lv];
        }
        L->has_sample = lv != 0;
        snprintf(n, sizeof n, "%s.upsample.conv", p);
        if (s == MGPU_OK && L->has_sample)
            s = need_conv(l, n, cur, cur, 3, &L->sample);
    }
    if (s == MGPU_OK)
        s = need_norm(l, "decoder.norm_out", cur, &d->norm_out);
    if (s == MGPU_OK)
        s = need_conv(l, "decoder.conv_out", c->image_channels, cur, 3, &d->conv_out);
    return s;
}

static mgpu_status load_encoder(const loader *l, mgpu_vae_config *c, side *e)
{
    char p[96], n[160];
    const int last = c->levels - 1;
    int levels = count_numbered(l, "encoder.down", MGPU_VAE_MAX_LEVELS + 1);
    if (levels != c->levels)
        return mgpu_error_set(l->err, MGPU_ERR_FORMAT,
                              "VAE: the encoder has %d levels (encoder.down.N) but the decoder %d",
                              levels, c->levels);
    mgpu_status s =
        need_conv(l, "encoder.conv_in", c->channels[0], c->image_channels, 3, &e->conv_in);
    int64_t cur = c->channels[0];
    for (int lv = 0; lv <= last && s == MGPU_OK; lv++) {
        level *L = &e->lv[lv];
        snprintf(p, sizeof p, "encoder.down.%d", lv);
        L->block = mgpu_loader_block(l, p);
        snprintf(n, sizeof n, "%s.block", p);
        L->nres = count_numbered(l, n, MAX_RES + 1);
        if (L->nres != c->num_res_blocks)
            return mgpu_error_set(l->err, MGPU_ERR_FORMAT,
                                  "VAE: '%s' has %d res blocks, the decoder's levels %d + 1", p,
                                  L->nres, c->num_res_blocks);
        for (int r = 0; r < L->nres && s == MGPU_OK; r++) {
            snprintf(n, sizeof n, "%s.block.%d", p, r);
            s = need_resnet(l, n, cur, c->channels[lv], &L->res[r]);
            cur = c->channels[lv];
        }
        L->has_sample = lv != last;
        snprintf(n, sizeof n, "%s.downsample.conv", p);
        if (s == MGPU_OK && L->has_sample)
            s = need_conv(l, n, cur, cur, 3, &L->sample);
    }
    if (s == MGPU_OK)
        s = need_mid(l, "encoder", cur, e);
    if (s == MGPU_OK)
        s = need_norm(l, "encoder.norm_out", cur, &e->norm_out);
    if (s == MGPU_OK) /* mean and log-variance */
        s = need_conv(l, "encoder.conv_out", 2 * c->z_channels, cur, 3, &e->conv_out);
    return s;
}

/* The first dimension of a tensor that must exist, for sizing. */
static mgpu_status size_of(const loader *l, const char *name, int ndim, int dim, int64_t *out)
{
    const mgpu_model_tensor *t = mgpu_loader_find(l, name);
    if (!t)
        return mgpu_error_set(l->err, MGPU_ERR_FORMAT, "VAE: missing tensor '%s'", name);
    if (t->info.ndim != ndim)
        return mgpu_error_set(l->err, MGPU_ERR_FORMAT, "VAE: tensor '%s' should have %d dimensions",
                              name, ndim);
    *out = (int64_t)t->info.shape[dim];
    return MGPU_OK;
}

mgpu_status mgpu_vae_load(const mgpu_model *model, int component, mgpu_vae **out, mgpu_error *err)
{
    *out = NULL;
    loader l = {model, component, "VAE", err};
    if (component < 0 || (size_t)component >= mgpu_model_component_count(model))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "VAE: no component %d in the model",
                              component);
    if (!mgpu_loader_find(&l, "decoder.conv_in.weight"))
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "VAE: missing tensor 'decoder.conv_in.weight' (is this an "
                              "autoencoder?)");
    if (mgpu_loader_find(&l, "post_quant_conv.weight"))
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "VAE: 'post_quant_conv' marks a Stable Diffusion autoencoder; only "
                              "FLUX's is supported");
    mgpu_vae *v = calloc(1, sizeof *v);
    if (!v)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    mgpu_vae_config *c = &v->cfg;
    c->groups = NORM_GROUPS;
    c->eps = NORM_EPS;
    c->scale_factor = FLUX_SCALE;
    c->shift_factor = FLUX_SHIFT;
    c->levels = count_numbered(&l, "decoder.up", MGPU_VAE_MAX_LEVELS + 1);
    mgpu_status s = MGPU_OK;
    if (c->levels < 1 || c->levels > MGPU_VAE_MAX_LEVELS)
        s = mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                           "VAE: %d decoder levels (decoder.up.N); 1 to %d are supported",
                           c->levels, MGPU_VAE_MAX_LEVELS);
    char n[160];
    for (int lv = 0; lv < c->levels && s == MGPU_OK; lv++) {
        snprintf(n, sizeof n, "decoder.up.%d.block.0.conv1.weight", lv);
        s = size_of(&l, n, 4, 0, &c->channels[lv]);
    }
    int64_t top = 0;
    if (s == MGPU_OK)
        s = size_of(&l, "decoder.conv_in.weight", 4, 1, &c->z_channels);
    if (s == MGPU_OK)
        s = size_of(&l, "decoder.conv_in.weight", 4, 0, &top);
    if (s == MGPU_OK)
        s = size_of(&l, "decoder.conv_out.weight", 4, 0, &c->image_channels);
    if (s == MGPU_OK) {
        int blocks = count_numbered(&l, "decoder.up.0.block", MAX_RES + 1);
        if (blocks < 1 || blocks > MAX_RES)
            s = mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                               "VAE: %d res blocks per decoder level; 1 to %d are supported",
                               blocks, MAX_RES);
        c->num_res_blocks = blocks - 1;
        c->downscale = (int64_t)1 << (c->levels - 1);
    }
    if (s == MGPU_OK)
        s = load_decoder(&l, c, &v->dec);
    c->has_encoder = mgpu_loader_find(&l, "encoder.conv_in.weight") != NULL;
    if (s == MGPU_OK && c->has_encoder)
        s = load_encoder(&l, c, &v->enc);
    if (s != MGPU_OK) {
        mgpu_vae_free(v);
        return s;
    }
    *out = v;
    return MGPU_OK;
}

void mgpu_vae_free(mgpu_vae *vae)
{
    free(vae);
}

const mgpu_vae_config *mgpu_vae_get_config(const mgpu_vae *vae)
{
    return &vae->cfg;
}

/* ---- memory ------------------------------------------------------------- */

/* The floats of the three rotating buffers (each the largest activation of
 * the pass) and of the attention's q, k, v. */
typedef struct sizes {
    int64_t buffer, attn;
} sizes;

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* Walks the decoder's shapes for an h x w latent. */
static sizes decoder_sizes(const mgpu_vae_config *c, int64_t h, int64_t w)
{
    int64_t s = h * w, top = c->channels[c->levels - 1];
    int64_t m = max64(c->z_channels, top) * s, cur = top;
    for (int lv = c->levels - 1; lv >= 0; lv--) {
        m = max64(m, max64(cur, c->channels[lv]) * s);
        cur = c->channels[lv];
        if (lv != 0) {
            s *= 4; /* the upsampled input of upsample.conv */
            m = max64(m, cur * s);
        }
    }
    m = max64(m, c->image_channels * s);
    return (sizes){m, 3 * top * h * w};
}

/* Walks the encoder's shapes for an H x W image. */
static sizes encoder_sizes(const mgpu_vae_config *c, int64_t H, int64_t W)
{
    int64_t s = H * W, cur = c->channels[0];
    int64_t m = max64(c->image_channels, cur) * s;
    for (int lv = 0; lv < c->levels; lv++) {
        m = max64(m, max64(cur, c->channels[lv]) * s);
        cur = c->channels[lv];
        if (lv != c->levels - 1)
            s /= 4;
    }
    m = max64(m, 2 * c->z_channels * s);
    return (sizes){m, 3 * cur * s};
}

static bool latent_ok(int64_t h, int64_t w)
{
    return h > 0 && w > 0 && h <= MAX_LATENT && w <= MAX_LATENT;
}

/* The tile extent along an axis of n latent pixels. */
static int64_t tile_extent(const mgpu_vae_tiling *t, int64_t n)
{
    return t && t->tile > 0 && t->tile < n ? t->tile : n;
}

static bool tiling_ok(const mgpu_vae_tiling *t)
{
    return !t || t->tile == 0 || (t->tile > 0 && t->overlap >= 0 && t->overlap < t->tile);
}

uint64_t mgpu_vae_decode_bytes(const mgpu_vae *vae, int64_t h, int64_t w,
                               const mgpu_vae_tiling *tiling)
{
    if (!latent_ok(h, w) || !tiling_ok(tiling))
        return 0;
    sizes z = decoder_sizes(&vae->cfg, tile_extent(tiling, h), tile_extent(tiling, w));
    return (uint64_t)(3 * z.buffer + z.attn) * sizeof(float);
}

uint64_t mgpu_vae_encode_bytes(const mgpu_vae *vae, int64_t H, int64_t W)
{
    int64_t f = vae->cfg.downscale;
    if (!latent_ok(H / f, W / f) || H % f || W % f)
        return 0;
    sizes z = encoder_sizes(&vae->cfg, H, W);
    return (uint64_t)(3 * z.buffer + z.attn) * sizeof(float);
}

/* ---- the passes --------------------------------------------------------- */

typedef struct run {
    const mgpu_vae *vae;
    mgpu_backend *be;
    const mgpu_tensor_source *src;
    mgpu_error *err;
    mgpu_status status;
    float *buf[3];
    float *q, *k, *v; /* [tokens][channels] for the mid attention */
} run;

static mgpu_wref wref(run *r, const mgpu_model_tensor *t)
{
    mgpu_wref w = {NULL, t->info.dtype};
    if (r->status != MGPU_OK)
        return w;
    w.data = r->src->data(r->src->context, t, r->err);
    if (!w.data)
        r->status = r->err && r->err->status ? r->err->status : MGPU_ERR_IO;
    return w;
}

static void enter(run *r, int block)
{
    if (r->status == MGPU_OK && block >= 0)
        r->status = r->src->enter_block(r->src->context, block, r->err);
}

static void leave(run *r, int block)
{
    if (block >= 0)
        r->src->leave_block(r->src->context, block);
}

enum { PAD_SAME, PAD_DOWN };

static void conv(run *r, const conv_w *c, const float *x, int64_t h, int64_t w, int pad, float *y)
{
    mgpu_wref wt = wref(r, c->w), b = wref(r, c->b);
    if (r->status != MGPU_OK)
        return;
    int p = c->k / 2;
    /* Downsample: no padding but one zero row and column after the image,
     * then a stride-2 3x3 conv (torch's F.pad(x, (0, 1, 0, 1))). */
    mgpu_conv2d_shape s = pad == PAD_DOWN
                              ? (mgpu_conv2d_shape){c->in, h, w, c->out, c->k, c->k, 2, 0, 1, 0, 1}
                              : (mgpu_conv2d_shape){c->in, h, w, c->out, c->k, c->k, 1, p, p, p, p};
    r->be->ops->conv2d(r->be, x, &s, wt, b, y);
}

static void norm(run *r, const norm_w *n, const float *x, float *y, int64_t c, int64_t spatial,
                 bool silu)
{
    mgpu_wref wt = wref(r, n->w), b = wref(r, n->b);
    if (r->status != MGPU_OK)
        return;
    r->be->ops->group_norm(r->be, x, y, c, spatial, r->vae->cfg.groups, wt, b, r->vae->cfg.eps);
    if (silu)
        r->be->ops->unary(r->be, MGPU_UNARY_SILU, y, c * spatial);
}

/* x + conv2(silu(norm2(conv1(silu(norm1(x)))))), x through nin_shortcut
 * when the channel count changes. The result moves to the next buffer. */
static void resnet_block(run *r, const resnet *rb, int *xi, int64_t h, int64_t w)
{
    int64_t s = h * w;
    float *x = r->buf[*xi], *a = r->buf[(*xi + 1) % 3], *b = r->buf[(*xi + 2) % 3];
    norm(r, &rb->norm1, x, a, rb->in, s, true);
    conv(r, &rb->conv1, a, h, w, PAD_SAME, b);
    norm(r, &rb->norm2, b, b, rb->out, s, true);
    conv(r, &rb->conv2, b, h, w, PAD_SAME, a);
    if (rb->has_nin)
        conv(r, &rb->nin, x, h, w, PAD_SAME, b);
    if (r->status == MGPU_OK)
        r->be->ops->add(r->be, a, a, rb->has_nin ? b : x, rb->out * s);
    *xi = (*xi + 1) % 3;
}

/* x + proj_out(attention over the h*w tokens of norm(x), one head of all
 * channels, scale 1/sqrt(c)), in place. */
static void attn_block(run *r, const attn_w *at, int xi, int64_t c, int64_t h, int64_t w)
{
    int64_t s = h * w;
    float *x = r->buf[xi], *a = r->buf[(xi + 1) % 3], *b = r->buf[(xi + 2) % 3];
    const mgpu_backend_ops *o = r->be->ops;
    norm(r, &at->norm, x, a, c, s, false);
    const conv_w *qkv[3] = {&at->q, &at->k, &at->v};
    float *tokens[3] = {r->q, r->k, r->v};
    for (int i = 0; i < 3; i++) {
        conv(r, qkv[i], a, h, w, PAD_SAME, b);
        if (r->status == MGPU_OK)
            o->transpose(r->be, b, c, s, tokens[i]); /* [c][s] -> [s][c] */
    }
    if (r->status != MGPU_OK)
        return;
    o->attention(r->be, r->q, r->k, r->v, a, 1, s, s, c, (float)(1.0 / sqrt((double)c)), NULL,
                 false);
    o->transpose(r->be, a, s, c, b);
    conv(r, &at->proj, b, h, w, PAD_SAME, a);
    if (r->status == MGPU_OK)
        o->add(r->be, x, x, a, c * s);
}

static void mid_blocks(run *r, const side *d, int *xi, int64_t c, int64_t h, int64_t w)
{
    resnet_block(r, &d->mid1, xi, h, w);
    attn_block(r, &d->attn, *xi, c, h, w);
    resnet_block(r, &d->mid2, xi, h, w);
}

/* norm_out, silu, conv_out from buffer xi into the next buffer. */
static int finish(run *r, const side *d, int xi, int64_t c, int64_t h, int64_t w)
{
    float *a = r->buf[(xi + 1) % 3], *b = r->buf[(xi + 2) % 3];
    norm(r, &d->norm_out, r->buf[xi], a, c, h * w, true);
    conv(r, &d->conv_out, a, h, w, PAD_SAME, b);
    return (xi + 2) % 3;
}

/* The decoder over an h x w latent already in buf[0]; returns the buffer
 * holding the image. */
static int decode_pass(run *r, int64_t h, int64_t w)
{
    const mgpu_vae_config *c = &r->vae->cfg;
    const side *d = &r->vae->dec;
    int xi = 1;
    conv(r, &d->conv_in, r->buf[0], h, w, PAD_SAME, r->buf[1]);
    mid_blocks(r, d, &xi, c->channels[c->levels - 1], h, w);
    for (int lv = c->levels - 1; lv >= 0 && r->status == MGPU_OK; lv--) {
        const level *L = &d->lv[lv];
        enter(r, L->block);
        for (int i = 0; i < L->nres; i++)
            resnet_block(r, &L->res[i], &xi, h, w);
        if (L->has_sample && r->status == MGPU_OK) {
            float *up = r->buf[(xi + 1) % 3];
            r->be->ops->upsample2x(r->be, r->buf[xi], c->channels[lv], h, w, up);
            h *= 2;
            w *= 2;
            conv(r, &L->sample, up, h, w, PAD_SAME, r->buf[(xi + 2) % 3]);
            xi = (xi + 2) % 3;
        }
        leave(r, L->block);
    }
    return finish(r, d, xi, c->channels[0], h, w);
}

/* The encoder over an H x W image already in buf[0]; returns the buffer
 * holding [2 z][H/f][W/f] (mean first). */
static int encode_pass(run *r, int64_t h, int64_t w)
{
    const mgpu_vae_config *c = &r->vae->cfg;
    const side *e = &r->vae->enc;
    int xi = 1;
    conv(r, &e->conv_in, r->buf[0], h, w, PAD_SAME, r->buf[1]);
    for (int lv = 0; lv < c->levels && r->status == MGPU_OK; lv++) {
        const level *L = &e->lv[lv];
        enter(r, L->block);
        for (int i = 0; i < L->nres; i++)
            resnet_block(r, &L->res[i], &xi, h, w);
        if (L->has_sample) {
            conv(r, &L->sample, r->buf[xi], h, w, PAD_DOWN, r->buf[(xi + 1) % 3]);
            xi = (xi + 1) % 3;
            h /= 2;
            w /= 2;
        }
        leave(r, L->block);
    }
    int64_t top = c->channels[c->levels - 1];
    mid_blocks(r, e, &xi, top, h, w);
    return finish(r, e, xi, top, h, w);
}

static mgpu_status alloc_run(run *r, sizes z)
{
    for (int i = 0; i < 3 && r->status == MGPU_OK; i++)
        r->status = mgpu_backend_alloc_f32(r->be, z.buffer, &r->buf[i], r->err);
    int64_t third = z.attn / 3;
    float **qkv[3] = {&r->q, &r->k, &r->v};
    for (int i = 0; i < 3 && r->status == MGPU_OK; i++)
        r->status = mgpu_backend_alloc_f32(r->be, third, qkv[i], r->err);
    return r->status;
}

static void free_run(run *r)
{
    float *all[6] = {r->buf[0], r->buf[1], r->buf[2], r->q, r->k, r->v};
    for (int i = 0; i < 6; i++)
        if (all[i])
            r->be->ops->free(r->be, all[i]);
}

/* ---- tiling ------------------------------------------------------------- */

/* Tile origins along an axis of n latent pixels: every `tile - overlap`,
 * the last one flush with the end. Returns the count (at most n). */
static int64_t tile_origins(int64_t n, int64_t tile, int64_t overlap, int64_t *origin)
{
    int64_t count = 0, stride = tile - overlap;
    for (int64_t o = 0;; o += stride) {
        if (o + tile >= n) {
            origin[count++] = n - tile;
            return count;
        }
        origin[count++] = o;
    }
}

/* Blend weights of each tile along one axis, in image pixels: 1 inside,
 * a linear ramp across the overlap with each neighbour (rising over the
 * previous tile's tail, falling over the next tile's head), never 0. Also
 * their sum per image pixel, the normaliser. */
static void axis_weights(const int64_t *origin, int64_t count, int64_t tile, int64_t f,
                         double *weight /* [count][f * tile] */, double *sum /* [f * n] */,
                         int64_t n)
{
    int64_t t = f * tile;
    for (int64_t i = 0; i < f * n; i++)
        sum[i] = 0.0;
    for (int64_t i = 0; i < count; i++) {
        int64_t a = f * origin[i];
        int64_t head = i > 0 ? f * (origin[i - 1] + tile) - a : 0;
        int64_t tail = i + 1 < count ? a + t - f * origin[i + 1] : 0;
        for (int64_t p = 0; p < t; p++) {
            double wgt = 1.0;
            if (p < head)
                wgt = fmin(wgt, ((double)p + 0.5) / (double)head);
            if (p >= t - tail)
                wgt = fmin(wgt, ((double)(t - p) - 0.5) / (double)tail);
            weight[i * t + p] = wgt;
            sum[a + p] += wgt;
        }
    }
}

/* ---- decode and encode -------------------------------------------------- */

mgpu_status mgpu_vae_decode(const mgpu_vae *vae, mgpu_backend *be, const mgpu_tensor_source *src,
                            const float *z, int64_t h, int64_t w, const mgpu_vae_tiling *tiling,
                            float *image, mgpu_error *err)
{
    const mgpu_vae_config *c = &vae->cfg;
    if (!latent_ok(h, w))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "VAE decode: latent size %lldx%lld outside 1..%d",
                              (long long)h, (long long)w, MAX_LATENT);
    if (!tiling_ok(tiling))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "VAE decode: tile %lld with overlap %lld (need 0 <= overlap < tile)",
                              (long long)tiling->tile, (long long)tiling->overlap);
    const int64_t th = tile_extent(tiling, h), tw = tile_extent(tiling, w), f = c->downscale;
    const int64_t ov = tiling ? tiling->overlap : 0, nz = c->z_channels, ni = c->image_channels;
    const bool tiled = th != h || tw != w;
    const int64_t H = f * h, W = f * w, TH = f * th, TW = f * tw;
    run r = {vae, be, src, err, MGPU_OK, {NULL}, NULL, NULL, NULL};
    int64_t *origin_y = malloc((size_t)h * sizeof *origin_y);
    int64_t *origin_x = malloc((size_t)w * sizeof *origin_x);
    float *zt = malloc((size_t)(nz * th * tw) * sizeof *zt);
    float *out = tiled ? malloc((size_t)(ni * TH * TW) * sizeof *out) : image;
    double *acc = tiled ? calloc((size_t)(ni * H * W), sizeof *acc) : NULL;
    if (!origin_y || !origin_x || !zt || !out || (tiled && !acc))
        r.status = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "VAE decode: out of host memory");
    int64_t ny = 1, nx = 1;
    double *wy = NULL, *wx = NULL, *sy = NULL, *sx = NULL;
    if (r.status == MGPU_OK) {
        ny = tile_origins(h, th, tiled ? ov : 0, origin_y);
        nx = tile_origins(w, tw, tiled ? ov : 0, origin_x);
        wy = malloc((size_t)(ny * TH) * sizeof *wy);
        wx = malloc((size_t)(nx * TW) * sizeof *wx);
        sy = malloc((size_t)H * sizeof *sy);
        sx = malloc((size_t)W * sizeof *sx);
        if (!wy || !wx || !sy || !sx)
            r.status = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "VAE decode: out of host memory");
    }
    if (r.status == MGPU_OK) {
        axis_weights(origin_y, ny, th, f, wy, sy, h);
        axis_weights(origin_x, nx, tw, f, wx, sx, w);
        alloc_run(&r, decoder_sizes(c, th, tw));
    }
    for (int64_t ty = 0; ty < ny && r.status == MGPU_OK; ty++)
        for (int64_t tx = 0; tx < nx && r.status == MGPU_OK; tx++) {
            /* Into the autoencoder's own latent space. */
            for (int64_t ch = 0; ch < nz; ch++)
                for (int64_t y = 0; y < th; y++) {
                    const float *row = z + (ch * h + origin_y[ty] + y) * w + origin_x[tx];
                    for (int64_t x = 0; x < tw; x++)
                        zt[(ch * th + y) * tw + x] = row[x] / c->scale_factor + c->shift_factor;
                }
            r.status = mgpu_backend_upload(be, r.buf[0], zt, (size_t)(nz * th * tw) * sizeof *zt,
                                           err);
            int result = r.status == MGPU_OK ? decode_pass(&r, th, tw) : 0;
            if (r.status == MGPU_OK)
                r.status = mgpu_backend_download(be, out, r.buf[result],
                                                 (size_t)(ni * TH * TW) * sizeof *out, err);
            if (r.status != MGPU_OK || !tiled)
                continue;
            int64_t y0 = f * origin_y[ty], x0 = f * origin_x[tx];
            for (int64_t ch = 0; ch < ni; ch++)
                for (int64_t y = 0; y < TH; y++) {
                    double *dst = acc + (ch * H + y0 + y) * W + x0;
                    const float *s = out + (ch * TH + y) * TW;
                    const double *wxt = wx + tx * TW, wyt = wy[ty * TH + y];
                    for (int64_t x = 0; x < TW; x++)
                        dst[x] += wyt * wxt[x] * s[x];
                }
        }
    if (r.status == MGPU_OK && tiled)
        for (int64_t ch = 0; ch < ni; ch++)
            for (int64_t y = 0; y < H; y++)
                for (int64_t x = 0; x < W; x++)
                    image[(ch * H + y) * W + x] =
                        (float)(acc[(ch * H + y) * W + x] / (sy[y] * sx[x]));
    free_run(&r);
    free(origin_y);
    free(origin_x);
    free(zt);
    if (tiled)
        free(out);
    free(acc);
    free(wy);
    free(wx);
    free(sy);
    free(sx);
    return r.status;
}

mgpu_status mgpu_vae_encode(const mgpu_vae *vae, mgpu_backend *be, const mgpu_tensor_source *src,
                            const float *image, int64_t H, int64_t W, float *z, mgpu_error *err)
{
    const mgpu_vae_config *c = &vae->cfg;
    const int64_t f = c->downscale;
    if (!c->has_encoder)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "VAE encode: the checkpoint has no encoder (encoder.conv_in)");
    if (H <= 0 || W <= 0 || H % f != 0 || W % f != 0 || !latent_ok(H / f, W / f))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "VAE encode: image size %lldx%lld is not a positive multiple of %lld",
                              (long long)H, (long long)W, (long long)f);
    const int64_t h = H / f, w = W / f, nz = c->z_channels;
    run r = {vae, be, src, err, MGPU_OK, {NULL}, NULL, NULL, NULL};
    alloc_run(&r, encoder_sizes(c, H, W));
    if (r.status == MGPU_OK)
        r.status = mgpu_backend_upload(be, r.buf[0], image,
                                       (size_t)(c->image_channels * H * W) * sizeof *image, err);
    int result = r.status == MGPU_OK ? encode_pass(&r, H, W) : 0;
    /* The mean is the first z channels of conv_out's 2 z. */
    if (r.status == MGPU_OK)
        r.status = mgpu_backend_download(be, z, r.buf[result], (size_t)(nz * h * w) * sizeof *z,
                                         err);
    if (r.status == MGPU_OK)
        for (int64_t i = 0; i < nz * h * w; i++)
            z[i] = (z[i] - c->shift_factor) * c->scale_factor;
    free_run(&r);
    return r.status;
}
