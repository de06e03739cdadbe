#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""mpqemu benchmark: the LSI53C895A in-process and proxied, side by side.

Measured from inside the guest (TCG):
  * MMIO read latency: 1-byte reads of SCRATCHA (offset 0x34, no side effects)
    in the memory BAR (BAR1), by bench/guest/mmio-lat.c through sysfs resource1;
  * PIO read latency: the same register through the I/O BAR (BAR0) with inb;
  * sequential read throughput: dd iflag=direct bs=1M of the whole disk, read
    repeatedly for about 2 x --seconds per run (timed with bench/guest/nsclock.c).
Each figure is the median of --reps runs.  Run by scripts/bench.sh.
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

SCRATCHA = 0x34
MMIO_BAR = 1
PIO_BAR = 0


def log(text):
    print(text, file=sys.stderr, flush=True)


def bar_latency(vm, bdf, bar, reps, target_s):
    """Median ns per 1-byte read of SCRATCHA in BAR bar; also returns the value read."""
    def run(count):
        out = vm.shell.check(f"mmio-lat -n {count} -w 1 {bdf} {bar} {SCRATCHA:#x}",
                             timeout=120)
        m = re.search(r"value=(0x[0-9a-f]+) .*ns_per_read=([0-9.]+)", out)
        if not m:
            raise VMError(f"unexpected mmio-lat output: {out!r}")
        return float(m.group(2)), m.group(1)

    ns, _ = run(200)  # calibration: aim at target_s per run
    count = int(min(max(target_s * 1e9 / max(ns, 1.0), 200), 5_000_000))
    results = [run(count) for _ in range(reps)]
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

    mb_s = run(1)
    passes = int(min(max(target_s * mb_s / (size_mib * 1.048576), 1), 32))
    speeds = [run(passes) for _ in range(reps)]
    return statistics.median(speeds)


def measure(mode, machine, disk, size_mib, reps, target_s):
    vm = VM(mode, machine, disk, append="iomem=relaxed", name=f"bench-{mode}")
    try:
        t0 = time.monotonic()
        vm.start()
        log(f"bench: {mode}: guest up in {time.monotonic() - t0:.1f} s, pids {vm.pids()}")
        bdfs = vm.lsi_pci_functions()
        if len(bdfs) != 1:
            raise VMError(f"guest sees {len(bdfs)} LSI53C895A functions")
        bdf = bdfs[0]
        dev = vm.lsi_disk()
        res = {}
        res["mmio"], mmio_val, n_mmio = bar_latency(vm, bdf, MMIO_BAR, reps, target_s)
        res["pio"], pio_val, n_pio = bar_latency(vm, bdf, PIO_BAR, reps, target_s)
        if mmio_val != pio_val:
            raise VMError(f"SCRATCHA reads {mmio_val} through BAR1 but {pio_val} "
                          "through BAR0: the reads do not reach the device")
        log(f"bench: {mode}: {n_mmio} MMIO / {n_pio} PIO reads per run, SCRATCHA={mmio_val}")
        res["seq"] = seq_read(vm, dev, size_mib, reps, 2 * target_s)
        vm.poweroff()
        return res
    except Exception:
        vm.close()
        vm.dump_logs()
        raise
    finally:
        vm.close()
        vm.cleanup()


def fmt(value, unit_fmt):
    return "n/a" if value is None else unit_fmt.format(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default="pc", choices=("pc", "q35"))
    parser.add_argument("--transport", default="socket", choices=("socket", "fd"),
                        help="how the proxied configuration connects its two processes")
    parser.add_argument("--disk-mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="target duration of one latency run")
    args = parser.parse_args()

    configs = [("in-process", "inproc"), ("proxied", f"proxy-{args.transport}")]
    results = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="mpq-bench-") as tmp:
        disk = os.path.join(tmp, "disk.img")
        make_disk(disk, args.disk_mib, seed=7)
        for label, mode in configs:
            log(f"bench: measuring {label} ({mode}, -machine {args.machine})")
            try:
                results[label] = measure(mode, args.machine, disk, args.disk_mib,
                                         args.reps, args.seconds)
            except Exception as exc:  # pylint: disable=broad-except
                log(f"bench: {label} failed: {exc}")
                failed.append(label)
                results[label] = {}

    rows = [
        ("MMIO read, BAR1 SCRATCHA, 1 byte", "ns/access", "mmio", "{:.1f}", False),
        ("PIO read, BAR0 SCRATCHA, 1 byte", "ns/access", "pio", "{:.1f}", False),
        (f"sequential read, O_DIRECT 1 MiB, {args.disk_mib} MiB", "MB/s", "seq", "{:.1f}", True),
    ]
    inp, prx = results["in-process"], results["proxied"]
    print()
    print(f"LSI53C895A, -machine {args.machine}, TCG, median of {args.reps} "
          f"(proxied over {args.transport})")
    head = f"{'metric':<42} {'unit':<10} {'in-process':>12} {'proxied':>12} {'proxied/in-process':>19}"
    print(head)
    print("-" * len(head))
    for name, unit, key, vfmt, _higher_better in rows:
        a, b = inp.get(key), prx.get(key)
        ratio = f"{b / a:.2f}x" if a and b else "n/a"
        print(f"{name:<42} {unit:<10} {fmt(a, vfmt):>12} {fmt(b, vfmt):>12} {ratio:>19}")
    if failed:
        print(f"\nbench: FAILED for: {', '.join(failed)} (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
