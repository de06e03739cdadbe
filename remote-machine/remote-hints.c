/*
 * Access hints of the device models the remote machine knows: registers
 * whose writes must stay synchronous or be posted one at a time, and
 * registers that can be shadowed.
 *
 * A register may be shadowed only if reading it has no side effects. The
 * remote marks the copy stale whenever the device handles an access and
 * before it sends a notification (an interrupt); a device that also
 * changes shadowed registers on its own, from a disk request's completion
 * or a timer, says so (shadow_autonomous), and then the copy is marked
 * stale also before the remote's main loop runs anything at all. Models
 * not listed here get only the MSI-X hint: every read goes to the device,
 * and other memory writes are posted.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "hw/pci/msix.h"
#include "hw/virtio/virtio-pci.h"
#include "standard-headers/linux/virtio_pci.h"
#include "remote.h"

typedef struct RemoteHintList {
    RemoteHints *out;
    bool sync;              /* posted writes were negotiated */
    bool serial;            /* ... and serial ones */
    bool shadow;            /* the shadow was negotiated */
} RemoteHintList;

static void add_write_hint(RemoteHintList *l, uint8_t kind, uint8_t region,
                           uint64_t offset, uint32_t size)
{
    RemoteHints *out = l->out;

    if (!l->sync || out->nr == MPQEMU_MAX_HINTS) {
        return;
    }
    out->hint[out->nr++] = (MPQemuAccessHint) {
        .region = region, .kind = kind, .offset = offset, .size = size,
    };
}

static void add_sync(RemoteHintList *l, uint8_t region, uint64_t offset,
                     uint32_t size)
{
    add_write_hint(l, MPQEMU_HINT_SYNC_WRITE, region, offset, size);
}

/* Synchronous where the proxy cannot post such writes one at a time */
static void add_serial(RemoteHintList *l, uint8_t region, uint64_t offset,
                       uint32_t size)
{
    add_write_hint(l, l->serial ? MPQEMU_HINT_SERIAL_WRITE
                                : MPQEMU_HINT_SYNC_WRITE,
                   region, offset, size);
}

/* @bytes: the range reads as memory, for accesses of @min to @max bytes */
static void add_shadow(RemoteHintList *l, uint8_t region, uint64_t offset,
                       uint32_t size, uint8_t width, bool bytes, uint8_t min,
                       uint8_t max)
{
    RemoteHints *out = l->out;

    if (!l->shadow || !size || out->nr == MPQEMU_MAX_HINTS ||
        out->shadow_size + size > MPQEMU_SHADOW_MAX) {
        return;
    }
    out->hint[out->nr++] = (MPQemuAccessHint) {
        .region = region, .kind = MPQEMU_HINT_SHADOW,
        .offset = offset, .size = size, .shadow_offset = out->shadow_size,
        .width = width, .flags = bytes ? MPQEMU_SHADOW_BYTES : 0,
        .min_size = bytes ? min : 0, .max_size = bytes ? max : 0,
    };
    out->shadow_size += ROUND_UP(size, 8);
}

/*
 * NVMe (hw/nvme): the controller registers are a plain structure that reads
 * return as memory. CAP, VS, CC and the admin queue registers change only
 * when the guest writes them, or on reset. CSTS is not shadowed: the
 * controller sets its fatal status bit on its own, without an interrupt.
 * The interrupt mask registers stay synchronous: masking takes effect
 * before the vCPU goes on.
 */
static void nvme_hints(PCIDevice *pdev, RemoteHintList *l)
{
    add_shadow(l, 0, 0x00, 0x0c, 4, true, 4, 8);      /* CAP, VS */
    add_sync(l, 0, 0x0c, 0x08);                       /* INTMS, INTMC */
    add_shadow(l, 0, 0x14, 0x04, 4, true, 4, 4);      /* CC */
    add_shadow(l, 0, 0x24, 0x14, 4, true, 4, 8);      /* AQA, ASQ, ACQ */
}

/*
 * virtio-pci, modern interface: the common configuration reads its fields
 * from the transport's state, which only the guest's writes (feature and
 * queue selectors included) change. Not shadowed: device_status and
 * config_generation, and the device configuration, which the device may
 * change on its own without any interrupt (virtio_error(), or a config
 * change while the driver has no config vector); the ISR (read to clear)
 * and the notification area. A status write (0 resets the device) stays
 * synchronous.
 */
