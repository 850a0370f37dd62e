/* safetensors writer and reader: round trips, the exact bytes the writer
 * lays down, hand-written headers, and writer misuse. The malformed-file
 * corpus (test_malformed) covers the reader's rejections in depth. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "core/file.h"
#include "mgpu/safetensors.h"
#include "test_util.h"

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* A file from a header string and data bytes. */
static void write_raw(const char *path, const char *header, const void *data, size_t n)
{
    uint8_t buf[4096];
    uint64_t h = strlen(header);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(h >> (8 * i));
    memcpy(buf + 8, header, h);
    memcpy(buf + 8 + h, data, n);
    write_file(path, buf, 8 + h + n);
}

static void test_round_trip(void **state)
{
    (void)state;
    const char *path = test_path("rt.safetensors");
    mgpu_error err = {0};
    mgpu_safetensors_writer *w;
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_add_metadata(w, "format", "pt", &err), MGPU_OK);
    uint64_t s1[2] = {2, 3}, s2[1] = {4}, s3[1] = {0};
    assert_int_equal(mgpu_safetensors_writer_add_tensor(w, "a.weight", MGPU_DTYPE_F32, 2, s1, &err),
                     MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_add_tensor(w, "b", MGPU_DTYPE_BF16, 1, s2, &err),
                     MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_add_tensor(w, "empty", MGPU_DTYPE_F16, 1, s3, &err),
                     MGPU_OK);
    /* a duplicate name is refused */
    assert_int_equal(mgpu_safetensors_writer_add_tensor(w, "b", MGPU_DTYPE_F32, 1, s2, &err),
                     MGPU_ERR_ARGUMENT);
    const float a[6] = {1, 2, 3, 4, 5, 6};
    const uint16_t b[4] = {0x3F80, 0x4000, 0xBF80, 0x0000};
    assert_int_equal(mgpu_safetensors_writer_write(w, a, sizeof a, &err), MGPU_OK);
    assert_false(test_file_exists(path)); /* nothing under the final name yet */
    assert_int_equal(mgpu_safetensors_writer_write(w, b, sizeof b, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);

    mgpu_safetensors *st;
    assert_int_equal(mgpu_safetensors_open(path, &st, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_tensor_count(st), 3);
    /* the reference pads the header with spaces so data is 8-byte aligned */
    assert_int_equal((8 + mgpu_safetensors_header_bytes(st)) % 8, 0);
    const mgpu_tensor_info *t = mgpu_safetensors_find(st, "a.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, MGPU_DTYPE_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->nbytes, 24);
    assert_int_equal(t->file_offset, 8 + mgpu_safetensors_header_bytes(st));
    assert_memory_equal(t->data, a, sizeof a);
    t = mgpu_safetensors_find(st, "b");
    assert_non_null(t);
    assert_int_equal(t->file_offset, 8 + mgpu_safetensors_header_bytes(st) + 24);
    assert_memory_equal(t->data, b, sizeof b);
    t = mgpu_safetensors_find(st, "empty");
    assert_non_null(t);
    assert_int_equal(t->nbytes, 0);
    assert_null(mgpu_safetensors_find(st, "missing"));
    assert_int_equal(mgpu_safetensors_metadata_count(st), 1);
    const char *k, *v;
    mgpu_safetensors_metadata(st, 0, &k, &v);
    assert_string_equal(k, "format");
    assert_string_equal(v, "pt");
    mgpu_safetensors_close(st);
    remove(path);
}

static void test_hand_written_header(void **state)
{
    (void)state;
    /* Written the way the Python library does: keys in any order, tensors in
     * any order in the header, data in offset order. */
    const char *path = test_path("hand.safetensors");
    const char *header = "{\"y\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                         "\"x\":{\"shape\":[1],\"dtype\":\"F32\",\"data_offsets\":[0,4]},"
                         "\"__metadata__\":{\"k\":\"v\"}}  ";
    const uint8_t data[6] = {0, 0, 0x80, 0x3F, 0xFF, 0x02};
    write_raw(path, header, data, sizeof data);
    mgpu_error err = {0};
    mgpu_safetensors *st;
    assert_int_equal(mgpu_safetensors_open(path, &st, &err), MGPU_OK);
    /* tensors come back in data order */
    assert_string_equal(mgpu_safetensors_tensor(st, 0)->name, "x");
    assert_string_equal(mgpu_safetensors_tensor(st, 1)->name, "y");
    float f[2];
    const mgpu_tensor_info *y = mgpu_safetensors_find(st, "y");
    assert_int_equal(mgpu_dequantize(y->dtype, y->data, f, 2), MGPU_OK);
    assert_true(f[0] == -1.0f && f[1] == 2.0f);
    mgpu_safetensors_close(st);

    /* one byte short of the data: named, not crashed on */
    write_raw(path, header, data, 5);
    assert_int_not_equal(mgpu_safetensors_open(path, &st, &err), MGPU_OK);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, "tensor 'y'"));

    /* duplicate names are refused by the JSON parser */
    write_raw(path,
              "{\"x\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]},"
              "\"x\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
              data, 2);
    assert_int_equal(mgpu_safetensors_open(path, &st, &err), MGPU_ERR_FORMAT);
    assert_non_null(strstr(err.message, "duplicate"));
    remove(path);
}

