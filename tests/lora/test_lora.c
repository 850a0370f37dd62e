/* LoRA files (src/lora): for each family (kohya, diffusers, ComfyUI) a
 * synthetic file with the real key names is opened and resolved against
 * tiny synthetic FLUX.1-dev, CLIP-L and T5 checkpoints. Every target's
 * weight name, row range, rank and alpha is checked against tables written
 * here from the published layouts (not from the code under test); the
 * deltas against strength * (alpha/rank) * (B @ A) in double; diffusers'
 * separate q/k/v (and proj_mlp) by assembling the fused weight's delta row
 * by row; norm_out's swapped halves; and one clear error per malformation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora/lora.h"
#include "mgpu/model.h"
#include "mgpu/safetensors.h"
#include "synth_lora.h"
#include "synth_write.h"
#include "test_models.h"
#include "test_util.h"

enum { H = 256, MLP = 1024 }; /* the tiny FLUX: hidden and MLP width */

static char flux_path[1024], clip_path[1024], t5_path[1024], t5_gguf_names_path[1024];

/* ---- helpers -------------------------------------------------------------- */

static mgpu_lora *lora_open_ok(const char *path)
{
    mgpu_lora *l = NULL;
    mgpu_error err = {0};
    if (mgpu_lora_open(path, &l, &err) != MGPU_OK)
        fail_msg("open LoRA %s: %s", path, err.message);
    return l;
}

static void write_lora(const char *path, const char *arch, synth_lora_format format,
                       int64_t rank, float alpha, int has_alpha, mgpu_dtype dtype, uint64_t seed)
{
    synth_lora_list list = {0};
    assert_true(synth_lora_modules(arch, format, rank, alpha, has_alpha, &list));
    mgpu_error err = {0};
    if (synth_lora_write(path, &list, format, dtype, seed, &err) != MGPU_OK)
        fail_msg("write %s: %s", path, err.message);
    synth_lora_list_free(&list);
}

static void write_list(const char *path, const synth_lora_list *list, synth_lora_format format,
                       mgpu_dtype dtype)
{
    mgpu_error err = {0};
    if (synth_lora_write(path, list, format, dtype, 7, &err) != MGPU_OK)
        fail_msg("write %s: %s", path, err.message);
}

static void add_module(synth_lora_list *list, const char *name, int64_t in, int64_t out,
                       int64_t rank)
{
    synth_lora_module m = {.in = in, .out = out, .rank = rank, .alpha = (float)rank};
    snprintf(m.name, sizeof m.name, "%s", name);
    assert_true(synth_lora_add(list, &m));
}

static mgpu_lora_resolved *resolve_ok(const mgpu_lora *l, const mgpu_lora_part *parts, size_t n)
{
    mgpu_lora_resolved *r = NULL;
    mgpu_error err = {0};
    if (mgpu_lora_resolve(l, parts, n, &r, &err) != MGPU_OK)
        fail_msg("resolve %s: %s", mgpu_lora_label(l), err.message);
    return r;
}

/* The error of resolving (or, with parts NULL, of opening) path. */
static mgpu_status lora_error(const char *path, const mgpu_lora_part *parts, size_t n,
                              mgpu_error *err)
{
    mgpu_lora *l = NULL;
    mgpu_status s = mgpu_lora_open(path, &l, err);
    if (s != MGPU_OK) {
        assert_null(l);
        return s;
    }
    assert_non_null(parts);
    mgpu_lora_resolved *r = NULL;
    s = mgpu_lora_resolve(l, parts, n, &r, err);
    assert_true(s != MGPU_OK);
    assert_null(r);
    mgpu_lora_free(l);
    return s;
}

static void assert_contains(const char *text, const char *part)
{
    if (!strstr(text, part))
        fail_msg("'%s' does not contain '%s'", text, part);
}

static const mgpu_lora_target *find_target(const mgpu_lora_resolved *r, const char *module,
                                           int64_t row0)
{
    for (size_t i = 0; i < mgpu_lora_target_count(r); i++) {
        const mgpu_lora_target *t = mgpu_lora_target_at(r, i);
        if (strcmp(t->module->name, module) == 0 && t->row0 == row0)
            return t;
    }
    fail_msg("no target for module %s at row %lld", module, (long long)row0);
    return NULL;
}

static float *decode(const mgpu_tensor_info *t)
{
    float *v = malloc((size_t)t->n_elems * sizeof *v);
    assert_non_null(v);
    assert_int_equal(mgpu_dequantize(t->dtype, t->data, v, t->n_elems), MGPU_OK);
    return v;
}

/* strength * (alpha/rank) * B[b0 + r] . A[:, c] in double, straight from
 * the module's stored factors; and the scale of the terms, for tolerance. */
static double reference(const mgpu_lora_module *m, const float *a, const float *b, double strength,
                        int64_t b_row, int64_t c, double *magnitude)
{
    double sum = 0.0, mag = 0.0;
    for (int64_t k = 0; k < m->rank; k++) {
        double term = (double)b[b_row * m->rank + k] * (double)a[k * m->in + c];
        sum += term;
        mag += fabs(term);
    }
    double scale = strength * (double)m->alpha / (double)m->rank;
    *magnitude = fabs(scale) * mag;
    return scale * sum;
}

