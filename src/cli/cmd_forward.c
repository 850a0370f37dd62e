/* `mgpu forward`: one forward pass of a model on inputs from a safetensors
 * file, placed by a plan and run by the streaming executor; writes `out`.
 * Golden tests drive it, so the tensor names are stable: ComfyUI's FLUX
 * forward arguments x, timestep, context, y, guidance. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "core/units.h"
#include "exec/executor.h"
#include "models/flux.h"
#include "mgpu/plan.h"
#include "mgpu/safetensors.h"

typedef struct input_tensor {
    const char *name;
    float *data;
    int ndim;
    uint64_t shape[MGPU_MAX_DIMS];
} input_tensor;

static int load_input(mgpu_safetensors *st, const char *path, input_tensor *t, int required)
{
    const mgpu_tensor_info *info = mgpu_safetensors_find(st, t->name);
    if (!info) {
        if (required)
            cli_error("%s: no input tensor '%s'", path, t->name);
        return required ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
    }
    if (!mgpu_dtype_get_info(info->dtype)->floating) {
        cli_error("%s: input '%s' holds %s, not floats", path, t->name, mgpu_dtype_name(info->dtype));
        return CLI_EXIT_FAILURE;
    }
    t->data = malloc((size_t)(info->n_elems ? info->n_elems : 1) * sizeof(float));
    if (!t->data || mgpu_dequantize(info->dtype, info->data, t->data, info->n_elems) != MGPU_OK) {
        cli_error("%s: cannot read input '%s'", path, t->name);
        return CLI_EXIT_FAILURE;
    }
    t->ndim = info->ndim;
    memcpy(t->shape, info->shape, sizeof t->shape);
    return CLI_EXIT_OK;
}

static int shape_is(const input_tensor *t, const char *path, int ndim, const uint64_t *want,
                    const char *what)
{
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = t->shape[d] == want[d];
    if (!ok) {
        char got[96] = "[", exp[96] = "[";
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%" PRIu64, d ? ", " : "", t->shape[d]);
        for (int d = 0; d < ndim; d++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%" PRIu64, d ? ", " : "", want[d]);
        cli_error("%s: input '%s' has shape %s], expected %s] (%s)", path, t->name, got, exp, what);
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* --set num_heads=4 | axes_dim=4,6,6 | theta=10000 */
static int apply_setting(const char *kv, mgpu_flux_settings *set)
{
    const char *eq = strchr(kv, '=');
    if (!eq) {
        cli_error("forward: --set takes KEY=VALUE, not '%s'", kv);
        return CLI_EXIT_USAGE;
    }
    size_t klen = (size_t)(eq - kv);
    const char *v = eq + 1;
    char *end;
    if (klen == 9 && strncmp(kv, "num_heads", 9) == 0) {
        long n = strtol(v, &end, 10);
        if (*end || n <= 0 || n > 4096) {
            cli_error("forward: num_heads must be a positive integer, not '%s'", v);
            return CLI_EXIT_USAGE;
        }
        set->heads = n;
    } else if (klen == 8 && strncmp(kv, "axes_dim", 8) == 0) {
        int a[3], used = 0;
        if (sscanf(v, "%d,%d,%d%n", &a[0], &a[1], &a[2], &used) != 3 || v[used] != '\0' ||
            a[0] <= 0 || a[1] <= 0 || a[2] <= 0) {
            cli_error("forward: axes_dim takes three positive integers like 16,56,56, not '%s'", v);
            return CLI_EXIT_USAGE;
        }
        memcpy(set->axes_dim, a, sizeof a);
    } else if (klen == 5 && strncmp(kv, "theta", 5) == 0) {
        double t = strtod(v, &end);
        if (*end || !(t > 0) || !isfinite(t)) {
            cli_error("forward: theta must be a positive number, not '%s'", v);
            return CLI_EXIT_USAGE;
        }
        set->theta = (float)t;
    } else {
        cli_error("forward: unknown setting '%.*s' (num_heads, axes_dim, theta)", (int)klen, kv);
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

static int write_output(const char *path, const float *out, const uint64_t *shape)
{
    mgpu_error err = {0};
    mgpu_safetensors_writer *w;
    uint64_t n = shape[0] * shape[1] * shape[2] * shape[3];
    mgpu_status s = mgpu_safetensors_writer_create(path, &w, &err);
    if (s == MGPU_OK) {
        s = mgpu_safetensors_writer_add_tensor(w, "out", MGPU_DTYPE_F32, 4, shape, &err);
        if (s == MGPU_OK)
            s = mgpu_safetensors_writer_write(w, out, n * sizeof(float), &err);
        if (s == MGPU_OK)
            s = mgpu_safetensors_writer_finish(w, &err);
        else
            mgpu_safetensors_writer_abort(w);
    }
    if (s != MGPU_OK) {
        cli_error("%s", err.message);
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

static void print_stats(const mgpu_plan *plan, const mgpu_exec_stats *st, double seconds)
{
    uint64_t total = 0;
    for (size_t d = 0; d < plan->devices->count; d++)
        total += st->bytes_copied[d];
    fprintf(stderr, "mgpu: forward %.3f s on %s; streamed %.2f MiB in %" PRIu64 " blocks",
            seconds, plan->devices->devices[plan->compute].name, (double)total / 1048576.0,
            st->blocks_streamed);
    for (size_t d = 0; d < plan->devices->count; d++)
        if (st->bytes_copied[d])
            fprintf(stderr, ", %s %.2f MiB", plan->devices->devices[d].name,
                    (double)st->bytes_copied[d] / 1048576.0);
    double overlap = st->copy_seconds > 0 ? 1.0 - st->wait_seconds / st->copy_seconds : 1.0;
    fprintf(stderr,
            "; copying %.3f s, compute waited %.3f s (overlap %.0f%%); staging peak %.2f of %.2f "
            "MiB\n",
            st->copy_seconds, st->wait_seconds, 100.0 * (overlap < 0 ? 0 : overlap),
            (double)st->staging_peak_bytes / 1048576.0,
            (double)st->staging_budget_bytes / 1048576.0);
    /* what the compute device held: the plan's resident weights plus the
     * staging actually used, against the plan's weights plus the budget */
    const mgpu_plan_device *c = &plan->device[plan->compute];
    fprintf(stderr, "mgpu: %s held %.2f MiB of weights: %.2f resident by the plan + %.2f staging "
                    "peak (predicted at most %.2f)\n",
            plan->devices->devices[plan->compute].name,
            (double)(c->placed_bytes + st->staging_peak_bytes) / 1048576.0,
            (double)c->placed_bytes / 1048576.0, (double)st->staging_peak_bytes / 1048576.0,
            (double)(c->placed_bytes + st->staging_budget_bytes) / 1048576.0);
}

int cli_forward(int argc, char **argv)
{
    const char *model_path = NULL, *inputs_path = NULL, *out_path = NULL, *alloc = NULL,
               *spec = NULL, *compute = NULL;
    uint64_t staging = 0;
    int threads = 0, repeat = 1;
    mgpu_gemm_precision gemm = MGPU_GEMM_AUTO;
    mgpu_flux_settings set = {0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs("usage: mgpu forward --model FILE --inputs IN.safetensors -o OUT.safetensors\n"
                  "                    [--alloc STRING] [--compute DEV] [--devices SPEC]\n"
                  "                    [--staging SIZE] [--threads N] [--gemm auto|f32|bf16] [--repeat N]\n"
                  "                    [--set KEY=VALUE]...\n"
                  "  IN holds x [B,16,H,W], timestep [B], context [B,T,D], y [B,V] and,\n"
                  "  for FLUX.1-dev, guidance [B]; OUT gets out [B,16,H,W].\n"
                  "  --set num_heads=N | axes_dim=A,B,C | theta=T  (defaults: FLUX.1's)\n"
                  "  --gemm: CPU linear layers in f32, or bf16 with f32 accumulation (about 2x\n"
                  "  faster with AVX512-BF16/AMX); auto (default) picks bf16 where it is fast\n",
                  stdout);
            return CLI_EXIT_OK;
        }
        if (i + 1 >= argc) {
            cli_error("forward: %s needs a value", a);
            return CLI_EXIT_USAGE;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--model") == 0) {
            model_path = v;
        } else if (strcmp(a, "--inputs") == 0) {
            inputs_path = v;
        } else if (strcmp(a, "-o") == 0) {
            out_path = v;
        } else if (strcmp(a, "--alloc") == 0) {
            alloc = v;
        } else if (strcmp(a, "--devices") == 0) {
            spec = v;
        } else if (strcmp(a, "--compute") == 0) {
            compute = v;
        } else if (strcmp(a, "--threads") == 0) {
            threads = atoi(v);
        } else if (strcmp(a, "--gemm") == 0) {
            if (strcmp(v, "auto") == 0)
                gemm = MGPU_GEMM_AUTO;
            else if (strcmp(v, "f32") == 0)
                gemm = MGPU_GEMM_F32;
            else if (strcmp(v, "bf16") == 0)
                gemm = MGPU_GEMM_BF16;
            else {
                cli_error("forward: --gemm takes auto, f32 or bf16, not '%s'", v);
                return CLI_EXIT_USAGE;
            }
        } else if (strcmp(a, "--repeat") == 0) {
            repeat = atoi(v);
            if (repeat < 1 || repeat > 1000) {
                cli_error("forward: --repeat takes a count from 1 to 1000, not '%s'", v);
                return CLI_EXIT_USAGE;
            }
        } else if (strcmp(a, "--staging") == 0) {
            size_t unit_at;
            if (mgpu_parse_bytes(v, strlen(v), &staging, &unit_at) != MGPU_UNIT_OK) {
                cli_error("forward: --staging takes a size like 512mb, not '%s'", v);
                return CLI_EXIT_USAGE;
            }
        } else if (strcmp(a, "--set") == 0) {
            int rc = apply_setting(v, &set);
            if (rc != CLI_EXIT_OK)
                return rc;
        } else {
            cli_error("forward: unknown option '%s'", a);
            return CLI_EXIT_USAGE;
        }
    }
    if (!model_path || !inputs_path || !out_path) {
        cli_error("forward: --model, --inputs and -o are required");
        return CLI_EXIT_USAGE;
    }
    int rc = CLI_EXIT_OK;
    mgpu_error err = {0};
    mgpu_model *model = NULL;
    mgpu_safetensors *inputs = NULL;
    mgpu_flux *flux = NULL;
    mgpu_plan *plan = NULL;
    mgpu_executor *ex = NULL;
    mgpu_backend *be = NULL;
    float *out = NULL;
    input_tensor x = {"x", NULL, 0, {0}}, ts = {"timestep", NULL, 0, {0}},
                 ctx = {"context", NULL, 0, {0}}, y = {"y", NULL, 0, {0}},
                 g = {"guidance", NULL, 0, {0}};
    mgpu_device_list *devices = malloc(sizeof *devices);
    if (!devices) {
        cli_error("out of memory");
        return CLI_EXIT_FAILURE;
    }
    rc = cli_load_devices(spec, devices);
    if (rc == CLI_EXIT_OK && mgpu_model_open(model_path, &model, &err) != MGPU_OK) {
        cli_error("%s", err.message);
        rc = CLI_EXIT_FAILURE;
    }
    int component = -1;
    for (size_t c = 0; rc == CLI_EXIT_OK && c < mgpu_model_component_count(model); c++) {
        mgpu_arch arch = mgpu_model_component_at(model, c)->arch;
        if (arch == MGPU_ARCH_FLUX_DEV || arch == MGPU_ARCH_FLUX_SCHNELL) {
            component = (int)c;
            break;
        }
    }
    if (rc == CLI_EXIT_OK && component < 0) {
        cli_error("%s: no FLUX.1 diffusion model in it (found %s); mgpu forward runs FLUX.1 today",
                  model_path, mgpu_arch_name(mgpu_model_component_at(model, 0)->arch));
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK && mgpu_flux_load(model, component, &set, &flux, &err) != MGPU_OK) {
        cli_error("%s: %s", model_path, err.message);
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK && mgpu_safetensors_open(inputs_path, &inputs, &err) != MGPU_OK) {
        cli_error("%s", err.message);
        rc = CLI_EXIT_FAILURE;
    }
    const mgpu_flux_config *c = flux ? mgpu_flux_get_config(flux) : NULL;
    if (rc == CLI_EXIT_OK)
        rc = load_input(inputs, inputs_path, &x, 1);
    if (rc == CLI_EXIT_OK)
        rc = load_input(inputs, inputs_path, &ts, 1);
    if (rc == CLI_EXIT_OK)
        rc = load_input(inputs, inputs_path, &ctx, 1);
    if (rc == CLI_EXIT_OK)
        rc = load_input(inputs, inputs_path, &y, 1);
    if (rc == CLI_EXIT_OK)
        rc = load_input(inputs, inputs_path, &g, c->guidance);
    uint64_t batch = x.ndim == 4 ? x.shape[0] : 0;
    if (rc == CLI_EXIT_OK && x.ndim != 4) {
        cli_error("%s: input 'x' must be [B, %lld, H, W]", inputs_path, (long long)(c->in_channels / 4));
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK)
        rc = shape_is(&x, inputs_path, 4,
                      (const uint64_t[]){batch, (uint64_t)c->in_channels / 4, x.shape[2], x.shape[3]},
                      "latent channels");
    if (rc == CLI_EXIT_OK && (x.shape[2] % 2 || x.shape[3] % 2)) {
        cli_error("%s: latent height and width must be even, not %" PRIu64 "x%" PRIu64, inputs_path,
                  x.shape[2], x.shape[3]);
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK)
        rc = shape_is(&ts, inputs_path, 1, (const uint64_t[]){batch}, "one per batch item");
    if (rc == CLI_EXIT_OK && ctx.ndim != 3) {
        cli_error("%s: input 'context' must be [B, T, %lld]", inputs_path, (long long)c->context_dim);
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK)
        rc = shape_is(&ctx, inputs_path, 3,
                      (const uint64_t[]){batch, ctx.shape[1], (uint64_t)c->context_dim},
                      "the model's text width");
    if (rc == CLI_EXIT_OK)
        rc = shape_is(&y, inputs_path, 2, (const uint64_t[]){batch, (uint64_t)c->vec_dim},
                      "the model's pooled-vector width");
    if (rc == CLI_EXIT_OK && c->guidance)
        rc = shape_is(&g, inputs_path, 1, (const uint64_t[]){batch}, "one per batch item");
    if (rc == CLI_EXIT_OK) {
        mgpu_plan_request req = {.model = model, .component = component, .devices = devices,
                                 .alloc = alloc, .compute = compute,
                                 .pin_below_bytes = MGPU_PLAN_DEFAULT_PIN_BELOW};
        if (mgpu_plan_create(&req, &plan, &err) != MGPU_OK) {
            cli_error("%s", err.message);
            rc = CLI_EXIT_FAILURE;
        }
    }
    if (rc == CLI_EXIT_OK && (mgpu_backend_cpu_create(threads, &be, &err) != MGPU_OK ||
                              mgpu_backend_cpu_set_gemm(be, gemm, &err) != MGPU_OK)) {
        cli_error("%s", err.message);
        rc = CLI_EXIT_FAILURE;
    }
    mgpu_executor_options opts = {staging, 1};
    if (rc == CLI_EXIT_OK && mgpu_executor_create(plan, be, &opts, &ex, &err) != MGPU_OK) {
        cli_error("%s", err.message);
        rc = CLI_EXIT_FAILURE;
    }
    uint64_t out_shape[4] = {0};
    if (rc == CLI_EXIT_OK) {
        out_shape[0] = batch;
        out_shape[1] = (uint64_t)c->out_channels / 4;
        out_shape[2] = x.shape[2];
        out_shape[3] = x.shape[3];
        out = malloc((size_t)(out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3]) * sizeof(float));
        if (!out) {
            cli_error("out of memory");
            rc = CLI_EXIT_FAILURE;
        }
    }
    if (rc == CLI_EXIT_OK) {
        mgpu_flux_inputs in = {(int64_t)batch, (int64_t)x.shape[2], (int64_t)x.shape[3],
                               (int64_t)ctx.shape[1], x.data, ts.data, ctx.data, y.data, g.data};
        mgpu_tensor_source src = mgpu_executor_source(ex);
        /* --repeat runs the same pass again (as sampling steps would), for
         * timing: the first pass pays for page faults and a cold pipeline */
        double total = 0;
        for (int step = 0; step < repeat && rc == CLI_EXIT_OK; step++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if (mgpu_flux_forward(flux, &src, &in, out, be, &err) != MGPU_OK) {
                cli_error("%s", err.message);
                rc = CLI_EXIT_FAILURE;
            }
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
            total += seconds;
            if (repeat > 1 && rc == CLI_EXIT_OK)
                fprintf(stderr, "mgpu: pass %d: %.3f s\n", step + 1, seconds);
        }
        if (rc == CLI_EXIT_OK)
            rc = write_output(out_path, out, out_shape);
        if (rc == CLI_EXIT_OK) {
            mgpu_exec_stats st;
            mgpu_executor_stats(ex, &st);
            print_stats(plan, &st, total);
            fprintf(stderr, "mgpu: computed on %s, %s GEMM\n", be->name,
                    mgpu_backend_cpu_gemm_name(be));
        }
    }
    free(out);
    free(x.data);
    free(ts.data);
    free(ctx.data);
    free(y.data);
    free(g.data);
    mgpu_executor_free(ex);
    mgpu_backend_free(be);
    mgpu_plan_free(plan);
    mgpu_flux_free(flux);
    mgpu_safetensors_close(inputs);
    mgpu_model_close(model);
    free(devices);
    return rc;
}
