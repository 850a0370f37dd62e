/* Writing synthetic checkpoints: real tensor names and shapes from
 * synth_arch, seeded random values, any dtype mgpu can encode. Shared by the
 * mgpu-synth tool and the tests. */
#ifndef MGPU_TOOLS_SYNTH_WRITE_H
#define MGPU_TOOLS_SYNTH_WRITE_H

#include "mgpu/dtype.h"
#include "synth_arch.h"

typedef struct synth_options {
    const char *arch;
    synth_scale scale;
    int gguf;         /* write GGUF instead of safetensors */
    mgpu_dtype dtype; /* requested dtype; see synth_storage_dtype */
    uint64_t seed;
    const char *prefix; /* prepended to every name, e.g. "model.diffusion_model." */
    const char *out;
    int sparse; /* leave the data as zeros without writing it */
    /* FLUX: keep only double and single blocks numbered below this (full
     * widths at a depth that fits in a benchmark machine's memory); 0: all */
    int max_blocks;
} synth_options;

/* The dtype a tensor is stored in: block types only where rows hold whole
 * blocks (else F16), 1-D tensors in F32 for block and fp8 types. */
mgpu_dtype synth_storage_dtype(const synth_tensor *t, const synth_options *o);

mgpu_status synth_write(const synth_options *o, mgpu_error *err);

/* Random inputs for `mgpu forward` matching a synthetic FLUX of `arch` and
 * `scale`: x [batch][16][height][width], timestep, context [batch][text][D],
 * y, and guidance for dev. */
mgpu_status synth_write_flux_inputs(const char *arch, synth_scale scale, int64_t batch,
                                    int64_t height, int64_t width, int64_t text, uint64_t seed,
                                    const char *out, mgpu_error *err);

#endif
