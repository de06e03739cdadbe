/*
 * x-remote-object: binds one PCI device of the remote machine to the socket
 * of its proxy and serves the proxy's requests for that device.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "qemu/module.h"
#include "qemu/sockets.h"
#include "qemu/bswap.h"
#include "qom/object_interfaces.h"
#include "hw/qdev-core.h"
#include "hw/pci/pci_device.h"
#include "hw/pci/pci_host.h"
#include "hw/sysbus.h"
#include "exec/address-spaces.h"
#include "system/system.h"
#include "mpqemu/socket.h"
#include "remote.h"
#include "trace.h"

/* How long a request may take to arrive whole, and a reply to be sent */
#define REMOTE_IO_TIMEOUT_MS 5000

struct RemoteObject {
    Object parent_obj;

    /* properties */
    char *devid;
    char *fd_str;
    char *socket_path;

    int listen_fd;
    int fd;                 /* the proxy's connection, -1 if none */
    MPQemuRecvState rx;     /* a request that has partly arrived */
    QEMUTimer *rx_timer;    /* ... and how long it may take to complete */
    bool hello_done;
    bool holds_stopped;     /* its proxy's VM is stopped: remote_runstate */
    PCIDevice *pdev;
    RemotePCIHost *host;
    /* Each region seen from offset 0, wherever its BAR is mapped */
    MemoryRegion region_root[MPQEMU_NUM_REGIONS];
    MemoryRegion region_alias[MPQEMU_NUM_REGIONS];
    MemoryRegion region_guard[MPQEMU_NUM_REGIONS];
    AddressSpace region_as[MPQEMU_NUM_REGIONS];
    bool region_as_ready[MPQEMU_NUM_REGIONS];
    MemoryRegion ram_root;      /* the guest RAM its proxy shares */
    uint64_t features;          /* negotiated with HELLO */
    RemoteRing *ring;           /* BAR accesses through shared memory */
    RemoteDoorbells *doorbells; /* doorbells the proxy signals directly */
    RemoteHints hints;          /* as last declared */
    uint32_t notify_count;      /* notifications sent on this connection */
    bool ring_answering;        /* serving a ring access the proxy awaits */
    int ring_intx;              /* the INTx level set meanwhile, or -1 */
    RemoteMemory memory;
    Notifier machine_done;
};

bool remote_object_has_peer(RemoteObject *o)
{
    return o->fd >= 0 || o->listen_fd >= 0;
}

/* The proxy says whether its VM runs; the devices run only if all do */
static bool remote_object_set_vm_running(RemoteObject *o, bool running,
                                         Error **errp)
{
    if (!running) {
        if (!o->holds_stopped) {
            o->holds_stopped = true;
            remote_runstate_hold();
        }
        return true;
    }
    /* it may have run elsewhere meanwhile: a migration that failed */
    if (o->pdev && !remote_disks_take(o->pdev, errp)) {
        return false;
    }
    if (!o->holds_stopped) {
        /* a process waiting for a migration's end may start now */
        return remote_runstate_proxy_runs(errp);
    }
    o->holds_stopped = false;
    return remote_runstate_release(errp);
}

static void remote_object_disconnect(RemoteObject *o, const char *reason)
{
    if (o->fd < 0) {
        return;
    }
    trace_remote_object_disconnected(o->devid, reason);
    qemu_set_fd_handler(o->fd, NULL, NULL, NULL);
    close(o->fd);
    o->fd = -1;
    timer_del(o->rx_timer);
    mpqemu_recv_state_reset(&o->rx);
    o->hello_done = false;
    o->features = 0;
    o->ring_answering = false;
    o->hints = (RemoteHints) {};
    if (o->doorbells) {
        remote_doorbells_stop(o->doorbells);
        o->doorbells = NULL;
    }
    if (o->ring) {
        remote_ring_stop(o->ring);
        o->ring = NULL;
    }
    remote_memory_clear(&o->memory);
    if (o->pdev) {
        /* nobody drives the device any more: stop its DMA and interrupts */
        pci_device_reset(o->pdev);
        remote_dma_sync_bars(o->host, o->pdev);
    }
    /* nobody to run it for: it does not keep the others stopped either */
    if (o->holds_stopped) {
        Error *err = NULL;

        o->holds_stopped = false;
        if (!remote_runstate_release(&err)) {
            error_report_err(err);
        }
    }
    remote_machine_peer_gone();
}

