/* One thread pool for all of mgpu's CPU work. Work is a range split into
 * contiguous chunks, one per thread, so which thread computes which index
 * is fixed by the range and the thread count: results never depend on
 * scheduling. Internal to libmgpu. */
#ifndef MGPU_OPS_THREADPOOL_H
#define MGPU_OPS_THREADPOOL_H

#include <stdint.h>

#include "mgpu/status.h"

typedef struct mgpu_threadpool mgpu_threadpool;

/* threads <= 0: one per online processor. */
mgpu_status mgpu_threadpool_create(int threads, mgpu_threadpool **out, mgpu_error *err);
void mgpu_threadpool_free(mgpu_threadpool *pool);
int mgpu_threadpool_size(const mgpu_threadpool *pool);

/* Calls fn(ctx, begin, end) on disjoint chunks covering [0, n), each at
 * least `grain` long (except the last), and returns when all are done.
 * NULL pool: one call on the calling thread. Not reentrant. */
void mgpu_threadpool_run(mgpu_threadpool *pool, void (*fn)(void *ctx, int64_t begin, int64_t end),
                         void *ctx, int64_t n, int64_t grain);

#endif
