/* CLIP's byte-level BPE (openai/CLIP simple_tokenizer.py; Hugging Face
 * CLIPTokenizer and its tokenizer.json). Facts used:
 *  - normalisation: whitespace runs become one space, text is lowercased
 *    (HF: whitespace_clean(fix_text(text)).lower(); tokenizer.json:
 *    NFC, Replace(\s+, " "), Lowercase). ftfy's mojibake repair and NFC are
 *    not done: input is taken as already clean, composed text.
 *  - pre-tokenisation regex: <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|
 *    'll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+ (leftmost alternative first).
 *  - each pre-token's UTF-8 bytes map to printable code points by
 *    bytes_to_unicode (33..126, 161..172, 174..255 map to themselves, the
 *    rest to 256 + n in byte order); the last symbol of a pre-token carries
 *    "</w>".
 *  - merges are ranked by their order in merges.txt (its "#version" first
 *    line is a header); the lowest-ranked adjacent pair merges first, ties
 *    leftmost (as HF tokenizers' BPE word merge does with its heap).
 *  - vocab: 256 byte symbols, the same with "</w>", one per merge, then
 *    <|startoftext|> (49406) and <|endoftext|> (49407); unk defaults to
 *    <|endoftext|> (HF CLIPTokenizer unk_token). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/tokenizer_internal.h"

static const char eow[] = "</w>";
static const char start_text[] = "<|startoftext|>";
static const char end_text[] = "<|endoftext|>";

static uint32_t byte_to_unicode(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
        return (uint32_t)b;
    int n = 0; /* rank of b among the remapped bytes */
    for (int k = 0; k < b; k++)
        if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255)))
            n++;
    return 256u + (uint32_t)n;
}

/* ---- loading ----------------------------------------------------------- */

static mgpu_status load_vocab(const char *label, json_t *vocab, mgpu_tokenizer *t,
                              mgpu_error *err)
{
    if (!json_is_object(vocab))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: the vocabulary is not a JSON object",
                              label);
    size_t n = json_object_size(vocab);
    if (n == 0 || n > (1u << 24))
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: the vocabulary has %zu entries (1 to 16777216 allowed)", label,
                              n);
    if (tk_pieces_init(&t->pieces, (int32_t)n) != MGPU_OK)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    const char *key;
    json_t *value;
    json_object_foreach(vocab, key, value)
    {
        if (!json_is_integer(value))
            return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: the id of \"%.40s\" is not an integer",
                                  label, key);
        json_int_t id = json_integer_value(value);
        if (id < 0 || id >= (json_int_t)n)
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: \"%.40s\" has id %lld, outside 0..%zu (ids must be 0..n-1)",
                                  label, key, (long long)id, n - 1);
        int32_t dup;
        mgpu_status s = tk_pieces_set(&t->pieces, (int32_t)id, key, strlen(key), &dup);
        if (s == MGPU_ERR_FORMAT)
            return mgpu_error_set(err, s, "%s: id %lld is given to \"%.40s\" and another entry",
                                  label, (long long)id, key);
        if (s != MGPU_OK)
            return mgpu_error_set(err, s, "%s: out of memory", label);
    }
    return MGPU_OK;
}

static mgpu_status add_merge(const char *label, size_t line, mgpu_tokenizer *t, int32_t rank,
                             const char *l, size_t ln, const char *r, size_t rn, mgpu_error *err)
{
    int32_t a = tk_pieces_find(&t->pieces, l, ln);
    int32_t b = tk_pieces_find(&t->pieces, r, rn);
    if (a < 0 || b < 0) {
        const char *bad = a < 0 ? l : r;
        int bad_len = (int)(a < 0 ? ln : rn);
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: merge %zu names \"%.*s\", which is not in the vocabulary",
                              label, line, bad_len > 40 ? 40 : bad_len, bad);
    }
    char *joined = malloc(ln + rn + 1);
    if (!joined)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    memcpy(joined, l, ln);
    memcpy(joined + ln, r, rn);
    int32_t c = tk_pieces_find(&t->pieces, joined, ln + rn);
    free(joined);
    if (c < 0)
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: merge %zu (\"%.*s\" \"%.*s\") makes a symbol that is not in "
                              "the vocabulary",
                              label, line, (int)(ln > 30 ? 30 : ln), l, (int)(rn > 30 ? 30 : rn),
                              r);
    int32_t old;
    if (tk_map_put(&t->merges, (uint64_t)a << 32 | (uint32_t)b, rank, &old) != MGPU_OK)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    /* A repeated pair keeps its first (best) rank. */
    t->merge_result[rank] = c;
    return MGPU_OK;
}