static void remote_object_notify(RemoteObject *o, MPQemuMsg *msg)
{
    Error *err = NULL;

    if (o->fd < 0) {
        return;     /* nobody to tell: the device is reset on disconnect */
    }
    if (o->ring) {
        /* what the guest reads after this must come from the device */
        remote_ring_shadow_stale(o->ring);
    }
    if (mpqemu_msg_send(o->fd, msg, REMOTE_IO_TIMEOUT_MS, &err) < 0) {
        error_report("x-remote-object %s: %s", o->devid,
                     error_get_pretty(err));
        remote_object_disconnect(o, error_get_pretty(err));
        error_free(err);
        return;
    }
    o->notify_count++;
    if (o->ring) {
        remote_ring_notified(o->ring);
    }
}

/* How many notifications the proxy has been sent: ring replies carry it */
uint32_t remote_object_notify_count(RemoteObject *o)
{
    return o->notify_count;
}

/*
 * The ring is about to serve an access the proxy waits for: with RING_INTX,
 * the answer will carry what the device does with its INTx line meanwhile.
 */
void remote_object_ring_answer_begin(RemoteObject *o)
{
    o->ring_answering = o->features & MPQEMU_FEATURE_RING_INTX;
    o->ring_intx = -1;
}

/* ... and has served it: the INTx level for the answer, or -1 if unchanged */
int remote_object_ring_answer_end(RemoteObject *o)
{
    o->ring_answering = false;
    return o->ring_intx;
}

void remote_object_set_irq(RemoteObject *o, int level)
{
    MPQemuMsg msg;

    if (o->ring_answering && o->ring) {
        /* nobody needs waking: the proxy waits for the answer anyway */
        o->ring_intx = !!level;
        remote_ring_shadow_stale(o->ring);
        return;
    }

    mpqemu_msg_init(&msg, MPQEMU_CMD_SET_IRQ, 0, 0, sizeof(MPQemuSetIrq));
    msg.u.set_irq.level = cpu_to_le32(level);
    remote_object_notify(o, &msg);
}

void remote_object_send_msi(RemoteObject *o, MSIMessage m)
{
    MPQemuMsg msg;

    mpqemu_msg_init(&msg, MPQEMU_CMD_MSI, 0, 0, sizeof(MPQemuMsi));
    msg.u.msi.address = cpu_to_le64(m.address);
    msg.u.msi.data = cpu_to_le32(m.data);
    remote_object_notify(o, &msg);
}

void remote_object_send_doorbell(RemoteObject *o, bool add, uint8_t region,
                                 uint64_t offset, uint8_t size,
                                 bool match_data, uint64_t data, int fd)
{
    MPQemuMsg msg;

    mpqemu_msg_init(&msg, MPQEMU_CMD_IOEVENTFD, 0, 0,
                    sizeof(MPQemuIoeventfd));
    msg.u.ioeventfd.offset = cpu_to_le64(offset);
    msg.u.ioeventfd.data = cpu_to_le64(data);
    msg.u.ioeventfd.region = region;
    msg.u.ioeventfd.size = size;
    msg.u.ioeventfd.flags = (add ? MPQEMU_IOEVENTFD_ADD : 0) |
                            (match_data ? MPQEMU_IOEVENTFD_DATAMATCH : 0);
    if (add) {
        msg.hdr.num_fds = 1;
        msg.fds[0] = fd;    /* sent as a copy; the relay stays ours */
    }
    remote_object_notify(o, &msg);
}

void remote_object_doorbell_rang(RemoteObject *o, uint32_t id)
{
    if (o->doorbells) {
        remote_doorbells_rang(o->doorbells, id);
    }
}

