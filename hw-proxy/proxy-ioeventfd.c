/*
 * Doorbells of a proxied device that the remote wants as eventfds: the
 * proxy's BAR signals them for matching writes, without a round trip.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "qemu/bswap.h"
#include "mpqemu/socket.h"
#include "proxy.h"
#include "trace.h"

static const char *proxy_ioeventfd_owner(PCIProxyDev *dev)
{
    DeviceState *d = DEVICE(dev);

    return d->id ? d->id : object_get_typename(OBJECT(dev));
}

static void proxy_ioeventfd_remove(PCIProxyDev *dev, ProxyIoeventfd *pe)
{
    trace_proxy_ioeventfd(proxy_ioeventfd_owner(dev), 0, pe->region,
                          pe->offset, pe->size, pe->match_data, pe->data);
    memory_region_del_eventfd(&dev->region[pe->region].mr, pe->offset,
                              pe->size, pe->match_data, pe->data,
                              &pe->notifier);
    event_notifier_cleanup(&pe->notifier);
    QLIST_REMOVE(pe, next);
    dev->nr_ioeventfds--;
    g_free(pe);
}

/*
 * Whether two doorbells would be the same to KVM, which refuses the second
 * (and QEMU then aborts): same address, sizes that match or one of them
 * any size, and values that match or one of them any value.
 */
static bool proxy_ioeventfd_collide(const ProxyIoeventfd *pe, uint64_t offset,
                                    uint8_t size, bool match, uint64_t data)
{
    return pe->offset == offset &&
           (!pe->size || !size || pe->size == size) &&
           (!pe->match_data || !match || pe->data == data);
}

/*
 * Apply an IOEVENTFD notification, with the BQL. Everything a remote sends
 * is checked: neither a doorbell KVM would refuse nor one outside the
 * device gets this far.
 */
bool proxy_ioeventfd_apply(PCIProxyDev *dev, MPQemuMsg *msg,
                           Error **errp)
{
    const MPQemuIoeventfd *ev = &msg->u.ioeventfd;
    uint64_t offset = le64_to_cpu(ev->offset);
    uint64_t data = le64_to_cpu(ev->data);
    bool match = ev->flags & MPQEMU_IOEVENTFD_DATAMATCH;
    bool add = ev->flags & MPQEMU_IOEVENTFD_ADD;
    ProxyRegion *r = ev->region < PCI_ROM_SLOT ? &dev->region[ev->region]
                                               : NULL;
    ProxyIoeventfd *pe;

    if (!(dev->features & MPQEMU_FEATURE_IOEVENTFD)) {
        error_setg(errp, "the remote process sent a doorbell eventfd that "
                   "was not negotiated");
        goto refuse;
    }
    if (!r || !r->size || (ev->size != 0 && ev->size != 1 && ev->size != 2 &&
                           ev->size != 4 && ev->size != 8) ||
        offset >= r->size || MAX(ev->size, 1) > r->size - offset) {
        error_setg(errp, "the remote process sent a doorbell of %u bytes at "
                   "0x%" PRIx64 " of region %u, outside the device",
                   ev->size, offset, ev->region);
        goto refuse;
    }

    QLIST_FOREACH(pe, &dev->ioeventfds, next) {
        if (pe->region != ev->region ||
            !proxy_ioeventfd_collide(pe, offset, ev->size, match, data)) {
            continue;
        }
        if (!add && pe->size == ev->size && pe->match_data == match &&
            (!match || pe->data == data)) {
            proxy_ioeventfd_remove(dev, pe);
            return true;
        }
        if (add) {
            error_setg(errp, "the remote process sent a doorbell at 0x%"
                       PRIx64 " of region %u that collides with one it "
                       "already has", offset, ev->region);
            goto refuse;
        }
    }
    if (!add) {
        error_setg(errp, "the remote process removed a doorbell at 0x%"
                   PRIx64 " of region %u that it does not have", offset,
                   ev->region);
        return false;
    }
    if (dev->nr_ioeventfds >= MPQEMU_MAX_IOEVENTFDS) {
        error_setg(errp, "the remote process sent more than %d doorbells",
                   MPQEMU_MAX_IOEVENTFDS);
        goto refuse;
    }
    if (!mpqemu_fd_is_eventfd(msg->fds[0])) {
        error_setg(errp, "the remote process sent a doorbell that is not an "
                   "eventfd");
        goto refuse;
    }

    pe = g_new0(ProxyIoeventfd, 1);
    event_notifier_init_fd(&pe->notifier, msg->fds[0]);
    pe->offset = offset;
    pe->data = data;
    pe->region = ev->region;
    pe->size = ev->size;
    pe->match_data = match;
    QLIST_INSERT_HEAD(&dev->ioeventfds, pe, next);
    dev->nr_ioeventfds++;
    trace_proxy_ioeventfd(proxy_ioeventfd_owner(dev), 1, pe->region, offset,
                          pe->size, match, data);
    memory_region_add_eventfd(&r->mr, offset, pe->size, match, data,
                              &pe->notifier);
    return true;

refuse:
    mpqemu_msg_close_fds(msg);
    return false;
}

/* With the BQL: writes reach the remote through the link again */
void proxy_ioeventfd_clear(PCIProxyDev *dev)
{
    ProxyIoeventfd *pe, *tmp;

    memory_region_transaction_begin();
    QLIST_FOREACH_SAFE(pe, &dev->ioeventfds, next, tmp) {
        proxy_ioeventfd_remove(dev, pe);
    }
    memory_region_transaction_commit();
}
