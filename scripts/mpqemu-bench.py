#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""mpqemu benchmark: PCI disk controllers in-process and proxied, side by side.

Device classes: lsi53c895a (+ scsi-hd), nvme and virtio-blk-pci (modern only,
disable-legacy=on), each with the same raw disk image.  Columns (one VM each):
  in-process  the device in the main QEMU;
  ring        proxied by x-pci-proxy-dev with its defaults (BAR accesses through
              the shared-memory ring);
  socket      proxied with ring=off (every access over the UNIX socket);
  upstream    Debian's qemu-system-x86 (upstream QEMU's own x-pci-proxy-dev,
              installed from bookworm-backports if missing).  It needs KVM (its
              INTx path calls the irqfd API unconditionally) and KVM guests hang
              on these machines, so it is only tried for --upstream-seconds under
              TCG; if the guest does not come up, the column says why.
In every VM the guest measures:
  * MMIO read latency of a register without side effects, with
    bench/guest/mmio-lat.c through sysfs resource<N> (guest booted with
    iomem=relaxed):
      lsi53c895a  SCRATCHA (BAR1 + 0x34, 1 byte)
      nvme        VS       (BAR0 + 0x08, 4 bytes)
      virtio-blk  common config num_queues (2 bytes; BAR and offset taken from
                  the VIRTIO_PCI_CAP_COMMON_CFG capability);
  * MMIO write latency (mmio-lat -W: the register's value is read once and
    written back, so nothing changes), to a plain read/write register that
    only matters at a later, different event:
      lsi53c895a  SCRATCHA (a scratch register)
      nvme        AQA (BAR0 + 0x24, 4 bytes): the admin queue sizes, only
                  used when CC.EN goes 0 -> 1 (INTMS would re-evaluate the
                  interrupt line and is undefined with MSI-X)
      virtio-blk  common config device_feature_select (offset 0, 4 bytes): only
                  selects which half device_feature shows;
  * for the LSI also PIO read latency of SCRATCHA through the I/O BAR (BAR0);
  * config space read latency: bench/guest/cfg-lat.c, pread() of dword 0
    (vendor/device ID) of /sys/bus/pci/devices/<bdf>/config;
  * sequential read throughput: dd iflag=direct bs=1M of the whole disk,
    repeated for about --seq-seconds per run (timed with bench/guest/nsclock.c);
  * 4 KiB random-read IOPS at queue depth 1 and 16: bench/guest/randread.c
    (O_DIRECT preads at random 4 KiB-aligned offsets from a fixed seed; QD16 =
    16 threads each with one read in flight) for --rand-seconds per run;
