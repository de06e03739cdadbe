/*
 * -machine x-remote: hosts PCI devices for proxies in a main QEMU. Each device
 * gets its own DMA address space and INTx line, bound by an x-remote-object.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/units.h"
#include "qemu/module.h"
#include "qom/object_interfaces.h"
#include "hw/pci/pci_bus.h"
#include "hw/pci/pci_device.h"
#include "hw/pci/msi.h"
#include "hw/pci/pcie_host.h"
#include "hw/qdev-core.h"
#include "hw/sysbus.h"
#include "hw/hotplug.h"
#include "qemu/rcu.h"
#include "qapi/visitor.h"
#include "qapi/clone-visitor.h"
#include "qapi/qapi-builtin-visit.h"
#include "exec/address-spaces.h"
#include "system/runstate.h"
#include "system/system.h"
#include "remote.h"
#include "trace.h"

/* Every device has a line of its own: the IRQ number is its devfn */
static int remote_pcihost_map_irq(PCIDevice *pdev, int pin)
{
    return pdev->devfn;
}

static void remote_pcihost_set_irq(void *opaque, int devfn, int level)
{
    RemotePCIHost *host = opaque;
    RemoteSlot *slot = &host->slot[devfn];

    trace_remote_pcihost_set_irq(devfn, level);
    if (slot->owner) {
        remote_object_set_irq(slot->owner, level);
    }
}

/* MSI and MSI-X messages go to the proxy, which delivers them in the guest */
static void remote_pcihost_msi_trigger(PCIDevice *pdev, MSIMessage msg)
{
    RemotePCIHost *host = remote_pcihost_of(pdev);

    trace_remote_pcihost_msi(pdev->devfn, msg.address, msg.data);
    remote_object_send_msi(host->slot[pdev->devfn].owner, msg);
}

bool remote_pcihost_bind(RemotePCIHost *host, PCIDevice *pdev,
                         RemoteObject *owner, Error **errp)
{
    RemoteSlot *slot = &host->slot[pdev->devfn];

    if (slot->owner) {
        error_setg(errp, "the device at %02x.%x is already bound to another "
                   "x-remote-object", PCI_SLOT(pdev->devfn),
                   PCI_FUNC(pdev->devfn));
        return false;
    }
    slot->owner = owner;
    slot->msi_trigger = pdev->msi_trigger;
    pdev->msi_trigger = remote_pcihost_msi_trigger;
    return true;
}

void remote_pcihost_unbind(RemotePCIHost *host, PCIDevice *pdev)
{
    RemoteSlot *slot = &host->slot[pdev->devfn];

    pdev->msi_trigger = slot->msi_trigger;
    slot->owner = NULL;
}

RemotePCIHost *remote_pcihost_of(PCIDevice *pdev)
{
    PCIBus *bus = pci_get_bus(pdev);

    if (!pci_bus_is_root(bus)) {
        return NULL;
    }
    return (RemotePCIHost *)object_dynamic_cast(OBJECT(bus->qbus.parent),
                                                TYPE_REMOTE_PCIHOST);
}

static void remote_pcihost_realize(DeviceState *dev, Error **errp)
{
    RemotePCIHost *host = REMOTE_PCIHOST(dev);
    PCIHostState *phb = PCI_HOST_BRIDGE(dev);

    /*
     * BARs are mapped in the system memory at the addresses the guest gives
     * them; no device DMAs there, each has a space of its own (remote-dma.c).
     */
    phb->bus = pci_root_bus_new(dev, "remote-pci", get_system_memory(),
                                get_system_io(), 0, TYPE_PCIE_BUS);
    pci_setup_iommu(phb->bus, &remote_dma_iommu_ops, host);
    pci_bus_irqs(phb->bus, remote_pcihost_set_irq, host, PCI_DEVFN_MAX);
    pci_bus_map_irqs(phb->bus, remote_pcihost_map_irq);
    /* device_add and device_del work at runtime, as the main QEMU needs */
    qbus_set_hotplug_handler(BUS(phb->bus), OBJECT(dev));
}

#define REMOTE_UNPLUG_RCU_ROUNDS 8

/*
 * Devices come and go at once: there is no guest here to ask. A device
 * that an x-remote-object serves stays until that object is deleted.
 * device_del returns once the device is gone with everything it held (its
 * backend is free again), so that it can be created again at once.
 */