static void remote_handle_hello(RemoteObject *o, MPQemuMsg *req,
                                MPQemuMsg *reply)
{
    uint32_t version = le32_to_cpu(req->u.hello.version);

    if (version != MPQEMU_VERSION) {
        mpqemu_msg_init_error(reply, req, -EPROTONOSUPPORT,
                              "protocol version %u is not supported; this "
                              "remote speaks version %d", version,
                              MPQEMU_VERSION);
        return;
    }
    /* What both sides know is what will be used */
    o->features = le64_to_cpu(req->u.hello.features) & MPQEMU_FEATURES_KNOWN;
    if (!(o->features & MPQEMU_FEATURE_RING)) {
        o->features &= ~MPQEMU_FEATURES_RING_BASED;
    }
    if (!(o->features & MPQEMU_FEATURE_POSTED_WRITES)) {
        o->features &= ~MPQEMU_FEATURE_SERIAL_WRITES;
    }
    mpqemu_msg_init_reply(reply, req, sizeof(MPQemuHello));
    reply->u.hello.version = cpu_to_le32(MPQEMU_VERSION);
    reply->u.hello.features = cpu_to_le64(o->features);
    pstrcpy(reply->u.hello.devid, sizeof(reply->u.hello.devid), o->devid);
    o->hello_done = true;
}

static void remote_handle_device_info(RemoteObject *o, MPQemuMsg *req,
                                      MPQemuMsg *reply)
{
    MPQemuDeviceInfo *info = &reply->u.device_info;

    mpqemu_msg_init_reply(reply, req, sizeof(MPQemuDeviceInfo));
    info->config_size = cpu_to_le32(pci_config_size(o->pdev));
    for (int i = 0; i < MPQEMU_NUM_REGIONS; i++) {
        PCIIORegion *r = &o->pdev->io_regions[i];
        uint32_t flags = 0;

        if (!r->size) {
            continue;
        }
        if (r->type & PCI_BASE_ADDRESS_SPACE_IO) {
            flags |= MPQEMU_REGION_IO;
        } else if (i != PCI_ROM_SLOT) {
            if (r->type & PCI_BASE_ADDRESS_MEM_TYPE_64) {
                flags |= MPQEMU_REGION_MEM64;
            }
            if (r->type & PCI_BASE_ADDRESS_MEM_PREFETCH) {
                flags |= MPQEMU_REGION_PREFETCH;
            }
        }
        info->region[i].size = cpu_to_le64(r->size);
        info->region[i].flags = cpu_to_le32(flags);
    }
}

static void remote_handle_config(RemoteObject *o, MPQemuMsg *req,
                                 MPQemuMsg *reply)
{
    uint32_t offset = le32_to_cpu(req->u.config.offset);
    uint32_t len = le32_to_cpu(req->u.config.len);
    uint32_t limit = pci_config_size(o->pdev);

    if ((len != 1 && len != 2 && len != 4) || offset >= limit ||
        len > limit - offset) {
        mpqemu_msg_init_error(reply, req, -EINVAL, "config access of %u "
                              "bytes at 0x%x is outside the %u-byte config "
                              "space", len, offset, limit);
        return;
    }
    if (req->hdr.cmd == MPQEMU_CMD_CONFIG_WRITE) {
        pci_host_config_write_common(o->pdev, offset, limit,
                                     le32_to_cpu(req->u.config.value), len);
        mpqemu_msg_init_reply(reply, req, 0);
    } else {
        uint32_t val = pci_host_config_read_common(o->pdev, offset, limit,
                                                   len);

        mpqemu_msg_init_reply(reply, req, sizeof(MPQemuValue));
        reply->u.value.value = cpu_to_le64(val);
    }
}

static AddressSpace *remote_region_as(RemoteObject *o, int region)
{
    PCIIORegion *r = &o->pdev->io_regions[region];

    if (!o->region_as_ready[region]) {
        g_autofree char *name = g_strdup_printf("%s-region%d", o->devid,
                                                region);

        /*
         * The guard after the alias keeps the memory core from rendering
         * the BAR itself as the root of this address space, which would
         * place it at its bus address instead of at 0.
         */
        memory_region_init(&o->region_root[region], OBJECT(o), name,
                           r->size + 1);
        memory_region_init_alias(&o->region_alias[region], OBJECT(o), name,
                                 r->memory, 0, r->size);
        memory_region_add_subregion(&o->region_root[region], 0,
                                    &o->region_alias[region]);
        memory_region_init(&o->region_guard[region], OBJECT(o), "guard", 1);
        memory_region_add_subregion(&o->region_root[region], r->size,
                                    &o->region_guard[region]);
        address_space_init(&o->region_as[region], &o->region_root[region],
                           name);
        o->region_as_ready[region] = true;
    }
    return &o->region_as[region];
}

