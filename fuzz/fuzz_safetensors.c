/* libFuzzer target for the safetensors reader: opens the input with
 * mgpu_safetensors_open_memory and, when it opens, walks everything the
 * handle exposes (every tensor info checked against the input and against
 * the tiling of the data section, each lookup by name, every __metadata__
 * entry, each tensor decoded to f32) so a read past the input trips ASan;
 * when it fails, checks the status and the message. Any inconsistency
 * aborts, which libFuzzer reports as a crash.
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
static void check_failure(mgpu_status s, const mgpu_safetensors *st, const mgpu_error *err)
{
    static int lax = -1;
    if (lax < 0)
        lax = getenv("MGPU_FUZZ_LAX_MESSAGES") != NULL;
    if (s != MGPU_ERR_FORMAT && s != MGPU_ERR_UNSUPPORTED && s != MGPU_ERR_NO_MEMORY)
        fail("unexpected status", err);
    if (st)
        fail("handle not NULL after a failure", err);
    if (err->status != s)
        fail("mgpu_error.status differs from the returned status", err);
    if (!memchr(err->message, '\0', sizeof err->message))
        fail("message not NUL-terminated", NULL);
    if (strncmp(err->message, label, strlen(label)) != 0)
        fail("message does not start with the label", err);
    if (!lax)
        for (const char *p = err->message; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7F)
                fail("message holds a newline or control character", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mgpu_error err;
    memset(&err, 0, sizeof err);
    mgpu_safetensors *st = (mgpu_safetensors *)&err; /* must be reset on every path */
    mgpu_status s = mgpu_safetensors_open_memory(data, size, label, &st, &err);
    if (s != MGPU_OK) {
        check_failure(s, st, &err);
        return 0;
    }
    const char *why = badfiles_check_safetensors(st, data, size);
    /* a lookup of a name the file (almost surely) lacks */
    const mgpu_tensor_info *t = mgpu_safetensors_find(st, "\x01 absent");
    if (!why && t && strcmp(t->name, "\x01 absent") != 0)
        why = "lookup returns a tensor of another name";
    mgpu_safetensors_close(st);
    if (why)
        fail(why, NULL);
    return 0;
}
