/* Resolving LoRA modules onto model weights. Like ComfyUI, the key map is
 * generated from the model rather than parsed from the LoRA: every weight
 * the parts hold yields the keys each family would give it (kohya's
 * underscored names cannot be split back into dots unambiguously), plus the
 * diffusers FLUX names with the row slices their fused BFL weights need.
 * Modules are then looked up by exact name. docs/lora.md has the tables. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "lora/lora_internal.h"

typedef struct piece {
    int64_t dst_row0, src_row0, rows;
} piece;

typedef struct map_entry {
    char *key;
    size_t part;
    size_t order; /* generation order: ties between parts go to the first */
    const mgpu_model_tensor *tensor;
    int n_pieces;
    piece pieces[2];
    int64_t expect_out; /* rows B must have */
} map_entry;

typedef struct key_map {
    map_entry *items;
    size_t count, capacity;
    bool failed;
} key_map;

struct mgpu_lora_resolved {
    mgpu_lora_target *targets;
    size_t target_count;
    const mgpu_lora_module **unmatched;
    size_t unmatched_count;
};

/* ---- the key map -------------------------------------------------------- */

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static char *format_key(key_map *m, bool underscores, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        m->failed = true;
        return NULL;
    }
    char *key = malloc((size_t)n + 1);
    if (!key) {
        m->failed = true;
        return NULL;
    }
    memcpy(key, buf, (size_t)n + 1);
    if (underscores)
        for (char *c = key; *c; c++)
            if (*c == '.')
                *c = '_';
    return key;
}

static void add_entry(key_map *m, char *key, size_t part, const mgpu_model_tensor *t,
                      int n_pieces, const piece *pieces, int64_t expect_out)
{
    if (!key)
        return;
    if (m->count == m->capacity) {
        size_t cap = m->capacity ? m->capacity * 2 : 256;
        map_entry *items = realloc(m->items, cap * sizeof *items);
        if (!items) {
            free(key);
            m->failed = true;
            return;
        }
        m->items = items;
        m->capacity = cap;
    }
    map_entry *e = &m->items[m->count];
    e->key = key;
    e->part = part;
    e->order = m->count++;
    e->tensor = t;
    e->n_pieces = n_pieces;
    for (int i = 0; i < n_pieces; i++)
        e->pieces[i] = pieces[i];
    e->expect_out = expect_out;
}

static int64_t rows_of(const mgpu_model_tensor *t)
{
    return (int64_t)t->info.shape[0];
}

/* The prefixes each family puts before a whole weight's module name, per
 * model kind; kohya's are written with '_' for '.'. The bare BFL / Hugging
 * Face name is a key for every kind. */
static const struct {
    mgpu_lora_kind kind;
    bool kohya;
    const char *prefix;
} WHOLE_PREFIXES[] = {
    {MGPU_LORA_KIND_DIFFUSION, true, "lora_unet_"},
    {MGPU_LORA_KIND_DIFFUSION, false, "diffusion_model."},
    {MGPU_LORA_KIND_CLIP, true, "lora_te1_"},
    {MGPU_LORA_KIND_CLIP, true, "lora_te_"},
    {MGPU_LORA_KIND_CLIP, false, "text_encoder."},
    {MGPU_LORA_KIND_CLIP, false, "text_encoders.clip_l.transformer."},
    {MGPU_LORA_KIND_T5, true, "lora_te2_"},
    {MGPU_LORA_KIND_T5, true, "lora_te3_"},
    {MGPU_LORA_KIND_T5, false, "text_encoder_2."},
    {MGPU_LORA_KIND_T5, false, "text_encoders.t5xxl.transformer."},
};

/* Keys naming a whole weight: `module` is its name without ".weight". */
static void add_whole(key_map *m, size_t part, const mgpu_model_tensor *t, mgpu_lora_kind kind,
                      const char *module)
{
    if (kind != MGPU_LORA_KIND_DIFFUSION && kind != MGPU_LORA_KIND_CLIP &&
        kind != MGPU_LORA_KIND_T5)
        return;
    const piece whole = {0, 0, rows_of(t)};
    const int64_t out = rows_of(t);
    for (size_t i = 0; i < sizeof WHOLE_PREFIXES / sizeof WHOLE_PREFIXES[0]; i++)
        if (WHOLE_PREFIXES[i].kind == kind)
            add_entry(m, format_key(m, WHOLE_PREFIXES[i].kohya, "%s%s", WHOLE_PREFIXES[i].prefix,
                                    module),
                      part, t, 1, &whole, out);
    add_entry(m, format_key(m, false, "%s", module), part, t, 1, &whole, out); /* bare */
}

