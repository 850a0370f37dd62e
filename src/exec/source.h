/* How model code reaches its weights: a tensor source. The streaming
 * executor is one (it stages streamed blocks and hands out pointers into
 * staging); a plain resident source hands out pointers into the mapped
 * file. Model code brackets each block with enter/leave so the source knows
 * what must be on the compute device and what it may release. Internal. */
#ifndef MGPU_EXEC_SOURCE_H
#define MGPU_EXEC_SOURCE_H

#include "mgpu/model.h"
#include "mgpu/status.h"

typedef struct mgpu_tensor_source {
    void *context;
    /* Makes every tensor of model block `block` available until leave. */
    mgpu_status (*enter_block)(void *context, int block, mgpu_error *err);
    void (*leave_block)(void *context, int block);
    /* The bytes of a tensor on the compute device: valid for a tensor outside
     * any block at any time, and for a block's tensor between enter and
     * leave. NULL with an error when it cannot be had. */
    const void *(*data)(void *context, const mgpu_model_tensor *tensor, mgpu_error *err);
    /* LoRA adapters to apply at each use of a weight (lora/lora_apply.h);
     * NULL: none. */
    struct mgpu_lora_set *lora;
} mgpu_tensor_source;

/* Everything read in place from the model's own mapping. */
mgpu_tensor_source mgpu_resident_source(void);

#endif
