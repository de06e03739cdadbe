/*
 * The state of a remote device for migration: the vmstate of the PCI device
 * and of every device below it, written to and read from the proxy's file.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "hw/qdev-core.h"
#include "hw/pci/pci_device.h"
#include "io/channel-buffer.h"
#include "migration/vmstate.h"
#include "migration/qemu-file.h"
#include "system/runstate.h"
#include "remote.h"
#include "trace.h"

/* "MPQS": the start of a description, and the end of a state */
#define REMOTE_STATE_MAGIC      0x4d505153U
#define REMOTE_STATE_VERSION    1
#define REMOTE_STATE_MAX_PARTS  256

/* One vmstate of the device or of a device below it */
typedef struct RemoteStatePart {
    char *key;          /* the device's place below the PCI device, and vmsd */
    char *type;         /* its QOM type */
    uint32_t version;   /* the vmsd's version in the state */
    DeviceState *dev;   /* ours: the device that saves or loads it */
} RemoteStatePart;

static void remote_state_part_clear(gpointer p)
{
    RemoteStatePart *part = p;

    g_free(part->key);
    g_free(part->type);
}

typedef struct RemoteStateWalk {
    const char *top_path;   /* the PCI device's qdev path */
    GArray *parts;
    Error *err;
} RemoteStateWalk;

/*
 * A device's key names its place relative to the PCI device, which sits at
 * a different slot of each remote machine: "" for the PCI device itself,
 * "/0:0:0" for a SCSI disk at channel 0, target 0, LUN 0.
 */
static int remote_state_collect(DeviceState *dev, void *opaque)
{
    RemoteStateWalk *walk = opaque;
    const VMStateDescription *vmsd = DEVICE_GET_CLASS(dev)->vmsd;
    g_autofree char *path = qdev_get_dev_path(dev);
    const char *place;
    RemoteStatePart part;

    if (!vmsd) {
        return 0;   /* nothing to migrate: the device is configuration only */
    }
    if (vmsd->unmigratable) {
        error_setg(&walk->err, "device %s (%s) does not support migration",
                   dev->id ?: object_get_canonical_path_component(OBJECT(dev)),
                   object_get_typename(OBJECT(dev)));
        return -1;
    }
    if (walk->parts->len >= REMOTE_STATE_MAX_PARTS) {
        error_setg(&walk->err, "more than %d devices to migrate",
                   REMOTE_STATE_MAX_PARTS);
        return -1;
    }
    place = path ?: object_get_typename(OBJECT(dev));
    if (path && walk->top_path && g_str_has_prefix(path, walk->top_path)) {
        place = path + strlen(walk->top_path);
    }
    part = (RemoteStatePart) {
        .key = g_strdup_printf("%s/%s", place, vmsd->name),
        .type = g_strdup(object_get_typename(OBJECT(dev))),
        .version = vmsd->version_id,
        .dev = dev,
    };
    if (strlen(part.key) > 255 || strlen(part.type) > 255) {
        error_setg(&walk->err, "device %s has a path too long to migrate",
                   part.key);
        remote_state_part_clear(&part);
        return -1;
    }
    g_array_append_val(walk->parts, part);
    return 0;
}

static GArray *remote_state_new_parts(void)
{
    GArray *parts = g_array_new(false, true, sizeof(RemoteStatePart));

    g_array_set_clear_func(parts, remote_state_part_clear);
    return parts;
}

/* What the state of @pdev consists of, or NULL if it cannot migrate */
static GArray *remote_state_parts(PCIDevice *pdev, Error **errp)
{
    g_autofree char *top_path = qdev_get_dev_path(DEVICE(pdev));
    RemoteStateWalk walk = {
        .top_path = top_path,
        .parts = remote_state_new_parts(),
    };

    qdev_walk_children(DEVICE(pdev), remote_state_collect, NULL, NULL, NULL,
                       &walk);
    if (walk.err) {
        error_propagate(errp, walk.err);
        g_array_free(walk.parts, true);
        return NULL;
    }
    return walk.parts;
}

