/* LoRA files for FLUX.1, CLIP-L and T5: opening them, and mapping every
 * adapter onto the weight (and the rows of it) that it modifies in mgpu's
 * model view. Applying the adapters inside the models is not done here;
 * mgpu_lora_delta computes what one adapter adds to its weight, in f32, so
 * callers and tests share one definition of the math:
 *
 *   W[row0 + r][c] += strength * (alpha / rank) * sum_k B[b_row0 + r][k] * A[k][c]
 *
 * Three naming families are recognised (docs/lora.md has the full tables):
 *   kohya      lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight / .lora_up.weight
 *              / .alpha; lora_te1_ (CLIP-L), lora_te2_ and lora_te3_ (T5),
 *              lora_transformer_ and lycoris_ (diffusers names with underscores)
 *   diffusers  transformer.transformer_blocks.0.attn.to_q.lora_A.weight / .lora_B.weight,
 *              transformer.single_transformer_blocks.N..., text_encoder. (CLIP-L),
 *              text_encoder_2. (T5)
 *   comfy      diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight (and bare BFL
 *              names), text_encoders.clip_l.transformer., text_encoders.t5xxl.transformer.
 * Either suffix pair (lora_down/lora_up or lora_A/lora_B) goes with any naming.
 * Internal (src/lora). */
#ifndef MGPU_LORA_LORA_H
#define MGPU_LORA_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mgpu/model.h"
#include "mgpu/status.h"
#include "mgpu/tensor.h"

typedef enum mgpu_lora_format {
    MGPU_LORA_FORMAT_UNKNOWN = 0, /* no module has a prefix mgpu knows */
    MGPU_LORA_FORMAT_KOHYA,
    MGPU_LORA_FORMAT_DIFFUSERS,
    MGPU_LORA_FORMAT_COMFY,
    MGPU_LORA_FORMAT_MIXED, /* modules of more than one family */
} mgpu_lora_format;

/* Which model a module addresses, by its name's prefix. */
typedef enum mgpu_lora_kind {
    MGPU_LORA_KIND_UNKNOWN = 0,
    MGPU_LORA_KIND_DIFFUSION, /* the FLUX.1 transformer */
    MGPU_LORA_KIND_CLIP,      /* CLIP-L text encoder */
    MGPU_LORA_KIND_T5,        /* T5-XXL text encoder */
    MGPU_LORA_KIND_COUNT
} mgpu_lora_kind;

const char *mgpu_lora_format_name(mgpu_lora_format format); /* "kohya", "diffusers" ... */
const char *mgpu_lora_kind_name(mgpu_lora_kind kind);       /* "diffusion", "clip", "t5" */

/* One adapter: a down (A) and an up (B) matrix and an optional alpha. */
typedef struct mgpu_lora_module {
    const char *name; /* as written, without the suffix: "lora_unet_double_blocks_0_img_attn_qkv" */
    mgpu_lora_format format;
    mgpu_lora_kind kind;
    int64_t rank;    /* A's rows = B's columns */
    int64_t in;      /* A's columns */
    int64_t out;     /* B's rows */
    float alpha;     /* the file's alpha, or rank when it has none (scale 1) */
    bool has_alpha;
    const mgpu_tensor_info *a; /* lora_down / lora_A: [rank][in], any float dtype */
    const mgpu_tensor_info *b; /* lora_up / lora_B: [out][rank] */
} mgpu_lora_module;

typedef struct mgpu_lora mgpu_lora;

/* Opens a .safetensors LoRA and checks every module: A and B both present,
 * 2-D, of a float dtype, with matching ranks; alpha a finite float scalar.
 * LoHa, LoKr, DoRA and full-weight diffs are refused (MGPU_ERR_UNSUPPORTED)
 * rather than skipped: leaving them out would change the result. Tensors with
 * no LoRA suffix are kept aside (mgpu_lora_ignored_at). */
mgpu_status mgpu_lora_open(const char *path, mgpu_lora **out, mgpu_error *err);
/* The same over a file image the caller keeps alive (fuzzing, tests). */
mgpu_status mgpu_lora_open_memory(const void *data, uint64_t size, const char *label,
                                  mgpu_lora **out, mgpu_error *err);
void mgpu_lora_free(mgpu_lora *l);

