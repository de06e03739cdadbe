/*
 * x-pci-proxy-dev: impersonates a PCI device that lives in a remote process,
 * forwarding config space, BAR accesses, INTx and reset over its link.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/units.h"
#include "qemu/error-report.h"
#include "qemu/module.h"
#include "qemu/range.h"
#include "qemu/sockets.h"
#include "qemu/bswap.h"
#include "hw/qdev-properties.h"
#include "hw/pci/msi.h"
#include "hw/core/cpu.h"
#include "qemu/main-loop.h"
#include "system/runstate.h"
#include "qapi/qapi-events-mpqemu.h"
#include "mpqemu/socket.h"
#include "proxy.h"
#include "trace.h"

#define PROXY_DEFAULT_TIMEOUT_MS 5000

const char *proxy_name(PCIProxyDev *dev)
{
    DeviceState *d = DEVICE(dev);

    return d->id ? d->id : object_get_typename(OBJECT(dev));
}

static void proxy_fail(void *opaque, RemoteDeviceFailureCause cause,
                       const char *reason)
{
    PCIProxyDev *dev = opaque;
    RemoteProcess *rp = dev->remote_process;
    g_autofree char *path = NULL;
    pid_t pid;

    /* the link's socket is closed: no vCPU may wait on it again */
    proxy_halt_wait_remove(&dev->link);
    if (dev->failed) {
        return;
    }
    dev->failed = true;
    dev->failure_cause = cause;
    trace_proxy_failed(proxy_name(dev), reason);
    proxy_migration_device_failed(dev, reason);
    if (dev->connecting) {
        return;     /* realize or reattach reports the error itself */
    }
    error_report("x-pci-proxy-dev %s: %s; the device is now offline "
                 "(reads return all-ones, writes are dropped)",
                 proxy_name(dev), reason);
    proxy_ioeventfd_clear(dev);
    qatomic_set(&dev->intx_level, false);
    pci_set_irq(PCI_DEVICE(dev), 0);

    path = object_get_canonical_path(OBJECT(dev));
    pid = rp ? remote_process_pid(rp) : dev->peer_pid;
    qapi_event_send_remote_device_failed(path, DEVICE(dev)->id,
                                         rp ? remote_process_name(rp) : NULL,
                                         rp ? remote_process_devid(rp, dev) :
                                         NULL, pid != 0, pid, cause, reason);
    if (rp) {
        remote_process_device_failed(rp, dev, cause, reason);
    }
}

static void proxy_notify(void *opaque, MPQemuMsg *msg)
{
    PCIProxyDev *dev = opaque;

    if (dev->failed) {
        mpqemu_msg_close_fds(msg);
        return;
    }
    if (msg->hdr.cmd == MPQEMU_CMD_IOEVENTFD) {
        Error *err = NULL;

        if (!proxy_ioeventfd_apply(dev, msg, &err)) {
            /* a remote that does not keep to the protocol loses its device */
            proxy_link_break(&dev->link, REMOTE_DEVICE_FAILURE_CAUSE_PROTOCOL,
                             err);
        }
    } else if (msg->hdr.cmd == MPQEMU_CMD_MSI) {
        MSIMessage m = {
            .address = le64_to_cpu(msg->u.msi.address),
            .data = le32_to_cpu(msg->u.msi.data),
        };

        trace_proxy_msi(proxy_name(dev), m.address, m.data);
        if (proxy_msi_allowed(dev, m)) {
            /* delivered as the device's own write, as in-process */
            msi_send_message(PCI_DEVICE(dev), m);
        }
    } else {
        int level = !!le32_to_cpu(msg->u.set_irq.level);

        trace_proxy_set_irq(proxy_name(dev), level);
        qatomic_set(&dev->intx_level, level);
        pci_set_irq(PCI_DEVICE(dev), level);
    }
}

/* Whether a failure costs the guest only this access, or the device */
static void proxy_access_failed(PCIProxyDev *dev, Error *err)
{
    if (!dev->failed) {
        /* the remote refused this access but the link is healthy */
        warn_report_err_once(err);
    } else {
        error_free(err);
    }
}

/* A request whose failure only costs the guest this access */
static bool proxy_call(PCIProxyDev *dev, MPQemuMsg *req, MPQemuMsg *reply)
{
    Error *err = NULL;

    if (!proxy_is_connected(dev)) {
        return false;
    }
    if (!proxy_link_call(&dev->link, req, reply, &err)) {
        proxy_access_failed(dev, err);
        return false;
    }
    return true;
}

