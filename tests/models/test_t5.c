/* The T5 v1.1 / UMT5 encoder (src/models/t5.c) on the CPU backend against
 * the independent double-precision reference (encoder_reference.c) on tiny
 * synthetic checkpoints: T5 in F32, T5 in BF16 under ComfyUI's prefix with
 * 150 tokens (past the 128 of the log-spaced buckets), UMT5 (a table per
 * block), and a Q8_0 GGUF under llama.cpp's names written here; the
 * relative position buckets against Hugging Face's formula worked by hand;
 * CLIP-L and T5 side by side in one ComfyUI-style file (two components);
 * the block discipline; and the errors (a missing tensor, a token id out of
 * range, no tokens, a model that is not T5). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "exec/source.h"
#include "mgpu/gguf.h"
#include "mgpu/model.h"
#include "mgpu/safetensors.h"
#include "models/clip.h"
#include "models/encoder_reference.h"
#include "models/t5.h"
#include "synth_write.h"
#include "test_models.h"
#include "test_random.h"
#include "test_util.h"

/* Max |real - ref| over max |ref|; see test_clip.c. */
#define REL_TOLERANCE 1e-5

static double rel_diff(const float *a, const double *b, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(isfinite(a[i]));
        double d = fabs((double)a[i] - b[i]);
        diff = d > diff ? d : diff;
        scale = fabs(b[i]) > scale ? fabs(b[i]) : scale;
    }
    assert_true(scale > 0);
    return diff / scale;
}

/* Random ids, then EOS (1) and padding (0) as ComfyUI feeds FLUX's T5. */
static int32_t *make_tokens(int64_t n, int64_t text, uint64_t seed)
{
    int32_t *t = malloc((size_t)n * sizeof *t);
    assert_non_null(t);
    rng_seed(seed);
    for (int64_t i = 0; i < n; i++)
        t[i] = i < text ? 2 + (int32_t)(rng_next() % 1022) : i == text ? 1 : 0;
    return t;
}

static mgpu_backend *backend(int threads)
{
    mgpu_backend *be = NULL;
    mgpu_error err = {0};
    if (mgpu_backend_cpu_create(threads, &be, &err) != MGPU_OK)
        fail_msg("cpu backend: %s", err.message);
    return be;
}

typedef struct expect {
    bool per_block, gguf;
} expect;

static void check_forward(const char *label, const char *path, int64_t n, int64_t text,
                          uint64_t seed, expect e)
{
    mgpu_model *m = open_ok(path);
    mgpu_error err = {0};
    mgpu_t5 *t5 = NULL;
    if (mgpu_t5_load(m, 0, &t5, &err) != MGPU_OK)
        fail_msg("%s: load: %s", label, err.message);
    const mgpu_t5_config *c = mgpu_t5_get_config(t5);
    assert_int_equal(c->vocab, 1024);
    assert_int_equal(c->d_model, 256);
    assert_int_equal(c->heads, 32);
    assert_int_equal(c->d_kv, 8);
    assert_int_equal(c->d_ff, 512);
    assert_int_equal(c->buckets, 32);
    assert_int_equal(c->max_distance, 128);
    assert_int_equal(c->layers, 2);
    assert_int_equal(c->bias_per_block, e.per_block);
    assert_int_equal(c->gguf_names, e.gguf);

    int32_t *tokens = make_tokens(n, text, seed);
    size_t nd = (size_t)(n * 256);
    double *want = malloc(nd * sizeof *want);
    float *hidden = malloc(nd * sizeof *hidden), *again = malloc(nd * sizeof *again);
    assert_true(want && hidden && again);
    char msg[256];
    if (t5_reference_forward(m, 0, tokens, n, want, msg, sizeof msg))
        fail_msg("%s: reference: %s", label, msg);
    for (int threads = 1; threads <= 3; threads += 2) {
        mgpu_backend *be = backend(threads);
        checking_source cs;
        mgpu_tensor_source src = checking_source_make(&cs, m);
        if (mgpu_t5_forward(t5, be, &src, tokens, n, hidden, &err) != MGPU_OK)
            fail_msg("%s: forward: %s", label, err.message);
        if (cs.violations)
            fail_msg("%s: %d block violations, first: %s", label, cs.violations,
                     cs.first_violation);
        assert_int_equal(cs.enters, 2);
        assert_int_equal(cs.leaves, 2);
        double d = rel_diff(hidden, want, nd);
        print_message("%s, %d thread(s), %lld tokens: %.3g\n", label, threads, (long long)n, d);
        assert_true(d <= REL_TOLERANCE);
        mgpu_tensor_source res = mgpu_resident_source();
        if (mgpu_t5_forward(t5, be, &res, tokens, n, again, &err) != MGPU_OK)
            fail_msg("%s: forward: %s", label, err.message);
        assert_memory_equal(again, hidden, nd * sizeof *hidden);
        mgpu_backend_free(be);
    }
    free(tokens);
    free(want);
    free(hidden);
    free(again);
    mgpu_t5_free(t5);
    mgpu_model_close(m);
}

