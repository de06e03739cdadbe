/*
 * mmio-lat: measure the average cost of one read of a PCI BAR register,
 * from inside a Linux guest.
 *
 * Memory BARs are mapped through /sys/bus/pci/devices/<bdf>/resource<N>
 * (boot the guest with iomem=relaxed when a driver has claimed the BAR);
 * I/O BARs are read with in{b,w,l} after ioperm().
 *
 * Usage: mmio-lat [-n COUNT] [-w 1|2|4] BDF BAR OFFSET
 * Prints one line of key=value pairs, e.g.
 *   bdf=0000:00:03.0 bar=1 kind=mem offset=0x34 width=4 count=10000
 *   value=0x00000000 total_ns=... ns_per_read=...
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RES_IO  0x00000100UL  /* IORESOURCE_IO */
#define RES_MEM 0x00000200UL  /* IORESOURCE_MEM */

struct bar_info {
    uint64_t start;
    uint64_t end;
    uint64_t flags;
};

static void die(const char *what)
{
    fprintf(stderr, "mmio-lat: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: mmio-lat [-n COUNT] [-w 1|2|4] BDF BAR OFFSET\n");
    exit(2);
}

/* Line <bar> of the sysfs "resource" file: "0xSTART 0xEND 0xFLAGS". */
static struct bar_info read_bar(const char *bdf, int bar)
{
    char path[256];
    char line[256];
    struct bar_info info = { 0, 0, 0 };
    FILE *f;
    int i;

    snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource", bdf);
    f = fopen(path, "r");
    if (!f) {
        die(path);
    }
    for (i = 0; i <= bar; i++) {
        if (!fgets(line, sizeof(line), f)) {
            fprintf(stderr, "mmio-lat: %s has no line for BAR %d\n", path, bar);
            exit(1);
        }
    }
    fclose(f);
    if (sscanf(line, "%" SCNx64 " %" SCNx64 " %" SCNx64,
               &info.start, &info.end, &info.flags) != 3) {
        fprintf(stderr, "mmio-lat: cannot parse '%s'\n", line);
        exit(1);
    }
    return info;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint32_t mem_read(volatile void *p, int width)
{
    switch (width) {
    case 1:
        return *(volatile uint8_t *)p;
    case 2:
        return *(volatile uint16_t *)p;
    default:
        return *(volatile uint32_t *)p;
    }
}

static uint32_t port_read(unsigned port, int width)
{
    switch (width) {
    case 1:
        return inb(port);
    case 2:
        return inw(port);
    default:
        return inl(port);
    }
}

int main(int argc, char **argv)
{
    long count = 10000;
    int width = 4;
    int opt;
    const char *bdf;
    int bar;
    uint64_t offset;
    struct bar_info info;
    uint64_t bar_len;
    uint32_t value = 0;
    uint64_t t0, t1;
    const char *kind;
    long i;

    while ((opt = getopt(argc, argv, "n:w:")) != -1) {
        switch (opt) {
        case 'n':
            count = strtol(optarg, NULL, 0);
            break;
        case 'w':
            width = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (argc - optind != 3 || count <= 0 ||
        (width != 1 && width != 2 && width != 4)) {
        usage();
    }
    bdf = argv[optind];
    bar = atoi(argv[optind + 1]);
    offset = strtoull(argv[optind + 2], NULL, 0);
    if (bar < 0 || bar > 5) {
        usage();
    }

    info = read_bar(bdf, bar);
    bar_len = info.end - info.start + 1;
    if (info.start == 0 || offset + width > bar_len) {
        fprintf(stderr, "mmio-lat: BAR %d of %s is unassigned or too small "
                "(start 0x%" PRIx64 ", length 0x%" PRIx64 ")\n",
                bar, bdf, info.start, bar_len);
        return 1;
    }

    if (info.flags & RES_IO) {
        unsigned port = (unsigned)(info.start + offset);

        kind = "io";
        if (ioperm(port, width, 1) < 0) {
            die("ioperm");
        }
        value = port_read(port, width); /* warm up */
        t0 = now_ns();
        for (i = 0; i < count; i++) {
            value = port_read(port, width);
        }
        t1 = now_ns();
    } else if (info.flags & RES_MEM) {
        char path[256];
        long page = sysconf(_SC_PAGESIZE);
        uint64_t in_page = info.start & (uint64_t)(page - 1);
        size_t map_len = (size_t)((in_page + bar_len + page - 1) & ~(uint64_t)(page - 1));
        volatile uint8_t *base;
        volatile uint8_t *reg;
        int fd;

        kind = "mem";
        snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource%d",
                 bdf, bar);
        fd = open(path, O_RDWR | O_SYNC);
        if (fd < 0) {
            die(path);
        }
        /* The kernel maps the page holding the BAR start at file offset 0. */
        base = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED) {
            die("mmap (boot with iomem=relaxed if a driver owns the BAR)");
        }
        close(fd);
        reg = base + in_page + offset;
        value = mem_read(reg, width); /* warm up */
        t0 = now_ns();
        for (i = 0; i < count; i++) {
            value = mem_read(reg, width);
        }
        t1 = now_ns();
        munmap((void *)base, map_len);
    } else {
        fprintf(stderr, "mmio-lat: BAR %d of %s is neither I/O nor memory\n",
                bar, bdf);
        return 1;
    }

    printf("bdf=%s bar=%d kind=%s offset=0x%" PRIx64 " width=%d count=%ld "
           "value=0x%0*" PRIx32 " total_ns=%" PRIu64 " ns_per_read=%.1f\n",
           bdf, bar, kind, offset, width, count, width * 2, value,
           t1 - t0, (double)(t1 - t0) / (double)count);
    return 0;
}
