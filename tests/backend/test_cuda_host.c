/* The CUDA backend's pure host logic, which runs without a GPU: the device
 * memory pool's free list (src/backend/cuda/cuda_pool.c) over arenas of
 * ordinary memory, checked against a shadow model of which bytes are
 * handed out, and the tile sizing of linear and conv2d
 * (src/backend/cuda/cuda_tiles.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_pool.h"
#include "backend/cuda/cuda_tiles.h"
#include "test_random.h"

/* Arenas from aligned_alloc; a budget makes growth fail on demand. */
typedef struct fake_device {
    size_t budget, held;
    int grows, releases;
} fake_device;

static void *fake_grow(void *ctx, size_t bytes)
{
    fake_device *d = ctx;
    if (d->held + bytes > d->budget)
        return NULL;
    void *p = aligned_alloc(MGPU_POOL_ALIGN, bytes);
    if (p) {
        d->held += bytes;
        d->grows++;
    }
    return p;
}

static void fake_release(void *ctx, void *base, size_t bytes)
{
    fake_device *d = ctx;
    d->held -= bytes;
    d->releases++;
    free(base);
}

enum { ARENA = 1 << 20 };

static void test_pool_basics(void **state)
{
    (void)state;
    fake_device dev = {64u << 20, 0, 0, 0};
    mgpu_pool p;
    mgpu_pool_init(&p, ARENA, fake_grow, fake_release, &dev);
    bool reused = true;
    void *a = mgpu_pool_alloc(&p, 1, &reused);
    assert_non_null(a);
    assert_false(reused); /* fresh arena memory */
    assert_int_equal((uintptr_t)a % MGPU_POOL_ALIGN, 0);
    assert_int_equal(mgpu_pool_block_size(&p, a), MGPU_POOL_ALIGN);
    void *b = mgpu_pool_alloc(&p, 5000, &reused);
    assert_int_equal(mgpu_pool_block_size(&p, b), 2 * MGPU_POOL_ALIGN);
    assert_int_equal(dev.grows, 1); /* both from the first arena */
    assert_int_equal(p.in_use, 3 * MGPU_POOL_ALIGN);
    /* a block bigger than an arena gets its own */
    void *big = mgpu_pool_alloc(&p, 3 * ARENA + 1, &reused);
    assert_non_null(big);
    assert_int_equal(dev.grows, 2);
    assert_int_equal(mgpu_pool_block_size(&p, big), 3 * ARENA + MGPU_POOL_ALIGN);
    /* freeing makes memory reusable, and says so */
    assert_true(mgpu_pool_free(&p, a));
    assert_false(mgpu_pool_free(&p, a)); /* double free refused */
    assert_false(mgpu_pool_free(&p, (char *)b + 8)); /* not a block start */
    void *c = mgpu_pool_alloc(&p, 100, &reused);
    assert_ptr_equal(c, a);
    assert_true(reused);
    /* trim gives back only empty arenas */
    assert_true(mgpu_pool_free(&p, big));
    assert_int_equal(mgpu_pool_trim(&p), 3 * ARENA + MGPU_POOL_ALIGN);
    assert_int_equal(dev.releases, 1);
    assert_true(mgpu_pool_free(&p, b));
    assert_true(mgpu_pool_free(&p, c));
    assert_int_equal(p.in_use, 0);
    mgpu_pool_destroy(&p);
    assert_int_equal(dev.held, 0);
}

static void test_pool_out_of_memory(void **state)
{
    (void)state;
    fake_device dev = {3 * ARENA, 0, 0, 0};
    mgpu_pool p;
    mgpu_pool_init(&p, ARENA, fake_grow, fake_release, &dev);
    void *x = mgpu_pool_alloc(&p, ARENA, NULL);
    void *y = mgpu_pool_alloc(&p, ARENA, NULL);
    assert_non_null(x);
    assert_non_null(y);
    /* 2 MiB more does not fit the budget ... */
    assert_null(mgpu_pool_alloc(&p, 2 * ARENA, NULL));
    /* ... until an empty arena is given back: alloc trims by itself */
    assert_true(mgpu_pool_free(&p, x));
    void *z = mgpu_pool_alloc(&p, 2 * ARENA, NULL);
    assert_non_null(z);
    assert_int_equal(dev.held, 3 * ARENA);
    /* a request smaller than an arena still fits in the last free bytes */
    mgpu_pool_destroy(&p);
    dev = (fake_device){ARENA + ARENA / 2, 0, 0, 0};
    mgpu_pool_init(&p, ARENA, fake_grow, fake_release, &dev);
    assert_non_null(mgpu_pool_alloc(&p, ARENA, NULL));
    assert_non_null(mgpu_pool_alloc(&p, ARENA / 4, NULL));
    mgpu_pool_destroy(&p);
    assert_int_equal(dev.held, 0);
}

