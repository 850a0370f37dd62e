/* The CPU backend: device memory is host memory, queues are the calling
 * thread (every op and copy completes before it returns, so events are
 * always reached), and the ops are the CPU kernels of src/ops on one thread
 * pool. Parameters stored in a narrow dtype (norm scales, biases) are
 * decoded into small reused buffers; weights of linear layers are decoded a
 * tile at a time inside mgpu_cpu_linear.
 *
 * A "discrete" variant keeps host_visible false, so the executor and the
 * models take the paths a GPU needs (uploads, bounce buffers, device copies
 * of resident weights) while still computing here: the tests use it to
 * check those paths give the same bits. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu_copy_queue.h"
#include "core/error.h"
#include "ops/cpu_gemm_bf16.h"
#include "ops/cpu_linear.h"
#include "ops/cpu_ops.h"
#include "ops/threadpool.h"
#include "ops/cpu_image.h"

enum { ALIGN = 4096, N_PARAMS = 2 };

typedef struct cpu_impl {
    mgpu_threadpool *pool;
    mgpu_cpu_gemm gemm;
    mgpu_cpu_scratch linear_scratch;
    struct {
        float *data;
        int64_t floats;
    } param[N_PARAMS]; /* decoded narrow parameters, one buffer per slot */
    _Atomic uint64_t copied[MGPU_COPY_KINDS]; /* bytes, by copy kind (tests, diagnostics) */
    mgpu_cpu_copy_queue *copyq; /* the discrete variant's asynchronous copy queue */
} cpu_impl;

/* The compute queue runs each op before it returns; the discrete variant's
 * copy queue runs behind (cpu_copy_queue.h): an event is a position in it. */
struct mgpu_event {
    uint64_t mark;
};

static cpu_impl *impl(mgpu_backend *be)
{
    return be->impl;
}

static mgpu_threadpool *pool(mgpu_backend *be)
{
    return impl(be)->pool;
}

static void cpu_destroy(mgpu_backend *be)
{
    cpu_impl *c = impl(be);
    mgpu_cpu_copy_queue_free(c->copyq);
    mgpu_threadpool_free(c->pool);
    mgpu_cpu_scratch_free(&c->linear_scratch);
    for (int i = 0; i < N_PARAMS; i++)
        free(c->param[i].data);
    free(c);
    free(be);
}

static mgpu_status cpu_alloc(mgpu_backend *be, size_t bytes, void **out, mgpu_error *err)
{
    size_t rounded = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    *out = aligned_alloc(ALIGN, rounded ? rounded : ALIGN);
    if (!*out)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes", be->name,
                              bytes);
    return MGPU_OK;
}

static void cpu_free(mgpu_backend *be, void *ptr)
{
    (void)be;
    free(ptr);
}

/* Pinned host memory of the discrete variant is registered with its copy
 * queue, so that copies from it may run behind. */
static mgpu_status cpu_host_alloc(mgpu_backend *be, size_t bytes, void **out, mgpu_error *err)
{
    mgpu_status s = cpu_alloc(be, bytes, out, err);
    mgpu_cpu_copy_queue *q = impl(be)->copyq;
    if (s == MGPU_OK && q && !mgpu_cpu_copy_queue_pin(q, *out, bytes)) {
        free(*out);
        *out = NULL;
        s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", be->name);
    }
    return s;
}

static void cpu_host_free(mgpu_backend *be, void *ptr)
{
    if (impl(be)->copyq)
        mgpu_cpu_copy_queue_unpin(impl(be)->copyq, ptr);
    free(ptr);
}

