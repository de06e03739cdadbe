/*
 * Proxy side of the link: synchronous requests matched to replies by id,
 * notifications from the remote applied in order, and failing closed when
 * the remote breaks.
 *
 * Requests come from vCPU threads without the BQL (BAR accesses: the BARs
 * take their accesses without it) and from code that holds it (config
 * space, the memory map, reset). The link's own lock serializes the use of
 * its socket and ring, so devices never wait for each other; the lock order
 * is BQL, then link lock. What needs the BQL (raising interrupts, tearing
 * the link down) is queued under the link lock and done once the link lock
 * is dropped, by its holder, which takes the BQL for it if need be.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "qemu/atomic.h"
#include "qemu/timer.h"
#include "qemu/bswap.h"
#include "proxy.h"

/* With the link lock: forget notifications not applied, and their fds */
static void proxy_link_drop_events_locked(ProxyLink *link)
{
    for (guint i = 0; i < link->events->len; i++) {
        mpqemu_msg_close_fds(&g_array_index(link->events, MPQemuMsg, i));
    }
    g_array_set_size(link->events, 0);
}

void proxy_link_init(ProxyLink *link)
{
    qemu_mutex_init(&link->lock);
    link->fd = -1;
    link->watch_fd = -1;
    link->ring_notify_fd = -1;
    link->events = g_array_new(false, false, sizeof(MPQemuMsg));
}

/*
 * Let go of @link, and give back a notify signal the main loop left to us
 * while we held it: every holder lets go here, so the signal is not lost.
 */
void proxy_link_unlock(ProxyLink *link)
{
    for (;;) {
        qemu_mutex_unlock(&link->lock);
        /* Pairs with proxy_ring_notify_defer() */
        smp_mb();
        if (!qatomic_read(&link->notify_deferred) ||
            qemu_mutex_trylock(&link->lock)) {
            return;     /* nothing left, or for the thread that took it */
        }
        proxy_ring_notify_redeliver_locked(link);
    }
}

void proxy_link_destroy(ProxyLink *link)
{
    proxy_link_close(link);
    g_array_free(link->events, true);
    g_free(link->broken);
    qemu_mutex_destroy(&link->lock);
}

void proxy_link_open(ProxyLink *link, int fd, uint32_t timeout_ms,
                     ProxyNotifyFn *notify, ProxyFailFn *fail, void *opaque)
{
    assert(bql_locked());
    qemu_mutex_lock(&link->lock);
    link->fd = fd;
    link->dead = false;
    link->bars_open = false;
    memset(&link->rx, 0, sizeof(link->rx));
    g_clear_pointer(&link->broken, g_free);
    proxy_link_drop_events_locked(link);
    link->last_id = 0;
    link->notify_count = 0;
    link->nr_hints = 0;
    link->shadow_size = 0;
    link->timeout_ms = timeout_ms;
    link->notify = notify;
    link->fail = fail;
    link->opaque = opaque;
    proxy_link_unlock(link);
    proxy_link_watch(link, fd);
}

void proxy_link_close(ProxyLink *link)
{
    int fd;

    assert(bql_locked());
    qemu_mutex_lock(&link->lock);
    fd = link->fd;
    link->fd = -1;
    link->dead = true;
    link->bars_open = false;
    mpqemu_recv_state_reset(&link->rx);
    proxy_link_drop_events_locked(link);
    proxy_ring_close(link);
    proxy_link_unlock(link);
    if (fd >= 0) {
        proxy_link_unwatch(link, fd);
        close(fd);
    }
}

/* With the link lock: no more requests; the rest happens under the BQL */
void proxy_link_break_locked(ProxyLink *link, RemoteDeviceFailureCause cause,
                             Error *err)
{
    if (!link->dead) {
        link->dead = true;
        g_free(link->broken);
        link->broken = g_strdup(error_get_pretty(err));
        link->broken_cause = cause;
    }
    error_free(err);
}

/*
 * With the BQL: apply the notifications that arrived, in order, then, if
 * the link broke, close it and report the failure once.
 */
