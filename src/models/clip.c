/* CLIP text encoder forward; see clip.h. Structure and names follow Hugging
 * Face's CLIPTextModel (modeling_clip.py) and ComfyUI's comfy/clip_model.py;
 * every computation is written here against the backend's ops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "models/clip.h"
#include "lora/lora_apply.h"
#include "models/loader.h"

enum { MAX_LAYERS = 256 };
static const int64_t HEAD_DIM = 64; /* ViT text towers: heads = hidden / 64 */
static const float LN_EPS = 1e-5f;

typedef struct linear_w {
    const mgpu_model_tensor *weight, *bias;
} linear_w;

typedef struct clip_layer {
    int block; /* model view block, -1 when the view has none */
    linear_w ln1, q, k, v, out, ln2, fc1, fc2;
} clip_layer;

struct mgpu_clip {
    mgpu_clip_config cfg;
    const mgpu_model *model;
    const mgpu_model_tensor *token_embedding, *position_embedding;
    linear_w final_ln;
    clip_layer *layers;
};

/* ---- loading ------------------------------------------------------------ */

typedef mgpu_loader loader;

/* NAME.weight [out][in] (or [out] for a norm when in == 0) and NAME.bias [out]. */
static mgpu_status need_wb(const loader *l, const char *name, int64_t out, int64_t in,
                           linear_w *w)
{
    return mgpu_loader_need_with_bias(l, name, in ? 2 : 1, (const int64_t[]){out, in}, &w->weight,
                                      &w->bias);
}

static mgpu_status load_layer(const loader *l, const mgpu_clip_config *c, int i, clip_layer *y)
{
    char p[96], n[160];
    int64_t h = c->hidden;
    snprintf(p, sizeof p, "text_model.encoder.layers.%d", i);
    y->block = mgpu_loader_block(l, p);
    struct {
        const char *name;
        int64_t out, in;
        linear_w *w;
    } parts[] = {
        {"layer_norm1", h, 0, &y->ln1},      {"self_attn.q_proj", h, h, &y->q},
        {"self_attn.k_proj", h, h, &y->k},   {"self_attn.v_proj", h, h, &y->v},
        {"self_attn.out_proj", h, h, &y->out}, {"layer_norm2", h, 0, &y->ln2},
        {"mlp.fc1", c->ffn, h, &y->fc1},     {"mlp.fc2", h, c->ffn, &y->fc2},
    };
    mgpu_status s = MGPU_OK;
    for (size_t j = 0; j < sizeof parts / sizeof parts[0] && s == MGPU_OK; j++) {
        snprintf(n, sizeof n, "%s.%s", p, parts[j].name);
        s = need_wb(l, n, parts[j].out, parts[j].in, parts[j].w);
    }
    return s;
}

static int count_layers(const loader *l)
{
    char name[160];
    int n = 0;
    while (n < MAX_LAYERS) {
        snprintf(name, sizeof name, "text_model.encoder.layers.%d.self_attn.q_proj.weight", n);
        if (!mgpu_loader_find(l, name))
            break;
        n++;
    }
    return n;
}