/*
 * Whether an access can go straight to the BAR's own region: one that ends
 * in the device's callbacks (no container, alias, RAM or ROM device) and
 * takes an access of this size here. That is where the BAR's address space
 * would send it too, after a lookup that costs as much as the access.
 */
static bool remote_region_direct(MemoryRegion *mr, uint64_t offset,
                                 unsigned size, bool write)
{
    return mr->terminates && !mr->alias && !memory_region_is_ram(mr) &&
           !memory_region_is_romd(mr) && QTAILQ_EMPTY(&mr->subregions) &&
           memory_region_access_valid(mr, offset, size, write,
                                      MEMTXATTRS_UNSPECIFIED);
}

/*
 * A BAR access, from a request on the socket or from the ring. Returns 0,
 * or a negative errno (with @errp) for an access outside the device.
 */
int remote_object_bar_access(RemoteObject *o, bool write, unsigned region,
                             uint64_t offset, unsigned size, uint64_t *value,
                             Error **errp)
{
    uint8_t buf[8];
    MemTxResult res;
    PCIIORegion *r;

    if (region >= MPQEMU_NUM_REGIONS || !o->pdev->io_regions[region].size) {
        error_setg(errp, "device %s has no region %u", o->devid, region);
        return -EINVAL;
    }
    r = &o->pdev->io_regions[region];
    if ((size != 1 && size != 2 && size != 4 && size != 8) ||
        offset >= r->size || size > r->size - offset) {
        error_setg(errp, "access of %u bytes at 0x%" PRIx64 " is outside "
                   "region %u (0x%" PRIx64 " bytes)", size, offset, region,
                   (uint64_t)r->size);
        return -EINVAL;
    }
    if (write && region == PCI_ROM_SLOT) {
        error_setg(errp, "the expansion ROM is read-only");
        return -EPERM;
    }

    /*
     * An access the device does not accept (a size it does not take, a hole
     * in the BAR) is answered as the memory core answers it in-process:
     * the read gives what the core returned, the write is dropped.
     */
    if (remote_region_direct(r->memory, offset, size, write)) {
        MemOp op = size_memop(size) | MO_LE;

        res = write ?
            memory_region_dispatch_write(r->memory, offset, *value, op,
                                         MEMTXATTRS_UNSPECIFIED) :
            memory_region_dispatch_read(r->memory, offset, value, op,
                                        MEMTXATTRS_UNSPECIFIED);
    } else if (write) {
        stn_le_p(buf, size, *value);
        res = address_space_write(remote_region_as(o, region), offset,
                                  MEMTXATTRS_UNSPECIFIED, buf, size);
    } else {
        res = address_space_read(remote_region_as(o, region), offset,
                                 MEMTXATTRS_UNSPECIFIED, buf, size);
        *value = ldn_le_p(buf, size);
    }
    trace_remote_object_bar_access(o->devid, write, region, offset, size,
                                   *value, res);
    return 0;
}

static void remote_handle_bar(RemoteObject *o, MPQemuMsg *req,
                              MPQemuMsg *reply)
{
    MPQemuBarAccess *a = &req->u.bar;
    bool write = req->hdr.cmd == MPQEMU_CMD_BAR_WRITE;
    uint64_t value = le64_to_cpu(a->value);
    Error *err = NULL;
    int ret;

    ret = remote_object_bar_access(o, write, a->region,
                                   le64_to_cpu(a->offset), a->size, &value,
                                   &err);
    if (ret < 0) {
        mpqemu_msg_init_error(reply, req, ret, "%s", error_get_pretty(err));
        error_free(err);
        return;
    }
    mpqemu_msg_init_reply(reply, req, write ? 0 : sizeof(MPQemuValue));
    if (!write) {
        reply->u.value.value = cpu_to_le64(value);
    }
}

