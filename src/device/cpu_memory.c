/* See cpu_memory.h. Containers often report the host's RAM in
 * /proc/meminfo while the cgroup allows far less; planning against the
 * larger number is how offloaders get OOM-killed, so the limit wins. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "device/cpu_memory.h"

/* The first line of a small file, or false. */
static bool read_line(const char *root, const char *path, char *buf, size_t size)
{
    char full[1024];
    snprintf(full, sizeof full, "%s%s", root, path);
    FILE *f = fopen(full, "r");
    if (!f)
        return false;
    bool ok = fgets(buf, (int)size, f) != NULL;
    fclose(f);
    return ok;
}

static bool read_u64_file(const char *root, const char *path, uint64_t *out)
{
    char line[128];
    if (!read_line(root, path, line, sizeof line))
        return false;
    char *end;
    unsigned long long v = strtoull(line, &end, 10);
    if (end == line)
        return false; /* "max" (no limit) or garbage */
    *out = v;
    return true;
}

/* The cgroup limit and usage, if this process has a limit. */
static bool cgroup_limit(const char *root, uint64_t *limit, uint64_t *usage)
{
    char path[768], line[512];
    char self[1024];
    snprintf(self, sizeof self, "%s/proc/self/cgroup", root);
    FILE *f = fopen(self, "r");
    char group[512] = "";
    int v1 = 0;
    if (f) {
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            if (strncmp(line, "0::", 3) == 0) {
                snprintf(group, sizeof group, "%s", line + 3);
            } else if (strstr(line, ":memory:")) {
                snprintf(group, sizeof group, "%s", strstr(line, ":memory:") + 8);
                v1 = 1;
            }
        }
        fclose(f);
    }
    if (strcmp(group, "/") == 0)
        group[0] = '\0';
    /* cgroup v2 under the process's own group, then at the namespace root */
    const char *v2_dirs[] = {group, ""};
    for (int i = 0; i < 2 && !v1; i++) {
        snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", v2_dirs[i]);
        if (read_u64_file(root, path, limit)) {
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.current", v2_dirs[i]);
            if (!read_u64_file(root, path, usage))
                *usage = 0;
            return true;
        }
    }
    const char *v1_dirs[] = {group, ""};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", v1_dirs[i]);
        /* v1 reports "no limit" as a huge number near 2^63 */
        if (read_u64_file(root, path, limit) && *limit < (UINT64_C(1) << 60)) {
            snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.usage_in_bytes", v1_dirs[i]);
            if (!read_u64_file(root, path, usage))
                *usage = 0;
            return true;
        }
    }
    return false;
}

mgpu_status mgpu_cpu_memory(const char *root, uint64_t *total, uint64_t *available,
                            mgpu_error *err)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/proc/meminfo", root);
    FILE *f = fopen(path, "r");
    if (!f)
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot read RAM size", path);
    char line[256];
    uint64_t mem_total = 0, mem_available = 0;
    int have_total = 0, have_available = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long kib;
        if (sscanf(line, "MemTotal: %llu kB", &kib) == 1) {
            mem_total = (uint64_t)kib * 1024;
            have_total = 1;
        } else if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
            mem_available = (uint64_t)kib * 1024;
            have_available = 1;
        }
    }
    fclose(f);
    if (!have_total)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: no MemTotal line", path);
    if (!have_available) /* kernels before 3.14: assume all of it */
        mem_available = mem_total;
    uint64_t limit, usage;
    if (cgroup_limit(root, &limit, &usage) && limit < mem_total) {
        mem_total = limit;
        uint64_t left = usage < limit ? limit - usage : 0;
        if (left < mem_available)
            mem_available = left;
    }
    *total = mem_total;
    *available = mem_available < mem_total ? mem_available : mem_total;
    return MGPU_OK;
}