static void remote_state_put_description(QEMUFile *f, PCIDevice *pdev,
                                         GArray *parts)
{
    qemu_put_be32(f, REMOTE_STATE_MAGIC);
    qemu_put_be32(f, REMOTE_STATE_VERSION);
    qemu_put_counted_string(f, object_get_typename(OBJECT(pdev)));
    qemu_put_be32(f, parts->len);
    for (guint i = 0; i < parts->len; i++) {
        RemoteStatePart *part = &g_array_index(parts, RemoteStatePart, i);

        qemu_put_counted_string(f, part->key);
        qemu_put_counted_string(f, part->type);
        qemu_put_be32(f, part->version);
    }
}

/* The parts of a state another remote described, and its PCI device type */
static GArray *remote_state_get_description(QEMUFile *f, char *top_type,
                                            Error **errp)
{
    g_autoptr(GArray) parts = remote_state_new_parts();
    uint32_t magic = qemu_get_be32(f);
    uint32_t version = qemu_get_be32(f);
    uint32_t nr;

    if (magic != REMOTE_STATE_MAGIC || version != REMOTE_STATE_VERSION) {
        error_setg(errp, "not an mpqemu device state (version %d)",
                   REMOTE_STATE_VERSION);
        return NULL;
    }
    if (!qemu_get_counted_string(f, top_type)) {
        error_setg(errp, "the state's description is cut short");
        return NULL;
    }
    nr = qemu_get_be32(f);
    if (nr > REMOTE_STATE_MAX_PARTS) {
        error_setg(errp, "the state has %u parts, at most %d", nr,
                   REMOTE_STATE_MAX_PARTS);
        return NULL;
    }
    for (uint32_t i = 0; i < nr; i++) {
        char key[256], type[256];
        RemoteStatePart part;

        if (!qemu_get_counted_string(f, key) ||
            !qemu_get_counted_string(f, type)) {
            error_setg(errp, "the state's description is cut short");
            return NULL;
        }
        part = (RemoteStatePart) {
            .key = g_strdup(key),
            .type = g_strdup(type),
            .version = qemu_get_be32(f),
        };
        g_array_append_val(parts, part);
    }
    if (qemu_file_get_error(f)) {
        error_setg(errp, "the state's description is cut short");
        return NULL;
    }
    return g_steal_pointer(&parts);
}

/*
 * Pair each part of a state described by another remote with the device
 * of ours that takes it: the same devices, at the same places, each at a
 * vmstate version ours can load. Each of @theirs gets its device.
 */
static bool remote_state_match(const char *their_type, GArray *theirs,
                               PCIDevice *pdev, GArray *ours, Error **errp)
{
    const char *our_type = object_get_typename(OBJECT(pdev));

    if (strcmp(their_type, our_type)) {
        error_setg(errp, "the state is of a %s, this device is a %s",
                   their_type, our_type);
        return false;
    }
    if (theirs->len != ours->len) {
        error_setg(errp, "the state of the %s is of %u devices, this one has "
                   "%u to migrate", our_type, theirs->len, ours->len);
        return false;
    }
    for (guint i = 0; i < theirs->len; i++) {
        RemoteStatePart *t = &g_array_index(theirs, RemoteStatePart, i);
        RemoteStatePart *o = NULL;
        const VMStateDescription *vmsd;

        for (guint j = 0; j < ours->len; j++) {
            if (!strcmp(g_array_index(ours, RemoteStatePart, j).key, t->key)) {
                o = &g_array_index(ours, RemoteStatePart, j);
                break;
            }
        }
        if (!o) {
            error_setg(errp, "the state has a %s (%s), this %s has no device "
                       "there", t->type, t->key, our_type);
            return false;
        }
        if (strcmp(o->type, t->type)) {
            error_setg(errp, "the state of %s is of a %s, this device is a "
                       "%s", t->key, t->type, o->type);
            return false;
        }
        vmsd = DEVICE_GET_CLASS(o->dev)->vmsd;
        if (t->version > vmsd->version_id ||
            t->version < vmsd->minimum_version_id) {
            error_setg(errp, "the state of %s (%s) has version %u, this one "
                       "loads versions %d to %d", t->key, t->type, t->version,
                       vmsd->minimum_version_id, vmsd->version_id);
            return false;
        }
        t->dev = o->dev;
    }
    return true;
}