mgpu_status mgpu_clip_load(const mgpu_model *model, int component, mgpu_clip **out,
                           mgpu_error *err)
{
    *out = NULL;
    if (component < 0 || (size_t)component >= mgpu_model_component_count(model))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "CLIP: no component %d in the model",
                              component);
    loader l = {model, component, "CLIP", err};
    const char *tok_name = "text_model.embeddings.token_embedding.weight";
    const char *pos_name = "text_model.embeddings.position_embedding.weight";
    const mgpu_model_tensor *tok = mgpu_loader_find(&l, tok_name), *pos = mgpu_loader_find(&l, pos_name);
    const char *missing = !tok ? tok_name : !pos ? pos_name : NULL;
    if (missing)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "CLIP: missing tensor '%s' (is this a CLIP text encoder?)", missing);
    if (tok->info.ndim != 2 || pos->info.ndim != 2)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "CLIP: tensor '%s' should be 2-D",
                              tok->info.ndim != 2 ? tok_name : pos_name);
    mgpu_clip_config c = {0};
    c.vocab = (int64_t)tok->info.shape[0];
    c.hidden = (int64_t)tok->info.shape[1];
    c.positions = (int64_t)pos->info.shape[0];
    c.head_dim = HEAD_DIM;
    c.eps = LN_EPS;
    if (c.hidden % HEAD_DIM != 0)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "CLIP: hidden size %lld is not a multiple of the head size 64",
                              (long long)c.hidden);
    c.heads = c.hidden / HEAD_DIM;
    c.layers = count_layers(&l);
    if (c.layers < 1)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "CLIP: missing tensor "
                              "'text_model.encoder.layers.0.self_attn.q_proj.weight'");
    const mgpu_model_tensor *fc1 = mgpu_loader_find(&l, "text_model.encoder.layers.0.mlp.fc1.weight");
    if (!fc1 || fc1->info.ndim != 2)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "CLIP: missing tensor 'text_model.encoder.layers.0.mlp.fc1.weight'");
    c.ffn = (int64_t)fc1->info.shape[0];

    mgpu_clip *clip = calloc(1, sizeof *clip);
    clip_layer *layers = calloc((size_t)c.layers, sizeof *layers);
    if (!clip || !layers) {
        free(clip);
        free(layers);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "CLIP: out of memory");
    }
    clip->cfg = c;
    clip->model = model;
    clip->layers = layers;
    mgpu_status s = mgpu_loader_need(&l, tok_name, 2, (const int64_t[]){c.vocab, c.hidden},
                         &clip->token_embedding);
    if (s == MGPU_OK)
        s = mgpu_loader_need(&l, pos_name, 2, (const int64_t[]){c.positions, c.hidden},
                 &clip->position_embedding);
    for (int i = 0; i < c.layers && s == MGPU_OK; i++)
        s = load_layer(&l, &c, i, &layers[i]);
    if (s == MGPU_OK)
        s = need_wb(&l, "text_model.final_layer_norm", c.hidden, 0, &clip->final_ln);
    if (s != MGPU_OK) {
        mgpu_clip_free(clip);
        return s;
    }
    *out = clip;
    return MGPU_OK;
}

void mgpu_clip_free(mgpu_clip *clip)
{
    if (!clip)
        return;
    free(clip->layers);
    free(clip);
}

const mgpu_clip_config *mgpu_clip_get_config(const mgpu_clip *clip)
{
    return &clip->cfg;
}

int64_t mgpu_clip_first_token(const int32_t *tokens, int64_t n_tokens, int32_t id)
{
    for (int64_t i = 0; i < n_tokens; i++)
        if (tokens[i] == id)
            return i;
    return -1;
}

/* ---- forward ------------------------------------------------------------ */

typedef struct run {
    mgpu_backend *be;
    const mgpu_tensor_source *src;
    mgpu_error *err;
    mgpu_status status;
} run;

/* A weight's device bytes; {NULL} after a failure, which is kept. */
static mgpu_wref wref(run *r, const mgpu_model_tensor *t)
{
    mgpu_wref w = {NULL, MGPU_DTYPE_F32};
    if (r->status != MGPU_OK || !t)
        return w;
    mgpu_error e = {0};
    w.data = r->src->data(r->src->context, t, &e);
    w.dtype = t->info.dtype;
    if (!w.data) {
        if (e.status == MGPU_OK)
            mgpu_error_set(&e, MGPU_ERR_IO, "CLIP: no data for tensor '%s'", t->info.name);
        r->status = e.status;
        if (r->err)
            *r->err = e;
    }
    return w;
}

static void linear(run *r, const linear_w *w, const float *x, int64_t rows, int64_t in,
                   int64_t out, float *y)
{
    mgpu_wref wt = wref(r, w->weight), b = wref(r, w->bias);
    if (r->status == MGPU_OK) {
        r->be->ops->linear(r->be, x, rows, in, wt, out, b, y);
        mgpu_lora_apply(r->src->lora, w->weight, x, rows, in, y, out);
    }
}

