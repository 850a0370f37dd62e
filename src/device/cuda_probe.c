/* CUDA GPU discovery. The driver library (libcuda.so.1) is opened at run
 * time with dlopen, so mgpu needs no CUDA headers or toolkit to build and a
 * machine without the driver simply has no GPUs. The few driver API types
 * and entry points used are declared here by hand; their names, signatures
 * and enum values follow NVIDIA's cuda.h (CUDA 13.0) and are ABI-stable.
 *
 * Besides listing GPUs, this file explains missing ones: it counts the
 * NVIDIA GPUs on the PCI bus (sysfs) and, when CUDA shows fewer, adds a
 * note saying the likely reason ("only cuda:0 visible" is the most common
 * complaint about the tool mgpu replaces). */
#include <dirent.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "device/cuda_probe.h"

/* ---- the driver API, declared by hand ---------------------------------- */

typedef int CUresult; /* an enum in cuda.h; 0 is CUDA_SUCCESS */
typedef int CUdevice;
typedef void *CUcontext;

enum {
    CUDA_SUCCESS = 0,
    /* CUdevice_attribute values (cuda.h). */
    CU_ATTR_PCI_BUS_ID = 33,
    CU_ATTR_PCI_DEVICE_ID = 34,
    CU_ATTR_PCI_DOMAIN_ID = 50,
    CU_ATTR_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_ATTR_COMPUTE_CAPABILITY_MINOR = 76,
};

/* Exported symbol names: the _v2 ones are what cuda.h's #defines turn the
 * plain names into; the unsuffixed symbols still exported are the old ABI
 * (32-bit sizes for cuDeviceTotalMem and cuMemGetInfo), so never use them. */
typedef struct cuda_api {
    CUresult (*init)(unsigned int flags);                           /* cuInit */
    CUresult (*device_get_count)(int *count);                       /* cuDeviceGetCount */
    CUresult (*device_get)(CUdevice *dev, int ordinal);             /* cuDeviceGet */
    CUresult (*device_get_name)(char *name, int len, CUdevice dev); /* cuDeviceGetName */
    CUresult (*device_total_mem)(size_t *bytes, CUdevice dev);      /* cuDeviceTotalMem_v2 */
    CUresult (*device_get_attribute)(int *value, int attr, CUdevice dev);
    /* Optional: the probe degrades when one is missing. */
    CUresult (*get_error_name)(CUresult error, const char **name);  /* cuGetErrorName */
    CUresult (*device_get_pci_bus_id)(char *id, int len, CUdevice dev);
    CUresult (*primary_ctx_retain)(CUcontext *ctx, CUdevice dev);
    CUresult (*primary_ctx_release)(CUdevice dev);                  /* ..._v2, else plain */
    CUresult (*ctx_push_current)(CUcontext ctx);                    /* cuCtxPushCurrent_v2 */
    CUresult (*ctx_pop_current)(CUcontext *ctx);                    /* cuCtxPopCurrent_v2 */
    CUresult (*mem_get_info)(size_t *free_bytes, size_t *total);    /* cuMemGetInfo_v2 */
    CUresult (*device_can_access_peer)(int *can, CUdevice dev, CUdevice peer);
} cuda_api;

/* Peer bandwidth used when neither the peer link nor the GPUs' host links
 * are measured (this probe leaves host_link_bytes_per_s at 0). 12 GB/s is
 * roughly what a PCIe 3.0 x16 peer copy achieves, the slowest link common
 * in multi-GPU machines, so plans err towards "slower than it is" rather
 * than the reverse; NVLink pairs are several times faster. */
#define CUDA_PEER_PLACEHOLDER_BYTES_PER_S 12e9

/* One GPU slot is kept free for the disk device the inventory appends
 * after the GPUs. */
enum { CUDA_RESERVED_SLOTS = 1, CUDA_MAX_NOTES = 8 };

static const char SYSFS_PCI_DEVICES[] = "/sys/bus/pci/devices";

/* ---- small helpers ------------------------------------------------------ */

/* dlsym returns void *, and ISO C has no conversion from that to a function
 * pointer; POSIX guarantees the representations match, so copy the bytes. */
