/* See badfiles.h. Valid files are assembled from parts (safetensors: a JSON
 * header written with ' for " so it reads in C, then pattern data; GGUF:
 * header fields, key-value blobs, tensor specs, padding, data) and every
 * malformed case changes one part, or cuts a valid file at an offset
 * recorded while assembling it. The builders never call the readers: the
 * expectations are what a correct reader must say, not what ours says. The
 * handle checkers at the end walk what a reader made of a file. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "badfiles.h"
#include "mgpu/gguf.h"

/* ---- byte buffer --------------------------------------------------------- */

typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} bytes;

static void put(bytes *b, const void *src, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (n > b->cap - b->n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_le(bytes *b, uint64_t v, int n)
{
    uint8_t t[8];
    for (int i = 0; i < n; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    put(b, t, (size_t)n);
}

static void put_u8(bytes *b, uint8_t v) { put_le(b, v, 1); }
static void put_u16(bytes *b, uint16_t v) { put_le(b, v, 2); }
static void put_u32(bytes *b, uint32_t v) { put_le(b, v, 4); }
static void put_u64(bytes *b, uint64_t v) { put_le(b, v, 8); }

static void put_f32(bytes *b, float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    put_u32(b, bits);
}

static void put_f64(bytes *b, double f)
{
    uint64_t bits;
    memcpy(&bits, &f, 8);
    put_u64(b, bits);
}

static void put_fill(bytes *b, uint8_t value, size_t n)
{
    uint8_t chunk[64];
    memset(chunk, value, sizeof chunk);
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof chunk ? n - done : sizeof chunk;
        put(b, chunk, k);
        done += k;
    }
}

/* Deterministic non-constant tensor data, so a reader that looked at the
 * wrong bytes would not get lucky with zeros. */
static void put_pattern(bytes *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put_u8(b, (uint8_t)(i * 37 + 11));
}

/* Overwrites the byte `back` positions before the end (1: the last). */
static void poke(bytes *b, size_t back, uint8_t v)
{
    if (b->p && back >= 1 && back <= b->n)
        b->p[b->n - back] = v;
}

static void bytes_free(bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- the case set -------------------------------------------------------- */

typedef struct builder {
    badfile_set *set;
    bool oom;
} builder;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void format_into(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

/* Adds a case, taking the bytes (freed here on failure). `expect` and
 * `expect_memory` may be NULL. */
static void add(builder *bl, const char *name, mgpu_file_format format, mgpu_status status,
                const char *expect, const char *expect_memory, bytes *b)
{
    badfile_set *s = bl->set;
    if (bl->oom || b->oom) {
        bl->oom = true;
        bytes_free(b);
        return;
    }
    if (s->count == s->capacity) {
        size_t cap = s->capacity ? 2 * s->capacity : 64;
        badfile *p = realloc(s->items, cap * sizeof *p);
        if (!p) {
            bl->oom = true;
            bytes_free(b);
            return;
        }
        s->items = p;
        s->capacity = cap;
    }
    badfile *f = &s->items[s->count++];
    memset(f, 0, sizeof *f);
    format_into(f->name, sizeof f->name, "%s.%s", name,
                format == MGPU_FORMAT_GGUF ? "gguf" : "safetensors");
    f->format = format;
    f->status = status;
    format_into(f->expect, sizeof f->expect, "%s", expect ? expect : "");
    format_into(f->expect_memory, sizeof f->expect_memory, "%s",
                expect_memory ? expect_memory : "");
    /* An empty file still gets a buffer, so data is never NULL. */
    f->data = b->p ? b->p : malloc(1);
    f->size = b->n;
    if (!f->data) {
        s->count--;
        bl->oom = true;
    }
    b->p = NULL;
    bytes_free(b);
}

/* ---- safetensors --------------------------------------------------------- */

/* `tmpl` with ' turned into ", padded with spaces to a multiple of 8 as the
 * reference writer does; the length field is the header's own length unless
 * `length_field` is given. Then `data_bytes` of pattern data. */
static void st_build(bytes *b, const char *tmpl, size_t data_bytes, const uint64_t *length_field)
{
    size_t n = strlen(tmpl), padded = (n + 7) / 8 * 8;
    put_u64(b, length_field ? *length_field : padded);
    for (size_t i = 0; i < n; i++)
        put_u8(b, tmpl[i] == '\'' ? (uint8_t)'"' : (uint8_t)tmpl[i]);
    put_fill(b, ' ', padded - n);
    put_pattern(b, data_bytes);
}

static void st_add(builder *bl, const char *name, mgpu_status status, const char *expect,
                   const char *expect_memory, bytes *b)
{
    add(bl, name, MGPU_FORMAT_SAFETENSORS, status, expect, expect_memory, b);
}

#define ST_META "'__metadata__':{'format':'pt'}"
#define ST_W "'layer.weight':{'dtype':'F32','shape':[2,4],'data_offsets':[0,32]}"
#define ST_B "'layer.bias':{'dtype':'F16','shape':[2],'data_offsets':[32,36]}"
#define ST_VALID "{" ST_META "," ST_W "," ST_B "}"
#define ST_VALID_DATA 36
/* A file whose weight entry is `w` (the bias stays valid). */
#define ST_WITH_W(w) "{" ST_META ",'layer.weight':{" w "}," ST_B "}"
/* ... and whose bias entry is `b`. */
#define ST_WITH_B(b) "{" ST_META "," ST_W ",'layer.bias':{" b "}}"

typedef struct st_case {
    const char *name;
    mgpu_status status;
    const char *expect;
    const char *header;
    size_t data_bytes;
    const char *expect_memory; /* NULL: same as expect */
} st_case;

/* mgpu_model_open's verdict on a file with neither GGUF magic nor a "{" at
 * offset 8; the readers themselves say more. */
#define NEITHER "not a safetensors or GGUF file"

static const st_case st_cases[] = {
    /* valid */
    {"st_valid", MGPU_OK, NULL, ST_VALID, ST_VALID_DATA, NULL},
    /* listed out of offset order; a scalar, two empty tensors sharing an
     * offset, and an empty __metadata__ */
    {"st_valid_edge", MGPU_OK, NULL,
     "{'step':{'dtype':'I64','shape':[1],'data_offsets':[7,15]},"
     "'__metadata__':{},"
     "'scalar':{'dtype':'F32','shape':[],'data_offsets':[0,4]},"
     "'empty.b':{'dtype':'BF16','shape':[3,0],'data_offsets':[4,4]},"
     "'empty.a':{'dtype':'F16','shape':[0,3],'data_offsets':[4,4]},"
     "'mask':{'dtype':'BOOL','shape':[3],'data_offsets':[4,7]}}",
     15, NULL},
    {"st_valid_empty", MGPU_OK, NULL, "{}", 0, NULL},

    /* the header as JSON */
    {"st_header_not_json", MGPU_ERR_FORMAT, "invalid JSON", "{this is not json}", 0, NULL},
    {"st_header_not_closed", MGPU_ERR_FORMAT, "invalid JSON", "{" ST_META "," ST_W, 32, NULL},
    {"st_header_not_object", MGPU_ERR_FORMAT, NEITHER, "[1,2,3]", 0,
     "does not start with a JSON object"},
    {"st_header_string", MGPU_ERR_FORMAT, NEITHER, "'abc'", 0, "does not start with a JSON object"},
    {"st_header_leading_space", MGPU_ERR_FORMAT, NEITHER, " " ST_VALID, ST_VALID_DATA,
     "does not start with a JSON object"},
    {"st_header_trailing_garbage", MGPU_ERR_FORMAT, "invalid JSON", ST_VALID " x",
     ST_VALID_DATA, NULL},
    {"st_duplicate_tensor", MGPU_ERR_FORMAT, "duplicate", "{" ST_W "," ST_W "," ST_B "}",
     ST_VALID_DATA, NULL},
    {"st_duplicate_metadata", MGPU_ERR_FORMAT, "duplicate",
     "{" ST_META "," ST_META "," ST_W "," ST_B "}", ST_VALID_DATA, NULL},
    {"st_nul_in_name", MGPU_ERR_FORMAT, "invalid JSON",
     "{'layer\\u0000.weight':{'dtype':'F32','shape':[2,4],'data_offsets':[0,32]}," ST_B "}",
     ST_VALID_DATA, NULL},
    {"st_bad_utf8_name", MGPU_ERR_FORMAT, "invalid JSON",
     "{'layer\xff.weight':{'dtype':'F32','shape':[2,4],'data_offsets':[0,32]}," ST_B "}",
     ST_VALID_DATA, NULL},
    /* A name with a newline and a terminal escape (valid JSON): the message
     * quoting it must stay one line of printable text. */
    {"st_name_control_chars", MGPU_ERR_FORMAT, "unknown dtype 'F33'",
     "{" ST_W ",'bias\\n\\u001b[2J':{'dtype':'F33','shape':[2],'data_offsets':[32,36]}}",
     ST_VALID_DATA, NULL},

    /* tensor entries */
    {"st_entry_not_object", MGPU_ERR_FORMAT, "tensor 'layer.bias': entry is not an object",
     "{" ST_W ",'layer.bias':[32,36]}", ST_VALID_DATA, NULL},
    {"st_dtype_unknown", MGPU_ERR_FORMAT, "tensor 'layer.bias': unknown dtype 'F33'",
     ST_WITH_B("'dtype':'F33','shape':[2],'data_offsets':[32,36]"), ST_VALID_DATA, NULL},
    {"st_dtype_block_type", MGPU_ERR_FORMAT, "unknown dtype 'Q8_0'",
     ST_WITH_B("'dtype':'Q8_0','shape':[32],'data_offsets':[32,36]"), ST_VALID_DATA, NULL},
    {"st_dtype_lowercase", MGPU_ERR_FORMAT, "unknown dtype 'f16'",
     ST_WITH_B("'dtype':'f16','shape':[2],'data_offsets':[32,36]"), ST_VALID_DATA, NULL},
    {"st_dtype_missing", MGPU_ERR_FORMAT, "tensor 'layer.bias': missing string 'dtype'",
     ST_WITH_B("'shape':[2],'data_offsets':[32,36]"), ST_VALID_DATA, NULL},
    {"st_dtype_not_string", MGPU_ERR_FORMAT, "missing string 'dtype'",
     ST_WITH_B("'dtype':16,'shape':[2],'data_offsets':[32,36]"), ST_VALID_DATA, NULL},
    {"st_shape_missing", MGPU_ERR_FORMAT, "tensor 'layer.bias': missing array 'shape'",
     ST_WITH_B("'dtype':'F16','data_offsets':[32,36]"), ST_VALID_DATA, NULL},
    {"st_shape_not_array", MGPU_ERR_FORMAT, "missing array 'shape'",
     ST_WITH_B("'dtype':'F16','shape':2,'data_offsets':[32,36]"), ST_VALID_DATA, NULL},
    {"st_shape_negative", MGPU_ERR_FORMAT,
     "tensor 'layer.weight': shape entry 0 is not a non-negative integer",
     ST_WITH_W("'dtype':'F32','shape':[-2,4],'data_offsets':[0,32]"), ST_VALID_DATA, NULL},
    {"st_shape_float", MGPU_ERR_FORMAT, "shape entry 1 is not a non-negative integer",
     ST_WITH_W("'dtype':'F32','shape':[2,4.0],'data_offsets':[0,32]"), ST_VALID_DATA, NULL},
    {"st_shape_string", MGPU_ERR_FORMAT, "shape entry 0 is not a non-negative integer",
     ST_WITH_W("'dtype':'F32','shape':['2',4],'data_offsets':[0,32]"), ST_VALID_DATA, NULL},
    {"st_shape_null", MGPU_ERR_FORMAT, "shape entry 1 is not a non-negative integer",
     ST_WITH_W("'dtype':'F32','shape':[2,null],'data_offsets':[0,32]"), ST_VALID_DATA, NULL},
    {"st_shape_nested", MGPU_ERR_FORMAT, "shape entry 0 is not a non-negative integer",
     ST_WITH_W("'dtype':'F32','shape':[[2],4],'data_offsets':[0,32]"), ST_VALID_DATA, NULL},
    {"st_shape_too_many_dims", MGPU_ERR_UNSUPPORTED,
     "tensor 'layer.weight': 9 dimensions, mgpu handles at most 8",
     ST_WITH_W("'dtype':'F32','shape':[1,1,1,1,1,1,1,2,4],'data_offsets':[0,32]"),
     ST_VALID_DATA, NULL},
    {"st_shape_elements_overflow", MGPU_ERR_FORMAT, "tensor 'layer.weight': shape overflows",
     ST_WITH_W("'dtype':'F32','shape':[4294967296,4294967296,2],'data_offsets':[0,32]"),
     ST_VALID_DATA, NULL},
    {"st_shape_bytes_overflow", MGPU_ERR_FORMAT, "tensor 'layer.weight': shape overflows",
     ST_WITH_W("'dtype':'F32','shape':[4611686018427387904],'data_offsets':[0,32]"),
     ST_VALID_DATA, NULL},
    {"st_offsets_missing", MGPU_ERR_FORMAT,
     "tensor 'layer.bias': 'data_offsets' is not an array of two integers",
     ST_WITH_B("'dtype':'F16','shape':[2]"), ST_VALID_DATA, NULL},
    {"st_offsets_not_array", MGPU_ERR_FORMAT, "'data_offsets' is not an array of two integers",
     ST_WITH_B("'dtype':'F16','shape':[2],'data_offsets':32"), ST_VALID_DATA, NULL},
    {"st_offsets_one", MGPU_ERR_FORMAT, "'data_offsets' is not an array of two integers",
     ST_WITH_B("'dtype':'F16','shape':[2],'data_offsets':[32]"), ST_VALID_DATA, NULL},
    {"st_offsets_three", MGPU_ERR_FORMAT, "'data_offsets' is not an array of two integers",
     ST_WITH_B("'dtype':'F16','shape':[2],'data_offsets':[32,36,36]"), ST_VALID_DATA, NULL},
    {"st_offsets_reversed", MGPU_ERR_FORMAT, "tensor 'layer.weight': data_offsets [32, 0)",
     ST_WITH_W("'dtype':'F32','shape':[2,4],'data_offsets':[32,0]"), ST_VALID_DATA, NULL},
    {"st_offsets_out_of_bounds", MGPU_ERR_FORMAT,
     "data_offsets [32, 4000) fall outside the data section of 36 bytes",
     ST_WITH_B("'dtype':'F16','shape':[2],'data_offsets':[32,4000]"), ST_VALID_DATA, NULL},
    {"st_offsets_negative", MGPU_ERR_FORMAT,
     "tensor 'layer.weight': data_offsets are not non-negative integers",
     ST_WITH_W("'dtype':'F32','shape':[2,4],'data_offsets':[-4,28]"), ST_VALID_DATA, NULL},
    {"st_offsets_float", MGPU_ERR_FORMAT, "data_offsets are not non-negative integers",
     ST_WITH_W("'dtype':'F32','shape':[2,4],'data_offsets':[0,32.0]"), ST_VALID_DATA, NULL},
    {"st_offsets_string", MGPU_ERR_FORMAT, "data_offsets are not non-negative integers",
     ST_WITH_W("'dtype':'F32','shape':[2,4],'data_offsets':['0','32']"), ST_VALID_DATA, NULL},
    {"st_offsets_too_big", MGPU_ERR_FORMAT, "invalid JSON",
     ST_WITH_W("'dtype':'F32','shape':[2,4],'data_offsets':[0,99999999999999999999]"),
     ST_VALID_DATA, NULL},

    /* sizes and layout of the data section */
    {"st_size_mismatch", MGPU_ERR_FORMAT,
     "tensor 'layer.weight': shape [2, 3] of F32 needs 24 bytes but data_offsets hold 32",
     ST_WITH_W("'dtype':'F32','shape':[2,3],'data_offsets':[0,32]"), ST_VALID_DATA, NULL},
    {"st_size_mismatch_dtype", MGPU_ERR_FORMAT, "needs 16 bytes but data_offsets hold 32",
     ST_WITH_W("'dtype':'F16','shape':[2,4],'data_offsets':[0,32]"), ST_VALID_DATA, NULL},
    {"st_overlap", MGPU_ERR_FORMAT,
     "tensor 'layer.bias': data at offset 30 overlaps the previous tensor 'layer.weight'",
     ST_WITH_B("'dtype':'F16','shape':[2],'data_offsets':[30,34]"), ST_VALID_DATA, NULL},
    {"st_overlap_same_start", MGPU_ERR_FORMAT, "overlaps the previous tensor",
     ST_WITH_B("'dtype':'F16','shape':[2],'data_offsets':[0,4]"), ST_VALID_DATA, NULL},
    {"st_gap", MGPU_ERR_FORMAT, "tensor 'layer.bias': 2 unused bytes before its data at offset 34",
     ST_WITH_B("'dtype':'F16','shape':[2],'data_offsets':[34,38]"), 38, NULL},
    {"st_gap_at_start", MGPU_ERR_FORMAT,
     "tensor 'layer.weight': 4 unused bytes before its data at offset 4",
     "{" ST_META ",'layer.weight':{'dtype':'F32','shape':[2,4],'data_offsets':[4,36]},"
     "'layer.bias':{'dtype':'F16','shape':[2],'data_offsets':[36,40]}}",
     40, NULL},
    {"st_trailing_bytes", MGPU_ERR_FORMAT, "data section holds 48 bytes but its tensors use 36",
     ST_VALID, 48, NULL},
    {"st_truncated_data", MGPU_ERR_FORMAT, "fall outside the data section of 30 bytes", ST_VALID,
     30, NULL},
    {"st_only_metadata_with_data", MGPU_ERR_FORMAT,
     "data section holds 4 bytes but its tensors use 0", "{" ST_META "}", 4, NULL},

    /* __metadata__ */
    {"st_metadata_not_object", MGPU_ERR_FORMAT, "__metadata__ is not an object",
     "{'__metadata__':'pt'," ST_W "," ST_B "}", ST_VALID_DATA, NULL},
    {"st_metadata_array", MGPU_ERR_FORMAT, "__metadata__ is not an object",
     "{'__metadata__':['pt']," ST_W "," ST_B "}", ST_VALID_DATA, NULL},
    {"st_metadata_number_value", MGPU_ERR_FORMAT, "__metadata__ key 'epoch' is not a string",
     "{'__metadata__':{'format':'pt','epoch':3}," ST_W "," ST_B "}", ST_VALID_DATA, NULL},
    {"st_metadata_object_value", MGPU_ERR_FORMAT, "__metadata__ key 'nested' is not a string",
     "{'__metadata__':{'nested':{'a':'b'}}," ST_W "," ST_B "}", ST_VALID_DATA, NULL},
    {"st_metadata_null_value", MGPU_ERR_FORMAT, "__metadata__ key 'x' is not a string",
     "{'__metadata__':{'x':null}," ST_W "," ST_B "}", ST_VALID_DATA, NULL},
};

static void st_cases_build(builder *bl)
{
    for (size_t i = 0; i < sizeof st_cases / sizeof st_cases[0]; i++) {
        const st_case *c = &st_cases[i];
        bytes b = {0};
        st_build(&b, c->header, c->data_bytes, NULL);
        st_add(bl, c->name, c->status, c->expect, c->expect_memory, &b);
    }

    /* Cases that need more than a header text. */
    bytes b = {0};
    st_add(bl, "st_empty", MGPU_ERR_FORMAT, NEITHER, "0 bytes is too short", &b);

    b = (bytes){0};
    put_u64(&b, 2);
    b.n = 7; /* the length field itself is cut */
    st_add(bl, "st_too_short", MGPU_ERR_FORMAT, NEITHER, "7 bytes is too short", &b);

    uint64_t length = 4096;
    b = (bytes){0};
    st_build(&b, ST_VALID, ST_VALID_DATA, &length);
    st_add(bl, "st_header_length_beyond_file", MGPU_ERR_FORMAT,
           "header length 4096 exceeds the file size", NULL, &b);

    length = UINT64_MAX;
    b = (bytes){0};
    st_build(&b, ST_VALID, ST_VALID_DATA, &length);
    st_add(bl, "st_header_length_huge", MGPU_ERR_FORMAT,
           "header length 18446744073709551615 exceeds the file size", NULL, &b);

    length = 0;
    b = (bytes){0};
    st_build(&b, ST_VALID, ST_VALID_DATA, &length);
    st_add(bl, "st_header_length_zero", MGPU_ERR_FORMAT, "does not start with a JSON object", NULL,
           &b);

    length = 1;
    b = (bytes){0};
    st_build(&b, ST_VALID, ST_VALID_DATA, &length);
    st_add(bl, "st_header_length_one", MGPU_ERR_FORMAT, "does not start with a JSON object", NULL,
           &b);

    /* The length stops one byte short of the closing brace. */
    length = strlen(ST_VALID) - 1;
    b = (bytes){0};
    st_build(&b, ST_VALID, ST_VALID_DATA, &length);
    st_add(bl, "st_header_length_cuts_json", MGPU_ERR_FORMAT, "invalid JSON", NULL, &b);

    b = (bytes){0};
    st_build(&b, ST_VALID, ST_VALID_DATA, NULL);
    b.n = 8 + 20;
    st_add(bl, "st_truncated_header", MGPU_ERR_FORMAT, "exceeds the file size", NULL, &b);

    /* NULs instead of spaces as header padding. */
    b = (bytes){0};
    {
        size_t n = strlen(ST_VALID);
        put_u64(&b, n + 5);
        for (size_t i = 0; i < n; i++)
            put_u8(&b, ST_VALID[i] == '\'' ? (uint8_t)'"' : (uint8_t)ST_VALID[i]);
        put_fill(&b, 0, 5);
        put_pattern(&b, ST_VALID_DATA);
    }
    st_add(bl, "st_header_nul_padding", MGPU_ERR_FORMAT, "invalid JSON", NULL, &b);

    /* Deep JSON nesting must be refused, not recursed into. */
    enum { DEPTH = 100000 };
    char *deep = malloc(DEPTH + 16);
    b = (bytes){0};
    if (!deep) {
        b.oom = true;
    } else {
        strcpy(deep, "{'a':");
        memset(deep + 5, '[', DEPTH);
        deep[5 + DEPTH] = '\0';
        st_build(&b, deep, 0, NULL);
        free(deep);
    }
    st_add(bl, "st_deep_nesting", MGPU_ERR_FORMAT, "invalid JSON", NULL, &b);
}

/* ---- GGUF ---------------------------------------------------------------- */

enum {
    GGML_F32 = 0,
    GGML_F16 = 1,
    GGML_Q8_0 = 8,
    GGML_I8 = 24,
    GGML_IQ2_XXS = 16, /* known to ggml, not decoded by mgpu */
};

/* The standard key-value pairs, in file order: every value type, arrays of
 * scalars, strings and arrays, and a few keys after the arrays so cuts
 * there land past the reader's early count checks. */
enum {
    KV_ARCH,
    KV_ALIGN,
    KV_FLAG,
    KV_PI,
    KV_COUNT_I64,
    KV_U8,
    KV_F64,
    KV_I8,
    KV_I16,
    KV_U16,
    KV_I32,
    KV_BOOLS,
    KV_NAMES,
    KV_EMPTY,
    KV_NESTED,
    KV_ARRAY,
    KV_BIG,
    KV_NAME,
    KV_STD_COUNT
};

static const char *const kv_keys[KV_STD_COUNT] = {
    [KV_ARCH] = "general.architecture",
    [KV_ALIGN] = "general.alignment",
    [KV_FLAG] = "test.flag",
    [KV_PI] = "test.pi",
    [KV_COUNT_I64] = "test.count",
    [KV_U8] = "test.u8",
    [KV_F64] = "test.f64",
    [KV_I8] = "test.i8",
    [KV_I16] = "test.i16",
    [KV_U16] = "test.u16",
    [KV_I32] = "test.i32",
    [KV_BOOLS] = "test.bools",
    [KV_NAMES] = "test.names",
    [KV_EMPTY] = "test.empty",
    [KV_NESTED] = "test.nested",
    [KV_ARRAY] = "test.array",
    [KV_BIG] = "test.big",
    [KV_NAME] = "general.name",
};

enum { T_WEIGHT, T_BIAS, T_SCALE, T_STD_COUNT, MAX_KV = 24, MAX_T = 4, MAX_NE = 5 };

typedef struct tensor_spec {
    const char *name;
    uint64_t name_length; /* as written; 0 means strlen(name) */
    uint32_t n_dims;
    uint64_t ne[MAX_NE]; /* ggml order: ne[0] is the row */
    uint32_t type;
    uint64_t offset;
} tensor_spec;

typedef struct gguf_parts {
    char magic[4];
    uint32_t version;
    bool counts_set; /* write n_tensors / n_kv below instead of the real ones */
    uint64_t n_tensors, n_kv;
    bytes kv[MAX_KV];
    size_t kv_count;
    tensor_spec t[MAX_T];
    size_t t_count;
    uint32_t alignment; /* for the padding before the data */
    size_t data_bytes;
    /* Offsets recorded by gguf_assemble. */
    size_t kv_at[MAX_KV], t_at[MAX_T], info_end, data_at;
} gguf_parts;

static void put_string(bytes *b, const char *s)
{
    size_t n = strlen(s);
    put_u64(b, n);
    put(b, s, n);
}

static void kv_head(bytes *b, const char *key, uint32_t type)
{
    b->n = 0;
    put_string(b, key);
    put_u32(b, type);
}

static void kv_u32(bytes *b, const char *key, uint32_t v)
{
    kv_head(b, key, MGPU_GGUF_UINT32);
    put_u32(b, v);
}

static void kv_string(bytes *b, const char *key, const char *v)
{
    kv_head(b, key, MGPU_GGUF_STRING);
    put_string(b, v);
}

/* An array header inside a value: element type and count. */
static void array_head(bytes *b, uint32_t elem, uint64_t count)
{
    put_u32(b, elem);
    put_u64(b, count);
}

/* `levels` arrays each holding the next, the innermost an empty uint8 one. */
static void kv_nested(bytes *b, const char *key, int levels)
{
    kv_head(b, key, MGPU_GGUF_ARRAY);
    for (int i = 0; i < levels - 1; i++)
        array_head(b, MGPU_GGUF_ARRAY, 1);
    array_head(b, MGPU_GGUF_UINT8, 0);
}

static void std_kv(bytes *b, int which)
{
    const char *key = kv_keys[which];
    switch (which) {
    case KV_ARCH: kv_string(b, key, "mgpu-test"); break;
    case KV_ALIGN: kv_u32(b, key, 32); break;
    case KV_FLAG:
        kv_head(b, key, MGPU_GGUF_BOOL);
        put_u8(b, 1);
        break;
    case KV_PI:
        kv_head(b, key, MGPU_GGUF_FLOAT32);
        put_f32(b, 3.14159f);
        break;
    case KV_COUNT_I64:
        kv_head(b, key, MGPU_GGUF_INT64);
        put_u64(b, (uint64_t)-5);
        break;
    case KV_U8:
        kv_head(b, key, MGPU_GGUF_UINT8);
        put_u8(b, 200);
        break;
    case KV_F64:
        kv_head(b, key, MGPU_GGUF_FLOAT64);
        put_f64(b, 2.5);
        break;
    case KV_I8:
        kv_head(b, key, MGPU_GGUF_INT8);
        put_u8(b, (uint8_t)-3);
        break;
    case KV_I16:
        kv_head(b, key, MGPU_GGUF_INT16);
        put_u16(b, (uint16_t)-300);
        break;
    case KV_U16:
        kv_head(b, key, MGPU_GGUF_UINT16);
        put_u16(b, 65535);
        break;
    case KV_I32:
        kv_head(b, key, MGPU_GGUF_INT32);
        put_u32(b, (uint32_t)-70000);
        break;
    case KV_BOOLS:
        kv_head(b, key, MGPU_GGUF_ARRAY);
        array_head(b, MGPU_GGUF_BOOL, 3);
        put_u8(b, 0);
        put_u8(b, 1);
        put_u8(b, 1);
        break;
    case KV_NAMES:
        kv_head(b, key, MGPU_GGUF_ARRAY);
        array_head(b, MGPU_GGUF_STRING, 3);
        put_string(b, "alpha");
        put_string(b, "");
        put_string(b, "gamma");
        break;
    case KV_EMPTY:
        kv_head(b, key, MGPU_GGUF_ARRAY);
        array_head(b, MGPU_GGUF_FLOAT32, 0);
        break;
    case KV_NESTED: /* [[1, 2] (uint16), ["x"], [[0.5] (float64)]] */
        kv_head(b, key, MGPU_GGUF_ARRAY);
        array_head(b, MGPU_GGUF_ARRAY, 3);
        array_head(b, MGPU_GGUF_UINT16, 2);
        put_u16(b, 1);
        put_u16(b, 2);
        array_head(b, MGPU_GGUF_STRING, 1);
        put_string(b, "x");
        array_head(b, MGPU_GGUF_ARRAY, 1);
        array_head(b, MGPU_GGUF_FLOAT64, 1);
        put_f64(b, 0.5);
        break;
    case KV_ARRAY:
        kv_head(b, key, MGPU_GGUF_ARRAY);
        array_head(b, MGPU_GGUF_UINT32, 4);
        for (uint32_t i = 1; i <= 4; i++)
            put_u32(b, i);
        break;
    case KV_BIG:
        kv_head(b, key, MGPU_GGUF_UINT64);
        put_u64(b, 0x0123456789ABCDEFu);
        break;
    case KV_NAME: kv_string(b, key, "tiny"); break;
    default: break;
    }
}

/* Offsets inside standard key-value pair `which` of an assembled file. */
static size_t kv_type_at(const gguf_parts *g, int which)
{
    return g->kv_at[which] + 8 + strlen(kv_keys[which]);
}

static size_t kv_value_at(const gguf_parts *g, int which)
{
    return kv_type_at(g, which) + 4;
}

/* Q8_0 [2, 64] at 0 (136 bytes), F32 [2] at 160, F16 [1, 1, 4] at 192. */
static const tensor_spec std_tensors[T_STD_COUNT] = {
    [T_WEIGHT] = {"blk.0.attn.weight", 0, 2, {64, 2}, GGML_Q8_0, 0},
    [T_BIAS] = {"blk.0.attn.bias", 0, 1, {2}, GGML_F32, 160},
    [T_SCALE] = {"blk.0.norm.scale", 0, 3, {4, 1, 1}, GGML_F16, 192},
};
#define GGUF_STD_DATA 200

static void gguf_default(gguf_parts *g)
{
    memset(g, 0, sizeof *g);
    memcpy(g->magic, "GGUF", 4);
    g->version = 3;
    g->kv_count = KV_STD_COUNT;
    for (int i = 0; i < KV_STD_COUNT; i++)
        std_kv(&g->kv[i], i);
    g->t_count = T_STD_COUNT;
    memcpy(g->t, std_tensors, sizeof std_tensors);
    g->alignment = 32;
    g->data_bytes = GGUF_STD_DATA;
}

static void gguf_assemble(gguf_parts *g, bytes *b)
{
    put(b, g->magic, 4);
    put_u32(b, g->version);
    put_u64(b, g->counts_set ? g->n_tensors : g->t_count);
    put_u64(b, g->counts_set ? g->n_kv : g->kv_count);
    for (size_t i = 0; i < g->kv_count; i++) {
        g->kv_at[i] = b->n;
        if (g->kv[i].oom)
            b->oom = true;
        put(b, g->kv[i].p, g->kv[i].n);
    }
    for (size_t i = 0; i < g->t_count; i++) {
        const tensor_spec *t = &g->t[i];
        g->t_at[i] = b->n;
        put_u64(b, t->name_length ? t->name_length : strlen(t->name));
        put(b, t->name, strlen(t->name));
        put_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && d < MAX_NE; d++)
            put_u64(b, t->ne[d]);
        put_u32(b, t->type);
        put_u64(b, t->offset);
    }
    g->info_end = b->n;
    put_fill(b, 0, (g->alignment - b->n % g->alignment) % g->alignment);
    g->data_at = b->n;
    put_pattern(b, g->data_bytes);
}

static void gguf_parts_free(gguf_parts *g)
{
    for (size_t i = 0; i < MAX_KV; i++)
        bytes_free(&g->kv[i]);
}

static void gguf_add(builder *bl, const char *name, mgpu_status status, const char *expect,
                     const char *expect_memory, gguf_parts *g)
{
    bytes b = {0};
    gguf_assemble(g, &b);
    gguf_parts_free(g);
    add(bl, name, MGPU_FORMAT_GGUF, status, expect, expect_memory, &b);
}

/* The standard file with the statements after EXPECT applied to its parts,
 * which they see as `g`. */
#define GGUF_CASE(NAME, STATUS, EXPECT, ...)                                                      \
    GGUF_CASE_MEMORY(NAME, STATUS, EXPECT, NULL, __VA_ARGS__)
#define GGUF_CASE_MEMORY(NAME, STATUS, EXPECT, EXPECT_MEMORY, ...)                                \
    do {                                                                                          \
        gguf_parts g;                                                                             \
        gguf_default(&g);                                                                         \
        __VA_ARGS__;                                                                              \
        gguf_add(bl, NAME, STATUS, EXPECT, EXPECT_MEMORY, &g);                                    \
    } while (0)

/* The standard file cut to its first `at` bytes. */
static void gguf_cut(builder *bl, const char *name, const char *expect, const char *expect_memory,
                     size_t at)
{
    gguf_parts g;
    gguf_default(&g);
    bytes b = {0};
    gguf_assemble(&g, &b);
    gguf_parts_free(&g);
    if (at < b.n)
        b.n = at;
    add(bl, name, MGPU_FORMAT_GGUF, MGPU_ERR_FORMAT, expect, expect_memory, &b);
}

static void gguf_cases_build(builder *bl)
{
    char expect[BADFILE_EXPECT_BYTES];

    /* valid */
    GGUF_CASE("gguf_valid", MGPU_OK, NULL, (void)0);
    GGUF_CASE("gguf_valid_v2", MGPU_OK, NULL, g.version = 2);
    /* alignment 1: no padding at all */
    GGUF_CASE("gguf_valid_align1", MGPU_OK, NULL, kv_u32(&g.kv[KV_ALIGN], kv_keys[KV_ALIGN], 1);
              g.alignment = 1; g.t[T_BIAS].offset = 136; g.t[T_SCALE].offset = 144;
              g.data_bytes = 152);
    /* header only */
    GGUF_CASE("gguf_valid_empty", MGPU_OK, NULL, g.kv_count = 0; g.t_count = 0; g.data_bytes = 0);
    /* no keys; an empty tensor sharing its offset with a 4-D one; default
     * alignment; the data is not padded at the end */
    GGUF_CASE("gguf_valid_edge", MGPU_OK, NULL, g.kv_count = 0;
              g.t[0] = (tensor_spec){"empty", 0, 1, {0}, GGML_F32, 0};
              g.t[1] = (tensor_spec){"one", 0, 4, {1, 1, 1, 1}, GGML_F16, 0};
              g.t[2] = (tensor_spec){"tail", 0, 1, {3}, GGML_I8, 32}; g.data_bytes = 35);

    /* magic and version */
    GGUF_CASE_MEMORY("gguf_bad_magic", MGPU_ERR_FORMAT, NEITHER, "no 'GGUF' magic",
                     memcpy(g.magic, "GGUX", 4));
    GGUF_CASE_MEMORY("gguf_magic_lowercase", MGPU_ERR_FORMAT, NEITHER, "no 'GGUF' magic",
                     memcpy(g.magic, "gguf", 4));
    GGUF_CASE("gguf_version_0", MGPU_ERR_UNSUPPORTED, "GGUF version 0 is not supported",
              g.version = 0);
    GGUF_CASE("gguf_version_1", MGPU_ERR_UNSUPPORTED, "GGUF version 1 is not supported",
              g.version = 1);
    GGUF_CASE("gguf_version_99", MGPU_ERR_UNSUPPORTED, "GGUF version 99 is not supported",
              g.version = 99);
    GGUF_CASE("gguf_version_max", MGPU_ERR_UNSUPPORTED,
              "GGUF version 4294967295 is not supported", g.version = UINT32_MAX);
    GGUF_CASE("gguf_version_big_endian", MGPU_ERR_UNSUPPORTED, "big-endian",
              g.version = 0x03000000);

    /* truncated at each stage */
    gguf_parts m;
    gguf_default(&m);
    {
        bytes tmp = {0};
        gguf_assemble(&m, &tmp);
        bytes_free(&tmp);
    }
    gguf_cut(bl, "gguf_trunc_magic", NEITHER, "no 'GGUF' magic", 3);
    gguf_cut(bl, "gguf_trunc_version", "version needs 4 bytes", NULL, 6);
    gguf_cut(bl, "gguf_trunc_tensor_count", "tensor count needs 8 bytes", NULL, 12);
    gguf_cut(bl, "gguf_trunc_kv_count", "key-value count needs 8 bytes", NULL, 20);
    gguf_cut(bl, "gguf_trunc_kv_key_length", "key needs 8 bytes", NULL, m.kv_at[KV_NAME] + 4);
    format_into(expect, sizeof expect, "key length %zu exceeds the 3 bytes left",
                strlen(kv_keys[KV_NAME]));
    gguf_cut(bl, "gguf_trunc_kv_key", expect, NULL, m.kv_at[KV_NAME] + 8 + 3);
    gguf_cut(bl, "gguf_trunc_kv_type", "key 'general.name': value type needs 4 bytes", NULL,
             kv_type_at(&m, KV_NAME) + 2);
    gguf_cut(bl, "gguf_trunc_kv_value_u64", "key 'test.big': uint64 needs 8 bytes", NULL,
             kv_value_at(&m, KV_BIG) + 3);
    gguf_cut(bl, "gguf_trunc_kv_value_string",
             "key 'general.name': string length 4 exceeds the 2 bytes left", NULL,
             kv_value_at(&m, KV_NAME) + 8 + 2);
    gguf_cut(bl, "gguf_trunc_kv_array_length", "key 'test.array': array length needs 8 bytes",
             NULL, kv_value_at(&m, KV_ARRAY) + 4 + 5);
    gguf_cut(bl, "gguf_trunc_kv_array_elements",
             "key 'test.array': array of 4 elements cannot fit in the 6 bytes left", NULL,
             kv_value_at(&m, KV_ARRAY) + 12 + 6);
    /* test.nested cut where its second inner array's string "x" starts */
    gguf_cut(bl, "gguf_trunc_kv_nested",
             "key 'test.nested': string length 1 exceeds the 0 bytes left", NULL,
             kv_value_at(&m, KV_NESTED) + 12 + 12 + 4 + 12 + 8);
    format_into(expect, sizeof expect, "tensor name length %zu exceeds the 2 bytes left",
                strlen(std_tensors[T_SCALE].name));
    gguf_cut(bl, "gguf_trunc_tensor_name", expect, NULL, m.t_at[T_SCALE] + 8 + 2);
    size_t scale_dims_at = m.t_at[T_SCALE] + 8 + strlen(std_tensors[T_SCALE].name);
    gguf_cut(bl, "gguf_trunc_tensor_n_dims", "tensor 'blk.0.norm.scale': dimension count needs 4",
             NULL, scale_dims_at + 1);
    gguf_cut(bl, "gguf_trunc_tensor_dims", "tensor 'blk.0.norm.scale': dimension needs 8 bytes",
             NULL, scale_dims_at + 4 + 8 + 3);
    gguf_cut(bl, "gguf_trunc_tensor_type", "tensor 'blk.0.norm.scale': tensor type needs 4",
             NULL, scale_dims_at + 4 + 24 + 2);
    gguf_cut(bl, "gguf_trunc_tensor_offset",
             "tensor 'blk.0.norm.scale': tensor data offset needs 8", NULL,
             scale_dims_at + 4 + 24 + 4 + 7);
    /* The data section would start past the end, or its tensors run past it. */
    gguf_cut(bl, "gguf_trunc_before_data", "past the end", NULL, m.info_end);
    gguf_cut(bl, "gguf_trunc_data", "tensor 'blk.0.norm.scale': 8 bytes at data offset 192 run "
                                    "past the end of the file",
             NULL, m.data_at + GGUF_STD_DATA - 1);
    gguf_parts_free(&m);

    /* counts */
    GGUF_CASE("gguf_tensor_count_huge", MGPU_ERR_FORMAT,
              "tensor count 9223372036854775808 cannot fit", g.counts_set = true;
              g.n_tensors = (uint64_t)1 << 63; g.n_kv = g.kv_count);
    GGUF_CASE("gguf_tensor_count_max", MGPU_ERR_FORMAT,
              "tensor count 18446744073709551615 cannot fit", g.counts_set = true;
              g.n_tensors = UINT64_MAX; g.n_kv = g.kv_count);
    GGUF_CASE("gguf_kv_count_huge", MGPU_ERR_FORMAT,
              "key-value count 4611686018427387904 cannot fit", g.counts_set = true;
              g.n_tensors = g.t_count; g.n_kv = (uint64_t)1 << 62);
    /* One key fewer: the last pair is read as a tensor info whose dimension
     * count is the pair's value type (8, string). */
    GGUF_CASE("gguf_kv_count_short", MGPU_ERR_FORMAT,
              "tensor 'general.name': 8 dimensions, GGUF allows 1 to 4", g.counts_set = true;
              g.n_tensors = g.t_count; g.n_kv = g.kv_count - 1);

    /* strings and values */
    GGUF_CASE("gguf_key_length_huge", MGPU_ERR_FORMAT,
              "key length 18446744073709551615 exceeds", g.kv[KV_ARCH].n = 0;
              put_u64(&g.kv[KV_ARCH], UINT64_MAX); put(&g.kv[KV_ARCH], "general", 7));
    GGUF_CASE("gguf_string_length_huge", MGPU_ERR_FORMAT,
              "key 'general.architecture': string length 9223372036854775808 exceeds",
              kv_head(&g.kv[KV_ARCH], kv_keys[KV_ARCH], MGPU_GGUF_STRING);
              put_u64(&g.kv[KV_ARCH], (uint64_t)1 << 63); put(&g.kv[KV_ARCH], "mgpu", 4));
    GGUF_CASE("gguf_tensor_name_length_huge", MGPU_ERR_FORMAT,
              "tensor name length 18446744073709551615 exceeds",
              g.t[T_BIAS].name_length = UINT64_MAX);
    GGUF_CASE("gguf_value_type_unknown", MGPU_ERR_FORMAT,
              "key 'test.flag': unknown value type 13", kv_head(&g.kv[KV_FLAG], "test.flag", 13);
              put_u8(&g.kv[KV_FLAG], 1));
    GGUF_CASE("gguf_value_type_max", MGPU_ERR_FORMAT, "unknown value type 4294967295",
              kv_head(&g.kv[KV_FLAG], "test.flag", UINT32_MAX); put_u8(&g.kv[KV_FLAG], 1));
    GGUF_CASE("gguf_array_type_unknown", MGPU_ERR_FORMAT,
              "key 'test.array': unknown array element type 13",
              kv_head(&g.kv[KV_ARRAY], "test.array", MGPU_GGUF_ARRAY);
              array_head(&g.kv[KV_ARRAY], 13, 4); put_fill(&g.kv[KV_ARRAY], 1, 16));
    GGUF_CASE("gguf_array_count_huge", MGPU_ERR_FORMAT,
              "key 'test.array': array of 4611686018427387904 elements cannot fit",
              kv_head(&g.kv[KV_ARRAY], "test.array", MGPU_GGUF_ARRAY);
              array_head(&g.kv[KV_ARRAY], MGPU_GGUF_UINT32, (uint64_t)1 << 62);
              put_fill(&g.kv[KV_ARRAY], 1, 16));
    GGUF_CASE("gguf_array_count_max", MGPU_ERR_FORMAT,
              "array of 18446744073709551615 elements cannot fit",
              kv_head(&g.kv[KV_ARRAY], "test.array", MGPU_GGUF_ARRAY);
              array_head(&g.kv[KV_ARRAY], MGPU_GGUF_UINT8, UINT64_MAX);
              put_fill(&g.kv[KV_ARRAY], 1, 16));
    GGUF_CASE("gguf_string_array_count_huge", MGPU_ERR_FORMAT,
              "key 'test.names': array of 1152921504606846976 elements cannot fit",
              kv_head(&g.kv[KV_NAMES], "test.names", MGPU_GGUF_ARRAY);
              array_head(&g.kv[KV_NAMES], MGPU_GGUF_STRING, (uint64_t)1 << 60);
              put_string(&g.kv[KV_NAMES], "alpha"));
    GGUF_CASE("gguf_nested_array_count_huge", MGPU_ERR_FORMAT,
              "key 'test.nested': array of 1152921504606846976 elements cannot fit",
              kv_head(&g.kv[KV_NESTED], "test.nested", MGPU_GGUF_ARRAY);
              array_head(&g.kv[KV_NESTED], MGPU_GGUF_ARRAY, (uint64_t)1 << 60);
              array_head(&g.kv[KV_NESTED], MGPU_GGUF_UINT8, 0));
    GGUF_CASE("gguf_nested_17", MGPU_ERR_FORMAT, "key 'test.nested': arrays nested deeper than 16",
              kv_nested(&g.kv[KV_NESTED], "test.nested", 17));
    GGUF_CASE("gguf_nested_1000", MGPU_ERR_FORMAT, "arrays nested deeper than 16",
              kv_nested(&g.kv[KV_NESTED], "test.nested", 1000));
    GGUF_CASE("gguf_bool_2", MGPU_ERR_FORMAT, "key 'test.flag': bool value 2 is neither 0 nor 1",
              poke(&g.kv[KV_FLAG], 1, 2));
    GGUF_CASE("gguf_bool_255", MGPU_ERR_FORMAT, "bool value 255 is neither 0 nor 1",
              poke(&g.kv[KV_FLAG], 1, 255));
    GGUF_CASE("gguf_bool_array_2", MGPU_ERR_FORMAT,
              "key 'test.bools': bool array element 1 has value 2",
              poke(&g.kv[KV_BOOLS], 2, 2));
    /* a key with a newline and a terminal escape, quoted in the message */
    GGUF_CASE("gguf_key_control_chars", MGPU_ERR_FORMAT, "bool value 2 is neither 0 nor 1",
              kv_head(&g.kv[KV_FLAG], "test.\n\x1b[2J", MGPU_GGUF_BOOL);
              put_u8(&g.kv[KV_FLAG], 2));
    GGUF_CASE("gguf_tensor_name_control_chars", MGPU_ERR_FORMAT, "unknown GGUF type id 99",
              g.t[T_BIAS].name = "bias\r\x1b]0;title\x07"; g.t[T_BIAS].type = 99);
    GGUF_CASE("gguf_duplicate_key", MGPU_ERR_FORMAT,
              "key 'general.architecture' appears more than once",
              kv_string(&g.kv[KV_NAME], "general.architecture", "tiny"));

    /* tensor infos */
    GGUF_CASE("gguf_duplicate_tensor", MGPU_ERR_FORMAT,
              "tensor 'blk.0.attn.weight' appears more than once",
              g.t[T_BIAS].name = g.t[T_WEIGHT].name);
    GGUF_CASE("gguf_n_dims_0", MGPU_ERR_FORMAT,
              "tensor 'blk.0.attn.bias': 0 dimensions, GGUF allows 1 to 4", g.t[T_BIAS].n_dims = 0);
    GGUF_CASE("gguf_n_dims_5", MGPU_ERR_FORMAT,
              "tensor 'blk.0.attn.bias': 5 dimensions, GGUF allows 1 to 4", g.t[T_BIAS].n_dims = 5;
              g.t[T_BIAS].ne[1] = g.t[T_BIAS].ne[2] = g.t[T_BIAS].ne[3] = g.t[T_BIAS].ne[4] = 1);
    GGUF_CASE("gguf_n_dims_max", MGPU_ERR_FORMAT, "4294967295 dimensions",
              g.t[T_BIAS].n_dims = UINT32_MAX);
    GGUF_CASE("gguf_ne_beyond_int64", MGPU_ERR_FORMAT,
              "tensor 'blk.0.attn.bias': dimension 0 is 9223372036854775808, beyond int64",
              g.t[T_BIAS].ne[0] = (uint64_t)1 << 63);
    GGUF_CASE("gguf_ne_max", MGPU_ERR_FORMAT, "dimension 0 is 18446744073709551615, beyond int64",
              g.t[T_BIAS].ne[0] = UINT64_MAX);
    GGUF_CASE("gguf_elements_overflow", MGPU_ERR_FORMAT,
              "tensor 'blk.0.attn.bias': size overflows 64 bits", g.t[T_BIAS].n_dims = 3;
              g.t[T_BIAS].ne[0] = (uint64_t)1 << 32; g.t[T_BIAS].ne[1] = (uint64_t)1 << 32;
              g.t[T_BIAS].ne[2] = 2);
    GGUF_CASE("gguf_bytes_overflow", MGPU_ERR_FORMAT,
              "tensor 'blk.0.attn.bias': size overflows 64 bits",
              g.t[T_BIAS].ne[0] = (uint64_t)1 << 62);
    GGUF_CASE("gguf_type_99", MGPU_ERR_FORMAT, "tensor 'blk.0.attn.bias': unknown GGUF type id 99",
              g.t[T_BIAS].type = 99);
    GGUF_CASE("gguf_type_removed_4", MGPU_ERR_FORMAT, "unknown GGUF type id 4",
              g.t[T_BIAS].type = 4);
    GGUF_CASE("gguf_type_max", MGPU_ERR_FORMAT, "unknown GGUF type id 4294967295",
              g.t[T_BIAS].type = UINT32_MAX);
    GGUF_CASE("gguf_type_iq2_xxs", MGPU_ERR_UNSUPPORTED,
              "tensor 'blk.0.attn.weight': GGUF type 16 (IQ2_XXS) is not supported",
              g.t[T_WEIGHT].type = GGML_IQ2_XXS; g.t[T_WEIGHT].ne[0] = 256;
              g.t[T_WEIGHT].ne[1] = 1);
    GGUF_CASE("gguf_row_not_block_multiple", MGPU_ERR_FORMAT,
              "tensor 'blk.0.attn.weight': row length 48 is not a multiple of the Q8_0 block "
              "size 32",
              g.t[T_WEIGHT].ne[0] = 48);
    GGUF_CASE("gguf_offset_misaligned", MGPU_ERR_FORMAT,
              "tensor 'blk.0.attn.bias': data offset 161 is not a multiple of the alignment 32",
              g.t[T_BIAS].offset = 161);
    GGUF_CASE("gguf_offset_past_end", MGPU_ERR_FORMAT,
              "tensor 'blk.0.norm.scale': 8 bytes at data offset 1099511627776 run past the end",
              g.t[T_SCALE].offset = (uint64_t)1 << 40);
    GGUF_CASE("gguf_offset_max", MGPU_ERR_FORMAT,
              "8 bytes at data offset 18446744073709551584 run past the end",
              g.t[T_SCALE].offset = UINT64_MAX - 31);
    GGUF_CASE("gguf_offset_at_end", MGPU_ERR_FORMAT,
              "tensor 'blk.0.norm.scale': 8 bytes at data offset 224 run past the end",
              g.t[T_SCALE].offset = 224);
    GGUF_CASE("gguf_overlap", MGPU_ERR_FORMAT,
              "overlaps tensor 'blk.0.attn.weight'", g.t[T_BIAS].offset = 128);
    GGUF_CASE("gguf_overlap_same_offset", MGPU_ERR_FORMAT, "overlaps tensor 'blk.0.attn.bias'",
              g.t[T_SCALE].offset = 160);

    /* general.alignment */
    GGUF_CASE("gguf_alignment_0", MGPU_ERR_FORMAT,
              "general.alignment must be a uint32 power of two",
              kv_u32(&g.kv[KV_ALIGN], kv_keys[KV_ALIGN], 0));
    GGUF_CASE("gguf_alignment_3", MGPU_ERR_FORMAT,
              "general.alignment must be a uint32 power of two",
              kv_u32(&g.kv[KV_ALIGN], kv_keys[KV_ALIGN], 3));
    GGUF_CASE("gguf_alignment_48", MGPU_ERR_FORMAT,
              "general.alignment must be a uint32 power of two",
              kv_u32(&g.kv[KV_ALIGN], kv_keys[KV_ALIGN], 48));
    GGUF_CASE("gguf_alignment_u64", MGPU_ERR_FORMAT,
              "general.alignment must be a uint32 power of two",
              kv_head(&g.kv[KV_ALIGN], kv_keys[KV_ALIGN], MGPU_GGUF_UINT64);
              put_u64(&g.kv[KV_ALIGN], 32));
    GGUF_CASE("gguf_alignment_string", MGPU_ERR_FORMAT,
              "general.alignment must be a uint32 power of two",
              kv_string(&g.kv[KV_ALIGN], kv_keys[KV_ALIGN], "32"));
    GGUF_CASE("gguf_alignment_mismatch", MGPU_ERR_FORMAT,
              "tensor 'blk.0.attn.bias': data offset 160 is not a multiple of the alignment 64",
              kv_u32(&g.kv[KV_ALIGN], kv_keys[KV_ALIGN], 64); g.alignment = 64);
    /* A legal but huge alignment puts the data section past the end. */
    GGUF_CASE("gguf_alignment_huge", MGPU_ERR_FORMAT, "past the end",
              kv_u32(&g.kv[KV_ALIGN], kv_keys[KV_ALIGN], (uint32_t)1 << 31); g.alignment = 32);
}

/* ---- public -------------------------------------------------------------- */

int badfiles_build(badfile_set *set)
{
    memset(set, 0, sizeof *set);
    builder bl = {set, false};
    st_cases_build(&bl);
    gguf_cases_build(&bl);
    if (bl.oom) {
        badfiles_free(set);
        return -1;
    }
    return 0;
}

void badfiles_free(badfile_set *set)
{
    for (size_t i = 0; i < set->count; i++)
        free(set->items[i].data);
    free(set->items);
    memset(set, 0, sizeof *set);
}

const char *badfiles_expect_memory(const badfile *f)
{
    return f->expect_memory[0] ? f->expect_memory : f->expect;
}

int badfiles_write(const badfile_set *set, const char *dir, int format, int manifest, char *error,
                   size_t error_size)
{
    char path[4096];
    FILE *list = NULL;
    if (manifest) {
        format_into(path, sizeof path, "%s/manifest.tsv", dir);
        list = fopen(path, "w");
        if (!list) {
            format_into(error, error_size, "%s: cannot create", path);
            return -1;
        }
    }
    int rc = 0;
    for (size_t i = 0; i < set->count && rc == 0; i++) {
        const badfile *f = &set->items[i];
        if (format && (int)f->format != format)
            continue;
        format_into(path, sizeof path, "%s/%s", dir, f->name);
        FILE *out = fopen(path, "wb");
        if (!out) {
            format_into(error, error_size, "%s: cannot create", path);
            rc = -1;
            break;
        }
        size_t wrote = f->size ? fwrite(f->data, 1, f->size, out) : 0;
        if (fclose(out) != 0 || wrote != f->size) {
            format_into(error, error_size, "%s: write failed", path);
            rc = -1;
        }
        if (list && f->status != MGPU_OK)
            fprintf(list, "%s\t%s\n", f->name, f->expect);
    }
    if (list && fclose(list) != 0 && rc == 0) {
        format_into(error, error_size, "%s/manifest.tsv: write failed", dir);
        rc = -1;
    }
    return rc;
}

/* ---- handle checks ------------------------------------------------------- */

static char check_message[320];

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static const char *problem(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(check_message, sizeof check_message, fmt, ap);
    va_end(ap);
    return check_message;
}

/* Reads every byte so a view past the image would trip a sanitizer. */
static unsigned touch(const void *p, uint64_t n)
{
    const volatile uint8_t *b = p;
    unsigned sum = 0;
    for (uint64_t i = 0; i < n; i++)
        sum += b[i];
    return sum;
}

/* Checks one tensor info against the image; shared by both formats. */
static const char *check_tensor(const mgpu_tensor_info *t, size_t index, const uint8_t *base,
                                uint64_t size, int max_dims)
{
    if (!t)
        return problem("tensor %zu: NULL info", index);
    if (!t->name)
        return problem("tensor %zu: NULL name", index);
    (void)strlen(t->name);
    const mgpu_dtype_info *info = mgpu_dtype_get_info(t->dtype);
    if (!info)
        return problem("tensor '%s': invalid dtype %d", t->name, (int)t->dtype);
    if (t->ndim < 0 || t->ndim > max_dims)
        return problem("tensor '%s': ndim %d", t->name, t->ndim);
    uint64_t n = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] != 0 && n > UINT64_MAX / t->shape[d])
            return problem("tensor '%s': shape overflows yet was accepted", t->name);
        n *= t->shape[d];
    }
    uint64_t bytes;
    if (n != t->n_elems)
        return problem("tensor '%s': n_elems %llu, shape says %llu", t->name,
                       (unsigned long long)t->n_elems, (unsigned long long)n);
    if (!mgpu_dtype_bytes_for(t->dtype, n, &bytes) || bytes != t->nbytes)
        return problem("tensor '%s': nbytes %llu does not match %llu %s elements", t->name,
                       (unsigned long long)t->nbytes, (unsigned long long)n, info->name);
    if (t->file_offset > size || t->nbytes > size - t->file_offset)
        return problem("tensor '%s': bytes [%llu, +%llu) outside the %llu-byte file", t->name,
                       (unsigned long long)t->file_offset, (unsigned long long)t->nbytes,
                       (unsigned long long)size);
    if (t->data != base + t->file_offset)
        return problem("tensor '%s': data pointer is not file start + file_offset", t->name);
    (void)touch(t->data, t->nbytes);
    /* Decode it: a block decoder reading past nbytes would trip ASan. */
    if (t->n_elems > 0 && t->n_elems <= (1u << 20)) {
        float *out = malloc((size_t)t->n_elems * sizeof *out);
        if (out) {
            mgpu_status s = mgpu_dequantize(t->dtype, t->data, out, t->n_elems);
            free(out);
            if (s != MGPU_OK)
                return problem("tensor '%s': mgpu_dequantize failed (%s)", t->name,
                               mgpu_status_name(s));
        }
    }
    return NULL;
}

