/* The CUDA backend (see docs/cuda.md): backend.h's table over one GPU.
 *
 * - Queues are two non-blocking streams, compute and copy; events are
 *   cudaEvents with timing disabled.
 * - Device memory comes from a pool of large cudaMalloc'd arenas
 *   (cuda_pool.c), so ops and the executor never call cudaMalloc on the hot
 *   path. A freed block may still be read by work queued on either stream:
 *   free records an event on both streams, and the next allocation that
 *   reuses freed memory makes each stream wait for the other's event first
 *   (a stream's own work is ordered already).
 * - Linear layers decode a tile of weight rows to bf16 on the GPU and
 *   multiply with cublasGemmEx (bf16 x bf16, f32 accumulate and output) on
 *   tensor cores; f32 weights multiply in full f32. conv2d is im2col in
 *   bands plus the same GEMM.
 * - Errors: every CUDA or cuBLAS failure becomes one line naming the
 *   device and the operation. Fallible calls return it; ops record the
 *   first one in be->error (cuda_fail below does what mgpu_backend_fail
 *   does in libmgpu, which the plugin does not link), and later ops do
 *   nothing.
 * - Every entry point selects the device first, so the backend may be used
 *   from any host thread; the pool and the error record are under a mutex. */
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_fp8.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_plugin.h"
#include "backend/cuda/cuda_pool.h"
#include "backend/cuda/cuda_tiles.h"

enum {
    ARENA_BYTES = 256 << 20,   /* pool arenas; bigger requests get their own */
    BLAS_WORKSPACE = 32 << 20, /* fixed cuBLAS workspace: same kernels every run */
    N_SCRATCH = 4,
};
enum { SCRATCH_W, SCRATCH_X, SCRATCH_TMP, SCRATCH_ATT };

enum { MGPU_MAX_PEERS = 64 };

typedef struct cuda_backend {
    mgpu_backend base; /* first: the mgpu_backend * handed out points here */
    char name[32];     /* "cuda:0" */
    int device;
    size_t smem_optin; /* shared memory per block with opt-in */
    cudaStream_t stream[MGPU_QUEUE_COUNT];
    cublasHandle_t blas;
    void *blas_ws;
    pthread_mutex_t lock;
    mgpu_pool pool;
    /* arenas as cudaMalloc returned them (the pool sees them aligned) */
    struct {
        void *raw, *aligned;
    } * raws;
    size_t n_raws, cap_raws;
    cudaError_t grow_error; /* why the last arena could not be had */
    cudaEvent_t free_ev[MGPU_QUEUE_COUNT];
    bool free_pending;
    struct {
        void *ptr;
        size_t bytes;
    } scratch[N_SCRATCH];
    bool peer_tried[MGPU_MAX_PEERS]; /* peer access from this device asked for, by ordinal */
    int gemm;                        /* mgpu_gemm_precision asked for */
    mgpu_cuda_fp8 *fp8;              /* set up on the first fp8 request, where the GPU has them */
    bool fp8_tried;
    char fp8_why[128];               /* why fp8 is unavailable */
} cuda_backend;

struct mgpu_event {
    cudaEvent_t ev;
};

static cuda_backend *cb(mgpu_backend *be)
{
    return (cuda_backend *)be;
}

/* ------------------------------------------------------------ errors */

/* One printable line, like mgpu_error_set. */
static mgpu_status set_error(mgpu_error *err, mgpu_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static mgpu_status set_error(mgpu_error *err, mgpu_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        for (char *c = err->message; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7F)
                *c = '?';
        err->status = status;
    }
    return status;
}

/* What mgpu_backend_fail does: keep the first failure, prefixed with the
 * device. */
static void cuda_fail(cuda_backend *c, mgpu_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cuda_fail(cuda_backend *c, mgpu_status status, const char *fmt, ...)
{
    char line[MGPU_ERROR_MESSAGE_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->lock);
    if (c->base.error.status == MGPU_OK)
        set_error(&c->base.error, status, "%s: %s", c->name, line);
    pthread_mutex_unlock(&c->lock);
}

static bool failed(cuda_backend *c)
{
    pthread_mutex_lock(&c->lock);
    bool f = c->base.error.status != MGPU_OK;
    pthread_mutex_unlock(&c->lock);
    return f;
}

static mgpu_status status_of(cudaError_t e)
{
    return e == cudaErrorMemoryAllocation ? MGPU_ERR_NO_MEMORY : MGPU_ERR_IO;
}

static const char *blas_msg(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "cuBLAS not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "cuBLAS out of memory";
    case CUBLAS_STATUS_INVALID_VALUE: return "cuBLAS invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "cuBLAS: not supported on this GPU";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "cuBLAS execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "cuBLAS internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "cuBLAS: not supported";
    default: return "cuBLAS error";
    }
}

/* "2.0 GiB", "512.0 MiB", "12 bytes" */
static const char *fmt_bytes(size_t n, char *buf, size_t size)
{
    if (n >= (size_t)1 << 30)
        snprintf(buf, size, "%.1f GiB", (double)n / (double)(1u << 30));
    else if (n >= (size_t)1 << 20)
        snprintf(buf, size, "%.1f MiB", (double)n / (double)(1u << 20));
    else if (n >= (size_t)1 << 10)
        snprintf(buf, size, "%.1f KiB", (double)n / 1024.0);
    else
        snprintf(buf, size, "%zu bytes", n);
    return buf;
}

/* Every entry point: the device this backend drives, unless it failed. */
static bool enter(cuda_backend *c)
{
    if (failed(c))
        return false;
    cudaError_t e = cudaSetDevice(c->device);
    if (e != cudaSuccess) {
        cuda_fail(c, status_of(e), "cudaSetDevice: %s", cudaGetErrorString(e));
        return false;
    }
    return true;
}

/* A kernel launch or runtime call inside an op. */
static bool check(cuda_backend *c, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return true;
    cuda_fail(c, status_of(e), "%s: %s", what, cudaGetErrorString(e));
    return false;
}

/* ------------------------------------------------------------ dtypes */

/* The dtype table's block sizes and names for the floating types (the
 * plugin does not link libmgpu's table; test_backend_cross checks they
 * agree through the ops). */
typedef struct dtype_desc {
    const char *name;
    int elems, bytes;
} dtype_desc;

static const dtype_desc *dtype_of(mgpu_dtype t)
{
    static const dtype_desc table[MGPU_DTYPE_COUNT] = {
        [MGPU_DTYPE_F64] = {"F64", 1, 8},        [MGPU_DTYPE_F32] = {"F32", 1, 4},
        [MGPU_DTYPE_F16] = {"F16", 1, 2},        [MGPU_DTYPE_BF16] = {"BF16", 1, 2},
        [MGPU_DTYPE_F8_E4M3] = {"F8_E4M3", 1, 1}, [MGPU_DTYPE_F8_E5M2] = {"F8_E5M2", 1, 1},
        [MGPU_DTYPE_Q4_0] = {"Q4_0", 32, 18},    [MGPU_DTYPE_Q4_1] = {"Q4_1", 32, 20},
        [MGPU_DTYPE_Q5_0] = {"Q5_0", 32, 22},    [MGPU_DTYPE_Q5_1] = {"Q5_1", 32, 24},
        [MGPU_DTYPE_Q8_0] = {"Q8_0", 32, 34},    [MGPU_DTYPE_Q2_K] = {"Q2_K", 256, 84},
        [MGPU_DTYPE_Q3_K] = {"Q3_K", 256, 110},  [MGPU_DTYPE_Q4_K] = {"Q4_K", 256, 144},
        [MGPU_DTYPE_Q5_K] = {"Q5_K", 256, 176},  [MGPU_DTYPE_Q6_K] = {"Q6_K", 256, 210},
        [MGPU_DTYPE_IQ4_NL] = {"IQ4_NL", 32, 18}, [MGPU_DTYPE_IQ4_XS] = {"IQ4_XS", 256, 136},
    };
    if ((int)t <= 0 || (int)t >= MGPU_DTYPE_COUNT || !table[t].name ||
        !mgpu_cuda_dtype_supported((int)t))
        return NULL;
    return &table[t];
}

