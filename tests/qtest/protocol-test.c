/*
 * mpqemu protocol robustness test: sends truncated, oversized, unknown and
 * out-of-range messages to each side of the link and checks that both
 * survive and report the error.
 *
 * - "remote" cases talk to a real remote process (x-remote machine serving
 *   an lsi53c895a, or an nvme) while the test plays the proxy;
 *   "remote/ring" cases set up the shared-memory ring, badly or well, and
 *   use it (batches of posted writes, the shadow copy of registers, also
 *   of registers the LSI's SCRIPTS change on their own, the notify eventfd
 *   the remote signals after its notifications);
 *   "remote/hints" cases ask for the device's access hints;
 * - "proxy" cases run a main QEMU with an x-pci-proxy-dev while a thread of
 *   the test plays the remote and answers a BAR read badly, on the socket
 *   or ("proxy/ring") in the ring; "proxy/ioeventfd", "proxy/hints",
 *   "proxy/shadow" and "proxy/posted" cases check what the proxy makes of
 *   doorbells, access hints, the shadow copy and posted writes, hostile
 *   ones included; "proxy/ring/notify-*" cases, of the notify eventfd, and
 *   of a remote that does not signal it;
 * - "startup" cases check that a version mismatch stops the main QEMU.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/cutils.h"
#include "qemu/host-utils.h"
#include "qemu/memfd.h"
#include "qemu/sockets.h"
#include "qobject/qdict.h"
#include "hw/pci/pci_regs.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qemu/atomic.h"
#include "mpqemu/channel.h"
#include "mpqemu/ring.h"
#include "mpqemu-qtest.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

/* How long the test waits for any answer before calling it missing */
#define IO_TIMEOUT_MS           5000

/* The device the remote cases talk to: an LSI 53C895A */
#define LSI_ID                  0x00121000u     /* device 0x12, vendor 0x1000 */
#define LSI_SCNTL0_RESET        0xc0            /* register 0 after reset */

/* ------------------------------------------------------------------------ */
/* Helpers shared by both sides                                             */
/* ------------------------------------------------------------------------ */

static bool send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= n;
    }
    return true;
}

/* Send @len bytes with @nfds descriptors attached to the first byte */
static bool send_with_fds(int fd, const void *buf, size_t len,
                          const int *fds, int nfds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct iovec iov = { (void *)buf, len };
    struct msghdr mh = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = CMSG_SPACE(sizeof(int) * nfds),
    };
    struct cmsghdr *cmsg;
    ssize_t n;

    g_assert_cmpint(nfds, >, 0);
    g_assert_cmpint(nfds, <=, 16);
    memset(&control, 0, sizeof(control));
    cmsg = CMSG_FIRSTHDR(&mh);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    do {
        n = sendmsg(fd, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == len;
}

/* A header as it travels on the wire (little-endian) */
static void wire_header(MPQemuHeader *h, uint32_t magic, uint16_t cmd,
                        uint16_t flags, uint64_t id, uint32_t size,
                        uint32_t num_fds)
{
    h->magic = cpu_to_le32(magic);
    h->cmd = cpu_to_le16(cmd);
    h->flags = cpu_to_le16(flags);
    h->id = cpu_to_le64(id);
    h->size = cpu_to_le32(size);
    h->num_fds = cpu_to_le32(num_fds);
}

/*
 * A descriptor whose closing can be observed: returns the write end of a
 * pipe to pass to a peer and keeps the read end in *@probe. Once every
 * copy of the write end is closed, the read end reports end-of-file.
 */
static int probe_fd_new(int *probe)
{
    int p[2];

    g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
    *probe = p[0];
    return p[1];
}

/* True if every copy of the probe's write end got closed within @ms */
static bool probe_fd_closed(int probe, int ms)
{
    struct pollfd pfd = { .fd = probe, .events = POLLIN };
    bool closed = false;
    char c;

    if (poll(&pfd, 1, ms) == 1 && (pfd.revents & (POLLIN | POLLHUP))) {
        closed = read(probe, &c, 1) == 0;
    }
    close(probe);
    return closed;
}

/*
 * Whether @fd is an eventfd: a file or a pipe in its place would keep the
 * side that polls it awake, or asleep, for good
 */
static bool fd_is_eventfd(int fd)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);
    g_autofree char *target = g_file_read_link(path, NULL);

    return target && g_str_equal(target, "anon_inode:[eventfd]");
}

/* Whether @fd has something to read (an eventfd: was signalled), not reading */
static bool fd_readable(int fd, int ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };

    return poll(&pfd, 1, ms) == 1 && (pfd.revents & POLLIN);
}

static void check_alive(QTestState *qts)
{
    QDict *resp = qtest_qmp(qts, "{'execute': 'query-status'}");
    QDict *ret;

    g_assert_nonnull(resp);
    g_assert_true(qdict_haskey(resp, "return"));
    ret = qdict_get_qdict(resp, "return");
    g_assert_nonnull(ret);
    g_assert_nonnull(qdict_get_try_str(ret, "status"));
    qobject_unref(resp);
}

/* ------------------------------------------------------------------------ */
/* Remote side: the test is the proxy                                       */
/* ------------------------------------------------------------------------ */

typedef struct Remote {
    char *dir;
    char *sock;
    const char *devid;      /* the device the remote serves */
    uint32_t pci_id;        /* its vendor and device ID */
    QTestState *qts;
    int fd;
    uint64_t id;            /* id of the next request */
} Remote;

static void remote_connect(Remote *r)
{
    g_assert_cmpint(r->fd, <, 0);
    r->fd = mpqemu_connect(r->sock);
    g_assert_cmpint(r->fd, >=, 0);
    r->id = 1;
}

/* A remote serving @devid, which @devices create */
static void remote_start_dev(Remote *r, const char *devid, uint32_t pci_id,
                             const char *devices)
{
    r->dir = mpqemu_tmp_dir();
    r->sock = g_build_filename(r->dir, "remote.sock", NULL);
    r->devid = devid;
    r->pci_id = pci_id;
    r->qts = mpqemu_start_remote(r->sock, devid, devices);
    r->fd = -1;
    remote_connect(r);
}

static void remote_start(Remote *r)
{
    remote_start_dev(r, "lsi1", LSI_ID, "-device lsi53c895a,id=lsi1");
}

static void send_msg(int fd, const MPQemuMsg *msg)
{
    Error *err = NULL;
    int ret = mpqemu_msg_send(fd, msg, IO_TIMEOUT_MS, &err);

    if (ret < 0) {
        g_test_message("send failed: %s", error_get_pretty(err));
        error_free(err);
    }
    g_assert_cmpint(ret, ==, 0);
}

static void recv_msg(int fd, MPQemuMsg *msg)
{
    Error *err = NULL;
    int ret = mpqemu_msg_recv(fd, msg, IO_TIMEOUT_MS, &err);

    if (ret < 0) {
        g_test_message("no reply: %s", error_get_pretty(err));
        error_free(err);
    }
    g_assert_cmpint(ret, ==, 0);
    g_assert_cmpuint(msg->hdr.num_fds, ==, 0);
}

/*
 * The peer must close the connection without answering, and promptly: not
 * after waiting out a timeout for bytes that will never come.
 */
static void expect_closed(int fd)
{
    MPQemuMsg msg;
    Error *err = NULL;
    int64_t start = g_get_monotonic_time();
    int ret = mpqemu_msg_recv(fd, &msg, IO_TIMEOUT_MS, &err);
    int64_t elapsed_ms = (g_get_monotonic_time() - start) / 1000;

    if (ret == 0) {
        g_test_message("unexpected %s message instead of a close",
                       mpqemu_cmd_name(msg.hdr.cmd));
        mpqemu_msg_close_fds(&msg);
    } else {
        g_test_message("connection ended: %s", error_get_pretty(err));
        error_free(err);
    }
    g_assert_cmpint(ret, ==, -EPIPE);
    g_assert_cmpint(elapsed_ms, <, 3000);
}

/*
 * As expect_closed(), for a message the peer may stop reading halfway: the
 * unread rest can turn the close into a reset.
 */
static void expect_closed_or_reset(int fd)
{
    MPQemuMsg msg;
    Error *err = NULL;
    int64_t start = g_get_monotonic_time();
    int ret = mpqemu_msg_recv(fd, &msg, IO_TIMEOUT_MS, &err);
    int64_t elapsed_ms = (g_get_monotonic_time() - start) / 1000;

    if (ret == 0) {
        g_test_message("unexpected %s message instead of a close",
                       mpqemu_cmd_name(msg.hdr.cmd));
        mpqemu_msg_close_fds(&msg);
    } else {
        g_test_message("connection ended: %s", error_get_pretty(err));
        error_free(err);
    }
    g_assert_true(ret == -EPIPE || ret == -ECONNRESET);
    g_assert_cmpint(elapsed_ms, <, 3000);
}

/* A successful reply to @req with a payload of @size bytes */
static void expect_reply(int fd, const MPQemuMsg *req, MPQemuMsg *reply,
                         uint32_t size)
{
    recv_msg(fd, reply);
    if (reply->hdr.flags & MPQEMU_FLAG_ERROR) {
        g_test_message("%s refused: %.*s", mpqemu_cmd_name(req->hdr.cmd),
                       (int)sizeof(reply->u.error.message),
                       reply->u.error.message);
    }
    g_assert_cmphex(reply->hdr.flags, ==, MPQEMU_FLAG_REPLY);
    g_assert_cmpuint(reply->hdr.id, ==, req->hdr.id);
    g_assert_cmpuint(reply->hdr.cmd, ==, req->hdr.cmd);
    g_assert_cmpuint(reply->hdr.size, ==, size);
    g_assert_true(mpqemu_msg_check(reply, MPQEMU_PEER_PROXY, &error_abort));
}

/*
 * Send @req and expect an error reply to it; returns the error message,
 * and with @code the error code. @req is sent as it is, so it may carry
 * any command, flags or size.
 */
static char *expect_error_code(int fd, const MPQemuMsg *req, int32_t *code)
{
    MPQemuMsg reply;
    size_t len;

    send_msg(fd, req);
    recv_msg(fd, &reply);
    g_assert_cmphex(reply.hdr.flags, ==, MPQEMU_FLAG_REPLY | MPQEMU_FLAG_ERROR);
    g_assert_cmpuint(reply.hdr.id, ==, req->hdr.id);
    g_assert_cmpuint(reply.hdr.cmd, ==, req->hdr.cmd);
    g_assert_cmpuint(reply.hdr.size, ==, sizeof(MPQemuError));
    g_assert_cmpint((int32_t)le32_to_cpu(reply.u.error.code), <, 0);
    len = strnlen(reply.u.error.message, sizeof(reply.u.error.message));
    g_assert_cmpuint(len, >, 0);
    g_assert_cmpuint(len, <, sizeof(reply.u.error.message));
    g_test_message("%s (cmd %u) refused: %s", mpqemu_cmd_name(req->hdr.cmd),
                   req->hdr.cmd, reply.u.error.message);
    if (code) {
        *code = le32_to_cpu(reply.u.error.code);
    }
    return g_strdup(reply.u.error.message);
}

static char *expect_error(int fd, const MPQemuMsg *req)
{
    return expect_error_code(fd, req, NULL);
}

static void expect_error_free(int fd, const MPQemuMsg *req)
{
    g_free(expect_error(fd, req));
}

static void init_hello(MPQemuMsg *m, uint64_t id, uint32_t version)
{
    mpqemu_msg_init(m, MPQEMU_CMD_HELLO, 0, id, sizeof(MPQemuHello));
    m->u.hello.version = cpu_to_le32(version);
    m->u.hello.features = cpu_to_le64(MPQEMU_FEATURES_KNOWN);
}

static void init_config(MPQemuMsg *m, MPQemuCmd cmd, uint64_t id,
                        uint32_t offset, uint32_t len, uint32_t value)
{
    mpqemu_msg_init(m, cmd, 0, id, sizeof(MPQemuConfigAccess));
    m->u.config.offset = cpu_to_le32(offset);
    m->u.config.len = cpu_to_le32(len);
    m->u.config.value = cpu_to_le32(value);
}

static void init_bar(MPQemuMsg *m, MPQemuCmd cmd, uint64_t id,
                     uint8_t region, uint64_t offset, uint8_t size,
                     uint64_t value)
{
    mpqemu_msg_init(m, cmd, 0, id, sizeof(MPQemuBarAccess));
    m->u.bar.offset = cpu_to_le64(offset);
    m->u.bar.value = cpu_to_le64(value);
    m->u.bar.region = region;
    m->u.bar.size = size;
}

static void remote_hello(Remote *r)
{
    MPQemuMsg req, reply;

    init_hello(&req, r->id++, MPQEMU_VERSION);
    send_msg(r->fd, &req);
    expect_reply(r->fd, &req, &reply, sizeof(MPQemuHello));
    g_assert_cmpuint(le32_to_cpu(reply.u.hello.version), ==, MPQEMU_VERSION);
    g_assert_cmpstr(reply.u.hello.devid, ==, r->devid);
}

static uint64_t remote_config_read(Remote *r, uint32_t offset, uint32_t len)
{
    MPQemuMsg req, reply;

    init_config(&req, MPQEMU_CMD_CONFIG_READ, r->id++, offset, len, 0);
    send_msg(r->fd, &req);
    expect_reply(r->fd, &req, &reply, sizeof(MPQemuValue));
    return le64_to_cpu(reply.u.value.value);
}

static uint64_t remote_bar_read(Remote *r, uint8_t region, uint64_t offset,
                                uint8_t size)
{
    MPQemuMsg req, reply;

    init_bar(&req, MPQEMU_CMD_BAR_READ, r->id++, region, offset, size, 0);
    send_msg(r->fd, &req);
    expect_reply(r->fd, &req, &reply, sizeof(MPQemuValue));
    return le64_to_cpu(reply.u.value.value);
}

/* The connection still serves requests */
static void remote_check_works(Remote *r)
{
    g_assert_cmphex(remote_config_read(r, 0, 4), ==, r->pci_id);
}

/* Close the connection so that the remote sees it before a new one comes */
static void remote_drop(Remote *r)
{
    g_assert_cmpint(shutdown(r->fd, SHUT_WR), ==, 0);
    expect_closed(r->fd);
    close(r->fd);
    r->fd = -1;
}

/* The connection is gone: the process lives on and takes a new one */
static void remote_check_recovers(Remote *r)
{
    close(r->fd);
    r->fd = -1;
    check_alive(r->qts);
    remote_connect(r);
    remote_hello(r);
    remote_check_works(r);
}

static void remote_stop(Remote *r)
{
    if (r->fd >= 0) {
        remote_drop(r);
    }
    check_alive(r->qts);
    qtest_quit(r->qts);
    g_free(r->sock);
    mpqemu_tmp_free(r->dir);
}

/* (1) requests before HELLO */
static void test_remote_before_hello(void)
{
    Remote r;
    MPQemuMsg req;
    g_autofree char *msg = NULL;

    remote_start(&r);

    init_config(&req, MPQEMU_CMD_CONFIG_READ, r.id++, 0, 4, 0);
    msg = expect_error(r.fd, &req);
    g_assert_nonnull(strstr(msg, "HELLO"));

    mpqemu_msg_init(&req, MPQEMU_CMD_DEVICE_INFO, 0, r.id++, 0);
    expect_error_free(r.fd, &req);
    init_bar(&req, MPQEMU_CMD_BAR_READ, r.id++, 1, 0, 1, 0);
    expect_error_free(r.fd, &req);
    init_bar(&req, MPQEMU_CMD_BAR_WRITE, r.id++, 2, 0, 4, 0x1234);
    expect_error_free(r.fd, &req);
    mpqemu_msg_init(&req, MPQEMU_CMD_RESET, 0, r.id++, 0);
    expect_error_free(r.fd, &req);

    /* none of this spoils the handshake */
    remote_hello(&r);
    remote_check_works(&r);
    remote_stop(&r);
}

/* (2) HELLO with a version the remote does not speak */
static void test_remote_hello_version(void)
{
    static const uint32_t bad[] = { 77, 0, MPQEMU_VERSION + 1, UINT32_MAX };
    Remote r;
    MPQemuMsg req;

    remote_start(&r);

    for (int i = 0; i < ARRAY_SIZE(bad); i++) {
        g_autofree char *msg = NULL;
        g_autofree char *theirs = g_strdup_printf("\\b%u\\b", bad[i]);
        g_autofree char *ours = g_strdup_printf("\\b%d\\b", MPQEMU_VERSION);

        init_hello(&req, r.id++, bad[i]);
        msg = expect_error(r.fd, &req);
        /* the message names the version asked for and the one spoken */
        g_assert_true(g_regex_match_simple(theirs, msg, 0, 0));
        g_assert_true(g_regex_match_simple(ours, msg, 0, 0));

        /* and the handshake did not happen */
        init_config(&req, MPQEMU_CMD_CONFIG_READ, r.id++, 0, 4, 0);
        expect_error_free(r.fd, &req);
    }

    remote_hello(&r);
    remote_check_works(&r);
    remote_stop(&r);
}

/* (3) well-formed requests get the device's answers */
static void test_remote_valid(void)
{
    static const struct {
        uint64_t size;
        uint32_t flags;
    } lsi_regions[MPQEMU_NUM_REGIONS] = {
        { 256, MPQEMU_REGION_IO }, { 1024, 0 }, { 8192, 0 },
    };
    Remote r;
    MPQemuMsg req, reply;

    remote_start(&r);
    remote_hello(&r);

    g_assert_cmphex(remote_config_read(&r, 0, 4), ==, LSI_ID);
    g_assert_cmphex(remote_config_read(&r, 0, 2), ==, LSI_ID & 0xffff);
    g_assert_cmphex(remote_config_read(&r, 2, 1), ==, (LSI_ID >> 16) & 0xff);
    g_assert_cmphex(remote_config_read(&r, 3, 1), ==, LSI_ID >> 24);

    mpqemu_msg_init(&req, MPQEMU_CMD_DEVICE_INFO, 0, r.id++, 0);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, sizeof(MPQemuDeviceInfo));
    g_assert_cmpuint(le32_to_cpu(reply.u.device_info.config_size), ==, 256);
    for (int i = 0; i < MPQEMU_NUM_REGIONS; i++) {
        g_assert_cmpuint(le64_to_cpu(reply.u.device_info.region[i].size), ==,
                         lsi_regions[i].size);
        g_assert_cmphex(le32_to_cpu(reply.u.device_info.region[i].flags), ==,
                        lsi_regions[i].flags);
    }

    g_assert_cmphex(remote_bar_read(&r, 1, 0, 1), ==, LSI_SCNTL0_RESET);
    g_assert_cmphex(remote_bar_read(&r, 0, 0, 1), ==, LSI_SCNTL0_RESET);

    /* script RAM (BAR2) keeps what is written to it */
    init_bar(&req, MPQEMU_CMD_BAR_WRITE, r.id++, 2, 0x100, 4, 0xdeadbeef);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, 0);
    g_assert_cmphex(remote_bar_read(&r, 2, 0x100, 4), ==, 0xdeadbeef);
    g_assert_cmphex(remote_bar_read(&r, 2, 0x1ffc, 4), ==, 0);

    mpqemu_msg_init(&req, MPQEMU_CMD_RESET, 0, r.id++, 0);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, 0);

    /* a second proxy is turned away; the first one is not disturbed */
    {
        int second = mpqemu_connect(r.sock);

        g_assert_cmpint(second, >=, 0);
        expect_closed(second);
        close(second);
    }

    remote_check_works(&r);
    remote_stop(&r);
}

/* (4) command numbers the protocol does not define */
static void test_remote_unknown_cmd(void)
{
    static const unsigned int cmds[] = { 200, 0, MPQEMU_CMD__MAX, 0xffff };
    Remote r;
    MPQemuMsg req;

    remote_start(&r);
    remote_hello(&r);

    for (int i = 0; i < ARRAY_SIZE(cmds); i++) {
        mpqemu_msg_init(&req, (MPQemuCmd)cmds[i], 0, r.id++, 0);
        expect_error_free(r.fd, &req);
        mpqemu_msg_init(&req, (MPQemuCmd)cmds[i], 0, r.id++, 16);
        expect_error_free(r.fd, &req);
        remote_check_works(&r);
    }

    /* SET_IRQ is a notification of the remote's, never a request to it */
    mpqemu_msg_init(&req, MPQEMU_CMD_SET_IRQ, 0, 0, sizeof(MPQemuSetIrq));
    expect_error_free(r.fd, &req);
    mpqemu_msg_init(&req, MPQEMU_CMD_SET_IRQ, 0, r.id++,
                    sizeof(MPQemuSetIrq));
    expect_error_free(r.fd, &req);

    remote_check_works(&r);
    remote_stop(&r);
}

/* (5) known commands with the wrong payload size or stray descriptors */
static void test_remote_bad_size(void)
{
    static const struct {
        MPQemuCmd cmd;
        uint32_t size;
    } cases[] = {
        { MPQEMU_CMD_CONFIG_READ, sizeof(MPQemuConfigAccess) - 8 },
        { MPQEMU_CMD_CONFIG_READ, sizeof(MPQemuConfigAccess) + 1 },
        { MPQEMU_CMD_CONFIG_READ, MPQEMU_MAX_PAYLOAD },
        { MPQEMU_CMD_CONFIG_WRITE, 0 },
        { MPQEMU_CMD_BAR_READ, 0 },
        { MPQEMU_CMD_BAR_WRITE, sizeof(MPQemuBarAccess) - 1 },
        { MPQEMU_CMD_DEVICE_INFO, 4 },
        { MPQEMU_CMD_RESET, 16 },
        { MPQEMU_CMD_HELLO, sizeof(MPQemuHello) - 1 },
        { MPQEMU_CMD_MEMORY_MAP, 4 },
        { MPQEMU_CMD_MEMORY_MAP, offsetof(MPQemuMemoryMap, section) + 1 },
    };
    Remote r;
    MPQemuMsg req;
    int probe;

    remote_start(&r);
    remote_hello(&r);

    for (int i = 0; i < ARRAY_SIZE(cases); i++) {
        mpqemu_msg_init(&req, cases[i].cmd, 0, r.id++, cases[i].size);
        if (cases[i].cmd == MPQEMU_CMD_CONFIG_READ) {
            req.u.config.len = cpu_to_le32(4);
        }
        expect_error_free(r.fd, &req);
        remote_check_works(&r);
    }

    /* a descriptor on a command that takes none is refused and closed */
    init_config(&req, MPQEMU_CMD_CONFIG_READ, r.id++, 0, 4, 0);
    req.hdr.num_fds = 1;
    req.fds[0] = probe_fd_new(&probe);
    expect_error_free(r.fd, &req);
    close(req.fds[0]);
    g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));

    remote_check_works(&r);
    remote_stop(&r);
}

/* (6) accesses outside config space or the BARs */
static void test_remote_out_of_range(void)
{
    static const struct {
        uint32_t offset, len;
    } config[] = {
        { 4096, 4 }, { 256, 1 }, { 254, 4 }, { 255, 2 }, { 0, 3 }, { 0, 0 },
        { 0, 8 }, { UINT32_MAX, 1 }, { UINT32_MAX - 1, 4 },
    };
    static const struct {
        uint8_t region;
        uint64_t offset;
        uint8_t size;
    } bar[] = {
        { 9, 0, 4 }, { 7, 0, 4 }, { 255, 0, 1 },        /* no such region */
        { 3, 0, 4 }, { 4, 0, 4 }, { 5, 0, 4 }, { 6, 0, 4 },   /* no BAR */
        { 0, 256, 1 }, { 0, 252, 8 }, { 1, 1024, 4 }, { 1, 1022, 4 },
        { 2, 8192, 4 }, { 2, 8188, 8 }, { 2, UINT64_MAX, 1 },
        { 2, UINT64_MAX - 3, 8 },                       /* beyond the BAR */
        { 1, 0, 3 }, { 1, 0, 16 }, { 1, 0, 0 }, { 2, 0, 255 },   /* size */
    };
    Remote r;
    MPQemuMsg req;

    remote_start(&r);
    remote_hello(&r);

    for (int i = 0; i < ARRAY_SIZE(config); i++) {
        init_config(&req, MPQEMU_CMD_CONFIG_READ, r.id++, config[i].offset,
                    config[i].len, 0);
        expect_error_free(r.fd, &req);
        init_config(&req, MPQEMU_CMD_CONFIG_WRITE, r.id++, config[i].offset,
                    config[i].len, 0xffffffff);
        expect_error_free(r.fd, &req);
    }
    remote_check_works(&r);

    for (int i = 0; i < ARRAY_SIZE(bar); i++) {
        init_bar(&req, MPQEMU_CMD_BAR_READ, r.id++, bar[i].region,
                 bar[i].offset, bar[i].size, 0);
        expect_error_free(r.fd, &req);
        init_bar(&req, MPQEMU_CMD_BAR_WRITE, r.id++, bar[i].region,
                 bar[i].offset, bar[i].size, 0x5a5a5a5a);
        expect_error_free(r.fd, &req);
    }
    remote_check_works(&r);

    /* the refused writes did not land: the last bytes of BAR2 are intact */
    g_assert_cmphex(remote_bar_read(&r, 2, 8184, 8), ==, 0);
    g_assert_cmphex(remote_bar_read(&r, 1, 0, 1), ==, LSI_SCNTL0_RESET);
    remote_stop(&r);
}

/* One MEMORY_MAP message; fds[] must have nr_fds entries */
static void init_map(MPQemuMsg *m, uint64_t id, uint32_t flags,
                     uint32_t nr_sections, const MPQemuMemorySection *s,
                     const int *fds, uint32_t nr_fds)
{
    mpqemu_msg_init(m, MPQEMU_CMD_MEMORY_MAP, 0, id,
                    offsetof(MPQemuMemoryMap, section) +
                    nr_sections * sizeof(MPQemuMemorySection));
    m->u.memory.flags = cpu_to_le32(flags);
    m->u.memory.nr_sections = cpu_to_le32(nr_sections);
    for (uint32_t i = 0; i < nr_sections; i++) {
        m->u.memory.section[i].gpa = cpu_to_le64(s[i].gpa);
        m->u.memory.section[i].size = cpu_to_le64(s[i].size);
        m->u.memory.section[i].offset = cpu_to_le64(s[i].offset);
    }
    m->hdr.num_fds = nr_fds;
    for (uint32_t i = 0; i < nr_fds; i++) {
        m->fds[i] = fds[i];
    }
}

static void map_expect_ok(Remote *r, uint32_t flags, uint32_t nr,
                          const MPQemuMemorySection *s, const int *fds)
{
    MPQemuMsg req, reply;

    init_map(&req, r->id++, flags, nr, s, fds, nr);
    send_msg(r->fd, &req);
    expect_reply(r->fd, &req, &reply, 0);
}

static void map_expect_error(Remote *r, uint32_t flags, uint32_t nr,
                             const MPQemuMemorySection *s, const int *fds,
                             uint32_t nr_fds)
{
    MPQemuMsg req;

    init_map(&req, r->id++, flags, nr, s, fds, nr_fds);
    expect_error_free(r->fd, &req);
}

/* (7) guest memory maps */
static void test_remote_memory_map(void)
{
    const uint32_t FL = MPQEMU_MEMORY_FIRST | MPQEMU_MEMORY_LAST;
    const uint64_t page = qemu_real_host_page_size();
    const uint64_t MiB2 = 2 * 1024 * 1024;
    const MPQemuMemorySection whole = { .gpa = 0, .size = MiB2 };
    const MPQemuMemorySection half[2] = {
        { .gpa = 0, .size = MiB2 / 2, .offset = 0 },
        { .gpa = 0x100000000ULL, .size = MiB2 / 2, .offset = MiB2 / 2 },
    };
    const MPQemuMemorySection overlap[2] = {
        { .gpa = 0, .size = MiB2 / 2 },
        { .gpa = MiB2 / 4, .size = MiB2 / 2, .offset = MiB2 / 2 },
    };
    const MPQemuMemorySection unaligned[] = {
        { .gpa = page / 2, .size = page },
        { .gpa = 0, .size = page + 1 },
        { .gpa = 0, .size = page, .offset = 1 },
        { .gpa = 0, .size = 0 },
        { .gpa = -page, .size = 2 * page },                 /* wraps */
    };
    const MPQemuMemorySection too_big[] = {
        { .gpa = 0, .size = 2 * MiB2 },
        { .gpa = 0, .size = MiB2, .offset = MiB2 / 2 },
        { .gpa = 0, .size = page, .offset = MiB2 },
        { .gpa = 0, .size = page, .offset = -page },
    };
    Remote r;
    int memfd, fds[2], probe;

    remote_start(&r);
    remote_hello(&r);
    memfd = qemu_memfd_create("mpqemu-protocol-test", MiB2, false, 0, 0,
                              &error_abort);
    g_assert_cmpint(memfd, >=, 0);
    fds[0] = fds[1] = memfd;

    /* a valid map first, then a valid map in two parts */
    map_expect_ok(&r, FL, 1, &whole, fds);
    map_expect_ok(&r, MPQEMU_MEMORY_FIRST, 1, &half[0], fds);
    map_expect_ok(&r, MPQEMU_MEMORY_LAST, 1, &half[1], fds);
    map_expect_ok(&r, FL, 0, NULL, NULL);                 /* the empty map */

    /* sections and descriptors that do not match */
    map_expect_error(&r, FL, 2, half, fds, 1);
    map_expect_error(&r, FL, 1, &whole, fds, 2);
    map_expect_error(&r, FL, 1, &whole, NULL, 0);
    map_expect_error(&r, FL, 0, NULL, fds, 1);
    remote_check_works(&r);

    /* a descriptor that is not shareable memory, which must be closed */
    fds[0] = probe_fd_new(&probe);
    map_expect_error(&r, FL, 1, &whole, fds, 1);
    close(fds[0]);
    g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));
    fds[0] = memfd;

    /* ... also when it follows a good section in the same message */
    fds[1] = probe_fd_new(&probe);
    map_expect_error(&r, FL, 2, half, fds, 2);
    close(fds[1]);
    g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));
    fds[1] = memfd;

    for (int i = 0; i < ARRAY_SIZE(unaligned); i++) {
        map_expect_error(&r, FL, 1, &unaligned[i], fds, 1);
    }
    for (int i = 0; i < ARRAY_SIZE(too_big); i++) {
        map_expect_error(&r, FL, 1, &too_big[i], fds, 1);
    }
    map_expect_error(&r, FL, 2, overlap, fds, 2);
    map_expect_error(&r, FL, 2, (MPQemuMemorySection[]) {whole, whole},
                     fds, 2);
    map_expect_error(&r, FL | 4, 1, &whole, fds, 1);     /* unknown flag */
    remote_check_works(&r);

    /* a continuation without a first part */
    map_expect_error(&r, MPQEMU_MEMORY_LAST, 1, &whole, fds, 1);
    map_expect_error(&r, 0, 1, &whole, fds, 1);

    /* a broken part drops the map being received, whole */
    map_expect_ok(&r, MPQEMU_MEMORY_FIRST, 1, &half[0], fds);
    map_expect_error(&r, 0, 1, &overlap[1], fds, 1);
    map_expect_error(&r, MPQEMU_MEMORY_LAST, 1, &half[1], fds, 1);

    /* ... and an overlap with an earlier part of the same map is caught */
    map_expect_ok(&r, MPQEMU_MEMORY_FIRST, 1, &overlap[0], fds);
    map_expect_error(&r, MPQEMU_MEMORY_LAST, 1, &overlap[1], fds, 1);

    /* a map of more sections than MPQEMU_MAX_MAP_SECTIONS */
    {
        int eight[MPQEMU_MAX_SECTIONS];
        MPQemuMemorySection s[MPQEMU_MAX_SECTIONS];
        uint64_t gpa = 0;
        int parts = MPQEMU_MAX_MAP_SECTIONS / MPQEMU_MAX_SECTIONS;

        for (int i = 0; i < MPQEMU_MAX_SECTIONS; i++) {
            eight[i] = memfd;
        }
        for (int part = 0; part < parts; part++) {
            for (int i = 0; i < MPQEMU_MAX_SECTIONS; i++) {
                s[i] = (MPQemuMemorySection) { .gpa = gpa, .size = page };
                gpa += 2 * page;
            }
            map_expect_ok(&r, part ? 0 : MPQEMU_MEMORY_FIRST,
                          MPQEMU_MAX_SECTIONS, s, eight);
        }
        s[0] = (MPQemuMemorySection) { .gpa = gpa, .size = page };
        map_expect_error(&r, MPQEMU_MEMORY_LAST, 1, s, eight, 1);
        remote_check_works(&r);
    }

    /* after all this, a valid map is still taken */
    map_expect_ok(&r, FL, 1, &whole, fds);
    remote_check_works(&r);

    close(memfd);
    remote_stop(&r);
}

