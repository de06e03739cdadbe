#!/usr/bin/env python3
# Writes the seed corpus of the mpqemu fuzz targets (fuzz/corpus/<target>/):
# valid messages of every command, as the record scripts of fuzz/fuzz-input.h.
#
# Usage: fuzz/gen-corpus.py [OUTDIR]   (default: fuzz/corpus next to this file)
# The seeds are checked in; rerun this after a protocol change and commit
# what it writes. Output is deterministic.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import shutil
import struct
import sys

MAGIC = 0x3151504D
REPLY, ERROR = 1, 2

HELLO, DEVICE_INFO, CONFIG_READ, CONFIG_WRITE, BAR_READ, BAR_WRITE, \
    MEMORY_MAP, RESET, SET_IRQ, MSI, RING_SETUP, ACCESS_HINTS, \
    IOEVENTFD = range(1, 14)

FEATURE_RING, FEATURE_POSTED, FEATURE_SHADOW, FEATURE_IOEVENTFD = 0x80, 2, 4, 8

# fuzz-input.h: opcodes and descriptor kinds
OP_DATA, OP_CALL, OP_POLL, OP_RING, OP_EOF = range(5)
FDS_RING, FDS_MEMFD, FDS_EVENTFD, FDS_PIPE, FDS_DEVNULL, FDS_UNSEALED = range(6)
# proxy-link-fuzz.c: what a FUZZ_OP_CALL asks the proxy to do
CALL_HELLO, CALL_DEVICE_INFO, CALL_CONFIG_READ, CALL_CONFIG_WRITE, \
    CALL_BAR_READ, CALL_BAR_WRITE, CALL_MEMORY_MAP, CALL_RESET, \
    CALL_ACCESS_HINTS, CALL_POLL = range(10)


def msg(cmd, payload=b"", flags=0, ident=0, nfds=0):
    return struct.pack("<IHHQII", MAGIC, cmd, flags, ident, len(payload),
                       nfds) + payload


def reply(cmd, ident, payload=b""):
    return msg(cmd, payload, REPLY, ident)


def error_reply(cmd, ident, code, text):
    body = text.encode()[:255].ljust(256, b"\0")
    return msg(cmd, struct.pack("<iI", code, 0) + body, REPLY | ERROR, ident)


def data(raw, nfds=0, kind=FDS_RING):
    return struct.pack("<BHB", OP_DATA, len(raw), (kind << 4) | nfds) + raw


def call(what, arg=0):
    return bytes([OP_CALL, what, arg])


def poll():
    return bytes([OP_POLL])


def eof():
    return bytes([OP_EOF])


def ring(what, operands=b""):
    return bytes([OP_RING, what]) + operands.ljust(16, b"\0")[:16]


# Payloads, as docs/protocol.md lays them out
def hello(features=0, devid=b""):
    return struct.pack("<IIQ", 1, 0, features) + devid.ljust(64, b"\0")


def device_info(config_size=256, regions=()):
    out = struct.pack("<II", config_size, 0)
    regions = list(regions) + [(0, 0)] * (7 - len(regions))
    for size, flags in regions:
        out += struct.pack("<QII", size, flags, 0)
    return out


LSI_REGIONS = [(256, 1), (1024, 0), (8192, 0)]


def config_access(offset, length, value=0):
    return struct.pack("<IIII", offset, length, value, 0)


def bar_access(region, offset, size, value=0):
    return struct.pack("<QQBB6x", offset, value, region, size)


def value(v):
    return struct.pack("<Q", v)


def memory_map(sections, flags=3):
    out = struct.pack("<II", flags, len(sections))
    for gpa, size, offset in sections:
        out += struct.pack("<QQQ", gpa, size, offset)
    return out


def access_hints(hints, shadow_size=0):
    out = struct.pack("<II", len(hints), shadow_size)
    for h in hints:
        out += struct.pack("<QIIBBBBBB2x", *h)
    return out.ljust(8 + 16 * 24, b"\0")


def ring_setup(size):
    return struct.pack("<II", size, 0)


def set_irq(level):
    return struct.pack("<II", level, 0)


def msi(address, data_):
    return struct.pack("<QII", address, data_, 0)


def ioeventfd(offset, data_, region, size, flags):
    return struct.pack("<QQBBB5x", offset, data_, region, size, flags)