/* Specials, byte symbols; shared by both file forms. */
static mgpu_status finish(const char *label, mgpu_tokenizer *t, const char *unk_token,
                          mgpu_error *err)
{
    t->bos = tk_pieces_find(&t->pieces, start_text, sizeof start_text - 1);
    t->eos = tk_pieces_find(&t->pieces, end_text, sizeof end_text - 1);
    if (t->bos < 0 || t->eos < 0)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: the vocabulary has no %s", label,
                              t->bos < 0 ? start_text : end_text);
    t->pad = t->eos;
    t->unk = unk_token ? tk_pieces_find(&t->pieces, unk_token, strlen(unk_token)) : t->eos;
    for (int b = 0; b < 256; b++) {
        char sym[4 + sizeof eow];
        size_t n = tk_utf8_encode(byte_to_unicode(b), sym);
        t->byte_id[b] = tk_pieces_find(&t->pieces, sym, n);
        memcpy(sym + n, eow, sizeof eow - 1);
        t->byte_eow_id[b] = tk_pieces_find(&t->pieces, sym, n + sizeof eow - 1);
    }
    return MGPU_OK;
}

static mgpu_status init_merges(const char *label, mgpu_tokenizer *t, size_t n, mgpu_error *err)
{
    if (n > (1u << 24))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: %zu merges (at most 16777216)", label, n);
    t->merge_result = malloc((n ? n : 1) * sizeof *t->merge_result);
    if (!t->merge_result || tk_map_init(&t->merges, n) != MGPU_OK)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    return MGPU_OK;
}

mgpu_status tk_clip_from_vocab_json(const char *label, void *vocab_root, const char *merges_label,
                                    const char *merges, size_t merges_len, mgpu_tokenizer **out,
                                    mgpu_error *err)
{
    mgpu_tokenizer *t = tk_new(MGPU_TOKENIZER_CLIP_BPE);
    if (!t)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    mgpu_status s = load_vocab(label, vocab_root, t, err);
    /* Count the lines that can hold merges, for the map's size. */
    size_t lines = 1;
    for (size_t i = 0; i < merges_len; i++)
        lines += merges[i] == '\n';
    if (s == MGPU_OK)
        s = init_merges(merges_label, t, lines, err);
    size_t pos = 0, line = 0;
    int32_t rank = 0;
    while (s == MGPU_OK && pos < merges_len) {
        const char *p = merges + pos;
        const char *nl = memchr(p, '\n', merges_len - pos);
        size_t n = nl ? (size_t)(nl - p) : merges_len - pos;
        pos += n + (nl ? 1 : 0);
        line++;
        if (n && p[n - 1] == '\r')
            n--;
        if (line == 1 && n >= 8 && memcmp(p, "#version", 8) == 0)
            continue;
        if (n == 0)
            continue;
        if (memchr(p, '\0', n)) {
            s = mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: line %zu holds a NUL byte", merges_label,
                               line);
            break;
        }
        const char *sp = memchr(p, ' ', n);
        if (!sp || sp == p || sp == p + n - 1 || memchr(sp + 1, ' ', (size_t)(p + n - sp - 1))) {
            s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                               "%s: line %zu is not two symbols separated by one space",
                               merges_label, line);
            break;
        }
        s = add_merge(merges_label, line, t, rank, p, (size_t)(sp - p), sp + 1,
                      (size_t)(p + n - sp - 1), err);
        rank++;
    }
    if (s == MGPU_OK)
        s = finish(label, t, NULL, err);
    if (s != MGPU_OK) {
        mgpu_tokenizer_free(t);
        return s;
    }
    *out = t;
    return MGPU_OK;
}

/* added_tokens entries must agree with the model vocabulary. */
static mgpu_status check_added(const char *label, json_t *root, const mgpu_tokenizer *t,
                               mgpu_error *err)
{
    json_t *added = json_object_get(root, "added_tokens");
    if (!added || json_is_null(added))
        return MGPU_OK;
    if (!json_is_array(added))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: \"added_tokens\" is not an array", label);
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a)
    {
        json_t *id = json_object_get(a, "id");
        const char *content = json_string_value(json_object_get(a, "content"));
        if (!json_is_integer(id) || !content)
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: added_tokens[%zu] lacks an integer id or a string content",
                                  label, i);
        json_int_t v = json_integer_value(id);
        const char *have = (v >= 0 && v < t->pieces.count)
                               ? mgpu_tokenizer_piece(t, (int32_t)v)
                               : NULL;
        if (!have)
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: added token \"%.40s\" has id %lld, outside the model "
                                  "vocabulary of %d",
                                  label, content, (long long)v, t->pieces.count);
        if (strcmp(have, content) != 0)
            return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                  "%s: added token \"%.40s\" has id %lld, which the model calls "
                                  "\"%.40s\"",
                                  label, content, (long long)v, have);
    }
    return MGPU_OK;
}