/* Config space bytes the main QEMU owns: BAR addresses and the IRQ line */
static bool proxy_config_local(uint32_t addr)
{
    return range_covers_byte(PCI_BASE_ADDRESS_0, 6 * 4, addr) ||
           range_covers_byte(PCI_ROM_ADDRESS, 4, addr) ||
           addr == PCI_INTERRUPT_LINE;
}

void proxy_config_access_init(MPQemuMsg *req, bool write, uint32_t addr,
                              int len, uint32_t val)
{
    mpqemu_msg_init(req, write ? MPQEMU_CMD_CONFIG_WRITE :
                    MPQEMU_CMD_CONFIG_READ, 0, 0, sizeof(MPQemuConfigAccess));
    req->u.config.offset = cpu_to_le32(addr);
    req->u.config.len = cpu_to_le32(len);
    req->u.config.value = cpu_to_le32(val);
}

/* For the guest: a failure costs it this access */
static bool proxy_config_remote_read(PCIProxyDev *dev, uint32_t addr, int len,
                                     uint32_t *val)
{
    MPQemuMsg req, reply;

    proxy_config_access_init(&req, false, addr, len, 0);
    if (!proxy_call(dev, &req, &reply)) {
        return false;
    }
    *val = le64_to_cpu(reply.u.value.value);
    return true;
}

static uint32_t proxy_config_read(PCIDevice *pdev, uint32_t addr, int len)
{
    PCIProxyDev *dev = PCI_PROXY_DEV(pdev);
    uint32_t val = 0;

    if (addr >= PCI_CONFIG_SPACE_SIZE) {
        return pci_default_read_config(pdev, addr, len);
    }
    if (!proxy_config_remote_read(dev, addr, len, &val)) {
        val = proxy_is_connected(dev) ? 0 : UINT32_MAX;
    }
    for (int i = 0; i < len; i++) {
        if (proxy_config_local(addr + i)) {
            val = deposit32(val, i * 8, 8, pdev->config[addr + i]);
        }
    }
    val &= len == 4 ? UINT32_MAX : (1u << (len * 8)) - 1;
    trace_proxy_config_read(proxy_name(dev), addr, len, val);
    return val;
}

static void proxy_config_write(PCIDevice *pdev, uint32_t addr, uint32_t val,
                               int len)
{
    PCIProxyDev *dev = PCI_PROXY_DEV(pdev);
    MPQemuMsg req, reply;

    trace_proxy_config_write(proxy_name(dev), addr, len, val);
    /* Locally: BAR mapping, command register effects, the IRQ line */
    pci_default_write_config(pdev, addr, val, len);
    proxy_msi_config_write(dev, addr, val, len);
    if (addr >= PCI_CONFIG_SPACE_SIZE) {
        return;
    }
    /* Remotely too: the device acts on command bits and its BAR addresses */
    proxy_config_access_init(&req, true, addr, len, val);
    proxy_call(dev, &req, &reply);
}

/*
 * A BAR access, usually from a vCPU without the BQL: the link has its own
 * lock, so a vCPU waiting for the remote holds up neither the other vCPUs,
 * nor other proxied devices, nor the main loop. False if the device is
 * offline or refused the access.
 */
static bool proxy_region_access(ProxyRegion *r, bool write, hwaddr addr,
                                unsigned size, uint64_t *value, bool posted)
{
    Error *err = NULL;

    if (proxy_link_bar_access(&r->dev->link, write, r->index, addr, size,
                              value, posted, &err)) {
        return true;
    }
    if (err) {
        BQL_LOCK_GUARD();
        proxy_access_failed(r->dev, err);
    }
    return false;
}

/*
 * Whether a write may complete before the device has seen it. As on PCI,
 * memory writes are posted and I/O writes are not; the link also keeps the
 * registers the device wants synchronous so, and posts those it wants
 * serial one at a time. While the device holds INTx asserted, writes wait,
 * because one of them may be the one that lowers it: the guest must not
 * see the line still up after acknowledging it. A guest that took the
 * interrupt sees the level that raised it.
 */
static bool proxy_write_may_post(ProxyRegion *r)
{
    return !r->io && !qatomic_read(&r->dev->intx_level);
}

static uint64_t proxy_region_read(void *opaque, hwaddr addr, unsigned size)
{
    ProxyRegion *r = opaque;
    uint64_t val = 0;

    if (!proxy_region_access(r, false, addr, size, &val, false)) {
        val = UINT64_MAX;
    }
    trace_proxy_bar_read(proxy_name(r->dev), r->index, addr, size, val);
    return val;
}

