/* See synth_write.h. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgpu/gguf.h"
#include "mgpu/safetensors.h"
#include "synth_write.h"

/* splitmix64: small, fast, and the same on every platform. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* The dtype a tensor is stored in, given the requested one. */
mgpu_dtype synth_storage_dtype(const synth_tensor *t, const synth_options *o)
{
    const mgpu_dtype_info *info = mgpu_dtype_get_info(o->dtype);
    if (t->ndim < 2)
        return o->gguf || !info->quantized ? (o->dtype == MGPU_DTYPE_F8_E4M3 ||
                                              o->dtype == MGPU_DTYPE_F8_E5M2 || info->quantized
                                                  ? MGPU_DTYPE_F32
                                                  : o->dtype)
                                           : MGPU_DTYPE_F32;
    if (info->quantized && t->shape[t->ndim - 1] % info->block_elems != 0)
        return MGPU_DTYPE_F16;
    return o->dtype;
}

/* Weights: uniform in +-1/sqrt(row length); 1-D norm scales near 1 and
 * biases near 0, so tiny models give sane activations. */
static void fill(float *v, uint64_t n, uint64_t *state, const synth_tensor *t)
{
    int is_norm_scale = t->ndim == 1 && (strstr(t->name, "norm") || strstr(t->name, "ln_")) &&
                        !strstr(t->name, "bias");
    double row = t->ndim ? (double)t->shape[t->ndim - 1] : 1.0;
    double amp = t->ndim >= 2 ? 1.0 / sqrt(row) : 0.02;
    for (uint64_t i = 0; i < n; i++) {
        double u = (double)(next_random(state) >> 11) * 0x1p-53 * 2.0 - 1.0;
        v[i] = (float)(is_norm_scale ? 1.0 + 0.1 * u : amp * u);
    }
}

/* Drops the tensors of blocks numbered max and above ("double_blocks.N."). */
static void keep_blocks_below(synth_list *list, int max)
{
    size_t kept = 0;
    for (size_t i = 0; i < list->count; i++) {
        const char *b = strstr(list->items[i].name, "_blocks.");
        if (!b || atoi(b + 8) < max)
            list->items[kept++] = list->items[i];
    }
    list->count = kept;
}

mgpu_status synth_write(const synth_options *o, mgpu_error *err)
{
    synth_list list = {0};
    if (!synth_arch_tensors(o->arch, o->scale, &list)) {
        snprintf(err->message, sizeof err->message, "unknown architecture '%s'", o->arch);
        return err->status = MGPU_ERR_ARGUMENT;
    }
    if (o->max_blocks > 0)
        keep_blocks_below(&list, o->max_blocks);
    mgpu_status s = MGPU_OK;
    mgpu_safetensors_writer *sw = NULL;
    mgpu_gguf_writer *gw = NULL;
    s = o->gguf ? mgpu_gguf_writer_create(o->out, &gw, err)
                : mgpu_safetensors_writer_create(o->out, &sw, err);
    char name[512];
    if (s == MGPU_OK) {
        if (o->gguf) {
            s = mgpu_gguf_writer_add_string(gw, "general.architecture", o->arch, err);
            if (s == MGPU_OK)
                s = mgpu_gguf_writer_add_string(gw, "general.name", "mgpu synthetic", err);
        } else {
            s = mgpu_safetensors_writer_add_metadata(sw, "format", "pt", err);
            if (s == MGPU_OK)
                s = mgpu_safetensors_writer_add_metadata(sw, "mgpu.synthetic", o->arch, err);
        }
    }
    for (size_t i = 0; i < list.count && s == MGPU_OK; i++) {
        const synth_tensor *t = &list.items[i];
        uint64_t shape[MGPU_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++)
            shape[d] = (uint64_t)t->shape[d];
        snprintf(name, sizeof name, "%s%s", o->prefix, t->name);
        mgpu_dtype dt = synth_storage_dtype(t, o);
        s = o->gguf ? mgpu_gguf_writer_add_tensor(gw, name, dt, t->ndim, shape, err)
                    : mgpu_safetensors_writer_add_tensor(sw, name, dt, t->ndim, shape, err);
    }
    /* Data, a few rows at a time so full-size tensors never sit in memory
     * as f32 all at once. */
    enum { CHUNK_ELEMS = 1 << 22 };
    float *values = malloc(CHUNK_ELEMS * sizeof(float));
    uint8_t *encoded = malloc(CHUNK_ELEMS * sizeof(float));
    if (!values || !encoded) {
        snprintf(err->message, sizeof err->message, "out of memory");
        s = MGPU_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < list.count && s == MGPU_OK; i++) {
        const synth_tensor *t = &list.items[i];
        mgpu_dtype dt = synth_storage_dtype(t, o);
        uint64_t n = 1;
        for (int d = 0; d < t->ndim; d++)
            n *= (uint64_t)t->shape[d];
        uint64_t row = t->ndim ? (uint64_t)t->shape[t->ndim - 1] : 1;
        uint64_t rows_per_chunk = row >= CHUNK_ELEMS ? 1 : CHUNK_ELEMS / row;
        uint64_t state = o->seed ^ hash_name(t->name);
        for (uint64_t done = 0; done < n && s == MGPU_OK;) {
            uint64_t count = rows_per_chunk * row;
            if (count > n - done)
                count = n - done;
            uint64_t bytes;
            mgpu_dtype_bytes_for(dt, count, &bytes);
            if (count > CHUNK_ELEMS) {
                /* a single row longer than a chunk: only in sparse mode */
                if (!o->sparse) {
                    snprintf(err->message, sizeof err->message,
                             "tensor '%s': rows longer than %d values need --sparse", t->name,
                             (int)CHUNK_ELEMS);
                    s = MGPU_ERR_UNSUPPORTED;
                    break;
                }
            }
            const void *data = NULL;
            if (!o->sparse) {
                fill(values, count, &state, t);
                s = mgpu_quantize(dt, values, encoded, count);
                data = encoded;
            }
            if (s != MGPU_OK)
                snprintf(err->message, sizeof err->message, "tensor '%s': cannot encode %s",
                         t->name, mgpu_dtype_name(dt));
            if (s == MGPU_OK)
                s = o->gguf ? mgpu_gguf_writer_write(gw, data, bytes, err)
                            : mgpu_safetensors_writer_write(sw, data, bytes, err);
            done += count;
        }
    }
    free(values);
    free(encoded);
    if (s == MGPU_OK)
        s = o->gguf ? mgpu_gguf_writer_finish(gw, err) : mgpu_safetensors_writer_finish(sw, err);
    else if (gw)
        mgpu_gguf_writer_abort(gw);
    else if (sw)
        mgpu_safetensors_writer_abort(sw);
    synth_list_free(&list);
    if (s != MGPU_OK) {
        if (!err->message[0])
            snprintf(err->message, sizeof err->message, "%s", mgpu_status_name(s));
        err->status = s;
    }
    return s;
}


