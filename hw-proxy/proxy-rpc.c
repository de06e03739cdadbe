/*
 * Proxy side of the link: synchronous requests matched to replies by id,
 * notifications from the remote, and failing closed when the remote breaks.
 *
 * All entry points run with the BQL held, which serializes them.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "proxy.h"

static void proxy_link_readable(void *opaque);

static void proxy_link_break(ProxyLink *link, Error *err)
{
    g_autofree char *reason = g_strdup(error_get_pretty(err));

    error_free(err);
    if (link->fd < 0) {
        return;
    }
    proxy_link_close(link);
    link->fail(link->opaque, reason);
}

void proxy_link_open(ProxyLink *link, int fd, uint32_t timeout_ms,
                     ProxyNotifyFn *notify, ProxyFailFn *fail, void *opaque)
{
    link->fd = fd;
    link->last_id = 0;
    link->timeout_ms = timeout_ms;
    link->notify = notify;
    link->fail = fail;
    link->opaque = opaque;
    qemu_set_fd_handler(fd, proxy_link_readable, NULL, link);
}

void proxy_link_close(ProxyLink *link)
{
    if (link->fd >= 0) {
        qemu_set_fd_handler(link->fd, NULL, NULL, NULL);
        close(link->fd);
        link->fd = -1;
    }
}

/*
 * Receive one message and check it. Protocol violations break the link:
 * a peer that sends malformed data cannot be trusted with the device.
 */
static bool proxy_link_recv(ProxyLink *link, MPQemuMsg *msg, int timeout_ms)
{
    Error *err = NULL;

    if (mpqemu_msg_recv(link->fd, msg, timeout_ms, &err) < 0) {
        error_prepend(&err, "remote link: ");
        proxy_link_break(link, err);
        return false;
    }
    if (!mpqemu_msg_check(msg, MPQEMU_PEER_PROXY, &err)) {
        mpqemu_msg_close_fds(msg);
        error_prepend(&err, "remote sent a malformed message: ");
        proxy_link_break(link, err);
        return false;
    }
    return true;
}

/* Notifications that arrive while no request is waiting for its reply */
static void proxy_link_readable(void *opaque)
{
    ProxyLink *link = opaque;
    MPQemuMsg msg;

    /* A vCPU waiting for a reply may have consumed the data meanwhile */
    if (link->fd < 0 || !mpqemu_wait_readable(link->fd, 0)) {
        return;
    }
    if (!proxy_link_recv(link, &msg, link->timeout_ms)) {
        return;
    }
    if (msg.hdr.cmd != MPQEMU_CMD_SET_IRQ) {
        Error *err = NULL;

        error_setg(&err, "remote sent a %s reply (id %" PRIu64 ") nobody "
                   "asked for", mpqemu_cmd_name(msg.hdr.cmd), msg.hdr.id);
        proxy_link_break(link, err);
        return;
    }
    link->notify(link->opaque, &msg);
}

bool proxy_link_call(ProxyLink *link, MPQemuMsg *req, MPQemuMsg *reply,
                     Error **errp)
{
    int64_t deadline;
    Error *err = NULL;

    assert(bql_locked());
    if (link->fd < 0) {
        error_setg(errp, "the remote process is disconnected");
        return false;
    }

    req->hdr.id = ++link->last_id;
    if (mpqemu_msg_send(link->fd, req, link->timeout_ms, &err) < 0) {
        error_propagate(errp, error_copy(err));
        error_prepend(&err, "remote link: ");
        proxy_link_break(link, err);
        return false;
    }

    deadline = g_get_monotonic_time() + link->timeout_ms * 1000LL;
    for (;;) {
        int64_t left_ms = (deadline - g_get_monotonic_time()) / 1000;

        if (!proxy_link_recv(link, reply, MAX(left_ms, 0))) {
            error_setg(errp, "no reply from the remote process to %s",
                       mpqemu_cmd_name(req->hdr.cmd));
            return false;
        }
        if (reply->hdr.cmd == MPQEMU_CMD_SET_IRQ) {
            /* Applied before the reply, in the order the remote sent them */
            link->notify(link->opaque, reply);
            continue;
        }
        if (reply->hdr.id != req->hdr.id || reply->hdr.cmd != req->hdr.cmd) {
            error_setg(&err, "remote answered %s id %" PRIu64 " to %s id %"
                       PRIu64, mpqemu_cmd_name(reply->hdr.cmd),
                       reply->hdr.id, mpqemu_cmd_name(req->hdr.cmd),
                       req->hdr.id);
            error_propagate(errp, error_copy(err));
            proxy_link_break(link, err);
            return false;
        }
        return mpqemu_reply_ok(reply, errp);
    }
}
