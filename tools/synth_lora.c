/* See synth_lora.h. Names and shapes come from synth_arch.c (BFL and
 * Hugging Face names) and, for diffusers FLUX names, from the layout of
 * diffusers' FluxTransformer2DModel (docs/lora.md has the correspondence). */
#include "synth_lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgpu/safetensors.h"

bool synth_lora_add(synth_lora_list *list, const synth_lora_module *m)
{
    if (list->count == list->capacity) {
        size_t cap = list->capacity ? list->capacity * 2 : 64;
        synth_lora_module *items = realloc(list->items, cap * sizeof *items);
        if (!items)
            return false;
        list->items = items;
        list->capacity = cap;
    }
    list->items[list->count++] = *m;
    return true;
}

void synth_lora_list_free(synth_lora_list *list)
{
    free(list->items);
    memset(list, 0, sizeof *list);
}

static bool add(synth_lora_list *list, const char *name, int64_t in, int64_t out, int64_t rank,
                float alpha, int has_alpha)
{
    synth_lora_module m = {.in = in, .out = out, .rank = rank, .alpha = alpha,
                           .has_alpha = has_alpha};
    if (snprintf(m.name, sizeof m.name, "%s", name) >= (int)sizeof m.name)
        return false;
    return synth_lora_add(list, &m);
}

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* diffusers FluxTransformer2DModel modules for a FLUX of hidden h, MLP
 * width mlp, input channels inc, context ctx, pooled vec. */
static bool flux_diffusers(int doubles, int singles, int64_t h, int64_t mlp, int64_t inc,
                           int64_t ctx, int64_t vec, bool guidance, int64_t rank, float alpha,
                           int has_alpha, synth_lora_list *out)
{
    static const struct {
        const char *name;
        int in, out; /* 'h' hidden, 'm' mlp, '6' 6h */
    } dbl[] = {
        {"attn.to_q", 'h', 'h'},          {"attn.to_k", 'h', 'h'},
        {"attn.to_v", 'h', 'h'},          {"attn.add_q_proj", 'h', 'h'},
        {"attn.add_k_proj", 'h', 'h'},    {"attn.add_v_proj", 'h', 'h'},
        {"attn.to_out.0", 'h', 'h'},      {"attn.to_add_out", 'h', 'h'},
        {"norm1.linear", 'h', '6'},       {"norm1_context.linear", 'h', '6'},
        {"ff.net.0.proj", 'h', 'm'},      {"ff.net.2", 'm', 'h'},
        {"ff_context.net.0.proj", 'h', 'm'}, {"ff_context.net.2", 'm', 'h'},
    };
    static const struct {
        const char *name;
        int in, out; /* 'p' h + mlp, '3' 3h */
    } sgl[] = {
        {"attn.to_q", 'h', 'h'}, {"attn.to_k", 'h', 'h'},  {"attn.to_v", 'h', 'h'},
        {"proj_mlp", 'h', 'm'},  {"proj_out", 'p', 'h'},   {"norm.linear", 'h', '3'},
    };
#define DIM(c)                                                                                     \
    ((c) == 'h' ? h : (c) == 'm' ? mlp : (c) == '6' ? 6 * h : (c) == '3' ? 3 * h : h + mlp)
    char name[SYNTH_NAME_MAX];
    bool ok = true;
    for (int i = 0; ok && i < doubles; i++)
        for (size_t j = 0; ok && j < sizeof dbl / sizeof dbl[0]; j++) {
            snprintf(name, sizeof name, "transformer.transformer_blocks.%d.%s", i, dbl[j].name);
            ok = add(out, name, DIM(dbl[j].in), DIM(dbl[j].out), rank, alpha, has_alpha);
        }
    for (int i = 0; ok && i < singles; i++)
        for (size_t j = 0; ok && j < sizeof sgl / sizeof sgl[0]; j++) {
            snprintf(name, sizeof name, "transformer.single_transformer_blocks.%d.%s", i,
                     sgl[j].name);
            ok = add(out, name, DIM(sgl[j].in), DIM(sgl[j].out), rank, alpha, has_alpha);
        }
#undef DIM
    ok = ok && add(out, "transformer.x_embedder", inc, h, rank, alpha, has_alpha);
    ok = ok && add(out, "transformer.context_embedder", ctx, h, rank, alpha, has_alpha);
    ok = ok && add(out, "transformer.time_text_embed.timestep_embedder.linear_1", 256, h, rank,
                   alpha, has_alpha);
    ok = ok && add(out, "transformer.time_text_embed.timestep_embedder.linear_2", h, h, rank,
                   alpha, has_alpha);
    ok = ok && add(out, "transformer.time_text_embed.text_embedder.linear_1", vec, h, rank, alpha,
                   has_alpha);
    ok = ok && add(out, "transformer.time_text_embed.text_embedder.linear_2", h, h, rank, alpha,
                   has_alpha);
    if (guidance) {
        ok = ok && add(out, "transformer.time_text_embed.guidance_embedder.linear_1", 256, h, rank,
                       alpha, has_alpha);
        ok = ok && add(out, "transformer.time_text_embed.guidance_embedder.linear_2", h, h, rank,
                       alpha, has_alpha);
    }
    ok = ok && add(out, "transformer.proj_out", h, inc, rank, alpha, has_alpha);
    ok = ok && add(out, "transformer.norm_out.linear", h, 2 * h, rank, alpha, has_alpha);
    return ok;
}

