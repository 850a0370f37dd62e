/* `mgpu inspect` end to end: runs the real binary (path in argv[1]) on
 * synthetic models and bad files, and checks exit codes, stdout, stderr and
 * the files it writes (or must not write). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "backend/backend.h"
#include "core/file.h"
#include "exec/source.h"
#include "models/clip.h"
#include "models/t5.h"
#include "models/vae.h"
#include "mgpu/model.h"
#include "mgpu/safetensors.h"
#include "synth_lora.h"
#include "synth_tokenizer.h"
#include "synth_write.h"
#include "test_util.h"
#include "test_models.h"

static const char *mgpu_binary;
static char model_path[1024];

typedef struct run_result {
    int code;
    char *out;
    char *err;
} run_result;

static char *slurp(const char *path)
{
    char *text = NULL;
    uint64_t size;
    mgpu_error e = {0};
    if (mgpu_file_read_all(path, 1 << 26, &text, &size, &e) != MGPU_OK)
        fail_msg("%s", e.message);
    return text;
}

/* Runs `mgpu ARGS` with stdout and stderr captured. */
static run_result run(const char *args)
{
    char out[1100], err[1100], cmd[4096];
    snprintf(out, sizeof out, "%s", test_path("cli.out"));
    snprintf(err, sizeof err, "%s", test_path("cli.err"));
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s' </dev/null", mgpu_binary, args, out, err);
    int status = system(cmd);
    run_result r = {.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1};
    r.out = slurp(out);
    r.err = slurp(err);
    remove(out);
    remove(err);
    return r;
}

static void run_free(run_result *r)
{
    free(r->out);
    free(r->err);
}

static int line_count(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static int setup(void **state)
{
    (void)state;
    snprintf(model_path, sizeof model_path, "%s", test_path("cli-flux.gguf"));
    synth_options o = {.arch = "flux-dev", .scale = SYNTH_SCALE_TINY, .gguf = 1,
                       .dtype = MGPU_DTYPE_Q8_0, .seed = 3, .prefix = "", .out = model_path};
    mgpu_error err = {0};
    return synth_write(&o, &err) == MGPU_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    remove(model_path);
    return 0;
}

static void test_summary(void **state)
{
    (void)state;
    char args[1200];
    snprintf(args, sizeof args, "inspect '%s'", model_path);
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.err, "");
    assert_non_null(strstr(r.out, "flux-dev"));
    assert_non_null(strstr(r.out, "gguf v3"));
    assert_non_null(strstr(r.out, "double_blocks: 2"));
    assert_non_null(strstr(r.out, "single_blocks: 2"));
    assert_non_null(strstr(r.out, "Q8_0"));
    assert_non_null(strstr(r.out, "general.architecture = flux-dev"));
    assert_null(strstr(r.out, "img_in.weight")); /* tensors only with --tensors */
    run_free(&r);
    snprintf(args, sizeof args, "inspect --tensors '%s'", model_path);
    r = run(args);
    assert_int_equal(r.code, 0);
    const char *line = strstr(r.out, "double_blocks.0.img_attn.qkv.weight");
    assert_non_null(line);
    assert_non_null(strstr(line, "[768, 256]"));
    run_free(&r);
}

static void test_json(void **state)
{
    (void)state;
    char args[1200];
    snprintf(args, sizeof args, "inspect --json '%s'", model_path);
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    json_error_t jerr;
    json_t *root = json_loads(r.out, 0, &jerr);
    assert_non_null(root);
    json_t *model = json_array_get(json_object_get(root, "models"), 0);
    json_t *comp = json_array_get(json_object_get(model, "components"), 0);
    assert_string_equal(json_string_value(json_object_get(comp, "arch")), "flux-dev");
    /* every tensor agrees with the library's own view */
    mgpu_model *m;
    mgpu_error err = {0};
    assert_int_equal(mgpu_model_open(model_path, &m, &err), MGPU_OK);
    json_t *tensors = json_object_get(model, "tensors");
    assert_int_equal(json_array_size(tensors), mgpu_model_tensor_count(m));
    for (size_t i = 0; i < json_array_size(tensors); i++) {
        json_t *t = json_array_get(tensors, i);
        const mgpu_model_tensor *mt = mgpu_model_find(m, json_string_value(json_object_get(t, "name")));
        assert_non_null(mt);
        assert_int_equal(json_integer_value(json_object_get(t, "offset")), mt->info.file_offset);
        assert_int_equal(json_integer_value(json_object_get(t, "bytes")), mt->info.nbytes);
        assert_string_equal(json_string_value(json_object_get(t, "dtype")),
                            mgpu_dtype_name(mt->info.dtype));
        json_t *shape = json_object_get(t, "shape");
        assert_int_equal(json_array_size(shape), mt->info.ndim);
        for (int d = 0; d < mt->info.ndim; d++)
            assert_int_equal(json_integer_value(json_array_get(shape, (size_t)d)), mt->info.shape[d]);
    }
    assert_int_equal(json_array_size(json_object_get(model, "blocks")), 4);
    mgpu_model_close(m);
    json_decref(root);
    run_free(&r);
}

