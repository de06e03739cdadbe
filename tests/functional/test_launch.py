# SPDX-License-Identifier: GPL-2.0-or-later
"""scripts/mpqemu-launch: a VM and its remote processes from one description.

Without booting anything: bad descriptions are refused with a message that
says what is wrong and where, before any process is started; --dry-run prints
the main QEMU's command line and the QMP commands in the order that builds a
proxied VM, the same for JSON and TOML.

With guests (the main QEMU must support x-add-remote-process): two remote
processes, an NVMe controller in one and an LSI53C895A with a SCSI disk in
the other, each disk's host pattern reads back in the guest and what the
guest writes lands in the image; then the launcher is stopped (SIGINT,
SIGTERM, guest poweroff, or killed outright) and no QEMU of the VM may be
left running.  A remote that cannot start, or a device the remote refuses,
ends the launch with a message naming it, again with nothing left behind.
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from mpqemu_vm import (BASE_APPEND, MIB, READY_MARKER, GuestShell, SerialConsole, VMError,
                       file_sha256, guest_image, make_disk, qemu_binary)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCH = os.path.join(REPO, "scripts", "mpqemu-launch")
DISK_MIB = 16
WRITE_OFFSET_MIB = 4
WRITE_MIB = 2
NVME_SERIAL = "mpqlaunch0"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def workdir():
    # Short: UNIX socket paths are limited to 107 bytes (pytest's tmp_path is long).
    path = tempfile.mkdtemp(prefix="mpql-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    return path


def read_text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def fake_qemu(directory):
    """An executable that records that it was run: nothing may run it."""
    marker = os.path.join(directory, "fake-qemu-ran")
    path = os.path.join(directory, "fake-qemu")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"#!/bin/sh\necho \"$@\" >> {shlex.quote(marker)}\nexit 1\n")
    os.chmod(path, 0o755)
    return path, marker


def run_launch(args, timeout=60, **kw):
    try:
        return subprocess.run([sys.executable, LAUNCH] + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, check=False, **kw)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mpqemu-launch {' '.join(args)} still running after {timeout}s")
    return None


def two_remotes(directory, machine="q35", kernel=None, initrd=None):
    """rp0: NVMe on nvme.img; rp1: LSI53C895A with a scsi-hd on lsi.img.

    Every process of the VM has directory in its command line (the remotes
    through -name), so that processes_mentioning() finds them all."""
    desc = {
        "name": "launch-test",
        "machine": machine,
        "memory": "512M",
        "accel": "tcg",
        "append": BASE_APPEND,
        "main_args": ["-no-reboot"],
        "remotes": [
            {"id": "rp0", "log": "rp0.log", "args": ["-name", f"{directory}/rp0"],
             "devices": [{"id": "nvme0", "driver": "nvme", "props": {"serial": NVME_SERIAL},
                          "backend": {"driver": "raw", "node-name": "d0",
                                      "file": {"driver": "file", "filename": "nvme.img"}},
                          "proxy": {"id": "px0"}}]},
            {"id": "rp1", "log": "rp1.log", "args": ["-name", f"{directory}/rp1"],
             "devices": [{"id": "lsi0", "driver": "lsi53c895a", "proxy": {"id": "px1"}},
                         {"id": "hd0", "driver": "scsi-hd", "props": {"bus": "lsi0.0"},
                          "backend": {"driver": "file", "filename": "lsi.img",
                                      "node-name": "d1"},
                          "proxy": False}]},
        ],
    }
    if kernel:
        desc["kernel"], desc["initrd"] = kernel, initrd
    return desc


# ====================================================================== descriptions

BAD_DESCRIPTIONS = {
    "unknown-top-key": ({"machin": "q35"}, [r"unknown key 'machin' \(did you mean 'machine'\?\)"]),
    "remote-without-id": ({"remotes": [{"args": []}]}, [r"remotes\[0\]: missing 'id'"]),
    "duplicate-remote-id": ({"remotes": [{"id": "rp0"}, {"id": "rp0"}]},
                            [r"duplicate remote id 'rp0'"]),
    "duplicate-proxy-id": ({"remotes": [
        {"id": "rp0", "devices": [{"id": "nvme0", "driver": "nvme"}]},
        {"id": "rp1", "devices": [{"id": "nvme0", "driver": "nvme"}]}]},
        [r"duplicate proxy id 'nvme0' \(devices rp0/nvme0 and rp1/nvme0\)"]),
    "duplicate-device-id": ({"remotes": [{"id": "rp0", "devices": [
        {"id": "d", "driver": "nvme", "proxy": {"id": "p1"}},
        {"id": "d", "driver": "nvme", "proxy": {"id": "p2"}}]}]},
        [r"remotes\[0\] 'rp0': duplicate device id 'd'"]),
    "device-without-driver": ({"remotes": [{"id": "rp0", "devices": [{"id": "n"}]}]},
                              [r"remotes\[0\] 'rp0'\.devices\[0\] 'n': missing 'driver'"]),
    "unknown-device-key": ({"remotes": [{"id": "rp0", "devices": [
        {"id": "n", "driver": "nvme", "prop": {}}]}]}, [r"unknown key 'prop'"]),
    "bad-id": ({"remotes": [{"id": "0rp"}]}, [r"'0rp' is not a valid id"]),
    "args-not-list": ({"remotes": [{"id": "rp0", "args": "-device nvme"}]},
                      [r"'args' must be a list of strings"]),
    "bad-memory": ({"memory": "lots"}, [r"'memory' must be a size"]),
    "bad-heartbeat": ({"remotes": [{"id": "rp0", "heartbeat-interval": -1,
                                    "heartbeat-timeout": 0}]},
                      [r"'heartbeat-interval' must be a non-negative number of milliseconds",
                       r"'heartbeat-timeout' must be a positive number of milliseconds"]),
    "proxy-reserved-key": ({"remotes": [{"id": "rp0", "devices": [
        {"id": "n", "driver": "nvme", "proxy": {"devid": "x"}}]}]},
        [r"'devid' is set by mpqemu-launch"]),
    "several-problems": ({"cpus": 0, "remotes": [{"id": "rp0", "devices": "nvme"}],
                          "append": "x"},
                         [r"'cpus' must be a positive integer", r"'devices' must be a list",
                          r"'append' needs 'kernel'"]),
}


@pytest.mark.parametrize("case", list(BAD_DESCRIPTIONS))
def test_bad_description(workdir, case):
    """Refused with exit status 2 and every problem named; nothing started."""
    desc, messages = BAD_DESCRIPTIONS[case]
    qemu, marker = fake_qemu(workdir)
    path = write_json(os.path.join(workdir, "vm.json"), desc)
    res = run_launch(["--qemu", qemu, "--serial", "none", path])
    assert res.returncode == 2, f"exit status {res.returncode}:\n{res.stderr}"
    assert "nothing was started" in res.stderr, res.stderr
    for message in messages:
        assert re.search(message, res.stderr), f"no /{message}/ in:\n{res.stderr}"
    assert not os.path.exists(marker), "the QEMU binary was run for a bad description"
    assert res.stdout == ""


@pytest.mark.parametrize("text,message", [
    ('{"machine": "q35",', r"not valid JSON: .* line 1"),
    ("[1, 2]", r"must be an object"),
])
def test_unparsable_description(workdir, text, message):
    qemu, marker = fake_qemu(workdir)
    path = os.path.join(workdir, "vm.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    res = run_launch(["--qemu", qemu, path])
    assert res.returncode == 2, res.stderr
    assert re.search(message, res.stderr), res.stderr
    assert not os.path.exists(marker)


def test_missing_description_and_bad_options(workdir):
    qemu, marker = fake_qemu(workdir)
    res = run_launch(["--qemu", qemu, os.path.join(workdir, "nope.json")])
    assert res.returncode == 2 and "cannot read it" in res.stderr, res.stderr
    path = write_json(os.path.join(workdir, "vm.json"), {"remotes": []})
    res = run_launch(["--qemu", qemu, "--serial", "telnet:x", path])
    assert res.returncode == 2 and "bad --serial" in res.stderr, res.stderr
    # A kernel that does not exist is found before anything starts, too.
    write_json(path, {"kernel": "no-such-vmlinuz"})
    res = run_launch(["--qemu", qemu, "--serial", "none", path])
    assert res.returncode == 2 and "no-such-vmlinuz does not exist" in res.stderr, res.stderr
    assert not os.path.exists(marker)


def test_main_qemu_refuses_its_command_line(workdir):
    """The main QEMU exits at once (a bad main_args): its own message, then the
    launcher's, status 1, and nothing left running."""
    path = write_json(os.path.join(workdir, "vm.json"), {
        "machine": "pc", "memory": "256M",
        "main_args": ["-device", "no-such-device", "-name", workdir]})
    res = run_launch(["--serial", "none", path])
    assert res.returncode == 1, res.stderr
    assert "'no-such-device' is not a valid device model name" in res.stderr, res.stderr
    assert "the main QEMU exited with status 1 while starting" in res.stderr, res.stderr
    assert "mpqemu-launch: warning:" not in res.stderr, res.stderr
    assert not processes_mentioning(workdir)


