/* Malformed files: every case of tools/badfiles.c is written to a scratch
 * folder and opened with mgpu_model_open and with the format's
 * *_open_memory; a malformed one must fail with its expected status and a
 * one-line message naming the file and containing the expected substring, a
 * valid one must open and survive a walk of everything its handle exposes.
 * Then every prefix of each valid file, and each valid file with any one
 * byte replaced, must open or fail cleanly. All mismatches are printed
 * before a test fails, so one run shows every reader problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "badfiles.h"
#include "mgpu/gguf.h"
#include "mgpu/model.h"
#include "mgpu/safetensors.h"
#include "test_util.h"

typedef struct fixture {
    badfile_set set;
    char dir[1024];
} fixture;

static void path_of(const fixture *fx, const badfile *f, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", fx->dir, f->name);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx || badfiles_build(&fx->set) != 0) {
        free(fx);
        return -1;
    }
    snprintf(fx->dir, sizeof fx->dir, "%s", test_path("malformed"));
    char error[1200];
    if (mkdir(fx->dir, 0755) != 0 ||
        badfiles_write(&fx->set, fx->dir, 0, 1, error, sizeof error) != 0) {
        print_error("cannot write the corpus to %s\n", fx->dir);
        badfiles_free(&fx->set);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    char path[1200];
    for (size_t i = 0; i < fx->set.count; i++) {
        path_of(fx, &fx->set.items[i], path, sizeof path);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/manifest.tsv", fx->dir);
    unlink(path);
    rmdir(fx->dir);
    badfiles_free(&fx->set);
    free(fx);
    return 0;
}

/* What is wrong with a failed open's status and message, or NULL. `name`
 * must appear in the message, as must `expect` unless it is NULL. */
static const char *bad_failure(mgpu_status got, mgpu_status want, const mgpu_error *err,
                               const char *name, const char *expect)
{
    if (got != MGPU_ERR_FORMAT && got != MGPU_ERR_UNSUPPORTED)
        return "status is neither format error nor unsupported";
    if (want != MGPU_OK && got != want)
        return "status differs from the expected one";
    if (err->status != got)
        return "mgpu_error.status differs from the returned status";
    if (!memchr(err->message, '\0', sizeof err->message))
        return "message is not NUL-terminated";
    if (strchr(err->message, '\n'))
        return "message spans several lines";
    /* Bytes from the file must not reach a terminal raw. */
    for (const char *p = err->message; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7F)
            return "message holds control characters";
    if (!strstr(err->message, name))
        return "message does not name the file";
    if (expect && !strstr(err->message, expect))
        return "message lacks the expected substring";
    return NULL;
}

/* Walks a model that opened, touching every string it exposes. */
static const char *check_model(const mgpu_model *m)
{
    for (size_t i = 0; i < mgpu_model_file_count(m); i++)
        if (!mgpu_model_file_at(m, i)->path)
            return "file without a path";
    for (size_t i = 0; i < mgpu_model_tensor_count(m); i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(m, i);
        if (!t->name || !t->info.name || t->file >= mgpu_model_file_count(m) ||
            t->component >= mgpu_model_component_count(m) ||
            t->module >= mgpu_model_module_count(m))
            return "inconsistent tensor";
        if (!mgpu_model_find(m, t->info.name))
            return "a tensor is not found by its stored name";
    }
    for (size_t i = 0; i < mgpu_model_module_count(m); i++) {
        const mgpu_model_module *mod = mgpu_model_module_at(m, i);
        if (!mod->name || (mod->tensor_count && !mod->tensors))
            return "inconsistent module";
        for (uint32_t k = 0; k < mod->tensor_count; k++)
            if (mod->tensors[k] >= mgpu_model_tensor_count(m))
                return "module lists a tensor out of range";
    }
    for (size_t i = 0; i < mgpu_model_block_count(m); i++)
        if (!mgpu_model_block_at(m, i)->name)
            return "block without a name";
    for (size_t i = 0; i < mgpu_model_component_count(m); i++)
        if (!mgpu_model_component_at(m, i)->prefix)
            return "component without a prefix";
    for (size_t i = 0; i < mgpu_model_metadata_count(m); i++) {
        const char *k, *v;
        mgpu_model_metadata_at(m, i, &k, &v);
        if (!k || !v)
            return "metadata without key or value";
    }
    return NULL;
}