/* (8) a header declaring more payload than any message may carry */
static void test_remote_oversized(void)
{
    static const uint32_t sizes[] = { 1024 * 1024, MPQEMU_MAX_PAYLOAD + 1,
                                      UINT32_MAX };
    Remote r;
    MPQemuHeader h;

    remote_start(&r);

    for (int i = 0; i < ARRAY_SIZE(sizes); i++) {
        remote_hello(&r);
        wire_header(&h, MPQEMU_MAGIC, MPQEMU_CMD_CONFIG_READ, 0, r.id++,
                    sizes[i], 0);
        g_assert_true(send_all(r.fd, &h, sizeof(h)));
        expect_closed(r.fd);
        remote_check_recovers(&r);
    }

    /* before HELLO too */
    wire_header(&h, MPQEMU_MAGIC, MPQEMU_CMD_HELLO, 0, r.id++, 1024 * 1024, 0);
    g_assert_true(send_all(r.fd, &h, sizeof(h)));
    expect_closed(r.fd);
    remote_check_recovers(&r);
    remote_stop(&r);
}

/* (9) messages cut short */
static void test_remote_truncated(void)
{
    Remote r;
    MPQemuHeader h;
    MPQemuConfigAccess payload = { .len = cpu_to_le32(4) };

    remote_start(&r);
    remote_hello(&r);

    /* half a header, then the connection goes away */
    wire_header(&h, MPQEMU_MAGIC, MPQEMU_CMD_CONFIG_READ, 0, r.id++,
                sizeof(payload), 0);
    g_assert_true(send_all(r.fd, &h, sizeof(h) / 2));
    close(r.fd);
    r.fd = -1;
    check_alive(r.qts);
    remote_connect(&r);
    remote_hello(&r);
    remote_check_works(&r);

    /* half a header, then only the end of the stream */
    g_assert_true(send_all(r.fd, &h, sizeof(h) / 2));
    g_assert_cmpint(shutdown(r.fd, SHUT_WR), ==, 0);
    expect_closed(r.fd);
    remote_check_recovers(&r);

    /* a whole header and half its payload */
    wire_header(&h, MPQEMU_MAGIC, MPQEMU_CMD_CONFIG_READ, 0, r.id++,
                sizeof(payload), 0);
    g_assert_true(send_all(r.fd, &h, sizeof(h)));
    g_assert_true(send_all(r.fd, &payload, sizeof(payload) / 2));
    g_assert_cmpint(shutdown(r.fd, SHUT_WR), ==, 0);
    expect_closed(r.fd);
    remote_check_recovers(&r);

    /* a header that promises a descriptor which never comes */
    wire_header(&h, MPQEMU_MAGIC, MPQEMU_CMD_RESET, 0, r.id++, 0, 1);
    g_assert_true(send_all(r.fd, &h, sizeof(h)));
    expect_closed(r.fd);
    remote_check_recovers(&r);

    remote_stop(&r);
}

/*
 * (9b) a message that stops in the middle and stays incomplete: waiting
 * for the rest must not stop the remote from doing anything else.
 */
static void test_remote_partial_stall(void)
{
    Remote r;
    MPQemuHeader h;
    int64_t start, elapsed_ms;

    remote_start(&r);
    remote_hello(&r);

    wire_header(&h, MPQEMU_MAGIC, MPQEMU_CMD_CONFIG_READ, 0, r.id++,
                sizeof(MPQemuConfigAccess), 0);
    g_assert_true(send_all(r.fd, &h, sizeof(h) / 2));
    g_usleep(50 * 1000);        /* let the remote start on it */
    start = g_get_monotonic_time();
    check_alive(r.qts);
    elapsed_ms = (g_get_monotonic_time() - start) / 1000;
    g_test_message("QMP answered after %" PRId64 " ms", elapsed_ms);

    /* then the message is cut off: the remote drops the connection */
    g_assert_cmpint(shutdown(r.fd, SHUT_WR), ==, 0);
    expect_closed(r.fd);
    remote_check_recovers(&r);
    remote_stop(&r);

    if (elapsed_ms >= 2000) {
        /* not fatal, so that the tests after this one still run */
        g_test_message("FAIL: the remote's monitor was stuck for %" PRId64
                       " ms behind half a message", elapsed_ms);
        g_test_fail();
    }
}

/* (10) bytes that are not an mpqemu message */
static void test_remote_bad_magic(void)
{
    Remote r;
    MPQemuHeader h;
    int probe, passfd;

    remote_start(&r);
    remote_hello(&r);

    wire_header(&h, 0x4d505132, MPQEMU_CMD_CONFIG_READ, 0, r.id++,
                sizeof(MPQemuConfigAccess), 0);
    g_assert_true(send_all(r.fd, &h, sizeof(h)));
    expect_closed(r.fd);
    remote_check_recovers(&r);

    /* before HELLO, with zeros */
    memset(&h, 0, sizeof(h));
    g_assert_true(send_all(r.fd, &h, sizeof(h)));
    expect_closed(r.fd);
    remote_check_recovers(&r);

    /* a descriptor the header does not declare: dropped and closed */
    wire_header(&h, MPQEMU_MAGIC, MPQEMU_CMD_RESET, 0, r.id++, 0, 0);
    passfd = probe_fd_new(&probe);
    g_assert_true(send_with_fds(r.fd, &h, sizeof(h), &passfd, 1));
    close(passfd);
    expect_closed(r.fd);
    g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));
    remote_check_recovers(&r);

    /* more descriptors than any message carries: all of them closed */
    {
        int many[MPQEMU_MAX_FDS + 1];

        passfd = probe_fd_new(&probe);
        for (int i = 0; i < ARRAY_SIZE(many); i++) {
            many[i] = passfd;
        }
        wire_header(&h, MPQEMU_MAGIC, MPQEMU_CMD_MEMORY_MAP, 0, r.id++, 0,
                    ARRAY_SIZE(many));
        g_assert_true(send_with_fds(r.fd, &h, sizeof(h), many,
                                    ARRAY_SIZE(many)));
        close(passfd);
        expect_closed(r.fd);
        g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));
        remote_check_recovers(&r);
    }

    remote_stop(&r);
}

/* (11) flags a request must not carry, and id 0 */
static void test_remote_bad_flags(void)
{
    static const uint16_t flags[] = {
        MPQEMU_FLAG_REPLY, MPQEMU_FLAG_ERROR,
        MPQEMU_FLAG_REPLY | MPQEMU_FLAG_ERROR, 1u << 2, 0x8000,
    };
    Remote r;
    MPQemuMsg req;

    remote_start(&r);
    remote_hello(&r);

    for (int i = 0; i < ARRAY_SIZE(flags); i++) {
        init_config(&req, MPQEMU_CMD_CONFIG_READ, r.id++, 0, 4, 0);
        req.hdr.flags = flags[i];
        expect_error_free(r.fd, &req);
    }
    /* a reply to a request the remote never sent, shaped as a reply */
    mpqemu_msg_init(&req, MPQEMU_CMD_CONFIG_READ, MPQEMU_FLAG_REPLY, r.id++,
                    sizeof(MPQemuValue));
    expect_error_free(r.fd, &req);
    mpqemu_msg_init(&req, MPQEMU_CMD_HELLO, MPQEMU_FLAG_REPLY, r.id++,
                    sizeof(MPQemuHello));
    expect_error_free(r.fd, &req);

    init_config(&req, MPQEMU_CMD_CONFIG_READ, 0, 0, 4, 0);
    expect_error_free(r.fd, &req);

    remote_check_works(&r);
    remote_stop(&r);
}

/* ------------------------------------------------------------------------ */
/* Remote side: the shared-memory ring (the test is the proxy)              */
/* ------------------------------------------------------------------------ */

/* LSI registers reached through the ring, in its MMIO BAR (region 1) */
#define LSI_MMIO_REGION         1
#define LSI_MMIO_SIZE           1024
#define LSI_REG_DSTAT           0x0c
#define LSI_REG_ISTAT0          0x14
#define LSI_REG_CTEST2          0x1a
#define LSI_REG_DSP             0x2c
#define LSI_REG_DCNTL           0x3b
#define LSI_REG_SCRATCHA        0x34
#define LSI_REG_DIEN            0x39
#define LSI_REG_SIST0           0x42
#define LSI_REG_SIST1           0x43
#define LSI_REG_SCRATCHB        0x5c    /* SCRATCHB to SCRATCHR follow */
#define LSI_NR_SCRATCH          18
#define LSI_DSTAT_ABRT          0x10
#define LSI_ISTAT0_ABRT         0x80

/* The name of the test's ring memfds, as the remote's mappings show it */
#define RING_MEMFD_NAME         "protocol-test-ring"

/* What a test puts in the response fields, to tell an answer from none */
#define RING_STATUS_UNSET       0x7eadbeef
#define RING_VALUE_UNSET        0xdeadbeefdeadbeefULL
#define RING_INTX_UNSET         0x7f    /* not a state the remote may answer */

/* The proxy's end of a ring: the memory and the two eventfds it created */
typedef struct TestRing {
    MPQemuRing *ring;       /* NULL if the memory is too small to map */
    size_t map_size;        /* bytes mapped: the ring page, then the shadow */
    uint32_t size;          /* what RING_SETUP announces */
    int mem_fd;
    int kick_fd;
    int done_fd;
    uint32_t seq;           /* the last request put in the ring */
    uint32_t published;     /* the last one handed to the remote */
} TestRing;

static void test_ring_init(TestRing *t, size_t file_size)
{
    void *map;

    memset(t, 0, sizeof(*t));
    /* sealed against resizing, as the protocol requires */
    t->mem_fd = qemu_memfd_create(RING_MEMFD_NAME, file_size, false, 0,
                                  F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL,
                                  &error_abort);
    g_assert_cmpint(t->mem_fd, >=, 0);
    t->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    g_assert_cmpint(t->kick_fd, >=, 0);
    t->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    g_assert_cmpint(t->done_fd, >=, 0);
    t->size = MAX(file_size, MPQEMU_RING_SIZE);
    if (file_size >= MPQEMU_RING_SIZE) {
        map = mmap(NULL, file_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                   t->mem_fd, 0);
        g_assert_true(map != MAP_FAILED);
        t->ring = map;
        t->map_size = file_size;
    }
}

static void test_ring_free(TestRing *t)
{
    if (t->ring) {
        munmap(t->ring, t->map_size);
    }
    close(t->mem_fd);
    close(t->kick_fd);
    close(t->done_fd);
}

static void init_ring_setup(MPQemuMsg *m, uint64_t id, uint32_t size,
                            const int *fds, unsigned int nfds)
{
    mpqemu_msg_init(m, MPQEMU_CMD_RING_SETUP, 0, id, sizeof(MPQemuRingSetup));
    m->u.ring_setup.size = cpu_to_le32(size);
    m->hdr.num_fds = nfds;
    for (unsigned int i = 0; i < nfds; i++) {
        m->fds[i] = fds[i];
    }
}

/* RING_SETUP with @t's memory and eventfds, which the remote must accept */
static void remote_ring_setup_raw(Remote *r, TestRing *t)
{
    MPQemuMsg req, reply;
    int fds[MPQEMU_RING_FDS] = { t->mem_fd, t->kick_fd, t->done_fd };

    init_ring_setup(&req, r->id++, t->size, fds, MPQEMU_RING_FDS);
    send_msg(r->fd, &req);
    expect_reply(r->fd, &req, &reply, 0);
}

/*
 * The same, then wait until the remote serves the ring and has gone to
 * sleep: a request put in the ring before the remote serves it may be
 * skipped (see test_remote_ring_first_request()), which the other ring
 * tests must not trip over.
 */
static bool ring_wait_asleep(TestRing *t, int ms)
{
    int64_t deadline = g_get_monotonic_time() + ms * G_TIME_SPAN_MILLISECOND;

    while (!qatomic_read(&t->ring->remote_sleeping)) {
        if (g_get_monotonic_time() > deadline) {
            return false;
        }
        g_usleep(1000);
    }
    return true;
}

static void remote_ring_setup(Remote *r, TestRing *t)
{
    remote_ring_setup_raw(r, t);
    g_assert_true(ring_wait_asleep(t, IO_TIMEOUT_MS));
}

/* RING_SETUP that the remote must refuse; returns the error message */
static char *remote_ring_setup_refused(Remote *r, uint32_t size,
                                       const int *fds, unsigned int nfds)
{
    MPQemuMsg req;

    init_ring_setup(&req, r->id++, size, fds, nfds);
    return expect_error(r->fd, &req);
}

/* HELLO offering @features; returns the features the remote accepted */
static uint64_t remote_hello_features(Remote *r, uint64_t features)
{
    MPQemuMsg req, reply;

    init_hello(&req, r->id++, MPQEMU_VERSION);
    req.u.hello.features = cpu_to_le64(features);
    send_msg(r->fd, &req);
    expect_reply(r->fd, &req, &reply, sizeof(MPQemuHello));
    g_assert_cmpuint(le32_to_cpu(reply.u.hello.version), ==, MPQEMU_VERSION);
    g_assert_cmpstr(reply.u.hello.devid, ==, r->devid);
    return le64_to_cpu(reply.u.hello.features);
}

/* A remote whose threads carry names */
static void remote_start_named(Remote *r)
{
    remote_start_dev(r, "lsi1", LSI_ID, "-name remote,debug-threads=on "
                     "-device lsi53c895a,id=lsi1");
}

/*
 * The threads of process @pid whose name starts with @prefix (all of them
 * if @prefix is NULL). With @ticks, also their CPU time so far, in clock
 * ticks.
 */
static int count_threads(pid_t pid, const char *prefix, uint64_t *ticks)
{
    g_autofree char *dir = g_strdup_printf("/proc/%d/task", (int)pid);
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *tid;
    int n = 0;

    g_assert_nonnull(d);
    if (ticks) {
        *ticks = 0;
    }
    while ((tid = g_dir_read_name(d))) {
        g_autofree char *comm_path = g_build_filename(dir, tid, "comm", NULL);
        g_autofree char *stat_path = g_build_filename(dir, tid, "stat", NULL);
        g_autofree char *comm = NULL;
        g_autofree char *stat = NULL;

        if (!g_file_get_contents(comm_path, &comm, NULL, NULL)) {
            continue;       /* the thread just ended */
        }
        if (prefix && !g_str_has_prefix(comm, prefix)) {
            continue;
        }
        n++;
        if (ticks && g_file_get_contents(stat_path, &stat, NULL, NULL)) {
            /* after "(comm)": state, then utime and stime are fields 14, 15 */
            const char *p = strrchr(stat, ')');
            g_auto(GStrv) f = g_strsplit(p ? p + 2 : "", " ", 0);

            g_assert_cmpuint(g_strv_length(f), >, 12);
            *ticks += g_ascii_strtoull(f[11], NULL, 10) +
                      g_ascii_strtoull(f[12], NULL, 10);
        }
    }
    return n;
}

/* Wait up to @ms for @pid to have @want threads named @prefix */
static int wait_threads(pid_t pid, const char *prefix, int want, int ms)
{
    int64_t deadline = g_get_monotonic_time() + ms * G_TIME_SPAN_MILLISECOND;
    int n;

    while ((n = count_threads(pid, prefix, NULL)) != want &&
           g_get_monotonic_time() < deadline) {
        g_usleep(5 * 1000);
    }
    return n;
}

/* How many times process @pid maps a ring of this test */
static int ring_maps(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/maps", pid);
    g_autofree char *maps = NULL;
    int n = 0;

    g_assert_true(g_file_get_contents(path, &maps, NULL, NULL));
    for (char *p = maps; (p = strstr(p, "memfd:" RING_MEMFD_NAME)); p++) {
        n++;
    }
    return n;
}

/* Wait up to @ms for @pid to map @want rings */
static int wait_ring_maps(pid_t pid, int want, int ms)
{
    int64_t deadline = g_get_monotonic_time() + ms * G_TIME_SPAN_MILLISECOND;
    int n;

    while ((n = ring_maps(pid)) != want &&
           g_get_monotonic_time() < deadline) {
        g_usleep(5 * 1000);
    }
    return n;
}

static int remote_ring_maps(Remote *r)
{
    return ring_maps(qtest_pid(r->qts));
}

/* The entry request @seq uses */
static MPQemuRingEntry *ring_entry(TestRing *t, uint32_t seq)
{
    return mpqemu_ring_entry(t->ring, seq);
}

/* The number of the request the remote answered last in @seq's entry */
static uint32_t ring_resp_seq(TestRing *t, uint32_t seq)
{
    return qatomic_load_acquire(&ring_entry(t, seq)->resp_seq);
}

/*
 * Fill the entry of the next request, as a proxy does, without telling the
 * remote yet. The response fields get values no answer has, so that an
 * entry the remote did not serve shows.
 */
static void ring_put(TestRing *t, uint32_t cmd, uint8_t region, uint8_t size,
                     uint8_t flags, uint64_t offset, uint64_t value)
{
    MPQemuRingEntry *e = ring_entry(t, ++t->seq);

    qatomic_set(&e->cmd, cmd);
    qatomic_set(&e->region, region);
    qatomic_set(&e->size, size);
    qatomic_set(&e->flags, flags);
    qatomic_set(&e->offset, offset);
    qatomic_set(&e->value, cmd == MPQEMU_CMD_BAR_WRITE ? value
                                                       : RING_VALUE_UNSET);
    qatomic_set(&e->status, RING_STATUS_UNSET);
    qatomic_set(&e->notify_seq, UINT32_MAX);
    qatomic_set(&e->intx, RING_INTX_UNSET);
}

/* Hand the requests put so far to the remote, in order, with one kick */
static void ring_publish(TestRing *t)
{
    MPQemuRing *ring = t->ring;

    while (t->published != t->seq) {
        t->published++;
        qatomic_store_release(&ring_entry(t, t->published)->req_seq,
                              t->published);
    }
    smp_mb();
    if (qatomic_read(&ring->remote_sleeping)) {
        g_assert_cmpint(eventfd_write(t->kick_fd, 1), ==, 0);
    }
}

/* Put a request in the ring, as a proxy does */
static void ring_submit(TestRing *t, uint32_t cmd, uint8_t region,
                        uint8_t size, uint64_t offset, uint64_t value)
{
    ring_put(t, cmd, region, size, 0, offset, value);
    ring_publish(t);
}

/*
 * Wait up to @ms for the answer to the last request. The test announces
 * that it sleeps before it even asks, so the remote must signal the done
 * eventfd for every answer: an answer that comes without that signal
 * counts as no answer.
 */
static bool ring_wait(TestRing *t, int ms)
{
    int64_t deadline = g_get_monotonic_time() + ms * G_TIME_SPAN_MILLISECOND;
    bool signalled = false;

    for (;;) {
        struct pollfd pfd = { .fd = t->done_fd, .events = POLLIN };
        int64_t left = (deadline - g_get_monotonic_time()) / 1000;
        eventfd_t count;

        if (signalled && ring_resp_seq(t, t->seq) == t->seq) {
            return true;
        }
        if (left <= 0) {
            return false;
        }
        if (poll(&pfd, 1, left) == 1 &&
            eventfd_read(t->done_fd, &count) == 0) {
            signalled = true;
        }
    }
}

/* Publish what was put, and wait for the remote to serve all of it */
static void ring_publish_wait(TestRing *t)
{
    qatomic_set(&t->ring->proxy_sleeping, 1);
    smp_mb();
    ring_publish(t);
    if (!ring_wait(t, IO_TIMEOUT_MS)) {
        g_test_message("no answer in the ring to request %u (resp_seq %u)",
                       t->seq, ring_resp_seq(t, t->seq));
        g_assert_not_reached();
    }
    qatomic_set(&t->ring->proxy_sleeping, 0);
}

/* One access through the ring; returns the status the remote answered */
static int ring_access(TestRing *t, uint32_t cmd, uint8_t region,
                       uint8_t size, uint64_t offset, uint64_t value,
                       uint64_t *result, uint32_t *notify_seq)
{
    MPQemuRingEntry *e;

    ring_put(t, cmd, region, size, 0, offset, value);
    ring_publish_wait(t);
    e = ring_entry(t, t->seq);
    if (result) {
        *result = qatomic_read(&e->value);
    }
    if (notify_seq) {
        *notify_seq = qatomic_read(&e->notify_seq);
    }
    return qatomic_read(&e->status);
}

static uint64_t ring_read(TestRing *t, uint8_t region, uint64_t offset,
                          uint8_t size)
{
    uint64_t value = 0;

    g_assert_cmpint(ring_access(t, MPQEMU_CMD_BAR_READ, region, size, offset,
                                0, &value, NULL), ==, 0);
    return value;
}

static void ring_write(TestRing *t, uint8_t region, uint64_t offset,
                       uint8_t size, uint64_t value)
{
    g_assert_cmpint(ring_access(t, MPQEMU_CMD_BAR_WRITE, region, size, offset,
                                value, NULL, NULL), ==, 0);
}

/* The INTx state the answer to the last request carries */
static uint8_t ring_intx(TestRing *t)
{
    return qatomic_read(&ring_entry(t, t->seq)->intx);
}

/* Expect one SET_IRQ notification of @level on the socket */
static void expect_set_irq(Remote *r, uint32_t level)
{
    MPQemuMsg msg;

    recv_msg(r->fd, &msg);
    g_assert_true(mpqemu_msg_check(&msg, MPQEMU_PEER_PROXY, &error_abort));
    g_assert_cmpuint(msg.hdr.cmd, ==, MPQEMU_CMD_SET_IRQ);
    g_assert_cmpuint(msg.hdr.id, ==, 0);
    g_assert_cmpuint(le32_to_cpu(msg.u.set_irq.level), ==, level);
}

/* Nothing is waiting on the socket */
static void expect_quiet(Remote *r)
{
    struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

    g_assert_cmpint(poll(&pfd, 1, 0), ==, 0);
}

/* (12) RING_SETUP without the RING feature negotiated */
static void test_remote_ring_not_negotiated(void)
{
    Remote r;
    TestRing t;
    int fds[MPQEMU_RING_FDS];
    g_autofree char *before_hello = NULL;
    g_autofree char *not_negotiated = NULL;
    g_autofree char *unknown_only = NULL;

    remote_start_named(&r);
    test_ring_init(&t, MPQEMU_RING_SIZE);
    fds[0] = t.mem_fd;
    fds[1] = t.kick_fd;
    fds[2] = t.done_fd;

    before_hello = remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, 3);
    g_assert_nonnull(strstr(before_hello, "HELLO"));

    /* a proxy that asks for no feature gets none, and no ring */
    g_assert_cmphex(remote_hello_features(&r, 0), ==, 0);
    not_negotiated = remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, 3);
    g_assert_nonnull(strstr(not_negotiated, "negotiated"));
    g_assert_cmpint(remote_ring_maps(&r), ==, 0);
    remote_check_works(&r);

    /*
     * unknown feature bits, the retired bit of the first ring layout among
     * them, are not granted, and do not imply RING
     */
    remote_drop(&r);
    remote_connect(&r);
    g_assert_cmphex(remote_hello_features(&r, 1ULL << 0 | 1ULL << 63), ==, 0);
    unknown_only = remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, 3);
    g_assert_nonnull(strstr(unknown_only, "negotiated"));
    g_assert_cmpint(remote_ring_maps(&r), ==, 0);
    remote_check_works(&r);

    /* the intersection: RING alone survives, and the same setup now works */
    remote_drop(&r);
    remote_connect(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING |
                                              1ULL << 0 | 1ULL << 63), ==,
                    MPQEMU_FEATURE_RING);
    remote_ring_setup(&r, &t);
    g_assert_cmpint(wait_ring_maps(qtest_pid(r.qts), 1, IO_TIMEOUT_MS), ==, 1);
    g_assert_cmphex(ring_read(&t, 0, 0, 1), ==, LSI_SCNTL0_RESET);
    remote_check_works(&r);

    remote_stop(&r);
    test_ring_free(&t);
}

/* (13) RING_SETUP carrying the wrong number of descriptors */
static void test_remote_ring_bad_fds(void)
{
    static const unsigned int counts[] = { 0, 1, 2, 4, MPQEMU_MAX_FDS };
    Remote r;
    TestRing t;
    MPQemuMsg req;
    int fds[MPQEMU_MAX_FDS], probe;

    remote_start_named(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                    MPQEMU_FEATURE_RING);
    test_ring_init(&t, MPQEMU_RING_SIZE);

    for (int i = 0; i < ARRAY_SIZE(counts); i++) {
        unsigned int n = counts[i];
        int passfd = -1;

        /* a ring's worth of descriptors, then one whose closing shows */
        fds[0] = t.mem_fd;
        fds[1] = t.kick_fd;
        fds[2] = t.done_fd;
        for (unsigned int j = MPQEMU_RING_FDS; j < MPQEMU_MAX_FDS; j++) {
            fds[j] = t.kick_fd;
        }
        if (n) {
            passfd = probe_fd_new(&probe);
            fds[n - 1] = passfd;
        }
        g_free(remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, n));
        if (n) {
            close(passfd);
            g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));
        }
        g_assert_cmpint(remote_ring_maps(&r), ==, 0);
        remote_check_works(&r);
    }

    /* the right descriptors with a payload of the wrong size */
    fds[0] = t.mem_fd;
    fds[1] = t.kick_fd;
    fds[2] = t.done_fd;
    init_ring_setup(&req, r.id++, MPQEMU_RING_SIZE, fds, 3);
    req.hdr.size = 4;
    expect_error_free(r.fd, &req);
    init_ring_setup(&req, r.id++, MPQEMU_RING_SIZE, fds, 3);
    req.hdr.size = 16;
    expect_error_free(r.fd, &req);
    g_assert_cmpint(remote_ring_maps(&r), ==, 0);
    remote_check_works(&r);

    /*
     * The header and the descriptors that came disagree: framing, so the
     * connection is closed, and what did come is closed too.
     */
    {
        struct QEMU_PACKED {
            MPQemuHeader h;
            MPQemuRingSetup s;
        } wire = { .s.size = cpu_to_le32(MPQEMU_RING_SIZE) };
        int two[2];

        /* three declared, two attached */
        wire_header(&wire.h, MPQEMU_MAGIC, MPQEMU_CMD_RING_SETUP, 0, r.id++,
                    sizeof(wire.s), MPQEMU_RING_FDS);
        two[0] = t.mem_fd;
        two[1] = probe_fd_new(&probe);
        g_assert_true(send_with_fds(r.fd, &wire, sizeof(wire), two, 2));
        close(two[1]);
        expect_closed_or_reset(r.fd);
        g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));
        remote_check_recovers(&r);
        g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                        MPQEMU_FEATURE_RING);

        /* none declared, three attached */
        wire_header(&wire.h, MPQEMU_MAGIC, MPQEMU_CMD_RING_SETUP, 0, r.id++,
                    sizeof(wire.s), 0);
        fds[2] = probe_fd_new(&probe);
        g_assert_true(send_with_fds(r.fd, &wire, sizeof(wire), fds, 3));
        close(fds[2]);
        expect_closed_or_reset(r.fd);
        g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));
        remote_check_recovers(&r);
    }
    g_assert_cmpint(remote_ring_maps(&r), ==, 0);

    remote_stop(&r);
    test_ring_free(&t);
}

/* (14) RING_SETUP whose memory or size is not a ring's */
static void test_remote_ring_bad_memory(void)
{
    static const uint32_t bad_sizes[] = {
        0, MPQEMU_RING_SIZE - 1, MPQEMU_RING_SIZE * 2, UINT32_MAX,
    };
    Remote r;
    TestRing t, small, big;
    int fds[MPQEMU_RING_FDS], probe, base, ro_fd, ev;
    g_autofree char *ro_path = NULL;

    remote_start_named(&r);
    base = count_threads(qtest_pid(r.qts), NULL, NULL);
    g_assert_cmpint(base, >, 0);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                    MPQEMU_FEATURE_RING);
    test_ring_init(&t, MPQEMU_RING_SIZE);
    fds[1] = t.kick_fd;
    fds[2] = t.done_fd;

    /* a pipe, which must be closed once refused */
    fds[0] = probe_fd_new(&probe);
    g_free(remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, 3));
    close(fds[0]);
    g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));

    /* an eventfd */
    ev = eventfd(0, EFD_CLOEXEC);
    g_assert_cmpint(ev, >=, 0);
    fds[0] = ev;
    g_free(remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, 3));
    close(ev);

    /* shared memory smaller than a ring */
    for (size_t size = 0; size < MPQEMU_RING_SIZE; size += 4095) {
        test_ring_init(&small, size ?: 1024);
        fds[0] = small.mem_fd;
        g_free(remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, 3));
        test_ring_free(&small);
    }

    /* shared memory that cannot be written */
    ro_path = g_strdup_printf("/proc/self/fd/%d", t.mem_fd);
    ro_fd = open(ro_path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(ro_fd, >=, 0);
    fds[0] = ro_fd;
    g_free(remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, 3));
    close(ro_fd);

    /* the right memory, but a size field other than a ring's */
    fds[0] = t.mem_fd;
    for (int i = 0; i < ARRAY_SIZE(bad_sizes); i++) {
        g_free(remote_ring_setup_refused(&r, bad_sizes[i], fds, 3));
    }

    /* memory and size beyond the largest shadow area there can be */
    test_ring_init(&big, MPQEMU_RING_SIZE + MPQEMU_SHADOW_MAX + 4096);
    fds[0] = big.mem_fd;
    g_free(remote_ring_setup_refused(&r, big.size, fds, 3));
    g_free(remote_ring_setup_refused(&r, MPQEMU_RING_SIZE + MPQEMU_SHADOW_MAX
                                         + 1, fds, 3));
    test_ring_free(&big);

    /* no ring mapped, no thread started or left behind */
    g_assert_cmpint(remote_ring_maps(&r), ==, 0);
    g_assert_cmpint(count_threads(qtest_pid(r.qts), NULL, NULL), ==, base);
    remote_check_works(&r);

    /* the refusals did not use up the connection's one ring */
    remote_ring_setup(&r, &t);
    g_assert_cmpint(wait_ring_maps(qtest_pid(r.qts), 1, IO_TIMEOUT_MS), ==, 1);
    g_assert_cmphex(ring_read(&t, 0, 0, 1), ==, LSI_SCNTL0_RESET);

    remote_stop(&r);
    test_ring_free(&t);
}

/* (15) a second RING_SETUP on the same connection */
static void test_remote_ring_twice(void)
{
    Remote r;
    TestRing t, second;
    int fds[MPQEMU_RING_FDS];
    g_autofree char *msg = NULL;

    remote_start_named(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                    MPQEMU_FEATURE_RING);
    test_ring_init(&t, MPQEMU_RING_SIZE);
    test_ring_init(&second, MPQEMU_RING_SIZE);
    remote_ring_setup(&r, &t);
    g_assert_cmpint(wait_ring_maps(qtest_pid(r.qts), 1, IO_TIMEOUT_MS), ==, 1);
    ring_write(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4, 0x600d0001);

    fds[0] = second.mem_fd;
    fds[1] = second.kick_fd;
    fds[2] = second.done_fd;
    msg = remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, 3);
    g_assert_nonnull(strstr(msg, "already"));
    /* ... also when it is the same ring again */
    g_free(remote_ring_setup_refused(&r, MPQEMU_RING_SIZE,
                                     (int[]) { t.mem_fd, t.kick_fd,
                                               t.done_fd }, 3));
    g_assert_cmpint(ring_maps(qtest_pid(r.qts)),
                    ==, 1);

    /* the first ring still serves; the refused one does not */
    g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4), ==,
                    0x600d0001);
    qatomic_set(&second.ring->remote_sleeping, 1);     /* so that it kicks */
    ring_submit(&second, MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION,
                4, LSI_REG_SCRATCHA, 0);
    g_assert_false(ring_wait(&second, 100));
    g_assert_cmpuint(ring_resp_seq(&second, second.seq), ==, 0);
    remote_check_works(&r);

    remote_stop(&r);
    test_ring_free(&t);
    test_ring_free(&second);
}