static bool load_symbol(void *lib, const char *name, void *fn_ptr)
{
    void *sym = dlsym(lib, name);
    memcpy(fn_ptr, &sym, sizeof sym);
    return sym != NULL;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void add_note(mgpu_device_list *list, const char *fmt, ...)
{
    if (list->note_count >= CUDA_MAX_NOTES)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(list->notes[list->note_count], sizeof list->notes[0], fmt, ap);
    va_end(ap);
    if (list->notes[list->note_count][0])
        list->note_count++;
}

/* Names of the results a probe most often meets (cuda.h), for when
 * cuGetErrorName is missing or fails, as it does in the toolkit's stub. */
static const char *known_result_name(CUresult r)
{
    switch (r) {
    case 1: return "CUDA_ERROR_INVALID_VALUE";
    case 2: return "CUDA_ERROR_OUT_OF_MEMORY";
    case 3: return "CUDA_ERROR_NOT_INITIALIZED";
    case 4: return "CUDA_ERROR_DEINITIALIZED";
    case 34: return "CUDA_ERROR_STUB_LIBRARY";
    case 46: return "CUDA_ERROR_DEVICE_UNAVAILABLE";
    case 100: return "CUDA_ERROR_NO_DEVICE";
    case 101: return "CUDA_ERROR_INVALID_DEVICE";
    case 304: return "CUDA_ERROR_OPERATING_SYSTEM";
    case 802: return "CUDA_ERROR_SYSTEM_NOT_READY";
    case 803: return "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH";
    case 804: return "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE";
    case 999: return "CUDA_ERROR_UNKNOWN";
    }
    return NULL;
}

/* "cuInit returned 100 (CUDA_ERROR_NO_DEVICE)"; the leading call name is
 * what mgpu_cuda_explain keys on (see there). */
static void describe_failure(const cuda_api *api, const char *call, CUresult r, char *buf,
                             size_t size)
{
    const char *name = NULL;
    if (!api->get_error_name || api->get_error_name(r, &name) != CUDA_SUCCESS || !name)
        name = known_result_name(r);
    if (name)
        snprintf(buf, size, "%s returned %d (%s)", call, r, name);
    else
        snprintf(buf, size, "%s returned %d", call, r);
}

static void note_failure(mgpu_device_list *list, const cuda_api *api, int ordinal,
                         const char *what, const char *call, CUresult r)
{
    char why[128];
    describe_failure(api, call, r, why, sizeof why);
    add_note(list, "cuda:%d: %s: %s", ordinal, what, why);
}

/* Copies a possibly longer C string into a fixed field, truncating. */
static void copy_field(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Reads a file holding one hexadecimal number ("0x10de\n"). */
static bool read_hex_file(const char *path, unsigned long *value)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[64];
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok)
        return false;
    char *end;
    *value = strtoul(line, &end, 16);
    return end != line;
}

/* ---- PCI bus count ------------------------------------------------------ */

size_t mgpu_pci_count_nvidia_gpus(const char *sysfs_pci_devices)
{
    if (!sysfs_pci_devices)
        return 0;
    DIR *dir = opendir(sysfs_pci_devices);
    if (!dir)
        return 0;
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        unsigned long vendor, pci_class;
        int n = snprintf(path, sizeof path, "%s/%s/vendor", sysfs_pci_devices, e->d_name);
        if (n < 0 || (size_t)n >= sizeof path || !read_hex_file(path, &vendor))
            continue;
        n = snprintf(path, sizeof path, "%s/%s/class", sysfs_pci_devices, e->d_name);
        if (n < 0 || (size_t)n >= sizeof path || !read_hex_file(path, &pci_class))
            continue;
        /* Base class 0x03 is "display controller": VGA (0x0300) and 3D
         * (0x0302, data-centre GPUs); the HDMI audio function (0x0403) and
         * NVSwitch bridges (0x0680) share the vendor id but are no GPUs. */
        if (vendor == 0x10de && (pci_class >> 16) == 0x03)
            count++;
    }
    closedir(dir);
    return count;
}

/* ---- the explanation ---------------------------------------------------- */

/* Entries in a CUDA_VISIBLE_DEVICES list ("0,2" -> 2, "" -> 0). */
static size_t count_list_entries(const char *s)
{
    size_t n = 0;
    bool in_entry = false;
    for (; *s; s++) {
        if (*s == ',' || *s == ' ') {
            in_entry = false;
        } else if (!in_entry) {
            in_entry = true;
            n++;
        }
    }
    return n;
}

/* True when `text` holds "returned N" for this exact CUresult number. */
static bool mentions_result(const char *text, int result)
{
    char needle[32];
    snprintf(needle, sizeof needle, "returned %d", result);
    const char *p = strstr(text, needle);
    if (!p)
        return false;
    char next = p[strlen(needle)];
    return next < '0' || next > '9';
}

