/* Faster CPU GEMM paths for the linear layer, measured side by side (not
 * integrated): y[M][N] = x[M][K] * W^T with W stored [N][K], FLUX's shapes.
 *
 *   OpenBLAS cblas_sgemm f32 (the current path, weights decoded to f32)
 *   oneDNN dnnl_sgemm f32
 *   oneDNN matmul bf16 x bf16 -> f32, weights reordered once into the layout
 *     oneDNN picks (format_tag_any), i.e. a per-weight cache
 *   the same with the weight reorder inside the timed loop (streamed weights)
 *   oneDNN matmul bf16 with the weights in their plain [N][K] layout, whole
 *     and in mgpu_cpu_linear's tiles (2^20 / K rows per call; the OpenBLAS
 *     path is timed that way too)
 *   oneDNN dnnl_gemm_s8s8s32 / dnnl_gemm_u8s8s32 (activations quantized per
 *     row, weights s8 per output channel, s32 accumulate, dequantized here)
 *   oneDNN matmul s8 x s8 -> f32, weight scales fused; activations scaled
 *     per row (that scale applied here) or per tensor (fully fused)
 *
 * Every non-f32 path times its activation conversion (f32 -> bf16 / int8)
 * and, for the BLAS-style int8 calls, the s32 -> f32 dequantization too, so
 * each row is the cost of the whole linear given f32 x and f32 y. Weight
 * conversion (f32 -> bf16 / s8 and per-channel scales) is outside the timing:
 * it belongs to model load, like the checkpoint's own dtype.
 *
 * Accuracy: each path's output against an f64 reference (cblas_dgemm on the
 * same f32 x and W) over every 16th row; reported as max |err| and RMS err,
 * both divided by the RMS of the reference output. A second accuracy column
 * repeats this with activations that have outlier channels (0.5% of the K
 * channels scaled by 25), which is what per-row int8 quantization suffers
 * from.
 *
 * Usage: bench_gemm_paths [M] (default 512). Threads: OpenBLAS and oneDNN
 * (OpenMP) each use their defaults (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS). */
#include <cblas.h>
#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPS 5
#define REF_STRIDE 16

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Lets the other library's idle workers stop spinning (OpenBLAS and
 * libgomp both busy-wait for a while after a call) before timing a path. */