static int64_t shape_of(const synth_list *l, const char *name, int dim)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->items[i].name, name) == 0)
            return dim < l->items[i].ndim ? l->items[i].shape[dim] : 0;
    return 0;
}

mgpu_status synth_write_flux_inputs(const char *arch, synth_scale scale, int64_t batch,
                                    int64_t height, int64_t width, int64_t text, uint64_t seed,
                                    const char *out, mgpu_error *err)
{
    synth_list list = {0};
    if (strncmp(arch, "flux-", 5) != 0 || !synth_arch_tensors(arch, scale, &list)) {
        snprintf(err->message, sizeof err->message, "'%s' is not a FLUX architecture", arch);
        return err->status = MGPU_ERR_ARGUMENT;
    }
    int64_t channels = shape_of(&list, "img_in.weight", 1) / 4;
    int64_t ctx = shape_of(&list, "txt_in.weight", 1);
    int64_t vec = shape_of(&list, "vector_in.in_layer.weight", 1);
    int guidance = shape_of(&list, "guidance_in.in_layer.weight", 0) > 0;
    synth_list_free(&list);
    if (batch < 1 || height < 2 || width < 2 || height % 2 || width % 2 || text < 1) {
        snprintf(err->message, sizeof err->message,
                 "inputs need a batch >= 1, an even latent of at least 2x2 and text >= 1");
        return err->status = MGPU_ERR_ARGUMENT;
    }
    uint64_t shapes[5][4] = {{(uint64_t)batch, (uint64_t)channels, (uint64_t)height, (uint64_t)width},
                             {(uint64_t)batch},
                             {(uint64_t)batch, (uint64_t)text, (uint64_t)ctx},
                             {(uint64_t)batch, (uint64_t)vec},
                             {(uint64_t)batch}};
    const char *names[5] = {"x", "timestep", "context", "y", "guidance"};
    const int ndims[5] = {4, 1, 3, 2, 1};
    int count = guidance ? 5 : 4;
    mgpu_safetensors_writer *w;
    mgpu_status s = mgpu_safetensors_writer_create(out, &w, err);
    for (int i = 0; s == MGPU_OK && i < count; i++)
        s = mgpu_safetensors_writer_add_tensor(w, names[i], MGPU_DTYPE_F32, ndims[i], shapes[i], err);
    uint64_t state = seed;
    for (int i = 0; s == MGPU_OK && i < count; i++) {
        uint64_t n = 1;
        for (int d = 0; d < ndims[i]; d++)
            n *= shapes[i][d];
        float *v = malloc((size_t)n * sizeof(float));
        if (!v) {
            s = MGPU_ERR_NO_MEMORY;
            break;
        }
        for (uint64_t k = 0; k < n; k++) {
            double u = (double)(next_random(&state) >> 11) * 0x1p-53;
            /* latents and text ~ N-ish(0,1) scale; timestep a sigma in (0,1);
             * guidance FLUX-dev's usual 3.5 range */
            v[k] = i == 1 ? (float)(0.05 + 0.9 * u)
                   : i == 4 ? (float)(1.0 + 4.0 * u)
                            : (float)(2.0 * u - 1.0);
        }
        s = mgpu_safetensors_writer_write(w, v, n * sizeof(float), err);
        free(v);
    }
    if (s == MGPU_OK)
        return mgpu_safetensors_writer_finish(w, err);
    if (w)
        mgpu_safetensors_writer_abort(w);
    return s;
}
