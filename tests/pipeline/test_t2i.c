/* Text to image end to end on tiny synthetic FLUX.1-dev, CLIP-L, T5 and VAE
 * files with synthetic tokenizers: the image bytes are the same for every
 * placement of every component, a seed gives the same image and another
 * seed another one, a batch draws its images from one noise tensor, and
 * each bad request fails before compute with a message naming the problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/t2i.h"
#include "synth_tokenizer.h"
#include "synth_write.h"
#include "test_models.h"
#include "test_util.h"

static char flux_path[1024], clip_path[1024], t5_path[1024], vae_path[1024];
static char clip_tok[1024], t5_tok[1024];

static int setup(void **state)
{
    (void)state;
    snprintf(flux_path, sizeof flux_path, "%s", test_path("t2i-flux.gguf"));
    snprintf(clip_path, sizeof clip_path, "%s", test_path("t2i-clip.safetensors"));
    snprintf(t5_path, sizeof t5_path, "%s", test_path("t2i-t5.safetensors"));
    snprintf(vae_path, sizeof vae_path, "%s", test_path("t2i-vae.safetensors"));
    snprintf(clip_tok, sizeof clip_tok, "%s", test_path("t2i-clip-tok"));
    snprintf(t5_tok, sizeof t5_tok, "%s", test_path("t2i-spiece.model"));
    const struct {
        const char *arch;
        int gguf;
        mgpu_dtype dtype;
        const char *out;
    } files[] = {{"flux-dev", 1, MGPU_DTYPE_Q8_0, flux_path},
                 {"clip-l", 0, MGPU_DTYPE_F16, clip_path},
                 {"t5-xxl", 0, MGPU_DTYPE_BF16, t5_path},
                 {"vae-flux", 0, MGPU_DTYPE_F32, vae_path}};
    mgpu_error err = {0};
    for (size_t i = 0; i < 4; i++) {
        synth_options o = {.arch = files[i].arch, .scale = SYNTH_SCALE_TINY,
                           .gguf = files[i].gguf, .dtype = files[i].dtype, .seed = 20 + i,
                           .prefix = "", .out = files[i].out};
        if (synth_write(&o, &err) != MGPU_OK) {
            fprintf(stderr, "setup: %s\n", err.message);
            return -1;
        }
    }
    if (synth_tok_write_default("clip", SYNTH_TOK_VOCAB, clip_tok, &err) != MGPU_OK ||
        synth_tok_write_default("t5", SYNTH_TOK_SPIECE, t5_tok, &err) != MGPU_OK) {
        fprintf(stderr, "setup: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    remove(flux_path);
    remove(clip_path);
    remove(t5_path);
    remove(vae_path);
    remove(t5_tok);
    char p[1100];
    snprintf(p, sizeof p, "%s/vocab.json", clip_tok);
    remove(p);
    snprintf(p, sizeof p, "%s/merges.txt", clip_tok);
    remove(p);
    remove(clip_tok);
    return 0;
}

/* A small request on the given devices; placement fields left to the caller. */
static mgpu_t2i_request request(const mgpu_device_list *devices)
{
    mgpu_t2i_request q = {
        .slot = {[MGPU_T2I_CLIP] = {clip_path, NULL, NULL},
                 [MGPU_T2I_T5] = {t5_path, NULL, NULL},
                 [MGPU_T2I_DIFFUSION] = {flux_path, NULL, NULL},
                 [MGPU_T2I_VAE] = {vae_path, NULL, NULL}},
        .clip_tokenizer = clip_tok,
        .t5_tokenizer = t5_tok,
        .devices = devices,
        .prompt = "a red fox in the snow",
        .width = 64,
        .height = 48,
        .steps = 3,
        .batch = 1,
        .guidance = 3.5f,
        .seed = 7,
        .flux = {.heads = 2},
        .gemm = MGPU_GEMM_F32,
        .threads = 2,
    };
    return q;
}

static mgpu_device_list devices_of(const char *spec)
{
    mgpu_device_list list;
    mgpu_error err = {0};
    if (mgpu_devices_simulate(spec, &list, &err) != MGPU_OK)
        fail_msg("%s: %s", spec, err.message);
    return list;
}

static uint8_t *run_ok(const mgpu_t2i_request *q, mgpu_t2i_result *res)
{
    mgpu_error err = {0};
    if (mgpu_t2i_run(q, res, &err) != MGPU_OK)
        fail_msg("t2i: %s", err.message);
    return res->rgb;
}