static const char *dtype_name(mgpu_dtype t)
{
    const dtype_desc *d = dtype_of(t);
    return d ? d->name : "a non-floating dtype";
}

/* Bytes of a row of n values of dtype t, or false (recorded) when t cannot
 * be decoded or n is not whole blocks. */
static bool row_bytes(cuda_backend *c, const char *op, mgpu_dtype t, int64_t n, size_t *bytes)
{
    const dtype_desc *d = dtype_of(t);
    if (!d) {
        cuda_fail(c, MGPU_ERR_UNSUPPORTED, "%s: cannot decode dtype %d", op, (int)t);
        return false;
    }
    if (n < 0 || n % d->elems != 0) {
        cuda_fail(c, MGPU_ERR_ARGUMENT, "%s: %lld values are not whole %s blocks of %d", op,
                  (long long)n, d->name, d->elems);
        return false;
    }
    *bytes = (size_t)(n / d->elems) * (size_t)d->bytes;
    return true;
}

/* An optional parameter (norm scale, bias) must be decodable. */
static bool param_ok(cuda_backend *c, const char *op, mgpu_wref w, int64_t n)
{
    size_t b;
    return !w.data || row_bytes(c, op, w.dtype, n, &b);
}

static bool args_ok(cuda_backend *c, bool ok, const char *op)
{
    if (!ok)
        cuda_fail(c, MGPU_ERR_ARGUMENT, "%s: invalid shape", op);
    return ok;
}

/* ------------------------------------------------------------ memory */

static void *arena_grow(void *ctx, size_t bytes)
{
    cuda_backend *c = ctx;
    if (c->n_raws == c->cap_raws) {
        size_t cap = c->cap_raws ? 2 * c->cap_raws : 16;
        void *grown = realloc(c->raws, cap * sizeof *c->raws);
        if (!grown) {
            c->grow_error = cudaErrorMemoryAllocation;
            return NULL;
        }
        c->raws = grown;
        c->cap_raws = cap;
    }
    /* cudaMalloc promises 256-byte alignment; the pool wants 4096 */
    void *raw = NULL;
    cudaError_t e = cudaMalloc(&raw, bytes + MGPU_POOL_ALIGN);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        c->grow_error = e;
        return NULL;
    }
    uintptr_t a = ((uintptr_t)raw + MGPU_POOL_ALIGN - 1) / MGPU_POOL_ALIGN * MGPU_POOL_ALIGN;
    c->raws[c->n_raws].raw = raw;
    c->raws[c->n_raws].aligned = (void *)a;
    c->n_raws++;
    return (void *)a;
}

static void arena_release(void *ctx, void *base, size_t bytes)
{
    (void)bytes;
    cuda_backend *c = ctx;
    for (size_t i = 0; i < c->n_raws; i++)
        if (c->raws[i].aligned == base) {
            cudaFree(c->raws[i].raw); /* waits for the device: only at trim and destroy */
            c->raws[i] = c->raws[--c->n_raws];
            return;
        }
}

/* Under the lock. A block carved from freed memory is ordered after every
 * free so far on both streams. */
static void *pool_take(cuda_backend *c, size_t bytes)
{
    bool reused = false;
    void *p = mgpu_pool_alloc(&c->pool, bytes, &reused);
    if (p && reused && c->free_pending) {
        cudaStreamWaitEvent(c->stream[MGPU_QUEUE_COPY], c->free_ev[MGPU_QUEUE_COMPUTE], 0);
        cudaStreamWaitEvent(c->stream[MGPU_QUEUE_COMPUTE], c->free_ev[MGPU_QUEUE_COPY], 0);
        c->free_pending = false;
    }
    return p;
}

static void pool_give(cuda_backend *c, void *p)
{
    if (mgpu_pool_free(&c->pool, p)) {
        for (int q = 0; q < MGPU_QUEUE_COUNT; q++)
            cudaEventRecord(c->free_ev[q], c->stream[q]);
        c->free_pending = true;
    }
}

static mgpu_status cuda_alloc(mgpu_backend *be, size_t bytes, void **out, mgpu_error *err)
{
    cuda_backend *c = cb(be);
    *out = NULL;
    cudaError_t e = cudaSetDevice(c->device);
    if (e != cudaSuccess)
        return set_error(err, status_of(e), "%s: cudaSetDevice: %s", c->name,
                         cudaGetErrorString(e));
    pthread_mutex_lock(&c->lock);
    c->grow_error = cudaSuccess;
    void *p = pool_take(c, bytes);
    size_t held = c->pool.reserved, used = c->pool.in_use;
    cudaError_t why = c->grow_error;
    pthread_mutex_unlock(&c->lock);
    if (!p) {
        char b1[32], b2[32], b3[32];
        return set_error(err, MGPU_ERR_NO_MEMORY,
                         "%s: cudaMalloc of %s: %s (the pool holds %s, %s of it in use)", c->name,
                         fmt_bytes(bytes, b1, sizeof b1),
                         why != cudaSuccess ? cudaGetErrorString(why) : "out of memory",
                         fmt_bytes(held, b2, sizeof b2), fmt_bytes(used, b3, sizeof b3));
    }
    *out = p;
    return MGPU_OK;
}

static void cuda_free(mgpu_backend *be, void *ptr)
{
    cuda_backend *c = cb(be);
    if (!ptr)
        return;
    (void)cudaSetDevice(c->device);
    pthread_mutex_lock(&c->lock);
    bool known = mgpu_pool_block_size(&c->pool, ptr) != 0;
    if (known)
        pool_give(c, ptr);
    pthread_mutex_unlock(&c->lock);
    if (!known)
        cuda_fail(c, MGPU_ERR_ARGUMENT, "free of %p, which this device did not allocate", ptr);
}

static mgpu_status cuda_host_alloc(mgpu_backend *be, size_t bytes, void **out, mgpu_error *err)
{
    cuda_backend *c = cb(be);
    *out = NULL;
    char b[32];
    cudaError_t e = cudaSetDevice(c->device);
    void *p = NULL;
    if (e == cudaSuccess)
        e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return set_error(err, status_of(e), "%s: cudaHostAlloc of %s pinned: %s", c->name,
                         fmt_bytes(bytes, b, sizeof b), cudaGetErrorString(e));
    }
    if ((uintptr_t)p % 4096 != 0) { /* page-aligned in practice; the contract needs it */
        cudaFreeHost(p);
        return set_error(err, MGPU_ERR_NO_MEMORY, "%s: cudaHostAlloc returned %p, not 4096-aligned",
                         c->name, p);
    }
    *out = p;
    return MGPU_OK;
}