/* The proxy's file, whole, after checking it is what it claims */
static uint8_t *remote_state_read_file(int fd, uint64_t size, Error **errp)
{
    g_autofree uint8_t *buf = NULL;

    if (size > MPQEMU_STATE_MAX) {
        error_setg(errp, "a device state of %" PRIu64 " bytes is larger than "
                   "%d", size, MPQEMU_STATE_MAX);
        return NULL;
    }
    buf = g_malloc(size ?: 1);
    if (!mpqemu_file_read(fd, buf, size, errp)) {
        error_prepend(errp, "device state: ");
        return NULL;
    }
    return g_steal_pointer(&buf);
}

static bool remote_state_write_file(int fd, QIOChannelBuffer *bioc,
                                    uint64_t *size, Error **errp)
{
    if (bioc->usage > MPQEMU_STATE_MAX) {
        error_setg(errp, "the device state has %zu bytes, more than the "
                   "protocol's %d", bioc->usage, MPQEMU_STATE_MAX);
        return false;
    }
    if (!mpqemu_file_write(fd, bioc->data, bioc->usage, errp)) {
        error_prepend(errp, "device state: ");
        return false;
    }
    *size = bioc->usage;
    return true;
}

/* An input QEMUFile over @size bytes of @buf, which it takes */
static QEMUFile *remote_state_input(uint8_t *buf, uint64_t size)
{
    QIOChannelBuffer *bioc = qio_channel_buffer_new(0);
    QEMUFile *f;

    g_free(bioc->data);
    bioc->data = buf;
    bioc->capacity = bioc->usage = size;
    f = qemu_file_new_input(QIO_CHANNEL(bioc));
    object_unref(OBJECT(bioc));
    return f;
}

/* DESCRIBE, or SAVE with @save */
static bool remote_state_write(PCIDevice *pdev, bool save, uint32_t flags,
                               int fd, uint64_t *size, Error **errp)
{
    g_autoptr(GArray) parts = remote_state_parts(pdev, errp);
    QIOChannelBuffer *bioc;
    QEMUFile *f;
    bool ok = true;

    if (!parts) {
        return false;
    }
    if (save && runstate_is_running()) {
        error_setg(errp, "the device runs: its state is saved only while "
                   "the VM is stopped");
        return false;
    }
    bioc = qio_channel_buffer_new(4096);
    f = qemu_file_new_output(QIO_CHANNEL(bioc));
    remote_state_put_description(f, pdev, parts);
    for (guint i = 0; save && i < parts->len; i++) {
        RemoteStatePart *part = &g_array_index(parts, RemoteStatePart, i);
        int ret = vmstate_save_state_with_err(f, DEVICE_GET_CLASS(part->dev)->vmsd,
                                              part->dev, NULL, errp);

        if (ret < 0) {
            error_prepend(errp, "saving the state of %s (%s): ", part->key,
                          part->type);
            ok = false;
            break;
        }
    }
    if (ok && save) {
        qemu_put_be32(f, REMOTE_STATE_MAGIC);
    }
    if (qemu_fflush(f) < 0 && ok) {
        error_setg(errp, "cannot collect the device state");
        ok = false;
    }
    ok = ok && remote_state_write_file(fd, bioc, size, errp);
    qemu_fclose(f);
    object_unref(OBJECT(bioc));
    if (!ok || !save) {
        return ok;
    }
    trace_remote_state_saved(pdev->name, parts->len, *size);
    /* the destination takes the images over: as a migrating QEMU does */
    return !(flags & MPQEMU_STATE_RELEASE_DISKS) ||
           remote_disks_release(pdev, errp);
}

