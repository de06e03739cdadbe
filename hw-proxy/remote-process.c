/*
 * x-remote-process: a remote QEMU that the main QEMU spawns (or attaches to)
 * and drives through its QMP monitor, and the proxies it serves.
 *
 * A spawned process gets one end of a socketpair as fd 3, serves QMP on it,
 * and is reaped by a GLib child watch; an attached one is reached through a
 * socket on which it serves QMP. Everything waits on the main AioContext
 * (fd handlers, timers, a pidfd for the child's exit), so that HMP commands,
 * which wait in a nested aio_poll() of it, see progress. Proxies plugged with remote=<id> get their
 * device link by handing the remote one end of a new socketpair (getfd) and
 * creating an x-remote-object for it there (object-add).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include "qapi/clone-visitor.h"
#include "qapi/error.h"
#include "qapi/qapi-builtin-visit.h"
#include "qapi/qapi-events-mpqemu.h"
#include "qapi/visitor.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/sockets.h"
#include "qemu/timer.h"
#include "system/system.h"
#include "system/runstate.h"
#include "qom/object_interfaces.h"
#include "qobject/qdict.h"
#include "qobject/qnum.h"
#include "mpqemu/remote-process.h"
#include "mpqemu/socket.h"
#include "proxy.h"
#include "remote-monitor.h"
#include "trace.h"

#define REMOTE_PROCESS_DEFAULT_TIMEOUT_MS 10000
#define REMOTE_PROCESS_DEFAULT_HEARTBEAT_INTERVAL_MS 1000
#define REMOTE_PROCESS_DEFAULT_HEARTBEAT_TIMEOUT_MS 5000
/* How long a spawned process may live on once its monitor is gone */
#define REMOTE_PROCESS_GRACE_MS 1000

/* The fd on which a spawned process finds its monitor's socket */
#define REMOTE_PROCESS_MONITOR_FD 3

typedef struct RemoteProcessDevice {
    char *devid;
    PCIProxyDev *proxy;
    QLIST_ENTRY(RemoteProcessDevice) next;
} RemoteProcessDevice;

/* A coroutine waiting for the process to change state */
typedef struct RemoteProcessWaiter {
    Coroutine *co;
    bool woken;
    QLIST_ENTRY(RemoteProcessWaiter) next;
} RemoteProcessWaiter;

struct RemoteProcess {
    Object parent_obj;

    /* properties */
    char *executable;
    strList *args;
    char *log;
    char *fd_str;
    char *socket_path;
    uint32_t timeout_ms;
    uint32_t heartbeat_interval_ms;     /* 0: no heartbeat */
    uint32_t heartbeat_timeout_ms;
    bool sandbox;
    char *user;
    strList *allow_paths;

    RemoteProcessState state;
    bool spawned;
    pid_t pid;                  /* 0 if unknown */
    int pidfd;                  /* while a spawned process runs, else -1 */
    int wait_status;            /* as waitpid() gave it, once exited */
    char *kill_reason;          /* why we killed it, if we did */
    char *monitor_lost;         /* its monitor closed: why, if it did */
    bool quitting;              /* asked to quit: it closes its monitor */
    char *failure;              /* why it stopped, once it did */
    RemoteMonitor *mon;
    QEMUTimer *deadline_timer;  /* startup; life without a monitor */
    QEMUTimer *heartbeat_timer;
    int64_t ping_sent_ns;       /* the last heartbeat, 0 before the first */
    bool condemned;             /* stopped answering, or broke the protocol */
    Notifier exit_notifier;     /* the main QEMU exits: end it cleanly */
    QLIST_HEAD(, RemoteProcessDevice) devices;
    QLIST_HEAD(, RemoteProcessWaiter) waiters;
};

static const char *remote_process_id(RemoteProcess *rp)
{
    return object_get_canonical_path_component(OBJECT(rp)) ?: "?";
}

static void remote_process_set_state(RemoteProcess *rp,
                                     RemoteProcessState state)
{
    RemoteProcessWaiter *w, *next;

    trace_remote_process_state(remote_process_id(rp),
                               RemoteProcessState_str(state));
    rp->state = state;
    QLIST_FOREACH_SAFE(w, &rp->waiters, next, next) {
        QLIST_REMOVE(w, next);
        w->woken = true;
        aio_co_schedule(qemu_get_aio_context(), w->co);
    }
}

static void remote_process_wait_timeout(void *opaque)
{
    RemoteProcessWaiter *w = opaque;

    if (!w->woken) {
        QLIST_REMOVE(w, next);
        w->woken = true;
        aio_co_schedule(qemu_get_aio_context(), w->co);
    }
}

/* Yields until the state is no longer @state, or @timeout_ms passed */
static void coroutine_fn remote_process_wait_leave(RemoteProcess *rp,
                                                   RemoteProcessState state,
                                                   uint32_t timeout_ms)
{
    int64_t deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + timeout_ms;
    QEMUTimer *timer;

    while (rp->state == state &&
           qemu_clock_get_ms(QEMU_CLOCK_REALTIME) < deadline) {
        RemoteProcessWaiter w = { .co = qemu_coroutine_self() };

        QLIST_INSERT_HEAD(&rp->waiters, &w, next);
        timer = aio_timer_new(qemu_get_aio_context(), QEMU_CLOCK_REALTIME,
                              SCALE_MS, remote_process_wait_timeout, &w);
        timer_mod(timer, deadline);
        while (!w.woken) {
            qemu_coroutine_yield();
        }
        timer_free(timer);
    }
}

/* REMOTE_PROCESS_EXITED; @status as waitpid() gave it, if @spawned */
static void remote_process_send_exited(const char *id, pid_t pid,
                                       bool spawned, int status,
                                       const char *reason)
{
    qapi_event_send_remote_process_exited(id, pid != 0, pid,
                                          spawned && WIFEXITED(status),
                                          WEXITSTATUS(status),
                                          spawned && WIFSIGNALED(status),
                                          WTERMSIG(status), reason);
}

static char *remote_process_exit_reason(int status, const char *kill_reason)
{
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && kill_reason) {
        return g_strdup_printf("killed: %s", kill_reason);
    } else if (WIFSIGNALED(status)) {
        return g_strdup_printf("killed by signal %d", WTERMSIG(status));
    }
    return g_strdup_printf("exited with status %d", WEXITSTATUS(status));
}

