#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""mpqemu benchmark: PCI disk controllers in-process and proxied, side by side.

Device classes: lsi53c895a (+ scsi-hd), nvme and virtio-blk-pci (modern only,
disable-legacy=on), each with the same raw disk image.  For each class and each
mode (in-process, proxied) one VM is booted, and inside it the guest measures:
  * MMIO read latency of a register without side effects, with
    bench/guest/mmio-lat.c through sysfs resource<N> (guest booted with
    iomem=relaxed):
      lsi53c895a  SCRATCHA (BAR1 + 0x34, 1 byte)
      nvme        VS       (BAR0 + 0x08, 4 bytes)
      virtio-blk  common config num_queues (2 bytes; BAR and offset taken from
                  the VIRTIO_PCI_CAP_COMMON_CFG capability);
  * for the LSI also PIO read latency of SCRATCHA through the I/O BAR (BAR0);
  * sequential read throughput: dd iflag=direct bs=1M of the whole disk,
    repeated for about --seq-seconds per run (timed with bench/guest/nsclock.c);
  * 4 KiB random-read IOPS at queue depth 1: bench/guest/randread.c (O_DIRECT,
    one pread at a time at random 4 KiB-aligned offsets from a fixed seed) for
    --rand-seconds per run.
Each figure is the median of --reps runs in the same boot.  The table gives
proxied/in-process for every figure.  Run by scripts/bench.sh.
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(REPO, "tests", "functional"),
                os.path.join(REPO, "build", "qemu-src", "python")]

from mpqemu_vm import VM, VMError, make_disk  # noqa: E402

DEVID = "dev1"      # id of the device under test (in the remote, or in-process)
RAND_SEED = 12345   # randread's offsets: the same sequence in every VM


def log(text):
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- device classes

class DeviceClass:
    """What to put on the command line and where to find the device in the guest."""
    name = ""
    vendor_device = ("", "")
    mmio_what = ""

    @staticmethod
    def drive(disk):
        return ["-drive", f"id=d1,file={disk},format=raw,if=none"]

    def device_args(self, disk):
        raise NotImplementedError

    def mmio_register(self, vm, bdf):
        """(bar, offset, width) of the side-effect-free register to time."""
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
    pio_what = "BAR0 SCRATCHA, 1 byte"
    SCRATCHA = 0x34

    def device_args(self, disk):
        return (["-device", f"lsi53c895a,id={DEVID}"] + self.drive(disk)
                + ["-device", f"scsi-hd,drive=d1,bus={DEVID}.0"])

    def mmio_register(self, vm, bdf):
        return 1, self.SCRATCHA, 1

    def pio_register(self):
        return 0, self.SCRATCHA, 1


class Nvme(DeviceClass):
    name = "nvme"
    vendor_device = ("0x1b36", "0x0010")
    mmio_what = "BAR0 VS, 4 bytes"
    VS = 0x08

    def device_args(self, disk):
        return self.drive(disk) + ["-device", f"nvme,id={DEVID},serial=mpqbench,drive=d1"]

    def mmio_register(self, vm, bdf):
        return 0, self.VS, 4

    def check_value(self, value):
        super().check_value(value)
        major = int(value, 16) >> 16
        if not 1 <= major <= 2:
            raise VMError(f"nvme: VS reads {value}, not an NVMe version")


class VirtioBlk(DeviceClass):
    name = "virtio-blk"
    vendor_device = ("0x1af4", "0x1042")   # modern-only virtio block
    mmio_what = "common cfg num_queues, 2 bytes"
    CAP_VNDR = 0x09
    COMMON_CFG = 1
    NUM_QUEUES = 0x12

    def device_args(self, disk):
        return self.drive(disk) + ["-device",
                                   f"virtio-blk-pci,id={DEVID},drive=d1,disable-legacy=on"]

    def mmio_register(self, vm, bdf):
        cfg = pci_config(vm, bdf)
        if not cfg[0x06] & 0x10:
            raise VMError(f"virtio-blk {bdf} has no capability list")
        pos, seen = cfg[0x34] & 0xfc, set()
        while pos and pos not in seen and pos + 16 <= len(cfg):
            seen.add(pos)
            if cfg[pos] == self.CAP_VNDR and cfg[pos + 3] == self.COMMON_CFG:
                bar = cfg[pos + 4]
                offset = int.from_bytes(bytes(cfg[pos + 8:pos + 12]), "little")
                return bar, offset + self.NUM_QUEUES, 2
            pos = cfg[pos + 1] & 0xfc
        raise VMError(f"virtio-blk {bdf} has no VIRTIO_PCI_CAP_COMMON_CFG capability")

    def check_value(self, value):
        super().check_value(value)
        if int(value, 16) == 0:
            raise VMError("virtio-blk: num_queues reads 0")


