/* The dtype table, its names in safetensors and GGUF, and the f32 decode and
 * encode entry points for every type. */
#include <string.h>

#include "core/float_bits.h"
#include "core/quant.h"
#include "mgpu/dtype.h"

static const mgpu_dtype_info dtype_table[MGPU_DTYPE_COUNT] = {
    [MGPU_DTYPE_F64] = {"F64", 1, 8, false, true},
    [MGPU_DTYPE_F32] = {"F32", 1, 4, false, true},
    [MGPU_DTYPE_F16] = {"F16", 1, 2, false, true},
    [MGPU_DTYPE_BF16] = {"BF16", 1, 2, false, true},
    [MGPU_DTYPE_F8_E4M3] = {"F8_E4M3", 1, 1, false, true},
    [MGPU_DTYPE_F8_E5M2] = {"F8_E5M2", 1, 1, false, true},
    [MGPU_DTYPE_I8] = {"I8", 1, 1, false, false},
    [MGPU_DTYPE_I16] = {"I16", 1, 2, false, false},
    [MGPU_DTYPE_I32] = {"I32", 1, 4, false, false},
    [MGPU_DTYPE_I64] = {"I64", 1, 8, false, false},
    [MGPU_DTYPE_U8] = {"U8", 1, 1, false, false},
    [MGPU_DTYPE_U16] = {"U16", 1, 2, false, false},
    [MGPU_DTYPE_U32] = {"U32", 1, 4, false, false},
    [MGPU_DTYPE_U64] = {"U64", 1, 8, false, false},
    [MGPU_DTYPE_BOOL] = {"BOOL", 1, 1, false, false},
    /* ggml block layouts: block_q4_0 = f16 d + 16 nibble bytes, ... */
    [MGPU_DTYPE_Q4_0] = {"Q4_0", 32, 18, true, true},
    [MGPU_DTYPE_Q4_1] = {"Q4_1", 32, 20, true, true},
    [MGPU_DTYPE_Q5_0] = {"Q5_0", 32, 22, true, true},
    [MGPU_DTYPE_Q5_1] = {"Q5_1", 32, 24, true, true},
    [MGPU_DTYPE_Q8_0] = {"Q8_0", 32, 34, true, true},
    [MGPU_DTYPE_Q2_K] = {"Q2_K", 256, 84, true, true},
    [MGPU_DTYPE_Q3_K] = {"Q3_K", 256, 110, true, true},
    [MGPU_DTYPE_Q4_K] = {"Q4_K", 256, 144, true, true},
    [MGPU_DTYPE_Q5_K] = {"Q5_K", 256, 176, true, true},
    [MGPU_DTYPE_Q6_K] = {"Q6_K", 256, 210, true, true},
    [MGPU_DTYPE_IQ4_NL] = {"IQ4_NL", 32, 18, true, true},
    [MGPU_DTYPE_IQ4_XS] = {"IQ4_XS", 256, 136, true, true},
};

const mgpu_dtype_info *mgpu_dtype_get_info(mgpu_dtype dtype)
{
    if ((int)dtype <= MGPU_DTYPE_INVALID || (int)dtype >= MGPU_DTYPE_COUNT)
        return NULL;
    return &dtype_table[dtype];
}

const char *mgpu_dtype_name(mgpu_dtype dtype)
{
    const mgpu_dtype_info *info = mgpu_dtype_get_info(dtype);
    return info ? info->name : "INVALID";
}

mgpu_dtype mgpu_dtype_from_name(const char *name)
{
    for (int i = 1; i < MGPU_DTYPE_COUNT; i++)
        if (strcmp(dtype_table[i].name, name) == 0)
            return (mgpu_dtype)i;
    return MGPU_DTYPE_INVALID;
}

bool mgpu_dtype_bytes_for(mgpu_dtype dtype, uint64_t n_elems, uint64_t *bytes)
{
    const mgpu_dtype_info *info = mgpu_dtype_get_info(dtype);
    if (!info || n_elems % info->block_elems != 0)
        return false;
    uint64_t blocks = n_elems / info->block_elems;
    if (blocks != 0 && info->block_bytes > UINT64_MAX / blocks)
        return false;
    *bytes = blocks * info->block_bytes;
    return true;
}

/* safetensors names are mgpu's own names for every scalar type. */
mgpu_dtype mgpu_dtype_from_safetensors(const char *name)
{
    mgpu_dtype d = mgpu_dtype_from_name(name);
    if (d == MGPU_DTYPE_INVALID || dtype_table[d].quantized)
        return MGPU_DTYPE_INVALID;
    return d;
}

