/* What the CUDA plugin (libmgpu-cuda.so) exports, for the loader
 * (src/backend/cuda_loader.c) to dlsym. Everything else in the plugin is
 * hidden. */
#ifndef MGPU_BACKEND_CUDA_PLUGIN_H
#define MGPU_BACKEND_CUDA_PLUGIN_H

#include <stddef.h>

#include "backend/backend.h"

#define MGPU_CUDA_EXPORT __attribute__((visibility("default")))

/* MGPU_BACKEND_ABI as the plugin was built. */
#define MGPU_CUDA_PLUGIN_ABI_SYMBOL "mgpu_cuda_plugin_abi"
extern const int mgpu_cuda_plugin_abi;

/* A backend for CUDA device `ordinal`; `abi` is the loader's
 * MGPU_BACKEND_ABI (refused when it differs). Errors: "cuda:N: no CUDA
 * driver ...", "cuda:N: no such device (K CUDA devices)", or the CUDA call
 * that failed. */
#define MGPU_CUDA_PLUGIN_CREATE_SYMBOL "mgpu_cuda_plugin_create"
typedef mgpu_status (*mgpu_cuda_plugin_create_fn)(int abi, int ordinal, mgpu_backend **out,
                                                  mgpu_error *err);
mgpu_status mgpu_cuda_plugin_create(int abi, int ordinal, mgpu_backend **out, mgpu_error *err);

/* CUDA devices visible, or -1 when the driver cannot be used (why says so). */
#define MGPU_CUDA_PLUGIN_COUNT_SYMBOL "mgpu_cuda_plugin_device_count"
typedef int (*mgpu_cuda_plugin_count_fn)(char *why, size_t why_size);
int mgpu_cuda_plugin_device_count(char *why, size_t why_size);

#endif
