/* See executor.h. One copy thread and a condition variable: the thread walks
 * the streamed blocks in execution order (cyclically: after the last block
 * of a step comes the first of the next), loading each into its own slot as
 * soon as the staging budget has room; compute waits in enter_block only
 * when the copy of that block has not finished, and leave_block gives the
 * slot back.
 *
 * Staging lives in the compute backend's memory. On a host-visible backend
 * (the CPU) disk reads land in it directly; otherwise bytes go through the
 * backend's copy queue, from the mapped file for RAM-tier tensors and
 * through a pinned bounce buffer for disk-tier ones, and the tensors that
 * live on the compute device are uploaded once at creation. A slot is only
 * overwritten or freed after the compute queue has passed the event
 * recorded when its block was left, since ops may still be reading it. */
#define _GNU_SOURCE /* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "exec/executor.h"

enum { ALIGN = 4096, BOUNCE_BYTES = 16 << 20 }; /* default bounce half */

typedef enum unit_state { UNIT_EMPTY, UNIT_LOADING, UNIT_READY } unit_state;

typedef struct streamed {
    const mgpu_model_tensor *tensor;
    uint32_t index;       /* in the model's tensor list */
    int device;           /* where it is stored */
    uint64_t slot_offset; /* of its aligned region */
    uint64_t lead;        /* bytes before the tensor in its region (disk alignment) */
    uint64_t region;      /* bytes read or copied into the region */
    const void *from;     /* its pinned host or donor-GPU copy; NULL: the mapping or the disk */
    bool peer;            /* from is on a donor GPU */
} streamed;

typedef struct unit {
    int block;
    size_t first, count; /* into ex->streamed */
    uint64_t slot_bytes;    /* what the block needs */
    uint64_t slot_capacity; /* the buffer it got (a reused one may be larger) */
    unit_state state;
    uint8_t *slot;
    mgpu_event *released; /* recorded on the compute queue at leave */
    bool entered;         /* compute is between enter and leave */
    int next;             /* the unit compute entered after this one last time; -1 unknown */
    mgpu_status load_status;
    char load_error[MGPU_ERROR_MESSAGE_BYTES];
} unit;

