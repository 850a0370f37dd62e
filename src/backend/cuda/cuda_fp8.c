/* See cuda_fp8.h. cuBLASLt's fp8 matmul wants "TN": A transposed, B not,
 * column major. Row-major W [out][in] is column-major in x out, so A = W
 * with op T gives out x in; row-major x [rows][in] is column-major
 * in x rows, so B = x with op N; D (column-major out x rows, ld out) is
 * row-major y [rows][out]. D = scale_a * scale_b * (A B): scale_a 1 (the
 * weights as stored), scale_b the activations' scale, both device
 * pointers written by the quantization kernel in stream order. The
 * algorithm per shape comes from the heuristic once and is cached. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>

#include "backend/cuda/cuda_fp8.h"
#include "backend/cuda/cuda_kernels.h"

enum { CACHE = 32 };

typedef struct shape {
    int64_t m, n, k;
    bool used, ok;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} shape;

struct mgpu_cuda_fp8 {
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t op;
    cublasLtMatmulPreference_t pref;
    cudaStream_t stream;
    void *workspace;
    size_t workspace_bytes;
    float *scalars; /* [0] amax bits, [1] the activations' scale, [2] 1.0f (the weights') */
    shape cache[CACHE];
    int next;
};

static void drop_shape(shape *s)
{
    if (s->a)
        cublasLtMatrixLayoutDestroy(s->a);
    if (s->b)
        cublasLtMatrixLayoutDestroy(s->b);
    if (s->d)
        cublasLtMatrixLayoutDestroy(s->d);
    memset(s, 0, sizeof *s);
}

void mgpu_cuda_fp8_destroy(mgpu_cuda_fp8 *f)
{
    if (!f)
        return;
    for (int i = 0; i < CACHE; i++)
        drop_shape(&f->cache[i]);
    if (f->pref)
        cublasLtMatmulPreferenceDestroy(f->pref);
    if (f->op)
        cublasLtMatmulDescDestroy(f->op);
    if (f->lt)
        cublasLtDestroy(f->lt);
    if (f->scalars)
        cudaFree(f->scalars);
    free(f);
}

mgpu_cuda_fp8 *mgpu_cuda_fp8_create(int device, cudaStream_t stream, void *workspace,
                                    size_t workspace_bytes, char *why, size_t why_bytes)
{
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, why_bytes, "cannot read the compute capability");
        return NULL;
    }
    if (major * 10 + minor < 89) {
        snprintf(why, why_bytes, "compute capability %d.%d has no fp8 tensor cores (8.9+)", major,
                 minor);
        return NULL;
    }
    mgpu_cuda_fp8 *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(why, why_bytes, "out of memory");
        return NULL;
    }
    f->stream = stream;
    f->workspace = workspace;
    f->workspace_bytes = workspace_bytes;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const float init[4] = {0.0f, 1.0f, 1.0f, 0.0f};
    cublasStatus_t s = cublasLtCreate(&f->lt);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescCreate(&f->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(f->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(f->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceCreate(&f->pref);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(f->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &workspace_bytes, sizeof workspace_bytes);
    /* The heuristic assumes 256-byte aligned operands unless told: weights
     * streamed from disk sit at their file offset modulo 4096, so ask only
     * for the 16 bytes mgpu_cuda_fp8_linear checks. */
    const uint32_t align = 16;
    const cublasLtMatmulPreferenceAttributes_t aligns[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(f->pref, aligns[i], &align, sizeof align);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, why_bytes, "cuBLASLt setup failed: %s", cublasLtGetStatusString(s));
        mgpu_cuda_fp8_destroy(f);
        return NULL;
    }
    cudaError_t e = cudaMalloc((void **)&f->scalars, sizeof init);
    if (e == cudaSuccess)
        e = cudaMemcpy(f->scalars, init, sizeof init, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, why_bytes, "fp8 scalars: %s", cudaGetErrorString(e));
        mgpu_cuda_fp8_destroy(f);
        return NULL;
    }
    const float *a_scale = f->scalars + 2, *b_scale = f->scalars + 1;
    s = cublasLtMatmulDescSetAttribute(f->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale,
                                       sizeof a_scale);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(f->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale,
                                           sizeof b_scale);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, why_bytes, "cuBLASLt scale pointers: %s", cublasLtGetStatusString(s));
        mgpu_cuda_fp8_destroy(f);
        return NULL;
    }
    return f;
}

/* The cached layouts and algorithm for m x n x k; ok false when cuBLASLt
 * has none (the caller then takes the bf16 path for this shape). */
static shape *shape_for(mgpu_cuda_fp8 *f, int64_t m, int64_t n, int64_t k)
{
    for (int i = 0; i < CACHE; i++)
        if (f->cache[i].used && f->cache[i].m == m && f->cache[i].n == n && f->cache[i].k == k)
            return &f->cache[i];
    shape *s = &f->cache[f->next];
    f->next = (f->next + 1) % CACHE;
    drop_shape(s);
    *s = (shape){.m = m, .n = n, .k = k, .used = true};
    cublasStatus_t st = cublasLtMatrixLayoutCreate(&s->a, CUDA_R_8F_E4M3, (uint64_t)k,
                                                   (uint64_t)m, k);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&s->b, CUDA_R_8F_E4M3, (uint64_t)k, (uint64_t)n, k);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&s->d, CUDA_R_32F, (uint64_t)m, (uint64_t)n, m);
    cublasLtMatmulHeuristicResult_t r;
    int found = 0;
    memset(&r, 0, sizeof r);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(f->lt, f->op, s->a, s->b, s->d, s->d, f->pref, 1, &r,
                                            &found);
    s->ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
    if (s->ok)
        s->algo = r.algo;
    return s;
}

mgpu_cuda_fp8_result mgpu_cuda_fp8_linear(mgpu_cuda_fp8 *f, const float *x, int64_t rows,
                                          int64_t in, const void *w, int64_t out, float *y,
                                          void *xq, char *why, size_t why_bytes)
{
    if (in % 16 || out % 16 || (uintptr_t)w % 16 || (uintptr_t)xq % 16 || (uintptr_t)y % 16)
        return MGPU_CUDA_FP8_UNSUPPORTED;
    shape *s = shape_for(f, out, rows, in);
    if (!s->ok)
        return MGPU_CUDA_FP8_UNSUPPORTED;
    cudaError_t e = mgpu_cuda_quant_e4m3(f->stream, x, rows * in, f->scalars, xq);
    if (e != cudaSuccess) {
        snprintf(why, why_bytes, "rounding activations to e4m3: %s", cudaGetErrorString(e));
        return MGPU_CUDA_FP8_FAILED;
    }
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasLtMatmul(f->lt, f->op, &one, w, s->a, xq, s->b, &zero, y, s->d, y,
                                       s->d, &s->algo, f->workspace, f->workspace_bytes,
                                       f->stream);
    if (st != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, why_bytes, "cublasLtMatmul fp8 %lldx%lldx%lld: %s", (long long)out,
                 (long long)rows, (long long)in, cublasLtGetStatusString(st));
        return MGPU_CUDA_FP8_FAILED;
    }
    return MGPU_CUDA_FP8_DONE;
}
