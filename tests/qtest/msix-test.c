/*
 * MSI-X, INTx and DMA of an NVMe controller emulated in a remote process:
 * every scenario runs once through x-pci-proxy-dev and once against the
 * in-process nvme, and the two must behave alike.
 *
 * The nvme model defers command processing and completion posting to
 * bottom halves, not to timers, so the remote (under the qtest accelerator
 * too) needs no clock stepping: its main loop runs the bottom halves by
 * itself, and the test polls guest RAM for the completion entry.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qobject/qdict.h"
#include "qemu/bswap.h"
#include "hw/pci/pci_regs.h"
#include "mpqemu-qtest.h"

#define MAIN_MACHINE "-machine pc -object memory-backend-memfd,id=mem," \
                     "size=128M -machine memory-backend=mem -m 128 "

#define NVME_DEVFN          QPCI_DEVFN(4, 0)
#define PIIX_PIRQ_ROUTE     0x60
#define GUEST_IRQ           11
#define IMAGE_SIZE          (1024 * 1024)
#define POLL_TIMEOUT_US     (5 * G_USEC_PER_SEC)

/* NVMe controller registers (BAR 0) */
#define REG_CAP             0x00
#define REG_INTMS           0x0c
#define REG_INTMC           0x10
#define REG_CC              0x14
#define REG_CSTS            0x1c
#define REG_AQA             0x24
#define REG_ASQ             0x28
#define REG_ACQ             0x30
#define REG_SQ0TDBL         0x1000
#define REG_CQ0HDBL         0x1004

#define CC_EN               (1u << 0)
#define CC_IOSQES_64        (6u << 16)
#define CC_IOCQES_16        (4u << 20)
#define CSTS_RDY            (1u << 0)
#define CSTS_CFS            (1u << 1)

#define ADMIN_IDENTIFY      0x06
#define CNS_CONTROLLER      0x01
#define SC_SUCCESS          0x0000
#define SC_DATA_TRANSFER    0x0004

#define QUEUE_ENTRIES       8
#define SQE_SIZE            64
#define CQE_SIZE            16
#define IDENTIFY_SIZE       4096

/* Guest RAM used by the tests: well inside the 128 MiB */
#define ASQ_ADDR            0x01000000ull
#define ACQ_ADDR            0x01001000ull
#define IDBUF_ADDR          0x01002000ull
#define MSI_ADDR            0x01003000ull
#define MSI_ADDR2           0x01003100ull
#define MSI_DATA            0x4d510001u
#define MSI_DATA2           0x4d510002u

/*
 * Neither guest RAM nor a BAR: libqos places BARs from 0xe0000000 up, so
 * the 0xe0000000 of the brief would hit the nvme's own BAR 0 on pc.
 */
#define NOT_RAM_ADDR        0xd0000000ull

/* Identify Controller fields */
#define ID_VID              0
#define ID_SSVID            2
#define ID_SN               4
#define ID_MN               24

/* One main QEMU with an nvme at NVME_DEVFN, proxied or in-process */
typedef struct Nvme {
    const char *name;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIDevice *isa_bridge;
    QPCIBar bar0;
    uint16_t sq_tail;
    uint16_t cq_head;
    uint16_t cid;
    bool phase;
} Nvme;

enum { PROXIED, LOCAL, NR_SIDES };

typedef struct Pair {
    char *dir;
    char *log_path;
    QTestState *remote;
    Nvme side[NR_SIDES];
} Pair;

typedef struct Cqe {
    uint32_t dw0;
    uint16_t sq_head;
    uint16_t sq_id;
    uint16_t cid;
    uint16_t status;    /* without the phase bit */
} Cqe;

static char *make_image(const char *dir, const char *name)
{
    char *path = g_build_filename(dir, name, NULL);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);

    g_assert(fd >= 0);
    g_assert_cmpint(ftruncate(fd, IMAGE_SIZE), ==, 0);
    close(fd);
    return path;
}

static void nvme_open(Nvme *n, const char *name, QTestState *qts)
{
    n->name = name;
    n->qts = qts;
    qtest_irq_intercept_in(qts, "ioapic");
    n->bus = qpci_new_pc(qts, NULL);

    /* all four PCI interrupt lines to GUEST_IRQ, as firmware would */
    n->isa_bridge = qpci_device_find(n->bus, QPCI_DEVFN(1, 0));
    g_assert(n->isa_bridge);
    qpci_config_writel(n->isa_bridge, PIIX_PIRQ_ROUTE,
                       GUEST_IRQ * 0x01010101);

    n->dev = qpci_device_find(n->bus, NVME_DEVFN);
    g_assert(n->dev);
    qpci_device_enable(n->dev);
}

