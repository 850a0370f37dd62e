/* Helpers shared by the tests: a scratch folder and file names in it. */
#ifndef MGPU_TEST_UTIL_H
#define MGPU_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A path in the scratch folder (MGPU_TEST_TMP, set by ctest, else /tmp),
 * made unique per process so parallel tests never collide. The result lives
 * in one of a few rotating static buffers. */
static inline const char *test_path(const char *name)
{
    static char buffers[8][1024];
    static int next;
    const char *dir = getenv("MGPU_TEST_TMP");
    if (!dir || !*dir)
        dir = "/tmp";
    char *b = buffers[next++ % 8];
    snprintf(b, sizeof buffers[0], "%s/%ld-%s", dir, (long)getpid(), name);
    return b;
}

static inline int test_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

#endif
