/*
 * randread: random-read IOPS of a block device at queue depth 1 or more,
 * from inside a Linux guest.
 *
 * Opens the device with O_DIRECT and issues one pread() at a time, of
 * BLOCK bytes (default 4096) at a pseudo-random BLOCK-aligned offset, into a
 * page-aligned buffer, for SECONDS seconds (default 2).  With -j JOBS, JOBS
 * threads (pthreads, no libaio needed) do the same at once, each with its own
 * buffer and offset sequence, which keeps up to JOBS reads in flight: queue
 * depth JOBS.  The offsets come from a fixed seed (thread i uses its own
 * sequence derived from SEED and i; thread 0 the same as with -j 1), so two
 * runs over the same disk read the same blocks; "check" is an FNV-1a hash of
 * the first 64 bytes of the first CHECK_READS / JOBS blocks (at least one)
 * each thread read, the threads' hashes XORed together, so that runs over
 * identical disks (e.g. the same image behind different controllers) can be
 * compared.  Splitting CHECK_READS between the threads keeps the number of
 * blocks hashed the same at any JOBS, and lets a short run at a high JOBS
 * still produce a hash.
 *
 * Usage: randread [-t SECONDS] [-b BLOCK] [-s SEED] [-j JOBS] DEVICE
 * Prints one line of key=value pairs, e.g.
 *   dev=/dev/vda bs=4096 blocks=65536 jobs=1 ios=12345 elapsed_ns=2000123456
 *   iops=6172.1 us_per_io=162.0 check=0x0123456789abcdef max_us=2345
 * (us_per_io is wall time per read per thread, i.e. the mean latency;
 * max_us the longest single read of any thread.)
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <pthread.h>
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
#define MAX_JOBS 256

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
    fprintf(stderr, "usage: randread [-t SECONDS] [-b BLOCK] [-s SEED] [-j JOBS] DEVICE\n");
    exit(2);
}

/* What every thread shares, set before the threads start. */
static int dev_fd;
static const char *dev_name;
static long block;
static uint64_t blocks;
static uint64_t t_start, t_end;
static uint64_t check_reads;    /* blocks each thread hashes */
static pthread_barrier_t start_line;

struct job {
    pthread_t thread;
    uint64_t state;     /* splitmix64 state: this thread's offset sequence */
    uint64_t check;     /* FNV-1a over its first check_reads blocks */
    uint64_t ios;
    uint64_t t_done;    /* when its last read completed */
    uint64_t max_ns;    /* its longest read */
    int failed;
};

