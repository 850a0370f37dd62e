/* The model view: prefixes, components, modules, blocks and architecture
 * detection on synthetic checkpoints with the real names and shapes, plus
 * sharded checkpoints and folders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "mgpu/model.h"
#include "mgpu/safetensors.h"
#include "synth_write.h"
#include "test_models.h"
#include "test_util.h"

static const mgpu_model_module *find_module(const mgpu_model *m, const char *name)
{
    for (size_t i = 0; i < mgpu_model_module_count(m); i++)
        if (strcmp(mgpu_model_module_at(m, i)->name, name) == 0)
            return mgpu_model_module_at(m, i);
    return NULL;
}

static void test_flux_view(void **state)
{
    (void)state;
    const char *path = test_path("flux.gguf");
    synth("flux-dev", 1, MGPU_DTYPE_Q8_0, "model.diffusion_model.", 7, path);
    mgpu_model *m = open_ok(path);
    assert_int_equal(mgpu_model_component_count(m), 1);
    const mgpu_model_component *c = mgpu_model_component_at(m, 0);
    assert_string_equal(c->prefix, "model.diffusion_model.");
    assert_int_equal(c->arch, MGPU_ARCH_FLUX_DEV);
    /* names lose the prefix; the stored name keeps it */
    const mgpu_model_tensor *t = mgpu_model_find(m, "double_blocks.1.img_attn.qkv.weight");
    assert_non_null(t);
    assert_string_equal(t->info.name, "model.diffusion_model.double_blocks.1.img_attn.qkv.weight");
    assert_ptr_equal(mgpu_model_find(m, t->info.name), t);
    assert_int_equal(t->info.dtype, MGPU_DTYPE_Q8_0);
    /* qkv of a 256-wide model: [768, 256] */
    assert_int_equal(t->info.shape[0], 768);
    assert_int_equal(t->info.shape[1], 256);
    /* a module holds a weight and its bias */
    const mgpu_model_module *mod = &*mgpu_model_module_at(m, t->module);
    assert_string_equal(mod->name, "double_blocks.1.img_attn.qkv");
    assert_int_equal(mod->tensor_count, 2);
    assert_int_equal(mod->kind, MGPU_MODULE_LINEAR);
    assert_true(mod->block >= 0);
    assert_string_equal(mgpu_model_block_at(m, (size_t)mod->block)->name, "double_blocks.1");
    mod = find_module(m, "double_blocks.0.img_attn.norm.query_norm");
    assert_non_null(mod);
    assert_int_equal(mod->kind, MGPU_MODULE_RMS_NORM);
    mod = find_module(m, "final_layer.adaLN_modulation.1");
    assert_non_null(mod);
    assert_int_equal(mod->block, -1); /* one number does not make a run of blocks */
    mod = find_module(m, "img_in");
    assert_non_null(mod);
    assert_int_equal(mod->block, -1);
    /* blocks: 2 double then 2 single, in number order */
    assert_int_equal(mgpu_model_block_count(m), 4);
    assert_string_equal(mgpu_model_block_at(m, 0)->name, "double_blocks.0");
    assert_string_equal(mgpu_model_block_at(m, 1)->name, "double_blocks.1");
    assert_string_equal(mgpu_model_block_at(m, 2)->name, "single_blocks.0");
    /* totals add up */
    uint64_t params = 0, bytes = 0, module_bytes = 0, block_bytes = 0;
    for (size_t i = 0; i < mgpu_model_tensor_count(m); i++) {
        params += mgpu_model_tensor_at(m, i)->info.n_elems;
        bytes += mgpu_model_tensor_at(m, i)->info.nbytes;
    }
    for (size_t i = 0; i < mgpu_model_module_count(m); i++)
        module_bytes += mgpu_model_module_at(m, i)->nbytes;
    for (size_t i = 0; i < mgpu_model_block_count(m); i++)
        block_bytes += mgpu_model_block_at(m, i)->nbytes;
    assert_int_equal(params, c->n_params);
    assert_int_equal(bytes, c->nbytes);
    assert_int_equal(module_bytes, bytes);
    assert_true(block_bytes < bytes && block_bytes > bytes / 2);
    /* GGUF metadata is rendered as text */
    int found = 0;
    for (size_t i = 0; i < mgpu_model_metadata_count(m); i++) {
        const char *k, *v;
        mgpu_model_metadata_at(m, i, &k, &v);
        found |= strcmp(k, "general.architecture") == 0 && strcmp(v, "flux-dev") == 0;
    }
    assert_true(found);
    mgpu_model_close(m);
    remove(path);
}