static void nvme_close(Nvme *n)
{
    if (n->dev->msix_enabled) {
        qpci_msix_disable(n->dev);
    }
    g_free(n->dev);
    g_free(n->isa_bridge);
    qpci_free_pc(n->bus);
    qtest_quit(n->qts);
}

static void pair_start(Pair *p)
{
    g_autofree char *sock = NULL;
    g_autofree char *remote_img = NULL;
    g_autofree char *local_img = NULL;
    g_autofree char *remote_args = NULL;
    QTestState *qts;

    p->dir = mpqemu_tmp_dir();
    sock = g_build_filename(p->dir, "remote.sock", NULL);
    p->log_path = g_build_filename(p->dir, "remote.log", NULL);
    /* two images: both processes lock theirs for writing */
    remote_img = make_image(p->dir, "remote.img");
    local_img = make_image(p->dir, "local.img");

    remote_args = g_strdup_printf("-drive id=d0,file=%s,format=raw,if=none "
                                  "-device nvme,id=nvme0,serial=mpq,drive=d0 "
                                  "-trace enable=remote_dma_refused -D %s",
                                  remote_img, p->log_path);
    p->remote = mpqemu_start_remote(sock, "nvme0", remote_args);

    qts = qtest_initf(MAIN_MACHINE "-device x-pci-proxy-dev,id=nvme0,"
                      "addr=04.0,socket=%s", sock);
    nvme_open(&p->side[PROXIED], "proxied", qts);

    qts = qtest_initf(MAIN_MACHINE "-drive id=d0,file=%s,format=raw,if=none "
                      "-device nvme,id=nvme0,serial=mpq,drive=d0,addr=04.0",
                      local_img);
    nvme_open(&p->side[LOCAL], "in-process", qts);
}

static void pair_stop(Pair *p)
{
    for (int i = 0; i < NR_SIDES; i++) {
        nvme_close(&p->side[i]);
    }
    qtest_quit(p->remote);
    g_free(p->log_path);
    mpqemu_tmp_free(p->dir);
}

/* --- MSI-X table access --- */

static void msix_entry_write(Nvme *n, int entry, int field, uint32_t val)
{
    qpci_io_writel(n->dev, n->dev->msix_table_bar,
                   n->dev->msix_table_off + entry * PCI_MSIX_ENTRY_SIZE + field,
                   val);
}

static uint32_t msix_entry_read(Nvme *n, int entry, int field)
{
    return qpci_io_readl(n->dev, n->dev->msix_table_bar,
                         n->dev->msix_table_off +
                         entry * PCI_MSIX_ENTRY_SIZE + field);
}

static void msix_program(Nvme *n, int entry, uint64_t addr, uint32_t data)
{
    msix_entry_write(n, entry, PCI_MSIX_ENTRY_LOWER_ADDR, (uint32_t)addr);
    msix_entry_write(n, entry, PCI_MSIX_ENTRY_UPPER_ADDR, addr >> 32);
    msix_entry_write(n, entry, PCI_MSIX_ENTRY_DATA, data);
}

static void msix_set_masked(Nvme *n, int entry, bool masked)
{
    msix_entry_write(n, entry, PCI_MSIX_ENTRY_VECTOR_CTRL,
                     masked ? PCI_MSIX_ENTRY_CTRL_MASKBIT : 0);
}

static uint8_t msix_cap(Nvme *n)
{
    uint8_t cap = qpci_find_capability(n->dev, PCI_CAP_ID_MSIX, 0);

    g_assert_cmphex(cap, !=, 0);
    return cap;
}

static void msix_set_function_mask(Nvme *n, bool masked)
{
    uint8_t cap = msix_cap(n);
    uint16_t flags = qpci_config_readw(n->dev, cap + PCI_MSIX_FLAGS);

    flags = masked ? flags | PCI_MSIX_FLAGS_MASKALL :
                     flags & ~PCI_MSIX_FLAGS_MASKALL;
    qpci_config_writew(n->dev, cap + PCI_MSIX_FLAGS, flags);
    g_assert_cmphex(qpci_config_readw(n->dev, cap + PCI_MSIX_FLAGS) &
                    PCI_MSIX_FLAGS_MASKALL, ==,
                    masked ? PCI_MSIX_FLAGS_MASKALL : 0);
}

/* MSI-X on, BAR 0 mapped, entry 0 unmasked and aimed at guest RAM */
static void nvme_use_msix(Nvme *n)
{
    qpci_msix_enable(n->dev);
    /* qpci_msix_enable() maps the table's BAR, which is BAR 0 */
    g_assert_cmpint(n->dev->msix_table_bar.addr, !=, 0);
    n->bar0 = n->dev->msix_table_bar;
    msix_program(n, 0, MSI_ADDR, MSI_DATA);
    msix_set_masked(n, 0, false);
    g_assert_false(qpci_msix_masked(n->dev, 0));
    qtest_writel(n->qts, MSI_ADDR, 0);
    qtest_writel(n->qts, MSI_ADDR2, 0);
}

