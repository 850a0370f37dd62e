/* See cuda_pool.h. Arenas are few (tens) and blocks per arena a few hundred
 * at most in a diffusion forward pass, so linear scans are cheap next to
 * the kernels they feed; a block is found by binary search on its offset. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_pool.h"

static size_t round_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

void mgpu_pool_init(mgpu_pool *p, size_t arena_bytes, mgpu_pool_grow_fn grow,
                    mgpu_pool_release_fn release, void *ctx)
{
    memset(p, 0, sizeof *p);
    p->arena_bytes = round_up(arena_bytes ? arena_bytes : MGPU_POOL_ALIGN, MGPU_POOL_ALIGN);
    p->grow = grow;
    p->release = release;
    p->ctx = ctx;
}

static void arena_release(mgpu_pool *p, mgpu_pool_arena *a)
{
    p->release(p->ctx, (void *)a->base, a->size);
    p->reserved -= a->size;
    free(a->blocks);
}

void mgpu_pool_destroy(mgpu_pool *p)
{
    for (size_t i = 0; i < p->n_arenas; i++)
        arena_release(p, &p->arenas[i]);
    free(p->arenas);
    p->arenas = NULL;
    p->n_arenas = p->cap_arenas = 0;
    p->in_use = 0;
}

/* Inserts a block at index i of arena a. */
static bool block_insert(mgpu_pool_arena *a, size_t i, mgpu_pool_block b)
{
    if (a->count == a->capacity) {
        size_t cap = a->capacity ? 2 * a->capacity : 16;
        mgpu_pool_block *grown = realloc(a->blocks, cap * sizeof *grown);
        if (!grown)
            return false;
        a->blocks = grown;
        a->capacity = cap;
    }
    memmove(a->blocks + i + 1, a->blocks + i, (a->count - i) * sizeof *a->blocks);
    a->blocks[i] = b;
    a->count++;
    return true;
}

static void block_remove(mgpu_pool_arena *a, size_t i)
{
    memmove(a->blocks + i, a->blocks + i + 1, (a->count - i - 1) * sizeof *a->blocks);
    a->count--;
}

static mgpu_pool_arena *arena_add(mgpu_pool *p, size_t bytes)
{
    if (p->n_arenas == p->cap_arenas) {
        size_t cap = p->cap_arenas ? 2 * p->cap_arenas : 8;
        mgpu_pool_arena *grown = realloc(p->arenas, cap * sizeof *grown);
        if (!grown)
            return NULL;
        p->arenas = grown;
        p->cap_arenas = cap;
    }
    mgpu_pool_block *blocks = malloc(16 * sizeof *blocks);
    if (!blocks)
        return NULL;
    void *base = p->grow(p->ctx, bytes);
    if (!base) {
        free(blocks);
        return NULL;
    }
    mgpu_pool_arena *a = &p->arenas[p->n_arenas++];
    a->base = (uintptr_t)base;
    a->size = bytes;
    a->blocks = blocks;
    a->capacity = 16;
    a->count = 1;
    a->blocks[0] = (mgpu_pool_block){0, bytes, false, false};
    a->used_bytes = 0;
    p->reserved += bytes;
    return a;
}

/* Best fit over every arena: the smallest free block that holds `bytes`,
 * the first one (lowest arena, lowest offset) among equals, so the choice
 * depends only on the pool's history, never on addresses. */
static bool find_fit(mgpu_pool *p, size_t bytes, size_t *arena, size_t *block)
{
    bool found = false;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < p->n_arenas; i++) {
        const mgpu_pool_arena *a = &p->arenas[i];
        if (a->size - a->used_bytes < bytes)
            continue;
        for (size_t j = 0; j < a->count; j++) {
            const mgpu_pool_block *b = &a->blocks[j];
            if (!b->used && b->size >= bytes && b->size < best) {
                best = b->size;
                *arena = i;
                *block = j;
                found = true;
            }
        }
    }
    return found;
}

