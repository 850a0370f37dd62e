/* Device decoders for every floating mgpu dtype, one value at a time: the
 * value at index e of a block from the block's bytes. They reproduce
 * src/core/quant.c and src/core/float_bits.h bit for bit: the same fields,
 * the same integer extraction, the same f32 operations in the same order.
 * The files including this are compiled with --fmad=false so no multiply
 * and add are fused into one rounding (the CPU code is not contracted
 * either), and the products are written with __fmul_rn/__fadd_rn where a
 * fused form would otherwise be tempting to the reader too.
 * Bytes are read one at a time: weights may sit at any offset. */
#ifndef MGPU_BACKEND_CUDA_DECODE_CUH
#define MGPU_BACKEND_CUDA_DECODE_CUH

#include <stdint.h>

#include "mgpu/dtype.h"

namespace mgpu_cuda {

__device__ __forceinline__ uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

__device__ __forceinline__ uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* As mgpu_f16_decode: exact, so any correct method gives the same bits for
 * finite values and infinities; NaNs keep their payload. */
__device__ __forceinline__ float f16_to_f32(uint32_t h)
{
    uint32_t sign = (h & 0x8000u) << 16;
    uint32_t rest = h & 0x7FFFu;
    uint32_t bits;
    if (rest >= 0x7C00u) /* inf, NaN */
        bits = 0x7F800000u | ((rest & 0x3FFu) << 13);
    else if (rest >= 0x0400u) /* normal: rebias 15 -> 127 */
        bits = (rest << 13) + (112u << 23);
    else /* subnormal or zero: m * 2^-24, exact */
        bits = __float_as_uint((float)rest * 0x1p-24f);
    return __uint_as_float(sign | bits);
}

__device__ __forceinline__ float rdf16(const uint8_t *p)
{
    return f16_to_f32(rd16(p));
}

__device__ __forceinline__ float e4m3_to_f32(uint32_t v)
{
    uint32_t sign = (v & 0x80u) << 24;
    uint32_t rest = v & 0x7Fu;
    uint32_t bits;
    if (rest == 0x7Fu)
        bits = 0x7FC00000u;
    else if (rest < 0x08u)
        bits = __float_as_uint((float)rest * 0x1p-9f);
    else
        bits = (rest << 20) + (120u << 23);
    return __uint_as_float(sign | bits);
}

static __constant__ const int8_t iq4nl_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                              1,    13,   25,  38,  53,  69,  89,  113};

