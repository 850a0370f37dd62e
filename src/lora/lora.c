/* Reading LoRA files: tensors grouped into modules by name, every module
 * checked once at open so later stages can trust shapes and dtypes; the
 * summary for inspect; and the f32 delta of one target. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "lora/lora_internal.h"

const char *mgpu_lora_format_name(mgpu_lora_format format)
{
    switch (format) {
    case MGPU_LORA_FORMAT_KOHYA: return "kohya";
    case MGPU_LORA_FORMAT_DIFFUSERS: return "diffusers";
    case MGPU_LORA_FORMAT_COMFY: return "comfy";
    case MGPU_LORA_FORMAT_MIXED: return "mixed";
    default: return "unknown";
    }
}

const char *mgpu_lora_kind_name(mgpu_lora_kind kind)
{
    switch (kind) {
    case MGPU_LORA_KIND_DIFFUSION: return "diffusion";
    case MGPU_LORA_KIND_CLIP: return "clip";
    case MGPU_LORA_KIND_T5: return "t5";
    default: return "unknown";
    }
}

/* ---- names -------------------------------------------------------------- */

/* Module-name prefixes; the bare BFL / Hugging Face names last. */
static const struct {
    const char *prefix;
    mgpu_lora_format format;
    mgpu_lora_kind kind;
} prefixes[] = {
    {"lora_unet_", MGPU_LORA_FORMAT_KOHYA, MGPU_LORA_KIND_DIFFUSION},
    {"lora_transformer_", MGPU_LORA_FORMAT_KOHYA, MGPU_LORA_KIND_DIFFUSION}, /* OneTrainer */
    {"lycoris_", MGPU_LORA_FORMAT_KOHYA, MGPU_LORA_KIND_DIFFUSION},          /* SimpleTuner */
    {"lora_te1_", MGPU_LORA_FORMAT_KOHYA, MGPU_LORA_KIND_CLIP},
    {"lora_te_", MGPU_LORA_FORMAT_KOHYA, MGPU_LORA_KIND_CLIP},
    {"lora_te2_", MGPU_LORA_FORMAT_KOHYA, MGPU_LORA_KIND_T5}, /* sd-scripts FLUX */
    {"lora_te3_", MGPU_LORA_FORMAT_KOHYA, MGPU_LORA_KIND_T5}, /* SD3-style numbering */
    {"transformer.", MGPU_LORA_FORMAT_DIFFUSERS, MGPU_LORA_KIND_DIFFUSION},
    {"text_encoder.", MGPU_LORA_FORMAT_DIFFUSERS, MGPU_LORA_KIND_CLIP},
    {"text_encoder_2.", MGPU_LORA_FORMAT_DIFFUSERS, MGPU_LORA_KIND_T5},
    {"diffusion_model.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_DIFFUSION},
    {"text_encoders.clip_l.transformer.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_CLIP},
    {"text_encoders.t5xxl.transformer.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_T5},
    {"double_blocks.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_DIFFUSION},
    {"single_blocks.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_DIFFUSION},
    {"img_in", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_DIFFUSION},
    {"txt_in", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_DIFFUSION},
    {"time_in.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_DIFFUSION},
    {"vector_in.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_DIFFUSION},
    {"guidance_in.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_DIFFUSION},
    {"final_layer.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_DIFFUSION},
    {"text_model.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_CLIP},
    {"encoder.block.", MGPU_LORA_FORMAT_COMFY, MGPU_LORA_KIND_T5},
};

void mgpu_lora_classify_name(const char *name, mgpu_lora_format *format, mgpu_lora_kind *kind)
{
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(name, prefixes[i].prefix, strlen(prefixes[i].prefix)) == 0) {
            *format = prefixes[i].format;
            *kind = prefixes[i].kind;
            return;
        }
    *format = MGPU_LORA_FORMAT_UNKNOWN;
    *kind = MGPU_LORA_KIND_UNKNOWN;
}

/* Down/up suffix pairs, as ComfyUI's loader accepts them. */
static const struct {
    const char *down, *up;
} pairs[] = {
    {".lora_down.weight", ".lora_up.weight"}, /* kohya */
    {".lora_A.weight", ".lora_B.weight"},     /* peft */
    {".lora.down.weight", ".lora.up.weight"},
    {"_lora.down.weight", "_lora.up.weight"}, /* old diffusers attention processors */
    {".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"},
};
enum { PAIR_COUNT = sizeof pairs / sizeof pairs[0] };

/* Adapter tensors mgpu does not apply. Skipping them would silently change
 * what the LoRA does, so they are refused. */
static const struct {
    const char *marker;
    bool suffix; /* else a substring */
    const char *what;
} unsupported[] = {
    {".hada_", false, "LoHa"},
    {".lokr_", false, "LoKr"},
    {".dora_scale", true, "DoRA"},
    {".lora_mid.weight", true, "LoCon (Tucker)"},
    {".diff", true, "full weight difference"},
    {".diff_b", true, "full bias difference"},
    {".set_weight", true, "weight replacement"},
    {".lora_B.bias", true, "LoRA bias"},
    {".lora_up.bias", true, "LoRA bias"},
};

enum role { ROLE_DOWN, ROLE_UP, ROLE_ALPHA, ROLE_UNSUPPORTED, ROLE_NONE };

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n > m && memcmp(s + n - m, suffix, m) == 0;
}

/* The role of a tensor, its suffix pair and the length of its module name. */
static enum role classify_tensor(const char *name, int *pair, size_t *base_len,
                                 const char **what)
{
    size_t n = strlen(name);
    for (int p = 0; p < PAIR_COUNT; p++) {
        if (ends_with(name, n, pairs[p].down)) {
            *pair = p;
            *base_len = n - strlen(pairs[p].down);
            return ROLE_DOWN;
        }
        if (ends_with(name, n, pairs[p].up)) {
            *pair = p;
            *base_len = n - strlen(pairs[p].up);
            return ROLE_UP;
        }
    }
    if (ends_with(name, n, ".alpha")) {
        *pair = -1;
        *base_len = n - strlen(".alpha");
        return ROLE_ALPHA;
    }
    for (size_t u = 0; u < sizeof unsupported / sizeof unsupported[0]; u++)
        if (unsupported[u].suffix ? ends_with(name, n, unsupported[u].marker)
                                  : strstr(name, unsupported[u].marker) != NULL) {
            *what = unsupported[u].what;
            return ROLE_UNSUPPORTED;
        }
    return ROLE_NONE;
}

bool mgpu_lora_is_lora_name(const char *tensor_name)
{
    int pair;
    size_t len;
    const char *what;
    enum role r = classify_tensor(tensor_name, &pair, &len, &what);
    return r == ROLE_DOWN || r == ROLE_UP || r == ROLE_ALPHA;
}

/* ---- opening ------------------------------------------------------------ */

typedef struct entry {
    char *base; /* module name, NUL-terminated copy */
    enum role role;
    int pair;
    const mgpu_tensor_info *t;
} entry;

static int entry_cmp(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    int c = strcmp(a->base, b->base);
    if (c)
        return c;
    return (int)a->role - (int)b->role;
}

static bool float_dtype(mgpu_dtype dtype)
{
    const mgpu_dtype_info *info = mgpu_dtype_get_info(dtype);
    return info && info->floating && !info->quantized;
}

static mgpu_status check_factor(const char *label, const mgpu_tensor_info *t, mgpu_error *err)
{
    if (!float_dtype(t->dtype))
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tensor '%s' has dtype %s; LoRA factors must be floating point",
                              label, t->name, mgpu_dtype_name(t->dtype));
    if (t->ndim == 4 || t->ndim == 3)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "%s: tensor '%s' has %d dimensions: convolution LoRA is not "
                              "supported (FLUX.1, CLIP and T5 have only linear layers)",
                              label, t->name, t->ndim);
    if (t->ndim != 2)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tensor '%s' has %d dimensions; a LoRA factor is a matrix",
                              label, t->name, t->ndim);
    if (t->shape[0] == 0 || t->shape[1] == 0 || t->shape[0] > INT32_MAX ||
        t->shape[1] > INT32_MAX)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tensor '%s' has shape [%llu, %llu]; LoRA factors are "
                              "non-empty and below 2^31 per side",
                              label, t->name, (unsigned long long)t->shape[0],
                              (unsigned long long)t->shape[1]);
    return MGPU_OK;
}

/* Builds one module from the entries of one name (sorted down, up, alpha). */
static mgpu_status make_module(const char *label, const entry *g, size_t n, mgpu_lora_module *m,
                               mgpu_error *err)
{
    const entry *down = NULL, *up = NULL, *alpha = NULL;
    for (size_t i = 0; i < n; i++) {
        const entry **slot = g[i].role == ROLE_DOWN ? &down : g[i].role == ROLE_UP ? &up : &alpha;
        if (*slot)
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: module '%s' has two tensors of one role: '%s' and '%s'",
                                  label, g[i].base, (*slot)->t->name, g[i].t->name);
        *slot = &g[i];
    }
    const char *base = g[0].base;
    if (down && !up)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: '%s' has no matching '%s%s'", label,
                              down->t->name, base, pairs[down->pair].up);
    if (up && !down)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: '%s' has no matching '%s%s'", label,
                              up->t->name, base, pairs[up->pair].down);
    if (!down)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: '%s' belongs to no LoRA module (no '%s.lora_down.weight' or "
                              "'%s.lora_A.weight' beside it)",
                              label, alpha->t->name, base, base);
    mgpu_status s = check_factor(label, down->t, err);
    if (s == MGPU_OK)
        s = check_factor(label, up->t, err);
    if (s != MGPU_OK)
        return s;
    const mgpu_tensor_info *a = down->t, *b = up->t;
    if (a->shape[0] != b->shape[1])
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: module '%s': rank mismatch: '%s' is [%llu, %llu] (rank %llu) "
                              "but '%s' is [%llu, %llu] (rank %llu)",
                              label, base, a->name, (unsigned long long)a->shape[0],
                              (unsigned long long)a->shape[1], (unsigned long long)a->shape[0],
                              b->name, (unsigned long long)b->shape[0],
                              (unsigned long long)b->shape[1], (unsigned long long)b->shape[1]);
    memset(m, 0, sizeof *m);
    m->a = a;
    m->b = b;
    m->rank = (int64_t)a->shape[0];
    m->in = (int64_t)a->shape[1];
    m->out = (int64_t)b->shape[0];
    m->alpha = (float)m->rank;
    if (alpha) {
        const mgpu_tensor_info *t = alpha->t;
        float v = 0.0f;
        if (t->n_elems != 1 || !float_dtype(t->dtype) ||
            mgpu_dequantize(t->dtype, t->data, &v, 1) != MGPU_OK)
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: '%s' is not a float scalar (dtype %s, %llu elements)",
                                  label, t->name, mgpu_dtype_name(t->dtype),
                                  (unsigned long long)t->n_elems);
        if (!isfinite(v))
            return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: '%s' is not finite", label,
                                  t->name);
        /* Taken as written, 0 included (ComfyUI does the same); trainers
         * store the rank rather than 0 when no alpha was set. */
        m->alpha = v;
        m->has_alpha = true;
    }
    m->name = base;
    mgpu_lora_classify_name(base, &m->format, &m->kind);
    return MGPU_OK;
}

