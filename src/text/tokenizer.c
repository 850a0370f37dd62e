/* Tokenizer handles: opening a file or folder by content, the getters, the
 * shared containers, and the FLUX conventions on top of the raw encoders. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/file.h"
#include "text/tokenizer_internal.h"

/* Real tokenizer files are a few MB (CLIP's tokenizer.json 3.6 MB); the cap
 * bounds what a hostile file can make jansson allocate. */
#define TK_MAX_FILE_BYTES (64ull << 20)

/* ---- u64 map ----------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

mgpu_status tk_map_init(tk_map *m, size_t expected)
{
    memset(m, 0, sizeof *m);
    size_t cap = 16;
    while (cap < expected * 2) {
        if (cap > SIZE_MAX / 4 / sizeof(uint64_t))
            return MGPU_ERR_NO_MEMORY;
        cap *= 2;
    }
    m->keys = malloc(cap * sizeof *m->keys);
    m->vals = malloc(cap * sizeof *m->vals);
    if (!m->keys || !m->vals) {
        tk_map_free(m);
        return MGPU_ERR_NO_MEMORY;
    }
    memset(m->keys, 0xFF, cap * sizeof *m->keys);
    m->cap = cap;
    return MGPU_OK;
}

void tk_map_free(tk_map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static mgpu_status map_grow(tk_map *m)
{
    tk_map bigger;
    mgpu_status s = tk_map_init(&bigger, m->cap);
    if (s != MGPU_OK)
        return s;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == UINT64_MAX)
            continue;
        size_t j = mix64(m->keys[i]) & (bigger.cap - 1);
        while (bigger.keys[j] != UINT64_MAX)
            j = (j + 1) & (bigger.cap - 1);
        bigger.keys[j] = m->keys[i];
        bigger.vals[j] = m->vals[i];
    }
    bigger.count = m->count;
    tk_map_free(m);
    *m = bigger;
    return MGPU_OK;
}

mgpu_status tk_map_put(tk_map *m, uint64_t key, int32_t val, int32_t *old)
{
    *old = -1;
    if ((m->count + 1) * 2 > m->cap) {
        mgpu_status s = map_grow(m);
        if (s != MGPU_OK)
            return s;
    }
    size_t j = mix64(key) & (m->cap - 1);
    while (m->keys[j] != UINT64_MAX) {
        if (m->keys[j] == key) {
            *old = m->vals[j];
            return MGPU_OK;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->keys[j] = key;
    m->vals[j] = val;
    m->count++;
    return MGPU_OK;
}

int32_t tk_map_get(const tk_map *m, uint64_t key)
{
    if (!m->cap)
        return -1;
    size_t j = mix64(key) & (m->cap - 1);
    while (m->keys[j] != UINT64_MAX) {
        if (m->keys[j] == key)
            return m->vals[j];
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

/* ---- pieces ------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

mgpu_status tk_pieces_init(tk_pieces *p, int32_t n)
{
    memset(p, 0, sizeof *p);
    if (n < 0)
        return MGPU_ERR_ARGUMENT;
    size_t nslots = 16;
    while (nslots < (size_t)n * 2)
        nslots *= 2;
    p->count = n;
    p->offset = malloc(((size_t)n + 1) * sizeof *p->offset);
    p->length = calloc((size_t)n + 1, sizeof *p->length);
    p->slots = malloc(nslots * sizeof *p->slots);
    if (!p->offset || !p->length || !p->slots) {
        tk_pieces_free(p);
        return MGPU_ERR_NO_MEMORY;
    }
    for (int32_t i = 0; i < n; i++)
        p->offset[i] = SIZE_MAX;
    memset(p->slots, 0xFF, nslots * sizeof *p->slots);
    p->nslots = nslots;
    return MGPU_OK;
}

void tk_pieces_free(tk_pieces *p)
{
    free(p->text);
    free(p->offset);
    free(p->length);
    free(p->slots);
    memset(p, 0, sizeof *p);
}

int32_t tk_pieces_find(const tk_pieces *p, const char *s, size_t len)
{
    if (!p->nslots || len > UINT32_MAX)
        return -1;
    size_t j = hash_bytes(s, len) & (p->nslots - 1);
    while (p->slots[j] >= 0) {
        int32_t id = p->slots[j];
        if (p->length[id] == len && memcmp(p->text + p->offset[id], s, len) == 0)
            return id;
        j = (j + 1) & (p->nslots - 1);
    }
    return -1;
}

mgpu_status tk_pieces_set(tk_pieces *p, int32_t id, const char *s, size_t len, int32_t *dup)
{
    *dup = -1;
    if (id < 0 || id >= p->count || len > UINT32_MAX)
        return MGPU_ERR_ARGUMENT;
    if (p->offset[id] != SIZE_MAX) {
        *dup = id;
        return MGPU_ERR_FORMAT;
    }
    int32_t other = tk_pieces_find(p, s, len);
    if (other >= 0) {
        *dup = other;
        return MGPU_ERR_FORMAT;
    }
    if (p->text_len + len + 1 > p->text_cap) {
        size_t cap = p->text_cap ? p->text_cap : 4096;
        while (cap < p->text_len + len + 1)
            cap *= 2;
        char *t = realloc(p->text, cap);
        if (!t)
            return MGPU_ERR_NO_MEMORY;
        p->text = t;
        p->text_cap = cap;
    }
    memcpy(p->text + p->text_len, s, len);
    p->text[p->text_len + len] = '\0';
    p->offset[id] = p->text_len;
    p->length[id] = (uint32_t)len;
    p->text_len += len + 1;
    size_t j = hash_bytes(s, len) & (p->nslots - 1);
    while (p->slots[j] >= 0)
        j = (j + 1) & (p->nslots - 1);
    p->slots[j] = id;
    return MGPU_OK;
}

int32_t tk_pieces_first_hole(const tk_pieces *p)
{
    for (int32_t i = 0; i < p->count; i++)
        if (p->offset[i] == SIZE_MAX)
            return i;
    return -1;
}

/* ---- id lists ---------------------------------------------------------- */