static void proxy_region_write(void *opaque, hwaddr addr, uint64_t val,
                               unsigned size)
{
    ProxyRegion *r = opaque;

    trace_proxy_bar_write(proxy_name(r->dev), r->index, addr, size, val);
    if (r->index == PCI_ROM_SLOT) {
        return;     /* the expansion ROM is read-only */
    }
    proxy_msi_bar_write(r->dev, r->index, addr, val, size);
    proxy_region_access(r, true, addr, size, &val, proxy_write_may_post(r));
}

static const MemoryRegionOps proxy_region_ops = {
    .read = proxy_region_read,
    .write = proxy_region_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
    .impl = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
};

static int proxy_connect(PCIProxyDev *dev, Error **errp)
{
    ERRP_GUARD();
    int fd = mpqemu_socket_connect(dev->socket_path, errp);

    if (fd < 0) {
        error_append_hint(errp, "Start the remote process first, with "
                          "-object x-remote-object,id=...,devid=...,socket=%s"
                          "\n", dev->socket_path);
    }
    return fd;
}

static uint64_t proxy_wanted_features(PCIProxyDev *dev)
{
    uint64_t always = MPQEMU_FEATURE_RUN_STATE | MPQEMU_FEATURE_MIGRATION;

    if (!dev->use_ring) {
        return always;
    }
    return always | MPQEMU_FEATURE_RING | MPQEMU_FEATURE_RING_INTX |
           (dev->use_posted_writes ? MPQEMU_FEATURE_POSTED_WRITES |
                                     MPQEMU_FEATURE_SERIAL_WRITES : 0) |
           (dev->use_shadow ? MPQEMU_FEATURE_SHADOW : 0) |
           (dev->use_ioeventfd ? MPQEMU_FEATURE_IOEVENTFD : 0) |
           (dev->use_halt_wait ? MPQEMU_FEATURE_NOTIFY_EVENTFD : 0);
}

static bool proxy_hello(PCIProxyDev *dev, Error **errp)
{
    ERRP_GUARD();
    MPQemuMsg req, reply;
    uint32_t version;

    mpqemu_msg_init(&req, MPQEMU_CMD_HELLO, 0, 0, sizeof(MPQemuHello));
    req.u.hello.version = cpu_to_le32(MPQEMU_VERSION);
    req.u.hello.features = cpu_to_le64(proxy_wanted_features(dev));
    if (!proxy_link_call(&dev->link, &req, &reply, errp)) {
        if (dev->link.dead) {
            error_append_hint(errp, "Is the remote process running? Its "
                              "own output says why it stopped\n");
        } else {
            /* it answered, and said no */
            error_append_hint(errp, "Both processes must run the same "
                              "mpqemu build\n");
        }
        return false;
    }
    version = le32_to_cpu(reply.u.hello.version);
    if (version != MPQEMU_VERSION) {
        error_setg(errp, "remote process speaks mpqemu protocol version %u, "
                   "this QEMU speaks version %d", version, MPQEMU_VERSION);
        error_append_hint(errp, "Run the same mpqemu build on both sides\n");
        return false;
    }
    /* the remote answers with what both sides support */
    dev->features = le64_to_cpu(reply.u.hello.features) &
                    le64_to_cpu(req.u.hello.features);
    if (!(dev->features & MPQEMU_FEATURE_RING)) {
        dev->features &= ~MPQEMU_FEATURES_RING_BASED;
    }
    memcpy(dev->remote_devid, reply.u.hello.devid, MPQEMU_DEVID_MAX);
    dev->remote_devid[MPQEMU_DEVID_MAX - 1] = 0;
    return true;
}

/*
 * Create the BARs and the ROM BAR the remote device has, with its sizes;
 * or, with @again (a reattach), check that the device has the same ones.
 */
