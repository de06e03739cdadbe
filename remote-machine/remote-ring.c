/*
 * Remote side of the shared-memory ring: a thread serves the BAR accesses
 * the proxy queues, keeps the shadow copy of side-effect-free registers,
 * and passes doorbell eventfds on to the device once the ring is drained.
 * It polls while the device is busy (for a window that adapts to the gaps
 * between requests) and sleeps while it is idle.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/atomic.h"
#include "qemu/main-loop.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "qemu/sockets.h"
#include "qemu/bswap.h"
#include "mpqemu/socket.h"
#include "remote.h"
#include "trace.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

/*
 * How long the thread keeps polling after a request before it sleeps: a
 * window that adapts to the gaps between requests. A request that comes
 * after the window closed, but not long after, widens it (it would have
 * saved a wake-up); a gap longer than the widest window narrows it.
 */
#define REMOTE_RING_POLL_MIN_NS     (50 * SCALE_US)
#define REMOTE_RING_POLL_START_NS   (200 * SCALE_US)
#define REMOTE_RING_POLL_MAX_NS     (1000 * SCALE_US)
/* While polling, how many spins between looks at the doorbells */
#define REMOTE_RING_SPINS_PER_EPOLL 16

/* epoll data of the thread's own descriptors; doorbells use their id */
#define RING_EPOLL_KICK         0
#define RING_EPOLL_STOP         1
#define RING_EPOLL_DOORBELL(id) ((uint64_t)(id) + 2)

struct RemoteRing {
    RemoteObject *owner;        /* only touched with the BQL, unless stopped */
    MPQemuRing *ring;
    size_t size;
    MPQemuAccessHint hint[MPQEMU_MAX_HINTS];    /* host order, shadows only */
    uint32_t nr_hints;
    uint32_t shadow_gen;        /* ours; the page's copy is only published */
    uint32_t served;            /* the last request answered */
    int kick_fd;
    int done_fd;
    int stop_fd;
    int epoll_fd;
    bool stop;                  /* set with the BQL; the thread then leaves */
    QemuThread thread;
};

static void remote_ring_free(RemoteRing *rr)
{
    munmap(rr->ring, rr->size);
    close(rr->kick_fd);
    close(rr->done_fd);
    close(rr->stop_fd);
    close(rr->epoll_fd);
    g_free(rr);
}

/* Whether a read lies in a shadowed range: it has no side effects */
static bool remote_ring_shadowed(RemoteRing *rr, uint32_t region,
                                 uint64_t offset, uint32_t size)
{
    for (uint32_t i = 0; i < rr->nr_hints; i++) {
        MPQemuAccessHint *h = &rr->hint[i];

        if (h->region == region && offset >= h->offset &&
            size <= h->size && offset - h->offset <= h->size - size) {
            return true;
        }
    }
    return false;
}

/* With the BQL: the registers may change from now on */
void remote_ring_shadow_stale(RemoteRing *rr)
{
    if (!rr->nr_hints || (rr->shadow_gen & 1)) {
        return;
    }
    rr->shadow_gen++;
    qatomic_set(&rr->ring->shadow_gen, rr->shadow_gen);
    smp_wmb();
}

/* With the BQL: read every shadowed register again and publish the copy */
static void remote_ring_shadow_refresh(RemoteRing *rr)
{
    uint8_t *shadow = mpqemu_ring_shadow(rr->ring);

    for (uint32_t i = 0; i < rr->nr_hints; i++) {
        MPQemuAccessHint *h = &rr->hint[i];

        for (uint64_t rel = 0; rel < h->size; rel += h->width) {
            uint64_t value = 0;

            remote_object_bar_access(rr->owner, false, h->region,
                                     h->offset + rel, h->width, &value, NULL);
            stn_le_p(shadow + h->shadow_offset + rel, h->width, value);
        }
    }
    smp_wmb();
    rr->shadow_gen++;
    qatomic_set(&rr->ring->shadow_gen, rr->shadow_gen);
    trace_remote_ring_shadow_refresh(rr->shadow_gen);
}

