/* See lora_apply.h. Adapters are grouped by the model tensor they modify
 * (an index by tensor position in the model view), so a linear layer finds
 * its own in constant time. Scratch for x A^T and the low-rank product
 * grows to the largest use and is reused. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "lora/lora_apply.h"

typedef struct adapter {
    int64_t row0, rows, cols, rank;
    float *a, *b; /* device f32 */
    float scale;  /* alpha / rank */
    size_t lora;  /* which file, for its strength */
    bool merged;  /* in its weight's merged copy, not applied at use */
} adapter;

struct mgpu_lora_set {
    mgpu_backend *be;
    const mgpu_model *model;
    adapter *adapters; /* grouped by tensor */
    size_t count;
    size_t *first;     /* per model tensor: its first adapter, count[] of them */
    uint32_t *per_tensor;
    float *strength;   /* per LoRA file */
    size_t n_lora;
    float *t, *u; /* scratch: x A^T and its product with B */
    int64_t t_floats, u_floats;
    void **merged;      /* per model tensor: its merged copy (merge-once) */
    bool *merged_mask;
    size_t merged_adapters;
    mgpu_tensor_source inner; /* what mgpu_lora_set_source wraps */
    bool broken;              /* a re-merge failed part-way: nothing is handed out */
};

static size_t tensor_index(const mgpu_lora_set *s, const mgpu_model_tensor *t)
{
    return (size_t)(t - mgpu_model_tensor_at(s->model, 0));
}

mgpu_status mgpu_lora_set_create(mgpu_backend *be, const mgpu_model *model,
                                 const mgpu_lora_resolved *const *resolved, const float *strengths,
                                 size_t n, size_t part, mgpu_lora_set **out, mgpu_error *err)
{
    *out = NULL;
    mgpu_lora_set *s = calloc(1, sizeof *s);
    size_t nt = mgpu_model_tensor_count(model);
    if (!s)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    s->be = be;
    s->model = model;
    s->n_lora = n;
    s->first = calloc(nt ? nt : 1, sizeof *s->first);
    s->per_tensor = calloc(nt ? nt : 1, sizeof *s->per_tensor);
    s->strength = calloc(n ? n : 1, sizeof *s->strength);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += mgpu_lora_target_count(resolved[i]);
    s->adapters = calloc(total ? total : 1, sizeof *s->adapters);
    s->merged = calloc(nt ? nt : 1, sizeof *s->merged);
    s->merged_mask = calloc(nt ? nt : 1, sizeof *s->merged_mask);
    mgpu_status rc = MGPU_OK;
    if (!s->first || !s->per_tensor || !s->strength || !s->adapters || !s->merged ||
        !s->merged_mask)
        rc = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    if (rc == MGPU_OK && n)
        memcpy(s->strength, strengths, n * sizeof *strengths);
    /* count per tensor, then place each adapter in its tensor's group */
    for (size_t i = 0; rc == MGPU_OK && i < n; i++)
        for (size_t k = 0; k < mgpu_lora_target_count(resolved[i]); k++) {
            const mgpu_lora_target *t = mgpu_lora_target_at(resolved[i], k);
            if (t->part == part)
                s->per_tensor[tensor_index(s, t->tensor)]++;
        }
    size_t at = 0;
    for (size_t i = 0; i < nt; i++) {
        s->first[i] = at;
        at += s->per_tensor[i];
        s->per_tensor[i] = 0; /* refilled below */
    }
    float *host_a = NULL, *host_b = NULL;
    for (size_t i = 0; rc == MGPU_OK && i < n; i++)
        for (size_t k = 0; rc == MGPU_OK && k < mgpu_lora_target_count(resolved[i]); k++) {
            const mgpu_lora_target *t = mgpu_lora_target_at(resolved[i], k);
            if (t->part != part)
                continue;
            size_t ti = tensor_index(s, t->tensor);
            adapter *d = &s->adapters[s->first[ti] + s->per_tensor[ti]++];
            s->count++;
            *d = (adapter){t->row0, t->rows, t->cols, t->rank, NULL, NULL, t->scale, i, false};
            size_t na = (size_t)(t->rank * t->cols), nb = (size_t)(t->rows * t->rank);
            float *ha = realloc(host_a, na * sizeof(float)), *hb = NULL;
            if (ha)
                host_a = ha;
            if (ha)
                hb = realloc(host_b, nb * sizeof(float));
            if (hb)
                host_b = hb;
            if (!ha || !hb) {
                rc = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory for LoRA factors");
                break;
            }
            rc = mgpu_lora_target_factors(t, host_a, host_b, err);
            if (rc == MGPU_OK)
                rc = mgpu_backend_alloc_f32(be, (int64_t)na, &d->a, err);
            if (rc == MGPU_OK)
                rc = mgpu_backend_alloc_f32(be, (int64_t)nb, &d->b, err);
            if (rc == MGPU_OK)
                rc = mgpu_backend_upload(be, d->a, host_a, na * sizeof(float), err);
            if (rc == MGPU_OK)
                rc = mgpu_backend_upload(be, d->b, host_b, nb * sizeof(float), err);
        }
    free(host_a);
    free(host_b);
    if (rc != MGPU_OK) {
        mgpu_lora_set_free(s);
        return rc;
    }
    *out = s;
    return MGPU_OK;
}