and the host side adds the CPU time of the main QEMU plus the remote: over
the column's own runs, and over --idle-windows windows of --idle-seconds
each of the idle guests after the measurements (the median; both from the threads' /proc/<pid>/task/*/schedstat, in ns: the
10 ms ticks of utime + stime are too coarse for a 1.1x target over a few
seconds of some 2% CPU; the log shows utime + stime of the idle window too).
The machines here are shared and their speed drifts by 2x within a minute,
so the columns of one device class are booted together and take turns: each
figure's runs go round the columns (in-process, ring, socket, in-process,
...) --reps times.  A figure is the median of its runs; a ratio is the median
of the ratios of runs taken one after the other, next to the task's target
where it sets one.  Run by scripts/bench.sh.
"""

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(REPO, "tests", "functional"),
                os.path.join(REPO, "build", "qemu-src", "python")]

# pylint: disable=wrong-import-position
from mpqemu_vm import BASE_APPEND, VM, VMError, guest_image, make_disk  # noqa: E402

DEVID = "dev1"      # id of the device under test (in the remote, or in-process)
RAND_SEED = 12345   # randread's offsets: the same sequence in every VM
QD_DEEP = 16        # the second random-read queue depth
APPEND = "iomem=relaxed"
UPSTREAM_QEMU = "/usr/bin/qemu-system-x86_64"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(text):
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- device classes

class DeviceClass:
    """What to put on the command line and where to find the device in the guest."""
    name = ""
    vendor_device = ("", "")
    mmio_what = ""
    write_what = ""

    @staticmethod
    def drive(disk):
        # The columns' VMs run at the same time on the one image, and only
        # read it: without image locking, as the second one could not open it.
        return ["-drive", f"id=d1,file={disk},format=raw,if=none,file.locking=off"]

    def device_args(self, disk):
        raise NotImplementedError

    def mmio_register(self, vm, bdf):
        """(bar, offset, width) of the side-effect-free register to time reads of."""
        raise NotImplementedError

    def write_register(self, vm, bdf):
        """(bar, offset, width) of the register whose value is written back."""
        raise NotImplementedError

    def check_value(self, value):
        """Raise VMError unless value is what the register should read."""
        if int(value, 16) == (1 << (4 * (len(value) - 2))) - 1:
            raise VMError(f"{self.name}: register reads all-ones ({value}): "
                          "the device is not answering")


class Lsi(DeviceClass):
    name = "lsi53c895a"
    vendor_device = ("0x1000", "0x0012")
    mmio_what = "BAR1 SCRATCHA, 1 byte"
    write_what = "BAR1 SCRATCHA, 1 byte"
    pio_what = "BAR0 SCRATCHA, 1 byte"
    SCRATCHA = 0x34

    def device_args(self, disk):
        return (["-device", f"lsi53c895a,id={DEVID}"] + self.drive(disk)
                + ["-device", f"scsi-hd,drive=d1,bus={DEVID}.0"])

    def mmio_register(self, vm, bdf):
        return 1, self.SCRATCHA, 1

    def write_register(self, vm, bdf):
        return 1, self.SCRATCHA, 1

    def pio_register(self):
        return 0, self.SCRATCHA, 1


class Nvme(DeviceClass):
    name = "nvme"
    vendor_device = ("0x1b36", "0x0010")
    mmio_what = "BAR0 VS, 4 bytes"
    write_what = "BAR0 AQA, 4 bytes"
    VS = 0x08
    AQA = 0x24

    def device_args(self, disk):
        return self.drive(disk) + ["-device", f"nvme,id={DEVID},serial=mpqbench,drive=d1"]

    def mmio_register(self, vm, bdf):
        return 0, self.VS, 4

    def write_register(self, vm, bdf):
        return 0, self.AQA, 4

    def check_value(self, value):
        super().check_value(value)
        major = int(value, 16) >> 16
        if not 1 <= major <= 2:
            raise VMError(f"nvme: VS reads {value}, not an NVMe version")


class VirtioBlk(DeviceClass):
    name = "virtio-blk"
    vendor_device = ("0x1af4", "0x1042")   # modern-only virtio block
    mmio_what = "common cfg num_queues, 2 bytes"
    write_what = "common cfg device_feature_select, 4 bytes"
    CAP_VNDR = 0x09
    COMMON_CFG = 1
    DEVICE_FEATURE_SELECT = 0x00
    NUM_QUEUES = 0x12

    def device_args(self, disk):
        return self.drive(disk) + ["-device",
                                   f"virtio-blk-pci,id={DEVID},drive=d1,disable-legacy=on"]

    @classmethod
    def common_cfg(cls, vm, bdf):
        """(bar, offset) of the VIRTIO_PCI_CAP_COMMON_CFG structure."""
        cfg = pci_config(vm, bdf)
        if not cfg[0x06] & 0x10:
            raise VMError(f"virtio-blk {bdf} has no capability list")
        pos, seen = cfg[0x34] & 0xfc, set()
        while pos and pos not in seen and pos + 16 <= len(cfg):
            seen.add(pos)
            if cfg[pos] == cls.CAP_VNDR and cfg[pos + 3] == cls.COMMON_CFG:
                return cfg[pos + 4], int.from_bytes(bytes(cfg[pos + 8:pos + 12]), "little")
            pos = cfg[pos + 1] & 0xfc
        raise VMError(f"virtio-blk {bdf} has no VIRTIO_PCI_CAP_COMMON_CFG capability")

    def mmio_register(self, vm, bdf):
        bar, offset = self.common_cfg(vm, bdf)
        return bar, offset + self.NUM_QUEUES, 2

    def write_register(self, vm, bdf):
        bar, offset = self.common_cfg(vm, bdf)
        return bar, offset + self.DEVICE_FEATURE_SELECT, 4

    def check_value(self, value):
        super().check_value(value)
        if int(value, 16) == 0:
            raise VMError("virtio-blk: num_queues reads 0")


CLASSES = {c.name: c for c in (Lsi(), Nvme(), VirtioBlk())}


class Mode:
    """One column: how the device is attached."""

    def __init__(self, label, vm_mode, proxy_opts="", qemu=None):
        self.label = label          # column heading
        self.vm_mode = vm_mode      # mpqemu_vm.VM mode
        self.proxy_opts = proxy_opts
        self.qemu = qemu            # another QEMU binary than the one under test


class BenchVM(VM):
    """mpqemu_vm.VM with the device class's devices instead of the LSI.

    proxy_opts is appended to the x-pci-proxy-dev option string (",ring=off");
    qemu replaces the binary of both processes (the upstream column).
    """

    def __init__(self, devclass, mode, machine, disk, proxy_opts="", qemu=None, **kwargs):
        super().__init__(mode, machine, disk, **kwargs)
        self.dev_args = devclass.device_args(disk)
        self.proxy_opts = proxy_opts
        if qemu:
            self.qemu = qemu

    def remote_args(self, transport):
        return ([self.qemu, "-machine", "x-remote", "-nodefaults", "-display", "none"]
                + self.dev_args
                + ["-object", f"x-remote-object,id=robj1,devid={DEVID},{transport}"])

    def lsi_inproc_args(self, disk):  # pylint: disable=arguments-differ
        return list(self.dev_args)

    def main_args(self, device_args, serial_path, qmp_path):
        device_args = [a + self.proxy_opts if a.startswith("x-pci-proxy-dev,") else a
                       for a in device_args]
        return super().main_args(device_args, serial_path, qmp_path)

    def kill_now(self):
        """SIGKILL both processes (the upstream watchdog); waits then fail at once."""
        for child in (self.main, self.remote):
            if child is not None and child.alive():
                child.proc.kill()


def host_round_trip_ns():
    """The host's cross-CPU round trip now (bench/host/xcpu-rtt.c), or None.

    Every proxied access pays at least one; the host moves our CPUs around,
    and this moves by several times with it.
    """
    tool = os.environ.get("MPQEMU_XCPU_RTT")
    if not tool:
        return None
    try:
        out = subprocess.run([tool], capture_output=True, text=True, timeout=30,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"xcpu_rtt_ns=(\d+)", out)
    return int(m.group(1)) if m else None


def spread(values):
    """'min..max' of the runs, for the log: how noisy the median is."""
    values = list(values)
    return f"{min(values):.1f}..{max(values):.1f}"


def cpu_seconds(pid):
    """utime + stime of process pid (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # Fields after "(comm)": state is field 3, utime 14, stime 15.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def vm_cpu(vm):
    """{'main': s, 'remote': s} of CPU time used so far by the VM's processes."""
    return {k: cpu_seconds(pid) if pid else 0.0 for k, pid in vm.pids().items()}


def host_busy_seconds():
    """CPU seconds all CPUs of the host spent busy since boot (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal ...
    values = [int(v) for v in fields[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def own_cpu_seconds():
    """CPU seconds of this script itself (it drives the serial console)."""
    t = os.times()
    return t.user + t.system


def thread_cpu_ns(pid):
    """{tid: ns on a CPU} of the live threads of pid (/proc/<pid>/task/*/schedstat)."""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/schedstat", encoding="ascii") as f:
                out[tid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass    # the thread has just exited
    return out


def vm_threads(vm):
    """{'main': {tid: ns}, 'remote': {...}}; None where schedstat is unavailable."""
    try:
        return {k: thread_cpu_ns(pid) if pid else {} for k, pid in vm.pids().items()}
    except OSError:
        return None


def window_cpu(before, after):
    """CPU seconds per process between two vm_threads() samples.

    /proc/<pid>/stat counts in clock ticks (10 ms), too coarse for a few seconds
    of an idle guest (some 10 ticks); the per-thread schedstat counters are in
    ns.  A thread's share is its growth, or all of it if it started in the
    window; a thread that ended in the window loses its share (QEMU's idle
    worker threads, which use next to nothing).
    """
    return {k: sum(ns - before[k].get(tid, 0) for tid, ns in after[k].items()) / 1e9
            for k in after}


# ---------------------------------------------------------------- guest helpers

def pci_functions(vm, vendor_device):
    out = vm.shell.check(
        "for d in /sys/bus/pci/devices/*; do "
        "echo \"$(basename $d) $(cat $d/vendor) $(cat $d/device)\"; done")
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and (fields[1], fields[2]) == vendor_device:
            found.append(fields[0])
    return found


def pci_config(vm, bdf):
    """The function's config space (what sysfs shows root: 256 bytes) as a list of ints."""
    out = vm.shell.check(f"od -An -v -tx1 /sys/bus/pci/devices/{bdf}/config")
    data = [int(b, 16) for b in re.findall(r"\b[0-9a-f]{2}\b", out)]
    if len(data) < 64:
        raise VMError(f"cannot read the config space of {bdf}: {out!r}")
    return data


def block_device(vm, bdf, timeout=30):
    """Name of the whole-disk block device below PCI function bdf (waits for it).

    An NVMe namespace under native multipath is a disk of the NVMe subsystem
    (/sys/devices/virtual/nvme-subsystem/...); its path below the controller
    (nvmeXcYnZ) is hidden and has no device node.  So hidden disks are skipped,
    and a disk belongs to bdf if it sits below it or if a controller of its
    subsystem does.
    """
    rc, out = vm.shell.run(
        f"i=0; while [ $i -lt {timeout * 10} ]; do found=; "
        "for b in /sys/block/*; do "
        "[ \"$(cat $b/hidden 2>/dev/null)\" = 1 ] && continue; "
        "for p in $b $b/device/nvme*; do case $(readlink -f $p) in "
        f"*/{bdf}/*) found=\"$found $(basename $b)\"; break;; esac; done; done; "
        "[ -n \"$found\" ] && break; i=$((i+1)); sleep 0.1; done; "
        "echo \"disks:$found\"", timeout=timeout + 30)
    m = re.search(r"disks:(.*)", out)
    names = m.group(1).split() if m else []
    if rc != 0 or len(names) != 1:
        _, diag = vm.shell.run("ls -l /sys/block/; dmesg | tail -n 30")
        raise VMError(f"expected one disk below {bdf}, found {names}:\n{diag}")
    return names[0]


# ---------------------------------------------------------------- interleaved runs

class Column:
    """One booted VM of a device class: one column of the table."""

    def __init__(self, devclass, mode, vm):
        self.devclass = devclass
        self.mode = mode
        self.label = mode.label
        self.name = f"{devclass.name} {mode.label}"
        self.vm = vm
        self.bdf = None
        self.dev = None
        self.res = {}           # metric key -> the median (or the one figure)
        self.runs = {}          # metric key -> one value per round
        self.cpu = 0.0          # host CPU seconds of its processes in its own runs
        self.t_runs = 0.0       # wall seconds of its own runs


def interleave(columns, reps, run, warmup=None):
    """run(column) reps times per column, the columns taking turns.

    Round r starts with column r % n, so that none is always the first after
    a change of figure.  Load on the host that comes and goes (other machines'
    work on the same CPUs) then falls on every column alike, and round r of
    two columns ran next to each other: the ratios pair them.  Each run's
    host CPU (schedstat, ns) and wall time go to its column.  Returns
    {label: [what run returned, per round]}.
    """
    if warmup:
        for col in columns:
            warmup(col)
    out = {col.label: [] for col in columns}
    for r in range(reps):
        k = r % len(columns)
        for col in columns[k:] + columns[:k]:
            before, t0 = vm_threads(col.vm), time.monotonic()
            out[col.label].append(run(col))
            col.t_runs += time.monotonic() - t0
            after = vm_threads(col.vm)
            if before and after:
                col.cpu += sum(window_cpu(before, after).values())
    return out


def access_latency(columns, key, what, command, reps, target_s):
    """Median ns per access of a guest timing loop, per column; also the value read.

    command(column, opts) is the guest command line, opts how long to loop:
    mmio-lat or cfg-lat, both of which print "value=0x... count=...
    ns_per_read=...".  Each run loops for target_s (-t) rather than a count
    sized on a short calibration loop: through the ring, the first accesses
    of a loop may find the remote asleep and cost 100 times more than the
    next ones.  The value must not change between runs.
    """
    def run(col, seconds):
        cmd = command(col, f"-t {seconds:g}")
        out = col.vm.shell.check(cmd, timeout=seconds + 120)
        m = re.search(r"count=(\d+) .*value=(0x[0-9a-f]+) .*ns_per_read=([0-9.]+)", out)
        if not m:
            raise VMError(f"unexpected output of {cmd!r}: {out!r}")
        return float(m.group(3)), m.group(2), int(m.group(1))

    runs = interleave(columns, reps, lambda col: run(col, target_s),
                      warmup=lambda col: run(col, min(target_s, 0.05)))
    for col in columns:
        results = runs[col.label]
        values = {r[1] for r in results}
        if len(values) != 1:
            raise VMError(f"{col.name}: {what} changes between runs: {values}")
        col.runs[key] = [r[0] for r in results]
        col.res[key] = statistics.median(col.runs[key])
        log(f"bench: {col.name}: {what}: ns per access per run: {spread(col.runs[key])} "
            f"({min(r[2] for r in results)}..{max(r[2] for r in results)} per run)")
    return {col.label: results[-1][1] for col, results in
            ((c, runs[c.label]) for c in columns)}


def bar_latency(columns, key, reg_of, reps, target_s, write=False):
    """reg_of(column): (bar, offset, width) of the register in that VM."""
    def command(col, opts):
        bar, offset, width = reg_of(col)
        flag = " -W" if write else ""
        return f"mmio-lat {opts} -w {width}{flag} {col.bdf} {bar} {offset:#x}"

    bar, offset, _ = reg_of(columns[0])
    return access_latency(columns, key,
                          f"{'write' if write else 'read'} of BAR{bar}+{offset:#x}",
                          command, reps, target_s)


def config_latency(columns, reps, target_s):
    return access_latency(columns, "cfg", "config dword 0",
                          lambda col, opts: f"cfg-lat {opts} {col.bdf} 0", reps, target_s)


def seq_read(columns, size_mib, reps, target_s):
    """Median MB/s (10^6 bytes/s) of dd iflag=direct bs=1M over the whole disk.

    One run reads the disk as many times as it takes to last about target_s
    (sized per column on a first, calibrating run).
    """
    passes = {}

    def run(col, n):
        # busybox dd prints no rate: time it with the guest's nsclock helper.
        out = col.vm.shell.check(f"t0=$(nsclock); for p in $(seq {n}); do "
                                 f"dd if=/dev/{col.dev} of=/dev/null bs=1M "
                                 f"count={size_mib} iflag=direct || break; done; "
                                 "t1=$(nsclock); echo elapsed_ns=$((t1 - t0))", timeout=600)
        records = re.findall(r"(\d+)\+0 records in", out)
        elapsed = re.search(r"elapsed_ns=(\d+)", out)
        if not elapsed or [int(r) for r in records] != [size_mib] * n:
            raise VMError(f"dd did not read {n} x {size_mib} MiB: {out!r}")
        return n * size_mib * 1024 * 1024 / 1e6 / (int(elapsed.group(1)) / 1e9)

    def calibrate(col):
        mb_s = run(col, 1)
        passes[col.label] = int(min(max(target_s * mb_s / (size_mib * 1.048576), 1), 32))

    runs = interleave(columns, reps, lambda col: run(col, passes[col.label]),
                      warmup=calibrate)
    for col in columns:
        col.runs["seq"] = runs[col.label]
        col.res["seq"] = statistics.median(runs[col.label])
        log(f"bench: {col.name}: MB/s per run: {spread(runs[col.label])} "
            f"({passes[col.label]} passes per run)")


def rand_read(columns, key, reps, seconds, jobs):
    """Median 4 KiB random-read IOPS at queue depth jobs; also randread's data check."""
    def run(col, secs):
        out = col.vm.shell.check(f"randread -t {secs} -b 4096 -s {RAND_SEED} -j {jobs} "
                                 f"/dev/{col.dev}", timeout=secs + 120)
        m = re.search(r"ios=(\d+) .*iops=([0-9.]+) .*check=(\S+)", out)
        if not m:
            raise VMError(f"unexpected randread output: {out!r}")
        return float(m.group(2)), m.group(3), int(m.group(1))

    runs = interleave(columns, reps, lambda col: run(col, seconds),
                      warmup=lambda col: run(col, min(seconds, 0.2)))
    for col in columns:
        results = runs[col.label]
        # A run too short to hash all the blocks of the check says "n/a".
        checks = {r[1] for r in results} - {"n/a"}
        if len(checks) > 1:
            raise VMError(f"{col.name}: randread -j {jobs} read different data in runs of "
                          f"the same boot: {checks}")
        col.res[f"check{jobs}"] = checks.pop() if checks else "n/a"
        col.runs[key] = [r[0] for r in results]
        col.res[key] = statistics.median(col.runs[key])
        log(f"bench: {col.name}: QD{jobs} IOPS per run: {spread(col.runs[key])} "
            f"(>= {min(r[2] for r in results)} reads per run, "
            f"data check {col.res[f'check{jobs}']})")


# ---------------------------------------------------------------- one device class

def pin_vm(vm):
    """--pin: the vCPU threads on the last CPU we may use, every other thread
    of the main QEMU and of the remote process on the first.

    The split a deployment makes with vCPU and emulator pinning: it takes the
    host scheduler's placement out of the comparison.  Threads created later
    (I/O workers) inherit the CPU of the thread that creates them, the main
    loop's.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise VMError(f"--pin needs two CPUs, this process may use {cpus}")
    vcpus = {cpu["thread-id"] for cpu in vm.qmp.cmd("query-cpus-fast")}
    for pid in vm.pids().values():
        if not pid:
            continue
        for tid in map(int, os.listdir(f"/proc/{pid}/task")):
            try:
                os.sched_setaffinity(tid, {cpus[-1]} if tid in vcpus else {cpus[0]})
            except ProcessLookupError:
                pass    # a thread that ended meanwhile


def boot(devclass, mode, args, disk):
    """Start the VM of one column and find its device; returns the Column."""
    vm = BenchVM(devclass, mode.vm_mode, args.machine, disk, proxy_opts=mode.proxy_opts,
                 qemu=mode.qemu, append=APPEND,
                 name=f"bench-{devclass.name}-{mode.label}")
    col = Column(devclass, mode, vm)
    t0 = time.monotonic()
    try:
        vm.start()
        log(f"bench: {col.name}: guest up in {time.monotonic() - t0:.1f} s, "
            f"pids {vm.pids()}")
        if args.pin:
            pin_vm(vm)
        bdfs = pci_functions(vm, devclass.vendor_device)
        if len(bdfs) != 1:
            raise VMError(f"guest sees {len(bdfs)} {devclass.name} functions "
                          f"({':'.join(devclass.vendor_device)})")
        col.bdf = bdfs[0]
        col.dev = block_device(vm, col.bdf)
    except Exception:
        vm.close()
        vm.dump_logs()
        vm.cleanup()
        raise
    return col


def take_figures(columns, args):
    """Every figure of every column, their runs interleaved (see interleave())."""
    devclass = columns[0].devclass
    rtt_before = host_round_trip_ns()
    regs = {col.label: devclass.mmio_register(col.vm, col.bdf) for col in columns}
    values = bar_latency(columns, "mmio_r", lambda col: regs[col.label], args.reps,
                         args.seconds)
    for col in columns:
        devclass.check_value(values[col.label])
        col.res["value"] = values[col.label]
        log(f"bench: {col.name}: {col.bdf} /dev/{col.dev}, MMIO read "
            f"BAR{regs[col.label][0]}+{regs[col.label][1]:#x} = {values[col.label]}")
    wregs = {col.label: devclass.write_register(col.vm, col.bdf) for col in columns}
    values = bar_latency(columns, "mmio_w", lambda col: wregs[col.label], args.reps,
                         args.seconds, write=True)
    for col in columns:
        col.res["wvalue"] = values[col.label]
    rtt_after = host_round_trip_ns()
    log(f"bench: {devclass.name}: host cross-CPU round trip {rtt_before} ns before the "
        f"MMIO rows, {rtt_after} ns after")
    for col in columns:
        col.res["xcpu"] = (rtt_before, rtt_after)
    if isinstance(devclass, Lsi):
        values = bar_latency(columns, "pio", lambda col: devclass.pio_register(),
                             args.reps, args.seconds)
        for col in columns:
            if values[col.label] != col.res["value"]:
                raise VMError(f"{col.name}: SCRATCHA reads {col.res['value']} through BAR1 "
                              f"but {values[col.label]} through BAR0: the reads do not "
                              "reach the device")
    values = config_latency(columns, args.reps, args.seconds)
    want = (int(devclass.vendor_device[1], 16) << 16) | int(devclass.vendor_device[0], 16)
    for col in columns:
        if int(values[col.label], 16) != want:
            raise VMError(f"{col.name}: config dword 0 of {col.bdf} reads "
                          f"{values[col.label]}, not {want:#010x}")

    seq_read(columns, args.disk_mib, args.reps, args.seq_seconds)
    rand_read(columns, "qd1", args.reps, args.rand_seconds, 1)
    rand_read(columns, f"qd{QD_DEEP}", args.reps, args.rand_seconds, QD_DEEP)
    for col in columns:
        log(f"bench: {col.name}: sequential {col.res['seq']:.1f} MB/s, random 4K "
            f"QD1 {col.res['qd1']:.0f} IOPS, QD{QD_DEEP} {col.res[f'qd{QD_DEEP}']:.0f} IOPS")
        col.res["cpu_run"] = col.cpu
        log(f"bench: {col.name}: host CPU in its runs: {col.cpu:.2f} s "
            f"in {col.t_runs:.1f} s")

    # Idle: every guest sits at its shell prompt; nothing is typed meanwhile.
    # A few windows one after the other, all columns at once: a window's CPU
    # is some 0.1 s, which one timer more or less changes by 10%.
    time.sleep(args.idle_settle)
    for col in columns:
        col.runs["idle"] = []
    for window in range(args.idle_windows):
        before = {col.label: (vm_threads(col.vm), vm_cpu(col.vm)) for col in columns}
        t_idle = time.monotonic()
        time.sleep(args.idle_seconds)
        after = {col.label: (vm_threads(col.vm), vm_cpu(col.vm)) for col in columns}
        t_idle = time.monotonic() - t_idle
        for col in columns:
            (b_threads, b_ticks), (a_threads, a_ticks) = before[col.label], after[col.label]
            ticks = {k: a_ticks[k] - b_ticks[k] for k in a_ticks}
            idle = window_cpu(b_threads, a_threads) if b_threads and a_threads else ticks
            # Scaled to exactly idle_seconds (the sleep may overrun a little).
            col.runs["idle"].append(sum(idle.values()) * args.idle_seconds / t_idle)
            log(f"bench: {col.name}: host CPU while idle, window {window + 1} of "
                f"{t_idle:.2f} s: " + ", ".join(f"{k} {v:.3f} s" for k, v in idle.items())
                + " (utime+stime: " + ", ".join(f"{k} {v:.2f} s" for k, v in ticks.items())
                + ")")
    for col in columns:
        col.res["idle"] = statistics.median(col.runs["idle"])


def measure(devclass, modes, args, disk, deadline=None):
    """Boot one VM per mode, all at once, and take every figure of each.

    Returns {label: {metric key: value, "runs": {key: [per round]}}} of the
    columns measured.  A column whose VM does not come up is left out; one
    that fails during the figures fails them all (raised).  deadline
    (seconds): kill the VMs after that long, so that the measurement fails
    instead of hanging (used for the upstream QEMU).
    """
    columns = []
    watchdog = None
    t0 = time.monotonic()
    busy0, own0 = host_busy_seconds(), own_cpu_seconds()
    if deadline:
        watchdog = threading.Timer(deadline, lambda: [c.vm.kill_now() for c in columns])
        watchdog.daemon = True
        watchdog.start()
    try:
        for mode in modes:
            log(f"bench: booting {devclass.name} {mode.label} ({mode.vm_mode}"
                f"{mode.proxy_opts}, -machine {args.machine})")
            try:
                columns.append(boot(devclass, mode, args, disk))
            except Exception as exc:  # pylint: disable=broad-except
                log(f"bench: {devclass.name} {mode.label} failed to start: {exc}")
        if not columns:
            return {}
        busy0, own0 = host_busy_seconds(), own_cpu_seconds()
        cpu0 = {col.label: sum(vm_cpu(col.vm).values()) for col in columns}
        t_fig = time.monotonic()
        try:
            take_figures(columns, args)
        except Exception:
            for col in columns:
                col.vm.close()
                col.vm.dump_logs()
            raise
        # Whatever else kept the host's CPUs busy meanwhile: other processes
        # compete with the vCPUs and the remotes for the CPUs and skew every figure.
        t_fig = time.monotonic() - t_fig
        busy, own = host_busy_seconds() - busy0, own_cpu_seconds() - own0
        ours = sum(sum(vm_cpu(col.vm).values()) - cpu0[col.label] for col in columns)
        other = busy - ours - own
        log(f"bench: {devclass.name}: host CPUs busy {busy:.2f} s in {t_fig:.1f} s: "
            f"these VMs {ours:.2f} s, this script {own:.2f} s, others {other:.2f} s")
        for col in columns:
            col.res["other"] = max(other, 0.0) / t_fig
            col.vm.poweroff()
        log(f"bench: {devclass.name}: done in {time.monotonic() - t0:.1f} s")
        return {col.label: dict(col.res, runs=col.runs) for col in columns}
    finally:
        if watchdog:
            watchdog.cancel()
        for col in columns:
            col.vm.close()
            col.vm.cleanup()


# ---------------------------------------------------------------- upstream QEMU

def ensure_upstream(path):
    """Install Debian's qemu-system-x86 from bookworm-backports if path is missing.

    Returns None when path is there (afterwards), else why it is not.
    """
    if os.access(path, os.X_OK):
        return None
    if path != UPSTREAM_QEMU:
        return f"{path} not found"
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                      "-t", "bookworm-backports", "qemu-system-x86"]
    for attempt in (1, 2):
        log(f"bench: {path} missing: {' '.join(install)}")
        try:
            res = subprocess.run(install, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, timeout=900,
                                 env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"apt-get failed: {exc}"
        if res.returncode == 0 and os.access(path, os.X_OK):
            return None
        log(res.stdout[-2000:])
        if attempt == 1:
            log("bench: apt-get install failed; apt-get update and one more try")
            subprocess.run(sudo + ["apt-get", "update", "-q"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=300, env=env, check=False)
    return "not installed (apt-get install -t bookworm-backports qemu-system-x86 failed)"


def qemu_version(path):
    try:
        out = subprocess.run([path, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else "?"


def exit_reason(status):
    """'killed by SIGSEGV' / 'exit status 1' from a Popen returncode."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def last_line(path):
    try:
        with open(path, "rb") as f:
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:160] if lines else ""


def probe_upstream(qemu, devclass, disk, machine, seconds):
    """Try upstream's multi-process setup for at most `seconds` seconds.

    The same processes as the measurement (remote with the device, main QEMU
    with x-pci-proxy-dev on a socketpair, TCG), but with the serial port in a
    file and no QMP, so that nothing waits on a QEMU that has died.
    Returns (True, how long the boot took) if the guest came up, else
    (False, short reason, long reason).
    """
    kernel, initrd = guest_image()
    tmp = tempfile.mkdtemp(prefix="mpq-up-")
    serial = os.path.join(tmp, "serial.log")
    rsock, msock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    procs = {}
    logs = {}
    try:
        rfd, mfd = rsock.fileno(), msock.fileno()
        cmds = {
            "remote": ([qemu, "-machine", "x-remote", "-nodefaults", "-display", "none"]
                       + devclass.device_args(disk)
                       + ["-object", f"x-remote-object,id=robj1,devid={DEVID},fd={rfd}"],
                       rfd),
            "main": ([qemu, "-accel", "tcg", "-machine", machine,
                      "-object", "memory-backend-memfd,id=mem,size=512M",
                      "-numa", "node,memdev=mem", "-m", "512",
                      "-device", f"x-pci-proxy-dev,id={DEVID},fd={mfd}",
                      "-kernel", kernel, "-initrd", initrd,
                      "-append", f"{BASE_APPEND} {APPEND}",
                      "-nodefaults", "-display", "none", "-no-reboot",
                      "-serial", f"file:{serial}"], mfd),
        }
        # The expected crash should not write a core dump: the children inherit
        # a core size limit of 0 (set around the fork, not in it: threads run).
        core_limit = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, core_limit[1]))
        try:
            t0 = time.monotonic()
            for name, (cmd, fd) in cmds.items():
                logs[name] = os.path.join(tmp, f"{name}.log")
                with open(logs[name], "wb") as out:
                    procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                                   stderr=subprocess.STDOUT, pass_fds=(fd,),
                                                   start_new_session=True)
        finally:
            resource.setrlimit(resource.RLIMIT_CORE, core_limit)
        rsock.close()
        msock.close()
        while True:
            elapsed = time.monotonic() - t0
            if any(p.poll() is not None for p in procs.values()):
                # Give the other process a moment: it may be on its way out too.
                for proc in procs.values():
                    try:
                        proc.wait(max(0.0, t0 + elapsed + 1.0 - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
                dead = [(n, procs[n].returncode) for n in ("main", "remote")
                        if procs[n].returncode is not None]
                short = exit_reason(dead[0][1]).replace("killed by ", "")
                if dead[0][0] != "main":
                    short = f"remote {short}"
                parts = []
                for name, status in dead:
                    detail = last_line(logs[name])
                    parts.append(f"{name} QEMU {exit_reason(status)}"
                                 + (f" ({detail})" if detail else ""))
                return (False, short, f"{'; '.join(parts)}; "
                        f"within {elapsed:.1f} s of the start")
            try:
                with open(serial, "rb") as f:
                    if b"MPQEMU-GUEST-READY" in f.read():
                        return True, f"guest up in {elapsed:.1f} s"
            except OSError:
                pass
            if elapsed > seconds:
                return (False, f"no boot in {seconds:g} s",
                        f"both processes alive but the guest was not up within {seconds:g} s "
                        "(TCG)")
            time.sleep(0.1)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        for path in list(logs.values()) + [serial]:
            try:
                os.unlink(path)
            except OSError:
                pass
        try:
            os.rmdir(tmp)
        except OSError:
            pass


# ---------------------------------------------------------------- report

# (metric, unit, key, value format, target: (op, bound) or None)
METRICS = [
    ("MMIO read latency", "ns", "mmio_r", "{:.0f}", ("<=", 2.0)),
    ("MMIO write latency", "ns", "mmio_w", "{:.0f}", None),
    ("PIO read latency", "ns", "pio", "{:.0f}", None),
    ("config read latency", "ns", "cfg", "{:.0f}", None),
    ("seq read 1 MiB direct", "MB/s", "seq", "{:.1f}", (">=", 0.95)),
    ("rand read 4 KiB QD1", "IOPS", "qd1", "{:.0f}", (">=", 0.95)),
    (f"rand read 4 KiB QD{QD_DEEP}", "IOPS", f"qd{QD_DEEP}", "{:.0f}", (">=", 0.95)),
    ("host CPU, its runs", "s", "cpu_run", "{:.2f}", None),
    ("host CPU, idle", "s", "idle", "{:.3f}", ("<=", 1.1)),
]


def fmt(value, vfmt):
    return "n/a" if value is None else vfmt.format(value)


def fmt_ratio(ratio):
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def target_met(ratio, target):
    op, bound = target
    # Compare what is printed: 2.00x meets "<= 2x" even if it was 2.004.
    ratio = float(fmt_ratio(ratio)[:-1])
    return ratio <= bound if op == "<=" else ratio >= bound


def paired_ratio(base, other, key):
    """other / base of one metric: the median of the rounds' ratios where both
    columns have per-round runs (they ran next to each other), else the ratio
    of the two figures."""
    b, o = base.get("runs", {}).get(key), other.get("runs", {}).get(key)
    if b and o and len(b) == len(o) and all(b):
        return statistics.median(x / y for x, y in zip(o, b))
    return other[key] / base[key]


def print_table(args, results, classes, modes, upstream):
    """upstream: {device: (ran, short reason, long reason)} or None (column off)."""
    proxied = modes[1:]
    print()
    print(f"mpqemu bench: -machine {args.machine}, TCG, {args.disk_mib} MiB raw disk; "
          f"median of {args.reps} runs; per device, the columns' VMs run side by side "
          "and take turns")
    print("  ring     = proxied, x-pci-proxy-dev defaults (shared-memory ring)")
    print("  socket   = proxied, x-pci-proxy-dev ring=off (every access over the socket)")
    print(f"  (both proxied columns link main and remote by {args.transport})")
    if args.pin:
        print("  pinned: in every column the vCPU thread has one CPU, the other threads "
              "(main loop, I/O workers, remote process) the other")
    if upstream is not None:
        print(f"  upstream = {args.upstream_qemu} (QEMU {args.upstream_version}), "
              "upstream's x-pci-proxy-dev, fd=, TCG")
    print("  host CPU = main + remote QEMU, over the column's own runs; idle = "
          f"{args.idle_seconds:g} s of the idle guests after the measurements, the "
          f"median of {args.idle_windows} such windows")
    print("ratios: proxied / in-process (latency, CPU: >1x = proxied costs more; "
          "MB/s, IOPS: <1x = proxied slower),")
    print("  the median of the ratios of runs taken one after the other")
    print("targets: MMIO read latency <= 2x, MB/s and IOPS >= 0.95x, idle CPU <= 1.1x")
    up_width = 0
    if upstream is not None:
        up_width = max([16] + [len(f"does not run: {u[1]}") for u in upstream.values()
                               if not u[0]])
    widths = (22, 5, 10, 10, 15, 10, 15, up_width, 7)
    heads = ["metric", "unit", modes[0].label]
    for m in proxied:
        heads += [m.label, f"{m.label}/in-proc"]
    heads += ["upstream" if upstream is not None else "", "target"]

    def line(cells):
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths)):
            if width == 0:
                continue
            out.append(f"{cell:<{width}}" if i in (0, 1, 7, 8) else f"{cell:>{width}}")
        return "  ".join(out).rstrip()

    met = {m.label: [0, 0] for m in proxied}
    for dc in classes:
        print()
        head = line(heads)
        print(f"{dc.name}")
        print(head)
        print("-" * len(head))
        for name, unit, key, vfmt, target in METRICS:
            if key == "pio" and not isinstance(dc, Lsi):
                continue
            base = results.get((dc.name, modes[0].label), {}).get(key)
            cells = [name, unit, fmt(base, vfmt)]
            for m in proxied:
                value = results.get((dc.name, m.label), {}).get(key)
                cells.append(fmt(value, vfmt))
                if base and value:
                    ratio = paired_ratio(results[(dc.name, modes[0].label)],
                                         results[(dc.name, m.label)], key)
                    mark = ""
                    if target:
                        ok = target_met(ratio, target)
                        met[m.label][0 if ok else 1] += 1
                        mark = " met" if ok else " NOT met"
                    cells.append(fmt_ratio(ratio) + mark)
                else:
                    cells.append("n/a")
            if upstream is not None:
                ran, short, _ = upstream.get(dc.name, (False, "not tried", ""))
                value = results.get((dc.name, "upstream"), {}).get(key)
                if value is not None:
                    cells.append(fmt(value, vfmt) + (f" ({fmt_ratio(value / base)})"
                                                     if base else ""))
                elif ran:
                    cells.append("n/a")
                else:
                    cells.append(f"does not run: {short}")
            else:
                cells.append("")
            cells.append(f"{target[0]} {target[1]:g}x" if target else "")
            print(line(cells))
        rtt = results.get((dc.name, modes[0].label), {}).get("xcpu")
        if rtt and None not in rtt:
            print(f"host cross-CPU round trip around the MMIO rows: {rtt[0]} and {rtt[1]} ns "
                  "(the floor under each proxied access; it moves with where the host runs our CPUs)")
    print()
    print("registers timed (config: dword 0, vendor/device ID, via sysfs):")
    for dc in classes:
        print(f"  {dc.name + ':':<11} read {dc.mmio_what}; write (value written back) "
              f"{dc.write_what}" + (f"; PIO read {dc.pio_what}" if isinstance(dc, Lsi) else ""))
    others = [(f"{dc.name} {m.label}", results[(dc.name, m.label)]["other"])
              for dc in classes for m in modes + [Mode("upstream", "")]
              if "other" in results.get((dc.name, m.label), {})]
    if others:
        worst = max(others, key=lambda o: o[1])
        print(f"other host load during the runs: mean {statistics.mean(o[1] for o in others):.2f},"
              f" max {worst[1]:.2f} CPUs ({worst[0]}) of {os.cpu_count()}"
              + ("  WARNING: the host was busy; figures are skewed" if worst[1] > 0.15 else ""))
    print("targets met: " + "; ".join(f"{label} {ok} of {ok + bad}"
                                      for label, (ok, bad) in met.items()))
    if upstream is not None:
        for dc in classes:
            ran, short, long_reason = upstream.get(dc.name, (False, "not tried", ""))
            print(f"upstream {dc.name}: " + (long_reason if not ran else
                                             f"runs ({short})"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default="pc", choices=("pc", "q35"))
    parser.add_argument("--transport", default="socket", choices=("socket", "fd"),
                        help="how the proxied configurations connect their two processes")
    parser.add_argument("--devices", default=",".join(CLASSES),
                        help=f"comma-separated subset of {','.join(CLASSES)}")
    parser.add_argument("--columns", default="ring,socket",
                        help="proxied columns to measure next to in-process (ring,socket)")
    parser.add_argument("--quick", action="store_true",
                        help="short run (about 4 minutes): 64 MiB disk, 3 runs, short runs, "
                        "4 s idle; explicit options still win")
    parser.add_argument("--disk-mib", type=int, help="disk size, read whole by dd (256)")
    parser.add_argument("--reps", type=int, help="runs per figure; the median is shown (5)")
    parser.add_argument("--seconds", type=float,
                        help="target duration of one register-latency run (0.5)")
    parser.add_argument("--seq-seconds", type=float,
                        help="target duration of one sequential-read run (2)")
    parser.add_argument("--rand-seconds", type=float,
                        help="duration of one random-read run, per queue depth (2)")
    parser.add_argument("--idle-seconds", type=float,
                        help="idle window for the idle CPU figure (10)")
    parser.add_argument("--idle-windows", type=int,
                        help="idle windows, one after the other; the figure is their "
                        "median, the ratio the median of theirs (3)")
    parser.add_argument("--idle-settle", type=float, default=1.0,
                        help="pause between the last measurement and the idle window (1)")
    parser.add_argument("--pin", action="store_true",
                        help="pin each VM's vCPU thread to one CPU and its other threads, "
                        "remote process included, to another, in every column")
    parser.add_argument("--no-upstream", action="store_true",
                        help="leave out the upstream column (and do not install it)")
    parser.add_argument("--upstream-qemu",
                        default=os.environ.get("MPQEMU_UPSTREAM_QEMU", UPSTREAM_QEMU),
                        help="QEMU with upstream's x-pci-proxy-dev "
                        f"($MPQEMU_UPSTREAM_QEMU, default {UPSTREAM_QEMU}, installed "
                        "from bookworm-backports if missing)")
    parser.add_argument("--upstream-seconds", type=float,
                        help="how long the upstream guest may take to come up (20; a crash "
                        "ends the try at once)")
    parser.add_argument("--upstream-deadline", type=float,
                        help="if the upstream guest comes up: longest its measurement "
                        "may take before it is killed (600)")
    args = parser.parse_args()

    defaults = ({"disk_mib": 64, "reps": 3, "seconds": 0.2, "seq_seconds": 0.5,
                 "rand_seconds": 0.5, "idle_seconds": 4.0, "idle_windows": 1,
                 "upstream_seconds": 12.0,
                 "upstream_deadline": 240.0}
                if args.quick else
                {"disk_mib": 256, "reps": 5, "seconds": 0.5, "seq_seconds": 2.0,
                 "rand_seconds": 2.0, "idle_seconds": 10.0, "idle_windows": 3,
                 "upstream_seconds": 20.0,
                 "upstream_deadline": 600.0})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        classes = [CLASSES[n] for n in args.devices.split(",") if n]
    except KeyError as exc:
        parser.error(f"unknown device class {exc}; choose from {', '.join(CLASSES)}")
    if (not classes or args.reps < 1 or args.disk_mib < 1 or args.idle_seconds <= 0 or
            args.idle_windows < 1):
        parser.error("nothing to measure")

    vm_mode = f"proxy-{args.transport}"
    modes = [Mode("in-process", "inproc"), Mode("ring", vm_mode),
             Mode("socket", vm_mode, ",ring=off")]
    wanted = args.columns.split(",")
    if any(w not in ("ring", "socket") for w in wanted):
        parser.error(f"unknown column in --columns {args.columns}; choose from ring,socket")
    modes = [modes[0]] + [m for m in modes[1:] if m.label in wanted]
    results = {}
    failed = []
    upstream = None
    t_start = time.monotonic()

    if not args.no_upstream:
        upstream = {}
        why = ensure_upstream(args.upstream_qemu)
        args.upstream_version = qemu_version(args.upstream_qemu) if why is None else "?"
        if why:
            log(f"bench: upstream column: {why}")
            upstream = {dc.name: (False, "not installed", why) for dc in classes}

    with tempfile.TemporaryDirectory(prefix="mpq-bench-") as tmp:
        # One image for every VM: each class reads the same bytes.
        disk = os.path.join(tmp, "disk.img")
        make_disk(disk, args.disk_mib, seed=7)
        for dc in classes:
            try:
                measured = measure(dc, modes, args, disk)
            except Exception as exc:  # pylint: disable=broad-except
                log(f"bench: {dc.name} failed: {exc}")
                measured = {}
            for mode in modes:
                if mode.label in measured:
                    results[(dc.name, mode.label)] = measured[mode.label]
                else:
                    failed.append(f"{dc.name} {mode.label}")
            if upstream is None or dc.name in upstream:
                continue
            log(f"bench: trying {dc.name} on upstream {args.upstream_qemu} "
                f"(QEMU {args.upstream_version}, TCG, at most {args.upstream_seconds:g} s)")
            try:
                probe = probe_upstream(args.upstream_qemu, dc, disk, args.machine,
                                       args.upstream_seconds)
            except Exception as exc:  # pylint: disable=broad-except
                probe = (False, "probe failed", f"probe failed: {exc}")
            if not probe[0]:
                log(f"bench: upstream {dc.name} does not run: {probe[2]}")
                upstream[dc.name] = probe
                continue
            # It came up after all: measure it like the others, but never for long.
            log(f"bench: upstream {dc.name}: {probe[1]}; measuring it")
            mode = Mode("upstream", "proxy-fd", qemu=args.upstream_qemu)
            try:
                measured = measure(dc, [mode], args, disk, deadline=args.upstream_deadline)
                if "upstream" not in measured:
                    raise VMError("its VM did not start")
                results[(dc.name, "upstream")] = measured["upstream"]
                upstream[dc.name] = (True, probe[1], "")
            except Exception as exc:  # pylint: disable=broad-except
                log(f"bench: upstream {dc.name} failed: {exc}")
                upstream[dc.name] = (False, "failed", f"booted ({probe[1]}) but the "
                                     f"measurement failed: {str(exc).splitlines()[0]}")

    # Every VM ran randread with the same seed over the same image: same blocks, same bytes.
    for key in ("check1", "check16"):
        checks = {k: r[key] for k, r in results.items() if r.get(key) not in (None, "n/a")}
        if len(set(checks.values())) > 1:
            log(f"bench: WARNING: randread ({key}) read different data in different VMs: "
                f"{checks}")
            failed.append(f"randread data check ({key})")
    for dc in classes:
        for key in ("value", "wvalue"):
            values = {r[key] for (name, _), r in results.items() if name == dc.name}
            if len(values) > 1:
                log(f"bench: WARNING: {dc.name} register ({key}) differs between columns: "
                    f"{values}")

    print_table(args, results, classes, modes, upstream)
    print(f"(total {time.monotonic() - t_start:.0f} s)")
    if failed:
        print(f"\nbench: FAILED for: {', '.join(failed)} (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
