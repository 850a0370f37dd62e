/* A seeded, platform-independent random source for tests (splitmix64), so
 * random-data tests are reproducible everywhere. One state per test file. */
#ifndef MGPU_TEST_RANDOM_H
#define MGPU_TEST_RANDOM_H

#include <stdint.h>

static uint64_t rng_state;

static inline void rng_seed(uint64_t seed)
{
    rng_state = seed;
}

static inline uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi), rounded to float. */
static inline float rng_float(double lo, double hi)
{
    double u = (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0);
    return (float)(lo + (hi - lo) * u);
}

#endif
