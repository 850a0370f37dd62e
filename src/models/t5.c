/* T5 v1.1 / UMT5 encoder forward; see t5.h. Structure follows Hugging
 * Face's T5EncoderModel (modeling_t5.py) and ComfyUI's
 * comfy/text_encoders/t5.py; the GGUF names are llama.cpp's, as ComfyUI-GGUF
 * maps them back. Every computation is written here against the backend's
 * ops. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "models/t5.h"
#include "lora/lora_apply.h"
#include "models/loader.h"

enum { MAX_LAYERS = 256 };
static const float RMS_EPS = 1e-6f;
static const int MAX_DISTANCE = 128; /* T5's relative_attention_max_distance */

/* Per-block tensors, by role. */
typedef enum slot { Q, K, V, O, REL, LN0, GATE, UP, DOWN, LN1, SLOT_COUNT } slot;

/* One naming scheme: per-block patterns by slot, the block itself, the
 * embedding candidates and the final norm. */
typedef struct naming {
    const char *block;
    const char *slots[SLOT_COUNT];
    const char *embed[3];
    const char *final_norm;
} naming;

static const naming HF_NAMES = {
    "encoder.block.%d",
    {"encoder.block.%d.layer.0.SelfAttention.q.weight",
     "encoder.block.%d.layer.0.SelfAttention.k.weight",
     "encoder.block.%d.layer.0.SelfAttention.v.weight",
     "encoder.block.%d.layer.0.SelfAttention.o.weight",
     "encoder.block.%d.layer.0.SelfAttention.relative_attention_bias.weight",
     "encoder.block.%d.layer.0.layer_norm.weight",
     "encoder.block.%d.layer.1.DenseReluDense.wi_0.weight",
     "encoder.block.%d.layer.1.DenseReluDense.wi_1.weight",
     "encoder.block.%d.layer.1.DenseReluDense.wo.weight",
     "encoder.block.%d.layer.1.layer_norm.weight"},
    /* t5xxl_fp16.safetensors holds both, tied; other files only one. */
    {"shared.weight", "encoder.embed_tokens.weight", NULL},
    "encoder.final_layer_norm.weight",
};

/* llama.cpp's: wi_0 is ffn_gate, wi_1 ffn_up, wo ffn_down. */
static const naming GGUF_NAMES = {
    "enc.blk.%d",
    {"enc.blk.%d.attn_q.weight", "enc.blk.%d.attn_k.weight", "enc.blk.%d.attn_v.weight",
     "enc.blk.%d.attn_o.weight", "enc.blk.%d.attn_rel_b.weight", "enc.blk.%d.attn_norm.weight",
     "enc.blk.%d.ffn_gate.weight", "enc.blk.%d.ffn_up.weight", "enc.blk.%d.ffn_down.weight",
     "enc.blk.%d.ffn_norm.weight"},
    {"token_embd.weight", NULL, NULL},
    "enc.output_norm.weight",
};

typedef struct t5_block {
    int block; /* model view block, -1 when the view has none */
    const mgpu_model_tensor *w[SLOT_COUNT]; /* w[REL] NULL where the table is shared */
    float scale[SLOT_COUNT]; /* scaled-fp8 checkpoints: the linear's output scale, else 1 */
} t5_block;

struct mgpu_t5 {
    mgpu_t5_config cfg;
    const mgpu_model_tensor *embed, *final_norm;
    t5_block *blocks;
};

int mgpu_t5_relative_bucket(int64_t relative_position, int buckets, int max_distance)
{
    int half = buckets / 2, exact = half / 2;
    int bucket = relative_position > 0 ? half : 0;
    int64_t n = relative_position < 0 ? -relative_position : relative_position;
    if (n < exact)
        return bucket + (int)n;
    /* In f32 as PyTorch computes it, so bucket edges fall where they do
     * there. */
    float f = logf((float)n / (float)exact) / (float)log((double)max_distance / exact) *
              (float)(half - exact);
    if (!(f >= 0.0f)) /* NaN or negative from degenerate sizes */
        f = 0.0f;
    if (f > (float)half)
        f = (float)half;
    int64_t large = exact + (int64_t)f;
    return bucket + (int)(large < half - 1 ? large : half - 1);
}

