/* The model view: one read-only picture of a checkpoint whatever its format
 * (safetensors file, sharded safetensors with an index, GGUF, or a folder of
 * them). Tensors keep their stored dtype and bytes; names lose the
 * checkpoint's known prefixes, which are remembered per component; tensors
 * are grouped into modules (a weight with its bias and scales) and blocks
 * (`double_blocks.7`), and each component's architecture is detected from
 * its tensor names and shapes. */
#ifndef MGPU_MODEL_H
#define MGPU_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "mgpu/status.h"
#include "mgpu/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mgpu_file_format {
    MGPU_FORMAT_SAFETENSORS = 1,
    MGPU_FORMAT_GGUF,
} mgpu_file_format;

typedef enum mgpu_arch {
    MGPU_ARCH_UNKNOWN = 0,
    MGPU_ARCH_FLUX_DEV,
    MGPU_ARCH_FLUX_SCHNELL,
    MGPU_ARCH_SD1,
    MGPU_ARCH_SD2,
    MGPU_ARCH_SDXL,
    MGPU_ARCH_SD3,
    MGPU_ARCH_WAN,
    MGPU_ARCH_QWEN_IMAGE,
    MGPU_ARCH_CLIP_L,
    MGPU_ARCH_CLIP_G,
    MGPU_ARCH_T5,
    MGPU_ARCH_UMT5,
    MGPU_ARCH_VAE_SD,
    MGPU_ARCH_VAE_FLUX,
    MGPU_ARCH_COUNT
} mgpu_arch;

/* "flux-dev", "clip-l", "unknown" ... */
const char *mgpu_arch_name(mgpu_arch arch);

typedef enum mgpu_module_kind {
    MGPU_MODULE_PARAMETER = 0, /* anything not recognised below */
    MGPU_MODULE_LINEAR,
    MGPU_MODULE_CONV1D,
    MGPU_MODULE_CONV2D,
    MGPU_MODULE_CONV3D,
    MGPU_MODULE_EMBEDDING,
    MGPU_MODULE_LAYER_NORM,
    MGPU_MODULE_GROUP_NORM,
    MGPU_MODULE_RMS_NORM,
    MGPU_MODULE_KIND_COUNT
} mgpu_module_kind;

/* PyTorch class names ("Linear", "RMSNorm"), as DisTorch's tables print them. */
const char *mgpu_module_kind_name(mgpu_module_kind kind);

/* What a module does in its architecture's forward pass. Inputs (patch,
 * time, text and position embeddings) run before the blocks and outputs
 * (final norms and projections) after them; the planner keeps both on the
 * compute device. */
typedef enum mgpu_module_role {
    MGPU_ROLE_BODY = 0,
    MGPU_ROLE_INPUT,
    MGPU_ROLE_OUTPUT,
} mgpu_module_role;

typedef struct mgpu_model_file {
    const char *path;
    mgpu_file_format format;
    uint64_t bytes;
    uint32_t gguf_version; /* 0 for safetensors */
} mgpu_model_file;

typedef struct mgpu_model_tensor {
    mgpu_tensor_info info; /* info.name is the name as stored in the file */
    const char *name;      /* without the component's prefix */
    uint32_t file;         /* index into the files */
    uint32_t component;
    uint32_t module;
} mgpu_model_tensor;

typedef struct mgpu_model_module {
    const char *name; /* "double_blocks.0.img_attn.qkv" */
    mgpu_module_kind kind;
    mgpu_module_role role;
    uint32_t component;
    int32_t block; /* index into the blocks, -1 outside any block */
    uint32_t tensor_count;
    const uint32_t *tensors; /* indices into the tensors */
    uint64_t nbytes;
    uint64_t n_params;
} mgpu_model_module;

typedef struct mgpu_model_block {
    const char *name; /* "double_blocks.7" */
    uint32_t component;
    uint32_t module_count;
    uint64_t nbytes;
    uint64_t n_params;
} mgpu_model_block;

typedef struct mgpu_model_component {
    const char *prefix; /* stripped from every name, e.g. "model.diffusion_model." */
    mgpu_arch arch;
    const char *arch_reason; /* the evidence, e.g. "double_blocks + guidance_in" */
    uint32_t tensor_count;
    uint32_t module_count;
    uint32_t block_count;
    uint64_t nbytes;
    uint64_t n_params;
} mgpu_model_component;

typedef struct mgpu_model mgpu_model;

/* `path` is a .safetensors or .gguf file (recognised by content), a
 * *.safetensors.index.json, or a folder holding any of those (a diffusers
 * folder's subfolders become components named after them). */
mgpu_status mgpu_model_open(const char *path, mgpu_model **out, mgpu_error *err);
void mgpu_model_close(mgpu_model *model);

size_t mgpu_model_file_count(const mgpu_model *model);
const mgpu_model_file *mgpu_model_file_at(const mgpu_model *model, size_t index);
size_t mgpu_model_tensor_count(const mgpu_model *model);
const mgpu_model_tensor *mgpu_model_tensor_at(const mgpu_model *model, size_t index);
/* By stripped name, or failing that by the name as stored. */
const mgpu_model_tensor *mgpu_model_find(const mgpu_model *model, const char *name);
/* By stripped name within one component; NULL if absent. */
const mgpu_model_tensor *mgpu_model_find_in(const mgpu_model *model, size_t component,
                                            const char *name);
size_t mgpu_model_module_count(const mgpu_model *model);
const mgpu_model_module *mgpu_model_module_at(const mgpu_model *model, size_t index);
size_t mgpu_model_block_count(const mgpu_model *model);
const mgpu_model_block *mgpu_model_block_at(const mgpu_model *model, size_t index);
size_t mgpu_model_component_count(const mgpu_model *model);
const mgpu_model_component *mgpu_model_component_at(const mgpu_model *model, size_t index);

/* File metadata as text: safetensors __metadata__ and index metadata as
 * stored, GGUF values rendered (arrays summarised by type and length). */
size_t mgpu_model_metadata_count(const mgpu_model *model);
void mgpu_model_metadata_at(const mgpu_model *model, size_t index, const char **key,
                            const char **value);

#ifdef __cplusplus
}
#endif
#endif
