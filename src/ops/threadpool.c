/* See threadpool.h. Workers sleep on a condition variable between jobs; a
 * job is one range, cut into one contiguous chunk per thread (the caller
 * takes chunk 0), so the mapping of indices to threads is fixed. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/error.h"
#include "ops/threadpool.h"

typedef struct job {
    void (*fn)(void *ctx, int64_t begin, int64_t end);
    void *ctx;
    int64_t n;
    int chunks; /* how many threads take part in this job */
} job;

struct mgpu_threadpool {
    int threads;
    pthread_t *workers;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t done;
    job current;
    uint64_t generation; /* bumped for every job */
    int pending;         /* workers still running the current job */
    int stopping;
};

typedef struct worker_arg {
    mgpu_threadpool *pool;
    int index;
} worker_arg;

static void run_chunk(const job *j, int index)
{
    if (index >= j->chunks)
        return;
    int64_t per = j->n / j->chunks, extra = j->n % j->chunks;
    int64_t begin = index * per + (index < extra ? index : extra);
    int64_t end = begin + per + (index < extra ? 1 : 0);
    if (begin < end)
        j->fn(j->ctx, begin, end);
}

static void *worker_main(void *arg)
{
    worker_arg *w = arg;
    mgpu_threadpool *p = w->pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stopping && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->stopping)
            break;
        seen = p->generation;
        job j = p->current;
        pthread_mutex_unlock(&p->lock);
        run_chunk(&j, w->index);
        pthread_mutex_lock(&p->lock);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    free(w);
    return NULL;
}

mgpu_status mgpu_threadpool_create(int threads, mgpu_threadpool **out, mgpu_error *err)
{
    *out = NULL;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    mgpu_threadpool *p = calloc(1, sizeof *p);
    if (!p)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    p->threads = threads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->workers = calloc((size_t)threads, sizeof *p->workers);
    if (!p->workers) {
        mgpu_threadpool_free(p);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    for (int i = 1; i < threads; i++) {
        worker_arg *w = malloc(sizeof *w);
        if (w) {
            w->pool = p;
            w->index = i;
        }
        if (!w || pthread_create(&p->workers[i], NULL, worker_main, w) != 0) {
            free(w);
            p->threads = i; /* the ones started so far are joined by free */
            mgpu_threadpool_free(p);
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "cannot start thread %d of %d", i,
                                  threads);
        }
    }
    *out = p;
    return MGPU_OK;
}

void mgpu_threadpool_free(mgpu_threadpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->threads && p->workers; i++)
        pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    free(p->workers);
    free(p);
}

int mgpu_threadpool_size(const mgpu_threadpool *p)
{
    return p ? p->threads : 1;
}

void mgpu_threadpool_run(mgpu_threadpool *p, void (*fn)(void *ctx, int64_t begin, int64_t end),
                         void *ctx, int64_t n, int64_t grain)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    int64_t chunks = (n + grain - 1) / grain;
    if (!p || p->threads == 1 || chunks <= 1) {
        fn(ctx, 0, n);
        return;
    }
    job j = {fn, ctx, n, chunks < p->threads ? (int)chunks : p->threads};
    pthread_mutex_lock(&p->lock);
    p->current = j;
    p->pending = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    run_chunk(&j, 0);
    pthread_mutex_lock(&p->lock);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
