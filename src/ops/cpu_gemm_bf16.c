/* See cpu_gemm_bf16.h. One oneDNN engine and stream for the process, and a
 * small cache of matmul primitives keyed by shape (a FLUX step uses about a
 * dozen shapes; creating a primitive costs milliseconds). The weights are
 * given in their stored [n][in] layout (oneDNN's "ba" for a {in, n}
 * matrix), so streamed weights are used in place, with no reorder. Calls
 * are serialised by a mutex: the cached memory objects carry the data
 * handles of the call in flight.
 *
 * oneDNN runs its kernels on its own OpenMP threads; mgpu's pool is idle
 * while they do, so the machine is not oversubscribed. Idle OpenMP threads
 * spin by default and then slow our pool's next op: the CLI asks for
 * OMP_WAIT_POLICY=passive unless the user set it. */
#include <pthread.h>
#include <string.h>

#include "ops/cpu_gemm_bf16.h"

void mgpu_cpu_to_bf16(const float *src, uint16_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], sizeof u);
        /* round half to even on the 16 dropped bits; a NaN keeps a quiet
         * mantissa bit so it cannot round into infinity */
        uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        uint32_t nan = ((u & 0x7FFFFFFFu) > 0x7F800000u);
        dst[i] = (uint16_t)(nan ? (u >> 16) | 0x40u : r);
    }
}

#ifdef MGPU_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>

enum { CACHE = 32 };

typedef struct entry {
    int64_t rows, in, n, ldy;
    dnnl_primitive_t prim;
    dnnl_memory_t x, w, y;
} entry;

static struct {
    pthread_once_t once;
    pthread_mutex_t lock;
    bool ok;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    entry cache[CACHE];
    int next; /* round-robin victim */
} g = {PTHREAD_ONCE_INIT, PTHREAD_MUTEX_INITIALIZER, false, NULL, NULL, {{0}}, 0};

static void destroy_entry(entry *e)
{
    if (e->prim)
        dnnl_primitive_destroy(e->prim);
    if (e->x)
        dnnl_memory_destroy(e->x);
    if (e->w)
        dnnl_memory_destroy(e->w);
    if (e->y)
        dnnl_memory_destroy(e->y);
    memset(e, 0, sizeof *e);
}

/* Builds the primitive for a shape; false if oneDNN cannot, or only with a
 * reference (non-JIT) implementation, which is slower than f32 OpenBLAS. */
static bool build(entry *e, int64_t rows, int64_t in, int64_t n, int64_t ldy)
{
    dnnl_memory_desc_t xd, wd, yd;
    dnnl_dims_t xdims = {rows, in}, wdims = {in, n}, ydims = {rows, n}, ystrides = {ldy, 1};
    if (dnnl_memory_desc_init_by_tag(&xd, 2, xdims, dnnl_bf16, dnnl_ab) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&wd, 2, wdims, dnnl_bf16, dnnl_ba) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&yd, 2, ydims, dnnl_f32, ystrides) != dnnl_success)
        return false;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_matmul_desc_init(&desc, &xd, &wd, NULL, &yd) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &desc, NULL, g.engine, NULL) != dnnl_success)
        return false;
    const char *impl = NULL;
    bool native = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) ==
                      dnnl_success &&
                  impl && !strstr(impl, "ref");
    bool ok = native && dnnl_primitive_create(&e->prim, pd) == dnnl_success;
    dnnl_primitive_desc_destroy(pd);
    ok = ok && dnnl_memory_create(&e->x, &xd, g.engine, DNNL_MEMORY_NONE) == dnnl_success &&
         dnnl_memory_create(&e->w, &wd, g.engine, DNNL_MEMORY_NONE) == dnnl_success &&
         dnnl_memory_create(&e->y, &yd, g.engine, DNNL_MEMORY_NONE) == dnnl_success;
    if (!ok) {
        destroy_entry(e);
        return false;
    }
    e->rows = rows, e->in = in, e->n = n, e->ldy = ldy;
    return true;
}

static void init(void)
{
    if (dnnl_engine_create(&g.engine, dnnl_cpu, 0) != dnnl_success)
        return;
    if (dnnl_stream_create(&g.stream, g.engine, dnnl_stream_default_flags) != dnnl_success)
        return;
    /* a FLUX-like shape tells whether this CPU has native bf16 kernels */
    entry probe = {0};
    g.ok = build(&probe, 64, 3072, 256, 256);
    destroy_entry(&probe);
}

bool mgpu_cpu_bf16_gemm_available(void)
{
    pthread_once(&g.once, init);
    return g.ok;
}

mgpu_status mgpu_cpu_gemm_bf16(const uint16_t *x, int64_t rows, int64_t in, const uint16_t *w,
                               int64_t n, float *y, int64_t ldy)
{
    if (!mgpu_cpu_bf16_gemm_available())
        return MGPU_ERR_UNSUPPORTED;
    if (rows <= 0 || n <= 0)
        return MGPU_OK;
    pthread_mutex_lock(&g.lock);
    entry *e = NULL;
    for (int i = 0; i < CACHE && !e; i++)
        if (g.cache[i].prim && g.cache[i].rows == rows && g.cache[i].in == in &&
            g.cache[i].n == n && g.cache[i].ldy == ldy)
            e = &g.cache[i];
    if (!e) {
        e = &g.cache[g.next];
        g.next = (g.next + 1) % CACHE;
        destroy_entry(e);
        if (!build(e, rows, in, n, ldy)) {
            pthread_mutex_unlock(&g.lock);
            return MGPU_ERR_UNSUPPORTED;
        }
    }
    dnnl_status_t st = dnnl_memory_set_data_handle(e->x, (void *)x);
    if (st == dnnl_success)
        st = dnnl_memory_set_data_handle(e->w, (void *)w);
    if (st == dnnl_success)
        st = dnnl_memory_set_data_handle(e->y, y);
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, e->x}, {DNNL_ARG_WEIGHTS, e->w}, {DNNL_ARG_DST, e->y}};
    if (st == dnnl_success)
        st = dnnl_primitive_execute(e->prim, g.stream, 3, args);
    if (st == dnnl_success)
        st = dnnl_stream_wait(g.stream);
    pthread_mutex_unlock(&g.lock);
    return st == dnnl_success ? MGPU_OK : MGPU_ERR_UNSUPPORTED;
}

#else /* built without oneDNN: the f32 path is the only one */

bool mgpu_cpu_bf16_gemm_available(void)
{
    return false;
}

mgpu_status mgpu_cpu_gemm_bf16(const uint16_t *x, int64_t rows, int64_t in, const uint16_t *w,
                               int64_t n, float *y, int64_t ldy)
{
    (void)x, (void)rows, (void)in, (void)w, (void)n, (void)y, (void)ldy;
    return MGPU_ERR_UNSUPPORTED;
}

#endif
