/* The allocation language parser. Modes are decided entry by entry from the
 * form of each value, never from letters elsewhere in the string (the
 * original's bytes-mode test looked for g/m/k/b anywhere, so a device named
 * "mps" switched modes). */
#include <ctype.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/units.h"
#include "mgpu/plan.h"

typedef struct parser {
    const char *text;
    mgpu_error *err;
} parser;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static mgpu_status fail_at(const parser *p, size_t column, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mgpu_error_set(p->err, MGPU_ERR_ARGUMENT, "allocation '%s': %s at column %zu", p->text,
                          msg, column);
}

/* Narrows [*start, *end) to skip blanks on both sides. */
static void trim(const char *s, size_t *start, size_t *end)
{
    while (*start < *end && isspace((unsigned char)s[*start]))
        (*start)++;
    while (*end > *start && isspace((unsigned char)s[*end - 1]))
        (*end)--;
}

static size_t find_char(const char *s, size_t start, size_t end, char c)
{
    for (size_t i = start; i < end; i++)
        if (s[i] == c)
            return i;
    return end;
}

/* A device token: letters, digits, ':', '_' and '-', stored lowercased. */
static mgpu_status parse_device(const parser *p, size_t start, size_t end, char *out)
{
    trim(p->text, &start, &end);
    if (start == end)
        return fail_at(p, start, "missing device name");
    if (end - start >= MGPU_DEVICE_NAME_BYTES)
        return fail_at(p, start, "device name '%.*s' is too long", (int)(end - start),
                       p->text + start);
    for (size_t i = start; i < end; i++) {
        char c = p->text[i];
        if (!isalnum((unsigned char)c) && c != ':' && c != '_' && c != '-')
            return fail_at(p, i, "unexpected character '%c' in device name", c);
        out[i - start] = (char)tolower((unsigned char)c);
    }
    out[end - start] = '\0';
    return MGPU_OK;
}

static const char *kind_word(mgpu_quota_kind k)
{
    switch (k) {
    case MGPU_QUOTA_BYTES: return "bytes";
    case MGPU_QUOTA_RATIO: return "ratio";
    case MGPU_QUOTA_FRACTION: return "fraction";
    default: return "wildcard";
    }
}

static mgpu_status parse_value(const parser *p, size_t start, size_t end, mgpu_alloc_entry *e)
{
    const char *s = p->text;
    trim(s, &start, &end);
    if (start == end)
        return fail_at(p, start, "missing value after ','");
    if (s[end - 1] == '*') {
        e->wildcard = true;
        end--;
        trim(s, &start, &end);
        if (start == end) {
            e->kind = MGPU_QUOTA_NONE;
            return MGPU_OK;
        }
    }
    double v;
    size_t used = mgpu_parse_number(s + start, end - start, &v);
    if (used == 0)
        return fail_at(p, start, "expected a size (2.5gb), a ratio (25%%), a fraction (0.5) or '*', "
                                 "found '%.*s'",
                       (int)(end - start), s + start);
    size_t rest = start + used;
    size_t rest_start = rest, rest_end = end;
    trim(s, &rest_start, &rest_end);
    if (rest_start == rest_end) {
        if (v > 1.0)
            return fail_at(p, start,
                           "fraction %.*s is more than 1 (a share of the device's memory; write "
                           "%.*s%% for a ratio or %.*sgb for a size)",
                           (int)used, s + start, (int)used, s + start, (int)used, s + start);
        e->kind = MGPU_QUOTA_FRACTION;
        e->value = v;
        return MGPU_OK;
    }
    if (rest_end - rest_start == 1 && s[rest_start] == '%') {
        e->kind = MGPU_QUOTA_RATIO;
        e->value = v;
        return MGPU_OK;
    }
    uint64_t bytes;
    size_t unit_at;
    /* parse the number and unit together, blanks between them allowed */
    char joined[64];
    size_t jn = 0;
    for (size_t i = start; i < end && jn + 1 < sizeof joined; i++)
        if (!isspace((unsigned char)s[i]))
            joined[jn++] = s[i];
    switch (mgpu_parse_bytes(joined, jn, &bytes, &unit_at)) {
    case MGPU_UNIT_OK:
        e->kind = MGPU_QUOTA_BYTES;
        e->value = (double)bytes;
        return MGPU_OK;
    case MGPU_UNIT_OVERFLOW: return fail_at(p, start, "size '%.*s' is too large", (int)(end - start), s + start);
    default:
        return fail_at(p, rest_start, "unknown unit '%.*s' (use b, kb, mb, gb, tb, or %%)",
                       (int)(rest_end - rest_start), s + rest_start);
    }
}

