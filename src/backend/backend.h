/* The compute backend interface: what model code is written against, once,
 * for every device that computes (the CPU here, CUDA GPUs through a plugin).
 * In the spirit of ggml's backend API: device memory, copies in each
 * direction on queues ordered by events, and the ops diffusion models need.
 *
 * Conventions, for every backend:
 * - Pointers passed to ops are device pointers from alloc (or weights the
 *   tensor source placed on the device). Model code never dereferences
 *   them on the host; it moves data with upload and download.
 * - Activations are f32, row-major, contiguous. Weights stay in their stored
 *   dtype (any mgpu_dtype that is floating, quantized types included) and
 *   are decoded as the op consumes them; an absent optional weight has
 *   data == NULL.
 * - Ops are enqueued on the compute queue in call order and may run
 *   asynchronously. They do not return a status: a failure (a CUDA launch
 *   error, an undecodable dtype) is kept as the backend's first error and
 *   reported by synchronize and download, after which later ops do nothing.
 * - Every op gives the same bits for the same inputs, whatever thread count
 *   or placement: work is never split along a reduction axis differently
 *   from run to run.
 * Internal to libmgpu; the CUDA plugin implements the same table. */
#ifndef MGPU_BACKEND_BACKEND_H
#define MGPU_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mgpu/dtype.h"
#include "mgpu/status.h"

/* Bumped whenever the table below changes: a plugin built against another
 * layout is refused at load. */
enum { MGPU_BACKEND_ABI = 2 };

typedef struct mgpu_backend mgpu_backend;

enum { MGPU_ATTENTION_BF16_MIN = 64 };
typedef struct mgpu_event mgpu_event;

/* Queues: ops run on the compute queue; the streaming executor copies on
 * the copy queue so copies overlap compute. */
enum { MGPU_QUEUE_COMPUTE = 0, MGPU_QUEUE_COPY = 1, MGPU_QUEUE_COUNT = 2 };

typedef enum mgpu_copy_kind {
    MGPU_COPY_HOST_TO_DEVICE,
    MGPU_COPY_DEVICE_TO_HOST,
    MGPU_COPY_DEVICE_TO_DEVICE,
    /* From another backend's device memory (a donor GPU) into this one's:
     * a direct peer copy where the GPUs have peer access (enabled on first
     * use), else staged through host memory by the driver. */
    MGPU_COPY_PEER_TO_DEVICE,
    MGPU_COPY_KINDS
} mgpu_copy_kind;

/* A weight as stored: its bytes on the device and their dtype. */
typedef struct mgpu_wref {
    const void *data;
    mgpu_dtype dtype;
} mgpu_wref;

typedef enum mgpu_unary_op {
    MGPU_UNARY_SILU,       /* x * sigmoid(x) */
    MGPU_UNARY_GELU_TANH,  /* FLUX's MLPs, T5 v1.1's gated GELU */
    MGPU_UNARY_GELU_ERF,   /* exact GELU (VAE-free models, SDXL) */
    MGPU_UNARY_GELU_QUICK, /* x * sigmoid(1.702 x): CLIP-L */
    MGPU_UNARY_RELU,
} mgpu_unary_op;

/* One NCHW image through a 2-D convolution. Output size:
 * out_h = (h + pad_top + pad_bottom - kh) / stride + 1, likewise out_w. */
typedef struct mgpu_conv2d_shape {
    int64_t c_in, h, w, c_out;
    int kh, kw, stride;
    int pad_top, pad_bottom, pad_left, pad_right;
} mgpu_conv2d_shape;