/* ---- loading ------------------------------------------------------------ */

typedef mgpu_loader loader;

static const mgpu_model_tensor *find_block(const loader *l, const naming *nm, slot s, int i)
{
    char name[192];
    snprintf(name, sizeof name, nm->slots[s], i);
    return mgpu_loader_find(l, name);
}

static int block_index(const loader *l, const naming *nm, int i)
{
    char name[96];
    snprintf(name, sizeof name, nm->block, i);
    return mgpu_loader_block(l, name);
}

static mgpu_status load_block(const loader *l, const naming *nm, const mgpu_t5_config *c, int i,
                              t5_block *b)
{
    int64_t d = c->d_model, inner = c->heads * c->d_kv;
    const int64_t shapes[SLOT_COUNT][2] = {
        [Q] = {inner, d},      [K] = {inner, d},   [V] = {inner, d},   [O] = {d, inner},
        [REL] = {c->buckets, c->heads},            [LN0] = {d, 0},     [GATE] = {c->d_ff, d},
        [UP] = {c->d_ff, d},   [DOWN] = {d, c->d_ff},                  [LN1] = {d, 0},
    };
    b->block = block_index(l, nm, i);
    mgpu_status s = MGPU_OK;
    for (int j = 0; j < SLOT_COUNT && s == MGPU_OK; j++) {
        if (j == REL && i > 0 && !c->bias_per_block)
            continue;
        char name[192];
        snprintf(name, sizeof name, nm->slots[j], i);
        const bool lin = j == Q || j == K || j == V || j == O || j == GATE || j == UP || j == DOWN;
        b->scale[j] = 1.0f;
        s = lin ? mgpu_loader_need_scaled(l, name, 2, shapes[j], &b->w[j], &b->scale[j])
                : mgpu_loader_need(l, name, shapes[j][1] ? 2 : 1, shapes[j], &b->w[j]);
    }
    return s;
}

