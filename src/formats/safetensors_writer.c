/* safetensors writer: tensors are declared first so the header can be
 * written before the data streams out, which lets tools write files far
 * larger than memory. */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/error.h"
#include "core/file.h"
#include "formats/shape.h"
#include "mgpu/safetensors.h"

struct mgpu_safetensors_writer {
    mgpu_output_file out;
    json_t *header;
    json_t *metadata;
    uint64_t declared_bytes; /* sum of declared tensor sizes */
    uint64_t written_bytes;  /* data bytes written or skipped */
    int header_written;
};

mgpu_status mgpu_safetensors_writer_create(const char *path, mgpu_safetensors_writer **out,
                                           mgpu_error *err)
{
    *out = NULL;
    mgpu_safetensors_writer *w = calloc(1, sizeof *w);
    if (!w)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
    w->header = json_object();
    if (!w->header) {
        free(w);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
    }
    mgpu_status s = mgpu_output_open(path, &w->out, err);
    if (s != MGPU_OK) {
        json_decref(w->header);
        free(w);
        return s;
    }
    *out = w;
    return MGPU_OK;
}

mgpu_status mgpu_safetensors_writer_add_metadata(mgpu_safetensors_writer *w, const char *key,
                                                 const char *value, mgpu_error *err)
{
    if (w->header_written)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: metadata added after data",
                              w->out.final_path);
    if (!w->metadata) {
        w->metadata = json_object();
        if (!w->metadata || json_object_set_new(w->header, "__metadata__", w->metadata) != 0)
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    if (json_object_set_new(w->metadata, key, json_string(value)) != 0)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: metadata '%s' is not valid UTF-8",
                              w->out.final_path, key);
    return MGPU_OK;
}

mgpu_status mgpu_safetensors_writer_add_tensor(mgpu_safetensors_writer *w, const char *name,
                                               mgpu_dtype dtype, int ndim, const uint64_t *shape,
                                               mgpu_error *err)
{
    const char *path = w->out.final_path;
    const char *dtype_name = mgpu_dtype_safetensors_name(dtype);
    uint64_t n_elems, nbytes;
    if (w->header_written)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: tensor '%s' declared after data",
                              path, name);
    if (!dtype_name)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "%s: tensor '%s': safetensors cannot store %s", path, name,
                              mgpu_dtype_name(dtype));
    if (ndim < 0 || ndim > MGPU_MAX_DIMS || !mgpu_shape_elements(shape, ndim, &n_elems) ||
        !mgpu_dtype_bytes_for(dtype, n_elems, &nbytes))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: tensor '%s': invalid shape", path,
                              name);
    if (strcmp(name, "__metadata__") == 0 || json_object_get(w->header, name))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "%s: tensor name '%s' used twice", path,
                              name);
    json_t *dims = json_array();
    json_t *entry = json_object();
    json_t *offsets = json_array();
    int bad = !dims || !entry || !offsets;
    for (int i = 0; !bad && i < ndim; i++)
        bad = json_array_append_new(dims, json_integer((json_int_t)shape[i])) != 0;
    bad = bad || json_array_append_new(offsets, json_integer((json_int_t)w->declared_bytes)) != 0 ||
          json_array_append_new(offsets,
                                json_integer((json_int_t)(w->declared_bytes + nbytes))) != 0;
    bad = bad || json_object_set_new(entry, "dtype", json_string(dtype_name)) != 0 ||
          json_object_set(entry, "shape", dims) != 0 ||
          json_object_set(entry, "data_offsets", offsets) != 0;
    json_decref(dims);
    json_decref(offsets);
    if (bad)
        json_decref(entry);
    if (bad || json_object_set_new(w->header, name, entry) != 0) {
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "%s: tensor '%s' cannot be added (name not UTF-8, or out of memory)",
                              path, name);
    }
    w->declared_bytes += nbytes;
    return MGPU_OK;
}

static mgpu_status write_header(mgpu_safetensors_writer *w, mgpu_error *err)
{
    char *text = json_dumps(w->header, JSON_COMPACT);
    if (!text)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    /* Pad with spaces so the data starts 8-byte aligned, as the reference
     * writer does. */
    uint64_t n = strlen(text);
    uint64_t padded = (n + 7) & ~(uint64_t)7;
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(padded >> (8 * i));
    int ok = fwrite(len, 1, 8, w->out.stream) == 8 &&
             fwrite(text, 1, (size_t)n, w->out.stream) == n;
    for (uint64_t i = n; ok && i < padded; i++)
        ok = fputc(' ', w->out.stream) != EOF;
    free(text);
    w->header_written = 1;
    if (!ok)
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: write failed", w->out.final_path);
    return MGPU_OK;
}

mgpu_status mgpu_safetensors_writer_write(mgpu_safetensors_writer *w, const void *data,
                                          uint64_t bytes, mgpu_error *err)
{
    mgpu_status s;
    if (!w->header_written && (s = write_header(w, err)) != MGPU_OK)
        return s;
    if (bytes > w->declared_bytes - w->written_bytes)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "%s: %" PRIu64 " data bytes written beyond the %" PRIu64 " declared",
                              w->out.final_path, w->written_bytes + bytes, w->declared_bytes);
    if (data ? fwrite(data, 1, (size_t)bytes, w->out.stream) != bytes
             : fseeko(w->out.stream, (off_t)bytes, SEEK_CUR) != 0)
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: write failed", w->out.final_path);
    w->written_bytes += bytes;
    return MGPU_OK;
}

mgpu_status mgpu_safetensors_writer_finish(mgpu_safetensors_writer *w, mgpu_error *err)
{
    mgpu_status s = MGPU_OK;
    if (!w->header_written)
        s = write_header(w, err);
    if (s == MGPU_OK && w->written_bytes != w->declared_bytes)
        s = mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                           "%s: only %" PRIu64 " of %" PRIu64 " data bytes were written",
                           w->out.final_path, w->written_bytes, w->declared_bytes);
    /* A trailing hole needs the file extended to its full length. */
    if (s == MGPU_OK && (fflush(w->out.stream) != 0 ||
                         ftruncate(fileno(w->out.stream), ftello(w->out.stream)) != 0))
        s = mgpu_error_set(err, MGPU_ERR_IO, "%s: write failed", w->out.final_path);
    if (s == MGPU_OK)
        s = mgpu_output_commit(&w->out, err);
    mgpu_output_abort(&w->out);
    json_decref(w->header);
    free(w);
    return s;
}

void mgpu_safetensors_writer_abort(mgpu_safetensors_writer *w)
{
    if (!w)
        return;
    mgpu_output_abort(&w->out);
    json_decref(w->header);
    free(w);
}