static void cuda_host_free(mgpu_backend *be, void *ptr)
{
    cuda_backend *c = cb(be);
    if (!ptr)
        return;
    (void)cudaSetDevice(c->device);
    cudaError_t e = cudaFreeHost(ptr);
    if (e != cudaSuccess)
        check(c, e, "cudaFreeHost");
}

/* A scratch buffer of at least `bytes` for ops on the compute stream, kept
 * and grown by the backend. NULL (recorded) when the pool cannot give it. */
static void *scratch(cuda_backend *c, int slot, size_t bytes)
{
    if (c->scratch[slot].bytes >= bytes)
        return c->scratch[slot].ptr;
    pthread_mutex_lock(&c->lock);
    if (c->scratch[slot].ptr)
        pool_give(c, c->scratch[slot].ptr);
    c->scratch[slot].ptr = NULL;
    c->scratch[slot].bytes = 0;
    c->grow_error = cudaSuccess;
    void *p = pool_take(c, bytes);
    cudaError_t why = c->grow_error;
    pthread_mutex_unlock(&c->lock);
    if (!p) {
        char b[32];
        cuda_fail(c, MGPU_ERR_NO_MEMORY, "cudaMalloc of %s scratch: %s",
                  fmt_bytes(bytes, b, sizeof b),
                  why != cudaSuccess ? cudaGetErrorString(why) : "out of memory");
        return NULL;
    }
    c->scratch[slot].ptr = p;
    c->scratch[slot].bytes = bytes;
    return p;
}

/* ------------------------------------------------------------ copies and events */

static bool queue_ok(cuda_backend *c, int queue, mgpu_error *err, mgpu_status *st)
{
    if (queue < 0 || queue >= MGPU_QUEUE_COUNT) {
        *st = set_error(err, MGPU_ERR_ARGUMENT, "%s: no queue %d", c->name, queue);
        return false;
    }
    return true;
}

/* The kept op error, if any, as the call's result. */
static mgpu_status kept_error(cuda_backend *c, mgpu_error *err)
{
    pthread_mutex_lock(&c->lock);
    mgpu_status s = c->base.error.status;
    if (s != MGPU_OK && err)
        *err = c->base.error;
    pthread_mutex_unlock(&c->lock);
    return s;
}

static const char *queue_name(int q)
{
    return q == MGPU_QUEUE_COPY ? "copy" : "compute";
}

static mgpu_status cuda_copy(mgpu_backend *be, int queue, void *dst, const void *src, size_t bytes,
                             mgpu_copy_kind kind, mgpu_error *err)
{
    cuda_backend *c = cb(be);
    mgpu_status st;
    if (!queue_ok(c, queue, err, &st))
        return st;
    if ((st = kept_error(c, err)) != MGPU_OK)
        return st;
    enum cudaMemcpyKind k;
    const char *what;
    switch (kind) {
    case MGPU_COPY_HOST_TO_DEVICE: k = cudaMemcpyHostToDevice, what = "host-to-device"; break;
    case MGPU_COPY_DEVICE_TO_HOST: k = cudaMemcpyDeviceToHost, what = "device-to-host"; break;
    case MGPU_COPY_DEVICE_TO_DEVICE: k = cudaMemcpyDeviceToDevice, what = "device-to-device"; break;
    case MGPU_COPY_PEER_TO_DEVICE: k = cudaMemcpyDefault, what = "peer-to-device"; break;
    default: return set_error(err, MGPU_ERR_ARGUMENT, "%s: unknown copy kind %d", c->name, (int)kind);
    }
    if (bytes == 0)
        return MGPU_OK;
    cudaError_t e = cudaSetDevice(c->device);
    if (e == cudaSuccess && kind == MGPU_COPY_PEER_TO_DEVICE) {
        /* The source GPU, from the pointer (unified addressing); peer access
         * enabled once where the pair has it, else the driver stages the
         * copy through host memory. */
        struct cudaPointerAttributes a;
        e = cudaPointerGetAttributes(&a, src);
        int peer = e == cudaSuccess ? a.device : -1;
        if (e == cudaSuccess && peer >= 0 && peer < MGPU_MAX_PEERS && peer != c->device &&
            !c->peer_tried[peer]) {
            int can = 0;
            c->peer_tried[peer] = true;
            if (cudaDeviceCanAccessPeer(&can, c->device, peer) == cudaSuccess && can) {
                cudaError_t pe = cudaDeviceEnablePeerAccess(peer, 0);
                if (pe != cudaSuccess && pe != cudaErrorPeerAccessAlreadyEnabled)
                    e = pe;
                (void)cudaGetLastError(); /* clear AlreadyEnabled: not an error here */
            }
        }
        if (e == cudaSuccess)
            e = cudaMemcpyPeerAsync(dst, c->device, src, peer, bytes, c->stream[queue]);
    } else if (e == cudaSuccess) {
        e = cudaMemcpyAsync(dst, src, bytes, k, c->stream[queue]);
    }
    if (e != cudaSuccess) {
        char b[32];
        return set_error(err, status_of(e), "%s: %s copy of %s on the %s queue: %s", c->name, what,
                         fmt_bytes(bytes, b, sizeof b), queue_name(queue), cudaGetErrorString(e));
    }
    return MGPU_OK;
}

static mgpu_status cuda_event_create(mgpu_backend *be, mgpu_event **out, mgpu_error *err)
{
    cuda_backend *c = cb(be);
    *out = NULL;
    mgpu_event *ev = malloc(sizeof *ev);
    if (!ev)
        return set_error(err, MGPU_ERR_NO_MEMORY, "%s: out of memory for an event", c->name);
    cudaError_t e = cudaSetDevice(c->device);
    if (e == cudaSuccess)
        e = cudaEventCreateWithFlags(&ev->ev, cudaEventDisableTiming);
    if (e != cudaSuccess) {
        free(ev);
        return set_error(err, status_of(e), "%s: cudaEventCreate: %s", c->name,
                         cudaGetErrorString(e));
    }
    *out = ev;
    return MGPU_OK;
}

static void cuda_event_destroy(mgpu_backend *be, mgpu_event *ev)
{
    if (!ev)
        return;
    (void)cudaSetDevice(cb(be)->device);
    cudaEventDestroy(ev->ev);
    free(ev);
}

static mgpu_status event_result(cuda_backend *c, cudaError_t e, const char *what, int queue,
                                 mgpu_error *err)
{
    if (e == cudaSuccess)
        return MGPU_OK;
    if (queue >= 0)
        return set_error(err, status_of(e), "%s: %s on the %s queue: %s", c->name, what,
                         queue_name(queue), cudaGetErrorString(e));
    return set_error(err, status_of(e), "%s: %s: %s", c->name, what, cudaGetErrorString(e));
}

static mgpu_status cuda_event_record(mgpu_backend *be, mgpu_event *ev, int queue, mgpu_error *err)
{
    cuda_backend *c = cb(be);
    mgpu_status st;
    if (!queue_ok(c, queue, err, &st))
        return st;
    cudaError_t e = cudaSetDevice(c->device);
    if (e == cudaSuccess)
        e = cudaEventRecord(ev->ev, c->stream[queue]);
    return event_result(c, e, "cudaEventRecord", queue, err);
}

