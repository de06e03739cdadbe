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

/* Where the descriptors that come with received bytes go */
typedef struct RecvFds {
    int *fds;               /* MPQEMU_MAX_FDS of them */
    unsigned int *nfds;
    bool *excess;
} RecvFds;

/*
 * Read up to @len bytes into @buf without blocking. Descriptors that come
 * along are added to @to (at most MPQEMU_MAX_FDS; extras are closed and
 * flagged). Returns the bytes read, 0 at end of file, or a negative errno
 * (-EAGAIN when nothing is there yet).
 */
static ssize_t recv_some(int fd, void *buf, size_t len, RecvFds to)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * MPQEMU_MAX_FDS)];
    } control;
    struct iovec iov = { buf, len };
    struct msghdr mh = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = sizeof(control.buf),
    };
    struct cmsghdr *cmsg;
    ssize_t n;

    do {
        n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    for (cmsg = CMSG_FIRSTHDR(&mh); cmsg; cmsg = CMSG_NXTHDR(&mh, cmsg)) {
        int *in = (int *)CMSG_DATA(cmsg);
        size_t count;

        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            if (*to.nfds < MPQEMU_MAX_FDS) {
                to.fds[(*to.nfds)++] = in[i];
            } else {
                close(in[i]);
                *to.excess = true;
            }
        }
    }
    if (mh.msg_flags & MSG_CTRUNC) {
        *to.excess = true;
    }
    return n;
}

static void close_fds(int *fds, unsigned int nfds)
{
    for (unsigned int i = 0; i < nfds; i++) {
        close(fds[i]);
    }
}

void mpqemu_recv_state_reset(MPQemuRecvState *st)
{
    close_fds(st->fds, st->nfds);
    close_fds(st->ahead.fds, st->ahead.nfds);
    memset(st, 0, sizeof(*st));
}

static int recv_fail(MPQemuRecvState *st, int fd, int ret, Error **errp,
                     const char *fmt, ...) G_GNUC_PRINTF(5, 6);

static int recv_fail(MPQemuRecvState *st, int fd, int ret, Error **errp,
                     const char *fmt, ...)
{
    g_autofree char *reason = NULL;
    va_list ap;

    mpqemu_recv_state_reset(st);
    va_start(ap, fmt);
    reason = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    trace_mpqemu_msg_invalid(fd, reason);
    error_setg(errp, "%s", reason);
    return ret;
}

/* The header is complete: check its framing before reading on */
static int check_header(MPQemuRecvState *st, int fd, Error **errp)
{
    MPQemuHeader *h = &st->hdr;
    MPQemuRecvAhead *ra = &st->ahead;

    h->magic = le32_to_cpu(st->wire.magic);
    h->cmd = le16_to_cpu(st->wire.cmd);
    h->flags = le16_to_cpu(st->wire.flags);
    h->id = le64_to_cpu(st->wire.id);
    h->size = le32_to_cpu(st->wire.size);
    h->num_fds = le32_to_cpu(st->wire.num_fds);

    if (h->magic != MPQEMU_MAGIC) {
        return recv_fail(st, fd, -EPROTO, errp,
                         "bad magic 0x%08x (not an mpqemu peer?)", h->magic);
    }
    if (h->size > MPQEMU_MAX_PAYLOAD) {
        return recv_fail(st, fd, -EPROTO, errp,
                         "%s declares a %u-byte payload (limit %d)",
                         mpqemu_cmd_name(h->cmd), h->size, MPQEMU_MAX_PAYLOAD);
    }
    /* Read ahead, they are this message's if it is the first to want any */
    if (st->from_ahead && h->num_fds && !st->nfds && !st->excess &&
        (ra->nfds || ra->excess)) {
        memcpy(st->fds, ra->fds, sizeof(int) * ra->nfds);
        st->nfds = ra->nfds;
        st->excess = ra->excess;
        ra->nfds = 0;
        ra->excess = false;
    }
    /* Descriptors travel with the first byte, so all are here by now */
    if (st->excess || h->num_fds != st->nfds) {
        return recv_fail(st, fd, -EPROTO, errp,
                         "%s declares %u descriptors but %s%u arrived",
                         mpqemu_cmd_name(h->cmd), h->num_fds,
                         st->excess ? "more than " : "", st->nfds);
    }
    return 0;
}

/* The message is whole: hand it over, keeping what was read past it */
static int recv_done(int fd, MPQemuRecvState *st, MPQemuMsg *msg,
                     Error **errp)
{
    MPQemuRecvAhead *ra = &st->ahead;

    /* every message that starts in them has been seen: none wanted these */
    if (ra->pos == ra->len && (ra->nfds || ra->excess)) {
        return recv_fail(st, fd, -EPROTO, errp, "descriptors arrived "
                         "with messages that declare none (the last %s)",
                         mpqemu_cmd_name(st->hdr.cmd));
    }
    msg->hdr = st->hdr;
    memcpy(msg->u.bytes, st->payload, st->hdr.size);
    memcpy(msg->fds, st->fds, sizeof(int) * st->nfds);
    trace_mpqemu_msg_recv(fd, mpqemu_cmd_name(msg->hdr.cmd), msg->hdr.flags,
                          msg->hdr.id, msg->hdr.size, msg->hdr.num_fds);
    st->got = 0;
    st->nfds = 0;
    st->excess = false;
    st->from_ahead = false;
    return 0;
}

