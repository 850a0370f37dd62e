/* Test helpers for tiny synthetic models: write one, open one, failing the
 * running cmocka test with the library's message otherwise. Include after
 * <cmocka.h>. */
#ifndef MGPU_TEST_MODELS_H
#define MGPU_TEST_MODELS_H

#include <string.h>

#include "mgpu/model.h"
#include "mgpu/safetensors.h"
#include "synth_write.h"

static inline void synth(const char *arch, int gguf, mgpu_dtype dtype, const char *prefix,
                         uint64_t seed, const char *path)
{
    synth_options o = {.arch = arch, .scale = SYNTH_SCALE_TINY, .gguf = gguf, .dtype = dtype,
                       .seed = seed, .prefix = prefix, .out = path};
    mgpu_error err = {0};
    if (synth_write(&o, &err) != MGPU_OK)
        fail_msg("synth %s: %s", arch, err.message);
}

static inline mgpu_model *open_ok(const char *path)
{
    mgpu_model *m = NULL;
    mgpu_error err = {0};
    if (mgpu_model_open(path, &m, &err) != MGPU_OK)
        fail_msg("open %s: %s", path, err.message);
    return m;
}

/* Copies every tensor of the model at `src` except `skip` (a stripped
 * name, or NULL) into the safetensors file `dst`, adding a scalar F32
 * tensor `add` (stored name, or NULL) worth 1: a model with one tensor
 * missing, or one too many. */
static inline void copy_edited(const char *src, const char *dst, const char *skip,
                               const char *add)
{
    mgpu_model *m = open_ok(src);
    mgpu_error err = {0};
    mgpu_safetensors_writer *w = NULL;
    assert_int_equal(mgpu_safetensors_writer_create(dst, &w, &err), MGPU_OK);
    size_t n = mgpu_model_tensor_count(m);
    for (size_t i = 0; i < n; i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        if (!skip || strcmp(t->name, skip) != 0)
            assert_int_equal(mgpu_safetensors_writer_add_tensor(w, t->info.name, t->info.dtype,
                                                                t->info.ndim, t->info.shape, &err),
                             MGPU_OK);
    }
    const uint64_t one_shape[1] = {1};
    const float one = 1.0f;
    if (add)
        assert_int_equal(
            mgpu_safetensors_writer_add_tensor(w, add, MGPU_DTYPE_F32, 1, one_shape, &err),
            MGPU_OK);
    for (size_t i = 0; i < n; i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        if (!skip || strcmp(t->name, skip) != 0)
            assert_int_equal(mgpu_safetensors_writer_write(w, t->info.data, t->info.nbytes, &err),
                             MGPU_OK);
    }
    if (add)
        assert_int_equal(mgpu_safetensors_writer_write(w, &one, sizeof one, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
    mgpu_model_close(m);
}

static inline void copy_without(const char *src, const char *dst, const char *skip)
{
    copy_edited(src, dst, skip, NULL);
}

#endif
