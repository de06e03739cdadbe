/*
 * mpqemu ring: the shared memory through which a proxy hands BAR accesses
 * to its remote, and the rules both sides follow to use it.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef MPQEMU_RING_H
#define MPQEMU_RING_H

#include "qemu/atomic.h"

/*
 * A queue of MPQEMU_RING_ENTRIES accesses, served in order. Both processes
 * run on the same host, so the fields are in host byte order. Sequence
 * numbers count requests since setup (the first is 1) and wrap; request n
 * uses entry n % ENTRIES. Each entry fills one cache line and carries its
 * own sequence numbers, so that a request and its answer are one line going
 * to the remote and back: a round trip between two cores costs about what
 * moving that line twice does, and every other line touched on the way
 * would add to it.
 *
 * Proxy: wait until the entry's previous request (n - ENTRIES) is
 *        answered, fill the entry, then set its req_seq to n (release); if
 *        remote_sleeping, kick. A posted write returns at once; any other
 *        request waits until the entry's resp_seq is n: poll a while, then
 *        set proxy_sleeping, check again and sleep on the done eventfd.
 *        Before a request on the socket it waits until the last request is
 *        answered, so the remote sees accesses in the guest's order.
 * Remote: serve request n once entry n % ENTRIES has req_seq n, in order
 *        after n - 1; fill in its result (with RING_INTX: and the INTx level
 *        it set meanwhile), then set its resp_seq to n (release); if
 *        proxy_sleeping, signal done. Poll a while after each batch, then
 *        set remote_sleeping, check again and sleep on the kick eventfd. A
 *        posted write it refuses is counted in posted_errors, since nobody
 *        waits for its status.
 *
 * With NOTIFY_EVENTFD and a notify eventfd in RING_SETUP, the proxy's main
 * loop learns of notifications from that eventfd instead of the socket:
 * Remote: after it sends a notification on the socket (full barrier), if
 *        neither socket_reader nor notify_signalled is set, set
 *        notify_signalled and signal the notify eventfd.
 * Proxy: the main loop, woken by the eventfd, reads it, clears
 *        notify_signalled (full barrier), then reads the socket. A halted
 *        vCPU that waits on the socket itself sets socket_reader (full
 *        barrier) before it waits; once woken, it clears it (full barrier)
 *        and then reads the socket.
 * Either way someone reads every notification, and while a vCPU waits for
 * one the main loop sleeps on instead of racing it for the BQL.
 *
 * The shadow area follows the ring. shadow_gen is a sequence lock the
 * remote holds: odd while the copy is stale or being refreshed, even while
 * it is what the device would answer. The remote makes it odd before
 * anything that may change the registers takes effect (a write, a reset, a
 * notification it sends) and refreshes it when it next serves a read of a
 * shadowed register. The proxy serves a read from the copy only when its
 * last request is answered and shadow_gen is even and unchanged across the
 * copy.
 */
#define MPQEMU_RING_ENTRIES     64
#define MPQEMU_RING_POSTED      (1u << 0)   /* entry flag: nobody waits */
/*
 * With MPQEMU_FEATURE_RING_INTX, the answer to an access that is not posted
 * says in intx whether the device changed its INTx line while serving it
 * (CHANGED, with the level it left it at in bit 0); such a change is not
 * sent on the socket. The proxy sets intx to 0 when it queues the request.
 */
#define MPQEMU_RING_INTX_CHANGED    (1u << 7)
#define MPQEMU_RING_INTX_LEVEL      (1u << 0)

typedef struct MPQemuRingEntry {
    uint32_t req_seq;           /* the request's number, written last */
    uint32_t resp_seq;          /* the number of the request answered last */
    /* request */
    uint32_t cmd;               /* MPQEMU_CMD_BAR_READ or MPQEMU_CMD_BAR_WRITE */
    uint8_t region;
    uint8_t size;
    uint8_t flags;              /* MPQEMU_RING_POSTED */
    uint8_t intx;               /* response: MPQEMU_RING_INTX_*, or 0 */
    uint64_t offset;
    uint64_t value;             /* the value to write; the value read */
    /* response */
    int32_t status;             /* 0, or a negative errno for a bad request */
    uint32_t notify_seq;        /* notifications sent on the socket so far */
    uint32_t reserved[6];
} MPQemuRingEntry;

typedef struct MPQemuRing {
    /* written when a side goes to sleep or wakes up, read at every access */
    uint32_t remote_sleeping;   /* the remote waits on the kick eventfd */
    uint32_t proxy_sleeping;    /* the proxy waits on the done eventfd */
    uint32_t reserved0[14];
    /* written by the remote now and then */
    uint32_t posted_errors;
    uint32_t shadow_gen;
    /* with a notify eventfd: who reads the notifications on the socket */
    uint32_t socket_reader;     /* a halted vCPU of the proxy, not its main loop */
    uint32_t notify_signalled;  /* the notify eventfd was signalled, not yet read */
    uint32_t reserved1[12];
    MPQemuRingEntry entry[MPQEMU_RING_ENTRIES];
} MPQemuRing;

#define MPQEMU_RING_SIZE        8192    /* the ring; the shadow follows */

QEMU_BUILD_BUG_ON(sizeof(MPQemuRingEntry) != 64);
QEMU_BUILD_BUG_ON(offsetof(MPQemuRing, posted_errors) != 64);
QEMU_BUILD_BUG_ON(offsetof(MPQemuRing, notify_signalled) != 76);
QEMU_BUILD_BUG_ON(offsetof(MPQemuRing, entry) != 128);
QEMU_BUILD_BUG_ON(sizeof(MPQemuRing) > MPQEMU_RING_SIZE);

/* (int32_t)(a - b) < 0 for sequence numbers that wrap */
static inline bool mpqemu_seq_before(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

static inline MPQemuRingEntry *mpqemu_ring_entry(MPQemuRing *ring,
                                                 uint32_t seq)
{
    return &ring->entry[seq % MPQEMU_RING_ENTRIES];
}

/* Whether request @seq was answered, or a later one that used its entry */
static inline bool mpqemu_ring_answered(MPQemuRing *ring, uint32_t seq)
{
    MPQemuRingEntry *e = mpqemu_ring_entry(ring, seq);

    return !mpqemu_seq_before(qatomic_load_acquire(&e->resp_seq), seq);
}

static inline uint8_t *mpqemu_ring_shadow(MPQemuRing *ring)
{
    return (uint8_t *)ring + MPQEMU_RING_SIZE;
}

#endif
