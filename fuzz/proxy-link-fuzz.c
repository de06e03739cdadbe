/*
 * libFuzzer target for the proxy side of the link: the main QEMU's view of
 * a hostile remote (framing, checks, reply matching, notifications, ring).
 *
 * The input is a script (fuzz-input.h): the bytes and descriptors the remote
 * sends, and the requests the proxy makes meanwhile. The proxy side is the
 * real code: link/ for framing and checks, hw-proxy/proxy-rpc.c for
 * requests, replies and notifications (including its main-loop handler),
 * hw-proxy/proxy-ring.c for the shared-memory ring, whose page the input
 * scribbles on as a hostile remote could. What proxy-pci.c does with a
 * reply's values (region and hint checks) is static there and not reached.
 *
 * Besides the sanitizers, the target checks that every reply handed to a
 * caller answers its request, that only well-formed notifications are
 * applied, that a broken link is reported once, and that no descriptor
 * leaks.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "qemu/memfd.h"
#include "qemu/bswap.h"
#include "qemu/sockets.h"
#include "block/aio.h"
#include "proxy.h"
#include "fuzz-input.h"
#include "fuzz-reply.h"

#include <sys/eventfd.h>
#include <sys/socket.h>

/* libqemuutil's stand-in for the BQL: this process holds it throughout */
void rust_bql_mock_lock(void);

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_TIMEOUT_MS     1000

typedef struct FuzzProxy {
    ProxyLink link;
    unsigned failures;
    unsigned notifications;
} FuzzProxy;

static void fuzz_notify(void *opaque, MPQemuMsg *msg)
{
    FuzzProxy *p = opaque;

    /* only what mpqemu_msg_check() let through may get here */
    assert(msg->hdr.magic == MPQEMU_MAGIC);
    assert(msg->hdr.flags == 0 && msg->hdr.id == 0);
    p->notifications++;
    switch (msg->hdr.cmd) {
    case MPQEMU_CMD_SET_IRQ:
        assert(msg->hdr.size == sizeof(MPQemuSetIrq) && !msg->hdr.num_fds);
        break;
    case MPQEMU_CMD_MSI:
        assert(msg->hdr.size == sizeof(MPQemuMsi) && !msg->hdr.num_fds);
        break;
    case MPQEMU_CMD_IOEVENTFD:
        assert(msg->hdr.size == sizeof(MPQemuIoeventfd));
        assert(msg->hdr.num_fds ==
               !!(msg->u.ioeventfd.flags & MPQEMU_IOEVENTFD_ADD));
        for (unsigned i = 0; i < msg->hdr.num_fds; i++) {
            assert(fcntl(msg->fds[i], F_GETFD) >= 0);
        }
        mpqemu_msg_close_fds(msg);
        break;
    default:
        abort();
    }
}

static void fuzz_fail(void *opaque, RemoteDeviceFailureCause cause,
                      const char *reason)
{
    FuzzProxy *p = opaque;

    assert(reason && *reason);
    p->failures++;
}

static void call(FuzzProxy *p, MPQemuCmd cmd, uint8_t arg)
{
    MPQemuMsg req, reply;
    Error *err = NULL;
    int memfds = 0;

    mpqemu_msg_init(&req, cmd, 0, 0, 0);
    switch (cmd) {
    case MPQEMU_CMD_HELLO:
        req.hdr.size = sizeof(MPQemuHello);
        req.u.hello.version = cpu_to_le32(MPQEMU_VERSION);
        req.u.hello.features = cpu_to_le64(arg & MPQEMU_FEATURES_KNOWN);
        break;
    case MPQEMU_CMD_CONFIG_READ:
    case MPQEMU_CMD_CONFIG_WRITE:
        req.hdr.size = sizeof(MPQemuConfigAccess);
        req.u.config.offset = cpu_to_le32(arg);
        req.u.config.len = cpu_to_le32(1 << (arg % 3));
        req.u.config.value = cpu_to_le32(0x12345678);
        break;
    case MPQEMU_CMD_MEMORY_MAP:
        /* as proxy-memory.c sends it: sections backed by memfds */
        memfds = arg % 3;
        req.hdr.size = offsetof(MPQemuMemoryMap, section) +
                       memfds * sizeof(MPQemuMemorySection);
        req.u.memory.flags = cpu_to_le32(MPQEMU_MEMORY_FIRST |
                                         MPQEMU_MEMORY_LAST);
        req.u.memory.nr_sections = cpu_to_le32(memfds);
        for (int i = 0; i < memfds; i++) {
            req.fds[i] = qemu_memfd_create("fuzz-ram", 4096, false, 0, 0,
                                           &error_abort);
            req.u.memory.section[i].gpa = cpu_to_le64(i * 4096);
            req.u.memory.section[i].size = cpu_to_le64(4096);
        }
        req.hdr.num_fds = memfds;
        break;
    default:
        break;
    }

    if (proxy_link_call(&p->link, &req, &reply, &err)) {
        /* a reply handed to the caller answers this very request */
        assert(reply.hdr.cmd == cmd && reply.hdr.id == req.hdr.id);
        assert(reply.hdr.flags == MPQEMU_FLAG_REPLY);
        assert(reply.hdr.size == fuzz_reply_size(cmd));
        assert(reply.hdr.num_fds == 0);
    } else {
        assert(err);
        error_free(err);
    }
    for (int i = 0; i < memfds; i++) {
        close(req.fds[i]);
    }
}