static void proxy_link_settle(ProxyLink *link)
{
    g_autoptr(GArray) events = NULL;
    int dead_fd = -1;

    assert(bql_locked());
    qemu_mutex_lock(&link->lock);
    events = link->events;
    link->events = g_array_new(false, false, sizeof(MPQemuMsg));
    if (link->dead && link->fd >= 0) {
        dead_fd = link->fd;
        link->fd = -1;
        mpqemu_recv_state_reset(&link->rx);
        proxy_ring_close(link);
    }
    proxy_link_unlock(link);

    for (guint i = 0; i < events->len; i++) {
        link->notify(link->opaque, &g_array_index(events, MPQemuMsg, i));
    }
    if (dead_fd >= 0) {
        proxy_link_unwatch(link, dead_fd);
        close(dead_fd);
        link->fail(link->opaque, link->broken_cause, link->broken);
    }
}

static void proxy_link_unlock_and_settle(ProxyLink *link);

/*
 * With the BQL: the remote broke the protocol in a way only the device
 * model could tell (a notification it refused): end the link as if the
 * remote had sent garbage.
 */
void proxy_link_break(ProxyLink *link, RemoteDeviceFailureCause cause,
                      Error *err)
{
    assert(bql_locked());
    qemu_mutex_lock(&link->lock);
    proxy_link_break_locked(link, cause, err);
    proxy_link_unlock_and_settle(link);
}

static bool proxy_link_unsettled_locked(ProxyLink *link)
{
    return link->events->len || (link->dead && link->fd >= 0);
}

/* Drop the link lock, then do under the BQL what it left to do */
static void proxy_link_unlock_and_settle(ProxyLink *link)
{
    bool unsettled = proxy_link_unsettled_locked(link);

    proxy_link_unlock(link);
    if (!unsettled) {
        return;
    }
    if (bql_locked()) {
        proxy_link_settle(link);
    } else {
        bql_lock();
        proxy_link_settle(link);
        bql_unlock();
    }
}

/*
 * With the link lock: receive one message and check it. Protocol
 * violations break the link: a peer that sends malformed data cannot be
 * trusted with the device. Returns 0, -EAGAIN if only part of a message
 * is there and @timeout_ms is 0, or another negative errno once the link
 * is broken.
 */
static int proxy_link_recv_locked(ProxyLink *link, MPQemuMsg *msg,
                                  int timeout_ms)
{
    RemoteDeviceFailureCause cause = REMOTE_DEVICE_FAILURE_CAUSE_PROTOCOL;
    Error *err = NULL;
    int ret;

    ret = mpqemu_msg_recv_partial(link->fd, &link->rx, msg, timeout_ms, &err);
    if (ret == -EAGAIN) {
        return ret;
    }
    if (ret == -EPIPE || ret == -ECONNRESET) {
        g_clear_pointer(&err, error_free);
        error_setg(&err, "the remote process closed the connection");
        cause = REMOTE_DEVICE_FAILURE_CAUSE_DISCONNECTED;
    } else if (ret == -ETIMEDOUT) {
        error_prepend(&err, "remote link: ");
        cause = REMOTE_DEVICE_FAILURE_CAUSE_TIMEOUT;
    } else if (ret < 0) {
        error_prepend(&err, "remote link: ");
    } else if (!mpqemu_msg_check(msg, MPQEMU_PEER_PROXY, &err)) {
        mpqemu_msg_close_fds(msg);
        error_prepend(&err, "the remote process sent a malformed message: ");
        ret = -EPROTO;
    }
    if (ret < 0) {
        proxy_link_break_locked(link, cause, err);
    }
    return ret;
}

/* With the link lock: applied under the BQL, in the order they came */
static void proxy_link_queue_locked(ProxyLink *link, const MPQemuMsg *msg)
{
    g_array_append_val(link->events, *msg);
    /* read without the link lock by halted vCPUs (proxy-halt-wait.c) */
    qatomic_set(&link->notify_count, link->notify_count + 1);
}