static void test_memory_open(void **state)
{
    (void)state;
    uint8_t buf[256];
    const char *header = "{\"t\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}";
    uint64_t h = strlen(header);
    memset(buf, 0, 8);
    buf[0] = (uint8_t)h;
    memcpy(buf + 8, header, h);
    memcpy(buf + 8 + h, "abc", 3);
    mgpu_safetensors *st;
    mgpu_error err = {0};
    assert_int_equal(mgpu_safetensors_open_memory(buf, 8 + h + 3, "mem", &st, &err), MGPU_OK);
    const mgpu_tensor_info *t = mgpu_safetensors_find(st, "t");
    assert_ptr_equal(t->data, buf + 8 + h);
    mgpu_safetensors_close(st);
    assert_int_equal(mgpu_safetensors_open_memory(buf, 7, "mem", &st, &err), MGPU_ERR_FORMAT);
    assert_non_null(strstr(err.message, "mem: "));
    assert_null(st);
}

static void test_writer_misuse(void **state)
{
    (void)state;
    const char *path = test_path("misuse.safetensors");
    mgpu_error err = {0};
    mgpu_safetensors_writer *w;
    uint64_t shape[1] = {4};
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_add_tensor(w, "q", MGPU_DTYPE_Q8_0, 1, shape, &err),
                     MGPU_ERR_UNSUPPORTED); /* block types have no safetensors name */
    assert_int_equal(mgpu_safetensors_writer_add_tensor(w, "t", MGPU_DTYPE_F32, 1, shape, &err),
                     MGPU_OK);
    float v[8] = {0};
    assert_int_equal(mgpu_safetensors_writer_write(w, v, 32, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_safetensors_writer_write(w, v, 8, &err), MGPU_OK);
    /* finishing with bytes missing fails and leaves no file behind */
    assert_int_not_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
    assert_false(test_file_exists(path));

    /* abort leaves nothing either */
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_add_tensor(w, "t", MGPU_DTYPE_F32, 1, shape, &err),
                     MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_write(w, v, 8, &err), MGPU_OK);
    mgpu_safetensors_writer_abort(w);
    assert_false(test_file_exists(path));

    /* a folder that does not exist: an error naming the path */
    assert_int_equal(mgpu_safetensors_writer_create("/nonexistent/dir/x.safetensors", &w, &err),
                     MGPU_ERR_IO);
    assert_non_null(strstr(err.message, "/nonexistent/dir/x.safetensors"));
}

static void test_sparse(void **state)
{
    (void)state;
    const char *path = test_path("sparse.safetensors");
    mgpu_error err = {0};
    mgpu_safetensors_writer *w;
    uint64_t shape[1] = {1 << 20};
    assert_int_equal(mgpu_safetensors_writer_create(path, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_add_tensor(w, "big", MGPU_DTYPE_F32, 1, shape, &err),
                     MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_write(w, NULL, 4u << 20, &err), MGPU_OK);
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
    mgpu_safetensors *st;
    assert_int_equal(mgpu_safetensors_open(path, &st, &err), MGPU_OK);
    const mgpu_tensor_info *t = mgpu_safetensors_find(st, "big");
    const uint8_t *p = t->data;
    assert_int_equal(p[0] | p[t->nbytes - 1], 0);
    mgpu_safetensors_close(st);
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),  cmocka_unit_test(test_hand_written_header),
        cmocka_unit_test(test_memory_open), cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_sparse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
