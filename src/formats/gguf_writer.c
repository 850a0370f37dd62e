/* GGUF (version 3) writer. Keys are serialised as they are added; tensor
 * infos are written with the header on the first data write, and alignment
 * padding follows every tensor, as ggml writes it. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/error.h"
#include "core/file.h"
#include "formats/shape.h"
#include "mgpu/gguf.h"

typedef struct pending_tensor {
    char *name;
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[4];
    uint64_t nbytes;
    uint64_t offset; /* relative to the data section */
} pending_tensor;

typedef struct byte_buffer {
    uint8_t *data;
    size_t size, capacity;
    int failed;
} byte_buffer;

struct mgpu_gguf_writer {
    mgpu_output_file out;
    byte_buffer kv;
    uint64_t kv_count;
    pending_tensor *tensors;
    size_t tensor_count, tensor_capacity;
    uint32_t alignment;
    int header_written;
    size_t current;          /* tensor receiving data */
    uint64_t current_filled; /* bytes of it written so far */
};

static void put_bytes(byte_buffer *b, const void *p, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (n > b->capacity - b->size) {
        size_t cap = b->capacity ? b->capacity : 256;
        while (cap - b->size < n) {
            if (cap > SIZE_MAX / 2) {
                b->failed = 1;
                return;
            }
            cap *= 2;
        }
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            b->failed = 1;
            return;
        }
        b->data = d;
        b->capacity = cap;
    }
    memcpy(b->data + b->size, p, n);
    b->size += n;
}

static void put_le(byte_buffer *b, uint64_t v, int bytes)
{
    uint8_t tmp[8];
    for (int i = 0; i < bytes; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    put_bytes(b, tmp, (size_t)bytes);
}

static void put_string(byte_buffer *b, const char *s, uint64_t n)
{
    put_le(b, n, 8);
    put_bytes(b, s, (size_t)n);
}

static const int scalar_bytes[MGPU_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static void put_scalar(byte_buffer *b, const mgpu_gguf_value *v)
{
    switch (v->type) {
    case MGPU_GGUF_FLOAT32: {
        float f = (float)v->f64;
        uint32_t u;
        memcpy(&u, &f, 4);
        put_le(b, u, 4);
        break;
    }
    case MGPU_GGUF_FLOAT64: {
        uint64_t u;
        memcpy(&u, &v->f64, 8);
        put_le(b, u, 8);
        break;
    }
    case MGPU_GGUF_BOOL: put_le(b, v->b ? 1 : 0, 1); break;
    case MGPU_GGUF_INT8:
    case MGPU_GGUF_INT16:
    case MGPU_GGUF_INT32:
    case MGPU_GGUF_INT64: put_le(b, (uint64_t)v->i64, scalar_bytes[v->type]); break;
    default: put_le(b, v->u64, scalar_bytes[v->type]); break;
    }
}

static int put_value(byte_buffer *b, const mgpu_gguf_value *v, int depth)
{
    if ((unsigned)v->type >= MGPU_GGUF_TYPE_COUNT || depth > 16)
        return 0;
    if (v->type == MGPU_GGUF_STRING) {
        put_string(b, v->string.data, v->string.length);
    } else if (v->type == MGPU_GGUF_ARRAY) {
        mgpu_gguf_type et = v->array.elem_type;
        if ((unsigned)et >= MGPU_GGUF_TYPE_COUNT)
            return 0;
        put_le(b, et, 4);
        put_le(b, v->array.count, 8);
        if (et == MGPU_GGUF_STRING || et == MGPU_GGUF_ARRAY) {
            for (uint64_t i = 0; i < v->array.count; i++)
                if (v->array.items[i].type != et || !put_value(b, &v->array.items[i], depth + 1))
                    return 0;
        } else {
            put_bytes(b, v->array.raw, (size_t)(v->array.count * (uint64_t)scalar_bytes[et]));
        }
    } else {
        put_scalar(b, v);
    }
    return 1;
}

mgpu_status mgpu_gguf_writer_create(const char *path, mgpu_gguf_writer **out, mgpu_error *err)
{
    *out = NULL;
    mgpu_gguf_writer *w = calloc(1, sizeof *w);
    if (!w)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
    w->alignment = 32;
    mgpu_status s = mgpu_output_open(path, &w->out, err);
    if (s != MGPU_OK) {
        free(w);
        return s;
    }
    *out = w;
    return MGPU_OK;
}

mgpu_status mgpu_gguf_writer_add_kv(mgpu_gguf_writer *w, const char *key,
                                    const mgpu_gguf_value *value, mgpu_error *err)
{
    if (w->header_written)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: key '%s' added after data",
                              w->out.final_path, key);
    if (strcmp(key, "general.alignment") == 0) {
        if (value->type != MGPU_GGUF_UINT32 || value->u64 == 0 || value->u64 > UINT32_MAX ||
            (value->u64 & (value->u64 - 1)) != 0)
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                                  "%s: general.alignment must be a uint32 power of two",
                                  w->out.final_path);
        w->alignment = (uint32_t)value->u64;
    }
    put_string(&w->kv, key, strlen(key));
    put_le(&w->kv, value->type, 4);
    if (!put_value(&w->kv, value, 0))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: key '%s': malformed value",
                              w->out.final_path, key);
    if (w->kv.failed)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    w->kv_count++;
    return MGPU_OK;
}

