/* Synthetic tokenizer files (see synth_tokenizer.h). The CLIP merges come
 * from plain BPE training on an embedded word list (pair counts weighted by
 * word rank, ties broken by the pair's text), so the result is a real BPE
 * vocabulary in miniature; the T5 pieces are scored by word rank. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mgpu/gguf.h"
#include "synth_tokenizer.h"

/* Lowercase English, ordered roughly by how often prompts use them. */
static const char *const words[] = {
    "the", "a", "of", "and", "in", "with", "on", "photo", "to", "is", "at", "an", "by", "it",
    "for", "from", "light", "red", "blue", "green", "white", "black", "golden", "dark", "bright",
    "cat", "dog", "bird", "horse", "fox", "tree", "forest", "mountain", "river", "lake", "sea",
    "ocean", "sky", "cloud", "clouds", "sun", "sunset", "sunrise", "moon", "star", "stars",
    "night", "day", "city", "street", "house", "castle", "tower", "bridge", "road", "car",
    "train", "boat", "ship", "woman", "man", "girl", "boy", "child", "people", "portrait",
    "face", "eyes", "hair", "hand", "hands", "dress", "hat", "coat", "wearing", "holding",
    "sitting", "standing", "walking", "running", "flying", "painting", "drawing", "detailed",
    "beautiful", "realistic", "cinematic", "lighting", "style", "art", "digital", "oil",
    "watercolor", "sketch", "render", "high", "quality", "sharp", "focus", "soft", "warm",
    "cold", "old", "new", "small", "large", "big", "little", "tall", "long", "young",
    "happy", "quiet", "misty", "rainy", "snowy", "winter", "summer", "spring", "autumn",
    "flower", "flowers", "garden", "field", "grass", "stone", "wood", "wooden", "glass",
    "metal", "water", "fire", "smoke", "shadow", "shadows", "background", "foreground",
    "view", "close", "up", "wide", "angle", "shot", "camera", "lens", "film", "scene",
    "there", "this", "that", "these", "under", "over", "near", "behind", "between", "through",
    "its", "his", "her", "their", "one", "two", "three", "four", "five", "ten", "hundred",
    "reading", "book", "table", "chair", "window", "door", "room", "kitchen", "coffee", "cup",
    "food", "bread", "apple", "orange", "lemon", "fruit", "market", "shop", "sign", "text",
    "says", "hello", "world", "robot", "dragon", "knight", "wizard", "astronaut", "space",
};
enum { n_words = sizeof words / sizeof words[0] };

/* ---- small helpers ----------------------------------------------------- */

static mgpu_status fail(mgpu_error *err, mgpu_status s, const char *fmt, const char *arg)
{
    if (err) {
        snprintf(err->message, sizeof err->message, fmt, arg);
        err->status = s;
    }
    return s;
}

static mgpu_status write_file(const char *path, const void *data, size_t n, mgpu_error *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return fail(err, MGPU_ERR_IO, "%s: cannot create the file", path);
    int ok = fwrite(data, 1, n, f) == n;
    ok &= fclose(f) == 0;
    return ok ? MGPU_OK : fail(err, MGPU_ERR_IO, "%s: write failed", path);
}

