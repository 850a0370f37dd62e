/* The placement planner. Every rule of docs/allocation.md is here, in the
 * order it applies: capacities, pinned heads, quotas as caps filled in the
 * written order, the wildcard, and the overlap-aware choice of which modules
 * stream. Integer bytes throughout, no hash tables, no clock: the same
 * model, string and devices always give the same plan. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "mgpu/plan.h"

static const double GIB = 1073741824.0;

/* Headroom left on every device: drivers, other processes and fragmentation
 * need some, and plans that use 100% of free memory fail at run time. */
static uint64_t margin_for(const mgpu_device *d)
{
    switch (d->kind) {
    case MGPU_DEVICE_CUDA: {
        uint64_t m = d->total_bytes / 50; /* 2% */
        return m > (UINT64_C(256) << 20) ? m : (UINT64_C(256) << 20);
    }
    case MGPU_DEVICE_CPU: {
        uint64_t m = d->total_bytes / 20; /* 5% */
        return m > (UINT64_C(1) << 30) ? m : (UINT64_C(1) << 30);
    }
    default: return 0;
    }
}

static void warn(mgpu_plan *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void warn(mgpu_plan *p, const char *fmt, ...)
{
    if (p->warning_count == MGPU_PLAN_MAX_WARNINGS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->warnings[p->warning_count++], sizeof p->warnings[0], fmt, ap);
    va_end(ap);
}

static double gib(uint64_t bytes)
{
    return (double)bytes / GIB;
}

static mgpu_status unknown_device(const mgpu_plan_request *r, const char *name, mgpu_error *err)
{
    char names[512];
    mgpu_device_list_names(r->devices, names, sizeof names);
    return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "allocation '%s': unknown device '%s'; devices present: %s",
                          r->alloc ? r->alloc : "", name, names);
}

/* Execution order: input heads, then blocks in order, then other loose
 * modules, then output heads. */
static int order_group(const mgpu_model_module *m)
{
    if (m->role == MGPU_ROLE_INPUT)
        return 0;
    if (m->role == MGPU_ROLE_OUTPUT)
        return 3;
    return m->block >= 0 ? 1 : 2;
}

typedef struct order_key {
    uint32_t module;
    int group;
    int32_t block;
} order_key;

static int compare_order(const void *a, const void *b)
{
    const order_key *x = a, *y = b;
    if (x->group != y->group)
        return x->group < y->group ? -1 : 1;
    if (x->group == 1 && x->block != y->block)
        return x->block < y->block ? -1 : 1;
    return x->module < y->module ? -1 : x->module > y->module;
}

