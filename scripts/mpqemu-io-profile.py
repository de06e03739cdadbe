#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""mpqemu I/O profile: where each random read goes, per thread, in-process and proxied.

`make bench` says how fast; this says why.  For each device class it boots the
in-process and the proxied VMs of mpqemu-bench.py side by side and, while the
guest runs randread at one queue depth and block size (4 KiB; --block 1048576
for reads as large as the bench's sequential ones), counts per I/O and per
thread of the main QEMU (its main loop, its vCPUs, the rest) and of the remote
(its main loop, the rest): CPU time and time ready to run but waiting for a
CPU (schedstat: where two cores are too few for the threads that want them),
voluntary and involuntary context switches (/proc/<pid>/task/<tid>/status: a
voluntary one is a sleep, so a wake-up to come; an involuntary one is a thread
that wanted to go on and was made to wait) and, where `perf` can count system
call tracepoints, the system calls that polling and waking cost (on a VM host
they are expensive: the profile prints what one costs here).  Counts per I/O
hardly move with the host's load, which the IOPS figures of `make bench` do:
compare these from change to change.
The columns take turns, run by run, as in the bench; the figures are medians.
Run by scripts/bench.sh --io-profile.
"""

import argparse
import ctypes
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("mpqemu_bench",
                                               os.path.join(HERE, "mpqemu-bench.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

# The system calls a proxied access or interrupt may cost, and the host's own
SYSCALLS = ("ppoll", "poll", "epoll_wait", "epoll_ctl", "sched_yield", "futex",
            "read", "write", "recvmsg", "sendmsg", "io_uring_enter", "pread64",
            "preadv")
ROLES = ("main loop", "vCPU", "other")
# Per thread and I/O, before the system calls
FIGURES = {"cpu_us": "CPU µs", "runnable_us": "waited for CPU µs",
           "sleeps": "sleeps", "preempted": "preempted"}


def thread_stats(pid):
    """{tid: (cpu ns, runnable ns, voluntary, involuntary)} of pid's live threads.

    schedstat's second field is the time the thread was ready to run but
    waited for a CPU: where the host's two cores are too few.
    """
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                cpu_ns, runnable_ns = map(int, f.read().split()[:2])
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as f:
                status = f.read()
        except (OSError, ValueError):
            continue    # the thread has just exited
        switches = [int(re.search(rf"^{kind}_ctxt_switches:\s*(\d+)", status, re.M).group(1))
                    for kind in ("voluntary", "nonvoluntary")]
        out[int(tid)] = (cpu_ns, runnable_ns, *switches)
    return out


def roles(col):
    """{(process, tid): role} of the column's threads right now."""
    vcpus = {cpu["thread-id"] for cpu in col.vm.qmp.cmd("query-cpus-fast")}
    out = {}
    for proc, pid in col.vm.pids().items():
        if not pid:
            continue
        for tid in map(int, os.listdir(f"/proc/{pid}/task")):
            role = "main loop" if tid == pid else "vCPU" if tid in vcpus else "other"
            out[(proc, tid)] = role
    return out


class SyscallCounter:
    """perf stat of system call tracepoints, per thread, over one run."""

    def __init__(self, pids):
        self.proc = None
        perf = shutil.which("perf")
        if not perf:
            return
        events = [a for name in SYSCALLS for a in ("-e", f"syscalls:sys_enter_{name}")]
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [perf, "stat", "-x,", "--per-thread", "-p", ",".join(map(str, pids))]
            + events, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)

    def stop(self):
        """{tid: {syscall: count}}; empty without perf or its tracepoints."""
        if not self.proc:
            return {}
        self.proc.send_signal(2)    # SIGINT: perf stat prints its counts
        _, err = self.proc.communicate(timeout=30)
        counts = {}
        for line in err.splitlines():
            # "comm-tid,count,,syscalls:sys_enter_name,..."
            fields = line.split(",")
            if len(fields) < 4 or not fields[1].isdigit():
                continue
            m = re.search(r"-(\d+)$", fields[0])
            name = fields[3].replace("syscalls:sys_enter_", "")
            if m and name in SYSCALLS:
                counts.setdefault(int(m.group(1)), {})[name] = int(fields[1])
        return counts


def syscall_ns():
    """What one system call costs on this host (getppid), in ns."""
    libc = ctypes.CDLL(None, use_errno=True)
    n = 100000
    t0 = time.perf_counter_ns()
    for _ in range(n):
        libc.syscall(110)   # SYS_getppid on x86_64
    per_call = (time.perf_counter_ns() - t0) / n
    t0 = time.perf_counter_ns()
    for _ in range(n):
        libc.abs(1)         # the same call from Python, without the kernel
    return max(per_call - (time.perf_counter_ns() - t0) / n, 0.0)


def profile_run(col, seconds, jobs, block):
    """One randread run: (IOPS, {(process, role): {figure: total}})."""
    who = roles(col)
    pids = [pid for pid in col.vm.pids().values() if pid]
    before = {proc: thread_stats(pid) for proc, pid in col.vm.pids().items() if pid}
    counter = SyscallCounter(pids)
    time.sleep(0.3)     # perf attaches
    out = col.vm.shell.check(f"randread -t {seconds} -b {block} -s {bench.RAND_SEED} "
                             f"-j {jobs} /dev/{col.dev}", timeout=seconds + 120)
    calls = counter.stop()
    after = {proc: thread_stats(pid) for proc, pid in col.vm.pids().items() if pid}
    m = re.search(r"ios=(\d+) .*iops=([0-9.]+)", out)
    if not m:
        raise bench.VMError(f"unexpected randread output: {out!r}")
    ios = int(m.group(1))
    totals = {}
    for proc, threads in after.items():
        for tid, (ns, wait, vol, invol) in threads.items():
            ns0, wait0, vol0, invol0 = before[proc].get(tid, (0, 0, 0, 0))
            key = (proc, who.get((proc, tid), "other"))
            t = totals.setdefault(key, {})
            for fig, value in (("cpu_us", (ns - ns0) / 1000),
                               ("runnable_us", (wait - wait0) / 1000),
                               ("sleeps", vol - vol0), ("preempted", invol - invol0)):
                t[fig] = t.get(fig, 0) + value
            for name, count in calls.get(tid, {}).items():
                t[name] = t.get(name, 0) + count
    return float(m.group(2)), {k: {f: v / ios for f, v in t.items()} for k, t in totals.items()}


