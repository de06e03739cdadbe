/*
 * x-pci-proxy-dev against a real remote process: the guest must see the same
 * config space, BARs, register contents, ROM, INTx and reset as in-process.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qemu/bswap.h"
#include "hw/pci/pci_regs.h"
#include "mpqemu/ring.h"
#include "mpqemu-qtest.h"

#define LSI_DEVFN           QPCI_DEVFN(4, 0)
#define LSI_REG_DSTAT       0x0c
#define LSI_REG_DSP         0x2c
#define LSI_REG_SCRATCHA    0x34
#define LSI_REG_SCRATCHB    0x5c    /* SCRATCHB to SCRATCHR follow */
#define LSI_NR_SCRATCH      18
#define LSI_REG_DIEN        0x39
#define LSI_DIEN_SIR        0x04
#define LSI_ROM_ADDR        0xd0000000u
#define PIIX_PIRQ_ROUTE     0x60
#define GUEST_IRQ           11

#define MAIN_MACHINE "-machine pc -object memory-backend-memfd,id=mem," \
                     "size=128M -machine memory-backend=mem -m 128 "

/* The same device, once in-process and once behind a proxy */
typedef struct TestPair {
    char *dir;
    char *rom_path;
    QTestState *remote;
    QTestState *proxied;
    QTestState *local;
    QPCIBus *proxied_bus;
    QPCIBus *local_bus;
    QPCIDevice *proxied_dev;
    QPCIDevice *local_dev;
} TestPair;

/* A ROM image whose every dword tells its own offset */
static char *make_rom(const char *dir)
{
    char *path = g_build_filename(dir, "rom.bin", NULL);
    uint32_t rom[1024];

    for (int i = 0; i < ARRAY_SIZE(rom); i++) {
        rom[i] = cpu_to_le32(0xa5000000 | (i * 4));
    }
    g_assert(g_file_set_contents(path, (char *)rom, sizeof(rom), NULL));
    return path;
}

static void pair_start(TestPair *p, const char *device_fmt)
{
    g_autofree char *sock = NULL;
    g_autofree char *remote_dev = NULL;
    g_autofree char *local_dev = NULL;

    p->dir = mpqemu_tmp_dir();
    p->rom_path = make_rom(p->dir);
    sock = g_build_filename(p->dir, "remote.sock", NULL);
    remote_dev = g_strdup_printf(device_fmt, p->rom_path, "");
    local_dev = g_strdup_printf(device_fmt, p->rom_path, ",addr=04.0");

    p->remote = mpqemu_start_remote(sock, "dev0", remote_dev);
    p->proxied = qtest_initf(MAIN_MACHINE "-device x-pci-proxy-dev,id=dev0,"
                             "addr=04.0,socket=%s", sock);
    p->local = qtest_initf(MAIN_MACHINE "%s", local_dev);

    p->proxied_bus = qpci_new_pc(p->proxied, NULL);
    p->local_bus = qpci_new_pc(p->local, NULL);
    p->proxied_dev = qpci_device_find(p->proxied_bus, LSI_DEVFN);
    p->local_dev = qpci_device_find(p->local_bus, LSI_DEVFN);
    g_assert(p->proxied_dev);
    g_assert(p->local_dev);
}

static void pair_stop(TestPair *p)
{
    g_free(p->proxied_dev);
    g_free(p->local_dev);
    qpci_free_pc(p->proxied_bus);
    qpci_free_pc(p->local_bus);
    qtest_quit(p->proxied);
    qtest_quit(p->local);
    qtest_quit(p->remote);
    unlink(p->rom_path);
    g_free(p->rom_path);
    mpqemu_tmp_free(p->dir);
}

static const char lsi_devices[] =
    "-device lsi53c895a,id=dev0,romfile=%s%s";
/* With its MSI-X capability and the MSI-X table BAR */
static const char virtio_devices[] =
    "-device virtio-rng-pci,id=dev0,romfile=%s%s";

/* Size a BAR the way firmware does: all ones, read back, restore */
static uint32_t size_bar(QPCIDevice *dev, uint8_t reg)
{
    uint32_t saved = qpci_config_readl(dev, reg);
    uint32_t mask;

    qpci_config_writel(dev, reg, 0xffffffff);
    mask = qpci_config_readl(dev, reg);
    qpci_config_writel(dev, reg, saved);
    return mask;
}

static void compare_config_space(const char *device_fmt)
{
    TestPair p;

    int mismatches = 0;

    pair_start(&p, device_fmt);
    for (int off = 0; off < PCI_CFG_SPACE_SIZE; off += 4) {
        uint32_t local = qpci_config_readl(p.local_dev, off);
        uint32_t proxied = qpci_config_readl(p.proxied_dev, off);

        if (local != proxied) {
            g_test_message("config 0x%02x: in-process 0x%08x proxied 0x%08x",
                           off, local, proxied);
            mismatches++;
        }
    }
    g_assert_cmpint(mismatches, ==, 0);
    /* Sub-dword reads go through the same path */
    g_assert_cmphex(qpci_config_readw(p.proxied_dev, PCI_DEVICE_ID), ==,
                    qpci_config_readw(p.local_dev, PCI_DEVICE_ID));
    g_assert_cmphex(qpci_config_readb(p.proxied_dev, PCI_INTERRUPT_PIN), ==,
                    qpci_config_readb(p.local_dev, PCI_INTERRUPT_PIN));
    pair_stop(&p);
}

static void test_config_lsi(void)
{
    compare_config_space(lsi_devices);
}

static void test_config_virtio(void)
{
    compare_config_space(virtio_devices);
}

