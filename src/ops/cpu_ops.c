/* See cpu_ops.h. The elementwise and per-row kernels FLUX-style diffusion
 * transformers need (norms, activations, softmax, modulation, RoPE) and the
 * layout moves between them. mgpu_cpu_attention lives in its own file.
 *
 * Determinism: every kernel hands the thread pool a range of rows or of
 * elements, and what is computed for one row or element never depends on
 * which chunk it falls in, so the output is bit-identical for any thread
 * count. Reductions (norm statistics, softmax sums) stay inside one row. */
#include <math.h>
#include <string.h>

#include "ops/cpu_ops.h"

/* Work per chunk handed to the pool: large enough that waking a thread is
 * worth it, so small inputs run on the calling thread alone. */
enum {
    ELEM_GRAIN = 1 << 15, /* elements per chunk for elementwise kernels */
    ROW_WORK = 1 << 14,   /* elements per chunk for row kernels */
};

static int64_t row_grain(int64_t dim)
{
    return dim >= ROW_WORK ? 1 : (ROW_WORK + dim - 1) / dim;
}

/* ------------------------------------------------------------ norms */

typedef struct norm_job {
    const float *x;
    float *y;
    int64_t dim;
    const float *weight;
    const float *bias;
    float eps;
} norm_job;

static void layernorm_rows(void *ctx, int64_t begin, int64_t end)
{
    const norm_job *j = ctx;
    const int64_t dim = j->dim;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * dim;
        float *y = j->y + r * dim;
        /* Two passes in double: the mean first, then the squared deviations
         * from it, so a large mean does not cancel away the variance. */
        double sum = 0.0;
        for (int64_t i = 0; i < dim; i++)
            sum += x[i];
        const double mean = sum / (double)dim;
        double sq = 0.0;
        for (int64_t i = 0; i < dim; i++) {
            double d = (double)x[i] - mean;
            sq += d * d;
        }
        /* Biased variance and eps inside the sqrt, as torch.nn.LayerNorm. */
        const double rstd = 1.0 / sqrt(sq / (double)dim + (double)j->eps);
        /* The subtraction stays in double too: x - mean in float would lose
         * the low bits whenever |mean| >> std. y may alias x: element i is
         * read before it is written. */
        for (int64_t i = 0; i < dim; i++) {
            float v = (float)(((double)x[i] - mean) * rstd);
            if (j->weight)
                v *= j->weight[i];
            if (j->bias)
                v += j->bias[i];
            y[i] = v;
        }
    }
}

void mgpu_cpu_layernorm(const float *x, float *y, int64_t rows, int64_t dim, const float *weight,
                        const float *bias, float eps, mgpu_threadpool *pool)
{
    if (rows <= 0 || dim <= 0)
        return;
    norm_job j = {x, y, dim, weight, bias, eps};
    mgpu_threadpool_run(pool, layernorm_rows, &j, rows, row_grain(dim));
}

static void rmsnorm_rows(void *ctx, int64_t begin, int64_t end)
{
    const norm_job *j = ctx;
    const int64_t dim = j->dim;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * dim;
        float *y = j->y + r * dim;
        double sq = 0.0;
        for (int64_t i = 0; i < dim; i++)
            sq += (double)x[i] * (double)x[i];
        /* FLUX's RMSNorm: (x * rsqrt(mean(x^2) + eps)) * scale, the products
         * in float32; only the statistic is taken in double here. */
        const float rrms = (float)(1.0 / sqrt(sq / (double)dim + (double)j->eps));
        for (int64_t i = 0; i < dim; i++) {
            float v = x[i] * rrms;
            if (j->weight)
                v *= j->weight[i];
            y[i] = v;
        }
    }
}

void mgpu_cpu_rmsnorm(const float *x, float *y, int64_t rows, int64_t dim, const float *weight,
                      float eps, mgpu_threadpool *pool)
{
    if (rows <= 0 || dim <= 0)
        return;
    norm_job j = {x, y, dim, weight, NULL, eps};
    mgpu_threadpool_run(pool, rmsnorm_rows, &j, rows, row_grain(dim));
}

/* ------------------------------------------------------------ activations */

static void gelu_tanh_range(void *ctx, int64_t begin, int64_t end)
{
    float *x = ctx;
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    for (int64_t i = begin; i < end; i++) {
        float v = x[i];
        float u = k * (v + 0.044715f * v * v * v);
        /* 0.5 v (1 + tanh(u)) == v / (1 + exp(-2u)): the same function, but
         * without the cancellation in 1 + tanh(u) for negative v, whose
         * outputs would otherwise keep almost no correct bits. */
        x[i] = v / (1.0f + expf(-2.0f * u));
    }
}

