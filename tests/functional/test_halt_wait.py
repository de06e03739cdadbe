# SPDX-License-Identifier: GPL-2.0-or-later
"""A halted vCPU takes the interrupts of proxied devices itself (halt-wait).

With x-pci-proxy-dev's halt-wait on (the default), a vCPU that halts while
the guest does I/O waits on the sockets of the proxied devices as well as
for its kicks, and applies the interrupt a remote sends; the main loop no
longer has to wake up first.
The main QEMU traces proxy_halt_wait, proxy_halt_woken (its end),
proxy_halt_wake (a halted vCPU read a device's socket), proxy_halt_slept (a
vCPU looked at the sockets for its window, then slept) and proxy_msi /
proxy_set_irq (an interrupt applied), each with the thread that did it.

  * A proxied virtio-blk (MSI-X, one vCPU) and a proxied LSI with a SCSI
    disk (INTx, two vCPUs), on a disk throttled to 1000 IOPS, read the
    host's pattern, read back what the guest wrote and read 4 KiB blocks one
    at a time; during that I/O halted vCPUs read the sockets themselves.
  * The main loop leaves those sockets to the waiting vCPU: it applies no
    interrupt while a vCPU waits on them (it used to race the vCPU for
    each, and win half the time).
  * A vCPU looks at the sockets before it sleeps, for a window that adapts
    to its waits: the throttled disk keeps each waiting for about a
    millisecond, so the window stays at its narrowest and the vCPU sleeps
    almost at once.
  * With halt-wait=off the same I/O is right and no vCPU waits there.
  * The idle guest's main QEMU uses next to no CPU: a vCPU that went round
    its halt wait without sleeping would use a whole one.
  * The remote is killed while the guest idles, so that the vCPU waits on
    its socket as it hangs up: the device fails, and the main QEMU and the
    guest keep running, still without burning a CPU.
"""

import hashlib
import os
import re
import signal
import time

import pytest

from mpqemu_topology import (Remote, Topology, process_cpu_ns, serve_vm,
                             trace_args)
from mpqemu_vm import make_disk

DISK_MIB = 8
WRITE_OFFSET_MIB = 3
WRITE_MIB = 2
SMALL_READS = WRITE_OFFSET_MIB * 256     # 4 KiB blocks before what the guest writes
# A disk slow enough that the guest halts while it waits for each request,
# rather than finding the answer there before it could halt. (At 2000 IOPS,
# one run of the whole suite saw the vCPU halt 31 times in all, against
# some 900 usually: a millisecond a request leaves it more room.)
DISK_IOPS = 1000

KINDS = {
    "virtio-blk": {
        "devices": ["-device", "virtio-blk-pci,id=dev1,drive=d1,disable-legacy=on"],
        "pci": ("0x1af4", "0x1042"),
        "disk_glob": "/sys/bus/pci/devices/{bdf}/virtio*/block/*",
    },
    "lsi53c895a": {
        "devices": ["-device", "lsi53c895a,id=dev1",
                    "-device", "scsi-hd,drive=d1,bus=dev1.0"],
        "pci": ("0x1000", "0x0012"),
        "disk_glob": "/sys/bus/pci/devices/{bdf}/host*/target*/*/block/*",
    },
}

# (device, x-pci-proxy-dev properties, vCPUs, halted vCPUs read the socket)
CONFIGS = [
    ("virtio-blk", "", 1, True),
    ("lsi53c895a", "", 2, True),
    ("virtio-blk", "halt-wait=off", 1, False),
]

# The idle main QEMU, measured for IDLE_SECONDS after IDLE_SETTLE_SECONDS
# without I/O, may use at most this share of one CPU.
IDLE_SETTLE_SECONDS = 1
IDLE_SECONDS = 3
IDLE_MAX_CPU = 0.15

MAIN_TRACES = ("proxy_halt_wait", "proxy_halt_woken", "proxy_halt_wake", "proxy_halt_slept",
               "proxy_msi", "proxy_set_irq", "proxy_failed")
# How long a halted vCPU looks before it sleeps (hw-proxy/proxy-halt-wait.c)
SPIN_MIN_NS, SPIN_MAX_NS = 5000, 50000

