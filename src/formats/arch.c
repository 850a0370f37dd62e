/* Architecture detection from tensor names and shapes, module grouping and
 * module kinds. The signatures come from the published checkpoints (BFL and
 * ComfyUI single files, Hugging Face / diffusers layouts, city96 GGUF). */
#include <string.h>

#include "formats/arch.h"

const char *mgpu_arch_name(mgpu_arch arch)
{
    static const char *const names[MGPU_ARCH_COUNT] = {
        [MGPU_ARCH_UNKNOWN] = "unknown",      [MGPU_ARCH_FLUX_DEV] = "flux-dev",
        [MGPU_ARCH_FLUX_SCHNELL] = "flux-schnell", [MGPU_ARCH_SD1] = "sd1",
        [MGPU_ARCH_SD2] = "sd2",              [MGPU_ARCH_SDXL] = "sdxl",
        [MGPU_ARCH_SD3] = "sd3",              [MGPU_ARCH_WAN] = "wan",
        [MGPU_ARCH_QWEN_IMAGE] = "qwen-image", [MGPU_ARCH_CLIP_L] = "clip-l",
        [MGPU_ARCH_CLIP_G] = "clip-g",        [MGPU_ARCH_T5] = "t5",
        [MGPU_ARCH_UMT5] = "umt5",            [MGPU_ARCH_VAE_SD] = "vae-sd",
        [MGPU_ARCH_VAE_FLUX] = "vae-flux",
    };
    return (unsigned)arch < MGPU_ARCH_COUNT ? names[arch] : "unknown";
}

const char *mgpu_module_kind_name(mgpu_module_kind kind)
{
    static const char *const names[MGPU_MODULE_KIND_COUNT] = {
        [MGPU_MODULE_PARAMETER] = "Parameter", [MGPU_MODULE_LINEAR] = "Linear",
        [MGPU_MODULE_CONV1D] = "Conv1d",       [MGPU_MODULE_CONV2D] = "Conv2d",
        [MGPU_MODULE_CONV3D] = "Conv3d",       [MGPU_MODULE_EMBEDDING] = "Embedding",
        [MGPU_MODULE_LAYER_NORM] = "LayerNorm", [MGPU_MODULE_GROUP_NORM] = "GroupNorm",
        [MGPU_MODULE_RMS_NORM] = "RMSNorm",
    };
    return (unsigned)kind < MGPU_MODULE_KIND_COUNT ? names[kind] : "Parameter";
}

const char *const *mgpu_known_prefixes(void)
{
    /* Longest first so the most specific match wins. */
    static const char *const prefixes[] = {
        "conditioner.embedders.0.transformer.", /* SDXL CLIP-L */
        "text_encoders.clip_l.transformer.",    /* ComfyUI all-in-one files */
        "text_encoders.clip_g.transformer.",
        "text_encoders.t5xxl.transformer.",
        "conditioner.embedders.1.model.", /* SDXL OpenCLIP bigG */
        "cond_stage_model.transformer.",  /* SD1 CLIP-L */
        "model.diffusion_model.",
        "cond_stage_model.model.", /* SD2 OpenCLIP */
        "first_stage_model.",
        "diffusion_model.",
        "vae.",
        NULL,
    };
    return prefixes;
}

static bool has(const mgpu_arch_probe *p, const char *name)
{
    return p->find(p->context, name) != NULL;
}

