/* Architecture tables for the synthetic checkpoint writer.
 *
 * Each architecture is a small config struct (one for full scale, one for
 * tiny scale) and a builder that walks the model the way its PyTorch module
 * tree does, emitting "<prefix>.weight"/"<prefix>.bias" with row-major
 * shapes. The finished range is sorted by name, which is the order the
 * safetensors library stores a single-dtype file in.
 *
 * Sources for names and shapes: ComfyUI (comfy/ldm/flux, comfy/clip_model.py,
 * comfy/text_encoders/t5.py, comfy/ldm/modules/diffusionmodules/{model,
 * openaimodel,mmdit}.py, comfy/ldm/wan/model.py, comfy/ldm/qwen_image/
 * model.py, comfy/model_detection.py) and the Hugging Face configs. Where a
 * published file differs from the module tree, the file wins: clip_l.safetensors
 * has no text_projection, t5xxl_fp16.safetensors carries the tied copy
 * encoder.embed_tokens.weight beside shared.weight (both found by rebuilding
 * the safetensors header and matching the published byte sizes exactly).
 *
 * Tiny configs (the values a runtime needs as overrides to load them):
 *   flux-dev/-schnell  hidden 256, 2 heads x 128, mlp 1024 (ratio 4),
 *                      in_channels 64 (16 x 2x2 patch), out 64, context 256,
 *                      vec 256, 2 double + 2 single blocks, time/guidance 256
 *   clip-l             hidden 256, 4 heads x 64, ffn 1024, 2 layers,
 *                      vocab 1024, 77 positions, no text_projection
 *   clip-g             as clip-l tiny, plus text_projection [256,256]
 *   t5-xxl             d_model 256, 32 heads x d_kv 8 (inner 256), d_ff 512,
 *                      2 blocks, vocab 1024, 32 relative buckets
 *   umt5-xxl           as t5-xxl tiny, relative bias in every block, no tied copy
 *   vae-flux           ch 32, ch_mult 1,2,4,4, 2 res blocks, z 16
 *   vae-sd             ch 32, ch_mult 1,2,4,4, 2 res blocks, z 4, quant convs
 *   sd1-unet           model_channels 32, mult 1,2,4,4, depth 1 at levels
 *                      0-2, context 64, time embed 128
 *   sdxl-unet          model_channels 32, mult 1,2,4, depth 0,1,2, middle 2,
 *                      context 128, adm_in 256, linear proj_in/out
 *   sd3                hidden 128 (depth 2 x 64), 2 heads x 64, mlp 512,
 *                      in/out 16, patch 2, context 256, adm 256, pos 16x16
 *   wan                dim 256, 2 heads x 128, ffn 512, 2 layers, text 256,
 *                      freq 256, in/out 16, patch 1x2x2
 *   qwen-image         dim 128, 1 head x 128, mlp 512, 2 layers, joint 256,
 *                      in 64, out 16, patch 2
 * Every tiny 2-D tensor's row length is a multiple of 32 (GGUF block size),
 * most of 256 (k-quants); the exceptions are FLUX img_in (64 = in_channels),
 * the T5/UMT5 relative bias (32 heads) and the UNet, SD3 and qwen-image rows
 * of 32..128. Tiny sizes in f32: FLUX 29 MB and the VAEs 21 MB (the dims
 * above are what the tests need; FLUX at hidden 256 cannot be smaller), the
 * UNets 33-34 MB (GroupNorm(32) floors model_channels at 32), the rest under
 * 10 MB. */
#include "synth_arch.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct builder {
    synth_list *list;
    bool ok;
} builder;

/* ---- list plumbing ---------------------------------------------------- */

static bool reserve(synth_list *l, size_t need)
{
    if (need <= l->capacity)
        return true;
    size_t cap = l->capacity ? l->capacity : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / sizeof(synth_tensor))
            return false;
        cap *= 2;
    }
    synth_tensor *items = realloc(l->items, cap * sizeof *items);
    if (!items)
        return false;
    l->items = items;
    l->capacity = cap;
    return true;
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static void tensor(builder *b, int ndim, const int64_t *dims, const char *fmt, ...)
{
    if (!b->ok)
        return;
    if (ndim < 1 || ndim > SYNTH_MAX_DIMS || !reserve(b->list, b->list->count + 1)) {
        b->ok = false;
        return;
    }
    synth_tensor *t = &b->list->items[b->list->count];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof t->name) {
        b->ok = false;
        return;
    }
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = dims[i];
    b->list->count++;
}

/* Formats a module prefix into buf (SYNTH_NAME_MAX bytes). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static const char *pf(builder *b, char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, SYNTH_NAME_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= SYNTH_NAME_MAX)
        b->ok = false;
    return buf;
}

#define DIMS(...) ((const int64_t[]){__VA_ARGS__})

/* ---- common modules --------------------------------------------------- */

