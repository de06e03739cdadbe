# SPDX-License-Identifier: GPL-2.0-or-later
"""Start and drive mpqemu test VMs.

A VM is either an in-process one (the LSI53C895A inside the main QEMU) or a
remote QEMU process serving the LSI plus a main QEMU with x-pci-proxy-dev,
connected by a socketpair (one fd handed to each child) or by a socket path.

The guest is the busybox image made by scripts/build-guest.sh; it is driven by
typing commands on its serial console (see GuestShell).  Every wait has a
timeout, and close() kills whatever is still running; on failure the QEMU
stderr and the serial log are printed (VM.dump_logs()).
"""

import atexit
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

READY_MARKER = "MPQEMU-GUEST-READY"
LSI_VENDOR_DEVICE = ("0x1000", "0x0012")
MODES = ("inproc", "proxy-fd", "proxy-socket")
MIB = 1024 * 1024
# Serial console, quiet kernel, reboot (= QEMU exits, with -no-reboot) on panic, and
# no 3 s SCSI bus settle delay after the sym53c8xx reset (the guest's /init passes
# "<module>.<param>=" words to insmod).
BASE_APPEND = "console=ttyS0 quiet panic=-1 sym53c8xx.settle=0"

_live_processes = []


def _kill_leftovers():
    for proc in list(_live_processes):
        if proc.poll() is None:
            proc.kill()


atexit.register(_kill_leftovers)


class VMError(Exception):
    """Something the VM or the guest did not do in time or at all."""


def qemu_binary():
    """The QEMU under test: $MPQEMU_QEMU or build/qemu-system-x86_64."""
    path = os.environ.get("MPQEMU_QEMU") or os.path.join(REPO, "build", "qemu-system-x86_64")
    if not os.access(path, os.X_OK):
        raise VMError(f"QEMU binary {path} not found (run 'make qemu' or set MPQEMU_QEMU)")
    return path


_guest_image = None