mgpu_status mgpu_t5_load(const mgpu_model *model, int component, mgpu_t5 **out, mgpu_error *err)
{
    *out = NULL;
    if (component < 0 || (size_t)component >= mgpu_model_component_count(model))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "T5: no component %d in the model",
                              component);
    loader l = {model, component, "T5", err};
    mgpu_t5_config c = {0};
    const naming *nm = &HF_NAMES;
    if (!find_block(&l, nm, Q, 0)) {
        nm = &GGUF_NAMES;
        c.gguf_names = true;
    }
    const mgpu_model_tensor *q = find_block(&l, nm, Q, 0), *rel = find_block(&l, nm, REL, 0);
    const mgpu_model_tensor *gate = find_block(&l, nm, GATE, 0);
    if (!q)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "T5: missing tensor 'encoder.block.0.layer.0.SelfAttention.q.weight' "
                              "(or 'enc.blk.0.attn_q.weight'; is this a T5 encoder?)");
    const mgpu_model_tensor *embed = NULL;
    for (int i = 0; nm->embed[i] && !embed; i++)
        embed = mgpu_loader_find(&l, nm->embed[i]);
    char name[192];
    const char *missing = !embed ? nm->embed[0] : NULL;
    if (!missing && !rel) {
        snprintf(name, sizeof name, nm->slots[REL], 0);
        missing = name;
    }
    if (!missing && !gate) {
        snprintf(name, sizeof name, nm->slots[GATE], 0);
        missing = name;
    }
    if (missing)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "T5: missing tensor '%s'", missing);
    if (embed->info.ndim != 2 || rel->info.ndim != 2 || q->info.ndim != 2 || gate->info.ndim != 2)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "T5: the embedding, q, wi_0 and relative position table of block 0 "
                              "should be 2-D");
    c.vocab = (int64_t)embed->info.shape[0];
    c.d_model = (int64_t)embed->info.shape[1];
    c.buckets = (int64_t)rel->info.shape[0];
    c.heads = (int64_t)rel->info.shape[1];
    c.d_ff = (int64_t)gate->info.shape[0];
    c.max_distance = MAX_DISTANCE;
    c.eps = RMS_EPS;
    if (c.heads < 1 || (int64_t)q->info.shape[0] % c.heads != 0 || c.buckets < 4)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "T5: q rows %llu do not split into the %lld heads of the relative "
                              "position table (or it has fewer than 4 buckets)",
                              (unsigned long long)q->info.shape[0], (long long)c.heads);
    c.d_kv = (int64_t)q->info.shape[0] / c.heads;
    while (c.layers < MAX_LAYERS && find_block(&l, nm, Q, c.layers))
        c.layers++;
    c.bias_per_block = c.layers > 1 && find_block(&l, nm, REL, 1) != NULL;

    mgpu_t5 *t5 = calloc(1, sizeof *t5);
    t5_block *blocks = calloc((size_t)c.layers, sizeof *blocks);
    if (!t5 || !blocks) {
        free(t5);
        free(blocks);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "T5: out of memory");
    }
    t5->cfg = c;
    t5->blocks = blocks;
    mgpu_status s = mgpu_loader_need(&l, embed->name, 2, (const int64_t[]){c.vocab, c.d_model}, &t5->embed);
    for (int i = 0; i < c.layers && s == MGPU_OK; i++)
        s = load_block(&l, nm, &c, i, &blocks[i]);
    if (s == MGPU_OK)
        s = mgpu_loader_need(&l, nm->final_norm, 1, (const int64_t[]){c.d_model}, &t5->final_norm);
    if (s != MGPU_OK) {
        mgpu_t5_free(t5);
        return s;
    }
    *out = t5;
    return MGPU_OK;
}

void mgpu_t5_free(mgpu_t5 *t5)
{
    if (!t5)
        return;
    free(t5->blocks);
    free(t5);
}

const mgpu_t5_config *mgpu_t5_get_config(const mgpu_t5 *t5)
{
    return &t5->cfg;
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
    if (r->status != MGPU_OK)
        return w;
    mgpu_error e = {0};
    w.data = r->src->data(r->src->context, t, &e);
    w.dtype = t->info.dtype;
    if (!w.data) {
        if (e.status == MGPU_OK)
            mgpu_error_set(&e, MGPU_ERR_IO, "T5: no data for tensor '%s'", t->info.name);
        r->status = e.status;
        if (r->err)
            *r->err = e;
    }
    return w;
}

/* y = x (scale W)^T, T5's linears have no bias (scale: scaled-fp8 files,
 * applied to the output; LoRAs add to the scaled weight). */
static void linear(run *r, const t5_block *b, slot j, const float *x, int64_t rows, int64_t in,
                   int64_t out, float *y)
{
    const mgpu_model_tensor *w = b->w[j];
    mgpu_wref wt = wref(r, w);
    if (r->status == MGPU_OK) {
        r->be->ops->linear(r->be, x, rows, in, wt, out, (mgpu_wref){NULL, MGPU_DTYPE_F32}, y);
        if (b->scale[j] != 1.0f)
            r->be->ops->scale(r->be, y, y, b->scale[j], rows * out);
        mgpu_lora_apply(r->src->lora, w, x, rows, in, y, out);
    }
}

static void rmsnorm(run *r, const mgpu_model_tensor *w, const float *x, float *y, int64_t rows,
                    int64_t dim, float eps)
{
    mgpu_wref wt = wref(r, w);
    if (r->status == MGPU_OK)
        r->be->ops->rmsnorm(r->be, x, y, rows, dim, wt, eps);
}