mgpu_status tk_ids_push(tk_ids *l, int32_t x)
{
    if (l->n == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 64;
        int32_t *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return MGPU_ERR_NO_MEMORY;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return MGPU_OK;
}

void tk_ids_free(tk_ids *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ---- handles ----------------------------------------------------------- */

mgpu_tokenizer *tk_new(mgpu_tokenizer_kind kind)
{
    mgpu_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->kind = kind;
    t->bos = t->eos = t->pad = t->unk = -1;
    for (int i = 0; i < 256; i++)
        t->byte_id[i] = t->byte_eow_id[i] = t->byte_piece[i] = -1;
    return t;
}

void mgpu_tokenizer_free(mgpu_tokenizer *t)
{
    if (!t)
        return;
    tk_pieces_free(&t->pieces);
    tk_map_free(&t->merges);
    free(t->merge_result);
    free(t->scores);
    free(t->types);
    tk_map_free(&t->trie);
    free(t->trie_id);
    free(t);
}

mgpu_tokenizer_kind mgpu_tokenizer_get_kind(const mgpu_tokenizer *t) { return t->kind; }
int32_t mgpu_tokenizer_vocab_size(const mgpu_tokenizer *t) { return t->pieces.count; }
int32_t mgpu_tokenizer_bos_id(const mgpu_tokenizer *t) { return t->bos; }
int32_t mgpu_tokenizer_eos_id(const mgpu_tokenizer *t) { return t->eos; }
int32_t mgpu_tokenizer_pad_id(const mgpu_tokenizer *t) { return t->pad; }
int32_t mgpu_tokenizer_unk_id(const mgpu_tokenizer *t) { return t->unk; }

const char *mgpu_tokenizer_piece(const mgpu_tokenizer *t, int32_t id)
{
    if (!t || id < 0 || id >= t->pieces.count || t->pieces.offset[id] == SIZE_MAX)
        return NULL;
    return t->pieces.text + t->pieces.offset[id];
}

int32_t mgpu_tokenizer_find_piece(const mgpu_tokenizer *t, const char *piece)
{
    if (!t || !piece)
        return -1;
    return tk_pieces_find(&t->pieces, piece, strlen(piece));
}

/* ---- opening ----------------------------------------------------------- */

static mgpu_status open_json(const char *path, const uint8_t *data, size_t size,
                             mgpu_tokenizer **out, mgpu_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: not valid JSON (line %d: %s)", path,
                              jerr.line, jerr.text);
    mgpu_status s;
    if (!json_is_object(root)) {
        s = mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: the JSON root is not an object", path);
    } else if (json_object_get(root, "model")) {
        /* A Hugging Face tokenizer.json: the model type picks the tokenizer. */
        json_t *model = json_object_get(root, "model");
        json_t *type = json_is_object(model) ? json_object_get(model, "type") : NULL;
        const char *ts = json_string_value(type);
        if (!ts)
            s = mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: \"model\" has no string \"type\"", path);
        else if (strcmp(ts, "BPE") == 0)
            s = tk_clip_from_tokenizer_json(path, root, out, err);
        else if (strcmp(ts, "Unigram") == 0)
            s = tk_t5_from_tokenizer_json(path, root, out, err);
        else
            s = mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                               "%s: tokenizer model type \"%.64s\" (mgpu reads BPE and Unigram)",
                               path, ts);
    } else {
        /* A vocab.json: merges.txt must be beside it. */
        const char *slash = strrchr(path, '/');
        size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
        char *mpath = malloc(dir_len + sizeof "merges.txt");
        if (!mpath) {
            json_decref(root);
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
        }
        memcpy(mpath, path, dir_len);
        memcpy(mpath + dir_len, "merges.txt", sizeof "merges.txt");
        struct stat st;
        if (stat(mpath, &st) != 0) {
            s = mgpu_error_set(err, MGPU_ERR_NOT_FOUND,
                               "%s: a vocab.json needs merges.txt beside it, and %s does not exist",
                               path, mpath);
        } else {
            char *merges = NULL;
            uint64_t msize = 0;
            s = mgpu_file_read_all(mpath, TK_MAX_FILE_BYTES, &merges, &msize, err);
            if (s == MGPU_OK)
                s = tk_clip_from_vocab_json(path, root, mpath, merges, (size_t)msize, out, err);
            free(merges);
        }
        free(mpath);
    }
    json_decref(root);
    return s;
}

