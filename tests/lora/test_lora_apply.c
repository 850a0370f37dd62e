/* LoRA applied at use time (lora/lora_apply.c) in the FLUX.1 forward: the
 * output equals the output of the same model with every targeted weight
 * merged as W + strength * (alpha/rank) * (B @ A) in double (diffusers
 * format, q/k/v adapters on fused weights included); strength 0 is the
 * model without it, bit for bit; a strength change takes effect without
 * reloading anything; and streaming the weights does not change a bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "exec/executor.h"
#include "lora/lora_apply.h"
#include "models/flux.h"
#include "mgpu/safetensors.h"
#include "synth_lora.h"
#include "synth_write.h"
#include "test_models.h"
#include "test_util.h"

static char model_path[1024], merged_path[1024], lora_path[1024], inputs_path[1024];
static const float STRENGTH = 0.8f;

static double rel_diff(const float *a, const float *b, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        diff = d > diff ? d : diff;
        scale = fabs((double)b[i]) > scale ? fabs((double)b[i]) : scale;
    }
    return diff / scale;
}

typedef struct fixture {
    mgpu_model *model;
    mgpu_flux *flux;
    mgpu_safetensors *inputs;
    mgpu_flux_inputs in;
    size_t n;
} fixture;

static const float *input(mgpu_safetensors *st, const char *name)
{
    const mgpu_tensor_info *t = mgpu_safetensors_find(st, name);
    return t ? t->data : NULL;
}

static void open_fixture(fixture *f, const char *path)
{
    mgpu_error err = {0};
    mgpu_flux_settings set = {.heads = 2};
    f->model = open_ok(path);
    if (mgpu_flux_load(f->model, 0, &set, &f->flux, &err) != MGPU_OK ||
        mgpu_safetensors_open(inputs_path, &f->inputs, &err) != MGPU_OK)
        fail_msg("%s", err.message);
    f->in = (mgpu_flux_inputs){1, 6, 8, 5, input(f->inputs, "x"), input(f->inputs, "timestep"),
                               input(f->inputs, "context"), input(f->inputs, "y"),
                               input(f->inputs, "guidance")};
    f->n = 16 * 6 * 8;
}

static void close_fixture(fixture *f)
{
    mgpu_safetensors_close(f->inputs);
    mgpu_flux_free(f->flux);
    mgpu_model_close(f->model);
}

static float *forward(fixture *f, mgpu_backend *be, mgpu_tensor_source *src)
{
    float *out = malloc(f->n * sizeof(float));
    mgpu_error err = {0};
    if (mgpu_flux_forward(f->flux, src, &f->in, out, be, &err) != MGPU_OK)
        fail_msg("forward: %s", err.message);
    return out;
}

/* acc [n] = tensor t with every target of r on it merged in, in double:
 * W + strength * (alpha/rank) * B A from the f32 factors. */
static void merged_reference(const mgpu_model_tensor *t, const mgpu_lora_resolved *r,
                             float strength, double *acc)
{
    mgpu_error err = {0};
    uint64_t n = t->info.n_elems;
    float *v = malloc(n * sizeof *v);
    assert_int_equal(mgpu_dequantize(t->info.dtype, t->info.data, v, n), MGPU_OK);
    for (uint64_t k = 0; k < n; k++)
        acc[k] = v[k];
    free(v);
    for (size_t k = 0; k < mgpu_lora_target_count(r); k++) {
        const mgpu_lora_target *tg = mgpu_lora_target_at(r, k);
        if (tg->tensor != t)
            continue;
        float *a = malloc((size_t)(tg->rank * tg->cols) * sizeof(float));
        float *b = malloc((size_t)(tg->rows * tg->rank) * sizeof(float));
        assert_int_equal(mgpu_lora_target_factors(tg, a, b, &err), MGPU_OK);
        for (int64_t row = 0; row < tg->rows; row++)
            for (int64_t c = 0; c < tg->cols; c++) {
                double d = 0;
                for (int64_t q = 0; q < tg->rank; q++)
                    d += (double)b[row * tg->rank + q] * a[q * tg->cols + c];
                acc[(tg->row0 + row) * tg->cols + c] += (double)strength * tg->scale * d;
            }
        free(a), free(b);
    }
}