/* A diffusers FLUX module name landing on pieces of a BFL weight. */
static void add_diffusers(key_map *m, size_t part, const mgpu_model_tensor *t,
                          const char *diffusers, int n_pieces, const piece *pieces,
                          int64_t expect_out)
{
    add_entry(m, format_key(m, false, "transformer.%s", diffusers), part, t, n_pieces, pieces,
              expect_out);
    add_entry(m, format_key(m, true, "lora_transformer_%s", diffusers), part, t, n_pieces, pieces,
              expect_out);
    add_entry(m, format_key(m, true, "lycoris_%s", diffusers), part, t, n_pieces, pieces,
              expect_out);
}

/* A 2-D weight of the part, or NULL. */
static const mgpu_model_tensor *find(const mgpu_lora_part *p, const char *name)
{
    const mgpu_model_tensor *t = mgpu_model_find_in(p->model, (size_t)p->component, name);
    return t && t->info.ndim == 2 ? t : NULL;
}

/* diffusers name (block-relative), BFL weight, and which rows of it: the
 * slice's first row and length in units of the hidden size (0 length: the
 * MLP width, -1: the whole weight). */
typedef struct flux_rename {
    const char *diffusers, *bfl;
    int start, len;
} flux_rename;

static const flux_rename double_renames[] = {
    {"attn.to_q", "img_attn.qkv", 0, 1},
    {"attn.to_k", "img_attn.qkv", 1, 1},
    {"attn.to_v", "img_attn.qkv", 2, 1},
    {"attn.add_q_proj", "txt_attn.qkv", 0, 1},
    {"attn.add_k_proj", "txt_attn.qkv", 1, 1},
    {"attn.add_v_proj", "txt_attn.qkv", 2, 1},
    {"attn.to_out.0", "img_attn.proj", 0, -1},
    {"attn.to_add_out", "txt_attn.proj", 0, -1},
    /* AdaLayerNormZero chunks shift, scale, gate x2 as BFL's Modulation
     * does: no permutation (unlike norm_out below). */
    {"norm1.linear", "img_mod.lin", 0, -1},
    {"norm1_context.linear", "txt_mod.lin", 0, -1},
    {"ff.net.0.proj", "img_mlp.0", 0, -1},
    {"ff.net.2", "img_mlp.2", 0, -1},
    {"ff_context.net.0.proj", "txt_mlp.0", 0, -1},
    {"ff_context.net.2", "txt_mlp.2", 0, -1},
};

static const flux_rename single_renames[] = {
    {"attn.to_q", "linear1", 0, 1},
    {"attn.to_k", "linear1", 1, 1},
    {"attn.to_v", "linear1", 2, 1},
    {"proj_mlp", "linear1", 3, 0},
    {"proj_out", "linear2", 0, -1},
    {"norm.linear", "modulation.lin", 0, -1},
};

static const struct {
    const char *diffusers, *bfl;
} basic_renames[] = {
    {"x_embedder", "img_in"},
    {"context_embedder", "txt_in"},
    {"time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"},
    {"time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"},
    {"time_text_embed.text_embedder.linear_1", "vector_in.in_layer"},
    {"time_text_embed.text_embedder.linear_2", "vector_in.out_layer"},
    {"time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"},
    {"time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"},
    {"proj_out", "final_layer.linear"},
};

static void add_flux_block(key_map *m, size_t part, const mgpu_lora_part *p, const char *dprefix,
                           const char *bprefix, int i, const flux_rename *table, size_t n,
                           int64_t hidden, int64_t mlp)
{
    for (size_t r = 0; r < n; r++) {
        char bname[192], dname[192];
        snprintf(bname, sizeof bname, "%s.%d.%s.weight", bprefix, i, table[r].bfl);
        const mgpu_model_tensor *t = find(p, bname);
        if (!t)
            continue;
        piece pc = {0, 0, rows_of(t)};
        if (table[r].len >= 0) {
            pc.dst_row0 = table[r].start * hidden;
            pc.rows = table[r].len ? hidden : mlp;
        }
        if (pc.rows <= 0 || pc.dst_row0 + pc.rows > rows_of(t))
            continue; /* not a FLUX.1 shape; the whole-weight keys still apply */
        snprintf(dname, sizeof dname, "%s.%d.%s", dprefix, i, table[r].diffusers);
        add_diffusers(m, part, t, dname, 1, &pc, pc.rows);
    }
}

