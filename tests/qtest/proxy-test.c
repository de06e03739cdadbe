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
#include "mpqemu-qtest.h"

#define LSI_DEVFN           QPCI_DEVFN(4, 0)
#define LSI_REG_DSTAT       0x0c
#define LSI_REG_DSP         0x2c
#define LSI_REG_SCRATCHA    0x34
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

    qpci_io_writel(dev, mmio, LSI_REG_DSP, ram_addr);
    g_assert_true(qtest_get_irq(qts, GUEST_IRQ));
    g_assert_cmphex(qpci_io_readb(dev, mmio, LSI_REG_DSTAT) & LSI_DIEN_SIR,
                    ==, LSI_DIEN_SIR);
    g_assert_false(qtest_get_irq(qts, GUEST_IRQ));

    /* masked by the command register's interrupt disable bit */
    qpci_config_writew(dev, PCI_COMMAND, qpci_config_readw(dev, PCI_COMMAND) |
                       PCI_COMMAND_INTX_DISABLE);
    qpci_io_writel(dev, mmio, LSI_REG_DSP, ram_addr);
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

    return g_test_run();
}
