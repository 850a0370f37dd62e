/* Shared pieces of the mgpu command line: each command is one function
 * taking the arguments after its name and returning the process exit code. */
#ifndef MGPU_CLI_H
#define MGPU_CLI_H

#include <stddef.h>
#include <stdint.h>

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAILURE = 1, CLI_EXIT_USAGE = 2 };

int cli_inspect(int argc, char **argv);

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
