/* Chunked bump allocator; see arena.h. */
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"

struct mgpu_arena_chunk {
    mgpu_arena_chunk *next;
    alignas(max_align_t) unsigned char data[];
};

enum { ARENA_MIN_CHUNK = 64 * 1024 };

void *mgpu_arena_alloc(mgpu_arena *arena, size_t bytes)
{
    const size_t align = alignof(max_align_t);
    size_t rounded = (bytes + align - 1) & ~(align - 1);
    if (rounded < bytes)
        return NULL;
    if (!arena->head || arena->capacity - arena->used < rounded) {
        size_t size = rounded > ARENA_MIN_CHUNK ? rounded : ARENA_MIN_CHUNK;
        if (size > SIZE_MAX - sizeof(mgpu_arena_chunk))
            return NULL;
        mgpu_arena_chunk *chunk = malloc(sizeof *chunk + size);
        if (!chunk)
            return NULL;
        chunk->next = arena->head;
        arena->head = chunk;
        arena->used = 0;
        arena->capacity = size;
    }
    void *p = arena->head->data + arena->used;
    arena->used += rounded;
    memset(p, 0, bytes);
    return p;
}

char *mgpu_arena_strndup(mgpu_arena *arena, const char *s, size_t length)
{
    if (length == SIZE_MAX)
        return NULL;
    char *p = mgpu_arena_alloc(arena, length + 1);
    if (p) {
        memcpy(p, s, length);
        p[length] = '\0';
    }
    return p;
}

char *mgpu_arena_strdup(mgpu_arena *arena, const char *s)
{
    return mgpu_arena_strndup(arena, s, strlen(s));
}

void mgpu_arena_free(mgpu_arena *arena)
{
    mgpu_arena_chunk *c = arena->head;
    while (c) {
        mgpu_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    arena->head = NULL;
    arena->used = arena->capacity = 0;
}
