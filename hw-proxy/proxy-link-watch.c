/*
 * The main loop watches the sockets of all links through one epoll set, from
 * which a halted vCPU takes the links it waits on without waking the main loop.
 * With a notify eventfd, the main loop watches that instead of the socket.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "proxy.h"

#include <sys/epoll.h>

/*
 * With the BQL: the epoll set, -1 until the first link, and the links in it
 * or taken out of it for a while (link->watch_suspended). While a halted
 * vCPU waits on a socket itself, the main loop had better not wake up for
 * the same message: both would want the BQL, and the guest waits for both.
 */
static int link_watch_fd = -1;
static GPtrArray *watched_links;

/* epoll data of a link's notify eventfd: the link, tagged (links are aligned) */
#define LINK_WATCH_NOTIFY_TAG   1ULL

/* The main loop: a link it watches on its own (no epoll set to be had) */
static void proxy_link_readable(void *opaque)
{
    proxy_link_poll_notifications(opaque, false);
}

/* ... and its notify eventfd */
static void proxy_link_signalled(void *opaque)
{
    proxy_link_poll_notifications(opaque, true);
}

/* With the BQL: the main loop watches @fd of @link without the set */
static void proxy_link_watch_alone(ProxyLink *link, int fd)
{
    link->watch_fd = -1;
    link->watch_suspended = false;
    qemu_set_fd_handler(fd, proxy_link_readable, NULL, link);
}

/* The main loop: the links with something to read */
static void proxy_link_watch_readable(void *opaque)
{
    struct epoll_event ev[16];
    int n = epoll_wait(link_watch_fd, ev, ARRAY_SIZE(ev), 0);

    /* Applying one link's notifications may close another */
    for (int i = 0; i < n; i++) {
        bool signalled = ev[i].data.u64 & LINK_WATCH_NOTIFY_TAG;
        ProxyLink *link = (ProxyLink *)(uintptr_t)(ev[i].data.u64 &
                                                   ~LINK_WATCH_NOTIFY_TAG);

        if (g_ptr_array_find(watched_links, link, NULL) &&
            !link->watch_suspended) {
            proxy_link_poll_notifications(link, signalled);
        }
    }
}

/*
 * Watch @fd for @link with @events: for a socket whose notifications come
 * with an eventfd, only its end (the remote's exit, or its shutdown)
 */
static bool proxy_link_watch_ctl_fd(ProxyLink *link, int op, int fd,
                                    uint32_t events, uint64_t data)
{
    struct epoll_event ev = { .events = events, .data.u64 = data };

    if (epoll_ctl(link_watch_fd, op, fd, &ev) < 0) {
        /* only for lack of kernel memory: the link can do without */
        warn_report_once("x-pci-proxy-dev: cannot watch a link's socket: %s",
                         strerror(errno));
        return false;
    }
    return true;
}

static bool proxy_link_watch_ctl(ProxyLink *link, int op)
{
    return proxy_link_watch_ctl_fd(link, op, link->watch_fd,
                                   link->watch_notify ? EPOLLRDHUP : EPOLLIN,
                                   (uintptr_t)link);
}

/* With the BQL: the main loop applies what arrives on @link's socket */
void proxy_link_watch(ProxyLink *link, int fd)
{
    assert(bql_locked() && fd >= 0);
    if (link_watch_fd < 0) {
        link_watch_fd = epoll_create1(EPOLL_CLOEXEC);
        if (link_watch_fd < 0) {
            proxy_link_watch_alone(link, fd);
            return;
        }
        watched_links = g_ptr_array_new();
        qemu_set_fd_handler(link_watch_fd, proxy_link_watch_readable, NULL,
                            NULL);
    }
    link->watch_fd = fd;
    link->watch_suspended = false;
    link->watch_notify = false;
    if (!proxy_link_watch_ctl(link, EPOLL_CTL_ADD)) {
        proxy_link_watch_alone(link, fd);
        return;
    }
    g_ptr_array_add(watched_links, link);
}