# With -msg timestamp=on the log backend puts "tid@seconds:" in front of the
# event's name.
WAKE_RE = re.compile(r"proxy_halt_wake cpu (\d+) reads link (\d+)")
WAIT_RE = re.compile(r"proxy_halt_wait cpu (\d+) waits on (\d+) links")
SLEPT_RE = re.compile(r"proxy_halt_slept cpu \d+: slept, waited (\d+) ns "
                      r"\(next window (\d+) ns\)")
IRQ_RE = re.compile(r"proxy_(?:msi|set_irq) ")
# In order (the events of the main QEMU all happen with the BQL): a vCPU
# begins or ends its wait on the links, or a thread raises an interrupt
# (an MSI, or INTx going up)
EVENT_RE = re.compile(r"^(\d+)@[\d.]+:proxy_(?:halt_(wait|woken) cpu (\d+)"
                      r"|(?:msi \S+ address|set_irq \S+ level 1))", re.MULTILINE)


def main_loop_raises(log, main_pid):
    """(interrupts raised, by the main loop, by it while a vCPU waited on the links)"""
    waiting, raised, by_main, by_main_in_wait = set(), 0, 0, 0
    for tid, wait, cpu in EVENT_RE.findall(log):
        if wait == "wait":
            waiting.add(cpu)
        elif wait == "woken":
            waiting.discard(cpu)
        else:
            raised += 1
            if int(tid) == main_pid:
                by_main += 1
                by_main_in_wait += bool(waiting)
    return raised, by_main, by_main_in_wait


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def config_id(cfg):
    kind, props, cpus, _ = cfg
    return f"{kind}-smp{cpus}-" + (props.replace("=", "-") or "default")


def idle_cpu_share(pid):
    """The share of one CPU that pid used while the guest did nothing."""
    time.sleep(IDLE_SETTLE_SECONDS)
    before, start = process_cpu_ns(pid), time.monotonic()
    time.sleep(IDLE_SECONDS)
    return (process_cpu_ns(pid) - before) / 1e9 / (time.monotonic() - start)


class HaltWaitVM(Topology):
    """One proxied disk; the main QEMU traces the halt wait and interrupts."""

    def __init__(self, cfg, image, workdir):
        kind, props, cpus, _ = cfg
        args = ["-drive", f"id=d1,file={image},format=raw,if=none,"
                f"throttling.iops-total={DISK_IOPS}"] + KINDS[kind]["devices"]
        self.disk_remote = Remote("r1", args, ["dev1"],
                                  proxy_props={"dev1": props} if props else None)
        super().__init__([self.disk_remote], mode="proxy", machine="pc",
                         main_args=["-smp", str(cpus), "-msg", "timestamp=on"]
                         + trace_args(MAIN_TRACES),
                         name=config_id(cfg), workdir=workdir)


@pytest.fixture(scope="class", params=CONFIGS, ids=[config_id(c) for c in CONFIGS])
def halt_vm(request, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp(config_id(request.param)))
    image = os.path.join(workdir, "disk.img")
    data = make_disk(image, DISK_MIB, 0x4a17 + CONFIGS.index(request.param))
    kind = KINDS[request.param[0]]

    def setup(vm):
        vm.cfg, vm.image, vm.host_data = request.param, image, data
        vm.bdf, vm.disk = vm.pci_disk(kind["pci"], kind["disk_glob"])
        vm.io_mark = len(vm.main_log())
        vm.io_done = False

    yield from serve_vm(HaltWaitVM(request.param, image, workdir), setup)


