/* See t2i.h. The order of work: check the request, open every file and find
 * each component by architecture, load the models (tensor checks), open
 * the tokenizers, plan all four components, and only then compute, stage by
 * stage. Every failure before compute names the slot and the file. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/error.h"
#include "models/clip.h"
#include "models/t5.h"
#include "pipeline/t2i.h"
#include "sample/flow.h"
#include "sample/noise.h"
#include "image/image.h"
#include "lora/lora_apply.h"
#include "text/tokenizer.h"
#include "mgpu/gguf.h"

enum {
    MAX_SIDE = 8192,
    MAX_BATCH = 64,
    /* T5 context: ComfyUI pads FLUX's T5 input to at least 256 tokens; BFL's
     * reference takes at most 512 (dev), the length T5 was trained on. A
     * longer prompt is refused rather than cut silently. */
    T5_MIN = MGPU_T5_FLUX_MIN_LENGTH,
    T5_MAX = 512,
};

static const char *const STAGE_NAMES[MGPU_T2I_STAGES] = {"clip", "t5", "diffusion", "vae"};
static const char *const SLOT_FLAGS[MGPU_T2I_STAGES] = {"--clip", "--t5", "--model", "--vae"};
static const char *const WANTED[MGPU_T2I_STAGES] = {
    "a CLIP-L text encoder", "a T5-XXL text encoder", "a FLUX.1 diffusion model",
    "a FLUX VAE (16 latent channels)"};

const char *mgpu_t2i_stage_name(mgpu_t2i_stage stage)
{
    return stage < MGPU_T2I_STAGES ? STAGE_NAMES[stage] : "?";
}

typedef struct slot_state {
    const char *path;
    mgpu_model *model;
    bool owned; /* several slots may share one file */
    int component;
    mgpu_plan *plan;
} slot_state;

typedef struct run {
    const mgpu_t2i_request *req;
    mgpu_t2i_result *res;
    mgpu_error *err;
    slot_state slot[MGPU_T2I_STAGES];
    mgpu_clip *clip;
    mgpu_t5 *t5;
    mgpu_flux *flux;
    mgpu_vae *vae;
    mgpu_tokenizer *clip_tok, *t5_tok;
    mgpu_backend *be[MGPU_MAX_DEVICES]; /* by compute device */
    int32_t clip_ids[MGPU_CLIP_CONTEXT];
    int64_t eos_index;
    int32_t *t5_ids;
    int64_t t5_len;
    int steps;
    mgpu_lora **loras;
    mgpu_lora_resolved **resolved;
} run;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void emit(run *r, mgpu_t2i_event ev)
{
    if (r->req->progress)
        r->req->progress(r->req->progress_context, &ev);
}

static bool arch_fits(mgpu_t2i_stage s, mgpu_arch a)
{
    switch (s) {
    case MGPU_T2I_CLIP:
        return a == MGPU_ARCH_CLIP_L;
    case MGPU_T2I_T5:
        return a == MGPU_ARCH_T5;
    case MGPU_T2I_DIFFUSION:
        return a == MGPU_ARCH_FLUX_DEV || a == MGPU_ARCH_FLUX_SCHNELL;
    case MGPU_T2I_VAE:
        return a == MGPU_ARCH_VAE_FLUX;
    default:
        return false;
    }
}

/* "t5, clip-l" */
static void archs_of(const mgpu_model *m, char *buf, size_t size)
{
    buf[0] = '\0';
    for (size_t c = 0; c < mgpu_model_component_count(m); c++)
        snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", c ? ", " : "",
                 mgpu_arch_name(mgpu_model_component_at(m, c)->arch));
}