/*
 * With the link lock: an INTx level a ring answer carried, applied as if it
 * had come on the socket right after notification @notify_seq, but not
 * counted: the remote did not send it there. Notifications the remote sent
 * after answering may already be queued (read while waiting for the
 * answer); the level goes before them, or a line the device raised again
 * since would end up down. The link was held since the request, and
 * @notify_seq is no lower than the count then: they are all still queued.
 */
void proxy_link_queue_intx_locked(ProxyLink *link, bool level,
                                  uint32_t notify_seq)
{
    uint32_t later = link->notify_count - notify_seq;
    MPQemuMsg msg;

    assert(later <= link->events->len);
    mpqemu_msg_init(&msg, MPQEMU_CMD_SET_IRQ, 0, 0, sizeof(MPQemuSetIrq));
    msg.u.set_irq.level = cpu_to_le32(level);
    g_array_insert_val(link->events, link->events->len - later, msg);
}

/*
 * With the link lock: take the notifications that are waiting on the
 * socket, without waiting (@timeout_ms 0) or until one more has arrived.
 * False once the link is broken.
 */
bool proxy_link_take_notifications(ProxyLink *link, int timeout_ms)
{
    MPQemuMsg msg;
    int ret;

    while ((ret = proxy_link_recv_locked(link, &msg, timeout_ms)) == 0) {
        if (!mpqemu_cmd_is_notification(msg.hdr.cmd)) {
            Error *err = NULL;

            error_setg(&err, "the remote process sent a %s reply (id %"
                       PRIu64 ") nobody asked for",
                       mpqemu_cmd_name(msg.hdr.cmd), msg.hdr.id);
            proxy_link_break_locked(link,
                                    REMOTE_DEVICE_FAILURE_CAUSE_PROTOCOL, err);
            return false;
        }
        proxy_link_queue_locked(link, &msg);
        if (timeout_ms) {
            return true;
        }
    }
    return ret == -EAGAIN;
}

/*
 * With the BQL: receive and apply the notifications waiting on the socket,
 * for the main loop (@signalled: woken by the notify eventfd) or a halted
 * vCPU (proxy-halt-wait.c). False if another thread holds the link.
 */
bool proxy_link_poll_notifications(ProxyLink *link, bool signalled)
{
    /*
     * A vCPU that holds the link is receiving itself and queues what it
     * finds; this handler runs again while anything is left unread, or,
     * for the eventfd, once that vCPU lets go.
     */
    if (qemu_mutex_trylock(&link->lock)) {
        if (!signalled) {
            return false;
        }
        proxy_ring_notify_defer(link);
        if (qemu_mutex_trylock(&link->lock)) {
            return false;
        }
        /* ours after all: what the signal was for is read below */
        qatomic_set(&link->notify_deferred, false);
    }
    /* Never wait here: the rest of a partial message may come later */
    if ((!signalled || proxy_ring_notify_seen_locked(link)) &&
        !link->dead && link->fd >= 0) {
        proxy_link_take_notifications(link, 0);
    }
    proxy_link_unlock_and_settle(link);
    return true;
}