/* (16) BAR accesses through a ring, hostile ones included, then the end */
static void test_remote_ring_working(void)
{
    static const struct {
        uint32_t cmd;
        uint8_t region, size;
        uint64_t offset;
    } hostile[] = {
        { MPQEMU_CMD_BAR_READ, 9, 4, 0 },
        { MPQEMU_CMD_BAR_WRITE, 9, 4, 0 },
        { MPQEMU_CMD_BAR_READ, 7, 4, 0 },
        { MPQEMU_CMD_BAR_READ, UINT8_MAX, 4, 0 },
        { MPQEMU_CMD_BAR_WRITE, 6, 4, 0 },            /* no ROM */
        { MPQEMU_CMD_BAR_READ, 3, 4, 0 },             /* no BAR 3 */
        { MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION, 3, LSI_REG_SCRATCHA },
        { MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 3, LSI_REG_SCRATCHA },
        { MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 0, LSI_REG_SCRATCHA },
        { MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 16, LSI_REG_SCRATCHA },
        { MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, UINT8_MAX,
          LSI_REG_SCRATCHA },
        { MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION, 4, LSI_MMIO_SIZE },
        { MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 4, LSI_MMIO_SIZE - 2 },
        { MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION, 8, UINT64_MAX - 3 },
        { MPQEMU_CMD_BAR_WRITE, 2, 1, UINT64_MAX },
        { 77, LSI_MMIO_REGION, 4, LSI_REG_SCRATCHA },
        { 0, LSI_MMIO_REGION, 4, LSI_REG_SCRATCHA },
        { MPQEMU_CMD_CONFIG_WRITE, 0, 4, 0 },
        { MPQEMU_CMD_RING_SETUP, LSI_MMIO_REGION, 4, LSI_REG_SCRATCHA },
        { UINT32_MAX, LSI_MMIO_REGION, 4, LSI_REG_SCRATCHA },
    };
    Remote r;
    TestRing t, again;
    pid_t pid;
    uint64_t value, ticks_before, ticks_after;
    uint32_t notify_seq;
    int base;

    remote_start_named(&r);
    pid = qtest_pid(r.qts);
    base = count_threads(pid, NULL, NULL);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                    MPQEMU_FEATURE_RING);
    test_ring_init(&t, MPQEMU_RING_SIZE);
    remote_ring_setup(&r, &t);
    g_assert_cmpint(wait_ring_maps(pid, 1, IO_TIMEOUT_MS),
                    ==, 1);
    /* served by the main loop: no thread of its own */
    g_assert_cmpint(count_threads(pid, NULL, NULL), ==, base);

    /* what the ring writes, the ring and the socket read back */
    ring_write(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4, 0x5aa5c33c);
    g_assert_cmpint(ring_access(&t, MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION, 4,
                                LSI_REG_SCRATCHA, 0, &value, &notify_seq),
                    ==, 0);
    g_assert_cmphex(value, ==, 0x5aa5c33c);
    g_assert_cmpuint(notify_seq, ==, 0);
    g_assert_cmphex(remote_bar_read(&r, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4),
                    ==, 0x5aa5c33c);
    g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA + 1, 2),
                    ==, 0xa5c3);
    g_assert_cmphex(ring_read(&t, 0, LSI_REG_SCRATCHA, 4), ==, 0x5aa5c33c);

    /* and what the socket writes, the ring reads */
    {
        MPQemuMsg req, reply;

        init_bar(&req, MPQEMU_CMD_BAR_WRITE, r.id++, LSI_MMIO_REGION,
                 LSI_REG_SCRATCHA, 4, 0x01234567);
        send_msg(r.fd, &req);
        expect_reply(r.fd, &req, &reply, 0);
    }
    g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4), ==,
                    0x01234567);

    /* an idle ring: the remote sleeps, costs no CPU, and wakes when kicked */
    g_assert_true(ring_wait_asleep(&t, 1000));
    g_assert_cmpint(count_threads(pid, NULL, &ticks_before), ==, base);
    g_usleep(300 * 1000);
    g_assert_cmpint(count_threads(pid, NULL, &ticks_after), ==, base);
    g_test_message("remote with an idle ring: %" PRIu64 " ticks in 300 ms",
                   ticks_after - ticks_before);
    g_assert_cmpuint(ticks_after - ticks_before, <, 5);
    g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4), ==,
                    0x01234567);

    /* hostile requests fail alone; the ring keeps serving */
    for (int i = 0; i < ARRAY_SIZE(hostile); i++) {
        int status = ring_access(&t, hostile[i].cmd, hostile[i].region,
                                 hostile[i].size, hostile[i].offset, 0,
                                 NULL, NULL);

        g_test_message("ring cmd %u region %u size %u offset 0x%" PRIx64
                       ": status %d", hostile[i].cmd, hostile[i].region,
                       hostile[i].size, hostile[i].offset, status);
        g_assert_cmpint(status, <, 0);
        /* the refused writes did not land */
        g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4),
                        ==, 0x01234567);
        if (i % 4 == 0) {
            g_usleep(2 * 1000);         /* let the remote fall asleep */
        }
    }
    g_assert_cmphex(ring_read(&t, 2, 8184, 8), ==, 0);
    remote_check_works(&r);
    expect_quiet(&r);

    /*
     * An interrupt the device raises and lowers while serving the ring:
     * each notification is on the socket, counted in notify_seq, by the
     * time the answer is.
     */
    ring_write(&t, LSI_MMIO_REGION, LSI_REG_DIEN, 1, LSI_DSTAT_ABRT);
    expect_quiet(&r);
    g_assert_cmpint(ring_access(&t, MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 1,
                                LSI_REG_ISTAT0, LSI_ISTAT0_ABRT, NULL,
                                &notify_seq), ==, 0);
    g_assert_cmpuint(notify_seq, ==, 1);
    expect_set_irq(&r, 1);
    g_assert_cmpint(ring_access(&t, MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION, 1,
                                LSI_REG_DSTAT, 0, &value, &notify_seq), ==, 0);
    g_assert_cmphex(value & LSI_DSTAT_ABRT, ==, LSI_DSTAT_ABRT);
    g_assert_cmpuint(notify_seq, ==, 2);
    expect_set_irq(&r, 0);
    g_assert_cmpint(ring_access(&t, MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION, 4,
                                LSI_REG_SCRATCHA, 0, &value, &notify_seq),
                    ==, 0);
    g_assert_cmpuint(notify_seq, ==, 2);
    expect_quiet(&r);

    /* the proxy goes away: the remote unmaps the ring, and the ring is dead */
    close(r.fd);
    r.fd = -1;
    g_assert_cmpint(wait_ring_maps(pid, 0, IO_TIMEOUT_MS),
                    ==, 0);
    g_assert_cmpint(wait_threads(pid, NULL, base, IO_TIMEOUT_MS), ==, base);
    qatomic_set(&t.ring->remote_sleeping, 1);          /* so that it kicks */
    ring_submit(&t, MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 4,
                LSI_REG_SCRATCHA, 0xbad);
    g_assert_false(ring_wait(&t, 100));
    check_alive(r.qts);

    /* a new proxy gets a device reset on the way, and a ring of its own */
    remote_connect(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                    MPQEMU_FEATURE_RING);
    remote_check_works(&r);
    test_ring_init(&again, MPQEMU_RING_SIZE);
    remote_ring_setup(&r, &again);
    g_assert_cmphex(ring_read(&again, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4),
                    ==, 0);
    g_assert_cmpint(wait_ring_maps(pid, 1, IO_TIMEOUT_MS),
                    ==, 1);

    remote_drop(&r);
    g_assert_cmpint(wait_ring_maps(pid, 0, IO_TIMEOUT_MS),
                    ==, 0);
    remote_stop(&r);
    test_ring_free(&t);
    test_ring_free(&again);
}

/*
 * (17) the first request, put in the ring as soon as RING_SETUP's reply
 * arrives, as the protocol allows: it must be served even if the remote's
 * main loop had not looked at the ring yet.
 */
static void test_remote_ring_first_request(void)
{
    const int rounds = 200;
    Remote r;
    int lost = 0, round;

    remote_start_named(&r);

    for (round = 0; round < rounds && !lost; round++) {
        TestRing t;

        g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                        MPQEMU_FEATURE_RING);
        test_ring_init(&t, MPQEMU_RING_SIZE);
        remote_ring_setup_raw(&r, &t);
        qatomic_set(&t.ring->proxy_sleeping, 1);
        smp_mb();
        ring_submit(&t, MPQEMU_CMD_BAR_READ, 0, 1, 0, 0);
        if (!ring_wait(&t, 1000)) {
            lost++;
            g_test_message("round %d: the first request in the ring was "
                           "never answered (req_seq %u, resp_seq %u, "
                           "remote_sleeping %u)", round,
                           qatomic_read(&ring_entry(&t, t.seq)->req_seq),
                           ring_resp_seq(&t, t.seq),
                           qatomic_read(&t.ring->remote_sleeping));
            /* the next request is: the first one was skipped, not slow */
            ring_submit(&t, MPQEMU_CMD_BAR_READ, 0, 1, 0, 0);
            g_test_message("a second request was %s",
                           ring_wait(&t, 1000) ? "answered" : "not answered "
                           "either");
        } else {
            g_assert_cmphex(qatomic_read(&ring_entry(&t, 1)->value), ==,
                            LSI_SCNTL0_RESET);
        }
        remote_drop(&r);
        remote_connect(&r);
        test_ring_free(&t);
    }
    g_test_message("%d of %d first requests lost", lost, round);
    remote_stop(&r);
    if (lost) {
        /* not fatal, so that the tests after this one still run */
        g_test_message("FAIL: a request put in the ring right after "
                       "RING_SETUP's reply was never served");
        g_test_fail();
    }
}

/*
 * (18) a ring the proxy could shrink after RING_SETUP would kill the remote
 * by SIGBUS: the remote refuses a memfd not sealed against shrinking, and a
 * sealed one cannot be shrunk.
 */
static void test_remote_ring_shrunk(void)
{
    Remote r;
    TestRing t;
    int unsealed, fds[MPQEMU_RING_FDS];
    g_autofree char *msg = NULL;

    remote_start_named(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                    MPQEMU_FEATURE_RING);
    test_ring_init(&t, MPQEMU_RING_SIZE);

    unsealed = qemu_memfd_create("protocol-test-unsealed", MPQEMU_RING_SIZE,
                                 false, 0, 0, &error_abort);
    fds[0] = unsealed;
    fds[1] = t.kick_fd;
    fds[2] = t.done_fd;
    msg = remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds,
                                    MPQEMU_RING_FDS);
    g_assert_nonnull(strstr(msg, "sealed"));
    close(unsealed);

    remote_ring_setup(&r, &t);
    g_assert_cmphex(ring_read(&t, 0, 0, 1), ==, LSI_SCNTL0_RESET);
    g_assert_cmpint(ftruncate(t.mem_fd, 0), ==, -1);
    g_assert_cmpint(errno, ==, EPERM);
    g_assert_cmphex(ring_read(&t, 0, 0, 1), ==, LSI_SCNTL0_RESET);
    check_alive(r.qts);
    remote_stop(&r);
    test_ring_free(&t);
}

/*
 * (19) kick and done descriptors that are not eventfds: the remote
 * would poll a descriptor that is always readable, or never, so RING_SETUP
 * must be refused like any other bad value.
 */
static void test_remote_ring_not_eventfds(void)
{
    Remote r;
    TestRing t, other;
    MPQemuMsg req, reply;
    int fds[MPQEMU_RING_FDS];
    uint64_t ticks_before, ticks_after;
    pid_t pid;

    remote_start_named(&r);
    pid = qtest_pid(r.qts);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                    MPQEMU_FEATURE_RING);
    test_ring_init(&t, MPQEMU_RING_SIZE);
    test_ring_init(&other, MPQEMU_RING_SIZE);
    fds[0] = t.mem_fd;
    fds[1] = other.mem_fd;          /* a file: always readable */
    fds[2] = t.done_fd;

    init_ring_setup(&req, r.id++, MPQEMU_RING_SIZE, fds, 3);
    send_msg(r.fd, &req);
    recv_msg(r.fd, &reply);
    if (reply.hdr.flags & MPQEMU_FLAG_ERROR) {
        g_test_message("refused: %s", reply.u.error.message);
        g_assert_cmpint(remote_ring_maps(&r), ==, 0);
    } else {
        g_assert_cmpint(wait_ring_maps(pid, 1, IO_TIMEOUT_MS), ==, 1);
        g_usleep(20 * 1000);
        count_threads(pid, NULL, &ticks_before);
        g_usleep(300 * 1000);
        count_threads(pid, NULL, &ticks_after);
        g_test_message("FAIL: RING_SETUP with a memfd as kick descriptor was "
                       "accepted; the remote with an idle ring then used %"
                       PRIu64
                       " ticks of CPU in 300 ms (remote_sleeping %u)",
                       ticks_after - ticks_before,
                       qatomic_read(&t.ring->remote_sleeping));
        g_test_fail();
    }
    remote_check_works(&r);
    remote_stop(&r);
    test_ring_free(&t);
    test_ring_free(&other);
}

/*
 * (20) RING_INTX: an INTx change made while serving a waited-for access comes
 * back in its answer and nothing is sent on the socket; one made by a posted
 * write, which nobody waits for, is still sent as SET_IRQ.
 */
static void test_remote_ring_intx(void)
{
    uint64_t features = MPQEMU_FEATURE_RING | MPQEMU_FEATURE_POSTED_WRITES |
                        MPQEMU_FEATURE_RING_INTX;
    uint32_t notify_seq;
    uint64_t value;
    TestRing t;
    Remote r;

    remote_start_named(&r);
    g_assert_cmphex(remote_hello_features(&r, features), ==, features);
    test_ring_init(&t, MPQEMU_RING_SIZE);
    remote_ring_setup(&r, &t);
    ring_write(&t, LSI_MMIO_REGION, LSI_REG_DIEN, 1, LSI_DSTAT_ABRT);
    g_assert_cmphex(ring_intx(&t), ==, 0);

    /* the write that raises the line, the read that lowers it */
    g_assert_cmpint(ring_access(&t, MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 1,
                                LSI_REG_ISTAT0, LSI_ISTAT0_ABRT, NULL,
                                &notify_seq), ==, 0);
    g_assert_cmphex(ring_intx(&t), ==, MPQEMU_RING_INTX_CHANGED |
                                       MPQEMU_RING_INTX_LEVEL);
    g_assert_cmpuint(notify_seq, ==, 0);
    g_assert_cmpint(ring_access(&t, MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION, 1,
                                LSI_REG_DSTAT, 0, &value, &notify_seq), ==, 0);
    g_assert_cmphex(value & LSI_DSTAT_ABRT, ==, LSI_DSTAT_ABRT);
    g_assert_cmphex(ring_intx(&t), ==, MPQEMU_RING_INTX_CHANGED);
    g_assert_cmpuint(notify_seq, ==, 0);
    g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4), ==,
                    0);
    g_assert_cmphex(ring_intx(&t), ==, 0);
    expect_quiet(&r);

    /* posted: on the socket, counted for the next answer */
    ring_put(&t, MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 1, MPQEMU_RING_POSTED,
             LSI_REG_ISTAT0, LSI_ISTAT0_ABRT);
    ring_publish_wait(&t);
    expect_set_irq(&r, 1);
    g_assert_cmpint(ring_access(&t, MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION, 1,
                                LSI_REG_DSTAT, 0, &value, &notify_seq), ==, 0);
    g_assert_cmpuint(notify_seq, ==, 1);
    g_assert_cmphex(ring_intx(&t), ==, MPQEMU_RING_INTX_CHANGED);
    expect_quiet(&r);
    remote_check_works(&r);

    remote_stop(&r);
    test_ring_free(&t);
}

/* ------------------------------------------------------------------------ */
/* Remote side: access hints, batches and the shadow (the test is the proxy) */
/* ------------------------------------------------------------------------ */

/* The nvme the hint and shadow cases talk to, with nothing behind it */
#define NVME_ID                 0x00101b36u     /* device 0x10, Red Hat */
#define NVME_DEVICES            "-drive if=none,id=d0,file=null-co://," \
                                "format=raw -device nvme,serial=mpq," \
                                "drive=d0,id=nvme1"
#define NVME_REG_CAP            0x00
#define NVME_REG_VS             0x08
#define NVME_REG_INTMS          0x0c
#define NVME_REG_CC             0x14
#define NVME_REG_AQA            0x24

/* The features that give a device's access hints */
#define HINT_FEATURES           (MPQEMU_FEATURE_RING | \
                                 MPQEMU_FEATURE_POSTED_WRITES | \
                                 MPQEMU_FEATURE_SHADOW)

static void remote_start_nvme(Remote *r)
{
    remote_start_dev(r, "nvme1", NVME_ID, NVME_DEVICES);
}

/* A new connection to the same remote */
static void remote_reconnect(Remote *r)
{
    remote_drop(r);
    remote_connect(r);
}

static void init_access_hints(MPQemuMsg *m, uint64_t id)
{
    mpqemu_msg_init(m, MPQEMU_CMD_ACCESS_HINTS, 0, id, 0);
}

/* ACCESS_HINTS, which must succeed; @out gets the hints in host order */
static void remote_access_hints(Remote *r, MPQemuAccessHints *out)
{
    MPQemuMsg req, reply;
    const MPQemuAccessHints *in = &reply.u.hints;

    init_access_hints(&req, r->id++);
    send_msg(r->fd, &req);
    expect_reply(r->fd, &req, &reply, sizeof(MPQemuAccessHints));
    memset(out, 0, sizeof(*out));
    out->nr_hints = le32_to_cpu(in->nr_hints);
    out->shadow_size = le32_to_cpu(in->shadow_size);
    g_assert_cmpuint(out->nr_hints, <=, MPQEMU_MAX_HINTS);
    g_assert_cmpuint(out->shadow_size, <=, MPQEMU_SHADOW_MAX);
    for (uint32_t i = 0; i < out->nr_hints; i++) {
        MPQemuAccessHint *h = &out->hint[i];

        *h = in->hint[i];
        h->offset = le64_to_cpu(in->hint[i].offset);
        h->size = le32_to_cpu(in->hint[i].size);
        h->shadow_offset = le32_to_cpu(in->hint[i].shadow_offset);
        g_test_message("hint %u: kind %u region %u offset 0x%" PRIx64
                       " size 0x%x shadow at 0x%x width %u flags 0x%x "
                       "sizes %u-%u", i, h->kind, h->region, h->offset,
                       h->size, h->shadow_offset, h->width, h->flags,
                       h->min_size, h->max_size);
    }
}

/* ACCESS_HINTS, which the remote must refuse with -EPROTO */
static char *remote_access_hints_refused(Remote *r)
{
    MPQemuMsg req;
    int32_t code;
    char *msg;

    init_access_hints(&req, r->id++);
    msg = expect_error_code(r->fd, &req, &code);
    g_assert_cmpint(code, ==, -EPROTO);
    return msg;
}

/* The hint of @kind in @region whose range covers [@start, @end), if any */
static const MPQemuAccessHint *find_hint(const MPQemuAccessHints *hints,
                                         uint8_t kind, uint8_t region,
                                         uint64_t start, uint64_t end)
{
    for (uint32_t i = 0; i < hints->nr_hints; i++) {
        const MPQemuAccessHint *h = &hints->hint[i];

        if (h->kind == kind && h->region == region && h->offset <= start &&
            h->offset + h->size >= end) {
            return h;
        }
    }
    return NULL;
}

static unsigned int count_hints(const MPQemuAccessHints *hints, uint8_t kind)
{
    unsigned int n = 0;

    for (uint32_t i = 0; i < hints->nr_hints; i++) {
        n += hints->hint[i].kind == kind;
    }
    return n;
}

/* Where the device's MSI-X table is, as its config space says */
static void remote_find_msix(Remote *r, uint8_t *bir, uint32_t *offset,
                             uint32_t *entries)
{
    uint32_t pos;

    g_assert_true(remote_config_read(r, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
    pos = remote_config_read(r, PCI_CAPABILITY_LIST, 1) & ~3;
    for (int n = 0; pos && n < 48; n++) {
        uint32_t id = remote_config_read(r, pos + PCI_CAP_LIST_ID, 1);

        if (id == PCI_CAP_ID_MSIX) {
            uint32_t table = remote_config_read(r, pos + PCI_MSIX_TABLE, 4);

            *entries = (remote_config_read(r, pos + PCI_MSIX_FLAGS, 2) &
                        PCI_MSIX_FLAGS_QSIZE) + 1;
            *bir = table & PCI_MSIX_FLAGS_BIRMASK;
            *offset = table & ~PCI_MSIX_FLAGS_BIRMASK;
            return;
        }
        pos = remote_config_read(r, pos + PCI_CAP_LIST_NEXT, 1) & ~3;
    }
    g_assert_not_reached();
}

/* (20) ACCESS_HINTS only after HELLO granted hints, and before the ring */
static void test_remote_hints_refused(void)
{
    Remote r;
    TestRing t;
    MPQemuMsg req;
    MPQemuAccessHints hints;
    g_autofree char *before_hello = NULL;
    g_autofree char *not_negotiated = NULL;
    g_autofree char *after_ring = NULL;

    remote_start(&r);
    before_hello = remote_access_hints_refused(&r);
    g_assert_nonnull(strstr(before_hello, "HELLO"));

    /* nothing negotiated, and the ring alone */
    g_assert_cmphex(remote_hello_features(&r, 0), ==, 0);
    not_negotiated = remote_access_hints_refused(&r);
    g_assert_nonnull(strstr(not_negotiated, "negotiated"));
    remote_reconnect(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                    MPQEMU_FEATURE_RING);
    g_free(remote_access_hints_refused(&r));
    remote_check_works(&r);

    /* the ring-based features without the ring are not granted at all */
    remote_reconnect(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURES_RING_BASED), ==,
                    0);
    g_free(remote_access_hints_refused(&r));
    remote_check_works(&r);

    /* with posted writes, the answer: the LSI's SCRIPTS starters */
    remote_reconnect(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING |
                                              MPQEMU_FEATURE_POSTED_WRITES),
                    ==, MPQEMU_FEATURE_RING | MPQEMU_FEATURE_POSTED_WRITES);
    /* a request with a payload is malformed */
    init_access_hints(&req, r.id++);
    req.hdr.size = 8;
    expect_error_free(r.fd, &req);
    remote_access_hints(&r, &hints);
    g_assert_cmpuint(hints.nr_hints, ==, 3);
    g_assert_cmpuint(hints.shadow_size, ==, 0);
    /* asking again before the ring is set up is fine */
    remote_access_hints(&r, &hints);
    g_assert_cmpuint(hints.nr_hints, ==, 3);

    /* once the ring is set up, the hints cannot change any more */
    test_ring_init(&t, MPQEMU_RING_SIZE);
    remote_ring_setup(&r, &t);
    after_ring = remote_access_hints_refused(&r);
    g_assert_nonnull(strstr(after_ring, "ring"));
    g_assert_cmphex(ring_read(&t, 0, 0, 1), ==, LSI_SCNTL0_RESET);
    remote_check_works(&r);

    remote_stop(&r);
    test_ring_free(&t);
}

/* (21) an nvme's hints: the MSI-X table synchronous, VS and more shadowed */
static void test_remote_hints_nvme(void)
{
    Remote r;
    MPQemuMsg req, reply;
    MPQemuAccessHints hints;
    uint64_t bar_size;
    uint32_t table_offset, entries;
    uint8_t bir;
    const MPQemuAccessHint *h;

    remote_start_nvme(&r);
    g_assert_cmphex(remote_hello_features(&r, HINT_FEATURES), ==,
                    HINT_FEATURES);
    remote_check_works(&r);

    mpqemu_msg_init(&req, MPQEMU_CMD_DEVICE_INFO, 0, r.id++, 0);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, sizeof(MPQemuDeviceInfo));
    bar_size = le64_to_cpu(reply.u.device_info.region[0].size);
    g_assert_cmpuint(bar_size, >=, 0x1000);
    remote_find_msix(&r, &bir, &table_offset, &entries);
    g_test_message("BAR0: 0x%" PRIx64 " bytes; MSI-X: %u vectors at 0x%x of "
                   "BAR%u", bar_size, entries, table_offset, bir);

    remote_access_hints(&r, &hints);
    g_assert_cmpuint(hints.nr_hints, >, 0);
    g_assert_cmpuint(hints.shadow_size, >, 0);
    for (uint32_t i = 0; i < hints.nr_hints; i++) {
        h = &hints.hint[i];

        /* every hint lies inside BAR0, the nvme's one BAR */
        g_assert_cmpuint(h->region, ==, 0);
        g_assert_cmpuint(h->size, >, 0);
        g_assert_cmpuint(h->offset, <, bar_size);
        g_assert_cmpuint(h->size, <=, bar_size - h->offset);
        g_assert_true(h->kind == MPQEMU_HINT_SYNC_WRITE ||
                      h->kind == MPQEMU_HINT_SHADOW);
        if (h->kind == MPQEMU_HINT_SHADOW) {
            /* and every shadowed range has its own room in the shadow */
            g_assert_true(h->width == 1 || h->width == 2 || h->width == 4 ||
                          h->width == 8);
            g_assert_cmpuint(h->offset % h->width, ==, 0);
            g_assert_cmpuint(h->shadow_offset % 8, ==, 0);
            g_assert_cmpuint(h->shadow_offset + h->size, <=,
                             hints.shadow_size);
            for (uint32_t j = 0; j < i; j++) {
                const MPQemuAccessHint *o = &hints.hint[j];

                g_assert_true(o->kind != MPQEMU_HINT_SHADOW ||
                              o->shadow_offset >= h->shadow_offset + h->size ||
                              h->shadow_offset >= o->shadow_offset + o->size);
            }
        }
    }

    /* writes to the MSI-X table wait for the device */
    g_assert_nonnull(find_hint(&hints, MPQEMU_HINT_SYNC_WRITE, bir,
                               table_offset,
                               table_offset + entries * PCI_MSIX_ENTRY_SIZE));
    /* so do the interrupt mask registers */
    g_assert_nonnull(find_hint(&hints, MPQEMU_HINT_SYNC_WRITE, 0,
                               NVME_REG_INTMS, NVME_REG_INTMS + 8));
    /* the version register is read from the shadow */
    g_assert_nonnull(find_hint(&hints, MPQEMU_HINT_SHADOW, 0, NVME_REG_VS,
                               NVME_REG_VS + 4));
    /* the doorbells are not: reads there are not the device's registers */
    g_assert_null(find_hint(&hints, MPQEMU_HINT_SHADOW, 0, 0x1000, 0x1004));

    /* posted writes alone: synchronous ranges, nothing shadowed */
    remote_reconnect(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING |
                                              MPQEMU_FEATURE_POSTED_WRITES),
                    ==, MPQEMU_FEATURE_RING | MPQEMU_FEATURE_POSTED_WRITES);
    remote_access_hints(&r, &hints);
    g_assert_cmpuint(count_hints(&hints, MPQEMU_HINT_SHADOW), ==, 0);
    g_assert_cmpuint(hints.shadow_size, ==, 0);
    g_assert_nonnull(find_hint(&hints, MPQEMU_HINT_SYNC_WRITE, bir,
                               table_offset,
                               table_offset + entries * PCI_MSIX_ENTRY_SIZE));

    /* the shadow alone: shadowed ranges, nothing synchronous */
    remote_reconnect(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING |
                                              MPQEMU_FEATURE_SHADOW),
                    ==, MPQEMU_FEATURE_RING | MPQEMU_FEATURE_SHADOW);
    remote_access_hints(&r, &hints);
    g_assert_cmpuint(count_hints(&hints, MPQEMU_HINT_SYNC_WRITE), ==, 0);
    g_assert_cmpuint(hints.shadow_size, >, 0);
    g_assert_nonnull(find_hint(&hints, MPQEMU_HINT_SHADOW, 0, NVME_REG_VS,
                               NVME_REG_VS + 4));

    remote_check_works(&r);
    remote_stop(&r);
}

/*
 * The LSI: the writes that start or wake its SCRIPTS processor are posted
 * one at a time, or wait for it where the proxy cannot post them so
 * (test_remote_hints_lsi); the other registers (SCRATCHA here) are posted.
 */
static void test_remote_hints_lsi_serial(void)
{
    const uint64_t features = HINT_FEATURES | MPQEMU_FEATURE_SERIAL_WRITES;
    static const struct {
        uint64_t offset;
        uint32_t size;
    } starts[] = {
        { LSI_REG_ISTAT0, 1 }, { LSI_REG_DSP, 4 }, { LSI_REG_DCNTL, 1 },
    };
    Remote r;
    MPQemuAccessHints hints;

    remote_start(&r);
    g_assert_cmphex(remote_hello_features(&r, features), ==, features);
    remote_access_hints(&r, &hints);
    g_assert_cmpuint(count_hints(&hints, MPQEMU_HINT_SERIAL_WRITE), ==, 3);
    g_assert_cmpuint(count_hints(&hints, MPQEMU_HINT_SYNC_WRITE), ==, 0);
    for (int i = 0; i < ARRAY_SIZE(starts); i++) {
        g_assert_nonnull(find_hint(&hints, MPQEMU_HINT_SERIAL_WRITE,
                                   LSI_MMIO_REGION, starts[i].offset,
                                   starts[i].offset + starts[i].size));
    }
    g_assert_null(find_hint(&hints, MPQEMU_HINT_SERIAL_WRITE, LSI_MMIO_REGION,
                            LSI_REG_SCRATCHA, LSI_REG_SCRATCHA + 1));
    remote_check_works(&r);
    remote_stop(&r);

    /* serial writes mean nothing without posted ones: not granted */
    remote_start(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING |
                                          MPQEMU_FEATURE_SHADOW |
                                          MPQEMU_FEATURE_SERIAL_WRITES), ==,
                    MPQEMU_FEATURE_RING | MPQEMU_FEATURE_SHADOW);
    remote_access_hints(&r, &hints);
    g_assert_cmpuint(count_hints(&hints, MPQEMU_HINT_SERIAL_WRITE), ==, 0);
    g_assert_cmpuint(count_hints(&hints, MPQEMU_HINT_SYNC_WRITE), ==, 0);
    remote_check_works(&r);
    remote_stop(&r);
}

/*
 * The LSI, with a proxy that does not post serial writes: the writes that
 * start or wake its SCRIPTS processor wait for it, the other registers
 * (SCRATCHA here) are posted; the scratch registers are shadowed, the
 * registers that clear when read are not.
 */
static void test_remote_hints_lsi(void)
{
    static const uint8_t clear_on_read[] = {
        LSI_REG_DSTAT, LSI_REG_CTEST2, LSI_REG_SIST0, LSI_REG_SIST1,
    };
    Remote r;
    MPQemuAccessHints hints;
    const MPQemuAccessHint *h;

    remote_start(&r);
    g_assert_cmphex(remote_hello_features(&r, HINT_FEATURES), ==,
                    HINT_FEATURES);
    remote_access_hints(&r, &hints);
    g_assert_cmpuint(count_hints(&hints, MPQEMU_HINT_SYNC_WRITE), ==, 3);
    g_assert_cmpuint(hints.shadow_size, >, 0);
    /* SCRATCHA and SCRATCHB to J read as memory, any 1 to 4 bytes */
    h = find_hint(&hints, MPQEMU_HINT_SHADOW, LSI_MMIO_REGION,
                  LSI_REG_SCRATCHA, LSI_REG_SCRATCHA + 4);
    g_assert_nonnull(h);
    g_assert_cmphex(h->flags, ==, MPQEMU_SHADOW_BYTES);
    g_assert_cmpuint(h->min_size, ==, 1);
    g_assert_cmpuint(h->max_size, ==, 4);
    g_assert_nonnull(find_hint(&hints, MPQEMU_HINT_SHADOW, LSI_MMIO_REGION,
                               LSI_REG_SCRATCHB, LSI_REG_SCRATCHB + 4 * 17));
    /* ISTAT0/1 and MBOX0/1 too: an interrupt handler reads ISTAT first */
    h = find_hint(&hints, MPQEMU_HINT_SHADOW, LSI_MMIO_REGION,
                  LSI_REG_ISTAT0, LSI_REG_ISTAT0 + 4);
    g_assert_nonnull(h);
    g_assert_cmphex(h->flags, ==, MPQEMU_SHADOW_BYTES);
    /* DSTAT, CTEST2 and SIST0/1 change when read: never from the shadow */
    for (int i = 0; i < ARRAY_SIZE(clear_on_read); i++) {
        g_assert_null(find_hint(&hints, MPQEMU_HINT_SHADOW, LSI_MMIO_REGION,
                                clear_on_read[i], clear_on_read[i] + 1));
    }
    /* nothing of the I/O BAR */
    g_assert_null(find_hint(&hints, MPQEMU_HINT_SHADOW, 0, LSI_REG_SCRATCHA,
                            LSI_REG_SCRATCHA + 1));
    g_assert_nonnull(find_hint(&hints, MPQEMU_HINT_SYNC_WRITE,
                               LSI_MMIO_REGION, LSI_REG_ISTAT0,
                               LSI_REG_ISTAT0 + 1));
    g_assert_nonnull(find_hint(&hints, MPQEMU_HINT_SYNC_WRITE,
                               LSI_MMIO_REGION, LSI_REG_DSP, LSI_REG_DSP + 4));
    g_assert_nonnull(find_hint(&hints, MPQEMU_HINT_SYNC_WRITE,
                               LSI_MMIO_REGION, LSI_REG_DCNTL,
                               LSI_REG_DCNTL + 1));
    g_assert_null(find_hint(&hints, MPQEMU_HINT_SYNC_WRITE, LSI_MMIO_REGION,
                            LSI_REG_SCRATCHA, LSI_REG_SCRATCHA + 1));
    remote_check_works(&r);
    remote_stop(&r);
}

/* The value the batch test writes with the @i-th write of round @round */
/* ------------------------------------------------------------------------ */
/* Migration requests (DEVICE_STATE, DIRTY_LOG) that are hostile or early   */
/* ------------------------------------------------------------------------ */

static int state_file_new(void)
{
    int fd = qemu_memfd_create("mpqemu-protocol-test", 0, false, 0, 0,
                               &error_abort);

    g_assert_cmpint(fd, >=, 0);
    return fd;
}

static void init_device_state(MPQemuMsg *m, uint64_t id, uint32_t op,
                              uint32_t flags, uint64_t size, int fd)
{
    mpqemu_msg_init(m, MPQEMU_CMD_DEVICE_STATE, 0, id,
                    sizeof(MPQemuDeviceState));
    m->u.device_state.op = cpu_to_le32(op);
    m->u.device_state.flags = cpu_to_le32(flags);
    m->u.device_state.size = cpu_to_le64(size);
    if (fd >= 0) {
        m->hdr.num_fds = 1;
        m->fds[0] = fd;
    }
}