static mgpu_status write_json(const char *path, json_t *root, mgpu_error *err)
{
    if (!root)
        return fail(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_ENSURE_ASCII);
    json_decref(root);
    if (!text)
        return fail(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", path);
    mgpu_status s = write_file(path, text, strlen(text), err);
    free(text);
    return s;
}

static int is_direct(int b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

/* CLIP's bytes_to_unicode: the code point standing for byte b. */
static unsigned byte_cp(int b)
{
    if (is_direct(b))
        return (unsigned)b;
    unsigned n = 0;
    for (int k = 0; k < b; k++)
        n += !is_direct(k);
    return 256 + n;
}

static size_t put_utf8(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* ---- CLIP -------------------------------------------------------------- */

/* The id order of CLIP's first 256 symbols: bytes_to_unicode's dict order. */
static void clip_byte_order(int order[256])
{
    int k = 0;
    for (int b = 0; b < 256; b++)
        if (is_direct(b))
            order[k++] = b;
    for (int b = 0; b < 256; b++)
        if (!is_direct(b))
            order[k++] = b;
}

mgpu_status synth_tok_clip_write(const char *const *merges, size_t n_merges,
                                 synth_tok_format format, const char *out, mgpu_error *err)
{
    if (format != SYNTH_TOK_JSON && format != SYNTH_TOK_VOCAB)
        return fail(err, MGPU_ERR_ARGUMENT, "%s: CLIP is written as tokenizer.json or vocab.json",
                    out);
    json_t *vocab = json_object();
    int order[256];
    clip_byte_order(order);
    int id = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 256; i++) {
            char sym[8];
            size_t n = put_utf8(byte_cp(order[i]), sym);
            strcpy(sym + n, pass ? "</w>" : "");
            json_object_set_new(vocab, sym, json_integer(id++));
        }
    }
    for (size_t i = 0; i < n_merges; i++) {
        const char *sp = strchr(merges[i], ' ');
        if (!sp) {
            json_decref(vocab);
            return fail(err, MGPU_ERR_ARGUMENT, "merge \"%s\" has no space", merges[i]);
        }
        size_t l = (size_t)(sp - merges[i]);
        char *joined = malloc(strlen(merges[i]));
        memcpy(joined, merges[i], l);
        strcpy(joined + l, sp + 1);
        if (!json_object_get(vocab, joined))
            json_object_set_new(vocab, joined, json_integer(id++));
        free(joined);
    }
    int bos = id++, eos = id++;
    json_object_set_new(vocab, "<|startoftext|>", json_integer(bos));
    json_object_set_new(vocab, "<|endoftext|>", json_integer(eos));

    if (format == SYNTH_TOK_VOCAB) {
        if (mkdir(out, 0755) != 0 && errno != EEXIST) {
            json_decref(vocab);
            return fail(err, MGPU_ERR_IO, "%s: cannot create the folder", out);
        }
        size_t n = strlen(out);
        char *path = malloc(n + 16);
        snprintf(path, n + 16, "%s/vocab.json", out);
        mgpu_status s = write_json(path, vocab, err);
        size_t bytes = 32;
        for (size_t i = 0; i < n_merges; i++)
            bytes += strlen(merges[i]) + 1;
        char *text = malloc(bytes), *p = text;
        p += sprintf(p, "#version: 0.2\n");
        for (size_t i = 0; i < n_merges; i++)
            p += sprintf(p, "%s\n", merges[i]);
        snprintf(path, n + 16, "%s/merges.txt", out);
        if (s == MGPU_OK)
            s = write_file(path, text, (size_t)(p - text), err);
        free(text);
        free(path);
        return s;
    }
    json_t *mlist = json_array();
    for (size_t i = 0; i < n_merges; i++)
        json_array_append_new(mlist, json_string(merges[i]));
    json_t *added = json_array();
    const char *names[2] = {"<|startoftext|>", "<|endoftext|>"};
    for (int k = 0; k < 2; k++)
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id",
                                               k ? eos : bos, "content", names[k], "single_word",
                                               0, "lstrip", 0, "rstrip", 0, "normalized", 1,
                                               "special", 1));
    json_t *root = json_pack(
        "{s:s,s:n,s:n,s:o,s:{s:s,s:[{s:s},{s:s,s:{s:s},s:s},{s:s}]},"
        "s:{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]},"
        "s:{s:s,s:n,s:s,s:s,s:s,s:b,s:b,s:o,s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer", "type",
        "Sequence", "normalizers", "type", "NFC", "type", "Replace", "pattern", "Regex", "\\s+",
        "content", " ", "type", "Lowercase", "pre_tokenizer", "type", "Sequence",
        "pretokenizers", "type", "Split", "pattern", "Regex",
        "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|"
        "[^\\s\\p{L}\\p{N}]+",
        "behavior", "Removed", "invert", 1, "type", "ByteLevel", "add_prefix_space", 0,
        "trim_offsets", 1, "use_regex", 0, "model", "type", "BPE", "dropout", "unk_token",
        "<|endoftext|>", "continuing_subword_prefix", "", "end_of_word_suffix", "</w>",
        "fuse_unk", 0, "byte_fallback", 0, "vocab", vocab, "merges", mlist);
    return write_json(out, root, err);
}

