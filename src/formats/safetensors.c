/* safetensors reader and writer. The reader trusts nothing: the header
 * length is checked against the file, the JSON is parsed with duplicate keys
 * rejected, and every tensor's dtype, shape and byte range is checked so the
 * ranges tile the data section exactly, as the reference implementation
 * requires. */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/error.h"
#include "core/file.h"
#include "formats/shape.h"
#include "mgpu/safetensors.h"

/* The reference implementation refuses headers above 100 MB. */
enum { HEADER_MAX_BYTES = 100 * 1000 * 1000 };

struct mgpu_safetensors {
    mgpu_mapped_file file; /* owned when opened from a path */
    const char *label;
    uint64_t header_bytes;
    mgpu_tensor_info *tensors; /* in data-offset order */
    size_t tensor_count;
    const mgpu_tensor_info **by_name; /* sorted by name, for lookups */
    const char **meta_keys;
    const char **meta_values;
    size_t meta_count;
    mgpu_arena arena;
};

static int compare_offset(const void *a, const void *b)
{
    const mgpu_tensor_info *x = a, *y = b;
    if (x->file_offset != y->file_offset)
        return x->file_offset < y->file_offset ? -1 : 1;
    /* zero-length tensors may share an offset; order them by name */
    return strcmp(x->name, y->name);
}

static int compare_name(const void *a, const void *b)
{
    const mgpu_tensor_info *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static mgpu_status parse_metadata(mgpu_safetensors *st, json_t *meta, mgpu_error *err)
{
    if (!json_is_object(meta))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: header: __metadata__ is not an object",
                              st->label);
    size_t n = json_object_size(meta);
    st->meta_keys = mgpu_arena_alloc(&st->arena, (n ? n : 1) * sizeof(char *));
    st->meta_values = mgpu_arena_alloc(&st->arena, (n ? n : 1) * sizeof(char *));
    if (!st->meta_keys || !st->meta_values)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", st->label);
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value)
    {
        if (!json_is_string(value))
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: header: __metadata__ key '%s' is not a string", st->label,
                                  key);
        st->meta_keys[st->meta_count] = mgpu_arena_strdup(&st->arena, key);
        st->meta_values[st->meta_count] =
            mgpu_arena_strndup(&st->arena, json_string_value(value), json_string_length(value));
        if (!st->meta_keys[st->meta_count] || !st->meta_values[st->meta_count])
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", st->label);
        st->meta_count++;
    }
    return MGPU_OK;
}

/* A JSON integer in [0, 2^63). */
static int get_count(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

static mgpu_status parse_tensor(mgpu_safetensors *st, const char *name, json_t *obj,
                                uint64_t data_start, uint64_t data_bytes, mgpu_tensor_info *t,
                                mgpu_error *err)
{
    const char *label = st->label;
    if (!json_is_object(obj))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: tensor '%s': entry is not an object",
                              label, name);
    json_t *dtype = json_object_get(obj, "dtype");
    json_t *shape = json_object_get(obj, "shape");
    json_t *offsets = json_object_get(obj, "data_offsets");
    if (!json_is_string(dtype))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: tensor '%s': missing string 'dtype'",
                              label, name);
    if (!json_is_array(shape))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: tensor '%s': missing array 'shape'",
                              label, name);
    if (!json_is_array(offsets) || json_array_size(offsets) != 2)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tensor '%s': 'data_offsets' is not an array of two integers",
                              label, name);
    t->name = mgpu_arena_strdup(&st->arena, name);
    if (!t->name)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    t->dtype = mgpu_dtype_from_safetensors(json_string_value(dtype));
    if (t->dtype == MGPU_DTYPE_INVALID)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", label,
                              name, json_string_value(dtype));
    size_t ndim = json_array_size(shape);
    if (ndim > MGPU_MAX_DIMS)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "%s: tensor '%s': %zu dimensions, mgpu handles at most %d", label,
                              name, ndim, MGPU_MAX_DIMS);
    t->ndim = (int)ndim;
    for (size_t i = 0; i < ndim; i++)
        if (!get_count(json_array_get(shape, i), &t->shape[i]))
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: tensor '%s': shape entry %zu is not a non-negative integer",
                                  label, name, i);
    uint64_t begin, end;
    if (!get_count(json_array_get(offsets, 0), &begin) ||
        !get_count(json_array_get(offsets, 1), &end))
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tensor '%s': data_offsets are not non-negative integers", label,
                              name);
    if (begin > end || end > data_bytes)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                              ") fall outside the data section of %" PRIu64 " bytes",
                              label, name, begin, end, data_bytes);
    if (!mgpu_shape_elements(t->shape, t->ndim, &t->n_elems) ||
        !mgpu_dtype_bytes_for(t->dtype, t->n_elems, &t->nbytes))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: tensor '%s': shape overflows 64 bits",
                              label, name);
    if (t->nbytes != end - begin) {
        char shape_text[160];
        mgpu_shape_format(t->shape, t->ndim, shape_text, sizeof shape_text);
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tensor '%s': shape %s of %s needs %" PRIu64
                              " bytes but data_offsets hold %" PRIu64,
                              label, name, shape_text, mgpu_dtype_name(t->dtype), t->nbytes,
                              end - begin);
    }
    t->file_offset = data_start + begin;
    t->data = st->file.data ? st->file.data + t->file_offset : NULL;
    return MGPU_OK;
}