/* The model with every target merged in, in double, written as F32. */
static void write_merged(const mgpu_model *m, const mgpu_lora_resolved *r)
{
    mgpu_error err = {0};
    mgpu_safetensors_writer *w;
    size_t nt = mgpu_model_tensor_count(m);
    assert_int_equal(mgpu_safetensors_writer_create(merged_path, &w, &err), MGPU_OK);
    for (size_t i = 0; i < nt; i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        assert_int_equal(mgpu_safetensors_writer_add_tensor(w, t->name, MGPU_DTYPE_F32,
                                                            t->info.ndim, t->info.shape, &err),
                         MGPU_OK);
    }
    for (size_t i = 0; i < nt; i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        uint64_t n = t->info.n_elems;
        double *acc = malloc(n * sizeof *acc);
        float *v = malloc(n * sizeof *v);
        merged_reference(t, r, STRENGTH, acc);
        for (uint64_t k = 0; k < n; k++)
            v[k] = (float)acc[k];
        assert_int_equal(mgpu_safetensors_writer_write(w, v, n * sizeof(float), &err), MGPU_OK);
        free(acc), free(v);
    }
    assert_int_equal(mgpu_safetensors_writer_finish(w, &err), MGPU_OK);
}

static void test_applied_equals_merged(void **state)
{
    (void)state;
    mgpu_error err = {0};
    fixture f;
    open_fixture(&f, model_path);
    mgpu_lora *lora = NULL;
    mgpu_lora_resolved *res = NULL;
    mgpu_lora_part part = {f.model, 0};
    if (mgpu_lora_open(lora_path, &lora, &err) != MGPU_OK ||
        mgpu_lora_resolve(lora, &part, 1, &res, &err) != MGPU_OK)
        fail_msg("%s", err.message);
    assert_true(mgpu_lora_target_count(res) > 10);
    mgpu_backend *be;
    assert_int_equal(mgpu_backend_cpu_create(1, &be, &err), MGPU_OK);
    const mgpu_lora_resolved *list[1] = {res};
    float strength = STRENGTH;
    mgpu_lora_set *set;
    assert_int_equal(mgpu_lora_set_create(be, f.model, list, &strength, 1, 0, &set, &err), MGPU_OK);
    assert_int_equal(mgpu_lora_set_adapter_count(set), mgpu_lora_target_count(res));

    mgpu_tensor_source plain = mgpu_resident_source(), with = plain;
    with.lora = set;
    float *base = forward(&f, be, &plain), *applied = forward(&f, be, &with);

    write_merged(f.model, res);
    fixture g;
    open_fixture(&g, merged_path);
    float *merged = forward(&g, be, &plain);
    double d = rel_diff(applied, merged, f.n), moved = rel_diff(base, merged, f.n);
    print_message("applied vs merged: %.3g of the output's scale; the LoRA moves it by %.3g\n",
                  d, moved);
    /* f32 rounding of two equal computations, against a LoRA that moves
     * the output by orders of magnitude more */
    assert_true(d < 1e-5);
    assert_true(moved > 1e-3);

    /* strength 0: the model without the LoRA, bit for bit; back to 0.8:
     * the first result again, nothing reloaded */
    assert_int_equal(mgpu_lora_set_strength(set, 0, 0.0f, &err), MGPU_OK);
    float *off = forward(&f, be, &with);
    assert_memory_equal(off, base, f.n * sizeof(float));
    assert_int_equal(mgpu_lora_set_strength(set, 0, STRENGTH, &err), MGPU_OK);
    float *again = forward(&f, be, &with);
    assert_memory_equal(again, applied, f.n * sizeof(float));

    /* streamed weights (half behind a simulated GPU link, a quarter from
     * disk), with the discrete backend: the same bits */
    mgpu_device_list devs;
    assert_int_equal(mgpu_devices_simulate("cuda:0=1gib@30gbps,cpu=8gib,disk@2gbps", &devs, &err),
                     MGPU_OK);
    mgpu_plan_request pr = {.model = f.model, .component = 0, .devices = &devs,
                            .alloc = "cuda:0,50%;cpu,25%;disk,*"};
    mgpu_plan *plan;
    assert_int_equal(mgpu_plan_create(&pr, &plan, &err), MGPU_OK);
    mgpu_backend *disc;
    assert_int_equal(mgpu_backend_cpu_create_discrete(2, &disc, &err), MGPU_OK);
    mgpu_lora_set *set2;
    assert_int_equal(mgpu_lora_set_create(disc, f.model, list, &strength, 1, 0, &set2, &err),
                     MGPU_OK);
    mgpu_executor *ex;
    assert_int_equal(mgpu_executor_create(plan, disc, NULL, &ex, &err), MGPU_OK);
    mgpu_tensor_source streamed = mgpu_executor_source(ex);
    streamed.lora = set2;
    float *far = forward(&f, disc, &streamed);
    assert_memory_equal(far, applied, f.n * sizeof(float));
    mgpu_executor_free(ex);
    mgpu_lora_set_free(set2);
    mgpu_backend_free(disc);
    mgpu_plan_free(plan);

    free(base), free(applied), free(merged), free(off), free(again), free(far);
    mgpu_lora_set_free(set);
    mgpu_backend_free(be);
    mgpu_lora_resolved_free(res);
    mgpu_lora_free(lora);
    close_fixture(&g);
    close_fixture(&f);
}

