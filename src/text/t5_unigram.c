/* T5's SentencePiece unigram tokenizer. Facts used (google/sentencepiece:
 * sentencepiece_model.proto, normalizer.cc, unigram_model.cc,
 * sentencepiece_processor.cc; HF tokenizers' Unigram model):
 *  - ModelProto: 1 = repeated SentencePiece {1 piece, 2 score (float),
 *    3 type: 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED,
 *    6 BYTE}, 2 = TrainerSpec {3 model_type (1 UNIGRAM), 35 byte_fallback},
 *    3 = NormalizerSpec {3 add_dummy_prefix, 4 remove_extra_whitespaces,
 *    both default true}.
 *  - normalisation: leading/trailing whitespace dropped and runs collapsed,
 *    spaces become U+2581, and one U+2581 is prefixed (add_dummy_prefix);
 *    all-whitespace text gives no pieces.
 *  - Viterbi over characters maximising the sum of piece scores; only NORMAL
 *    and USER_DEFINED pieces match (USER_DEFINED scoring bytes * max - 0.1
 *    so they always win); a character with no one-character piece becomes
 *    an unknown node scored min_score - 10; ties keep the first path found
 *    (shorter pieces from earlier starts), as both implementations do.
 *  - consecutive unknowns are merged into one unk id (sentencepiece "Merges
 *    continuous run of unknown pieces"; HF fuse_unk), or with byte_fallback
 *    become <0xXX> pieces per UTF-8 byte.
 * The nmt_nfkc precompiled charsmap is not applied; instead: control
 * characters are dropped, Unicode spaces become spaces, fullwidth ASCII
 * (U+FF01..U+FF5E) maps to ASCII and U+2026 to "..." (docs/text.md). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/tokenizer_internal.h"

static const char meta[] = "\xE2\x96\x81"; /* U+2581 */

/* ---- shared tail ------------------------------------------------------- */

static mgpu_status check_piece(const char *label, int32_t id, const char *s, size_t n,
                               mgpu_error *err)
{
    if (n == 0)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: piece %d is empty", label, id);
    if (memchr(s, '\0', n))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: piece %d holds a NUL byte", label, id);
    size_t bad = tk_utf8_invalid_at((const uint8_t *)s, n);
    if (bad != SIZE_MAX)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: piece %d is not valid UTF-8 (offset %zu)",
                              label, id, bad);
    return MGPU_OK;
}

/* Allocates pieces, scores and types for n ids. */
static mgpu_status alloc_vocab(const char *label, mgpu_tokenizer *t, uint64_t n, mgpu_error *err)
{
    if (n == 0 || n > (1u << 24))
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: %llu pieces (1 to 16777216 allowed)", label,
                              (unsigned long long)n);
    t->scores = malloc((size_t)n * sizeof *t->scores);
    t->types = malloc((size_t)n);
    if (!t->scores || !t->types || tk_pieces_init(&t->pieces, (int32_t)n) != MGPU_OK)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    return MGPU_OK;
}

static mgpu_status set_piece(const char *label, mgpu_tokenizer *t, int32_t id, const char *s,
                             size_t n, double score, int type, mgpu_error *err)
{
    mgpu_status st = check_piece(label, id, s, n, err);
    if (st != MGPU_OK)
        return st;
    if (!isfinite(score))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: piece %d has a non-finite score", label,
                              id);
    if (type < TK_NORMAL || type > TK_BYTE)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: piece %d has type %d (1 to 6 allowed)",
                              label, id, type);
    int32_t dup;
    st = tk_pieces_set(&t->pieces, id, s, n, &dup);
    if (st == MGPU_ERR_FORMAT)
        return mgpu_error_set(err, st, "%s: piece %d \"%.*s\" repeats piece %d", label, id,
                              (int)(n > 40 ? 40 : n), s, dup);
    if (st != MGPU_OK)
        return mgpu_error_set(err, st, "%s: out of memory", label);
    t->scores[id] = (float)score;
    t->types[id] = (uint8_t)type;
    return MGPU_OK;
}

static int32_t find_str(const mgpu_tokenizer *t, const char *s)
{
    return tk_pieces_find(&t->pieces, s, strlen(s));
}

