# SPDX-License-Identifier: GPL-2.0-or-later
"""Live migration of a VM whose disk controller lives in a remote process.

The destination is prepared through QMP only, as a management layer would:
a main QEMU started with -incoming defer gets its remote process from
x-add-remote-process (which then opens the shared disk image without taking
it from the source's remote) and its proxy from device_add, in the same PCI
slot as on the source; then migrate-incoming and migrate.

  - test_migrate_during_io: the guest writes fresh random blocks to the
    proxied disk and reads each back, in a loop, while the VM migrates (LSI
    over unix:, virtio-blk over tcp:); the loop goes on on the destination
    without a failed or differing block, every block reads back as last
    written, and the source ends up "postmigrate";
  - test_dma_dirty_tracking: while the VM migrates, the guest keeps having
    the device DMA a known disk range into one buffer that no CPU writes
    (dma-check, bench/guest/dma-check.c) and checks the buffer; once the
    migration's first pass over RAM has sent the buffer, the range changes.
    Without the remote's dirty log the destination gets the buffer as that
    first pass sent it: with the sync disabled by hand (proxy_dirty_sync
    returning at once) every run failed (2 of 2: on the destination the
    guest's loop was back on range A, its own view of the switch lost with
    the device's ring updates), and with it every run passed;
  - test_shared_remote_keeps_other_vm: a remote process serving two VMs
    lets go of the migrated VM's disk only, keeps it let go of once that
    VM's source has quit, and goes on serving the other VM;
  - test_migrate_to_file_and_back: the stopped VM's state goes to a file
    (file:, or exec: with cat) and a second QEMU starts from it, with its
    disk and its state;
  - failure cases, each leaving the source running with its guest doing
    I/O: an NVMe controller (unmigratable, as in-process) blocks the
    migration with a message naming the proxy; postcopy is refused (the
    remote reads and writes guest RAM where no userfault sees it); a destination without the
    proxy, and one whose remote has another device in its place, fail the
    migration at its start; a remote process killed during the migration
    fails it.

Run: scripts/run-tests.sh tests/functional/test_migration.py (about 4 min).
"""

import hashlib
import os
import signal

import pytest

from mpqemu_crash import DISK_MIB, CrashVM, started_crash_vm
from mpqemu_migration import (DEVICES, PROXY_ADDR, guest_disk, loop_count, loop_errors, migrate,
                              migration_status, remote_status, serve, socket_uri,
                              start_destination, start_dma_check,
                              start_write_verify_loop, stop_loop, switch_dma_range,
                              verify_written_blocks, wait_loop_progress)
from mpqemu_remote_qmp import qmp_error, remote_processes, remote_qmp, wait_until
from mpqemu_topology import start_or_fail
from mpqemu_vm import Child

fixture_vm = pytest.fixture(name="vm")(started_crash_vm)


class Destinations:
    """Starts a test's destination VMs; a failed test's report shows their
    logs too (conftest.py reads started_vms)."""

    def __init__(self, name):
        self.name = name
        self.started_vms = []

    def __call__(self):
        self.started_vms.append(start_destination(self.name))
        return self.started_vms[-1]


@pytest.fixture(name="dst")
def fixture_dst(request):
    destinations = Destinations(request.node.name)
    yield destinations
    for vm in destinations.started_vms:
        vm.close()
        vm.cleanup()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def source_survived(vm, dev):
    """The source runs, and its guest does I/O on the proxied disk."""
    wait_until(lambda: vm.qmp.cmd("query-status")["status"] == "running", 30,
               "the source VM to run again")
    wait_loop_progress(vm, 3)
    stop_loop(vm)
    assert loop_count(vm, "bad") == 0, loop_errors(vm)
    verify_written_blocks(vm, dev, 64)