void mgpu_cpu_gelu_tanh(float *x, int64_t n, mgpu_threadpool *pool)
{
    mgpu_threadpool_run(pool, gelu_tanh_range, x, n, ELEM_GRAIN);
}

static void silu_range(void *ctx, int64_t begin, int64_t end)
{
    float *x = ctx;
    for (int64_t i = begin; i < end; i++)
        x[i] = x[i] / (1.0f + expf(-x[i])); /* x * sigmoid(x) */
}

void mgpu_cpu_silu(float *x, int64_t n, mgpu_threadpool *pool)
{
    mgpu_threadpool_run(pool, silu_range, x, n, ELEM_GRAIN);
}

static void gelu_erf_range(void *ctx, int64_t begin, int64_t end)
{
    float *x = ctx;
    for (int64_t i = begin; i < end; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void mgpu_cpu_gelu_erf(float *x, int64_t n, mgpu_threadpool *pool)
{
    mgpu_threadpool_run(pool, gelu_erf_range, x, n, ELEM_GRAIN);
}

static void gelu_quick_range(void *ctx, int64_t begin, int64_t end)
{
    float *x = ctx;
    for (int64_t i = begin; i < end; i++)
        x[i] = x[i] / (1.0f + expf(-1.702f * x[i])); /* x * sigmoid(1.702 x) */
}

void mgpu_cpu_gelu_quick(float *x, int64_t n, mgpu_threadpool *pool)
{
    mgpu_threadpool_run(pool, gelu_quick_range, x, n, ELEM_GRAIN);
}

static void relu_range(void *ctx, int64_t begin, int64_t end)
{
    float *x = ctx;
    for (int64_t i = begin; i < end; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void mgpu_cpu_relu(float *x, int64_t n, mgpu_threadpool *pool)
{
    mgpu_threadpool_run(pool, relu_range, x, n, ELEM_GRAIN);
}

/* ------------------------------------------------------------ softmax */

typedef struct softmax_job {
    float *x;
    int64_t cols;
} softmax_job;

static void softmax_rows(void *ctx, int64_t begin, int64_t end)
{
    const softmax_job *j = ctx;
    for (int64_t r = begin; r < end; r++) {
        float *x = j->x + r * j->cols;
        /* Subtracting the row max keeps expf in range for any input scale;
         * -inf entries (masked) come out as exactly 0. A row that is all
         * -inf or holds a NaN gives NaNs, as torch does. */
        float m = x[0];
        for (int64_t i = 1; i < j->cols; i++)
            m = x[i] > m ? x[i] : m;
        double sum = 0.0;
        for (int64_t i = 0; i < j->cols; i++) {
            float e = expf(x[i] - m);
            x[i] = e;
            sum += e;
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t i = 0; i < j->cols; i++)
            x[i] *= inv;
    }
}

void mgpu_cpu_softmax_rows(float *x, int64_t rows, int64_t cols, mgpu_threadpool *pool)
{
    if (rows <= 0 || cols <= 0)
        return;
    softmax_job j = {x, cols};
    mgpu_threadpool_run(pool, softmax_rows, &j, rows, row_grain(cols));
}

/* ------------------------------------------------------------ elementwise */

typedef struct binary_job {
    float *y;
    const float *a;
    const float *b;
} binary_job;

/* y may alias a or b: each element is read before the same index is written. */
static void add_range(void *ctx, int64_t begin, int64_t end)
{
    const binary_job *j = ctx;
    for (int64_t i = begin; i < end; i++)
        j->y[i] = j->a[i] + j->b[i];
}

static void mul_range(void *ctx, int64_t begin, int64_t end)
{
    const binary_job *j = ctx;
    for (int64_t i = begin; i < end; i++)
        j->y[i] = j->a[i] * j->b[i];
}

typedef struct scale_job {
    float *y;
    const float *x;
    float s;
} scale_job;

static void scale_range(void *ctx, int64_t begin, int64_t end)
{
    const scale_job *j = ctx;
    for (int64_t i = begin; i < end; i++)
        j->y[i] = j->x[i] * j->s;
}

void mgpu_cpu_scale(float *y, const float *x, float s, int64_t n, mgpu_threadpool *pool)
{
    scale_job j = {y, x, s};
    mgpu_threadpool_run(pool, scale_range, &j, n, ELEM_GRAIN);
}

void mgpu_cpu_add(float *y, const float *a, const float *b, int64_t n, mgpu_threadpool *pool)
{
    binary_job j = {y, a, b};
    mgpu_threadpool_run(pool, add_range, &j, n, ELEM_GRAIN);
}

void mgpu_cpu_mul(float *y, const float *a, const float *b, int64_t n, mgpu_threadpool *pool)
{
    binary_job j = {y, a, b};
    mgpu_threadpool_run(pool, mul_range, &j, n, ELEM_GRAIN);
}

/* ------------------------------------------------------------ modulation */

typedef struct mod_job {
    float *y;
    const float *x;
    int64_t dim;
    const float *shift; /* or gate, for gate_add */
    const float *scale;
} mod_job;

static void modulate_rows(void *ctx, int64_t begin, int64_t end)
{
    const mod_job *j = ctx;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * j->dim;
        float *y = j->y + r * j->dim;
        /* FLUX: (1 + scale) * norm(x) + shift, in that order. */
        for (int64_t i = 0; i < j->dim; i++)
            y[i] = x[i] * (1.0f + j->scale[i]) + j->shift[i];
    }
}

void mgpu_cpu_modulate(float *y, const float *x, int64_t rows, int64_t dim, const float *shift,
                       const float *scale, mgpu_threadpool *pool)
{
    if (rows <= 0 || dim <= 0)
        return;
    mod_job j = {y, x, dim, shift, scale};
    mgpu_threadpool_run(pool, modulate_rows, &j, rows, row_grain(dim));
}

static void gate_add_rows(void *ctx, int64_t begin, int64_t end)
{
    const mod_job *j = ctx;
    const float *gate = j->shift;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * j->dim;
        float *y = j->y + r * j->dim;
        for (int64_t i = 0; i < j->dim; i++)
            y[i] += gate[i] * x[i];
    }
}

void mgpu_cpu_gate_add(float *y, const float *x, int64_t rows, int64_t dim, const float *gate,
                       mgpu_threadpool *pool)
{
    if (rows <= 0 || dim <= 0)
        return;
    mod_job j = {y, x, dim, gate, NULL};
    mgpu_threadpool_run(pool, gate_add_rows, &j, rows, row_grain(dim));
}

/* ------------------------------------------------------------ RoPE
 *
 * FLUX's convention (black-forest-labs/flux, as copied into ComfyUI's
 * comfy/ldm/flux/math.py `rope`, `apply_rope` and layers.py `EmbedND`):
 *
 *  - rope(pos, dim, theta): scale = linspace(0, (dim-2)/dim, dim/2) in
 *    float64, i.e. 2j/dim for pair j; omega_j = 1 / theta^scale_j (float64);
 *    angle = pos * omega_j (pos is float32, promoted to float64 by the
 *    product); the table entry is the 2x2 matrix [[cos, -sin], [sin, cos]]
 *    of that angle, computed in float64 and stored as float32.
 *  - EmbedND concatenates rope(ids[..., a], axes_dim[a], theta) for
 *    a = 0, 1, ... along the pair axis: axis 0's pairs come first. FLUX.1
 *    uses theta = 10000, axes_dim = {16, 56, 56} (sum 128 = head_dim).
 *  - apply_rope views the head vector as pairs of ADJACENT elements
 *    (x[2j], x[2j+1]) -- interleaved, not the split-halves layout of
 *    GPT-NeoX/Llama -- and computes out = M[:, 0] * x[2j] + M[:, 1] * x[2j+1]
 *    in float32: out[2j] = cos*x[2j] - sin*x[2j+1],
 *    out[2j+1] = sin*x[2j] + cos*x[2j+1]. The same table row serves every
 *    head (pe has a broadcast head axis).
 *
 * So this file stores only cos and sin per (token, pair) rather than the
 * 2x2 matrix. */

void mgpu_cpu_rope_table(const float *positions, int64_t tokens, int n_axes, const int *axes_dim,
                         float theta, float *cos_out, float *sin_out)
{
    int64_t pairs = 0;
    for (int a = 0; a < n_axes; a++)
        pairs += axes_dim[a] / 2;
    int64_t offset = 0;
    for (int a = 0; a < n_axes; a++) {
        const int dim = axes_dim[a];
        for (int p = 0; p < dim / 2; p++) {
            /* One pow per frequency, then a sweep down the tokens. */
            const double omega = 1.0 / pow((double)theta, (double)(2 * p) / (double)dim);
            for (int64_t t = 0; t < tokens; t++) {
                const double angle = (double)positions[t * n_axes + a] * omega;
                cos_out[t * pairs + offset + p] = (float)cos(angle);
                sin_out[t * pairs + offset + p] = (float)sin(angle);
            }
        }
        offset += dim / 2;
    }
}

typedef struct rope_job {
    float *x;
    int64_t tokens;
    int64_t head_dim;
    const float *cos_t;
    const float *sin_t;
} rope_job;

static void rope_rows(void *ctx, int64_t begin, int64_t end)
{
    const rope_job *j = ctx;
    const int64_t pairs = j->head_dim / 2;
    for (int64_t r = begin; r < end; r++) { /* r = head * tokens + token */
        float *x = j->x + r * j->head_dim;
        const int64_t t = r % j->tokens;
        const float *c = j->cos_t + t * pairs;
        const float *s = j->sin_t + t * pairs;
        for (int64_t p = 0; p < pairs; p++) {
            const float a = x[2 * p], b = x[2 * p + 1];
            x[2 * p] = c[p] * a - s[p] * b;
            x[2 * p + 1] = s[p] * a + c[p] * b;
        }
    }
}

void mgpu_cpu_rope_apply(float *x, int64_t heads, int64_t tokens, int64_t head_dim,
                         const float *cos_t, const float *sin_t, mgpu_threadpool *pool)
{
    if (heads <= 0 || tokens <= 0 || head_dim < 2)
        return;
    rope_job j = {x, tokens, head_dim, cos_t, sin_t};
    mgpu_threadpool_run(pool, rope_rows, &j, heads * tokens, row_grain(head_dim));
}

/* ------------------------------------------------------------ layout moves */

void mgpu_cpu_copy_2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                      int64_t rows, int64_t cols)
{
    if (cols <= 0)
        return;
    const size_t bytes = (size_t)cols * sizeof(float);
    for (int64_t r = 0; r < rows; r++)
        memmove(dst + r * dst_stride, src + r * src_stride, bytes);
}

typedef struct axpy_job {
    float *dst;
    const float *src;
    int64_t dst_stride, src_stride, cols;
    float k;
} axpy_job;

static void axpy_rows(void *ctx, int64_t begin, int64_t end)
{
    const axpy_job *j = ctx;
    for (int64_t r = begin; r < end; r++) {
        float *d = j->dst + r * j->dst_stride;
        const float *x = j->src + r * j->src_stride;
        for (int64_t c = 0; c < j->cols; c++) {
            const float v = j->k * x[c]; /* two statements: never contracted to an FMA */
            d[c] += v;
        }
    }
}

void mgpu_cpu_axpy_2d(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                      int64_t rows, int64_t cols, float k, mgpu_threadpool *pool)
{
    if (rows <= 0 || cols <= 0)
        return;
    axpy_job j = {dst, src, dst_stride, src_stride, cols, k};
    mgpu_threadpool_run(pool, axpy_rows, &j, rows, row_grain(cols));
}

/* Cache blocks of 32 x 32: both sides touch whole cache lines. */
void mgpu_cpu_transpose(const float *x, int64_t rows, int64_t cols, float *y)
{
    enum { TB = 32 };
    for (int64_t r0 = 0; r0 < rows; r0 += TB)
        for (int64_t c0 = 0; c0 < cols; c0 += TB) {
            int64_t r1 = r0 + TB < rows ? r0 + TB : rows, c1 = c0 + TB < cols ? c0 + TB : cols;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    y[c * rows + r] = x[r * cols + c];
        }
}

void mgpu_cpu_tokens_to_heads(const float *x, int64_t tokens, int64_t heads, int64_t head_dim,
                              float *out)
{
    const size_t bytes = (size_t)head_dim * sizeof(float);
    for (int64_t t = 0; t < tokens; t++)
        for (int64_t h = 0; h < heads; h++)
            memcpy(out + (h * tokens + t) * head_dim, x + (t * heads + h) * head_dim, bytes);
}

void mgpu_cpu_heads_to_tokens(const float *x, int64_t tokens, int64_t heads, int64_t head_dim,
                              float *out)
{
    const size_t bytes = (size_t)head_dim * sizeof(float);
    for (int64_t t = 0; t < tokens; t++)
        for (int64_t h = 0; h < heads; h++)
            memcpy(out + (t * heads + h) * head_dim, x + (h * tokens + t) * head_dim, bytes);
}
