/* The FLUX autoencoder (src/models/vae.c) on the tiny synthetic vae-flux
 * (ch 32, mult 1,2,4,4, 2 res blocks, z 16) against an independent
 * double-precision reference (vae_reference.c): decode and encode in F32,
 * BF16 and as a prefixed F16 GGUF, the same bits for 1 and 3 threads;
 * tiled decoding (a tile covering the latent is the untiled decode bit for
 * bit; tiles match the reference decoding the same tiles and blending them
 * as docs/vae.md describes; a constant field is blended exactly; tiles stay
 * near the untiled decode); the memory a decode allocates against
 * mgpu_vae_decode_bytes; block bracketing of weight access; and the
 * errors (missing and misshapen tensors, not a VAE, an SD VAE, a
 * decoder-only file encoding, bad sizes and tilings). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "exec/source.h"
#include "mgpu/model.h"
#include "mgpu/safetensors.h"
#include "models/vae.h"
#include "models/vae_reference.h"
#include "synth_write.h"
#include "test_models.h"
#include "test_random.h"
#include "test_util.h"

/* Max |real - ref| over max |ref|. Both sides decode the same stored
 * weights; the real pass runs in f32 through ~40 convolutions, group norms
 * and the attention, and the random network amplifies rounding: observed
 * 7.9e-7 to 2.7e-6 for whole decodes and encodes (every dtype here) and
 * 2.0e-6 to 7.2e-6 for tiled decodes against the reference decoding the
 * same tiles (tiles of 3 latent pixels normalise over few values), hence
 * 1e-5 and 2e-5. Mistakes land far above, measured by mutating the
 * reference: 16 groups instead of 32 gives 0.85, a missed swish 0.9, the
 * downsample padding top/left instead of bottom/right 0.99 (encode),
 * attention scaled by 1/C instead of 1/sqrt(C) 0.4 to 0.7. (GroupNorm eps
 * 1e-5 instead of 1e-6 moves it by under 2e-6 and goes unnoticed.) */
#define REL_TOLERANCE 1e-5
#define TILED_TOLERANCE 2e-5

static const vae_ref_config TINY = {4, {32, 64, 128, 128}, 2, 16, 3, 0.3611, 0.1159};

static float *random_floats(int64_t n, double lo, double hi)
{
    float *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = rng_float(lo, hi);
    return v;
}

static mgpu_backend *cpu(int threads)
{
    mgpu_backend *be = NULL;
    mgpu_error err = {0};
    if (mgpu_backend_cpu_create(threads, &be, &err) != MGPU_OK)
        fail_msg("cpu backend: %s", err.message);
    return be;
}

static mgpu_vae *load_ok(const mgpu_model *m)
{
    mgpu_vae *v = NULL;
    mgpu_error err = {0};
    if (mgpu_vae_load(m, 0, &v, &err) != MGPU_OK)
        fail_msg("load: %s", err.message);
    return v;
}

