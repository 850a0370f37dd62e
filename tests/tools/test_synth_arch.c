/* Tests for the synthetic-checkpoint architecture tables (tools/synth_arch.c).
 *
 * The parameter counts asserted here are not read back from the builder: each
 * is either a published figure or worked out below from the published config
 * and cross-checked against the published file size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "synth_arch.h"

static synth_list load(const char *arch, synth_scale scale)
{
    synth_list l = {0};
    assert_true(synth_arch_tensors(arch, scale, &l));
    assert_true(l.count > 0);
    return l;
}

static const synth_tensor *find(const synth_list *l, const char *name)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->items[i].name, name) == 0)
            return &l->items[i];
    return NULL;
}

static size_t count_prefix(const synth_list *l, const char *prefix)
{
    size_t n = 0, len = strlen(prefix);
    for (size_t i = 0; i < l->count; i++)
        n += strncmp(l->items[i].name, prefix, len) == 0;
    return n;
}

/* Fails with the tensor name in the message, so a wrong table is easy to find. */
static void expect_shape(const synth_list *l, const char *name, int ndim, const int64_t *dims)
{
    const synth_tensor *t = find(l, name);
    if (!t)
        fail_msg("missing tensor %s", name);
    if (t->ndim != ndim)
        fail_msg("%s: ndim %d, expected %d", name, t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != dims[i])
            fail_msg("%s: dim %d is %lld, expected %lld", name, i, (long long)t->shape[i],
                     (long long)dims[i]);
}

#define SHAPE(l, name, ...)                                                                        \
    expect_shape((l), (name), (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),   \
                 (const int64_t[]){__VA_ARGS__})

static const char *const expected_archs[] = {
    "flux-dev", "flux-schnell", "clip-l",   "t5-xxl",   "vae-flux", "sd1-unet", "sdxl-unet",
    "sd3",      "wan",          "qwen-image", "clip-g", "umt5-xxl", "vae-sd",
};
#define N_ARCHS (sizeof expected_archs / sizeof expected_archs[0])

/* ---- registry and list contract --------------------------------------- */

static void test_registry(void **state)
{
    (void)state;
    const char *const *names = synth_arch_names();
    size_t n = 0;
    while (names[n])
        n++;
    assert_int_equal(n, N_ARCHS);
    for (size_t i = 0; i < N_ARCHS; i++) {
        bool found = false;
        for (size_t j = 0; j < n; j++)
            found |= strcmp(names[j], expected_archs[i]) == 0;
        if (!found)
            fail_msg("arch %s not listed", expected_archs[i]);
        const char *d = synth_arch_description(expected_archs[i]);
        assert_non_null(d);
        assert_true(strlen(d) > 10);
        assert_null(strchr(d, '\n'));
    }
    assert_null(synth_arch_description("flux-pro"));
    assert_null(synth_arch_description(NULL));
}

static void test_unknown_arch_leaves_list_alone(void **state)
{
    (void)state;
    synth_list l = {0};
    assert_true(synth_arch_tensors("clip-l", SYNTH_SCALE_TINY, &l));
    const size_t before = l.count;
    const synth_tensor first = l.items[0];
    assert_false(synth_arch_tensors("flux-pro", SYNTH_SCALE_TINY, &l));
    assert_false(synth_arch_tensors(NULL, SYNTH_SCALE_FULL, &l));
    assert_false(synth_arch_tensors("flux-dev", (synth_scale)7, &l));
    assert_int_equal(l.count, before);
    assert_memory_equal(&l.items[0], &first, sizeof first);
    synth_list_free(&l);
    assert_null(l.items);
    assert_int_equal(l.count, 0);
    synth_list_free(&l); /* idempotent */
}

/* Appending keeps what was there and sorts only the new range. */
static void test_append_keeps_existing(void **state)
{
    (void)state;
    synth_list l = {0};
    assert_true(synth_arch_tensors("t5-xxl", SYNTH_SCALE_TINY, &l));
    const size_t t5 = l.count;
    assert_true(synth_arch_tensors("clip-l", SYNTH_SCALE_TINY, &l));
    synth_list clip = load("clip-l", SYNTH_SCALE_TINY);
    assert_int_equal(l.count, t5 + clip.count);
    assert_string_equal(l.items[0].name, "encoder.block.0.layer.0.SelfAttention.k.weight");
    assert_string_equal(l.items[t5 - 1].name, "shared.weight");
    for (size_t i = 0; i < clip.count; i++)
        assert_string_equal(l.items[t5 + i].name, clip.items[i].name);
    synth_list_free(&clip);
    synth_list_free(&l);
}

/* Every list at both scales: sorted by name (the safetensors layout), hence
 * free of duplicates; sane ranks and dims; no checkpoint prefix. */
