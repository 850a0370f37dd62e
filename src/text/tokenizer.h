/* Text tokenizers for FLUX.1's two text encoders, read from the files users
 * have: CLIP's byte-level BPE (vocab.json + merges.txt, or a Hugging Face
 * tokenizer.json with a BPE model) and T5's SentencePiece unigram (spiece.model
 * / tokenizer.model, a tokenizer.json with a Unigram model, or the
 * tokenizer.ggml.* metadata of a llama.cpp / city96 T5 GGUF).
 *
 * Every file is treated as hostile: counts, lengths and ids are bounds
 * checked, and a malformed file fails with one line naming the file and the
 * entry at fault. docs/text.md lists what is read, the FLUX conventions and
 * what is approximated. */
#ifndef MGPU_TEXT_TOKENIZER_H
#define MGPU_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stdint.h>

#include "mgpu/gguf.h"
#include "mgpu/status.h"

typedef struct mgpu_tokenizer mgpu_tokenizer;

typedef enum mgpu_tokenizer_kind {
    MGPU_TOKENIZER_CLIP_BPE,
    MGPU_TOKENIZER_T5_UNIGRAM,
} mgpu_tokenizer_kind;

enum {
    /* CLIP's context: BOS, at most 75 text tokens, EOS, padding. */
    MGPU_CLIP_CONTEXT = 77,
    /* ComfyUI's T5XXLTokenizer for FLUX pads to at least 256 tokens
     * (comfy/text_encoders/flux.py: min_length=256). */
    MGPU_T5_FLUX_MIN_LENGTH = 256,
    /* Longer prompts are an error (MGPU_ERR_ARGUMENT), not a truncation:
     * a hard cap that keeps hostile input from costing unbounded time. */
    MGPU_TOKENIZER_MAX_TEXT_BYTES = 1 << 20,
};

/* path: a tokenizer.json (BPE or Unigram model), a vocab.json with
 * merges.txt in the same folder, a SentencePiece model (spiece.model,
 * tokenizer.model), a GGUF carrying tokenizer.ggml.* metadata, or a folder
 * holding one of these (tried in the order tokenizer.json, spiece.model,
 * tokenizer.model, vocab.json). The kind is detected from the content. */
mgpu_status mgpu_tokenizer_open(const char *path, mgpu_tokenizer **out, mgpu_error *err);
/* The tokenizer of a GGUF's metadata (tokenizer.ggml.model "t5": unigram).
 * label names the file in messages. MGPU_ERR_NOT_FOUND when the file has no
 * tokenizer; MGPU_ERR_UNSUPPORTED for other tokenizer models. The tokenizer
 * copies what it needs: the GGUF may be closed afterwards. */
mgpu_status mgpu_tokenizer_from_gguf(const mgpu_gguf *g, const char *label, mgpu_tokenizer **out,
                                     mgpu_error *err);
void mgpu_tokenizer_free(mgpu_tokenizer *t);

mgpu_tokenizer_kind mgpu_tokenizer_get_kind(const mgpu_tokenizer *t);
/* Number of ids (the largest id + 1). */
int32_t mgpu_tokenizer_vocab_size(const mgpu_tokenizer *t);
/* Special ids, -1 where the vocabulary has none. CLIP: BOS <|startoftext|>,
 * EOS <|endoftext|>, pad = EOS (ComfyUI pads FLUX's clip_l with the end
 * token), unk = the file's unk token (<|endoftext|> by default). T5: EOS
 * "</s>", pad "<pad>", unk the UNKNOWN piece, no BOS. */
int32_t mgpu_tokenizer_bos_id(const mgpu_tokenizer *t);
int32_t mgpu_tokenizer_eos_id(const mgpu_tokenizer *t);
int32_t mgpu_tokenizer_pad_id(const mgpu_tokenizer *t);
int32_t mgpu_tokenizer_unk_id(const mgpu_tokenizer *t);
/* The text of an id (NUL-terminated, owned by the tokenizer); NULL if out of
 * range. CLIP pieces are in byte-to-unicode form ("hello</w>"), T5 pieces
 * use U+2581 for spaces. */
const char *mgpu_tokenizer_piece(const mgpu_tokenizer *t, int32_t id);
/* The id of a piece, -1 if absent. */
int32_t mgpu_tokenizer_find_piece(const mgpu_tokenizer *t, const char *piece);

/* Raw ids of NUL-terminated UTF-8 text, no special tokens added. Empty (or
 * all-whitespace) text gives 0 ids. *count is always set to the number of
 * ids the text needs; when it exceeds capacity nothing past capacity is
 * written and MGPU_ERR_ARGUMENT is returned (ids may be NULL with capacity 0
 * to ask for the count). Invalid UTF-8 is MGPU_ERR_ARGUMENT naming the byte
 * offset; text over MGPU_TOKENIZER_MAX_TEXT_BYTES likewise. */
mgpu_status mgpu_tokenizer_encode(const mgpu_tokenizer *t, const char *utf8, int32_t *ids,
                                  int64_t capacity, int64_t *count, mgpu_error *err);

/* How a CLIP prompt longer than 75 tokens is cut to one 77-token window. */
typedef enum mgpu_clip_truncation {
    /* ComfyUI's first chunk (comfy/sd1_clip.py SDTokenizer): whole
     * whitespace-separated words; a word that no longer fits starts the next
     * chunk (and is dropped here) unless it has 8 tokens or more, in which
     * case it is split. ComfyUI takes FLUX's pooled vector from this first
     * chunk, so this window reproduces ComfyUI's pooled input exactly. */
    MGPU_CLIP_TRUNCATE_WORDS,
    /* The first 75 text tokens (Hugging Face truncation=True, as diffusers'
     * FluxPipeline tokenizes). */
    MGPU_CLIP_TRUNCATE_TOKENS,
} mgpu_clip_truncation;

/* FLUX's CLIP-L input: BOS, the text ids cut to fit (see mode), EOS, then
 * EOS again up to 77 ids (ComfyUI: SDTokenizer pad_with_end=True). BOS/EOS
 * come from the file (49406/49407 for the real vocabulary). *eos_index is
 * the position of the first EOS, where FLUX's pooled vector is read
 * (ComfyUI clip_model.py and transformers take the argmax of
 * input_ids == eos_token_id). *dropped (may be NULL) counts the text ids cut. */
mgpu_status mgpu_tokenizer_encode_clip77(const mgpu_tokenizer *t, const char *utf8,
                                         mgpu_clip_truncation mode,
                                         int32_t ids[MGPU_CLIP_CONTEXT], int64_t *eos_index,
                                         int64_t *dropped, mgpu_error *err);

/* FLUX's T5-XXL input: the text ids, EOS ("</s>", id 1), no BOS, then pad
 * ("<pad>", id 0) up to min_len. max_len > 0 caps the length: text ids are
 * cut so that they and the EOS fit (Hugging Face truncation, diffusers uses
 * max_sequence_length 512 for dev and 256 for schnell, padding to it:
 * min_len = max_len); max_len = 0 keeps every id (ComfyUI: max_length
 * 99999999, min_length 256). *count gets the length; capacity as in
 * mgpu_tokenizer_encode. *dropped (may be NULL) counts the text ids cut. */
mgpu_status mgpu_tokenizer_encode_t5(const mgpu_tokenizer *t, const char *utf8, int64_t min_len,
                                     int64_t max_len, int32_t *ids, int64_t capacity,
                                     int64_t *count, int64_t *dropped, mgpu_error *err);

#endif
