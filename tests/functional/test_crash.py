# SPDX-License-Identifier: GPL-2.0-or-later
"""A remote process that dies or hangs while the guest does I/O through it.

Isolation is the reason remote processes exist: when one of them crashes or
hangs, the main QEMU, the guest and every other remote device must carry on,
and the failure must be visible to a management layer at once so that it can
replace the process.  Each test boots a pc guest with two proxied disks, each
in its own remote process: an NVMe controller (the one that fails) and a
virtio-blk disk (the bystander), both on images filled with a known pattern
on the host.  While the guest reads the NVMe disk in a background loop
(O_DIRECT, so every read reaches the device; all but one test), the NVMe
remote is

  - killed with SIGKILL (test_sigkill_during_io): within 2 s the main QEMU's
    monitor answers, REMOTE_PROCESS_EXITED (signal 9) and REMOTE_DEVICE_FAILED
    have arrived, and the guest's shell answers on the serial console; the
    virtio-blk disk still reads the host's pattern; the proxy fails closed and
    the guest's NVMe driver gives up on the controller instead of hanging;
  - stopped with SIGSTOP for longer than the timeouts, as a spawned process
    (test_sigstop_spawned): the heartbeat (200 ms interval, 1 s timeout) and
    the proxy's 1 s timeout bound the detection, so the same checks must pass
    within 1 + 2 s; the main QEMU kills the hung process (a hung device model
    cannot be trusted to resume DMA into guest RAM), so the SIGCONT that
    follows finds no process, and nothing on either disk or in guest RAM
    changed;
  - stopped the same way with the heartbeat off
    (test_sigstop_spawned_proxy_timeout): nothing notices until the guest
    touches the device (a config space read); the vCPU waits no longer than
    the proxy's timeout and reads all-ones, and the main QEMU kills the
    process because a proxy of it timed out;
  - stopped with SIGSTOP as an attached process (test_sigstop_attached): it
    is not killed but "unresponsive", its proxy fails, and it cannot be
    reattached while it hangs (the refusal changes nothing); after SIGCONT
    it is "running" again, the proxy is reattached to the same device with
    x-reattach-proxy, the guest's driver recovers, and the data on both
    disks and in guest RAM is intact;
  - killed and replaced while the guest runs (test_replace_killed_nvme): a
    new process with the same disk, the NVMe controller created in it,
    x-reattach-proxy, x-del-remote-process of the dead one; the guest's NVMe
    driver recovers by itself (I/O timeout, abort, timeout again, controller
    reset), the background reads resume, data written and synced before the
    crash reads back, new data written after it reaches the image.

The guest's NVMe I/O timeout is set to IO_TIMEOUT (10 s) on its kernel
command line.  The replacement has to be attached before the first timeout
of the I/O that was in flight: at that moment Linux reads the controller's
status register, and from a failed proxy that is all-ones ("controller is
down"), after which the driver removes the controller for good.  The tests
check that the replacement was in time, so that a slow replacement is
reported as such and not as a guest that did not recover.

A fake remote that sends malformed replies is covered by the C qtests
(tests/qtest/).

Run: scripts/run-tests.sh tests/functional/test_crash.py (about 2 min).
"""

import hashlib
import os
import signal
import time

import pytest

from mpqemu_crash import DISK_MIB, nvme_blockdev_args, region, started_crash_vm
from mpqemu_remote_qmp import (children_of, gone, process_state, qmp_error, qom_names,
                               remote_processes, remote_qmp, remote_qom_names, start_time,
                               kill_if_same, wait_until)
from mpqemu_vm import MIB, Child, file_sha256

# Within this many seconds of the kill the main QEMU must have told
# everything and still answer (the requirement).
REACT_S = 2.0
# The hang tests' settings: heartbeat every 200 ms, 1 s to answer it, and a
# proxy timeout of 1 s; detection must take no longer than 1 s + REACT_S.
HB_INTERVAL_MS = 200
HB_TIMEOUT_MS = 1000
PROXY_TIMEOUT_MS = 1000
HANG_LIMIT_S = PROXY_TIMEOUT_MS / 1000 + REACT_S
# How long the attached remote stays stopped: several times those timeouts.
STOP_S = 3.0

