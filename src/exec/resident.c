/* The trivial tensor source: every tensor is read where the model view maps
 * it. Used when everything is resident and as the reference the streaming
 * executor must match bit for bit. */
#include "core/error.h"
#include "exec/source.h"

static mgpu_status enter(void *context, int block, mgpu_error *err)
{
    (void)context;
    (void)block;
    (void)err;
    return MGPU_OK;
}

static void leave(void *context, int block)
{
    (void)context;
    (void)block;
}

static const void *data(void *context, const mgpu_model_tensor *t, mgpu_error *err)
{
    (void)context;
    if (!t->info.data && t->info.nbytes > 0)
        mgpu_error_set(err, MGPU_ERR_IO, "tensor '%s' has no data", t->info.name);
    return t->info.data;
}

mgpu_tensor_source mgpu_resident_source(void)
{
    mgpu_tensor_source s = {NULL, enter, leave, data, NULL};
    return s;
}