static void init_dirty_log(MPQemuMsg *m, uint64_t id, uint32_t op, int fd)
{
    mpqemu_msg_init(m, MPQEMU_CMD_DIRTY_LOG, 0, id, sizeof(MPQemuDirtyLog));
    m->u.dirty_log.op = cpu_to_le32(op);
    if (fd >= 0) {
        m->hdr.num_fds = 1;
        m->fds[0] = fd;
    }
}

/* A request the remote must refuse with a message containing @why */
static void expect_refused(Remote *r, const MPQemuMsg *req, const char *why)
{
    g_autofree char *msg = expect_error(r->fd, req);

    if (!strstr(msg, why)) {
        g_test_message("expected \"%s\" in \"%s\"", why, msg);
    }
    g_assert_nonnull(strstr(msg, why));
}

static void remote_run_state(Remote *r, bool running)
{
    MPQemuMsg req, reply;

    mpqemu_msg_init(&req, MPQEMU_CMD_RUN_STATE, 0, r->id++,
                    sizeof(MPQemuRunState));
    req.u.run_state.running = cpu_to_le32(running);
    send_msg(r->fd, &req);
    expect_reply(r->fd, &req, &reply, 0);
}

/* DEVICE_STATE DESCRIBE or SAVE: what the remote wrote to the file */
static uint8_t *remote_state_out(Remote *r, uint32_t op, uint64_t *size)
{
    MPQemuMsg req, reply;
    int fd = state_file_new();
    uint8_t *buf;

    init_device_state(&req, r->id++, op, 0, 0, fd);
    send_msg(r->fd, &req);
    expect_reply(r->fd, &req, &reply, sizeof(MPQemuDeviceState));
    *size = le64_to_cpu(reply.u.device_state.size);
    g_assert_cmpuint(*size, >, 0);
    buf = g_malloc(*size);
    g_assert_cmpint(pread(fd, buf, *size, 0), ==, *size);
    close(fd);
    return buf;
}

/* A DEVICE_STATE CHECK or LOAD of @len bytes of @data, said to be @size */
static void init_state_in(MPQemuMsg *m, uint64_t id, uint32_t op,
                          const void *data, size_t len, uint64_t size)
{
    int fd = state_file_new();

    g_assert_cmpint(pwrite(fd, data, len, 0), ==, len);
    init_device_state(m, id, op, 0, size, fd);
}

static void test_remote_migration_hostile(void)
{
    static const uint8_t garbage[64] = { 0xde, 0xad, 0xbe, 0xef };
    Remote r;
    MPQemuMsg req, reply;
    g_autofree uint8_t *desc = NULL;
    g_autofree uint8_t *saved = NULL;
    uint64_t desc_size, saved_size;
    int fd;

    remote_start(&r);

    /* Not negotiated: refused, whatever the request */
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RUN_STATE), ==,
                    MPQEMU_FEATURE_RUN_STATE);
    fd = state_file_new();
    init_device_state(&req, r.id++, MPQEMU_STATE_DESCRIBE, 0, 0, fd);
    expect_refused(&r, &req, "MIGRATION was not negotiated");
    init_dirty_log(&req, r.id++, MPQEMU_DIRTY_START, -1);
    expect_refused(&r, &req, "MIGRATION was not negotiated");
    close(fd);
    remote_drop(&r);
    remote_connect(&r);
    remote_hello(&r);

    /* Descriptor counts that do not match the request */
    init_device_state(&req, r.id++, MPQEMU_STATE_DESCRIBE, 0, 0, -1);
    expect_refused(&r, &req, "carries 0 descriptors, expected 1");
    fd = state_file_new();
    init_dirty_log(&req, r.id++, MPQEMU_DIRTY_START, fd);
    expect_refused(&r, &req, "carries 1 descriptors, expected 0");
    init_dirty_log(&req, r.id++, MPQEMU_DIRTY_SYNC, -1);
    expect_refused(&r, &req, "carries 0 descriptors, expected 1");

    /* Unknown operations and flags */
    init_device_state(&req, r.id++, 99, 0, 0, fd);
    expect_refused(&r, &req, "unknown DEVICE_STATE op 99");
    init_device_state(&req, r.id++, MPQEMU_STATE_DESCRIBE,
                      MPQEMU_STATE_RELEASE_DISKS, 0, fd);
    expect_refused(&r, &req, "flags 0x1 it does not take");
    init_device_state(&req, r.id++, MPQEMU_STATE_SAVE, 1u << 7, 0, fd);
    expect_refused(&r, &req, "flags 0x80 it does not take");
    init_dirty_log(&req, r.id++, 0, -1);
    expect_refused(&r, &req, "unknown DIRTY_LOG op 0");

    /* Out of order: a sync before the log started, a save while running */
    init_dirty_log(&req, r.id++, MPQEMU_DIRTY_SYNC, fd);
    expect_refused(&r, &req, "SYNC without START");
    init_device_state(&req, r.id++, MPQEMU_STATE_SAVE, 0, 0, fd);
    expect_refused(&r, &req, "the device runs");
    close(fd);

    /* Input that is not a state of this device, or larger than its file */
    desc = remote_state_out(&r, MPQEMU_STATE_DESCRIBE, &desc_size);
    init_state_in(&req, r.id++, MPQEMU_STATE_CHECK, desc, desc_size,
                  desc_size);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, sizeof(MPQemuDeviceState));
    close(req.fds[0]);
    init_state_in(&req, r.id++, MPQEMU_STATE_CHECK, garbage, sizeof(garbage),
                  sizeof(garbage));
    expect_refused(&r, &req, "not an mpqemu device state");
    close(req.fds[0]);
    init_state_in(&req, r.id++, MPQEMU_STATE_CHECK, desc, desc_size / 2,
                  desc_size / 2);
    expect_refused(&r, &req, "cut short");
    close(req.fds[0]);
    init_state_in(&req, r.id++, MPQEMU_STATE_CHECK, desc, desc_size,
                  desc_size + 4096);
    expect_refused(&r, &req, "the file does not hold");
    close(req.fds[0]);
    init_state_in(&req, r.id++, MPQEMU_STATE_CHECK, desc, desc_size,
                  (uint64_t)MPQEMU_STATE_MAX + 1);
    expect_refused(&r, &req, "is larger than");
    close(req.fds[0]);

    /* Stopped, the state saves; a truncated one does not load */
    remote_run_state(&r, false);
    init_bar(&req, MPQEMU_CMD_BAR_WRITE, r.id++, 2, 0x40, 4, 0x5ca1ab1e);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, 0);
    saved = remote_state_out(&r, MPQEMU_STATE_SAVE, &saved_size);
    g_assert_cmpuint(saved_size, >, desc_size);
    init_state_in(&req, r.id++, MPQEMU_STATE_LOAD, saved, saved_size - 8,
                  saved_size - 8);
    expect_refused(&r, &req, "(lsi53c895a) failed");
    close(req.fds[0]);

    /* ... and the whole one does, with what the device had */
    init_bar(&req, MPQEMU_CMD_BAR_WRITE, r.id++, 2, 0x40, 4, 0);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, 0);
    init_state_in(&req, r.id++, MPQEMU_STATE_LOAD, saved, saved_size,
                  saved_size);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, sizeof(MPQemuDeviceState));
    close(req.fds[0]);
    g_assert_cmphex(remote_bar_read(&r, 2, 0x40, 4), ==, 0x5ca1ab1e);

    /* The dirty log starts, syncs into a file, stops; twice is harmless */
    for (int i = 0; i < 2; i++) {
        init_dirty_log(&req, r.id++, MPQEMU_DIRTY_START, -1);
        send_msg(r.fd, &req);
        expect_reply(r.fd, &req, &reply, sizeof(MPQemuDirtyLog));
        fd = state_file_new();
        init_dirty_log(&req, r.id++, MPQEMU_DIRTY_SYNC, fd);
        send_msg(r.fd, &req);
        expect_reply(r.fd, &req, &reply, sizeof(MPQemuDirtyLog));
        close(fd);
        init_dirty_log(&req, r.id++, MPQEMU_DIRTY_STOP, -1);
        send_msg(r.fd, &req);
        expect_reply(r.fd, &req, &reply, sizeof(MPQemuDirtyLog));
    }
    remote_run_state(&r, true);
    remote_check_works(&r);
    remote_stop(&r);
}

static uint32_t batch_value(int round, int i)
{
    return 0xa5000000u | (round << 16) | (i << 4) | 0x5;
}

static uint64_t lsi_scratch(int k)
{
    return k ? LSI_REG_SCRATCHB + 4 * (k - 1) : LSI_REG_SCRATCHA;
}

/*
 * (22) a batch: many posted writes and a read, handed over with one kick,
 * are all served, in order; refused posted writes are counted
 */
static void test_remote_ring_batch(void)
{
    const int writes = 40;
    Remote r;
    TestRing t;
    uint32_t expect[LSI_NR_SCRATCH] = { 0 };
    uint32_t first, skipped;
    MPQemuRingEntry *e;

    remote_start_named(&r);
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING |
                                              MPQEMU_FEATURE_POSTED_WRITES),
                    ==, MPQEMU_FEATURE_RING | MPQEMU_FEATURE_POSTED_WRITES);
    test_ring_init(&t, MPQEMU_RING_SIZE);
    remote_ring_setup(&r, &t);

    /* two rounds: the second one wraps around the end of the ring */
    for (int round = 0; round < 2; round++) {
        g_assert_true(ring_wait_asleep(&t, IO_TIMEOUT_MS));
        first = t.seq + 1;
        for (int i = 0; i < writes; i++) {
            int k = i % LSI_NR_SCRATCH;

            ring_put(&t, MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 4,
                     MPQEMU_RING_POSTED, lsi_scratch(k),
                     batch_value(round, i));
            expect[k] = batch_value(round, i);
        }
        /* SCRATCHA was written three times: the read sees the last one */
        ring_put(&t, MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION, 4, 0,
                 LSI_REG_SCRATCHA, 0);
        ring_publish_wait(&t);

        g_assert_cmpuint(t.seq, ==, first + writes);
        for (uint32_t seq = first; seq != t.seq + 1; seq++) {
            g_assert_cmpuint(ring_resp_seq(&t, seq), ==, seq);
            g_assert_cmpint(qatomic_read(&ring_entry(&t, seq)->status), ==,
                            0);
        }
        e = ring_entry(&t, t.seq);
        g_assert_cmphex(qatomic_read(&e->value), ==, expect[0]);
        g_assert_cmphex(expect[0], ==, batch_value(round, 36));
        g_assert_cmpuint(qatomic_read(&e->notify_seq), ==, 0);
        g_assert_cmpuint(qatomic_read(&t.ring->posted_errors), ==, 0);

        /* every write landed, and each register holds the last one */
        for (int k = 0; k < LSI_NR_SCRATCH; k++) {
            g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, lsi_scratch(k),
                                      4), ==, expect[k]);
        }
        g_assert_cmphex(remote_bar_read(&r, LSI_MMIO_REGION,
                                        lsi_scratch(LSI_NR_SCRATCH - 1), 4),
                        ==, expect[LSI_NR_SCRATCH - 1]);
    }
    g_assert_cmpuint(t.seq, >, MPQEMU_RING_ENTRIES);

    /* a posted write the remote refuses is counted, and fails alone */
    ring_put(&t, MPQEMU_CMD_BAR_WRITE, 9, 4, MPQEMU_RING_POSTED,
             LSI_REG_SCRATCHA, 0xbad1);
    ring_put(&t, MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 4, MPQEMU_RING_POSTED,
             lsi_scratch(1), 0x600d0001);
    ring_put(&t, MPQEMU_CMD_BAR_READ, LSI_MMIO_REGION, 4, 0,
             LSI_REG_SCRATCHA, 0);
    ring_publish_wait(&t);
    g_assert_cmpint(qatomic_read(&ring_entry(&t, t.seq - 2)->status), <, 0);
    g_assert_cmpint(qatomic_read(&ring_entry(&t, t.seq - 1)->status), ==, 0);
    g_assert_cmphex(qatomic_read(&ring_entry(&t, t.seq)->value), ==,
                    expect[0]);
    g_assert_cmpuint(qatomic_read(&t.ring->posted_errors), ==, 1);
    g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, lsi_scratch(1), 4), ==,
                    0x600d0001);

    /* ... one by one, however they are bad */
    ring_put(&t, MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 3, MPQEMU_RING_POSTED,
             LSI_REG_SCRATCHA, 0xbad2);
    ring_put(&t, MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 4, MPQEMU_RING_POSTED,
             LSI_MMIO_SIZE, 0xbad3);
    ring_publish_wait(&t);
    g_assert_cmpuint(qatomic_read(&t.ring->posted_errors), ==, 3);
    /* a refused write somebody waits for is answered, not counted */
    g_assert_cmpint(ring_access(&t, MPQEMU_CMD_BAR_WRITE, 9, 4,
                                LSI_REG_SCRATCHA, 0xbad4, NULL, NULL), <, 0);
    g_assert_cmpuint(qatomic_read(&t.ring->posted_errors), ==, 3);
    g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4), ==,
                    expect[0]);

    /*
     * A proxy that skips a number: nothing after the gap is served, since
     * the remote cannot tell a request there from an old one. Once the
     * missing request comes, everything is, in order.
     */
    skipped = ++t.seq;
    t.published = skipped;          /* not handed over, for now */
    for (int i = 0; i < MPQEMU_RING_ENTRIES - 1; i++) {
        ring_put(&t, MPQEMU_CMD_BAR_WRITE, LSI_MMIO_REGION, 4, 0,
                 LSI_REG_SCRATCHA, 0xa000 + i);
    }
    ring_publish(&t);
    g_usleep(100 * 1000);
    g_assert_cmpuint(ring_resp_seq(&t, t.seq), !=, t.seq);
    g_assert_cmphex(qatomic_read(&ring_entry(&t, t.seq)->status), ==,
                    RING_STATUS_UNSET);
    g_assert_cmphex(remote_bar_read(&r, LSI_MMIO_REGION, LSI_REG_SCRATCHA,
                                    4), ==, expect[0]);
    /* the missing one, a read, is served first */
    e = ring_entry(&t, skipped);
    qatomic_set(&e->cmd, MPQEMU_CMD_BAR_READ);
    qatomic_set(&e->region, LSI_MMIO_REGION);
    qatomic_set(&e->size, 4);
    qatomic_set(&e->flags, 0);
    qatomic_set(&e->offset, LSI_REG_SCRATCHA);
    qatomic_set(&e->status, RING_STATUS_UNSET);
    qatomic_set(&e->value, RING_VALUE_UNSET);
    qatomic_set(&t.ring->proxy_sleeping, 1);
    qatomic_store_release(&e->req_seq, skipped);
    smp_mb();
    if (qatomic_read(&t.ring->remote_sleeping)) {
        g_assert_cmpint(eventfd_write(t.kick_fd, 1), ==, 0);
    }
    g_assert_true(ring_wait(&t, IO_TIMEOUT_MS));
    qatomic_set(&t.ring->proxy_sleeping, 0);
    g_assert_cmphex(qatomic_read(&e->value), ==, expect[0]);
    for (uint32_t seq = skipped; seq != t.seq + 1; seq++) {
        g_assert_cmpuint(ring_resp_seq(&t, seq), ==, seq);
        g_assert_cmpint(qatomic_read(&ring_entry(&t, seq)->status), ==, 0);
    }
    g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4), ==,
                    0xa000 + MPQEMU_RING_ENTRIES - 2);
    g_assert_cmpuint(qatomic_read(&t.ring->posted_errors), ==, 3);
    g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, lsi_scratch(1), 4), ==,
                    0x600d0001);
    expect_quiet(&r);
    remote_check_works(&r);

    remote_stop(&r);
    test_ring_free(&t);
}

/* The copy in @t's shadow of the register at @offset, shadowed by @h */
static uint64_t shadow_copy(TestRing *t, const MPQemuAccessHint *h,
                            uint64_t offset, int size)
{
    g_assert_cmpuint(MPQEMU_RING_SIZE + h->shadow_offset + h->size, <=,
                     t->map_size);
    return ldn_le_p(mpqemu_ring_shadow(t->ring) + h->shadow_offset +
                    (offset - h->offset), size);
}

/*
 * (23) the shadow: RING_SETUP must leave room for it; a read of a shadowed
 * register refreshes it, anything that may change the registers makes it
 * stale
 */
static void test_remote_ring_shadow(void)
{
    const uint32_t aqa = 0x001f000f, cc = 0x00460000;
    Remote r;
    TestRing t, small;
    MPQemuMsg req, reply;
    MPQemuAccessHints hints;
    const MPQemuAccessHint *vs_hint, *cap_hint, *aqa_hint, *cc_hint;
    int fds[MPQEMU_RING_FDS];
    size_t room;
    uint64_t cap, vs;
    uint32_t gen;
    g_autofree char *msg = NULL;

    remote_start_nvme(&r);
    g_assert_cmphex(remote_hello_features(&r, HINT_FEATURES), ==,
                    HINT_FEATURES);
    remote_access_hints(&r, &hints);
    vs_hint = find_hint(&hints, MPQEMU_HINT_SHADOW, 0, NVME_REG_VS,
                        NVME_REG_VS + 4);
    cap_hint = find_hint(&hints, MPQEMU_HINT_SHADOW, 0, NVME_REG_CAP,
                         NVME_REG_CAP + 8);
    aqa_hint = find_hint(&hints, MPQEMU_HINT_SHADOW, 0, NVME_REG_AQA,
                         NVME_REG_AQA + 4);
    cc_hint = find_hint(&hints, MPQEMU_HINT_SHADOW, 0, NVME_REG_CC,
                        NVME_REG_CC + 4);
    g_assert_nonnull(vs_hint);
    g_assert_nonnull(cc_hint);
    g_assert_nonnull(cap_hint);
    g_assert_nonnull(aqa_hint);
    g_assert_cmpuint(hints.shadow_size, >, 0);

    /* no room for the shadow: a ring page alone, or a byte short */
    room = MPQEMU_RING_SIZE + ROUND_UP(hints.shadow_size,
                                       qemu_real_host_page_size());
    test_ring_init(&small, MPQEMU_RING_SIZE);
    test_ring_init(&t, room);
    fds[0] = small.mem_fd;
    fds[1] = t.kick_fd;
    fds[2] = t.done_fd;
    msg = remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, 3);
    g_assert_nonnull(strstr(msg, "shadow"));
    fds[0] = t.mem_fd;
    g_free(remote_ring_setup_refused(&r, MPQEMU_RING_SIZE, fds, 3));
    g_free(remote_ring_setup_refused(&r, MPQEMU_RING_SIZE +
                                         hints.shadow_size - 1, fds, 3));
    /* a size the memory does not have */
    g_free(remote_ring_setup_refused(&r, room + 1, fds, 3));
    remote_check_works(&r);

    /* exactly the room it needs is enough */
    init_ring_setup(&req, r.id++, MPQEMU_RING_SIZE + hints.shadow_size, fds,
                    3);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, 0);
    g_assert_true(ring_wait_asleep(&t, IO_TIMEOUT_MS));

    /* stale until a shadowed register is read */
    g_assert_cmpuint(qatomic_read(&t.ring->shadow_gen) & 1, ==, 1);
    cap = remote_bar_read(&r, 0, NVME_REG_CAP, 8);
    vs = remote_bar_read(&r, 0, NVME_REG_VS, 4);
    g_test_message("CAP 0x%" PRIx64 ", VS 0x%" PRIx64, cap, vs);
    g_assert_cmphex(vs, !=, 0);
    g_assert_cmphex(cap, !=, 0);
    g_assert_cmpuint(qatomic_read(&t.ring->shadow_gen) & 1, ==, 1);

    /* a ring read of VS refreshes the copy, which then holds the registers */
    g_assert_cmphex(ring_read(&t, 0, NVME_REG_VS, 4), ==, vs);
    gen = qatomic_load_acquire(&t.ring->shadow_gen);
    g_assert_cmpuint(gen & 1, ==, 0);
    g_assert_cmphex(shadow_copy(&t, vs_hint, NVME_REG_VS, 4), ==, vs);
    g_assert_cmphex(shadow_copy(&t, cap_hint, NVME_REG_CAP, 8), ==, cap);
    g_assert_cmphex(shadow_copy(&t, aqa_hint, NVME_REG_AQA, 4), ==, 0);

    /* another shadowed read leaves it as it is */
    g_assert_cmphex(ring_read(&t, 0, NVME_REG_CAP, 8), ==, cap);
    g_assert_cmpuint(qatomic_read(&t.ring->shadow_gen), ==, gen);

    /* a write makes it stale before it takes effect */
    ring_write(&t, 0, NVME_REG_AQA, 4, aqa);
    g_assert_cmpuint(qatomic_read(&t.ring->shadow_gen) & 1, ==, 1);
    g_assert_true(mpqemu_seq_before(gen, qatomic_read(&t.ring->shadow_gen)));
    /* the next shadowed read publishes the new value */
    g_assert_cmphex(ring_read(&t, 0, NVME_REG_AQA, 4), ==, aqa);
    gen = qatomic_load_acquire(&t.ring->shadow_gen);
    g_assert_cmpuint(gen & 1, ==, 0);
    g_assert_cmphex(shadow_copy(&t, aqa_hint, NVME_REG_AQA, 4), ==, aqa);
    g_assert_cmphex(shadow_copy(&t, vs_hint, NVME_REG_VS, 4), ==, vs);

    /* so does a posted write, here one of CC */
    ring_put(&t, MPQEMU_CMD_BAR_WRITE, 0, 4, MPQEMU_RING_POSTED, NVME_REG_CC,
             cc);
    ring_publish_wait(&t);
    g_assert_cmpuint(qatomic_read(&t.ring->shadow_gen) & 1, ==, 1);
    g_assert_cmphex(ring_read(&t, 0, NVME_REG_VS, 4), ==, vs);
    gen = qatomic_load_acquire(&t.ring->shadow_gen);
    g_assert_cmpuint(gen & 1, ==, 0);
    g_assert_cmphex(shadow_copy(&t, cc_hint, NVME_REG_CC, 4), ==, cc);

    /* a read that is not shadowed may have side effects: stale again */
    ring_read(&t, 0, NVME_REG_INTMS, 4);
    g_assert_cmpuint(qatomic_read(&t.ring->shadow_gen) & 1, ==, 1);
    g_assert_cmphex(ring_read(&t, 0, NVME_REG_VS, 4), ==, vs);
    g_assert_cmpuint(qatomic_read(&t.ring->shadow_gen) & 1, ==, 0);

    /* ... and so does a request on the socket, a reset (which clears CC) */
    mpqemu_msg_init(&req, MPQEMU_CMD_RESET, 0, r.id++, 0);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, 0);
    g_assert_cmpuint(qatomic_read(&t.ring->shadow_gen) & 1, ==, 1);
    g_assert_cmphex(ring_read(&t, 0, NVME_REG_CC, 4), ==, 0);
    g_assert_cmpuint(qatomic_read(&t.ring->shadow_gen) & 1, ==, 0);
    g_assert_cmphex(shadow_copy(&t, cc_hint, NVME_REG_CC, 4), ==, 0);
    g_assert_cmpuint(qatomic_read(&t.ring->posted_errors), ==, 0);

    remote_check_works(&r);
    remote_stop(&r);
    test_ring_free(&t);
    test_ring_free(&small);
}

/* Where the LSI shadow test puts its SCRIPTS, in the memory it maps */
#define SCRIPTS_GPA             0x100000
#define SCRIPTS_MEM_SIZE        0x10000
/* SCRIPTS: MOVE SCRATCHA0 + 1 TO SCRATCHA0 (read-modify-write, ADD) */
#define SCRIPTS_INC_SCRATCHA0   (0x7e000000u | (LSI_REG_SCRATCHA << 16) | \
                                 (1 << 8))
#define SCRIPTS_JUMP            0x80080000u     /* unconditional */

/*
 * The remote reads SCRATCHA through the ring until a read leaves the copy
 * current (a read served while its main loop is busy with other things does
 * not); the copy's generation, or 0 if none did within @tries reads.
 */
static uint32_t lsi_shadow_made_current(TestRing *t,
                                        const MPQemuAccessHint *h,
                                        int tries, uint32_t *value)
{
    for (int i = 0; i < tries; i++) {
        uint32_t gen;

        *value = ring_read(t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4);
        gen = qatomic_load_acquire(&t->ring->shadow_gen);
        if (!(gen & 1)) {
            uint32_t copy = shadow_copy(t, h, LSI_REG_SCRATCHA, 4);

            smp_rmb();
            if (qatomic_read(&t->ring->shadow_gen) == gen) {
                /* the read that refreshed it, and nothing ran since */
                g_assert_cmphex(copy, ==, *value);
                return gen;
            }
        }
    }
    return 0;
}

/*
 * (24) the LSI's shadow: its SCRIPTS processor changes the scratch
 * registers on its own. A SCRIPTS loop that increments SCRATCHA runs in
 * bursts of 500 instructions (250 increments), each started by a timer of
 * the remote 500 µs after the last, with no access and no interrupt in
 * between: a burst makes the copy stale. (Under qtest the remote's virtual
 * clock moves only when the test steps it.) Once the SCRIPTS stop, the
 * copy stays current.
 */
static void test_remote_ring_shadow_lsi(void)
{
    const MPQemuMemorySection ram = {
        .gpa = SCRIPTS_GPA, .size = SCRIPTS_MEM_SIZE,
    };
    const uint32_t scripts[] = {
        SCRIPTS_INC_SCRATCHA0, 0,
        SCRIPTS_JUMP, SCRIPTS_GPA,
    };
    Remote r;
    TestRing t;
    MPQemuMsg req, reply;
    MPQemuAccessHints hints;
    const MPQemuAccessHint *h;
    uint32_t gen, value;
    uint8_t *mem;
    int memfd;

    remote_start(&r);
    g_assert_cmphex(remote_hello_features(&r, HINT_FEATURES), ==,
                    HINT_FEATURES);
    remote_access_hints(&r, &hints);
    h = find_hint(&hints, MPQEMU_HINT_SHADOW, LSI_MMIO_REGION,
                  LSI_REG_SCRATCHA, LSI_REG_SCRATCHA + 4);
    g_assert_nonnull(h);
    test_ring_init(&t, MPQEMU_RING_SIZE +
                       ROUND_UP(hints.shadow_size,
                                qemu_real_host_page_size()));
    remote_ring_setup(&r, &t);

    /* guest memory holding the SCRIPTS; the device may master the bus */
    memfd = qemu_memfd_create("mpqemu-protocol-test", SCRIPTS_MEM_SIZE,
                              false, 0, 0, &error_abort);
    g_assert_cmpint(memfd, >=, 0);
    mem = mmap(NULL, SCRIPTS_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
               memfd, 0);
    g_assert_true(mem != MAP_FAILED);
    for (int i = 0; i < ARRAY_SIZE(scripts); i++) {
        stl_le_p(mem + 4 * i, scripts[i]);
    }
    map_expect_ok(&r, MPQEMU_MEMORY_FIRST | MPQEMU_MEMORY_LAST, 1, &ram,
                  &memfd);
    init_config(&req, MPQEMU_CMD_CONFIG_WRITE, r.id++, PCI_COMMAND, 2,
                PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, 0);

    /* idle: a read leaves the copy current, with the register's value */
    gen = lsi_shadow_made_current(&t, h, 100, &value);
    g_assert_cmpuint(gen, !=, 0);
    g_assert_cmphex(value, ==, 0);

    /* writing DSP starts the SCRIPTS: the first burst runs before it ends */
    ring_write(&t, LSI_MMIO_REGION, LSI_REG_DSP, 4, SCRIPTS_GPA);
    for (uint32_t bursts = 1; bursts <= 20; bursts++) {
        gen = lsi_shadow_made_current(&t, h, 100, &value);
        g_assert_cmpuint(gen, !=, 0);
        g_assert_cmphex(value, ==, (250 * bursts) & 0xff);
        /*
         * The next burst, on its own: the copy is stale before it runs, and
         * current again (the remote refreshes it while it polls) only with
         * what the burst left, never with what was there before
         */
        qtest_clock_step(r.qts, 500 * 1000);   /* ns */
        gen = qatomic_load_acquire(&t.ring->shadow_gen);
        if (!(gen & 1)) {
            uint32_t copy = shadow_copy(&t, h, LSI_REG_SCRATCHA, 4);

            smp_rmb();
            if (qatomic_read(&t.ring->shadow_gen) == gen) {
                g_assert_cmphex(copy, ==, (250 * (bursts + 1)) & 0xff);
            }
        }
    }

    /* a reset stops them; then the copy stays current while nothing runs */
    mpqemu_msg_init(&req, MPQEMU_CMD_RESET, 0, r.id++, 0);
    send_msg(r.fd, &req);
    expect_reply(r.fd, &req, &reply, 0);
    for (int tries = 0;; tries++) {
        gen = lsi_shadow_made_current(&t, h, 100, &value);
        g_assert_cmpuint(gen, !=, 0);
        g_assert_cmphex(value, ==, 0);
        g_usleep(20000);
        if (qatomic_load_acquire(&t.ring->shadow_gen) == gen) {
            break;
        }
        /* something else woke the remote's main loop: try again */
        g_assert_cmpint(tries, <, 10);
    }
    g_assert_cmphex(shadow_copy(&t, h, LSI_REG_SCRATCHA, 4), ==, 0);

    remote_check_works(&r);
    remote_stop(&r);
    munmap(mem, SCRIPTS_MEM_SIZE);
    close(memfd);
    test_ring_free(&t);
}

/* ------------------------------------------------------------------------ */
/* Remote side: the notify eventfd (the test is the proxy)                  */
/* ------------------------------------------------------------------------ */

#define NOTIFY_FEATURES         (MPQEMU_FEATURE_RING | \
                                 MPQEMU_FEATURE_NOTIFY_EVENTFD)

/* RING_SETUP of @nfds of @fds, with @flags */
static void init_ring_setup_flags(MPQemuMsg *m, uint64_t id, uint32_t size,
                                  uint32_t flags, const int *fds,
                                  unsigned int nfds)
{
    init_ring_setup(m, id, size, fds, nfds);
    m->u.ring_setup.flags = cpu_to_le32(flags);
}

/* ... which the remote must refuse; returns the error message */
static char *remote_ring_setup_flags_refused(Remote *r, uint32_t flags,
                                             const int *fds,
                                             unsigned int nfds)
{
    MPQemuMsg req;

    init_ring_setup_flags(&req, r->id++, MPQEMU_RING_SIZE, flags, fds, nfds);
    return expect_error(r->fd, &req);
}

/* ... and the ring @t with @notify_fd as its notify eventfd, accepted */
static void remote_ring_setup_notify(Remote *r, TestRing *t, int notify_fd)
{
    MPQemuMsg req, reply;
    int fds[] = { t->mem_fd, t->kick_fd, t->done_fd, notify_fd };

    init_ring_setup_flags(&req, r->id++, t->size, MPQEMU_RING_SETUP_NOTIFY_FD,
                          fds, ARRAY_SIZE(fds));
    send_msg(r->fd, &req);
    expect_reply(r->fd, &req, &reply, 0);
    g_assert_true(ring_wait_asleep(t, IO_TIMEOUT_MS));
}

/* How many times @ev was signalled, if it is within @ms; takes them */
static uint64_t notify_wait(int ev, int ms)
{
    eventfd_t count = 0;

    if (fd_readable(ev, ms)) {
        g_assert_cmpint(eventfd_read(ev, &count), ==, 0);
    }
    return count;
}

/*
 * The remote did not signal @ev: a read finds nothing, also after a while
 * for a signal that would come late
 */
static void expect_not_signalled(int ev)
{
    eventfd_t count;

    g_assert_false(fd_readable(ev, 50));
    g_assert_cmpint(eventfd_read(ev, &count), ==, -1);
    g_assert_cmpint(errno, ==, EAGAIN);
}

/*
 * (25) RING_SETUP with a notify eventfd: only once NOTIFY_EVENTFD was
 * negotiated, only an eventfd, with the descriptor count that the flag
 * says, and with no flag the remote does not know. Each refusal is an
 * error reply that leaves the connection working and its one ring to a
 * setup that is right.
 */
