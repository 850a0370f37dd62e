/* dtype table, names and ids, and the scalar float conversions, checked
 * against IEEE facts and exhaustively over every 16- and 8-bit pattern. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "mgpu/dtype.h"

static float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_table(void **state)
{
    (void)state;
    /* Block sizes and bytes from ggml's block structs. */
    static const struct {
        mgpu_dtype d;
        uint32_t elems, bytes;
    } expect[] = {
        {MGPU_DTYPE_Q4_0, 32, 2 + 16},        {MGPU_DTYPE_Q4_1, 32, 2 + 2 + 16},
        {MGPU_DTYPE_Q5_0, 32, 2 + 4 + 16},    {MGPU_DTYPE_Q5_1, 32, 2 + 2 + 4 + 16},
        {MGPU_DTYPE_Q8_0, 32, 2 + 32},        {MGPU_DTYPE_Q2_K, 256, 16 + 64 + 2 + 2},
        {MGPU_DTYPE_Q3_K, 256, 32 + 64 + 12 + 2}, {MGPU_DTYPE_Q4_K, 256, 2 + 2 + 12 + 128},
        {MGPU_DTYPE_Q5_K, 256, 2 + 2 + 12 + 32 + 128}, {MGPU_DTYPE_Q6_K, 256, 128 + 64 + 16 + 2},
        {MGPU_DTYPE_IQ4_NL, 32, 2 + 16},      {MGPU_DTYPE_IQ4_XS, 256, 2 + 2 + 4 + 128},
        {MGPU_DTYPE_F64, 1, 8}, {MGPU_DTYPE_BF16, 1, 2}, {MGPU_DTYPE_F8_E5M2, 1, 1},
        {MGPU_DTYPE_BOOL, 1, 1}, {MGPU_DTYPE_U64, 1, 8},
    };
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        const mgpu_dtype_info *info = mgpu_dtype_get_info(expect[i].d);
        assert_non_null(info);
        assert_int_equal(info->block_elems, expect[i].elems);
        assert_int_equal(info->block_bytes, expect[i].bytes);
        assert_int_equal(mgpu_dtype_from_name(info->name), expect[i].d);
    }
    assert_null(mgpu_dtype_get_info(MGPU_DTYPE_INVALID));
    assert_null(mgpu_dtype_get_info(MGPU_DTYPE_COUNT));
    assert_int_equal(mgpu_dtype_from_name("Q9_9"), MGPU_DTYPE_INVALID);
}

static void test_bytes_for(void **state)
{
    (void)state;
    uint64_t b;
    assert_true(mgpu_dtype_bytes_for(MGPU_DTYPE_Q4_K, 512, &b));
    assert_int_equal(b, 288);
    assert_false(mgpu_dtype_bytes_for(MGPU_DTYPE_Q4_K, 255, &b));
    assert_true(mgpu_dtype_bytes_for(MGPU_DTYPE_F32, 3, &b));
    assert_int_equal(b, 12);
    assert_false(mgpu_dtype_bytes_for(MGPU_DTYPE_F64, UINT64_MAX / 4, &b));
    assert_true(mgpu_dtype_bytes_for(MGPU_DTYPE_F16, 0, &b));
    assert_int_equal(b, 0);
}

static void test_safetensors_names(void **state)
{
    (void)state;
    assert_int_equal(mgpu_dtype_from_safetensors("F8_E4M3"), MGPU_DTYPE_F8_E4M3);
    assert_int_equal(mgpu_dtype_from_safetensors("BF16"), MGPU_DTYPE_BF16);
    assert_int_equal(mgpu_dtype_from_safetensors("BOOL"), MGPU_DTYPE_BOOL);
    assert_int_equal(mgpu_dtype_from_safetensors("Q8_0"), MGPU_DTYPE_INVALID);
    assert_int_equal(mgpu_dtype_from_safetensors("f16"), MGPU_DTYPE_INVALID);
    assert_null(mgpu_dtype_safetensors_name(MGPU_DTYPE_Q4_K));
    assert_string_equal(mgpu_dtype_safetensors_name(MGPU_DTYPE_I64), "I64");
}