static void test_dump(void **state)
{
    (void)state;
    const char *name = "double_blocks.1.txt_mlp.2.weight";
    char out[1100], raw[1100], args[4096];
    snprintf(out, sizeof out, "%s", test_path("dump.safetensors"));
    snprintf(raw, sizeof raw, "%s", test_path("dump.f32"));
    snprintf(args, sizeof args, "inspect '%s' --dump %s -o '%s'", model_path, name, out);
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    run_free(&r);
    snprintf(args, sizeof args, "inspect '%s' --dump %s -o '%s'", model_path, name, raw);
    r = run(args);
    assert_int_equal(r.code, 0);
    run_free(&r);

    mgpu_model *m;
    mgpu_error err = {0};
    assert_int_equal(mgpu_model_open(model_path, &m, &err), MGPU_OK);
    const mgpu_model_tensor *src = mgpu_model_find(m, name);
    assert_int_equal(src->info.dtype, MGPU_DTYPE_Q8_0);
    float *want = malloc(src->info.n_elems * sizeof(float));
    assert_int_equal(mgpu_dequantize(src->info.dtype, src->info.data, want, src->info.n_elems),
                     MGPU_OK);
    mgpu_safetensors *st;
    assert_int_equal(mgpu_safetensors_open(out, &st, &err), MGPU_OK);
    const mgpu_tensor_info *t = mgpu_safetensors_find(st, name);
    assert_non_null(t);
    assert_int_equal(t->dtype, MGPU_DTYPE_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], src->info.shape[0]);
    assert_int_equal(t->shape[1], src->info.shape[1]);
    assert_memory_equal(t->data, want, src->info.n_elems * sizeof(float));
    mgpu_safetensors_close(st);
    mgpu_mapped_file f;
    assert_int_equal(mgpu_file_map(raw, &f, &err), MGPU_OK);
    assert_int_equal(f.size, src->info.n_elems * sizeof(float));
    assert_memory_equal(f.data, want, (size_t)f.size);
    mgpu_file_unmap(&f);
    free(want);
    mgpu_model_close(m);
    remove(out);
    remove(raw);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    /* a truncated copy of the model */
    char bad[1100], out[1100], args[4096];
    snprintf(bad, sizeof bad, "%s", test_path("truncated.gguf"));
    snprintf(out, sizeof out, "%s", test_path("never.safetensors"));
    mgpu_mapped_file f;
    mgpu_error err = {0};
    assert_int_equal(mgpu_file_map(model_path, &f, &err), MGPU_OK);
    FILE *fp = fopen(bad, "wb");
    fwrite(f.data, 1, (size_t)(f.size / 2), fp);
    fclose(fp);
    mgpu_file_unmap(&f);

    snprintf(args, sizeof args, "inspect '%s'", bad);
    run_result r = run(args);
    assert_int_equal(r.code, 1);
    assert_string_equal(r.out, "");
    assert_int_equal(line_count(r.err), 1);
    assert_true(strncmp(r.err, "mgpu: ", 6) == 0);
    assert_non_null(strstr(r.err, bad));
    assert_non_null(strstr(r.err, "past the end"));
    run_free(&r);

    /* nothing is written when the input is bad or the tensor is missing */
    snprintf(args, sizeof args, "inspect '%s' --dump img_in.weight -o '%s'", bad, out);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_false(test_file_exists(out));
    run_free(&r);
    snprintf(args, sizeof args, "inspect '%s' --dump no.such.tensor -o '%s'", model_path, out);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "no tensor named 'no.such.tensor'"));
    assert_false(test_file_exists(out));
    run_free(&r);

    /* one good file and one bad: the good one is shown, the run fails */
    snprintf(args, sizeof args, "inspect '%s' '%s'", model_path, bad);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.out, "flux-dev"));
    assert_int_equal(line_count(r.err), 1);
    run_free(&r);

    /* a text file, a folder without models, a missing file */
    snprintf(args, sizeof args, "inspect '%s'", "/etc/hostname");
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_int_equal(line_count(r.err), 1);
    assert_non_null(strstr(r.err, "/etc/hostname"));
    run_free(&r);
    r = run("inspect /nonexistent.safetensors");
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "/nonexistent.safetensors"));
    run_free(&r);
    remove(bad);
}