/* BPE training: words as symbol lists; each round merges the pair with the
 * largest weighted count (ties: the smaller "left right" text). */
typedef struct tword {
    char **sym;
    int n;
    int weight;
} tword;

typedef struct tpair {
    const char *l, *r;
    int count;
} tpair;

static int pair_cmp(const void *a, const void *b)
{
    const tpair *x = a, *y = b;
    int c = strcmp(x->l, y->l);
    return c ? c : strcmp(x->r, y->r);
}

static char *cat2(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

char **synth_tok_clip_default_merges(size_t *n_out)
{
    const size_t want = 1024 - 512 - 2;
    *n_out = 0;
    tword *tw = calloc(n_words, sizeof *tw);
    char **merges = calloc(want, sizeof *merges);
    if (!tw || !merges) {
        free(tw);
        free(merges);
        return NULL;
    }
    size_t total = 0;
    for (int i = 0; i < n_words; i++) {
        int len = (int)strlen(words[i]);
        tw[i].sym = calloc((size_t)len, sizeof(char *));
        tw[i].n = len;
        tw[i].weight = n_words - i;
        for (int k = 0; k < len; k++) {
            char s[8] = {words[i][k], 0};
            if (k == len - 1)
                strcat(s, "</w>");
            tw[i].sym[k] = strdup(s);
        }
        total += (size_t)len;
    }
    tpair *pairs = malloc(total * sizeof *pairs);
    size_t n = 0;
    while (n < want) {
        size_t np = 0;
        for (int i = 0; i < n_words; i++)
            for (int k = 0; k + 1 < tw[i].n; k++)
                pairs[np++] = (tpair){tw[i].sym[k], tw[i].sym[k + 1], tw[i].weight};
        if (np == 0)
            break;
        qsort(pairs, np, sizeof *pairs, pair_cmp);
        size_t best = 0;
        int best_count = 0;
        for (size_t i = 0; i < np;) {
            size_t j = i;
            int c = 0;
            while (j < np && pair_cmp(&pairs[i], &pairs[j]) == 0)
                c += pairs[j++].count;
            if (c > best_count) {
                best_count = c;
                best = i;
            }
            i = j;
        }
        char *l = strdup(pairs[best].l), *r = strdup(pairs[best].r);
        size_t ml = strlen(l) + strlen(r) + 2;
        merges[n] = malloc(ml);
        snprintf(merges[n], ml, "%s %s", l, r);
        n++;
        char *joined = cat2(l, r);
        for (int i = 0; i < n_words; i++) {
            int k = 0, o = 0;
            while (k < tw[i].n) {
                if (k + 1 < tw[i].n && strcmp(tw[i].sym[k], l) == 0 &&
                    strcmp(tw[i].sym[k + 1], r) == 0) {
                    free(tw[i].sym[k]);
                    free(tw[i].sym[k + 1]);
                    tw[i].sym[o++] = strdup(joined);
                    k += 2;
                } else {
                    tw[i].sym[o++] = tw[i].sym[k++];
                }
            }
            tw[i].n = o;
        }
        free(joined);
        free(l);
        free(r);
    }
    free(pairs);
    for (int i = 0; i < n_words; i++) {
        for (int k = 0; k < tw[i].n; k++)
            free(tw[i].sym[k]);
        free(tw[i].sym);
    }
    free(tw);
    *n_out = n;
    return merges;
}

void synth_tok_free_merges(char **merges, size_t n)
{
    if (!merges)
        return;
    for (size_t i = 0; i < n; i++)
        free(merges[i]);
    free(merges);
}

/* ---- T5 ---------------------------------------------------------------- */

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *s, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->n + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void put_varint(buf *b, unsigned long long v)
{
    unsigned char c[10];
    size_t n = 0;
    do {
        c[n] = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v)
            c[n] |= 0x80;
        n++;
    } while (v);
    put(b, c, n);
}