static void layernorm(run *r, const linear_w *w, const float *x, float *y, int64_t rows,
                      int64_t dim, float eps)
{
    mgpu_wref wt = wref(r, w->weight), b = wref(r, w->bias);
    if (r->status == MGPU_OK)
        r->be->ops->layernorm(r->be, x, y, rows, dim, wt, b, eps);
}

/* Device buffers of one forward. */
typedef struct scratch {
    float *x, *t, *q, *k, *v, *qh, *kh, *vh, *att, *ffn;
    int32_t *ids, *pos;
} scratch;

static void scratch_free(mgpu_backend *be, scratch *s)
{
    void *all[] = {s->x,  s->t,  s->q,   s->k,   s->v,   s->qh,
                   s->kh, s->vh, s->att, s->ffn, s->ids, s->pos};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            be->ops->free(be, all[i]);
}

static mgpu_status scratch_alloc(mgpu_backend *be, const mgpu_clip_config *c, int64_t n,
                                 scratch *s, mgpu_error *err)
{
    int64_t nh = n * c->hidden;
    float **f[] = {&s->x, &s->t, &s->q, &s->k, &s->v, &s->qh, &s->kh, &s->vh, &s->att};
    mgpu_status st = MGPU_OK;
    for (size_t i = 0; i < sizeof f / sizeof f[0] && st == MGPU_OK; i++)
        st = mgpu_backend_alloc_f32(be, nh, f[i], err);
    if (st == MGPU_OK)
        st = mgpu_backend_alloc_f32(be, n * c->ffn, &s->ffn, err);
    void *p = NULL;
    if (st == MGPU_OK)
        st = be->ops->alloc(be, (size_t)n * sizeof(int32_t), &p, err);
    s->ids = p;
    p = NULL;
    if (st == MGPU_OK)
        st = be->ops->alloc(be, (size_t)n * sizeof(int32_t), &p, err);
    s->pos = p;
    return st;
}

/* One pre-LN layer on x [n][hidden], in place. */
static void layer_forward(run *r, const mgpu_clip_config *c, const clip_layer *y, int64_t n,
                          scratch *s)
{
    mgpu_backend *be = r->be;
    int64_t h = c->hidden;
    layernorm(r, &y->ln1, s->x, s->t, n, h, c->eps);
    linear(r, &y->q, s->t, n, h, h, s->q);
    linear(r, &y->k, s->t, n, h, h, s->k);
    linear(r, &y->v, s->t, n, h, h, s->v);
    if (r->status != MGPU_OK)
        return;
    be->ops->tokens_to_heads(be, s->q, n, c->heads, c->head_dim, s->qh);
    be->ops->tokens_to_heads(be, s->k, n, c->heads, c->head_dim, s->kh);
    be->ops->tokens_to_heads(be, s->v, n, c->heads, c->head_dim, s->vh);
    be->ops->attention(be, s->qh, s->kh, s->vh, s->att, c->heads, n, n, c->head_dim,
                       1.0f / sqrtf((float)c->head_dim), NULL, true);
    be->ops->heads_to_tokens(be, s->att, n, c->heads, c->head_dim, s->q);
    linear(r, &y->out, s->q, n, h, h, s->t);
    if (r->status != MGPU_OK)
        return;
    be->ops->add(be, s->x, s->x, s->t, n * h);
    layernorm(r, &y->ln2, s->x, s->t, n, h, c->eps);
    linear(r, &y->fc1, s->t, n, h, c->ffn, s->ffn);
    if (r->status != MGPU_OK)
        return;
    be->ops->unary(be, MGPU_UNARY_GELU_QUICK, s->ffn, n * c->ffn);
    linear(r, &y->fc2, s->ffn, n, c->ffn, h, s->t);
    if (r->status == MGPU_OK)
        be->ops->add(be, s->x, s->x, s->t, n * h);
}