/* mgpu_lora_delta of t against the double reference. */
static void check_delta(const mgpu_lora_target *t, float strength)
{
    const mgpu_lora_module *m = t->module;
    float *a = decode(m->a), *b = decode(m->b);
    float *d = malloc((size_t)(t->rows * t->cols) * sizeof *d);
    assert_non_null(d);
    mgpu_error err = {0};
    if (mgpu_lora_delta(t, strength, d, &err) != MGPU_OK)
        fail_msg("delta %s: %s", m->name, err.message);
    for (int64_t r = 0; r < t->rows; r++)
        for (int64_t c = 0; c < t->cols; c++) {
            double mag;
            double ref = reference(m, a, b, strength, t->b_row0 + r, c, &mag);
            /* One f32 rounding of a double-accumulated sum: well under 1e-6
             * of the terms' magnitude; a wrong row, column or scale is O(1). */
            double err_abs = fabs((double)d[r * t->cols + c] - ref);
            if (err_abs > 1e-6 * mag + 1e-30)
                fail_msg("%s row %lld col %lld: %.9g vs %.9g", m->name, (long long)r,
                         (long long)c, (double)d[r * t->cols + c], ref);
        }
    free(a);
    free(b);
    free(d);
}

/* ---- fixtures ----------------------------------------------------------- */

