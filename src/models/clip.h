/* The CLIP text encoder (OpenAI ViT-L/14's text tower, as clip_l.safetensors
 * and the CLIP-L inside ComfyUI and SD checkpoints): token and learned
 * position embeddings, pre-LayerNorm transformer layers with causal
 * self-attention and quick-GELU MLPs, a final LayerNorm. Sizes come from the
 * tensor shapes; heads = hidden / 64 (not in the weights). FLUX uses the
 * final hidden states' row at the first end-of-text token as its pooled
 * vector (no text_projection); SDXL uses the penultimate layer's output.
 * Written once against the compute backend. Internal to libmgpu. */
#ifndef MGPU_MODELS_CLIP_H
#define MGPU_MODELS_CLIP_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "exec/source.h"
#include "mgpu/model.h"

typedef struct mgpu_clip_config {
    int64_t vocab;     /* 49408 */
    int64_t positions; /* 77: the most tokens one forward takes */
    int64_t hidden;    /* 768 */
    int64_t heads;     /* hidden / 64 = 12 */
    int64_t head_dim;  /* 64 */
    int64_t ffn;       /* 3072 */
    int layers;        /* 12 */
    float eps;         /* LayerNorm eps, 1e-5 */
} mgpu_clip_config;

typedef struct mgpu_clip mgpu_clip;

/* Checks every tensor the encoder needs is present with the shape the
 * config implies; errors name the missing or misshapen tensor. */
mgpu_status mgpu_clip_load(const mgpu_model *model, int component, mgpu_clip **out,
                           mgpu_error *err);
void mgpu_clip_free(mgpu_clip *clip);
const mgpu_clip_config *mgpu_clip_get_config(const mgpu_clip *clip);

/* What one forward writes, host buffers; any may be NULL (not all). */
typedef struct mgpu_clip_outputs {
    float *hidden;      /* [n][hidden], after final_layer_norm */
    float *pooled;      /* [hidden]: hidden's row pooled_index */
    float *penultimate; /* [n][hidden]: output of the second-to-last layer,
                           without final_layer_norm (SDXL's CLIP-L input) */
} mgpu_clip_outputs;

/* tokens: host ids, each below vocab; 1 <= n_tokens <= positions.
 * pooled_index (where pooled is wanted) in [0, n_tokens): FLUX and ComfyUI
 * take the first end-of-text token (mgpu_clip_first_token). */
mgpu_status mgpu_clip_forward(const mgpu_clip *clip, mgpu_backend *be,
                              const mgpu_tensor_source *src, const int32_t *tokens,
                              int64_t n_tokens, int64_t pooled_index, float *hidden,
                              float *pooled, mgpu_error *err);
mgpu_status mgpu_clip_forward_outputs(const mgpu_clip *clip, mgpu_backend *be,
                                      const mgpu_tensor_source *src, const int32_t *tokens,
                                      int64_t n_tokens, int64_t pooled_index,
                                      const mgpu_clip_outputs *out, mgpu_error *err);

/* The index of the first `id` in tokens (CLIP's end-of-text is 49407), -1
 * when absent. */
int64_t mgpu_clip_first_token(const int32_t *tokens, int64_t n_tokens, int32_t id);

#endif
