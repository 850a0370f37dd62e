/* Prints what mgpu_cuda_probe finds on this machine: every GPU with its
 * memory, PCI bus id and compute capability, the peer-access matrix and the
 * notes. For eyeballing on a GPU machine (compare with nvidia-smi); it runs
 * the probe twice to show that loading and unloading the driver library
 * repeatedly is harmless. Exit status 0 unless the probe itself fails. */
#include <stdio.h>
#include <string.h>

#include "device/cuda_probe.h"

static mgpu_device_list list; /* large: keep it off the stack */

static int probe_and_print(int round)
{
    memset(&list, 0, sizeof list);
    mgpu_error err = {0};
    mgpu_status st = mgpu_cuda_probe(&list, &err);
    if (st != MGPU_OK) {
        fprintf(stderr, "probe failed: %s: %s\n", mgpu_status_name(st), err.message);
        return 1;
    }
    printf("round %d: %zu NVIDIA GPU(s) on the PCI bus, %zu CUDA device(s)\n", round,
           mgpu_pci_count_nvidia_gpus("/sys/bus/pci/devices"), list.count);
    for (size_t i = 0; i < list.count; i++) {
        const mgpu_device *d = &list.devices[i];
        printf("  %-8s %-40s sm_%d%d  pci %-14s total %8.2f GiB  free %8.2f GiB\n", d->name,
               d->description, d->compute_major, d->compute_minor, d->pci_bus_id,
               (double)d->total_bytes / (1024.0 * 1024 * 1024),
               (double)d->free_bytes / (1024.0 * 1024 * 1024));
    }
    for (size_t i = 0; i < list.count; i++)
        for (size_t j = 0; j < list.count; j++)
            if (list.peer_bytes_per_s[i][j] > 0)
                printf("  peer %s -> %s: %.1f GB/s (placeholder unless measured)\n",
                       list.devices[i].name, list.devices[j].name,
                       list.peer_bytes_per_s[i][j] / 1e9);
    for (size_t i = 0; i < list.note_count; i++)
        printf("  note: %s\n", list.notes[i]);
    return 0;
}

int main(void)
{
    if (probe_and_print(1) != 0)
        return 1;
    return probe_and_print(2);
}
