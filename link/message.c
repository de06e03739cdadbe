/*
 * mpqemu messages: building requests and replies, and checking that each
 * received message has exactly the shape its command defines.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "mpqemu/channel.h"

/* Payload size of each command's request and reply; -1: never sent that way */
typedef struct MPQemuCmdShape {
    const char *name;
    int request;
    int reply;
} MPQemuCmdShape;

static const MPQemuCmdShape cmd_shape[MPQEMU_CMD__MAX] = {
    [MPQEMU_CMD_HELLO] = {
        "HELLO", sizeof(MPQemuHello), sizeof(MPQemuHello)
    },
    [MPQEMU_CMD_DEVICE_INFO] = {
        "DEVICE_INFO", 0, sizeof(MPQemuDeviceInfo)
    },
    [MPQEMU_CMD_CONFIG_READ] = {
        "CONFIG_READ", sizeof(MPQemuConfigAccess), sizeof(MPQemuValue)
    },
    [MPQEMU_CMD_CONFIG_WRITE] = {
        "CONFIG_WRITE", sizeof(MPQemuConfigAccess), 0
    },
    [MPQEMU_CMD_BAR_READ] = {
        "BAR_READ", sizeof(MPQemuBarAccess), sizeof(MPQemuValue)
    },
    [MPQEMU_CMD_BAR_WRITE] = {
        "BAR_WRITE", sizeof(MPQemuBarAccess), 0
    },
    [MPQEMU_CMD_MEMORY_MAP] = {
        /* variable: checked against nr_sections below */
        "MEMORY_MAP", -1, 0
    },
    [MPQEMU_CMD_RESET] = {
        "RESET", 0, 0
    },
    [MPQEMU_CMD_SET_IRQ] = {
        /* a notification from the remote: neither request nor reply */
        "SET_IRQ", -1, -1
    },
    [MPQEMU_CMD_MSI] = {
        "MSI", -1, -1
    },
    [MPQEMU_CMD_RING_SETUP] = {
        "RING_SETUP", sizeof(MPQemuRingSetup), 0
    },
    [MPQEMU_CMD_ACCESS_HINTS] = {
        "ACCESS_HINTS", 0, sizeof(MPQemuAccessHints)
    },
    [MPQEMU_CMD_IOEVENTFD] = {
        "IOEVENTFD", -1, -1
    },
    [MPQEMU_CMD_RUN_STATE] = {
        "RUN_STATE", sizeof(MPQemuRunState), 0
    },
    [MPQEMU_CMD_DEVICE_STATE] = {
        "DEVICE_STATE", sizeof(MPQemuDeviceState), sizeof(MPQemuDeviceState)
    },
    [MPQEMU_CMD_DIRTY_LOG] = {
        "DIRTY_LOG", sizeof(MPQemuDirtyLog), sizeof(MPQemuDirtyLog)
    },
};

bool mpqemu_cmd_is_notification(unsigned int cmd)
{
    return cmd == MPQEMU_CMD_SET_IRQ || cmd == MPQEMU_CMD_MSI ||
           cmd == MPQEMU_CMD_IOEVENTFD;
}

static const int notification_size[MPQEMU_CMD__MAX] = {
    [MPQEMU_CMD_SET_IRQ] = sizeof(MPQemuSetIrq),
    [MPQEMU_CMD_MSI] = sizeof(MPQemuMsi),
    [MPQEMU_CMD_IOEVENTFD] = sizeof(MPQemuIoeventfd),
};

/* The sizes docs/protocol.md gives */
QEMU_BUILD_BUG_ON(sizeof(MPQemuHeader) != 24);
QEMU_BUILD_BUG_ON(sizeof(MPQemuHello) != 80);
QEMU_BUILD_BUG_ON(sizeof(MPQemuDeviceInfo) != 120);
QEMU_BUILD_BUG_ON(sizeof(MPQemuConfigAccess) != 16);
QEMU_BUILD_BUG_ON(sizeof(MPQemuBarAccess) != 24);
QEMU_BUILD_BUG_ON(sizeof(MPQemuMemorySection) != 24);
QEMU_BUILD_BUG_ON(sizeof(MPQemuMemoryMap) > MPQEMU_MAX_PAYLOAD);
QEMU_BUILD_BUG_ON(sizeof(MPQemuSetIrq) != 8);
QEMU_BUILD_BUG_ON(sizeof(MPQemuMsi) != 16);
QEMU_BUILD_BUG_ON(sizeof(MPQemuRingSetup) != 8);
QEMU_BUILD_BUG_ON(sizeof(MPQemuAccessHint) != 24);
QEMU_BUILD_BUG_ON(sizeof(MPQemuAccessHints) != 392);
QEMU_BUILD_BUG_ON(sizeof(MPQemuIoeventfd) != 24);
QEMU_BUILD_BUG_ON(sizeof(MPQemuDeviceState) != 16);
QEMU_BUILD_BUG_ON(sizeof(MPQemuDirtyLog) != 16);
QEMU_BUILD_BUG_ON(sizeof(MPQemuError) != 264);

