/* See cpu_linear.h. Decoding runs on our thread pool (rows of the tile in
 * parallel); the multiply runs on OpenBLAS's threads; the two never overlap,
 * so the machine is never oversubscribed. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

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
        scratch->data = NULL;
        scratch->floats = 0;
    }
}

mgpu_status mgpu_cpu_linear(const float *x, int64_t rows, int64_t in, const void *w,
                            mgpu_dtype w_dtype, int64_t out, const float *bias, float *y,
                            mgpu_threadpool *pool, mgpu_cpu_scratch *scratch)
{
    uint64_t row_bytes;
    if (rows < 0 || in <= 0 || out <= 0 || !mgpu_dtype_bytes_for(w_dtype, (uint64_t)in, &row_bytes))
        return MGPU_ERR_ARGUMENT;
    if (rows == 0)
        return MGPU_OK;
    int64_t tile_rows = mgpu_cpu_linear_tile_rows(in);
    if (tile_rows > out)
        tile_rows = out;
    size_t need = (size_t)tile_rows * (size_t)in;
    mgpu_cpu_scratch local = {NULL, 0};
    mgpu_cpu_scratch *sc = scratch ? scratch : &local;
    if (sc->floats < need) {
        float *grown = realloc(sc->data, need * sizeof(float));
        if (!grown)
            return MGPU_ERR_NO_MEMORY;
        sc->data = grown;
        sc->floats = need;
    }
    float *tile = sc->data;
    mgpu_status s = MGPU_OK;
    for (int64_t o = 0; o < out && s == MGPU_OK; o += tile_rows) {
        int64_t n = out - o < tile_rows ? out - o : tile_rows;
        decode_job j = {(const uint8_t *)w + (uint64_t)o * row_bytes, w_dtype, row_bytes, in, tile,
                        MGPU_OK};
        mgpu_threadpool_run(pool, decode_rows, &j, n, 8);
        s = j.status;
        if (s != MGPU_OK)
            break;
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