static mgpu_status check_request(const mgpu_t2i_request *q, mgpu_error *err)
{
    if (!q->slot[MGPU_T2I_DIFFUSION].path)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "no diffusion model: --model FILE is needed");
    if (q->width < 16 || q->height < 16 || q->width % 16 || q->height % 16 ||
        q->width > MAX_SIDE || q->height > MAX_SIDE)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "image size %lldx%lld: width and height must be multiples of 16 "
                              "from 16 to %d",
                              (long long)q->width, (long long)q->height, MAX_SIDE);
    if (q->steps < 0 || q->steps > MGPU_FLOW_MAX_STEPS)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "steps must be from 1 to %d, not %d",
                              MGPU_FLOW_MAX_STEPS, q->steps);
    if (q->batch < 1 || q->batch > MAX_BATCH)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "batch must be from 1 to %d, not %d",
                              MAX_BATCH, q->batch);
    if (!(q->guidance >= 0.0f && q->guidance <= 100.0f))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "guidance must be from 0 to 100");
    const char *p = q->prompt ? q->prompt : "";
    while (*p && isspace((unsigned char)*p))
        p++;
    if (!*p)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "the prompt is empty");
    return MGPU_OK;
}

/* Opens each slot's file (once per distinct path) and finds its component. */
static mgpu_status open_slots(run *r)
{
    const mgpu_t2i_request *q = r->req;
    for (int s = 0; s < MGPU_T2I_STAGES; s++) {
        slot_state *st = &r->slot[s];
        bool own_file = q->slot[s].path != NULL;
        st->path = own_file ? q->slot[s].path : q->slot[MGPU_T2I_DIFFUSION].path;
        for (int o = 0; o < s && !st->model; o++)
            if (strcmp(r->slot[o].path, st->path) == 0)
                st->model = r->slot[o].model;
        if (!st->model) {
            mgpu_status rc = mgpu_model_open(st->path, &st->model, r->err);
            if (rc != MGPU_OK)
                return rc;
            st->owned = true;
        }
        st->component = -1;
        for (size_t c = 0; c < mgpu_model_component_count(st->model) && st->component < 0; c++)
            if (arch_fits((mgpu_t2i_stage)s, mgpu_model_component_at(st->model, c)->arch))
                st->component = (int)c;
        if (st->component < 0) {
            char found[256];
            archs_of(st->model, found, sizeof found);
            if (own_file || s == MGPU_T2I_DIFFUSION)
                return mgpu_error_set(r->err, MGPU_ERR_ARGUMENT, "%s %s: holds %s, not %s",
                                      SLOT_FLAGS[s], st->path, found, WANTED[s]);
            return mgpu_error_set(r->err, MGPU_ERR_ARGUMENT,
                                  "no %s component: give %s FILE (%s holds %s)",
                                  STAGE_NAMES[s], SLOT_FLAGS[s], st->path, found);
        }
    }
    return MGPU_OK;
}

static mgpu_status load_models(run *r)
{
    slot_state *s = r->slot;
    mgpu_status rc = mgpu_clip_load(s[MGPU_T2I_CLIP].model, s[MGPU_T2I_CLIP].component, &r->clip,
                                    r->err);
    if (rc == MGPU_OK)
        rc = mgpu_t5_load(s[MGPU_T2I_T5].model, s[MGPU_T2I_T5].component, &r->t5, r->err);
    if (rc == MGPU_OK)
        rc = mgpu_flux_load(s[MGPU_T2I_DIFFUSION].model, s[MGPU_T2I_DIFFUSION].component,
                            &r->req->flux, &r->flux, r->err);
    if (rc == MGPU_OK)
        rc = mgpu_vae_load(s[MGPU_T2I_VAE].model, s[MGPU_T2I_VAE].component, &r->vae, r->err);
    if (rc != MGPU_OK)
        return rc;
    const mgpu_flux_config *f = mgpu_flux_get_config(r->flux);
    const mgpu_clip_config *c = mgpu_clip_get_config(r->clip);
    const mgpu_t5_config *t = mgpu_t5_get_config(r->t5);
    const mgpu_vae_config *v = mgpu_vae_get_config(r->vae);
    if (c->hidden != f->vec_dim)
        return mgpu_error_set(r->err, MGPU_ERR_ARGUMENT,
                              "the CLIP encoder's width %lld does not match the diffusion model's "
                              "pooled input %lld",
                              (long long)c->hidden, (long long)f->vec_dim);
    if (t->d_model != f->context_dim)
        return mgpu_error_set(r->err, MGPU_ERR_ARGUMENT,
                              "the T5 encoder's width %lld does not match the diffusion model's "
                              "context %lld",
                              (long long)t->d_model, (long long)f->context_dim);
    if (v->z_channels * 4 != f->in_channels || v->downscale != 8)
        return mgpu_error_set(r->err, MGPU_ERR_ARGUMENT,
                              "the VAE (%lld latent channels, /%lld) does not fit the diffusion "
                              "model (%lld packed channels)",
                              (long long)v->z_channels, (long long)v->downscale,
                              (long long)f->in_channels);
    return MGPU_OK;
}

