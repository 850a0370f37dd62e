/* The device memory pool of the CUDA backend, as pure host logic: arenas
 * obtained from a callback (cudaMalloc in the plugin, malloc in the tests)
 * are carved into 4096-byte-aligned blocks with a best-fit free list that
 * coalesces neighbours on release. No CUDA here, so the tests run it on any
 * machine. Not thread-safe: the backend holds a mutex around it. */
#ifndef MGPU_BACKEND_CUDA_POOL_H
#define MGPU_BACKEND_CUDA_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { MGPU_POOL_ALIGN = 4096 };

/* Obtains `bytes` of memory aligned to MGPU_POOL_ALIGN, or NULL. */
typedef void *(*mgpu_pool_grow_fn)(void *ctx, size_t bytes);
typedef void (*mgpu_pool_release_fn)(void *ctx, void *base, size_t bytes);

typedef struct mgpu_pool_block {
    size_t offset, size;
    bool used;
    bool dirty; /* handed out before: may still be read by queued work */
} mgpu_pool_block;

/* One arena: blocks sorted by offset, covering it without gaps. */
typedef struct mgpu_pool_arena {
    uintptr_t base;
    size_t size;
    mgpu_pool_block *blocks;
    size_t count, capacity;
    size_t used_bytes;
} mgpu_pool_arena;

typedef struct mgpu_pool {
    mgpu_pool_grow_fn grow;
    mgpu_pool_release_fn release;
    void *ctx;
    size_t arena_bytes; /* default arena size; larger requests get their own */
    mgpu_pool_arena *arenas;
    size_t n_arenas, cap_arenas;
    size_t reserved; /* bytes held in arenas */
    size_t in_use;   /* bytes handed out */
} mgpu_pool;

void mgpu_pool_init(mgpu_pool *p, size_t arena_bytes, mgpu_pool_grow_fn grow,
                    mgpu_pool_release_fn release, void *ctx);
/* Releases every arena (outstanding blocks included). */
void mgpu_pool_destroy(mgpu_pool *p);

/* bytes rounded up to MGPU_POOL_ALIGN (0 counts as one unit). NULL when no
 * arena has room and a new one cannot be obtained even after releasing
 * every empty arena; *reused says whether the block came from memory that
 * was handed out before (so the caller may need to order it after earlier
 * users). */
void *mgpu_pool_alloc(mgpu_pool *p, size_t bytes, bool *reused);
/* False when ptr is not a live block of this pool (nothing changes). */
bool mgpu_pool_free(mgpu_pool *p, void *ptr);
/* Size of a live block, 0 if ptr is none. */
size_t mgpu_pool_block_size(const mgpu_pool *p, const void *ptr);
/* Releases arenas with nothing in use; returns the bytes given back. */
size_t mgpu_pool_trim(mgpu_pool *p);

#ifdef __cplusplus
}
#endif
#endif