static mgpu_status cuda_queue_wait(mgpu_backend *be, int queue, mgpu_event *ev, mgpu_error *err)
{
    cuda_backend *c = cb(be);
    mgpu_status st;
    if (!queue_ok(c, queue, err, &st))
        return st;
    cudaError_t e = cudaSetDevice(c->device);
    if (e == cudaSuccess)
        e = cudaStreamWaitEvent(c->stream[queue], ev->ev, 0);
    return event_result(c, e, "cudaStreamWaitEvent", queue, err);
}

static mgpu_status cuda_event_sync(mgpu_backend *be, mgpu_event *ev, mgpu_error *err)
{
    cuda_backend *c = cb(be);
    cudaError_t e = cudaSetDevice(c->device);
    if (e == cudaSuccess)
        e = cudaEventSynchronize(ev->ev);
    if (e != cudaSuccess) /* a kernel fault surfaces here: keep it for synchronize too */
        check(c, e, "cudaEventSynchronize");
    mgpu_status st = event_result(c, e, "cudaEventSynchronize", -1, err);
    return st != MGPU_OK ? st : kept_error(c, err);
}

static mgpu_status cuda_synchronize(mgpu_backend *be, mgpu_error *err)
{
    cuda_backend *c = cb(be);
    cudaError_t e = cudaSetDevice(c->device);
    if (e != cudaSuccess)
        check(c, e, "cudaSetDevice");
    for (int q = 0; q < MGPU_QUEUE_COUNT && e == cudaSuccess; q++) {
        e = cudaStreamSynchronize(c->stream[q]);
        if (e != cudaSuccess) {
            char what[64];
            snprintf(what, sizeof what, "synchronizing the %s queue", queue_name(q));
            check(c, e, what);
        }
    }
    return kept_error(c, err);
}

static void cuda_destroy(mgpu_backend *be)
{
    cuda_backend *c = cb(be);
    if (cudaSetDevice(c->device) == cudaSuccess) {
        for (int q = 0; q < MGPU_QUEUE_COUNT; q++)
            if (c->stream[q])
                cudaStreamSynchronize(c->stream[q]);
    }
    mgpu_cuda_fp8_destroy(c->fp8);
    if (c->blas)
        cublasDestroy(c->blas);
    mgpu_pool_destroy(&c->pool);
    if (c->blas_ws)
        cudaFree(c->blas_ws);
    for (int q = 0; q < MGPU_QUEUE_COUNT; q++) {
        if (c->free_ev[q])
            cudaEventDestroy(c->free_ev[q]);
        if (c->stream[q])
            cudaStreamDestroy(c->stream[q]);
    }
    (void)cudaGetLastError();
    free(c->raws);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* ------------------------------------------------------------ GEMM */

/* Y^T (m x n, column-major, ldc) = A^T B in cuBLAS's column-major terms,
 * with A = a (k x m, lda) transposed or not, B = b (k x n, ldb): the
 * callers pass row-major buffers as their column-major transposes. f32:
 * full f32; else bf16 inputs with f32 accumulation and output. */
static bool gemm(cuda_backend *c, bool trans_a, int64_t m, int64_t n, int64_t k, const void *a,
                 int64_t lda, const void *b, int64_t ldb, float *y, int64_t ldc, bool f32,
                 const char *op)
{
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
        ldc > INT_MAX) {
        cuda_fail(c, MGPU_ERR_UNSUPPORTED, "%s: a GEMM dimension exceeds 2^31", op);
        return false;
    }
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t t = f32 ? CUDA_R_32F : CUDA_R_16BF;
    cublasStatus_t s = cublasGemmEx(c->blas, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N,
                                    (int)m, (int)n, (int)k, &one, a, t, (int)lda, b, t, (int)ldb,
                                    &zero, y, CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cuda_fail(c, s == CUBLAS_STATUS_ALLOC_FAILED ? MGPU_ERR_NO_MEMORY : MGPU_ERR_IO,
                  "%s: cublasGemmEx %lldx%lldx%lld: %s", op, (long long)m, (long long)n,
                  (long long)k, blas_msg(s));
        return false;
    }
    return true;
}

/* Weights multiply as f32 only when stored f32 and aligned for cuBLAS. */
static bool f32_direct(mgpu_wref w)
{
    return w.dtype == MGPU_DTYPE_F32 && (uintptr_t)w.data % 16 == 0;
}

static void cuda_linear(mgpu_backend *be, const float *x, int64_t rows, int64_t in, mgpu_wref w,
                        int64_t out, mgpu_wref bias, float *y)
{
    cuda_backend *c = cb(be);
    char op[96];
    snprintf(op, sizeof op, "linear %lldx%lld over %s weights", (long long)out, (long long)in,
             dtype_name(w.dtype));
    size_t rb;
    if (!enter(c) || !args_ok(c, rows >= 0 && in > 0 && out > 0 && w.data, op) ||
        !row_bytes(c, op, w.dtype, in, &rb) || !param_ok(c, op, bias, out) || rows == 0)
        return;
    cudaStream_t s = c->stream[MGPU_QUEUE_COMPUTE];
    if (c->gemm == MGPU_GEMM_FP8 && c->fp8 && w.dtype == MGPU_DTYPE_F8_E4M3) {
        void *xq = scratch(c, SCRATCH_X, (size_t)(rows * in));
        if (!xq)
            return;
        char why[160];
        mgpu_cuda_fp8_result r = mgpu_cuda_fp8_linear(c->fp8, x, rows, in, w.data, out, y, xq,
                                                      why, sizeof why);
        if (r == MGPU_CUDA_FP8_FAILED) {
            cuda_fail(c, MGPU_ERR_IO, "%s: %s", op, why);
            return;
        }
        if (r == MGPU_CUDA_FP8_DONE) {
            if (bias.data)
                check(c, mgpu_cuda_bias_add(s, y, rows, out, bias.data, (int)bias.dtype, false),
                      op);
            return;
        }
    }
    const bool f32 = w.dtype == MGPU_DTYPE_F32 || c->gemm == MGPU_GEMM_F32;
    const size_t esz = f32 ? 4 : 2;
    const mgpu_cuda_linear_tiles t = mgpu_cuda_linear_plan(rows, in, out);
    void *xs = NULL, *ws = NULL;
    if (!f32 && !(xs = scratch(c, SCRATCH_X, (size_t)t.x_rows * (size_t)in * esz)))
        return;
    if (!f32_direct(w) && !(ws = scratch(c, SCRATCH_W, (size_t)t.w_rows * (size_t)in * esz)))
        return;
    for (int64_t r0 = 0; r0 < rows; r0 += t.x_rows) {
        const int64_t nr = rows - r0 < t.x_rows ? rows - r0 : t.x_rows;
        const void *xb = x + r0 * in;
        if (!f32) {
            if (!check(c, mgpu_cuda_f32_to_bf16(s, x + r0 * in, nr * in, xs), op))
                return;
            xb = xs;
        }
        for (int64_t o = 0; o < out; o += t.w_rows) {
            const int64_t n = out - o < t.w_rows ? out - o : t.w_rows;
            const uint8_t *wsrc = (const uint8_t *)w.data + (size_t)o * rb;
            const void *wb = wsrc;
            if (ws) {
                cudaError_t e = f32 ? mgpu_cuda_dequant_f32(s, w.dtype, wsrc, n * in, ws)
                                    : mgpu_cuda_dequant_bf16(s, w.dtype, wsrc, n * in, ws);
                if (!check(c, e, op))
                    return;
                wb = ws;
            }
            /* y[r0.., o..]^T (n x nr, ldc out) = W_tile (stored n x in: col-major
             * in x n, transposed) times x^T (col-major in x nr) */
            if (!gemm(c, true, n, nr, in, wb, in, xb, in, y + r0 * out + o, out, f32, op))
                return;
        }
    }
    if (bias.data)
        check(c, mgpu_cuda_bias_add(s, y, rows, out, bias.data, (int)bias.dtype, false), op);
}

