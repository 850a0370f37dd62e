/* libFuzzer target for the GGUF reader: opens the input with
 * mgpu_gguf_open_memory and, when it opens, walks everything the handle
 * exposes (every key-value pair with nested arrays read element by element,
 * every tensor info checked against the input, each lookup by name, each
 * tensor decoded to f32) so a read past the input trips ASan; when it fails,
 * checks the status and the message. Any inconsistency aborts, which
 * libFuzzer reports as a crash.
 *
 * MGPU_FUZZ_LAX_MESSAGES=1 in the environment skips the check that messages
 * are one line of printable text, to dig past that class of finding. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "badfiles.h"
#include "mgpu/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char label[] = "fuzz-input.gguf";

static void fail(const char *what, const mgpu_error *err)
{
    fprintf(stderr, "fuzz_gguf: %s\n  message: %s\n", what, err ? err->message : "");
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mgpu_error err;
    memset(&err, 0, sizeof err);
    mgpu_gguf *g = (mgpu_gguf *)&err; /* must be reset on every path */
    mgpu_status s = mgpu_gguf_open_memory(data, size, label, &g, &err);
    if (s != MGPU_OK) {
        check_failure(s, g, &err);
        return 0;
    }
    const char *why = badfiles_check_gguf(g, data, size);
    /* a lookup of a name the file (almost surely) lacks */
    const mgpu_tensor_info *t = mgpu_gguf_find(g, "\x01 absent");
    if (!why && t && strcmp(t->name, "\x01 absent") != 0)
        why = "lookup returns a tensor of another name";
    mgpu_gguf_close(g);
    if (why)
        fail(why, NULL);
    return 0;
}