static void settle(void)
{
    struct timespec ts = {0, 250 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "bench_gemm_paths: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static int dnnl_ok(dnnl_status_t st, const char *what)
{
    if (st == dnnl_success)
        return 1;
    fprintf(stderr, "bench_gemm_paths: %s failed (dnnl status %d)\n", what, (int)st);
    return 0;
}

#define DNNL_MUST(call)                                                                            \
    do {                                                                                           \
        if (!dnnl_ok((call), #call))                                                               \
            exit(1);                                                                               \
    } while (0)

/* ---- data ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double uniform01(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((double)(rng_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static float gaussian(void)
{
    double u = uniform01(), v = uniform01();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; inputs are finite */
    return (uint16_t)(u >> 16);
}

/* Clamp, then round to nearest even with the 1.5 * 2^23 trick (exact for
 * |v| < 2^22); unlike lroundf, no libm call, so the loops vectorize. */
static int32_t round_clamp(float v, float lo, float hi)
{
    v = v < lo ? lo : v > hi ? hi : v;
    return (int32_t)((v + 12582912.0f) - 12582912.0f);
}

static float abs_max(const float *v, int64_t n)
{
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        amax = a > amax ? a : amax;
    }
    return amax;
}

/* ---- per-shape state ---- */

typedef struct {
    int64_t M, N, K;
    const float *x; /* [M][K], the current activations */
    const float *w; /* [N][K] f32 */
    float *y;       /* [M][N] */
    dnnl_engine_t eng;
    dnnl_stream_t strm;

    /* bf16 */
    uint16_t *x_bf16;    /* [M][K] */
    uint16_t *w_bf16;    /* [N][K] */
    dnnl_memory_t m_xb;  /* src {M,K} bf16 ab over x_bf16 */
    dnnl_memory_t m_wb;  /* weights {K,N} bf16 ba over w_bf16 (the user layout) */
    dnnl_memory_t m_wbp; /* weights in the matmul's chosen layout */
    dnnl_memory_t m_y;   /* dst {M,N} f32 ab over y */
    dnnl_primitive_t mm_bf16, reo_bf16, mm_bf16_plain;
    /* tiled like mgpu_cpu_linear: tile_rows output rows of W at a time;
     * [0] full tiles, [1] the last, shorter one (if any) */
    int64_t tile_rows;
    dnnl_primitive_t mm_tile[2];
    dnnl_memory_t m_wtile[2], m_ytile[2];

    /* int8 */
    int8_t *x_s8;   /* [M][K] symmetric per row */
    uint8_t *x_u8;  /* [M][K] asymmetric per row */
    float *sa;      /* [M] activation scales */
    int32_t *za;    /* [M] activation zero points (u8 path) */
    int8_t *w_s8;   /* [N][K] symmetric per output channel */
    float *sb;      /* [N] weight scales */
    int32_t *sum_w; /* [N] sum_k w_s8[n][k] (zero-point compensation) */
    int32_t *acc;   /* [M][N] s32 accumulators */
    float *sbt;     /* [N] sb[n] * the per-tensor activation scale */
    dnnl_memory_t m_xs8, m_ws8, m_ws8p, m_sb, m_sbt;
    dnnl_primitive_t mm_s8, reo_s8;
    int mm_s8_fused; /* 1: weight scales fused (dst f32); 0: dst s32 */
    dnnl_memory_t m_acc;
} shape_ctx;

static void md2(dnnl_memory_desc_t *md, int64_t d0, int64_t d1, dnnl_data_type_t dt,
                dnnl_format_tag_t tag)
{
    dnnl_dims_t dims = {d0, d1};
    DNNL_MUST(dnnl_memory_desc_init_by_tag(md, 2, dims, dt, tag));
}

static const char *impl_name(const_dnnl_primitive_t prim)
{
    const_dnnl_primitive_desc_t pd = NULL;
    const char *name = "?";
    if (dnnl_primitive_get_primitive_desc(prim, &pd) != dnnl_success ||
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) != dnnl_success)
        return "?";
    return name;
}

/* ---- activation conversions (timed with their path) ---- */

static void convert_x_bf16(shape_ctx *c)
{
    for (int64_t i = 0; i < c->M * c->K; i++)
        c->x_bf16[i] = f32_to_bf16(c->x[i]);
}

static void quantize_x_s8(shape_ctx *c)
{
    for (int64_t m = 0; m < c->M; m++) {
        const float *r = c->x + m * c->K;
        float amax = abs_max(r, c->K);
        float s = amax > 0.0f ? amax / 127.0f : 1.0f, inv = 1.0f / s;
        c->sa[m] = s;
        int8_t *q = c->x_s8 + m * c->K;
        for (int64_t k = 0; k < c->K; k++)
            q[k] = (int8_t)round_clamp(r[k] * inv, -127.0f, 127.0f);
    }
}

static void quantize_x_u8(shape_ctx *c)
{
    for (int64_t m = 0; m < c->M; m++) {
        const float *r = c->x + m * c->K;
        float lo = 0.0f, hi = 0.0f; /* range includes 0 so 0 is exact */
        for (int64_t k = 0; k < c->K; k++) {
            lo = r[k] < lo ? r[k] : lo;
            hi = r[k] > hi ? r[k] : hi;
        }
        float s = hi > lo ? (hi - lo) / 255.0f : 1.0f, inv = 1.0f / s;
        int32_t z = round_clamp(-lo * inv, 0.0f, 255.0f);
        c->sa[m] = s;
        c->za[m] = z;
        uint8_t *q = c->x_u8 + m * c->K;
        for (int64_t k = 0; k < c->K; k++)
            q[k] = (uint8_t)round_clamp(r[k] * inv + (float)z, 0.0f, 255.0f);
    }
}

/* y = sa[m] * sb[n] * (acc - za[m] * sum_w[n]); za == NULL: symmetric. */
static void dequantize(shape_ctx *c, const int32_t *za)
{
    for (int64_t m = 0; m < c->M; m++) {
        const int32_t *a = c->acc + m * c->N;
        float *yr = c->y + m * c->N, s = c->sa[m];
        if (za) {
            int32_t z = za[m];
            for (int64_t n = 0; n < c->N; n++)
                yr[n] = s * c->sb[n] * (float)(a[n] - z * c->sum_w[n]);
        } else {
            for (int64_t n = 0; n < c->N; n++)
                yr[n] = s * c->sb[n] * (float)a[n];
        }
    }
}

/* ---- the paths ---- */

static void run_openblas(shape_ctx *c)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->M, (int)c->N, (int)c->K, 1.0f,
                c->x, (int)c->K, c->w, (int)c->K, 0.0f, c->y, (int)c->N);
}