static mgpu_status open_file(const char *path, mgpu_tokenizer **out, mgpu_error *err)
{
    mgpu_mapped_file f;
    mgpu_status s = mgpu_file_map(path, &f, err);
    if (s != MGPU_OK)
        return s;
    if (f.size > TK_MAX_FILE_BYTES && !(f.size >= 4 && memcmp(f.data, "GGUF", 4) == 0)) {
        mgpu_file_unmap(&f);
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: %llu bytes is too large for a tokenizer",
                              path, (unsigned long long)f.size);
    }
    size_t i = 0;
    if (f.size >= 3 && memcmp(f.data, "\xEF\xBB\xBF", 3) == 0)
        i = 3; /* a UTF-8 byte order mark before JSON */
    while (i < f.size && (f.data[i] == ' ' || f.data[i] == '\n' || f.data[i] == '\r' ||
                          f.data[i] == '\t'))
        i++;
    if (f.size >= 4 && memcmp(f.data, "GGUF", 4) == 0) {
        mgpu_file_unmap(&f);
        mgpu_gguf *g = NULL;
        s = mgpu_gguf_open(path, &g, err);
        if (s != MGPU_OK)
            return s;
        s = mgpu_tokenizer_from_gguf(g, path, out, err);
        mgpu_gguf_close(g);
        return s;
    }
    if (i < f.size && f.data[i] == '{')
        s = open_json(path, f.data + i, (size_t)(f.size - i), out, err);
    else if (f.size == 0)
        s = mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: the file is empty", path);
    else
        s = tk_t5_from_spiece(path, f.data, (size_t)f.size, out, err);
    mgpu_file_unmap(&f);
    return s;
}

mgpu_status mgpu_tokenizer_open(const char *path, mgpu_tokenizer **out, mgpu_error *err)
{
    if (!out)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "mgpu_tokenizer_open: out is NULL");
    *out = NULL;
    if (!path)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "mgpu_tokenizer_open: path is NULL");
    struct stat st;
    if (stat(path, &st) != 0)
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot open (no such file or folder)", path);
    if (!S_ISDIR(st.st_mode))
        return open_file(path, out, err);
    static const char *const names[] = {"tokenizer.json", "spiece.model", "tokenizer.model",
                                        "vocab.json"};
    size_t n = strlen(path);
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char *p = malloc(n + strlen(names[k]) + 2);
        if (!p)
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
        memcpy(p, path, n);
        p[n] = '/';
        strcpy(p + n + 1, names[k]);
        struct stat fs;
        mgpu_status s = MGPU_ERR_NOT_FOUND;
        if (stat(p, &fs) == 0 && S_ISREG(fs.st_mode))
            s = open_file(p, out, err);
        free(p);
        if (s != MGPU_ERR_NOT_FOUND)
            return s;
    }
    return mgpu_error_set(err, MGPU_ERR_NOT_FOUND,
                          "%s: no tokenizer.json, spiece.model, tokenizer.model or vocab.json in "
                          "the folder",
                          path);
}

