/*
 * What a device in the remote reaches by DMA: the guest RAM of its own VM,
 * as its proxy shared it, and its own BARs; nothing of other devices' VMs.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "hw/pci/pci_bus.h"
#include "hw/pci/pci_device.h"
#include "hw/virtio/virtio-pci.h"
#include "exec/address-spaces.h"
#include "exec/memory.h"
#include "remote.h"
#include "trace.h"

/* Under the guest RAM, as in-process: BARs do not hide RAM */
#define REMOTE_DMA_BAR_PRIORITY 1

struct RemoteDMA {
    int devfn;
    MemoryRegion root;
    MemoryRegion refused;           /* under everything else */
    MemoryRegion *ram;              /* the serving object's guest RAM */
    MemoryRegion *bar[PCI_NUM_REGIONS];     /* aliases, where the BAR is */
    pcibus_t bar_addr[PCI_NUM_REGIONS];
    AddressSpace as;
};

/*
 * DMA to an address that is neither its VM's shared RAM nor its BAR (or,
 * without @opaque, through the system memory, which holds no guest RAM)
 */
static MemTxResult remote_dma_refused_read(void *opaque, hwaddr addr,
                                           uint64_t *data, unsigned size,
                                           MemTxAttrs attrs)
{
    RemoteDMA *dma = opaque;

    trace_remote_dma_refused(dma ? dma->devfn : -1, 0, addr, size);
    *data = UINT64_MAX;
    return MEMTX_DECODE_ERROR;
}

static MemTxResult remote_dma_refused_write(void *opaque, hwaddr addr,
                                            uint64_t data, unsigned size,
                                            MemTxAttrs attrs)
{
    RemoteDMA *dma = opaque;

    trace_remote_dma_refused(dma ? dma->devfn : -1, 1, addr, size);
    return MEMTX_DECODE_ERROR;
}

static const MemoryRegionOps remote_dma_refused_ops = {
    .read_with_attrs = remote_dma_refused_read,
    .write_with_attrs = remote_dma_refused_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
        .unaligned = true,
    },
};

/* Under everything in the system memory, for devices that DMA there */
void remote_dma_init_system_memory(Object *owner)
{
    MemoryRegion *refused = g_new0(MemoryRegion, 1);

    memory_region_init_io(refused, owner, &remote_dma_refused_ops, NULL,
                          "remote-dma-refused", UINT64_MAX);
    memory_region_add_subregion_overlap(get_system_memory(), 0, refused,
                                        INT_MIN);
}

/*
 * The PCI core asks once per devfn, as a device there is realized: the
 * space lives as long as the host, whatever device comes and goes there.
 */
static AddressSpace *remote_dma_get_address_space(PCIBus *bus, void *opaque,
                                                  int devfn)
{
    RemotePCIHost *host = opaque;
    RemoteDMA *dma = host->slot[devfn].dma;
    g_autofree char *name = NULL;

    if (dma) {
        return &dma->as;
    }
    dma = g_new0(RemoteDMA, 1);
    dma->devfn = devfn;
    name = g_strdup_printf("remote-dma-%02x.%x", PCI_SLOT(devfn),
                           PCI_FUNC(devfn));
    memory_region_init(&dma->root, OBJECT(host), name, UINT64_MAX);
    memory_region_init_io(&dma->refused, OBJECT(host), &remote_dma_refused_ops,
                          dma, "remote-dma-refused", UINT64_MAX);
    memory_region_add_subregion_overlap(&dma->root, 0, &dma->refused,
                                        INT_MIN);
    for (int i = 0; i < PCI_NUM_REGIONS; i++) {
        dma->bar_addr[i] = PCI_BAR_UNMAPPED;
    }
    address_space_init(&dma->as, &dma->root, name);
    host->slot[devfn].dma = dma;
    return &dma->as;
}

const PCIIOMMUOps remote_dma_iommu_ops = {
    .get_address_space = remote_dma_get_address_space,
};

static RemoteDMA *remote_dma_of(RemotePCIHost *host, PCIDevice *pdev)
{
    RemoteDMA *dma = host->slot[pdev->devfn].dma;

    assert(dma);
    return dma;
}