static bool proxy_setup_regions(PCIProxyDev *dev, bool again, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(dev);
    MPQemuMsg req, reply;
    MPQemuDeviceInfo *info = &reply.u.device_info;

    mpqemu_msg_init(&req, MPQEMU_CMD_DEVICE_INFO, 0, 0, 0);
    if (!proxy_link_call(&dev->link, &req, &reply, errp)) {
        return false;
    }

    for (int i = 0; i < MPQEMU_NUM_REGIONS; i++) {
        uint64_t size = le64_to_cpu(info->region[i].size);
        uint32_t flags = le32_to_cpu(info->region[i].flags);
        bool io = flags & MPQEMU_REGION_IO;
        bool mem64 = flags & MPQEMU_REGION_MEM64;
        uint64_t limit = io ? 64 * KiB : mem64 ? 1ULL << 48 : 2 * GiB;
        g_autofree char *name = NULL;
        uint8_t type;

        if (size && (!is_power_of_2(size) || size > limit ||
            (flags & ~MPQEMU_REGION_FLAGS_ALL) ||
            (io && (flags & ~MPQEMU_REGION_IO)) ||
            (i == PCI_ROM_SLOT && flags) ||
            (mem64 && (i >= PCI_ROM_SLOT - 1 ||
                       le64_to_cpu(info->region[i + 1].size))))) {
            error_setg(errp, "remote device reports an invalid region %d "
                       "(size 0x%" PRIx64 ", flags 0x%x)", i, size, flags);
            return false;
        }
        if (io) {
            type = PCI_BASE_ADDRESS_SPACE_IO;
        } else {
            type = PCI_BASE_ADDRESS_SPACE_MEMORY |
                   (mem64 ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) |
                   (flags & MPQEMU_REGION_PREFETCH ?
                    PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
        }
        if (again) {
            if (size != dev->region[i].size ||
                (size && type != pdev->io_regions[i].type)) {
                error_setg(errp, "the device has another %s %d than the "
                           "one the proxy stands in for (size 0x%" PRIx64
                           ", was 0x%" PRIx64 ")",
                           i == PCI_ROM_SLOT ? "ROM BAR" : "BAR", i, size,
                           dev->region[i].size);
                return false;
            }
            continue;
        }
        if (!size) {
            continue;
        }
        dev->region[i] = (ProxyRegion) {
            .dev = dev, .size = size, .index = i, .io = io,
        };
        name = g_strdup_printf("%s-%s%d", proxy_name(dev),
                               i == PCI_ROM_SLOT ? "rom" : "bar", i);
        memory_region_init_io(&dev->region[i].mr, OBJECT(dev),
                              &proxy_region_ops, &dev->region[i], name, size);
        /* the link has its own lock; a vCPU waiting on it holds up nobody */
        memory_region_enable_lockless_io(&dev->region[i].mr);
        pci_register_bar(pdev, i, type, &dev->region[i].mr);
    }
    return true;
}

/* Whether one hint fits the device's regions and the shadow area */
static bool proxy_hint_valid(PCIProxyDev *dev, const MPQemuAccessHint *h,
                             uint32_t shadow_size)
{
    uint64_t offset = le64_to_cpu(h->offset);
    uint32_t size = le32_to_cpu(h->size);
    uint32_t shadow_offset = le32_to_cpu(h->shadow_offset);
    ProxyRegion *r;

    if (h->region >= PCI_ROM_SLOT || !dev->region[h->region].size || !size) {
        return false;
    }
    r = &dev->region[h->region];
    if (offset >= r->size || size > r->size - offset) {
        return false;
    }
    switch (h->kind) {
    case MPQEMU_HINT_SYNC_WRITE:
        return true;
    case MPQEMU_HINT_SERIAL_WRITE:
        return dev->features & MPQEMU_FEATURE_SERIAL_WRITES;
    case MPQEMU_HINT_SHADOW:
        return !r->io && is_power_of_2(h->width) && h->width <= 8 &&
               !(offset % h->width) && !(size % h->width) &&
               !(shadow_offset % 8) && shadow_offset <= shadow_size &&
               size <= shadow_size - shadow_offset &&
               !(h->flags & ~MPQEMU_SHADOW_BYTES) &&
               (!(h->flags & MPQEMU_SHADOW_BYTES) ||
                (h->min_size >= 1 && h->min_size <= h->max_size &&
                 h->max_size <= 8));
    default:
        return false;
    }
}

/*
 * Which registers stay synchronous and which reads the shadow copy serves,
 * as the remote device declares them. Kept by the link in host order.
 */
static bool proxy_setup_hints(PCIProxyDev *dev, Error **errp)
{
    ProxyLink *link = &dev->link;
    MPQemuMsg req, reply;
    MPQemuAccessHints *hints = &reply.u.hints;
    uint32_t nr, shadow_size;

    if (!(dev->features & MPQEMU_FEATURE_RING) ||
        !(dev->features & (MPQEMU_FEATURE_POSTED_WRITES |
                           MPQEMU_FEATURE_SHADOW))) {
        return true;
    }
    mpqemu_msg_init(&req, MPQEMU_CMD_ACCESS_HINTS, 0, 0, 0);
    if (!proxy_link_call(link, &req, &reply, errp)) {
        return false;
    }
    nr = le32_to_cpu(hints->nr_hints);
    shadow_size = le32_to_cpu(hints->shadow_size);
    if (nr > MPQEMU_MAX_HINTS || shadow_size > MPQEMU_SHADOW_MAX) {
        error_setg(errp, "remote device declares %u access hints and %u "
                   "bytes of shadow registers (at most %d and %d)", nr,
                   shadow_size, MPQEMU_MAX_HINTS, MPQEMU_SHADOW_MAX);
        return false;
    }
    for (uint32_t i = 0; i < nr; i++) {
        MPQemuAccessHint *h = &hints->hint[i];

        if (!proxy_hint_valid(dev, h, shadow_size) ||
            (h->kind == MPQEMU_HINT_SHADOW &&
             !(dev->features & MPQEMU_FEATURE_SHADOW))) {
            error_setg(errp, "remote device declares an invalid access hint "
                       "(kind %u, region %u, offset 0x%" PRIx64 ", %u bytes)",
                       h->kind, h->region, le64_to_cpu(h->offset),
                       le32_to_cpu(h->size));
            return false;
        }
        link->hints[i] = *h;
        link->hints[i].offset = le64_to_cpu(h->offset);
        link->hints[i].size = le32_to_cpu(h->size);
        link->hints[i].shadow_offset = le32_to_cpu(h->shadow_offset);
    }
    link->nr_hints = nr;
    link->shadow_size = shadow_size;
    return true;
}

/*
 * Take the identity of the remote device: IDs, class, interrupt pin; or,
 * with @again (a reattach), check that the device has the same one.
 */
static bool proxy_setup_identity(PCIProxyDev *dev, bool again, Error **errp)
{
    static const struct {
        uint32_t offset;
        int len;
        const char *what;
    } copied[] = {
        { PCI_VENDOR_ID, 4, "vendor and device ID" },
        { PCI_CLASS_REVISION, 4, "class code and revision" },
        { PCI_HEADER_TYPE, 1, "header type" },
        { PCI_SUBSYSTEM_VENDOR_ID, 4, "subsystem IDs" },
        { PCI_INTERRUPT_PIN, 1, "interrupt pin" },
    };
    PCIDevice *pdev = PCI_DEVICE(dev);

    for (int i = 0; i < ARRAY_SIZE(copied); i++) {
        uint32_t offset = copied[i].offset;
        MPQemuMsg req, reply;
        uint32_t val, was;

        proxy_config_access_init(&req, false, offset, copied[i].len, 0);
        if (!proxy_link_call(&dev->link, &req, &reply, errp)) {
            error_prepend(errp, "cannot read the remote device's config "
                          "space: ");
            return false;
        }
        val = le64_to_cpu(reply.u.value.value);
        if (copied[i].len == 1) {
            val &= 0xff;
            was = pdev->config[offset];
        } else {
            was = pci_get_long(pdev->config + offset);
        }
        /* the header type is checked below, and not kept */
        if (again && offset != PCI_HEADER_TYPE && val != was) {
            error_setg(errp, "the device has %s 0x%0*x, the one the proxy "
                       "stands in for had 0x%0*x", copied[i].what,
                       copied[i].len * 2, val, copied[i].len * 2, was);
            return false;
        }
        switch (offset) {
        case PCI_HEADER_TYPE:
            if ((val & ~PCI_HEADER_TYPE_MULTI_FUNCTION) !=
                PCI_HEADER_TYPE_NORMAL) {
                error_setg(errp, "remote device has header type 0x%x; only "
                           "endpoints (type 0) can be proxied", val);
                return false;
            }
            break;
        case PCI_INTERRUPT_PIN:
            if (val > PCI_NUM_PINS) {
                error_setg(errp, "remote device reports interrupt pin %u",
                           val);
                return false;
            }
            pdev->config[PCI_INTERRUPT_PIN] = val;
            break;
        default:
            pci_set_long(pdev->config + offset, val);
            break;
        }
    }
    return true;
}

bool proxy_is_connected(PCIProxyDev *dev)
{
    return !dev->failed && !dev->connecting;
}

const char *proxy_failure(PCIProxyDev *dev, RemoteDeviceFailureCause *cause)
{
    if (!dev->failed) {
        return NULL;
    }
    *cause = dev->failure_cause;
    return dev->link.broken ?: "not connected";
}

void proxy_detach_remote_process(PCIProxyDev *dev, Error *err)
{
    /* the event still names the process */
    proxy_link_break(&dev->link, REMOTE_DEVICE_FAILURE_CAUSE_ENDED, err);
    dev->remote_process = NULL;
}

void proxy_fail_with(PCIProxyDev *dev, RemoteDeviceFailureCause cause,
                     Error *err)
{
    proxy_link_break(&dev->link, cause, err);
}

/* Who is at the other end of a socket we connected: the listener */
static pid_t proxy_socket_peer_pid(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        return 0;
    }
    return cred.pid;
}