/* mgpu_cpu_linear's tiling (src/ops/cpu_linear.c): 2^20 / K rows, a
 * multiple of 16, at least 16; the current path runs one sgemm per tile. */
static int64_t tile_rows_for(int64_t K)
{
    int64_t t = (1 << 20) / K;
    t = (t / 16) * 16;
    return t < 16 ? 16 : t;
}

static void run_openblas_tiled(shape_ctx *c)
{
    for (int64_t n0 = 0; n0 < c->N; n0 += c->tile_rows) {
        int64_t nt = c->N - n0 < c->tile_rows ? c->N - n0 : c->tile_rows;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->M, (int)nt, (int)c->K, 1.0f,
                    c->x, (int)c->K, c->w + n0 * c->K, (int)c->K, 0.0f, c->y + n0, (int)c->N);
    }
}

static void run_dnnl_sgemm(shape_ctx *c)
{
    DNNL_MUST(dnnl_sgemm('N', 'T', c->M, c->N, c->K, 1.0f, c->x, c->K, c->w, c->K, 0.0f, c->y,
                         c->N));
}

static void exec2(dnnl_primitive_t p, dnnl_stream_t s, int n, const dnnl_exec_arg_t *args)
{
    DNNL_MUST(dnnl_primitive_execute(p, s, n, args));
    DNNL_MUST(dnnl_stream_wait(s));
}

static void run_bf16_packed(shape_ctx *c)
{
    convert_x_bf16(c);
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, c->m_xb}, {DNNL_ARG_WEIGHTS, c->m_wbp},
                           {DNNL_ARG_DST, c->m_y}};
    exec2(c->mm_bf16, c->strm, 3, a);
}

/* For streamed weights (each tile arrives from disk/mmap in the checkpoint's
 * plain [N][K] layout and is used once) the reorder into oneDNN's blocked
 * layout is paid on every use: this row is that cost. */
static void run_bf16_reorder(shape_ctx *c)
{
    dnnl_exec_arg_t r[] = {{DNNL_ARG_FROM, c->m_wb}, {DNNL_ARG_TO, c->m_wbp}};
    exec2(c->reo_bf16, c->strm, 2, r);
    run_bf16_packed(c);
}

static void run_bf16_plain(shape_ctx *c)
{
    convert_x_bf16(c);
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, c->m_xb}, {DNNL_ARG_WEIGHTS, c->m_wb},
                           {DNNL_ARG_DST, c->m_y}};
    exec2(c->mm_bf16_plain, c->strm, 3, a);
}

/* What a streamed integration would do: each tile of W rows, already bf16
 * (checkpoint dtype) or decoded to bf16, used in place, no reorder. */
static void run_bf16_plain_tiled(shape_ctx *c)
{
    convert_x_bf16(c);
    for (int64_t n0 = 0; n0 < c->N; n0 += c->tile_rows) {
        int t = c->N - n0 < c->tile_rows ? 1 : 0;
        DNNL_MUST(dnnl_memory_set_data_handle(c->m_wtile[t], c->w_bf16 + n0 * c->K));
        DNNL_MUST(dnnl_memory_set_data_handle(c->m_ytile[t], c->y + n0));
        dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, c->m_xb}, {DNNL_ARG_WEIGHTS, c->m_wtile[t]},
                               {DNNL_ARG_DST, c->m_ytile[t]}};
        DNNL_MUST(dnnl_primitive_execute(c->mm_tile[t], c->strm, 3, a));
    }
    DNNL_MUST(dnnl_stream_wait(c->strm));
}

static void run_gemm_s8s8(shape_ctx *c)
{
    const int32_t co = 0;
    quantize_x_s8(c);
    DNNL_MUST(dnnl_gemm_s8s8s32('N', 'T', 'F', c->M, c->N, c->K, 1.0f, c->x_s8, c->K, 0, c->w_s8,
                                c->K, 0, 0.0f, c->acc, c->N, &co));
    dequantize(c, NULL);
}

static void run_gemm_u8s8(shape_ctx *c)
{
    const int32_t co = 0;
    quantize_x_u8(c);
    DNNL_MUST(dnnl_gemm_u8s8s32('N', 'T', 'F', c->M, c->N, c->K, 1.0f, c->x_u8, c->K, 0, c->w_s8,
                                c->K, 0, 0.0f, c->acc, c->N, &co));
    dequantize(c, c->za);
}

static void row_scale(shape_ctx *c);

