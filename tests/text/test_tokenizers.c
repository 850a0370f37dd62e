/* Tokenizers: hand-derived id sequences from small vocabularies written
 * here (through the synth_tokenizer writers, in every file form), the FLUX
 * conventions, the default synthetic vocabularies checked against their own
 * vocab.json / piece list read independently, and malformed files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mgpu/gguf.h"
#include "synth_tokenizer.h"
#include "test_util.h"
#include "text/tokenizer.h"

/* ---- helpers ----------------------------------------------------------- */

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

static mgpu_tokenizer *open_ok(const char *path)
{
    mgpu_tokenizer *t = NULL;
    mgpu_error err = {0};
    mgpu_status s = mgpu_tokenizer_open(path, &t, &err);
    if (s != MGPU_OK)
        print_error("open %s: %s\n", path, err.message);
    assert_int_equal(s, MGPU_OK);
    assert_non_null(t);
    return t;
}

/* Encodes and compares with the expected ids. */
static void expect_ids(const mgpu_tokenizer *t, const char *text, const int32_t *want, int64_t n)
{
    int32_t ids[512];
    int64_t count = -1;
    mgpu_error err = {0};
    mgpu_status s = mgpu_tokenizer_encode(t, text, ids, 512, &count, &err);
    if (s != MGPU_OK)
        print_error("encode \"%s\": %s\n", text, err.message);
    assert_int_equal(s, MGPU_OK);
    int same = count == n;
    for (int64_t i = 0; same && i < n; i++)
        same = ids[i] == want[i];
    if (!same) {
        print_error("\"%s\": got", text);
        for (int64_t i = 0; i < count; i++)
            print_error(" %d", ids[i]);
        print_error(", want");
        for (int64_t i = 0; i < n; i++)
            print_error(" %d", want[i]);
        print_error("\n");
    }
    assert_true(same);
}

#define EXPECT(t, text, ...)                                                                       \
    do {                                                                                           \
        static const int32_t want_[] = {__VA_ARGS__};                                              \
        expect_ids(t, text, want_, (int64_t)(sizeof want_ / sizeof want_[0]));                     \
    } while (0)

static void expect_open_error(const char *path, mgpu_status want, const char *substring)
{
    mgpu_tokenizer *t = (mgpu_tokenizer *)&t;
    mgpu_error err = {0};
    mgpu_status s = mgpu_tokenizer_open(path, &t, &err);
    if (s != want || !strstr(err.message, substring))
        print_error("open %s: status %d (want %d), message \"%s\" (want \"%s\")\n", path, s, want,
                    err.message, substring);
    assert_int_equal(s, want);
    assert_null(t);
    assert_non_null(strstr(err.message, substring));
    assert_null(strchr(err.message, '\n'));
}

/* ---- the hand-made CLIP vocabulary ------------------------------------- */

/* Ids follow CLIP's layout: printable ASCII c is id c - 33, with "</w>"
 * 256 + c - 33; merge k makes id 512 + k; then BOS 520 and EOS 521. */
#define C(ch) ((int32_t)(ch) - 33)
#define CW(ch) (256 + (int32_t)(ch) - 33)
static const char *const clip_merges[] = {
    "h e",        /* 0 -> 512 "he" */
    "l l",        /* 1 -> 513 "ll" */
    "l o</w>",    /* 2 -> 514 "lo</w>" */
    "he ll",      /* 3 -> 515 "hell" */
    "hell o</w>", /* 4 -> 516 "hello</w>" */
    "' s</w>",    /* 5 -> 517 "'s</w>" */
    "c a",        /* 6 -> 518 "ca" */
    "ca t</w>",   /* 7 -> 519 "cat</w>" */
};
enum { CLIP_BOS = 520, CLIP_EOS = 521 };

