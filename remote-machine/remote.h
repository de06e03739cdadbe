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
#include "hw/pci/msi.h"
#include "hw/pci/pci_host.h"
#include "mpqemu/channel.h"
#include "mpqemu/ring.h"

#define TYPE_REMOTE_MACHINE MACHINE_TYPE_NAME("x-remote")
OBJECT_DECLARE_SIMPLE_TYPE(RemoteMachineState, REMOTE_MACHINE)

#define TYPE_REMOTE_PCIHOST "x-remote-pcihost"
OBJECT_DECLARE_SIMPLE_TYPE(RemotePCIHost, REMOTE_PCIHOST)

#define TYPE_REMOTE_OBJECT "x-remote-object"
OBJECT_DECLARE_SIMPLE_TYPE(RemoteObject, REMOTE_OBJECT)

typedef struct RemoteDMA RemoteDMA;

/* What a device at one devfn is connected to */
typedef struct RemoteSlot {
    RemoteObject *owner;        /* serves the device: gets its INTx and MSIs */
    MSITriggerFunc *msi_trigger;    /* the device's own, while bound */
    RemoteDMA *dma;             /* what a device here reaches by DMA */
} RemoteSlot;

struct RemotePCIHost {
    PCIHostState parent_obj;

    RemoteSlot slot[PCI_DEVFN_MAX];
};

struct RemoteMachineState {
    MachineState parent_obj;

    RemotePCIHost *host;
    bool auto_shutdown;
    bool sandbox;
    char *user;
    strList *allow_paths;
    Notifier machine_done;
};

/*
 * Guest RAM that a proxy shares is mapped into its device's DMA address
 * space at its guest physical addresses, over the BARs, as in-process.
 */
#define REMOTE_GUEST_RAM_PRIORITY 2

/* remote-dma.c: what each device reaches by DMA */
extern const PCIIOMMUOps remote_dma_iommu_ops;
void remote_dma_init_system_memory(Object *owner);
void remote_dma_attach(RemotePCIHost *host, PCIDevice *pdev, MemoryRegion *ram);
void remote_dma_detach(RemotePCIHost *host, PCIDevice *pdev);
void remote_dma_sync_bars(RemotePCIHost *host, PCIDevice *pdev);

/* remote-machine.c */
RemotePCIHost *remote_pcihost_of(PCIDevice *pdev);
bool remote_pcihost_bind(RemotePCIHost *host, PCIDevice *pdev,
                         RemoteObject *owner, Error **errp);
void remote_pcihost_unbind(RemotePCIHost *host, PCIDevice *pdev);
void remote_machine_peer_gone(void);

/* remote-memory.c: guest RAM sections a proxy shared with one device */
typedef struct RemoteMemory {
    Object *owner;
    MemoryRegion *root;         /* a container in the system memory */
    GPtrArray *current;         /* MemoryRegion *, mapped now */
    GPtrArray *pending;         /* MemoryRegion *, of the map being received */
    bool receiving;
    bool dirty_logging;         /* its proxy tracks what the device writes */
} RemoteMemory;

const char *remote_memory_name(RemoteMemory *mem);

void remote_memory_init(RemoteMemory *mem, Object *owner, MemoryRegion *root);
bool remote_memory_receive(RemoteMemory *mem, MPQemuMsg *msg, Error **errp);
void remote_memory_clear(RemoteMemory *mem);
void remote_memory_destroy(RemoteMemory *mem);

/* What a device declares with ACCESS_HINTS, in host byte order */
typedef struct RemoteHints {
    MPQemuAccessHint hint[MPQEMU_MAX_HINTS];
    uint32_t nr;
    uint32_t shadow_size;
    /*
     * The device also changes shadowed registers on its own, not only when
     * it handles an access or before it sends a notification
     */
    bool shadow_autonomous;
} RemoteHints;

/* remote-ring.c: BAR accesses through shared memory */
typedef struct RemoteRing RemoteRing;
RemoteRing *remote_ring_start(RemoteObject *owner, int socket_fd,
                              MPQemuMsg *req, const RemoteHints *hints,
                              uint64_t features, Error **errp);
void remote_ring_stop(RemoteRing *rr);
void remote_ring_shadow_stale(RemoteRing *rr);
void remote_ring_notified(RemoteRing *rr);
bool remote_ring_watch(RemoteRing *rr, int fd, uint32_t id);
void remote_ring_unwatch(RemoteRing *rr, int fd);

/* remote-hints.c: which writes wait, which reads are shadowed */
void remote_hints_for_device(PCIDevice *pdev, uint64_t features,
                             RemoteHints *hints);

/* remote-doorbell.c: the device's ioeventfds, handed to the proxy */
typedef struct RemoteDoorbells RemoteDoorbells;
RemoteDoorbells *remote_doorbells_start(RemoteObject *o, const char *devid,
                                        RemoteRing *ring,
                                        AddressSpace *const *as);
void remote_doorbells_stop(RemoteDoorbells *db);
void remote_doorbells_rang(RemoteDoorbells *db, uint32_t id);

/* remote-dirty.c: guest RAM the device wrote, for a migration */
void remote_dirty_handle(RemoteMemory *mem, MPQemuMsg *req, MPQemuMsg *reply);
void remote_dirty_stop(RemoteMemory *mem);

/* remote-state.c: the device's state, for a migration */
void remote_state_handle(PCIDevice *pdev, MPQemuMsg *req, MPQemuMsg *reply);

/* remote-sandbox.c: least privilege for the device models */
bool remote_sandbox_enter(bool enabled, const char *user,
                          strList *allow_paths, Error **errp);

/*
 * remote-landlock.c: the files the sandboxed process may still open.
 * prepare() gives a ruleset to enforce, or one of these:
 */
#define REMOTE_LANDLOCK_UNAVAILABLE (-1)    /* the kernel has none */
#define REMOTE_LANDLOCK_FAILED      (-2)    /* with an error set */
int remote_landlock_prepare(strList *allow_paths, Error **errp);

/* remote-landlock-threads.c: enforced on every thread of the process */
bool remote_landlock_enforce(int ruleset, Error **errp);

/* remote-disks.c: disk images handed over to a migration's destination */
bool remote_disks_release(PCIDevice *pdev, Error **errp);
bool remote_disks_take(PCIDevice *pdev, Error **errp);
bool remote_disks_activate(Error **errp);

/* remote-runstate.c */
void remote_runstate_init(void);
void remote_runstate_hold(void);
bool remote_runstate_release(Error **errp);
bool remote_runstate_proxy_runs(Error **errp);

/* remote-object.c */

bool remote_object_has_peer(RemoteObject *o);
int remote_object_bar_access(RemoteObject *o, bool write, unsigned region,
                             uint64_t offset, unsigned size, uint64_t *value,
                             Error **errp);
uint32_t remote_object_notify_count(RemoteObject *o);
void remote_object_set_irq(RemoteObject *o, int level);
void remote_object_ring_answer_begin(RemoteObject *o);
int remote_object_ring_answer_end(RemoteObject *o);
void remote_object_send_msi(RemoteObject *o, MSIMessage msg);
void remote_object_send_doorbell(RemoteObject *o, bool add, uint8_t region,
                                 uint64_t offset, uint8_t size,
                                 bool match_data, uint64_t data, int fd);
void remote_object_doorbell_rang(RemoteObject *o, uint32_t id);

#endif
