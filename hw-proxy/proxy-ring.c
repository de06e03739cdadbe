/*
 * Proxy side of the shared-memory ring: sets up the ring and its shadow
 * area with the remote, and carries BAR accesses through them.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/memfd.h"
#include "qemu/main-loop.h"
#include "qemu/atomic.h"
#include "qemu/timer.h"
#include "qemu/bswap.h"
#include "proxy.h"
#include "trace.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

/* How long a vCPU polls the ring for its answer before it sleeps */
#define PROXY_RING_POLL_NS      (50 * SCALE_US)
/* ... with the CPU to itself for this long; then yielding it between looks */
#define PROXY_RING_SPIN_NS      (5 * SCALE_US)
/* How many looks at the ring between looks at the clock */
#define PROXY_RING_SPINS_PER_CLOCK  8

/*
 * With the BQL. @intx_in_answers: RING_INTX was negotiated; @notify_eventfd:
 * NOTIFY_EVENTFD was, and the main loop can watch the socket for its end only
 */
bool proxy_ring_setup(ProxyLink *link, bool intx_in_answers,
                      bool notify_eventfd, Error **errp)
{
    size_t size = MPQEMU_RING_SIZE + ROUND_UP(link->shadow_size,
                                              qemu_real_host_page_size());
    MPQemuMsg req, reply;
    void *map = MAP_FAILED;
    int mem_fd, kick_fd = -1, done_fd = -1, notify_fd = -1;

    /* sealed: the remote maps it and must not be made to fault */
    mem_fd = qemu_memfd_create("mpqemu-ring", size, false, 0,
                               F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL,
                               errp);
    if (mem_fd < 0) {
        return false;
    }
    kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (notify_eventfd) {
        notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    }
    if (kick_fd >= 0 && done_fd >= 0 && (notify_fd >= 0 || !notify_eventfd)) {
        map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mem_fd, 0);
    }
    if (map == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot set up the ring");
        goto fail;
    }

    mpqemu_msg_init(&req, MPQEMU_CMD_RING_SETUP, 0, 0,
                    sizeof(MPQemuRingSetup));
    req.u.ring_setup.size = cpu_to_le32(size);
    req.hdr.num_fds = MPQEMU_RING_FDS;
    req.fds[0] = mem_fd;
    req.fds[1] = kick_fd;
    req.fds[2] = done_fd;
    if (notify_fd >= 0) {
        req.u.ring_setup.flags = cpu_to_le32(MPQEMU_RING_SETUP_NOTIFY_FD);
        req.hdr.num_fds++;
        req.fds[3] = notify_fd;
    }
    if (!proxy_link_call(link, &req, &reply, errp)) {
        goto fail;
    }
    close(mem_fd);
    qemu_mutex_lock(&link->lock);
    link->ring = map;
    link->ring_size = size;
    link->ring_seq = 0;
    link->ring_answered = 0;
    link->ring_serial = 0;
    link->posted_errors = 0;
    link->ring_kick_fd = kick_fd;
    link->ring_done_fd = done_fd;
    link->ring_intx = intx_in_answers;
    link->ring_notify_fd = notify_fd;
    proxy_link_unlock(link);
    if (notify_fd >= 0) {
        proxy_link_watch_notify_fd(link, notify_fd);
    }
    return true;

fail:
    if (map != MAP_FAILED) {
        munmap(map, size);
    }
    close(mem_fd);
    if (kick_fd >= 0) {
        close(kick_fd);
    }
    if (done_fd >= 0) {
        close(done_fd);
    }
    if (notify_fd >= 0) {
        close(notify_fd);
    }
    return false;
}