/* The order of parts LoRAs are resolved against. */
static const mgpu_t2i_stage LORA_PARTS[3] = {MGPU_T2I_CLIP, MGPU_T2I_T5, MGPU_T2I_DIFFUSION};

static mgpu_status open_loras(run *r)
{
    const mgpu_t2i_request *q = r->req;
    if (!q->n_lora)
        return MGPU_OK;
    r->loras = calloc(q->n_lora, sizeof *r->loras);
    r->resolved = calloc(q->n_lora, sizeof *r->resolved);
    if (!r->loras || !r->resolved)
        return mgpu_error_set(r->err, MGPU_ERR_NO_MEMORY, "out of memory");
    mgpu_lora_part parts[3];
    for (int p = 0; p < 3; p++)
        parts[p] = (mgpu_lora_part){r->slot[LORA_PARTS[p]].model, r->slot[LORA_PARTS[p]].component};
    for (size_t i = 0; i < q->n_lora; i++) {
        mgpu_status rc = mgpu_lora_open(q->lora_paths[i], &r->loras[i], r->err);
        if (rc == MGPU_OK)
            rc = mgpu_lora_resolve(r->loras[i], parts, 3, &r->resolved[i], r->err);
        if (rc != MGPU_OK)
            return rc;
    }
    return MGPU_OK;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* An explicit path; a T5 GGUF's own metadata; else tokenizer folders beside
 * the component's file, as the published layouts name them. */
static mgpu_status open_tokenizer(run *r, mgpu_t2i_stage s, const char *explicit_path,
                                  mgpu_tokenizer_kind kind, mgpu_tokenizer **out)
{
    const char *flag = s == MGPU_T2I_CLIP ? "--clip-tokenizer" : "--t5-tokenizer";
    if (explicit_path) {
        mgpu_status rc = mgpu_tokenizer_open(explicit_path, out, r->err);
        if (rc == MGPU_OK && mgpu_tokenizer_get_kind(*out) != kind)
            return mgpu_error_set(r->err, MGPU_ERR_ARGUMENT, "%s %s: not a %s tokenizer", flag,
                                  explicit_path, kind == MGPU_TOKENIZER_CLIP_BPE ? "CLIP BPE" : "T5 unigram");
        return rc;
    }
    const mgpu_model *m = r->slot[s].model;
    const mgpu_model_file *f = mgpu_model_file_at(m, 0);
    if (kind == MGPU_TOKENIZER_T5_UNIGRAM && f->format == MGPU_FORMAT_GGUF) {
        mgpu_gguf *g = NULL;
        mgpu_error ignore = {0};
        if (mgpu_gguf_open(f->path, &g, &ignore) == MGPU_OK) {
            mgpu_status rc = mgpu_tokenizer_from_gguf(g, f->path, out, r->err);
            mgpu_gguf_close(g);
            if (rc != MGPU_ERR_NOT_FOUND)
                return rc;
        }
    }
    /* the folder of the component's file */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", f->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    const char *names[2][3] = {{"clip_tokenizer", "tokenizer", "../tokenizer"},
                               {"t5_tokenizer", "tokenizer_2", "../tokenizer_2"}};
    for (int i = 0; i < 3; i++) {
        char cand[1100];
        snprintf(cand, sizeof cand, "%s/%s", dir, names[kind == MGPU_TOKENIZER_T5_UNIGRAM][i]);
        if (!exists(cand))
            continue;
        mgpu_error e = {0};
        if (mgpu_tokenizer_open(cand, out, &e) == MGPU_OK) {
            if (mgpu_tokenizer_get_kind(*out) == kind)
                return MGPU_OK;
            mgpu_tokenizer_free(*out);
            *out = NULL;
        }
    }
    return mgpu_error_set(r->err, MGPU_ERR_NOT_FOUND,
                          "no %s tokenizer found beside %s: give %s (a tokenizer.json, %s or a "
                          "folder holding one)",
                          STAGE_NAMES[s], f->path, flag,
                          kind == MGPU_TOKENIZER_CLIP_BPE ? "vocab.json + merges.txt"
                                                          : "spiece.model");
}

