/*
 * xcpu-rtt: how long two threads take to pass a cache line back and forth,
 * the floor under every proxied access's round trip on this host right now.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BATCHES         9
#define TRIPS_PER_BATCH 200000

static struct {
    _Alignas(64) _Atomic uint32_t turn;     /* odd: the echo thread's */
    _Alignas(64) _Atomic int stop;
} shared;

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static void *echo(void *arg)
{
    uint32_t next = 1;

    (void)arg;
    while (!atomic_load_explicit(&shared.stop, memory_order_relaxed)) {
        if (atomic_load_explicit(&shared.turn, memory_order_acquire) == next) {
            atomic_store_explicit(&shared.turn, next + 1, memory_order_release);
            next += 2;
        } else {
            relax();
        }
    }
    return NULL;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/*
 * Two threads, on two CPUs as the scheduler places them, take turns
 * advancing a counter in a cache line of its own, spinning until it is
 * their turn. Prints the median over batches of one round trip's time.
 */
int main(void)
{
    double batch_ns[BATCHES];
    uint32_t turn = 0;
    pthread_t thread;

    if (pthread_create(&thread, NULL, echo, NULL)) {
        perror("xcpu-rtt: pthread_create");
        return 1;
    }
    for (int b = 0; b < BATCHES; b++) {
        uint64_t start = now_ns();

        for (int i = 0; i < TRIPS_PER_BATCH; i++) {
            atomic_store_explicit(&shared.turn, turn + 1, memory_order_release);
            while (atomic_load_explicit(&shared.turn, memory_order_acquire) !=
                   turn + 2) {
                relax();
            }
            turn += 2;
        }
        batch_ns[b] = (double)(now_ns() - start) / TRIPS_PER_BATCH;
    }
    atomic_store(&shared.stop, 1);
    pthread_join(thread, NULL);
    qsort(batch_ns, BATCHES, sizeof(batch_ns[0]), compare);
    printf("xcpu_rtt_ns=%.0f batches=%d\n", batch_ns[BATCHES / 2], BATCHES);
    return 0;
}
