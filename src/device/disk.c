/* Measuring the disk tier: sequential read bandwidth of a model file,
 * bypassing the page cache (O_DIRECT) so the number is the device's, not
 * RAM's. Falls back to buffered reads, and says so, where the file system
 * refuses O_DIRECT (tmpfs, some network file systems). */
#define _GNU_SOURCE /* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "mgpu/device.h"

enum { CHUNK_BYTES = 8 << 20, ALIGN_BYTES = 4096 };

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

mgpu_status mgpu_disk_measure_read(const char *path, uint64_t max_bytes, double *bytes_per_s,
                                   bool *direct, mgpu_error *err)
{
    *bytes_per_s = 0.0;
    *direct = true;
    int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0 && errno == EINVAL) {
        *direct = false;
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0)
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: not a regular file", path);
    }
    void *buf = NULL;
    if (posix_memalign(&buf, ALIGN_BYTES, CHUNK_BYTES) != 0) {
        close(fd);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    uint64_t limit = (uint64_t)st.st_size < max_bytes ? (uint64_t)st.st_size : max_bytes;
    uint64_t done = 0;
    mgpu_status s = MGPU_OK;
    double start = now_seconds();
    while (done < limit) {
        ssize_t got = pread(fd, buf, CHUNK_BYTES, (off_t)done);
        if (got < 0 && errno == EINVAL && *direct) {
            /* O_DIRECT accepted at open but not for this read: buffered */
            close(fd);
            fd = open(path, O_RDONLY | O_CLOEXEC);
            *direct = false;
            if (fd < 0)
                break;
            continue;
        }
        if (got < 0) {
            s = mgpu_error_set(err, MGPU_ERR_IO, "%s: read failed at offset %llu: %s", path,
                               (unsigned long long)done, strerror(errno));
            break;
        }
        if (got == 0)
            break;
        done += (uint64_t)got;
    }
    double seconds = now_seconds() - start;
    free(buf);
    if (fd >= 0)
        close(fd);
    if (s == MGPU_OK && (done == 0 || seconds <= 0))
        s = mgpu_error_set(err, MGPU_ERR_IO, "%s: nothing could be read to measure", path);
    if (s == MGPU_OK)
        *bytes_per_s = (double)done / seconds;
    return s;
}
