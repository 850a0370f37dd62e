/* CUDA discovery without a GPU: the PCI count on fake sysfs trees, every
 * case of the "why are my GPUs missing" note, and the real probe on a
 * machine that may have no driver (it must then add no device and at most
 * sensible notes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <string.h>

#include "device/cuda_probe.h"
#include "test_util.h"

/* ---- fake sysfs --------------------------------------------------------- */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* DIR/NAME/{vendor,class}; either may be NULL to leave that file out. */
static void add_pci_device(const char *dir, const char *name, const char *vendor,
                           const char *pci_class)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(mkdir(path, 0755), 0);
    if (vendor) {
        snprintf(path, sizeof path, "%s/%s/vendor", dir, name);
        write_text(path, vendor);
    }
    if (pci_class) {
        snprintf(path, sizeof path, "%s/%s/class", dir, name);
        write_text(path, pci_class);
    }
}

/* Removes DIR and the one level of device folders under it. */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s/vendor", dir, e->d_name);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s/class", dir, e->d_name);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (rmdir(path) != 0)
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static const char *fresh_dir(const char *name)
{
    const char *dir = test_path(name);
    remove_tree(dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    return dir;
}

static void test_pci_count_mixed_bus(void **state)
{
    (void)state;
    const char *dir = fresh_dir("pci-mixed");
    add_pci_device(dir, "0000:01:00.0", "0x10de\n", "0x030000\n"); /* NVIDIA VGA */
    add_pci_device(dir, "0000:01:00.1", "0x10de\n", "0x040300\n"); /* its HDMI audio */
    add_pci_device(dir, "0000:41:00.0", "0x10de\n", "0x030200\n"); /* NVIDIA 3D controller */
    add_pci_device(dir, "0000:02:00.0", "0x1002\n", "0x030000\n"); /* AMD GPU */
    add_pci_device(dir, "0000:00:1f.0", "0x8086\n", "0x060100\n"); /* Intel bridge */
    add_pci_device(dir, "0000:c1:00.0", "0x10de\n", "0x068000\n"); /* NVSwitch */
    add_pci_device(dir, "0000:03:00.0", "0x10de\n", NULL);         /* class unreadable */
    add_pci_device(dir, "0000:04:00.0", NULL, "0x030000\n");       /* vendor unreadable */
    add_pci_device(dir, "0000:05:00.0", "garbage\n", "0x030000\n");
    char stray[1024];
    snprintf(stray, sizeof stray, "%s/not-a-device", dir);
    write_text(stray, "x");
    assert_int_equal(mgpu_pci_count_nvidia_gpus(dir), 2);
    remove_tree(dir);
}

static void test_pci_count_each_kind(void **state)
{
    (void)state;
    static const struct {
        const char *vendor, *pci_class;
        size_t expect;
    } cases[] = {
        {"0x10de\n", "0x030000\n", 1}, /* VGA compatible controller */
        {"0x10de\n", "0x030200\n", 1}, /* 3D controller (data-centre GPUs) */
        {"0x10de", "0x030000", 1},     /* no trailing newline */
        {"0x10de\n", "0x040300\n", 0}, /* audio function: not a GPU */
        {"0x1002\n", "0x030000\n", 0}, /* AMD */
        {"0x8086\n", "0x030000\n", 0}, /* Intel */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *dir = fresh_dir("pci-one");
        add_pci_device(dir, "0000:01:00.0", cases[i].vendor, cases[i].pci_class);
        assert_int_equal(mgpu_pci_count_nvidia_gpus(dir), cases[i].expect);
        remove_tree(dir);
    }
}

static void test_pci_count_missing_or_empty(void **state)
{
    (void)state;
    const char *missing = test_path("pci-missing");
    remove_tree(missing);
    assert_int_equal(mgpu_pci_count_nvidia_gpus(missing), 0);
    assert_int_equal(mgpu_pci_count_nvidia_gpus(NULL), 0);
    const char *empty = fresh_dir("pci-empty");
    assert_int_equal(mgpu_pci_count_nvidia_gpus(empty), 0);
    remove_tree(empty);
}

/* ---- the note ----------------------------------------------------------- */

static char note[256];

static const char *explain(int visible, size_t on_bus, const char *env, const char *error)
{
    memset(note, 'x', sizeof note);
    mgpu_cuda_explain(visible, on_bus, env, error, note, sizeof note);
    assert_non_null(memchr(note, '\0', sizeof note));
    return note;
}

static void assert_contains(const char *text, const char *part)
{
    if (!strstr(text, part))
        fail_msg("\"%s\" lacks \"%s\"", text, part);
}

static const char DLERROR[] =
    "libcuda.so.1: cannot open shared object file: No such file or directory";

static void test_explain_no_library(void **state)
{
    (void)state;
    const char *n = explain(-1, 2, NULL, DLERROR);
    assert_contains(n, "2 NVIDIA GPUs on the PCI bus but libcuda.so.1 could not be loaded "
                       "(libcuda.so.1: cannot open shared object file: No such file or "
                       "directory): install the NVIDIA driver");
    assert_contains(n, "--gpus all");

    n = explain(-1, 1, NULL, DLERROR);
    assert_contains(n, "1 NVIDIA GPU on the PCI bus but libcuda.so.1 could not be loaded");

    /* A driver too old to export the _v2 entry points reads as not loaded. */
    n = explain(-1, 1, NULL, "the library lacks cuDeviceTotalMem_v2: driver too old");
    assert_contains(n, "could not be loaded (the library lacks cuDeviceTotalMem_v2");

    /* No GPU and no driver: a short note, no advice to install anything. */
    n = explain(-1, 0, NULL, DLERROR);
    assert_string_equal(n, "no NVIDIA GPU: none on the PCI bus, and libcuda.so.1 could not "
                           "be loaded");
    n = explain(-1, 0, "0", NULL);
    assert_string_equal(n, "no NVIDIA GPU: none on the PCI bus, and libcuda.so.1 could not "
                           "be loaded");

    /* No reason given: still a sensible load-failure note. */
    n = explain(-1, 3, NULL, NULL);
    assert_contains(n, "3 NVIDIA GPUs on the PCI bus but libcuda.so.1 could not be loaded "
                       "(unknown error)");
}

static void test_explain_init_failed(void **state)
{
    (void)state;
    const char *n = explain(-1, 2, NULL, "cuInit returned 999 (CUDA_ERROR_UNKNOWN)");
    assert_contains(n, "2 NVIDIA GPUs on the PCI bus but the CUDA driver failed to start "
                       "(cuInit returned 999 (CUDA_ERROR_UNKNOWN))");
    assert_contains(n, "nvidia-smi");
    assert_contains(n, "/dev/nvidia*");

    n = explain(-1, 2, NULL, "cuInit returned 803 (CUDA_ERROR_SYSTEM_DRIVER_MISMATCH)");
    assert_contains(n, "reboot after a driver upgrade");

    /* A CUDA_VISIBLE_DEVICES that names no GPU makes cuInit fail. */
    n = explain(-1, 2, "", "cuInit returned 100 (CUDA_ERROR_NO_DEVICE)");
    assert_contains(n, "failed to start (cuInit returned 100 (CUDA_ERROR_NO_DEVICE))");
    assert_contains(n, "CUDA_VISIBLE_DEVICES=\"\" may hide them all");
    n = explain(-1, 1, "7", "cuInit returned 100 (CUDA_ERROR_NO_DEVICE)");
    assert_contains(n, "1 NVIDIA GPU on the PCI bus");
    assert_contains(n, "CUDA_VISIBLE_DEVICES=7 may hide it");

    /* cuDeviceGetCount failures are driver call failures too. */
    n = explain(-1, 4, NULL, "cuDeviceGetCount returned 3");
    assert_contains(n, "4 NVIDIA GPUs on the PCI bus but the CUDA driver failed to start "
                       "(cuDeviceGetCount returned 3)");

    /* Driver present, no GPU: e.g. a container with the library mounted. */
    n = explain(-1, 0, NULL, "cuInit returned 100 (CUDA_ERROR_NO_DEVICE)");
    assert_string_equal(n, "no NVIDIA GPU: none on the PCI bus, and the CUDA driver failed to "
                           "start (cuInit returned 100 (CUDA_ERROR_NO_DEVICE))");
}

static void test_explain_stub_library(void **state)
{
    (void)state;
    const char *n = explain(-1, 2, NULL, "cuInit returned 34 (CUDA_ERROR_STUB_LIBRARY)");
    assert_contains(n, "2 NVIDIA GPUs on the PCI bus but the libcuda found is the CUDA "
                       "toolkit's stub (cuInit returned 34 (CUDA_ERROR_STUB_LIBRARY))");
    assert_contains(n, "LD_LIBRARY_PATH");
    /* Without cuGetErrorName's text the number alone identifies it... */
    n = explain(-1, 1, NULL, "cuInit returned 34");
    assert_contains(n, "toolkit's stub");
    /* ...but only that exact number. */
    n = explain(-1, 1, NULL, "cuInit returned 346");
    assert_null(strstr(n, "stub"));
    /* With no GPU on the bus, the plain no-GPU note is the point. */
    n = explain(-1, 0, NULL, "cuInit returned 34 (CUDA_ERROR_STUB_LIBRARY)");
    assert_contains(n, "no NVIDIA GPU: none on the PCI bus");
}

static void test_explain_hidden_by_env(void **state)
{
    (void)state;
    const char *n = explain(1, 2, "1", NULL);
    assert_contains(n, "CUDA_VISIBLE_DEVICES=1 hides 1 of 2 GPUs");
    assert_contains(n, "unset it");

    n = explain(2, 8, "0,3", NULL);
    assert_contains(n, "CUDA_VISIBLE_DEVICES=0,3 hides 6 of 8 GPUs");

    n = explain(1, 4, "GPU-5f1c2a3b-0000-0000-0000-000000000000", NULL);
    assert_contains(n, "CUDA_VISIBLE_DEVICES=GPU-5f1c2a3b-0000-0000-0000-000000000000 hides "
                       "3 of 4 GPUs");

    /* Listing every GPU hides none: the other explanation applies. */
    n = explain(1, 2, "0,1", NULL);
    assert_null(strstr(n, "hides"));
    assert_contains(n, "only 1 of 2 NVIDIA GPUs on the PCI bus is visible to CUDA");

    /* A very long value is cut, and the note stays whole. */
    char long_env[600];
    memset(long_env, '1', sizeof long_env - 1);
    long_env[sizeof long_env - 1] = '\0';
    n = explain(0, 2, long_env, NULL);
    assert_true(strlen(n) < 200);
}

static void test_explain_missing_without_env(void **state)
{
    (void)state;
    const char *n = explain(1, 2, NULL, NULL);
    assert_contains(n, "only 1 of 2 NVIDIA GPUs on the PCI bus is visible to CUDA: the others "
                       "may belong to another container or VM");
    assert_contains(n, "MIG");
    assert_contains(n, "nvidia-smi");

    n = explain(2, 4, NULL, NULL);
    assert_contains(n, "only 2 of 4 NVIDIA GPUs on the PCI bus are visible to CUDA");

    n = explain(0, 2, NULL, NULL);
    assert_contains(n, "none of the 2 NVIDIA GPUs on the PCI bus are visible to CUDA: they may");
    n = explain(0, 1, NULL, NULL);
    assert_contains(n, "none of the 1 NVIDIA GPU on the PCI bus is visible to CUDA: it may");
}

static void test_explain_nothing_to_say(void **state)
{
    (void)state;
    assert_string_equal(explain(2, 2, NULL, NULL), "");
    assert_string_equal(explain(2, 2, "0,1", NULL), "");
    assert_string_equal(explain(1, 1, "0", NULL), "");
    assert_string_equal(explain(0, 0, NULL, NULL), "");
    /* More visible than counted: MIG instances, or a sysfs we cannot read. */
    assert_string_equal(explain(3, 1, NULL, NULL), "");
    assert_string_equal(explain(2, 0, NULL, NULL), "");
}

static void test_explain_small_buffers(void **state)
{
    (void)state;
    char small[16];
    memset(small, 'x', sizeof small);
    mgpu_cuda_explain(1, 2, "1", NULL, small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, "CUDA_VISIBLE_DE", sizeof small);

    char one = 'x';
    mgpu_cuda_explain(-1, 2, NULL, DLERROR, &one, 1);
    assert_int_equal(one, '\0');
    mgpu_cuda_explain(-1, 2, NULL, DLERROR, NULL, 0); /* must not crash */
}

/* ---- the probe on this machine ------------------------------------------ */

static void assert_sensible_note(const char *text)
{
    assert_non_null(memchr(text, '\0', 256));
    assert_true(strlen(text) > 10);
    if (!strstr(text, "NVIDIA GPU") && !strstr(text, "CUDA") && !strstr(text, "cuda:"))
        fail_msg("note \"%s\" says nothing about GPUs", text);
}

static void test_probe_here(void **state)
{
    (void)state;
    static mgpu_device_list list; /* large: keep it off the stack */
    memset(&list, 0, sizeof list);
    /* A device already listed must stay as it is. */
    list.devices[0].kind = MGPU_DEVICE_CPU;
    snprintf(list.devices[0].name, sizeof list.devices[0].name, "cpu");
    list.count = 1;

    mgpu_error err = {0};
    assert_int_equal(mgpu_cuda_probe(&list, &err), MGPU_OK);
    assert_string_equal(list.devices[0].name, "cpu");
    assert_int_equal(list.devices[0].kind, MGPU_DEVICE_CPU);
    assert_true(list.note_count <= 8);
    for (size_t i = 0; i < list.note_count; i++)
        assert_sensible_note(list.notes[i]);

    size_t on_bus = mgpu_pci_count_nvidia_gpus("/sys/bus/pci/devices");
    if (on_bus == 0 && list.count == 1) {
        /* The expected case on a build machine: no GPU. With no driver the
         * probe says so in one note; with a driver (or its stub) and no GPU
         * it says the driver found none. */
        assert_true(list.note_count <= 1);
        if (list.note_count == 1)
            assert_contains(list.notes[0], "no NVIDIA GPU");
    }
    /* Whatever the machine: every GPU added is well-formed. */
    for (size_t i = 1; i < list.count; i++) {
        const mgpu_device *d = &list.devices[i];
        char name[32];
        snprintf(name, sizeof name, "cuda:%d", d->ordinal);
        assert_int_equal(d->kind, MGPU_DEVICE_CUDA);
        assert_true(d->ordinal >= 0 && d->ordinal < MGPU_MAX_DEVICES);
        assert_string_equal(d->name, name);
        assert_false(d->simulated);
        assert_true(d->free_bytes <= d->total_bytes);
        assert_true(list.peer_bytes_per_s[i][i] == 0.0);
    }
}

static void test_probe_full_list(void **state)
{
    (void)state;
    static mgpu_device_list list;
    memset(&list, 0, sizeof list);
    list.count = MGPU_MAX_DEVICES - 1;
    list.note_count = 8; /* no room for notes either */
    mgpu_error err = {0};
    assert_int_equal(mgpu_cuda_probe(&list, &err), MGPU_OK);
    assert_int_equal(list.count, MGPU_MAX_DEVICES - 1);
    assert_int_equal(list.note_count, 8);
}

static void test_probe_bad_arguments(void **state)
{
    (void)state;
    mgpu_error err = {0};
    assert_int_equal(mgpu_cuda_probe(NULL, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(err.status, MGPU_ERR_ARGUMENT);
    assert_true(strlen(err.message) > 0);
    assert_int_equal(mgpu_cuda_probe(NULL, NULL), MGPU_ERR_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pci_count_mixed_bus),
        cmocka_unit_test(test_pci_count_each_kind),
        cmocka_unit_test(test_pci_count_missing_or_empty),
        cmocka_unit_test(test_explain_no_library),
        cmocka_unit_test(test_explain_init_failed),
        cmocka_unit_test(test_explain_stub_library),
        cmocka_unit_test(test_explain_hidden_by_env),
        cmocka_unit_test(test_explain_missing_without_env),
        cmocka_unit_test(test_explain_nothing_to_say),
        cmocka_unit_test(test_explain_small_buffers),
        cmocka_unit_test(test_probe_here),
        cmocka_unit_test(test_probe_full_list),
        cmocka_unit_test(test_probe_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