bool synth_lora_modules(const char *arch, synth_lora_format format, int64_t rank, float alpha,
                        int has_alpha, synth_lora_list *out)
{
    return synth_lora_modules_at(arch, SYNTH_SCALE_TINY, format, rank, alpha, has_alpha, out);
}

bool synth_lora_modules_at(const char *arch, synth_scale scale, synth_lora_format format,
                           int64_t rank, float alpha, int has_alpha, synth_lora_list *out)
{
    const bool full = scale == SYNTH_SCALE_FULL;
    const bool flux = strcmp(arch, "flux-dev") == 0 || strcmp(arch, "flux-schnell") == 0;
    const bool clip = strcmp(arch, "clip-l") == 0, t5 = strcmp(arch, "t5-xxl") == 0;
    if (!flux && !clip && !t5)
        return false;
    if (flux && format == SYNTH_LORA_DIFFUSERS) /* tiny: hidden 256, mlp 1024, in 64 */
        return full ? flux_diffusers(19, 38, 3072, 12288, 64, 4096, 768,
                                     strcmp(arch, "flux-dev") == 0, rank, alpha, has_alpha, out)
                    : flux_diffusers(2, 2, 256, 1024, 64, 256, 256, strcmp(arch, "flux-dev") == 0,
                                     rank, alpha, has_alpha, out);
    synth_list tensors = {0};
    if (!synth_arch_tensors(arch, scale, &tensors))
        return false;
    bool ok = true;
    for (size_t i = 0; ok && i < tensors.count; i++) {
        const synth_tensor *t = &tensors.items[i];
        size_t len = strlen(t->name);
        if (t->ndim != 2 || len < 8 || strcmp(t->name + len - 7, ".weight") != 0)
            continue;
        /* The layers trainers adapt: the blocks' linears. */
        if (flux && !starts(t->name, "double_blocks.") && !starts(t->name, "single_blocks."))
            continue;
        if (clip && (!starts(t->name, "text_model.encoder.layers.")))
            continue;
        if (t5 && (!starts(t->name, "encoder.block.") || strstr(t->name, "relative_attention")))
            continue;
        char module[SYNTH_NAME_MAX], name[SYNTH_NAME_MAX];
        memcpy(module, t->name, len - 7);
        module[len - 7] = '\0';
        const char *prefix = "";
        bool underscores = format == SYNTH_LORA_KOHYA;
        switch (format) {
        case SYNTH_LORA_KOHYA:
            prefix = flux ? "lora_unet_" : clip ? "lora_te1_" : "lora_te2_";
            break;
        case SYNTH_LORA_DIFFUSERS: prefix = clip ? "text_encoder." : "text_encoder_2."; break;
        case SYNTH_LORA_COMFY:
            prefix = flux ? "diffusion_model." : clip ? "text_encoders.clip_l.transformer."
                                                      : "text_encoders.t5xxl.transformer.";
            break;
        }
        if (snprintf(name, sizeof name, "%s%s", prefix, module) >= (int)sizeof name) {
            ok = false;
            break;
        }
        if (underscores)
            for (char *c = name + strlen(prefix); *c; c++)
                if (*c == '.')
                    *c = '_';
        ok = add(out, name, t->shape[1], t->shape[0], rank, alpha, has_alpha);
    }
    synth_list_free(&tensors);
    return ok;
}

/* ---- writing ------------------------------------------------------------ */

