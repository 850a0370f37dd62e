/* FLUX.1 DiT forward; see flux.h. The structure follows the published
 * model (BFL's flux repository, ComfyUI's comfy/ldm/flux): tensor names are
 * theirs, every computation is written here against the backend interface,
 * so the same code runs on the CPU and on a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "models/flux.h"
#include "lora/lora_apply.h"
#include "models/loader.h"
#include "ops/cpu_ops.h" /* the rope table, computed on the host */

enum { MAX_BLOCKS = 256 };
static const float NORM_EPS = 1e-6f;

typedef struct linear_w {
    const mgpu_model_tensor *weight, *bias;
} linear_w;

typedef struct double_block {
    int block;
    linear_w img_mod, img_qkv, img_proj, img_mlp0, img_mlp2;
    linear_w txt_mod, txt_qkv, txt_proj, txt_mlp0, txt_mlp2;
    const mgpu_model_tensor *img_q_scale, *img_k_scale, *txt_q_scale, *txt_k_scale;
} double_block;

typedef struct single_block {
    int block;
    linear_w mod, linear1, linear2;
    const mgpu_model_tensor *q_scale, *k_scale;
} single_block;

struct mgpu_flux {
    mgpu_flux_config cfg;
    const mgpu_model *model;
    int component;
    linear_w img_in, txt_in, time_in0, time_in1, vector_in0, vector_in1, guidance_in0,
        guidance_in1, final_mod, final_linear;
    double_block *doubles;
    single_block *singles;
};

/* ---- loading ------------------------------------------------------------ */

typedef mgpu_loader loader;

/* A Linear: NAME.weight [out, in] and NAME.bias [out]. */
static mgpu_status need_linear(const loader *l, const char *name, int64_t out, int64_t in,
                               linear_w *w)
{
    return mgpu_loader_need_with_bias(l, name, 2, (const int64_t[]){out, in}, &w->weight,
                                      &w->bias);
}

static int count_blocks(const loader *l, const char *prefix)
{
    char name[160];
    int n = 0;
    for (;;) {
        snprintf(name, sizeof name, "%s.%d.", prefix, n);
        bool found = false;
        for (size_t i = 0; i < mgpu_model_tensor_count(l->model) && !found; i++) {
            const mgpu_model_tensor *t = mgpu_model_tensor_at(l->model, i);
            found = (int)t->component == l->component && strncmp(t->name, name, strlen(name)) == 0;
        }
        if (!found || n == MAX_BLOCKS)
            return n;
        n++;
    }
}

static mgpu_status load_double(const loader *l, const mgpu_flux_config *c, int i, double_block *b)
{
    char p[96], n[160];
    mgpu_status s = MGPU_OK;
    int64_t h = c->hidden, d = c->head_dim;
    snprintf(p, sizeof p, "double_blocks.%d", i);
    b->block = mgpu_loader_block(l, p);
    const char *sides[2] = {"img", "txt"};
    for (int side = 0; side < 2 && s == MGPU_OK; side++) {
        linear_w *mod = side ? &b->txt_mod : &b->img_mod, *qkv = side ? &b->txt_qkv : &b->img_qkv;
        linear_w *proj = side ? &b->txt_proj : &b->img_proj;
        linear_w *m0 = side ? &b->txt_mlp0 : &b->img_mlp0, *m2 = side ? &b->txt_mlp2 : &b->img_mlp2;
        const mgpu_model_tensor **qs = side ? &b->txt_q_scale : &b->img_q_scale;
        const mgpu_model_tensor **ks = side ? &b->txt_k_scale : &b->img_k_scale;
        snprintf(n, sizeof n, "%s.%s_mod.lin", p, sides[side]);
        s = need_linear(l, n, 6 * h, h, mod);
        snprintf(n, sizeof n, "%s.%s_attn.qkv", p, sides[side]);
        if (s == MGPU_OK)
            s = need_linear(l, n, 3 * h, h, qkv);
        snprintf(n, sizeof n, "%s.%s_attn.proj", p, sides[side]);
        if (s == MGPU_OK)
            s = need_linear(l, n, h, h, proj);
        snprintf(n, sizeof n, "%s.%s_mlp.0", p, sides[side]);
        if (s == MGPU_OK)
            s = need_linear(l, n, c->mlp_hidden, h, m0);
        snprintf(n, sizeof n, "%s.%s_mlp.2", p, sides[side]);
        if (s == MGPU_OK)
            s = need_linear(l, n, h, c->mlp_hidden, m2);
        snprintf(n, sizeof n, "%s.%s_attn.norm.query_norm.scale", p, sides[side]);
        if (s == MGPU_OK)
            s = mgpu_loader_need(l, n, 1, (const int64_t[]){d}, qs);
        snprintf(n, sizeof n, "%s.%s_attn.norm.key_norm.scale", p, sides[side]);
        if (s == MGPU_OK)
            s = mgpu_loader_need(l, n, 1, (const int64_t[]){d}, ks);
    }
    return s;
}

