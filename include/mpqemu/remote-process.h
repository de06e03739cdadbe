/*
 * x-remote-process: a remote QEMU process that the main QEMU spawned or
 * attached to. What the core QMP/HMP commands see of hw-proxy.so's object.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef MPQEMU_REMOTE_PROCESS_H
#define MPQEMU_REMOTE_PROCESS_H

#include "qom/object.h"
#include "qemu/coroutine.h"
#include "qapi/qapi-types-mpqemu.h"

#define TYPE_REMOTE_PROCESS "x-remote-process"
OBJECT_DECLARE_TYPE(RemoteProcess, RemoteProcessClass, REMOTE_PROCESS)

/*
 * The commands live in the QEMU binary and the object in a module, so the
 * commands reach the object's behaviour through its class.
 */
struct RemoteProcessClass {
    ObjectClass parent_class;

    RemoteProcessInfo *(*get_info)(RemoteProcess *rp);
    /* Until the process answers, or fails to start */
    bool coroutine_fn (*wait_started)(RemoteProcess *rp, Error **errp);
    /* Runs @command with @arguments (a dict, or NULL) in the process */
    QObject *coroutine_fn (*run_qmp)(RemoteProcess *rp, const char *command,
                                     QObject *arguments, Error **errp);
    /* Ends the process (see x-del-remote-process), then returns */
    bool coroutine_fn (*end)(RemoteProcess *rp, bool force, Error **errp);
};

#endif