def block_size(block):
    """4 KiB, 1 MiB: a read's size for the headings."""
    return f"{block >> 20} MiB" if not block % (1 << 20) else f"{block >> 10} KiB"


def fmt_row(label, values):
    return f"  {label:<22}" + "".join(f"{v:>9}" for v in values)


def print_profile(devclass, columns, iops, per_io, cost_ns, block):
    print(f"\n{devclass.name}: {block_size(block)} random reads, per I/O (median of the runs)")
    print(fmt_row("", [c.label for c in columns]))
    print(fmt_row("IOPS", [f"{statistics.median(iops[c.label]):.0f}" for c in columns]))
    print(fmt_row("µs per I/O", [f"{1e6 / statistics.median(iops[c.label]):.1f}"
                                 for c in columns]))
    keys = sorted({k for c in columns for run in per_io[c.label] for k in run},
                  key=lambda k: (k[0] != "main", ROLES.index(k[1])))
    for proc, role in keys:
        figs = sorted({f for c in columns for run in per_io[c.label]
                       for f in run.get((proc, role), {})},
                      key=lambda f: (f not in FIGURES, list(FIGURES).index(f) if f in FIGURES
                                     else 0, f))
        print(f"  {proc} {role}")
        for fig in figs:
            vals = []
            for c in columns:
                runs = [run.get((proc, role), {}).get(fig, 0.0) for run in per_io[c.label]]
                vals.append(statistics.median(runs) if any(runs) else 0.0)
            if not any(v >= 0.05 for v in vals):
                continue
            label = FIGURES.get(fig, f"{fig}()")
            print(fmt_row("  " + label, [f"{v:.1f}" if fig.endswith("_us") else f"{v:.2f}"
                                         for v in vals]))
    syscalls = {c.label: sum(statistics.median([sum(v for f, v in run.get(k, {}).items()
                                                    if f in SYSCALLS)
                                                for run in per_io[c.label]])
                             for k in keys)
                for c in columns}
    if any(syscalls.values()):
        print(fmt_row("system calls, all", [f"{syscalls[c.label]:.1f}" for c in columns]))
        print(fmt_row("  at µs each", [f"{syscalls[c.label] * cost_ns / 1000:.1f}"
                                       for c in columns]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default=",".join(bench.CLASSES),
                        help=f"comma-separated subset of {','.join(bench.CLASSES)}")
    parser.add_argument("--columns", default="ring",
                        help="proxied columns next to in-process (ring,socket)")
    parser.add_argument("--jobs", type=int, default=1, help="queue depth (1)")
    parser.add_argument("--block", type=int, default=4096,
                        help="bytes per read, a multiple of 4096 (4096)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per run (5)")
    parser.add_argument("--reps", type=int, default=3, help="runs per column (3)")
    parser.add_argument("--machine", default="pc", choices=("pc", "q35"))
    parser.add_argument("--pin", action="store_true", help="as in the bench")
    args = parser.parse_args()
    try:
        classes = [bench.CLASSES[n] for n in args.devices.split(",") if n]
    except KeyError as exc:
        parser.error(f"unknown device class {exc}")
    known = {"ring": bench.Mode("ring", "proxy-socket"),
             "socket": bench.Mode("socket", "proxy-socket", ",ring=off")}
    try:
        modes = [bench.Mode("in-process", "inproc")] + [
            known[c] for c in args.columns.split(",") if c]
    except KeyError as exc:
        parser.error(f"unknown column {exc}")
    if not classes or args.reps < 1 or args.seconds < 1 or args.jobs < 1:
        parser.error("nothing to measure")
    if args.block < 4096 or args.block % 4096:
        parser.error(f"--block {args.block}: reads are O_DIRECT, of a positive "
                     "multiple of 4096 bytes")

    cost_ns = syscall_ns()
    print(f"mpqemu I/O profile: -machine {args.machine}, TCG, QD{args.jobs}, "
          f"{block_size(args.block)} reads, "
          f"{args.reps} runs of {args.seconds} s per column; one system call costs "
          f"{cost_ns:.0f} ns on this host" + ("" if shutil.which("perf") else
                                            " (no perf: system calls not counted)"))
    with tempfile.TemporaryDirectory(prefix="mpq-profile-") as tmp:
        disk = os.path.join(tmp, "disk.img")
        bench.make_disk(disk, 64)
        for devclass in classes:
            columns = []
            try:
                for mode in modes:
                    columns.append(bench.boot(devclass, mode, args, disk))
                iops = {c.label: [] for c in columns}
                per_io = {c.label: [] for c in columns}
                for r in range(args.reps):
                    k = r % len(columns)
                    for col in columns[k:] + columns[:k]:
                        value, figures = profile_run(col, args.seconds, args.jobs,
                                                     args.block)
                        iops[col.label].append(value)
                        per_io[col.label].append(figures)
                        bench.log(f"profile: {col.name}: {value:.0f} IOPS")
                print_profile(devclass, columns, iops, per_io, cost_ns, args.block)
            finally:
                for col in columns:
                    col.vm.close()
                    col.vm.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
