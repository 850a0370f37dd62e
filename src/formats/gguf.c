/* GGUF reader. A cursor walks the header with a bounds check on every read;
 * counts are bounded by what the remaining bytes could hold before anything
 * is allocated for them, so a hostile file cannot make us allocate more than
 * a small multiple of its own size. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/error.h"
#include "core/file.h"
#include "formats/shape.h"
#include "mgpu/gguf.h"

enum {
    GGUF_MAX_DEPTH = 16,        /* nesting of arrays */
    GGUF_MAX_DIMS = 4,          /* GGML_MAX_DIMS */
    GGUF_DEFAULT_ALIGNMENT = 32,
    MIN_KV_BYTES = 8 + 4 + 1,   /* empty key, type, one-byte value */
    MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8,
};

struct mgpu_gguf {
    mgpu_mapped_file file; /* owned mapping when opened from a path */
    const char *label;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    uint64_t size;
    const char **keys;       /* malloc'd, grown as keys are read */
    mgpu_gguf_value *values; /* malloc'd, parallel to keys */
    size_t kv_count, kv_capacity, values_capacity;
    mgpu_tensor_info *tensors; /* malloc'd, grown as infos are read */
    uint64_t *rel_offsets;     /* data offsets as stored, parallel to tensors */
    size_t tensor_count, tensor_capacity;
    const mgpu_tensor_info **by_name;
    mgpu_arena arena;
};

typedef struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    mgpu_gguf *g;
    mgpu_error *err;
    char where[256]; /* "key 'general.name'" or "tensor 'x'" for messages */
} cursor;

static const uint8_t scalar_bytes[MGPU_GGUF_TYPE_COUNT] = {
    [MGPU_GGUF_UINT8] = 1,  [MGPU_GGUF_INT8] = 1,   [MGPU_GGUF_UINT16] = 2,
    [MGPU_GGUF_INT16] = 2,  [MGPU_GGUF_UINT32] = 4, [MGPU_GGUF_INT32] = 4,
    [MGPU_GGUF_FLOAT32] = 4, [MGPU_GGUF_BOOL] = 1,  [MGPU_GGUF_UINT64] = 8,
    [MGPU_GGUF_INT64] = 8,  [MGPU_GGUF_FLOAT64] = 8,
};