/* The 6-bit scale and min of sub-block j of the K-quant scale field. */
__device__ __forceinline__ void kscale(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Elements and bytes per block, as the dtype table says. */
template <int DT> struct block_traits;
#define MGPU_TRAITS(dt, elems, bytes)                                                              \
    template <> struct block_traits<dt> {                                                          \
        static constexpr int n = elems;                                                            \
        static constexpr int b = bytes;                                                            \
    };
MGPU_TRAITS(MGPU_DTYPE_F64, 1, 8)
MGPU_TRAITS(MGPU_DTYPE_F32, 1, 4)
MGPU_TRAITS(MGPU_DTYPE_F16, 1, 2)
MGPU_TRAITS(MGPU_DTYPE_BF16, 1, 2)
MGPU_TRAITS(MGPU_DTYPE_F8_E4M3, 1, 1)
MGPU_TRAITS(MGPU_DTYPE_F8_E5M2, 1, 1)
MGPU_TRAITS(MGPU_DTYPE_Q4_0, 32, 18)
MGPU_TRAITS(MGPU_DTYPE_Q4_1, 32, 20)
MGPU_TRAITS(MGPU_DTYPE_Q5_0, 32, 22)
MGPU_TRAITS(MGPU_DTYPE_Q5_1, 32, 24)
MGPU_TRAITS(MGPU_DTYPE_Q8_0, 32, 34)
MGPU_TRAITS(MGPU_DTYPE_Q2_K, 256, 84)
MGPU_TRAITS(MGPU_DTYPE_Q3_K, 256, 110)
MGPU_TRAITS(MGPU_DTYPE_Q4_K, 256, 144)
MGPU_TRAITS(MGPU_DTYPE_Q5_K, 256, 176)
MGPU_TRAITS(MGPU_DTYPE_Q6_K, 256, 210)
MGPU_TRAITS(MGPU_DTYPE_IQ4_NL, 32, 18)
MGPU_TRAITS(MGPU_DTYPE_IQ4_XS, 256, 136)
#undef MGPU_TRAITS

/* Value e (0 <= e < block elems) of the block at b. */
template <int DT> __device__ __forceinline__ float decode(const uint8_t *b, int e);

template <> __device__ __forceinline__ float decode<MGPU_DTYPE_F64>(const uint8_t *b, int e)
{
    (void)e;
    uint64_t u = (uint64_t)rd32(b) | (uint64_t)rd32(b + 4) << 32;
    return (float)__longlong_as_double((long long)u); /* round to nearest, as C's cast */
}

template <> __device__ __forceinline__ float decode<MGPU_DTYPE_F32>(const uint8_t *b, int e)
{
    (void)e;
    return __uint_as_float(rd32(b));
}

template <> __device__ __forceinline__ float decode<MGPU_DTYPE_F16>(const uint8_t *b, int e)
{
    (void)e;
    return f16_to_f32(rd16(b));
}

template <> __device__ __forceinline__ float decode<MGPU_DTYPE_BF16>(const uint8_t *b, int e)
{
    (void)e;
    return __uint_as_float(rd16(b) << 16);
}

template <> __device__ __forceinline__ float decode<MGPU_DTYPE_F8_E4M3>(const uint8_t *b, int e)
{
    (void)e;
    return e4m3_to_f32(b[0]);
}

/* e5m2 is the top byte of an f16 */
template <> __device__ __forceinline__ float decode<MGPU_DTYPE_F8_E5M2>(const uint8_t *b, int e)
{
    (void)e;
    return f16_to_f32((uint32_t)b[0] << 8);
}

/* Q4_0: f16 d, 16 bytes; low nibbles are values 0-15, high 16-31. */
template <> __device__ __forceinline__ float decode<MGPU_DTYPE_Q4_0>(const uint8_t *b, int e)
{
    const float d = rdf16(b);
    const uint32_t q = b[2 + (e & 15)];
    const int nib = (int)(e < 16 ? q & 0x0F : q >> 4);
    return __fmul_rn((float)(nib - 8), d);
}

template <> __device__ __forceinline__ float decode<MGPU_DTYPE_Q4_1>(const uint8_t *b, int e)
{
    const float d = rdf16(b), m = rdf16(b + 2);
    const uint32_t q = b[4 + (e & 15)];
    const int nib = (int)(e < 16 ? q & 0x0F : q >> 4);
    return __fadd_rn(__fmul_rn((float)nib, d), m);
}

/* Q5_0: f16 d, u32 qh (bit e is value e's fifth bit), nibbles as Q4_0. */
template <> __device__ __forceinline__ float decode<MGPU_DTYPE_Q5_0>(const uint8_t *b, int e)
{
    const float d = rdf16(b);
    const uint32_t qh = rd32(b + 2);
    const uint32_t q = b[6 + (e & 15)];
    const int v = (int)((e < 16 ? q & 0x0F : q >> 4) | ((qh >> e) & 1u) << 4);
    return __fmul_rn((float)(v - 16), d);
}

template <> __device__ __forceinline__ float decode<MGPU_DTYPE_Q5_1>(const uint8_t *b, int e)
{
    const float d = rdf16(b), m = rdf16(b + 2);
    const uint32_t qh = rd32(b + 4);
    const uint32_t q = b[8 + (e & 15)];
    const int v = (int)((e < 16 ? q & 0x0F : q >> 4) | ((qh >> e) & 1u) << 4);
    return __fadd_rn(__fmul_rn((float)v, d), m);
}

template <> __device__ __forceinline__ float decode<MGPU_DTYPE_Q8_0>(const uint8_t *b, int e)
{
    return __fmul_rn((float)(int8_t)b[2 + e], rdf16(b));
}

/* Q2_K: scales[16], qs[64], f16 d, f16 dmin; group g = e/16 takes 2-bit
 * fields at shift 2*((g/2)%4) of qs[32*(g/8) + 16*(g%2) + l]. */
template <> __device__ __forceinline__ float decode<MGPU_DTYPE_Q2_K>(const uint8_t *b, int e)
{
    const int g = e >> 4, l = e & 15;
    const float d = rdf16(b + 80), dmin = rdf16(b + 82);
    const uint32_t sc = b[g];
    const uint32_t q = b[16 + 32 * (g / 8) + 16 * (g % 2) + l];
    const int shift = 2 * ((g / 2) % 4);
    const float dl = __fmul_rn(d, (float)(sc & 0x0F));
    const float ml = __fmul_rn(dmin, (float)(sc >> 4));
    return __fsub_rn(__fmul_rn(dl, (float)((q >> shift) & 3)), ml);
}

/* Q3_K: hmask[32], qs[64], scales[12], f16 d. */
template <> __device__ __forceinline__ float decode<MGPU_DTYPE_Q3_K>(const uint8_t *b, int e)
{
    const int g = e >> 4, l = e & 15;
    const uint8_t *s = b + 96;
    const float d = rdf16(b + 108);
    const int lo = g < 8 ? s[g] & 0x0F : s[g - 8] >> 4;
    const int hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
    const float dl = __fmul_rn(d, (float)((lo | hi << 4) - 32));
    const uint32_t q = b[32 + 32 * (g / 8) + 16 * (g % 2) + l];
    const uint32_t h = b[16 * (g % 2) + l];
    const int shift = 2 * ((g / 2) % 4);
    const int hbit = g / 2;
    const int v = (int)((q >> shift) & 3) - (((h >> hbit) & 1) ? 0 : 4);
    return __fmul_rn(dl, (float)v);
}

/* Q4_K: f16 d, f16 dmin, scales[12], qs[128]; 32-byte run c holds values
 * 64c..64c+31 in low nibbles and 64c+32.. in high nibbles. */
template <> __device__ __forceinline__ float decode<MGPU_DTYPE_Q4_K>(const uint8_t *b, int e)
{
    const int c = e >> 6, half = (e >> 5) & 1, l = e & 31;
    const float d = rdf16(b), dmin = rdf16(b + 2);
    int sc, m;
    kscale(b + 4, 2 * c + half, &sc, &m);
    const float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)m);
    const uint32_t q = b[16 + 32 * c + l];
    const int nib = (int)(half ? q >> 4 : q & 0x0F);
    return __fsub_rn(__fmul_rn(d1, (float)nib), m1);
}

