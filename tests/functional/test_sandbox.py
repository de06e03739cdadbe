# SPDX-License-Identifier: GPL-2.0-or-later
"""Remote processes run sandboxed by default (remote-machine/remote-sandbox.c).

  - test_spawned_remote_is_sandboxed: a remote spawned through
    x-add-remote-process with user=nobody shows Seccomp 2 and NoNewPrivs 1
    in /proc/PID/status, in every thread, and runs as nobody; its disk
    (opened before it dropped root) works: the guest reads the image's
    pattern and its writes land in the file.  The main QEMU holds no
    descriptor of the image; the remote holds it and no other file but its
    log;
  - test_every_thread_is_sandboxed: a file outside the sandbox cannot be
    opened from any thread of the remote that existed before the sandbox
    (the RCU thread, IOThreads, thread-pool workers), as from the main
    thread; its image can; without the sandbox, all of them open it.
  - test_sandbox_off: sandbox=false leaves the process unfiltered and it
    says so loudly in its log;
  - test_escape_attempts: through a test-only module
    (remote-machine/remote-escape-test.c, device x-remote-escape-test), a
    sandboxed remote serving the guest's LSI tries to open a file it was
    not given (refused; its own image reopens), to run a program, and
    another to fork: each of the last two is killed by SIGSYS, the main QEMU reports the
    process exited and its proxy failed, and the guest goes on using a disk
    of another remote. The same attempts succeed with sandbox=false, so it
    is the sandbox that stops them. A DMA write by the device inside the
    guest RAM its proxy shared lands in the guest's memory; one outside it
    is refused and the device keeps working;
  - test_sandbox_options_refused: user= with sandbox=false, sandbox=/user=
    for a process attached to rather than spawned, a user name that cannot
    be one, and a user that does not exist (the process then refuses to
    start and says why) are errors, and the VM goes on.

Run: scripts/run-tests.sh tests/functional/test_sandbox.py (about 1 min).
"""

import hashlib
import itertools
import os
import pwd
import re

import pytest

from mpqemu_crash import DISK_MIB, started_crash_vm
from mpqemu_migration import DEVICES, guest_disk
from mpqemu_remote_qmp import hmp, qmp_error, remote_processes, remote_qmp
from mpqemu_vm import MIB, file_sha256, qemu_binary

fixture_vm = pytest.fixture(name="vm")(started_crash_vm)


def proc_status(pid, tid=None):
    path = f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status"
    fields = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


def open_files(pid):
    """The paths of the regular files process pid has open."""
    paths = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            paths.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return paths


def test_spawned_remote_is_sandboxed(vm):
    image, data = vm.new_disk("sandboxed", 41)
    args, devid = DEVICES["lsi53c895a"](image)
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0:
        # Becoming another user takes root: anyone else is told so.
        log = vm.new_log("rpA")
        qmp_error(vm, "x-add-remote-process", id="rpA", log=log, args=args, user="nobody")
        with open(log, encoding="utf-8") as f:
            assert "needs the process to start as root" in f.read()
        return
    log = vm.new_log("rpA")
    vm.add_remote_process("rpA", log=log, args=args, user="nobody")
    assert vm.plug("px0", "rpA", devid) == {}
    pid = remote_processes(vm)["rpA"]["pid"]

    status = proc_status(pid)
    assert status["Seccomp"] == ["2"], status["Seccomp"]
    assert status["NoNewPrivs"] == ["1"], status["NoNewPrivs"]
    assert status["Uid"] == [str(nobody.pw_uid)] * 4, status["Uid"]
    assert status["Gid"] == [str(nobody.pw_gid)] * 4, status["Gid"]
    for tid in os.listdir(f"/proc/{pid}/task"):
        thread = proc_status(pid, tid)
        assert thread["Seccomp"] == ["2"] and thread["NoNewPrivs"] == ["1"], (tid, thread)

    dev = guest_disk(vm, "lsi53c895a")
    want = hashlib.sha256(data).hexdigest()
    assert vm.guest_sha256(dev, 0, DISK_MIB) == want, "the guest does not read the image"
    written = vm.write_random(dev, 8, 4)
    assert file_sha256(image, 8 * MIB, 4 * MIB) == written, \
        "what the guest wrote is not in the image file"

    # Only the remote holds the image; the main QEMU never opened it. The
    # remote holds no other file than its image and its log (sockets, guest
    # RAM's memory files and eventfds aside): nothing inherited.
    assert image in open_files(pid)
    assert image not in open_files(vm.main.pid), open_files(vm.main.pid)
    files = {f for f in open_files(pid) if f.startswith("/") and not f.startswith("/memfd:")}
    assert files <= {image, log, "/dev/null"}, files


