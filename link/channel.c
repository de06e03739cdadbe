/*
 * mpqemu channel: moves framed protocol messages and their descriptors
 * over a UNIX stream socket, never blocking past a deadline.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "mpqemu/channel.h"
#include "trace.h"

#include <poll.h>
#include <sys/socket.h>

static int64_t deadline_after(int timeout_ms)
{
    return g_get_monotonic_time() + (int64_t)timeout_ms * 1000;
}

static int ms_until(int64_t deadline)
{
    int64_t left = deadline - g_get_monotonic_time();

    return left <= 0 ? 0 : (int)((left + 999) / 1000);
}

static bool wait_for(int fd, short events, int64_t deadline)
{
    struct pollfd pfd = { .fd = fd, .events = events };
    int ret;

    do {
        ret = poll(&pfd, 1, ms_until(deadline));
    } while (ret < 0 && errno == EINTR);
    return ret > 0;
}

bool mpqemu_wait_readable(int fd, int timeout_ms)
{
    return wait_for(fd, POLLIN, deadline_after(timeout_ms));
}

int mpqemu_msg_send(int fd, const MPQemuMsg *msg, int timeout_ms,
                    Error **errp)
{
    int64_t deadline = deadline_after(timeout_ms);
    MPQemuHeader wire = {
        .magic = cpu_to_le32(MPQEMU_MAGIC),
        .cmd = cpu_to_le16(msg->hdr.cmd),
        .flags = cpu_to_le16(msg->hdr.flags),
        .id = cpu_to_le64(msg->hdr.id),
        .size = cpu_to_le32(msg->hdr.size),
        .num_fds = cpu_to_le32(msg->hdr.num_fds),
    };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * MPQEMU_MAX_FDS)];
    } control;
    size_t total = sizeof(wire) + msg->hdr.size;
    size_t sent = 0;

    assert(msg->hdr.size <= MPQEMU_MAX_PAYLOAD);
    assert(msg->hdr.num_fds <= MPQEMU_MAX_FDS);
    trace_mpqemu_msg_send(fd, mpqemu_cmd_name(msg->hdr.cmd), msg->hdr.flags,
                          msg->hdr.id, msg->hdr.size, msg->hdr.num_fds);

    while (sent < total) {
        struct iovec iov[2];
        struct msghdr mh = { .msg_iov = iov };
        ssize_t n;

        if (sent < sizeof(wire)) {
            iov[mh.msg_iovlen++] = (struct iovec) {
                (char *)&wire + sent, sizeof(wire) - sent
            };
        }
        if (msg->hdr.size) {
            size_t done = sent > sizeof(wire) ? sent - sizeof(wire) : 0;
            iov[mh.msg_iovlen++] = (struct iovec) {
                (char *)msg->u.bytes + done, msg->hdr.size - done
            };
        }
        /* Descriptors travel with the first byte of the message */
        if (sent == 0 && msg->hdr.num_fds) {
            size_t len = sizeof(int) * msg->hdr.num_fds;
            struct cmsghdr *cmsg;

            memset(&control, 0, sizeof(control));
            mh.msg_control = control.buf;
            mh.msg_controllen = CMSG_SPACE(len);
            cmsg = CMSG_FIRSTHDR(&mh);
            cmsg->cmsg_level = SOL_SOCKET;
            cmsg->cmsg_type = SCM_RIGHTS;
            cmsg->cmsg_len = CMSG_LEN(len);
            memcpy(CMSG_DATA(cmsg), msg->fds, len);
        }

        n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!wait_for(fd, POLLOUT, deadline)) {
                    error_setg(errp, "timed out sending %s after %d ms",
                               mpqemu_cmd_name(msg->hdr.cmd), timeout_ms);
                    return -ETIMEDOUT;
                }
                continue;
            }
            error_setg_errno(errp, errno, "failed to send %s",
                             mpqemu_cmd_name(msg->hdr.cmd));
            return -errno;
        }
        sent += n;
    }
    return 0;
}

/*
 * Read exactly @len bytes into @buf. Descriptors that come along are
 * appended to @fds (at most MPQEMU_MAX_FDS; extras are closed and flagged
 * through *@excess). Returns the bytes read before EOF, or a negative errno.
 */
static ssize_t recv_exact(int fd, void *buf, size_t len, int *fds,
                          unsigned int *nfds, bool *excess, int64_t deadline)
{
    size_t got = 0;

    while (got < len) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int) * MPQEMU_MAX_FDS)];
        } control;
        struct iovec iov = { (char *)buf + got, len - got };
        struct msghdr mh = {
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = control.buf,
            .msg_controllen = sizeof(control.buf),
        };
        struct cmsghdr *cmsg;
        ssize_t n;

        n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!wait_for(fd, POLLIN, deadline)) {
                    return -ETIMEDOUT;
                }
                continue;
            }
            return -errno;
        }
        for (cmsg = CMSG_FIRSTHDR(&mh); cmsg; cmsg = CMSG_NXTHDR(&mh, cmsg)) {
            int *in = (int *)CMSG_DATA(cmsg);
            size_t count;

            if (cmsg->cmsg_level != SOL_SOCKET ||
                cmsg->cmsg_type != SCM_RIGHTS) {
                continue;
            }
            count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                if (*nfds < MPQEMU_MAX_FDS) {
                    fds[(*nfds)++] = in[i];
                } else {
                    close(in[i]);
                    *excess = true;
                }
            }
        }
        if (mh.msg_flags & MSG_CTRUNC) {
            *excess = true;
        }
        if (n == 0) {
            break;
        }
        got += n;
    }
    return got;
}