static mgpu_status build(mgpu_lora *l, mgpu_error *err)
{
    size_t count = mgpu_safetensors_tensor_count(l->st);
    entry *entries = calloc(count ? count : 1, sizeof *entries);
    l->ignored = calloc(count ? count : 1, sizeof *l->ignored);
    l->modules = calloc(count ? count : 1, sizeof *l->modules);
    if (!entries || !l->ignored || !l->modules) {
        free(entries);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", l->label);
    }
    mgpu_status s = MGPU_OK;
    size_t n = 0;
    for (size_t i = 0; i < count && s == MGPU_OK; i++) {
        const mgpu_tensor_info *t = mgpu_safetensors_tensor(l->st, i);
        int pair = -1;
        size_t len = 0;
        const char *what = NULL;
        enum role r = classify_tensor(t->name, &pair, &len, &what);
        if (r == ROLE_NONE) {
            l->ignored[l->ignored_count++] = t->name;
            continue;
        }
        if (r == ROLE_UNSUPPORTED) {
            s = mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                               "%s: '%s' is part of a %s adapter; mgpu applies plain LoRA "
                               "(down/up or A/B pairs) only",
                               l->label, t->name, what);
            break;
        }
        char *base = malloc(len + 1);
        if (!base) {
            s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", l->label);
            break;
        }
        memcpy(base, t->name, len);
        base[len] = '\0';
        entries[n++] = (entry){base, r, pair, t};
    }
    if (s == MGPU_OK && n)
        qsort(entries, n, sizeof *entries, entry_cmp);
    for (size_t i = 0; s == MGPU_OK && i < n;) {
        size_t j = i + 1;
        while (j < n && strcmp(entries[j].base, entries[i].base) == 0)
            j++;
        s = make_module(l->label, entries + i, j - i, &l->modules[l->module_count], err);
        if (s == MGPU_OK) {
            entries[i].base = NULL; /* now owned by the module */
            l->module_count++;
        }
        i = j;
    }
    for (size_t i = 0; i < n; i++)
        free(entries[i].base);
    free(entries);
    if (s == MGPU_OK && l->module_count == 0)
        s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                           "%s: no LoRA modules in it (no 'NAME.lora_down.weight' + "
                           "'NAME.lora_up.weight' or 'NAME.lora_A.weight' + 'NAME.lora_B.weight' "
                           "pairs among its %zu tensors)",
                           l->label, count);
    return s;
}