/* Our end of the link, from whichever of fd=, socket= or remote= is set */
static int proxy_open_link(PCIProxyDev *dev, Error **errp)
{
    RemoteProcess *rp;
    int fd;

    dev->peer_pid = 0;
    if (!!dev->fd_str + !!dev->socket_path + !!dev->remote_id != 1) {
        error_setg(errp, "x-pci-proxy-dev needs exactly one of fd=<socket fd>,"
                   " socket=<path> and remote=<x-remote-process id> to reach "
                   "its remote process");
        return -1;
    }
    if (!!dev->remote_id != !!dev->devid) {
        error_setg(errp, "x-pci-proxy-dev: remote= and devid= (the id of the "
                   "device in the remote process) go together");
        return -1;
    }
    if (dev->fd_str) {
        /* a socketpair's peer credentials are its creator's: not asked */
        return mpqemu_socket_from_param(dev->fd_str, "the remote process's "
                                        "x-remote-object", errp);
    }
    if (dev->socket_path) {
        fd = proxy_connect(dev, errp);
        if (fd >= 0) {
            dev->peer_pid = proxy_socket_peer_pid(fd);
        }
        return fd;
    }
    rp = remote_process_find(dev->remote_id, errp);
    if (!rp) {
        return -1;
    }
    fd = remote_process_plug(rp, dev, dev->devid, errp);
    if (fd >= 0) {
        dev->remote_process = rp;
    }
    return fd;
}