# ---------------------------------------------------------------------------
# proxy-link: the input plays the remote; ids count from 1 per connection

def proxy_seeds():
    s = {}
    s["hello"] = data(reply(HELLO, 1, hello(0, b"lsi1"))) + call(CALL_HELLO)
    s["device-info"] = (data(reply(DEVICE_INFO, 1,
                                   device_info(256, LSI_REGIONS))) +
                        call(CALL_DEVICE_INFO))
    s["device-info-express"] = (data(reply(DEVICE_INFO, 1, device_info(
        4096, [(16384, 2 | 4), (0, 0), (4096, 0)]))) +
        call(CALL_DEVICE_INFO))
    s["config-read"] = (data(reply(CONFIG_READ, 1, value(0x00121000))) +
                        call(CALL_CONFIG_READ, 2))
    s["config-write"] = data(reply(CONFIG_WRITE, 1)) + call(CALL_CONFIG_WRITE, 4)
    s["bar-read"] = data(reply(BAR_READ, 1, value(0xc0))) + call(CALL_BAR_READ)
    s["bar-write"] = data(reply(BAR_WRITE, 1)) + call(CALL_BAR_WRITE, 1)
    s["memory-map"] = data(reply(MEMORY_MAP, 1)) + call(CALL_MEMORY_MAP, 2)
    s["reset"] = data(reply(RESET, 1)) + call(CALL_RESET)
    s["access-hints"] = (data(reply(ACCESS_HINTS, 1, access_hints(
        [(0, 4, 0, 1, 1, 4, 0, 0, 0),
         (0x14, 8, 8, 0, 2, 4, 1, 1, 8)], 64))) + call(CALL_ACCESS_HINTS))
    s["error-reply"] = (data(error_reply(BAR_READ, 1, -22, "no region 3")) +
                        call(CALL_BAR_READ, 3))
    s["wrong-id"] = data(reply(BAR_READ, 7, value(1))) + call(CALL_BAR_READ)
    s["set-irq"] = data(msg(SET_IRQ, set_irq(1))) + poll()
    s["msi"] = data(msg(MSI, msi(0xfee00000, 0x4021))) + poll()
    s["ioeventfd-add"] = (data(msg(IOEVENTFD, ioeventfd(0x1000, 0, 0, 4, 1),
                                   nfds=1), 1, FDS_EVENTFD) + poll())
    s["ioeventfd-remove"] = (data(msg(IOEVENTFD, ioeventfd(0x1000, 7, 0, 4,
                                                           2))) + poll())
    irq = msg(SET_IRQ, set_irq(1))
    s["partial"] = data(irq[:10]) + poll() + data(irq[10:]) + poll()
    s["notify-then-reply"] = (data(msg(SET_IRQ, set_irq(1)) +
                                   msg(MSI, msi(0xfee00000, 0x30)) +
                                   reply(BAR_READ, 1, value(0x55))) +
                              call(CALL_BAR_READ, 9))
    s["session"] = (data(reply(HELLO, 1, hello(0, b"lsi1"))) +
                    data(reply(DEVICE_INFO, 2, device_info(256, LSI_REGIONS))) +
                    data(reply(CONFIG_READ, 3, value(0x1000))) +
                    data(msg(SET_IRQ, set_irq(1))) +
                    data(reply(BAR_WRITE, 4)) +
                    data(msg(SET_IRQ, set_irq(0))) +
                    data(reply(BAR_READ, 5, value(0))) +
                    data(reply(RESET, 6)) +
                    call(CALL_HELLO) + call(CALL_DEVICE_INFO) +
                    call(CALL_CONFIG_READ) + call(CALL_BAR_WRITE, 0x10) +
                    call(CALL_BAR_READ, 0x10) + call(CALL_RESET) + poll())
    features = FEATURE_RING | FEATURE_POSTED | FEATURE_SHADOW
    s["ring"] = (data(reply(HELLO, 1, hello(features, b"nvme0"))) +
                 data(reply(RING_SETUP, 2)) +
                 call(CALL_HELLO, features) +
                 ring(1, bytes([7, 3, 0x12, 0x81])) +
                 ring(0, bytes([0, 0, 2, 0, 0, 0, 0, 0])) +
                 ring(2, bytes([0, 0, 2, 1, 0x80, 22])) +
                 ring(0, bytes([0, 0, 4, 0, 0, 0, 0x10, 0])) +
                 ring(0, bytes([0xe0, 0, 3])))
    return s