static void cuda_conv2d(mgpu_backend *be, const float *x, const mgpu_conv2d_shape *sh,
                        mgpu_wref w, mgpu_wref bias, float *y)
{
    cuda_backend *c = cb(be);
    const char *op = "conv2d";
    if (!enter(c) || !args_ok(c, sh && w.data, op))
        return;
    const int64_t hp = sh->h + sh->pad_top + sh->pad_bottom;
    const int64_t wp = sh->w + sh->pad_left + sh->pad_right;
    if (!args_ok(c,
                 sh->c_in > 0 && sh->h > 0 && sh->w > 0 && sh->c_out > 0 && sh->kh > 0 &&
                     sh->kw > 0 && sh->stride > 0 && sh->pad_top >= 0 && sh->pad_bottom >= 0 &&
                     sh->pad_left >= 0 && sh->pad_right >= 0 && hp >= sh->kh && wp >= sh->kw,
                 op))
        return;
    const int64_t oh = (hp - sh->kh) / sh->stride + 1, ow = (wp - sh->kw) / sh->stride + 1;
    const int64_t k = sh->c_in * sh->kh * sh->kw, pixels = oh * ow;
    size_t rb;
    if (!row_bytes(c, op, w.dtype, k, &rb) || !param_ok(c, op, bias, sh->c_out))
        return;
    cudaStream_t s = c->stream[MGPU_QUEUE_COMPUTE];
    const bool f32 = w.dtype == MGPU_DTYPE_F32 || c->gemm == MGPU_GEMM_F32;
    const size_t esz = f32 ? 4 : 2;
    const mgpu_cuda_conv_tiles t = mgpu_cuda_conv_plan(k, pixels, sh->c_out);
    void *col = scratch(c, SCRATCH_X, (size_t)t.band * (size_t)k * esz), *ws = NULL;
    if (!col)
        return;
    if (!f32_direct(w) && !(ws = scratch(c, SCRATCH_W, (size_t)t.w_rows * (size_t)k * esz)))
        return;
    for (int64_t p0 = 0; p0 < pixels; p0 += t.band) {
        const int64_t nb = pixels - p0 < t.band ? pixels - p0 : t.band;
        if (!check(c, mgpu_cuda_im2col(s, x, sh, ow, p0, nb, col, !f32), op))
            return;
        for (int64_t o = 0; o < sh->c_out; o += t.w_rows) {
            const int64_t n = sh->c_out - o < t.w_rows ? sh->c_out - o : t.w_rows;
            const uint8_t *wsrc = (const uint8_t *)w.data + (size_t)o * rb;
            const void *wb = wsrc;
            if (ws) {
                cudaError_t e = f32 ? mgpu_cuda_dequant_f32(s, w.dtype, wsrc, n * k, ws)
                                    : mgpu_cuda_dequant_bf16(s, w.dtype, wsrc, n * k, ws);
                if (!check(c, e, op))
                    return;
                wb = ws;
            }
            /* y[o.., p0..] as column-major (pixels x c_out, ld pixels) =
             * col^T (stored [k][nb]: col-major nb x k) times W^T (stored
             * [n][k]: col-major k x n) */
            if (!gemm(c, false, nb, n, k, col, nb, wb, k, y + o * pixels + p0, pixels, f32, op))
                return;
        }
    }
    if (bias.data)
        check(c, mgpu_cuda_bias_add(s, y, sh->c_out, pixels, bias.data, (int)bias.dtype, true),
              op);
}

/* ------------------------------------------------------------ other ops */

#define STREAM(c) ((c)->stream[MGPU_QUEUE_COMPUTE])

static void cuda_convert(mgpu_backend *be, mgpu_wref src, int64_t n, float *dst)
{
    cuda_backend *c = cb(be);
    size_t b;
    if (!enter(c) || !row_bytes(c, "convert", src.dtype, n, &b) || n == 0)
        return;
    check(c, mgpu_cuda_dequant_f32(STREAM(c), src.dtype, src.data, n, dst), "convert");
}

static void cuda_encode(mgpu_backend *be, const float *src, int64_t n, mgpu_dtype dtype, void *dst)
{
    cuda_backend *c = cb(be);
    if (!enter(c) || n <= 0)
        return;
    if (dtype == MGPU_DTYPE_F32)
        check(c, cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice,
                                 STREAM(c)),
              "encode");
    else if (dtype == MGPU_DTYPE_F16)
        check(c, mgpu_cuda_f32_to_f16(STREAM(c), src, n, dst), "encode");
    else if (dtype == MGPU_DTYPE_BF16)
        check(c, mgpu_cuda_f32_to_bf16(STREAM(c), src, n, dst), "encode");
    else
        cuda_fail(c, MGPU_ERR_UNSUPPORTED, "encode: cannot encode f32 values as %s",
                  mgpu_dtype_name(dtype));
}

static void cuda_get_rows(mgpu_backend *be, mgpu_wref table, int64_t dim, const int32_t *ids,
                          int64_t n, float *out)
{
    cuda_backend *c = cb(be);
    size_t b;
    if (!enter(c) || !args_ok(c, dim > 0 && n >= 0, "get_rows") ||
        !row_bytes(c, "get_rows", table.dtype, dim, &b) || n == 0)
        return;
    check(c, mgpu_cuda_get_rows(STREAM(c), table.dtype, table.data, dim, ids, n, out), "get_rows");
}

static void cuda_layernorm(mgpu_backend *be, const float *x, float *y, int64_t rows, int64_t dim,
                           mgpu_wref weight, mgpu_wref bias, float eps)
{
    cuda_backend *c = cb(be);
    if (!enter(c) || !param_ok(c, "layernorm", weight, dim) || !param_ok(c, "layernorm", bias, dim) ||
        rows <= 0 || dim <= 0)
        return;
    check(c, mgpu_cuda_layernorm(STREAM(c), x, y, rows, dim, weight, bias, eps), "layernorm");
}

static void cuda_rmsnorm(mgpu_backend *be, const float *x, float *y, int64_t rows, int64_t dim,
                         mgpu_wref weight, float eps)
{
    cuda_backend *c = cb(be);
    if (!enter(c) || !param_ok(c, "rmsnorm", weight, dim) || rows <= 0 || dim <= 0)
        return;
    check(c, mgpu_cuda_rmsnorm(STREAM(c), x, y, rows, dim, weight, eps), "rmsnorm");
}