static mgpu_status load_single(const loader *l, const mgpu_flux_config *c, int i, single_block *b)
{
    char p[96], n[160];
    int64_t h = c->hidden;
    snprintf(p, sizeof p, "single_blocks.%d", i);
    b->block = mgpu_loader_block(l, p);
    snprintf(n, sizeof n, "%s.modulation.lin", p);
    mgpu_status s = need_linear(l, n, 3 * h, h, &b->mod);
    snprintf(n, sizeof n, "%s.linear1", p);
    if (s == MGPU_OK)
        s = need_linear(l, n, 3 * h + c->mlp_hidden, h, &b->linear1);
    snprintf(n, sizeof n, "%s.linear2", p);
    if (s == MGPU_OK)
        s = need_linear(l, n, h, h + c->mlp_hidden, &b->linear2);
    snprintf(n, sizeof n, "%s.norm.query_norm.scale", p);
    if (s == MGPU_OK)
        s = mgpu_loader_need(l, n, 1, (const int64_t[]){c->head_dim}, &b->q_scale);
    snprintf(n, sizeof n, "%s.norm.key_norm.scale", p);
    if (s == MGPU_OK)
        s = mgpu_loader_need(l, n, 1, (const int64_t[]){c->head_dim}, &b->k_scale);
    return s;
}

