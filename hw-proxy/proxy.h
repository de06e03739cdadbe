/*
 * x-pci-proxy-dev: a PCI device of the main QEMU that stands in for a
 * device emulated in a remote process. Shared declarations of hw-proxy.so.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_PROXY_PROXY_H
#define HW_PROXY_PROXY_H

#include "hw/pci/pci_device.h"
#include "hw/pci/msi.h"
#include "exec/memory.h"
#include "mpqemu/channel.h"
#include "mpqemu/ring.h"
#include "mpqemu/remote-process.h"
#include "mpqemu/proxy-device.h"

typedef void ProxyNotifyFn(void *opaque, MPQemuMsg *msg);
typedef void ProxyFailFn(void *opaque, RemoteDeviceFailureCause cause,
                         const char *reason);

/* The request/reply channel to one remote device (proxy-rpc.c) */
typedef struct ProxyLink {
    QemuMutex lock;         /* serializes the use of the socket */
    int fd;                 /* -1 once closed */
    bool dead;              /* broken: no more requests */
    MPQemuRecvState rx;     /* a message that has partly arrived */
    uint64_t last_id;
    uint32_t timeout_ms;
    GArray *events;         /* notifications not yet applied (MPQemuMsg) */
    ProxyNotifyFn *notify;  /* applies a notification, with the BQL */
    ProxyFailFn *fail;      /* called once, with the BQL, when it breaks */
    char *broken;           /* why it broke */
    RemoteDeviceFailureCause broken_cause;
    void *opaque;
    uint32_t notify_count;  /* notifications received on this connection */
    bool bars_open;         /* BAR accesses may come (proxy_link_open_bars) */
    bool post_writes;       /* ... and writes may be posted */
    /* With the BQL: how the main loop watches the socket (proxy-link-watch.c) */
    int watch_fd;           /* the socket in the epoll set, or -1 */
    bool watch_suspended;   /* ... taken out of it by a halted vCPU */
    bool watch_notify;      /* ... there for its end only: ring_notify_fd is */
    bool socket_reader;     /* a halted vCPU reads the socket (proxy-ring.c) */
    /* the main loop left a notify signal to whoever holds the link */
    bool notify_deferred;

    /* BAR accesses through shared memory, when negotiated (proxy-ring.c) */
    MPQemuRing *ring;
    size_t ring_size;       /* the ring page and the shadow area */
    uint32_t ring_seq;      /* the last request put in the ring */
    uint32_t ring_answered; /* a request we know was answered, and all before */
    uint32_t ring_serial;   /* the last SERIAL_WRITE put in it (or 0) */
    uint32_t posted_errors; /* refused posted writes already reported */
    int ring_kick_fd;       /* wakes the remote */
    int ring_done_fd;       /* wakes us */
    int ring_notify_fd;     /* tells the main loop of notifications, or -1 */
    bool ring_intx;         /* answers carry INTx changes: RING_INTX */
    /* how the device wants its registers treated, checked at setup */
    MPQemuAccessHint hints[MPQEMU_MAX_HINTS];
    uint32_t nr_hints;
    uint32_t shadow_size;
} ProxyLink;

void proxy_link_init(ProxyLink *link);
void proxy_link_destroy(ProxyLink *link);
void proxy_link_unlock(ProxyLink *link);
void proxy_link_open(ProxyLink *link, int fd, uint32_t timeout_ms,
                     ProxyNotifyFn *notify, ProxyFailFn *fail, void *opaque);
bool proxy_link_call(ProxyLink *link, MPQemuMsg *req, MPQemuMsg *reply,
                     Error **errp);
bool proxy_link_bar_access(ProxyLink *link, bool write, uint8_t region,
                           uint64_t offset, uint8_t size, uint64_t *value,
                           bool posted, Error **errp);
void proxy_link_open_bars(ProxyLink *link, bool post_writes);
void proxy_link_close(ProxyLink *link);
void proxy_link_break(ProxyLink *link, RemoteDeviceFailureCause cause,
                      Error *err);
/* For proxy-ring.c, with the link lock held */
void proxy_link_queue_intx_locked(ProxyLink *link, bool level,
                                  uint32_t notify_seq);
void proxy_link_break_locked(ProxyLink *link, RemoteDeviceFailureCause cause,
                             Error *err);
bool proxy_link_take_notifications(ProxyLink *link, int timeout_ms);
bool proxy_link_poll_notifications(ProxyLink *link, bool signalled);

/* proxy-link-watch.c */
void proxy_link_watch(ProxyLink *link, int fd);
void proxy_link_unwatch(ProxyLink *link, int fd);
void proxy_link_watch_suspend(ProxyLink *link);
void proxy_link_watch_resume_all(void);
void proxy_link_watch_notify_fd(ProxyLink *link, int notify_fd);
void proxy_link_unwatch_notify_fd(ProxyLink *link);

