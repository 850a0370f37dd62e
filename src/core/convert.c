/* Scalar conversions between f32 and the 16- and 8-bit float formats.
 * Written on bit patterns so results do not depend on the compiler's or the
 * processor's own half-precision support. */
#include <string.h>

#include "core/float_bits.h"
#include "mgpu/dtype.h"

static uint32_t f32_bits(float f)
{
    return mgpu_bits_of_f32(f);
}

float mgpu_f16_to_f32(uint16_t h)
{
    return mgpu_f16_decode(h);
}

/* Round-to-nearest-even of an f32 to a float format with `man_bits` mantissa
 * bits, exponent bias `bias`, and largest normal exponent field `max_exp`.
 * Returns the encoded magnitude (without sign); `overflow` is set when the
 * value rounds beyond the largest finite number. Used for f16 and fp8. */
static uint32_t round_to_small_float(uint32_t abs_bits, int man_bits, int bias, int max_exp,
                                     int *overflow)
{
    int e = (int)(abs_bits >> 23) - 127; /* unbiased exponent of a normal f32 */
    uint32_t m = (abs_bits & 0x7FFFFFu) | 0x800000u;
    int shift; /* how many f32 mantissa bits to drop */
    int target_e = e + bias;
    *overflow = 0;
    if ((abs_bits >> 23) == 0) /* f32 subnormal: far below any small format */
        return 0;
    if (target_e <= 0) {
        /* subnormal in the target: the implicit bit moves into the mantissa */
        shift = 23 - man_bits + (1 - target_e);
        target_e = 0;
    } else {
        shift = 23 - man_bits;
    }
    if (shift > 31)
        return 0;
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
        q++;
    /* q holds the implicit bit for normals; build the encoding by adding the
     * exponent so a mantissa carry correctly bumps the exponent. */
    uint32_t enc;
    if (target_e == 0)
        enc = q; /* subnormal (may round up into the smallest normal) */
    else
        enc = ((uint32_t)(target_e - 1) << man_bits) + q;
    if ((int)(enc >> man_bits) > max_exp)
        *overflow = 1;
    return enc;
}

uint16_t mgpu_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) /* NaN: quiet, keep top payload bits */
        return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x1FFu));
    if (a == 0x7F800000u)
        return (uint16_t)(sign | 0x7C00u);
    if (a >= 0x47800000u) /* >= 65536: rounds to infinity */
        return (uint16_t)(sign | 0x7C00u);
    int overflow;
    uint32_t enc = round_to_small_float(a, 10, 15, 30, &overflow);
    if (overflow)
        return (uint16_t)(sign | 0x7C00u);
    return (uint16_t)(sign | enc);
}

float mgpu_bf16_to_f32(uint16_t h)
{
    return mgpu_bf16_decode(h);
}

uint16_t mgpu_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) /* NaN: force quiet so it stays NaN */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float mgpu_fp8_e4m3_to_f32(uint8_t v)
{
    return mgpu_e4m3_decode(v);
}

uint8_t mgpu_f32_to_fp8_e4m3(float f)
{
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return (uint8_t)(sign | 0x7Fu);
    if (a >= 0x43E00000u) /* >= 448 (and inf): saturate to the largest finite */
        return (uint8_t)(sign | 0x7Eu);
    int overflow;
    uint32_t enc = round_to_small_float(a, 3, 7, 15, &overflow);
    /* e4m3fn uses exponent 15 for finite values except mantissa 7 (NaN). */
    if (overflow || enc > 0x7Eu)
        enc = 0x7Eu;
    return (uint8_t)(sign | enc);
}

float mgpu_fp8_e5m2_to_f32(uint8_t v)
{
    /* e5m2 is the top byte of an f16 */
    return mgpu_f16_decode((uint16_t)(v << 8));
}

uint8_t mgpu_f32_to_fp8_e5m2(float f)
{
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return (uint8_t)(sign | 0x7Fu);
    if (a == 0x7F800000u) /* e5m2 has infinities: keep them */
        return (uint8_t)(sign | 0x7Cu);
    if (a >= 0x47600000u) /* >= 57344, the largest finite value: saturate */
        return (uint8_t)(sign | 0x7Bu);
    int overflow;
    uint32_t enc = round_to_small_float(a, 2, 15, 30, &overflow);
    if (overflow)
        enc = 0x7Bu;
    return (uint8_t)(sign | enc);
}
