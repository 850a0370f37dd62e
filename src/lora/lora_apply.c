/* See lora_apply.h. Adapters are grouped by the model tensor they modify
 * (an index by tensor position in the model view), so a linear layer finds
 * its own in constant time. Scratch for x A^T and the low-rank product
 * grows to the largest use and is reused. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "lora/lora_apply.h"

typedef struct adapter {
    int64_t row0, rows, cols, rank;
    float *a, *b; /* device f32 */
    float scale;  /* alpha / rank */
    size_t lora;  /* which file, for its strength */
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
    float *t, *u, *tmp; /* scratch */
    int64_t t_floats, u_floats, tmp_floats;
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
    mgpu_status rc = MGPU_OK;
    if (!s->first || !s->per_tensor || !s->strength || !s->adapters)
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
            *d = (adapter){t->row0, t->rows, t->cols, t->rank, NULL, NULL, t->scale, i};
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
    float *scratch[3] = {s->t, s->u, s->tmp};
    for (int i = 0; i < 3; i++)
        if (scratch[i])
            be->ops->free(be, scratch[i]);
    free(s->adapters);
    free(s->first);
    free(s->per_tensor);
    free(s->strength);
    free(s);
}

void mgpu_lora_set_strength(mgpu_lora_set *s, size_t lora, float strength)
{
    if (lora < s->n_lora)
        s->strength[lora] = strength;
}

size_t mgpu_lora_set_adapter_count(const mgpu_lora_set *s)
{
    return s->count;
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
        if (strength == 0.0f)
            continue; /* off: exactly the model without it */
        if (d->cols != in || d->row0 + d->rows > out) {
            mgpu_backend_fail(be, MGPU_ERR_ARGUMENT, "LoRA adapter on '%s' does not fit its use",
                              w->info.name);
            return;
        }
        if (!ensure(s, &s->t, &s->t_floats, rows * d->rank) ||
            !ensure(s, &s->u, &s->u_floats, rows * d->rows) ||
            !ensure(s, &s->tmp, &s->tmp_floats, rows * d->rows))
            return;
        mgpu_wref none = {NULL, MGPU_DTYPE_F32};
        be->ops->linear(be, x, rows, in, (mgpu_wref){d->a, MGPU_DTYPE_F32}, d->rank, none, s->t);
        be->ops->linear(be, s->t, rows, d->rank, (mgpu_wref){d->b, MGPU_DTYPE_F32}, d->rows, none,
                        s->u);
        be->ops->scale(be, s->u, s->u, strength, rows * d->rows);
        /* y[:, row0:row0+rows] += u, through a contiguous copy */
        be->ops->copy_2d(be, s->tmp, d->rows, y + d->row0, out, rows, d->rows);
        be->ops->add(be, s->tmp, s->tmp, s->u, rows * d->rows);
        be->ops->copy_2d(be, y + d->row0, out, s->tmp, d->rows, rows, d->rows);
    }
}
