/* Inline decoders for the 16- and 8-bit float formats, shared by the
 * exported scalar functions and the bulk loops that must inline them. The
 * f16 decoder rebiases the exponent with one add and one multiply (which
 * also turns f16 infinities and NaNs into f32 ones) and rebuilds subnormals
 * with one subtraction, then selects: no branches, so loops vectorise. */
#ifndef MGPU_CORE_FLOAT_BITS_H
#define MGPU_CORE_FLOAT_BITS_H

#include <stdint.h>
#include <string.h>

static inline uint32_t mgpu_bits_of_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float mgpu_f32_of_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float mgpu_f16_decode(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t rest = (uint32_t)(h & 0x7FFFu); /* exponent and mantissa */
    /* Normals (and inf/NaN): shift into f32 position, add 224 to the
     * exponent field, then scale by 2^-112 for a net +112 = 127 - 15 bias. */
    float normal = mgpu_f32_of_bits((rest << 13) + (224u << 23)) * 0x1p-112f;
    /* Subnormals are m * 2^-24: put m in the top mantissa bits under the
     * exponent 2^-14, which reads as 2^-14 + m * 2^-24, and subtract 2^-14
     * (exact). */
    float sub = mgpu_f32_of_bits((113u << 23) | (rest << 13)) - 0x1p-14f;
    uint32_t is_sub = 0u - (uint32_t)(rest < 0x0400u); /* all ones or zero */
    uint32_t bits = (mgpu_bits_of_f32(sub) & is_sub) | (mgpu_bits_of_f32(normal) & ~is_sub);
    return mgpu_f32_of_bits(sign | bits);
}

static inline float mgpu_bf16_decode(uint16_t h)
{
    return mgpu_f32_of_bits((uint32_t)h << 16);
}

static inline float mgpu_e4m3_decode(uint8_t v)
{
    uint32_t sign = (uint32_t)(v & 0x80u) << 24;
    uint32_t rest = v & 0x7Fu;
    /* Same idea as f16: bias 7, so add 120 to the exponent field for normals;
     * subnormals are m * 2^-9. 0x7F is e4m3fn's only NaN (per sign). */
    uint32_t normal = (rest << 20) + (120u << 23);
    uint32_t sub = mgpu_bits_of_f32((float)rest * 0x1p-9f);
    uint32_t is_sub = 0u - (uint32_t)(rest < 0x08u);
    uint32_t is_nan = 0u - (uint32_t)(rest == 0x7Fu);
    uint32_t bits = (sub & is_sub) | (normal & ~is_sub);
    bits = (0x7FC00000u & is_nan) | (bits & ~is_nan);
    return mgpu_f32_of_bits(sign | bits);
}

#endif
