/*
 * Remote side of the shared-memory ring: the main loop serves the BAR accesses
 * the proxy queues, keeps the shadow copy of side-effect-free registers, and
 * passes doorbell eventfds on to the device once the ring is drained (a copy
 * of registers the device also changes on its own is stale whenever the
 * main loop may run the device's code, see remote_rings_quiet). While
 * a device is busy the main loop polls its ring (and the completions of the
 * block layer) instead of sleeping, for a window that adapts to the gaps
 * between requests; while all are idle it sleeps as usual.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/atomic.h"
#include "qemu/main-loop.h"
#include "block/aio.h"
#include "qemu/sockets.h"
#include "qemu/bswap.h"
#include "mpqemu/socket.h"
#include "remote.h"
#include "trace.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <poll.h>

/*
 * How long the main loop keeps polling a ring after a request before it
 * sleeps: a window that adapts to the gaps between requests, doorbells
 * included. A request that comes after the window closed, but not long
 * after, widens it (it would have saved a wake-up); a gap longer than the
 * widest window narrows it. Polling through a wait for the disk saves one
 * wake-up, about 20 µs, for as much CPU as the wait lasts, which the VM's
 * other threads need more: the widest window covers a guest's bursts of
 * accesses, not its waits for I/O. A doorbell that finds the main loop
 * asleep costs the vCPU that rang it the wake-up (20-50 µs of its time):
 * a virtio disk at QD1 rings one every 120-200 µs.
 */
#define REMOTE_RING_POLL_MIN_NS     (50 * SCALE_US)
#define REMOTE_RING_POLL_START_NS   (100 * SCALE_US)
#define REMOTE_RING_POLL_MAX_NS     (200 * SCALE_US)
/*
 * Polling happens in stretches of at most this long, each followed by one
 * pass of the main loop that does not wait (timers, QMP, other devices).
 */
#define REMOTE_RING_STRETCH_NS      (200 * SCALE_US)
/*
 * How long the main loop polls with the CPU to itself after it found work;
 * after that it yields between looks. Shorter than the proxy's spin: here
 * the same thread also runs the device, whose I/O threads and the vCPU
 * need the CPU more than a poll does.
 */
#define REMOTE_RING_SPIN_NS         (1 * SCALE_US)
/*
 * While polling, how often to look at what takes a system call to see: the
 * doorbells' relays, the proxy's socket, the main AioContext's descriptors.
 * The ring and the block layer's completions are seen at every spin.
 */
#define REMOTE_RING_LOOK_NS         (5 * SCALE_US)
/* How many spins between looks at the clock while nothing happens */
#define REMOTE_RING_SPINS_PER_CLOCK 8

/* epoll data of the doorbells: their id */
#define RING_EPOLL_DOORBELL(id) ((uint64_t)(id))

struct RemoteRing {
    RemoteObject *owner;
    MPQemuRing *ring;
    size_t size;
    MPQemuAccessHint hint[MPQEMU_MAX_HINTS];    /* host order, shadows only */
    uint32_t nr_hints;
    uint32_t shadow_gen;        /* ours; the page's copy is only published */
    bool shadow_autonomous;     /* the device changes it on its own too */
    /* made stale only in case the main loop ran the device: see suspend */
    bool shadow_suspended;
    uint32_t served;            /* the last request answered */
    int kick_fd;
    int done_fd;
    int notify_fd;              /* signalled after notifications, or -1 */
    int epoll_fd;               /* the doorbells' relays */
    uint32_t nr_watched;        /* ... how many */
    int socket_fd;              /* the proxy's connection */
    int64_t poll_ns;            /* the polling window, adapted */
    int64_t last_served;
    int64_t busy_until;         /* poll until then */
    bool stopped;               /* freed by a bottom half, out of any loop */
    QLIST_ENTRY(RemoteRing) next;
};

/* Every ring of this process; the main loop serves them all */
static QLIST_HEAD(, RemoteRing) remote_rings =
    QLIST_HEAD_INITIALIZER(remote_rings);