mgpu_status tk_t5_finish(const char *label, mgpu_tokenizer *t, mgpu_error *err)
{
    int32_t n = t->pieces.count;
    int32_t hole = tk_pieces_first_hole(&t->pieces);
    if (hole >= 0)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: piece %d is missing", label, hole);
    if (t->unk < 0) {
        for (int32_t i = 0; i < n; i++) {
            if (t->types[i] != TK_UNKNOWN)
                continue;
            if (t->unk >= 0)
                return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                      "%s: pieces %d and %d are both of type UNKNOWN", label,
                                      t->unk, i);
            t->unk = i;
        }
    }
    if (t->unk < 0)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: no piece of type UNKNOWN (<unk>)",
                              label);
    if (t->eos < 0)
        t->eos = find_str(t, "</s>");
    if (t->pad < 0)
        t->pad = find_str(t, "<pad>");
    if (t->bos < 0)
        t->bos = find_str(t, "<s>");
    t->min_score = INFINITY;
    t->max_score = -INFINITY;
    uint64_t bytes = 1;
    for (int32_t i = 0; i < n; i++) {
        if (t->types[i] == TK_NORMAL) {
            if (t->scores[i] < t->min_score)
                t->min_score = t->scores[i];
            if (t->scores[i] > t->max_score)
                t->max_score = t->scores[i];
        }
        if (t->types[i] == TK_NORMAL || t->types[i] == TK_USER)
            bytes += t->pieces.length[i];
    }
    if (t->min_score > t->max_score)
        t->min_score = t->max_score = 0;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int32_t id = find_str(t, name);
        t->byte_piece[b] = id >= 0 && t->types[id] == TK_BYTE ? id : -1;
    }
    /* The trie of matchable pieces: nodes are numbered, edges live in a map
     * keyed by (node, byte). */
    if (bytes > INT32_MAX)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: the pieces are too long", label);
    t->trie_cap = (int32_t)bytes;
    t->trie_id = malloc((size_t)bytes * sizeof *t->trie_id);
    if (!t->trie_id || tk_map_init(&t->trie, (size_t)bytes) != MGPU_OK)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    t->trie_nodes = 1;
    t->trie_id[0] = -1;
    for (int32_t i = 0; i < n; i++) {
        if (t->types[i] != TK_NORMAL && t->types[i] != TK_USER)
            continue;
        const uint8_t *s = (const uint8_t *)t->pieces.text + t->pieces.offset[i];
        int32_t node = 0;
        for (uint32_t k = 0; k < t->pieces.length[i]; k++) {
            uint64_t key = (uint64_t)node << 8 | s[k];
            int32_t child = tk_map_get(&t->trie, key), old;
            if (child < 0) {
                child = t->trie_nodes++;
                t->trie_id[child] = -1;
                if (tk_map_put(&t->trie, key, child, &old) != MGPU_OK)
                    return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
            }
            node = child;
        }
        t->trie_id[node] = i;
    }
    return MGPU_OK;
}

/* ---- spiece.model (protobuf) ------------------------------------------- */

typedef struct pb {
    const uint8_t *p, *end, *base;
} pb;

static int pb_varint(pb *b, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end)
            return 0;
        uint8_t c = *b->p++;
        x |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 1;
        }
    }
    return 0;
}

/* Reads a field key; 0 at the end, -1 on a malformed key. */
static int pb_key(pb *b, uint32_t *field, uint32_t *wire)
{
    if (b->p >= b->end)
        return 0;
    uint64_t k;
    if (!pb_varint(b, &k) || (k >> 3) == 0 || (k >> 3) > 0x1FFFFFFF)
        return -1;
    *field = (uint32_t)(k >> 3);
    *wire = (uint32_t)(k & 7);
    return 1;
}

/* A length-delimited payload as a sub-reader. */
static int pb_bytes(pb *b, pb *sub)
{
    uint64_t n;
    if (!pb_varint(b, &n) || n > (uint64_t)(b->end - b->p))
        return 0;
    sub->p = b->p;
    sub->end = b->p + n;
    sub->base = b->base;
    b->p += n;
    return 1;
}