static mgpu_status finish_open(mgpu_lora *l, mgpu_lora **out, mgpu_error *err)
{
    mgpu_status s = build(l, err);
    if (s != MGPU_OK) {
        mgpu_lora_free(l);
        return s;
    }
    *out = l;
    return MGPU_OK;
}

static mgpu_lora *new_lora(const char *label, mgpu_error *err)
{
    mgpu_lora *l = calloc(1, sizeof *l);
    size_t n = strlen(label);
    if (l)
        l->label = malloc(n + 1);
    if (!l || !l->label) {
        free(l);
        mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
        return NULL;
    }
    memcpy(l->label, label, n + 1);
    return l;
}

mgpu_status mgpu_lora_open(const char *path, mgpu_lora **out, mgpu_error *err)
{
    *out = NULL;
    mgpu_lora *l = new_lora(path, err);
    if (!l)
        return MGPU_ERR_NO_MEMORY;
    mgpu_status s = mgpu_safetensors_open(path, &l->st, err);
    if (s != MGPU_OK) {
        mgpu_lora_free(l);
        return s;
    }
    return finish_open(l, out, err);
}

mgpu_status mgpu_lora_open_memory(const void *data, uint64_t size, const char *label,
                                  mgpu_lora **out, mgpu_error *err)
{
    *out = NULL;
    mgpu_lora *l = new_lora(label, err);
    if (!l)
        return MGPU_ERR_NO_MEMORY;
    mgpu_status s = mgpu_safetensors_open_memory(data, size, label, &l->st, err);
    if (s != MGPU_OK) {
        mgpu_lora_free(l);
        return s;
    }
    return finish_open(l, out, err);
}