# ====================================================================== --dry-run


def dry_run(path, *extra):
    qemu, marker = fake_qemu(os.path.dirname(path))
    res = run_launch(["--qemu", qemu, "--dry-run"] + list(extra) + [path])
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(marker), "--dry-run ran QEMU"
    lines = [line for line in res.stdout.splitlines() if not line.startswith("#")]
    return shlex.split(lines[0]), [json.loads(line) for line in lines[1:]], res.stdout


def options(argv, name):
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_dry_run_plan(workdir, machine):
    """Main QEMU paused with shared RAM; remotes, backends, devices, proxies, cont."""
    desc = two_remotes(workdir, machine, "vmlinuz", "initrd.img")
    path = write_json(os.path.join(workdir, "vm.json"), desc)
    argv, qmp, _ = dry_run(path, "--qmp-socket", os.path.join(workdir, "user.sock"))

    assert "-S" in argv, argv
    backend_ids = {}
    for obj in options(argv, "-object"):
        m = re.match(r"memory-backend-memfd,id=([^,]+),size=512M(,|$)", obj)
        if m:
            assert "share=on" in obj.split(","), obj
            backend_ids[m.group(1)] = obj
    assert len(backend_ids) == 1, options(argv, "-object")
    ram = next(iter(backend_ids))
    assert options(argv, "-machine") == [f"{machine},memory-backend={ram}"]
    assert options(argv, "-m") == ["512M"]
    assert f"unix:{workdir}/user.sock,server=on,wait=off" in options(argv, "-qmp")

    commands = [(m["execute"], m.get("arguments")) for m in qmp]
    assert commands[-1] == ("cont", None)

    def index(pred):
        found = [i for i, (cmd, args) in enumerate(commands) if pred(cmd, args or {})]
        assert len(found) == 1, commands
        return found[0]

    def in_remote(rid, command, **match):
        return index(lambda c, a: c == "x-remote-qmp" and a.get("id") == rid
                     and a.get("command") == command
                     and all(a.get("arguments", {}).get(k) == v for k, v in match.items()))

    add0 = index(lambda c, a: c == "x-add-remote-process" and a.get("id") == "rp0")
    add1 = index(lambda c, a: c == "x-add-remote-process" and a.get("id") == "rp1")
    # (the backends' files, opened after the remote's sandbox is on)
    assert commands[add0][1] == {"id": "rp0", "log": "rp0.log",
                                 "args": ["-name", f"{workdir}/rp0"],
                                 "allow-paths": ["nvme.img"]}
    assert commands[add1][1]["allow-paths"] == ["lsi.img"]
    blk0 = in_remote("rp0", "blockdev-add", **{"node-name": "d0"})
    nvme = in_remote("rp0", "device_add", driver="nvme", id="nvme0", drive="d0",
                     serial=NVME_SERIAL)
    lsi = in_remote("rp1", "device_add", driver="lsi53c895a", id="lsi0")
    blk1 = in_remote("rp1", "blockdev-add", **{"node-name": "d1"})
    hd = in_remote("rp1", "device_add", driver="scsi-hd", id="hd0", drive="d1", bus="lsi0.0")
    assert add0 < blk0 < nvme and add1 < lsi < hd and blk1 < hd, commands

    proxies = [(i, a) for i, (c, a) in enumerate(commands)
               if c == "device_add" and a.get("driver") == "x-pci-proxy-dev"]
    assert [(a["id"], a["remote"], a["devid"]) for _, a in proxies] == \
        [("px0", "rp0", "nvme0"), ("px1", "rp1", "lsi0")], "one proxy per PCI device, not hd0"
    assert min(i for i, _ in proxies) > max(nvme, hd), "proxies before their devices exist"
    ports = [dict(kv.split("=", 1) for kv in d.split(",")[1:])
             for d in options(argv, "-device") if d.startswith("pcie-root-port,")]
    if machine == "q35":
        # device_add cannot plug into q35's root bus: each proxy gets a root port.
        assert sorted(p["id"] for p in ports) == sorted(a["bus"] for _, a in proxies)
        assert len({p["chassis"] for p in ports}) == len(ports)
    else:
        assert not ports and all("bus" not in a for _, a in proxies)


