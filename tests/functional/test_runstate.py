# SPDX-License-Identifier: GPL-2.0-or-later
"""stop and cont of the main QEMU reach its remote processes.

A proxied device must not go on with DMA or interrupts while the guest is
stopped (a migration takes its final state then), and must start only when
the guest runs.  The proxy passes the VM's run state on (RUN_STATE in
docs/protocol.md); the remote process stops (vm_stop, which drains its
I/O) while any VM it serves is stopped.

  - test_stop_quiesces_and_cont_resumes: the guest reads an NVMe disk in a
    loop; after `stop` the remote process says "paused" (query-status
    through x-remote-qmp) and its disk's read counter stands still; after
    `cont` it runs, the loop goes on without a failed read, and the disk
    reads the host's pattern;
  - test_hotplug_while_stopped: a virtio-blk disk hot-plugged while the VM
    is stopped leaves its remote paused until `cont`; then the guest finds
    it and reads its pattern.

Run: scripts/run-tests.sh tests/functional/test_runstate.py (about 1 min).
"""

import hashlib
import time

import pytest

from mpqemu_crash import DISK_MIB, started_crash_vm
from mpqemu_remote_qmp import remote_qmp, wait_until


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def remote_status(vm, rp_id):
    return remote_qmp(vm, rp_id, "query-status")["status"]


def remote_reads(vm, rp_id):
    """Read requests the remote's block layer has completed, all disks."""
    return sum(s["stats"]["rd_operations"] for s in remote_qmp(vm, rp_id, "query-blockstats"))


fixture_vm = pytest.fixture(name="vm")(started_crash_vm)


def test_stop_quiesces_and_cont_resumes(vm):
    image, data = vm.new_disk("rs-nvme", 11)
    vm.spawn_with_nvme("rpA", image, "nvme0", "mpqrunstate")
    assert vm.plug("px0", "rpA", "nvme0") == {}
    dev = vm.nvme_disk("mpqrunstate")
    assert remote_status(vm, "rpA") == "running"

    vm.start_background_reads(dev)
    vm.wait_background_progress(more=3)
    assert vm.qmp.cmd("stop") == {}
    assert remote_status(vm, "rpA") == "paused"
    # Quiesced: no read reaches the disk while the VM stays stopped.
    reads = remote_reads(vm, "rpA")
    time.sleep(1.5)
    assert remote_reads(vm, "rpA") == reads, "the remote device went on reading while stopped"
    assert remote_status(vm, "rpA") == "paused"

    assert vm.qmp.cmd("cont") == {}
    wait_until(lambda: remote_status(vm, "rpA") == "running", 5, "the remote to run again")
    vm.wait_background_progress(more=3)
    assert remote_reads(vm, "rpA") > reads
    vm.stop_background()
    assert vm.background_failures() == 0
    assert vm.guest_sha256(dev, 0, DISK_MIB) == sha256(data)


def test_hotplug_while_stopped(vm):
    image, data = vm.new_disk("rs-vblk", 12)
    assert vm.qmp.cmd("stop") == {}
    vm.spawn_with_virtio_blk("rpB", image, "vblk1", "mpqrsvblk")
    assert remote_status(vm, "rpB") == "running"    # nothing plugged yet
    assert vm.plug("px1", "rpB", "vblk1") == {}
    assert remote_status(vm, "rpB") == "paused"
    time.sleep(0.5)
    assert remote_status(vm, "rpB") == "paused"

    assert vm.qmp.cmd("cont") == {}
    wait_until(lambda: remote_status(vm, "rpB") == "running", 5, "the remote to run")
    disk = vm.virtio_disk("mpqrsvblk")
    assert vm.guest_sha256(disk, 0, DISK_MIB) == sha256(data)
