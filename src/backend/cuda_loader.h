/* The CUDA backend, loaded at run time from the plugin libmgpu-cuda.so, so
 * libmgpu and the CLI build and run on machines without CUDA. Internal to
 * libmgpu.
 *
 * The plugin is looked for, in order: the path in the environment variable
 * MGPU_CUDA_PLUGIN (only there, when set); libmgpu-cuda.so in the folder of
 * the running executable; the dynamic loader's default search. It is
 * loaded once per process and never unloaded. */
#ifndef MGPU_BACKEND_CUDA_LOADER_H
#define MGPU_BACKEND_CUDA_LOADER_H

#include <stdbool.h>

#include "backend/backend.h"

/* A backend for CUDA device `ordinal` (as CUDA numbers them, honouring
 * CUDA_VISIBLE_DEVICES), named "cuda:N". Errors are one line naming the
 * device: the plugin is not built or cannot be loaded (MGPU_ERR_NOT_FOUND
 * or MGPU_ERR_UNSUPPORTED for an ABI mismatch), no CUDA driver or device,
 * no such device (MGPU_ERR_NOT_FOUND), or the CUDA call that failed. */
mgpu_status mgpu_backend_cuda_create(int ordinal, mgpu_backend **out, mgpu_error *err);

/* True when the plugin loads and the driver reports at least one device. */
bool mgpu_backend_cuda_available(void);

#endif
