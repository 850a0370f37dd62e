/* Time to open and inspect full-size checkpoints: FLUX.1-dev as GGUF Q8_0
 * and as safetensors BF16, plus T5-XXL F16, written sparse (real headers,
 * data left as holes) so the benchmark needs no real weights or disk space.
 * Opening reads headers only, so the numbers are what `mgpu inspect` costs
 * on the real 12-24 GB files. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mgpu/model.h"
#include "synth_write.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    static const struct {
        const char *arch;
        int gguf;
        mgpu_dtype dtype;
        const char *file;
    } cases[] = {
        {"flux-dev", 1, MGPU_DTYPE_Q8_0, "bench-flux1-dev-Q8_0.gguf"},
        {"flux-dev", 0, MGPU_DTYPE_BF16, "bench-flux1-dev-bf16.safetensors"},
        {"t5-xxl", 0, MGPU_DTYPE_F16, "bench-t5xxl-f16.safetensors"},
    };
    printf("Open + inspect of full-size sparse synthetic checkpoints (best of 20)\n\n");
    printf("| file | bytes | tensors | arch | write ms | best open ms | median open ms |\n");
    printf("| --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, cases[c].file);
        synth_options o = {.arch = cases[c].arch, .scale = SYNTH_SCALE_FULL, .gguf = cases[c].gguf,
                           .dtype = cases[c].dtype, .seed = 1, .prefix = "", .out = path,
                           .sparse = 1};
        mgpu_error err = {0};
        double t0 = now_ms();
        if (synth_write(&o, &err) != MGPU_OK) {
            fprintf(stderr, "bench_inspect: %s\n", err.message);
            return 1;
        }
        double write_ms = now_ms() - t0;
        double times[20];
        uint64_t bytes = 0;
        size_t tensors = 0;
        const char *arch = "";
        for (int r = 0; r < 20; r++) {
            mgpu_model *m;
            double a = now_ms();
            if (mgpu_model_open(path, &m, &err) != MGPU_OK) {
                fprintf(stderr, "bench_inspect: %s\n", err.message);
                return 1;
            }
            /* what the summary touches: every tensor and module */
            for (size_t i = 0; i < mgpu_model_tensor_count(m); i++)
                bytes += mgpu_model_tensor_at(m, i)->info.nbytes * (r == 0);
            tensors = mgpu_model_tensor_count(m);
            arch = mgpu_arch_name(mgpu_model_component_at(m, 0)->arch);
            mgpu_model_close(m);
            times[r] = now_ms() - a;
        }
        for (int i = 1; i < 20; i++) /* insertion sort */
            for (int j = i; j > 0 && times[j] < times[j - 1]; j--) {
                double t = times[j];
                times[j] = times[j - 1];
                times[j - 1] = t;
            }
        printf("| %s | %" PRIu64 " | %zu | %s | %.1f | %.2f | %.2f |\n", cases[c].file, bytes, tensors,
               arch, write_ms, times[0], times[10]);
        remove(path);
    }
    return 0;
}