static void test_all_lists_well_formed(void **state)
{
    (void)state;
    for (size_t a = 0; a < N_ARCHS; a++) {
        for (int s = 0; s < 2; s++) {
            synth_list l = load(expected_archs[a], s ? SYNTH_SCALE_FULL : SYNTH_SCALE_TINY);
            for (size_t i = 0; i < l.count; i++) {
                const synth_tensor *t = &l.items[i];
                if (t->name[0] == '\0' || strncmp(t->name, "model.", 6) == 0)
                    fail_msg("%s: bad name '%s'", expected_archs[a], t->name);
                if (t->ndim < 1 || t->ndim > SYNTH_MAX_DIMS)
                    fail_msg("%s: %s has ndim %d", expected_archs[a], t->name, t->ndim);
                for (int d = 0; d < t->ndim; d++)
                    if (t->shape[d] <= 0)
                        fail_msg("%s: %s dim %d not positive", expected_archs[a], t->name, d);
                if (i > 0 && strcmp(l.items[i - 1].name, t->name) >= 0)
                    fail_msg("%s: '%s' then '%s' (unsorted or duplicate)", expected_archs[a],
                             l.items[i - 1].name, t->name);
            }
            synth_list_free(&l);
        }
    }
}

/* GGUF block quants need the row length (last dim) to be a multiple of 32. */
static void test_tiny_rows_quantizable(void **state)
{
    (void)state;
    for (size_t a = 0; a < N_ARCHS; a++) {
        synth_list l = load(expected_archs[a], SYNTH_SCALE_TINY);
        for (size_t i = 0; i < l.count; i++) {
            const synth_tensor *t = &l.items[i];
            if (t->ndim == 2 && t->shape[1] % 32 != 0)
                fail_msg("%s tiny: %s row length %lld", expected_archs[a], t->name,
                         (long long)t->shape[1]);
        }
        synth_list_free(&l);
    }
}

/* Tiny keeps the structure: fewer blocks, smaller dims, same names. */
static void test_tiny_names_subset_of_full(void **state)
{
    (void)state;
    for (size_t a = 0; a < N_ARCHS; a++) {
        synth_list tiny = load(expected_archs[a], SYNTH_SCALE_TINY);
        synth_list full = load(expected_archs[a], SYNTH_SCALE_FULL);
        assert_true(tiny.count <= full.count);
        for (size_t i = 0; i < tiny.count; i++) {
            const synth_tensor *f = find(&full, tiny.items[i].name);
            if (!f)
                fail_msg("%s: tiny %s not in full", expected_archs[a], tiny.items[i].name);
            assert_int_equal(f->ndim, tiny.items[i].ndim);
        }
        synth_list_free(&tiny);
        synth_list_free(&full);
    }
}

/* Size budget in f32. FLUX and the VAEs use the dims the brief asked for
 * (hidden 256 / ch 32), which cannot fit 10 MB; the UNets are bounded below
 * by GroupNorm(32) at model_channels 32. Everything else stays under 10 MB. */
static void test_tiny_sizes(void **state)
{
    (void)state;
    static const struct {
        const char *arch;
        int64_t max_bytes;
    } budget[] = {
        {"flux-dev", 30000000},  {"flux-schnell", 30000000}, {"clip-l", 10000000},
        {"t5-xxl", 10000000},    {"vae-flux", 22000000},     {"sd1-unet", 35000000},
        {"sdxl-unet", 35000000}, {"sd3", 10000000},          {"wan", 10000000},
        {"qwen-image", 10000000}, {"clip-g", 10000000},      {"umt5-xxl", 10000000},
        {"vae-sd", 22000000},
    };
    assert_int_equal(sizeof budget / sizeof budget[0], N_ARCHS);
    for (size_t i = 0; i < N_ARCHS; i++) {
        synth_list l = load(budget[i].arch, SYNTH_SCALE_TINY);
        const int64_t bytes = 4 * synth_list_numel(&l);
        if (bytes > budget[i].max_bytes)
            fail_msg("%s tiny is %lld bytes in f32", budget[i].arch, (long long)bytes);
        synth_list_free(&l);
    }
}

/* ---- FLUX.1 ------------------------------------------------------------- */