static mgpu_status tokenize(run *r)
{
    const mgpu_t2i_request *q = r->req;
    mgpu_status rc = open_tokenizer(r, MGPU_T2I_CLIP, q->clip_tokenizer, MGPU_TOKENIZER_CLIP_BPE,
                                    &r->clip_tok);
    if (rc == MGPU_OK)
        rc = open_tokenizer(r, MGPU_T2I_T5, q->t5_tokenizer, MGPU_TOKENIZER_T5_UNIGRAM, &r->t5_tok);
    if (rc == MGPU_OK)
        rc = mgpu_tokenizer_encode_clip77(r->clip_tok, q->prompt, MGPU_CLIP_TRUNCATE_WORDS,
                                          r->clip_ids, &r->eos_index, &r->res->clip_dropped,
                                          r->err);
    int64_t need = 0;
    if (rc == MGPU_OK)
        rc = mgpu_tokenizer_encode_t5(r->t5_tok, q->prompt, T5_MIN, 0, NULL, 0, &need, NULL,
                                      r->err) == MGPU_OK ||
                     need > 0
                 ? MGPU_OK
                 : r->err->status;
    if (rc == MGPU_OK && need > T5_MAX)
        return mgpu_error_set(r->err, MGPU_ERR_ARGUMENT,
                              "the prompt is %lld T5 tokens long; FLUX takes at most %d",
                              (long long)need - 1, T5_MAX - 1);
    if (rc == MGPU_OK) {
        r->t5_ids = malloc((size_t)need * sizeof *r->t5_ids);
        if (!r->t5_ids)
            return mgpu_error_set(r->err, MGPU_ERR_NO_MEMORY, "out of memory");
        *r->err = (mgpu_error){0};
        rc = mgpu_tokenizer_encode_t5(r->t5_tok, q->prompt, T5_MIN, 0, r->t5_ids, need, &r->t5_len,
                                      &r->res->t5_dropped, r->err);
        r->res->t5_tokens = r->t5_len;
    }
    return rc;
}

static mgpu_status make_plans(run *r)
{
    const mgpu_t2i_request *q = r->req;
    int64_t lh = q->height / 8, lw = q->width / 8;
    for (int s = 0; s < MGPU_T2I_STAGES; s++) {
        mgpu_plan_request pr = {
            .model = r->slot[s].model,
            .component = r->slot[s].component,
            .devices = q->devices,
            .alloc = q->slot[s].alloc,
            .compute = q->slot[s].compute ? q->slot[s].compute : q->compute,
            .reserve_bytes = s == MGPU_T2I_VAE ? mgpu_vae_decode_bytes(r->vae, lh, lw, &q->tiling)
                                               : 0,
            .pin_below_bytes = MGPU_PLAN_DEFAULT_PIN_BELOW,
        };
        mgpu_error e = {0};
        if (mgpu_plan_create(&pr, &r->slot[s].plan, &e) != MGPU_OK)
            return mgpu_error_set(r->err, e.status, "%s (%s): %s", STAGE_NAMES[s],
                                  r->slot[s].path, e.message);
        emit(r, (mgpu_t2i_event){.kind = MGPU_T2I_PLANNED, .stage = (mgpu_t2i_stage)s,
                                 .plan = r->slot[s].plan});
    }
    return MGPU_OK;
}

/* The backend that computes for a plan, one per device, made when a stage
 * first needs it and kept for the run. */
