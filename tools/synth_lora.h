/* Synthetic LoRA files for tests and fuzz seeds: the real key names of the
 * kohya, diffusers and ComfyUI families for the tiny synthetic FLUX.1,
 * CLIP-L and T5 of synth_arch.c, seeded random factors in any float dtype.
 * Also writes the malformed variants tests need (a missing up tensor, a
 * rank mismatch, an integer dtype). */
#ifndef MGPU_TOOLS_SYNTH_LORA_H
#define MGPU_TOOLS_SYNTH_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "mgpu/dtype.h"
#include "mgpu/status.h"
#include "synth_arch.h"

typedef enum synth_lora_format {
    SYNTH_LORA_KOHYA,     /* lora_unet_double_blocks_0_img_attn_qkv.lora_down/.lora_up/.alpha */
    SYNTH_LORA_DIFFUSERS, /* transformer.transformer_blocks.0.attn.to_q.lora_A/.lora_B */
    SYNTH_LORA_COMFY,     /* diffusion_model.double_blocks.0.img_attn.qkv.lora_A/.lora_B */
} synth_lora_format;

typedef struct synth_lora_module {
    char name[SYNTH_NAME_MAX]; /* module name as written, without suffixes */
    int64_t in, out, rank;
    float alpha;
    int has_alpha;
    /* Malformations, all off when zero: */
    int omit_up;        /* write the down (A) tensor only */
    int64_t up_rank;    /* B's columns when not rank */
    mgpu_dtype dtype;   /* this module's factors' dtype instead of the file's */
} synth_lora_module;

typedef struct synth_lora_list {
    synth_lora_module *items;
    size_t count, capacity;
} synth_lora_list;

/* Appends the modules a trainer of `format` writes for the tiny `arch`
 * ("flux-dev", "flux-schnell", "clip-l" or "t5-xxl"), each with the given
 * rank and alpha (has_alpha 0: none written). FLUX: every linear of the
 * double and single blocks; in the diffusers family q, k and v (and a single
 * block's proj_mlp) are separate modules, as diffusers names them, and the
 * embedders, proj_out and norm_out.linear are included. CLIP-L: q/k/v/out
 * projections and fc1/fc2 of every layer. T5: q/k/v/o and wi_0/wi_1/wo of
 * every block. Returns false for an unknown arch or no memory. */
bool synth_lora_modules(const char *arch, synth_lora_format format, int64_t rank, float alpha,
                        int has_alpha, synth_lora_list *out);

/* Appends one module. */
bool synth_lora_add(synth_lora_list *list, const synth_lora_module *m);

void synth_lora_list_free(synth_lora_list *list);
/* synth_lora_modules for the tiny or the full-size model (benchmarks). */
bool synth_lora_modules_at(const char *arch, synth_scale scale, synth_lora_format format,
                           int64_t rank, float alpha, int has_alpha, synth_lora_list *out);

/* Writes the modules to a safetensors file: A [rank][in] and B [out][rank]
 * uniform in +-1/sqrt(in) and +-1/sqrt(rank) (seeded per name), stored as
 * `dtype`; alpha as a 0-dim F32 tensor. Suffixes: lora_down/lora_up for
 * kohya, lora_A/lora_B otherwise. */
mgpu_status synth_lora_write(const char *path, const synth_lora_list *list,
                             synth_lora_format format, mgpu_dtype dtype, uint64_t seed,
                             mgpu_error *err);

#endif
