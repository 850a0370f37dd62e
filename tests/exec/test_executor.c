/* The streaming executor: the FLUX forward gives the same bits whatever the
 * placement (resident, half in RAM behind a simulated GPU, all on a donor
 * GPU, part on disk; CPU compute resident and with disk streaming), the
 * traffic matches the plan, staging stays within its budget, and bad
 * budgets are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec/executor.h"
#include "models/flux.h"
#include "mgpu/safetensors.h"
#include "synth_write.h"
#include "test_util.h"

static char model_path[1024], inputs_path[1024];
static mgpu_model *model;
static mgpu_flux *flux;
static mgpu_safetensors *inputs;
static mgpu_flux_inputs in;
static float *reference;
static size_t out_count;

static const float *input(const char *name)
{
    return mgpu_safetensors_find(inputs, name)->data; /* F32, 8-byte aligned by our writer */
}

static int setup(void **state)
{
    (void)state;
    snprintf(model_path, sizeof model_path, "%s", test_path("exec-flux.gguf"));
    snprintf(inputs_path, sizeof inputs_path, "%s", test_path("exec-in.safetensors"));
    synth_options o = {.arch = "flux-dev", .scale = SYNTH_SCALE_TINY, .gguf = 1,
                       .dtype = MGPU_DTYPE_Q8_0, .seed = 5, .prefix = "", .out = model_path};
    mgpu_error err = {0};
    mgpu_flux_settings set = {.heads = 2};
    if (synth_write(&o, &err) != MGPU_OK ||
        synth_write_flux_inputs("flux-dev", SYNTH_SCALE_TINY, 2, 6, 8, 5, 9, inputs_path, &err) !=
            MGPU_OK ||
        mgpu_model_open(model_path, &model, &err) != MGPU_OK ||
        mgpu_flux_load(model, 0, &set, &flux, &err) != MGPU_OK ||
        mgpu_safetensors_open(inputs_path, &inputs, &err) != MGPU_OK) {
        fprintf(stderr, "setup: %s\n", err.message);
        return -1;
    }
    in = (mgpu_flux_inputs){2, 6, 8, 5, input("x"), input("timestep"), input("context"),
                            input("y"), input("guidance")};
    out_count = 2 * 16 * 6 * 8;
    reference = malloc(out_count * sizeof(float));
    mgpu_tensor_source resident = mgpu_resident_source();
    mgpu_backend *be = NULL;
    if (mgpu_backend_cpu_create(1, &be, &err) != MGPU_OK)
        return -1;
    mgpu_status s = mgpu_flux_forward(flux, &resident, &in, reference, be, &err);
    mgpu_backend_free(be);
    return s == MGPU_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    free(reference);
    mgpu_safetensors_close(inputs);
    mgpu_flux_free(flux);
    mgpu_model_close(model);
    remove(model_path);
    remove(inputs_path);
    return 0;
}