mgpu_status mgpu_gguf_writer_add_string(mgpu_gguf_writer *w, const char *key, const char *value,
                                        mgpu_error *err)
{
    mgpu_gguf_value v = {.type = MGPU_GGUF_STRING};
    v.string.data = value;
    v.string.length = strlen(value);
    return mgpu_gguf_writer_add_kv(w, key, &v, err);
}

mgpu_status mgpu_gguf_writer_add_u32(mgpu_gguf_writer *w, const char *key, uint32_t value,
                                     mgpu_error *err)
{
    mgpu_gguf_value v = {.type = MGPU_GGUF_UINT32, .u64 = value};
    return mgpu_gguf_writer_add_kv(w, key, &v, err);
}

mgpu_status mgpu_gguf_writer_add_tensor(mgpu_gguf_writer *w, const char *name, mgpu_dtype dtype,
                                        int ndim, const uint64_t *shape, mgpu_error *err)
{
    const char *path = w->out.final_path;
    uint32_t type;
    uint64_t n_elems, nbytes;
    if (w->header_written)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: tensor '%s' declared after data",
                              path, name);
    if (!mgpu_dtype_to_gguf(dtype, &type))
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED, "%s: tensor '%s': GGUF cannot store %s",
                              path, name, mgpu_dtype_name(dtype));
    if (ndim < 1 || ndim > 4 || !mgpu_shape_elements(shape, ndim, &n_elems) ||
        shape[ndim - 1] % mgpu_dtype_get_info(dtype)->block_elems != 0 ||
        !mgpu_dtype_bytes_for(dtype, n_elems, &nbytes))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "%s: tensor '%s': shape cannot be stored as %s in GGUF (1-4 dims, "
                              "rows a multiple of the block size)",
                              path, name, mgpu_dtype_name(dtype));
    for (size_t i = 0; i < w->tensor_count; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: tensor name '%s' used twice", path,
                                  name);
    if (w->tensor_count == w->tensor_capacity) {
        size_t cap = w->tensor_capacity ? 2 * w->tensor_capacity : 64;
        pending_tensor *t = realloc(w->tensors, cap * sizeof *t);
        if (!t)
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
        w->tensors = t;
        w->tensor_capacity = cap;
    }
    pending_tensor *t = &w->tensors[w->tensor_count];
    memset(t, 0, sizeof *t);
    t->name = malloc(strlen(name) + 1);
    if (!t->name)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    strcpy(t->name, name);
    t->type = type;
    t->n_dims = (uint32_t)ndim;
    for (int i = 0; i < ndim; i++)
        t->ne[i] = shape[ndim - 1 - i];
    t->nbytes = nbytes;
    w->tensor_count++;
    return MGPU_OK;
}

static uint64_t padding(uint64_t pos, uint32_t alignment)
{
    return (alignment - pos % alignment) % alignment;
}