void mgpu_lora_set_free(mgpu_lora_set *s)
{
    if (!s)
        return;
    mgpu_backend *be = s->be;
    be->ops->synchronize(be, NULL); /* queued ops may still read the factors */
    for (size_t i = 0; s->adapters && i < s->count; i++) {
        if (s->adapters[i].a)
            be->ops->free(be, s->adapters[i].a);
        if (s->adapters[i].b)
            be->ops->free(be, s->adapters[i].b);
    }
    float *scratch[2] = {s->t, s->u};
    for (int i = 0; i < 2; i++)
        if (scratch[i])
            be->ops->free(be, scratch[i]);
    for (size_t i = 0; s->merged && i < mgpu_model_tensor_count(s->model); i++)
        if (s->merged[i])
            be->ops->free(be, s->merged[i]);
    free(s->merged);
    free(s->merged_mask);
    free(s->adapters);
    free(s->first);
    free(s->per_tensor);
    free(s->strength);
    free(s);
}

size_t mgpu_lora_set_adapter_count(const mgpu_lora_set *s)
{
    return s->count;
}

size_t mgpu_lora_set_merged_adapter_count(const mgpu_lora_set *s)
{
    return s->merged_adapters;
}

const bool *mgpu_lora_set_merged_mask(const mgpu_lora_set *s)
{
    return s->merged_mask;
}

/* ---- merge-once ---------------------------------------------------------- */

static bool mergeable_dtype(mgpu_dtype t)
{
    return t == MGPU_DTYPE_F32 || t == MGPU_DTYPE_F16 || t == MGPU_DTYPE_BF16;
}

/* Scratch for merging, sized for the largest merged weight, freed after. */
typedef struct merge_scratch {
    float *w, *d, *at;
} merge_scratch;

static void scratch_free(mgpu_backend *be, merge_scratch *m)
{
    be->ops->synchronize(be, NULL);
    float *p[3] = {m->w, m->d, m->at};
    for (int i = 0; i < 3; i++)
        if (p[i])
            be->ops->free(be, p[i]);
    *m = (merge_scratch){0};
}

/* Largest weight, delta rows x cols and A^T among the weights merged. */
static mgpu_status scratch_alloc(mgpu_lora_set *s, merge_scratch *m, mgpu_error *err)
{
    int64_t w = 1, d = 1, at = 1;
    for (size_t i = 0; i < mgpu_model_tensor_count(s->model); i++) {
        if (!s->merged[i])
            continue;
        const mgpu_model_tensor *t = mgpu_model_tensor_at(s->model, i);
        if ((int64_t)t->info.n_elems > w)
            w = (int64_t)t->info.n_elems;
        for (uint32_t k = 0; k < s->per_tensor[i]; k++) {
            const adapter *a = &s->adapters[s->first[i] + k];
            if (a->rows * a->cols > d)
                d = a->rows * a->cols;
            if (a->rank * a->cols > at)
                at = a->rank * a->cols;
        }
    }
    mgpu_status rc = mgpu_backend_alloc_f32(s->be, w, &m->w, err);
    if (rc == MGPU_OK)
        rc = mgpu_backend_alloc_f32(s->be, d, &m->d, err);
    if (rc == MGPU_OK)
        rc = mgpu_backend_alloc_f32(s->be, at, &m->at, err);
    return rc;
}