static void test_remote_ring_notify_setup(void)
{
    Remote r;
    TestRing t;
    int fds[MPQEMU_MAX_FDS], probe, ev, not_ev;
    g_autofree char *not_negotiated = NULL;
    pid_t pid;

    remote_start_named(&r);
    pid = qtest_pid(r.qts);
    ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    g_assert_cmpint(ev, >=, 0);
    not_ev = qemu_memfd_create("protocol-test-not-eventfd", 4096, false, 0, 0,
                               &error_abort);
    g_assert_cmpint(not_ev, >=, 0);

    /* it only works with the ring: alone, it is not granted */
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_NOTIFY_EVENTFD),
                    ==, 0);
    remote_drop(&r);
    remote_connect(&r);

    /* (a) not negotiated: the flag is refused, even with an eventfd */
    g_assert_cmphex(remote_hello_features(&r, MPQEMU_FEATURE_RING), ==,
                    MPQEMU_FEATURE_RING);
    test_ring_init(&t, MPQEMU_RING_SIZE);
    fds[0] = t.mem_fd;
    fds[1] = t.kick_fd;
    fds[2] = t.done_fd;
    fds[3] = ev;
    not_negotiated = remote_ring_setup_flags_refused(
        &r, MPQEMU_RING_SETUP_NOTIFY_FD, fds, 4);
    g_assert_nonnull(strstr(not_negotiated, "negotiated"));
    g_assert_cmpint(remote_ring_maps(&r), ==, 0);
    remote_check_works(&r);
    /* ... while the same ring without it is taken */
    remote_ring_setup(&r, &t);
    g_assert_cmpint(wait_ring_maps(pid, 1, IO_TIMEOUT_MS), ==, 1);
    g_assert_cmphex(ring_read(&t, 0, 0, 1), ==, LSI_SCNTL0_RESET);
    remote_drop(&r);
    g_assert_cmpint(wait_ring_maps(pid, 0, IO_TIMEOUT_MS), ==, 0);
    test_ring_free(&t);

    remote_connect(&r);
    g_assert_cmphex(remote_hello_features(&r, NOTIFY_FEATURES), ==,
                    NOTIFY_FEATURES);
    test_ring_init(&t, MPQEMU_RING_SIZE);
    fds[0] = t.mem_fd;
    fds[1] = t.kick_fd;
    fds[2] = t.done_fd;

    /* (b) a notify descriptor that is no eventfd: a file, or a pipe */
    fds[3] = not_ev;
    g_free(remote_ring_setup_flags_refused(&r, MPQEMU_RING_SETUP_NOTIFY_FD,
                                           fds, 4));
    fds[3] = probe_fd_new(&probe);
    g_free(remote_ring_setup_flags_refused(&r, MPQEMU_RING_SETUP_NOTIFY_FD,
                                           fds, 4));
    close(fds[3]);
    /* ... which the remote did not keep */
    g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));
    g_assert_cmpint(remote_ring_maps(&r), ==, 0);
    remote_check_works(&r);

    /* (c) flags the remote does not know, alone or with the known one */
    fds[3] = ev;
    g_free(remote_ring_setup_flags_refused(&r, 1u << 1, fds, 3));
    g_free(remote_ring_setup_flags_refused(&r, 1u << 31, fds, 3));
    g_free(remote_ring_setup_flags_refused(&r, MPQEMU_RING_SETUP_NOTIFY_FD |
                                               1u << 1, fds, 4));
    /* ... and a flag and descriptors that disagree */
    g_free(remote_ring_setup_flags_refused(&r, MPQEMU_RING_SETUP_NOTIFY_FD,
                                           fds, 3));
    g_free(remote_ring_setup_flags_refused(&r, 0, fds, 4));
    g_assert_cmpint(remote_ring_maps(&r), ==, 0);
    remote_check_works(&r);

    /* (d) all of it right: taken, and nothing to signal yet */
    remote_ring_setup_notify(&r, &t, ev);
    g_assert_cmpint(wait_ring_maps(pid, 1, IO_TIMEOUT_MS), ==, 1);
    g_assert_cmphex(ring_read(&t, 0, 0, 1), ==, LSI_SCNTL0_RESET);
    g_assert_cmphex(ring_read(&t, LSI_MMIO_REGION, LSI_REG_SCRATCHA, 4), ==,
                    0);
    expect_quiet(&r);
    expect_not_signalled(ev);
    g_assert_cmpuint(qatomic_read(&t.ring->notify_signalled), ==, 0);
    remote_check_works(&r);

    remote_stop(&r);
    test_ring_free(&t);
    close(ev);
    close(not_ev);
}

/* Have the LSI raise its interrupt (an abort), through the ring */
static void lsi_ring_raise(TestRing *t)
{
    ring_write(t, LSI_MMIO_REGION, LSI_REG_ISTAT0, 1, LSI_ISTAT0_ABRT);
}

/* ... and lower it: reading DSTAT clears the abort */
static void lsi_ring_lower(TestRing *t)
{
    uint64_t dstat = ring_read(t, LSI_MMIO_REGION, LSI_REG_DSTAT, 1);

    g_assert_cmphex(dstat & LSI_DSTAT_ABRT, ==, LSI_DSTAT_ABRT);
}

/*
 * (26) the notify eventfd at work. After each notification it sends (here
 * the LSI's SET_IRQs), the remote signals the eventfd unless the proxy has
 * not read the last signal yet (notify_signalled) or a halted vCPU of the
 * proxy reads the socket itself (socket_reader). The notification is on
 * the socket either way. Without the flag in RING_SETUP, the remote never
 * signals, as before.
 */
static void test_remote_ring_notify_eventfd(void)
{
    MPQemuMsg req, msg, reply;
    TestRing t, plain;
    Remote r;
    int ev;

    remote_start_named(&r);
    g_assert_cmphex(remote_hello_features(&r, NOTIFY_FEATURES), ==,
                    NOTIFY_FEATURES);
    test_ring_init(&t, MPQEMU_RING_SIZE);
    ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    g_assert_cmpint(ev, >=, 0);
    remote_ring_setup_notify(&r, &t, ev);

    /* an access that notifies nothing signals nothing */
    ring_write(&t, LSI_MMIO_REGION, LSI_REG_DIEN, 1, LSI_DSTAT_ABRT);
    expect_quiet(&r);
    expect_not_signalled(ev);

    /* the first notification: on the socket, then signalled and marked */
    lsi_ring_raise(&t);
    expect_set_irq(&r, 1);
    g_assert_cmpuint(notify_wait(ev, IO_TIMEOUT_MS), >=, 1);
    g_assert_cmpuint(qatomic_read(&t.ring->notify_signalled), ==, 1);

    /*
     * The proxy took the signal but did not clear the mark: it is still
     * to read the socket, and will find there what comes meanwhile
     */
    lsi_ring_lower(&t);
    expect_set_irq(&r, 0);
    expect_not_signalled(ev);
    g_assert_cmpuint(qatomic_read(&t.ring->notify_signalled), ==, 1);

    /* a halted vCPU of the proxy waits on the socket: it needs no signal */
    qatomic_set(&t.ring->notify_signalled, 0);
    qatomic_set(&t.ring->socket_reader, 1);
    smp_mb();   /* as a proxy does before it looks at the socket */
    lsi_ring_raise(&t);
    expect_set_irq(&r, 1);
    expect_not_signalled(ev);
    g_assert_cmpuint(qatomic_read(&t.ring->notify_signalled), ==, 0);

    /* it is done: the main loop is told again */
    qatomic_set(&t.ring->socket_reader, 0);
    smp_mb();   /* the remote's next look sees it, as a proxy's would */
    lsi_ring_lower(&t);
    expect_set_irq(&r, 0);
    g_assert_cmpuint(notify_wait(ev, IO_TIMEOUT_MS), >=, 1);
    g_assert_cmpuint(qatomic_read(&t.ring->notify_signalled), ==, 1);

    /* a notification sent while serving a request on the socket counts too */
    qatomic_set(&t.ring->notify_signalled, 0);
    smp_mb();   /* as a proxy does before it reads the socket */
    init_bar(&req, MPQEMU_CMD_BAR_WRITE, r.id++, LSI_MMIO_REGION,
             LSI_REG_ISTAT0, 1, LSI_ISTAT0_ABRT);
    send_msg(r.fd, &req);
    recv_msg(r.fd, &msg);
    g_assert_cmpuint(msg.hdr.cmd, ==, MPQEMU_CMD_SET_IRQ);
    g_assert_cmpuint(le32_to_cpu(msg.u.set_irq.level), ==, 1);
    expect_reply(r.fd, &req, &reply, 0);
    g_assert_cmpuint(notify_wait(ev, IO_TIMEOUT_MS), >=, 1);
    g_assert_cmpuint(qatomic_read(&t.ring->notify_signalled), ==, 1);
    expect_quiet(&r);

    /*
     * NOTIFY_EVENTFD negotiated, but a RING_SETUP without the flag: the
     * ring of old, whose marks the remote leaves alone
     */
    remote_drop(&r);
    remote_connect(&r);
    g_assert_cmphex(remote_hello_features(&r, NOTIFY_FEATURES), ==,
                    NOTIFY_FEATURES);
    test_ring_init(&plain, MPQEMU_RING_SIZE);
    remote_ring_setup(&r, &plain);
    ring_write(&plain, LSI_MMIO_REGION, LSI_REG_DIEN, 1, LSI_DSTAT_ABRT);
    lsi_ring_raise(&plain);
    expect_set_irq(&r, 1);
    lsi_ring_lower(&plain);
    expect_set_irq(&r, 0);
    g_assert_cmpuint(qatomic_read(&plain.ring->notify_signalled), ==, 0);
    /* ... nor does it signal the eventfd of the connection before */
    expect_not_signalled(ev);
    expect_quiet(&r);

    remote_stop(&r);
    test_ring_free(&t);
    test_ring_free(&plain);
    close(ev);
}

/* ------------------------------------------------------------------------ */
/* Proxy side: the test is the remote                                       */
/* ------------------------------------------------------------------------ */

/* How the fake remote answers the first BAR_READ */
typedef enum BadReply {
    REPLY_OK,
    REPLY_WRONG_ID,
    REPLY_WRONG_CMD,
    REPLY_UNKNOWN_CMD,
    REPLY_OVERSIZED,
    REPLY_TRUNCATED,
    REPLY_SHORT,            /* a success reply with a short payload */
    REPLY_ERROR_BAD_SIZE,
    REPLY_WITH_FD,
    REPLY_GARBAGE,
    REPLY_AS_REQUEST,       /* the reply lacks MPQEMU_FLAG_REPLY */
    REPLY_UNSOLICITED,      /* a good reply, then one nobody asked for */
    REPLY_BAD_IRQ,          /* a malformed SET_IRQ, then a good reply */
    REPLY_IRQ_FIRST,        /* a good SET_IRQ, then a good reply */
    REPLY_VALID_ERROR,
    REPLY_SILENT,
    REPLY_IRQ_FLOOD,        /* SET_IRQ after SET_IRQ, but no reply */
} BadReply;

/* How long REPLY_IRQ_FLOOD keeps sending notifications */
#define FAKE_FLOOD_MS       3000

#define FAKE_BAR_SIZE       4096
#define FAKE_VENDOR         0x1234
#define FAKE_DEVICE         0x5678
#define FAKE_IDLE_MS        20000

/* How the fake remote serves the ring */
typedef enum RingMode {
    RING_OFF,               /* no ring: the HELLO reply offers no feature */
    RING_ANSWER,            /* answer every request properly */
    RING_SILENT,            /* never answer the first read, nor what follows */
    RING_NOTIFY_MISSING,    /* announce a notification that never comes */
    RING_NOTIFY_LATE,       /* announce a SET_IRQ, then send it later */
    RING_INTX,              /* answer that INTx went up (RING_INTX) */
    RING_INTX_BAD,          /* answer with an INTx state that means nothing */
    RING_INTX_RAISED_AGAIN, /* raise, then lower in an answer and raise again */
    RING_NOTIFY_BEHIND,     /* answer as if a notification sent was not */
    RING_HANGUP,            /* close the socket once the proxy sleeps */
    RING_NEVER,             /* never serve anything: the ring fills up */
} RingMode;

/* How long RING_NOTIFY_LATE waits before sending the announced SET_IRQ */
#define FAKE_LATE_MS        150

/* What a BAR_READ answered properly returns */
static uint32_t fake_bar_value(uint64_t offset)
{
    return 0xb0a00000u | (uint32_t)offset;
}

typedef struct FakeRemote {
    char *dir;
    char *path;
    int listen_fd;
    GThread *thread;

    /* set before the thread starts */
    BadReply bad;
    uint32_t hello_version;
    bool hello_refuse;
    uint64_t bar_size;      /* what DEVICE_INFO reports for BAR0 */
    int probe;              /* REPLY_WITH_FD: read end of the pipe */
    RingMode ring_mode;
    uint64_t features;      /* what HELLO grants of what the proxy offers */
    MPQemuAccessHints hints;    /* the ACCESS_HINTS reply, little-endian */

    /* owned by the thread */
    uint8_t config[256];
    uint64_t last_id;
    int kick_fd;
    int done_fd;
    uint32_t ring_served;   /* the last request answered in the ring */
    bool ring_stalled;      /* RING_SILENT: nothing more is answered */
    uint32_t notify_sent;   /* notifications sent on the socket */
    uint32_t shadow_size;   /* what the ACCESS_HINTS reply declared */
    int action_fd;          /* the test has a notification to send */
    int notify_fd;          /* the notify eventfd of RING_SETUP, or -1 */

    /* set by the thread before it answers RING_SETUP, then constant */
    MPQemuRing *ring;       /* mapped once RING_SETUP came */
    size_t ring_size;       /* the ring page and the shadow area */

    /* shared, under lock */
    GMutex lock;
    GCond cond;
    unsigned int requests;
    unsigned int bar_reads;
    unsigned int bar_writes;
    unsigned int ring_setups;
    unsigned int ring_reads;    /* the BAR reads that came through the ring */
    unsigned int hint_requests;
    uint64_t offered;       /* the features the proxy's HELLO offered */
    GArray *ring_log;       /* MPQemuRingEntry: the requests served */
    const MPQemuMsg *notify;    /* for the thread to send */
    bool notify_unsignalled;    /* ... without signalling the notify eventfd */
    bool hangup;            /* for the thread to close the connection */
    bool hangup_half;       /* ... for writing only, keeping it open */
    unsigned int ring_setup_flags;  /* those of the last RING_SETUP */
    unsigned int ring_setup_fds;    /* ... and how many descriptors it had */
    unsigned int notify_signals;    /* the notify eventfd was signalled */
    unsigned int notify_skipped;    /* ... or not, as the ring said */
    bool done;              /* the connection is over */
    GString *errors;        /* what the fake did not expect */
    int ring_delay_ms;      /* how long to wait before serving the ring */
    bool ring_hold;         /* serve nothing before request ring_hold_seq */
    uint32_t ring_hold_seq;
} FakeRemote;

static void G_GNUC_PRINTF(2, 3) fake_error(FakeRemote *f, const char *fmt,
                                           ...)
{
    va_list ap;

    g_mutex_lock(&f->lock);
    va_start(ap, fmt);
    g_string_append_vprintf(f->errors, fmt, ap);
    va_end(ap);
    g_string_append(f->errors, "; ");
    g_mutex_unlock(&f->lock);
}

static bool fake_send(FakeRemote *f, int fd, const MPQemuMsg *msg)
{
    Error *err = NULL;

    if (mpqemu_msg_send(fd, msg, IO_TIMEOUT_MS, &err) < 0) {
        fake_error(f, "sending %s: %s", mpqemu_cmd_name(msg->hdr.cmd),
                   error_get_pretty(err));
        error_free(err);
        return false;
    }
    return true;
}

/* Answer the first BAR_READ as the test asked; false: stop serving */
static bool fake_bad_bar_read(FakeRemote *f, int fd, const MPQemuMsg *req,
                              MPQemuMsg *reply)
{
    uint64_t offset = le64_to_cpu(req->u.bar.offset);
    uint64_t id = req->hdr.id;
    MPQemuHeader h;
    uint8_t junk[64];

    switch (f->bad) {
    case REPLY_WRONG_ID:
        /* the id of the request the proxy would send next */
        mpqemu_msg_init(reply, MPQEMU_CMD_BAR_READ, MPQEMU_FLAG_REPLY, id + 1,
                        sizeof(MPQemuValue));
        break;
    case REPLY_WRONG_CMD:
        mpqemu_msg_init(reply, MPQEMU_CMD_CONFIG_READ, MPQEMU_FLAG_REPLY, id,
                        sizeof(MPQemuValue));
        break;
    case REPLY_UNKNOWN_CMD:
        mpqemu_msg_init(reply, (MPQemuCmd)200, MPQEMU_FLAG_REPLY, id,
                        sizeof(MPQemuValue));
        break;
    case REPLY_SHORT:
        mpqemu_msg_init(reply, MPQEMU_CMD_BAR_READ, MPQEMU_FLAG_REPLY, id, 4);
        break;
    case REPLY_ERROR_BAD_SIZE:
        mpqemu_msg_init(reply, MPQEMU_CMD_BAR_READ,
                        MPQEMU_FLAG_REPLY | MPQEMU_FLAG_ERROR, id,
                        sizeof(MPQemuValue));
        reply->u.value.value = cpu_to_le64(fake_bar_value(offset));
        return fake_send(f, fd, reply);
    case REPLY_WITH_FD:
        mpqemu_msg_init_reply(reply, req, sizeof(MPQemuValue));
        reply->hdr.num_fds = 1;
        reply->fds[0] = probe_fd_new(&f->probe);
        if (!fake_send(f, fd, reply)) {
            return false;
        }
        close(reply->fds[0]);
        return true;
    case REPLY_AS_REQUEST:
        mpqemu_msg_init(reply, MPQEMU_CMD_BAR_READ, 0, id,
                        sizeof(MPQemuValue));
        break;
    case REPLY_OVERSIZED:
        wire_header(&h, MPQEMU_MAGIC, MPQEMU_CMD_BAR_READ, MPQEMU_FLAG_REPLY,
                    id, 1024 * 1024, 0);
        if (!send_all(fd, &h, sizeof(h))) {
            fake_error(f, "cannot send the oversized header");
        }
        return true;
    case REPLY_TRUNCATED:
        wire_header(&h, MPQEMU_MAGIC, MPQEMU_CMD_BAR_READ, MPQEMU_FLAG_REPLY,
                    id, sizeof(MPQemuValue), 0);
        if (!send_all(fd, &h, sizeof(h) / 2)) {
            fake_error(f, "cannot send half a header");
        }
        return false;
    case REPLY_GARBAGE:
        for (int i = 0; i < sizeof(junk); i++) {
            junk[i] = 0xa5 ^ (i * 7);
        }
        if (!send_all(fd, junk, sizeof(junk))) {
            fake_error(f, "cannot send garbage");
        }
        return true;
    case REPLY_UNSOLICITED:
        mpqemu_msg_init_reply(reply, req, sizeof(MPQemuValue));
        reply->u.value.value = cpu_to_le64(fake_bar_value(offset));
        if (!fake_send(f, fd, reply)) {
            return false;
        }
        mpqemu_msg_init(reply, MPQEMU_CMD_BAR_READ, MPQEMU_FLAG_REPLY,
                        id + 100, sizeof(MPQemuValue));
        break;
    case REPLY_VALID_ERROR:
        mpqemu_msg_init_error(reply, req, -EIO, "fake remote refuses the "
                              "read at 0x%" PRIx64, offset);
        break;
    case REPLY_SILENT:
        return true;
    case REPLY_BAD_IRQ:
    case REPLY_IRQ_FIRST:
        mpqemu_msg_init(reply, MPQEMU_CMD_SET_IRQ, 0, 0, sizeof(MPQemuSetIrq));
        reply->u.set_irq.level = cpu_to_le32(1);
        if (f->bad == REPLY_BAD_IRQ) {
            reply->hdr.id = id;     /* a notification has id 0 */
        }
        if (!fake_send(f, fd, reply)) {
            return false;
        }
        mpqemu_msg_init_reply(reply, req, sizeof(MPQemuValue));
        reply->u.value.value = cpu_to_le64(fake_bar_value(offset));
        if (f->bad == REPLY_BAD_IRQ) {
            /* the proxy may have hung up already, as it should */
            mpqemu_msg_send(fd, reply, IO_TIMEOUT_MS, NULL);
            return true;
        }
        break;
    case REPLY_IRQ_FLOOD: {
        int64_t end = g_get_monotonic_time() +
                      FAKE_FLOOD_MS * G_TIME_SPAN_MILLISECOND;
        struct QEMU_PACKED {
            MPQemuHeader h;
            MPQemuSetIrq irq;
        } *batch = g_new0(typeof(*batch), 1024);

        /* notifications by the thousand, so the proxy never runs dry */
        for (int i = 0; i < 1024; i++) {
            wire_header(&batch[i].h, MPQEMU_MAGIC, MPQEMU_CMD_SET_IRQ, 0, 0,
                        sizeof(MPQemuSetIrq), 0);
            batch[i].irq.level = cpu_to_le32(i & 1);
        }
        /*
         * Until the proxy gives up and closes, or the flood is over. The
         * stream repeats the batch endlessly, so a partial send leaves it
         * in the middle of a message that the next send completes. Never
         * sleeping in the kernel, the flood refills the socket as soon as
         * the proxy makes room.
         */
        size_t len = 1024 * sizeof(*batch), pos = 0;
        int sndbuf = 4 * 1024 * 1024;   /* the kernel caps it at wmem_max */

        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));

        while (g_get_monotonic_time() < end) {
            ssize_t n = send(fd, (char *)batch + pos, len - pos,
                             MSG_NOSIGNAL | MSG_DONTWAIT);

            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                continue;
            }
            if (n <= 0) {
                break;          /* the proxy closed the connection */
            }
            pos = (pos + n) % len;
        }
        g_free(batch);
        return true;
    }
    case REPLY_OK:
        g_assert_not_reached();
    }
    return fake_send(f, fd, reply);
}

/* Take the ring the proxy offers, checking that it is what it must be */
static void fake_ring_setup(FakeRemote *f, const MPQemuMsg *req,
                            MPQemuMsg *reply)
{
    size_t expect = MPQEMU_RING_SIZE + ROUND_UP(f->shadow_size,
                                                qemu_real_host_page_size());
    uint32_t size = le32_to_cpu(req->u.ring_setup.size);
    uint32_t flags = le32_to_cpu(req->u.ring_setup.flags);
    bool with_notify = flags & MPQEMU_RING_SETUP_NOTIFY_FD;
    struct stat st = { 0 };
    MPQemuRing *ring;
    void *map;

    g_mutex_lock(&f->lock);
    f->ring_setup_flags = flags;
    f->ring_setup_fds = req->hdr.num_fds;
    g_mutex_unlock(&f->lock);
    if (f->ring_mode == RING_OFF || f->ring) {
        fake_error(f, "RING_SETUP %s", f->ring ? "twice" : "not negotiated");
        mpqemu_msg_init_error(reply, req, -EPROTO, "no ring here");
        return;
    }
    /* a notify eventfd only from a proxy this fake granted it to */
    if ((flags & ~MPQEMU_RING_SETUP_FLAGS_ALL) ||
        (with_notify &&
         !(f->offered & f->features & MPQEMU_FEATURE_NOTIFY_EVENTFD))) {
        fake_error(f, "RING_SETUP with flags 0x%x (features granted: 0x%"
                   PRIx64 ")", flags, f->offered & f->features);
        mpqemu_msg_init_error(reply, req, -EINVAL, "bad flags");
        return;
    }
    if (with_notify && !fd_is_eventfd(req->fds[3])) {
        fake_error(f, "RING_SETUP with a notify descriptor that is not an "
                   "eventfd");
        mpqemu_msg_init_error(reply, req, -EINVAL, "bad notify descriptor");
        return;
    }
    /* the ring page and the room for the shadow the hints declared */
    if (size != expect || fstat(req->fds[0], &st) < 0 ||
        !S_ISREG(st.st_mode) || st.st_size != expect ||
        !(fcntl(req->fds[0], F_GET_SEALS) & F_SEAL_SHRINK)) {
        fake_error(f, "RING_SETUP of %u bytes with a ring file of %" PRId64
                   " bytes (expected %zu, sealed)", size,
                   (int64_t)st.st_size, expect);
        mpqemu_msg_init_error(reply, req, -EINVAL, "bad ring");
        return;
    }
    map = mmap(NULL, expect, PROT_READ | PROT_WRITE, MAP_SHARED,
               req->fds[0], 0);
    if (map == MAP_FAILED) {
        fake_error(f, "cannot map the ring: %s", strerror(errno));
        mpqemu_msg_init_error(reply, req, -EINVAL, "cannot map the ring");
        return;
    }
    ring = map;
    f->kick_fd = dup(req->fds[1]);
    f->done_fd = dup(req->fds[2]);
    f->notify_fd = with_notify ? dup(req->fds[3]) : -1;
    /* the proxy's first request is number 1 */
    f->ring_served = 0;
    /* this remote always sleeps: the proxy kicks for every request */
    qatomic_set(&ring->remote_sleeping, 1);
    /* the shadow is stale until a test fills it */
    qatomic_set(&ring->shadow_gen, 1);
    g_mutex_lock(&f->lock);
    f->ring = ring;
    f->ring_size = expect;
    f->ring_setups++;
    g_mutex_unlock(&f->lock);
    mpqemu_msg_init_reply(reply, req, 0);
}

/*
 * A notification went out on the socket: with a notify eventfd, follow the
 * remote's rule (mpqemu/ring.h) and signal it unless the proxy has yet to
 * read the last signal, or a halted vCPU of the proxy reads the socket
 */
static void fake_notified(FakeRemote *f)
{
    MPQemuRing *ring = f->ring;
    bool skip;

    if (f->notify_fd < 0) {
        return;
    }
    /* the message is sent before we look: pairs with the proxy's barriers */
    smp_mb();
    skip = qatomic_read(&ring->socket_reader) ||
           qatomic_read(&ring->notify_signalled);
    if (!skip) {
        qatomic_set(&ring->notify_signalled, 1);
        if (eventfd_write(f->notify_fd, 1) < 0) {
            fake_error(f, "cannot signal the notify eventfd: %s",
                       strerror(errno));
        }
    }
    g_mutex_lock(&f->lock);
    if (skip) {
        f->notify_skipped++;
    } else {
        f->notify_signals++;
    }
    g_mutex_unlock(&f->lock);
}

/* The last request the proxy queued: the highest number in the ring */
static uint32_t fake_req_seq(FakeRemote *f)
{
    uint32_t last = 0;

    for (int i = 0; i < MPQEMU_RING_ENTRIES; i++) {
        uint32_t seq = qatomic_load_acquire(&f->ring->entry[i].req_seq);

        if (mpqemu_seq_before(last, seq)) {
            last = seq;
        }
    }
    return last;
}

/* Answer request @seq in the ring, the one after the last answered */
static void fake_ring_answer(FakeRemote *f, uint32_t seq, uint64_t value,
                             uint32_t notify_seq)
{
    MPQemuRing *ring = f->ring;
    MPQemuRingEntry *e = mpqemu_ring_entry(ring, seq);

    qatomic_set(&e->value, value);
    qatomic_set(&e->status, 0);
    qatomic_set(&e->notify_seq, notify_seq);
    qatomic_store_release(&e->resp_seq, seq);
    f->ring_served = seq;
    smp_mb();
    if (qatomic_read(&ring->proxy_sleeping)) {
        eventfd_write(f->done_fd, 1);
    }
}

/* Serve request @seq of the ring as the test asked; false: stop serving */
static bool fake_serve_entry(FakeRemote *f, int fd, uint32_t seq)
{
    MPQemuRing *ring = f->ring;
    MPQemuRingEntry *e = mpqemu_ring_entry(ring, seq);
    MPQemuRingEntry req = {
        .cmd = qatomic_read(&e->cmd),
        .region = qatomic_read(&e->region),
        .size = qatomic_read(&e->size),
        .flags = qatomic_read(&e->flags),
        .offset = qatomic_read(&e->offset),
        .value = qatomic_read(&e->value),
    };
    uint64_t value = fake_bar_value(req.offset);
    int64_t deadline;
    MPQemuMsg msg;
    unsigned int nth = 0;

    if ((req.cmd != MPQEMU_CMD_BAR_READ && req.cmd != MPQEMU_CMD_BAR_WRITE) ||
        req.region != 0 || !is_power_of_2(req.size) || req.size > 8 ||
        req.offset > FAKE_BAR_SIZE - req.size ||
        (req.flags & ~MPQEMU_RING_POSTED) ||
        ((req.flags & MPQEMU_RING_POSTED) &&
         req.cmd != MPQEMU_CMD_BAR_WRITE)) {
        fake_error(f, "ring request %u: cmd %u of %u bytes at 0x%" PRIx64
                   " of region %u, flags 0x%x", seq, req.cmd, req.size,
                   req.offset, req.region, req.flags);
    }
    g_mutex_lock(&f->lock);
    g_array_append_val(f->ring_log, req);
    if (req.cmd == MPQEMU_CMD_BAR_WRITE) {
        f->bar_writes++;
    } else {
        nth = ++f->bar_reads;
        f->ring_reads++;
    }
    g_mutex_unlock(&f->lock);
    if (f->ring_mode == RING_INTX_RAISED_AGAIN && nth == 2) {
        /*
         * Lowered while serving this read, raised again right after it was
         * answered, by a SET_IRQ that is on the socket before the proxy
         * sees the answer: the line must end up raised.
         */
        qatomic_set(&e->intx, MPQEMU_RING_INTX_CHANGED);
        qatomic_set(&e->notify_seq, f->notify_sent);
        mpqemu_msg_init(&msg, MPQEMU_CMD_SET_IRQ, 0, 0, sizeof(MPQemuSetIrq));
        msg.u.set_irq.level = cpu_to_le32(1);
        f->notify_sent++;
        if (!fake_send(f, fd, &msg)) {
            return false;
        }
        fake_notified(f);
        g_usleep(FAKE_LATE_MS * 1000);
        fake_ring_answer(f, seq, value, f->notify_sent - 1);
        return true;
    }
    if (req.cmd == MPQEMU_CMD_BAR_WRITE || nth > 1) {
        fake_ring_answer(f, seq, value, f->notify_sent);
        return true;
    }

    switch (f->ring_mode) {
    case RING_SILENT:
        f->ring_stalled = true;
        return true;
    case RING_NOTIFY_MISSING:
        fake_ring_answer(f, seq, value, f->notify_sent + 1);
        return true;
    case RING_NOTIFY_LATE:
        fake_ring_answer(f, seq, value, f->notify_sent + 1);
        g_usleep(FAKE_LATE_MS * 1000);
        mpqemu_msg_init(&msg, MPQEMU_CMD_SET_IRQ, 0, 0, sizeof(MPQemuSetIrq));
        msg.u.set_irq.level = cpu_to_le32(1);
        f->notify_sent++;
        if (!fake_send(f, fd, &msg)) {
            return false;
        }
        fake_notified(f);
        return true;
    case RING_HANGUP:
        /* hang up on a proxy that sleeps, not on one that polls */
        deadline = g_get_monotonic_time() +
                   IO_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
        while (!qatomic_read(&ring->proxy_sleeping)) {
            if (g_get_monotonic_time() > deadline) {
                fake_error(f, "the proxy never slept on the ring");
                break;
            }
            g_usleep(1000);
        }
        return false;
    case RING_ANSWER:
        fake_ring_answer(f, seq, value, f->notify_sent);
        return true;
    case RING_INTX:
    case RING_INTX_RAISED_AGAIN:
        qatomic_set(&e->intx, MPQEMU_RING_INTX_CHANGED |
                              MPQEMU_RING_INTX_LEVEL);
        fake_ring_answer(f, seq, value, f->notify_sent);
        return true;
    case RING_INTX_BAD:
        qatomic_set(&e->intx, 0x42);
        fake_ring_answer(f, seq, value, f->notify_sent);
        return true;
    case RING_NOTIFY_BEHIND:
        qatomic_set(&e->intx, MPQEMU_RING_INTX_CHANGED);
        fake_ring_answer(f, seq, value, f->notify_sent - 1);
        return true;
    case RING_OFF:
    case RING_NEVER:
        break;
    }
    g_assert_not_reached();
}

/* The proxy kicked: serve what is in the ring, in order; false: stop */
static bool fake_serve_ring(FakeRemote *f, int fd)
{
    uint32_t seq, hold_seq;
    bool hold;
    int delay_ms;

    if (f->ring_mode == RING_NEVER || f->ring_stalled) {
        return true;
    }
    g_mutex_lock(&f->lock);
    delay_ms = f->ring_delay_ms;
    hold = f->ring_hold;
    hold_seq = f->ring_hold_seq;
    g_mutex_unlock(&f->lock);
    if (delay_ms) {
        g_usleep(delay_ms * 1000);
    }
    seq = fake_req_seq(f);
    if (hold && mpqemu_seq_before(seq, hold_seq)) {
        return true;            /* the next kick tells again */
    }
    if (mpqemu_seq_before(seq, f->ring_served) ||
        seq - f->ring_served > MPQEMU_RING_ENTRIES) {
        /* the proxy overwrote entries that were not served yet */
        fake_error(f, "ring request %u after %u", seq, f->ring_served);
        return false;
    }
    while (f->ring_served != seq && !f->ring_stalled) {
        uint32_t next = f->ring_served + 1;

        if (qatomic_load_acquire(&mpqemu_ring_entry(f->ring, next)->req_seq)
            != next) {
            fake_error(f, "ring request %u missing before %u", next, seq);
            return false;
        }
        if (!fake_serve_entry(f, fd, next)) {
            return false;
        }
    }
    return true;
}

