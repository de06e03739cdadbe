# SPDX-License-Identifier: GPL-2.0-or-later
"""The fast path of x-pci-proxy-dev under a real guest: doorbell eventfds,
and every fast-path feature turned off.

A proxied virtio-blk (modern) and a proxied NVMe (with ioeventfd=on in the
remote) each boot a guest that reads the host's pattern from the disk,
writes data of its own, reads it back, and powers off; the image must then
hold what the guest wrote.  The main QEMU traces proxy_ioeventfd (doorbell
eventfds the remote handed over) and proxy_bar_write (every BAR write that
reached the proxy's MMIO handler); the remote traces remote_doorbell.

  * With the doorbell eventfds on, the remote hands the device's doorbells
    over (remote_doorbell add 1, proxy_ioeventfd add 1 at the same places)
    and, while the guest does its I/O, no BAR write at a doorbell reaches
    the proxy's handler: the guest's notifications signal the eventfd, and
    the data is right, so the device did get them.
  * With ioeventfd=off, ring=off or all of posted-writes/shadow/ioeventfd
    off, nothing is handed over and the notifications go through the
    proxy's handler (BAR writes traced during the I/O); the data is right.

  * Once the I/O is over, the remote process uses next to no CPU: whatever
    polling it did for the guest's accesses has stopped.

Each configuration boots one guest (class-scoped fixture); the checks run
in order and the last one powers the guest off.
"""

import hashlib
import os
import re
import time

import pytest

from mpqemu_topology import (Remote, Topology, process_cpu_ns, serve_vm,
                             trace_args)
from mpqemu_vm import MIB, file_sha256, make_disk

DISK_MIB = 8
WRITE_OFFSET_MIB = 3
WRITE_MIB = 2

KINDS = {
    "virtio-blk": {
        # Modern only: the queue notifications are in a memory BAR.
        "device": "virtio-blk-pci,id=blk1,drive=d1,serial=mpqvblk1,disable-legacy=on",
        "pci": ("0x1af4", "0x1042"),
        "disk_glob": "/sys/bus/pci/devices/{bdf}/virtio*/block/*",
    },
    "nvme": {
        # ioeventfd=on: once Linux configures the shadow doorbell buffer, the
        # nvme model takes the I/O queues' doorbells as eventfds.
        "device": "nvme,id=blk1,serial=mpqnvme1,drive=d1,ioeventfd=on",
        "pci": ("0x1b36", "0x0010"),
        "disk_glob": "/sys/bus/pci/devices/{bdf}/nvme/nvme*/nvme*n*",
    },
}

ALL_OFF = "posted-writes=off,shadow=off,ioeventfd=off"

# (device, x-pci-proxy-dev properties, transport, doorbells handed over)
CONFIGS = [
    ("virtio-blk", "", "socket", True),
    ("virtio-blk", "ioeventfd=off", "fd", False),
    ("virtio-blk", "ring=off", "socket", False),
    ("virtio-blk", ALL_OFF, "fd", False),
    ("nvme", "", "fd", True),
    ("nvme", "ring=off", "socket", False),
    ("nvme", ALL_OFF, "socket", False),
]

# The idle remote: measured for IDLE_SECONDS after IDLE_SETTLE_SECONDS without
# I/O, it may use at most this share of one CPU.
IDLE_SETTLE_SECONDS = 1
IDLE_SECONDS = 3
IDLE_MAX_CPU = 0.05

MAIN_TRACES = ("proxy_ioeventfd", "proxy_bar_write", "proxy_failed")
REMOTE_TRACES = ("remote_doorbell",)

# The log backend may put "pid@seconds:" in front of the event's name.
IOEVENTFD_RE = re.compile(r"proxy_ioeventfd (\S+) add (\d) bar (\d+) addr 0x([0-9a-f]+) "
                          r"size (\d+) match (\d) data 0x([0-9a-f]+)")
DOORBELL_RE = re.compile(r"remote_doorbell (\S+) add (\d) region (\d+) offset 0x([0-9a-f]+) "
                         r"size (\d+) match (\d) data 0x([0-9a-f]+)")
