/* Placement plans: the DisTorch allocation language (see docs/allocation.md)
 * parsed and turned into a deterministic assignment of every module of a
 * model to a device, computed before anything loads. */
#ifndef MGPU_PLAN_H
#define MGPU_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mgpu/device.h"
#include "mgpu/model.h"
#include "mgpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mgpu_quota_kind {
    MGPU_QUOTA_NONE = 0, /* a bare '*' */
    MGPU_QUOTA_BYTES,    /* "2.5gb" */
    MGPU_QUOTA_RATIO,    /* "25%" */
    MGPU_QUOTA_FRACTION, /* "0.5": a share of the device's total memory */
} mgpu_quota_kind;

typedef struct mgpu_alloc_entry {
    char device[MGPU_DEVICE_NAME_BYTES];
    mgpu_quota_kind kind;
    double value; /* bytes, percent weight, or fraction, by kind */
    bool wildcard;
    size_t column; /* offset of the entry in the string, counted from 0 */
} mgpu_alloc_entry;

typedef struct mgpu_alloc {
    mgpu_alloc_entry entries[MGPU_MAX_DEVICES]; /* expert part, in written order */
    size_t entry_count;
    mgpu_quota_kind mode;                     /* of the expert entries; NONE if none */
    char compute[MGPU_DEVICE_NAME_BYTES];     /* after '#'; "" when absent */
    bool normal;                              /* "#COMPUTE;GB;DONORS" given */
    uint64_t virtual_vram_bytes;              /* normal mode: bytes moved off compute */
    char donors[MGPU_MAX_DEVICES][MGPU_DEVICE_NAME_BYTES];
    size_t donor_count;
} mgpu_alloc;

/* Parses without looking at devices. Errors quote the string and give the
 * column (from 0) of the offending token. */
mgpu_status mgpu_alloc_parse(const char *text, mgpu_alloc *out, mgpu_error *err);

typedef struct mgpu_plan_request {
    const mgpu_model *model;
    int component;                   /* index, or -1 for every component */
    const mgpu_device_list *devices;
    const char *alloc;               /* NULL or "": everything on the compute device */
    const char *compute;             /* overrides the string's #COMPUTE; NULL: the string's,
                                        else the first GPU, else cpu */
    uint64_t reserve_bytes;          /* activation reserve on the compute device */
    uint64_t pin_below_bytes;        /* modules smaller than this stay on compute */
} mgpu_plan_request;

/* Modules smaller than this are not worth a copy: at 25 GB/s, 256 KiB moves
 * in about 10 us, the order of one copy's fixed cost. */
enum { MGPU_PLAN_DEFAULT_PIN_BELOW = 256 * 1024 };

typedef struct mgpu_plan_device {
    int device; /* index into the device list */
    bool compute;
    bool listed;              /* named in the string (or a donor in normal mode) */
    uint64_t capacity_bytes;  /* free - margin (- reserve on compute): what it can hold */
    uint64_t margin_bytes;
    uint64_t quota_bytes;     /* target from the string; UINT64_MAX when unbounded */
    uint64_t placed_bytes;
    uint32_t module_count;
    uint32_t pinned_count;
    double copy_bytes_per_s;          /* to the compute device; 0 unknown */
    uint64_t streamed_bytes_per_step; /* bytes copied to compute per forward pass */
    double copy_seconds_per_step;     /* NAN when the bandwidth is unknown */
} mgpu_plan_device;

enum { MGPU_PLAN_MAX_WARNINGS = 8 };

typedef struct mgpu_plan {
    const mgpu_model *model;
    const mgpu_device_list *devices;
    int component;
    int compute; /* index into devices[] of this plan */
    mgpu_alloc alloc;
    mgpu_plan_device device[MGPU_MAX_DEVICES]; /* parallel to the device list */
    size_t module_count;          /* modules of the model (all components) */
    int *module_device;           /* per model module: device index, -1 when not planned */
    bool *module_pinned;
    uint32_t *order;              /* planned modules in execution order */
    size_t order_count;
    uint64_t model_bytes;         /* bytes of the planned modules */
    uint64_t pinned_bytes;
    uint64_t reserve_bytes;
    bool default_wildcard;        /* cpu took the remainder without a '*' */
    size_t warning_count;
    char warnings[MGPU_PLAN_MAX_WARNINGS][256];
} mgpu_plan;

mgpu_status mgpu_plan_create(const mgpu_plan_request *request, mgpu_plan **out, mgpu_error *err);
void mgpu_plan_free(mgpu_plan *plan);

#ifdef __cplusplus
}
#endif
#endif
