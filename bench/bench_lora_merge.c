/* LoRA merge-once against the default at-use path: what merging into a
 * 16-bit weight costs in precision, and what it saves in time.
 *
 * Precision (tiny FLUX.1-dev in BF16 and in F16, a diffusers LoRA of rank
 * 16 on every block linear, strengths from strong to faint): for the merged
 * weights, the size of the LoRA's delta against the weight and the rms of
 * the rounding error against the delta; for the output, the distance of
 * merge-once from the at-use result (which tests/lora/test_lora_apply.c
 * shows is within 3e-7 of an exact merge) against how far the LoRA moves
 * the output.
 *
 * Time (FLUX.1-dev widths, BF16, the first 6 double and 6 single blocks so
 * the merged copies fit next to the model in RAM; data left as a hole; a
 * 16x16 latent and 64 text tokens): passes without a LoRA, with the LoRA
 * at use and merged (the faster of two passes each), for ranks 16, 64 and
 * 128, and the merge's own time.
 *   bench_lora_merge [WORK_DIR] */
#include <math.h>
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
    fprintf(stderr, "bench_lora_merge: %s: %s\n", what, err->message);
    return 1;
}

static double max_diff(const float *a, const float *b, size_t n, double *scale)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    *scale = s;
    return d;
}

typedef struct bench_model {
    mgpu_model *model;
    mgpu_flux *flux;
    mgpu_safetensors *in;
    mgpu_flux_inputs fi;
    float *out;
    size_t n_out;
} bench_model;

static int open_model(bench_model *b, const char *path, const char *inputs, int64_t h, int64_t w,
                      int64_t text, int heads, mgpu_error *err)
{
    mgpu_flux_settings set = {.heads = heads};
    if (mgpu_model_open(path, &b->model, err) ||
        mgpu_flux_load(b->model, 0, heads ? &set : NULL, &b->flux, err) ||
        mgpu_safetensors_open(inputs, &b->in, err))
        return 1;
    b->fi = (mgpu_flux_inputs){1, h, w, text, mgpu_safetensors_find(b->in, "x")->data,
                               mgpu_safetensors_find(b->in, "timestep")->data,
                               mgpu_safetensors_find(b->in, "context")->data,
                               mgpu_safetensors_find(b->in, "y")->data,
                               mgpu_safetensors_find(b->in, "guidance")->data};
    b->n_out = (size_t)(16 * h * w);
    b->out = malloc(b->n_out * sizeof(float));
    return b->out == NULL;
}

static void close_model(bench_model *b)
{
    free(b->out);
    mgpu_safetensors_close(b->in);
    mgpu_flux_free(b->flux);
    mgpu_model_close(b->model);
}

/* A LoRA set for `path` at `strength` on the model's transformer. */
typedef struct bench_lora {
    mgpu_lora *l;
    mgpu_lora_resolved *res;
    mgpu_lora_set *set;
} bench_lora;

static int open_lora(bench_lora *b, const char *path, const mgpu_model *m, mgpu_backend *be,
                     float strength, mgpu_error *err)
{
    mgpu_lora_part part = {m, 0};
    return mgpu_lora_open(path, &b->l, err) || mgpu_lora_resolve(b->l, &part, 1, &b->res, err) ||
           mgpu_lora_set_create(be, m, (const mgpu_lora_resolved *const *)&b->res, &strength, 1, 0,
                                &b->set, err);
}

static void close_lora(bench_lora *b)
{
    mgpu_lora_set_free(b->set);
    mgpu_lora_resolved_free(b->res);
    mgpu_lora_free(b->l);
}

/* rms(delta) / rms(W) and rms(merged - (W + delta)) / rms(delta) over the
 * merged weights, delta from mgpu_lora_delta (exact up to f32 rounding). */
static int weight_error(const bench_lora *b, const mgpu_model *m, mgpu_tensor_source *src,
                        float strength, double *rel_delta, double *rel_error, mgpu_error *err)
{
    double dd = 0, ww = 0, ee = 0;
    const bool *mask = mgpu_lora_set_merged_mask(b->set);
    for (size_t i = 0; i < mgpu_model_tensor_count(m); i++) {
        if (!mask[i])
            continue;
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        const uint64_t n = t->info.n_elems;
        float *w = malloc(n * sizeof *w), *got = malloc(n * sizeof *got);
        double *exact = calloc(n, sizeof *exact);
        const void *merged = src->data(src->context, t, err);
        if (!w || !got || !exact || !merged ||
            mgpu_dequantize(t->info.dtype, t->info.data, w, n) ||
            mgpu_dequantize(t->info.dtype, merged, got, n))
            return 1;
        for (size_t k = 0; k < mgpu_lora_target_count(b->res); k++) {
            const mgpu_lora_target *tg = mgpu_lora_target_at(b->res, k);
            if (tg->tensor != t)
                continue;
            float *d = malloc((size_t)(tg->rows * tg->cols) * sizeof *d);
            if (!d || mgpu_lora_delta(tg, strength, d, err))
                return 1;
            for (int64_t e = 0; e < tg->rows * tg->cols; e++)
                exact[tg->row0 * tg->cols + e] += d[e];
            free(d);
        }
        for (uint64_t k = 0; k < n; k++) {
            dd += exact[k] * exact[k];
            ww += (double)w[k] * w[k];
            double e = (double)got[k] - ((double)w[k] + exact[k]);
            ee += e * e;
        }
        free(w), free(got), free(exact);
    }
    *rel_delta = sqrt(dd / ww);
    *rel_error = sqrt(ee / dd);
    return 0;
}

