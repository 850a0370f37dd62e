/* Tests of the GGUF block layouts in core/quant.c.
 *
 * The decoder is checked three ways: hand-built blocks whose values were
 * worked out by hand and written here as literals; random blocks compared
 * bit for bit with a reference decoder in this file, written differently
 * (every field is read from the block as a little-endian bit stream through
 * one get_bits helper, element by element, with its own f16 decoding); and
 * the public mgpu_dequantize entry point. The encoders are checked by
 * decoding what they write with that reference decoder against error bounds
 * derived from each type's layout, plus zero, constant and outlier blocks. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/quant.h"
#include "mgpu/dtype.h"

/* The reference must round exactly like ggml: no multiply-add contraction. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define MAX_BLOCK_ELEMS 256
#define MAX_BLOCK_BYTES 210

static const mgpu_dtype block_types[] = {
    MGPU_DTYPE_Q4_0, MGPU_DTYPE_Q4_1, MGPU_DTYPE_Q5_0, MGPU_DTYPE_Q5_1,
    MGPU_DTYPE_Q8_0, MGPU_DTYPE_Q2_K, MGPU_DTYPE_Q3_K, MGPU_DTYPE_Q4_K,
    MGPU_DTYPE_Q5_K, MGPU_DTYPE_Q6_K, MGPU_DTYPE_IQ4_NL, MGPU_DTYPE_IQ4_XS,
};
#define N_BLOCK_TYPES (sizeof block_types / sizeof block_types[0])

static const mgpu_dtype writable_types[] = {
    MGPU_DTYPE_Q8_0, MGPU_DTYPE_Q4_0, MGPU_DTYPE_Q4_K, MGPU_DTYPE_Q6_K,
};
#define N_WRITABLE (sizeof writable_types / sizeof writable_types[0])

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rng_next(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static float rng_uniform(void) /* [0, 1) */
{
    return (float)(rng_next() >> 40) * 0x1p-24f;
}

static float rng_normalish(void) /* mean 0, variance 1, bell-shaped */
{
    float s = 0.0f;
    for (int i = 0; i < 12; i++)
        s += rng_uniform();
    return s - 6.0f;
}

static uint32_t block_elems(mgpu_dtype t)
{
    return mgpu_dtype_get_info(t)->block_elems;
}

static uint32_t block_bytes(mgpu_dtype t)
{
    return mgpu_dtype_get_info(t)->block_bytes;
}

/* n bits (n <= 16) starting at bit `pos` of a byte string read as one
 * little-endian bit stream: bit k is bit k%8 of byte k/8. */
static unsigned get_bits(const uint8_t *blk, unsigned pos, unsigned n)
{
    unsigned v = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned bit = pos + i;
        v |= (unsigned)((blk[bit / 8] >> (bit % 8)) & 1u) << i;
    }
    return v;
}

/* f16 decoding written independently of convert.c; finite values only. */
static float ref_half(unsigned h)
{
    unsigned e = (h >> 10) & 31u, m = h & 1023u;
    float mag = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m + 1024u), (int)e - 25);
    return (h & 0x8000u) ? -mag : mag;
}

static float half_at(const uint8_t *blk, unsigned byte)
{
    return ref_half(get_bits(blk, 8 * byte, 16));
}

/* ggml kvalues_iq4nl */
static const int iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* ----------------------------------------------------- reference decoder */

/* Element e of one block, computed straight from the layout. The float
 * expressions follow ggml's dequantize_row_* association: the per-group
 * factor is formed first (d*sc, dmin*m) and then multiplied by the quant. */