CLASSES = {c.name: c for c in (Lsi(), Nvme(), VirtioBlk())}


class BenchVM(VM):
    """mpqemu_vm.VM with the device class's devices instead of the LSI."""

    def __init__(self, devclass, mode, machine, disk, **kwargs):
        super().__init__(mode, machine, disk, **kwargs)
        self.dev_args = devclass.device_args(disk)

    def remote_args(self, transport):
        return ([self.qemu, "-machine", "x-remote", "-nodefaults", "-display", "none"]
                + self.dev_args
                + ["-object", f"x-remote-object,id=robj1,devid={DEVID},{transport}"])

    def lsi_inproc_args(self, disk):  # pylint: disable=arguments-differ
        return list(self.dev_args)


def spread(values):
    """'min..max' of the runs, for the log: how noisy the median is."""
    values = list(values)
    return f"{min(values):.1f}..{max(values):.1f}"


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


def bar_latency(vm, bdf, reg, reps, target_s):
    """Median ns per read of register reg = (bar, offset, width); also the value read."""
    bar, offset, width = reg

    def run(count):
        out = vm.shell.check(f"mmio-lat -n {count} -w {width} {bdf} {bar} {offset:#x}",
                             timeout=120)
        m = re.search(r"value=(0x[0-9a-f]+) .*ns_per_read=([0-9.]+)", out)
        if not m:
            raise VMError(f"unexpected mmio-lat output: {out!r}")
        return float(m.group(2)), m.group(1)

    ns, _ = run(200)  # calibration: aim at target_s per run
    count = int(min(max(target_s * 1e9 / max(ns, 1.0), 200), 5_000_000))
    results = [run(count) for _ in range(reps)]
    values = {r[1] for r in results}
    if len(values) != 1:
        raise VMError(f"register {bar}:{offset:#x} of {bdf} changes between reads: {values}")
    log(f"bench: {vm.name}: ns/read per run: {spread(r[0] for r in results)}")
    return statistics.median(r[0] for r in results), results[-1][1], count


def seq_read(vm, dev, size_mib, reps, target_s):
    """Median MB/s (10^6 bytes/s) of dd iflag=direct bs=1M over the whole disk.

    One run reads the disk as many times as it takes to last about target_s.
    """
    def run(passes):
        # busybox dd prints no rate: time it with the guest's nsclock helper.
        out = vm.shell.check(f"t0=$(nsclock); for p in $(seq {passes}); do "
                             f"dd if=/dev/{dev} of=/dev/null bs=1M count={size_mib} "
                             "iflag=direct || break; done; t1=$(nsclock); "
                             "echo elapsed_ns=$((t1 - t0))", timeout=600)
        records = re.findall(r"(\d+)\+0 records in", out)
        elapsed = re.search(r"elapsed_ns=(\d+)", out)
        if not elapsed or [int(r) for r in records] != [size_mib] * passes:
            raise VMError(f"dd did not read {passes} x {size_mib} MiB: {out!r}")
        return passes * size_mib * 1024 * 1024 / 1e6 / (int(elapsed.group(1)) / 1e9)

    mb_s = run(1)  # calibration (and warm-up)
    passes = int(min(max(target_s * mb_s / (size_mib * 1.048576), 1), 32))
    speeds = [run(passes) for _ in range(reps)]
    log(f"bench: {vm.name}: MB/s per run: {spread(speeds)}")
    return statistics.median(speeds), passes