static int pb_skip(pb *b, uint32_t wire)
{
    uint64_t v;
    pb sub = {NULL, NULL, NULL};
    switch (wire) {
    case 0: return pb_varint(b, &v);
    case 1:
        if (b->end - b->p < 8)
            return 0;
        b->p += 8;
        return 1;
    case 2: return pb_bytes(b, &sub);
    case 5:
        if (b->end - b->p < 4)
            return 0;
        b->p += 4;
        return 1;
    default: return 0; /* groups (3, 4) and reserved types */
    }
}

static mgpu_status pb_error(const char *label, const pb *b, const char *what, mgpu_error *err)
{
    return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: not a SentencePiece model: %s at byte %zu",
                          label, what, (size_t)(b->p - b->base));
}

typedef struct spiece_piece {
    const char *s;
    size_t n;
    double score;
    int type;
} spiece_piece;

static mgpu_status parse_piece(const char *label, pb *m, spiece_piece *out, mgpu_error *err)
{
    out->s = NULL;
    out->n = 0;
    out->score = 0;
    out->type = TK_NORMAL;
    uint32_t f, w;
    int r;
    while ((r = pb_key(m, &f, &w)) > 0) {
        if (f == 1 && w == 2) {
            pb sub = {NULL, NULL, NULL};
            if (!pb_bytes(m, &sub))
                return pb_error(label, m, "a piece string runs past its message", err);
            out->s = (const char *)sub.p;
            out->n = (size_t)(sub.end - sub.p);
        } else if (f == 2 && w == 5) {
            if (m->end - m->p < 4)
                return pb_error(label, m, "a truncated score", err);
            uint32_t bits = (uint32_t)m->p[0] | (uint32_t)m->p[1] << 8 |
                            (uint32_t)m->p[2] << 16 | (uint32_t)m->p[3] << 24;
            float fv;
            memcpy(&fv, &bits, sizeof fv);
            out->score = fv;
            m->p += 4;
        } else if (f == 3 && w == 0) {
            uint64_t v;
            if (!pb_varint(m, &v))
                return pb_error(label, m, "a truncated type", err);
            out->type = v > 255 ? 255 : (int)v;
        } else if (f <= 3) {
            return pb_error(label, m, "a piece field of the wrong wire type", err);
        } else if (!pb_skip(m, w)) {
            return pb_error(label, m, "a truncated or unknown field", err);
        }
    }
    if (r < 0)
        return pb_error(label, m, "a malformed field key", err);
    if (!out->s)
        return pb_error(label, m, "a piece without its string", err);
    return MGPU_OK;
}

/* Reads the bool/varint fields of a spec message we care about. */
static mgpu_status parse_spec(const char *label, pb *m, const uint32_t *fields, uint64_t *values,
                              int *seen, int count, mgpu_error *err)
{
    uint32_t f, w;
    int r;
    while ((r = pb_key(m, &f, &w)) > 0) {
        int k = 0;
        while (k < count && fields[k] != f)
            k++;
        if (k < count && w == 0) {
            if (!pb_varint(m, &values[k]))
                return pb_error(label, m, "a truncated varint", err);
            seen[k] = 1;
        } else if (!pb_skip(m, w)) {
            return pb_error(label, m, "a truncated or unknown field", err);
        }
    }
    if (r < 0)
        return pb_error(label, m, "a malformed field key", err);
    return MGPU_OK;
}

