# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers for tests of QMP-managed remote processes (x-remote-process).

MainVM is a guest booted with no proxied device at all (a mpqemu_topology
Topology without remotes): remote processes and their proxies are then
created, hot-plugged, unplugged and ended through the main QEMU's QMP monitor
only, as a management layer would do it.

Besides the VM, this module has what those tests check:
  - QMP events, collected so that a test can wait for one without losing
    the others (EventLog);
  - QMP errors (qmp_error), and snapshots of what the main QEMU holds
    (state_snapshot) to check that a failed command left nothing behind;
  - the host-side resources of a process: its fds, threads and children
    (ProcStats, children_of), read from /proc;
  - the guest's view of an NVMe controller, found by its serial number.
"""

import asyncio
import os
import re
import signal
import time

from mpqemu_topology import Topology
from mpqemu_vm import VMError

PROXY_DRIVER = "x-pci-proxy-dev"
NVME_PCI_ID = ("0x1b36", "0x0010")


# ---------------------------------------------------------------- waiting


def wait_until(pred, timeout, what, interval=0.1):
    """Poll pred() until it returns something true; returns it, or raises
    AssertionError naming what was waited for (and the last value seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} "
                                 f"(last value: {value!r})")
        time.sleep(interval)


# ---------------------------------------------------------------- QMP


class EventLog:
    """Every QMP event the main QEMU sent, waited for by name and data."""

    def __init__(self, qmp):
        self.qmp = qmp
        self.pending = []   # received, not yet consumed by wait()/take()
        self.all = []       # everything received, for failure messages

    def _pull(self, timeout):
        try:
            ev = self.qmp.pull_event(wait=float(max(timeout, 0.01)))
        except (asyncio.TimeoutError, TimeoutError):
            return None
        if ev is not None:
            self.pending.append(ev)
            self.all.append(ev)
        return ev

    def drain(self):
        for ev in self.qmp.get_events(wait=False):
            self.pending.append(ev)
            self.all.append(ev)

    @staticmethod
    def _matches(ev, name, data):
        if ev.get("event") != name:
            return False
        evdata = ev.get("data", {})
        return all(evdata.get(k) == v for k, v in data.items())

    def take(self, name, **data):
        """The matching events received so far (consumed), without waiting."""
        self.drain()
        found = [ev for ev in self.pending if self._matches(ev, name, data)]
        self.pending = [ev for ev in self.pending if ev not in found]
        return found

    def wait(self, name, timeout=30, **data):
        """The first event `name` whose data has all of `data`; consumed."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            for ev in self.pending:
                if self._matches(ev, name, data):
                    self.pending.remove(ev)
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                names = [(e.get("event"), e.get("data")) for e in self.all[-20:]]
                raise AssertionError(f"no QMP event {name} with {data} within {timeout}s; "
                                     f"last events: {names}")
            self._pull(min(left, 1.0))

    def clear(self):
        self.drain()
        self.pending = []


def qmp_error(vm, qmp_command, /, **args):
    """Run a QMP command that must fail; returns the error description."""
    from qemu.qmp import ExecuteError  # QEMU's python library
    try:
        ret = vm.qmp.cmd(qmp_command, **args)
    except ExecuteError as exc:
        return str(exc)
    raise AssertionError(f"QMP {qmp_command} {args} succeeded (returned {ret!r}) "
                         "but was expected to fail")


def hmp(vm, line, timeout=30):
    """Run a human monitor command on the main QEMU; returns its output."""
    vm.qmp.settimeout(timeout)
    try:
        return vm.qmp.cmd("human-monitor-command", **{"command-line": line})
    except (asyncio.TimeoutError, TimeoutError):
        raise AssertionError(f"HMP command {line!r} did not return within {timeout} s "
                             "(the monitor hangs)") from None


def remote_qmp(vm, rp_id, command, **arguments):
    """x-remote-qmp: run `command` in remote process rp_id; returns its return value."""
    args = {"id": rp_id, "command": command}
    if arguments:
        args["arguments"] = arguments
    return vm.qmp.cmd("x-remote-qmp", **args)


def remote_processes(vm):
    """query-remote-processes as {id: info}."""
    return {p["id"]: p for p in vm.qmp.cmd("query-remote-processes")}


def qom_names(vm, path):
    return sorted(p["name"] for p in vm.qmp.cmd("qom-list", path=path))


def remote_qom_names(vm, rp_id, path):
    return sorted(p["name"] for p in remote_qmp(vm, rp_id, "qom-list", path=path))


def remote_block_nodes(vm, rp_id):
    return sorted(n["node-name"] for n in remote_qmp(vm, rp_id, "query-named-block-nodes"))


def state_snapshot(vm):
    """What a failed command must not change in the main QEMU: its remote
    processes, its /objects, its peripherals and its child processes."""
    procs = vm.qmp.cmd("query-remote-processes")
    return {
        "remote-processes": sorted((p["id"], p.get("pid"), p["state"],
                                    tuple(sorted((d["devid"], d["proxy"], d["connected"])
                                                 for d in p["devices"])))
                                   for p in procs),
        "objects": qom_names(vm, "/objects"),
        "peripherals": qom_names(vm, "/machine/peripheral"),
        "children": sorted(children_of(vm.main.pid)),
    }


# ---------------------------------------------------------------- host processes


def _stat_fields(pid):
    """(state, ppid) of pid from /proc/pid/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    return rest[0], int(rest[1])