const char *mgpu_dtype_safetensors_name(mgpu_dtype dtype)
{
    const mgpu_dtype_info *info = mgpu_dtype_get_info(dtype);
    return info && !info->quantized ? info->name : NULL;
}

/* ggml_type ids as written in GGUF files. Ids 4, 5 and 31-33, 36-38 were
 * removed from ggml; the names of the ones mgpu cannot decode are kept so
 * errors can say what a file holds. */
static const char *const gguf_type_names[] = {
    [0] = "F32",      [1] = "F16",     [2] = "Q4_0",    [3] = "Q4_1",     [6] = "Q5_0",
    [7] = "Q5_1",     [8] = "Q8_0",    [9] = "Q8_1",    [10] = "Q2_K",    [11] = "Q3_K",
    [12] = "Q4_K",    [13] = "Q5_K",   [14] = "Q6_K",   [15] = "Q8_K",    [16] = "IQ2_XXS",
    [17] = "IQ2_XS",  [18] = "IQ3_XXS", [19] = "IQ1_S", [20] = "IQ4_NL",  [21] = "IQ3_S",
    [22] = "IQ2_S",   [23] = "IQ4_XS", [24] = "I8",     [25] = "I16",     [26] = "I32",
    [27] = "I64",     [28] = "F64",    [29] = "IQ1_M",  [30] = "BF16",    [34] = "TQ1_0",
    [35] = "TQ2_0",   [39] = "MXFP4",
};

static const struct {
    uint32_t id;
    mgpu_dtype dtype;
} gguf_map[] = {
    {0, MGPU_DTYPE_F32},     {1, MGPU_DTYPE_F16},     {2, MGPU_DTYPE_Q4_0},  {3, MGPU_DTYPE_Q4_1},
    {6, MGPU_DTYPE_Q5_0},    {7, MGPU_DTYPE_Q5_1},    {8, MGPU_DTYPE_Q8_0},  {10, MGPU_DTYPE_Q2_K},
    {11, MGPU_DTYPE_Q3_K},   {12, MGPU_DTYPE_Q4_K},   {13, MGPU_DTYPE_Q5_K}, {14, MGPU_DTYPE_Q6_K},
    {20, MGPU_DTYPE_IQ4_NL}, {23, MGPU_DTYPE_IQ4_XS}, {24, MGPU_DTYPE_I8},   {25, MGPU_DTYPE_I16},
    {26, MGPU_DTYPE_I32},    {27, MGPU_DTYPE_I64},    {28, MGPU_DTYPE_F64},  {30, MGPU_DTYPE_BF16},
};

bool mgpu_dtype_from_gguf(uint32_t type_id, mgpu_dtype *out)
{
    for (size_t i = 0; i < sizeof gguf_map / sizeof gguf_map[0]; i++)
        if (gguf_map[i].id == type_id) {
            *out = gguf_map[i].dtype;
            return true;
        }
    return false;
}

bool mgpu_dtype_to_gguf(mgpu_dtype dtype, uint32_t *type_id)
{
    for (size_t i = 0; i < sizeof gguf_map / sizeof gguf_map[0]; i++)
        if (gguf_map[i].dtype == dtype) {
            *type_id = gguf_map[i].id;
            return true;
        }
    return false;
}

const char *mgpu_gguf_type_name(uint32_t type_id)
{
    if (type_id >= sizeof gguf_type_names / sizeof gguf_type_names[0])
        return NULL;
    return gguf_type_names[type_id];
}