def guest_image():
    """(kernel, initrd) paths; builds the guest with scripts/build-guest.sh if needed.

    $MPQEMU_KERNEL and $MPQEMU_INITRD override it.
    """
    global _guest_image
    if os.environ.get("MPQEMU_KERNEL") and os.environ.get("MPQEMU_INITRD"):
        return os.environ["MPQEMU_KERNEL"], os.environ["MPQEMU_INITRD"]
    if _guest_image is None:
        script = os.path.join(REPO, "scripts", "build-guest.sh")
        res = subprocess.run([script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, timeout=900, check=False)
        if res.returncode != 0:
            raise VMError(f"{script} failed ({res.returncode}):\n{res.stderr}")
        paths = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
        _guest_image = (paths["KERNEL"], paths["INITRD"])
    return _guest_image


def pattern_bytes(size, seed):
    """Deterministic pseudo-random bytes (made 1 MiB at a time: randbytes has a size limit)."""
    rng = random.Random(seed)
    return b"".join(rng.randbytes(min(MIB, size - off)) for off in range(0, size, MIB))


def make_disk(path, size_mib=64, seed=1):
    """Write a raw disk image filled with a known pseudo-random pattern; returns the data."""
    data = pattern_bytes(size_mib * MIB, seed)
    with open(path, "wb") as f:
        f.write(data)
    return data


def file_sha256(path, offset=0, length=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left is None or left > 0:
            chunk = f.read(MIB if left is None else min(MIB, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


class Child:
    """A QEMU child process whose stdout and stderr go to a log file."""

    def __init__(self, name, args, logdir, pass_fds=()):
        self.name = name
        self.args = args
        self.log_path = os.path.join(logdir, f"{name}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, pass_fds=tuple(pass_fds),
                                     start_new_session=True)
        _live_processes.append(self.proc)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        """Exit code, or None if still running after timeout seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace=3.0):
        """SIGTERM, then SIGKILL after grace seconds."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(grace) is None:
                self.proc.kill()
                self.wait(10)
        self._log.close()
        if self.proc in _live_processes:
            _live_processes.remove(self.proc)

    def output(self):
        if not self._log.closed:
            self._log.flush()
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def command_line(self):
        return " ".join(self.args)


class SerialConsole:
    """Listens on a UNIX socket that QEMU's serial chardev connects to as a client.

    Listening before QEMU starts means no early output is lost.  A reader thread
    collects everything into a buffer (and a log file).
    """

    def __init__(self, path, log_path):
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(1)
        self._conn = None
        self._buf = ""
        self._cond = threading.Condition()
        self._closed = False
        self._log = open(log_path, "w", encoding="utf-8")
        self._thread = None

    def accept(self, timeout, alive=lambda: True):
        deadline = time.monotonic() + timeout
        self._sock.settimeout(0.2)
        while True:
            try:
                self._conn, _ = self._sock.accept()
                break
            except socket.timeout:
                if not alive():
                    raise VMError("QEMU exited before connecting its serial port")
                if time.monotonic() > deadline:
                    raise VMError(f"QEMU did not connect its serial port within {timeout}s")
        self._conn.settimeout(None)
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    def _reader(self):
        while True:
            try:
                data = self._conn.recv(65536)
            except OSError:
                data = b""
            text = data.decode("utf-8", "replace").replace("\r", "")
            with self._cond:
                if not data:
                    self._closed = True
                    self._cond.notify_all()
                    return
                self._buf += text
                self._log.write(text)
                self._log.flush()
                self._cond.notify_all()

    def write(self, text):
        if self._conn is None:
            raise VMError("serial console not connected")
        self._conn.sendall(text.encode())

    def wait_for(self, regex, timeout, start=0, alive=lambda: True):
        """Wait until regex matches the output from offset start; returns the match."""
        pattern = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = pattern.search(self._buf, start)
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VMError(f"timed out after {timeout}s waiting for /{regex}/ on the serial console")
                if self._closed or not alive():
                    # give the reader a moment to drain what is left
                    self._cond.wait(0.2)
                    m = pattern.search(self._buf, start)
                    if m:
                        return m
                    raise VMError(f"a QEMU process exited while waiting for /{regex}/ on the serial console")
                self._cond.wait(min(left, 0.5))

    @property
    def position(self):
        with self._cond:
            return len(self._buf)

    def text(self):
        with self._cond:
            return self._buf

    def close(self):
        for s in (self._conn, self._sock):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(2)
        self._log.close()


class GuestShell:
    """Runs commands in the guest's interactive shell on the serial console.

    Each command is bracketed by two markers printed with printf so that the
    echo of the typed line never looks like the markers themselves.
    """

    def __init__(self, console, alive):
        self.console = console
        self._alive = alive
        self._seq = 0

    def run(self, cmd, timeout=60):
        """Run one shell command line; returns (exit status, output)."""
        self._seq += 1
        tag = f"MPQ{self._seq}x{os.getpid()}"
        start = self.console.position
        # One line: a second line typed while the first runs would be echoed
        # by the tty into the command's output.
        line = f"printf '%s_%s\\n' {tag} BEGIN; {cmd}; printf '%s_%s_%s\\n' {tag} END $?\n"
        self.console.write(line)
        end = self.console.wait_for(rf"{tag}_END_(\d+)\n", timeout, start, self._alive)
        begin = self.console.wait_for(rf"{tag}_BEGIN\n", 1, start)
        return int(end.group(1)), self.console.text()[begin.end():end.start()]

    def check(self, cmd, timeout=60):
        """Run cmd, raise VMError unless it exits 0; returns its output."""
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise VMError(f"guest command failed with status {rc}: {cmd}\n{out}")
        return out

    def send(self, cmd):
        """Type a command without waiting for it (e.g. poweroff)."""
        self.console.write(cmd + "\n")


class VM:
    """A guest with an LSI53C895A disk controller, in-process or proxied.

    mode:    'inproc', 'proxy-fd' or 'proxy-socket'
    machine: 'pc' or 'q35'
    disk:    path of a raw image attached as scsi-hd behind the LSI
    """

    def __init__(self, mode, machine, disk, append="", extra_main_args=(), name=None,
                 boot_timeout=120, workdir=None, extra_remote_args=()):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.machine = machine
        self.disk = disk
        self.append = append
        self.extra_main_args = list(extra_main_args)
        self.extra_remote_args = list(extra_remote_args)
        self.name = name or f"{mode}-{machine}"
        self.boot_timeout = boot_timeout
        self.qemu = qemu_binary()
        self.kernel, self.initrd = guest_image()
        # Short directory: UNIX socket paths are limited to 107 bytes.
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="mpq-")
        self.remote = None
        self.main = None
        self.console = None
        self.shell = None
        self.qmp = None
        self._failed = False
        # Tests that kill the remote on purpose turn this off.
        self.require_remote = True

    # ------------------------------------------------------------ command lines
    def remote_args(self, transport):
        """transport: 'fd=N' or 'socket=PATH'."""
        return ([self.qemu, "-machine", "x-remote", "-nodefaults", "-display", "none",
                 "-device", "lsi53c895a,id=lsi1",
                 "-drive", f"id=d1,file={self.disk},format=raw,if=none",
                 "-device", "scsi-hd,drive=d1,bus=lsi1.0",
                 "-object", f"x-remote-object,id=robj1,devid=lsi1,{transport}"]
                + self.extra_remote_args)

    def main_args(self, device_args, serial_path, qmp_path):
        return ([self.qemu, "-accel", "tcg", "-machine", self.machine,
                 "-object", "memory-backend-memfd,id=mem,size=512M",
                 "-numa", "node,memdev=mem", "-m", "512"]
                + device_args
                + ["-kernel", self.kernel, "-initrd", self.initrd,
                   "-append", f"{BASE_APPEND} {self.append}".strip(),
                   "-nodefaults", "-display", "none", "-no-reboot",
                   "-chardev", f"socket,id=ser0,path={serial_path}",
                   "-serial", "chardev:ser0",
                   "-qmp", f"unix:{qmp_path}"]
                + self.extra_main_args)

    @staticmethod
    def lsi_inproc_args(disk):
        return ["-device", "lsi53c895a,id=lsi1",
                "-drive", f"id=d1,file={disk},format=raw,if=none",
                "-device", "scsi-hd,drive=d1,bus=lsi1.0"]

    # ------------------------------------------------------------ lifecycle
    def _main_alive(self):
        return self.main is not None and self.main.alive()

    def _alive(self):
        """Main QEMU running and, unless require_remote is off, the remote too.

        Waits on the guest give up at once when this turns false, instead of
        waiting for the guest's own timeouts on a dead device.
        """
        if not self._main_alive():
            return False
        return not self.require_remote or self.remote is None or self.remote.alive()

    def start(self):
        """Start the processes and wait until the guest's shell is ready."""
        from qemu.qmp.legacy import QEMUMonitorProtocol  # QEMU's python library

        serial_path = os.path.join(self.dir, "serial.sock")
        qmp_path = os.path.join(self.dir, "qmp.sock")
        self.console = SerialConsole(serial_path, os.path.join(self.dir, "serial.log"))
        self.qmp = QEMUMonitorProtocol(qmp_path, server=True)
        try:
            if self.mode == "inproc":
                device = self.lsi_inproc_args(self.disk)
                self.main = Child("main", self.main_args(device, serial_path, qmp_path), self.dir)
            elif self.mode == "proxy-fd":
                remote_sock, main_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    rfd, mfd = remote_sock.fileno(), main_sock.fileno()
                    self.remote = Child("remote", self.remote_args(f"fd={rfd}"), self.dir,
                                        pass_fds=[rfd])
                    device = ["-device", f"x-pci-proxy-dev,id=lsi1,fd={mfd}"]
                    self.main = Child("main", self.main_args(device, serial_path, qmp_path),
                                      self.dir, pass_fds=[mfd])
                finally:
                    remote_sock.close()
                    main_sock.close()
            else:
                link = os.path.join(self.dir, "remote.sock")
                self.remote = Child("remote", self.remote_args(f"socket={link}"), self.dir)
                self._wait_for_path(link, 30)
                device = ["-device", f"x-pci-proxy-dev,id=lsi1,socket={link}"]
                self.main = Child("main", self.main_args(device, serial_path, qmp_path), self.dir)

            self.console.accept(30, self._main_alive)
            self.qmp.accept(timeout=30)
            self.qmp.settimeout(30)
            self.console.wait_for(READY_MARKER, self.boot_timeout, 0, self._alive)
            self.shell = GuestShell(self.console, self._alive)
            # Fail pipelines on any stage, so 'dd ... | sha256sum' reports dd errors.
            self.shell.check("set -o pipefail", timeout=30)
        except BaseException:
            self._failed = True
            raise
        return self

    def _wait_for_path(self, path, timeout):
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if not self.remote.alive():
                raise VMError(f"remote QEMU exited ({self.remote.proc.returncode}) "
                              f"before creating {path}")
            if time.monotonic() > deadline:
                raise VMError(f"remote QEMU did not create {path} within {timeout}s")
            time.sleep(0.05)

    def qmp_cmd(self, name, **args):
        return self.qmp.cmd(name, **args)

    def poweroff(self, timeout=60):
        """Power the guest off from inside and wait for the main QEMU to exit.

        Returns the main QEMU's exit status.  The remote is then given a few
        seconds to exit by itself before it is stopped.
        """
        self.shell.send("sync; poweroff -f")
        rc = self.main.wait(timeout)
        if rc is None:
            raise VMError(f"main QEMU still running {timeout}s after the guest powered off")
        if self.remote is not None and self.remote.wait(5) is None:
            self.remote.stop()
        return rc

    def close(self):
        """Kill everything still running and release the sockets."""
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
        for child in (self.main, self.remote):
            if child is not None:
                child.stop()
        if self.console is not None:
            self.console.close()

    def cleanup(self):
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def pids(self):
        return {"main": self.main.pid if self.main else None,
                "remote": self.remote.pid if self.remote else None}

    def logs(self, tail=8000):
        parts = []
        for child in (self.remote, self.main):
            if child is not None:
                parts.append(f"===== {child.name} QEMU (pid {child.pid}, exit "
                             f"{child.proc.returncode}): {child.command_line()}\n"
                             f"{child.output()[-tail:]}")
        if self.console is not None:
            parts.append(f"===== serial console (last {tail} chars)\n{self.console.text()[-tail:]}")
        return "\n".join(parts)

    def dump_logs(self, stream=None):
        print(f"\n########## logs of VM {self.name}\n{self.logs()}", file=stream or sys.stderr)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None or self._failed:
            self.close()
            self.dump_logs()
        else:
            self.close()
        self.cleanup()
        return False

    # ------------------------------------------------------------ guest helpers
    def lsi_pci_functions(self):
        """BDFs of the PCI functions with ID 1000:0012 seen by the guest."""
        out = self.shell.check(
            "for d in /sys/bus/pci/devices/*; do "
            "echo \"$(basename $d) $(cat $d/vendor) $(cat $d/device)\"; done")
        found = []
        for line in out.splitlines():
            fields = line.split()
            if len(fields) == 3 and (fields[1], fields[2]) == LSI_VENDOR_DEVICE:
                found.append(fields[0])
        return found

    def lsi_disk(self, timeout=30):
        """Name (e.g. 'sda') of the SCSI disk behind the sym53c8xx-bound LSI."""
        rc, out = self.shell.run(
            f"i=0; while [ $i -lt {timeout * 10} ]; do "
            "set -- /sys/bus/pci/drivers/sym53c8xx/0000:*/host*/target*/*/block/*; "
            "[ -e \"$1\" ] && break; i=$((i+1)); sleep 0.1; done; "
            "for b in \"$@\"; do [ -e \"$b\" ] && basename $b; done; true",
            timeout=timeout + 30)
        names = [n for n in out.split() if re.fullmatch(r"sd[a-z]+", n)]
        if rc != 0 or not names:
            _, diag = self.shell.run("ls /sys/bus/pci/drivers/sym53c8xx/; dmesg | "
                                     "grep -iE 'sym|scsi|sd[a-z ]|fail|error|warn' | tail -n 30")
            raise VMError("no disk behind the sym53c8xx-bound controller; sym53c8xx binds:\n"
                          f"{diag}")
        return names[0]

    def guest_sha256(self, dev, offset_mib, length_mib, timeout=120):
        """sha256 of a disk range read with O_DIRECT in the guest."""
        out = self.shell.check(
            f"dd if=/dev/{dev} bs=1M skip={offset_mib} count={length_mib} iflag=direct "
            "| sha256sum", timeout=timeout)
        m = re.search(r"\b([0-9a-f]{64})\b", out)
        if not m:
            raise VMError(f"no sha256 in guest output: {out!r}")
        return m.group(1)
