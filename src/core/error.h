/* Internal error helper: fills an mgpu_error (which may be NULL) and returns
 * the status so callers can write `return mgpu_error_set(...)`. */
#ifndef MGPU_CORE_ERROR_H
#define MGPU_CORE_ERROR_H

#include "mgpu/status.h"

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
mgpu_status mgpu_error_set(mgpu_error *err, mgpu_status status, const char *fmt, ...);

#endif
