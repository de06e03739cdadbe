# Soak: each disk controller under random reads at queue depth 16 for minutes
# on end, the device in a remote process (and virtio-blk in-process too).
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A lost doorbell or interrupt shows up as a guest that waits for its disk
# forever, but only now and then: one stall in a few minutes of load is a bug
# that a functional test, a few seconds of I/O, does not see. `make soak` runs
# this; SOAK_SECONDS (default 300) is the load per configuration.

import os
import re
import time

import pytest

from mpqemu_topology import Remote, Topology, start_or_fail
from mpqemu_vm import make_disk

SOAK_SECONDS = int(os.environ.get("SOAK_SECONDS", "300"))
RUN_SECONDS = 5             # one randread run
RUN_TIMEOUT = 60            # a run that takes this long has stalled
JOBS = 16                   # reads in flight
DISK_MIB = 64
SEED = 4242

DEVICES = {
    "lsi53c895a": ["-device", "lsi53c895a,id=dev1",
                   "-device", "scsi-hd,drive=d1,bus=dev1.0"],
    "nvme": ["-device", "nvme,id=dev1,serial=mpqsoak,drive=d1"],
    "virtio-blk": ["-device", "virtio-blk-pci,id=dev1,drive=d1,disable-legacy=on"],
}

CONFIGS = [("lsi53c895a", "proxy"), ("nvme", "proxy"), ("virtio-blk", "proxy"),
           ("virtio-blk", "inproc")]


def the_disk(vm):
    """The guest's one disk (it boots from its initramfs), once it is there."""
    out = vm.shell.check(
        "i=0; while [ $i -lt 300 ]; do for b in /sys/block/*; do "
        "case ${b##*/} in loop*|ram*|zram*) continue;; esac; "
        "[ \"$(cat $b/hidden 2>/dev/null)\" = 1 ] && continue; echo ${b##*/}; done "
        "| grep . && break; i=$((i+1)); sleep 0.1; done", timeout=60)
    disks = out.split()
    assert len(disks) == 1, f"the guest's disks: {disks}"
    return disks[0]


@pytest.mark.parametrize("kind,mode", CONFIGS, ids=[f"{k}-{m}" for k, m in CONFIGS])
def test_random_reads_never_stall(kind, mode, tmp_path):
    image = tmp_path / "disk.img"
    make_disk(str(image), DISK_MIB, SEED)
    args = ["-drive", f"id=d1,file={image},format=raw,if=none"] + DEVICES[kind]
    vm = start_or_fail(Topology([Remote("r1", args, ["dev1"])], mode=mode,
                                name=f"soak-{kind}-{mode}", workdir=str(tmp_path)))
    try:
        dev = the_disk(vm)
        cmd = f"randread -t {RUN_SECONDS} -b 4096 -s {SEED} -j {JOBS} /dev/{dev}"
        checks, runs, ios = set(), 0, 0
        deadline = time.monotonic() + SOAK_SECONDS
        while runs == 0 or time.monotonic() < deadline:
            try:
                out = vm.shell.check(cmd, timeout=RUN_TIMEOUT)
            except Exception as exc:  # pylint: disable=broad-except
                pytest.fail(f"{kind} {mode}: run {runs + 1} ({ios} reads so far) failed "
                            f"or did not end within {RUN_TIMEOUT} s: {exc}\n"
                            f"{vm.logs(tail=3000)}", pytrace=False)
            fields = dict(re.findall(r"(\w+)=(\S+)", out))
            assert int(fields.get("ios", 0)) > 0, f"run {runs + 1}: {out}"
            checks.add(fields["check"])
            runs += 1
            ios += int(fields["ios"])
        # the same seed reads the same blocks: the same data every run
        assert len(checks) == 1, f"the blocks read differ between runs: {checks}"
        print(f"{kind} {mode}: {runs} runs, {ios} reads at queue depth {JOBS}, no stall")
    finally:
        vm.close()
