/*
 * Remote side of the shared-memory ring: a thread serves the BAR accesses
 * the proxy puts in the ring, polling while the device is busy and sleeping
 * on an eventfd while it is idle.
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
#include "remote.h"
#include "trace.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

/* How long the thread keeps polling after a request before it sleeps */
#define REMOTE_RING_POLL_NS     (200 * SCALE_US)

struct RemoteRing {
    RemoteObject *owner;        /* only touched with the BQL, unless stopped */
    MPQemuRing *ring;
    uint32_t served;            /* the last request answered */
    int kick_fd;
    int done_fd;
    int stop_fd;
    bool stop;                  /* set with the BQL; the thread then leaves */
    QemuThread thread;
};

static void remote_ring_free(RemoteRing *rr)
{
    munmap(rr->ring, MPQEMU_RING_SIZE);
    close(rr->kick_fd);
    close(rr->done_fd);
    close(rr->stop_fd);
    g_free(rr);
}

/* Serve the request numbered @seq; false once the ring is being stopped */
static bool remote_ring_serve(RemoteRing *rr, uint32_t seq)
{
    MPQemuRing *ring = rr->ring;
    /* Read each field once: the proxy may change the page at any time */
    uint32_t cmd = qatomic_read(&ring->cmd);
    uint32_t region = qatomic_read(&ring->region);
    uint32_t size = qatomic_read(&ring->size);
    uint64_t offset = qatomic_read(&ring->offset);
    uint64_t value = qatomic_read(&ring->value);
    uint32_t notify_seq;
    int status;

    bql_lock();
    if (rr->stop) {
        bql_unlock();
        return false;
    }
    if (cmd == MPQEMU_CMD_BAR_READ || cmd == MPQEMU_CMD_BAR_WRITE) {
        status = remote_object_bar_access(rr->owner,
                                          cmd == MPQEMU_CMD_BAR_WRITE,
                                          region, offset, size, &value, NULL);
    } else {
        status = -EINVAL;
    }
    notify_seq = remote_object_notify_count(rr->owner);
    bql_unlock();

    trace_remote_ring_serve(seq, cmd, status);
    qatomic_set(&ring->result, value);
    qatomic_set(&ring->status, status);
    qatomic_set(&ring->notify_seq, notify_seq);
    qatomic_store_release(&ring->resp_seq, seq);
    smp_mb();
    if (qatomic_read(&ring->proxy_sleeping)) {
        eventfd_write(rr->done_fd, 1);
    }
    return true;
}

static void *remote_ring_thread(void *opaque)
{
    RemoteRing *rr = opaque;
    MPQemuRing *ring = rr->ring;
    uint32_t served = rr->served;
    int64_t busy_until = 0;

    rcu_register_thread();
    while (!qatomic_read(&rr->stop)) {
        uint32_t seq = qatomic_load_acquire(&ring->req_seq);
        struct pollfd pfd[2] = {
            { .fd = rr->kick_fd, .events = POLLIN },
            { .fd = rr->stop_fd, .events = POLLIN },
        };
        eventfd_t ignored;

        if (seq != served) {
            if (!remote_ring_serve(rr, seq)) {
                break;
            }
            served = seq;
            busy_until = get_clock() + REMOTE_RING_POLL_NS;
            continue;
        }
        if (get_clock() < busy_until) {
            cpu_relax();
            continue;
        }
        /* Idle: sleep, unless a request came while saying so */
        qatomic_set(&ring->remote_sleeping, 1);
        smp_mb();
        if (qatomic_load_acquire(&ring->req_seq) == served) {
            while (poll(pfd, 2, -1) < 0 && errno == EINTR) {
                /* retry */
            }
            if (pfd[0].revents) {
                eventfd_read(rr->kick_fd, &ignored);
            }
        }
        qatomic_set(&ring->remote_sleeping, 0);
    }
    rcu_unregister_thread();
    remote_ring_free(rr);
    return NULL;
}

static bool is_eventfd(int fd)
{
    g_autofree char *link = g_strdup_printf("/proc/self/fd/%d", fd);
    g_autofree char *target = g_file_read_link(link, NULL);

    return target && g_str_equal(target, "anon_inode:[eventfd]");
}

RemoteRing *remote_ring_start(RemoteObject *owner, const char *name,
                              MPQemuMsg *req, Error **errp)
{
    uint32_t size = le32_to_cpu(req->u.ring_setup.size);
    g_autofree char *thread_name = g_strdup_printf("ring-%s", name);
    RemoteRing *rr;
    struct stat st;
    void *map;

    /* A memfd that cannot shrink under us (which would kill us by SIGBUS) */
    if (size != MPQEMU_RING_SIZE ||
        fstat(req->fds[0], &st) < 0 || !S_ISREG(st.st_mode) ||
        st.st_size < MPQEMU_RING_SIZE ||
        !(fcntl(req->fds[0], F_GET_SEALS) & F_SEAL_SHRINK)) {
        error_setg(errp, "the ring must be a memfd of %d bytes sealed "
                   "against shrinking", MPQEMU_RING_SIZE);
        return NULL;
    }
    if (!is_eventfd(req->fds[1]) || !is_eventfd(req->fds[2])) {
        error_setg(errp, "the ring's kick and done descriptors must be "
                   "eventfds");
        return NULL;
    }
    map = mmap(NULL, MPQEMU_RING_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
               req->fds[0], 0);
    if (map == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot map the ring");
        return NULL;
    }

    rr = g_new0(RemoteRing, 1);
    rr->owner = owner;
    rr->ring = map;
    /* Requests count from here: the proxy may send one as soon as we reply */
    rr->served = qatomic_load_acquire(&rr->ring->req_seq);
    rr->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (rr->stop_fd < 0) {
        error_setg_errno(errp, errno, "cannot create an eventfd");
        munmap(map, MPQEMU_RING_SIZE);
        g_free(rr);
        return NULL;
    }
    /* The memory stays mapped; the eventfds are the thread's from now on */
    close(req->fds[0]);
    rr->kick_fd = req->fds[1];
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