static void test_devices_and_plan(void **state)
{
    (void)state;
    const char *devices = "cuda:0=24gib@25gbps,cuda:1=12gib@6.8gbps,cpu=64gib";
    char full[1100], args[4096];
    snprintf(full, sizeof full, "%s", test_path("cli-full.gguf"));
    synth_options o = {.arch = "flux-dev", .scale = SYNTH_SCALE_FULL, .gguf = 1,
                       .dtype = MGPU_DTYPE_Q8_0, .seed = 1, .prefix = "", .out = full, .sparse = 1};
    mgpu_error err = {0};
    assert_int_equal(synth_write(&o, &err), MGPU_OK);

    snprintf(args, sizeof args, "devices --json --devices '%s'", devices);
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    json_error_t jerr;
    json_t *root = json_loads(r.out, 0, &jerr);
    assert_non_null(root);
    json_t *devs = json_object_get(root, "devices");
    assert_int_equal(json_array_size(devs), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(devs, 1), "name")), "cuda:1");
    assert_true(json_real_value(json_object_get(json_array_get(devs, 1), "host_link_bytes_per_s")) ==
                6.8e9);
    json_decref(root);
    run_free(&r);

    /* the tables users know, in normal mode */
    snprintf(args, sizeof args, "plan '%s' --devices '%s' --alloc '#cuda:0;4.0;cpu'", full, devices);
    r = run(args);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.err, "");
    const char *headings[] = {"Virtual VRAM Analysis", "Object     Role    Original(GB)",
                              "Device Allocations", "VRAM GB", "Layer Distribution",
                              "Layer Type", "Final Device/Layer Assignments",
                              "cuda:0 (<0.01%)", "Memory and Links", "recip", "donor"};
    for (size_t i = 0; i < sizeof headings / sizeof headings[0]; i++)
        if (!strstr(r.out, headings[i]))
            fail_msg("plan output lacks '%s'", headings[i]);
    run_free(&r);

    /* JSON: every module has a device; about 4 GiB on the cpu */
    snprintf(args, sizeof args, "plan '%s' --devices '%s' --alloc '#cuda:0;4.0;cpu' --json", full,
             devices);
    r = run(args);
    assert_int_equal(r.code, 0);
    root = json_loads(r.out, 0, &jerr);
    assert_non_null(root);
    json_t *mods = json_object_get(root, "modules");
    assert_true(json_array_size(mods) > 400);
    json_int_t cpu_bytes = 0, total = 0;
    for (size_t i = 0; i < json_array_size(mods); i++) {
        json_t *m = json_array_get(mods, i);
        const char *dev = json_string_value(json_object_get(m, "device"));
        assert_non_null(dev);
        total += json_integer_value(json_object_get(m, "bytes"));
        if (strcmp(dev, "cpu") == 0)
            cpu_bytes += json_integer_value(json_object_get(m, "bytes"));
    }
    assert_int_equal(total, json_integer_value(json_object_get(root, "model_bytes")));
    assert_true(fabs((double)cpu_bytes / 1073741824.0 - 4.0) < 0.1);
    assert_string_equal(json_string_value(json_object_get(root, "mode")), "normal");
    json_decref(root);
    run_free(&r);

    /* bad strings and devices: one line, exit 1 */
    snprintf(args, sizeof args, "plan '%s' --devices '%s' --alloc 'cuda:0,2.5gx;cpu,*'", full, devices);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_string_equal(r.out, "");
    assert_int_equal(line_count(r.err), 1);
    assert_non_null(strstr(r.err, "unknown unit 'gx'"));
    assert_non_null(strstr(r.err, "column 10"));
    run_free(&r);
    snprintf(args, sizeof args, "plan '%s' --devices 'cuda:0=8gib,tpu=1gib' --alloc ''", full);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "unknown device 'tpu'"));
    run_free(&r);
    snprintf(args, sizeof args, "plan '%s' --devices '%s' --alloc", full, devices);
    r = run(args);
    assert_int_equal(r.code, 2);
    run_free(&r);
    snprintf(args, sizeof args, "plan '%s' --devices '%s,disk' --alloc 'cpu,1gb;disk,*' "
                                "--disk-bandwidth 2gbps --json", full, devices);
    r = run(args);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "\"link_bytes_per_s\": 2000000000"));
    run_free(&r);
    snprintf(args, sizeof args, "plan '%s' --devices '%s,disk' --disk-bandwidth fast", full, devices);
    r = run(args);
    assert_int_equal(r.code, 2);
    run_free(&r);
    snprintf(args, sizeof args, "plan '%s' --devices '%s' --reserve lots", full, devices);
    r = run(args);
    assert_int_equal(r.code, 2);
    run_free(&r);
    /* the environment variable simulates too */
    snprintf(args, sizeof args, "devices");
    setenv("MGPU_DEVICES", "cuda:7=1gib", 1);
    r = run(args);
    unsetenv("MGPU_DEVICES");
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "cuda:7"));
    run_free(&r);
    remove(full);
}

/* An inputs file with the given tensors (F32, seeded values). */
static void write_inputs(const char *path, int count, const char *const *names, const int *ndims,
                         const uint64_t (*shapes)[4])
{
    mgpu_error err = {0};
    mgpu_safetensors_writer *w;
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    for (int i = 0; i < count; i++)
        assert_int_equal(mgpu_safetensors_writer_add_tensor(w, names[i], MGPU_DTYPE_F32, ndims[i],
                                                            shapes[i], &err),
                         MGPU_OK);
    for (int i = 0; i < count; i++) {
        uint64_t n = 1;
        for (int d = 0; d < ndims[i]; d++)
            n *= shapes[i][d];
        float *v = calloc(n, sizeof(float));
        for (uint64_t k = 0; k < n; k++)
            v[k] = (float)((k * 37) % 17) / 17.0f;
        assert_int_equal(mgpu_safetensors_writer_write(w, v, n * sizeof(float), &err), MGPU_OK);
        free(v);
    }
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
}

