/*
 * A QMP client for the monitor of a remote process: how the main QEMU runs
 * commands there (its own and x-remote-qmp's) and hears its events.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_PROXY_REMOTE_MONITOR_H
#define HW_PROXY_REMOTE_MONITOR_H

#include "qemu/coroutine.h"
#include "qobject/qdict.h"

typedef struct RemoteMonitor RemoteMonitor;

/* The monitor negotiated capabilities: commands may be sent */
typedef void RemoteMonitorReadyFn(void *opaque);
/* The connection ended or the peer broke the protocol; @reason says how */
typedef void RemoteMonitorClosedFn(void *opaque, const char *reason);

/*
 * Takes over @fd, a connected UNIX stream socket with a QMP monitor at the
 * other end, and waits (in the main loop) for its greeting. @name is used
 * in error messages; @timeout_ms bounds every wait for an answer.
 */
RemoteMonitor *remote_monitor_new(int fd, const char *name,
                                  uint32_t timeout_ms,
                                  RemoteMonitorReadyFn *ready,
                                  RemoteMonitorClosedFn *closed,
                                  void *opaque);
/* Closes the connection; commands still waiting fail */
void remote_monitor_free(RemoteMonitor *mon);

/* Its owner goes: nobody is told of the handshake or the end any more */
void remote_monitor_disown(RemoteMonitor *mon);

bool remote_monitor_is_ready(RemoteMonitor *mon);

/* When the remote last sent anything, in QEMU_CLOCK_REALTIME ns (or 0) */
int64_t remote_monitor_last_heard(RemoteMonitor *mon);

/*
 * Runs @command with @args (may be NULL; not consumed) and returns what it
 * returned (a new reference), or NULL with @errp set. If @fd >= 0, it is
 * sent along with the command (for getfd). The _sync variant blocks the
 * calling thread, for at most the timeout; the coroutine variant yields.
 * Both first wait for the greeting if it has not come yet.
 */
QObject *remote_monitor_call_sync(RemoteMonitor *mon, const char *command,
                                  QDict *args, int fd, Error **errp);
QObject *coroutine_fn remote_monitor_call_co(RemoteMonitor *mon,
                                             const char *command,
                                             QDict *args, Error **errp);
/* Sends @command without waiting; a failure is reported, if asked to */
void remote_monitor_send(RemoteMonitor *mon, const char *command,
                         QDict *args, bool report_failure);

#endif
