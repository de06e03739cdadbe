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

#define TYPE_REMOTE_ESCAPE_TEST "x-remote-escape-test"
OBJECT_DECLARE_SIMPLE_TYPE(RemoteEscapeTest, REMOTE_ESCAPE_TEST)

struct RemoteEscapeTest {
    PCIDevice parent_obj;

    char *attempt;      /* "execve", "fork", "open" or "dma-write" */
    char *path;         /* open: the file */
    char *devid;        /* dma-write: the device that writes */
    uint64_t address;   /* dma-write: where */
    uint32_t value;     /* dma-write: what */
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

static void remote_escape_open(RemoteEscapeTest *t, Error **errp)
{
    int fd;

    if (!t->path) {
        error_setg(errp, "open needs path=");
        return;
    }
    fd = open(t->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot open %s", t->path);
        return;
    }
    close(fd);
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
