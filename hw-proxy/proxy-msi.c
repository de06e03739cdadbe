/*
 * The MSI and MSI-X messages a remote device may send: those the guest
 * programmed, as the proxy saw them pass. Others are refused and counted.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/bswap.h"
#include "hw/pci/pci_regs.h"
#include "migration/vmstate.h"
#include "qapi/visitor.h"
#include "proxy.h"
#include "trace.h"

#define PROXY_MSIX_ENTRY_SIZE 16
#define PROXY_MAX_CAPS 48       /* a list longer than config space holds */

static bool proxy_msi_cap_read(PCIProxyDev *dev, uint32_t addr, int len,
                               uint32_t *val, Error **errp)
{
    MPQemuMsg req, reply;

    proxy_config_access_init(&req, false, addr, len, 0);
    if (!proxy_link_call(&dev->link, &req, &reply, errp)) {
        error_prepend(errp, "cannot read the device's capability list: ");
        return false;
    }
    *val = le64_to_cpu(reply.u.value.value) &
           (len == 4 ? UINT32_MAX : (1u << (8 * len)) - 1);
    return true;
}

/*
 * Where the device's MSI and MSI-X capabilities are, and their fixed
 * parts, asked once the proxy is connected: the guest learns them the
 * same way, so it programs the places watched here.
 */
bool proxy_msi_discover(PCIProxyDev *dev, Error **errp)
{
    ERRP_GUARD();
    ProxyMsiGuard *g = &dev->msi;
    uint32_t status, pos, id, flags, table;
    uint32_t entries = 0;

    g->msi_cap = g->msix_cap = 0;
    if (!proxy_msi_cap_read(dev, PCI_STATUS, 2, &status, errp)) {
        return false;
    }
    if (status & PCI_STATUS_CAP_LIST) {
        if (!proxy_msi_cap_read(dev, PCI_CAPABILITY_LIST, 1, &pos, errp)) {
            return false;
        }
        for (int n = 0; pos >= PCI_STD_HEADER_SIZEOF && n < PROXY_MAX_CAPS;
             n++) {
            pos &= ~3u;
            if (pos > PCI_CONFIG_SPACE_SIZE - PCI_MSI_DATA_64 - 2) {
                break;      /* no room for a capability we care about */
            }
            if (!proxy_msi_cap_read(dev, pos, 1, &id, errp) ||
                !proxy_msi_cap_read(dev, pos + PCI_MSI_FLAGS, 2, &flags,
                                    errp)) {
                return false;
            }
            if (id == PCI_CAP_ID_MSI && !g->msi_cap) {
                g->msi_cap = pos;
                g->msi_64bit = flags & PCI_MSI_FLAGS_64BIT;
            } else if (id == PCI_CAP_ID_MSIX && !g->msix_cap) {
                if (!proxy_msi_cap_read(dev, pos + PCI_MSIX_TABLE, 4, &table,
                                        errp)) {
                    return false;
                }
                g->msix_cap = pos;
                g->msix_bir = table & PCI_MSIX_FLAGS_BIRMASK;
                g->msix_table_offset = table & ~PCI_MSIX_FLAGS_BIRMASK;
                entries = (flags & PCI_MSIX_FLAGS_QSIZE) + 1;
            }
            if (!proxy_msi_cap_read(dev, pos + PCI_CAP_LIST_NEXT, 1, &pos,
                                    errp)) {
                return false;
            }
        }
    }
    if (entries * PROXY_MSIX_ENTRY_SIZE != g->msix_table_size) {
        /* another device than before: nothing of its table is known */
        g_free(g->msix_table);
        g_free(g->msix_previous);
        g->msix_table_size = entries * PROXY_MSIX_ENTRY_SIZE;
        g->msix_table = g_malloc0(g->msix_table_size);
        g->msix_previous = g_new0(MSIMessage, entries);
        g->msix_entries = entries;
    }
    trace_proxy_msi_discovered(proxy_name(dev), g->msi_cap, g->msix_cap,
                               g->msix_bir, g->msix_table_offset, entries);
    return true;
}

/* The message MSI sends for vector 0, and how many vectors it has */
static MSIMessage proxy_msi_message(ProxyMsiGuard *g, unsigned *nvec)
{
    uint8_t *cap = g->config + g->msi_cap;
    uint16_t flags = lduw_le_p(cap + PCI_MSI_FLAGS);
    MSIMessage m = { .address = ldl_le_p(cap + PCI_MSI_ADDRESS_LO) };

    if (g->msi_64bit) {
        m.address |= (uint64_t)ldl_le_p(cap + PCI_MSI_ADDRESS_HI) << 32;
        m.data = lduw_le_p(cap + PCI_MSI_DATA_64);
    } else {
        m.data = lduw_le_p(cap + PCI_MSI_DATA_32);
    }
    *nvec = 1u << MIN((flags & PCI_MSI_FLAGS_QSIZE) >> 4, 5);
    return m;
}