mgpu_status tk_t5_from_spiece(const char *label, const uint8_t *data, size_t size,
                              mgpu_tokenizer **out, mgpu_error *err)
{
    /* Pass 1: count pieces and read the specs. */
    pb b = {data, data + size, data};
    uint64_t npieces = 0;
    static const uint32_t tfields[] = {3, 35};   /* model_type, byte_fallback */
    static const uint32_t nfields[] = {3, 4};    /* add_dummy_prefix, remove_extra_whitespaces */
    uint64_t tvals[2] = {1, 0}, nvals[2] = {1, 1};
    int tseen[2] = {0}, nseen[2] = {0};
    uint32_t f, w;
    int r;
    mgpu_status s = MGPU_OK;
    while ((r = pb_key(&b, &f, &w)) > 0) {
        if (f >= 1 && f <= 3 && w != 2)
            return pb_error(label, &b, "a top-level field of the wrong wire type", err);
        pb sub = {NULL, NULL, NULL};
        if (f >= 1 && f <= 3) {
            if (!pb_bytes(&b, &sub))
                return pb_error(label, &b, "a message that runs past the end of the file", err);
            if (f == 1)
                npieces++;
            else if (f == 2)
                s = parse_spec(label, &sub, tfields, tvals, tseen, 2, err);
            else
                s = parse_spec(label, &sub, nfields, nvals, nseen, 2, err);
            if (s != MGPU_OK)
                return s;
        } else if (!pb_skip(&b, w)) {
            return pb_error(label, &b, "a truncated or unknown field", err);
        }
    }
    if (r < 0)
        return pb_error(label, &b, "a malformed field key", err);
    if (npieces == 0)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: not a SentencePiece model: no pieces",
                              label);
    if (tvals[0] != 1)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "%s: SentencePiece model_type %llu (mgpu reads unigram models, 1)",
                              label, (unsigned long long)tvals[0]);

    mgpu_tokenizer *t = tk_new(MGPU_TOKENIZER_T5_UNIGRAM);
    if (!t)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    t->byte_fallback = tvals[1] != 0;
    t->add_dummy_prefix = nvals[0] != 0;
    t->remove_extra_ws = nvals[1] != 0;
    s = alloc_vocab(label, t, npieces, err);
    /* Pass 2: the pieces (the file was fully checked by pass 1). */
    b.p = data;
    int32_t id = 0;
    while (s == MGPU_OK && pb_key(&b, &f, &w) > 0) {
        if (f != 1) {
            pb_skip(&b, w);
            continue;
        }
        pb sub = {NULL, NULL, NULL};
        pb_bytes(&b, &sub);
        spiece_piece p;
        s = parse_piece(label, &sub, &p, err);
        if (s == MGPU_OK)
            s = set_piece(label, t, id, p.s, p.n, p.score, p.type, err);
        id++;
    }
    if (s == MGPU_OK)
        s = tk_t5_finish(label, t, err);
    if (s != MGPU_OK) {
        mgpu_tokenizer_free(t);
        return s;
    }
    *out = t;
    return MGPU_OK;
}

/* ---- tokenizer.json (Unigram) ------------------------------------------ */

mgpu_status tk_t5_from_tokenizer_json(const char *label, void *root_, mgpu_tokenizer **out,
                                      mgpu_error *err)
{
    json_t *root = root_;
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_array(vocab))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: model.vocab is not an array", label);
    json_t *unk = json_object_get(model, "unk_id");
    if (!json_is_integer(unk) ||
        json_integer_value(unk) < 0 || (size_t)json_integer_value(unk) >= json_array_size(vocab))
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: model.unk_id is not an id of the %zu-piece vocabulary", label,
                              json_array_size(vocab));
    json_t *bf = json_object_get(model, "byte_fallback");
    mgpu_tokenizer *t = tk_new(MGPU_TOKENIZER_T5_UNIGRAM);
    if (!t)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    t->byte_fallback = json_is_true(bf);
    t->remove_extra_ws = 1;
    t->add_dummy_prefix = 1;
    /* Metaspace pre-tokenizer: add_prefix_space false or prepend_scheme
     * "never" turns the dummy prefix off. */
    json_t *pre = json_object_get(root, "pre_tokenizer");
    json_t *ms = NULL;
    const char *pt = json_string_value(json_object_get(pre, "type"));
    if (pt && strcmp(pt, "Metaspace") == 0) {
        ms = pre;
    } else if (pt && strcmp(pt, "Sequence") == 0) {
        json_t *list = json_object_get(pre, "pretokenizers");
        for (size_t i = 0; i < json_array_size(list); i++) {
            const char *ty = json_string_value(json_object_get(json_array_get(list, i), "type"));
            if (ty && strcmp(ty, "Metaspace") == 0)
                ms = json_array_get(list, i);
        }
    }
    if (ms) {
        if (json_is_false(json_object_get(ms, "add_prefix_space")))
            t->add_dummy_prefix = 0;
        const char *scheme = json_string_value(json_object_get(ms, "prepend_scheme"));
        if (scheme && strcmp(scheme, "never") == 0)
            t->add_dummy_prefix = 0;
    }
    mgpu_status s = alloc_vocab(label, t, json_array_size(vocab), err);
    for (size_t i = 0; s == MGPU_OK && i < json_array_size(vocab); i++) {
        json_t *e = json_array_get(vocab, i);
        json_t *ps = json_array_get(e, 0), *sc = json_array_get(e, 1);
        if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_string(ps) ||
            !json_is_number(sc)) {
            s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                               "%s: model.vocab[%zu] is not a [piece, score] pair", label, i);
            break;
        }
        int type = (json_int_t)i == json_integer_value(unk) ? TK_UNKNOWN : TK_NORMAL;
        s = set_piece(label, t, (int32_t)i, json_string_value(ps), json_string_length(ps),
                      json_number_value(sc), type, err);
    }
    /* Added tokens are split off before the model in HF; here special ones
     * become CONTROL (never matched in text), others USER_DEFINED. */
    json_t *added = json_object_get(root, "added_tokens");
    if (s == MGPU_OK && added && !json_is_null(added) && !json_is_array(added))
        s = mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: \"added_tokens\" is not an array", label);
    for (size_t i = 0; s == MGPU_OK && i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        json_t *idv = json_object_get(a, "id");
        const char *content = json_string_value(json_object_get(a, "content"));
        if (!json_is_integer(idv) || !content) {
            s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                               "%s: added_tokens[%zu] lacks an integer id or a string content",
                               label, i);
            break;
        }
        json_int_t v = json_integer_value(idv);
        const char *have = v >= 0 && v < t->pieces.count ? mgpu_tokenizer_piece(t, (int32_t)v)
                                                           : NULL;
        if (!have) {
            s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                               "%s: added token \"%.40s\" has id %lld, outside the model "
                               "vocabulary of %d",
                               label, content, (long long)v, t->pieces.count);
        } else if (strcmp(have, content) != 0) {
            s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                               "%s: added token \"%.40s\" has id %lld, which the model calls "
                               "\"%.40s\"",
                               label, content, (long long)v, have);
        } else if (t->types[v] != TK_UNKNOWN) {
            t->types[v] = json_is_true(json_object_get(a, "special")) ? TK_CONTROL : TK_USER;
        }
    }
    if (s == MGPU_OK)
        s = tk_t5_finish(label, t, err);
    if (s != MGPU_OK) {
        mgpu_tokenizer_free(t);
        return s;
    }
    *out = t;
    return MGPU_OK;
}