/* int8 matmul, activations quantized per row: the per-N weight scales are a
 * binary-mul post-op (runtime data, so one primitive serves every weight of
 * a shape); the per-row activation scale is applied here, because oneDNN 2.6
 * has no optimized kernel for a per-row (M x 1) binary post-op or for
 * runtime output scales (both fall back to ref_int8 / gemm:jit). */
static void run_s8_packed(shape_ctx *c)
{
    quantize_x_s8(c);
    if (!c->mm_s8_fused) {
        dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, c->m_xs8},
                               {DNNL_ARG_WEIGHTS, c->m_ws8p},
                               {DNNL_ARG_DST, c->m_acc}};
        exec2(c->mm_s8, c->strm, 3, a);
        dequantize(c, NULL);
        return;
    }
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, c->m_xs8},
                           {DNNL_ARG_WEIGHTS, c->m_ws8p},
                           {DNNL_ARG_DST, c->m_y},
                           {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, c->m_sb}};
    exec2(c->mm_s8, c->strm, 4, a);
    row_scale(c);
}

/* int8 matmul, one activation scale for the whole x: fully fused (the
 * post-op multiplies by sb[n] * sa), no pass over y here; less accurate. */
static void run_s8_tensor(shape_ctx *c)
{
    float amax = abs_max(c->x, c->M * c->K);
    float s = amax > 0.0f ? amax / 127.0f : 1.0f, inv = 1.0f / s;
    for (int64_t i = 0; i < c->M * c->K; i++)
        c->x_s8[i] = (int8_t)round_clamp(c->x[i] * inv, -127.0f, 127.0f);
    if (!c->mm_s8_fused) {
        for (int64_t m = 0; m < c->M; m++)
            c->sa[m] = s;
        dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, c->m_xs8},
                               {DNNL_ARG_WEIGHTS, c->m_ws8p},
                               {DNNL_ARG_DST, c->m_acc}};
        exec2(c->mm_s8, c->strm, 3, a);
        dequantize(c, NULL);
        return;
    }
    for (int64_t n = 0; n < c->N; n++)
        c->sbt[n] = c->sb[n] * s;
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, c->m_xs8},
                           {DNNL_ARG_WEIGHTS, c->m_ws8p},
                           {DNNL_ARG_DST, c->m_y},
                           {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, c->m_sbt}};
    exec2(c->mm_s8, c->strm, 4, a);
}

static void run_s8_reorder(shape_ctx *c)
{
    dnnl_exec_arg_t r[] = {{DNNL_ARG_FROM, c->m_ws8}, {DNNL_ARG_TO, c->m_ws8p}};
    exec2(c->reo_s8, c->strm, 2, r);
    run_s8_packed(c);
}

static void row_scale(shape_ctx *c)
{
    for (int64_t m = 0; m < c->M; m++) {
        float *yr = c->y + m * c->N, s = c->sa[m];
        for (int64_t n = 0; n < c->N; n++)
            yr[n] *= s;
    }
}

static void dequantize_sym(shape_ctx *c)
{
    dequantize(c, NULL);
}

/* ---- setup ---- */

static dnnl_primitive_t make_prim(const_dnnl_op_desc_t desc, const_dnnl_primitive_attr_t attr,
                                  dnnl_engine_t eng, dnnl_primitive_desc_t *pd_out)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t p;
    if (dnnl_primitive_desc_create(&pd, desc, attr, eng, NULL) != dnnl_success)
        return NULL;
    if (dnnl_primitive_create(&p, pd) != dnnl_success) {
        dnnl_primitive_desc_destroy(pd);
        return NULL;
    }
    *pd_out = pd;
    return p;
}

static dnnl_primitive_t make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                                     dnnl_engine_t eng)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t p;
    DNNL_MUST(dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, NULL));
    DNNL_MUST(dnnl_primitive_create(&p, pd));
    dnnl_primitive_desc_destroy(pd);
    return p;
}