/*
 * Cases, in order:
 *   visible < 0, driver_error not starting with "cu" (a dlopen/dlsym
 *     failure; mgpu_cuda_probe writes driver call failures as
 *     "cuXxx returned N (NAME)", so the prefix tells the two apart):
 *       on_bus > 0  -> "N NVIDIA GPUs on the PCI bus but libcuda.so.1 could
 *                       not be loaded (ERR): install the NVIDIA driver ..."
 *       on_bus == 0 -> "no NVIDIA GPU: none on the PCI bus, and libcuda.so.1
 *                       could not be loaded" (a short note rather than "",
 *                       because the probe promises a note whenever there is
 *                       no driver library, and a user expecting GPUs inside
 *                       a container whose sysfs hides them needs the hint)
 *   visible < 0, a driver call failed (normally cuInit): the toolkit's stub
 *     library, CUDA_VISIBLE_DEVICES, or the usual driver troubles
 *   0 <= visible < on_bus: CUDA_VISIBLE_DEVICES when it lists fewer entries
 *     than the bus holds, else the usual reasons a GPU is not usable here
 *   otherwise ""
 */
void mgpu_cuda_explain(int visible, size_t on_bus, const char *visible_env,
                       const char *driver_error, char *buf, size_t size)
{
    if (!buf || size == 0)
        return;
    buf[0] = '\0';
    const char *gpus = on_bus == 1 ? "GPU" : "GPUs";
    /* Show an empty setting as "" so that it reads as set-but-empty. */
    const char *env_shown = visible_env && visible_env[0] ? visible_env : "\"\"";

    if (visible < 0) {
        const char *why = driver_error && driver_error[0] ? driver_error : "unknown error";
        bool call_failed = strncmp(why, "cu", 2) == 0;
        if (!call_failed) {
            if (on_bus > 0)
                snprintf(buf, size,
                         "%zu NVIDIA %s on the PCI bus but libcuda.so.1 could not be loaded "
                         "(%.100s): install the NVIDIA driver (in a container: run it with "
                         "--gpus all)",
                         on_bus, gpus, why);
            else
                snprintf(buf, size,
                         "no NVIDIA GPU: none on the PCI bus, and libcuda.so.1 could not be "
                         "loaded");
            return;
        }
        if (on_bus == 0) {
            snprintf(buf, size,
                     "no NVIDIA GPU: none on the PCI bus, and the CUDA driver failed to start "
                     "(%.100s)",
                     why);
        } else if (mentions_result(why, 34)) {
            /* CUDA_ERROR_STUB_LIBRARY: the toolkit's link-time stub was
             * found (typically through LD_LIBRARY_PATH), not the driver's. */
            snprintf(buf, size,
                     "%zu NVIDIA %s on the PCI bus but the libcuda found is the CUDA toolkit's "
                     "stub (%.80s): install the NVIDIA driver, or remove the toolkit's stubs "
                     "folder from LD_LIBRARY_PATH",
                     on_bus, gpus, why);
        } else if (visible_env) {
            snprintf(buf, size,
                     "%zu NVIDIA %s on the PCI bus but the CUDA driver failed to start "
                     "(%.80s): CUDA_VISIBLE_DEVICES=%.64s may hide %s",
                     on_bus, gpus, why, env_shown, on_bus == 1 ? "it" : "them all");
        } else {
            snprintf(buf, size,
                     "%zu NVIDIA %s on the PCI bus but the CUDA driver failed to start "
                     "(%.80s): check nvidia-smi and access to /dev/nvidia*, or reboot after "
                     "a driver upgrade",
                     on_bus, gpus, why);
        }
        return;
    }

    if ((size_t)visible >= on_bus)
        return;
    size_t missing = on_bus - (size_t)visible;
    if (visible_env && count_list_entries(visible_env) < on_bus) {
        snprintf(buf, size, "CUDA_VISIBLE_DEVICES=%.64s hides %zu of %zu %s: unset it to use %s",
                 env_shown, missing, on_bus, gpus, on_bus == 1 ? "it" : "them all");
        return;
    }
    /* Most often: a container given only some GPUs (sysfs still shows the
     * host's whole bus), a GPU bound to vfio-pci for a VM, MIG mode without
     * instances, a GPU too old for the installed driver, or one that fell
     * off the bus (Xid errors). */
    const char *causes = "belong to another container or VM, be in MIG mode, be unsupported "
                         "by this driver, or be in a bad state (see nvidia-smi)";
    if (visible == 0)
        snprintf(buf, size,
                 "none of the %zu NVIDIA %s on the PCI bus %s visible to CUDA: %s may %s", on_bus,
                 gpus, on_bus == 1 ? "is" : "are", on_bus == 1 ? "it" : "they", causes);
    else
        snprintf(buf, size, "only %d of %zu NVIDIA %s on the PCI bus %s visible to CUDA: the "
                 "others may %s",
                 visible, on_bus, gpus, visible == 1 ? "is" : "are", causes);
}