/* Device buffers of one forward. */
typedef struct scratch {
    float *x, *t, *q, *k, *v, *qh, *kh, *vh, *att, *gate, *up, *bias_rows, *bias;
    int32_t *ids, *buckets;
} scratch;

static void scratch_free(mgpu_backend *be, scratch *s)
{
    void *all[] = {s->x,  s->t,   s->q,  s->k,         s->v,    s->qh,  s->kh, s->vh,
                   s->att, s->gate, s->up, s->bias_rows, s->bias, s->ids, s->buckets};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            be->ops->free(be, all[i]);
}

static mgpu_status scratch_alloc(mgpu_backend *be, const mgpu_t5_config *c, int64_t n,
                                 scratch *s, mgpu_error *err)
{
    int64_t inner = c->heads * c->d_kv;
    struct {
        float **p;
        int64_t floats;
    } f[] = {
        {&s->x, n * c->d_model},  {&s->t, n * c->d_model},     {&s->q, n * inner},
        {&s->k, n * inner},       {&s->v, n * inner},          {&s->qh, n * inner},
        {&s->kh, n * inner},      {&s->vh, n * inner},         {&s->att, n * inner},
        {&s->gate, n * c->d_ff},  {&s->up, n * c->d_ff},       {&s->bias_rows, n * n * c->heads},
        {&s->bias, n * n * c->heads},
    };
    mgpu_status st = MGPU_OK;
    for (size_t i = 0; i < sizeof f / sizeof f[0] && st == MGPU_OK; i++)
        st = mgpu_backend_alloc_f32(be, f[i].floats, f[i].p, err);
    void *p = NULL;
    if (st == MGPU_OK)
        st = be->ops->alloc(be, (size_t)n * sizeof(int32_t), &p, err);
    s->ids = p;
    p = NULL;
    if (st == MGPU_OK)
        st = be->ops->alloc(be, (size_t)(n * n) * sizeof(int32_t), &p, err);
    s->buckets = p;
    return st;
}

/* The position bias [heads][n][n] from a [buckets][heads] table: one row
 * per (query, key) pair, then heads outermost. */
static void position_bias(run *r, const mgpu_t5_config *c, const mgpu_model_tensor *table,
                          int64_t n, scratch *s)
{
    mgpu_wref w = wref(r, table);
    if (r->status != MGPU_OK)
        return;
    r->be->ops->get_rows(r->be, w, c->heads, s->buckets, n * n, s->bias_rows);
    r->be->ops->transpose(r->be, s->bias_rows, n * n, c->heads, s->bias);
}

static void block_forward(run *r, const mgpu_t5_config *c, const t5_block *b, int64_t n,
                          scratch *s)
{
    mgpu_backend *be = r->be;
    int64_t d = c->d_model, inner = c->heads * c->d_kv, ff = c->d_ff;
    if (b->w[REL])
        position_bias(r, c, b->w[REL], n, s);
    rmsnorm(r, b->w[LN0], s->x, s->t, n, d, c->eps);
    linear(r, b, Q, s->t, n, d, inner, s->q);
    linear(r, b, K, s->t, n, d, inner, s->k);
    linear(r, b, V, s->t, n, d, inner, s->v);
    if (r->status != MGPU_OK)
        return;
    be->ops->tokens_to_heads(be, s->q, n, c->heads, c->d_kv, s->qh);
    be->ops->tokens_to_heads(be, s->k, n, c->heads, c->d_kv, s->kh);
    be->ops->tokens_to_heads(be, s->v, n, c->heads, c->d_kv, s->vh);
    /* T5 folds 1/sqrt(d_kv) into its trained weights: scale 1. */
    be->ops->attention(be, s->qh, s->kh, s->vh, s->att, c->heads, n, n, c->d_kv, 1.0f, s->bias,
                       false);
    be->ops->heads_to_tokens(be, s->att, n, c->heads, c->d_kv, s->q);
    linear(r, b, O, s->q, n, inner, d, s->t);
    if (r->status != MGPU_OK)
        return;
    be->ops->add(be, s->x, s->x, s->t, n * d);
    rmsnorm(r, b->w[LN1], s->x, s->t, n, d, c->eps);
    linear(r, b, GATE, s->t, n, d, ff, s->gate);
    linear(r, b, UP, s->t, n, d, ff, s->up);
    if (r->status != MGPU_OK)
        return;
    be->ops->unary(be, MGPU_UNARY_GELU_TANH, s->gate, n * ff);
    be->ops->mul(be, s->gate, s->gate, s->up, n * ff);
    linear(r, b, DOWN, s->gate, n, ff, d, s->t);
    if (r->status == MGPU_OK)
        be->ops->add(be, s->x, s->x, s->t, n * d);
}

