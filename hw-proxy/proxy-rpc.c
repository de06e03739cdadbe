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
    if (link->fd < 0) {
        error_free(err);
        return;
    }
    g_free(link->broken);
    link->broken = g_strdup(error_get_pretty(err));
    error_free(err);
    proxy_link_close(link);
    link->fail(link->opaque, link->broken);
}

void proxy_link_open(ProxyLink *link, int fd, uint32_t timeout_ms,
                     ProxyNotifyFn *notify, ProxyFailFn *fail, void *opaque)
{
    link->fd = fd;
    memset(&link->rx, 0, sizeof(link->rx));
    g_clear_pointer(&link->broken, g_free);
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
        mpqemu_recv_state_reset(&link->rx);
    }
}

/*
 * Receive one message and check it. Protocol violations break the link:
 * a peer that sends malformed data cannot be trusted with the device.
 * Returns 0, -EAGAIN if only part of a message is there and @timeout_ms
 * is 0, or another negative errno once the link is broken.
 */
static int proxy_link_recv(ProxyLink *link, MPQemuMsg *msg, int timeout_ms)
{
    Error *err = NULL;
    int ret;

    ret = mpqemu_msg_recv_partial(link->fd, &link->rx, msg, timeout_ms, &err);
    if (ret == -EAGAIN) {
        return ret;
    }
    if (ret == -EPIPE || ret == -ECONNRESET) {
        g_clear_pointer(&err, error_free);
        error_setg(&err, "the remote process closed the connection");
    } else if (ret < 0) {
        error_prepend(&err, "remote link: ");
    }
    if (ret < 0) {
        proxy_link_break(link, err);
        return ret;
    }
    if (!mpqemu_msg_check(msg, MPQEMU_PEER_PROXY, &err)) {
        mpqemu_msg_close_fds(msg);
        error_prepend(&err, "the remote process sent a malformed message: ");
        proxy_link_break(link, err);
        return -EPROTO;
    }
    return 0;
}

/* Notifications that arrive while no request is waiting for its reply */
static void proxy_link_readable(void *opaque)
{
    ProxyLink *link = opaque;
    MPQemuMsg msg;

    /*
     * Never wait here: a vCPU waiting for a reply may have consumed the
     * data meanwhile, and the rest of a partial message may come later.
     */
    if (link->fd < 0 || proxy_link_recv(link, &msg, 0) < 0) {
        return;
    }
    if (msg.hdr.cmd != MPQEMU_CMD_SET_IRQ && msg.hdr.cmd != MPQEMU_CMD_MSI) {
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
    int ret;

    assert(bql_locked());
    if (link->fd < 0) {
        error_setg(errp, "the remote process is disconnected");
        return false;
    }

    req->hdr.id = ++link->last_id;
    ret = mpqemu_msg_send(link->fd, req, link->timeout_ms, &err);
    if (ret == -EPIPE || ret == -ECONNRESET) {
        g_clear_pointer(&err, error_free);
        error_setg(&err, "the remote process closed the connection");
    } else if (ret < 0) {
        error_prepend(&err, "remote link: ");
    }
    if (ret < 0) {
        proxy_link_break(link, err);
        error_setg(errp, "%s (sending %s)", link->broken,
                   mpqemu_cmd_name(req->hdr.cmd));
        return false;
    }

    deadline = g_get_monotonic_time() + link->timeout_ms * 1000LL;
    for (;;) {
        int64_t left_ms = (deadline - g_get_monotonic_time()) / 1000;

        /* Notifications do not extend the time a reply may take */
        if (left_ms <= 0) {
            error_setg(&err, "the remote process did not answer within "
                       "%u ms", link->timeout_ms);
            proxy_link_break(link, err);
        }
        if (link->fd < 0 || proxy_link_recv(link, reply, left_ms) < 0) {
            error_setg(errp, "%s (waiting for the reply to %s)",
                       link->broken, mpqemu_cmd_name(req->hdr.cmd));
            return false;
        }
        if (reply->hdr.cmd == MPQEMU_CMD_SET_IRQ ||
            reply->hdr.cmd == MPQEMU_CMD_MSI) {
            /* Applied before the reply, in the order the remote sent them */
            link->notify(link->opaque, reply);
            continue;
        }
        if (reply->hdr.id != req->hdr.id || reply->hdr.cmd != req->hdr.cmd) {
            error_setg(&err, "the remote process answered %s id %" PRIu64
                       " to %s id %" PRIu64, mpqemu_cmd_name(reply->hdr.cmd),
                       reply->hdr.id, mpqemu_cmd_name(req->hdr.cmd),
                       req->hdr.id);
            error_propagate(errp, error_copy(err));
            proxy_link_break(link, err);
            return false;
        }
        return mpqemu_reply_ok(reply, errp);
    }
}