def test_dry_run_toml_equals_json(workdir):
    toml = """\
name = "launch-test"
machine = "pc"
memory = "1G"
cpus = 2
main_args = ["-no-reboot"]

[[remotes]]
id = "rp0"
args = ["-blockdev", "driver=file,filename=a.img,node-name=f0"]
timeout = 20000
heartbeat-interval = 0

[[remotes.devices]]
id = "nvme0"
driver = "nvme"
props = { serial = "s0", drive = "f0" }
proxy = { id = "px0", addr = "5", ring = false }

[[remotes]]
id = "rp1"

[[remotes.qmp]]
execute = "object-add"
arguments = { qom-type = "iothread", id = "io0" }

[[remotes.devices]]
id = "net0"
driver = "e1000e"
netdev = { id = "n0", type = "user" }
"""
    as_json = {
        "name": "launch-test", "machine": "pc", "memory": "1G", "cpus": 2,
        "main_args": ["-no-reboot"],
        "remotes": [
            {"id": "rp0", "args": ["-blockdev", "driver=file,filename=a.img,node-name=f0"],
             "timeout": 20000, "heartbeat-interval": 0,
             "devices": [{"id": "nvme0", "driver": "nvme",
                          "props": {"serial": "s0", "drive": "f0"},
                          "proxy": {"id": "px0", "addr": "5", "ring": False}}]},
            {"id": "rp1", "qmp": [{"execute": "object-add",
                                   "arguments": {"qom-type": "iothread", "id": "io0"}}],
             "devices": [{"id": "net0", "driver": "e1000e",
                          "netdev": {"id": "n0", "type": "user"}}]}]}
    toml_path = os.path.join(workdir, "vm.toml")
    with open(toml_path, "w", encoding="utf-8") as f:
        f.write(toml)
    json_path = write_json(os.path.join(workdir, "vm.json"), as_json)
    argv_t, qmp_t, _ = dry_run(toml_path)
    argv_j, qmp_j, _ = dry_run(json_path)
    assert argv_t == argv_j
    assert qmp_t == qmp_j
    assert options(argv_j, "-smp") == ["2"] and options(argv_j, "-m") == ["1024M"]
    add = [m["arguments"] for m in qmp_j if m["execute"] == "x-add-remote-process"]
    assert add[0] == {"id": "rp0", "timeout": 20000, "heartbeat-interval": 0,
                      "args": ["-blockdev", "driver=file,filename=a.img,node-name=f0"]}
    netdev = [m["arguments"] for m in qmp_j if m["execute"] == "x-remote-qmp"
              and m["arguments"]["command"] == "netdev_add"]
    assert netdev == [{"id": "rp1", "command": "netdev_add",
                       "arguments": {"id": "n0", "type": "user"}}]
    nic = [m["arguments"]["arguments"] for m in qmp_j if m["execute"] == "x-remote-qmp"
           and m["arguments"]["arguments"].get("driver") == "e1000e"]
    assert nic == [{"driver": "e1000e", "id": "net0", "netdev": "n0"}]
    proxy = [m["arguments"] for m in qmp_j if m["execute"] == "device_add"
             and m["arguments"]["driver"] == "x-pci-proxy-dev"]
    assert proxy[0] == {"driver": "x-pci-proxy-dev", "id": "px0", "remote": "rp0",
                        "devid": "nvme0", "addr": "5", "ring": False}