static void nvme_use_intx(Nvme *n)
{
    n->bar0 = qpci_iomap(n->dev, 0, NULL);
}

/* --- controller --- */

static uint32_t reg_read(Nvme *n, uint32_t reg)
{
    return qpci_io_readl(n->dev, n->bar0, reg);
}

static void reg_write(Nvme *n, uint32_t reg, uint32_t val)
{
    qpci_io_writel(n->dev, n->bar0, reg, val);
}

static void wait_csts(Nvme *n, uint32_t mask, uint32_t want)
{
    gint64 deadline = g_get_monotonic_time() + POLL_TIMEOUT_US;
    uint32_t csts;

    while (((csts = reg_read(n, REG_CSTS)) & mask) != want) {
        if (g_get_monotonic_time() > deadline) {
            g_test_message("%s: CSTS 0x%x, waiting for 0x%x under mask 0x%x",
                           n->name, csts, want, mask);
            g_assert_not_reached();
        }
        g_usleep(100);
    }
}

/* Admin queues in guest RAM at @asq and @acq, then CC.EN */
static void nvme_enable_at(Nvme *n, uint64_t asq, uint64_t acq)
{
    uint64_t cap = qpci_io_readq(n->dev, n->bar0, REG_CAP);

    /* a controller, not all-ones from a dead proxy */
    g_assert_cmphex(cap, !=, UINT64_MAX);
    g_assert_cmpuint((cap & 0xffff) + 1, >=, QUEUE_ENTRIES);    /* MQES */
    g_assert_cmphex(reg_read(n, REG_CSTS) & CSTS_RDY, ==, 0);

    qtest_memset(n->qts, ASQ_ADDR, 0, QUEUE_ENTRIES * SQE_SIZE);
    qtest_memset(n->qts, ACQ_ADDR, 0, QUEUE_ENTRIES * CQE_SIZE);
    reg_write(n, REG_AQA, (QUEUE_ENTRIES - 1) << 16 | (QUEUE_ENTRIES - 1));
    reg_write(n, REG_ASQ, (uint32_t)asq);
    reg_write(n, REG_ASQ + 4, asq >> 32);
    reg_write(n, REG_ACQ, (uint32_t)acq);
    reg_write(n, REG_ACQ + 4, acq >> 32);
    reg_write(n, REG_CC, CC_EN | CC_IOSQES_64 | CC_IOCQES_16);
    n->sq_tail = 0;
    n->cq_head = 0;
    n->phase = true;
}

static void nvme_enable(Nvme *n)
{
    nvme_enable_at(n, ASQ_ADDR, ACQ_ADDR);
    wait_csts(n, CSTS_RDY | CSTS_CFS, CSTS_RDY);
}

static void nvme_disable(Nvme *n)
{
    reg_write(n, REG_CC, 0);
    wait_csts(n, CSTS_RDY, 0);
}

static uint16_t submit_identify(Nvme *n, uint64_t prp1)
{
    uint8_t sqe[SQE_SIZE] = { 0 };
    uint16_t cid = ++n->cid;

    stl_le_p(sqe, ADMIN_IDENTIFY | (uint32_t)cid << 16);
    stq_le_p(sqe + 24, prp1);
    stl_le_p(sqe + 40, CNS_CONTROLLER);
    qtest_memwrite(n->qts, ASQ_ADDR + n->sq_tail * SQE_SIZE, sqe, sizeof(sqe));
    n->sq_tail = (n->sq_tail + 1) % QUEUE_ENTRIES;
    reg_write(n, REG_SQ0TDBL, n->sq_tail);
    return cid;
}

/* The next completion entry, once its phase tag says it was posted */
static Cqe wait_cqe(Nvme *n)
{
    gint64 deadline = g_get_monotonic_time() + POLL_TIMEOUT_US;
    uint64_t addr = ACQ_ADDR + n->cq_head * CQE_SIZE;
    uint8_t raw[CQE_SIZE];
    Cqe cqe;

    for (;;) {
        qtest_memread(n->qts, addr, raw, sizeof(raw));
        if ((lduw_le_p(raw + 14) & 1) == n->phase) {
            break;
        }
        if (g_get_monotonic_time() > deadline) {
            g_test_message("%s: no completion at CQ head %u (CSTS 0x%x)",
                           n->name, n->cq_head, reg_read(n, REG_CSTS));
            g_assert_not_reached();
        }
        g_usleep(100);
    }
    cqe.dw0 = ldl_le_p(raw);
    cqe.sq_head = lduw_le_p(raw + 8);
    cqe.sq_id = lduw_le_p(raw + 10);
    cqe.cid = lduw_le_p(raw + 12);
    cqe.status = lduw_le_p(raw + 14) >> 1;
    n->cq_head = (n->cq_head + 1) % QUEUE_ENTRIES;
    if (!n->cq_head) {
        n->phase = !n->phase;
    }
    return cqe;
}

