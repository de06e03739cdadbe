/*
 * mpqemu ring: the page of shared memory through which a proxy hands BAR
 * accesses to its remote, and the rules both sides follow to use it.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef MPQEMU_RING_H
#define MPQEMU_RING_H

/*
 * One request slot: the proxy serializes its requests per device anyway.
 * Both processes run on the same host, so the fields are in host byte order;
 * sequence numbers are written with release and read with acquire semantics.
 *
 * Proxy: fill the request, then req_seq++; if remote_sleeping, kick. Wait
 *        until resp_seq == req_seq: poll a while, then set proxy_sleeping,
 *        check again and sleep on the done eventfd.
 * Remote: when req_seq moves, serve the request, fill the response, then
 *        resp_seq = req_seq; if proxy_sleeping, signal done. Poll a while
 *        after each request, then set remote_sleeping, check again and sleep
 *        on the kick eventfd.
 */
typedef struct MPQemuRing {
    uint32_t req_seq;           /* written by the proxy */
    uint32_t resp_seq;          /* written by the remote */
    uint32_t remote_sleeping;   /* the remote waits on the kick eventfd */
    uint32_t proxy_sleeping;    /* the proxy waits on the done eventfd */

    /* request, valid when req_seq moves */
    uint32_t cmd;               /* MPQEMU_CMD_BAR_READ or MPQEMU_CMD_BAR_WRITE */
    uint32_t region;
    uint32_t size;
    uint32_t reserved;
    uint64_t offset;
    uint64_t value;

    /* response, valid when resp_seq catches up */
    uint64_t result;            /* the value read */
    int32_t status;             /* 0, or a negative errno for a bad request */
    uint32_t notify_seq;        /* notifications sent on the socket so far */
} MPQemuRing;

#define MPQEMU_RING_SIZE        4096

/* (int32_t)(a - b) < 0 for sequence numbers that wrap */
static inline bool mpqemu_seq_before(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

#endif