/* nn.Linear: weight [out, in], optional bias [out]. */
static void linear(builder *b, const char *p, int64_t out, int64_t in, bool bias)
{
    tensor(b, 2, DIMS(out, in), "%s.weight", p);
    if (bias)
        tensor(b, 1, DIMS(out), "%s.bias", p);
}

/* LayerNorm / GroupNorm with affine parameters. */
static void norm_wb(builder *b, const char *p, int64_t c)
{
    tensor(b, 1, DIMS(c), "%s.weight", p);
    tensor(b, 1, DIMS(c), "%s.bias", p);
}

/* RMSNorm (and T5's bias-free LayerNorm): weight only. */
static void norm_w(builder *b, const char *p, int64_t c)
{
    tensor(b, 1, DIMS(c), "%s.weight", p);
}

/* nn.Conv2d with a square kernel: weight [out, in, k, k], bias [out]. */
static void conv2d(builder *b, const char *p, int64_t out, int64_t in, int64_t k)
{
    tensor(b, 4, DIMS(out, in, k, k), "%s.weight", p);
    tensor(b, 1, DIMS(out), "%s.bias", p);
}

/* ---- FLUX.1 (BFL flux1-dev/schnell.safetensors) ----------------------- */

typedef struct flux_cfg {
    int64_t hidden, mlp, head_dim, in_ch, out_ch, ctx, vec;
    int depth, depth_single;
} flux_cfg;

static const flux_cfg flux_full = {3072, 12288, 128, 64, 64, 4096, 768, 19, 38};
static const flux_cfg flux_tiny = {256, 1024, 128, 64, 64, 256, 256, 2, 2};

static void flux_mlp_embedder(builder *b, const char *p, int64_t in, int64_t hidden)
{
    char q[SYNTH_NAME_MAX];
    linear(b, pf(b, q, "%s.in_layer", p), hidden, in, true);
    linear(b, pf(b, q, "%s.out_layer", p), hidden, hidden, true);
}

static void build_flux(builder *b, const flux_cfg *c, bool guidance)
{
    char p[SYNTH_NAME_MAX];
    const int64_t h = c->hidden;
    linear(b, "img_in", h, c->in_ch, true);
    flux_mlp_embedder(b, "time_in", 256, h); /* sinusoidal timestep dim is fixed at 256 */
    flux_mlp_embedder(b, "vector_in", c->vec, h);
    if (guidance)
        flux_mlp_embedder(b, "guidance_in", 256, h);
    linear(b, "txt_in", h, c->ctx, true);

    static const char *const sides[] = {"img", "txt"};
    for (int i = 0; i < c->depth; i++) {
        for (int s = 0; s < 2; s++) {
            const char *sd = sides[s];
            linear(b, pf(b, p, "double_blocks.%d.%s_mod.lin", i, sd), 6 * h, h, true);
            linear(b, pf(b, p, "double_blocks.%d.%s_attn.qkv", i, sd), 3 * h, h, true);
            tensor(b, 1, DIMS(c->head_dim), "double_blocks.%d.%s_attn.norm.query_norm.scale", i,
                   sd);
            tensor(b, 1, DIMS(c->head_dim), "double_blocks.%d.%s_attn.norm.key_norm.scale", i,
                   sd);
            linear(b, pf(b, p, "double_blocks.%d.%s_attn.proj", i, sd), h, h, true);
            linear(b, pf(b, p, "double_blocks.%d.%s_mlp.0", i, sd), c->mlp, h, true);
            linear(b, pf(b, p, "double_blocks.%d.%s_mlp.2", i, sd), h, c->mlp, true);
        }
    }
    for (int i = 0; i < c->depth_single; i++) {
        /* linear1 fuses qkv and the MLP input; linear2 fuses proj and MLP output. */
        linear(b, pf(b, p, "single_blocks.%d.linear1", i), 3 * h + c->mlp, h, true);
        linear(b, pf(b, p, "single_blocks.%d.linear2", i), h, h + c->mlp, true);
        tensor(b, 1, DIMS(c->head_dim), "single_blocks.%d.norm.query_norm.scale", i);
        tensor(b, 1, DIMS(c->head_dim), "single_blocks.%d.norm.key_norm.scale", i);
        linear(b, pf(b, p, "single_blocks.%d.modulation.lin", i), 3 * h, h, true);
    }
    linear(b, "final_layer.linear", c->out_ch, h, true);
    linear(b, "final_layer.adaLN_modulation.1", 2 * h, h, true);
}

static void arch_flux_dev(builder *b, synth_scale s)
{
    build_flux(b, s == SYNTH_SCALE_FULL ? &flux_full : &flux_tiny, true);
}

static void arch_flux_schnell(builder *b, synth_scale s)
{
    build_flux(b, s == SYNTH_SCALE_FULL ? &flux_full : &flux_tiny, false);
}

/* ---- CLIP text encoders (Hugging Face CLIPTextModel naming) ----------- */

