/*
 * The remote process: a machine with no CPUs and no RAM of its own whose PCI
 * devices are driven by proxies in a main QEMU. Declarations of remote-machine.so.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef REMOTE_MACHINE_REMOTE_H
#define REMOTE_MACHINE_REMOTE_H

#include "hw/boards.h"
#include "hw/pci/pci.h"
#include "hw/pci/pci_host.h"
#include "mpqemu/channel.h"

#define TYPE_REMOTE_MACHINE MACHINE_TYPE_NAME("x-remote")
OBJECT_DECLARE_SIMPLE_TYPE(RemoteMachineState, REMOTE_MACHINE)

#define TYPE_REMOTE_PCIHOST "x-remote-pcihost"
OBJECT_DECLARE_SIMPLE_TYPE(RemotePCIHost, REMOTE_PCIHOST)

#define TYPE_REMOTE_OBJECT "x-remote-object"
OBJECT_DECLARE_SIMPLE_TYPE(RemoteObject, REMOTE_OBJECT)

typedef void RemoteIrqFn(void *opaque, int level);

/* What a device at one devfn is connected to */
typedef struct RemoteSlot {
    MemoryRegion dma_root;      /* its view of guest RAM, filled by its proxy */
    MemoryRegion pci_mem_alias; /* ... over the BARs of this process's devices */
    AddressSpace dma_as;
    bool dma_ready;
    RemoteIrqFn *irq;           /* where its INTx goes, once bound */
    void *irq_opaque;
} RemoteSlot;

struct RemotePCIHost {
    PCIHostState parent_obj;

    MemoryRegion pci_mem;
    MemoryRegion pci_io;
    RemoteSlot slot[PCI_DEVFN_MAX];
};

struct RemoteMachineState {
    MachineState parent_obj;

    RemotePCIHost *host;
    bool auto_shutdown;
};

/* remote-machine.c */
RemotePCIHost *remote_pcihost_of(PCIDevice *pdev);
MemoryRegion *remote_pcihost_dma_root(RemotePCIHost *host, int devfn);
bool remote_pcihost_bind_irq(RemotePCIHost *host, int devfn, RemoteIrqFn *fn,
                             void *opaque, Error **errp);
void remote_pcihost_unbind_irq(RemotePCIHost *host, int devfn);
void remote_machine_peer_gone(void);

/* remote-memory.c: guest RAM sections a proxy shared with one device */
typedef struct RemoteMemory {
    Object *owner;
    MemoryRegion *root;         /* the device's DMA address space root */
    GPtrArray *current;         /* MemoryRegion *, mapped now */
    GPtrArray *pending;         /* MemoryRegion *, of the map being received */
    bool receiving;
} RemoteMemory;

void remote_memory_init(RemoteMemory *mem, Object *owner, MemoryRegion *root);
bool remote_memory_receive(RemoteMemory *mem, MPQemuMsg *msg, Error **errp);
void remote_memory_clear(RemoteMemory *mem);

/* remote-object.c */
bool remote_object_has_peer(RemoteObject *o);

#endif
