/*
 * QMP commands for remote processes and their proxies (qapi/mpqemu.json).
 * They are part of the QEMU binary and reach hw-proxy.so through classes.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-mpqemu.h"
#include "qapi/qapi-types-qom.h"
#include "qemu/module.h"
#include "qom/object_interfaces.h"
#include "mpqemu/remote-process.h"
#include "mpqemu/proxy-device.h"

/* The class, loading hw-proxy.so first if needed */
static RemoteProcessClass *remote_process_class(Error **errp)
{
    ObjectClass *oc = module_object_class_by_name(TYPE_REMOTE_PROCESS);

    if (!oc) {
        error_setg(errp, "remote processes are not available: the hw-proxy "
                   "module cannot be loaded");
        return NULL;
    }
    return REMOTE_PROCESS_CLASS(oc);
}

static RemoteProcess *remote_process_lookup(const char *id, Error **errp)
{
    Object *obj;

    if (!remote_process_class(errp)) {
        return NULL;
    }
    obj = object_resolve_path_component(object_get_objects_root(), id);
    if (!obj || !object_dynamic_cast(obj, TYPE_REMOTE_PROCESS)) {
        error_setg(errp, "there is no remote process '%s'", id);
        return NULL;
    }
    return REMOTE_PROCESS(obj);
}

RemoteProcessInfo *coroutine_fn
qmp_x_add_remote_process(const char *executable, bool has_args,
                         strList *args, const char *log, const char *fd,
                         const char *socket, bool has_timeout,
                         uint32_t timeout, bool has_heartbeat_interval,
                         uint32_t heartbeat_interval,
                         bool has_heartbeat_timeout,
                         uint32_t heartbeat_timeout, bool has_sandbox,
                         bool sandbox, const char *user,
                         bool has_allow_paths, strList *allow_paths,
                         const char *id, Error **errp)
{
    ObjectOptions options = {
        .qom_type = OBJECT_TYPE_X_REMOTE_PROCESS,
        .id = (char *)id,
        .u.x_remote_process = {
            .executable = (char *)executable,
            .has_args = has_args,
            .args = args,
            .log = (char *)log,
            .fd = (char *)fd,
            .socket = (char *)socket,
            .has_timeout = has_timeout,
            .timeout = timeout,
            .has_heartbeat_interval = has_heartbeat_interval,
            .heartbeat_interval = heartbeat_interval,
            .has_heartbeat_timeout = has_heartbeat_timeout,
            .heartbeat_timeout = heartbeat_timeout,
            .has_sandbox = has_sandbox,
            .sandbox = sandbox,
            .user = (char *)user,
            .has_allow_paths = has_allow_paths,
            .allow_paths = allow_paths,
        },
    };
    ERRP_GUARD();
    RemoteProcessClass *rpc = remote_process_class(errp);
    RemoteProcessInfo *info = NULL;
    RemoteProcess *rp;

    if (!rpc) {
        return NULL;
    }
    if (object_resolve_path_component(object_get_objects_root(), id)) {
        error_setg(errp, "an object with id '%s' already exists", id);
        return NULL;
    }
    user_creatable_add_qapi(&options, errp);
    if (*errp) {
        return NULL;
    }
    rp = remote_process_lookup(id, errp);
    if (!rp) {
        return NULL;
    }
    /* ours while we wait, even if somebody deletes it meanwhile */
    object_ref(OBJECT(rp));
    if (rpc->wait_started(rp, errp)) {
        info = rpc->get_info(rp);
    } else if (OBJECT(rp)->parent) {
        /* leave nothing behind: the process is reaped, the object goes */
        rpc->end(rp, true, NULL);
        object_unparent(OBJECT(rp));
    }
    object_unref(OBJECT(rp));
    return info;
}

static gint remote_process_compare_id(gconstpointer a, gconstpointer b)
{
    return strcmp(object_get_canonical_path_component(OBJECT(a)),
                  object_get_canonical_path_component(OBJECT(b)));
}

static int remote_process_collect(Object *obj, void *opaque)
{
    GSList **list = opaque;

    if (object_dynamic_cast(obj, TYPE_REMOTE_PROCESS)) {
        *list = g_slist_insert_sorted(*list, obj, remote_process_compare_id);
    }
    return 0;
}

RemoteProcessInfoList *qmp_query_remote_processes(Error **errp)
{
    RemoteProcessInfoList *head = NULL, **tail = &head;
    RemoteProcessClass *rpc = remote_process_class(errp);
    g_autoptr(GSList) list = NULL;

    if (!rpc) {
        return NULL;
    }
    object_child_foreach(object_get_objects_root(), remote_process_collect,
                         &list);
    for (GSList *l = list; l; l = l->next) {
        QAPI_LIST_APPEND(tail, rpc->get_info(REMOTE_PROCESS(l->data)));
    }
    return head;
}

void coroutine_fn qmp_x_del_remote_process(const char *id, bool has_force,
                                           bool force, Error **errp)
{
    RemoteProcess *rp = remote_process_lookup(id, errp);
    bool ended;

    if (!rp) {
        return;
    }
    object_ref(OBJECT(rp));
    ended = REMOTE_PROCESS_GET_CLASS(rp)->end(rp, has_force && force, errp);
    if (ended && OBJECT(rp)->parent) {
        object_unparent(OBJECT(rp));
    }
    object_unref(OBJECT(rp));
}

QObject *coroutine_fn qmp_x_remote_qmp(const char *id, const char *command,
                                       QObject *arguments, Error **errp)
{
    RemoteProcess *rp = remote_process_lookup(id, errp);
    QObject *ret;

    if (!rp) {
        return NULL;
    }
    object_ref(OBJECT(rp));
    ret = REMOTE_PROCESS_GET_CLASS(rp)->run_qmp(rp, command, arguments, errp);
    object_unref(OBJECT(rp));
    return ret;
}

void qmp_x_reattach_proxy(const char *device, const char *remote,
                          const char *devid, const char *socket,
                          Error **errp)
{
    Object *peripheral = object_resolve_path("/machine/peripheral", NULL);
    Object *obj = peripheral ? object_resolve_path_at(peripheral, device) :
                  NULL;

    if (!obj || !object_dynamic_cast(obj, TYPE_DEVICE)) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND,
                  "Device '%s' not found", device);
        return;
    }
    /* a proxy exists only once hw-proxy.so is loaded */
    if (!object_dynamic_cast(obj, TYPE_PCI_PROXY_DEV)) {
        error_setg(errp, "device '%s' is of type %s, not x-pci-proxy-dev",
                   device, object_get_typename(obj));
        return;
    }
    PCI_PROXY_DEV_GET_CLASS(obj)->reattach(PCI_PROXY_DEV(obj), remote, devid,
                                           socket, errp);
}
