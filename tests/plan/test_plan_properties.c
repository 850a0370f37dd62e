/* Property tests for the placement planner: a few hundred random models,
 * simulated device inventories and allocation strings (every form of the
 * language, random device order, case and whitespace), each planned and then
 * checked against the rules of ALLOCATION.md that hold for any input: every
 * byte placed exactly once, no device over its real capacity, pinned modules
 * on the compute device, quotas as caps, totals as the string says when the
 * devices can hold them, determinism, and failures that are real and say
 * where. Seeds are fixed, so a failure names a case that reruns alone:
 *   MGPU_PLAN_CASE=N test_plan_properties     (MGPU_PLAN_CASES=N runs N cases,
 *   MGPU_PLAN_VERBOSE=1 prints every refusal, MGPU_PLAN_KEEP=1 keeps failing models)
 * The smallest cases that once broke a property follow as named tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mgpu/device.h"
#include "mgpu/model.h"
#include "mgpu/plan.h"
#include "mgpu/safetensors.h"
#include "test_util.h"

enum { CASES = 300, MAX_TENSORS = 720, MAX_ENTRIES = 8, MAX_HEADS = 8 };

static const uint64_t MIB = UINT64_C(1) << 20;
static const uint64_t GIB = UINT64_C(1) << 30;

/* ---- a small deterministic PRNG (splitmix64) ----------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t rng_below(rng *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}

static double rng_unit(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1p-53;
}

static bool rng_chance(rng *r, double p)
{
    return rng_unit(r) < p;
}

static double rng_range(rng *r, double lo, double hi)
{
    return lo + (hi - lo) * rng_unit(r);
}

/* ---- saturating byte arithmetic (the disk holds UINT64_MAX) --------------- */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_sub(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static uint64_t abs_diff(uint64_t a, uint64_t b)
{
    return a > b ? a - b : b - a;
}

/* ---- the case: what the generator wrote, so checks need no planner state -- */

typedef enum alloc_form {
    FORM_NONE,         /* NULL, "" or blanks: everything on compute */
    FORM_COMPUTE_ONLY, /* "#cuda:1" */
    FORM_NORMAL,       /* "#cuda:0;4.0;cpu" */
    FORM_EXPERT,       /* "cuda:0,2.5gb;cpu,*" with an optional "#COMPUTE" */
} alloc_form;

typedef struct gen_entry {
    int device; /* index into the device list */
    mgpu_quota_kind kind;
    double value; /* as written: bytes (already scaled), percent or fraction */
    bool wildcard;
} gen_entry;

typedef struct gen_case {
    int index;
    char model_path[1024];
    char model_desc[160];
    char devices_spec[640];
    char alloc[512];
    bool alloc_null;
    char compute_override[MGPU_DEVICE_NAME_BYTES]; /* "" when not overridden */
    uint64_t reserve;
    uint64_t pin_below;
    int component;
    alloc_form form;
    bool invalid;           /* deliberately broken: must fail */
    bool ratio_over;        /* ratios with '*' add up past 100%: the planner refuses */
    char string_compute[MGPU_DEVICE_NAME_BYTES]; /* after '#', "" if none */
    gen_entry entries[MAX_ENTRIES];
    size_t entry_count;
    uint64_t vvram;
    int donors[MAX_ENTRIES];
    size_t donor_count;
    char heads[MAX_HEADS][48]; /* head modules that must be pinned (wan layout) */
    size_t head_count;
    uint64_t written_bytes; /* bytes of every tensor written */
    bool failed;
} gen_case;

/* Prints what reproduces the case and marks it failed; the caller returns. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static void case_fail(gen_case *c, int line, const char *what, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr,
            "[case %d] line %d: %s\n  %s\n  model: %s\n  devices: %s\n  alloc: %s%s%s\n"
            "  compute override: %s  reserve: %" PRIu64 "  pin_below: %" PRIu64
            "  component: %d\n",
            c->index, line, what, msg, c->model_desc, c->devices_spec,
            c->alloc_null ? "(NULL)" : "'", c->alloc_null ? "" : c->alloc,
            c->alloc_null ? "" : "'", *c->compute_override ? c->compute_override : "(none)",
            c->reserve, c->pin_below, c->component);
    c->failed = true;
}

#define CHECK(c, cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            case_fail((c), __LINE__, #cond, __VA_ARGS__);                                          \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* ---- models --------------------------------------------------------------- */

typedef struct gen_tensor {
    char name[96];
    int ndim;
    uint64_t shape[2];
} gen_tensor;

typedef struct gen_model {
    gen_tensor tensors[MAX_TENSORS];
    size_t tensor_count;
} gen_model;

/* Log-uniform from 4 bytes (one f32) to max_bytes: most modules are large,
 * but norms, biases and scalars of a few bytes happen too. */
static uint64_t module_size(rng *r, uint64_t max_bytes)
{
    double lo = log(4.0), hi = log((double)max_bytes);
    uint64_t b = (uint64_t)exp(rng_range(r, lo, hi));
    return b < 4 ? 4 : b;
}

/* Adds module `name` of about `bytes` bytes: a 2-D f32 weight, often with a
 * bias, or a 1-D weight when `flat`. */
static void add_module(rng *r, gen_model *m, const char *name, uint64_t bytes, bool flat)
{
    if (m->tensor_count + 2 > MAX_TENSORS)
        return;
    uint64_t elems = bytes / 4 ? bytes / 4 : 1;
    gen_tensor *w = &m->tensors[m->tensor_count++];
    snprintf(w->name, sizeof w->name, "%s.weight", name);
    if (flat || elems < 16) {
        w->ndim = 1;
        w->shape[0] = elems;
        return;
    }
    static const uint64_t widths[] = {1, 4, 16, 64, 256, 1024, 3072, 5120};
    uint64_t cols = widths[rng_below(r, sizeof widths / sizeof widths[0])];
    while (cols > 1 && cols > elems)
        cols /= 4;
    w->ndim = 2;
    w->shape[0] = elems / cols;
    w->shape[1] = cols;
    if (rng_chance(r, 0.7)) {
        gen_tensor *b = &m->tensors[m->tensor_count++];
        snprintf(b->name, sizeof b->name, "%s.bias", name);
        b->ndim = 1;
        b->shape[0] = w->shape[0];
    }
}

/* A random model: "generic" (blocks.N.a ... plus loose modules, architecture
 * unknown, so nothing is a head) or "wan" (Wan's signature names, so the
 * input and output heads are pinned by role). */
static void gen_model_tensors(rng *r, gen_case *c, gen_model *m)
{
    m->tensor_count = 0;
    c->head_count = 0;
    size_t n = rng_chance(r, 0.25) ? 1 + rng_below(r, 10) : 1 + rng_below(r, 300);
    static const uint64_t maxes[] = {64 << 10, 8 << 20, 128 << 20, 512 << 20};
    uint64_t max_bytes = maxes[rng_below(r, 4)];
    bool wan = n >= 4 && rng_chance(r, 0.35);
    size_t per_block = 1 + rng_below(r, 10);
    char name[96];
    size_t made = 0;
    if (wan) {
        static const char *const heads[] = {"patch_embedding", "text_embedding.0",
                                            "time_embedding.0", "time_projection.1", "head.head"};
        static const char *const subs[] = {"self_attn.q", "cross_attn.q", "self_attn.k",
                                           "self_attn.v", "self_attn.o",  "cross_attn.k",
                                           "cross_attn.v", "cross_attn.o", "ffn.0",
                                           "ffn.2",       "norm3",        "modulation"};
        /* input heads, then blocks (block 0 carries the signature: self_attn.q
         * and cross_attn.q), then the output head */
        size_t inputs = 1 + rng_below(r, 4);
        if (inputs > n - 3)
            inputs = n - 3;
        if (per_block < 2)
            per_block = 2;
        for (size_t h = 0; h < inputs; h++, made++) {
            add_module(r, m, heads[h], module_size(r, max_bytes), false);
            snprintf(c->heads[c->head_count++], sizeof c->heads[0], "%s", heads[h]);
        }
        for (size_t b = 0; made + 1 < n; b++)
            for (size_t s = 0; s < per_block && made + 1 < n; s++, made++) {
                snprintf(name, sizeof name, "blocks.%zu.%s", b, subs[s % 12]);
                add_module(r, m, name, module_size(r, max_bytes), s % 12 == 10);
            }
        add_module(r, m, heads[4], module_size(r, max_bytes), false);
        snprintf(c->heads[c->head_count++], sizeof c->heads[0], "%s", heads[4]);
    } else {
        static const char *const loose[] = {"embed", "pos_embed", "final_norm", "out_proj"};
        size_t nloose = rng_below(r, n < 4 ? n : 4);
        for (size_t i = 0; i < nloose; i++, made++)
            add_module(r, m, loose[i], module_size(r, max_bytes), i == 2);
        for (size_t b = 0; made < n; b++)
            for (size_t s = 0; s < per_block && made < n; s++, made++) {
                snprintf(name, sizeof name, "blocks.%zu.%c", b, (char)('a' + s));
                add_module(r, m, name, module_size(r, max_bytes), false);
            }
    }
    snprintf(c->model_desc, sizeof c->model_desc,
             "%s layout, %zu modules (%zu per block), %zu tensors, modules up to %" PRIu64
             " bytes",
             wan ? "wan" : "generic", n, per_block, m->tensor_count, max_bytes);
}

static mgpu_model *write_and_open(gen_case *c, const gen_model *m)
{
    mgpu_error err = {0};
    mgpu_safetensors_writer *w = NULL;
    if (mgpu_safetensors_writer_create(c->model_path, &w, &err) != MGPU_OK)
        fail_msg("writer: %s", err.message);
    c->written_bytes = 0;
    for (size_t i = 0; i < m->tensor_count; i++)
        if (mgpu_safetensors_writer_add_tensor(w, m->tensors[i].name, MGPU_DTYPE_F32,
                                               m->tensors[i].ndim, m->tensors[i].shape,
                                               &err) != MGPU_OK)
            fail_msg("add %s: %s", m->tensors[i].name, err.message);
    for (size_t i = 0; i < m->tensor_count; i++) {
        const gen_tensor *t = &m->tensors[i];
        uint64_t bytes = 4 * t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
        c->written_bytes += bytes;
        /* NULL data: a hole, so a 30 GiB model costs nothing to write */
        if (mgpu_safetensors_writer_write(w, NULL, bytes, &err) != MGPU_OK)
            fail_msg("write: %s", err.message);
    }
    if (mgpu_safetensors_writer_finish(w, &err) != MGPU_OK)
        fail_msg("finish: %s", err.message);
    mgpu_model *model = NULL;
    if (mgpu_model_open(c->model_path, &model, &err) != MGPU_OK)
        fail_msg("open %s: %s", c->model_path, err.message);
    return model;
}

/* ---- devices --------------------------------------------------------------- */

static void append(char *buf, size_t size, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void append(char *buf, size_t size, const char *fmt, ...)
{
    size_t used = strlen(buf);
    if (used + 1 >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, size - used, fmt, ap);
    va_end(ap);
}

static void shuffle_strings(rng *r, char items[][128], size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = rng_below(r, i);
        char t[128];
        memcpy(t, items[i - 1], sizeof t);
        memcpy(items[i - 1], items[j], sizeof t);
        memcpy(items[j], t, sizeof t);
    }
}

/* A size as the spec language writes it, in bytes or rounded GiB/MiB. */
static void size_text(rng *r, uint64_t bytes, char *out, size_t size)
{
    switch (rng_below(r, 3)) {
    case 0: snprintf(out, size, "%" PRIu64 "b", bytes); break;
    case 1: snprintf(out, size, "%" PRIu64 "mib", bytes / MIB ? bytes / MIB : 1); break;
    default: snprintf(out, size, "%.2fgib", (double)bytes / (double)GIB); break;
    }
}

/* 0-4 GPUs (ordinals not always 0..n-1), sometimes a cpu, sometimes a disk,
 * sometimes a peer link; sized around the model so that plans sometimes fit,
 * sometimes spill and sometimes fail. */
static void gen_devices(rng *r, gen_case *c, uint64_t model_bytes, mgpu_device_list *out)
{
    char items[8][128];
    size_t n = 0;
    size_t gpus = rng_chance(r, 0.05) ? 0 : 1 + rng_below(r, 4);
    int ordinals[4];
    bool contiguous = rng_chance(r, 0.6);
    for (size_t g = 0; g < gpus; g++) {
        int o;
        bool again;
        do {
            o = contiguous ? (int)g : (int)rng_below(r, 12);
            again = false;
            for (size_t k = 0; k < g; k++)
                again |= ordinals[k] == o;
        } while (again);
        ordinals[g] = o;
    }
    double base = (double)max_u64(model_bytes, 64 * MIB);
    for (size_t g = 0; g < gpus; g++) {
        uint64_t total =
            (uint64_t)(base * rng_range(r, 0.05, 2.0) + rng_range(r, 0, 600.0 * (double)MIB));
        total = max_u64(total, 16 * MIB);
        uint64_t free_b = (uint64_t)((double)total * rng_range(r, 0.4, 1.0));
        char t[48];
        size_text(r, total, t, sizeof t);
        /* total and free in bytes, so rounding can never put free above total */
        if (rng_chance(r, 0.3))
            snprintf(items[n], sizeof items[0], "cuda:%d=%s", ordinals[g], t);
        else
            snprintf(items[n], sizeof items[0], "cuda:%d=%" PRIu64 "b/%" PRIu64 "b", ordinals[g],
                     total, free_b);
        if (rng_chance(r, 0.8))
            append(items[n], sizeof items[0], "@%.1fgbps", rng_range(r, 1.0, 64.0));
        n++;
    }
    if (rng_chance(r, 0.6)) {
        uint64_t total =
            (uint64_t)(base * rng_range(r, 0.1, 2.0) + rng_range(r, 0, 4.0 * (double)GIB));
        uint64_t free_b = (uint64_t)((double)total * rng_range(r, 0.3, 1.0));
        snprintf(items[n++], sizeof items[0], "cpu=%" PRIu64 "b/%" PRIu64 "b", total, free_b);
    }
    if (rng_chance(r, 0.3)) {
        if (rng_chance(r, 0.7))
            snprintf(items[n++], sizeof items[0], "disk@%.1fgbps", rng_range(r, 0.5, 7.0));
        else
            snprintf(items[n++], sizeof items[0], "disk");
    }
    if (gpus >= 2 && rng_chance(r, 0.2))
        snprintf(items[n++], sizeof items[0], "cuda:%d+cuda:%d@%.0fgbps", ordinals[0], ordinals[1],
                 rng_range(r, 20, 300));
    if (n == 0)
        snprintf(items[n++], sizeof items[0], "cpu=%" PRIu64 "b", (uint64_t)(base * 2));
    shuffle_strings(r, items, n);
    c->devices_spec[0] = '\0';
    for (size_t i = 0; i < n; i++)
        append(c->devices_spec, sizeof c->devices_spec, "%s%s%s", i ? "," : "",
               rng_chance(r, 0.2) ? " " : "", items[i]);
    mgpu_error err = {0};
    if (mgpu_devices_simulate(c->devices_spec, out, &err) != MGPU_OK)
        fail_msg("simulate '%s': %s", c->devices_spec, err.message);
}

/* The margin plan.c keeps free on each device (the spec leaves the amount
 * to the implementation: 2% of a GPU, at least 256 MiB; 5% of RAM, at least
 * 1 GiB; nothing on the disk). Successful plans are checked to agree, so
 * this copy cannot drift silently. */
static uint64_t margin_of(const mgpu_device *d)
{
    switch (d->kind) {
    case MGPU_DEVICE_CUDA: return max_u64(d->total_bytes / 50, 256 * MIB);
    case MGPU_DEVICE_CPU: return max_u64(d->total_bytes / 20, GIB);
    default: return 0;
    }
}

/* ---- allocation strings ----------------------------------------------------- */

static const char *blank(rng *r)
{
    static const char *const blanks[] = {"", "", "", " ", "  ", "\t"};
    return blanks[rng_below(r, 6)];
}

/* The device name as a user might type it: any case. */
static void typed_name(rng *r, const char *name, char *out)
{
    bool upper = rng_chance(r, 0.1);
    size_t i = 0;
    for (; name[i]; i++)
        out[i] = upper ? (char)toupper((unsigned char)name[i]) : name[i];
    out[i] = '\0';
}

/* What a device can hold, before any activation reserve. */
static uint64_t room_of(const mgpu_device *d)
{
    return sat_sub(d->free_bytes, margin_of(d));
}

static int random_device(rng *r, const mgpu_device_list *d, bool allow_disk)
{
    for (;;) {
        int i = (int)rng_below(r, d->count);
        if (allow_disk || d->devices[i].kind != MGPU_DEVICE_DISK)
            return i;
    }
}

/* Picks k distinct devices in random order. */
static size_t random_devices(rng *r, const mgpu_device_list *d, size_t k, int exclude, int *out)
{
    int pool[MGPU_MAX_DEVICES];
    size_t n = 0;
    for (size_t i = 0; i < d->count; i++)
        if ((int)i != exclude)
            pool[n++] = (int)i;
    for (size_t i = n; i > 1; i--) {
        size_t j = rng_below(r, i);
        int t = pool[i - 1];
        pool[i - 1] = pool[j];
        pool[j] = t;
    }
    if (k > n)
        k = n;
    memcpy(out, pool, k * sizeof *out);
    return k;
}

/* Writes a value of `kind` (bytes around `bytes_hint`) and returns what it
 * means: bytes after the unit, percent or fraction. */
static double value_text(rng *r, mgpu_quota_kind kind, double bytes_hint, char *out, size_t size)
{
    static const struct {
        const char *unit;
        double scale;
    } units[] = {{"b", 1.0},         {"k", 1024.0},      {"kb", 1024.0},
                 {"m", 1048576.0},   {"mb", 1048576.0},  {"MB", 1048576.0},
                 {"g", 1073741824.0}, {"gb", 1073741824.0}, {"GB", 1073741824.0},
                 {"Gb", 1073741824.0}, {"t", 1099511627776.0}};
    switch (kind) {
    case MGPU_QUOTA_BYTES: {
        size_t u = rng_below(r, sizeof units / sizeof units[0]);
        if (bytes_hint / units[u].scale < 0.01 && rng_chance(r, 0.9))
            u = 3; /* keep tiny quotas from all rounding to zero */
        char num[48];
        snprintf(num, sizeof num, "%.2f", bytes_hint / units[u].scale);
        snprintf(out, size, "%s%s", num, units[u].unit);
        /* the planner rounds the parsed number times the unit to bytes */
        return (double)llround(strtod(num, NULL) * units[u].scale);
    }
    case MGPU_QUOTA_RATIO: {
        double pct = rng_chance(r, 0.5) ? (double)rng_below(r, 60) : rng_range(r, 0, 60);
        char num[32];
        snprintf(num, sizeof num, pct == floor(pct) ? "%.0f" : "%.1f", pct);
        snprintf(out, size, "%s%%", num);
        return strtod(num, NULL);
    }
    default: {
        switch (rng_below(r, 8)) {
        case 0: snprintf(out, size, "1"); return 1.0;
        case 1: snprintf(out, size, "0"); return 0.0;
        case 2: snprintf(out, size, ".5"); return 0.5;
        default: {
            char num[32];
            snprintf(num, sizeof num, "%.2f", rng_unit(r));
            snprintf(out, size, "%s", num);
            return strtod(num, NULL);
        }
        }
    }
    }
}

static void gen_expert(rng *r, gen_case *c, const mgpu_device_list *d, uint64_t model_bytes)
{
    mgpu_quota_kind mode = (mgpu_quota_kind)(MGPU_QUOTA_BYTES + rng_below(r, 3));
    int picked[MAX_ENTRIES];
    size_t k = random_devices(r, d, 1 + rng_below(r, d->count < 5 ? d->count : 5), -1, picked);
    int wildcard = rng_chance(r, 0.6) ? (int)rng_below(r, k) : -1;
    if (wildcard >= 0 && rng_chance(r, 0.5))
        for (size_t i = 0; i < k; i++) /* a roomy wildcard, so more strings fit */
            if (room_of(&d->devices[picked[i]]) > room_of(&d->devices[picked[wildcard]]))
                wildcard = (int)i;
    /* over-allocation now and then: quotas that add up past the model */
    double spread = rng_chance(r, 0.25) ? 1.5 : 0.7;
    c->entry_count = k;
    c->alloc[0] = '\0';
    for (size_t i = 0; i < k; i++) {
        gen_entry *e = &c->entries[i];
        e->device = picked[i];
        e->wildcard = (int)i == wildcard;
        char name[MGPU_DEVICE_NAME_BYTES], value[64] = "";
        typed_name(r, d->devices[picked[i]].name, name);
        if (e->wildcard && rng_chance(r, 0.6)) {
            e->kind = MGPU_QUOTA_NONE;
            e->value = 0;
            snprintf(value, sizeof value, "*");
        } else {
            double hint = (double)model_bytes * rng_range(r, 0, spread / (double)k);
            if (rng_chance(r, 0.6)) /* mostly what the device can really hold */
                hint = fmin(hint, (double)room_of(&d->devices[picked[i]]) * rng_range(r, 0.5, 1.1));
            e->kind = mode;
            e->value = value_text(r, mode, hint, value, sizeof value);
            if (e->wildcard)
                append(value, sizeof value, "%s*", blank(r));
        }
        append(c->alloc, sizeof c->alloc, "%s%s%s%s,%s%s%s%s", i ? ";" : "", blank(r), name,
               blank(r), blank(r), value, blank(r), i + 1 == k && rng_chance(r, 0.1) ? ";" : "");
    }
    if (rng_chance(r, 0.35)) {
        int cd = random_device(r, d, false);
        snprintf(c->string_compute, sizeof c->string_compute, "%s", d->devices[cd].name);
        char name[MGPU_DEVICE_NAME_BYTES];
        typed_name(r, c->string_compute, name);
        append(c->alloc, sizeof c->alloc, "%s#%s%s%s", blank(r), blank(r), name, blank(r));
    }
    double pct = 0;
    for (size_t i = 0; i < k; i++)
        if (c->entries[i].kind == MGPU_QUOTA_RATIO && !c->entries[i].wildcard)
            pct += c->entries[i].value;
    c->ratio_over = wildcard >= 0 && mode == MGPU_QUOTA_RATIO && pct > 100.0;
}

static void gen_normal(rng *r, gen_case *c, const mgpu_device_list *d, uint64_t model_bytes)
{
    int cd = random_device(r, d, false);
    snprintf(c->string_compute, sizeof c->string_compute, "%s", d->devices[cd].name);
    /* mostly enough to fit on compute, sometimes not */
    double gib = (double)model_bytes / (double)GIB * rng_range(r, 0, 1.2);
    if (rng_chance(r, 0.7)) {
        double room = (double)room_of(&d->devices[cd]) * rng_range(r, 0.3, 1.0);
        gib = fmax(0.0, (double)model_bytes - room) / (double)GIB * rng_range(r, 1.0, 1.2);
    }
    char num[32];
    snprintf(num, sizeof num, "%.2f", gib);
    c->vvram = (uint64_t)llround(strtod(num, NULL) * (double)GIB);
    char name[MGPU_DEVICE_NAME_BYTES];
    typed_name(r, c->string_compute, name);
    snprintf(c->alloc, sizeof c->alloc, "%s#%s%s;%s%s%s;", blank(r), name, blank(r), blank(r), num,
             blank(r));
    size_t want = 1 + rng_below(r, 3);
    c->donor_count = random_devices(r, d, want, cd, c->donors);
    for (size_t i = 0; i < c->donor_count; i++) {
        typed_name(r, d->devices[c->donors[i]].name, name);
        append(c->alloc, sizeof c->alloc, "%s%s%s%s", i ? "," : "", blank(r), name, blank(r));
    }
    if (c->donor_count == 0)
        c->invalid = true; /* a cpu-only inventory: "#cpu;1.0;" has no donor */
}

/* A string that must be refused, each for a different reason. */
static void gen_invalid(rng *r, gen_case *c, const mgpu_device_list *d, uint64_t model_bytes)
{
    c->invalid = true;
    const char *first = d->devices[0].name;
    const char *last = d->devices[d->count - 1].name;
    switch (rng_below(r, 9)) {
    case 0: snprintf(c->alloc, sizeof c->alloc, "%s,50%%;mps,50%%", first); break;
    case 1: snprintf(c->alloc, sizeof c->alloc, "%s,25%%;%s,2gb", first, last); break;
    case 2: snprintf(c->alloc, sizeof c->alloc, "%s,1gb;%s,2gb", first, first); break;
    case 3: snprintf(c->alloc, sizeof c->alloc, "%s,*;%s,*", first, last); break;
    case 4: snprintf(c->alloc, sizeof c->alloc, "%s,1.5", first); break;
    case 5: snprintf(c->alloc, sizeof c->alloc, "%s,2.5xb;%s,*", first, last); break;
    case 6: snprintf(c->alloc, sizeof c->alloc, "#%s;1.0;%s", first, first); break;
    case 7: snprintf(c->alloc, sizeof c->alloc, "%s", first); break;
    default: snprintf(c->alloc, sizeof c->alloc, "#%s;%.1f;cpu#cpu", first,
                      (double)model_bytes / (double)GIB); break;
    }
    c->form = FORM_EXPERT;
}

static void gen_alloc(rng *r, gen_case *c, const mgpu_device_list *d, uint64_t model_bytes)
{
    double pick = rng_unit(r);
    if (pick < 0.06) {
        c->form = FORM_NONE;
        c->alloc_null = rng_chance(r, 0.5);
        snprintf(c->alloc, sizeof c->alloc, "%s", c->alloc_null ? "" : blank(r));
    } else if (pick < 0.12) {
        c->form = FORM_COMPUTE_ONLY;
        int cd = random_device(r, d, false);
        snprintf(c->string_compute, sizeof c->string_compute, "%s", d->devices[cd].name);
        snprintf(c->alloc, sizeof c->alloc, "%s#%s%s", blank(r), c->string_compute, blank(r));
    } else if (pick < 0.40) {
        c->form = FORM_NORMAL;
        gen_normal(r, c, d, model_bytes);
    } else if (pick < 0.92) {
        c->form = FORM_EXPERT;
        gen_expert(r, c, d, model_bytes);
    } else {
        gen_invalid(r, c, d, model_bytes);
    }
    /* the request may override the string's compute device (not with a donor:
     * a device cannot lend memory to itself) */
    if (!c->invalid && rng_chance(r, 0.12)) {
        int cd = random_device(r, d, false);
        bool donor = false;
        for (size_t i = 0; i < c->donor_count; i++)
            donor |= c->donors[i] == cd;
        if (!donor)
            snprintf(c->compute_override, sizeof c->compute_override, "%s", d->devices[cd].name);
    }
}

/* ---- what the planner must do, computed independently ----------------------- */

typedef struct expect {
    int compute;
    uint64_t cap[MGPU_MAX_DEVICES];
    uint64_t model_bytes, pinned_bytes, largest;
    bool pinned[MAX_TENSORS];
    size_t module_count;
    uint64_t quota[MGPU_MAX_DEVICES]; /* expert: per listed non-wildcard device */
    bool listed[MGPU_MAX_DEVICES];    /* the string allows bytes there */
    bool has_quota[MGPU_MAX_DEVICES];
    int wildcard;                     /* explicit '*' device or -1 */
    bool cpu_default;                 /* cpu would take a remainder */
    uint64_t target[MGPU_MAX_DEVICES]; /* the spec's totals before module rounding */
    bool target_known;                 /* false where the string cannot be met */
    uint64_t allowed;                  /* expert: most bytes the string's devices can take */
    uint64_t move, donor_room;         /* normal: bytes to move, what the donors can hold */
    bool over_allocated;               /* the quotas add up past the model */
    uint64_t unplaced;                 /* expert: bytes no device of the string can take */
} expect;

static int expected_compute(const gen_case *c, const mgpu_device_list *d)
{
    if (*c->compute_override)
        return mgpu_device_index(d, c->compute_override);
    if (*c->string_compute)
        return mgpu_device_index(d, c->string_compute);
    int best = -1;
    for (size_t i = 0; i < d->count; i++)
        if (d->devices[i].kind == MGPU_DEVICE_CUDA &&
            (best < 0 || d->devices[i].ordinal < d->devices[best].ordinal))
            best = (int)i;
    return best >= 0 ? best : mgpu_device_index(d, "cpu");
}

static void compute_expect(const gen_case *c, const mgpu_model *m, const mgpu_device_list *d,
                           expect *x)
{
    memset(x, 0, sizeof *x);
    x->compute = expected_compute(c, d);
    x->wildcard = -1;
    x->module_count = mgpu_model_module_count(m);
    for (size_t i = 0; i < x->module_count; i++) {
        const mgpu_model_module *mod = mgpu_model_module_at(m, i);
        x->model_bytes += mod->nbytes;
        x->largest = max_u64(x->largest, mod->nbytes);
        x->pinned[i] = mod->role != MGPU_ROLE_BODY || mod->nbytes < c->pin_below;
        if (x->pinned[i])
            x->pinned_bytes += mod->nbytes;
    }
    for (size_t i = 0; i < d->count; i++) {
        uint64_t cap = sat_sub(d->devices[i].free_bytes, margin_of(&d->devices[i]));
        x->cap[i] = (int)i == x->compute ? sat_sub(cap, c->reserve) : cap;
    }
    if (x->compute < 0)
        return;
    const int cpu = mgpu_device_index(d, "cpu");
    const uint64_t total = x->model_bytes;
    x->listed[x->compute] = true;
    x->target_known = true;
    if (c->form == FORM_NORMAL) {
        uint64_t move = min_u64(c->vvram, total - x->pinned_bytes), left = move, room = 0;
        for (size_t i = 0; i < c->donor_count; i++) {
            int dv = c->donors[i];
            uint64_t t = min_u64(left, x->cap[dv]);
            x->target[dv] = t;
            x->listed[dv] = true;
            left -= t;
            room = sat_add(room, x->cap[dv]);
        }
        x->target[x->compute] = total - move;
        x->target_known = left == 0;
        x->move = move;
        x->donor_room = room;
        return;
    }
    if (c->form != FORM_EXPERT) {
        x->target[x->compute] = total;
        return;
    }
    /* Expert. Pinned modules sit on compute whatever the string says, their
     * bytes counted against its quota first; the quotas share out the rest in
     * the written order, each up to its quota and real capacity; what is left
     * goes to the wildcard. */
    double ratio_sum = 0;
    for (size_t i = 0; i < c->entry_count; i++) {
        if (c->entries[i].wildcard)
            x->wildcard = c->entries[i].device;
        else if (c->entries[i].kind == MGPU_QUOTA_RATIO)
            ratio_sum += c->entries[i].value;
        x->listed[c->entries[i].device] = true;
    }
    const uint64_t pinned = x->pinned_bytes;
    uint64_t remaining = total - pinned, quotas = 0;
    double ratio_seen = 0;
    x->target[x->compute] = pinned;
    for (size_t i = 0; i < c->entry_count; i++) {
        const gen_entry *e = &c->entries[i];
        if (e->wildcard)
            continue;
        double want = 0;
        switch (e->kind) {
        case MGPU_QUOTA_BYTES: want = e->value; break;
        case MGPU_QUOTA_RATIO:
            if (x->wildcard >= 0) {
                /* with a '*' entry, percentages of the model */
                want = (double)total * e->value / 100.0;
            } else if (ratio_sum > 0) {
                /* weights share out the whole model: rounded cumulatively,
                 * so the shares add up to it exactly */
                double before = (double)llround((double)total * ratio_seen / ratio_sum);
                ratio_seen += e->value;
                want = (double)llround((double)total * ratio_seen / ratio_sum) - before;
            }
            break;
        default: want = e->value * (double)d->devices[e->device].total_bytes; break;
        }
        /* past 2^63 (a share of the disk) a quota is as good as unbounded */
        uint64_t q = want >= 9.2e18 ? UINT64_MAX : (uint64_t)llround(want);
        x->quota[e->device] = q;
        x->has_quota[e->device] = true;
        quotas = sat_add(quotas, q);
        x->over_allocated = quotas > total;
        uint64_t room = x->cap[e->device], left = q;
        if (e->device == x->compute) {
            room = sat_sub(room, pinned);
            left = sat_sub(q, pinned);
        }
        uint64_t t = min_u64(min_u64(left, room), remaining);
        x->target[e->device] += t;
        remaining -= t;
    }
    int w = x->wildcard;
    /* the string caps the cpu when an entry names it */
    bool cpu_listed = false;
    for (size_t i = 0; i < c->entry_count; i++)
        cpu_listed |= c->entries[i].device == cpu;
    if (w < 0 && cpu >= 0 && !cpu_listed) {
        x->cpu_default = remaining > 0;
        w = cpu;
    }
    /* The most bytes these devices may take under the string: quotas (capped
     * by capacity), the wildcard's whole capacity, and on compute at least the
     * pinned modules. */
    for (size_t i = 0; i < d->count; i++) {
        uint64_t a = x->has_quota[i] ? min_u64(x->quota[i], x->cap[i]) : 0;
        if ((int)i == w)
            a = x->cap[i];
        if ((int)i == x->compute)
            a = max_u64(a, min_u64(pinned, x->cap[i]));
        x->allowed = sat_add(x->allowed, a);
    }
    if (remaining > 0) {
        /* no wildcard, or one too small: these bytes have no device */
        if (w < 0 || remaining > sat_sub(x->cap[w], x->target[w])) {
            x->unplaced = remaining;
            x->target_known = false;
            return;
        }
        x->target[w] += remaining;
        x->listed[w] = true;
    }
    x->target_known = pinned <= x->cap[x->compute];
}

/* How much of the generator's range the run covered, printed at the end. */
static struct {
    size_t totals_checked, over_allocated, default_wildcard, pinned_cases, streamed;
} stats;

/* ---- checks ---------------------------------------------------------------- */

static bool mentions_device(const char *msg, const mgpu_device_list *d)
{
    for (size_t i = 0; i < d->count; i++)
        if (strstr(msg, d->devices[i].name))
            return true;
    return false;
}

static bool has_warning(const mgpu_plan *p, const char *needle)
{
    for (size_t i = 0; i < p->warning_count; i++)
        if (strstr(p->warnings[i], needle))
            return true;
    return false;
}

static void check_plan(gen_case *c, const mgpu_model *m, const mgpu_device_list *d,
                       const mgpu_plan *p, const expect *x)
{
    const size_t n = x->module_count;
    CHECK(c, p->module_count == n, "module_count %zu, model has %zu", p->module_count, n);
    CHECK(c, p->compute == x->compute, "compute is device %d, expected %d (%s)", p->compute,
          x->compute, d->devices[x->compute].name);
    CHECK(c, d->devices[p->compute].kind != MGPU_DEVICE_DISK, "computes on the disk");

    /* every module planned, once, on a real device; the order is a permutation */
    CHECK(c, p->order_count == n, "order_count %zu of %zu modules", p->order_count, n);
    bool seen[MAX_TENSORS] = {false};
    for (size_t k = 0; k < p->order_count; k++) {
        uint32_t i = p->order[k];
        CHECK(c, i < n && !seen[i], "order[%zu] = %u repeats or is out of range", k, i);
        seen[i] = true;
    }
    uint64_t placed[MGPU_MAX_DEVICES] = {0}, sum = 0;
    uint32_t count[MGPU_MAX_DEVICES] = {0}, pinned_count[MGPU_MAX_DEVICES] = {0};
    for (size_t i = 0; i < n; i++) {
        int dv = p->module_device[i];
        const mgpu_model_module *mod = mgpu_model_module_at(m, i);
        CHECK(c, dv >= 0 && (size_t)dv < d->count, "module %s has device %d", mod->name, dv);
        CHECK(c, p->module_pinned[i] == x->pinned[i],
              "module %s (%" PRIu64 " bytes, role %d) pinned=%d", mod->name, mod->nbytes,
              (int)mod->role, (int)p->module_pinned[i]);
        CHECK(c, !x->pinned[i] || dv == x->compute, "pinned module %s on %s, compute is %s",
              mod->name, d->devices[dv].name, d->devices[x->compute].name);
        placed[dv] += mod->nbytes;
        count[dv]++;
        pinned_count[dv] += x->pinned[i];
        sum += mod->nbytes;
    }
    for (size_t h = 0; h < c->head_count; h++) {
        bool found = false;
        for (size_t i = 0; i < n; i++) {
            const mgpu_model_module *mod = mgpu_model_module_at(m, i);
            if (strcmp(mod->name, c->heads[h]) == 0) {
                found = true;
                CHECK(c, p->module_pinned[i] && p->module_device[i] == x->compute,
                      "head %s is not pinned to compute", c->heads[h]);
            }
        }
        CHECK(c, found, "head module %s missing from the model", c->heads[h]);
    }

    /* the pipeline starts warm: unless everything streams, the first
     * streamable module in execution order stays on compute */
    bool any_resident = false;
    for (size_t i = 0; i < n; i++)
        any_resident |= !x->pinned[i] && p->module_device[i] == x->compute;
    for (size_t k = 0; any_resident && k < p->order_count; k++) {
        uint32_t i = p->order[k];
        if (x->pinned[i])
            continue;
        CHECK(c, p->module_device[i] == x->compute,
              "the first streamable module %s is on %s though others stay on compute",
              mgpu_model_module_at(m, i)->name, d->devices[p->module_device[i]].name);
        break;
    }

    /* bytes conserved */
    CHECK(c, sum == x->model_bytes && p->model_bytes == x->model_bytes &&
                 x->model_bytes == c->written_bytes,
          "placed %" PRIu64 ", plan model_bytes %" PRIu64 ", modules %" PRIu64 ", written %" PRIu64,
          sum, p->model_bytes, x->model_bytes, c->written_bytes);
    CHECK(c, p->pinned_bytes == x->pinned_bytes, "pinned_bytes %" PRIu64 ", expected %" PRIu64,
          p->pinned_bytes, x->pinned_bytes);
    uint64_t total_placed = 0;
    for (size_t i = 0; i < d->count; i++) {
        const mgpu_plan_device *pd = &p->device[i];
        const char *name = d->devices[i].name;
        total_placed += pd->placed_bytes;
        CHECK(c, pd->placed_bytes == placed[i] && pd->module_count == count[i] &&
                     pd->pinned_count == pinned_count[i],
              "%s totals %" PRIu64 "/%u/%u disagree with module_device %" PRIu64 "/%u/%u", name,
              pd->placed_bytes, pd->module_count, pd->pinned_count, placed[i], count[i],
              pinned_count[i]);
        CHECK(c, pd->compute == ((int)i == x->compute), "%s compute flag %d", name,
              (int)pd->compute);
        /* capacity: free minus margin, minus the reserve on compute */
        CHECK(c, pd->margin_bytes == margin_of(&d->devices[i]),
              "%s margin %" PRIu64 ", this test assumes %" PRIu64 " (update margin_of)", name,
              pd->margin_bytes, margin_of(&d->devices[i]));
        CHECK(c, pd->capacity_bytes == x->cap[i], "%s capacity %" PRIu64 ", expected %" PRIu64,
              name, pd->capacity_bytes, x->cap[i]);
        CHECK(c, pd->placed_bytes <= pd->capacity_bytes,
              "%s holds %" PRIu64 " bytes, capacity %" PRIu64, name, pd->placed_bytes,
              pd->capacity_bytes);
        /* only devices the string names get bytes (cpu as the default wildcard) */
        bool may = x->listed[i] || ((int)i == mgpu_device_index(d, "cpu") && p->default_wildcard);
        CHECK(c, may || pd->placed_bytes == 0,
              "%s is not in the string but holds %" PRIu64 " bytes", name, pd->placed_bytes);
        if (!pd->compute)
            CHECK(c, pd->streamed_bytes_per_step == pd->placed_bytes,
                  "%s streams %" PRIu64 " per step but holds %" PRIu64, name,
                  pd->streamed_bytes_per_step, pd->placed_bytes);
    }
    CHECK(c, total_placed == x->model_bytes, "device totals add to %" PRIu64 " of %" PRIu64,
          total_placed, x->model_bytes);

    /* quotas are caps; the compute device holds the pinned modules besides */
    if (c->form == FORM_EXPERT) {
        CHECK(c, x->unplaced == 0,
              "planned, though %" PRIu64 " bytes fit no device the string allows", x->unplaced);
        for (size_t k = 0; k < c->entry_count; k++) {
            const gen_entry *e = &c->entries[k];
            if (e->wildcard)
                continue;
            uint64_t q = x->quota[e->device];
            uint64_t pq = p->device[e->device].quota_bytes;
            bool huge = q >= UINT64_C(1) << 63 && pq >= UINT64_C(1) << 63;
            CHECK(c, huge || abs_diff(pq, q) <= 2 + (uint64_t)((double)q * 1e-12),
                  "%s quota %" PRIu64 ", the string says %" PRIu64, d->devices[e->device].name,
                  pq, q);
            uint64_t cap = e->device == x->compute ? max_u64(q, x->pinned_bytes) : q;
            CHECK(c, placed[e->device] <= sat_add(cap, x->largest),
                  "%s holds %" PRIu64 ", over its quota %" PRIu64
                  " by more than a module (%" PRIu64 ")",
                  d->devices[e->device].name, placed[e->device], q, x->largest);
        }
        CHECK(c, p->default_wildcard == x->cpu_default, "default_wildcard %d, expected %d",
              (int)p->default_wildcard, (int)x->cpu_default);
        if (x->cpu_default)
            CHECK(c, has_warning(p, "default"), "the default wildcard was used without a warning");
        /* a number before '*' is accepted, and a remainder beyond it warned about */
        for (size_t k = 0; k < c->entry_count; k++) {
            const gen_entry *e = &c->entries[k];
            if (!e->wildcard || e->kind != MGPU_QUOTA_BYTES)
                continue;
            /* the rest, not the pinned modules a compute wildcard holds anyway */
            uint64_t rest = placed[e->device] - (e->device == x->compute ? x->pinned_bytes : 0);
            if ((double)rest > e->value + (double)x->largest)
                CHECK(c, has_warning(p, d->devices[e->device].name),
                      "%s takes %" PRIu64 " after '%.0f*' without a warning",
                      d->devices[e->device].name, rest, e->value);
        }
    }
    if (c->form == FORM_NORMAL) {
        uint64_t donated = 0;
        for (size_t i = 0; i < d->count; i++)
            if ((int)i != x->compute)
                donated += placed[i];
        CHECK(c, donated <= c->vvram + x->largest,
              "donors hold %" PRIu64 ", more than the %" PRIu64
              " asked plus a module (%" PRIu64 ")",
              donated, c->vvram, x->largest);
    }

    /* the totals are what the string says, to within a module, wherever
     * every device has a module's room to spare */
    bool roomy = x->target_known;
    for (size_t i = 0; roomy && i < d->count; i++)
        roomy = sat_add(x->target[i], x->largest) <= x->cap[i] || x->target[i] == 0;
    stats.totals_checked += roomy;
    stats.over_allocated += x->over_allocated;
    stats.default_wildcard += p->default_wildcard;
    stats.pinned_cases += p->pinned_bytes > 0 && p->pinned_bytes < p->model_bytes;
    stats.streamed += p->device[p->compute].placed_bytes < p->model_bytes;
    if (roomy)
        for (size_t i = 0; i < d->count; i++)
            CHECK(c, abs_diff(placed[i], x->target[i]) <= x->largest,
                  "%s holds %" PRIu64 ", the string says %" PRIu64 " (largest module %" PRIu64 ")",
                  d->devices[i].name, placed[i], x->target[i], x->largest);
}

static bool same_plan(const mgpu_plan *a, const mgpu_plan *b, size_t devices)
{
    if (a->module_count != b->module_count || a->compute != b->compute ||
        a->order_count != b->order_count)
        return false;
    for (size_t i = 0; i < a->module_count; i++)
        if (a->module_device[i] != b->module_device[i] ||
            a->module_pinned[i] != b->module_pinned[i])
            return false;
    for (size_t k = 0; k < a->order_count; k++)
        if (a->order[k] != b->order[k])
            return false;
    for (size_t i = 0; i < devices; i++)
        if (a->device[i].placed_bytes != b->device[i].placed_bytes ||
            a->device[i].module_count != b->device[i].module_count ||
            a->device[i].quota_bytes != b->device[i].quota_bytes)
            return false;
    return a->warning_count == b->warning_count && a->default_wildcard == b->default_wildcard;
}

/* A refusal must say where and must be real: the string is broken, or the
 * devices it allows cannot hold the model. */
static void check_failure(gen_case *c, const mgpu_device_list *d, const mgpu_error *err,
                          const expect *x)
{
    const char *msg = err->message;
    CHECK(c, *msg, "failed with an empty message");
    /* messages show control characters (the generator's tabs) as '?' */
    char shown[sizeof c->alloc];
    snprintf(shown, sizeof shown, "%s", c->alloc);
    for (char *q = shown; *q; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q == 0x7F)
            *q = '?';
    bool names_string = !c->alloc_null && *c->alloc && strstr(msg, shown);
    CHECK(c, names_string || mentions_device(msg, d),
          "message names neither the string nor a device: %s", msg);
    if (c->invalid)
        return;
    CHECK(c, x->compute >= 0, "no compute device expected, but: %s", msg);
    if (c->ratio_over) {
        CHECK(c, strstr(msg, "more than the whole model"), "unexpected refusal: %s", msg);
        return;
    }
    bool capacity = strstr(msg, "have no device") || strstr(msg, "cannot hold") ||
                    strstr(msg, "can hold") || strstr(msg, "must take the remaining") ||
                    strstr(msg, "donors can take only") || strstr(msg, "fits on no donor") ||
                    strstr(msg, "no donor has room");
    CHECK(c, capacity, "a valid string was refused: %s", msg);
    /* Really could not fit: the pinned modules overflow compute, or the
     * devices the string allows hold less than the model. Refusals about
     * bytes are exact; the others come from placing whole modules, and are
     * real only where the devices lack a module's room per device. */
    const uint64_t total = x->model_bytes, cap = x->cap[x->compute];
    bool real = x->pinned_bytes > cap;
    if (c->form == FORM_NORMAL) {
        /* the donors take the bytes to move; compute holds the rest */
        if (strstr(msg, "donors can take only"))
            real |= x->donor_room < x->move;
        else
            real |= sat_add(total - x->move, x->largest) > cap ||
                    x->donor_room < sat_add(x->move, x->largest);
    } else if (c->form != FORM_EXPERT) {
        real |= total > cap;
    } else {
        size_t used = 0;
        for (size_t i = 0; i < d->count; i++)
            used += x->listed[i] || (x->cpu_default && (int)i == mgpu_device_index(d, "cpu"));
        if (strstr(msg, "have no device") || strstr(msg, "must take the remaining"))
            real |= x->unplaced > 0;
        else
            real |= x->allowed < sat_add(total, x->largest * (used ? used : 1));
    }
    CHECK(c, real,
          "refused though the devices can hold it (model %" PRIu64 ", pinned %" PRIu64
          ", compute capacity %" PRIu64 ", expert: string allows %" PRIu64
          ", normal: move %" PRIu64 " to donors with room %" PRIu64 ", largest module %" PRIu64
          "): %s",
          total, x->pinned_bytes, cap, x->allowed, x->move, x->donor_room, x->largest, msg);
}

/* The plan next to what the test expected, for a failing case. */
static void dump_plan(const mgpu_plan *p, const mgpu_device_list *d, const expect *x)
{
    fprintf(stderr, "  model %" PRIu64 " bytes, pinned %" PRIu64 ", largest module %" PRIu64
                    ", default wildcard %d\n",
            p->model_bytes, p->pinned_bytes, x->largest, (int)p->default_wildcard);
    for (size_t i = 0; i < d->count; i++) {
        const mgpu_plan_device *pd = &p->device[i];
        fprintf(stderr,
                "  %-8s capacity %12" PRIu64 " quota %20" PRIu64 " placed %12" PRIu64
                " (%u modules)  expected %12" PRIu64 "%s\n",
                d->devices[i].name, pd->capacity_bytes, pd->quota_bytes, pd->placed_bytes,
                pd->module_count, x->target[i], x->target_known ? "" : " (not predicted)");
    }
    for (size_t i = 0; i < p->warning_count; i++)
        fprintf(stderr, "  warning: %s\n", p->warnings[i]);
}

static bool run_case(int index, size_t *planned, size_t *refused)
{
    gen_case *c = calloc(1, sizeof *c);
    gen_model *gm = calloc(1, sizeof *gm);
    expect *x = calloc(1, sizeof *x);
    mgpu_device_list *devs = calloc(1, sizeof *devs);
    assert_non_null(c);
    assert_non_null(gm);
    assert_non_null(x);
    assert_non_null(devs);
    rng r = {UINT64_C(0x6d677075) * 1000003u + (uint64_t)index};
    c->index = index;
    char file[64];
    snprintf(file, sizeof file, "plan-props-%d.safetensors", index);
    snprintf(c->model_path, sizeof c->model_path, "%s", test_path(file));

    gen_model_tensors(&r, c, gm);
    mgpu_model *model = write_and_open(c, gm);
    uint64_t model_bytes = 0;
    for (size_t i = 0; i < mgpu_model_module_count(model); i++)
        model_bytes += mgpu_model_module_at(model, i)->nbytes;
    assert_true(mgpu_model_module_count(model) <= MAX_TENSORS);
    gen_devices(&r, c, model_bytes, devs);
    gen_alloc(&r, c, devs, model_bytes);
    c->component = rng_chance(&r, 0.2) ? 0 : -1;
    switch (rng_below(&r, 3)) {
    case 0: c->pin_below = 0; break;
    case 1: c->pin_below = MGPU_PLAN_DEFAULT_PIN_BELOW; break;
    default: c->pin_below = module_size(&r, 64 * MIB); break;
    }
    c->reserve = 0;
    compute_expect(c, model, devs, x);
    if (x->compute >= 0 && rng_chance(&r, 0.4))
        c->reserve =
            (uint64_t)((double)devs->devices[x->compute].free_bytes * rng_range(&r, 0, 0.3));
    compute_expect(c, model, devs, x);

    mgpu_plan_request req = {.model = model,
                             .component = c->component,
                             .devices = devs,
                             .alloc = c->alloc_null ? NULL : c->alloc,
                             .compute = *c->compute_override ? c->compute_override : NULL,
                             .reserve_bytes = c->reserve,
                             .pin_below_bytes = c->pin_below};
    mgpu_plan *p = NULL, *again = NULL;
    mgpu_error err = {0}, err2 = {0};
    mgpu_status s = mgpu_plan_create(&req, &p, &err);
    mgpu_status s2 = mgpu_plan_create(&req, &again, &err2);
    if (s != s2 || (s != MGPU_OK && strcmp(err.message, err2.message) != 0)) {
        case_fail(c, __LINE__, "determinism", "two runs disagree: '%s' / '%s'", err.message,
                  err2.message);
    } else if (s == MGPU_OK) {
        (*planned)++;
        if (c->invalid)
            case_fail(c, __LINE__, "refusal", "a broken string was accepted");
        else if (!same_plan(p, again, devs->count))
            case_fail(c, __LINE__, "determinism", "a second plan from the same inputs differs");
        else
            check_plan(c, model, devs, p, x);
    } else {
        (*refused)++;
        assert_null(p);
        if (getenv("MGPU_PLAN_VERBOSE"))
            fprintf(stderr, "[case %d] refused (form %d): %s\n", index, (int)c->form, err.message);
        check_failure(c, devs, &err, x);
    }
    if (c->failed && p)
        dump_plan(p, devs, x);
    else if (c->failed)
        for (size_t i = 0; i < devs->count; i++)
            fprintf(stderr, "  %-8s capacity %20" PRIu64 "  expected %12" PRIu64 "%s\n",
                    devs->devices[i].name, x->cap[i], x->target[i],
                    x->target_known ? "" : " (not predicted)");
    mgpu_plan_free(p);
    mgpu_plan_free(again);
    mgpu_model_close(model);
    /* MGPU_PLAN_KEEP=1 keeps a failing case's model for `mgpu plan` */
    if (c->failed && getenv("MGPU_PLAN_KEEP"))
        fprintf(stderr, "  model kept: %s\n", c->model_path);
    else
        unlink(c->model_path);
    bool failed = c->failed;
    free(c);
    free(gm);
    free(x);
    free(devs);
    return !failed;
}

static void test_random_plans(void **state)
{
    (void)state;
    size_t planned = 0, refused = 0;
    const char *only = getenv("MGPU_PLAN_CASE");
    if (only && *only) {
        if (!run_case(atoi(only), &planned, &refused))
            fail_msg("case %s failed (details above)", only);
        return;
    }
    /* every case runs, so one report shows all the failing ones */
    /* MGPU_PLAN_CASES=N runs more (or fewer) cases than the default */
    const char *many = getenv("MGPU_PLAN_CASES");
    int cases = many && atoi(many) > 0 ? atoi(many) : CASES;
    char failing[256] = "";
    size_t failures = 0;
    for (int i = 0; i < cases; i++)
        if (!run_case(i, &planned, &refused) && failures++ < 20)
            append(failing, sizeof failing, " %d", i);
    printf("[ plan ] %d cases: %zu planned, %zu refused, %zu failed; of the plans: %zu spill off "
           "compute, %zu have totals checked, %zu pin some modules, %zu over-allocate, %zu use "
           "the default wildcard\n",
           cases, planned, refused, failures, stats.streamed, stats.totals_checked,
           stats.pinned_cases, stats.over_allocated, stats.default_wildcard);
    if (failures)
        fail_msg("%zu cases failed:%s (rerun one with MGPU_PLAN_CASE=N)", failures, failing);
    /* the generator should exercise both sides */
    assert_true(planned > (size_t)cases / 3);
    assert_true(refused > (size_t)cases / 20);
}

/* ---- the smallest cases that broke a property, kept as named tests ------ */

typedef struct small_module {
    const char *name; /* the weight is NAME.weight, f32 [rows, cols] */
    uint64_t rows, cols;
} small_module;

static mgpu_model *small_model(const char *file, const small_module *mods, size_t n)
{
    gen_case c = {0};
    gen_model *m = calloc(1, sizeof *m);
    assert_non_null(m);
    snprintf(c.model_path, sizeof c.model_path, "%s", test_path(file));
    for (size_t i = 0; i < n; i++) {
        gen_tensor *t = &m->tensors[m->tensor_count++];
        snprintf(t->name, sizeof t->name, "%s.weight", mods[i].name);
        t->ndim = 2;
        t->shape[0] = mods[i].rows;
        t->shape[1] = mods[i].cols;
    }
    mgpu_model *model = write_and_open(&c, m);
    unlink(c.model_path); /* the mapping stays valid */
    free(m);
    return model;
}

/* A named case: the model, the inventory and what went wrong, so that each
 * test frees everything before it reports (cmocka's failure jumps out). */
typedef struct small_case {
    mgpu_model *model;
    mgpu_device_list devs;
    mgpu_plan *plan;
    char problem[600];
} small_case;

static bool small_plan(small_case *k, const char *spec, const char *alloc, uint64_t pin_below)
{
    mgpu_error err = {0};
    mgpu_plan_free(k->plan);
    k->plan = NULL;
    if (mgpu_devices_simulate(spec, &k->devs, &err) != MGPU_OK)
        fail_msg("simulate: %s", err.message);
    mgpu_plan_request req = {.model = k->model, .component = -1, .devices = &k->devs,
                             .alloc = alloc, .pin_below_bytes = pin_below};
    if (mgpu_plan_create(&req, &k->plan, &err) != MGPU_OK) {
        if (!*k->problem)
            snprintf(k->problem, sizeof k->problem, "'%s' on '%s': %s", alloc, spec, err.message);
        return false;
    }
    return true;
}

static uint64_t placed_on(const small_case *k, const char *name)
{
    return k->plan->device[mgpu_device_index(&k->devs, name)].placed_bytes;
}

/* Unless the case already failed, records `what` when `ok` is false. */
static bool small_expect(small_case *k, bool ok, const char *what)
{
    if (!ok && !*k->problem)
        snprintf(k->problem, sizeof k->problem, "%s", what);
    return ok;
}

static void small_finish(small_case *k)
{
    char problem[sizeof k->problem];
    memcpy(problem, k->problem, sizeof problem);
    mgpu_plan_free(k->plan);
    mgpu_model_close(k->model);
    free(k);
    if (*problem)
        fail_msg("%s", problem);
}

static const small_module ten_blocks[] = {
    {"blocks.0.a", 2560, 1024}, {"blocks.1.a", 2560, 1024}, {"blocks.2.a", 2560, 1024},
    {"blocks.3.a", 2560, 1024}, {"blocks.4.a", 2560, 1024}, {"blocks.5.a", 2560, 1024},
    {"blocks.6.a", 2560, 1024}, {"blocks.7.a", 2560, 1024}, {"blocks.8.a", 2560, 1024},
    {"blocks.9.a", 2560, 1024},
}; /* 10 modules of 10 MiB */

static small_case *small_start(const char *file, const small_module *mods, size_t n)
{
    small_case *k = calloc(1, sizeof *k);
    assert_non_null(k);
    k->model = small_model(file, mods, n);
    return k;
}

/* A donor whose quota is clipped to its capacity is filled to the byte;
 * placing whole modules can overshoot that by one, and the module must then
 * stay on compute (the wildcard, with gigabytes free), not fail the plan. */
static void test_donor_at_capacity(void **state)
{
    (void)state;
    small_case *k = small_start("donor-cap.safetensors", ten_blocks, 10);
    /* cuda:1 can hold 282 - 256 (margin) = 26 MiB: two and a half modules */
    if (small_plan(k, "cuda:0=8gib,cuda:1=1gib/282mib", "cuda:1,1gb;cuda:0,*", 0))
        small_expect(k, placed_on(k, "cuda:1") <= 26 * MIB, "cuda:1 over capacity");
    /* normal mode: the next donor (cpu, 60 GiB free) or compute takes it */
    if (small_plan(k, "cuda:0=8gib,cuda:1=1gib/282mib,cpu=64gib", "#cuda:0;26mb;cuda:1,cpu", 0))
        small_expect(k, placed_on(k, "cuda:1") <= 26 * MIB, "cuda:1 over capacity");
    small_finish(k);
}

/* Ratio weights share out the whole model: 1%/1%/1% of 104857600 bytes
 * (not a multiple of 3) must leave no byte without a device, and must not
 * send a module to a cpu the string does not name. */
static void test_ratio_weights_cover_the_model(void **state)
{
    (void)state;
    small_case *k = small_start("ratio-thirds.safetensors", ten_blocks, 10);
    if (small_plan(k, "cuda:0=8gib,cuda:1=8gib,cpu=64gib", "cuda:0,1%;cuda:1,1%;cpu,1%", 0) &&
        small_plan(k, "cuda:0=8gib,cuda:1=8gib,cuda:2=8gib,cpu=64gib",
                   "cuda:0,1%;cuda:1,1%;cuda:2,1%", 0)) {
        small_expect(k, !k->plan->default_wildcard, "the cpu became the default wildcard");
        small_expect(k, placed_on(k, "cpu") == 0, "the cpu, not in the string, holds a module");
    }
    small_finish(k);
}

/* Pinned modules sit on compute whatever the string says, so quotas only
 * need to cover the rest: a 4 MiB head pinned to cuda:0 plus 100 MiB split
 * 60/40 by the string has every byte placed. */
static void test_pinned_bytes_need_no_quota(void **state)
{
    (void)state;
    small_module mods[11];
    mods[0] = (small_module){"head_in", 1024, 1024};
    memcpy(mods + 1, ten_blocks, sizeof ten_blocks);
    small_case *k = small_start("pinned-quota.safetensors", mods, 11);
    if (small_plan(k, "cuda:0=8gib,cuda:1=8gib,cpu=64gib", "cuda:1,60mb;cpu,40mb", 5 * MIB)) {
        small_expect(k, placed_on(k, "cuda:0") == 4 * MIB, "cuda:0 should hold the head");
        small_expect(k, placed_on(k, "cuda:1") == 60 * MIB, "cuda:1 should hold 60 MiB");
        small_expect(k, placed_on(k, "cpu") == 40 * MIB, "cpu should hold 40 MiB");
    }
    /* every module pinned: a full wildcard device has nothing to take */
    if (small_plan(k, "cuda:0=8gib,cuda:1=1gib/200mib", "cuda:1,*", 64 * MIB))
        small_expect(k, placed_on(k, "cuda:0") == 104 * MIB, "cuda:0 should hold everything");
    small_finish(k);
}

/* Over-allocation fills devices in the written order, after the pinned
 * modules took their place on compute: 80 MiB of small modules pinned to
 * cuda:0 leave 100 MiB, all of it for cuda:2, written first. */
static void test_pinned_then_written_order(void **state)
{
    (void)state;
    small_module mods[30];
    static const char *const names[] = {"embed0",  "embed1",  "embed2",  "embed3",  "embed4",
                                        "embed5",  "embed6",  "embed7",  "embed8",  "embed9",
                                        "embed10", "embed11", "embed12", "embed13", "embed14",
                                        "embed15", "embed16", "embed17", "embed18", "embed19"};
    for (size_t i = 0; i < 20; i++)
        mods[i] = (small_module){names[i], 1024, 1024}; /* 4 MiB each, pinned */
    memcpy(mods + 20, ten_blocks, sizeof ten_blocks);
    small_case *k = small_start("pinned-order.safetensors", mods, 30);
    if (small_plan(k, "cuda:0=8gib,cuda:1=8gib,cuda:2=8gib,cpu=64gib", "cuda:2,100mb;cuda:1,100mb",
                   5 * MIB)) {
        small_expect(k, placed_on(k, "cuda:0") == 80 * MIB, "cuda:0 should hold the pinned 80 MiB");
        small_expect(k, placed_on(k, "cuda:2") == 100 * MIB,
                     "cuda:2, written first, should hold 100 MiB");
    }
    small_finish(k);
}

/* Rule 5: the first streamable module stays resident unless everything
 * streams, so the pipeline starts warm. Moving 11 MiB of 1+10+10+10 MiB
 * must not stream the first (1 MiB) module while two others stay. */
static void test_first_module_stays_resident(void **state)
{
    (void)state;
    static const small_module mods[] = {
        {"blocks.0.a", 256, 1024}, {"blocks.1.a", 2560, 1024}, {"blocks.2.a", 2560, 1024},
        {"blocks.3.a", 2560, 1024}};
    small_case *k = small_start("warm-start.safetensors", mods, 4);
    if (small_plan(k, "cuda:0=8gib,cpu=64gib", "#cuda:0;11mb;cpu", 0))
        small_expect(k, k->plan->module_device[k->plan->order[0]] ==
                            mgpu_device_index(&k->devs, "cuda:0"),
                     "blocks.0.a streams while blocks.1.a and blocks.2.a stay on cuda:0");
    small_finish(k);
}

/* Totals are exact to within one module on every device, the wildcard
 * included: four 2 MiB quotas over 3 MiB modules must not take the
 * wildcard's share down by more than one module (cpu should hold 22 MiB). */
static void test_wildcard_total_within_a_module(void **state)
{
    (void)state;
    small_module mods[10];
    for (size_t i = 0; i < 10; i++)
        mods[i] = (small_module){ten_blocks[i].name, 768, 1024}; /* 3 MiB */
    small_case *k = small_start("wildcard-total.safetensors", mods, 10);
    if (small_plan(k, "cuda:0=8gib,cuda:1=8gib,cuda:2=8gib,cuda:3=8gib,cuda:4=8gib,cpu=64gib",
                   "cuda:1,2mb;cuda:2,2mb;cuda:3,2mb;cuda:4,2mb;cpu,*", 0))
        small_expect(k, abs_diff(placed_on(k, "cpu"), 22 * MIB) <= 3 * MIB,
                     "cpu holds more than a module away from its 22 MiB");
    small_finish(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_plans),
        cmocka_unit_test(test_donor_at_capacity),
        cmocka_unit_test(test_ratio_weights_cover_the_model),
        cmocka_unit_test(test_pinned_bytes_need_no_quota),
        cmocka_unit_test(test_pinned_then_written_order),
        cmocka_unit_test(test_first_module_stays_resident),
        cmocka_unit_test(test_wildcard_total_within_a_module),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