/* ---- the probe ---------------------------------------------------------- */

/* CUDA numbers GPUs fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, so
 * the indices in CUDA_VISIBLE_DEVICES may name other GPUs than nvidia-smi's
 * numbers (which follow the PCI bus). Worth saying only when the setting
 * actually hides some GPUs by index. */
static void note_device_order(mgpu_device_list *list, int visible, size_t on_bus,
                              const char *visible_env)
{
    const char *order = getenv("CUDA_DEVICE_ORDER");
    if (!visible_env || visible < 0 || (size_t)visible >= on_bus || on_bus < 2)
        return;
    if (order && strcmp(order, "PCI_BUS_ID") == 0)
        return;
    if (visible_env[0] < '0' || visible_env[0] > '9')
        return; /* UUIDs ("GPU-...", "MIG-...") name GPUs unambiguously */
    add_note(list,
             "CUDA_VISIBLE_DEVICES indices follow CUDA's fastest-first order, which may differ "
             "from nvidia-smi's; set CUDA_DEVICE_ORDER=PCI_BUS_ID to use nvidia-smi's numbers");
}

/* Opens the driver library and resolves the entry points. On failure
 * returns NULL and leaves the reason in `why`. */
static void *open_driver(cuda_api *api, char *why, size_t why_size)
{
    memset(api, 0, sizeof *api);
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(why, why_size, "%s", e ? e : "libcuda.so.1: not found");
        /* The unversioned name is the development symlink; keep the first
         * error, which names the library users are told to install. */
        lib = dlopen("libcuda.so", RTLD_NOW | RTLD_LOCAL);
        if (!lib)
            return NULL;
    }
    static const struct {
        const char *name;
        size_t offset;
    } required[] = {
        {"cuInit", offsetof(cuda_api, init)},
        {"cuDeviceGetCount", offsetof(cuda_api, device_get_count)},
        {"cuDeviceGet", offsetof(cuda_api, device_get)},
        {"cuDeviceGetName", offsetof(cuda_api, device_get_name)},
        {"cuDeviceTotalMem_v2", offsetof(cuda_api, device_total_mem)},
        {"cuDeviceGetAttribute", offsetof(cuda_api, device_get_attribute)},
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!load_symbol(lib, required[i].name, (char *)api + required[i].offset)) {
            snprintf(why, why_size, "the library lacks %s: driver too old", required[i].name);
            dlclose(lib);
            return NULL;
        }
    }
    load_symbol(lib, "cuGetErrorName", &api->get_error_name);
    load_symbol(lib, "cuDeviceGetPCIBusId", &api->device_get_pci_bus_id);
    load_symbol(lib, "cuDevicePrimaryCtxRetain", &api->primary_ctx_retain);
    /* _v2 since CUDA 11; same signature as the plain one it replaced. */
    if (!load_symbol(lib, "cuDevicePrimaryCtxRelease_v2", &api->primary_ctx_release))
        load_symbol(lib, "cuDevicePrimaryCtxRelease", &api->primary_ctx_release);
    load_symbol(lib, "cuCtxPushCurrent_v2", &api->ctx_push_current);
    load_symbol(lib, "cuCtxPopCurrent_v2", &api->ctx_pop_current);
    load_symbol(lib, "cuMemGetInfo_v2", &api->mem_get_info);
    load_symbol(lib, "cuDeviceCanAccessPeer", &api->device_can_access_peer);
    return lib;
}

/* Free memory needs a context: retain the primary one (the context every
 * CUDA user of this process shares), make it current just long enough to
 * ask, and release it. The figure is taken with that context alive, so it
 * already excludes the context's own footprint. Returns 0 and adds a note
 * when it cannot be measured: a GPU we cannot create a context on (busy in
 * exclusive mode, out of memory) is not usable anyway. */
