/* The planner against ALLOCATION.md: every example on a full-size FLUX.1-dev
 * Q8_0 (11.79 GiB, written sparse), the original's bugs as regressions,
 * pinned heads by role, the overlap rule as golden patterns, and plans that
 * cannot fit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mgpu/plan.h"
#include "mgpu/safetensors.h"
#include "synth_write.h"
#include "test_util.h"

static const double GIB = 1073741824.0;
static const char *const DEVICES = "cuda:0=24gib@25gbps,cuda:1=12gib@6.8gbps,cpu=64gib";

static char flux_path[1024];
static mgpu_model *flux;
static uint64_t flux_largest; /* bytes of the largest module: the unit of placement */

static int setup(void **state)
{
    (void)state;
    snprintf(flux_path, sizeof flux_path, "%s", test_path("plan-flux.gguf"));
    synth_options o = {.arch = "flux-dev", .scale = SYNTH_SCALE_FULL, .gguf = 1,
                       .dtype = MGPU_DTYPE_Q8_0, .seed = 1, .prefix = "", .out = flux_path,
                       .sparse = 1};
    mgpu_error err = {0};
    if (synth_write(&o, &err) != MGPU_OK || mgpu_model_open(flux_path, &flux, &err) != MGPU_OK)
        return -1;
    for (size_t i = 0; i < mgpu_model_module_count(flux); i++)
        if (mgpu_model_module_at(flux, i)->nbytes > flux_largest)
            flux_largest = mgpu_model_module_at(flux, i)->nbytes;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mgpu_model_close(flux);
    remove(flux_path);
    return 0;
}

static mgpu_plan *plan_with(const mgpu_model *m, const char *devices, const char *alloc,
                            uint64_t reserve, mgpu_device_list *list)
{
    mgpu_error err = {0};
    if (mgpu_devices_simulate(devices, list, &err) != MGPU_OK)
        fail_msg("devices: %s", err.message);
    mgpu_plan_request r = {.model = m, .component = -1, .devices = list, .alloc = alloc,
                           .reserve_bytes = reserve, .pin_below_bytes = MGPU_PLAN_DEFAULT_PIN_BELOW};
    mgpu_plan *p = NULL;
    if (mgpu_plan_create(&r, &p, &err) != MGPU_OK)
        fail_msg("'%s': %s", alloc, err.message);
    return p;
}

static double placed_gib(const mgpu_plan *p, const char *device)
{
    int d = mgpu_device_index(p->devices, device);
    assert_true(d >= 0);
    return (double)p->device[d].placed_bytes / GIB;
}

/* Within one module of the expected GiB. */
static void expect_gib(const mgpu_plan *p, const char *device, double want)
{
    double got = placed_gib(p, device);
    double tol = (double)flux_largest / GIB;
    if (fabs(got - want) > tol)
        fail_msg("%s holds %.4f GiB, want %.4f +- %.4f", device, got, want, tol);
}

static bool has_warning(const mgpu_plan *p, const char *needle)
{
    for (size_t i = 0; i < p->warning_count; i++)
        if (strstr(p->warnings[i], needle))
            return true;
    return false;
}

static void check_invariants(const mgpu_plan *p)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < p->devices->count; i++) {
        sum += p->device[i].placed_bytes;
        assert_true(p->device[i].placed_bytes <= p->device[i].capacity_bytes);
    }
    assert_int_equal(sum, p->model_bytes);
    for (size_t k = 0; k < p->order_count; k++) {
        uint32_t i = p->order[k];
        assert_true(p->module_device[i] >= 0);
        if (p->module_pinned[i])
            assert_int_equal(p->module_device[i], p->compute);
    }
}

