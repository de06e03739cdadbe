/*
 * Migration of a proxied device: the remote device's state travels inside
 * the proxy's vmstate, and the destination's device is checked up front.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/memfd.h"
#include "qemu/bswap.h"
#include "migration/blocker.h"
#include "migration/client-options.h"
#include "migration/misc.h"
#include "migration/vmstate.h"
#include "system/runstate.h"
#include "proxy.h"
#include "trace.h"

static bool proxy_state_read_file(int fd, uint64_t size, uint8_t **data,
                                  Error **errp)
{
    g_autofree uint8_t *buf = NULL;

    if (size > MPQEMU_STATE_MAX) {
        error_setg(errp, "the remote reports a device state of %" PRIu64
                   " bytes, more than %d", size, MPQEMU_STATE_MAX);
        return false;
    }
    buf = g_malloc(size ?: 1);
    if (!mpqemu_file_read(fd, buf, size, errp)) {
        error_prepend(errp, "device state: ");
        return false;
    }
    *data = g_steal_pointer(&buf);
    return true;
}

/*
 * One DEVICE_STATE request: @in (CHECK, LOAD) goes to the remote through
 * a memory file, and what the remote writes there (DESCRIBE, SAVE) comes
 * back in @out.
 */
static bool proxy_state_request(PCIProxyDev *dev, uint32_t op, uint32_t flags,
                                const uint8_t *in, uint32_t in_size,
                                uint8_t **out, uint32_t *out_size,
                                Error **errp)
{
    MPQemuMsg req, reply;
    uint64_t size;
    bool ok = false;
    int fd;

    /* (asked while connecting, too) */
    if (dev->failed) {
        error_setg(errp, "the device is offline");
        return false;
    }
    fd = qemu_memfd_create("mpqemu-device-state", 0, false, 0, 0, errp);
    if (fd < 0) {
        return false;
    }
    if (in && !mpqemu_file_write(fd, in, in_size, errp)) {
        goto out;
    }
    mpqemu_msg_init(&req, MPQEMU_CMD_DEVICE_STATE, 0, 0,
                    sizeof(MPQemuDeviceState));
    req.u.device_state.op = cpu_to_le32(op);
    req.u.device_state.flags = cpu_to_le32(flags);
    req.u.device_state.size = cpu_to_le64(in_size);
    req.hdr.num_fds = 1;
    req.fds[0] = fd;
    if (!proxy_link_call(&dev->link, &req, &reply, errp)) {
        goto out;
    }
    if (out) {
        size = le64_to_cpu(reply.u.device_state.size);
        if (!proxy_state_read_file(fd, size, out, errp)) {
            goto out;
        }
        *out_size = size;
    }
    ok = true;
out:
    close(fd);
    return ok;
}

/*
 * Whether the device can migrate, asked whenever the proxy connects to a
 * device: one that cannot (the NVMe controller, as in-process) blocks
 * migration, as the device itself would in the main QEMU.
 */
bool proxy_migration_connected(PCIProxyDev *dev, Error **errp)
{
    Error *why = NULL;
    g_autofree uint8_t *desc = NULL;
    uint32_t size;

    migrate_del_blocker(&dev->migration_blocker);
    if (!(dev->features & MPQEMU_FEATURE_MIGRATION)) {
        error_setg(&why, "its remote process cannot migrate devices");
    } else {
        proxy_state_request(dev, MPQEMU_STATE_DESCRIBE, 0, NULL, 0, &desc,
                            &size, &why);
    }
    if (!why) {
        return true;
    }
    if (dev->failed) {
        /* the link broke asking: that is the error, not migration */
        error_propagate(errp, why);
        return false;
    }
    error_prepend(&why, "x-pci-proxy-dev %s cannot migrate: ", proxy_name(dev));
    dev->migration_blocker = why;
    return migrate_add_blocker(&dev->migration_blocker, errp) == 0;
}

