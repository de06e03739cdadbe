/*
 * A QMP client for the monitor of a remote process: commands matched to
 * answers by id, waited for with a bound, from a coroutine or blocking.
 *
 * The remote is not trusted: whatever it sends is parsed by QEMU's JSON
 * parser without interpolation, and anything that is not a greeting, an
 * answer to a command we sent or an event ends the connection.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <poll.h>
#include <sys/socket.h>
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/sockets.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qobject/json-parser.h"
#include "qobject/qjson.h"
#include "qobject/qnum.h"
#include "qobject/qstring.h"
#include "block/aio.h"
#include "remote-monitor.h"
#include "trace.h"

/* Read at most this much per wake-up, so a chatty peer cannot starve us */
#define REMOTE_MONITOR_READ_BUDGET (64 * KiB)

typedef enum RemoteMonitorPhase {
    REMOTE_MONITOR_GREETING,        /* waiting for {"QMP": ...} */
    REMOTE_MONITOR_NEGOTIATING,     /* qmp_capabilities sent */
    REMOTE_MONITOR_READY,
    REMOTE_MONITOR_CLOSED,
} RemoteMonitorPhase;

/* A command waiting for its answer */
typedef struct RemoteMonitorCall {
    int64_t id;
    bool done;
    QObject *ret;           /* its "return", when done without error */
    Error *err;
    Coroutine *co;          /* waiting in a coroutine, or NULL */
    bool detached;          /* nobody waits: report a failure, then free */
    bool quiet;             /* detached, and its failure is expected */
    RemoteMonitor *mon;
    QLIST_ENTRY(RemoteMonitorCall) next;
} RemoteMonitorCall;

/* A coroutine waiting for the handshake */
typedef struct RemoteMonitorWaiter {
    Coroutine *co;
    bool woken;
    QLIST_ENTRY(RemoteMonitorWaiter) next;
} RemoteMonitorWaiter;

struct RemoteMonitor {
    int fd;
    char *name;
    uint32_t timeout_ms;
    JSONMessageParser parser;
    RemoteMonitorPhase phase;
    char *closed_reason;
    bool closed_reported;
    int64_t last_id;
    int64_t capabilities_id;
    int64_t last_heard_ns;  /* QEMU_CLOCK_REALTIME, of the last message */
    QLIST_HEAD(, RemoteMonitorCall) calls;
    QLIST_HEAD(, RemoteMonitorWaiter) waiters;
    RemoteMonitorReadyFn *ready;
    RemoteMonitorClosedFn *closed;
    void *opaque;
};

/* Resumes a waiting coroutine later, never from inside the parser */
static void remote_monitor_wake(Coroutine *co)
{
    aio_co_schedule(qemu_get_aio_context(), co);
}

static void remote_monitor_complete(RemoteMonitorCall *call, QObject *ret,
                                    Error *err)
{
    QLIST_REMOVE(call, next);
    if (call->detached) {
        if (err && !call->quiet) {
            warn_report_err(err);
        } else {
            error_free(err);
        }
        qobject_unref(ret);
        g_free(call);
        return;
    }
    call->done = true;
    call->ret = ret;
    call->err = err;
    if (call->co) {
        remote_monitor_wake(call->co);
    }
}

static void remote_monitor_wake_waiters(RemoteMonitor *mon)
{
    RemoteMonitorWaiter *w, *next;

    QLIST_FOREACH_SAFE(w, &mon->waiters, next, next) {
        QLIST_REMOVE(w, next);
        w->woken = true;
        remote_monitor_wake(w->co);
    }
}

