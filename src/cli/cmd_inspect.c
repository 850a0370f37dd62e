/* `mgpu inspect`: what a model file holds, read from headers only (except
 * --dump), as text or JSON. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "lora/lora.h"
#include "mgpu/model.h"
#include "mgpu/safetensors.h"

typedef struct inspect_options {
    int tensors;
    int json;
    const char *dump_name;
    const char *dump_out;
} inspect_options;

static const char *format_name(mgpu_file_format f)
{
    return f == MGPU_FORMAT_GGUF ? "gguf" : "safetensors";
}

static void shape_text(const mgpu_tensor_info *t, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < t->ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%" PRIu64, i ? ", " : "", t->shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static void print_summary(const char *path, const mgpu_model *m, const inspect_options *o)
{
    char a[64], b[64];
    uint64_t total_bytes = 0;
    for (size_t i = 0; i < mgpu_model_file_count(m); i++)
        total_bytes += mgpu_model_file_at(m, i)->bytes;
    const mgpu_model_file *f0 = mgpu_model_file_at(m, 0);
    cli_format_bytes(total_bytes, a, sizeof a);
    printf("%s\n", path);
    printf("  format      %s", format_name(f0->format));
    if (f0->format == MGPU_FORMAT_GGUF)
        printf(" v%" PRIu32, f0->gguf_version);
    printf(", %zu file%s, %s\n", mgpu_model_file_count(m), mgpu_model_file_count(m) == 1 ? "" : "s", a);
    for (size_t c = 0; c < mgpu_model_component_count(m); c++) {
        const mgpu_model_component *comp = mgpu_model_component_at(m, c);
        printf("  component   %s  prefix '%s'  (%s)\n", mgpu_arch_name(comp->arch), comp->prefix,
               comp->arch_reason);
        cli_format_count(comp->n_params, a, sizeof a);
        cli_format_bytes(comp->nbytes, b, sizeof b);
        printf("    params    %s (%" PRIu64 "), %s\n", a, comp->n_params, b);
        printf("    tensors   %" PRIu32 " in %" PRIu32 " modules, %" PRIu32 " blocks\n",
               comp->tensor_count, comp->module_count, comp->block_count);
        /* bytes by dtype */
        uint64_t by_dtype[MGPU_DTYPE_COUNT] = {0};
        uint32_t count_dtype[MGPU_DTYPE_COUNT] = {0};
        for (size_t i = 0; i < mgpu_model_tensor_count(m); i++) {
            const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
            if (t->component == c) {
                by_dtype[t->info.dtype] += t->info.nbytes;
                count_dtype[t->info.dtype]++;
            }
        }
        printf("    dtypes   ");
        for (int d = 1; d < MGPU_DTYPE_COUNT; d++)
            if (count_dtype[d]) {
                cli_format_bytes(by_dtype[d], a, sizeof a);
                printf(" %s %s (%" PRIu32 ")", mgpu_dtype_name((mgpu_dtype)d), a, count_dtype[d]);
            }
        printf("\n");
        /* blocks, as runs of one container */
        size_t nb = mgpu_model_block_count(m);
        for (size_t i = 0; i < nb;) {
            const mgpu_model_block *first = mgpu_model_block_at(m, i);
            if (first->component != c) {
                i++;
                continue;
            }
            const char *dot = strrchr(first->name, '.');
            size_t clen = dot ? (size_t)(dot - first->name) : strlen(first->name);
            size_t j = i;
            uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
            while (j < nb) {
                const mgpu_model_block *bj = mgpu_model_block_at(m, j);
                if (bj->component != c || strncmp(bj->name, first->name, clen) != 0 ||
                    bj->name[clen] != '.' || strchr(bj->name + clen + 1, '.'))
                    break;
                lo = bj->nbytes < lo ? bj->nbytes : lo;
                hi = bj->nbytes > hi ? bj->nbytes : hi;
                sum += bj->nbytes;
                j++;
            }
            if (j == i) { /* a block name with dots after its number cannot happen */
                j = i + 1;
                lo = hi = sum = first->nbytes;
            }
            cli_format_bytes(sum / (j - i), a, sizeof a);
            printf("    blocks    %.*s: %zu (%s each%s)\n", (int)clen, first->name, j - i, a,
                   lo == hi ? "" : " on average");
            i = j;
        }
    }
    size_t nmeta = mgpu_model_metadata_count(m);
    if (nmeta)
        printf("  metadata    %zu key%s\n", nmeta, nmeta == 1 ? "" : "s");
    for (size_t i = 0; i < nmeta; i++) {
        const char *k, *v;
        mgpu_model_metadata_at(m, i, &k, &v);
        size_t len = strlen(v);
        /* long values (embedded configs, vocabularies) are cut for the terminal */
        printf("    %s = %.*s%s\n", k, len > 120 ? 120 : (int)len, v, len > 120 ? "..." : "");
    }
    if (o->tensors) {
        printf("  tensors\n");
        for (size_t i = 0; i < mgpu_model_tensor_count(m); i++) {
            const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
            char shape[160];
            shape_text(&t->info, shape, sizeof shape);
            printf("    %-60s %-8s %-22s %12" PRIu64 " @ %" PRIu64 "\n", t->info.name,
                   mgpu_dtype_name(t->info.dtype), shape, t->info.nbytes, t->info.file_offset);
        }
    }
}