/*
 * After loading, the INTx level the device had is in its config state but
 * not on the bus: raise it anew, so that lowering it later balances.
 */
static void remote_state_restore_intx(PCIDevice *pdev)
{
    bool asserted = pdev->irq_state != 0;

    pdev->irq_state = 0;
    if (asserted) {
        pci_set_irq(pdev, 1);
    }
}

/* CHECK, or LOAD with @load */
static bool remote_state_read(PCIDevice *pdev, bool load, int fd,
                              uint64_t size, Error **errp)
{
    g_autoptr(GArray) ours = remote_state_parts(pdev, errp);
    g_autoptr(GArray) theirs = NULL;
    char their_type[256];
    uint8_t *buf;
    QEMUFile *f;
    bool ok = false;

    if (!ours) {
        return false;
    }
    if (load && runstate_is_running()) {
        error_setg(errp, "the device runs: a state is loaded only while the "
                   "VM is stopped");
        return false;
    }
    buf = remote_state_read_file(fd, size, errp);
    if (!buf) {
        return false;
    }
    f = remote_state_input(buf, size);
    theirs = remote_state_get_description(f, their_type, errp);
    if (!theirs ||
        !remote_state_match(their_type, theirs, pdev, ours, errp)) {
        goto out;
    }
    if (!load) {
        ok = true;
        goto out;
    }
    pci_device_deassert_intx(pdev);
    for (guint i = 0; i < theirs->len; i++) {
        RemoteStatePart *part = &g_array_index(theirs, RemoteStatePart, i);
        int ret = vmstate_load_state(f, DEVICE_GET_CLASS(part->dev)->vmsd,
                                     part->dev, part->version);

        if (ret < 0) {
            error_setg(errp, "loading the state of %s (%s) failed: %s",
                       part->key, part->type, strerror(-ret));
            goto out;
        }
    }
    if (qemu_get_be32(f) != REMOTE_STATE_MAGIC || qemu_file_get_error(f)) {
        error_setg(errp, "the device state does not end where it should");
        goto out;
    }
    remote_state_restore_intx(pdev);
    trace_remote_state_loaded(pdev->name, theirs->len, size);
    ok = true;
out:
    qemu_fclose(f);
    return ok;
}

void remote_state_handle(PCIDevice *pdev, MPQemuMsg *req, MPQemuMsg *reply)
{
    MPQemuDeviceState *ds = &req->u.device_state;
    uint32_t op = le32_to_cpu(ds->op);
    uint32_t flags = le32_to_cpu(ds->flags);
    uint64_t size = le64_to_cpu(ds->size);
    int fd = req->fds[0];
    Error *err = NULL;
    uint64_t written = 0;
    bool ok;

    if (flags & ~MPQEMU_STATE_FLAGS_ALL ||
        (flags && op != MPQEMU_STATE_SAVE)) {
        mpqemu_msg_init_error(reply, req, -EINVAL, "DEVICE_STATE op %u has "
                              "flags 0x%x it does not take", op, flags);
        return;
    }
    switch (op) {
    case MPQEMU_STATE_DESCRIBE:
    case MPQEMU_STATE_SAVE:
        ok = remote_state_write(pdev, op == MPQEMU_STATE_SAVE, flags, fd,
                                &written, &err);
        break;
    case MPQEMU_STATE_CHECK:
    case MPQEMU_STATE_LOAD:
        ok = remote_state_read(pdev, op == MPQEMU_STATE_LOAD, fd, size, &err);
        break;
    default:
        mpqemu_msg_init_error(reply, req, -EINVAL, "unknown DEVICE_STATE op "
                              "%u", op);
        return;
    }
    if (!ok) {
        mpqemu_msg_init_error(reply, req, -EINVAL, "%s",
                              error_get_pretty(err));
        error_free(err);
        return;
    }
    mpqemu_msg_init_reply(reply, req, sizeof(MPQemuDeviceState));
    reply->u.device_state.op = cpu_to_le32(op);
    reply->u.device_state.size = cpu_to_le64(written);
}