static void remote_handle_access_hints(RemoteObject *o, MPQemuMsg *req,
                                       MPQemuMsg *reply)
{
    MPQemuAccessHints *out = &reply->u.hints;

    if (!(o->features & (MPQEMU_FEATURE_POSTED_WRITES |
                         MPQEMU_FEATURE_SHADOW)) || o->ring) {
        mpqemu_msg_init_error(reply, req, -EPROTO, "%s",
                              o->ring ? "the ring is already set up"
                                      : "neither posted writes nor the "
                                        "shadow were negotiated");
        return;
    }
    remote_hints_for_device(o->pdev, o->features, &o->hints);

    mpqemu_msg_init_reply(reply, req, sizeof(MPQemuAccessHints));
    out->nr_hints = cpu_to_le32(o->hints.nr);
    out->shadow_size = cpu_to_le32(o->hints.shadow_size);
    for (uint32_t i = 0; i < o->hints.nr; i++) {
        const MPQemuAccessHint *h = &o->hints.hint[i];

        out->hint[i] = *h;
        out->hint[i].offset = cpu_to_le64(h->offset);
        out->hint[i].size = cpu_to_le32(h->size);
        out->hint[i].shadow_offset = cpu_to_le32(h->shadow_offset);
    }
}

static void remote_handle_ring_setup(RemoteObject *o, MPQemuMsg *req,
                                     MPQemuMsg *reply)
{
    Error *err = NULL;

    if (!(o->features & MPQEMU_FEATURE_RING) || o->ring) {
        mpqemu_msg_init_error(reply, req, -EPROTO, "%s",
                              o->ring ? "the ring is already set up"
                                      : "the ring was not negotiated");
        return;
    }
    o->ring = remote_ring_start(o, o->fd, req, &o->hints, o->features,
                                &err);
    if (!o->ring) {
        mpqemu_msg_init_error(reply, req, -EINVAL, "%s",
                              error_get_pretty(err));
        error_free(err);
        return;
    }
    mpqemu_msg_init_reply(reply, req, 0);
    if (o->features & MPQEMU_FEATURE_IOEVENTFD) {
        AddressSpace *as[PCI_ROM_SLOT] = { NULL };

        for (int i = 0; i < PCI_ROM_SLOT; i++) {
            if (o->pdev->io_regions[i].size) {
                as[i] = remote_region_as(o, i);
            }
        }
        o->doorbells = remote_doorbells_start(o, o->devid, o->ring, as);
    }
}

static void remote_handle_run_state(RemoteObject *o, MPQemuMsg *req,
                                    MPQemuMsg *reply)
{
    uint32_t running = le32_to_cpu(req->u.run_state.running);
    Error *err = NULL;

    if (!(o->features & MPQEMU_FEATURE_RUN_STATE)) {
        mpqemu_msg_init_error(reply, req, -ENOTSUP, "RUN_STATE was not "
                              "negotiated");
        return;
    }
    if (running > 1) {
        mpqemu_msg_init_error(reply, req, -EINVAL, "RUN_STATE running must "
                              "be 0 or 1, not %u", running);
        return;
    }
    if (!remote_object_set_vm_running(o, running, &err)) {
        mpqemu_msg_init_error(reply, req, -EIO, "%s", error_get_pretty(err));
        error_free(err);
        return;
    }
    mpqemu_msg_init_reply(reply, req, 0);
}

static void remote_handle_migration(RemoteObject *o, MPQemuMsg *req,
                                    MPQemuMsg *reply)
{
    if (!(o->features & MPQEMU_FEATURE_MIGRATION)) {
        mpqemu_msg_init_error(reply, req, -ENOTSUP, "MIGRATION was not "
                              "negotiated");
        return;
    }
    if (req->hdr.cmd == MPQEMU_CMD_DEVICE_STATE) {
        remote_state_handle(o->pdev, req, reply);
    } else {
        remote_dirty_handle(&o->memory, req, reply);
    }
}

static void remote_handle_memory_map(RemoteObject *o, MPQemuMsg *req,
                                     MPQemuMsg *reply)
{
    Error *err = NULL;

    if (!remote_memory_receive(&o->memory, req, &err)) {
        mpqemu_msg_init_error(reply, req, -EINVAL, "%s",
                              error_get_pretty(err));
        error_free(err);
        return;
    }
    mpqemu_msg_init_reply(reply, req, 0);
}