static json_t *shape_json(const mgpu_tensor_info *t)
{
    json_t *a = json_array();
    for (int i = 0; i < t->ndim; i++)
        json_array_append_new(a, json_integer((json_int_t)t->shape[i]));
    return a;
}

static json_t *model_json(const char *path, const mgpu_model *m)
{
    json_t *root = json_object();
    json_object_set_new(root, "path", json_string(path));
    json_t *files = json_array();
    for (size_t i = 0; i < mgpu_model_file_count(m); i++) {
        const mgpu_model_file *f = mgpu_model_file_at(m, i);
        json_t *jf = json_object();
        json_object_set_new(jf, "path", json_string(f->path));
        json_object_set_new(jf, "format", json_string(format_name(f->format)));
        json_object_set_new(jf, "bytes", json_integer((json_int_t)f->bytes));
        if (f->format == MGPU_FORMAT_GGUF)
            json_object_set_new(jf, "gguf_version", json_integer(f->gguf_version));
        json_array_append_new(files, jf);
    }
    json_object_set_new(root, "files", files);
    json_t *comps = json_array();
    for (size_t c = 0; c < mgpu_model_component_count(m); c++) {
        const mgpu_model_component *comp = mgpu_model_component_at(m, c);
        json_t *jc = json_object();
        json_object_set_new(jc, "prefix", json_string(comp->prefix));
        json_object_set_new(jc, "arch", json_string(mgpu_arch_name(comp->arch)));
        json_object_set_new(jc, "arch_reason", json_string(comp->arch_reason));
        json_object_set_new(jc, "params", json_integer((json_int_t)comp->n_params));
        json_object_set_new(jc, "bytes", json_integer((json_int_t)comp->nbytes));
        json_object_set_new(jc, "tensors", json_integer(comp->tensor_count));
        json_object_set_new(jc, "modules", json_integer(comp->module_count));
        json_object_set_new(jc, "blocks", json_integer(comp->block_count));
        json_t *bytes_by_dtype = json_object();
        for (size_t i = 0; i < mgpu_model_tensor_count(m); i++) {
            const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
            if (t->component != c)
                continue;
            const char *dn = mgpu_dtype_name(t->info.dtype);
            json_t *cur = json_object_get(bytes_by_dtype, dn);
            json_int_t prev = cur ? json_integer_value(cur) : 0;
            json_object_set_new(bytes_by_dtype, dn, json_integer(prev + (json_int_t)t->info.nbytes));
        }
        json_object_set_new(jc, "bytes_by_dtype", bytes_by_dtype);
        json_array_append_new(comps, jc);
    }
    json_object_set_new(root, "components", comps);
    json_t *blocks = json_array();
    for (size_t i = 0; i < mgpu_model_block_count(m); i++) {
        const mgpu_model_block *b = mgpu_model_block_at(m, i);
        json_t *jb = json_object();
        json_object_set_new(jb, "name", json_string(b->name));
        json_object_set_new(jb, "component", json_integer(b->component));
        json_object_set_new(jb, "modules", json_integer(b->module_count));
        json_object_set_new(jb, "bytes", json_integer((json_int_t)b->nbytes));
        json_array_append_new(blocks, jb);
    }
    json_object_set_new(root, "blocks", blocks);
    json_t *modules = json_array();
    for (size_t i = 0; i < mgpu_model_module_count(m); i++) {
        const mgpu_model_module *mod = mgpu_model_module_at(m, i);
        json_t *jm = json_object();
        json_object_set_new(jm, "name", json_string(mod->name));
        json_object_set_new(jm, "kind", json_string(mgpu_module_kind_name(mod->kind)));
        json_object_set_new(jm, "component", json_integer(mod->component));
        json_object_set_new(jm, "block", mod->block >= 0 ? json_integer(mod->block) : json_null());
        json_object_set_new(jm, "bytes", json_integer((json_int_t)mod->nbytes));
        json_array_append_new(modules, jm);
    }
    json_object_set_new(root, "modules", modules);
    json_t *tensors = json_array();
    for (size_t i = 0; i < mgpu_model_tensor_count(m); i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        json_t *jt = json_object();
        json_object_set_new(jt, "name", json_string(t->name));
        json_object_set_new(jt, "stored_name", json_string(t->info.name));
        json_object_set_new(jt, "component", json_integer(t->component));
        json_object_set_new(jt, "module", json_integer(t->module));
        json_object_set_new(jt, "dtype", json_string(mgpu_dtype_name(t->info.dtype)));
        json_object_set_new(jt, "shape", shape_json(&t->info));
        json_object_set_new(jt, "bytes", json_integer((json_int_t)t->info.nbytes));
        json_object_set_new(jt, "file", json_integer(t->file));
        json_object_set_new(jt, "offset", json_integer((json_int_t)t->info.file_offset));
        json_array_append_new(tensors, jt);
    }
    json_object_set_new(root, "tensors", tensors);
    json_t *meta = json_object();
    for (size_t i = 0; i < mgpu_model_metadata_count(m); i++) {
        const char *k, *v;
        mgpu_model_metadata_at(m, i, &k, &v);
        /* strings that are not UTF-8 cannot be JSON strings; skip, do not fail */
        json_t *js = json_string(v);
        if (js)
            json_object_set_new(meta, k, js);
    }
    json_object_set_new(root, "metadata", meta);
    return root;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int dump_tensor(const char *path, const mgpu_model *m, const inspect_options *o)
{
    const mgpu_model_tensor *t = mgpu_model_find(m, o->dump_name);
    if (!t) {
        cli_error("%s: no tensor named '%s'", path, o->dump_name);
        return CLI_EXIT_FAILURE;
    }
    uint64_t n = t->info.n_elems;
    if (n > SIZE_MAX / sizeof(float)) {
        cli_error("%s: tensor '%s' is too large to dump", path, o->dump_name);
        return CLI_EXIT_FAILURE;
    }
    float *values = malloc(n ? (size_t)n * sizeof(float) : 1);
    if (!values) {
        cli_error("%s: out of memory for %" PRIu64 " values of '%s'", path, n, o->dump_name);
        return CLI_EXIT_FAILURE;
    }
    mgpu_status s = mgpu_dequantize(t->info.dtype, t->info.data, values, n);
    if (s != MGPU_OK) {
        free(values);
        cli_error("%s: tensor '%s': cannot decode %s", path, o->dump_name,
                  mgpu_dtype_name(t->info.dtype));
        return CLI_EXIT_FAILURE;
    }
    mgpu_error err = {0};
    if (has_suffix(o->dump_out, ".safetensors")) {
        mgpu_safetensors_writer *w;
        s = mgpu_safetensors_writer_create(o->dump_out, &w, &err);
        if (s == MGPU_OK) {
            s = mgpu_safetensors_writer_add_tensor(w, t->info.name, MGPU_DTYPE_F32, t->info.ndim,
                                                   t->info.shape, &err);
            if (s == MGPU_OK)
                s = mgpu_safetensors_writer_write(w, values, n * sizeof(float), &err);
            if (s == MGPU_OK)
                s = mgpu_safetensors_writer_finish(w, &err);
            else
                mgpu_safetensors_writer_abort(w);
        }
    } else {
        FILE *f = NULL;
        char tmp[4096];
        if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", o->dump_out) >= sizeof tmp) {
            s = MGPU_ERR_ARGUMENT;
            snprintf(err.message, sizeof err.message, "%s: path too long", o->dump_out);
        } else if (!(f = fopen(tmp, "wb"))) {
            s = MGPU_ERR_IO;
            snprintf(err.message, sizeof err.message, "%s: cannot create", o->dump_out);
        } else {
            int ok = fwrite(values, sizeof(float), (size_t)n, f) == n;
            ok = fclose(f) == 0 && ok;
            if (!ok || rename(tmp, o->dump_out) != 0) {
                remove(tmp);
                s = MGPU_ERR_IO;
                snprintf(err.message, sizeof err.message, "%s: write failed", o->dump_out);
            }
        }
    }
    free(values);
    if (s != MGPU_OK) {
        cli_error("%s", err.message);
        return CLI_EXIT_FAILURE;
    }
    fprintf(stderr, "mgpu: wrote %" PRIu64 " f32 values of '%s' to %s\n", n, t->info.name,
            o->dump_out);
    return CLI_EXIT_OK;
}