static mgpu_status cpu_copy(mgpu_backend *be, int queue, void *dst, const void *src, size_t bytes,
                            mgpu_copy_kind kind, mgpu_error *err)
{
    cpu_impl *c = impl(be);
    if (queue < 0 || queue >= MGPU_QUEUE_COUNT || (unsigned)kind >= MGPU_COPY_KINDS)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: copy on unknown queue %d or of kind %d",
                              be->name, queue, (int)kind);
    c->copied[kind] += bytes;
    if (c->copyq && queue == MGPU_QUEUE_COPY && bytes) {
        /* what a GPU copies asynchronously runs behind; a pageable side
         * completes, in queue order, before copy returns (backend.h) */
        mgpu_cpu_copy_queue *q = c->copyq;
        bool async = kind == MGPU_COPY_PEER_TO_DEVICE || kind == MGPU_COPY_DEVICE_TO_DEVICE ||
                     (kind == MGPU_COPY_HOST_TO_DEVICE && mgpu_cpu_copy_queue_is_pinned(q, src, bytes)) ||
                     (kind == MGPU_COPY_DEVICE_TO_HOST && mgpu_cpu_copy_queue_is_pinned(q, dst, bytes));
        if (!mgpu_cpu_copy_queue_push(q, dst, src, bytes))
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", be->name);
        if (!async)
            mgpu_cpu_copy_queue_wait(q, mgpu_cpu_copy_queue_mark(q));
        return MGPU_OK;
    }
    if (bytes)
        memmove(dst, src, bytes);
    return MGPU_OK;
}

static mgpu_status cpu_event_create(mgpu_backend *be, mgpu_event **out, mgpu_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", be->name);
    return MGPU_OK;
}

static void cpu_event_destroy(mgpu_backend *be, mgpu_event *ev)
{
    (void)be;
    free(ev);
}

static mgpu_status cpu_event_record(mgpu_backend *be, mgpu_event *ev, int queue, mgpu_error *err)
{
    (void)err;
    mgpu_cpu_copy_queue *q = impl(be)->copyq;
    ev->mark = q && queue == MGPU_QUEUE_COPY ? mgpu_cpu_copy_queue_mark(q) : 0;
    return MGPU_OK;
}

static mgpu_status cpu_event_sync(mgpu_backend *be, mgpu_event *ev, mgpu_error *err)
{
    (void)err;
    if (impl(be)->copyq)
        mgpu_cpu_copy_queue_wait(impl(be)->copyq, ev->mark);
    return MGPU_OK;
}

/* The copy queue already runs after everything the compute queue did (ops
 * finish before they return); the compute queue waits for real. */
static mgpu_status cpu_queue_wait(mgpu_backend *be, int queue, mgpu_event *ev, mgpu_error *err)
{
    return queue == MGPU_QUEUE_COMPUTE ? cpu_event_sync(be, ev, err) : MGPU_OK;
}

static mgpu_status cpu_synchronize(mgpu_backend *be, mgpu_error *err)
{
    if (impl(be)->copyq)
        mgpu_cpu_copy_queue_wait(impl(be)->copyq, mgpu_cpu_copy_queue_mark(impl(be)->copyq));
    if (be->error.status == MGPU_OK)
        return MGPU_OK;
    if (err)
        *err = be->error;
    return be->error.status;
}

/* A parameter vector as f32: in place when stored f32 and aligned, else
 * decoded into slot `slot`'s buffer. NULL for an absent parameter or after
 * a failure (recorded). */
static const float *param(mgpu_backend *be, mgpu_wref w, int64_t n, int slot)
{
    if (!w.data || mgpu_backend_failed(be))
        return NULL;
    if (w.dtype == MGPU_DTYPE_F32 && (uintptr_t)w.data % sizeof(float) == 0)
        return w.data;
    cpu_impl *c = impl(be);
    if (c->param[slot].floats < n) {
        float *grown = realloc(c->param[slot].data, (size_t)n * sizeof(float));
        if (!grown) {
            mgpu_backend_fail(be, MGPU_ERR_NO_MEMORY, "out of memory decoding a parameter");
            return NULL;
        }
        c->param[slot].data = grown;
        c->param[slot].floats = n;
    }
    mgpu_status s = mgpu_dequantize(w.dtype, w.data, c->param[slot].data, (uint64_t)n);
    if (s != MGPU_OK) {
        mgpu_backend_fail(be, s, "cannot decode a %s parameter of %lld values",
                          mgpu_dtype_name(w.dtype), (long long)n);
        return NULL;
    }
    return c->param[slot].data;
}