@pytest.mark.parametrize("kind,transport", [("lsi53c895a", "unix"), ("virtio-blk", "tcp")])
def test_migrate_during_io(vm, dst, kind, transport):
    image, _ = vm.new_disk("mig", 21)
    args, devid = DEVICES[kind](image)
    assert serve(vm, "rpA", args, devid) == {}
    dev = guest_disk(vm, kind)
    start_write_verify_loop(vm, dev)
    wait_loop_progress(vm, 5)

    dest = dst()
    assert serve(dest, "rpA", args, devid) == {}
    # Its remote waits for the migration: disks not taken, devices not running.
    assert remote_status(dest, "rpA") == "inmigrate"
    uri = socket_uri(dest) if transport == "unix" else "tcp:127.0.0.1:0"
    migrate_wait = migrate(vm, dest, uri)
    assert migrate_wait["status"] == "completed"
    assert vm.qmp.cmd("query-status")["status"] == "postmigrate"
    assert remote_status(dest, "rpA") == "running"

    before = loop_count(dest, "ok")
    wait_loop_progress(dest, 10)
    stop_loop(dest)
    assert loop_count(dest, "bad") == 0, loop_errors(dest)
    assert loop_count(dest, "ok") > before
    assert verify_written_blocks(dest, dev) > 0


def test_dma_dirty_tracking(vm, dst):
    span = DISK_MIB // 2
    image, data = vm.new_disk("dma", 22)
    range_a, range_b = data[:span << 20], data[span << 20:2 * span << 20]
    args, devid = DEVICES["virtio-blk"](image)
    assert serve(vm, "rpA", args, devid) == {}
    dev = guest_disk(vm, "virtio-blk")
    start_dma_check(vm, dev, span, range_a, range_b)
    wait_loop_progress(vm, 2)
    assert loop_count(vm, "bad") == 0, loop_errors(vm)

    dest = dst()
    assert serve(dest, "rpA", args, devid) == {}
    # The first pass over RAM sends the buffer holding range A; then the
    # device DMAs range B into it, which only the remote's dirty log tells.
    # (It must not converge before: a downtime limit of 1 ms.)
    assert vm.qmp.cmd("migrate-set-parameters",
                      **{"max-bandwidth": 32 << 20, "downtime-limit": 1}) == {}
    migrate(vm, dest, socket_uri(dest), converge_after=2,
            before_converging=lambda: switch_dma_range(vm))
    wait_loop_progress(dest, 2)
    stop_loop(dest)
    assert loop_count(dest, "bad") == 0, loop_errors(dest)
    assert loop_count(dest, "last") == 1


@pytest.mark.parametrize("how", ["file", "exec"])
def test_migrate_to_file_and_back(vm, dst, how):
    image, _ = vm.new_disk("file", 23)
    args, devid = DEVICES["lsi53c895a"](image)
    assert serve(vm, "rpA", args, devid) == {}
    dev = guest_disk(vm, "lsi53c895a")
    start_write_verify_loop(vm, dev)
    wait_loop_progress(vm, 5)

    state = os.path.join(vm.dir, "vm.state")
    out_uri = f"file:{state}" if how == "file" else f"exec:cat > {state}"
    in_uri = f"file:{state}" if how == "file" else f"exec:cat {state}"
    assert vm.qmp.cmd("stop") == {}
    assert vm.qmp.cmd("migrate", uri=out_uri) == {}
    wait_until(lambda: migration_status(vm) in ("completed", "failed"), 120,
               "the state to be written")
    assert migration_status(vm) == "completed", vm.qmp.cmd("query-migrate")
    vm.close()      # the source is gone: only the file and the disk are left

    dest = dst()
    assert serve(dest, "rpA", args, devid) == {}
    assert dest.qmp.cmd("migrate-incoming", uri=in_uri) == {}
    wait_until(lambda: dest.qmp.cmd("query-status")["status"] == "paused", 120,
               "the state to be loaded")
    assert dest.qmp.cmd("cont") == {}
    dest.take_over_guest()
    wait_loop_progress(dest, 10)
    stop_loop(dest)
    assert loop_count(dest, "bad") == 0, loop_errors(dest)
    assert verify_written_blocks(dest, dev) > 0


def test_unmigratable_device_blocks(vm):
    image, _ = vm.new_disk("nvme", 24)
    args, devid = DEVICES["nvme"](image)
    assert serve(vm, "rpA", args, devid) == {}
    dev = guest_disk(vm, "nvme")
    err = qmp_error(vm, "migrate", uri=socket_uri(vm, "never.sock"))
    assert "px0" in err and "nvme" in err and "does not support migration" in err
    start_write_verify_loop(vm, dev, blocks=64)
    source_survived(vm, dev)
    # Unplugged, it no longer blocks.
    vm.unplug("px0")
    assert vm.qmp.cmd("migrate", uri="exec:cat > /dev/null") == {}
    wait_until(lambda: migration_status(vm) == "completed", 120, "the migration")