static void cuda_group_norm(mgpu_backend *be, const float *x, float *y, int64_t channels,
                            int64_t spatial, int64_t groups, mgpu_wref weight, mgpu_wref bias,
                            float eps)
{
    cuda_backend *c = cb(be);
    if (!enter(c) ||
        !args_ok(c, channels >= 0 && spatial >= 0 && groups > 0 && channels % groups == 0,
                 "group_norm") ||
        !param_ok(c, "group_norm", weight, channels) || !param_ok(c, "group_norm", bias, channels) ||
        channels == 0 || spatial == 0)
        return;
    check(c, mgpu_cuda_group_norm(STREAM(c), x, y, channels, spatial, groups, weight, bias, eps),
          "group_norm");
}

static void cuda_unary(mgpu_backend *be, mgpu_unary_op op, float *x, int64_t n)
{
    cuda_backend *c = cb(be);
    if (!enter(c))
        return;
    if ((int)op < MGPU_UNARY_SILU || (int)op > MGPU_UNARY_RELU) {
        cuda_fail(c, MGPU_ERR_ARGUMENT, "unknown unary op %d", (int)op);
        return;
    }
    if (n > 0)
        check(c, mgpu_cuda_unary(STREAM(c), (int)op, x, n), "unary");
}

static void cuda_add(mgpu_backend *be, float *y, const float *a, const float *b, int64_t n)
{
    cuda_backend *c = cb(be);
    if (enter(c) && n > 0)
        check(c, mgpu_cuda_add(STREAM(c), y, a, b, n), "add");
}

static void cuda_mul(mgpu_backend *be, float *y, const float *a, const float *b, int64_t n)
{
    cuda_backend *c = cb(be);
    if (enter(c) && n > 0)
        check(c, mgpu_cuda_mul(STREAM(c), y, a, b, n), "mul");
}

static void cuda_scale(mgpu_backend *be, float *y, const float *x, float s, int64_t n)
{
    cuda_backend *c = cb(be);
    if (enter(c) && n > 0)
        check(c, mgpu_cuda_scale(STREAM(c), y, x, s, n), "scale");
}

static void cuda_softmax_rows(mgpu_backend *be, float *x, int64_t rows, int64_t cols)
{
    cuda_backend *c = cb(be);
    if (enter(c) && rows > 0 && cols > 0)
        check(c, mgpu_cuda_softmax_rows(STREAM(c), x, rows, cols), "softmax_rows");
}

static void cuda_modulate(mgpu_backend *be, float *y, const float *x, int64_t rows, int64_t dim,
                          const float *shift, const float *scale)
{
    cuda_backend *c = cb(be);
    if (enter(c) && rows > 0 && dim > 0)
        check(c, mgpu_cuda_modulate(STREAM(c), y, x, rows, dim, shift, scale), "modulate");
}

static void cuda_gate_add(mgpu_backend *be, float *y, const float *x, int64_t rows, int64_t dim,
                          const float *gate)
{
    cuda_backend *c = cb(be);
    if (enter(c) && rows > 0 && dim > 0)
        check(c, mgpu_cuda_gate_add(STREAM(c), y, x, rows, dim, gate), "gate_add");
}

static void cuda_rope(mgpu_backend *be, float *x, int64_t heads, int64_t tokens, int64_t head_dim,
                      const float *cos_t, const float *sin_t)
{
    cuda_backend *c = cb(be);
    if (enter(c) && heads > 0 && tokens > 0 && head_dim >= 2)
        check(c, mgpu_cuda_rope(STREAM(c), x, heads, tokens, head_dim, cos_t, sin_t), "rope");
}

/* Batched bf16 x bf16 -> f32 GEMM (tensor cores, f32 accumulation), column
 * major as cuBLAS sees it: C_i = alpha op(A_i) B_i for i < batch. */
static bool gemm_batched(cuda_backend *c, bool trans_a, int64_t m, int64_t n, int64_t k,
                         float alpha, const void *a, int64_t lda, long long stride_a,
                         const void *b, int64_t ldb, long long stride_b, float *y, int64_t ldc,
                         long long stride_c, int64_t batch, const char *op)
{
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
        ldc > INT_MAX || batch > INT_MAX) {
        cuda_fail(c, MGPU_ERR_UNSUPPORTED, "%s: a GEMM dimension exceeds 2^31", op);
        return false;
    }
    const float zero = 0.0f;
    cublasStatus_t s = cublasGemmStridedBatchedEx(
        c->blas, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, (int)m, (int)n, (int)k, &alpha,
        a, CUDA_R_16BF, (int)lda, stride_a, b, CUDA_R_16BF, (int)ldb, stride_b, &zero, y,
        CUDA_R_32F, (int)ldc, stride_c, (int)batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cuda_fail(c, s == CUBLAS_STATUS_ALLOC_FAILED ? MGPU_ERR_NO_MEMORY : MGPU_ERR_IO,
                  "%s: cublasGemmStridedBatchedEx %lldx%lldx%lld x%lld: %s", op, (long long)m,
                  (long long)n, (long long)k, (long long)batch, blas_msg(s));
        return false;
    }
    return true;
}

/* When attention runs on tensor cores: the shapes where its products are
 * the work (FLUX's joint attention) and head sizes beyond the fused
 * kernel's 256 (the VAE's mid-block: 512), with neither bias nor mask.
 * Smaller, biased or causal attention (CLIP, T5) keeps the fused f32
 * kernel. */
static bool attention_on_tensor_cores(int64_t q_len, int64_t kv_len, int64_t head_dim,
                                      const float *bias, bool causal)
{
    return !bias && !causal &&
           ((q_len >= MGPU_ATTENTION_BF16_MIN && kv_len >= MGPU_ATTENTION_BF16_MIN) ||
            head_dim > 256);
}

static size_t align256(size_t n)
{
    return (n + 255) / 256 * 256;
}

/* Per chunk of heads: S = scale Q K^T by a batched bf16 GEMM into f32, a
 * row softmax written as bf16 P, O = P V by a second batched GEMM. Q, K, V
 * are rounded to bf16 once. S stays within 256 MiB however long the
 * sequence: several heads per chunk when they fit (FLUX.1 at 1024x1024: 3
 * heads of 4608 x 4608), else one head in blocks of query rows (the VAE's
 * single head at a 128x128 latent: 16384 x 16384), since rows of S are
 * independent. Row-major data is column-major transposed to cuBLAS:
 * S^T = K Q^T is (kv x q) = op_T(K^T as d x kv) (Q^T as d x q), and
 * O^T = V^T P^T is (d x q) = (V^T as d x kv) (P^T as kv x q). */
