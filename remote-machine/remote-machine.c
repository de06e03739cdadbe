/*
 * -machine x-remote: hosts PCI devices for proxies in a main QEMU. Each device
 * gets its own DMA address space and INTx line, bound by an x-remote-object.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/units.h"
#include "qemu/module.h"
#include "qom/object_interfaces.h"
#include "hw/pci/pci_bus.h"
#include "hw/pci/pci_device.h"
#include "hw/pci/pcie_host.h"
#include "hw/qdev-core.h"
#include "hw/sysbus.h"
#include "exec/address-spaces.h"
#include "system/runstate.h"
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
    if (slot->irq) {
        slot->irq(slot->irq_opaque, level);
    }
}

/* Lazily create the address space a device's DMA goes through */
static AddressSpace *remote_pcihost_dma_as(PCIBus *bus, void *opaque,
                                           int devfn)
{
    RemotePCIHost *host = opaque;
    RemoteSlot *slot = &host->slot[devfn];

    if (!slot->dma_ready) {
        g_autofree char *name = g_strdup_printf("remote-dma-%02x.%x",
                                                PCI_SLOT(devfn),
                                                PCI_FUNC(devfn));

        memory_region_init(&slot->dma_root, OBJECT(host), name, UINT64_MAX);
        /*
         * Under the guest RAM its proxy sends, a device reaches the BARs of
         * the devices in this process, as it would on the guest's bus (the
         * LSI fetches SCRIPTS from its own RAM BAR this way).
         */
        memory_region_init_alias(&slot->pci_mem_alias, OBJECT(host),
                                 "remote-pci-mem-alias", &host->pci_mem, 0,
                                 UINT64_MAX);
        memory_region_add_subregion_overlap(&slot->dma_root, 0,
                                            &slot->pci_mem_alias, -1);
        address_space_init(&slot->dma_as, &slot->dma_root, name);
        slot->dma_ready = true;
    }
    return &slot->dma_as;
}

static const PCIIOMMUOps remote_pcihost_iommu_ops = {
    .get_address_space = remote_pcihost_dma_as,
};

MemoryRegion *remote_pcihost_dma_root(RemotePCIHost *host, int devfn)
{
    remote_pcihost_dma_as(NULL, host, devfn);
    return &host->slot[devfn].dma_root;
}

bool remote_pcihost_bind_irq(RemotePCIHost *host, int devfn, RemoteIrqFn *fn,
                             void *opaque, Error **errp)
{
    RemoteSlot *slot = &host->slot[devfn];

    if (slot->irq) {
        error_setg(errp, "the device at %02x.%x is already bound to another "
                   "x-remote-object", PCI_SLOT(devfn), PCI_FUNC(devfn));
        return false;
    }
    slot->irq = fn;
    slot->irq_opaque = opaque;
    return true;
}

void remote_pcihost_unbind_irq(RemotePCIHost *host, int devfn)
{
    host->slot[devfn].irq = NULL;
    host->slot[devfn].irq_opaque = NULL;
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

    /* BARs live apart from guest RAM: devices only see it through DMA */
    memory_region_init(&host->pci_mem, OBJECT(host), "remote-pci-mem",
                       UINT64_MAX);
    memory_region_init(&host->pci_io, OBJECT(host), "remote-pci-io", 64 * KiB);
    phb->bus = pci_root_bus_new(dev, "remote-pci", &host->pci_mem,
                                &host->pci_io, 0, TYPE_PCIE_BUS);
    pci_bus_irqs(phb->bus, remote_pcihost_set_irq, host, PCI_DEVFN_MAX);
    pci_bus_map_irqs(phb->bus, remote_pcihost_map_irq);
    pci_setup_iommu(phb->bus, &remote_pcihost_iommu_ops, host);
}

static void remote_pcihost_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);

    dc->realize = remote_pcihost_realize;
    dc->user_creatable = false;
    dc->desc = "PCI host bridge of the x-remote machine";
}

static void remote_machine_init(MachineState *machine)
{
    RemoteMachineState *s = REMOTE_MACHINE(machine);
    DeviceState *host = qdev_new(TYPE_REMOTE_PCIHOST);

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

static void remote_machine_instance_init(Object *obj)
{
    REMOTE_MACHINE(obj)->auto_shutdown = true;
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
}

static const TypeInfo remote_types[] = {
    {
        .name = TYPE_REMOTE_MACHINE,
        .parent = TYPE_MACHINE,
        .instance_size = sizeof(RemoteMachineState),
        .instance_init = remote_machine_instance_init,
        .class_init = remote_machine_class_init,
    }, {
        .name = TYPE_REMOTE_PCIHOST,
        .parent = TYPE_PCI_HOST_BRIDGE,
        .instance_size = sizeof(RemotePCIHost),
        .class_init = remote_pcihost_class_init,
    },
};

DEFINE_TYPES(remote_types)
module_obj(TYPE_REMOTE_MACHINE);
module_obj(TYPE_REMOTE_PCIHOST);