static void setup_bf16(shape_ctx *c)
{
    int64_t M = c->M, N = c->N, K = c->K;
    c->x_bf16 = xmalloc((size_t)(M * K) * 2);
    c->w_bf16 = xmalloc((size_t)(N * K) * 2);
    for (int64_t i = 0; i < N * K; i++)
        c->w_bf16[i] = f32_to_bf16(c->w[i]);

    dnnl_memory_desc_t src, wany, wplain, dst;
    md2(&src, M, K, dnnl_bf16, dnnl_ab);
    md2(&wany, K, N, dnnl_bf16, dnnl_format_tag_any);
    md2(&wplain, K, N, dnnl_bf16, dnnl_ba); /* [N][K] row-major is {K,N} in ba */
    md2(&dst, M, N, dnnl_f32, dnnl_ab);
    DNNL_MUST(dnnl_memory_create(&c->m_xb, &src, c->eng, c->x_bf16));
    DNNL_MUST(dnnl_memory_create(&c->m_wb, &wplain, c->eng, c->w_bf16));
    DNNL_MUST(dnnl_memory_create(&c->m_y, &dst, c->eng, c->y));

    dnnl_matmul_desc_t d;
    dnnl_primitive_desc_t pd = NULL;
    DNNL_MUST(dnnl_matmul_desc_init(&d, &src, &wany, NULL, &dst));
    c->mm_bf16 = make_prim(&d, NULL, c->eng, &pd);
    if (!c->mm_bf16) {
        fprintf(stderr, "bench_gemm_paths: bf16 matmul unsupported\n");
        exit(1);
    }
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    DNNL_MUST(dnnl_memory_create(&c->m_wbp, wmd, c->eng, DNNL_MEMORY_ALLOCATE));
    c->reo_bf16 = make_reorder(&wplain, wmd, c->eng);
    dnnl_primitive_desc_destroy(pd);
    dnnl_exec_arg_t r[] = {{DNNL_ARG_FROM, c->m_wb}, {DNNL_ARG_TO, c->m_wbp}};
    exec2(c->reo_bf16, c->strm, 2, r); /* once: the cached-weights case */

    DNNL_MUST(dnnl_matmul_desc_init(&d, &src, &wplain, NULL, &dst));
    c->mm_bf16_plain = make_prim(&d, NULL, c->eng, &pd);
    if (c->mm_bf16_plain)
        dnnl_primitive_desc_destroy(pd);

    c->tile_rows = tile_rows_for(K);
    int64_t nts[2] = {c->tile_rows < N ? c->tile_rows : N, N % c->tile_rows};
    for (int t = 0; t < 2; t++) {
        if (nts[t] == 0 || (t == 1 && c->tile_rows >= N))
            continue;
        dnnl_memory_desc_t wt, yt;
        dnnl_dims_t ydims = {M, nts[t]}, ystrides = {N, 1};
        md2(&wt, K, nts[t], dnnl_bf16, dnnl_ba);
        DNNL_MUST(dnnl_memory_desc_init_by_strides(&yt, 2, ydims, dnnl_f32, ystrides));
        DNNL_MUST(dnnl_memory_create(&c->m_wtile[t], &wt, c->eng, c->w_bf16));
        DNNL_MUST(dnnl_memory_create(&c->m_ytile[t], &yt, c->eng, c->y));
        DNNL_MUST(dnnl_matmul_desc_init(&d, &src, &wt, NULL, &yt));
        c->mm_tile[t] = make_prim(&d, NULL, c->eng, &pd);
        if (!c->mm_tile[t]) {
            fprintf(stderr, "bench_gemm_paths: tiled bf16 matmul unsupported\n");
            exit(1);
        }
        dnnl_primitive_desc_destroy(pd);
    }
}