/*
 * What a device did while the VM migrates is lost: fail the migration now,
 * not when it comes to the device's state. Until then, all the RAM the
 * device could have written would be sent again on every pass, and a
 * migration that cannot send all of RAM within its downtime would go on.
 */
void proxy_migration_abort(const char *name, const char *why)
{
    Error *err = NULL;

    if (migration_is_running()) {
        error_setg(&err, "x-pci-proxy-dev %s cannot migrate: %s", name, why);
        migration_file_set_error(-EIO, err);
    }
}

void proxy_migration_device_failed(PCIProxyDev *dev, const char *reason)
{
    if (migration_is_running()) {
        dev->state_lost = true;
        proxy_migration_abort(proxy_name(dev), reason);
    }
}

/* Source, migration setup: what the device state will consist of */
static int proxy_identity_pre_save(void *opaque)
{
    PCIProxyDev *dev = opaque;
    Error *err = NULL;

    dev->state_lost = false;
    g_clear_pointer(&dev->identity, g_free);
    if (!proxy_state_request(dev, MPQEMU_STATE_DESCRIBE, 0, NULL, 0,
                             &dev->identity, &dev->identity_size, &err)) {
        error_report("x-pci-proxy-dev %s cannot migrate: %s", proxy_name(dev),
                     error_get_pretty(err));
        error_free(err);
        return -EIO;
    }
    return 0;
}

static int proxy_identity_post_save(void *opaque)
{
    PCIProxyDev *dev = opaque;

    g_clear_pointer(&dev->identity, g_free);
    return 0;
}

/*
 * Destination, before any RAM arrives: a device that cannot take the
 * source's state fails the migration now, while the source still runs.
 */
static int proxy_identity_post_load(void *opaque, int version_id)
{
    PCIProxyDev *dev = opaque;
    Error *err = NULL;
    bool ok;

    ok = proxy_state_request(dev, MPQEMU_STATE_CHECK, 0, dev->identity,
                             dev->identity_size, NULL, NULL, &err);
    g_clear_pointer(&dev->identity, g_free);
    if (!ok) {
        error_report("x-pci-proxy-dev %s: the device here cannot take the "
                     "state of the migrating one: %s", proxy_name(dev),
                     error_get_pretty(err));
        error_free(err);
        return -EINVAL;
    }
    return 0;
}

/*
 * Sent at the start of the migration (early_setup), apart from the
 * device's state, which only exists once the VM has stopped.
 */
static const VMStateDescription vmstate_proxy_identity = {
    .name = TYPE_PCI_PROXY_DEV "/identity",
    .version_id = 1,
    .minimum_version_id = 1,
    .early_setup = true,
    .pre_save = proxy_identity_pre_save,
    .post_save = proxy_identity_post_save,
    .post_load = proxy_identity_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(identity_size, PCIProxyDev),
        VMSTATE_VBUFFER_ALLOC_UINT32(identity, PCIProxyDev, 0, NULL,
                                     identity_size),
        VMSTATE_END_OF_LIST()
    },
};

/*
 * Source, VM stopped: the remote device's state. Leaving for another
 * QEMU (not a snapshot), the remote lets go of its disk images, which the
 * destination's remote takes when its VM starts; if the migration fails,
 * the remote takes them back when this VM runs again.
 */
static int proxy_pre_save(void *opaque)
{
    PCIProxyDev *dev = opaque;
    uint32_t flags = runstate_check(RUN_STATE_FINISH_MIGRATE) ?
                     MPQEMU_STATE_RELEASE_DISKS : 0;
    Error *err = NULL;

    g_clear_pointer(&dev->state, g_free);
    if (dev->state_lost || dev->memory.dirty_lost) {
        error_report("x-pci-proxy-dev %s cannot migrate: the device failed "
                     "or could not say what it wrote to guest RAM while the "
                     "VM migrated", proxy_name(dev));
        return -EIO;
    }
    if (!proxy_state_request(dev, MPQEMU_STATE_SAVE, flags, NULL, 0,
                             &dev->state, &dev->state_size, &err)) {
        error_report("x-pci-proxy-dev %s: cannot save the device's state: "
                     "%s", proxy_name(dev), error_get_pretty(err));
        error_free(err);
        return -EIO;
    }
    trace_proxy_state_saved(proxy_name(dev), dev->state_size);
    return 0;
}

