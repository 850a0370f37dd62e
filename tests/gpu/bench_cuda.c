/* GPU-machine benchmark of the CUDA backend (run by tests/gpu/run.sh):
 *  1. host -> device bandwidth: our copy (pinned host_alloc, copy queue)
 *     against cudaMemcpy from cudaMallocHost memory (the link's pinned
 *     ceiling) and from malloc'd memory, same size;
 *  2. linear TFLOP/s at FLUX shapes, bf16 and Q8_0 weights, against
 *     cublasGemmEx called directly on bf16 operands (our ceiling), with the
 *     largest difference between the two outputs as a sanity check.
 * Prints a table; with --details FILE also writes every measurement there.
 * Exit status 0 unless something failed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/backend.h"
#include "backend/cuda_loader.h"

static FILE *details;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "bench_cuda: %s: %s\n", #call, cudaGetErrorString(e_));                \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define OK(call)                                                                                   \
    do {                                                                                           \
        mgpu_error err_ = {0};                                                                     \
        (void)err_;                                                                                \
        if ((call) != MGPU_OK) {                                                                   \
            fprintf(stderr, "bench_cuda: %s: %s\n", #call, err_.message);                          \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void note(const char *fmt, double a, double b)
{
    if (details) {
        fprintf(details, fmt, a, b);
        fputc('\n', details);
    }
}

/* ------------------------------------------------------------ bandwidth */

typedef struct bw_result {
    double ours, pinned, pageable; /* GB/s, best of the repeats */
} bw_result;

static bw_result bandwidth(mgpu_backend *be, size_t bytes, int repeats)
{
    bw_result r = {0, 0, 0};
    mgpu_error err = {0};
    void *host = NULL, *dev = NULL;
    mgpu_event *ev = NULL;
    if (be->ops->host_alloc(be, bytes, &host, &err) != MGPU_OK ||
        be->ops->alloc(be, bytes, &dev, &err) != MGPU_OK ||
        be->ops->event_create(be, &ev, &err) != MGPU_OK) {
        fprintf(stderr, "bench_cuda: %s\n", err.message);
        exit(1);
    }
    memset(host, 1, bytes);
    for (int i = 0; i < repeats; i++) {
        double t0 = now();
        if (be->ops->copy(be, MGPU_QUEUE_COPY, dev, host, bytes, MGPU_COPY_HOST_TO_DEVICE, &err) !=
                MGPU_OK ||
            be->ops->event_record(be, ev, MGPU_QUEUE_COPY, &err) != MGPU_OK ||
            be->ops->event_sync(be, ev, &err) != MGPU_OK) {
            fprintf(stderr, "bench_cuda: %s\n", err.message);
            exit(1);
        }
        double gbs = (double)bytes / (now() - t0) / 1e9;
        note("copy ours pinned: %.2f GB/s (repeat %.0f)", gbs, i);
        r.ours = gbs > r.ours ? gbs : r.ours;
    }
    be->ops->event_destroy(be, ev);
    be->ops->free(be, dev);
    be->ops->host_free(be, host);

    void *pinned = NULL, *pageable = malloc(bytes), *d = NULL;
    CK(cudaMallocHost(&pinned, bytes));
    CK(cudaMalloc(&d, bytes));
    memset(pinned, 1, bytes);
    memset(pageable, 1, bytes);
    for (int i = 0; i < repeats; i++) {
        double t0 = now();
        CK(cudaMemcpy(d, pinned, bytes, cudaMemcpyHostToDevice));
        double gbs = (double)bytes / (now() - t0) / 1e9;
        note("cudaMemcpy pinned: %.2f GB/s (repeat %.0f)", gbs, i);
        r.pinned = gbs > r.pinned ? gbs : r.pinned;
        t0 = now();
        CK(cudaMemcpy(d, pageable, bytes, cudaMemcpyHostToDevice));
        gbs = (double)bytes / (now() - t0) / 1e9;
        note("cudaMemcpy pageable: %.2f GB/s (repeat %.0f)", gbs, i);
        r.pageable = gbs > r.pageable ? gbs : r.pageable;
    }
    CK(cudaFree(d));
    CK(cudaFreeHost(pinned));
    free(pageable);
    return r;
}