static void test_gguf_ids(void **state)
{
    (void)state;
    /* ggml_type values as GGUF files carry them. */
    static const struct {
        uint32_t id;
        mgpu_dtype d;
    } ids[] = {{0, MGPU_DTYPE_F32},     {1, MGPU_DTYPE_F16},     {2, MGPU_DTYPE_Q4_0},
               {3, MGPU_DTYPE_Q4_1},    {6, MGPU_DTYPE_Q5_0},    {7, MGPU_DTYPE_Q5_1},
               {8, MGPU_DTYPE_Q8_0},    {10, MGPU_DTYPE_Q2_K},   {11, MGPU_DTYPE_Q3_K},
               {12, MGPU_DTYPE_Q4_K},   {13, MGPU_DTYPE_Q5_K},   {14, MGPU_DTYPE_Q6_K},
               {20, MGPU_DTYPE_IQ4_NL}, {23, MGPU_DTYPE_IQ4_XS}, {24, MGPU_DTYPE_I8},
               {25, MGPU_DTYPE_I16},    {26, MGPU_DTYPE_I32},    {27, MGPU_DTYPE_I64},
               {28, MGPU_DTYPE_F64},    {30, MGPU_DTYPE_BF16}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        mgpu_dtype d;
        uint32_t back;
        assert_true(mgpu_dtype_from_gguf(ids[i].id, &d));
        assert_int_equal(d, ids[i].d);
        assert_true(mgpu_dtype_to_gguf(d, &back));
        assert_int_equal(back, ids[i].id);
    }
    mgpu_dtype d;
    assert_false(mgpu_dtype_from_gguf(16, &d)); /* IQ2_XXS: known to ggml, not to mgpu */
    assert_string_equal(mgpu_gguf_type_name(16), "IQ2_XXS");
    assert_false(mgpu_dtype_from_gguf(4, &d)); /* removed from ggml */
    assert_null(mgpu_gguf_type_name(4));
    assert_false(mgpu_dtype_from_gguf(99, &d));
    assert_null(mgpu_gguf_type_name(99));
    assert_null(mgpu_gguf_type_name(UINT32_MAX));
    uint32_t id;
    assert_false(mgpu_dtype_to_gguf(MGPU_DTYPE_F8_E4M3, &id)); /* GGUF has no fp8 */
}

static void test_f16(void **state)
{
    (void)state;
    assert_int_equal(mgpu_f32_to_f16(1.0f), 0x3C00);
    assert_int_equal(mgpu_f32_to_f16(-2.0f), 0xC000);
    assert_int_equal(mgpu_f32_to_f16(65504.0f), 0x7BFF);
    assert_int_equal(mgpu_f32_to_f16(65519.0f), 0x7BFF);   /* below the midpoint */
    assert_int_equal(mgpu_f32_to_f16(65520.0f), 0x7C00);   /* midpoint, to even: inf */
    assert_int_equal(mgpu_f32_to_f16(0x1p-24f), 0x0001);   /* smallest subnormal */
    assert_int_equal(mgpu_f32_to_f16(0x1p-25f), 0x0000);   /* tie to even: zero */
    assert_int_equal(mgpu_f32_to_f16(0x1.8p-25f), 0x0001); /* above the tie */
    assert_int_equal(mgpu_f32_to_f16(0x1.8p-24f), 0x0002); /* tie between 1 and 2 -> 2 */
    assert_int_equal(mgpu_f32_to_f16(1.0f + 0x1p-11f), 0x3C00);       /* tie -> even */
    assert_int_equal(mgpu_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3C02);   /* tie -> even */
    assert_int_equal(mgpu_f32_to_f16(0x1.ffcp-15f), 0x0400);          /* rounds up into normal */
    assert_int_equal(mgpu_f32_to_f16(INFINITY), 0x7C00);
    assert_int_equal(mgpu_f32_to_f16(-INFINITY), 0xFC00);
    assert_true(isnan(mgpu_f16_to_f32(mgpu_f32_to_f16(NAN))));
    assert_true(mgpu_f16_to_f32(0x7BFF) == 65504.0f);
    assert_true(mgpu_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(isinf(mgpu_f16_to_f32(0x7C00)));
    /* Every non-NaN pattern survives a round trip, and every midpoint between
     * neighbours rounds to the one with the even mantissa. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = mgpu_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true(((h >> 10) & 0x1F) == 0x1F && (h & 0x3FF) != 0);
            continue;
        }
        assert_int_equal(mgpu_f32_to_f16(f), h);
        if ((h & 0x7FFF) < 0x7BFF) { /* finite successor exists */
            float g = mgpu_f16_to_f32((uint16_t)(h + 1));
            double mid = ((double)f + (double)g) / 2.0;
            uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            assert_int_equal(mgpu_f32_to_f16((float)mid), want);
        }
    }
}