const char *mpqemu_cmd_name(unsigned int cmd)
{
    if (cmd < MPQEMU_CMD__MAX && cmd_shape[cmd].name) {
        return cmd_shape[cmd].name;
    }
    return "unknown command";
}

void mpqemu_msg_init(MPQemuMsg *msg, MPQemuCmd cmd, uint16_t flags,
                     uint64_t id, uint32_t size)
{
    assert(size <= MPQEMU_MAX_PAYLOAD);
    memset(&msg->hdr, 0, sizeof(msg->hdr));
    memset(msg->u.bytes, 0, size);
    msg->hdr.magic = MPQEMU_MAGIC;
    msg->hdr.cmd = cmd;
    msg->hdr.flags = flags;
    msg->hdr.id = id;
    msg->hdr.size = size;
}

void mpqemu_msg_init_reply(MPQemuMsg *reply, const MPQemuMsg *req,
                           uint32_t size)
{
    mpqemu_msg_init(reply, req->hdr.cmd, MPQEMU_FLAG_REPLY, req->hdr.id, size);
}

void mpqemu_msg_init_error(MPQemuMsg *reply, const MPQemuMsg *req,
                           int code, const char *fmt, ...)
{
    va_list ap;

    mpqemu_msg_init(reply, req->hdr.cmd, MPQEMU_FLAG_REPLY | MPQEMU_FLAG_ERROR,
                    req->hdr.id, sizeof(MPQemuError));
    reply->u.error.code = cpu_to_le32(code);
    va_start(ap, fmt);
    g_vsnprintf(reply->u.error.message, sizeof(reply->u.error.message),
                fmt, ap);
    va_end(ap);
}

void mpqemu_msg_close_fds(MPQemuMsg *msg)
{
    for (unsigned int i = 0; i < msg->hdr.num_fds; i++) {
        close(msg->fds[i]);
    }
    msg->hdr.num_fds = 0;
}

static bool check_memory_map(const MPQemuMsg *msg, Error **errp)
{
    const MPQemuMemoryMap *map = &msg->u.memory;
    uint32_t nr;

    if (msg->hdr.size < offsetof(MPQemuMemoryMap, section)) {
        error_setg(errp, "MEMORY_MAP payload of %u bytes is too short",
                   msg->hdr.size);
        return false;
    }
    nr = le32_to_cpu(map->nr_sections);
    if (nr > MPQEMU_MAX_SECTIONS || nr != msg->hdr.num_fds) {
        error_setg(errp, "MEMORY_MAP has %u sections and %u descriptors "
                   "(they must match, at most %d)", nr, msg->hdr.num_fds,
                   MPQEMU_MAX_SECTIONS);
        return false;
    }
    if (msg->hdr.size != offsetof(MPQemuMemoryMap, section) +
                         nr * sizeof(MPQemuMemorySection)) {
        error_setg(errp, "MEMORY_MAP payload of %u bytes does not hold "
                   "exactly %u sections", msg->hdr.size, nr);
        return false;
    }
    if (le32_to_cpu(map->flags) & ~MPQEMU_MEMORY_FLAGS_ALL) {
        error_setg(errp, "MEMORY_MAP has unknown flags 0x%x",
                   le32_to_cpu(map->flags));
        return false;
    }
    return true;
}

/* How many descriptors a request to the remote carries */
static unsigned int request_fds(const MPQemuMsg *msg)
{
    switch (msg->hdr.cmd) {
    case MPQEMU_CMD_RING_SETUP:
        return MPQEMU_RING_FDS +
               (msg->hdr.size == sizeof(MPQemuRingSetup) &&
                (le32_to_cpu(msg->u.ring_setup.flags) &
                 MPQEMU_RING_SETUP_NOTIFY_FD));
    case MPQEMU_CMD_DEVICE_STATE:
        return 1;
    case MPQEMU_CMD_DIRTY_LOG:
        return msg->hdr.size == sizeof(MPQemuDirtyLog) &&
               le32_to_cpu(msg->u.dirty_log.op) == MPQEMU_DIRTY_SYNC;
    default:
        return 0;
    }
}

