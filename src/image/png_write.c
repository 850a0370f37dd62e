/* PNG writer on libpng. libpng reports errors by longjmp: the setjmp lives
 * in encode() whose locals are never modified before a jump can return to
 * it, and every resource is owned by mgpu_png_write, which frees it on both
 * paths. The error handler copies the message instead of printing it. */
#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "image/png_write.h"

typedef struct png_job {
    FILE *stream;
    char message[256]; /* the libpng or I/O error that stopped the write */
    char warning[128]; /* the last warning: libpng often explains an error in one */
} png_job;

static void on_error(png_structp png, png_const_charp msg)
{
    png_job *job = png_get_error_ptr(png);
    /* A write-callback error has already filled the message. */
    if (job->message[0] == '\0')
        snprintf(job->message, sizeof job->message, "libpng: %s%s%s%s", msg,
                 job->warning[0] ? " (" : "", job->warning, job->warning[0] ? ")" : "");
    png_longjmp(png, 1);
}

/* Library code never prints: keep the warning for the error message. */
static void on_warning(png_structp png, png_const_charp msg)
{
    png_job *job = png_get_error_ptr(png);
    snprintf(job->warning, sizeof job->warning, "%s", msg);
}

static void on_write(png_structp png, png_bytep data, size_t size)
{
    png_job *job = png_get_io_ptr(png);
    if (fwrite(data, 1, size, job->stream) != size) {
        snprintf(job->message, sizeof job->message, "write failed: %s", strerror(errno));
        png_error(png, job->message);
    }
}

static void on_flush(png_structp png)
{
    (void)png; /* mgpu_output_commit flushes and syncs */
}

static int encode(png_structp png, png_infop info, const uint8_t *rgb, int width, int height,
                  png_textp texts, int n_texts)
{
    if (setjmp(png_jmpbuf(png)))
        return -1;
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (n_texts > 0)
        png_set_text(png, info, texts, n_texts);
    png_write_info(png, info);
    size_t stride = (size_t)width * 3;
    for (int y = 0; y < height; y++)
        png_write_row(png, rgb + (size_t)y * stride);
    png_write_end(png, NULL);
    return 0;
}

/* Keyword rules of the PNG spec (11.3.4.2), restricted to ASCII. */
static const char *key_problem(const char *key)
{
    size_t n = strlen(key);
    if (n == 0)
        return "is empty";
    if (n > MGPU_PNG_KEY_MAX)
        return "is longer than 79 bytes";
    if (key[0] == ' ' || key[n - 1] == ' ')
        return "starts or ends with a space";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c > 0x7E)
            return "has a character that is not printable ASCII";
        if (c == ' ' && key[i + 1] == ' ')
            return "has two spaces in a row";
    }
    return NULL;
}

/* 1 for pure ASCII, 0 for other valid UTF-8, -1 for invalid UTF-8. */
static int text_class(const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    int ascii = 1;
    while (*s) {
        if (*s < 0x80) {
            s++;
            continue;
        }
        ascii = 0;
        int extra;
        uint32_t cp;
        if ((*s & 0xE0) == 0xC0) {
            extra = 1;
            cp = *s & 0x1Fu;
        } else if ((*s & 0xF0) == 0xE0) {
            extra = 2;
            cp = *s & 0x0Fu;
        } else if ((*s & 0xF8) == 0xF0) {
            extra = 3;
            cp = *s & 0x07u;
        } else {
            return -1;
        }
        s++;
        for (int i = 0; i < extra; i++, s++) {
            if ((*s & 0xC0) != 0x80)
                return -1;
            cp = (cp << 6) | (*s & 0x3Fu);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return -1; /* overlong, out of range or a surrogate */
    }
    return ascii;
}

mgpu_status mgpu_png_write(const char *path, const uint8_t *rgb, int width, int height,
                           const mgpu_png_text *texts, size_t n_texts, mgpu_error *err)
{
    if (!path || !rgb || width <= 0 || height <= 0 || (n_texts > 0 && !texts))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "%s: invalid PNG arguments (%dx%d, pixels %s, %zu texts)",
                              path ? path : "(no path)", width, height, rgb ? "set" : "NULL",
                              n_texts);
    if (n_texts > 1024)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: %zu text chunks, at most 1024", path,
                              n_texts);
    png_textp chunks = NULL;
    if (n_texts > 0) {
        chunks = calloc(n_texts, sizeof *chunks);
        if (!chunks)
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
    }
    for (size_t i = 0; i < n_texts; i++) {
        const char *key = texts[i].key, *text = texts[i].text;
        const char *problem = key ? key_problem(key) : "is missing";
        if (problem) {
            free(chunks);
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: text key \"%.79s\" %s", path,
                                  key ? key : "", problem);
        }
        int cls = text ? text_class(text) : -1;
        if (cls < 0) {
            free(chunks);
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: text for key \"%s\" is %s", path,
                                  key, text ? "not valid UTF-8" : "missing");
        }
        /* libpng copies keys and texts in png_set_text and never writes
         * through these pointers. */
        chunks[i].key = (png_charp)(uintptr_t)key;
        chunks[i].text = (png_charp)(uintptr_t)text;
        chunks[i].text_length = strlen(text);
        if (cls == 1) {
            chunks[i].compression = PNG_TEXT_COMPRESSION_NONE;
        } else {
            chunks[i].compression = PNG_ITXT_COMPRESSION_NONE;
            chunks[i].lang = (png_charp)(uintptr_t)"";
            chunks[i].lang_key = (png_charp)(uintptr_t)"";
            chunks[i].itxt_length = strlen(text);
        }
    }

    png_job *job = calloc(1, sizeof *job);
    if (!job) {
        free(chunks);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
    }
    mgpu_output_file out;
    mgpu_status s = mgpu_output_open(path, &out, err);
    if (s != MGPU_OK) {
        free(job);
        free(chunks);
        return s;
    }
    job->stream = out.stream;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, job, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        mgpu_output_abort(&out);
        free(job);
        free(chunks);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory for libpng", path);
    }
    png_set_write_fn(png, job, on_write, on_flush);
    int failed = encode(png, info, rgb, width, height, chunks, (int)n_texts);
    png_destroy_write_struct(&png, &info);
    if (failed) {
        mgpu_output_abort(&out);
        s = mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot write PNG: %s", path, job->message);
    } else {
        s = mgpu_output_commit(&out, err);
    }
    free(job);
    free(chunks);
    return s;
}