static void remote_process_stopped(RemoteProcess *rp, RemoteProcessState state,
                                   const char *reason)
{
    if (!rp->failure) {
        rp->failure = g_strdup(reason);
    }
    timer_del(rp->deadline_timer);
    timer_del(rp->heartbeat_timer);
    remote_process_set_state(rp, state);
    remote_process_send_exited(remote_process_id(rp), rp->pid, rp->spawned,
                               rp->wait_status, reason);
}

static void remote_process_child_exited(RemoteProcess *rp, int status)
{
    g_autofree char *reason = remote_process_exit_reason(status,
                                                         rp->kill_reason);

    rp->wait_status = status;
    trace_remote_process_exited(remote_process_id(rp), rp->pid, reason);
    if (rp->state == REMOTE_PROCESS_STATE_STARTING) {
        g_autofree char *why = g_strdup_printf("%s during startup%s%s",
                                               reason,
                                               rp->log ? "; see " : "",
                                               rp->log ?: "");
        remote_process_stopped(rp, REMOTE_PROCESS_STATE_EXITED, why);
    } else {
        remote_process_stopped(rp, REMOTE_PROCESS_STATE_EXITED, reason);
    }
}

static void remote_process_unwatch_child(RemoteProcess *rp)
{
    aio_set_fd_handler(qemu_get_aio_context(), rp->pidfd, NULL, NULL, NULL,
                       NULL, NULL);
    close(rp->pidfd);
    rp->pidfd = -1;
}

/* The pidfd of a child becomes readable when the child has exited */
static void remote_process_pidfd_readable(void *opaque)
{
    RemoteProcess *rp = opaque;
    int status;

    if (waitpid(rp->pid, &status, WNOHANG) != rp->pid) {
        return;
    }
    remote_process_unwatch_child(rp);
    remote_process_child_exited(rp, status);
}

static bool remote_process_watch_child(RemoteProcess *rp, Error **errp)
{
    rp->pidfd = pidfd_open(rp->pid, 0);
    if (rp->pidfd < 0) {
        error_setg_errno(errp, errno, "cannot watch process %d", rp->pid);
        return false;
    }
    aio_set_fd_handler(qemu_get_aio_context(), rp->pidfd,
                       remote_process_pidfd_readable, NULL, NULL, NULL, rp);
    return true;
}

static void G_GNUC_PRINTF(2, 3) remote_process_kill(RemoteProcess *rp,
                                                    const char *fmt, ...)
{
    va_list ap;

    if (!rp->kill_reason) {
        va_start(ap, fmt);
        rp->kill_reason = g_strdup_vprintf(fmt, ap);
        va_end(ap);
    }
    kill(rp->pid, SIGKILL);
}

/* Asks a spawned process to quit: over its monitor, or with SIGTERM */
static void remote_process_ask_to_quit(RemoteProcess *rp)
{
    rp->quitting = true;
    if (rp->mon && remote_monitor_is_ready(rp->mon)) {
        remote_monitor_send(rp->mon, "quit", NULL, true);
    } else {
        kill(rp->pid, SIGTERM);
    }
}

/*
 * The process is not to be trusted with its devices any more: it stopped
 * answering, or one of them broke the protocol. Every proxy of it fails.
 * A spawned process is killed: a device model that hung may wake up later
 * and DMA into guest RAM that the guest has long reused. An attached one
 * is not ours to kill; the links closed under it make it reset its
 * devices when it runs again.
 */
static void remote_process_condemn(RemoteProcess *rp,
                                   RemoteDeviceFailureCause cause,
                                   const char *why)
{
    RemoteProcessDevice *d, *next;

    if (rp->condemned) {
        return;
    }
    rp->condemned = true;
    trace_remote_process_condemned(remote_process_id(rp), why);
    QLIST_FOREACH_SAFE(d, &rp->devices, next, next) {
        if (proxy_is_connected(d->proxy)) {
            Error *err = NULL;

            error_setg(&err, "its remote process %s %s",
                       remote_process_id(rp), why);
            proxy_fail_with(d->proxy, cause, err);
        }
    }
    if (rp->spawned && rp->pidfd >= 0) {
        error_report("remote process '%s' (pid %d) %s; killing it",
                     remote_process_id(rp), rp->pid, why);
        remote_process_kill(rp, "%s", why);
    } else if (rp->state == REMOTE_PROCESS_STATE_RUNNING) {
        error_report("remote process '%s' %s; it is unresponsive",
                     remote_process_id(rp), why);
        remote_process_set_state(rp, REMOTE_PROCESS_STATE_UNRESPONSIVE);
    }
}

/*
 * Checks that the monitor still answers, even when the guest leaves the
 * devices alone: one command at a time, each of which must be answered
 * (or anything else heard) within the heartbeat timeout.
 */
static void remote_process_heartbeat(void *opaque)
{
    RemoteProcess *rp = opaque;
    int64_t now = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    int64_t interval = (int64_t)rp->heartbeat_interval_ms * SCALE_MS;
    int64_t timeout = (int64_t)rp->heartbeat_timeout_ms * SCALE_MS;
    bool answered;

    if (!rp->mon || !remote_monitor_is_ready(rp->mon) ||
        (rp->state != REMOTE_PROCESS_STATE_RUNNING &&
         rp->state != REMOTE_PROCESS_STATE_UNRESPONSIVE)) {
        return;
    }
    answered = remote_monitor_last_heard(rp->mon) >= rp->ping_sent_ns;
    if (!answered) {
        int64_t left = rp->ping_sent_ns + timeout - now;

        if (left > 0) {
            timer_mod_ns(rp->heartbeat_timer, now + MIN(interval, left));
            return;
        }
        if (rp->state == REMOTE_PROCESS_STATE_RUNNING) {
            g_autofree char *why = g_strdup_printf(
                "did not answer its heartbeat within %u ms",
                rp->heartbeat_timeout_ms);

            remote_process_condemn(rp, REMOTE_DEVICE_FAILURE_CAUSE_TIMEOUT,
                                   why);
        }
        /* an unresponsive process may still answer, and run again */
        timer_mod_ns(rp->heartbeat_timer, now + interval);
        return;
    }
    if (rp->state == REMOTE_PROCESS_STATE_UNRESPONSIVE) {
        info_report("remote process '%s' answers again; its proxies can be "
                    "reattached", remote_process_id(rp));
        rp->condemned = false;
        remote_process_set_state(rp, REMOTE_PROCESS_STATE_RUNNING);
    }
    rp->ping_sent_ns = now;
    remote_monitor_send(rp->mon, "query-status", NULL, false);
    timer_mod_ns(rp->heartbeat_timer, now + MIN(interval, timeout));
}