/* Serve one request; false: stop serving */
static bool fake_serve(FakeRemote *f, int fd, const MPQemuMsg *req)
{
    MPQemuMsg reply;
    uint32_t off, len;
    uint64_t offered;
    unsigned int nth;

    switch (req->hdr.cmd) {
    case MPQEMU_CMD_HELLO:
        if (f->hello_refuse) {
            mpqemu_msg_init_error(&reply, req, -EPROTONOSUPPORT,
                                  "fake remote speaks only version %u",
                                  f->hello_version);
            break;
        }
        offered = le64_to_cpu(req->u.hello.features);
        g_mutex_lock(&f->lock);
        f->offered = offered;
        g_mutex_unlock(&f->lock);
        mpqemu_msg_init_reply(&reply, req, sizeof(MPQemuHello));
        reply.u.hello.version = cpu_to_le32(f->hello_version);
        if (f->ring_mode != RING_OFF && !(offered & MPQEMU_FEATURE_RING)) {
            fake_error(f, "the proxy did not offer the ring");
        }
        reply.u.hello.features = cpu_to_le64(offered & f->features);
        pstrcpy(reply.u.hello.devid, sizeof(reply.u.hello.devid), "fake0");
        break;
    case MPQEMU_CMD_DEVICE_INFO:
        mpqemu_msg_init_reply(&reply, req, sizeof(MPQemuDeviceInfo));
        reply.u.device_info.config_size = cpu_to_le32(sizeof(f->config));
        reply.u.device_info.region[0].size = cpu_to_le64(f->bar_size);
        break;
    case MPQEMU_CMD_CONFIG_READ:
    case MPQEMU_CMD_CONFIG_WRITE:
        off = le32_to_cpu(req->u.config.offset);
        len = le32_to_cpu(req->u.config.len);
        if ((len != 1 && len != 2 && len != 4) || off >= sizeof(f->config) ||
            len > sizeof(f->config) - off) {
            fake_error(f, "config access of %u bytes at 0x%x", len, off);
            mpqemu_msg_init_error(&reply, req, -EINVAL, "out of range");
            break;
        }
        if (req->hdr.cmd == MPQEMU_CMD_CONFIG_READ) {
            mpqemu_msg_init_reply(&reply, req, sizeof(MPQemuValue));
            reply.u.value.value = cpu_to_le64(ldn_le_p(f->config + off, len));
            break;
        }
        /* only the command register is writable */
        for (uint32_t i = 0; i < len; i++) {
            if (off + i == PCI_COMMAND || off + i == PCI_COMMAND + 1) {
                f->config[off + i] = le32_to_cpu(req->u.config.value) >>
                                     (8 * i);
            }
        }
        mpqemu_msg_init_reply(&reply, req, 0);
        break;
    case MPQEMU_CMD_BAR_READ:
    case MPQEMU_CMD_BAR_WRITE:
        if (req->u.bar.region != 0 || !is_power_of_2(req->u.bar.size) ||
            req->u.bar.size > 8 ||
            le64_to_cpu(req->u.bar.offset) > FAKE_BAR_SIZE - req->u.bar.size) {
            fake_error(f, "BAR access of %u bytes at 0x%" PRIx64
                       " of region %u", req->u.bar.size,
                       le64_to_cpu(req->u.bar.offset), req->u.bar.region);
        }
        if (req->hdr.cmd == MPQEMU_CMD_BAR_WRITE) {
            g_mutex_lock(&f->lock);
            f->bar_writes++;
            g_mutex_unlock(&f->lock);
            mpqemu_msg_init_reply(&reply, req, 0);
            break;
        }
        g_mutex_lock(&f->lock);
        nth = ++f->bar_reads;
        g_mutex_unlock(&f->lock);
        if (nth == 1 && f->bad != REPLY_OK) {
            return fake_bad_bar_read(f, fd, req, &reply);
        }
        mpqemu_msg_init_reply(&reply, req, sizeof(MPQemuValue));
        reply.u.value.value =
            cpu_to_le64(fake_bar_value(le64_to_cpu(req->u.bar.offset)));
        break;
    case MPQEMU_CMD_MEMORY_MAP:
    case MPQEMU_CMD_RESET:
        mpqemu_msg_init_reply(&reply, req, 0);
        break;
    case MPQEMU_CMD_ACCESS_HINTS:
        if (!(f->features & (MPQEMU_FEATURE_POSTED_WRITES |
                             MPQEMU_FEATURE_SHADOW))) {
            fake_error(f, "ACCESS_HINTS without a feature that has hints");
        }
        g_mutex_lock(&f->lock);
        f->hint_requests++;
        g_mutex_unlock(&f->lock);
        mpqemu_msg_init_reply(&reply, req, sizeof(MPQemuAccessHints));
        reply.u.hints = f->hints;
        f->shadow_size = le32_to_cpu(f->hints.shadow_size);
        break;
    case MPQEMU_CMD_RING_SETUP:
        fake_ring_setup(f, req, &reply);
        break;
    default:
        fake_error(f, "unexpected %s", mpqemu_cmd_name(req->hdr.cmd));
        return false;
    }
    return fake_send(f, fd, &reply);
}

/* The test has a notification for the proxy; false: stop serving */
static bool fake_send_notification(FakeRemote *f, int fd)
{
    const MPQemuMsg *msg;
    eventfd_t count;
    bool sent = true, unsignalled, hangup, half;

    eventfd_read(f->action_fd, &count);
    g_mutex_lock(&f->lock);
    msg = f->notify;
    unsignalled = f->notify_unsignalled;
    hangup = f->hangup;
    half = f->hangup_half;
    g_mutex_unlock(&f->lock);
    if (hangup && !half) {
        return false;
    }
    if (hangup) {
        /* nothing more comes from here; what the proxy sends is still read */
        if (shutdown(fd, SHUT_WR) < 0) {
            fake_error(f, "shutdown: %s", strerror(errno));
        }
        g_mutex_lock(&f->lock);
        f->hangup = false;
        g_cond_broadcast(&f->cond);
        g_mutex_unlock(&f->lock);
        return true;
    }
    if (!msg) {
        return true;
    }
    sent = fake_send(f, fd, msg);
    f->notify_sent += sent;
    if (sent && !unsignalled) {
        fake_notified(f);
    }
    g_mutex_lock(&f->lock);
    f->notify = NULL;
    g_cond_broadcast(&f->cond);
    g_mutex_unlock(&f->lock);
    return sent;
}

static gpointer fake_remote_thread(gpointer opaque)
{
    FakeRemote *f = opaque;
    int fd = -1;

    if (!mpqemu_wait_readable(f->listen_fd, FAKE_IDLE_MS)) {
        fake_error(f, "the proxy never connected");
        goto out;
    }
    fd = qemu_accept(f->listen_fd, NULL, NULL);
    if (fd < 0) {
        fake_error(f, "accept: %s", strerror(errno));
        goto out;
    }

    for (;;) {
        MPQemuMsg req;
        Error *err = NULL;
        bool more;
        int ret;
        struct pollfd pfd[3] = {
            { .fd = fd, .events = POLLIN },
            { .fd = f->ring ? f->kick_fd : -1, .events = POLLIN },
            { .fd = f->action_fd, .events = POLLIN },
        };

        /* the ring, once there is one, the socket, and the test */
        ret = poll(pfd, 3, FAKE_IDLE_MS);
        if (ret < 0 && errno == EINTR) {
            continue;
        }
        if (ret <= 0) {
            fake_error(f, "nothing from the proxy for %d ms", FAKE_IDLE_MS);
            break;
        }
        if (pfd[2].revents && !fake_send_notification(f, fd)) {
            break;
        }
        if (pfd[1].revents) {
            eventfd_t count;

            eventfd_read(f->kick_fd, &count);
            if (!fake_serve_ring(f, fd)) {
                break;
            }
        }
        if (!pfd[0].revents) {
            continue;
        }

        ret = mpqemu_msg_recv(fd, &req, FAKE_IDLE_MS, &err);
        if (ret == -EPIPE || ret == -ECONNRESET) {
            error_free(err);
            break;          /* the proxy went away */
        }
        if (ret < 0) {
            fake_error(f, "receiving: %s", error_get_pretty(err));
            error_free(err);
            break;
        }
        /* the proxy's own requests must be well-formed */
        if (!mpqemu_msg_check(&req, MPQEMU_PEER_REMOTE, &err)) {
            fake_error(f, "malformed request: %s", error_get_pretty(err));
            error_free(err);
            mpqemu_msg_close_fds(&req);
            break;
        }
        if (req.hdr.id <= f->last_id) {
            fake_error(f, "request id %" PRIu64 " after %" PRIu64,
                       req.hdr.id, f->last_id);
        }
        f->last_id = req.hdr.id;
        g_mutex_lock(&f->lock);
        f->requests++;
        g_mutex_unlock(&f->lock);

        more = fake_serve(f, fd, &req);
        mpqemu_msg_close_fds(&req);
        if (!more) {
            break;
        }
    }

out:
    if (fd >= 0) {
        close(fd);
    }
    /* the ring stays mapped for the test to look at */
    if (f->ring) {
        close(f->kick_fd);
        close(f->done_fd);
    }
    if (f->notify_fd >= 0) {
        close(f->notify_fd);
        f->notify_fd = -1;
    }
    g_mutex_lock(&f->lock);
    f->done = true;
    f->notify = NULL;
    g_cond_broadcast(&f->cond);
    g_mutex_unlock(&f->lock);
    return NULL;
}

static FakeRemote *fake_remote_new(BadReply bad, uint32_t hello_version,
                                   bool hello_refuse)
{
    FakeRemote *f = g_new0(FakeRemote, 1);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };

    f->dir = mpqemu_tmp_dir();
    f->path = g_build_filename(f->dir, "fake.sock", NULL);
    f->bad = bad;
    f->hello_version = hello_version;
    f->hello_refuse = hello_refuse;
    f->probe = -1;
    f->bar_size = FAKE_BAR_SIZE;
    f->errors = g_string_new("");
    f->ring_log = g_array_new(false, false, sizeof(MPQemuRingEntry));
    f->action_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    g_assert_cmpint(f->action_fd, >=, 0);
    f->notify_fd = -1;
    g_mutex_init(&f->lock);
    g_cond_init(&f->cond);

    stw_le_p(f->config + PCI_VENDOR_ID, FAKE_VENDOR);
    stw_le_p(f->config + PCI_DEVICE_ID, FAKE_DEVICE);
    f->config[PCI_REVISION_ID] = 1;
    f->config[PCI_CLASS_DEVICE + 1] = 0xff;         /* "other" devices */
    f->config[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_NORMAL;
    f->config[PCI_INTERRUPT_PIN] = 1;

    g_assert_cmpuint(strlen(f->path), <, sizeof(addr.sun_path));
    strcpy(addr.sun_path, f->path);
    f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_assert_cmpint(f->listen_fd, >=, 0);
    g_assert_cmpint(bind(f->listen_fd, (struct sockaddr *)&addr,
                         sizeof(addr)), ==, 0);
    g_assert_cmpint(listen(f->listen_fd, 1), ==, 0);
    return f;
}

/* A fake remote with a ring, granting @features of what the proxy offers */
static FakeRemote *fake_ring_new(RingMode mode, uint64_t features)
{
    FakeRemote *f = fake_remote_new(REPLY_OK, MPQEMU_VERSION, false);

    f->ring_mode = mode;
    f->features = features;
    return f;
}

/* Add a hint to the fake's ACCESS_HINTS reply */
static MPQemuAccessHint *fake_add_hint(FakeRemote *f, uint8_t kind,
                                       uint8_t region, uint64_t offset,
                                       uint32_t size)
{
    uint32_t n = le32_to_cpu(f->hints.nr_hints);
    MPQemuAccessHint *h;

    g_assert_cmpuint(n, <, MPQEMU_MAX_HINTS);
    h = &f->hints.hint[n];
    memset(h, 0, sizeof(*h));
    h->kind = kind;
    h->region = region;
    h->offset = cpu_to_le64(offset);
    h->size = cpu_to_le32(size);
    f->hints.nr_hints = cpu_to_le32(n + 1);
    return h;
}

/* A SHADOW hint of BAR0, with room for it in the shadow area */
static MPQemuAccessHint *fake_add_shadow(FakeRemote *f, uint64_t offset,
                                         uint32_t size,
                                         uint32_t shadow_offset,
                                         uint8_t width, uint8_t flags,
                                         uint8_t min_size, uint8_t max_size)
{
    MPQemuAccessHint *h = fake_add_hint(f, MPQEMU_HINT_SHADOW, 0, offset,
                                        size);
    uint32_t end = shadow_offset + ROUND_UP(size, 8);

    h->shadow_offset = cpu_to_le32(shadow_offset);
    h->width = width;
    h->flags = flags;
    h->min_size = min_size;
    h->max_size = max_size;
    if (end > le32_to_cpu(f->hints.shadow_size)) {
        f->hints.shadow_size = cpu_to_le32(end);
    }
    return h;
}

/* Serve the proxy that connects, from a thread of its own */
static void fake_remote_start(FakeRemote *f)
{
    f->thread = g_thread_new("fake-remote", fake_remote_thread, f);
}

/* Wait up to @ms for the connection to be over */
static bool fake_wait_done(FakeRemote *f, int ms)
{
    int64_t deadline = g_get_monotonic_time() + ms * G_TIME_SPAN_MILLISECOND;
    bool done;

    g_mutex_lock(&f->lock);
    while (!f->done && g_cond_wait_until(&f->cond, &f->lock, deadline)) {
        /* woken up: check again */
    }
    done = f->done;
    g_mutex_unlock(&f->lock);
    return done;
}

/*
 * Have the fake send @msg, a notification, now, and wait until it did; with
 * @signal, it then signals the notify eventfd, if it has one, as a remote
 * must. The descriptors of @msg stay the caller's.
 */
static void fake_notify_how(FakeRemote *f, const MPQemuMsg *msg, bool signal)
{
    int64_t deadline = g_get_monotonic_time() +
                       IO_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
    bool pending;

    g_mutex_lock(&f->lock);
    g_assert_false(f->done);
    f->notify = msg;
    f->notify_unsignalled = !signal;
    g_mutex_unlock(&f->lock);
    g_assert_cmpint(eventfd_write(f->action_fd, 1), ==, 0);
    g_mutex_lock(&f->lock);
    while (f->notify && g_cond_wait_until(&f->cond, &f->lock, deadline)) {
        /* woken up: check again */
    }
    pending = f->notify != NULL;
    f->notify = NULL;
    g_mutex_unlock(&f->lock);
    g_assert_false(pending);
}

static void fake_notify(FakeRemote *f, const MPQemuMsg *msg)
{
    fake_notify_how(f, msg, true);
}

/*
 * Have the fake close the connection now, or with @half shut it down for
 * writing only, and wait until it did
 */
static void fake_hang_up(FakeRemote *f, bool half)
{
    int64_t deadline = g_get_monotonic_time() +
                       IO_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
    bool pending;

    g_mutex_lock(&f->lock);
    g_assert_false(f->done);
    f->hangup = true;
    f->hangup_half = half;
    g_mutex_unlock(&f->lock);
    g_assert_cmpint(eventfd_write(f->action_fd, 1), ==, 0);
    if (!half) {
        g_assert_true(fake_wait_done(f, IO_TIMEOUT_MS));
        return;
    }
    g_mutex_lock(&f->lock);
    while (f->hangup && !f->done &&
           g_cond_wait_until(&f->cond, &f->lock, deadline)) {
        /* woken up: check again */
    }
    pending = f->hangup;
    g_mutex_unlock(&f->lock);
    g_assert_false(pending);
}

static unsigned int fake_bar_reads(FakeRemote *f)
{
    unsigned int n;

    g_mutex_lock(&f->lock);
    n = f->bar_reads;
    g_mutex_unlock(&f->lock);
    return n;
}

/* The @i-th request the fake served in the ring, from the last if < 0 */
static MPQemuRingEntry fake_ring_log(FakeRemote *f, int i)
{
    MPQemuRingEntry e;

    g_mutex_lock(&f->lock);
    if (i < 0) {
        i += f->ring_log->len;
    }
    g_assert_cmpint(i, >=, 0);
    g_assert_cmpint(i, <, f->ring_log->len);
    e = g_array_index(f->ring_log, MPQemuRingEntry, i);
    g_mutex_unlock(&f->lock);
    return e;
}

/* Join the thread (the connection must be over) and check its findings */
static void fake_remote_free(FakeRemote *f)
{
    g_assert_true(fake_wait_done(f, IO_TIMEOUT_MS));
    g_thread_join(f->thread);
    if (f->errors->len) {
        g_test_message("fake remote: %s", f->errors->str);
    }
    g_assert_cmpuint(f->errors->len, ==, 0);
    g_string_free(f->errors, true);
    if (f->ring) {
        munmap(f->ring, f->ring_size);
    }
    g_array_free(f->ring_log, true);
    close(f->action_fd);
    close(f->listen_fd);
    if (f->probe >= 0) {
        close(f->probe);
    }
    g_mutex_clear(&f->lock);
    g_cond_clear(&f->cond);
    g_free(f->path);
    mpqemu_tmp_free(f->dir);
    g_free(f);
}

typedef struct ProxyTest {
    FakeRemote *fake;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar;
} ProxyTest;

static unsigned int fake_counter(FakeRemote *f, unsigned int *counter)
{
    unsigned int n;

    g_mutex_lock(&f->lock);
    n = *counter;
    g_mutex_unlock(&f->lock);
    return n;
}

static uint64_t fake_counter64(FakeRemote *f, uint64_t *counter)
{
    uint64_t n;

    g_mutex_lock(&f->lock);
    n = *counter;
    g_mutex_unlock(&f->lock);
    return n;
}

/* A main QEMU whose proxy talks to @fake, which the test then owns */
static void proxy_test_start_fake(ProxyTest *t, FakeRemote *fake,
                                  const char *props)
{
    uint64_t size = 0;

    t->fake = fake;
    fake_remote_start(t->fake);
    t->qts = qtest_initf("-machine pc "
                         "-object memory-backend-memfd,id=mem,size=64M "
                         "-machine memory-backend=mem -m 64 "
                         "-device x-pci-proxy-dev,id=p0,addr=04.0,socket=%s%s",
                         t->fake->path, props);
    t->bus = qpci_new_pc(t->qts, NULL);
    t->dev = qpci_device_find(t->bus, QPCI_DEVFN(4, 0));
    g_assert_nonnull(t->dev);
    g_assert_cmphex(qpci_config_readw(t->dev, PCI_VENDOR_ID), ==, FAKE_VENDOR);
    g_assert_cmphex(qpci_config_readw(t->dev, PCI_DEVICE_ID), ==, FAKE_DEVICE);
    qpci_device_enable(t->dev);
    t->bar = qpci_iomap(t->dev, 0, &size);
    g_assert_cmpuint(size, ==, FAKE_BAR_SIZE);
    /* the realize and the setup above went through without BAR reads */
    g_assert_cmpuint(fake_bar_reads(t->fake), ==, 0);
}

static void proxy_test_start(ProxyTest *t, BadReply bad, const char *props)
{
    proxy_test_start_fake(t, fake_remote_new(bad, MPQEMU_VERSION, false),
                          props);
}

/* The same with a fake remote @f that takes the ring */
static void proxy_test_start_ring_fake(ProxyTest *t, FakeRemote *f,
                                       const char *props)
{
    proxy_test_start_fake(t, f, props);
    /* the proxy set the ring up when it started */
    g_assert_cmpuint(fake_counter(f, &f->ring_setups), ==, 1);
    g_assert_nonnull(f->ring);
}

/* ... which grants the ring alone */
static void proxy_test_start_ring(ProxyTest *t, RingMode mode,
                                  const char *props)
{
    proxy_test_start_ring_fake(t, fake_ring_new(mode, MPQEMU_FEATURE_RING),
                               props);
    g_assert_cmpuint(fake_counter(t->fake, &t->fake->hint_requests), ==, 0);
}

static void proxy_test_end(ProxyTest *t)
{
    check_alive(t->qts);
    g_free(t->dev);
    qpci_free_pc(t->bus);
    qtest_quit(t->qts);
    fake_remote_free(t->fake);
}

/*
 * The proxy is offline: all-ones everywhere, nothing reaches the remote,
 * and the main QEMU goes on
 */
static void proxy_check_offline(ProxyTest *t)
{
    unsigned int reads = fake_bar_reads(t->fake);
    unsigned int writes = fake_counter(t->fake, &t->fake->bar_writes);

    g_assert_cmphex(qpci_io_readl(t->dev, t->bar, 0x10), ==, 0xffffffff);
    g_assert_cmphex(qpci_io_readl(t->dev, t->bar, 0x14), ==, 0xffffffff);
    g_assert_cmphex(qpci_config_readw(t->dev, PCI_VENDOR_ID), ==, 0xffff);
    qpci_io_writel(t->dev, t->bar, 0x18, 0x12345678);
    g_assert_cmpuint(fake_bar_reads(t->fake), ==, reads);
    g_assert_cmpuint(fake_counter(t->fake, &t->fake->bar_writes), ==, writes);
    check_alive(t->qts);
}

/*
 * ... and it closed the connection, and told the management layer why
 * (@cause, a RemoteDeviceFailureCause) and who: the fake remote is a
 * thread of this process, listening on the socket the proxy connected to
 */
static void proxy_check_failed(ProxyTest *t, const char *cause)
{
    QDict *event, *data;

    g_assert_true(fake_wait_done(t->fake, IO_TIMEOUT_MS));
    event = qtest_qmp_eventwait_ref(t->qts, "REMOTE_DEVICE_FAILED");
    data = qdict_get_qdict(event, "data");
    g_assert_cmpstr(qdict_get_str(data, "path"), ==, "/machine/peripheral/p0");
    g_assert_cmpstr(qdict_get_str(data, "device"), ==, "p0");
    g_assert_cmpint(qdict_get_int(data, "pid"), ==, getpid());
    g_assert_false(qdict_haskey(data, "remote"));
    g_assert_cmpstr(qdict_get_str(data, "cause"), ==, cause);
    g_assert_cmpstr(qdict_get_str(data, "reason"), !=, "");
    qobject_unref(event);
    proxy_check_offline(t);
}

/* A well-behaved remote, to show that the fixture works */
static void test_proxy_healthy(void)
{
    ProxyTest t;

    proxy_test_start(&t, REPLY_OK, "");
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0), ==, fake_bar_value(0));
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0xffc), ==,
                    fake_bar_value(0xffc));
    qpci_io_writel(t.dev, t.bar, 0x20, 0x12345678);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x24), ==,
                    fake_bar_value(0x24));
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 3);
    g_assert_false(fake_wait_done(t.fake, 0));
    proxy_test_end(&t);
}

/* The first BAR read gets a malformed answer: the proxy fails closed */
static void test_proxy_bad_reply(gconstpointer data)
{
    BadReply bad = GPOINTER_TO_INT(data);
    ProxyTest t;

    proxy_test_start(&t, bad, "");
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x40), ==, 0xffffffff);
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 1);
    /* a message cut short by the end of the connection is malformed too */
    proxy_check_failed(&t, "protocol");
    if (bad == REPLY_WITH_FD) {
        /* the descriptor that came along was not kept */
        g_assert_true(probe_fd_closed(t.fake->probe, IO_TIMEOUT_MS));
        t.fake->probe = -1;
    }
    proxy_test_end(&t);
}

/* A good reply followed by a stray one: the proxy fails on the stray one */
static void test_proxy_unsolicited(void)
{
    ProxyTest t;

    proxy_test_start(&t, REPLY_UNSOLICITED, "");
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x40), ==,
                    fake_bar_value(0x40));
    proxy_check_failed(&t, "protocol");
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 1);
    proxy_test_end(&t);
}

/* A proper error reply costs only that access */
static void test_proxy_valid_error(void)
{
    ProxyTest t;

    proxy_test_start(&t, REPLY_VALID_ERROR, "");
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x40), ==, 0xffffffff);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x44), ==,
                    fake_bar_value(0x44));
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x48), ==,
                    fake_bar_value(0x48));
    g_assert_cmphex(qpci_config_readw(t.dev, PCI_VENDOR_ID), ==, FAKE_VENDOR);
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 3);
    g_assert_false(fake_wait_done(t.fake, 0));
    proxy_test_end(&t);
}

/* A notification before the reply is applied, and the reply still taken */
static void test_proxy_irq_first(void)
{
    ProxyTest t;

    proxy_test_start(&t, REPLY_IRQ_FIRST, "");
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x40), ==,
                    fake_bar_value(0x40));
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x44), ==,
                    fake_bar_value(0x44));
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 2);
    g_assert_false(fake_wait_done(t.fake, 0));
    proxy_test_end(&t);
}

/*
 * A remote that sends notification after notification but never the reply
 * is a remote that does not answer: the proxy must give up when its
 * timeout expires, not when the remote stops talking.
 */
static void test_proxy_irq_flood(void)
{
    ProxyTest t;
    int64_t start, elapsed_ms;

    proxy_test_start(&t, REPLY_IRQ_FLOOD, ",timeout=500");
    start = g_get_monotonic_time();
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x40), ==, 0xffffffff);
    elapsed_ms = (g_get_monotonic_time() - start) / 1000;
    g_test_message("the read took %" PRId64 " ms (flood: %d ms)", elapsed_ms,
                   FAKE_FLOOD_MS);
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 1);
    proxy_check_failed(&t, "timeout");
    proxy_test_end(&t);
    if (elapsed_ms >= 2000) {
        /* not fatal, so that the tests after this one still run */
        g_test_message("FAIL: the proxy kept reading notifications for %"
                       PRId64 " ms despite timeout=500", elapsed_ms);
        g_test_fail();
    }
}

/* A remote that never answers: all-ones once the proxy's timeout expires */
static void test_proxy_silent(void)
{
    ProxyTest t;
    int64_t start, elapsed_ms;

    proxy_test_start(&t, REPLY_SILENT, ",timeout=500");
    start = g_get_monotonic_time();
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x40), ==, 0xffffffff);
    elapsed_ms = (g_get_monotonic_time() - start) / 1000;
    g_test_message("the read took %" PRId64 " ms", elapsed_ms);
    g_assert_cmpint(elapsed_ms, >=, 450);
    g_assert_cmpint(elapsed_ms, <, 3000);
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 1);
    proxy_check_failed(&t, "timeout");
    proxy_test_end(&t);
}

/* ------------------------------------------------------------------------ */
/* Proxy side with the shared-memory ring                                   */
/* ------------------------------------------------------------------------ */

/* A well-behaved remote with a ring: BAR accesses leave the socket alone */
static void test_proxy_ring_healthy(void)
{
    ProxyTest t;
    MPQemuRingEntry entry;
    unsigned int requests;

    proxy_test_start_ring(&t, RING_ANSWER, "");
    requests = fake_counter(t.fake, &t.fake->requests);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0), ==, fake_bar_value(0));
    qpci_io_writel(t.dev, t.bar, 0x20, 0x12345678);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0xffc), ==,
                    fake_bar_value(0xffc));
    g_assert_cmpuint(fake_counter(t.fake, &t.fake->ring_reads), ==, 2);
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 2);
    g_assert_cmpuint(fake_counter(t.fake, &t.fake->bar_writes), ==, 1);
    g_assert_cmpuint(fake_counter(t.fake, &t.fake->requests), ==, requests);
    /* the proxy offered everything it knows; posting was not granted */
    g_assert_cmphex(fake_counter64(t.fake, &t.fake->offered), ==,
                    MPQEMU_FEATURES_KNOWN);
    entry = fake_ring_log(t.fake, 1);
    g_assert_cmpuint(entry.cmd, ==, MPQEMU_CMD_BAR_WRITE);
    g_assert_cmphex(entry.offset, ==, 0x20);
    g_assert_cmphex(entry.value, ==, 0x12345678);
    g_assert_cmphex(entry.flags, ==, 0);
    /* config space still goes through the socket */
    g_assert_cmphex(qpci_config_readw(t.dev, PCI_VENDOR_ID), ==, FAKE_VENDOR);
    g_assert_cmpuint(fake_counter(t.fake, &t.fake->requests), >, requests);
    g_assert_false(fake_wait_done(t.fake, 0));
    proxy_test_end(&t);
}

/* Time one 32-bit read of the proxy's BAR, checking the value it gives */
static int64_t proxy_timed_read(ProxyTest *t, uint64_t offset,
                                uint32_t expect)
{
    int64_t start = g_get_monotonic_time();
    uint32_t value = qpci_io_readl(t->dev, t->bar, offset);
    int64_t elapsed_ms = (g_get_monotonic_time() - start) / 1000;

    g_test_message("the read at 0x%" PRIx64 " gave 0x%08x in %" PRId64 " ms",
                   offset, value, elapsed_ms);
    g_assert_cmphex(value, ==, expect);
    return elapsed_ms;
}

/* (1) the ring never answers: all-ones once the proxy's timeout expires */
static void test_proxy_ring_silent(void)
{
    ProxyTest t;
    int64_t elapsed_ms;

    proxy_test_start_ring(&t, RING_SILENT, ",timeout=500");
    elapsed_ms = proxy_timed_read(&t, 0x40, 0xffffffff);
    g_assert_cmpint(elapsed_ms, >=, 450);
    g_assert_cmpint(elapsed_ms, <, 3000);
    check_alive(t.qts);
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 1);
    proxy_check_failed(&t, "timeout");
    proxy_test_end(&t);
}

/*
 * (2) the ring answers, announcing a notification that never comes: the
 * proxy must not complete the read without it, and gives up in time.
 */
static void test_proxy_ring_notify_missing(void)
{
    ProxyTest t;
    int64_t elapsed_ms;

    proxy_test_start_ring(&t, RING_NOTIFY_MISSING, ",timeout=500");
    elapsed_ms = proxy_timed_read(&t, 0x40, 0xffffffff);
    g_assert_cmpint(elapsed_ms, >=, 450);
    g_assert_cmpint(elapsed_ms, <, 3000);
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 1);
    proxy_check_failed(&t, "timeout");
    proxy_test_end(&t);
}

/* PIIX3 PCI interrupt routing: PIRQA-D to ISA IRQ @irq */
#define PIIX_PIRQCA             0x60
#define PROXY_TEST_IRQ          11

/* Route the proxy's INTx to PROXY_TEST_IRQ and watch that line */
static void proxy_test_watch_intx(ProxyTest *t)
{
    QPCIDevice *isa = qpci_device_find(t->bus, QPCI_DEVFN(1, 0));

    g_assert_nonnull(isa);
    for (int pirq = 0; pirq < 4; pirq++) {
        qpci_config_writeb(isa, PIIX_PIRQCA + pirq, PROXY_TEST_IRQ);
    }
    g_free(isa);
    qtest_irq_intercept_in(t->qts, "ioapic");
    g_assert_false(qtest_get_irq(t->qts, PROXY_TEST_IRQ));
}

/*
 * (3) the ring answers, announcing a SET_IRQ that the socket brings only
 * later: the read waits for it, and the interrupt is raised by the time
 * the guest sees the value.
 */
static void test_proxy_ring_notify_late(void)
{
    ProxyTest t;
    int64_t elapsed_ms;

    proxy_test_start_ring(&t, RING_NOTIFY_LATE, ",timeout=5000");
    proxy_test_watch_intx(&t);

    elapsed_ms = proxy_timed_read(&t, 0x40, fake_bar_value(0x40));
    g_assert_true(qtest_get_irq(t.qts, PROXY_TEST_IRQ));
    g_assert_cmpint(elapsed_ms, >=, FAKE_LATE_MS - 20);
    g_assert_cmpint(elapsed_ms, <, 3000);

    /* nothing failed: the next read is answered at once */
    elapsed_ms = proxy_timed_read(&t, 0x44, fake_bar_value(0x44));
    g_assert_cmpint(elapsed_ms, <, 1000);
    g_assert_true(qtest_get_irq(t.qts, PROXY_TEST_IRQ));
    g_assert_cmpuint(fake_counter(t.fake, &t.fake->ring_reads), ==, 2);
    g_assert_false(fake_wait_done(t.fake, 0));
    proxy_test_end(&t);
}

/*
 * (3b) RING_INTX: the answer says the device raised INTx while serving the
 * read, and nothing comes on the socket: the interrupt is up by the time
 * the guest sees the value.
 */
static void test_proxy_ring_intx(void)
{
    ProxyTest t;

    proxy_test_start_ring_fake(&t, fake_ring_new(RING_INTX,
                                                 MPQEMU_FEATURE_RING |
                                                 MPQEMU_FEATURE_RING_INTX),
                               ",timeout=5000");
    proxy_test_watch_intx(&t);
    g_assert_cmpint(proxy_timed_read(&t, 0x40, fake_bar_value(0x40)), <,
                    3000);
    g_assert_true(qtest_get_irq(t.qts, PROXY_TEST_IRQ));
    /* a plain answer leaves the line as it is */
    g_assert_cmpint(proxy_timed_read(&t, 0x44, fake_bar_value(0x44)), <,
                    3000);
    g_assert_true(qtest_get_irq(t.qts, PROXY_TEST_IRQ));
    g_assert_false(fake_wait_done(t.fake, 0));
    proxy_test_end(&t);
}

/*
 * (3c) RING_INTX: the answer says the device lowered INTx while serving the
 * read, and a SET_IRQ raising it again, sent after the answer, comes on the
 * socket while the proxy waits: the line ends up raised, as on the device.
 */
