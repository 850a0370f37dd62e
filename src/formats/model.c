/* The model view over safetensors and GGUF files; see mgpu/model.h. */
#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/arena.h"
#include "core/error.h"
#include "core/file.h"
#include "formats/arch.h"
#include "mgpu/gguf.h"
#include "mgpu/model.h"
#include "mgpu/safetensors.h"

enum { INDEX_MAX_BYTES = 64 * 1024 * 1024, MAX_FILES = 4096 };

typedef struct source_file {
    const char *path;
    const char *hint; /* component name from a diffusers subfolder, or "" */
} source_file;

struct mgpu_model {
    mgpu_arena arena;
    mgpu_model_file *files;
    mgpu_safetensors **safetensors; /* per file, NULL for GGUF */
    mgpu_gguf **ggufs;              /* per file, NULL for safetensors */
    size_t file_count;
    mgpu_model_tensor *tensors;
    size_t tensor_count;
    const mgpu_model_tensor **by_name; /* by (component, stripped name) */
    mgpu_model_module *modules;
    size_t module_count;
    mgpu_model_block *blocks;
    size_t block_count;
    mgpu_model_component *components;
    size_t component_count;
    const char **meta_keys;
    const char **meta_values;
    size_t meta_count, meta_capacity;
};

/* ---- file discovery --------------------------------------------------- */

typedef struct file_list {
    source_file *items;
    size_t count, capacity;
} file_list;

static mgpu_status list_add(mgpu_model *m, file_list *l, const char *path, const char *hint,
                            mgpu_error *err)
{
    if (l->count == MAX_FILES)
        return mgpu_error_set(err, MGPU_ERR_UNSUPPORTED, "%s: more than %d model files", path,
                              MAX_FILES);
    if (l->count == l->capacity) {
        size_t cap = l->capacity ? 2 * l->capacity : 8;
        source_file *p = realloc(l->items, cap * sizeof *p);
        if (!p)
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
        l->items = p;
        l->capacity = cap;
    }
    l->items[l->count].path = mgpu_arena_strdup(&m->arena, path);
    l->items[l->count].hint = mgpu_arena_strdup(&m->arena, hint);
    if (!l->items[l->count].path || !l->items[l->count].hint)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    l->count++;
    return MGPU_OK;
}