static int precision(const char *work, mgpu_error *err)
{
    char model_path[1024], inputs_path[1024], lora_path[1024];
    snprintf(inputs_path, sizeof inputs_path, "%s/blm-tiny-in.safetensors", work);
    snprintf(lora_path, sizeof lora_path, "%s/blm-tiny-lora.safetensors", work);
    synth_lora_list list = {0};
    if (synth_write_flux_inputs("flux-dev", SYNTH_SCALE_TINY, 1, 8, 8, 8, 2, inputs_path, err) ||
        !synth_lora_modules("flux-dev", SYNTH_LORA_DIFFUSERS, 16, 16.0f, 1, &list) ||
        synth_lora_write(lora_path, &list, SYNTH_LORA_DIFFUSERS, MGPU_DTYPE_BF16, 3, err))
        return die("synth tiny", err);
    synth_lora_list_free(&list);
    mgpu_backend *be;
    if (mgpu_backend_cpu_create(0, &be, err))
        return die("backend", err);
    printf("Precision: tiny FLUX.1-dev, diffusers LoRA rank 16 on every block linear\n\n");
    printf("| weights | strength | delta / W (rms) | merged weight error / delta (rms) | "
           "output: LoRA moves it | merge-once from at-use |\n"
           "| --- | ---: | ---: | ---: | ---: | ---: |\n");
    const mgpu_dtype dtypes[2] = {MGPU_DTYPE_BF16, MGPU_DTYPE_F16};
    const float strengths[4] = {1.0f, 0.1f, 0.03f, 0.01f};
    for (int d = 0; d < 2; d++) {
        snprintf(model_path, sizeof model_path, "%s/blm-tiny-%s.safetensors", work,
                 mgpu_dtype_name(dtypes[d]));
        synth_options o = {.arch = "flux-dev", .scale = SYNTH_SCALE_TINY, .dtype = dtypes[d],
                           .seed = 1, .prefix = "", .out = model_path};
        bench_model m = {0};
        if (synth_write(&o, err) || open_model(&m, model_path, inputs_path, 8, 8, 8, 2, err))
            return die("tiny model", err);
        mgpu_device_list devs;
        mgpu_plan *plan;
        mgpu_plan_request pr = {.model = m.model, .component = 0, .devices = &devs};
        if (mgpu_devices_simulate("cpu=8gib", &devs, err) || mgpu_plan_create(&pr, &plan, err))
            return die("plan", err);
        float *base = malloc(m.n_out * sizeof(float)), *at_use = malloc(m.n_out * sizeof(float));
        mgpu_tensor_source plain = mgpu_resident_source();
        if (mgpu_flux_forward(m.flux, &plain, &m.fi, base, be, err))
            return die("forward", err);
        for (int s = 0; s < 4; s++) {
            bench_lora use = {0}, merge = {0};
            if (open_lora(&use, lora_path, m.model, be, strengths[s], err) ||
                open_lora(&merge, lora_path, m.model, be, strengths[s], err) ||
                mgpu_lora_set_merge(merge.set, plan, NULL, err))
                return die("lora", err);
            mgpu_tensor_source with = plain;
            with.lora = use.set;
            mgpu_tensor_source merged = mgpu_lora_set_source(merge.set, plain);
            double rel_delta, rel_error, scale;
            if (mgpu_flux_forward(m.flux, &with, &m.fi, at_use, be, err) ||
                mgpu_flux_forward(m.flux, &merged, &m.fi, m.out, be, err) ||
                weight_error(&merge, m.model, &merged, strengths[s], &rel_delta, &rel_error, err))
                return die("measure", err);
            double moved = max_diff(base, at_use, m.n_out, &scale) / scale;
            double off = max_diff(m.out, at_use, m.n_out, &scale) / scale;
            printf("| %s | %.2f | %.3g | %.3g | %.3g | %.3g (%.1f%% of the move) |\n",
                   mgpu_dtype_name(dtypes[d]), strengths[s], rel_delta, rel_error, moved, off,
                   100.0 * off / moved);
            fflush(stdout);
            close_lora(&use);
            close_lora(&merge);
        }
        free(base), free(at_use);
        mgpu_plan_free(plan);
        close_model(&m);
        remove(model_path);
    }
    mgpu_backend_free(be);
    remove(inputs_path);
    remove(lora_path);
    return 0;
}

/* Keeps the modules of the blocks the benchmark model has. */
static void keep_blocks(synth_lora_list *list, int doubles, int singles)
{
    size_t kept = 0;
    for (size_t i = 0; i < list->count; i++) {
        const char *name = list->items[i].name, *s = strstr(name, "single_transformer_blocks.");
        const char *d = s ? NULL : strstr(name, "transformer_blocks.");
        if ((s && atoi(s + 26) >= singles) || (d && atoi(d + 19) >= doubles))
            continue;
        list->items[kept++] = list->items[i];
    }
    list->count = kept;
}