static void setup_int8(shape_ctx *c)
{
    int64_t M = c->M, N = c->N, K = c->K;
    c->x_s8 = xmalloc((size_t)(M * K));
    c->x_u8 = xmalloc((size_t)(M * K));
    c->sa = xmalloc((size_t)M * sizeof(float));
    c->za = xmalloc((size_t)M * sizeof(int32_t));
    c->w_s8 = xmalloc((size_t)(N * K));
    c->sb = xmalloc((size_t)N * sizeof(float));
    c->sbt = xmalloc((size_t)N * sizeof(float));
    c->sum_w = xmalloc((size_t)N * sizeof(int32_t));
    c->acc = xmalloc((size_t)(M * N) * sizeof(int32_t));
    for (int64_t n = 0; n < N; n++) {
        const float *r = c->w + n * K;
        float amax = abs_max(r, K);
        float s = amax > 0.0f ? amax / 127.0f : 1.0f, inv = 1.0f / s;
        int32_t sum = 0;
        for (int64_t k = 0; k < K; k++) {
            int32_t q = round_clamp(r[k] * inv, -127.0f, 127.0f);
            c->w_s8[n * K + k] = (int8_t)q;
            sum += q;
        }
        c->sb[n] = s;
        c->sum_w[n] = sum;
    }

    dnnl_memory_desc_t src, wany, wplain, dstf, dsts, msb;
    md2(&src, M, K, dnnl_s8, dnnl_ab);
    md2(&wany, K, N, dnnl_s8, dnnl_format_tag_any);
    md2(&wplain, K, N, dnnl_s8, dnnl_ba);
    md2(&dstf, M, N, dnnl_f32, dnnl_ab);
    md2(&dsts, M, N, dnnl_s32, dnnl_ab);
    md2(&msb, 1, N, dnnl_f32, dnnl_ab);
    DNNL_MUST(dnnl_memory_create(&c->m_xs8, &src, c->eng, c->x_s8));
    DNNL_MUST(dnnl_memory_create(&c->m_ws8, &wplain, c->eng, c->w_s8));
    DNNL_MUST(dnnl_memory_create(&c->m_sb, &msb, c->eng, c->sb));
    DNNL_MUST(dnnl_memory_create(&c->m_sbt, &msb, c->eng, c->sbt));
    DNNL_MUST(dnnl_memory_create(&c->m_acc, &dsts, c->eng, c->acc));

    /* Weight scales fused as a binary-mul post-op over a {1,N} tensor; if
     * that only has oneDNN's slow reference kernel, dst s32 instead. */
    dnnl_matmul_desc_t d;
    dnnl_primitive_desc_t pd = NULL;
    for (c->mm_s8_fused = 1; c->mm_s8_fused >= 0; c->mm_s8_fused--) {
        dnnl_primitive_attr_t attr;
        DNNL_MUST(dnnl_primitive_attr_create(&attr));
        if (c->mm_s8_fused) {
            dnnl_post_ops_t po;
            DNNL_MUST(dnnl_post_ops_create(&po));
            DNNL_MUST(dnnl_post_ops_append_binary(po, dnnl_binary_mul, &msb));
            DNNL_MUST(dnnl_primitive_attr_set_post_ops(attr, po));
            dnnl_post_ops_destroy(po);
        }
        DNNL_MUST(dnnl_matmul_desc_init(&d, &src, &wany, NULL, c->mm_s8_fused ? &dstf : &dsts));
        c->mm_s8 = make_prim(&d, attr, c->eng, &pd);
        dnnl_primitive_attr_destroy(attr);
        if (c->mm_s8 && strncmp(impl_name(c->mm_s8), "ref", 3) != 0)
            break;
        if (c->mm_s8) {
            dnnl_primitive_destroy(c->mm_s8);
            dnnl_primitive_desc_destroy(pd);
            c->mm_s8 = NULL;
        }
    }
    if (!c->mm_s8) {
        fprintf(stderr, "bench_gemm_paths: no optimized int8 matmul\n");
        exit(1);
    }
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    DNNL_MUST(dnnl_memory_create(&c->m_ws8p, wmd, c->eng, DNNL_MEMORY_ALLOCATE));
    c->reo_s8 = make_reorder(&wplain, wmd, c->eng);
    dnnl_primitive_desc_destroy(pd);
    dnnl_exec_arg_t r[] = {{DNNL_ARG_FROM, c->m_ws8}, {DNNL_ARG_TO, c->m_ws8p}};
    exec2(c->reo_s8, c->strm, 2, r);
}

static void teardown(shape_ctx *c)
{
    dnnl_primitive_t prims[] = {c->mm_bf16, c->reo_bf16,   c->mm_bf16_plain, c->mm_s8,
                                c->reo_s8,  c->mm_tile[0], c->mm_tile[1]};
    for (size_t i = 0; i < sizeof prims / sizeof prims[0]; i++)
        if (prims[i])
            dnnl_primitive_destroy(prims[i]);
    dnnl_memory_t mems[] = {c->m_xb,  c->m_wb,   c->m_wbp, c->m_y,  c->m_xs8,
                            c->m_ws8, c->m_ws8p, c->m_sb,  c->m_sbt, c->m_acc,
                            c->m_wtile[0], c->m_wtile[1], c->m_ytile[0], c->m_ytile[1]};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    free(c->x_bf16);
    free(c->w_bf16);
    free(c->x_s8);
    free(c->x_u8);
    free(c->sa);
    free(c->za);
    free(c->w_s8);
    free(c->sb);
    free(c->sbt);
    free(c->sum_w);
    free(c->acc);
}

/* ---- accuracy ---- */

typedef struct {
    double *ref; /* [M / REF_STRIDE][N] */
    int64_t rows;
} reference;