static void remote_process_started(RemoteProcess *rp)
{
    timer_del(rp->deadline_timer);
    remote_process_set_state(rp, REMOTE_PROCESS_STATE_RUNNING);
    qapi_event_send_remote_process_started(remote_process_id(rp),
                                           rp->pid != 0, rp->pid);
    if (rp->heartbeat_interval_ms) {
        rp->ping_sent_ns = 0;
        timer_mod(rp->heartbeat_timer,
                  qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                  rp->heartbeat_interval_ms);
    }
}

/*
 * An attached process says who it is: the peer of a socket passed to us
 * need not be the process at its other end (a socketpair's creator).
 */
static void coroutine_fn remote_process_identify_co(void *opaque)
{
    RemoteProcess *rp = opaque;
    g_autoptr(QDict) args = qdict_new();
    QObject *ret;
    int64_t pid;

    qdict_put_str(args, "path", "/machine");
    qdict_put_str(args, "property", "pid");
    ret = remote_monitor_call_co(rp->mon, "qom-get", args, NULL);
    if (ret && qobject_type(ret) == QTYPE_QNUM &&
        qnum_get_try_int(qobject_to(QNum, ret), &pid) && pid > 0 &&
        pid <= INT_MAX) {
        rp->pid = pid;
    }
    qobject_unref(ret);
    /* the monitor may have gone, or the object, while we waited */
    if (rp->mon && rp->state == REMOTE_PROCESS_STATE_STARTING) {
        remote_process_started(rp);
    }
    object_unref(OBJECT(rp));
}

static void remote_process_monitor_ready(void *opaque)
{
    RemoteProcess *rp = opaque;
    Coroutine *co;

    if (rp->spawned) {
        remote_process_started(rp);
        return;
    }
    object_ref(OBJECT(rp));
    co = qemu_coroutine_create(remote_process_identify_co, rp);
    aio_co_schedule(qemu_get_aio_context(), co);
}

static void remote_process_monitor_closed(void *opaque, const char *reason)
{
    RemoteProcess *rp = opaque;

    if (rp->spawned) {
        /*
         * Useless without its monitor. Usually it is exiting anyway: give
         * it a moment before killing it; the child watch reports the end.
         */
        if (rp->pidfd >= 0 && !rp->quitting) {
            rp->monitor_lost = g_strdup(reason);
            timer_mod(rp->deadline_timer,
                      qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                      REMOTE_PROCESS_GRACE_MS);
        }
        return;
    }
    if (rp->state == REMOTE_PROCESS_STATE_STARTING ||
        rp->state == REMOTE_PROCESS_STATE_RUNNING) {
        g_autofree char *why = g_strdup_printf("its monitor %s", reason);

        remote_process_stopped(rp, REMOTE_PROCESS_STATE_DISCONNECTED, why);
    }
}

static void remote_process_deadline(void *opaque)
{
    RemoteProcess *rp = opaque;
    g_autofree char *why = g_strdup_printf("did not answer within %u ms",
                                           rp->timeout_ms);

    if (rp->monitor_lost && rp->pidfd >= 0) {
        remote_process_kill(rp, "its monitor %s", rp->monitor_lost);
        return;
    }
    if (rp->state != REMOTE_PROCESS_STATE_STARTING) {
        return;
    }
    if (rp->spawned && rp->pidfd >= 0) {
        remote_process_kill(rp, "%s", why);
        return;
    }
    remote_process_stopped(rp, REMOTE_PROCESS_STATE_DISCONNECTED, why);
}

/* Everything the child needs, prepared before fork() */
typedef struct RemoteProcessSpawn {
    const char *path;           /* what to execute */
    char **argv;
    int monitor_fd;
    int stdin_fd;
    int log_fd;
} RemoteProcessSpawn;

/* Between fork() and exec(): async-signal-safe calls only */
static void G_NORETURN remote_process_child(RemoteProcessSpawn *s,
                                            pid_t parent)
{
    static const char exec_failed[] = "x-remote-process: exec failed\n";
    sigset_t all;

    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    /* the remote dies with the main QEMU, however that ends */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(127);
    }
    if (dup2(s->stdin_fd, STDIN_FILENO) < 0 ||
        dup2(s->log_fd, STDOUT_FILENO) < 0 ||
        (s->log_fd != STDERR_FILENO &&
         dup2(s->log_fd, STDERR_FILENO) < 0) ||
        dup2(s->monitor_fd, REMOTE_PROCESS_MONITOR_FD) < 0) {
        _exit(127);
    }
#ifdef CONFIG_CLOSE_RANGE
    close_range(REMOTE_PROCESS_MONITOR_FD + 1, ~0U, 0);
#endif
    execv(s->path, s->argv);
    if (write(STDERR_FILENO, exec_failed, sizeof(exec_failed) - 1) < 0) {
        /* nowhere left to say it */
    }
    _exit(127);
}

/* -machine: the remote sandboxes itself unless told not to */
static char *remote_process_machine_opts(RemoteProcess *rp)
{
    GString *opts = g_string_new("x-remote,auto-shutdown=off");
    unsigned i = 0;

    if (!rp->sandbox) {
        g_string_append(opts, ",sandbox=off");
    }
    if (rp->user) {
        g_string_append_printf(opts, ",user=%s", rp->user);
    }
    for (strList *p = rp->allow_paths; p; p = p->next, i++) {
        g_autofree char *escaped = NULL;
        g_auto(GStrv) parts = g_strsplit(p->value, ",", -1);

        /* a comma in an option's value is written twice */
        escaped = g_strjoinv(",,", parts);
        g_string_append_printf(opts, ",allow-paths.%u=%s", i, escaped);
    }
    return g_string_free(opts, false);
}

