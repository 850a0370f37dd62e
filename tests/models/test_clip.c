/* The CLIP text encoder (src/models/clip.c) on the CPU backend against the
 * independent double-precision reference (encoder_reference.c) on tiny
 * synthetic CLIP-L checkpoints: F32, BF16 under ComfyUI's prefix with all
 * 77 positions, Q8_0 GGUF; hidden states, pooled vector and penultimate
 * layer; the block discipline the streaming executor relies on; and the
 * errors (a missing tensor, a token id out of range, too many tokens, a bad
 * pooled index, a model that is not CLIP). */
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
#include "mgpu/model.h"
#include "mgpu/safetensors.h"
#include "models/clip.h"
#include "models/encoder_reference.h"
#include "synth_write.h"
#include "test_models.h"
#include "test_random.h"
#include "test_util.h"

/* Max |real - ref| over max |ref|. Both sides decode the same stored
 * weights; the real pass runs in f32 with its own summation orders:
 * observed 4.4e-7 to 6.2e-7 for CLIP and 6.4e-7 to 9.1e-7 for T5. Mistakes
 * measured by mutating the reference land at 1e-4 and above: T5 GELU with
 * erf instead of tanh 1.2e-4, RMSNorm eps 1e-5 instead of 1e-6 5.6e-3,
 * relative positions of the wrong sign 6e-2, max distance 64 3.5e-2; CLIP
 * LayerNorm eps 1e-6 instead of 1e-5 1e-3, quick-GELU with 1.6 1.1e-2.
 * 1e-5 keeps a 10x margin on both sides. */
#define REL_TOLERANCE 1e-5

static const int32_t EOS = 1000; /* stands for 49407 in the tiny vocabulary */

/* max |a - b| / max |b|; b must not be all zeros. */
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