/* I/O, 32-bit, 64-bit, prefetchable and ROM BARs size as in-process */
static void compare_bar_sizes(const char *device_fmt, uint32_t expect_types)
{
    static const uint8_t regs[] = {
        PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_1, PCI_BASE_ADDRESS_2,
        PCI_BASE_ADDRESS_3, PCI_BASE_ADDRESS_4, PCI_BASE_ADDRESS_5,
        PCI_ROM_ADDRESS,
    };
    uint32_t seen_types = 0;
    TestPair p;

    pair_start(&p, device_fmt);
    for (int i = 0; i < ARRAY_SIZE(regs); i++) {
        uint32_t local = size_bar(p.local_dev, regs[i]);
        uint32_t proxied = size_bar(p.proxied_dev, regs[i]);

        g_test_message("BAR reg 0x%02x: in-process 0x%08x proxied 0x%08x",
                       regs[i], local, proxied);
        g_assert_cmphex(proxied, ==, local);
        if (regs[i] == PCI_ROM_ADDRESS) {
            seen_types |= local ? 1u << 8 : 0;
        } else if (local & PCI_BASE_ADDRESS_SPACE_IO) {
            seen_types |= 1u << PCI_BASE_ADDRESS_SPACE_IO;
        } else if (local) {
            seen_types |= 1u << (local & 0xf);
        }
    }
    /* the device must really have had the kinds of BARs this test is about */
    g_assert_cmphex(seen_types & expect_types, ==, expect_types);
    pair_stop(&p);
}

#define SEEN_IO         (1u << PCI_BASE_ADDRESS_SPACE_IO)
#define SEEN_MEM32      (1u << PCI_BASE_ADDRESS_SPACE_MEMORY)
#define SEEN_MEM64_PREF (1u << (PCI_BASE_ADDRESS_MEM_TYPE_64 | \
                                PCI_BASE_ADDRESS_MEM_PREFETCH))
#define SEEN_ROM        (1u << 8)

static void test_bars_lsi(void)
{
    compare_bar_sizes(lsi_devices, SEEN_IO | SEEN_MEM32 | SEEN_ROM);
}

static void test_bars_virtio(void)
{
    compare_bar_sizes(virtio_devices,
                      SEEN_IO | SEEN_MEM32 | SEEN_MEM64_PREF | SEEN_ROM);
}

/* Registers through the MMIO and the I/O BAR, every access size */
static void test_register_access(const void *ring)
{
    g_autofree char *dir = mpqemu_tmp_dir();
    g_autofree char *sock = g_build_filename(dir, "remote.sock", NULL);
    QTestState *remote, *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar io, mmio, ram;

    remote = mpqemu_start_remote(sock, "lsi1", "-device lsi53c895a,id=lsi1");
    qts = qtest_initf(MAIN_MACHINE "-device x-pci-proxy-dev,id=lsi1,"
                      "addr=04.0,socket=%s,ring=%s", sock, (const char *)ring);
    bus = qpci_new_pc(qts, NULL);
    dev = qpci_device_find(bus, LSI_DEVFN);
    qpci_device_enable(dev);
    io = qpci_iomap(dev, 0, NULL);
    mmio = qpci_iomap(dev, 1, NULL);
    ram = qpci_iomap(dev, 2, NULL);

    /* one register, two BARs: written through one, read through the other */
    qpci_io_writel(dev, mmio, LSI_REG_SCRATCHA, 0x12345678);
    g_assert_cmphex(qpci_io_readl(dev, io, LSI_REG_SCRATCHA), ==, 0x12345678);
    qpci_io_writew(dev, io, LSI_REG_SCRATCHA + 2, 0xbeef);
    g_assert_cmphex(qpci_io_readl(dev, mmio, LSI_REG_SCRATCHA), ==,
                    0xbeef5678);
    qpci_io_writeb(dev, mmio, LSI_REG_SCRATCHA, 0x01);
    g_assert_cmphex(qpci_io_readb(dev, io, LSI_REG_SCRATCHA), ==, 0x01);
    g_assert_cmphex(qpci_io_readw(dev, mmio, LSI_REG_SCRATCHA), ==, 0x5601);

    /* the SCRIPTS RAM BAR holds what is written, 1 to 8 bytes at a time */
    qpci_io_writeq(dev, ram, 0x100, 0x0123456789abcdefULL);
    g_assert_cmphex(qpci_io_readq(dev, ram, 0x100), ==, 0x0123456789abcdefULL);
    g_assert_cmphex(qpci_io_readl(dev, ram, 0x104), ==, 0x01234567);
    g_assert_cmphex(qpci_io_readw(dev, ram, 0x102), ==, 0x89ab);
    g_assert_cmphex(qpci_io_readb(dev, ram, 0x101), ==, 0xcd);
    qpci_io_writeb(dev, ram, 0x107, 0xff);
    qpci_io_writew(dev, ram, 0x100, 0x1122);
    g_assert_cmphex(qpci_io_readq(dev, ram, 0x100), ==, 0xff23456789ab1122ULL);
    /* the last byte of the BAR */
    qpci_io_writeb(dev, ram, 0x1fff, 0x5a);
    g_assert_cmphex(qpci_io_readb(dev, ram, 0x1fff), ==, 0x5a);

    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
    qtest_quit(remote);
    mpqemu_tmp_free(g_steal_pointer(&dir));
}

/* The expansion ROM reads back the remote's romfile */
static void test_rom(void)
{
    TestPair p;
    uint16_t cmd;

    pair_start(&p, lsi_devices);
    qpci_config_writel(p.proxied_dev, PCI_ROM_ADDRESS,
                       LSI_ROM_ADDR | PCI_ROM_ADDRESS_ENABLE);
    cmd = qpci_config_readw(p.proxied_dev, PCI_COMMAND);
    qpci_config_writew(p.proxied_dev, PCI_COMMAND, cmd | PCI_COMMAND_MEMORY);
    for (int off = 0; off < 4096; off += 0x3fc) {
        g_assert_cmphex(qtest_readl(p.proxied, LSI_ROM_ADDR + off), ==,
                        0xa5000000 | off);
    }
    g_assert_cmphex(qtest_readb(p.proxied, LSI_ROM_ADDR + 5), ==, 0x00);
    g_assert_cmphex(qtest_readb(p.proxied, LSI_ROM_ADDR + 7), ==, 0xa5);
    /* writes to a ROM change nothing */
    qtest_writel(p.proxied, LSI_ROM_ADDR + 8, 0);
    g_assert_cmphex(qtest_readl(p.proxied, LSI_ROM_ADDR + 8), ==, 0xa5000008);
    pair_stop(&p);
}