static mgpu_status parse_expert(const parser *p, size_t start, size_t end, mgpu_alloc *a)
{
    const char *s = p->text;
    mgpu_status st;
    for (size_t pos = start; pos <= end;) {
        size_t stop = find_char(s, pos, end, ';');
        size_t es = pos, ee = stop;
        pos = stop + 1;
        trim(s, &es, &ee);
        if (es == ee)
            continue; /* empty entries (a trailing ';') are harmless */
        size_t comma = find_char(s, es, ee, ',');
        if (comma == ee)
            return fail_at(p, es, "expected DEVICE,VALUE, found '%.*s'", (int)(ee - es), s + es);
        if (a->entry_count == MGPU_MAX_DEVICES)
            return fail_at(p, es, "too many entries");
        mgpu_alloc_entry *e = &a->entries[a->entry_count];
        memset(e, 0, sizeof *e);
        e->column = es;
        if ((st = parse_device(p, es, comma, e->device)) != MGPU_OK ||
            (st = parse_value(p, comma + 1, ee, e)) != MGPU_OK)
            return st;
        for (size_t i = 0; i < a->entry_count; i++) {
            if (strcmp(a->entries[i].device, e->device) == 0)
                return fail_at(p, es, "device '%s' appears twice", e->device);
            if (e->wildcard && a->entries[i].wildcard)
                return fail_at(p, es, "two '*' entries ('%s' and '%s'); only one device can take "
                                      "the rest",
                               a->entries[i].device, e->device);
        }
        if (e->kind != MGPU_QUOTA_NONE) {
            if (a->mode == MGPU_QUOTA_NONE) {
                a->mode = e->kind;
            } else if (a->mode != e->kind) {
                const mgpu_alloc_entry *first = NULL;
                for (size_t i = 0; i < a->entry_count && !first; i++)
                    if (a->entries[i].kind == a->mode)
                        first = &a->entries[i];
                return fail_at(p, es,
                               "mixes %s ('%s') and %s ('%s') entries; use one kind in a string",
                               kind_word(a->mode), first->device, kind_word(e->kind), e->device);
            }
        }
        a->entry_count++;
    }
    return MGPU_OK;
}

static mgpu_status parse_compute(const parser *p, size_t start, size_t end, mgpu_alloc *a)
{
    const char *s = p->text;
    size_t f1 = find_char(s, start, end, ';');
    mgpu_status st = parse_device(p, start, f1, a->compute);
    if (st != MGPU_OK || f1 == end)
        return st;
    size_t f2 = find_char(s, f1 + 1, end, ';');
    if (f2 == end)
        return fail_at(p, f1, "expected '#COMPUTE;GB;DONORS' (for example '#cuda:0;4.0;cpu')");
    if (find_char(s, f2 + 1, end, ';') != end)
        return fail_at(p, find_char(s, f2 + 1, end, ';'), "too many ';' after '#'");
    size_t vs = f1 + 1, ve = f2;
    trim(s, &vs, &ve);
    double gib;
    size_t used = mgpu_parse_number(s + vs, ve - vs, &gib);
    if (used == 0)
        return fail_at(p, vs, "expected the GiB to move off %s, found '%.*s'", a->compute,
                       (int)(ve - vs), s + vs);
    if (vs + used != ve) {
        uint64_t bytes;
        size_t unit_at;
        if (mgpu_parse_bytes(s + vs, ve - vs, &bytes, &unit_at) != MGPU_UNIT_OK)
            return fail_at(p, vs + used, "unknown unit '%.*s' (a plain number is GiB)",
                           (int)(ve - vs - used), s + vs + used);
        a->virtual_vram_bytes = bytes;
    } else {
        a->virtual_vram_bytes = (uint64_t)llround(gib * 1073741824.0);
    }
    a->normal = true;
    for (size_t pos = f2 + 1; pos <= end;) {
        size_t stop = find_char(s, pos, end, ',');
        size_t ds = pos, de = stop;
        pos = stop + 1;
        trim(s, &ds, &de);
        if (ds == de)
            return fail_at(p, ds, "missing donor device");
        if (a->donor_count == MGPU_MAX_DEVICES)
            return fail_at(p, ds, "too many donors");
        char *d = a->donors[a->donor_count];
        if ((st = parse_device(p, ds, de, d)) != MGPU_OK)
            return st;
        if (strcmp(d, a->compute) == 0)
            return fail_at(p, ds, "the compute device %s cannot be its own donor", d);
        for (size_t i = 0; i < a->donor_count; i++)
            if (strcmp(a->donors[i], d) == 0)
                return fail_at(p, ds, "donor '%s' appears twice", d);
        a->donor_count++;
    }
    return MGPU_OK;
}

mgpu_status mgpu_alloc_parse(const char *text, mgpu_alloc *out, mgpu_error *err)
{
    memset(out, 0, sizeof *out);
    parser p = {text ? text : "", err};
    size_t n = strlen(p.text);
    size_t hash = find_char(p.text, 0, n, '#');
    if (hash < n && find_char(p.text, hash + 1, n, '#') < n)
        return fail_at(&p, find_char(p.text, hash + 1, n, '#'), "more than one '#'");
    mgpu_status st = parse_expert(&p, 0, hash, out);
    if (st == MGPU_OK && hash < n)
        st = parse_compute(&p, hash + 1, n, out);
    if (st == MGPU_OK && out->normal && out->entry_count > 0)
        st = fail_at(&p, hash, "use either DEVICE,VALUE entries or '#COMPUTE;GB;DONORS', not both");
    if (st != MGPU_OK)
        memset(out, 0, sizeof *out);
    return st;
}
