# SPDX-License-Identifier: GPL-2.0-or-later
"""Guests whose PCI devices live in any number of remote QEMU processes.

mpqemu_vm.VM covers one LSI53C895A in one remote.  This module generalises it:
a Topology is a main QEMU plus a list of Remote processes; each Remote has its
own command line (-device/-drive/-netdev ...) and serves one or more of its
devices, each through its own x-remote-object and its own connection (a
socketpair, one end per process, or a socket path the remote listens on).
The main QEMU gets one x-pci-proxy-dev per served device, with the device's id.

The same description also gives the in-process equivalent (mode='inproc'):
every remote's options go into the main QEMU itself, so a test can check the
same things on both and compare.

    disk = Remote("r1", ["-drive", "id=d1,file=a.img,format=raw,if=none",
                         "-device", "nvme,id=nvme1,serial=x,drive=d1"],
                  devids=["nvme1"], transport="fd")
    with Topology([disk], mode="proxy", machine="q35") as vm:
        vm.shell.check("ls /dev/nvme0n1")

Topology is a mpqemu_vm.VM, so the serial shell, the QMP monitor, the guest
helpers and the log collection of the test suite apply to it unchanged.
Every wait is bounded, and close() stops every process that is still running.
"""

import hashlib
import os
import re
import socket
import tempfile
import time

from mpqemu_vm import (BASE_APPEND, MIB, READY_MARKER, VM, Child, GuestShell, SerialConsole,
                       VMError)

TOPOLOGY_MODES = ("inproc", "proxy")
TRANSPORTS = ("fd", "socket")


class Remote:
    """One remote QEMU process (-machine x-remote).

    name:      short name, used for its log file and socket paths
    args:      its device options, e.g. ["-device", "lsi53c895a,id=lsi1", ...]
    devids:    ids of the PCI devices (on its root bus) it serves to the main
               QEMU, one x-remote-object and one proxy each
    transport: 'fd' (a socketpair per device) or 'socket' (a path per device)
    proxy_props: {devid: "prop=value,..."} extra x-pci-proxy-dev properties
    """

    def __init__(self, name, args, devids, transport="socket", proxy_props=None):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}")
        if not devids:
            raise ValueError(f"remote {name} serves no device")
        self.name = name
        self.args = list(args)
        self.devids = list(devids)
        self.transport = transport
        self.proxy_props = dict(proxy_props or {})
        self.child = None     # the running process (a mpqemu_vm.Child)
        self.exit_code = None  # set when it has been stopped or has exited

    def __repr__(self):
        return f"Remote({self.name!r}, devids={self.devids}, transport={self.transport!r})"


def _option_ids(args):
    """The id= values of the -device/-drive/-netdev options in args."""
    ids = []
    for opt, val in zip(args, args[1:]):
        if opt in ("-device", "-drive", "-netdev", "-object", "-blockdev"):
            m = re.search(r"(?:^|,)(?:id|node-name)=([^,]+)", val)
            if m:
                ids.append(m.group(1))
    return ids