/*
 * A read is a round trip to the device: it completes after every write
 * before it, and after the interrupts the device raised meanwhile.
 */
static void lsi_sync(QPCIDevice *dev, QPCIBar mmio)
{
    qpci_io_readl(dev, mmio, LSI_REG_SCRATCHA);
}

/*
 * INTx: a SCRIPTS "INT" instruction, fetched by the remote LSI from its RAM
 * BAR at the address the guest programmed, raises the line; reading DSTAT
 * lowers it.
 */
static void test_intx(const void *ring)
{
    g_autofree char *dir = mpqemu_tmp_dir();
    g_autofree char *sock = g_build_filename(dir, "remote.sock", NULL);
    QTestState *remote, *qts;
    QPCIDevice *dev, *isa_bridge;
    QPCIBus *bus;
    QPCIBar mmio, ram;
    uint64_t ram_addr;

    remote = mpqemu_start_remote(sock, "lsi1", "-device lsi53c895a,id=lsi1");
    qts = qtest_initf(MAIN_MACHINE "-device x-pci-proxy-dev,id=lsi1,"
                      "addr=04.0,socket=%s,ring=%s", sock, (const char *)ring);
    qtest_irq_intercept_in(qts, "ioapic");
    bus = qpci_new_pc(qts, NULL);

    /* route all four PCI interrupt lines to GUEST_IRQ, as firmware would */
    isa_bridge = qpci_device_find(bus, QPCI_DEVFN(1, 0));
    qpci_config_writel(isa_bridge, PIIX_PIRQ_ROUTE, GUEST_IRQ * 0x01010101);

    dev = qpci_device_find(bus, LSI_DEVFN);
    qpci_device_enable(dev);
    mmio = qpci_iomap(dev, 1, NULL);
    ram = qpci_iomap(dev, 2, NULL);
    ram_addr = qpci_config_readl(dev, PCI_BASE_ADDRESS_2) & ~0xfull;

    qpci_io_writel(dev, ram, 0, 0x98080000);    /* INT, always */
    qpci_io_writel(dev, ram, 4, 0x00000001);
    qpci_io_writeb(dev, mmio, LSI_REG_DIEN, LSI_DIEN_SIR);
    g_assert_false(qtest_get_irq(qts, GUEST_IRQ));

    /*
     * The DSP write may be posted: the interrupt the SCRIPTS raise is in
     * effect by the time a later read has completed, as on PCI.
     */
    qpci_io_writel(dev, mmio, LSI_REG_DSP, ram_addr);
    lsi_sync(dev, mmio);
    g_assert_true(qtest_get_irq(qts, GUEST_IRQ));
    g_assert_cmphex(qpci_io_readb(dev, mmio, LSI_REG_DSTAT) & LSI_DIEN_SIR,
                    ==, LSI_DIEN_SIR);
    g_assert_false(qtest_get_irq(qts, GUEST_IRQ));

    /* masked by the command register's interrupt disable bit */
    qpci_config_writew(dev, PCI_COMMAND, qpci_config_readw(dev, PCI_COMMAND) |
                       PCI_COMMAND_INTX_DISABLE);
    qpci_io_writel(dev, mmio, LSI_REG_DSP, ram_addr);
    lsi_sync(dev, mmio);
    g_assert_false(qtest_get_irq(qts, GUEST_IRQ));
    qpci_config_writew(dev, PCI_COMMAND, qpci_config_readw(dev, PCI_COMMAND) &
                       ~PCI_COMMAND_INTX_DISABLE);
    g_assert_true(qtest_get_irq(qts, GUEST_IRQ));
    qpci_io_readb(dev, mmio, LSI_REG_DSTAT);
    g_assert_false(qtest_get_irq(qts, GUEST_IRQ));

    g_free(dev);
    g_free(isa_bridge);
    qpci_free_pc(bus);
    qtest_quit(qts);
    qtest_quit(remote);
    mpqemu_tmp_free(g_steal_pointer(&dir));
}

/* A system reset of the main QEMU resets the remote device */
static void test_reset(void)
{
    g_autofree char *dir = mpqemu_tmp_dir();
    g_autofree char *sock = g_build_filename(dir, "remote.sock", NULL);
    QTestState *remote, *qts;
    QPCIDevice *dev;
    QPCIBus *bus;
    QPCIBar mmio;

    remote = mpqemu_start_remote(sock, "lsi1", "-device lsi53c895a,id=lsi1");
    qts = qtest_initf(MAIN_MACHINE "-device x-pci-proxy-dev,id=lsi1,"
                      "addr=04.0,socket=%s", sock);
    bus = qpci_new_pc(qts, NULL);
    dev = qpci_device_find(bus, LSI_DEVFN);
    qpci_device_enable(dev);
    mmio = qpci_iomap(dev, 1, NULL);
    qpci_io_writel(dev, mmio, LSI_REG_SCRATCHA, 0xcafef00d);
    g_assert_cmphex(qpci_io_readl(dev, mmio, LSI_REG_SCRATCHA), ==,
                    0xcafef00d);

    qtest_system_reset(qts);

    qpci_device_enable(dev);
    mmio = qpci_iomap(dev, 1, NULL);
    g_assert_cmphex(qpci_io_readl(dev, mmio, LSI_REG_SCRATCHA), ==, 0);

    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
    qtest_quit(remote);
    mpqemu_tmp_free(g_steal_pointer(&dir));
}

/* --- the fast path: posted writes, the shadow copy, a remote that stops --- */

/*
 * How long a remote stays frozen before a helper thread lets it go on,
 * well within the proxy's timeout, which is given explicitly.
 */
#define RESUME_MS           1000
#define LSI_TIMEOUT_MS      3000
#define MS                  1000    /* in the µs of g_get_monotonic_time() */