/* Ends the connection; the owner hears of it once the parser is done */
static void remote_monitor_fail(RemoteMonitor *mon, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

static void remote_monitor_fail(RemoteMonitor *mon, const char *fmt, ...)
{
    RemoteMonitorCall *call;
    va_list ap;

    if (mon->phase == REMOTE_MONITOR_CLOSED) {
        return;
    }
    va_start(ap, fmt);
    mon->closed_reason = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    mon->phase = REMOTE_MONITOR_CLOSED;
    trace_remote_monitor_closed(mon->name, mon->closed_reason);
    aio_set_fd_handler(qemu_get_aio_context(), mon->fd, NULL, NULL, NULL,
                       NULL, NULL);

    while ((call = QLIST_FIRST(&mon->calls))) {
        Error *err = NULL;

        if (call->detached) {
            /* sent on the way out: whatever it did, the peer is gone */
            remote_monitor_complete(call, NULL, NULL);
            continue;
        }
        error_setg(&err, "remote process '%s': %s", mon->name,
                   mon->closed_reason);
        remote_monitor_complete(call, NULL, err);
    }
    remote_monitor_wake_waiters(mon);
}

static void remote_monitor_report_closed(RemoteMonitor *mon)
{
    if (mon->phase == REMOTE_MONITOR_CLOSED && !mon->closed_reported) {
        mon->closed_reported = true;
        if (mon->closed) {
            mon->closed(mon->opaque, mon->closed_reason);
        }
    }
}

static bool remote_monitor_write(RemoteMonitor *mon, const char *buf,
                                 size_t len, int fd, int64_t deadline,
                                 Error **errp)
{
    while (len) {
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } control;
        struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        struct pollfd pfd = { .fd = mon->fd, .events = POLLOUT };
        ssize_t n;
        int64_t left;

        if (fd >= 0) {
            struct cmsghdr *cmsg;

            memset(&control, 0, sizeof(control));
            mh.msg_control = control.buf;
            mh.msg_controllen = sizeof(control.buf);
            cmsg = CMSG_FIRSTHDR(&mh);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
        }
        n = sendmsg(mon->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            buf += n;
            len -= n;
            fd = -1;        /* went with the first byte */
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            remote_monitor_fail(mon, "sending failed: %s", strerror(errno));
            error_setg(errp, "remote process '%s': %s", mon->name,
                       mon->closed_reason);
            return false;
        }
        left = deadline - qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
        if (left <= 0 || poll(&pfd, 1, left) == 0) {
            error_setg(errp, "remote process '%s' does not take commands "
                       "(waited %u ms)", mon->name, mon->timeout_ms);
            return false;
        }
    }
    return true;
}

static bool remote_monitor_send_command(RemoteMonitor *mon, int64_t id,
                                        const char *command, QDict *args,
                                        int fd, Error **errp)
{
    g_autoptr(QDict) cmd = qdict_new();
    g_autoptr(GString) json = NULL;

    qdict_put_str(cmd, "execute", command);
    if (args) {
        qdict_put(cmd, "arguments", qobject_ref(args));
    }
    qdict_put_int(cmd, "id", id);
    json = qobject_to_json(QOBJECT(cmd));
    g_string_append_c(json, '\n');
    trace_remote_monitor_send(mon->name, id, command);
    return remote_monitor_write(mon, json->str, json->len, fd,
                                qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                                mon->timeout_ms, errp);
}

static void remote_monitor_greeted(RemoteMonitor *mon)
{
    Error *err = NULL;

    mon->capabilities_id = ++mon->last_id;
    if (!remote_monitor_send_command(mon, mon->capabilities_id,
                                     "qmp_capabilities", NULL, -1, &err)) {
        remote_monitor_fail(mon, "%s", error_get_pretty(err));
        error_free(err);
        return;
    }
    mon->phase = REMOTE_MONITOR_NEGOTIATING;
}

static void remote_monitor_answer(RemoteMonitor *mon, QDict *msg)
{
    QNum *qid = qobject_to(QNum, qdict_get(msg, "id"));
    QDict *error = qdict_get_qdict(msg, "error");
    RemoteMonitorCall *call;
    int64_t id;

    if (!qid || !qnum_get_try_int(qid, &id)) {
        remote_monitor_fail(mon, "answered without a command id");
        return;
    }
    if (id == mon->capabilities_id &&
        mon->phase == REMOTE_MONITOR_NEGOTIATING) {
        if (error) {
            remote_monitor_fail(mon, "refused qmp_capabilities: %s",
                                qdict_get_try_str(error, "desc") ?: "");
            return;
        }
        mon->phase = REMOTE_MONITOR_READY;
        trace_remote_monitor_ready(mon->name);
        remote_monitor_wake_waiters(mon);
        if (mon->ready) {
            mon->ready(mon->opaque);
        }
        return;
    }
    QLIST_FOREACH(call, &mon->calls, next) {
        if (call->id == id) {
            break;
        }
    }
    if (!call) {
        /* a command that timed out, answered late */
        trace_remote_monitor_late_answer(mon->name, id);
        return;
    }
    if (error) {
        Error *err = NULL;

        error_setg(&err, "remote process '%s': %s", mon->name,
                   qdict_get_try_str(error, "desc") ?: "command failed");
        remote_monitor_complete(call, NULL, err);
    } else if (qdict_haskey(msg, "return")) {
        remote_monitor_complete(call, qobject_ref(qdict_get(msg, "return")),
                                NULL);
    } else {
        remote_monitor_fail(mon, "sent an answer with neither return nor "
                            "error");
    }
}