static void test_placements_give_the_same_image(void **state)
{
    (void)state;
    mgpu_device_list cpu = devices_of("cpu=8gib,disk@2gbps");
    mgpu_t2i_request q = request(&cpu);
    mgpu_t2i_result ref;
    run_ok(&q, &ref);
    assert_int_equal(ref.steps, 3);
    assert_string_equal(ref.arch, "flux-dev");
    size_t bytes = (size_t)(64 * 48 * 3);
    /* not a flat image: the pipeline computed something */
    int distinct = 0;
    for (size_t i = 1; i < bytes; i++)
        distinct += ref.rgb[i] != ref.rgb[0];
    assert_true(distinct > 100);

    struct {
        const char *spec, *compute, *alloc[MGPU_T2I_STAGES];
    } cases[] = {
        /* CPU compute, parts of every component streamed from disk */
        {"cpu=8gib,disk@2gbps", "cpu", {"cpu,50%;disk,*", "cpu,30%;disk,*", "cpu,40%;disk,*", NULL}},
        /* a simulated GPU: half in RAM, T5 all from disk, the VAE on a donor */
        {"cuda:0=1gib@25gbps,cuda:1=1gib@25gbps,cpu=8gib,disk@2gbps", "cuda:0",
         {"cuda:0,50%;cpu,*", "cuda:0,0b;disk,*", "cuda:0,40%;cpu,*", "cuda:0,0b;cuda:1,*"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        mgpu_device_list list = devices_of(cases[c].spec);
        mgpu_t2i_request p = request(&list);
        p.compute = cases[c].compute;
        for (int s = 0; s < MGPU_T2I_STAGES; s++)
            p.slot[s].alloc = cases[c].alloc[s];
        mgpu_t2i_result res;
        run_ok(&p, &res);
        if (memcmp(res.rgb, ref.rgb, bytes) != 0)
            fail_msg("placement %zu on '%s' changed the image", c, cases[c].spec);
        /* something did stream */
        uint64_t streamed = 0;
        for (int s = 0; s < MGPU_T2I_STAGES; s++)
            for (int d = 0; d < MGPU_MAX_DEVICES; d++)
                streamed += res.stage[s].exec.bytes_copied[d];
        assert_true(streamed > 0);
        for (int s = 0; s < MGPU_T2I_STAGES; s++)
            assert_true(res.stage[s].held_peak_bytes <= res.stage[s].predicted_bytes);
        mgpu_t2i_result_free(&res);
    }

    /* the same seed again: the same image; another seed: another image */
    mgpu_t2i_result again, other;
    run_ok(&q, &again);
    assert_memory_equal(again.rgb, ref.rgb, bytes);
    q.seed = 8;
    run_ok(&q, &other);
    assert_true(memcmp(other.rgb, ref.rgb, bytes) != 0);
    mgpu_t2i_result_free(&again);
    mgpu_t2i_result_free(&other);
    mgpu_t2i_result_free(&ref);
}

static void test_batch(void **state)
{
    (void)state;
    mgpu_device_list cpu = devices_of("cpu=8gib");
    mgpu_t2i_request q = request(&cpu);
    q.batch = 2;
    q.steps = 0; /* the architecture's default: 20 for dev */
    q.width = q.height = 32;
    mgpu_t2i_result res;
    run_ok(&q, &res);
    assert_int_equal(res.batch, 2);
    assert_int_equal(res.steps, 20);
    size_t bytes = 32 * 32 * 3;
    /* two images from one noise draw are different images */
    assert_true(memcmp(res.rgb, res.rgb + bytes, bytes) != 0);
    mgpu_t2i_result_free(&res);
}

static void expect_error(const mgpu_t2i_request *q, const char *needle)
{
    mgpu_t2i_result res;
    mgpu_error err = {0};
    assert_int_not_equal(mgpu_t2i_run(q, &res, &err), MGPU_OK);
    print_message("%s\n", err.message);
    if (!strstr(err.message, needle))
        fail_msg("'%s' does not say '%s'", err.message, needle);
    assert_null(res.rgb);
}

static void test_bad_requests(void **state)
{
    (void)state;
    mgpu_device_list cpu = devices_of("cpu=8gib");
    mgpu_t2i_request q = request(&cpu);
    q.width = 100;
    expect_error(&q, "multiples of 16");
    q = request(&cpu);
    q.prompt = "  \n ";
    expect_error(&q, "prompt is empty");
    q = request(&cpu);
    q.steps = 1001;
    expect_error(&q, "steps");
    q = request(&cpu);
    q.slot[MGPU_T2I_CLIP].path = t5_path; /* a file of the wrong architecture */
    expect_error(&q, "not a CLIP-L text encoder");
    q = request(&cpu);
    q.slot[MGPU_T2I_VAE].path = NULL; /* the diffusion file holds no VAE */
    expect_error(&q, "no vae component");
    q = request(&cpu);
    q.clip_tokenizer = t5_tok;
    expect_error(&q, "not a CLIP BPE tokenizer");
    /* a prompt past T5's 512 tokens */
    char *long_prompt = malloc(6001);
    for (int i = 0; i < 1000; i++)
        memcpy(long_prompt + 6 * i, "snow  ", 6);
    long_prompt[6000] = '\0';
    q = request(&cpu);
    q.prompt = long_prompt;
    expect_error(&q, "at most");
    free(long_prompt);
    /* a plan that cannot fit: 4 MiB of weights on a 1 MiB GPU, nothing else */
    mgpu_device_list tiny = devices_of("cuda:0=1mib,cpu=8gib");
    q = request(&tiny);
    q.compute = "cuda:0";
    expect_error(&q, "cuda:0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placements_give_the_same_image),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_bad_requests),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