static mgpu_status build_order(mgpu_plan *p, const mgpu_plan_request *r, mgpu_error *err)
{
    size_t n = p->module_count ? p->module_count : 1;
    p->order = malloc(n * sizeof *p->order);
    order_key *keys = malloc(n * sizeof *keys);
    if (!p->order || !keys) {
        free(keys);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    size_t count = 0;
    for (size_t i = 0; i < p->module_count; i++) {
        const mgpu_model_module *m = mgpu_model_module_at(r->model, i);
        if (r->component < 0 || m->component == (uint32_t)r->component)
            keys[count++] = (order_key){(uint32_t)i, order_group(m), m->block};
    }
    /* The comparison is total (ties broken by module index), so qsort's
     * instability cannot change the result. */
    qsort(keys, count, sizeof *keys, compare_order);
    for (size_t k = 0; k < count; k++)
        p->order[k] = keys[k].module;
    p->order_count = count;
    free(keys);
    return MGPU_OK;
}

/* Quota'd bytes, in the written order, capped by quota and real capacity.
 * Pinned bytes are already on the compute device and come out of its
 * share first; what is filled here is the streamable rest. Returns the bytes
 * left for the wildcard. */
static uint64_t fill_entries(mgpu_plan *p, const mgpu_plan_request *r, uint64_t *target)
{
    const mgpu_alloc *a = &p->alloc;
    const uint64_t total = p->model_bytes;
    double ratio_sum = 0.0, ratio_seen = 0.0;
    bool has_wildcard = false;
    for (size_t i = 0; i < a->entry_count; i++) {
        if (a->entries[i].kind == MGPU_QUOTA_RATIO && !a->entries[i].wildcard)
            ratio_sum += a->entries[i].value;
        has_wildcard |= a->entries[i].wildcard;
    }
    uint64_t remaining = total - p->pinned_bytes;
    for (size_t i = 0; i < a->entry_count; i++) {
        const mgpu_alloc_entry *e = &a->entries[i];
        int d = mgpu_device_index(r->devices, e->device);
        if (e->wildcard)
            continue; /* takes the rest, after everyone else */
        double want;
        switch (e->kind) {
        case MGPU_QUOTA_BYTES: want = e->value; break;
        case MGPU_QUOTA_RATIO:
            if (has_wildcard) { /* with a wildcard: percentages of the model */
                want = (double)total * e->value / 100.0;
            } else if (ratio_sum > 0) {
                /* weights: rounded cumulatively so the shares add up to the
                 * model exactly, leaving no byte without a device */
                double before = (double)llround((double)total * ratio_seen / ratio_sum);
                ratio_seen += e->value;
                want = (double)llround((double)total * ratio_seen / ratio_sum) - before;
            } else {
                want = 0.0;
            }
            break;
        case MGPU_QUOTA_FRACTION:
            want = e->value * (double)r->devices->devices[d].total_bytes;
            break;
        default: want = 0.0; break;
        }
        uint64_t quota = want >= 9.2e18 ? UINT64_MAX : (uint64_t)llround(want);
        p->device[d].quota_bytes = quota;
        uint64_t have = target[d]; /* the pinned bytes, on the compute device */
        uint64_t cap = p->device[d].capacity_bytes > have ? p->device[d].capacity_bytes - have : 0;
        uint64_t want_more = quota > have ? quota - have : 0;
        uint64_t t = want_more < cap ? want_more : cap;
        if (t > remaining)
            t = remaining;
        if (want_more > cap && remaining > cap)
            warn(p, "%s can hold %.2f GiB, less than its %.2f GiB quota (free memory minus margin%s)",
                 e->device, gib(p->device[d].capacity_bytes), gib(quota),
                 p->compute == d ? " and reserve" : "");
        target[d] += t;
        remaining -= t;
    }
    return remaining;
}

/* "1.25 GiB", "12.0 MiB" or "300 bytes": shortfalls can be tiny. */
static void format_size(uint64_t bytes, char *buf, size_t size)
{
    if (bytes >= (UINT64_C(1) << 30) / 10)
        snprintf(buf, size, "%.2f GiB", gib(bytes));
    else if (bytes >= (UINT64_C(1) << 20) / 10)
        snprintf(buf, size, "%.1f MiB", (double)bytes / 1048576.0);
    else
        snprintf(buf, size, "%" PRIu64 " bytes", bytes);
}

/* Splits model bytes into per-device targets. */
static mgpu_status compute_targets(mgpu_plan *p, const mgpu_plan_request *r, uint64_t *target,
                                   mgpu_error *err)
{
    const mgpu_alloc *a = &p->alloc;
    const uint64_t total = p->model_bytes;
    const char *text = r->alloc ? r->alloc : "";
    for (size_t i = 0; i < r->devices->count; i++)
        p->device[i].quota_bytes = 0;
    if (a->normal) {
        uint64_t move = a->virtual_vram_bytes;
        uint64_t movable = total - p->pinned_bytes;
        if (move > movable) {
            warn(p, "only %.2f GiB can move off %s (%.2f GiB of pinned modules stay), not %.2f",
                 gib(movable), a->compute, gib(p->pinned_bytes), gib(move));
            move = movable;
        }
        uint64_t left = move;
        for (size_t i = 0; i < a->donor_count; i++) {
            int d = mgpu_device_index(r->devices, a->donors[i]);
            uint64_t cap = p->device[d].capacity_bytes;
            uint64_t t = left < cap ? left : cap;
            target[d] += t;
            p->device[d].quota_bytes = move;
            p->device[d].listed = true;
            left -= t;
        }
        if (left > 0) {
            char caps[512] = "";
            size_t used = 0;
            for (size_t i = 0; i < a->donor_count && used < sizeof caps; i++) {
                int d = mgpu_device_index(r->devices, a->donors[i]);
                used += (size_t)snprintf(caps + used, sizeof caps - used, "%s%s %.2f GiB",
                                         i ? ", " : "", a->donors[i],
                                         gib(p->device[d].capacity_bytes));
            }
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                                  "allocation '%s': the donors can take only %.2f of the %.2f GiB "
                                  "to move (%s); add a donor or move less",
                                  text, gib(move - left), gib(move), caps);
        }
        target[p->compute] += total - move;
        return MGPU_OK;
    }
    if (a->entry_count == 0) {
        target[p->compute] = total;
        return MGPU_OK;
    }
    target[p->compute] = p->pinned_bytes;
    double pct = 0.0;
    int wildcard = -1;
    for (size_t i = 0; i < a->entry_count; i++) {
        int d = mgpu_device_index(r->devices, a->entries[i].device);
        p->device[d].listed = true;
        if (a->entries[i].wildcard)
            wildcard = d;
        else if (a->entries[i].kind == MGPU_QUOTA_RATIO)
            pct += a->entries[i].value;
    }
    if (wildcard >= 0 && a->mode == MGPU_QUOTA_RATIO && pct > 100.0 + 1e-9)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "allocation '%s': the ratios add up to %.4g%%, more than the whole "
                              "model, and a '*' entry is waiting for the rest",
                              text, pct);
    uint64_t rest = fill_entries(p, r, target);
    char rest_text[32];
    format_size(rest, rest_text, sizeof rest_text);
    if (wildcard < 0) {
        /* The default wildcard is the CPU, unless the string caps it. */
        int cpu = mgpu_device_index(r->devices, "cpu");
        bool cpu_capped = cpu >= 0 && p->device[cpu].listed;
        if (rest > 0 && (cpu < 0 || cpu_capped))
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                                  "allocation '%s': %s have no device (the quotas and pinned "
                                  "modules cover %.2f of %.2f GiB); add '*' to an entry or raise "
                                  "a quota",
                                  text, rest_text, gib(total - rest), gib(total));
        if (rest > 0) {
            wildcard = cpu;
            p->default_wildcard = true;
        }
    }
    if (rest > 0) {
        uint64_t cap = p->device[wildcard].capacity_bytes - target[wildcard];
        if (p->device[wildcard].capacity_bytes < target[wildcard])
            cap = 0;
        if (rest > cap)
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                                  "allocation '%s': %s must take the remaining %s but can "
                                  "hold %.2f GiB more; raise other quotas or add a device",
                                  text, r->devices->devices[wildcard].name, rest_text, gib(cap));
        target[wildcard] += rest;
        for (size_t i = 0; i < a->entry_count; i++) {
            const mgpu_alloc_entry *e = &a->entries[i];
            if (e->wildcard && e->kind != MGPU_QUOTA_NONE) {
                double said = e->kind == MGPU_QUOTA_BYTES ? e->value / GIB
                              : e->kind == MGPU_QUOTA_FRACTION
                                  ? e->value * (double)r->devices->devices[wildcard].total_bytes / GIB
                                  : e->value * gib(total) / 100.0;
                if (gib(target[wildcard]) > said + 1e-9)
                    warn(p, "%s takes the rest, %.2f GiB, more than the %.2f GiB written before "
                            "its '*'",
                         e->device, gib(target[wildcard]), said);
            }
        }
        if (p->default_wildcard)
            warn(p, "cpu takes the remaining %s (the default wildcard: no entry has '*')",
                 rest_text);
        p->device[wildcard].quota_bytes = UINT64_MAX;
    }
    return MGPU_OK;
}

