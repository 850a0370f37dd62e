// The CUDA plugin's device decoders (src/backend/cuda/cuda_decode.cuh),
// compiled for the host with stand-ins for the few CUDA intrinsics they
// use, against the CPU decoders (mgpu_dequantize, core/quant.c) on blocks
// of entirely random bytes (scales, NaNs and infinities included) of every
// floating dtype: the same bits for every value (NaN payloads aside). The
// GPU compiles the same source with --fmad=false, so what is checked here
// is the field extraction and the order of the f32 operations.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#define __device__
#define __forceinline__ inline
#define __constant__
// volatile: one rounding per operation, as the GPU's _rn intrinsics
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline uint32_t __float_as_uint(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline double __longlong_as_double(long long u) { double f; std::memcpy(&f, &u, 8); return f; }

#include "backend/cuda/cuda_decode.cuh"

int main()
{
    uint64_t s = 0x2545F4914F6CDD1Du;
    int bad = 0;
    for (int t = 1; t < MGPU_DTYPE_COUNT; t++) {
        const mgpu_dtype_info *info = mgpu_dtype_get_info((mgpu_dtype)t);
        if (!info->floating)
            continue;
        const int64_t n = (int64_t)info->block_elems * 64;
        std::vector<uint8_t> w((size_t)(n / info->block_elems * info->block_bytes));
        for (auto &b : w) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            b = (uint8_t)s;
        }
        std::vector<float> ref((size_t)n);
        if (mgpu_dequantize((mgpu_dtype)t, w.data(), ref.data(), (uint64_t)n) != MGPU_OK)
            return 1;
        int mism = 0;
        for (int64_t i = 0; i < n; i++) {
            const float g = mgpu_cuda::decode_any(t, w.data(), i);
            const float r = ref[(size_t)i];
            if (std::memcmp(&g, &r, 4) != 0 && !(g != g && r != r) && mism++ < 3)
                std::printf("%s value %lld: %.9g, CPU %.9g\n", info->name, (long long)i, g, r);
        }
        std::printf("%-8s %s\n", info->name, mism ? "MISMATCH" : "same bits");
        bad += mism;
    }
    return bad != 0;
}
