/* mgpu-synth: writes synthetic checkpoints with the real tensor names, shapes
 * and dtypes of published models, filled with seeded random weights. Tests
 * use tiny ones; benchmarks use full-size ones (optionally sparse: the data
 * section left as zeros without being written, for header-only work). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgpu/dtype.h"
#include "mgpu/gguf.h"
#include "mgpu/safetensors.h"
#include "synth_arch.h"

typedef struct options {
    const char *arch;
    synth_scale scale;
    int gguf;
    mgpu_dtype dtype;
    uint64_t seed;
    const char *prefix;
    const char *out;
    int sparse;
} options;

static void usage(FILE *f)
{
    fprintf(f, "usage: mgpu-synth --arch ARCH [--scale tiny|full] [--format safetensors|gguf]\n"
               "                  [--dtype DTYPE] [--seed N] [--prefix P] [--sparse] -o OUT\n"
               "architectures:\n");
    for (const char *const *a = synth_arch_names(); *a; a++)
        fprintf(f, "  %-14s %s\n", *a, synth_arch_description(*a));
    fprintf(f, "DTYPE: F32 F16 BF16 F8_E4M3 F8_E5M2 (both formats), Q8_0 Q4_0 Q4_K Q6_K (gguf).\n"
               "Block types apply to weights whose rows fit whole blocks; other tensors stay\n"
               "F32 (1-D) or F16, as city96's GGUF conversions keep them.\n");
}

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
static mgpu_dtype storage_dtype(const synth_tensor *t, const options *o)
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

static int write_model(const options *o)
{
    synth_list list = {0};
    if (!synth_arch_tensors(o->arch, o->scale, &list)) {
        fprintf(stderr, "mgpu-synth: unknown architecture '%s'\n", o->arch);
        return 1;
    }
    mgpu_error err = {0};
    mgpu_status s = MGPU_OK;
    mgpu_safetensors_writer *sw = NULL;
    mgpu_gguf_writer *gw = NULL;
    s = o->gguf ? mgpu_gguf_writer_create(o->out, &gw, &err)
                : mgpu_safetensors_writer_create(o->out, &sw, &err);
    char name[512];
    if (s == MGPU_OK) {
        if (o->gguf) {
            s = mgpu_gguf_writer_add_string(gw, "general.architecture", o->arch, &err);
            if (s == MGPU_OK)
                s = mgpu_gguf_writer_add_string(gw, "general.name", "mgpu synthetic", &err);
        } else {
            s = mgpu_safetensors_writer_add_metadata(sw, "format", "pt", &err);
            if (s == MGPU_OK)
                s = mgpu_safetensors_writer_add_metadata(sw, "mgpu.synthetic", o->arch, &err);
        }
    }
    for (size_t i = 0; i < list.count && s == MGPU_OK; i++) {
        const synth_tensor *t = &list.items[i];
        uint64_t shape[MGPU_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++)
            shape[d] = (uint64_t)t->shape[d];
        snprintf(name, sizeof name, "%s%s", o->prefix, t->name);
        mgpu_dtype dt = storage_dtype(t, o);
        s = o->gguf ? mgpu_gguf_writer_add_tensor(gw, name, dt, t->ndim, shape, &err)
                    : mgpu_safetensors_writer_add_tensor(sw, name, dt, t->ndim, shape, &err);
    }
    /* Data, a few rows at a time so full-size tensors never sit in memory
     * as f32 all at once. */
    enum { CHUNK_ELEMS = 1 << 22 };
    float *values = malloc(CHUNK_ELEMS * sizeof(float));
    uint8_t *encoded = malloc(CHUNK_ELEMS * sizeof(float));
    if (!values || !encoded)
        s = MGPU_ERR_NO_MEMORY;
    for (size_t i = 0; i < list.count && s == MGPU_OK; i++) {
        const synth_tensor *t = &list.items[i];
        mgpu_dtype dt = storage_dtype(t, o);
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
            if (s == MGPU_OK)
                s = o->gguf ? mgpu_gguf_writer_write(gw, data, bytes, &err)
                            : mgpu_safetensors_writer_write(sw, data, bytes, &err);
            done += count;
        }
    }
    free(values);
    free(encoded);
    if (s == MGPU_OK)
        s = o->gguf ? mgpu_gguf_writer_finish(gw, &err) : mgpu_safetensors_writer_finish(sw, &err);
    else if (gw)
        mgpu_gguf_writer_abort(gw);
    else if (sw)
        mgpu_safetensors_writer_abort(sw);
    synth_list_free(&list);
    if (s != MGPU_OK) {
        fprintf(stderr, "mgpu-synth: %s\n", err.message[0] ? err.message : mgpu_status_name(s));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o = {.scale = SYNTH_SCALE_TINY, .dtype = MGPU_DTYPE_F32, .seed = 1, .prefix = ""};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value = strcmp(a, "--arch") == 0 || strcmp(a, "--scale") == 0 ||
                          strcmp(a, "--format") == 0 || strcmp(a, "--dtype") == 0 ||
                          strcmp(a, "--seed") == 0 || strcmp(a, "--prefix") == 0 ||
                          strcmp(a, "-o") == 0;
        if (takes_value && !v) {
            fprintf(stderr, "mgpu-synth: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--arch") == 0) {
            o.arch = v;
        } else if (strcmp(a, "--scale") == 0) {
            if (strcmp(v, "tiny") == 0)
                o.scale = SYNTH_SCALE_TINY;
            else if (strcmp(v, "full") == 0)
                o.scale = SYNTH_SCALE_FULL;
            else {
                fprintf(stderr, "mgpu-synth: --scale is tiny or full, not '%s'\n", v);
                return 2;
            }
        } else if (strcmp(a, "--format") == 0) {
            if (strcmp(v, "gguf") == 0)
                o.gguf = 1;
            else if (strcmp(v, "safetensors") == 0)
                o.gguf = 0;
            else {
                fprintf(stderr, "mgpu-synth: --format is safetensors or gguf, not '%s'\n", v);
                return 2;
            }
        } else if (strcmp(a, "--dtype") == 0) {
            o.dtype = mgpu_dtype_from_name(v);
            if (o.dtype == MGPU_DTYPE_INVALID || !mgpu_dtype_can_quantize(o.dtype)) {
                fprintf(stderr, "mgpu-synth: cannot write dtype '%s'\n", v);
                return 2;
            }
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            o.seed = strtoull(v, &end, 10);
            if (*end || !*v) {
                fprintf(stderr, "mgpu-synth: --seed takes a number, not '%s'\n", v);
                return 2;
            }
        } else if (strcmp(a, "--prefix") == 0) {
            o.prefix = v;
        } else if (strcmp(a, "-o") == 0) {
            o.out = v;
        } else if (strcmp(a, "--sparse") == 0) {
            o.sparse = 1;
            continue;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "mgpu-synth: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!o.arch || !o.out) {
        fprintf(stderr, "mgpu-synth: --arch and -o are required\n");
        usage(stderr);
        return 2;
    }
    if (!o.gguf && mgpu_dtype_get_info(o.dtype)->quantized) {
        fprintf(stderr, "mgpu-synth: safetensors cannot hold %s; use --format gguf\n",
                mgpu_dtype_name(o.dtype));
        return 2;
    }
    return write_model(&o);
}