static mgpu_status backend_for(run *r, const mgpu_plan *plan, mgpu_backend **out)
{
    int d = plan->compute;
    if (!r->be[d]) {
        mgpu_status rc = mgpu_backend_for_device(&plan->devices->devices[d], r->req->threads,
                                                 r->req->gemm, &r->be[d], r->err);
        if (rc != MGPU_OK)
            return rc;
    }
    *out = r->be[d];
    return MGPU_OK;
}

typedef struct stage_run {
    mgpu_t2i_stage stage;
    mgpu_executor *ex;
    mgpu_lora_set *lora;
    mgpu_backend *be;
    mgpu_tensor_source src;
    double t0;
} stage_run;

static mgpu_status stage_begin(run *r, mgpu_t2i_stage s, stage_run *sr)
{
    *sr = (stage_run){.stage = s, .t0 = now()};
    const mgpu_plan *plan = r->slot[s].plan;
    mgpu_status rc = backend_for(r, plan, &sr->be);
    if (rc == MGPU_OK) /* real donor GPUs, kept for the run like compute backends */
        rc = mgpu_executor_open_donors(plan, r->req->gemm, r->be, r->err);
    /* LoRA first: merged weights are not uploaded by the executor */
    for (size_t p = 0; rc == MGPU_OK && p < 3 && r->req->n_lora; p++)
        if (LORA_PARTS[p] == s) {
            rc = mgpu_lora_set_create(sr->be, r->slot[s].model,
                                      (const mgpu_lora_resolved *const *)r->resolved,
                                      r->req->lora_strengths, r->req->n_lora, p, &sr->lora, r->err);
            if (rc == MGPU_OK && r->req->lora_merge)
                rc = mgpu_lora_set_merge(sr->lora, plan, NULL, r->err);
            if (rc == MGPU_OK) {
                r->res->lora_adapters += mgpu_lora_set_adapter_count(sr->lora);
                r->res->lora_merged += mgpu_lora_set_merged_adapter_count(sr->lora);
            }
        }
    mgpu_executor_options opts = {
        .staging_bytes = r->req->staging_bytes,
        .pace_simulated = 1,
        .skip_resident = sr->lora ? mgpu_lora_set_merged_mask(sr->lora) : NULL,
        .device_backends = r->be,
    };
    if (rc == MGPU_OK)
        rc = mgpu_executor_create(plan, sr->be, &opts, &sr->ex, r->err);
    if (rc != MGPU_OK)
        return rc;
    sr->src = mgpu_executor_source(sr->ex);
    if (sr->lora)
        sr->src = mgpu_lora_set_source(sr->lora, sr->src);
    emit(r, (mgpu_t2i_event){.kind = MGPU_T2I_STAGE_START, .stage = s, .plan = plan});
    return MGPU_OK;
}

static void stage_end(run *r, stage_run *sr, bool ok)
{
    if (!sr->ex) {
        mgpu_lora_set_free(sr->lora);
        sr->lora = NULL;
        return;
    }
    mgpu_t2i_stage_stats *st = &r->res->stage[sr->stage];
    const mgpu_plan *plan = r->slot[sr->stage].plan;
    mgpu_executor_stats(sr->ex, &st->exec);
    mgpu_executor_free(sr->ex);
    sr->ex = NULL;
    mgpu_lora_set_free(sr->lora); /* after the executor: it reads the merged mask */
    sr->lora = NULL;
    st->seconds = now() - sr->t0;
    st->compute = plan->devices->devices[plan->compute].name;
    st->planned_bytes = plan->device[plan->compute].placed_bytes;
    st->held_peak_bytes = st->planned_bytes + st->exec.staging_peak_bytes;
    st->predicted_bytes = st->planned_bytes + st->exec.staging_budget_bytes;
    if (ok)
        emit(r, (mgpu_t2i_event){.kind = MGPU_T2I_STAGE_DONE, .stage = sr->stage, .plan = plan,
                                 .stats = st});
}