static void test_spec_examples(void **state)
{
    (void)state;
    mgpu_device_list list;
    double m = (double)mgpu_model_component_at(flux, 0)->nbytes / GIB;
    assert_true(fabs(m - 11.78) < 0.01); /* the spec's 11.78 GiB model */

    mgpu_plan *p = plan_with(flux, DEVICES, "#cuda:0;4.0;cpu", 0, &list);
    check_invariants(p);
    expect_gib(p, "cpu", 4.0);
    expect_gib(p, "cuda:0", m - 4.0);
    assert_string_equal(p->devices->devices[p->compute].name, "cuda:0");
    mgpu_plan_free(p);

    p = plan_with(flux, DEVICES, "#cuda:0;6.0;cuda:1", 0, &list);
    check_invariants(p);
    expect_gib(p, "cuda:1", 6.0);
    expect_gib(p, "cuda:0", m - 6.0);
    mgpu_plan_free(p);

    p = plan_with(flux, DEVICES, "cuda:0,2.5gb;cpu,*", 0, &list);
    check_invariants(p);
    expect_gib(p, "cuda:0", 2.5);
    expect_gib(p, "cpu", m - 2.5);
    mgpu_plan_free(p);

    p = plan_with(flux, DEVICES, "cuda:0,500mb;cuda:1,3.0g;cpu,5gb*", 0, &list);
    check_invariants(p);
    expect_gib(p, "cuda:0", 500.0 / 1024.0);
    expect_gib(p, "cuda:1", 3.0);
    expect_gib(p, "cpu", m - 3.0 - 500.0 / 1024.0);
    assert_true(has_warning(p, "more than the 5.00 GiB written before its '*'"));
    mgpu_plan_free(p);

    p = plan_with(flux, DEVICES, "cuda:0,25%;cpu,75%", 0, &list);
    check_invariants(p);
    expect_gib(p, "cuda:0", 0.25 * m);
    expect_gib(p, "cpu", 0.75 * m);
    mgpu_plan_free(p);

    p = plan_with(flux, DEVICES, "cuda:0,8%;cuda:1,8%;cpu,4%", 0, &list);
    check_invariants(p);
    expect_gib(p, "cuda:0", 0.4 * m);
    expect_gib(p, "cuda:1", 0.4 * m);
    expect_gib(p, "cpu", 0.2 * m);
    mgpu_plan_free(p);

    p = plan_with(flux, DEVICES, "cuda:0,2.5gb;cuda:1,2gb", 0, &list);
    check_invariants(p);
    expect_gib(p, "cuda:0", 2.5);
    expect_gib(p, "cuda:1", 2.0);
    expect_gib(p, "cpu", m - 4.5);
    assert_true(p->default_wildcard);
    assert_true(has_warning(p, "default wildcard"));
    mgpu_plan_free(p);
}

static void expect_plan_error(const mgpu_model *m, const char *devices, const char *alloc,
                              uint64_t reserve, const char *needle)
{
    mgpu_device_list list;
    mgpu_error err = {0};
    assert_int_equal(mgpu_devices_simulate(devices, &list, &err), MGPU_OK);
    mgpu_plan_request r = {.model = m, .component = -1, .devices = &list, .alloc = alloc,
                           .reserve_bytes = reserve, .pin_below_bytes = MGPU_PLAN_DEFAULT_PIN_BELOW};
    mgpu_plan *p = NULL;
    assert_int_not_equal(mgpu_plan_create(&r, &p, &err), MGPU_OK);
    assert_null(p);
    if (!strstr(err.message, needle))
        fail_msg("'%s': message '%s' lacks '%s'", alloc, err.message, needle);
}

static void test_spec_errors(void **state)
{
    (void)state;
    /* covers 5.6 of 11.78 GiB, and the CPU is capped: nothing takes the rest */
    expect_plan_error(flux, DEVICES, "cuda:0,0.1;cpu,0.05", 0, "6.19 GiB have no device");
    expect_plan_error(flux, DEVICES, "cuda:0,0.1;cpu,0.05", 0, "add '*' to an entry or raise a quota");
    expect_plan_error(flux, DEVICES, "cuda:0,50%;mps,50%", 0,
                      "unknown device 'mps'; devices present: cuda:0, cuda:1, cpu");
    expect_plan_error(flux, DEVICES, "cuda:0,2.5gx;cpu,*", 0, "unknown unit 'gx'");
    /* a plan that does not fit says what would */
    expect_plan_error(flux, "cuda:0=8gib,cpu=64gib", "#cuda:0;1.0;cpu", 0, "cuda:0 cannot hold");
    expect_plan_error(flux, "cuda:0=8gib,cpu=64gib", "#cuda:0;1.0;cpu", 0, "'#cuda:0;");
    expect_plan_error(flux, "cuda:0=24gib,cpu=64gib", "", UINT64_C(20) << 30,
                      "plus the activation reserve");
    expect_plan_error(flux, "cuda:0=4gib,cuda:1=4gib,cpu=8gib", "#cuda:0;10;cuda:1", 0,
                      "the donors can take only");
}

