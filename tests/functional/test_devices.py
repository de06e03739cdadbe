# SPDX-License-Identifier: GPL-2.0-or-later
"""NVMe, virtio-blk and two NICs, each in-process and in a remote process.

Every configuration boots one guest (class-scoped fixture) and checks, in order,
what a user of the device would check: its PCI identity, the driver that binds,
that it interrupts by MSI-X (not INTx) and then that it does its job: a disk
returns the host's pattern and keeps what the guest writes; a NIC carries TCP
both ways to a server on the host's loopback.  The in-process runs are the
reference: the same tests must pass on both.
"""

import hashlib
import os
import re
import socket
import threading

import pytest

from mpqemu_topology import Remote, Topology, start_or_fail, msix_enabled
from mpqemu_vm import MIB, file_sha256, make_disk

DISK_MIB = 16
WRITE_OFFSET_MIB = 8
WRITE_MIB = 4


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def topology(mode, machine, transport, name, args, devid):
    """One device (and its backends) in one remote, or in the main QEMU."""
    remote = Remote("r1", args, [devid], transport=transport or "socket")
    return Topology([remote], mode=mode, machine=machine, name=name)


def config_id(mode, transport):
    return "inproc" if mode == "inproc" else f"proxy-{transport}"


def driver_vectors(vm, name_re):
    """{irq: (count, description)} of the /proc/interrupts lines named by name_re."""
    return {irq: v for irq, v in vm.interrupts().items()
            if re.search(rf"\s{name_re}(,|\s|$)", " " + v[1] + " ")}


def check_msix(vm, bdf, spec):
    """The function interrupts by MSI-X only: returns its vectors in /proc/interrupts."""
    name_re, min_vectors = spec["irq_name"], spec["vectors"]
    present, enabled, table = msix_enabled(vm.pci_config(bdf))
    assert present, f"{bdf} has no MSI-X capability in its config space"
    assert enabled, f"MSI-X Enable is clear in the config space of {bdf}"
    modes = vm.msi_modes(bdf)
    assert len(modes) >= min_vectors, f"{bdf} uses {len(modes)} MSI vectors: {modes}"
    assert set(modes.values()) == {"msix"}, f"vectors of {bdf}: {modes}"
    assert len(modes) <= table
    vectors = driver_vectors(vm, name_re)
    assert set(vectors) == set(modes), \
        f"/proc/interrupts lines for /{name_re}/ {vectors} are not the MSI-X vectors {modes}"
    for irq, (_, desc) in vectors.items():
        assert desc.startswith("PCI-MSI"), f"IRQ {irq} is not message-signalled: {desc}"
    intx = {irq: v for irq, v in vm.interrupts().items()
            if v[1].startswith("IO-APIC") and re.search(spec["intx_name"], v[1])}
    assert not intx, f"the driver also has an INTx line: {intx}"
    return vectors


def check_poweroff(vm):
    """Guest poweroff ends the main QEMU with status 0, and every remote with 0 too."""
    assert vm.poweroff() == 0, "main QEMU did not exit cleanly after guest poweroff"
    codes = vm.remote_exit_codes()
    assert len(codes) == (len(vm.remotes) if vm.mode == "proxy" else 0)
    assert all(rc == 0 for rc in codes.values()), f"remote exit statuses: {codes}"


# ====================================================================== disks

BLOCK_KINDS = {
    "nvme": {
        "device": "nvme,id=blk1,serial=mpqnvme1,drive=d1",
        "pci": ("0x1b36", "0x0010"),     # QEMU's NVMe (use-intel-id=off, the default)
        "class": "0x010802",
        "driver": "nvme",
        "serial": "mpqnvme1",
        "serial_file": "/sys/block/{dev}/device/serial",
        "disk_glob": "/sys/bus/pci/devices/{bdf}/nvme/nvme*/nvme*n*",
        "irq_name": r"nvme\d+q\d+",
        "vectors": 2,                    # admin queue + one I/O queue (1 CPU)
        "intx_name": r"nvme",
    },
    "virtio-blk": {
        # Modern only: no I/O BAR, MSI-X through the virtio PCI capabilities.
        "device": "virtio-blk-pci,id=blk1,drive=d1,serial=mpqvblk1,disable-legacy=on",
        "pci": ("0x1af4", "0x1042"),
        "class": "0x010000",
        "driver": "virtio-pci",
        "serial": "mpqvblk1",
        "serial_file": "/sys/block/{dev}/serial",
        "disk_glob": "/sys/bus/pci/devices/{bdf}/virtio*/block/*",
        "irq_name": r"virtio\d+-(req\.\d+|config)",
        "vectors": 2,                    # config + one request queue
        "intx_name": r"virtio",
    },
}

