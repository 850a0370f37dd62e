/* See cpu_copy_queue.h. A FIFO of copies under one mutex, one worker
 * thread, counters for what was queued and what is done. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu_copy_queue.h"
#include "core/error.h"

typedef struct job {
    void *dst;
    const void *src;
    size_t bytes;
} job;

typedef struct pinned {
    const uint8_t *p;
    size_t bytes;
} pinned;

struct mgpu_cpu_copy_queue {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    job *jobs; /* ring of cap, done .. queued */
    size_t cap;
    uint64_t queued, done;
    bool stop;
    pinned *pins;
    size_t n_pins, cap_pins;
};

static void *worker(void *arg)
{
    mgpu_cpu_copy_queue *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (q->done == q->queued && !q->stop)
            pthread_cond_wait(&q->changed, &q->lock);
        if (q->done == q->queued)
            break; /* stopping, nothing left */
        job j = q->jobs[q->done % q->cap];
        pthread_mutex_unlock(&q->lock);
        /* late on purpose: whoever does not wait for this copy sees it missing */
        struct timespec late = {0, 200 * 1000};
        nanosleep(&late, NULL);
        memmove(j.dst, j.src, j.bytes);
        pthread_mutex_lock(&q->lock);
        q->done++;
        pthread_cond_broadcast(&q->changed);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

mgpu_status mgpu_cpu_copy_queue_create(mgpu_cpu_copy_queue **out, mgpu_error *err)
{
    *out = NULL;
    mgpu_cpu_copy_queue *q = calloc(1, sizeof *q);
    if (!q)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    q->cap = 64;
    q->jobs = malloc(q->cap * sizeof *q->jobs);
    if (!q->jobs) {
        free(q);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->changed, NULL);
    if (pthread_create(&q->thread, NULL, worker, q) != 0) {
        pthread_cond_destroy(&q->changed);
        pthread_mutex_destroy(&q->lock);
        free(q->jobs);
        free(q);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "cannot start the copy queue's thread");
    }
    *out = q;
    return MGPU_OK;
}

void mgpu_cpu_copy_queue_free(mgpu_cpu_copy_queue *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    q->stop = true;
    pthread_cond_broadcast(&q->changed);
    pthread_mutex_unlock(&q->lock);
    pthread_join(q->thread, NULL);
    pthread_cond_destroy(&q->changed);
    pthread_mutex_destroy(&q->lock);
    free(q->jobs);
    free(q->pins);
    free(q);
}

bool mgpu_cpu_copy_queue_push(mgpu_cpu_copy_queue *q, void *dst, const void *src, size_t bytes)
{
    pthread_mutex_lock(&q->lock);
    if (q->queued - q->done == q->cap) { /* full: grow, keeping the pending order */
        job *grown = malloc(2 * q->cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&q->lock);
            return false;
        }
        for (uint64_t i = q->done; i < q->queued; i++)
            grown[i % (2 * q->cap)] = q->jobs[i % q->cap];
        free(q->jobs);
        q->jobs = grown;
        q->cap *= 2;
    }
    q->jobs[q->queued % q->cap] = (job){dst, src, bytes};
    q->queued++;
    pthread_cond_broadcast(&q->changed);
    pthread_mutex_unlock(&q->lock);
    return true;
}

uint64_t mgpu_cpu_copy_queue_mark(mgpu_cpu_copy_queue *q)
{
    pthread_mutex_lock(&q->lock);
    uint64_t m = q->queued;
    pthread_mutex_unlock(&q->lock);
    return m;
}

void mgpu_cpu_copy_queue_wait(mgpu_cpu_copy_queue *q, uint64_t mark)
{
    pthread_mutex_lock(&q->lock);
    while (q->done < mark)
        pthread_cond_wait(&q->changed, &q->lock);
    pthread_mutex_unlock(&q->lock);
}

bool mgpu_cpu_copy_queue_pin(mgpu_cpu_copy_queue *q, const void *p, size_t bytes)
{
    pthread_mutex_lock(&q->lock);
    bool ok = true;
    if (q->n_pins == q->cap_pins) {
        size_t cap = q->cap_pins ? 2 * q->cap_pins : 16;
        pinned *grown = realloc(q->pins, cap * sizeof *grown);
        if (grown) {
            q->pins = grown;
            q->cap_pins = cap;
        }
        ok = grown != NULL;
    }
    if (ok)
        q->pins[q->n_pins++] = (pinned){p, bytes};
    pthread_mutex_unlock(&q->lock);
    return ok;
}

void mgpu_cpu_copy_queue_unpin(mgpu_cpu_copy_queue *q, const void *p)
{
    pthread_mutex_lock(&q->lock);
    for (size_t i = 0; i < q->n_pins; i++)
        if (q->pins[i].p == p) {
            q->pins[i] = q->pins[--q->n_pins];
            break;
        }
    pthread_mutex_unlock(&q->lock);
}

bool mgpu_cpu_copy_queue_is_pinned(mgpu_cpu_copy_queue *q, const void *p, size_t bytes)
{
    const uintptr_t b = (uintptr_t)p;
    bool found = false;
    pthread_mutex_lock(&q->lock);
    for (size_t i = 0; i < q->n_pins && !found; i++) {
        const uintptr_t start = (uintptr_t)q->pins[i].p;
        found = b >= start && bytes <= q->pins[i].bytes && b - start <= q->pins[i].bytes - bytes;
    }
    pthread_mutex_unlock(&q->lock);
    return found;
}