static void remote_dma_unmap_bar(RemoteDMA *dma, int i)
{
    if (!dma->bar[i]) {
        return;
    }
    memory_region_del_subregion(&dma->root, dma->bar[i]);
    /* flat views refer to the BAR itself, never to the alias */
    object_unparent(OBJECT(dma->bar[i]));
    g_free(dma->bar[i]);
    dma->bar[i] = NULL;
    dma->bar_addr[i] = PCI_BAR_UNMAPPED;
}

/*
 * Follow the device's memory BARs to where the guest put them (the LSI
 * fetches its SCRIPTS from its own RAM BAR by DMA). Called after anything
 * that may move them: a config write, a reset, a loaded state.
 */
void remote_dma_sync_bars(RemotePCIHost *host, PCIDevice *pdev)
{
    RemoteDMA *dma = remote_dma_of(host, pdev);

    memory_region_transaction_begin();
    for (int i = 0; i < PCI_NUM_REGIONS; i++) {
        PCIIORegion *r = &pdev->io_regions[i];
        pcibus_t addr = PCI_BAR_UNMAPPED;
        g_autofree char *name = NULL;

        if (r->size && r->memory && !(r->type & PCI_BASE_ADDRESS_SPACE_IO)) {
            addr = r->addr;
        }
        if (addr == dma->bar_addr[i] &&
            (!dma->bar[i] || dma->bar[i]->alias == r->memory)) {
            continue;
        }
        remote_dma_unmap_bar(dma, i);
        if (addr == PCI_BAR_UNMAPPED) {
            continue;
        }
        name = g_strdup_printf("remote-dma-%02x.%x-bar%d", PCI_SLOT(dma->devfn),
                               PCI_FUNC(dma->devfn), i);
        dma->bar[i] = g_new0(MemoryRegion, 1);
        memory_region_init_alias(dma->bar[i], OBJECT(host), name, r->memory, 0,
                                 memory_region_size(r->memory));
        memory_region_add_subregion_overlap(&dma->root, addr, dma->bar[i],
                                            REMOTE_DMA_BAR_PRIORITY);
        dma->bar_addr[i] = addr;
        trace_remote_dma_bar(dma->devfn, i, addr);
    }
    memory_region_transaction_commit();
}

/*
 * A virtio device without iommu_platform DMAs through the system memory,
 * not through its PCI function's space: point it at that space, which
 * holds what it needs, as it would in-process, and nothing else.
 */
static void remote_dma_set_virtio_space(PCIDevice *pdev, AddressSpace *as)
{
    VirtIOPCIProxy *proxy =
        (VirtIOPCIProxy *)object_dynamic_cast(OBJECT(pdev), TYPE_VIRTIO_PCI);
    VirtIODevice *vdev = proxy ? virtio_bus_get_device(&proxy->bus) : NULL;

    if (vdev && !virtio_host_has_feature(vdev, VIRTIO_F_IOMMU_PLATFORM)) {
        vdev->dma_as = as;
    }
}

/* An x-remote-object serves the device: DMA reaches the RAM it was given */
void remote_dma_attach(RemotePCIHost *host, PCIDevice *pdev, MemoryRegion *ram)
{
    RemoteDMA *dma = remote_dma_of(host, pdev);

    assert(!dma->ram);
    dma->ram = ram;
    memory_region_add_subregion_overlap(&dma->root, 0, ram,
                                        REMOTE_GUEST_RAM_PRIORITY);
    remote_dma_sync_bars(host, pdev);
    remote_dma_set_virtio_space(pdev, &dma->as);
}

/* ... and no longer: DMA reaches nothing (the device is reset already) */
void remote_dma_detach(RemotePCIHost *host, PCIDevice *pdev)
{
    RemoteDMA *dma = remote_dma_of(host, pdev);

    remote_dma_set_virtio_space(pdev, &address_space_memory);
    memory_region_transaction_begin();
    for (int i = 0; i < PCI_NUM_REGIONS; i++) {
        remote_dma_unmap_bar(dma, i);
    }
    if (dma->ram) {
        memory_region_del_subregion(&dma->root, dma->ram);
        dma->ram = NULL;
    }
    memory_region_transaction_commit();
}