/* Whether every thread of @pid is stopped (by SIGSTOP) */
static bool process_stopped(pid_t pid)
{
    g_autofree char *dir = g_strdup_printf("/proc/%d/task", (int)pid);
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *tid;
    int stopped = 0;

    g_assert(d);
    while ((tid = g_dir_read_name(d))) {
        g_autofree char *path = g_build_filename(dir, tid, "stat", NULL);
        g_autofree char *stat = NULL;
        char *end;

        if (!g_file_get_contents(path, &stat, NULL, NULL)) {
            continue;       /* a thread that has just exited */
        }
        /* "tid (comm) S ...": comm may hold anything, the state follows it */
        end = strrchr(stat, ')');
        g_assert(end && end[1] == ' ');
        if (end[2] != 'T') {
            return false;
        }
        stopped++;
    }
    return stopped > 0;
}

/* Freeze a remote process: none of its threads runs once this returns */
static void process_stop(pid_t pid)
{
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

    g_assert_cmpint(kill(pid, SIGSTOP), ==, 0);
    while (!process_stopped(pid)) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(200);
    }
}

static void process_cont(pid_t pid)
{
    g_assert_cmpint(kill(pid, SIGCONT), ==, 0);
}

/* A failed assertion must not leave a frozen remote that ignores SIGTERM */
static void cont_on_abort(void *opaque)
{
    kill(GPOINTER_TO_INT(opaque), SIGCONT);
}

/* A thread that lets a frozen process go on after a while */
typedef struct Resumer {
    pid_t pid;
    gulong delay_us;
    GThread *thread;
} Resumer;

static gpointer resumer_run(gpointer opaque)
{
    Resumer *r = opaque;

    g_usleep(r->delay_us);
    kill(r->pid, SIGCONT);
    return NULL;
}

static void resume_later(Resumer *r, pid_t pid, unsigned delay_ms)
{
    r->pid = pid;
    r->delay_us = delay_ms * MS;
    r->thread = g_thread_new("resumer", resumer_run, r);
}

static void resume_join(Resumer *r)
{
    g_thread_join(r->thread);
}

static void bar_write(QPCIDevice *dev, QPCIBar bar, uint64_t off,
                      unsigned size, uint64_t val)
{
    switch (size) {
    case 1:
        qpci_io_writeb(dev, bar, off, val);
        break;
    case 2:
        qpci_io_writew(dev, bar, off, val);
        break;
    case 4:
        qpci_io_writel(dev, bar, off, val);
        break;
    default:
        qpci_io_writeq(dev, bar, off, val);
        break;
    }
}

/* An LSI behind a proxy with properties @props, its BARs mapped */
typedef struct LsiProxy {
    char *dir;
    QTestState *remote;
    QTestState *qts;
    pid_t remote_pid;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar io;
    QPCIBar mmio;
    QPCIBar ram;
} LsiProxy;

static void lsi_start(LsiProxy *l, const char *props)
{
    g_autofree char *sock = NULL;

    l->dir = mpqemu_tmp_dir();
    sock = g_build_filename(l->dir, "remote.sock", NULL);
    l->remote = mpqemu_start_remote(sock, "lsi1",
                                    "-device lsi53c895a,id=lsi1");
    l->qts = qtest_initf(MAIN_MACHINE "-device x-pci-proxy-dev,id=lsi1,"
                         "addr=04.0,socket=%s,timeout=%d,%s", sock,
                         LSI_TIMEOUT_MS, props);
    l->remote_pid = qtest_pid(l->remote);
    g_assert_cmpint(l->remote_pid, >, 0);
    qtest_add_abrt_handler(cont_on_abort, GINT_TO_POINTER(l->remote_pid));
    l->bus = qpci_new_pc(l->qts, NULL);
    l->dev = qpci_device_find(l->bus, LSI_DEVFN);
    g_assert(l->dev);
    qpci_device_enable(l->dev);
    l->io = qpci_iomap(l->dev, 0, NULL);
    l->mmio = qpci_iomap(l->dev, 1, NULL);
    l->ram = qpci_iomap(l->dev, 2, NULL);
}

static void lsi_stop(LsiProxy *l)
{
    qtest_remove_abrt_handler(GINT_TO_POINTER(l->remote_pid));
    g_free(l->dev);
    qpci_free_pc(l->bus);
    qtest_quit(l->qts);
    qtest_quit(l->remote);
    mpqemu_tmp_free(l->dir);
}

/* What the test wrote to the scratch registers and the start of SCRIPTS RAM */
#define LSI_RAM_BYTES       0x800
#define ORDERING_WRITES     (8 * MPQEMU_RING_ENTRIES + 7)

typedef struct LsiModel {
    uint8_t scratch[LSI_NR_SCRATCH * 4];
    uint8_t ram[LSI_RAM_BYTES];
} LsiModel;

static uint64_t lsi_scratch_reg(int n)
{
    return n ? LSI_REG_SCRATCHB + (n - 1) * 4 : LSI_REG_SCRATCHA;
}

/* What the device holds, as the model to start from */
static void lsi_model_read(LsiProxy *l, LsiModel *m)
{
    for (int n = 0; n < LSI_NR_SCRATCH; n++) {
        stl_le_p(m->scratch + n * 4,
                 qpci_io_readl(l->dev, l->mmio, lsi_scratch_reg(n)));
    }
    for (int off = 0; off < LSI_RAM_BYTES; off += 8) {
        stq_le_p(m->ram + off, qpci_io_readq(l->dev, l->ram, off));
    }
}

/*
 * Write @i of the sequence: odd ones to a scratch register (1, 2 or 4
 * bytes), even ones to SCRIPTS RAM (1 to 8 bytes), each with a value of
 * its own, overwriting in part what earlier ones wrote.
 */
static void lsi_write(LsiProxy *l, LsiModel *m, int i)
{
    uint64_t val = 0xa5a5a5a5a5a5a5a5ull ^ (i * 0x9e3779b97f4a7c15ull);

    if (i % 2) {
        int n = i * 7 % LSI_NR_SCRATCH;
        unsigned size = 1 << (i / 2 % 3);
        unsigned byte = i / 6 % (4 / size) * size;

        bar_write(l->dev, l->mmio, lsi_scratch_reg(n) + byte, size, val);
        stn_le_p(m->scratch + n * 4 + byte, size, val);
    } else {
        unsigned size = 1 << (i / 2 % 4);
        uint64_t off = (i * 52 % LSI_RAM_BYTES) & ~(uint64_t)(size - 1);

        bar_write(l->dev, l->ram, off, size, val);
        stn_le_p(m->ram + off, size, val);
    }
}

