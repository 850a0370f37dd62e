/* See loader.h. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "models/loader.h"

const mgpu_model_tensor *mgpu_loader_find(const mgpu_loader *l, const char *name)
{
    return mgpu_model_find_in(l->model, (size_t)l->component, name);
}

mgpu_status mgpu_loader_need(const mgpu_loader *l, const char *name, int ndim,
                             const int64_t *shape, const mgpu_model_tensor **out)
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
    *out = t;
    return MGPU_OK;
}