mgpu_status tk_clip_from_tokenizer_json(const char *label, void *root_, mgpu_tokenizer **out,
                                        mgpu_error *err)
{
    json_t *root = root_;
    json_t *model = json_object_get(root, "model");
    json_t *suffix = json_object_get(model, "end_of_word_suffix");
    if (!json_is_string(suffix) || strcmp(json_string_value(suffix), eow) != 0)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "%s: a BPE model without end_of_word_suffix \"</w>\" (mgpu reads "
                              "CLIP's byte-level BPE only)",
                              label);
    json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: model.merges is not an array", label);
    json_t *unk = json_object_get(model, "unk_token");
    if (unk && !json_is_null(unk) && !json_is_string(unk))
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: model.unk_token is not a string", label);

    mgpu_tokenizer *t = tk_new(MGPU_TOKENIZER_CLIP_BPE);
    if (!t)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", label);
    mgpu_status s = load_vocab(label, json_object_get(model, "vocab"), t, err);
    if (s == MGPU_OK)
        s = init_merges(label, t, json_array_size(merges), err);
    for (size_t i = 0; s == MGPU_OK && i < json_array_size(merges); i++) {
        json_t *m = json_array_get(merges, i);
        /* "left right" (older files) or ["left", "right"] (newer). */
        if (json_is_string(m)) {
            const char *p = json_string_value(m);
            size_t n = json_string_length(m);
            const char *sp = memchr(p, ' ', n);
            if (!sp || sp == p || sp == p + n - 1 ||
                memchr(sp + 1, ' ', (size_t)(p + n - sp - 1)) || memchr(p, '\0', n)) {
                s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                                   "%s: merge %zu is not two symbols separated by one space",
                                   label, i + 1);
                break;
            }
            s = add_merge(label, i + 1, t, (int32_t)i, p, (size_t)(sp - p), sp + 1,
                          (size_t)(p + n - sp - 1), err);
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            json_t *l = json_array_get(m, 0), *r = json_array_get(m, 1);
            s = add_merge(label, i + 1, t, (int32_t)i, json_string_value(l), json_string_length(l),
                          json_string_value(r), json_string_length(r), err);
        } else {
            s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                               "%s: merge %zu is neither a string nor a pair of strings", label,
                               i + 1);
        }
    }
    if (s == MGPU_OK)
        s = finish(label, t, json_is_string(unk) ? json_string_value(unk) : NULL, err);
    if (s == MGPU_OK)
        s = check_added(label, root, t, err);
    if (s != MGPU_OK) {
        mgpu_tokenizer_free(t);
        return s;
    }
    *out = t;
    return MGPU_OK;
}

/* ---- encoding ---------------------------------------------------------- */

typedef struct cand {
    int32_t rank, pos, a, b;
} cand;

typedef struct work {
    int32_t *sym, *next, *prev;
    cand *heap;
    size_t cap, heap_n, heap_cap;
    uint8_t *bytes;
} work;

static void work_free(work *w)
{
    free(w->sym);
    free(w->next);
    free(w->prev);
    free(w->heap);
    free(w->bytes);
}

