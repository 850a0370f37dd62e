/* `mgpu plan`: the placement plan for a model, as the tables users of
 * ComfyUI-MultiGPU already paste into bug reports, plus what the original
 * cannot tell (free memory, reserve, link bandwidth, bytes and seconds of
 * copying per step), or as JSON. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/units.h"
#include "mgpu/plan.h"

static const double GB = 1073741824.0; /* the tables' "GB" are GiB, as DisTorch prints them */
static const double MB = 1048576.0;

static const char *name_of(const mgpu_plan *p, int d)
{
    return p->devices->devices[d].name;
}

static void print_virtual_vram(const mgpu_plan *p)
{
    printf("Virtual VRAM Analysis\n");
    printf("%-10s %-6s %13s %10s %9s\n", "Object", "Role", "Original(GB)", "Total(GB)", "Virt(GB)");
    const mgpu_device *c = &p->devices->devices[p->compute];
    double moved = 0;
    for (size_t i = 0; i < p->devices->count; i++)
        if ((int)i != p->compute)
            moved += (double)p->device[i].placed_bytes / GB;
    printf("%-10s %-6s %11.2fGB %8.2fGB %+7.2fGB\n", c->name, "recip", (double)c->total_bytes / GB,
           (double)c->total_bytes / GB + moved, moved);
    for (size_t k = 0; k < p->alloc.donor_count; k++) {
        int d = mgpu_device_index(p->devices, p->alloc.donors[k]);
        const mgpu_device *dev = &p->devices->devices[d];
        double placed = (double)p->device[d].placed_bytes / GB;
        if (dev->total_bytes == UINT64_MAX)
            printf("%-10s %-6s %13s %10s %+7.2fGB\n", dev->name, "donor", "-", "-", -placed);
        else
            printf("%-10s %-6s %11.2fGB %8.2fGB %+7.2fGB\n", dev->name, "donor",
                   (double)dev->total_bytes / GB, (double)dev->total_bytes / GB - placed, -placed);
    }
    printf("%-10s %-6s %11.2fGB %8.2fGB %+7.2fGB\n\n", "model", "model",
           (double)p->model_bytes / GB, (double)p->device[p->compute].placed_bytes / GB, -moved);
}

