/* A bump allocator for data that lives as long as one object (a parsed
 * file, a model view): many small allocations, one free. */
#ifndef MGPU_CORE_ARENA_H
#define MGPU_CORE_ARENA_H

#include <stddef.h>

typedef struct mgpu_arena_chunk mgpu_arena_chunk;

typedef struct mgpu_arena {
    mgpu_arena_chunk *head;
    size_t used;     /* bytes used in head */
    size_t capacity; /* bytes available in head */
} mgpu_arena;

/* Zeroed memory aligned for any type, or NULL when out of memory. */
void *mgpu_arena_alloc(mgpu_arena *arena, size_t bytes);
/* A NUL-terminated copy of the first `length` bytes of `s`. */
char *mgpu_arena_strndup(mgpu_arena *arena, const char *s, size_t length);
char *mgpu_arena_strdup(mgpu_arena *arena, const char *s);
void mgpu_arena_free(mgpu_arena *arena);

#endif