# (kind, machine, mode, transport of the proxy); both transports are covered.
BLOCK_CONFIGS = [
    ("nvme", "pc", "inproc", None),
    ("nvme", "pc", "proxy", "fd"),
    ("nvme", "q35", "inproc", None),
    ("nvme", "q35", "proxy", "socket"),
    ("virtio-blk", "pc", "inproc", None),
    ("virtio-blk", "pc", "proxy", "socket"),
]


def block_id(cfg):
    kind, machine, mode, transport = cfg
    return f"{kind}-{machine}-{config_id(mode, transport)}"


@pytest.fixture(scope="class", params=BLOCK_CONFIGS, ids=[block_id(c) for c in BLOCK_CONFIGS])
def disk_vm(request, tmp_path_factory):
    kind, machine, mode, transport = request.param
    spec = BLOCK_KINDS[kind]
    workdir = tmp_path_factory.mktemp(block_id(request.param))
    image = os.path.join(workdir, "disk.img")
    # A different pattern per configuration: no run can pass on another's data.
    data = make_disk(image, DISK_MIB, 0xd15c + BLOCK_CONFIGS.index(request.param))
    args = ["-drive", f"id=d1,file={image},format=raw,if=none", "-device", spec["device"]]
    vm = start_or_fail(topology(mode, machine, transport, block_id(request.param), args, "blk1"))
    vm.spec, vm.image, vm.host_data = spec, image, data
    yield vm
    vm.close()
    vm.cleanup()
    os.unlink(image)


def the_function(vm):
    bdfs = vm.pci_functions(*vm.spec["pci"])
    assert len(bdfs) == 1, f"expected one {':'.join(vm.spec['pci'])} function, found {bdfs}"
    return bdfs[0]


def the_disk(vm, bdf):
    """Block device name of the disk on that PCI function (waits for it, bounded)."""
    pattern = vm.spec["disk_glob"].format(bdf=bdf)
    rc, out = vm.shell.run(
        "i=0; while [ $i -lt 300 ]; do set -- " + pattern + "; [ -e \"$1\" ] && break; "
        "i=$((i+1)); sleep 0.1; done; for b in \"$@\"; do [ -e \"$b\" ] && basename $b; done; true",
        timeout=90)
    names = out.split()
    assert rc == 0 and len(names) == 1, f"disks under {pattern}: {out!r}"
    # With native NVMe multipath the controller's path is nvmeXcYnZ; the disk is nvmeXnZ.
    return re.sub(r"^(nvme\d+)c\d+(n\d+)$", r"\1\2", names[0])