# Where the guest writes (and syncs) data of its own before the crash.
SYNCED_MIB = (10, 2)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def seed_of(name):
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


class Rig:
    """The guest's two proxied disks: NVMe (proxy px0, controller nvme0 in
    remote process `nvme_rp`) and virtio-blk (proxy px1, vblk1 in rpB)."""

    def __init__(self, vm, name):
        self.vm = vm
        self.name = name
        self.nvme_image, self.nvme_data = vm.new_disk(f"{name}-nvme", seed_of(name + "nvme"))
        self.vblk_image, self.vblk_data = vm.new_disk(f"{name}-vblk", seed_of(name + "vblk"))
        self.serial = f"mpq{name[:8]}"
        self.nvme_rp = None
        self.nvme_pid = None
        self.nvme_dev = None
        self.vblk_dev = None
        self.synced_sha = None

    def plug_nvme_spawned(self, rp_id="rpA", rp_props=None, proxy_props=None):
        info = self.vm.spawn_with_nvme(rp_id, self.nvme_image, "nvme0", self.serial,
                                       **(rp_props or {}))
        self.nvme_rp, self.nvme_pid = rp_id, info["pid"]
        assert self.vm.plug("px0", rp_id, "nvme0", **(proxy_props or {})) == {}
        self.nvme_dev = self.vm.nvme_disk(self.serial)

    def plug_vblk(self):
        self.vm.spawn_with_virtio_blk("rpB", self.vblk_image, "vblk1", "mpqbystander")
        assert self.vm.plug("px1", "rpB", "vblk1") == {}
        self.vblk_dev = self.vm.virtio_disk("mpqbystander")

    def baseline(self):
        """Both disks read the host's pattern; the guest writes and syncs a
        region of the NVMe disk, which must survive the crash."""
        vm = self.vm
        assert vm.guest_sha256(self.nvme_dev, 0, 4) == sha256(region(self.nvme_data, 0, 4))
        self.vblk_reads_pattern()
        off, length = SYNCED_MIB
        self.synced_sha = vm.write_random(self.nvme_dev, off, length)
        assert file_sha256(self.nvme_image, off * MIB, length * MIB) == self.synced_sha, \
            "the guest's synced write is not in the NVMe image"

    def vblk_reads_pattern(self):
        got = self.vm.guest_sha256(self.vblk_dev, 0, DISK_MIB)
        assert got == sha256(self.vblk_data), \
            "the bystander virtio-blk disk does not read the host's pattern"

    def images_intact(self):
        """On the host: the NVMe image holds the pattern except the synced
        region, which holds what the guest wrote; the bystander is untouched."""
        off, length = SYNCED_MIB
        assert file_sha256(self.nvme_image, 0, off * MIB) == sha256(region(self.nvme_data, 0, off))
        assert file_sha256(self.nvme_image, off * MIB, length * MIB) == self.synced_sha
        rest = off + length
        assert file_sha256(self.nvme_image, rest * MIB) == \
            sha256(self.nvme_data[rest * MIB:]), "the NVMe image changed after the crash"
        assert file_sha256(self.vblk_image) == sha256(self.vblk_data), \
            "the bystander's image changed"

    def guest_nvme_intact(self):
        """The guest reads the NVMe disk as it was: pattern and synced region;
        then what it writes now reaches the image."""
        vm = self.vm
        off, length = SYNCED_MIB
        assert vm.guest_sha256(self.nvme_dev, 0, off) == sha256(region(self.nvme_data, 0, off)), \
            "the NVMe disk does not read the host's pattern after the recovery"
        assert vm.guest_sha256(self.nvme_dev, off, length) == self.synced_sha, \
            "the data written and synced before the crash does not read back"
        written = vm.write_random(self.nvme_dev, 4, 2)
        assert vm.guest_sha256(self.nvme_dev, 4, 2) == written
        assert file_sha256(self.nvme_image, 4 * MIB, 2 * MIB) == written, \
            "what the guest wrote after the recovery is not in the image"