static uint64_t mix(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t hash_name(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static mgpu_status write_matrix(mgpu_safetensors_writer *w, const char *name, mgpu_dtype dtype,
                                int64_t rows, int64_t cols, double amp, uint64_t seed,
                                mgpu_error *err)
{
    size_t n = (size_t)(rows * cols);
    uint64_t bytes = 0;
    if (!mgpu_dtype_bytes_for(dtype, n, &bytes)) {
        snprintf(err->message, sizeof err->message, "%s: bad size", name);
        return err->status = MGPU_ERR_ARGUMENT;
    }
    float *v = malloc(n * sizeof *v);
    void *enc = malloc(bytes ? bytes : 1);
    mgpu_status s = MGPU_OK;
    if (!v || !enc) {
        snprintf(err->message, sizeof err->message, "out of memory");
        s = err->status = MGPU_ERR_NO_MEMORY;
    }
    uint64_t state = hash_name(name, seed);
    for (size_t i = 0; s == MGPU_OK && i < n; i++)
        v[i] = (float)(amp * ((double)(mix(&state) >> 11) * 0x1p-53 * 2.0 - 1.0));
    if (s == MGPU_OK) {
        if (mgpu_dtype_get_info(dtype)->floating) {
            s = mgpu_quantize(dtype, v, enc, n);
        } else { /* integer dtypes, for the malformed cases: small values */
            memset(enc, 0, bytes);
            for (size_t i = 0; i < n && bytes / n >= 1; i++)
                ((uint8_t *)enc)[i * (bytes / n)] = (uint8_t)(mix(&state) & 7);
        }
        if (s != MGPU_OK) {
            snprintf(err->message, sizeof err->message, "%s: cannot encode as %s", name,
                     mgpu_dtype_name(dtype));
            err->status = s;
        }
    }
    if (s == MGPU_OK)
        s = mgpu_safetensors_writer_write(w, enc, bytes, err);
    free(v);
    free(enc);
    return s;
}

mgpu_status synth_lora_write(const char *path, const synth_lora_list *list,
                             synth_lora_format format, mgpu_dtype dtype, uint64_t seed,
                             mgpu_error *err)
{
    const char *down = format == SYNTH_LORA_KOHYA ? "lora_down" : "lora_A";
    const char *up = format == SYNTH_LORA_KOHYA ? "lora_up" : "lora_B";
    mgpu_safetensors_writer *w = NULL;
    mgpu_status s = mgpu_safetensors_writer_create(path, &w, err);
    if (s != MGPU_OK)
        return s;
    char name[SYNTH_NAME_MAX + 32];
    s = mgpu_safetensors_writer_add_metadata(w, "mgpu.synthetic", "lora", err);
    for (size_t i = 0; s == MGPU_OK && i < list->count; i++) {
        const synth_lora_module *m = &list->items[i];
        const mgpu_dtype dt = m->dtype ? m->dtype : dtype;
        const int64_t up_rank = m->up_rank ? m->up_rank : m->rank;
        snprintf(name, sizeof name, "%s.%s.weight", m->name, down);
        s = mgpu_safetensors_writer_add_tensor(w, name, dt, 2,
                                               (const uint64_t[]){(uint64_t)m->rank,
                                                                  (uint64_t)m->in},
                                               err);
        if (s == MGPU_OK && !m->omit_up) {
            snprintf(name, sizeof name, "%s.%s.weight", m->name, up);
            s = mgpu_safetensors_writer_add_tensor(w, name, dt, 2,
                                                   (const uint64_t[]){(uint64_t)m->out,
                                                                      (uint64_t)up_rank},
                                                   err);
        }
        if (s == MGPU_OK && m->has_alpha) {
            snprintf(name, sizeof name, "%s.alpha", m->name);
            s = mgpu_safetensors_writer_add_tensor(w, name, MGPU_DTYPE_F32, 0, NULL, err);
        }
    }
    for (size_t i = 0; s == MGPU_OK && i < list->count; i++) {
        const synth_lora_module *m = &list->items[i];
        const mgpu_dtype dt = m->dtype ? m->dtype : dtype;
        const int64_t up_rank = m->up_rank ? m->up_rank : m->rank;
        snprintf(name, sizeof name, "%s.%s.weight", m->name, down);
        s = write_matrix(w, name, dt, m->rank, m->in, 1.0 / sqrt((double)m->in), seed, err);
        if (s == MGPU_OK && !m->omit_up) {
            snprintf(name, sizeof name, "%s.%s.weight", m->name, up);
            s = write_matrix(w, name, dt, m->out, up_rank, 1.0 / sqrt((double)up_rank), seed, err);
        }
        if (s == MGPU_OK && m->has_alpha)
            s = mgpu_safetensors_writer_write(w, &m->alpha, sizeof m->alpha, err);
    }
    if (s != MGPU_OK) {
        mgpu_safetensors_writer_abort(w);
        return s;
    }
    return mgpu_safetensors_writer_finish(w, err);
}