static void bar_access(FuzzProxy *p, bool write, uint8_t arg)
{
    uint64_t value = 0x0123456789abcdefULL;
    Error *err = NULL;

    /* false without an error once the link broke */
    if (!proxy_link_bar_access(&p->link, write, arg % MPQEMU_NUM_REGIONS,
                               (arg >> 3) * 8, 1 << ((arg >> 3) & 3), &value,
                               write && (arg & 0x80), &err)) {
        assert(err || p->link.dead);
        error_free(err);
    }
}

/*
 * Access hints as proxy-pci.c lets them through (regions of at least
 * 4 KiB assumed): what the ring code trusts is checked before it sees it.
 */
static void set_hints(ProxyLink *link, const uint8_t *op)
{
    uint32_t shadow_size = 8 * (1 + op[0] % 64);

    link->nr_hints = op[1] % (MPQEMU_MAX_HINTS + 1);
    link->shadow_size = shadow_size;
    for (uint32_t i = 0; i < link->nr_hints; i++) {
        MPQemuAccessHint *h = &link->hints[i];
        uint8_t b = op[2 + i % 14];
        unsigned width = 1 << (b & 3);
        uint32_t size = width * (1 + (b >> 4) % 4);

        memset(h, 0, sizeof(*h));
        h->region = (b >> 2) % 6;
        h->kind = !(b & 0x40) ? MPQEMU_HINT_SHADOW :
                  (b & 0x08) ? MPQEMU_HINT_SERIAL_WRITE :
                  MPQEMU_HINT_SYNC_WRITE;
        h->width = width;
        h->offset = width * (i % 4);
        h->size = size;
        h->shadow_offset = 0;
        if (size <= shadow_size) {
            h->shadow_offset = ROUND_DOWN((shadow_size - size) * (b & 7) / 7,
                                          8);
            if (h->shadow_offset + size > shadow_size) {
                h->shadow_offset = 0;
            }
        } else {
            h->kind = MPQEMU_HINT_SYNC_WRITE;
        }
        if (b & 0x80) {
            h->flags = MPQEMU_SHADOW_BYTES;
            h->min_size = 1 + (b & 3);
            h->max_size = MIN(8, h->min_size + (b >> 5));
        }
    }
}

/* What a hostile remote does to the ring page before the next access */
static void scribble_ring(ProxyLink *link, const uint8_t *op)
{
    MPQemuRing *ring = link->ring;
    uint32_t next = link->ring_seq + 1;
    MPQemuRingEntry *e = mpqemu_ring_entry(ring, next);
    MPQemuRingEntry *last = mpqemu_ring_entry(ring, link->ring_seq);
    uint8_t *shadow = mpqemu_ring_shadow(ring);
    size_t shadow_len = link->ring_size - MPQEMU_RING_SIZE;

    /*
     * usually answered in time, sometimes not, sometimes from far away; and
     * the request before, which the proxy may wait for, too
     */
    e->resp_seq = next + (int8_t)op[0] / 32;
    if (op[1] & 1) {
        e->resp_seq = fuzz_le32(op + 8);
    }
    if (op[1] & 2) {
        last->resp_seq = link->ring_seq + (int8_t)op[0] / 64;
    }
    ring->shadow_gen = op[2];
    ring->posted_errors += op[3] & 3;
    ring->socket_reader = op[3] & 4;
    ring->notify_signalled = op[3] & 8;
    e->status = (op[4] & 0x80) ? -(int32_t)op[5] : 0;
    e->notify_seq = link->notify_count + (int8_t)op[6] / 16;
    e->value = fuzz_le64(op + 8);
    if (shadow_len) {
        memset(shadow + (op[7] * 8) % shadow_len, op[12],
               MIN(8, shadow_len - (op[7] * 8) % shadow_len));
    }
}