static void test_detection(void **state)
{
    (void)state;
    static const struct {
        const char *synth;
        mgpu_arch arch;
    } cases[] = {
        {"flux-dev", MGPU_ARCH_FLUX_DEV},  {"flux-schnell", MGPU_ARCH_FLUX_SCHNELL},
        {"clip-l", MGPU_ARCH_CLIP_L},      {"clip-g", MGPU_ARCH_CLIP_G},
        {"t5-xxl", MGPU_ARCH_T5},          {"umt5-xxl", MGPU_ARCH_UMT5},
        {"vae-flux", MGPU_ARCH_VAE_FLUX},  {"vae-sd", MGPU_ARCH_VAE_SD},
        {"sd1-unet", MGPU_ARCH_SD1},       {"sdxl-unet", MGPU_ARCH_SDXL},
        {"sd3", MGPU_ARCH_SD3},            {"wan", MGPU_ARCH_WAN},
        {"qwen-image", MGPU_ARCH_QWEN_IMAGE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = test_path("detect.safetensors");
        synth(cases[i].synth, 0, MGPU_DTYPE_F16, "", 7, path);
        mgpu_model *m = open_ok(path);
        const mgpu_model_component *c = mgpu_model_component_at(m, 0);
        if (c->arch != cases[i].arch)
            fail_msg("%s detected as %s (%s)", cases[i].synth, mgpu_arch_name(c->arch),
                     c->arch_reason);
        assert_true(mgpu_model_block_count(m) >= 2);
        mgpu_model_close(m);
        remove(path);
    }
}

static void write_names(const char *path, const char *const *names, size_t n)
{
    mgpu_error err = {0};
    mgpu_safetensors_writer *w;
    uint64_t shape[2] = {2, 4};
    float zeros[8] = {0};
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(mgpu_safetensors_writer_add_tensor(w, names[i], MGPU_DTYPE_F32, 2, shape,
                                                            &err),
                         MGPU_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(mgpu_safetensors_writer_write(w, zeros, sizeof zeros, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
}

static void test_unknown_and_block_order(void **state)
{
    (void)state;
    const char *path = test_path("blocks.safetensors");
    const char *names[] = {"layers.10.a.weight", "layers.2.a.weight", "layers.2.b.weight",
                           "layers.10.b.weight", "layers.1.a.weight", "layers.1.b.weight",
                           "head.weight",        "head.bias"};
    write_names(path, names, 8);
    mgpu_model *m = open_ok(path);
    assert_int_equal(mgpu_model_component_at(m, 0)->arch, MGPU_ARCH_UNKNOWN);
    assert_int_equal(mgpu_model_block_count(m), 3);
    /* numeric order, not the text order of the file */
    assert_string_equal(mgpu_model_block_at(m, 0)->name, "layers.1");
    assert_string_equal(mgpu_model_block_at(m, 1)->name, "layers.2");
    assert_string_equal(mgpu_model_block_at(m, 2)->name, "layers.10");
    assert_int_equal(mgpu_model_block_at(m, 2)->module_count, 2);
    assert_int_equal(find_module(m, "head")->tensor_count, 2);
    mgpu_model_close(m);
    remove(path);
}

static void test_gguf_t5_names_and_scaled_fp8(void **state)
{
    (void)state;
    /* city96 / llama.cpp naming of a T5 encoder */
    const char *path = test_path("t5names.safetensors");
    const char *t5[] = {"enc.blk.0.attn_q.weight", "enc.blk.0.attn_k.weight",
                        "enc.blk.0.attn_rel_b.weight", "enc.blk.1.attn_q.weight",
                        "enc.blk.1.attn_k.weight", "token_embd.weight"};
    write_names(path, t5, 6);
    mgpu_model *m = open_ok(path);
    assert_int_equal(mgpu_model_component_at(m, 0)->arch, MGPU_ARCH_T5);
    assert_int_equal(mgpu_model_block_count(m), 2);
    assert_string_equal(mgpu_model_block_at(m, 1)->name, "enc.blk.1");
    assert_int_equal(find_module(m, "token_embd")->kind, MGPU_MODULE_EMBEDDING);
    mgpu_model_close(m);
    const char *umt5[] = {"enc.blk.0.attn_q.weight", "enc.blk.0.attn_rel_b.weight",
                          "enc.blk.1.attn_q.weight", "enc.blk.1.attn_rel_b.weight"};
    write_names(path, umt5, 4);
    m = open_ok(path);
    assert_int_equal(mgpu_model_component_at(m, 0)->arch, MGPU_ARCH_UMT5);
    mgpu_model_close(m);
    /* scaled fp8: the scales belong to the weight's module */
    const char *fp8[] = {"blocks.0.ffn.0.weight", "blocks.0.ffn.0.scale_weight",
                         "blocks.0.ffn.0.scale_input", "blocks.0.ffn.0.bias",
                         "blocks.1.ffn.0.weight", "blocks.1.ffn.0.bias",
                         "attn.in_proj_weight", "attn.in_proj_bias", "logit_scale"};
    write_names(path, fp8, 9);
    m = open_ok(path);
    assert_int_equal(find_module(m, "blocks.0.ffn.0")->tensor_count, 4);
    assert_int_equal(find_module(m, "attn.in_proj")->tensor_count, 2);
    assert_int_equal(find_module(m, "attn.in_proj")->kind, MGPU_MODULE_LINEAR);
    assert_int_equal(find_module(m, "logit_scale")->tensor_count, 1);
    assert_int_equal(mgpu_model_module_count(m), 4);
    mgpu_model_close(m);
    remove(path);
}

static void test_all_in_one(void **state)
{
    (void)state;
    /* A ComfyUI-style checkpoint: three components behind their prefixes. */
    const char *path = test_path("aio.safetensors");
    const char *names[] = {
        "model.diffusion_model.double_blocks.0.img_attn.qkv.weight",
        "model.diffusion_model.single_blocks.0.linear1.weight",
        "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
        "vae.decoder.conv_in.weight",
        "vae.decoder.conv_in.bias",
    };
    write_names(path, names, 5);
    mgpu_model *m = open_ok(path);
    assert_int_equal(mgpu_model_component_count(m), 3);
    int seen = 0;
    for (size_t i = 0; i < 3; i++) {
        const mgpu_model_component *c = mgpu_model_component_at(m, i);
        if (strcmp(c->prefix, "model.diffusion_model.") == 0) {
            assert_int_equal(c->arch, MGPU_ARCH_FLUX_SCHNELL);
            seen |= 1;
        } else if (strcmp(c->prefix, "text_encoders.clip_l.transformer.") == 0) {
            assert_int_equal(c->arch, MGPU_ARCH_CLIP_L);
            seen |= 2;
        } else if (strcmp(c->prefix, "vae.") == 0) {
            /* 2-D stand-in weights: the conv_in signature needs 4-D */
            assert_int_equal(c->arch, MGPU_ARCH_UNKNOWN);
            assert_int_equal(c->tensor_count, 2);
            seen |= 4;
        }
    }
    assert_int_equal(seen, 7);
    mgpu_model_close(m);
    remove(path);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_sharded(void **state)
{
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_path("shards"));
    mkdir(dir, 0755);
    char a[1100], b[1100], index[1100];
    snprintf(a, sizeof a, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(b, sizeof b, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    const char *na[] = {"encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"};
    const char *nb[] = {"encoder.block.1.layer.0.SelfAttention.q.weight"};
    write_names(a, na, 2);
    write_names(b, nb, 1);
    write_text(index, "{\"metadata\": {\"total_size\": 96}, \"weight_map\": {"
                      "\"shared.weight\": \"model-00001-of-00002.safetensors\","
                      "\"encoder.block.0.layer.0.SelfAttention.q.weight\": "
                      "\"model-00001-of-00002.safetensors\","
                      "\"encoder.block.1.layer.0.SelfAttention.q.weight\": "
                      "\"model-00002-of-00002.safetensors\"}}");
    mgpu_model *m = open_ok(index);
    assert_int_equal(mgpu_model_file_count(m), 2);
    assert_int_equal(mgpu_model_tensor_count(m), 3);
    assert_int_equal(mgpu_model_component_at(m, 0)->arch, MGPU_ARCH_T5);
    const mgpu_model_tensor *t = mgpu_model_find(m, "encoder.block.1.layer.0.SelfAttention.q.weight");
    assert_non_null(t);
    assert_int_equal(t->file, 1);
    const char *k, *v;
    mgpu_model_metadata_at(m, 0, &k, &v);
    assert_string_equal(k, "total_size");
    assert_string_equal(v, "96");
    mgpu_model_close(m);
    /* the folder finds the same index */
    m = open_ok(dir);
    assert_int_equal(mgpu_model_tensor_count(m), 3);
    mgpu_model_close(m);

    /* an index naming a tensor its shard lacks is an error naming both */
    write_text(index, "{\"weight_map\": {\"missing.weight\": \"model-00002-of-00002.safetensors\"}}");
    mgpu_error err = {0};
    assert_int_equal(mgpu_model_open(index, &m, &err), MGPU_ERR_FORMAT);
    assert_non_null(strstr(err.message, "missing.weight"));
    assert_non_null(strstr(err.message, "model-00002-of-00002.safetensors"));
    /* a shard path escaping the folder is refused */
    write_text(index, "{\"weight_map\": {\"x\": \"../x.safetensors\"}}");
    assert_int_equal(mgpu_model_open(index, &m, &err), MGPU_ERR_FORMAT);
    assert_non_null(strstr(err.message, "not a file name in the same folder"));
    write_text(index, "[1, 2]");
    assert_int_equal(mgpu_model_open(index, &m, &err), MGPU_ERR_FORMAT);
    assert_non_null(strstr(err.message, "weight_map"));
    remove(a);
    remove(b);
    remove(index);
    rmdir(dir);
}

static void test_diffusers_folder(void **state)
{
    (void)state;
    char dir[1024], sub1[1100], sub2[1100], f1[1200], f2[1200], mi[1200];
    snprintf(dir, sizeof dir, "%s", test_path("pipeline"));
    snprintf(sub1, sizeof sub1, "%s/text_encoder", dir);
    snprintf(sub2, sizeof sub2, "%s/vae", dir);
    snprintf(f1, sizeof f1, "%s/model.safetensors", sub1);
    snprintf(f2, sizeof f2, "%s/diffusion_pytorch_model.safetensors", sub2);
    snprintf(mi, sizeof mi, "%s/model_index.json", dir);
    mkdir(dir, 0755);
    mkdir(sub1, 0755);
    mkdir(sub2, 0755);
    write_text(mi, "{\"_class_name\": \"FluxPipeline\"}");
    synth("clip-l", 0, MGPU_DTYPE_BF16, "", 7, f1);
    synth("vae-flux", 0, MGPU_DTYPE_F32, "", 7, f2);
    mgpu_model *m = open_ok(dir);
    assert_int_equal(mgpu_model_component_count(m), 2);
    assert_string_equal(mgpu_model_component_at(m, 0)->prefix, "text_encoder/");
    assert_int_equal(mgpu_model_component_at(m, 0)->arch, MGPU_ARCH_CLIP_L);
    assert_string_equal(mgpu_model_component_at(m, 1)->prefix, "vae/");
    assert_int_equal(mgpu_model_component_at(m, 1)->arch, MGPU_ARCH_VAE_FLUX);
    assert_int_equal(find_module(m, "decoder.mid.block_1.norm1")->kind, MGPU_MODULE_GROUP_NORM);
    assert_int_equal(find_module(m, "text_model.encoder.layers.0.layer_norm1")->kind,
                     MGPU_MODULE_LAYER_NORM);
    assert_int_equal(find_module(m, "text_model.embeddings.token_embedding")->kind,
                     MGPU_MODULE_EMBEDDING);
    assert_int_equal(find_module(m, "decoder.conv_in")->kind, MGPU_MODULE_CONV2D);
    mgpu_model_close(m);
    remove(f1);
    remove(f2);
    remove(mi);
    rmdir(sub1);
    rmdir(sub2);
    rmdir(dir);
}

static void test_duplicate_across_files(void **state)
{
    (void)state;
    char dir[1024], a[1100], b[1100];
    snprintf(dir, sizeof dir, "%s", test_path("dups"));
    snprintf(a, sizeof a, "%s/a.safetensors", dir);
    snprintf(b, sizeof b, "%s/b.safetensors", dir);
    mkdir(dir, 0755);
    const char *n[] = {"x.weight"};
    write_names(a, n, 1);
    write_names(b, n, 1);
    mgpu_model *m;
    mgpu_error err = {0};
    assert_int_equal(mgpu_model_open(dir, &m, &err), MGPU_ERR_FORMAT);
    assert_non_null(strstr(err.message, "x.weight"));
    assert_non_null(strstr(err.message, "a.safetensors"));
    assert_non_null(strstr(err.message, "b.safetensors"));
    assert_int_equal(mgpu_model_open(test_path("no-such-file"), &m, &err), MGPU_ERR_NOT_FOUND);
    remove(a);
    remove(b);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flux_view),       cmocka_unit_test(test_detection),
        cmocka_unit_test(test_unknown_and_block_order), cmocka_unit_test(test_all_in_one),
        cmocka_unit_test(test_gguf_t5_names_and_scaled_fp8),
        cmocka_unit_test(test_sharded),         cmocka_unit_test(test_diffusers_folder),
        cmocka_unit_test(test_duplicate_across_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
