/* See encoder_reference.h. Deliberately naive: clarity over speed. */
#include "models/encoder_reference.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A decoded weight: values and shape. */
typedef struct weight {
    double *v;
    int64_t rows, cols; /* cols = 1 for vectors */
} weight;

typedef struct ctx {
    const mgpu_model *m;
    int comp;
    char *err;
    size_t err_size;
    int failed;
} ctx;

static void fail(ctx *c, const char *fmt, ...)
{
    if (c->failed)
        return;
    c->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->err_size, fmt, ap);
    va_end(ap);
}

static const mgpu_model_tensor *lookup(ctx *c, const char *name)
{
    return mgpu_model_find_in(c->m, (size_t)c->comp, name);
}

/* Decodes tensor `name` (must exist unless optional) into doubles. */
static weight get(ctx *c, const char *name)
{
    weight w = {0};
    if (c->failed)
        return w;
    const mgpu_model_tensor *t = lookup(c, name);
    if (!t) {
        fail(c, "reference: no tensor '%s'", name);
        return w;
    }
    uint64_t n = t->info.n_elems;
    float *f = malloc(n * sizeof *f);
    w.v = malloc(n * sizeof *w.v);
    if (!f || !w.v || mgpu_dequantize(t->info.dtype, t->info.data, f, n) != MGPU_OK) {
        fail(c, "reference: cannot decode '%s'", name);
        free(f);
        free(w.v);
        w.v = NULL;
        return w;
    }
    for (uint64_t i = 0; i < n; i++)
        w.v[i] = f[i];
    free(f);
    w.rows = (int64_t)t->info.shape[0];
    w.cols = t->info.ndim == 2 ? (int64_t)t->info.shape[1] : 1;
    return w;
}

/* y[r][o] = sum_i x[r][i] * W[o][i] (+ b[o]) */
static void matmul(const double *x, int64_t rows, int64_t in, const weight *w, const weight *b,
                   double *y)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < w->rows; o++) {
            double acc = b ? b->v[o] : 0.0;
            for (int64_t i = 0; i < in; i++)
                acc += x[r * in + i] * w->v[o * in + i];
            y[r * w->rows + o] = acc;
        }
}

/* Multi-head attention over [n][heads*dh] rows: softmax(q.k * scale + bias)
 * v, with bias[h][i][j] (may be NULL) and an optional causal mask. */
static void attend(const double *q, const double *k, const double *v, int64_t n, int64_t heads,
                   int64_t dh, double scale, const double *bias, int causal, double *out)
{
    int64_t w = heads * dh;
    double *p = malloc((size_t)n * sizeof *p);
    for (int64_t h = 0; h < heads; h++)
        for (int64_t i = 0; i < n; i++) {
            double mx = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                if (causal && j > i) {
                    p[j] = -INFINITY;
                    continue;
                }
                double s = 0;
                for (int64_t e = 0; e < dh; e++)
                    s += q[i * w + h * dh + e] * k[j * w + h * dh + e];
                s *= scale;
                if (bias)
                    s += bias[(h * n + i) * n + j];
                p[j] = s;
                if (s > mx)
                    mx = s;
            }
            double sum = 0;
            for (int64_t j = 0; j < n; j++) {
                p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - mx);
                sum += p[j];
            }
            for (int64_t e = 0; e < dh; e++) {
                double acc = 0;
                for (int64_t j = 0; j < n; j++)
                    acc += p[j] / sum * v[j * w + h * dh + e];
                out[i * w + h * dh + e] = acc;
            }
        }
    free(p);
}

static void free_weights(weight *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(w[i].v);
}

/* ---- CLIP --------------------------------------------------------------- */

static void layer_norm(const double *x, int64_t rows, int64_t dim, const weight *g,
                       const weight *b, double *y)
{
    for (int64_t r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < dim; i++)
            mean += x[r * dim + i];
        mean /= (double)dim;
        for (int64_t i = 0; i < dim; i++)
            var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
        var /= (double)dim;
        double inv = 1.0 / sqrt(var + 1e-5);
        for (int64_t i = 0; i < dim; i++)
            y[r * dim + i] = (x[r * dim + i] - mean) * inv * g->v[i] + b->v[i];
    }
}