const char *mgpu_gguf_type_name_of(mgpu_gguf_type type)
{
    static const char *const names[MGPU_GGUF_TYPE_COUNT] = {
        "uint8", "int8",  "uint16", "int16", "uint32", "int32",  "float32",
        "bool",  "string", "array", "uint64", "int64", "float64",
    };
    return (unsigned)type < MGPU_GGUF_TYPE_COUNT ? names[type] : "unknown";
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static mgpu_status fail(cursor *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mgpu_error_set(c->err, MGPU_ERR_FORMAT, "%s: at offset %" PRIu64 "%s%s: %s",
                          c->g->label, c->pos, c->where[0] ? ", " : "", c->where, msg);
}

static mgpu_status need(cursor *c, uint64_t bytes, const char *what)
{
    if (bytes > c->size - c->pos)
        return fail(c, "%s needs %" PRIu64 " bytes but only %" PRIu64 " remain (truncated file?)",
                    what, bytes, c->size - c->pos);
    return MGPU_OK;
}

static uint64_t load_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static mgpu_status read_u32(cursor *c, uint32_t *v, const char *what)
{
    mgpu_status s = need(c, 4, what);
    if (s == MGPU_OK) {
        *v = (uint32_t)load_le(c->base + c->pos, 4);
        c->pos += 4;
    }
    return s;
}

static mgpu_status read_u64(cursor *c, uint64_t *v, const char *what)
{
    mgpu_status s = need(c, 8, what);
    if (s == MGPU_OK) {
        *v = load_le(c->base + c->pos, 8);
        c->pos += 8;
    }
    return s;
}

static mgpu_status read_string(cursor *c, const char **out, uint64_t *length, const char *what)
{
    uint64_t n;
    mgpu_status s = read_u64(c, &n, what);
    if (s == MGPU_OK && n > c->size - c->pos)
        return fail(c, "%s length %" PRIu64 " exceeds the %" PRIu64 " bytes left", what, n,
                    c->size - c->pos);
    if (s != MGPU_OK)
        return s;
    char *copy = mgpu_arena_strndup(&c->g->arena, (const char *)c->base + c->pos, (size_t)n);
    if (!copy)
        return mgpu_error_set(c->err, MGPU_ERR_NO_MEMORY, "%s: out of memory", c->g->label);
    *out = copy;
    if (length)
        *length = n;
    c->pos += n;
    return MGPU_OK;
}

static void decode_scalar(mgpu_gguf_type type, const uint8_t *p, mgpu_gguf_value *v)
{
    uint64_t raw = load_le(p, scalar_bytes[type]);
    v->type = type;
    switch (type) {
    case MGPU_GGUF_INT8: v->i64 = (int8_t)raw; break;
    case MGPU_GGUF_INT16: v->i64 = (int16_t)raw; break;
    case MGPU_GGUF_INT32: v->i64 = (int32_t)raw; break;
    case MGPU_GGUF_INT64: v->i64 = (int64_t)raw; break;
    case MGPU_GGUF_FLOAT32: {
        uint32_t bits = (uint32_t)raw;
        float f;
        memcpy(&f, &bits, 4);
        v->f64 = f;
        break;
    }
    case MGPU_GGUF_FLOAT64: memcpy(&v->f64, &raw, 8); break;
    case MGPU_GGUF_BOOL: v->b = raw != 0; break;
    default: v->u64 = raw; break;
    }
}

static mgpu_status read_value(cursor *c, mgpu_gguf_type type, mgpu_gguf_value *v, int depth);

static mgpu_status read_array(cursor *c, mgpu_gguf_value *v, int depth)
{
    uint32_t elem;
    uint64_t count;
    mgpu_status s = read_u32(c, &elem, "array element type");
    if (s != MGPU_OK)
        return s;
    if (elem >= MGPU_GGUF_TYPE_COUNT) {
        c->pos -= 4;
        return fail(c, "unknown array element type %" PRIu32, elem);
    }
    if ((s = read_u64(c, &count, "array length")) != MGPU_OK)
        return s;
    if (elem == MGPU_GGUF_ARRAY && depth + 1 >= GGUF_MAX_DEPTH)
        return fail(c, "arrays nested deeper than %d", (int)GGUF_MAX_DEPTH);
    uint64_t min_bytes = elem == MGPU_GGUF_STRING  ? 8
                         : elem == MGPU_GGUF_ARRAY ? 12
                                                   : scalar_bytes[elem];
    if (count > (c->size - c->pos) / min_bytes)
        return fail(c, "array of %" PRIu64 " elements cannot fit in the %" PRIu64 " bytes left",
                    count, c->size - c->pos);
    v->type = MGPU_GGUF_ARRAY;
    v->array.elem_type = (mgpu_gguf_type)elem;
    v->array.count = count;
    if (elem != MGPU_GGUF_STRING && elem != MGPU_GGUF_ARRAY) {
        v->array.raw = c->base + c->pos;
        if (elem == MGPU_GGUF_BOOL)
            for (uint64_t i = 0; i < count; i++)
                if (c->base[c->pos + i] > 1) {
                    c->pos += i;
                    return fail(c, "bool array element %" PRIu64 " has value %u", i,
                                (unsigned)c->base[c->pos]);
                }
        c->pos += count * min_bytes;
        return MGPU_OK;
    }
    mgpu_gguf_value *items = mgpu_arena_alloc(&c->g->arena, (count ? count : 1) * sizeof *items);
    if (!items)
        return mgpu_error_set(c->err, MGPU_ERR_NO_MEMORY, "%s: out of memory", c->g->label);
    v->array.items = items;
    for (uint64_t i = 0; i < count; i++)
        if ((s = read_value(c, (mgpu_gguf_type)elem, &items[i], depth + 1)) != MGPU_OK)
            return s;
    return MGPU_OK;
}

static mgpu_status read_value(cursor *c, mgpu_gguf_type type, mgpu_gguf_value *v, int depth)
{
    if (type == MGPU_GGUF_STRING) {
        v->type = type;
        return read_string(c, &v->string.data, &v->string.length, "string");
    }
    if (type == MGPU_GGUF_ARRAY)
        return read_array(c, v, depth);
    if ((unsigned)type >= MGPU_GGUF_TYPE_COUNT) /* callers check; keeps the index provable */
        return fail(c, "unknown value type %u", (unsigned)type);
    mgpu_status s = need(c, scalar_bytes[type], mgpu_gguf_type_name_of(type));
    if (s != MGPU_OK)
        return s;
    if (type == MGPU_GGUF_BOOL && c->base[c->pos] > 1)
        return fail(c, "bool value %u is neither 0 nor 1", (unsigned)c->base[c->pos]);
    decode_scalar(type, c->base + c->pos, v);
    c->pos += scalar_bytes[type];
    return MGPU_OK;
}

bool mgpu_gguf_array_get(const mgpu_gguf_value *array, uint64_t i, mgpu_gguf_value *out)
{
    if (array->type != MGPU_GGUF_ARRAY || i >= array->array.count)
        return false;
    mgpu_gguf_type t = array->array.elem_type;
    if (t == MGPU_GGUF_STRING || t == MGPU_GGUF_ARRAY)
        *out = array->array.items[i];
    else
        decode_scalar(t, (const uint8_t *)array->array.raw + i * scalar_bytes[t], out);
    return true;
}

/* Makes room for element `index` in a malloc'd array, doubling. */
static bool grow(void **array, size_t *capacity, uint64_t index, size_t elem)
{
    if (index < *capacity)
        return true;
    size_t cap = *capacity ? *capacity * 2 : 16;
    if (cap > SIZE_MAX / elem)
        return false;
    void *p = realloc(*array, cap * elem);
    if (!p)
        return false;
    *array = p;
    *capacity = cap;
    return true;
}

static bool grow_values(mgpu_gguf *g, uint64_t index)
{
    size_t cap = g->values_capacity;
    if (!grow((void **)&g->values, &g->values_capacity, index, sizeof *g->values))
        return false;
    if (g->values_capacity != cap)
        memset(g->values + cap, 0, (g->values_capacity - cap) * sizeof *g->values);
    return true;
}

static int compare_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int compare_tensor_name(const void *a, const void *b)
{
    const mgpu_tensor_info *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int compare_tensor_offset(const void *a, const void *b)
{
    const mgpu_tensor_info *const *x = a, *const *y = b;
    if ((*x)->file_offset != (*y)->file_offset)
        return (*x)->file_offset < (*y)->file_offset ? -1 : 1;
    return strcmp((*x)->name, (*y)->name);
}

static mgpu_status read_tensor_info(cursor *c, mgpu_tensor_info *t, uint64_t *rel_offset)
{
    mgpu_gguf *g = c->g;
    uint32_t n_dims, type;
    uint64_t ne[GGUF_MAX_DIMS];
    mgpu_status s = read_string(c, &t->name, NULL, "tensor name");
    if (s != MGPU_OK)
        return s;
    snprintf(c->where, sizeof c->where, "tensor '%s'", t->name);
    if ((s = read_u32(c, &n_dims, "dimension count")) != MGPU_OK)
        return s;
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS) {
        c->pos -= 4;
        return fail(c, "%" PRIu32 " dimensions, GGUF allows 1 to %d", n_dims, (int)GGUF_MAX_DIMS);
    }
    for (uint32_t i = 0; i < n_dims; i++) {
        if ((s = read_u64(c, &ne[i], "dimension")) != MGPU_OK)
            return s;
        if (ne[i] > INT64_MAX) {
            c->pos -= 8;
            return fail(c, "dimension %" PRIu32 " is %" PRIu64 ", beyond int64", i, ne[i]);
        }
    }
    if ((s = read_u32(c, &type, "tensor type")) != MGPU_OK)
        return s;
    if (!mgpu_dtype_from_gguf(type, &t->dtype)) {
        const char *name = mgpu_gguf_type_name(type);
        c->pos -= 4;
        if (name)
            return mgpu_error_set(c->err, MGPU_ERR_UNSUPPORTED,
                                  "%s: at offset %" PRIu64 ", %s: GGUF type %" PRIu32
                                  " (%s) is not supported by mgpu",
                                  g->label, c->pos, c->where, type, name);
        return mgpu_error_set(c->err, MGPU_ERR_FORMAT,
                              "%s: at offset %" PRIu64 ", %s: unknown GGUF type id %" PRIu32,
                              g->label, c->pos, c->where, type);
    }
    if ((s = read_u64(c, rel_offset, "tensor data offset")) != MGPU_OK)
        return s;
    t->ndim = (int)n_dims;
    for (uint32_t i = 0; i < n_dims; i++)
        t->shape[i] = ne[n_dims - 1 - i];
    const mgpu_dtype_info *info = mgpu_dtype_get_info(t->dtype);
    if (ne[0] % info->block_elems != 0)
        return fail(c, "row length %" PRIu64 " is not a multiple of the %s block size %" PRIu32,
                    ne[0], info->name, info->block_elems);
    if (!mgpu_shape_elements(t->shape, t->ndim, &t->n_elems) ||
        !mgpu_dtype_bytes_for(t->dtype, t->n_elems, &t->nbytes))
        return fail(c, "size overflows 64 bits");
    c->where[0] = '\0';
    return MGPU_OK;
}

static mgpu_status parse(mgpu_gguf *g, const uint8_t *data, uint64_t size, mgpu_error *err)
{
    cursor c = {.base = data, .size = size, .g = g, .err = err};
    uint64_t n_tensors, n_kv;
    mgpu_status s;
    if (size < 4 || memcmp(data, "GGUF", 4) != 0)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: not a GGUF file (no 'GGUF' magic)",
                              g->label);
    c.pos = 4;
    if ((s = read_u32(&c, &g->version, "version")) != MGPU_OK)
        return s;
    if (g->version == 1)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "%s: GGUF version 1 is not supported (only 2 and 3)", g->label);
    if (g->version != 2 && g->version != 3) {
        if (g->version != 0 && (g->version & 0xFFFF) == 0)
            return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                                  "%s: big-endian GGUF files are not supported", g->label);
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "%s: GGUF version %" PRIu32 " is not supported (only 2 and 3)",
                              g->label, g->version);
    }
    if ((s = read_u64(&c, &n_tensors, "tensor count")) != MGPU_OK ||
        (s = read_u64(&c, &n_kv, "key-value count")) != MGPU_OK)
        return s;
    if (n_tensors > (size - c.pos) / MIN_TENSOR_INFO_BYTES)
        return fail(&c, "tensor count %" PRIu64 " cannot fit in a file of %" PRIu64 " bytes",
                    n_tensors, size);
    if (n_kv > (size - c.pos) / MIN_KV_BYTES)
        return fail(&c, "key-value count %" PRIu64 " cannot fit in a file of %" PRIu64 " bytes",
                    n_kv, size);
    /* Arrays grow as entries are actually read: a header claiming huge
     * counts costs nothing until the bytes to back them are there. */

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        uint32_t type;
        if (!grow((void **)&g->keys, &g->kv_capacity, i, sizeof *g->keys) ||
            !grow_values(g, i))
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", g->label);
        if ((s = read_string(&c, &g->keys[i], NULL, "key")) != MGPU_OK)
            return s;
        snprintf(c.where, sizeof c.where, "key '%s'", g->keys[i]);
        if ((s = read_u32(&c, &type, "value type")) != MGPU_OK)
            return s;
        if (type >= MGPU_GGUF_TYPE_COUNT) {
            c.pos -= 4;
            return fail(&c, "unknown value type %" PRIu32, type);
        }
        if ((s = read_value(&c, (mgpu_gguf_type)type, &g->values[i], 0)) != MGPU_OK)
            return s;
        if (strcmp(g->keys[i], "general.alignment") == 0) {
            const mgpu_gguf_value *v = &g->values[i];
            if (v->type != MGPU_GGUF_UINT32 || v->u64 == 0 || (v->u64 & (v->u64 - 1)) != 0)
                return fail(&c, "general.alignment must be a uint32 power of two");
            g->alignment = (uint32_t)v->u64;
        }
        c.where[0] = '\0';
        g->kv_count++;
    }
    const char **sorted_keys = mgpu_arena_alloc(&g->arena, (n_kv ? n_kv : 1) * sizeof *sorted_keys);
    if (!sorted_keys)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", g->label);
    if (n_kv)
        memcpy(sorted_keys, g->keys, n_kv * sizeof *sorted_keys);
    qsort(sorted_keys, n_kv, sizeof *sorted_keys, compare_key);
    for (uint64_t i = 1; i < n_kv; i++)
        if (strcmp(sorted_keys[i - 1], sorted_keys[i]) == 0)
            return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: key '%s' appears more than once",
                                  g->label, sorted_keys[i]);

    size_t rel_capacity = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        size_t cap = g->tensor_capacity;
        if (!grow((void **)&g->tensors, &g->tensor_capacity, i, sizeof *g->tensors) ||
            !grow((void **)&g->rel_offsets, &rel_capacity, i, sizeof *g->rel_offsets))
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", g->label);
        if (g->tensor_capacity != cap)
            memset(g->tensors + cap, 0, (g->tensor_capacity - cap) * sizeof *g->tensors);
        if ((s = read_tensor_info(&c, &g->tensors[i], &g->rel_offsets[i])) != MGPU_OK)
            return s;
        g->tensor_count++;
    }
    uint64_t *rel = g->rel_offsets;
    g->by_name = mgpu_arena_alloc(&g->arena, (n_tensors ? n_tensors : 1) * sizeof *g->by_name);
    if (!g->by_name)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", g->label);
    /* The data section starts at the next multiple of the alignment. */
    uint64_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data_offset = c.pos + pad;
    if (n_tensors > 0 && g->data_offset > size)
        return fail(&c, "the data section would start at %" PRIu64 ", past the end (%" PRIu64 ")",
                    g->data_offset, size);
    uint64_t data_bytes = size > g->data_offset ? size - g->data_offset : 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        mgpu_tensor_info *t = &g->tensors[i];
        if (rel[i] % g->alignment != 0)
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: tensor '%s': data offset %" PRIu64
                                  " is not a multiple of the alignment %" PRIu32,
                                  g->label, t->name, rel[i], g->alignment);
        if (rel[i] > data_bytes || t->nbytes > data_bytes - rel[i])
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: tensor '%s': %" PRIu64 " bytes at data offset %" PRIu64
                                  " run past the end of the file (data section holds %" PRIu64
                                  " bytes)",
                                  g->label, t->name, t->nbytes, rel[i], data_bytes);
        t->file_offset = g->data_offset + rel[i];
        t->data = data + t->file_offset;
        g->by_name[i] = t;
    }
    qsort(g->by_name, n_tensors, sizeof *g->by_name, compare_tensor_name);
    for (uint64_t i = 1; i < n_tensors; i++)
        if (strcmp(g->by_name[i - 1]->name, g->by_name[i]->name) == 0)
            return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: tensor '%s' appears more than once",
                                  g->label, g->by_name[i]->name);
    /* Overlap check on a copy ordered by offset. */
    const mgpu_tensor_info **by_offset =
        mgpu_arena_alloc(&g->arena, (n_tensors ? n_tensors : 1) * sizeof *by_offset);
    if (!by_offset)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", g->label);
    memcpy(by_offset, g->by_name, n_tensors * sizeof *by_offset);
    qsort(by_offset, n_tensors, sizeof *by_offset, compare_tensor_offset);
    for (uint64_t i = 1; i < n_tensors; i++) {
        const mgpu_tensor_info *a = by_offset[i - 1], *b = by_offset[i];
        if (a->file_offset + a->nbytes > b->file_offset)
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: tensor '%s' at offset %" PRIu64
                                  " overlaps tensor '%s' at offset %" PRIu64,
                                  g->label, b->name, b->file_offset, a->name, a->file_offset);
    }
    g->size = size;
    return MGPU_OK;
}