void mgpu_lora_free(mgpu_lora *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->module_count; i++)
        free((char *)l->modules[i].name);
    free(l->modules);
    free(l->ignored);
    if (l->st)
        mgpu_safetensors_close(l->st);
    free(l->label);
    free(l);
}

const char *mgpu_lora_label(const mgpu_lora *l)
{
    return l->label;
}

size_t mgpu_lora_module_count(const mgpu_lora *l)
{
    return l->module_count;
}

const mgpu_lora_module *mgpu_lora_module_at(const mgpu_lora *l, size_t index)
{
    return index < l->module_count ? &l->modules[index] : NULL;
}

size_t mgpu_lora_ignored_count(const mgpu_lora *l)
{
    return l->ignored_count;
}

const char *mgpu_lora_ignored_at(const mgpu_lora *l, size_t index)
{
    return index < l->ignored_count ? l->ignored[index] : NULL;
}

void mgpu_lora_summarize(const mgpu_lora *l, mgpu_lora_summary *out)
{
    memset(out, 0, sizeof *out);
    out->modules = l->module_count;
    out->ignored = l->ignored_count;
    for (size_t i = 0; i < l->module_count; i++) {
        const mgpu_lora_module *m = &l->modules[i];
        out->by_kind[m->kind]++;
        if (m->format != MGPU_LORA_FORMAT_UNKNOWN) {
            if (out->format == MGPU_LORA_FORMAT_UNKNOWN)
                out->format = m->format;
            else if (out->format != m->format)
                out->format = MGPU_LORA_FORMAT_MIXED;
        }
        if (i == 0) {
            out->rank_min = out->rank_max = m->rank;
            out->alpha_min = out->alpha_max = m->alpha;
            out->dtype = m->a->dtype;
        }
        out->rank_min = m->rank < out->rank_min ? m->rank : out->rank_min;
        out->rank_max = m->rank > out->rank_max ? m->rank : out->rank_max;
        out->alpha_min = m->alpha < out->alpha_min ? m->alpha : out->alpha_min;
        out->alpha_max = m->alpha > out->alpha_max ? m->alpha : out->alpha_max;
        out->with_alpha += m->has_alpha;
        if (m->a->dtype != out->dtype || m->b->dtype != out->dtype)
            out->dtype = MGPU_DTYPE_INVALID;
    }
}