/* Hands out the first `bytes` of free block j of arena a, splitting off the
 * rest as a free block. */
static void *take(mgpu_pool *p, mgpu_pool_arena *a, size_t j, size_t bytes, bool *reused)
{
    mgpu_pool_block *b = &a->blocks[j];
    if (b->size > bytes) {
        mgpu_pool_block rest = {b->offset + bytes, b->size - bytes, false, b->dirty};
        if (!block_insert(a, j + 1, rest))
            return NULL;
        b = &a->blocks[j]; /* the array may have moved */
        b->size = bytes;
    }
    b->used = true;
    if (reused)
        *reused = b->dirty;
    a->used_bytes += bytes;
    p->in_use += bytes;
    return (void *)(a->base + b->offset);
}

void *mgpu_pool_alloc(mgpu_pool *p, size_t bytes, bool *reused)
{
    if (bytes > SIZE_MAX - MGPU_POOL_ALIGN)
        return NULL;
    bytes = round_up(bytes ? bytes : 1, MGPU_POOL_ALIGN);
    size_t ai, bi;
    if (find_fit(p, bytes, &ai, &bi))
        return take(p, &p->arenas[ai], bi, bytes, reused);
    size_t arena = bytes > p->arena_bytes ? bytes : p->arena_bytes;
    mgpu_pool_arena *a = arena_add(p, arena);
    if (!a && mgpu_pool_trim(p) > 0)
        a = arena_add(p, arena);
    if (!a && arena > bytes) /* no room for a whole arena: try just this block */
        a = arena_add(p, bytes);
    if (!a)
        return NULL;
    return take(p, a, 0, bytes, reused);
}

static bool locate(const mgpu_pool *p, const void *ptr, size_t *arena, size_t *block)
{
    uintptr_t u = (uintptr_t)ptr;
    for (size_t i = 0; i < p->n_arenas; i++) {
        const mgpu_pool_arena *a = &p->arenas[i];
        if (u < a->base || u - a->base >= a->size)
            continue;
        size_t off = u - a->base, lo = 0, hi = a->count;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (a->blocks[mid].offset < off)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < a->count && a->blocks[lo].offset == off && a->blocks[lo].used) {
            *arena = i;
            *block = lo;
            return true;
        }
        return false;
    }
    return false;
}

size_t mgpu_pool_block_size(const mgpu_pool *p, const void *ptr)
{
    size_t ai, bi;
    return locate(p, ptr, &ai, &bi) ? p->arenas[ai].blocks[bi].size : 0;
}

bool mgpu_pool_free(mgpu_pool *p, void *ptr)
{
    size_t ai, j;
    if (!locate(p, ptr, &ai, &j))
        return false;
    mgpu_pool_arena *a = &p->arenas[ai];
    mgpu_pool_block *b = &a->blocks[j];
    b->used = false;
    b->dirty = true;
    a->used_bytes -= b->size;
    p->in_use -= b->size;
    /* coalesce with the next block, then with the previous one */
    if (j + 1 < a->count && !a->blocks[j + 1].used) {
        a->blocks[j].size += a->blocks[j + 1].size;
        block_remove(a, j + 1);
    }
    if (j > 0 && !a->blocks[j - 1].used) {
        a->blocks[j - 1].size += a->blocks[j].size;
        a->blocks[j - 1].dirty = true;
        block_remove(a, j);
    }
    return true;
}

size_t mgpu_pool_trim(mgpu_pool *p)
{
    size_t given = 0, keep = 0;
    for (size_t i = 0; i < p->n_arenas; i++) {
        mgpu_pool_arena *a = &p->arenas[i];
        if (a->used_bytes == 0) {
            given += a->size;
            arena_release(p, a);
        } else {
            p->arenas[keep++] = *a;
        }
    }
    p->n_arenas = keep;
    return given;
}