static void test_model_open(void **state)
{
    fixture *fx = *state;
    int failures = 0;
    for (size_t i = 0; i < fx->set.count; i++) {
        const badfile *f = &fx->set.items[i];
        char path[1200];
        path_of(fx, f, path, sizeof path);
        mgpu_error err = {0};
        mgpu_model *m = (mgpu_model *)&err; /* must be reset to NULL on failure */
        mgpu_status s = mgpu_model_open(path, &m, &err);
        const char *why = NULL;
        if (f->status == MGPU_OK) {
            if (s != MGPU_OK)
                why = "a valid file does not open";
            else
                why = check_model(m);
        } else if (s == MGPU_OK) {
            why = "a malformed file opens";
        } else {
            why = bad_failure(s, f->status, &err, path, f->expect);
            if (!why && m != NULL)
                why = "the model pointer is not NULL after a failure";
        }
        if (s == MGPU_OK)
            mgpu_model_close(m);
        if (why) {
            failures++;
            print_error("mgpu_model_open %s: %s\n  want: %s, '%s'\n  got:  %s, '%s'\n", f->name,
                        why, mgpu_status_name(f->status), f->expect, mgpu_status_name(s),
                        s == MGPU_OK ? "" : err.message);
        }
    }
    assert_int_equal(failures, 0);
}

/* Opens an image with the reader of `format` and checks the outcome: a
 * failure against `want` and `expect` (NULL: any message naming `label`),
 * a success with the handle walk. NULL when all is well. */
static const char *open_memory(mgpu_file_format format, const uint8_t *data, size_t size,
                               const char *label, mgpu_status want, const char *expect,
                               mgpu_status *got, mgpu_error *err)
{
    const char *why = NULL;
    if (format == MGPU_FORMAT_GGUF) {
        mgpu_gguf *g = (mgpu_gguf *)err;
        *got = mgpu_gguf_open_memory(data, size, label, &g, err);
        if (*got == MGPU_OK) {
            why = badfiles_check_gguf(g, data, size);
            mgpu_gguf_close(g);
        } else if (g) {
            why = "the handle is not NULL after a failure";
        }
    } else {
        mgpu_safetensors *st = (mgpu_safetensors *)err;
        *got = mgpu_safetensors_open_memory(data, size, label, &st, err);
        if (*got == MGPU_OK) {
            why = badfiles_check_safetensors(st, data, size);
            mgpu_safetensors_close(st);
        } else if (st) {
            why = "the handle is not NULL after a failure";
        }
    }
    if (!why && *got != MGPU_OK)
        why = bad_failure(*got, want, err, label, expect);
    return why;
}

static void test_open_memory(void **state)
{
    fixture *fx = *state;
    int failures = 0;
    for (size_t i = 0; i < fx->set.count; i++) {
        const badfile *f = &fx->set.items[i];
        mgpu_error err = {0};
        mgpu_status got;
        const char *expect = f->status == MGPU_OK ? NULL : badfiles_expect_memory(f);
        const char *why =
            open_memory(f->format, f->data, f->size, f->name, f->status, expect, &got, &err);
        if (!why && f->status == MGPU_OK && got != MGPU_OK)
            why = "a valid file does not open";
        if (!why && f->status != MGPU_OK && got == MGPU_OK)
            why = "a malformed file opens";
        if (why) {
            failures++;
            print_error("open_memory %s: %s\n  want: %s, '%s'\n  got:  %s, '%s'\n", f->name, why,
                        mgpu_status_name(f->status), expect ? expect : "",
                        mgpu_status_name(got), got == MGPU_OK ? "" : err.message);
        }
    }
    assert_int_equal(failures, 0);
}

/* Failures of the exhaustive tests, counted by kind so that one run shows
 * every kind of problem without printing thousands of lines. */