static void ring_cq_head(Nvme *n)
{
    reg_write(n, REG_CQ0HDBL, n->cq_head);
}

/* An Identify Controller, completed and checked but not yet acknowledged */
static Cqe identify(Nvme *n, uint64_t prp1, uint16_t expect_status)
{
    uint16_t cid = submit_identify(n, prp1);
    Cqe cqe = wait_cqe(n);

    g_test_message("%s: identify at 0x%" PRIx64 ": status 0x%x", n->name,
                   prp1, cqe.status);
    g_assert_cmphex(cqe.cid, ==, cid);
    g_assert_cmpuint(cqe.sq_id, ==, 0);
    g_assert_cmpuint(cqe.sq_head, ==, n->sq_tail);
    g_assert_cmphex(cqe.status, ==, expect_status);
    return cqe;
}

/*
 * A register read through the proxy is a round trip: the interrupts the
 * remote signalled before answering it are delivered once it completes.
 * In-process it is just a read.
 */
static void sync_device(Nvme *n)
{
    g_assert_cmphex(reg_read(n, REG_CSTS) & CSTS_CFS, ==, 0);
}

/* The identify data that the controller wrote to IDBUF_ADDR */
static void check_identify_data(Nvme *n, uint8_t *id)
{
    static const char serial[20] = "mpq                 ";
    static const char model[40] = "QEMU NVMe Ctrl                          ";

    qtest_memread(n->qts, IDBUF_ADDR, id, IDENTIFY_SIZE);
    g_assert_cmphex(lduw_le_p(id + ID_VID), ==,
                    qpci_config_readw(n->dev, PCI_VENDOR_ID));
    g_assert_cmphex(lduw_le_p(id + ID_SSVID), ==,
                    qpci_config_readw(n->dev, PCI_SUBSYSTEM_VENDOR_ID));
    g_assert_cmpmem(id + ID_SN, sizeof(serial), serial, sizeof(serial));
    g_assert_cmpmem(id + ID_MN, sizeof(model), model, sizeof(model));
}

static void assert_same_bytes(const uint8_t *proxied, const uint8_t *local,
                              size_t len, const char *what)
{
    int mismatches = 0;

    for (size_t i = 0; i < len; i++) {
        if (proxied[i] != local[i]) {
            g_test_message("%s byte 0x%zx: proxied 0x%02x in-process 0x%02x",
                           what, i, proxied[i], local[i]);
            mismatches++;
        }
    }
    g_assert_cmpint(mismatches, ==, 0);
}

static void msi_clear(Nvme *n)
{
    qtest_writel(n->qts, MSI_ADDR, 0);
    qtest_writel(n->qts, MSI_ADDR2, 0);
}

/* --- scenarios --- */

/* Identify with MSI-X: completion, data, and the message in guest RAM */
static void scenario_identify(Nvme *n, uint8_t *id, Cqe *cqe)
{
    nvme_use_msix(n);
    nvme_enable(n);
    qtest_memset(n->qts, IDBUF_ADDR, 0, IDENTIFY_SIZE);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, 0);

    *cqe = identify(n, IDBUF_ADDR, SC_SUCCESS);
    sync_device(n);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, MSI_DATA);
    g_assert_false(qpci_msix_pending(n->dev, 0));
    /* with MSI-X enabled the pin stays quiet */
    g_assert_false(qtest_get_irq(n->qts, GUEST_IRQ));
    check_identify_data(n, id);

    /* a second command signals again */
    msi_clear(n);
    ring_cq_head(n);
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    sync_device(n);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, MSI_DATA);
    ring_cq_head(n);
}

static void test_identify(void)
{
    uint8_t *id[NR_SIDES];
    Cqe cqe[NR_SIDES];
    Pair p;

    pair_start(&p);
    for (int i = 0; i < NR_SIDES; i++) {
        id[i] = g_malloc0(IDENTIFY_SIZE);
        scenario_identify(&p.side[i], id[i], &cqe[i]);
    }
    assert_same_bytes(id[PROXIED], id[LOCAL], IDENTIFY_SIZE, "identify");
    assert_same_bytes((uint8_t *)&cqe[PROXIED], (uint8_t *)&cqe[LOCAL],
                      sizeof(Cqe), "completion");
    for (int i = 0; i < NR_SIDES; i++) {
        g_free(id[i]);
    }
    pair_stop(&p);
}