static void remote_pcihost_plug(HotplugHandler *hotplug_dev, DeviceState *dev,
                                Error **errp)
{
}

static void remote_pcihost_unplug_request(HotplugHandler *hotplug_dev,
                                          DeviceState *dev, Error **errp)
{
    RemotePCIHost *host = REMOTE_PCIHOST(hotplug_dev);
    PCIDevice *pdev = PCI_DEVICE(dev);
    RemoteObject *owner = host->slot[pdev->devfn].owner;

    if (owner) {
        error_setg(errp, "device '%s' is served by x-remote-object '%s'; "
                   "delete that first (object-del)", dev->id ?: "",
                   object_get_canonical_path_component(OBJECT(owner)) ?: "");
        return;
    }
    trace_remote_pcihost_unplug(pdev->devfn);
    object_ref(OBJECT(dev));
    object_unparent(OBJECT(dev));
    /*
     * The last other references go with RCU callbacks (old flat views of
     * the address spaces that mapped its BARs), which may queue more.
     */
    for (int round = 0; round < REMOTE_UNPLUG_RCU_ROUNDS &&
                        qatomic_read(&OBJECT(dev)->ref) > 1; round++) {
        drain_call_rcu();
    }
    object_unref(OBJECT(dev));
}

static void remote_pcihost_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    HotplugHandlerClass *hc = HOTPLUG_HANDLER_CLASS(klass);

    dc->realize = remote_pcihost_realize;
    dc->user_creatable = false;
    dc->desc = "PCI host bridge of the x-remote machine";
    hc->plug = remote_pcihost_plug;
    hc->unplug_request = remote_pcihost_unplug_request;
}

/* The command line's backends and devices exist: into the sandbox */
static void remote_machine_done(Notifier *notifier, void *data)
{
    RemoteMachineState *s = container_of(notifier, RemoteMachineState,
                                         machine_done);
    Error *err = NULL;

    if (!remote_sandbox_enter(s->sandbox, s->user, s->allow_paths, &err)) {
        error_reportf_err(err, "x-remote: cannot enter the sandbox: ");
        exit(1);
    }
}

static void remote_machine_init(MachineState *machine)
{
    RemoteMachineState *s = REMOTE_MACHINE(machine);
    DeviceState *host = qdev_new(TYPE_REMOTE_PCIHOST);

    remote_runstate_init();
    s->machine_done.notify = remote_machine_done;
    qemu_add_machine_init_done_notifier(&s->machine_done);

    remote_dma_init_system_memory(OBJECT(machine));
    /* Every MSI is forwarded to a main QEMU that can deliver it */
    msi_nonbroken = true;
    object_property_add_child(OBJECT(machine), "remote-pcihost",
                              OBJECT(host));
    sysbus_realize_and_unref(SYS_BUS_DEVICE(host), &error_fatal);
    s->host = REMOTE_PCIHOST(host);
}

static int remote_object_count_live(Object *obj, void *opaque)
{
    if (object_dynamic_cast(obj, TYPE_REMOTE_OBJECT) &&
        remote_object_has_peer(REMOTE_OBJECT(obj))) {
        (*(int *)opaque)++;
    }
    return 0;
}

/*
 * A proxy went away. With auto-shutdown, the process ends once no device
 * is left that a proxy uses or may still connect to.
 */
void remote_machine_peer_gone(void)
{
    RemoteMachineState *s = REMOTE_MACHINE(qdev_get_machine());
    int live = 0;

    object_child_foreach(object_get_objects_root(), remote_object_count_live,
                         &live);
    if (s->auto_shutdown && !live) {
        qemu_system_shutdown_request(SHUTDOWN_CAUSE_GUEST_SHUTDOWN);
    }
}

static bool remote_machine_get_auto_shutdown(Object *obj, Error **errp)
{
    return REMOTE_MACHINE(obj)->auto_shutdown;
}

static void remote_machine_set_auto_shutdown(Object *obj, bool value,
                                             Error **errp)
{
    REMOTE_MACHINE(obj)->auto_shutdown = value;
}

static bool remote_machine_get_sandbox(Object *obj, Error **errp)
{
    return REMOTE_MACHINE(obj)->sandbox;
}

static void remote_machine_set_sandbox(Object *obj, bool value, Error **errp)
{
    REMOTE_MACHINE(obj)->sandbox = value;
}