static void check_clip_hand(const mgpu_tokenizer *t)
{
    assert_int_equal(mgpu_tokenizer_get_kind(t), MGPU_TOKENIZER_CLIP_BPE);
    assert_int_equal(mgpu_tokenizer_vocab_size(t), 522);
    assert_int_equal(mgpu_tokenizer_bos_id(t), CLIP_BOS);
    assert_int_equal(mgpu_tokenizer_eos_id(t), CLIP_EOS);
    assert_int_equal(mgpu_tokenizer_pad_id(t), CLIP_EOS);
    assert_string_equal(mgpu_tokenizer_piece(t, 516), "hello</w>");
    /* h e l l o</w>: "h e" (rank 0), then "l l" (1) takes both l's so
     * "l o</w>" (2) never applies, then "he ll" (3), "hell o</w>" (4). */
    EXPECT(t, "hello", 516);
    /* Uppercase is lowered; whitespace runs (spaces, tab, newline) split. */
    EXPECT(t, "  HeLLo \t\n  hello  ", 516, 516);
    /* h e l l</w>: "h e", then "l l</w>" is no merge ("l l" needs a plain
     * second l), so: he, l, l</w>. */
    EXPECT(t, "hell", 512, C('l'), CW('l'));
    /* Contractions split off: "cat" -> "c a", "ca t</w>"; "'s" -> "' s</w>". */
    EXPECT(t, "cat's", 519, 517);
    /* "it" has no merges; "'d" is a contraction pre-token with no merge. */
    EXPECT(t, "it'd", C('i'), CW('t'), C('\''), CW('d'));
    /* Each digit is its own pre-token, so each ends a word. */
    EXPECT(t, "2024", CW('2'), CW('0'), CW('2'), CW('4'));
    /* A run of punctuation is one pre-token: !, !, ?</w>. */
    EXPECT(t, "hello!!?", 516, C('!'), C('!'), CW('?'));
    /* An apostrophe not followed by s/t/re/ve/m/ll/d joins the punctuation
     * run: "'x" is ' then the letter run x. */
    EXPECT(t, "'x", CW('\''), CW('x'));
    /* U+00C9 lowers to U+00E9, a letter: one pre-token of bytes C3 A9 C3 A9.
     * Byte 0xC3 maps to itself, id 106 + (0xC3 - 174) = 127 (ids 0..93 are
     * 33..126, 94..105 are 161..172, 106.. are 174..255); 0xA9 is id
     * 94 + 8 = 102, with </w> 358. */
    EXPECT(t, "\xC3\x89\xC3\xA9", 127, 102, 127, 358);
    /* The special tokens' text maps to their ids, even inside punctuation. */
    EXPECT(t, "!<|endoftext|>cat", CW('!'), CLIP_EOS, 519);
    /* A space byte is never a symbol: it only separates. Empty text: no ids. */
    int64_t n = -1;
    mgpu_error err = {0};
    assert_int_equal(mgpu_tokenizer_encode(t, "", NULL, 0, &n, &err), MGPU_OK);
    assert_int_equal(n, 0);
    assert_int_equal(mgpu_tokenizer_encode(t, " \t ", NULL, 0, &n, &err), MGPU_OK);
    assert_int_equal(n, 0);
    /* Invalid UTF-8 names the offset of the bad byte. */
    assert_int_equal(mgpu_tokenizer_encode(t, "ab\xFF" "cd", NULL, 0, &n, &err), MGPU_ERR_ARGUMENT);
    assert_non_null(strstr(err.message, "offset 2"));
    assert_int_equal(mgpu_tokenizer_encode(t, "ab\xC3", NULL, 0, &n, &err), MGPU_ERR_ARGUMENT);
    assert_non_null(strstr(err.message, "offset 2"));
    /* Overlong encoding of '/' and a UTF-16 surrogate are invalid too. */
    assert_int_equal(mgpu_tokenizer_encode(t, "\xC0\xAF", NULL, 0, &n, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(mgpu_tokenizer_encode(t, "x\xED\xA0\x80", NULL, 0, &n, &err),
                     MGPU_ERR_ARGUMENT);
    assert_non_null(strstr(err.message, "offset 1"));
    /* Too little room: the count is still reported. */
    int32_t one[1];
    assert_int_equal(mgpu_tokenizer_encode(t, "hello hello", one, 1, &n, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(n, 2);
}

static void write_clip_hand(const char *dir, const char *json)
{
    mgpu_error err = {0};
    size_t n = sizeof clip_merges / sizeof clip_merges[0];
    assert_int_equal(synth_tok_clip_write(clip_merges, n, SYNTH_TOK_VOCAB, dir, &err), MGPU_OK);
    assert_int_equal(synth_tok_clip_write(clip_merges, n, SYNTH_TOK_JSON, json, &err), MGPU_OK);
}

static void test_clip_hand(void **state)
{
    (void)state;
    const char *dir = test_path("clip_hand");
    const char *json = test_path("clip_hand.json");
    write_clip_hand(dir, json);
    char vocab[1100];
    snprintf(vocab, sizeof vocab, "%s/vocab.json", dir);
    const char *paths[3] = {dir, vocab, json};
    for (int i = 0; i < 3; i++) {
        mgpu_tokenizer *t = open_ok(paths[i]);
        check_clip_hand(t);
        mgpu_tokenizer_free(t);
    }
}

static void test_clip77(void **state)
{
    (void)state;
    const char *dir = test_path("clip77");
    write_clip_hand(dir, test_path("clip77.json"));
    mgpu_tokenizer *t = open_ok(dir);
    int32_t ids[MGPU_CLIP_CONTEXT];
    int64_t eos = -1, dropped = -1;
    mgpu_error err = {0};

    /* BOS, hello, EOS, then EOS padding to 77; the first EOS is at 2. */
    assert_int_equal(mgpu_tokenizer_encode_clip77(t, "hello", MGPU_CLIP_TRUNCATE_WORDS, ids, &eos,
                                                  &dropped, &err),
                     MGPU_OK);
    assert_int_equal(ids[0], CLIP_BOS);
    assert_int_equal(ids[1], 516);
    for (int i = 2; i < MGPU_CLIP_CONTEXT; i++)
        assert_int_equal(ids[i], CLIP_EOS);
    assert_int_equal(eos, 2);
    assert_int_equal(dropped, 0);

    /* Empty prompt: BOS then EOS everywhere, pooled at 1. */
    assert_int_equal(mgpu_tokenizer_encode_clip77(t, "", MGPU_CLIP_TRUNCATE_TOKENS, ids, &eos,
                                                  &dropped, &err),
                     MGPU_OK);
    assert_int_equal(ids[0], CLIP_BOS);
    assert_int_equal(ids[1], CLIP_EOS);
    assert_int_equal(eos, 1);

    /* 80 one-token words: 75 fit between BOS and EOS, 5 are dropped. */
    char text[2048] = "";
    for (int i = 0; i < 80; i++)
        strcat(text, "cat ");
    for (int mode = 0; mode < 2; mode++) {
        assert_int_equal(mgpu_tokenizer_encode_clip77(t, text, (mgpu_clip_truncation)mode, ids,
                                                      &eos, &dropped, &err),
                         MGPU_OK);
        for (int i = 1; i <= 75; i++)
            assert_int_equal(ids[i], 519);
        assert_int_equal(ids[76], CLIP_EOS);
        assert_int_equal(eos, 76);
        assert_int_equal(dropped, 5);
    }

    /* 74 cats and "hell" (3 tokens: he, l, l</w>). Tokens mode keeps he and
     * l; words mode drops the whole word (ComfyUI moves it to the next
     * chunk: fewer than 8 tokens). */
    text[0] = '\0';
    for (int i = 0; i < 74; i++)
        strcat(text, "cat ");
    strcat(text, "hell");
    assert_int_equal(mgpu_tokenizer_encode_clip77(t, text, MGPU_CLIP_TRUNCATE_TOKENS, ids, &eos,
                                                  &dropped, &err),
                     MGPU_OK);
    assert_int_equal(ids[75], 512);
    assert_int_equal(ids[76], CLIP_EOS);
    assert_int_equal(eos, 76);
    assert_int_equal(dropped, 2);
    assert_int_equal(mgpu_tokenizer_encode_clip77(t, text, MGPU_CLIP_TRUNCATE_WORDS, ids, &eos,
                                                  &dropped, &err),
                     MGPU_OK);
    assert_int_equal(ids[74], 519);
    assert_int_equal(ids[75], CLIP_EOS);
    assert_int_equal(ids[76], CLIP_EOS);
    assert_int_equal(eos, 75);
    assert_int_equal(dropped, 3);

    /* 70 cats and a 9-token word ("!!!!!!!!!": ! x 8, !</w>): a large word
     * is split to fill the chunk. */
    text[0] = '\0';
    for (int i = 0; i < 70; i++)
        strcat(text, "cat ");
    strcat(text, "!!!!!!!!!");
    assert_int_equal(mgpu_tokenizer_encode_clip77(t, text, MGPU_CLIP_TRUNCATE_WORDS, ids, &eos,
                                                  &dropped, &err),
                     MGPU_OK);
    for (int i = 71; i <= 75; i++)
        assert_int_equal(ids[i], C('!'));
    assert_int_equal(eos, 76);
    assert_int_equal(dropped, 4);

    /* A T5 call on a CLIP tokenizer is refused. */
    int64_t count;
    assert_int_equal(mgpu_tokenizer_encode_t5(t, "x", 0, 0, ids, 77, &count, NULL, &err),
                     MGPU_ERR_ARGUMENT);
    mgpu_tokenizer_free(t);
}

/* ---- the hand-made T5 vocabulary --------------------------------------- */

#define M "\xE2\x96\x81"
static const synth_piece t5_pieces[] = {
    {"<pad>", 0, SYNTH_PIECE_CONTROL},   /* 0 */
    {"</s>", 0, SYNTH_PIECE_CONTROL},    /* 1 */
    {"<unk>", 0, SYNTH_PIECE_UNKNOWN},   /* 2 */
    {M, -2, SYNTH_PIECE_NORMAL},         /* 3 */
    {"a", -3, SYNTH_PIECE_NORMAL},       /* 4 */
    {"b", -3, SYNTH_PIECE_NORMAL},       /* 5 */
    {"c", -3, SYNTH_PIECE_NORMAL},       /* 6 */
    {M "a", -2, SYNTH_PIECE_NORMAL},     /* 7 */
    {M "ab", -5, SYNTH_PIECE_NORMAL},    /* 8 */
    {"bc", -2, SYNTH_PIECE_NORMAL},      /* 9 */
    {"\xC3\xA9", -4, SYNTH_PIECE_NORMAL}, /* 10: e with acute */
};

static void check_t5_hand(const mgpu_tokenizer *t)
{
    assert_int_equal(mgpu_tokenizer_get_kind(t), MGPU_TOKENIZER_T5_UNIGRAM);
    assert_int_equal(mgpu_tokenizer_vocab_size(t), 11);
    assert_int_equal(mgpu_tokenizer_pad_id(t), 0);
    assert_int_equal(mgpu_tokenizer_eos_id(t), 1);
    assert_int_equal(mgpu_tokenizer_unk_id(t), 2);
    assert_int_equal(mgpu_tokenizer_bos_id(t), -1);
    /* "▁abc": greedy longest match takes ▁ab (-5) then c (-3) = -8; Viterbi
     * finds ▁a (-2) + bc (-2) = -4, better than ▁+a+bc (-7) or ▁a+b+c (-8). */
    EXPECT(t, "abc", 7, 9);
    /* The dummy prefix: "b" is "▁b", and "▁b" is no piece: ▁, b. */
    EXPECT(t, "b", 3, 5);
    /* Leading, trailing and repeated whitespace collapse to one ▁. */
    EXPECT(t, "  a \t\n b  ", 7, 3, 5);
    /* x and y have no piece: one unk for the run, then b resumes. */
    EXPECT(t, "a xyb", 7, 3, 2, 5);
    /* Two unknown CJK characters: one unk. */
    EXPECT(t, "a \xE4\xBD\xA0\xE5\xA5\xBD", 7, 3, 2);
    /* A non-ASCII piece matches as a whole character. */
    EXPECT(t, "\xC3\xA9" "a", 3, 10, 4);
    /* Unknown runs split by a known piece stay two unks. */
    EXPECT(t, "xax", 3, 2, 4, 2);
    /* Control pieces never match text: "</s>" is unknown characters,
     * then s (unknown), > (unknown), all one run. */
    EXPECT(t, "</s>", 3, 2);
    /* Fullwidth "ａ" (U+FF41) is read as "a" (the NFKC approximation). */
    EXPECT(t, "\xEF\xBD\x81", 7);
    int64_t n = -1;
    mgpu_error err = {0};
    assert_int_equal(mgpu_tokenizer_encode(t, "   ", NULL, 0, &n, &err), MGPU_OK);
    assert_int_equal(n, 0);

    /* FLUX: text ids, EOS, pad to 256 (ComfyUI). */
    int32_t ids[300];
    int64_t count = -1, dropped = -1;
    assert_int_equal(mgpu_tokenizer_encode_t5(t, "abc", MGPU_T5_FLUX_MIN_LENGTH, 0, ids, 300,
                                              &count, &dropped, &err),
                     MGPU_OK);
    assert_int_equal(count, 256);
    assert_int_equal(dropped, 0);
    assert_int_equal(ids[0], 7);
    assert_int_equal(ids[1], 9);
    assert_int_equal(ids[2], 1);
    for (int i = 3; i < 256; i++)
        assert_int_equal(ids[i], 0);
    /* Empty: EOS alone, no padding asked for. */
    assert_int_equal(mgpu_tokenizer_encode_t5(t, "", 0, 0, ids, 300, &count, &dropped, &err),
                     MGPU_OK);
    assert_int_equal(count, 1);
    assert_int_equal(ids[0], 1);
    /* "a b c" is ▁a ▁ b ▁ c (5 ids); max_len 3 keeps ▁a ▁ and the EOS. */
    assert_int_equal(mgpu_tokenizer_encode_t5(t, "a b c", 0, 3, ids, 300, &count, &dropped, &err),
                     MGPU_OK);
    assert_int_equal(count, 3);
    assert_int_equal(dropped, 3);
    assert_int_equal(ids[0], 7);
    assert_int_equal(ids[1], 3);
    assert_int_equal(ids[2], 1);
    /* Not enough room, or a bad range: argument errors. */
    assert_int_equal(mgpu_tokenizer_encode_t5(t, "abc", 256, 0, ids, 100, &count, NULL, &err),
                     MGPU_ERR_ARGUMENT);
    assert_int_equal(count, 256);
    assert_int_equal(mgpu_tokenizer_encode_t5(t, "abc", 10, 5, ids, 100, &count, NULL, &err),
                     MGPU_ERR_ARGUMENT);
    /* And the CLIP convention is refused. */
    int64_t eos;
    assert_int_equal(mgpu_tokenizer_encode_clip77(t, "abc", MGPU_CLIP_TRUNCATE_TOKENS, ids, &eos,
                                                  NULL, &err),
                     MGPU_ERR_ARGUMENT);
}

static void test_t5_hand(void **state)
{
    (void)state;
    size_t n = sizeof t5_pieces / sizeof t5_pieces[0];
    const synth_tok_format forms[3] = {SYNTH_TOK_SPIECE, SYNTH_TOK_JSON, SYNTH_TOK_GGUF};
    const char *names[3] = {"t5_hand.model", "t5_hand.json", "t5_hand.gguf"};
    for (int i = 0; i < 3; i++) {
        mgpu_error err = {0};
        const char *path = test_path(names[i]);
        assert_int_equal(synth_tok_t5_write(t5_pieces, n, forms[i], path, &err), MGPU_OK);
        mgpu_tokenizer *t = open_ok(path);
        check_t5_hand(t);
        mgpu_tokenizer_free(t);
    }
    /* The GGUF path through an open mgpu_gguf handle, and a folder. */
    mgpu_gguf *g = NULL;
    mgpu_error err = {0};
    assert_int_equal(mgpu_gguf_open(test_path("t5_hand.gguf"), &g, &err), MGPU_OK);
    mgpu_tokenizer *t = NULL;
    assert_int_equal(mgpu_tokenizer_from_gguf(g, "t5_hand.gguf", &t, &err), MGPU_OK);
    mgpu_gguf_close(g);
    check_t5_hand(t);
    mgpu_tokenizer_free(t);
    const char *dir = test_path("t5_dir");
    mkdir(dir, 0755);
    char path[1100];
    snprintf(path, sizeof path, "%s/spiece.model", dir);
    assert_int_equal(synth_tok_t5_write(t5_pieces, n, SYNTH_TOK_SPIECE, path, &err), MGPU_OK);
    t = open_ok(dir);
    check_t5_hand(t);
    mgpu_tokenizer_free(t);
}

/* ---- the default synthetic vocabularies -------------------------------- */

static const char *const prompts[] = {
    "a photo of a cat",
    "A cinematic portrait of an astronaut, reading a book under the stars!",
    "  the   old   wooden   bridge  over the misty river at sunrise ",
    "it's 3 o'clock; they're walking 2 dogs & 10 horses...",
    "caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD \xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82 zebra",
    "",
};
enum { n_prompts = sizeof prompts / sizeof prompts[0] };

static void same_ids(mgpu_tokenizer *const *ts, int n)
{
    for (int p = 0; p < n_prompts; p++) {
        int32_t first[512], other[512];
        int64_t nf, no;
        mgpu_error err = {0};
        assert_int_equal(mgpu_tokenizer_encode(ts[0], prompts[p], first, 512, &nf, &err), MGPU_OK);
        for (int64_t i = 0; i < nf; i++) {
            assert_true(first[i] >= 0 && first[i] < 1024);
            assert_true(first[i] != mgpu_tokenizer_unk_id(ts[0]) || p == 4);
        }
        for (int k = 1; k < n; k++) {
            assert_int_equal(mgpu_tokenizer_encode(ts[k], prompts[p], other, 512, &no, &err),
                             MGPU_OK);
            assert_int_equal(no, nf);
            assert_memory_equal(first, other, (size_t)nf * sizeof *first);
        }
    }
}

static void test_default_clip(void **state)
{
    (void)state;
    mgpu_error err = {0};
    const char *dir = test_path("clip_default");
    const char *json = test_path("clip_default.json");
    assert_int_equal(synth_tok_write_default("clip", SYNTH_TOK_VOCAB, dir, &err), MGPU_OK);
    assert_int_equal(synth_tok_write_default("clip", SYNTH_TOK_JSON, json, &err), MGPU_OK);
    mgpu_tokenizer *ts[2] = {open_ok(dir), open_ok(json)};
    same_ids(ts, 2);

    /* Read vocab.json on its own: the specials, and words of the training
     * list, which BPE trained to completion makes single "word</w>" ids. */
    char path[1100];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    json_t *v = json_load_file(path, 0, NULL);
    assert_non_null(v);
    int64_t size = (int64_t)json_object_size(v);
    assert_true(size <= 1024);
    assert_int_equal(mgpu_tokenizer_vocab_size(ts[0]), size);
    assert_int_equal(mgpu_tokenizer_bos_id(ts[0]),
                     json_integer_value(json_object_get(v, "<|startoftext|>")));
    assert_int_equal(mgpu_tokenizer_eos_id(ts[0]),
                     json_integer_value(json_object_get(v, "<|endoftext|>")));
    assert_int_equal(mgpu_tokenizer_eos_id(ts[0]), size - 1);
    static const char *const list_words[] = {"the", "photo", "cat", "mountain", "astronaut", "a"};
    for (size_t i = 0; i < sizeof list_words / sizeof list_words[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s</w>", list_words[i]);
        json_t *id = json_object_get(v, key);
        assert_non_null(id);
        int32_t want = (int32_t)json_integer_value(id);
        expect_ids(ts[0], list_words[i], &want, 1);
        expect_ids(ts[1], list_words[i], &want, 1);
    }
    json_decref(v);
    mgpu_tokenizer_free(ts[0]);
    mgpu_tokenizer_free(ts[1]);
}

static void test_default_t5(void **state)
{
    (void)state;
    mgpu_error err = {0};
    const char *paths[3] = {test_path("t5_default.model"), test_path("t5_default.json"),
                            test_path("t5_default.gguf")};
    const synth_tok_format forms[3] = {SYNTH_TOK_SPIECE, SYNTH_TOK_JSON, SYNTH_TOK_GGUF};
    mgpu_tokenizer *ts[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(synth_tok_write_default("t5", forms[i], paths[i], &err), MGPU_OK);
        ts[i] = open_ok(paths[i]);
        assert_int_equal(mgpu_tokenizer_pad_id(ts[i]), 0);
        assert_int_equal(mgpu_tokenizer_eos_id(ts[i]), 1);
        assert_int_equal(mgpu_tokenizer_unk_id(ts[i]), 2);
    }
    same_ids(ts, 3);
    /* Whole-word pieces win: "▁a ▁photo ▁of ▁a ▁cat", ids from the list. */
    size_t n;
    const synth_piece *p = synth_tok_t5_default_pieces(&n);
    assert_true(n < 1024);
    assert_int_equal(mgpu_tokenizer_vocab_size(ts[0]), (int64_t)n);
    const char *want_pieces[5] = {M "a", M "photo", M "of", M "a", M "cat"};
    int32_t want[5];
    for (int k = 0; k < 5; k++) {
        want[k] = -1;
        for (size_t i = 0; i < n; i++)
            if (strcmp(p[i].piece, want_pieces[k]) == 0)
                want[k] = (int32_t)i;
        assert_true(want[k] >= 0);
    }
    expect_ids(ts[0], "a photo of a cat", want, 5);
    for (int i = 0; i < 3; i++)
        mgpu_tokenizer_free(ts[i]);
}

/* ---- malformed files ---------------------------------------------------- */

static void test_malformed_clip(void **state)
{
    (void)state;
    char dir[1024], path[1100], merges[1100];
    snprintf(dir, sizeof dir, "%s", test_path("bad_clip"));
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    snprintf(merges, sizeof merges, "%s/merges.txt", dir);
    const char *specials = "\"<|startoftext|>\": 3, \"<|endoftext|>\": 4";

    /* No merges.txt beside vocab.json. */
    char text[512];
    snprintf(text, sizeof text, "{\"a\": 0, \"b\": 1, \"ab\": 2, %s}", specials);
    write_text(path, text);
    expect_open_error(path, MGPU_ERR_NOT_FOUND, "merges.txt");

    write_text(merges, "#version: 0.2\na b\n");
    mgpu_tokenizer *t = open_ok(path);
    mgpu_tokenizer_free(t);

    /* An id that is a string, one out of range, one used twice. */
    snprintf(text, sizeof text, "{\"a\": \"0\", \"b\": 1, \"ab\": 2, %s}", specials);
    write_text(path, text);
    expect_open_error(path, MGPU_ERR_FORMAT, "not an integer");
    snprintf(text, sizeof text, "{\"a\": 0, \"b\": 1, \"ab\": 99, %s}", specials);
    write_text(path, text);
    expect_open_error(path, MGPU_ERR_FORMAT, "outside");
    snprintf(text, sizeof text, "{\"a\": 0, \"b\": 1, \"ab\": 1, %s}", specials);
    write_text(path, text);
    expect_open_error(path, MGPU_ERR_FORMAT, "id 1");
    /* Duplicate keys are rejected by the JSON reader. */
    snprintf(text, sizeof text, "{\"a\": 0, \"a\": 1, \"ab\": 2, %s}", specials);
    write_text(path, text);
    expect_open_error(path, MGPU_ERR_FORMAT, "JSON");

    /* Merges naming unknown symbols or making unknown ones; bad lines. */
    snprintf(text, sizeof text, "{\"a\": 0, \"b\": 1, \"ab\": 2, %s}", specials);
    write_text(path, text);
    write_text(merges, "#version: 0.2\na c\n");
    expect_open_error(path, MGPU_ERR_FORMAT, "\"c\", which is not in the vocabulary");
    write_text(merges, "#version: 0.2\nb a\n");
    expect_open_error(path, MGPU_ERR_FORMAT, "not in the vocabulary");
    write_text(merges, "#version: 0.2\na  b\n");
    expect_open_error(path, MGPU_ERR_FORMAT, "line 2");

    /* No specials. */
    write_text(merges, "a b\n");
    write_text(path, "{\"a\": 0, \"b\": 1, \"ab\": 2}");
    expect_open_error(path, MGPU_ERR_FORMAT, "<|startoftext|>");

    /* tokenizer.json: wrong types, unsupported BPE flavours. */
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_text(path, "{\"model\": {\"type\": \"BPE\", \"end_of_word_suffix\": \"</w>\", "
                     "\"vocab\": [1, 2], \"merges\": []}}");
    expect_open_error(path, MGPU_ERR_FORMAT, "not a JSON object");
    write_text(path, "{\"model\": {\"type\": \"BPE\", \"end_of_word_suffix\": \"</w>\", "
                     "\"vocab\": {\"a\": 0}, \"merges\": {}}}");
    expect_open_error(path, MGPU_ERR_FORMAT, "merges is not an array");
    write_text(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    expect_open_error(path, MGPU_ERR_UNSUPPORTED, "</w>");
    snprintf(text, sizeof text,
             "{\"model\": {\"type\": \"BPE\", \"end_of_word_suffix\": \"</w>\", \"vocab\": "
             "{\"a\": 0, \"b\": 1, \"ab\": 2, %s}, \"merges\": [[\"a\", 7]]}}",
             specials);
    write_text(path, text);
    expect_open_error(path, MGPU_ERR_FORMAT, "merge 1");
    snprintf(text, sizeof text,
             "{\"added_tokens\": [{\"id\": 70000, \"content\": \"x\"}], \"model\": {\"type\": "
             "\"BPE\", \"end_of_word_suffix\": \"</w>\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": "
             "2, %s}, \"merges\": [\"a b\"]}}",
             specials);
    write_text(path, text);
    expect_open_error(path, MGPU_ERR_FORMAT, "70000");
    write_text(path, "{\"model\": {\"type\": \"WordPiece\"}}");
    expect_open_error(path, MGPU_ERR_UNSUPPORTED, "WordPiece");
    write_text(path, "{\"model\": {\"type\": \"BPE\"");
    expect_open_error(path, MGPU_ERR_FORMAT, "JSON");
    write_text(path, "");
    expect_open_error(path, MGPU_ERR_FORMAT, "empty");
    expect_open_error(test_path("no_such_tokenizer"), MGPU_ERR_IO, "no_such_tokenizer");
    char empty_dir[1100];
    snprintf(empty_dir, sizeof empty_dir, "%s", test_path("empty_tok_dir"));
    mkdir(empty_dir, 0755);
    expect_open_error(empty_dir, MGPU_ERR_NOT_FOUND, "no tokenizer.json");
}

static void test_malformed_t5(void **state)
{
    (void)state;
    const char *path = test_path("bad_t5.model");
    mgpu_error err = {0};
    size_t n = sizeof t5_pieces / sizeof t5_pieces[0];
    assert_int_equal(synth_tok_t5_write(t5_pieces, n, SYNTH_TOK_SPIECE, path, &err), MGPU_OK);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char good[4096];
    size_t size = fread(good, 1, sizeof good, f);
    fclose(f);
    assert_true(size > 40 && size < sizeof good);

    /* Truncated in the first piece's message. */
    write_bytes(path, good, 5);
    expect_open_error(path, MGPU_ERR_FORMAT, "not a SentencePiece model");
    /* Every prefix opens or fails cleanly (ASan watches the reads). */
    for (size_t k = 1; k < size; k++) {
        mgpu_tokenizer *t = NULL;
        write_bytes(path, good, k);
        mgpu_status s = mgpu_tokenizer_open(path, &t, &err);
        assert_true(s == MGPU_OK || (s == MGPU_ERR_FORMAT && t == NULL));
        mgpu_tokenizer_free(t);
    }
    /* A huge length: field 1, length 2^40. */
    static const unsigned char huge[] = {0x0A, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20};
    write_bytes(path, huge, sizeof huge);
    expect_open_error(path, MGPU_ERR_FORMAT, "runs past the end");
    /* A group wire type (3) is not skipped. */
    static const unsigned char group[] = {0x0B, 0x0C};
    write_bytes(path, group, sizeof group);
    expect_open_error(path, MGPU_ERR_FORMAT, "wrong wire type");
    /* A piece with a bad type, a duplicate piece, no UNKNOWN piece. */
    static const synth_piece bad_type[] = {{"<unk>", 0, 2}, {"a", -1, 9}};
    static const synth_piece dup[] = {{"<unk>", 0, 2}, {"a", -1, 1}, {"a", -2, 1}};
    static const synth_piece no_unk[] = {{"a", -1, 1}, {"b", -1, 1}};
    static const synth_piece empty_piece[] = {{"<unk>", 0, 2}, {"", -1, 1}};
    static const synth_piece bad_utf8[] = {{"<unk>", 0, 2}, {"\xC3", -1, 1}};
    assert_int_equal(synth_tok_t5_write(bad_type, 2, SYNTH_TOK_SPIECE, path, &err), MGPU_OK);
    expect_open_error(path, MGPU_ERR_FORMAT, "piece 1 has type 9");
    assert_int_equal(synth_tok_t5_write(dup, 3, SYNTH_TOK_SPIECE, path, &err), MGPU_OK);
    expect_open_error(path, MGPU_ERR_FORMAT, "repeats piece 1");
    assert_int_equal(synth_tok_t5_write(no_unk, 2, SYNTH_TOK_SPIECE, path, &err), MGPU_OK);
    expect_open_error(path, MGPU_ERR_FORMAT, "UNKNOWN");
    assert_int_equal(synth_tok_t5_write(empty_piece, 2, SYNTH_TOK_SPIECE, path, &err), MGPU_OK);
    expect_open_error(path, MGPU_ERR_FORMAT, "piece 1 is empty");
    assert_int_equal(synth_tok_t5_write(bad_utf8, 2, SYNTH_TOK_SPIECE, path, &err), MGPU_OK);
    expect_open_error(path, MGPU_ERR_FORMAT, "not valid UTF-8");
    /* A BPE SentencePiece model (trainer_spec.model_type 2). */
    static const unsigned char bpe[] = {0x0A, 0x09, 0x0A, 0x05, '<', 'u', 'n', 'k', '>',
                                        0x18, 0x02, 0x12, 0x02, 0x18, 0x02};
    write_bytes(path, bpe, sizeof bpe);
    expect_open_error(path, MGPU_ERR_UNSUPPORTED, "model_type 2");

    /* tokenizer.json Unigram: wrong types and ids. */
    const char *json = test_path("bad_t5.json");
    write_text(json, "{\"model\": {\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": {}}}");
    expect_open_error(json, MGPU_ERR_FORMAT, "vocab is not an array");
    write_text(json, "{\"model\": {\"type\": \"Unigram\", \"unk_id\": 5, \"vocab\": "
                     "[[\"<unk>\", 0.0]]}}");
    expect_open_error(json, MGPU_ERR_FORMAT, "unk_id");
    write_text(json, "{\"model\": {\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": "
                     "[[\"<unk>\", 0.0], [\"a\", \"x\"]]}}");
    expect_open_error(json, MGPU_ERR_FORMAT, "vocab[1]");
    write_text(json, "{\"added_tokens\": [{\"id\": 0, \"content\": \"<pad>\"}], \"model\": "
                     "{\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": [[\"<unk>\", 0.0]]}}");
    expect_open_error(json, MGPU_ERR_FORMAT, "which the model calls");

    /* GGUF: no tokenizer, tokens of the wrong type, scores of the wrong count. */
    const char *gpath = test_path("bad_t5.gguf");
    mgpu_gguf_writer *w = NULL;
    assert_int_equal(mgpu_gguf_writer_create(gpath, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_string(w, "general.architecture", "t5encoder", &err),
                     MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_finish(w, &err), MGPU_OK);
    expect_open_error(gpath, MGPU_ERR_NOT_FOUND, "tokenizer.ggml.model");
    assert_int_equal(mgpu_gguf_writer_create(gpath, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_string(w, "tokenizer.ggml.model", "t5", &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_string(w, "tokenizer.ggml.tokens", "oops", &err),
                     MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_finish(w, &err), MGPU_OK);
    expect_open_error(gpath, MGPU_ERR_FORMAT, "tokenizer.ggml.tokens");
    assert_int_equal(mgpu_gguf_writer_create(gpath, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_string(w, "tokenizer.ggml.model", "gpt2", &err),
                     MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_finish(w, &err), MGPU_OK);
    expect_open_error(gpath, MGPU_ERR_UNSUPPORTED, "gpt2");
    mgpu_gguf_value items[2] = {{.type = MGPU_GGUF_STRING}, {.type = MGPU_GGUF_STRING}};
    items[0].string.data = "<unk>";
    items[0].string.length = 5;
    items[1].string.data = "a";
    items[1].string.length = 1;
    float one_score = 0;
    mgpu_gguf_value tokens = {.type = MGPU_GGUF_ARRAY}, scores = {.type = MGPU_GGUF_ARRAY};
    tokens.array.elem_type = MGPU_GGUF_STRING;
    tokens.array.count = 2;
    tokens.array.items = items;
    scores.array.elem_type = MGPU_GGUF_FLOAT32;
    scores.array.count = 1;
    scores.array.raw = &one_score;
    assert_int_equal(mgpu_gguf_writer_create(gpath, &w, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_string(w, "tokenizer.ggml.model", "t5", &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_kv(w, "tokenizer.ggml.tokens", &tokens, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_kv(w, "tokenizer.ggml.scores", &scores, &err), MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0, &err),
                     MGPU_OK);
    assert_int_equal(mgpu_gguf_writer_finish(w, &err), MGPU_OK);
    expect_open_error(gpath, MGPU_ERR_FORMAT, "tokenizer.ggml.scores");
}

static void test_arguments(void **state)
{
    (void)state;
    mgpu_error err = {0};
    mgpu_tokenizer *t = NULL;
    assert_int_equal(mgpu_tokenizer_open(NULL, &t, &err), MGPU_ERR_ARGUMENT);
    const char *json = test_path("args.json");
    assert_int_equal(synth_tok_t5_write(t5_pieces, sizeof t5_pieces / sizeof t5_pieces[0],
                                        SYNTH_TOK_JSON, json, &err),
                     MGPU_OK);
    t = open_ok(json);
    int64_t n;
    assert_int_equal(mgpu_tokenizer_encode(t, NULL, NULL, 0, &n, &err), MGPU_ERR_ARGUMENT);
    /* Over the hard cap: an error, not a truncation. */
    size_t big = (size_t)MGPU_TOKENIZER_MAX_TEXT_BYTES + 10;
    char *text = malloc(big + 1);
    assert_non_null(text);
    memset(text, 'a', big);
    text[big] = '\0';
    assert_int_equal(mgpu_tokenizer_encode(t, text, NULL, 0, &n, &err), MGPU_ERR_ARGUMENT);
    assert_non_null(strstr(err.message, "longer than"));
    /* Just under the cap works ("▁a" then "a" x (n-1): the text is one word). */
    text[MGPU_TOKENIZER_MAX_TEXT_BYTES] = '\0';
    assert_int_equal(mgpu_tokenizer_encode(t, text, NULL, 0, &n, &err), MGPU_ERR_ARGUMENT);
    assert_int_equal(n, MGPU_TOKENIZER_MAX_TEXT_BYTES);
    free(text);
    assert_null(mgpu_tokenizer_piece(t, -1));
    assert_null(mgpu_tokenizer_piece(t, 11));
    assert_int_equal(mgpu_tokenizer_find_piece(t, "bc"), 9);
    assert_int_equal(mgpu_tokenizer_find_piece(t, "zz"), -1);
    mgpu_tokenizer_free(t);
    mgpu_tokenizer_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clip_hand),     cmocka_unit_test(test_clip77),
        cmocka_unit_test(test_t5_hand),       cmocka_unit_test(test_default_clip),
        cmocka_unit_test(test_default_t5),    cmocka_unit_test(test_malformed_clip),
        cmocka_unit_test(test_malformed_t5),  cmocka_unit_test(test_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