fixture_vm = pytest.fixture(name="vm")(started_crash_vm)


# ---------------------------------------------------------------- timed checks


def react_within(vm, t0, limit, events):
    """After a failure at t0 (time.monotonic()): wait for each of `events`
    ((name, data) pairs), then ask the monitor and the guest's shell.  Every
    one must have happened within `limit` seconds of t0.  Returns the events."""
    got, times = {}, {}
    for name, data in events:
        ev = vm.events.wait(name, limit + 20, **data)
        times[name] = time.monotonic() - t0
        got[name] = ev
    status = vm.qmp.cmd("query-status")
    times["query-status"] = time.monotonic() - t0
    assert status["status"] == "running", status
    rc, out = vm.shell.run("echo alive-$((6*7))", timeout=limit + 20)
    times["guest shell"] = time.monotonic() - t0
    assert rc == 0 and "alive-42" in out, out
    print(f"after the failure: { {k: round(v, 2) for k, v in times.items()} }")
    late = {k: f"{v:.2f} s" for k, v in times.items() if v > limit}
    assert not late, (f"later than {limit} s after the failure: {late} "
                      f"(all: { {k: round(v, 2) for k, v in times.items()} })")
    return got


def check_failed_event(ev, rp_id, devid, pid, cause):
    """REMOTE_DEVICE_FAILED of px0 says which proxy, which process and
    device, and why."""
    data = ev["data"]
    want = {"path": "/machine/peripheral/px0", "device": "px0", "remote": rp_id,
            "devid": devid, "pid": pid, "cause": cause}
    wrong = {k: data.get(k) for k, v in want.items() if data.get(k) != v}
    assert not wrong, (f"REMOTE_DEVICE_FAILED has {wrong}, expected "
                       f"{ {k: want[k] for k in wrong} }: {data}")
    assert data.get("reason"), ev


def failed_device_entry(vm, rp_id):
    """query-remote-processes' entry of px0 in rp_id, once it shows it failed."""
    seen = []

    def failed():
        p = remote_processes(vm).get(rp_id)
        seen[:] = [p]
        devs = [d for d in (p or {}).get("devices", []) if d["proxy"] == "/machine/peripheral/px0"]
        return devs[0] if devs and not devs[0]["connected"] and devs[0].get("failure") else None
    try:
        return wait_until(failed, 5, f"query-remote-processes to show px0 in {rp_id} failed")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {rp_id} is {seen[0]}") from None


def bystander_unaffected(vm, rig):
    """The virtio-blk proxy never failed and still reads the pattern."""
    assert vm.events.take("REMOTE_DEVICE_FAILED", device="px1") == []
    rpb = remote_processes(vm)["rpB"]
    assert rpb["state"] == "running", rpb
    assert rpb["devices"] == [{"devid": "vblk1", "proxy": "/machine/peripheral/px1",
                               "connected": True}], rpb
    rig.vblk_reads_pattern()


def reads_all_ones(vm):
    bdfs = vm.pci_nvme_functions()
    assert len(bdfs) == 1, bdfs
    return vm.config_dword0(bdfs[0]) == "ffff ffff"


def wait_guest_recovered(vm, rig, since, timeout):
    """Wait until the guest's background reads of the NVMe disk complete
    again (more than `since` of them); then stop them."""
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    while vm.background_count() <= since:
        if time.monotonic() > deadline:
            _, diag = vm.shell.run("cat /tmp/bgio/err; dmesg | grep -i nvme | tail -n 20; "
                                   "ls /sys/class/nvme/")
            pytest.fail(f"the guest's reads of /dev/{rig.nvme_dev} did not resume within "
                        f"{timeout} s of the reattach:\n{diag}", pytrace=False)
        time.sleep(0.5)
    print(f"guest reads resumed {time.monotonic() - t0:.1f} s after the reattach")
    vm.wait_background_progress(more=3, timeout=30)
    vm.stop_background()
    _, log = vm.shell.run("dmesg | grep -i nvme | tail -n 12")
    print(f"guest kernel:\n{log}")