static void put_key(buf *b, unsigned field, unsigned wire) { put_varint(b, field << 3 | wire); }

static void put_sub(buf *b, unsigned field, const buf *sub)
{
    put_key(b, field, 2);
    put_varint(b, sub->n);
    put(b, sub->p, sub->n);
}

static int find_piece(const synth_piece *p, size_t n, const char *s, int type)
{
    for (size_t i = 0; i < n; i++)
        if ((s && strcmp(p[i].piece, s) == 0) || (!s && p[i].type == type))
            return (int)i;
    return -1;
}

static mgpu_status t5_spiece(const synth_piece *p, size_t n, const char *out, mgpu_error *err)
{
    buf b = {0};
    for (size_t i = 0; i < n; i++) {
        buf s = {0};
        put_key(&s, 1, 2);
        put_varint(&s, strlen(p[i].piece));
        put(&s, p[i].piece, strlen(p[i].piece));
        put_key(&s, 2, 5);
        unsigned char f[4];
        unsigned bits;
        memcpy(&bits, &p[i].score, 4);
        for (int k = 0; k < 4; k++)
            f[k] = (unsigned char)(bits >> (8 * k));
        put(&s, f, 4);
        if (p[i].type != SYNTH_PIECE_NORMAL) {
            put_key(&s, 3, 0);
            put_varint(&s, (unsigned)p[i].type);
        }
        put_sub(&b, 1, &s);
        free(s.p);
    }
    /* TrainerSpec: unigram, ids as T5's (negative ids as 64-bit varints). */
    buf ts = {0};
    put_key(&ts, 3, 0);
    put_varint(&ts, 1);
    put_key(&ts, 4, 0);
    put_varint(&ts, n);
    const int ids[4] = {find_piece(p, n, NULL, SYNTH_PIECE_UNKNOWN), find_piece(p, n, "<s>", 0),
                        find_piece(p, n, "</s>", 0), find_piece(p, n, "<pad>", 0)};
    for (int k = 0; k < 4; k++) {
        put_key(&ts, 40 + (unsigned)k, 0);
        put_varint(&ts, (unsigned long long)(long long)ids[k]);
    }
    put_sub(&b, 2, &ts);
    free(ts.p);
    buf ns = {0};
    put_key(&ns, 1, 2);
    put_varint(&ns, 8);
    put(&ns, "identity", 8);
    for (unsigned f = 3; f <= 5; f++) {
        put_key(&ns, f, 0);
        put_varint(&ns, 1);
    }
    put_sub(&b, 3, &ns);
    free(ns.p);
    mgpu_status s = write_file(out, b.p, b.n, err);
    free(b.p);
    return s;
}