static void remote_object_dispatch(RemoteObject *o, MPQemuMsg *req,
                                   MPQemuMsg *reply)
{
    trace_remote_object_request(o->devid, mpqemu_cmd_name(req->hdr.cmd),
                                req->hdr.id);
    if (!o->hello_done && req->hdr.cmd != MPQEMU_CMD_HELLO) {
        mpqemu_msg_init_error(reply, req, -EPROTO, "%s before HELLO",
                              mpqemu_cmd_name(req->hdr.cmd));
        return;
    }

    if (o->ring) {
        /* a reset, a config write or a BAR access may change registers */
        remote_ring_shadow_stale(o->ring);
    }

    switch (req->hdr.cmd) {
    case MPQEMU_CMD_HELLO:
        remote_handle_hello(o, req, reply);
        break;
    case MPQEMU_CMD_DEVICE_INFO:
        remote_handle_device_info(o, req, reply);
        break;
    case MPQEMU_CMD_CONFIG_READ:
    case MPQEMU_CMD_CONFIG_WRITE:
        remote_handle_config(o, req, reply);
        break;
    case MPQEMU_CMD_BAR_READ:
    case MPQEMU_CMD_BAR_WRITE:
        remote_handle_bar(o, req, reply);
        break;
    case MPQEMU_CMD_MEMORY_MAP:
        remote_handle_memory_map(o, req, reply);
        break;
    case MPQEMU_CMD_RING_SETUP:
        remote_handle_ring_setup(o, req, reply);
        break;
    case MPQEMU_CMD_ACCESS_HINTS:
        remote_handle_access_hints(o, req, reply);
        break;
    case MPQEMU_CMD_RUN_STATE:
        remote_handle_run_state(o, req, reply);
        break;
    case MPQEMU_CMD_DEVICE_STATE:
    case MPQEMU_CMD_DIRTY_LOG:
        remote_handle_migration(o, req, reply);
        break;
    case MPQEMU_CMD_RESET:
        /* as the guest's bus reset does: the device and its PCI state */
        pci_device_reset(o->pdev);
        mpqemu_msg_init_reply(reply, req, 0);
        break;
    default:
        mpqemu_msg_init_error(reply, req, -ENOTSUP, "%s is not a request",
                              mpqemu_cmd_name(req->hdr.cmd));
        break;
    }
    if (o->pdev) {
        /* a config write, a reset or a loaded state may have moved BARs */
        remote_dma_sync_bars(o->host, o->pdev);
    }
}

static void remote_object_serve(RemoteObject *o, MPQemuMsg *req)
{
    MPQemuMsg reply;
    Error *err = NULL;

    if (!mpqemu_msg_check(req, MPQEMU_PEER_REMOTE, &err)) {
        error_report("x-remote-object %s: rejected a message: %s",
                     o->devid, error_get_pretty(err));
        mpqemu_msg_init_error(&reply, req, -EINVAL, "%s",
                              error_get_pretty(err));
        error_free(err);
        err = NULL;
    } else {
        remote_object_dispatch(o, req, &reply);
    }
    mpqemu_msg_close_fds(req);

    if (mpqemu_msg_send(o->fd, &reply, REMOTE_IO_TIMEOUT_MS, &err) < 0) {
        remote_object_disconnect(o, error_get_pretty(err));
        error_free(err);
    }
}

/*
 * Serve every request that has arrived whole, without ever waiting for the
 * rest of one: a slow or hostile proxy must not stall this process's main
 * loop (and the other devices it serves). A request left incomplete for
 * too long ends the connection.
 */
static void remote_object_readable(void *opaque)
{
    RemoteObject *o = opaque;
    MPQemuMsg req;
    Error *err = NULL;
    int ret;

    while (o->fd >= 0) {
        ret = mpqemu_msg_recv_partial(o->fd, &o->rx, &req, 0, &err);
        if (ret == -EAGAIN) {
            break;
        }
        if (ret < 0) {
            /* Without framing there is no way to answer: drop the link */
            if (ret != -EPIPE) {
                error_report("x-remote-object %s: %s; closing the "
                             "connection", o->devid, error_get_pretty(err));
            }
            remote_object_disconnect(o, error_get_pretty(err));
            error_free(err);
            return;
        }
        remote_object_serve(o, &req);
    }

    if (o->fd < 0) {
        return;
    }
    if (!o->rx.got) {
        timer_del(o->rx_timer);
    } else if (!timer_pending(o->rx_timer)) {
        timer_mod(o->rx_timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                               REMOTE_IO_TIMEOUT_MS);
    }
}

static void remote_object_rx_timeout(void *opaque)
{
    RemoteObject *o = opaque;

    error_report("x-remote-object %s: a request stayed incomplete for %d ms;"
                 " closing the connection", o->devid, REMOTE_IO_TIMEOUT_MS);
    remote_object_disconnect(o, "incomplete request");
}