static mgpu_status check_compute_fits(mgpu_plan *p, const mgpu_plan_request *r, uint64_t need,
                                      mgpu_error *err)
{
    const mgpu_plan_device *c = &p->device[p->compute];
    if (need <= c->capacity_bytes)
        return MGPU_OK;
    const mgpu_device *d = &r->devices->devices[p->compute];
    uint64_t over = need - c->capacity_bytes;
    char hint[160];
    if (p->alloc.normal) {
        double more = ceil((gib(p->alloc.virtual_vram_bytes) + gib(over)) * 10.0) / 10.0;
        snprintf(hint, sizeof hint, "for example '#%s;%.1f;%s'", d->name, more,
                 p->alloc.donor_count ? p->alloc.donors[0] : "cpu");
    } else {
        snprintf(hint, sizeof hint, "for example '#%s;%.1f;cpu'", d->name,
                 ceil(gib(p->model_bytes - (c->capacity_bytes > p->pinned_bytes
                                                ? c->capacity_bytes
                                                : p->pinned_bytes)) * 10.0 + 0.5) / 10.0);
    }
    return mgpu_error_set(
        err, MGPU_ERR_ARGUMENT,
        "allocation '%s': %s cannot hold its share: %.2f GiB of weights%s need %.2f GiB but %.2f "
        "GiB are free (%.2f GiB kept as margin%s); move at least %.2f GiB more to a donor, %s",
        r->alloc ? r->alloc : "", d->name, gib(need),
        p->reserve_bytes ? " plus the activation reserve" : "", gib(need + p->reserve_bytes),
        gib(d->free_bytes), gib(c->margin_bytes), p->reserve_bytes ? ", reserve counted" : "",
        gib(over), hint);
}