static char *join_path(mgpu_model *m, const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = mgpu_arena_alloc(&m->arena, a + b + 2);
    if (p) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static mgpu_status add_metadata(mgpu_model *m, const char *key, const char *value,
                                mgpu_error *err)
{
    if (m->meta_count == m->meta_capacity) {
        size_t cap = m->meta_capacity ? 2 * m->meta_capacity : 16;
        const char **k = mgpu_arena_alloc(&m->arena, cap * sizeof *k);
        const char **v = mgpu_arena_alloc(&m->arena, cap * sizeof *v);
        if (!k || !v)
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
        if (m->meta_count) {
            memcpy(k, m->meta_keys, m->meta_count * sizeof *k);
            memcpy(v, m->meta_values, m->meta_count * sizeof *v);
        }
        m->meta_keys = k;
        m->meta_values = v;
        m->meta_capacity = cap;
    }
    m->meta_keys[m->meta_count] = mgpu_arena_strdup(&m->arena, key);
    m->meta_values[m->meta_count] = mgpu_arena_strdup(&m->arena, value);
    if (!m->meta_keys[m->meta_count] || !m->meta_values[m->meta_count])
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    m->meta_count++;
    return MGPU_OK;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A sharded checkpoint: the index maps every tensor name to its shard. The
 * shards are returned in the order they first appear; that each tensor
 * really is in its shard is checked once the shards are open. */
static mgpu_status read_index(mgpu_model *m, const char *path, const char *hint, file_list *l,
                              json_t **weight_map, mgpu_error *err)
{
    char *text;
    uint64_t size;
    mgpu_status s = mgpu_file_read_all(path, INDEX_MAX_BYTES, &text, &size, err);
    if (s != MGPU_OK)
        return s;
    json_error_t jerr;
    json_t *root = json_loadb(text, (size_t)size, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s",
                              path, jerr.line, jerr.column, jerr.text);
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        json_decref(root);
        return mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: no 'weight_map' object of tensor names",
                              path);
    }
    json_t *meta = json_object_get(root, "metadata");
    if (json_is_object(meta)) {
        const char *key;
        json_t *value;
        json_object_foreach(meta, key, value)
        {
            char *v = json_is_string(value) ? NULL : json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
            s = add_metadata(m, key, v ? v : json_string_value(value), err);
            free(v);
            if (s != MGPU_OK) {
                json_decref(root);
                return s;
            }
        }
    }
    /* The folder of the index holds the shards. */
    const char *slash = strrchr(path, '/');
    char *dir = slash ? mgpu_arena_strndup(&m->arena, path, (size_t)(slash - path))
                      : mgpu_arena_strdup(&m->arena, ".");
    if (!dir) {
        json_decref(root);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    size_t first = l->count;
    const char *name;
    json_t *shard;
    json_object_foreach(map, name, shard)
    {
        const char *file = json_string_value(shard);
        if (!file || !*file || strchr(file, '/') || strcmp(file, "..") == 0) {
            s = mgpu_error_set(err, MGPU_ERR_FORMAT,
                               "%s: weight_map entry '%s' is not a file name in the same folder",
                               path, name);
            json_decref(root);
            return s;
        }
        char *shard_path = join_path(m, dir, file);
        if (!shard_path) {
            json_decref(root);
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
        }
        bool seen = false;
        for (size_t i = first; i < l->count && !seen; i++)
            seen = strcmp(l->items[i].path, shard_path) == 0;
        if (!seen && (s = list_add(m, l, shard_path, hint, err)) != MGPU_OK) {
            json_decref(root);
            return s;
        }
    }
    *weight_map = root;
    return MGPU_OK;
}

/* Model files directly in `dir` (an index if there is one, else every
 * .safetensors and .gguf, sorted by name). */
static mgpu_status scan_folder(mgpu_model *m, const char *dir, const char *hint, file_list *l,
                               json_t **indexes, size_t *index_count, mgpu_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot read folder", dir);
    const char *names[MAX_FILES];
    const char *index = NULL;
    size_t n = 0;
    struct dirent *e;
    mgpu_status s = MGPU_OK;
    while ((e = readdir(d)) != NULL && s == MGPU_OK) {
        if (e->d_name[0] == '.')
            continue;
        bool model = has_suffix(e->d_name, ".safetensors") || has_suffix(e->d_name, ".gguf");
        bool is_index = has_suffix(e->d_name, ".safetensors.index.json");
        if (!model && !is_index)
            continue;
        char *copy = mgpu_arena_strdup(&m->arena, e->d_name);
        if (!copy)
            s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
        else if (is_index && index)
            s = mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: more than one .safetensors.index.json",
                               dir);
        else if (is_index)
            index = copy;
        else if (n == MAX_FILES)
            s = mgpu_error_set(err, MGPU_ERR_UNSUPPORTED, "%s: more than %d model files", dir,
                               MAX_FILES);
        else
            names[n++] = copy;
    }
    closedir(d);
    if (s != MGPU_OK)
        return s;
    if (index) {
        char *p = join_path(m, dir, index);
        if (!p)
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
        s = read_index(m, p, hint, l, &indexes[*index_count], err);
        if (s == MGPU_OK)
            (*index_count)++;
        return s;
    }
    qsort(names, n, sizeof names[0], compare_strings);
    for (size_t i = 0; i < n && s == MGPU_OK; i++) {
        char *p = join_path(m, dir, names[i]);
        s = p ? list_add(m, l, p, hint, err) : mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    return s;
}

/* ---- opening ------------------------------------------------------------ */

static mgpu_status open_file(mgpu_model *m, size_t i, const source_file *src, mgpu_error *err)
{
    unsigned char magic[9] = {0};
    FILE *f = fopen(src->path, "rb");
    if (!f)
        return mgpu_error_set(err, MGPU_ERR_NOT_FOUND, "%s: cannot open", src->path);
    size_t got = fread(magic, 1, sizeof magic, f);
    fclose(f);
    /* Neither GGUF's magic nor a safetensors header ("{" after the length):
     * say so plainly rather than report a nonsense header length. */
    if ((got < 4 || memcmp(magic, "GGUF", 4) != 0) && (got < 9 || magic[8] != '{'))
        return mgpu_error_set(err, MGPU_ERR_FORMAT,
                              "%s: not a safetensors or GGUF file (no GGUF magic, no JSON header)",
                              src->path);
    mgpu_model_file *mf = &m->files[i];
    mf->path = src->path;
    mgpu_status s;
    if (got >= 4 && memcmp(magic, "GGUF", 4) == 0) {
        mf->format = MGPU_FORMAT_GGUF;
        s = mgpu_gguf_open(src->path, &m->ggufs[i], err);
        if (s == MGPU_OK) {
            mf->bytes = mgpu_gguf_file_bytes(m->ggufs[i]);
            mf->gguf_version = mgpu_gguf_version(m->ggufs[i]);
        }
    } else {
        mf->format = MGPU_FORMAT_SAFETENSORS;
        s = mgpu_safetensors_open(src->path, &m->safetensors[i], err);
        if (s == MGPU_OK)
            mf->bytes = mgpu_safetensors_file_bytes(m->safetensors[i]);
    }
    return s;
}

static void render_gguf_value(const mgpu_gguf_value *v, char *buf, size_t size)
{
    switch (v->type) {
    case MGPU_GGUF_UINT8:
    case MGPU_GGUF_UINT16:
    case MGPU_GGUF_UINT32:
    case MGPU_GGUF_UINT64: snprintf(buf, size, "%" PRIu64, v->u64); break;
    case MGPU_GGUF_INT8:
    case MGPU_GGUF_INT16:
    case MGPU_GGUF_INT32:
    case MGPU_GGUF_INT64: snprintf(buf, size, "%" PRId64, v->i64); break;
    case MGPU_GGUF_FLOAT32:
    case MGPU_GGUF_FLOAT64: snprintf(buf, size, "%.9g", v->f64); break;
    case MGPU_GGUF_BOOL: snprintf(buf, size, "%s", v->b ? "true" : "false"); break;
    case MGPU_GGUF_STRING: snprintf(buf, size, "%s", v->string.data); break;
    case MGPU_GGUF_ARRAY: {
        mgpu_gguf_type et = v->array.elem_type;
        if (et == MGPU_GGUF_STRING || et == MGPU_GGUF_ARRAY || v->array.count > 16) {
            snprintf(buf, size, "[%s array of %" PRIu64 "]", mgpu_gguf_type_name_of(et),
                     v->array.count);
            break;
        }
        size_t used = (size_t)snprintf(buf, size, "[");
        for (uint64_t i = 0; i < v->array.count && used < size; i++) {
            mgpu_gguf_value e;
            char item[64];
            mgpu_gguf_array_get(v, i, &e);
            render_gguf_value(&e, item, sizeof item);
            used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", item);
        }
        if (used < size)
            snprintf(buf + used, size - used, "]");
        break;
    }
    default: snprintf(buf, size, "?"); break;
    }
}

static mgpu_status collect_metadata(mgpu_model *m, size_t i, mgpu_error *err)
{
    mgpu_status s = MGPU_OK;
    if (m->safetensors[i]) {
        for (size_t k = 0; k < mgpu_safetensors_metadata_count(m->safetensors[i]) && !s; k++) {
            const char *key, *value;
            mgpu_safetensors_metadata(m->safetensors[i], k, &key, &value);
            s = add_metadata(m, key, value, err);
        }
    } else {
        char buf[1024];
        for (size_t k = 0; k < mgpu_gguf_kv_count(m->ggufs[i]) && !s; k++) {
            render_gguf_value(mgpu_gguf_kv_value(m->ggufs[i], k), buf, sizeof buf);
            s = add_metadata(m, mgpu_gguf_kv_key(m->ggufs[i], k), buf, err);
        }
    }
    return s;
}

/* ---- grouping ---------------------------------------------------------- */

static int compare_by_component_name(const void *a, const void *b)
{
    const mgpu_model_tensor *x = *(const mgpu_model_tensor *const *)a;
    const mgpu_model_tensor *y = *(const mgpu_model_tensor *const *)b;
    if (x->component != y->component)
        return x->component < y->component ? -1 : 1;
    return strcmp(x->name, y->name);
}

typedef struct find_context {
    const mgpu_model *m;
    uint32_t component;
} find_context;

static const mgpu_model_tensor *find_in_component(const mgpu_model *m, uint32_t component,
                                                  const char *name)
{
    size_t lo = 0, hi = m->tensor_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const mgpu_model_tensor *t = m->by_name[mid];
        int c = t->component != component ? (t->component < component ? -1 : 1)
                                          : strcmp(t->name, name);
        if (c == 0)
            return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const mgpu_tensor_info *probe_find(const void *context, const char *name)
{
    const find_context *fc = context;
    const mgpu_model_tensor *t = find_in_component(fc->m, fc->component, name);
    return t ? &t->info : NULL;
}

/* Grouping key for modules and blocks: a name within a component, with the
 * index of the first tensor that has it so groups keep file order. */
typedef struct group_key {
    uint32_t component;
    const char *name;
    size_t name_length;
    size_t first;   /* smallest member index */
    size_t member;  /* this entry's member index */
    uint64_t index; /* block number (blocks only) */
    size_t container_length;
} group_key;

static int compare_group_key(const void *a, const void *b)
{
    const group_key *x = a, *y = b;
    if (x->component != y->component)
        return x->component < y->component ? -1 : 1;
    size_t n = x->name_length < y->name_length ? x->name_length : y->name_length;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    if (x->name_length != y->name_length)
        return x->name_length < y->name_length ? -1 : 1;
    return x->member < y->member ? -1 : x->member > y->member;
}

static int compare_first(const void *a, const void *b)
{
    const group_key *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

static mgpu_status build_modules(mgpu_model *m, mgpu_error *err)
{
    size_t n = m->tensor_count;
    group_key *keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const mgpu_model_tensor *t = &m->tensors[i];
        keys[i] = (group_key){.component = t->component,
                              .name = t->name,
                              .name_length = mgpu_module_name_length(t->name),
                              .member = i};
    }
    qsort(keys, n, sizeof *keys, compare_group_key);
    /* Number the groups, then order them by first appearance. */
    size_t groups = 0;
    for (size_t i = 0; i < n; i++) {
        bool same = i > 0 && keys[i].component == keys[i - 1].component &&
                    keys[i].name_length == keys[i - 1].name_length &&
                    memcmp(keys[i].name, keys[i - 1].name, keys[i].name_length) == 0;
        if (!same)
            groups++;
        keys[i].index = groups - 1;
    }
    group_key *heads = malloc((groups ? groups : 1) * sizeof *heads);
    size_t *rank = malloc((groups ? groups : 1) * sizeof *rank);
    uint32_t *members = mgpu_arena_alloc(&m->arena, (n ? n : 1) * sizeof *members);
    m->modules = mgpu_arena_alloc(&m->arena, (groups ? groups : 1) * sizeof *m->modules);
    if (!heads || !rank || !members || !m->modules) {
        free(keys);
        free(heads);
        free(rank);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        if (i == 0 || keys[i].index != keys[i - 1].index) {
            heads[keys[i].index] = keys[i];
            heads[keys[i].index].first = keys[i].member; /* sorted by member within a group */
            heads[keys[i].index].member = keys[i].index;
        }
    qsort(heads, groups, sizeof *heads, compare_first);
    for (size_t g = 0; g < groups; g++)
        rank[heads[g].member] = g;
    m->module_count = groups;
    /* Members of each module are contiguous in `members`, in file order. */
    size_t *start = calloc(groups + 1, sizeof *start);
    if (!start) {
        free(keys);
        free(heads);
        free(rank);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        start[rank[keys[i].index] + 1]++;
    for (size_t g = 0; g < groups; g++)
        start[g + 1] += start[g];
    mgpu_status s = MGPU_OK;
    for (size_t g = 0; g < groups && s == MGPU_OK; g++) {
        mgpu_model_module *mod = &m->modules[g];
        mod->name = mgpu_arena_strndup(&m->arena, heads[g].name, heads[g].name_length);
        mod->component = heads[g].component;
        mod->block = -1;
        mod->tensors = members + start[g];
        if (!mod->name)
            s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < n && s == MGPU_OK; i++) {
        size_t g = rank[keys[i].index];
        mgpu_model_module *mod = &m->modules[g];
        members[start[g] + mod->tensor_count++] = (uint32_t)keys[i].member;
        m->tensors[keys[i].member].module = (uint32_t)g;
        mod->nbytes += m->tensors[keys[i].member].info.nbytes;
        mod->n_params += m->tensors[keys[i].member].info.n_elems;
    }
    free(start);
    free(keys);
    free(heads);
    free(rank);
    return s;
}

/* The block of a module: its name up to the first all-digit component, as
 * in "double_blocks.7" or "text_model.encoder.layers.3". */
static bool block_of(const char *name, size_t *block_length, size_t *container_length,
                     uint64_t *index)
{
    const char *p = name;
    while (*p) {
        const char *end = strchr(p, '.');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        bool digits = len > 0 && len <= 9 && p != name;
        for (size_t i = 0; i < len && digits; i++)
            digits = p[i] >= '0' && p[i] <= '9';
        if (digits && end) { /* a block holds something after its number */
            *container_length = (size_t)(p - name) - 1;
            *block_length = (size_t)(p - name) + len;
            *index = strtoull(p, NULL, 10);
            return true;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

static int compare_block_order(const void *a, const void *b)
{
    const group_key *x = a, *y = b;
    if (x->component != y->component)
        return x->component < y->component ? -1 : 1;
    if (x->first != y->first) /* container's first appearance */
        return x->first < y->first ? -1 : 1;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return 0;
}

static mgpu_status build_blocks(mgpu_model *m, mgpu_error *err)
{
    size_t n = m->module_count, count = 0;
    group_key *keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t block_length, container_length;
        uint64_t index;
        if (block_of(m->modules[i].name, &block_length, &container_length, &index))
            keys[count++] = (group_key){.component = m->modules[i].component,
                                        .name = m->modules[i].name,
                                        .name_length = block_length,
                                        .container_length = container_length,
                                        .index = index,
                                        .member = i};
    }
    qsort(keys, count, sizeof *keys, compare_group_key);
    /* One entry per distinct block, with its module count. */
    size_t blocks = 0;
    for (size_t i = 0; i < count; i++) {
        bool same = i > 0 && keys[i].component == keys[blocks - 1].component &&
                    keys[i].name_length == keys[blocks - 1].name_length &&
                    memcmp(keys[i].name, keys[blocks - 1].name, keys[i].name_length) == 0;
        if (same) {
            keys[blocks - 1].first++; /* module count, for now */
        } else {
            keys[blocks] = keys[i];
            keys[blocks].first = 1;
            blocks++;
        }
    }
    /* A container is a run of blocks when it has at least two numbers and
     * one of them holds two or more modules; that keeps `time_embed.0` or
     * `adaLN_modulation.1` from passing for blocks. */
    bool *keep = calloc(blocks ? blocks : 1, sizeof *keep);
    size_t *container_first = calloc(blocks ? blocks : 1, sizeof *container_first);
    if (!keep || !container_first) {
        free(keys);
        free(keep);
        free(container_first);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < blocks;) {
        size_t j = i, numbers = 0, big = 0, first = SIZE_MAX;
        while (j < blocks && keys[j].component == keys[i].component &&
               keys[j].container_length == keys[i].container_length &&
               memcmp(keys[j].name, keys[i].name, keys[i].container_length) == 0) {
            numbers++;
            big += keys[j].first >= 2;
            if (keys[j].member < first)
                first = keys[j].member;
            j++;
        }
        for (size_t k = i; k < j; k++) {
            keep[k] = numbers >= 2 && big >= 1;
            container_first[k] = first;
        }
        i = j;
    }
    size_t kept = 0;
    for (size_t i = 0; i < blocks; i++)
        if (keep[i]) {
            keys[kept] = keys[i];
            keys[kept].first = container_first[i];
            kept++;
        }
    free(keep);
    free(container_first);
    qsort(keys, kept, sizeof *keys, compare_block_order);
    m->blocks = mgpu_arena_alloc(&m->arena, (kept ? kept : 1) * sizeof *m->blocks);
    if (!m->blocks) {
        free(keys);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t b = 0; b < kept; b++) {
        m->blocks[b].name = mgpu_arena_strndup(&m->arena, keys[b].name, keys[b].name_length);
        m->blocks[b].component = keys[b].component;
        if (!m->blocks[b].name) {
            free(keys);
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
        }
    }
    m->block_count = kept;
    /* Attach modules: a module is in block b when its name starts with the
     * block's name followed by a dot. Blocks are few, keys sorted: search. */
    for (size_t i = 0; i < n; i++) {
        mgpu_model_module *mod = &m->modules[i];
        size_t block_length, container_length;
        uint64_t index;
        if (!block_of(mod->name, &block_length, &container_length, &index))
            continue;
        for (size_t b = 0; b < kept; b++)
            if (m->blocks[b].component == mod->component &&
                strlen(m->blocks[b].name) == block_length &&
                memcmp(m->blocks[b].name, mod->name, block_length) == 0) {
                mod->block = (int32_t)b;
                m->blocks[b].module_count++;
                m->blocks[b].nbytes += mod->nbytes;
                m->blocks[b].n_params += mod->n_params;
                break;
            }
    }
    free(keys);
    return MGPU_OK;
}

/* ---- assembling -------------------------------------------------------- */

static mgpu_status add_tensors(mgpu_model *m, size_t file, const source_file *src,
                               size_t *next, mgpu_error *err)
{
    size_t count = m->safetensors[file] ? mgpu_safetensors_tensor_count(m->safetensors[file])
                                        : mgpu_gguf_tensor_count(m->ggufs[file]);
    const char *const *prefixes = mgpu_known_prefixes();
    for (size_t i = 0; i < count; i++) {
        const mgpu_tensor_info *info = m->safetensors[file]
                                           ? mgpu_safetensors_tensor(m->safetensors[file], i)
                                           : mgpu_gguf_tensor(m->ggufs[file], i);
        mgpu_model_tensor *t = &m->tensors[(*next)++];
        t->info = *info;
        t->file = (uint32_t)file;
        const char *best = "";
        for (int p = 0; prefixes[p]; p++)
            if (strncmp(info->name, prefixes[p], strlen(prefixes[p])) == 0 &&
                strlen(prefixes[p]) > strlen(best) && strlen(info->name) > strlen(prefixes[p]))
                best = prefixes[p];
        t->name = info->name + strlen(best);
        /* Component: the folder hint plus the prefix. */
        size_t c;
        for (c = 0; c < m->component_count; c++) {
            const char *cp = m->components[c].prefix;
            size_t hl = strlen(src->hint);
            if (strncmp(cp, src->hint, hl) == 0 && strcmp(cp + hl, best) == 0)
                break;
        }
        if (c == m->component_count) {
            size_t hl = strlen(src->hint), bl = strlen(best);
            char *prefix = mgpu_arena_alloc(&m->arena, hl + bl + 1);
            if (!prefix)
                return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
            memcpy(prefix, src->hint, hl);
            memcpy(prefix + hl, best, bl + 1);
            m->components[c].prefix = prefix;
            m->component_count++;
        }
        t->component = (uint32_t)c;
    }
    return MGPU_OK;
}

static mgpu_status check_index(mgpu_model *m, json_t *index, mgpu_error *err)
{
    json_t *map = json_object_get(index, "weight_map");
    const char *name;
    json_t *shard;
    json_object_foreach(map, name, shard)
    {
        const char *file = json_string_value(shard);
        bool found = false;
        for (size_t i = 0; i < m->file_count && !found; i++) {
            const char *base = strrchr(m->files[i].path, '/');
            base = base ? base + 1 : m->files[i].path;
            if (strcmp(base, file) != 0)
                continue;
            if (!m->safetensors[i])
                return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                      "%s: shard listed in a safetensors index is not safetensors",
                                      m->files[i].path);
            if (!mgpu_safetensors_find(m->safetensors[i], name))
                return mgpu_error_set(err, MGPU_ERR_FORMAT,
                                      "%s: tensor '%s' listed in the index is not in this shard",
                                      m->files[i].path, name);
            found = true;
        }
    }
    return MGPU_OK;
}

mgpu_status mgpu_model_open(const char *path, mgpu_model **out, mgpu_error *err)
{
    *out = NULL;
    mgpu_model *m = calloc(1, sizeof *m);
    if (!m)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    file_list files = {0};
    json_t *indexes[64] = {0};
    size_t index_count = 0;
    mgpu_status s = MGPU_OK;
    struct stat st;
    if (stat(path, &st) != 0) {
        s = mgpu_error_set(err, MGPU_ERR_NOT_FOUND, "%s: no such file or folder", path);
    } else if (S_ISDIR(st.st_mode)) {
        s = scan_folder(m, path, "", &files, indexes, &index_count, err);
        /* A diffusers pipeline keeps each component in its own subfolder. */
        DIR *d = s == MGPU_OK ? opendir(path) : NULL;
        const char *subs[64];
        size_t nsub = 0;
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL && s == MGPU_OK) {
            if (e->d_name[0] == '.')
                continue;
            char *sub = join_path(m, path, e->d_name);
            struct stat sst;
            if (sub && stat(sub, &sst) == 0 && S_ISDIR(sst.st_mode) && nsub < 64)
                subs[nsub++] = mgpu_arena_strdup(&m->arena, e->d_name);
        }
        if (d)
            closedir(d);
        qsort(subs, nsub, sizeof subs[0], compare_strings);
        for (size_t i = 0; i < nsub && s == MGPU_OK; i++) {
            char *sub = join_path(m, path, subs[i]);
            char *hint = mgpu_arena_alloc(&m->arena, strlen(subs[i]) + 2);
            if (!sub || !hint) {
                s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
                break;
            }
            sprintf(hint, "%s/", subs[i]);
            if (index_count < 64)
                s = scan_folder(m, sub, hint, &files, indexes, &index_count, err);
        }
        if (s == MGPU_OK && files.count == 0)
            s = mgpu_error_set(err, MGPU_ERR_NOT_FOUND,
                               "%s: no .safetensors, .gguf or .safetensors.index.json files", path);
    } else if (has_suffix(path, ".json")) {
        s = read_index(m, path, "", &files, &indexes[0], err);
        if (s == MGPU_OK)
            index_count = 1;
    } else {
        s = list_add(m, &files, path, "", err);
    }

    if (s == MGPU_OK) {
        m->files = mgpu_arena_alloc(&m->arena, files.count * sizeof *m->files);
        m->safetensors = mgpu_arena_alloc(&m->arena, files.count * sizeof *m->safetensors);
        m->ggufs = mgpu_arena_alloc(&m->arena, files.count * sizeof *m->ggufs);
        if (!m->files || !m->safetensors || !m->ggufs)
            s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    size_t total = 0;
    for (size_t i = 0; i < files.count && s == MGPU_OK; i++) {
        s = open_file(m, i, &files.items[i], err);
        if (s == MGPU_OK) {
            m->file_count++;
            total += m->safetensors[i] ? mgpu_safetensors_tensor_count(m->safetensors[i])
                                       : mgpu_gguf_tensor_count(m->ggufs[i]);
            s = collect_metadata(m, i, err);
        }
    }
    for (size_t i = 0; i < index_count && s == MGPU_OK; i++)
        s = check_index(m, indexes[i], err);
    if (s == MGPU_OK) {
        m->tensors = mgpu_arena_alloc(&m->arena, (total ? total : 1) * sizeof *m->tensors);
        m->by_name = mgpu_arena_alloc(&m->arena, (total ? total : 1) * sizeof *m->by_name);
        /* at most one component per (file hint, prefix) pair */
        size_t max_components = files.count * 16 + 16;
        m->components = mgpu_arena_alloc(&m->arena, max_components * sizeof *m->components);
        if (!m->tensors || !m->by_name || !m->components)
            s = mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    size_t next = 0;
    for (size_t i = 0; i < m->file_count && s == MGPU_OK; i++)
        s = add_tensors(m, i, &files.items[i], &next, err);
    if (s == MGPU_OK) {
        m->tensor_count = next;
        for (size_t i = 0; i < next; i++)
            m->by_name[i] = &m->tensors[i];
        qsort(m->by_name, next, sizeof *m->by_name, compare_by_component_name);
        for (size_t i = 1; i < next && s == MGPU_OK; i++) {
            const mgpu_model_tensor *a = m->by_name[i - 1], *b = m->by_name[i];
            if (a->component == b->component && strcmp(a->name, b->name) == 0)
                s = mgpu_error_set(err, MGPU_ERR_FORMAT, "%s: tensor '%s' also appears in %s",
                                   m->files[b->file].path, b->info.name, m->files[a->file].path);
        }
    }
    if (s == MGPU_OK)
        s = build_modules(m, err);
    if (s == MGPU_OK)
        s = build_blocks(m, err);
    for (size_t c = 0; c < m->component_count && s == MGPU_OK; c++) {
        find_context fc = {m, (uint32_t)c};
        mgpu_arch_probe probe = {&fc, probe_find};
        m->components[c].arch = mgpu_arch_detect(&probe, &m->components[c].arch_reason);
    }
    for (size_t i = 0; i < m->module_count && s == MGPU_OK; i++) {
        mgpu_model_module *mod = &m->modules[i];
        const mgpu_tensor_info *weight = NULL;
        bool has_bias = false;
        size_t n = strlen(mod->name);
        for (uint32_t k = 0; k < mod->tensor_count; k++) {
            const mgpu_model_tensor *t = &m->tensors[mod->tensors[k]];
            const char *rest = t->name + n;
            if (strcmp(rest, ".weight") == 0 || strcmp(rest, ".scale") == 0 ||
                strcmp(rest, "_weight") == 0 || (*rest == '\0'))
                weight = &t->info;
            if (strcmp(rest, ".bias") == 0 || strcmp(rest, "_bias") == 0)
                has_bias = true;
        }
        mod->kind = mgpu_module_kind_guess(mod->name, weight, has_bias,
                                           m->components[mod->component].arch);
        mod->role = mgpu_module_role_of(m->components[mod->component].arch, mod->name);
        mgpu_model_component *c = &m->components[mod->component];
        c->module_count++;
        c->tensor_count += mod->tensor_count;
        c->nbytes += mod->nbytes;
        c->n_params += mod->n_params;
    }
    for (size_t b = 0; b < m->block_count && s == MGPU_OK; b++)
        m->components[m->blocks[b].component].block_count++;

    for (size_t i = 0; i < index_count; i++)
        json_decref(indexes[i]);
    free(files.items);
    if (s != MGPU_OK) {
        mgpu_model_close(m);
        return s;
    }
    *out = m;
    return MGPU_OK;
}

void mgpu_model_close(mgpu_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->file_count; i++) {
        mgpu_safetensors_close(m->safetensors[i]);
        mgpu_gguf_close(m->ggufs[i]);
    }
    mgpu_arena_free(&m->arena);
    free(m);
}

size_t mgpu_model_file_count(const mgpu_model *m) { return m->file_count; }
size_t mgpu_model_tensor_count(const mgpu_model *m) { return m->tensor_count; }
size_t mgpu_model_module_count(const mgpu_model *m) { return m->module_count; }
size_t mgpu_model_block_count(const mgpu_model *m) { return m->block_count; }
size_t mgpu_model_component_count(const mgpu_model *m) { return m->component_count; }
size_t mgpu_model_metadata_count(const mgpu_model *m) { return m->meta_count; }

const mgpu_model_file *mgpu_model_file_at(const mgpu_model *m, size_t i)
{
    return i < m->file_count ? &m->files[i] : NULL;
}

const mgpu_model_tensor *mgpu_model_tensor_at(const mgpu_model *m, size_t i)
{
    return i < m->tensor_count ? &m->tensors[i] : NULL;
}

const mgpu_model_module *mgpu_model_module_at(const mgpu_model *m, size_t i)
{
    return i < m->module_count ? &m->modules[i] : NULL;
}

const mgpu_model_block *mgpu_model_block_at(const mgpu_model *m, size_t i)
{
    return i < m->block_count ? &m->blocks[i] : NULL;
}

const mgpu_model_component *mgpu_model_component_at(const mgpu_model *m, size_t i)
{
    return i < m->component_count ? &m->components[i] : NULL;
}

void mgpu_model_metadata_at(const mgpu_model *m, size_t i, const char **key, const char **value)
{
    *key = i < m->meta_count ? m->meta_keys[i] : NULL;
    *value = i < m->meta_count ? m->meta_values[i] : NULL;
}

const mgpu_model_tensor *mgpu_model_find_in(const mgpu_model *m, size_t component,
                                            const char *name)
{
    return component < m->component_count ? find_in_component(m, (uint32_t)component, name)
                                          : NULL;
}

const mgpu_model_tensor *mgpu_model_find(const mgpu_model *m, const char *name)
{
    for (size_t c = 0; c < m->component_count; c++) {
        const mgpu_model_tensor *t = find_in_component(m, (uint32_t)c, name);
        if (t)
            return t;
    }
    for (size_t i = 0; i < m->tensor_count; i++)
        if (strcmp(m->tensors[i].info.name, name) == 0)
            return &m->tensors[i];
    return NULL;
}