const char *badfiles_check_safetensors(const mgpu_safetensors *st, const void *data,
                                       uint64_t size)
{
    const uint8_t *base = data;
    uint64_t header = mgpu_safetensors_header_bytes(st);
    if (mgpu_safetensors_file_bytes(st) != size)
        return problem("file_bytes %llu for a %llu-byte image",
                       (unsigned long long)mgpu_safetensors_file_bytes(st),
                       (unsigned long long)size);
    if (size < 8 || header > size - 8)
        return problem("header_bytes %llu in a %llu-byte file", (unsigned long long)header,
                       (unsigned long long)size);
    size_t count = mgpu_safetensors_tensor_count(st);
    uint64_t expected = 8 + header;
    for (size_t i = 0; i < count; i++) {
        const mgpu_tensor_info *t = mgpu_safetensors_tensor(st, i);
        const char *p = check_tensor(t, i, base, size, MGPU_MAX_DIMS);
        if (p)
            return p;
        if (t->dtype == MGPU_DTYPE_INVALID || mgpu_dtype_get_info(t->dtype)->quantized)
            return problem("tensor '%s': block dtype in safetensors", t->name);
        /* data-offset order, tiling the data section */
        if (t->file_offset != expected)
            return problem("tensor '%s': at %llu, expected %llu (gap or overlap accepted)",
                           t->name, (unsigned long long)t->file_offset,
                           (unsigned long long)expected);
        expected += t->nbytes;
        const mgpu_tensor_info *found = mgpu_safetensors_find(st, t->name);
        if (found != t)
            return problem("find('%s') does not return tensor %zu", t->name, i);
    }
    if (expected != size)
        return problem("tensors end at %llu in a %llu-byte file", (unsigned long long)expected,
                       (unsigned long long)size);
    if (mgpu_safetensors_tensor(st, count) != NULL)
        return problem("tensor(count) is not NULL");
    size_t meta = mgpu_safetensors_metadata_count(st);
    for (size_t i = 0; i <= meta; i++) {
        const char *key = "x", *value = "x";
        mgpu_safetensors_metadata(st, i, &key, &value);
        if (i == meta) {
            if (key || value)
                return problem("metadata(count) is not NULL");
        } else if (!key || !value) {
            return problem("metadata %zu: NULL key or value", i);
        } else {
            (void)touch(key, strlen(key));
            (void)touch(value, strlen(value));
        }
    }
    if (mgpu_safetensors_find(st, "__metadata__"))
        return problem("__metadata__ listed as a tensor");
    return NULL;
}