static char **remote_process_argv(RemoteProcess *rp, const char *exe)
{
    GPtrArray *argv = g_ptr_array_new();
    g_autofree char *chardev =
        g_strdup_printf("socket,id=mpqemu-qmp,fd=%d",
                        REMOTE_PROCESS_MONITOR_FD);

    g_ptr_array_add(argv, g_strdup(exe));
    g_ptr_array_add(argv, g_strdup("-machine"));
    g_ptr_array_add(argv, remote_process_machine_opts(rp));
    g_ptr_array_add(argv, g_strdup("-nodefaults"));
    g_ptr_array_add(argv, g_strdup("-display"));
    g_ptr_array_add(argv, g_strdup("none"));
    g_ptr_array_add(argv, g_strdup("-chardev"));
    g_ptr_array_add(argv, g_steal_pointer(&chardev));
    g_ptr_array_add(argv, g_strdup("-mon"));
    g_ptr_array_add(argv, g_strdup("chardev=mpqemu-qmp,mode=control"));
    if (runstate_check(RUN_STATE_INMIGRATE)) {
        /*
         * For a migration's destination: the process opens its disk images
         * without taking them from the source's remote, and takes them
         * when the VM starts (RUN_STATE).
         */
        g_ptr_array_add(argv, g_strdup("-incoming"));
        g_ptr_array_add(argv, g_strdup("defer"));
    }
    for (strList *a = rp->args; a; a = a->next) {
        g_ptr_array_add(argv, g_strdup(a->value));
    }
    g_ptr_array_add(argv, NULL);
    return (char **)g_ptr_array_free(argv, false);
}

static void remote_process_main_exit(Notifier *notifier, void *data);

static bool remote_process_spawn(RemoteProcess *rp, Error **errp)
{
    /* our own binary, even if a newer one replaced it on disk since */
    g_autofree char *exe = g_strdup(rp->executable ?: "/proc/self/exe");
    g_autofree char *argv0 = g_file_read_link("/proc/self/exe", NULL);
    RemoteProcessSpawn s = { .log_fd = STDERR_FILENO };
    pid_t parent = getpid();
    int sv[2];
    pid_t pid;

    if (access(exe, X_OK) < 0) {
        error_setg_errno(errp, errno, "cannot run '%s'", exe);
        return false;
    }
    if (rp->log) {
        s.log_fd = qemu_create(rp->log, O_WRONLY | O_APPEND, 0600, errp);
        if (s.log_fd < 0) {
            return false;
        }
    }
    s.stdin_fd = qemu_open("/dev/null", O_RDONLY, errp);
    if (s.stdin_fd < 0) {
        goto fail_log;
    }
    if (qemu_socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        error_setg_errno(errp, errno, "cannot create a socket pair");
        goto fail_stdin;
    }
    s.monitor_fd = sv[1];
    s.path = exe;
    s.argv = remote_process_argv(rp, rp->executable ?: argv0 ?: exe);

    pid = fork();
    if (pid == 0) {
        remote_process_child(&s, parent);
    }
    g_strfreev(s.argv);
    close(sv[1]);
    close(s.stdin_fd);
    if (s.log_fd != STDERR_FILENO) {
        close(s.log_fd);
    }
    if (pid < 0) {
        error_setg_errno(errp, errno, "cannot start a remote process");
        close(sv[0]);
        return false;
    }
    trace_remote_process_spawned(remote_process_id(rp), pid, exe);
    rp->pid = pid;
    rp->spawned = true;
    if (!remote_process_watch_child(rp, errp)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(sv[0]);
        return false;
    }
    rp->exit_notifier.notify = remote_process_main_exit;
    qemu_add_exit_notifier(&rp->exit_notifier);
    rp->mon = remote_monitor_new(sv[0], remote_process_id(rp), rp->timeout_ms,
                                 remote_process_monitor_ready,
                                 remote_process_monitor_closed, rp);
    return true;

fail_stdin:
    close(s.stdin_fd);
fail_log:
    if (s.log_fd != STDERR_FILENO) {
        close(s.log_fd);
    }
    return false;
}

static bool remote_process_attach(RemoteProcess *rp, Error **errp)
{
    int fd;

    if (rp->fd_str) {
        fd = mpqemu_socket_from_param(rp->fd_str, "the remote process's QMP "
                                      "monitor", errp);
    } else {
        fd = mpqemu_socket_connect(rp->socket_path, errp);
    }
    if (fd < 0) {
        return false;
    }
    rp->mon = remote_monitor_new(fd, remote_process_id(rp), rp->timeout_ms,
                                 remote_process_monitor_ready,
                                 remote_process_monitor_closed, rp);
    return true;
}

static void remote_process_complete(UserCreatable *uc, Error **errp)
{
    RemoteProcess *rp = REMOTE_PROCESS(uc);

    if (rp->fd_str && rp->socket_path) {
        error_setg(errp, "x-remote-process takes at most one of fd= and "
                   "socket=");
        return;
    }
    if ((rp->fd_str || rp->socket_path) &&
        (rp->executable || rp->args || rp->log || !rp->sandbox ||
         rp->user || rp->allow_paths)) {
        error_setg(errp, "x-remote-process: executable=, args=, log=, "
                   "sandbox=, user= and allow-paths= are for a process it "
                   "spawns, not one it attaches to with fd= or socket=");
        return;
    }
    if (rp->user && (!*rp->user || strchr(rp->user, ','))) {
        error_setg(errp, "x-remote-process: '%s' is not a user name",
                   rp->user);
        return;
    }
    if ((rp->user || rp->allow_paths) && !rp->sandbox) {
        error_setg(errp, "x-remote-process: user= and allow-paths= are part "
                   "of the sandbox; they cannot go with sandbox=off");
        return;
    }
    if (!rp->timeout_ms) {
        error_setg(errp, "x-remote-process: timeout must be at least 1 ms");
        return;
    }
    if (rp->fd_str || rp->socket_path ? !remote_process_attach(rp, errp)
                                      : !remote_process_spawn(rp, errp)) {
        return;
    }
    timer_mod(rp->deadline_timer,
              qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + rp->timeout_ms);
}

static bool remote_process_can_be_deleted(UserCreatable *uc)
{
    return QLIST_EMPTY(&REMOTE_PROCESS(uc)->devices);
}

RemoteProcess *remote_process_find(const char *id, Error **errp)
{
    Object *obj = object_resolve_path_component(object_get_objects_root(),
                                                id);
    RemoteProcess *rp = (RemoteProcess *)object_dynamic_cast(
        obj, TYPE_REMOTE_PROCESS);

    if (!rp) {
        error_setg(errp, "there is no remote process '%s'", id);
    }
    return rp;
}

