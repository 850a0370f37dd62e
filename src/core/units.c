/* See units.h. Written by hand rather than with strtod so that locale,
 * hexadecimal floats, "inf" and "nan" can never sneak into a quota. */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "core/units.h"

size_t mgpu_parse_number(const char *s, size_t n, double *out)
{
    size_t i = 0;
    double v = 0.0, scale = 1.0;
    int digits = 0;
    while (i < n && isdigit((unsigned char)s[i])) {
        v = v * 10.0 + (s[i] - '0');
        i++;
        digits++;
    }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && isdigit((unsigned char)s[i])) {
            scale /= 10.0;
            v += (s[i] - '0') * scale;
            i++;
            digits++;
        }
    }
    if (digits == 0)
        return 0;
    *out = v;
    return i;
}

static bool unit_is(const char *s, size_t n, const char *unit)
{
    size_t m = strlen(unit);
    if (n != m)
        return false;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)s[i]) != unit[i])
            return false;
    return true;
}

/* NUMBER UNIT: the number, and the unit text after it. */
static mgpu_unit_result split_number(const char *s, size_t n, double *v, const char **unit,
                                     size_t *unit_length, size_t *unit_at)
{
    size_t used = mgpu_parse_number(s, n, v);
    *unit_at = used;
    if (used == 0)
        return MGPU_UNIT_NO_NUMBER;
    *unit = s + used;
    *unit_length = n - used;
    return *unit_length == 0 ? MGPU_UNIT_MISSING : MGPU_UNIT_OK;
}

mgpu_unit_result mgpu_parse_bytes(const char *s, size_t n, uint64_t *out, size_t *unit_at)
{
    double v;
    const char *u;
    size_t un;
    mgpu_unit_result r = split_number(s, n, &v, &u, &un, unit_at);
    if (r != MGPU_UNIT_OK)
        return r;
    static const struct {
        const char *name;
        double scale;
    } units[] = {
        {"b", 1.0},
        {"k", 1024.0},  {"kb", 1024.0},  {"kib", 1024.0},
        {"m", 1048576.0}, {"mb", 1048576.0}, {"mib", 1048576.0},
        {"g", 1073741824.0}, {"gb", 1073741824.0}, {"gib", 1073741824.0},
        {"t", 1099511627776.0}, {"tb", 1099511627776.0}, {"tib", 1099511627776.0},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (unit_is(u, un, units[i].name)) {
            double bytes = v * units[i].scale;
            if (!(bytes < 9.2e18))
                return MGPU_UNIT_OVERFLOW;
            *out = (uint64_t)llround(bytes);
            return MGPU_UNIT_OK;
        }
    return MGPU_UNIT_UNKNOWN;
}

mgpu_unit_result mgpu_parse_bandwidth(const char *s, size_t n, double *bytes_per_s, size_t *unit_at)
{
    double v;
    const char *u;
    size_t un;
    mgpu_unit_result r = split_number(s, n, &v, &u, &un, unit_at);
    if (r != MGPU_UNIT_OK)
        return r;
    if (unit_is(u, un, "gbps") || unit_is(u, un, "gb/s")) {
        *bytes_per_s = v * 1e9;
        return MGPU_UNIT_OK;
    }
    if (unit_is(u, un, "mbps") || unit_is(u, un, "mb/s")) {
        *bytes_per_s = v * 1e6;
        return MGPU_UNIT_OK;
    }
    return MGPU_UNIT_UNKNOWN;
}