# ====================================================================== SIGKILL


def test_sigkill_during_io(vm):
    rig = Rig(vm, "sigkill")
    rig.plug_nvme_spawned()
    rig.plug_vblk()
    rig.baseline()
    pid = rig.nvme_pid
    vm.start_background_reads(rig.nvme_dev)
    vm.wait_background_progress()

    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    evs = react_within(vm, t0, REACT_S, [("REMOTE_PROCESS_EXITED", {"id": "rpA"}),
                                         ("REMOTE_DEVICE_FAILED", {"device": "px0"})])
    exited = evs["REMOTE_PROCESS_EXITED"]["data"]
    assert exited.get("pid") == pid and exited.get("signal") == 9, exited
    assert "exit-code" not in exited, exited
    check_failed_event(evs["REMOTE_DEVICE_FAILED"], "rpA", "nvme0", pid, "disconnected")
    wait_until(lambda: gone(pid), 5, "the killed remote to be reaped")

    # What a management layer sees.
    entry = failed_device_entry(vm, "rpA")
    assert entry["devid"] == "nvme0" and entry.get("cause") == "disconnected", entry
    rpa = remote_processes(vm)["rpA"]
    assert rpa["state"] == "exited" and rpa.get("signal") == 9, rpa
    # The other proxied disk and the guest carry on; the failed proxy reads all-ones.
    bystander_unaffected(vm, rig)
    assert reads_all_ones(vm), "the failed proxy does not read all-ones"

    # The guest's NVMe driver gives up on the controller (its I/O timeout
    # reads all-ones from the status register) instead of hanging: the
    # background reads fail and the controller goes away.
    failures = wait_until(vm.background_failures, vm.io_timeout + 30,
                          "the guest's reads of the dead NVMe disk to fail")
    assert failures > 0
    vm.wait_nvme_gone(rig.serial, timeout=30)
    vm.stop_background()
    # One event per failure, not one per failed access.
    assert vm.events.take("REMOTE_DEVICE_FAILED", device="px0") == []

    vm.unplug("px0", timeout=60)
    assert vm.qmp.cmd("x-del-remote-process", id="rpA") == {}
    assert set(remote_processes(vm)) == {"rpB"}
    bystander_unaffected(vm, rig)
    rig.images_intact()
    assert set(children_of(vm.main.pid)) == {remote_processes(vm)["rpB"]["pid"]}


# ====================================================================== SIGSTOP


HANG_PROPS = {"heartbeat-interval": HB_INTERVAL_MS, "heartbeat-timeout": HB_TIMEOUT_MS}


def test_sigstop_spawned(vm):
    rig = Rig(vm, "stopspawn")
    rig.plug_nvme_spawned(rp_props=HANG_PROPS, proxy_props={"timeout": PROXY_TIMEOUT_MS})
    rig.plug_vblk()
    rig.baseline()
    ram_sha = vm.ram_file()
    pid = rig.nvme_pid
    started = start_time(pid)
    vm.start_background_reads(rig.nvme_dev)
    vm.wait_background_progress()

    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        evs = react_within(vm, t0, HANG_LIMIT_S,
                           [("REMOTE_DEVICE_FAILED", {"device": "px0"}),
                            ("REMOTE_PROCESS_EXITED", {"id": "rpA"})])
        wait_until(lambda: gone(pid) or start_time(pid) != started, 5,
                   "the hung remote to be killed and reaped by the main QEMU")
    finally:
        # Stopped for longer than every timeout by now.  The main QEMU
        # killed the process: the SIGCONT finds nothing (kill_if_same checks
        # the start time, so a reused pid is left alone).
        kill_if_same(pid, started, signal.SIGCONT)
    assert gone(pid) or start_time(pid) != started
    check_failed_event(evs["REMOTE_DEVICE_FAILED"], "rpA", "nvme0", pid, "timeout")
    exited = evs["REMOTE_PROCESS_EXITED"]["data"]
    assert exited.get("pid") == pid and exited.get("signal") == 9, exited
    assert exited.get("reason", "").startswith("killed: "), exited
    rpa = remote_processes(vm)["rpA"]
    assert rpa["state"] == "exited" and rpa.get("signal") == 9, rpa
    entry = failed_device_entry(vm, "rpA")
    assert entry.get("cause") == "timeout", entry

    # Nothing changed after the SIGCONT: the host images, guest RAM, the
    # bystander; the guest answers and the failed proxy reads all-ones.
    time.sleep(1)
    assert vm.qmp.cmd("query-status")["status"] == "running"
    bystander_unaffected(vm, rig)
    rig.images_intact()
    assert vm.ram_file_sha256() == ram_sha, "guest RAM changed after the hung remote's end"
    assert reads_all_ones(vm)
    assert vm.events.take("REMOTE_DEVICE_FAILED", device="px0") == []

    vm.unplug("px0", timeout=60)
    vm.wait_nvme_gone(rig.serial, timeout=vm.io_timeout + 30)
    vm.stop_background()
    assert vm.qmp.cmd("x-del-remote-process", id="rpA") == {}
    bystander_unaffected(vm, rig)
    rig.images_intact()


