/* GGUF block-quantized layouts. Decoders reproduce ggml's dequantize_row_*
 * bit for bit: same field layout, same integer extraction and the same
 * float operations in the same order. Encoders (Q8_0, Q4_0, Q4_K, Q6_K) are
 * mgpu's own simple scale choosers; any block they write is a valid ggml
 * block, they just do not search for the best scales the way ggml does. */
#include <math.h>
#include <string.h>

#include "core/quant.h"

/* Exactness against ggml relies on no multiply-add contraction. GCC does not
 * contract in ISO C mode; clang needs to be told. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define QK 32   /* values per block of the legacy types */
#define QK_K 256 /* values per super-block of the K and IQ4_XS types */

/* The non-uniform 4-bit levels of IQ4_NL and IQ4_XS (ggml kvalues_iq4nl). */
static const int8_t iq4nl_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

/* Fields are little-endian and src may be unaligned: assemble from bytes. */
static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline float rdf16(const uint8_t *p)
{
    return mgpu_f16_to_f32(rd16(p));
}

static inline void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFF);
    p[1] = (uint8_t)(v >> 8);
}

/* ---------------------------------------------------------------- decode */

/* Q4_0: f16 d, 16 bytes of nibbles; low nibbles are values 0-15, high
 * nibbles 16-31; value = (q - 8) * d. */
static void dec_q4_0(const uint8_t *restrict b, float *restrict y)
{
    const float d = rdf16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = (float)((qs[j] & 0x0F) - 8) * d;
        y[j + QK / 2] = (float)((qs[j] >> 4) - 8) * d;
    }
}

/* Q4_1: f16 d, f16 m, nibbles as Q4_0; value = q * d + m. */
static void dec_q4_1(const uint8_t *restrict b, float *restrict y)
{
    const float d = rdf16(b);
    const float m = rdf16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = (float)(qs[j] & 0x0F) * d + m;
        y[j + QK / 2] = (float)(qs[j] >> 4) * d + m;
    }
}

/* Bit i of a Q5 qh word is the fifth bit of value i. Testing it against a
 * table of masks, rather than shifting by i, keeps the loops below
 * vectorizable on targets without per-lane variable shifts. */
#define BIT(i) (1u << (i))
static const uint32_t bit_masks[QK] = {
    BIT(0),  BIT(1),  BIT(2),  BIT(3),  BIT(4),  BIT(5),  BIT(6),  BIT(7),
    BIT(8),  BIT(9),  BIT(10), BIT(11), BIT(12), BIT(13), BIT(14), BIT(15),
    BIT(16), BIT(17), BIT(18), BIT(19), BIT(20), BIT(21), BIT(22), BIT(23),
    BIT(24), BIT(25), BIT(26), BIT(27), BIT(28), BIT(29), BIT(30), BIT(31),
};
#undef BIT

/* Q5_0: f16 d, 32-bit qh, nibbles as Q4_0; value = (q - 16) * d. */
static void dec_q5_0(const uint8_t *restrict b, float *restrict y)
{
    const float d = rdf16(b);
    const uint32_t qh = rd32(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < QK / 2; j++) {
        int lo = (qs[j] & 0x0F) | ((qh & bit_masks[j]) ? 16 : 0);
        int hi = (qs[j] >> 4) | ((qh & bit_masks[j + QK / 2]) ? 16 : 0);
        y[j] = (float)(lo - 16) * d;
        y[j + QK / 2] = (float)(hi - 16) * d;
    }
}

/* Q5_1: f16 d, f16 m, qh, nibbles; value = q * d + m. */
static void dec_q5_1(const uint8_t *restrict b, float *restrict y)
{
    const float d = rdf16(b);
    const float m = rdf16(b + 2);
    const uint32_t qh = rd32(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < QK / 2; j++) {
        int lo = (qs[j] & 0x0F) | ((qh & bit_masks[j]) ? 16 : 0);
        int hi = (qs[j] >> 4) | ((qh & bit_masks[j + QK / 2]) ? 16 : 0);
        y[j] = (float)lo * d + m;
        y[j + QK / 2] = (float)hi * d + m;
    }
}