typedef struct clip_cfg {
    int64_t vocab, positions, hidden, ffn;
    int layers;
    bool projection;
} clip_cfg;

/* ViT-L/14 text tower: 12 heads x 64. clip_l.safetensors has no projection. */
static const clip_cfg clip_l_full = {49408, 77, 768, 3072, 12, false};
static const clip_cfg clip_l_tiny = {1024, 77, 256, 1024, 2, false};
/* OpenCLIP ViT-bigG/14 text tower: 20 heads x 64, bias-free projection. */
static const clip_cfg clip_g_full = {49408, 77, 1280, 5120, 32, true};
static const clip_cfg clip_g_tiny = {1024, 77, 256, 1024, 2, true};

static void build_clip(builder *b, const clip_cfg *c)
{
    char p[SYNTH_NAME_MAX];
    const int64_t d = c->hidden;
    tensor(b, 2, DIMS(c->vocab, d), "text_model.embeddings.token_embedding.weight");
    tensor(b, 2, DIMS(c->positions, d), "text_model.embeddings.position_embedding.weight");
    static const char *const projs[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int i = 0; i < c->layers; i++) {
        for (int j = 0; j < 4; j++) {
            pf(b, p, "text_model.encoder.layers.%d.self_attn.%s", i, projs[j]);
            linear(b, p, d, d, true);
        }
        norm_wb(b, pf(b, p, "text_model.encoder.layers.%d.layer_norm1", i), d);
        linear(b, pf(b, p, "text_model.encoder.layers.%d.mlp.fc1", i), c->ffn, d, true);
        linear(b, pf(b, p, "text_model.encoder.layers.%d.mlp.fc2", i), d, c->ffn, true);
        norm_wb(b, pf(b, p, "text_model.encoder.layers.%d.layer_norm2", i), d);
    }
    norm_wb(b, "text_model.final_layer_norm", d);
    if (c->projection)
        linear(b, "text_projection", d, d, false);
}

static void arch_clip_l(builder *b, synth_scale s)
{
    build_clip(b, s == SYNTH_SCALE_FULL ? &clip_l_full : &clip_l_tiny);
}

static void arch_clip_g(builder *b, synth_scale s)
{
    build_clip(b, s == SYNTH_SCALE_FULL ? &clip_g_full : &clip_g_tiny);
}

/* ---- T5 / UMT5 encoders (Hugging Face T5EncoderModel naming) ---------- */

typedef struct t5_cfg {
    int64_t vocab, d_model, inner, heads, d_ff, buckets;
    int layers;
    bool rel_every_block; /* UMT5: each block has its own relative bias */
    bool tied_copy;       /* file also stores encoder.embed_tokens.weight */
} t5_cfg;

/* v1.1 XXL: 64 heads x d_kv 64, gated-GELU FFN (wi_0, wi_1). */
static const t5_cfg t5_full = {32128, 4096, 4096, 64, 10240, 32, 24, false, true};
/* 32 tiny heads so relative_attention_bias [32, heads] keeps 32-wide rows. */
static const t5_cfg t5_tiny = {1024, 256, 256, 32, 512, 32, 2, false, true};
static const t5_cfg umt5_full = {256384, 4096, 4096, 64, 10240, 32, 24, true, false};
static const t5_cfg umt5_tiny = {1024, 256, 256, 32, 512, 32, 2, true, false};

static void build_t5(builder *b, const t5_cfg *c)
{
    char p[SYNTH_NAME_MAX];
    const int64_t d = c->d_model;
    tensor(b, 2, DIMS(c->vocab, d), "shared.weight");
    if (c->tied_copy)
        tensor(b, 2, DIMS(c->vocab, d), "encoder.embed_tokens.weight");
    for (int i = 0; i < c->layers; i++) {
        linear(b, pf(b, p, "encoder.block.%d.layer.0.SelfAttention.q", i), c->inner, d, false);
        linear(b, pf(b, p, "encoder.block.%d.layer.0.SelfAttention.k", i), c->inner, d, false);
        linear(b, pf(b, p, "encoder.block.%d.layer.0.SelfAttention.v", i), c->inner, d, false);
        linear(b, pf(b, p, "encoder.block.%d.layer.0.SelfAttention.o", i), d, c->inner, false);
        if (i == 0 || c->rel_every_block)
            tensor(b, 2, DIMS(c->buckets, c->heads),
                   "encoder.block.%d.layer.0.SelfAttention.relative_attention_bias.weight", i);
        norm_w(b, pf(b, p, "encoder.block.%d.layer.0.layer_norm", i), d);
        linear(b, pf(b, p, "encoder.block.%d.layer.1.DenseReluDense.wi_0", i), c->d_ff, d, false);
        linear(b, pf(b, p, "encoder.block.%d.layer.1.DenseReluDense.wi_1", i), c->d_ff, d, false);
        linear(b, pf(b, p, "encoder.block.%d.layer.1.DenseReluDense.wo", i), d, c->d_ff, false);
        norm_w(b, pf(b, p, "encoder.block.%d.layer.1.layer_norm", i), d);
    }
    norm_w(b, "encoder.final_layer_norm", d);
}