static void ring_op(FuzzProxy *p, const FuzzRecord *rec)
{
    ProxyLink *link = &p->link;
    const uint8_t *op = rec->operands;
    Error *err = NULL;

    if (!link->ring) {
        if (!(rec->what & 1)) {
            return;
        }
        if (link->dead) {
            return;
        }
        set_hints(link, op);
        if (!proxy_ring_setup(link, true, rec->what & 2, &err)) {
            error_free(err);
        }
        return;
    }
    scribble_ring(link, op);
    bar_access(p, rec->what & 2, op[13]);
}

static void drain(int fd)
{
    char buf[4096];

    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
        /* the requests the proxy sent: nobody reads them */
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ProxyLink link = { 0 };
    int fd = eventfd(0, EFD_CLOEXEC);

    rust_bql_mock_lock();
    qemu_init_main_loop(&error_abort);
    /*
     * The main loop's set of watched links lives as long as the process:
     * made here, it does not count as a descriptor an input leaked
     */
    proxy_link_init(&link);
    proxy_link_watch(&link, fd);
    proxy_link_unwatch(&link, fd);
    proxy_link_destroy(&link);
    close(fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree FuzzRecord *recs = NULL;
    FuzzProxy p = { 0 };
    FuzzInput in;
    FuzzRecord rec;
    size_t n = 0, cap = 0;
    bool closed = false;
    int fds_before = fuzz_count_fds();
    int sv[2];

    fuzz_input_init(&in, data, size);
    while (fuzz_input_next(&in, &rec)) {
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            recs = g_renew(FuzzRecord, recs, cap);
        }
        recs[n++] = rec;
    }

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        abort();
    }
    qemu_socket_set_nonblock(sv[0]);
    proxy_link_init(&p.link);
    proxy_link_open(&p.link, sv[0], FUZZ_TIMEOUT_MS, fuzz_notify, fuzz_fail,
                    &p);
    proxy_link_open_bars(&p.link, true);

    for (size_t i = 0; i < n; i++) {
        const FuzzRecord *r = &recs[i];

        if (r->op == FUZZ_OP_DATA) {
            if (!closed) {
                fuzz_send_chunk(&in, sv[1], r, FUZZ_TIMEOUT_MS);
            }
            continue;
        }
        if (r->op == FUZZ_OP_POLL) {
            /* a remote that signals the notify eventfd, or forgets to */
            if (p.link.ring_notify_fd >= 0 && !(r->arg & 1) &&
                eventfd_write(p.link.ring_notify_fd, 1) < 0) {
                abort();
            }
            /* the main loop calls the link's handler when data is there */
            aio_poll(iohandler_get_aio_context(), false);
            continue;
        }
        /*
         * Anything else may wait for the remote: it gets the rest of what
         * the remote sends, then end of file, so that nothing waits long.
         */
        if (!closed) {
            for (size_t j = i + 1; j < n; j++) {
                if (recs[j].op == FUZZ_OP_DATA) {
                    fuzz_send_chunk(&in, sv[1], &recs[j], FUZZ_TIMEOUT_MS);
                }
            }
            shutdown(sv[1], SHUT_WR);
            closed = true;
        }
        if (r->op == FUZZ_OP_CALL) {
            switch (r->what % 12) {
            case 0:
                call(&p, MPQEMU_CMD_HELLO, r->arg);
                break;
            case 1:
                call(&p, MPQEMU_CMD_DEVICE_INFO, r->arg);
                break;
            case 2:
                call(&p, MPQEMU_CMD_CONFIG_READ, r->arg);
                break;
            case 3:
                call(&p, MPQEMU_CMD_CONFIG_WRITE, r->arg);
                break;
            case 4:
                bar_access(&p, false, r->arg);
                break;
            case 5:
                bar_access(&p, true, r->arg);
                break;
            case 6:
                call(&p, MPQEMU_CMD_MEMORY_MAP, r->arg);
                break;
            case 7:
                call(&p, MPQEMU_CMD_RESET, r->arg);
                break;
            case 8:
                call(&p, MPQEMU_CMD_ACCESS_HINTS, r->arg);
                break;
            default:
                aio_poll(iohandler_get_aio_context(), false);
                break;
            }
        } else if (r->op == FUZZ_OP_RING) {
            ring_op(&p, r);
        }
        drain(sv[1]);
    }

    /* what is still on the socket is read as the main loop would */
    aio_poll(iohandler_get_aio_context(), false);
    assert(p.failures <= 1);
    proxy_link_destroy(&p.link);
    close(sv[1]);
    assert(fuzz_count_fds() == fds_before);
    return 0;
}