static void *run_job(void *opaque)
{
    struct job *job = opaque;
    unsigned char *buf;
    void *mem = NULL;
    uint64_t t0, t1 = 0;
    int err;

    err = posix_memalign(&mem, 4096, (size_t)block);
    if (err) {
        fprintf(stderr, "randread: posix_memalign: %s\n", strerror(err));
        job->failed = 1;
    } else {
        memset(mem, 0, (size_t)block);
    }
    buf = mem;
    /* Every thread waits here, also one that failed, so nobody is stuck. */
    pthread_barrier_wait(&start_line);
    if (job->failed) {
        return NULL;
    }
    t0 = now_ns();
    do {
        uint64_t off = (next_random(&job->state) % blocks) * (uint64_t)block;
        ssize_t got = pread(dev_fd, buf, (size_t)block, (off_t)off);

        if (got != block) {
            fprintf(stderr, "randread: pread of %ld bytes at %" PRIu64 " of %s "
                    "returned %zd: %s\n", block, off, dev_name, got,
                    got < 0 ? strerror(errno) : "short read");
            job->failed = 1;
            break;
        }
        if (job->ios < check_reads) {
            int i;

            for (i = 0; i < CHECK_BYTES; i++) {
                job->check = (job->check ^ buf[i]) * 0x100000001b3ULL; /* FNV prime */
            }
        }
        job->ios++;
        t1 = now_ns();
        if (t1 - t0 > job->max_ns) {
            job->max_ns = t1 - t0;
        }
        t0 = t1;
    } while (t1 < t_end);
    job->t_done = t1;
    free(mem);
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = 2.0;
    uint64_t seed = 1;
    uint64_t size = 0;
    uint64_t check = 0;
    uint64_t ios = 0;
    uint64_t max_ns = 0;
    uint64_t t1;
    int all_checked = 1;
    int failed = 0;
    int jobs = 1;
    struct job *job;
    int opt;
    int err;
    int i;

    block = 4096;
    while ((opt = getopt(argc, argv, "t:b:s:j:")) != -1) {
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
        case 'j':
            jobs = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (argc - optind != 1 || seconds <= 0 || block < 512 || (block & 511) ||
        jobs < 1 || jobs > MAX_JOBS) {
        usage();
    }
    dev_name = argv[optind];

    dev_fd = open(dev_name, O_RDONLY | O_DIRECT);
    if (dev_fd < 0) {
        fprintf(stderr, "randread: %s: %s\n", dev_name, strerror(errno));
        return 1;
    }
    if (ioctl(dev_fd, BLKGETSIZE64, &size) < 0) {
        off_t end = lseek(dev_fd, 0, SEEK_END);

        if (end < 0) {
            fprintf(stderr, "randread: cannot get the size of %s: %s\n",
                    dev_name, strerror(errno));
            return 1;
        }
        size = (uint64_t)end;
    }
    blocks = size / (uint64_t)block;
    if (blocks == 0) {
        fprintf(stderr, "randread: %s is smaller than one block\n", dev_name);
        return 1;
    }

    job = calloc((size_t)jobs, sizeof(*job));
    if (!job) {
        fprintf(stderr, "randread: out of memory\n");
        return 1;
    }
    check_reads = CHECK_READS / (uint64_t)jobs;
    if (check_reads == 0) {
        check_reads = 1;
    }
    pthread_barrier_init(&start_line, NULL, (unsigned)jobs + 1);
    for (i = 0; i < jobs; i++) {
        /* Thread 0 keeps the -j 1 sequence; the others start further along. */
        job[i].state = seed + (uint64_t)i * 0xd1342543de82ef95ULL;
        job[i].check = 0xcbf29ce484222325ULL; /* FNV-1a offset basis */
        err = pthread_create(&job[i].thread, NULL, run_job, &job[i]);
        if (err) {
            fprintf(stderr, "randread: pthread_create: %s\n", strerror(err));
            return 1;
        }
    }
    t_start = now_ns();
    t_end = t_start + (uint64_t)(seconds * 1e9);
    pthread_barrier_wait(&start_line);
    t1 = t_start;
    for (i = 0; i < jobs; i++) {
        pthread_join(job[i].thread, NULL);
        failed |= job[i].failed;
        ios += job[i].ios;
        check ^= job[i].check;
        if (job[i].ios < check_reads) {
            all_checked = 0;
        }
        if (job[i].t_done > t1) {
            t1 = job[i].t_done;
        }
        if (job[i].max_ns > max_ns) {
            max_ns = job[i].max_ns;
        }
    }
    close(dev_fd);
    if (failed) {
        return 1;
    }

    printf("dev=%s bs=%ld blocks=%" PRIu64 " jobs=%d ios=%" PRIu64 " elapsed_ns=%" PRIu64
           " iops=%.1f us_per_io=%.1f check=", dev_name, block, blocks, jobs, ios,
           t1 - t_start, (double)ios * 1e9 / (double)(t1 - t_start),
           (double)(t1 - t_start) * jobs / 1e3 / (double)ios);
    if (all_checked) {
        printf("0x%016" PRIx64, check);
    } else {
        printf("n/a");
    }
    printf(" max_us=%" PRIu64 "\n", max_ns / 1000);
    free(job);
    return 0;
}