/* ---- GGUF metadata ----------------------------------------------------- */

static const mgpu_gguf_value *gguf_array(const mgpu_gguf *g, const char *key,
                                         mgpu_gguf_type elem)
{
    const mgpu_gguf_value *v = mgpu_gguf_find_kv(g, key);
    if (!v || v->type != MGPU_GGUF_ARRAY || v->array.elem_type != elem)
        return NULL;
    return v;
}

/* An optional id key: -1 when absent, -2 when present but not a valid id. */
static int64_t gguf_id(const mgpu_gguf *g, const char *key, int64_t n)
{
    const mgpu_gguf_value *v = mgpu_gguf_find_kv(g, key);
    if (!v)
        return -1;
    int64_t x;
    if (v->type == MGPU_GGUF_UINT8 || v->type == MGPU_GGUF_UINT16 ||
        v->type == MGPU_GGUF_UINT32 || v->type == MGPU_GGUF_UINT64)
        x = v->u64 > (uint64_t)INT64_MAX ? -2 : (int64_t)v->u64;
    else if (v->type == MGPU_GGUF_INT8 || v->type == MGPU_GGUF_INT16 ||
             v->type == MGPU_GGUF_INT32 || v->type == MGPU_GGUF_INT64)
        x = v->i64;
    else
        return -2;
    return x >= 0 && x < n ? x : -2;
}

static int gguf_bool(const mgpu_gguf *g, const char *key, int fallback)
{
    const mgpu_gguf_value *v = mgpu_gguf_find_kv(g, key);
    return v && v->type == MGPU_GGUF_BOOL ? v->b : fallback;
}