static void remote_object_attach(RemoteObject *o, int fd)
{
    qemu_socket_set_nonblock(fd);
    o->fd = fd;
    o->hello_done = false;
    o->notify_count = 0;
    trace_remote_object_connected(o->devid);
    qemu_set_fd_handler(fd, remote_object_readable, NULL, o);
}

static void remote_object_accept(void *opaque)
{
    RemoteObject *o = opaque;
    int fd = qemu_accept(o->listen_fd, NULL, NULL);

    if (fd < 0) {
        return;
    }
    if (o->fd >= 0) {
        warn_report("x-remote-object %s: refusing a second proxy "
                    "connection on %s", o->devid, o->socket_path);
        close(fd);
        return;
    }
    remote_object_attach(o, fd);
}

/* Find the device, then start serving its proxy */
static bool remote_object_bind(RemoteObject *o, Error **errp)
{
    ERRP_GUARD();
    DeviceState *dev;
    PCIDevice *pdev;

    if (!object_dynamic_cast(qdev_get_machine(), TYPE_REMOTE_MACHINE)) {
        error_setg(errp, "x-remote-object %s needs -machine x-remote",
                   o->devid);
        return false;
    }
    dev = qdev_find_recursive(sysbus_get_default(), o->devid);
    if (!dev) {
        error_setg(errp, "x-remote-object: devid '%s' names no device",
                   o->devid);
        error_append_hint(errp, "Create the device first, e.g. -device "
                          "lsi53c895a,id=%s\n", o->devid);
        return false;
    }
    pdev = (PCIDevice *)object_dynamic_cast(OBJECT(dev), TYPE_PCI_DEVICE);
    if (!pdev) {
        error_setg(errp, "x-remote-object: device '%s' is not a PCI device",
                   o->devid);
        return false;
    }
    o->host = remote_pcihost_of(pdev);
    if (!o->host) {
        error_setg(errp, "x-remote-object: device '%s' must sit on the "
                   "remote machine's root bus", o->devid);
        return false;
    }
    if (!remote_pcihost_bind(o->host, pdev, o, errp)) {
        return false;
    }
    o->pdev = pdev;
    /* The device reaches the RAM of this object's proxy's VM, no other */
    memory_region_init(&o->ram_root, OBJECT(o), "guest-ram", UINT64_MAX);
    remote_dma_attach(o->host, pdev, &o->ram_root);
    remote_memory_init(&o->memory, OBJECT(o), &o->ram_root);
    return true;
}

