/* PNG output and float -> RGB8 conversion. Pixels are read back with
 * libpng's png_image API; text chunks are read by walking the file's chunks
 * directly, so the check does not share code with the writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/image.h"
#include "image/png_write.h"
#include "test_random.h"
#include "test_util.h"

/* ---- float -> RGB8 ------------------------------------------------------ */

/* The rule spelled out plainly: NaN is 0; else y = (x + 1) / 2 clamped to
 * [0, 1], times 255, rounded half away from zero (all values are >= 0). */
static uint8_t reference_byte(float x)
{
    if (isnan(x))
        return 0;
    double y = ((double)x + 1.0) / 2.0;
    if (y < 0.0)
        y = 0.0;
    if (y > 1.0)
        y = 1.0;
    return (uint8_t)round(y * 255.0);
}

static void test_rgb8_values(void **state)
{
    (void)state;
    /* One pixel per column, R G B planes. */
    const float r[] = {-1.0f, 1.0f, 0.0f, NAN, INFINITY, -INFINITY, 2.5f, -7.0f};
    enum { W = sizeof r / sizeof r[0] };
    /* 0 -> 127.5 -> 128 (half up); NaN -> 0; +inf -> 255; -inf -> 0. */
    const uint8_t want_r[W] = {0, 255, 128, 0, 255, 0, 255, 0};
    /* G: values whose (x+1)/2*255 lands just either side of .5:
     * x = 2k/255 - 1 + 1/255 is exactly k + 0.5 in exact arithmetic. */
    float g[W], b[W];
    for (int i = 0; i < W; i++) {
        g[i] = (float)(2.0 * (10.0 * i + 3.0) / 255.0 - 1.0); /* exactly k = 10i+3 */
        b[i] = -NAN;
    }
    float chw[3 * W];
    memcpy(chw, r, sizeof r);
    memcpy(chw + W, g, sizeof g);
    memcpy(chw + 2 * W, b, sizeof b);
    uint8_t rgb[3 * W];
    assert_int_equal(mgpu_image_to_rgb8(chw, W, 1, rgb, NULL), MGPU_OK);
    for (int i = 0; i < W; i++) {
        assert_int_equal(rgb[3 * i], want_r[i]);
        assert_int_equal(rgb[3 * i + 1], 10 * i + 3);
        assert_int_equal(rgb[3 * i + 2], 0); /* NaN of either sign */
    }
}

static void test_rgb8_random(void **state)
{
    (void)state;
    rng_seed(99);
    enum { W = 61, H = 37, P = W * H };
    float *chw = malloc(3 * P * sizeof *chw);
    uint8_t *rgb = malloc(3 * P);
    assert_true(chw && rgb);
    for (int i = 0; i < 3 * P; i++) {
        chw[i] = rng_float(-1.3, 1.3);
        if (i % 97 == 0)
            chw[i] = NAN;
    }
    assert_int_equal(mgpu_image_to_rgb8(chw, W, H, rgb, NULL), MGPU_OK);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++)
                assert_int_equal(rgb[(y * W + x) * 3 + c],
                                 reference_byte(chw[c * P + y * W + x]));
    mgpu_error err = {0};
    assert_int_equal(mgpu_image_to_rgb8(chw, 0, H, rgb, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_image_to_rgb8(NULL, W, H, rgb, &err), MGPU_ERR_ARGUMENT);
    free(chw);
    free(rgb);
}

/* ---- reading a PNG back -------------------------------------------------- */

typedef struct text_chunk {
    char type[5];
    char *key;
    char *text;
} text_chunk;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Collects the tEXt and iTXt chunks of a PNG file; returns the count. */
static int read_text_chunks(const char *path, text_chunk *out, int max)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)size);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    static const uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    assert_memory_equal(buf, sig, 8);
    int n = 0;
    long pos = 8;
    while (pos + 12 <= size) {
        uint32_t len = be32(buf + pos);
        const uint8_t *type = buf + pos + 4, *data = buf + pos + 8;
        assert_true(pos + 12 + (long)len <= size);
        int itxt = memcmp(type, "iTXt", 4) == 0;
        if (itxt || memcmp(type, "tEXt", 4) == 0) {
            assert_true(n < max);
            size_t klen = strnlen((const char *)data, len);
            assert_true(klen < len);
            const uint8_t *rest = data + klen + 1, *end = data + len;
            if (itxt) {
                /* compression flag, method, language\0, translated key\0 */
                assert_true(rest + 2 <= end);
                assert_int_equal(rest[0], 0); /* uncompressed */
                rest += 2;
                for (int skip = 0; skip < 2; skip++) {
                    size_t l = strnlen((const char *)rest, (size_t)(end - rest));
                    assert_true(rest + l < end);
                    rest += l + 1;
                }
            }
            memcpy(out[n].type, type, 4);
            out[n].type[4] = '\0';
            out[n].key = malloc(klen + 1);
            memcpy(out[n].key, data, klen + 1);
            size_t tlen = (size_t)(end - rest);
            out[n].text = malloc(tlen + 1);
            memcpy(out[n].text, rest, tlen);
            out[n].text[tlen] = '\0';
            n++;
        }
        if (memcmp(type, "IEND", 4) == 0)
            break;
        pos += 12 + (long)len;
    }
    free(buf);
    return n;
}