static void add_flux(key_map *m, size_t part, const mgpu_lora_part *p)
{
    char name[128];
    for (int i = 0;; i++) {
        snprintf(name, sizeof name, "double_blocks.%d.img_attn.qkv.weight", i);
        const mgpu_model_tensor *qkv = find(p, name);
        snprintf(name, sizeof name, "double_blocks.%d.img_mlp.0.weight", i);
        const mgpu_model_tensor *mlp = find(p, name);
        if (!qkv)
            break;
        add_flux_block(m, part, p, "transformer_blocks", "double_blocks", i, double_renames,
                       sizeof double_renames / sizeof double_renames[0], rows_of(qkv) / 3,
                       mlp ? rows_of(mlp) : 0);
    }
    for (int i = 0;; i++) {
        snprintf(name, sizeof name, "single_blocks.%d.linear1.weight", i);
        const mgpu_model_tensor *l1 = find(p, name);
        snprintf(name, sizeof name, "single_blocks.%d.linear2.weight", i);
        const mgpu_model_tensor *l2 = find(p, name);
        if (!l1 || !l2)
            break;
        const int64_t hidden = rows_of(l2);
        add_flux_block(m, part, p, "single_transformer_blocks", "single_blocks", i,
                       single_renames, sizeof single_renames / sizeof single_renames[0], hidden,
                       rows_of(l1) - 3 * hidden);
    }
    for (size_t r = 0; r < sizeof basic_renames / sizeof basic_renames[0]; r++) {
        snprintf(name, sizeof name, "%s.weight", basic_renames[r].bfl);
        const mgpu_model_tensor *t = find(p, name);
        if (!t)
            continue;
        const piece whole = {0, 0, rows_of(t)};
        add_diffusers(m, part, t, basic_renames[r].diffusers, 1, &whole, rows_of(t));
    }
    /* diffusers' AdaLayerNormContinuous chunks (scale, shift); BFL's last
     * layer (shift, scale): each half of B lands on the other half. */
    const mgpu_model_tensor *t = find(p, "final_layer.adaLN_modulation.1.weight");
    if (t && rows_of(t) % 2 == 0) {
        const int64_t h = rows_of(t) / 2;
        const piece swapped[2] = {{h, 0, h}, {0, h, h}};
        add_diffusers(m, part, t, "norm_out.linear", 2, swapped, 2 * h);
    }
}

/* llama.cpp's GGUF T5 names back to Hugging Face's, which LoRAs use. */
static bool t5_hf_name(const char *name, char *out, size_t size)
{
    static const struct {
        const char *gguf, *hf;
    } renames[] = {
        {"attn_q", "layer.0.SelfAttention.q"},
        {"attn_k", "layer.0.SelfAttention.k"},
        {"attn_v", "layer.0.SelfAttention.v"},
        {"attn_o", "layer.0.SelfAttention.o"},
        {"attn_rel_b", "layer.0.SelfAttention.relative_attention_bias"},
        {"ffn_gate", "layer.1.DenseReluDense.wi_0"},
        {"ffn_up", "layer.1.DenseReluDense.wi_1"},
        {"ffn_down", "layer.1.DenseReluDense.wo"},
    };
    if (strcmp(name, "token_embd.weight") == 0) {
        snprintf(out, size, "shared");
        return true;
    }
    int block, used = 0;
    char rest[64];
    if (sscanf(name, "enc.blk.%d.%63[a-z_0-9].weight%n", &block, rest, &used) != 2 ||
        name[used] != '\0')
        return false;
    for (size_t i = 0; i < sizeof renames / sizeof renames[0]; i++)
        if (strcmp(rest, renames[i].gguf) == 0) {
            snprintf(out, size, "encoder.block.%d.%s", block, renames[i].hf);
            return true;
        }
    return false;
}