# ====================================================================== with guests


def qemu_has_remote_processes():
    """Whether the main QEMU has the x-add-remote-process QMP command."""
    qmp = ('{"execute": "qmp_capabilities"}\n{"execute": "query-commands"}\n'
           '{"execute": "quit"}\n')
    res = subprocess.run([qemu_binary(), "-machine", "none", "-nodefaults", "-display", "none",
                          "-qmp", "stdio"], input=qmp, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=30, check=False)
    return '"x-add-remote-process"' in res.stdout


def process_state(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()


def running(pid):
    st = process_state(pid)
    return st is not None and st[0] not in ("Z", "X")


def processes_mentioning(text):
    """Pids of running processes whose command line contains text."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmdline and running(int(entry)):
            found.append((int(entry), cmdline))
    return found


class Launch:
    """mpqemu-launch running a description, its serial console on a socket
    this test listens on, and the main QEMU's QMP for the test on another."""

    def __init__(self, directory, desc, name="vm", extra_args=()):
        self.dir = directory
        self.extra_args = list(extra_args)
        self.desc_path = write_json(os.path.join(directory, f"{name}.json"), desc)
        self.summary_path = os.path.join(directory, "summary.json")
        self.qmp_path = os.path.join(directory, "qmp.sock")
        self.out_path = os.path.join(directory, "launch.out")
        self.console = SerialConsole(os.path.join(directory, "serial.sock"),
                                     os.path.join(directory, "serial.log"))
        self.proc = None
        self.shell = None
        self.summary = None
        self.qmp = None

    def start(self, wait_summary=True):
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, LAUNCH, "--serial", f"connect:{self.console.path}",
                 "--qmp-socket", self.qmp_path, "--summary-json", self.summary_path]
                + self.extra_args + [self.desc_path],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.console.accept(60, self.alive)
        if wait_summary:
            self.wait_summary()
        return self

    def alive(self):
        return self.proc.poll() is None

    def output(self):
        return read_text(self.out_path)

    def logs(self):
        parts = [f"===== mpqemu-launch output\n{self.output()}"]
        for name in ("rp0.log", "rp1.log"):
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                parts.append(f"===== {name}\n{read_text(path)[-4000:]}")
        parts.append(f"===== serial console\n{self.console.text()[-4000:]}")
        return "\n".join(parts)

    def wait_summary(self, timeout=180):
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.summary_path):
            if not self.alive():
                raise VMError(f"mpqemu-launch exited ({self.proc.returncode}) before the VM "
                              f"ran:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise VMError(f"no summary from mpqemu-launch within {timeout}s:\n{self.logs()}")
            time.sleep(0.1)
        with open(self.summary_path, encoding="utf-8") as f:
            self.summary = json.load(f)
        return self.summary

    def boot(self, timeout=180):
        self.console.wait_for(READY_MARKER, timeout, 0, self.alive)
        self.shell = GuestShell(self.console, self.alive)
        self.shell.check("set -o pipefail", timeout=30)

    def pids(self):
        """{name: pid} of every QEMU of the VM, from the launcher's summary."""
        pids = {"main": self.summary["main"]["pid"]}
        for remote in self.summary["remotes"]:
            pids[remote["id"]] = remote["pid"]
        return pids

    def monitor(self):
        from qemu.qmp.legacy import QEMUMonitorProtocol  # pylint: disable=import-outside-toplevel
        if self.qmp is None:
            self.qmp = QEMUMonitorProtocol(self.qmp_path)
            self.qmp.connect()
            self.qmp.settimeout(30)
        return self.qmp

    def wait_exit(self, timeout=90):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"mpqemu-launch still running {timeout}s after being told to stop:\n"
                        f"{self.logs()}")
        return None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            print(f"\n########## logs of {self.desc_path}\n{self.logs()}", file=sys.stderr)
        self.close()
        return False

    def close(self):
        if self.qmp is not None:
            try:
                self.qmp.close()
            except Exception:  # pylint: disable=broad-except
                pass
        if self.proc is not None and self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # Whatever the launcher left behind (a failure of the test by itself:
        # assert_nothing_left checks it first) must not outlive the test.
        for pid, _ in processes_mentioning(self.dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.console.close()


def assert_nothing_left(directory, pids, logs=lambda: "", timeout=15):
    """Neither the main QEMU nor any remote process of the VM is still running:
    none of pids, and no process naming directory (see two_remotes())."""
    deadline = time.monotonic() + timeout
    while True:
        left = {name: pid for name, pid in pids.items() if pid is not None and running(pid)}
        stray = processes_mentioning(directory)
        if not left and not stray:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"still running {timeout}s after mpqemu-launch ended: {left}, "
                        f"processes naming {directory}: {stray}\n{logs()}")
        time.sleep(0.2)