/* A read returns what the last write before it left there */
static void lsi_check_scratch(LsiProxy *l, LsiModel *m, int n, GArray *seen)
{
    uint64_t val = qpci_io_readl(l->dev, l->mmio, lsi_scratch_reg(n));

    g_assert_cmphex(val, ==, (uint32_t)ldl_le_p(m->scratch + n * 4));
    g_array_append_val(seen, val);
}

static void lsi_check_ram(LsiProxy *l, LsiModel *m, uint64_t off,
                          GArray *seen)
{
    uint64_t val = qpci_io_readq(l->dev, l->ram, off);

    g_assert_cmphex(val, ==, ldq_le_p(m->ram + off));
    g_array_append_val(seen, val);
}

static void lsi_check_all(LsiProxy *l, LsiModel *m, GArray *seen)
{
    for (int n = 0; n < LSI_NR_SCRATCH; n++) {
        lsi_check_scratch(l, m, n, seen);
    }
    for (int off = 0; off < LSI_RAM_BYTES; off += 8) {
        lsi_check_ram(l, m, off, seen);
    }
}

/*
 * Many more writes than the ring has entries, with reads in between, then
 * a ring that fills up while the remote is frozen. Returns every value read.
 */
static GArray *scenario_ordering(bool posted)
{
    GArray *seen = g_array_new(false, false, sizeof(uint64_t));
    g_autofree char *props = g_strdup_printf("posted-writes=%s",
                                             posted ? "on" : "off");
    int i = 0, waited = posted ? MPQEMU_RING_ENTRIES : 0;
    LsiModel m;
    LsiProxy l;
    Resumer r;
    gint64 start;

    lsi_start(&l, props);
    lsi_model_read(&l, &m);

    for (; i < ORDERING_WRITES; i++) {
        lsi_write(&l, &m, i);
        if (i % 37 == 36) {
            /* the register or the RAM just written, and another one */
            if (i % 2) {
                lsi_check_scratch(&l, &m, i * 7 % LSI_NR_SCRATCH, seen);
            } else {
                lsi_check_ram(&l, &m, (i * 52 % LSI_RAM_BYTES) & ~7ull, seen);
            }
            lsi_check_scratch(&l, &m, i % LSI_NR_SCRATCH, seen);
        }
    }
    lsi_check_all(&l, &m, seen);

    /*
     * Frozen remote: posted writes fill the ring and return at once, the
     * one after a full ring waits for the remote; unposted ones wait from
     * the first.
     */
    process_stop(l.remote_pid);
    start = g_get_monotonic_time();
    resume_later(&r, l.remote_pid, RESUME_MS);
    for (int k = 0; k <= MPQEMU_RING_ENTRIES; k++, i++) {
        gint64 t0 = g_get_monotonic_time(), took;

        if (k == waited) {
            /* the remote is still frozen: what came before did not wait */
            g_assert_cmpint(t0 - start, <, RESUME_MS * MS / 2);
        }
        lsi_write(&l, &m, i);
        took = g_get_monotonic_time() - t0;
        if (k == waited) {
            g_test_message("write %d with the remote frozen took %" PRId64
                           " us", k + 1, took);
            g_assert_cmpint(took, >=, RESUME_MS * MS / 2);
        }
    }
    resume_join(&r);
    lsi_check_all(&l, &m, seen);

    lsi_stop(&l);
    return seen;
}

/* Posted or not, reads see the writes in order and read the same values */
static void test_posted_ordering(void)
{
    g_autoptr(GArray) posted = scenario_ordering(true);
    g_autoptr(GArray) unposted = scenario_ordering(false);

    g_assert_cmpuint(posted->len, ==, unposted->len);
    for (guint i = 0; i < posted->len; i++) {
        g_assert_cmphex(g_array_index(posted, uint64_t, i), ==,
                        g_array_index(unposted, uint64_t, i));
    }
}

/* Time one write of @val to SCRATCHA through @bar, in µs */
static gint64 timed_scratch_write(LsiProxy *l, QPCIBar bar, uint32_t val)
{
    gint64 t0 = g_get_monotonic_time();

    qpci_io_writel(l->dev, bar, LSI_REG_SCRATCHA, val);
    return g_get_monotonic_time() - t0;
}