mgpu_status tk_t5_from_gguf(const char *label, const mgpu_gguf *g, mgpu_tokenizer **out,
                            mgpu_error *err)
{
    const mgpu_gguf_value *tokens = gguf_array(g, "tokenizer.ggml.tokens", MGPU_GGUF_STRING);
    if (!tokens)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tokenizer.ggml.tokens is missing or not an array of strings",
                              label);
    uint64_t n = tokens->array.count;
    const mgpu_gguf_value *scores = mgpu_gguf_find_kv(g, "tokenizer.ggml.scores");
    const mgpu_gguf_value *types = mgpu_gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (scores && (scores != gguf_array(g, "tokenizer.ggml.scores", MGPU_GGUF_FLOAT32) ||
                   scores->array.count != n))
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tokenizer.ggml.scores is not %llu FLOAT32 values", label,
                              (unsigned long long)n);
    if (types && (types != gguf_array(g, "tokenizer.ggml.token_type", MGPU_GGUF_INT32) ||
                  types->array.count != n))
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tokenizer.ggml.token_type is not %llu INT32 values", label,
                              (unsigned long long)n);
    int64_t unk = gguf_id(g, "tokenizer.ggml.unknown_token_id", (int64_t)n);
    int64_t eos = gguf_id(g, "tokenizer.ggml.eos_token_id", (int64_t)n);
    int64_t pad = gguf_id(g, "tokenizer.ggml.padding_token_id", (int64_t)n);
    if (unk == -2 || eos == -2 || pad == -2)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: tokenizer.ggml.%s_token_id is not an id of the %llu tokens",
                              label, unk == -2 ? "unknown" : eos == -2 ? "eos" : "padding",
                              (unsigned long long)n);
    mgpu_tokenizer *t = tk_new(MGPU_TOKENIZER_T5_UNIGRAM);
    if (!t)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    t->add_dummy_prefix = gguf_bool(g, "tokenizer.ggml.add_space_prefix", 1);
    t->remove_extra_ws = gguf_bool(g, "tokenizer.ggml.remove_extra_whitespaces", 1);
    mgpu_status s = alloc_vocab(label, t, n, err);
    for (uint64_t i = 0; s == MGPU_OK && i < n; i++) {
        mgpu_gguf_value tok, sc, ty;
        mgpu_gguf_array_get(tokens, i, &tok);
        double score = 0;
        int type = TK_NORMAL;
        if (scores && mgpu_gguf_array_get(scores, i, &sc))
            score = sc.f64;
        if (types && mgpu_gguf_array_get(types, i, &ty))
            type = ty.i64 < 0 || ty.i64 > 255 ? 255 : (int)ty.i64;
        if (!types && (int64_t)i == unk)
            type = TK_UNKNOWN;
        s = set_piece(label, t, (int32_t)i, tok.string.data, (size_t)tok.string.length, score,
                      type, err);
    }
    if (s == MGPU_OK && unk >= 0 && t->types[unk] != TK_UNKNOWN)
        s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                           "%s: tokenizer.ggml.unknown_token_id %lld is not of type UNKNOWN",
                           label, (long long)unk);
    t->eos = (int32_t)eos;
    t->pad = (int32_t)pad;
    if (s == MGPU_OK)
        s = tk_t5_finish(label, t, err);
    if (s != MGPU_OK) {
        mgpu_tokenizer_free(t);
        return s;
    }
    *out = t;
    return MGPU_OK;
}

/* ---- encoding ---------------------------------------------------------- */

static int push_bytes(char **buf, size_t *n, size_t *cap, const char *s, size_t k)
{
    if (*n + k > *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        while (c < *n + k)
            c *= 2;
        char *b = realloc(*buf, c);
        if (!b)
            return 0;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *n, s, k);
    *n += k;
    return 1;
}

/* The normalised, escaped text (see the top of the file). */
static mgpu_status normalize(const mgpu_tokenizer *t, const char *text, size_t len, char **out,
                             size_t *out_len, mgpu_error *err)
{
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int pending_space = 0, any = 0, ok = 1;
    for (size_t i = 0; i < len && ok;) {
        uint32_t c = 0;
        size_t k = tk_utf8_decode((const uint8_t *)text + i, len - i, &c);
        if (k == 0)
            break;
        i += k;
        if (tk_is_control(c))
            continue;
        if (tk_is_space(c)) {
            if (!t->remove_extra_ws)
                ok = push_bytes(&buf, &n, &cap, meta, 3);
            else
                pending_space = any;
            any |= !t->remove_extra_ws;
            continue;
        }
        if (pending_space)
            ok = push_bytes(&buf, &n, &cap, meta, 3);
        pending_space = 0;
        any = 1;
        char enc[4];
        if (c >= 0xFF01 && c <= 0xFF5E)
            c -= 0xFEE0;
        if (c == 0x2026) {
            ok = ok && push_bytes(&buf, &n, &cap, "...", 3);
            continue;
        }
        size_t e = tk_utf8_encode(c, enc);
        ok = ok && push_bytes(&buf, &n, &cap, enc, e);
    }
    if (ok && n && t->add_dummy_prefix) {
        ok = push_bytes(&buf, &n, &cap, meta, 3);
        if (ok) {
            memmove(buf + 3, buf, n - 3);
            memcpy(buf, meta, 3);
        }
    }
    if (!ok) {
        free(buf);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "tokenizer: out of memory");
    }
    *out = buf;
    *out_len = n;
    return MGPU_OK;
}