static char *remote_machine_get_user(Object *obj, Error **errp)
{
    return g_strdup(REMOTE_MACHINE(obj)->user);
}

static void remote_machine_set_user(Object *obj, const char *value,
                                    Error **errp)
{
    RemoteMachineState *s = REMOTE_MACHINE(obj);

    g_free(s->user);
    s->user = g_strdup(value);
}

static void remote_machine_get_allow_paths(Object *obj, Visitor *v,
                                           const char *name, void *opaque,
                                           Error **errp)
{
    strList *paths = QAPI_CLONE(strList, REMOTE_MACHINE(obj)->allow_paths);

    visit_type_strList(v, name, &paths, errp);
    qapi_free_strList(paths);
}

static void remote_machine_set_allow_paths(Object *obj, Visitor *v,
                                           const char *name, void *opaque,
                                           Error **errp)
{
    RemoteMachineState *s = REMOTE_MACHINE(obj);
    strList *paths = NULL;

    if (!visit_type_strList(v, name, &paths, errp)) {
        return;
    }
    qapi_free_strList(s->allow_paths);
    s->allow_paths = paths;
}

static void remote_machine_get_pid(Object *obj, Visitor *v, const char *name,
                                   void *opaque, Error **errp)
{
    int64_t pid = getpid();

    visit_type_int(v, name, &pid, errp);
}

static void remote_machine_instance_init(Object *obj)
{
    REMOTE_MACHINE(obj)->auto_shutdown = true;
    REMOTE_MACHINE(obj)->sandbox = true;
}

static void remote_machine_instance_finalize(Object *obj)
{
    g_free(REMOTE_MACHINE(obj)->user);
    qapi_free_strList(REMOTE_MACHINE(obj)->allow_paths);
}

static void remote_machine_class_init(ObjectClass *oc, void *data)
{
    MachineClass *mc = MACHINE_CLASS(oc);

    mc->desc = "Hosts PCI devices for x-pci-proxy-dev proxies of a main QEMU";
    mc->init = remote_machine_init;
    mc->default_ram_size = 0;
    mc->max_cpus = 1;
    mc->no_parallel = 1;
    mc->no_floppy = 1;
    mc->no_cdrom = 1;

    object_class_property_add_bool(oc, "auto-shutdown",
                                   remote_machine_get_auto_shutdown,
                                   remote_machine_set_auto_shutdown);
    object_class_property_set_description(oc, "auto-shutdown",
        "Exit once every proxy has disconnected and none can connect again");
    object_class_property_add_bool(oc, "sandbox", remote_machine_get_sandbox,
                                   remote_machine_set_sandbox);
    object_class_property_set_description(oc, "sandbox",
        "Run under seccomp with no_new_privs once the devices are created "
        "(default on; off is for debugging)");
    object_class_property_add_str(oc, "user", remote_machine_get_user,
                                  remote_machine_set_user);
    object_class_property_set_description(oc, "user",
        "User to become once the devices are created (the process must "
        "start as root)");
    object_class_property_add(oc, "allow-paths", "strList",
                              remote_machine_get_allow_paths,
                              remote_machine_set_allow_paths, NULL, NULL);
    object_class_property_set_description(oc, "allow-paths",
        "Files and directories the sandboxed process may open besides "
        "those its block backends opened at startup");
    /* how a main QEMU that attached to us through a socket learns who we are */
    object_class_property_add(oc, "pid", "int", remote_machine_get_pid,
                              NULL, NULL, NULL);
    object_class_property_set_description(oc, "pid",
        "Process id of this remote process");
}

static const TypeInfo remote_types[] = {
    {
        .name = TYPE_REMOTE_MACHINE,
        .parent = TYPE_MACHINE,
        .instance_size = sizeof(RemoteMachineState),
        .instance_init = remote_machine_instance_init,
        .instance_finalize = remote_machine_instance_finalize,
        .class_init = remote_machine_class_init,
    }, {
        .name = TYPE_REMOTE_PCIHOST,
        .parent = TYPE_PCI_HOST_BRIDGE,
        .instance_size = sizeof(RemotePCIHost),
        .class_init = remote_pcihost_class_init,
        .interfaces = (InterfaceInfo[]) {
            { TYPE_HOTPLUG_HANDLER },
            { },
        },
    },
};

DEFINE_TYPES(remote_types)
module_obj(TYPE_REMOTE_MACHINE);
module_obj(TYPE_REMOTE_PCIHOST);