/* Per-vector mask: held back while masked, pending, delivered on unmask */
static void scenario_vector_mask(Nvme *n)
{
    nvme_use_msix(n);
    nvme_enable(n);

    msix_set_masked(n, 0, true);
    g_assert_true(qpci_msix_masked(n->dev, 0));
    g_assert_false(qpci_msix_pending(n->dev, 0));

    identify(n, IDBUF_ADDR, SC_SUCCESS);
    /* the PBA read is a round trip: anything signalled is delivered */
    g_assert_true(qpci_msix_pending(n->dev, 0));
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, 0);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR2), ==, 0);

    /* the message sent on unmask is the one the entry holds by then */
    msix_program(n, 0, MSI_ADDR2, MSI_DATA2);
    g_assert_true(qpci_msix_pending(n->dev, 0));
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR2), ==, 0);

    /* delivered by the time the unmasking write completes */
    msix_set_masked(n, 0, false);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR2), ==, MSI_DATA2);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, 0);
    g_assert_false(qpci_msix_pending(n->dev, 0));
    g_assert_false(qpci_msix_masked(n->dev, 0));

    /* once only */
    msi_clear(n);
    msix_set_masked(n, 0, true);
    msix_set_masked(n, 0, false);
    sync_device(n);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR2), ==, 0);
    ring_cq_head(n);

    /* and unmasked it goes out at once, to the new address */
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    sync_device(n);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR2), ==, MSI_DATA2);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, 0);
    ring_cq_head(n);
}

static void test_vector_mask(void)
{
    Pair p;

    pair_start(&p);
    for (int i = 0; i < NR_SIDES; i++) {
        scenario_vector_mask(&p.side[i]);
    }
    pair_stop(&p);
}

/* Function mask in the capability's control word */
static void scenario_function_mask(Nvme *n)
{
    nvme_use_msix(n);
    nvme_enable(n);

    msix_set_function_mask(n, true);
    g_assert_true(qpci_msix_masked(n->dev, 0));
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    g_assert_true(qpci_msix_pending(n->dev, 0));
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, 0);
    ring_cq_head(n);

    /* a second event while masked: still a single pending bit */
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    g_assert_true(qpci_msix_pending(n->dev, 0));
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, 0);

    /* clearing the function mask delivers it, with the config write */
    msix_set_function_mask(n, false);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, MSI_DATA);
    g_assert_false(qpci_msix_pending(n->dev, 0));
    g_assert_false(qpci_msix_masked(n->dev, 0));
    ring_cq_head(n);

    /* the vector's own mask still holds under a cleared function mask */
    msi_clear(n);
    msix_set_masked(n, 0, true);
    msix_set_function_mask(n, true);
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    g_assert_true(qpci_msix_pending(n->dev, 0));
    msix_set_function_mask(n, false);
    sync_device(n);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, 0);
    g_assert_true(qpci_msix_pending(n->dev, 0));
    msix_set_masked(n, 0, false);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, MSI_DATA);
    g_assert_false(qpci_msix_pending(n->dev, 0));
    ring_cq_head(n);
}

static void test_function_mask(void)
{
    Pair p;

    pair_start(&p);
    for (int i = 0; i < NR_SIDES; i++) {
        scenario_function_mask(&p.side[i]);
    }
    pair_stop(&p);
}

/* Table entries written through BAR 0 read back as written */
#define TABLE_WORDS 64

static const int table_entries[] = { 0, 1, 2, 7, 31, 32, 64 };