static reference make_reference(const float *x, const float *w, int64_t M, int64_t N, int64_t K)
{
    reference r;
    r.rows = (M + REF_STRIDE - 1) / REF_STRIDE;
    double *xd = xmalloc((size_t)(r.rows * K) * sizeof(double));
    double *wd = xmalloc((size_t)(N * K) * sizeof(double));
    r.ref = xmalloc((size_t)(r.rows * N) * sizeof(double));
    for (int64_t i = 0; i < r.rows; i++)
        for (int64_t k = 0; k < K; k++)
            xd[i * K + k] = x[i * REF_STRIDE * K + k];
    for (int64_t i = 0; i < N * K; i++)
        wd[i] = w[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r.rows, (int)N, (int)K, 1.0, xd,
                (int)K, wd, (int)K, 0.0, r.ref, (int)N);
    free(xd);
    free(wd);
    return r;
}

static void rel_error(const reference *r, const float *y, int64_t N, double *max_rel,
                      double *rms_rel)
{
    double ss_ref = 0.0, ss_err = 0.0, max_err = 0.0;
    for (int64_t i = 0; i < r->rows; i++)
        for (int64_t n = 0; n < N; n++) {
            double ref = r->ref[i * N + n], e = fabs((double)y[i * REF_STRIDE * N + n] - ref);
            ss_ref += ref * ref;
            ss_err += e * e;
            max_err = e > max_err ? e : max_err;
        }
    double rms_ref = sqrt(ss_ref / (double)(r->rows * N));
    *max_rel = max_err / rms_ref;
    *rms_rel = sqrt(ss_err / (double)(r->rows * N)) / rms_ref;
}

/* ---- driver ---- */

typedef struct {
    const char *name;
    void (*run)(shape_ctx *);
} path;