/* Ops after a failure do nothing: their inputs may be garbage. */
#define SKIP_IF_FAILED(be)                                                                         \
    do {                                                                                           \
        if (mgpu_backend_failed(be))                                                               \
            return;                                                                                \
    } while (0)

static void cpu_linear(mgpu_backend *be, const float *x, int64_t rows, int64_t in, mgpu_wref w,
                       int64_t out, mgpu_wref bias, float *y)
{
    SKIP_IF_FAILED(be);
    const float *b = param(be, bias, out, 0);
    SKIP_IF_FAILED(be);
    /* bf16 never rounds a weight below what it is stored as: f32 weights
     * (and LoRA factors, uploaded as f32) multiply in f32 */
    mgpu_cpu_gemm gemm = w.dtype == MGPU_DTYPE_F32 ? MGPU_CPU_GEMM_F32 : impl(be)->gemm;
    mgpu_status s = mgpu_cpu_linear_ex(x, rows, in, w.data, w.dtype, out, b, y, pool(be),
                                       &impl(be)->linear_scratch, gemm);
    if (s != MGPU_OK)
        mgpu_backend_fail(be, s, "linear %lldx%lld over %s weights failed", (long long)out,
                          (long long)in, mgpu_dtype_name(w.dtype));
}

/* convert and encode run in chunks on the pool: merge-once converts whole
 * models' worth of weights. */
typedef struct convert_job {
    mgpu_dtype dtype;
    const void *src;
    void *dst;
    int64_t block_elems;
    size_t block_bytes;
    mgpu_status status; /* of the first failing chunk; chunks fail alike */
} convert_job;

static void convert_chunk(void *ctx, int64_t begin, int64_t end)
{
    convert_job *j = ctx;
    mgpu_status s = mgpu_dequantize(j->dtype, (const uint8_t *)j->src + (size_t)begin * j->block_bytes,
                                    (float *)j->dst + begin * j->block_elems,
                                    (uint64_t)((end - begin) * j->block_elems));
    if (s != MGPU_OK)
        j->status = s;
}

static void cpu_convert(mgpu_backend *be, mgpu_wref src, int64_t n, float *dst)
{
    SKIP_IF_FAILED(be);
    const mgpu_dtype_info *info = mgpu_dtype_get_info(src.dtype);
    mgpu_status s = MGPU_ERR_UNSUPPORTED;
    if (info && info->block_elems > 0 && n % info->block_elems == 0) {
        convert_job j = {src.dtype, src.data, dst, info->block_elems, info->block_bytes, MGPU_OK};
        mgpu_threadpool_run(pool(be), convert_chunk, &j, n / info->block_elems,
                            (1 << 16) / info->block_elems + 1);
        s = j.status;
    }
    if (s != MGPU_OK)
        mgpu_backend_fail(be, s, "cannot convert %lld %s values", (long long)n,
                          mgpu_dtype_name(src.dtype));
}

static void encode_chunk(void *ctx, int64_t begin, int64_t end)
{
    convert_job *j = ctx;
    const float *x = (const float *)j->src + begin;
    uint16_t *d = (uint16_t *)j->dst + begin;
    if (j->dtype == MGPU_DTYPE_BF16) {
        mgpu_cpu_to_bf16(x, d, end - begin);
    } else {
        for (int64_t i = 0; i < end - begin; i++)
            d[i] = mgpu_f32_to_f16(x[i]);
    }
}

