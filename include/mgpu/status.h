/* Status codes and the error record every fallible mgpu call fills.
 * Library code never prints: it returns a status and writes one line into
 * an mgpu_error that names the file, tensor or key at fault. */
#ifndef MGPU_STATUS_H
#define MGPU_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mgpu_status {
    MGPU_OK = 0,
    MGPU_ERR_IO,          /* open, read, write, mmap or rename failed */
    MGPU_ERR_FORMAT,      /* a file is malformed or inconsistent */
    MGPU_ERR_UNSUPPORTED, /* valid but not something mgpu handles */
    MGPU_ERR_ARGUMENT,    /* the caller passed something invalid */
    MGPU_ERR_NOT_FOUND,   /* a named tensor, key or file does not exist */
    MGPU_ERR_NO_MEMORY,
} mgpu_status;

enum { MGPU_ERROR_MESSAGE_BYTES = 512 };

typedef struct mgpu_error {
    mgpu_status status;
    char message[MGPU_ERROR_MESSAGE_BYTES];
} mgpu_error;

/* A short fixed name for a status ("format error"). */
const char *mgpu_status_name(mgpu_status status);

#ifdef __cplusplus
}
#endif
#endif
