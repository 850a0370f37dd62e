/* CUDA GPU discovery through the driver library, loaded at run time with
 * dlopen so that mgpu builds and runs without CUDA. Internal to libmgpu. */
#ifndef MGPU_DEVICE_CUDA_PROBE_H
#define MGPU_DEVICE_CUDA_PROBE_H

#include <stddef.h>

#include "mgpu/device.h"

/* Appends every GPU the driver exposes as cuda:N (N as CUDA numbers them,
 * which honours CUDA_VISIBLE_DEVICES), with name, total and free memory, PCI
 * bus id and compute capability, and fills peer_bytes_per_s for pairs with
 * peer access. When fewer GPUs appear than the PCI bus holds, or there is no
 * driver library, appends a note saying why. Returns MGPU_OK in all those
 * cases; an error only for something truly unexpected. */
mgpu_status mgpu_cuda_probe(mgpu_device_list *list, mgpu_error *err);

/* NVIDIA display or 3D controllers (vendor 0x10de, class 0x03xxxx) under a
 * sysfs PCI devices folder, normally "/sys/bus/pci/devices". */
size_t mgpu_pci_count_nvidia_gpus(const char *sysfs_pci_devices);

/* The note explaining a GPU count mismatch, or "" when there is nothing to
 * say. Pure function of its inputs, for tests. `visible` is what CUDA
 * reported (-1 when the driver library could not be loaded or initialised,
 * with `driver_error` saying why), `on_bus` the PCI count, `visible_env` the
 * CUDA_VISIBLE_DEVICES value or NULL. */
void mgpu_cuda_explain(int visible, size_t on_bus, const char *visible_env,
                       const char *driver_error, char *buf, size_t size);

#endif