static float ref_value(mgpu_dtype t, const uint8_t *b, unsigned e)
{
    switch (t) {
    case MGPU_DTYPE_Q4_0: {
        /* 16 bytes of nibbles at byte 2: element e is byte e%16, nibble e/16 */
        int q = (int)get_bits(b, 16 + 8 * (e % 16) + 4 * (e / 16), 4);
        return (float)(q - 8) * half_at(b, 0);
    }
    case MGPU_DTYPE_Q4_1: {
        int q = (int)get_bits(b, 32 + 8 * (e % 16) + 4 * (e / 16), 4);
        return (float)q * half_at(b, 0) + half_at(b, 2);
    }
    case MGPU_DTYPE_Q5_0: {
        int q = (int)(get_bits(b, 48 + 8 * (e % 16) + 4 * (e / 16), 4) | get_bits(b, 16 + e, 1) << 4);
        return (float)(q - 16) * half_at(b, 0);
    }
    case MGPU_DTYPE_Q5_1: {
        int q = (int)(get_bits(b, 64 + 8 * (e % 16) + 4 * (e / 16), 4) | get_bits(b, 32 + e, 1) << 4);
        return (float)q * half_at(b, 0) + half_at(b, 2);
    }
    case MGPU_DTYPE_Q8_0: {
        int q = (int)get_bits(b, 16 + 8 * e, 8);
        return (float)(q >= 128 ? q - 256 : q) * half_at(b, 0);
    }
    case MGPU_DTYPE_Q2_K: {
        /* scales[16] @0, qs[64] @16, d @80, dmin @82 */
        unsigned g = e / 16;
        int sc = (int)get_bits(b, 8 * g, 4), mn = (int)get_bits(b, 8 * g + 4, 4);
        int q = (int)get_bits(b, 8 * (16 + 32 * (e / 128) + e % 32) + 2 * ((e % 128) / 32), 2);
        float d = half_at(b, 80), dmin = half_at(b, 82);
        return d * (float)sc * (float)q - dmin * (float)mn;
    }
    case MGPU_DTYPE_Q3_K: {
        /* hmask[32] @0, qs[64] @32, scales[12] @96, d @108 */
        unsigned g = e / 16;
        int sc = (int)(get_bits(b, 8 * (96 + g % 8) + 4 * (g / 8), 4) |
                       get_bits(b, 8 * (104 + g % 4) + 2 * (g / 4), 2) << 4);
        int q = (int)get_bits(b, 8 * (32 + 32 * (e / 128) + e % 32) + 2 * ((e % 128) / 32), 2);
        int high = (int)get_bits(b, 8 * (e % 32) + e / 32, 1);
        return half_at(b, 108) * (float)(sc - 32) * (float)(q - (high ? 0 : 4));
    }
    case MGPU_DTYPE_Q4_K:
    case MGPU_DTYPE_Q5_K: {
        /* d @0, dmin @2, scales[12] @4, [Q5_K: qh[32] @16,] qs @16 or @48 */
        unsigned j = e / 32;
        int sc, mn;
        if (j < 4) {
            sc = (int)get_bits(b, 8 * (4 + j), 6);
            mn = (int)get_bits(b, 8 * (8 + j), 6);
        } else {
            sc = (int)(get_bits(b, 8 * (12 + j - 4), 4) | get_bits(b, 8 * (4 + j - 4) + 6, 2) << 4);
            mn = (int)(get_bits(b, 8 * (12 + j - 4) + 4, 4) | get_bits(b, 8 * (8 + j - 4) + 6, 2) << 4);
        }
        unsigned qs = t == MGPU_DTYPE_Q4_K ? 16 : 48;
        int q = (int)get_bits(b, 8 * (qs + 32 * (e / 64) + e % 32) + 4 * ((e % 64) / 32), 4);
        if (t == MGPU_DTYPE_Q5_K)
            q += 16 * (int)get_bits(b, 8 * (16 + e % 32) + e / 32, 1);
        float d = half_at(b, 0), dmin = half_at(b, 2);
        return d * (float)sc * (float)q - dmin * (float)mn;
    }
    case MGPU_DTYPE_Q6_K: {
        /* ql[128] @0, qh[64] @128, int8 scales[16] @192, d @208 */
        unsigned h = e / 128, p = (e % 128) / 32, l = e % 32;
        int lo = (int)get_bits(b, 8 * (64 * h + 32 * (p % 2) + l) + 4 * (p / 2), 4);
        int hi = (int)get_bits(b, 8 * (128 + 32 * h + l) + 2 * p, 2);
        int sc = (int)get_bits(b, 8 * (192 + e / 16), 8);
        sc = sc >= 128 ? sc - 256 : sc;
        return half_at(b, 208) * (float)sc * (float)((lo | hi << 4) - 32);
    }
    case MGPU_DTYPE_IQ4_NL: {
        int q = (int)get_bits(b, 16 + 8 * (e % 16) + 4 * (e / 16), 4);
        return half_at(b, 0) * (float)iq4nl[q];
    }
    case MGPU_DTYPE_IQ4_XS: {
        /* d @0, scales_h u16 @2, scales_l[4] @4, qs[128] @8 */
        unsigned ib = e / 32;
        int ls = (int)(get_bits(b, 32 + 4 * ib, 4) | get_bits(b, 16 + 2 * ib, 2) << 4);
        int q = (int)get_bits(b, 8 * (8 + 16 * ib + e % 16) + 4 * ((e % 32) / 16), 4);
        return half_at(b, 0) * (float)(ls - 32) * (float)iq4nl[q];
    }
    default: fail_msg("no reference decoder for %s", mgpu_dtype_name(t));
    }
    return 0.0f;
}