class TestHaltWait:
    def test_host_pattern_reads_back(self, halt_vm):
        assert halt_vm.guest_sha256(halt_vm.disk, 0, DISK_MIB) == sha256(halt_vm.host_data)

    def test_guest_write_reads_back(self, halt_vm):
        halt_vm.write_reads_back(halt_vm.disk, halt_vm.host_data, WRITE_OFFSET_MIB, WRITE_MIB)
        halt_vm.io_done = True

    def test_small_reads(self, halt_vm):
        """Requests one at a time, each with its own interrupt: the guest halts
        while the device works, and wakes on the interrupt."""
        out = halt_vm.shell.check(
            f"dd if=/dev/{halt_vm.disk} bs=4k count={SMALL_READS} iflag=direct | sha256sum",
            timeout=120)
        assert sha256(halt_vm.host_data[:SMALL_READS * 4096]) in out, out

    def test_interrupts_path(self, halt_vm):
        """During the I/O, halted vCPUs read the device's socket exactly when
        halt-wait is on; the interrupts arrive either way."""
        assert halt_vm.io_done, "the I/O of the previous tests did not run"
        _, _, cpus, expect = halt_vm.cfg
        log = halt_vm.main_log()
        io_log = log[halt_vm.io_mark:]
        waits = [(int(c), int(n)) for c, n in WAIT_RE.findall(log)]
        wakes = [(int(c), int(n)) for c, n in WAKE_RE.findall(io_log)]
        irqs = len(IRQ_RE.findall(io_log))
        raised, by_main, by_main_in_wait = main_loop_raises(io_log, halt_vm.main.pid)
        print(f"{config_id(halt_vm.cfg)}: {len(waits)} halt waits, {len(wakes)} socket "
              f"reads by halted vCPUs and {irqs} interrupts during the I/O; of the "
              f"{raised} raised, the main loop raised {by_main}, {by_main_in_wait} of "
              "them while a vCPU waited on the links")
        assert "proxy_failed" not in log
        assert irqs, "no interrupt from the device during the I/O"
        if not expect:
            assert not waits and not wakes, "a vCPU waited on a link with halt-wait=off"
            return
        # one proxied device: every wait is on its link, link 0
        assert waits and all(n == 1 for _, n in waits), waits[:20]
        assert {c for c, _ in waits} <= set(range(cpus)), waits[:20]
        assert wakes and all(n == 0 for _, n in wakes), wakes[:20]
        assert raised, "no interrupt raised during the I/O"
        assert not by_main_in_wait, \
            f"the main loop raised {by_main_in_wait} interrupts a waiting vCPU was there for"
        # Waits of a millisecond or so, for the disk: the vCPU keeps its
        # window of looking before it sleeps at the narrowest (a wait that
        # a kick ended soon after the window closed may widen it, once).
        slept = [(int(w), int(nxt)) for w, nxt in SLEPT_RE.findall(io_log)]
        assert slept, "no halted vCPU slept during the throttled I/O"
        assert all(SPIN_MIN_NS <= nxt <= SPIN_MAX_NS for _, nxt in slept), slept[:20]
        narrowest = sum(nxt == SPIN_MIN_NS for _, nxt in slept)
        assert narrowest >= len(slept) // 2, \
            f"only {narrowest} of {len(slept)} sleeps left the window at its narrowest: " \
            f"{slept[:20]}"

    def test_idle_main_sleeps(self, halt_vm):
        """The idle guest's vCPUs sleep, in the halt wait or on their halt
        condition, and do not spin."""
        assert halt_vm.io_done, "the I/O of the previous tests did not run"
        share = idle_cpu_share(halt_vm.main.pid)
        print(f"{config_id(halt_vm.cfg)}: the idle main QEMU used {share:.1%} of a CPU")
        assert share < IDLE_MAX_CPU, f"the idle main QEMU used {share:.1%} of a CPU"

    def test_remote_dies_while_vcpus_wait(self, halt_vm):
        """The socket hangs up under the waiting vCPU: the device fails, and
        the main QEMU and the guest go on, asleep when idle."""
        assert halt_vm.io_done, "the I/O of the previous tests did not run"
        time.sleep(IDLE_SETTLE_SECONDS)
        halt_vm.require_remote = False
        os.kill(halt_vm.disk_remote.child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "proxy_failed" not in halt_vm.main_log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "proxy_failed" in halt_vm.main_log(), "the proxy did not see its remote die"
        # the guest runs: its shell answers, and the offline device reads all-ones
        config = halt_vm.pci_config(halt_vm.bdf)
        assert config[:4] == b"\xff" * 4, config[:16].hex()
        share = idle_cpu_share(halt_vm.main.pid)
        print(f"{config_id(halt_vm.cfg)}: with its remote dead, the idle main QEMU used "
              f"{share:.1%} of a CPU")
        assert share < IDLE_MAX_CPU, f"the idle main QEMU used {share:.1%} of a CPU"
        assert halt_vm.main.alive(), "the main QEMU exited"