/* A LoRA file: what it targets, as `mgpu inspect` shows it (the summary
 * of the file, then one line per module as written). */
static int print_lora(const char *path)
{
    mgpu_lora *l;
    mgpu_error err = {0};
    if (mgpu_lora_open(path, &l, &err) != MGPU_OK) {
        cli_error("%s", err.message);
        return CLI_EXIT_FAILURE;
    }
    mgpu_lora_summary s;
    mgpu_lora_summarize(l, &s);
    printf("  lora        %s format, %zu modules (diffusion %zu, clip %zu, t5 %zu)\n",
           mgpu_lora_format_name(s.format), s.modules, s.by_kind[MGPU_LORA_KIND_DIFFUSION],
           s.by_kind[MGPU_LORA_KIND_CLIP], s.by_kind[MGPU_LORA_KIND_T5]);
    printf("    rank      %lld..%lld, alpha %g..%g (%zu modules give one), factors %s\n",
           (long long)s.rank_min, (long long)s.rank_max, (double)s.alpha_min,
           (double)s.alpha_max, s.with_alpha,
           s.dtype == MGPU_DTYPE_INVALID ? "mixed dtypes" : mgpu_dtype_name(s.dtype));
    if (s.ignored)
        printf("    ignored   %zu tensors that are not LoRA factors\n", s.ignored);
    for (size_t i = 0; i < mgpu_lora_module_count(l); i++) {
        const mgpu_lora_module *m = mgpu_lora_module_at(l, i);
        printf("    %-9s %s  [%lld -> %lld, rank %lld]\n", mgpu_lora_kind_name(m->kind), m->name,
               (long long)m->in, (long long)m->out, (long long)m->rank);
    }
    mgpu_lora_free(l);
    return CLI_EXIT_OK;
}