mgpu_status mgpu_flux_load(const mgpu_model *model, int component, const mgpu_flux_settings *set,
                           mgpu_flux **out, mgpu_error *err)
{
    *out = NULL;
    loader l = {model, component, "FLUX", err};
    const mgpu_model_tensor *img_in = mgpu_loader_find(&l, "img_in.weight");
    const mgpu_model_tensor *txt_in = mgpu_loader_find(&l, "txt_in.weight");
    const mgpu_model_tensor *vec_in = mgpu_loader_find(&l, "vector_in.in_layer.weight");
    const mgpu_model_tensor *mlp0 = mgpu_loader_find(&l, "double_blocks.0.img_mlp.0.weight");
    const mgpu_model_tensor *final = mgpu_loader_find(&l, "final_layer.linear.weight");
    const char *missing = !img_in   ? "img_in.weight"
                          : !txt_in ? "txt_in.weight"
                          : !vec_in ? "vector_in.in_layer.weight"
                          : !mlp0   ? "double_blocks.0.img_mlp.0.weight"
                          : !final  ? "final_layer.linear.weight"
                                    : NULL;
    if (missing)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "FLUX: missing tensor '%s' (is this a FLUX.1 diffusion model?)",
                              missing);
    mgpu_flux *f = calloc(1, sizeof *f);
    if (!f)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    f->model = model;
    f->component = component;
    mgpu_flux_config *c = &f->cfg;
    c->hidden = (int64_t)img_in->info.shape[0];
    c->in_channels = (int64_t)img_in->info.shape[1];
    c->context_dim = (int64_t)txt_in->info.shape[1];
    c->vec_dim = (int64_t)vec_in->info.shape[1];
    c->mlp_hidden = (int64_t)mlp0->info.shape[0];
    c->out_channels = (int64_t)final->info.shape[0];
    c->heads = set && set->heads ? set->heads : 24;
    c->theta = set && set->theta > 0 ? set->theta : 10000.0f;
    const int published[3] = {16, 56, 56};
    for (int a = 0; a < 3; a++)
        c->axes_dim[a] = set && set->axes_dim[0] ? set->axes_dim[a] : published[a];
    c->guidance = mgpu_loader_find(&l, "guidance_in.in_layer.weight") != NULL;
    c->depth_double = count_blocks(&l, "double_blocks");
    c->depth_single = count_blocks(&l, "single_blocks");
    mgpu_status s = MGPU_OK;
    if (c->heads <= 0 || c->hidden % c->heads != 0)
        s = mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                           "FLUX: hidden size %lld is not a multiple of %lld heads (set num_heads)",
                           (long long)c->hidden, (long long)c->heads);
    if (s == MGPU_OK) {
        c->head_dim = c->hidden / c->heads;
        int sum = c->axes_dim[0] + c->axes_dim[1] + c->axes_dim[2];
        bool even = c->axes_dim[0] % 2 == 0 && c->axes_dim[1] % 2 == 0 && c->axes_dim[2] % 2 == 0;
        if (sum != c->head_dim || !even || c->axes_dim[0] <= 0 || c->axes_dim[1] <= 0 ||
            c->axes_dim[2] <= 0)
            s = mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                               "FLUX: rope axes %d,%d,%d must be even and add up to the head size "
                               "%lld (set axes_dim)",
                               c->axes_dim[0], c->axes_dim[1], c->axes_dim[2],
                               (long long)c->head_dim);
    }
    if (s == MGPU_OK && (c->in_channels % 4 != 0 || c->out_channels % 4 != 0))
        s = mgpu_error_set(err, MGPU_ERR_FORMAT, "FLUX: channels %lld -> %lld are not 2x2 packed",
                           (long long)c->in_channels, (long long)c->out_channels);
    int64_t h = c->hidden;
    if (s == MGPU_OK)
        s = need_linear(&l, "img_in", h, c->in_channels, &f->img_in);
    if (s == MGPU_OK)
        s = need_linear(&l, "txt_in", h, c->context_dim, &f->txt_in);
    if (s == MGPU_OK)
        s = need_linear(&l, "time_in.in_layer", h, 256, &f->time_in0);
    if (s == MGPU_OK)
        s = need_linear(&l, "time_in.out_layer", h, h, &f->time_in1);
    if (s == MGPU_OK)
        s = need_linear(&l, "vector_in.in_layer", h, c->vec_dim, &f->vector_in0);
    if (s == MGPU_OK)
        s = need_linear(&l, "vector_in.out_layer", h, h, &f->vector_in1);
    if (s == MGPU_OK && c->guidance)
        s = need_linear(&l, "guidance_in.in_layer", h, 256, &f->guidance_in0);
    if (s == MGPU_OK && c->guidance)
        s = need_linear(&l, "guidance_in.out_layer", h, h, &f->guidance_in1);
    if (s == MGPU_OK)
        s = need_linear(&l, "final_layer.adaLN_modulation.1", 2 * h, h, &f->final_mod);
    if (s == MGPU_OK)
        s = need_linear(&l, "final_layer.linear", c->out_channels, h, &f->final_linear);
    if (s == MGPU_OK) {
        f->doubles = calloc((size_t)c->depth_double + 1, sizeof *f->doubles);
        f->singles = calloc((size_t)c->depth_single + 1, sizeof *f->singles);
        if (!f->doubles || !f->singles)
            s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    for (int i = 0; s == MGPU_OK && i < c->depth_double; i++)
        s = load_double(&l, c, i, &f->doubles[i]);
    for (int i = 0; s == MGPU_OK && i < c->depth_single; i++)
        s = load_single(&l, c, i, &f->singles[i]);
    if (s != MGPU_OK) {
        mgpu_flux_free(f);
        return s;
    }
    *out = f;
    return MGPU_OK;
}