/* Q8_0: f16 d, 32 int8; value = q * d. */
static void dec_q8_0(const uint8_t *restrict b, float *restrict y)
{
    const float d = rdf16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < QK; j++)
        y[j] = (float)(int8_t)qs[j] * d;
}

/* Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], f16 d, f16
 * dmin. Values come in 16 groups of 16; group g takes 2-bit fields at shift
 * 2*((g/2)%4) from qs[32*(g/8) + 16*(g%2) ...]. value = d*sc*q - dmin*m. */
static void dec_q2_k(const uint8_t *restrict b, float *restrict y)
{
    const uint8_t *sc = b;
    const uint8_t *qs = b + 16;
    const float d = rdf16(b + 80);
    const float dmin = rdf16(b + 82);
    for (int g = 0; g < 16; g++) {
        const uint8_t *q = qs + 32 * (g / 8) + 16 * (g % 2);
        const int shift = 2 * ((g / 2) % 4);
        const float dl = d * (float)(sc[g] & 0x0F);
        const float ml = dmin * (float)(sc[g] >> 4);
        for (int l = 0; l < 16; l++)
            y[16 * g + l] = dl * (float)((q[l] >> shift) & 3) - ml;
    }
}

/* Q3_K: hmask[32], qs[64], scales[12] (16 six-bit scales biased by 32), f16
 * d. The low two bits are laid out as Q2_K; the third bit of value e is bit
 * e/32 of hmask[e%32], and a clear bit subtracts 4. value = d*(sc-32)*q. */
static void dec_q3_k(const uint8_t *restrict b, float *restrict y)
{
    const uint8_t *hm = b;
    const uint8_t *qs = b + 32;
    const uint8_t *s = b + 96;
    const float d = rdf16(b + 108);
    for (int g = 0; g < 16; g++) {
        int lo = g < 8 ? s[g] & 0x0F : s[g - 8] >> 4;
        int hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        const float dl = d * (float)((lo | hi << 4) - 32);
        const uint8_t *q = qs + 32 * (g / 8) + 16 * (g % 2);
        const uint8_t *h = hm + 16 * (g % 2);
        const int shift = 2 * ((g / 2) % 4);
        const int hbit = g / 2; /* = 4*(g/8) + (g/2)%4 */
        for (int l = 0; l < 16; l++) {
            int v = ((q[l] >> shift) & 3) - (((h[l] >> hbit) & 1) ? 0 : 4);
            y[16 * g + l] = dl * (float)v;
        }
    }
}

/* The 6-bit scale and min of sub-block j in the 12-byte K-quant scale field
 * (Q4_K, Q5_K): j < 4 sit in the low six bits of bytes j and j+4; j >= 4 take
 * their low four bits from byte j+4 and their top two from the spare high
 * bits of bytes j-4 (scale) and j (min). */