static void write_t5_gguf_names(const char *path)
{
    /* llama.cpp's T5 names (as city96's GGUFs carry), data left as holes. */
    static const struct {
        const char *name;
        uint64_t rows, cols;
    } ts[] = {
        {"token_embd.weight", 1024, 256},       {"enc.blk.%d.attn_q.weight", 256, 256},
        {"enc.blk.%d.attn_k.weight", 256, 256}, {"enc.blk.%d.attn_v.weight", 256, 256},
        {"enc.blk.%d.attn_o.weight", 256, 256}, {"enc.blk.%d.ffn_gate.weight", 512, 256},
        {"enc.blk.%d.ffn_up.weight", 512, 256}, {"enc.blk.%d.ffn_down.weight", 256, 512},
    };
    mgpu_safetensors_writer *w = NULL;
    mgpu_error err = {0};
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    uint64_t total = 0;
    for (int b = 0; b < 2; b++)
        for (size_t i = b ? 1 : 0; i < sizeof ts / sizeof ts[0]; i++) {
            char name[128];
            snprintf(name, sizeof name, ts[i].name, b);
            uint64_t shape[2] = {ts[i].rows, ts[i].cols};
            assert_int_equal(
                mgpu_safetensors_writer_add_tensor(w, name, MGPU_DTYPE_F16, 2, shape, &err),
                MGPU_OK);
            total += 2 * ts[i].rows * ts[i].cols;
        }
    assert_int_equal(mgpu_safetensors_writer_write(w, NULL, total, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
}

static int setup(void **state)
{
    (void)state;
    snprintf(flux_path, sizeof flux_path, "%s", test_path("lora-flux.safetensors"));
    snprintf(clip_path, sizeof clip_path, "%s", test_path("lora-clip.safetensors"));
    snprintf(t5_path, sizeof t5_path, "%s", test_path("lora-t5.gguf"));
    snprintf(t5_gguf_names_path, sizeof t5_gguf_names_path, "%s",
             test_path("lora-t5-llama-names.safetensors"));
    /* FLUX under ComfyUI's prefix: the model view strips it, targets must
     * carry the stripped names. */
    synth("flux-dev", 0, MGPU_DTYPE_F16, "model.diffusion_model.", 11, flux_path);
    synth("clip-l", 0, MGPU_DTYPE_F16, "", 12, clip_path);
    synth("t5-xxl", 1, MGPU_DTYPE_Q8_0, "", 13, t5_path);
    write_t5_gguf_names(t5_gguf_names_path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    remove(flux_path);
    remove(clip_path);
    remove(t5_path);
    remove(t5_gguf_names_path);
    return 0;
}

/* The component of a single-component model. */
static mgpu_lora_part part_of(const mgpu_model *m)
{
    assert_int_equal(mgpu_model_component_count(m), 1);
    return (mgpu_lora_part){m, 0};
}

/* ---- FLUX: kohya and ComfyUI (BFL names, whole weights) ------------------ */

/* The BFL block linears and their rows in the tiny FLUX. */
static const struct {
    const char *module; /* with %d for the block */
    int64_t rows, cols;
} bfl_linears[] = {
    {"double_blocks.%d.img_mod.lin", 6 * H, H},  {"double_blocks.%d.img_attn.qkv", 3 * H, H},
    {"double_blocks.%d.img_attn.proj", H, H},    {"double_blocks.%d.img_mlp.0", MLP, H},
    {"double_blocks.%d.img_mlp.2", H, MLP},      {"double_blocks.%d.txt_mod.lin", 6 * H, H},
    {"double_blocks.%d.txt_attn.qkv", 3 * H, H}, {"double_blocks.%d.txt_attn.proj", H, H},
    {"double_blocks.%d.txt_mlp.0", MLP, H},      {"double_blocks.%d.txt_mlp.2", H, MLP},
    {"single_blocks.%d.linear1", 3 * H + MLP, H}, {"single_blocks.%d.linear2", H, H + MLP},
    {"single_blocks.%d.modulation.lin", 3 * H, H},
};

static void check_bfl_family(synth_lora_format format, const char *prefix, bool underscores,
                             int has_alpha, mgpu_lora_format expect_format)
{
    const char *path = test_path("bfl-family.safetensors");
    const float alpha = has_alpha ? 8.0f : 0.0f;
    write_lora(path, "flux-dev", format, 4, alpha, has_alpha, MGPU_DTYPE_BF16, 21);
    mgpu_lora *l = lora_open_ok(path);
    mgpu_lora_summary sum;
    mgpu_lora_summarize(l, &sum);
    const size_t expected = 2 * 10 + 2 * 3;
    assert_int_equal(sum.format, expect_format);
    assert_int_equal(sum.modules, expected);
    assert_int_equal(sum.by_kind[MGPU_LORA_KIND_DIFFUSION], expected);
    assert_int_equal(sum.rank_min, 4);
    assert_int_equal(sum.rank_max, 4);
    assert_true(sum.alpha_min == (has_alpha ? 8.0f : 4.0f) && sum.alpha_max == sum.alpha_min);
    assert_int_equal(sum.with_alpha, has_alpha ? expected : 0);
    assert_int_equal(sum.dtype, MGPU_DTYPE_BF16);
    assert_int_equal(sum.ignored, 0);

    mgpu_model *flux = open_ok(flux_path);
    mgpu_lora_part part = part_of(flux);
    mgpu_lora_resolved *r = resolve_ok(l, &part, 1);
    assert_int_equal(mgpu_lora_target_count(r), expected);
    assert_int_equal(mgpu_lora_unmatched_count(r), 0);
    size_t seen = 0;
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < sizeof bfl_linears / sizeof bfl_linears[0]; i++) {
            char bfl[128], name[160], weight[160];
            snprintf(bfl, sizeof bfl, bfl_linears[i].module, b);
            snprintf(name, sizeof name, "%s%s", prefix, bfl);
            if (underscores)
                for (char *c = name; *c; c++)
                    *c = *c == '.' ? '_' : *c;
            snprintf(weight, sizeof weight, "%s.weight", bfl);
            const mgpu_lora_target *t = find_target(r, name, 0);
            assert_string_equal(t->target, weight);
            assert_string_equal(t->tensor->name, weight);
            assert_int_equal(t->kind, MGPU_LORA_KIND_DIFFUSION);
            assert_int_equal(t->part, 0);
            assert_int_equal(t->rows, bfl_linears[i].rows);
            assert_int_equal(t->cols, bfl_linears[i].cols);
            assert_int_equal(t->b_row0, 0);
            assert_int_equal(t->rank, 4);
            assert_true(t->alpha == (has_alpha ? 8.0f : 4.0f));
            assert_true(t->scale == (has_alpha ? 2.0f : 1.0f));
            seen++;
        }
    assert_int_equal(seen, expected);
    check_delta(find_target(r, underscores ? "lora_unet_double_blocks_1_txt_attn_qkv"
                                           : "diffusion_model.double_blocks.1.txt_attn.qkv",
                            0),
                0.75f);
    mgpu_lora_resolved_free(r);
    mgpu_model_close(flux);
    mgpu_lora_free(l);
    remove(path);
}

static void test_kohya_flux(void **state)
{
    (void)state;
    check_bfl_family(SYNTH_LORA_KOHYA, "lora_unet_", true, 1, MGPU_LORA_FORMAT_KOHYA);
}

static void test_comfy_flux(void **state)
{
    (void)state;
    check_bfl_family(SYNTH_LORA_COMFY, "diffusion_model.", false, 0, MGPU_LORA_FORMAT_COMFY);
}

/* ---- FLUX: diffusers names, q/k/v split ----------------------------------- */

/* diffusers module -> BFL weight and rows, from diffusers' FLUX conversion
 * and ComfyUI's flux_to_diffusers. */
static const struct {
    const char *module, *weight;
    int64_t row0, rows, cols;
} diffusers_map[] = {
    {"transformer.transformer_blocks.1.attn.to_q", "double_blocks.1.img_attn.qkv.weight", 0, H, H},
    {"transformer.transformer_blocks.1.attn.to_k", "double_blocks.1.img_attn.qkv.weight", H, H, H},
    {"transformer.transformer_blocks.1.attn.to_v", "double_blocks.1.img_attn.qkv.weight", 2 * H, H,
     H},
    {"transformer.transformer_blocks.0.attn.add_q_proj", "double_blocks.0.txt_attn.qkv.weight", 0,
     H, H},
    {"transformer.transformer_blocks.0.attn.add_k_proj", "double_blocks.0.txt_attn.qkv.weight", H,
     H, H},
    {"transformer.transformer_blocks.0.attn.add_v_proj", "double_blocks.0.txt_attn.qkv.weight",
     2 * H, H, H},
    {"transformer.transformer_blocks.0.attn.to_out.0", "double_blocks.0.img_attn.proj.weight", 0,
     H, H},
    {"transformer.transformer_blocks.0.attn.to_add_out", "double_blocks.0.txt_attn.proj.weight", 0,
     H, H},
    {"transformer.transformer_blocks.0.norm1.linear", "double_blocks.0.img_mod.lin.weight", 0,
     6 * H, H},
    {"transformer.transformer_blocks.0.norm1_context.linear", "double_blocks.0.txt_mod.lin.weight",
     0, 6 * H, H},
    {"transformer.transformer_blocks.0.ff.net.0.proj", "double_blocks.0.img_mlp.0.weight", 0, MLP,
     H},
    {"transformer.transformer_blocks.0.ff.net.2", "double_blocks.0.img_mlp.2.weight", 0, H, MLP},
    {"transformer.transformer_blocks.0.ff_context.net.0.proj", "double_blocks.0.txt_mlp.0.weight",
     0, MLP, H},
    {"transformer.transformer_blocks.0.ff_context.net.2", "double_blocks.0.txt_mlp.2.weight", 0, H,
     MLP},
    {"transformer.single_transformer_blocks.1.attn.to_q", "single_blocks.1.linear1.weight", 0, H,
     H},
    {"transformer.single_transformer_blocks.1.attn.to_k", "single_blocks.1.linear1.weight", H, H,
     H},
    {"transformer.single_transformer_blocks.1.attn.to_v", "single_blocks.1.linear1.weight", 2 * H,
     H, H},
    {"transformer.single_transformer_blocks.1.proj_mlp", "single_blocks.1.linear1.weight", 3 * H,
     MLP, H},
    {"transformer.single_transformer_blocks.1.proj_out", "single_blocks.1.linear2.weight", 0, H,
     H + MLP},
    {"transformer.single_transformer_blocks.1.norm.linear", "single_blocks.1.modulation.lin.weight",
     0, 3 * H, H},
    {"transformer.x_embedder", "img_in.weight", 0, H, 64},
    {"transformer.context_embedder", "txt_in.weight", 0, H, 256},
    {"transformer.time_text_embed.timestep_embedder.linear_1", "time_in.in_layer.weight", 0, H,
     256},
    {"transformer.time_text_embed.timestep_embedder.linear_2", "time_in.out_layer.weight", 0, H,
     H},
    {"transformer.time_text_embed.text_embedder.linear_1", "vector_in.in_layer.weight", 0, H, 256},
    {"transformer.time_text_embed.text_embedder.linear_2", "vector_in.out_layer.weight", 0, H, H},
    {"transformer.time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer.weight", 0, H,
     256},
    {"transformer.time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer.weight", 0,
     H, H},
    {"transformer.proj_out", "final_layer.linear.weight", 0, 64, H},
};

static void test_diffusers_flux(void **state)
{
    (void)state;
    const char *path = test_path("diffusers-flux.safetensors");
    write_lora(path, "flux-dev", SYNTH_LORA_DIFFUSERS, 8, 0.0f, 0, MGPU_DTYPE_F16, 22);
    mgpu_lora *l = lora_open_ok(path);
    mgpu_lora_summary sum;
    mgpu_lora_summarize(l, &sum);
    /* 14 per double block, 6 per single, 8 embedders, proj_out, norm_out. */
    const size_t modules = 2 * 14 + 2 * 6 + 8 + 2;
    assert_int_equal(sum.format, MGPU_LORA_FORMAT_DIFFUSERS);
    assert_int_equal(sum.modules, modules);
    assert_int_equal(sum.dtype, MGPU_DTYPE_F16);

    mgpu_model *flux = open_ok(flux_path);
    mgpu_lora_part part = part_of(flux);
    mgpu_lora_resolved *r = resolve_ok(l, &part, 1);
    assert_int_equal(mgpu_lora_unmatched_count(r), 0);
    assert_int_equal(mgpu_lora_target_count(r), modules + 1); /* norm_out: two halves */
    for (size_t i = 0; i < sizeof diffusers_map / sizeof diffusers_map[0]; i++) {
        const mgpu_lora_target *t = find_target(r, diffusers_map[i].module, diffusers_map[i].row0);
        assert_string_equal(t->target, diffusers_map[i].weight);
        assert_int_equal(t->rows, diffusers_map[i].rows);
        assert_int_equal(t->cols, diffusers_map[i].cols);
        assert_int_equal(t->b_row0, 0);
        assert_int_equal(t->rank, 8);
        assert_true(t->alpha == 8.0f && t->scale == 1.0f);
    }
    /* norm_out.linear is (scale, shift), final_layer.adaLN_modulation.1 is
     * (shift, scale): B's first half lands on the second half. */
    const mgpu_lora_target *lo = find_target(r, "transformer.norm_out.linear", 0);
    const mgpu_lora_target *hi = find_target(r, "transformer.norm_out.linear", H);
    assert_string_equal(lo->target, "final_layer.adaLN_modulation.1.weight");
    assert_string_equal(hi->target, "final_layer.adaLN_modulation.1.weight");
    assert_int_equal(lo->rows, H);
    assert_int_equal(hi->rows, H);
    assert_int_equal(lo->b_row0, H);
    assert_int_equal(hi->b_row0, 0);
    check_delta(lo, 1.0f);
    check_delta(find_target(r, "transformer.single_transformer_blocks.1.proj_mlp", 3 * H), -0.5f);
    mgpu_lora_resolved_free(r);
    mgpu_model_close(flux);
    mgpu_lora_free(l);
    remove(path);
}

/* The full delta of one fused weight, assembled from every target on it,
 * against a reference built per row from the module that owns the row. */
static void check_fused(const mgpu_lora_resolved *r, const mgpu_lora *l, const char *weight,
                        int64_t rows, int64_t cols, const char *const *modules,
                        const int64_t *starts, int n, float strength)
{
    float *full = calloc((size_t)(rows * cols), sizeof *full);
    assert_non_null(full);
    int covered = 0;
    for (size_t i = 0; i < mgpu_lora_target_count(r); i++) {
        const mgpu_lora_target *t = mgpu_lora_target_at(r, i);
        if (strcmp(t->target, weight) != 0)
            continue;
        float *d = malloc((size_t)(t->rows * t->cols) * sizeof *d);
        assert_non_null(d);
        assert_int_equal(mgpu_lora_delta(t, strength, d, NULL), MGPU_OK);
        assert_true(t->row0 >= 0 && t->row0 + t->rows <= rows && t->cols == cols);
        for (int64_t x = 0; x < t->rows * t->cols; x++)
            full[t->row0 * cols + x] += d[x];
        free(d);
        covered++;
    }
    assert_int_equal(covered, n);
    for (int m = 0; m < n; m++) {
        const mgpu_lora_module *mod = NULL;
        for (size_t i = 0; i < mgpu_lora_module_count(l); i++)
            if (strcmp(mgpu_lora_module_at(l, i)->name, modules[m]) == 0)
                mod = mgpu_lora_module_at(l, i);
        assert_non_null(mod);
        float *a = decode(mod->a), *b = decode(mod->b);
        const int64_t end = m + 1 < n ? starts[m + 1] : rows;
        assert_int_equal(mod->out, end - starts[m]);
        for (int64_t row = starts[m]; row < end; row++)
            for (int64_t c = 0; c < cols; c++) {
                double mag;
                double ref = reference(mod, a, b, strength, row - starts[m], c, &mag);
                if (fabs((double)full[row * cols + c] - ref) > 1e-6 * mag + 1e-30)
                    fail_msg("%s row %lld (module %s) col %lld: %.9g vs %.9g", weight,
                             (long long)row, modules[m], (long long)c,
                             (double)full[row * cols + c], ref);
            }
        free(a);
        free(b);
    }
    free(full);
}

static void test_qkv_split(void **state)
{
    (void)state;
    const char *path = test_path("qkv-split.safetensors");
    /* Different ranks and alphas per slice, so a slice landing on another's
     * rows cannot pass. */
    synth_lora_list list = {0};
    static const char *const dbl[] = {"transformer.transformer_blocks.0.attn.to_q",
                                      "transformer.transformer_blocks.0.attn.to_k",
                                      "transformer.transformer_blocks.0.attn.to_v"};
    static const char *const sgl[] = {"transformer.single_transformer_blocks.0.attn.to_q",
                                      "transformer.single_transformer_blocks.0.attn.to_k",
                                      "transformer.single_transformer_blocks.0.attn.to_v",
                                      "transformer.single_transformer_blocks.0.proj_mlp"};
    for (int i = 0; i < 3; i++) {
        add_module(&list, dbl[i], H, H, 2 + i);
        list.items[list.count - 1].alpha = 1.0f + (float)i;
        list.items[list.count - 1].has_alpha = 1;
    }
    for (int i = 0; i < 4; i++)
        add_module(&list, sgl[i], H, i == 3 ? MLP : H, 3 + i);
    write_list(path, &list, SYNTH_LORA_DIFFUSERS, MGPU_DTYPE_F32);
    synth_lora_list_free(&list);

    mgpu_lora *l = lora_open_ok(path);
    mgpu_model *flux = open_ok(flux_path);
    mgpu_lora_part part = part_of(flux);
    mgpu_lora_resolved *r = resolve_ok(l, &part, 1);
    assert_int_equal(mgpu_lora_target_count(r), 7);
    check_fused(r, l, "double_blocks.0.img_attn.qkv.weight", 3 * H, H, dbl,
                (const int64_t[]){0, H, 2 * H}, 3, 0.8f);
    check_fused(r, l, "single_blocks.0.linear1.weight", 3 * H + MLP, H, sgl,
                (const int64_t[]){0, H, 2 * H, 3 * H}, 4, 1.3f);
    mgpu_lora_resolved_free(r);
    mgpu_model_close(flux);
    mgpu_lora_free(l);
    remove(path);
}

/* ---- CLIP-L and T5 -------------------------------------------------------- */

static void check_encoder(const char *arch, synth_lora_format format, const char *model_path,
                          const char *module, const char *weight, int64_t rows, int64_t cols,
                          mgpu_lora_kind kind, size_t modules)
{
    const char *path = test_path("encoder.safetensors");
    write_lora(path, arch, format, 4, 2.0f, 1, MGPU_DTYPE_F32, 23);
    mgpu_lora *l = lora_open_ok(path);
    mgpu_lora_summary sum;
    mgpu_lora_summarize(l, &sum);
    assert_int_equal(sum.modules, modules);
    assert_int_equal(sum.by_kind[kind], modules);
    mgpu_model *m = open_ok(model_path);
    mgpu_lora_part part = part_of(m);
    mgpu_lora_resolved *r = resolve_ok(l, &part, 1);
    assert_int_equal(mgpu_lora_target_count(r), modules);
    assert_int_equal(mgpu_lora_unmatched_count(r), 0);
    const mgpu_lora_target *t = find_target(r, module, 0);
    assert_string_equal(t->target, weight);
    assert_int_equal(t->kind, kind);
    assert_int_equal(t->rows, rows);
    assert_int_equal(t->cols, cols);
    assert_true(t->scale == 0.5f);
    check_delta(t, 1.0f);
    mgpu_lora_resolved_free(r);
    mgpu_model_close(m);
    mgpu_lora_free(l);
    remove(path);
}

static void test_clip(void **state)
{
    (void)state;
    const size_t n = 2 * 6; /* q, k, v, out_proj, fc1, fc2 per layer */
    check_encoder("clip-l", SYNTH_LORA_KOHYA, clip_path,
                  "lora_te1_text_model_encoder_layers_1_self_attn_k_proj",
                  "text_model.encoder.layers.1.self_attn.k_proj.weight", 256, 256,
                  MGPU_LORA_KIND_CLIP, n);
    check_encoder("clip-l", SYNTH_LORA_DIFFUSERS, clip_path,
                  "text_encoder.text_model.encoder.layers.0.mlp.fc1",
                  "text_model.encoder.layers.0.mlp.fc1.weight", 1024, 256, MGPU_LORA_KIND_CLIP, n);
    check_encoder("clip-l", SYNTH_LORA_COMFY, clip_path,
                  "text_encoders.clip_l.transformer.text_model.encoder.layers.1.mlp.fc2",
                  "text_model.encoder.layers.1.mlp.fc2.weight", 256, 1024, MGPU_LORA_KIND_CLIP,
                  n);
}

static void test_t5(void **state)
{
    (void)state;
    const size_t n = 2 * 7; /* q, k, v, o, wi_0, wi_1, wo per block */
    check_encoder("t5-xxl", SYNTH_LORA_KOHYA, t5_path,
                  "lora_te2_encoder_block_1_layer_1_DenseReluDense_wi_0",
                  "encoder.block.1.layer.1.DenseReluDense.wi_0.weight", 512, 256,
                  MGPU_LORA_KIND_T5, n);
    check_encoder("t5-xxl", SYNTH_LORA_DIFFUSERS, t5_path,
                  "text_encoder_2.encoder.block.0.layer.0.SelfAttention.v",
                  "encoder.block.0.layer.0.SelfAttention.v.weight", 256, 256, MGPU_LORA_KIND_T5,
                  n);
    /* llama.cpp GGUF names in the model, Hugging Face names in the LoRA. */
    check_encoder("t5-xxl", SYNTH_LORA_KOHYA, t5_gguf_names_path,
                  "lora_te2_encoder_block_1_layer_1_DenseReluDense_wo", "enc.blk.1.ffn_down.weight",
                  256, 512, MGPU_LORA_KIND_T5, n);
    check_encoder("t5-xxl", SYNTH_LORA_COMFY, t5_gguf_names_path,
                  "text_encoders.t5xxl.transformer.encoder.block.0.layer.1.DenseReluDense.wi_1",
                  "enc.blk.0.ffn_up.weight", 512, 256, MGPU_LORA_KIND_T5, n);
}

/* One file for all three, resolved against the three models at once; and
 * against FLUX alone, the encoder modules are unmatched, not an error. */
static void test_parts(void **state)
{
    (void)state;
    const char *path = test_path("all-parts.safetensors");
    synth_lora_list list = {0};
    assert_true(synth_lora_modules("flux-dev", SYNTH_LORA_KOHYA, 4, 4.0f, 1, &list));
    assert_true(synth_lora_modules("clip-l", SYNTH_LORA_KOHYA, 4, 4.0f, 1, &list));
    assert_true(synth_lora_modules("t5-xxl", SYNTH_LORA_KOHYA, 4, 4.0f, 1, &list));
    write_list(path, &list, SYNTH_LORA_KOHYA, MGPU_DTYPE_BF16);
    synth_lora_list_free(&list);
    mgpu_lora *l = lora_open_ok(path);
    mgpu_model *flux = open_ok(flux_path), *clip = open_ok(clip_path), *t5 = open_ok(t5_path);
    const mgpu_lora_part parts[3] = {part_of(flux), part_of(clip), part_of(t5)};
    mgpu_lora_resolved *r = resolve_ok(l, parts, 3);
    assert_int_equal(mgpu_lora_target_count(r), 26 + 12 + 14);
    assert_int_equal(mgpu_lora_unmatched_count(r), 0);
    const char *clip_q = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj";
    const char *t5_q = "lora_te2_encoder_block_0_layer_0_SelfAttention_q";
    assert_int_equal(find_target(r, clip_q, 0)->part, 1);
    assert_int_equal(find_target(r, t5_q, 0)->part, 2);
    assert_int_equal(find_target(r, "lora_unet_single_blocks_1_linear2", 0)->part, 0);
    mgpu_lora_resolved_free(r);

    r = resolve_ok(l, parts, 1);
    assert_int_equal(mgpu_lora_target_count(r), 26);
    assert_int_equal(mgpu_lora_unmatched_count(r), 12 + 14);
    for (size_t i = 0; i < mgpu_lora_unmatched_count(r); i++)
        assert_true(mgpu_lora_unmatched_at(r, i)->kind != MGPU_LORA_KIND_DIFFUSION);
    mgpu_lora_resolved_free(r);
    mgpu_model_close(flux);
    mgpu_model_close(clip);
    mgpu_model_close(t5);
    mgpu_lora_free(l);
    remove(path);
}

/* ---- errors ------------------------------------------------------------- */

static void test_none_match(void **state)
{
    (void)state;
    const char *path = test_path("clip-only.safetensors");
    write_lora(path, "clip-l", SYNTH_LORA_KOHYA, 4, 4.0f, 1, MGPU_DTYPE_F16, 24);
    mgpu_model *flux = open_ok(flux_path);
    mgpu_lora_part part = part_of(flux);
    mgpu_error err = {0};
    assert_int_equal(lora_error(path, &part, 1, &err), MGPU_ERR_NOT_FOUND);
    assert_int_equal(err.status, MGPU_ERR_NOT_FOUND);
    assert_contains(err.message, path);
    assert_contains(err.message, "none of its 12 modules match this flux-dev model");
    assert_contains(err.message, "first: lora_te1_text_model_encoder_layers_0_mlp_fc1");
    assert_contains(err.message, "CLIP-L");
    assert_contains(err.message, "lora_unet_double_blocks_0_img_attn_qkv");
    assert_contains(err.message, "double_blocks.0.img_attn.qkv.weight");
    mgpu_model_close(flux);
    remove(path);
}

static void test_malformed(void **state)
{
    (void)state;
    const char *path = test_path("bad.safetensors");
    mgpu_model *flux = open_ok(flux_path);
    mgpu_lora_part part = part_of(flux);
    mgpu_error err = {0};
    synth_lora_list list = {0};

    /* lora_A without lora_B */
    add_module(&list, "transformer.transformer_blocks.0.attn.to_q", H, H, 4);
    list.items[0].omit_up = 1;
    write_list(path, &list, SYNTH_LORA_DIFFUSERS, MGPU_DTYPE_F32);
    assert_int_equal(lora_error(path, NULL, 0, &err), MGPU_ERR_FORMAT);
    assert_contains(err.message, "'transformer.transformer_blocks.0.attn.to_q.lora_A.weight' has "
                                 "no matching 'transformer.transformer_blocks.0.attn.to_q.lora_B."
                                 "weight'");

    /* rank mismatch between down and up */
    list.items[0].omit_up = 0;
    list.items[0].up_rank = 5;
    write_list(path, &list, SYNTH_LORA_KOHYA, MGPU_DTYPE_F32);
    assert_int_equal(lora_error(path, NULL, 0, &err), MGPU_ERR_FORMAT);
    assert_contains(err.message, "rank mismatch");
    assert_contains(err.message, "(rank 4)");
    assert_contains(err.message, "(rank 5)");

    /* a non-float dtype */
    list.items[0].up_rank = 0;
    list.items[0].dtype = MGPU_DTYPE_I32;
    write_list(path, &list, SYNTH_LORA_DIFFUSERS, MGPU_DTYPE_F32);
    assert_int_equal(lora_error(path, NULL, 0, &err), MGPU_ERR_FORMAT);
    assert_contains(err.message, "dtype I32");
    assert_contains(err.message, "to_q.lora_A.weight");

    /* in that does not fit the weight's columns */
    list.items[0].dtype = MGPU_DTYPE_INVALID;
    list.items[0].in = 128;
    write_list(path, &list, SYNTH_LORA_DIFFUSERS, MGPU_DTYPE_F32);
    assert_int_equal(lora_error(path, &part, 1, &err), MGPU_ERR_FORMAT);
    assert_contains(err.message, "takes 128 inputs");
    assert_contains(err.message, "double_blocks.0.img_attn.qkv.weight' is [768, 256]");

    /* rows that do not fit the slice (to_q of a full-size FLUX: 3072) */
    list.items[0].in = H;
    list.items[0].out = 512;
    write_list(path, &list, SYNTH_LORA_DIFFUSERS, MGPU_DTYPE_F32);
    assert_int_equal(lora_error(path, &part, 1, &err), MGPU_ERR_FORMAT);
    assert_contains(err.message, "512 output rows");
    assert_contains(err.message, "rows 0..256 of 'double_blocks.0.img_attn.qkv.weight'");

    /* and of a whole weight */
    snprintf(list.items[0].name, sizeof list.items[0].name, "lora_unet_double_blocks_0_img_mlp_0");
    list.items[0].out = 512;
    write_list(path, &list, SYNTH_LORA_KOHYA, MGPU_DTYPE_F32);
    assert_int_equal(lora_error(path, &part, 1, &err), MGPU_ERR_FORMAT);
    assert_contains(err.message, "512 output rows");
    assert_contains(err.message, "'double_blocks.0.img_mlp.0.weight' is [1024, 256]");
    synth_lora_list_free(&list);

    /* LoHa, and a file with no LoRA in it */
    mgpu_safetensors_writer *w = NULL;
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_add_tensor(w, "lora_unet_x.hada_w1_a", MGPU_DTYPE_F32,
                                                        2, (const uint64_t[]){2, 2}, &err),
                     MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_write(w, NULL, 16, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
    assert_int_equal(lora_error(path, NULL, 0, &err), MGPU_ERR_UNSUPPORTED);
    assert_contains(err.message, "LoHa");
    assert_int_equal(lora_error(clip_path, NULL, 0, &err), MGPU_ERR_FORMAT);
    assert_contains(err.message, "no LoRA modules");

    /* a model LoRA does not apply to */
    mgpu_model_close(flux);
    write_lora(path, "flux-dev", SYNTH_LORA_KOHYA, 4, 4.0f, 1, MGPU_DTYPE_F32, 25);
    char vae[1024];
    snprintf(vae, sizeof vae, "%s", test_path("vae.safetensors"));
    synth("vae-flux", 0, MGPU_DTYPE_F16, "", 26, vae);
    mgpu_model *v = open_ok(vae);
    part = part_of(v);
    assert_int_equal(lora_error(path, &part, 1, &err), MGPU_ERR_UNSUPPORTED);
    assert_contains(err.message, "vae-flux");
    mgpu_model_close(v);
    remove(vae);
    remove(path);
}

/* Strength scales linearly; zero strength is zero. */
static void test_strength(void **state)
{
    (void)state;
    const char *path = test_path("strength.safetensors");
    write_lora(path, "flux-dev", SYNTH_LORA_COMFY, 16, 4.0f, 1, MGPU_DTYPE_F32, 27);
    mgpu_lora *l = lora_open_ok(path);
    mgpu_model *flux = open_ok(flux_path);
    mgpu_lora_part part = part_of(flux);
    mgpu_lora_resolved *r = resolve_ok(l, &part, 1);
    const mgpu_lora_target *t = find_target(r, "diffusion_model.single_blocks.0.linear2", 0);
    assert_true(t->scale == 0.25f);
    check_delta(t, -2.0f);
    float *d = malloc((size_t)(t->rows * t->cols) * sizeof *d);
    assert_non_null(d);
    assert_int_equal(mgpu_lora_delta(t, 0.0f, d, NULL), MGPU_OK);
    for (int64_t i = 0; i < t->rows * t->cols; i++)
        assert_true(d[i] == 0.0f);
    free(d);
    mgpu_lora_resolved_free(r);
    mgpu_model_close(flux);
    mgpu_lora_free(l);
    remove(path);
}

static void test_names(void **state)
{
    (void)state;
    assert_true(mgpu_lora_is_lora_name("lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"));
    assert_true(mgpu_lora_is_lora_name("transformer.proj_out.lora_B.weight"));
    assert_true(mgpu_lora_is_lora_name("lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha"));
    assert_false(mgpu_lora_is_lora_name("double_blocks.0.img_attn.qkv.weight"));
    assert_string_equal(mgpu_lora_format_name(MGPU_LORA_FORMAT_KOHYA), "kohya");
    assert_string_equal(mgpu_lora_kind_name(MGPU_LORA_KIND_T5), "t5");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kohya_flux),  cmocka_unit_test(test_comfy_flux),
        cmocka_unit_test(test_diffusers_flux), cmocka_unit_test(test_qkv_split),
        cmocka_unit_test(test_clip),        cmocka_unit_test(test_t5),
        cmocka_unit_test(test_parts),       cmocka_unit_test(test_none_match),
        cmocka_unit_test(test_malformed),   cmocka_unit_test(test_strength),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