/* A value and, for arrays, every element read through mgpu_gguf_array_get. */
static const char *check_value(const char *key, const mgpu_gguf_value *v, int depth)
{
    if (depth > 64)
        return problem("key '%s': arrays nested %d deep were accepted", key, depth);
    if ((unsigned)v->type >= MGPU_GGUF_TYPE_COUNT)
        return problem("key '%s': value type %d", key, (int)v->type);
    if (v->type == MGPU_GGUF_STRING) {
        if (!v->string.data || v->string.data[v->string.length] != '\0')
            return problem("key '%s': string not NUL-terminated at its length", key);
        (void)touch(v->string.data, v->string.length);
    } else if (v->type == MGPU_GGUF_BOOL) {
        volatile bool b = v->b;
        (void)b;
    } else if (v->type == MGPU_GGUF_ARRAY) {
        if ((unsigned)v->array.elem_type >= MGPU_GGUF_TYPE_COUNT)
            return problem("key '%s': array element type %d", key, (int)v->array.elem_type);
        for (uint64_t i = 0; i < v->array.count; i++) {
            mgpu_gguf_value e;
            memset(&e, 0xA5, sizeof e);
            if (!mgpu_gguf_array_get(v, i, &e))
                return problem("key '%s': array_get(%llu) of %llu failed", key,
                               (unsigned long long)i, (unsigned long long)v->array.count);
            if (e.type != v->array.elem_type)
                return problem("key '%s': element %llu has type %d, array says %d", key,
                               (unsigned long long)i, (int)e.type, (int)v->array.elem_type);
            const char *p = check_value(key, &e, depth + 1);
            if (p)
                return p;
        }
        mgpu_gguf_value e;
        if (mgpu_gguf_array_get(v, v->array.count, &e))
            return problem("key '%s': array_get(count) succeeded", key);
    }
    return NULL;
}

