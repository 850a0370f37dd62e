/* mgpu generate: text to image with FLUX.1. Parses the options into a
 * pipeline request, prints each component's plan, a progress bar while
 * sampling and a summary per stage, and writes the PNG (whole or not at
 * all) with the generation parameters as text chunks. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/units.h"
#include "image/png_write.h"
#include "pipeline/t2i.h"

static void usage(FILE *f)
{
    fputs("usage: mgpu generate --model FILE --prompt TEXT -o OUT.png [options]\n"
          "  components (each defaults to the --model file, for all-in-one checkpoints):\n"
          "    --model FILE       FLUX.1 dev or schnell diffusion model (safetensors or GGUF)\n"
          "    --clip FILE        CLIP-L text encoder      --clip-tokenizer PATH\n"
          "    --t5 FILE          T5-XXL text encoder      --t5-tokenizer PATH\n"
          "    --vae FILE         FLUX VAE (ae.safetensors)\n"
          "  image:\n"
          "    --width N --height N   multiples of 16 (default 1024x1024)\n"
          "    --steps N              default: 20 for dev, 4 for schnell\n"
          "    --guidance G           distilled guidance for dev (default 3.5)\n"
          "    --seed N               default 0; the same seed gives the same image\n"
          "    --batch N              images from one noise draw (default 1)\n"
          "  placement, per component (PREFIX: none for the diffusion model, clip-, t5-, vae-):\n"
          "    --[PREFIX]compute DEV  compute device (default: --compute, else first GPU, else cpu)\n"
          "    --[PREFIX]alloc STRING allocation string (docs/allocation.md)\n"
          "    --devices SPEC         simulated devices (or $MGPU_DEVICES)\n"
          "  engine:\n"
          "    --threads N  --gemm auto|f32|bf16|fp8  --staging SIZE  --vae-tile N (latent pixels)\n"
          "    --set KEY=VALUE        FLUX settings not stored in the weights (num_heads, ...)\n"
          "    --lora FILE[:STRENGTH] a LoRA for FLUX.1, CLIP-L and/or T5 (repeatable)\n"
          "    --lora-merge           merge LoRAs once into F32/F16/BF16 weights held on the\n"
          "                           compute device: no per-step cost, but the sum is rounded\n"
          "                           to the weight's dtype (docs/lora.md); default: applied\n"
          "                           in f32 at every use\n",
          f);
}

typedef struct progress {
    bool tty;
    double step_total;
} progress;

static void print_plan(const mgpu_t2i_event *ev)
{
    const mgpu_plan *p = ev->plan;
    const mgpu_model_file *f = mgpu_model_file_at(p->model, 0);
    printf("== %s: %s, computing on %s\n", mgpu_t2i_stage_name(ev->stage), f->path,
           p->devices->devices[p->compute].name);
    cli_print_plan_tables(p);
    printf("\n");
    fflush(stdout);
}

static void on_event(void *context, const mgpu_t2i_event *ev)
{
    progress *pr = context;
    switch (ev->kind) {
    case MGPU_T2I_PLANNED:
        print_plan(ev);
        break;
    case MGPU_T2I_STAGE_START:
        fprintf(stderr, "mgpu: %s ...\n", mgpu_t2i_stage_name(ev->stage));
        break;
    case MGPU_T2I_STEP: {
        pr->step_total += ev->step_seconds;
        double per = pr->step_total / ev->step;
        double eta = per * (ev->steps - ev->step);
        enum { WIDTH = 30 };
        char bar[WIDTH + 1];
        int filled = (int)((int64_t)WIDTH * ev->step / ev->steps);
        for (int i = 0; i < WIDTH; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[WIDTH] = '\0';
        fprintf(stderr, "%smgpu: sampling [%s] %d/%d  %.2f s/step  ETA %.0f s%s",
                pr->tty ? "\r" : "", bar, ev->step, ev->steps, per, eta,
                pr->tty && ev->step < ev->steps ? "" : "\n");
        break;
    }
    case MGPU_T2I_STAGE_DONE:
        break;
    }
}

static void print_summary(const mgpu_t2i_result *res)
{
    fprintf(stderr, "mgpu: %-9s %9s %-8s %11s %9s %8s %22s\n", "stage", "seconds", "compute",
            "streamed", "copy s", "overlap", "held / predicted MiB");
    for (int s = 0; s < MGPU_T2I_STAGES; s++) {
        const mgpu_t2i_stage_stats *st = &res->stage[s];
        uint64_t streamed = 0;
        for (size_t d = 0; d < MGPU_MAX_DEVICES; d++)
            streamed += st->exec.bytes_copied[d];
        double overlap = st->exec.copy_seconds > 0
                             ? 1.0 - st->exec.wait_seconds / st->exec.copy_seconds
                             : 1.0;
        char moved[32];
        cli_format_bytes(streamed, moved, sizeof moved);
        fprintf(stderr, "mgpu: %-9s %9.2f %-8s %11s %9.2f %7.0f%% %10.1f / %9.1f\n",
                mgpu_t2i_stage_name((mgpu_t2i_stage)s), st->seconds, st->compute, moved,
                st->exec.copy_seconds, 100.0 * (overlap < 0 ? 0 : overlap),
                (double)st->held_peak_bytes / 1048576.0, (double)st->predicted_bytes / 1048576.0);
    }
    for (int s = 0; s < MGPU_T2I_STAGES; s++) { /* a GPU's sources, when it streamed */
        const mgpu_exec_stats *e = &res->stage[s].exec;
        if (e->pinned_bytes || e->pageable_bytes || e->donor_bytes)
            fprintf(stderr,
                    "mgpu: %s streamed from %.1f MiB of pinned RAM, %.1f MiB of pageable RAM, "
                    "%.1f MiB on donor GPUs\n",
                    mgpu_t2i_stage_name((mgpu_t2i_stage)s), (double)e->pinned_bytes / 1048576.0,
                    (double)e->pageable_bytes / 1048576.0, (double)e->donor_bytes / 1048576.0);
    }
    fprintf(stderr, "mgpu: total %.2f s", res->total_seconds);
    if (res->lora_adapters)
        fprintf(stderr, "; %zu LoRA adapters applied", res->lora_adapters);
    if (res->lora_merged)
        fprintf(stderr, " (%zu merged into their weights)", res->lora_merged);
    if (res->clip_dropped > 0)
        fprintf(stderr, "; CLIP kept the first 75 tokens, %" PRId64 " cut", res->clip_dropped);
    fprintf(stderr, "\n");
}

