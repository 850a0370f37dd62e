/* The device inventory: simulated specs, link bandwidths, RAM and cgroup
 * limits on fake /proc and /sys trees, and discovery on this machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "device/cpu_memory.h"
#include "mgpu/device.h"
#include "test_util.h"

static const uint64_t GiB = UINT64_C(1) << 30;

static void test_simulate(void **state)
{
    (void)state;
    mgpu_device_list l;
    mgpu_error err = {0};
    assert_int_equal(mgpu_devices_simulate("cuda:0=24gib@25gbps, cuda:1=12gib/10gib@6.8gbps,"
                                           "cpu=64gib,disk@1.5gbps,cuda:0+cuda:1@50gbps",
                                           &l, &err),
                     MGPU_OK);
    assert_int_equal(l.count, 4);
    const mgpu_device *c0 = mgpu_device_find(&l, "cuda:0"), *c1 = mgpu_device_find(&l, "cuda:1");
    assert_non_null(c0);
    assert_int_equal(c0->kind, MGPU_DEVICE_CUDA);
    assert_int_equal(c0->total_bytes, 24 * GiB);
    assert_int_equal(c0->free_bytes, 24 * GiB);
    assert_true(c0->host_link_bytes_per_s == 25e9);
    assert_int_equal(c1->free_bytes, 10 * GiB);
    assert_true(c1->host_link_bytes_per_s == 6.8e9);
    assert_true(c1->simulated);
    const mgpu_device *disk = mgpu_device_find(&l, "disk");
    assert_true(disk->host_link_bytes_per_s == 1.5e9);
    assert_int_equal(disk->total_bytes, UINT64_MAX);
    int i0 = mgpu_device_index(&l, "cuda:0"), i1 = mgpu_device_index(&l, "cuda:1");
    int cpu = mgpu_device_index(&l, "cpu"), id = mgpu_device_index(&l, "disk");
    /* peer link both ways; through host the slower link; cpu is the host */
    assert_true(mgpu_device_copy_bytes_per_s(&l, i1, i0) == 50e9);
    assert_true(mgpu_device_copy_bytes_per_s(&l, i0, i1) == 50e9);
    assert_true(mgpu_device_copy_bytes_per_s(&l, cpu, i1) == 6.8e9);
    assert_true(mgpu_device_copy_bytes_per_s(&l, id, i0) == 1.5e9);
    assert_true(isinf(mgpu_device_copy_bytes_per_s(&l, i0, i0)));
    char names[128];
    mgpu_device_list_names(&l, names, sizeof names);
    assert_string_equal(names, "cuda:0, cuda:1, cpu, disk");

    /* a cpu is added when not named; unknown bandwidth stays unknown */
    assert_int_equal(mgpu_devices_simulate("cuda:3=8gib", &l, &err), MGPU_OK);
    assert_int_equal(l.count, 2);
    assert_int_equal(mgpu_device_find(&l, "cpu")->total_bytes, 64 * GiB);
    assert_int_equal(mgpu_device_find(&l, "cuda:3")->ordinal, 3);
    assert_true(mgpu_device_copy_bytes_per_s(&l, 1, 0) == 0.0);
}

static void expect_spec_error(const char *spec, const char *needle)
{
    mgpu_device_list l;
    mgpu_error err = {0};
    assert_int_equal(mgpu_devices_simulate(spec, &l, &err), MGPU_ERR_ARGUMENT);
    if (!strstr(err.message, needle))
        fail_msg("'%s': '%s' lacks '%s'", spec, err.message, needle);
}

static void test_simulate_errors(void **state)
{
    (void)state;
    expect_spec_error("", "empty device list");
    expect_spec_error("mps=8gib", "unknown device 'mps' (use cpu, cuda:N or disk)");
    expect_spec_error("cuda:0", "expected '=' and a size");
    expect_spec_error("cuda:0=8gx", "unknown size unit 'gx'");
    expect_spec_error("cuda:0=8", "size needs a unit");
    expect_spec_error("cuda:0=8gib/9gib", "free memory larger than total");
    expect_spec_error("cuda:0=8gib@5gbit", "unknown bandwidth unit 'gbit'");
    expect_spec_error("cuda:0=8gib,cuda:0=4gib", "device 'cuda:0' given twice");
    expect_spec_error("cuda:0=8gib,cuda:0+cuda:5@10gbps", "peer link joins two different GPUs");
    expect_spec_error("cuda:0=8gib,cuda:0+cuda:1", "needs a bandwidth");
    expect_spec_error("cpu=8gib@10gbps", "the cpu is the host");
    expect_spec_error("disk=1tb", "the disk has no size");
    expect_spec_error("cuda:0=8gib,,cpu=1gib", "empty entry");
    /* the column points into the spec */
    expect_spec_error("cuda:0=8gib,cuda:1=4xb", "at column 20");
}