static bool check_ioeventfd(const MPQemuMsg *msg, Error **errp)
{
    const MPQemuIoeventfd *ev = &msg->u.ioeventfd;
    bool add = ev->flags & MPQEMU_IOEVENTFD_ADD;

    if (ev->flags & ~MPQEMU_IOEVENTFD_FLAGS_ALL) {
        error_setg(errp, "IOEVENTFD has unknown flags 0x%x", ev->flags);
        return false;
    }
    if (msg->hdr.num_fds != add) {
        error_setg(errp, "IOEVENTFD %s carries %u descriptors, expected %d",
                   add ? "ADD" : "removal", msg->hdr.num_fds, add);
        return false;
    }
    return true;
}

bool mpqemu_msg_check(const MPQemuMsg *msg, MPQemuPeer receiver, Error **errp)
{
    const MPQemuHeader *h = &msg->hdr;
    const char *name = mpqemu_cmd_name(h->cmd);
    bool is_reply = h->flags & MPQEMU_FLAG_REPLY;
    int expected;

    if (h->cmd >= MPQEMU_CMD__MAX || !cmd_shape[h->cmd].name) {
        error_setg(errp, "unknown command %u", h->cmd);
        return false;
    }
    if (h->flags & ~MPQEMU_FLAGS_ALL) {
        error_setg(errp, "%s has unknown flags 0x%x", name, h->flags);
        return false;
    }
    if ((h->flags & MPQEMU_FLAG_ERROR) && !is_reply) {
        error_setg(errp, "%s is flagged as an error but is not a reply", name);
        return false;
    }

    if (mpqemu_cmd_is_notification(h->cmd)) {
        if (receiver != MPQEMU_PEER_PROXY || h->flags || h->id) {
            error_setg(errp, "%s is a notification from the remote "
                       "(no flags, id 0)", name);
            return false;
        }
        expected = notification_size[h->cmd];
        if (h->cmd == MPQEMU_CMD_IOEVENTFD && h->size == expected) {
            /* the one notification that may carry a descriptor */
            return check_ioeventfd(msg, errp);
        }
    } else if (receiver == MPQEMU_PEER_REMOTE) {
        if (is_reply) {
            error_setg(errp, "unexpected %s reply: a remote only receives "
                       "requests", name);
            return false;
        }
        if (h->id == 0) {
            error_setg(errp, "%s request with id 0", name);
            return false;
        }
        if (h->cmd == MPQEMU_CMD_MEMORY_MAP) {
            return check_memory_map(msg, errp);
        }
        if (h->num_fds != request_fds(msg)) {
            error_setg(errp, "%s carries %u descriptors, expected %u", name,
                       h->num_fds, request_fds(msg));
            return false;
        }
        expected = cmd_shape[h->cmd].request;
    } else {
        if (!is_reply) {
            error_setg(errp, "unexpected %s request: a proxy only receives "
                       "replies and notifications", name);
            return false;
        }
        expected = (h->flags & MPQEMU_FLAG_ERROR) ? sizeof(MPQemuError)
                                                  : cmd_shape[h->cmd].reply;
    }

    if (h->num_fds && (is_reply || receiver != MPQEMU_PEER_REMOTE)) {
        error_setg(errp, "%s carries %u descriptors; it takes none", name,
                   h->num_fds);
        return false;
    }
    if (h->size != expected) {
        error_setg(errp, "%s %s has a %u-byte payload, expected %d", name,
                   is_reply ? "reply" : "message", h->size, expected);
        return false;
    }
    return true;
}

bool mpqemu_reply_ok(const MPQemuMsg *reply, Error **errp)
{
    const MPQemuError *e = &reply->u.error;

    if (!(reply->hdr.flags & MPQEMU_FLAG_ERROR)) {
        return true;
    }
    error_setg(errp, "remote refused %s: %.*s",
               mpqemu_cmd_name(reply->hdr.cmd),
               (int)strnlen(e->message, sizeof(e->message)), e->message);
    return false;
}