/* The path or label it was opened with. */
const char *mgpu_lora_label(const mgpu_lora *l);
/* Modules sorted by name. */
size_t mgpu_lora_module_count(const mgpu_lora *l);
const mgpu_lora_module *mgpu_lora_module_at(const mgpu_lora *l, size_t index);
/* Tensors that belong to no module (no LoRA suffix), in file order. */
size_t mgpu_lora_ignored_count(const mgpu_lora *l);
const char *mgpu_lora_ignored_at(const mgpu_lora *l, size_t index);

/* True when a tensor name ends in a LoRA suffix (.lora_down.weight,
 * .lora_B.weight, .alpha ...): lets a CLI tell a LoRA file from a model. */
bool mgpu_lora_is_lora_name(const char *tensor_name);

/* What `mgpu inspect` prints for a LoRA file. */
typedef struct mgpu_lora_summary {
    mgpu_lora_format format;
    size_t modules;
    size_t by_kind[MGPU_LORA_KIND_COUNT];
    int64_t rank_min, rank_max;
    float alpha_min, alpha_max; /* over all modules, defaults included */
    size_t with_alpha;          /* modules whose file gives an alpha */
    mgpu_dtype dtype;           /* of A and B, MGPU_DTYPE_INVALID when they differ */
    size_t ignored;
} mgpu_lora_summary;

void mgpu_lora_summarize(const mgpu_lora *l, mgpu_lora_summary *out);

/* ---- resolving against a model --------------------------------------- */

/* One model component a LoRA may modify: a FLUX.1 transformer (BFL names),
 * a CLIP-L or a T5 encoder (Hugging Face or llama.cpp GGUF names). The
 * three usually come from different files, hence several parts. */
typedef struct mgpu_lora_part {
    const mgpu_model *model;
    int component;
} mgpu_lora_part;

/* One adapter landing on one row range of one weight. A module maps to one
 * target, except diffusers' norm_out.linear whose two halves (scale, shift)
 * land swapped on BFL's final_layer.adaLN_modulation.1 (shift, scale): two
 * targets that read different rows of B. */
typedef struct mgpu_lora_target {
    const mgpu_lora_module *module;
    size_t part;                     /* index into the parts passed to resolve */
    mgpu_lora_kind kind;             /* of the part */
    const mgpu_model_tensor *tensor; /* the weight modified */
    const char *target;              /* its stripped name: "double_blocks.0.img_attn.qkv.weight" */
    int64_t row0, rows;              /* rows [row0, row0 + rows) of the weight */
    int64_t cols;                    /* the weight's columns = the module's in */
    int64_t b_row0;                  /* B rows [b_row0, b_row0 + rows) are used */
    int64_t rank;
    float alpha;
    float scale; /* alpha / rank */
} mgpu_lora_target;

typedef struct mgpu_lora_resolved mgpu_lora_resolved;

/* Matches every module against the parts. Shapes are checked: the module's
 * in must equal the weight's columns and its rows must fit the range its
 * name implies (a to_q adapter must have hidden rows). A module that names
 * no weight of any part is counted as unmatched (not an error); a LoRA of
 * which no module matches is MGPU_ERR_NOT_FOUND, with a message naming the
 * first module and the keys expected. The result points into l and the
 * models, which must outlive it. */
mgpu_status mgpu_lora_resolve(const mgpu_lora *l, const mgpu_lora_part *parts, size_t n_parts,
                              mgpu_lora_resolved **out, mgpu_error *err);
void mgpu_lora_resolved_free(mgpu_lora_resolved *r);

/* Targets in module order. */
size_t mgpu_lora_target_count(const mgpu_lora_resolved *r);
const mgpu_lora_target *mgpu_lora_target_at(const mgpu_lora_resolved *r, size_t index);
/* Modules that matched no part, in module order. */
size_t mgpu_lora_unmatched_count(const mgpu_lora_resolved *r);
const mgpu_lora_module *mgpu_lora_unmatched_at(const mgpu_lora_resolved *r, size_t index);

/* ---- math --------------------------------------------------------------- */

/* The target's factors decoded to f32: a [rank][cols] and b [rows][rank]
 * (only the rows of B this target uses). Either may be NULL. */
mgpu_status mgpu_lora_target_factors(const mgpu_lora_target *t, float *a, float *b,
                                     mgpu_error *err);

/* delta [rows][cols] = strength * (alpha / rank) * (B[b_row0 ...] @ A): the
 * factors are decoded to f32, each dot product accumulates in double and is
 * scaled and rounded to f32 once, so the result is the f32 nearest the
 * exact value for the stored factors (up to double rounding). */
mgpu_status mgpu_lora_delta(const mgpu_lora_target *t, float strength, float *delta,
                            mgpu_error *err);

#endif
