/* The device inventory: real discovery, simulated inventories, lookups and
 * link bandwidths. See mgpu/device.h. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/units.h"
#include "device/cpu_memory.h"
#include "device/cuda_probe.h"
#include "mgpu/device.h"

static mgpu_device *add_device(mgpu_device_list *list, mgpu_device_kind kind, int ordinal)
{
    if (list->count == MGPU_MAX_DEVICES)
        return NULL;
    mgpu_device *d = &list->devices[list->count++];
    memset(d, 0, sizeof *d);
    d->kind = kind;
    d->ordinal = ordinal;
    if (kind == MGPU_DEVICE_CUDA)
        snprintf(d->name, sizeof d->name, "cuda:%d", ordinal);
    else
        snprintf(d->name, sizeof d->name, "%s", kind == MGPU_DEVICE_CPU ? "cpu" : "disk");
    return d;
}

mgpu_status mgpu_devices_discover(mgpu_device_list *out, mgpu_error *err)
{
    memset(out, 0, sizeof *out);
    mgpu_device *cpu = add_device(out, MGPU_DEVICE_CPU, 0);
    mgpu_status s = mgpu_cpu_memory("", &cpu->total_bytes, &cpu->free_bytes, err);
    if (s != MGPU_OK)
        return s;
    snprintf(cpu->description, sizeof cpu->description, "RAM");
    if ((s = mgpu_cuda_probe(out, err)) != MGPU_OK)
        return s;
    /* The disk holds the model files themselves: no capacity to fill, and
     * its read bandwidth is measured by the executor when it streams. */
    mgpu_device *disk = add_device(out, MGPU_DEVICE_DISK, 0);
    if (disk) {
        disk->total_bytes = disk->free_bytes = UINT64_MAX;
        snprintf(disk->description, sizeof disk->description, "model file storage");
    }
    return MGPU_OK;
}

const mgpu_device *mgpu_device_find(const mgpu_device_list *list, const char *name)
{
    int i = mgpu_device_index(list, name);
    return i >= 0 ? &list->devices[i] : NULL;
}

int mgpu_device_index(const mgpu_device_list *list, const char *name)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->devices[i].name, name) == 0)
            return (int)i;
    return -1;
}

void mgpu_device_list_names(const mgpu_device_list *list, char *buf, size_t size)
{
    size_t used = 0;
    if (size)
        buf[0] = '\0';
    for (size_t i = 0; i < list->count && used < size; i++) {
        int w = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", list->devices[i].name);
        if (w < 0)
            return;
        used += (size_t)w;
    }
}

static double host_link(const mgpu_device *d)
{
    return d->kind == MGPU_DEVICE_CPU ? INFINITY : d->host_link_bytes_per_s;
}

double mgpu_device_copy_bytes_per_s(const mgpu_device_list *list, int from, int to)
{
    if (from < 0 || to < 0 || (size_t)from >= list->count || (size_t)to >= list->count)
        return 0.0;
    if (from == to)
        return INFINITY;
    if (list->peer_bytes_per_s[from][to] > 0.0)
        return list->peer_bytes_per_s[from][to];
    double a = host_link(&list->devices[from]), b = host_link(&list->devices[to]);
    if (a == 0.0 || b == 0.0)
        return 0.0; /* unknown */
    return a < b ? a : b;
}

/* ---- simulated inventories -------------------------------------------- */

typedef struct spec_cursor {
    const char *spec;
    mgpu_error *err;
} spec_cursor;

static mgpu_status spec_fail(const spec_cursor *c, size_t at, const char *what)
{
    return mgpu_error_set(c->err, MGPU_ERR_ARGUMENT, "--devices '%s': %s at column %zu", c->spec,
                          what, at);
}

/* "cpu", "disk" or "cuda:N" -> kind and ordinal. */
static bool parse_device_name(const char *s, size_t n, mgpu_device_kind *kind, int *ordinal)
{
    if (n == 3 && memcmp(s, "cpu", 3) == 0) {
        *kind = MGPU_DEVICE_CPU;
        *ordinal = 0;
        return true;
    }
    if (n == 4 && memcmp(s, "disk", 4) == 0) {
        *kind = MGPU_DEVICE_DISK;
        *ordinal = 0;
        return true;
    }
    if (n > 5 && n <= 8 && memcmp(s, "cuda:", 5) == 0) {
        int v = 0;
        for (size_t i = 5; i < n; i++) {
            if (s[i] < '0' || s[i] > '9')
                return false;
            v = v * 10 + (s[i] - '0');
        }
        *kind = MGPU_DEVICE_CUDA;
        *ordinal = v;
        return true;
    }
    return false;
}

