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

#include <stddef.h>

#include "backend/backend.h"
#include "lora/lora.h"

typedef struct mgpu_lora_set mgpu_lora_set;

/* The adapters of every target of `resolved[i]` (n LoRAs, each with its
 * strength) that modify part `part`'s model, uploaded to `be`. A set with
 * no adapter is valid (and does nothing). */
mgpu_status mgpu_lora_set_create(mgpu_backend *be, const mgpu_model *model,
                                 const mgpu_lora_resolved *const *resolved, const float *strengths,
                                 size_t n, size_t part, mgpu_lora_set **out, mgpu_error *err);
void mgpu_lora_set_free(mgpu_lora_set *set);
/* Changes LoRA i's strength for the next uses: nothing is reloaded. */
void mgpu_lora_set_strength(mgpu_lora_set *set, size_t lora, float strength);
/* Adapters in the set. */
size_t mgpu_lora_set_adapter_count(const mgpu_lora_set *set);

/* y [rows][out] += the adapters of weight `w` applied to x [rows][in];
 * nothing when w has none or every strength is 0. Ops are enqueued on the
 * set's backend; a failure is recorded there like any op's. */
void mgpu_lora_apply(mgpu_lora_set *set, const mgpu_model_tensor *w, const float *x, int64_t rows,
                     int64_t in, float *y, int64_t out);

#endif