mgpu_arch mgpu_arch_detect(const mgpu_arch_probe *p, const char **reason)
{
    const mgpu_tensor_info *t;
    if (has(p, "double_blocks.0.img_attn.qkv.weight") && has(p, "single_blocks.0.linear1.weight")) {
        if (has(p, "guidance_in.in_layer.weight")) {
            *reason = "double_blocks + single_blocks with guidance_in";
            return MGPU_ARCH_FLUX_DEV;
        }
        *reason = "double_blocks + single_blocks without guidance_in";
        return MGPU_ARCH_FLUX_SCHNELL;
    }
    if (has(p, "transformer_blocks.0.attn.add_q_proj.weight") &&
        has(p, "single_transformer_blocks.0.attn.to_q.weight")) {
        if (has(p, "time_text_embed.guidance_embedder.linear_1.weight")) {
            *reason = "diffusers FLUX layout with a guidance embedder";
            return MGPU_ARCH_FLUX_DEV;
        }
        *reason = "diffusers FLUX layout without a guidance embedder";
        return MGPU_ARCH_FLUX_SCHNELL;
    }
    if (has(p, "joint_blocks.0.x_block.attn.qkv.weight")) {
        *reason = "joint_blocks (MMDiT)";
        return MGPU_ARCH_SD3;
    }
    if (has(p, "transformer_blocks.0.img_mod.1.weight") && has(p, "txt_norm.weight")) {
        *reason = "transformer_blocks with img_mod and txt_norm";
        return MGPU_ARCH_QWEN_IMAGE;
    }
    if (has(p, "blocks.0.self_attn.q.weight") && has(p, "blocks.0.cross_attn.q.weight") &&
        has(p, "patch_embedding.weight")) {
        *reason = "blocks with self_attn + cross_attn and patch_embedding";
        return MGPU_ARCH_WAN;
    }
    if (has(p, "input_blocks.0.0.weight")) {
        if (has(p, "label_emb.0.0.weight")) {
            *reason = "UNet input_blocks with label_emb";
            return MGPU_ARCH_SDXL;
        }
        /* SD1 has 768-wide cross-attention context and conv proj_in; SD2
         * 1024-wide context and linear proj_in. The projection decides for
         * models of other widths. */
        t = p->find(p->context, "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight");
        const mgpu_tensor_info *proj = p->find(p->context, "input_blocks.1.1.proj_in.weight");
        if (t && t->ndim == 2 && t->shape[1] == 768) {
            *reason = "UNet with 768-wide cross-attention context";
            return MGPU_ARCH_SD1;
        }
        if (t && t->ndim == 2 && t->shape[1] == 1024) {
            *reason = "UNet with 1024-wide cross-attention context";
            return MGPU_ARCH_SD2;
        }
        if (t && proj && proj->ndim == 4) {
            *reason = "UNet with convolutional proj_in";
            return MGPU_ARCH_SD1;
        }
        if (t && proj && proj->ndim == 2) {
            *reason = "UNet with linear proj_in";
            return MGPU_ARCH_SD2;
        }
        *reason = "a UNet of unrecognised context width";
        return MGPU_ARCH_UNKNOWN;
    }
    t = p->find(p->context, "text_model.encoder.layers.0.self_attn.q_proj.weight");
    if (t && t->ndim == 2) {
        /* CLIP-L is 768 wide and OpenCLIP bigG 1280. Other widths (test
         * models) are told apart by bigG's text_projection, which the
         * CLIP-L files FLUX users have do not carry. */
        if (t->shape[0] == 1280) {
            *reason = "CLIP text encoder 1280 wide";
            return MGPU_ARCH_CLIP_G;
        }
        if (t->shape[0] == 768) {
            *reason = "CLIP text encoder 768 wide";
            return MGPU_ARCH_CLIP_L;
        }
        if (has(p, "text_projection.weight")) {
            *reason = "CLIP text encoder with text_projection";
            return MGPU_ARCH_CLIP_G;
        }
        *reason = "CLIP text encoder without text_projection";
        return MGPU_ARCH_CLIP_L;
    }
    t = p->find(p->context, "transformer.resblocks.0.attn.in_proj_weight");
    if (t && t->ndim == 2 && t->shape[1] == 1280) {
        *reason = "OpenCLIP text encoder 1280 wide";
        return MGPU_ARCH_CLIP_G;
    }
    if (has(p, "encoder.block.0.layer.0.SelfAttention.q.weight")) {
        if (has(p, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight")) {
            *reason = "T5 encoder with relative attention bias in every block";
            return MGPU_ARCH_UMT5;
        }
        *reason = "T5 encoder with relative attention bias in block 0 only";
        return MGPU_ARCH_T5;
    }
    if (has(p, "enc.blk.0.attn_q.weight")) {
        if (has(p, "enc.blk.1.attn_rel_b.weight")) {
            *reason = "GGUF T5 encoder with relative attention bias in every block";
            return MGPU_ARCH_UMT5;
        }
        *reason = "GGUF T5 encoder with relative attention bias in block 0 only";
        return MGPU_ARCH_T5;
    }
    t = p->find(p->context, "decoder.conv_in.weight");
    if (t && t->ndim == 4) {
        if (t->shape[1] == 16) {
            *reason = "VAE decoder with 16 latent channels";
            return MGPU_ARCH_VAE_FLUX;
        }
        if (t->shape[1] == 4) {
            *reason = "VAE decoder with 4 latent channels";
            return MGPU_ARCH_VAE_SD;
        }
        *reason = "VAE decoder of unrecognised latent channels";
        return MGPU_ARCH_UNKNOWN;
    }
    *reason = "no known signature";
    return MGPU_ARCH_UNKNOWN;
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

size_t mgpu_module_name_length(const char *name)
{
    /* The parameter names a module carries: a weight with its bias and the
     * scales of scaled-fp8 checkpoints. */
    static const char *const params[] = {"weight",      "bias",       "scale",
                                         "scale_weight", "scale_input", "weight_scale",
                                         "input_scale", NULL};
    size_t n = strlen(name);
    const char *dot = strrchr(name, '.');
    if (dot) {
        const char *last = dot + 1;
        for (int i = 0; params[i]; i++)
            if (strcmp(last, params[i]) == 0)
                return (size_t)(dot - name);
    }
    /* OpenCLIP's attn.in_proj_weight / in_proj_bias belong to attn.in_proj. */
    if (ends_with(name, n, "_weight") && n > 7 && (!dot || name + n - 7 > dot + 1))
        return n - 7;
    if (ends_with(name, n, "_bias") && n > 5 && (!dot || name + n - 5 > dot + 1))
        return n - 5;
    return n;
}

static bool last_component_is(const char *name, const char *const *candidates)
{
    const char *dot = strrchr(name, '.');
    const char *last = dot ? dot + 1 : name;
    for (int i = 0; candidates[i]; i++)
        if (strcmp(last, candidates[i]) == 0)
            return true;
    return false;
}

mgpu_module_kind mgpu_module_kind_guess(const char *module_name, const mgpu_tensor_info *weight,
                                        bool has_bias, mgpu_arch arch)
{
    static const char *const embeddings[] = {
        "token_embedding", "position_embedding", "shared",  "embed_tokens",
        "token_embd",      "word_embeddings",    "position_embeddings",
        "positional_embedding", NULL};
    if (last_component_is(module_name, embeddings))
        return MGPU_MODULE_EMBEDDING;
    if (!weight)
        return MGPU_MODULE_PARAMETER;
    switch (weight->ndim) {
    case 2: return MGPU_MODULE_LINEAR;
    case 3: return MGPU_MODULE_CONV1D;
    case 4: return MGPU_MODULE_CONV2D;
    case 5: return MGPU_MODULE_CONV3D;
    case 1:
        if (strstr(module_name, "norm") || strstr(module_name, "ln_") ||
            last_component_is(module_name, (const char *const[]){"ln", "ln_1", "ln_2", NULL})) {
            if (!has_bias)
                return MGPU_MODULE_RMS_NORM;
            /* UNets and VAEs normalise by groups; transformers by layer. */
            bool grouped = arch == MGPU_ARCH_VAE_SD || arch == MGPU_ARCH_VAE_FLUX;
            return grouped ? MGPU_MODULE_GROUP_NORM : MGPU_MODULE_LAYER_NORM;
        }
        return MGPU_MODULE_PARAMETER;
    default: return MGPU_MODULE_PARAMETER;
    }
}

/* Head modules by architecture, matched as a module-name prefix followed by
 * the end or a dot ("time_in" matches "time_in.in_layer"). Matching by role
 * per architecture, not by substring, is what catches T5's `shared` token
 * embedding that the original's substring rules miss. */
typedef struct role_table {
    mgpu_arch arch;
    const char *const *inputs;
    const char *const *outputs;
} role_table;

#define NAMES(...) ((const char *const[]){__VA_ARGS__, NULL})

static const role_table role_tables[] = {
    {MGPU_ARCH_FLUX_DEV,
     NAMES("img_in", "time_in", "vector_in", "guidance_in", "txt_in", "x_embedder",
           "time_text_embed", "context_embedder"),
     NAMES("final_layer", "norm_out", "proj_out")},
    {MGPU_ARCH_FLUX_SCHNELL,
     NAMES("img_in", "time_in", "vector_in", "guidance_in", "txt_in", "x_embedder",
           "time_text_embed", "context_embedder"),
     NAMES("final_layer", "norm_out", "proj_out")},
    {MGPU_ARCH_SD1, NAMES("time_embed", "input_blocks.0"), NAMES("out")},
    {MGPU_ARCH_SD2, NAMES("time_embed", "input_blocks.0"), NAMES("out")},
    {MGPU_ARCH_SDXL, NAMES("time_embed", "label_emb", "input_blocks.0"), NAMES("out")},
    {MGPU_ARCH_SD3,
     NAMES("x_embedder", "t_embedder", "y_embedder", "context_embedder", "pos_embed"),
     NAMES("final_layer")},
    {MGPU_ARCH_WAN,
     NAMES("patch_embedding", "text_embedding", "time_embedding", "time_projection",
           "img_emb"),
     NAMES("head")},
    {MGPU_ARCH_QWEN_IMAGE, NAMES("img_in", "txt_in", "txt_norm", "time_text_embed"),
     NAMES("norm_out", "proj_out")},
    {MGPU_ARCH_CLIP_L, NAMES("text_model.embeddings", "token_embedding", "positional_embedding"),
     NAMES("text_model.final_layer_norm", "text_projection", "ln_final")},
    {MGPU_ARCH_CLIP_G, NAMES("text_model.embeddings", "token_embedding", "positional_embedding"),
     NAMES("text_model.final_layer_norm", "text_projection", "ln_final")},
    {MGPU_ARCH_T5, NAMES("shared", "encoder.embed_tokens", "token_embd"),
     NAMES("encoder.final_layer_norm", "enc.output_norm")},
    {MGPU_ARCH_UMT5, NAMES("shared", "encoder.embed_tokens", "token_embd"),
     NAMES("encoder.final_layer_norm", "enc.output_norm")},
    {MGPU_ARCH_VAE_SD, NAMES("encoder.conv_in", "decoder.conv_in", "quant_conv", "post_quant_conv"),
     NAMES("encoder.norm_out", "encoder.conv_out", "decoder.norm_out", "decoder.conv_out")},
    {MGPU_ARCH_VAE_FLUX, NAMES("encoder.conv_in", "decoder.conv_in"),
     NAMES("encoder.norm_out", "encoder.conv_out", "decoder.norm_out", "decoder.conv_out")},
};

static bool matches_head(const char *name, const char *const *heads)
{
    for (int i = 0; heads[i]; i++) {
        size_t n = strlen(heads[i]);
        if (strncmp(name, heads[i], n) == 0 && (name[n] == '\0' || name[n] == '.'))
            return true;
    }
    return false;
}

mgpu_module_role mgpu_module_role_of(mgpu_arch arch, const char *module_name)
{
    for (size_t i = 0; i < sizeof role_tables / sizeof role_tables[0]; i++) {
        if (role_tables[i].arch != arch)
            continue;
        if (matches_head(module_name, role_tables[i].inputs))
            return MGPU_ROLE_INPUT;
        if (matches_head(module_name, role_tables[i].outputs))
            return MGPU_ROLE_OUTPUT;
    }
    return MGPU_ROLE_BODY;
}