/* With the BQL, before @fd closes: the main loop stops watching @link */
void proxy_link_unwatch(ProxyLink *link, int fd)
{
    assert(bql_locked());
    if (link->watch_fd != fd) {
        qemu_set_fd_handler(fd, NULL, NULL, NULL);  /* watched alone */
        return;
    }
    if (!link->watch_suspended) {
        proxy_link_watch_ctl(link, EPOLL_CTL_DEL);
    }
    g_ptr_array_remove(watched_links, link);
    link->watch_fd = -1;
    link->watch_suspended = false;
    link->watch_notify = false;
}

/*
 * With the BQL: the remote signals @notify_fd after what it sends on @link's
 * socket while no halted vCPU reads it. The main loop wakes up for that
 * eventfd, and for the socket only once it hangs up: a vCPU waiting on the
 * socket no longer takes it out of the epoll set, nor puts it back.
 */
void proxy_link_watch_notify_fd(ProxyLink *link, int notify_fd)
{
    assert(bql_locked());
    if (link->watch_fd < 0) {
        /* watched alone: the eventfd wakes the main loop too, that is all */
        qemu_set_fd_handler(notify_fd, proxy_link_signalled, NULL, link);
        return;
    }
    if (link->watch_suspended || link->watch_notify ||
        !proxy_link_watch_ctl_fd(link, EPOLL_CTL_ADD, notify_fd, EPOLLIN,
                                 (uintptr_t)link | LINK_WATCH_NOTIFY_TAG)) {
        return;
    }
    link->watch_notify = true;
    if (!proxy_link_watch_ctl(link, EPOLL_CTL_MOD)) {
        /* it still watches the socket for all: the eventfd is not needed */
        link->watch_notify = false;
        proxy_link_watch_ctl_fd(link, EPOLL_CTL_DEL, notify_fd, 0, 0);
    }
}

/*
 * With the BQL, before @link's notify eventfd closes: the main loop watches
 * the socket for what arrives again
 */
void proxy_link_unwatch_notify_fd(ProxyLink *link)
{
    assert(bql_locked());
    if (link->watch_fd < 0) {
        qemu_set_fd_handler(link->ring_notify_fd, NULL, NULL, NULL);
        return;
    }
    if (!link->watch_notify) {
        return;
    }
    proxy_link_watch_ctl_fd(link, EPOLL_CTL_DEL, link->ring_notify_fd, 0, 0);
    link->watch_notify = false;
    if (!link->watch_suspended &&
        !proxy_link_watch_ctl(link, EPOLL_CTL_MOD)) {
        proxy_link_watch_ctl_fd(link, EPOLL_CTL_DEL, link->watch_fd, 0, 0);
        g_ptr_array_remove(watched_links, link);
        proxy_link_watch_alone(link, link->watch_fd);
    }
}

/*
 * With the BQL, for a vCPU that is about to wait on @link's socket itself:
 * the main loop does not wake up for it until proxy_link_watch_resume_all()
 */
void proxy_link_watch_suspend(ProxyLink *link)
{
    assert(bql_locked());
    if (link->watch_fd >= 0 && !link->watch_suspended &&
        proxy_link_watch_ctl(link, EPOLL_CTL_DEL)) {
        link->watch_suspended = true;
    }
}

/*
 * With the BQL, once that vCPU has read what it saw: the main loop watches
 * again every link that is still open. What arrived since is its to read.
 */
void proxy_link_watch_resume_all(void)
{
    assert(bql_locked());
    for (guint i = 0; watched_links && i < watched_links->len; i++) {
        ProxyLink *link = g_ptr_array_index(watched_links, i);

        if (link->watch_suspended) {
            link->watch_suspended = false;
            if (!proxy_link_watch_ctl(link, EPOLL_CTL_ADD)) {
                g_ptr_array_remove_index(watched_links, i--);
                proxy_link_watch_alone(link, link->watch_fd);
            }
        }
    }
}