/* Writes that must not be posted: to an I/O BAR, and while INTx is up */
static void test_unposted_writes(void)
{
    QPCIDevice *isa_bridge;
    uint64_t ram_addr;
    LsiProxy l;
    Resumer r;

    lsi_start(&l, "posted-writes=on");
    qtest_irq_intercept_in(l.qts, "ioapic");
    isa_bridge = qpci_device_find(l.bus, QPCI_DEVFN(1, 0));
    qpci_config_writel(isa_bridge, PIIX_PIRQ_ROUTE, GUEST_IRQ * 0x01010101);
    ram_addr = qpci_config_readl(l.dev, PCI_BASE_ADDRESS_2) & ~0xfull;

    /* a memory write does not wait for a frozen remote ... */
    process_stop(l.remote_pid);
    g_assert_cmpint(timed_scratch_write(&l, l.mmio, 1), <, RESUME_MS * MS / 2);
    process_cont(l.remote_pid);
    g_assert_cmphex(qpci_io_readl(l.dev, l.mmio, LSI_REG_SCRATCHA), ==, 1);

    /* ... an I/O write does */
    process_stop(l.remote_pid);
    resume_later(&r, l.remote_pid, RESUME_MS);
    g_assert_cmpint(timed_scratch_write(&l, l.io, 2), >=, RESUME_MS * MS / 2);
    resume_join(&r);
    g_assert_cmphex(qpci_io_readl(l.dev, l.mmio, LSI_REG_SCRATCHA), ==, 2);

    /* INTx up (a SCRIPTS INT instruction): memory writes wait too ... */
    qpci_io_writel(l.dev, l.ram, 0, 0x98080000);
    qpci_io_writel(l.dev, l.ram, 4, 0x00000001);
    qpci_io_writeb(l.dev, l.mmio, LSI_REG_DIEN, LSI_DIEN_SIR);
    qpci_io_writel(l.dev, l.mmio, LSI_REG_DSP, ram_addr);
    lsi_sync(l.dev, l.mmio);
    g_assert_true(qtest_get_irq(l.qts, GUEST_IRQ));
    process_stop(l.remote_pid);
    resume_later(&r, l.remote_pid, RESUME_MS);
    g_assert_cmpint(timed_scratch_write(&l, l.mmio, 3), >=, RESUME_MS * MS / 2);
    resume_join(&r);
    g_assert_cmphex(qpci_io_readl(l.dev, l.mmio, LSI_REG_SCRATCHA), ==, 3);
    g_assert_true(qtest_get_irq(l.qts, GUEST_IRQ));

    /* ... until the guest has acknowledged it */
    g_assert_cmphex(qpci_io_readb(l.dev, l.mmio, LSI_REG_DSTAT) & LSI_DIEN_SIR,
                    ==, LSI_DIEN_SIR);
    g_assert_false(qtest_get_irq(l.qts, GUEST_IRQ));
    process_stop(l.remote_pid);
    g_assert_cmpint(timed_scratch_write(&l, l.mmio, 4), <, RESUME_MS * MS / 2);
    process_cont(l.remote_pid);
    g_assert_cmphex(qpci_io_readl(l.dev, l.mmio, LSI_REG_SCRATCHA), ==, 4);

    g_free(isa_bridge);
    lsi_stop(&l);
}

/* An NVMe controller behind a proxy with a short timeout */
#define NVME_DEVFN          QPCI_DEVFN(4, 0)
#define NVME_REG_CAP        0x00
#define NVME_REG_VS         0x08
#define NVME_REG_INTMS      0x0c
#define NVME_REG_INTMC      0x10
#define NVME_REG_CC         0x14
#define NVME_REG_CSTS       0x1c
#define NVME_REG_AQA        0x24
#define NVME_REG_ASQ        0x28
#define NVME_REG_ACQ        0x30
#define NVME_CC_ENABLE      0x00460001  /* EN, 64-byte SQ, 16-byte CQ entries */
#define NVME_CSTS_RDY       1
#define NVME_TIMEOUT_MS     2000
#define NVME_RESUME_MS      500

typedef struct NvmeProxy {
    char *dir;
    QTestState *remote;
    QTestState *qts;
    pid_t remote_pid;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar0;
} NvmeProxy;

static void nvme_start(NvmeProxy *n, const char *props)
{
    g_autofree char *sock = NULL;
    g_autofree char *image = NULL;
    g_autofree char *devices = NULL;
    int fd;

    n->dir = mpqemu_tmp_dir();
    sock = g_build_filename(n->dir, "remote.sock", NULL);
    image = g_build_filename(n->dir, "nvme.img", NULL);
    fd = open(image, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    g_assert(fd >= 0);
    g_assert_cmpint(ftruncate(fd, 1024 * 1024), ==, 0);
    close(fd);

    devices = g_strdup_printf("-drive id=d0,file=%s,format=raw,if=none "
                              "-device nvme,id=nvme0,serial=mpq,drive=d0",
                              image);
    n->remote = mpqemu_start_remote(sock, "nvme0", devices);
    n->qts = qtest_initf(MAIN_MACHINE "-device x-pci-proxy-dev,id=nvme0,"
                         "addr=04.0,socket=%s,timeout=%d,%s", sock,
                         NVME_TIMEOUT_MS, props);
    n->remote_pid = qtest_pid(n->remote);
    g_assert_cmpint(n->remote_pid, >, 0);
    qtest_add_abrt_handler(cont_on_abort, GINT_TO_POINTER(n->remote_pid));
    n->bus = qpci_new_pc(n->qts, NULL);
    n->dev = qpci_device_find(n->bus, NVME_DEVFN);
    g_assert(n->dev);
    qpci_device_enable(n->dev);
    n->bar0 = qpci_iomap(n->dev, 0, NULL);
}

static void nvme_stop(NvmeProxy *n)
{
    qtest_remove_abrt_handler(GINT_TO_POINTER(n->remote_pid));
    g_free(n->dev);
    qpci_free_pc(n->bus);
    qtest_quit(n->qts);
    qtest_quit(n->remote);
    mpqemu_tmp_free(n->dir);
}

static uint32_t nvme_readl(NvmeProxy *n, uint64_t reg)
{
    return qpci_io_readl(n->dev, n->bar0, reg);
}

static uint64_t nvme_readq(NvmeProxy *n, uint64_t reg)
{
    return qpci_io_readq(n->dev, n->bar0, reg);
}

/* Time one write, in µs */
static gint64 nvme_timed_writel(NvmeProxy *n, uint64_t reg, uint32_t val)
{
    gint64 t0 = g_get_monotonic_time();

    qpci_io_writel(n->dev, n->bar0, reg, val);
    return g_get_monotonic_time() - t0;
}

/* The controller comes up with admin queues in guest RAM */
static void nvme_check_enable(NvmeProxy *n)
{
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

    g_assert_cmphex(nvme_readl(n, NVME_REG_CSTS) & NVME_CSTS_RDY, ==, 0);
    qpci_io_writel(n->dev, n->bar0, NVME_REG_AQA, 0x00070007);
    qpci_io_writeq(n->dev, n->bar0, NVME_REG_ASQ, 0x01000000);
    qpci_io_writeq(n->dev, n->bar0, NVME_REG_ACQ, 0x01001000);
    qpci_io_writel(n->dev, n->bar0, NVME_REG_CC, NVME_CC_ENABLE);
    /* shadowed registers that were just written read back the new values */
    g_assert_cmphex(nvme_readl(n, NVME_REG_AQA), ==, 0x00070007);
    g_assert_cmphex(nvme_readq(n, NVME_REG_ASQ), ==, 0x01000000);
    g_assert_cmphex(nvme_readq(n, NVME_REG_ACQ), ==, 0x01001000);
    g_assert_cmphex(nvme_readl(n, NVME_REG_CC), ==, NVME_CC_ENABLE);
    while (!(nvme_readl(n, NVME_REG_CSTS) & NVME_CSTS_RDY)) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
    }
    g_assert_cmphex(nvme_readl(n, NVME_REG_CSTS), ==, NVME_CSTS_RDY);
}