/* proxy-halt-wait.c */
void proxy_halt_wait_add(ProxyLink *link);
void proxy_halt_wait_remove(ProxyLink *link);

/* proxy-ring.c */
bool proxy_ring_setup(ProxyLink *link, bool intx_in_answers,
                      bool notify_eventfd, Error **errp);
void proxy_ring_close(ProxyLink *link);
bool proxy_ring_notify_seen_locked(ProxyLink *link);
MPQemuRing *proxy_ring_socket_reader_begin(ProxyLink *link);
void proxy_ring_socket_reader_end(ProxyLink *link, MPQemuRing *ring);
void proxy_ring_signal_main_loop(ProxyLink *link);
void proxy_ring_notify_defer(ProxyLink *link);
void proxy_ring_notify_redeliver_locked(ProxyLink *link);
bool proxy_ring_access_locked(ProxyLink *link, bool write, uint8_t region,
                              uint64_t offset, uint8_t size, uint64_t *value,
                              bool posted, Error **errp);
bool proxy_ring_drain_locked(ProxyLink *link, Error **errp);
const MPQemuAccessHint *proxy_ring_find_hint(ProxyLink *link, uint8_t kind,
                                             uint8_t region, uint64_t offset,
                                             uint8_t size);

/* One section of guest RAM shared with the remote */
typedef struct ProxyMemorySection {
    uint64_t gpa;
    uint64_t size;
    uint64_t offset;        /* in the descriptor */
    MemoryRegion *mr;       /* referenced while in a map */
    uint64_t mr_offset;     /* of gpa in mr */
    int fd;
} ProxyMemorySection;

/* Guest RAM shared with the remote, kept in step with the memory map */
typedef struct ProxyMemory {
    MemoryListener listener;
    ProxyLink *link;
    const char *owner_id;
    GArray *pending;        /* ProxyMemorySection, being collected */
    GArray *current;        /* the map the remote last accepted */
    char *unshareable;      /* name of the first guest RAM that is not shared */
    bool started;

    /* What the device writes, while the VM migrates (proxy-dirty.c) */
    bool dirty_supported;   /* the remote can tell */
    bool dirty_logging;
    bool dirty_lost;        /* the remote could not tell once */
    int dirty_fd;           /* memory file the remote writes its bitmap to */
    GArray *dirty_stale;    /* sections that left the map while logging */
} ProxyMemory;

bool proxy_memory_start(ProxyMemory *mem, ProxyLink *link,
                        const char *owner_id, bool track_dirty, Error **errp);
void proxy_memory_stop(ProxyMemory *mem);
void proxy_memory_unref_sections(GArray *map);

/* proxy-dirty.c */
bool proxy_dirty_start(ProxyMemory *mem, Error **errp);
void proxy_dirty_stop(ProxyMemory *mem);
void proxy_dirty_sync(ProxyMemory *mem, bool last_stage);
void proxy_dirty_map_changed(ProxyMemory *mem, GArray *old);

typedef struct ProxyRegion {
    PCIProxyDev *dev;
    MemoryRegion mr;
    uint64_t size;
    uint8_t index;
    bool io;
} ProxyRegion;

/*
 * What the guest programmed into the device's MSI and MSI-X capabilities
 * and table, as it passed through the proxy (proxy-msi.c)
 */
typedef struct ProxyMsiGuard {
    uint8_t msi_cap;            /* config offsets; 0 if the device has none */
    uint8_t msix_cap;
    bool msi_64bit;
    uint8_t msix_bir;
    uint32_t msix_table_offset;
    uint32_t msix_entries;
    uint8_t config[PCI_CONFIG_SPACE_SIZE];  /* as the guest wrote it */
    uint8_t *msix_table;                    /* as the guest wrote it */
    uint32_t msix_table_size;
    /* the message before the last change: the device may not have seen it */
    MSIMessage msi_previous;
    MSIMessage *msix_previous;
    uint64_t refused;
    /* the table as it travels in the migration stream */
    uint8_t *migrated_table;
    uint32_t migrated_size;
} ProxyMsiGuard;

/* A doorbell the device wants signalled directly (proxy-ioeventfd.c) */
typedef struct ProxyIoeventfd {
    EventNotifier notifier;
    uint64_t offset;
    uint64_t data;
    uint8_t region;
    uint8_t size;
    bool match_data;
    QLIST_ENTRY(ProxyIoeventfd) next;
} ProxyIoeventfd;

bool proxy_ioeventfd_apply(PCIProxyDev *dev, MPQemuMsg *msg,
                           Error **errp);
void proxy_ioeventfd_clear(PCIProxyDev *dev);

struct PCIProxyDev {
    PCIDevice parent_obj;

    /* properties */
    char *fd_str;
    char *socket_path;
    char *remote_id;        /* an x-remote-process, with devid */
    char *devid;
    uint32_t timeout_ms;