static void test_bf16(void **state)
{
    (void)state;
    assert_int_equal(mgpu_f32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(mgpu_f32_to_bf16(bits_to_float(0x3F808000u)), 0x3F80); /* tie -> even */
    assert_int_equal(mgpu_f32_to_bf16(bits_to_float(0x3F818000u)), 0x3F82); /* tie -> even */
    assert_int_equal(mgpu_f32_to_bf16(bits_to_float(0x3F808001u)), 0x3F81);
    assert_int_equal(mgpu_f32_to_bf16(bits_to_float(0x7F7FFFFFu)), 0x7F80); /* max float -> inf */
    assert_true(isnan(mgpu_bf16_to_f32(mgpu_f32_to_bf16(bits_to_float(0x7F800001u)))));
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = mgpu_bf16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        assert_int_equal(mgpu_f32_to_bf16(f), h);
    }
}

static void test_fp8_e4m3(void **state)
{
    (void)state;
    assert_true(mgpu_fp8_e4m3_to_f32(0x7E) == 448.0f);
    assert_true(mgpu_fp8_e4m3_to_f32(0xFE) == -448.0f);
    assert_true(isnan(mgpu_fp8_e4m3_to_f32(0x7F)));
    assert_true(isnan(mgpu_fp8_e4m3_to_f32(0xFF)));
    assert_true(mgpu_fp8_e4m3_to_f32(0x38) == 1.0f);
    assert_true(mgpu_fp8_e4m3_to_f32(0x01) == 0x1p-9f);
    assert_true(mgpu_fp8_e4m3_to_f32(0x08) == 0x1p-6f);
    assert_true(mgpu_fp8_e4m3_to_f32(0x78) == 256.0f); /* exponent 15 is finite in e4m3fn */
    assert_int_equal(mgpu_f32_to_fp8_e4m3(1000.0f), 0x7E);  /* saturates */
    assert_int_equal(mgpu_f32_to_fp8_e4m3(-1000.0f), 0xFE);
    assert_int_equal(mgpu_f32_to_fp8_e4m3(INFINITY), 0x7E);
    assert_int_equal(mgpu_f32_to_fp8_e4m3(NAN) & 0x7F, 0x7F);
    assert_int_equal(mgpu_f32_to_fp8_e4m3(1.0625f), 0x38); /* tie between 1 and 1.125 -> even */
    assert_int_equal(mgpu_f32_to_fp8_e4m3(1.1875f), 0x3A); /* tie between 1.125 and 1.25 -> even */
    assert_int_equal(mgpu_f32_to_fp8_e4m3(0x1p-10f), 0x00); /* half the smallest: to even */
    assert_int_equal(mgpu_f32_to_fp8_e4m3(0x1.8p-10f), 0x01);
    for (uint32_t v = 0; v < 256; v++) {
        float f = mgpu_fp8_e4m3_to_f32((uint8_t)v);
        if (isnan(f))
            continue;
        assert_int_equal(mgpu_f32_to_fp8_e4m3(f), v);
    }
}

