/* Test helpers for tiny synthetic models: write one, open one, failing the
 * running cmocka test with the library's message otherwise. Include after
 * <cmocka.h>. */
#ifndef MGPU_TEST_MODELS_H
#define MGPU_TEST_MODELS_H

#include "mgpu/model.h"
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

#endif