static MSIMessage proxy_msix_message(ProxyMsiGuard *g, unsigned i)
{
    uint8_t *entry = g->msix_table + i * PROXY_MSIX_ENTRY_SIZE;

    return (MSIMessage) {
        .address = ldq_le_p(entry + PCI_MSIX_ENTRY_LOWER_ADDR),
        .data = ldl_le_p(entry + PCI_MSIX_ENTRY_DATA),
    };
}

static bool proxy_msi_same(MSIMessage a, MSIMessage b)
{
    return a.address == b.address && a.data == b.data;
}

/* @m is @programmed, which the guest did program: all zeroes it did not */
static bool proxy_msi_matches(MSIMessage m, MSIMessage programmed)
{
    return (programmed.address || programmed.data) &&
           proxy_msi_same(m, programmed);
}

/* The guest writes config space: follow its MSI programming */
void proxy_msi_config_write(PCIProxyDev *dev, uint32_t addr, uint32_t val,
                            int len)
{
    ProxyMsiGuard *g = &dev->msi;
    MSIMessage before = {};
    unsigned nvec;

    if (addr >= PCI_CONFIG_SPACE_SIZE || len > PCI_CONFIG_SPACE_SIZE - addr) {
        return;
    }
    if (g->msi_cap) {
        before = proxy_msi_message(g, &nvec);
    }
    stn_le_p(g->config + addr, len, val);
    if (g->msi_cap && !proxy_msi_same(before, proxy_msi_message(g, &nvec))) {
        /* a message sent before the device saw the change is still good */
        g->msi_previous = before;
    }
}

/* Whether a BAR write lands in the MSI-X table */
static bool proxy_msix_table_hit(ProxyMsiGuard *g, unsigned region,
                                 hwaddr addr, unsigned size)
{
    uint64_t start = g->msix_table_offset;

    return g->msix_cap && region == g->msix_bir && addr + size > start &&
           addr < start + g->msix_table_size;
}

/*
 * The guest writes a BAR, from a vCPU and usually without the BQL: follow
 * its MSI-X table programming. Where the table is changes only while the
 * device is set up, when its BARs take no writes; a write into it takes
 * the BQL, which guards the copy, and looks again.
 */
void proxy_msi_bar_write(PCIProxyDev *dev, unsigned region, hwaddr addr,
                         uint64_t val, unsigned size)
{
    ProxyMsiGuard *g = &dev->msi;
    uint64_t start;
    unsigned first, last;

    if (!proxy_msix_table_hit(g, region, addr, size)) {
        return;
    }
    BQL_LOCK_GUARD();
    if (!proxy_msix_table_hit(g, region, addr, size)) {
        return;
    }
    start = g->msix_table_offset;
    first = (MAX(addr, start) - start) / PROXY_MSIX_ENTRY_SIZE;
    last = (MIN(addr + size, start + g->msix_table_size) - 1 - start) /
           PROXY_MSIX_ENTRY_SIZE;
    for (unsigned i = first; i <= last; i++) {
        g->msix_previous[i] = proxy_msix_message(g, i);
    }
    for (unsigned b = 0; b < size; b++) {
        if (addr + b >= start && addr + b < start + g->msix_table_size) {
            g->msix_table[addr + b - start] = val >> (8 * b);
        }
    }
}

static bool proxy_msi_programmed(ProxyMsiGuard *g, MSIMessage m)
{
    if (g->msi_cap &&
        (lduw_le_p(g->config + g->msi_cap + PCI_MSI_FLAGS) &
         PCI_MSI_FLAGS_ENABLE)) {
        unsigned nvec;
        MSIMessage base = proxy_msi_message(g, &nvec);

        if ((base.address || base.data) && m.address == base.address &&
            m.data <= UINT16_MAX &&
            (m.data & ~(nvec - 1)) == (base.data & ~(nvec - 1))) {
            return true;
        }
        if (proxy_msi_matches(m, g->msi_previous)) {
            return true;
        }
    }
    if (g->msix_cap &&
        (lduw_le_p(g->config + g->msix_cap + PCI_MSIX_FLAGS) &
         PCI_MSIX_FLAGS_ENABLE)) {
        for (unsigned i = 0; i < g->msix_entries; i++) {
            if (proxy_msi_matches(m, proxy_msix_message(g, i)) ||
                proxy_msi_matches(m, g->msix_previous[i])) {
                return true;
            }
        }
    }
    return false;
}