static inline void kscale(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Q4_K: f16 d, f16 dmin, scales[12], qs[128]. Each 32-byte run of qs holds
 * 64 values: low nibbles first, then high nibbles, each half with its own
 * sub-block scale. value = d*sc*q - dmin*m. */
static void dec_q4_k(const uint8_t *restrict b, float *restrict y)
{
    const float d = rdf16(b);
    const float dmin = rdf16(b + 2);
    const uint8_t *s = b + 4;
    const uint8_t *qs = b + 16;
    for (int c = 0; c < 4; c++) {
        int sc, m;
        kscale(s, 2 * c, &sc, &m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        kscale(s, 2 * c + 1, &sc, &m);
        const float d2 = d * (float)sc, m2 = dmin * (float)m;
        const uint8_t *q = qs + 32 * c;
        for (int l = 0; l < 32; l++)
            y[64 * c + l] = d1 * (float)(q[l] & 0x0F) - m1;
        for (int l = 0; l < 32; l++)
            y[64 * c + 32 + l] = d2 * (float)(q[l] >> 4) - m2;
    }
}

/* Q5_K: Q4_K plus qh[32]: the fifth bit of value e is bit e/32 of
 * qh[e%32]. */
static void dec_q5_k(const uint8_t *restrict b, float *restrict y)
{
    const float d = rdf16(b);
    const float dmin = rdf16(b + 2);
    const uint8_t *s = b + 4;
    const uint8_t *qh = b + 16;
    const uint8_t *qs = b + 48;
    for (int c = 0; c < 4; c++) {
        int sc, m;
        kscale(s, 2 * c, &sc, &m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        kscale(s, 2 * c + 1, &sc, &m);
        const float d2 = d * (float)sc, m2 = dmin * (float)m;
        const uint8_t *q = qs + 32 * c;
        for (int l = 0; l < 32; l++)
            y[64 * c + l] = d1 * (float)((q[l] & 0x0F) + (((qh[l] >> (2 * c)) & 1) << 4)) - m1;
        for (int l = 0; l < 32; l++)
            y[64 * c + 32 + l] = d2 * (float)((q[l] >> 4) + (((qh[l] >> (2 * c + 1)) & 1) << 4)) - m2;
    }
}

/* Q6_K: ql[128], qh[64], int8 scales[16], f16 d. Each 128-value half uses
 * 64 bytes of ql and 32 of qh; its four 32-value quarters take the low
 * nibbles of ql[0..31], ql[32..63], then the high nibbles, with two bits of
 * qh[l] at shift 2*quarter. value = d*sc*(q - 32), associated (d*sc)*q. */
static void dec_q6_k(const uint8_t *restrict b, float *restrict y)
{
    const uint8_t *ql = b;
    const uint8_t *qh = b + 128;
    const uint8_t *sc = b + 192;
    const float d = rdf16(b + 208);
    for (int g = 0; g < 16; g++) {
        const int half = g / 8, quarter = (g % 8) / 2, sub = g % 2;
        const uint8_t *lo = ql + 64 * half + 32 * (quarter % 2) + 16 * sub;
        const uint8_t *hi = qh + 32 * half + 16 * sub;
        const int lshift = 4 * (quarter / 2), hshift = 2 * quarter;
        const float dl = d * (float)(int8_t)sc[g];
        for (int l = 0; l < 16; l++) {
            int q = (((lo[l] >> lshift) & 0x0F) | ((hi[l] >> hshift) & 3) << 4) - 32;
            y[16 * g + l] = dl * (float)q;
        }
    }
}

/* IQ4_NL: f16 d, nibbles as Q4_0 indexing the non-uniform levels. */
static void dec_iq4_nl(const uint8_t *restrict b, float *restrict y)
{
    /* the 16 scaled levels once per block, then a lookup per value: the
     * same products ggml forms, computed fewer times */
    const float d = rdf16(b);
    float lv[16];
    for (int i = 0; i < 16; i++)
        lv[i] = d * (float)iq4nl_levels[i];
    const uint8_t *qs = b + 2;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = lv[qs[j] & 0x0F];
        y[j + QK / 2] = lv[qs[j] >> 4];
    }
}

/* IQ4_XS: f16 d, u16 scales_h, scales_l[4], qs[128]. Sub-block i (of 8) has a
 * 6-bit scale biased by 32: low four bits from nibble i of scales_l, top two
 * from bits 2i of scales_h. Its 16 bytes of qs are laid out as IQ4_NL. */
static void dec_iq4_xs(const uint8_t *restrict b, float *restrict y)
{
    const float d = rdf16(b);
    const unsigned sh = rd16(b + 2);
    const uint8_t *sl = b + 4;
    const uint8_t *qs = b + 8;
    for (int i = 0; i < 8; i++) {
        int ls = ((sl[i / 2] >> (4 * (i % 2))) & 0x0F) | (int)((sh >> (2 * i)) & 3) << 4;
        const float dl = d * (float)(ls - 32);
        float lv[16];
        for (int k = 0; k < 16; k++)
            lv[k] = dl * (float)iq4nl_levels[k];
        const uint8_t *q = qs + 16 * i;
        for (int j = 0; j < 16; j++) {
            y[32 * i + j] = lv[q[j] & 0x0F];
            y[32 * i + 16 + j] = lv[q[j] >> 4];
        }
    }
}

typedef void (*block_decoder)(const uint8_t *restrict, float *restrict);

static block_decoder decoder_for(mgpu_dtype dtype)
{
    switch (dtype) {
    case MGPU_DTYPE_Q4_0: return dec_q4_0;
    case MGPU_DTYPE_Q4_1: return dec_q4_1;
    case MGPU_DTYPE_Q5_0: return dec_q5_0;
    case MGPU_DTYPE_Q5_1: return dec_q5_1;
    case MGPU_DTYPE_Q8_0: return dec_q8_0;
    case MGPU_DTYPE_Q2_K: return dec_q2_k;
    case MGPU_DTYPE_Q3_K: return dec_q3_k;
    case MGPU_DTYPE_Q4_K: return dec_q4_k;
    case MGPU_DTYPE_Q5_K: return dec_q5_k;
    case MGPU_DTYPE_Q6_K: return dec_q6_k;
    case MGPU_DTYPE_IQ4_NL: return dec_iq4_nl;
    case MGPU_DTYPE_IQ4_XS: return dec_iq4_xs;
    default: return NULL;
    }
}

void mgpu_dequantize_blocks(mgpu_dtype dtype, const void *src, float *dst, uint64_t n_blocks)
{
    const mgpu_dtype_info *info = mgpu_dtype_get_info(dtype);
    block_decoder dec = decoder_for(dtype);
    if (!info || !dec) /* not a block type: the contract says this cannot happen */
        return;
    const uint8_t *s = src;
    for (uint64_t i = 0; i < n_blocks; i++) {
        dec(s, dst);
        s += info->block_bytes;
        dst += info->block_elems;
    }
}

/* ---------------------------------------------------------------- encode */

/* The f16 nearest to v >= 0 that is not below it (saturating at the largest
 * finite f16). Scales are rounded up so the extreme value of a block still
 * fits the quant range after the scale is stored. */
static uint16_t f16_round_up(float v)
{
    if (!(v > 0.0f)) /* zero, or NaN from NaN input */
        return 0;
    uint16_t h = mgpu_f32_to_f16(v);
    if (h >= 0x7C00u) /* overflowed to inf */
        return 0x7BFFu;
    if (mgpu_f16_to_f32(h) < v && h < 0x7BFFu)
        h++;
    return h;
}

/* Round v to the nearest integer in [lo, hi]; NaN becomes 0. Clamping first
 * keeps the float-to-int conversion defined for any input. */
static inline int round_clamp(float v, int lo, int hi)
{
    if (v != v)
        return 0;
    if (v <= (float)lo)
        return lo;
    if (v >= (float)hi)
        return hi;
    return (int)lrintf(v);
}

static float abs_max(const float *x, int n)
{
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax)
            amax = a;
    }
    return amax;
}