int clip_reference_forward(const mgpu_model *model, int component, const int32_t *tokens,
                           int64_t n, int64_t pooled_index, double *hidden, double *pooled,
                           double *penultimate, char *err, size_t err_size)
{
    ctx c = {model, component, err, err_size, 0};
    char name[256];
    weight tok = get(&c, "text_model.embeddings.token_embedding.weight");
    weight pos = get(&c, "text_model.embeddings.position_embedding.weight");
    if (c.failed) {
        free(tok.v);
        free(pos.v);
        return -1;
    }
    int64_t d = tok.cols, heads = d / 64;
    int layers = 0;
    for (;; layers++) {
        snprintf(name, sizeof name, "text_model.encoder.layers.%d.self_attn.q_proj.weight", layers);
        if (!lookup(&c, name))
            break;
    }
    double *x = calloc((size_t)(n * d), sizeof *x), *hn = calloc((size_t)(n * d), sizeof *hn);
    double *q = calloc((size_t)(n * d), sizeof *q), *k = calloc((size_t)(n * d), sizeof *k);
    double *v = calloc((size_t)(n * d), sizeof *v), *a = calloc((size_t)(n * d), sizeof *a);
    double *o = calloc((size_t)(n * d), sizeof *o), *mlp = NULL;
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < d; i++)
            x[t * d + i] = tok.v[(int64_t)tokens[t] * d + i] + pos.v[t * d + i];
    for (int l = 0; l < layers && !c.failed; l++) {
        static const char *const parts[] = {
            "layer_norm1.weight", "layer_norm1.bias",        "self_attn.q_proj.weight",
            "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
            "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.out_proj.weight",
            "self_attn.out_proj.bias", "layer_norm2.weight",    "layer_norm2.bias",
            "mlp.fc1.weight",        "mlp.fc1.bias",            "mlp.fc2.weight",
            "mlp.fc2.bias"};
        weight w[16] = {0};
        for (int i = 0; i < 16; i++) {
            snprintf(name, sizeof name, "text_model.encoder.layers.%d.%s", l, parts[i]);
            w[i] = get(&c, name);
        }
        if (c.failed) {
            free_weights(w, 16);
            break;
        }
        int64_t ffn = w[12].rows;
        if (!mlp)
            mlp = calloc((size_t)(n * ffn), sizeof *mlp);
        /* x = x + out_proj(attn(ln1(x))) */
        layer_norm(x, n, d, &w[0], &w[1], hn);
        matmul(hn, n, d, &w[2], &w[3], q);
        matmul(hn, n, d, &w[4], &w[5], k);
        matmul(hn, n, d, &w[6], &w[7], v);
        attend(q, k, v, n, heads, 64, 1.0 / 8.0, NULL, 1, a);
        matmul(a, n, d, &w[8], &w[9], o);
        for (int64_t i = 0; i < n * d; i++)
            x[i] += o[i];
        /* x = x + fc2(quick_gelu(fc1(ln2(x)))) */
        layer_norm(x, n, d, &w[10], &w[11], hn);
        matmul(hn, n, d, &w[12], &w[13], mlp);
        for (int64_t i = 0; i < n * ffn; i++)
            mlp[i] = mlp[i] / (1.0 + exp(-1.702 * mlp[i]));
        matmul(mlp, n, ffn, &w[14], &w[15], o);
        for (int64_t i = 0; i < n * d; i++)
            x[i] += o[i];
        if (penultimate && l == layers - 2)
            memcpy(penultimate, x, (size_t)(n * d) * sizeof *x);
        free_weights(w, 16);
    }
    weight fg = get(&c, "text_model.final_layer_norm.weight");
    weight fb = get(&c, "text_model.final_layer_norm.bias");
    if (!c.failed) {
        layer_norm(x, n, d, &fg, &fb, hidden);
        if (pooled)
            memcpy(pooled, hidden + pooled_index * d, (size_t)d * sizeof *hidden);
    }
    free(fg.v);
    free(fb.v);
    free(tok.v);
    free(pos.v);
    free(x);
    free(hn);
    free(q);
    free(k);
    free(v);
    free(a);
    free(o);
    free(mlp);
    return c.failed ? -1 : 0;
}

/* ---- T5 ----------------------------------------------------------------- */

int t5_reference_bucket(int64_t relative_position, int num_buckets, int max_distance)
{
    /* modeling_t5.py, bidirectional branch, step by step. */
    int ret = 0;
    num_buckets /= 2;
    if (relative_position > 0)
        ret += num_buckets;
    int64_t rp = llabs(relative_position);
    int max_exact = num_buckets / 2;
    if (rp < max_exact)
        return ret + (int)rp;
    int64_t large = max_exact + (int64_t)(log((double)rp / max_exact) /
                                          log((double)max_distance / max_exact) *
                                          (num_buckets - max_exact));
    if (large > num_buckets - 1)
        large = num_buckets - 1;
    return ret + (int)large;
}

