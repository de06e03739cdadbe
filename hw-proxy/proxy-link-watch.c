/*
 * The main loop watches the sockets of all links through one epoll set, from
 * which a halted vCPU takes the links it waits on without waking the main loop.
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

/* The main loop: a link it watches on its own (no epoll set to be had) */
static void proxy_link_readable(void *opaque)
{
    proxy_link_poll_notifications(opaque);
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
        ProxyLink *link = ev[i].data.ptr;

        if (g_ptr_array_find(watched_links, link, NULL) &&
            !link->watch_suspended) {
            proxy_link_poll_notifications(link);
        }
    }
}

static bool proxy_link_watch_ctl(ProxyLink *link, int op)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = link };

    if (epoll_ctl(link_watch_fd, op, link->watch_fd, &ev) < 0) {
        /* only for lack of kernel memory: the link can do without */
        warn_report_once("x-pci-proxy-dev: cannot watch a link's socket: %s",
                         strerror(errno));
        return false;
    }
    return true;
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