static void test_forward(void **state)
{
    (void)state;
    char in[1100], out[1100], clip[1100], args[4096];
    snprintf(in, sizeof in, "%s", test_path("fwd-in.safetensors"));
    snprintf(out, sizeof out, "%s", test_path("fwd-out.safetensors"));
    snprintf(clip, sizeof clip, "%s", test_path("fwd-clip.safetensors"));
    mgpu_error err = {0};
    assert_int_equal(synth_write_flux_inputs("flux-dev", SYNTH_SCALE_TINY, 1, 4, 6, 3, 1, in, &err),
                     MGPU_OK);
    snprintf(args, sizeof args,
             "forward --model '%s' --inputs '%s' -o '%s' --set num_heads=2 --devices "
             "'cuda:0=1gib@20gbps,cpu=4gib' --alloc 'cuda:0,50%%;cpu,*'",
             model_path, in, out);
    run_result r = run(args);
    if (r.code != 0)
        fail_msg("forward failed: %s", r.err);
    assert_non_null(strstr(r.err, "mgpu: forward"));
    assert_non_null(strstr(r.err, "overlap"));
    mgpu_safetensors *st;
    assert_int_equal(mgpu_safetensors_open(out, &st, &err), MGPU_OK);
    const mgpu_tensor_info *t = mgpu_safetensors_find(st, "out");
    assert_non_null(t);
    assert_int_equal(t->ndim, 4);
    assert_int_equal(t->shape[1], 16);
    assert_int_equal(t->shape[2], 4);
    assert_int_equal(t->shape[3], 6);
    mgpu_safetensors_close(st);
    run_free(&r);
    remove(out);

    /* inputs that do not match the model: one line, exit 1, no output */
    const char *names[5] = {"x", "timestep", "context", "y", "guidance"};
    const int ndims[5] = {4, 1, 3, 2, 1};
    const uint64_t good[5][4] = {{1, 16, 4, 6}, {1}, {1, 3, 256}, {1, 256}, {1}};
    struct {
        int count;
        int bad; /* which tensor gets a wrong shape, -1 none */
        uint64_t shape[4];
        const char *needle;
    } cases[] = {
        {3, -1, {0}, "no input tensor 'y'"},
        {4, -1, {0}, "no input tensor 'guidance'"},
        {5, 2, {1, 3, 255}, "input 'context' has shape [1, 3, 255], expected [1, 3, 256]"},
        {5, 0, {1, 16, 5, 6}, "must be even"},
        {5, 3, {2, 256}, "input 'y' has shape [2, 256], expected [1, 256]"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint64_t shapes[5][4];
        memcpy(shapes, good, sizeof shapes);
        if (cases[c].bad >= 0)
            memcpy(shapes[cases[c].bad], cases[c].shape, sizeof shapes[0]);
        write_inputs(in, cases[c].count, names, ndims, (const uint64_t(*)[4])shapes);
        snprintf(args, sizeof args, "forward --model '%s' --inputs '%s' -o '%s' --set num_heads=2",
                 model_path, in, out);
        r = run(args);
        assert_int_equal(r.code, 1);
        assert_int_equal(line_count(r.err), 1);
        if (!strstr(r.err, cases[c].needle))
            fail_msg("case %zu: '%s' lacks '%s'", c, r.err, cases[c].needle);
        assert_false(test_file_exists(out));
        run_free(&r);
    }
    /* a CLIP-L model given FLUX's inputs: it runs CLIP, which wants tokens */
    synth_options o = {.arch = "clip-l", .scale = SYNTH_SCALE_TINY, .dtype = MGPU_DTYPE_F32,
                       .seed = 1, .prefix = "", .out = clip};
    assert_int_equal(synth_write(&o, &err), MGPU_OK);
    snprintf(args, sizeof args, "forward --model '%s' --inputs '%s' -o '%s'", clip, in, out);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "no input tensor 'tokens'"));
    assert_false(test_file_exists(out));
    run_free(&r);
    /* a component the file does not have, and one mgpu cannot run */
    snprintf(args, sizeof args, "forward --model '%s' --inputs '%s' -o '%s' --component vae", clip,
             in, out);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "no vae model in it (found clip-l)"));
    run_free(&r);
    o.arch = "clip-g";
    assert_int_equal(synth_write(&o, &err), MGPU_OK);
    snprintf(args, sizeof args, "forward --model '%s' --inputs '%s' -o '%s'", clip, in, out);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "no runnable model in it (found clip-g)"));
    run_free(&r);
    /* settings the weights cannot take, and bad flags */
    snprintf(args, sizeof args, "forward --model '%s' --inputs '%s' -o '%s' --set num_heads=3",
             model_path, in, out);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "not a multiple of 3 heads"));
    run_free(&r);
    snprintf(args, sizeof args, "forward --model '%s' --inputs '%s' -o '%s' --set heads=2",
             model_path, in, out);
    r = run(args);
    assert_int_equal(r.code, 2);
    assert_non_null(strstr(r.err, "unknown setting 'heads'"));
    run_free(&r);
    r = run("forward --model x");
    assert_int_equal(r.code, 2);
    run_free(&r);
    remove(in);
    remove(clip);
}