mgpu_status mgpu_tokenizer_from_gguf(const mgpu_gguf *g, const char *label, mgpu_tokenizer **out,
                                     mgpu_error *err)
{
    if (!out)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "mgpu_tokenizer_from_gguf: out is NULL");
    *out = NULL;
    if (!g)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "mgpu_tokenizer_from_gguf: gguf is NULL");
    if (!label)
        label = "gguf";
    const mgpu_gguf_value *model = mgpu_gguf_find_kv(g, "tokenizer.ggml.model");
    if (!model)
        return mgpu_error_set(err, MGPU_ERR_NOT_FOUND, "%s: no tokenizer.ggml.model key", label);
    if (model->type != MGPU_GGUF_STRING)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: tokenizer.ggml.model is a %s, not a string",
                              label, mgpu_gguf_type_name_of(model->type));
    if (strcmp(model->string.data, "t5") != 0)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED,
                              "%s: tokenizer.ggml.model \"%.64s\" (mgpu reads \"t5\")", label,
                              model->string.data);
    return tk_t5_from_gguf(label, g, out, err);
}

/* ---- encoding ---------------------------------------------------------- */

static mgpu_status check_text(const mgpu_tokenizer *t, const char *utf8, size_t *len,
                              mgpu_error *err)
{
    if (!t || !utf8)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "tokenizer: %s is NULL",
                              t ? "the text" : "the tokenizer");
    size_t n = 0;
    while (utf8[n] && n <= (size_t)MGPU_TOKENIZER_MAX_TEXT_BYTES)
        n++;
    if (n > (size_t)MGPU_TOKENIZER_MAX_TEXT_BYTES)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "prompt is longer than the %d bytes allowed",
                              (int)MGPU_TOKENIZER_MAX_TEXT_BYTES);
    size_t bad = tk_utf8_invalid_at((const uint8_t *)utf8, n);
    if (bad != SIZE_MAX)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "prompt is not valid UTF-8: byte 0x%02X at offset %zu",
                              (unsigned)(uint8_t)utf8[bad], bad);
    *len = n;
    return MGPU_OK;
}

static mgpu_status encode_list(const mgpu_tokenizer *t, const char *utf8, tk_ids *ids,
                               tk_ids *words, mgpu_error *err)
{
    size_t len = 0;
    mgpu_status s = check_text(t, utf8, &len, err);
    if (s != MGPU_OK)
        return s;
    if (t->kind == MGPU_TOKENIZER_CLIP_BPE)
        return tk_clip_encode(t, utf8, len, ids, words, err);
    return tk_t5_encode(t, utf8, len, ids, err);
}

mgpu_status mgpu_tokenizer_encode(const mgpu_tokenizer *t, const char *utf8, int32_t *ids,
                                  int64_t capacity, int64_t *count, mgpu_error *err)
{
    if (count)
        *count = 0;
    if (capacity < 0 || (capacity > 0 && !ids) || !count)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "mgpu_tokenizer_encode: bad output (ids, capacity or count)");
    tk_ids l = {0};
    mgpu_status s = encode_list(t, utf8, &l, NULL, err);
    if (s == MGPU_OK) {
        *count = l.n;
        int64_t n = l.n < capacity ? l.n : capacity;
        if (n)
            memcpy(ids, l.v, (size_t)n * sizeof *ids);
        if (l.n > capacity)
            s = mgpu_error_set(err, MGPU_ERR_ARGUMENT, "prompt needs %lld ids, room for %lld",
                               (long long)l.n, (long long)capacity);
    }
    tk_ids_free(&l);
    return s;
}

