# SPDX-License-Identifier: GPL-2.0-or-later
"""The two layouts of the original multi-process launcher scripts, proxied.

(a) three remote processes, each with one LSI53C895A and its scsi-hd disk,
    connected by socketpairs;
(b) one remote process with two LSI53C895A controllers, each with its own disk,
    served by two x-remote-objects on two socket paths.

Every disk has its own serial number and its own host pattern.  The guest
finds which /dev/sdX is which disk by the serial (SCSI VPD page 0x80), reads
the host pattern of that disk back and writes a pattern of its own, which must
then be in that disk's image file, and in no other.
"""

import hashlib
import os
import re

import pytest

from mpqemu_topology import Remote, Topology, start_or_fail
from mpqemu_vm import LSI_VENDOR_DEVICE, MIB, make_disk

DISK_MIB = 8
WRITE_OFFSET_MIB = 2
WRITE_MIB = 2


def lsi_args(ctrl, disk, image):
    """Options for controller lsi<ctrl> with disk number <disk> (serial mpqdisk<disk>)."""
    return ["-device", f"lsi53c895a,id=lsi{ctrl}",
            "-drive", f"id=d{disk},file={image},format=raw,if=none",
            "-device", f"scsi-hd,drive=d{disk},bus=lsi{ctrl}.0,serial=mpqdisk{disk}"]


def three_remotes(images):
    return [Remote(f"r{i}", lsi_args(i, i, images[i]), [f"lsi{i}"], transport="fd")
            for i in (1, 2, 3)]


def one_remote_two_controllers(images):
    return [Remote("r1", lsi_args(1, 1, images[1]) + lsi_args(2, 2, images[2]),
                   ["lsi1", "lsi2"], transport="socket")]


LAYOUTS = {
    "three-remotes": (3, three_remotes),
    "one-remote-two-lsi": (2, one_remote_two_controllers),
}


@pytest.fixture(scope="class", params=list(LAYOUTS))
def layout_vm(request, tmp_path_factory):
    ndisks, make_remotes = LAYOUTS[request.param]
    workdir = tmp_path_factory.mktemp(request.param)
    images, data = {}, {}
    for i in range(1, ndisks + 1):
        images[i] = os.path.join(workdir, f"disk{i}.img")
        seed = 0x1a70 + 16 * list(LAYOUTS).index(request.param) + i   # distinct per disk
        data[i] = make_disk(images[i], DISK_MIB, seed)
    vm = start_or_fail(Topology(make_remotes(images), mode="proxy", machine="pc",
                                name=request.param))
    vm.ndisks, vm.images, vm.host_data = ndisks, images, data
    yield vm
    vm.close()
    vm.cleanup()
    for path in images.values():
        os.unlink(path)


def disks_by_serial(vm, timeout=30):
    """{disk number: (sdX, PCI function)} from the serial numbers the guest sees.

    Waits (bounded) until the guest has as many SCSI disks as the layout has."""
    out = vm.shell.check(
        f"i=0; while [ $i -lt {timeout * 10} ]; do set -- /sys/block/sd*; "
        f"[ $# -ge {vm.ndisks} ] && [ -e \"$1\" ] && break; i=$((i+1)); sleep 0.1; done; "
        "for b in /sys/block/sd*; do [ -e $b ] && echo $(basename $b) "
        "$(tr -dc 'a-z0-9' < $b/device/vpd_pg80) $(readlink -f $b/device); done; true",
        timeout=timeout + 30)
    found = {}
    for line in out.splitlines():
        m = re.fullmatch(r"(sd[a-z]+) mpqdisk(\d+) \S*/devices/pci[^/]+/([0-9a-f:.]+)/host\S*",
                         line.strip())
        if m:
            num = int(m.group(2))
            assert num not in found, f"two disks with serial mpqdisk{num}:\n{out}"
            found[num] = (m.group(1), m.group(3))
    assert sorted(found) == list(range(1, vm.ndisks + 1)), f"disks seen by the guest:\n{out}"
    return found


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class TestLayout:
    def test_every_controller_bound(self, layout_vm):
        """One LSI53C895A per disk, all bound to the sym53c8xx driver."""
        bdfs = layout_vm.pci_functions(*LSI_VENDOR_DEVICE)
        assert len(bdfs) == layout_vm.ndisks, f"LSI functions: {bdfs}"
        for bdf in bdfs:
            assert layout_vm.pci_driver(bdf) == "sym53c8xx", f"driver of {bdf}"

    def test_each_disk_behind_its_own_controller(self, layout_vm):
        disks = disks_by_serial(layout_vm)
        functions = [bdf for _, bdf in disks.values()]
        assert len(set(functions)) == layout_vm.ndisks, f"disk -> function: {disks}"
        assert set(functions) == set(layout_vm.pci_functions(*LSI_VENDOR_DEVICE))
        for _, (dev, _) in disks.items():
            sectors = int(layout_vm.shell.check(f"cat /sys/block/{dev}/size").split()[0])
            assert sectors * 512 == DISK_MIB * MIB

    def test_host_patterns_read_back(self, layout_vm):
        """Each disk, found by its serial, holds its own host pattern (O_DIRECT)."""
        for num, (dev, _) in disks_by_serial(layout_vm).items():
            assert layout_vm.guest_sha256(dev, 0, DISK_MIB) == \
                sha256(layout_vm.host_data[num]), f"disk {num} ({dev}) content"

    def test_guest_writes_land_in_the_right_images(self, layout_vm):
        start, end = WRITE_OFFSET_MIB * MIB, (WRITE_OFFSET_MIB + WRITE_MIB) * MIB
        written = {}
        for num, (dev, _) in disks_by_serial(layout_vm).items():
            written[num] = layout_vm.write_random(dev, WRITE_OFFSET_MIB, WRITE_MIB)
            assert written[num] != sha256(layout_vm.host_data[num][start:end])
            assert layout_vm.guest_sha256(dev, WRITE_OFFSET_MIB, WRITE_MIB) == written[num]
        assert len(set(written.values())) == layout_vm.ndisks, "two guest patterns are equal"

        assert layout_vm.poweroff() == 0, "main QEMU did not exit cleanly after guest poweroff"
        codes = layout_vm.remote_exit_codes()
        assert len(codes) == len(layout_vm.remotes)
        assert all(rc == 0 for rc in codes.values()), f"remote exit statuses: {codes}"

        for num, path in layout_vm.images.items():
            with open(path, "rb") as f:
                image = f.read()
            assert len(image) == DISK_MIB * MIB
            assert sha256(image[start:end]) == written[num], f"image of disk {num}"
            assert image[:start] == layout_vm.host_data[num][:start], f"disk {num} before the write"
            assert image[end:] == layout_vm.host_data[num][end:], f"disk {num} after the write"