/*
 * Whether the remote may send @m. A device model sends only what the guest
 * programmed; anything else would let a compromised one write anywhere in
 * the guest's physical address space, or inject any interrupt.
 */
bool proxy_msi_allowed(PCIProxyDev *dev, MSIMessage m)
{
    ProxyMsiGuard *g = &dev->msi;

    if (proxy_msi_programmed(g, m)) {
        return true;
    }
    g->refused++;
    trace_proxy_msi_refused(proxy_name(dev), m.address, m.data, g->refused);
    if (g->refused == 1) {
        warn_report("x-pci-proxy-dev %s: refused an MSI (address 0x%" PRIx64
                    " data 0x%x) the guest did not program; the remote "
                    "process may be compromised (count in x-refused-msis)",
                    proxy_name(dev), m.address, m.data);
    }
    return false;
}

/* A reset disables MSI and MSI-X, and clears the table */
void proxy_msi_reset(PCIProxyDev *dev)
{
    ProxyMsiGuard *g = &dev->msi;

    memset(g->config, 0, sizeof(g->config));
    if (g->msix_table) {    /* a device without MSI-X has none */
        memset(g->msix_table, 0, g->msix_table_size);
        memset(g->msix_previous, 0, g->msix_entries * sizeof(MSIMessage));
    }
    g->msi_previous = (MSIMessage) {};
}

void proxy_msi_cleanup(PCIProxyDev *dev)
{
    g_clear_pointer(&dev->msi.msix_table, g_free);
    g_clear_pointer(&dev->msi.msix_previous, g_free);
    dev->msi.msix_table_size = 0;
    dev->msi.msix_entries = 0;
}

/* The guest's programming travels with the device's state */
static int proxy_msi_pre_save(void *opaque)
{
    ProxyMsiGuard *g = opaque;

    g->migrated_table = g->msix_table;
    g->migrated_size = g->msix_table_size;
    return 0;
}

static int proxy_msi_post_save(void *opaque)
{
    ProxyMsiGuard *g = opaque;

    g->migrated_table = NULL;
    return 0;
}

static int proxy_msi_pre_load(void *opaque)
{
    ProxyMsiGuard *g = opaque;

    g_clear_pointer(&g->migrated_table, g_free);
    return 0;
}

static int proxy_msi_post_load(void *opaque, int version_id)
{
    ProxyMsiGuard *g = opaque;
    g_autofree uint8_t *table = g_steal_pointer(&g->migrated_table);

    if (g->migrated_size != g->msix_table_size) {
        error_report("x-pci-proxy-dev: the source's device has %u MSI-X "
                     "entries, the device here %u",
                     g->migrated_size / PROXY_MSIX_ENTRY_SIZE,
                     g->msix_entries);
        return -EINVAL;
    }
    if (g->msix_entries) {  /* else there is no table, here or there */
        memcpy(g->msix_table, table, g->msix_table_size);
        memset(g->msix_previous, 0, g->msix_entries * sizeof(MSIMessage));
    }
    g->msi_previous = (MSIMessage) {};
    return 0;
}

const VMStateDescription vmstate_proxy_msi = {
    .name = "x-pci-proxy-dev/msi",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = proxy_msi_pre_save,
    .post_save = proxy_msi_post_save,
    .pre_load = proxy_msi_pre_load,
    .post_load = proxy_msi_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT8_ARRAY(config, ProxyMsiGuard, PCI_CONFIG_SPACE_SIZE),
        VMSTATE_UINT32(migrated_size, ProxyMsiGuard),
        VMSTATE_VBUFFER_ALLOC_UINT32(migrated_table, ProxyMsiGuard, 0, NULL,
                                     migrated_size),
        VMSTATE_END_OF_LIST()
    },
};

static void proxy_msi_get_refused(Object *obj, Visitor *v, const char *name,
                                  void *opaque, Error **errp)
{
    uint64_t refused = PCI_PROXY_DEV(obj)->msi.refused;

    visit_type_uint64(v, name, &refused, errp);
}

void proxy_msi_class_init(ObjectClass *oc)
{
    object_class_property_add(oc, "x-refused-msis", "uint64",
                              proxy_msi_get_refused, NULL, NULL, NULL);
    object_class_property_set_description(oc, "x-refused-msis",
        "MSI messages the remote sent that the guest did not program");
}