static bool proxy_link_call_locked(ProxyLink *link, MPQemuMsg *req,
                                   MPQemuMsg *reply, Error **errp)
{
    const char *name = mpqemu_cmd_name(req->hdr.cmd);
    int64_t deadline;
    Error *err = NULL;
    int ret;

    if (link->dead || link->fd < 0) {
        error_setg(errp, "%s", link->broken ?: "the remote process is "
                   "disconnected");
        return false;
    }
    /* Writes still in the ring come first, as the guest made them */
    if (!proxy_ring_drain_locked(link, errp)) {
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
        proxy_link_break_locked(link, ret == -EPIPE || ret == -ECONNRESET ?
                                REMOTE_DEVICE_FAILURE_CAUSE_DISCONNECTED :
                                REMOTE_DEVICE_FAILURE_CAUSE_TIMEOUT, err);
        error_setg(errp, "%s (sending %s)", link->broken, name);
        return false;
    }

    deadline = g_get_monotonic_time() + link->timeout_ms * 1000LL;
    for (;;) {
        int64_t left_ms = (deadline - g_get_monotonic_time()) / 1000;

        /* Notifications do not extend the time a reply may take */
        if (left_ms <= 0) {
            error_setg(&err, "the remote process did not answer within "
                       "%u ms", link->timeout_ms);
            proxy_link_break_locked(link, REMOTE_DEVICE_FAILURE_CAUSE_TIMEOUT,
                                    err);
        }
        if (link->dead || proxy_link_recv_locked(link, reply, left_ms) < 0) {
            error_setg(errp, "%s (waiting for the reply to %s)",
                       link->broken, name);
            return false;
        }
        if (mpqemu_cmd_is_notification(reply->hdr.cmd)) {
            /* Applied before this access completes, in the order sent */
            proxy_link_queue_locked(link, reply);
            continue;
        }
        if (reply->hdr.id != req->hdr.id || reply->hdr.cmd != req->hdr.cmd) {
            error_setg(&err, "the remote process answered %s id %" PRIu64
                       " to %s id %" PRIu64, mpqemu_cmd_name(reply->hdr.cmd),
                       reply->hdr.id, name, req->hdr.id);
            error_propagate(errp, error_copy(err));
            proxy_link_break_locked(link, REMOTE_DEVICE_FAILURE_CAUSE_PROTOCOL,
                                    err);
            return false;
        }
        return mpqemu_reply_ok(reply, errp);
    }
}

bool proxy_link_call(ProxyLink *link, MPQemuMsg *req, MPQemuMsg *reply,
                     Error **errp)
{
    bool ok;

    qemu_mutex_lock(&link->lock);
    ok = proxy_link_call_locked(link, req, reply, errp);
    proxy_link_unlock_and_settle(link);
    return ok;
}

/*
 * With the BQL, once the device is set up: BAR accesses may use the link
 * from now on, from any thread. Writes may be posted if @post_writes.
 */
void proxy_link_open_bars(ProxyLink *link, bool post_writes)
{
    assert(bql_locked());
    qemu_mutex_lock(&link->lock);
    link->bars_open = true;
    link->post_writes = post_writes;
    proxy_link_unlock(link);
}

/* With the link lock: a BAR access as a round trip on the socket */
static bool proxy_link_bar_access_socket_locked(ProxyLink *link, bool write,
                                                uint8_t region,
                                                uint64_t offset, uint8_t size,
                                                uint64_t *value, Error **errp)
{
    MPQemuMsg req, reply;

    mpqemu_msg_init(&req, write ? MPQEMU_CMD_BAR_WRITE : MPQEMU_CMD_BAR_READ,
                    0, 0, sizeof(MPQemuBarAccess));
    req.u.bar.offset = cpu_to_le64(offset);
    req.u.bar.value = cpu_to_le64(*value);
    req.u.bar.region = region;
    req.u.bar.size = size;
    if (!proxy_link_call_locked(link, &req, &reply, errp)) {
        return false;
    }
    if (!write) {
        *value = le64_to_cpu(reply.u.value.value);
    }
    return true;
}

/*
 * A BAR access, with or without the BQL: through the ring when there is
 * one (where a write the caller lets be @posted need not wait for the
 * device), else as a request on the socket. False with no error set if
 * the link is not open to BAR accesses: the device is not set up yet, or
 * broke (the failure is reported once, by proxy_fail).
 */
bool proxy_link_bar_access(ProxyLink *link, bool write, uint8_t region,
                           uint64_t offset, uint8_t size, uint64_t *value,
                           bool posted, Error **errp)
{
    bool ok;

    qemu_mutex_lock(&link->lock);
    if (!link->bars_open || link->dead) {
        ok = false;
    } else if (link->ring) {
        ok = proxy_ring_access_locked(link, write, region, offset, size,
                                      value, posted, errp);
    } else {
        ok = proxy_link_bar_access_socket_locked(link, write, region, offset,
                                                 size, value, errp);
    }
    proxy_link_unlock_and_settle(link);
    return ok;
}