static void test_original_bug_regressions(void **state)
{
    (void)state;
    mgpu_device_list list;
    double m = (double)mgpu_model_component_at(flux, 0)->nbytes / GIB;
    /* '*' in ratio and fraction modes */
    mgpu_plan *p = plan_with(flux, DEVICES, "cuda:0,25%;cpu,*", 0, &list);
    expect_gib(p, "cuda:0", 0.25 * m);
    expect_gib(p, "cpu", 0.75 * m);
    mgpu_plan_free(p);
    p = plan_with(flux, DEVICES, "cuda:0,0.1;cuda:1,*", 0, &list);
    expect_gib(p, "cuda:0", 2.4);
    expect_gib(p, "cuda:1", m - 2.4);
    mgpu_plan_free(p);
    /* Over-allocated fractions fill in written order up to each device's
     * real capacity (free memory minus margin), never all on the first. */
    p = plan_with(flux, "cuda:0=24gib/6gib@25gbps,cuda:1=12gib@6.8gbps,cpu=64gib",
                  "cuda:0,0.95;cuda:1,0.95;cpu,0.50", 0, &list);
    check_invariants(p);
    double cap0 = (double)p->device[0].capacity_bytes / GIB;
    assert_true(cap0 < 6.0);
    expect_gib(p, "cuda:0", cap0);
    expect_gib(p, "cuda:1", m - cap0);
    assert_true(has_warning(p, "cuda:0 can hold"));
    mgpu_plan_free(p);
    /* When the first device does hold the whole model, it gets it. */
    p = plan_with(flux, DEVICES, "cuda:0,0.95;cuda:1,0.95;cpu,0.50", 0, &list);
    expect_gib(p, "cuda:0", m);
    mgpu_plan_free(p);
    /* A string covering less than the model does not silently put the rest
     * on the compute device: the CPU takes it, and the plan says so. */
    p = plan_with(flux, DEVICES, "cuda:0,1gb;cuda:1,2gb", 0, &list);
    expect_gib(p, "cuda:0", 1.0);
    expect_gib(p, "cpu", m - 3.0);
    assert_true(p->default_wildcard);
    mgpu_plan_free(p);
    /* Free memory, not total, bounds a device. */
    p = plan_with(flux, "cuda:0=24gib@25gbps,cuda:1=12gib/3gib@6.8gbps,cpu=64gib",
                  "cuda:1,8gb;cpu,*#cuda:0", 0, &list);
    assert_true(placed_gib(p, "cuda:1") <= 3.0);
    assert_true(has_warning(p, "cuda:1 can hold"));
    mgpu_plan_free(p);
    /* The written order, not name order: cuda:10 before cuda:2. */
    p = plan_with(flux, "cuda:2=8gib@25gbps,cuda:10=8gib@25gbps,cpu=64gib",
                  "cuda:10,0.9;cuda:2,0.9;cpu,*#cuda:2", 0, &list);
    check_invariants(p);
    double cap10 = (double)p->device[mgpu_device_index(&list, "cuda:10")].capacity_bytes / GIB;
    expect_gib(p, "cuda:10", cap10 < 7.2 ? cap10 : 7.2);
    mgpu_plan_free(p);
    /* Default compute: the first GPU by number, or the CPU without GPUs. */
    p = plan_with(flux, "cuda:1=24gib,cuda:0=24gib,cpu=64gib", "", 0, &list);
    assert_string_equal(list.devices[p->compute].name, "cuda:0");
    mgpu_plan_free(p);
    p = plan_with(flux, "cpu=64gib", "", 0, &list);
    assert_string_equal(list.devices[p->compute].name, "cpu");
    mgpu_plan_free(p);
}