def rand_read(vm, dev, reps, seconds):
    """Median 4 KiB random-read IOPS at queue depth 1; also randread's data check."""
    def run(secs):
        out = vm.shell.check(f"randread -t {secs} -b 4096 -s {RAND_SEED} /dev/{dev}",
                             timeout=secs + 120)
        m = re.search(r"ios=(\d+) .*iops=([0-9.]+) .*check=(\S+)", out)
        if not m:
            raise VMError(f"unexpected randread output: {out!r}")
        return float(m.group(2)), m.group(3), int(m.group(1))

    run(min(seconds, 0.2))  # warm-up
    results = [run(seconds) for _ in range(reps)]
    checks = {r[1] for r in results}
    if len(checks) != 1:
        raise VMError(f"randread read different data in runs of the same boot: {checks}")
    log(f"bench: {vm.name}: IOPS per run: {spread(r[0] for r in results)}")
    return statistics.median(r[0] for r in results), results[0][1], min(r[2] for r in results)


# ---------------------------------------------------------------- one VM

def measure(devclass, mode, args, disk):
    label = f"{devclass.name} {mode}"
    vm = BenchVM(devclass, mode, args.machine, disk, append="iomem=relaxed",
                 name=f"bench-{devclass.name}-{mode}")
    try:
        t0 = time.monotonic()
        vm.start()
        log(f"bench: {label}: guest up in {time.monotonic() - t0:.1f} s, pids {vm.pids()}")
        bdfs = pci_functions(vm, devclass.vendor_device)
        if len(bdfs) != 1:
            raise VMError(f"guest sees {len(bdfs)} {devclass.name} functions "
                          f"({':'.join(devclass.vendor_device)})")
        bdf = bdfs[0]
        dev = block_device(vm, bdf)
        res = {}

        reg = devclass.mmio_register(vm, bdf)
        res["mmio"], value, n_mmio = bar_latency(vm, bdf, reg, args.reps, args.seconds)
        devclass.check_value(value)
        res["value"] = value
        log(f"bench: {label}: {bdf} /dev/{dev}, {n_mmio} MMIO reads per run of "
            f"BAR{reg[0]}+{reg[1]:#x} = {value}")
        if isinstance(devclass, Lsi):
            res["pio"], pio_val, n_pio = bar_latency(vm, bdf, devclass.pio_register(),
                                                     args.reps, args.seconds)
            if pio_val != value:
                raise VMError(f"SCRATCHA reads {value} through BAR1 but {pio_val} "
                              "through BAR0: the reads do not reach the device")
            log(f"bench: {label}: {n_pio} PIO reads per run")

        res["seq"], passes = seq_read(vm, dev, args.disk_mib, args.reps, args.seq_seconds)
        log(f"bench: {label}: sequential {res['seq']:.1f} MB/s ({passes} passes per run)")
        res["rand"], res["check"], ios = rand_read(vm, dev, args.reps, args.rand_seconds)
        log(f"bench: {label}: random 4K QD1 {res['rand']:.0f} IOPS "
            f"(>= {ios} reads per run, data check {res['check']})")
        vm.poweroff()
        log(f"bench: {label}: done in {time.monotonic() - t0:.1f} s")
        return res
    except Exception:
        vm.close()
        vm.dump_logs()
        raise
    finally:
        vm.close()
        vm.cleanup()


# ---------------------------------------------------------------- report

def fmt(value, vfmt):
    return "n/a" if value is None else vfmt.format(value)