def test_sigstop_spawned_proxy_timeout(vm):
    """Heartbeat off: the hang shows when the guest touches the device.  The
    vCPU waits no longer than the proxy's timeout, the proxy fails, and the
    main QEMU kills the spawned process it can no longer trust."""
    rig = Rig(vm, "stoptimeout")
    rig.plug_nvme_spawned(rp_props={"heartbeat-interval": 0},
                          proxy_props={"timeout": PROXY_TIMEOUT_MS})
    rig.plug_vblk()
    rig.baseline()
    pid = rig.nvme_pid
    started = start_time(pid)
    bdf = vm.pci_nvme_functions()[0]

    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(HB_TIMEOUT_MS / 1000 + 1)
        # Nothing notices a process that nobody asks anything.
        assert vm.events.take("REMOTE_DEVICE_FAILED") == []
        assert remote_processes(vm)["rpA"]["state"] == "running"
        # The guest reads the controller's config space: the proxy asks the
        # remote, and gives up after its timeout.
        t0 = time.monotonic()
        assert vm.config_dword0(bdf) == "ffff ffff"
        t_read = time.monotonic() - t0
        evs = react_within(vm, t0, HANG_LIMIT_S,
                           [("REMOTE_DEVICE_FAILED", {"device": "px0"}),
                            ("REMOTE_PROCESS_EXITED", {"id": "rpA"})])
        assert t_read < PROXY_TIMEOUT_MS / 1000 + 1, \
            f"the guest's config read took {t_read:.1f} s with a {PROXY_TIMEOUT_MS} ms timeout"
        wait_until(lambda: gone(pid) or start_time(pid) != started, 5,
                   "the hung remote to be killed and reaped by the main QEMU")
    finally:
        kill_if_same(pid, started, signal.SIGCONT)
    check_failed_event(evs["REMOTE_DEVICE_FAILED"], "rpA", "nvme0", pid, "timeout")
    exited = evs["REMOTE_PROCESS_EXITED"]["data"]
    assert exited.get("pid") == pid and exited.get("signal") == 9, exited
    assert exited.get("reason", "").startswith("killed: "), exited
    bystander_unaffected(vm, rig)
    rig.images_intact()
    vm.unplug("px0", timeout=60)
    vm.wait_nvme_gone(rig.serial, timeout=vm.io_timeout + 30)
    assert vm.qmp.cmd("x-del-remote-process", id="rpA") == {}