BAR_WRITE_RE = re.compile(r"proxy_bar_write (\S+) bar (\d+) addr 0x([0-9a-f]+) size (\d+) "
                          r"val 0x([0-9a-f]+)")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def config_id(cfg):
    kind, props, _, _ = cfg
    return f"{kind}-" + (props.replace("=off", "-off").replace(",", "-") or "default")


def doorbell_events(text, regex):
    """[(add, bar, offset, size, match, data)] of the traced doorbell changes, in order."""
    return [(int(m.group(2)), int(m.group(3)), int(m.group(4), 16), int(m.group(5)),
             int(m.group(6)), int(m.group(7), 16)) for m in regex.finditer(text)]


def active_doorbells(events):
    """The doorbells in place after these changes: {(bar, offset, size, match, data)}."""
    active = set()
    for add, *key in events:
        if add:
            active.add(tuple(key))
        else:
            active.discard(tuple(key))
    return active


def bar_writes(text):
    """[(bar, addr, size)] of the BAR writes that reached the proxy's handler."""
    return [(int(m.group(2)), int(m.group(3), 16), int(m.group(4)))
            for m in BAR_WRITE_RE.finditer(text)]


def hits(doorbell, write):
    """Whether a BAR write touches a doorbell (size 0: any access at its offset)."""
    bar, offset, size, _, _ = doorbell
    wbar, addr, wsize = write
    return wbar == bar and addr < offset + max(size, 1) and offset < addr + wsize


class FastPathVM(Topology):
    """One proxied disk whose main QEMU and remote trace the fast path."""

    def __init__(self, cfg, image, workdir):
        kind, props, transport, _ = cfg
        args = ["-drive", f"id=d1,file={image},format=raw,if=none",
                "-device", KINDS[kind]["device"]]
        args += trace_args(REMOTE_TRACES)
        self.disk_remote = Remote("r1", args, ["blk1"], transport=transport,
                                  proxy_props={"blk1": props} if props else None)
        super().__init__([self.disk_remote], mode="proxy", machine="pc",
                         main_args=trace_args(MAIN_TRACES), name=config_id(cfg),
                         workdir=workdir)

    def remote_log(self):
        return self.disk_remote.child.output()


def find_disk(vm, kind):
    """(bdf, block device name) of the proxied disk, waiting (bounded) for the disk."""
    bdf, name = vm.pci_disk(KINDS[kind]["pci"], KINDS[kind]["disk_glob"])
    # With native NVMe multipath the controller's path is nvmeXcYnZ; the disk is nvmeXnZ.
    return bdf, re.sub(r"^(nvme\d+)c\d+(n\d+)$", r"\1\2", name)


@pytest.fixture(scope="class", params=CONFIGS, ids=[config_id(c) for c in CONFIGS])
def fast_vm(request, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp(config_id(request.param)))
    image = os.path.join(workdir, "disk.img")
    # A pattern of its own per configuration: no run can pass on another's data.
    data = make_disk(image, DISK_MIB, 0xfa57 + CONFIGS.index(request.param))

    def setup(vm):
        vm.cfg, vm.image, vm.host_data = request.param, image, data
        vm.bdf, vm.disk = find_disk(vm, request.param[0])
        # Doorbells are in place once the disk is there; the I/O starts here.
        vm.io_mark = len(vm.main_log())
        vm.io_done = False

    yield from serve_vm(FastPathVM(request.param, image, workdir), setup)