void mgpu_flux_free(mgpu_flux *f)
{
    if (!f)
        return;
    free(f->doubles);
    free(f->singles);
    free(f);
}

const mgpu_flux_config *mgpu_flux_get_config(const mgpu_flux *f)
{
    return &f->cfg;
}

/* ---- forward ------------------------------------------------------------ */

typedef struct run {
    const mgpu_flux *f;
    const mgpu_tensor_source *src;
    mgpu_backend *be;
    mgpu_error *err;
    mgpu_status status;
} run;

static mgpu_wref weight(run *r, const mgpu_model_tensor *t)
{
    mgpu_wref w = {NULL, t->info.dtype};
    if (r->status != MGPU_OK)
        return w;
    w.data = r->src->data(r->src->context, t, r->err);
    if (!w.data)
        r->status = r->err && r->err->status ? r->err->status : MGPU_ERR_IO;
    return w;
}

static void linear(run *r, const linear_w *w, const float *x, int64_t rows, float *y)
{
    mgpu_wref wd = weight(r, w->weight), bd = weight(r, w->bias);
    if (r->status != MGPU_OK)
        return;
    int64_t out = (int64_t)w->weight->info.shape[0], in = (int64_t)w->weight->info.shape[1];
    r->be->ops->linear(r->be, x, rows, in, wd, out, bd, y);
    mgpu_lora_apply(r->src->lora, w->weight, x, rows, in, y, out);
}

/* Sinusoidal embedding of t * 1000 (FLUX's time factor): cos half, then sin
 * half, frequencies 10000^(-j / half). */
static void timestep_embedding(float t, float *out, int dim)
{
    int half = dim / 2;
    double scaled = (double)t * 1000.0;
    for (int j = 0; j < half; j++) {
        double freq = exp(-log(10000.0) * (double)j / (double)half);
        out[j] = (float)cos(scaled * freq);
        out[half + j] = (float)sin(scaled * freq);
    }
}

/* Device buffers of one forward, every one sized for the longest sequence. */
typedef struct buffers {
    float *qkv, *q, *k, *v, *attn, *tok, *mlp, *tmp, *cat, *cos_t, *sin_t;
    float *x, *patches, *context, *y, *vec, *silu_vec, *mod_a, *mod_b, *emb, *t1, *t2;
} buffers;
enum { N_BUFFERS = 22 };

/* MLPEmbedder: out_layer(silu(in_layer(x))), added into vec. */
static void embed_add(run *r, const linear_w *a, const linear_w *b, const float *x, buffers *d)
{
    int64_t h = r->f->cfg.hidden;
    linear(r, a, x, 1, d->t1);
    if (r->status != MGPU_OK)
        return;
    r->be->ops->unary(r->be, MGPU_UNARY_SILU, d->t1, h);
    linear(r, b, d->t1, 1, d->t2);
    if (r->status == MGPU_OK)
        r->be->ops->add(r->be, d->vec, d->vec, d->t2, h);
}

/* q, k, v [tokens][hidden] slices of a qkv row block -> [heads][total][d]
 * at token offset `at`, q and k normalised per head with their scales. */
