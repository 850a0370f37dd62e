/* GEMM efficiency of the CPU linear layer: for each weight dtype, our
 * linear (decode a tile of W, then sgemm) against OpenBLAS sgemm on the same
 * weights pre-decoded to f32 (the ceiling), measured side by side. The ratio
 * is the cost of never holding an f32 copy of the model. Shapes are FLUX's:
 * 512 tokens through the 3072 -> 9216 qkv projection and the 3072 -> 12288
 * MLP. */
#include <cblas.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ops/cpu_gemm_bf16.h"
#include "ops/cpu_linear.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int64_t rows = argc > 1 ? atoll(argv[1]) : 512;
    const struct {
        int64_t in, out;
    } shapes[] = {{3072, 9216}, {3072, 12288}};
    const mgpu_dtype dtypes[] = {MGPU_DTYPE_F32,  MGPU_DTYPE_BF16, MGPU_DTYPE_F16,
                                 MGPU_DTYPE_F8_E4M3, MGPU_DTYPE_Q8_0, MGPU_DTYPE_Q4_K,
                                 MGPU_DTYPE_Q6_K};
    mgpu_threadpool *pool = NULL;
    mgpu_cpu_scratch scratch = {0};
    const bool bf16 = mgpu_cpu_bf16_gemm_available();
    mgpu_error err = {0};
    if (mgpu_threadpool_create(0, &pool, &err) != MGPU_OK) {
        fprintf(stderr, "bench_linear: %s\n", err.message);
        return 1;
    }
    printf("CPU linear, %lld tokens, %d threads (best of 3)\n\n", (long long)rows,
           mgpu_threadpool_size(pool));
    printf("| shape | weights | sgemm on f32 GFLOP/s | our linear GFLOP/s | ratio | our bf16 "
           "linear GFLOP/s | bf16 / sgemm |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t in = shapes[s].in, out = shapes[s].out;
        float *x = malloc((size_t)(rows * in) * 4), *y = malloc((size_t)(rows * out) * 4);
        float *wf = malloc((size_t)(in * out) * 4), *dec = malloc((size_t)(in * out) * 4);
        uint8_t *w = malloc((size_t)(in * out) * 4);
        for (int64_t i = 0; i < rows * in; i++)
            x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
        for (int64_t i = 0; i < in * out; i++)
            wf[i] = (float)((i * 104729) % 1000) / 50000.0f - 0.01f;
        double flops = 2.0 * (double)rows * (double)in * (double)out;
        for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
            mgpu_quantize(dtypes[d], wf, w, (uint64_t)(in * out));
            mgpu_dequantize(dtypes[d], w, dec, (uint64_t)(in * out));
            double best_ref = 1e30, best_ours = 1e30, best_bf16 = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                double t0 = now();
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)out, (int)in,
                            1.0f, x, (int)in, dec, (int)in, 0.0f, y, (int)out);
                double t1 = now();
                mgpu_cpu_linear(x, rows, in, w, dtypes[d], out, NULL, y, pool, &scratch);
                double t2 = now();
                if (bf16)
                    mgpu_cpu_linear_ex(x, rows, in, w, dtypes[d], out, NULL, y, pool, &scratch,
                                       MGPU_CPU_GEMM_BF16);
                double t3 = now();
                best_ref = t1 - t0 < best_ref ? t1 - t0 : best_ref;
                best_ours = t2 - t1 < best_ours ? t2 - t1 : best_ours;
                best_bf16 = t3 - t2 < best_bf16 ? t3 - t2 : best_bf16;
            }
            printf("| %lldx%lld | %s | %.1f | %.1f | %.2f | ", (long long)in, (long long)out,
                   mgpu_dtype_name(dtypes[d]), flops / best_ref / 1e9, flops / best_ours / 1e9,
                   best_ref / best_ours);
            if (bf16)
                printf("%.1f | %.2f |\n", flops / best_bf16 / 1e9, best_ref / best_bf16);
            else
                printf("n/a | n/a |\n");
        }
        free(x);
        free(y);
        free(wf);
        free(dec);
        free(w);
    }
    mgpu_threadpool_free(pool);
    mgpu_cpu_scratch_free(&scratch);
    return 0;
}