SIGSYS = 31


def sanitized_build():
    """Whether the QEMU under test has AddressSanitizer: its sandbox lets
    clone() make processes (LeakSanitizer's exit check needs that), so a
    fork there is not killed (docs/security.md)."""
    with open(qemu_binary(), "rb") as f:
        return b"__asan_init" in f.read()


_escapes = itertools.count()


def escape_args(attempt, **props):
    return {"driver": "x-remote-escape-test", "id": f"esc{next(_escapes)}",
            "attempt": attempt, **props}


def escape(vm, rp_id, attempt, **props):
    """device_add x-remote-escape-test in remote rp_id: it tries @attempt."""
    return remote_qmp(vm, rp_id, "device_add", **escape_args(attempt, **props))


def guest_word(vm, address):
    out = hmp(vm, f"xp /1wx {address:#x}")
    return int(out.split(":")[1].split()[0], 16)


def test_escape_attempts(vm):
    image, data = vm.new_disk("escape", 42)
    args, devid = DEVICES["lsi53c895a"](image)
    keep_image, keep_data = vm.new_disk("keep", 43)
    vm.spawn_with_virtio_blk("rpK", keep_image, "vblk1", "mpqkeep")
    assert vm.plug("px1", "rpK", "vblk1") == {}
    keep = vm.virtio_disk("mpqkeep")

    vm.add_remote_process("rpA", log=vm.new_log("rpA"), args=args)
    assert vm.plug("px0", "rpA", devid) == {}
    dev = guest_disk(vm, "lsi53c895a")

    # The device's DMA reaches the guest RAM its proxy shared, and only it.
    # (Linux leaves the first 64 KiB of RAM alone.)
    before = guest_word(vm, 0x8000)
    assert escape(vm, "rpA", "dma-write", devid=devid, address=0x8000,
                  value=before ^ 0x5ca1ab1e) == {}
    assert guest_word(vm, 0x8000) == before ^ 0x5ca1ab1e
    for outside in (0x20000000, 0xfec00000, 1 << 40):
        err = qmp_error(vm, "x-remote-qmp", id="rpA", command="device_add",
                        arguments=escape_args("dma-write", devid=devid, address=outside,
                                              value=1))
        assert "refused" in err, err
    assert vm.guest_sha256(dev, 0, DISK_MIB) == hashlib.sha256(data).hexdigest()

    # It opens no file but those named at startup (its image, again) and
    # those it was allowed (rpK's image, through blockdev-add).
    err = qmp_error(vm, "x-remote-qmp", id="rpA", command="device_add",
                    arguments=escape_args("open", path="/etc/passwd"))
    assert re.search(r"cannot open /etc/passwd from thread \d+: Permission denied", err), err
    assert escape(vm, "rpA", "open", path=image) == {}
    unlisted, _ = vm.new_disk("unlisted", 44)
    err = qmp_error(vm, "x-remote-qmp", id="rpA", command="blockdev-add",
                    arguments={"driver": "file", "filename": unlisted, "node-name": "u0"})
    assert "Permission denied" in err, err
    assert remote_qmp(vm, "rpA", "query-status")["status"] == "running"

    # Running a program, or forking, kills the remote; nothing else.
    for rp_id, attempt in (("rpA", "execve"), ("rpB", "fork")):
        if rp_id == "rpB":
            vm.add_remote_process("rpB", log=vm.new_log("rpB"), args=args)
            if sanitized_build():
                assert escape(vm, rp_id, attempt) == {}
                continue
        pid = remote_processes(vm)[rp_id]["pid"]
        try:
            escape(vm, rp_id, attempt)
        except Exception:  # pylint: disable=broad-except
            pass        # the process died under the command
        ev = vm.events.wait("REMOTE_PROCESS_EXITED", 30, id=rp_id)
        assert ev["data"].get("signal") == SIGSYS, ev
        assert ev["data"].get("pid") == pid, ev
        if rp_id == "rpA":
            vm.events.wait("REMOTE_DEVICE_FAILED", 30)
        assert vm.qmp.cmd("query-status")["status"] == "running"
        assert vm.guest_sha256(keep, 0, DISK_MIB) == hashlib.sha256(keep_data).hexdigest()

    # Without the sandbox, the same attempts succeed.
    vm.add_remote_process("rpC", log=vm.new_log("rpC"), sandbox=False)
    assert escape(vm, "rpC", "fork") == {}
    assert escape(vm, "rpC", "open", path="/etc/passwd") == {}
    assert remote_qmp(vm, "rpC", "query-status")["status"]
    escape_pid = remote_processes(vm)["rpC"]["pid"]
    try:
        escape(vm, "rpC", "execve")
    except Exception:  # pylint: disable=broad-except
        pass
    ev = vm.events.wait("REMOTE_PROCESS_EXITED", 30, id="rpC")
    assert ev["data"].get("exit-code") == 0 and ev["data"].get("pid") == escape_pid, ev