static void add_part(key_map *m, size_t part, const mgpu_lora_part *p, mgpu_lora_kind kind)
{
    size_t n = mgpu_model_tensor_count(p->model);
    for (size_t i = 0; i < n; i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(p->model, i);
        if (t->component != (uint32_t)p->component || t->info.ndim != 2)
            continue;
        size_t len = strlen(t->name);
        if (len <= 7 || strcmp(t->name + len - 7, ".weight") != 0 || len >= 256)
            continue;
        char module[256];
        if (kind == MGPU_LORA_KIND_T5 && strncmp(t->name, "enc.blk.", 8) == 0) {
            if (!t5_hf_name(t->name, module, sizeof module))
                continue;
        } else if (kind == MGPU_LORA_KIND_T5 && strcmp(t->name, "token_embd.weight") == 0) {
            t5_hf_name(t->name, module, sizeof module);
        } else {
            memcpy(module, t->name, len - 7);
            module[len - 7] = '\0';
        }
        add_whole(m, part, t, kind, module);
    }
    if (kind == MGPU_LORA_KIND_DIFFUSION)
        add_flux(m, part, p);
}

static int entry_cmp(const void *pa, const void *pb)
{
    const map_entry *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);
    if (c)
        return c;
    return a->order < b->order ? -1 : a->order > b->order;
}