static void test_fp8_e5m2(void **state)
{
    (void)state;
    assert_true(mgpu_fp8_e5m2_to_f32(0x7B) == 57344.0f);
    assert_true(isinf(mgpu_fp8_e5m2_to_f32(0x7C)));
    assert_true(isinf(mgpu_fp8_e5m2_to_f32(0xFC)) && mgpu_fp8_e5m2_to_f32(0xFC) < 0);
    assert_true(isnan(mgpu_fp8_e5m2_to_f32(0x7D)));
    assert_true(mgpu_fp8_e5m2_to_f32(0x3C) == 1.0f);
    assert_true(mgpu_fp8_e5m2_to_f32(0x01) == 0x1p-16f);
    assert_int_equal(mgpu_f32_to_fp8_e5m2(1e6f), 0x7B); /* saturates */
    assert_int_equal(mgpu_f32_to_fp8_e5m2(-60000.0f), 0xFB);
    assert_int_equal(mgpu_f32_to_fp8_e5m2(INFINITY), 0x7C);
    assert_int_equal(mgpu_f32_to_fp8_e5m2(1.125f), 0x3C); /* tie between 1 and 1.25 -> even */
    assert_int_equal(mgpu_f32_to_fp8_e5m2(1.375f), 0x3E); /* tie between 1.25 and 1.5 -> even */
    for (uint32_t v = 0; v < 256; v++) {
        float f = mgpu_fp8_e5m2_to_f32((uint8_t)v);
        if (isnan(f))
            continue;
        assert_int_equal(mgpu_f32_to_fp8_e5m2(f), v);
    }
}

static void test_dequantize_scalars(void **state)
{
    (void)state;
    float out[4];
    const int8_t i8[4] = {-128, -1, 0, 127};
    assert_int_equal(mgpu_dequantize(MGPU_DTYPE_I8, i8, out, 4), MGPU_OK);
    assert_true(out[0] == -128.0f && out[1] == -1.0f && out[3] == 127.0f);
    const uint8_t b[4] = {0, 1, 2, 255};
    assert_int_equal(mgpu_dequantize(MGPU_DTYPE_BOOL, b, out, 4), MGPU_OK);
    assert_true(out[0] == 0.0f && out[1] == 1.0f && out[2] == 1.0f && out[3] == 1.0f);
    const int64_t i64[2] = {-5, 1LL << 40};
    assert_int_equal(mgpu_dequantize(MGPU_DTYPE_I64, i64, out, 2), MGPU_OK);
    assert_true(out[0] == -5.0f && out[1] == 0x1p40f);
    const double f64[2] = {0.5, -3.25};
    assert_int_equal(mgpu_dequantize(MGPU_DTYPE_F64, f64, out, 2), MGPU_OK);
    assert_true(out[0] == 0.5f && out[1] == -3.25f);
    /* Unaligned source: every decoder must read through memcpy. */
    uint8_t raw[1 + 4 * 2];
    uint16_t h[2] = {0x3C00, 0xC000};
    memcpy(raw + 1, h, 4);
    assert_int_equal(mgpu_dequantize(MGPU_DTYPE_F16, raw + 1, out, 2), MGPU_OK);
    assert_true(out[0] == 1.0f && out[1] == -2.0f);
    assert_int_equal(mgpu_dequantize(MGPU_DTYPE_INVALID, raw, out, 1), MGPU_ERR_ARGUMENT);
}

static void test_quantize_floats(void **state)
{
    (void)state;
    const float in[3] = {1.0f, -0.5f, 3.0e5f};
    uint16_t h[3];
    assert_int_equal(mgpu_quantize(MGPU_DTYPE_F16, in, h, 3), MGPU_OK);
    assert_int_equal(h[0], 0x3C00);
    assert_int_equal(h[2], 0x7C00);
    uint8_t e4[3];
    assert_int_equal(mgpu_quantize(MGPU_DTYPE_F8_E4M3, in, e4, 3), MGPU_OK);
    assert_int_equal(e4[0], 0x38);
    assert_int_equal(e4[2], 0x7E);
    assert_false(mgpu_dtype_can_quantize(MGPU_DTYPE_Q5_K));
    assert_false(mgpu_dtype_can_quantize(MGPU_DTYPE_I32));
    assert_int_equal(mgpu_quantize(MGPU_DTYPE_I32, in, h, 3), MGPU_ERR_UNSUPPORTED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),         cmocka_unit_test(test_bytes_for),
        cmocka_unit_test(test_safetensors_names), cmocka_unit_test(test_gguf_ids),
        cmocka_unit_test(test_f16),           cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_fp8_e4m3),      cmocka_unit_test(test_fp8_e5m2),
        cmocka_unit_test(test_dequantize_scalars), cmocka_unit_test(test_quantize_floats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