static void test_t5_f32(void **state)
{
    (void)state;
    const char *path = test_path("t5-f32.safetensors");
    synth("t5-xxl", 0, MGPU_DTYPE_F32, "", 31, path);
    check_forward("t5 F32", path, 20, 14, 1, (expect){false, false});
    remove(path);
}

static void test_t5_bf16_prefixed_long(void **state)
{
    (void)state;
    const char *path = test_path("t5-bf16.safetensors");
    synth("t5-xxl", 0, MGPU_DTYPE_BF16, "text_encoders.t5xxl.transformer.", 32, path);
    check_forward("t5 BF16 prefixed", path, 150, 60, 2, (expect){false, false});
    remove(path);
}

static void test_umt5_f32(void **state)
{
    (void)state;
    const char *path = test_path("umt5-f32.safetensors");
    synth("umt5-xxl", 0, MGPU_DTYPE_F32, "", 33, path);
    check_forward("umt5 F32", path, 40, 30, 3, (expect){true, false});
    remove(path);
}

/* llama.cpp's name for a Hugging Face T5 name, NULL to drop the tensor
 * (the tied embedding copy); written from llama.cpp's tensor map as
 * ComfyUI-GGUF inverts it. */
static const char *gguf_name(const char *hf, char *buf, size_t size)
{
    static const char *const map[][2] = {
        {"layer.0.SelfAttention.q.weight", "attn_q.weight"},
        {"layer.0.SelfAttention.k.weight", "attn_k.weight"},
        {"layer.0.SelfAttention.v.weight", "attn_v.weight"},
        {"layer.0.SelfAttention.o.weight", "attn_o.weight"},
        {"layer.0.SelfAttention.relative_attention_bias.weight", "attn_rel_b.weight"},
        {"layer.0.layer_norm.weight", "attn_norm.weight"},
        {"layer.1.DenseReluDense.wi_0.weight", "ffn_gate.weight"},
        {"layer.1.DenseReluDense.wi_1.weight", "ffn_up.weight"},
        {"layer.1.DenseReluDense.wo.weight", "ffn_down.weight"},
        {"layer.1.layer_norm.weight", "ffn_norm.weight"},
    };
    if (strcmp(hf, "shared.weight") == 0)
        return "token_embd.weight";
    if (strcmp(hf, "encoder.final_layer_norm.weight") == 0)
        return "enc.output_norm.weight";
    int block, used = 0;
    if (sscanf(hf, "encoder.block.%d.%n", &block, &used) == 1 && used > 0)
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (strcmp(hf + used, map[i][0]) == 0) {
                snprintf(buf, size, "enc.blk.%d.%s", block, map[i][1]);
                return buf;
            }
    return NULL;
}

/* The F32 model at src as a GGUF at dst under llama.cpp's names: 2-D
 * tensors in `dtype`, 1-D in F32, as city96's files store them. */
