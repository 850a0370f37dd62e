/* The discrete CPU backend's copy queue: copies that a GPU would run
 * asynchronously (from pinned host memory, from another device) run here
 * on a thread of their own, each a little late on purpose, as a GPU's copy
 * engine would. Code that reuses a source, or reads a destination, before
 * waiting for the event that covers the copy then gets the wrong bytes in
 * the tests that run the GPU paths on the CPU, instead of only on a GPU.
 * Internal to the CPU backend. */
#ifndef MGPU_BACKEND_CPU_COPY_QUEUE_H
#define MGPU_BACKEND_CPU_COPY_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mgpu/status.h"

typedef struct mgpu_cpu_copy_queue mgpu_cpu_copy_queue;

mgpu_status mgpu_cpu_copy_queue_create(mgpu_cpu_copy_queue **out, mgpu_error *err);
/* Finishes the queued copies, then frees. */
void mgpu_cpu_copy_queue_free(mgpu_cpu_copy_queue *q);

/* Queues dst <- src (bytes); false when out of memory (nothing queued). */
bool mgpu_cpu_copy_queue_push(mgpu_cpu_copy_queue *q, void *dst, const void *src, size_t bytes);
/* The number of copies queued so far: an event's position. */
uint64_t mgpu_cpu_copy_queue_mark(mgpu_cpu_copy_queue *q);
/* Returns once the first `mark` copies are done. */
void mgpu_cpu_copy_queue_wait(mgpu_cpu_copy_queue *q, uint64_t mark);

/* Pinned host memory, as host_alloc hands it out: copies from it may be
 * asynchronous; copies from anything else complete before copy returns. */
bool mgpu_cpu_copy_queue_pin(mgpu_cpu_copy_queue *q, const void *p, size_t bytes);
void mgpu_cpu_copy_queue_unpin(mgpu_cpu_copy_queue *q, const void *p);
bool mgpu_cpu_copy_queue_is_pinned(mgpu_cpu_copy_queue *q, const void *p, size_t bytes);

#endif