static void cpu_encode(mgpu_backend *be, const float *src, int64_t n, mgpu_dtype dtype, void *dst)
{
    SKIP_IF_FAILED(be);
    if (dtype == MGPU_DTYPE_F32) {
        memmove(dst, src, (size_t)n * sizeof(float));
    } else if (dtype == MGPU_DTYPE_F16 || dtype == MGPU_DTYPE_BF16) {
        convert_job j = {dtype, src, dst, 1, 0, MGPU_OK};
        mgpu_threadpool_run(pool(be), encode_chunk, &j, n, 1 << 16);
    } else {
        mgpu_backend_fail(be, MGPU_ERR_UNSUPPORTED, "cannot encode f32 values as %s",
                          mgpu_dtype_name(dtype));
    }
}

static void cpu_get_rows(mgpu_backend *be, mgpu_wref table, int64_t dim, const int32_t *ids,
                         int64_t n, float *out)
{
    SKIP_IF_FAILED(be);
    const mgpu_dtype_info *info = mgpu_dtype_get_info(table.dtype);
    if (!info || dim % info->block_elems != 0) {
        mgpu_backend_fail(be, MGPU_ERR_ARGUMENT, "get_rows: rows of %lld %s values", (long long)dim,
                          mgpu_dtype_name(table.dtype));
        return;
    }
    size_t row_bytes = (size_t)(dim / info->block_elems) * info->block_bytes;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *row = (const uint8_t *)table.data + (size_t)ids[i] * row_bytes;
        mgpu_status s = mgpu_dequantize(table.dtype, row, out + i * dim, (uint64_t)dim);
        if (s != MGPU_OK) {
            mgpu_backend_fail(be, s, "get_rows: cannot decode %s", mgpu_dtype_name(table.dtype));
            return;
        }
    }
}

static void cpu_layernorm(mgpu_backend *be, const float *x, float *y, int64_t rows, int64_t dim,
                          mgpu_wref weight, mgpu_wref bias, float eps)
{
    const float *w = param(be, weight, dim, 0), *b = param(be, bias, dim, 1);
    SKIP_IF_FAILED(be);
    mgpu_cpu_layernorm(x, y, rows, dim, w, b, eps, pool(be));
}

static void cpu_rmsnorm(mgpu_backend *be, const float *x, float *y, int64_t rows, int64_t dim,
                        mgpu_wref weight, float eps)
{
    const float *w = param(be, weight, dim, 0);
    SKIP_IF_FAILED(be);
    mgpu_cpu_rmsnorm(x, y, rows, dim, w, eps, pool(be));
}

static void cpu_unary(mgpu_backend *be, mgpu_unary_op op, float *x, int64_t n)
{
    SKIP_IF_FAILED(be);
    switch (op) {
    case MGPU_UNARY_SILU:
        mgpu_cpu_silu(x, n, pool(be));
        break;
    case MGPU_UNARY_GELU_TANH:
        mgpu_cpu_gelu_tanh(x, n, pool(be));
        break;
    case MGPU_UNARY_GELU_ERF:
        mgpu_cpu_gelu_erf(x, n, pool(be));
        break;
    case MGPU_UNARY_GELU_QUICK:
        mgpu_cpu_gelu_quick(x, n, pool(be));
        break;
    case MGPU_UNARY_RELU:
        mgpu_cpu_relu(x, n, pool(be));
        break;
    default:
        mgpu_backend_fail(be, MGPU_ERR_ARGUMENT, "unknown unary op %d", (int)op);
    }
}

static void cpu_add(mgpu_backend *be, float *y, const float *a, const float *b, int64_t n)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_add(y, a, b, n, pool(be));
}

static void cpu_mul(mgpu_backend *be, float *y, const float *a, const float *b, int64_t n)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_mul(y, a, b, n, pool(be));
}

static void cpu_scale(mgpu_backend *be, float *y, const float *x, float s, int64_t n)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_scale(y, x, s, n, pool(be));
}

static void cpu_softmax_rows(mgpu_backend *be, float *x, int64_t rows, int64_t cols)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_softmax_rows(x, rows, cols, pool(be));
}

