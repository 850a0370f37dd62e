/* Time to plan a large model: mgpu_plan_create + mgpu_plan_free for a
 * 2,000-module checkpoint (200 blocks of 10 modules, bf16, about 25 GiB,
 * written sparse so it costs no disk) across four simulated GPUs and the
 * CPU, with one string of each form of the allocation language. Planning
 * runs before every load, so it should stay far below a millisecond per
 * hundred modules; the target is well under 10 ms.
 *   bench_plan [DIR]   (the model is written to DIR, default /tmp) */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mgpu/device.h"
#include "mgpu/model.h"
#include "mgpu/plan.h"
#include "mgpu/safetensors.h"

enum { BLOCKS = 200, RUNS = 100 };

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* 200 transformer-like blocks of 10 modules, 2048 wide: attention (q, k,
 * v, o, proj), an MLP pair, modulation, and two norms (small enough to be
 * pinned, as real norms are). */
static int write_model(const char *path, mgpu_error *err)
{
    static const struct {
        const char *name;
        int ndim;
        uint64_t shape[2];
    } parts[] = {
        {"attn.q", 2, {2048, 2048}},  {"attn.k", 2, {2048, 2048}}, {"attn.v", 2, {2048, 2048}},
        {"attn.o", 2, {2048, 2048}},  {"proj", 2, {2048, 2048}},   {"mlp.0", 2, {8192, 2048}},
        {"mlp.2", 2, {2048, 8192}},   {"mod", 2, {6144, 2048}},    {"norm1", 1, {2048, 0}},
        {"norm2", 1, {2048, 0}},
    };
    enum { PARTS = sizeof parts / sizeof parts[0] };
    mgpu_safetensors_writer *w = NULL;
    if (mgpu_safetensors_writer_create(path, &w, err) != MGPU_OK)
        return -1;
    char name[96];
    for (int b = 0; b < BLOCKS; b++)
        for (int i = 0; i < PARTS; i++) {
            snprintf(name, sizeof name, "blocks.%d.%s.weight", b, parts[i].name);
            if (mgpu_safetensors_writer_add_tensor(w, name, MGPU_DTYPE_BF16, parts[i].ndim,
                                                   parts[i].shape, err) != MGPU_OK) {
                mgpu_safetensors_writer_abort(w);
                return -1;
            }
        }
    for (int b = 0; b < BLOCKS; b++)
        for (int i = 0; i < PARTS; i++) {
            uint64_t bytes = 2 * parts[i].shape[0] * (parts[i].ndim == 2 ? parts[i].shape[1] : 1);
            /* NULL: a hole, so 25 GiB of weights cost nothing to write */
            if (mgpu_safetensors_writer_write(w, NULL, bytes, err) != MGPU_OK) {
                mgpu_safetensors_writer_abort(w);
                return -1;
            }
        }
    return mgpu_safetensors_writer_finish(w, err) == MGPU_OK ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/bench-plan-%ld.safetensors", dir, (long)getpid());
    mgpu_error err = {0};
    mgpu_model *model = NULL;
    static mgpu_device_list devices; /* about 30 KB: keep it off the stack */
    if (write_model(path, &err) != 0 || mgpu_model_open(path, &model, &err) != MGPU_OK ||
        mgpu_devices_simulate("cuda:0=24gib/22gib@25gbps,cuda:1=24gib@25gbps,cuda:2=12gib@12gbps,"
                              "cuda:3=12gib@12gbps,cpu=128gib",
                              &devices, &err) != MGPU_OK) {
        fprintf(stderr, "bench_plan: %s\n", err.message);
        unlink(path);
        return 1;
    }
    uint64_t model_bytes = 0;
    for (size_t i = 0; i < mgpu_model_module_count(model); i++)
        model_bytes += mgpu_model_module_at(model, i)->nbytes;

    static const struct {
        const char *form;
        const char *alloc;
    } cases[] = {
        {"normal", "#cuda:0;12.0;cuda:1,cpu"},
        {"bytes + wildcard", "cuda:0,6gb;cuda:1,6gb;cuda:2,4gb;cpu,*"},
        {"ratio", "cuda:0,40%;cuda:1,30%;cuda:2,20%;cuda:3,10%"},
        {"fraction (over-allocated)", "cuda:0,0.5;cuda:1,0.4;cuda:2,0.3;cuda:3,0.3;cpu,0.1"},
    };
    printf("mgpu_plan_create + mgpu_plan_free: %zu modules (%d blocks), %.2f GiB, 5 simulated "
           "devices; best and median of %d runs\n\n",
           mgpu_model_module_count(model), BLOCKS, (double)model_bytes / 1073741824.0, RUNS);
    printf("| form | allocation | best ms | median ms | devices used |\n");
    printf("| --- | --- | ---: | ---: | ---: |\n");
    int status = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        mgpu_plan_request req = {.model = model,
                                 .component = -1,
                                 .devices = &devices,
                                 .alloc = cases[c].alloc,
                                 .pin_below_bytes = MGPU_PLAN_DEFAULT_PIN_BELOW};
        double times[RUNS];
        size_t used = 0;
        for (int r = 0; r < RUNS; r++) {
            mgpu_plan *plan = NULL;
            double t0 = now_ms();
            mgpu_status s = mgpu_plan_create(&req, &plan, &err);
            if (s == MGPU_OK && r == 0)
                for (size_t d = 0; d < devices.count; d++)
                    used += plan->device[d].placed_bytes > 0;
            mgpu_plan_free(plan);
            times[r] = now_ms() - t0;
            if (s != MGPU_OK) {
                fprintf(stderr, "bench_plan: '%s': %s\n", cases[c].alloc, err.message);
                status = 1;
                break;
            }
        }
        if (status)
            break;
        qsort(times, RUNS, sizeof times[0], compare_double);
        printf("| %s | `%s` | %.3f | %.3f | %zu |\n", cases[c].form, cases[c].alloc, times[0],
               times[RUNS / 2], used);
    }
    mgpu_model_close(model);
    unlink(path);
    return status;
}