static uint64_t measure_free_bytes(mgpu_device_list *list, const cuda_api *api, CUdevice dev,
                                   int ordinal)
{
    if (!api->primary_ctx_retain || !api->primary_ctx_release || !api->ctx_push_current ||
        !api->ctx_pop_current || !api->mem_get_info) {
        add_note(list, "cuda:%d: free memory unknown: the driver lacks the context entry points",
                 ordinal);
        return 0;
    }
    CUcontext ctx = NULL;
    CUresult r = api->primary_ctx_retain(&ctx, dev);
    if (r != CUDA_SUCCESS) {
        note_failure(list, api, ordinal, "free memory unknown", "cuDevicePrimaryCtxRetain", r);
        return 0;
    }
    uint64_t free_bytes = 0;
    r = api->ctx_push_current(ctx);
    if (r != CUDA_SUCCESS) {
        note_failure(list, api, ordinal, "free memory unknown", "cuCtxPushCurrent_v2", r);
    } else {
        size_t free_now = 0, total = 0;
        r = api->mem_get_info(&free_now, &total);
        if (r == CUDA_SUCCESS)
            free_bytes = free_now;
        else
            note_failure(list, api, ordinal, "free memory unknown", "cuMemGetInfo_v2", r);
        CUcontext popped = NULL;
        r = api->ctx_pop_current(&popped);
        if (r != CUDA_SUCCESS)
            note_failure(list, api, ordinal, "context", "cuCtxPopCurrent_v2", r);
    }
    r = api->primary_ctx_release(dev);
    if (r != CUDA_SUCCESS)
        note_failure(list, api, ordinal, "context", "cuDevicePrimaryCtxRelease", r);
    return free_bytes;
}

static void fill_pci_bus_id(mgpu_device_list *list, const cuda_api *api, CUdevice dev,
                            mgpu_device *d)
{
    if (api->device_get_pci_bus_id &&
        api->device_get_pci_bus_id(d->pci_bus_id, (int)sizeof d->pci_bus_id, dev) ==
            CUDA_SUCCESS) {
        d->pci_bus_id[sizeof d->pci_bus_id - 1] = '\0';
        return;
    }
    /* Same "domain:bus:device.function" form, from the attributes. */
    int domain = 0, bus = 0, device = 0;
    CUresult r = api->device_get_attribute(&domain, CU_ATTR_PCI_DOMAIN_ID, dev);
    if (r == CUDA_SUCCESS)
        r = api->device_get_attribute(&bus, CU_ATTR_PCI_BUS_ID, dev);
    if (r == CUDA_SUCCESS)
        r = api->device_get_attribute(&device, CU_ATTR_PCI_DEVICE_ID, dev);
    if (r == CUDA_SUCCESS) {
        snprintf(d->pci_bus_id, sizeof d->pci_bus_id, "%04x:%02x:%02x.0",
                 (unsigned)domain & 0xffffu, (unsigned)bus & 0xffu, (unsigned)device & 0xffu);
    } else {
        d->pci_bus_id[0] = '\0';
        note_failure(list, api, d->ordinal, "PCI bus id unknown", "cuDeviceGetAttribute", r);
    }
}

/* Appends cuda:ordinal; returns false when the device had to be skipped. */
static bool add_gpu(mgpu_device_list *list, const cuda_api *api, int ordinal, CUdevice *out_dev)
{
    CUdevice dev = 0;
    CUresult r = api->device_get(&dev, ordinal);
    if (r != CUDA_SUCCESS) {
        note_failure(list, api, ordinal, "skipped", "cuDeviceGet", r);
        return false;
    }
    mgpu_device *d = &list->devices[list->count];
    memset(d, 0, sizeof *d);
    d->kind = MGPU_DEVICE_CUDA;
    d->ordinal = ordinal;
    snprintf(d->name, sizeof d->name, "cuda:%d", ordinal);

    char name[256] = "";
    r = api->device_get_name(name, (int)sizeof name, dev);
    name[sizeof name - 1] = '\0';
    if (r != CUDA_SUCCESS) {
        note_failure(list, api, ordinal, "name unknown", "cuDeviceGetName", r);
        snprintf(name, sizeof name, "NVIDIA GPU");
    }
    copy_field(d->description, sizeof d->description, name);

    size_t total = 0;
    r = api->device_total_mem(&total, dev);
    if (r != CUDA_SUCCESS)
        note_failure(list, api, ordinal, "memory size unknown", "cuDeviceTotalMem_v2", r);
    d->total_bytes = total;

    int major = 0, minor = 0;
    r = api->device_get_attribute(&major, CU_ATTR_COMPUTE_CAPABILITY_MAJOR, dev);
    if (r == CUDA_SUCCESS)
        r = api->device_get_attribute(&minor, CU_ATTR_COMPUTE_CAPABILITY_MINOR, dev);
    if (r != CUDA_SUCCESS) {
        major = minor = 0;
        note_failure(list, api, ordinal, "compute capability unknown", "cuDeviceGetAttribute", r);
    }
    d->compute_major = major;
    d->compute_minor = minor;

    fill_pci_bus_id(list, api, dev, d);
    d->free_bytes = total ? measure_free_bytes(list, api, dev, ordinal) : 0;
    d->host_link_bytes_per_s = 0; /* unknown: measuring it is a later step */
    d->simulated = false;
    list->count++;
    *out_dev = dev;
    return true;
}