static void run_placement(const char *devices, const char *alloc, uint64_t staging,
                          bool expect_disk, bool expect_stream)
{
    mgpu_device_list list;
    mgpu_error err = {0};
    assert_int_equal(mgpu_devices_simulate(devices, &list, &err), MGPU_OK);
    mgpu_plan_request r = {.model = model, .component = 0, .devices = &list, .alloc = alloc,
                           .pin_below_bytes = 0};
    mgpu_plan *plan;
    if (mgpu_plan_create(&r, &plan, &err) != MGPU_OK)
        fail_msg("'%s': %s", alloc, err.message);
    /* host-visible staging (the CPU), then the discrete-device paths:
     * uploads of resident weights, copies on the copy queue, bounce buffers;
     * RAM-tier tensors from pinned copies (mode 1), from the mapping
     * (mode 2), and donor GPUs with backends of their own (mode 3) */
    for (int mode = 0; mode < 4; mode++) {
        const bool discrete = mode > 0;
        mgpu_backend *be = NULL, *donors[MGPU_MAX_DEVICES] = {0};
        assert_int_equal((discrete ? mgpu_backend_cpu_create_discrete : mgpu_backend_cpu_create)(
                             2, &be, &err),
                         MGPU_OK);
        for (size_t d = 0; mode == 3 && d < list.count; d++)
            if (list.devices[d].kind == MGPU_DEVICE_CUDA && (int)d != plan->compute)
                assert_int_equal(mgpu_backend_cpu_create_discrete(1, &donors[d], &err), MGPU_OK);
        mgpu_executor *ex;
        /* mode 2 also reads the disk through two 4 KiB bounce halves, so a
         * tensor crosses in many chunks that alternate between them */
        mgpu_executor_options opts = {.staging_bytes = staging, .pace_simulated = 1,
                                      .pageable_ram = mode == 2, .device_backends = donors,
                                      .bounce_bytes = mode == 2 ? 4096 : 0};
        assert_int_equal(mgpu_executor_create(plan, be, &opts, &ex, &err), MGPU_OK);
        mgpu_tensor_source src = mgpu_executor_source(ex);
        float *out = malloc(out_count * sizeof(float));
        if (mgpu_flux_forward(flux, &src, &in, out, be, &err) != MGPU_OK)
            fail_msg("'%s': %s", alloc, err.message);
        if (memcmp(out, reference, out_count * sizeof(float)) != 0)
            fail_msg("'%s' on '%s' (mode %d): output differs from the resident run", alloc,
                     devices, mode);
        mgpu_exec_stats st;
        mgpu_executor_stats(ex, &st);
        /* each streamed block crossed once per batch item (the forward runs
         * the blocks once per item) */
        uint64_t copied = 0, planned = 0;
        for (size_t d = 0; d < list.count; d++) {
            copied += st.bytes_copied[d];
            planned += plan->device[d].streamed_bytes_per_step;
            if (expect_disk && list.devices[d].kind == MGPU_DEVICE_DISK)
                assert_true(st.bytes_copied[d] > 0);
        }
        assert_int_equal(copied, 2 * planned);
        assert_true(expect_stream ? copied > 0 : copied == 0);
        assert_true(st.staging_peak_bytes <= st.staging_budget_bytes);
        /* where the streamed bytes were held, and which copies moved them:
         * held = the block tensors of each source device (256-byte aligned) */
        uint64_t held_ram = 0, held_donor = 0, from_donor = 0;
        for (size_t i = 0; i < mgpu_model_tensor_count(model); i++) {
            const mgpu_model_tensor *t = mgpu_model_tensor_at(model, i);
            const int d = plan->module_device[t->module];
            if (d == plan->compute || mgpu_model_module_at(model, t->module)->block < 0 ||
                list.devices[d].kind == MGPU_DEVICE_DISK)
                continue;
            *(donors[d] ? &held_donor : &held_ram) += (t->info.nbytes + 255) / 256 * 256;
        }
        for (size_t d = 0; d < list.count; d++)
            if (donors[d])
                from_donor += st.bytes_copied[d];
        assert_int_equal(st.pinned_bytes, mode == 1 || mode == 3 ? held_ram : 0);
        assert_int_equal(st.donor_bytes, held_donor);
        assert_int_equal(st.pageable_bytes, 0);
        /* at least what was used (a prefetched block evicted unused is
         * copied again), and none without donors */
        const uint64_t peer = mgpu_backend_cpu_copied_bytes(be, MGPU_COPY_PEER_TO_DEVICE);
        assert_true(peer >= from_donor);
        assert_true(from_donor > 0 || peer == 0);
        free(out);
        mgpu_executor_free(ex);
        mgpu_backend_free(be);
        for (size_t d = 0; d < list.count; d++)
            mgpu_backend_free(donors[d]);
    }
    mgpu_plan_free(plan);
}

static void test_placements_give_the_same_bits(void **state)
{
    (void)state;
    const char *gpu = "cuda:0=1gib@50gbps,cuda:1=1gib@20gbps,cpu=16gib,disk@2gbps";
    run_placement(gpu, "", 0, false, false);                         /* all resident */
    run_placement(gpu, "cuda:0,50%;cpu,*", 0, false, true);          /* half in RAM */
    run_placement(gpu, "cuda:0,0b;cuda:1,*#cuda:0", 0, false, true); /* all on a donor GPU */
    run_placement(gpu, "cuda:0,40%;cpu,30%;disk,*", 0, true, true);  /* part from disk */
    run_placement(gpu, "#cuda:0;0.001;cpu,cuda:1", 0, false, true);   /* normal mode */
    /* CPU compute: resident, and part streamed from disk */
    run_placement("cpu=16gib,disk@2gbps", "", 0, false, false);
    run_placement("cpu=16gib,disk", "cpu,50%;disk,*", 0, true, true);
}