static void cpu_modulate(mgpu_backend *be, float *y, const float *x, int64_t rows, int64_t dim,
                         const float *shift, const float *scale)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_modulate(y, x, rows, dim, shift, scale, pool(be));
}

static void cpu_gate_add(mgpu_backend *be, float *y, const float *x, int64_t rows, int64_t dim,
                         const float *gate)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_gate_add(y, x, rows, dim, gate, pool(be));
}

static void cpu_rope(mgpu_backend *be, float *x, int64_t heads, int64_t tokens, int64_t head_dim,
                     const float *cos_t, const float *sin_t)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_rope_apply(x, heads, tokens, head_dim, cos_t, sin_t, pool(be));
}

static void cpu_attention(mgpu_backend *be, const float *q, const float *k, const float *v,
                          float *out, int64_t heads, int64_t q_len, int64_t kv_len,
                          int64_t head_dim, float scale, const float *bias, bool causal)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_attention_ex(q, k, v, out, heads, q_len, kv_len, head_dim, scale, bias, causal,
                          pool(be));
}

static void cpu_axpy_2d(mgpu_backend *be, float *dst, int64_t dst_stride, const float *src,
                        int64_t src_stride, int64_t rows, int64_t cols, float k)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_axpy_2d(dst, dst_stride, src, src_stride, rows, cols, k, pool(be));
}

static void cpu_copy_2d(mgpu_backend *be, float *dst, int64_t dst_stride, const float *src,
                        int64_t src_stride, int64_t rows, int64_t cols)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_copy_2d(dst, dst_stride, src, src_stride, rows, cols);
}

static void cpu_transpose(mgpu_backend *be, const float *x, int64_t rows, int64_t cols, float *y)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_transpose(x, rows, cols, y);
}

static void cpu_tokens_to_heads(mgpu_backend *be, const float *x, int64_t tokens, int64_t heads,
                                int64_t head_dim, float *out)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_tokens_to_heads(x, tokens, heads, head_dim, out);
}

static void cpu_heads_to_tokens(mgpu_backend *be, const float *x, int64_t tokens, int64_t heads,
                                int64_t head_dim, float *out)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_heads_to_tokens(x, tokens, heads, head_dim, out);
}

static void cpu_group_norm(mgpu_backend *be, const float *x, float *y, int64_t channels,
                           int64_t spatial, int64_t groups, mgpu_wref weight, mgpu_wref bias,
                           float eps)
{
    const float *w = param(be, weight, channels, 0), *b = param(be, bias, channels, 1);
    SKIP_IF_FAILED(be);
    mgpu_cpu_group_norm(x, y, channels, spatial, groups, w, b, eps, pool(be));
}

static void cpu_conv2d(mgpu_backend *be, const float *x, const mgpu_conv2d_shape *shape,
                       mgpu_wref weight, mgpu_wref bias, float *y)
{
    const float *b = param(be, bias, shape->c_out, 0);
    SKIP_IF_FAILED(be);
    mgpu_status s = mgpu_cpu_conv2d(x, shape, weight.data, weight.dtype, b, y, pool(be),
                                    &impl(be)->linear_scratch);
    if (s != MGPU_OK)
        mgpu_backend_fail(be, s, "conv2d %lld -> %lld channels over %s weights failed",
                          (long long)shape->c_in, (long long)shape->c_out,
                          mgpu_dtype_name(weight.dtype));
}

static void cpu_upsample2x(mgpu_backend *be, const float *x, int64_t channels, int64_t h, int64_t w,
                           float *y)
{
    SKIP_IF_FAILED(be);
    mgpu_cpu_upsample2x(x, channels, h, w, y, pool(be));
}