mgpu_status mgpu_t5_forward(const mgpu_t5 *t5, mgpu_backend *be, const mgpu_tensor_source *src,
                            const int32_t *tokens, int64_t n_tokens, float *hidden,
                            mgpu_error *err)
{
    const mgpu_t5_config *c = &t5->cfg;
    int64_t n = n_tokens, d = c->d_model;
    if (n < 1)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "T5: no tokens to encode");
    /* The position bias is [heads][n][n] floats: keep its size sane. */
    if (n > 65536 || n * n * c->heads > ((int64_t)1 << 40) / (int64_t)sizeof(float))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "T5: %lld tokens are too many to encode",
                              (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab)
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                                  "T5: token %lld has id %ld, outside the vocabulary of %lld",
                                  (long long)i, (long)tokens[i], (long long)c->vocab);
    scratch s = {0};
    mgpu_status st = scratch_alloc(be, c, n, &s, err);
    int32_t *buckets = malloc((size_t)(n * n) * sizeof *buckets);
    if (st == MGPU_OK && !buckets)
        st = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "T5: out of memory");
    /* Row i (query), column j (key): bucket of j - i. */
    for (int64_t i = 0; st == MGPU_OK && i < n; i++)
        for (int64_t j = 0; j < n; j++)
            buckets[i * n + j] =
                mgpu_t5_relative_bucket(j - i, (int)c->buckets, (int)c->max_distance);
    if (st == MGPU_OK)
        st = mgpu_backend_upload(be, s.ids, tokens, (size_t)n * sizeof(int32_t), err);
    if (st == MGPU_OK)
        st = mgpu_backend_upload(be, s.buckets, buckets, (size_t)(n * n) * sizeof(int32_t), err);
    run r = {be, src, err, st};

    mgpu_wref embed = wref(&r, t5->embed);
    if (r.status == MGPU_OK)
        be->ops->get_rows(be, embed, d, s.ids, n, s.x);
    /* T5 v1.1's one table lives in block 0 and is turned into the bias
     * there; later blocks reuse it. UMT5 rebuilds it in every block. */
    for (int i = 0; i < c->layers && r.status == MGPU_OK; i++) {
        const t5_block *b = &t5->blocks[i];
        if (b->block >= 0)
            r.status = src->enter_block(src->context, b->block, err);
        if (r.status != MGPU_OK)
            break;
        block_forward(&r, c, b, n, &s);
        if (b->block >= 0)
            src->leave_block(src->context, b->block);
    }
    if (r.status == MGPU_OK)
        rmsnorm(&r, t5->final_norm, s.x, s.x, n, d, c->eps);
    if (r.status == MGPU_OK)
        r.status = mgpu_backend_download(be, hidden, s.x, (size_t)(n * d) * sizeof(float), err);
    /* Queued ops may still use the scratch: wait before freeing, keeping
     * the first error. */
    mgpu_error sync_err = {0};
    mgpu_status sync = be->ops->synchronize(be, &sync_err);
    if (r.status == MGPU_OK && sync != MGPU_OK) {
        r.status = sync;
        if (err)
            *err = sync_err;
    }
    scratch_free(be, &s);
    free(buckets);
    return r.status;
}