static void remote_monitor_emit(void *opaque, QObject *json, Error *err)
{
    RemoteMonitor *mon = opaque;
    QDict *msg = qobject_to(QDict, json);

    if (mon->phase != REMOTE_MONITOR_CLOSED) {
        mon->last_heard_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    }
    if (mon->phase == REMOTE_MONITOR_CLOSED) {
        /* the rest of a read after the peer broke the protocol */
    } else if (err) {
        remote_monitor_fail(mon, "sent malformed JSON: %s",
                            error_get_pretty(err));
    } else if (!msg) {
        remote_monitor_fail(mon, "sent JSON that is not an object");
    } else if (mon->phase == REMOTE_MONITOR_GREETING) {
        if (qdict_haskey(msg, "QMP")) {
            remote_monitor_greeted(mon);
        } else {
            remote_monitor_fail(mon, "did not greet as a QMP monitor does");
        }
    } else if (qdict_haskey(msg, "event")) {
        trace_remote_monitor_event(mon->name,
                                   qdict_get_try_str(msg, "event") ?: "?");
    } else if (qdict_haskey(msg, "return") || qdict_haskey(msg, "error")) {
        remote_monitor_answer(mon, msg);
    } else {
        remote_monitor_fail(mon, "sent a message that is neither an answer "
                            "nor an event");
    }
    error_free(err);
    qobject_unref(json);
}

/* Takes in what has arrived, without blocking */
static void remote_monitor_read(RemoteMonitor *mon)
{
    size_t budget = REMOTE_MONITOR_READ_BUDGET;

    while (budget && mon->phase != REMOTE_MONITOR_CLOSED) {
        char buf[4096];
        ssize_t n = recv(mon->fd, buf, sizeof(buf), MSG_DONTWAIT);

        if (n > 0) {
            json_message_parser_feed(&mon->parser, buf, n);
            budget -= MIN(budget, n);
        } else if (n == 0) {
            remote_monitor_fail(mon, "closed the connection");
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            remote_monitor_fail(mon, "receiving failed: %s", strerror(errno));
        }
    }
}

static void remote_monitor_readable(void *opaque)
{
    RemoteMonitor *mon = opaque;

    remote_monitor_read(mon);
    remote_monitor_report_closed(mon);
}

RemoteMonitor *remote_monitor_new(int fd, const char *name,
                                  uint32_t timeout_ms,
                                  RemoteMonitorReadyFn *ready,
                                  RemoteMonitorClosedFn *closed,
                                  void *opaque)
{
    RemoteMonitor *mon = g_new0(RemoteMonitor, 1);

    mon->fd = fd;
    mon->name = g_strdup(name);
    mon->timeout_ms = timeout_ms;
    mon->ready = ready;
    mon->closed = closed;
    mon->opaque = opaque;
    QLIST_INIT(&mon->calls);
    QLIST_INIT(&mon->waiters);
    json_message_parser_init(&mon->parser, remote_monitor_emit, mon, NULL);
    qemu_socket_set_nonblock(fd);
    /*
     * On the main AioContext, not the iohandler one: an HMP command waits
     * for us in a nested aio_poll() of that context.
     */
    aio_set_fd_handler(qemu_get_aio_context(), fd, remote_monitor_readable,
                       NULL, NULL, NULL, mon);
    return mon;
}

void remote_monitor_free(RemoteMonitor *mon)
{
    if (!mon) {
        return;
    }
    mon->closed = NULL;     /* the owner is going away: nobody to tell */
    remote_monitor_fail(mon, "disconnected");
    json_message_parser_destroy(&mon->parser);
    close(mon->fd);
    g_free(mon->closed_reason);
    g_free(mon->name);
    g_free(mon);
}

void remote_monitor_disown(RemoteMonitor *mon)
{
    mon->ready = NULL;
    mon->closed = NULL;
    mon->opaque = NULL;
}

bool remote_monitor_is_ready(RemoteMonitor *mon)
{
    return mon->phase == REMOTE_MONITOR_READY;
}

int64_t remote_monitor_last_heard(RemoteMonitor *mon)
{
    return mon->last_heard_ns;
}

static QObject *remote_monitor_finish(RemoteMonitorCall *call, Error **errp)
{
    if (call->err) {
        error_propagate(errp, call->err);
        return NULL;
    }
    return call->ret;
}

static bool remote_monitor_closed_error(RemoteMonitor *mon, Error **errp)
{
    if (mon->phase == REMOTE_MONITOR_CLOSED) {
        error_setg(errp, "remote process '%s': %s", mon->name,
                   mon->closed_reason);
        return true;
    }
    return false;
}

/* Blocks until something arrives or @deadline passes */
static bool remote_monitor_pump(RemoteMonitor *mon, int64_t deadline,
                                const char *what, Error **errp)
{
    struct pollfd pfd = { .fd = mon->fd, .events = POLLIN };
    int64_t left = deadline - qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    int ret;

    if (left <= 0) {
        error_setg(errp, "remote process '%s' did not %s within %u ms",
                   mon->name, what, mon->timeout_ms);
        return false;
    }
    ret = poll(&pfd, 1, left);
    if (ret < 0 && errno != EINTR) {
        error_setg_errno(errp, errno, "remote process '%s'", mon->name);
        return false;
    }
    remote_monitor_read(mon);
    return true;
}