mgpu_status mgpu_dequantize(mgpu_dtype dtype, const void *src, float *dst, uint64_t n)
{
    const mgpu_dtype_info *info = mgpu_dtype_get_info(dtype);
    if (!info || n % info->block_elems != 0)
        return MGPU_ERR_ARGUMENT;
    if (info->quantized) {
        mgpu_dequantize_blocks(dtype, src, dst, n / info->block_elems);
        return MGPU_OK;
    }
    /* One loop per type, so the compiler can vectorise the common ones. */
    const uint8_t *s = src;
    switch (dtype) {
    case MGPU_DTYPE_F32:
        memcpy(dst, src, (size_t)n * 4);
        return MGPU_OK;
    case MGPU_DTYPE_F16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = mgpu_f16_decode((uint16_t)(s[2 * i] | s[2 * i + 1] << 8));
        return MGPU_OK;
    case MGPU_DTYPE_BF16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = mgpu_bf16_decode((uint16_t)(s[2 * i] | s[2 * i + 1] << 8));
        return MGPU_OK;
    case MGPU_DTYPE_F8_E4M3:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = mgpu_e4m3_decode(s[i]);
        return MGPU_OK;
    case MGPU_DTYPE_F8_E5M2:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = mgpu_f16_decode((uint16_t)(s[i] << 8));
        return MGPU_OK;
    default: break;
    }
    for (uint64_t i = 0; i < n; i++) {
        float v;
        switch (dtype) {
        case MGPU_DTYPE_F64: {
            double d;
            memcpy(&d, s + 8 * i, 8);
            v = (float)d;
            break;
        }
        case MGPU_DTYPE_I8: v = (float)(int8_t)s[i]; break;
        case MGPU_DTYPE_U8: v = (float)s[i]; break;
        case MGPU_DTYPE_BOOL: v = s[i] ? 1.0f : 0.0f; break;
        case MGPU_DTYPE_I16: {
            int16_t x;
            memcpy(&x, s + 2 * i, 2);
            v = (float)x;
            break;
        }
        case MGPU_DTYPE_U16: {
            uint16_t x;
            memcpy(&x, s + 2 * i, 2);
            v = (float)x;
            break;
        }
        case MGPU_DTYPE_I32: {
            int32_t x;
            memcpy(&x, s + 4 * i, 4);
            v = (float)x;
            break;
        }
        case MGPU_DTYPE_U32: {
            uint32_t x;
            memcpy(&x, s + 4 * i, 4);
            v = (float)x;
            break;
        }
        case MGPU_DTYPE_I64: {
            int64_t x;
            memcpy(&x, s + 8 * i, 8);
            v = (float)x;
            break;
        }
        case MGPU_DTYPE_U64: {
            uint64_t x;
            memcpy(&x, s + 8 * i, 8);
            v = (float)x;
            break;
        }
        default: return MGPU_ERR_UNSUPPORTED;
        }
        dst[i] = v;
    }
    return MGPU_OK;
}

bool mgpu_dtype_can_quantize(mgpu_dtype dtype)
{
    switch (dtype) {
    case MGPU_DTYPE_F64:
    case MGPU_DTYPE_F32:
    case MGPU_DTYPE_F16:
    case MGPU_DTYPE_BF16:
    case MGPU_DTYPE_F8_E4M3:
    case MGPU_DTYPE_F8_E5M2:
    case MGPU_DTYPE_Q8_0:
    case MGPU_DTYPE_Q4_0:
    case MGPU_DTYPE_Q4_K:
    case MGPU_DTYPE_Q6_K: return true;
    default: return false;
    }
}

mgpu_status mgpu_quantize(mgpu_dtype dtype, const float *src, void *dst, uint64_t n)
{
    const mgpu_dtype_info *info = mgpu_dtype_get_info(dtype);
    if (!info || n % info->block_elems != 0)
        return MGPU_ERR_ARGUMENT;
    if (!mgpu_dtype_can_quantize(dtype))
        return MGPU_ERR_UNSUPPORTED;
    if (info->quantized)
        return mgpu_quantize_blocks(dtype, src, dst, n / info->block_elems);
    uint8_t *d = dst;
    for (uint64_t i = 0; i < n; i++) {
        switch (dtype) {
        case MGPU_DTYPE_F64: {
            double x = src[i];
            memcpy(d + 8 * i, &x, 8);
            break;
        }
        case MGPU_DTYPE_F32: memcpy(d + 4 * i, &src[i], 4); break;
        case MGPU_DTYPE_F16: {
            uint16_t h = mgpu_f32_to_f16(src[i]);
            memcpy(d + 2 * i, &h, 2);
            break;
        }
        case MGPU_DTYPE_BF16: {
            uint16_t h = mgpu_f32_to_bf16(src[i]);
            memcpy(d + 2 * i, &h, 2);
            break;
        }
        case MGPU_DTYPE_F8_E4M3: d[i] = mgpu_f32_to_fp8_e4m3(src[i]); break;
        case MGPU_DTYPE_F8_E5M2: d[i] = mgpu_f32_to_fp8_e5m2(src[i]); break;
        default: return MGPU_ERR_UNSUPPORTED;
        }
    }
    return MGPU_OK;
}