static double rel_error(const float *got, const double *ref, int64_t n)
{
    double diff = 0.0, scale = 0.0;
    for (int64_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs(got[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    assert_true(scale > 0.0);
    return diff / scale;
}

static void decode_ok(const mgpu_vae *v, mgpu_backend *be, const mgpu_tensor_source *src,
                      const float *z, int64_t h, int64_t w, const mgpu_vae_tiling *t, float *img)
{
    mgpu_error err = {0};
    if (mgpu_vae_decode(v, be, src, z, h, w, t, img, &err) != MGPU_OK)
        fail_msg("decode: %s", err.message);
}

/* Decode and encode one checkpoint against the reference, with 1 and 3
 * threads. */
static void check_model(const char *label, const char *path, int64_t h, int64_t w)
{
    mgpu_model *m = open_ok(path);
    mgpu_vae *v = load_ok(m);
    const mgpu_vae_config *c = mgpu_vae_get_config(v);
    assert_int_equal(c->z_channels, 16);
    assert_int_equal(c->image_channels, 3);
    assert_int_equal(c->levels, 4);
    assert_int_equal(c->num_res_blocks, 2);
    assert_int_equal(c->downscale, 8);
    for (int l = 0; l < 4; l++)
        assert_int_equal(c->channels[l], TINY.channels[l]);
    assert_true(c->has_encoder);

    int64_t H = 8 * h, W = 8 * w, nz = 16 * h * w, ni = 3 * H * W;
    float *z = random_floats(nz, -1.5, 1.5), *img1 = malloc((size_t)ni * sizeof(float));
    float *img3 = malloc((size_t)ni * sizeof(float));
    double *ref = malloc((size_t)ni * sizeof(double));
    assert_true(img1 && img3 && ref);
    mgpu_tensor_source src = mgpu_resident_source();
    mgpu_backend *b1 = cpu(1), *b3 = cpu(3);
    decode_ok(v, b1, &src, z, h, w, NULL, img1);
    decode_ok(v, b3, &src, z, h, w, &(mgpu_vae_tiling){0, 0}, img3);
    assert_memory_equal(img1, img3, (size_t)ni * sizeof(float));
    char msg[256] = "";
    assert_int_equal(vae_reference_decode(m, 0, &TINY, z, h, w, ref, msg, sizeof msg), 0);
    double e = rel_error(img1, ref, ni);
    print_message("%s decode %lldx%lld: rel error %.2e\n", label, (long long)h, (long long)w, e);
    assert_true(e < REL_TOLERANCE);

    /* Encode: an image in [-1, 1]. */
    float *image = random_floats(ni, -1.0, 1.0), *z1 = malloc((size_t)nz * sizeof(float));
    float *z3 = malloc((size_t)nz * sizeof(float));
    double *zref = malloc((size_t)nz * sizeof(double));
    assert_true(z1 && z3 && zref);
    mgpu_error err = {0};
    assert_int_equal(mgpu_vae_encode(v, b1, &src, image, H, W, z1, &err), MGPU_OK);
    assert_int_equal(mgpu_vae_encode(v, b3, &src, image, H, W, z3, &err), MGPU_OK);
    assert_memory_equal(z1, z3, (size_t)nz * sizeof(float));
    assert_int_equal(vae_reference_encode(m, 0, &TINY, image, H, W, zref, msg, sizeof msg), 0);
    e = rel_error(z1, zref, nz);
    print_message("%s encode %lldx%lld: rel error %.2e\n", label, (long long)H, (long long)W, e);
    assert_true(e < REL_TOLERANCE);

    mgpu_backend_free(b1);
    mgpu_backend_free(b3);
    free(z);
    free(img1);
    free(img3);
    free(ref);
    free(image);
    free(z1);
    free(z3);
    free(zref);
    mgpu_vae_free(v);
    mgpu_model_close(m);
}

static void test_f32(void **state)
{
    (void)state;
    rng_seed(1);
    const char *path = test_path("vae-f32.safetensors");
    synth("vae-flux", 0, MGPU_DTYPE_F32, "", 21, path);
    check_model("F32", path, 3, 5);
    remove(path);
}

static void test_bf16(void **state)
{
    (void)state;
    rng_seed(2);
    const char *path = test_path("vae-bf16.safetensors");
    synth("vae-flux", 0, MGPU_DTYPE_BF16, "", 22, path);
    check_model("BF16", path, 4, 2);
    remove(path);
}

/* GGUF stores the convolutions as F16 (rows of 3 or 1 are not blocks) and
 * the names carry the "vae." prefix the model view strips. */
static void test_gguf_prefixed(void **state)
{
    (void)state;
    rng_seed(3);
    const char *path = test_path("vae-q8.gguf");
    synth("vae-flux", 1, MGPU_DTYPE_Q8_0, "vae.", 23, path);
    check_model("GGUF", path, 2, 3);
    remove(path);
}

/* ---- tiling ------------------------------------------------------------- */

/* Tile origins along n latent pixels, as docs/vae.md states them: every
 * tile - overlap, the last tile flush with the end. */
static int origins(int64_t n, int64_t tile, int64_t overlap, int64_t *o)
{
    if (tile >= n) {
        o[0] = 0;
        return 1;
    }
    int count = 0;
    int64_t p = 0;
    while (p + tile < n) {
        o[count++] = p;
        p += tile - overlap;
    }
    o[count++] = n - tile;
    return count;
}

/* The blend weight of image pixel g (one axis) in tile i: a linear ramp
 * from 0 to 1 across the overlap with each neighbour, sampled at pixel
 * centres, 1 elsewhere. */
static double ramp(const int64_t *o, int count, int i, int64_t tile, int64_t g)
{
    double lo = (double)(8 * o[i]), hi = (double)(8 * (o[i] + tile)), c = (double)g + 0.5;
    double wgt = 1.0;
    if (i > 0) {
        double end_prev = (double)(8 * (o[i - 1] + tile));
        if (c < end_prev)
            wgt = fmin(wgt, (c - lo) / (end_prev - lo));
    }
    if (i + 1 < count) {
        double start_next = (double)(8 * o[i + 1]);
        if (c > start_next)
            wgt = fmin(wgt, (hi - c) / (hi - start_next));
    }
    return wgt;
}

/* The reference decodes each tile; this blends them per docs/vae.md. */
static void reference_tiled(const mgpu_model *m, const float *z, int64_t h, int64_t w,
                            int64_t tile, int64_t overlap, double *out)
{
    int64_t oy[64], ox[64], th = tile < h ? tile : h, tw = tile < w ? tile : w;
    int ny = origins(h, tile, overlap, oy), nx = origins(w, tile, overlap, ox);
    int64_t H = 8 * h, W = 8 * w;
    double *num = calloc((size_t)(3 * H * W), sizeof *num);
    double *den = calloc((size_t)(H * W), sizeof *den);
    float *zt = malloc((size_t)(16 * th * tw) * sizeof *zt);
    double *t = malloc((size_t)(3 * 64 * th * tw) * sizeof *t);
    assert_true(num && den && zt && t);
    char msg[256] = "";
    for (int i = 0; i < ny; i++)
        for (int j = 0; j < nx; j++) {
            for (int64_t c = 0; c < 16; c++)
                for (int64_t y = 0; y < th; y++)
                    for (int64_t x = 0; x < tw; x++)
                        zt[(c * th + y) * tw + x] = z[(c * h + oy[i] + y) * w + ox[j] + x];
            assert_int_equal(vae_reference_decode(m, 0, &TINY, zt, th, tw, t, msg, sizeof msg), 0);
            for (int64_t y = 0; y < 8 * th; y++)
                for (int64_t x = 0; x < 8 * tw; x++) {
                    int64_t gy = 8 * oy[i] + y, gx = 8 * ox[j] + x;
                    double wgt = ramp(oy, ny, i, th, gy) * ramp(ox, nx, j, tw, gx);
                    den[gy * W + gx] += wgt;
                    for (int64_t c = 0; c < 3; c++)
                        num[(c * H + gy) * W + gx] += wgt * t[(c * 8 * th + y) * 8 * tw + x];
                }
        }
    for (int64_t c = 0; c < 3; c++)
        for (int64_t p = 0; p < H * W; p++)
            out[c * H * W + p] = num[c * H * W + p] / den[p];
    free(num);
    free(den);
    free(zt);
    free(t);
}

typedef struct tiny_vae {
    const char *path;
    mgpu_model *m;
    mgpu_vae *v;
} tiny_vae;

static tiny_vae tiny_open(const char *name, uint64_t seed)
{
    tiny_vae t = {test_path(name), NULL, NULL};
    synth("vae-flux", 0, MGPU_DTYPE_F32, "", seed, t.path);
    t.m = open_ok(t.path);
    t.v = load_ok(t.m);
    return t;
}

static void tiny_close(tiny_vae *t)
{
    mgpu_vae_free(t->v);
    mgpu_model_close(t->m);
    remove(t->path);
}

static void test_tiling(void **state)
{
    (void)state;
    rng_seed(4);
    tiny_vae t = tiny_open("vae-tiles.safetensors", 24);
    mgpu_tensor_source src = mgpu_resident_source();
    mgpu_backend *be = cpu(2);
    const int64_t h = 5, w = 7, n = 3 * 40 * 56;
    float *z = random_floats(16 * h * w, -1.5, 1.5);
    float *whole = malloc(n * sizeof(float)), *tiled = malloc(n * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    assert_true(whole && tiled && ref);
    decode_ok(t.v, be, &src, z, h, w, NULL, whole);
    float *z2 = random_floats(16 * h * w, -1.5, 1.5), *other = malloc(n * sizeof(float));
    assert_non_null(other);
    decode_ok(t.v, be, &src, z2, h, w, NULL, other);

    /* A tile covering the latent is the untiled decode, bit for bit. */
    decode_ok(t.v, be, &src, z, h, w, &(mgpu_vae_tiling){7, 3}, tiled);
    assert_memory_equal(whole, tiled, n * sizeof(float));
    decode_ok(t.v, be, &src, z, h, w, &(mgpu_vae_tiling){100, 0}, tiled);
    assert_memory_equal(whole, tiled, n * sizeof(float));

    /* Tiles, in both axes and one, with and without overlap: the
     * reference decoding the same tiles, blended independently. */
    static const int64_t cases[][2] = {{3, 1}, {4, 2}, {6, 0}, {3, 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mgpu_vae_tiling tl = {cases[i][0], cases[i][1]};
        decode_ok(t.v, be, &src, z, h, w, &tl, tiled);
        reference_tiled(t.m, z, h, w, tl.tile, tl.overlap, ref);
        double e = rel_error(tiled, ref, n);
        /* For information, how far tiles land from the whole decode: this
         * random model's attention is global and its receptive field wider
         * than the tiles, so about as far as an unrelated latent's.
         * test_tiling_local checks closeness on a local model. */
        double d2 = 0.0, o2 = 0.0, u2 = 0.0;
        for (int64_t k = 0; k < n; k++) {
            d2 += (tiled[k] - whole[k]) * (tiled[k] - whole[k]);
            o2 += (other[k] - whole[k]) * (other[k] - whole[k]);
            u2 += whole[k] * whole[k];
        }
        print_message("tile %lld overlap %lld: vs tiled reference %.2e; rms vs untiled %.3f, "
                      "unrelated latent %.3f\n",
                      (long long)tl.tile, (long long)tl.overlap, e, sqrt(d2 / u2), sqrt(o2 / u2));
        assert_true(e < TILED_TOLERANCE);
    }
    mgpu_backend_free(be);
    free(z);
    free(z2);
    free(other);
    free(whole);
    free(tiled);
    free(ref);
    tiny_close(&t);
}

/* ---- a tensor source that watches and substitutes ------------------------ */

typedef struct watch {
    const mgpu_model *m;
    mgpu_tensor_source inner;
    int entered, enters, violations, data_calls;
    int subs; /* tensors whose data is replaced */
    const mgpu_model_tensor *sub[32];
    float *sub_data[32];
} watch;

/* Replaces tensor `name` (F32) by `scale` times its values, or by `fill`
 * everywhere when scale is 0. */
static float *substitute(watch *wt, const char *name, float scale, float fill)
{
    const mgpu_model_tensor *t = mgpu_model_find(wt->m, name);
    assert_non_null(t);
    assert_int_equal(t->info.dtype, MGPU_DTYPE_F32);
    assert_true(wt->subs < 32);
    float *d = malloc(t->info.n_elems * sizeof *d);
    assert_non_null(d);
    for (uint64_t i = 0; i < t->info.n_elems; i++)
        d[i] = scale != 0.0f ? scale * ((const float *)t->info.data)[i] : fill;
    wt->sub[wt->subs] = t;
    wt->sub_data[wt->subs++] = d;
    return d;
}

static void watch_free(watch *wt)
{
    for (int i = 0; i < wt->subs; i++)
        free(wt->sub_data[i]);
}

static mgpu_status watch_enter(void *ctx, int block, mgpu_error *err)
{
    watch *wt = ctx;
    if (wt->entered != -1)
        wt->violations++; /* nested */
    wt->entered = block;
    wt->enters++;
    return wt->inner.enter_block(wt->inner.context, block, err);
}

static void watch_leave(void *ctx, int block)
{
    watch *wt = ctx;
    if (wt->entered != block)
        wt->violations++;
    wt->entered = -1;
    wt->inner.leave_block(wt->inner.context, block);
}

static const void *watch_data(void *ctx, const mgpu_model_tensor *t, mgpu_error *err)
{
    watch *wt = ctx;
    int block = mgpu_model_module_at(wt->m, t->module)->block;
    if (block >= 0 && block != wt->entered)
        wt->violations++;
    wt->data_calls++;
    for (int i = 0; i < wt->subs; i++)
        if (t == wt->sub[i])
            return wt->sub_data[i];
    return wt->inner.data(wt->inner.context, t, err);
}

static mgpu_tensor_source watch_source(watch *wt)
{
    wt->inner = mgpu_resident_source();
    wt->entered = -1;
    return (mgpu_tensor_source){wt, watch_enter, watch_leave, watch_data, NULL};
}

/* Every block tensor is read between enter and leave of its block; the
 * decoder enters its 4 up blocks once per tile, the encoder its 4 down
 * blocks once. */
static void test_blocks(void **state)
{
    (void)state;
    rng_seed(5);
    tiny_vae t = tiny_open("vae-blocks.safetensors", 25);
    watch wt = {.m = t.m};
    mgpu_tensor_source src = watch_source(&wt);
    mgpu_backend *be = cpu(2);
    float *z = random_floats(16 * 3 * 4, -1, 1), *img = malloc(3 * 24 * 32 * sizeof(float));
    assert_non_null(img);
    decode_ok(t.v, be, &src, z, 3, 4, &(mgpu_vae_tiling){2, 1}, img); /* 2 x 3 tiles */
    assert_int_equal(wt.violations, 0);
    assert_int_equal(wt.enters, 4 * 6);
    assert_true(wt.data_calls > 0);
    wt.enters = 0;
    mgpu_error err = {0};
    assert_int_equal(mgpu_vae_encode(t.v, be, &src, img, 24, 32, z, &err), MGPU_OK);
    assert_int_equal(wt.violations, 0);
    assert_int_equal(wt.enters, 4);
    mgpu_backend_free(be);
    free(z);
    free(img);
    tiny_close(&t);
}

/* With conv_out's weight zeroed and its bias a constant per channel, every
 * tile is that constant; blending must give it back exactly. */
static void test_constant_blend(void **state)
{
    (void)state;
    rng_seed(6);
    tiny_vae t = tiny_open("vae-const.safetensors", 26);
    watch wt = {.m = t.m};
    mgpu_tensor_source src = watch_source(&wt);
    static const float consts[3] = {0.3f, -0.7f, 0.123456789f};
    substitute(&wt, "decoder.conv_out.weight", 0.0f, 0.0f);
    float *bias = substitute(&wt, "decoder.conv_out.bias", 0.0f, 0.0f);
    memcpy(bias, consts, sizeof consts);
    mgpu_backend *be = cpu(2);
    const int64_t h = 5, w = 9;
    float *z = random_floats(16 * h * w, -1.5, 1.5), *img = malloc(3 * 40 * 72 * sizeof(float));
    assert_non_null(img);
    static const int64_t cases[][2] = {{3, 1}, {4, 3}, {2, 0}, {6, 5}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        decode_ok(t.v, be, &src, z, h, w, &(mgpu_vae_tiling){cases[i][0], cases[i][1]}, img);
        for (int64_t c = 0; c < 3; c++)
            for (int64_t p = 0; p < 40 * 72; p++)
                if (img[c * 40 * 72 + p] != consts[c])
                    fail_msg("tile %lld overlap %lld: channel %lld pixel %lld is %.9g, not %.9g",
                             (long long)cases[i][0], (long long)cases[i][1], (long long)c,
                             (long long)p, img[c * 40 * 72 + p], consts[c]);
    }
    mgpu_backend_free(be);
    watch_free(&wt);
    free(z);
    free(img);
    tiny_close(&t);
}

/* How close tiles come to the whole decode where the model is local. The
 * random tiny model is not: its mid attention mixes every position and its
 * decoder's receptive field spans some 30 latent pixels (11 3x3 convs at
 * latent resolution alone), so tiles of it are about as far from the whole
 * decode as an unrelated latent's (test_tiling prints both). A trained
 * VAE's effective receptive field is a few latent pixels; to get one here,
 * the decoder's attention output (proj_out) is zeroed and every residual
 * branch (conv2) scaled by 0.01, leaving the main path's convolutions
 * (conv_in, the upsample convs, conv_out: a radius under 2 latent pixels).
 * What remains inexact is mostly GroupNorm, whose statistics are taken per
 * tile: on an i.i.d. latent they carry sampling noise of about 1/sqrt(the
 * tile's latent pixels), so the RMS difference falls with tile size:
 * observed 0.356 (tiles of 4, overlap 2), 0.444 (6, no overlap: seams
 * too), 0.122 (8, overlap 4) and 0.049 (12, overlap 6) on a 12 x 16
 * latent, against 0.69 for tiles of 4 with the residual branches intact
 * and 1.2 between unrelated latents. The bounds are about 1.4x those. */
static void test_tiling_local(void **state)
{
    (void)state;
    rng_seed(9);
    tiny_vae t = tiny_open("vae-local.safetensors", 33);
    watch wt = {.m = t.m};
    mgpu_tensor_source src = watch_source(&wt);
    substitute(&wt, "decoder.mid.attn_1.proj_out.weight", 0.0f, 0.0f);
    substitute(&wt, "decoder.mid.attn_1.proj_out.bias", 0.0f, 0.0f);
    char name[96];
    for (int r = 1; r <= 2; r++) {
        snprintf(name, sizeof name, "decoder.mid.block_%d.conv2.weight", r);
        substitute(&wt, name, 0.01f, 0.0f);
    }
    for (int l = 0; l < 4; l++)
        for (int b = 0; b < 3; b++) {
            snprintf(name, sizeof name, "decoder.up.%d.block.%d.conv2.weight", l, b);
            substitute(&wt, name, 0.01f, 0.0f);
        }
    mgpu_backend *be = cpu(2);
    const int64_t h = 12, w = 16, n = 3 * 96 * 128;
    float *z = random_floats(16 * h * w, -1.5, 1.5), *whole = malloc(n * sizeof(float));
    float *tiled = malloc(n * sizeof(float));
    assert_true(whole && tiled);
    decode_ok(t.v, be, &src, z, h, w, NULL, whole);
    static const struct {
        int64_t tile, overlap;
        double bound;
    } cases[] = {{4, 2, 0.5}, {6, 0, 0.62}, {8, 4, 0.17}, {12, 6, 0.07}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        decode_ok(t.v, be, &src, z, h, w, &(mgpu_vae_tiling){cases[i].tile, cases[i].overlap},
                  tiled);
        double d2 = 0.0, u2 = 0.0;
        for (int64_t k = 0; k < n; k++) {
            d2 += (tiled[k] - whole[k]) * (tiled[k] - whole[k]);
            u2 += whole[k] * whole[k];
        }
        print_message("local model, tile %lld overlap %lld: rms vs untiled %.3f\n",
                      (long long)cases[i].tile, (long long)cases[i].overlap, sqrt(d2 / u2));
        assert_true(sqrt(d2 / u2) < cases[i].bound);
    }
    mgpu_backend_free(be);
    watch_free(&wt);
    free(z);
    free(whole);
    free(tiled);
    tiny_close(&t);
}

/* ---- memory ------------------------------------------------------------- */

/* A CPU backend whose alloc and free count the bytes outstanding. */
static const mgpu_backend_ops *real_ops;
static size_t live_bytes, peak_bytes;
enum { MAX_LIVE = 64 };
static struct {
    void *p;
    size_t bytes;
} live[MAX_LIVE];

static mgpu_status count_alloc(mgpu_backend *be, size_t bytes, void **out, mgpu_error *err)
{
    mgpu_status s = real_ops->alloc(be, bytes, out, err);
    if (s != MGPU_OK)
        return s;
    int i = 0;
    while (i < MAX_LIVE && live[i].p)
        i++;
    assert_true(i < MAX_LIVE);
    live[i].p = *out;
    live[i].bytes = bytes;
    live_bytes += bytes;
    if (live_bytes > peak_bytes)
        peak_bytes = live_bytes;
    return MGPU_OK;
}

static void count_free(mgpu_backend *be, void *p)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i].p == p) {
            live_bytes -= live[i].bytes;
            live[i].p = NULL;
        }
    real_ops->free(be, p);
}

static void test_memory(void **state)
{
    (void)state;
    rng_seed(7);
    tiny_vae t = tiny_open("vae-memory.safetensors", 27);
    mgpu_backend *real = cpu(2);
    real_ops = real->ops;
    mgpu_backend_ops ops = *real->ops;
    ops.alloc = count_alloc;
    ops.free = count_free;
    mgpu_backend counted = *real;
    counted.ops = &ops;
    mgpu_tensor_source src = mgpu_resident_source();

    const int64_t h = 6, w = 10;
    float *z = random_floats(16 * h * w, -1, 1), *img = malloc(3 * 48 * 80 * sizeof(float));
    assert_non_null(img);
    /* Hand-counted for the tiny model: the largest activation is up.1's
     * upsampled 64 channels at 8h x 8w, three of them, plus q, k, v of
     * 128 channels at h x w. */
    uint64_t whole = mgpu_vae_decode_bytes(t.v, h, w, NULL);
    assert_int_equal(whole, (3 * 64 * 64 * h * w + 3 * 128 * h * w) * sizeof(float));
    peak_bytes = live_bytes = 0;
    decode_ok(t.v, &counted, &src, z, h, w, NULL, img);
    assert_int_equal(live_bytes, 0);
    assert_int_equal(peak_bytes, whole);

    /* Tiled: the bytes of one tile, whatever the latent's size. */
    mgpu_vae_tiling tl = {4, 1};
    uint64_t tile = mgpu_vae_decode_bytes(t.v, h, w, &tl);
    assert_int_equal(tile, mgpu_vae_decode_bytes(t.v, 4, 4, NULL));
    assert_int_equal(tile, mgpu_vae_decode_bytes(t.v, 4000, 9000, &tl));
    assert_true(tile < whole);
    peak_bytes = live_bytes = 0;
    decode_ok(t.v, &counted, &src, z, h, w, &tl, img);
    assert_int_equal(peak_bytes, tile);
    /* A tile covering one axis only is clipped to the latent. */
    assert_int_equal(mgpu_vae_decode_bytes(t.v, 3, 10, &tl),
                     mgpu_vae_decode_bytes(t.v, 3, 4, NULL));

    /* Encode: conv_in's 32 channels (and the first level) at H x W. */
    uint64_t enc = mgpu_vae_encode_bytes(t.v, 48, 80);
    assert_int_equal(enc, (3 * 32 * 48 * 80 + 3 * 128 * h * w) * sizeof(float));
    peak_bytes = live_bytes = 0;
    mgpu_error err = {0};
    assert_int_equal(mgpu_vae_encode(t.v, &counted, &src, img, 48, 80, z, &err), MGPU_OK);
    assert_int_equal(peak_bytes, enc);
    assert_int_equal(live_bytes, 0);

    /* Invalid sizes and tilings plan nothing. */
    assert_int_equal(mgpu_vae_decode_bytes(t.v, 0, 4, NULL), 0);
    assert_int_equal(mgpu_vae_decode_bytes(t.v, 4, 4, &(mgpu_vae_tiling){2, 2}), 0);
    assert_int_equal(mgpu_vae_encode_bytes(t.v, 44, 80), 0);

    mgpu_backend_free(real);
    free(z);
    free(img);
    tiny_close(&t);
}

/* ---- errors ------------------------------------------------------------- */

/* Copies the model at src to dst without tensors whose name starts with
 * `skip` (may be NULL), giving `reshape` (if not NULL) the 2-D shape
 * [shape[0], n / shape[0]]. */
static void copy_model(const char *src, const char *dst, const char *skip, const char *reshape)
{
    mgpu_model *m = open_ok(src);
    mgpu_error err = {0};
    mgpu_safetensors_writer *wr = NULL;
    assert_int_equal(mgpu_safetensors_writer_create(dst, &wr, &err), MGPU_OK);
    size_t n = mgpu_model_tensor_count(m);
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++) {
            const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
            if (skip && strncmp(t->name, skip, strlen(skip)) == 0)
                continue;
            if (pass == 1) {
                assert_int_equal(mgpu_safetensors_writer_write(wr, t->info.data, t->info.nbytes,
                                                               &err),
                                 MGPU_OK);
                continue;
            }
            uint64_t shape[MGPU_MAX_DIMS];
            int ndim = t->info.ndim;
            memcpy(shape, t->info.shape, sizeof shape);
            if (reshape && strcmp(t->name, reshape) == 0) {
                ndim = 2;
                shape[1] = t->info.n_elems / shape[0];
            }
            assert_int_equal(mgpu_safetensors_writer_add_tensor(wr, t->info.name, t->info.dtype,
                                                                ndim, shape, &err),
                             MGPU_OK);
        }
    assert_int_equal(mgpu_safetensors_writer_finish(wr, &err), MGPU_OK);
    mgpu_model_close(m);
}

static void load_fails(const char *path, const char *expect)
{
    mgpu_model *m = open_ok(path);
    mgpu_vae *v = NULL;
    mgpu_error err = {0};
    assert_int_not_equal(mgpu_vae_load(m, 0, &v, &err), MGPU_OK);
    assert_null(v);
    print_message("load error: %s\n", err.message);
    assert_non_null(strstr(err.message, expect));
    assert_null(strchr(err.message, '\n'));
    mgpu_model_close(m);
}

static void test_load_errors(void **state)
{
    (void)state;
    const char *full = test_path("vae-full.safetensors");
    const char *cut = test_path("vae-cut.safetensors");
    synth("vae-flux", 0, MGPU_DTYPE_F32, "", 28, full);

    copy_model(full, cut, "decoder.up.1.block.2.conv2.bias", NULL);
    load_fails(cut, "'decoder.up.1.block.2.conv2.bias'");
    copy_model(full, cut, "encoder.down.2.downsample.conv.weight", NULL);
    load_fails(cut, "'encoder.down.2.downsample.conv.weight'");
    copy_model(full, cut, NULL, "decoder.mid.attn_1.q.weight");
    load_fails(cut, "'decoder.mid.attn_1.q.weight' should have shape [128, 128, 1, 1]");
    copy_model(full, cut, NULL, "encoder.down.0.block.1.norm2.weight");
    load_fails(cut, "encoder.down.0.block.1.norm2.weight");

    const char *other = test_path("clip.safetensors");
    synth("clip-l", 0, MGPU_DTYPE_F32, "", 29, other);
    load_fails(other, "decoder.conv_in.weight");
    synth("vae-sd", 0, MGPU_DTYPE_F32, "", 30, other);
    load_fails(other, "post_quant_conv");
    remove(other);
    remove(full);
    remove(cut);
}

/* A decoder-only checkpoint decodes; encoding says why it cannot. */
static void test_decoder_only(void **state)
{
    (void)state;
    rng_seed(8);
    const char *full = test_path("vae-both.safetensors");
    const char *dec = test_path("vae-dec.safetensors");
    synth("vae-flux", 0, MGPU_DTYPE_F32, "", 31, full);
    copy_model(full, dec, "encoder.", NULL);
    tiny_vae both = {full, open_ok(full), NULL}, only = {dec, open_ok(dec), NULL};
    both.v = load_ok(both.m);
    only.v = load_ok(only.m);
    assert_false(mgpu_vae_get_config(only.v)->has_encoder);
    mgpu_tensor_source src = mgpu_resident_source();
    mgpu_backend *be = cpu(2);
    float *z = random_floats(16 * 2 * 2, -1, 1), *a = malloc(3 * 16 * 16 * sizeof(float));
    float *b = malloc(3 * 16 * 16 * sizeof(float));
    assert_true(a && b);
    decode_ok(both.v, be, &src, z, 2, 2, NULL, a);
    decode_ok(only.v, be, &src, z, 2, 2, NULL, b);
    assert_memory_equal(a, b, 3 * 16 * 16 * sizeof(float));
    mgpu_error err = {0};
    assert_int_equal(mgpu_vae_encode(only.v, be, &src, a, 16, 16, z, &err), MGPU_ERR_UNSUPPORTED);
    print_message("encode error: %s\n", err.message);
    assert_non_null(strstr(err.message, "no encoder"));
    mgpu_backend_free(be);
    free(z);
    free(a);
    free(b);
    tiny_close(&both);
    tiny_close(&only);
}

static void test_argument_errors(void **state)
{
    (void)state;
    tiny_vae t = tiny_open("vae-args.safetensors", 32);
    mgpu_tensor_source src = mgpu_resident_source();
    mgpu_backend *be = cpu(1);
    float z[16 * 4] = {0}, img[3 * 24 * 24] = {0};
    mgpu_error err = {0};
    assert_int_equal(mgpu_vae_encode(t.v, be, &src, img, 20, 24, z, &err), MGPU_ERR_ARGUMENT);
    print_message("encode error: %s\n", err.message);
    assert_non_null(strstr(err.message, "20x24"));
    assert_non_null(strstr(err.message, "multiple of 8"));
    assert_int_equal(mgpu_vae_decode(t.v, be, &src, z, 0, 2, NULL, img, &err), MGPU_ERR_ARGUMENT);
    print_message("decode error: %s\n", err.message);
    assert_int_equal(
        mgpu_vae_decode(t.v, be, &src, z, 2, 2, &(mgpu_vae_tiling){2, 2}, img, &err),
        MGPU_ERR_ARGUMENT);
    print_message("tiling error: %s\n", err.message);
    assert_non_null(strstr(err.message, "overlap"));
    assert_int_equal(
        mgpu_vae_decode(t.v, be, &src, z, 2, 2, &(mgpu_vae_tiling){-1, 0}, img, &err),
        MGPU_ERR_ARGUMENT);
    mgpu_model *m = t.m;
    mgpu_vae *v = NULL;
    assert_int_equal(mgpu_vae_load(m, 5, &v, &err), MGPU_ERR_ARGUMENT);
    mgpu_backend_free(be);
    tiny_close(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32),          cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_gguf_prefixed), cmocka_unit_test(test_tiling),
        cmocka_unit_test(test_blocks),       cmocka_unit_test(test_constant_blend),
        cmocka_unit_test(test_tiling_local),
        cmocka_unit_test(test_memory),       cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_decoder_only), cmocka_unit_test(test_argument_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