/*
 * Shadowed registers are read from the copy in shared memory: with the
 * remote frozen they still read right, at once. A write makes the copy
 * stale: the next read waits for the device and sees the write.
 */
static void test_shadow_frozen(void)
{
    uint32_t vs, cc, aqa, val;
    uint64_t cap, asq;
    gint64 t0, took;
    NvmeProxy n;
    Resumer r;

    nvme_start(&n, "shadow=on");
    /* the first read goes to the device, which fills the copy */
    vs = nvme_readl(&n, NVME_REG_VS);
    g_assert_cmphex(vs >> 16, ==, 1);                       /* NVMe 1.x */
    cap = nvme_readq(&n, NVME_REG_CAP);
    g_assert_cmphex(cap, !=, UINT64_MAX);
    g_assert_cmpuint(cap & 0xffff, >=, 7);                  /* MQES */
    cc = nvme_readl(&n, NVME_REG_CC);
    aqa = nvme_readl(&n, NVME_REG_AQA);
    asq = nvme_readq(&n, NVME_REG_ASQ);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_VS), ==, vs);

    process_stop(n.remote_pid);
    t0 = g_get_monotonic_time();
    g_assert_cmphex(nvme_readl(&n, NVME_REG_VS), ==, vs);
    g_assert_cmphex(nvme_readq(&n, NVME_REG_CAP), ==, cap);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_CAP), ==, (uint32_t)cap);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_CAP + 4), ==, cap >> 32);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_CC), ==, cc);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_AQA), ==, aqa);
    g_assert_cmphex(nvme_readq(&n, NVME_REG_ASQ), ==, asq);
    took = g_get_monotonic_time() - t0;
    g_test_message("7 shadowed reads with the remote frozen: %" PRId64 " us",
                   took);
    g_assert_cmpint(took, <, NVME_TIMEOUT_MS * MS / 2);

    /* AQA does not need its writes synchronous: posted, no waiting */
    took = nvme_timed_writel(&n, NVME_REG_AQA, 0x000f0003);
    g_assert_cmpint(took, <, NVME_TIMEOUT_MS * MS / 2);

    /* not from the stale copy: the read waits for the device */
    resume_later(&r, n.remote_pid, NVME_RESUME_MS);
    t0 = g_get_monotonic_time();
    val = nvme_readl(&n, NVME_REG_AQA);
    took = g_get_monotonic_time() - t0;
    resume_join(&r);
    g_test_message("AQA read after its write took %" PRId64 " us", took);
    g_assert_cmphex(val, ==, 0x000f0003);
    g_assert_cmpint(took, >=, NVME_RESUME_MS * MS / 2);

    /* and the device is healthy */
    g_assert_cmphex(nvme_readl(&n, NVME_REG_VS), ==, vs);
    g_assert_cmphex(nvme_readq(&n, NVME_REG_CAP), ==, cap);
    nvme_check_enable(&n);
    nvme_stop(&n);
}

/* Without the shadow, the same read waits out the timeout and fails */
static void test_shadow_off_frozen(void)
{
    gint64 t0, took;
    NvmeProxy n;
    uint32_t vs;

    nvme_start(&n, "shadow=off");
    vs = nvme_readl(&n, NVME_REG_VS);
    g_assert_cmphex(vs >> 16, ==, 1);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_VS), ==, vs);

    process_stop(n.remote_pid);
    t0 = g_get_monotonic_time();
    vs = nvme_readl(&n, NVME_REG_VS);
    took = g_get_monotonic_time() - t0;
    process_cont(n.remote_pid);
    g_test_message("VS read with the remote frozen took %" PRId64 " us",
                   took);
    g_assert_cmpint(took, >=, (NVME_TIMEOUT_MS - 50) * MS);
    /* the device is offline from then on */
    g_assert_cmphex(vs, ==, UINT32_MAX);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_VS), ==, UINT32_MAX);
    g_assert_cmphex(nvme_readq(&n, NVME_REG_CAP), ==, UINT64_MAX);
    nvme_stop(&n);
}

/* Writes the device keeps synchronous wait for it; the others do not */
static void test_sync_write(void)
{
    gint64 took;
    NvmeProxy n;
    Resumer r;
    uint32_t vs;

    nvme_start(&n, "posted-writes=on");
    vs = nvme_readl(&n, NVME_REG_VS);
    g_assert_cmphex(vs >> 16, ==, 1);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_INTMS), ==, 0);

    process_stop(n.remote_pid);
    took = nvme_timed_writel(&n, NVME_REG_ASQ, 0x12345000);
    g_assert_cmpint(took, <, NVME_TIMEOUT_MS * MS / 2);
    /* INTMS waits until the remote has run again */
    resume_later(&r, n.remote_pid, NVME_RESUME_MS);
    took = nvme_timed_writel(&n, NVME_REG_INTMS, 1);
    resume_join(&r);
    g_test_message("INTMS write with the remote frozen for %d ms took %"
                   PRId64 " us", NVME_RESUME_MS, took);
    g_assert_cmpint(took, >=, NVME_RESUME_MS * MS / 2);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_INTMS), ==, 1);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_ASQ), ==, 0x12345000);
    qpci_io_writel(n.dev, n.bar0, NVME_REG_INTMC, 1);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_INTMS), ==, 0);

    /* frozen for good: INTMC does not return before the timeout */
    process_stop(n.remote_pid);
    took = nvme_timed_writel(&n, NVME_REG_INTMC, 1);
    process_cont(n.remote_pid);
    g_test_message("INTMC write with the remote frozen took %" PRId64 " us",
                   took);
    g_assert_cmpint(took, >=, (NVME_TIMEOUT_MS - 50) * MS);
    g_assert_cmphex(nvme_readl(&n, NVME_REG_VS), ==, UINT32_MAX);
    nvme_stop(&n);
}

