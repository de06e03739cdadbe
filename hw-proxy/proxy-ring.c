/*
 * Proxy side of the shared-memory ring: creates the ring page and its two
 * eventfds and hands them to the remote (the call path is in proxy-rpc.c).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/memfd.h"
#include "qemu/main-loop.h"
#include "qemu/bswap.h"
#include "proxy.h"

#include <sys/eventfd.h>
#include <sys/mman.h>

bool proxy_ring_setup(ProxyLink *link, Error **errp)
{
    MPQemuMsg req, reply;
    void *map = MAP_FAILED;
    int mem_fd, kick_fd = -1, done_fd = -1;

    /* sealed: the remote maps it and must not be made to fault */
    mem_fd = qemu_memfd_create("mpqemu-ring", MPQEMU_RING_SIZE, false, 0,
                               F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL,
                               errp);
    if (mem_fd < 0) {
        return false;
    }
    kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (kick_fd >= 0 && done_fd >= 0) {
        map = mmap(NULL, MPQEMU_RING_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                   mem_fd, 0);
    }
    if (map == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot set up the ring");
        goto fail;
    }

    mpqemu_msg_init(&req, MPQEMU_CMD_RING_SETUP, 0, 0,
                    sizeof(MPQemuRingSetup));
    req.u.ring_setup.size = cpu_to_le32(MPQEMU_RING_SIZE);
    req.hdr.num_fds = MPQEMU_RING_FDS;
    req.fds[0] = mem_fd;
    req.fds[1] = kick_fd;
    req.fds[2] = done_fd;
    if (!proxy_link_call(link, &req, &reply, errp)) {
        goto fail;
    }
    close(mem_fd);
    qemu_mutex_lock(&link->lock);
    link->ring = map;
    link->ring_seq = 0;
    link->ring_kick_fd = kick_fd;
    link->ring_done_fd = done_fd;
    qemu_mutex_unlock(&link->lock);
    return true;

fail:
    if (map != MAP_FAILED) {
        munmap(map, MPQEMU_RING_SIZE);
    }
    close(mem_fd);
    if (kick_fd >= 0) {
        close(kick_fd);
    }
    if (done_fd >= 0) {
        close(done_fd);
    }
    return false;
}

/* With the link lock, or once nobody else uses the link */
void proxy_ring_close(ProxyLink *link)
{
    if (!link->ring) {
        return;
    }
    munmap(link->ring, MPQEMU_RING_SIZE);
    close(link->ring_kick_fd);
    close(link->ring_done_fd);
    link->ring = NULL;
}