class TestDisk:
    def test_pci_identity(self, disk_vm):
        """One function with the device's vendor, device and class codes."""
        bdf = the_function(disk_vm)
        klass = disk_vm.shell.check(f"cat /sys/bus/pci/devices/{bdf}/class").split()
        assert klass == [disk_vm.spec["class"]]

    def test_driver_binds_and_disk_appears(self, disk_vm):
        bdf = the_function(disk_vm)
        assert disk_vm.pci_driver(bdf) == disk_vm.spec["driver"]
        dev = the_disk(disk_vm, bdf)
        sectors = int(disk_vm.shell.check(f"cat /sys/block/{dev}/size").split()[0])
        assert sectors * 512 == DISK_MIB * MIB
        serial = disk_vm.shell.check("cat " + disk_vm.spec["serial_file"].format(dev=dev))
        assert serial.strip() == disk_vm.spec["serial"]

    def test_interrupts_are_msix(self, disk_vm):
        """MSI-X enabled, every vector of the function is MSI-X, and they fire on I/O."""
        bdf = the_function(disk_vm)
        dev = the_disk(disk_vm, bdf)
        before = check_msix(disk_vm, bdf, disk_vm.spec)
        disk_vm.shell.check(f"dd if=/dev/{dev} of=/dev/null bs=4k count=64 iflag=direct")
        after = driver_vectors(disk_vm, disk_vm.spec["irq_name"])
        delivered = sum(c for c, _ in after.values()) - sum(c for c, _ in before.values())
        # At least one completion interrupt per direct read.
        assert delivered >= 64, f"{delivered} MSI-X interrupts for 64 reads: {before} -> {after}"

    def test_host_pattern_reads_back(self, disk_vm):
        dev = the_disk(disk_vm, the_function(disk_vm))
        assert disk_vm.guest_sha256(dev, 0, DISK_MIB) == sha256(disk_vm.host_data)

    def test_guest_write_lands_in_image(self, disk_vm):
        dev = the_disk(disk_vm, the_function(disk_vm))
        start, end = WRITE_OFFSET_MIB * MIB, (WRITE_OFFSET_MIB + WRITE_MIB) * MIB
        written = disk_vm.write_random(dev, WRITE_OFFSET_MIB, WRITE_MIB)
        assert written != sha256(disk_vm.host_data[start:end])
        assert disk_vm.guest_sha256(dev, WRITE_OFFSET_MIB, WRITE_MIB) == written

        check_poweroff(disk_vm)

        assert file_sha256(disk_vm.image, start, WRITE_MIB * MIB) == written
        with open(disk_vm.image, "rb") as f:
            image = f.read()
        assert len(image) == DISK_MIB * MIB
        assert image[:start] == disk_vm.host_data[:start], "data before the write changed"
        assert image[end:] == disk_vm.host_data[end:], "data after the write changed"


# ====================================================================== NICs

NIC_KINDS = {
    "virtio-net": {
        "device": "virtio-net-pci,id=net1,netdev=n1",
        "pci": ("0x1af4", "0x1000"),     # transitional virtio-net
        "driver": "virtio-pci",
        "irq_rx": r"virtio\d+-input\.\d+",
        "irq_name": r"virtio\d+-(input\.\d+|output\.\d+|config)",
        "vectors": 3,
        "intx_name": r"virtio",
    },
    "e1000e": {
        "device": "e1000e,id=net1,netdev=n1",
        "pci": ("0x8086", "0x10d3"),
        "driver": "e1000e",
        "irq_rx": r"eth0-rx-\d+",
        "irq_name": r"eth0(-rx-\d+|-tx-\d+)?",
        "vectors": 3,                    # rx, tx, other
        "intx_name": r"eth0",
    },
}

NIC_CONFIGS = [
    ("virtio-net", "pc", "inproc", None),
    ("virtio-net", "pc", "proxy", "fd"),
    ("e1000e", "pc", "inproc", None),
    ("e1000e", "pc", "proxy", "socket"),
]

UPLOAD_BYTES = 384 * 1024
DOWNLOAD_BYTES = 256 * 1024
GUEST_IP = "10.0.2.15"
HOST_ALIAS = "10.0.2.2"     # slirp's address for the host's loopback


def nic_id(cfg):
    kind, machine, mode, transport = cfg
    return f"{kind}-{machine}-{config_id(mode, transport)}"


class LoopbackPeer:
    """A one-connection TCP server on 127.0.0.1: receives exactly `expect` bytes,
    then sends `reply` and closes.  Everything it saw is in self.result."""

    def __init__(self, expect, reply, timeout=90):
        self.expect, self.reply, self.timeout = expect, reply, timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(timeout)
        self.port = self.sock.getsockname()[1]
        self.result = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, peer = self.sock.accept()
            self.result["peer"] = peer
            with conn:
                conn.settimeout(self.timeout)
                got = bytearray()
                while len(got) < self.expect:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                self.result["received"] = bytes(got)
                if len(got) == self.expect:
                    conn.sendall(self.reply)
                    self.result["sent"] = True
        except OSError as exc:
            self.result["error"] = repr(exc)

    def finish(self, timeout=30):
        self.thread.join(timeout)
        self.sock.close()
        return not self.thread.is_alive()