/* Chooses which streamable modules leave the compute device so that they
 * are spread evenly through the execution order: a module streams when the
 * bytes streamed so far, including it, stay within the target share of the
 * bytes seen so far. The first module stays resident unless everything
 * streams, so the pipeline starts warm, and every streamed module has
 * resident compute before it to hide its copy. */
static void choose_streamed(mgpu_plan *p, const mgpu_plan_request *r, uint64_t offload,
                            bool *streamed)
{
    uint64_t streamable = p->model_bytes - p->pinned_bytes;
    if (streamable == 0 || offload == 0)
        return;
    double share = (double)offload / (double)streamable;
    uint64_t seen = 0, taken = 0;
    for (size_t k = 0; k < p->order_count; k++) {
        uint32_t i = p->order[k];
        if (p->module_pinned[i])
            continue;
        uint64_t size = mgpu_model_module_at(r->model, i)->nbytes;
        seen += size;
        /* a relative tolerance only: exact shares (50% of equal modules)
         * must not fall to rounding, and a tiny first module must not
         * stream on an absolute slack */
        if ((double)(taken + size) <= (double)seen * share * (1.0 + 1e-12) &&
            taken + size <= offload) {
            streamed[i] = true;
            taken += size;
        }
    }
    /* Rounding can leave up to a module short: take the latest resident
     * modules that bring the total closer to the target, never the first
     * streamable one (the pipeline starts warm). */
    size_t first = 0;
    while (first < p->order_count && p->module_pinned[p->order[first]])
        first++;
    for (size_t k = p->order_count; k-- > first + 1 && taken < offload;) {
        uint32_t i = p->order[k];
        if (p->module_pinned[i] || streamed[i])
            continue;
        uint64_t size = mgpu_model_module_at(r->model, i)->nbytes;
        uint64_t gap = offload - taken;
        if (size <= gap || size - gap < gap) {
            streamed[i] = true;
            taken += size;
        }
    }
}

/* Gives each streamed module, in execution order, to the donor furthest
 * below its target (by share of its target) among those it does not push
 * more than half a module past their target, so every donor's modules are
 * spread through the pass and each lands within half a module of its
 * target where sizes allow (and the quota'd devices together within half a
 * module of their sum); ties go to the device written first. A module
 * that fits on no donor with a target goes to the one it overshoots least,
 * then to any other listed device with room, and stays on the compute
 * device when that still has room; only then is the plan refused. */