void cli_print_plan_tables(const mgpu_plan *p)
{
    const mgpu_model *m = p->model;
    double model_gb = (double)p->model_bytes / GB;
    if (p->alloc.normal)
        print_virtual_vram(p);

    printf("Device Allocations\n");
    printf("%-10s %9s %7s %9s %7s\n", "Device", "VRAM GB", "Dev %", "Model GB", "Dist %");
    for (size_t i = 0; i < p->devices->count; i++) {
        const mgpu_plan_device *pd = &p->device[i];
        const mgpu_device *d = &p->devices->devices[i];
        if (!pd->compute && !pd->listed && pd->placed_bytes == 0)
            continue;
        double placed = (double)pd->placed_bytes / GB;
        if (d->total_bytes == UINT64_MAX)
            printf("%-10s %9s %7s %9.2f %6.1f%%\n", d->name, "-", "-", placed,
                   100.0 * placed / model_gb);
        else
            printf("%-10s %9.2f %6.1f%% %9.2f %6.1f%%\n", d->name, (double)d->total_bytes / GB,
                   100.0 * (double)pd->placed_bytes / (double)d->total_bytes, placed,
                   100.0 * placed / model_gb);
    }

    printf("\nLayer Distribution\n");
    printf("%-12s %7s %12s %8s\n", "Layer Type", "Layers", "Memory (MB)", "% Total");
    for (int kind = 0; kind < MGPU_MODULE_KIND_COUNT; kind++) {
        uint64_t bytes = 0;
        unsigned count = 0;
        for (size_t k = 0; k < p->order_count; k++) {
            const mgpu_model_module *mod = mgpu_model_module_at(m, p->order[k]);
            if ((int)mod->kind == kind) {
                bytes += mod->nbytes;
                count++;
            }
        }
        if (count)
            printf("%-12s %7u %12.2f %7.2f%%\n", mgpu_module_kind_name((mgpu_module_kind)kind), count,
                   (double)bytes / MB, 100.0 * (double)bytes / (double)p->model_bytes);
    }

    /* Modules below 0.01% of the model get their own row, as DisTorch does. */
    uint64_t tiny_limit = p->model_bytes / 10000;
    printf("\nFinal Device/Layer Assignments\n");
    printf("%-18s %7s %12s %8s\n", "Device", "Layers", "Memory (MB)", "% Total");
    for (size_t i = 0; i < p->devices->count; i++) {
        uint64_t bytes = 0, tiny_bytes = 0;
        unsigned count = 0, tiny = 0;
        for (size_t k = 0; k < p->order_count; k++) {
            uint32_t mi = p->order[k];
            if (p->module_device[mi] != (int)i)
                continue;
            uint64_t b = mgpu_model_module_at(m, mi)->nbytes;
            if (b < tiny_limit) {
                tiny_bytes += b;
                tiny++;
            } else {
                bytes += b;
                count++;
            }
        }
        if (count)
            printf("%-18s %7u %12.2f %7.2f%%\n", name_of(p, (int)i), count, (double)bytes / MB,
                   100.0 * (double)bytes / (double)p->model_bytes);
        if (tiny) {
            char label[48];
            snprintf(label, sizeof label, "%s (<0.01%%)", name_of(p, (int)i));
            printf("%-18s %7u %12.2f %7.2f%%\n", label, tiny, (double)tiny_bytes / MB,
                   100.0 * (double)tiny_bytes / (double)p->model_bytes);
        }
    }

    printf("\nMemory and Links (per step: one forward pass)\n");
    printf("%-10s %9s %9s %9s %9s %11s %11s %11s\n", "Device", "Free GB", "Margin", "Holds GB",
           "Placed", "Link", "Moved/step", "Copy s/step");
    for (size_t i = 0; i < p->devices->count; i++) {
        const mgpu_plan_device *pd = &p->device[i];
        const mgpu_device *d = &p->devices->devices[i];
        if (!pd->compute && !pd->listed && pd->placed_bytes == 0)
            continue;
        char free_[16], cap[16], link[24], copy[16];
        if (d->total_bytes == UINT64_MAX) {
            snprintf(free_, sizeof free_, "-");
            snprintf(cap, sizeof cap, "-");
        } else {
            snprintf(free_, sizeof free_, "%.2f", (double)d->free_bytes / GB);
            snprintf(cap, sizeof cap, "%.2f", (double)pd->capacity_bytes / GB);
        }
        if (pd->compute) {
            snprintf(link, sizeof link, "compute");
            snprintf(copy, sizeof copy, "-");
        } else {
            cli_format_bandwidth(pd->copy_bytes_per_s, link, sizeof link);
            if (isnan(pd->copy_seconds_per_step))
                snprintf(copy, sizeof copy, "unknown");
            else
                snprintf(copy, sizeof copy, "%.3f", pd->copy_seconds_per_step);
        }
        printf("%-10s %9s %9.2f %9s %9.2f %11s %11.2f %11s\n", d->name, free_,
               (double)pd->margin_bytes / GB, cap, (double)pd->placed_bytes / GB, link,
               (double)pd->streamed_bytes_per_step / GB, copy);
    }
    printf("\ncompute %s; activation reserve %.2f GiB; pinned on compute %.2f GiB (%u modules: "
           "heads and modules too small to stream)\n",
           name_of(p, p->compute), (double)p->reserve_bytes / GB, (double)p->pinned_bytes / GB,
           p->device[p->compute].pinned_count);
    for (size_t i = 0; i < p->warning_count; i++)
        printf("warning: %s\n", p->warnings[i]);
}