/* A T5 tensor by its Hugging Face name, or the llama.cpp name it maps to. */
static weight t5_get(ctx *c, const char *hf)
{
    if (lookup(c, hf) || c->failed)
        return get(c, hf);
    static const char *const map[][2] = {
        {"layer.0.SelfAttention.q.", "attn_q."},
        {"layer.0.SelfAttention.k.", "attn_k."},
        {"layer.0.SelfAttention.v.", "attn_v."},
        {"layer.0.SelfAttention.o.", "attn_o."},
        {"layer.0.SelfAttention.relative_attention_bias.", "attn_rel_b."},
        {"layer.0.layer_norm.", "attn_norm."},
        {"layer.1.DenseReluDense.wi_0.", "ffn_gate."},
        {"layer.1.DenseReluDense.wi_1.", "ffn_up."},
        {"layer.1.DenseReluDense.wo.", "ffn_down."},
        {"layer.1.layer_norm.", "ffn_norm."},
    };
    char g[256];
    int block;
    char rest[200];
    if (strcmp(hf, "shared.weight") == 0)
        return get(c, "token_embd.weight");
    if (strcmp(hf, "encoder.final_layer_norm.weight") == 0)
        return get(c, "enc.output_norm.weight");
    if (sscanf(hf, "encoder.block.%d.%199s", &block, rest) == 2)
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
            size_t len = strlen(map[i][0]);
            if (strncmp(rest, map[i][0], len) == 0) {
                snprintf(g, sizeof g, "enc.blk.%d.%s%s", block, map[i][1], rest + len);
                return get(c, g);
            }
        }
    return get(c, hf); /* fails, naming the HF name */
}

static void rms_norm(const double *x, int64_t rows, int64_t dim, const weight *g, double *y)
{
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t i = 0; i < dim; i++)
            ss += x[r * dim + i] * x[r * dim + i];
        double inv = 1.0 / sqrt(ss / (double)dim + 1e-6);
        for (int64_t i = 0; i < dim; i++)
            y[r * dim + i] = g->v[i] * (x[r * dim + i] * inv);
    }
}