/* merged[i] = encode(decode(original W) + sum of its adapters' s*alpha/rank * B A). */
static mgpu_status merge_tensor(mgpu_lora_set *s, size_t i, merge_scratch *m, mgpu_error *err)
{
    mgpu_backend *be = s->be;
    const mgpu_model_tensor *t = mgpu_model_tensor_at(s->model, i);
    if (!t->info.data)
        return mgpu_error_set(err, MGPU_ERR_IO, "tensor '%s' has no data", t->info.name);
    const int64_t n = (int64_t)t->info.n_elems;
    mgpu_status rc = mgpu_backend_upload(be, s->merged[i], t->info.data, t->info.nbytes, err);
    if (rc != MGPU_OK)
        return rc;
    be->ops->convert(be, (mgpu_wref){s->merged[i], t->info.dtype}, n, m->w);
    for (uint32_t k = 0; k < s->per_tensor[i]; k++) {
        const adapter *a = &s->adapters[s->first[i] + k];
        const float strength = s->strength[a->lora] * a->scale;
        if (strength == 0.0f)
            continue;
        /* d [rows][cols] = B A = B (A^T)^T: a linear over B's rows */
        be->ops->transpose(be, a->a, a->rank, a->cols, m->at);
        be->ops->linear(be, a->b, a->rows, a->rank, (mgpu_wref){m->at, MGPU_DTYPE_F32}, a->cols,
                        (mgpu_wref){NULL, MGPU_DTYPE_F32}, m->d);
        be->ops->scale(be, m->d, m->d, strength, a->rows * a->cols);
        float *w_rows = m->w + a->row0 * a->cols;
        be->ops->add(be, w_rows, w_rows, m->d, a->rows * a->cols);
    }
    be->ops->encode(be, m->w, n, t->info.dtype, s->merged[i]);
    return be->ops->synchronize(be, err);
}

/* Merges again every merged weight with an adapter of LoRA `lora` (every
 * merged weight when lora == SIZE_MAX). */
static mgpu_status remerge(mgpu_lora_set *s, size_t lora, mgpu_error *err)
{
    merge_scratch m = {0};
    mgpu_status rc = MGPU_OK;
    for (size_t i = 0; rc == MGPU_OK && i < mgpu_model_tensor_count(s->model); i++) {
        if (!s->merged[i])
            continue;
        bool touched = lora == SIZE_MAX;
        for (uint32_t k = 0; k < s->per_tensor[i]; k++)
            touched |= s->adapters[s->first[i] + k].lora == lora;
        if (!touched)
            continue;
        if (!m.w)
            rc = scratch_alloc(s, &m, err);
        if (rc == MGPU_OK)
            rc = merge_tensor(s, i, &m, err);
    }
    scratch_free(s->be, &m);
    return rc;
}

mgpu_status mgpu_lora_set_merge(mgpu_lora_set *s, const mgpu_plan *plan, size_t *merged,
                                mgpu_error *err)
{
    size_t count = 0;
    mgpu_status rc = MGPU_OK;
    for (size_t i = 0; rc == MGPU_OK && i < mgpu_model_tensor_count(s->model); i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(s->model, i);
        if (!s->per_tensor[i] || s->merged[i] || !mergeable_dtype(t->info.dtype) ||
            plan->module_device[t->module] != plan->compute)
            continue;
        rc = s->be->ops->alloc(s->be, (size_t)t->info.nbytes, &s->merged[i], err);
        if (rc != MGPU_OK)
            break;
        s->merged_mask[i] = true;
        count++;
        for (uint32_t k = 0; k < s->per_tensor[i]; k++) {
            s->adapters[s->first[i] + k].merged = true;
            s->merged_adapters++;
        }
    }
    if (rc == MGPU_OK)
        rc = remerge(s, SIZE_MAX, err);
    if (rc != MGPU_OK) { /* back to at-use for everything: no half-merged weight is handed out */
        s->be->ops->synchronize(s->be, NULL);
        for (size_t i = 0; i < mgpu_model_tensor_count(s->model); i++) {
            if (s->merged[i])
                s->be->ops->free(s->be, s->merged[i]);
            s->merged[i] = NULL;
            s->merged_mask[i] = false;
        }
        for (size_t k = 0; k < s->count; k++)
            s->adapters[k].merged = false;
        s->merged_adapters = 0;
        count = 0;
    }
    if (merged)
        *merged = count;
    return rc;
}