static mgpu_status write_header(mgpu_gguf_writer *w, mgpu_error *err)
{
    byte_buffer h = {0};
    put_bytes(&h, "GGUF", 4);
    put_le(&h, 3, 4);
    put_le(&h, w->tensor_count, 8);
    put_le(&h, w->kv_count, 8);
    put_bytes(&h, w->kv.data, w->kv.size);
    uint64_t offset = 0;
    for (size_t i = 0; i < w->tensor_count; i++) {
        pending_tensor *t = &w->tensors[i];
        t->offset = offset;
        put_string(&h, t->name, strlen(t->name));
        put_le(&h, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++)
            put_le(&h, t->ne[d], 8);
        put_le(&h, t->type, 4);
        put_le(&h, t->offset, 8);
        offset += t->nbytes + padding(t->nbytes, w->alignment);
    }
    static const uint8_t zeros[256];
    uint64_t pad = padding(h.size, w->alignment);
    while (pad > 0) {
        size_t n = pad > sizeof zeros ? sizeof zeros : (size_t)pad;
        put_bytes(&h, zeros, n);
        pad -= n;
    }
    w->header_written = 1;
    int ok = !h.failed && fwrite(h.data, 1, h.size, w->out.stream) == h.size;
    free(h.data);
    if (!ok)
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: write failed", w->out.final_path);
    return MGPU_OK;
}

static int emit(mgpu_gguf_writer *w, const void *data, uint64_t n)
{
    if (data)
        return fwrite(data, 1, (size_t)n, w->out.stream) == n;
    return fseeko(w->out.stream, (off_t)n, SEEK_CUR) == 0;
}

mgpu_status mgpu_gguf_writer_write(mgpu_gguf_writer *w, const void *data, uint64_t bytes,
                                   mgpu_error *err)
{
    mgpu_status s;
    if (!w->header_written && (s = write_header(w, err)) != MGPU_OK)
        return s;
    const uint8_t *p = data;
    while (bytes > 0) {
        if (w->current >= w->tensor_count)
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: more data written than declared",
                                  w->out.final_path);
        pending_tensor *t = &w->tensors[w->current];
        uint64_t n = t->nbytes - w->current_filled;
        if (n > bytes)
            n = bytes;
        if (!emit(w, p, n))
            return mgpu_error_set(err, MGPU_ERR_IO, "%s: write failed", w->out.final_path);
        if (p)
            p += n;
        bytes -= n;
        w->current_filled += n;
        if (w->current_filled == t->nbytes) {
            static const uint8_t zeros[256];
            uint64_t pad = padding(t->nbytes, w->alignment);
            if (pad && fwrite(zeros, 1, (size_t)pad, w->out.stream) != pad)
                return mgpu_error_set(err, MGPU_ERR_IO, "%s: write failed", w->out.final_path);
            w->current++;
            w->current_filled = 0;
        }
    }
    return MGPU_OK;
}

static void free_writer(mgpu_gguf_writer *w)
{
    for (size_t i = 0; i < w->tensor_count; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    free(w->kv.data);
    free(w);
}

mgpu_status mgpu_gguf_writer_finish(mgpu_gguf_writer *w, mgpu_error *err)
{
    mgpu_status s = MGPU_OK;
    if (!w->header_written)
        s = write_header(w, err);
    /* Zero-byte tensors complete without any write call. */
    while (s == MGPU_OK && w->current < w->tensor_count && w->tensors[w->current].nbytes == 0 &&
           w->current_filled == 0)
        w->current++;
    if (s == MGPU_OK && w->current != w->tensor_count)
        s = mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                           "%s: data for tensor '%s' and after was not written",
                           w->out.final_path, w->tensors[w->current].name);
    if (s == MGPU_OK && (fflush(w->out.stream) != 0 ||
                         ftruncate(fileno(w->out.stream), ftello(w->out.stream)) != 0))
        s = mgpu_error_set(err, MGPU_ERR_IO, "%s: write failed", w->out.final_path);
    if (s == MGPU_OK)
        s = mgpu_output_commit(&w->out, err);
    mgpu_output_abort(&w->out);
    free_writer(w);
    return s;
}

void mgpu_gguf_writer_abort(mgpu_gguf_writer *w)
{
    if (!w)
        return;
    mgpu_output_abort(&w->out);
    free_writer(w);
}
