/* The streaming executor: a tensor source that follows a placement plan.
 * Modules on the compute device are read in place; the others are copied,
 * a block at a time, into a bounded staging area by a copy thread that runs
 * ahead of compute as far as the staging budget allows: from RAM or another
 * (simulated) GPU with memcpy paced to the link's bandwidth, from the disk
 * with O_DIRECT reads into our own aligned buffers (so the page cache is not
 * what holds the model). Internal to libmgpu. */
#ifndef MGPU_EXEC_EXECUTOR_H
#define MGPU_EXEC_EXECUTOR_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "exec/source.h"
#include "mgpu/plan.h"

typedef struct mgpu_executor mgpu_executor;

typedef struct mgpu_executor_options {
    /* Staging budget in bytes; 0: room for two of the largest streamed
     * blocks (double buffering). Must hold the largest streamed block. */
    uint64_t staging_bytes;
    /* Honour simulated link bandwidths by pacing copies (default on for
     * simulated devices; real RAM copies are never slowed). */
    int pace_simulated;
    /* Per model tensor, or NULL: resident tensors the caller supplies
     * itself (LoRA merge-once holds merged copies). They are not uploaded,
     * and the source must not be asked for them. */
    const bool *skip_resident;
    /* When the compute backend is not host-visible (a GPU): 1 streams
     * RAM-tier tensors straight from the file mapping (pageable memory)
     * instead of copying them into pinned host memory when the executor is
     * created. 0 (default): pinned, so copies run at the link's speed and
     * overlap compute; where pinning fails the tensors stay pageable. */
    int pageable_ram;
    /* Per plan device, or NULL: the backend of a donor GPU. Tensors the plan
     * puts on a device with a backend here that is not host-visible (and is
     * not the compute backend) are uploaded to that GPU when the executor is
     * created and copied peer to peer from there. Without one (simulated
     * GPUs), they are streamed from the host as RAM-tier tensors are. */
    mgpu_backend *const *device_backends;
    /* Disk reads into a GPU go through two pinned halves of this many bytes
     * (rounded up to 4 KiB); 0: 16 MiB. */
    uint64_t bounce_bytes;
} mgpu_executor_options;

typedef struct mgpu_exec_stats {
    uint64_t bytes_copied[MGPU_MAX_DEVICES]; /* by source device index, blocks used */
    uint64_t blocks_streamed;                /* blocks entered that had been streamed */
    double copy_seconds;      /* time the copy thread spent moving bytes */
    double wait_seconds;      /* time compute waited for a block to arrive */
    double busy_seconds;      /* wall time between the first enter and the last leave */
    uint64_t staging_peak_bytes;
    uint64_t staging_budget_bytes;
    uint64_t pinned_bytes;   /* RAM-tier tensors held in pinned host memory */
    uint64_t pageable_bytes; /* RAM-tier tensors left pageable (a GPU compute device only) */
    uint64_t donor_bytes;    /* tensors held on donor GPUs, copied peer to peer */
} mgpu_exec_stats;

/* Stages into `be`'s memory and copies on its copy queue; the pointers the
 * source hands out are `be` device pointers. `be` must outlive the
 * executor. */
mgpu_status mgpu_executor_create(const mgpu_plan *plan, mgpu_backend *be,
                                 const mgpu_executor_options *options, mgpu_executor **out,
                                 mgpu_error *err);
void mgpu_executor_free(mgpu_executor *ex);
/* Fills bes[d], where NULL, with a backend for every real GPU of the plan
 * other than its compute device that the plan puts modules on: the donors
 * for mgpu_executor_options.device_backends, with `gemm` (a donor may
 * compute a later stage). Simulated GPUs get none. The caller frees what
 * it got. */
mgpu_status mgpu_executor_open_donors(const mgpu_plan *plan, mgpu_gemm_precision gemm,
                                      mgpu_backend **bes, mgpu_error *err);
mgpu_tensor_source mgpu_executor_source(mgpu_executor *ex);
void mgpu_executor_stats(const mgpu_executor *ex, mgpu_exec_stats *out);

#endif