class Topology(VM):
    """A main QEMU and its remotes (mode 'proxy'), or all in one (mode 'inproc').

    remotes:   list of Remote
    machine:   'pc' or 'q35'
    main_args: extra options for the main QEMU in both modes
    """

    def __init__(self, remotes, mode="proxy", machine="pc", main_args=(), append="",
                 name=None, boot_timeout=120, workdir=None):
        if mode not in TOPOLOGY_MODES:
            raise ValueError(f"mode must be one of {TOPOLOGY_MODES}")
        super().__init__("inproc", machine, None, append=append, extra_main_args=main_args,
                         name=name or f"{mode}-{machine}", boot_timeout=boot_timeout,
                         workdir=workdir or tempfile.mkdtemp(prefix="mpqt-"))
        self._own_dir = workdir is None
        self.mode = mode
        self.remotes = list(remotes)
        names = [r.name for r in self.remotes]
        if len(set(names)) != len(names):
            raise ValueError(f"remote names are not unique: {names}")
        devids = [d for r in self.remotes for d in r.devids]
        if len(set(devids)) != len(devids):
            raise ValueError(f"device ids are not unique: {devids}")
        if mode == "inproc":
            # All the options end up in one process: their ids must not collide.
            ids = [i for r in self.remotes for i in _option_ids(r.args)]
            if len(set(ids)) != len(ids):
                raise ValueError(f"option ids collide in the in-process equivalent: {ids}")

    # ------------------------------------------------------------ command lines
    def remote_command(self, remote, transports):
        """transports: {devid: 'fd=N' or 'socket=PATH'}."""
        args = [self.qemu, "-machine", "x-remote", "-nodefaults", "-display", "none"]
        args += remote.args
        for devid in remote.devids:
            args += ["-object", f"x-remote-object,id=robj-{devid},devid={devid},"
                                f"{transports[devid]}"]
        return args

    def main_command(self, device_args, serial_path, qmp_path):
        return ([self.qemu, "-accel", "tcg", "-machine", f"{self.machine},memory-backend=mem",
                 "-object", "memory-backend-memfd,id=mem,size=512M", "-m", "512"]
                + device_args
                + ["-kernel", self.kernel, "-initrd", self.initrd,
                   "-append", f"{BASE_APPEND} {self.append}".strip(),
                   "-nodefaults", "-display", "none", "-no-reboot",
                   "-chardev", f"socket,id=ser0,path={serial_path}",
                   "-serial", "chardev:ser0",
                   "-qmp", f"unix:{qmp_path}"]
                + self.extra_main_args)

    @staticmethod
    def _proxy_arg(remote, devid, transport):
        props = remote.proxy_props.get(devid)
        return ["-device", f"x-pci-proxy-dev,id={devid},{transport}"
                           + (f",{props}" if props else "")]

    # ------------------------------------------------------------ lifecycle
    def _alive(self):
        if not self._main_alive():
            return False
        if not self.require_remote:
            return True
        return all(r.child is None or r.child.alive() for r in self.remotes)

    def _wait_for_socket(self, remote, path, timeout):
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if not remote.child.alive():
                raise VMError(f"remote {remote.name} exited ({remote.child.proc.returncode}) "
                              f"before creating {path}:\n{remote.child.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise VMError(f"remote {remote.name} did not create {path} within {timeout}s")
            time.sleep(0.05)

    def start(self, boot=True):
        """Start the remotes, then the main QEMU; wait until the guest's shell
        is ready.  boot=False (a migration's destination, started with
        -incoming): return once its console and QMP monitor are connected."""
        from qemu.qmp.legacy import QEMUMonitorProtocol  # QEMU's python library

        serial_path = os.path.join(self.dir, "serial.sock")
        qmp_path = os.path.join(self.dir, "qmp.sock")
        self.console = SerialConsole(serial_path, os.path.join(self.dir, "serial.log"))
        self.qmp = QEMUMonitorProtocol(qmp_path, server=True)
        main_fds = []
        open_socks = []
        try:
            device_args = []
            if self.mode == "inproc":
                for remote in self.remotes:
                    device_args += remote.args
            else:
                for remote in self.remotes:
                    transports, remote_fds, proxies = {}, [], []
                    for devid in remote.devids:
                        if remote.transport == "fd":
                            rsock, msock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                            open_socks += [rsock, msock]
                            transports[devid] = f"fd={rsock.fileno()}"
                            remote_fds.append(rsock.fileno())
                            main_fds.append(msock.fileno())
                            proxies += self._proxy_arg(remote, devid, f"fd={msock.fileno()}")
                        else:
                            path = os.path.join(self.dir, f"{remote.name}-{devid}.sock")
                            transports[devid] = f"socket={path}"
                            proxies += self._proxy_arg(remote, devid, f"socket={path}")
                    remote.child = Child(f"remote-{remote.name}",
                                         self.remote_command(remote, transports), self.dir,
                                         pass_fds=remote_fds)
                    device_args += proxies
                # The proxies connect at realize time: the remotes must listen by then.
                for remote in self.remotes:
                    if remote.transport == "socket":
                        for devid in remote.devids:
                            self._wait_for_socket(
                                remote, os.path.join(self.dir, f"{remote.name}-{devid}.sock"), 30)
            self.main = Child("main", self.main_command(device_args, serial_path, qmp_path),
                              self.dir, pass_fds=main_fds)
            for sock in open_socks:
                sock.close()
            open_socks = []

            self.console.accept(30, self._main_alive)
            self.qmp.accept(timeout=30)
            self.qmp.settimeout(30)
            if boot:
                self.console.wait_for(READY_MARKER, self.boot_timeout, 0, self._alive)
                self.shell = GuestShell(self.console, self._alive)
                self.shell.check("set -o pipefail", timeout=30)
        except BaseException:
            for sock in open_socks:
                sock.close()
            self._failed = True
            raise
        return self

    def poweroff(self, timeout=60):
        """Power the guest off from inside; wait for the main QEMU, then end the remotes.

        A remote connected only by socketpairs exits by itself once its proxies
        are gone (auto-shutdown); it gets 10 s to do so.  A remote listening on a
        socket path could serve a new proxy, so it is sent SIGTERM.  Returns the
        main QEMU's exit status; each Remote's exit_code is set.
        """
        self.shell.send("sync; poweroff -f")
        rc = self.main.wait(timeout)
        if rc is None:
            raise VMError(f"main QEMU still running {timeout}s after the guest powered off")
        for remote in self.remotes:
            if remote.child is None:
                continue
            if remote.transport == "fd" and remote.child.wait(10) is None:
                raise VMError(f"remote {remote.name} still running 10 s after the main QEMU "
                              "exited, although all its proxies are gone")
            remote.child.stop()
            remote.exit_code = remote.child.proc.returncode
        return rc

    def close(self):
        """Stop every process still running (main first) and release the sockets."""
        if self.qmp is not None:
            if self._main_alive():
                try:
                    self.qmp.settimeout(3)
                    self.qmp.cmd("quit")
                except Exception:  # pylint: disable=broad-except
                    pass
            try:
                self.qmp.close()
            except Exception:  # pylint: disable=broad-except
                pass
            self.qmp = None
        if self.main is not None:
            self.main.stop()
        for remote in self.remotes:
            if remote.child is not None:
                remote.child.stop()
                if remote.exit_code is None:
                    remote.exit_code = remote.child.proc.returncode
        if self.console is not None:
            self.console.close()

    def remote_exit_codes(self):
        """{remote name: exit status} of the remote processes (none in-process);
        None for one still running."""
        return {r.name: (r.child.proc.returncode if r.child else None)
                for r in self.remotes if self.mode == "proxy"}

    def pids(self):
        pids = {"main": self.main.pid if self.main else None}
        for remote in self.remotes:
            pids[f"remote-{remote.name}"] = remote.child.pid if remote.child else None
        return pids

    def children(self):
        return [r.child for r in self.remotes if r.child is not None] + \
            ([self.main] if self.main is not None else [])

    def logs(self, tail=8000):
        parts = []
        for child in self.children():
            parts.append(f"===== {child.name} QEMU (pid {child.pid}, exit "
                         f"{child.proc.returncode}): {child.command_line()}\n"
                         f"{child.output()[-tail:]}")
        if self.console is not None:
            parts.append(f"===== serial console (last {tail} chars)\n{self.console.text()[-tail:]}")
        return "\n".join(parts)

    # ------------------------------------------------------------ guest helpers
    def pci_functions(self, vendor, device):
        """BDFs of the PCI functions with this ID ('0x8086', '0x5845') seen by the guest."""
        out = self.shell.check(
            "for d in /sys/bus/pci/devices/*; do "
            "echo \"$(basename $d) $(cat $d/vendor) $(cat $d/device)\"; done")
        return [f[0] for f in (line.split() for line in out.splitlines())
                if len(f) == 3 and (f[1], f[2]) == (vendor, device)]

    def pci_driver(self, bdf):
        """Name of the driver bound to the function, or None."""
        rc, out = self.shell.run(f"basename $(readlink /sys/bus/pci/devices/{bdf}/driver)")
        name = out.strip().split()
        return name[-1] if rc == 0 and name else None

    def msi_modes(self, bdf):
        """{irq: 'msi' or 'msix'} of the message-signalled vectors the function uses."""
        out = self.shell.check(f"cd /sys/bus/pci/devices/{bdf} && "
                               "for f in msi_irqs/*; do [ -e $f ] && echo $f $(cat $f); done; true")
        modes = {}
        for line in out.splitlines():
            m = re.fullmatch(r"msi_irqs/(\d+) (\w+)", line.strip())
            if m:
                modes[int(m.group(1))] = m.group(2)
        return modes

    def interrupts(self):
        """/proc/interrupts as {irq: (total count, rest of the line)} for numbered IRQs."""
        out = self.shell.check("cat /proc/interrupts")
        lines = out.splitlines()
        header = next((ln for ln in lines if ln.strip().startswith("CPU")), "")
        ncpu = len(header.split())
        table = {}
        for line in lines:
            m = re.match(r"\s*(\d+):\s+(.*)", line)
            if not m:
                continue
            fields = m.group(2).split()
            counts = fields[:ncpu]
            if not all(c.isdigit() for c in counts):
                continue
            table[int(m.group(1))] = (sum(int(c) for c in counts), " ".join(fields[ncpu:]))
        return table

    def main_log(self, since=0):
        """What the main QEMU printed (its traces, say), from offset since."""
        return self.main.output()[since:]

    def pci_disk(self, vendor_device, disk_glob):
        """(bdf, block device name) of the one function with this (vendor,
        device) and the one disk under disk_glob ("{bdf}" in it is the
        function), waiting (bounded) for the disk."""
        bdfs = self.pci_functions(*vendor_device)
        assert len(bdfs) == 1, f"expected one {':'.join(vendor_device)} function: {bdfs}"
        pattern = disk_glob.format(bdf=bdfs[0])
        rc, out = self.shell.run(
            "i=0; while [ $i -lt 300 ]; do set -- " + pattern + "; [ -e \"$1\" ] && break; "
            "i=$((i+1)); sleep 0.1; done; "
            "for b in \"$@\"; do [ -e \"$b\" ] && basename $b; done; true", timeout=90)
        names = out.split()
        assert rc == 0 and len(names) == 1, f"disks under {pattern}: {out!r}"
        return bdfs[0], names[0]

    def wait_for_path(self, path, timeout=30):
        """Wait (bounded) until path exists in the guest."""
        rc, _ = self.shell.run(
            f"i=0; while [ ! -e {path} ] && [ $i -lt {timeout * 10} ]; do "
            "sleep 0.1; i=$((i+1)); done; [ -e " + path + " ]", timeout=timeout + 30)
        if rc != 0:
            _, diag = self.shell.run("dmesg | tail -n 40")
            raise VMError(f"{path} did not appear in the guest within {timeout}s:\n{diag}")

    def write_random(self, dev, offset_mib, length_mib, timeout=120):
        """Write length_mib MiB of random data at offset_mib of /dev/dev with O_DIRECT;
        returns the sha256 of what was written."""
        out = self.shell.check(
            f"dd if=/dev/urandom of=/tmp/pat bs=1M count={length_mib} 2>/dev/null && "
            "sha256sum /tmp/pat && "
            f"dd if=/tmp/pat of=/dev/{dev} bs=1M seek={offset_mib} oflag=direct conv=fsync "
            "2>/dev/null && sync && rm /tmp/pat", timeout=timeout)
        m = re.search(r"\b([0-9a-f]{64})\s+/tmp/pat", out)
        if not m:
            raise VMError(f"no sha256 of the written pattern in {out!r}")
        return m.group(1)

    def write_reads_back(self, dev, host_data, offset_mib, length_mib):
        """Write random data at offset_mib of /dev/dev, where it must differ from
        host_data (the disk's content), and check the guest reads it back;
        returns its sha256."""
        start, end = offset_mib * MIB, (offset_mib + length_mib) * MIB
        written = self.write_random(dev, offset_mib, length_mib)
        assert written != hashlib.sha256(host_data[start:end]).hexdigest()
        assert self.guest_sha256(dev, offset_mib, length_mib) == written
        return written

    def pci_config(self, bdf):
        """The function's config space as the guest reads it (the first 256 bytes)."""
        out = self.shell.check(f"od -An -tx1 -v -N256 /sys/bus/pci/devices/{bdf}/config")
        data = bytes(int(x, 16) for x in out.split())
        if len(data) != 256:
            raise VMError(f"read {len(data)} bytes of config space of {bdf}, not 256")
        return data


def pci_capability(config, cap_id):
    """Offset of the first capability cap_id in a config space dump, or None."""
    if not config[0x06] & 0x10:          # status: capabilities list
        return None
    pos, seen = config[0x34] & 0xfc, set()
    while pos and pos not in seen and pos + 2 <= len(config):
        seen.add(pos)
        if config[pos] == cap_id:
            return pos
        pos = config[pos + 1] & 0xfc
    return None


PCI_CAP_MSI = 0x05
PCI_CAP_MSIX = 0x11


def msix_enabled(config):
    """(capability present, MSI-X Enable bit, table size) from a config space dump."""
    pos = pci_capability(config, PCI_CAP_MSIX)
    if pos is None:
        return False, False, 0
    ctrl = config[pos + 2] | config[pos + 3] << 8
    return True, bool(ctrl & 0x8000), (ctrl & 0x7ff) + 1


def trace_args(events):
    """Command-line options that enable these trace events."""
    return [arg for event in events for arg in ("-trace", event)]


def process_cpu_ns(pid):
    """CPU time of all live threads of pid so far, in ns (schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass    # the thread has just exited
    return total


def start_or_fail(vm):
    """Start vm (a Topology); on failure stop it and fail the test with its logs."""
    import pytest   # only the tests need it, not the benchmark
    try:
        vm.start()
    except Exception as exc:  # pylint: disable=broad-except
        vm.close()
        logs = vm.logs(tail=3000)
        vm.cleanup()
        pytest.fail(f"{vm.name}: the VM did not come up: {exc}\n{logs}", pytrace=False)
    return vm


def serve_vm(vm, setup):
    """For a fixture (yield from it): start vm, then setup(vm), which may
    fail the test with the VM's logs; then yield the VM and stop it."""
    vm = start_or_fail(vm)
    try:
        setup(vm)
    except BaseException:
        vm.close()
        vm.dump_logs()
        vm.cleanup()
        raise
    yield vm
    vm.close()
    vm.cleanup()
