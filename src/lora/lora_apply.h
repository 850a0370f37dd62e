/* LoRA applied at use time, on the compute device, in f32: for a weight W
 * with adapters (A [rank][in], B [rows][rank] on rows [row0, row0+rows) of
 * W), a linear layer's output gets y[:, row0:row0+rows] += strength *
 * (alpha/rank) * (x A^T) B^T after y = x W^T + b. That is x (W + s B A)^T
 * exactly in real arithmetic, with W never modified: quantized weights
 * stay quantized, streamed ones stay streamed, and a strength change is a
 * number, not a reload. The factors (small) are uploaded once per set.
 * Internal. */
#ifndef MGPU_LORA_LORA_APPLY_H
#define MGPU_LORA_LORA_APPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/backend.h"
#include "exec/source.h"
#include "lora/lora.h"
#include "mgpu/plan.h"

typedef struct mgpu_lora_set mgpu_lora_set;

/* The adapters of every target of `resolved[i]` (n LoRAs, each with its
 * strength) that modify part `part`'s model, uploaded to `be`. A set with
 * no adapter is valid (and does nothing). */
mgpu_status mgpu_lora_set_create(mgpu_backend *be, const mgpu_model *model,
                                 const mgpu_lora_resolved *const *resolved, const float *strengths,
                                 size_t n, size_t part, mgpu_lora_set **out, mgpu_error *err);
void mgpu_lora_set_free(mgpu_lora_set *set);
/* Changes LoRA i's strength for the next uses: nothing is reloaded. The
 * weights it was merged into (merge-once) are merged again from their
 * original bytes before this returns; if that fails, the set hands out no
 * weight any more (free it). */
mgpu_status mgpu_lora_set_strength(mgpu_lora_set *set, size_t lora, float strength,
                                   mgpu_error *err);
/* Adapters in the set, and those of them merged into their weights. */
size_t mgpu_lora_set_adapter_count(const mgpu_lora_set *set);
size_t mgpu_lora_set_merged_adapter_count(const mgpu_lora_set *set);

/* Merge-once, the opt-in fast mode. Every weight with adapters that is
 * stored as F32, F16 or BF16 and that `plan` places on its compute device
 * is merged once, on the set's backend:
 *
 *   W' = encode(decode(W) + sum of strength * alpha/rank * B A)
 *
 * summed in f32 and rounded to W's own dtype (nearest even) in a buffer of
 * W's size that the set owns. Those adapters are no longer applied at use,
 * so a step costs what it costs without a LoRA; the price is W's rounding
 * of the sum (docs/lora.md measures it). Quantized, fp8 and streamed
 * weights keep the at-use path: nothing is ever written into quantized
 * storage. W's original bytes are read from the model's mapping, now and
 * on a strength change, so no device copy of a merged original is needed:
 * pass mgpu_lora_set_merged_mask to the executor (skip_resident) and read
 * weights through mgpu_lora_set_source. *merged: the weights merged. On
 * failure nothing stays merged: every adapter is applied at use. */
mgpu_status mgpu_lora_set_merge(mgpu_lora_set *set, const mgpu_plan *plan, size_t *merged,
                                mgpu_error *err);
/* Per model tensor: true when the set holds its merged copy. */
const bool *mgpu_lora_set_merged_mask(const mgpu_lora_set *set);
/* `inner` with merged weights handed out from the set's buffers and the
 * set's adapters applied at use (source.lora). The set keeps `inner`. */
mgpu_tensor_source mgpu_lora_set_source(mgpu_lora_set *set, mgpu_tensor_source inner);

/* y [rows][out] += the adapters of weight `w` applied to x [rows][in];
 * nothing when w has none or every strength is 0. Ops are enqueued on the
 * set's backend; a failure is recorded there like any op's. */
void mgpu_lora_apply(mgpu_lora_set *set, const mgpu_model_tensor *w, const float *x, int64_t rows,
                     int64_t in, float *y, int64_t out);

#endif