/* Close the link, which halted vCPUs no longer wait on */
static void proxy_unlink(PCIProxyDev *dev)
{
    proxy_halt_wait_remove(&dev->link);
    proxy_link_close(&dev->link);
}

/* @unplug: the device goes away with its proxy, not just the link */
static void proxy_close_link(PCIProxyDev *dev, bool unplug)
{
    proxy_unlink(dev);
    if (dev->remote_process) {
        remote_process_unplug(dev->remote_process, dev, unplug);
        dev->remote_process = NULL;
    }
}

/*
 * Opens the link to the device and sets up everything the fast path and
 * DMA need. The first time (realize) the proxy takes the device's identity
 * and BARs; @again (a reattach), it checks that they are the same. The
 * guest sees the device offline meanwhile.
 */
static bool proxy_connect_device(PCIProxyDev *dev, bool again, Error **errp)
{
    int fd;

    fd = proxy_open_link(dev, errp);
    if (fd < 0) {
        return false;
    }
    qemu_socket_set_nonblock(fd);
    dev->failed = false;
    dev->connecting = true;
    proxy_link_open(&dev->link, fd, dev->timeout_ms, proxy_notify, proxy_fail,
                    dev);

    if (!proxy_hello(dev, errp) ||
        !proxy_setup_identity(dev, again, errp) ||
        !proxy_msi_discover(dev, errp) ||
        !proxy_setup_regions(dev, again, errp) ||
        !proxy_setup_hints(dev, errp) ||
        !proxy_memory_start(&dev->memory, &dev->link, proxy_name(dev),
                            dev->features & MPQEMU_FEATURE_MIGRATION, errp)) {
        goto fail;
    }
    if (dev->features & MPQEMU_FEATURE_RING) {
        Error *err = NULL;

        /* the socket remains, and serves BAR accesses if this fails */
        if (!proxy_ring_setup(&dev->link,
                              dev->features & MPQEMU_FEATURE_RING_INTX,
                              dev->features & MPQEMU_FEATURE_NOTIFY_EVENTFD,
                              &err)) {
            warn_reportf_err(err, "x-pci-proxy-dev %s: BAR accesses go "
                             "through the socket: ", proxy_name(dev));
            dev->features &= ~MPQEMU_FEATURES_RING_BASED;
        }
    }
    /*
     * A device hotplugged or reattached while the VM is stopped waits; one
     * whose process waits for a migration to end may start if the VM runs.
     */
    if (!proxy_runstate_send(dev, runstate_is_running(), errp) ||
        !proxy_migration_connected(dev, errp)) {
        goto fail;
    }
    /* a notification refused on the way (a doorbell) ended the link */
    if (dev->failed) {
        error_setg(errp, "%s", dev->link.broken ?: "the remote process "
                   "failed");
        goto fail;
    }
    dev->connecting = false;
    proxy_link_open_bars(&dev->link,
                         dev->features & MPQEMU_FEATURE_POSTED_WRITES);
    if (dev->use_halt_wait) {
        proxy_halt_wait_add(&dev->link);
    }
    return true;

fail:
    proxy_memory_stop(&dev->memory);
    proxy_ioeventfd_clear(dev);
    proxy_close_link(dev, false);
    dev->failed = true;
    dev->connecting = false;
    return false;
}