# The threads of a remote that exist before its sandbox: QEMU's RCU thread,
# an IOThread of the command line, the monitor's IOThread, and thread-pool
# workers, which opened the image; thread-pool-min=4 keeps 4 of them.
THREADS = ("main", "rcu", "io0", "mon_iothread", "worker")
THREAD_ARGS = ["-object", "iothread,id=io0",
               "-object", "main-loop,id=ml0,thread-pool-min=4"]


def open_from_each_thread(vm, rp_id, path):
    """Each thread of THREADS opens path: {thread: None or the error}."""
    from qemu.qmp import ExecuteError  # QEMU's python library
    errors = {}
    for thread in THREADS:
        try:
            assert escape(vm, rp_id, "open", path=path, thread=thread) == {}
            errors[thread] = None
        except ExecuteError as exc:
            errors[thread] = str(exc)
    return errors


def test_every_thread_is_sandboxed(vm):
    """Landlock restricts the thread that asks for it, and the threads it
    creates later: the other threads must enter the sandbox too."""
    image, data = vm.new_disk("threads", 45)
    args, devid = DEVICES["lsi53c895a"](image)
    vm.add_remote_process("rpA", log=vm.new_log("rpA"), args=args + THREAD_ARGS)
    assert vm.plug("px0", "rpA", devid) == {}

    denied = open_from_each_thread(vm, "rpA", "/etc/passwd")
    tids = set()
    for thread, err in denied.items():
        m = re.search(r"cannot open /etc/passwd from thread (\d+): Permission denied",
                      err or "")
        assert m, (thread, err)
        tids.add(m.group(1))
    assert len(tids) == len(THREADS), denied
    assert open_from_each_thread(vm, "rpA", image) == dict.fromkeys(THREADS), \
        "a thread of the sandboxed remote cannot open its own image"
    dev = guest_disk(vm, "lsi53c895a")
    assert vm.guest_sha256(dev, 0, DISK_MIB) == hashlib.sha256(data).hexdigest()

    # The same remote without the sandbox: every thread opens the file.
    other_image, _ = vm.new_disk("threads-unsandboxed", 46)
    other_args, _ = DEVICES["lsi53c895a"](other_image)
    vm.add_remote_process("rpB", log=vm.new_log("rpB"), args=other_args + THREAD_ARGS,
                          sandbox=False)
    assert open_from_each_thread(vm, "rpB", "/etc/passwd") == dict.fromkeys(THREADS)


def test_sandbox_off(vm):
    log = vm.new_log("rpA")
    vm.add_remote_process("rpA", log=log, sandbox=False)
    pid = remote_processes(vm)["rpA"]["pid"]
    status = proc_status(pid)
    assert status["Seccomp"] == ["0"] and status["NoNewPrivs"] == ["0"], status
    with open(log, encoding="utf-8") as f:
        assert "running WITHOUT a sandbox" in f.read()


def test_sandbox_options_refused(vm):
    err = qmp_error(vm, "x-add-remote-process", id="rpA", sandbox=False, user="nobody")
    assert "are part of the sandbox" in err, err
    err = qmp_error(vm, "x-add-remote-process", id="rpA", sandbox=False,
                    **{"allow-paths": [vm.dir]})
    assert "are part of the sandbox" in err, err
    log = vm.new_log("rpA")
    qmp_error(vm, "x-add-remote-process", id="rpA", log=log,
              **{"allow-paths": ["/nonexistent/mpqemu"]})
    with open(log, encoding="utf-8") as f:
        assert "cannot allow /nonexistent/mpqemu" in f.read()
    err = qmp_error(vm, "x-add-remote-process", id="rpA", socket="/nonexistent",
                    user="nobody")
    assert "for a process it spawns" in err, err
    err = qmp_error(vm, "x-add-remote-process", id="rpA", user="no,body")
    assert "is not a user name" in err, err
    if os.geteuid() == 0:
        log = vm.new_log("rpA")
        err = qmp_error(vm, "x-add-remote-process", id="rpA", log=log,
                        user="mpqemu-no-such-user")
        with open(log, encoding="utf-8") as f:
            assert "no user mpqemu-no-such-user" in f.read()
    assert "rpA" not in remote_processes(vm)
    assert vm.qmp.cmd("query-status")["status"] == "running"