static void scenario_table(Nvme *n, uint32_t *seen, uint16_t *table_size)
{
    QPCIBar bar;
    uint64_t off;
    int w = 0;

    qpci_msix_enable(n->dev);
    bar = n->dev->msix_table_bar;
    off = n->dev->msix_table_off;
    *table_size = qpci_msix_table_size(n->dev);
    g_assert_cmpuint(*table_size, >, 64);

    /* a fresh table: every vector masked, nothing pending */
    for (int i = 0; i < ARRAY_SIZE(table_entries); i++) {
        g_assert_true(qpci_msix_masked(n->dev, table_entries[i]));
    }
    g_assert_cmphex(qpci_io_readl(n->dev, n->dev->msix_pba_bar,
                                  n->dev->msix_pba_off), ==, 0);

    for (int i = 0; i < ARRAY_SIZE(table_entries); i++) {
        int e = table_entries[i];

        msix_entry_write(n, e, PCI_MSIX_ENTRY_LOWER_ADDR, 0xfee00000 | e << 4);
        msix_entry_write(n, e, PCI_MSIX_ENTRY_UPPER_ADDR, 0x100 + e);
        msix_entry_write(n, e, PCI_MSIX_ENTRY_DATA, 0xd0d00000 | e);
        msix_entry_write(n, e, PCI_MSIX_ENTRY_VECTOR_CTRL, e & 1);
    }
    for (int i = 0; i < ARRAY_SIZE(table_entries); i++) {
        int e = table_entries[i];

        g_assert_cmphex(msix_entry_read(n, e, PCI_MSIX_ENTRY_LOWER_ADDR), ==,
                        0xfee00000 | e << 4);
        g_assert_cmphex(msix_entry_read(n, e, PCI_MSIX_ENTRY_UPPER_ADDR), ==,
                        0x100 + e);
        g_assert_cmphex(msix_entry_read(n, e, PCI_MSIX_ENTRY_DATA), ==,
                        0xd0d00000 | e);
        g_assert_cmphex(msix_entry_read(n, e, PCI_MSIX_ENTRY_VECTOR_CTRL) &
                        PCI_MSIX_ENTRY_CTRL_MASKBIT, ==, e & 1);
        g_assert_cmpint(qpci_msix_masked(n->dev, e), ==, e & 1);
        for (int f = 0; f < PCI_MSIX_ENTRY_SIZE; f += 4) {
            seen[w++] = msix_entry_read(n, e, f);
        }
    }

    /* 8-byte accesses: the address as one quadword */
    qpci_io_writeq(n->dev, bar, off + 3 * PCI_MSIX_ENTRY_SIZE,
                   0x00000123fee0c000ull);
    g_assert_cmphex(qpci_io_readq(n->dev, bar, off + 3 * PCI_MSIX_ENTRY_SIZE),
                    ==, 0x00000123fee0c000ull);
    g_assert_cmphex(msix_entry_read(n, 3, PCI_MSIX_ENTRY_UPPER_ADDR), ==,
                    0x123);
    seen[w++] = msix_entry_read(n, 3, PCI_MSIX_ENTRY_LOWER_ADDR);

    /* a 16-bit write is no valid table access: both sides must drop it */
    qpci_io_writew(n->dev, bar, off + 4 * PCI_MSIX_ENTRY_SIZE +
                   PCI_MSIX_ENTRY_DATA, 0xbeef);
    seen[w++] = msix_entry_read(n, 4, PCI_MSIX_ENTRY_DATA);

    /* the PBA is read-only */
    qpci_io_writel(n->dev, n->dev->msix_pba_bar, n->dev->msix_pba_off,
                   0xffffffff);
    seen[w++] = qpci_io_readl(n->dev, n->dev->msix_pba_bar,
                              n->dev->msix_pba_off);
    g_assert_cmphex(seen[w - 1], ==, 0);
    g_assert_cmpint(w, <=, TABLE_WORDS);
}

static void test_table(void)
{
    uint32_t seen[NR_SIDES][TABLE_WORDS] = { 0 };
    uint16_t size[NR_SIDES];
    Pair p;

    pair_start(&p);
    for (int i = 0; i < NR_SIDES; i++) {
        scenario_table(&p.side[i], seen[i], &size[i]);
    }
    g_assert_cmpuint(size[PROXIED], ==, size[LOCAL]);
    for (int w = 0; w < TABLE_WORDS; w++) {
        if (seen[PROXIED][w] != seen[LOCAL][w]) {
            g_test_message("table word %d: proxied 0x%08x in-process 0x%08x",
                           w, seen[PROXIED][w], seen[LOCAL][w]);
        }
        g_assert_cmphex(seen[PROXIED][w], ==, seen[LOCAL][w]);
    }
    pair_stop(&p);
}

/* The remote's log of refused DMA: did it refuse a write at @addr? */
static bool remote_refused_write_at(Pair *p, uint64_t addr)
{
    g_autofree char *log = NULL;
    g_autofree char *needle = g_strdup_printf("write 1 address 0x%" PRIx64
                                              " ", addr);

    if (!g_file_get_contents(p->log_path, &log, NULL, NULL)) {
        return false;
    }
    return strstr(log, "remote_dma_refused") && strstr(log, needle);
}

typedef struct DmaResult {
    uint16_t not_ram_status;
    uint16_t bar_status;
    uint32_t cfs_csts;
} DmaResult;