/* Random ids below 1000, then EOS at eos_at and after (CLIP pads with it). */
static int32_t *make_tokens(int64_t n, int64_t eos_at, uint64_t seed)
{
    int32_t *t = malloc((size_t)n * sizeof *t);
    assert_non_null(t);
    rng_seed(seed);
    for (int64_t i = 0; i < n; i++)
        t[i] = i >= eos_at ? EOS : (int32_t)(rng_next() % 1000);
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

/* Loads, runs with 1 and 3 threads through the checking source, runs the
 * reference, compares hidden, pooled and penultimate. */
static void check_forward(const char *label, const char *path, int64_t n, int64_t eos_at,
                          uint64_t seed)
{
    mgpu_model *m = open_ok(path);
    mgpu_error err = {0};
    mgpu_clip *clip = NULL;
    if (mgpu_clip_load(m, 0, &clip, &err) != MGPU_OK)
        fail_msg("%s: load: %s", label, err.message);
    const mgpu_clip_config *c = mgpu_clip_get_config(clip);
    assert_int_equal(c->vocab, 1024);
    assert_int_equal(c->positions, 77);
    assert_int_equal(c->hidden, 256);
    assert_int_equal(c->heads, 4);
    assert_int_equal(c->head_dim, 64);
    assert_int_equal(c->ffn, 1024);
    assert_int_equal(c->layers, 2);

    int32_t *tokens = make_tokens(n, eos_at, seed);
    int64_t pooled_index = mgpu_clip_first_token(tokens, n, EOS);
    assert_int_equal(pooled_index, eos_at < n ? eos_at : -1);
    if (pooled_index < 0)
        pooled_index = n - 1;
    size_t nh = (size_t)(n * 256);
    double *want = malloc(nh * sizeof *want), *want_pen = malloc(nh * sizeof *want_pen);
    double want_pooled[256];
    assert_true(want && want_pen);
    char msg[256];
    if (clip_reference_forward(m, 0, tokens, n, pooled_index, want, want_pooled, want_pen, msg,
                               sizeof msg))
        fail_msg("%s: reference: %s", label, msg);

    for (int threads = 1; threads <= 3; threads += 2) {
        mgpu_backend *be = backend(threads);
        float *hidden = malloc(nh * sizeof *hidden), *pen = malloc(nh * sizeof *pen);
        float pooled[256], pooled2[256];
        assert_true(hidden && pen);
        checking_source cs;
        mgpu_tensor_source src = checking_source_make(&cs, m);
        mgpu_clip_outputs out = {hidden, pooled, pen};
        if (mgpu_clip_forward_outputs(clip, be, &src, tokens, n, pooled_index, &out, &err) !=
            MGPU_OK)
            fail_msg("%s: forward: %s", label, err.message);
        if (cs.violations)
            fail_msg("%s: %d block violations, first: %s", label, cs.violations,
                     cs.first_violation);
        assert_int_equal(cs.enters, 2); /* one per layer */
        assert_int_equal(cs.leaves, 2);
        double dh = rel_diff(hidden, want, nh), dp = rel_diff(pooled, want_pooled, 256);
        double dpen = rel_diff(pen, want_pen, nh);
        print_message("%s, %d thread(s): hidden %.3g, pooled %.3g, penultimate %.3g\n", label,
                      threads, dh, dp, dpen);
        assert_true(dh <= REL_TOLERANCE);
        assert_true(dp <= REL_TOLERANCE);
        assert_true(dpen <= REL_TOLERANCE);
        /* The pooled vector is exactly that row of the hidden states, and
         * the plain entry point gives the same. */
        assert_memory_equal(pooled, hidden + pooled_index * 256, sizeof pooled);
        mgpu_tensor_source res = mgpu_resident_source();
        if (mgpu_clip_forward(clip, be, &res, tokens, n, pooled_index, pen, pooled2, &err) !=
            MGPU_OK)
            fail_msg("%s: forward: %s", label, err.message);
        assert_memory_equal(pen, hidden, nh * sizeof *hidden);
        assert_memory_equal(pooled2, pooled, sizeof pooled);
        free(hidden);
        free(pen);
        mgpu_backend_free(be);
    }
    free(tokens);
    free(want);
    free(want_pen);
    mgpu_clip_free(clip);
    mgpu_model_close(m);
}

static void test_f32(void **state)
{
    (void)state;
    const char *path = test_path("clip-l-f32.safetensors");
    synth("clip-l", 0, MGPU_DTYPE_F32, "", 21, path);
    check_forward("clip-l F32", path, 12, 9, 1);
    remove(path);
}

/* ComfyUI's all-in-one prefix, every position, no EOS at all. */
static void test_bf16_prefixed_full_length(void **state)
{
    (void)state;
    const char *path = test_path("clip-l-bf16.safetensors");
    synth("clip-l", 0, MGPU_DTYPE_BF16, "text_encoders.clip_l.transformer.", 22, path);
    mgpu_model *m = open_ok(path);
    assert_string_equal(mgpu_model_component_at(m, 0)->prefix,
                        "text_encoders.clip_l.transformer.");
    mgpu_model_close(m);
    check_forward("clip-l BF16 prefixed", path, 77, 77, 2);
    remove(path);
}

static void test_q8_gguf(void **state)
{
    (void)state;
    const char *path = test_path("clip-l-q8.gguf");
    synth("clip-l", 1, MGPU_DTYPE_Q8_0, "", 23, path);
    check_forward("clip-l Q8_0 gguf", path, 5, 2, 3);
    remove(path);
}

static void test_missing_tensor(void **state)
{
    (void)state;
    const char *full = test_path("clip-full.safetensors"), *cut = test_path("clip-cut.safetensors");
    synth("clip-l", 0, MGPU_DTYPE_F32, "", 24, full);
    const char *names[] = {"text_model.encoder.layers.1.mlp.fc2.bias",
                           "text_model.final_layer_norm.weight",
                           "text_model.embeddings.position_embedding.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        copy_without(full, cut, names[i]);
        mgpu_model *m = open_ok(cut);
        mgpu_clip *clip = NULL;
        mgpu_error err = {0};
        assert_int_equal(mgpu_clip_load(m, 0, &clip, &err), MGPU_ERR_FORMAT);
        assert_null(clip);
        print_message("missing: %s\n", err.message);
        assert_non_null(strstr(err.message, names[i]));
        mgpu_model_close(m);
    }
    /* A T5 encoder is not CLIP. */
    synth("t5-xxl", 0, MGPU_DTYPE_F32, "", 25, cut);
    mgpu_model *m = open_ok(cut);
    mgpu_clip *clip = NULL;
    mgpu_error err = {0};
    assert_int_equal(mgpu_clip_load(m, 0, &clip, &err), MGPU_ERR_FORMAT);
    assert_non_null(strstr(err.message, "token_embedding"));
    mgpu_model_close(m);
    remove(full);
    remove(cut);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    const char *path = test_path("clip-bad.safetensors");
    synth("clip-l", 0, MGPU_DTYPE_F32, "", 26, path);
    mgpu_model *m = open_ok(path);
    mgpu_clip *clip = NULL;
    mgpu_error err = {0};
    assert_int_equal(mgpu_clip_load(m, 0, &clip, &err), MGPU_OK);
    mgpu_backend *be = backend(1);
    mgpu_tensor_source src = mgpu_resident_source();
    int32_t tokens[78] = {0};
    float *hidden = malloc(78 * 256 * sizeof *hidden), pooled[256];
    assert_non_null(hidden);

    tokens[3] = 1024; /* one past the vocabulary */
    assert_int_equal(mgpu_clip_forward(clip, be, &src, tokens, 5, 0, hidden, pooled, &err),
                     MGPU_ERR_ARGUMENT);
    print_message("id: %s\n", err.message);
    assert_non_null(strstr(err.message, "1024"));
    tokens[3] = -7;
    assert_int_equal(mgpu_clip_forward(clip, be, &src, tokens, 5, 0, hidden, pooled, &err),
                     MGPU_ERR_ARGUMENT);
    assert_non_null(strstr(err.message, "-7"));
    tokens[3] = 0;

    assert_int_equal(mgpu_clip_forward(clip, be, &src, tokens, 78, 0, hidden, pooled, &err),
                     MGPU_ERR_ARGUMENT);
    print_message("length: %s\n", err.message);
    assert_non_null(strstr(err.message, "78"));
    assert_int_equal(mgpu_clip_forward(clip, be, &src, tokens, 0, 0, hidden, pooled, &err),
                     MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_clip_forward(clip, be, &src, tokens, 5, 5, hidden, pooled, &err),
                     MGPU_ERR_ARGUMENT);
    print_message("pooled: %s\n", err.message);
    /* Without a pooled output the index does not matter. */
    assert_int_equal(mgpu_clip_forward(clip, be, &src, tokens, 5, 5, hidden, NULL, &err), MGPU_OK);
    mgpu_clip *other = NULL;
    assert_int_equal(mgpu_clip_load(m, 3, &other, &err), MGPU_ERR_ARGUMENT);
    assert_null(other);

    free(hidden);
    mgpu_clip_free(clip);
    mgpu_backend_free(be);
    mgpu_model_close(m);
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32),
        cmocka_unit_test(test_bf16_prefixed_full_length),
        cmocka_unit_test(test_q8_gguf),
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