bool remote_process_check_running(RemoteProcess *rp, Error **errp)
{
    if (rp->state == REMOTE_PROCESS_STATE_STARTING ||
        rp->state == REMOTE_PROCESS_STATE_RUNNING) {
        return true;
    }
    if (rp->state == REMOTE_PROCESS_STATE_UNRESPONSIVE) {
        error_setg(errp, "remote process '%s' is unresponsive: it did not "
                   "answer its heartbeat", remote_process_id(rp));
        return false;
    }
    error_setg(errp, "remote process '%s' is not running: %s",
               remote_process_id(rp), rp->failure ?: "ended");
    return false;
}

static char *remote_process_link_id(const char *devid)
{
    return g_strdup_printf("mpqemu-link-%s", devid);
}

int remote_process_plug(RemoteProcess *rp, PCIProxyDev *proxy,
                        const char *devid, Error **errp)
{
    g_autofree char *link_id = remote_process_link_id(devid);
    g_autoptr(QDict) args = qdict_new();
    RemoteProcessDevice *d;
    QObject *ret;
    int sv[2];

    if (!remote_process_check_running(rp, errp)) {
        return -1;
    }
    QLIST_FOREACH(d, &rp->devices, next) {
        if (!strcmp(d->devid, devid)) {
            g_autofree char *path = object_get_canonical_path(
                OBJECT(d->proxy));

            error_setg(errp, "device '%s' of remote process '%s' is already "
                       "served by %s", devid, remote_process_id(rp), path);
            return -1;
        }
    }
    if (qemu_socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        error_setg_errno(errp, errno, "cannot create a socket pair");
        return -1;
    }

    /* hand the remote its end, then an x-remote-object to serve it */
    qdict_put_str(args, "fdname", link_id);
    ret = remote_monitor_call_sync(rp->mon, "getfd", args, sv[1], errp);
    close(sv[1]);
    if (!ret) {
        goto fail;
    }
    qobject_unref(ret);

    qobject_unref(args);
    args = qdict_new();
    qdict_put_str(args, "qom-type", "x-remote-object");
    qdict_put_str(args, "id", link_id);
    qdict_put_str(args, "devid", devid);
    qdict_put_str(args, "fd", link_id);
    ret = remote_monitor_call_sync(rp->mon, "object-add", args, -1, errp);
    if (!ret) {
        goto fail;
    }
    qobject_unref(ret);

    d = g_new0(RemoteProcessDevice, 1);
    d->devid = g_strdup(devid);
    d->proxy = proxy;
    QLIST_INSERT_HEAD(&rp->devices, d, next);
    object_ref(OBJECT(rp));
    trace_remote_process_plug(remote_process_id(rp), devid);
    return sv[0];

fail:
    /*
     * Whatever the remote did or will still do of it (a command that timed
     * out may yet run), undo it; what it did not do fails quietly.
     */
    if (rp->mon && remote_monitor_is_ready(rp->mon)) {
        qobject_unref(args);
        args = qdict_new();
        qdict_put_str(args, "id", link_id);
        remote_monitor_send(rp->mon, "object-del", args, false);
        qobject_unref(args);
        args = qdict_new();
        qdict_put_str(args, "fdname", link_id);
        remote_monitor_send(rp->mon, "closefd", args, false);
    }
    close(sv[0]);
    return -1;
}

static RemoteProcessDevice *remote_process_device_of(RemoteProcess *rp,
                                                     PCIProxyDev *proxy)
{
    RemoteProcessDevice *d;

    QLIST_FOREACH(d, &rp->devices, next) {
        if (d->proxy == proxy) {
            return d;
        }
    }
    return NULL;
}

static void remote_process_forget(RemoteProcess *rp, RemoteProcessDevice *d)
{
    QLIST_REMOVE(d, next);
    g_free(d->devid);
    g_free(d);
    object_unref(OBJECT(rp));
}

void remote_process_unplug(RemoteProcess *rp, PCIProxyDev *proxy,
                           bool delete_device)
{
    RemoteProcessDevice *d;

    d = remote_process_device_of(rp, proxy);
    if (!d) {
        return;
    }
    trace_remote_process_unplug(remote_process_id(rp), d->devid);
    if (rp->mon && remote_monitor_is_ready(rp->mon)) {
        g_autofree char *link_id = remote_process_link_id(d->devid);
        g_autoptr(QDict) args = qdict_new();

        qdict_put_str(args, "id", link_id);
        remote_monitor_send(rp->mon, "object-del", args, true);
        if (delete_device) {
            /* the device goes with its proxy; its backend stays */
            qobject_unref(args);
            args = qdict_new();
            qdict_put_str(args, "id", d->devid);
            remote_monitor_send(rp->mon, "device_del", args, true);
        }
    }
    remote_process_forget(rp, d);
}

const char *remote_process_name(RemoteProcess *rp)
{
    return remote_process_id(rp);
}

pid_t remote_process_pid(RemoteProcess *rp)
{
    return rp->pid;
}

const char *remote_process_devid(RemoteProcess *rp, PCIProxyDev *proxy)
{
    RemoteProcessDevice *d = remote_process_device_of(rp, proxy);

    return d ? d->devid : NULL;
}

void remote_process_device_failed(RemoteProcess *rp, PCIProxyDev *proxy,
                                  RemoteDeviceFailureCause cause,
                                  const char *reason)
{
    RemoteProcessDevice *d = remote_process_device_of(rp, proxy);
    g_autofree char *why = NULL;

    /*
     * A device that hangs or lies takes its spawned process with it; an
     * attached process keeps its other devices, which answer for
     * themselves.
     */
    if (!d || !rp->spawned ||
        (cause != REMOTE_DEVICE_FAILURE_CAUSE_TIMEOUT &&
         cause != REMOTE_DEVICE_FAILURE_CAUSE_PROTOCOL)) {
        return;
    }
    why = g_strdup_printf("failed its device %s: %s", d->devid, reason);
    remote_process_condemn(rp, cause, why);
}