class TestFastPath:
    def test_doorbells_handed_over(self, fast_vm):
        """Doorbell eventfds reach the proxy exactly when the feature is on."""
        kind, _, _, expect = fast_vm.cfg
        proxy = doorbell_events(fast_vm.main_log(), IOEVENTFD_RE)
        remote = doorbell_events(fast_vm.remote_log(), DOORBELL_RE)
        adds = [e for e in proxy if e[0] == 1]
        print(f"{config_id(fast_vm.cfg)}: {len(adds)} proxy_ioeventfd adds, "
              f"{len(proxy) - len(adds)} removals, active {sorted(active_doorbells(proxy))}")
        if not expect:
            assert not proxy, f"doorbells handed to the proxy: {proxy}"
            assert not remote, f"the remote handed doorbells over: {remote}"
            return
        assert adds, f"no proxy_ioeventfd add for the {kind}"
        # the proxy registers what the remote sent, and nothing else
        assert proxy == remote, f"proxy {proxy} != remote {remote}"
        assert active_doorbells(proxy), f"no doorbell left in place: {proxy}"
        assert all(a[1] in range(6) for a in adds), adds
        assert "proxy_failed" not in fast_vm.main_log()

    def test_host_pattern_reads_back(self, fast_vm):
        assert fast_vm.guest_sha256(fast_vm.disk, 0, DISK_MIB) == sha256(fast_vm.host_data)

    def test_guest_write_reads_back(self, fast_vm):
        fast_vm.written = fast_vm.write_reads_back(fast_vm.disk, fast_vm.host_data, WRITE_OFFSET_MIB,
                                           WRITE_MIB)
        fast_vm.io_done = True

    def test_notifications_path(self, fast_vm):
        """During the I/O, doorbell writes bypass the proxy's handler exactly when
        they are eventfds; without them they go through it."""
        assert fast_vm.io_done, "the I/O of the previous tests did not run"
        _, _, _, expect = fast_vm.cfg
        io_log = fast_vm.main_log(fast_vm.io_mark)
        writes = bar_writes(io_log)
        print(f"{config_id(fast_vm.cfg)}: {len(writes)} BAR writes through the proxy "
              f"during the I/O: {sorted(set(writes))[:20]}")
        assert "proxy_failed" not in io_log
        if expect:
            doorbells = active_doorbells(
                doorbell_events(fast_vm.main_log()[:fast_vm.io_mark], IOEVENTFD_RE))
            stray = [w for w in writes if any(hits(d, w) for d in doorbells)]
            assert not stray, f"doorbell writes reached the proxy's handler: {stray[:20]}"
        else:
            assert writes, "no BAR write reached the proxy during the I/O: how was " \
                           "the device notified?"

    def test_idle_remote_sleeps(self, fast_vm):
        """Once the guest's I/O is over, the remote stops polling: an idle device
        costs no CPU (a remote that kept polling would use a whole one)."""
        assert fast_vm.io_done, "the I/O of the previous tests did not run"
        pid = fast_vm.disk_remote.child.pid
        # Longer than the widest polling window and any flush the guest does.
        time.sleep(IDLE_SETTLE_SECONDS)
        before, start = process_cpu_ns(pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        used = (process_cpu_ns(pid) - before) / 1e9
        elapsed = time.monotonic() - start
        print(f"{config_id(fast_vm.cfg)}: the idle remote used {used:.4f} s of CPU "
              f"in {elapsed:.2f} s")
        assert used < IDLE_MAX_CPU * elapsed, \
            f"the idle remote used {used:.3f} s of CPU in {elapsed:.2f} s"

    def test_poweroff_image_holds_guest_data(self, fast_vm):
        assert fast_vm.io_done, "the I/O of the previous tests did not run"
        assert fast_vm.poweroff() == 0, "main QEMU did not exit cleanly after guest poweroff"
        codes = fast_vm.remote_exit_codes()
        assert all(rc == 0 for rc in codes.values()), f"remote exit statuses: {codes}"
        start, end = WRITE_OFFSET_MIB * MIB, (WRITE_OFFSET_MIB + WRITE_MIB) * MIB
        assert file_sha256(fast_vm.image, start, WRITE_MIB * MIB) == fast_vm.written
        with open(fast_vm.image, "rb") as f:
            image = f.read()
        assert len(image) == DISK_MIB * MIB
        assert image[:start] == fast_vm.host_data[:start], "data before the write changed"
        assert image[end:] == fast_vm.host_data[end:], "data after the write changed"
