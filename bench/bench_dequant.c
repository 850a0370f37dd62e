/* Dequantization throughput: for every GGUF block type, and for F16, BF16
 * and F8_E4M3 through mgpu_dequantize, decode a buffer into ~64 MiB of f32
 * (or the MiB given as the first argument) and report GB/s of f32 written,
 * next to a plain memcpy of the same number of output bytes, the ceiling a
 * decoder could reach. Runs are interleaved (memcpy, then every type, then
 * again) and the best of several is kept, so all rows see the same machine
 * state. Single-threaded.
 *
 *   bench_dequant [MiB] [repeats]
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mgpu/dtype.h"

static const mgpu_dtype bench_types[] = {
    MGPU_DTYPE_F16,  MGPU_DTYPE_BF16, MGPU_DTYPE_F8_E4M3, MGPU_DTYPE_Q8_0,  MGPU_DTYPE_Q4_0,
    MGPU_DTYPE_Q4_1, MGPU_DTYPE_Q5_0, MGPU_DTYPE_Q5_1,    MGPU_DTYPE_Q2_K,  MGPU_DTYPE_Q3_K,
    MGPU_DTYPE_Q4_K, MGPU_DTYPE_Q5_K, MGPU_DTYPE_Q6_K,    MGPU_DTYPE_IQ4_NL, MGPU_DTYPE_IQ4_XS,
};
enum { N_TYPES = sizeof bench_types / sizeof bench_types[0] };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x2545F4914F6CDD1Du;

static uint64_t rng_next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Byte offsets of the f16 scale fields in each block layout (-1: none). */
static void scale_fields(mgpu_dtype t, int off[2])
{
    off[0] = 0, off[1] = -1;
    switch (t) {
    case MGPU_DTYPE_Q4_1:
    case MGPU_DTYPE_Q5_1:
    case MGPU_DTYPE_Q4_K:
    case MGPU_DTYPE_Q5_K: off[1] = 2; break;
    case MGPU_DTYPE_Q2_K: off[0] = 80, off[1] = 82; break;
    case MGPU_DTYPE_Q3_K: off[0] = 108; break;
    case MGPU_DTYPE_Q6_K: off[0] = 208; break;
    default: break;
    }
}

/* Source data shaped like real weights: block types get random quants with
 * small positive scales (as a quantizer writes for weights around 0.02);
 * float types get encoded normally distributed-ish values. */
static void *make_source(mgpu_dtype t, uint64_t n, uint64_t *bytes)
{
    const mgpu_dtype_info *info = mgpu_dtype_get_info(t);
    if (!mgpu_dtype_bytes_for(t, n, bytes))
        return NULL;
    uint8_t *src = malloc(*bytes);
    if (!src)
        return NULL;
    if (info->quantized) {
        for (uint64_t i = 0; i < *bytes; i++)
            src[i] = (uint8_t)rng_next();
        int off[2];
        scale_fields(t, off);
        for (uint64_t b = 0; b < n / info->block_elems; b++)
            for (int k = 0; k < 2; k++)
                if (off[k] >= 0) {
                    float s = 1e-4f + 1e-3f * (float)(rng_next() % 1000) / 1000.0f;
                    uint16_t h = mgpu_f32_to_f16(s);
                    uint8_t *p = src + b * info->block_bytes + off[k];
                    p[0] = (uint8_t)(h & 0xFF);
                    p[1] = (uint8_t)(h >> 8);
                }
    } else {
        enum { CHUNK = 4096 };
        float tmp[CHUNK];
        for (uint64_t i = 0; i < n; i += CHUNK) {
            uint64_t m = n - i < CHUNK ? n - i : CHUNK;
            for (uint64_t j = 0; j < m; j++)
                tmp[j] = ((float)(rng_next() % 20001) - 10000.0f) * 2e-6f;
            if (mgpu_quantize(t, tmp, src + i * info->block_bytes, m) != MGPU_OK) {
                free(src);
                return NULL;
            }
        }
    }
    return src;
}

int main(int argc, char **argv)
{
    double mib = argc > 1 ? atof(argv[1]) : 64.0;
    int repeats = argc > 2 ? atoi(argv[2]) : 7;
    if (!(mib > 0.0) || repeats < 1) {
        fprintf(stderr, "usage: %s [MiB of f32 output, default 64] [repeats, default 7]\n", argv[0]);
        return 2;
    }
    /* a whole number of the largest block (256 values) */
    uint64_t n = (uint64_t)(mib * 1048576.0 / 4.0) / 256 * 256;
    if (n == 0)
        n = 256;
    const uint64_t out_bytes = n * 4;

    float *dst = malloc(out_bytes);
    float *copy_src = malloc(out_bytes);
    void *src[N_TYPES];
    uint64_t src_bytes[N_TYPES];
    if (!dst || !copy_src) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    /* touch every page before timing anything */
    memset(dst, 0, out_bytes);
    for (uint64_t i = 0; i < n; i++)
        copy_src[i] = (float)(i & 1023);
    for (int t = 0; t < N_TYPES; t++) {
        src[t] = make_source(bench_types[t], n, &src_bytes[t]);
        if (!src[t]) {
            fprintf(stderr, "cannot prepare %s source\n", mgpu_dtype_name(bench_types[t]));
            return 1;
        }
    }

    double best[N_TYPES], best_copy = 1e30;
    for (int t = 0; t < N_TYPES; t++)
        best[t] = 1e30;
    double sink = 0.0;
    for (int r = 0; r < repeats; r++) {
        for (int t = 0; t < N_TYPES; t++) {
            /* a memcpy right before every type keeps the ceiling measured
             * under the same conditions as the decoders */
            double t0 = now_s();
            memcpy(dst, copy_src, out_bytes);
            double t1 = now_s();
            if (t1 - t0 < best_copy)
                best_copy = t1 - t0;
            sink += dst[n / 3];

            t0 = now_s();
            mgpu_status st = mgpu_dequantize(bench_types[t], src[t], dst, n);
            t1 = now_s();
            if (st != MGPU_OK) {
                fprintf(stderr, "%s: %s\n", mgpu_dtype_name(bench_types[t]), mgpu_status_name(st));
                return 1;
            }
            if (t1 - t0 < best[t])
                best[t] = t1 - t0;
            sink += dst[n / 2];
        }
    }

    const double copy_gbs = (double)out_bytes / best_copy / 1e9;
    printf("Dequantize to f32, %.1f MiB of output (%llu values), best of %d, single thread\n\n",
           (double)out_bytes / 1048576.0, (unsigned long long)n, repeats);
    printf("| type | bits/value | best ms | GB/s f32 out | vs memcpy |\n");
    printf("| --- | ---: | ---: | ---: | ---: |\n");
    printf("| memcpy | 32.00 | %.2f | %.2f | 1.00 |\n", best_copy * 1e3, copy_gbs);
    for (int t = 0; t < N_TYPES; t++) {
        double gbs = (double)out_bytes / best[t] / 1e9;
        printf("| %s | %.2f | %.2f | %.2f | %.2f |\n", mgpu_dtype_name(bench_types[t]),
               8.0 * (double)src_bytes[t] / (double)n, best[t] * 1e3, gbs, gbs / copy_gbs);
    }
    /* keeps the decoded values observable so no run can be elided */
    printf("\nchecksum %g\n", sink);

    for (int t = 0; t < N_TYPES; t++)
        free(src[t]);
    free(dst);
    free(copy_src);
    return 0;
}