static bool remote_object_start(RemoteObject *o, Error **errp)
{
    int fd = -1;

    /* Everything that can fail comes before binding, which cannot be undone */
    if (o->fd_str) {
        fd = mpqemu_socket_from_param(o->fd_str, "the main QEMU's "
                                      "x-pci-proxy-dev", errp);
        if (fd < 0) {
            return false;
        }
    }
    if (!remote_object_bind(o, errp)) {
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    if (fd >= 0) {
        remote_object_attach(o, fd);
    } else {
        qemu_set_fd_handler(o->listen_fd, remote_object_accept, NULL, o);
    }
    return true;
}

static void remote_object_machine_done(Notifier *notifier, void *data)
{
    RemoteObject *o = container_of(notifier, RemoteObject, machine_done);

    /* A command-line configuration error: nothing can run without it */
    remote_object_start(o, &error_fatal);
}

static void remote_object_complete(UserCreatable *uc, Error **errp)
{
    RemoteObject *o = REMOTE_OBJECT(uc);

    if (!o->devid) {
        error_setg(errp, "x-remote-object needs devid=<id of the device to "
                   "serve>");
        return;
    }
    if (!!o->fd_str == !!o->socket_path) {
        error_setg(errp, "x-remote-object needs exactly one of fd=<socket fd>"
                   " and socket=<path> to reach its proxy");
        return;
    }
    if (o->socket_path) {
        /* Listen at once so that a proxy may connect as soon as it likes */
        o->listen_fd = mpqemu_socket_listen(o->socket_path, errp);
        if (o->listen_fd < 0) {
            return;
        }
    }

    if (phase_check(PHASE_MACHINE_READY)) {
        remote_object_start(o, errp);
    } else {
        o->machine_done.notify = remote_object_machine_done;
        qemu_add_machine_init_done_notifier(&o->machine_done);
    }
}


static void remote_object_instance_init(Object *obj)
{
    RemoteObject *o = REMOTE_OBJECT(obj);

    o->fd = -1;
    o->listen_fd = -1;
    o->rx_timer = timer_new_ms(QEMU_CLOCK_REALTIME, remote_object_rx_timeout,
                               o);
}

/*
 * object-del: the proxy is disconnected and the device let go. What is
 * mapped (guest RAM, the regions' address spaces) holds references to the
 * object, so it goes here rather than in finalize, which it enables.
 */
static void remote_object_release(RemoteObject *o)
{
    if (o->machine_done.notify) {
        qemu_remove_machine_init_done_notifier(&o->machine_done);
        o->machine_done.notify = NULL;
    }
    if (o->listen_fd >= 0) {
        qemu_set_fd_handler(o->listen_fd, NULL, NULL, NULL);
        close(o->listen_fd);
        o->listen_fd = -1;
        unlink(o->socket_path);
    }
    remote_object_disconnect(o, "x-remote-object deleted");
    if (o->pdev) {
        remote_pcihost_unbind(o->host, o->pdev);
        remote_dma_detach(o->host, o->pdev);
        remote_memory_destroy(&o->memory);
        o->pdev = NULL;
    }
    for (int i = 0; i < MPQEMU_NUM_REGIONS; i++) {
        if (o->region_as_ready[i]) {
            address_space_destroy(&o->region_as[i]);
            o->region_as_ready[i] = false;
        }
    }
}

static void remote_object_unparent(Object *obj)
{
    remote_object_release(REMOTE_OBJECT(obj));
}

static void remote_object_finalize(Object *obj)
{
    RemoteObject *o = REMOTE_OBJECT(obj);

    remote_object_release(o);
    timer_free(o->rx_timer);
    g_free(o->devid);
    g_free(o->fd_str);
    g_free(o->socket_path);
}

#define REMOTE_OBJECT_STR_PROP(field)                                       \
    static char *remote_object_get_##field(Object *obj, Error **errp)       \
    {                                                                       \
        return g_strdup(REMOTE_OBJECT(obj)->field);                         \
    }                                                                       \
    static void remote_object_set_##field(Object *obj, const char *value,   \
                                          Error **errp)                     \
    {                                                                       \
        RemoteObject *o = REMOTE_OBJECT(obj);                               \
        g_free(o->field);                                                   \
        o->field = g_strdup(value);                                         \
    }

REMOTE_OBJECT_STR_PROP(devid)
REMOTE_OBJECT_STR_PROP(fd_str)
REMOTE_OBJECT_STR_PROP(socket_path)

static void remote_object_class_init(ObjectClass *oc, void *data)
{
    UserCreatableClass *ucc = USER_CREATABLE_CLASS(oc);

    oc->unparent = remote_object_unparent;
    ucc->complete = remote_object_complete;

    object_class_property_add_str(oc, "devid", remote_object_get_devid,
                                  remote_object_set_devid);
    object_class_property_set_description(oc, "devid",
        "id of the PCI device (-device ...,id=) this object serves");
    object_class_property_add_str(oc, "fd", remote_object_get_fd_str,
                                  remote_object_set_fd_str);
    object_class_property_set_description(oc, "fd",
        "connected socket to the proxy: a number or a getfd name");
    object_class_property_add_str(oc, "socket", remote_object_get_socket_path,
                                  remote_object_set_socket_path);
    object_class_property_set_description(oc, "socket",
        "path of a UNIX socket to listen on for the proxy");
}

static const TypeInfo remote_object_info = {
    .name = TYPE_REMOTE_OBJECT,
    .parent = TYPE_OBJECT,
    .instance_size = sizeof(RemoteObject),
    .instance_init = remote_object_instance_init,
    .instance_finalize = remote_object_finalize,
    .class_init = remote_object_class_init,
    .interfaces = (InterfaceInfo[]) {
        { TYPE_USER_CREATABLE },
        { },
    },
};

static void remote_object_register_types(void)
{
    type_register_static(&remote_object_info);
}

type_init(remote_object_register_types)
module_obj(TYPE_REMOTE_OBJECT);
