/* The mgpu command: dispatches to one function per subcommand. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

#define MGPU_VERSION_STRING "0.1.0"

void cli_format_bytes(uint64_t bytes, char *buf, size_t size)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, size, "%.2f %s", v, units[u]);
}

void cli_format_count(uint64_t count, char *buf, size_t size)
{
    if (count >= 1000000000ull)
        snprintf(buf, size, "%.2f B", (double)count / 1e9);
    else if (count >= 1000000ull)
        snprintf(buf, size, "%.2f M", (double)count / 1e6);
    else if (count >= 1000ull)
        snprintf(buf, size, "%.2f K", (double)count / 1e3);
    else
        snprintf(buf, size, "%llu", (unsigned long long)count);
}

void cli_print_json(json_t *root)
{
    json_dumpf(root, stdout, JSON_INDENT(1));
    fputc('\n', stdout);
    json_decref(root);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mgpu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void usage(FILE *out)
{
    fputs("usage: mgpu COMMAND [ARGS...]\n"
          "\n"
          "commands:\n"
          "  inspect FILE... [--tensors] [--json] [--dump NAME -o OUT]\n"
          "      summarise model files (safetensors, GGUF, sharded index, folder)\n"
          "  devices [--json] [--devices SPEC]\n"
          "      the device inventory (real, or simulated with SPEC)\n"
          "  plan MODEL --alloc STRING [--compute DEV] [--devices SPEC] [--reserve SIZE] [--json]\n"
          "      where every module of MODEL goes, as DisTorch-style tables or JSON\n"
          "  forward --model FILE --inputs IN.safetensors -o OUT.safetensors [--alloc STRING]\n"
          "      one forward pass of a FLUX.1, CLIP, T5 or VAE model, placed and streamed\n"
          "  generate --model FILE --prompt TEXT -o OUT.png [--clip F --t5 F --vae F] ...\n"
          "      text to image with FLUX.1, each component on its own devices\n"
          "  help     this text\n"
          "  version  print the version\n",
          out);
}

int main(int argc, char **argv)
{
    /* oneDNN's OpenMP threads would otherwise spin between GEMMs, taking
     * the cores mgpu's own pool needs for the ops in between; a user's
     * setting wins. */
    setenv("OMP_WAIT_POLICY", "passive", 0);
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "inspect") == 0)
        return cli_inspect(argc - 2, argv + 2);
    if (strcmp(cmd, "devices") == 0)
        return cli_devices(argc - 2, argv + 2);
    if (strcmp(cmd, "plan") == 0)
        return cli_plan(argc - 2, argv + 2);
    if (strcmp(cmd, "forward") == 0)
        return cli_forward(argc - 2, argv + 2);
    if (strcmp(cmd, "generate") == 0)
        return cli_generate(argc - 2, argv + 2);
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("mgpu %s\n", MGPU_VERSION_STRING);
        return CLI_EXIT_OK;
    }
    cli_error("unknown command '%s' (try 'mgpu help')", cmd);
    return CLI_EXIT_USAGE;
}