static void write_llama_gguf(const char *src, const char *dst, mgpu_dtype dtype)
{
    mgpu_model *m = open_ok(src);
    mgpu_error err = {0};
    mgpu_gguf_writer *w = NULL;
    assert_int_equal(mgpu_gguf_writer_create(dst, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_string(w, "general.architecture", "t5encoder", &err),
                     MGPU_OK);
    size_t n = mgpu_model_tensor_count(m), written = 0;
    char buf[192];
    for (size_t i = 0; i < n; i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        const char *name = gguf_name(t->name, buf, sizeof buf);
        if (!name) {
            assert_string_equal(t->name, "encoder.embed_tokens.weight");
            continue;
        }
        mgpu_dtype dt = t->info.ndim == 2 ? dtype : MGPU_DTYPE_F32;
        assert_int_equal(
            mgpu_gguf_writer_add_tensor(w, name, dt, t->info.ndim, t->info.shape, &err), MGPU_OK);
        written++;
    }
    assert_int_equal(written, n - 1);
    for (size_t i = 0; i < n; i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        if (!gguf_name(t->name, buf, sizeof buf))
            continue;
        assert_int_equal(t->info.dtype, MGPU_DTYPE_F32);
        mgpu_dtype dt = t->info.ndim == 2 ? dtype : MGPU_DTYPE_F32;
        uint64_t bytes = 0;
        assert_true(mgpu_dtype_bytes_for(dt, t->info.n_elems, &bytes));
        void *enc = malloc(bytes);
        assert_non_null(enc);
        assert_int_equal(mgpu_quantize(dt, t->info.data, enc, t->info.n_elems), MGPU_OK);
        assert_int_equal(mgpu_gguf_writer_write(w, enc, bytes, &err), MGPU_OK);
        free(enc);
    }
    assert_int_equal(mgpu_gguf_writer_finish(w, &err), MGPU_OK);
    mgpu_model_close(m);
}

static void test_t5_llama_names_q8_gguf(void **state)
{
    (void)state;
    const char *hf = test_path("t5-for-gguf.safetensors"), *path = test_path("t5-llama-q8.gguf");
    synth("t5-xxl", 0, MGPU_DTYPE_F32, "", 34, hf);
    write_llama_gguf(hf, path, MGPU_DTYPE_Q8_0);
    mgpu_model *m = open_ok(path);
    assert_non_null(mgpu_model_find(m, "enc.blk.0.attn_rel_b.weight"));
    assert_int_equal(mgpu_model_find(m, "enc.blk.1.ffn_gate.weight")->info.dtype, MGPU_DTYPE_Q8_0);
    assert_null(mgpu_model_find(m, "shared.weight"));
    mgpu_model_close(m);
    check_forward("t5 Q8_0 gguf, llama.cpp names", path, 33, 20, 4, (expect){false, true});
    remove(hf);
    remove(path);
}

/* Appends every tensor of the model at `path` to w under `prefix`: headers
 * first (pass 0), then data (pass 1), in the same order. */
static void append_all(mgpu_safetensors_writer *w, const char *path, const char *prefix, int pass)
{
    mgpu_model *m = open_ok(path);
    mgpu_error err = {0};
    char name[256];
    for (size_t i = 0; i < mgpu_model_tensor_count(m); i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        snprintf(name, sizeof name, "%s%s", prefix, t->info.name);
        mgpu_status s = pass == 0 ? mgpu_safetensors_writer_add_tensor(w, name, t->info.dtype,
                                                                       t->info.ndim, t->info.shape,
                                                                       &err)
                                  : mgpu_safetensors_writer_write(w, t->info.data, t->info.nbytes,
                                                                  &err);
        if (s != MGPU_OK)
            fail_msg("append %s: %s", name, err.message);
    }
    mgpu_model_close(m);
}

/* A ComfyUI-style file holding CLIP-L and T5 under their prefixes: the
 * model view makes two components; each encoder loads from its own and
 * matches the reference run on that component. */
static void test_two_encoders_one_file(void **state)
{
    (void)state;
    const char *clip_path = test_path("aio-clip.safetensors");
    const char *t5_path = test_path("aio-t5.safetensors"), *path = test_path("aio.safetensors");
    synth("clip-l", 0, MGPU_DTYPE_F32, "", 38, clip_path);
    synth("t5-xxl", 0, MGPU_DTYPE_BF16, "", 39, t5_path);
    mgpu_error err = {0};
    mgpu_safetensors_writer *w = NULL;
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    for (int pass = 0; pass < 2; pass++) {
        append_all(w, t5_path, "text_encoders.t5xxl.transformer.", pass);
        append_all(w, clip_path, "text_encoders.clip_l.transformer.", pass);
    }
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);

    mgpu_model *m = open_ok(path);
    assert_int_equal(mgpu_model_component_count(m), 2);
    int clip_c = -1, t5_c = -1;
    for (int c = 0; c < 2; c++) {
        const mgpu_model_component *mc = mgpu_model_component_at(m, (size_t)c);
        if (strcmp(mc->prefix, "text_encoders.clip_l.transformer.") == 0)
            clip_c = c;
        if (strcmp(mc->prefix, "text_encoders.t5xxl.transformer.") == 0)
            t5_c = c;
    }
    assert_true(clip_c >= 0 && t5_c >= 0);
    assert_int_equal(mgpu_model_component_at(m, (size_t)clip_c)->arch, MGPU_ARCH_CLIP_L);
    assert_int_equal(mgpu_model_component_at(m, (size_t)t5_c)->arch, MGPU_ARCH_T5);
    /* Each encoder refuses the other's component. */
    mgpu_clip *clip = NULL;
    mgpu_t5 *t5 = NULL;
    assert_int_equal(mgpu_clip_load(m, t5_c, &clip, &err), MGPU_ERR_FORMAT);
    assert_int_equal(mgpu_t5_load(m, clip_c, &t5, &err), MGPU_ERR_FORMAT);
    if (mgpu_clip_load(m, clip_c, &clip, &err) != MGPU_OK ||
        mgpu_t5_load(m, t5_c, &t5, &err) != MGPU_OK)
        fail_msg("load: %s", err.message);

    enum { N = 10 };
    int32_t tokens[N];
    rng_seed(40);
    for (int i = 0; i < N; i++)
        tokens[i] = (int32_t)(rng_next() % 1024);
    float got[N * 256], pooled[256];
    double want[N * 256], want_pooled[256];
    char msg[256];
    mgpu_backend *be = backend(2);
    checking_source cs;
    mgpu_tensor_source src = checking_source_make(&cs, m);

    if (mgpu_clip_forward(clip, be, &src, tokens, N, N - 1, got, pooled, &err) != MGPU_OK)
        fail_msg("clip forward: %s", err.message);
    if (clip_reference_forward(m, clip_c, tokens, N, N - 1, want, want_pooled, NULL, msg,
                               sizeof msg))
        fail_msg("clip reference: %s", msg);
    double d = rel_diff(got, want, N * 256), dp = rel_diff(pooled, want_pooled, 256);
    print_message("clip-l in a two-encoder file: %.3g, pooled %.3g\n", d, dp);
    assert_true(d <= REL_TOLERANCE && dp <= REL_TOLERANCE);

    if (mgpu_t5_forward(t5, be, &src, tokens, N, got, &err) != MGPU_OK)
        fail_msg("t5 forward: %s", err.message);
    if (t5_reference_forward(m, t5_c, tokens, N, want, msg, sizeof msg))
        fail_msg("t5 reference: %s", msg);
    d = rel_diff(got, want, N * 256);
    print_message("t5 in a two-encoder file: %.3g\n", d);
    assert_true(d <= REL_TOLERANCE);
    if (cs.violations)
        fail_msg("%d block violations, first: %s", cs.violations, cs.first_violation);
    assert_int_equal(cs.enters, 4);

    mgpu_backend_free(be);
    mgpu_clip_free(clip);
    mgpu_t5_free(t5);
    mgpu_model_close(m);
    remove(clip_path);
    remove(t5_path);
    remove(path);
}