@pytest.fixture
def needs_remote_processes():
    if not qemu_has_remote_processes():
        pytest.fail(f"{qemu_binary()} has no x-add-remote-process command: QMP-managed "
                    "remote processes are missing from this build")


def guest_nvme_disk(shell, serial):
    # The serial number file is padded with spaces.
    out = shell.check(
        "i=0; while [ $i -lt 300 ]; do for s in /sys/block/nvme*/device/serial; do "
        f"[ \"$(tr -d ' ' < $s 2>/dev/null)\" = {serial} ] && "
        "echo FOUND ${s%/device/serial} && break 2; done; i=$((i+1)); sleep 0.1; done; true",
        timeout=60)
    m = re.search(r"FOUND /sys/block/(nvme\w+)", out)
    assert m, f"no NVMe disk with serial {serial} in the guest: {out!r}"
    return re.sub(r"^(nvme\d+)c\d+(n\d+)$", r"\1\2", m.group(1))


def guest_lsi_disk(shell):
    out = shell.check(
        "i=0; while [ $i -lt 300 ]; do "
        "set -- /sys/bus/pci/drivers/sym53c8xx/0000:*/host*/target*/*/block/*; "
        "[ -e \"$1\" ] && break; i=$((i+1)); sleep 0.1; done; "
        "for b in \"$@\"; do [ -e \"$b\" ] && basename $b; done; true", timeout=60)
    names = re.findall(r"\bsd[a-z]+\b", out)
    assert len(names) == 1, f"disks behind sym53c8xx: {out!r}"
    return names[0]