static int cand_less(const cand *x, const cand *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static int heap_push(work *w, cand c)
{
    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
        cand *h = realloc(w->heap, cap * sizeof *h);
        if (!h)
            return 0;
        w->heap = h;
        w->heap_cap = cap;
    }
    size_t i = w->heap_n++;
    while (i > 0 && cand_less(&c, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = c;
    return 1;
}

static cand heap_pop(work *w)
{
    cand top = w->heap[0];
    cand last = w->heap[--w->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->heap_n)
            break;
        if (c + 1 < w->heap_n && cand_less(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!cand_less(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (w->heap_n)
        w->heap[i] = last;
    return top;
}

static int push_pair(const mgpu_tokenizer *t, work *w, int32_t pos)
{
    int32_t nx = w->next[pos];
    if (nx < 0 || w->sym[pos] < 0 || w->sym[nx] < 0)
        return 1;
    int32_t rank = tk_map_get(&t->merges, (uint64_t)w->sym[pos] << 32 | (uint32_t)w->sym[nx]);
    if (rank < 0)
        return 1;
    cand c = {rank, pos, w->sym[pos], w->sym[nx]};
    return heap_push(w, c);
}

/* BPE of one pre-token's bytes; appends ids. */
static mgpu_status bpe(const mgpu_tokenizer *t, work *w, size_t n, int32_t word, tk_ids *out,
                       tk_ids *words, mgpu_error *err)
{
    for (size_t i = 0; i < n; i++) {
        w->sym[i] = i + 1 == n ? t->byte_eow_id[w->bytes[i]] : t->byte_id[w->bytes[i]];
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    w->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (!push_pair(t, w, (int32_t)i))
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "tokenizer: out of memory");
    while (w->heap_n) {
        cand c = heap_pop(w);
        int32_t nx = w->next[c.pos];
        /* Stale: the left symbol was merged away or changed, or its right
         * neighbour is no longer the pair's right symbol. */
        if (w->sym[c.pos] != c.a || nx < 0 || w->sym[nx] != c.b)
            continue;
        w->sym[c.pos] = t->merge_result[c.rank];
        w->sym[nx] = -2; /* dead */
        w->next[c.pos] = w->next[nx];
        if (w->next[nx] >= 0)
            w->prev[w->next[nx]] = c.pos;
        if ((w->prev[c.pos] >= 0 && !push_pair(t, w, w->prev[c.pos])) || !push_pair(t, w, c.pos))
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "tokenizer: out of memory");
    }
    for (int32_t i = 0; i >= 0; i = w->next[i]) {
        int32_t id = w->sym[i];
        if (id < 0) {
            if (t->unk < 0)
                return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                      "tokenizer: byte 0x%02X has no symbol in the vocabulary and "
                                      "there is no unk token",
                                      (unsigned)w->bytes[i]);
            id = t->unk;
        }
        if (tk_ids_push(out, id) != MGPU_OK || (words && tk_ids_push(words, word) != MGPU_OK))
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "tokenizer: out of memory");
    }
    return MGPU_OK;
}

static int match_ascii(const uint32_t *cp, size_t n, size_t pos, const char *s)
{
    size_t k = 0;
    for (; s[k]; k++)
        if (pos + k >= n || cp[pos + k] != (uint8_t)s[k])
            return 0;
    return (int)k;
}

/* A special token's text at pos: its length in code points and id. */
static int special_at(const mgpu_tokenizer *t, const uint32_t *cp, size_t n, size_t pos,
                      int32_t *id)
{
    int k;
    if (cp[pos] != '<')
        return 0;
    if ((k = match_ascii(cp, n, pos, start_text))) {
        *id = t->bos;
        return k;
    }
    if ((k = match_ascii(cp, n, pos, end_text))) {
        *id = t->eos;
        return k;
    }
    return 0;
}

static size_t contraction(const uint32_t *cp, size_t n, size_t pos)
{
    if (cp[pos] != '\'' || pos + 1 >= n)
        return 0;
    uint32_t a = cp[pos + 1], b = pos + 2 < n ? cp[pos + 2] : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

mgpu_status tk_clip_encode(const mgpu_tokenizer *t, const char *text, size_t len, tk_ids *out,
                           tk_ids *words, mgpu_error *err)
{
    /* Decode and lowercase; whitespace is kept as the separator class. */
    uint32_t *cp = malloc((len + 1) * sizeof *cp);
    work w = {0};
    w.cap = len * 4 + 4;
    w.bytes = malloc(w.cap);
    w.sym = malloc(w.cap * sizeof *w.sym);
    w.next = malloc(w.cap * sizeof *w.next);
    w.prev = malloc(w.cap * sizeof *w.prev);
    if (!cp || !w.bytes || !w.sym || !w.next || !w.prev) {
        free(cp);
        work_free(&w);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "tokenizer: out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t c = 0;
        size_t k = tk_utf8_decode((const uint8_t *)text + i, len - i, &c);
        if (k == 0) /* validated by the caller; stop rather than loop */
            break;
        cp[n++] = tk_lower(c);
        i += k;
    }
    mgpu_status s = MGPU_OK;
    int32_t word = 0;
    int in_word = 0;
    size_t pos = 0;
    while (s == MGPU_OK && pos < n) {
        if (tk_is_space(cp[pos])) {
            if (in_word)
                word++;
            in_word = 0;
            pos++;
            continue;
        }
        in_word = 1;
        int32_t id;
        size_t k = (size_t)special_at(t, cp, n, pos, &id);
        if (k) {
            if (tk_ids_push(out, id) != MGPU_OK || (words && tk_ids_push(words, word) != MGPU_OK))
                s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "tokenizer: out of memory");
            pos += k;
            continue;
        }
        uint32_t c = cp[pos];
        if ((k = contraction(cp, n, pos)) != 0) {
        } else if (tk_is_letter(c)) {
            k = 1;
            while (pos + k < n && tk_is_letter(cp[pos + k]))
                k++;
        } else if (tk_is_number(c)) {
            k = 1;
        } else {
            k = 1;
            int32_t ignored;
            while (pos + k < n && !tk_is_space(cp[pos + k]) && !tk_is_letter(cp[pos + k]) &&
                   !tk_is_number(cp[pos + k]) && !special_at(t, cp, n, pos + k, &ignored))
                k++;
        }
        size_t nb = 0;
        for (size_t j = 0; j < k; j++)
            nb += tk_utf8_encode(cp[pos + j], (char *)w.bytes + nb);
        s = bpe(t, &w, nb, word, out, words, err);
        pos += k;
    }
    free(cp);
    work_free(&w);
    return s;
}
