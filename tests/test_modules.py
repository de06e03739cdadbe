# The two modules are real loadable modules, mapped only by the processes
# that use them: -device x-pci-proxy-dev loads hw-proxy.so, -machine x-remote
# loads remote-machine.so, and a VM that uses neither maps neither.
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
QEMU = os.environ.get("MPQEMU_QEMU", str(TOP / "build" / "qemu-system-x86_64"))
MODULES = ("hw-proxy.so", "remote-machine.so")


def mapped_modules(pid):
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {m for m in MODULES if "/" + m in maps}


def wait_for(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Qemu:
    """A QEMU that is up once its QMP socket accepts a connection."""

    def __init__(self, tmp, name, args):
        self.qmp_path = os.path.join(tmp, name + ".qmp")
        self.proc = subprocess.Popen(
            [QEMU, "-display", "none", "-qmp",
             f"unix:{self.qmp_path},server=on,wait=off"] + args,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        wait_for(self._qmp_up, f"{name} QMP socket")

    def _qmp_up(self):
        """True once QEMU answers a command: start-up, devices included, is over."""
        if self.proc.poll() is not None:
            raise AssertionError("QEMU exited early:\n" + self.proc.stdout.read())
        if not os.path.exists(self.qmp_path):
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.settimeout(10)
                s.connect(self.qmp_path)
                f = s.makefile("rwb")
                if not f.readline().startswith(b'{"QMP"'):
                    return False
                for cmd in (b"qmp_capabilities", b"query-status"):
                    f.write(b'{"execute": "' + cmd + b'"}\n')
                    f.flush()
                    if b'"return"' not in f.readline():
                        return False
                return True
            except OSError:
                return False

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def tmp():
    with tempfile.TemporaryDirectory(prefix="mpqemu-modules-") as d:
        yield d


def test_plain_vm_maps_no_module(tmp):
    vm = Qemu(tmp, "plain", ["-accel", "tcg", "-machine", "pc", "-S"])
    try:
        assert mapped_modules(vm.proc.pid) == set()
    finally:
        vm.stop()


def test_each_side_maps_only_its_module(tmp):
    sock = os.path.join(tmp, "remote.sock")
    remote = Qemu(tmp, "remote", [
        "-machine", "x-remote", "-nodefaults",
        "-device", "lsi53c895a,id=lsi1",
        "-object", f"x-remote-object,id=robj1,devid=lsi1,socket={sock}"])
    try:
        assert mapped_modules(remote.proc.pid) == {"remote-machine.so"}
        main = Qemu(tmp, "main", [
            "-accel", "tcg", "-machine", "pc", "-S",
            "-object", "memory-backend-memfd,id=mem,size=64M",
            "-machine", "memory-backend=mem", "-m", "64",
            "-device", f"x-pci-proxy-dev,id=lsi1,socket={sock}"])
        try:
            assert mapped_modules(main.proc.pid) == {"hw-proxy.so"}
        finally:
            main.stop()
    finally:
        remote.stop()