    ProxyLink link;
    ProxyMemory memory;
    ProxyRegion region[MPQEMU_NUM_REGIONS];
    char remote_devid[MPQEMU_DEVID_MAX];
    bool use_ring;          /* property: offer the shared-memory ring */
    bool use_posted_writes; /* property: post memory writes on the ring */
    bool use_shadow;        /* property: read shadowed registers locally */
    bool use_ioeventfd;     /* property: signal doorbells directly */
    bool use_halt_wait;     /* property: halted vCPUs take interrupts */
    uint64_t features;      /* negotiated with HELLO */
    QLIST_HEAD(, ProxyIoeventfd) ioeventfds;
    unsigned nr_ioeventfds;
    bool intx_level;        /* as the remote last set it */
    bool failed;
    bool connecting;        /* realize or reattach: the guest waits */
    RemoteDeviceFailureCause failure_cause;     /* once failed */
    pid_t peer_pid;         /* of the remote at socket=, 0 if unknown */
    RemoteProcess *remote_process;  /* that created our device link */
    VMChangeStateEntry *runstate_entry;

    ProxyMsiGuard msi;

    /* migration (proxy-migration.c) */
    Error *migration_blocker;   /* the device cannot migrate */
    NotifierWithReturn migration_setup; /* refuses what it cannot do */
    bool state_lost;        /* it failed while the VM migrated */
    uint8_t *identity;      /* what its state consists of, in the stream */
    uint32_t identity_size;
    uint8_t *state;         /* the remote device's state, in the stream */
    uint32_t state_size;
};

/* proxy-msi.c */
bool proxy_msi_discover(PCIProxyDev *dev, Error **errp);
void proxy_msi_config_write(PCIProxyDev *dev, uint32_t addr, uint32_t val,
                            int len);
void proxy_msi_bar_write(PCIProxyDev *dev, unsigned region, hwaddr addr,
                         uint64_t val, unsigned size);
bool proxy_msi_allowed(PCIProxyDev *dev, MSIMessage m);
void proxy_msi_reset(PCIProxyDev *dev);
void proxy_msi_cleanup(PCIProxyDev *dev);
void proxy_msi_class_init(ObjectClass *oc);
extern const VMStateDescription vmstate_proxy_msi;

/* proxy-migration.c */
extern const VMStateDescription vmstate_proxy;
void proxy_migration_init(PCIProxyDev *dev);
bool proxy_migration_connected(PCIProxyDev *dev, Error **errp);
void proxy_migration_abort(const char *name, const char *why);
void proxy_migration_device_failed(PCIProxyDev *dev, const char *reason);
void proxy_migration_cleanup(PCIProxyDev *dev);

/* proxy-runstate.c */
bool proxy_runstate_send(PCIProxyDev *dev, bool running, Error **errp);
void proxy_runstate_init(PCIProxyDev *dev);
void proxy_runstate_cleanup(PCIProxyDev *dev);

/* proxy-pci.c */
const char *proxy_name(PCIProxyDev *dev);
void proxy_config_access_init(MPQemuMsg *req, bool write, uint32_t addr,
                              int len, uint32_t val);
bool proxy_is_connected(PCIProxyDev *dev);
/* Why it failed, if it did (proxy_is_connected() false) */
const char *proxy_failure(PCIProxyDev *dev, RemoteDeviceFailureCause *cause);
/* Its remote process is ended under it: fail, and forget the process */
void proxy_detach_remote_process(PCIProxyDev *dev, Error *err);
/* Its remote process stopped answering: fail, keep the process */
void proxy_fail_with(PCIProxyDev *dev, RemoteDeviceFailureCause cause,
                     Error *err);

/* remote-process.c: the proxy's side of x-remote-process */
RemoteProcess *remote_process_find(const char *id, Error **errp);
/* Whether it can serve devices now */
bool remote_process_check_running(RemoteProcess *rp, Error **errp);
/* Has the process serve @devid to @proxy; returns our end of the link */
int remote_process_plug(RemoteProcess *rp, PCIProxyDev *proxy,
                        const char *devid, Error **errp);
/*
 * The proxy is going: its link goes in the process, too, and with
 * @delete_device (an unplug, not a failed plug) the device itself.
 */
void remote_process_unplug(RemoteProcess *rp, PCIProxyDev *proxy,
                           bool delete_device);
const char *remote_process_name(RemoteProcess *rp);
/* 0 if unknown */
pid_t remote_process_pid(RemoteProcess *rp);
/* The id @proxy's device has in @rp, if it is plugged there */
const char *remote_process_devid(RemoteProcess *rp, PCIProxyDev *proxy);
/*
 * @proxy failed: a process that stopped answering or broke the protocol
 * (@cause) is not trusted to go on, and a spawned one is killed.
 */
void remote_process_device_failed(RemoteProcess *rp, PCIProxyDev *proxy,
                                  RemoteDeviceFailureCause cause,
                                  const char *reason);

#endif
