/* RAM as the CPU device sees it. Internal to libmgpu. */
#ifndef MGPU_DEVICE_CPU_MEMORY_H
#define MGPU_DEVICE_CPU_MEMORY_H

#include <stdint.h>

#include "mgpu/status.h"

/* Total and available RAM from ROOT/proc/meminfo (MemTotal, MemAvailable),
 * clipped by this process's cgroup memory limit (v2 memory.max minus
 * memory.current, or v1 memory.limit_in_bytes minus usage_in_bytes). ROOT
 * is "" on a real system; tests point it at a fake tree. */
mgpu_status mgpu_cpu_memory(const char *root, uint64_t *total, uint64_t *available,
                            mgpu_error *err);

#endif
