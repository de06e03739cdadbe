/*
 * mpqemu fuzzing: what a well-formed reply looks like, for the targets that
 * check replies (proxy-link) or make them (remote-link).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef FUZZ_REPLY_H
#define FUZZ_REPLY_H

#include "mpqemu/protocol.h"

/* The payload size of a successful reply to @cmd (docs/protocol.md) */
static inline uint32_t fuzz_reply_size(unsigned cmd)
{
    switch (cmd) {
    case MPQEMU_CMD_HELLO:
        return sizeof(MPQemuHello);
    case MPQEMU_CMD_DEVICE_INFO:
        return sizeof(MPQemuDeviceInfo);
    case MPQEMU_CMD_CONFIG_READ:
    case MPQEMU_CMD_BAR_READ:
        return sizeof(MPQemuValue);
    case MPQEMU_CMD_ACCESS_HINTS:
        return sizeof(MPQemuAccessHints);
    default:
        return 0;
    }
}

#endif
