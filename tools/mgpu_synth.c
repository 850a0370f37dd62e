/* mgpu-synth: writes synthetic checkpoints with the real tensor names, shapes
 * and dtypes of published models, filled with seeded random weights. Tests
 * use tiny ones; benchmarks use full-size ones (optionally sparse: the data
 * section left as zeros without being written, for header-only work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth_write.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: mgpu-synth --arch ARCH [--scale tiny|full] [--format safetensors|gguf]\n"
               "                  [--dtype DTYPE] [--seed N] [--prefix P] [--sparse] -o OUT\n"
               "       mgpu-synth --arch flux-dev|flux-schnell [--scale S] --inputs BxHxWxT -o IN\n"
               "           (random inputs for mgpu forward: latent HxW, T text tokens)\n"
               "architectures:\n");
    for (const char *const *a = synth_arch_names(); *a; a++)
        fprintf(f, "  %-14s %s\n", *a, synth_arch_description(*a));
    fprintf(f, "DTYPE: F32 F16 BF16 F8_E4M3 F8_E5M2 (both formats), Q8_0 Q4_0 Q4_K Q6_K (gguf).\n"
               "Block types apply to weights whose rows fit whole blocks; other tensors stay\n"
               "F32 (1-D) or F16, as city96's GGUF conversions keep them.\n");
}

int main(int argc, char **argv)
{
    synth_options o = {.scale = SYNTH_SCALE_TINY, .dtype = MGPU_DTYPE_F32, .seed = 1, .prefix = ""};
    const char *inputs = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value = strcmp(a, "--arch") == 0 || strcmp(a, "--scale") == 0 ||
                          strcmp(a, "--format") == 0 || strcmp(a, "--dtype") == 0 ||
                          strcmp(a, "--seed") == 0 || strcmp(a, "--prefix") == 0 ||
                          strcmp(a, "--inputs") == 0 ||
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
        } else if (strcmp(a, "--inputs") == 0) {
            inputs = v;
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
    mgpu_error err = {0};
    if (inputs) {
        long long b, h, w, t;
        int used = 0;
        if (sscanf(inputs, "%lldx%lldx%lldx%lld%n", &b, &h, &w, &t, &used) != 4 || inputs[used]) {
            fprintf(stderr, "mgpu-synth: --inputs takes BATCHxHEIGHTxWIDTHxTEXT, not '%s'\n", inputs);
            return 2;
        }
        if (synth_write_flux_inputs(o.arch, o.scale, b, h, w, t, o.seed, o.out, &err) != MGPU_OK) {
            fprintf(stderr, "mgpu-synth: %s\n", err.message);
            return 1;
        }
        return 0;
    }
    if (synth_write(&o, &err) != MGPU_OK) {
        fprintf(stderr, "mgpu-synth: %s\n", err.message);
        return 1;
    }
    return 0;
}