typedef struct tally {
    const char *kinds[16];
    size_t counts[16];
    size_t n, total;
} tally;

static void tally_add(tally *t, const char *label, const char *why, const mgpu_error *err,
                      mgpu_status got)
{
    size_t k = 0;
    while (k < t->n && strcmp(t->kinds[k], why) != 0)
        k++;
    if (k == t->n && t->n < 16)
        t->kinds[t->n++] = why;
    if (k < t->n && t->counts[k]++ < 3) /* a few examples of each kind */
        print_error("%s: %s: %s\n", label, why, got == MGPU_OK ? "(opened)" : err->message);
    t->total++;
}

static void tally_report(const tally *t, const char *what)
{
    for (size_t k = 0; k < t->n; k++)
        print_error("%s: %zu x %s\n", what, t->counts[k], t->kinds[k]);
}

/* Every proper prefix of a valid file is truncated somewhere the reader must
 * notice: each valid file ends with a non-empty tensor, except the two
 * without tensors, whose prefixes may legitimately open. */
static void test_truncations(void **state)
{
    fixture *fx = *state;
    tally t = {0};
    for (size_t i = 0; i < fx->set.count; i++) {
        const badfile *f = &fx->set.items[i];
        if (f->status != MGPU_OK)
            continue;
        for (size_t n = 0; n < f->size; n++) {
            /* a private copy of exactly n bytes, so ASan sees any overread */
            uint8_t *copy = malloc(n ? n : 1);
            assert_non_null(copy);
            memcpy(copy, f->data, n);
            char label[128];
            snprintf(label, sizeof label, "%s[0:%zu]", f->name, n);
            mgpu_error err = {0};
            mgpu_status got;
            const char *why = open_memory(f->format, copy, n, label, MGPU_OK, NULL, &got, &err);
            if (!why && got == MGPU_OK && strcmp(f->name, "st_valid_empty.safetensors") != 0 &&
                strcmp(f->name, "gguf_valid_empty.gguf") != 0)
                why = "a truncated file opens";
            if (why)
                tally_add(&t, label, why, &err, got);
            free(copy);
        }
    }
    tally_report(&t, "truncations");
    assert_int_equal(t.total, 0);
}

/* Each byte of each valid file replaced by a few values: whatever the reader
 * decides, it must not crash, and what it accepts must be consistent. */
static void test_byte_mutations(void **state)
{
    fixture *fx = *state;
    static const int deltas[] = {-1, 1, 0x80};
    static const int values[] = {0x00, 0xFF, 0x7F, 0x09};
    tally t = {0};
    size_t opened = 0, rejected = 0;
    for (size_t i = 0; i < fx->set.count; i++) {
        const badfile *f = &fx->set.items[i];
        if (f->status != MGPU_OK || f->size == 0)
            continue;
        uint8_t *copy = malloc(f->size);
        assert_non_null(copy);
        for (size_t pos = 0; pos < f->size; pos++) {
            for (size_t k = 0; k < 7; k++) {
                memcpy(copy, f->data, f->size);
                copy[pos] = k < 3 ? (uint8_t)(f->data[pos] + deltas[k]) : (uint8_t)values[k - 3];
                if (copy[pos] == f->data[pos])
                    continue;
                char label[128];
                snprintf(label, sizeof label, "%s@%zu=%u", f->name, pos, copy[pos]);
                mgpu_error err = {0};
                mgpu_status got;
                const char *why =
                    open_memory(f->format, copy, f->size, label, MGPU_OK, NULL, &got, &err);
                if (got == MGPU_OK)
                    opened++;
                else
                    rejected++;
                if (why)
                    tally_add(&t, label, why, &err, got);
            }
        }
        free(copy);
    }
    print_message("byte mutations: %zu opened, %zu rejected\n", opened, rejected);
    tally_report(&t, "byte mutations");
    assert_true(rejected > 0);
    assert_int_equal(t.total, 0);
}

/* A header length over the 100 MB cap is refused before the header is read
 * (the buffer is calloc'd, so its untouched pages cost nothing). */
