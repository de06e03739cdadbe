# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers for the migration tests (test_migration.py): a source VM with a
proxied disk, a destination QEMU prepared through QMP only (started with
-incoming defer, its remote process and proxy created before the migration),
guest loops that keep doing I/O while the VM migrates, and the migration.

Both VMs are CrashVMs (mpqemu_crash): a pc guest with no proxied device at
start, background I/O helpers and remote processes spawned through
x-add-remote-process.  The disk images are shared: the destination's remote
process opens the same file.
"""

import os
import re
import struct
import time

from mpqemu_crash import CrashVM, nvme_blockdev_args
from mpqemu_remote_qmp import EventLog, remote_qmp, wait_until
from mpqemu_topology import Topology, start_or_fail
from mpqemu_vm import GuestShell, VMError

LOOP_DIR = "/tmp/migloop"
PROXY_ADDR = "0x6"      # the same slot on both sides


class DestinationVM(CrashVM):
    """The main QEMU of a migration's destination: same machine and RAM as
    the source, started with -incoming defer; the guest arrives later."""

    def __init__(self, name):
        super().__init__(name=name)
        self.extra_main_args += ["-incoming", "defer"]

    def start(self):  # pylint: disable=arguments-differ
        Topology.start(self, boot=False)
        self.events = EventLog(self.qmp)
        return self

    def take_over_guest(self):
        """The guest runs here now: its serial console is this QEMU's."""
        self.shell = GuestShell(self.console, self._alive)


def start_destination(name):
    return start_or_fail(DestinationVM(name[:30] + "-dst"))


# ---------------------------------------------------------------- devices


def lsi_args(image):
    return nvme_blockdev_args(image) + ["-device", "lsi53c895a,id=lsi0",
                                        "-device", "scsi-hd,id=sd0,drive=d0,bus=lsi0.0"]


def virtio_blk_args(image, serial):
    return nvme_blockdev_args(image) + ["-device", f"virtio-blk-pci,id=vblk0,drive=d0,"
                                        f"serial={serial},disable-legacy=on"]


def nvme_args(image, serial):
    return nvme_blockdev_args(image) + ["-device", f"nvme,id=nvme0,drive=d0,serial={serial}"]


# (remote arguments, remote device id) of each device class, for an image
DEVICES = {
    "lsi53c895a": lambda image: (lsi_args(image), "lsi0"),
    "virtio-blk": lambda image: (virtio_blk_args(image, "mpqmig"), "vblk0"),
    "nvme": lambda image: (nvme_args(image, "mpqmig"), "nvme0"),
}


def serve(vm, rp_id, args, devid, proxy_id="px0", addr=PROXY_ADDR):
    """Spawn remote process rp_id with args (its device on the command line)
    and plug a proxy for devid into a slot both sides use."""
    vm.add_remote_process(rp_id, log=vm.new_log(f"{rp_id}-{vm.name[-3:]}"), args=args)
    return vm.plug(proxy_id, rp_id, devid, addr=addr)


def guest_disk(vm, kind):
    if kind == "lsi53c895a":
        return vm.lsi_disk()
    if kind == "virtio-blk":
        return vm.virtio_disk("mpqmig")
    return vm.nvme_disk("mpqmig")


# ---------------------------------------------------------------- guest loops


def start_write_verify_loop(vm, dev, blocks=256):
    """In the guest's background: write 64 KiB blocks of fresh random data to
    /dev/dev (O_DIRECT), one after the other over its first `blocks` blocks,
    read each back (O_DIRECT) and compare.  Counts go to LOOP_DIR/ok and
    LOOP_DIR/bad; the data last written to block b stays in LOOP_DIR/b."""
    vm.shell.check(
        f"rm -rf {LOOP_DIR}; mkdir -p {LOOP_DIR}; echo 0 > {LOOP_DIR}/ok; echo 0 > {LOOP_DIR}/bad; "
        f"(ok=0; bad=0; i=0; while [ ! -e {LOOP_DIR}/stop ]; do b=$((i % {blocks})); "
        f"dd if=/dev/urandom of={LOOP_DIR}/$b bs=64k count=1 2>/dev/null; "
        f"if dd if={LOOP_DIR}/$b of=/dev/{dev} bs=64k seek=$b count=1 oflag=direct "
        f"conv=notrunc 2>>{LOOP_DIR}/err && "
        f"dd if=/dev/{dev} of={LOOP_DIR}/r bs=64k skip=$b count=1 iflag=direct "
        f"2>>{LOOP_DIR}/err && cmp -s {LOOP_DIR}/$b {LOOP_DIR}/r; "
        f"then ok=$((ok+1)); echo $ok > {LOOP_DIR}/ok; "
        f"else bad=$((bad+1)); echo $bad > {LOOP_DIR}/bad; echo \"block $b\" >> {LOOP_DIR}/err; fi; "
        f"i=$((i+1)); done; echo $i > {LOOP_DIR}/done) </dev/null >/dev/null 2>&1 & "
        f"echo $! > {LOOP_DIR}/pid")


