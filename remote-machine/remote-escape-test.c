/*
 * x-remote-escape-test, a test-only module: a PCI device whose realize makes
 * the remote process try what a compromised device model would (device_add).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/module.h"
#include "hw/pci/pci_device.h"
#include "hw/qdev-core.h"
#include "hw/qdev-properties.h"
#include "system/dma.h"
#include "system/iothread.h"
#include "block/aio-wait.h"
#include "block/thread-pool.h"
#include "qemu/rcu.h"

#define TYPE_REMOTE_ESCAPE_TEST "x-remote-escape-test"
OBJECT_DECLARE_SIMPLE_TYPE(RemoteEscapeTest, REMOTE_ESCAPE_TEST)

struct RemoteEscapeTest {
    PCIDevice parent_obj;

    char *attempt;      /* "execve", "fork", "open" or "dma-write" */
    char *path;         /* open: the file */
    char *thread;       /* open: "main", "rcu", "worker" or an IOThread's id */
    char *devid;        /* dma-write: the device that writes */
    uint64_t address;   /* dma-write: where */
    uint32_t value;     /* dma-write: what */

    /* an open on another thread */
    struct rcu_head rcu;
    bool done;
    Error *err;
};

static void remote_escape_execve(Error **errp)
{
    char *argv[] = { (char *)"/bin/true", NULL };

    execve(argv[0], argv, environ);
    error_setg_errno(errp, errno, "execve failed");
}

static void remote_escape_fork(Error **errp)
{
    pid_t pid = fork();

    if (pid < 0) {
        error_setg_errno(errp, errno, "fork failed");
    } else if (pid == 0) {
        _exit(0);
    } else {
        waitpid(pid, NULL, 0);
    }
}

static void remote_escape_try_open(RemoteEscapeTest *t)
{
    int fd = open(t->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        error_setg_errno(&t->err, errno, "cannot open %s from thread %d",
                         t->path, qemu_get_thread_id());
        return;
    }
    close(fd);
}

static void remote_escape_open_rcu(struct rcu_head *head)
{
    remote_escape_try_open(container_of(head, RemoteEscapeTest, rcu));
}

static void remote_escape_open_bh(void *opaque)
{
    remote_escape_try_open(opaque);
}

static int remote_escape_open_worker(void *opaque)
{
    remote_escape_try_open(opaque);
    return 0;
}

static void remote_escape_worker_done(void *opaque, int ret)
{
    RemoteEscapeTest *t = opaque;

    t->done = true;
}

/* An IOThread of the command line or of QEMU itself (mon_iothread) */
static IOThread *remote_escape_iothread(const char *id)
{
    Object *obj = object_resolve_path_component(object_get_objects_root(),
                                                id) ?:
                  object_resolve_path_component(object_get_internal_root(),
                                                id);

    return obj ? (IOThread *)object_dynamic_cast(obj, TYPE_IOTHREAD) : NULL;
}

static void remote_escape_open(RemoteEscapeTest *t, Error **errp)
{
    IOThread *iothread;

    if (!t->path) {
        error_setg(errp, "open needs path=");
        return;
    }
    if (!t->thread || !strcmp(t->thread, "main")) {
        remote_escape_try_open(t);
    } else if (!strcmp(t->thread, "rcu")) {
        call_rcu1(&t->rcu, remote_escape_open_rcu);
        drain_call_rcu();
    } else if (!strcmp(t->thread, "worker")) {
        t->done = false;
        thread_pool_submit_aio(remote_escape_open_worker, t,
                               remote_escape_worker_done, t);
        AIO_WAIT_WHILE(NULL, !t->done);
    } else if ((iothread = remote_escape_iothread(t->thread))) {
        aio_wait_bh_oneshot(iothread_get_aio_context(iothread),
                            remote_escape_open_bh, t);
    } else {
        error_setg(errp, "thread must be main, rcu, worker or an IOThread's "
                   "id");
        return;
    }
    error_propagate(errp, t->err);
    t->err = NULL;
}

static void remote_escape_dma_write(RemoteEscapeTest *t, Error **errp)
{
    DeviceState *dev = t->devid ? qdev_find_recursive(sysbus_get_default(),
                                                      t->devid) : NULL;
    PCIDevice *pdev = dev ? (PCIDevice *)object_dynamic_cast(OBJECT(dev),
                                                             TYPE_PCI_DEVICE)
                          : NULL;
    uint32_t value = cpu_to_le32(t->value);

    if (!pdev) {
        error_setg(errp, "dma-write needs devid= of a PCI device");
        return;
    }
    if (pci_dma_write(pdev, t->address, &value, sizeof(value)) != MEMTX_OK) {
        error_setg(errp, "DMA write to 0x%" PRIx64 " refused", t->address);
    }
}

static void remote_escape_realize(PCIDevice *pdev, Error **errp)
{
    RemoteEscapeTest *t = REMOTE_ESCAPE_TEST(pdev);

    if (!g_strcmp0(t->attempt, "execve")) {
        remote_escape_execve(errp);
    } else if (!g_strcmp0(t->attempt, "fork")) {
        remote_escape_fork(errp);
    } else if (!g_strcmp0(t->attempt, "open")) {
        remote_escape_open(t, errp);
    } else if (!g_strcmp0(t->attempt, "dma-write")) {
        remote_escape_dma_write(t, errp);
    } else {
        error_setg(errp, "attempt must be execve, fork, open or dma-write");
    }
}

static const Property remote_escape_properties[] = {
    DEFINE_PROP_STRING("attempt", RemoteEscapeTest, attempt),
    DEFINE_PROP_STRING("path", RemoteEscapeTest, path),
    DEFINE_PROP_STRING("thread", RemoteEscapeTest, thread),
    DEFINE_PROP_STRING("devid", RemoteEscapeTest, devid),
    DEFINE_PROP_UINT64("address", RemoteEscapeTest, address, 0),
    DEFINE_PROP_UINT32("value", RemoteEscapeTest, value, 0),
};

static void remote_escape_class_init(ObjectClass *oc, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(oc);
    PCIDeviceClass *pc = PCI_DEVICE_CLASS(oc);

    pc->realize = remote_escape_realize;
    pc->vendor_id = PCI_VENDOR_ID_QEMU;
    pc->device_id = 0x10fe;
    pc->class_id = PCI_CLASS_OTHERS;
    dc->desc = "test only: makes the remote process attempt an escape";
    device_class_set_props(dc, remote_escape_properties);
}

static const TypeInfo remote_escape_info = {
    .name = TYPE_REMOTE_ESCAPE_TEST,
    .parent = TYPE_PCI_DEVICE,
    .instance_size = sizeof(RemoteEscapeTest),
    .class_init = remote_escape_class_init,
    .interfaces = (InterfaceInfo[]) {
        { INTERFACE_CONVENTIONAL_PCI_DEVICE },
        { }
    },
};

static void remote_escape_register_types(void)
{
    type_register_static(&remote_escape_info);
}

type_init(remote_escape_register_types);
module_obj(TYPE_REMOTE_ESCAPE_TEST);