static void test_flux_dev_full(void **state)
{
    (void)state;
    synth_list l = load("flux-dev", SYNTH_SCALE_FULL);
    /* Published parameter count of FLUX.1-dev. */
    assert_int_equal(synth_list_numel(&l), INT64_C(11901408320));
    /* 16 embedder tensors + 19 x 24 double + 38 x 8 single + 4 final. */
    assert_int_equal(l.count, 780);
    assert_int_equal(count_prefix(&l, "double_blocks.18."), 24);
    assert_int_equal(count_prefix(&l, "double_blocks.19."), 0);
    assert_int_equal(count_prefix(&l, "single_blocks.37."), 8);
    assert_int_equal(count_prefix(&l, "single_blocks.38."), 0);

    SHAPE(&l, "img_in.weight", 3072, 64);
    SHAPE(&l, "time_in.in_layer.weight", 3072, 256);
    SHAPE(&l, "time_in.out_layer.weight", 3072, 3072);
    SHAPE(&l, "vector_in.in_layer.weight", 3072, 768);
    SHAPE(&l, "guidance_in.in_layer.weight", 3072, 256);
    SHAPE(&l, "txt_in.weight", 3072, 4096);
    SHAPE(&l, "double_blocks.0.img_mod.lin.weight", 18432, 3072);
    SHAPE(&l, "double_blocks.0.img_attn.qkv.weight", 9216, 3072);
    SHAPE(&l, "double_blocks.0.img_attn.qkv.bias", 9216);
    SHAPE(&l, "double_blocks.0.img_attn.norm.query_norm.scale", 128);
    SHAPE(&l, "double_blocks.0.img_attn.norm.key_norm.scale", 128);
    SHAPE(&l, "double_blocks.0.img_attn.proj.weight", 3072, 3072);
    SHAPE(&l, "double_blocks.0.img_mlp.0.weight", 12288, 3072);
    SHAPE(&l, "double_blocks.0.img_mlp.2.weight", 3072, 12288);
    SHAPE(&l, "double_blocks.7.txt_mod.lin.bias", 18432);
    SHAPE(&l, "double_blocks.7.txt_mlp.2.bias", 3072);
    SHAPE(&l, "single_blocks.0.linear1.weight", 21504, 3072); /* 3 x 3072 + 12288 */
    SHAPE(&l, "single_blocks.0.linear2.weight", 3072, 15360); /* 3072 + 12288 */
    SHAPE(&l, "single_blocks.0.modulation.lin.weight", 9216, 3072);
    SHAPE(&l, "single_blocks.0.norm.key_norm.scale", 128);
    SHAPE(&l, "final_layer.linear.weight", 64, 3072);
    SHAPE(&l, "final_layer.adaLN_modulation.1.weight", 6144, 3072);
    synth_list_free(&l);
}

static void check_schnell_is_dev_minus_guidance(synth_scale scale, int64_t hidden)
{
    synth_list dev = load("flux-dev", scale);
    synth_list schnell = load("flux-schnell", scale);
    assert_int_equal(dev.count, schnell.count + 4);
    for (size_t i = 0; i < schnell.count; i++) {
        const synth_tensor *t = find(&dev, schnell.items[i].name);
        assert_non_null(t);
        assert_memory_equal(t, &schnell.items[i], sizeof *t);
    }
    assert_int_equal(count_prefix(&dev, "guidance_in."), 4);
    assert_int_equal(count_prefix(&schnell, "guidance_in."), 0);
    /* guidance_in is MLPEmbedder(256 -> hidden -> hidden) with biases. */
    const int64_t guidance = 256 * hidden + hidden + hidden * hidden + hidden;
    assert_int_equal(synth_list_numel(&dev) - synth_list_numel(&schnell), guidance);
    synth_list_free(&dev);
    synth_list_free(&schnell);
}

static void test_flux_schnell(void **state)
{
    (void)state;
    check_schnell_is_dev_minus_guidance(SYNTH_SCALE_FULL, 3072);
    check_schnell_is_dev_minus_guidance(SYNTH_SCALE_TINY, 256);
    synth_list l = load("flux-schnell", SYNTH_SCALE_FULL);
    assert_int_equal(synth_list_numel(&l), INT64_C(11901408320) - INT64_C(10229760));
    synth_list_free(&l);
}

static void test_flux_tiny(void **state)
{
    (void)state;
    /* hidden 256, 2 heads x 128, mlp 1024, in 64, context 256, vec 256. */
    synth_list l = load("flux-dev", SYNTH_SCALE_TINY);
    assert_int_equal(count_prefix(&l, "double_blocks."), 2 * 24);
    assert_int_equal(count_prefix(&l, "single_blocks."), 2 * 8);
    SHAPE(&l, "img_in.weight", 256, 64);
    SHAPE(&l, "txt_in.weight", 256, 256);
    SHAPE(&l, "vector_in.in_layer.weight", 256, 256);
    SHAPE(&l, "double_blocks.1.txt_attn.qkv.weight", 768, 256);
    SHAPE(&l, "double_blocks.1.txt_attn.norm.query_norm.scale", 128);
    SHAPE(&l, "double_blocks.1.img_mlp.2.weight", 256, 1024);
    SHAPE(&l, "single_blocks.1.linear1.weight", 1792, 256);
    SHAPE(&l, "single_blocks.1.linear2.weight", 256, 1280);
    SHAPE(&l, "final_layer.linear.weight", 64, 256);
    synth_list_free(&l);
}

/* ---- CLIP-L ------------------------------------------------------------- */