/* ------------------------------------------------------------ GEMM */

static uint64_t rng = 0x9E3779B97F4A7C15u;
static float frand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

typedef struct gemm_result {
    double ours, cublas, max_diff; /* TFLOP/s; largest |ours - cublas| / max|cublas| */
} gemm_result;

/* y[m][n] = x[m][k] W[n][k]^T with W stored as dtype. */
static gemm_result gemm(mgpu_backend *be, cublasHandle_t h, int64_t m, int64_t k, int64_t n,
                        mgpu_dtype dtype, int iters)
{
    gemm_result r = {0, 0, 0};
    const double flop = 2.0 * (double)m * (double)k * (double)n;
    float *x = malloc((size_t)(m * k) * sizeof(float)), *w = malloc((size_t)(n * k) * sizeof(float));
    for (int64_t i = 0; i < m * k; i++)
        x[i] = frand();
    for (int64_t i = 0; i < n * k; i++)
        w[i] = frand() * 0.05f;
    uint64_t wbytes;
    mgpu_dtype_bytes_for(dtype, (uint64_t)(n * k), &wbytes);
    void *wq = malloc(wbytes);
    if (mgpu_quantize(dtype, w, wq, (uint64_t)(n * k)) != MGPU_OK) {
        fprintf(stderr, "bench_cuda: cannot encode %s\n", mgpu_dtype_name(dtype));
        exit(1);
    }
    mgpu_error err = {0};
    float *dx = NULL, *dy = NULL;
    void *dw = NULL;
    OK(mgpu_backend_alloc_f32(be, m * k, &dx, &err));
    OK(mgpu_backend_alloc_f32(be, m * n, &dy, &err));
    OK(be->ops->alloc(be, wbytes, &dw, &err));
    OK(mgpu_backend_upload(be, dx, x, (size_t)(m * k) * sizeof(float), &err));
    OK(mgpu_backend_upload(be, dw, wq, wbytes, &err));
    mgpu_wref wr = {dw, dtype}, none = {NULL, MGPU_DTYPE_INVALID};
    be->ops->linear(be, dx, m, k, wr, n, none, dy); /* warm-up: scratch, cuBLAS plans */
    OK(be->ops->synchronize(be, &err));
    double t0 = now();
    for (int i = 0; i < iters; i++)
        be->ops->linear(be, dx, m, k, wr, n, none, dy);
    OK(be->ops->synchronize(be, &err));
    r.ours = flop * iters / (now() - t0) / 1e12;
    float *ours = malloc((size_t)(m * n) * sizeof(float));
    OK(mgpu_backend_download(be, ours, dy, (size_t)(m * n) * sizeof(float), &err));

    /* cuBLAS directly: the weights decoded on the host to bf16, x to bf16 */
    uint16_t *xb = malloc((size_t)(m * k) * 2), *wb = malloc((size_t)(n * k) * 2);
    float *wdec = malloc((size_t)(n * k) * sizeof(float));
    mgpu_dequantize(dtype, wq, wdec, (uint64_t)(n * k));
    for (int64_t i = 0; i < m * k; i++)
        xb[i] = mgpu_f32_to_bf16(x[i]);
    for (int64_t i = 0; i < n * k; i++)
        wb[i] = mgpu_f32_to_bf16(wdec[i]);
    void *cx, *cw;
    float *cy;
    CK(cudaMalloc(&cx, (size_t)(m * k) * 2));
    CK(cudaMalloc(&cw, (size_t)(n * k) * 2));
    CK(cudaMalloc((void **)&cy, (size_t)(m * n) * sizeof(float)));
    CK(cudaMemcpy(cx, xb, (size_t)(m * k) * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(cw, wb, (size_t)(n * k) * 2, cudaMemcpyHostToDevice));
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    for (int i = 0; i <= iters && s == CUBLAS_STATUS_SUCCESS; i++) {
        if (i == 1) {
            CK(cudaDeviceSynchronize());
            t0 = now();
        }
        s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, cw, CUDA_R_16BF,
                         (int)k, cx, CUDA_R_16BF, (int)k, &zero, cy, CUDA_R_32F, (int)n,
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    CK(cudaDeviceSynchronize());
    if (s != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "bench_cuda: cublasGemmEx failed (%d)\n", (int)s);
        exit(1);
    }
    r.cublas = flop * iters / (now() - t0) / 1e12;
    float *ref = malloc((size_t)(m * n) * sizeof(float));
    CK(cudaMemcpy(ref, cy, (size_t)(m * n) * sizeof(float), cudaMemcpyDeviceToHost));
    double maxref = 0.0, maxdiff = 0.0;
    for (int64_t i = 0; i < m * n; i++) {
        maxref = fmax(maxref, fabs(ref[i]));
        maxdiff = fmax(maxdiff, fabs((double)ours[i] - ref[i]));
    }
    r.max_diff = maxref > 0 ? maxdiff / maxref : maxdiff;
    CK(cudaFree(cx));
    CK(cudaFree(cw));
    CK(cudaFree(cy));
    be->ops->free(be, dx);
    be->ops->free(be, dy);
    be->ops->free(be, dw);
    free(x), free(w), free(wq), free(ours), free(xb), free(wb), free(wdec), free(ref);
    return r;
}

int main(int argc, char **argv)
{
    const char *details_path = NULL;
    size_t copy_mib = 1024;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--details") && i + 1 < argc)
            details_path = argv[++i];
        else if (!strcmp(argv[i], "--copy-mib") && i + 1 < argc)
            copy_mib = (size_t)atol(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_cuda [--details FILE] [--copy-mib N]\n");
            return 2;
        }
    }
    if (details_path && !(details = fopen(details_path, "w"))) {
        perror(details_path);
        return 1;
    }
    mgpu_backend *be = NULL;
    mgpu_error err = {0};
    if (mgpu_backend_cuda_create(0, &be, &err) != MGPU_OK) {
        fprintf(stderr, "bench_cuda: %s\n", err.message);
        return 1;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "bench_cuda: cublasCreate failed\n");
        return 1;
    }

    bw_result bw = bandwidth(be, copy_mib << 20, 5);
    static const struct {
        int64_t m, k, n;
        const char *what;
    } shapes[] = {
        {4096, 3072, 3072, "attn qkv/out (4096x3072x3072)"},
        {4096, 3072, 12288, "mlp up (4096x3072x12288)"},
        {4096, 12288, 3072, "mlp down (4096x12288x3072)"},
    };
    static const mgpu_dtype dtypes[] = {MGPU_DTYPE_BF16, MGPU_DTYPE_Q8_0};
    gemm_result g[3][2];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            g[i][j] = gemm(be, h, shapes[i].m, shapes[i].k, shapes[i].n, dtypes[j], 20);
            note("gemm ours %.2f TFLOP/s, cublas %.2f TFLOP/s", g[i][j].ours, g[i][j].cublas);
        }
    cublasDestroy(h);
    mgpu_backend_free(be);

    printf("\nCUDA backend on %s (sm_%d%d)\n\n", prop.name, prop.major, prop.minor);
    printf("| host -> device, %zu MiB | GB/s |\n| --- | ---: |\n", copy_mib);
    printf("| mgpu copy (pinned host_alloc, copy queue) | %.1f |\n", bw.ours);
    printf("| cudaMemcpy from cudaMallocHost | %.1f |\n", bw.pinned);
    printf("| cudaMemcpy from malloc | %.1f |\n", bw.pageable);
    printf("| mgpu / pinned cudaMemcpy | %.0f%% |\n\n", 100.0 * bw.ours / bw.pinned);
    printf("| linear | weights | mgpu TFLOP/s | cuBLAS bf16 TFLOP/s | mgpu/cuBLAS | max rel diff |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: |\n");
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            printf("| %s | %s | %.1f | %.1f | %.0f%% | %.1e |\n", shapes[i].what,
                   mgpu_dtype_name(dtypes[j]), g[i][j].ours, g[i][j].cublas,
                   100.0 * g[i][j].ours / g[i][j].cublas, g[i][j].max_diff);
    if (details)
        fclose(details);
    return 0;
}