const char *badfiles_check_gguf(const mgpu_gguf *g, const void *data, uint64_t size)
{
    const uint8_t *base = data;
    uint32_t version = mgpu_gguf_version(g), alignment = mgpu_gguf_alignment(g);
    uint64_t data_offset = mgpu_gguf_data_offset(g);
    if (version != 2 && version != 3)
        return problem("version %u accepted", version);
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        return problem("alignment %u accepted", alignment);
    if (mgpu_gguf_file_bytes(g) != size)
        return problem("file_bytes %llu for a %llu-byte image",
                       (unsigned long long)mgpu_gguf_file_bytes(g), (unsigned long long)size);
    size_t kv = mgpu_gguf_kv_count(g);
    for (size_t i = 0; i < kv; i++) {
        const char *key = mgpu_gguf_kv_key(g, i);
        const mgpu_gguf_value *v = mgpu_gguf_kv_value(g, i);
        if (!key || !v)
            return problem("kv %zu: NULL key or value", i);
        (void)touch(key, strlen(key));
        if (mgpu_gguf_find_kv(g, key) != v)
            return problem("find_kv('%s') does not return pair %zu", key, i);
        const char *p = check_value(key, v, 0);
        if (p)
            return p;
    }
    if (mgpu_gguf_kv_key(g, kv) || mgpu_gguf_kv_value(g, kv))
        return problem("kv(count) is not NULL");
    size_t count = mgpu_gguf_tensor_count(g);
    if (count > 0 && (data_offset % alignment != 0 || data_offset > size))
        return problem("data offset %llu (alignment %u, file %llu bytes)",
                       (unsigned long long)data_offset, alignment, (unsigned long long)size);
    for (size_t i = 0; i < count; i++) {
        const mgpu_tensor_info *t = mgpu_gguf_tensor(g, i);
        const char *p = check_tensor(t, i, base, size, 4);
        if (p)
            return p;
        if (t->ndim < 1)
            return problem("tensor '%s': ndim %d", t->name, t->ndim);
        if (t->file_offset < data_offset || (t->file_offset - data_offset) % alignment != 0)
            return problem("tensor '%s': offset %llu not aligned in the data section", t->name,
                           (unsigned long long)t->file_offset);
        if (mgpu_gguf_find(g, t->name) != t)
            return problem("find('%s') does not return tensor %zu", t->name, i);
        /* no two tensors share bytes (quadratic, fine for small files) */
        for (size_t j = 0; j < i && count <= 256; j++) {
            const mgpu_tensor_info *u = mgpu_gguf_tensor(g, j);
            if (t->nbytes && u->nbytes && t->file_offset < u->file_offset + u->nbytes &&
                u->file_offset < t->file_offset + t->nbytes)
                return problem("tensors '%s' and '%s' overlap yet were accepted", u->name,
                               t->name);
        }
    }
    if (mgpu_gguf_tensor(g, count) != NULL)
        return problem("tensor(count) is not NULL");
    return NULL;
}

const char *badfiles_check_error(mgpu_status s, const void *handle, const mgpu_error *err,
                                 int lax)
{
    if (s == MGPU_OK)
        return "a failure reported as success";
    if (handle)
        return "handle not NULL after a failure";
    if (err->status != s)
        return "mgpu_error.status differs from the returned status";
    if (!memchr(err->message, '\0', sizeof err->message))
        return "message not NUL-terminated";
    if (!err->message[0])
        return "a failure without a message";
    if (!lax)
        for (const char *p = err->message; *p; p++)
            if ((unsigned char)*p < 0x20)
                return "message holds a newline or control character";
    return NULL;
}

const char *badfiles_check_failure(mgpu_status s, const void *handle, const mgpu_error *err,
                                   const char *label, int lax)
{
    if (s != MGPU_ERR_FORMAT && s != MGPU_ERR_UNSUPPORTED && s != MGPU_ERR_NO_MEMORY)
        return "unexpected status";
    const char *problem = badfiles_check_error(s, handle, err, lax);
    if (!problem && strncmp(err->message, label, strlen(label)) != 0)
        problem = "message does not start with the label";
    if (!problem && !lax && strchr(err->message, 0x7F))
        problem = "message holds a newline or control character";
    return problem;
}