static void write_file(const char *dir, const char *rel, const char *text)
{
    char path[1024], buf[1024];
    snprintf(path, sizeof path, "%s%s", dir, rel);
    /* make parent folders */
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + strlen(dir) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0755);
            *p = '/';
        }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_cpu_memory(void **state)
{
    (void)state;
    char root[1024];
    snprintf(root, sizeof root, "%s", test_path("fakeroot"));
    mkdir(root, 0755);
    write_file(root, "/proc/meminfo",
               "MemTotal:       33554432 kB\nMemFree:        1000 kB\nMemAvailable:   16777216 kB\n");
    uint64_t total, avail;
    mgpu_error err = {0};
    /* no cgroup files: /proc/meminfo as is */
    assert_int_equal(mgpu_cpu_memory(root, &total, &avail, &err), MGPU_OK);
    assert_int_equal(total, 32 * GiB);
    assert_int_equal(avail, 16 * GiB);
    /* cgroup v2 limit of 8 GiB with 2 GiB in use: total 8, available 6 */
    write_file(root, "/proc/self/cgroup", "0::/job\n");
    write_file(root, "/sys/fs/cgroup/job/memory.max", "8589934592\n");
    write_file(root, "/sys/fs/cgroup/job/memory.current", "2147483648\n");
    assert_int_equal(mgpu_cpu_memory(root, &total, &avail, &err), MGPU_OK);
    assert_int_equal(total, 8 * GiB);
    assert_int_equal(avail, 6 * GiB);
    /* "max" means no limit */
    write_file(root, "/sys/fs/cgroup/job/memory.max", "max\n");
    assert_int_equal(mgpu_cpu_memory(root, &total, &avail, &err), MGPU_OK);
    assert_int_equal(total, 32 * GiB);
    /* cgroup v1 limit */
    write_file(root, "/proc/self/cgroup", "4:memory:/v1job\n1:cpu:/x\n");
    write_file(root, "/sys/fs/cgroup/memory/v1job/memory.limit_in_bytes", "4294967296\n");
    write_file(root, "/sys/fs/cgroup/memory/v1job/memory.usage_in_bytes", "1073741824\n");
    assert_int_equal(mgpu_cpu_memory(root, &total, &avail, &err), MGPU_OK);
    assert_int_equal(total, 4 * GiB);
    assert_int_equal(avail, 3 * GiB);
    /* a v1 "unlimited" value near 2^63 is no limit */
    write_file(root, "/sys/fs/cgroup/memory/v1job/memory.limit_in_bytes", "9223372036854771712\n");
    assert_int_equal(mgpu_cpu_memory(root, &total, &avail, &err), MGPU_OK);
    assert_int_equal(total, 32 * GiB);
    /* a broken meminfo is an error that names the file */
    write_file(root, "/proc/meminfo", "nothing here\n");
    assert_int_equal(mgpu_cpu_memory(root, &total, &avail, &err), MGPU_ERR_FORMAT);
    assert_non_null(strstr(err.message, "meminfo"));
}

static void test_discover(void **state)
{
    (void)state;
    mgpu_device_list l;
    mgpu_error err = {0};
    assert_int_equal(mgpu_devices_discover(&l, &err), MGPU_OK);
    const mgpu_device *cpu = mgpu_device_find(&l, "cpu");
    assert_non_null(cpu);
    assert_true(cpu->total_bytes > 0 && cpu->free_bytes <= cpu->total_bytes);
    assert_false(cpu->simulated);
    assert_non_null(mgpu_device_find(&l, "disk"));
}

static void test_disk_measure(void **state)
{
    (void)state;
    const char *path = test_path("disk.bin");
    FILE *f = fopen(path, "wb");
    static char block[1 << 16];
    for (int i = 0; i < 64; i++) /* 4 MiB */
        fwrite(block, 1, sizeof block, f);
    fclose(f);
    double bw = 0;
    bool direct;
    mgpu_error err = {0};
    assert_int_equal(mgpu_disk_measure_read(path, UINT64_C(1) << 30, &bw, &direct, &err), MGPU_OK);
    assert_true(bw > 0);
    /* reading less than the file is allowed */
    assert_int_equal(mgpu_disk_measure_read(path, 1 << 20, &bw, &direct, &err), MGPU_OK);
    remove(path);
    assert_int_equal(mgpu_disk_measure_read(path, 1 << 20, &bw, &direct, &err), MGPU_ERR_IO);
    assert_non_null(strstr(err.message, "disk.bin"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simulate),
        cmocka_unit_test(test_simulate_errors),
        cmocka_unit_test(test_cpu_memory),
        cmocka_unit_test(test_discover),
        cmocka_unit_test(test_disk_measure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