static mgpu_status parse(mgpu_safetensors *st, const uint8_t *data, uint64_t size,
                         mgpu_error *err)
{
    const char *label = st->label;
    if (size < 8)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: %" PRIu64 " bytes is too short for a safetensors file", label,
                              size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | data[i];
    if (n > size - 8)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: header length %" PRIu64 " exceeds the file size %" PRIu64
                              " (not a safetensors file, or truncated)",
                              label, n, size);
    if (n > HEADER_MAX_BYTES)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: header length %" PRIu64 " exceeds the %d-byte limit", label, n,
                              HEADER_MAX_BYTES);
    if (n < 2 || data[8] != '{')
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: header at offset 8 does not start with a JSON object", label);
    st->header_bytes = n;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: header: invalid JSON at byte %d of the header: %s", label,
                              jerr.position, jerr.text);
    mgpu_status s = MGPU_OK;
    if (!json_is_object(root)) {
        s = mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: header is not a JSON object", label);
        goto done;
    }
    uint64_t data_start = 8 + n, data_bytes = size - data_start;
    size_t count = json_object_size(root);
    st->tensors = mgpu_arena_alloc(&st->arena, (count ? count : 1) * sizeof *st->tensors);
    st->by_name = mgpu_arena_alloc(&st->arena, (count ? count : 1) * sizeof *st->by_name);
    if (!st->tensors || !st->by_name) {
        s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        if (strcmp(key, "__metadata__") == 0)
            s = parse_metadata(st, value, err);
        else
            s = parse_tensor(st, key, value, data_start, data_bytes,
                             &st->tensors[st->tensor_count++], err);
        if (s != MGPU_OK)
            goto done;
    }
    qsort(st->tensors, st->tensor_count, sizeof *st->tensors, compare_offset);
    /* The ranges must tile [0, data_bytes) exactly: no overlap, no gap. */
    uint64_t expected = data_start;
    for (size_t i = 0; i < st->tensor_count; i++) {
        const mgpu_tensor_info *t = &st->tensors[i];
        if (t->file_offset < expected) {
            s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                               "%s: tensor '%s': data at offset %" PRIu64
                               " overlaps the previous tensor '%s'",
                               label, t->name, t->file_offset - data_start, st->tensors[i - 1].name);
            goto done;
        }
        if (t->file_offset > expected) {
            s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                               "%s: tensor '%s': %" PRIu64 " unused bytes before its data at offset %" PRIu64,
                               label, t->name, t->file_offset - expected, t->file_offset - data_start);
            goto done;
        }
        expected = t->file_offset + t->nbytes;
    }
    if (expected != size) {
        s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                           "%s: data section holds %" PRIu64 " bytes but its tensors use %" PRIu64,
                           label, data_bytes, expected - data_start);
        goto done;
    }
    for (size_t i = 0; i < st->tensor_count; i++)
        st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, st->tensor_count, sizeof *st->by_name, compare_name);
done:
    json_decref(root);
    return s;
}

static mgpu_status open_common(const uint8_t *data, uint64_t size, const char *label,
                               mgpu_mapped_file *owned, mgpu_safetensors **out, mgpu_error *err)
{
    *out = NULL;
    mgpu_safetensors *st = calloc(1, sizeof *st);
    if (!st)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    if (owned)
        st->file = *owned;
    else
        st->file.data = data;
    st->label = mgpu_arena_strdup(&st->arena, label);
    mgpu_status s = st->label ? parse(st, data, size, err)
                              : mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    if (!owned)
        st->file.data = NULL; /* never unmap the caller's buffer */
    if (s != MGPU_OK) {
        mgpu_safetensors_close(st);
        return s;
    }
    if (!owned) {
        /* views point into the caller's buffer */
        for (size_t i = 0; i < st->tensor_count; i++)
            st->tensors[i].data = data + st->tensors[i].file_offset;
    }
    st->file.size = size;
    *out = st;
    return MGPU_OK;
}

mgpu_status mgpu_safetensors_open(const char *path, mgpu_safetensors **out, mgpu_error *err)
{
    mgpu_mapped_file f;
    *out = NULL;
    mgpu_status s = mgpu_file_map(path, &f, err);
    if (s != MGPU_OK)
        return s;
    s = open_common(f.data, f.size, path, &f, out, err);
    return s;
}

mgpu_status mgpu_safetensors_open_memory(const void *data, uint64_t size, const char *label,
                                         mgpu_safetensors **out, mgpu_error *err)
{
    return open_common(data, size, label, NULL, out, err);
}

void mgpu_safetensors_close(mgpu_safetensors *st)
{
    if (!st)
        return;
    if (st->file.data)
        mgpu_file_unmap(&st->file);
    mgpu_arena_free(&st->arena);
    free(st);
}

size_t mgpu_safetensors_tensor_count(const mgpu_safetensors *st)
{
    return st->tensor_count;
}

const mgpu_tensor_info *mgpu_safetensors_tensor(const mgpu_safetensors *st, size_t index)
{
    return index < st->tensor_count ? &st->tensors[index] : NULL;
}

const mgpu_tensor_info *mgpu_safetensors_find(const mgpu_safetensors *st, const char *name)
{
    size_t lo = 0, hi = st->tensor_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->by_name[mid]->name, name);
        if (c == 0)
            return st->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t mgpu_safetensors_metadata_count(const mgpu_safetensors *st)
{
    return st->meta_count;
}

void mgpu_safetensors_metadata(const mgpu_safetensors *st, size_t index, const char **key,
                               const char **value)
{
    *key = index < st->meta_count ? st->meta_keys[index] : NULL;
    *value = index < st->meta_count ? st->meta_values[index] : NULL;
}

uint64_t mgpu_safetensors_header_bytes(const mgpu_safetensors *st)
{
    return st->header_bytes;
}

uint64_t mgpu_safetensors_file_bytes(const mgpu_safetensors *st)
{
    return st->file.size;
}