typedef struct mgpu_backend_ops {
    void (*destroy)(mgpu_backend *be);

    /* Device memory, aligned to at least 4096 bytes. */
    mgpu_status (*alloc)(mgpu_backend *be, size_t bytes, void **out, mgpu_error *err);
    void (*free)(mgpu_backend *be, void *ptr);
    /* Host memory the device copies from at full speed (pinned on CUDA),
     * aligned to 4096 bytes so O_DIRECT reads can land in it. */
    mgpu_status (*host_alloc)(mgpu_backend *be, size_t bytes, void **out, mgpu_error *err);
    void (*host_free)(mgpu_backend *be, void *ptr);

    /* Enqueues a copy on `queue`. Asynchronous where the host side came from
     * host_alloc; returns once a pageable host source may be reused. */
    mgpu_status (*copy)(mgpu_backend *be, int queue, void *dst, const void *src, size_t bytes,
                        mgpu_copy_kind kind, mgpu_error *err);
    mgpu_status (*event_create)(mgpu_backend *be, mgpu_event **out, mgpu_error *err);
    void (*event_destroy)(mgpu_backend *be, mgpu_event *ev);
    /* Marks the point `queue` has reached. */
    mgpu_status (*event_record)(mgpu_backend *be, mgpu_event *ev, int queue, mgpu_error *err);
    /* Work enqueued on `queue` after this waits for the event. */
    mgpu_status (*queue_wait)(mgpu_backend *be, int queue, mgpu_event *ev, mgpu_error *err);
    /* The host waits for the event. */
    mgpu_status (*event_sync)(mgpu_backend *be, mgpu_event *ev, mgpu_error *err);
    /* Waits for every queue; returns the first error any op met. */
    mgpu_status (*synchronize)(mgpu_backend *be, mgpu_error *err);

    /* ---- ops, on the compute queue ----------------------------------- */

    /* y[rows][out] = x[rows][in] W^T + bias, W stored [out][in]. */
    void (*linear)(mgpu_backend *be, const float *x, int64_t rows, int64_t in, mgpu_wref w,
                   int64_t out, mgpu_wref bias, float *y);
    /* n stored values -> f32 (n whole blocks for block types). */
    void (*convert)(mgpu_backend *be, mgpu_wref src, int64_t n, float *dst);
    /* The reverse for float storage: n f32 values -> F32, F16 or BF16,
     * rounded to nearest even (LoRA merge-once writes merged weights). */
    void (*encode)(mgpu_backend *be, const float *src, int64_t n, mgpu_dtype dtype, void *dst);
    /* out[i] = row ids[i] of table [rows][dim] as f32; ids on the device. */
    void (*get_rows)(mgpu_backend *be, mgpu_wref table, int64_t dim, const int32_t *ids, int64_t n,
                     float *out);

    /* Norms over the last dim; weight and bias optional; y may alias x. */
    void (*layernorm)(mgpu_backend *be, const float *x, float *y, int64_t rows, int64_t dim,
                      mgpu_wref weight, mgpu_wref bias, float eps);
    void (*rmsnorm)(mgpu_backend *be, const float *x, float *y, int64_t rows, int64_t dim,
                    mgpu_wref weight, float eps);
    /* x [channels][spatial] (one NCHW image), groups dividing channels;
     * per-channel weight and bias optional; y may alias x. */
    void (*group_norm)(mgpu_backend *be, const float *x, float *y, int64_t channels,
                       int64_t spatial, int64_t groups, mgpu_wref weight, mgpu_wref bias,
                       float eps);

    /* Elementwise, in place. */
    void (*unary)(mgpu_backend *be, mgpu_unary_op op, float *x, int64_t n);
    /* y = a + b, y = a * b; y may alias a or b. */
    void (*add)(mgpu_backend *be, float *y, const float *a, const float *b, int64_t n);
    void (*mul)(mgpu_backend *be, float *y, const float *a, const float *b, int64_t n);
    /* y = x * s; y may alias x. */
    void (*scale)(mgpu_backend *be, float *y, const float *x, float s, int64_t n);
    /* Softmax of each row, in place. */
    void (*softmax_rows)(mgpu_backend *be, float *x, int64_t rows, int64_t cols);

    /* y[r][i] = x[r][i] * (1 + scale[i]) + shift[i]; y may alias x. */
    void (*modulate)(mgpu_backend *be, float *y, const float *x, int64_t rows, int64_t dim,
                     const float *shift, const float *scale);
    /* y[r][i] += gate[i] * x[r][i]. */
    void (*gate_add)(mgpu_backend *be, float *y, const float *x, int64_t rows, int64_t dim,
                     const float *gate);
    /* Rotary embedding of x [heads][tokens][head_dim] in place, pairs
     * (2j, 2j+1) rotated by the angle whose cos and sin are row `token`,
     * column j of the tables [tokens][head_dim / 2]. */
    void (*rope)(mgpu_backend *be, float *x, int64_t heads, int64_t tokens, int64_t head_dim,
                 const float *cos_t, const float *sin_t);
    /* out = softmax(q k^T * scale + bias) v per head without the q_len x
     * kv_len matrix: q [heads][q_len][d], k and v [heads][kv_len][d], out
     * [heads][q_len][d]. bias [heads][q_len][kv_len] is optional (NULL);
     * causal hides key j > query i. Without bias or mask, and with q_len and
     * kv_len both at least MGPU_ATTENTION_BF16_MIN or head_dim above 256 (the
     * VAE's 512), a backend may round q, k, v and the probabilities to bf16
     * (tensor cores; f32 accumulation). */
    void (*attention)(mgpu_backend *be, const float *q, const float *k, const float *v, float *out,
                      int64_t heads, int64_t q_len, int64_t kv_len, int64_t head_dim, float scale,
                      const float *bias, bool causal);

    /* Layout. rows x cols floats from src (row stride src_stride) to dst
     * (row stride dst_stride): slices, concatenations, column splits. */
    void (*copy_2d)(mgpu_backend *be, float *dst, int64_t dst_stride, const float *src,
                    int64_t src_stride, int64_t rows, int64_t cols);
    /* dst[r][c] += k * src[r][c] over rows x cols with row strides: the
     * product is rounded, then the sum (no fused multiply-add). A LoRA's
     * update of its slice of a linear layer's output. No aliasing. */
    void (*axpy_2d)(mgpu_backend *be, float *dst, int64_t dst_stride, const float *src,
                    int64_t src_stride, int64_t rows, int64_t cols, float k);
    /* y[c][r] = x[r][c]; y does not alias x. */
    void (*transpose)(mgpu_backend *be, const float *x, int64_t rows, int64_t cols, float *y);
    /* [tokens][heads * d] <-> [heads][tokens][d]. */
    void (*tokens_to_heads)(mgpu_backend *be, const float *x, int64_t tokens, int64_t heads,
                            int64_t head_dim, float *out);
    void (*heads_to_tokens)(mgpu_backend *be, const float *x, int64_t tokens, int64_t heads,
                            int64_t head_dim, float *out);

    /* Images, one NCHW image at a time. x [c_in][h][w] -> y [c_out][oh][ow]. */
    void (*conv2d)(mgpu_backend *be, const float *x, const mgpu_conv2d_shape *shape,
                   mgpu_wref weight, mgpu_wref bias, float *y);
    /* [channels][h][w] -> [channels][2h][2w], nearest neighbour. */
    void (*upsample2x)(mgpu_backend *be, const float *x, int64_t channels, int64_t h, int64_t w,
                       float *y);

    /* GEMM precision (mgpu_backend_set_gemm, mgpu_backend_gemm_name). */
    mgpu_status (*set_gemm)(mgpu_backend *be, int precision, mgpu_error *err);
    const char *(*gemm_name)(const mgpu_backend *be);
} mgpu_backend_ops;