# ---------------------------------------------------------------------------
# remote-link and remote-process: the input plays the proxy

def remote_seeds():
    s = {}
    h = data(msg(HELLO, hello(0), ident=1))
    s["hello"] = h + poll()
    all_ring = FEATURE_RING | FEATURE_POSTED | FEATURE_SHADOW | FEATURE_IOEVENTFD
    s["hello-features"] = data(msg(HELLO, hello(all_ring), ident=1)) + poll()
    s["hello-bad-version"] = data(msg(HELLO, struct.pack(
        "<IIQ", 7, 0, 0) + b"\0" * 64, ident=1)) + poll()
    s["device-info"] = h + data(msg(DEVICE_INFO, ident=2)) + poll()
    s["config-read"] = h + data(msg(CONFIG_READ, config_access(0, 4),
                                    ident=2)) + poll()
    s["config-write"] = h + data(msg(CONFIG_WRITE, config_access(4, 2, 7),
                                     ident=2)) + poll()
    s["bar-read"] = h + data(msg(BAR_READ, bar_access(1, 0, 1),
                                 ident=2)) + poll()
    s["bar-write"] = h + data(msg(BAR_WRITE, bar_access(2, 0x10, 4,
                                                        0xdeadbeef),
                                  ident=2)) + poll()
    s["memory-map"] = h + data(msg(MEMORY_MAP, memory_map(
        [(0, 0x10000, 0), (0x100000, 0x1000, 0x20000)]), ident=2, nfds=2),
        2, FDS_MEMFD) + poll()
    s["memory-map-parts"] = (h + data(msg(MEMORY_MAP, memory_map(
        [(0, 0x1000, 0)], flags=1), ident=2, nfds=1), 1, FDS_MEMFD) +
        data(msg(MEMORY_MAP, memory_map([(0x2000, 0x1000, 0)], flags=2),
                 ident=3, nfds=1), 1, FDS_MEMFD) + poll())
    s["reset"] = h + data(msg(RESET, ident=2)) + poll()
    features = FEATURE_RING | FEATURE_POSTED | FEATURE_SHADOW | \
        FEATURE_IOEVENTFD
    s["ring-setup"] = (data(msg(HELLO, hello(features), ident=1)) +
                       data(msg(ACCESS_HINTS, ident=2)) +
                       data(msg(RING_SETUP, ring_setup(8192 + 4096), ident=3,
                                nfds=3), 3, FDS_RING) +
                       data(msg(BAR_READ, bar_access(1, 0, 4), ident=4)) +
                       poll())
    s["access-hints"] = (data(msg(HELLO, hello(FEATURE_RING | FEATURE_POSTED),
                                  ident=1)) +
                         data(msg(ACCESS_HINTS, ident=2)) + poll())
    s["partial"] = (h + poll() +
                    data(msg(CONFIG_READ, config_access(0, 2), ident=2)[:7]) +
                    poll() +
                    data(msg(CONFIG_READ, config_access(0, 2), ident=2)[7:]) +
                    poll())
    s["before-hello"] = data(msg(BAR_READ, bar_access(0, 0, 1),
                                 ident=1)) + poll()
    s["eof-mid-message"] = h + data(msg(RESET, ident=2)[:12]) + eof() + poll()
    s["session"] = (h + data(msg(DEVICE_INFO, ident=2)) +
                    data(msg(CONFIG_WRITE, config_access(4, 2, 7), ident=3)) +
                    data(msg(BAR_WRITE, bar_access(0, 0, 1, 0x80), ident=4)) +
                    data(msg(BAR_READ, bar_access(0, 0x14, 1), ident=5)) +
                    data(msg(CONFIG_READ, config_access(0x3c, 1), ident=6)) +
                    data(msg(RESET, ident=7)) + poll() + eof())
    return s


def write(outdir, target, seeds):
    d = os.path.join(outdir, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, blob in sorted(seeds.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(blob)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    write(outdir, "proxy-link", proxy_seeds())
    remote = remote_seeds()
    write(outdir, "remote-link", remote)
    write(outdir, "remote-process", remote)


if __name__ == "__main__":
    main()