static mgpu_status cpu_set_gemm(mgpu_backend *be, int precision, mgpu_error *err)
{
    bool fast = mgpu_cpu_bf16_gemm_available();
    if (precision == MGPU_GEMM_BF16 && !fast)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "bf16 GEMM is not available on this CPU or in this build (it needs "
                              "oneDNN and AVX512-BF16 or AMX)");
    bool automatic = precision == MGPU_GEMM_AUTO || precision == MGPU_GEMM_FP8; /* no fp8 here */
    bool bf16 = precision == MGPU_GEMM_BF16 || (automatic && fast);
    impl(be)->gemm = bf16 ? MGPU_CPU_GEMM_BF16 : MGPU_CPU_GEMM_F32;
    return MGPU_OK;
}

static const char *cpu_gemm_name(const mgpu_backend *be)
{
    return ((const cpu_impl *)be->impl)->gemm == MGPU_CPU_GEMM_BF16 ? "bf16" : "f32";
}

static const mgpu_backend_ops cpu_ops = {
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .copy = cpu_copy,
    .event_create = cpu_event_create,
    .event_destroy = cpu_event_destroy,
    .event_record = cpu_event_record,
    .queue_wait = cpu_queue_wait,
    .event_sync = cpu_event_sync,
    .synchronize = cpu_synchronize,
    .linear = cpu_linear,
    .convert = cpu_convert,
    .encode = cpu_encode,
    .get_rows = cpu_get_rows,
    .layernorm = cpu_layernorm,
    .rmsnorm = cpu_rmsnorm,
    .unary = cpu_unary,
    .add = cpu_add,
    .mul = cpu_mul,
    .scale = cpu_scale,
    .softmax_rows = cpu_softmax_rows,
    .modulate = cpu_modulate,
    .gate_add = cpu_gate_add,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .copy_2d = cpu_copy_2d,
    .axpy_2d = cpu_axpy_2d,
    .transpose = cpu_transpose,
    .tokens_to_heads = cpu_tokens_to_heads,
    .heads_to_tokens = cpu_heads_to_tokens,
    .group_norm = cpu_group_norm,
    .conv2d = cpu_conv2d,
    .upsample2x = cpu_upsample2x,
    .set_gemm = cpu_set_gemm,
    .gemm_name = cpu_gemm_name,
};

static mgpu_status create(int threads, bool host_visible, const char *name, mgpu_backend **out,
                          mgpu_error *err)
{
    *out = NULL;
    mgpu_backend *be = calloc(1, sizeof *be);
    cpu_impl *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    mgpu_status s = mgpu_threadpool_create(threads, &c->pool, err);
    if (s != MGPU_OK) {
        free(be);
        free(c);
        return s;
    }
    if (!host_visible && (s = mgpu_cpu_copy_queue_create(&c->copyq, err)) != MGPU_OK) {
        mgpu_threadpool_free(c->pool);
        free(be);
        free(c);
        return s;
    }
    be->ops = &cpu_ops;
    be->name = name;
    be->host_visible = host_visible;
    be->impl = c;
    *out = be;
    return MGPU_OK;
}

mgpu_status mgpu_backend_cpu_create(int threads, mgpu_backend **out, mgpu_error *err)
{
    return create(threads, true, "cpu", out, err);
}

uint64_t mgpu_backend_cpu_copied_bytes(const mgpu_backend *be, mgpu_copy_kind kind)
{
    return mgpu_backend_is_cpu(be) && (unsigned)kind < MGPU_COPY_KINDS
               ? ((const cpu_impl *)be->impl)->copied[kind]
               : 0;
}

mgpu_status mgpu_backend_cpu_create_discrete(int threads, mgpu_backend **out, mgpu_error *err)
{
    return create(threads, false, "cpu (discrete)", out, err);
}

bool mgpu_backend_is_cpu(const mgpu_backend *be)
{
    return be->ops == &cpu_ops;
}

int mgpu_backend_cpu_threads(const mgpu_backend *be)
{
    if (!mgpu_backend_is_cpu(be))
        return 0;
    return mgpu_threadpool_size(((const cpu_impl *)be->impl)->pool);
}