static void scenario_dma(Nvme *n, DmaResult *r)
{
    uint8_t id[IDENTIFY_SIZE];
    Cqe cqe;

    nvme_use_msix(n);
    nvme_enable(n);

    /*
     * Not guest RAM: the device's write goes nowhere. The status is
     * whatever the nvme model makes of a failed DMA; both sides must agree.
     */
    submit_identify(n, NOT_RAM_ADDR);
    cqe = wait_cqe(n);
    g_test_message("%s: identify to 0x%" PRIx64 " completes with status 0x%x",
                   n->name, (uint64_t)NOT_RAM_ADDR, cqe.status);
    r->not_ram_status = cqe.status;
    sync_device(n);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, MSI_DATA);
    ring_cq_head(n);

    /* the device's own registers: a data transfer error */
    msi_clear(n);
    cqe = identify(n, n->bar0.addr, SC_DATA_TRANSFER);
    r->bar_status = cqe.status;
    sync_device(n);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, MSI_DATA);
    ring_cq_head(n);

    /* and the controller goes on */
    qtest_memset(n->qts, IDBUF_ADDR, 0, IDENTIFY_SIZE);
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    check_identify_data(n, id);
    ring_cq_head(n);

    /*
     * A completion queue outside guest RAM: posting fails, which is fatal
     * to the controller (CSTS.CFS), and no interrupt is signalled.
     */
    nvme_disable(n);
    msi_clear(n);
    nvme_enable_at(n, ASQ_ADDR, NOT_RAM_ADDR);
    wait_csts(n, CSTS_RDY, CSTS_RDY);
    submit_identify(n, IDBUF_ADDR);
    wait_csts(n, CSTS_CFS, CSTS_CFS);
    r->cfs_csts = reg_read(n, REG_CSTS);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, 0);

    /* a controller reset recovers */
    nvme_disable(n);
    g_assert_cmphex(reg_read(n, REG_CSTS) & CSTS_CFS, ==, 0);
    nvme_enable(n);
    qtest_memset(n->qts, IDBUF_ADDR, 0, IDENTIFY_SIZE);
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    check_identify_data(n, id);
    sync_device(n);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, MSI_DATA);
    ring_cq_head(n);
}

static void test_dma_refused(void)
{
    DmaResult r[NR_SIDES];
    QDict *resp;
    Pair p;

    pair_start(&p);
    g_assert_false(remote_refused_write_at(&p, NOT_RAM_ADDR));
    for (int i = 0; i < NR_SIDES; i++) {
        scenario_dma(&p.side[i], &r[i]);
    }

    /* the remote refused the writes, and it still answers */
    g_assert_true(remote_refused_write_at(&p, NOT_RAM_ADDR));
    resp = qtest_qmp(p.remote, "{ 'execute': 'query-status' }");
    g_assert_true(qdict_haskey(resp, "return"));
    qobject_unref(resp);

    g_assert_cmphex(r[PROXIED].not_ram_status, ==, r[LOCAL].not_ram_status);
    g_assert_cmphex(r[PROXIED].bar_status, ==, r[LOCAL].bar_status);
    g_assert_cmphex(r[PROXIED].cfs_csts, ==, r[LOCAL].cfs_csts);
    pair_stop(&p);
}

/* INTx: raised by a completion, lowered by the CQ head doorbell or INTMS */
static void scenario_intx(Nvme *n, uint32_t *levels)
{
    int l = 0;

#define LEVEL(expect) do {                                          \
        bool level_ = qtest_get_irq(n->qts, GUEST_IRQ);             \
        levels[l++] = level_;                                       \
        g_assert_cmpint(level_, ==, (expect));                      \
    } while (0)

    nvme_use_intx(n);
    nvme_enable(n);
    LEVEL(false);

    identify(n, IDBUF_ADDR, SC_SUCCESS);
    sync_device(n);
    LEVEL(true);

    /* masked by INTMS, back on INTMC while the entry is unconsumed */
    reg_write(n, REG_INTMS, 1);
    LEVEL(false);
    g_assert_cmphex(reg_read(n, REG_INTMS), ==, 1);
    reg_write(n, REG_INTMC, 1);
    LEVEL(true);
    g_assert_cmphex(reg_read(n, REG_INTMC), ==, 0);

    /* consuming the entry acknowledges the interrupt */
    ring_cq_head(n);
    LEVEL(false);

    /* a completion while masked shows only once unmasked */
    reg_write(n, REG_INTMS, 1);
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    sync_device(n);
    LEVEL(false);
    reg_write(n, REG_INTMC, 1);
    LEVEL(true);

    /* two completions, one acknowledged: still raised */
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    sync_device(n);
    LEVEL(true);
    reg_write(n, REG_CQ0HDBL, (n->cq_head + QUEUE_ENTRIES - 1) %
              QUEUE_ENTRIES);
    LEVEL(true);
    ring_cq_head(n);
    LEVEL(false);

    /* the command register's INTx disable hides a raised line */
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    sync_device(n);
    LEVEL(true);
    qpci_config_writew(n->dev, PCI_COMMAND,
                       qpci_config_readw(n->dev, PCI_COMMAND) |
                       PCI_COMMAND_INTX_DISABLE);
    LEVEL(false);
    qpci_config_writew(n->dev, PCI_COMMAND,
                       qpci_config_readw(n->dev, PCI_COMMAND) &
                       ~PCI_COMMAND_INTX_DISABLE);
    LEVEL(true);
    ring_cq_head(n);
    LEVEL(false);
    levels[l++] = UINT32_MAX;
#undef LEVEL
}

static void test_intx(void)
{
    uint32_t levels[NR_SIDES][32];
    Pair p;

    pair_start(&p);
    for (int i = 0; i < NR_SIDES; i++) {
        scenario_intx(&p.side[i], levels[i]);
    }
    for (int l = 0; levels[LOCAL][l] != UINT32_MAX; l++) {
        g_assert_cmpuint(levels[PROXIED][l], ==, levels[LOCAL][l]);
    }
    pair_stop(&p);
}