QObject *remote_monitor_call_sync(RemoteMonitor *mon, const char *command,
                                  QDict *args, int fd, Error **errp)
{
    int64_t deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                       mon->timeout_ms;
    RemoteMonitorCall call = { 0 };
    QObject *ret = NULL;

    while (mon->phase < REMOTE_MONITOR_READY) {
        if (!remote_monitor_pump(mon, deadline, "answer", errp)) {
            goto out;
        }
    }
    if (remote_monitor_closed_error(mon, errp)) {
        goto out;
    }
    call.id = ++mon->last_id;
    QLIST_INSERT_HEAD(&mon->calls, &call, next);
    if (!remote_monitor_send_command(mon, call.id, command, args, fd, errp)) {
        if (!call.done) {
            QLIST_REMOVE(&call, next);
        }
        error_free(call.err);
        goto out;
    }
    while (!call.done) {
        if (!remote_monitor_pump(mon, deadline, "answer", errp)) {
            QLIST_REMOVE(&call, next);
            goto out;
        }
    }
    ret = remote_monitor_finish(&call, errp);
out:
    remote_monitor_report_closed(mon);
    return ret;
}

static void remote_monitor_call_timeout(void *opaque)
{
    RemoteMonitorCall *call = opaque;
    Error *err = NULL;

    if (!call->done) {
        error_setg(&err, "remote process '%s' did not answer within %u ms",
                   call->mon->name, call->mon->timeout_ms);
        remote_monitor_complete(call, NULL, err);
    }
}

static void remote_monitor_ready_timeout(void *opaque)
{
    RemoteMonitorWaiter *w = opaque;

    if (!w->woken) {
        QLIST_REMOVE(w, next);
        w->woken = true;
        remote_monitor_wake(w->co);
    }
}

QObject *coroutine_fn remote_monitor_call_co(RemoteMonitor *mon,
                                             const char *command,
                                             QDict *args, Error **errp)
{
    int64_t deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                       mon->timeout_ms;
    RemoteMonitorCall call = { .co = qemu_coroutine_self(), .mon = mon };
    QEMUTimer *timer;

    if (mon->phase < REMOTE_MONITOR_READY) {
        RemoteMonitorWaiter w = { .co = qemu_coroutine_self() };
        QEMUTimer *wait_timer;

        QLIST_INSERT_HEAD(&mon->waiters, &w, next);
        wait_timer = aio_timer_new(qemu_get_aio_context(),
                                   QEMU_CLOCK_REALTIME, SCALE_MS,
                                   remote_monitor_ready_timeout, &w);
        timer_mod(wait_timer, deadline);
        /* woken by the handshake, a failure or the timer */
        while (!w.woken) {
            qemu_coroutine_yield();
        }
        timer_free(wait_timer);
        if (mon->phase < REMOTE_MONITOR_READY) {
            error_setg(errp, "remote process '%s' did not answer within "
                       "%u ms", mon->name, mon->timeout_ms);
            return NULL;
        }
    }
    if (remote_monitor_closed_error(mon, errp)) {
        return NULL;
    }
    call.id = ++mon->last_id;
    QLIST_INSERT_HEAD(&mon->calls, &call, next);
    if (!remote_monitor_send_command(mon, call.id, command, args, -1, errp)) {
        if (!call.done) {
            QLIST_REMOVE(&call, next);
        }
        error_free(call.err);
        return NULL;
    }
    timer = aio_timer_new(qemu_get_aio_context(), QEMU_CLOCK_REALTIME,
                          SCALE_MS, remote_monitor_call_timeout, &call);
    timer_mod(timer, deadline);
    while (!call.done) {
        qemu_coroutine_yield();
    }
    timer_free(timer);
    return remote_monitor_finish(&call, errp);
}

void remote_monitor_send(RemoteMonitor *mon, const char *command,
                         QDict *args, bool report_failure)
{
    RemoteMonitorCall *call;
    Error *err = NULL;

    if (mon->phase != REMOTE_MONITOR_READY) {
        return;
    }
    call = g_new0(RemoteMonitorCall, 1);
    call->id = ++mon->last_id;
    call->detached = true;
    call->quiet = !report_failure;
    call->mon = mon;
    QLIST_INSERT_HEAD(&mon->calls, call, next);
    if (!remote_monitor_send_command(mon, call->id, command, args, -1,
                                     &err)) {
        /* listed until the connection ends, which frees it */
        warn_report_err(err);
    }
}