static mgpu_status open_common(const uint8_t *data, uint64_t size, const char *label,
                               const mgpu_mapped_file *owned, mgpu_gguf **out, mgpu_error *err)
{
    *out = NULL;
    mgpu_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    if (owned)
        g->file = *owned;
    g->label = mgpu_arena_strdup(&g->arena, label);
    mgpu_status s = g->label ? parse(g, data, size, err)
                             : mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    if (s != MGPU_OK) {
        mgpu_gguf_close(g);
        return s;
    }
    *out = g;
    return MGPU_OK;
}

mgpu_status mgpu_gguf_open(const char *path, mgpu_gguf **out, mgpu_error *err)
{
    mgpu_mapped_file f;
    *out = NULL;
    mgpu_status s = mgpu_file_map(path, &f, err);
    if (s != MGPU_OK)
        return s;
    return open_common(f.data, f.size, path, &f, out, err);
}

mgpu_status mgpu_gguf_open_memory(const void *data, uint64_t size, const char *label,
                                  mgpu_gguf **out, mgpu_error *err)
{
    return open_common(data, size, label, NULL, out, err);
}

void mgpu_gguf_close(mgpu_gguf *g)
{
    if (!g)
        return;
    mgpu_file_unmap(&g->file);
    mgpu_arena_free(&g->arena);
    free(g->keys);
    free(g->values);
    free(g->tensors);
    free(g->rel_offsets);
    free(g);
}