/* ---- math --------------------------------------------------------------- */

mgpu_status mgpu_lora_target_factors(const mgpu_lora_target *t, float *a, float *b,
                                     mgpu_error *err)
{
    const mgpu_lora_module *m = t->module;
    if (t->b_row0 < 0 || t->rows < 1 || t->b_row0 + t->rows > m->out || t->cols != m->in)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "LoRA module '%s': target rows or columns out of range", m->name);
    if (a && mgpu_dequantize(m->a->dtype, m->a->data, a, (uint64_t)(m->rank * m->in)) != MGPU_OK)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "LoRA: cannot decode '%s'", m->a->name);
    if (b) {
        const mgpu_dtype_info *info = mgpu_dtype_get_info(m->b->dtype);
        const uint8_t *src = (const uint8_t *)m->b->data +
                             (size_t)t->b_row0 * (size_t)m->rank * info->block_bytes;
        if (mgpu_dequantize(m->b->dtype, src, b, (uint64_t)(t->rows * m->rank)) != MGPU_OK)
            return mgpu_error_set(err, MGPU_ERR_FORMAT, "LoRA: cannot decode '%s'", m->b->name);
    }
    return MGPU_OK;
}

mgpu_status mgpu_lora_delta(const mgpu_lora_target *t, float strength, float *delta,
                            mgpu_error *err)
{
    const int64_t rank = t->module->rank, cols = t->cols, rows = t->rows;
    float *a = malloc((size_t)(rank * cols) * sizeof *a);
    float *b = malloc((size_t)(rows * rank) * sizeof *b);
    double *acc = malloc((size_t)cols * sizeof *acc);
    mgpu_status s = MGPU_OK;
    if (!a || !b || !acc)
        s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "LoRA module '%s': out of memory",
                           t->module->name);
    if (s == MGPU_OK)
        s = mgpu_lora_target_factors(t, a, b, err);
    if (s == MGPU_OK) {
        /* One scale for the row, applied after the sum, as the reference
         * strength * (alpha / rank) * (B @ A) reads. */
        const double scale = (double)strength * ((double)t->alpha / (double)rank);
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = 0; c < cols; c++)
                acc[c] = 0.0;
            for (int64_t k = 0; k < rank; k++) {
                const double bk = b[r * rank + k];
                const float *ak = a + k * cols;
                for (int64_t c = 0; c < cols; c++)
                    acc[c] += bk * (double)ak[c];
            }
            for (int64_t c = 0; c < cols; c++)
                delta[r * cols + c] = (float)(scale * acc[c]);
        }
    }
    free(a);
    free(b);
    free(acc);
    return s;
}
