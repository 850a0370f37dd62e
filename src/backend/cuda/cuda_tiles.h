/* How the CUDA linear and conv2d cut their work so the scratch they decode
 * into stays bounded: pure functions of the shapes (never of addresses or
 * of what happens to be allocated), so the GEMMs cuBLAS runs, and hence
 * the bits it produces, depend only on the shapes. Host-only, no CUDA, so
 * the tests check them on any machine. */
#ifndef MGPU_BACKEND_CUDA_TILES_H
#define MGPU_BACKEND_CUDA_TILES_H

#include <stdint.h>

/* Scratch caps, in elements: the decoded weight tile and the converted
 * activations (bf16 or f32). 8 Mi bf16 elements is 16 MiB; 64 Mi is 128
 * MiB, enough for FLUX's widest linear at 1024x1024 (4608 x 12288) in one
 * piece. */
enum {
    MGPU_CUDA_W_TILE_ELEMS = 8 << 20,
    MGPU_CUDA_X_TILE_ELEMS = 64 << 20,
    MGPU_CUDA_TILE_ALIGN = 64, /* rows per tile are a multiple of this */
};

/* Rows of `width` elements that fit `cap`, a multiple of MGPU_CUDA_TILE_ALIGN
 * (at least that many, even when one aligned group alone exceeds the cap),
 * and no more than `total`. */
static inline int64_t mgpu_cuda_tile_rows(int64_t width, int64_t total, int64_t cap)
{
    if (total <= 0)
        return 0;
    int64_t rows = width > 0 ? cap / width : total;
    rows = rows / MGPU_CUDA_TILE_ALIGN * MGPU_CUDA_TILE_ALIGN;
    if (rows < MGPU_CUDA_TILE_ALIGN)
        rows = MGPU_CUDA_TILE_ALIGN;
    return rows < total ? rows : total;
}

/* The tiling of y[rows][out] = x[rows][in] W^T: weight tiles of w_rows
 * output rows, activation chunks of x_rows rows. */
typedef struct mgpu_cuda_linear_tiles {
    int64_t w_rows, x_rows;
} mgpu_cuda_linear_tiles;

static inline mgpu_cuda_linear_tiles mgpu_cuda_linear_plan(int64_t rows, int64_t in, int64_t out)
{
    mgpu_cuda_linear_tiles t;
    t.w_rows = mgpu_cuda_tile_rows(in, out, MGPU_CUDA_W_TILE_ELEMS);
    t.x_rows = mgpu_cuda_tile_rows(in, rows, MGPU_CUDA_X_TILE_ELEMS);
    return t;
}

/* conv2d as Y[c_out][P] = W[c_out][K] Col[K][P], K = c_in * kh * kw, P the
 * output pixels: the im2col matrix is built for bands of band pixels, the
 * weight decoded w_rows output channels at a time. */
typedef struct mgpu_cuda_conv_tiles {
    int64_t band, w_rows;
} mgpu_cuda_conv_tiles;

static inline mgpu_cuda_conv_tiles mgpu_cuda_conv_plan(int64_t k, int64_t pixels, int64_t c_out)
{
    mgpu_cuda_conv_tiles t;
    t.band = mgpu_cuda_tile_rows(k, pixels, MGPU_CUDA_X_TILE_ELEMS);
    t.w_rows = mgpu_cuda_tile_rows(k, c_out, MGPU_CUDA_W_TILE_ELEMS);
    return t;
}

#endif
