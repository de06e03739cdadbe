/*
 * mpqemu ring: the shared memory through which a proxy hands BAR accesses
 * to its remote, and the rules both sides follow to use it.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef MPQEMU_RING_H
#define MPQEMU_RING_H

/*
 * A queue of MPQEMU_RING_ENTRIES accesses, served in order. Both processes
 * run on the same host, so the fields are in host byte order; sequence
 * numbers count requests since setup, wrap, and are written with release
 * and read with acquire semantics. Request n uses entry n % ENTRIES.
 *
 * Proxy: wait until req_seq - resp_seq < ENTRIES, fill entry req_seq + 1,
 *        then req_seq++; if remote_sleeping, kick. A posted write returns
 *        at once; any other request waits until resp_seq reaches it: poll a
 *        while, then set proxy_sleeping, check again and sleep on the done
 *        eventfd. Before a request on the socket it waits for the ring to
 *        drain, so the remote sees accesses in the guest's order.
 * Remote: serve every entry up to req_seq, in order, fill in each one's
 *        result (with RING_INTX: and the INTx level it set meanwhile), then
 *        set resp_seq; if proxy_sleeping, signal done. Poll a
 *        while after each batch, then set remote_sleeping, check again and
 *        sleep on the kick eventfd. A posted write it refuses is counted in
 *        posted_errors, since nobody waits for its status.
 *
 * The shadow area follows the ring page. shadow_gen is a sequence lock the
 * remote holds: odd while the copy is stale or being refreshed, even while
 * it is what the device would answer. The remote makes it odd before
 * anything that may change the registers takes effect (a write, a reset, a
 * notification it sends) and refreshes it when it next serves a read of a
 * shadowed register. The proxy serves a read from the copy only when the
 * ring is drained and shadow_gen is even and unchanged across the copy.
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
} MPQemuRingEntry;

typedef struct MPQemuRing {
    uint32_t req_seq;           /* written by the proxy */
    uint32_t resp_seq;          /* written by the remote */
    uint32_t remote_sleeping;   /* the remote waits on the kick eventfd */
    uint32_t proxy_sleeping;    /* the proxy waits on the done eventfd */
    uint32_t posted_errors;     /* written by the remote */
    uint32_t shadow_gen;        /* written by the remote */
    uint32_t reserved[10];
    MPQemuRingEntry entry[MPQEMU_RING_ENTRIES];
} MPQemuRing;

#define MPQEMU_RING_SIZE        4096    /* the ring page; the shadow follows */

QEMU_BUILD_BUG_ON(sizeof(MPQemuRingEntry) != 32);
QEMU_BUILD_BUG_ON(sizeof(MPQemuRing) > MPQEMU_RING_SIZE);

/* (int32_t)(a - b) < 0 for sequence numbers that wrap */
static inline bool mpqemu_seq_before(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

static inline uint8_t *mpqemu_ring_shadow(MPQemuRing *ring)
{
    return (uint8_t *)ring + MPQEMU_RING_SIZE;
}

#endif