static double peer_rate(const mgpu_device *a, const mgpu_device *b)
{
    if (a->host_link_bytes_per_s > 0 && b->host_link_bytes_per_s > 0)
        return a->host_link_bytes_per_s < b->host_link_bytes_per_s ? a->host_link_bytes_per_s
                                                                    : b->host_link_bytes_per_s;
    return CUDA_PEER_PLACEHOLDER_BYTES_PER_S;
}

mgpu_status mgpu_cuda_probe(mgpu_device_list *list, mgpu_error *err)
{
    if (!list)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "cuda probe: no device list");
    if (list->count > MGPU_MAX_DEVICES || list->note_count > CUDA_MAX_NOTES)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "cuda probe: corrupt device list");

    size_t on_bus = mgpu_pci_count_nvidia_gpus(SYSFS_PCI_DEVICES);
    const char *visible_env = getenv("CUDA_VISIBLE_DEVICES");
    char note[sizeof list->notes[0]];
    char why[192] = "";

    cuda_api api;
    void *lib = open_driver(&api, why, sizeof why);
    if (!lib) {
        mgpu_cuda_explain(-1, on_bus, visible_env, why, note, sizeof note);
        add_note(list, "%s", note);
        return MGPU_OK;
    }

    int visible = -1;
    CUresult r = api.init(0);
    if (r != CUDA_SUCCESS) {
        describe_failure(&api, "cuInit", r, why, sizeof why);
    } else if ((r = api.device_get_count(&visible)) != CUDA_SUCCESS) {
        describe_failure(&api, "cuDeviceGetCount", r, why, sizeof why);
        visible = -1;
    } else if (visible < 0) {
        visible = 0;
    }
    mgpu_cuda_explain(visible, on_bus, visible_env, why, note, sizeof note);
    add_note(list, "%s", note);
    note_device_order(list, visible, on_bus, visible_env);

    /* Indices into list->devices of the GPUs added, by CUDA ordinal order. */
    size_t index[MGPU_MAX_DEVICES];
    CUdevice handle[MGPU_MAX_DEVICES];
    size_t added = 0;
    size_t room = list->count + CUDA_RESERVED_SLOTS < MGPU_MAX_DEVICES
                      ? MGPU_MAX_DEVICES - CUDA_RESERVED_SLOTS - list->count
                      : 0;
    if (visible > 0 && (size_t)visible > room)
        add_note(list, "only %zu of %d CUDA GPUs listed: mgpu holds at most %d devices", room,
                 visible, (int)MGPU_MAX_DEVICES);
    for (int i = 0; i < visible && added < room; i++) {
        size_t at = list->count;
        if (add_gpu(list, &api, i, &handle[added]))
            index[added++] = at;
    }

    /* Peer access for every ordered pair: it can be one-way. */
    for (size_t a = 0; a < added; a++) {
        for (size_t b = 0; b < added; b++) {
            if (a == b)
                continue;
            int can = 0;
            if (api.device_can_access_peer &&
                (r = api.device_can_access_peer(&can, handle[a], handle[b])) != CUDA_SUCCESS) {
                char why_peer[128];
                describe_failure(&api, "cuDeviceCanAccessPeer", r, why_peer, sizeof why_peer);
                add_note(list, "%s -> %s: peer access unknown: %s", list->devices[index[a]].name,
                         list->devices[index[b]].name, why_peer);
                can = 0;
            }
            list->peer_bytes_per_s[index[a]][index[b]] =
                can ? peer_rate(&list->devices[index[a]], &list->devices[index[b]]) : 0.0;
        }
    }

    dlclose(lib);
    return MGPU_OK;
}