static const map_entry *lookup(const key_map *m, const char *key)
{
    size_t lo = 0, hi = m->count;
    while (lo < hi) { /* first entry with key >= the one sought */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(m->items[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m->count && strcmp(m->items[lo].key, key) == 0 ? &m->items[lo] : NULL;
}

static void free_map(key_map *m)
{
    for (size_t i = 0; i < m->count; i++)
        free(m->items[i].key);
    free(m->items);
}

/* ---- resolving ---------------------------------------------------------- */

static mgpu_lora_kind part_kind(mgpu_arch arch)
{
    switch (arch) {
    case MGPU_ARCH_FLUX_DEV:
    case MGPU_ARCH_FLUX_SCHNELL: return MGPU_LORA_KIND_DIFFUSION;
    case MGPU_ARCH_CLIP_L: return MGPU_LORA_KIND_CLIP;
    case MGPU_ARCH_T5: return MGPU_LORA_KIND_T5;
    default: return MGPU_LORA_KIND_UNKNOWN;
    }
}

static const char *kind_phrase(mgpu_lora_kind kind)
{
    switch (kind) {
    case MGPU_LORA_KIND_DIFFUSION: return "a FLUX.1 transformer module";
    case MGPU_LORA_KIND_CLIP: return "a CLIP-L text encoder module";
    case MGPU_LORA_KIND_T5: return "a T5 text encoder module";
    default: return "of no family mgpu knows";
    }
}

/* An example key of `format` for the part, and the weight it names. */
static void example(const mgpu_lora_part *p, mgpu_lora_kind kind, mgpu_lora_format format,
                    const char **key, const char **weight)
{
    static const char *const keys[MGPU_LORA_KIND_COUNT][3] = {
        [MGPU_LORA_KIND_DIFFUSION] = {"lora_unet_double_blocks_0_img_attn_qkv",
                                      "transformer.transformer_blocks.0.attn.to_q",
                                      "diffusion_model.double_blocks.0.img_attn.qkv"},
        [MGPU_LORA_KIND_CLIP] = {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
                                 "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
                                 "text_encoders.clip_l.transformer.text_model.encoder.layers.0."
                                 "self_attn.q_proj"},
        [MGPU_LORA_KIND_T5] = {"lora_te2_encoder_block_0_layer_0_SelfAttention_q",
                               "text_encoder_2.encoder.block.0.layer.0.SelfAttention.q",
                               "text_encoders.t5xxl.transformer.encoder.block.0.layer.0."
                               "SelfAttention.q"},
    };
    int f = format == MGPU_LORA_FORMAT_DIFFUSERS ? 1 : format == MGPU_LORA_FORMAT_COMFY ? 2 : 0;
    *key = keys[kind][f];
    switch (kind) {
    case MGPU_LORA_KIND_DIFFUSION: *weight = "double_blocks.0.img_attn.qkv.weight"; break;
    case MGPU_LORA_KIND_CLIP:
        *weight = "text_model.encoder.layers.0.self_attn.q_proj.weight";
        break;
    default:
        *weight = mgpu_model_find_in(p->model, (size_t)p->component, "enc.blk.0.attn_q.weight")
                      ? "enc.blk.0.attn_q.weight"
                      : "encoder.block.0.layer.0.SelfAttention.q.weight";
        break;
    }
}

static mgpu_status none_match(const mgpu_lora *l, const mgpu_lora_part *parts, size_t n_parts,
                              const mgpu_lora_kind *kinds, mgpu_error *err)
{
    mgpu_lora_summary sum;
    mgpu_lora_summarize(l, &sum);
    char models[128] = "", expected[384] = "";
    size_t mu = 0, eu = 0;
    for (size_t i = 0; i < n_parts; i++) {
        const mgpu_model_component *c =
            mgpu_model_component_at(parts[i].model, (size_t)parts[i].component);
        const char *key, *weight;
        example(&parts[i], kinds[i], sum.format, &key, &weight);
        int a = snprintf(models + mu, sizeof models - mu, "%s%s", i ? " + " : "",
                         mgpu_arch_name(c->arch));
        int b = snprintf(expected + eu, sizeof expected - eu, "%s%s for %s", i ? ", " : "", key,
                         weight);
        mu = a > 0 && mu + (size_t)a < sizeof models ? mu + (size_t)a : mu;
        eu = b > 0 && eu + (size_t)b < sizeof expected ? eu + (size_t)b : eu;
    }
    const mgpu_lora_module *first = &l->modules[0];
    return mgpu_error_set(err, MGPU_ERR_NOT_FOUND,
                          "LoRA %s: none of its %zu modules match %s %s model%s (first: %s, %s; "
                          "expected keys like %s)",
                          l->label, l->module_count, n_parts == 1 ? "this" : "the", models,
                          n_parts == 1 ? "" : "s given", first->name, kind_phrase(first->kind),
                          expected);
}

static mgpu_status check_fit(const mgpu_lora *l, const mgpu_lora_module *mod, const map_entry *e,
                             mgpu_error *err)
{
    const mgpu_model_tensor *t = e->tensor;
    const unsigned long long r = t->info.shape[0], c = t->info.shape[1];
    if (mod->in != (int64_t)c)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "LoRA %s: module '%s' takes %lld inputs (A is [%lld, %lld]) but "
                              "'%s' is [%llu, %llu]: is this LoRA for another model size?",
                              l->label, mod->name, (long long)mod->in, (long long)mod->rank,
                              (long long)mod->in, t->name, r, c);
    if (mod->out != e->expect_out) {
        if (e->n_pieces == 1 && e->pieces[0].rows != (int64_t)r)
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "LoRA %s: module '%s' has %lld output rows (B is [%lld, %lld]) "
                                  "but modifies rows %lld..%lld of '%s' [%llu, %llu] (%lld rows)",
                                  l->label, mod->name, (long long)mod->out, (long long)mod->out,
                                  (long long)mod->rank, (long long)e->pieces[0].dst_row0,
                                  (long long)(e->pieces[0].dst_row0 + e->pieces[0].rows), t->name,
                                  r, c, (long long)e->pieces[0].rows);
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "LoRA %s: module '%s' has %lld output rows (B is [%lld, %lld]) but "
                              "'%s' is [%llu, %llu]: is this LoRA for another model size?",
                              l->label, mod->name, (long long)mod->out, (long long)mod->out,
                              (long long)mod->rank, t->name, r, c);
    }
    return MGPU_OK;
}