/* With the BQL and the link lock, or once nobody else uses the link */
void proxy_ring_close(ProxyLink *link)
{
    if (!link->ring) {
        return;
    }
    if (link->ring_notify_fd >= 0) {
        proxy_link_unwatch_notify_fd(link);
        close(link->ring_notify_fd);
        link->ring_notify_fd = -1;
    }
    munmap(link->ring, link->ring_size);
    close(link->ring_kick_fd);
    close(link->ring_done_fd);
    link->ring = NULL;
    /* a vCPU still waiting finds the link gone: it ends its wait on its own */
    link->socket_reader = false;
    qatomic_set(&link->notify_deferred, false);
}

/*
 * With the BQL and the link lock, for the main loop woken by the notify
 * eventfd: the remote may signal it again for what it sends from now on.
 * False if a halted vCPU waits on the socket meanwhile: what the remote
 * sent is the vCPU's to read, which saves it the wait for the BQL.
 */
bool proxy_ring_notify_seen_locked(ProxyLink *link)
{
    uint64_t count;

    if (!link->ring || link->ring_notify_fd < 0) {
        return true;
    }
    if (eventfd_read(link->ring_notify_fd, &count) < 0) {
        /* EAGAIN: a look at the socket that was not needed */
    }
    qatomic_set(&link->ring->notify_signalled, 0);
    /* Before we read the socket: pairs with remote_ring_notified() */
    smp_mb();
    /* ours, not the ring's copy: that vCPU reads the socket next */
    return !link->socket_reader;
}

/*
 * With the BQL, for a halted vCPU about to wait on @link's socket itself:
 * the remote no longer signals the main loop for what it sends there. The
 * ring it told, or NULL if the main loop watches the socket itself.
 */
MPQemuRing *proxy_ring_socket_reader_begin(ProxyLink *link)
{
    if (!link->ring || !link->watch_notify) {
        return NULL;
    }
    link->socket_reader = true;
    qatomic_set(&link->ring->socket_reader, 1);
    /* Before the vCPU looks at the socket: pairs with remote_ring_notified() */
    smp_mb();
    return link->ring;
}

/*
 * With the BQL, once that vCPU woke up, for the @ring it told: what comes
 * from now on is the main loop's. The vCPU reads the socket next.
 */
void proxy_ring_socket_reader_end(ProxyLink *link, MPQemuRing *ring)
{
    link->socket_reader = false;
    if (link->ring == ring) {
        qatomic_set(&ring->socket_reader, 0);
        smp_mb();
    }
}

/*
 * With the BQL, for the main loop woken by the notify eventfd while another
 * thread holds the link: take the signal rather than wake up for it again
 * and again until that thread lets go; it gives the signal back then
 * (proxy_ring_notify_redeliver_locked), unless we got the link meanwhile.
 */
void proxy_ring_notify_defer(ProxyLink *link)
{
    uint64_t count;

    if (link->ring_notify_fd < 0) {
        return;
    }
    if (eventfd_read(link->ring_notify_fd, &count) < 0) {
        /* EAGAIN: nothing to take, but the flag does no harm */
    }
    qatomic_set(&link->notify_deferred, true);
    /* Before we try the link again: pairs with proxy_link_unlock() */
    smp_mb();
}

/* With the link lock: the main loop reads the socket for a deferred signal */
void proxy_ring_notify_redeliver_locked(ProxyLink *link)
{
    if (qatomic_xchg(&link->notify_deferred, false)) {
        proxy_ring_signal_main_loop(link);
    }
}

/*
 * With the BQL or the link lock: the main loop reads @link's socket, as if
 * the remote said so
 */
void proxy_ring_signal_main_loop(ProxyLink *link)
{
    if (link->ring_notify_fd >= 0 &&
        eventfd_write(link->ring_notify_fd, 1) < 0) {
        /* only if its counter is full: the main loop is woken anyway */
    }
}

/*
 * With the link lock: wait until the remote has served request @seq, for
 * at most the link's timeout from now
 */