def guest_sha256(shell, dev, skip_mib, count_mib):
    out = shell.check(f"dd if=/dev/{dev} bs=1M skip={skip_mib} count={count_mib} "
                      "iflag=direct 2>/dev/null | sha256sum", timeout=120)
    return re.search(r"\b([0-9a-f]{64})\b", out).group(1)


def guest_write(shell, dev, seek_mib, count_mib):
    """Writes random data with O_DIRECT; returns its sha256."""
    out = shell.check(f"dd if=/dev/urandom of=/tmp/pat bs=1M count={count_mib} 2>/dev/null && "
                      f"sha256sum /tmp/pat && dd if=/tmp/pat of=/dev/{dev} bs=1M "
                      f"seek={seek_mib} oflag=direct conv=fsync 2>/dev/null && rm /tmp/pat",
                      timeout=120)
    return re.search(r"\b([0-9a-f]{64})\s+/tmp/pat", out).group(1)


def disks(directory):
    nvme = make_disk(os.path.join(directory, "nvme.img"), DISK_MIB, seed=0x1a0)
    lsi = make_disk(os.path.join(directory, "lsi.img"), DISK_MIB, seed=0x1a1)
    return nvme, lsi


def started(directory, machine, name="vm"):
    kernel, initrd = guest_image()
    launch = Launch(directory, two_remotes(directory, machine, kernel, initrd), name)
    try:
        launch.start()
    except BaseException:
        launch.close()
        raise
    return launch


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_two_remotes_then_sigint(workdir, machine, needs_remote_processes):
    """Both disks work in the guest; SIGINT ends every process of the VM."""
    nvme_data, lsi_data = disks(workdir)
    with started(workdir, machine) as launch:
        pids = launch.pids()
        assert set(pids) == {"main", "rp0", "rp1"}, launch.summary
        assert all(isinstance(p, int) for p in pids.values()), launch.summary
        assert len(set(pids.values())) == 3, pids
        assert f"main QEMU          pid {pids['main']}" in launch.output()

        # What the main QEMU says about the remotes matches the summary.
        infos = {i["id"]: i for i in launch.monitor().cmd("query-remote-processes")}
        assert set(infos) == {"rp0", "rp1"}, infos
        for rid in ("rp0", "rp1"):
            assert infos[rid]["pid"] == pids[rid] and infos[rid]["state"] == "running", infos
            assert infos[rid]["spawned"] is True, infos
            # Spawned by the main QEMU, as a remote machine.
            assert process_state(pids[rid])[1] == str(pids["main"]), \
                f"parent of {rid} is not the main QEMU"
            with open(f"/proc/{pids[rid]}/cmdline", "rb") as f:
                assert b"x-remote" in f.read()
        devices = {(rid, d["devid"]): d for rid, i in infos.items() for d in i["devices"]}
        assert set(devices) == {("rp0", "nvme0"), ("rp1", "lsi0")}, devices
        assert devices["rp0", "nvme0"]["proxy"] == "/machine/peripheral/px0"
        assert devices["rp1", "lsi0"]["proxy"] == "/machine/peripheral/px1"
        assert all(d["connected"] for d in devices.values()), devices

        launch.boot()
        nvme = guest_nvme_disk(launch.shell, NVME_SERIAL)
        lsi = guest_lsi_disk(launch.shell)
        for dev, data in ((nvme, nvme_data), (lsi, lsi_data)):
            size = int(launch.shell.check(f"cat /sys/block/{dev}/size").split()[0]) * 512
            assert size == DISK_MIB * MIB, f"{dev}: {size} bytes"
            assert guest_sha256(launch.shell, dev, 0, DISK_MIB) == sha256(data), \
                f"{dev} does not read back the host's pattern"
        written = {}
        for dev in (nvme, lsi):
            written[dev] = guest_write(launch.shell, dev, WRITE_OFFSET_MIB, WRITE_MIB)
            assert guest_sha256(launch.shell, dev, WRITE_OFFSET_MIB, WRITE_MIB) == written[dev]

        launch.proc.send_signal(signal.SIGINT)
        rc = launch.wait_exit()
        assert rc == 128 + signal.SIGINT, f"exit status {rc}\n{launch.logs()}"
        assert_nothing_left(launch.dir, pids, launch.logs)
        out = launch.output()
        assert "mpqemu-launch: warning:" not in out, f"teardown was not clean:\n{out}"
        # The remotes were asked to quit (and closed their images), not
        # signalled: a signalled QEMU says so in its log.
        for log in ("rp0.log", "rp1.log"):
            text = read_text(os.path.join(workdir, log))
            assert "terminating on signal" not in text, f"{log}: {text}"
        for image, dev in (("nvme.img", nvme), ("lsi.img", lsi)):
            assert file_sha256(os.path.join(workdir, image), WRITE_OFFSET_MIB * MIB,
                               WRITE_MIB * MIB) == written[dev], f"{image}: guest write lost"