static mgpu_status t5_json(const synth_piece *p, size_t n, const char *out, mgpu_error *err)
{
    json_t *vocab = json_array(), *added = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(vocab, json_pack("[s,f]", p[i].piece, (double)p[i].score));
        if (p[i].type != SYNTH_PIECE_NORMAL)
            json_array_append_new(
                added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", (int)i, "content",
                                 p[i].piece, "single_word", 0, "lstrip", 0, "rstrip", 0,
                                 "normalized", 0, "special", 1));
    }
    int unk = find_piece(p, n, NULL, SYNTH_PIECE_UNKNOWN);
    json_t *root = json_pack(
        "{s:s,s:n,s:n,s:o,s:{s:s,s:[{s:s,s:{s:s},s:s}]},"
        "s:{s:s,s:s,s:s,s:b},s:{s:s,s:i,s:o,s:b}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer", "type",
        "Sequence", "normalizers", "type", "Replace", "pattern", "Regex", " {2,}", "content", " ",
        "pre_tokenizer", "type", "Metaspace", "replacement", "\xE2\x96\x81", "prepend_scheme",
        "always", "split", 1, "model", "type", "Unigram", "unk_id", unk, "vocab", vocab,
        "byte_fallback", 0);
    return write_json(out, root, err);
}

static mgpu_status t5_gguf(const synth_piece *p, size_t n, const char *out, mgpu_error *err)
{
    mgpu_gguf_value *items = calloc(n, sizeof *items);
    float *scores = malloc(n * sizeof *scores);
    int32_t *types = malloc(n * sizeof *types);
    for (size_t i = 0; i < n; i++) {
        items[i].type = MGPU_GGUF_STRING;
        items[i].string.data = p[i].piece;
        items[i].string.length = strlen(p[i].piece);
        scores[i] = p[i].score;
        types[i] = p[i].type;
    }
    mgpu_gguf_writer *w = NULL;
    mgpu_status s = mgpu_gguf_writer_create(out, &w, err);
    mgpu_gguf_value v;
    if (s == MGPU_OK)
        s = mgpu_gguf_writer_add_string(w, "general.architecture", "t5encoder", err);
    if (s == MGPU_OK)
        s = mgpu_gguf_writer_add_string(w, "tokenizer.ggml.model", "t5", err);
    if (s == MGPU_OK) {
        v = (mgpu_gguf_value){.type = MGPU_GGUF_ARRAY};
        v.array.elem_type = MGPU_GGUF_STRING;
        v.array.count = n;
        v.array.items = items;
        s = mgpu_gguf_writer_add_kv(w, "tokenizer.ggml.tokens", &v, err);
    }
    if (s == MGPU_OK) {
        v = (mgpu_gguf_value){.type = MGPU_GGUF_ARRAY};
        v.array.elem_type = MGPU_GGUF_FLOAT32;
        v.array.count = n;
        v.array.raw = scores;
        s = mgpu_gguf_writer_add_kv(w, "tokenizer.ggml.scores", &v, err);
    }
    if (s == MGPU_OK) {
        v = (mgpu_gguf_value){.type = MGPU_GGUF_ARRAY};
        v.array.elem_type = MGPU_GGUF_INT32;
        v.array.count = n;
        v.array.raw = types;
        s = mgpu_gguf_writer_add_kv(w, "tokenizer.ggml.token_type", &v, err);
    }
    const char *idkeys[3] = {"tokenizer.ggml.unknown_token_id", "tokenizer.ggml.eos_token_id",
                             "tokenizer.ggml.padding_token_id"};
    int ids[3] = {find_piece(p, n, NULL, SYNTH_PIECE_UNKNOWN), find_piece(p, n, "</s>", 0),
                  find_piece(p, n, "<pad>", 0)};
    for (int k = 0; k < 3 && s == MGPU_OK; k++)
        if (ids[k] >= 0)
            s = mgpu_gguf_writer_add_u32(w, idkeys[k], (uint32_t)ids[k], err);
    const char *bkeys[2] = {"tokenizer.ggml.add_space_prefix",
                            "tokenizer.ggml.remove_extra_whitespaces"};
    for (int k = 0; k < 2 && s == MGPU_OK; k++) {
        v = (mgpu_gguf_value){.type = MGPU_GGUF_BOOL, .b = true};
        s = mgpu_gguf_writer_add_kv(w, bkeys[k], &v, err);
    }
    if (s == MGPU_OK)
        s = mgpu_gguf_writer_finish(w, err);
    else if (w)
        mgpu_gguf_writer_abort(w);
    free(items);
    free(scores);
    free(types);
    return s;
}