uint32_t mgpu_gguf_version(const mgpu_gguf *g) { return g->version; }
uint32_t mgpu_gguf_alignment(const mgpu_gguf *g) { return g->alignment; }
uint64_t mgpu_gguf_data_offset(const mgpu_gguf *g) { return g->data_offset; }
uint64_t mgpu_gguf_file_bytes(const mgpu_gguf *g) { return g->size; }
size_t mgpu_gguf_kv_count(const mgpu_gguf *g) { return g->kv_count; }
size_t mgpu_gguf_tensor_count(const mgpu_gguf *g) { return g->tensor_count; }

const char *mgpu_gguf_kv_key(const mgpu_gguf *g, size_t i)
{
    return i < g->kv_count ? g->keys[i] : NULL;
}

const mgpu_gguf_value *mgpu_gguf_kv_value(const mgpu_gguf *g, size_t i)
{
    return i < g->kv_count ? &g->values[i] : NULL;
}

const mgpu_gguf_value *mgpu_gguf_find_kv(const mgpu_gguf *g, const char *key)
{
    for (size_t i = 0; i < g->kv_count; i++)
        if (strcmp(g->keys[i], key) == 0)
            return &g->values[i];
    return NULL;
}

const mgpu_tensor_info *mgpu_gguf_tensor(const mgpu_gguf *g, size_t i)
{
    return i < g->tensor_count ? &g->tensors[i] : NULL;
}

const mgpu_tensor_info *mgpu_gguf_find(const mgpu_gguf *g, const char *name)
{
    size_t lo = 0, hi = g->tensor_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->by_name[mid]->name, name);
        if (c == 0)
            return g->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
