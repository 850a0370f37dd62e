/* `mgpu devices`: the device inventory, real or simulated, with the
 * peer-access matrix for GPUs and notes on GPUs that do not show up. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/units.h"
#include "mgpu/device.h"

int cli_load_devices(const char *spec, mgpu_device_list *out)
{
    mgpu_error err = {0};
    if (!spec || !*spec)
        spec = getenv("MGPU_DEVICES");
    mgpu_status s = spec && *spec ? mgpu_devices_simulate(spec, out, &err)
                                  : mgpu_devices_discover(out, &err);
    if (s != MGPU_OK) {
        cli_error("%s", err.message);
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

int cli_set_disk_bandwidth(mgpu_device_list *list, const char *arg, const char *file)
{
    int d = mgpu_device_index(list, "disk");
    if (d < 0) {
        cli_error("--disk-bandwidth: the device list has no disk");
        return CLI_EXIT_USAGE;
    }
    double bw = 0.0;
    if (strcmp(arg, "measure") == 0) {
        mgpu_error err = {0};
        bool direct;
        /* 1 GiB at most: a few seconds at SATA speeds, enough for NVMe */
        if (mgpu_disk_measure_read(file, UINT64_C(1) << 30, &bw, &direct, &err) != MGPU_OK) {
            cli_error("%s", err.message);
            return CLI_EXIT_FAILURE;
        }
        fprintf(stderr, "mgpu: disk read %.2f GB/s on %s%s\n", bw / 1e9, file,
                direct ? " (O_DIRECT)" : " (buffered: the page cache may have served it)");
    } else {
        size_t unit_at;
        if (mgpu_parse_bandwidth(arg, strlen(arg), &bw, &unit_at) != MGPU_UNIT_OK || bw <= 0) {
            cli_error("--disk-bandwidth takes 'measure' or a bandwidth like 1.5gbps, not '%s'", arg);
            return CLI_EXIT_USAGE;
        }
    }
    list->devices[d].host_link_bytes_per_s = bw;
    return CLI_EXIT_OK;
}

void cli_format_bandwidth(double bytes_per_s, char *buf, size_t size)
{
    if (isinf(bytes_per_s))
        snprintf(buf, size, "host");
    else if (bytes_per_s <= 0)
        snprintf(buf, size, "unknown");
    else
        snprintf(buf, size, "%.1f GB/s", bytes_per_s / 1e9);
}

static const char *kind_name(mgpu_device_kind k)
{
    return k == MGPU_DEVICE_CUDA ? "cuda" : k == MGPU_DEVICE_DISK ? "disk" : "cpu";
}

static void print_text(const mgpu_device_list *l)
{
    printf("%-8s %-5s %12s %12s %12s  %s\n", "device", "kind", "total", "free", "host link",
           "description");
    for (size_t i = 0; i < l->count; i++) {
        const mgpu_device *d = &l->devices[i];
        char total[32], free_[32], link[32];
        if (d->total_bytes == UINT64_MAX) {
            snprintf(total, sizeof total, "-");
            snprintf(free_, sizeof free_, "-");
        } else {
            cli_format_bytes(d->total_bytes, total, sizeof total);
            cli_format_bytes(d->free_bytes, free_, sizeof free_);
        }
        cli_format_bandwidth(d->kind == MGPU_DEVICE_CPU ? INFINITY : d->host_link_bytes_per_s, link,
                             sizeof link);
        printf("%-8s %-5s %12s %12s %12s  %s", d->name, kind_name(d->kind), total, free_, link,
               d->description);
        if (d->kind == MGPU_DEVICE_CUDA && !d->simulated)
            printf(" (sm_%d%d, %s)", d->compute_major, d->compute_minor, d->pci_bus_id);
        printf("\n");
    }
    size_t gpus = 0;
    for (size_t i = 0; i < l->count; i++)
        gpus += l->devices[i].kind == MGPU_DEVICE_CUDA;
    if (gpus > 1) {
        printf("\npeer access (GB/s, '-' none):\n%-8s", "");
        for (size_t j = 0; j < l->count; j++)
            if (l->devices[j].kind == MGPU_DEVICE_CUDA)
                printf(" %8s", l->devices[j].name);
        printf("\n");
        for (size_t i = 0; i < l->count; i++) {
            if (l->devices[i].kind != MGPU_DEVICE_CUDA)
                continue;
            printf("%-8s", l->devices[i].name);
            for (size_t j = 0; j < l->count; j++) {
                if (l->devices[j].kind != MGPU_DEVICE_CUDA)
                    continue;
                if (i == j)
                    printf(" %8s", "self");
                else if (l->peer_bytes_per_s[i][j] > 0)
                    printf(" %8.1f", l->peer_bytes_per_s[i][j] / 1e9);
                else
                    printf(" %8s", "-");
            }
            printf("\n");
        }
    }
    for (size_t i = 0; i < l->note_count; i++)
        printf("note: %s\n", l->notes[i]);
}