int main(int argc, char **argv)
{
    int64_t M = argc > 1 ? atoll(argv[1]) : 512;
    if (M < 1) {
        fprintf(stderr, "usage: bench_gemm_paths [tokens]\n");
        return 2;
    }
    const struct {
        int64_t K, N;
        const char *what;
    } shapes[] = {{3072, 9216, "qkv"}, {3072, 12288, "mlp up"}, {12288, 3072, "mlp down"}};

    const dnnl_version_t *v = dnnl_version();
    const char *omp = getenv("OMP_NUM_THREADS");
    printf("oneDNN %d.%d.%d (cpu runtime %u), effective ISA 0x%x; OpenBLAS %s, %d threads; "
           "OMP_NUM_THREADS=%s\n",
           v->major, v->minor, v->patch, v->cpu_runtime, (unsigned)dnnl_get_effective_cpu_isa(),
           openblas_get_config(), openblas_get_num_threads(), omp ? omp : "(unset)");
    printf("M = %lld tokens, best of %d after one warm-up; error = |y - ref| / RMS(ref) "
           "against f64 over every %dth row\n\n",
           (long long)M, REPS, REF_STRIDE);

    dnnl_engine_t eng;
    dnnl_stream_t strm;
    DNNL_MUST(dnnl_engine_create(&eng, dnnl_cpu, 0));
    DNNL_MUST(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));

    const path paths[] = {
        {"OpenBLAS sgemm f32", run_openblas},
        {"OpenBLAS sgemm f32, W in mgpu tiles", run_openblas_tiled},
        {"oneDNN sgemm f32", run_dnnl_sgemm},
        {"oneDNN matmul bf16, packed W", run_bf16_packed},
        {"oneDNN matmul bf16, reorder W + matmul", run_bf16_reorder},
        {"oneDNN matmul bf16, plain W", run_bf16_plain},
        {"oneDNN matmul bf16, plain W in mgpu tiles", run_bf16_plain_tiled},
        {"oneDNN gemm_s8s8s32 + quant/dequant", run_gemm_s8s8},
        {"oneDNN gemm_u8s8s32 + quant/dequant", run_gemm_u8s8},
        {"oneDNN matmul s8 (per-row x scale), packed W", run_s8_packed},
        {"oneDNN matmul s8 (per-row x scale), reorder W + matmul", run_s8_reorder},
        {"oneDNN matmul s8 (per-tensor x scale, fused), packed W", run_s8_tensor},
    };
    const size_t npaths = sizeof paths / sizeof paths[0];

    printf("| path | shape (MxK -> N) | ms | GFLOP/s | max rel err | RMS rel err | "
           "max rel err, outlier x | RMS rel err, outlier x |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    char impls[4][160] = {{0}};
    double pass_ms[3][5];
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t K = shapes[s].K, N = shapes[s].N;
        float *x = xmalloc((size_t)(M * K) * 4), *xo = xmalloc((size_t)(M * K) * 4);
        float *w = xmalloc((size_t)(N * K) * 4), *y = xmalloc((size_t)(M * N) * 4);
        float wscale = (float)(1.0 / sqrt((double)K));
        for (int64_t i = 0; i < M * K; i++)
            x[i] = gaussian();
        for (int64_t i = 0; i < N * K; i++)
            w[i] = gaussian() * wscale;
        memcpy(xo, x, (size_t)(M * K) * 4);
        for (int64_t k = 0; k < K; k += 200) /* 0.5% of channels, x25 */
            for (int64_t m = 0; m < M; m++)
                xo[m * K + k] *= 25.0f;
        reference ref = make_reference(x, w, M, N, K);
        reference refo = make_reference(xo, w, M, N, K);

        shape_ctx c;
        memset(&c, 0, sizeof c);
        c.M = M;
        c.N = N;
        c.K = K;
        c.x = x;
        c.w = w;
        c.y = y;
        c.eng = eng;
        c.strm = strm;
        setup_bf16(&c);
        setup_int8(&c);
        if (s == 0) {
            snprintf(impls[0], sizeof impls[0], "%s", impl_name(c.mm_bf16));
            snprintf(impls[1], sizeof impls[1], "%s",
                     c.mm_bf16_plain ? impl_name(c.mm_bf16_plain) : "unsupported");
            snprintf(impls[2], sizeof impls[2], "%s%s", impl_name(c.mm_s8),
                     c.mm_s8_fused ? " (weight scales fused as binary mul)"
                                   : " (dst s32, dequantized here)");
            snprintf(impls[3], sizeof impls[3], "%s / %s", impl_name(c.reo_bf16),
                     impl_name(c.reo_s8));
        }

        double flops = 2.0 * (double)M * (double)N * (double)K;
        for (size_t p = 0; p < npaths; p++) {
            if (paths[p].run == run_bf16_plain && !c.mm_bf16_plain) {
                printf("| %s | %lldx%lld -> %lld (%s) | unsupported | | | | | |\n", paths[p].name,
                       (long long)M, (long long)K, (long long)N, shapes[s].what);
                continue;
            }
            /* accuracy with outlier activations first, then warm-up + timing
             * on the normal data (the last run's output is the one checked) */
            double omax, orms, emax, erms;
            c.x = xo;
            memset(y, 0, (size_t)(M * N) * 4);
            paths[p].run(&c);
            rel_error(&refo, y, N, &omax, &orms);
            c.x = x;
            settle();
            paths[p].run(&c);
            double best = 1e30;
            for (int rep = 0; rep < REPS; rep++) {
                memset(y, 0, (size_t)(M * N) * 4);
                double t0 = now();
                paths[p].run(&c);
                double t = now() - t0;
                best = t < best ? t : best;
            }
            rel_error(&ref, y, N, &emax, &erms);
            printf("| %s | %lldx%lld -> %lld (%s) | %.1f | %.0f | %.2e | %.2e | %.2e | %.2e |\n",
                   paths[p].name, (long long)M, (long long)K, (long long)N, shapes[s].what,
                   best * 1e3, flops / best * 1e-9, emax, erms, omax, orms);
            fflush(stdout);
        }
        /* the single-threaded host passes inside the rows above */
        void (*const passes[])(shape_ctx *) = {convert_x_bf16, quantize_x_s8, quantize_x_u8,
                                               dequantize_sym, row_scale};
        for (size_t i = 0; i < sizeof passes / sizeof passes[0]; i++) {
            double best = 1e30;
            for (int rep = 0; rep < REPS; rep++) {
                double t0 = now();
                passes[i](&c);
                double t = now() - t0;
                best = t < best ? t : best;
            }
            pass_ms[s][i] = best * 1e3;
        }
        teardown(&c);
        free(ref.ref);
        free(refo.ref);
        free(x);
        free(xo);
        free(w);
        free(y);
    }
    printf("\nsingle-threaded host passes included above (ms), qkv / mlp up / mlp down:\n");
    const char *const pass_names[] = {"x f32->bf16", "x -> s8 per row", "x -> u8 per row",
                                      "s32 -> f32 dequant", "y per-row scale"};
    for (int i = 0; i < 5; i++)
        printf("  %-20s %6.2f / %6.2f / %6.2f\n", pass_names[i], pass_ms[0][i], pass_ms[1][i],
               pass_ms[2][i]);
    printf("\nimplementations: bf16 packed: %s; bf16 plain W: %s; s8: %s; reorders: %s\n",
           impls[0], impls[1], impls[2], impls[3]);
    dnnl_stream_destroy(strm);
    dnnl_engine_destroy(eng);
    return 0;
}