static void attention_tc(cuda_backend *c, const float *q, const float *k, const float *v,
                         float *out, int64_t heads, int64_t q_len, int64_t kv_len, int64_t d,
                         float scale)
{
    const char *op = "attention (tensor cores)";
    const size_t budget = (size_t)256 << 20; /* bytes of S per chunk */
    const size_t nq = (size_t)(heads * q_len * d), nk = (size_t)(heads * kv_len * d);
    const size_t row = (size_t)kv_len * sizeof(float);
    int64_t qblk = (int64_t)(budget / row);
    qblk = qblk < 1 ? 1 : qblk > q_len ? q_len : qblk;
    int64_t chunk = 1;
    if (qblk == q_len) {
        chunk = (int64_t)(budget / (row * (size_t)q_len));
        chunk = chunk < 1 ? 1 : chunk > heads ? heads : chunk;
    }
    const size_t s_elems = (size_t)chunk * (size_t)qblk * (size_t)kv_len;
    const size_t at_k = align256(nq * 2), at_v = at_k + align256(nk * 2);
    const size_t at_s = at_v + align256(nk * 2);
    const size_t at_p = at_s + align256(s_elems * sizeof(float));
    uint8_t *buf = scratch(c, SCRATCH_ATT, at_p + s_elems * 2);
    if (!buf)
        return;
    void *qb = buf, *kb = buf + at_k, *vb = buf + at_v, *pb = buf + at_p;
    float *sb = (float *)(buf + at_s);
    cudaStream_t st = STREAM(c);
    if (!check(c, mgpu_cuda_f32_to_bf16(st, q, (int64_t)nq, qb), op) ||
        !check(c, mgpu_cuda_f32_to_bf16(st, k, (int64_t)nk, kb), op) ||
        !check(c, mgpu_cuda_f32_to_bf16(st, v, (int64_t)nk, vb), op))
        return;
    const long long sq = (long long)(q_len * d), sk = (long long)(kv_len * d);
    const long long ss = (long long)(qblk * kv_len); /* one head's block of S and P */
    for (int64_t h0 = 0; h0 < heads; h0 += chunk) {
        const int64_t hc = heads - h0 < chunk ? heads - h0 : chunk;
        const uint8_t *kh = (const uint8_t *)kb + (size_t)(h0 * sk) * 2;
        const uint8_t *vh = (const uint8_t *)vb + (size_t)(h0 * sk) * 2;
        for (int64_t q0 = 0; q0 < q_len; q0 += qblk) {
            const int64_t nr = q_len - q0 < qblk ? q_len - q0 : qblk;
            const uint8_t *qh = (const uint8_t *)qb + (size_t)(h0 * sq + q0 * d) * 2;
            if (!gemm_batched(c, true, kv_len, nr, d, scale, kh, d, sk, qh, d, sq, sb, kv_len, ss,
                              hc, op) ||
                !check(c, mgpu_cuda_softmax_bf16(st, sb, hc * nr, kv_len, pb), op) ||
                !gemm_batched(c, false, d, nr, kv_len, 1.0f, vh, d, sk, pb, kv_len, ss,
                              out + h0 * sq + q0 * d, d, sq, hc, op))
                return;
        }
    }
}

static void cuda_attention(mgpu_backend *be, const float *q, const float *k, const float *v,
                           float *out, int64_t heads, int64_t q_len, int64_t kv_len,
                           int64_t head_dim, float scale, const float *bias, bool causal)
{
    cuda_backend *c = cb(be);
    if (!enter(c) || !args_ok(c, heads >= 0 && q_len >= 0 && kv_len >= 0, "attention") ||
        heads == 0 || q_len == 0 || head_dim <= 0)
        return;
    if (kv_len == 0) { /* a softmax over no keys: the empty sum, 0 (as the CPU) */
        check(c,
              cudaMemsetAsync(out, 0, (size_t)(heads * q_len * head_dim) * sizeof(float),
                              STREAM(c)),
              "attention");
        return;
    }
    if (attention_on_tensor_cores(q_len, kv_len, head_dim, bias, causal)) {
        attention_tc(c, q, k, v, out, heads, q_len, kv_len, head_dim, scale);
        return;
    }
    const size_t smem = mgpu_cuda_attention_smem(head_dim);
    if (smem > c->smem_optin || heads > 65535) {
        cuda_fail(c, MGPU_ERR_UNSUPPORTED,
                  "attention: head_dim %lld with %lld heads is beyond this kernel (head_dim <= "
                  "256 within %zu bytes of shared memory, heads <= 65535)",
                  (long long)head_dim, (long long)heads, c->smem_optin);
        return;
    }
    check(c,
          mgpu_cuda_attention(STREAM(c), q, k, v, out, heads, q_len, kv_len, head_dim, scale, bias,
                              causal),
          "attention");
}

static void cuda_axpy_2d(mgpu_backend *be, float *dst, int64_t dst_stride, const float *src,
                         int64_t src_stride, int64_t rows, int64_t cols, float k)
{
    cuda_backend *c = cb(be);
    if (enter(c) && rows > 0 && cols > 0)
        check(c, mgpu_cuda_axpy_2d(STREAM(c), dst, dst_stride, src, src_stride, rows, cols, k),
              "axpy_2d");
}

static void cuda_copy_2d(mgpu_backend *be, float *dst, int64_t dst_stride, const float *src,
                         int64_t src_stride, int64_t rows, int64_t cols)
{
    cuda_backend *c = cb(be);
    if (!enter(c) || rows <= 0 || cols <= 0)
        return;
    /* Overlapping source and destination (allowed within a row, as the
     * CPU's memmove) go through scratch, so no thread reads what another
     * already wrote. */
    const uintptr_t s0 = (uintptr_t)src, d0 = (uintptr_t)dst;
    const uintptr_t s1 = s0 + (uintptr_t)((rows - 1) * src_stride + cols) * sizeof(float);
    const uintptr_t d1 = d0 + (uintptr_t)((rows - 1) * dst_stride + cols) * sizeof(float);
    if (s0 < d1 && d0 < s1) {
        float *tmp = scratch(c, SCRATCH_TMP, (size_t)(rows * cols) * sizeof(float));
        if (tmp && check(c, mgpu_cuda_copy_2d(STREAM(c), tmp, cols, src, src_stride, rows, cols),
                         "copy_2d"))
            check(c, mgpu_cuda_copy_2d(STREAM(c), dst, dst_stride, tmp, cols, rows, cols),
                  "copy_2d");
        return;
    }
    check(c, mgpu_cuda_copy_2d(STREAM(c), dst, dst_stride, src, src_stride, rows, cols), "copy_2d");
}

static void cuda_transpose(mgpu_backend *be, const float *x, int64_t rows, int64_t cols, float *y)
{
    cuda_backend *c = cb(be);
    if (enter(c) && rows > 0 && cols > 0)
        check(c, mgpu_cuda_transpose(STREAM(c), x, rows, cols, y), "transpose");
}

static void cuda_tokens_to_heads(mgpu_backend *be, const float *x, int64_t tokens, int64_t heads,
                                 int64_t head_dim, float *out)
{
    cuda_backend *c = cb(be);
    if (enter(c) && tokens > 0 && heads > 0 && head_dim > 0)
        check(c, mgpu_cuda_heads(STREAM(c), x, tokens, heads, head_dim, out, true),
              "tokens_to_heads");
}

static void cuda_heads_to_tokens(mgpu_backend *be, const float *x, int64_t tokens, int64_t heads,
                                 int64_t head_dim, float *out)
{
    cuda_backend *c = cb(be);
    if (enter(c) && tokens > 0 && heads > 0 && head_dim > 0)
        check(c, mgpu_cuda_heads(STREAM(c), x, tokens, heads, head_dim, out, false),
              "heads_to_tokens");
}

static void cuda_upsample2x(mgpu_backend *be, const float *x, int64_t channels, int64_t h,
                            int64_t w, float *y)
{
    cuda_backend *c = cb(be);
    if (enter(c) && channels > 0 && h > 0 && w > 0)
        check(c, mgpu_cuda_upsample2x(STREAM(c), x, channels, h, w, y), "upsample2x");
}