static void ref_decode(mgpu_dtype t, const uint8_t *src, float *dst, size_t n_blocks)
{
    for (size_t i = 0; i < n_blocks; i++)
        for (unsigned e = 0; e < block_elems(t); e++)
            dst[i * block_elems(t) + e] = ref_value(t, src + i * block_bytes(t), e);
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Bit-exact comparison (tells -0 from +0). */
static void assert_same_floats(const char *what, const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (f32_bits(got[i]) != f32_bits(want[i]))
            fail_msg("%s: element %zu is %a (0x%08x), expected %a (0x%08x)", what, i, (double)got[i],
                     (unsigned)f32_bits(got[i]), (double)want[i], (unsigned)f32_bits(want[i]));
}

/* Decode one block with the library, and with the reference, and compare
 * both with the hand-written expectation. */
static void check_hand_block(mgpu_dtype t, const uint8_t *blk, const float *want)
{
    float got[MAX_BLOCK_ELEMS], ref[MAX_BLOCK_ELEMS];
    mgpu_dequantize_blocks(t, blk, got, 1);
    ref_decode(t, blk, ref, 1);
    assert_same_floats("reference decoder vs hand values", ref, want, block_elems(t));
    assert_same_floats(mgpu_dtype_name(t), got, want, block_elems(t));
}

static void fill_floats(float *v, size_t n, float x)
{
    for (size_t i = 0; i < n; i++)
        v[i] = x;
}

/* ---------------------------------------------- hand-computed blocks */

static void test_hand_q4_0(void **state)
{
    (void)state;
    uint8_t b[18];
    b[0] = 0x00, b[1] = 0x38; /* d = 0.5 */
    memset(b + 2, 0x88, 16);  /* q = 8 -> 0 */
    b[2 + 0] = 0x1F;
    b[2 + 5] = 0x80;
    b[2 + 15] = 0xF0;
    float w[32];
    fill_floats(w, 32, 0.0f);
    w[0] = 3.5f;   /* (15-8)*0.5 */
    w[16] = -3.5f; /* (1-8)*0.5 */
    w[5] = -4.0f;
    w[21] = 0.0f;
    w[15] = -4.0f;
    w[31] = 3.5f;
    check_hand_block(MGPU_DTYPE_Q4_0, b, w);
}

static void test_hand_q4_1(void **state)
{
    (void)state;
    uint8_t b[20] = {0x00, 0x3C, 0x00, 0xC0}; /* d = 1, m = -2 */
    memset(b + 4, 0x22, 16);                  /* 2*1 - 2 = 0 */
    b[4 + 3] = 0xF0;
    b[4 + 15] = 0x71;
    float w[32];
    fill_floats(w, 32, 0.0f);
    w[3] = -2.0f;
    w[19] = 13.0f;
    w[15] = -1.0f;
    w[31] = 5.0f;
    check_hand_block(MGPU_DTYPE_Q4_1, b, w);
}

static void test_hand_q5_0(void **state)
{
    (void)state;
    /* d = 2; qh = 0x80010001: fifth bit set for elements 0, 16, 31 */
    uint8_t b[22] = {0x00, 0x40, 0x01, 0x00, 0x01, 0x80};
    b[6 + 0] = 0x0F;
    b[6 + 15] = 0xF3;
    float w[32];
    fill_floats(w, 32, -32.0f); /* (0-16)*2 */
    w[0] = 30.0f;               /* (31-16)*2 */
    w[16] = 0.0f;               /* (16-16)*2 */
    w[15] = -26.0f;             /* (3-16)*2 */
    w[31] = 30.0f;
    check_hand_block(MGPU_DTYPE_Q5_0, b, w);
}

static void test_hand_q5_1(void **state)
{
    (void)state;
    /* d = 0.5, m = 1, qh bit 20 */
    uint8_t b[24] = {0x00, 0x38, 0x00, 0x3C, 0x00, 0x00, 0x10, 0x00};
    b[8 + 4] = 0xA5;
    float w[32];
    fill_floats(w, 32, 1.0f);
    w[4] = 3.5f;   /* 5*0.5 + 1 */
    w[20] = 14.0f; /* 26*0.5 + 1 */
    check_hand_block(MGPU_DTYPE_Q5_1, b, w);
}

static void test_hand_q8_0(void **state)
{
    (void)state;
    uint8_t b[34] = {0x00, 0x34, 0x7F, 0x80, 0xFF}; /* d = 0.25 */
    b[2 + 31] = 0x04;
    float w[32];
    fill_floats(w, 32, 0.0f);
    w[0] = 31.75f;
    w[1] = -32.0f;
    w[2] = -0.25f;
    w[31] = 1.0f;
    check_hand_block(MGPU_DTYPE_Q8_0, b, w);
}

static void test_hand_q2_k(void **state)
{
    (void)state;
    uint8_t b[84] = {0};
    b[0] = 0x21;  /* group 0: scale 1, min 2 */
    b[5] = 0x13;  /* group 5: scale 3, min 1 */
    b[15] = 0xF2; /* group 15: scale 2, min 15 */
    b[16 + 0] = 0x02;  /* element 0 (shift 0) = 2 */
    b[16 + 16] = 0x30; /* element 80: group 5 reads qs[16..31] at shift 4 */
    b[16 + 63] = 0xC0; /* element 255: group 15 reads qs[48..63] at shift 6 */
    b[80] = 0x00, b[81] = 0x3C; /* d = 1 */
    b[82] = 0x00, b[83] = 0x38; /* dmin = 0.5 */
    float w[256];
    fill_floats(w, 256, 0.0f);
    fill_floats(w + 0, 16, -1.0f); /* 1*0 - 0.5*2 */
    w[0] = 1.0f;
    fill_floats(w + 80, 16, -0.5f); /* 3*0 - 0.5 */
    w[80] = 8.5f;                   /* 3*3 - 0.5 */
    fill_floats(w + 240, 16, -7.5f);
    w[255] = -1.5f; /* 2*3 - 7.5 */
    check_hand_block(MGPU_DTYPE_Q2_K, b, w);
}

static void test_hand_q3_k(void **state)
{
    (void)state;
    uint8_t b[110] = {0};
    memset(b, 0xFF, 32); /* high bits set: no -4 */
    b[1] = 0xFE;         /* element 1: bit 0 of hmask[1] clear */
    b[17] = 0xEF;        /* element 145: bit 4 of hmask[17] clear */
    b[32 + 0] = 0x03;    /* element 0: q = 3 */
    b[32 + 48] = 0x02;   /* element 144: group 9 reads qs[48..63] at shift 0 */
    b[32 + 63] = 0x40;   /* element 255: group 15 reads qs[48..63] at shift 6 */
    /* six-bit scales: group 0 = 33, group 9 = 30, group 15 = 63, others 32 */
    const uint8_t sc[12] = {0x01, 0xE0, 0, 0, 0, 0, 0, 0xF0, 0xAA, 0x9A, 0xAA, 0xEA};
    memcpy(b + 96, sc, 12);
    b[108] = 0x00, b[109] = 0x3C; /* d = 1 */
    float w[256];
    fill_floats(w, 256, 0.0f);
    w[0] = 3.0f;
    w[1] = -4.0f;
    fill_floats(w + 144, 16, -0.0f); /* (1*-2) * 0 */
    w[144] = -4.0f;                  /* -2 * 2 */
    w[145] = 8.0f;                   /* -2 * (0-4) */
    w[255] = 31.0f;
    check_hand_block(MGPU_DTYPE_Q3_K, b, w);
}

static void test_hand_q4_k(void **state)
{
    (void)state;
    uint8_t b[144] = {0x00, 0x3C, 0x00, 0x38}; /* d = 1, dmin = 0.5 */
    /* sub-block 0: sc 1, m 2; sub-block 5: sc 37, m 50 (split fields) */
    b[4 + 0] = 0x01;
    b[4 + 1] = 0x80; /* top bits of sc5 = 2 */
    b[4 + 4] = 0x02;
    b[4 + 5] = 0xC0; /* top bits of m5 = 3 */
    b[4 + 9] = 0x25; /* low nibbles: sc5 = 5, m5 = 2 */
    b[16 + 0] = 0x0F;
    b[16 + 64] = 0x30; /* element 160 = high nibble of qs[64] */
    b[16 + 95] = 0xF0; /* element 191 */
    float w[256];
    fill_floats(w, 256, 0.0f);
    fill_floats(w, 32, -1.0f); /* 1*0 - 0.5*2 */
    w[0] = 14.0f;
    fill_floats(w + 160, 32, -25.0f); /* 37*0 - 0.5*50 */
    w[160] = 86.0f;                   /* 37*3 - 25 */
    w[191] = 530.0f;                  /* 37*15 - 25 */
    check_hand_block(MGPU_DTYPE_Q4_K, b, w);
}

static void test_hand_q5_k(void **state)
{
    (void)state;
    uint8_t b[176] = {0x00, 0x3C, 0x00, 0x3C}; /* d = 1, dmin = 1 */
    b[4 + 2] = 0x40; /* top bits of sc6 = 1 -> sc6 = 16 */
    b[4 + 3] = 0x02; /* sc3 = 2 */
    b[4 + 7] = 0x01; /* m3 = 1 */
    b[16 + 0] = 0x08;  /* fifth bit of element 96 */
    b[16 + 31] = 0x40; /* fifth bit of element 223 */
    b[48 + 32] = 0xF0;
    b[48 + 33] = 0x10;
    b[48 + 127] = 0x0A;
    float w[256];
    fill_floats(w, 256, 0.0f);
    fill_floats(w + 96, 32, -1.0f); /* 2*0 - 1 */
    w[96] = 61.0f;                  /* 2*31 - 1 */
    w[97] = 1.0f;                   /* 2*1 - 1 */
    w[223] = 416.0f;                /* 16*26 */
    check_hand_block(MGPU_DTYPE_Q5_K, b, w);
}

static void test_hand_q6_k(void **state)
{
    (void)state;
    uint8_t b[210] = {0};
    memset(b + 128, 0xAA, 64); /* high bits 2 -> q = 32 - 32 = 0 */
    b[0] = 0x0F, b[128 + 0] = 0xAB;   /* element 0: 63 - 32 = 31 */
    b[1] = 0x00, b[128 + 1] = 0xA8;   /* element 1: 0 - 32 */
    b[63] = 0x50, b[128 + 31] = 0xEA; /* element 127: 53 - 32 = 21 */
    b[80] = 0x70, b[128 + 48] = 0x9A; /* element 208: 23 - 32 = -9 */
    b[192 + 0] = 2;
    b[192 + 7] = 0xFF; /* -1 */
    b[192 + 13] = 4;
    b[208] = 0x00, b[209] = 0x38; /* d = 0.5 */
    float w[256];
    fill_floats(w, 256, 0.0f);
    w[0] = 31.0f;
    w[1] = -32.0f;
    fill_floats(w + 112, 16, -0.0f); /* (0.5*-1) * 0 */
    w[127] = -10.5f;
    w[208] = -18.0f;
    check_hand_block(MGPU_DTYPE_Q6_K, b, w);
}

static void test_hand_iq4_nl(void **state)
{
    (void)state;
    uint8_t b[18] = {0x00, 0x3C}; /* d = 1 */
    memset(b + 2, 0x88, 16);     /* level 8 = 1 */
    b[2 + 0] = 0xF0;
    b[2 + 9] = 0x7A;
    float w[32];
    fill_floats(w, 32, 1.0f);
    w[0] = -127.0f;
    w[16] = 113.0f;
    w[9] = 25.0f;
    w[25] = -10.0f;
    check_hand_block(MGPU_DTYPE_IQ4_NL, b, w);
}

static void test_hand_iq4_xs(void **state)
{
    (void)state;
    /* d = 0.5; scales 33 (dl 0.5) except sub-block 3 = 28 (dl -2) and
     * sub-block 7 = 63 (dl 15.5) */
    uint8_t b[136] = {0x00, 0x38, 0x6A, 0xEA, 0x11, 0xC1, 0x11, 0xF1};
    memset(b + 8, 0x88, 128);
    b[8 + 48] = 0x0F;
    b[8 + 127] = 0x9D;
    float w[256];
    fill_floats(w, 256, 0.5f);
    fill_floats(w + 96, 32, -2.0f);
    w[96] = -226.0f; /* -2 * 113 */
    w[112] = 254.0f; /* -2 * -127 */
    fill_floats(w + 224, 32, 15.5f);
    w[239] = 1069.5f; /* 15.5 * 69 */
    w[255] = 201.5f;  /* 15.5 * 13 */
    check_hand_block(MGPU_DTYPE_IQ4_XS, b, w);
}

/* ------------------------------------------------------ random blocks */

/* Byte offsets of the f16 fields of each layout. */
static int f16_fields(mgpu_dtype t, unsigned off[2])
{
    switch (t) {
    case MGPU_DTYPE_Q4_1:
    case MGPU_DTYPE_Q5_1:
    case MGPU_DTYPE_Q4_K:
    case MGPU_DTYPE_Q5_K: off[0] = 0, off[1] = 2; return 2;
    case MGPU_DTYPE_Q2_K: off[0] = 80, off[1] = 82; return 2;
    case MGPU_DTYPE_Q3_K: off[0] = 108; return 1;
    case MGPU_DTYPE_Q6_K: off[0] = 208; return 1;
    default: off[0] = 0; return 1;
    }
}

/* Random bytes everywhere, then finite f16 values (any sign, normals and
 * subnormals) in the scale fields so results can be compared bit for bit. */
static void random_blocks(mgpu_dtype t, uint8_t *buf, size_t n_blocks)
{
    for (size_t i = 0; i < n_blocks * block_bytes(t); i++)
        buf[i] = (uint8_t)rng_next();
    unsigned off[2];
    int n = f16_fields(t, off);
    for (size_t i = 0; i < n_blocks; i++)
        for (int k = 0; k < n; k++) {
            uint8_t *p = buf + i * block_bytes(t) + off[k];
            if ((p[1] & 0x7C) == 0x7C) /* inf or NaN: drop an exponent bit */
                p[1] &= (uint8_t)~0x40;
        }
}

static void test_random_blocks_bit_exact(void **state)
{
    (void)state;
    enum { NB = 97 };
    for (size_t ti = 0; ti < N_BLOCK_TYPES; ti++) {
        mgpu_dtype t = block_types[ti];
        size_t nbytes = NB * block_bytes(t), n = NB * block_elems(t);
        /* one spare byte in front so the blocks can start unaligned */
        uint8_t *raw = malloc(nbytes + 1);
        float *got = malloc((n + 1) * sizeof *got);
        float *want = malloc(n * sizeof *want);
        assert_non_null(raw);
        assert_non_null(got);
        assert_non_null(want);
        for (int round = 0; round < 4; round++) {
            uint8_t *src = raw + (round & 1); /* odd address on odd rounds */
            random_blocks(t, src, NB);
            ref_decode(t, src, want, NB);
            got[n] = 12345.0f; /* must not be written */
            mgpu_dequantize_blocks(t, src, got, NB);
            assert_same_floats(mgpu_dtype_name(t), got, want, n);
            assert_true(got[n] == 12345.0f);
            fill_floats(got, n, 0.0f);
            assert_int_equal(mgpu_dequantize(t, src, got, n), MGPU_OK);
            assert_same_floats(mgpu_dtype_name(t), got, want, n);
        }
        free(raw);
        free(got);
        free(want);
    }
}

/* Blocks whose scale fields are NaN or infinite decode to non-finite values
 * without faulting; only memory safety is asserted (ggml gives no meaning). */
static void test_nonfinite_scales_are_safe(void **state)
{
    (void)state;
    for (size_t ti = 0; ti < N_BLOCK_TYPES; ti++) {
        mgpu_dtype t = block_types[ti];
        uint8_t b[MAX_BLOCK_BYTES];
        float y[MAX_BLOCK_ELEMS];
        random_blocks(t, b, 1);
        unsigned off[2];
        int n = f16_fields(t, off);
        for (int k = 0; k < n; k++)
            b[off[k]] = 0x00, b[off[k] + 1] = 0x7E; /* NaN */
        mgpu_dequantize_blocks(t, b, y, 1);
    }
}

/* ---------------------------------------------------------- encoders */

/* An upper bound on the f16 a writer stores for a scale v >= 0 when it
 * rounds up: one f16 ulp above for normals, 2^-24 for subnormals. */
static float f16_up(float v)
{
    return v * (1.0f + 0x1p-10f) + 0x1p-24f;
}

static float block_amax(const float *x, size_t n)
{
    float a = 0.0f;
    for (size_t i = 0; i < n; i++)
        a = fmaxf(a, fabsf(x[i]));
    return a;
}

/* The worst error each encoder may leave in every value of a block; also
 * checks the type-specific mean (rms) bound where the max bound is loose. */
static void check_block_error(mgpu_dtype t, const float *x, const float *y, const char *what)
{
    const size_t n = block_elems(t);
    const float amax = block_amax(x, n);
    const float slack = amax * 1e-6f + 1e-30f; /* float rounding in the decode */
    float bound[MAX_BLOCK_ELEMS];
    float rms_bound = INFINITY;
    switch (t) {
    case MGPU_DTYPE_Q8_0:
        /* d = amax/127 (rounded up), values within half a step */
        fill_floats(bound, n, f16_up(amax / 127.0f) / 2.0f + slack);
        break;
    case MGPU_DTYPE_Q4_0:
        /* either the symmetric step amax/7.5 (half-step error) or ggml's
         * amax/8 with the opposite extreme clipped by one step */
        fill_floats(bound, n, f16_up(amax / 8.0f) + slack);
        rms_bound = f16_up(amax / 7.5f) / 2.0f + slack;
        break;
    case MGPU_DTYPE_Q4_K: {
        /* per sub-block j: range r_j = max(0, max x) - min(0, min x); the
         * stored min may sit one dmin below, the 6-bit scale one d above */
        float off = 0.0f, r[8];
        for (int j = 0; j < 8; j++) {
            float lo = 0.0f, hi = 0.0f;
            for (int l = 0; l < 32; l++) {
                lo = fminf(lo, x[32 * j + l]);
                hi = fmaxf(hi, x[32 * j + l]);
            }
            off = fmaxf(off, -lo);
            r[j] = hi - lo;
        }
        const float dmin = f16_up(off / 63.0f);
        float span[8], top = 0.0f;
        for (int j = 0; j < 8; j++) {
            span[j] = (r[j] + dmin) / 15.0f;
            top = fmaxf(top, span[j]);
        }
        const float d = f16_up(top / 63.0f);
        for (int j = 0; j < 8; j++)
            fill_floats(bound + 32 * j, 32, (span[j] + d) / 2.0f + slack);
        break;
    }
    case MGPU_DTYPE_Q6_K: {
        /* per group g with largest magnitude a_g; d <= top/127 rounded up,
         * top = max a_g/31.5. Symmetric candidate: step a_g/31.5 widened by
         * at most d, half-step error. Signed candidate: step within d/2 of
         * a_g/32; at worst it clips the extreme by 16d and the opposite
         * extreme by one step more. The encoder keeps the candidate with the
         * smaller squared error, so the rms is within the symmetric bound. */
        float top = 0.0f, a[16];
        for (int g = 0; g < 16; g++) {
            a[g] = block_amax(x + 16 * g, 16);
            top = fmaxf(top, a[g] / 31.5f);
        }
        const float d = f16_up(top / 127.0f);
        for (int g = 0; g < 16; g++)
            fill_floats(bound + 16 * g, 16, a[g] / 32.0f + 17.0f * d + slack);
        rms_bound = (top + d) / 2.0f + slack;
        break;
    }
    default: fail_msg("no bound for %s", mgpu_dtype_name(t));
    }
    double se = 0.0;
    for (size_t i = 0; i < n; i++) {
        float err = fabsf(y[i] - x[i]);
        if (!(err <= bound[i]))
            fail_msg("%s %s: value %zu is %g, input %g, error %g > bound %g", mgpu_dtype_name(t), what, i,
                     (double)y[i], (double)x[i], (double)err, (double)bound[i]);
        se += (double)err * err;
    }
    double rms = sqrt(se / (double)n);
    if (!(rms <= rms_bound))
        fail_msg("%s %s: rms error %g > bound %g", mgpu_dtype_name(t), what, rms, (double)rms_bound);
}

/* Encode, then decode with both decoders (they must agree exactly, which
 * checks the encoder writes ggml's layout), then check each block's error. */
static void roundtrip(mgpu_dtype t, const float *x, size_t n_blocks, const char *what)
{
    const size_t n = n_blocks * block_elems(t);
    uint8_t *q = malloc(n_blocks * block_bytes(t));
    float *y = malloc(n * sizeof *y), *r = malloc(n * sizeof *r);
    assert_non_null(q);
    assert_non_null(y);
    assert_non_null(r);
    assert_int_equal(mgpu_quantize_blocks(t, x, q, n_blocks), MGPU_OK);
    mgpu_dequantize_blocks(t, q, y, n_blocks);
    ref_decode(t, q, r, n_blocks);
    assert_same_floats(what, y, r, n);
    for (size_t i = 0; i < n_blocks; i++)
        check_block_error(t, x + i * block_elems(t), r + i * block_elems(t), what);
    free(q);
    free(y);
    free(r);
}

static void test_quantize_random(void **state)
{
    (void)state;
    enum { NB = 64 };
    for (size_t ti = 0; ti < N_WRITABLE; ti++) {
        mgpu_dtype t = writable_types[ti];
        const size_t be = block_elems(t), n = NB * be;
        float *x = malloc(n * sizeof *x);
        assert_non_null(x);
        for (size_t b = 0; b < NB; b++) {
            /* per-block magnitude from 1e-6 (f16-subnormal scales) to 1e3,
             * and a per-block offset so K-quant mins get exercised */
            float mag = powf(10.0f, -6.0f + 9.0f * rng_uniform());
            float shift = (b % 3 == 0) ? 0.0f : mag * (2.0f * rng_uniform() - 1.0f) * 2.0f;
            for (size_t i = 0; i < be; i++)
                x[b * be + i] = mag * rng_normalish() + shift;
        }
        roundtrip(t, x, NB, "random");
        /* uniform values, and all-positive / all-negative blocks */
        for (size_t i = 0; i < n; i++)
            x[i] = 2.0f * rng_uniform() - 1.0f;
        roundtrip(t, x, NB, "uniform");
        for (size_t i = 0; i < n; i++)
            x[i] = ((i / be) % 2 ? -1.0f : 1.0f) * (0.5f + rng_uniform());
        roundtrip(t, x, NB, "one-signed");
        free(x);
    }
}

static void test_quantize_zero_block(void **state)
{
    (void)state;
    for (size_t ti = 0; ti < N_WRITABLE; ti++) {
        mgpu_dtype t = writable_types[ti];
        float x[MAX_BLOCK_ELEMS] = {0}, y[MAX_BLOCK_ELEMS];
        uint8_t q[MAX_BLOCK_BYTES];
        assert_int_equal(mgpu_quantize_blocks(t, x, q, 1), MGPU_OK);
        ref_decode(t, q, y, 1);
        for (uint32_t i = 0; i < block_elems(t); i++)
            assert_true(y[i] == 0.0f);
    }
}

/* The largest integer a block's f16 scale is multiplied by when decoding:
 * an error of one f16 subnormal step (2^-24) in the scale moves a value by
 * up to this many steps. */
static float scale_multiplier(mgpu_dtype t)
{
    switch (t) {
    case MGPU_DTYPE_Q8_0: return 127.0f;
    case MGPU_DTYPE_Q4_0: return 8.0f;
    case MGPU_DTYPE_Q4_K: return 63.0f * 15.0f;
    case MGPU_DTYPE_Q6_K: return 127.0f * 32.0f;
    default: return 0.0f;
    }
}

/* A constant block is reproduced up to the f16 rounding of its scale: about
 * 2^-10 relative while the scale is a normal f16. Tiny constants push the
 * scale into f16 subnormals, whose absolute step 2^-24 bounds the error. */
static void test_quantize_constant_block(void **state)
{
    (void)state;
    const float consts[] = {0.7f, -3.25f, 100.0f, -4096.0f, 1e-3f, -1e-3f, 1e-5f};
    for (size_t ti = 0; ti < N_WRITABLE; ti++) {
        mgpu_dtype t = writable_types[ti];
        for (size_t ci = 0; ci < sizeof consts / sizeof consts[0]; ci++) {
            float c = consts[ci], x[MAX_BLOCK_ELEMS], y[MAX_BLOCK_ELEMS];
            uint8_t q[MAX_BLOCK_BYTES];
            const bool tiny = fabsf(c) < 0.1f;
            const float tol = fabsf(c) * 0x1p-9f + (tiny ? scale_multiplier(t) * 0x1p-24f : 0.0f);
            fill_floats(x, block_elems(t), c);
            assert_int_equal(mgpu_quantize_blocks(t, x, q, 1), MGPU_OK);
            ref_decode(t, q, y, 1);
            for (uint32_t i = 0; i < block_elems(t); i++)
                if (!(fabsf(y[i] - c) <= tol))
                    fail_msg("%s constant %g: value %u is %g", mgpu_dtype_name(t), (double)c, i,
                             (double)y[i]);
        }
    }
}

/* One huge value among small ones: it is kept accurately, the small values
 * in its block stay within the (now coarse) bound, and blocks on either side
 * keep their own fine scale. */
static void test_quantize_outlier(void **state)
{
    (void)state;
    for (size_t ti = 0; ti < N_WRITABLE; ti++) {
        mgpu_dtype t = writable_types[ti];
        const size_t be = block_elems(t), n = 3 * be;
        float x[3 * MAX_BLOCK_ELEMS], y[3 * MAX_BLOCK_ELEMS];
        uint8_t q[3 * MAX_BLOCK_BYTES];
        for (size_t i = 0; i < n; i++)
            x[i] = 1e-3f * rng_normalish();
        const size_t at = be + be / 2 + 3;
        x[at] = 30000.0f;
        assert_int_equal(mgpu_quantize_blocks(t, x, q, 3), MGPU_OK);
        ref_decode(t, q, y, 3);
        for (size_t b = 0; b < 3; b++)
            check_block_error(t, x + b * be, y + b * be, "outlier");
        assert_true(fabsf(y[at] - x[at]) <= x[at] * 0x1p-9f);
        /* neighbours are untouched by the outlier: error far below it */
        for (size_t i = 0; i < be; i++) {
            assert_true(fabsf(y[i] - x[i]) < 1e-3f);
            assert_true(fabsf(y[2 * be + i] - x[2 * be + i]) < 1e-3f);
        }
    }
}

/* Beyond what an f16 scale can reach the encoders saturate: values clip but
 * nothing becomes infinite or NaN. */
static void test_quantize_beyond_f16_range(void **state)
{
    (void)state;
    for (size_t ti = 0; ti < N_WRITABLE; ti++) {
        mgpu_dtype t = writable_types[ti];
        float x[MAX_BLOCK_ELEMS], y[MAX_BLOCK_ELEMS];
        uint8_t q[MAX_BLOCK_BYTES];
        for (uint32_t i = 0; i < block_elems(t); i++)
            x[i] = (i % 2 ? -1e12f : 1e12f) * (1.0f + (float)i / 256.0f);
        assert_int_equal(mgpu_quantize_blocks(t, x, q, 1), MGPU_OK);
        ref_decode(t, q, y, 1);
        for (uint32_t i = 0; i < block_elems(t); i++) {
            assert_true(isfinite(y[i]));
            assert_true((y[i] < 0.0f) == (x[i] < 0.0f) || y[i] == 0.0f);
        }
    }
}

/* A block decoded from a Q8_0 block re-encodes to the same bytes: the
 * encoder's scale is exactly the one it reads back. */
static void test_q8_0_reencode_is_stable(void **state)
{
    (void)state;
    float x[32], y[32];
    uint8_t q1[34], q2[34];
    for (int i = 0; i < 32; i++)
        x[i] = rng_normalish();
    assert_int_equal(mgpu_quantize_blocks(MGPU_DTYPE_Q8_0, x, q1, 1), MGPU_OK);
    mgpu_dequantize_blocks(MGPU_DTYPE_Q8_0, q1, y, 1);
    assert_int_equal(mgpu_quantize_blocks(MGPU_DTYPE_Q8_0, y, q2, 1), MGPU_OK);
    assert_memory_equal(q1, q2, 34);
}

static void test_quantize_unsupported(void **state)
{
    (void)state;
    float x[256] = {0};
    uint8_t q[256];
    for (size_t ti = 0; ti < N_BLOCK_TYPES; ti++) {
        mgpu_dtype t = block_types[ti];
        bool writable = false;
        for (size_t k = 0; k < N_WRITABLE; k++)
            writable |= writable_types[k] == t;
        assert_int_equal(mgpu_dtype_can_quantize(t), writable);
        if (!writable) {
            assert_int_equal(mgpu_quantize_blocks(t, x, q, 1), MGPU_ERR_UNSUPPORTED);
            assert_int_equal(mgpu_quantize(t, x, q, block_elems(t)), MGPU_ERR_UNSUPPORTED);
        }
    }
}

/* ------------------------------------------------------- public API */

static void test_public_api_block_multiples(void **state)
{
    (void)state;
    float x[512] = {0}, y[512];
    uint8_t q[512];
    for (size_t ti = 0; ti < N_BLOCK_TYPES; ti++) {
        mgpu_dtype t = block_types[ti];
        const uint64_t be = block_elems(t);
        assert_int_equal(mgpu_dequantize(t, q, y, be - 1), MGPU_ERR_ARGUMENT);
        assert_int_equal(mgpu_dequantize(t, q, y, be + 1), MGPU_ERR_ARGUMENT);
        assert_int_equal(mgpu_dequantize(t, q, y, 1), MGPU_ERR_ARGUMENT);
        assert_int_equal(mgpu_quantize(t, x, q, be + 16), MGPU_ERR_ARGUMENT);
        assert_int_equal(mgpu_dequantize(t, q, y, 0), MGPU_OK);
        uint64_t bytes = 0;
        assert_true(mgpu_dtype_bytes_for(t, 2 * be, &bytes));
        assert_int_equal(bytes, 2 * block_bytes(t));
        assert_false(mgpu_dtype_bytes_for(t, be + 1, &bytes));
    }
}

/* mgpu_quantize / mgpu_dequantize agree with the block functions and with
 * the reference decoder over several blocks. */
static void test_public_api_roundtrip(void **state)
{
    (void)state;
    enum { N = 1024 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y), *r = malloc(N * sizeof *r);
    uint8_t *q = malloc(N * 2), *qb = malloc(N * 2);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(r);
    assert_non_null(q);
    assert_non_null(qb);
    for (int i = 0; i < N; i++)
        x[i] = rng_normalish() * 0.02f;
    for (size_t ti = 0; ti < N_WRITABLE; ti++) {
        mgpu_dtype t = writable_types[ti];
        const size_t nb = N / block_elems(t);
        assert_int_equal(mgpu_quantize(t, x, q, N), MGPU_OK);
        assert_int_equal(mgpu_quantize_blocks(t, x, qb, nb), MGPU_OK);
        assert_memory_equal(q, qb, nb * block_bytes(t));
        assert_int_equal(mgpu_dequantize(t, q, y, N), MGPU_OK);
        ref_decode(t, q, r, nb);
        assert_same_floats(mgpu_dtype_name(t), y, r, N);
        for (size_t b = 0; b < nb; b++)
            check_block_error(t, x + b * block_elems(t), y + b * block_elems(t), "public api");
    }
    free(x);
    free(y);
    free(r);
    free(q);
    free(qb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_q4_0),
        cmocka_unit_test(test_hand_q4_1),
        cmocka_unit_test(test_hand_q5_0),
        cmocka_unit_test(test_hand_q5_1),
        cmocka_unit_test(test_hand_q8_0),
        cmocka_unit_test(test_hand_q2_k),
        cmocka_unit_test(test_hand_q3_k),
        cmocka_unit_test(test_hand_q4_k),
        cmocka_unit_test(test_hand_q5_k),
        cmocka_unit_test(test_hand_q6_k),
        cmocka_unit_test(test_hand_iq4_nl),
        cmocka_unit_test(test_hand_iq4_xs),
        cmocka_unit_test(test_random_blocks_bit_exact),
        cmocka_unit_test(test_nonfinite_scales_are_safe),
        cmocka_unit_test(test_quantize_random),
        cmocka_unit_test(test_quantize_zero_block),
        cmocka_unit_test(test_quantize_constant_block),
        cmocka_unit_test(test_quantize_outlier),
        cmocka_unit_test(test_quantize_beyond_f16_range),
        cmocka_unit_test(test_q8_0_reencode_is_stable),
        cmocka_unit_test(test_quantize_unsupported),
        cmocka_unit_test(test_public_api_block_multiples),
        cmocka_unit_test(test_public_api_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