def test_postcopy_refused(vm):
    image, _ = vm.new_disk("postcopy", 29)
    args, devid = DEVICES["virtio-blk"](image)
    assert serve(vm, "rpA", args, devid) == {}
    dev = guest_disk(vm, "virtio-blk")
    caps = [{"capability": "postcopy-ram", "state": True}]
    assert vm.qmp.cmd("migrate-set-capabilities", capabilities=caps) == {}
    assert vm.qmp.cmd("migrate", uri="exec:cat > /dev/null") == {}
    wait_until(lambda: migration_status(vm) == "failed", 60, "the migration to fail")
    err = vm.qmp.cmd("query-migrate").get("error-desc", "")
    assert "px0" in err and "postcopy" in err, err
    start_write_verify_loop(vm, dev, blocks=64)
    source_survived(vm, dev)
    # Without postcopy the same VM migrates.
    caps[0]["state"] = False
    assert vm.qmp.cmd("migrate-set-capabilities", capabilities=caps) == {}
    assert vm.qmp.cmd("stop") == {}
    assert vm.qmp.cmd("migrate", uri="exec:cat > /dev/null") == {}
    wait_until(lambda: migration_status(vm) == "completed", 120, "the migration")


def shared_remote(vm, image_a, image_b):
    """A remote process that two VMs attach to, each through its own QMP
    socket: an LSI with disk A (for vm) and a virtio-blk with disk B."""
    socks = [os.path.join(vm.dir, f"shared{i}.sock") for i in (1, 2)]
    args = [vm.qemu, "-machine", "x-remote,auto-shutdown=off", "-nodefaults",
            "-display", "none",
            "-blockdev", f"driver=file,filename={image_a},node-name=fA",
            "-blockdev", "driver=raw,file=fA,node-name=dA",
            "-device", "lsi53c895a,id=lsi0",
            "-device", "scsi-hd,id=sd0,drive=dA,bus=lsi0.0",
            "-blockdev", f"driver=file,filename={image_b},node-name=fB",
            "-blockdev", "driver=raw,file=fB,node-name=dB",
            "-device", "virtio-blk-pci,id=vblk1,drive=dB,serial=mpqshared,"
            "disable-legacy=on"]
    for sock in socks:
        args += ["-qmp", f"unix:{sock},server=on,wait=off"]
    remote = Child("remote-shared", args, vm.dir)
    vm.extra_logs.append(remote.log_path)
    wait_until(lambda: all(map(os.path.exists, socks)) or not remote.alive(), 30,
               "the shared remote's QMP sockets")
    assert remote.alive(), open(remote.log_path).read()
    return remote, socks


def test_shared_remote_keeps_other_vm(vm, dst):
    """One remote process serves two VMs; one migrates away and its source
    quits: the remote goes on serving the other VM, and the migrated disk
    stays with the destination (the remote does not take it back)."""
    image_a, _ = vm.new_disk("shared-a", 30)
    image_b, _ = vm.new_disk("shared-b", 31)
    remote, socks = shared_remote(vm, image_a, image_b)
    other = start_or_fail(CrashVM(name="shared-other"))
    try:
        vm.add_remote_process("ra", socket=socks[0])
        assert vm.plug("px0", "ra", "lsi0", addr=PROXY_ADDR) == {}
        other.add_remote_process("rb", socket=socks[1])
        assert other.plug("px0", "rb", "vblk1") == {}
        dev = guest_disk(vm, "lsi53c895a")
        other_dev = other.virtio_disk("mpqshared")
        start_write_verify_loop(vm, dev, blocks=64)
        start_write_verify_loop(other, other_dev, blocks=64)

        dest = dst()
        args, devid = DEVICES["lsi53c895a"](image_a)
        assert serve(dest, "rpA", args, devid) == {}
        migrate(vm, dest, socket_uri(dest))
        vm.close()      # the source quits: its hold on the shared remote goes

        # The other VM's disk runs again, and so does the migrated one.
        wait_loop_progress(other, 10)
        wait_loop_progress(dest, 10)
        stop_loop(other)
        assert loop_count(other, "bad") == 0, loop_errors(other)
        verify_written_blocks(other, other_dev, 64)
        stop_loop(dest)
        assert loop_count(dest, "bad") == 0, loop_errors(dest)
        assert verify_written_blocks(dest, dev, 64) > 0
        nodes = {n["node-name"]: n for n in
                 remote_qmp(other, "rb", "query-named-block-nodes")}
        assert nodes["dA"]["active"] is False, nodes["dA"]
        assert nodes["dB"]["active"] is True, nodes["dB"]
        assert remote_qmp(other, "rb", "query-status")["status"] == "running"
    finally:
        other.close()
        other.cleanup()
        remote.stop()