static void test_proxy_ring_intx_raised_again(void)
{
    ProxyTest t;

    proxy_test_start_ring_fake(&t, fake_ring_new(RING_INTX_RAISED_AGAIN,
                                                 MPQEMU_FEATURE_RING |
                                                 MPQEMU_FEATURE_RING_INTX),
                               ",timeout=5000");
    proxy_test_watch_intx(&t);
    g_assert_cmpint(proxy_timed_read(&t, 0x40, fake_bar_value(0x40)), <,
                    3000);
    g_assert_true(qtest_get_irq(t.qts, PROXY_TEST_IRQ));
    g_assert_cmpint(proxy_timed_read(&t, 0x44, fake_bar_value(0x44)), >=,
                    FAKE_LATE_MS - 20);
    g_assert_true(qtest_get_irq(t.qts, PROXY_TEST_IRQ));
    g_assert_cmpuint(fake_counter(t.fake, &t.fake->ring_reads), ==, 2);
    g_assert_false(fake_wait_done(t.fake, 0));
    proxy_test_end(&t);
}

/*
 * (3d) an INTx state in an answer that means nothing, or that was not
 * negotiated, or an answer that claims fewer notifications than the proxy
 * had before it asked (where would the INTx change go?): a protocol
 * violation, and the line goes down with the device.
 */
static void test_proxy_ring_intx_bad(void)
{
    const struct {
        RingMode mode;
        uint64_t features;
        bool raise_first;
    } cases[] = {
        { RING_INTX_BAD, MPQEMU_FEATURE_RING | MPQEMU_FEATURE_RING_INTX },
        { RING_INTX, MPQEMU_FEATURE_RING },
        { RING_NOTIFY_BEHIND, MPQEMU_FEATURE_RING | MPQEMU_FEATURE_RING_INTX,
          true },
    };

    for (int i = 0; i < ARRAY_SIZE(cases); i++) {
        ProxyTest t;

        proxy_test_start_ring_fake(&t, fake_ring_new(cases[i].mode,
                                                     cases[i].features),
                                   ",timeout=5000");
        proxy_test_watch_intx(&t);
        if (cases[i].raise_first) {
            MPQemuMsg m;

            mpqemu_msg_init(&m, MPQEMU_CMD_SET_IRQ, 0, 0,
                            sizeof(MPQemuSetIrq));
            m.u.set_irq.level = cpu_to_le32(1);
            fake_notify(t.fake, &m);
            /* the main loop takes it from the socket between commands */
            for (int n = 0; !qtest_get_irq(t.qts, PROXY_TEST_IRQ); n++) {
                g_assert_cmpint(n, <, IO_TIMEOUT_MS);
                g_usleep(1000);
                qpci_config_readw(t.dev, PCI_VENDOR_ID);
            }
        }
        g_assert_cmpint(proxy_timed_read(&t, 0x40, 0xffffffff), <, 3000);
        proxy_check_failed(&t, "protocol");
        g_assert_false(qtest_get_irq(t.qts, PROXY_TEST_IRQ));
        proxy_test_end(&t);
    }
}

/* (4) the remote hangs up while the proxy sleeps on the ring */
static void test_proxy_ring_hangup(void)
{
    ProxyTest t;
    int64_t elapsed_ms;

    proxy_test_start_ring(&t, RING_HANGUP, ",timeout=5000");
    elapsed_ms = proxy_timed_read(&t, 0x40, 0xffffffff);
    g_assert_cmpint(elapsed_ms, <, 1000);
    g_assert_cmpuint(fake_bar_reads(t.fake), ==, 1);
    proxy_check_failed(&t, "disconnected");
    proxy_test_end(&t);
}

/* ------------------------------------------------------------------------ */
/* Proxy side: doorbells, access hints, the shadow and posted writes         */
/* ------------------------------------------------------------------------ */

/* How long a slow fake remote waits before it serves what is in the ring */
#define FAKE_SLOW_MS        300

/* Where the doorbell cases put theirs */
#define DOORBELL_OFFSET     0x100

/*
 * A BAR read the fake answers with every notification it sent so far: the
 * proxy has taken them all by the time the read completes. Returns what
 * the read gave.
 */
static uint32_t proxy_sync(ProxyTest *t)
{
    return qpci_io_readl(t->dev, t->bar, 0x40);
}

/* How many times @ev was signalled since the last call */
static uint64_t eventfd_count(int ev)
{
    eventfd_t count = 0;

    if (eventfd_read(ev, &count) < 0) {
        g_assert_cmpint(errno, ==, EAGAIN);
        return 0;
    }
    return count;
}

static int test_eventfd_new(void)
{
    int ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    g_assert_cmpint(ev, >=, 0);
    return ev;
}

static void init_ioeventfd(MPQemuMsg *m, uint8_t flags, uint8_t region,
                           uint64_t offset, uint8_t size, uint64_t data,
                           int fd)
{
    mpqemu_msg_init(m, MPQEMU_CMD_IOEVENTFD, 0, 0, sizeof(MPQemuIoeventfd));
    m->u.ioeventfd.offset = cpu_to_le64(offset);
    m->u.ioeventfd.data = cpu_to_le64(data);
    m->u.ioeventfd.region = region;
    m->u.ioeventfd.size = size;
    m->u.ioeventfd.flags = flags;
    if (fd >= 0) {
        m->hdr.num_fds = 1;
        m->fds[0] = fd;
    }
}

/* Have the fake hand the proxy a doorbell, which the proxy must take */
static void proxy_add_doorbell(ProxyTest *t, uint64_t offset, uint8_t size,
                               bool match, uint64_t data, int ev)
{
    MPQemuMsg m;

    init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD |
                   (match ? MPQEMU_IOEVENTFD_DATAMATCH : 0), 0, offset, size,
                   data, ev);
    fake_notify(t->fake, &m);
    g_assert_cmphex(proxy_sync(t), ==, fake_bar_value(0x40));
}

/*
 * A doorbell: writes that match it signal the remote's eventfd directly,
 * and nothing of them goes through the ring; other writes do
 */
static void test_proxy_ioeventfd_valid(void)
{
    const uint64_t features = MPQEMU_FEATURE_RING | MPQEMU_FEATURE_IOEVENTFD;
    ProxyTest t;
    MPQemuMsg m;
    int ev = test_eventfd_new(), ev_match = test_eventfd_new();
    unsigned int writes;
    uint32_t seq;

    proxy_test_start_ring_fake(&t, fake_ring_new(RING_ANSWER, features), "");
    g_assert_cmphex(fake_counter64(t.fake, &t.fake->offered) & features, ==,
                    features);
    /* doorbells have no hints: the proxy does not ask for them */
    g_assert_cmpuint(fake_counter(t.fake, &t.fake->hint_requests), ==, 0);

    proxy_add_doorbell(&t, DOORBELL_OFFSET, 4, false, 0, ev);
    writes = fake_counter(t.fake, &t.fake->bar_writes);
    seq = fake_req_seq(t.fake);
    qpci_io_writel(t.dev, t.bar, DOORBELL_OFFSET, 0x1234);
    g_assert_cmpuint(eventfd_count(ev), ==, 1);
    for (int i = 0; i < 3; i++) {
        qpci_io_writel(t.dev, t.bar, DOORBELL_OFFSET, i);
    }
    g_assert_cmpuint(eventfd_count(ev), ==, 3);
    g_assert_cmpuint(fake_req_seq(t.fake), ==, seq);
    g_assert_cmpuint(fake_counter(t.fake, &t.fake->bar_writes), ==, writes);

    /* next to it, or of another size: a register write like any other */
    qpci_io_writel(t.dev, t.bar, DOORBELL_OFFSET + 4, 0x5678);
    qpci_io_writew(t.dev, t.bar, DOORBELL_OFFSET, 0x9abc);
    g_assert_cmpuint(eventfd_count(ev), ==, 0);
    g_assert_cmpuint(fake_req_seq(t.fake), ==, seq + 2);
    g_assert_cmpuint(fake_counter(t.fake, &t.fake->bar_writes), ==,
                     writes + 2);
    g_assert_cmphex(fake_ring_log(t.fake, -1).size, ==, 2);
    g_assert_cmphex(fake_ring_log(t.fake, -1).value, ==, 0x9abc);

    /* a doorbell for one value only */
    proxy_add_doorbell(&t, 0x200, 4, true, 7, ev_match);
    seq = fake_req_seq(t.fake);
    qpci_io_writel(t.dev, t.bar, 0x200, 7);
    g_assert_cmpuint(eventfd_count(ev_match), ==, 1);
    g_assert_cmpuint(fake_req_seq(t.fake), ==, seq);
    qpci_io_writel(t.dev, t.bar, 0x200, 8);
    g_assert_cmpuint(eventfd_count(ev_match), ==, 0);
    g_assert_cmpuint(fake_req_seq(t.fake), ==, seq + 1);
    g_assert_cmphex(fake_ring_log(t.fake, -1).value, ==, 8);

    /* removed: the writes go to the ring again */
    init_ioeventfd(&m, 0, 0, DOORBELL_OFFSET, 4, 0, -1);
    fake_notify(t.fake, &m);
    g_assert_cmphex(proxy_sync(&t), ==, fake_bar_value(0x40));
    seq = fake_req_seq(t.fake);
    qpci_io_writel(t.dev, t.bar, DOORBELL_OFFSET, 0x4321);
    g_assert_cmpuint(eventfd_count(ev), ==, 0);
    g_assert_cmpuint(fake_req_seq(t.fake), ==, seq + 1);
    g_assert_cmphex(fake_ring_log(t.fake, -1).offset, ==, DOORBELL_OFFSET);
    /* ... and the other one is still there */
    qpci_io_writel(t.dev, t.bar, 0x200, 7);
    g_assert_cmpuint(eventfd_count(ev_match), ==, 1);

    g_assert_cmphex(qpci_config_readw(t.dev, PCI_VENDOR_ID), ==, FAKE_VENDOR);
    g_assert_false(fake_wait_done(t.fake, 0));
    proxy_test_end(&t);
    close(ev);
    close(ev_match);
}

/* The doorbells a remote must not hand out */
typedef enum BadDoorbell {
    DOORBELL_NOT_EVENTFD,
    DOORBELL_OUTSIDE,
    DOORBELL_NO_REGION,
    DOORBELL_BAD_SIZE,
    DOORBELL_OVERLAP,
    DOORBELL_NOT_NEGOTIATED,
    DOORBELL_UNKNOWN_REMOVAL,
    DOORBELL_BAD_FLAGS,
    DOORBELL_TOO_MANY,
} BadDoorbell;

/*
 * A hostile doorbell: the proxy takes its device offline (and drops the
 * doorbells it had), the main QEMU goes on
 */
static void test_proxy_ioeventfd_hostile(gconstpointer data)
{
    BadDoorbell bad = GPOINTER_TO_INT(data);
    uint64_t features = MPQEMU_FEATURE_RING | MPQEMU_FEATURE_IOEVENTFD;
    ProxyTest t;
    MPQemuMsg m;
    int ev = test_eventfd_new(), other = test_eventfd_new();
    int probe = -1, pipe_end = -1;
    uint32_t value;

    if (bad == DOORBELL_NOT_NEGOTIATED) {
        features = MPQEMU_FEATURE_RING;
    }
    proxy_test_start_ring_fake(&t, fake_ring_new(RING_ANSWER, features), "");
    if (bad == DOORBELL_OVERLAP || bad == DOORBELL_TOO_MANY) {
        proxy_add_doorbell(&t, DOORBELL_OFFSET, 4, false, 0, ev);
        qpci_io_writel(t.dev, t.bar, DOORBELL_OFFSET, 1);
        g_assert_cmpuint(eventfd_count(ev), ==, 1);
    }
    if (bad == DOORBELL_TOO_MANY) {
        /* as many as a device may have, all of them working */
        for (int i = 1; i < MPQEMU_MAX_IOEVENTFDS; i++) {
            init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD, 0,
                           DOORBELL_OFFSET + 4 * i, 4, 0, other);
            fake_notify(t.fake, &m);
        }
        g_assert_cmphex(proxy_sync(&t), ==, fake_bar_value(0x40));
        qpci_io_writel(t.dev, t.bar, DOORBELL_OFFSET, 1);
        qpci_io_writel(t.dev, t.bar,
                       DOORBELL_OFFSET + 4 * (MPQEMU_MAX_IOEVENTFDS - 1), 1);
        g_assert_cmpuint(eventfd_count(ev), ==, 1);
        g_assert_cmpuint(eventfd_count(other), ==, 1);
    }

    switch (bad) {
    case DOORBELL_NOT_EVENTFD:
        pipe_end = probe_fd_new(&probe);
        init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD, 0, DOORBELL_OFFSET, 4, 0,
                       pipe_end);
        break;
    case DOORBELL_OUTSIDE:
        init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD, 0, FAKE_BAR_SIZE - 2, 4, 0,
                       other);
        break;
    case DOORBELL_NO_REGION:
        init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD, 2, 0, 4, 0, other);
        break;
    case DOORBELL_BAD_SIZE:
        init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD, 0, DOORBELL_OFFSET, 3, 0,
                       other);
        break;
    case DOORBELL_OVERLAP:
        /* KVM cannot tell it from the first one for a write of 5 */
        init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD | MPQEMU_IOEVENTFD_DATAMATCH,
                       0, DOORBELL_OFFSET, 4, 5, other);
        break;
    case DOORBELL_NOT_NEGOTIATED:
        init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD, 0, DOORBELL_OFFSET, 4, 0,
                       other);
        break;
    case DOORBELL_UNKNOWN_REMOVAL:
        init_ioeventfd(&m, 0, 0, DOORBELL_OFFSET, 4, 0, -1);
        break;
    case DOORBELL_BAD_FLAGS:
        init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD | 0x80, 0, DOORBELL_OFFSET, 4,
                       0, other);
        break;
    case DOORBELL_TOO_MANY:
        init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD, 0, 0, 4, 0, other);
        break;
    }
    fake_notify(t.fake, &m);
    if (pipe_end >= 0) {
        close(pipe_end);
    }

    /* the proxy may have failed before this read or after it */
    value = proxy_sync(&t);
    g_assert_true(value == fake_bar_value(0x40) || value == 0xffffffff);
    proxy_check_offline(&t);
    g_test_message("the proxy %s the connection",
                   fake_wait_done(t.fake, 200) ? "closed" : "kept");

    /* what the proxy refused, it did not keep */
    if (probe >= 0) {
        g_assert_true(probe_fd_closed(probe, IO_TIMEOUT_MS));
    }
    /* and its doorbells went with the device */
    qpci_io_writel(t.dev, t.bar, DOORBELL_OFFSET, 2);
    g_assert_cmpuint(eventfd_count(ev), ==, 0);
    g_assert_cmpuint(eventfd_count(other), ==, 0);
    proxy_test_end(&t);
    close(ev);
    close(other);
}

/* The access hints a remote must not declare */
typedef enum BadHints {
    HINTS_TOO_MANY,
    HINTS_SHADOW_TOO_BIG,
    HINTS_OUTSIDE,
    HINTS_WRAP,
    HINTS_NO_REGION,
    HINTS_UNKNOWN_KIND,
    HINTS_SHADOW_BEYOND_AREA,
    HINTS_SHADOW_MISALIGNED,
    HINTS_SHADOW_BAD_WIDTH,
    HINTS_SHADOW_NOT_NEGOTIATED,
    HINTS_SERIAL_NOT_NEGOTIATED,
    HINTS__MAX,
} BadHints;

static FakeRemote *fake_bad_hints_new(BadHints bad)
{
    uint64_t features = HINT_FEATURES;
    FakeRemote *f;
    MPQemuAccessHint *h;

    if (bad == HINTS_SHADOW_NOT_NEGOTIATED) {
        features &= ~MPQEMU_FEATURE_SHADOW;
    }
    f = fake_ring_new(RING_ANSWER, features);
    /* a good hint first: one bad hint spoils them all */
    fake_add_hint(f, MPQEMU_HINT_SYNC_WRITE, 0, 0x80, 4);
    switch (bad) {
    case HINTS_TOO_MANY:
        while (le32_to_cpu(f->hints.nr_hints) < MPQEMU_MAX_HINTS) {
            fake_add_hint(f, MPQEMU_HINT_SYNC_WRITE, 0, 0x80, 4);
        }
        f->hints.nr_hints = cpu_to_le32(MPQEMU_MAX_HINTS + 1);
        break;
    case HINTS_SHADOW_TOO_BIG:
        f->hints.shadow_size = cpu_to_le32(MPQEMU_SHADOW_MAX + 1);
        break;
    case HINTS_OUTSIDE:
        fake_add_hint(f, MPQEMU_HINT_SYNC_WRITE, 0, FAKE_BAR_SIZE - 2, 4);
        break;
    case HINTS_WRAP:
        fake_add_hint(f, MPQEMU_HINT_SYNC_WRITE, 0, UINT64_MAX - 1, 4);
        break;
    case HINTS_NO_REGION:
        fake_add_hint(f, MPQEMU_HINT_SYNC_WRITE, 1, 0, 4);
        break;
    case HINTS_UNKNOWN_KIND:
        fake_add_hint(f, MPQEMU_HINT_SERIAL_WRITE + 1, 0, 0, 4);
        break;
    case HINTS_SHADOW_BEYOND_AREA:
        h = fake_add_shadow(f, 0x200, 16, 0, 4, 0, 0, 0);
        h->shadow_offset = cpu_to_le32(8);
        break;
    case HINTS_SHADOW_MISALIGNED:
        fake_add_shadow(f, 0x202, 16, 0, 4, 0, 0, 0);
        break;
    case HINTS_SHADOW_BAD_WIDTH:
        fake_add_shadow(f, 0x200, 16, 0, 3, 0, 0, 0);
        break;
    case HINTS_SHADOW_NOT_NEGOTIATED:
        fake_add_shadow(f, 0x200, 16, 0, 4, 0, 0, 0);
        break;
    case HINTS_SERIAL_NOT_NEGOTIATED:
        /* the fake grants posted writes, but not serial ones */
        fake_add_hint(f, MPQEMU_HINT_SERIAL_WRITE, 0, 0x40, 4);
        break;
    case HINTS__MAX:
        g_assert_not_reached();
    }
    return f;
}

/* device_add of a proxy that talks to @f; returns the error, if any */
static char *proxy_device_add(QTestState *qts, const char *id, FakeRemote *f)
{
    QDict *resp;
    char *err = NULL;

    fake_remote_start(f);
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': {"
                     "'driver': 'x-pci-proxy-dev', 'id': %s, "
                     "'addr': '04.0', 'socket': %s}}", id, f->path);
    g_assert_nonnull(resp);
    if (qdict_haskey(resp, "error")) {
        err = g_strdup(qdict_get_str(qdict_get_qdict(resp, "error"),
                                     "desc"));
    } else {
        g_assert_true(qdict_haskey(resp, "return"));
    }
    qobject_unref(resp);
    return err;
}

/*
 * Access hints that do not fit the device: the proxy refuses to start,
 * says why, and the main QEMU goes on (and takes a good proxy later)
 */
static void test_proxy_hints_hostile(void)
{
    QTestState *qts;
    FakeRemote *f;
    QPCIBus *bus;
    QPCIDevice *dev;
    g_autofree char *err = NULL;

    qts = qtest_init("-machine pc "
                     "-object memory-backend-memfd,id=mem,size=64M "
                     "-machine memory-backend=mem -m 64");
    for (int bad = 0; bad < HINTS__MAX; bad++) {
        g_autofree char *id = g_strdup_printf("bad%d", bad);
        g_autofree char *msg = NULL;

        f = fake_bad_hints_new(bad);
        msg = proxy_device_add(qts, id, f);
        g_test_message("case %d: %s", bad, msg);
        g_assert_nonnull(msg);
        g_assert_nonnull(strstr(msg, "access hint"));
        /* it went no further, and hung up */
        g_assert_true(fake_wait_done(f, IO_TIMEOUT_MS));
        g_assert_cmpuint(fake_counter(f, &f->hint_requests), ==, 1);
        g_assert_cmpuint(fake_counter(f, &f->ring_setups), ==, 0);
        fake_remote_free(f);
        check_alive(qts);
    }

    /* the slot and the id are still free for a proxy whose hints are fine */
    f = fake_ring_new(RING_ANSWER, HINT_FEATURES);
    fake_add_hint(f, MPQEMU_HINT_SYNC_WRITE, 0, 0x80, 4);
    fake_add_shadow(f, 0x200, 16, 0, 4, 0, 0, 0);
    err = proxy_device_add(qts, "bad0", f);
    g_assert_null(err);
    g_assert_cmpuint(fake_counter(f, &f->ring_setups), ==, 1);
    bus = qpci_new_pc(qts, NULL);
    dev = qpci_device_find(bus, QPCI_DEVFN(4, 0));
    g_assert_nonnull(dev);
    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, FAKE_VENDOR);
    g_free(dev);
    qpci_free_pc(bus);
    check_alive(qts);
    qtest_quit(qts);
    fake_remote_free(f);
}

/*
 * Shadowed registers are read from the copy the remote keeps, when it is
 * current (shadow_gen even) and nothing is left in the ring; else from the
 * device
 */
static void test_proxy_shadow_read(void)
{
    const uint32_t dword = 0xcafef00d;
    const uint64_t qword = 0x1122334455667788ULL;
    ProxyTest t;
    FakeRemote *f;
    MPQemuRing *ring;
    MPQemuRingEntry entry;
    uint8_t *shadow;
    unsigned int reads;
    uint32_t seq;

    f = fake_ring_new(RING_ANSWER, HINT_FEATURES);
    /* dwords at 0x200-0x20f, and 0x300-0x307 as memory */
    fake_add_shadow(f, 0x200, 0x10, 0, 4, 0, 0, 0);
    fake_add_shadow(f, 0x300, 8, 16, 8, MPQEMU_SHADOW_BYTES, 1, 8);
    g_assert_cmpuint(le32_to_cpu(f->hints.shadow_size), ==, 24);
    proxy_test_start_ring_fake(&t, f, "");
    g_assert_cmpuint(fake_counter(f, &f->hint_requests), ==, 1);
    g_assert_cmpuint(f->ring_size, ==,
                     MPQEMU_RING_SIZE + qemu_real_host_page_size());
    ring = f->ring;
    shadow = mpqemu_ring_shadow(ring);

    /* a stale copy is not used */
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x204), ==,
                    fake_bar_value(0x204));
    g_assert_cmpuint(fake_counter(f, &f->ring_reads), ==, 1);

    /* the remote publishes the registers */
    stl_le_p(shadow + 4, dword);
    stq_le_p(shadow + 16, qword);
    /* the copy before the generation that says it is current */
    smp_wmb();
    qatomic_store_release(&ring->shadow_gen, 2);
    seq = fake_req_seq(f);
    reads = fake_counter(f, &f->ring_reads);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x204), ==, dword);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x200), ==, 0);
    g_assert_cmphex(qpci_io_readb(t.dev, t.bar, 0x301), ==, 0x77);
    g_assert_cmphex(qpci_io_readw(t.dev, t.bar, 0x302), ==, 0x5566);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x304), ==, 0x11223344);
    g_assert_cmphex(qpci_io_readq(t.dev, t.bar, 0x300), ==, qword);
    /* none of this went to the remote */
    g_assert_cmpuint(fake_req_seq(f), ==, seq);
    g_assert_cmpuint(fake_counter(f, &f->ring_reads), ==, reads);

    /* not the width the copy holds, or outside it: from the device */
    g_assert_cmphex(qpci_io_readw(t.dev, t.bar, 0x204), ==,
                    fake_bar_value(0x204) & 0xffff);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x210), ==,
                    fake_bar_value(0x210));
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x2fc), ==,
                    fake_bar_value(0x2fc));
    g_assert_cmpuint(fake_req_seq(f), ==, seq + 3);

    /* stale again: from the device; current again: from the copy */
    qatomic_store_release(&ring->shadow_gen, 3);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x204), ==,
                    fake_bar_value(0x204));
    g_assert_cmpuint(fake_req_seq(f), ==, seq + 4);
    qatomic_store_release(&ring->shadow_gen, 4);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x204), ==, dword);
    g_assert_cmpuint(fake_req_seq(f), ==, seq + 4);

    /*
     * A posted write the remote has not served yet may change the
     * registers: the read after it goes to the device, behind it. The
     * fake serves neither before the read is in the ring too.
     */
    g_mutex_lock(&f->lock);
    f->ring_hold = true;
    f->ring_hold_seq = seq + 6;
    g_mutex_unlock(&f->lock);
    qpci_io_writel(t.dev, t.bar, 0x208, 0x55);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0x204), ==,
                    fake_bar_value(0x204));
    g_assert_cmpuint(fake_req_seq(f), ==, seq + 6);
    entry = fake_ring_log(f, -2);
    g_assert_cmpuint(entry.cmd, ==, MPQEMU_CMD_BAR_WRITE);
    g_assert_cmphex(entry.flags, ==, MPQEMU_RING_POSTED);
    entry = fake_ring_log(f, -1);
    g_assert_cmpuint(entry.cmd, ==, MPQEMU_CMD_BAR_READ);
    g_assert_cmphex(entry.offset, ==, 0x204);

    g_assert_false(fake_wait_done(f, 0));
    proxy_test_end(&t);
}

/* Time one 32-bit write to the proxy's BAR */
static int64_t proxy_timed_write(ProxyTest *t, uint64_t offset,
                                 uint32_t value)
{
    int64_t start = g_get_monotonic_time();
    int64_t elapsed_ms;

    qpci_io_writel(t->dev, t->bar, offset, value);
    elapsed_ms = (g_get_monotonic_time() - start) / 1000;
    g_test_message("the write at 0x%" PRIx64 " took %" PRId64 " ms", offset,
                   elapsed_ms);
    return elapsed_ms;
}

/*
 * Posted writes do not wait: a remote that never serves the ring still
 * takes a ring's worth of them at once. The next one waits for room, and
 * the proxy gives up when its timeout expires.
 */
static void test_proxy_posted_ring_full(void)
{
    ProxyTest t;
    FakeRemote *f;
    MPQemuRing *ring;
    int64_t start, elapsed_ms;

    f = fake_ring_new(RING_NEVER, MPQEMU_FEATURE_RING |
                      MPQEMU_FEATURE_POSTED_WRITES);
    proxy_test_start_ring_fake(&t, f, ",timeout=1000");
    g_assert_cmpuint(fake_counter(f, &f->hint_requests), ==, 1);
    ring = f->ring;

    start = g_get_monotonic_time();
    for (int i = 0; i < MPQEMU_RING_ENTRIES; i++) {
        qpci_io_writel(t.dev, t.bar, i * 4, 0xc0de0000 | i);
    }
    elapsed_ms = (g_get_monotonic_time() - start) / 1000;
    g_test_message("%d posted writes took %" PRId64 " ms",
                   MPQEMU_RING_ENTRIES, elapsed_ms);
    /* had any of them waited, it would have waited out the timeout */
    g_assert_cmpint(elapsed_ms, <, 900);
    check_alive(t.qts);

    /* all of them are in the ring, in order, posted */
    g_assert_cmpuint(fake_req_seq(f), ==, MPQEMU_RING_ENTRIES);
    for (uint32_t seq = 1; seq <= MPQEMU_RING_ENTRIES; seq++) {
        MPQemuRingEntry *e = mpqemu_ring_entry(ring, seq);

        g_assert_cmpuint(e->req_seq, ==, seq);
        g_assert_cmpuint(e->resp_seq, ==, 0);

        g_assert_cmpuint(e->cmd, ==, MPQEMU_CMD_BAR_WRITE);
        g_assert_cmpuint(e->region, ==, 0);
        g_assert_cmpuint(e->size, ==, 4);
        g_assert_cmphex(e->flags, ==, MPQEMU_RING_POSTED);
        g_assert_cmphex(e->offset, ==, (seq - 1) * 4);
        g_assert_cmphex(e->value, ==, 0xc0de0000 | (seq - 1));
    }

    /* no room for one more: it waits, in vain */
    elapsed_ms = proxy_timed_write(&t, 0x200, 0xdead);
    g_assert_cmpint(elapsed_ms, >=, 950);
    g_assert_cmpint(elapsed_ms, <, 3000);
    g_assert_cmpuint(fake_req_seq(f), ==, MPQEMU_RING_ENTRIES);
    g_assert_cmphex(ring->entry[1].value, ==, 0xc0de0000);
    proxy_check_failed(&t, "timeout");
    g_assert_cmpuint(fake_counter(f, &f->bar_writes), ==, 0);
    proxy_test_end(&t);
}

static void fake_set_irq(ProxyTest *t, uint32_t level)
{
    MPQemuMsg m;

    mpqemu_msg_init(&m, MPQEMU_CMD_SET_IRQ, 0, 0, sizeof(MPQemuSetIrq));
    m.u.set_irq.level = cpu_to_le32(level);
    fake_notify(t->fake, &m);
    g_assert_cmphex(proxy_sync(t), ==, fake_bar_value(0x40));
}

#define MSI_CAP         0x40
#define MSI_GOOD_ADDR   0x100000    /* guest RAM: a delivered MSI lands here */
#define MSI_FORGED_ADDR 0x200000
#define MSI_GOOD_DATA   0x1234

static void fake_msi(ProxyTest *t, uint64_t address, uint32_t data)
{
    MPQemuMsg m;

    mpqemu_msg_init(&m, MPQEMU_CMD_MSI, 0, 0, sizeof(MPQemuMsi));
    m.u.msi.address = cpu_to_le64(address);
    m.u.msi.data = cpu_to_le32(data);
    fake_notify(t->fake, &m);
    proxy_sync(t);
}

/* A programmed MSI arrives: its write lands in guest RAM */
static void expect_msi_delivered(ProxyTest *t)
{
    int64_t deadline = g_get_monotonic_time() +
                       IO_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;

    qtest_writel(t->qts, MSI_GOOD_ADDR, 0);
    fake_msi(t, MSI_GOOD_ADDR, MSI_GOOD_DATA);
    while (qtest_readl(t->qts, MSI_GOOD_ADDR) != MSI_GOOD_DATA &&
           g_get_monotonic_time() < deadline) {
        g_usleep(1000);
    }
    g_assert_cmphex(qtest_readl(t->qts, MSI_GOOD_ADDR), ==, MSI_GOOD_DATA);
}

static uint64_t proxy_refused_msis(ProxyTest *t)
{
    QDict *resp = qtest_qmp(t->qts, "{'execute': 'qom-get', 'arguments': "
                            "{'path': '/machine/peripheral/p0', "
                            "'property': 'x-refused-msis'}}");
    uint64_t n;

    g_assert_true(qdict_haskey(resp, "return"));
    n = qdict_get_int(resp, "return");
    qobject_unref(resp);
    return n;
}

/*
 * A remote may send only the MSI messages the guest programmed: any other
 * address or data is refused (nothing is written) and counted, and the
 * device goes on working.
 */
