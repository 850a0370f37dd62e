/* Text to image with FLUX.1: tokenize, CLIP-L (pooled vector), T5-XXL
 * (context), flow-matching sampling with the diffusion transformer, VAE
 * decode, 8-bit RGB. Each of the four components has its own compute device
 * and allocation string, planned against one device inventory before any
 * work starts (a plan that cannot fit fails first), and runs through the
 * streaming executor in its stage; its executor is released before the next
 * stage, as ComfyUI unloads a model it no longer needs. Library code: it
 * reports progress through a callback and never prints. Internal. */
#ifndef MGPU_PIPELINE_T2I_H
#define MGPU_PIPELINE_T2I_H

#include <stdint.h>

#include "backend/backend.h"
#include "exec/executor.h"
#include "models/flux.h"
#include "models/vae.h"
#include "mgpu/device.h"
#include "mgpu/plan.h"

typedef enum mgpu_t2i_stage {
    MGPU_T2I_CLIP,
    MGPU_T2I_T5,
    MGPU_T2I_DIFFUSION,
    MGPU_T2I_VAE,
    MGPU_T2I_STAGES
} mgpu_t2i_stage;

/* "clip", "t5", "diffusion", "vae" */
const char *mgpu_t2i_stage_name(mgpu_t2i_stage stage);

typedef struct mgpu_t2i_slot {
    const char *path;    /* NULL: the diffusion model's file (an all-in-one checkpoint) */
    const char *compute; /* device name; NULL: the request's compute */
    const char *alloc;   /* allocation string; NULL or "": everything on compute */
} mgpu_t2i_slot;

typedef enum mgpu_t2i_event_kind {
    MGPU_T2I_PLANNED,     /* plan: the stage's plan, made before anything runs */
    MGPU_T2I_STAGE_START, /* stage */
    MGPU_T2I_STEP,        /* step of steps done, step_seconds */
    MGPU_T2I_STAGE_DONE,  /* stage, with its stats */
} mgpu_t2i_event_kind;

typedef struct mgpu_t2i_stage_stats {
    double seconds;
    const char *compute; /* device name */
    mgpu_exec_stats exec;
    uint64_t planned_bytes;   /* weights the plan keeps on the compute device */
    uint64_t held_peak_bytes; /* planned + staging peak: what compute held */
    uint64_t predicted_bytes; /* planned + staging budget: the plan's bound */
} mgpu_t2i_stage_stats;

typedef struct mgpu_t2i_event {
    mgpu_t2i_event_kind kind;
    mgpu_t2i_stage stage;
    const mgpu_plan *plan;
    int step, steps;
    double step_seconds;
    const mgpu_t2i_stage_stats *stats;
} mgpu_t2i_event;

typedef struct mgpu_t2i_request {
    mgpu_t2i_slot slot[MGPU_T2I_STAGES];
    /* Tokenizer files or folders; NULL: the T5 GGUF's own metadata, else a
     * tokenizer folder beside the component's file (see docs). */
    const char *clip_tokenizer, *t5_tokenizer;
    const mgpu_device_list *devices;
    const char *compute; /* default compute device; NULL: the first GPU, else cpu */
    const char *prompt;
    int64_t width, height; /* pixels, multiples of 16 */
    int steps;             /* 0: 20 for dev, 4 for schnell */
    int batch;
    float guidance; /* FLUX.1-dev's distilled guidance; ignored by schnell */
    uint64_t seed;
    mgpu_flux_settings flux;
    mgpu_gemm_precision gemm;
    int threads;            /* CPU backend threads; 0: one per processor */
    uint64_t staging_bytes; /* per stage; 0: the executor's default */
    mgpu_vae_tiling tiling; /* tile 0: decode whole */
    /* LoRAs (FLUX.1, CLIP-L and T5 modules; docs/lora.md), each with its
     * strength, applied at use time on the compute devices. */
    const char *const *lora_paths;
    const float *lora_strengths;
    size_t n_lora;
    /* Merge-once (opt-in): LoRAs on F32/F16/BF16 weights resident on the
     * compute device are merged into copies of them once per stage; the
     * others are still applied at use (mgpu_lora_set_merge). */
    bool lora_merge;
    void (*progress)(void *context, const mgpu_t2i_event *event);
    void *progress_context;
} mgpu_t2i_request;

typedef struct mgpu_t2i_result {
    uint8_t *rgb; /* batch images, each height x width x 3, row-major */
    int64_t width, height;
    int batch, steps;
    const char *arch; /* "flux-dev" or "flux-schnell" */
    int64_t clip_dropped, t5_tokens, t5_dropped;
    size_t lora_adapters; /* adapters applied, over all stages */
    size_t lora_merged;   /* of those, merged into their weights */
    mgpu_t2i_stage_stats stage[MGPU_T2I_STAGES];
    double total_seconds;
} mgpu_t2i_result;

/* Bad requests (size, steps, empty prompt, a file of the wrong
 * architecture in a slot, a missing component, a plan that cannot fit) fail
 * before any compute with one message naming the problem. */
mgpu_status mgpu_t2i_run(const mgpu_t2i_request *req, mgpu_t2i_result *out, mgpu_error *err);
void mgpu_t2i_result_free(mgpu_t2i_result *result);

#endif
