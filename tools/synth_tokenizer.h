/* Synthetic tokenizer files for tests and the demo: a CLIP byte-level BPE
 * (vocab.json + merges.txt, or tokenizer.json) and a T5 SentencePiece
 * unigram (spiece.model, tokenizer.json, or a GGUF with tokenizer.ggml.*
 * metadata), laid out as the real files are but small enough for the tiny
 * synthetic encoders of synth_arch.c (vocab 1024: every id < 1024). */
#ifndef MGPU_TOOLS_SYNTH_TOKENIZER_H
#define MGPU_TOOLS_SYNTH_TOKENIZER_H

#include <stddef.h>

#include "mgpu/status.h"

typedef enum synth_tok_format {
    SYNTH_TOK_JSON,   /* tokenizer.json (both kinds); out is the file */
    SYNTH_TOK_VOCAB,  /* CLIP vocab.json + merges.txt; out is a folder (created) */
    SYNTH_TOK_SPIECE, /* T5 SentencePiece ModelProto; out is the file */
    SYNTH_TOK_GGUF,   /* T5 as tokenizer.ggml.* GGUF metadata; out is the file */
} synth_tok_format;

/* SentencePiece piece types. */
enum { SYNTH_PIECE_NORMAL = 1, SYNTH_PIECE_UNKNOWN = 2, SYNTH_PIECE_CONTROL = 3 };

typedef struct synth_piece {
    const char *piece; /* UTF-8, U+2581 for spaces */
    float score;
    int type;
} synth_piece;

/* CLIP: the ids are CLIP's layout: 256 byte symbols in bytes_to_unicode
 * order, the same 256 with "</w>", one id per merge in rank order, then
 * <|startoftext|> and <|endoftext|>. merges are "left right" strings whose
 * symbols are in byte-to-unicode form. */
mgpu_status synth_tok_clip_write(const char *const *merges, size_t n_merges,
                                 synth_tok_format format, const char *out, mgpu_error *err);
/* The default merges: BPE trained to completion on an embedded list of
 * English words (476 merges: 990 ids, specials at 988 and 989), at most
 * 510 so every id stays < 1024. Free with synth_tok_free_merges. */
char **synth_tok_clip_default_merges(size_t *n);
void synth_tok_free_merges(char **merges, size_t n);

/* T5: pieces in id order; the unk, eos ("</s>") and pad ("<pad>") ids are
 * found by type and name. */
mgpu_status synth_tok_t5_write(const synth_piece *pieces, size_t n, synth_tok_format format,
                               const char *out, mgpu_error *err);
/* The default pieces: <pad> 0, </s> 1, <unk> 2, U+2581, letters, digits and
 * punctuation, then "▁word" and "word" pieces of the embedded word list and
 * a few suffixes, scored by word rank (fewer than 1024 pieces). Static
 * storage: do not free. */
const synth_piece *synth_tok_t5_default_pieces(size_t *n);

/* kind "clip" or "t5" with the default vocabulary. */
mgpu_status synth_tok_write_default(const char *kind, synth_tok_format format, const char *out,
                                    mgpu_error *err);

#endif