mgpu_status synth_tok_t5_write(const synth_piece *pieces, size_t n, synth_tok_format format,
                               const char *out, mgpu_error *err)
{
    switch (format) {
    case SYNTH_TOK_SPIECE: return t5_spiece(pieces, n, out, err);
    case SYNTH_TOK_JSON: return t5_json(pieces, n, out, err);
    case SYNTH_TOK_GGUF: return t5_gguf(pieces, n, out, err);
    default: return fail(err, MGPU_ERR_ARGUMENT, "%s: T5 is written as spiece, json or gguf", out);
    }
}

#define META "\xE2\x96\x81"

const synth_piece *synth_tok_t5_default_pieces(size_t *n_out)
{
    static synth_piece pieces[1024];
    static char storage[64 * 1024];
    static size_t n;
    if (n) {
        *n_out = n;
        return pieces;
    }
    size_t used = 0;
    pieces[n++] = (synth_piece){"<pad>", 0, SYNTH_PIECE_CONTROL};
    pieces[n++] = (synth_piece){"</s>", 0, SYNTH_PIECE_CONTROL};
    pieces[n++] = (synth_piece){"<unk>", 0, SYNTH_PIECE_UNKNOWN};
    pieces[n++] = (synth_piece){META, -2.5f, SYNTH_PIECE_NORMAL};
    const char *singles = "etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,'!?-:;\"()/&";
    for (size_t i = 0; singles[i]; i++) {
        char *s = storage + used;
        s[0] = singles[i];
        s[1] = 0;
        used += 2;
        pieces[n++] = (synth_piece){s, -6.0f - 0.05f * (float)i, SYNTH_PIECE_NORMAL};
    }
    static const char *const suffixes[] = {"s", "ing", "ed", "er", "ly", "est"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        if (strlen(suffixes[i]) == 1)
            continue; /* already a single character piece */
        char *s = storage + used;
        used += (size_t)sprintf(s, "%s", suffixes[i]) + 1;
        pieces[n++] = (synth_piece){s, -5.0f - 0.1f * (float)i, SYNTH_PIECE_NORMAL};
    }
    for (int i = 0; i < n_words; i++) {
        /* "▁word": a word at the start or after a space; log-rank scores. */
        char *s = storage + used;
        used += (size_t)sprintf(s, META "%s", words[i]) + 1;
        float score = -3.0f - (float)log(1.0 + i);
        pieces[n++] = (synth_piece){s, score, SYNTH_PIECE_NORMAL};
        if (strlen(words[i]) > 1) {
            /* "word" inside a longer word, less likely than after a space */
            s = storage + used;
            used += (size_t)sprintf(s, "%s", words[i]) + 1;
            pieces[n++] = (synth_piece){s, score - 4.0f, SYNTH_PIECE_NORMAL};
        }
    }
    *n_out = n;
    return pieces;
}

mgpu_status synth_tok_write_default(const char *kind, synth_tok_format format, const char *out,
                                    mgpu_error *err)
{
    if (strcmp(kind, "clip") == 0) {
        size_t n;
        char **m = synth_tok_clip_default_merges(&n);
        if (!m)
            return fail(err, MGPU_ERR_NO_MEMORY, "%s: out of memory", out);
        mgpu_status s = synth_tok_clip_write((const char *const *)m, n, format, out, err);
        synth_tok_free_merges(m, n);
        return s;
    }
    if (strcmp(kind, "t5") == 0) {
        size_t n;
        const synth_piece *p = synth_tok_t5_default_pieces(&n);
        return synth_tok_t5_write(p, n, format, out, err);
    }
    return fail(err, MGPU_ERR_ARGUMENT, "unknown tokenizer kind \"%s\" (clip or t5)", kind);
}