static void proxy_realize(PCIDevice *pdev, Error **errp)
{
    PCIProxyDev *dev = PCI_PROXY_DEV(pdev);

    if (!dev->timeout_ms) {
        error_setg(errp, "timeout must be at least 1 ms");
        return;
    }
    if (proxy_connect_device(dev, false, errp)) {
        proxy_runstate_init(dev);
        proxy_migration_init(dev);
    }
}

/*
 * x-reattach-proxy: the proxy failed, and the device it stood in for is
 * back, or a replacement for it. The device starts out reset; the guest
 * finds it as its driver's error handling expects to after a reset, with
 * the command register (memory decoding, bus mastering) it last wrote.
 */
static bool proxy_reattach(PCIProxyDev *dev, const char *remote,
                           const char *devid, const char *socket,
                           Error **errp)
{
    ERRP_GUARD();
    g_autofree char *old_devid = NULL;
    RemoteProcess *old_rp, *new_rp;
    MPQemuMsg req, reply;

    if (!dev->failed || dev->connecting) {
        error_setg(errp, "x-pci-proxy-dev %s is connected; only a failed "
                   "proxy can be reattached", proxy_name(dev));
        return false;
    }
    if (socket && (remote || devid)) {
        error_setg(errp, "give either remote (and devid) or socket");
        return false;
    }
    if (!socket && !remote && !dev->remote_id && !dev->socket_path) {
        error_setg(errp, "x-pci-proxy-dev %s was given its connection as a "
                   "file descriptor; say where the device is now with "
                   "remote or socket", proxy_name(dev));
        return false;
    }
    if (remote && !devid && !dev->devid) {
        error_setg(errp, "devid is needed: x-pci-proxy-dev %s had none",
                   proxy_name(dev));
        return false;
    }

    /* a process that cannot serve it now is refused before anything changes */
    old_rp = dev->remote_process;
    new_rp = remote ? remote_process_find(remote, errp) :
             socket ? NULL : old_rp;
    if (new_rp && !remote_process_check_running(new_rp, errp)) {
        error_prepend(errp, "x-pci-proxy-dev %s stays offline: ",
                      proxy_name(dev));
        return false;
    }
    if (*errp) {
        return false;
    }

    /*
     * What is left of the link goes. The proxy leaves its old process once
     * the new device answers; right away if it is the same process, which
     * then creates the link anew.
     */
    proxy_memory_stop(&dev->memory);
    proxy_ioeventfd_clear(dev);
    proxy_unlink(dev);
    if (old_rp == new_rp) {
        proxy_close_link(dev, false);
        old_rp = NULL;
    }
    dev->remote_process = NULL;

    if (socket) {
        g_free(dev->socket_path);
        dev->socket_path = g_strdup(socket);
        g_clear_pointer(&dev->remote_id, g_free);
        g_clear_pointer(&dev->devid, g_free);
        g_clear_pointer(&dev->fd_str, g_free);
    } else if (remote || devid) {
        old_devid = dev->devid;
        dev->devid = g_strdup(devid ?: old_devid);
        if (remote) {
            g_free(dev->remote_id);
            dev->remote_id = g_strdup(remote);
        }
        g_clear_pointer(&dev->socket_path, g_free);
        g_clear_pointer(&dev->fd_str, g_free);
    }

    if (!proxy_connect_device(dev, true, errp)) {
        error_prepend(errp, "x-pci-proxy-dev %s stays offline: ",
                      proxy_name(dev));
        dev->remote_process = old_rp;
        return false;
    }
    if (old_rp) {
        remote_process_unplug(old_rp, dev, false);
    }
    proxy_config_access_init(&req, true, PCI_COMMAND, 2,
                             pci_get_word(PCI_DEVICE(dev)->config +
                                          PCI_COMMAND));
    if (!proxy_link_call(&dev->link, &req, &reply, errp)) {
        error_prepend(errp, "x-pci-proxy-dev %s: cannot restore the command "
                      "register: ", proxy_name(dev));
        /* failed, or the device refused: either way it is not usable */
        if (!dev->failed) {
            proxy_fail_with(dev, REMOTE_DEVICE_FAILURE_CAUSE_PROTOCOL,
                            error_copy(*errp));
        }
        return false;
    }
    trace_proxy_reattached(proxy_name(dev), dev->remote_id ?: dev->socket_path,
                           dev->devid ?: "");
    info_report("x-pci-proxy-dev %s: connected again, to %s%s%s",
                proxy_name(dev), dev->remote_id ?: dev->socket_path,
                dev->devid ? " device " : "", dev->devid ?: "");
    return true;
}