/* Q8_0: d = amax/127, q = round(x/d) in [-127, 127]. */
static void enc_q8_0(const float *restrict x, uint8_t *restrict b)
{
    const uint16_t dh = f16_round_up(abs_max(x, QK) / 127.0f);
    const float d = mgpu_f16_to_f32(dh);
    const float id = d > 0.0f ? 1.0f / d : 0.0f;
    wr16(b, dh);
    for (int j = 0; j < QK; j++)
        b[2 + j] = (uint8_t)(int8_t)round_clamp(x[j] * id, -127, 127);
}

/* Q4_0 codes for a given stored scale; returns the squared error. */
static float q4_0_codes(const float *x, uint16_t dh, uint8_t q[QK])
{
    const float d = mgpu_f16_to_f32(dh);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    float err = 0.0f;
    for (int j = 0; j < QK; j++) {
        q[j] = (uint8_t)(round_clamp(x[j] * id, -8, 7) + 8);
        float e = (float)(q[j] - 8) * d - x[j];
        err += e * e;
    }
    return err;
}

/* Q4_0 has 16 levels, -8..7. Two candidate scales: one symmetric (amax maps
 * to 7.5, so every value is within half a step) and ggml's (the largest
 * magnitude maps exactly onto -8, which reproduces constant blocks). Keep
 * whichever reconstructs the block with less squared error. */