static void test_pinned_heads(void **state)
{
    (void)state;
    static const struct {
        const char *arch;
        const char *head; /* a module that must stay on compute */
    } cases[] = {
        {"flux-dev", "img_in"},     {"flux-dev", "final_layer.linear"},
        {"flux-dev", "guidance_in.out_layer"},
        {"t5-xxl", "shared"},       {"t5-xxl", "encoder.final_layer_norm"},
        {"clip-l", "text_model.embeddings.token_embedding"},
        {"vae-flux", "decoder.conv_in"}, {"vae-flux", "decoder.conv_out"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *path = test_path("pinned.safetensors");
        synth_options o = {.arch = cases[c].arch, .scale = SYNTH_SCALE_TINY, .dtype = MGPU_DTYPE_F32,
                           .seed = 1, .prefix = "", .out = path};
        mgpu_error err = {0};
        mgpu_model *m;
        assert_int_equal(synth_write(&o, &err), MGPU_OK);
        assert_int_equal(mgpu_model_open(path, &m, &err), MGPU_OK);
        mgpu_device_list list;
        assert_int_equal(mgpu_devices_simulate("cuda:0=8gib,cpu=16gib", &list, &err), MGPU_OK);
        /* stream everything that may stream; no size-based pinning */
        mgpu_plan_request r = {.model = m, .component = -1, .devices = &list,
                               .alloc = "cuda:0,0b;cpu,*", .pin_below_bytes = 0};
        mgpu_plan *p;
        if (mgpu_plan_create(&r, &p, &err) != MGPU_OK)
            fail_msg("%s: %s", cases[c].arch, err.message);
        check_invariants(p);
        bool found = false;
        for (size_t i = 0; i < mgpu_model_module_count(m); i++) {
            const mgpu_model_module *mod = mgpu_model_module_at(m, i);
            if (strcmp(mod->name, cases[c].head) == 0) {
                found = true;
                if (p->module_device[i] != p->compute || !p->module_pinned[i])
                    fail_msg("%s: head '%s' is not pinned on compute", cases[c].arch, mod->name);
            } else if (mod->role == MGPU_ROLE_BODY) {
                assert_int_equal(p->module_device[i], mgpu_device_index(&list, "cpu"));
            }
        }
        if (!found)
            fail_msg("%s has no module '%s'", cases[c].arch, cases[c].head);
        mgpu_plan_free(p);
        mgpu_model_close(m);
        remove(path);
    }
}

/* A model of n equal blocks of two 1 MiB modules each, to read the overlap
 * rule's choice as a pattern. */
static mgpu_model *blocks_model(const char *path, int n)
{
    mgpu_error err = {0};
    mgpu_safetensors_writer *w;
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    uint64_t shape[1] = {1 << 18}; /* 1 MiB of F32 */
    char name[64];
    for (int b = 0; b < n; b++)
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "layers.%d.%s.weight", b, k ? "b" : "a");
            assert_int_equal(
                mgpu_safetensors_writer_add_tensor(w, name, MGPU_DTYPE_F32, 1, shape, &err), MGPU_OK);
        }
    assert_int_equal(mgpu_safetensors_writer_write(w, NULL, (uint64_t)n * 2 << 20, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
    mgpu_model *m;
    assert_int_equal(mgpu_model_open(path, &m, &err), MGPU_OK);
    return m;
}

static void pattern(const mgpu_plan *p, char *out)
{
    for (size_t k = 0; k < p->order_count; k++)
        out[k] = p->module_device[p->order[k]] == p->compute ? 'R' : 'S';
    out[p->order_count] = '\0';
}

static void test_overlap_golden(void **state)
{
    (void)state;
    const char *path = test_path("blocks.safetensors");
    mgpu_model *m = blocks_model(path, 4); /* 8 modules of 1 MiB */
    mgpu_device_list list;
    char got[64];
    /* Streamed modules are spread evenly and the first stays resident. */
    mgpu_plan *p = plan_with(m, "cuda:0=8gib@25gbps,cpu=16gib", "cuda:0,50%;cpu,50%", 0, &list);
    pattern(p, got);
    assert_string_equal(got, "RSRSRSRS");
    mgpu_plan_free(p);
    p = plan_with(m, "cuda:0=8gib@25gbps,cpu=16gib", "cuda:0,75%;cpu,25%", 0, &list);
    pattern(p, got);
    assert_string_equal(got, "RRRSRRRS");
    mgpu_plan_free(p);
    p = plan_with(m, "cuda:0=8gib@25gbps,cpu=16gib", "cuda:0,25%;cpu,75%", 0, &list);
    pattern(p, got);
    assert_string_equal(got, "RSSSRSSS");
    mgpu_plan_free(p);
    p = plan_with(m, "cuda:0=8gib@25gbps,cpu=16gib", "cuda:0,0b;cpu,*", 0, &list);
    pattern(p, got);
    assert_string_equal(got, "SSSSSSSS");
    mgpu_plan_free(p);
    /* Two donors alternate through the pass, each in proportion. */
    p = plan_with(m, "cuda:0=8gib@25gbps,cuda:1=8gib@25gbps,cpu=16gib",
                  "cuda:1,50%;cpu,50%#cuda:0", 0, &list);
    int c1 = mgpu_device_index(&list, "cuda:1");
    for (size_t k = 0; k < p->order_count; k++)
        got[k] = p->module_device[p->order[k]] == c1 ? '1' : 'c';
    got[p->order_count] = '\0';
    assert_string_equal(got, "1c1c1c1c");
    mgpu_plan_free(p);
    mgpu_model_close(m);
    remove(path);
}

static void test_streaming_numbers(void **state)
{
    (void)state;
    mgpu_device_list list;
    mgpu_plan *p = plan_with(flux, "cuda:0=24gib@25gbps,cuda:1=12gib@6.8gbps,cpu=64gib,"
                                   "cuda:0+cuda:1@50gbps",
                             "cuda:1,4gb;cpu,*#cuda:0", 0, &list);
    int c1 = mgpu_device_index(&list, "cuda:1"), cpu = mgpu_device_index(&list, "cpu");
    /* cuda:1 streams over its NVLink, the CPU over cuda:0's PCIe */
    assert_true(p->device[c1].copy_bytes_per_s == 50e9);
    assert_true(p->device[cpu].copy_bytes_per_s == 25e9);
    assert_int_equal(p->device[c1].streamed_bytes_per_step, p->device[c1].placed_bytes);
    assert_true(fabs(p->device[cpu].copy_seconds_per_step -
                     (double)p->device[cpu].placed_bytes / 25e9) < 1e-12);
    assert_int_equal(p->device[p->compute].streamed_bytes_per_step, 0);
    mgpu_plan_free(p);
    /* no bandwidth given: the copy time is unknown, not zero */
    p = plan_with(flux, "cuda:0=24gib,cpu=64gib", "#cuda:0;2;cpu", 0, &list);
    assert_true(isnan(p->device[mgpu_device_index(&list, "cpu")].copy_seconds_per_step));
    mgpu_plan_free(p);
    /* the reserve comes out of the compute device's capacity */
    mgpu_plan *a = plan_with(flux, "cuda:0=24gib,cpu=64gib", "", 0, &list);
    mgpu_device_list list2;
    mgpu_plan *b = plan_with(flux, "cuda:0=24gib,cpu=64gib", "", UINT64_C(4) << 30, &list2);
    assert_int_equal(a->device[0].capacity_bytes - b->device[0].capacity_bytes, UINT64_C(4) << 30);
    mgpu_plan_free(a);
    mgpu_plan_free(b);
}

static void test_deterministic(void **state)
{
    (void)state;
    const char *strings[] = {"#cuda:0;5.5;cuda:1,cpu", "cuda:0,3gb;cuda:1,3gb;cpu,*",
                             "cuda:0,30%;cuda:1,30%;cpu,40%"};
    for (size_t s = 0; s < 3; s++) {
        mgpu_device_list l1, l2;
        mgpu_plan *a = plan_with(flux, DEVICES, strings[s], 0, &l1);
        mgpu_plan *b = plan_with(flux, DEVICES, strings[s], 0, &l2);
        assert_memory_equal(a->module_device, b->module_device, a->module_count * sizeof(int));
        check_invariants(a);
        mgpu_plan_free(a);
        mgpu_plan_free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_examples),     cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_original_bug_regressions), cmocka_unit_test(test_pinned_heads),
        cmocka_unit_test(test_overlap_golden),    cmocka_unit_test(test_streaming_numbers),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
