/* Shared internals of the tokenizers: the tokenizer record, a piece table
 * with a string index, a u64 -> i32 hash map, growable id lists, UTF-8 and
 * the small Unicode tables (unicode.c). */
#ifndef MGPU_TEXT_TOKENIZER_INTERNAL_H
#define MGPU_TEXT_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "text/tokenizer.h"

/* ---- u64 -> int32 open-addressing map (keys != UINT64_MAX) ------------ */
typedef struct tk_map {
    uint64_t *keys;
    int32_t *vals;
    size_t cap; /* power of two, or 0 */
    size_t count;
} tk_map;

mgpu_status tk_map_init(tk_map *m, size_t expected);
void tk_map_free(tk_map *m);
/* Inserts key -> val; if the key exists keeps the old value and returns it
 * in *old (else *old = -1). */
mgpu_status tk_map_put(tk_map *m, uint64_t key, int32_t val, int32_t *old);
int32_t tk_map_get(const tk_map *m, uint64_t key); /* -1 if absent */

/* ---- pieces: id -> string, string -> id ------------------------------- */
typedef struct tk_pieces {
    int32_t count;
    char *text;      /* all pieces, each NUL-terminated */
    size_t text_len, text_cap;
    size_t *offset;  /* per id */
    uint32_t *length;
    int32_t *slots;  /* open addressing over ids, -1 empty */
    size_t nslots;
} tk_pieces;

/* Room for n ids, all unset (offset SIZE_MAX). */
mgpu_status tk_pieces_init(tk_pieces *p, int32_t n);
void tk_pieces_free(tk_pieces *p);
/* Sets id's text; fails (MGPU_ERR_FORMAT, *dup = the other id) if the text
 * already names another id, or if id already has a text (*dup = id). */
mgpu_status tk_pieces_set(tk_pieces *p, int32_t id, const char *s, size_t len, int32_t *dup);
int32_t tk_pieces_find(const tk_pieces *p, const char *s, size_t len);
/* The first id without a text, or -1 when all are set. */
int32_t tk_pieces_first_hole(const tk_pieces *p);

/* ---- growable int32 list ---------------------------------------------- */
typedef struct tk_ids {
    int32_t *v;
    int64_t n, cap;
} tk_ids;
mgpu_status tk_ids_push(tk_ids *l, int32_t x);
void tk_ids_free(tk_ids *l);

/* ---- the tokenizer ------------------------------------------------------ */
enum { TK_NORMAL = 1, TK_UNKNOWN = 2, TK_CONTROL = 3, TK_USER = 4, TK_UNUSED = 5, TK_BYTE = 6 };

struct mgpu_tokenizer {
    mgpu_tokenizer_kind kind;
    tk_pieces pieces;
    int32_t bos, eos, pad, unk;

    /* CLIP BPE */
    tk_map merges;         /* (left << 32 | right) -> rank */
    int32_t *merge_result; /* rank -> merged id */
    int32_t byte_id[256];  /* byte-to-unicode symbol of a byte, -1 if absent */
    int32_t byte_eow_id[256]; /* the same with "</w>" */

    /* T5 unigram */
    float *scores;
    uint8_t *types;
    tk_map trie;        /* (node << 8 | byte) -> child node */
    int32_t *trie_id;   /* node -> matchable piece id, -1 */
    int32_t trie_nodes, trie_cap;
    double min_score, max_score;
    int add_dummy_prefix, remove_extra_ws, byte_fallback;
    int32_t byte_piece[256]; /* "<0xXX>" pieces for byte fallback, -1 */
};

mgpu_tokenizer *tk_new(mgpu_tokenizer_kind kind);

/* Loaders (clip_bpe.c, t5_unigram.c). `label` names the file in messages.
 * JSON roots are jansson objects passed as void * to keep jansson out of
 * this header. */
mgpu_status tk_clip_from_vocab_json(const char *label, void *vocab_root, const char *merges_label,
                                    const char *merges, size_t merges_len, mgpu_tokenizer **out,
                                    mgpu_error *err);
mgpu_status tk_clip_from_tokenizer_json(const char *label, void *root, mgpu_tokenizer **out,
                                        mgpu_error *err);
mgpu_status tk_t5_from_spiece(const char *label, const uint8_t *data, size_t size,
                              mgpu_tokenizer **out, mgpu_error *err);
mgpu_status tk_t5_from_tokenizer_json(const char *label, void *root, mgpu_tokenizer **out,
                                      mgpu_error *err);
mgpu_status tk_t5_from_gguf(const char *label, const mgpu_gguf *g, mgpu_tokenizer **out,
                            mgpu_error *err);
/* Shared tail of the T5 loaders: builds the trie and derived fields. */
mgpu_status tk_t5_finish(const char *label, mgpu_tokenizer *t, mgpu_error *err);

/* Encoders: append ids to out. words (may be NULL) gets, per id, the index
 * of the whitespace-separated word it came from. Text is already validated
 * UTF-8 of at most MGPU_TOKENIZER_MAX_TEXT_BYTES. */
mgpu_status tk_clip_encode(const mgpu_tokenizer *t, const char *text, size_t len, tk_ids *out,
                           tk_ids *words, mgpu_error *err);
mgpu_status tk_t5_encode(const mgpu_tokenizer *t, const char *text, size_t len, tk_ids *out,
                         mgpu_error *err);

/* ---- UTF-8 and Unicode (unicode.c) ------------------------------------ */
/* Decodes one well-formed code point at s[0..n); returns its length, or 0
 * when the bytes are not well-formed UTF-8 (overlongs, surrogates, > U+10FFFF,
 * truncated sequences). */
size_t tk_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
size_t tk_utf8_encode(uint32_t cp, char out[4]);
/* Offset of the first invalid byte, or SIZE_MAX when s[0..n) is valid. */
size_t tk_utf8_invalid_at(const uint8_t *s, size_t n);

/* Python's str.isspace()-style whitespace (what regex \s matches). */
int tk_is_space(uint32_t cp);
/* \p{L} for ASCII exactly, approximated by a range table beyond it. */
int tk_is_letter(uint32_t cp);
/* \p{N}, likewise. */
int tk_is_number(uint32_t cp);
/* Simple lowercase: ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic,
 * fullwidth Latin; other code points unchanged. */
uint32_t tk_lower(uint32_t cp);
/* Control characters (C0 other than whitespace, DEL, C1 other than NEL). */
int tk_is_control(uint32_t cp);

#endif