static mgpu_status resolve(const mgpu_lora *l, const mgpu_lora_part *parts, size_t n_parts,
                           const mgpu_lora_kind *kinds, const key_map *map,
                           mgpu_lora_resolved *r, mgpu_error *err)
{
    /* At most two targets per module. */
    r->targets = calloc(2 * l->module_count, sizeof *r->targets);
    r->unmatched = calloc(l->module_count, sizeof *r->unmatched);
    if (!r->targets || !r->unmatched)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "LoRA %s: out of memory", l->label);
    size_t matched = 0;
    for (size_t i = 0; i < l->module_count; i++) {
        const mgpu_lora_module *mod = &l->modules[i];
        const map_entry *e = lookup(map, mod->name);
        if (!e) {
            r->unmatched[r->unmatched_count++] = mod;
            continue;
        }
        mgpu_status s = check_fit(l, mod, e, err);
        if (s != MGPU_OK)
            return s;
        matched++;
        for (int p = 0; p < e->n_pieces; p++) {
            mgpu_lora_target *t = &r->targets[r->target_count++];
            t->module = mod;
            t->part = e->part;
            t->kind = kinds[e->part];
            t->tensor = e->tensor;
            t->target = e->tensor->name;
            t->row0 = e->pieces[p].dst_row0;
            t->rows = e->pieces[p].rows;
            t->b_row0 = e->pieces[p].src_row0;
            t->cols = mod->in;
            t->rank = mod->rank;
            t->alpha = mod->alpha;
            t->scale = (float)((double)mod->alpha / (double)mod->rank);
        }
    }
    if (!matched)
        return none_match(l, parts, n_parts, kinds, err);
    return MGPU_OK;
}

mgpu_status mgpu_lora_resolve(const mgpu_lora *l, const mgpu_lora_part *parts, size_t n_parts,
                              mgpu_lora_resolved **out, mgpu_error *err)
{
    *out = NULL;
    if (!l || !parts || n_parts == 0 || n_parts > 16)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "LoRA: resolve needs 1 to 16 model parts, not %zu", n_parts);
    mgpu_lora_kind kinds[16];
    for (size_t i = 0; i < n_parts; i++) {
        if (!parts[i].model || parts[i].component < 0 ||
            (size_t)parts[i].component >= mgpu_model_component_count(parts[i].model))
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                                  "LoRA %s: part %zu names no component of its model", l->label,
                                  i);
        const mgpu_model_component *c =
            mgpu_model_component_at(parts[i].model, (size_t)parts[i].component);
        kinds[i] = part_kind(c->arch);
        if (kinds[i] == MGPU_LORA_KIND_UNKNOWN)
            return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                                  "LoRA %s: part %zu is a %s model (%s); LoRA applies to FLUX.1, "
                                  "CLIP-L and T5 only",
                                  l->label, i, mgpu_arch_name(c->arch), c->arch_reason);
        if (kinds[i] == MGPU_LORA_KIND_DIFFUSION &&
            !mgpu_model_find_in(parts[i].model, (size_t)parts[i].component,
                                "double_blocks.0.img_attn.qkv.weight"))
            return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                                  "LoRA %s: part %zu is a FLUX.1 in diffusers layout; mgpu runs "
                                  "BFL-layout FLUX.1 (double_blocks.N...) only",
                                  l->label, i);
    }
    key_map map = {0};
    for (size_t i = 0; i < n_parts && !map.failed; i++)
        add_part(&map, i, &parts[i], kinds[i]);
    if (map.failed) {
        free_map(&map);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "LoRA %s: out of memory", l->label);
    }
    if (map.count)
        qsort(map.items, map.count, sizeof *map.items, entry_cmp);
    mgpu_lora_resolved *r = calloc(1, sizeof *r);
    mgpu_status s = r ? resolve(l, parts, n_parts, kinds, &map, r, err)
                      : mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "LoRA %s: out of memory", l->label);
    free_map(&map);
    if (s != MGPU_OK) {
        mgpu_lora_resolved_free(r);
        return s;
    }
    *out = r;
    return MGPU_OK;
}

void mgpu_lora_resolved_free(mgpu_lora_resolved *r)
{
    if (!r)
        return;
    free(r->targets);
    free(r->unmatched);
    free(r);
}

size_t mgpu_lora_target_count(const mgpu_lora_resolved *r)
{
    return r->target_count;
}

const mgpu_lora_target *mgpu_lora_target_at(const mgpu_lora_resolved *r, size_t index)
{
    return index < r->target_count ? &r->targets[index] : NULL;
}

size_t mgpu_lora_unmatched_count(const mgpu_lora_resolved *r)
{
    return r->unmatched_count;
}

const mgpu_lora_module *mgpu_lora_unmatched_at(const mgpu_lora_resolved *r, size_t index)
{
    return index < r->unmatched_count ? r->unmatched[index] : NULL;
}