static void expect_ok(run_result *r)
{
    if (r->code != 0)
        fail_msg("exit %d: %s", r->code, r->err);
    run_free(r);
}

/* One input tensor of any dtype from f32 values. */
static void write_one(const char *path, const char *name, mgpu_dtype dtype, int ndim,
                      const uint64_t *shape, const float *values)
{
    mgpu_error err = {0};
    mgpu_safetensors_writer *w;
    uint64_t n = 1, bytes;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    assert_true(mgpu_dtype_bytes_for(dtype, n, &bytes));
    void *data = malloc(bytes);
    if (dtype == MGPU_DTYPE_I32)
        for (uint64_t i = 0; i < n; i++)
            ((int32_t *)data)[i] = (int32_t)values[i];
    else
        assert_int_equal(mgpu_quantize(dtype, values, data, n), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_add_tensor(w, name, dtype, ndim, shape, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_write(w, data, bytes, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
    free(data);
}

/* `out` (or another tensor) of a forward's output file, as f32. */
static float *read_output(const char *path, const char *name, uint64_t expect_n)
{
    mgpu_safetensors *st;
    mgpu_error err = {0};
    if (mgpu_safetensors_open(path, &st, &err) != MGPU_OK)
        fail_msg("%s", err.message);
    const mgpu_tensor_info *t = mgpu_safetensors_find(st, name);
    assert_non_null(t);
    assert_int_equal(t->n_elems, expect_n);
    float *v = malloc(expect_n * sizeof(float));
    assert_int_equal(mgpu_dequantize(t->dtype, t->data, v, expect_n), MGPU_OK);
    mgpu_safetensors_close(st);
    return v;
}

/* forward on CLIP, T5 and the VAE: the CLI's outputs are the library's,
 * bit for bit (the library is checked against references in its own
 * tests), with the right names and shapes. */
static void test_forward_components(void **state)
{
    (void)state;
    char model[1024], in[1024], out[1024]; /* test_path's buffers rotate */
    snprintf(model, sizeof model, "%s", test_path("fc-model.safetensors"));
    snprintf(in, sizeof in, "%s", test_path("fc-in.safetensors"));
    snprintf(out, sizeof out, "%s", test_path("fc-out.safetensors"));
    char args[4096];
    mgpu_error err = {0};
    mgpu_backend *be = NULL;
    assert_int_equal(mgpu_backend_cpu_create(1, &be, &err), MGPU_OK);
    mgpu_tensor_source src = mgpu_resident_source();

    /* CLIP-L: two rows of 77 ids; the pooled row is each row's largest id */
    synth("clip-l", 0, MGPU_DTYPE_F16, "", 31, model);
    float ids[2 * 77];
    for (int i = 0; i < 2 * 77; i++)
        ids[i] = (float)((i * 131) % 1000);
    write_one(in, "tokens", MGPU_DTYPE_I32, 2, (const uint64_t[]){2, 77}, ids);
    snprintf(args, sizeof args, "forward --model '%s' --inputs '%s' -o '%s' --gemm f32", model, in,
             out);
    run_result r = run(args);
    expect_ok(&r);
    mgpu_model *m = open_ok(model);
    mgpu_clip *clip;
    assert_int_equal(mgpu_clip_load(m, 0, &clip, &err), MGPU_OK);
    int64_t w = mgpu_clip_get_config(clip)->hidden;
    float *got = read_output(out, "out", (uint64_t)(2 * 77 * w));
    float *pooled = read_output(out, "pooled", (uint64_t)(2 * w));
    float *want = malloc((size_t)(77 * w) * sizeof(float)), *want_pooled = malloc((size_t)w * 4);
    for (int b = 0; b < 2; b++) {
        int32_t row[77];
        int64_t at = 0;
        for (int i = 0; i < 77; i++) {
            row[i] = (int32_t)ids[b * 77 + i];
            if (row[i] > row[at])
                at = i;
        }
        assert_int_equal(mgpu_clip_forward(clip, be, &src, row, 77, at, want, want_pooled, &err),
                         MGPU_OK);
        assert_memory_equal(got + b * 77 * w, want, (size_t)(77 * w) * sizeof(float));
        assert_memory_equal(pooled + b * w, want_pooled, (size_t)w * sizeof(float));
    }
    free(got), free(pooled), free(want), free(want_pooled);
    mgpu_clip_free(clip);
    mgpu_model_close(m);

    /* T5: one row of 40 ids */
    synth("t5-xxl", 0, MGPU_DTYPE_BF16, "", 32, model);
    write_one(in, "tokens", MGPU_DTYPE_F32, 2, (const uint64_t[]){1, 40}, ids);
    r = run(args);
    expect_ok(&r);
    m = open_ok(model);
    mgpu_t5 *t5;
    assert_int_equal(mgpu_t5_load(m, 0, &t5, &err), MGPU_OK);
    w = mgpu_t5_get_config(t5)->d_model;
    got = read_output(out, "out", (uint64_t)(40 * w));
    want = malloc((size_t)(40 * w) * sizeof(float));
    int32_t row[40];
    for (int i = 0; i < 40; i++)
        row[i] = (int32_t)ids[i];
    assert_int_equal(mgpu_t5_forward(t5, be, &src, row, 40, want, &err), MGPU_OK);
    assert_memory_equal(got, want, (size_t)(40 * w) * sizeof(float));
    free(got), free(want);
    mgpu_t5_free(t5);
    mgpu_model_close(m);
    /* a token id outside the vocabulary is one clear error, no output */
    remove(out);
    ids[3] = 5000.0f;
    write_one(in, "tokens", MGPU_DTYPE_F32, 2, (const uint64_t[]){1, 40}, ids);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_int_equal(line_count(r.err), 1);
    assert_non_null(strstr(r.err, "5000"));
    assert_false(test_file_exists(out));
    run_free(&r);

    /* the VAE: decode z, then encode an image */
    synth("vae-flux", 0, MGPU_DTYPE_F32, "", 33, model);
    float *z = malloc(16 * 4 * 6 * sizeof(float));
    for (int i = 0; i < 16 * 4 * 6; i++)
        z[i] = (float)((i * 37) % 17) / 8.5f - 1.0f;
    write_one(in, "z", MGPU_DTYPE_F32, 4, (const uint64_t[]){1, 16, 4, 6}, z);
    r = run(args);
    expect_ok(&r);
    m = open_ok(model);
    mgpu_vae *vae;
    assert_int_equal(mgpu_vae_load(m, 0, &vae, &err), MGPU_OK);
    got = read_output(out, "out", 3 * 32 * 48);
    want = malloc(3 * 32 * 48 * sizeof(float));
    mgpu_vae_tiling none = {0, 0};
    assert_int_equal(mgpu_vae_decode(vae, be, &src, z, 4, 6, &none, want, &err), MGPU_OK);
    assert_memory_equal(got, want, 3 * 32 * 48 * sizeof(float));
    write_one(in, "x", MGPU_DTYPE_F32, 4, (const uint64_t[]){1, 3, 32, 48}, want);
    r = run(args);
    expect_ok(&r);
    free(got);
    got = read_output(out, "out", 16 * 4 * 6);
    assert_int_equal(mgpu_vae_encode(vae, be, &src, want, 32, 48, z, &err), MGPU_OK);
    assert_memory_equal(got, z, 16 * 4 * 6 * sizeof(float));
    /* an image that is not a multiple of 8 */
    remove(out);
    write_one(in, "x", MGPU_DTYPE_F32, 4, (const uint64_t[]){1, 3, 12, 16}, want);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "not a multiple of 8"));
    assert_false(test_file_exists(out));
    run_free(&r);
    free(got), free(want), free(z);
    mgpu_vae_free(vae);
    mgpu_model_close(m);
    mgpu_backend_free(be);
    remove(model);
    remove(in);
    remove(out);
}

/* mgpu generate end to end on tiny synthetic files: a PNG with the
 * parameters as text, the plan and a summary printed; bad requests leave
 * no image behind. */
static void test_generate(void **state)
{
    (void)state;
    char flux[1024], clip[1024], t5[1024], vae[1024], ctok[1024], ttok[1024], png[1024];
    snprintf(flux, sizeof flux, "%s", test_path("gen-flux.gguf"));
    snprintf(clip, sizeof clip, "%s", test_path("gen-clip.safetensors"));
    snprintf(t5, sizeof t5, "%s", test_path("gen-t5.safetensors"));
    snprintf(vae, sizeof vae, "%s", test_path("gen-vae.safetensors"));
    snprintf(ctok, sizeof ctok, "%s", test_path("gen-clip-tokenizer.json"));
    snprintf(ttok, sizeof ttok, "%s", test_path("gen-spiece.model"));
    snprintf(png, sizeof png, "%s", test_path("gen.png"));
    synth("flux-schnell", 1, MGPU_DTYPE_Q4_K, "", 41, flux);
    synth("clip-l", 0, MGPU_DTYPE_F16, "", 42, clip);
    synth("t5-xxl", 0, MGPU_DTYPE_F16, "", 43, t5);
    synth("vae-flux", 0, MGPU_DTYPE_F16, "", 44, vae);
    mgpu_error err = {0};
    assert_int_equal(synth_tok_write_default("clip", SYNTH_TOK_JSON, ctok, &err), MGPU_OK);
    assert_int_equal(synth_tok_write_default("t5", SYNTH_TOK_SPIECE, ttok, &err), MGPU_OK);
    char common[8192], args[16384];
    snprintf(common, sizeof common,
             "generate --model '%s' --clip '%s' --t5 '%s' --vae '%s' --clip-tokenizer '%s' "
             "--t5-tokenizer '%s' --set num_heads=2 --devices 'cuda:0=1gib@25gbps,cpu=8gib' "
             "--alloc 'cuda:0,50%%;cpu,*'",
             flux, clip, t5, vae, ctok, ttok);
    snprintf(args, sizeof args, "%s --prompt 'a lighthouse at dusk' --width 48 --height 32 -o '%s'",
             common, png);
    run_result r = run(args);
    if (r.code != 0)
        fail_msg("exit %d: %s", r.code, r.err);
    assert_non_null(strstr(r.out, "== diffusion:"));       /* the plans */
    assert_non_null(strstr(r.err, "sampling [")); /* progress, 4 steps for schnell */
    assert_non_null(strstr(r.err, "4/4"));
    assert_non_null(strstr(r.err, "diffusion")); /* the summary */
    run_free(&r);
    char *bytes = NULL;
    uint64_t size = 0;
    assert_int_equal(mgpu_file_read_all(png, 1 << 24, &bytes, &size, &err), MGPU_OK);
    assert_true(size > 8 && memcmp(bytes, "\x89PNG\r\n\x1a\n", 8) == 0);
    /* the parameters travel as text: the prompt and the seed are in the file */
    bool prompt_found = false, steps_found = false;
    for (uint64_t i = 0; i + 20 < size; i++) {
        prompt_found |= memcmp(bytes + i, "a lighthouse at dusk", 20) == 0;
        steps_found |= memcmp(bytes + i, "Steps: 4", 8) == 0;
    }
    assert_true(prompt_found && steps_found);
    remove(png);

    /* with a LoRA on the transformer (diffusers names, q/k/v split): it is
     * applied, the image changes; inspect lists what the file targets */
    char lora[1024], png2[1024];
    snprintf(lora, sizeof lora, "%s", test_path("gen-lora.safetensors"));
    snprintf(png2, sizeof png2, "%s", test_path("gen-lora.png"));
    synth_lora_list ll = {0};
    assert_true(synth_lora_modules("flux-schnell", SYNTH_LORA_DIFFUSERS, 4, 4.0f, 1, &ll));
    assert_int_equal(synth_lora_write(lora, &ll, SYNTH_LORA_DIFFUSERS, MGPU_DTYPE_BF16, 5, &err),
                     MGPU_OK);
    synth_lora_list_free(&ll);
    snprintf(args, sizeof args, "inspect '%s'", lora);
    r = run(args);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "lora        diffusers format"));
    assert_non_null(strstr(r.out, "transformer.transformer_blocks.0.attn.to_q"));
    run_free(&r);
    snprintf(args, sizeof args,
             "%s --prompt 'a lighthouse at dusk' --width 48 --height 32 --lora '%s:0.7' -o '%s'",
             common, lora, png2);
    r = run(args);
    if (r.code != 0)
        fail_msg("exit %d: %s", r.code, r.err);
    assert_non_null(strstr(r.err, "LoRA adapters applied"));
    assert_null(strstr(r.err, "merged"));
    run_free(&r);
    /* merge-once: the Q4_K weights keep the at-use path, the F16 ones
     * (rows without whole blocks) are merged */
    snprintf(args, sizeof args,
             "%s --prompt 'a lighthouse at dusk' --width 48 --height 32 --lora '%s:0.7' "
             "--lora-merge -o '%s'",
             common, lora, png2);
    r = run(args);
    if (r.code != 0)
        fail_msg("exit %d: %s", r.code, r.err);
    assert_non_null(strstr(r.err, "merged into their weights)"));
    run_free(&r);
    char *with_lora = NULL;
    uint64_t size2 = 0;
    assert_int_equal(mgpu_file_read_all(png2, 1 << 24, &with_lora, &size2, &err), MGPU_OK);
    assert_true(size2 != size || memcmp(with_lora, bytes, size) != 0);
    free(with_lora);
    remove(png2);
    /* forward --lora: strength 0 is the model without it, bit for bit;
     * strength 1 changes the output */
    char fin[1024], fo[4][1024];
    snprintf(fin, sizeof fin, "%s", test_path("gen-fin.safetensors"));
    for (int k = 0; k < 4; k++) {
        char name[32];
        snprintf(name, sizeof name, "fo%d.safetensors", k);
        snprintf(fo[k], sizeof fo[k], "%s", test_path(name));
    }
    assert_int_equal(synth_write_flux_inputs("flux-schnell", SYNTH_SCALE_TINY, 1, 4, 6, 5, 8, fin,
                                             &err),
                     MGPU_OK);
    const char *strengths[4] = {"", ":0", ":1", ":1"};
    for (int k = 0; k < 4; k++) {
        char lora_arg[1100] = "";
        if (k)
            snprintf(lora_arg, sizeof lora_arg, "--lora '%s%s'%s", lora, strengths[k],
                     k == 3 ? " --lora-merge" : "");
        snprintf(args, sizeof args,
                 "forward --model '%s' --inputs '%s' -o '%s' --set num_heads=2 --gemm f32 %s",
                 flux, fin, fo[k], lora_arg);
        r = run(args);
        if (r.code != 0)
            fail_msg("exit %d: %s", r.code, r.err);
        if (k == 3) { /* some merged, the quantized ones at use */
            size_t n = 0, merged = 0;
            const char *line = strstr(r.err, "LoRA adapters, ");
            assert_non_null(line);
            line--; /* the space, then the count */
            while (line > r.err && line[-1] >= '0' && line[-1] <= '9')
                line--;
            assert_int_equal(sscanf(line, "%zu LoRA adapters, %zu merged", &n, &merged), 2);
            assert_true(merged > 0 && merged < n);
        }
        run_free(&r);
    }
    const int64_t n_out = 16 * 4 * 6;
    float *o0 = read_output(fo[0], "out", n_out), *o1 = read_output(fo[1], "out", n_out),
          *o2 = read_output(fo[2], "out", n_out), *o3 = read_output(fo[3], "out", n_out);
    assert_memory_equal(o0, o1, (size_t)n_out * sizeof(float));
    assert_true(memcmp(o0, o2, (size_t)n_out * sizeof(float)) != 0);
    /* merged: near the at-use result, far nearer than to no LoRA */
    double d_use = 0, d_none = 0;
    for (int64_t i = 0; i < n_out; i++) {
        d_use = fmax(d_use, fabs((double)o3[i] - o2[i]));
        d_none = fmax(d_none, fabs((double)o0[i] - o2[i]));
    }
    assert_true(d_use < 0.1 * d_none);
    free(o0), free(o1), free(o2), free(o3);
    for (int k = 0; k < 4; k++)
        remove(fo[k]);
    remove(fin);
    /* a file that is no LoRA */
    snprintf(args, sizeof args, "%s --prompt x --width 32 --height 32 --lora '%s' -o '%s'", common,
             vae, png2);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_int_equal(line_count(r.err), 1);
    assert_false(test_file_exists(png2));
    run_free(&r);
    remove(lora);

    /* bad requests: one line, exit 1 or 2, no image */
    const struct {
        const char *extra, *needle;
        int code;
    } bad[] = {
        {"--prompt 'x' --width 40 --height 32", "multiples of 16", 1},
        {"--prompt ' ' --width 32 --height 32", "prompt is empty", 1},
        {"--prompt 'x' --width 32 --height 32 --vae-alloc 'cuda:0,0b;cuda:7,*'", "cuda:7", 1},
        {"--prompt 'x' --steps 0", "--steps takes a whole number", 2},
        {"--prompt 'x' --bogus 1", "unknown option '--bogus'", 2},
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        snprintf(args, sizeof args, "%s %s -o '%s'", common, bad[c].extra, png);
        r = run(args);
        assert_int_equal(r.code, bad[c].code);
        if (!strstr(r.err, bad[c].needle))
            fail_msg("case %zu: '%s' lacks '%s'", c, r.err, bad[c].needle);
        assert_false(test_file_exists(png));
        run_free(&r);
    }
    /* the wrong file in a slot */
    snprintf(args, sizeof args,
             "generate --model '%s' --clip '%s' --t5 '%s' --vae '%s' --prompt x -o '%s'", flux, t5,
             t5, vae, png);
    r = run(args);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "not a CLIP-L text encoder"));
    assert_false(test_file_exists(png));
    run_free(&r);
    free(bytes);
    remove(flux), remove(clip), remove(t5), remove(vae), remove(ctok), remove(ttok);
}

static void test_usage_errors(void **state)
{
    (void)state;
    const char *cases[] = {"", "inspect", "inspect --bogus x", "frobnicate",
                           "inspect x --dump name", "inspect x -o out"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_result r = run(cases[i]);
        if (r.code != 2)
            fail_msg("'mgpu %s' exited %d, want 2", cases[i], r.code);
        assert_string_equal(r.out, "");
        assert_true(strncmp(r.err, "mgpu: ", 6) == 0 || strncmp(r.err, "usage:", 6) == 0);
        run_free(&r);
    }
    run_result r = run("version");
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "mgpu "));
    run_free(&r);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_cli PATH-TO-MGPU\n");
        return 2;
    }
    mgpu_binary = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary), cmocka_unit_test(test_json),
        cmocka_unit_test(test_dump),    cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_devices_and_plan),
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_forward_components),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_usage_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