/* OUT.png for one image; OUT-0.png, OUT-1.png ... for a batch. */
static void image_path(const char *out, int batch, int b, char *buf, size_t size)
{
    if (batch == 1) {
        snprintf(buf, size, "%s", out);
        return;
    }
    const char *dot = strrchr(out, '.'), *slash = strrchr(out, '/');
    if (!dot || (slash && dot < slash))
        dot = out + strlen(out);
    snprintf(buf, size, "%.*s-%d%s", (int)(dot - out), out, b, dot);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int parse_int(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < lo || n > hi) {
        cli_error("generate: %s takes a whole number from %ld to %ld, not '%s'", flag, lo, hi, v);
        return CLI_EXIT_USAGE;
    }
    *out = n;
    return CLI_EXIT_OK;
}

int cli_generate(int argc, char **argv)
{
    mgpu_t2i_request q = {.width = 1024, .height = 1024, .batch = 1, .guidance = 3.5f,
                          .gemm = MGPU_GEMM_AUTO};
    const char *out_path = NULL, *spec = NULL;
    long steps = 0;
    static char lora_path[CLI_MAX_LORAS][4096];
    static const char *lora_paths[CLI_MAX_LORAS];
    static float lora_strength[CLI_MAX_LORAS];
    static const char *const prefixes[MGPU_T2I_STAGES] = {"clip-", "t5-", "", "vae-"};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        if (strcmp(a, "--lora-merge") == 0) {
            q.lora_merge = true;
            continue;
        }
        if (i + 1 >= argc) {
            cli_error("generate: %s needs a value", a);
            return CLI_EXIT_USAGE;
        }
        const char *v = argv[++i];
        long n = 0;
        int rc = CLI_EXIT_OK;
        bool matched = false;
        for (int s = 0; s < MGPU_T2I_STAGES && !matched; s++) {
            char flag[32];
            snprintf(flag, sizeof flag, "--%scompute", prefixes[s]);
            if (strcmp(a, flag) == 0) {
                q.slot[s].compute = v, matched = true;
                if (s == MGPU_T2I_DIFFUSION)
                    q.compute = v; /* --compute is everyone's default */
            }
            snprintf(flag, sizeof flag, "--%salloc", prefixes[s]);
            if (strcmp(a, flag) == 0)
                q.slot[s].alloc = v, matched = true;
        }
        if (matched)
            continue;
        if (strcmp(a, "--model") == 0)
            q.slot[MGPU_T2I_DIFFUSION].path = v;
        else if (strcmp(a, "--clip") == 0)
            q.slot[MGPU_T2I_CLIP].path = v;
        else if (strcmp(a, "--t5") == 0)
            q.slot[MGPU_T2I_T5].path = v;
        else if (strcmp(a, "--vae") == 0)
            q.slot[MGPU_T2I_VAE].path = v;
        else if (strcmp(a, "--clip-tokenizer") == 0)
            q.clip_tokenizer = v;
        else if (strcmp(a, "--t5-tokenizer") == 0)
            q.t5_tokenizer = v;
        else if (strcmp(a, "--prompt") == 0)
            q.prompt = v;
        else if (strcmp(a, "-o") == 0)
            out_path = v;
        else if (strcmp(a, "--devices") == 0)
            spec = v;
        else if (strcmp(a, "--width") == 0)
            rc = parse_int(a, v, 16, 8192, &n), q.width = n;
        else if (strcmp(a, "--height") == 0)
            rc = parse_int(a, v, 16, 8192, &n), q.height = n;
        else if (strcmp(a, "--steps") == 0)
            rc = parse_int(a, v, 1, 1000, &steps);
        else if (strcmp(a, "--batch") == 0)
            rc = parse_int(a, v, 1, 64, &n), q.batch = (int)n;
        else if (strcmp(a, "--threads") == 0)
            rc = parse_int(a, v, 0, 1024, &n), q.threads = (int)n;
        else if (strcmp(a, "--vae-tile") == 0)
            rc = parse_int(a, v, 0, 1024, &n), q.tiling.tile = n, q.tiling.overlap = n / 4;
        else if (strcmp(a, "--seed") == 0) {
            char *end;
            unsigned long long s = strtoull(v, &end, 10);
            if (!*v || *end || *v == '-') {
                cli_error("generate: --seed takes a whole number, not '%s'", v);
                return CLI_EXIT_USAGE;
            }
            q.seed = s;
        } else if (strcmp(a, "--guidance") == 0) {
            char *end;
            double g = strtod(v, &end);
            if (!*v || *end || !(g >= 0 && g <= 100)) {
                cli_error("generate: --guidance takes a number from 0 to 100, not '%s'", v);
                return CLI_EXIT_USAGE;
            }
            q.guidance = (float)g;
        } else if (strcmp(a, "--gemm") == 0)
            rc = cli_parse_gemm(v, &q.gemm);
        else if (strcmp(a, "--staging") == 0) {
            size_t at;
            if (mgpu_parse_bytes(v, strlen(v), &q.staging_bytes, &at) != MGPU_UNIT_OK) {
                cli_error("generate: --staging takes a size like 512mb, not '%s'", v);
                return CLI_EXIT_USAGE;
            }
        } else if (strcmp(a, "--set") == 0) {
            rc = cli_flux_setting(v, &q.flux);
        } else if (strcmp(a, "--lora") == 0) {
            if (q.n_lora == CLI_MAX_LORAS) {
                cli_error("generate: at most %d LoRAs", CLI_MAX_LORAS);
                return CLI_EXIT_USAGE;
            }
            rc = cli_parse_lora(v, lora_path[q.n_lora], sizeof lora_path[0],
                                &lora_strength[q.n_lora]);
            lora_paths[q.n_lora] = lora_path[q.n_lora];
            q.n_lora++;
        } else {
            cli_error("generate: unknown option '%s' (try mgpu generate --help)", a);
            return CLI_EXIT_USAGE;
        }
        if (rc != CLI_EXIT_OK)
            return rc;
    }
    if (!q.slot[MGPU_T2I_DIFFUSION].path || !q.prompt || !out_path) {
        cli_error("generate: --model, --prompt and -o are required");
        return CLI_EXIT_USAGE;
    }
    q.steps = (int)steps;
    q.lora_paths = lora_paths;
    q.lora_strengths = lora_strength;
    mgpu_device_list *devices = malloc(sizeof *devices);
    if (!devices) {
        cli_error("out of memory");
        return CLI_EXIT_FAILURE;
    }
    int rc = cli_load_devices(spec, devices);
    if (rc != CLI_EXIT_OK) {
        free(devices);
        return rc;
    }
    q.devices = devices;
    progress pr = {isatty(STDERR_FILENO) != 0, 0.0};
    q.progress = on_event;
    q.progress_context = &pr;
    mgpu_t2i_result res;
    mgpu_error err = {0};
    if (mgpu_t2i_run(&q, &res, &err) != MGPU_OK) {
        cli_error("%s", err.message);
        free(devices);
        return CLI_EXIT_FAILURE;
    }
    print_summary(&res);
    /* The parameters as A1111-style text, which image viewers and
     * ComfyUI-style tools show. */
    char params[4096];
    snprintf(params, sizeof params,
             "%s\nSteps: %d, Sampler: euler, Schedule: %s, Guidance: %g, Seed: %llu, Size: "
             "%lldx%lld, Model: %s, Batch: %d, mgpu 0.1.0",
             q.prompt, res.steps, res.arch, (double)q.guidance, (unsigned long long)q.seed,
             (long long)res.width, (long long)res.height,
             base_name(q.slot[MGPU_T2I_DIFFUSION].path), res.batch);
    for (int b = 0; b < res.batch && rc == CLI_EXIT_OK; b++) {
        char path[4096], index[16];
        image_path(out_path, res.batch, b, path, sizeof path);
        snprintf(index, sizeof index, "%d", b);
        mgpu_png_text texts[] = {{"parameters", params}, {"prompt", q.prompt},
                                 {"Software", "mgpu 0.1.0"}, {"batch index", index}};
        size_t n_texts = res.batch > 1 ? 4 : 3;
        if (mgpu_png_write(path, res.rgb + (size_t)b * (size_t)(res.width * res.height * 3),
                           (int)res.width, (int)res.height, texts, n_texts, &err) != MGPU_OK) {
            cli_error("%s", err.message);
            rc = CLI_EXIT_FAILURE;
        } else {
            fprintf(stderr, "mgpu: wrote %s\n", path);
        }
    }
    mgpu_t2i_result_free(&res);
    free(devices);
    return rc;
}