static void heads_qk(run *r, const float *qkv, int64_t tokens, int64_t qkv_cols, int64_t at,
                     int64_t total, const mgpu_model_tensor *qs, const mgpu_model_tensor *ks,
                     buffers *d)
{
    const mgpu_flux_config *c = &r->f->cfg;
    mgpu_backend *be = r->be;
    int64_t h = c->hidden, hd = c->head_dim, heads = c->heads;
    mgpu_wref scale[2] = {weight(r, qs), weight(r, ks)};
    if (r->status != MGPU_OK)
        return;
    float *dst[3] = {d->q, d->k, d->v};
    for (int part = 0; part < 3; part++) {
        be->ops->copy_2d(be, d->tok, h, qkv + part * h, qkv_cols, tokens, h);
        if (part < 2) /* [tokens][heads][d] is [tokens * heads][d]: per-head norm */
            be->ops->rmsnorm(be, d->tok, d->tok, tokens * heads, hd, scale[part], NORM_EPS);
        for (int64_t hh = 0; hh < heads; hh++)
            be->ops->copy_2d(be, dst[part] + (hh * total + at) * hd, hd, d->tok + hh * hd, h,
                             tokens, hd);
    }
}

/* rope on q and k, attention, back to [total][hidden] in d->attn. */
static void attend(run *r, int64_t total, buffers *d)
{
    const mgpu_flux_config *c = &r->f->cfg;
    mgpu_backend *be = r->be;
    be->ops->rope(be, d->q, c->heads, total, c->head_dim, d->cos_t, d->sin_t);
    be->ops->rope(be, d->k, c->heads, total, c->head_dim, d->cos_t, d->sin_t);
    be->ops->attention(be, d->q, d->k, d->v, d->tok, c->heads, total, total, c->head_dim,
                       1.0f / sqrtf((float)c->head_dim), NULL, false);
    be->ops->heads_to_tokens(be, d->tok, total, c->heads, c->head_dim, d->attn);
}

/* y = modulate(layernorm(x), shift, scale) */
static void norm_modulate(run *r, const float *x, float *y, int64_t rows, const float *shift,
                          const float *scale)
{
    mgpu_backend *be = r->be;
    int64_t h = r->f->cfg.hidden;
    mgpu_wref none = {NULL, MGPU_DTYPE_F32};
    be->ops->layernorm(be, x, y, rows, h, none, none, NORM_EPS);
    be->ops->modulate(be, y, y, rows, h, shift, scale);
}

/* x += gate * mlp2(gelu(mlp1(modulate(layernorm(x), shift, scale)))) */
static void mlp_residual(run *r, float *x, int64_t rows, const float *mod, const linear_w *m0,
                         const linear_w *m2, buffers *d)
{
    const mgpu_flux_config *c = &r->f->cfg;
    int64_t h = c->hidden;
    norm_modulate(r, x, d->tmp, rows, mod + 3 * h, mod + 4 * h);
    linear(r, m0, d->tmp, rows, d->mlp);
    if (r->status != MGPU_OK)
        return;
    r->be->ops->unary(r->be, MGPU_UNARY_GELU_TANH, d->mlp, rows * c->mlp_hidden);
    linear(r, m2, d->mlp, rows, d->tmp);
    if (r->status == MGPU_OK)
        r->be->ops->gate_add(r->be, x, d->tmp, rows, h, mod + 5 * h);
}