def print_table(args, results, classes, modes):
    # (metric, unit, key, value format, what the ratio means)
    metrics = [
        ("MMIO read latency", "ns/read", "mmio", "{:.0f}", "latency"),
        ("PIO read latency", "ns/read", "pio", "{:.0f}", "latency"),
        ("seq read, 1 MiB O_DIRECT", "MB/s", "seq", "{:.1f}", "throughput"),
        ("rand read 4 KiB QD1", "IOPS", "rand", "{:.0f}", "IOPS"),
    ]
    (inp_label, _), (prx_label, _) = modes
    print()
    print(f"mpqemu bench: -machine {args.machine}, TCG, proxied over {args.transport}, "
          f"{args.disk_mib} MiB raw disk; median of {args.reps} runs per boot, "
          "one boot per device and mode")
    print("last column: proxied / in-process (latency: >1x = proxied slower; "
          "throughput and IOPS: <1x = proxied slower)")
    head = (f"{'metric':<26} {'device':<11} {'unit':<8} {inp_label:>11} {prx_label:>11}"
            f"  {'proxied vs in-process'}")
    print(head)
    print("-" * len(head))
    for name, unit, key, vfmt, what in metrics:
        for dc in classes:
            a = results.get((dc.name, inp_label), {}).get(key)
            b = results.get((dc.name, prx_label), {}).get(key)
            if key == "pio" and not isinstance(dc, Lsi):
                continue
            ratio = f"{b / a:.2f}x {what}" if a and b else "n/a"
            print(f"{name:<26} {dc.name:<11} {unit:<8} {fmt(a, vfmt):>11} "
                  f"{fmt(b, vfmt):>11}  {ratio}")
    print("registers: " + "; ".join(
        f"{dc.name} {dc.mmio_what}" + (f" (PIO: {dc.pio_what})" if isinstance(dc, Lsi) else "")
        for dc in classes))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default="pc", choices=("pc", "q35"))
    parser.add_argument("--transport", default="socket", choices=("socket", "fd"),
                        help="how the proxied configuration connects its two processes")
    parser.add_argument("--devices", default=",".join(CLASSES),
                        help=f"comma-separated subset of {','.join(CLASSES)}")
    parser.add_argument("--quick", action="store_true",
                        help="short run (about 2 minutes): 64 MiB disk, 3 runs, short runs; "
                        "explicit options still win")
    parser.add_argument("--disk-mib", type=int, help="disk size, read whole by dd (256)")
    parser.add_argument("--reps", type=int, help="runs per figure; the median is shown (5)")
    parser.add_argument("--seconds", type=float,
                        help="target duration of one register-latency run (0.5)")
    parser.add_argument("--seq-seconds", type=float,
                        help="target duration of one sequential-read run (2)")
    parser.add_argument("--rand-seconds", type=float,
                        help="duration of one random-read run (2)")
    args = parser.parse_args()

    defaults = ({"disk_mib": 64, "reps": 3, "seconds": 0.2, "seq_seconds": 0.5,
                 "rand_seconds": 0.5} if args.quick else
                {"disk_mib": 256, "reps": 5, "seconds": 0.5, "seq_seconds": 2.0,
                 "rand_seconds": 2.0})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        classes = [CLASSES[n] for n in args.devices.split(",") if n]
    except KeyError as exc:
        parser.error(f"unknown device class {exc}; choose from {', '.join(CLASSES)}")
    if not classes or args.reps < 1 or args.disk_mib < 1:
        parser.error("nothing to measure")

    modes = [("in-process", "inproc"), ("proxied", f"proxy-{args.transport}")]
    results = {}
    failed = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mpq-bench-") as tmp:
        # One image for every VM: each class reads the same bytes.
        disk = os.path.join(tmp, "disk.img")
        make_disk(disk, args.disk_mib, seed=7)
        for dc in classes:
            for label, mode in modes:
                log(f"bench: measuring {dc.name} {label} ({mode}, -machine {args.machine})")
                try:
                    results[(dc.name, label)] = measure(dc, mode, args, disk)
                except Exception as exc:  # pylint: disable=broad-except
                    log(f"bench: {dc.name} {label} failed: {exc}")
                    failed.append(f"{dc.name} {label}")

    # Every VM ran randread with the same seed over the same image: same blocks, same bytes.
    checks = {k: r["check"] for k, r in results.items() if r.get("check") not in (None, "n/a")}
    if len(set(checks.values())) > 1:
        log(f"bench: WARNING: randread read different data in different VMs: {checks}")
        failed.append("randread data check")
    for dc in classes:
        values = {results[(dc.name, label)]["value"] for label, _ in modes
                  if (dc.name, label) in results}
        if len(values) > 1:
            log(f"bench: WARNING: {dc.name} register reads differ in-process and proxied: {values}")

    print_table(args, results, classes, modes)
    print(f"(total {time.monotonic() - t_start:.0f} s)")
    if failed:
        print(f"\nbench: FAILED for: {', '.join(failed)} (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