static int timing(const char *work, mgpu_error *err)
{
    enum { BLOCKS = 6 };
    char model_path[1024], inputs_path[1024], lora_path[1024];
    snprintf(model_path, sizeof model_path, "%s/blm-flux.safetensors", work);
    snprintf(inputs_path, sizeof inputs_path, "%s/blm-in.safetensors", work);
    snprintf(lora_path, sizeof lora_path, "%s/blm-lora.safetensors", work);
    synth_options o = {.arch = "flux-dev", .scale = SYNTH_SCALE_FULL, .dtype = MGPU_DTYPE_BF16,
                       .seed = 1, .prefix = "", .out = model_path, .sparse = 1,
                       .max_blocks = BLOCKS};
    bench_model m = {0};
    if (synth_write(&o, err) ||
        synth_write_flux_inputs("flux-dev", SYNTH_SCALE_FULL, 1, 16, 16, 64, 2, inputs_path, err) ||
        open_model(&m, model_path, inputs_path, 16, 16, 64, 0, err))
        return die("synth full", err);
    mgpu_backend *be;
    if (mgpu_backend_cpu_create(0, &be, err) || mgpu_backend_set_gemm(be, MGPU_GEMM_AUTO, err))
        return die("backend", err);
    mgpu_device_list devs;
    mgpu_plan *plan;
    mgpu_plan_request pr = {.model = m.model, .component = 0, .devices = &devs};
    if (mgpu_devices_simulate("cpu=23gib", &devs, err) || mgpu_plan_create(&pr, &plan, err))
        return die("plan", err);
    printf("\nTime: FLUX.1-dev widths in BF16, %d double + %d single blocks (%.1f GB), 16x16 latent "
           "+ 64 text tokens, %s GEMM, the faster of two passes each\n\n",
           BLOCKS, BLOCKS, (double)plan->device[plan->compute].placed_bytes / 1e9,
           mgpu_backend_gemm_name(be));
    printf("| LoRA | adapters | merge (s) | strength change (s) | at use s/pass | merged s/pass | "
           "none s/pass |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    mgpu_tensor_source plain = mgpu_resident_source();
    if (mgpu_flux_forward(m.flux, &plain, &m.fi, m.out, be, err)) /* page faults */
        return die("forward", err);
    const int64_t ranks[3] = {16, 64, 128};
    for (int r = 0; r < 3; r++) {
        synth_lora_list list = {0};
        if (!synth_lora_modules_at("flux-dev", SYNTH_SCALE_FULL, SYNTH_LORA_DIFFUSERS, ranks[r],
                                   (float)ranks[r], 1, &list))
            return die("synth lora", err);
        keep_blocks(&list, BLOCKS, BLOCKS);
        if (synth_lora_write(lora_path, &list, SYNTH_LORA_DIFFUSERS, MGPU_DTYPE_BF16, 3, err))
            return die("synth lora", err);
        synth_lora_list_free(&list);
        bench_lora use = {0}, merge = {0};
        if (open_lora(&use, lora_path, m.model, be, 1.0f, err) ||
            open_lora(&merge, lora_path, m.model, be, 1.0f, err))
            return die("lora", err);
        double t0 = now();
        if (mgpu_lora_set_merge(merge.set, plan, NULL, err))
            return die("merge", err);
        double t_merge = now() - t0;
        t0 = now();
        if (mgpu_lora_set_strength(merge.set, 0, 0.5f, err))
            return die("strength", err);
        double t_change = now() - t0;
        mgpu_tensor_source with = plain, merged = mgpu_lora_set_source(merge.set, plain);
        with.lora = use.set;
        double t[3];
        mgpu_tensor_source *srcs[3] = {&with, &merged, &plain};
        for (int k = 0; k < 3; k++) /* the faster of two passes */
            for (int pass = 0; pass < 2; pass++) {
                t0 = now();
                if (mgpu_flux_forward(m.flux, srcs[k], &m.fi, m.out, be, err))
                    return die("forward", err);
                double dt = now() - t0;
                t[k] = pass == 0 || dt < t[k] ? dt : t[k];
            }
        printf("| rank %lld | %zu (%zu merged) | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
               (long long)ranks[r], mgpu_lora_set_adapter_count(use.set),
               mgpu_lora_set_merged_adapter_count(merge.set), t_merge, t_change, t[0], t[1], t[2]);
        fflush(stdout);
        close_lora(&use);
        close_lora(&merge);
    }
    mgpu_plan_free(plan);
    mgpu_backend_free(be);
    close_model(&m);
    remove(model_path);
    remove(inputs_path);
    remove(lora_path);
    return 0;
}

int main(int argc, char **argv)
{
    const char *work = argc > 1 ? argv[1] : "/tmp";
    mgpu_error err = {0};
    if (precision(work, &err))
        return 1;
    return timing(work, &err);
}