/* With the BQL: serve one entry; the proxy may change it at any time */
static void remote_ring_serve_entry(RemoteRing *rr, uint32_t seq)
{
    MPQemuRingEntry *e = &rr->ring->entry[seq % MPQEMU_RING_ENTRIES];
    uint32_t cmd = qatomic_read(&e->cmd);
    uint8_t region = qatomic_read(&e->region);
    uint8_t size = qatomic_read(&e->size);
    uint8_t flags = qatomic_read(&e->flags);
    uint64_t offset = qatomic_read(&e->offset);
    uint64_t value = qatomic_read(&e->value);
    bool shadowed = false;
    int status;

    if (cmd == MPQEMU_CMD_BAR_READ || cmd == MPQEMU_CMD_BAR_WRITE) {
        bool write = cmd == MPQEMU_CMD_BAR_WRITE;

        shadowed = !write && remote_ring_shadowed(rr, region, offset, size);
        if (!shadowed) {
            remote_ring_shadow_stale(rr);
        }
        status = remote_object_bar_access(rr->owner, write, region, offset,
                                          size, &value, NULL);
        if (shadowed && (rr->shadow_gen & 1)) {
            remote_ring_shadow_refresh(rr);
        }
    } else {
        status = -EINVAL;
    }
    if (status < 0 && (flags & MPQEMU_RING_POSTED)) {
        qatomic_inc(&rr->ring->posted_errors);
    }
    trace_remote_ring_serve(seq, cmd, flags, status);
    qatomic_set(&e->value, value);
    qatomic_set(&e->status, status);
    qatomic_set(&e->notify_seq, remote_object_notify_count(rr->owner));
}

/*
 * With the BQL: serve what is in the ring, in order, then answer. Requests
 * a hostile proxy claims beyond a full ring are served in later rounds.
 */
static void remote_ring_serve_locked(RemoteRing *rr)
{
    MPQemuRing *ring = rr->ring;
    uint32_t seq = qatomic_load_acquire(&ring->req_seq);

    for (int n = 0; rr->served != seq && n < MPQEMU_RING_ENTRIES; n++) {
        remote_ring_serve_entry(rr, rr->served + 1);
        rr->served++;
    }
    qatomic_store_release(&ring->resp_seq, rr->served);
    smp_mb();
    if (qatomic_read(&ring->proxy_sleeping)) {
        eventfd_write(rr->done_fd, 1);
    }
}

/* The next polling window, after a gap of @gap_ns between requests */
static void remote_ring_adapt(int64_t *poll_ns, int64_t gap_ns)
{
    if (gap_ns > REMOTE_RING_POLL_MAX_NS) {
        *poll_ns = MAX(*poll_ns / 2, REMOTE_RING_POLL_MIN_NS);
    } else if (gap_ns > *poll_ns) {
        *poll_ns = MIN(*poll_ns * 2, REMOTE_RING_POLL_MAX_NS);
    }
    trace_remote_ring_poll_window(gap_ns, *poll_ns);
}

static void *remote_ring_thread(void *opaque)
{
    RemoteRing *rr = opaque;
    MPQemuRing *ring = rr->ring;
    int64_t poll_ns = REMOTE_RING_POLL_START_NS;
    int64_t last_served = 0, busy_until = 0;
    unsigned spins = 0;

    rcu_register_thread();
    while (!qatomic_read(&rr->stop)) {
        struct epoll_event ev[8];
        uint32_t rang[ARRAY_SIZE(ev)];
        unsigned nr_rang = 0;
        int timeout = 0, n;

        if (qatomic_load_acquire(&ring->req_seq) == rr->served) {
            if (get_clock() < busy_until &&
                ++spins % REMOTE_RING_SPINS_PER_EPOLL) {
                /*
                 * Poll, but soon give the CPU to whoever else wants it: on
                 * a host with few CPUs, the device's own I/O threads and
                 * the vCPU need it more than a thread that waits.
                 */
                if (get_clock() - last_served < MPQEMU_RING_SPIN_NS) {
                    cpu_relax();
                } else {
                    sched_yield();
                }
                continue;
            }
            if (get_clock() >= busy_until) {
                /* Idle: sleep, unless a request came while saying so */
                qatomic_set(&ring->remote_sleeping, 1);
                smp_mb();
                if (qatomic_load_acquire(&ring->req_seq) == rr->served) {
                    timeout = -1;
                }
            }
            n = epoll_wait(rr->epoll_fd, ev, ARRAY_SIZE(ev), timeout);
            qatomic_set(&ring->remote_sleeping, 0);
            for (int i = 0; i < n; i++) {
                eventfd_t ignored;

                if (ev[i].data.u64 == RING_EPOLL_KICK) {
                    eventfd_read(rr->kick_fd, &ignored);
                } else if (ev[i].data.u64 >= RING_EPOLL_DOORBELL(0)) {
                    rang[nr_rang++] = ev[i].data.u64 - RING_EPOLL_DOORBELL(0);
                }
            }
            if (!nr_rang &&
                qatomic_load_acquire(&ring->req_seq) == rr->served) {
                continue;
            }
        }

        remote_ring_adapt(&poll_ns, get_clock() - last_served);
        bql_lock();
        if (rr->stop) {
            bql_unlock();
            break;
        }
        /* A doorbell reaches the device after the accesses before it */
        remote_ring_serve_locked(rr);
        for (unsigned i = 0; i < nr_rang; i++) {
            remote_object_doorbell_rang(rr->owner, rang[i]);
        }
        bql_unlock();
        last_served = get_clock();
        busy_until = last_served + poll_ns;
    }
    rcu_unregister_thread();
    remote_ring_free(rr);
    return NULL;
}

