/* libFuzzer target for the tokenizer readers and encoders. The first input
 * byte picks what the rest is:
 *   0: a SentencePiece ModelProto (spiece.model),
 *   1: a tokenizer.json (BPE or Unigram),
 *   2: a GGUF whose tokenizer.ggml.* metadata is read,
 *   else: prompt text for two fixed small tokenizers (CLIP and T5).
 * A tokenizer that opens encodes a few prompts, and every id must be in its
 * range; a failure must leave no handle and one printable line. Any
 * inconsistency aborts, which libFuzzer reports as a crash. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "badfiles.h"
#include "mgpu/gguf.h"
#include "text/tokenizer.h"
#include "text/tokenizer_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *message)
{
    fprintf(stderr, "fuzz_tokenizer: %s\n  message: %s\n", what, message ? message : "");
    abort();
}

static void check_failure(mgpu_status s, const mgpu_tokenizer *t, const mgpu_error *err)
{
    const char *problem = badfiles_check_error(s, t, err, 0);
    if (problem)
        fail(problem, err->message);
}

static void exercise(const mgpu_tokenizer *t, const char *text)
{
    int32_t ids[4096];
    int64_t n = 0;
    mgpu_error err = {0};
    mgpu_status s = mgpu_tokenizer_encode(t, text, ids, 4096, &n, &err);
    if (s != MGPU_OK && s != MGPU_ERR_ARGUMENT && s != MGPU_ERR_FORMAT)
        fail("encode failed oddly", err.message);
    int64_t m = n < 4096 ? n : 4096;
    for (int64_t i = 0; s == MGPU_OK && i < m; i++)
        if (ids[i] < 0 || ids[i] >= mgpu_tokenizer_vocab_size(t))
            fail("an id out of range", text);
    if (mgpu_tokenizer_get_kind(t) == MGPU_TOKENIZER_CLIP_BPE) {
        int32_t w[MGPU_CLIP_CONTEXT];
        int64_t eos;
        if (mgpu_tokenizer_encode_clip77(t, text, MGPU_CLIP_TRUNCATE_WORDS, w, &eos, NULL,
                                         &err) == MGPU_OK &&
            (eos < 1 || eos >= MGPU_CLIP_CONTEXT || w[eos] != mgpu_tokenizer_eos_id(t)))
            fail("the EOS index is wrong", text);
    } else {
        int64_t count;
        mgpu_tokenizer_encode_t5(t, text, 8, 64, ids, 4096, &count, NULL, &err);
    }
}

static const char *const prompts[] = {"a photo of a cat", "  It's 2024!!  caf\xC3\xA9 ",
                                      "\xE4\xBD\xA0\xE5\xA5\xBD <|endoftext|> x", ""};

static void exercise_all(const mgpu_tokenizer *t)
{
    for (size_t i = 0; i < sizeof prompts / sizeof prompts[0]; i++)
        exercise(t, prompts[i]);
}

static const char clip_json[] =
    "{\"model\": {\"type\": \"BPE\", \"end_of_word_suffix\": \"</w>\", \"vocab\": {\"a\": 0, "
    "\"b\": 1, \"a</w>\": 2, \"b</w>\": 3, \"ab</w>\": 4, \"<|startoftext|>\": 5, "
    "\"<|endoftext|>\": 6}, \"merges\": [\"a b</w>\"]}}";
static const char t5_json[] =
    "{\"model\": {\"type\": \"Unigram\", \"unk_id\": 2, \"vocab\": [[\"<pad>\", 0], [\"</s>\", "
    "0], [\"<unk>\", 0], [\"\xE2\x96\x81\", -2], [\"a\", -3], [\"\xE2\x96\x81" "a\", -2]]}}";

static mgpu_tokenizer *from_json(const char *text, size_t n, mgpu_error *err, mgpu_status *s)
{
    mgpu_tokenizer *t = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
    json_t *model = json_object_get(root, "model");
    const char *type = json_string_value(json_object_get(model, "type"));
    *s = MGPU_ERR_FORMAT;
    err->status = MGPU_ERR_FORMAT;
    snprintf(err->message, sizeof err->message, "not a tokenizer.json");
    if (type && strcmp(type, "BPE") == 0)
        *s = tk_clip_from_tokenizer_json("fuzz.json", root, &t, err);
    else if (type && strcmp(type, "Unigram") == 0)
        *s = tk_t5_from_tokenizer_json("fuzz.json", root, &t, err);
    json_decref(root);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    mgpu_error err;
    memset(&err, 0, sizeof err);
    mgpu_tokenizer *t = NULL;
    mgpu_status s;
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    if (data[0] == 0) {
        s = tk_t5_from_spiece("fuzz.model", body, n, &t, &err);
    } else if (data[0] == 1) {
        t = from_json((const char *)body, n, &err, &s);
    } else if (data[0] == 2) {
        mgpu_gguf *g = NULL;
        s = mgpu_gguf_open_memory(body, n, "fuzz.gguf", &g, &err);
        if (s != MGPU_OK)
            return 0; /* the GGUF reader has its own target */
        s = mgpu_tokenizer_from_gguf(g, "fuzz.gguf", &t, &err);
        mgpu_gguf_close(g);
    } else {
        /* Prompt text, NUL-terminated, through fixed tokenizers. */
        static mgpu_tokenizer *clip, *t5;
        if (!clip) {
            mgpu_status a, b;
            clip = from_json(clip_json, sizeof clip_json - 1, &err, &a);
            t5 = from_json(t5_json, sizeof t5_json - 1, &err, &b);
            if (a != MGPU_OK || b != MGPU_OK)
                fail("the fixed tokenizers do not open", err.message);
        }
        char *text = malloc(n + 1);
        if (!text)
            return 0;
        memcpy(text, body, n);
        text[n] = '\0';
        exercise(clip, text);
        exercise(t5, text);
        free(text);
        return 0;
    }
    if (s != MGPU_OK) {
        check_failure(s, t, &err);
        return 0;
    }
    if (!t)
        fail("success without a handle", NULL);
    exercise_all(t);
    mgpu_tokenizer_free(t);
    return 0;
}