static void arch_t5(builder *b, synth_scale s)
{
    build_t5(b, s == SYNTH_SCALE_FULL ? &t5_full : &t5_tiny);
}

static void arch_umt5(builder *b, synth_scale s)
{
    build_t5(b, s == SYNTH_SCALE_FULL ? &umt5_full : &umt5_tiny);
}

/* ---- LDM autoencoders (encoder.* / decoder.*) ------------------------- */

typedef struct vae_cfg {
    int64_t ch, z, img_ch;
    int64_t mult[4];
    int levels, res_blocks;
    bool quant_convs; /* SD has quant_conv/post_quant_conv; FLUX's ae does not */
} vae_cfg;

static const vae_cfg vae_flux_full = {128, 16, 3, {1, 2, 4, 4}, 4, 2, false};
static const vae_cfg vae_flux_tiny = {32, 16, 3, {1, 2, 4, 4}, 4, 2, false};
static const vae_cfg vae_sd_full = {128, 4, 3, {1, 2, 4, 4}, 4, 2, true};
static const vae_cfg vae_sd_tiny = {32, 4, 3, {1, 2, 4, 4}, 4, 2, true};

static void vae_resnet(builder *b, const char *p, int64_t in, int64_t out)
{
    char q[SYNTH_NAME_MAX];
    norm_wb(b, pf(b, q, "%s.norm1", p), in);
    conv2d(b, pf(b, q, "%s.conv1", p), out, in, 3);
    norm_wb(b, pf(b, q, "%s.norm2", p), out);
    conv2d(b, pf(b, q, "%s.conv2", p), out, out, 3);
    if (in != out)
        conv2d(b, pf(b, q, "%s.nin_shortcut", p), out, in, 1);
}

static void vae_attn(builder *b, const char *p, int64_t c)
{
    char q[SYNTH_NAME_MAX];
    norm_wb(b, pf(b, q, "%s.norm", p), c);
    conv2d(b, pf(b, q, "%s.q", p), c, c, 1);
    conv2d(b, pf(b, q, "%s.k", p), c, c, 1);
    conv2d(b, pf(b, q, "%s.v", p), c, c, 1);
    conv2d(b, pf(b, q, "%s.proj_out", p), c, c, 1);
}

static void vae_mid(builder *b, const char *side, int64_t c)
{
    char p[SYNTH_NAME_MAX];
    vae_resnet(b, pf(b, p, "%s.mid.block_1", side), c, c);
    vae_attn(b, pf(b, p, "%s.mid.attn_1", side), c);
    vae_resnet(b, pf(b, p, "%s.mid.block_2", side), c, c);
}

static void build_vae(builder *b, const vae_cfg *c)
{
    char p[SYNTH_NAME_MAX];
    const int last = c->levels - 1;

    conv2d(b, "encoder.conv_in", c->ch, c->img_ch, 3);
    int64_t cur = c->ch;
    for (int l = 0; l < c->levels; l++) {
        const int64_t out = c->ch * c->mult[l];
        for (int r = 0; r < c->res_blocks; r++) {
            vae_resnet(b, pf(b, p, "encoder.down.%d.block.%d", l, r), cur, out);
            cur = out;
        }
        if (l != last)
            conv2d(b, pf(b, p, "encoder.down.%d.downsample.conv", l), cur, cur, 3);
    }
    vae_mid(b, "encoder", cur);
    norm_wb(b, "encoder.norm_out", cur);
    conv2d(b, "encoder.conv_out", 2 * c->z, cur, 3); /* mean and logvar */

    if (c->quant_convs) {
        conv2d(b, "quant_conv", 2 * c->z, 2 * c->z, 1);
        conv2d(b, "post_quant_conv", c->z, c->z, 1);
    }

    cur = c->ch * c->mult[last];
    conv2d(b, "decoder.conv_in", cur, c->z, 3);
    vae_mid(b, "decoder", cur);
    for (int l = last; l >= 0; l--) {
        const int64_t out = c->ch * c->mult[l];
        for (int r = 0; r <= c->res_blocks; r++) { /* the decoder has one more per level */
            vae_resnet(b, pf(b, p, "decoder.up.%d.block.%d", l, r), cur, out);
            cur = out;
        }
        if (l != 0)
            conv2d(b, pf(b, p, "decoder.up.%d.upsample.conv", l), cur, cur, 3);
    }
    norm_wb(b, "decoder.norm_out", cur);
    conv2d(b, "decoder.conv_out", c->img_ch, cur, 3);
}

static void arch_vae_flux(builder *b, synth_scale s)
{
    build_vae(b, s == SYNTH_SCALE_FULL ? &vae_flux_full : &vae_flux_tiny);
}