static RemoteProcessInfo *remote_process_get_info(RemoteProcess *rp)
{
    RemoteProcessInfo *info = g_new0(RemoteProcessInfo, 1);
    RemoteProcessDeviceInfoList **tail = &info->devices;
    RemoteProcessDevice *d;

    info->id = g_strdup(remote_process_id(rp));
    info->has_pid = rp->pid != 0;
    info->pid = rp->pid;
    info->state = rp->state;
    info->spawned = rp->spawned;
    if (rp->spawned && rp->state == REMOTE_PROCESS_STATE_EXITED) {
        info->has_exit_code = WIFEXITED(rp->wait_status);
        info->exit_code = WEXITSTATUS(rp->wait_status);
        info->has_signal = WIFSIGNALED(rp->wait_status);
        info->signal = WTERMSIG(rp->wait_status);
    }
    QLIST_FOREACH(d, &rp->devices, next) {
        RemoteProcessDeviceInfo *di = g_new0(RemoteProcessDeviceInfo, 1);

        di->devid = g_strdup(d->devid);
        di->proxy = object_get_canonical_path(OBJECT(d->proxy));
        di->connected = proxy_is_connected(d->proxy);
        di->failure = g_strdup(proxy_failure(d->proxy, &di->cause));
        di->has_cause = di->failure != NULL;
        QAPI_LIST_APPEND(tail, di);
    }
    return info;
}

static bool coroutine_fn remote_process_wait_started(RemoteProcess *rp,
                                                     Error **errp)
{
    remote_process_wait_leave(rp, REMOTE_PROCESS_STATE_STARTING,
                              rp->timeout_ms * 2);
    if (rp->state != REMOTE_PROCESS_STATE_RUNNING) {
        error_setg(errp, "remote process '%s' failed to start: %s",
                   remote_process_id(rp),
                   rp->failure ?: "it did not answer");
        return false;
    }
    return true;
}

static QObject *coroutine_fn remote_process_run_qmp(RemoteProcess *rp,
                                                    const char *command,
                                                    QObject *arguments,
                                                    Error **errp)
{
    QDict *args = NULL;

    if (arguments) {
        args = qobject_to(QDict, arguments);
        if (!args) {
            error_setg(errp, "arguments must be an object");
            return NULL;
        }
    }
    if (!remote_process_check_running(rp, errp)) {
        return NULL;
    }
    return remote_monitor_call_co(rp->mon, command, args, errp);
}

static bool coroutine_fn remote_process_end(RemoteProcess *rp, bool force,
                                            Error **errp)
{
    RemoteProcessDevice *d, *next;

    if (!QLIST_EMPTY(&rp->devices) && !force) {
        d = QLIST_FIRST(&rp->devices);
        error_setg(errp, "remote process '%s' still serves device '%s'",
                   remote_process_id(rp), d->devid);
        error_append_hint(errp, "Unplug its proxies first (device_del), or "
                          "set force to end it anyway\n");
        return false;
    }
    QLIST_FOREACH_SAFE(d, &rp->devices, next, next) {
        Error *err = NULL;

        error_setg(&err, "its remote process %s was ended",
                   remote_process_id(rp));
        proxy_detach_remote_process(d->proxy, err);
        remote_process_forget(rp, d);
    }

    if (!rp->spawned) {
        remote_monitor_free(rp->mon);
        rp->mon = NULL;
        if (rp->state != REMOTE_PROCESS_STATE_DISCONNECTED) {
            remote_process_stopped(rp, REMOTE_PROCESS_STATE_DISCONNECTED,
                                   "disconnected by the main QEMU");
        }
        return true;
    }
    if (rp->pidfd >= 0) {
        remote_process_ask_to_quit(rp);
        remote_process_wait_leave(rp, rp->state, rp->timeout_ms);
    }
    if (rp->pidfd >= 0) {
        warn_report("remote process '%s' (pid %d) did not quit within %u ms;"
                    " killing it", remote_process_id(rp), rp->pid,
                    rp->timeout_ms);
        remote_process_kill(rp, "did not quit within %u ms", rp->timeout_ms);
        remote_process_wait_leave(rp, rp->state, rp->timeout_ms);
    }
    return true;
}

/* Blocks until @pid exits, killing it at @deadline (realtime ms) */
static void remote_process_wait_exit(pid_t pid, int64_t deadline)
{
    while (waitpid(pid, NULL, WNOHANG) == 0) {
        if (qemu_clock_get_ms(QEMU_CLOCK_REALTIME) >= deadline) {
            kill(pid, SIGKILL);
            break;
        }
        g_usleep(10 * 1000);
    }
}

/*
 * The main QEMU is exiting: give the process the time it needs to close its
 * images properly (it would die with us anyway, by PR_SET_PDEATHSIG).
 */
static void remote_process_main_exit(Notifier *notifier, void *data)
{
    RemoteProcess *rp = container_of(notifier, RemoteProcess, exit_notifier);

    if (rp->pidfd < 0) {
        return;
    }
    remote_process_ask_to_quit(rp);
    remote_process_wait_exit(rp->pid, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                             rp->timeout_ms);
}

/*
 * Reaps a process that outlives its object (object-del, or the main QEMU's
 * cleanup of its objects on the way out), killing it if it lingers. It
 * keeps the monitor open until then: a monitor whose peer leaves drops
 * the commands it has queued, "quit" included.
 */
typedef struct RemoteProcessReaper {
    char *id;
    pid_t pid;
    int pidfd;
    RemoteMonitor *mon;
    bool killed;
    int64_t deadline;           /* QEMU_CLOCK_REALTIME ms, then SIGKILL */
    QEMUTimer *kill_timer;
    Notifier exit_notifier;
} RemoteProcessReaper;

static void remote_process_reaper_free(RemoteProcessReaper *r)
{
    qemu_remove_exit_notifier(&r->exit_notifier);
    aio_set_fd_handler(qemu_get_aio_context(), r->pidfd, NULL, NULL, NULL,
                       NULL, NULL);
    close(r->pidfd);
    remote_monitor_free(r->mon);
    timer_free(r->kill_timer);
    g_free(r->id);
    g_free(r);
}

static void remote_process_reaped(void *opaque)
{
    RemoteProcessReaper *r = opaque;
    g_autofree char *reason = NULL;
    int status;

    if (waitpid(r->pid, &status, WNOHANG) != r->pid) {
        return;
    }
    reason = remote_process_exit_reason(status, r->killed ?
                                        "did not quit in time" : NULL);
    remote_process_send_exited(r->id, r->pid, true, status, reason);
    remote_process_reaper_free(r);
}