/* Hugging Face's _relative_position_bucket(rel, bidirectional=True,
 * num_buckets=32, max_distance=128), worked by hand: 16 buckets per sign,
 * exact below 8, then 8 + floor(log(n / 8) / log(16) * 8), at most 15. */
static void test_buckets(void **state)
{
    (void)state;
    static const struct {
        int64_t rel;
        int bucket;
    } cases[] = {
        {0, 0},     {-1, 1},    {1, 17},    {-7, 7},     {7, 23},     {-8, 8},
        {8, 24},    {-12, 9},   {-15, 9},   {-16, 10},   {20, 26},    {-32, 12},
        {-64, 14},  {-100, 15}, {-127, 15}, {128, 31},   {-1000, 15}, {1000, 31},
        {63, 29},   {65, 30},   {-31, 11},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = mgpu_t5_relative_bucket(cases[i].rel, 32, 128);
        if (got != cases[i].bucket)
            fail_msg("relative position %lld: bucket %d, expected %d", (long long)cases[i].rel,
                     got, cases[i].bucket);
        assert_int_equal(t5_reference_bucket(cases[i].rel, 32, 128), cases[i].bucket);
    }
    for (int64_t rel = -600; rel <= 600; rel++)
        assert_int_equal(mgpu_t5_relative_bucket(rel, 32, 128), t5_reference_bucket(rel, 32, 128));
}