static void arch_vae_sd(builder *b, synth_scale s)
{
    build_vae(b, s == SYNTH_SCALE_FULL ? &vae_sd_full : &vae_sd_tiny);
}

/* ---- LDM UNets (openaimodel.py naming, model.diffusion_model.*) ------- */

typedef struct unet_cfg {
    int64_t ch, ctx, adm, in_ch, out_ch;
    int64_t mult[4];
    int levels, res_blocks;
    int depth[4]; /* transformer blocks per attention at each level; 0 = none */
    int mid_depth;
    bool linear_proj; /* SDXL: proj_in/proj_out are Linear, SD1: 1x1 Conv2d */
} unet_cfg;

static const unet_cfg sd1_full = {320, 768, 0, 4, 4, {1, 2, 4, 4}, 4, 2, {1, 1, 1, 0}, 1, false};
static const unet_cfg sd1_tiny = {32, 64, 0, 4, 4, {1, 2, 4, 4}, 4, 2, {1, 1, 1, 0}, 1, false};
static const unet_cfg sdxl_full = {320, 2048, 2816, 4, 4, {1, 2, 4}, 3, 2, {0, 2, 10}, 10, true};
static const unet_cfg sdxl_tiny = {32, 128, 256, 4, 4, {1, 2, 4}, 3, 2, {0, 1, 2}, 2, true};

static void unet_resblock(builder *b, const char *p, int64_t in, int64_t out, int64_t emb)
{
    char q[SYNTH_NAME_MAX];
    norm_wb(b, pf(b, q, "%s.in_layers.0", p), in);
    conv2d(b, pf(b, q, "%s.in_layers.2", p), out, in, 3);
    linear(b, pf(b, q, "%s.emb_layers.1", p), out, emb, true);
    norm_wb(b, pf(b, q, "%s.out_layers.0", p), out);
    conv2d(b, pf(b, q, "%s.out_layers.3", p), out, out, 3);
    if (in != out)
        conv2d(b, pf(b, q, "%s.skip_connection", p), out, in, 1);
}

static void unet_transformer(builder *b, const unet_cfg *c, const char *p, int64_t ch, int depth)
{
    char q[SYNTH_NAME_MAX];
    norm_wb(b, pf(b, q, "%s.norm", p), ch);
    if (c->linear_proj)
        linear(b, pf(b, q, "%s.proj_in", p), ch, ch, true);
    else
        conv2d(b, pf(b, q, "%s.proj_in", p), ch, ch, 1);
    for (int d = 0; d < depth; d++) {
        char t[SYNTH_NAME_MAX];
        pf(b, t, "%s.transformer_blocks.%d", p, d);
        linear(b, pf(b, q, "%s.attn1.to_q", t), ch, ch, false);
        linear(b, pf(b, q, "%s.attn1.to_k", t), ch, ch, false);
        linear(b, pf(b, q, "%s.attn1.to_v", t), ch, ch, false);
        linear(b, pf(b, q, "%s.attn1.to_out.0", t), ch, ch, true);
        linear(b, pf(b, q, "%s.ff.net.0.proj", t), 8 * ch, ch, true); /* GEGLU: 2 x 4ch */
        linear(b, pf(b, q, "%s.ff.net.2", t), ch, 4 * ch, true);
        linear(b, pf(b, q, "%s.attn2.to_q", t), ch, ch, false);
        linear(b, pf(b, q, "%s.attn2.to_k", t), ch, c->ctx, false);
        linear(b, pf(b, q, "%s.attn2.to_v", t), ch, c->ctx, false);
        linear(b, pf(b, q, "%s.attn2.to_out.0", t), ch, ch, true);
        norm_wb(b, pf(b, q, "%s.norm1", t), ch);
        norm_wb(b, pf(b, q, "%s.norm2", t), ch);
        norm_wb(b, pf(b, q, "%s.norm3", t), ch);
    }
    if (c->linear_proj)
        linear(b, pf(b, q, "%s.proj_out", p), ch, ch, true);
    else
        conv2d(b, pf(b, q, "%s.proj_out", p), ch, ch, 1);
}