static void enc_q4_0(const float *restrict x, uint8_t *restrict b)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    uint8_t qa[QK], qb[QK];
    const uint16_t da = f16_round_up(amax / 7.5f);
    /* d = max / -8: magnitude rounded up, sign opposite to max */
    const uint16_t db = (uint16_t)(f16_round_up(amax / 8.0f) | (max > 0.0f ? 0x8000u : 0u));
    const float ea = q4_0_codes(x, da, qa);
    const float eb = q4_0_codes(x, db, qb);
    const bool use_b = eb < ea;
    const uint8_t *q = use_b ? qb : qa;
    wr16(b, use_b ? db : da);
    for (int j = 0; j < QK / 2; j++)
        b[2 + j] = (uint8_t)(q[j] | q[j + QK / 2] << 4);
}

/* Q4_K: 8 sub-blocks of 32, value = d*sc*q - dmin*m with q in 0..15 and
 * 6-bit sc, m. Each sub-block spans [lo, hi] with lo = min(0, min x): the
 * min is subtracted, so it can only move the range down. m is rounded up so
 * the stored offset reaches below lo; d is then chosen from the spans those
 * offsets leave and sc rounded up, so the quantized range always covers the
 * sub-block (a slightly coarser step instead of clipping). */
static void enc_q4_k(const float *restrict x, uint8_t *restrict b)
{
    float offset[8], hi[8], max_off = 0.0f;
    for (int j = 0; j < 8; j++) {
        float lo = 0.0f, h = 0.0f;
        for (int l = 0; l < 32; l++) {
            float v = x[32 * j + l];
            if (v < lo)
                lo = v;
            if (v > h)
                h = v;
        }
        offset[j] = -lo;
        hi[j] = h;
        if (offset[j] > max_off)
            max_off = offset[j];
    }
    const uint16_t mh = f16_round_up(max_off / 63.0f);
    const float dmin = mgpu_f16_to_f32(mh);
    int sc[8], m[8];
    float span[8], max_span = 0.0f;
    for (int j = 0; j < 8; j++) {
        m[j] = dmin > 0.0f ? round_clamp(ceilf(offset[j] / dmin), 0, 63) : 0;
        span[j] = (hi[j] + dmin * (float)m[j]) / 15.0f;
        if (span[j] > max_span)
            max_span = span[j];
    }
    const uint16_t dh = f16_round_up(max_span / 63.0f);
    const float d = mgpu_f16_to_f32(dh);
    for (int j = 0; j < 8; j++)
        sc[j] = d > 0.0f ? round_clamp(ceilf(span[j] / d), 0, 63) : 0;
    wr16(b, dh);
    wr16(b + 2, mh);
    uint8_t *s = b + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | (m[j + 4] & 0x0F) << 4);
    }
    /* codes against the exact factors the decoder will use */
    uint8_t q[QK_K];
    for (int j = 0; j < 8; j++) {
        const float d1 = d * (float)sc[j], m1 = dmin * (float)m[j];
        const float id = d1 > 0.0f ? 1.0f / d1 : 0.0f;
        for (int l = 0; l < 32; l++)
            q[32 * j + l] = (uint8_t)round_clamp((x[32 * j + l] + m1) * id, 0, 15);
    }
    uint8_t *qs = b + 16;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (uint8_t)(q[64 * c + l] | q[64 * c + 32 + l] << 4);
}