typedef struct lora_fixture {
    mgpu_lora *lora;
    mgpu_lora_resolved *res;
    mgpu_lora_set *set;
} lora_fixture;

static void open_lora(lora_fixture *l, const mgpu_model *m, mgpu_backend *be)
{
    mgpu_error err = {0};
    mgpu_lora_part part = {m, 0};
    float strength = STRENGTH;
    if (mgpu_lora_open(lora_path, &l->lora, &err) != MGPU_OK ||
        mgpu_lora_resolve(l->lora, &part, 1, &l->res, &err) != MGPU_OK ||
        mgpu_lora_set_create(be, m, (const mgpu_lora_resolved *const *)&l->res, &strength, 1, 0,
                             &l->set, &err) != MGPU_OK)
        fail_msg("%s", err.message);
}

static void close_lora(lora_fixture *l)
{
    mgpu_lora_set_free(l->set);
    mgpu_lora_resolved_free(l->res);
    mgpu_lora_free(l->lora);
}

static mgpu_plan *plan_for(const mgpu_model *m, const char *devices, const char *alloc)
{
    static mgpu_device_list devs; /* plans point at it; one plan at a time here */
    mgpu_error err = {0};
    mgpu_plan_request pr = {.model = m, .component = 0, .devices = &devs, .alloc = alloc};
    mgpu_plan *plan = NULL;
    if (mgpu_devices_simulate(devices, &devs, &err) != MGPU_OK ||
        mgpu_plan_create(&pr, &plan, &err) != MGPU_OK)
        fail_msg("%s", err.message);
    return plan;
}

/* Merge-once on the tiny BF16 model, all resident: every merged weight is
 * the bf16 nearest the exact merged value (the f32 sum before rounding may
 * move a tie by one unit, rarely); the output stays near the exact merge,
 * bf16 rounding being the whole cost; strength changes merge again from
 * the original bits. */
