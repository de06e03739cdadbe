/*
 * dma-check: keep a disk device DMAing known data into one buffer that no
 * CPU writes, and check the buffer, for the migration tests' dirty tracking.
 *
 * Reads MIB MiB of DEV with O_DIRECT into the same buffer, pass after pass,
 * from offset 0 (range A) or, once DIR/switch exists, from offset MIB MiB
 * (range B). After each read it checks the buffer against the expected
 * checksum of the range, waits 200 ms, and checks it again: a VM migrated
 * in between must arrive with the data the device wrote last. Passes with
 * matching checksums count in DIR/ok, others in DIR/bad (and DIR/err); the
 * range of the last pass is in DIR/last. It ends when DIR/stop exists,
 * writing DIR/done.
 *
 * The checksum: h = 0xcbf29ce484222325, then for each little-endian 64-bit
 * word w of the range, h = (h ^ w) * 0x100000001b3 (mod 2^64).
 *
 * Usage: dma-check DEV MIB SUM_A SUM_B DIR   (sums in hex)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static const char *dir;

static int exists(const char *name)
{
    char path[4096];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void put(const char *name, const char *mode, const char *fmt,
                uint64_t a, uint64_t b, uint64_t c)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, mode);
    if (f) {
        fprintf(f, fmt, a, b, c);
        fclose(f);
    }
}

static uint64_t checksum(const uint64_t *buf, size_t words)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < words; i++) {
        h = (h ^ buf[i]) * 0x100000001b3ULL;
    }
    return h;
}

int main(int argc, char **argv)
{
    uint64_t expected[2], ok = 0, bad = 0, pass = 0;
    size_t size;
    uint64_t *buf;
    int fd;

    if (argc != 6) {
        fprintf(stderr, "usage: dma-check DEV MIB SUM_A SUM_B DIR\n");
        return 2;
    }
    size = strtoull(argv[2], NULL, 0) << 20;
    expected[0] = strtoull(argv[3], NULL, 16);
    expected[1] = strtoull(argv[4], NULL, 16);
    dir = argv[5];
    fd = open(argv[1], O_RDONLY | O_DIRECT);
    buf = aligned_alloc(4096, size);
    if (fd < 0 || !buf || !size) {
        perror("dma-check");
        return 1;
    }
    /* faulted in once, by this write; from now on only the device writes */
    memset(buf, 0, size);
    mlock(buf, size);

    while (!exists("stop")) {
        int r = exists("switch");
        struct timespec wait = { 0, 200 * 1000 * 1000 };
        uint64_t first, second;

        if (pread(fd, buf, size, r * size) != (ssize_t)size) {
            perror("dma-check: read");
            return 1;
        }
        first = checksum(buf, size / 8);
        nanosleep(&wait, NULL);
        second = checksum(buf, size / 8);
        if (first == expected[r] && second == expected[r]) {
            put("ok", "w", "%" PRIu64 "\n", ++ok, 0, 0);
        } else {
            put("err", "a", "pass %" PRIu64 ": %016" PRIx64 " then %016"
                PRIx64 "\n", pass, first, second);
            put("bad", "w", "%" PRIu64 "\n", ++bad, 0, 0);
        }
        put("last", "w", "%" PRIu64 "\n", r, 0, 0);
        pass++;
    }
    put("done", "w", "%" PRIu64 "\n", pass, 0, 0);
    return 0;
}