static void test_staging_budget(void **state)
{
    (void)state;
    mgpu_device_list list;
    mgpu_error err = {0};
    assert_int_equal(mgpu_devices_simulate("cuda:0=1gib@50gbps,cpu=16gib", &list, &err), MGPU_OK);
    mgpu_plan_request r = {.model = model, .component = 0, .devices = &list,
                           .alloc = "cuda:0,0b;cpu,*", .pin_below_bytes = 0};
    mgpu_plan *plan;
    assert_int_equal(mgpu_plan_create(&r, &plan, &err), MGPU_OK);
    mgpu_executor *ex;
    mgpu_backend *be = NULL;
    assert_int_equal(mgpu_backend_cpu_create(1, &be, &err), MGPU_OK);
    /* too small for the largest block: refused, saying why */
    mgpu_executor_options tiny = {.staging_bytes = 4096, .pace_simulated = 1};
    assert_int_equal(mgpu_executor_create(plan, be, &tiny, &ex, &err), MGPU_ERR_ARGUMENT);
    mgpu_backend_free(be);
    assert_non_null(strstr(err.message, "largest streamed block"));
    mgpu_plan_free(plan);
    /* a budget of exactly one block works too (no overlap, but correct) */
    const char *gpu = "cuda:0=1gib@50gbps,cpu=16gib";
    run_placement(gpu, "cuda:0,0b;cpu,*", 3u << 20, false, true);
}

/* Blocks entered against index order (as a VAE decoder walks its levels
 * backwards), with a budget of two blocks: the executor must not wait
 * forever on prefetched blocks that are needed later, must hand out the
 * right bytes, and from the second pass on prefetches in the order seen. */
static void test_out_of_order_blocks(void **state)
{
    (void)state;
    mgpu_device_list list;
    mgpu_error err = {0};
    assert_int_equal(mgpu_devices_simulate("cuda:0=1gib,cpu=16gib", &list, &err), MGPU_OK);
    mgpu_plan_request r = {.model = model, .component = 0, .devices = &list,
                           .alloc = "cuda:0,0b;cpu,*", .pin_below_bytes = 0};
    mgpu_plan *plan;
    assert_int_equal(mgpu_plan_create(&r, &plan, &err), MGPU_OK);
    mgpu_backend *be = NULL;
    assert_int_equal(mgpu_backend_cpu_create(1, &be, &err), MGPU_OK);
    mgpu_executor *ex;
    assert_int_equal(mgpu_executor_create(plan, be, NULL, &ex, &err), MGPU_OK);
    mgpu_tensor_source src = mgpu_executor_source(ex);
    int nb = (int)mgpu_model_block_count(model);
    assert_true(nb >= 3);
    for (int pass = 0; pass < 3; pass++)
        for (int b = nb - 1; b >= 0; b--) {
            assert_int_equal(src.enter_block(src.context, b, &err), MGPU_OK);
            for (size_t i = 0; i < mgpu_model_tensor_count(model); i++) {
                const mgpu_model_tensor *t = mgpu_model_tensor_at(model, i);
                if (mgpu_model_module_at(model, t->module)->block != b)
                    continue;
                const void *p = src.data(src.context, t, &err);
                assert_non_null(p);
                assert_memory_equal(p, t->info.data, (size_t)t->info.nbytes);
            }
            src.leave_block(src.context, b);
        }
    mgpu_exec_stats st;
    mgpu_executor_stats(ex, &st);
    assert_int_equal(st.blocks_streamed, 3 * (uint64_t)nb);
    assert_true(st.staging_peak_bytes <= st.staging_budget_bytes);
    mgpu_executor_free(ex);
    mgpu_backend_free(be);
    mgpu_plan_free(plan);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placements_give_the_same_bits),
        cmocka_unit_test(test_staging_budget),
        cmocka_unit_test(test_out_of_order_blocks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