def word_checksum(data):
    """The checksum dma-check (bench/guest/dma-check.c) computes."""
    h = 0xcbf29ce484222325
    for (word,) in struct.iter_unpack("<Q", data):
        h = ((h ^ word) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def start_dma_check(vm, dev, mib, range_a, range_b):
    """In the guest's background: dma-check, which has the device DMA range
    A (then, after switch_dma_range(), range B) of /dev/dev into one buffer
    no CPU writes, pass after pass, and checks the buffer after each read
    and again 200 ms later.  Counts go to LOOP_DIR/ok and LOOP_DIR/bad."""
    vm.shell.check(
        f"rm -rf {LOOP_DIR}; mkdir -p {LOOP_DIR}; echo 0 > {LOOP_DIR}/ok; "
        f"echo 0 > {LOOP_DIR}/bad; dma-check /dev/{dev} {mib} {word_checksum(range_a)} "
        f"{word_checksum(range_b)} {LOOP_DIR} </dev/null >{LOOP_DIR}/err 2>&1 & "
        f"echo $! > {LOOP_DIR}/pid")


def switch_dma_range(vm):
    """dma-check reads range B from now on; returns once a pass has."""
    vm.shell.check(f"touch {LOOP_DIR}/switch")
    wait_loop_progress(vm, 2)
    if loop_count(vm, "last") != 1:
        raise VMError("dma-check did not switch to range B")


def loop_count(vm, name):
    out = vm.shell.check(f"cat {LOOP_DIR}/{name}", timeout=30).split()
    return int(out[-1]) if out and out[-1].isdigit() else 0


def wait_loop_progress(vm, more, timeout=60):
    start = loop_count(vm, "ok") + loop_count(vm, "bad")
    deadline = time.monotonic() + timeout
    while loop_count(vm, "ok") + loop_count(vm, "bad") < start + more:
        if time.monotonic() > deadline:
            _, err = vm.shell.run(f"tail -n 20 {LOOP_DIR}/err; dmesg | tail -n 20")
            raise VMError(f"the guest's loop made no progress in {timeout}s:\n{err}")
        time.sleep(0.3)


def stop_loop(vm, timeout=120):
    rc, out = vm.shell.run(
        f"touch {LOOP_DIR}/stop; i=0; while [ ! -e {LOOP_DIR}/done ] && "
        f"[ $i -lt {timeout * 10} ]; do sleep 0.1; i=$((i+1)); done; [ -e {LOOP_DIR}/done ]",
        timeout=timeout + 30)
    if rc != 0:
        raise VMError(f"the guest's loop did not end within {timeout}s:\n{out}")


def loop_errors(vm):
    _, out = vm.shell.run(f"tail -n 20 {LOOP_DIR}/err")
    return out


def verify_written_blocks(vm, dev, blocks=256):
    """Every block of the write-verify loop reads back (O_DIRECT) as the data
    the guest last wrote there; returns the number of blocks checked."""
    out = vm.shell.check(
        f"n=0; bad=0; for b in $(seq 0 {blocks - 1}); do [ -e {LOOP_DIR}/$b ] || continue; "
        f"dd if=/dev/{dev} of={LOOP_DIR}/r bs=64k skip=$b count=1 iflag=direct 2>/dev/null; "
        f"cmp -s {LOOP_DIR}/$b {LOOP_DIR}/r || {{ bad=$((bad+1)); echo \"differs: $b\"; }}; "
        f"n=$((n+1)); done; echo \"checked=$n bad=$bad\"", timeout=300)
    m = re.search(r"checked=(\d+) bad=(\d+)", out)
    if not m or m.group(2) != "0":
        raise VMError(f"blocks the guest wrote do not read back:\n{out}")
    return int(m.group(1))


# ---------------------------------------------------------------- migration


def migration_status(vm):
    return vm.qmp.cmd("query-migrate").get("status")


def migrate(src, dst, uri, timeout=300, converge_after=None, before_converging=None):
    """Migrate src to dst (prepared, waiting with -incoming defer) over uri
    ("tcp:HOST:0": a port dst picks) and wait until the guest runs on dst.
    With converge_after, the bandwidth and downtime limits set before are
    lifted once the migration has synced its dirty log that many times,
    after before_converging() has run.
    Returns src's final query-migrate."""
    assert dst.qmp.cmd("migrate-incoming", uri=uri) == {}
    if uri.startswith("tcp:") and uri.endswith(":0"):
        addr = dst.qmp.cmd("query-migrate")["socket-address"][0]
        uri = f"tcp:{addr['host']}:{addr['port']}"
    assert src.qmp.cmd("migrate", uri=uri) == {}
    deadline = time.monotonic() + timeout
    while True:
        info = src.qmp.cmd("query-migrate")
        if info.get("status") == "completed":
            break
        if info.get("status") in ("failed", "cancelled"):
            raise VMError(f"migration {info.get('status')}: {info.get('error-desc')}")
        if time.monotonic() > deadline:
            raise VMError(f"migration not done in {timeout}s: {info}")
        if converge_after and info.get("ram", {}).get("dirty-sync-count", 0) >= converge_after:
            if before_converging:
                before_converging()
            assert src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40,
                                                            "downtime-limit": 300}) == {}
            converge_after = None
        time.sleep(0.2)
    wait_until(lambda: dst.qmp.cmd("query-status")["status"] == "running", 60,
               "the destination VM to run")
    dst.take_over_guest()
    return info


def socket_uri(vm, name="mig.sock"):
    return "unix:" + os.path.join(vm.dir, name)


def remote_status(vm, rp_id):
    return remote_qmp(vm, rp_id, "query-status")["status"]