static void double_block_forward(run *r, const double_block *b, float *img, int64_t n_img,
                                 float *txt, int64_t n_txt, buffers *d)
{
    const mgpu_flux_config *c = &r->f->cfg;
    int64_t h = c->hidden, total = n_txt + n_img;
    /* shift1 scale1 gate1 shift2 scale2 gate2 */
    linear(r, &b->img_mod, d->silu_vec, 1, d->mod_a);
    linear(r, &b->txt_mod, d->silu_vec, 1, d->mod_b);
    if (r->status != MGPU_OK)
        return;
    /* attention inputs, text first */
    struct {
        float *x;
        int64_t rows, at;
        const float *mod;
        const linear_w *qkv;
        const mgpu_model_tensor *qs, *ks;
    } side[2] = {{txt, n_txt, 0, d->mod_b, &b->txt_qkv, b->txt_q_scale, b->txt_k_scale},
                 {img, n_img, n_txt, d->mod_a, &b->img_qkv, b->img_q_scale, b->img_k_scale}};
    for (int i = 0; i < 2 && r->status == MGPU_OK; i++) {
        norm_modulate(r, side[i].x, d->tmp, side[i].rows, side[i].mod, side[i].mod + h);
        linear(r, side[i].qkv, d->tmp, side[i].rows, d->qkv);
        if (r->status == MGPU_OK)
            heads_qk(r, d->qkv, side[i].rows, 3 * h, side[i].at, total, side[i].qs, side[i].ks, d);
    }
    if (r->status != MGPU_OK)
        return;
    attend(r, total, d);
    /* x += gate1 * proj(attention rows of x) */
    const linear_w *proj[2] = {&b->txt_proj, &b->img_proj};
    for (int i = 0; i < 2 && r->status == MGPU_OK; i++) {
        linear(r, proj[i], d->attn + side[i].at * h, side[i].rows, d->tmp);
        if (r->status == MGPU_OK)
            r->be->ops->gate_add(r->be, side[i].x, d->tmp, side[i].rows, h, side[i].mod + 2 * h);
    }
    if (r->status == MGPU_OK)
        mlp_residual(r, txt, n_txt, d->mod_b, &b->txt_mlp0, &b->txt_mlp2, d);
    if (r->status == MGPU_OK)
        mlp_residual(r, img, n_img, d->mod_a, &b->img_mlp0, &b->img_mlp2, d);
}

