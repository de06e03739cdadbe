/*
 * mpqemu channel: framing, sending and receiving protocol messages with
 * descriptors over a UNIX stream socket, with timeouts and validation.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef MPQEMU_CHANNEL_H
#define MPQEMU_CHANNEL_H

#include "mpqemu/protocol.h"

/* One message; the header is in host byte order, the payload as on the wire. */
typedef struct MPQemuMsg {
    MPQemuHeader hdr;
    union {
        uint8_t bytes[MPQEMU_MAX_PAYLOAD];
        MPQemuHello hello;
        MPQemuDeviceInfo device_info;
        MPQemuConfigAccess config;
        MPQemuBarAccess bar;
        MPQemuValue value;
        MPQemuMemoryMap memory;
        MPQemuSetIrq set_irq;
        MPQemuMsi msi;
        MPQemuRingSetup ring_setup;
        MPQemuRunState run_state;
        MPQemuDeviceState device_state;
        MPQemuDirtyLog dirty_log;
        MPQemuAccessHints hints;
        MPQemuIoeventfd ioeventfd;
        MPQemuError error;
    } u;
    int fds[MPQEMU_MAX_FDS];
} MPQemuMsg;

/* Which side a message was received by: requests go to the remote. */
typedef enum MPQemuPeer {
    MPQEMU_PEER_REMOTE,     /* validating what a remote receives */
    MPQEMU_PEER_PROXY,      /* validating what a proxy receives */
} MPQemuPeer;

void mpqemu_msg_init(MPQemuMsg *msg, MPQemuCmd cmd, uint16_t flags,
                     uint64_t id, uint32_t size);
void mpqemu_msg_init_reply(MPQemuMsg *reply, const MPQemuMsg *req,
                           uint32_t size);
void mpqemu_msg_init_error(MPQemuMsg *reply, const MPQemuMsg *req,
                           int code, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
void mpqemu_msg_close_fds(MPQemuMsg *msg);
const char *mpqemu_cmd_name(unsigned int cmd);
/* SET_IRQ, MSI, IOEVENTFD: sent by the remote without being asked */
bool mpqemu_cmd_is_notification(unsigned int cmd);

/*
 * Check that a framed message is well-formed for its command: known
 * command, allowed flags, exact payload size, descriptor count.
 */
bool mpqemu_msg_check(const MPQemuMsg *msg, MPQemuPeer receiver, Error **errp);

/* If @reply reports an error, turn it into @errp and return false. */
bool mpqemu_reply_ok(const MPQemuMsg *reply, Error **errp);

/*
 * Send @msg (and its descriptors) on the stream socket @fd, waiting at most
 * @timeout_ms for the socket to accept it. Returns 0 or a negative errno.
 */
int mpqemu_msg_send(int fd, const MPQemuMsg *msg, int timeout_ms,
                    Error **errp);

/* How much a reader that does not wait reads in one go (see below) */
#define MPQEMU_RECV_AHEAD   4096

/*
 * Bytes read past the message being received, and the descriptors that
 * came with them. Linux returns descriptors with the bytes of the send
 * that carried them and ends the read there, so they belong to one of the
 * messages that start in these bytes: the first that declares any takes
 * them all.
 */
typedef struct MPQemuRecvAhead {
    uint8_t buf[MPQEMU_RECV_AHEAD];
    size_t pos;             /* buf[pos, len) is still to be taken */
    size_t len;
    int fds[MPQEMU_MAX_FDS];
    unsigned int nfds;      /* not taken by a message yet */
    bool excess;            /* more descriptors arrived than fit */
    bool drained;           /* the socket had no more when they were read */
} MPQemuRecvAhead;

/*
 * A message being received a piece at a time: lets a reader that must not
 * block (a main-loop handler) pick up where it left off.
 */
typedef struct MPQemuRecvState {
    MPQemuHeader wire;      /* as received */
    MPQemuHeader hdr;       /* decoded, once the header is complete */
    uint8_t payload[MPQEMU_MAX_PAYLOAD];
    size_t got;             /* bytes received so far, header included */
    int fds[MPQEMU_MAX_FDS];
    unsigned int nfds;
    bool excess;            /* more descriptors arrived than fit */
    bool from_ahead;        /* it starts in ahead: may take its descriptors */
    MPQemuRecvAhead ahead;
} MPQemuRecvState;

/* Forget a partial message, closing descriptors that came with it */
void mpqemu_recv_state_reset(MPQemuRecvState *st);

/*
 * Continue receiving into @st; once a message is whole, move it to @msg and
 * return 0. With @timeout_ms 0, return -EAGAIN at once if it is not whole
 * yet (@st keeps what arrived); otherwise wait up to @timeout_ms and return
 * -ETIMEDOUT. Other errors are those of mpqemu_msg_recv(), after which @st
 * is reset.
 *
 * With @timeout_ms 0 it reads as much as has arrived, up to
 * MPQEMU_RECV_AHEAD bytes, in one system call, and keeps what follows the
 * message in @st. Such a caller must therefore call again until it gets
 * -EAGAIN (or an error) before it waits for @fd to become readable: a
 * message kept in @st does not make the socket readable. A short read
 * tells that the socket had nothing more, so -EAGAIN after it takes no
 * further system call. With a timeout it reads exactly one message.
 */
int mpqemu_msg_recv_partial(int fd, MPQemuRecvState *st, MPQemuMsg *msg,
                            int timeout_ms, Error **errp);

/*
 * Receive one message from @fd, waiting at most @timeout_ms. Returns 0 or:
 *   -EPIPE      the peer closed the connection between two messages
 *   -ETIMEDOUT  no (complete) message arrived in time
 *   -EPROTO     the framing is broken (bad magic, sizes, descriptors, or a
 *               connection closed mid-message); the stream is unusable
 *   other negative errno values from the socket.
 * Descriptors that arrived are in msg->fds; the caller owns them.
 */
int mpqemu_msg_recv(int fd, MPQemuMsg *msg, int timeout_ms, Error **errp);

/*
 * Whole @size bytes from offset 0 of the memory file @fd (device state,
 * dirty bitmaps), checking first that the file holds them; or into it.
 */
bool mpqemu_file_read(int fd, void *buf, size_t size, Error **errp);
bool mpqemu_file_write(int fd, const void *buf, size_t size, Error **errp);

/* Wait up to @timeout_ms for @fd to become readable; true if it did. */
bool mpqemu_wait_readable(int fd, int timeout_ms);

#endif