static void test_clip_l_full(void **state)
{
    (void)state;
    /* From the openai/clip-vit-large-patch14 text config: vocab 49408,
     * 77 positions, hidden 768, intermediate 3072, 12 layers.
     *   embeddings   49408*768 + 77*768                       = 38,004,480
     *   per layer    4 x (768*768 + 768)      q/k/v/out_proj  =  2,362,368
     *                2 x (768 + 768)          layer_norm1/2   =      3,072
     *                3072*768 + 3072          fc1             =  2,362,368
     *                768*3072 + 768           fc2             =  2,360,064
     *                                                         =  7,087,872
     *   12 layers                                             = 85,054,464
     *   final_layer_norm                                      =      1,536
     *   total                                                 = 123,060,480
     * ComfyUI's clip_l.safetensors is 246,144,152 bytes: an 8-byte length,
     * a 23,184-byte JSON header for the 196 fp16 tensors, and
     * 2 x 123,060,480 bytes of data. A text_projection [768,768] would add
     * 1,179,648 bytes and a position_ids buffer 616, so the file has neither
     * (ComfyUI logs "clip missing: ['text_projection.weight']" for it). */
    const int64_t layer = 4 * (768 * 768 + 768) + 2 * (768 + 768) + (3072 * 768 + 3072) +
                          (768 * 3072 + 768);
    const int64_t expected = 49408 * 768 + 77 * 768 + 12 * layer + 2 * 768;
    assert_int_equal(expected, INT64_C(123060480));
    synth_list l = load("clip-l", SYNTH_SCALE_FULL);
    assert_int_equal(synth_list_numel(&l), expected);
    assert_int_equal(l.count, 196);
    assert_null(find(&l, "text_projection.weight"));
    SHAPE(&l, "text_model.embeddings.token_embedding.weight", 49408, 768);
    SHAPE(&l, "text_model.embeddings.position_embedding.weight", 77, 768);
    SHAPE(&l, "text_model.encoder.layers.11.self_attn.q_proj.weight", 768, 768);
    SHAPE(&l, "text_model.encoder.layers.11.self_attn.out_proj.bias", 768);
    SHAPE(&l, "text_model.encoder.layers.0.layer_norm1.weight", 768);
    SHAPE(&l, "text_model.encoder.layers.0.mlp.fc1.weight", 3072, 768);
    SHAPE(&l, "text_model.encoder.layers.0.mlp.fc2.weight", 768, 3072);
    SHAPE(&l, "text_model.final_layer_norm.bias", 768);
    assert_null(find(&l, "text_model.encoder.layers.12.mlp.fc1.weight"));
    synth_list_free(&l);

    l = load("clip-l", SYNTH_SCALE_TINY);
    assert_int_equal(count_prefix(&l, "text_model.encoder.layers."), 2 * 16);
    SHAPE(&l, "text_model.embeddings.position_embedding.weight", 77, 256);
    synth_list_free(&l);
}

/* ---- T5 v1.1 XXL -------------------------------------------------------- */