struct mgpu_backend {
    const mgpu_backend_ops *ops;
    const char *name; /* "cpu", "cuda:0" */
    /* Device memory is host memory (the CPU backend): the executor reads
     * disk straight into staging and skips bounce buffers. */
    bool host_visible;
    /* The first error an op met, kept until synchronize reports it. */
    mgpu_error error;
    void *impl;
};

/* The CPU backend: OpenBLAS for GEMM, mgpu's own thread pool for
 * everything else (threads <= 0: one per online processor). */
mgpu_status mgpu_backend_cpu_create(int threads, mgpu_backend **out, mgpu_error *err);
/* The same computation with host_visible false, so callers take the paths
 * a discrete GPU needs (uploads, bounce buffers); for tests. */
mgpu_status mgpu_backend_cpu_create_discrete(int threads, mgpu_backend **out, mgpu_error *err);
/* Bytes a CPU backend has copied of one kind since it was created (0 for
 * other backends): lets tests see which path streamed weights took. */
uint64_t mgpu_backend_cpu_copied_bytes(const mgpu_backend *be, mgpu_copy_kind kind);
/* The CPU backend's thread count. */
int mgpu_backend_cpu_threads(const mgpu_backend *be);

/* How the CPU backend's linear layers multiply: f32 (the default: exact
 * against the references), bf16 (x and W rounded to bf16, f32 accumulation;
 * about twice as fast where the CPU has AVX512-BF16 or AMX), or auto (bf16
 * where it is fast, else f32). bf16 applies to weights stored in 16 bits or
 * fewer: f32 weights (and LoRA factors) always multiply in f32. Asking for
 * bf16 where it is not available is an error. */