static mgpu_status compute(run *r, float **images)
{
    const mgpu_t2i_request *q = r->req;
    const mgpu_flux_config *f = mgpu_flux_get_config(r->flux);
    const mgpu_clip_config *cc = mgpu_clip_get_config(r->clip);
    const mgpu_t5_config *tc = mgpu_t5_get_config(r->t5);
    const int64_t B = q->batch, lh = q->height / 8, lw = q->width / 8, lat = f->in_channels / 4;
    const int64_t n_lat = lat * lh * lw, T = r->t5_len;
    float *clip_hidden = malloc((size_t)(MGPU_CLIP_CONTEXT * cc->hidden) * sizeof(float));
    float *y = malloc((size_t)(B * cc->hidden) * sizeof(float));
    float *ctx = malloc((size_t)(B * T * tc->d_model) * sizeof(float));
    float *x = malloc((size_t)(B * n_lat) * sizeof(float));
    float *v = malloc((size_t)(B * n_lat) * sizeof(float));
    float *ts = malloc((size_t)B * sizeof(float)), *gs = malloc((size_t)B * sizeof(float));
    double *sigmas = malloc((size_t)(r->steps + 1) * sizeof(double));
    float *img = malloc((size_t)(B * 3 * q->width * q->height) * sizeof(float));
    mgpu_status rc = MGPU_OK;
    if (!clip_hidden || !y || !ctx || !x || !v || !ts || !gs || !sigmas || !img)
        rc = mgpu_error_set(r->err, MGPU_ERR_NO_MEMORY, "out of memory for a %lldx%lld batch of %lld",
                            (long long)q->width, (long long)q->height, (long long)B);
    stage_run sr = {0};
    /* CLIP: the pooled vector at the first end token */
    if (rc == MGPU_OK)
        rc = stage_begin(r, MGPU_T2I_CLIP, &sr);
    if (rc == MGPU_OK)
        rc = mgpu_clip_forward(r->clip, sr.be, &sr.src, r->clip_ids, MGPU_CLIP_CONTEXT,
                               r->eos_index, clip_hidden, y, r->err);
    stage_end(r, &sr, rc == MGPU_OK);
    for (int64_t b = 1; rc == MGPU_OK && b < B; b++)
        memcpy(y + b * cc->hidden, y, (size_t)cc->hidden * sizeof(float));
    /* T5: the context */
    if (rc == MGPU_OK)
        rc = stage_begin(r, MGPU_T2I_T5, &sr);
    if (rc == MGPU_OK)
        rc = mgpu_t5_forward(r->t5, sr.be, &sr.src, r->t5_ids, T, ctx, r->err);
    stage_end(r, &sr, rc == MGPU_OK);
    for (int64_t b = 1; rc == MGPU_OK && b < B; b++)
        memcpy(ctx + b * T * tc->d_model, ctx, (size_t)(T * tc->d_model) * sizeof(float));
    /* sampling: x starts as pure noise at sigma 1 */
    mgpu_flow_kind kind = f->guidance ? MGPU_FLOW_FLUX_DEV : MGPU_FLOW_FLUX_SCHNELL;
    if (rc == MGPU_OK)
        rc = mgpu_noise_randn(q->seed, x, B * n_lat, r->err);
    if (rc == MGPU_OK)
        rc = mgpu_flow_schedule(kind, mgpu_flow_image_tokens(q->width, q->height), r->steps,
                                sigmas, r->err);
    if (rc == MGPU_OK)
        rc = stage_begin(r, MGPU_T2I_DIFFUSION, &sr);
    for (int i = 0; rc == MGPU_OK && i < r->steps; i++) {
        double t0 = now();
        for (int64_t b = 0; b < B; b++) {
            ts[b] = (float)sigmas[i];
            gs[b] = q->guidance;
        }
        mgpu_flux_inputs in = {B, lh, lw, T, x, ts, ctx, y, f->guidance ? gs : NULL};
        rc = mgpu_flux_forward(r->flux, &sr.src, &in, v, sr.be, r->err);
        if (rc == MGPU_OK)
            mgpu_flow_euler_step(x, v, B * n_lat, sigmas[i], sigmas[i + 1]);
        if (rc == MGPU_OK)
            emit(r, (mgpu_t2i_event){.kind = MGPU_T2I_STEP, .stage = MGPU_T2I_DIFFUSION,
                                     .step = i + 1, .steps = r->steps,
                                     .step_seconds = now() - t0});
    }
    stage_end(r, &sr, rc == MGPU_OK);
    /* VAE: each image on its own */
    if (rc == MGPU_OK)
        rc = stage_begin(r, MGPU_T2I_VAE, &sr);
    for (int64_t b = 0; rc == MGPU_OK && b < B; b++)
        rc = mgpu_vae_decode(r->vae, sr.be, &sr.src, x + b * n_lat, lh, lw, &q->tiling,
                             img + b * 3 * q->width * q->height, r->err);
    stage_end(r, &sr, rc == MGPU_OK);
    free(clip_hidden);
    free(y);
    free(ctx);
    free(x);
    free(v);
    free(ts);
    free(gs);
    free(sigmas);
    if (rc != MGPU_OK) {
        free(img);
        img = NULL;
    }
    *images = img;
    return rc;
}

