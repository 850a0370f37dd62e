/* `mgpu forward`: one forward pass of a model on inputs from a safetensors
 * file, placed by a plan and run by the streaming executor; writes `out`
 * (and CLIP's `pooled`). Golden tests drive it, so the tensor names are
 * stable: ComfyUI's FLUX forward arguments x, timestep, context, y,
 * guidance; `tokens` for CLIP and T5; `z` (decode) or `x` (encode) for the
 * VAE. */
#include <inttypes.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "core/units.h"
#include "exec/executor.h"
#include "lora/lora_apply.h"
#include "models/clip.h"
#include "models/flux.h"
#include "models/t5.h"
#include "models/vae.h"
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
    if (info->dtype == MGPU_DTYPE_BOOL) {
        cli_error("%s: input '%s' holds %s, not numbers", path, t->name, mgpu_dtype_name(info->dtype));
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

int cli_flux_setting(const char *kv, mgpu_flux_settings *set)
{
    const char *eq = strchr(kv, '=');
    if (!eq) {
        cli_error("--set takes KEY=VALUE, not '%s'", kv);
        return CLI_EXIT_USAGE;
    }
    size_t klen = (size_t)(eq - kv);
    const char *v = eq + 1;
    char *end;
    if (klen == 9 && strncmp(kv, "num_heads", 9) == 0) {
        long n = strtol(v, &end, 10);
        if (*end || n <= 0 || n > 4096) {
            cli_error("--set: num_heads must be a positive integer, not '%s'", v);
            return CLI_EXIT_USAGE;
        }
        set->heads = n;
    } else if (klen == 8 && strncmp(kv, "axes_dim", 8) == 0) {
        int a[3], used = 0;
        if (sscanf(v, "%d,%d,%d%n", &a[0], &a[1], &a[2], &used) != 3 || v[used] != '\0' ||
            a[0] <= 0 || a[1] <= 0 || a[2] <= 0) {
            cli_error("--set: axes_dim takes three positive integers like 16,56,56, not '%s'", v);
            return CLI_EXIT_USAGE;
        }
        memcpy(set->axes_dim, a, sizeof a);
    } else if (klen == 5 && strncmp(kv, "theta", 5) == 0) {
        double t = strtod(v, &end);
        if (*end || !(t > 0) || !isfinite(t)) {
            cli_error("--set: theta must be a positive number, not '%s'", v);
            return CLI_EXIT_USAGE;
        }
        set->theta = (float)t;
    } else {
        cli_error("--set: unknown setting '%.*s' (num_heads, axes_dim, theta)", (int)klen, kv);
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

/* What a model's forward produced: named f32 tensors for OUT. */
typedef struct output {
    const char *name;
    float *data;
    int ndim;
    uint64_t shape[4];
} output;

enum { MAX_OUTPUTS = 2 };

static int write_outputs(const char *path, const output *outs, int n)
{
    mgpu_error err = {0};
    mgpu_safetensors_writer *w;
    mgpu_status s = mgpu_safetensors_writer_create(path, &w, &err);
    for (int i = 0; s == MGPU_OK && i < n; i++)
        s = mgpu_safetensors_writer_add_tensor(w, outs[i].name, MGPU_DTYPE_F32, outs[i].ndim,
                                               outs[i].shape, &err);
    for (int i = 0; s == MGPU_OK && i < n; i++) {
        uint64_t count = 1;
        for (int d = 0; d < outs[i].ndim; d++)
            count *= outs[i].shape[d];
        s = mgpu_safetensors_writer_write(w, outs[i].data, count * sizeof(float), &err);
    }
    if (s == MGPU_OK)
        s = mgpu_safetensors_writer_finish(w, &err);
    else if (w)
        mgpu_safetensors_writer_abort(w);
    if (s != MGPU_OK) {
        cli_error("%s", err.message);
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* One run of a model: the pieces every architecture shares. */
typedef struct fwd {
    const char *inputs_path;
    mgpu_safetensors *inputs;
    const mgpu_model *model;
    int component;
    mgpu_tensor_source src;
    mgpu_backend *be;
    int repeat;
    double seconds; /* all passes */
    output out[MAX_OUTPUTS];
    int n_out;
} fwd;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A new output of the given shape, zeroed. */
static float *add_output(fwd *f, const char *name, int ndim, const uint64_t *shape)
{
    output *o = &f->out[f->n_out];
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    o->data = calloc((size_t)(n ? n : 1), sizeof(float));
    if (!o->data) {
        cli_error("out of memory");
        return NULL;
    }
    o->name = name;
    o->ndim = ndim;
    memcpy(o->shape, shape, (size_t)ndim * sizeof *shape);
    f->n_out++;
    return o->data;
}

/* Runs `pass` repeat times (as sampling steps would), timing each: the
 * first pass also pays for page faults and a cold pipeline. */
static int repeat_passes(fwd *f, mgpu_status (*pass)(fwd *f, void *ctx, mgpu_error *err),
                         void *ctx)
{
    for (int step = 0; step < f->repeat; step++) {
        mgpu_error err = {0};
        double t0 = now();
        if (pass(f, ctx, &err) != MGPU_OK) {
            cli_error("%s", err.message);
            return CLI_EXIT_FAILURE;
        }
        double seconds = now() - t0;
        f->seconds += seconds;
        if (f->repeat > 1)
            fprintf(stderr, "mgpu: pass %d: %.3f s\n", step + 1, seconds);
    }
    return CLI_EXIT_OK;
}

/* ---- FLUX.1 ------------------------------------------------------------ */

typedef struct flux_run {
    const mgpu_flux *flux;
    mgpu_flux_inputs in;
    float *out;
} flux_run;

static mgpu_status flux_pass(fwd *f, void *ctx, mgpu_error *err)
{
    flux_run *r = ctx;
    return mgpu_flux_forward(r->flux, &f->src, &r->in, r->out, f->be, err);
}

static int run_flux(fwd *f, const mgpu_flux_settings *set)
{
    const char *inputs_path = f->inputs_path;
    mgpu_safetensors *inputs = f->inputs;
    mgpu_error err = {0};
    mgpu_flux *flux = NULL;
    int rc = CLI_EXIT_OK;
    input_tensor x = {"x", NULL, 0, {0}}, ts = {"timestep", NULL, 0, {0}},
                 ctx = {"context", NULL, 0, {0}}, y = {"y", NULL, 0, {0}},
                 g = {"guidance", NULL, 0, {0}};
    if (mgpu_flux_load(f->model, f->component, set, &flux, &err) != MGPU_OK) {
        cli_error("%s", err.message);
        return CLI_EXIT_FAILURE;
    }
    const mgpu_flux_config *c = mgpu_flux_get_config(flux);
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
    flux_run r = {flux, {0}, NULL};
    if (rc == CLI_EXIT_OK) {
        r.out = add_output(f, "out", 4,
                           (const uint64_t[]){batch, (uint64_t)c->out_channels / 4, x.shape[2],
                                              x.shape[3]});
        rc = r.out ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK) {
        r.in = (mgpu_flux_inputs){(int64_t)batch, (int64_t)x.shape[2], (int64_t)x.shape[3],
                                  (int64_t)ctx.shape[1], x.data, ts.data, ctx.data, y.data, g.data};
        rc = repeat_passes(f, flux_pass, &r);
    }
    free(x.data);
    free(ts.data);
    free(ctx.data);
    free(y.data);
    free(g.data);
    mgpu_flux_free(flux);
    return rc;
}

/* ---- CLIP and T5: tokens [B, N] ----------------------------------------- */

/* tokens as int32 ids; *batch and *n from its [B, N] (or [N]) shape. */
static int load_tokens(fwd *f, int32_t **ids, int64_t *batch, int64_t *n)
{
    input_tensor t = {"tokens", NULL, 0, {0}};
    int rc = load_input(f->inputs, f->inputs_path, &t, 1);
    if (rc == CLI_EXIT_OK && (t.ndim < 1 || t.ndim > 2 || t.shape[t.ndim - 1] == 0)) {
        cli_error("%s: input 'tokens' must be [B, N] token ids", f->inputs_path);
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK) {
        *batch = t.ndim == 2 ? (int64_t)t.shape[0] : 1;
        *n = (int64_t)t.shape[t.ndim - 1];
        *ids = malloc((size_t)(*batch * *n) * sizeof **ids);
        if (!*ids) {
            cli_error("out of memory");
            rc = CLI_EXIT_FAILURE;
        }
    }
    for (int64_t i = 0; rc == CLI_EXIT_OK && i < *batch * *n; i++) {
        float v = t.data[i];
        if (!(v >= -2147483648.0f && v < 2147483648.0f) || v != floorf(v)) {
            cli_error("%s: tokens[%lld] = %g is not a token id", f->inputs_path, (long long)i,
                      (double)v);
            rc = CLI_EXIT_FAILURE;
        } else {
            (*ids)[i] = (int32_t)v;
        }
    }
    free(t.data);
    return rc;
}

typedef struct text_run {
    const mgpu_clip *clip;
    const mgpu_t5 *t5;
    const int32_t *ids;
    int64_t batch, n, width;
    float *hidden, *pooled;
} text_run;

/* CLIP's pooled row: the first end-of-text token. As Hugging Face does for
 * the original CLIP vocabulary, whose end token 49407 is the largest id,
 * that is the first position of the largest id in the row. */
static int64_t pooled_index(const int32_t *ids, int64_t n)
{
    int64_t at = 0;
    for (int64_t i = 1; i < n; i++)
        if (ids[i] > ids[at])
            at = i;
    return at;
}

static mgpu_status text_pass(fwd *f, void *ctx, mgpu_error *err)
{
    text_run *r = ctx;
    mgpu_status s = MGPU_OK;
    for (int64_t b = 0; s == MGPU_OK && b < r->batch; b++) {
        const int32_t *ids = r->ids + b * r->n;
        float *hidden = r->hidden + b * r->n * r->width;
        s = r->clip ? mgpu_clip_forward(r->clip, f->be, &f->src, ids, r->n, pooled_index(ids, r->n),
                                        hidden, r->pooled + b * r->width, err)
                    : mgpu_t5_forward(r->t5, f->be, &f->src, ids, r->n, hidden, err);
    }
    return s;
}

static int run_text(fwd *f, bool clip)
{
    mgpu_error err = {0};
    text_run r = {0};
    mgpu_clip *c = NULL;
    mgpu_t5 *t = NULL;
    int32_t *ids = NULL;
    int rc = CLI_EXIT_OK;
    if ((clip ? mgpu_clip_load(f->model, f->component, &c, &err)
              : mgpu_t5_load(f->model, f->component, &t, &err)) != MGPU_OK) {
        cli_error("%s", err.message);
        return CLI_EXIT_FAILURE;
    }
    rc = load_tokens(f, &ids, &r.batch, &r.n);
    if (rc == CLI_EXIT_OK) {
        r.clip = c, r.t5 = t, r.ids = ids;
        r.width = clip ? mgpu_clip_get_config(c)->hidden : mgpu_t5_get_config(t)->d_model;
        r.hidden = add_output(f, "out", 3,
                              (const uint64_t[]){(uint64_t)r.batch, (uint64_t)r.n,
                                                 (uint64_t)r.width});
        if (clip && r.hidden)
            r.pooled = add_output(f, "pooled", 2,
                                  (const uint64_t[]){(uint64_t)r.batch, (uint64_t)r.width});
        if (!r.hidden || (clip && !r.pooled))
            rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK)
        rc = repeat_passes(f, text_pass, &r);
    free(ids);
    mgpu_clip_free(c);
    mgpu_t5_free(t);
    return rc;
}

/* ---- the VAE: z [B, C, h, w] -> image, or x [B, 3, H, W] -> latent ------ */

typedef struct vae_run {
    const mgpu_vae *vae;
    bool encode;
    const float *in;
    float *out;
    int64_t batch, h, w; /* of the input */
    int64_t in_c, out_c, scale;
    mgpu_vae_tiling tiling;
} vae_run;

static mgpu_status vae_pass(fwd *f, void *ctx, mgpu_error *err)
{
    vae_run *r = ctx;
    mgpu_status s = MGPU_OK;
    int64_t in_size = r->in_c * r->h * r->w;
    int64_t out_size = r->encode ? r->out_c * (r->h / r->scale) * (r->w / r->scale)
                                 : r->out_c * (r->h * r->scale) * (r->w * r->scale);
    for (int64_t b = 0; s == MGPU_OK && b < r->batch; b++)
        s = r->encode ? mgpu_vae_encode(r->vae, f->be, &f->src, r->in + b * in_size, r->h, r->w,
                                        r->out + b * out_size, err)
                      : mgpu_vae_decode(r->vae, f->be, &f->src, r->in + b * in_size, r->h, r->w,
                                        &r->tiling, r->out + b * out_size, err);
    return s;
}

static int run_vae(fwd *f, int64_t tile)
{
    mgpu_error err = {0};
    mgpu_vae *vae = NULL;
    if (mgpu_vae_load(f->model, f->component, &vae, &err) != MGPU_OK) {
        cli_error("%s", err.message);
        return CLI_EXIT_FAILURE;
    }
    const mgpu_vae_config *c = mgpu_vae_get_config(vae);
    bool encode = mgpu_safetensors_find(f->inputs, "z") == NULL;
    input_tensor t = {encode ? "x" : "z", NULL, 0, {0}};
    int rc = load_input(f->inputs, f->inputs_path, &t, 1);
    int64_t in_c = encode ? c->image_channels : c->z_channels;
    if (rc == CLI_EXIT_OK && (t.ndim != 4 || t.shape[1] != (uint64_t)in_c)) {
        cli_error("%s: input '%s' must be [B, %lld, H, W] (%s)", f->inputs_path, t.name,
                  (long long)in_c, encode ? "an image to encode" : "latents to decode");
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK && encode && (t.shape[2] % (uint64_t)c->downscale ||
                                        t.shape[3] % (uint64_t)c->downscale)) {
        cli_error("%s: image size %" PRIu64 "x%" PRIu64 " is not a multiple of %lld",
                  f->inputs_path, t.shape[2], t.shape[3], (long long)c->downscale);
        rc = CLI_EXIT_FAILURE;
    }
    vae_run r = {vae, encode, t.data, NULL, 0, 0, 0, in_c,
                 encode ? c->z_channels : c->image_channels, c->downscale, {tile, tile / 4}};
    if (rc == CLI_EXIT_OK) {
        r.batch = (int64_t)t.shape[0], r.h = (int64_t)t.shape[2], r.w = (int64_t)t.shape[3];
        uint64_t oh = encode ? t.shape[2] / (uint64_t)c->downscale : t.shape[2] * (uint64_t)c->downscale;
        uint64_t ow = encode ? t.shape[3] / (uint64_t)c->downscale : t.shape[3] * (uint64_t)c->downscale;
        r.out = add_output(f, "out", 4, (const uint64_t[]){t.shape[0], (uint64_t)r.out_c, oh, ow});
        rc = r.out ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK)
        rc = repeat_passes(f, vae_pass, &r);
    free(t.data);
    mgpu_vae_free(vae);
    return rc;
}

int cli_parse_lora(const char *arg, char *path, size_t size, float *strength)
{
    const char *colon = strrchr(arg, ':');
    char *end = NULL;
    double v = colon ? strtod(colon + 1, &end) : 1.0;
    bool has_strength = colon && colon[1] && end && !*end;
    if (has_strength && !(isfinite(v) && v >= -100.0 && v <= 100.0)) {
        cli_error("--lora %s: the strength must be a number from -100 to 100", arg);
        return CLI_EXIT_USAGE;
    }
    size_t n = has_strength ? (size_t)(colon - arg) : strlen(arg);
    if (n == 0 || n >= size) {
        cli_error("--lora takes FILE or FILE:STRENGTH, not '%s'", arg);
        return CLI_EXIT_USAGE;
    }
    memcpy(path, arg, n);
    path[n] = '\0';
    *strength = has_strength ? (float)v : 1.0f;
    return CLI_EXIT_OK;
}

int cli_parse_gemm(const char *v, mgpu_gemm_precision *out)
{
    if (strcmp(v, "auto") == 0)
        *out = MGPU_GEMM_AUTO;
    else if (strcmp(v, "f32") == 0)
        *out = MGPU_GEMM_F32;
    else if (strcmp(v, "bf16") == 0)
        *out = MGPU_GEMM_BF16;
    else if (strcmp(v, "fp8") == 0)
        *out = MGPU_GEMM_FP8;
    else {
        cli_error("--gemm takes auto, f32, bf16 or fp8, not '%s'", v);
        return CLI_EXIT_USAGE;
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
    if (st->pinned_bytes || st->pageable_bytes || st->donor_bytes)
        fprintf(stderr,
                "mgpu: streamed from %.2f MiB of pinned RAM, %.2f MiB of pageable RAM (could not "
                "pin), %.2f MiB on donor GPUs\n",
                (double)st->pinned_bytes / 1048576.0, (double)st->pageable_bytes / 1048576.0,
                (double)st->donor_bytes / 1048576.0);
}

/* The architectures forward runs, and the --component names for them. */
static const char *runnable(mgpu_arch arch)
{
    switch (arch) {
    case MGPU_ARCH_FLUX_DEV:
    case MGPU_ARCH_FLUX_SCHNELL:
        return "flux";
    case MGPU_ARCH_CLIP_L:
        return "clip";
    case MGPU_ARCH_T5:
    case MGPU_ARCH_UMT5:
        return "t5";
    case MGPU_ARCH_VAE_FLUX:
        return "vae";
    default:
        return NULL;
    }
}

int cli_forward(int argc, char **argv)
{
    const char *model_path = NULL, *inputs_path = NULL, *out_path = NULL, *alloc = NULL,
               *spec = NULL, *compute = NULL, *want = NULL;
    uint64_t staging = 0;
    int threads = 0, repeat = 1;
    long tile = 0;
    mgpu_gemm_precision gemm = MGPU_GEMM_AUTO;
    mgpu_flux_settings set = {0};
    static char lora_path[CLI_MAX_LORAS][4096];
    float lora_strength[CLI_MAX_LORAS];
    size_t n_lora = 0;
    bool lora_merge = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--lora-merge") == 0) {
            lora_merge = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs("usage: mgpu forward --model FILE --inputs IN.safetensors -o OUT.safetensors\n"
                  "                    [--component flux|clip|t5|vae] [--alloc STRING]\n"
                  "                    [--compute DEV] [--devices SPEC] [--staging SIZE]\n"
                  "                    [--threads N] [--gemm auto|f32|bf16|fp8] [--repeat N]\n"
                  "                    [--vae-tile N] [--lora FILE[:STRENGTH]]... [--lora-merge]\n"
                  "                    [--set KEY=VALUE]...\n"
                  "  FLUX.1: IN holds x [B,16,H,W], timestep [B], context [B,T,D], y [B,V] and,\n"
                  "    for dev, guidance [B]; OUT gets out [B,16,H,W].\n"
                  "  CLIP-L: tokens [B,N] -> out [B,N,D] (last hidden state), pooled [B,D]\n"
                  "    (at the first end token, the largest id of each row).\n"
                  "  T5: tokens [B,N] -> out [B,N,D].\n"
                  "  VAE: z [B,16,h,w] -> out [B,3,8h,8w] (decode), or x [B,3,H,W] -> out\n"
                  "    [B,16,H/8,W/8] (encode); latents in the diffusion model's scale.\n"
                  "  --component picks one model of an all-in-one file (default: the first).\n"
                  "  --set num_heads=N | axes_dim=A,B,C | theta=T  (defaults: FLUX.1's)\n"
                  "  --gemm: CPU linear layers in f32, or bf16 with f32 accumulation (about 2x\n"
                  "  faster with AVX512-BF16/AMX); auto (default) picks bf16 where it is fast.\n"
                  "  On a GPU: bf16 tensor cores (auto, bf16) or f32; fp8 runs F8_E4M3 weights\n"
                  "  on fp8 tensor cores (compute capability 8.9+) with the activations rounded\n"
                  "  to e4m3: faster, less precise\n"
                  "  --lora-merge: merge LoRAs once into F32/F16/BF16 weights resident on the\n"
                  "  compute device (as fast as no LoRA, rounds the sum to the weight's dtype);\n"
                  "  by default they are applied in f32 at every use\n",
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
        } else if (strcmp(a, "--lora") == 0) {
            if (n_lora == CLI_MAX_LORAS) {
                cli_error("forward: at most %d LoRAs", CLI_MAX_LORAS);
                return CLI_EXIT_USAGE;
            }
            if (cli_parse_lora(v, lora_path[n_lora], sizeof lora_path[0],
                               &lora_strength[n_lora]) != CLI_EXIT_OK)
                return CLI_EXIT_USAGE;
            n_lora++;
        } else if (strcmp(a, "--component") == 0) {
            want = v;
            if (strcmp(v, "flux") && strcmp(v, "clip") && strcmp(v, "t5") && strcmp(v, "vae")) {
                cli_error("forward: --component takes flux, clip, t5 or vae, not '%s'", v);
                return CLI_EXIT_USAGE;
            }
        } else if (strcmp(a, "--threads") == 0) {
            threads = atoi(v);
        } else if (strcmp(a, "--vae-tile") == 0) {
            char *end;
            tile = strtol(v, &end, 10);
            if (!*v || *end || tile < 0 || tile > 1024) {
                cli_error("forward: --vae-tile takes latent pixels from 0 to 1024, not '%s'", v);
                return CLI_EXIT_USAGE;
            }
        } else if (strcmp(a, "--gemm") == 0) {
            if (cli_parse_gemm(v, &gemm) != CLI_EXIT_OK)
                return CLI_EXIT_USAGE;
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
            int rc = cli_flux_setting(v, &set);
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
    mgpu_plan *plan = NULL;
    mgpu_executor *ex = NULL;
    fwd f = {.inputs_path = inputs_path, .repeat = repeat};
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
    const char *kind = NULL;
    for (size_t c = 0; rc == CLI_EXIT_OK && c < mgpu_model_component_count(model) && !kind; c++) {
        const char *k = runnable(mgpu_model_component_at(model, c)->arch);
        if (k && (!want || strcmp(k, want) == 0))
            component = (int)c, kind = k;
    }
    if (rc == CLI_EXIT_OK && !kind) {
        char found[256] = "";
        for (size_t c = 0; c < mgpu_model_component_count(model); c++)
            snprintf(found + strlen(found), sizeof found - strlen(found), "%s%s", c ? ", " : "",
                     mgpu_arch_name(mgpu_model_component_at(model, c)->arch));
        cli_error("%s: no %s model in it (found %s); mgpu forward runs FLUX.1, CLIP-L, T5 and "
                  "the FLUX VAE",
                  model_path, want ? want : "runnable", found);
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK && mgpu_safetensors_open(inputs_path, &f.inputs, &err) != MGPU_OK) {
        cli_error("%s", err.message);
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK) {
        mgpu_plan_request req = {.model = model, .component = component, .devices = devices,
                                 .alloc = alloc, .compute = compute,
                                 .pin_below_bytes = MGPU_PLAN_DEFAULT_PIN_BELOW};
        if (mgpu_plan_create(&req, &plan, &err) != MGPU_OK) {
            cli_error("%s", err.message);
            rc = CLI_EXIT_FAILURE;
        }
    }
    if (rc == CLI_EXIT_OK &&
        mgpu_backend_for_device(&devices->devices[plan->compute], threads, gemm, &f.be, &err) !=
            MGPU_OK) {
        cli_error("%s", err.message);
        rc = CLI_EXIT_FAILURE;
    }
    /* real donor GPUs hold their share of the weights (peer copies) */
    mgpu_backend *donors[MGPU_MAX_DEVICES] = {0};
    if (rc == CLI_EXIT_OK) {
        donors[plan->compute] = f.be;
        if (mgpu_executor_open_donors(plan, gemm, donors, &err) != MGPU_OK) {
            cli_error("%s", err.message);
            rc = CLI_EXIT_FAILURE;
        }
    }
    mgpu_lora *loras[CLI_MAX_LORAS] = {0};
    mgpu_lora_resolved *resolved[CLI_MAX_LORAS] = {0};
    mgpu_lora_set *lora_set = NULL;
    mgpu_lora_part part = {model, component};
    for (size_t i = 0; rc == CLI_EXIT_OK && i < n_lora; i++)
        if (mgpu_lora_open(lora_path[i], &loras[i], &err) != MGPU_OK ||
            mgpu_lora_resolve(loras[i], &part, 1, &resolved[i], &err) != MGPU_OK) {
            cli_error("%s", err.message);
            rc = CLI_EXIT_FAILURE;
        }
    if (rc == CLI_EXIT_OK && n_lora &&
        (mgpu_lora_set_create(f.be, model, (const mgpu_lora_resolved *const *)resolved,
                              lora_strength, n_lora, 0, &lora_set, &err) != MGPU_OK ||
         (lora_merge && mgpu_lora_set_merge(lora_set, plan, NULL, &err) != MGPU_OK))) {
        cli_error("%s", err.message);
        rc = CLI_EXIT_FAILURE;
    }
    /* after the LoRA set: weights it merged are not uploaded again */
    mgpu_executor_options opts = {
        .staging_bytes = staging,
        .pace_simulated = 1,
        .skip_resident = lora_set ? mgpu_lora_set_merged_mask(lora_set) : NULL,
        .device_backends = donors,
    };
    if (rc == CLI_EXIT_OK && mgpu_executor_create(plan, f.be, &opts, &ex, &err) != MGPU_OK) {
        cli_error("%s", err.message);
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK) {
        f.model = model;
        f.component = component;
        f.src = mgpu_executor_source(ex);
        if (lora_set)
            f.src = mgpu_lora_set_source(lora_set, f.src);
        if (strcmp(kind, "flux") == 0)
            rc = run_flux(&f, &set);
        else if (strcmp(kind, "vae") == 0)
            rc = run_vae(&f, tile);
        else
            rc = run_text(&f, strcmp(kind, "clip") == 0);
    }
    if (rc == CLI_EXIT_OK)
        rc = write_outputs(out_path, f.out, f.n_out);
    if (rc == CLI_EXIT_OK) {
        mgpu_exec_stats st;
        mgpu_executor_stats(ex, &st);
        print_stats(plan, &st, f.seconds);
        fprintf(stderr, "mgpu: computed on %s, %s GEMM\n", f.be->name,
                mgpu_backend_gemm_name(f.be));
        if (lora_set)
            fprintf(stderr, "mgpu: %zu LoRA adapters, %zu merged into their weights\n",
                    mgpu_lora_set_adapter_count(lora_set),
                    mgpu_lora_set_merged_adapter_count(lora_set));
    }
    for (int i = 0; i < f.n_out; i++)
        free(f.out[i].data);
    mgpu_executor_free(ex);
    mgpu_lora_set_free(lora_set);
    for (size_t i = 0; i < n_lora; i++) {
        mgpu_lora_resolved_free(resolved[i]);
        mgpu_lora_free(loras[i]);
    }
    for (int d = 0; d < MGPU_MAX_DEVICES; d++)
        if (donors[d] && donors[d] != f.be)
            mgpu_backend_free(donors[d]);
    mgpu_backend_free(f.be);
    mgpu_safetensors_close(f.inputs);
    mgpu_plan_free(plan);
    mgpu_model_close(model);
    free(devices);
    return rc;
}