static void test_merge_once(void **state)
{
    (void)state;
    mgpu_error err = {0};
    fixture f;
    open_fixture(&f, model_path);
    mgpu_backend *be;
    assert_int_equal(mgpu_backend_cpu_create(1, &be, &err), MGPU_OK);
    lora_fixture l;
    open_lora(&l, f.model, be);
    mgpu_plan *plan = plan_for(f.model, "cpu=8gib", NULL);
    size_t merged = 0;
    assert_int_equal(mgpu_lora_set_merge(l.set, plan, &merged, &err), MGPU_OK);
    assert_true(merged > 10);
    /* every adapted weight of this model is BF16 */
    assert_int_equal(mgpu_lora_set_merged_adapter_count(l.set), mgpu_lora_set_adapter_count(l.set));
    mgpu_tensor_source plain = mgpu_resident_source();
    mgpu_tensor_source src = mgpu_lora_set_source(l.set, plain);
    const bool *mask = mgpu_lora_set_merged_mask(l.set);

    uint64_t total = 0, equal = 0;
    double lost = 0, delta = 0;
    size_t seen = 0;
    for (size_t i = 0; i < mgpu_model_tensor_count(f.model); i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(f.model, i);
        const uint16_t *mw = src.data(src.context, t, &err);
        if (!mask[i]) {
            assert_ptr_equal(mw, t->info.data);
            continue;
        }
        seen++;
        assert_int_equal(t->info.dtype, MGPU_DTYPE_BF16);
        assert_ptr_not_equal(mw, t->info.data);
        const uint16_t *orig = t->info.data;
        uint64_t n = t->info.n_elems;
        double *acc = malloc(n * sizeof *acc);
        merged_reference(t, l.res, STRENGTH, acc);
        for (uint64_t k = 0; k < n; k++) {
            uint16_t want = mgpu_f32_to_bf16((float)acc[k]);
            double w0 = mgpu_bf16_to_f32(orig[k]), got = mgpu_bf16_to_f32(mw[k]);
            double e = got - acc[k], d = acc[k] - w0;
            /* a bf16 unit of the result (half for the rounding, half for a
             * tie the f32 sum moved), plus the f32 sum's own rounding,
             * which dominates only where W and the delta cancel */
            double tol = ldexp(1.0, ilogb(acc[k] == 0 ? 1e-30 : acc[k]) - 7) +
                         0x1p-22 * (fabs(w0) + fabs(d));
            if (fabs(e) > tol)
                fail_msg("%s[%llu]: merged %04x, nearest %04x", t->info.name,
                         (unsigned long long)k, mw[k], want);
            equal += mw[k] == want;
            lost += e * e;
            delta += d * d;
        }
        total += n;
        free(acc);
    }
    assert_int_equal(seen, merged);
    print_message("merged weights: %.4f%% the nearest bf16; rounding error / delta (rms): %.3g\n",
                  100.0 * (double)equal / (double)total, sqrt(lost / delta));
    assert_true((double)equal >= 0.999 * (double)total);

    float *base = forward(&f, be, &plain), *mo = forward(&f, be, &src);
    write_merged(f.model, l.res);
    fixture g;
    open_fixture(&g, merged_path);
    float *exact = forward(&g, be, &plain);
    double d = rel_diff(mo, exact, f.n), moved = rel_diff(base, exact, f.n);
    print_message("merge-once vs exact merge: %.3g of the output's scale; the LoRA moves it by "
                  "%.3g\n", d, moved);
    assert_true(d < 0.1 * moved);

    /* strength 0: the original weights' bits, so the model without it */
    assert_int_equal(mgpu_lora_set_strength(l.set, 0, 0.0f, &err), MGPU_OK);
    float *off = forward(&f, be, &src);
    assert_memory_equal(off, base, f.n * sizeof(float));
    assert_int_equal(mgpu_lora_set_strength(l.set, 0, STRENGTH, &err), MGPU_OK);
    float *again = forward(&f, be, &src);
    assert_memory_equal(again, mo, f.n * sizeof(float));

    /* two LoRAs (the same file twice) merged together; switching the
     * second off re-merges only from the originals: the one-LoRA bits */
    const mgpu_lora_resolved *two[2] = {l.res, l.res};
    const float strengths[2] = {STRENGTH, 0.3f};
    mgpu_lora_set *pair;
    assert_int_equal(mgpu_lora_set_create(be, f.model, two, strengths, 2, 0, &pair, &err), MGPU_OK);
    assert_int_equal(mgpu_lora_set_merge(pair, plan, NULL, &err), MGPU_OK);
    mgpu_tensor_source psrc = mgpu_lora_set_source(pair, plain);
    float *both = forward(&f, be, &psrc);
    assert_true(memcmp(both, mo, f.n * sizeof(float)) != 0);
    assert_int_equal(mgpu_lora_set_strength(pair, 1, 0.0f, &err), MGPU_OK);
    float *first = forward(&f, be, &psrc);
    assert_memory_equal(first, mo, f.n * sizeof(float));
    assert_int_equal(mgpu_lora_set_strength(pair, 1, 0.3f, &err), MGPU_OK);
    float *both2 = forward(&f, be, &psrc);
    assert_memory_equal(both2, both, f.n * sizeof(float));
    mgpu_lora_set_free(pair);

    free(base), free(mo), free(exact), free(off), free(again), free(both), free(first), free(both2);
    close_fixture(&g);
    close_lora(&l);
    mgpu_plan_free(plan);
    mgpu_backend_free(be);
    close_fixture(&f);
}

