/* Parsing the sizes and bandwidths users write ("2.5gb", "500mb", "64gib",
 * "6.8gbps"). Sizes are binary, as in ComfyUI-MultiGPU: 1g = 1 GiB. */
#ifndef MGPU_CORE_UNITS_H
#define MGPU_CORE_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A non-negative decimal number ("12", "0.5", ".5", "3."); returns the
 * characters consumed, 0 if there is no number. */
size_t mgpu_parse_number(const char *s, size_t length, double *out);

typedef enum mgpu_unit_result {
    MGPU_UNIT_OK = 0,
    MGPU_UNIT_NO_NUMBER,
    MGPU_UNIT_UNKNOWN,  /* the unit text is not one we know */
    MGPU_UNIT_MISSING,  /* a number without a unit */
    MGPU_UNIT_OVERFLOW, /* more than 2^63 bytes */
} mgpu_unit_result;

/* s[0..length) is NUMBER UNIT with unit b, k, kb, kib, m, mb, mib, g, gb,
 * gib, t, tb, tib (any case). *unit_at is the offset of the unit text. */
mgpu_unit_result mgpu_parse_bytes(const char *s, size_t length, uint64_t *out, size_t *unit_at);

/* NUMBER gbps|mbps|gb/s|mb/s (decimal: 10^9 / 10^6 bytes per second). */
mgpu_unit_result mgpu_parse_bandwidth(const char *s, size_t length, double *bytes_per_s,
                                      size_t *unit_at);

#endif