static void build_unet(builder *b, const unet_cfg *c)
{
    char p[SYNTH_NAME_MAX];
    const int64_t emb = 4 * c->ch;
    linear(b, "time_embed.0", emb, c->ch, true);
    linear(b, "time_embed.2", emb, emb, true);
    if (c->adm) {
        linear(b, "label_emb.0.0", emb, c->adm, true);
        linear(b, "label_emb.0.2", emb, emb, true);
    }

    /* Channel counts of every input block, consumed in reverse by the skips;
     * the configs here need at most 1 + 4 levels x 3 = 13. */
    int64_t skips[32];
    int nskips = 0;
    conv2d(b, "input_blocks.0.0", c->ch, c->in_ch, 3);
    skips[nskips++] = c->ch;
    int64_t cur = c->ch;
    int idx = 1;
    for (int l = 0; l < c->levels; l++) {
        const int64_t out = c->ch * c->mult[l];
        for (int r = 0; r < c->res_blocks; r++, idx++) {
            unet_resblock(b, pf(b, p, "input_blocks.%d.0", idx), cur, out, emb);
            cur = out;
            if (c->depth[l])
                unet_transformer(b, c, pf(b, p, "input_blocks.%d.1", idx), cur, c->depth[l]);
            skips[nskips++] = cur;
        }
        if (l != c->levels - 1) {
            conv2d(b, pf(b, p, "input_blocks.%d.0.op", idx), cur, cur, 3);
            skips[nskips++] = cur;
            idx++;
        }
    }

    unet_resblock(b, "middle_block.0", cur, cur, emb);
    unet_transformer(b, c, "middle_block.1", cur, c->mid_depth);
    unet_resblock(b, "middle_block.2", cur, cur, emb);

    idx = 0;
    for (int l = c->levels - 1; l >= 0; l--) {
        const int64_t out = c->ch * c->mult[l];
        for (int r = 0; r <= c->res_blocks; r++, idx++) {
            unet_resblock(b, pf(b, p, "output_blocks.%d.0", idx), cur + skips[--nskips], out, emb);
            cur = out;
            int sub = 1; /* the upsampler follows the attention, if any */
            if (c->depth[l]) {
                pf(b, p, "output_blocks.%d.%d", idx, sub++);
                unet_transformer(b, c, p, cur, c->depth[l]);
            }
            if (l != 0 && r == c->res_blocks)
                conv2d(b, pf(b, p, "output_blocks.%d.%d.conv", idx, sub), cur, cur, 3);
        }
    }
    norm_wb(b, "out.0", cur);
    conv2d(b, "out.2", c->out_ch, cur, 3);
}

static void arch_sd1(builder *b, synth_scale s)
{
    build_unet(b, s == SYNTH_SCALE_FULL ? &sd1_full : &sd1_tiny);
}

static void arch_sdxl(builder *b, synth_scale s)
{
    build_unet(b, s == SYNTH_SCALE_FULL ? &sdxl_full : &sdxl_tiny);
}

/* ---- SD3 MMDiT (sd3_medium, mmdit.py naming) -------------------------- */

typedef struct mmdit_cfg {
    int64_t hidden, patch, in_ch, out_ch, ctx, adm, pos_max, mlp;
    int depth; /* SD3 ties hidden = 64 * depth */
} mmdit_cfg;

static const mmdit_cfg sd3_full = {1536, 2, 16, 16, 4096, 2048, 192, 6144, 24};
static const mmdit_cfg sd3_tiny = {128, 2, 16, 16, 256, 256, 16, 512, 2};

static void mmdit_block(builder *b, const mmdit_cfg *c, const char *p, bool pre_only)
{
    char q[SYNTH_NAME_MAX];
    const int64_t h = c->hidden;
    /* The last context block only feeds attention: shift/scale, no proj/MLP. */
    linear(b, pf(b, q, "%s.adaLN_modulation.1", p), (pre_only ? 2 : 6) * h, h, true);
    linear(b, pf(b, q, "%s.attn.qkv", p), 3 * h, h, true);
    if (!pre_only) {
        linear(b, pf(b, q, "%s.attn.proj", p), h, h, true);
        linear(b, pf(b, q, "%s.mlp.fc1", p), c->mlp, h, true);
        linear(b, pf(b, q, "%s.mlp.fc2", p), h, c->mlp, true);
    }
}

static void build_mmdit(builder *b, const mmdit_cfg *c)
{
    char p[SYNTH_NAME_MAX];
    const int64_t h = c->hidden;
    tensor(b, 4, DIMS(h, c->in_ch, c->patch, c->patch), "x_embedder.proj.weight");
    tensor(b, 1, DIMS(h), "x_embedder.proj.bias");
    tensor(b, 3, DIMS(1, c->pos_max * c->pos_max, h), "pos_embed");
    linear(b, "t_embedder.mlp.0", h, 256, true);
    linear(b, "t_embedder.mlp.2", h, h, true);
    linear(b, "y_embedder.mlp.0", h, c->adm, true);
    linear(b, "y_embedder.mlp.2", h, h, true);
    linear(b, "context_embedder", h, c->ctx, true);
    for (int i = 0; i < c->depth; i++) {
        mmdit_block(b, c, pf(b, p, "joint_blocks.%d.context_block", i), i == c->depth - 1);
        mmdit_block(b, c, pf(b, p, "joint_blocks.%d.x_block", i), false);
    }
    linear(b, "final_layer.linear", c->patch * c->patch * c->out_ch, h, true);
    linear(b, "final_layer.adaLN_modulation.1", 2 * h, h, true);
}