def process_state(pid):
    """'R', 'S', 'Z', ... or None when the process no longer exists."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def parent_of(pid):
    fields = _stat_fields(pid)
    return fields[1] if fields else None


def children_of(pid):
    """{child pid: state} of every process (zombies included) whose parent is pid."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields and fields[1] == pid:
            kids[int(name)] = fields[0]
    return kids


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None


def start_time(pid):
    """The process's start time (field 22 of /proc/pid/stat): with the pid, it
    identifies a process even after its pid could have been reused."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def gone(pid):
    """True when pid has exited and been reaped (no zombie left)."""
    return process_state(pid) is None


class ProcStats:
    """Open fds, threads and child processes of one process."""

    def __init__(self, pid):
        self.pid = pid
        self.fds = len(os.listdir(f"/proc/{pid}/fd"))
        self.threads = len(os.listdir(f"/proc/{pid}/task"))
        self.children = len(children_of(pid))

    def as_dict(self):
        return {"fds": self.fds, "threads": self.threads, "children": self.children}

    def fd_targets(self):
        out = {}
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                out[int(fd)] = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                pass
        return out

    def __repr__(self):
        return f"ProcStats(pid={self.pid}, {self.as_dict()})"


def kill_if_same(pid, started, sig=signal.SIGKILL):
    """Signal pid only if it is still the process that started at `started`."""
    if started is not None and start_time(pid) == started:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------- the VM


class MainVM(Topology):
    """A guest whose main QEMU starts with no proxied device; remote processes
    come later through QMP.  `extra_logs` are files (e.g. the remote processes'
    logs) shown with the QEMU logs when a test fails."""

    def __init__(self, machine="pc", main_args=(), name=None, workdir=None):
        super().__init__([], mode="proxy", machine=machine, main_args=main_args,
                         name=name or f"rp-{machine}", workdir=workdir)
        self.events = None
        self.extra_logs = []
        self.spawned = {}   # pid -> start time: remote processes to kill at close

    def start(self):
        super().start()
        self.events = EventLog(self.qmp)
        return self

    def remember(self, pid):
        """Kill remote process pid at close() if it is still running then."""
        if pid and pid not in self.spawned:
            self.spawned[pid] = start_time(pid)

    def close(self):
        # Remote processes the main QEMU spawned are its children: once the
        # main QEMU is gone they must not linger (they are killed if they do).
        if self.main is not None and self._main_alive():
            for pid in children_of(self.main.pid):
                self.remember(pid)
        super().close()
        for pid, started in self.spawned.items():
            kill_if_same(pid, started)

    def logs(self, tail=8000):
        parts = [super().logs(tail)]
        for path in self.extra_logs:
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError as exc:
                text = f"({exc})"
            parts.append(f"===== {path}\n{text[-tail:]}")
        if self.events is not None:
            evs = "\n".join(f"{e.get('event')} {e.get('data')}" for e in self.events.all)
            parts.append(f"===== QMP events of the main QEMU\n{evs}")
        return "\n".join(parts)

    # ------------------------------------------------------------ remote processes
    def add_remote_process(self, rp_id, **props):
        """x-add-remote-process; returns its RemoteProcessInfo."""
        if "log" in props and props["log"] not in self.extra_logs:
            self.extra_logs.append(props["log"])
        info = self.qmp.cmd("x-add-remote-process", id=rp_id, **props)
        if isinstance(info, dict) and info.get("pid") and info.get("spawned"):
            self.remember(info["pid"])
        return info

    def plug(self, proxy_id, rp_id, devid, bus=None, **more):
        args = {"driver": PROXY_DRIVER, "id": proxy_id, "remote": rp_id, "devid": devid}
        if bus:
            args["bus"] = bus
        args.update(more)
        return self.qmp.cmd("device_add", **args)

    def unplug(self, proxy_id, timeout=30):
        """device_del and wait until the guest released it (DEVICE_DELETED)."""
        self.qmp.cmd("device_del", id=proxy_id)
        return self.events.wait("DEVICE_DELETED", timeout, device=proxy_id)

    # ------------------------------------------------------------ guest
    def nvme_disk(self, serial, timeout=30):
        """Block device name (e.g. 'nvme0n1') of the NVMe controller with this
        serial number, once the guest has it and /dev has its node.  (The
        guest's sysfs pads serial numbers with spaces: they are compared trimmed.)"""
        rc, out = self.shell.run(
            f"f=; i=0; while [ -z \"$f\" ] && [ $i -lt {timeout * 10} ]; do "
            "for c in /sys/class/nvme/nvme*; do "
            f"[ \"$(echo $(cat $c/serial 2>/dev/null))\" = \"{serial}\" ] || continue; "
            "for n in $c/nvme*n*; do [ -e \"$n\" ] && f=$(basename $n); done; done; "
            "[ -z \"$f\" ] && sleep 0.1; i=$((i+1)); done; echo \"disk=$f\"; [ -n \"$f\" ]",
            timeout=timeout + 30)
        m = re.search(r"disk=(\S+)", out)
        if rc != 0 or not m:
            _, diag = self.shell.run("for c in /sys/class/nvme/nvme*; do echo $c "
                                     "$(cat $c/serial 2>/dev/null); done; "
                                     "ls /sys/bus/pci/devices; dmesg | tail -n 30")
            raise VMError(f"no NVMe disk with serial {serial} in the guest within "
                          f"{timeout}s:\n{diag}")
        # With native NVMe multipath the controller's path is nvmeXcYnZ; the disk is nvmeXnZ.
        name = re.sub(r"^(nvme\d+)c\d+(n\d+)$", r"\1\2", m.group(1))
        self.wait_for_path(f"/dev/{name}", timeout)
        return name

    def nvme_serials(self):
        """Serial numbers of the NVMe controllers the guest has."""
        out = self.shell.check("for c in /sys/class/nvme/nvme*; do [ -e $c/serial ] && "
                               "echo \"serial=$(cat $c/serial)\"; done; true")
        return re.findall(r"serial=(\S+)", out)

    def wait_nvme_gone(self, serial, timeout=30):
        """Wait until no NVMe controller of the guest has this serial any more."""
        rc, _ = self.shell.run(
            f"i=0; while [ $i -lt {timeout * 10} ]; do g=1; "
            "for c in /sys/class/nvme/nvme*; do "
            f"[ \"$(echo $(cat $c/serial 2>/dev/null))\" = \"{serial}\" ] && g=0; done; "
            "[ $g = 1 ] && break; sleep 0.1; i=$((i+1)); done; [ $g = 1 ]",
            timeout=timeout + 30)
        if rc != 0:
            raise VMError(f"the guest still has the NVMe controller {serial} after {timeout}s")

    def pci_nvme_functions(self):
        return self.pci_functions(*NVME_PCI_ID)

    def config_dword0(self, bdf):
        """Vendor and device ID as the guest reads them now, e.g. '1b36 0010'."""
        out = self.shell.check(f"od -An -tx2 -N4 /sys/bus/pci/devices/{bdf}/config")
        return " ".join(out.split())
