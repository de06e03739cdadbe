/*
 * randread: random-read IOPS of a block device at queue depth 1,
 * from inside a Linux guest.
 *
 * Opens the device with O_DIRECT and issues one pread() at a time, of
 * BLOCK bytes (default 4096) at a pseudo-random BLOCK-aligned offset, into a
 * page-aligned buffer, for SECONDS seconds (default 2).  The offsets come
 * from a fixed seed, so two runs over the same disk read the same blocks in
 * the same order; "check" is an FNV-1a hash of the first 64 bytes of the
 * first CHECK_READS blocks read, so that runs over identical disks (e.g. the
 * same image behind different controllers) can be compared.
 *
 * Usage: randread [-t SECONDS] [-b BLOCK] [-s SEED] DEVICE
 * Prints one line of key=value pairs, e.g.
 *   dev=/dev/vda bs=4096 blocks=65536 ios=12345 elapsed_ns=2000123456
 *   iops=6172.1 us_per_io=162.0 check=0x0123456789abcdef
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHECK_READS 256
#define CHECK_BYTES 64

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* splitmix64: small, fast and good enough to pick block numbers. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void usage(void)
{
    fprintf(stderr, "usage: randread [-t SECONDS] [-b BLOCK] [-s SEED] DEVICE\n");
    exit(2);
}

int main(int argc, char **argv)
{
    double seconds = 2.0;
    long block = 4096;
    uint64_t seed = 1;
    const char *dev;
    uint64_t size = 0;
    uint64_t blocks;
    uint64_t state;
    uint64_t check = 0xcbf29ce484222325ULL; /* FNV-1a offset basis */
    uint64_t ios = 0;
    uint64_t t0, t1, t_end;
    unsigned char *buf;
    void *mem;
    int opt;
    int fd;
    int err;

    while ((opt = getopt(argc, argv, "t:b:s:")) != -1) {
        switch (opt) {
        case 't':
            seconds = strtod(optarg, NULL);
            break;
        case 'b':
            block = strtol(optarg, NULL, 0);
            break;
        case 's':
            seed = strtoull(optarg, NULL, 0);
            break;
        default:
            usage();
        }
    }
    if (argc - optind != 1 || seconds <= 0 || block < 512 || (block & 511)) {
        usage();
    }
    dev = argv[optind];

    fd = open(dev, O_RDONLY | O_DIRECT);
    if (fd < 0) {
        fprintf(stderr, "randread: %s: %s\n", dev, strerror(errno));
        return 1;
    }
    if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
        off_t end = lseek(fd, 0, SEEK_END);

        if (end < 0) {
            fprintf(stderr, "randread: cannot get the size of %s: %s\n",
                    dev, strerror(errno));
            return 1;
        }
        size = (uint64_t)end;
    }
    blocks = size / (uint64_t)block;
    if (blocks == 0) {
        fprintf(stderr, "randread: %s is smaller than one block\n", dev);
        return 1;
    }
    err = posix_memalign(&mem, 4096, (size_t)block);
    if (err) {
        fprintf(stderr, "randread: posix_memalign: %s\n", strerror(err));
        return 1;
    }
    buf = mem;
    memset(buf, 0, (size_t)block);

    state = seed;
    t0 = now_ns();
    t_end = t0 + (uint64_t)(seconds * 1e9);
    do {
        uint64_t off = (next_random(&state) % blocks) * (uint64_t)block;
        ssize_t got = pread(fd, buf, (size_t)block, (off_t)off);

        if (got != block) {
            fprintf(stderr, "randread: pread of %ld bytes at %" PRIu64 " of %s "
                    "returned %zd: %s\n", block, off, dev, got,
                    got < 0 ? strerror(errno) : "short read");
            return 1;
        }
        if (ios < CHECK_READS) {
            int i;

            for (i = 0; i < CHECK_BYTES; i++) {
                check = (check ^ buf[i]) * 0x100000001b3ULL; /* FNV prime */
            }
        }
        ios++;
        t1 = now_ns();
    } while (t1 < t_end);
    close(fd);

    printf("dev=%s bs=%ld blocks=%" PRIu64 " ios=%" PRIu64 " elapsed_ns=%" PRIu64
           " iops=%.1f us_per_io=%.1f check=", dev, block, blocks, ios, t1 - t0,
           (double)ios * 1e9 / (double)(t1 - t0),
           (double)(t1 - t0) / 1e3 / (double)ios);
    if (ios >= CHECK_READS) {
        printf("0x%016" PRIx64 "\n", check);
    } else {
        printf("n/a\n");
    }
    free(mem);
    return 0;
}