static void arch_sd3(builder *b, synth_scale s)
{
    build_mmdit(b, s == SYNTH_SCALE_FULL ? &sd3_full : &sd3_tiny);
}

/* ---- Wan 2.1 T2V (wan/modules/model.py naming) ------------------------ */

typedef struct wan_cfg {
    int64_t dim, ffn, in_dim, out_dim, text_dim, freq_dim, pt, ph, pw;
    int layers;
} wan_cfg;

/* 14B: 40 heads x 128; ComfyUI derives heads as dim / 128. */
static const wan_cfg wan_full = {5120, 13824, 16, 16, 4096, 256, 1, 2, 2, 40};
static const wan_cfg wan_tiny = {256, 512, 16, 16, 256, 256, 1, 2, 2, 2};

static void wan_attn(builder *b, const char *p, int64_t dim)
{
    char q[SYNTH_NAME_MAX];
    linear(b, pf(b, q, "%s.q", p), dim, dim, true);
    linear(b, pf(b, q, "%s.k", p), dim, dim, true);
    linear(b, pf(b, q, "%s.v", p), dim, dim, true);
    linear(b, pf(b, q, "%s.o", p), dim, dim, true);
    norm_w(b, pf(b, q, "%s.norm_q", p), dim); /* RMSNorm over the whole dim */
    norm_w(b, pf(b, q, "%s.norm_k", p), dim);
}

static void build_wan(builder *b, const wan_cfg *c)
{
    char p[SYNTH_NAME_MAX];
    const int64_t d = c->dim;
    tensor(b, 5, DIMS(d, c->in_dim, c->pt, c->ph, c->pw), "patch_embedding.weight");
    tensor(b, 1, DIMS(d), "patch_embedding.bias");
    linear(b, "text_embedding.0", d, c->text_dim, true);
    linear(b, "text_embedding.2", d, d, true);
    linear(b, "time_embedding.0", d, c->freq_dim, true);
    linear(b, "time_embedding.2", d, d, true);
    linear(b, "time_projection.1", 6 * d, d, true);
    for (int i = 0; i < c->layers; i++) {
        tensor(b, 3, DIMS(1, 6, d), "blocks.%d.modulation", i);
        wan_attn(b, pf(b, p, "blocks.%d.self_attn", i), d);
        norm_wb(b, pf(b, p, "blocks.%d.norm3", i), d); /* cross_attn_norm */
        wan_attn(b, pf(b, p, "blocks.%d.cross_attn", i), d);
        linear(b, pf(b, p, "blocks.%d.ffn.0", i), c->ffn, d, true);
        linear(b, pf(b, p, "blocks.%d.ffn.2", i), d, c->ffn, true);
    }
    tensor(b, 3, DIMS(1, 2, d), "head.modulation");
    linear(b, "head.head", c->pt * c->ph * c->pw * c->out_dim, d, true);
}

static void arch_wan(builder *b, synth_scale s)
{
    build_wan(b, s == SYNTH_SCALE_FULL ? &wan_full : &wan_tiny);
}

/* ---- Qwen-Image (diffusers QwenImageTransformer2DModel naming) -------- */

typedef struct qwen_cfg {
    int64_t dim, head_dim, joint, in_ch, out_ch, patch, mlp;
    int layers;
} qwen_cfg;

static const qwen_cfg qwen_full = {3072, 128, 3584, 64, 16, 2, 12288, 60};
static const qwen_cfg qwen_tiny = {128, 128, 256, 64, 16, 2, 512, 2};

static void build_qwen(builder *b, const qwen_cfg *c)
{
    char p[SYNTH_NAME_MAX];
    const int64_t d = c->dim;
    linear(b, "time_text_embed.timestep_embedder.linear_1", d, 256, true);
    linear(b, "time_text_embed.timestep_embedder.linear_2", d, d, true);
    norm_w(b, "txt_norm", c->joint);
    linear(b, "img_in", d, c->in_ch, true);
    linear(b, "txt_in", d, c->joint, true);
    static const char *const sides[] = {"img", "txt"};
    static const char *const qk_norms[] = {"norm_q", "norm_k", "norm_added_q", "norm_added_k"};
    static const char *const projs[] = {"to_q",       "to_k",       "to_v",    "add_q_proj",
                                        "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"};
    for (int i = 0; i < c->layers; i++) {
        for (int s = 0; s < 2; s++) {
            linear(b, pf(b, p, "transformer_blocks.%d.%s_mod.1", i, sides[s]), 6 * d, d, true);
            pf(b, p, "transformer_blocks.%d.%s_mlp.net.0.proj", i, sides[s]);
            linear(b, p, c->mlp, d, true);
            pf(b, p, "transformer_blocks.%d.%s_mlp.net.2", i, sides[s]);
            linear(b, p, d, c->mlp, true);
        }
        for (int j = 0; j < 4; j++)
            norm_w(b, pf(b, p, "transformer_blocks.%d.attn.%s", i, qk_norms[j]), c->head_dim);
        for (int j = 0; j < 8; j++)
            linear(b, pf(b, p, "transformer_blocks.%d.attn.%s", i, projs[j]), d, d, true);
    }
    linear(b, "norm_out.linear", 2 * d, d, true);
    linear(b, "proj_out", c->patch * c->patch * c->out_ch, d, true);
}