static int recv_fail(MPQemuMsg *msg, unsigned int nfds, int fd, int ret,
                     Error **errp, const char *fmt, ...) G_GNUC_PRINTF(6, 7);

static int recv_fail(MPQemuMsg *msg, unsigned int nfds, int fd, int ret,
                     Error **errp, const char *fmt, ...)
{
    g_autofree char *reason = NULL;
    va_list ap;

    for (unsigned int i = 0; i < nfds; i++) {
        close(msg->fds[i]);
    }
    msg->hdr.num_fds = 0;

    va_start(ap, fmt);
    reason = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    trace_mpqemu_msg_invalid(fd, reason);
    error_setg(errp, "%s", reason);
    return ret;
}

int mpqemu_msg_recv(int fd, MPQemuMsg *msg, int timeout_ms, Error **errp)
{
    int64_t deadline = deadline_after(timeout_ms);
    MPQemuHeader wire;
    unsigned int nfds = 0;
    bool excess = false;
    ssize_t n;

    msg->hdr.num_fds = 0;
    n = recv_exact(fd, &wire, sizeof(wire), msg->fds, &nfds, &excess,
                   deadline);
    if (n == 0) {
        return recv_fail(msg, nfds, fd, -EPIPE, errp,
                         "connection closed by peer");
    }
    if (n == -ETIMEDOUT) {
        return recv_fail(msg, nfds, fd, -ETIMEDOUT, errp,
                         "no message within %d ms", timeout_ms);
    }
    if (n < 0) {
        return recv_fail(msg, nfds, fd, n, errp, "receive failed: %s",
                         strerror(-n));
    }
    if (n < sizeof(wire)) {
        return recv_fail(msg, nfds, fd, -EPROTO, errp,
                         "connection closed after %zd of %zu header bytes",
                         n, sizeof(wire));
    }

    msg->hdr.magic = le32_to_cpu(wire.magic);
    msg->hdr.cmd = le16_to_cpu(wire.cmd);
    msg->hdr.flags = le16_to_cpu(wire.flags);
    msg->hdr.id = le64_to_cpu(wire.id);
    msg->hdr.size = le32_to_cpu(wire.size);
    msg->hdr.num_fds = le32_to_cpu(wire.num_fds);

    if (msg->hdr.magic != MPQEMU_MAGIC) {
        return recv_fail(msg, nfds, fd, -EPROTO, errp,
                         "bad magic 0x%08x (not an mpqemu peer?)",
                         msg->hdr.magic);
    }
    if (msg->hdr.size > MPQEMU_MAX_PAYLOAD) {
        return recv_fail(msg, nfds, fd, -EPROTO, errp,
                         "%s declares a %u-byte payload (limit %d)",
                         mpqemu_cmd_name(msg->hdr.cmd), msg->hdr.size,
                         MPQEMU_MAX_PAYLOAD);
    }
    if (excess || msg->hdr.num_fds != nfds) {
        return recv_fail(msg, nfds, fd, -EPROTO, errp,
                         "%s declares %u descriptors but %s%u arrived",
                         mpqemu_cmd_name(msg->hdr.cmd), msg->hdr.num_fds,
                         excess ? "more than " : "", nfds);
    }

    n = recv_exact(fd, msg->u.bytes, msg->hdr.size, msg->fds, &nfds, &excess,
                   deadline);
    if (n >= 0 && nfds != msg->hdr.num_fds) {
        return recv_fail(msg, nfds, fd, -EPROTO, errp,
                         "descriptors arrived in the middle of %s",
                         mpqemu_cmd_name(msg->hdr.cmd));
    }
    if (n == -ETIMEDOUT) {
        return recv_fail(msg, nfds, fd, -ETIMEDOUT, errp,
                         "%s payload incomplete after %d ms",
                         mpqemu_cmd_name(msg->hdr.cmd), timeout_ms);
    }
    if (n < 0) {
        return recv_fail(msg, nfds, fd, n, errp, "receive failed: %s",
                         strerror(-n));
    }
    if (n < msg->hdr.size) {
        return recv_fail(msg, nfds, fd, -EPROTO, errp,
                         "connection closed after %zd of %u payload bytes",
                         n, msg->hdr.size);
    }

    trace_mpqemu_msg_recv(fd, mpqemu_cmd_name(msg->hdr.cmd), msg->hdr.flags,
                          msg->hdr.id, msg->hdr.size, msg->hdr.num_fds);
    return 0;
}
