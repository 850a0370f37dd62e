/* PyTorch-compatible CPU noise: MT19937 and torch's two randn paths
 * (facts from aten/src/ATen/core/MT19937RNGEngine.h, TransformationHelper.h,
 * DistributionsHelper.h and native/cpu/DistributionTemplates.h; written here
 * from those descriptions). */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "sample/noise.h"

enum { MT_M = 397 };
static const double PI = 3.14159265358979323846;

void mgpu_noise_seed(mgpu_noise_generator *gen, uint64_t seed)
{
    /* torch keeps the full 64-bit seed but MT19937 only takes 32 bits. */
    gen->state[0] = (uint32_t)(seed & 0xFFFFFFFFu);
    for (uint32_t i = 1; i < MGPU_MT19937_N; i++) {
        uint32_t prev = gen->state[i - 1];
        gen->state[i] = 1812433253u * (prev ^ (prev >> 30)) + i;
    }
    gen->next = MGPU_MT19937_N; /* regenerate before the first output */
    gen->has_cached = 0;
    gen->cached = 0.0;
}

static void mt_regenerate(uint32_t *s)
{
    for (int i = 0; i < MGPU_MT19937_N; i++) {
        uint32_t y = (s[i] & 0x80000000u) | (s[(i + 1) % MGPU_MT19937_N] & 0x7FFFFFFFu);
        s[i] = s[(i + MT_M) % MGPU_MT19937_N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908B0DFu : 0u);
    }
}

uint32_t mgpu_noise_next_u32(mgpu_noise_generator *gen)
{
    if (gen->next >= MGPU_MT19937_N) {
        mt_regenerate(gen->state);
        gen->next = 0;
    }
    uint32_t y = gen->state[gen->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9D2C5680u;
    y ^= (y << 15) & 0xEFC60000u;
    y ^= y >> 18;
    return y;
}

/* torch's uniform_real for float: the low 24 bits of one draw over 2^24,
 * so [0, 1) and exact in float. */
static float uniform_f32(mgpu_noise_generator *gen)
{
    return (float)(mgpu_noise_next_u32(gen) & 0xFFFFFFu) * (1.0f / 16777216.0f);
}

/* For double: two draws, the first the high word, low 53 bits over 2^53. */
static double uniform_f64(mgpu_noise_generator *gen)
{
    uint64_t hi = mgpu_noise_next_u32(gen);
    uint64_t lo = mgpu_noise_next_u32(gen);
    uint64_t v = ((hi << 32) | lo) & ((UINT64_C(1) << 53) - 1);
    return (double)v * (1.0 / 9007199254740992.0);
}

/* Box-Muller over 16 uniforms: element j pairs with j + 8, in float as
 * torch's scalar normal_fill_16 does (the angle goes through double). */
static void box_muller_16(float *d)
{
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j]; /* (0, 1], safe for log */
        float u2 = d[j + 8];
        float radius = sqrtf(-2.0f * logf(u1));
        float theta = (float)(2.0 * PI * (double)u2);
        d[j] = radius * cosf(theta);
        d[j + 8] = radius * sinf(theta);
    }
}

mgpu_status mgpu_noise_fill(mgpu_noise_generator *gen, float *out, int64_t n, mgpu_error *err)
{
    if (!gen || n < 0 || (n > 0 && !out))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "noise: invalid arguments (generator %s, n=%lld, out %s)",
                              gen ? "set" : "NULL", (long long)n, out ? "set" : "NULL");
    if (n >= 16) {
        /* All uniforms first, then Box-Muller in blocks of 16; a ragged end
         * redraws 16 fresh uniforms for the last 16 slots (overwriting
         * values already transformed), exactly like torch. The cached
         * small-path value is neither used nor cleared here. */
        for (int64_t i = 0; i < n; i++)
            out[i] = uniform_f32(gen);
        for (int64_t i = 0; i + 16 <= n; i += 16)
            box_muller_16(out + i);
        if (n % 16 != 0) {
            float *tail = out + n - 16;
            for (int i = 0; i < 16; i++)
                tail[i] = uniform_f32(gen);
            box_muller_16(tail);
        }
        return MGPU_OK;
    }
    /* Fewer than 16: torch's normal_distribution<double>, one value at a
     * time, the sine half kept for the next value (even across calls). */
    for (int64_t i = 0; i < n; i++) {
        double v;
        if (gen->has_cached) {
            v = gen->cached;
            gen->has_cached = 0;
        } else {
            double u1 = uniform_f64(gen);
            double u2 = uniform_f64(gen);
            double r = sqrt(-2.0 * log1p(-u2));
            double theta = 2.0 * PI * u1;
            gen->cached = r * sin(theta);
            gen->has_cached = 1;
            v = r * cos(theta);
        }
        out[i] = (float)v;
    }
    return MGPU_OK;
}

mgpu_status mgpu_noise_randn(uint64_t seed, float *out, int64_t n, mgpu_error *err)
{
    mgpu_noise_generator gen;
    mgpu_noise_seed(&gen, seed);
    return mgpu_noise_fill(&gen, out, n, err);
}
