/* GGUF writer and reader: every value type including nested arrays, the
 * dimension-order convention checked on bytes written by hand, alignment,
 * and a round trip of quantized tensors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "mgpu/gguf.h"
#include "test_util.h"

/* A minimal hand serializer, independent of the library's writer. */
typedef struct buf {
    uint8_t data[4096];
    size_t n;
} buf;

static void put(buf *b, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        b->data[b->n++] = (uint8_t)(v >> (8 * i));
}

static void put_str(buf *b, const char *s)
{
    put(b, strlen(s), 8);
    memcpy(b->data + b->n, s, strlen(s));
    b->n += strlen(s);
}

static void test_dimension_order(void **state)
{
    (void)state;
    /* One F32 tensor with ne = [4, 3] (ne[0] fastest): that is 3 rows of 4,
     * row-major shape [3, 4]. */
    buf b = {.n = 0};
    memcpy(b.data, "GGUF", 4);
    b.n = 4;
    put(&b, 3, 4);  /* version */
    put(&b, 1, 8);  /* tensors */
    put(&b, 1, 8);  /* kv */
    put_str(&b, "general.architecture");
    put(&b, 8, 4);
    put_str(&b, "flux");
    put_str(&b, "m.weight");
    put(&b, 2, 4);
    put(&b, 4, 8);
    put(&b, 3, 8);
    put(&b, 0, 4); /* F32 */
    put(&b, 0, 8);
    while (b.n % 32)
        b.data[b.n++] = 0;
    size_t data_at = b.n;
    for (int i = 0; i < 12; i++) {
        float f = (float)i;
        memcpy(b.data + b.n, &f, 4);
        b.n += 4;
    }
    mgpu_gguf *g;
    mgpu_error err = {0};
    assert_int_equal(mgpu_gguf_open_memory(b.data, b.n, "hand.gguf", &g, &err), MGPU_OK);
    const mgpu_tensor_info *t = mgpu_gguf_find(g, "m.weight");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 3);
    assert_int_equal(t->shape[1], 4);
    assert_int_equal(t->file_offset, data_at);
    assert_int_equal(mgpu_gguf_data_offset(g), data_at);
    /* element [1][0] of a row-major [3,4] is the 5th value */
    float v;
    memcpy(&v, (const uint8_t *)t->data + 4 * 4, 4);
    assert_true(v == 4.0f);
    assert_string_equal(mgpu_gguf_find_kv(g, "general.architecture")->string.data, "flux");
    mgpu_gguf_close(g);

    /* The writer must lay down the same ne order: write [3,4], read raw ne. */
    const char *path = test_path("order.gguf");
    mgpu_gguf_writer *w;
    uint64_t shape[2] = {3, 4};
    float values[12] = {0};
    assert_int_equal(mgpu_gguf_writer_create(path, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_tensor(w, "m.weight", MGPU_DTYPE_F32, 2, shape, &err),
                     MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_write(w, values, sizeof values, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_finish(w, &err), MGPU_OK);
    FILE *f = fopen(path, "rb");
    uint8_t raw[128];
    size_t got = fread(raw, 1, sizeof raw, f);
    fclose(f);
    assert_true(got > 24 + 8 + 8 + 4 + 16);
    /* header 24 bytes, then name (8 + 8), n_dims (4), ne[0], ne[1] */
    size_t at = 24 + 8 + 8 + 4;
    uint64_t ne0 = 0, ne1 = 0;
    for (int i = 7; i >= 0; i--) {
        ne0 = (ne0 << 8) | raw[at + i];
        ne1 = (ne1 << 8) | raw[at + 8 + i];
    }
    assert_int_equal(ne0, 4);
    assert_int_equal(ne1, 3);
    remove(path);
}

static void test_all_value_types(void **state)
{
    (void)state;
    const char *path = test_path("kv.gguf");
    mgpu_error err = {0};
    mgpu_gguf_writer *w;
    assert_int_equal(mgpu_gguf_writer_create(path, &w, &err), MGPU_OK);
    mgpu_gguf_value v;
    struct {
        const char *key;
        mgpu_gguf_type type;
        int64_t i;
    } ints[] = {{"u8", MGPU_GGUF_UINT8, 200},        {"i8", MGPU_GGUF_INT8, -100},
                {"u16", MGPU_GGUF_UINT16, 60000},    {"i16", MGPU_GGUF_INT16, -30000},
                {"u32", MGPU_GGUF_UINT32, 4000000000}, {"i32", MGPU_GGUF_INT32, -2000000000},
                {"u64", MGPU_GGUF_UINT64, 1LL << 60},  {"i64", MGPU_GGUF_INT64, -(1LL << 60)}};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        memset(&v, 0, sizeof v);
        v.type = ints[k].type;
        if (v.type == MGPU_GGUF_INT8 || v.type == MGPU_GGUF_INT16 || v.type == MGPU_GGUF_INT32 ||
            v.type == MGPU_GGUF_INT64)
            v.i64 = ints[k].i;
        else
            v.u64 = (uint64_t)ints[k].i;
        assert_int_equal(mgpu_gguf_writer_add_kv(w, ints[k].key, &v, &err), MGPU_OK);
    }
    v = (mgpu_gguf_value){.type = MGPU_GGUF_FLOAT32, .f64 = 0.25};
    assert_int_equal(mgpu_gguf_writer_add_kv(w, "f32", &v, &err), MGPU_OK);
    v = (mgpu_gguf_value){.type = MGPU_GGUF_FLOAT64, .f64 = 1e-300};
    assert_int_equal(mgpu_gguf_writer_add_kv(w, "f64", &v, &err), MGPU_OK);
    v = (mgpu_gguf_value){.type = MGPU_GGUF_BOOL, .b = true};
    assert_int_equal(mgpu_gguf_writer_add_kv(w, "bool", &v, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_string(w, "str", "h\xc3\xa9llo", &err), MGPU_OK);
    /* array of u32 */
    const uint32_t nums[3] = {7, 8, 9};
    v = (mgpu_gguf_value){.type = MGPU_GGUF_ARRAY};
    v.array.elem_type = MGPU_GGUF_UINT32;
    v.array.count = 3;
    v.array.raw = nums;
    assert_int_equal(mgpu_gguf_writer_add_kv(w, "arr_u32", &v, &err), MGPU_OK);
    /* array of strings */
    mgpu_gguf_value strs[2] = {{.type = MGPU_GGUF_STRING}, {.type = MGPU_GGUF_STRING}};
    strs[0].string.data = "a";
    strs[0].string.length = 1;
    strs[1].string.data = "";
    strs[1].string.length = 0;
    v = (mgpu_gguf_value){.type = MGPU_GGUF_ARRAY};
    v.array.elem_type = MGPU_GGUF_STRING;
    v.array.count = 2;
    v.array.items = strs;
    assert_int_equal(mgpu_gguf_writer_add_kv(w, "arr_str", &v, &err), MGPU_OK);
    /* array of arrays: [[7, 8, 9], []] */
    mgpu_gguf_value inner[2] = {{.type = MGPU_GGUF_ARRAY}, {.type = MGPU_GGUF_ARRAY}};
    inner[0].array.elem_type = MGPU_GGUF_UINT32;
    inner[0].array.count = 3;
    inner[0].array.raw = nums;
    inner[1].array.elem_type = MGPU_GGUF_INT8;
    inner[1].array.count = 0;
    v = (mgpu_gguf_value){.type = MGPU_GGUF_ARRAY};
    v.array.elem_type = MGPU_GGUF_ARRAY;
    v.array.count = 2;
    v.array.items = inner;
    assert_int_equal(mgpu_gguf_writer_add_kv(w, "nested", &v, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_u32(w, "general.alignment", 64, &err), MGPU_OK);
    uint64_t s1[1] = {5}, s2[2] = {2, 256}, s3[2] = {2, 5};
    assert_int_equal(mgpu_gguf_writer_add_tensor(w, "a", MGPU_DTYPE_F32, 1, s1, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_tensor(w, "b", MGPU_DTYPE_Q4_K, 2, s2, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_tensor(w, "c", MGPU_DTYPE_Q4_K, 2, s3, &err),
                     MGPU_ERR_ARGUMENT); /* a row of 5 is not whole Q4_K blocks */
    assert_int_equal(mgpu_gguf_writer_add_tensor(w, "a", MGPU_DTYPE_F32, 1, s1, &err),
                     MGPU_ERR_ARGUMENT); /* duplicate */
    float a[5] = {1, 2, 3, 4, 5};
    float bsrc[512];
    for (int i = 0; i < 512; i++)
        bsrc[i] = (float)(i % 37) / 10.0f - 1.5f;
    uint8_t bq[288];
    assert_int_equal(mgpu_quantize(MGPU_DTYPE_Q4_K, bsrc, bq, 512), MGPU_OK);
    /* data may arrive in any chunking */
    assert_int_equal(mgpu_gguf_writer_write(w, a, 7, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_write(w, (uint8_t *)a + 7, 13, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_write(w, bq, sizeof bq, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_write(w, bq, 1, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_gguf_writer_finish(w, &err), MGPU_OK);

    mgpu_gguf *g;
    assert_int_equal(mgpu_gguf_open(path, &g, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_version(g), 3);
    assert_int_equal(mgpu_gguf_alignment(g), 64);
    assert_int_equal(mgpu_gguf_kv_count(g), 16);
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        const mgpu_gguf_value *r = mgpu_gguf_find_kv(g, ints[k].key);
        assert_non_null(r);
        assert_int_equal(r->type, ints[k].type);
        if (r->type == MGPU_GGUF_INT8 || r->type == MGPU_GGUF_INT16 ||
            r->type == MGPU_GGUF_INT32 || r->type == MGPU_GGUF_INT64)
            assert_true(r->i64 == ints[k].i);
        else
            assert_true(r->u64 == (uint64_t)ints[k].i);
    }
    assert_true(mgpu_gguf_find_kv(g, "f32")->f64 == 0.25);
    assert_true(mgpu_gguf_find_kv(g, "f64")->f64 == 1e-300);
    assert_true(mgpu_gguf_find_kv(g, "bool")->b);
    assert_string_equal(mgpu_gguf_find_kv(g, "str")->string.data, "h\xc3\xa9llo");
    const mgpu_gguf_value *arr = mgpu_gguf_find_kv(g, "arr_u32");
    mgpu_gguf_value e;
    assert_int_equal(arr->array.count, 3);
    assert_true(mgpu_gguf_array_get(arr, 2, &e));
    assert_int_equal(e.u64, 9);
    assert_false(mgpu_gguf_array_get(arr, 3, &e));
    arr = mgpu_gguf_find_kv(g, "arr_str");
    assert_true(mgpu_gguf_array_get(arr, 0, &e));
    assert_string_equal(e.string.data, "a");
    assert_true(mgpu_gguf_array_get(arr, 1, &e));
    assert_int_equal(e.string.length, 0);
    arr = mgpu_gguf_find_kv(g, "nested");
    assert_int_equal(arr->array.count, 2);
    assert_true(mgpu_gguf_array_get(arr, 0, &e));
    mgpu_gguf_value e2;
    assert_true(mgpu_gguf_array_get(&e, 1, &e2));
    assert_int_equal(e2.u64, 8);
    assert_true(mgpu_gguf_array_get(arr, 1, &e));
    assert_int_equal(e.array.count, 0);
    assert_int_equal(e.array.elem_type, MGPU_GGUF_INT8);

    const mgpu_tensor_info *ta = mgpu_gguf_find(g, "a"), *tb = mgpu_gguf_find(g, "b");
    assert_int_equal(ta->file_offset % 64, 0);
    assert_int_equal(tb->file_offset % 64, 0);
    assert_memory_equal(ta->data, a, sizeof a);
    assert_int_equal(tb->dtype, MGPU_DTYPE_Q4_K);
    assert_int_equal(tb->shape[0], 2);
    assert_int_equal(tb->shape[1], 256);
    assert_int_equal(tb->nbytes, 288);
    assert_memory_equal(tb->data, bq, sizeof bq);
    /* tensors keep the file's order */
    assert_string_equal(mgpu_gguf_tensor(g, 0)->name, "a");
    assert_string_equal(mgpu_gguf_tensor(g, 1)->name, "b");
    mgpu_gguf_close(g);
    remove(path);
}

static void test_rejects(void **state)
{
    (void)state;
    mgpu_gguf *g;
    mgpu_error err = {0};
    /* alignment must be a power of two, on the writer side too */
    const char *path = test_path("bad.gguf");
    mgpu_gguf_writer *w;
    assert_int_equal(mgpu_gguf_writer_create(path, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_u32(w, "general.alignment", 48, &err), MGPU_ERR_ARGUMENT);
    uint64_t s[1] = {3};
    assert_int_equal(mgpu_gguf_writer_add_tensor(w, "t", MGPU_DTYPE_F8_E4M3, 1, s, &err),
                     MGPU_ERR_UNSUPPORTED);
    mgpu_gguf_writer_abort(w);
    assert_false(test_file_exists(path));
    /* a version-2 file with a tensor of a type mgpu does not decode */
    buf b = {.n = 0};
    memcpy(b.data, "GGUF", 4);
    b.n = 4;
    put(&b, 2, 4);
    put(&b, 1, 8);
    put(&b, 0, 8);
    put_str(&b, "t");
    put(&b, 1, 4);
    put(&b, 256, 8);
    put(&b, 16, 4); /* IQ2_XXS */
    put(&b, 0, 8);
    b.n += 128;
    assert_int_equal(mgpu_gguf_open_memory(b.data, b.n, "iq2.gguf", &g, &err),
                     MGPU_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.message, "GGUF type 16 (IQ2_XXS)"));
    assert_non_null(strstr(err.message, "tensor 't'"));
    b.data[b.n - 128 - 12] = 99; /* unknown id */
    assert_int_equal(mgpu_gguf_open_memory(b.data, b.n, "x.gguf", &g, &err), MGPU_ERR_FORMAT);
    assert_non_null(strstr(err.message, "unknown GGUF type id 99"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dimension_order),
        cmocka_unit_test(test_all_value_types),
        cmocka_unit_test(test_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