mgpu_status mgpu_lora_set_strength(mgpu_lora_set *s, size_t lora, float strength,
                                   mgpu_error *err)
{
    if (lora >= s->n_lora)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "no LoRA %zu in a set of %zu", lora,
                              s->n_lora);
    if (s->strength[lora] == strength)
        return MGPU_OK;
    const float before = s->strength[lora];
    s->strength[lora] = strength;
    mgpu_status rc = s->merged_adapters ? remerge(s, lora, err) : MGPU_OK;
    if (rc != MGPU_OK) {
        /* some weights may hold the new strength: the set is unusable now */
        s->strength[lora] = before;
        s->broken = true;
        mgpu_backend_fail(s->be, rc, "LoRA merge-once: a failed strength change left the merged "
                                     "weights inconsistent");
    }
    return rc;
}

/* ---- the wrapping source ------------------------------------------------- */

static mgpu_status wrap_enter(void *context, int block, mgpu_error *err)
{
    mgpu_lora_set *s = context;
    return s->inner.enter_block(s->inner.context, block, err);
}

static void wrap_leave(void *context, int block)
{
    mgpu_lora_set *s = context;
    s->inner.leave_block(s->inner.context, block);
}

static const void *wrap_data(void *context, const mgpu_model_tensor *t, mgpu_error *err)
{
    mgpu_lora_set *s = context;
    if (s->broken) {
        mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                       "LoRA merge-once: the merged weights are inconsistent after a failed "
                       "strength change");
        return NULL;
    }
    void *m = s->merged[tensor_index(s, t)];
    return m ? m : s->inner.data(s->inner.context, t, err);
}

mgpu_tensor_source mgpu_lora_set_source(mgpu_lora_set *s, mgpu_tensor_source inner)
{
    s->inner = inner;
    return (mgpu_tensor_source){s, wrap_enter, wrap_leave, wrap_data, s};
}

/* Grows a scratch buffer to n floats (contents not kept). */
static bool ensure(mgpu_lora_set *s, float **buf, int64_t *have, int64_t n)
{
    if (*have >= n)
        return true;
    mgpu_backend *be = s->be;
    be->ops->synchronize(be, NULL); /* the old one may still be in use */
    if (*buf)
        be->ops->free(be, *buf);
    *buf = NULL;
    *have = 0;
    mgpu_error e = {0};
    if (mgpu_backend_alloc_f32(be, n, buf, &e) != MGPU_OK) {
        mgpu_backend_fail(be, e.status, "LoRA scratch: %s", e.message);
        return false;
    }
    *have = n;
    return true;
}

void mgpu_lora_apply(mgpu_lora_set *s, const mgpu_model_tensor *w, const float *x, int64_t rows,
                     int64_t in, float *y, int64_t out)
{
    if (!s || mgpu_backend_failed(s->be))
        return;
    size_t ti = tensor_index(s, w);
    mgpu_backend *be = s->be;
    for (uint32_t k = 0; k < s->per_tensor[ti]; k++) {
        const adapter *d = &s->adapters[s->first[ti] + k];
        float strength = s->strength[d->lora] * d->scale;
        if (strength == 0.0f || d->merged)
            continue; /* off: exactly the model without it; or in the weight */
        if (d->cols != in || d->row0 + d->rows > out) {
            mgpu_backend_fail(be, MGPU_ERR_ARGUMENT, "LoRA adapter on '%s' does not fit its use",
                              w->info.name);
            return;
        }
        if (!ensure(s, &s->t, &s->t_floats, rows * d->rank) ||
            !ensure(s, &s->u, &s->u_floats, rows * d->rows))
            return;
        mgpu_wref none = {NULL, MGPU_DTYPE_F32};
        be->ops->linear(be, x, rows, in, (mgpu_wref){d->a, MGPU_DTYPE_F32}, d->rank, none, s->t);
        be->ops->linear(be, s->t, rows, d->rank, (mgpu_wref){d->b, MGPU_DTYPE_F32}, d->rows, none,
                        s->u);
        /* y[:, row0:row0+rows] += strength * u, in one pass */
        be->ops->axpy_2d(be, y + d->row0, out, s->u, d->rows, rows, d->rows, strength);
    }
}