def test_sigstop_attached(vm):
    rig = Rig(vm, "stopattach")
    sock = os.path.join(vm.dir, "ra.sock")
    remote = Child("remote-ra", [vm.qemu, "-machine", "x-remote,auto-shutdown=off",
                                 "-nodefaults", "-display", "none",
                                 "-qmp", f"unix:{sock},server=on,wait=off"]
                   + nvme_blockdev_args(rig.nvme_image)
                   + ["-device", f"nvme,id=nvme0,drive=d0,serial={rig.serial}"], vm.dir)
    vm.extra_logs.append(remote.log_path)
    try:
        wait_until(lambda: os.path.exists(sock) or not remote.alive(), 30,
                   "the attached remote's QMP socket")
        assert remote.alive(), remote.output()
        info = vm.add_remote_process("ra", socket=sock, **HANG_PROPS)
        assert info["spawned"] is False and info["state"] == "running", info
        rig.nvme_rp, rig.nvme_pid = "ra", remote.pid
        assert vm.plug("px0", "ra", "nvme0", timeout=PROXY_TIMEOUT_MS) == {}
        rig.nvme_dev = vm.nvme_disk(rig.serial)
        rig.plug_vblk()
        rig.baseline()
        ram_sha = vm.ram_file()
        vm.start_background_reads(rig.nvme_dev)
        vm.wait_background_progress()

        t0 = time.monotonic()
        os.kill(remote.pid, signal.SIGSTOP)
        try:
            evs = react_within(vm, t0, HANG_LIMIT_S, [("REMOTE_DEVICE_FAILED", {"device": "px0"})])
            stalled = vm.background_count()
            check_failed_event(evs["REMOTE_DEVICE_FAILED"], "ra", "nvme0", remote.pid, "timeout")
            rp = remote_processes(vm)["ra"]
            assert rp["state"] == "unresponsive", rp
            entry = failed_device_entry(vm, "ra")
            assert entry.get("cause") == "timeout", entry
            # Not ours to kill: it stays, stopped.
            assert remote.alive() and process_state(remote.pid) == "T"
            assert vm.events.take("REMOTE_PROCESS_EXITED", id="ra") == []
            # It cannot be reattached while it hangs; the refusal changes nothing.
            before = remote_processes(vm)["ra"]
            desc = qmp_error(vm, "x-reattach-proxy", device="px0", remote="ra")
            assert "ra" in desc, desc
            after = remote_processes(vm)["ra"]
            assert after == before, \
                f"a refused x-reattach-proxy changed the process:\n{before}\n->\n{after}"
            assert vm.qmp.cmd("query-status")["status"] == "running"
            rig.vblk_reads_pattern()
            # Stopped for several times the timeouts.
            time.sleep(max(0.0, t0 + STOP_S - time.monotonic()))
            assert remote_processes(vm)["ra"]["state"] == "unresponsive"
        finally:
            os.kill(remote.pid, signal.SIGCONT)
        t_cont = time.monotonic()

        def running():
            return remote_processes(vm)["ra"]["state"] == "running"

        wait_until(running, 5, "the attached remote to be 'running' again after SIGCONT")
        assert remote_qmp(vm, "ra", "query-status")["status"]
        assert "nvme0" in remote_qom_names(vm, "ra", "/machine/peripheral")
        # The proxy stays failed until it is reattached, to the same device.
        entry = failed_device_entry(vm, "ra")
        assert entry["devid"] == "nvme0" and entry.get("cause") == "timeout", entry
        assert reads_all_ones(vm), "the failed proxy came back without a reattach"
        assert vm.qmp.cmd("x-reattach-proxy", device="px0", remote="ra") == {}
        t_reattach = time.monotonic() - t0
        print(f"reattached {t_reattach:.2f} s after the SIGSTOP")
        assert t_reattach < vm.io_timeout - 1, \
            (f"the reattach came {t_reattach:.1f} s after the SIGSTOP, too late for the "
             f"guest's {vm.io_timeout} s I/O timeout (SIGCONT after {t_cont - t0:.1f} s)")
        rp = remote_processes(vm)["ra"]
        assert rp["state"] == "running", rp
        assert rp["devices"] == [{"devid": "nvme0", "proxy": "/machine/peripheral/px0",
                                  "connected": True}], rp

        wait_guest_recovered(vm, rig, stalled, 3 * vm.io_timeout + 30)
        assert vm.nvme_disk(rig.serial) == rig.nvme_dev, "the guest's NVMe disk changed name"
        rig.guest_nvme_intact()
        bystander_unaffected(vm, rig)
        assert vm.ram_file_sha256() == ram_sha, "guest RAM changed while the remote was stopped"
        assert vm.events.take("REMOTE_DEVICE_FAILED", device="px0") == []

        vm.unplug("px0")
        vm.wait_nvme_gone(rig.serial)
        assert vm.qmp.cmd("x-del-remote-process", id="ra") == {}
        assert remote.alive(), "the attached remote did not survive"
    finally:
        if remote.alive():
            try:
                os.kill(remote.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        remote.stop()


# ====================================================================== replace


def test_replace_killed_nvme(vm):
    rig = Rig(vm, "replace")
    rig.plug_nvme_spawned()
    rig.plug_vblk()
    rig.baseline()
    ram_sha = vm.ram_file()
    pid = rig.nvme_pid
    vm.start_background_reads(rig.nvme_dev)
    vm.wait_background_progress()

    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    evs = react_within(vm, t0, REACT_S, [("REMOTE_PROCESS_EXITED", {"id": "rpA"}),
                                         ("REMOTE_DEVICE_FAILED", {"device": "px0"})])
    check_failed_event(evs["REMOTE_DEVICE_FAILED"], "rpA", "nvme0", pid, "disconnected")
    stalled = vm.background_count()

    # The replacement: same disk, same controller, then the proxy moves to it.
    info = vm.spawn_with_nvme("rpA2", rig.nvme_image, "nvme0", rig.serial)
    new_pid = info["pid"]
    assert vm.qmp.cmd("x-reattach-proxy", device="px0", remote="rpA2", devid="nvme0") == {}
    t_reattach = time.monotonic() - t0
    print(f"replacement attached {t_reattach:.2f} s after the kill")
    assert t_reattach < vm.io_timeout - 1, \
        (f"the replacement was attached {t_reattach:.1f} s after the kill, too late for the "
         f"guest's {vm.io_timeout} s I/O timeout")
    procs = remote_processes(vm)
    assert procs["rpA2"]["devices"] == [{"devid": "nvme0", "proxy": "/machine/peripheral/px0",
                                        "connected": True}], procs["rpA2"]
    assert procs["rpA"]["devices"] == [], procs["rpA"]
    # The dead one goes without force: no proxy uses it any more.
    assert vm.qmp.cmd("x-del-remote-process", id="rpA") == {}
    assert "rpA" not in remote_processes(vm)
    assert "rpA" not in qom_names(vm, "/objects")
    assert gone(pid)

    # The guest's driver recovers on its own; its reads resume.
    wait_guest_recovered(vm, rig, stalled, 3 * vm.io_timeout + 30)
    assert vm.nvme_disk(rig.serial) == rig.nvme_dev, "the guest's NVMe disk changed name"
    assert vm.pci_driver(vm.pci_nvme_functions()[0]) == "nvme"
    rig.guest_nvme_intact()
    bystander_unaffected(vm, rig)
    assert vm.ram_file_sha256() == ram_sha, "guest RAM changed"
    assert vm.events.take("REMOTE_DEVICE_FAILED", device="px0") == []

    # The reattached proxy fails like any other when its new process goes:
    # a new event (one per failure, not one per proxy's life).
    assert vm.qmp.cmd("x-del-remote-process", id="rpA2", force=True) == {}
    ev = vm.events.wait("REMOTE_DEVICE_FAILED", 5, device="px0")
    assert ev["data"].get("cause") == "ended", ev
    wait_until(lambda: gone(new_pid), 5, "the replacement to end")
    assert reads_all_ones(vm)
    vm.unplug("px0", timeout=60)
    vm.wait_nvme_gone(rig.serial, timeout=60)
    bystander_unaffected(vm, rig)
    assert set(children_of(vm.main.pid)) == {remote_processes(vm)["rpB"]["pid"]}
    # Checked last: the event names the process the proxy was plugged into.
    check_failed_event(ev, "rpA2", "nvme0", new_pid, "ended")