/* Merge-once with half the model streamed on the discrete backend: only
 * the weights resident on the compute device are merged (the executor does
 * not upload them), the streamed ones keep the at-use path; the output
 * matches the all-resident at-use result within the merge's rounding. */
static void test_merge_streamed(void **state)
{
    (void)state;
    mgpu_error err = {0};
    fixture f;
    open_fixture(&f, model_path);
    mgpu_backend *cpu, *disc;
    assert_int_equal(mgpu_backend_cpu_create(1, &cpu, &err), MGPU_OK);
    assert_int_equal(mgpu_backend_cpu_create_discrete(2, &disc, &err), MGPU_OK);
    lora_fixture ref, l;
    open_lora(&ref, f.model, cpu);
    mgpu_tensor_source with = mgpu_resident_source();
    with.lora = ref.set;
    float *applied = forward(&f, cpu, &with), *base;
    with.lora = NULL;
    base = forward(&f, cpu, &with);

    open_lora(&l, f.model, disc);
    mgpu_plan *plan = plan_for(f.model, "cuda:0=1gib@30gbps,cpu=8gib", "cuda:0,50%;cpu,*");
    size_t merged = 0;
    assert_int_equal(mgpu_lora_set_merge(l.set, plan, &merged, &err), MGPU_OK);
    size_t at_use = mgpu_lora_set_adapter_count(l.set) - mgpu_lora_set_merged_adapter_count(l.set);
    assert_true(merged > 0);
    assert_true(at_use > 0);
    const bool *mask = mgpu_lora_set_merged_mask(l.set);
    for (size_t i = 0; i < mgpu_model_tensor_count(f.model); i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(f.model, i);
        if (mask[i])
            assert_int_equal(plan->module_device[t->module], plan->compute);
    }
    mgpu_executor_options opts = {.pace_simulated = 1, .skip_resident = mask};
    mgpu_executor *ex;
    assert_int_equal(mgpu_executor_create(plan, disc, &opts, &ex, &err), MGPU_OK);
    /* a skipped tensor asked of the executor itself is an error, not NULL */
    mgpu_tensor_source inner = mgpu_executor_source(ex);
    for (size_t i = 0; i < mgpu_model_tensor_count(f.model); i++)
        if (mask[i]) {
            assert_null(inner.data(inner.context, mgpu_model_tensor_at(f.model, i), &err));
            assert_non_null(strstr(err.message, "supplied by the caller"));
            break;
        }
    mgpu_tensor_source src = mgpu_lora_set_source(l.set, inner);
    float *mo = forward(&f, disc, &src);
    double d = rel_diff(mo, applied, f.n), moved = rel_diff(base, applied, f.n);
    print_message("half merged, half at use: %.3g from the at-use output (LoRA moves it %.3g)\n",
                  d, moved);
    assert_true(d < 0.1 * moved);
    assert_int_equal(mgpu_lora_set_strength(l.set, 0, 0.0f, &err), MGPU_OK);
    float *off = forward(&f, disc, &src);
    assert_memory_equal(off, base, f.n * sizeof(float));

    free(applied), free(base), free(mo), free(off);
    mgpu_executor_free(ex);
    close_lora(&l);
    close_lora(&ref);
    mgpu_plan_free(plan);
    mgpu_backend_free(disc);
    mgpu_backend_free(cpu);
    close_fixture(&f);
}