struct mgpu_executor {
    const mgpu_plan *plan;
    mgpu_backend *be;
    mgpu_event *copied;      /* the copy thread's: its last copy finished */
    uint8_t *bounce;         /* pinned host buffer for disk reads, when not host-visible: */
    mgpu_event *bounce_done[2]; /* two halves, each free again past its event */
    uint64_t bounce_half;
    void **resident;         /* per model tensor on the compute device: its device copy */
    struct held_copy {       /* pinned host and donor-GPU copies of streamed tensors */
        mgpu_backend *be;
        void *data;
        bool host;
    } *copies;
    size_t copy_count;
    const mgpu_model *model;
    mgpu_executor_options options;
    streamed *streamed;
    size_t streamed_count;
    unit *units;
    size_t unit_count;
    int *unit_of_block;      /* per model block: unit index or -1 */
    const void **slot_data;  /* per model tensor: where it sits in staging, if it does */
    void **loose;            /* per model tensor outside any block, streamed: its copy */
    int *fds;                /* per model file: opened lazily for disk reads */
    int *fds_direct;         /* whether that descriptor uses O_DIRECT */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_mutex_t io_lock; /* disk reads: descriptors and the bounce buffer */
    pthread_cond_t changed;
    size_t cursor;
    int last_entered; /* unit, -1 before the first */
    int demand;       /* a unit compute waits for that is not loaded, -1 none */
    uint64_t used; /* capacity of the buffers blocks hold */
    uint64_t held; /* capacity of every staging buffer, held or free */
    /* Buffers given back, kept for the next blocks: allocating a fresh one
     * per block costs page faults on every byte copied. */
    struct {
        uint8_t *data;
        uint64_t capacity;
        mgpu_event *released; /* the compute queue is done with it past this */
    } spare[16];
    size_t spare_count;
    bool stopping;
    double first_enter, last_leave;
    mgpu_exec_stats stats;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_seconds(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static bool is_disk(const mgpu_executor *ex, int device)
{
    return ex->plan->devices->devices[device].kind == MGPU_DEVICE_DISK;
}

/* Opens model file `file` for reading, with O_DIRECT where allowed. */
static int file_fd(mgpu_executor *ex, uint32_t file, mgpu_error *err)
{
    if (ex->fds[file] >= 0)
        return ex->fds[file];
    const char *path = mgpu_model_file_at(ex->model, file)->path;
    int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    ex->fds_direct[file] = fd >= 0;
    if (fd < 0)
        fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        mgpu_error_set(err, MGPU_ERR_IO, "%s: cannot open for streaming: %s", path, strerror(errno));
    ex->fds[file] = fd;
    return fd;
}

/* Reads at least `need` bytes of file `file` at `at` into host memory `dst`,
 * asking for up to `cap` (aligned lengths, as O_DIRECT wants; the file may
 * end before `cap`). */
static mgpu_status read_file(mgpu_executor *ex, const mgpu_model_tensor *t, uint64_t at,
                             uint8_t *dst, uint64_t need, uint64_t cap, mgpu_error *err)
{
    int fd = file_fd(ex, t->file, err);
    if (fd < 0)
        return MGPU_ERR_IO;
    uint64_t done = 0;
    while (done < need) {
        ssize_t got = pread(fd, dst + done, (size_t)(cap - done), (off_t)(at + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return mgpu_error_set(err, MGPU_ERR_IO, "%s: reading tensor '%s' at offset %llu: %s",
                                  mgpu_model_file_at(ex->model, t->file)->path, t->info.name,
                                  (unsigned long long)(at + done),
                                  got < 0 ? strerror(errno) : "unexpected end of file");
        done += (uint64_t)got;
    }
    return MGPU_OK;
}

/* Host (or donor GPU) -> device on the copy queue; returns when the copy
 * has landed. */
static mgpu_status copy_from(mgpu_executor *ex, void *dst, const void *src, uint64_t len,
                             mgpu_copy_kind kind, mgpu_error *err)
{
    mgpu_backend *be = ex->be;
    mgpu_status s = be->ops->copy(be, MGPU_QUEUE_COPY, dst, src, (size_t)len, kind, err);
    if (s == MGPU_OK)
        s = be->ops->event_record(be, ex->copied, MGPU_QUEUE_COPY, err);
    if (s == MGPU_OK)
        s = be->ops->event_sync(be, ex->copied, err);
    return s;
}

static mgpu_status copy_in(mgpu_executor *ex, void *dst, const void *src, uint64_t len,
                           mgpu_error *err)
{
    return copy_from(ex, dst, src, len, MGPU_COPY_HOST_TO_DEVICE, err);
}

/* Copies one streamed tensor into its region (device memory), paced to the
 * link. A disk region starts `lead` bytes before the tensor so reads stay
 * aligned for O_DIRECT; the bytes read past the tensor's end are rounded up
 * to the alignment, which the file may not reach: short reads there are
 * fine as long as the tensor itself arrived. */
static mgpu_status load_tensor(mgpu_executor *ex, const streamed *s, uint8_t *region,
                               mgpu_error *err)
{
    const mgpu_model_tensor *t = s->tensor;
    const mgpu_plan_device *pd = &ex->plan->device[s->device];
    double start = now();
    mgpu_status st = MGPU_OK;
    if (is_disk(ex, s->device)) {
        /* the copy thread and a loose tensor's first use on the compute
         * thread share the descriptors and the bounce buffer */
        pthread_mutex_lock(&ex->io_lock);
        uint64_t at = t->info.file_offset - s->lead, want = s->lead + t->info.nbytes;
        if (ex->be->host_visible)
            st = read_file(ex, t, at, region, want, s->region, err);
        /* two halves: the disk fills one while the other crosses the link */
        bool pending[2] = {false, false};
        int half = 0;
        for (uint64_t off = 0; !ex->be->host_visible && off < want && st == MGPU_OK;
             off += ex->bounce_half, half ^= 1) {
            uint64_t cap = s->region - off < ex->bounce_half ? s->region - off : ex->bounce_half;
            uint64_t need = want - off < cap ? want - off : cap;
            uint8_t *b = ex->bounce + (size_t)half * ex->bounce_half;
            if (pending[half])
                st = ex->be->ops->event_sync(ex->be, ex->bounce_done[half], err);
            pending[half] = false;
            if (st == MGPU_OK)
                st = read_file(ex, t, at + off, b, need, cap, err);
            if (st == MGPU_OK)
                st = ex->be->ops->copy(ex->be, MGPU_QUEUE_COPY, region + off, b, (size_t)need,
                                       MGPU_COPY_HOST_TO_DEVICE, err);
            if (st == MGPU_OK)
                st = ex->be->ops->event_record(ex->be, ex->bounce_done[half], MGPU_QUEUE_COPY,
                                               err);
            pending[half] = st == MGPU_OK;
        }
        for (int h = 0; h < 2; h++) /* the tensor has landed before the block is ready */
            if (pending[h]) {
                mgpu_status w = ex->be->ops->event_sync(ex->be, ex->bounce_done[h], err);
                if (st == MGPU_OK)
                    st = w;
            }
        pthread_mutex_unlock(&ex->io_lock);
    } else if (ex->be->host_visible) {
        memcpy(region, t->info.data, (size_t)t->info.nbytes);
    } else if (s->from) {
        st = copy_from(ex, region, s->from, t->info.nbytes,
                       s->peer ? MGPU_COPY_PEER_TO_DEVICE : MGPU_COPY_HOST_TO_DEVICE, err);
    } else {
        st = copy_in(ex, region, t->info.data, t->info.nbytes, err);
    }
    if (st != MGPU_OK)
        return st;
    /* Simulated links: take as long as the link would. */
    const mgpu_device *dev = &ex->plan->devices->devices[s->device];
    const mgpu_device *cmp = &ex->plan->devices->devices[ex->plan->compute];
    if (ex->options.pace_simulated && (dev->simulated || cmp->simulated) &&
        pd->copy_bytes_per_s > 0 && isfinite(pd->copy_bytes_per_s))
        sleep_seconds((double)t->info.nbytes / pd->copy_bytes_per_s - (now() - start));
    return MGPU_OK;
}

/* Frees a staging buffer once the compute queue is past `released`. */
static void release_buffer(mgpu_executor *ex, void *data, mgpu_event *released)
{
    if (released)
        ex->be->ops->event_sync(ex->be, released, NULL);
    ex->be->ops->free(ex->be, data);
}

/* The unit expected after u: the one compute entered after it last time,
 * else the next in block order. Models that run their blocks out of index
 * order (a VAE decoder walks its levels backwards) are prefetched in their
 * own order from their second pass on. */
static size_t successor(const mgpu_executor *ex, size_t u)
{
    int n = ex->units[u].next;
    return n >= 0 ? (size_t)n : (u + 1) % ex->unit_count;
}

/* Gives back the slots of loaded units compute has not entered, so that a
 * unit compute is waiting for can load: without this, prefetched blocks
 * that are needed only later would hold the budget forever. Called with the
 * lock held; true if anything was freed. */
static bool evict_prefetched(mgpu_executor *ex, size_t keep)
{
    bool freed = false;
    for (size_t k = 0; k < ex->unit_count; k++) {
        unit *u = &ex->units[k];
        if (k == keep || u->state != UNIT_READY || u->entered)
            continue;
        for (size_t i = 0; i < u->count; i++)
            ex->slot_data[ex->streamed[u->first + i].index] = NULL;
        if (u->slot && ex->spare_count < sizeof ex->spare / sizeof ex->spare[0]) {
            ex->spare[ex->spare_count].data = u->slot;
            ex->spare[ex->spare_count].capacity = u->slot_capacity;
            ex->spare[ex->spare_count].released = NULL; /* never used by compute */
            ex->spare_count++;
        } else if (u->slot) {
            release_buffer(ex, u->slot, NULL);
            ex->held -= u->slot_capacity;
        }
        u->slot = NULL;
        u->state = UNIT_EMPTY;
        ex->used -= u->slot_capacity;
        freed = true;
    }
    return freed;
}

static void *copy_thread(void *arg)
{
    mgpu_executor *ex = arg;
    pthread_mutex_lock(&ex->lock);
    while (!ex->stopping) {
        /* the next empty unit from the cursor, in the expected order */
        size_t pick = SIZE_MAX, u_at = ex->cursor;
        for (size_t k = 0; k < ex->unit_count && pick == SIZE_MAX; k++) {
            if (ex->units[u_at].state == UNIT_EMPTY)
                pick = u_at;
            else if (ex->units[u_at].state == UNIT_LOADING)
                break;
            u_at = successor(ex, u_at);
        }
        if (pick == SIZE_MAX) {
            pthread_cond_wait(&ex->changed, &ex->lock);
            continue;
        }
        unit *u = &ex->units[pick];
        uint64_t need = u->slot_bytes ? u->slot_bytes : ALIGN;
        size_t best = SIZE_MAX; /* the smallest spare buffer that fits */
        for (size_t i = 0; i < ex->spare_count; i++)
            if (ex->spare[i].capacity >= need &&
                (best == SIZE_MAX || ex->spare[i].capacity < ex->spare[best].capacity))
                best = i;
        uint64_t cost = best == SIZE_MAX ? need : ex->spare[best].capacity;
        if (ex->used > 0 && ex->used + cost > ex->stats.staging_budget_bytes) {
            if (!(ex->demand == (int)pick && evict_prefetched(ex, pick)))
                pthread_cond_wait(&ex->changed, &ex->lock);
            continue;
        }
        uint8_t *reused = NULL;
        mgpu_event *reused_released = NULL;
        if (best != SIZE_MAX) {
            reused = ex->spare[best].data;
            reused_released = ex->spare[best].released;
            ex->spare[best] = ex->spare[--ex->spare_count];
        } else {
            /* make room: spare buffers count against the budget too */
            while (ex->held + need > ex->stats.staging_budget_bytes && ex->spare_count > 0) {
                ex->spare_count--;
                ex->held -= ex->spare[ex->spare_count].capacity;
                release_buffer(ex, ex->spare[ex->spare_count].data,
                               ex->spare[ex->spare_count].released);
            }
            ex->held += need;
        }
        u->state = UNIT_LOADING;
        u->slot_capacity = cost;
        ex->used += cost;
        if (ex->used > ex->stats.staging_peak_bytes)
            ex->stats.staging_peak_bytes = ex->used;
        ex->cursor = successor(ex, pick);
        pthread_mutex_unlock(&ex->lock);

        double start = now();
        mgpu_error err = {0};
        mgpu_status s = MGPU_OK;
        void *slot = reused;
        if (reused_released) /* ops of the block that last used it may still run */
            s = ex->be->ops->event_sync(ex->be, reused_released, &err);
        if (!slot && s == MGPU_OK)
            s = ex->be->ops->alloc(ex->be, (size_t)need, &slot, &err);
        for (size_t i = 0; i < u->count && s == MGPU_OK; i++) {
            const streamed *st = &ex->streamed[u->first + i];
            s = load_tensor(ex, st, (uint8_t *)slot + st->slot_offset, &err);
        }
        double took = now() - start;

        pthread_mutex_lock(&ex->lock);
        ex->stats.copy_seconds += took;
        u->slot = slot;
        u->load_status = s;
        if (s != MGPU_OK)
            memcpy(u->load_error, err.message, sizeof u->load_error);
        else
            for (size_t i = 0; i < u->count; i++) {
                const streamed *st = &ex->streamed[u->first + i];
                ex->slot_data[st->index] = (uint8_t *)slot + st->slot_offset + st->lead;
            }
        u->state = UNIT_READY;
        pthread_cond_broadcast(&ex->changed);
    }
    pthread_mutex_unlock(&ex->lock);
    return NULL;
}

static mgpu_status enter_block(void *context, int block, mgpu_error *err)
{
    mgpu_executor *ex = context;
    double t0 = now();
    pthread_mutex_lock(&ex->lock);
    if (ex->first_enter == 0)
        ex->first_enter = t0;
    int k = block >= 0 && (size_t)block < mgpu_model_block_count(ex->model) ? ex->unit_of_block[block] : -1;
    mgpu_status s = MGPU_OK;
    if (k >= 0) {
        unit *u = &ex->units[k];
        /* out of the expected order: point the copy thread here */
        if (u->state == UNIT_EMPTY) {
            ex->cursor = (size_t)k;
            ex->demand = k;
            pthread_cond_broadcast(&ex->changed);
        }
        while (u->state != UNIT_READY)
            pthread_cond_wait(&ex->changed, &ex->lock);
        if (ex->demand == k)
            ex->demand = -1;
        u->entered = true;
        if (ex->last_entered >= 0 && ex->last_entered != k)
            ex->units[ex->last_entered].next = k;
        ex->last_entered = k;
        if (u->load_status != MGPU_OK) {
            s = mgpu_error_set(err, u->load_status, "%s", u->load_error);
        } else {
            /* counted when used: blocks prefetched for a step that never
             * comes are not traffic the run needed */
            ex->stats.blocks_streamed++;
            for (size_t i = 0; i < u->count; i++)
                ex->stats.bytes_copied[ex->streamed[u->first + i].device] +=
                    ex->streamed[u->first + i].tensor->info.nbytes;
        }
    }
    ex->stats.wait_seconds += now() - t0;
    pthread_mutex_unlock(&ex->lock);
    return s;
}

static void leave_block(void *context, int block)
{
    mgpu_executor *ex = context;
    pthread_mutex_lock(&ex->lock);
    int k = block >= 0 && (size_t)block < mgpu_model_block_count(ex->model) ? ex->unit_of_block[block] : -1;
    if (k >= 0 && ex->units[k].state == UNIT_READY) {
        unit *u = &ex->units[k];
        for (size_t i = 0; i < u->count; i++)
            ex->slot_data[ex->streamed[u->first + i].index] = NULL;
        /* the ops just enqueued may still read the slot */
        mgpu_event *released = NULL;
        if (u->slot && ex->be->ops->event_record(ex->be, u->released, MGPU_QUEUE_COMPUTE, NULL) ==
                           MGPU_OK)
            released = u->released;
        else if (u->slot)
            ex->be->ops->synchronize(ex->be, NULL);
        if (u->slot && ex->spare_count < sizeof ex->spare / sizeof ex->spare[0]) {
            ex->spare[ex->spare_count].data = u->slot;
            ex->spare[ex->spare_count].capacity = u->slot_capacity;
            ex->spare[ex->spare_count].released = released;
            ex->spare_count++;
        } else if (u->slot) {
            release_buffer(ex, u->slot, released);
            ex->held -= u->slot_capacity;
        }
        u->slot = NULL;
        u->state = UNIT_EMPTY;
        u->entered = false;
        ex->used -= u->slot_capacity;
        pthread_cond_broadcast(&ex->changed);
    }
    ex->last_leave = now();
    pthread_mutex_unlock(&ex->lock);
}

static const void *tensor_data(void *context, const mgpu_model_tensor *t, mgpu_error *err)
{
    mgpu_executor *ex = context;
    uint32_t index = (uint32_t)(t - mgpu_model_tensor_at(ex->model, 0));
    int device = ex->plan->module_device[t->module];
    if (device == ex->plan->compute) {
        if (ex->options.skip_resident && ex->options.skip_resident[index]) {
            mgpu_error_set(err, MGPU_ERR_ARGUMENT, "tensor '%s' is supplied by the caller",
                           t->info.name);
            return NULL;
        }
        return ex->resident ? ex->resident[index] : t->info.data;
    }
    pthread_mutex_lock(&ex->lock);
    const void *p = ex->slot_data[index];
    pthread_mutex_unlock(&ex->lock);
    if (p)
        return p;
    const mgpu_model_module *m = mgpu_model_module_at(ex->model, t->module);
    if (m->block >= 0 && ex->unit_of_block[m->block] >= 0) {
        mgpu_error_set(err, MGPU_ERR_ARGUMENT, "tensor '%s' was used outside its block",
                       t->info.name);
        return NULL;
    }
    /* A streamed module outside any block: copied once, kept. */
    if (!ex->loose[index]) {
        streamed s = {.tensor = t, .index = index, .device = device};
        uint64_t lead = is_disk(ex, device) ? t->info.file_offset % ALIGN : 0;
        s.lead = lead;
        s.region = round_up(lead + t->info.nbytes, ALIGN);
        void *buf = NULL;
        if (ex->be->ops->alloc(ex->be, (size_t)s.region, &buf, err) != MGPU_OK)
            return NULL;
        if (load_tensor(ex, &s, buf, err) != MGPU_OK) {
            ex->be->ops->free(ex->be, buf);
            return NULL;
        }
        pthread_mutex_lock(&ex->lock);
        ex->stats.bytes_copied[device] += t->info.nbytes;
        pthread_mutex_unlock(&ex->lock);
        ex->loose[index] = buf;
        return (uint8_t *)buf + lead;
    }
    return (uint8_t *)ex->loose[index] + (is_disk(ex, device) ? t->info.file_offset % ALIGN : 0);
}

/* A discrete device holds its own copy of every tensor placed on it. */
static mgpu_status upload_resident(mgpu_executor *ex, mgpu_error *err)
{
    size_t nt = mgpu_model_tensor_count(ex->model);
    ex->resident = calloc(nt ? nt : 1, sizeof *ex->resident);
    if (!ex->resident)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < nt; i++) {
        const mgpu_model_tensor *t = mgpu_model_tensor_at(ex->model, i);
        if (ex->plan->module_device[t->module] != ex->plan->compute ||
            (ex->options.skip_resident && ex->options.skip_resident[i]))
            continue;
        mgpu_status s = ex->be->ops->alloc(ex->be, (size_t)t->info.nbytes, &ex->resident[i], err);
        if (s == MGPU_OK && t->info.nbytes > 0) {
            if (!t->info.data)
                return mgpu_error_set(err, MGPU_ERR_IO, "tensor '%s' has no data", t->info.name);
            s = copy_in(ex, ex->resident[i], t->info.data, t->info.nbytes, err);
        }
        if (s != MGPU_OK)
            return s;
    }
    return MGPU_OK;
}

/* The backend of donor GPU `device`, when its tensors can live there. */
static mgpu_backend *donor(const mgpu_executor *ex, int device)
{
    mgpu_backend *d = ex->options.device_backends ? ex->options.device_backends[device] : NULL;
    return d && d != ex->be && !d->host_visible ? d : NULL;
}

/* For a GPU compute device: puts each unit's RAM-tier tensors into one
 * pinned host buffer and its donor-GPU tensors into one buffer on that GPU,
 * so the copy thread copies at the link's speed (pageable memory goes
 * through the driver's own staging) and donor GPUs hold what the plan gave
 * them. Disk-tier tensors keep their bounded read path. */
static mgpu_status hold_copies(mgpu_executor *ex, mgpu_error *err)
{
    const int n_dev = (int)ex->plan->devices->count;
    ex->copies = calloc(ex->unit_count * (size_t)n_dev + 1, sizeof *ex->copies);
    if (!ex->copies)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    for (size_t k = 0; k < ex->unit_count; k++) {
        unit *u = &ex->units[k];
        for (int d = 0; d < n_dev; d++) {
            mgpu_backend *dbe = donor(ex, d);
            bool pin = !dbe && !is_disk(ex, d) && !ex->options.pageable_ram;
            if (!dbe && !pin)
                continue;
            uint64_t bytes = 0;
            for (size_t i = 0; i < u->count; i++)
                if (ex->streamed[u->first + i].device == d)
                    bytes += round_up(ex->streamed[u->first + i].tensor->info.nbytes, 256);
            if (!bytes)
                continue;
            void *buf = NULL;
            mgpu_error local = {0};
            mgpu_status s = dbe ? dbe->ops->alloc(dbe, (size_t)bytes, &buf, err)
                                : ex->be->ops->host_alloc(ex->be, (size_t)bytes, &buf, &local);
            if (s != MGPU_OK && dbe)
                return s;
            if (s != MGPU_OK) { /* cannot pin: these stay pageable */
                ex->stats.pageable_bytes += bytes;
                continue;
            }
            ex->copies[ex->copy_count++] = (struct held_copy){dbe ? dbe : ex->be, buf, !dbe};
            uint64_t at = 0;
            for (size_t i = 0; i < u->count && s == MGPU_OK; i++) {
                streamed *st = &ex->streamed[u->first + i];
                if (st->device != d)
                    continue;
                const mgpu_model_tensor *t = st->tensor;
                if (!t->info.data && t->info.nbytes)
                    return mgpu_error_set(err, MGPU_ERR_IO, "tensor '%s' has no data",
                                          t->info.name);
                uint8_t *dst = (uint8_t *)buf + at;
                if (dbe)
                    s = mgpu_backend_upload(dbe, dst, t->info.data, t->info.nbytes, err);
                else
                    memcpy(dst, t->info.data, (size_t)t->info.nbytes);
                st->from = dst;
                st->peer = dbe != NULL;
                at += round_up(t->info.nbytes, 256);
            }
            if (s == MGPU_OK && dbe)
                s = dbe->ops->synchronize(dbe, err);
            if (s != MGPU_OK)
                return s;
            if (dbe)
                ex->stats.donor_bytes += bytes;
            else
                ex->stats.pinned_bytes += bytes;
        }
    }
    return MGPU_OK;
}

mgpu_status mgpu_executor_create(const mgpu_plan *plan, mgpu_backend *be,
                                 const mgpu_executor_options *options, mgpu_executor **out,
                                 mgpu_error *err)
{
    *out = NULL;
    mgpu_executor *ex = calloc(1, sizeof *ex);
    if (!ex)
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    ex->plan = plan;
    ex->be = be;
    ex->last_entered = -1;
    ex->demand = -1;
    ex->model = plan->model;
    ex->options = options ? *options : (mgpu_executor_options){.pace_simulated = 1};
    ex->bounce_half = ex->options.bounce_bytes ? round_up(ex->options.bounce_bytes, ALIGN)
                                               : BOUNCE_BYTES;
    pthread_mutex_init(&ex->lock, NULL);
    pthread_mutex_init(&ex->io_lock, NULL);
    pthread_cond_init(&ex->changed, NULL);
    size_t nt = mgpu_model_tensor_count(ex->model), nb = mgpu_model_block_count(ex->model);
    size_t nf = mgpu_model_file_count(ex->model);
    ex->streamed = calloc(nt ? nt : 1, sizeof *ex->streamed);
    ex->units = calloc(nb ? nb : 1, sizeof *ex->units);
    ex->unit_of_block = malloc((nb ? nb : 1) * sizeof *ex->unit_of_block);
    ex->slot_data = calloc(nt ? nt : 1, sizeof *ex->slot_data);
    ex->loose = calloc(nt ? nt : 1, sizeof *ex->loose);
    ex->fds = malloc((nf ? nf : 1) * sizeof *ex->fds);
    ex->fds_direct = calloc(nf ? nf : 1, sizeof *ex->fds_direct);
    if (!ex->streamed || !ex->units || !ex->unit_of_block || !ex->slot_data || !ex->loose ||
        !ex->fds || !ex->fds_direct) {
        mgpu_executor_free(ex);
        return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t f = 0; f < nf; f++)
        ex->fds[f] = -1;
    /* One unit per block with streamed tensors, in block order, which is
     * the execution order the model enters them in. */
    uint64_t largest = 0;
    for (size_t b = 0; b < nb; b++) {
        ex->unit_of_block[b] = -1;
        unit *u = &ex->units[ex->unit_count];
        u->block = (int)b;
        u->first = ex->streamed_count;
        for (size_t i = 0; i < nt; i++) {
            const mgpu_model_tensor *t = mgpu_model_tensor_at(ex->model, i);
            const mgpu_model_module *m = mgpu_model_module_at(ex->model, t->module);
            int device = plan->module_device[t->module];
            if (m->block != (int32_t)b || device < 0 || device == plan->compute)
                continue;
            streamed *s = &ex->streamed[ex->streamed_count++];
            s->tensor = t;
            s->index = (uint32_t)i;
            s->device = device;
            s->lead = is_disk(ex, device) ? t->info.file_offset % ALIGN : 0;
            s->region = round_up(s->lead + t->info.nbytes, ALIGN);
            s->slot_offset = u->slot_bytes;
            u->slot_bytes += s->region;
            u->count++;
        }
        if (u->count) {
            u->next = -1;
            mgpu_status s = be->ops->event_create(be, &u->released, err);
            if (s != MGPU_OK) {
                mgpu_executor_free(ex);
                return s;
            }
            ex->unit_of_block[b] = (int)ex->unit_count++;
            if (u->slot_bytes > largest)
                largest = u->slot_bytes;
        }
    }
    ex->stats.staging_budget_bytes = ex->options.staging_bytes ? ex->options.staging_bytes : 2 * largest;
    if (ex->stats.staging_budget_bytes < largest) {
        mgpu_status s = mgpu_error_set(err, MGPU_ERR_ARGUMENT,
                                       "staging budget of %llu bytes cannot hold the largest streamed "
                                       "block (%llu bytes)",
                                       (unsigned long long)ex->stats.staging_budget_bytes,
                                       (unsigned long long)largest);
        mgpu_executor_free(ex);
        return s;
    }
    mgpu_status s = be->ops->event_create(be, &ex->copied, err);
    if (s == MGPU_OK && !be->host_visible)
        s = be->ops->host_alloc(be, 2 * (size_t)ex->bounce_half, (void **)&ex->bounce, err);
    for (int h = 0; h < 2 && s == MGPU_OK && !be->host_visible; h++)
        s = be->ops->event_create(be, &ex->bounce_done[h], err);
    if (s == MGPU_OK && !be->host_visible)
        s = upload_resident(ex, err);
    if (s == MGPU_OK && !be->host_visible)
        s = hold_copies(ex, err);
    if (s != MGPU_OK) {
        mgpu_executor_free(ex);
        return s;
    }
    if (ex->unit_count > 0) {
        if (pthread_create(&ex->thread, NULL, copy_thread, ex) != 0) {
            mgpu_executor_free(ex);
            return mgpu_error_set(err, MGPU_ERR_NO_MEMORY, "cannot start the copy thread");
        }
        ex->thread_started = true;
    }
    *out = ex;
    return MGPU_OK;
}

mgpu_status mgpu_executor_open_donors(const mgpu_plan *plan, mgpu_gemm_precision gemm,
                                      mgpu_backend **bes, mgpu_error *err)
{
    for (size_t d = 0; d < plan->devices->count; d++) {
        const mgpu_device *dev = &plan->devices->devices[d];
        if (bes[d] || (int)d == plan->compute || dev->kind != MGPU_DEVICE_CUDA || dev->simulated ||
            plan->device[d].placed_bytes == 0)
            continue;
        mgpu_status s = mgpu_backend_for_device(dev, 1, gemm, &bes[d], err);
        if (s != MGPU_OK)
            return s;
    }
    return MGPU_OK;
}

void mgpu_executor_free(mgpu_executor *ex)
{
    if (!ex)
        return;
    if (ex->thread_started) {
        pthread_mutex_lock(&ex->lock);
        ex->stopping = true;
        pthread_cond_broadcast(&ex->changed);
        pthread_mutex_unlock(&ex->lock);
        pthread_join(ex->thread, NULL);
    }
    mgpu_backend *be = ex->be;
    be->ops->synchronize(be, NULL); /* nothing may still read what is freed */
    for (size_t u = 0; ex->units && u < ex->unit_count; u++) {
        if (ex->units[u].slot)
            be->ops->free(be, ex->units[u].slot);
        if (ex->units[u].released)
            be->ops->event_destroy(be, ex->units[u].released);
    }
    for (size_t i = 0; i < ex->spare_count; i++)
        be->ops->free(be, ex->spare[i].data);
    size_t nt = mgpu_model_tensor_count(ex->model);
    for (size_t i = 0; ex->loose && i < nt; i++)
        if (ex->loose[i])
            be->ops->free(be, ex->loose[i]);
    for (size_t i = 0; ex->resident && i < nt; i++)
        if (ex->resident[i])
            be->ops->free(be, ex->resident[i]);
    free(ex->resident);
    for (size_t i = 0; i < ex->copy_count; i++) {
        struct held_copy *c = &ex->copies[i];
        if (c->host)
            c->be->ops->host_free(c->be, c->data);
        else
            c->be->ops->free(c->be, c->data);
    }
    free(ex->copies);
    if (ex->bounce)
        be->ops->host_free(be, ex->bounce);
    for (int h = 0; h < 2; h++)
        if (ex->bounce_done[h])
            be->ops->event_destroy(be, ex->bounce_done[h]);
    if (ex->copied)
        be->ops->event_destroy(be, ex->copied);
    for (size_t f = 0; ex->fds && f < mgpu_model_file_count(ex->model); f++)
        if (ex->fds[f] >= 0)
            close(ex->fds[f]);
    pthread_cond_destroy(&ex->changed);
    pthread_mutex_destroy(&ex->io_lock);
    pthread_mutex_destroy(&ex->lock);
    free(ex->streamed);
    free(ex->units);
    free(ex->unit_of_block);
    free(ex->slot_data);
    free(ex->loose);
    free(ex->fds);
    free(ex->fds_direct);
    free(ex);
}

mgpu_tensor_source mgpu_executor_source(mgpu_executor *ex)
{
    mgpu_tensor_source s = {ex, enter_block, leave_block, tensor_data, NULL};
    return s;
}

void mgpu_executor_stats(const mgpu_executor *ex, mgpu_exec_stats *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&ex->lock);
    *out = ex->stats;
    out->busy_seconds = ex->last_leave > ex->first_enter ? ex->last_leave - ex->first_enter : 0;
    pthread_mutex_unlock((pthread_mutex_t *)&ex->lock);
}