static void remote_process_reaper_kill(void *opaque)
{
    RemoteProcessReaper *r = opaque;

    r->killed = true;
    kill(r->pid, SIGKILL);
}

/* The main loop runs no more: wait here, within the deadline */
static void remote_process_reaper_exit(Notifier *notifier, void *data)
{
    RemoteProcessReaper *r = container_of(notifier, RemoteProcessReaper,
                                          exit_notifier);

    remote_process_wait_exit(r->pid, r->deadline);
}

static void remote_process_hand_to_reaper(RemoteProcess *rp)
{
    RemoteProcessReaper *r = g_new0(RemoteProcessReaper, 1);

    remote_process_ask_to_quit(rp);
    r->id = g_strdup(remote_process_id(rp));
    r->pid = rp->pid;
    r->pidfd = rp->pidfd;
    rp->pidfd = -1;
    r->mon = rp->mon;
    rp->mon = NULL;
    if (r->mon) {
        remote_monitor_disown(r->mon);
    }
    r->deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + rp->timeout_ms;
    r->kill_timer = aio_timer_new(qemu_get_aio_context(), QEMU_CLOCK_REALTIME,
                                  SCALE_MS, remote_process_reaper_kill, r);
    timer_mod(r->kill_timer, r->deadline);
    r->exit_notifier.notify = remote_process_reaper_exit;
    qemu_add_exit_notifier(&r->exit_notifier);
    aio_set_fd_handler(qemu_get_aio_context(), r->pidfd,
                       remote_process_reaped, NULL, NULL, NULL, r);
}

static void remote_process_unparent(Object *obj)
{
    RemoteProcess *rp = REMOTE_PROCESS(obj);

    timer_del(rp->heartbeat_timer);
    if (rp->pidfd >= 0) {
        /* object-del of a live process: ask it to quit, then insist */
        remote_process_hand_to_reaper(rp);
    }
    if (rp->exit_notifier.notify) {
        qemu_remove_exit_notifier(&rp->exit_notifier);
        rp->exit_notifier.notify = NULL;
    }
    remote_monitor_free(rp->mon);
    rp->mon = NULL;
}

static void remote_process_instance_init(Object *obj)
{
    RemoteProcess *rp = REMOTE_PROCESS(obj);

    rp->timeout_ms = REMOTE_PROCESS_DEFAULT_TIMEOUT_MS;
    rp->heartbeat_interval_ms = REMOTE_PROCESS_DEFAULT_HEARTBEAT_INTERVAL_MS;
    rp->heartbeat_timeout_ms = REMOTE_PROCESS_DEFAULT_HEARTBEAT_TIMEOUT_MS;
    rp->sandbox = true;
    rp->state = REMOTE_PROCESS_STATE_STARTING;
    rp->pidfd = -1;
    rp->deadline_timer = aio_timer_new(qemu_get_aio_context(),
                                       QEMU_CLOCK_REALTIME, SCALE_MS,
                                       remote_process_deadline, rp);
    rp->heartbeat_timer = aio_timer_new(qemu_get_aio_context(),
                                        QEMU_CLOCK_REALTIME, SCALE_NS,
                                        remote_process_heartbeat, rp);
    QLIST_INIT(&rp->devices);
    QLIST_INIT(&rp->waiters);
}

static void remote_process_finalize(Object *obj)
{
    RemoteProcess *rp = REMOTE_PROCESS(obj);

    /* unparent ran unless the object never completed */
    assert(QLIST_EMPTY(&rp->devices) && QLIST_EMPTY(&rp->waiters));
    remote_process_unparent(obj);
    timer_free(rp->deadline_timer);
    timer_free(rp->heartbeat_timer);
    g_free(rp->failure);
    g_free(rp->kill_reason);
    g_free(rp->monitor_lost);
    g_free(rp->executable);
    qapi_free_strList(rp->args);
    g_free(rp->log);
    g_free(rp->fd_str);
    g_free(rp->socket_path);
    g_free(rp->user);
    qapi_free_strList(rp->allow_paths);
}

#define REMOTE_PROCESS_STR_PROP(field)                                      \
    static char *remote_process_get_##field(Object *obj, Error **errp)      \
    {                                                                       \
        return g_strdup(REMOTE_PROCESS(obj)->field);                        \
    }                                                                       \
    static void remote_process_set_##field(Object *obj, const char *value,  \
                                           Error **errp)                    \
    {                                                                       \
        RemoteProcess *rp = REMOTE_PROCESS(obj);                            \
        g_free(rp->field);                                                  \
        rp->field = g_strdup(value);                                        \
    }

REMOTE_PROCESS_STR_PROP(executable)
REMOTE_PROCESS_STR_PROP(log)
REMOTE_PROCESS_STR_PROP(fd_str)
REMOTE_PROCESS_STR_PROP(socket_path)
REMOTE_PROCESS_STR_PROP(user)

/* A strList property; @opaque is the field's offset in RemoteProcess */
static void remote_process_get_strlist(Object *obj, Visitor *v,
                                       const char *name, void *opaque,
                                       Error **errp)
{
    strList **field = (void *)REMOTE_PROCESS(obj) + GPOINTER_TO_SIZE(opaque);
    strList *list = QAPI_CLONE(strList, *field);

    visit_type_strList(v, name, &list, errp);
    qapi_free_strList(list);
}

static void remote_process_set_strlist(Object *obj, Visitor *v,
                                       const char *name, void *opaque,
                                       Error **errp)
{
    strList **field = (void *)REMOTE_PROCESS(obj) + GPOINTER_TO_SIZE(opaque);
    strList *list = NULL;

    if (!visit_type_strList(v, name, &list, errp)) {
        return;
    }
    qapi_free_strList(*field);
    *field = list;
}

static void remote_process_get_timeout(Object *obj, Visitor *v,
                                       const char *name, void *opaque,
                                       Error **errp)
{
    visit_type_uint32(v, name, &REMOTE_PROCESS(obj)->timeout_ms, errp);
}

static void remote_process_set_timeout(Object *obj, Visitor *v,
                                       const char *name, void *opaque,
                                       Error **errp)
{
    uint32_t value;

    if (visit_type_uint32(v, name, &value, errp)) {
        REMOTE_PROCESS(obj)->timeout_ms = value;
    }
}