static bool remote_ring_epoll_add(RemoteRing *rr, int fd, uint64_t data,
                                  uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.u64 = data };

    return epoll_ctl(rr->epoll_fd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

/*
 * With the BQL: wake the thread when @fd (a doorbell's eventfd) is
 * signalled. Edge-triggered: the thread never reads it, so a descriptor
 * number that is closed and reused meanwhile is never drained by mistake.
 */
bool remote_ring_watch(RemoteRing *rr, int fd, uint32_t id)
{
    return remote_ring_epoll_add(rr, fd, RING_EPOLL_DOORBELL(id),
                                 EPOLLIN | EPOLLET);
}

void remote_ring_unwatch(RemoteRing *rr, int fd)
{
    epoll_ctl(rr->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
}

RemoteRing *remote_ring_start(RemoteObject *owner, const char *name,
                              MPQemuMsg *req, const MPQemuAccessHint *hints,
                              uint32_t nr_hints, uint32_t shadow_size,
                              Error **errp)
{
    uint32_t size = le32_to_cpu(req->u.ring_setup.size);
    g_autofree char *thread_name = g_strdup_printf("ring-%s", name);
    RemoteRing *rr;
    struct stat st;
    void *map;

    /* A memfd that cannot shrink under us (which would kill us by SIGBUS) */
    if (size < MPQEMU_RING_SIZE + shadow_size ||
        size > MPQEMU_RING_SIZE + MPQEMU_SHADOW_MAX ||
        fstat(req->fds[0], &st) < 0 || !S_ISREG(st.st_mode) ||
        st.st_size < size ||
        !(fcntl(req->fds[0], F_GET_SEALS) & F_SEAL_SHRINK)) {
        error_setg(errp, "the ring must be a memfd of %d to %d bytes, room "
                   "for %u bytes of shadow registers, sealed against "
                   "shrinking", MPQEMU_RING_SIZE,
                   MPQEMU_RING_SIZE + MPQEMU_SHADOW_MAX, shadow_size);
        return NULL;
    }
    if (!mpqemu_fd_is_eventfd(req->fds[1]) ||
        !mpqemu_fd_is_eventfd(req->fds[2])) {
        error_setg(errp, "the ring's kick and done descriptors must be "
                   "eventfds");
        return NULL;
    }
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, req->fds[0],
               0);
    if (map == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot map the ring");
        return NULL;
    }

    rr = g_new0(RemoteRing, 1);
    rr->owner = owner;
    rr->ring = map;
    rr->size = size;
    for (uint32_t i = 0; i < nr_hints; i++) {
        if (hints[i].kind == MPQEMU_HINT_SHADOW) {
            rr->hint[rr->nr_hints++] = hints[i];
        }
    }
    /* Stale until a shadowed register is first read */
    rr->shadow_gen = 1;
    qatomic_set(&rr->ring->shadow_gen, rr->shadow_gen);
    /* Requests count from here: the proxy may send one as soon as we reply */
    rr->served = qatomic_load_acquire(&rr->ring->req_seq);
    rr->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    rr->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    rr->kick_fd = req->fds[1];
    if (rr->stop_fd < 0 || rr->epoll_fd < 0 ||
        !remote_ring_epoll_add(rr, rr->kick_fd, RING_EPOLL_KICK, EPOLLIN) ||
        !remote_ring_epoll_add(rr, rr->stop_fd, RING_EPOLL_STOP, EPOLLIN)) {
        error_setg_errno(errp, errno, "cannot set up the ring's thread");
        if (rr->stop_fd >= 0) {
            close(rr->stop_fd);
        }
        if (rr->epoll_fd >= 0) {
            close(rr->epoll_fd);
        }
        munmap(map, size);
        g_free(rr);
        return NULL;
    }
    /* The memory stays mapped; the eventfds are the thread's from now on */
    close(req->fds[0]);
    rr->done_fd = req->fds[2];
    req->hdr.num_fds = 0;
    qemu_socket_set_nonblock(rr->kick_fd);

    qemu_thread_create(&rr->thread, thread_name, remote_ring_thread, rr,
                       QEMU_THREAD_DETACHED);
    return rr;
}

void remote_ring_stop(RemoteRing *rr)
{
    assert(bql_locked());
    /* Wake it first: once it sees stop, it frees @rr and is gone */
    eventfd_write(rr->stop_fd, 1);
    qatomic_set(&rr->stop, true);
}
