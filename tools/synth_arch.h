/* Architecture tables for the synthetic checkpoint writer: for each supported
 * model, the tensor names (as the published checkpoints spell them, without
 * any "model.diffusion_model." style prefix) and their shapes in row-major
 * (PyTorch) order, at full scale or at a tiny scale meant for unit tests.
 * Only names and shapes live here; filling and writing weights is the
 * writer's job. */
#ifndef MGPU_TOOLS_SYNTH_ARCH_H
#define MGPU_TOOLS_SYNTH_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Five, not four: Wan's patch_embedding is a Conv3d weight [out,in,kt,kh,kw]. */
#define SYNTH_MAX_DIMS 5
#define SYNTH_NAME_MAX 192

typedef struct synth_tensor {
    char name[SYNTH_NAME_MAX];
    int ndim;
    int64_t shape[SYNTH_MAX_DIMS]; /* shape[0] is the outermost dimension */
} synth_tensor;

typedef struct synth_list {
    synth_tensor *items;
    size_t count, capacity;
} synth_list;

typedef enum synth_scale { SYNTH_SCALE_TINY, SYNTH_SCALE_FULL } synth_scale;

/* Appends the tensors of `arch` to `out`, sorted by name in byte order: the
 * order in which the safetensors library lays out a single-dtype file, and
 * so the order of the published checkpoints. Names carry no checkpoint
 * prefix (e.g. "double_blocks.0.img_attn.qkv.weight"). `out` may already
 * hold items; they are kept. Returns false for an unknown arch or an
 * allocation failure, leaving `out` as it was. */
bool synth_arch_tensors(const char *arch, synth_scale scale, synth_list *out);

/* Frees the items and zeroes the list; safe on a zeroed list. */
void synth_list_free(synth_list *list);

/* NULL-terminated list of supported arch names. */
const char *const *synth_arch_names(void);

/* One line describing the architecture for --help; NULL for an unknown arch. */
const char *synth_arch_description(const char *arch);

/* Element count of one tensor (product of its dimensions). */
int64_t synth_tensor_numel(const synth_tensor *t);

/* Sum of synth_tensor_numel over the list: the parameter count. */
int64_t synth_list_numel(const synth_list *list);

#endif