static bool proxy_ring_wait_locked(ProxyLink *link, uint32_t seq,
                                   Error **errp)
{
    MPQemuRing *ring = link->ring;
    int64_t start = 0, deadline;
    Error *err = NULL;

    if (!mpqemu_seq_before(link->ring_answered, seq)) {
        return true;
    }

    /*
     * Most answers come within a few hundred nanoseconds: look at the ring,
     * and only now and then at the clock, which costs about as much as a
     * look and would delay seeing the answer.
     */
    for (unsigned spins = 1; !mpqemu_ring_answered(ring, seq); spins++) {
        int64_t waited;

        if (spins % PROXY_RING_SPINS_PER_CLOCK) {
            cpu_relax();
            continue;
        }
        if (!start) {
            start = get_clock();
            continue;
        }
        waited = get_clock() - start;
        if (waited >= PROXY_RING_POLL_NS) {
            break;
        }
        /* a slow one may need our CPU */
        if (waited >= PROXY_RING_SPIN_NS) {
            sched_yield();
        }
    }
    if (mpqemu_ring_answered(ring, seq)) {
        link->ring_answered = seq;
        return true;
    }

    deadline = start + (int64_t)link->timeout_ms * SCALE_MS;
    qatomic_set(&ring->proxy_sleeping, 1);
    smp_mb();
    while (!mpqemu_ring_answered(ring, seq)) {
        struct pollfd pfd[2] = {
            { .fd = link->ring_done_fd, .events = POLLIN },
            { .fd = link->fd, .events = POLLIN },
        };
        int64_t left_ms = (deadline - get_clock()) / SCALE_MS;
        eventfd_t ignored;

        if (left_ms <= 0) {
            error_setg(&err, "the remote process did not answer within "
                       "%u ms", link->timeout_ms);
            proxy_link_break_locked(link, REMOTE_DEVICE_FAILURE_CAUSE_TIMEOUT,
                                    err);
            break;
        }
        if (poll(pfd, 2, left_ms) < 0 && errno != EINTR) {
            error_setg_errno(&err, errno, "remote link: poll");
            proxy_link_break_locked(link,
                                    REMOTE_DEVICE_FAILURE_CAUSE_DISCONNECTED,
                                    err);
            break;
        }
        if (pfd[0].revents) {
            eventfd_read(link->ring_done_fd, &ignored);
        }
        /* the socket: notifications, or the end of the remote */
        if (pfd[1].revents && !proxy_link_take_notifications(link, 0)) {
            break;
        }
    }
    qatomic_set(&ring->proxy_sleeping, 0);
    if (link->dead) {
        error_setg(errp, "%s (waiting for a BAR access)", link->broken);
        return false;
    }
    link->ring_answered = seq;
    return true;
}

/* With the link lock: the posted writes the remote refused, said once */
static void proxy_ring_check_posted_errors(ProxyLink *link)
{
    uint32_t errors = qatomic_read(&link->ring->posted_errors);

    if (errors != link->posted_errors) {
        warn_report_once("x-pci-proxy-dev: the remote process refused %u "
                         "posted BAR writes", errors - link->posted_errors);
        link->posted_errors = errors;
    }
}

/* With the link lock: let the remote serve everything in the ring */
bool proxy_ring_drain_locked(ProxyLink *link, Error **errp)
{
    if (!link->ring) {
        return true;
    }
    if (!proxy_ring_wait_locked(link, link->ring_seq, errp)) {
        return false;
    }
    proxy_ring_check_posted_errors(link);
    return true;
}

/*
 * How a write of @size bytes at @offset is to be made, if it could be
 * posted: MPQEMU_HINT_SYNC_WRITE if it touches such a range, else
 * MPQEMU_HINT_SERIAL_WRITE if it touches such a range, else 0 (posted).
 */
