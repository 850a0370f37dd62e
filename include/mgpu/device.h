/* The device inventory: where model bytes can live and where compute runs.
 * Real devices are the CPU (RAM from /proc/meminfo, clipped by the cgroup
 * memory limit), every CUDA GPU the driver library exposes (loaded at run
 * time; a machine without it simply has none), and the disk the model file
 * lives on. A simulated inventory replaces them with named devices of given
 * capacities and link bandwidths, so every plan is testable without
 * hardware. */
#ifndef MGPU_DEVICE_H
#define MGPU_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mgpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mgpu_device_kind {
    MGPU_DEVICE_CPU = 0,
    MGPU_DEVICE_CUDA,
    MGPU_DEVICE_DISK,
} mgpu_device_kind;

enum { MGPU_DEVICE_NAME_BYTES = 32, MGPU_MAX_DEVICES = 64 };

typedef struct mgpu_device {
    mgpu_device_kind kind;
    int ordinal;                         /* N of cuda:N; 0 for cpu and disk */
    char name[MGPU_DEVICE_NAME_BYTES];   /* as users write it: "cpu", "cuda:1", "disk" */
    char description[128];               /* "NVIDIA GeForce RTX 3090", "RAM", "simulated" */
    uint64_t total_bytes;
    uint64_t free_bytes; /* available now (RAM: MemAvailable within the cgroup limit) */
    /* Bandwidth of the device's link to host memory in bytes per second
     * (PCIe for a GPU, read bandwidth for the disk); 0 when unknown. */
    double host_link_bytes_per_s;
    /* CUDA only. */
    char pci_bus_id[32];
    int compute_major, compute_minor;
    bool simulated;
} mgpu_device;

typedef struct mgpu_device_list {
    size_t count;
    mgpu_device devices[MGPU_MAX_DEVICES];
    /* peer_bytes_per_s[i][j] > 0 when device i can copy directly to device j
     * (CUDA peer access, NVLink), with that bandwidth; for real GPUs whose
     * peer bandwidth is not measured, the slower of their host links. */
    double peer_bytes_per_s[MGPU_MAX_DEVICES][MGPU_MAX_DEVICES];
    /* Why GPUs are missing or limited, one line each, for `mgpu devices`. */
    size_t note_count;
    char notes[8][256];
} mgpu_device_list;

/* The real inventory: cpu, cuda:N..., disk. Never fails for a missing GPU
 * driver; it adds a note instead. */
mgpu_status mgpu_devices_discover(mgpu_device_list *out, mgpu_error *err);

/* A simulated inventory from a spec such as
 *   "cuda:0=24gib@25gbps,cuda:1=12gib/10gib@6.8gbps,cpu=64gib,disk@1.5gbps,cuda:0+cuda:1@50gbps"
 * Each entry is NAME=TOTAL[/FREE][@BANDWIDTH] (sizes with b/k/m/g/t units,
 * binary, "gib" or "gb" alike; bandwidth in gbps or mbps, meaning 10^9 or
 * 10^6 bytes per second), "disk@BANDWIDTH", or A+B@BANDWIDTH for a direct
 * peer link between two GPUs. A cpu is added (64 GiB) if not named. */
mgpu_status mgpu_devices_simulate(const char *spec, mgpu_device_list *out, mgpu_error *err);

const mgpu_device *mgpu_device_find(const mgpu_device_list *list, const char *name);
int mgpu_device_index(const mgpu_device_list *list, const char *name);

/* Bytes per second for moving data stored on `from` to `to` (the compute
 * device): direct peer link if any, else through host memory (the slower of
 * the two host links); 0 when unknown. */
double mgpu_device_copy_bytes_per_s(const mgpu_device_list *list, int from, int to);

/* Sequential read bandwidth of a file, reading up to max_bytes from its
 * start with O_DIRECT where the file system allows it (*direct says whether
 * it did; buffered reads of a cached file measure RAM, not the disk). */
mgpu_status mgpu_disk_measure_read(const char *path, uint64_t max_bytes, double *bytes_per_s,
                                   bool *direct, mgpu_error *err);

/* "cpu, cuda:0, cuda:1, disk" into buf, for error messages. */
void mgpu_device_list_names(const mgpu_device_list *list, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