static void single_block_forward(run *r, const single_block *b, float *x, int64_t total,
                                 buffers *d)
{
    const mgpu_flux_config *c = &r->f->cfg;
    mgpu_backend *be = r->be;
    int64_t h = c->hidden, m = c->mlp_hidden, cols = 3 * h + m;
    linear(r, &b->mod, d->silu_vec, 1, d->mod_a); /* shift scale gate */
    if (r->status != MGPU_OK)
        return;
    norm_modulate(r, x, d->tmp, total, d->mod_a, d->mod_a + h);
    linear(r, &b->linear1, d->tmp, total, d->qkv); /* [total][3h + m] */
    if (r->status != MGPU_OK)
        return;
    heads_qk(r, d->qkv, total, cols, 0, total, b->q_scale, b->k_scale, d);
    if (r->status != MGPU_OK)
        return;
    attend(r, total, d);
    /* cat(attention, gelu(mlp)) -> linear2 */
    be->ops->copy_2d(be, d->mlp, m, d->qkv + 3 * h, cols, total, m);
    be->ops->unary(be, MGPU_UNARY_GELU_TANH, d->mlp, total * m);
    be->ops->copy_2d(be, d->cat, h + m, d->attn, h, total, h);
    be->ops->copy_2d(be, d->cat + h, h + m, d->mlp, m, total, m);
    linear(r, &b->linear2, d->cat, total, d->tmp);
    if (r->status == MGPU_OK)
        be->ops->gate_add(be, x, d->tmp, total, h, d->mod_a + 2 * h);
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

static void upload(run *r, float *dst, const float *src, int64_t n)
{
    if (r->status == MGPU_OK)
        r->status = mgpu_backend_upload(r->be, dst, src, (size_t)n * sizeof(float), r->err);
}

/* One batch item: its inputs are uploaded, the result downloaded into
 * out_patches [n_img][out_channels]. */
static void forward_one(run *r, const mgpu_flux_inputs *in, int64_t b, buffers *d,
                        const float *patches, float *emb, const float *zeros, float *out_patches)
{
    const mgpu_flux *f = r->f;
    const mgpu_flux_config *c = &f->cfg;
    mgpu_backend *be = r->be;
    int64_t h = c->hidden, n_txt = in->text_len, n_img = (in->height / 2) * (in->width / 2);
    int64_t total = n_txt + n_img;
    float *txt = d->x, *img = d->x + n_txt * h; /* text rows first */
    upload(r, d->patches, patches, n_img * c->in_channels);
    upload(r, d->context, in->context + b * n_txt * c->context_dim, n_txt * c->context_dim);
    upload(r, d->y, in->y + b * c->vec_dim, c->vec_dim);
    linear(r, &f->img_in, d->patches, n_img, img);
    linear(r, &f->txt_in, d->context, n_txt, txt);
    /* vec = time_in(t) (+ guidance_in(g)) + vector_in(y) */
    upload(r, d->vec, zeros, h);
    timestep_embedding(in->timestep[b], emb, 256);
    upload(r, d->emb, emb, 256);
    embed_add(r, &f->time_in0, &f->time_in1, d->emb, d);
    if (c->guidance) {
        timestep_embedding(in->guidance[b], emb, 256);
        upload(r, d->emb, emb, 256);
        embed_add(r, &f->guidance_in0, &f->guidance_in1, d->emb, d);
    }
    embed_add(r, &f->vector_in0, &f->vector_in1, d->y, d);
    if (r->status != MGPU_OK)
        return;
    be->ops->copy_2d(be, d->silu_vec, h, d->vec, h, 1, h);
    be->ops->unary(be, MGPU_UNARY_SILU, d->silu_vec, h);
    for (int i = 0; i < c->depth_double && r->status == MGPU_OK; i++) {
        enter(r, f->doubles[i].block);
        if (r->status == MGPU_OK)
            double_block_forward(r, &f->doubles[i], img, n_img, txt, n_txt, d);
        leave(r, f->doubles[i].block);
    }
    /* single blocks run over text and image together: x is already laid out
     * text first */
    for (int i = 0; i < c->depth_single && r->status == MGPU_OK; i++) {
        enter(r, f->singles[i].block);
        if (r->status == MGPU_OK)
            single_block_forward(r, &f->singles[i], d->x, total, d);
        leave(r, f->singles[i].block);
    }
    /* final layer: shift and scale (in that order), norm, linear */
    linear(r, &f->final_mod, d->silu_vec, 1, d->mod_a);
    if (r->status != MGPU_OK)
        return;
    norm_modulate(r, img, d->tmp, n_img, d->mod_a, d->mod_a + h);
    linear(r, &f->final_linear, d->tmp, n_img, d->patches);
    if (r->status == MGPU_OK)
        r->status = mgpu_backend_download(be, out_patches, d->patches,
                                          (size_t)(n_img * c->out_channels) * sizeof(float), r->err);
}

mgpu_status mgpu_flux_forward(const mgpu_flux *f, const mgpu_tensor_source *src,
                              const mgpu_flux_inputs *in, float *out, mgpu_backend *be,
                              mgpu_error *err)
{
    const mgpu_flux_config *c = &f->cfg;
    int64_t h = c->hidden;
    int64_t lat = c->in_channels / 4, out_lat = c->out_channels / 4;
    if (in->batch < 1 || in->height < 2 || in->width < 2 || in->height % 2 || in->width % 2)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "FLUX: latent size %lldx%lld must be even and at least 2x2",
                              (long long)in->height, (long long)in->width);
    if (in->text_len < 1)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "FLUX: the text context is empty");
    if (c->guidance && !in->guidance)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "FLUX: this model has a guidance embedding: a guidance value is needed");
    int64_t gh = in->height / 2, gw = in->width / 2, n_img = gh * gw, n_txt = in->text_len;
    int64_t total = n_img + n_txt;
    int64_t wide = 3 * h + c->mlp_hidden; /* the widest activation row */
    int64_t pairs = c->head_dim / 2;
    int64_t chan = c->in_channels > c->out_channels ? c->in_channels : c->out_channels;
    const int64_t sizes[N_BUFFERS] = {
        total * wide, total * h, total * h, total * h, total * h, total * h,
        total * c->mlp_hidden, total * (h > c->context_dim ? h : c->context_dim),
        total * (h + c->mlp_hidden), total * pairs, total * pairs,
        total * h, n_img * chan, n_txt * c->context_dim, c->vec_dim, h, h, 6 * h, 6 * h, 256, h,
        h,
    };
    buffers d = {0};
    float **slot[N_BUFFERS] = {&d.qkv, &d.q,       &d.k,       &d.v,        &d.attn,     &d.tok,
                               &d.mlp, &d.tmp,     &d.cat,     &d.cos_t,    &d.sin_t,    &d.x,
                               &d.patches, &d.context, &d.y, &d.vec, &d.silu_vec, &d.mod_a,
                               &d.mod_b, &d.emb, &d.t1, &d.t2};
    run r = {f, src, be, err, MGPU_OK};
    for (int i = 0; i < N_BUFFERS && r.status == MGPU_OK; i++)
        r.status = mgpu_backend_alloc_f32(be, sizes[i], slot[i], err);
    /* host side: packing, positions and the rope table, embeddings */
    float *patches = malloc((size_t)(n_img * chan) * sizeof(float));
    float *positions = malloc((size_t)total * 3 * sizeof(float));
    float *cos_t = malloc((size_t)(total * pairs) * sizeof(float));
    float *sin_t = malloc((size_t)(total * pairs) * sizeof(float));
    float *emb = malloc(256 * sizeof(float));
    float *zeros = calloc((size_t)h, sizeof(float));
    if (r.status == MGPU_OK && (!patches || !positions || !cos_t || !sin_t || !emb || !zeros))
        r.status = mgpu_error_set(err, MGPU_ERR_NO_MEMORY,
                                  "FLUX: out of memory for activations of %lld tokens",
                                  (long long)total);
    /* positions: text tokens at (0,0,0), image tokens at (0, row, column) */
    for (int64_t t = 0; r.status == MGPU_OK && t < total; t++) {
        int64_t i = t - n_txt;
        positions[3 * t] = 0.0f;
        positions[3 * t + 1] = i < 0 ? 0.0f : (float)(i / gw);
        positions[3 * t + 2] = i < 0 ? 0.0f : (float)(i % gw);
    }
    if (r.status == MGPU_OK) {
        mgpu_cpu_rope_table(positions, total, 3, c->axes_dim, c->theta, cos_t, sin_t);
        upload(&r, d.cos_t, cos_t, total * pairs);
        upload(&r, d.sin_t, sin_t, total * pairs);
    }
    for (int64_t b = 0; b < in->batch && r.status == MGPU_OK; b++) {
        const float *xb = in->x + b * lat * in->height * in->width;
        /* pack 2x2 patches: (c, ph, pw) fastest-last within a patch */
        for (int64_t py = 0; py < gh; py++)
            for (int64_t px = 0; px < gw; px++) {
                float *p = patches + (py * gw + px) * c->in_channels;
                for (int64_t ch = 0; ch < lat; ch++)
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++)
                            *p++ = xb[(ch * in->height + 2 * py + dy) * in->width + 2 * px + dx];
            }
        forward_one(&r, in, b, &d, patches, emb, zeros, patches);
        if (r.status != MGPU_OK)
            break;
        float *ob = out + b * out_lat * in->height * in->width;
        for (int64_t py = 0; py < gh; py++)
            for (int64_t px = 0; px < gw; px++) {
                const float *p = patches + (py * gw + px) * c->out_channels;
                for (int64_t ch = 0; ch < out_lat; ch++)
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++)
                            ob[(ch * in->height + 2 * py + dy) * in->width + 2 * px + dx] = *p++;
            }
    }
    if (r.status == MGPU_OK)
        r.status = be->ops->synchronize(be, err);
    else
        be->ops->synchronize(be, NULL);
    for (int i = 0; i < N_BUFFERS; i++)
        if (*slot[i])
            be->ops->free(be, *slot[i]);
    free(patches);
    free(positions);
    free(cos_t);
    free(sin_t);
    free(emb);
    free(zeros);
    return r.status;
}