/* Quantized weights are never merged (nothing is written into quantized
 * storage): on a Q8_0 model only the weights stored as F16 (rows that do
 * not hold whole blocks) are, and a Q8_0 weight keeps its adapters at use. */
static void test_merge_skips_quantized(void **state)
{
    (void)state;
    mgpu_error err = {0};
    char path[1024];
    snprintf(path, sizeof path, "%s", test_path("la-flux-q8.gguf"));
    synth_options o = {.arch = "flux-dev", .scale = SYNTH_SCALE_TINY, .gguf = 1,
                       .dtype = MGPU_DTYPE_Q8_0, .seed = 64, .prefix = "", .out = path};
    assert_int_equal(synth_write(&o, &err), MGPU_OK);
    mgpu_model *m = open_ok(path);
    mgpu_backend *be;
    assert_int_equal(mgpu_backend_cpu_create(1, &be, &err), MGPU_OK);
    lora_fixture l;
    open_lora(&l, m, be);
    mgpu_plan *plan = plan_for(m, "cpu=8gib", NULL);
    size_t merged = 0, q8_adapted = 0;
    assert_int_equal(mgpu_lora_set_merge(l.set, plan, &merged, &err), MGPU_OK);
    const bool *mask = mgpu_lora_set_merged_mask(l.set);
    for (size_t k = 0; k < mgpu_lora_target_count(l.res); k++) {
        const mgpu_lora_target *t = mgpu_lora_target_at(l.res, k);
        size_t i = (size_t)(t->tensor - mgpu_model_tensor_at(m, 0));
        bool q8 = t->tensor->info.dtype == MGPU_DTYPE_Q8_0;
        q8_adapted += q8;
        assert_int_equal(mask[i], !q8);
    }
    assert_true(q8_adapted > 0);
    assert_true(mgpu_lora_set_merged_adapter_count(l.set) < mgpu_lora_set_adapter_count(l.set));
    close_lora(&l);
    mgpu_plan_free(plan);
    mgpu_backend_free(be);
    mgpu_model_close(m);
    remove(path);
}

static int setup(void **state)
{
    (void)state;
    snprintf(model_path, sizeof model_path, "%s", test_path("la-flux.safetensors"));
    snprintf(merged_path, sizeof merged_path, "%s", test_path("la-merged.safetensors"));
    snprintf(lora_path, sizeof lora_path, "%s", test_path("la-lora.safetensors"));
    snprintf(inputs_path, sizeof inputs_path, "%s", test_path("la-in.safetensors"));
    mgpu_error err = {0};
    synth_options o = {.arch = "flux-dev", .scale = SYNTH_SCALE_TINY, .gguf = 0,
                       .dtype = MGPU_DTYPE_BF16, .seed = 61, .prefix = "", .out = model_path};
    synth_lora_list list = {0};
    if (synth_write(&o, &err) != MGPU_OK ||
        synth_write_flux_inputs("flux-dev", SYNTH_SCALE_TINY, 1, 6, 8, 5, 62, inputs_path, &err) !=
            MGPU_OK ||
        !synth_lora_modules("flux-dev", SYNTH_LORA_DIFFUSERS, 4, 2.0f, 1, &list) ||
        synth_lora_write(lora_path, &list, SYNTH_LORA_DIFFUSERS, MGPU_DTYPE_F16, 63, &err) !=
            MGPU_OK) {
        fprintf(stderr, "setup: %s\n", err.message);
        synth_lora_list_free(&list);
        return -1;
    }
    synth_lora_list_free(&list);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    remove(model_path);
    remove(merged_path);
    remove(lora_path);
    remove(inputs_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_applied_equals_merged),
        cmocka_unit_test(test_merge_once),
        cmocka_unit_test(test_merge_streamed),
        cmocka_unit_test(test_merge_skips_quantized),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