/* Q5_K: Q4_K plus qh[32] before qs: fifth bit of value e is bit e/32 of
 * qh[e%32]. */
template <> __device__ __forceinline__ float decode<MGPU_DTYPE_Q5_K>(const uint8_t *b, int e)
{
    const int c = e >> 6, half = (e >> 5) & 1, l = e & 31;
    const float d = rdf16(b), dmin = rdf16(b + 2);
    int sc, m;
    kscale(b + 4, 2 * c + half, &sc, &m);
    const float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)m);
    const uint32_t q = b[48 + 32 * c + l];
    const uint32_t qh = b[16 + l];
    const int v = (int)((half ? q >> 4 : q & 0x0F) + (((qh >> (2 * c + half)) & 1) << 4));
    return __fsub_rn(__fmul_rn(d1, (float)v), m1);
}

/* Q6_K: ql[128], qh[64], int8 scales[16], f16 d. */
template <> __device__ __forceinline__ float decode<MGPU_DTYPE_Q6_K>(const uint8_t *b, int e)
{
    const int g = e >> 4, l = e & 15;
    const int half = g / 8, quarter = (g % 8) / 2, sub = g % 2;
    const uint32_t lo = b[64 * half + 32 * (quarter % 2) + 16 * sub + l];
    const uint32_t hi = b[128 + 32 * half + 16 * sub + l];
    const int lshift = 4 * (quarter / 2), hshift = 2 * quarter;
    const float d = rdf16(b + 208);
    const float dl = __fmul_rn(d, (float)(int8_t)b[192 + g]);
    const int q = (int)(((lo >> lshift) & 0x0F) | ((hi >> hshift) & 3) << 4) - 32;
    return __fmul_rn(dl, (float)q);
}