static json_t *to_json(const mgpu_device_list *l)
{
    json_t *root = json_object(), *devs = json_array(), *notes = json_array();
    for (size_t i = 0; i < l->count; i++) {
        const mgpu_device *d = &l->devices[i];
        json_t *j = json_object();
        json_object_set_new(j, "name", json_string(d->name));
        json_object_set_new(j, "kind", json_string(kind_name(d->kind)));
        json_object_set_new(j, "description", json_string(d->description));
        json_object_set_new(j, "total_bytes", d->total_bytes == UINT64_MAX
                                                  ? json_null()
                                                  : json_integer((json_int_t)d->total_bytes));
        json_object_set_new(j, "free_bytes", d->free_bytes == UINT64_MAX
                                                 ? json_null()
                                                 : json_integer((json_int_t)d->free_bytes));
        json_object_set_new(j, "host_link_bytes_per_s",
                            d->host_link_bytes_per_s > 0 ? json_real(d->host_link_bytes_per_s)
                                                         : json_null());
        json_object_set_new(j, "simulated", json_boolean(d->simulated));
        if (d->kind == MGPU_DEVICE_CUDA) {
            json_object_set_new(j, "pci_bus_id", json_string(d->pci_bus_id));
            json_object_set_new(j, "compute_capability",
                                json_sprintf("%d.%d", d->compute_major, d->compute_minor));
            json_t *peers = json_object();
            for (size_t k = 0; k < l->count; k++)
                if (l->peer_bytes_per_s[i][k] > 0)
                    json_object_set_new(peers, l->devices[k].name,
                                        json_real(l->peer_bytes_per_s[i][k]));
            json_object_set_new(j, "peers", peers);
        }
        json_array_append_new(devs, j);
    }
    for (size_t i = 0; i < l->note_count; i++)
        json_array_append_new(notes, json_string(l->notes[i]));
    json_object_set_new(root, "devices", devs);
    json_object_set_new(root, "notes", notes);
    return root;
}

int cli_devices(int argc, char **argv)
{
    int json = 0;
    const char *spec = NULL, *measure = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--devices") == 0 && i + 1 < argc) {
            spec = argv[++i];
        } else if (strcmp(argv[i], "--measure-disk") == 0 && i + 1 < argc) {
            measure = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs("usage: mgpu devices [--json] [--devices SPEC] [--measure-disk FILE]\n"
                  "  SPEC simulates an inventory, e.g. 'cuda:0=24gib@25gbps,cpu=64gib'\n"
                  "  (also read from MGPU_DEVICES)\n"
                  "  --measure-disk FILE  the disk's read bandwidth, reading FILE (up to 1 GiB)\n",
                  stdout);
            return CLI_EXIT_OK;
        } else {
            cli_error("devices: unknown argument '%s'", argv[i]);
            return CLI_EXIT_USAGE;
        }
    }
    mgpu_device_list *l = malloc(sizeof *l);
    if (!l) {
        cli_error("out of memory");
        return CLI_EXIT_FAILURE;
    }
    int rc = cli_load_devices(spec, l);
    if (rc == CLI_EXIT_OK && measure)
        rc = cli_set_disk_bandwidth(l, "measure", measure);
    if (rc == CLI_EXIT_OK) {
        if (json) {
            cli_print_json(to_json(l));
        } else {
            print_text(l);
        }
    }
    free(l);
    return rc;
}