def test_sigterm_while_the_guest_boots(workdir, needs_remote_processes):
    """SIGTERM right after the VM started, before the guest is up: all gone."""
    disks(workdir)
    with started(workdir, "pc") as launch:
        pids = launch.pids()
        assert all(running(p) for p in pids.values()), pids
        launch.proc.send_signal(signal.SIGTERM)
        rc = launch.wait_exit()
        assert rc == 128 + signal.SIGTERM, f"exit status {rc}\n{launch.logs()}"
        assert_nothing_left(launch.dir, pids, launch.logs)
        assert "mpqemu-launch: warning:" not in launch.output(), launch.logs()


def test_guest_poweroff_ends_the_launch(workdir, needs_remote_processes):
    """The guest powers off: mpqemu-launch exits 0 and no remote is left."""
    disks(workdir)
    with started(workdir, "q35") as launch:
        pids = launch.pids()
        launch.boot()
        guest_nvme_disk(launch.shell, NVME_SERIAL)
        launch.shell.send("sync; poweroff -f")
        rc = launch.wait_exit()
        assert rc == 0, f"exit status {rc}\n{launch.logs()}"
        assert_nothing_left(launch.dir, pids, launch.logs)
        assert "mpqemu-launch: warning:" not in launch.output(), launch.logs()