mgpu_status mgpu_clip_forward_outputs(const mgpu_clip *clip, mgpu_backend *be,
                                      const mgpu_tensor_source *src, const int32_t *tokens,
                                      int64_t n_tokens, int64_t pooled_index,
                                      const mgpu_clip_outputs *out, mgpu_error *err)
{
    const mgpu_clip_config *c = &clip->cfg;
    int64_t n = n_tokens, h = c->hidden;
    if (!out->hidden && !out->pooled && !out->penultimate)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "CLIP: no output asked for");
    if (n < 1)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "CLIP: no tokens to encode");
    if (n > c->positions)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "CLIP: %lld tokens, more than the %lld positions the encoder has",
                              (long long)n, (long long)c->positions);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab)
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                                  "CLIP: token %lld has id %ld, outside the vocabulary of %lld",
                                  (long long)i, (long)tokens[i], (long long)c->vocab);
    if (out->pooled && (pooled_index < 0 || pooled_index >= n))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "CLIP: pooled index %lld is outside the %lld tokens",
                              (long long)pooled_index, (long long)n);
    if (out->penultimate && c->layers < 2)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "CLIP: a penultimate layer needs at least 2 layers, not %d",
                              c->layers);

    scratch s = {0};
    mgpu_status st = scratch_alloc(be, c, n, &s, err);
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    if (st == MGPU_OK && !pos)
        st = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "CLIP: out of memory");
    for (int64_t i = 0; st == MGPU_OK && i < n; i++)
        pos[i] = (int32_t)i;
    if (st == MGPU_OK)
        st = mgpu_backend_upload(be, s.ids, tokens, (size_t)n * sizeof(int32_t), err);
    if (st == MGPU_OK)
        st = mgpu_backend_upload(be, s.pos, pos, (size_t)n * sizeof(int32_t), err);
    run r = {be, src, err, st};

    /* x = token_embedding[ids] + position_embedding[0..n) */
    mgpu_wref tok = wref(&r, clip->token_embedding), pe = wref(&r, clip->position_embedding);
    if (r.status == MGPU_OK) {
        be->ops->get_rows(be, tok, h, s.ids, n, s.x);
        be->ops->get_rows(be, pe, h, s.pos, n, s.t);
        be->ops->add(be, s.x, s.x, s.t, n * h);
    }
    for (int i = 0; i < c->layers && r.status == MGPU_OK; i++) {
        const clip_layer *y = &clip->layers[i];
        if (y->block >= 0)
            r.status = src->enter_block(src->context, y->block, err);
        if (r.status != MGPU_OK)
            break;
        layer_forward(&r, c, y, n, &s);
        if (y->block >= 0)
            src->leave_block(src->context, y->block);
        if (r.status == MGPU_OK && out->penultimate && i == c->layers - 2)
            r.status = mgpu_backend_download(be, out->penultimate, s.x,
                                             (size_t)(n * h) * sizeof(float), err);
    }
    if (r.status == MGPU_OK)
        layernorm(&r, &clip->final_ln, s.x, s.x, n, h, c->eps);
    if (r.status == MGPU_OK && out->hidden)
        r.status =
            mgpu_backend_download(be, out->hidden, s.x, (size_t)(n * h) * sizeof(float), err);
    if (r.status == MGPU_OK && out->pooled)
        r.status = mgpu_backend_download(be, out->pooled, s.x + pooled_index * h,
                                         (size_t)h * sizeof(float), err);
    /* Queued ops may still use the scratch: wait for them before freeing,
     * keeping the first error. */
    mgpu_error sync_err = {0};
    mgpu_status sync = be->ops->synchronize(be, &sync_err);
    if (r.status == MGPU_OK && sync != MGPU_OK) {
        r.status = sync;
        if (err)
            *err = sync_err;
    }
    scratch_free(be, &s);
    free(pos);
    return r.status;
}

mgpu_status mgpu_clip_forward(const mgpu_clip *clip, mgpu_backend *be,
                              const mgpu_tensor_source *src, const int32_t *tokens,
                              int64_t n_tokens, int64_t pooled_index, float *hidden,
                              float *pooled, mgpu_error *err)
{
    mgpu_clip_outputs out = {hidden, pooled, NULL};
    return mgpu_clip_forward_outputs(clip, be, src, tokens, n_tokens, pooled_index, &out, err);
}