/* --- a failed proxy connected again, to a replacement --- */

static void reattach_expect_error(QTestState *qts, const char *sock,
                                  const char *message)
{
    QDict *resp = qtest_qmp(qts, "{'execute': 'x-reattach-proxy', "
                            "'arguments': {'device': 'lsi1', 'socket': %s}}",
                            sock);
    const char *desc;

    g_assert_true(qdict_haskey(resp, "error"));
    desc = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");
    g_test_message("x-reattach-proxy: %s", desc);
    g_assert_nonnull(strstr(desc, message));
    qobject_unref(resp);
}

/*
 * The remote goes away: the proxy fails (all-ones) and says so. A
 * replacement of another kind is refused and changes nothing; one of the
 * same kind brings the device back, reset, with the command register the
 * guest wrote, and the same BAR addresses.
 */
static void test_reattach(void)
{
    g_autofree char *dir = mpqemu_tmp_dir();
    g_autofree char *sock1 = g_build_filename(dir, "first.sock", NULL);
    g_autofree char *sock2 = g_build_filename(dir, "other.sock", NULL);
    g_autofree char *sock3 = g_build_filename(dir, "same.sock", NULL);
    QTestState *remote, *other, *qts;
    QDict *event, *data;
    QPCIDevice *dev;
    QPCIBus *bus;
    QPCIBar mmio;
    uint16_t cmd;
    pid_t pid;

    remote = mpqemu_start_remote(sock1, "lsi1", "-device lsi53c895a,id=lsi1");
    pid = qtest_pid(remote);
    qts = qtest_initf(MAIN_MACHINE "-device x-pci-proxy-dev,id=lsi1,"
                      "addr=04.0,socket=%s", sock1);
    bus = qpci_new_pc(qts, NULL);
    dev = qpci_device_find(bus, LSI_DEVFN);
    qpci_device_enable(dev);
    mmio = qpci_iomap(dev, 1, NULL);
    cmd = qpci_config_readw(dev, PCI_COMMAND);
    g_assert_true(cmd & PCI_COMMAND_MEMORY);
    qpci_io_writel(dev, mmio, LSI_REG_SCRATCHA, 0xcafef00d);
    g_assert_cmphex(qpci_io_readl(dev, mmio, LSI_REG_SCRATCHA), ==,
                    0xcafef00d);
    reattach_expect_error(qts, sock1, "is connected");

    qtest_quit(remote);
    event = qtest_qmp_eventwait_ref(qts, "REMOTE_DEVICE_FAILED");
    data = qdict_get_qdict(event, "data");
    g_assert_cmpstr(qdict_get_str(data, "device"), ==, "lsi1");
    g_assert_cmpstr(qdict_get_str(data, "cause"), ==, "disconnected");
    g_assert_cmpint(qdict_get_int(data, "pid"), ==, pid);
    qobject_unref(event);
    g_assert_cmphex(qpci_io_readl(dev, mmio, LSI_REG_SCRATCHA), ==,
                    UINT32_MAX);

    reattach_expect_error(qts, sock1, "cannot connect");
    other = mpqemu_start_remote(sock2, "rng", "-device virtio-rng-pci,id=rng");
    reattach_expect_error(qts, sock2, "vendor and device ID");
    qtest_quit(other);
    g_assert_cmphex(qpci_io_readl(dev, mmio, LSI_REG_SCRATCHA), ==,
                    UINT32_MAX);
    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, 0xffff);

    remote = mpqemu_start_remote(sock3, "lsi1", "-device lsi53c895a,id=lsi1");
    qtest_qmp_assert_success(qts, "{'execute': 'x-reattach-proxy', "
                             "'arguments': {'device': 'lsi1', "
                             "'socket': %s}}", sock3);
    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, 0x1000);
    g_assert_cmphex(qpci_config_readw(dev, PCI_COMMAND), ==, cmd);
    g_assert_cmphex(qpci_io_readl(dev, mmio, LSI_REG_SCRATCHA), ==, 0);
    qpci_io_writel(dev, mmio, LSI_REG_SCRATCHA, 0x12345678);
    g_assert_cmphex(qpci_io_readl(dev, mmio, LSI_REG_SCRATCHA), ==,
                    0x12345678);

    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
    qtest_quit(remote);
    mpqemu_tmp_free(g_steal_pointer(&dir));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    qtest_add_func("/mpqemu/proxy/config/lsi", test_config_lsi);
    qtest_add_func("/mpqemu/proxy/config/virtio", test_config_virtio);
    qtest_add_func("/mpqemu/proxy/bars/lsi", test_bars_lsi);
    qtest_add_func("/mpqemu/proxy/bars/virtio", test_bars_virtio);
    /* BAR accesses through the shared-memory ring, and over the socket */
    qtest_add_data_func("/mpqemu/proxy/registers/ring", "on",
                        test_register_access);
    qtest_add_data_func("/mpqemu/proxy/registers/socket", "off",
                        test_register_access);
    qtest_add_func("/mpqemu/proxy/rom", test_rom);
    qtest_add_data_func("/mpqemu/proxy/intx/ring", "on", test_intx);
    qtest_add_data_func("/mpqemu/proxy/intx/socket", "off", test_intx);
    qtest_add_func("/mpqemu/proxy/reset", test_reset);
    qtest_add_func("/mpqemu/proxy/reattach", test_reattach);
    qtest_add_func("/mpqemu/proxy/posted/ordering", test_posted_ordering);
    qtest_add_func("/mpqemu/proxy/posted/unposted", test_unposted_writes);
    qtest_add_func("/mpqemu/proxy/posted/sync-write", test_sync_write);
    qtest_add_func("/mpqemu/proxy/shadow/frozen", test_shadow_frozen);
    qtest_add_func("/mpqemu/proxy/shadow/off-frozen", test_shadow_off_frozen);

    return g_test_run();
}