static void test_t5_xxl_full(void **state)
{
    (void)state;
    /* From the google/t5-v1_1-xxl config: vocab 32128, d_model 4096,
     * 64 heads x d_kv 64, d_ff 10240 (gated: wi_0, wi_1), 24 layers,
     * 32 relative buckets, bias-free linears, weight-only layer norms.
     *   shared                 32128*4096                 =   131,596,288
     *   per block  q,k,v,o     4 x 4096*4096              =    67,108,864
     *              wi_0,wi_1,wo 3 x 4096*10240            =   125,829,120
     *              2 layer norms                          =         8,192
     *                                                     =   192,946,176
     *   24 blocks                                         = 4,630,708,224
     *   relative_attention_bias (block 0 only) 32*64      =         2,048
     *   final_layer_norm                                  =         4,096
     *   model total                                       = 4,762,310,656
     * t5xxl_fp16.safetensors is 9,787,841,024 bytes. The model alone in fp16
     * is 9,524,621,312, which leaves 263,219,712: exactly one more
     * 32128x4096 fp16 matrix (263,192,576) plus the 27,136-byte header. The
     * file stores the tied copy encoder.embed_tokens.weight, so its tensors
     * hold 4,762,310,656 + 131,596,288 = 4,893,906,944 values. */
    const int64_t block = 4 * INT64_C(4096) * 4096 + 3 * INT64_C(4096) * 10240 + 2 * 4096;
    const int64_t model = INT64_C(32128) * 4096 + 24 * block + 32 * 64 + 4096;
    assert_int_equal(model, INT64_C(4762310656));
    assert_int_equal(INT64_C(9787841024) - 2 * model - 2 * INT64_C(32128) * 4096, 27136);
    synth_list l = load("t5-xxl", SYNTH_SCALE_FULL);
    assert_int_equal(synth_list_numel(&l), model + INT64_C(32128) * 4096);
    assert_int_equal(synth_list_numel(&l), INT64_C(4893906944));
    assert_int_equal(l.count, 2 + 24 * 9 + 1 + 1);
    SHAPE(&l, "shared.weight", 32128, 4096);
    SHAPE(&l, "encoder.embed_tokens.weight", 32128, 4096);
    SHAPE(&l, "encoder.block.0.layer.0.SelfAttention.q.weight", 4096, 4096);
    SHAPE(&l, "encoder.block.0.layer.0.SelfAttention.o.weight", 4096, 4096);
    SHAPE(&l, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 32, 64);
    SHAPE(&l, "encoder.block.23.layer.0.layer_norm.weight", 4096);
    SHAPE(&l, "encoder.block.23.layer.1.DenseReluDense.wi_0.weight", 10240, 4096);
    SHAPE(&l, "encoder.block.23.layer.1.DenseReluDense.wi_1.weight", 10240, 4096);
    SHAPE(&l, "encoder.block.23.layer.1.DenseReluDense.wo.weight", 4096, 10240);
    SHAPE(&l, "encoder.block.23.layer.1.layer_norm.weight", 4096);
    SHAPE(&l, "encoder.final_layer_norm.weight", 4096);
    assert_null(find(&l, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"));
    assert_null(find(&l, "encoder.block.24.layer.0.layer_norm.weight"));
    synth_list_free(&l);

    l = load("t5-xxl", SYNTH_SCALE_TINY);
    assert_int_equal(count_prefix(&l, "encoder.block."), 2 * 9 + 1);
    SHAPE(&l, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 32, 32);
    synth_list_free(&l);
}

/* ---- FLUX VAE ----------------------------------------------------------- */

/* Parameter counts of the LDM autoencoder pieces, written from the module
 * definitions (comfy/ldm/modules/diffusionmodules/model.py), not from the
 * builder under test. */
static int64_t p_conv(int64_t out, int64_t in, int64_t k) { return out * in * k * k + out; }
static int64_t p_norm(int64_t c) { return 2 * c; }
static int64_t p_res(int64_t in, int64_t out)
{
    return p_norm(in) + p_conv(out, in, 3) + p_norm(out) + p_conv(out, out, 3) +
           (in != out ? p_conv(out, in, 1) : 0);
}
static int64_t p_attn(int64_t c) { return p_norm(c) + 4 * p_conv(c, c, 1); }

/* ch 128, ch_mult 1,2,4,4 (128/256/512/512), 2 res blocks down, 3 up. */
static int64_t vae_params(int64_t z, bool quant_convs)
{
    int64_t enc = p_conv(128, 3, 3);
    enc += 2 * p_res(128, 128) + p_conv(128, 128, 3);
    enc += p_res(128, 256) + p_res(256, 256) + p_conv(256, 256, 3);
    enc += p_res(256, 512) + p_res(512, 512) + p_conv(512, 512, 3);
    enc += 2 * p_res(512, 512);
    enc += 2 * p_res(512, 512) + p_attn(512); /* mid */
    enc += p_norm(512) + p_conv(2 * z, 512, 3);

    int64_t dec = p_conv(512, z, 3);
    dec += 2 * p_res(512, 512) + p_attn(512);
    dec += 3 * p_res(512, 512) + p_conv(512, 512, 3);                  /* up.3 */
    dec += 3 * p_res(512, 512) + p_conv(512, 512, 3);                  /* up.2 */
    dec += p_res(512, 256) + 2 * p_res(256, 256) + p_conv(256, 256, 3); /* up.1 */
    dec += p_res(256, 128) + 2 * p_res(128, 128);                      /* up.0 */
    dec += p_norm(128) + p_conv(3, 128, 3);

    int64_t quant = quant_convs ? p_conv(2 * z, 2 * z, 1) + p_conv(z, z, 1) : 0;
    return enc + dec + quant;
}

static void test_vae_flux_full(void **state)
{
    (void)state;
    /* FLUX ae: z 16, no quant convs. 83,819,683 f32 values are 335,278,732
     * bytes; ae.safetensors is 335,304,388, leaving 25,656 bytes for the
     * length prefix and the JSON header of its 244 tensors. */
    assert_int_equal(vae_params(16, false), INT64_C(83819683));
    synth_list l = load("vae-flux", SYNTH_SCALE_FULL);
    assert_int_equal(synth_list_numel(&l), vae_params(16, false));
    assert_int_equal(l.count, 244);
    SHAPE(&l, "encoder.conv_in.weight", 128, 3, 3, 3);
    SHAPE(&l, "encoder.down.0.block.0.norm1.weight", 128);
    SHAPE(&l, "encoder.down.1.block.0.conv1.weight", 256, 128, 3, 3);
    SHAPE(&l, "encoder.down.1.block.0.nin_shortcut.weight", 256, 128, 1, 1);
    SHAPE(&l, "encoder.down.2.downsample.conv.weight", 512, 512, 3, 3);
    SHAPE(&l, "encoder.mid.attn_1.q.weight", 512, 512, 1, 1);
    SHAPE(&l, "encoder.mid.attn_1.proj_out.weight", 512, 512, 1, 1);
    SHAPE(&l, "encoder.mid.block_2.conv2.bias", 512);
    SHAPE(&l, "encoder.conv_out.weight", 32, 512, 3, 3);
    SHAPE(&l, "decoder.conv_in.weight", 512, 16, 3, 3);
    SHAPE(&l, "decoder.up.3.block.2.conv2.weight", 512, 512, 3, 3);
    SHAPE(&l, "decoder.up.1.block.0.nin_shortcut.weight", 256, 512, 1, 1);
    SHAPE(&l, "decoder.up.0.block.0.nin_shortcut.weight", 128, 256, 1, 1);
    SHAPE(&l, "decoder.up.1.upsample.conv.weight", 256, 256, 3, 3);
    SHAPE(&l, "decoder.norm_out.weight", 128);
    SHAPE(&l, "decoder.conv_out.weight", 3, 128, 3, 3);
    assert_null(find(&l, "encoder.down.3.downsample.conv.weight"));
    assert_null(find(&l, "decoder.up.0.upsample.conv.weight"));
    assert_null(find(&l, "encoder.down.0.block.0.nin_shortcut.weight"));
    assert_int_equal(count_prefix(&l, "quant_conv."), 0);
    assert_int_equal(count_prefix(&l, "post_quant_conv."), 0);
    synth_list_free(&l);
}

static void test_vae_tiny_keeps_every_name(void **state)
{
    (void)state;
    static const char *const vaes[] = {"vae-flux", "vae-sd"};
    for (int v = 0; v < 2; v++) {
        synth_list tiny = load(vaes[v], SYNTH_SCALE_TINY);
        synth_list full = load(vaes[v], SYNTH_SCALE_FULL);
        assert_int_equal(tiny.count, full.count);
        for (size_t i = 0; i < tiny.count; i++)
            assert_string_equal(tiny.items[i].name, full.items[i].name);
        synth_list_free(&tiny);
        synth_list_free(&full);
    }
    synth_list l = load("vae-flux", SYNTH_SCALE_TINY); /* ch 32 */
    SHAPE(&l, "encoder.conv_in.weight", 32, 3, 3, 3);
    SHAPE(&l, "encoder.mid.attn_1.k.weight", 128, 128, 1, 1);
    SHAPE(&l, "encoder.conv_out.weight", 32, 128, 3, 3);
    SHAPE(&l, "decoder.conv_in.weight", 128, 16, 3, 3);
    synth_list_free(&l);
}

static void test_vae_sd(void **state)
{
    (void)state;
    /* Published count of the SD 1.x/2.x AutoencoderKL: 83,653,863. */
    assert_int_equal(vae_params(4, true), INT64_C(83653863));
    synth_list l = load("vae-sd", SYNTH_SCALE_FULL);
    assert_int_equal(synth_list_numel(&l), INT64_C(83653863));
    assert_int_equal(l.count, 248);
    SHAPE(&l, "quant_conv.weight", 8, 8, 1, 1);
    SHAPE(&l, "post_quant_conv.weight", 4, 4, 1, 1);
    SHAPE(&l, "encoder.conv_out.weight", 8, 512, 3, 3);
    SHAPE(&l, "decoder.conv_in.weight", 512, 4, 3, 3);
    synth_list_free(&l);
}

/* ---- signature architectures ------------------------------------------- */

/* Totals below are the published parameter counts of each model (diffusers
 * num_parameters() or the HF model card), which the full lists reproduce. */

static void test_sd1_unet(void **state)
{
    (void)state;
    synth_list l = load("sd1-unet", SYNTH_SCALE_FULL);
    assert_int_equal(synth_list_numel(&l), INT64_C(859520964));
    assert_int_equal(l.count, 686);
    SHAPE(&l, "time_embed.0.weight", 1280, 320);
    SHAPE(&l, "input_blocks.0.0.weight", 320, 4, 3, 3);
    SHAPE(&l, "input_blocks.1.1.proj_in.weight", 320, 320, 1, 1);
    SHAPE(&l, "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", 320, 768);
    SHAPE(&l, "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight", 2560, 320);
    SHAPE(&l, "input_blocks.3.0.op.weight", 320, 320, 3, 3);
    SHAPE(&l, "input_blocks.4.0.skip_connection.weight", 640, 320, 1, 1);
    SHAPE(&l, "middle_block.1.transformer_blocks.0.attn2.to_v.weight", 1280, 768);
    SHAPE(&l, "output_blocks.0.0.in_layers.2.weight", 1280, 2560, 3, 3);
    SHAPE(&l, "output_blocks.2.1.conv.weight", 1280, 1280, 3, 3);
    SHAPE(&l, "output_blocks.11.1.proj_out.weight", 320, 320, 1, 1);
    SHAPE(&l, "out.2.weight", 4, 320, 3, 3);
    assert_int_equal(count_prefix(&l, "label_emb."), 0);
    assert_int_equal(count_prefix(&l, "input_blocks.10.1."), 0);
    synth_list_free(&l);
}

static void test_sdxl_unet(void **state)
{
    (void)state;
    synth_list l = load("sdxl-unet", SYNTH_SCALE_FULL);
    assert_int_equal(synth_list_numel(&l), INT64_C(2567463684));
    assert_int_equal(l.count, 1680);
    SHAPE(&l, "label_emb.0.0.weight", 1280, 2816);
    SHAPE(&l, "label_emb.0.2.weight", 1280, 1280);
    SHAPE(&l, "input_blocks.4.1.proj_in.weight", 640, 640);
    SHAPE(&l, "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight", 640, 2048);
    SHAPE(&l, "input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight", 1280, 2048);
    SHAPE(&l, "middle_block.1.transformer_blocks.9.attn1.to_q.weight", 1280, 1280);
    SHAPE(&l, "output_blocks.2.2.conv.weight", 1280, 1280, 3, 3);
    SHAPE(&l, "output_blocks.5.2.conv.weight", 640, 640, 3, 3);
    assert_int_equal(count_prefix(&l, "input_blocks.1.1."), 0);
    assert_null(find(&l, "input_blocks.9.0.op.weight"));
    synth_list_free(&l);
}

static void test_sd3(void **state)
{
    (void)state;
    synth_list l = load("sd3", SYNTH_SCALE_FULL);
    /* 2,028,328,000 parameters plus the pos_embed buffer 192*192*1536. */
    assert_int_equal(synth_list_numel(&l), INT64_C(2028328000) + INT64_C(192) * 192 * 1536);
    SHAPE(&l, "x_embedder.proj.weight", 1536, 16, 2, 2);
    SHAPE(&l, "pos_embed", 1, 36864, 1536);
    SHAPE(&l, "context_embedder.weight", 1536, 4096);
    SHAPE(&l, "y_embedder.mlp.0.weight", 1536, 2048);
    SHAPE(&l, "t_embedder.mlp.0.weight", 1536, 256);
    SHAPE(&l, "joint_blocks.0.x_block.attn.qkv.weight", 4608, 1536);
    SHAPE(&l, "joint_blocks.0.context_block.attn.qkv.weight", 4608, 1536);
    SHAPE(&l, "joint_blocks.0.context_block.adaLN_modulation.1.weight", 9216, 1536);
    SHAPE(&l, "joint_blocks.23.context_block.adaLN_modulation.1.weight", 3072, 1536);
    SHAPE(&l, "joint_blocks.23.x_block.mlp.fc2.weight", 1536, 6144);
    SHAPE(&l, "final_layer.linear.weight", 64, 1536);
    assert_null(find(&l, "joint_blocks.23.context_block.attn.proj.weight"));
    assert_null(find(&l, "joint_blocks.23.context_block.mlp.fc1.weight"));
    synth_list_free(&l);
}

static void test_wan(void **state)
{
    (void)state;
    synth_list l = load("wan", SYNTH_SCALE_FULL);
    assert_int_equal(synth_list_numel(&l), INT64_C(14288491584)); /* Wan2.1-T2V-14B */
    assert_int_equal(l.count, 1095);
    SHAPE(&l, "patch_embedding.weight", 5120, 16, 1, 2, 2);
    SHAPE(&l, "text_embedding.0.weight", 5120, 4096);
    SHAPE(&l, "time_embedding.0.weight", 5120, 256);
    SHAPE(&l, "time_projection.1.weight", 30720, 5120);
    SHAPE(&l, "blocks.0.modulation", 1, 6, 5120);
    SHAPE(&l, "blocks.0.self_attn.q.weight", 5120, 5120);
    SHAPE(&l, "blocks.0.self_attn.norm_q.weight", 5120);
    SHAPE(&l, "blocks.39.cross_attn.k.weight", 5120, 5120);
    SHAPE(&l, "blocks.39.norm3.bias", 5120);
    SHAPE(&l, "blocks.39.ffn.0.weight", 13824, 5120);
    SHAPE(&l, "blocks.39.ffn.2.weight", 5120, 13824);
    SHAPE(&l, "head.modulation", 1, 2, 5120);
    SHAPE(&l, "head.head.weight", 64, 5120);
    assert_int_equal(count_prefix(&l, "blocks.40."), 0);
    assert_int_equal(count_prefix(&l, "img_emb."), 0); /* T2V, not I2V */
    synth_list_free(&l);

    l = load("wan", SYNTH_SCALE_TINY);
    SHAPE(&l, "patch_embedding.weight", 256, 16, 1, 2, 2);
    synth_list_free(&l);
}

static void test_qwen_image(void **state)
{
    (void)state;
    synth_list l = load("qwen-image", SYNTH_SCALE_FULL);
    assert_int_equal(synth_list_numel(&l), INT64_C(20430401088));
    SHAPE(&l, "img_in.weight", 3072, 64);
    SHAPE(&l, "txt_norm.weight", 3584);
    SHAPE(&l, "txt_in.weight", 3072, 3584);
    SHAPE(&l, "time_text_embed.timestep_embedder.linear_1.weight", 3072, 256);
    SHAPE(&l, "transformer_blocks.0.img_mod.1.weight", 18432, 3072);
    SHAPE(&l, "transformer_blocks.0.txt_mod.1.bias", 18432);
    SHAPE(&l, "transformer_blocks.0.attn.to_q.weight", 3072, 3072);
    SHAPE(&l, "transformer_blocks.0.attn.add_q_proj.weight", 3072, 3072);
    SHAPE(&l, "transformer_blocks.0.attn.norm_added_k.weight", 128);
    SHAPE(&l, "transformer_blocks.59.attn.to_add_out.weight", 3072, 3072);
    SHAPE(&l, "transformer_blocks.59.img_mlp.net.0.proj.weight", 12288, 3072);
    SHAPE(&l, "transformer_blocks.59.txt_mlp.net.2.weight", 3072, 12288);
    SHAPE(&l, "norm_out.linear.weight", 6144, 3072);
    SHAPE(&l, "proj_out.weight", 64, 3072);
    assert_int_equal(count_prefix(&l, "transformer_blocks.60."), 0);
    synth_list_free(&l);
}

static void test_clip_g(void **state)
{
    (void)state;
    /* hidden 1280, 32 layers, intermediate 5120, with text_projection:
     * 694,659,840 values. clip_g.safetensors (1,389,382,176 bytes) is
     * 2 x 694,659,840 fp16 bytes plus a 62,496-byte length+header. */
    const int64_t layer = 4 * (1280 * 1280 + 1280) + 4 * 1280 + (5120 * 1280 + 5120) +
                          (1280 * 5120 + 1280);
    const int64_t expected = 49408 * 1280 + 77 * 1280 + 32 * layer + 2 * 1280 + 1280 * 1280;
    assert_int_equal(expected, INT64_C(694659840));
    synth_list l = load("clip-g", SYNTH_SCALE_FULL);
    assert_int_equal(synth_list_numel(&l), expected);
    SHAPE(&l, "text_projection.weight", 1280, 1280);
    SHAPE(&l, "text_model.encoder.layers.31.mlp.fc1.weight", 5120, 1280);
    assert_int_equal(count_prefix(&l, "text_model.encoder.layers.32."), 0);
    synth_list_free(&l);
}

static void test_umt5_xxl(void **state)
{
    (void)state;
    synth_list l = load("umt5-xxl", SYNTH_SCALE_FULL);
    /* T5-XXL shapes with vocab 256384 and a relative bias per block. */
    const int64_t block = 4 * INT64_C(4096) * 4096 + 3 * INT64_C(4096) * 10240 + 2 * 4096 + 32 * 64;
    assert_int_equal(synth_list_numel(&l), INT64_C(256384) * 4096 + 24 * block + 4096);
    assert_int_equal(synth_list_numel(&l), INT64_C(5680910336));
    SHAPE(&l, "shared.weight", 256384, 4096);
    assert_null(find(&l, "encoder.embed_tokens.weight"));
    char name[SYNTH_NAME_MAX];
    for (int i = 0; i < 24; i++) {
        snprintf(name, sizeof name,
                 "encoder.block.%d.layer.0.SelfAttention.relative_attention_bias.weight", i);
        SHAPE(&l, name, 32, 64);
    }
    synth_list_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_unknown_arch_leaves_list_alone),
        cmocka_unit_test(test_append_keeps_existing),
        cmocka_unit_test(test_all_lists_well_formed),
        cmocka_unit_test(test_tiny_rows_quantizable),
        cmocka_unit_test(test_tiny_names_subset_of_full),
        cmocka_unit_test(test_tiny_sizes),
        cmocka_unit_test(test_flux_dev_full),
        cmocka_unit_test(test_flux_schnell),
        cmocka_unit_test(test_flux_tiny),
        cmocka_unit_test(test_clip_l_full),
        cmocka_unit_test(test_t5_xxl_full),
        cmocka_unit_test(test_vae_flux_full),
        cmocka_unit_test(test_vae_tiny_keeps_every_name),
        cmocka_unit_test(test_vae_sd),
        cmocka_unit_test(test_sd1_unet),
        cmocka_unit_test(test_sdxl_unet),
        cmocka_unit_test(test_sd3),
        cmocka_unit_test(test_wan),
        cmocka_unit_test(test_qwen_image),
        cmocka_unit_test(test_clip_g),
        cmocka_unit_test(test_umt5_xxl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