template <> __device__ __forceinline__ float decode<MGPU_DTYPE_IQ4_NL>(const uint8_t *b, int e)
{
    const float d = rdf16(b);
    const uint32_t q = b[2 + (e & 15)];
    const int nib = (int)(e < 16 ? q & 0x0F : q >> 4);
    return __fmul_rn(d, (float)iq4nl_levels[nib]);
}

/* IQ4_XS: f16 d, u16 scales_h, scales_l[4], qs[128]; sub-block i = e/32. */
template <> __device__ __forceinline__ float decode<MGPU_DTYPE_IQ4_XS>(const uint8_t *b, int e)
{
    const int i = e >> 5, w = e & 31;
    const float d = rdf16(b);
    const uint32_t sh = rd16(b + 2);
    const int ls = (int)(((b[4 + i / 2] >> (4 * (i % 2))) & 0x0F) | ((sh >> (2 * i)) & 3) << 4);
    const float dl = __fmul_rn(d, (float)(ls - 32));
    const uint32_t q = b[8 + 16 * i + (w & 15)];
    const int nib = (int)(w < 16 ? q & 0x0F : q >> 4);
    return __fmul_rn(dl, (float)iq4nl_levels[nib]);
}

/* Element idx of a tensor that starts at base. */
template <int DT> __device__ __forceinline__ float decode_at(const uint8_t *base, int64_t idx)
{
    constexpr int n = block_traits<DT>::n;
    const int64_t blk = idx / n;
    return decode<DT>(base + blk * block_traits<DT>::b, (int)(idx - blk * n));
}

/* The same with the dtype known only at run time (small parameter vectors:
 * norm scales, biases). */
__device__ __forceinline__ float decode_any(int dtype, const uint8_t *base, int64_t idx)
{
    switch (dtype) {
    case MGPU_DTYPE_F64: return decode_at<MGPU_DTYPE_F64>(base, idx);
    case MGPU_DTYPE_F32: return decode_at<MGPU_DTYPE_F32>(base, idx);
    case MGPU_DTYPE_F16: return decode_at<MGPU_DTYPE_F16>(base, idx);
    case MGPU_DTYPE_BF16: return decode_at<MGPU_DTYPE_BF16>(base, idx);
    case MGPU_DTYPE_F8_E4M3: return decode_at<MGPU_DTYPE_F8_E4M3>(base, idx);
    case MGPU_DTYPE_F8_E5M2: return decode_at<MGPU_DTYPE_F8_E5M2>(base, idx);
    case MGPU_DTYPE_Q4_0: return decode_at<MGPU_DTYPE_Q4_0>(base, idx);
    case MGPU_DTYPE_Q4_1: return decode_at<MGPU_DTYPE_Q4_1>(base, idx);
    case MGPU_DTYPE_Q5_0: return decode_at<MGPU_DTYPE_Q5_0>(base, idx);
    case MGPU_DTYPE_Q5_1: return decode_at<MGPU_DTYPE_Q5_1>(base, idx);
    case MGPU_DTYPE_Q8_0: return decode_at<MGPU_DTYPE_Q8_0>(base, idx);
    case MGPU_DTYPE_Q2_K: return decode_at<MGPU_DTYPE_Q2_K>(base, idx);
    case MGPU_DTYPE_Q3_K: return decode_at<MGPU_DTYPE_Q3_K>(base, idx);
    case MGPU_DTYPE_Q4_K: return decode_at<MGPU_DTYPE_Q4_K>(base, idx);
    case MGPU_DTYPE_Q5_K: return decode_at<MGPU_DTYPE_Q5_K>(base, idx);
    case MGPU_DTYPE_Q6_K: return decode_at<MGPU_DTYPE_Q6_K>(base, idx);
    case MGPU_DTYPE_IQ4_NL: return decode_at<MGPU_DTYPE_IQ4_NL>(base, idx);
    case MGPU_DTYPE_IQ4_XS: return decode_at<MGPU_DTYPE_IQ4_XS>(base, idx);
    default: return __int_as_float(0x7FC00000); /* refused on the host first */
    }
}

/* An optional parameter vector: 1 (for scales) or 0 when absent. */
__device__ __forceinline__ float param_or(const void *p, int dtype, int64_t idx, float absent)
{
    return p ? decode_any(dtype, (const uint8_t *)p, idx) : absent;
}

} // namespace mgpu_cuda

#endif