static json_t *plan_json(const mgpu_plan *p)
{
    json_t *root = json_object();
    json_object_set_new(root, "compute", json_string(name_of(p, p->compute)));
    json_object_set_new(root, "mode",
                        json_string(p->alloc.normal ? "normal"
                                    : p->alloc.mode == MGPU_QUOTA_BYTES    ? "bytes"
                                    : p->alloc.mode == MGPU_QUOTA_RATIO    ? "ratio"
                                    : p->alloc.mode == MGPU_QUOTA_FRACTION ? "fraction"
                                    : p->alloc.entry_count                 ? "wildcard"
                                                                           : "resident"));
    json_object_set_new(root, "model_bytes", json_integer((json_int_t)p->model_bytes));
    json_object_set_new(root, "pinned_bytes", json_integer((json_int_t)p->pinned_bytes));
    json_object_set_new(root, "reserve_bytes", json_integer((json_int_t)p->reserve_bytes));
    json_object_set_new(root, "default_wildcard", json_boolean(p->default_wildcard));
    json_t *warnings = json_array();
    for (size_t i = 0; i < p->warning_count; i++)
        json_array_append_new(warnings, json_string(p->warnings[i]));
    json_object_set_new(root, "warnings", warnings);
    json_t *devs = json_array();
    for (size_t i = 0; i < p->devices->count; i++) {
        const mgpu_plan_device *pd = &p->device[i];
        const mgpu_device *d = &p->devices->devices[i];
        json_t *j = json_object();
        json_object_set_new(j, "name", json_string(d->name));
        json_object_set_new(j, "compute", json_boolean(pd->compute));
        json_object_set_new(j, "total_bytes", d->total_bytes == UINT64_MAX
                                                  ? json_null()
                                                  : json_integer((json_int_t)d->total_bytes));
        json_object_set_new(j, "free_bytes", d->free_bytes == UINT64_MAX
                                                 ? json_null()
                                                 : json_integer((json_int_t)d->free_bytes));
        json_object_set_new(j, "margin_bytes", json_integer((json_int_t)pd->margin_bytes));
        json_object_set_new(j, "capacity_bytes", pd->capacity_bytes == UINT64_MAX
                                                     ? json_null()
                                                     : json_integer((json_int_t)pd->capacity_bytes));
        json_object_set_new(j, "quota_bytes", pd->quota_bytes == UINT64_MAX
                                                  ? json_null()
                                                  : json_integer((json_int_t)pd->quota_bytes));
        json_object_set_new(j, "placed_bytes", json_integer((json_int_t)pd->placed_bytes));
        json_object_set_new(j, "modules", json_integer(pd->module_count));
        json_object_set_new(j, "link_bytes_per_s",
                            pd->compute || pd->copy_bytes_per_s <= 0 || isinf(pd->copy_bytes_per_s)
                                ? json_null()
                                : json_real(pd->copy_bytes_per_s));
        json_object_set_new(j, "streamed_bytes_per_step",
                            json_integer((json_int_t)pd->streamed_bytes_per_step));
        json_object_set_new(j, "copy_seconds_per_step",
                            pd->compute || isnan(pd->copy_seconds_per_step)
                                ? json_null()
                                : json_real(pd->copy_seconds_per_step));
        json_array_append_new(devs, j);
    }
    json_object_set_new(root, "devices", devs);
    json_t *mods = json_array();
    for (size_t k = 0; k < p->order_count; k++) {
        uint32_t i = p->order[k];
        const mgpu_model_module *mod = mgpu_model_module_at(p->model, i);
        json_t *j = json_object();
        json_object_set_new(j, "name", json_string(mod->name));
        json_object_set_new(j, "component", json_integer(mod->component));
        json_object_set_new(j, "device", json_string(name_of(p, p->module_device[i])));
        json_object_set_new(j, "bytes", json_integer((json_int_t)mod->nbytes));
        json_object_set_new(j, "pinned", json_boolean(p->module_pinned[i]));
        json_object_set_new(j, "kind", json_string(mgpu_module_kind_name(mod->kind)));
        json_array_append_new(mods, j);
    }
    json_object_set_new(root, "modules", mods);
    return root;
}

static void plan_usage(FILE *f)
{
    fputs("usage: mgpu plan MODEL --alloc STRING [--compute DEV] [--devices SPEC]\n"
          "                 [--reserve SIZE] [--pin-below SIZE] [--component N|ARCH|PREFIX]\n"
          "                 [--disk-bandwidth measure|SPEED] [--json]\n"
          "  STRING   DisTorch allocation: '#cuda:0;4.0;cpu', 'cuda:0,2.5gb;cpu,*',\n"
          "           'cuda:0,25%;cpu,75%', 'cuda:0,0.5;cpu,0.5' (see docs/allocation.md)\n"
          "  SPEC     simulated devices, e.g. 'cuda:0=24gib@25gbps,cpu=64gib' ($MGPU_DEVICES)\n"
          "  SIZE     bytes with a unit: 2gb, 512mb\n"
          "  SPEED    the disk tier's read bandwidth, or 'measure' to read the model file\n",
          f);
}