static void proxy_exit(PCIDevice *pdev)
{
    PCIProxyDev *dev = PCI_PROXY_DEV(pdev);

    proxy_runstate_cleanup(dev);
    proxy_migration_cleanup(dev);
    proxy_memory_stop(&dev->memory);
    proxy_ioeventfd_clear(dev);
    proxy_close_link(dev, true);
    proxy_msi_cleanup(dev);
}

static void proxy_reset(DeviceState *d)
{
    PCIProxyDev *dev = PCI_PROXY_DEV(d);
    MPQemuMsg req, reply;

    trace_proxy_reset(proxy_name(dev));
    proxy_msi_reset(dev);
    mpqemu_msg_init(&req, MPQEMU_CMD_RESET, 0, 0, 0);
    proxy_call(dev, &req, &reply);
}

static void proxy_instance_init(Object *obj)
{
    proxy_link_init(&PCI_PROXY_DEV(obj)->link);
}

static void proxy_instance_finalize(Object *obj)
{
    proxy_link_destroy(&PCI_PROXY_DEV(obj)->link);
}

static const Property proxy_properties[] = {
    DEFINE_PROP_STRING("fd", PCIProxyDev, fd_str),
    DEFINE_PROP_STRING("socket", PCIProxyDev, socket_path),
    DEFINE_PROP_STRING("remote", PCIProxyDev, remote_id),
    DEFINE_PROP_STRING("devid", PCIProxyDev, devid),
    DEFINE_PROP_UINT32("timeout", PCIProxyDev, timeout_ms,
                       PROXY_DEFAULT_TIMEOUT_MS),
    DEFINE_PROP_BOOL("ring", PCIProxyDev, use_ring, true),
    DEFINE_PROP_BOOL("posted-writes", PCIProxyDev, use_posted_writes, true),
    DEFINE_PROP_BOOL("shadow", PCIProxyDev, use_shadow, true),
    DEFINE_PROP_BOOL("ioeventfd", PCIProxyDev, use_ioeventfd, true),
    DEFINE_PROP_BOOL("halt-wait", PCIProxyDev, use_halt_wait, true),
};

static void proxy_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);
    PCIProxyDevClass *pc = PCI_PROXY_DEV_CLASS(klass);

    pc->reattach = proxy_reattach;
    k->realize = proxy_realize;
    k->exit = proxy_exit;
    k->config_read = proxy_config_read;
    k->config_write = proxy_config_write;
    device_class_set_legacy_reset(dc, proxy_reset);
    device_class_set_props(dc, proxy_properties);
    dc->vmsd = &vmstate_proxy;
    dc->desc = "Proxy for a PCI device emulated in a remote process";
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    proxy_msi_class_init(klass);
}

static const TypeInfo proxy_info = {
    .name = TYPE_PCI_PROXY_DEV,
    .parent = TYPE_PCI_DEVICE,
    .instance_size = sizeof(PCIProxyDev),
    .class_size = sizeof(PCIProxyDevClass),
    .instance_init = proxy_instance_init,
    .instance_finalize = proxy_instance_finalize,
    .class_init = proxy_class_init,
    .interfaces = (InterfaceInfo[]) {
        { INTERFACE_CONVENTIONAL_PCI_DEVICE },
        { },
    },
};

static void proxy_register_types(void)
{
    type_register_static(&proxy_info);
}

type_init(proxy_register_types)
module_obj(TYPE_PCI_PROXY_DEV);
module_kconfig(PCI);