static uint8_t proxy_ring_write_kind(ProxyLink *link, uint8_t region,
                                     uint64_t offset, uint8_t size)
{
    uint8_t kind = 0;

    for (uint32_t i = 0; i < link->nr_hints; i++) {
        const MPQemuAccessHint *h = &link->hints[i];

        if (h->region != region || offset >= h->offset + h->size ||
            h->offset >= offset + size) {
            continue;
        }
        if (h->kind == MPQEMU_HINT_SYNC_WRITE) {
            return MPQEMU_HINT_SYNC_WRITE;
        }
        if (h->kind == MPQEMU_HINT_SERIAL_WRITE) {
            kind = MPQEMU_HINT_SERIAL_WRITE;
        }
    }
    return kind;
}

const MPQemuAccessHint *proxy_ring_find_hint(ProxyLink *link, uint8_t kind,
                                             uint8_t region, uint64_t offset,
                                             uint8_t size)
{
    for (uint32_t i = 0; i < link->nr_hints; i++) {
        const MPQemuAccessHint *h = &link->hints[i];

        if (h->kind == kind && h->region == region && offset >= h->offset &&
            size <= h->size && offset - h->offset <= h->size - size) {
            return h;
        }
    }
    return NULL;
}

/*
 * With the link lock: a read served from the shadow copy, if the register
 * is shadowed, nothing the guest did is still in the ring, and the copy is
 * current. False if the read must go to the device.
 */
static bool proxy_ring_shadow_read_locked(ProxyLink *link, uint8_t region,
                                          uint64_t offset, uint8_t size,
                                          uint64_t *value)
{
    MPQemuRing *ring = link->ring;
    const MPQemuAccessHint *h;
    uint64_t rel, v;
    uint32_t gen;

    h = proxy_ring_find_hint(link, MPQEMU_HINT_SHADOW, region, offset, size);
    if (!h) {
        return false;
    }
    rel = offset - h->offset;
    if (h->flags & MPQEMU_SHADOW_BYTES
        ? size < h->min_size || size > h->max_size
        : size != h->width || rel % h->width) {
        return false;
    }
    if (link->ring_answered != link->ring_seq &&
        !mpqemu_ring_answered(ring, link->ring_seq)) {
        return false;
    }
    gen = qatomic_load_acquire(&ring->shadow_gen);
    if (gen & 1) {
        return false;
    }
    v = ldn_le_p(mpqemu_ring_shadow(ring) + h->shadow_offset + rel, size);
    smp_rmb();
    if (qatomic_read(&ring->shadow_gen) != gen) {
        return false;
    }
    *value = v;
    return true;
}

/* With the link lock: an answer that breaks the protocol ends the link */
static bool proxy_ring_bad_answer(ProxyLink *link, Error *err, Error **errp)
{
    proxy_link_break_locked(link, REMOTE_DEVICE_FAILURE_CAUSE_PROTOCOL, err);
    error_setg(errp, "%s (waiting for a BAR access)", link->broken);
    return false;
}

/*
 * With the link lock: one BAR access through the ring. An access that is
 * waited for is answered with how many notifications the remote had sent
 * by then; those are taken from the socket before the access completes, so
 * an interrupt the device raised or lowered before answering is in effect
 * when the guest sees the answer.
 */
