/*
 * mmio-lat: measure the average cost of one read of a PCI BAR register,
 * from inside a Linux guest.
 *
 * Memory BARs are mapped through /sys/bus/pci/devices/<bdf>/resource<N>
 * (boot the guest with iomem=relaxed when a driver has claimed the BAR);
 * I/O BARs are read with in{b,w,l} after ioperm().
 *
 * With -W, the register is read once and that value is written back to it
 * COUNT times instead (so a plain read/write register keeps its contents);
 * one read after the loop makes sure posted writes have reached the device
 * before the clock stops.  "ns_per_read" is then the cost of one write.
 *
 * With -t SECONDS, the loop runs for that long instead of COUNT times (it
 * checks the clock every BATCH accesses), so that the duration of a run does
 * not depend on a guess of the cost of one access.
 *
 * Usage: mmio-lat [-n COUNT | -t SECONDS] [-w 1|2|4] [-W] BDF BAR OFFSET
 * Prints one line of key=value pairs, e.g.
 *   bdf=0000:00:03.0 bar=1 kind=mem offset=0x34 width=4 count=10000 op=read
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
#define BATCH   64            /* accesses between two looks at the clock (-t) */

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
    fprintf(stderr, "usage: mmio-lat [-n COUNT | -t SECONDS] [-w 1|2|4] [-W] "
            "BDF BAR OFFSET\n");
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

static void mem_write(volatile void *p, int width, uint32_t value)
{
    switch (width) {
    case 1:
        *(volatile uint8_t *)p = (uint8_t)value;
        break;
    case 2:
        *(volatile uint16_t *)p = (uint16_t)value;
        break;
    default:
        *(volatile uint32_t *)p = value;
        break;
    }
}

static void port_write(unsigned port, int width, uint32_t value)
{
    switch (width) {
    case 1:
        outb((uint8_t)value, port);
        break;
    case 2:
        outw((uint16_t)value, port);
        break;
    default:
        outl(value, port);
        break;
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
    double seconds = 0;
    uint64_t t_end = 0;
    int width = 4;
    int write_back = 0;
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

    while ((opt = getopt(argc, argv, "n:t:w:W")) != -1) {
        switch (opt) {
        case 'n':
            count = strtol(optarg, NULL, 0);
            break;
        case 't':
            seconds = strtod(optarg, NULL);
            if (seconds <= 0) {
                usage();
            }
            break;
        case 'w':
            width = atoi(optarg);
            break;
        case 'W':
            write_back = 1;
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
        if (write_back) {
            port_write(port, width, value);
        }
        t0 = now_ns();
        t_end = t0 + (uint64_t)(seconds * 1e9);
        for (i = 0; seconds ? (i % BATCH || now_ns() < t_end) : i < count; i++) {
            if (write_back) {
                port_write(port, width, value);
            } else {
                value = port_read(port, width);
            }
        }
        if (write_back) {
            (void)port_read(port, width);
        }
        t1 = now_ns();
        count = i;
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
        if (write_back) {
            mem_write(reg, width, value);
        }
        t0 = now_ns();
        t_end = t0 + (uint64_t)(seconds * 1e9);
        for (i = 0; seconds ? (i % BATCH || now_ns() < t_end) : i < count; i++) {
            if (write_back) {
                mem_write(reg, width, value);
            } else {
                value = mem_read(reg, width);
            }
        }
        if (write_back) {
            (void)mem_read(reg, width); /* flushes posted writes */
        }
        t1 = now_ns();
        count = i;
        munmap((void *)base, map_len);
    } else {
        fprintf(stderr, "mmio-lat: BAR %d of %s is neither I/O nor memory\n",
                bar, bdf);
        return 1;
    }

    printf("bdf=%s bar=%d kind=%s offset=0x%" PRIx64 " width=%d count=%ld "
           "op=%s value=0x%0*" PRIx32 " total_ns=%" PRIu64 " ns_per_read=%.1f\n",
           bdf, bar, kind, offset, width, count,
           write_back ? "write" : "read", width * 2, value,
           t1 - t0, (double)(t1 - t0) / (double)count);
    return 0;
}