static void remote_process_get_heartbeat_interval(Object *obj, Visitor *v,
                                                  const char *name,
                                                  void *opaque, Error **errp)
{
    visit_type_uint32(v, name, &REMOTE_PROCESS(obj)->heartbeat_interval_ms,
                      errp);
}

static void remote_process_set_heartbeat_interval(Object *obj, Visitor *v,
                                                  const char *name,
                                                  void *opaque, Error **errp)
{
    uint32_t value;

    if (visit_type_uint32(v, name, &value, errp)) {
        REMOTE_PROCESS(obj)->heartbeat_interval_ms = value;
    }
}

static void remote_process_get_heartbeat_timeout(Object *obj, Visitor *v,
                                                 const char *name,
                                                 void *opaque, Error **errp)
{
    visit_type_uint32(v, name, &REMOTE_PROCESS(obj)->heartbeat_timeout_ms,
                      errp);
}

static void remote_process_set_heartbeat_timeout(Object *obj, Visitor *v,
                                                 const char *name,
                                                 void *opaque, Error **errp)
{
    uint32_t value;

    if (!visit_type_uint32(v, name, &value, errp)) {
        return;
    }
    if (!value) {
        error_setg(errp, "heartbeat-timeout must be at least 1 ms");
        return;
    }
    REMOTE_PROCESS(obj)->heartbeat_timeout_ms = value;
}

static bool remote_process_get_sandbox(Object *obj, Error **errp)
{
    return REMOTE_PROCESS(obj)->sandbox;
}

static void remote_process_set_sandbox(Object *obj, bool value, Error **errp)
{
    REMOTE_PROCESS(obj)->sandbox = value;
}

static void remote_process_get_pid(Object *obj, Visitor *v, const char *name,
                                   void *opaque, Error **errp)
{
    int64_t pid = REMOTE_PROCESS(obj)->pid;

    visit_type_int(v, name, &pid, errp);
}

static void remote_process_class_init(ObjectClass *oc, void *data)
{
    UserCreatableClass *ucc = USER_CREATABLE_CLASS(oc);
    RemoteProcessClass *rpc = REMOTE_PROCESS_CLASS(oc);

    oc->unparent = remote_process_unparent;
    ucc->complete = remote_process_complete;
    ucc->can_be_deleted = remote_process_can_be_deleted;
    rpc->get_info = remote_process_get_info;
    rpc->wait_started = remote_process_wait_started;
    rpc->run_qmp = remote_process_run_qmp;
    rpc->end = remote_process_end;

    object_class_property_add_str(oc, "executable",
                                  remote_process_get_executable,
                                  remote_process_set_executable);
    object_class_property_set_description(oc, "executable",
        "program to spawn (default: this QEMU binary)");
    object_class_property_add(oc, "args", "strList",
                              remote_process_get_strlist,
                              remote_process_set_strlist, NULL,
                              GSIZE_TO_POINTER(offsetof(RemoteProcess, args)));
    object_class_property_set_description(oc, "args",
        "arguments for the spawned process, one string each");
    object_class_property_add_str(oc, "log", remote_process_get_log,
                                  remote_process_set_log);
    object_class_property_set_description(oc, "log",
        "file for the spawned process's output (default: our stderr)");
    object_class_property_add_str(oc, "fd", remote_process_get_fd_str,
                                  remote_process_set_fd_str);
    object_class_property_set_description(oc, "fd",
        "attach: connected socket to the process's QMP monitor");
    object_class_property_add_str(oc, "socket", remote_process_get_socket_path,
                                  remote_process_set_socket_path);
    object_class_property_set_description(oc, "socket",
        "attach: UNIX socket path of the process's QMP monitor");
    object_class_property_add(oc, "timeout", "uint32",
                              remote_process_get_timeout,
                              remote_process_set_timeout, NULL, NULL);
    object_class_property_set_description(oc, "timeout",
        "ms to wait for startup and for each answer (default 10000)");
    object_class_property_add(oc, "heartbeat-interval", "uint32",
                              remote_process_get_heartbeat_interval,
                              remote_process_set_heartbeat_interval,
                              NULL, NULL);
    object_class_property_set_description(oc, "heartbeat-interval",
        "ms between checks that the process answers; 0: none (default "
        "1000)");
    object_class_property_add(oc, "heartbeat-timeout", "uint32",
                              remote_process_get_heartbeat_timeout,
                              remote_process_set_heartbeat_timeout,
                              NULL, NULL);
    object_class_property_set_description(oc, "heartbeat-timeout",
        "ms an answer to a check may take (default 5000)");
    object_class_property_add_bool(oc, "sandbox", remote_process_get_sandbox,
                                   remote_process_set_sandbox);
    object_class_property_set_description(oc, "sandbox",
        "run the spawned process under seccomp with no_new_privs (default "
        "on)");
    object_class_property_add_str(oc, "user", remote_process_get_user,
                                  remote_process_set_user);
    object_class_property_set_description(oc, "user",
        "user the spawned process becomes once its devices exist");
    object_class_property_add(oc, "allow-paths", "strList",
                              remote_process_get_strlist,
                              remote_process_set_strlist, NULL,
                              GSIZE_TO_POINTER(offsetof(RemoteProcess,
                                                        allow_paths)));
    object_class_property_set_description(oc, "allow-paths",
        "files and directories the sandboxed process may open later");
    object_class_property_add(oc, "pid", "int", remote_process_get_pid,
                              NULL, NULL, NULL);
    object_class_property_set_description(oc, "pid",
        "process id, 0 until known");
}

static const TypeInfo remote_process_info = {
    .name = TYPE_REMOTE_PROCESS,
    .parent = TYPE_OBJECT,
    .instance_size = sizeof(RemoteProcess),
    .instance_init = remote_process_instance_init,
    .instance_finalize = remote_process_finalize,
    .class_size = sizeof(RemoteProcessClass),
    .class_init = remote_process_class_init,
    .interfaces = (InterfaceInfo[]) {
        { TYPE_USER_CREATABLE },
        { },
    },
};

static void remote_process_register_types(void)
{
    type_register_static(&remote_process_info);
}

type_init(remote_process_register_types)
module_obj(TYPE_REMOTE_PROCESS);
