/* Backend-independent helpers; see backend.h. */
#include <stdarg.h>
#include <stdio.h>

#include "backend/backend.h"
#include "backend/cuda_loader.h"
#include "core/error.h"
#include "mgpu/device.h"

void mgpu_backend_fail(mgpu_backend *be, mgpu_status status, const char *fmt, ...)
{
    if (be->error.status != MGPU_OK)
        return; /* the first failure is the one worth reporting */
    char line[MGPU_ERROR_MESSAGE_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    mgpu_error_set(&be->error, status, "%s: %s", be->name, line);
}

bool mgpu_backend_failed(const mgpu_backend *be)
{
    return be->error.status != MGPU_OK;
}

mgpu_status mgpu_backend_upload(mgpu_backend *be, void *dst, const void *src, size_t bytes,
                                mgpu_error *err)
{
    return be->ops->copy(be, MGPU_QUEUE_COMPUTE, dst, src, bytes, MGPU_COPY_HOST_TO_DEVICE, err);
}

mgpu_status mgpu_backend_download(mgpu_backend *be, void *dst, const void *src, size_t bytes,
                                  mgpu_error *err)
{
    mgpu_status s = be->ops->synchronize(be, err);
    if (s == MGPU_OK)
        s = be->ops->copy(be, MGPU_QUEUE_COMPUTE, dst, src, bytes, MGPU_COPY_DEVICE_TO_HOST, err);
    if (s == MGPU_OK)
        s = be->ops->synchronize(be, err);
    return s;
}

mgpu_status mgpu_backend_alloc_f32(mgpu_backend *be, int64_t n, float **out, mgpu_error *err)
{
    void *p = NULL;
    if (n < 0)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: negative allocation", be->name);
    mgpu_status s = be->ops->alloc(be, (size_t)(n > 0 ? n : 1) * sizeof(float), &p, err);
    *out = p;
    return s;
}

mgpu_status mgpu_backend_for_device(const mgpu_device *d, int threads, mgpu_gemm_precision gemm,
                                    mgpu_backend **out, mgpu_error *err)
{
    *out = NULL;
    mgpu_status s = d->kind == MGPU_DEVICE_CUDA && !d->simulated
                        ? mgpu_backend_cuda_create(d->ordinal, out, err)
                        : mgpu_backend_cpu_create(threads, out, err);
    if (s == MGPU_OK && (s = mgpu_backend_set_gemm(*out, gemm, err)) != MGPU_OK) {
        mgpu_backend_free(*out);
        *out = NULL;
    }
    return s;
}

mgpu_status mgpu_backend_set_gemm(mgpu_backend *be, mgpu_gemm_precision precision,
                                  mgpu_error *err)
{
    if ((unsigned)precision > MGPU_GEMM_FP8)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: unknown GEMM precision %d", be->name,
                              (int)precision);
    return be->ops->set_gemm(be, (int)precision, err);
}

const char *mgpu_backend_gemm_name(const mgpu_backend *be)
{
    return be->ops->gemm_name(be);
}