bool proxy_ring_access_locked(ProxyLink *link, bool write, uint8_t region,
                              uint64_t offset, uint8_t size, uint64_t *value,
                              bool posted, Error **errp)
{
    MPQemuRing *ring = link->ring;
    uint32_t seq = link->ring_seq + 1;
    MPQemuRingEntry *e = mpqemu_ring_entry(ring, seq);
    Error *err = NULL;
    uint32_t notified, notify_seq;
    int64_t deadline;
    uint8_t intx, kind;
    int status;

    if (!write && link->nr_hints &&
        proxy_ring_shadow_read_locked(link, region, offset, size, value)) {
        trace_proxy_shadow_read(region, offset, size, *value);
        return true;
    }
    kind = posted && write && link->post_writes
           ? proxy_ring_write_kind(link, region, offset, size)
           : MPQEMU_HINT_SYNC_WRITE;
    posted = kind != MPQEMU_HINT_SYNC_WRITE;

    /*
     * The entry is free once the request that used it last was served.
     * Usually we know that already: looking would fetch the entry's cache
     * line from the remote just before we write it, one transfer too many.
     * A serial write also waits until the one before it was served; one
     * a ring's length back or more was, since its entry is free again.
     */
    if (!proxy_ring_wait_locked(link, seq - MPQEMU_RING_ENTRIES, errp) ||
        (kind == MPQEMU_HINT_SERIAL_WRITE &&
         link->ring_seq - link->ring_serial < MPQEMU_RING_ENTRIES &&
         !proxy_ring_wait_locked(link, link->ring_serial, errp))) {
        return false;
    }
    if (kind == MPQEMU_HINT_SERIAL_WRITE) {
        link->ring_serial = seq;
    }
    qatomic_set(&e->cmd, write ? MPQEMU_CMD_BAR_WRITE : MPQEMU_CMD_BAR_READ);
    qatomic_set(&e->region, region);
    qatomic_set(&e->size, size);
    qatomic_set(&e->flags, posted ? MPQEMU_RING_POSTED : 0);
    qatomic_set(&e->intx, 0);
    qatomic_set(&e->offset, offset);
    qatomic_set(&e->value, *value);
    notified = link->notify_count;
    qatomic_store_release(&e->req_seq, seq);
    link->ring_seq = seq;
    smp_mb();
    if (qatomic_read(&ring->remote_sleeping)) {
        eventfd_write(link->ring_kick_fd, 1);
    }
    if (posted) {
        return true;
    }

    if (!proxy_ring_wait_locked(link, seq, errp)) {
        return false;
    }
    status = qatomic_read(&e->status);
    notify_seq = qatomic_read(&e->notify_seq);
    *value = qatomic_read(&e->value);
    intx = qatomic_read(&e->intx);
    if (intx && (!link->ring_intx || !(intx & MPQEMU_RING_INTX_CHANGED) ||
                 (intx & ~(MPQEMU_RING_INTX_CHANGED |
                           MPQEMU_RING_INTX_LEVEL)))) {
        error_setg(&err, "the remote process answered a BAR access with "
                   "INTx state 0x%x%s", intx, link->ring_intx ? "" :
                   ", which was not negotiated");
        return proxy_ring_bad_answer(link, err, errp);
    }
    if (mpqemu_seq_before(notify_seq, notified)) {
        error_setg(&err, "the remote process answered a BAR access as if it "
                   "had sent %u notifications, but %u came before the "
                   "request", notify_seq, notified);
        return proxy_ring_bad_answer(link, err, errp);
    }
    if (mpqemu_seq_before(link->notify_count, notify_seq)) {
        deadline = get_clock() + (int64_t)link->timeout_ms * SCALE_MS;
    }
    while (mpqemu_seq_before(link->notify_count, notify_seq)) {
        int64_t left_ms = (deadline - get_clock()) / SCALE_MS;

        if (left_ms <= 0) {
            error_setg(&err, "the remote process did not send the %u "
                       "notifications it announced", notify_seq -
                       link->notify_count);
            proxy_link_break_locked(link, REMOTE_DEVICE_FAILURE_CAUSE_TIMEOUT,
                                    err);
        }
        if (link->dead || !proxy_link_take_notifications(link, left_ms)) {
            error_setg(errp, "%s (waiting for a BAR access)", link->broken);
            return false;
        }
    }
    /* between the notifications sent before it and those sent after */
    if (intx) {
        proxy_link_queue_intx_locked(link, intx & MPQEMU_RING_INTX_LEVEL,
                                     notify_seq);
    }
    proxy_ring_check_posted_errors(link);
    if (status < 0) {
        error_setg(errp, "remote refused a BAR access of %u bytes at 0x%"
                   PRIx64 " of region %u: %s", size, offset, region,
                   strerror(-status));
        return false;
    }
    return true;
}
