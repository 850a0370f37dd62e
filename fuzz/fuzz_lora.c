/* libFuzzer target for LoRA files (src/lora): the input is a safetensors
 * image opened with mgpu_lora_open_memory; a LoRA that opens is summarised,
 * resolved against tiny synthetic FLUX.1-dev, CLIP-L and T5 checkpoints
 * (names and shapes only: written sparse once per process), and the delta
 * of a few of its targets computed. Every target must lie inside its
 * weight; a failure must leave no handle and one printable line. Any
 * inconsistency aborts, which libFuzzer reports as a crash.
 *
 * Built with FUZZ_LORA_SEEDS it is instead a program writing a small seed
 * corpus (one file per family, rank 1) into the folder it is given. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "badfiles.h"
#include "lora/lora.h"
#include "mgpu/model.h"
#include "synth_lora.h"
#include "synth_write.h"

#ifndef FUZZ_LORA_SEEDS

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static void fail(const char *what, const char *message)
{
    fprintf(stderr, "fuzz_lora: %s\n  message: %s\n", what, message ? message : "");
    abort();
}

static void check_failure(mgpu_status s, const void *handle, const mgpu_error *err)
{
    const char *problem = badfiles_check_error(s, handle, err, 0);
    if (problem)
        fail(problem, err->message);
}

static char dir[64];
static mgpu_model *models[3];

static void cleanup(void)
{
    static const char *const names[] = {"flux.safetensors", "clip.safetensors", "t5.safetensors"};
    for (int i = 0; i < 3; i++) {
        mgpu_model_close(models[i]);
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        remove(path);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const arch[] = {"flux-dev", "clip-l", "t5-xxl"};
    static const char *const names[] = {"flux.safetensors", "clip.safetensors", "t5.safetensors"};
    snprintf(dir, sizeof dir, "/tmp/fuzz_lora.XXXXXX");
    if (!mkdtemp(dir))
        fail("cannot make a temporary folder", NULL);
    atexit(cleanup);
    for (int i = 0; i < 3; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        synth_options o = {.arch = arch[i], .scale = SYNTH_SCALE_TINY, .dtype = MGPU_DTYPE_F16,
                           .prefix = "", .out = path, .sparse = 1};
        mgpu_error err = {0};
        if (synth_write(&o, &err) != MGPU_OK || mgpu_model_open(path, &models[i], &err) != MGPU_OK)
            fail("cannot write the synthetic models", err.message);
    }
    return 0;
}

static void exercise(const mgpu_lora *l)
{
    mgpu_lora_summary sum;
    mgpu_lora_summarize(l, &sum);
    if (sum.modules != mgpu_lora_module_count(l) || sum.modules == 0 ||
        sum.rank_min < 1 || sum.rank_min > sum.rank_max)
        fail("an inconsistent summary", mgpu_lora_label(l));
    for (size_t i = 0; i < sum.ignored; i++)
        if (!mgpu_lora_ignored_at(l, i))
            fail("an ignored name missing", NULL);
    const mgpu_lora_part parts[3] = {{models[0], 0}, {models[1], 0}, {models[2], 0}};
    mgpu_lora_resolved *r = NULL;
    mgpu_error err = {0};
    mgpu_status s = mgpu_lora_resolve(l, parts, 3, &r, &err);
    if (s != MGPU_OK) {
        check_failure(s, r, &err);
        return;
    }
    size_t n = mgpu_lora_target_count(r);
    if (n == 0 || mgpu_lora_unmatched_count(r) > sum.modules)
        fail("a resolution without targets", NULL);
    for (size_t i = 0; i < n; i++) {
        const mgpu_lora_target *t = mgpu_lora_target_at(r, i);
        if (t->row0 < 0 || t->rows < 1 ||
            (uint64_t)(t->row0 + t->rows) > t->tensor->info.shape[0] ||
            (uint64_t)t->cols != t->tensor->info.shape[1] || t->b_row0 < 0 ||
            t->b_row0 + t->rows > t->module->out || t->cols != t->module->in)
            fail("a target outside its weight", t->module->name);
        if (i < 4 && t->rows * t->cols <= (1 << 18)) {
            float *d = malloc((size_t)(t->rows * t->cols) * sizeof *d);
            if (!d || mgpu_lora_delta(t, 0.5f, d, &err) != MGPU_OK)
                fail("delta failed", err.message);
            free(d);
        }
    }
    mgpu_lora_resolved_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mgpu_lora *l = NULL;
    mgpu_error err = {0};
    mgpu_status s = mgpu_lora_open_memory(data, size, "fuzz.safetensors", &l, &err);
    if (s != MGPU_OK) {
        check_failure(s, l, &err);
        return 0;
    }
    exercise(l);
    mgpu_lora_free(l);
    return 0;
}

#else /* the seed writer */

static int seed(const char *folder, const char *name, synth_lora_format format,
                const char *const *modules, const int64_t (*shapes)[2], int n, mgpu_dtype dtype)
{
    synth_lora_list list = {0};
    for (int i = 0; i < n; i++) {
        synth_lora_module m = {.in = shapes[i][0], .out = shapes[i][1], .rank = 1,
                               .alpha = 0.5f, .has_alpha = format == SYNTH_LORA_KOHYA};
        snprintf(m.name, sizeof m.name, "%s", modules[i]);
        if (!synth_lora_add(&list, &m))
            return 1;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", folder, name);
    mgpu_error err = {0};
    mgpu_status s = synth_lora_write(path, &list, format, dtype, 1, &err);
    synth_lora_list_free(&list);
    if (s != MGPU_OK)
        fprintf(stderr, "fuzz_lora_seeds: %s\n", err.message);
    return s != MGPU_OK;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_lora_seeds FOLDER\n");
        return 2;
    }
    mkdir(argv[1], 0777);
    static const char *const kohya[] = {"lora_unet_single_blocks_0_modulation_lin",
                                        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"};
    static const int64_t kohya_shapes[][2] = {{256, 768}, {256, 256}};
    static const char *const diffusers[] = {
        "transformer.transformer_blocks.0.attn.to_k", "transformer.norm_out.linear",
        "text_encoder_2.encoder.block.0.layer.0.SelfAttention.q"};
    static const int64_t diffusers_shapes[][2] = {{256, 256}, {256, 512}, {256, 256}};
    static const char *const comfy[] = {"diffusion_model.double_blocks.1.img_attn.proj"};
    static const int64_t comfy_shapes[][2] = {{256, 256}};
    int bad = seed(argv[1], "kohya.safetensors", SYNTH_LORA_KOHYA, kohya, kohya_shapes, 2,
                   MGPU_DTYPE_BF16);
    bad |= seed(argv[1], "diffusers.safetensors", SYNTH_LORA_DIFFUSERS, diffusers,
                diffusers_shapes, 3, MGPU_DTYPE_F16);
    bad |= seed(argv[1], "comfy.safetensors", SYNTH_LORA_COMFY, comfy, comfy_shapes, 1,
                MGPU_DTYPE_F32);
    return bad;
}

#endif