static int parse_size_arg(const char *flag, const char *v, uint64_t *out)
{
    size_t unit_at;
    if (mgpu_parse_bytes(v, strlen(v), out, &unit_at) != MGPU_UNIT_OK) {
        cli_error("plan: %s takes a size with a unit (e.g. 2gb), not '%s'", flag, v);
        return 0;
    }
    return 1;
}

int cli_plan(int argc, char **argv)
{
    const char *model_path = NULL, *alloc = NULL, *compute = NULL, *spec = NULL, *component = NULL;
    const char *disk_bandwidth = NULL;
    uint64_t reserve = 0, pin_below = MGPU_PLAN_DEFAULT_PIN_BELOW;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            plan_usage(stdout);
            return CLI_EXIT_OK;
        } else if (a[0] == '-' && a[1] == '-' && !has_value) {
            cli_error("plan: %s needs a value", a);
            return CLI_EXIT_USAGE;
        } else if (strcmp(a, "--alloc") == 0) {
            alloc = argv[++i];
        } else if (strcmp(a, "--compute") == 0) {
            compute = argv[++i];
        } else if (strcmp(a, "--devices") == 0) {
            spec = argv[++i];
        } else if (strcmp(a, "--component") == 0) {
            component = argv[++i];
        } else if (strcmp(a, "--disk-bandwidth") == 0) {
            disk_bandwidth = argv[++i];
        } else if (strcmp(a, "--reserve") == 0) {
            if (!parse_size_arg(a, argv[++i], &reserve))
                return CLI_EXIT_USAGE;
        } else if (strcmp(a, "--pin-below") == 0) {
            if (!parse_size_arg(a, argv[++i], &pin_below))
                return CLI_EXIT_USAGE;
        } else if (a[0] == '-') {
            cli_error("plan: unknown option '%s'", a);
            plan_usage(stderr);
            return CLI_EXIT_USAGE;
        } else if (model_path) {
            cli_error("plan: one MODEL at a time ('%s' and '%s')", model_path, a);
            return CLI_EXIT_USAGE;
        } else {
            model_path = a;
        }
    }
    if (!model_path) {
        cli_error("plan: no MODEL given");
        plan_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    mgpu_device_list *devices = malloc(sizeof *devices);
    if (!devices) {
        cli_error("out of memory");
        return CLI_EXIT_FAILURE;
    }
    int rc = cli_load_devices(spec, devices);
    mgpu_model *m = NULL;
    mgpu_error err = {0};
    if (rc == CLI_EXIT_OK && mgpu_model_open(model_path, &m, &err) != MGPU_OK) {
        cli_error("%s", err.message);
        rc = CLI_EXIT_FAILURE;
    }
    if (rc == CLI_EXIT_OK && disk_bandwidth)
        rc = cli_set_disk_bandwidth(devices, disk_bandwidth, mgpu_model_file_at(m, 0)->path);
    int comp = -1;
    if (rc == CLI_EXIT_OK && component) {
        for (size_t c = 0; c < mgpu_model_component_count(m) && comp < 0; c++) {
            const mgpu_model_component *mc = mgpu_model_component_at(m, c);
            char index[24];
            snprintf(index, sizeof index, "%zu", c);
            if (strcmp(component, index) == 0 || strcmp(component, mc->prefix) == 0 ||
                strcmp(component, mgpu_arch_name(mc->arch)) == 0)
                comp = (int)c;
        }
        if (comp < 0) {
            cli_error("plan: %s has no component '%s' (give an index, a prefix or an arch)",
                      model_path, component);
            rc = CLI_EXIT_USAGE;
        }
    }
    mgpu_plan *plan = NULL;
    if (rc == CLI_EXIT_OK) {
        mgpu_plan_request req = {.model = m, .component = comp, .devices = devices,
                                 .alloc = alloc, .compute = compute, .reserve_bytes = reserve,
                                 .pin_below_bytes = pin_below};
        if (mgpu_plan_create(&req, &plan, &err) != MGPU_OK) {
            cli_error("%s", err.message);
            rc = CLI_EXIT_FAILURE;
        }
    }
    if (plan) {
        if (json) {
            cli_print_json(plan_json(plan));
        } else {
            cli_print_plan_tables(plan);
        }
    }
    mgpu_plan_free(plan);
    mgpu_model_close(m);
    free(devices);
    return rc;
}