/* Random allocations and frees against a shadow: live blocks never
 * overlap, stay inside their arenas, and after everything is freed each
 * arena is one free block again (full coalescing). */
static void test_pool_random(void **state)
{
    (void)state;
    rng_seed(5);
    fake_device dev = {256u << 20, 0, 0, 0};
    mgpu_pool p;
    mgpu_pool_init(&p, 4 * ARENA, fake_grow, fake_release, &dev);
    enum { SLOTS = 200 };
    struct {
        uint8_t *ptr;
        size_t size;
        uint8_t tag;
    } live[SLOTS] = {{0}};
    for (int step = 0; step < 20000; step++) {
        int s = (int)(rng_next() % SLOTS);
        if (live[s].ptr) {
            /* the block still holds its tag: nobody else was given it */
            for (size_t i = 0; i < live[s].size; i += 997)
                assert_int_equal(live[s].ptr[i], live[s].tag);
            assert_true(mgpu_pool_free(&p, live[s].ptr));
            live[s].ptr = NULL;
        } else {
            size_t size = (size_t)(rng_next() % (3 * ARENA)) + 1;
            if (rng_next() % 4)
                size %= 64 * 1024;
            uint8_t *ptr = mgpu_pool_alloc(&p, size, NULL);
            assert_non_null(ptr);
            assert_int_equal((uintptr_t)ptr % MGPU_POOL_ALIGN, 0);
            assert_true(mgpu_pool_block_size(&p, ptr) >= size);
            live[s].ptr = ptr;
            live[s].size = size;
            live[s].tag = (uint8_t)step;
            for (size_t i = 0; i < size; i += 997)
                ptr[i] = live[s].tag;
        }
    }
    for (int s = 0; s < SLOTS; s++)
        if (live[s].ptr) {
            for (size_t i = 0; i < live[s].size; i += 997)
                assert_int_equal(live[s].ptr[i], live[s].tag);
            assert_true(mgpu_pool_free(&p, live[s].ptr));
        }
    assert_int_equal(p.in_use, 0);
    for (size_t i = 0; i < p.n_arenas; i++) {
        assert_int_equal(p.arenas[i].count, 1);
        assert_false(p.arenas[i].blocks[0].used);
        assert_int_equal(p.arenas[i].blocks[0].size, p.arenas[i].size);
    }
    mgpu_pool_destroy(&p);
    assert_int_equal(dev.held, 0);
}

static void test_tiles(void **state)
{
    (void)state;
    /* FLUX's widest linears at 1024x1024 run in one activation chunk */
    mgpu_cuda_linear_tiles t = mgpu_cuda_linear_plan(4608, 12288, 3072);
    assert_int_equal(t.x_rows, 4608);
    assert_true(t.w_rows * 12288 <= MGPU_CUDA_W_TILE_ELEMS);
    assert_int_equal(t.w_rows % MGPU_CUDA_TILE_ALIGN, 0);
    t = mgpu_cuda_linear_plan(4608, 3072, 12288);
    assert_int_equal(t.w_rows, (MGPU_CUDA_W_TILE_ELEMS / 3072) / 64 * 64);
    /* small layers: one tile, no more rows than there are */
    t = mgpu_cuda_linear_plan(3, 64, 10);
    assert_int_equal(t.w_rows, 10);
    assert_int_equal(t.x_rows, 3);
    /* every shape: bounded (or the minimum of one aligned group), whole
     * multiples of the alignment unless it is the whole dimension */
    rng_seed(9);
    for (int i = 0; i < 10000; i++) {
        int64_t width = 1 + (int64_t)(rng_next() % (1u << 22));
        int64_t total = 1 + (int64_t)(rng_next() % 100000);
        int64_t cap = MGPU_CUDA_W_TILE_ELEMS;
        int64_t r = mgpu_cuda_tile_rows(width, total, cap);
        assert_true(r >= 1 && r <= total);
        assert_true(r * width <= cap || r <= MGPU_CUDA_TILE_ALIGN);
        assert_true(r == total || r % MGPU_CUDA_TILE_ALIGN == 0);
    }
    assert_int_equal(mgpu_cuda_tile_rows(100, 0, 1000), 0);
    mgpu_cuda_conv_tiles ct = mgpu_cuda_conv_plan(512 * 9, 256 * 256, 512);
    assert_true(ct.band * 512 * 9 <= MGPU_CUDA_X_TILE_ELEMS);
    assert_int_equal(ct.w_rows, 512);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_basics),
        cmocka_unit_test(test_pool_out_of_memory),
        cmocka_unit_test(test_pool_random),
        cmocka_unit_test(test_tiles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