/* Q6_K codes of one 16-value group for the step dl; returns the squared
 * error. */
static float q6_k_codes(const float *x, float dl, int q[16])
{
    const float id = dl != 0.0f ? 1.0f / dl : 0.0f;
    float err = 0.0f;
    for (int l = 0; l < 16; l++) {
        q[l] = round_clamp(x[l] * id, -32, 31);
        float e = dl * (float)q[l] - x[l];
        err += e * e;
    }
    return err;
}

/* Q6_K: 16 groups of 16, value = d*sc*q with q in -32..31 and int8 sc. As
 * for Q4_0 each group tries two steps and keeps the one with less squared
 * error: symmetric (largest magnitude at 31.5, sc rounded up so nothing
 * clips) and signed (the extreme on -32, sc rounded to nearest so the
 * extreme lands as close to a level as the 8-bit scale allows). */
static void enc_q6_k(const float *restrict x, uint8_t *restrict b)
{
    float amax[16], extreme[16], top = 0.0f;
    for (int g = 0; g < 16; g++) {
        amax[g] = 0.0f;
        extreme[g] = 0.0f;
        for (int l = 0; l < 16; l++)
            if (fabsf(x[16 * g + l]) > amax[g]) {
                amax[g] = fabsf(x[16 * g + l]);
                extreme[g] = x[16 * g + l];
            }
        if (amax[g] / 31.5f > top)
            top = amax[g] / 31.5f;
    }
    const uint16_t dh = f16_round_up(top / 127.0f);
    const float d = mgpu_f16_to_f32(dh);
    uint8_t *ql = b, *qh = b + 128, *sc = b + 192;
    memset(b, 0, 192);
    for (int g = 0; g < 16; g++) {
        int sa = 0, sb = 0;
        if (d > 0.0f) {
            sa = round_clamp(ceilf(amax[g] / 31.5f / d), 0, 127);
            sb = round_clamp(amax[g] / 32.0f / d, 0, 127);
            if (extreme[g] > 0.0f)
                sb = -sb;
        }
        int qa[16], qb[16];
        const float ea = q6_k_codes(x + 16 * g, d * (float)sa, qa);
        const float eb = q6_k_codes(x + 16 * g, d * (float)sb, qb);
        const bool use_b = eb < ea;
        const int *q = use_b ? qb : qa;
        sc[g] = (uint8_t)(int8_t)(use_b ? sb : sa);
        const int half = g / 8, quarter = (g % 8) / 2, sub = g % 2;
        uint8_t *lo = ql + 64 * half + 32 * (quarter % 2) + 16 * sub;
        uint8_t *hi = qh + 32 * half + 16 * sub;
        for (int l = 0; l < 16; l++) {
            int u = q[l] + 32;
            lo[l] |= (uint8_t)((u & 0x0F) << (4 * (quarter / 2)));
            hi[l] |= (uint8_t)((u >> 4) << (2 * quarter));
        }
    }
    wr16(b + 208, dh);
}

mgpu_status mgpu_quantize_blocks(mgpu_dtype dtype, const float *src, void *dst, uint64_t n_blocks)
{
    void (*enc)(const float *restrict, uint8_t *restrict);
    switch (dtype) {
    case MGPU_DTYPE_Q8_0: enc = enc_q8_0; break;
    case MGPU_DTYPE_Q4_0: enc = enc_q4_0; break;
    case MGPU_DTYPE_Q4_K: enc = enc_q4_k; break;
    case MGPU_DTYPE_Q6_K: enc = enc_q6_k; break;
    default: return MGPU_ERR_UNSUPPORTED;
    }
    const mgpu_dtype_info *info = mgpu_dtype_get_info(dtype);
    uint8_t *d = dst;
    for (uint64_t i = 0; i < n_blocks; i++) {
        enc(src, d);
        src += info->block_elems;
        d += info->block_bytes;
    }
    return MGPU_OK;
}