/*
 * A system reset is a PCI reset too: command register, MSI-X enable and
 * function mask, and the MSI-X table (cleared, every vector masked) all go
 * back to their power-on state, so a driver that does not enable MSI-X
 * afterwards gets INTx.
 */
typedef struct ResetResult {
    uint32_t command;
    uint32_t msix_flags;
    uint32_t entry0_addr;
    uint32_t entry0_data;
    uint32_t entry0_ctrl;
    uint32_t intx;
    uint32_t msi;
} ResetResult;

static void scenario_reset(Nvme *n, ResetResult *r)
{
    uint8_t cap;

    /* a driver that used MSI-X ... */
    nvme_use_msix(n);
    nvme_enable(n);
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    sync_device(n);
    g_assert_cmphex(qtest_readl(n->qts, MSI_ADDR), ==, MSI_DATA);
    ring_cq_head(n);

    /* ... then a reboot */
    qtest_system_reset(n->qts);
    n->dev->msix_enabled = false;   /* libqos' view, without a write */
    cap = msix_cap(n);
    r->command = qpci_config_readw(n->dev, PCI_COMMAND);
    r->msix_flags = qpci_config_readw(n->dev, cap + PCI_MSIX_FLAGS);

    /* the table, seen without touching the MSI-X control word */
    qpci_device_enable(n->dev);
    n->bar0 = qpci_iomap(n->dev, 0, NULL);
    n->dev->msix_table_bar = n->bar0;
    n->dev->msix_table_off = qpci_config_readl(n->dev, cap + PCI_MSIX_TABLE) &
                             ~PCI_MSIX_FLAGS_BIRMASK;
    r->entry0_addr = msix_entry_read(n, 0, PCI_MSIX_ENTRY_LOWER_ADDR);
    r->entry0_data = msix_entry_read(n, 0, PCI_MSIX_ENTRY_DATA);
    r->entry0_ctrl = msix_entry_read(n, 0, PCI_MSIX_ENTRY_VECTOR_CTRL);

    /* the next boot's driver uses INTx */
    qpci_config_writel(n->isa_bridge, PIIX_PIRQ_ROUTE, GUEST_IRQ * 0x01010101);
    msi_clear(n);
    n->cid = 0;
    nvme_enable(n);
    identify(n, IDBUF_ADDR, SC_SUCCESS);
    sync_device(n);
    r->intx = qtest_get_irq(n->qts, GUEST_IRQ);
    r->msi = qtest_readl(n->qts, MSI_ADDR);
    ring_cq_head(n);

    g_test_message("%s after reset: command 0x%x, MSI-X control 0x%x, "
                   "entry 0 address 0x%x data 0x%x control 0x%x; after a "
                   "completion: INTx %u, MSI memory 0x%x", n->name,
                   r->command, r->msix_flags, r->entry0_addr, r->entry0_data,
                   r->entry0_ctrl, r->intx, r->msi);
}

static void check_reset_result(ResetResult *r)
{
    g_assert_cmphex(r->command, ==, 0);
    g_assert_cmphex(r->msix_flags & (PCI_MSIX_FLAGS_ENABLE |
                                     PCI_MSIX_FLAGS_MASKALL), ==, 0);
    g_assert_cmphex(r->entry0_addr, ==, 0);
    g_assert_cmphex(r->entry0_data, ==, 0);
    g_assert_cmphex(r->entry0_ctrl, ==, PCI_MSIX_ENTRY_CTRL_MASKBIT);
    g_assert_cmpuint(r->intx, ==, 1);
    g_assert_cmphex(r->msi, ==, 0);
}

static void test_reset(void)
{
    ResetResult r[NR_SIDES];
    Pair p;

    pair_start(&p);
    for (int i = 0; i < NR_SIDES; i++) {
        scenario_reset(&p.side[i], &r[i]);
    }
    pair_stop(&p);
    check_reset_result(&r[LOCAL]);
    check_reset_result(&r[PROXIED]);
    assert_same_bytes((uint8_t *)&r[PROXIED], (uint8_t *)&r[LOCAL],
                      sizeof(ResetResult), "reset state");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    qtest_add_func("/mpqemu/msix/identify", test_identify);
    qtest_add_func("/mpqemu/msix/vector-mask", test_vector_mask);
    qtest_add_func("/mpqemu/msix/function-mask", test_function_mask);
    qtest_add_func("/mpqemu/msix/table", test_table);
    qtest_add_func("/mpqemu/msix/dma-refused", test_dma_refused);
    qtest_add_func("/mpqemu/msix/intx", test_intx);
    qtest_add_func("/mpqemu/msix/reset", test_reset);

    return g_test_run();
}