mgpu_status mgpu_t2i_run(const mgpu_t2i_request *q, mgpu_t2i_result *out, mgpu_error *err)
{
    memset(out, 0, sizeof *out);
    mgpu_status rc = check_request(q, err);
    if (rc != MGPU_OK)
        return rc;
    double t0 = now();
    run r = {.req = q, .res = out, .err = err};
    float *images = NULL;
    rc = open_slots(&r);
    if (rc == MGPU_OK)
        rc = load_models(&r);
    if (rc == MGPU_OK) /* BFL's defaults: 50 for dev is the reference, 20 is what users run */
        r.steps = q->steps ? q->steps : mgpu_flux_get_config(r.flux)->guidance ? 20 : 4;
    if (rc == MGPU_OK)
        rc = open_loras(&r);
    if (rc == MGPU_OK)
        rc = tokenize(&r);
    if (rc == MGPU_OK)
        rc = make_plans(&r);
    if (rc == MGPU_OK)
        rc = compute(&r, &images);
    int64_t pixels = q->width * q->height;
    if (rc == MGPU_OK) {
        out->rgb = malloc((size_t)(q->batch * pixels * 3));
        if (!out->rgb)
            rc = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    for (int b = 0; rc == MGPU_OK && b < q->batch; b++)
        rc = mgpu_image_to_rgb8(images + b * 3 * pixels, (int)q->width, (int)q->height,
                                out->rgb + b * pixels * 3, err);
    if (rc == MGPU_OK) {
        out->width = q->width;
        out->height = q->height;
        out->batch = q->batch;
        out->steps = r.steps;
        out->arch = mgpu_flux_get_config(r.flux)->guidance ? "flux-dev" : "flux-schnell";
        out->total_seconds = now() - t0;
    }
    free(images);
    free(r.t5_ids);
    for (size_t i = 0; i < q->n_lora && r.loras; i++) {
        mgpu_lora_resolved_free(r.resolved[i]);
        mgpu_lora_free(r.loras[i]);
    }
    free(r.loras);
    free(r.resolved);
    mgpu_tokenizer_free(r.clip_tok);
    mgpu_tokenizer_free(r.t5_tok);
    mgpu_clip_free(r.clip);
    mgpu_t5_free(r.t5);
    mgpu_flux_free(r.flux);
    mgpu_vae_free(r.vae);
    for (int s = 0; s < MGPU_T2I_STAGES; s++) {
        mgpu_plan_free(r.slot[s].plan);
        if (r.slot[s].owned)
            mgpu_model_close(r.slot[s].model);
    }
    for (int d = 0; d < MGPU_MAX_DEVICES; d++)
        mgpu_backend_free(r.be[d]);
    if (rc != MGPU_OK)
        mgpu_t2i_result_free(out);
    return rc;
}

void mgpu_t2i_result_free(mgpu_t2i_result *result)
{
    free(result->rgb);
    result->rgb = NULL;
}