typedef enum mgpu_gemm_precision {
    MGPU_GEMM_F32,
    MGPU_GEMM_BF16,
    MGPU_GEMM_AUTO,
    /* On a GPU with fp8 tensor cores (compute capability 8.9 and up),
     * F8_E4M3 weights multiply as fp8 with the activations rounded to e4m3
     * under one scale per call (ComfyUI's fp8_e4m3fn_fast): faster, and
     * less precise. Elsewhere (other GPUs, the CPU) the same as auto. */
    MGPU_GEMM_FP8,
} mgpu_gemm_precision;
/* Sets how a backend's linear layers multiply. On a GPU: auto and bf16
 * are bf16 tensor cores (f32 weights in f32), f32 is f32 throughout. */
mgpu_status mgpu_backend_set_gemm(mgpu_backend *be, mgpu_gemm_precision precision,
                                  mgpu_error *err);
/* What the linear layers use now: "f32", "bf16", "fp8+bf16" ... */
const char *mgpu_backend_gemm_name(const mgpu_backend *be);

/* The backend that computes for device `d`: a real CUDA GPU through the
 * plugin; the CPU, and simulated devices (whose links are only paced), on
 * the CPU backend with `threads` and `gemm`. */
struct mgpu_device;
mgpu_status mgpu_backend_for_device(const struct mgpu_device *d, int threads,
                                    mgpu_gemm_precision gemm, mgpu_backend **out,
                                    mgpu_error *err);
bool mgpu_backend_is_cpu(const mgpu_backend *be);

/* Records an op failure as the backend's error unless one is kept already
 * (for backends' use). */
void mgpu_backend_fail(mgpu_backend *be, mgpu_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool mgpu_backend_failed(const mgpu_backend *be);

static inline void mgpu_backend_free(mgpu_backend *be)
{
    if (be)
        be->ops->destroy(be);
}

/* Host -> device on the compute queue, ordered after the ops before it;
 * returns when `src` may be reused. */
mgpu_status mgpu_backend_upload(mgpu_backend *be, void *dst, const void *src, size_t bytes,
                                mgpu_error *err);
/* Waits for the compute queue, then device -> host; reports the first op
 * error, if any. */
mgpu_status mgpu_backend_download(mgpu_backend *be, void *dst, const void *src, size_t bytes,
                                  mgpu_error *err);
/* alloc of n floats. */
mgpu_status mgpu_backend_alloc_f32(mgpu_backend *be, int64_t n, float **out, mgpu_error *err);

#endif
