/* The T5 v1.1 encoder (t5xxl_fp16.safetensors, FLUX's and SD3's long text
 * encoder) and UMT5 (Wan's): token embedding, pre-RMSNorm blocks whose
 * self-attention is unscaled and biased by a learned bucketed relative
 * position table, gated-GELU feed-forward, a final RMSNorm. T5 v1.1 stores
 * the position table in block 0 only and every block reuses it; UMT5 has
 * one per block. Tensors are found under Hugging Face names (shared.weight,
 * encoder.block.N.layer.0.SelfAttention.q.weight ...) or llama.cpp's GGUF
 * names (token_embd.weight, enc.blk.N.attn_q.weight ...), as city96's GGUF
 * files carry. Sizes come from the shapes: heads from the position table,
 * d_kv = q rows / heads. Written against the compute backend. Internal. */
#ifndef MGPU_MODELS_T5_H
#define MGPU_MODELS_T5_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "exec/source.h"
#include "mgpu/model.h"

typedef struct mgpu_t5_config {
    int64_t vocab;        /* 32128 */
    int64_t d_model;      /* 4096 */
    int64_t heads;        /* 64 */
    int64_t d_kv;         /* 64 */
    int64_t d_ff;         /* 10240 */
    int64_t buckets;      /* 32 relative position buckets */
    int64_t max_distance; /* 128: not in the weights */
    int layers;           /* 24 */
    bool bias_per_block;  /* UMT5 */
    bool gguf_names;      /* llama.cpp tensor names */
    float eps;            /* RMSNorm eps, 1e-6 */
} mgpu_t5_config;

typedef struct mgpu_t5 mgpu_t5;

/* Checks every tensor the encoder needs is present with the shape the
 * config implies; errors name the missing or misshapen tensor. */
mgpu_status mgpu_t5_load(const mgpu_model *model, int component, mgpu_t5 **out, mgpu_error *err);
void mgpu_t5_free(mgpu_t5 *t5);
const mgpu_t5_config *mgpu_t5_get_config(const mgpu_t5 *t5);

/* tokens: host ids, each below vocab, n_tokens >= 1. Every token attends to
 * every other, padding included: ComfyUI's FLUX text encoder passes no
 * attention mask to T5 (docs/encoders.md). hidden: host [n][d_model]. */
mgpu_status mgpu_t5_forward(const mgpu_t5 *t5, mgpu_backend *be, const mgpu_tensor_source *src,
                            const int32_t *tokens, int64_t n_tokens, float *hidden,
                            mgpu_error *err);

/* The bidirectional bucket of key position minus query position: half the
 * buckets per sign (positive offsets in the upper half), exact below a
 * quarter of the buckets, log-spaced up to max_distance, the last bucket
 * beyond. */
int mgpu_t5_relative_bucket(int64_t relative_position, int buckets, int max_distance);

#endif
