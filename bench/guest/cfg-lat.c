/*
 * cfg-lat: measure the average cost of one PCI config space read, from
 * inside a Linux guest.
 *
 * Reads one dword (4 bytes, aligned) of /sys/bus/pci/devices/<bdf>/config
 * with pread() COUNT times.  The kernel turns each aligned 4-byte read into
 * one pci_read_config_dword(), i.e. one config cycle (port 0xcf8/0xcfc on
 * the i440FX, ECAM/MMCONFIG on q35), so the figure is the cost of a config
 * access plus the syscall around it.
 *
 * With -t SECONDS the loop runs for that long instead of COUNT times.
 *
 * Usage: cfg-lat [-n COUNT | -t SECONDS] BDF [OFFSET]   (OFFSET defaults to 0)
 * Prints one line of key=value pairs, e.g.
 *   bdf=0000:00:03.0 offset=0x0 count=10000 value=0x00121000
 *   total_ns=... ns_per_read=...
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
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void usage(void)
{
    fprintf(stderr, "usage: cfg-lat [-n COUNT | -t SECONDS] BDF [OFFSET]\n");
    exit(2);
}

static uint32_t read_dword(int fd, long offset, const char *path)
{
    unsigned char b[4];
    ssize_t got = pread(fd, b, sizeof(b), offset);

    if (got != (ssize_t)sizeof(b)) {
        fprintf(stderr, "cfg-lat: pread of 4 bytes at %#lx of %s returned %zd: %s\n",
                offset, path, got, got < 0 ? strerror(errno) : "short read");
        exit(1);
    }
    /* Config space is little-endian; sysfs hands out its bytes in order. */
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
           (uint32_t)b[3] << 24;
}

int main(int argc, char **argv)
{
    long count = 10000;
    double seconds = 0;
    uint64_t t_end;
    long offset = 0;
    char path[256];
    uint32_t value, first;
    uint64_t t0, t1;
    long i;
    int opt;
    int fd;

    while ((opt = getopt(argc, argv, "n:t:")) != -1) {
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
        default:
            usage();
        }
    }
    if (argc - optind < 1 || argc - optind > 2 || count <= 0) {
        usage();
    }
    if (argc - optind == 2) {
        offset = strtol(argv[optind + 1], NULL, 0);
    }
    if (offset < 0 || offset > 4092 || (offset & 3)) {
        fprintf(stderr, "cfg-lat: offset must be a dword-aligned config offset\n");
        return 2;
    }
    snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/config", argv[optind]);
    fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "cfg-lat: %s: %s\n", path, strerror(errno));
        return 1;
    }

    first = read_dword(fd, offset, path); /* warm up */
    value = first;
    t0 = now_ns();
    t_end = t0 + (uint64_t)(seconds * 1e9);
    /* A config read is a syscall: looking at the clock each time costs little. */
    for (i = 0; seconds ? now_ns() < t_end : i < count; i++) {
        value = read_dword(fd, offset, path);
        if (value != first) {
            fprintf(stderr, "cfg-lat: dword %#lx of %s changed from 0x%08" PRIx32
                    " to 0x%08" PRIx32 "\n", offset, path, first, value);
            return 1;
        }
    }
    t1 = now_ns();
    count = i;
    close(fd);

    printf("bdf=%s offset=0x%lx count=%ld value=0x%08" PRIx32 " total_ns=%" PRIu64
           " ns_per_read=%.1f\n", argv[optind], offset, count, value, t1 - t0,
           (double)(t1 - t0) / (double)count);
    return 0;
}
