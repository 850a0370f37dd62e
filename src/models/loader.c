/* See loader.h. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "models/loader.h"

const mgpu_model_tensor *mgpu_loader_find(const mgpu_loader *l, const char *name)
{
    return mgpu_model_find_in(l->model, (size_t)l->component, name);
}

/* scale NULL: a scaled-fp8 weight is refused; else NAME.scale_weight, one
 * number, is read into it (1 without one). */
static mgpu_status need(const mgpu_loader *l, const char *name, int ndim, const int64_t *shape,
                        const mgpu_model_tensor **out, float *scale)
{
    const mgpu_model_tensor *t = mgpu_loader_find(l, name);
    if (!t)
        return mgpu_error_set(l->err, MGPU_ERR_FORMAT, "%s: missing tensor '%s'", l->label, name);
    bool ok = t->info.ndim == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = t->info.shape[d] == (uint64_t)shape[d];
    if (!ok) {
        char want[96] = "[";
        for (int d = 0; d < ndim; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? ", " : "",
                     (long long)shape[d]);
        return mgpu_error_set(l->err, MGPU_ERR_FORMAT, "%s: tensor '%s' should have shape %s]",
                              l->label, name, want);
    }
    if (!mgpu_dtype_get_info(t->info.dtype)->floating)
        return mgpu_error_set(l->err, MGPU_ERR_FORMAT, "%s: tensor '%s' holds %s, not numbers",
                              l->label, name, mgpu_dtype_name(t->info.dtype));
    /* Scaled-fp8 checkpoints (ComfyUI's *_fp8_scaled: NAME.scale_weight;
     * others: NAME.weight_scale) mean W * scale. Using W alone would be
     * silently wrong, so they are refused until the scale is applied. */
    if (scale)
        *scale = 1.0f;
    size_t n = strlen(name);
    if (n > 7 && n < 160 && strcmp(name + n - 7, ".weight") == 0) {
        static const char *const scales[] = {"scale_weight", "weight_scale"};
        for (int i = 0; i < 2; i++) {
            char sib[192];
            snprintf(sib, sizeof sib, "%.*s.%s", (int)(n - 7), name, scales[i]);
            const mgpu_model_tensor *st = mgpu_loader_find(l, sib);
            if (!st)
                continue;
            /* ComfyUI's per-tensor scale, on a layer that can apply it */
            if (scale && i == 0 && st->info.n_elems == 1 &&
                mgpu_dtype_get_info(st->info.dtype)->floating &&
                mgpu_dequantize(st->info.dtype, st->info.data, scale, 1) == MGPU_OK &&
                isfinite(*scale))
                continue;
            return mgpu_error_set(l->err, MGPU_ERR_UNSUPPORTED,
                                  "%s: '%s' is a scaled-fp8 checkpoint (it has '%s'); mgpu applies "
                                  "only one-number scale_weight scales, to T5's layers, and the "
                                  "weights alone would give wrong results: use an unscaled fp8, "
                                  "bf16 or GGUF file",
                                  l->label, name, sib);
        }
    }
    *out = t;
    return MGPU_OK;
}

mgpu_status mgpu_loader_need(const mgpu_loader *l, const char *name, int ndim,
                             const int64_t *shape, const mgpu_model_tensor **out)
{
    return need(l, name, ndim, shape, out, NULL);
}

mgpu_status mgpu_loader_need_scaled(const mgpu_loader *l, const char *name, int ndim,
                                    const int64_t *shape, const mgpu_model_tensor **out,
                                    float *scale)
{
    return need(l, name, ndim, shape, out, scale);
}

mgpu_status mgpu_loader_need_with_bias(const mgpu_loader *l, const char *name, int ndim,
                                       const int64_t *shape, const mgpu_model_tensor **weight,
                                       const mgpu_model_tensor **bias)
{
    char buf[192];
    snprintf(buf, sizeof buf, "%.150s.weight", name);
    mgpu_status s = mgpu_loader_need(l, buf, ndim, shape, weight);
    if (s != MGPU_OK)
        return s;
    snprintf(buf, sizeof buf, "%.150s.bias", name);
    return mgpu_loader_need(l, buf, 1, shape, bias);
}

int mgpu_loader_block(const mgpu_loader *l, const char *name)
{
    for (size_t i = 0; i < mgpu_model_block_count(l->model); i++) {
        const mgpu_model_block *b = mgpu_model_block_at(l->model, i);
        if ((int)b->component == l->component && strcmp(b->name, name) == 0)
            return (int)i;
    }
    return -1;
}
