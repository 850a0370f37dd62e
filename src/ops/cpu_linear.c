/* See cpu_linear.h. Decoding runs on our thread pool (rows of the tile in
 * parallel); the multiply runs on OpenBLAS's threads; the two never overlap,
 * so the machine is never oversubscribed. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "ops/cpu_gemm_bf16.h"
#include "ops/cpu_linear.h"

int64_t mgpu_cpu_linear_tile_rows(int64_t in)
{
    int64_t t = in > 0 ? (1 << 20) / in : 1;
    t = (t / 16) * 16;
    return t < 16 ? 16 : t;
}

typedef struct decode_job {
    const uint8_t *w;
    mgpu_dtype dtype;
    uint64_t row_bytes;
    int64_t in;
    float *tile;
    mgpu_status status;
} decode_job;

static void decode_rows(void *ctx, int64_t begin, int64_t end)
{
    decode_job *j = ctx;
    for (int64_t r = begin; r < end; r++)
        if (mgpu_dequantize(j->dtype, j->w + (uint64_t)r * j->row_bytes, j->tile + r * j->in,
                            (uint64_t)j->in) != MGPU_OK)
            j->status = MGPU_ERR_ARGUMENT;
}

void mgpu_cpu_scratch_free(mgpu_cpu_scratch *scratch)
{
    if (scratch) {
        free(scratch->data);
        free(scratch->half);
        scratch->data = NULL;
        scratch->floats = 0;
        scratch->half = NULL;
        scratch->halves = 0;
    }
}

typedef struct bf16_job {
    const float *src;
    uint16_t *dst;
    int64_t cols;
} bf16_job;

static void bf16_rows(void *ctx, int64_t begin, int64_t end)
{
    const bf16_job *j = ctx;
    mgpu_cpu_to_bf16(j->src + begin * j->cols, j->dst + begin * j->cols, (end - begin) * j->cols);
}

mgpu_status mgpu_cpu_linear(const float *x, int64_t rows, int64_t in, const void *w,
                            mgpu_dtype w_dtype, int64_t out, const float *bias, float *y,
                            mgpu_threadpool *pool, mgpu_cpu_scratch *scratch)
{
    return mgpu_cpu_linear_ex(x, rows, in, w, w_dtype, out, bias, y, pool, scratch,
                              MGPU_CPU_GEMM_F32);
}

mgpu_status mgpu_cpu_linear_ex(const float *x, int64_t rows, int64_t in, const void *w,
                               mgpu_dtype w_dtype, int64_t out, const float *bias, float *y,
                               mgpu_threadpool *pool, mgpu_cpu_scratch *scratch,
                               mgpu_cpu_gemm gemm)
{
    uint64_t row_bytes;
    if (rows < 0 || in <= 0 || out <= 0 || !mgpu_dtype_bytes_for(w_dtype, (uint64_t)in, &row_bytes))
        return MGPU_ERR_ARGUMENT;
    if (gemm == MGPU_CPU_GEMM_BF16 && !mgpu_cpu_bf16_gemm_available())
        return MGPU_ERR_UNSUPPORTED;
    if (rows == 0)
        return MGPU_OK;
    int64_t tile_rows = mgpu_cpu_linear_tile_rows(in);
    if (tile_rows > out)
        tile_rows = out;
    const bool bf16 = gemm == MGPU_CPU_GEMM_BF16;
    /* bf16 weights are multiplied where they lie, no decode */
    const bool in_place = bf16 && w_dtype == MGPU_DTYPE_BF16 && (uintptr_t)w % 2 == 0;
    size_t need = in_place ? 0 : (size_t)tile_rows * (size_t)in;
    size_t need_half = bf16 ? (size_t)rows * (size_t)in + (in_place ? 0 : need) : 0;
    mgpu_cpu_scratch local = {NULL, 0, NULL, 0};
    mgpu_cpu_scratch *sc = scratch ? scratch : &local;
    if (sc->floats < need) {
        float *grown = realloc(sc->data, need * sizeof(float));
        if (!grown)
            return MGPU_ERR_NO_MEMORY;
        sc->data = grown;
        sc->floats = need;
    }
    if (sc->halves < need_half) {
        uint16_t *grown = realloc(sc->half, need_half * sizeof(uint16_t));
        if (!grown) {
            mgpu_cpu_scratch_free(&local);
            return MGPU_ERR_NO_MEMORY;
        }
        sc->half = grown;
        sc->halves = need_half;
    }
    float *tile = sc->data;
    uint16_t *x_half = bf16 ? sc->half : NULL, *tile_half = bf16 ? sc->half + rows * in : NULL;
    if (bf16) {
        bf16_job xj = {x, x_half, in};
        mgpu_threadpool_run(pool, bf16_rows, &xj, rows, 8);
    }
    mgpu_status s = MGPU_OK;
    for (int64_t o = 0; o < out && s == MGPU_OK; o += tile_rows) {
        int64_t n = out - o < tile_rows ? out - o : tile_rows;
        const uint8_t *wt = (const uint8_t *)w + (uint64_t)o * row_bytes;
        if (in_place) {
            s = mgpu_cpu_gemm_bf16(x_half, rows, in, (const uint16_t *)wt, n, y + o, out);
            continue;
        }
        decode_job j = {wt, w_dtype, row_bytes, in, tile, MGPU_OK};
        mgpu_threadpool_run(pool, decode_rows, &j, n, 8);
        s = j.status;
        if (s != MGPU_OK)
            break;
        if (bf16) {
            bf16_job tj = {tile, tile_half, in};
            mgpu_threadpool_run(pool, bf16_rows, &tj, n, 8);
            s = mgpu_cpu_gemm_bf16(x_half, rows, in, tile_half, n, y + o, out);
            continue;
        }
        /* y[:, o:o+n] = x * tile^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n, (int)in, 1.0f, x,
                    (int)in, tile, (int)in, 0.0f, y + o, (int)out);
    }
    mgpu_cpu_scratch_free(&local);
    if (s == MGPU_OK && bias)
        for (int64_t r = 0; r < rows; r++) {
            float *yr = y + r * out;
            for (int64_t i = 0; i < out; i++)
                yr[i] += bias[i];
        }
    return s;
}