static void inspect_usage(void)
{
    fputs("usage: mgpu inspect FILE... [--tensors] [--json] [--dump NAME -o OUT]\n"
          "  FILE        .safetensors, .gguf, *.safetensors.index.json, or a folder\n"
          "  --tensors   list every tensor (name, dtype, shape, bytes, offset)\n"
          "  --json      everything as one JSON document on stdout\n"
          "  --dump NAME -o OUT  write one tensor as f32: OUT.safetensors or raw\n",
          stderr);
}

int cli_inspect(int argc, char **argv)
{
    inspect_options o = {0};
    const char *paths[256];
    int npaths = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--tensors") == 0) {
            o.tensors = 1;
        } else if (strcmp(a, "--json") == 0) {
            o.json = 1;
        } else if (strcmp(a, "--dump") == 0 || strcmp(a, "-o") == 0) {
            if (i + 1 >= argc) {
                cli_error("inspect: %s needs a value", a);
                return CLI_EXIT_USAGE;
            }
            if (a[1] == 'o')
                o.dump_out = argv[++i];
            else
                o.dump_name = argv[++i];
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            inspect_usage();
            return CLI_EXIT_OK;
        } else if (a[0] == '-' && a[1] != '\0') {
            cli_error("inspect: unknown option '%s'", a);
            inspect_usage();
            return CLI_EXIT_USAGE;
        } else if (npaths == 256) {
            cli_error("inspect: more than 256 files");
            return CLI_EXIT_USAGE;
        } else {
            paths[npaths++] = a;
        }
    }
    if (npaths == 0) {
        cli_error("inspect: no FILE given");
        inspect_usage();
        return CLI_EXIT_USAGE;
    }
    if ((o.dump_name != NULL) != (o.dump_out != NULL)) {
        cli_error("inspect: --dump NAME and -o OUT go together");
        return CLI_EXIT_USAGE;
    }
    if (o.dump_name && npaths != 1) {
        cli_error("inspect: --dump takes exactly one FILE");
        return CLI_EXIT_USAGE;
    }
    int rc = CLI_EXIT_OK;
    json_t *all = o.json ? json_array() : NULL;
    for (int i = 0; i < npaths; i++) {
        mgpu_model *m;
        mgpu_error err = {0};
        if (mgpu_model_open(paths[i], &m, &err) != MGPU_OK) {
            cli_error("%s", err.message);
            rc = CLI_EXIT_FAILURE;
            continue;
        }
        if (o.dump_name)
            rc = dump_tensor(paths[i], m, &o);
        else if (o.json)
            json_array_append_new(all, model_json(paths[i], m));
        else
            print_summary(paths[i], m, &o);
        /* a file of LoRA factors: also what it targets */
        const mgpu_model_component *c0 =
            mgpu_model_component_count(m) ? mgpu_model_component_at(m, 0) : NULL;
        if (!o.dump_name && !o.json && c0 && c0->arch == MGPU_ARCH_UNKNOWN &&
            mgpu_model_tensor_count(m) > 0 &&
            mgpu_lora_is_lora_name(mgpu_model_tensor_at(m, 0)->info.name) &&
            print_lora(paths[i]) != CLI_EXIT_OK)
            rc = CLI_EXIT_FAILURE;
        mgpu_model_close(m);
    }
    if (all) {
        if (rc == CLI_EXIT_OK) {
            cli_print_json(json_pack("{s:o}", "models", all));
        } else {
            json_decref(all);
        }
    }
    return rc;
}