static void free_text_chunks(text_chunk *t, int n)
{
    for (int i = 0; i < n; i++) {
        free(t[i].key);
        free(t[i].text);
    }
}

static uint8_t *read_pixels(const char *path, int *w, int *h)
{
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    assert_true(png_image_begin_read_from_file(&image, path));
    image.format = PNG_FORMAT_RGB;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(image));
    assert_non_null(buf);
    assert_true(png_image_finish_read(&image, NULL, buf, 0, NULL));
    *w = (int)image.width;
    *h = (int)image.height;
    return buf;
}

/* Empties a folder (files only) and, when remove is set, removes it. */
static void clear_dir(const char *dir, int remove)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[2048];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    if (remove)
        rmdir(dir);
}

/* A fresh empty folder for one test. */
static const char *fresh_dir(const char *name)
{
    const char *dir = test_path(name);
    clear_dir(dir, 1);
    assert_int_equal(mkdir(dir, 0755), 0);
    return dir;
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static uint8_t *random_rgb(int w, int h, uint64_t seed)
{
    rng_seed(seed);
    uint8_t *p = malloc((size_t)w * h * 3);
    assert_non_null(p);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        p[i] = (uint8_t)(rng_next() >> 56);
    return p;
}

/* ---- PNG tests ----------------------------------------------------------- */

static void test_png_round_trip(void **state)
{
    (void)state;
    const char *dir = fresh_dir("png_rt");
    char path[1024];
    snprintf(path, sizeof path, "%s/out.png", dir);
    enum { W = 37, H = 23 };
    uint8_t *rgb = random_rgb(W, H, 5);
    char key79[80];
    memset(key79, 'k', 79);
    key79[79] = '\0';
    const mgpu_png_text texts[] = {
        {"parameters", "a red fox in snow\nSteps: 28, Sampler: euler, Seed: 42, Size: 37x23"},
        {"prompt", "un caf\xC3\xA9 \xE7\x8C\xAB \xF0\x9F\x90\xB1"}, /* café 猫 🐱: UTF-8 -> iTXt */
        {"mgpu", "{\"seed\": 42, \"steps\": 28, \"model\": \"flux1-dev\"}"},
        {"empty", ""},
        {key79, "longest key"},
        {"two words", "spaces inside a key are allowed"},
    };
    enum { NT = sizeof texts / sizeof texts[0] };
    mgpu_error err = {0};
    assert_int_equal(mgpu_png_write(path, rgb, W, H, texts, NT, &err), MGPU_OK);
    assert_int_equal(dir_entries(dir), 1); /* no temporary left beside it */

    int w, h;
    uint8_t *back = read_pixels(path, &w, &h);
    assert_int_equal(w, W);
    assert_int_equal(h, H);
    assert_memory_equal(back, rgb, (size_t)W * H * 3);
    free(back);

    text_chunk got[16];
    int n = read_text_chunks(path, got, 16);
    assert_int_equal(n, NT);
    for (int i = 0; i < NT; i++) {
        assert_string_equal(got[i].key, texts[i].key);
        assert_string_equal(got[i].text, texts[i].text);
        assert_string_equal(got[i].type, i == 1 ? "iTXt" : "tEXt");
    }
    free_text_chunks(got, n);

    /* Writing again replaces the file (rename over it). */
    uint8_t *rgb2 = random_rgb(W, H, 6);
    assert_int_equal(mgpu_png_write(path, rgb2, W, H, NULL, 0, &err), MGPU_OK);
    back = read_pixels(path, &w, &h);
    assert_memory_equal(back, rgb2, (size_t)W * H * 3);
    assert_int_equal(read_text_chunks(path, got, 16), 0);
    assert_int_equal(dir_entries(dir), 1);
    free(back);
    free(rgb2);
    free(rgb);
    clear_dir(dir, 1);
}

static void test_png_unwritable_folder(void **state)
{
    (void)state;
    uint8_t *rgb = random_rgb(4, 4, 1);
    mgpu_error err = {0};
    /* A folder that does not exist, and a "folder" that is a regular file:
     * both fail even for root. */
    const char *missing = test_path("no_such_dir/out.png");
    assert_int_equal(mgpu_png_write(missing, rgb, 4, 4, NULL, 0, &err), MGPU_ERR_IO);
    assert_non_null(strstr(err.message, missing));
    assert_null(strchr(err.message, '\n'));
    assert_false(test_file_exists(missing));

    const char *file = test_path("png_plain_file");
    FILE *f = fopen(file, "wb");
    assert_non_null(f);
    fclose(f);
    char path[1024];
    snprintf(path, sizeof path, "%s/out.png", file);
    assert_int_equal(mgpu_png_write(path, rgb, 4, 4, NULL, 0, &err), MGPU_ERR_IO);
    assert_non_null(strstr(err.message, path));
    assert_false(test_file_exists(path));
    unlink(file);
    free(rgb);
}

static void test_png_bad_texts(void **state)
{
    (void)state;
    const char *dir = fresh_dir("png_keys");
    char path[1024];
    snprintf(path, sizeof path, "%s/k.png", dir);
    uint8_t *rgb = random_rgb(3, 2, 2);
    char key80[81];
    memset(key80, 'k', 80);
    key80[80] = '\0';
    const struct {
        mgpu_png_text t;
        const char *why;
    } bad[] = {
        {{"", "x"}, "empty"},
        {{key80, "x"}, "longer than 79"},
        {{" lead", "x"}, "space"},
        {{"trail ", "x"}, "space"},
        {{"two  spaces", "x"}, "two spaces"},
        {{"caf\xC3\xA9", "x"}, "printable ASCII"},
        {{"tab\there", "x"}, "printable ASCII"},
        {{NULL, "x"}, "missing"},
        {{"prompt", NULL}, "missing"},
        {{"prompt", "bad \xC3 utf8"}, "not valid UTF-8"},
        {{"prompt", "overlong \xC0\xAF"}, "not valid UTF-8"},
        {{"prompt", "surrogate \xED\xA0\x80"}, "not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mgpu_error err = {0};
        const mgpu_png_text texts[2] = {{"parameters", "fine"}, bad[i].t};
        assert_int_equal(mgpu_png_write(path, rgb, 3, 2, texts, 2, &err), MGPU_ERR_ARGUMENT);
        if (!strstr(err.message, bad[i].why))
            fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err.message, bad[i].why);
        assert_int_equal(dir_entries(dir), 0);
    }
    mgpu_error err = {0};
    assert_int_equal(mgpu_png_write(path, NULL, 3, 2, NULL, 0, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_png_write(path, rgb, 0, 2, NULL, 0, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_png_write(path, rgb, 3, -1, NULL, 0, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_png_write(path, rgb, 3, 2, NULL, 1, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(dir_entries(dir), 0);
    free(rgb);
    clear_dir(dir, 1);
}

/* An error raised inside libpng (longjmp out of png_write_info) after the
 * temporary file exists: one error, nothing left, no leak (ASan). */
static void test_png_libpng_error(void **state)
{
    (void)state;
    const char *dir = fresh_dir("png_lj");
    char path[1024];
    snprintf(path, sizeof path, "%s/wide.png", dir);
    enum { W = 1000001 }; /* one past libpng's default user width limit */
    uint8_t *rgb = calloc((size_t)W * 3, 1);
    assert_non_null(rgb);
    const mgpu_png_text t = {"parameters", "x"};
    mgpu_error err = {0};
    assert_int_equal(mgpu_png_write(path, rgb, W, 1, &t, 1, &err), MGPU_ERR_IO);
    assert_non_null(strstr(err.message, "libpng"));
    assert_non_null(strstr(err.message, "width")); /* libpng's warning says why */
    assert_non_null(strstr(err.message, path));
    assert_int_equal(dir_entries(dir), 0);
    free(rgb);
    clear_dir(dir, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rgb8_values),
        cmocka_unit_test(test_rgb8_random),
        cmocka_unit_test(test_png_round_trip),
        cmocka_unit_test(test_png_unwritable_folder),
        cmocka_unit_test(test_png_bad_texts),
        cmocka_unit_test(test_png_libpng_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