static mgpu_status assign_donors(mgpu_plan *p, const mgpu_plan_request *r, const uint64_t *target,
                                 const bool *streamed, mgpu_error *err)
{
    size_t n = r->devices->count;
    int donors[MGPU_MAX_DEVICES], spare[MGPU_MAX_DEVICES];
    size_t nd = 0, ns = 0;
    bool seen[MGPU_MAX_DEVICES] = {false};
    seen[p->compute] = true;
    /* written order: expert entries, then normal-mode donors */
    for (size_t i = 0; i < p->alloc.entry_count + p->alloc.donor_count; i++) {
        const char *name = i < p->alloc.entry_count ? p->alloc.entries[i].device
                                                    : p->alloc.donors[i - p->alloc.entry_count];
        int d = mgpu_device_index(r->devices, name);
        if (seen[d])
            continue;
        seen[d] = true;
        if (target[d] > 0)
            donors[nd++] = d;
        else
            spare[ns++] = d;
    }
    for (size_t d = 0; d < n; d++) /* the default wildcard */
        if (!seen[d] && target[d] > 0) {
            seen[d] = true;
            donors[nd++] = (int)d;
        }
    uint64_t assigned[MGPU_MAX_DEVICES] = {0};
    /* Devices with a quota (all but the wildcard) are kept together within
     * half a module of their summed targets, so their roundings cannot pile
     * up on the wildcard. */
    uint64_t capped_target = 0, capped_assigned = 0;
    for (size_t j = 0; j < nd; j++)
        if (p->device[donors[j]].quota_bytes != UINT64_MAX)
            capped_target += target[donors[j]];
    uint64_t resident = 0;
    for (size_t k = 0; k < p->order_count; k++)
        if (!streamed[p->order[k]])
            resident += mgpu_model_module_at(r->model, p->order[k])->nbytes;
    for (size_t k = 0; k < p->order_count; k++) {
        uint32_t i = p->order[k];
        if (!streamed[i])
            continue;
        uint64_t size = mgpu_model_module_at(r->model, i)->nbytes;
        int best = -1;
        double best_score = -INFINITY;
        for (int pass = 0; pass < 2 && best < 0; pass++)
            for (size_t j = 0; j < nd; j++) {
                int d = donors[j];
                if (assigned[d] + size > p->device[d].capacity_bytes)
                    continue;
                double left = (double)target[d] - (double)assigned[d];
                /* pass 0: within half a module of the target, most behind
                 * first; pass 1: the least overshoot */
                bool capped = p->device[d].quota_bytes != UINT64_MAX;
                if (pass == 0 &&
                    (left < (double)size / 2.0 ||
                     (capped && (double)(capped_assigned + size) >
                                    (double)capped_target + (double)size / 2.0)))
                    continue;
                double score = pass == 0 ? left / (double)target[d] : left;
                if (score > best_score) {
                    best_score = score;
                    best = d;
                }
            }
        for (size_t j = 0; j < ns && best < 0; j++)
            if (assigned[spare[j]] + size <= p->device[spare[j]].capacity_bytes)
                best = spare[j];
        if (best < 0 && resident + size <= p->device[p->compute].capacity_bytes) {
            resident += size;
            p->module_device[i] = p->compute;
            continue;
        }
        if (best < 0)
            return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                                  "allocation '%s': module '%s' (%.2f MiB) fits on no device",
                                  r->alloc ? r->alloc : "", mgpu_model_module_at(r->model, i)->name,
                                  (double)size / 1048576.0);
        p->module_device[i] = best;
        assigned[best] += size;
        if (p->device[best].quota_bytes != UINT64_MAX)
            capped_assigned += size;
    }
    return MGPU_OK;
}