@pytest.fixture(scope="class", params=NIC_CONFIGS, ids=[nic_id(c) for c in NIC_CONFIGS])
def nic_vm(request):
    kind, machine, mode, transport = request.param
    spec = NIC_KINDS[kind]
    args = ["-netdev", "user,id=n1", "-device", spec["device"]]
    vm = start_or_fail(topology(mode, machine, transport, nic_id(request.param), args, "net1"))
    vm.spec = spec
    yield vm
    vm.close()
    vm.cleanup()


class TestNic:
    def test_pci_identity_and_driver(self, nic_vm):
        bdfs = nic_vm.pci_functions(*nic_vm.spec["pci"])
        assert len(bdfs) == 1, f"expected one {':'.join(nic_vm.spec['pci'])} function: {bdfs}"
        assert nic_vm.pci_driver(bdfs[0]) == nic_vm.spec["driver"]
        # eth0 is this function's interface (virtio: through the virtio device).
        path = nic_vm.shell.check("readlink -f /sys/class/net/eth0/device")
        assert f"/{bdfs[0]}/" in path.strip() + "/", f"eth0 is {path!r}, not on {bdfs[0]}"

    def test_interrupts_are_msix(self, nic_vm):
        bdf = nic_vm.pci_functions(*nic_vm.spec["pci"])[0]
        # Bringing the link up makes the drivers request all their vectors.
        nic_vm.shell.check("ip link set eth0 up")
        check_msix(nic_vm, bdf, nic_vm.spec)

    def test_tcp_both_ways_with_host_loopback(self, nic_vm):
        """The guest sends a payload to a server on the host's 127.0.0.1 and gets one back;
        both sides check what arrived against the sender's checksum."""
        shell = nic_vm.shell
        shell.check(f"ip link set eth0 up && ip addr add {GUEST_IP}/24 dev eth0 && "
                    f"ip route add default via {HOST_ALIAS}")
        reply = os.urandom(DOWNLOAD_BYTES)
        rx_before = sum(c for c, _ in driver_vectors(nic_vm, nic_vm.spec["irq_rx"]).values())
        peer = LoopbackPeer(UPLOAD_BYTES, reply)
        try:
            out = shell.check(
                f"dd if=/dev/urandom of=/tmp/up bs=1024 count={UPLOAD_BYTES // 1024} "
                "2>/dev/null && sha256sum /tmp/up && "
                f"timeout 60 nc {HOST_ALIAS} {peer.port} </tmp/up >/tmp/down; "
                "echo nc-status=$?; sha256sum /tmp/down; wc -c </tmp/down", timeout=120)
        finally:
            finished = peer.finish()
        assert finished, "the host server thread did not finish"
        assert "error" not in peer.result, f"host server: {peer.result['error']}"
        assert peer.result.get("peer", ("?",))[0] == "127.0.0.1", \
            f"connection came from {peer.result.get('peer')}, not from the host's loopback"

        up = re.search(r"\b([0-9a-f]{64})\s+/tmp/up", out)
        assert up, f"no checksum of the guest's payload in {out!r}"
        received = peer.result.get("received", b"")
        assert len(received) == UPLOAD_BYTES, f"host received {len(received)} bytes"
        assert sha256(received) == up.group(1), "host received other bytes than the guest sent"

        assert "nc-status=0" in out, f"guest nc failed: {out!r}"
        down = re.search(r"\b([0-9a-f]{64})\s+/tmp/down", out)
        assert down and down.group(1) == sha256(reply), \
            f"guest received other bytes than the host sent: {out!r}"
        assert out.split()[-1] == str(DOWNLOAD_BYTES)

        rx_after = sum(c for c, _ in driver_vectors(nic_vm, nic_vm.spec["irq_rx"]).values())
        assert rx_after > rx_before, "no receive interrupt during the transfer"

    def test_poweroff_ends_every_process(self, nic_vm):
        check_poweroff(nic_vm)