static void test_header_limit(void **state)
{
    (void)state;
    const uint64_t header = 100 * 1000 * 1000 + 1;
    const size_t size = (size_t)header + 8 + 64;
    uint8_t *data = calloc(1, size);
    assert_non_null(data);
    for (int i = 0; i < 8; i++)
        data[i] = (uint8_t)(header >> (8 * i));
    data[8] = '{';
    mgpu_error err = {0};
    mgpu_status got;
    const char *why = open_memory(MGPU_FORMAT_SAFETENSORS, data, size, "huge.safetensors",
                                  MGPU_ERR_FORMAT, "100000001 exceeds the 100000000-byte limit",
                                  &got, &err);
    free(data);
    if (why)
        print_error("huge.safetensors: %s: %s\n", why, err.message);
    assert_null(why);
}

/* In a folder, the malformed file spoils the model and is the one named. */
static void test_folder(void **state)
{
    fixture *fx = *state;
    const badfile *valid = NULL, *bad = NULL;
    for (size_t i = 0; i < fx->set.count; i++) {
        if (strcmp(fx->set.items[i].name, "st_valid.safetensors") == 0)
            valid = &fx->set.items[i];
        if (strcmp(fx->set.items[i].name, "st_gap.safetensors") == 0)
            bad = &fx->set.items[i];
    }
    assert_non_null(valid);
    assert_non_null(bad);
    char dir[1100], a[1200], b[1200];
    snprintf(dir, sizeof dir, "%s/folder", fx->dir);
    snprintf(a, sizeof a, "%s/a.safetensors", dir);
    snprintf(b, sizeof b, "%s/b.safetensors", dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    FILE *f = fopen(a, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(valid->data, 1, valid->size, f), valid->size);
    fclose(f);
    f = fopen(b, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bad->data, 1, bad->size, f), bad->size);
    fclose(f);
    mgpu_model *m = NULL;
    mgpu_error err = {0};
    mgpu_status s = mgpu_model_open(dir, &m, &err);
    unlink(a);
    unlink(b);
    rmdir(dir);
    if (s == MGPU_OK)
        mgpu_model_close(m);
    const char *why =
        s == MGPU_OK ? "the folder opens" : bad_failure(s, bad->status, &err, b, bad->expect);
    if (why)
        print_error("folder: %s: %s\n", why, err.message);
    assert_null(why);
}

/* manifest.tsv lists each malformed file once with its expectation, and the
 * files on disk are the bytes of the cases. */
static void test_manifest(void **state)
{
    fixture *fx = *state;
    char path[1200];
    snprintf(path, sizeof path, "%s/manifest.tsv", fx->dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    size_t lines = 0;
    while (fgets(line, sizeof line, f)) {
        char *tab = strchr(line, '\t');
        char *nl = strchr(line, '\n');
        assert_non_null(tab);
        assert_non_null(nl);
        *tab = *nl = '\0';
        const badfile *found = NULL;
        for (size_t i = 0; i < fx->set.count && !found; i++)
            if (strcmp(fx->set.items[i].name, line) == 0)
                found = &fx->set.items[i];
        assert_non_null(found);
        assert_int_not_equal(found->status, MGPU_OK);
        assert_string_equal(tab + 1, found->expect);
        assert_true(found->expect[0] != '\0');
        lines++;
    }
    fclose(f);
    size_t malformed = 0, gguf = 0, safetensors = 0;
    for (size_t i = 0; i < fx->set.count; i++) {
        const badfile *b = &fx->set.items[i];
        malformed += b->status != MGPU_OK;
        gguf += b->format == MGPU_FORMAT_GGUF;
        safetensors += b->format == MGPU_FORMAT_SAFETENSORS;
        /* names are unique */
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(b->name, fx->set.items[j].name);
        path_of(fx, b, path, sizeof path);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal((size_t)st.st_size, b->size);
    }
    assert_int_equal(lines, malformed);
    assert_true(gguf >= 50);
    assert_true(safetensors >= 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest),
        cmocka_unit_test(test_model_open),
        cmocka_unit_test(test_open_memory),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_byte_mutations),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_folder),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
