/* Independent references of the CLIP and T5 text encoders for the tests,
 * written from Hugging Face's modeling_clip.py / modeling_t5.py and
 * ComfyUI's comfy/clip_model.py / comfy/text_encoders/t5.py, not from
 * src/models: weights are read by name from the model view and decoded with
 * mgpu_dequantize, then everything runs in double precision with plain
 * loops (full attention score matrices), so only for tiny models. */
#ifndef MGPU_TESTS_ENCODER_REFERENCE_H
#define MGPU_TESTS_ENCODER_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "exec/source.h"
#include "mgpu/model.h"

/* CLIP text model with heads = hidden / 64. hidden [n][hidden] after the
 * final LayerNorm; pooled = hidden's row pooled_index; penultimate (may be
 * NULL) = the second-to-last layer's output before the final LayerNorm.
 * Returns 0, or -1 with a message in err. */
int clip_reference_forward(const mgpu_model *model, int component, const int32_t *tokens,
                           int64_t n, int64_t pooled_index, double *hidden, double *pooled,
                           double *penultimate, char *err, size_t err_size);

/* T5 v1.1 / UMT5 encoder under Hugging Face or llama.cpp names, no
 * attention mask. hidden [n][d_model]. Returns 0, or -1 with a message. */
int t5_reference_forward(const mgpu_model *model, int component, const int32_t *tokens, int64_t n,
                         double *hidden, char *err, size_t err_size);

/* Hugging Face's _relative_position_bucket, bidirectional. */
int t5_reference_bucket(int64_t relative_position, int num_buckets, int max_distance);


/* ---- test support ----------------------------------------------------------
 * A tensor source that serves the model's mapped bytes (like the resident
 * source) and checks the block discipline model code owes the streaming
 * executor: a block's tensor is only asked for between enter and leave of
 * that block, blocks are not nested, leave matches enter. */
typedef struct checking_source {
    const mgpu_model *model;
    int entered; /* -1 outside any block */
    int enters, leaves, violations;
    char first_violation[256];
} checking_source;

/* Initialises *cs and returns a source reading through it. */
mgpu_tensor_source checking_source_make(checking_source *cs, const mgpu_model *model);

#endif
