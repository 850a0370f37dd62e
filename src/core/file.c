/* See file.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/file.h"

mgpu_status mgpu_file_map(const char *path, mgpu_mapped_file *out, mgpu_error *err)
{
    out->data = NULL;
    out->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mgpu_error_set(err, errno == ENOENT ? MGPU_ERR_NOT_FOUND : MGPU_ERR_IO,
                              "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
        out->data = p;
    }
    out->size = (uint64_t)st.st_size;
    close(fd);
    return MGPU_OK;
}

void mgpu_file_unmap(mgpu_mapped_file *file)
{
    if (file->data)
        munmap((void *)file->data, (size_t)file->size);
    file->data = NULL;
    file->size = 0;
}

mgpu_status mgpu_file_read_all(const char *path, uint64_t max_bytes, char **out, uint64_t *size,
                               mgpu_error *err)
{
    mgpu_mapped_file f;
    mgpu_status s = mgpu_file_map(path, &f, err);
    if (s != MGPU_OK)
        return s;
    if (f.size > max_bytes) {
        mgpu_file_unmap(&f);
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: file is %llu bytes, more than the %llu allowed",
                              path, (unsigned long long)f.size, (unsigned long long)max_bytes);
    }
    char *buf = malloc((size_t)f.size + 1);
    if (!buf) {
        mgpu_file_unmap(&f);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
    }
    if (f.size)
        memcpy(buf, f.data, (size_t)f.size);
    buf[f.size] = '\0';
    *out = buf;
    *size = f.size;
    mgpu_file_unmap(&f);
    return MGPU_OK;
}

mgpu_status mgpu_output_open(const char *path, mgpu_output_file *out, mgpu_error *err)
{
    memset(out, 0, sizeof *out);
    size_t n = strlen(path);
    out->final_path = malloc(n + 1);
    out->temp_path = malloc(n + sizeof ".tmp.XXXXXX");
    if (!out->final_path || !out->temp_path) {
        mgpu_output_abort(out);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
    }
    memcpy(out->final_path, path, n + 1);
    memcpy(out->temp_path, path, n);
    memcpy(out->temp_path + n, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    int fd = mkstemp(out->temp_path);
    if (fd < 0) {
        int e = errno;
        free(out->temp_path);
        out->temp_path = NULL;
        mgpu_output_abort(out);
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot create: %s", path, strerror(e));
    }
    /* mkstemp makes the file 0600; outputs are ordinary files. */
    fchmod(fd, 0644);
    out->stream = fdopen(fd, "wb");
    if (!out->stream) {
        int e = errno;
        close(fd);
        mgpu_output_abort(out);
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot open stream: %s", path, strerror(e));
    }
    return MGPU_OK;
}

mgpu_status mgpu_output_commit(mgpu_output_file *file, mgpu_error *err)
{
    mgpu_status s = MGPU_OK;
    int failed = ferror(file->stream);
    if (fflush(file->stream) != 0)
        failed = 1;
    if (!failed && fsync(fileno(file->stream)) != 0 && errno != EINVAL)
        failed = 1;
    int e = errno;
    if (fclose(file->stream) != 0)
        failed = 1;
    file->stream = NULL;
    if (failed) {
        s = mgpu_error_set(err, MGPU_ERR_IO, "%s: write failed: %s", file->final_path, strerror(e));
    } else if (rename(file->temp_path, file->final_path) != 0) {
        s = mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot rename into place: %s", file->final_path,
                           strerror(errno));
    } else {
        free(file->temp_path);
        file->temp_path = NULL;
    }
    mgpu_output_abort(file);
    return s;
}

void mgpu_output_abort(mgpu_output_file *file)
{
    if (file->stream)
        fclose(file->stream);
    if (file->temp_path)
        unlink(file->temp_path);
    free(file->temp_path);
    free(file->final_path);
    memset(file, 0, sizeof *file);
}
