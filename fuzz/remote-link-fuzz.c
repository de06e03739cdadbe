/*
 * libFuzzer target for the remote side of the link: what a remote process
 * makes of the bytes and descriptors a hostile proxy sends.
 *
 * The remote's serving loop (remote-machine/remote-object.c) needs a whole
 * QEMU machine; this target runs the same steps with link/ alone: receive
 * whatever has arrived without waiting (mpqemu_msg_recv_partial() with no
 * timeout, a piece at a time), check each request as the remote does
 * (mpqemu_msg_check(..., MPQEMU_PEER_REMOTE)), answer it with an error or
 * a reply of the command's size, and close the connection on broken
 * framing. remote-process-fuzz.c drives the real dispatch in a real remote.
 *
 * Besides the sanitizers, the target checks that a message handed over is
 * within the protocol's limits with live descriptors, that each answer to
 * a request the remote accepted is one a proxy accepts, and that no
 * descriptor leaks.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/sockets.h"
#include "mpqemu/channel.h"
#include "fuzz-input.h"
#include "fuzz-reply.h"

#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_TIMEOUT_MS     1000

/* The proxy's end: what the remote answered must pass the proxy's checks */
static void check_answer(int proxy_fd, const MPQemuMsg *req, bool accepted)
{
    MPQemuMsg reply;
    Error *err = NULL;

    if (mpqemu_msg_recv(proxy_fd, &reply, FUZZ_TIMEOUT_MS, &err) < 0) {
        fprintf(stderr, "the answer did not arrive: %s\n",
                error_get_pretty(err));
        abort();
    }
    assert(reply.hdr.id == req->hdr.id && reply.hdr.cmd == req->hdr.cmd);
    if (accepted && !mpqemu_msg_check(&reply, MPQEMU_PEER_PROXY, &err)) {
        fprintf(stderr, "the answer to an accepted %s is malformed: %s\n",
                mpqemu_cmd_name(req->hdr.cmd), error_get_pretty(err));
        abort();
    }
    if (!accepted) {
        assert(reply.hdr.flags & MPQEMU_FLAG_ERROR);
    }
    if (mpqemu_reply_ok(&reply, &err) == !!(reply.hdr.flags &
                                            MPQEMU_FLAG_ERROR)) {
        abort();
    }
    error_free(err);
}

/*
 * As remote_object_serve(): check the request, answer it, drop its
 * descriptors.
 */
static void serve(int fd, int proxy_fd, MPQemuMsg *req, uint8_t arg)
{
    MPQemuMsg reply;
    Error *err = NULL;
    bool accepted;

    assert(req->hdr.size <= MPQEMU_MAX_PAYLOAD);
    assert(req->hdr.num_fds <= MPQEMU_MAX_FDS);
    for (unsigned i = 0; i < req->hdr.num_fds; i++) {
        assert(fcntl(req->fds[i], F_GETFD) >= 0);
    }

    accepted = mpqemu_msg_check(req, MPQEMU_PEER_REMOTE, &err);
    if (!accepted) {
        mpqemu_msg_init_error(&reply, req, -EINVAL, "%s",
                              error_get_pretty(err));
        error_free(err);
        err = NULL;
    } else if (req->hdr.cmd == MPQEMU_CMD_MEMORY_MAP) {
        /* what remote-memory.c relies on */
        assert(le32_to_cpu(req->u.memory.nr_sections) == req->hdr.num_fds);
        assert(req->hdr.size == offsetof(MPQemuMemoryMap, section) +
               req->hdr.num_fds * sizeof(MPQemuMemorySection));
        mpqemu_msg_init_reply(&reply, req, 0);
    } else if (arg & 1) {
        /* a device that refuses the access */
        mpqemu_msg_init_error(&reply, req, -EINVAL, "refused %s (%u bytes)",
                              mpqemu_cmd_name(req->hdr.cmd), req->hdr.size);
    } else {
        /* RING_SETUP: the ring, its eventfds and maybe the notify one */
        assert(req->hdr.cmd == MPQEMU_CMD_RING_SETUP
               ? req->hdr.num_fds == MPQEMU_RING_FDS +
                 !!(le32_to_cpu(req->u.ring_setup.flags) &
                    MPQEMU_RING_SETUP_NOTIFY_FD)
               : !req->hdr.num_fds);
        mpqemu_msg_init_reply(&reply, req, fuzz_reply_size(req->hdr.cmd));
    }
    mpqemu_msg_close_fds(req);

    if (mpqemu_msg_send(fd, &reply, FUZZ_TIMEOUT_MS, &err) < 0) {
        fprintf(stderr, "cannot answer: %s\n", error_get_pretty(err));
        abort();
    }
    check_answer(proxy_fd, req, accepted);
}

/*
 * As remote_object_readable(): serve every request that is whole; false
 * once the connection must close.
 */
static bool readable(int fd, int proxy_fd, MPQemuRecvState *rx, uint8_t arg)
{
    for (;;) {
        MPQemuMsg req;
        Error *err = NULL;
        int ret = mpqemu_msg_recv_partial(fd, rx, &req, 0, &err);

        if (ret == -EAGAIN) {
            assert(!err);
            return true;
        }
        if (ret < 0) {
            assert(err);
            error_free(err);
            /* the state was reset: nothing of the message is left */
            assert(rx->got == 0 && rx->nfds == 0);
            return false;
        }
        assert(!err);
        serve(fd, proxy_fd, &req, arg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    MPQemuRecvState rx = { 0 };
    FuzzInput in;
    FuzzRecord rec;
    uint8_t arg = 0;
    int fds_before = fuzz_count_fds();
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        abort();
    }
    qemu_socket_set_nonblock(sv[0]);

    fuzz_input_init(&in, data, size);
    while (fuzz_input_next(&in, &rec)) {
        bool open = true;

        switch (rec.op) {
        case FUZZ_OP_DATA:
            fuzz_send_chunk(&in, sv[1], &rec, FUZZ_TIMEOUT_MS);
            continue;
        case FUZZ_OP_CALL:
            arg = rec.arg;
            continue;
        case FUZZ_OP_EOF:
            shutdown(sv[1], SHUT_WR);
            /* fall through */
        default:
            open = readable(sv[0], sv[1], &rx, arg);
            break;
        }
        if (!open) {
            break;
        }
    }
    /* the end of the input: the proxy hangs up */
    shutdown(sv[1], SHUT_WR);
    while (readable(sv[0], sv[1], &rx, arg)) {
        /* until the end of file is read */
    }
    mpqemu_recv_state_reset(&rx);
    close(sv[0]);
    close(sv[1]);
    assert(fuzz_count_fds() == fds_before);
    return 0;
}