static size_t trim(const char *s, size_t *start, size_t end)
{
    while (*start < end && (s[*start] == ' ' || s[*start] == '\t'))
        (*start)++;
    while (end > *start && (s[end - 1] == ' ' || s[end - 1] == '\t'))
        end--;
    return end;
}

static mgpu_status parse_size_at(const spec_cursor *c, size_t at, size_t end, uint64_t *out)
{
    size_t unit_at;
    char what[160];
    switch (mgpu_parse_bytes(c->spec + at, end - at, out, &unit_at)) {
    case MGPU_UNIT_OK: return MGPU_OK;
    case MGPU_UNIT_NO_NUMBER: return spec_fail(c, at, "expected a size such as 24gib");
    case MGPU_UNIT_MISSING: return spec_fail(c, at, "size needs a unit (b, kb, mb, gb, tb)");
    case MGPU_UNIT_OVERFLOW: return spec_fail(c, at, "size too large");
    default:
        snprintf(what, sizeof what, "unknown size unit '%.*s'", (int)(end - at - unit_at),
                 c->spec + at + unit_at);
        return spec_fail(c, at + unit_at, what);
    }
}

static mgpu_status parse_bandwidth_at(const spec_cursor *c, size_t at, size_t end, double *out)
{
    size_t unit_at;
    char what[160];
    switch (mgpu_parse_bandwidth(c->spec + at, end - at, out, &unit_at)) {
    case MGPU_UNIT_OK:
        if (*out <= 0)
            return spec_fail(c, at, "bandwidth must be positive");
        return MGPU_OK;
    case MGPU_UNIT_NO_NUMBER: return spec_fail(c, at, "expected a bandwidth such as 25gbps");
    case MGPU_UNIT_MISSING: return spec_fail(c, at, "bandwidth needs a unit (gbps or mbps)");
    default:
        snprintf(what, sizeof what, "unknown bandwidth unit '%.*s' (use gbps or mbps)",
                 (int)(end - at - unit_at), c->spec + at + unit_at);
        return spec_fail(c, at + unit_at, what);
    }
}

