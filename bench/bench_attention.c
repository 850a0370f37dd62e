/* CPU attention throughput at FLUX shapes: 24 heads of head_dim 128, over
 * L = 512 tokens (256 text + 256 image tokens, a 256^2 image) and L = 4608
 * (512 text + 4096 image tokens, a 1024^2 image), with 1 and 2 threads.
 * Reports GFLOP/s counting 4 * L^2 * d * heads (the two GEMMs; the softmax
 * is not counted), best of a few runs.
 *
 *   bench_attention [repeats] [L ...]
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ops/cpu_ops.h"
#include "ops/threadpool.h"

enum { HEADS = 24, HEAD_DIM = 128 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x2545F4914F6CDD1Du;

static float rng_float(void) /* [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)(rng >> 40) * 0x1p-23f - 1.0f;
}

static float *rand_buffer(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (p)
        for (size_t i = 0; i < n; i++)
            p[i] = rng_float();
    return p;
}

int main(int argc, char **argv)
{
    int repeats = argc > 1 ? atoi(argv[1]) : 3;
    if (repeats < 1)
        repeats = 1;
    int64_t lens[16] = {512, 4608};
    int n_lens = 2;
    if (argc > 2) {
        n_lens = 0;
        for (int a = 2; a < argc && n_lens < 16; a++)
            if (atoll(argv[a]) > 0)
                lens[n_lens++] = atoll(argv[a]);
    }
    static const int threads[] = {1, 2};
    mgpu_threadpool *pools[2];
    for (int t = 0; t < 2; t++) {
        mgpu_error err = {0};
        if (mgpu_threadpool_create(threads[t], &pools[t], &err) != MGPU_OK) {
            fprintf(stderr, "bench_attention: %s\n", err.message);
            return 1;
        }
    }

    printf("attention, %d heads, head_dim %d, best of %d\n", HEADS, HEAD_DIM, repeats);
    printf("%8s %8s %10s %10s\n", "L", "threads", "ms", "GFLOP/s");
    for (int li = 0; li < n_lens; li++) {
        const int64_t L = lens[li];
        const size_t n = (size_t)(HEADS * L * HEAD_DIM);
        float *q = rand_buffer(n), *k = rand_buffer(n), *v = rand_buffer(n);
        float *out = malloc(n * sizeof(float));
        if (!q || !k || !v || !out) {
            fprintf(stderr, "bench_attention: out of memory at L = %lld\n", (long long)L);
            return 1;
        }
        const double flops = 4.0 * (double)L * (double)L * HEAD_DIM * HEADS;
        const float scale = (float)(1.0 / sqrt((double)HEAD_DIM));
        for (int t = 0; t < 2; t++) {
            double best = INFINITY;
            for (int r = 0; r < repeats; r++) {
                double t0 = now_s();
                mgpu_cpu_attention(q, k, v, out, HEADS, L, L, HEAD_DIM, scale, pools[t]);
                double dt = now_s() - t0;
                if (dt < best)
                    best = dt;
            }
            printf("%8lld %8d %10.1f %10.2f\n", (long long)L, threads[t], best * 1e3,
                   flops / best * 1e-9);
            fflush(stdout);
        }
        free(q), free(k), free(v), free(out);
    }
    for (int t = 0; t < 2; t++)
        mgpu_threadpool_free(pools[t]);
    return 0;
}
