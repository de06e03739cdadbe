/*
 * Tests of the channel's receive side (link/channel.c) on a socket pair:
 * framing, descriptors, and what a reader that does not wait reads ahead.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "mpqemu/channel.h"

#include <sys/socket.h>

#define TIMEOUT_MS  5000

typedef struct Pair {
    int sender;
    int receiver;
    MPQemuRecvState rx;
} Pair;

static Pair *pair_new(void)
{
    Pair *p = g_new0(Pair, 1);
    int sv[2];

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                    ==, 0);
    p->sender = sv[0];
    p->receiver = sv[1];
    g_assert_true(g_unix_set_fd_nonblocking(p->receiver, true, NULL));
    return p;
}

static void pair_free(Pair *p)
{
    mpqemu_recv_state_reset(&p->rx);
    close(p->sender);
    close(p->receiver);
    g_free(p);
}

/* A SET_IRQ notification on the wire, as the remote frames it */
typedef struct QEMU_PACKED WireIrq {
    MPQemuHeader h;
    MPQemuSetIrq irq;
} WireIrq;

static WireIrq wire_irq(uint32_t level, uint32_t num_fds)
{
    WireIrq w = {
        .h = {
            .magic = cpu_to_le32(MPQEMU_MAGIC),
            .cmd = cpu_to_le16(MPQEMU_CMD_SET_IRQ),
            .size = cpu_to_le32(sizeof(MPQemuSetIrq)),
            .num_fds = cpu_to_le32(num_fds),
        },
        .irq.level = cpu_to_le32(level),
    };
    return w;
}

/* Send @len bytes in one sendmsg(), with @nfds descriptors attached */
static void send_raw(int fd, const void *buf, size_t len, const int *fds,
                     unsigned int nfds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * (MPQEMU_MAX_FDS + 1))];
    } control = { };

    g_assert_cmpuint(nfds, <=, MPQEMU_MAX_FDS + 1);
    struct iovec iov = { (void *)buf, len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (nfds) {
        struct cmsghdr *cmsg;

        mh.msg_control = control.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsg = CMSG_FIRSTHDR(&mh);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }
    g_assert_cmpint(sendmsg(fd, &mh, MSG_NOSIGNAL), ==, len);
}

/* Receive without waiting, as a main-loop handler does */
static int recv_now(Pair *p, MPQemuMsg *msg, char **error)
{
    Error *err = NULL;
    int ret = mpqemu_msg_recv_partial(p->receiver, &p->rx, msg, 0, &err);

    if (error) {
        *error = err ? g_strdup(error_get_pretty(err)) : NULL;
    }
    error_free(err);
    return ret;
}

/*
 * ... and, as a main-loop handler is called again once the socket is
 * readable, until something other than -EAGAIN comes of it
 */
static int recv_next(Pair *p, MPQemuMsg *msg, char **error)
{
    int ret;

    while ((ret = recv_now(p, msg, error)) == -EAGAIN &&
           mpqemu_wait_readable(p->receiver, TIMEOUT_MS)) {
        /* what was read so far is kept in p->rx */
    }
    return ret;
}

static void expect_irq(Pair *p, uint32_t level)
{
    MPQemuMsg msg;

    g_assert_cmpint(recv_next(p, &msg, NULL), ==, 0);
    g_assert_cmpuint(msg.hdr.cmd, ==, MPQEMU_CMD_SET_IRQ);
    g_assert_cmpuint(msg.hdr.num_fds, ==, 0);
    g_assert_cmpuint(le32_to_cpu(msg.u.set_irq.level), ==, level);
}

static void expect_error(Pair *p, const char *what)
{
    MPQemuMsg msg;
    g_autofree char *error = NULL;

    g_assert_cmpint(recv_next(p, &msg, &error), ==, -EPROTO);
    g_test_message("%s", error);
    g_assert_nonnull(strstr(error, what));
    /* nothing of it stays behind */
    g_assert_cmpuint(p->rx.got, ==, 0);
    g_assert_cmpuint(p->rx.nfds, ==, 0);
    g_assert_cmpuint(p->rx.ahead.nfds, ==, 0);
}

