/* mgpu-synth-tokenizer: writes the synthetic CLIP or T5 tokenizer files of
 * synth_tokenizer.c (small vocabularies whose ids fit the tiny synthetic
 * text encoders). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "synth_tokenizer.h"

/* Seeds for fuzz/fuzz_tokenizer.c: each synthetic file behind the selector
 * byte that target reads first, and a prompt. */
static int fuzz_seeds(const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "mgpu-synth-tokenizer: cannot create %s\n", dir);
        return 1;
    }
    static const struct {
        const char *kind;
        synth_tok_format format;
        unsigned char selector;
    } seeds[] = {{"t5", SYNTH_TOK_SPIECE, 0}, {"clip", SYNTH_TOK_JSON, 1}, {"t5", SYNTH_TOK_JSON, 1},
                 {"t5", SYNTH_TOK_GGUF, 2}};
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/.seed.tmp", dir);
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        mgpu_error err = {0};
        if (synth_tok_write_default(seeds[i].kind, seeds[i].format, tmp, &err) != MGPU_OK) {
            fprintf(stderr, "mgpu-synth-tokenizer: %s\n", err.message);
            return 1;
        }
        FILE *in = fopen(tmp, "rb");
        snprintf(path, sizeof path, "%s/seed-%zu", dir, i);
        FILE *out = fopen(path, "wb");
        if (!in || !out) {
            fprintf(stderr, "mgpu-synth-tokenizer: cannot write %s\n", path);
            if (in)
                fclose(in);
            if (out)
                fclose(out);
            return 1;
        }
        fputc(seeds[i].selector, out);
        int c;
        while ((c = fgetc(in)) != EOF)
            fputc(c, out);
        fclose(in);
        if (fclose(out) != 0)
            return 1;
    }
    remove(tmp);
    snprintf(path, sizeof path, "%s/seed-text", dir);
    FILE *out = fopen(path, "wb");
    if (!out)
        return 1;
    fputs("\x03" "A photo of a cat's hat, 2024!  caf\xC3\xA9 \xE4\xBD\xA0", out);
    return fclose(out) != 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mgpu-synth-tokenizer --kind clip|t5 --format json|vocab|spiece|gguf -o PATH\n"
               "  clip: json (tokenizer.json) or vocab (PATH is a folder: vocab.json + merges.txt)\n"
               "  t5:   json (tokenizer.json), spiece (spiece.model) or gguf (tokenizer.ggml.* keys)\n"
               "       mgpu-synth-tokenizer --fuzz-seeds DIR   (seeds for fuzz_tokenizer)\n");
}

int main(int argc, char **argv)
{
    const char *kind = NULL, *format = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--fuzz-seeds") == 0 && i + 1 < argc)
            return fuzz_seeds(argv[i + 1]);
        if (i + 1 >= argc) {
            fprintf(stderr, "mgpu-synth-tokenizer: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--kind") == 0)
            kind = argv[++i];
        else if (strcmp(a, "--format") == 0)
            format = argv[++i];
        else if (strcmp(a, "-o") == 0)
            out = argv[++i];
        else {
            fprintf(stderr, "mgpu-synth-tokenizer: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!kind || !format || !out) {
        usage(stderr);
        return 2;
    }
    synth_tok_format f;
    if (strcmp(format, "json") == 0)
        f = SYNTH_TOK_JSON;
    else if (strcmp(format, "vocab") == 0)
        f = SYNTH_TOK_VOCAB;
    else if (strcmp(format, "spiece") == 0)
        f = SYNTH_TOK_SPIECE;
    else if (strcmp(format, "gguf") == 0)
        f = SYNTH_TOK_GGUF;
    else {
        fprintf(stderr, "mgpu-synth-tokenizer: --format is json, vocab, spiece or gguf, not '%s'\n",
                format);
        return 2;
    }
    mgpu_error err = {0};
    if (synth_tok_write_default(kind, f, out, &err) != MGPU_OK) {
        fprintf(stderr, "mgpu-synth-tokenizer: %s\n", err.message);
        return 1;
    }
    return 0;
}
