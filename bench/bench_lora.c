/* The per-step cost of LoRA applied at use time: FLUX.1-dev at full size
 * (synthetic Q8_0, data left as a hole) at a small latent, one forward pass
 * without a LoRA and with diffusers-format LoRAs of rank 16, 64 and 128 on
 * every block's linears, resident on the CPU and with half the weights
 * streamed through a simulated GPU link. Each configuration runs right
 * after the baseline of its placement; ratios are what to read.
 *   bench_lora [WORK_DIR] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "exec/executor.h"
#include "lora/lora_apply.h"
#include "models/flux.h"
#include "mgpu/safetensors.h"
#include "synth_lora.h"
#include "synth_write.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int die(const char *what, const mgpu_error *err)
{
    fprintf(stderr, "bench_lora: %s: %s\n", what, err->message);
    return 1;
}

int main(int argc, char **argv)
{
    const char *work = argc > 1 ? argv[1] : "/tmp";
    char model_path[1024], inputs_path[1024], lora_path[3][1024];
    snprintf(model_path, sizeof model_path, "%s/bl-flux.gguf", work);
    snprintf(inputs_path, sizeof inputs_path, "%s/bl-in.safetensors", work);
    const int64_t ranks[3] = {16, 64, 128};
    mgpu_error err = {0};
    synth_options o = {.arch = "flux-dev", .scale = SYNTH_SCALE_FULL, .gguf = 1,
                       .dtype = MGPU_DTYPE_Q8_0, .seed = 1, .prefix = "", .out = model_path,
                       .sparse = 1};
    if (synth_write(&o, &err) != MGPU_OK ||
        synth_write_flux_inputs("flux-dev", SYNTH_SCALE_FULL, 1, 16, 16, 64, 2, inputs_path, &err))
        return die("synth", &err);
    for (int r = 0; r < 3; r++) {
        snprintf(lora_path[r], sizeof lora_path[r], "%s/bl-lora-%lld.safetensors", work,
                 (long long)ranks[r]);
        synth_lora_list list = {0};
        if (!synth_lora_modules_at("flux-dev", SYNTH_SCALE_FULL, SYNTH_LORA_DIFFUSERS, ranks[r],
                                   (float)ranks[r], 1, &list) ||
            synth_lora_write(lora_path[r], &list, SYNTH_LORA_DIFFUSERS, MGPU_DTYPE_BF16, 3,
                             &err) != MGPU_OK)
            return die("synth lora", &err);
        synth_lora_list_free(&list);
    }
    mgpu_model *model;
    mgpu_flux *flux;
    mgpu_safetensors *in;
    if (mgpu_model_open(model_path, &model, &err) || mgpu_flux_load(model, 0, NULL, &flux, &err) ||
        mgpu_safetensors_open(inputs_path, &in, &err))
        return die("open", &err);
    const float *x = mgpu_safetensors_find(in, "x")->data;
    mgpu_flux_inputs fi = {1, 16, 16, 64, x, mgpu_safetensors_find(in, "timestep")->data,
                           mgpu_safetensors_find(in, "context")->data,
                           mgpu_safetensors_find(in, "y")->data,
                           mgpu_safetensors_find(in, "guidance")->data};
    float *out = malloc(16 * 16 * 16 * sizeof(float));
    mgpu_backend *be;
    if (mgpu_backend_cpu_create(0, &be, &err) || mgpu_backend_set_gemm(be, MGPU_GEMM_AUTO, &err))
        return die("backend", &err);
    printf("FLUX.1-dev Q8_0 (synthetic), 16x16 latent + 64 text tokens, %s GEMM, one pass each\n\n",
           mgpu_backend_gemm_name(be));
    printf("| placement | LoRA | adapters | s/step | vs none |\n| --- | --- | ---: | ---: | ---: |\n");
    const struct {
        const char *name, *devices, *alloc;
    } places[2] = {{"resident", "cpu=23gib", ""},
                   {"half streamed (64 GB/s link)", "cuda:0=32gib@64gbps,cpu=23gib",
                    "cuda:0,50%;cpu,*"}};
    for (int p = 0; p < 2; p++) {
        mgpu_device_list devs;
        mgpu_plan *plan;
        mgpu_executor *ex;
        mgpu_plan_request pr = {.model = model, .component = 0, .devices = &devs,
                                .alloc = places[p].alloc};
        if (mgpu_devices_simulate(places[p].devices, &devs, &err) ||
            mgpu_plan_create(&pr, &plan, &err) || mgpu_executor_create(plan, be, NULL, &ex, &err))
            return die("plan", &err);
        mgpu_tensor_source src = mgpu_executor_source(ex);
        if (mgpu_flux_forward(flux, &src, &fi, out, be, &err)) /* warm: page faults */
            return die("forward", &err);
        double base = 0;
        for (int r = -1; r < 3; r++) {
            mgpu_lora *l = NULL;
            mgpu_lora_resolved *res = NULL;
            mgpu_lora_set *set = NULL;
            mgpu_lora_part part = {model, 0};
            float strength = 1.0f;
            if (r >= 0 && (mgpu_lora_open(lora_path[r], &l, &err) ||
                           mgpu_lora_resolve(l, &part, 1, &res, &err) ||
                           mgpu_lora_set_create(be, model, (const mgpu_lora_resolved *const *)&res,
                                                &strength, 1, 0, &set, &err)))
                return die("lora", &err);
            src.lora = set;
            double t0 = now();
            if (mgpu_flux_forward(flux, &src, &fi, out, be, &err))
                return die("forward", &err);
            double t = now() - t0;
            if (r < 0)
                base = t;
            char label[32];
            snprintf(label, sizeof label, r < 0 ? "none" : "rank %lld", r < 0 ? 0LL : (long long)ranks[r]);
            printf("| %s | %s | %zu | %.2f | %.3f |\n", places[p].name, label,
                   set ? mgpu_lora_set_adapter_count(set) : 0, t, t / base);
            fflush(stdout);
            src.lora = NULL;
            mgpu_lora_set_free(set);
            mgpu_lora_resolved_free(res);
            mgpu_lora_free(l);
        }
        mgpu_executor_free(ex);
        mgpu_plan_free(plan);
    }
    free(out);
    mgpu_backend_free(be);
    mgpu_safetensors_close(in);
    mgpu_flux_free(flux);
    mgpu_model_close(model);
    remove(model_path);
    remove(inputs_path);
    for (int r = 0; r < 3; r++)
        remove(lora_path[r]);
    return 0;
}