/* Whether @a and @b are descriptors of the same open file */
static bool same_file(int a, int b)
{
    struct stat sa, sb;

    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 &&
           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Many notifications in one send come out one by one, then -EAGAIN */
static void test_burst(void)
{
    Pair *p = pair_new();
    WireIrq burst[300];     /* more than one read ahead holds */
    MPQemuMsg msg;

    for (int i = 0; i < ARRAY_SIZE(burst); i++) {
        burst[i] = wire_irq(i, 0);
    }
    send_raw(p->sender, burst, sizeof(burst), NULL, 0);
    for (int i = 0; i < ARRAY_SIZE(burst); i++) {
        expect_irq(p, i);
    }
    g_assert_cmpint(recv_now(p, &msg, NULL), ==, -EAGAIN);
    g_assert_cmpuint(p->rx.got, ==, 0);

    /* and what comes later is read as well */
    burst[0] = wire_irq(7, 0);
    send_raw(p->sender, burst, sizeof(burst[0]), NULL, 0);
    expect_irq(p, 7);
    g_assert_cmpint(recv_now(p, &msg, NULL), ==, -EAGAIN);
    pair_free(p);
}

/*
 * One read takes all that has arrived: the reader that does not wait finds
 * the messages that follow without the socket
 */
static void test_read_ahead(void)
{
    Pair *p = pair_new();
    WireIrq three[3] = { wire_irq(1, 0), wire_irq(2, 0), wire_irq(3, 0) };
    MPQemuMsg msg;

    send_raw(p->sender, three, sizeof(three), NULL, 0);
    expect_irq(p, 1);
    g_assert_false(mpqemu_wait_readable(p->receiver, 0));
    expect_irq(p, 2);
    expect_irq(p, 3);
    g_assert_cmpint(recv_now(p, &msg, NULL), ==, -EAGAIN);
    pair_free(p);
}

/* A message split anywhere is put together again */
static void test_split(void)
{
    Pair *p = pair_new();
    WireIrq two[2] = { wire_irq(1, 0), wire_irq(2, 0) };
    const uint8_t *bytes = (const uint8_t *)two;
    unsigned int seen = 0;
    MPQemuMsg msg;

    for (size_t i = 0; i < sizeof(two); i++) {
        int ret;

        send_raw(p->sender, bytes + i, 1, NULL, 0);
        ret = recv_now(p, &msg, NULL);
        if (ret == 0) {
            g_assert_cmpuint(le32_to_cpu(msg.u.set_irq.level), ==, ++seen);
            g_assert_cmpuint(i + 1, ==, seen * sizeof(WireIrq));
        } else {
            g_assert_cmpint(ret, ==, -EAGAIN);
        }
    }
    g_assert_cmpuint(seen, ==, 2);
    pair_free(p);
}

/*
 * Descriptors sent with the second of three messages are that message's,
 * however the three arrive together
 */
static void test_fds_in_burst(void)
{
    Pair *p = pair_new();
    WireIrq a = wire_irq(1, 0), b = wire_irq(2, 2), c = wire_irq(3, 0);
    int fds[2] = { p->sender, p->receiver };
    MPQemuMsg msg;

    send_raw(p->sender, &a, sizeof(a), NULL, 0);
    send_raw(p->sender, &b, sizeof(b), fds, 2);
    send_raw(p->sender, &c, sizeof(c), NULL, 0);

    expect_irq(p, 1);
    g_assert_cmpint(recv_next(p, &msg, NULL), ==, 0);
    g_assert_cmpuint(le32_to_cpu(msg.u.set_irq.level), ==, 2);
    g_assert_cmpuint(msg.hdr.num_fds, ==, 2);
    g_assert_true(same_file(msg.fds[0], p->sender));
    g_assert_true(same_file(msg.fds[1], p->receiver));
    mpqemu_msg_close_fds(&msg);
    expect_irq(p, 3);
    g_assert_cmpint(recv_now(p, &msg, NULL), ==, -EAGAIN);
    pair_free(p);
}

/*
 * Descriptors no message declares end the stream, once the last message
 * they may belong to has come
 */
static void test_fds_undeclared(void)
{
    Pair *p = pair_new();
    WireIrq two[2] = { wire_irq(1, 0), wire_irq(2, 0) };
    int fd = p->sender;

    send_raw(p->sender, two, sizeof(two), &fd, 1);
    expect_irq(p, 1);
    expect_error(p, "descriptors arrived with messages that declare none");
    pair_free(p);
}

/* A message that declares descriptors and comes without */
static void test_fds_missing(void)
{
    Pair *p = pair_new();
    WireIrq a = wire_irq(1, 1);

    send_raw(p->sender, &a, sizeof(a), NULL, 0);
    expect_error(p, "declares 1 descriptors but 0 arrived");
    pair_free(p);
}

/* Two messages want the descriptors of one send: the second goes without */
static void test_fds_wanted_twice(void)
{
    Pair *p = pair_new();
    WireIrq two[2] = { wire_irq(1, 1), wire_irq(2, 1) };
    int fd = p->sender;
    MPQemuMsg msg;

    send_raw(p->sender, two, sizeof(two), &fd, 1);
    g_assert_cmpint(recv_next(p, &msg, NULL), ==, 0);
    g_assert_cmpuint(msg.hdr.num_fds, ==, 1);
    mpqemu_msg_close_fds(&msg);
    expect_error(p, "declares 1 descriptors but 0 arrived");
    pair_free(p);
}

/* More descriptors than a message may carry */
static void test_fds_excess(void)
{
    Pair *p = pair_new();
    WireIrq a = wire_irq(1, MPQEMU_MAX_FDS);
    int fds[MPQEMU_MAX_FDS + 1];

    for (int i = 0; i < ARRAY_SIZE(fds); i++) {
        fds[i] = p->sender;
    }
    send_raw(p->sender, &a, sizeof(a), fds, ARRAY_SIZE(fds));
    expect_error(p, "but more than");
    pair_free(p);
}

/* Descriptors that come with the payload, after the header */
static void test_fds_mid_message(void)
{
    Pair *p = pair_new();
    WireIrq a = wire_irq(1, 0);
    int fd = p->sender;
    MPQemuMsg msg;

    send_raw(p->sender, &a.h, sizeof(a.h), NULL, 0);
    g_assert_cmpint(recv_now(p, &msg, NULL), ==, -EAGAIN);
    send_raw(p->sender, &a.irq, sizeof(a.irq), &fd, 1);
    expect_error(p, "descriptors arrived in the middle of SET_IRQ");
    pair_free(p);
}

/* A reader that waits takes one message and leaves the next on the socket */
static void test_waiting_reader(void)
{
    Pair *p = pair_new();
    WireIrq two[2] = { wire_irq(1, 0), wire_irq(2, 0) };
    Error *err = NULL;
    MPQemuMsg msg;

    send_raw(p->sender, two, sizeof(two), NULL, 0);
    g_assert_cmpint(mpqemu_msg_recv(p->receiver, &msg, TIMEOUT_MS, &err),
                    ==, 0);
    g_assert_cmpuint(le32_to_cpu(msg.u.set_irq.level), ==, 1);
    g_assert_true(mpqemu_wait_readable(p->receiver, 0));
    g_assert_cmpint(mpqemu_msg_recv_partial(p->receiver, &p->rx, &msg,
                                            TIMEOUT_MS, &err), ==, 0);
    g_assert_cmpuint(le32_to_cpu(msg.u.set_irq.level), ==, 2);
    g_assert_false(mpqemu_wait_readable(p->receiver, 0));
    pair_free(p);
}

/* The peer's close, between messages and in the middle of one */
static void test_closed(void)
{
    Pair *p = pair_new();
    WireIrq a = wire_irq(1, 0);
    g_autofree char *error = NULL;
    MPQemuMsg msg;

    send_raw(p->sender, &a, sizeof(a), NULL, 0);
    send_raw(p->sender, &a, sizeof(a) - 1, NULL, 0);
    shutdown(p->sender, SHUT_WR);
    expect_irq(p, 1);
    expect_error(p, "connection closed in the middle of a message");
    g_assert_cmpint(recv_next(p, &msg, &error), ==, -EPIPE);
    pair_free(p);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/mpqemu/channel/burst", test_burst);
    g_test_add_func("/mpqemu/channel/read-ahead", test_read_ahead);
    g_test_add_func("/mpqemu/channel/split", test_split);
    g_test_add_func("/mpqemu/channel/fds/in-burst", test_fds_in_burst);
    g_test_add_func("/mpqemu/channel/fds/undeclared", test_fds_undeclared);
    g_test_add_func("/mpqemu/channel/fds/missing", test_fds_missing);
    g_test_add_func("/mpqemu/channel/fds/wanted-twice",
                    test_fds_wanted_twice);
    g_test_add_func("/mpqemu/channel/fds/excess", test_fds_excess);
    g_test_add_func("/mpqemu/channel/fds/mid-message", test_fds_mid_message);
    g_test_add_func("/mpqemu/channel/waiting-reader", test_waiting_reader);
    g_test_add_func("/mpqemu/channel/closed", test_closed);
    return g_test_run();
}
