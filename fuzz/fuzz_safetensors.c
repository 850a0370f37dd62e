/* libFuzzer target for the safetensors reader: opens the input with
 * mgpu_safetensors_open_memory and, when it opens, walks everything the
 * handle exposes (every tensor info checked against the input and against
 * the tiling of the data section, each lookup by name, every __metadata__
 * entry, each tensor decoded to f32) so a read past the input trips ASan;
 * when it fails, checks the status and the message. Any inconsistency
 * aborts, which libFuzzer reports as a crash. Most mutations of the JSON
 * would break the 8-byte header length and never reach the tensor checks,
 * so each input is also tried with that length recomputed to end where the
 * JSON object does.
 *
 * MGPU_FUZZ_LAX_MESSAGES=1 in the environment skips the check that messages
 * are one line of printable text, to dig past that class of finding. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "badfiles.h"
#include "mgpu/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char label[] = "fuzz-input.safetensors";

static void fail(const char *what, const mgpu_error *err)
{
    fprintf(stderr, "fuzz_safetensors: %s\n  message: %s\n", what, err ? err->message : "");
    abort();
}

/* A failure must say why, once, naming the input, in printable text. */
static void check_failure(mgpu_status s, const void *handle, const mgpu_error *err)
{
    static int lax = -1;
    if (lax < 0)
        lax = getenv("MGPU_FUZZ_LAX_MESSAGES") != NULL;
    const char *problem = badfiles_check_failure(s, handle, err, label, lax);
    if (problem)
        fail(problem, err);
}

static void run(const uint8_t *data, size_t size)
{
    mgpu_error err;
    memset(&err, 0, sizeof err);
    mgpu_safetensors *st = (mgpu_safetensors *)&err; /* must be reset on every path */
    mgpu_status s = mgpu_safetensors_open_memory(data, size, label, &st, &err);
    if (s != MGPU_OK) {
        check_failure(s, st, &err);
        return;
    }
    const char *why = badfiles_check_safetensors(st, data, size);
    /* a lookup of a name the file (almost surely) lacks */
    const mgpu_tensor_info *t = mgpu_safetensors_find(st, "\x01 absent");
    if (!why && t && strcmp(t->name, "\x01 absent") != 0)
        why = "lookup returns a tensor of another name";
    mgpu_safetensors_close(st);
    if (why)
        fail(why, NULL);
}

/* Where the JSON object starting at data[8] ends (one past its closing
 * brace), by counting braces and brackets outside strings; 0 if it does
 * not close. */
static size_t json_end(const uint8_t *data, size_t size)
{
    int depth = 0, in_string = 0;
    for (size_t i = 8; i < size; i++) {
        uint8_t c = data[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            return i + 1;
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(data, size);
    size_t end = size > 8 && data[8] == '{' ? json_end(data, size) : 0;
    uint64_t stored = 0;
    for (int i = 7; end && i >= 0; i--)
        stored = (stored << 8) | data[i];
    if (end && stored != end - 8) {
        /* an exact-size copy, so ASan still sees reads past its end */
        uint8_t *copy = malloc(size);
        if (!copy)
            return 0;
        memcpy(copy, data, size);
        for (int i = 0; i < 8; i++)
            copy[i] = (uint8_t)((uint64_t)(end - 8) >> (8 * i));
        run(copy, size);
        free(copy);
    }
    return 0;
}
