# SPDX-License-Identifier: GPL-2.0-or-later
"""Startup mistakes: each must give a clear error that names the fix, a
non-zero exit (no crash), and leave nothing running."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from mpqemu_vm import Child, qemu_binary

MAIN_BASE = ["-accel", "tcg", "-object", "memory-backend-memfd,id=mem,size=512M",
             "-numa", "node,memdev=mem", "-m", "512",
             "-nodefaults", "-display", "none", "-S"]


def run_main(machine, device, timeout=30):
    args = [qemu_binary(), "-machine", machine] + MAIN_BASE + ["-device", device]
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"QEMU still running after {timeout}s: {' '.join(args)}")
    return None


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_proxy_socket_path_missing(machine):
    path = "/nonexistent/path"
    device = f"x-pci-proxy-dev,id=x,socket={path}"
    res = run_main(machine, device)
    assert res.returncode != 0, f"QEMU accepted an unreachable socket:\n{res.stderr}"
    assert "not a valid device model" not in res.stderr, res.stderr
    # QEMU prefixes errors with the offending option, which already holds the
    # path: the message itself must name it too.
    message = res.stderr.replace(f"-device {device}", "")
    assert path in message, f"error message does not name {path}:\n{res.stderr}"


# ---------------------------------------------------------------------------
# Startup mistakes: each must end in a clear error that names the fix, a
# non-zero exit (not a signal, i.e. no crash or core dump), and nothing left
# running.  None of these tests boots a guest.
# ---------------------------------------------------------------------------

RAM = ["-m", "256"]
SHARED_RAM = ["-object", "memory-backend-memfd,id=mem,size=256M",
              "-machine", "memory-backend=mem", "-m", "256"]
LSI_ID = "1000:0012"


def remote_cmd(transport, devid="lsi1", machine="x-remote"):
    """A remote QEMU serving an LSI; transport is 'fd=N' or 'socket=PATH' (or '')."""
    opts = ",".join(p for p in ("x-remote-object,id=robj1", f"devid={devid}", transport) if p)
    return [qemu_binary(), "-machine", machine, "-nodefaults", "-display", "none",
            "-device", "lsi53c895a,id=lsi1", "-object", opts]


def main_cmd(device, ram=SHARED_RAM, extra=()):
    """A main QEMU, stopped (-S), with one x-pci-proxy-dev given by its options."""
    return ([qemu_binary(), "-accel", "tcg", "-machine", "pc"] + list(ram)
            + ["-nodefaults", "-display", "none", "-S", "-device", device] + list(extra))


def run(args, pass_fds=(), timeout=20):
    """Run a QEMU that is expected to exit by itself; returns the CompletedProcess."""
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout,
                              check=False, pass_fds=tuple(pass_fds))
    except subprocess.TimeoutExpired:
        pytest.fail(f"QEMU still running after {timeout}s: {' '.join(args)}")
    return None


def describe(rc, args, stderr):
    return f"exit {rc} of: {' '.join(args)}\n--- stderr:\n{stderr}"


def assert_clean_failure(rc, args, stderr):
    """Exited by itself with a non-zero status: not 0, not killed by a signal."""
    assert rc is not None, "still running: " + describe(rc, args, stderr)
    assert rc >= 0, (f"killed by signal {signal.Signals(-rc).name} (crash?): "
                     + describe(rc, args, stderr))
    assert rc != 0, "accepted the mistake (exit 0): " + describe(rc, args, stderr)
    assert "core dumped" not in stderr and "Assertion" not in stderr, describe(rc, args, stderr)


def error_text(args, stderr):
    """stderr without the echo of the options QEMU puts before its errors.

    A message must say what is wrong itself, not only by quoting the option.
    """
    for i, arg in enumerate(args[:-1]):
        if arg in ("-device", "-object"):
            stderr = stderr.replace(f"{arg} {args[i + 1]}: ", "")
    return stderr


@pytest.fixture(name="workdir")
def fixture_workdir():
    """A short directory (UNIX socket paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="mpq-err-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Children:
    """Long-running QEMUs of one test, all stopped at the end."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.children = []

    def start(self, name, args, pass_fds=()):
        child = Child(name, args, self.workdir, pass_fds=pass_fds)
        self.children.append(child)
        return child

    def start_socket_remote(self, name="remote"):
        path = os.path.join(self.workdir, f"{name}.sock")
        child = self.start(name, remote_cmd(f"socket={path}"))
        deadline = time.monotonic() + 20
        while not os.path.exists(path):
            assert child.alive(), f"remote exited ({child.proc.returncode}):\n{child.output()}"
            assert time.monotonic() < deadline, f"remote did not create {path}:\n{child.output()}"
            time.sleep(0.02)
        return child, path

    def logs(self):
        return "\n".join(f"===== {c.name} (pid {c.pid}, exit {c.proc.returncode}): "
                         f"{c.command_line()}\n{c.output()}" for c in self.children)

    def stop_all(self):
        for child in self.children:
            child.stop(grace=2)


@pytest.fixture(name="procs")
def fixture_procs(workdir):
    procs = Children(workdir)
    yield procs
    procs.stop_all()


def stays_alive(child, seconds):
    """True if child is still running after seconds."""
    return child.wait(seconds) is None


class Monitor:
    """QMP of a main QEMU started with monitor_args(); talks HMP through it too."""

    def __init__(self, workdir, name):
        self.path = os.path.join(workdir, f"{name}.qmp")
        self.qmp = None

    def args(self):
        return ["-qmp", f"unix:{self.path},server=on,wait=off"]

    def connect(self, child, timeout=20):
        from qemu.qmp.legacy import QEMUMonitorProtocol  # QEMU's python library
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.path):
            assert child.alive(), (f"{child.name} QEMU exited ({child.proc.returncode}):\n"
                                   f"{child.output()}")
            assert time.monotonic() < deadline, f"no QMP socket after {timeout}s"
            time.sleep(0.02)
        self.qmp = QEMUMonitorProtocol(self.path)
        try:
            self.qmp.connect()
        except Exception as exc:  # pylint: disable=broad-except
            time.sleep(0.5)
            pytest.fail(f"cannot talk QMP to {child.name} QEMU ({exc!r}); it is "
                        f"{'running' if child.alive() else f'gone ({child.proc.returncode})'}:"
                        f"\n{child.output()}")
        self.qmp.settimeout(10)
        return self

    def hmp(self, command):
        return self.qmp.cmd("human-monitor-command", **{"command-line": command})

    def quit(self):
        try:
            self.qmp.cmd("quit")
        finally:
            self.close()

    def close(self):
        """Disconnect; QEMU may already have closed its end (after quit, or killed)."""
        if self.qmp is not None:
            try:
                self.qmp.close()
            except (EOFError, OSError):
                pass
            self.qmp = None


def start_main_with_monitor(procs, name, device, ram=SHARED_RAM, pass_fds=()):
    mon = Monitor(procs.workdir, name)
    child = procs.start(name, main_cmd(device, ram=ram, extra=mon.args()), pass_fds=pass_fds)
    return child, mon.connect(child)


# ---- 1. guest RAM that cannot be shared ------------------------------------

UNSHARED_RAM = {
    "default-ram": RAM,
    "memory-backend-ram": ["-object", "memory-backend-ram,id=mem,size=256M",
                           "-machine", "memory-backend=mem", "-m", "256"],
}


@pytest.mark.parametrize("ram", sorted(UNSHARED_RAM))
def test_guest_ram_not_shareable(procs, ram):
    remote, path = procs.start_socket_remote()
    args = main_cmd(f"x-pci-proxy-dev,id=lsi1,socket={path}", ram=UNSHARED_RAM[ram])
    res = run(args)
    assert_clean_failure(res.returncode, args, res.stderr)
    msg = error_text(args, res.stderr)
    assert re.search(r"guest RAM '[^']+' cannot be shared", msg), describe(res.returncode, args, res.stderr)
    assert "memory-backend-memfd" in msg, describe(res.returncode, args, res.stderr)
    # A misconfigured proxy must not take the socket-form remote down with it
    assert stays_alive(remote, 0.3), "remote exited after a failed proxy:\n" + procs.logs()


def test_guest_ram_not_shareable_fd_remote_exits(procs):
    """Upstream-style launch: after the main QEMU refuses to start, the remote goes too."""
    rsock, msock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with rsock, msock:
        remote = procs.start("remote", remote_cmd(f"fd={rsock.fileno()}"),
                             pass_fds=[rsock.fileno()])
        args = main_cmd(f"x-pci-proxy-dev,id=lsi1,fd={msock.fileno()}", ram=RAM)
        res = run(args, pass_fds=[msock.fileno()])
    assert_clean_failure(res.returncode, args, res.stderr)
    msg = error_text(args, res.stderr)
    assert "cannot be shared" in msg and "memory-backend-memfd" in msg, \
        describe(res.returncode, args, res.stderr)
    rc = remote.wait(5)
    assert rc == 0, f"remote left running or failed ({rc}) after its main QEMU failed:\n{procs.logs()}"


def test_guest_ram_file_share_on_works(procs):
    remote, path = procs.start_socket_remote()
    ram = ["-object", f"memory-backend-file,id=mem,size=256M,share=on,"
                      f"mem-path={procs.workdir}/guest-ram",
           "-machine", "memory-backend=mem", "-m", "256"]
    main, mon = start_main_with_monitor(procs, "main", f"x-pci-proxy-dev,id=lsi1,socket={path}",
                                        ram=ram)
    try:
        assert mon.qmp.cmd("query-status")["status"] == "prelaunch", procs.logs()
        assert LSI_ID in mon.hmp("info pci"), procs.logs()
        assert stays_alive(main, 1.0), "main QEMU exited:\n" + procs.logs()
        assert remote.alive(), procs.logs()
        mon.quit()
    finally:
        mon.close()
    assert main.wait(10) == 0, procs.logs()


# ---- 2. a devid that names no device ---------------------------------------

@pytest.mark.parametrize("transport", ["socket", "fd"])
def test_remote_devid_names_no_device(workdir, transport):
    if transport == "socket":
        args = remote_cmd(f"socket={workdir}/r.sock", devid="nope")
        res = run(args)
    else:
        rsock, msock = socket.socketpair()
        with rsock, msock:
            args = remote_cmd(f"fd={rsock.fileno()}", devid="nope")
            res = run(args, pass_fds=[rsock.fileno()])
    assert_clean_failure(res.returncode, args, res.stderr)
    msg = error_text(args, res.stderr)
    assert "'nope'" in msg and "names no device" in msg, describe(res.returncode, args, res.stderr)


@pytest.mark.parametrize("order", ["remote-failed-first", "main-waiting-first"])
def test_fd_remote_failed_main_says_so(procs, order):
    """Upstream-style launch where the remote dies at startup (bad devid).

    The main QEMU must stop at once and say that the remote process closed
    the connection; the mistake is not a build mismatch.
    """
    rsock, msock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with rsock, msock:
        rargs = remote_cmd(f"fd={rsock.fileno()}", devid="nope")
        margs = main_cmd(f"x-pci-proxy-dev,id=lsi1,fd={msock.fileno()}")
        if order == "remote-failed-first":
            rres = run(rargs, pass_fds=[rsock.fileno()])
            main = procs.start("main", margs, pass_fds=[msock.fileno()])
        else:
            main = procs.start("main", margs, pass_fds=[msock.fileno()])
            time.sleep(1.0)   # the main QEMU now waits for the HELLO reply
            assert main.alive(), procs.logs()
            rres = run(rargs, pass_fds=[rsock.fileno()])
    assert_clean_failure(rres.returncode, rargs, rres.stderr)
    start = time.monotonic()
    rc = main.wait(10)
    out = main.output()
    assert_clean_failure(rc, margs, out)
    # at once, not after the 5 s reply timeout
    assert time.monotonic() - start < 2, "main QEMU took long to notice:\n" + out
    msg = error_text(margs, out)
    assert "same mpqemu build" not in msg, \
        "the main QEMU blames a build mismatch for a remote that exited:\n" + out
    assert re.search(r"remote process.*\b(closed|exited|stopped|not running|running\?|hung up|"
                     r"disconnected|gone)", msg, re.S), \
        "the main QEMU does not point at the remote process having gone:\n" + out


# ---- 3. an fd that is not a socket ----------------------------------------

def non_socket_fd(kind, workdir):
    """An open fd of the given kind, and what must be closed afterwards."""
    if kind == "regular-file":
        f = open(os.path.join(workdir, "not-a-socket"), "w+b")  # pylint: disable=consider-using-with
        return f.fileno(), [f]
    if kind == "pipe":
        r, w = os.pipe()
        return r, [os.fdopen(r, "rb"), os.fdopen(w, "wb")]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return s.fileno(), [s]


@pytest.mark.parametrize("kind", ["regular-file", "pipe", "udp-socket"])
@pytest.mark.parametrize("side", ["proxy", "remote"])
def test_fd_not_a_unix_stream_socket(workdir, side, kind):
    fd, keep = non_socket_fd(kind, workdir)
    try:
        args = (main_cmd(f"x-pci-proxy-dev,id=lsi1,fd={fd}") if side == "proxy"
                else remote_cmd(f"fd={fd}"))
        res = run(args, pass_fds=[fd])
    finally:
        for obj in keep:
            obj.close()
    assert_clean_failure(res.returncode, args, res.stderr)
    msg = error_text(args, res.stderr)
    assert f"fd={fd} is not a UNIX stream socket" in msg, describe(res.returncode, args, res.stderr)


# Both sides have the hint below in their source; it must reach the user.
@pytest.mark.parametrize("side", ["proxy", "remote"])
def test_fd_not_a_socket_names_the_fix(workdir, side):
    fd, keep = non_socket_fd("regular-file", workdir)
    try:
        args = (main_cmd(f"x-pci-proxy-dev,id=lsi1,fd={fd}") if side == "proxy"
                else remote_cmd(f"fd={fd}"))
        res = run(args, pass_fds=[fd])
    finally:
        for obj in keep:
            obj.close()
    assert_clean_failure(res.returncode, args, res.stderr)
    assert "socketpair" in res.stderr and "socket=PATH" in res.stderr, \
        "no hint on what to pass instead: " + describe(res.returncode, args, res.stderr)


def test_remote_unknown_devid_names_the_fix(workdir):
    args = remote_cmd(f"socket={workdir}/r.sock", devid="nope")
    res = run(args)
    assert_clean_failure(res.returncode, args, res.stderr)
    assert "-device" in res.stderr and "id=nope" in res.stderr, \
        "no hint on how to create the device: " + describe(res.returncode, args, res.stderr)


UNOPENED_FD = 987   # not passed to the child, and far above what QEMU opens itself


@pytest.mark.parametrize("side", ["proxy", "remote"])
def test_fd_not_open(side):
    """A forgotten pass_fds: the error must say the fd is not open, not blame its type."""
    args = (main_cmd(f"x-pci-proxy-dev,id=lsi1,fd={UNOPENED_FD}") if side == "proxy"
            else remote_cmd(f"fd={UNOPENED_FD}"))
    res = run(args)
    assert_clean_failure(res.returncode, args, res.stderr)
    msg = error_text(args, res.stderr)
    assert str(UNOPENED_FD) in msg, describe(res.returncode, args, res.stderr)
    assert re.search(r"not open|bad file descriptor|not a valid file descriptor", msg, re.I), \
        "does not say that the fd is not open: " + describe(res.returncode, args, res.stderr)


def test_proxy_fd_is_stderr_error_still_shown():
    """fd=2 is QEMU's stderr, not a socket: refusing it must not silence the refusal."""
    args = main_cmd("x-pci-proxy-dev,id=lsi1,fd=2")
    res = run(args)
    assert_clean_failure(res.returncode, args, res.stderr)
    assert "fd=2 is not a UNIX stream socket" in res.stderr, \
        "the error was lost (QEMU closed its own stderr?): " + describe(res.returncode, args, res.stderr)


# ---- 4. neither or both of fd= and socket= ---------------------------------

@pytest.mark.parametrize("given", ["neither", "both"])
@pytest.mark.parametrize("side", ["proxy", "remote"])
def test_need_exactly_one_of_fd_and_socket(workdir, side, given):
    path = os.path.join(workdir, "r.sock")
    rsock, msock = socket.socketpair()
    with rsock, msock:
        fd = msock.fileno()
        transport = "" if given == "neither" else f"fd={fd},socket={path}"
        if side == "proxy":
            args = main_cmd(",".join(p for p in ("x-pci-proxy-dev,id=lsi1", transport) if p))
        else:
            args = remote_cmd(transport)
        res = run(args, pass_fds=[fd])
    assert_clean_failure(res.returncode, args, res.stderr)
    msg = error_text(args, res.stderr)
    assert re.search(r"exactly one of fd=.*socket=", msg), describe(res.returncode, args, res.stderr)
    if side == "remote" and given == "both":
        assert not os.path.exists(path), f"{path} was created although the options were refused"


# ---- 5. x-remote-object without -machine x-remote --------------------------

@pytest.mark.parametrize("machine", ["pc", "q35"])
@pytest.mark.parametrize("transport", ["socket", "fd"])
def test_remote_object_needs_x_remote_machine(workdir, machine, transport):
    rsock, msock = socket.socketpair()
    with rsock, msock:
        spec = f"socket={workdir}/r.sock" if transport == "socket" else f"fd={rsock.fileno()}"
        args = remote_cmd(spec, machine=machine)
        res = run(args, pass_fds=[rsock.fileno()])
    assert_clean_failure(res.returncode, args, res.stderr)
    msg = error_text(args, res.stderr)
    assert "-machine x-remote" in msg, describe(res.returncode, args, res.stderr)


# ---- 6. fd= remote ends with its main QEMU -----------------------------------

@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_fd_remote_auto_shutdown(procs, how):
    rsock, msock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with rsock, msock:
        remote = procs.start("remote", remote_cmd(f"fd={rsock.fileno()}"),
                             pass_fds=[rsock.fileno()])
        main, mon = start_main_with_monitor(procs, "main",
                                            f"x-pci-proxy-dev,id=lsi1,fd={msock.fileno()}",
                                            pass_fds=[msock.fileno()])
    try:
        assert LSI_ID in mon.hmp("info pci"), procs.logs()
    finally:
        mon.close()
    assert stays_alive(remote, 1.5), "remote exited while its main QEMU runs:\n" + procs.logs()
    assert main.alive(), procs.logs()
    main.proc.send_signal(getattr(signal, how))
    assert main.wait(10) is not None, procs.logs()
    rc = remote.wait(5)
    assert rc is not None, "remote still running 5 s after its main QEMU ended:\n" + procs.logs()
    assert rc == 0, f"remote exited with {rc}:\n" + procs.logs()


# ---- 7. socket= remote outlives its main QEMU --------------------------------

def test_socket_remote_serves_a_second_main(procs):
    remote, path = procs.start_socket_remote()
    device = f"x-pci-proxy-dev,id=lsi1,socket={path}"
    for n in (1, 2):
        main, mon = start_main_with_monitor(procs, f"main{n}", device)
        try:
            assert LSI_ID in mon.hmp("info pci"), f"main{n} does not see the LSI:\n{procs.logs()}"
            if n == 1:
                mon.quit()
            else:
                main.proc.kill()    # a crash of the main QEMU, not a clean quit
        finally:
            mon.close()
        assert main.wait(10) == (0 if n == 1 else -signal.SIGKILL), procs.logs()
        assert stays_alive(remote, 1.0), f"remote exited after main{n} ended:\n" + procs.logs()