mgpu_status tk_t5_encode(const mgpu_tokenizer *t, const char *text, size_t len, tk_ids *out,
                         mgpu_error *err)
{
    char *s = NULL;
    size_t m = 0;
    mgpu_status st = normalize(t, text, len, &s, &m, err);
    if (st != MGPU_OK || m == 0) {
        free(s);
        return st;
    }
    double *best = malloc((m + 1) * sizeof *best);
    int32_t *from = malloc((m + 1) * sizeof *from); /* start of the last piece, -1 unreached */
    int32_t *piece = malloc((m + 1) * sizeof *piece);
    int32_t *path = malloc((m + 1) * sizeof *path);
    if (!best || !from || !piece || !path) {
        st = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "tokenizer: out of memory");
        goto done;
    }
    for (size_t i = 0; i <= m; i++)
        from[i] = -1;
    best[0] = 0;
    from[0] = 0;
    const double unk_score = t->min_score - 10.0;
    const uint8_t *u = (const uint8_t *)s;
    for (size_t pos = 0; pos < m; pos++) {
        if (from[pos] < 0)
            continue;
        uint32_t cp;
        size_t clen = tk_utf8_decode(u + pos, m - pos, &cp);
        if (clen == 0)
            clen = 1; /* unreachable: the text is valid UTF-8 */
        int single = 0;
        int32_t node = 0;
        for (size_t e = pos; e < m; e++) {
            node = tk_map_get(&t->trie, (uint64_t)node << 8 | u[e]);
            if (node < 0)
                break;
            int32_t id = t->trie_id[node];
            if (id < 0)
                continue;
            size_t plen = e + 1 - pos;
            double sc = t->types[id] == TK_USER ? (double)plen * t->max_score - 0.1
                                                 : (double)t->scores[id];
            double cand = best[pos] + sc;
            if (from[e + 1] < 0 || cand > best[e + 1]) {
                best[e + 1] = cand;
                from[e + 1] = (int32_t)pos;
                piece[e + 1] = id;
            }
            if (plen == clen)
                single = 1;
        }
        if (!single) {
            double cand = best[pos] + unk_score;
            size_t e = pos + clen;
            if (from[e] < 0 || cand > best[e]) {
                best[e] = cand;
                from[e] = (int32_t)pos;
                piece[e] = -1; /* unknown */
            }
        }
    }
    /* Walk back, then emit forwards. */
    size_t np = 0;
    for (size_t e = m; e > 0; e = (size_t)from[e])
        path[np++] = (int32_t)e;
    int prev_unk = 0;
    for (size_t k = np; k-- > 0;) {
        size_t e = (size_t)path[k], b = (size_t)from[e];
        int32_t id = piece[e];
        if (id >= 0) {
            prev_unk = 0;
            if (tk_ids_push(out, id) != MGPU_OK)
                goto oom;
            continue;
        }
        int bytes_ok = t->byte_fallback;
        for (size_t j = b; j < e && bytes_ok; j++)
            bytes_ok = t->byte_piece[u[j]] >= 0;
        if (bytes_ok) {
            for (size_t j = b; j < e; j++)
                if (tk_ids_push(out, t->byte_piece[u[j]]) != MGPU_OK)
                    goto oom;
            prev_unk = 0;
        } else if (!prev_unk) {
            if (tk_ids_push(out, t->unk) != MGPU_OK)
                goto oom;
            prev_unk = 1;
        }
    }
    goto done;
oom:
    st = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "tokenizer: out of memory");
done:
    free(best);
    free(from);
    free(piece);
    free(path);
    free(s);
    return st;
}