/*
 * Read ahead of the message: as much as has arrived. Returns as
 * recv_some() does.
 */
static ssize_t recv_ahead(int fd, MPQemuRecvAhead *ra)
{
    ssize_t n;

    assert(ra->pos == ra->len && !ra->nfds && !ra->excess);
    ra->pos = ra->len = 0;
    n = recv_some(fd, ra->buf, sizeof(ra->buf), (RecvFds) {
                      ra->fds, &ra->nfds, &ra->excess });
    if (n > 0) {
        ra->len = n;
        /* Linux stops early only at descriptors (or a signal) */
        ra->drained = n < sizeof(ra->buf) && !ra->nfds && !ra->excess;
    }
    return n;
}

static int recv_step(int fd, MPQemuRecvState *st, MPQemuMsg *msg,
                     bool read_ahead, Error **errp)
{
    const size_t hdr_len = sizeof(st->wire);
    MPQemuRecvAhead *ra = &st->ahead;

    for (;;) {
        bool in_header = st->got < hdr_len;
        size_t want = hdr_len + (in_header ? 0 : st->hdr.size) - st->got;
        unsigned int nfds = st->nfds;
        char *dst;
        ssize_t n;
        int ret;

        if (!in_header && !want) {
            return recv_done(fd, st, msg, errp);
        }

        dst = in_header ? (char *)&st->wire + st->got
                        : (char *)st->payload + (st->got - hdr_len);
        if (ra->pos < ra->len) {
            n = MIN(want, ra->len - ra->pos);
            memcpy(dst, ra->buf + ra->pos, n);
            ra->pos += n;
            st->from_ahead |= st->got == 0;
        } else if (read_ahead && ra->drained) {
            /* what had arrived is taken; a new arrival wakes the caller */
            ra->drained = false;
            return -EAGAIN;
        } else {
            bool ahead = read_ahead && st->got == 0;

            ra->drained = false;
            if (ahead) {
                n = recv_ahead(fd, ra);
            } else {
                n = recv_some(fd, dst, want, (RecvFds) {
                                  st->fds, &st->nfds, &st->excess });
            }
            if (n == -EAGAIN) {
                return -EAGAIN;
            }
            if (n < 0) {
                return recv_fail(st, fd, n, errp, "receive failed: %s",
                                 strerror(-n));
            }
            if (n == 0) {
                if (st->got == 0) {
                    return recv_fail(st, fd, -EPIPE, errp,
                                     "connection closed by peer");
                }
                return recv_fail(st, fd, -EPROTO, errp, "connection closed "
                                 "in the middle of a message (%zu bytes in)",
                                 st->got);
            }
            if (ahead) {
                continue;       /* taken from there */
            }
            if (!in_header && st->nfds != nfds) {
                return recv_fail(st, fd, -EPROTO, errp, "descriptors arrived "
                                 "in the middle of %s",
                                 mpqemu_cmd_name(st->hdr.cmd));
            }
        }
        st->got += n;
        if (in_header && st->got == hdr_len) {
            ret = check_header(st, fd, errp);
            if (ret < 0) {
                return ret;
            }
        }
    }
}

static int recv_partial(int fd, MPQemuRecvState *st, MPQemuMsg *msg,
                        int timeout_ms, bool read_ahead, Error **errp)
{
    int64_t deadline = deadline_after(timeout_ms);
    int ret;

    for (;;) {
        ret = recv_step(fd, st, msg, read_ahead, errp);
        if (ret != -EAGAIN) {
            return ret;
        }
        if (!timeout_ms) {
            return -EAGAIN;
        }
        if (!wait_for(fd, POLLIN, deadline)) {
            error_setg(errp, st->got ? "message incomplete after %d ms"
                                     : "no message within %d ms", timeout_ms);
            return -ETIMEDOUT;
        }
    }
}

int mpqemu_msg_recv_partial(int fd, MPQemuRecvState *st, MPQemuMsg *msg,
                            int timeout_ms, Error **errp)
{
    return recv_partial(fd, st, msg, timeout_ms, !timeout_ms, errp);
}

int mpqemu_msg_recv(int fd, MPQemuMsg *msg, int timeout_ms, Error **errp)
{
    MPQemuRecvState st = { 0 };
    /* nothing may stay behind in @st: never read past the message */
    int ret = recv_partial(fd, &st, msg, timeout_ms, false, errp);

    if (ret < 0) {
        mpqemu_recv_state_reset(&st);
    }
    return ret;
}

bool mpqemu_file_read(int fd, void *buf, size_t size, Error **errp)
{
    struct stat st;
    size_t done = 0;

    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < size) {
        error_setg(errp, "the file does not hold the %zu bytes it should",
                   size);
        return false;
    }
    while (done < size) {
        ssize_t n = pread(fd, (uint8_t *)buf + done, size - done, done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            error_setg_errno(errp, n < 0 ? errno : EIO, "cannot read the file");
            return false;
        }
        done += n;
    }
    return true;
}

bool mpqemu_file_write(int fd, const void *buf, size_t size, Error **errp)
{
    size_t done = 0;

    if (ftruncate(fd, size) < 0) {
        error_setg_errno(errp, errno, "cannot size the file");
        return false;
    }
    while (done < size) {
        ssize_t n = pwrite(fd, (const uint8_t *)buf + done, size - done, done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            error_setg_errno(errp, n < 0 ? errno : EIO, "cannot write the file");
            return false;
        }
        done += n;
    }
    return true;
}