mgpu_status mgpu_tokenizer_encode_clip77(const mgpu_tokenizer *t, const char *utf8,
                                         mgpu_clip_truncation mode,
                                         int32_t ids[MGPU_CLIP_CONTEXT], int64_t *eos_index,
                                         int64_t *dropped, mgpu_error *err)
{
    if (!ids || !eos_index)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "encode_clip77: ids or eos_index is NULL");
    if (t && t->kind != MGPU_TOKENIZER_CLIP_BPE)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "encode_clip77: not a CLIP tokenizer");
    if (mode != MGPU_CLIP_TRUNCATE_WORDS && mode != MGPU_CLIP_TRUNCATE_TOKENS)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "encode_clip77: unknown truncation mode %d",
                              (int)mode);
    if (t && (t->bos < 0 || t->eos < 0))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "encode_clip77: the vocabulary lacks <|startoftext|> or "
                              "<|endoftext|>");
    tk_ids l = {0}, w = {0};
    mgpu_status s = encode_list(t, utf8, &l, &w, err);
    if (s != MGPU_OK) {
        tk_ids_free(&l);
        tk_ids_free(&w);
        return s;
    }
    enum { room = MGPU_CLIP_CONTEXT - 2 };
    int64_t keep = 0;
    if (mode == MGPU_CLIP_TRUNCATE_TOKENS || l.n <= room) {
        keep = l.n < room ? l.n : room;
    } else {
        /* ComfyUI's SDTokenizer.tokenize_with_weights, first chunk: a word
         * whose tokens do not fit closes the chunk, unless it is "large"
         * (>= max_word_length 8 tokens), which is split to fill it. */
        int64_t i = 0;
        while (i < l.n) {
            int64_t j = i;
            while (j < l.n && w.v[j] == w.v[i])
                j++;
            int64_t size = j - i;
            if (keep + size > room) {
                if (size >= 8)
                    keep = room;
                break;
            }
            keep += size;
            i = j;
        }
    }
    ids[0] = t->bos;
    if (keep)
        memcpy(ids + 1, l.v, (size_t)keep * sizeof *ids);
    for (int64_t k = 1 + keep; k < MGPU_CLIP_CONTEXT; k++)
        ids[k] = t->eos;
    *eos_index = 1 + keep;
    if (dropped)
        *dropped = l.n - keep;
    tk_ids_free(&l);
    tk_ids_free(&w);
    return MGPU_OK;
}

mgpu_status mgpu_tokenizer_encode_t5(const mgpu_tokenizer *t, const char *utf8, int64_t min_len,
                                     int64_t max_len, int32_t *ids, int64_t capacity,
                                     int64_t *count, int64_t *dropped, mgpu_error *err)
{
    if (count)
        *count = 0;
    if (!count || capacity < 0 || (capacity > 0 && !ids))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "encode_t5: bad output (ids, capacity or count)");
    if (min_len < 0 || max_len < 0 || max_len == 1 || (max_len > 0 && min_len > max_len))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "encode_t5: min_len %lld and max_len %lld do not make a range",
                              (long long)min_len, (long long)max_len);
    if (t && t->kind != MGPU_TOKENIZER_T5_UNIGRAM)
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "encode_t5: not a T5 tokenizer");
    if (t && (t->eos < 0 || (t->pad < 0 && min_len > 0)))
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                              "encode_t5: the vocabulary lacks </s> or <pad>");
    tk_ids l = {0};
    mgpu_status s = encode_list(t, utf8, &l, NULL, err);
    if (s != MGPU_OK) {
        tk_ids_free(&l);
        return s;
    }
    int64_t keep = l.n;
    if (max_len > 0 && keep + 1 > max_len)
        keep = max_len - 1;
    int64_t n = keep + 1 < min_len ? min_len : keep + 1;
    *count = n;
    if (dropped)
        *dropped = l.n - keep;
    if (n > capacity) {
        tk_ids_free(&l);
        return mgpu_error_set(err, MGPU_ERR_ARGUMENT, "prompt needs %lld ids, room for %lld",
                              (long long)n, (long long)capacity);
    }
    if (keep)
        memcpy(ids, l.v, (size_t)keep * sizeof *ids);
    ids[keep] = t->eos;
    for (int64_t k = keep + 1; k < n; k++)
        ids[k] = t->pad;
    tk_ids_free(&l);
    return MGPU_OK;
}