def test_remote_dies_then_user_quits(workdir, needs_remote_processes):
    """A remote process killed behind the launcher's back is reported, the VM
    goes on; a 'quit' on the user's QMP socket then ends the launch, status 0."""
    disks(workdir)
    with started(workdir, "pc") as launch:
        pids = launch.pids()
        launch.boot()
        os.kill(pids["rp1"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        # The launcher's report of REMOTE_PROCESS_EXITED, with its signal field.
        report = rf"remote process 'rp1' \(pid {pids['rp1']}\) is gone: .*\(signal 9\)"
        while not re.search(report, launch.output()):
            assert time.monotonic() < deadline, f"no /{report}/ in:\n{launch.output()}"
            time.sleep(0.2)
        assert launch.alive()
        # The guest still runs, and so does the other remote.
        launch.shell.check("true")
        assert running(pids["rp0"])
        info = {i["id"]: i for i in launch.monitor().cmd("query-remote-processes")}
        assert info["rp1"]["state"] == "exited" and info["rp1"].get("signal") == 9, info
        try:
            launch.monitor().cmd("quit")
        except Exception:  # pylint: disable=broad-except
            pass            # the connection may close before the answer
        assert launch.wait_exit() == 0, launch.logs()
        assert_nothing_left(launch.dir, pids, launch.logs)


def test_launcher_killed(workdir, needs_remote_processes):
    """Even when mpqemu-launch is killed outright (no teardown of its own), the
    main QEMU is told to end, and its remote processes end with it."""
    disks(workdir)
    with started(workdir, "pc") as launch:
        pids = launch.pids()
        launch.proc.kill()
        launch.wait_exit()
        assert_nothing_left(launch.dir, pids, launch.logs, timeout=30)


@pytest.mark.parametrize("breakage,message", [
    # The second remote cannot be spawned at all.
    ("executable", r"start remote process 'rp1' failed: .*no-such-qemu"),
    # The second remote refuses its device.
    ("device", r"device 'lsi0' \(no-such-device\) in remote 'rp1' failed: .*rp1"),
])
def test_setup_failure_leaves_nothing(workdir, breakage, message, needs_remote_processes):
    disks(workdir)
    kernel, initrd = guest_image()
    desc = two_remotes(workdir, "pc", kernel, initrd)
    if breakage == "executable":
        desc["remotes"][1]["executable"] = os.path.join(workdir, "no-such-qemu")
    else:
        desc["remotes"][1]["devices"][0]["driver"] = "no-such-device"
    with Launch(workdir, desc) as launch:
        launch.start(wait_summary=False)
        rc = launch.wait_exit()
        out = launch.output()
        assert rc == 1, f"exit status {rc}:\n{out}"
        assert re.search(message, out), f"no /{message}/ in:\n{out}"
        assert not os.path.exists(launch.summary_path)
        # rp0 was running when rp1 failed: it must be gone with the main QEMU.
        assert_nothing_left(launch.dir, {}, launch.logs)


def test_sigint_while_a_remote_starts(workdir, needs_remote_processes):
    """SIGINT while the main QEMU still waits for the second remote process to
    answer: the launch is abandoned and no process is left, the one that was
    starting included."""
    disks(workdir)
    slow = os.path.join(workdir, "slow-remote")
    with open(slow, "w", encoding="utf-8") as f:
        f.write(f"#!/bin/sh\nsleep 4\nexec {shlex.quote(qemu_binary())} \"$@\"\n")
    os.chmod(slow, 0o755)
    kernel, initrd = guest_image()
    desc = two_remotes(workdir, "pc", kernel, initrd)
    desc["remotes"][1]["executable"] = slow
    with Launch(workdir, desc, extra_args=["--verbose"]) as launch:
        launch.start(wait_summary=False)
        deadline = time.monotonic() + 60
        while '"x-add-remote-process", "arguments": {"id": "rp1"' not in launch.output():
            assert launch.alive() and time.monotonic() < deadline, launch.logs()
            time.sleep(0.05)
        time.sleep(1)
        assert launch.alive()
        assert processes_mentioning(slow), "the slow remote is not running"
        launch.proc.send_signal(signal.SIGINT)
        assert launch.wait_exit() == 128 + signal.SIGINT, launch.logs()
        assert not os.path.exists(launch.summary_path)
        assert_nothing_left(launch.dir, {}, launch.logs)


def test_serial_on_a_pty(workdir, needs_remote_processes):
    """--serial pty: the summary names the pty, and the guest's console is there."""
    disks(workdir)
    kernel, initrd = guest_image()
    desc = write_json(os.path.join(workdir, "vm.json"), two_remotes(workdir, "pc", kernel, initrd))
    summary_path = os.path.join(workdir, "summary.json")
    out_path = os.path.join(workdir, "launch.out")
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, LAUNCH, "--serial", "pty", "--summary-json",
                                 summary_path, desc], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(summary_path):
            assert proc.poll() is None and time.monotonic() < deadline, read_text(out_path)
            time.sleep(0.1)
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
        pty = summary["serial"]["path"]
        assert summary["serial"]["kind"] == "pty" and pty.startswith("/dev/pts/"), summary
        assert f"serial console     pty {pty}" in read_text(out_path)
        fd = os.open(pty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            seen = b""
            while READY_MARKER.encode() not in seen:
                assert time.monotonic() < deadline, f"no {READY_MARKER} on {pty}: {seen[-2000:]!r}"
                try:
                    seen += os.read(fd, 65536)
                except BlockingIOError:
                    time.sleep(0.1)
        finally:
            os.close(fd)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
        pids = {"main": summary["main"]["pid"]}
        pids.update({r["id"]: r["pid"] for r in summary["remotes"]})
        assert_nothing_left(workdir, pids, lambda: read_text(out_path))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid, _ in processes_mentioning(workdir):
            os.kill(pid, signal.SIGKILL)