def test_destination_without_device(vm, dst):
    image, _ = vm.new_disk("nodev", 25)
    args, devid = DEVICES["virtio-blk"](image)
    assert serve(vm, "rpA", args, devid) == {}
    dev = guest_disk(vm, "virtio-blk")
    start_write_verify_loop(vm, dev, blocks=64)

    dest = dst()        # no remote process, no proxy
    assert dest.qmp.cmd("migrate-incoming", uri=socket_uri(dest)) == {}
    assert vm.qmp.cmd("migrate", uri=socket_uri(dest)) == {}
    wait_until(lambda: migration_status(vm) == "failed", 120, "the migration to fail")
    assert dest.main.wait(30) is not None
    assert "px0" in dest.main.output() or "x-pci-proxy-dev" in dest.main.output()
    source_survived(vm, dev)


def test_destination_with_other_device(vm, dst):
    image, _ = vm.new_disk("other", 26)
    args, devid = DEVICES["virtio-blk"](image)
    assert serve(vm, "rpA", args, devid) == {}
    dev = guest_disk(vm, "virtio-blk")
    start_write_verify_loop(vm, dev, blocks=64)

    dest = dst()
    other = os.path.join(dest.dir, "other.img")
    with open(other, "wb") as f:
        f.truncate(DISK_MIB << 20)
    other_args, other_devid = DEVICES["lsi53c895a"](other)
    assert serve(dest, "rpA", other_args, other_devid) == {}
    assert dest.qmp.cmd("migrate-incoming", uri=socket_uri(dest)) == {}
    assert vm.qmp.cmd("migrate", uri=socket_uri(dest)) == {}
    wait_until(lambda: migration_status(vm) == "failed", 120, "the migration to fail")
    assert dest.main.wait(30) is not None
    out = dest.main.output()
    assert "x-pci-proxy-dev px0: the device here cannot take the state" in out, out[-3000:]
    assert "virtio-blk-pci" in out and "lsi53c895a" in out
    source_survived(vm, dev)


def test_remote_killed_during_migration(vm, dst):
    image, _ = vm.new_disk("kill", 27)
    args, devid = DEVICES["virtio-blk"](image)
    assert serve(vm, "rpA", args, devid) == {}
    keep_args = DEVICES["lsi53c895a"](vm.new_disk("keep", 28)[0])[0]
    assert serve(vm, "rpB", keep_args, "lsi0", proxy_id="px1", addr="0x7") == {}
    keep = guest_disk(vm, "lsi53c895a")

    dest = dst()
    assert serve(dest, "rpA", args, devid) == {}
    assert serve(dest, "rpB", keep_args, "lsi0", proxy_id="px1", addr="0x7") == {}
    assert vm.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 20}) == {}
    assert dest.qmp.cmd("migrate-incoming", uri=socket_uri(dest)) == {}
    assert vm.qmp.cmd("migrate", uri=socket_uri(dest)) == {}
    wait_until(lambda: migration_status(vm) == "active", 30, "the migration to start")
    pid = remote_processes(vm)["rpA"]["pid"]
    os.kill(pid, signal.SIGKILL)
    vm.events.wait("REMOTE_DEVICE_FAILED", 30)
    # It fails now, at its slow pace (512 MiB at 8 MiB/s would take a
    # minute a pass), not when it converges, which it would never do: every
    # pass sends again all the RAM the dead device could have written.
    wait_until(lambda: migration_status(vm) == "failed", 20, "the migration to fail")
    err = vm.qmp.cmd("query-migrate").get("error-desc", "")
    assert "x-pci-proxy-dev px0 cannot migrate" in err, err
    # The VM goes on, with its other disk; the dead one is offline.
    start_write_verify_loop(vm, keep, blocks=64)
    source_survived(vm, keep)