static mgpu_status cuda_set_gemm(mgpu_backend *be, int precision, mgpu_error *err)
{
    cuda_backend *c = cb(be);
    c->gemm = precision;
    if (precision != MGPU_GEMM_FP8 || c->fp8_tried)
        return MGPU_OK;
    c->fp8_tried = true;
    cudaError_t e = cudaSetDevice(c->device);
    if (e != cudaSuccess)
        return set_error(err, status_of(e), "%s: cudaSetDevice: %s", c->name,
                         cudaGetErrorString(e));
    /* no fp8 tensor cores: fp8 weights are decoded to bf16, as with auto */
    c->fp8 = mgpu_cuda_fp8_create(c->device, c->stream[MGPU_QUEUE_COMPUTE], c->blas_ws,
                                  BLAS_WORKSPACE, c->fp8_why, sizeof c->fp8_why);
    return MGPU_OK;
}

static const char *cuda_gemm_name(const mgpu_backend *be)
{
    const cuda_backend *c = (const cuda_backend *)be;
    if (c->gemm == MGPU_GEMM_F32)
        return "f32";
    if (c->gemm == MGPU_GEMM_FP8)
        return c->fp8 ? "fp8 for F8_E4M3 weights, else bf16" : "bf16 (no fp8 tensor cores here)";
    return "bf16";
}

static const mgpu_backend_ops cuda_ops = {
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .copy = cuda_copy,
    .event_create = cuda_event_create,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .queue_wait = cuda_queue_wait,
    .event_sync = cuda_event_sync,
    .synchronize = cuda_synchronize,
    .linear = cuda_linear,
    .convert = cuda_convert,
    .encode = cuda_encode,
    .get_rows = cuda_get_rows,
    .layernorm = cuda_layernorm,
    .rmsnorm = cuda_rmsnorm,
    .group_norm = cuda_group_norm,
    .unary = cuda_unary,
    .add = cuda_add,
    .mul = cuda_mul,
    .scale = cuda_scale,
    .softmax_rows = cuda_softmax_rows,
    .modulate = cuda_modulate,
    .gate_add = cuda_gate_add,
    .rope = cuda_rope,
    .attention = cuda_attention,
    .copy_2d = cuda_copy_2d,
    .axpy_2d = cuda_axpy_2d,
    .transpose = cuda_transpose,
    .tokens_to_heads = cuda_tokens_to_heads,
    .heads_to_tokens = cuda_heads_to_tokens,
    .conv2d = cuda_conv2d,
    .upsample2x = cuda_upsample2x,
    .set_gemm = cuda_set_gemm,
    .gemm_name = cuda_gemm_name,
};

/* ------------------------------------------------------------ entry points */

MGPU_CUDA_EXPORT const int mgpu_cuda_plugin_abi = MGPU_BACKEND_ABI;

/* The driver's verdict as one phrase: no driver, no device, or why not. */
static const char *driver_problem(cudaError_t e)
{
    switch (e) {
    case cudaErrorInsufficientDriver: return "no CUDA driver (or one too old for this build)";
    case cudaErrorNoDevice: return "no CUDA device";
    default: return cudaGetErrorString(e);
    }
}

MGPU_CUDA_EXPORT int mgpu_cuda_plugin_device_count(char *why, size_t why_size)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (why && why_size)
            snprintf(why, why_size, "%s", driver_problem(e));
        return e == cudaErrorNoDevice ? 0 : -1;
    }
    return n;
}

static mgpu_status create_fail(cuda_backend *c, mgpu_error *err, mgpu_status st, const char *fmt,
                               ...) __attribute__((format(printf, 4, 5)));
static mgpu_status create_fail(cuda_backend *c, mgpu_error *err, mgpu_status st, const char *fmt,
                               ...)
{
    char line[MGPU_ERROR_MESSAGE_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    set_error(err, st, "%s: %s", c->name, line);
    cuda_destroy(&c->base);
    return st;
}

MGPU_CUDA_EXPORT mgpu_status mgpu_cuda_plugin_create(int abi, int ordinal, mgpu_backend **out,
                                                     mgpu_error *err)
{
    *out = NULL;
    if (abi != MGPU_BACKEND_ABI)
        return set_error(err, MGPU_ERR_UNSUPPORTED,
                         "cuda:%d: the CUDA plugin implements backend ABI %d, libmgpu wants %d",
                         ordinal, MGPU_BACKEND_ABI, abi);
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return set_error(err, MGPU_ERR_NOT_FOUND, "cuda:%d: %s", ordinal, driver_problem(e));
    }
    if (ordinal < 0 || ordinal >= count)
        return set_error(err, MGPU_ERR_NOT_FOUND, "cuda:%d: no such device (%d CUDA device%s)",
                         ordinal, count, count == 1 ? "" : "s");
    cuda_backend *c = calloc(1, sizeof *c);
    if (!c)
        return set_error(err, MGPU_ERR_NO_MEMORY, "cuda:%d: out of memory", ordinal);
    pthread_mutex_init(&c->lock, NULL);
    snprintf(c->name, sizeof c->name, "cuda:%d", ordinal);
    c->device = ordinal;
    c->base.ops = &cuda_ops;
    c->base.name = c->name;
    c->base.host_visible = false;
    c->base.impl = c;
    mgpu_pool_init(&c->pool, ARENA_BYTES, arena_grow, arena_release, c);

    if ((e = cudaSetDevice(ordinal)) != cudaSuccess)
        return create_fail(c, err, status_of(e), "cudaSetDevice: %s", cudaGetErrorString(e));
    int optin = 0;
    if ((e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, ordinal)) !=
        cudaSuccess)
        return create_fail(c, err, status_of(e), "cudaDeviceGetAttribute: %s",
                           cudaGetErrorString(e));
    c->smem_optin = (size_t)optin;
    for (int q = 0; q < MGPU_QUEUE_COUNT; q++) {
        if ((e = cudaStreamCreateWithFlags(&c->stream[q], cudaStreamNonBlocking)) != cudaSuccess)
            return create_fail(c, err, status_of(e), "cudaStreamCreate: %s",
                               cudaGetErrorString(e));
        if ((e = cudaEventCreateWithFlags(&c->free_ev[q], cudaEventDisableTiming)) != cudaSuccess)
            return create_fail(c, err, status_of(e), "cudaEventCreate: %s", cudaGetErrorString(e));
    }
    cublasStatus_t bs = cublasCreate(&c->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        return create_fail(c, err, MGPU_ERR_IO, "cublasCreate: %s", blas_msg(bs));
    }
    char b[32];
    if ((e = cudaMalloc(&c->blas_ws, BLAS_WORKSPACE)) != cudaSuccess) {
        c->blas_ws = NULL;
        return create_fail(c, err, status_of(e), "cudaMalloc of %s cuBLAS workspace: %s",
                           fmt_bytes(BLAS_WORKSPACE, b, sizeof b), cudaGetErrorString(e));
    }
    /* One stream, one fixed workspace, default math (tensor cores for bf16,
     * plain f32 for f32): cuBLAS then picks the same kernels every run. */
    if ((bs = cublasSetStream(c->blas, c->stream[MGPU_QUEUE_COMPUTE])) != CUBLAS_STATUS_SUCCESS ||
        (bs = cublasSetWorkspace(c->blas, c->blas_ws, BLAS_WORKSPACE)) != CUBLAS_STATUS_SUCCESS ||
        (bs = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS)
        return create_fail(c, err, MGPU_ERR_IO, "configuring cuBLAS: %s", blas_msg(bs));
    *out = &c->base;
    return MGPU_OK;
}