int t5_reference_forward(const mgpu_model *model, int component, const int32_t *tokens, int64_t n,
                         double *hidden, char *err, size_t err_size)
{
    ctx c = {model, component, err, err_size, 0};
    char name[256];
    weight emb = lookup(&c, "shared.weight") || lookup(&c, "token_embd.weight")
                     ? t5_get(&c, "shared.weight")
                     : get(&c, "encoder.embed_tokens.weight");
    if (c.failed)
        return -1;
    int64_t d = emb.cols;
    int layers = 0;
    for (;; layers++) {
        snprintf(name, sizeof name, "encoder.block.%d.layer.0.SelfAttention.q.weight", layers);
        char g[64];
        snprintf(g, sizeof g, "enc.blk.%d.attn_q.weight", layers);
        if (!lookup(&c, name) && !lookup(&c, g))
            break;
    }
    double *x = calloc((size_t)(n * d), sizeof *x), *hn = calloc((size_t)(n * d), sizeof *hn);
    double *o = calloc((size_t)(n * d), sizeof *o);
    double *q = NULL, *k = NULL, *v = NULL, *a = NULL, *g0 = NULL, *g1 = NULL, *bias = NULL;
    int64_t heads = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < d; i++)
            x[t * d + i] = emb.v[(int64_t)tokens[t] * d + i];
    for (int l = 0; l < layers && !c.failed; l++) {
        static const char *const parts[] = {
            "layer.0.layer_norm.weight",          "layer.0.SelfAttention.q.weight",
            "layer.0.SelfAttention.k.weight",     "layer.0.SelfAttention.v.weight",
            "layer.0.SelfAttention.o.weight",     "layer.1.layer_norm.weight",
            "layer.1.DenseReluDense.wi_0.weight", "layer.1.DenseReluDense.wi_1.weight",
            "layer.1.DenseReluDense.wo.weight"};
        weight w[10] = {0};
        for (int i = 0; i < 9; i++) {
            snprintf(name, sizeof name, "encoder.block.%d.%s", l, parts[i]);
            w[i] = t5_get(&c, name);
        }
        /* Block 0 always has the table; in UMT5 every block does. */
        snprintf(name, sizeof name,
                 "encoder.block.%d.layer.0.SelfAttention.relative_attention_bias.weight", l);
        char g[64];
        snprintf(g, sizeof g, "enc.blk.%d.attn_rel_b.weight", l);
        if (l == 0 || lookup(&c, name) || lookup(&c, g))
            w[9] = t5_get(&c, name);
        if (c.failed) {
            free_weights(w, 10);
            break;
        }
        if (w[9].v) {
            heads = w[9].cols;
            free(bias);
            bias = malloc((size_t)(heads * n * n) * sizeof *bias);
            for (int64_t h = 0; h < heads; h++)
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = 0; j < n; j++) /* memory - context position */
                        bias[(h * n + i) * n + j] =
                            w[9].v[t5_reference_bucket(j - i, (int)w[9].rows, 128) * heads + h];
        }
        int64_t inner = w[1].rows, dkv = inner / heads, ff = w[6].rows;
        if (!q) {
            q = calloc((size_t)(n * inner), sizeof *q);
            k = calloc((size_t)(n * inner), sizeof *k);
            v = calloc((size_t)(n * inner), sizeof *v);
            a = calloc((size_t)(n * inner), sizeof *a);
            g0 = calloc((size_t)(n * ff), sizeof *g0);
            g1 = calloc((size_t)(n * ff), sizeof *g1);
        }
        rms_norm(x, n, d, &w[0], hn);
        matmul(hn, n, d, &w[1], NULL, q);
        matmul(hn, n, d, &w[2], NULL, k);
        matmul(hn, n, d, &w[3], NULL, v);
        attend(q, k, v, n, heads, dkv, 1.0, bias, 0, a); /* no 1/sqrt(d) in T5 */
        matmul(a, n, inner, &w[4], NULL, o);
        for (int64_t i = 0; i < n * d; i++)
            x[i] += o[i];
        rms_norm(x, n, d, &w[5], hn);
        matmul(hn, n, d, &w[6], NULL, g0);
        matmul(hn, n, d, &w[7], NULL, g1);
        for (int64_t i = 0; i < n * ff; i++) {
            double z = g0[i];
            const double pi = 3.14159265358979323846;
            double gelu = 0.5 * z * (1.0 + tanh(sqrt(2.0 / pi) * (z + 0.044715 * z * z * z)));
            g0[i] = gelu * g1[i];
        }
        matmul(g0, n, ff, &w[8], NULL, o);
        for (int64_t i = 0; i < n * d; i++)
            x[i] += o[i];
        free_weights(w, 10);
    }
    weight fin = t5_get(&c, "encoder.final_layer_norm.weight");
    if (!c.failed)
        rms_norm(x, n, d, &fin, hidden);
    free(fin.v);
    free(emb.v);
    free(x);
    free(hn);
    free(o);
    free(q);
    free(k);
    free(v);
    free(a);
    free(g0);
    free(g1);
    free(bias);
    return c.failed ? -1 : 0;
}

/* ---- test support ------------------------------------------------------- */

static void violation(checking_source *cs, const char *fmt, ...)
{
    if (cs->violations++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cs->first_violation, sizeof cs->first_violation, fmt, ap);
        va_end(ap);
    }
}

static mgpu_status check_enter(void *context, int block, mgpu_error *err)
{
    (void)err;
    checking_source *cs = context;
    if (cs->entered != -1)
        violation(cs, "enter %d inside block %d", block, cs->entered);
    if (block < 0 || (size_t)block >= mgpu_model_block_count(cs->model))
        violation(cs, "enter of block %d, not in the model", block);
    cs->entered = block;
    cs->enters++;
    return MGPU_OK;
}

static void check_leave(void *context, int block)
{
    checking_source *cs = context;
    if (cs->entered != block)
        violation(cs, "leave %d while in block %d", block, cs->entered);
    cs->entered = -1;
    cs->leaves++;
}

static const void *check_data(void *context, const mgpu_model_tensor *t, mgpu_error *err)
{
    (void)err;
    checking_source *cs = context;
    int block = mgpu_model_module_at(cs->model, t->module)->block;
    if (block >= 0 && block != cs->entered)
        violation(cs, "tensor '%s' of block %d asked for in block %d", t->name, block,
                  cs->entered);
    return t->info.data;
}

mgpu_tensor_source checking_source_make(checking_source *cs, const mgpu_model *model)
{
    memset(cs, 0, sizeof *cs);
    cs->model = model;
    cs->entered = -1;
    return (mgpu_tensor_source){cs, check_enter, check_leave, check_data, NULL};
}
