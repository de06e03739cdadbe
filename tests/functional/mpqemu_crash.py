# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers for the crash tests (test_crash.py): a guest with two proxied
disks in two remote processes, background I/O in the guest, and timed checks
of how the main QEMU and the guest react when one remote process dies or
hangs.

CrashVM is a MainVM (mpqemu_remote_qmp) whose guest has a short NVMe I/O
timeout (nvme_core.io_timeout on the kernel command line: the guest's /init
hands "<module>.<param>=" words to insmod) and prints no kernel messages on
the serial console (they would interleave with the shell's output while the
NVMe driver complains about the dead controller).
"""

import os
import re
import time

from mpqemu_remote_qmp import MainVM, remote_qmp, remote_qom_names
from mpqemu_topology import start_or_fail
from mpqemu_vm import MIB, VMError, make_disk

DISK_MIB = 16
# Seconds.  The guest's NVMe driver times an I/O out after this long, then
# (controller alive) aborts it and waits as long again, then resets the
# controller.  A replacement has to be attached before the first timeout;
# the guest's recovery then takes about twice this.
IO_TIMEOUT = 10
BG_DIR = "/tmp/bgio"


class CrashVM(MainVM):
    """A pc guest with no proxied device yet, a short NVMe I/O timeout and a
    quiet console."""

    def __init__(self, name, io_timeout=IO_TIMEOUT):
        super().__init__("pc", name=name)
        self.io_timeout = io_timeout
        self.append = f"nvme_core.io_timeout={io_timeout}"

    def start(self):
        super().start()
        self.shell.check("dmesg -n 1", timeout=30)
        got = self.shell.check("cat /sys/module/nvme_core/parameters/io_timeout").split()
        if got != [str(self.io_timeout)]:
            raise VMError(f"nvme_core.io_timeout is {got} in the guest, not {self.io_timeout}")
        return self

    # ------------------------------------------------------------ host side
    def new_disk(self, name, seed):
        """A raw image with a known pattern in the VM's directory: (path, data)."""
        path = os.path.join(self.dir, f"{name}.img")
        return path, make_disk(path, DISK_MIB, seed)

    def new_log(self, name):
        path = os.path.join(self.dir, f"{name}.log")
        self.extra_logs.append(path)
        return path

    def spawn_with_nvme(self, rp_id, image, devid, serial, **props):
        """Spawn remote process rp_id with the image as blockdev 'd0' on its
        command line (a replacement gets the same arguments), and create an
        NVMe controller devid on it through x-remote-qmp.  Returns the
        RemoteProcessInfo of the new process."""
        info = self.add_remote_process(rp_id, log=self.new_log(rp_id),
                                       args=nvme_blockdev_args(image), **props)
        assert remote_qmp(self, rp_id, "device_add", driver="nvme", id=devid, drive="d0",
                          serial=serial) == {}
        return info

    def spawn_with_virtio_blk(self, rp_id, image, devid, serial, **props):
        """Spawn remote process rp_id serving a modern virtio-blk devid on image."""
        # (its sandbox is on before the image is named: allow it)
        props.setdefault("allow-paths", [image])
        info = self.add_remote_process(rp_id, log=self.new_log(rp_id), **props)
        assert remote_qmp(self, rp_id, "blockdev-add", driver="raw", **{"node-name": "v0"},
                          file={"driver": "file", "filename": image}) == {}
        assert remote_qmp(self, rp_id, "device_add", driver="virtio-blk-pci", id=devid,
                          drive="v0", serial=serial, **{"disable-legacy": "on"}) == {}
        assert devid in remote_qom_names(self, rp_id, "/machine/peripheral")
        return info

    # ------------------------------------------------------------ guest side
    def virtio_disk(self, serial, timeout=30):
        """Name (e.g. 'vda') of the virtio-blk disk with this serial number."""
        rc, out = self.shell.run(
            f"f=; i=0; while [ -z \"$f\" ] && [ $i -lt {timeout * 10} ]; do "
            "for b in /sys/block/vd*; do "
            f"[ \"$(cat $b/serial 2>/dev/null)\" = \"{serial}\" ] && f=$(basename $b); done; "
            "[ -z \"$f\" ] && sleep 0.1; i=$((i+1)); done; echo \"disk=$f\"; [ -n \"$f\" ]",
            timeout=timeout + 30)
        m = re.search(r"disk=(vd[a-z]+)", out)
        if rc != 0 or not m:
            raise VMError(f"no virtio-blk disk with serial {serial} in the guest:\n{out}")
        self.wait_for_path(f"/dev/{m.group(1)}", timeout)
        return m.group(1)

    def start_background_reads(self, dev, span_mib=DISK_MIB):
        """Read /dev/dev with O_DIRECT, 1 MiB at a time over its first
        span_mib MiB, in a loop in the background until stop_background().
        Each read that succeeds bumps a counter (background_count()), each
        one that fails another (background_failures())."""
        self.shell.check(
            f"rm -rf {BG_DIR}; mkdir -p {BG_DIR}; echo 0 > {BG_DIR}/ok; "
            f"echo 0 > {BG_DIR}/fail; "
            f"(ok=0; fail=0; i=0; while [ ! -e {BG_DIR}/stop ]; do "
            f"if dd if=/dev/{dev} of=/dev/null bs=64k count=16 "
            f"skip=$(( (i % {span_mib}) * 16 )) iflag=direct 2>{BG_DIR}/err; "
            f"then ok=$((ok+1)); echo $ok > {BG_DIR}/ok; "
            f"else fail=$((fail+1)); echo $fail > {BG_DIR}/fail; sleep 0.2; fi; "
            f"i=$((i+1)); done; echo done > {BG_DIR}/done) </dev/null >/dev/null 2>&1 & "
            f"echo $! > {BG_DIR}/pid")

    def _bg_counter(self, name):
        out = self.shell.check(f"cat {BG_DIR}/{name}", timeout=30).split()
        return int(out[-1]) if out and out[-1].isdigit() else 0

    def background_count(self):
        return self._bg_counter("ok")

    def background_failures(self):
        return self._bg_counter("fail")

    def wait_background_progress(self, more=3, timeout=30):
        """Wait until the background loop has completed `more` further reads;
        returns the count then."""
        start = self.background_count()
        deadline = time.monotonic() + timeout
        while True:
            now = self.background_count()
            if now >= start + more:
                return now
            if time.monotonic() > deadline:
                _, err = self.shell.run(f"cat {BG_DIR}/err; dmesg | tail -n 20")
                raise VMError(f"the guest's background reads made no progress in {timeout}s "
                              f"({start} -> {now}):\n{err}")
            time.sleep(0.3)

    def stop_background(self, timeout=60):
        """Stop the background loop and wait until it has ended (bounded)."""
        rc, out = self.shell.run(
            f"touch {BG_DIR}/stop; i=0; while [ ! -e {BG_DIR}/done ] && "
            f"[ $i -lt {timeout * 10} ]; do sleep 0.1; i=$((i+1)); done; [ -e {BG_DIR}/done ]",
            timeout=timeout + 30)
        if rc != 0:
            raise VMError(f"the guest's background reads did not end within {timeout}s:\n{out}")

    def ram_file(self, mib=32):
        """Fill a tmpfs file (guest RAM) with random data; returns its sha256."""
        out = self.shell.check(f"dd if=/dev/urandom of=/tmp/ramcheck bs=1M count={mib} "
                               "2>/dev/null && sha256sum /tmp/ramcheck", timeout=60)
        return re.search(r"\b([0-9a-f]{64})\s", out).group(1)

    def ram_file_sha256(self):
        out = self.shell.check("sha256sum /tmp/ramcheck", timeout=60)
        return re.search(r"\b([0-9a-f]{64})\s", out).group(1)


def nvme_blockdev_args(image):
    return ["-blockdev", f"driver=file,filename={image},node-name=f0",
            "-blockdev", "driver=raw,file=f0,node-name=d0"]


def region(data, offset_mib, length_mib):
    return data[offset_mib * MIB:(offset_mib + length_mib) * MIB]


def started_crash_vm(request):
    """A pytest fixture's body: a started CrashVM named after the test, shut
    down and removed after it."""
    vm = start_or_fail(CrashVM(name=request.node.name[:40]))
    yield vm
    vm.close()
    vm.cleanup()
