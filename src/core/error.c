/* Status names and the one helper that formats an error message. */
#include <stdarg.h>
#include <stdio.h>

#include "core/error.h"

const char *mgpu_status_name(mgpu_status status)
{
    switch (status) {
    case MGPU_OK: return "ok";
    case MGPU_ERR_IO: return "i/o error";
    case MGPU_ERR_FORMAT: return "format error";
    case MGPU_ERR_UNSUPPORTED: return "unsupported";
    case MGPU_ERR_ARGUMENT: return "invalid argument";
    case MGPU_ERR_NOT_FOUND: return "not found";
    case MGPU_ERR_NO_MEMORY: return "out of memory";
    }
    return "unknown status";
}

mgpu_status mgpu_error_set(mgpu_error *err, mgpu_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        /* Names and keys come from untrusted files: keep the message one
         * printable line, never a terminal escape sequence. */
        for (char *c = err->message; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7F)
                *c = '?';
        err->status = status;
    }
    return status;
}