static Notifier remote_rings_poll_notifier;
static bool remote_rings_polling;
/* A doorbell was passed on: its device's handler runs in the main loop */
static bool remote_rings_pass_wanted;
/*
 * Whether the main loop runs nothing but the rings: from the moment it
 * prepares to wait until it wakes up. While it is not quiet, bottom halves,
 * descriptor handlers and timers may run any device's code, which may
 * change registers on its own (the LSI's SCRIPTS go on when a disk request
 * completes): autonomous copies are stale then, and only a read served
 * while quiet makes them current again. QEMU's main loop has no hook
 * between its wake-up and its dispatch; the check function of a GSource
 * that runs before all others is that hook.
 */
static bool remote_rings_quiet;

static void remote_ring_free(void *opaque)
{
    RemoteRing *rr = opaque;

    munmap(rr->ring, rr->size);
    close(rr->kick_fd);
    close(rr->done_fd);
    if (rr->notify_fd >= 0) {
        close(rr->notify_fd);
    }
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

static void remote_ring_shadow_publish(RemoteRing *rr, uint32_t gen)
{
    rr->shadow_gen = gen;
    qatomic_set(&rr->ring->shadow_gen, gen);
    smp_mb();
}

/* With the BQL: the registers may change from now on */
void remote_ring_shadow_stale(RemoteRing *rr)
{
    rr->shadow_suspended = false;
    if (!rr->nr_hints || (rr->shadow_gen & 1)) {
        return;
    }
    remote_ring_shadow_publish(rr, rr->shadow_gen + 1);
}

/*
 * With the BQL: the main loop is about to run code that may be a device's.
 * The copies it could change on their own are stale from now on.
 */
static void remote_rings_shadows_suspend(void)
{
    RemoteRing *rr;

    remote_rings_quiet = false;
    QLIST_FOREACH(rr, &remote_rings, next) {
        /* what an earlier suspension guarded may have run: stale for good */
        rr->shadow_suspended = false;
        if (rr->shadow_autonomous && !(rr->shadow_gen & 1)) {
            remote_ring_shadow_publish(rr, rr->shadow_gen + 1);
            rr->shadow_suspended = true;
        }
    }
}

/*
 * With the BQL, right after remote_rings_shadows_suspend(): ... and it ran
 * nothing. A copy that this suspension made stale, and that nothing else
 * made stale or refreshed meanwhile, holds what the registers hold: it is
 * current again, with the generation it had. (A proxy that read it during
 * the pause saw the same bytes, so the generation may come back.)
 */
static void remote_rings_shadows_resume(void)
{
    RemoteRing *rr;

    remote_rings_quiet = true;
    QLIST_FOREACH(rr, &remote_rings, next) {
        if (rr->shadow_suspended) {
            rr->shadow_suspended = false;
            remote_ring_shadow_publish(rr, rr->shadow_gen - 1);
        }
    }
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
    rr->shadow_suspended = false;
    remote_ring_shadow_publish(rr, rr->shadow_gen + 1);
    trace_remote_ring_shadow_refresh(rr->shadow_gen);
}

/*
 * With the BQL, while quiet: make the copies the device changes on its own
 * current again as soon as they are stale. Their registers are the ones a
 * guest reads right after it wrote or was interrupted (the LSI's ISTAT in
 * its interrupt handler): rather than one round trip each, such reads then
 * find the copy current. Registers of other devices change only with an
 * access; their copies are made current by the next shadowed read.
 */
static void remote_rings_refresh_autonomous(void)
{
    RemoteRing *rr;

    assert(remote_rings_quiet);
    QLIST_FOREACH(rr, &remote_rings, next) {
        if (!rr->stopped && rr->shadow_autonomous && (rr->shadow_gen & 1)) {
            remote_ring_shadow_refresh(rr);
        }
    }
}

/* With the BQL: serve one entry; the proxy may change it at any time */
static void remote_ring_serve_entry(RemoteRing *rr, uint32_t seq)
{
    MPQemuRingEntry *e = mpqemu_ring_entry(rr->ring, seq);
    uint32_t cmd = qatomic_read(&e->cmd);
    uint8_t region = qatomic_read(&e->region);
    uint8_t size = qatomic_read(&e->size);
    uint8_t flags = qatomic_read(&e->flags);
    uint64_t offset = qatomic_read(&e->offset);
    uint64_t value = qatomic_read(&e->value);
    bool awaited = !(flags & MPQEMU_RING_POSTED);
    bool shadowed = false;
    int status, intx = -1;

    if (cmd == MPQEMU_CMD_BAR_READ || cmd == MPQEMU_CMD_BAR_WRITE) {
        bool write = cmd == MPQEMU_CMD_BAR_WRITE;

        shadowed = !write && remote_ring_shadowed(rr, region, offset, size);
        if (!shadowed) {
            remote_ring_shadow_stale(rr);
        }
        if (awaited) {
            remote_object_ring_answer_begin(rr->owner);
        }
        status = remote_object_bar_access(rr->owner, write, region, offset,
                                          size, &value, NULL);
        if (awaited) {
            intx = remote_object_ring_answer_end(rr->owner);
        }
        if (shadowed && (rr->shadow_gen & 1) &&
            (remote_rings_quiet || !rr->shadow_autonomous)) {
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
    qatomic_set(&e->intx, intx < 0 ? 0 : MPQEMU_RING_INTX_CHANGED | intx);
    qatomic_set(&e->notify_seq, remote_object_notify_count(rr->owner));
    qatomic_store_release(&e->resp_seq, seq);
}

/* Whether the proxy queued the request after the last one served */
static bool remote_ring_pending(RemoteRing *rr)
{
    uint32_t next = rr->served + 1;
    MPQemuRingEntry *e = mpqemu_ring_entry(rr->ring, next);

    return qatomic_load_acquire(&e->req_seq) == next;
}

/*
 * With the BQL: serve what is in the ring, in order, answering each entry
 * as it is done. Requests a hostile proxy keeps queueing are served in
 * later rounds, a ring's worth at a time.
 */
static void remote_ring_serve_locked(RemoteRing *rr)
{
    MPQemuRing *ring = rr->ring;

    for (int n = 0; n < MPQEMU_RING_ENTRIES && remote_ring_pending(rr); n++) {
        remote_ring_serve_entry(rr, rr->served + 1);
        rr->served++;
    }
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

/* With the BQL: serve what the proxy queued, if anything; true if it did */
static bool remote_ring_serve(RemoteRing *rr)
{
    int64_t now;

    if (rr->stopped || !remote_ring_pending(rr)) {
        return false;
    }
    remote_ring_serve_locked(rr);
    /* the clock is read once the proxy has its answer */
    now = get_clock();
    remote_ring_adapt(&rr->poll_ns, now - rr->last_served);
    rr->last_served = now;
    rr->busy_until = now + rr->poll_ns;
    return true;
}

/*
 * With the BQL: pass on the doorbells the proxy rang, after the accesses it
 * queued before them. True if there were any.
 */
static bool remote_ring_take_doorbells(RemoteRing *rr)
{
    struct epoll_event ev[8];
    int64_t now;
    int n;

    if (rr->stopped || !rr->nr_watched) {
        return false;
    }
    n = epoll_wait(rr->epoll_fd, ev, ARRAY_SIZE(ev), 0);
    if (n <= 0) {
        return false;
    }
    remote_ring_serve(rr);
    remote_rings_pass_wanted = true;
    for (int i = 0; i < n && !rr->stopped; i++) {
        remote_object_doorbell_rang(rr->owner,
                                    ev[i].data.u64 - RING_EPOLL_DOORBELL(0));
    }
    now = get_clock();
    remote_ring_adapt(&rr->poll_ns, now - rr->last_served);
    rr->last_served = now;
    rr->busy_until = now + rr->poll_ns;
    return true;
}

/* Whether the proxy sent something on the socket: the main loop's to read */
static bool remote_ring_socket_readable(RemoteRing *rr)
{
    struct pollfd pfd = { .fd = rr->socket_fd, .events = POLLIN };

    return !rr->stopped && poll(&pfd, 1, 0) > 0;
}

/* The proxy kicked a sleeping ring */
static void remote_ring_kicked(void *opaque)
{
    RemoteRing *rr = opaque;
    eventfd_t ignored;

    eventfd_read(rr->kick_fd, &ignored);
    qatomic_set(&rr->ring->remote_sleeping, 0);
    remote_ring_serve(rr);
}

/* A doorbell rang while the main loop slept */
static void remote_ring_doorbell_readable(void *opaque)
{
    RemoteRing *rr = opaque;

    qatomic_set(&rr->ring->remote_sleeping, 0);
    remote_ring_take_doorbells(rr);
}

/*
 * With the BQL, before the main loop waits: poll the rings while any is
 * busy, for one stretch, then let the main loop make one pass without
 * waiting. The block layer's completions are bottom halves of the main
 * AioContext: while polling, they are run here at once, rather than
 * waking a main loop that would sleep.
 */
static void remote_rings_poll(Notifier *notifier, void *data)
{
    MainLoopPoll *mlpoll = data;
    AioContext *main_ctx = qemu_get_aio_context();
    int64_t now = get_clock(), stretch_end = now + REMOTE_RING_STRETCH_NS;
    int64_t last_work = now, next_look = now + REMOTE_RING_LOOK_NS;
    unsigned spins = 0;
    RemoteRing *rr, *next_rr;

    if (mlpoll->state != MAIN_LOOP_POLL_FILL) {
        return;
    }
    /* Since it woke up, the main loop ran what it had to; now only rings */
    remote_rings_quiet = true;
    for (;;) {
        bool busy = false, worked = false, look = false, socket = false;

        if (remote_rings_pass_wanted) {
            /* the main loop runs the doorbell's handler, then we go on */
            remote_rings_pass_wanted = false;
            mlpoll->timeout = 0;
            return;
        }

        QLIST_FOREACH_SAFE(rr, &remote_rings, next, next_rr) {
            worked |= remote_ring_serve(rr);
        }
        if (now >= next_look) {
            look = true;
            next_look = now + REMOTE_RING_LOOK_NS;
            QLIST_FOREACH_SAFE(rr, &remote_rings, next, next_rr) {
                worked |= remote_ring_take_doorbells(rr);
                socket |= remote_ring_socket_readable(rr);
            }
        }
        /*
         * A completion; now and then also the main AioContext's descriptors:
         * the device's own doorbell notifiers, which a write or a relay may
         * have signalled, and the block layer's completion descriptors.
         */
        if (qatomic_read(&main_ctx->notified) || look) {
            remote_rings_shadows_suspend();
            if (!aio_poll(main_ctx, false)) {
                remote_rings_shadows_resume();
            }
            /* what ran is done: from here on, only rings again */
            remote_rings_quiet = true;
            look = true;
        }
        /* spinning: the clock matters only now and then */
        if (!worked && !look && ++spins % REMOTE_RING_SPINS_PER_CLOCK) {
            cpu_relax();
            continue;
        }
        now = get_clock();
        if (worked) {
            last_work = now;
        }
        QLIST_FOREACH(rr, &remote_rings, next) {
            busy |= now < rr->busy_until;
        }
        if (!busy) {
            break;
        }
        if (socket || now >= stretch_end) {
            /* back soon: after the main loop had a look at its descriptors */
            mlpoll->timeout = 0;
            return;
        }
        /* while the guest is busy with the device: see refresh_autonomous */
        remote_rings_refresh_autonomous();
        if (!remote_rings_polling) {
            remote_rings_polling = true;
            QLIST_FOREACH(rr, &remote_rings, next) {
                qatomic_set(&rr->ring->remote_sleeping, 0);
            }
        }
        /* Most requests come at once; then let others have the CPU */
        if (now - last_work < REMOTE_RING_SPIN_NS) {
            cpu_relax();
        } else {
            sched_yield();
        }
    }

    /* Idle: sleep, unless a request came while saying so */
    remote_rings_polling = false;
    QLIST_FOREACH(rr, &remote_rings, next) {
        qatomic_set(&rr->ring->remote_sleeping, 1);
    }
    smp_mb();
    QLIST_FOREACH_SAFE(rr, &remote_rings, next, next_rr) {
        if (remote_ring_serve(rr)) {
            mlpoll->timeout = 0;
        }
    }
}

/* The main loop's wake-up: its dispatch follows */
static gboolean remote_rings_wake_prepare(GSource *source, gint *timeout)
{
    *timeout = -1;
    return FALSE;
}

static gboolean remote_rings_wake_check(GSource *source)
{
    remote_rings_shadows_suspend();
    return FALSE;
}

static gboolean remote_rings_wake_dispatch(GSource *source,
                                           GSourceFunc callback,
                                           gpointer user_data)
{
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs remote_rings_wake_funcs = {
    .prepare = remote_rings_wake_prepare,
    .check = remote_rings_wake_check,
    .dispatch = remote_rings_wake_dispatch,
};

/*
 * With the BQL: serve the ring when @fd (a doorbell's eventfd) is signalled.
 * Edge-triggered: nobody here reads it, so a descriptor number that is
 * closed and reused meanwhile is never drained by mistake.
 */
bool remote_ring_watch(RemoteRing *rr, int fd, uint32_t id)
{
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLET,
        .data.u64 = RING_EPOLL_DOORBELL(id),
    };

    if (epoll_ctl(rr->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        return false;
    }
    rr->nr_watched++;
    return true;
}

void remote_ring_unwatch(RemoteRing *rr, int fd)
{
    if (epoll_ctl(rr->epoll_fd, EPOLL_CTL_DEL, fd, NULL) == 0) {
        rr->nr_watched--;
    }
}

/*
 * With the BQL, once a notification was sent on the socket: tell the proxy's
 * main loop, unless a halted vCPU reads the socket or it was told already
 */
void remote_ring_notified(RemoteRing *rr)
{
    MPQemuRing *ring = rr->ring;

    if (rr->notify_fd < 0) {
        return;
    }
    /* The message is queued before we look: pairs with the proxy's barriers */
    smp_mb();
    if (qatomic_read(&ring->socket_reader) ||
        qatomic_read(&ring->notify_signalled)) {
        return;
    }
    qatomic_set(&ring->notify_signalled, 1);
    trace_remote_ring_notify_signal();
    if (eventfd_write(rr->notify_fd, 1) < 0) {
        /* only if its counter is full: the proxy has a wake-up pending */
    }
}

/*
 * With the BQL: map the ring the proxy set up with @req and serve it from
 * the main loop. @socket_fd is the proxy's connection: the main loop stops
 * polling as soon as the proxy sends something there. @features are those
 * negotiated.
 */
RemoteRing *remote_ring_start(RemoteObject *owner, int socket_fd,
                              MPQemuMsg *req, const RemoteHints *hints,
                              uint64_t features, Error **errp)
{
    uint32_t shadow_size = hints->shadow_size;
    uint32_t size = le32_to_cpu(req->u.ring_setup.size);
    uint32_t flags = le32_to_cpu(req->u.ring_setup.flags);
    bool with_notify_fd = flags & MPQEMU_RING_SETUP_NOTIFY_FD;
    GSource *wake;
    RemoteRing *rr;
    struct stat st;
    void *map;
    int epoll_fd;

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
    if (flags & ~MPQEMU_RING_SETUP_FLAGS_ALL) {
        error_setg(errp, "RING_SETUP has unknown flags 0x%x",
                   flags & ~MPQEMU_RING_SETUP_FLAGS_ALL);
        return NULL;
    }
    if (with_notify_fd && !(features & MPQEMU_FEATURE_NOTIFY_EVENTFD)) {
        error_setg(errp, "a notify eventfd needs NOTIFY_EVENTFD, which was "
                   "not negotiated");
        return NULL;
    }
    if (!mpqemu_fd_is_eventfd(req->fds[1]) ||
        !mpqemu_fd_is_eventfd(req->fds[2]) ||
        (with_notify_fd && !mpqemu_fd_is_eventfd(req->fds[3]))) {
        error_setg(errp, "the ring's kick, done and notify descriptors must "
                   "be eventfds");
        return NULL;
    }
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) {
        error_setg_errno(errp, errno, "cannot watch the ring's doorbells");
        return NULL;
    }
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, req->fds[0],
               0);
    if (map == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot map the ring");
        close(epoll_fd);
        return NULL;
    }

    rr = g_new0(RemoteRing, 1);
    rr->owner = owner;
    rr->ring = map;
    rr->size = size;
    for (uint32_t i = 0; i < hints->nr; i++) {
        if (hints->hint[i].kind == MPQEMU_HINT_SHADOW) {
            rr->hint[rr->nr_hints++] = hints->hint[i];
        }
    }
    rr->shadow_autonomous = hints->shadow_autonomous;
    /* Stale until a shadowed register is first read */
    rr->shadow_gen = 1;
    qatomic_set(&rr->ring->shadow_gen, rr->shadow_gen);
    /* The proxy's first request will be number 1 */
    rr->served = 0;
    rr->poll_ns = REMOTE_RING_POLL_START_NS;
    rr->epoll_fd = epoll_fd;
    rr->socket_fd = socket_fd;
    /* The memory stays mapped; the eventfds are the ring's from now on */
    close(req->fds[0]);
    rr->kick_fd = req->fds[1];
    rr->done_fd = req->fds[2];
    rr->notify_fd = with_notify_fd ? req->fds[3] : -1;
    req->hdr.num_fds = 0;
    qemu_socket_set_nonblock(rr->kick_fd);
    if (with_notify_fd) {
        qemu_socket_set_nonblock(rr->notify_fd);
    }
    qatomic_set(&rr->ring->remote_sleeping, !remote_rings_polling);

    qemu_set_fd_handler(rr->kick_fd, remote_ring_kicked, NULL, rr);
    qemu_set_fd_handler(rr->epoll_fd, remote_ring_doorbell_readable, NULL, rr);
    if (!remote_rings_poll_notifier.notify) {
        remote_rings_poll_notifier.notify = remote_rings_poll;
        main_loop_poll_add_notifier(&remote_rings_poll_notifier);
        /* checked first, so before anything is dispatched; never removed */
        wake = g_source_new(&remote_rings_wake_funcs, sizeof(GSource));
        g_source_set_priority(wake, G_MININT);
        g_source_attach(wake, NULL);
        g_source_unref(wake);
    }
    /* We are in a request's handler: the main loop is not quiet */
    remote_rings_quiet = false;
    QLIST_INSERT_HEAD(&remote_rings, rr, next);
    return rr;
}

/*
 * With the BQL: stop serving the ring. It may be in the middle of serving a
 * request (one that ended the connection): it is freed once out of that.
 */
void remote_ring_stop(RemoteRing *rr)
{
    assert(bql_locked());
    qemu_set_fd_handler(rr->kick_fd, NULL, NULL, NULL);
    qemu_set_fd_handler(rr->epoll_fd, NULL, NULL, NULL);
    QLIST_REMOVE(rr, next);
    rr->stopped = true;
    aio_bh_schedule_oneshot(qemu_get_aio_context(), remote_ring_free, rr);
}