static int proxy_post_save(void *opaque)
{
    PCIProxyDev *dev = opaque;

    g_clear_pointer(&dev->state, g_free);
    return 0;
}

/* Destination, VM not running yet: the remote device takes the state */
static int proxy_post_load(void *opaque, int version_id)
{
    PCIProxyDev *dev = opaque;
    Error *err = NULL;
    bool ok;

    ok = proxy_state_request(dev, MPQEMU_STATE_LOAD, 0, dev->state,
                             dev->state_size, NULL, NULL, &err);
    g_clear_pointer(&dev->state, g_free);
    if (!ok) {
        error_report("x-pci-proxy-dev %s: the device cannot take the "
                     "migrated state: %s", proxy_name(dev),
                     error_get_pretty(err));
        error_free(err);
        return -EINVAL;
    }
    trace_proxy_state_loaded(proxy_name(dev), dev->state_size);
    return 0;
}

const VMStateDescription vmstate_proxy = {
    .name = TYPE_PCI_PROXY_DEV,
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = proxy_pre_save,
    .post_save = proxy_post_save,
    .post_load = proxy_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_PCI_DEVICE(parent_obj, PCIProxyDev),
        VMSTATE_BOOL(intx_level, PCIProxyDev),
        VMSTATE_STRUCT(msi, PCIProxyDev, 1, vmstate_proxy_msi, ProxyMsiGuard),
        VMSTATE_UINT32(state_size, PCIProxyDev),
        VMSTATE_VBUFFER_ALLOC_UINT32(state, PCIProxyDev, 0, NULL, state_size),
        VMSTATE_END_OF_LIST()
    },
};

/*
 * The remote maps guest RAM and writes it directly: no userfaultfd of the
 * main QEMU's sees those accesses, so neither postcopy (the remote would
 * read pages that have not arrived) nor a background snapshot (its writes
 * would bypass the write protection) can work with a proxied device.
 */
static int proxy_migration_setup(NotifierWithReturn *notifier,
                                 MigrationEvent *e, Error **errp)
{
    PCIProxyDev *dev = container_of(notifier, PCIProxyDev, migration_setup);

    if (e->type != MIG_EVENT_PRECOPY_SETUP) {
        return 0;
    }
    if (migrate_postcopy_ram()) {
        error_setg(errp, "x-pci-proxy-dev %s does not support postcopy "
                   "migration: its remote process accesses guest RAM "
                   "directly", proxy_name(dev));
        return -ENOTSUP;
    }
    if (migrate_background_snapshot()) {
        error_setg(errp, "x-pci-proxy-dev %s does not support background "
                   "snapshots: its remote process writes guest RAM "
                   "directly", proxy_name(dev));
        return -ENOTSUP;
    }
    return 0;
}

void proxy_migration_init(PCIProxyDev *dev)
{
    migration_add_notifier(&dev->migration_setup, proxy_migration_setup);
    /* a second section of the device's, which qdev has no place for */
    vmstate_register_any(VMSTATE_IF(dev), &vmstate_proxy_identity, dev);
}

void proxy_migration_cleanup(PCIProxyDev *dev)
{
    vmstate_unregister(VMSTATE_IF(dev), &vmstate_proxy_identity, dev);
    migration_remove_notifier(&dev->migration_setup);
    migrate_del_blocker(&dev->migration_blocker);
    g_clear_pointer(&dev->identity, g_free);
    g_clear_pointer(&dev->state, g_free);
}
