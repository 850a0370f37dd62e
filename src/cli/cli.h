/* Shared pieces of the mgpu command line: each command is one function
 * taking the arguments after its name and returning the process exit code. */
#ifndef MGPU_CLI_H
#define MGPU_CLI_H

#include <stddef.h>
#include <stdint.h>

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAILURE = 1, CLI_EXIT_USAGE = 2 };

#include "backend/backend.h"
#include "mgpu/device.h"
#include "mgpu/plan.h"
#include "models/flux.h"

struct json_t;

int cli_inspect(int argc, char **argv);
int cli_devices(int argc, char **argv);
int cli_plan(int argc, char **argv);
int cli_forward(int argc, char **argv);
int cli_generate(int argc, char **argv);

/* --devices SPEC, else $MGPU_DEVICES, else the real inventory; prints the
 * error and returns CLI_EXIT_FAILURE on a bad spec. */
int cli_load_devices(const char *spec, mgpu_device_list *out);
/* Sets the disk's read bandwidth from "measure" (reading `file`) or a
 * bandwidth like "1.5gbps". */
int cli_set_disk_bandwidth(mgpu_device_list *list, const char *arg, const char *file);
/* Prints a JSON document (indented) and a newline on stdout; takes the
 * reference. */
void cli_print_json(struct json_t *root);
/* "25.0 GB/s", "host", "unknown" */
void cli_format_bandwidth(double bytes_per_s, char *buf, size_t size);

/* --set num_heads=4 | axes_dim=4,6,6 | theta=10000 into FLUX's settings;
 * prints the error and returns CLI_EXIT_USAGE on a bad one. */
int cli_flux_setting(const char *kv, mgpu_flux_settings *set);
/* --gemm auto|f32|bf16 */
int cli_parse_gemm(const char *v, mgpu_gemm_precision *out);
/* --lora FILE[:STRENGTH] (strength 1 when absent; the last ':' followed by
 * a number separates it). */
enum { CLI_MAX_LORAS = 8 };
int cli_parse_lora(const char *arg, char *path, size_t size, float *strength);
/* The DisTorch-style allocation tables of a plan, on stdout. */
void cli_print_plan_tables(const mgpu_plan *plan);

/* "1.50 GiB", "12.0 MiB", "512 B" */
void cli_format_bytes(uint64_t bytes, char *buf, size_t size);
/* "11.90 B", "123.1 M" */
void cli_format_count(uint64_t count, char *buf, size_t size);
/* One line on stderr prefixed with "mgpu: ". */
void cli_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#endif