static void test_missing_tensor(void **state)
{
    (void)state;
    const char *full = test_path("t5-full.safetensors"), *cut = test_path("t5-cut.safetensors");
    synth("umt5-xxl", 0, MGPU_DTYPE_F32, "", 35, full);
    const char *names[] = {"encoder.block.1.layer.1.DenseReluDense.wo.weight",
                           "encoder.final_layer_norm.weight", "shared.weight",
                           "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        copy_without(full, cut, names[i]);
        mgpu_model *m = open_ok(cut);
        mgpu_t5 *t5 = NULL;
        mgpu_error err = {0};
        assert_int_equal(mgpu_t5_load(m, 0, &t5, &err), MGPU_ERR_FORMAT);
        assert_null(t5);
        print_message("missing: %s\n", err.message);
        assert_non_null(strstr(err.message, names[i]));
        mgpu_model_close(m);
    }
    /* UMT5 without block 1's own table. */
    copy_without(full, cut, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight");
    mgpu_model *m = open_ok(cut);
    mgpu_t5 *t5 = NULL;
    mgpu_error err = {0};
    assert_int_equal(mgpu_t5_load(m, 0, &t5, &err), MGPU_OK);
    assert_false(mgpu_t5_get_config(t5)->bias_per_block); /* read as T5 v1.1 */
    mgpu_t5_free(t5);
    mgpu_model_close(m);
    /* Scale forms T5 does not apply (a per-channel weight_scale) are
     * refused, naming the scale, rather than run with the weights unscaled. */
    synth("t5-xxl", 0, MGPU_DTYPE_F8_E4M3, "", 37, full);
    copy_edited(full, cut, NULL, "encoder.block.0.layer.0.SelfAttention.k.weight_scale");
    m = open_ok(cut);
    assert_int_equal(mgpu_t5_load(m, 0, &t5, &err), MGPU_ERR_UNSUPPORTED);
    assert_null(t5);
    assert_non_null(strstr(err.message, "SelfAttention.k.weight_scale"));
    assert_non_null(strstr(err.message, "scaled-fp8"));
    mgpu_model_close(m);
    /* CLIP is not T5. */
    synth("clip-l", 0, MGPU_DTYPE_F32, "", 36, cut);
    m = open_ok(cut);
    assert_int_equal(mgpu_t5_load(m, 0, &t5, &err), MGPU_ERR_FORMAT);
    assert_non_null(strstr(err.message, "SelfAttention.q.weight"));
    mgpu_model_close(m);
    /* and applies no scales: a scaled-fp8 CLIP is refused */
    copy_edited(cut, full, NULL, "text_model.encoder.layers.0.mlp.fc1.scale_weight");
    m = open_ok(full);
    mgpu_clip *clip = NULL;
    assert_int_equal(mgpu_clip_load(m, 0, &clip, &err), MGPU_ERR_UNSUPPORTED);
    assert_null(clip);
    assert_non_null(strstr(err.message, "fc1.scale_weight"));
    mgpu_model_close(m);
    remove(full);
    remove(cut);
}

/* True for the stored names of T5's linear weights. */
static bool is_linear(const char *name)
{
    static const char *const ends[] = {"SelfAttention.q.weight", "SelfAttention.k.weight",
                                       "SelfAttention.v.weight", "SelfAttention.o.weight",
                                       "DenseReluDense.wi_0.weight", "DenseReluDense.wi_1.weight",
                                       "DenseReluDense.wo.weight"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        size_t m = strlen(ends[i]);
        if (n >= m && strcmp(name + n - m, ends[i]) == 0)
            return true;
    }
    return false;
}

/* A ComfyUI-style scaled-fp8 T5 (t5xxl_fp8_e4m3fn_scaled): every linear
 * stored as 2W in e4m3 with a scale_weight of 0.5. Doubling is exact in
 * e4m3 (these weights are far below 448) and so are both scalings in
 * f32, so the output must equal the unscaled model's bit for bit; with
 * the scale ignored it would be twice as large in every linear. */
static void test_scaled_fp8(void **state)
{
    (void)state;
    const char *plain = test_path("t5-fp8.safetensors");
    const char *scaled = test_path("t5-fp8-scaled.safetensors");
    synth("t5-xxl", 0, MGPU_DTYPE_F8_E4M3, "", 38, plain);
    mgpu_model *m = open_ok(plain);
    mgpu_error err = {0};
    mgpu_safetensors_writer *w = NULL;
    assert_int_equal(mgpu_safetensors_writer_create(scaled, &w, &err), MGPU_OK);
    const size_t n = mgpu_model_tensor_count(m);
    const uint64_t one[1] = {1};
    size_t linears = 0;
    for (size_t i = 0; i < n; i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        assert_int_equal(mgpu_safetensors_writer_add_tensor(w, t->info.name, t->info.dtype,
                                                            t->info.ndim, t->info.shape, &err),
                         MGPU_OK);
        if (is_linear(t->info.name)) {
            assert_int_equal(t->info.dtype, MGPU_DTYPE_F8_E4M3);
            char sname[256];
            snprintf(sname, sizeof sname, "%.*s.scale_weight",
                     (int)(strlen(t->info.name) - strlen(".weight")), t->info.name);
            assert_int_equal(
                mgpu_safetensors_writer_add_tensor(w, sname, MGPU_DTYPE_F32, 1, one, &err),
                MGPU_OK);
            linears++;
        }
    }
    assert_true(linears >= 7);
    for (size_t i = 0; i < n; i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        if (!is_linear(t->info.name)) {
            assert_int_equal(mgpu_safetensors_writer_write(w, t->info.data, t->info.nbytes, &err),
                             MGPU_OK);
            continue;
        }
        uint8_t *b = malloc((size_t)t->info.nbytes);
        const uint8_t *src = t->info.data;
        for (uint64_t k = 0; k < t->info.nbytes; k++)
            b[k] = mgpu_f32_to_fp8_e4m3(2.0f * mgpu_fp8_e4m3_to_f32(src[k]));
        const float half = 0.5f;
        assert_int_equal(mgpu_safetensors_writer_write(w, b, t->info.nbytes, &err), MGPU_OK);
        assert_int_equal(mgpu_safetensors_writer_write(w, &half, sizeof half, &err), MGPU_OK);
        free(b);
    }
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
    mgpu_model_close(m);

    const int32_t ids[6] = {5, 17, 3, 99, 1, 0};
    float *a = NULL, *b = NULL;
    size_t count = 0;
    const char *files[2] = {plain, scaled};
    float **outs[2] = {&a, &b};
    for (int f = 0; f < 2; f++) {
        mgpu_model *mm = open_ok(files[f]);
        mgpu_t5 *t5 = NULL;
        if (mgpu_t5_load(mm, 0, &t5, &err) != MGPU_OK)
            fail_msg("%s", err.message);
        count = (size_t)(6 * mgpu_t5_get_config(t5)->d_model);
        *outs[f] = malloc(count * sizeof(float));
        mgpu_backend *be = backend(1);
        mgpu_tensor_source src = mgpu_resident_source();
        if (mgpu_t5_forward(t5, be, &src, ids, 6, *outs[f], &err) != MGPU_OK)
            fail_msg("%s", err.message);
        mgpu_backend_free(be);
        mgpu_t5_free(t5);
        mgpu_model_close(mm);
    }
    assert_memory_equal(a, b, count * sizeof(float));
    free(a), free(b);
    remove(plain);
    remove(scaled);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    const char *path = test_path("t5-bad.safetensors");
    synth("t5-xxl", 0, MGPU_DTYPE_F32, "", 37, path);
    mgpu_model *m = open_ok(path);
    mgpu_t5 *t5 = NULL;
    mgpu_error err = {0};
    assert_int_equal(mgpu_t5_load(m, 0, &t5, &err), MGPU_OK);
    mgpu_backend *be = backend(1);
    mgpu_tensor_source src = mgpu_resident_source();
    int32_t tokens[8] = {5, 6, 7, 8, 9, 1, 0, 0};
    float hidden[8 * 256];
    tokens[4] = 5000;
    assert_int_equal(mgpu_t5_forward(t5, be, &src, tokens, 8, hidden, &err), MGPU_ERR_ARGUMENT);
    print_message("id: %s\n", err.message);
    assert_non_null(strstr(err.message, "5000"));
    tokens[4] = -1;
    assert_int_equal(mgpu_t5_forward(t5, be, &src, tokens, 8, hidden, &err), MGPU_ERR_ARGUMENT);
    assert_non_null(strstr(err.message, "-1"));
    tokens[4] = 9;
    assert_int_equal(mgpu_t5_forward(t5, be, &src, tokens, 0, hidden, &err), MGPU_ERR_ARGUMENT);
    print_message("empty: %s\n", err.message);
    assert_int_equal(mgpu_t5_forward(t5, be, &src, tokens, 8, hidden, &err), MGPU_OK);
    mgpu_t5 *other = NULL;
    assert_int_equal(mgpu_t5_load(m, -1, &other, &err), MGPU_ERR_ARGUMENT);
    assert_null(other);
    mgpu_backend_free(be);
    mgpu_t5_free(t5);
    mgpu_model_close(m);
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_t5_f32),
        cmocka_unit_test(test_t5_bf16_prefixed_long),
        cmocka_unit_test(test_umt5_f32),
        cmocka_unit_test(test_t5_llama_names_q8_gguf),
        cmocka_unit_test(test_two_encoders_one_file),
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_scaled_fp8),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