static void arch_qwen(builder *b, synth_scale s)
{
    build_qwen(b, s == SYNTH_SCALE_FULL ? &qwen_full : &qwen_tiny);
}

/* ---- registry --------------------------------------------------------- */

typedef struct arch_entry {
    const char *name;
    const char *description;
    void (*build)(builder *b, synth_scale s);
} arch_entry;

/* One list feeds both the lookup table and synth_arch_names(). */
#define ARCH_LIST(X)                                                                               \
    X("flux-dev", arch_flux_dev,                                                                   \
      "FLUX.1-dev DiT (19 double + 38 single blocks, hidden 3072, guidance_in)")                   \
    X("flux-schnell", arch_flux_schnell,                                                           \
      "FLUX.1-schnell DiT (as flux-dev, without guidance_in)")                                     \
    X("clip-l", arch_clip_l,                                                                       \
      "CLIP ViT-L/14 text encoder, HF names, as clip_l.safetensors (no text_projection)")          \
    X("t5-xxl", arch_t5,                                                                           \
      "T5 v1.1 XXL encoder, HF names, as t5xxl_fp16.safetensors (24 blocks, d_model 4096)")        \
    X("vae-flux", arch_vae_flux,                                                                   \
      "FLUX autoencoder as ae.safetensors (ch 128, mult 1,2,4,4, z 16, no quant convs)")           \
    X("sd1-unet", arch_sd1,                                                                        \
      "Stable Diffusion 1.x UNet (model_channels 320, context 768)")                               \
    X("sdxl-unet", arch_sdxl,                                                                      \
      "SDXL base UNet (model_channels 320, context 2048, label_emb 2816)")                         \
    X("sd3", arch_sd3,                                                                             \
      "SD3 medium MMDiT (24 joint blocks, hidden 1536)")                                           \
    X("wan", arch_wan,                                                                             \
      "Wan 2.1 T2V 14B DiT (40 blocks, dim 5120)")                                                 \
    X("qwen-image", arch_qwen,                                                                     \
      "Qwen-Image MMDiT (60 blocks, dim 3072, joint dim 3584)")                                    \
    X("clip-g", arch_clip_g,                                                                       \
      "OpenCLIP ViT-bigG/14 text encoder, HF names, with text_projection")                         \
    X("umt5-xxl", arch_umt5,                                                                       \
      "UMT5 XXL encoder (Wan), relative bias in every block, vocab 256384")                        \
    X("vae-sd", arch_vae_sd,                                                                       \
      "Stable Diffusion autoencoder (z 4, quant_conv/post_quant_conv)")

#define ARCH_ENTRY(n, f, d) {n, d, f},
#define ARCH_NAME(n, f, d) n,

static const arch_entry arches[] = {ARCH_LIST(ARCH_ENTRY)};
static const char *const arch_names[] = {ARCH_LIST(ARCH_NAME) NULL};

#define ARCH_COUNT (sizeof arches / sizeof arches[0])

static const arch_entry *find_arch(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < ARCH_COUNT; i++)
        if (strcmp(arches[i].name, name) == 0)
            return &arches[i];
    return NULL;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const synth_tensor *)a)->name, ((const synth_tensor *)b)->name);
}

bool synth_arch_tensors(const char *arch, synth_scale scale, synth_list *out)
{
    const arch_entry *e = find_arch(arch);
    if (!e || !out || (scale != SYNTH_SCALE_TINY && scale != SYNTH_SCALE_FULL))
        return false;
    const size_t start = out->count;
    builder b = {out, true};
    e->build(&b, scale);
    if (!b.ok) {
        out->count = start; /* leave earlier items untouched */
        return false;
    }
    /* strcmp is byte order, as safetensors sorts its keys. */
    qsort(out->items + start, out->count - start, sizeof *out->items, cmp_name);
    return true;
}

void synth_list_free(synth_list *list)
{
    if (!list)
        return;
    free(list->items);
    list->items = NULL;
    list->count = list->capacity = 0;
}

const char *const *synth_arch_names(void)
{
    return arch_names;
}

const char *synth_arch_description(const char *arch)
{
    const arch_entry *e = find_arch(arch);
    return e ? e->description : NULL;
}

int64_t synth_tensor_numel(const synth_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

int64_t synth_list_numel(const synth_list *list)
{
    int64_t n = 0;
    for (size_t i = 0; i < list->count; i++)
        n += synth_tensor_numel(&list->items[i]);
    return n;
}