mgpu_status mgpu_plan_create(const mgpu_plan_request *r, mgpu_plan **out, mgpu_error *err)
{
    *out = NULL;
    if (!r || !r->model || !r->devices)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "plan: a model and devices are required");
    if (r->component >= (int)mgpu_model_component_count(r->model))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "plan: the model has no component %d",
                              r->component);
    mgpu_plan *p = calloc(1, sizeof *p);
    if (!p)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    p->model = r->model;
    p->devices = r->devices;
    p->component = r->component;
    p->reserve_bytes = r->reserve_bytes;
    p->module_count = mgpu_model_module_count(r->model);
    p->module_device = malloc((p->module_count ? p->module_count : 1) * sizeof *p->module_device);
    p->module_pinned = calloc(p->module_count ? p->module_count : 1, sizeof *p->module_pinned);
    bool *streamed = calloc(p->module_count ? p->module_count : 1, sizeof *streamed);
    uint64_t *target = calloc(MGPU_MAX_DEVICES, sizeof *target);
    mgpu_status s = MGPU_OK;
    if (!p->module_device || !p->module_pinned || !streamed || !target)
        s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    if (s == MGPU_OK)
        s = mgpu_alloc_parse(r->alloc, &p->alloc, err);

    /* The compute device: the request's, the string's, the first GPU, cpu. */
    const char *compute = r->compute && *r->compute ? r->compute : p->alloc.compute;
    p->compute = -1;
    if (s == MGPU_OK && compute && *compute) {
        p->compute = mgpu_device_index(r->devices, compute);
        if (p->compute < 0)
            s = unknown_device(r, compute, err);
    } else if (s == MGPU_OK) {
        int best = -1;
        for (size_t i = 0; i < r->devices->count; i++) {
            const mgpu_device *d = &r->devices->devices[i];
            if (d->kind == MGPU_DEVICE_CUDA &&
                (best < 0 || d->ordinal < r->devices->devices[best].ordinal))
                best = (int)i;
        }
        p->compute = best >= 0 ? best : mgpu_device_index(r->devices, "cpu");
        if (p->compute < 0)
            s = mgpu_error_set(err, MGPU_ERR_ARGUMENT, "plan: no GPU and no cpu to compute on");
    }
    if (s == MGPU_OK && r->devices->devices[p->compute].kind == MGPU_DEVICE_DISK)
        s = mgpu_error_set(err, MGPU_ERR_ARGUMENT, "plan: the disk cannot compute; choose cpu or a GPU");
    for (size_t i = 0; s == MGPU_OK && i < p->alloc.entry_count; i++)
        if (mgpu_device_index(r->devices, p->alloc.entries[i].device) < 0)
            s = unknown_device(r, p->alloc.entries[i].device, err);
    for (size_t i = 0; s == MGPU_OK && i < p->alloc.donor_count; i++)
        if (mgpu_device_index(r->devices, p->alloc.donors[i]) < 0)
            s = unknown_device(r, p->alloc.donors[i], err);

    /* Real capacities. */
    for (size_t i = 0; s == MGPU_OK && i < r->devices->count; i++) {
        const mgpu_device *d = &r->devices->devices[i];
        mgpu_plan_device *pd = &p->device[i];
        pd->device = (int)i;
        pd->compute = (int)i == p->compute;
        pd->margin_bytes = margin_for(d);
        pd->capacity_bytes = d->free_bytes > pd->margin_bytes ? d->free_bytes - pd->margin_bytes : 0;
        if (pd->compute)
            pd->capacity_bytes =
                pd->capacity_bytes > r->reserve_bytes ? pd->capacity_bytes - r->reserve_bytes : 0;
        pd->copy_bytes_per_s = mgpu_device_copy_bytes_per_s(r->devices, (int)i, p->compute);
    }

    /* Modules, order, pinned set. */
    if (s == MGPU_OK)
        s = build_order(p, r, err);
    for (size_t i = 0; i < p->module_count; i++)
        p->module_device[i] = -1;
    for (size_t k = 0; s == MGPU_OK && k < p->order_count; k++) {
        uint32_t i = p->order[k];
        const mgpu_model_module *m = mgpu_model_module_at(r->model, i);
        p->model_bytes += m->nbytes;
        if (m->role != MGPU_ROLE_BODY || m->nbytes < r->pin_below_bytes) {
            p->module_pinned[i] = true;
            p->pinned_bytes += m->nbytes;
        }
    }
    if (s == MGPU_OK && p->order_count == 0)
        s = mgpu_error_set(err, MGPU_ERR_ARGUMENT, "plan: the model has no tensors to place");
    if (s == MGPU_OK)
        s = compute_targets(p, r, target, err);
    if (s == MGPU_OK) {
        s = check_compute_fits(p, r, target[p->compute], err);
    }
    if (s == MGPU_OK) {
        choose_streamed(p, r, p->model_bytes - target[p->compute], streamed);
        /* The streamed set can be a module short of the target; if that
         * leaves compute over capacity, stream more from the end. */
        uint64_t resident = 0;
        for (size_t k = 0; k < p->order_count; k++)
            if (!streamed[p->order[k]])
                resident += mgpu_model_module_at(r->model, p->order[k])->nbytes;
        /* Only modules some device still has room for beyond its target. */
        uint64_t room = 0;
        for (size_t d = 0; d < r->devices->count; d++)
            if ((int)d != p->compute && p->device[d].capacity_bytes > target[d] &&
                p->device[d].capacity_bytes - target[d] > room)
                room = p->device[d].capacity_bytes - target[d];
        for (size_t k = p->order_count; k-- > 0 && resident > p->device[p->compute].capacity_bytes;) {
            uint32_t i = p->order[k];
            uint64_t size = mgpu_model_module_at(r->model, i)->nbytes;
            if (!p->module_pinned[i] && !streamed[i] && size <= room) {
                streamed[i] = true;
                resident -= size;
            }
        }
        if (resident > p->device[p->compute].capacity_bytes)
            s = check_compute_fits(p, r, resident, err);
    }
    bool any_streamed = false;
    for (size_t k = 0; k < p->order_count; k++)
        any_streamed |= streamed[p->order[k]];
    for (size_t k = 0; s == MGPU_OK && k < p->order_count; k++)
        if (!streamed[p->order[k]])
            p->module_device[p->order[k]] = p->compute;
    if (s == MGPU_OK && any_streamed)
        s = assign_donors(p, r, target, streamed, err);

    /* Totals and per-step traffic. */
    for (size_t k = 0; s == MGPU_OK && k < p->order_count; k++) {
        uint32_t i = p->order[k];
        mgpu_plan_device *pd = &p->device[p->module_device[i]];
        pd->placed_bytes += mgpu_model_module_at(r->model, i)->nbytes;
        pd->module_count++;
        pd->pinned_count += p->module_pinned[i];
    }
    for (size_t d = 0; s == MGPU_OK && d < r->devices->count; d++) {
        mgpu_plan_device *pd = &p->device[d];
        if (pd->placed_bytes > pd->capacity_bytes)
            s = mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                               "allocation '%s': %s would hold %.2f GiB but can hold %.2f GiB",
                               r->alloc ? r->alloc : "", r->devices->devices[d].name,
                               gib(pd->placed_bytes), gib(pd->capacity_bytes));
        if (!pd->compute) {
            pd->streamed_bytes_per_step = pd->placed_bytes;
            pd->copy_seconds_per_step =
                pd->placed_bytes == 0 ? 0.0
                : pd->copy_bytes_per_s > 0 ? (double)pd->placed_bytes / pd->copy_bytes_per_s
                                           : NAN;
        }
    }
    free(streamed);
    free(target);
    if (s != MGPU_OK) {
        mgpu_plan_free(p);
        return s;
    }
    *out = p;
    return MGPU_OK;
}

void mgpu_plan_free(mgpu_plan *p)
{
    if (!p)
        return;
    free(p->module_device);
    free(p->module_pinned);
    free(p->order);
    free(p);
}