mgpu_status mgpu_devices_simulate(const char *spec, mgpu_device_list *out, mgpu_error *err)
{
    memset(out, 0, sizeof *out);
    spec_cursor c = {spec, err};
    size_t n = strlen(spec);
    size_t npeers = 0;
    struct {
        size_t at, end;
        double bw;
    } pending_peers[MGPU_MAX_DEVICES];
    mgpu_status s;
    if (n == 0)
        return spec_fail(&c, 0, "empty device list");
    for (size_t pos = 0; pos <= n;) {
        size_t end = pos;
        while (end < n && spec[end] != ',')
            end++;
        size_t start = pos;
        size_t stop = trim(spec, &start, end);
        pos = end + 1;
        if (start == stop)
            return spec_fail(&c, start, "empty entry");
        const char *e = spec + start;
        size_t len = stop - start;
        const char *at_sign = memchr(e, '@', len);
        const char *eq = memchr(e, '=', len);
        const char *plus = memchr(e, '+', len);
        size_t name_end = eq ? (size_t)(eq - e) : at_sign ? (size_t)(at_sign - e) : len;
        if (plus && (!eq || plus < eq)) {
            /* A+B@BW: a peer link */
            if (!at_sign)
                return spec_fail(&c, start, "a peer link needs a bandwidth: cuda:0+cuda:1@50gbps");
            if (npeers == MGPU_MAX_DEVICES)
                return spec_fail(&c, start, "too many peer links");
            pending_peers[npeers].at = start;
            pending_peers[npeers].end = (size_t)(at_sign - spec);
            s = parse_bandwidth_at(&c, (size_t)(at_sign - spec) + 1, stop, &pending_peers[npeers].bw);
            if (s != MGPU_OK)
                return s;
            npeers++;
            continue;
        }
        size_t ns = start, ne = trim(spec, &ns, start + name_end);
        mgpu_device_kind kind;
        int ordinal;
        if (!parse_device_name(spec + ns, ne - ns, &kind, &ordinal)) {
            char what[160];
            snprintf(what, sizeof what, "unknown device '%.*s' (use cpu, cuda:N or disk)",
                     (int)(ne - ns), spec + ns);
            return spec_fail(&c, ns, what);
        }
        char name[MGPU_DEVICE_NAME_BYTES];
        snprintf(name, sizeof name, "%.*s", (int)(ne - ns), spec + ns);
        if (mgpu_device_index(out, name) >= 0) {
            char what[160];
            snprintf(what, sizeof what, "device '%s' given twice", name);
            return spec_fail(&c, ns, what);
        }
        mgpu_device *d = add_device(out, kind, ordinal);
        if (!d)
            return spec_fail(&c, ns, "too many devices");
        d->simulated = true;
        snprintf(d->description, sizeof d->description, "simulated");
        if (kind == MGPU_DEVICE_DISK) {
            d->total_bytes = d->free_bytes = UINT64_MAX;
            if (eq)
                return spec_fail(&c, (size_t)(eq - spec), "the disk has no size: write disk@1.5gbps");
        } else {
            if (!eq)
                return spec_fail(&c, start + name_end, "expected '=' and a size, as in cuda:0=24gib");
            size_t size_at = (size_t)(eq - spec) + 1;
            size_t size_end = at_sign ? (size_t)(at_sign - spec) : stop;
            const char *slash = memchr(spec + size_at, '/', size_end - size_at);
            size_t total_end = slash ? (size_t)(slash - spec) : size_end;
            size_t ts = size_at, te = trim(spec, &ts, total_end);
            if ((s = parse_size_at(&c, ts, te, &d->total_bytes)) != MGPU_OK)
                return s;
            d->free_bytes = d->total_bytes;
            if (slash) {
                size_t fs = (size_t)(slash - spec) + 1, fe = trim(spec, &fs, size_end);
                if ((s = parse_size_at(&c, fs, fe, &d->free_bytes)) != MGPU_OK)
                    return s;
                if (d->free_bytes > d->total_bytes)
                    return spec_fail(&c, fs, "free memory larger than total");
            }
        }
        if (at_sign) {
            if (kind == MGPU_DEVICE_CPU)
                return spec_fail(&c, (size_t)(at_sign - spec),
                                 "the cpu is the host: give link bandwidths to GPUs and the disk");
            size_t bs = (size_t)(at_sign - spec) + 1, be = trim(spec, &bs, stop);
            if ((s = parse_bandwidth_at(&c, bs, be, &d->host_link_bytes_per_s)) != MGPU_OK)
                return s;
        }
    }
    if (mgpu_device_index(out, "cpu") < 0) {
        mgpu_device *d = add_device(out, MGPU_DEVICE_CPU, 0);
        if (!d)
            return spec_fail(&c, 0, "too many devices");
        d->simulated = true;
        d->total_bytes = d->free_bytes = UINT64_C(64) << 30;
        snprintf(d->description, sizeof d->description, "simulated (default 64 GiB)");
    }
    /* Peer links refer to devices named anywhere in the spec. */
    for (size_t i = 0; i < npeers; i++) {
        const char *e = spec + pending_peers[i].at;
        const char *plus = memchr(e, '+', pending_peers[i].end - pending_peers[i].at);
        char a[MGPU_DEVICE_NAME_BYTES], b[MGPU_DEVICE_NAME_BYTES];
        size_t as = pending_peers[i].at, ae = trim(spec, &as, (size_t)(plus - spec));
        size_t bs = (size_t)(plus - spec) + 1, be = trim(spec, &bs, pending_peers[i].end);
        snprintf(a, sizeof a, "%.*s", (int)(ae - as), spec + as);
        snprintf(b, sizeof b, "%.*s", (int)(be - bs), spec + bs);
        int ia = mgpu_device_index(out, a), ib = mgpu_device_index(out, b);
        if (ia < 0 || ib < 0 || out->devices[ia].kind != MGPU_DEVICE_CUDA ||
            out->devices[ib].kind != MGPU_DEVICE_CUDA || ia == ib)
            return spec_fail(&c, as, "a peer link joins two different GPUs named in the list");
        out->peer_bytes_per_s[ia][ib] = out->peer_bytes_per_s[ib][ia] = pending_peers[i].bw;
    }
    return MGPU_OK;
}