static void test_proxy_msi_forged(void)
{
    FakeRemote *f = fake_remote_new(REPLY_OK, MPQEMU_VERSION, false);
    ProxyTest t;

    f->config[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
    f->config[PCI_CAPABILITY_LIST] = MSI_CAP;
    f->config[MSI_CAP] = PCI_CAP_ID_MSI;
    stw_le_p(f->config + MSI_CAP + PCI_MSI_FLAGS, PCI_MSI_FLAGS_64BIT);
    proxy_test_start_fake(&t, f, "");

    /* not programmed yet: nothing goes through */
    qtest_writel(t.qts, MSI_GOOD_ADDR, 0);
    fake_msi(&t, MSI_GOOD_ADDR, MSI_GOOD_DATA);
    fake_msi(&t, 0, 0);

    qpci_config_writel(t.dev, MSI_CAP + PCI_MSI_ADDRESS_LO, MSI_GOOD_ADDR);
    qpci_config_writel(t.dev, MSI_CAP + PCI_MSI_ADDRESS_HI, 0);
    qpci_config_writew(t.dev, MSI_CAP + PCI_MSI_DATA_64, MSI_GOOD_DATA);
    qpci_config_writew(t.dev, MSI_CAP + PCI_MSI_FLAGS,
                       PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_ENABLE);
    expect_msi_delivered(&t);
    g_assert_cmpuint(proxy_refused_msis(&t), ==, 2);
    g_assert_cmphex(qtest_readl(t.qts, 0), ==, 0);

    /* another address, another vector than the one programmed */
    qtest_writel(t.qts, MSI_FORGED_ADDR, 0);
    fake_msi(&t, MSI_FORGED_ADDR, MSI_GOOD_DATA);
    fake_msi(&t, MSI_GOOD_ADDR | 4, MSI_GOOD_DATA);
    qtest_writel(t.qts, MSI_GOOD_ADDR, 0);
    fake_msi(&t, MSI_GOOD_ADDR, MSI_GOOD_DATA + 1);
    fake_msi(&t, MSI_GOOD_ADDR, 0x10000 | MSI_GOOD_DATA);
    expect_msi_delivered(&t);
    g_assert_cmpuint(proxy_refused_msis(&t), ==, 6);
    g_assert_cmphex(qtest_readl(t.qts, MSI_FORGED_ADDR), ==, 0);

    /* the guest moves it: one the device sent before it saw that is good */
    qpci_config_writew(t.dev, MSI_CAP + PCI_MSI_DATA_64, MSI_GOOD_DATA + 2);
    expect_msi_delivered(&t);
    qpci_config_writew(t.dev, MSI_CAP + PCI_MSI_DATA_64, MSI_GOOD_DATA);

    /* disabled, or after a reset, nothing is */
    qpci_config_writew(t.dev, MSI_CAP + PCI_MSI_FLAGS, PCI_MSI_FLAGS_64BIT);
    qtest_writel(t.qts, MSI_GOOD_ADDR, 0);
    fake_msi(&t, MSI_GOOD_ADDR, MSI_GOOD_DATA + 2);
    g_assert_cmpuint(proxy_refused_msis(&t), ==, 7);
    qpci_config_writew(t.dev, MSI_CAP + PCI_MSI_FLAGS,
                       PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_ENABLE);
    expect_msi_delivered(&t);
    qtest_system_reset(t.qts);
    qpci_device_enable(t.dev);
    t.bar = qpci_iomap(t.dev, 0, NULL);
    fake_msi(&t, MSI_GOOD_ADDR, MSI_GOOD_DATA);
    g_assert_cmpuint(proxy_refused_msis(&t), ==, 8);
    g_assert_cmphex(qtest_readl(t.qts, MSI_FORGED_ADDR), ==, 0);
    g_assert_cmpstr(f->errors->str, ==, "");
    proxy_test_end(&t);
}

/*
 * Writes the remote keeps synchronous wait for the answer, and so do all
 * writes while the device holds its interrupt line up; the others do not
 */
static void test_proxy_posted_sync_write(void)
{
    ProxyTest t;
    FakeRemote *f;
    MPQemuRingEntry entry;
    int64_t elapsed_ms;
    unsigned int n;

    f = fake_ring_new(RING_ANSWER, MPQEMU_FEATURE_RING |
                      MPQEMU_FEATURE_POSTED_WRITES);
    fake_add_hint(f, MPQEMU_HINT_SYNC_WRITE, 0, 0x80, 4);
    fake_add_hint(f, MPQEMU_HINT_SYNC_WRITE, 0, 0x93, 1);
    f->ring_delay_ms = FAKE_SLOW_MS;
    proxy_test_start_ring_fake(&t, f, "");

    /* the hinted register: answered, and only then done */
    elapsed_ms = proxy_timed_write(&t, 0x80, 0x5a);
    g_assert_cmpint(elapsed_ms, >=, FAKE_SLOW_MS - 20);
    entry = fake_ring_log(f, -1);
    g_assert_cmphex(entry.offset, ==, 0x80);
    g_assert_cmphex(entry.value, ==, 0x5a);
    g_assert_cmphex(entry.flags, ==, 0);

    /* a wider write that covers a hinted byte waits as well */
    elapsed_ms = proxy_timed_write(&t, 0x90, 0x5e);
    g_assert_cmpint(elapsed_ms, >=, FAKE_SLOW_MS - 20);
    entry = fake_ring_log(f, -1);
    g_assert_cmphex(entry.offset, ==, 0x90);
    g_assert_cmphex(entry.flags, ==, 0);
    n = fake_counter(f, &f->bar_writes);

    /* the register next to it: posted */
    elapsed_ms = proxy_timed_write(&t, 0x84, 0x5b);
    g_assert_cmpint(elapsed_ms, <, FAKE_SLOW_MS / 2);
    g_assert_cmpuint(fake_counter(f, &f->bar_writes), ==, n);

    /* INTx up: every write waits */
    fake_set_irq(&t, 1);
    entry = fake_ring_log(f, -2);
    g_assert_cmphex(entry.offset, ==, 0x84);
    g_assert_cmphex(entry.flags, ==, MPQEMU_RING_POSTED);
    elapsed_ms = proxy_timed_write(&t, 0x88, 0x5c);
    g_assert_cmpint(elapsed_ms, >=, FAKE_SLOW_MS - 20);
    entry = fake_ring_log(f, -1);
    g_assert_cmphex(entry.offset, ==, 0x88);
    g_assert_cmphex(entry.flags, ==, 0);

    /* INTx down: posted again */
    fake_set_irq(&t, 0);
    elapsed_ms = proxy_timed_write(&t, 0x8c, 0x5d);
    g_assert_cmpint(elapsed_ms, <, FAKE_SLOW_MS / 2);
    /* a request on the socket waits for the ring to drain */
    n = fake_counter(f, &f->bar_writes);
    g_assert_cmphex(qpci_config_readw(t.dev, PCI_VENDOR_ID), ==, FAKE_VENDOR);
    g_assert_cmpuint(fake_counter(f, &f->bar_writes), ==, n + 1);
    entry = fake_ring_log(f, -1);
    g_assert_cmphex(entry.offset, ==, 0x8c);
    g_assert_cmphex(entry.flags, ==, MPQEMU_RING_POSTED);

    g_assert_false(fake_wait_done(f, 0));
    proxy_test_end(&t);
}

/*
 * Writes the remote wants serial are posted, but one at a time: the next
 * one waits until the remote served the one before; other writes between
 * them do not wait. Without posted writes they all wait.
 */
static void test_proxy_posted_serial_write(void)
{
    const uint64_t features = MPQEMU_FEATURE_RING |
                              MPQEMU_FEATURE_POSTED_WRITES |
                              MPQEMU_FEATURE_SERIAL_WRITES;
    ProxyTest t;
    FakeRemote *f;
    MPQemuRingEntry entry;
    int64_t start, elapsed_ms;
    unsigned int n;

    f = fake_ring_new(RING_ANSWER, features);
    fake_add_hint(f, MPQEMU_HINT_SERIAL_WRITE, 0, 0x80, 4);
    f->ring_delay_ms = FAKE_SLOW_MS;
    proxy_test_start_ring_fake(&t, f, "");
    g_assert_cmphex(fake_counter64(f, &f->offered) & features, ==, features);
    n = fake_counter(f, &f->bar_writes);

    /* the first serial write and a plain one after it: both posted */
    start = g_get_monotonic_time();
    g_assert_cmpint(proxy_timed_write(&t, 0x80, 0x51), <, FAKE_SLOW_MS / 2);
    g_assert_cmpint(proxy_timed_write(&t, 0x84, 0x52), <, FAKE_SLOW_MS / 2);
    g_assert_cmpuint(fake_counter(f, &f->bar_writes), ==, n);

    /* the next serial write waits for the first, not for itself */
    proxy_timed_write(&t, 0x80, 0x53);
    elapsed_ms = (g_get_monotonic_time() - start) / 1000;
    g_assert_cmpint(elapsed_ms, >=, FAKE_SLOW_MS - 20);
    g_assert_cmpuint(fake_counter(f, &f->bar_writes), ==, n + 2);
    for (int i = 0; i < 2; i++) {
        entry = fake_ring_log(f, -2 + i);
        g_assert_cmphex(entry.offset, ==, 0x80 + 4 * i);
        g_assert_cmphex(entry.value, ==, 0x51 + i);
        g_assert_cmphex(entry.flags, ==, MPQEMU_RING_POSTED);
    }

    /* a read sees it done, and it was posted too */
    g_assert_cmphex(proxy_sync(&t), ==, fake_bar_value(0x40));
    g_assert_cmpuint(fake_counter(f, &f->bar_writes), ==, n + 3);
    entry = fake_ring_log(f, -2);
    g_assert_cmphex(entry.offset, ==, 0x80);
    g_assert_cmphex(entry.value, ==, 0x53);
    g_assert_cmphex(entry.flags, ==, MPQEMU_RING_POSTED);
    g_assert_false(fake_wait_done(f, 0));
    proxy_test_end(&t);

    /* posted-writes=off: neither offered nor posted */
    f = fake_ring_new(RING_ANSWER, features);
    proxy_test_start_ring_fake(&t, f, ",posted-writes=off");
    g_assert_cmphex(fake_counter64(f, &f->offered) &
                    (MPQEMU_FEATURE_POSTED_WRITES |
                     MPQEMU_FEATURE_SERIAL_WRITES), ==, 0);
    g_assert_cmpuint(fake_counter(f, &f->hint_requests), ==, 0);
    g_mutex_lock(&f->lock);
    f->ring_delay_ms = FAKE_SLOW_MS;
    g_mutex_unlock(&f->lock);
    g_assert_cmpint(proxy_timed_write(&t, 0x80, 0x54), >=, FAKE_SLOW_MS - 20);
    g_assert_false(fake_wait_done(f, 0));
    proxy_test_end(&t);
}

/* ------------------------------------------------------------------------ */
/* Proxy side: the notify eventfd                                           */
/* ------------------------------------------------------------------------ */

/*
 * Wait up to @ms for the proxy's INTx line to be @level. Meanwhile only
 * qtest and QMP run in the main QEMU: nothing that has the proxy read its
 * socket but its main loop, woken by what it watches.
 */
static bool proxy_wait_intx(ProxyTest *t, bool level, int ms)
{
    int64_t deadline = g_get_monotonic_time() + ms * G_TIME_SPAN_MILLISECOND;

    while (qtest_get_irq(t->qts, PROXY_TEST_IRQ) != level) {
        if (g_get_monotonic_time() > deadline) {
            return false;
        }
        g_usleep(1000);
    }
    return true;
}

/* Have the fake send SET_IRQ @level; see fake_notify_how() for @signal */
static void fake_send_irq(FakeRemote *f, uint32_t level, bool signal)
{
    MPQemuMsg m;

    mpqemu_msg_init(&m, MPQEMU_CMD_SET_IRQ, 0, 0, sizeof(MPQemuSetIrq));
    m.u.set_irq.level = cpu_to_le32(level);
    fake_notify_how(f, &m, signal);
}

/*
 * Wait up to @ms for the proxy to report its device failed, touching
 * neither the device nor its socket: QMP round trips bring the events in.
 * Returns the event, or NULL.
 */
static QDict *proxy_wait_failed_event(ProxyTest *t, int ms)
{
    int64_t deadline = g_get_monotonic_time() + ms * G_TIME_SPAN_MILLISECOND;
    QDict *event;

    while (!(event = qtest_qmp_event_ref(t->qts, "REMOTE_DEVICE_FAILED"))) {
        if (g_get_monotonic_time() > deadline) {
            return NULL;
        }
        g_usleep(1000);
        check_alive(t->qts);
    }
    return event;
}

/* A fake with a ring that grants NOTIFY_EVENTFD and @more, and its proxy */
static FakeRemote *proxy_test_start_notify(ProxyTest *t, uint64_t more)
{
    uint64_t features = MPQEMU_FEATURE_RING | MPQEMU_FEATURE_NOTIFY_EVENTFD |
                        more;
    FakeRemote *f = fake_ring_new(RING_ANSWER, features);

    proxy_test_start_ring_fake(t, f, ",timeout=5000");
    g_assert_cmphex(fake_counter64(f, &f->offered) & features, ==, features);
    /* the ring came with the flag, and a fourth descriptor: an eventfd */
    g_assert_cmphex(fake_counter(f, &f->ring_setup_flags), ==,
                    MPQEMU_RING_SETUP_NOTIFY_FD);
    g_assert_cmpuint(fake_counter(f, &f->ring_setup_fds), ==, 4);
    g_assert_cmpint(f->notify_fd, >=, 0);
    g_assert_true(fd_is_eventfd(f->notify_fd));
    /* which nothing signalled yet */
    g_assert_false(fd_readable(f->notify_fd, 0));
    g_assert_cmpuint(qatomic_read(&f->ring->notify_signalled), ==, 0);
    proxy_test_watch_intx(t);
    return f;
}

/*
 * (5) NOTIFY_EVENTFD granted: the proxy hands RING_SETUP a notify eventfd,
 * and its main loop applies each notification the remote signals there,
 * with no access to the device to carry it along. It takes the signal and
 * clears notify_signalled before it reads the socket, so the remote
 * signals the next notification too.
 */
static void test_proxy_ring_notify_eventfd(void)
{
    const int rounds = 8;
    ProxyTest t;
    FakeRemote *f = proxy_test_start_notify(&t, 0);
    unsigned int requests = fake_counter(f, &f->requests);
    uint32_t seq = fake_req_seq(f);

    for (int i = 0; i < rounds; i++) {
        bool level = !(i & 1);

        fake_send_irq(f, level, true);
        g_assert_true(proxy_wait_intx(&t, level, IO_TIMEOUT_MS));
        g_assert_cmpuint(qatomic_read(&f->ring->notify_signalled), ==, 0);
        g_assert_false(fd_readable(f->notify_fd, 0));
    }
    g_assert_cmpuint(fake_counter(f, &f->notify_signals), ==, rounds);
    g_assert_cmpuint(fake_counter(f, &f->notify_skipped), ==, 0);
    /* no request went to the device meanwhile */
    g_assert_cmpuint(fake_counter(f, &f->requests), ==, requests);
    g_assert_cmpuint(fake_req_seq(f), ==, seq);

    /* the device works on */
    g_assert_cmphex(proxy_sync(&t), ==, fake_bar_value(0x40));
    g_assert_cmphex(qpci_config_readw(t.dev, PCI_VENDOR_ID), ==, FAKE_VENDOR);
    g_assert_false(fake_wait_done(f, 0));
    proxy_test_end(&t);
}

/*
 * (6) a remote that sends notifications without signalling the eventfd:
 * the main loop, which does not watch the socket for them, does not learn
 * of them, and goes on all the same. The next one that is signalled wakes
 * it, and it applies all that waits on the socket, in order: a SET_IRQ, a
 * doorbell added and removed (removed first, it would be a protocol
 * violation), then another doorbell added, the signalled one.
 */
static void test_proxy_ring_notify_unsignalled(void)
{
    ProxyTest t;
    FakeRemote *f = proxy_test_start_notify(&t, MPQEMU_FEATURE_IOEVENTFD);
    int ev = test_eventfd_new(), ev_other = test_eventfd_new();
    MPQemuMsg m;
    uint32_t seq;

    fake_send_irq(f, 1, false);
    g_assert_false(proxy_wait_intx(&t, true, 200));
    init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD, 0, DOORBELL_OFFSET, 4, 0, ev);
    fake_notify_how(f, &m, false);
    init_ioeventfd(&m, 0, 0, DOORBELL_OFFSET, 4, 0, -1);
    fake_notify_how(f, &m, false);
    check_alive(t.qts);
    g_assert_false(qtest_get_irq(t.qts, PROXY_TEST_IRQ));
    g_assert_cmpuint(fake_counter(f, &f->notify_signals), ==, 0);

    init_ioeventfd(&m, MPQEMU_IOEVENTFD_ADD, 0, 0x200, 4, 0, ev_other);
    fake_notify(f, &m);
    g_assert_cmpuint(fake_counter(f, &f->notify_signals), ==, 1);
    g_assert_true(proxy_wait_intx(&t, true, IO_TIMEOUT_MS));
    g_assert_cmpuint(qatomic_read(&f->ring->notify_signalled), ==, 0);
    g_assert_false(fd_readable(f->notify_fd, 0));

    /* the doorbell added last is there, the one removed is not */
    seq = fake_req_seq(f);
    qpci_io_writel(t.dev, t.bar, 0x200, 1);
    g_assert_cmpuint(eventfd_count(ev_other), ==, 1);
    g_assert_cmpuint(fake_req_seq(f), ==, seq);
    qpci_io_writel(t.dev, t.bar, DOORBELL_OFFSET, 2);
    g_assert_cmpuint(eventfd_count(ev), ==, 0);
    g_assert_cmpuint(fake_req_seq(f), ==, seq + 1);
    g_assert_cmphex(fake_ring_log(f, -1).offset, ==, DOORBELL_OFFSET);

    /* nothing failed */
    g_assert_cmphex(proxy_sync(&t), ==, fake_bar_value(0x40));
    g_assert_true(qtest_get_irq(t.qts, PROXY_TEST_IRQ));
    g_assert_false(fake_wait_done(f, 0));
    proxy_test_end(&t);
    close(ev);
    close(ev_other);
}

/*
 * (7) with a notify eventfd, the main loop watches the socket for its end
 * only: a remote that hangs up is still noticed at once, with no access to
 * the device to find out, and the device fails, its interrupt going down.
 * So is one that shuts its end down for writing only (@data): nothing can
 * come from it any more, and a proxy that watches its socket for input
 * notices that at once too.
 */
static void test_proxy_ring_notify_hangup(gconstpointer data)
{
    bool half = GPOINTER_TO_INT(data);
    ProxyTest t;
    FakeRemote *f = proxy_test_start_notify(&t, 0);
    int64_t start, elapsed_ms;
    QDict *event;

    fake_send_irq(f, 1, true);
    g_assert_true(proxy_wait_intx(&t, true, IO_TIMEOUT_MS));

    start = g_get_monotonic_time();
    fake_hang_up(f, half);
    event = proxy_wait_failed_event(&t, IO_TIMEOUT_MS);
    elapsed_ms = (g_get_monotonic_time() - start) / 1000;
    if (!event) {
        /* not fatal, so that the tests after this one still run */
        g_test_message("FAIL: the proxy did not notice in %d ms that its "
                       "remote %s", IO_TIMEOUT_MS,
                       half ? "shut its end down for writing" : "hung up");
        g_test_fail();
        proxy_test_end(&t);     /* the fake ends as the main QEMU does */
        return;
    }
    g_test_message("the hang-up was noticed after %" PRId64 " ms",
                   elapsed_ms);
    g_assert_cmpint(elapsed_ms, <, 1000);
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(event, "data"), "device"),
                    ==, "p0");
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(event, "data"), "cause"),
                    ==, "disconnected");
    qobject_unref(event);
    g_assert_false(qtest_get_irq(t.qts, PROXY_TEST_IRQ));
    /* the proxy closed its end too */
    g_assert_true(fake_wait_done(f, IO_TIMEOUT_MS));
    proxy_check_offline(&t);
    proxy_test_end(&t);
}

/*
 * (8) a remote that does not grant NOTIFY_EVENTFD gets RING_SETUP as
 * before: no flag, three descriptors; and the main loop takes its
 * notifications from the socket, with no access to the device either
 */
static void test_proxy_ring_notify_not_granted(void)
{
    ProxyTest t;
    FakeRemote *f;
    unsigned int requests;

    proxy_test_start_ring(&t, RING_ANSWER, ",timeout=5000");
    f = t.fake;
    /* it was offered (not granted, though) */
    g_assert_cmphex(fake_counter64(f, &f->offered) &
                    MPQEMU_FEATURE_NOTIFY_EVENTFD, ==,
                    MPQEMU_FEATURE_NOTIFY_EVENTFD);
    g_assert_cmphex(fake_counter(f, &f->ring_setup_flags), ==, 0);
    g_assert_cmpuint(fake_counter(f, &f->ring_setup_fds), ==,
                     MPQEMU_RING_FDS);
    g_assert_cmpint(f->notify_fd, <, 0);
    proxy_test_watch_intx(&t);
    requests = fake_counter(f, &f->requests);

    fake_send_irq(f, 1, true);
    g_assert_true(proxy_wait_intx(&t, true, IO_TIMEOUT_MS));
    fake_send_irq(f, 0, true);
    g_assert_true(proxy_wait_intx(&t, false, IO_TIMEOUT_MS));
    g_assert_cmpuint(fake_counter(f, &f->requests), ==, requests);
    g_assert_cmpuint(fake_counter(f, &f->notify_signals), ==, 0);
    g_assert_cmphex(proxy_sync(&t), ==, fake_bar_value(0x40));
    g_assert_false(fake_wait_done(f, 0));
    proxy_test_end(&t);
}

/* ------------------------------------------------------------------------ */
/* Startup: the main QEMU must refuse a remote of another version           */
/* ------------------------------------------------------------------------ */

static void run_main_qemu_against(FakeRemote *f, int *status, char **err_out)
{
    const char *bin = g_getenv("QTEST_QEMU_BINARY");
    g_autofree char *dev = g_strdup_printf("x-pci-proxy-dev,id=p0,socket=%s",
                                           f->path);
    g_auto(GStrv) argv = NULL;
    g_autoptr(GError) gerr = NULL;
    GString *out = g_string_new("");
    int64_t deadline = g_get_monotonic_time() + 20 * G_TIME_SPAN_SECOND;
    GPid pid;
    int err_fd;
    pid_t ret;
    bool killed = false;

    g_assert_nonnull(bin);
    g_assert_true(g_shell_parse_argv(bin, NULL, &argv, &gerr));
    {
        const char *args[] = {
            "-machine", "pc", "-accel", "qtest", "-nodefaults",
            "-display", "none",
            "-object", "memory-backend-memfd,id=mem,size=64M",
            "-machine", "memory-backend=mem", "-m", "64",
            "-device", dev,
        };
        guint n = g_strv_length(argv);

        argv = g_renew(char *, argv, n + ARRAY_SIZE(args) + 1);
        for (int i = 0; i < ARRAY_SIZE(args); i++) {
            argv[n + i] = g_strdup(args[i]);
        }
        argv[n + ARRAY_SIZE(args)] = NULL;
    }
    g_assert_true(g_spawn_async_with_pipes(NULL, argv, NULL,
                                           G_SPAWN_DO_NOT_REAP_CHILD |
                                           G_SPAWN_STDOUT_TO_DEV_NULL,
                                           NULL, NULL, &pid, NULL, NULL,
                                           &err_fd, &gerr));

    /* stderr until the process closes it */
    for (;;) {
        struct pollfd pfd = { .fd = err_fd, .events = POLLIN };
        int64_t left = (deadline - g_get_monotonic_time()) / 1000;
        char buf[512];
        ssize_t n;

        if (left <= 0 || poll(&pfd, 1, left) <= 0) {
            break;
        }
        n = read(err_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        g_string_append_len(out, buf, n);
    }
    close(err_fd);

    while ((ret = waitpid(pid, status, WNOHANG)) == 0) {
        if (g_get_monotonic_time() > deadline) {
            kill(pid, SIGKILL);
            killed = true;
            ret = waitpid(pid, status, 0);
            break;
        }
        g_usleep(10 * 1000);
    }
    g_assert_cmpint(ret, ==, pid);
    g_spawn_close_pid(pid);
    g_test_message("main QEMU stderr: %s", out->str);
    g_assert_false(killed);
    *err_out = g_string_free(out, false);
}

static void test_startup_version_mismatch(void)
{
    FakeRemote *f = fake_remote_new(REPLY_OK, 99, false);
    g_autofree char *err = NULL;
    int status;

    fake_remote_start(f);
    run_main_qemu_against(f, &status, &err);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), !=, 0);
    g_assert_true(g_regex_match_simple("version", err, G_REGEX_CASELESS, 0));
    g_assert_true(g_regex_match_simple("\\b99\\b", err, 0, 0));
    /* the proxy stopped at HELLO */
    g_assert_true(fake_wait_done(f, IO_TIMEOUT_MS));
    g_assert_cmpuint(f->requests, ==, 1);
    fake_remote_free(f);
}

static void test_startup_hello_refused(void)
{
    FakeRemote *f = fake_remote_new(REPLY_OK, 7, true);
    g_autofree char *err = NULL;
    int status;

    fake_remote_start(f);
    run_main_qemu_against(f, &status, &err);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), !=, 0);
    /* the remote's own explanation is passed on */
    g_assert_nonnull(strstr(err, "fake remote speaks only version 7"));
    g_assert_true(fake_wait_done(f, IO_TIMEOUT_MS));
    g_assert_cmpuint(f->requests, ==, 1);
    fake_remote_free(f);
}

/* A remote reporting a BAR size that is not a power of two */
static void test_startup_bad_region(void)
{
    FakeRemote *f = fake_remote_new(REPLY_OK, MPQEMU_VERSION, false);
    g_autofree char *err = NULL;
    int status;

    f->bar_size = 3000;
    fake_remote_start(f);
    run_main_qemu_against(f, &status, &err);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), !=, 0);
    g_assert_nonnull(strstr(err, "region 0"));
    g_assert_true(fake_wait_done(f, IO_TIMEOUT_MS));
    fake_remote_free(f);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        BadReply bad;
    } bad_replies[] = {
        { "wrong-id", REPLY_WRONG_ID },
        { "wrong-cmd", REPLY_WRONG_CMD },
        { "unknown-cmd", REPLY_UNKNOWN_CMD },
        { "oversized", REPLY_OVERSIZED },
        { "truncated", REPLY_TRUNCATED },
        { "short-payload", REPLY_SHORT },
        { "error-bad-size", REPLY_ERROR_BAD_SIZE },
        { "with-fd", REPLY_WITH_FD },
        { "garbage", REPLY_GARBAGE },
        { "not-a-reply", REPLY_AS_REQUEST },
        { "bad-irq", REPLY_BAD_IRQ },
    };
    static const struct {
        const char *name;
        BadDoorbell bad;
    } bad_doorbells[] = {
        { "not-eventfd", DOORBELL_NOT_EVENTFD },
        { "outside", DOORBELL_OUTSIDE },
        { "no-region", DOORBELL_NO_REGION },
        { "bad-size", DOORBELL_BAD_SIZE },
        { "overlap", DOORBELL_OVERLAP },
        { "not-negotiated", DOORBELL_NOT_NEGOTIATED },
        { "unknown-removal", DOORBELL_UNKNOWN_REMOVAL },
        { "bad-flags", DOORBELL_BAD_FLAGS },
        { "too-many", DOORBELL_TOO_MANY },
    };

    g_test_init(&argc, &argv, NULL);

    qtest_add_func("/mpqemu/protocol/remote/before-hello",
                   test_remote_before_hello);
    qtest_add_func("/mpqemu/protocol/remote/hello-version",
                   test_remote_hello_version);
    qtest_add_func("/mpqemu/protocol/remote/valid", test_remote_valid);
    qtest_add_func("/mpqemu/protocol/remote/unknown-cmd",
                   test_remote_unknown_cmd);
    qtest_add_func("/mpqemu/protocol/remote/bad-size", test_remote_bad_size);
    qtest_add_func("/mpqemu/protocol/remote/out-of-range",
                   test_remote_out_of_range);
    qtest_add_func("/mpqemu/protocol/remote/memory-map",
                   test_remote_memory_map);
    qtest_add_func("/mpqemu/protocol/remote/oversized",
                   test_remote_oversized);
    qtest_add_func("/mpqemu/protocol/remote/truncated",
                   test_remote_truncated);
    qtest_add_func("/mpqemu/protocol/remote/partial-stall",
                   test_remote_partial_stall);
    qtest_add_func("/mpqemu/protocol/remote/bad-magic",
                   test_remote_bad_magic);
    qtest_add_func("/mpqemu/protocol/remote/bad-flags",
                   test_remote_bad_flags);
    qtest_add_func("/mpqemu/protocol/remote/ring/not-negotiated",
                   test_remote_ring_not_negotiated);
    qtest_add_func("/mpqemu/protocol/remote/ring/bad-fds",
                   test_remote_ring_bad_fds);
    qtest_add_func("/mpqemu/protocol/remote/ring/bad-memory",
                   test_remote_ring_bad_memory);
    qtest_add_func("/mpqemu/protocol/remote/ring/twice",
                   test_remote_ring_twice);
    qtest_add_func("/mpqemu/protocol/remote/ring/working",
                   test_remote_ring_working);
    qtest_add_func("/mpqemu/protocol/remote/ring/first-request",
                   test_remote_ring_first_request);
    qtest_add_func("/mpqemu/protocol/remote/ring/shrunk",
                   test_remote_ring_shrunk);
    qtest_add_func("/mpqemu/protocol/remote/ring/not-eventfds",
                   test_remote_ring_not_eventfds);
    qtest_add_func("/mpqemu/protocol/remote/ring/intx",
                   test_remote_ring_intx);
    qtest_add_func("/mpqemu/protocol/remote/ring/batch",
                   test_remote_ring_batch);
    qtest_add_func("/mpqemu/protocol/remote/ring/shadow",
                   test_remote_ring_shadow);
    qtest_add_func("/mpqemu/protocol/remote/ring/shadow-lsi",
                   test_remote_ring_shadow_lsi);
    qtest_add_func("/mpqemu/protocol/remote/ring/notify-setup",
                   test_remote_ring_notify_setup);
    qtest_add_func("/mpqemu/protocol/remote/ring/notify-eventfd",
                   test_remote_ring_notify_eventfd);
    qtest_add_func("/mpqemu/protocol/remote/hints/refused",
                   test_remote_hints_refused);
    qtest_add_func("/mpqemu/protocol/remote/migration/hostile",
                   test_remote_migration_hostile);
    qtest_add_func("/mpqemu/protocol/remote/hints/lsi",
                   test_remote_hints_lsi);
    qtest_add_func("/mpqemu/protocol/remote/hints/lsi-serial",
                   test_remote_hints_lsi_serial);
    qtest_add_func("/mpqemu/protocol/remote/hints/nvme",
                   test_remote_hints_nvme);

    qtest_add_func("/mpqemu/protocol/proxy/healthy", test_proxy_healthy);
    for (int i = 0; i < ARRAY_SIZE(bad_replies); i++) {
        g_autofree char *path =
            g_strdup_printf("/mpqemu/protocol/proxy/bad-reply/%s",
                            bad_replies[i].name);

        qtest_add_data_func(path, GINT_TO_POINTER(bad_replies[i].bad),
                            test_proxy_bad_reply);
    }
    qtest_add_func("/mpqemu/protocol/proxy/unsolicited",
                   test_proxy_unsolicited);
    qtest_add_func("/mpqemu/protocol/proxy/valid-error",
                   test_proxy_valid_error);
    qtest_add_func("/mpqemu/protocol/proxy/silent", test_proxy_silent);
    qtest_add_func("/mpqemu/protocol/proxy/irq-first", test_proxy_irq_first);
    qtest_add_func("/mpqemu/protocol/proxy/irq-flood", test_proxy_irq_flood);
    qtest_add_func("/mpqemu/protocol/proxy/msi-forged", test_proxy_msi_forged);
    qtest_add_func("/mpqemu/protocol/proxy/ring/healthy",
                   test_proxy_ring_healthy);
    qtest_add_func("/mpqemu/protocol/proxy/ring/silent",
                   test_proxy_ring_silent);
    qtest_add_func("/mpqemu/protocol/proxy/ring/notify-missing",
                   test_proxy_ring_notify_missing);
    qtest_add_func("/mpqemu/protocol/proxy/ring/notify-late",
                   test_proxy_ring_notify_late);
    qtest_add_func("/mpqemu/protocol/proxy/ring/intx",
                   test_proxy_ring_intx);
    qtest_add_func("/mpqemu/protocol/proxy/ring/intx-raised-again",
                   test_proxy_ring_intx_raised_again);
    qtest_add_func("/mpqemu/protocol/proxy/ring/intx-bad",
                   test_proxy_ring_intx_bad);
    qtest_add_func("/mpqemu/protocol/proxy/ring/hangup",
                   test_proxy_ring_hangup);
    qtest_add_func("/mpqemu/protocol/proxy/ioeventfd/valid",
                   test_proxy_ioeventfd_valid);
    for (int i = 0; i < ARRAY_SIZE(bad_doorbells); i++) {
        g_autofree char *path =
            g_strdup_printf("/mpqemu/protocol/proxy/ioeventfd/%s",
                            bad_doorbells[i].name);

        qtest_add_data_func(path, GINT_TO_POINTER(bad_doorbells[i].bad),
                            test_proxy_ioeventfd_hostile);
    }
    qtest_add_func("/mpqemu/protocol/proxy/hints/hostile",
                   test_proxy_hints_hostile);
    qtest_add_func("/mpqemu/protocol/proxy/shadow/read",
                   test_proxy_shadow_read);
    qtest_add_func("/mpqemu/protocol/proxy/posted/ring-full",
                   test_proxy_posted_ring_full);
    qtest_add_func("/mpqemu/protocol/proxy/posted/sync-write",
                   test_proxy_posted_sync_write);
    qtest_add_func("/mpqemu/protocol/proxy/posted/serial-write",
                   test_proxy_posted_serial_write);
    qtest_add_func("/mpqemu/protocol/proxy/ring/notify-eventfd",
                   test_proxy_ring_notify_eventfd);
    qtest_add_func("/mpqemu/protocol/proxy/ring/notify-unsignalled",
                   test_proxy_ring_notify_unsignalled);
    qtest_add_data_func("/mpqemu/protocol/proxy/ring/notify-hangup",
                        GINT_TO_POINTER(false),
                        test_proxy_ring_notify_hangup);
    qtest_add_data_func("/mpqemu/protocol/proxy/ring/notify-half-closed",
                        GINT_TO_POINTER(true),
                        test_proxy_ring_notify_hangup);
    qtest_add_func("/mpqemu/protocol/proxy/ring/notify-not-granted",
                   test_proxy_ring_notify_not_granted);

    qtest_add_func("/mpqemu/protocol/startup/version-mismatch",
                   test_startup_version_mismatch);
    qtest_add_func("/mpqemu/protocol/startup/hello-refused",
                   test_startup_hello_refused);
    qtest_add_func("/mpqemu/protocol/startup/bad-region",
                   test_startup_bad_region);

    return g_test_run();
}
