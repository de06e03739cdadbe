/*
 * HMP commands for remote processes: info remote-processes,
 * remote_process_add and remote_process_del, on top of the QMP ones.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-mpqemu.h"
#include "qobject/qdict.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"

void hmp_info_remote_processes(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;
    RemoteProcessInfoList *list = qmp_query_remote_processes(&err);

    if (hmp_handle_error(mon, err)) {
        return;
    }
    if (!list) {
        monitor_printf(mon, "No remote processes\n");
    }
    for (RemoteProcessInfoList *l = list; l; l = l->next) {
        RemoteProcessInfo *info = l->value;

        monitor_printf(mon, "%s: %s, %s", info->id,
                       info->spawned ? "spawned" : "attached",
                       RemoteProcessState_str(info->state));
        if (info->has_pid) {
            monitor_printf(mon, ", pid %" PRId64, info->pid);
        }
        if (info->has_exit_code) {
            monitor_printf(mon, ", exit status %" PRId64, info->exit_code);
        }
        if (info->has_signal) {
            monitor_printf(mon, ", killed by signal %" PRId64, info->signal);
        }
        monitor_printf(mon, "\n");
        for (RemoteProcessDeviceInfoList *d = info->devices; d; d = d->next) {
            monitor_printf(mon, "  device %s: proxy %s", d->value->devid,
                           d->value->proxy);
            if (!d->value->connected) {
                monitor_printf(mon, " (failed%s%s)",
                               d->value->failure ? ": " : "",
                               d->value->failure ?: "");
            }
            monitor_printf(mon, "\n");
        }
    }
    qapi_free_RemoteProcessInfoList(list);
}

void coroutine_fn hmp_remote_process_add(Monitor *mon, const QDict *qdict)
{
    const char *id = qdict_get_str(qdict, "id");
    const char *args_str = qdict_get_try_str(qdict, "args");
    g_auto(GStrv) words = args_str ? g_strsplit_set(args_str, " \t", -1)
                                   : NULL;
    strList *args = NULL, **tail = &args;
    RemoteProcessInfo *info;
    Error *err = NULL;

    for (char **w = words; w && *w; w++) {
        if (**w) {
            QAPI_LIST_APPEND(tail, g_strdup(*w));
        }
    }
    info = qmp_x_add_remote_process(NULL, !!args, args, NULL, NULL, NULL,
                                    false, 0, false, 0, false, 0, false, false,
                                    NULL, false, NULL, id, &err);
    qapi_free_strList(args);
    if (hmp_handle_error(mon, err)) {
        return;
    }
    monitor_printf(mon, "%s: pid %" PRId64 "\n", info->id, info->pid);
    qapi_free_RemoteProcessInfo(info);
}

void coroutine_fn hmp_remote_process_del(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;

    qmp_x_del_remote_process(qdict_get_str(qdict, "id"), true,
                             qdict_get_try_bool(qdict, "force", false), &err);
    hmp_handle_error(mon, err);
}