static void virtio_pci_hints(PCIDevice *pdev, RemoteHintList *l)
{
    VirtIOPCIProxy *proxy = VIRTIO_PCI(pdev);
    uint8_t bar = proxy->modern_mem_bar_idx;
    uint64_t common = proxy->common.offset;
    static const struct {
        uint32_t start, end;
        uint8_t width;
    } fields[] = {
        /* feature selectors and features */
        { VIRTIO_PCI_COMMON_DFSELECT, VIRTIO_PCI_COMMON_MSIX, 4 },
        /* msix_config, num_queues */
        { VIRTIO_PCI_COMMON_MSIX, VIRTIO_PCI_COMMON_STATUS, 2 },
        /* queue_select to queue_notify_off */
        { VIRTIO_PCI_COMMON_Q_SELECT, VIRTIO_PCI_COMMON_Q_DESCLO, 2 },
        /* the queue's addresses */
        { VIRTIO_PCI_COMMON_Q_DESCLO, VIRTIO_PCI_COMMON_Q_NDATA, 4 },
        /* queue_notify_data, queue_reset, the admin queue fields */
        { VIRTIO_PCI_COMMON_Q_NDATA, VIRTIO_PCI_COMMON_ADM_Q_NUM + 2, 2 },
    };

    if (!virtio_pci_modern(proxy) || bar >= PCI_ROM_SLOT) {
        return;
    }
    add_sync(l, bar, common + VIRTIO_PCI_COMMON_STATUS, 1);
    for (int i = 0; i < ARRAY_SIZE(fields); i++) {
        add_shadow(l, bar, common + fields[i].start,
                   fields[i].end - fields[i].start, fields[i].width, false,
                   0, 0);
    }
}

/*
 * LSI53C895A and LSI53C810 (hw/scsi/lsi53c895a.c): a write that starts or
 * wakes the SCRIPTS processor (ISTAT0's SIGP, the last byte of DSP, DCNTL's
 * start bit) runs the SCRIPTS before the write completes, some 20 µs per
 * command under TCG. Posted freely, several such writes pile up and one
 * run does the work of several; QEMU stops a run after 500 instructions
 * and resumes it 500 µs later, so the guest's queue of commands waits, and
 * keeps waiting, every burst after. Posted one at a time, a run starts
 * from each write as in-process, while the vCPU goes on (as a real PCI
 * write does): these writes are serial, or synchronous where the proxy
 * cannot post them so. The guest's next read still waits for the run. The
 * registers are in BAR 1 (memory).
 *
 * Shadowed: the SCSI control and bus registers, and the scratch and DMA
 * control registers, which drivers use as scratch space and read back.
 * Their reads have no side effects (unlike DSTAT, CTEST2, SIST0/1 among
 * their neighbours), and the model reads one byte at a time, so any read
 * of 1 to 4 bytes returns the bytes as stored. The SCRIPTS processor
 * changes all of them, also when it goes on after a disk request completed
 * or after its 500-instruction pause: the copy is autonomous.
 */
static void lsi_hints(PCIDevice *pdev, RemoteHintList *l)
{
    add_serial(l, 1, 0x14, 1);                        /* ISTAT0 */
    add_serial(l, 1, 0x2c, 4);                        /* DSP */
    add_serial(l, 1, 0x3b, 1);                        /* DCNTL */
    add_shadow(l, 1, 0x00, 0x0c, 4, true, 1, 4);      /* SCNTL0 to SBCL */
    add_shadow(l, 1, 0x14, 0x04, 4, true, 1, 4);      /* ISTAT0/1, MBOX0/1 */
    /* SCRATCHA, DMODE, DIEN, SBR, DCNTL */
    add_shadow(l, 1, 0x34, 0x08, 4, true, 1, 4);
    add_shadow(l, 1, 0x5c, 0x44, 4, true, 1, 4);      /* SCRATCHB to J */
    l->out->shadow_autonomous = l->out->shadow_size > 0;
}

/*
 * Any device with MSI-X: writes to the vector table stay synchronous, so
 * that a message pending on a vector the guest unmasks is delivered before
 * the vCPU goes on, as in-process.
 */
static void msix_hints(PCIDevice *pdev, RemoteHintList *l)
{
    uint32_t table;

    if (!msix_present(pdev)) {
        return;
    }
    table = pci_get_long(pdev->config + pdev->msix_cap + PCI_MSIX_TABLE);
    add_sync(l, table & PCI_MSIX_FLAGS_BIRMASK,
             table & ~PCI_MSIX_FLAGS_BIRMASK,
             pdev->msix_entries_nr * PCI_MSIX_ENTRY_SIZE);
}

void remote_hints_for_device(PCIDevice *pdev, uint64_t features,
                             RemoteHints *hints)
{
    RemoteHintList l = {
        .out = hints,
        .sync = features & MPQEMU_FEATURE_POSTED_WRITES,
        .serial = features & MPQEMU_FEATURE_SERIAL_WRITES,
        .shadow = features & MPQEMU_FEATURE_SHADOW,
    };

    *hints = (RemoteHints) {};
    msix_hints(pdev, &l);
    if (object_dynamic_cast(OBJECT(pdev), "nvme")) {
        nvme_hints(pdev, &l);
    } else if (object_dynamic_cast(OBJECT(pdev), TYPE_VIRTIO_PCI)) {
        virtio_pci_hints(pdev, &l);
    } else if (object_dynamic_cast(OBJECT(pdev), "lsi53c895a")) {
        lsi_hints(pdev, &l);
    }
}
