# SPDX-License-Identifier: GPL-2.0-or-later
"""Two vCPUs using two proxied devices do not wait for each other.

Two LSI53C895A controllers live in two remote processes. The first remote is
frozen (SIGSTOP), and vCPU 0 reads a register of its controller: that read
cannot complete until the proxy gives up on the remote (its timeout). While it
hangs, vCPU 1 reads a register of the second controller 200 times. If the
proxy held a lock shared by the two devices (the BQL, or one socket) during
the round trip, those reads would wait for the frozen one; they must instead
finish at their normal pace, long before the first read gives up.

The guest measures both with mmio-lat (bench/guest/mmio-lat.c), each pinned
to its CPU; the serial console's interrupt is moved to CPU 1 so that the
console keeps working while vCPU 0 is stuck.

Checked by hand that this test fails when the proxy keeps the BQL for the
round trip: the whole guest then stops with vCPU 0 (the "live" reads only
start once the frozen read has given up, 8 s later).
"""

import os
import re
import signal

from mpqemu_topology import Remote, Topology
from mpqemu_vm import LSI_VENDOR_DEVICE

STUCK_TIMEOUT_MS = 8000     # the frozen remote's proxy gives up after this
READS = 200
# DSA: a plain read/write register in the LSI's MMIO BAR that is not
# shadowed, so that every read goes to the remote (a shadowed one, such as
# SCRATCHA, may be served from the copy in the main QEMU while the remote
# is frozen)
DSA = "0x10"


def mmio_lat_value(text, bdf):
    m = re.search(rf"bdf={re.escape(bdf)} .*value=(0x[0-9a-f]+)", text)
    assert m, f"no mmio-lat result for {bdf} in:\n{text}"
    return int(m.group(1), 16)


def interval(text, name):
    """(start, end) in guest CLOCK_MONOTONIC ns of a timed() command."""
    m = re.search(rf"^{name}=(\d+)-(\d+)$", text, re.M)
    assert m, f"no {name} in:\n{text}"
    return int(m.group(1)), int(m.group(2))


def timed(name, cmd):
    """A guest command line that runs cmd and prints name=<start>-<end>."""
    return f"s=$(nsclock); {cmd}; e=$(nsclock); echo {name}=$s-$e"


def test_frozen_remote_does_not_stall_other_device():
    remotes = [
        Remote("frozen", ["-device", "lsi53c895a,id=lsi1"], ["lsi1"],
               proxy_props={"lsi1": f"addr=0x10,timeout={STUCK_TIMEOUT_MS}"}),
        Remote("live", ["-device", "lsi53c895a,id=lsi2"], ["lsi2"],
               proxy_props={"lsi2": "addr=0x11"}),
    ]
    with Topology(remotes, mode="proxy", machine="pc", main_args=["-smp", "2"],
                  append="iomem=relaxed") as vm:
        bdfs = vm.pci_functions(*LSI_VENDOR_DEVICE)
        stuck_bdf, live_bdf = "0000:00:10.0", "0000:00:11.0"
        assert sorted(bdfs) == [stuck_bdf, live_bdf], bdfs
        assert vm.shell.check("grep -c ^processor /proc/cpuinfo").strip() == "2"

        # Both work to begin with; the baseline shows the normal pace.
        assert mmio_lat_value(vm.shell.check(
            f"mmio-lat -n {READS} {stuck_bdf} 1 {DSA}"), stuck_bdf) != 0xffffffff
        start, end = interval(vm.shell.check(timed(
            "live", f"taskset 2 mmio-lat -n {READS} {live_bdf} 1 {DSA}")), "live")
        baseline_ns = end - start

        # The shell and the console stay on CPU 1; vCPU 0 will be stuck.
        vm.shell.check("taskset -p 2 $$ >/dev/null; "
                       "for irq in $(grep -l . /proc/irq/*/smp_affinity); do "
                       "echo 2 > $irq 2>/dev/null; done; true")

        os.kill(remotes[0].child.pid, signal.SIGSTOP)
        try:
            stuck = timed("stuck", f"mmio-lat -n 1 {stuck_bdf} 1 {DSA}")
            live = timed("live", f"taskset 2 mmio-lat -n {READS} {live_bdf} 1 {DSA}")
            # The live reads start a second after the stuck one has begun.
            out = vm.shell.check(
                "rm -f /tmp/started; "
                f"taskset 1 sh -c 'touch /tmp/started; {stuck}' > /tmp/stuck.out 2>&1 & "
                "while [ ! -e /tmp/started ]; do :; done; "
                f"sleep 1; {live}; wait; cat /tmp/stuck.out",
                timeout=STUCK_TIMEOUT_MS / 1000 + 60)
        finally:
            os.kill(remotes[0].child.pid, signal.SIGCONT)

        stuck_start, stuck_end = interval(out, "stuck")
        live_start, live_end = interval(out, "live")
        # The frozen device's read really did hang until the proxy gave up
        # (the guest's clock, read on a vCPU that was held in the host for
        # the whole wait, can show less than the proxy's timeout)...
        assert stuck_end - stuck_start >= 2e9, out
        assert mmio_lat_value(out, stuck_bdf) == 0xffffffff, out
        # ...and the other device's reads ran while it hung, at about their
        # normal pace, and were done long before it ended.
        assert stuck_start < live_start < live_end < stuck_end, out
        assert live_end - live_start < 3e9, (
            f"{READS} reads of the live device took "
            f"{(live_end - live_start) / 1e9:.1f} s (baseline "
            f"{baseline_ns / 1e9:.3f} s) while another vCPU waited on a "
            f"frozen remote:\n{out}")
