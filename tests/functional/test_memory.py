# SPDX-License-Identifier: GPL-2.0-or-later
"""Guest memory maps as a proxied NVMe controller sees them.

The proxy follows the guest memory map and sends the remote every shared RAM
section; the remote maps each one at its guest-physical address, and the NVMe
device there does its DMA into them.  These tests build memory maps that are
more than one block of low RAM and check, from both ends, that the remote
follows them:

  * the remote's own trace (remote_memory_section / remote_memory_commit) says
    which sections it mapped;
  * the NVMe device's trace (pci_nvme_map_addr, also in the remote) says at
    which guest-physical addresses the guest asked it to transfer data, so a
    test knows that its DMA really went into the memory it is about testing
    (above 4 GiB, into a DIMM, into a section sent in a later message);
  * the data the guest reads with O_DIRECT must be the host's pattern, and the
    data the guest writes must end up in the image file.

A remote that had not mapped a section cannot complete a transfer into it (it
traces remote_dma_refused and the command fails), so a correct checksum of a
transfer that the device trace places in that section proves the mapping.

Each test boots its own VM (one main QEMU, one remote with the NVMe) and stops
every process it started, whatever happens.
"""

import contextlib
import hashlib
import os
import re
import time
import zlib

import pytest

from mpqemu_topology import Remote, Topology
from mpqemu_vm import BASE_APPEND, MIB, VMError, file_sha256, make_disk

GIB = 1024 * MIB
FOUR_GIB = 4 * GIB

DISK_MIB = 64
READ_MIB = 32           # read with a single O_DIRECT buffer of this size
WRITE_OFFSET_MIB = 40
WRITE_MIB = 4
DEV = "nvme0n1"

# Traces every test enables in the remote.
REMOTE_TRACES = ("remote_memory_section", "remote_memory_commit", "remote_dma_refused",
                 "pci_nvme_map_addr")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def disk(request, tmp_path):
    """(path, data) of a raw image with a pattern of its own for each test."""
    path = str(tmp_path / "disk.img")
    data = make_disk(path, DISK_MIB, seed=zlib.crc32(request.node.name.encode()))
    yield path, data
    os.unlink(path)


# ====================================================================== VMs

class MemoryVM(Topology):
    """A main QEMU whose guest RAM is a memfd of any size, plus one remote NVMe.

    ram:      size of the base RAM ("5G", "512M")
    ram_opts: more -m options, e.g. "slots=4,maxmem=4G"
    """

    def __init__(self, name, machine, image, ram, ram_opts="", main_args=(), append="",
                 workdir=None, remote_traces=()):
        self.image = image
        self.ram = ram
        self.ram_opts = ram_opts
        remote_args = ["-drive", f"id=d1,file={image},format=raw,if=none",
                       "-device", "nvme,id=nvme1,serial=mpq1,drive=d1"]
        for event in REMOTE_TRACES + tuple(remote_traces):
            remote_args += ["-trace", event]
        self.nvme_remote = Remote("r1", remote_args, ["nvme1"], transport="socket")
        super().__init__([self.nvme_remote], mode="proxy", machine=machine,
                         main_args=main_args, append=append, name=name, workdir=workdir)

    def main_command(self, device_args, serial_path, qmp_path):
        mem = self.ram + (f",{self.ram_opts}" if self.ram_opts else "")
        return ([self.qemu, "-accel", "tcg", "-machine", f"{self.machine},memory-backend=mem",
                 "-object", f"memory-backend-memfd,id=mem,size={self.ram}", "-m", mem]
                + device_args
                + ["-kernel", self.kernel, "-initrd", self.initrd,
                   "-append", f"{BASE_APPEND} {self.append}".strip(),
                   "-nodefaults", "-display", "none", "-no-reboot",
                   "-chardev", f"socket,id=ser0,path={serial_path}",
                   "-serial", "chardev:ser0",
                   "-qmp", f"unix:{qmp_path}"]
                + self.extra_main_args)

    # ------------------------------------------------------------ remote trace
    def trace_mark(self):
        """Position in the remote's log; pass it to trace() for what came after."""
        return len(self.nvme_remote.child.output())

    def trace(self, since=0):
        return self.nvme_remote.child.output()[since:]

    # ------------------------------------------------------------ guest
    def wait_for_nvme(self):
        self.wait_for_path(f"/dev/{DEV}", 60)
        sectors = int(self.shell.check(f"cat /sys/block/{DEV}/size").split()[0])
        assert sectors * 512 == DISK_MIB * MIB, f"{DEV} has {sectors} sectors"

    def read_sha256(self, offset_mib, length_mib, timeout=120):
        """sha256 of a disk range, read with O_DIRECT into one buffer of length_mib."""
        out = self.shell.check(
            f"dd if=/dev/{DEV} iflag=direct bs={length_mib}M skip={offset_mib // length_mib} "
            "count=1 2>/dev/null | sha256sum", timeout=timeout)
        m = re.search(r"\b([0-9a-f]{64})\b", out)
        if not m:
            raise VMError(f"no sha256 in guest output: {out!r}")
        return m.group(1)

    def mem_total_kib(self):
        out = self.shell.check("grep MemTotal /proc/meminfo")
        return int(out.split()[1])


@contextlib.contextmanager
def running(vm):
    """Boot vm; stop every process of it afterwards, printing its logs on failure."""
    try:
        vm.start()
        yield vm
    except BaseException:
        vm.close()
        vm.dump_logs()
        raise
    finally:
        vm.close()
        vm.cleanup()


# ====================================================================== traces

SECTION_RE = re.compile(
    r"remote_memory_section (\S+) gpa 0x([0-9a-f]+) size 0x([0-9a-f]+) offset 0x([0-9a-f]+)")
COMMIT_RE = re.compile(r"remote_memory_commit (\S+): (\d+) sections")
DMA_RE = re.compile(r"pci_nvme_map_addr addr 0x([0-9a-f]+) len (\d+)")
REFUSED_RE = re.compile(r"remote_dma_refused .*")
MAP_MSG_RE = re.compile(r"mpqemu_msg_recv fd \d+ MEMORY_MAP .* fds (\d+)")


class Section:
    def __init__(self, gpa, size, offset):
        self.gpa, self.size, self.offset = gpa, size, offset

    @property
    def end(self):
        return self.gpa + self.size

    def __repr__(self):
        return f"<gpa {self.gpa:#x} size {self.size:#x} offset {self.offset:#x}>"


class CommittedMap:
    """One map the remote switched to: its sections, in the order they came."""

    def __init__(self, count, sections, messages):
        self.count = count            # what remote_memory_commit reported
        self.sections = sections
        self.messages = messages      # [fds of each MEMORY_MAP message], if traced

    def find(self, gpa):
        return next((s for s in self.sections if s.gpa == gpa), None)

    def index_of(self, addr):
        """Index (in the order sent) of the section holding addr, or None."""
        return next((i for i, s in enumerate(self.sections) if s.gpa <= addr < s.end), None)

    def __repr__(self):
        return f"<map of {self.count} sections: {self.sections}>"


def committed_maps(text):
    """Every map the remote committed, oldest first.

    The sections traced since the previous commit belong to a commit; a map
    whose count differs from the sections traced for it is a broken map, which
    the tests report (check_map).
    """
    maps, pending, messages = [], [], []
    for line in text.splitlines():
        m = SECTION_RE.search(line)
        if m:
            pending.append(Section(*(int(x, 16) for x in m.group(2, 3, 4))))
            continue
        m = MAP_MSG_RE.search(line)
        if m:
            messages.append(int(m.group(1)))
            continue
        m = COMMIT_RE.search(line)
        if m:
            maps.append(CommittedMap(int(m.group(2)), pending, messages))
            pending, messages = [], []
    return maps


def current_map(vm):
    """The map the remote has in force now (the last one it committed)."""
    maps = committed_maps(vm.trace())
    assert maps, "the remote traced no committed memory map"
    return check_map(maps[-1])


def check_map(cmap):
    """The committed map is whole and consistent; returns it."""
    assert cmap.count == len(cmap.sections), \
        f"the remote committed {cmap.count} sections but traced {len(cmap.sections)}: {cmap}"
    ordered = sorted(cmap.sections, key=lambda s: s.gpa)
    for a, b in zip(ordered, ordered[1:]):
        assert a.end <= b.gpa, f"sections {a} and {b} overlap in {cmap}"
    return cmap


def dma_ranges(text):
    """[(guest-physical address, length)] of the NVMe's data transfers."""
    return [(int(a, 16), int(n)) for a, n in DMA_RE.findall(text)]


def bytes_within(ranges, lo, hi):
    """How many bytes of the transfers fall inside [lo, hi)."""
    return sum(max(0, min(a + n, hi) - max(a, lo)) for a, n in ranges)


def check_dma_in_map(ranges, cmap):
    """Every transfer lies in one section of the map; and none was refused."""
    assert ranges, "the NVMe traced no data transfer"
    for addr, length in ranges:
        i = cmap.index_of(addr)
        assert i is not None and addr + length <= cmap.sections[i].end, \
            f"NVMe transfer at {addr:#x}+{length:#x} is not inside one shared section of {cmap}"


def check_no_refused_dma(vm):
    refused = REFUSED_RE.findall(vm.trace())
    assert not refused, f"the remote refused DMA: {refused[:5]}"


# ====================================================================== 1. RAM above 4 GiB

# Where QEMU splits 5 GiB of RAM: the part below 4 GiB ends at 3 GiB on pc
# (i440fx) and at 2 GiB on q35; the rest is mapped from 4 GiB up.
LOWMEM = {"pc": 3 * GIB, "q35": 2 * GIB}
SPLIT_RAM = 5 * GIB


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_ram_above_4g(machine, disk, tmp_path):
    """5 GiB of guest RAM: the remote maps both parts, and DMA above 4 GiB works.

    What this guarantees: the remote maps the RAM above 4 GiB at 0x100000000,
    backed by the right part of the memfd; and the NVMe moves data both ways
    between the disk and guest pages above 4 GiB.  The latter is not left to
    chance nor assumed: Linux gives user pages from ZONE_NORMAL (here: all RAM
    above 4 GiB) before it falls back to ZONE_DMA32, so dd's O_DIRECT buffer is
    there without any trick; the NVMe's own trace of the addresses it is asked
    to transfer to proves it, and the test fails if the guest put the buffer
    below 4 GiB.
    """
    image, data = disk
    vm = MemoryVM(f"ram5g-{machine}", machine, image, "5G", workdir=str(tmp_path))
    with running(vm):
        lowmem = LOWMEM[machine]
        cmap = current_map(vm)
        high = cmap.find(FOUR_GIB)
        assert high is not None, f"no section at 4 GiB in the remote's map {cmap}"
        assert (high.size, high.offset) == (SPLIT_RAM - lowmem, lowmem), \
            f"RAM above 4 GiB is mapped as {high}, expected size {SPLIT_RAM - lowmem:#x} " \
            f"at memfd offset {lowmem:#x}"
        low = [s for s in cmap.sections if s.gpa < FOUR_GIB]
        assert low, f"no RAM below 4 GiB in {cmap}"
        for s in low:
            # Identity mapped from the start of the memfd, up to the split.
            assert s.offset == s.gpa and s.end <= lowmem, f"low RAM section {s} in {cmap}"
        # Below 4 GiB only the legacy VGA/BIOS window below 1 MiB may be missing.
        covered = bytes_within([(s.gpa, s.size) for s in low], MIB, lowmem)
        assert covered == lowmem - MIB, \
            f"RAM between 1 MiB and {lowmem:#x} is not all mapped: {cmap}"
        assert [s for s in cmap.sections if s not in low] == [high], f"unexpected sections: {cmap}"

        assert vm.mem_total_kib() * 1024 > SPLIT_RAM - 256 * MIB
        vm.wait_for_nvme()

        # Disk -> memory above 4 GiB.
        mark = vm.trace_mark()
        assert vm.read_sha256(0, READ_MIB) == sha256(data[:READ_MIB * MIB])
        reads = dma_ranges(vm.trace(mark))
        check_dma_in_map(reads, cmap)
        above = bytes_within(reads, FOUR_GIB, high.end)
        assert above == READ_MIB * MIB, \
            f"only {above} of {READ_MIB} MiB read by DMA went above 4 GiB: {reads[:20]}"

        # Memory above 4 GiB -> disk.
        mark = vm.trace_mark()
        written = vm.write_random(DEV, WRITE_OFFSET_MIB, WRITE_MIB)
        start, end = WRITE_OFFSET_MIB * MIB, (WRITE_OFFSET_MIB + WRITE_MIB) * MIB
        assert written != sha256(data[start:end])
        writes = dma_ranges(vm.trace(mark))
        check_dma_in_map(writes, cmap)
        above = bytes_within(writes, FOUR_GIB, high.end)
        assert above >= WRITE_MIB * MIB, \
            f"only {above} bytes of the {WRITE_MIB} MiB written by DMA came from above 4 GiB"
        check_no_refused_dma(vm)

        assert vm.poweroff() == 0, "main QEMU did not exit cleanly after guest poweroff"
        assert file_sha256(image, start, WRITE_MIB * MIB) == written
        with open(image, "rb") as f:
            image_data = f.read()
        assert image_data[:start] == data[:start] and image_data[end:] == data[end:], \
            "the guest's write changed the image outside the written range"


# ====================================================================== helpers: DIMMs

def memory_devices(vm):
    """{id: (addr, size)} of the DIMMs, from QMP query-memory-devices."""
    devs = {}
    for dev in vm.qmp_cmd("query-memory-devices"):
        if dev.get("type") == "dimm":
            d = dev["data"]
            devs[d["id"]] = (d["addr"], d["size"])
    return devs


def online_movable(vm, addr, size, timeout=30):
    """Online the guest's memory blocks of [addr, addr + size) into ZONE_MOVABLE.

    Waits (bounded) for the guest to have added the blocks (ACPI memory
    hotplug), then writes 'online_movable' to each one that is still offline.
    """
    block = int(vm.shell.check("cat /sys/devices/system/memory/block_size_bytes").split()[0], 16)
    assert addr % block == 0 and size % block == 0, \
        f"DIMM at {addr:#x} size {size:#x} is not made of {block:#x}-byte memory blocks"
    first, last = addr // block, (addr + size) // block - 1
    for n in range(first, last + 1):
        vm.wait_for_path(f"/sys/devices/system/memory/memory{n}/state", timeout)
    vm.shell.check(
        f"n={first}; while [ $n -le {last} ]; do f=/sys/devices/system/memory/memory$n/state; "
        "grep -q '^online' $f || echo online_movable > $f || exit 1; n=$((n+1)); done")
    # An online block's valid_zones is the zone it is in.
    states = vm.shell.check(
        f"n={first}; while [ $n -le {last} ]; do cd /sys/devices/system/memory/memory$n; "
        "echo $(cat state valid_zones); n=$((n+1)); done; cd /root").splitlines()
    states = [line.strip() for line in states if line.strip()]
    assert states == ["online Movable"] * (last - first + 1), f"memory block states: {states}"


# ====================================================================== 2. many sections

DIMMS = 8
DIMM_MIB = 128
SECTIONS_PER_MESSAGE = 8


def test_map_of_more_than_8_sections(disk, tmp_path):
    """A map of more sections than one message carries arrives whole.

    q35, 512 MiB of base RAM (itself several sections below 1 MiB once the BIOS
    has shadowed itself) and 8 cold-plugged 128 MiB DIMMs, each its own memfd:
    at least 9 sections, sent in several MEMORY_MAP messages.  The guest onlines
    only the DIMMs that come after the first 8 sections, so the NVMe's DMA goes
    into sections that only the second or later message carried (Linux takes
    user pages from ZONE_MOVABLE first; the NVMe's trace shows where they are).
    """
    image, data = disk
    main_args = []
    for i in range(DIMMS):
        main_args += ["-object", f"memory-backend-memfd,id=m{i},size={DIMM_MIB}M",
                      "-device", f"pc-dimm,id=dimm{i},memdev=m{i}"]
    vm = MemoryVM("sections-q35", "q35", image, "512M",
                  ram_opts=f"slots={DIMMS},maxmem={512 + DIMMS * DIMM_MIB}M",
                  main_args=main_args, workdir=str(tmp_path),
                  remote_traces=("mpqemu_msg_recv",))
    with running(vm):
        dimms = memory_devices(vm)
        assert len(dimms) == DIMMS, f"query-memory-devices: {dimms}"
        cmap = current_map(vm)
        assert cmap.count > SECTIONS_PER_MESSAGE, f"only {cmap.count} sections: {cmap}"
        for dev_id, (addr, size) in dimms.items():
            s = cmap.find(addr)
            assert s is not None and (s.size, s.offset) == (size, 0), \
                f"{dev_id} at {addr:#x} size {size:#x} is not a whole section of {cmap}"
        # The map came in as many messages as it needs, each as full as it can be.
        parts = -(-cmap.count // SECTIONS_PER_MESSAGE)
        full = SECTIONS_PER_MESSAGE * (parts - 1)
        expected = [SECTIONS_PER_MESSAGE] * (parts - 1) + [cmap.count - full]
        assert cmap.messages == expected, \
            f"the {cmap.count}-section map arrived as messages of {cmap.messages} sections"

        late = {d: (a, s) for d, (a, s) in dimms.items()
                if cmap.index_of(a) >= SECTIONS_PER_MESSAGE}
        assert late, f"no DIMM among the sections after the first {SECTIONS_PER_MESSAGE}: {cmap}"
        for addr, size in late.values():
            online_movable(vm, addr, size)
        vm.wait_for_nvme()

        mark = vm.trace_mark()
        assert vm.read_sha256(0, READ_MIB) == sha256(data[:READ_MIB * MIB])
        reads = dma_ranges(vm.trace(mark))
        check_dma_in_map(reads, cmap)
        in_late = sum(bytes_within(reads, a, a + s) for a, s in late.values())
        assert in_late == READ_MIB * MIB, \
            f"only {in_late} bytes of the {READ_MIB} MiB read went into the DIMMs " \
            f"{sorted(late)} (sections sent after the first message): {reads[:20]}"
        assert vm.read_sha256(READ_MIB, READ_MIB) == sha256(data[READ_MIB * MIB:])
        check_no_refused_dma(vm)


# ====================================================================== 3. hot-plugged memory

HOTPLUG_MIB = 1024


def test_hotplugged_dimm(disk, tmp_path):
    """RAM added while the guest runs is mapped by the remote and takes DMA.

    pc with 512 MiB of base RAM; a 1 GiB memfd DIMM is plugged through QMP.
    The remote must trace a new map that has the DIMM as a section at the
    address QMP reports.  The guest then onlines the DIMM into ZONE_MOVABLE,
    which Linux prefers for user pages, so dd's O_DIRECT buffer is in it; the
    NVMe's trace of the transfer addresses confirms that the reads and writes
    went into the DIMM.  If the remote had not followed the new memory, those
    transfers could not complete: the remote refuses DMA outside its map
    (remote_dma_refused), the NVMe fails the command, and dd fails or the
    checksums differ.
    """
    image, data = disk
    vm = MemoryVM("hotplug-pc", "pc", image, "512M", ram_opts="slots=4,maxmem=4G",
                  workdir=str(tmp_path))
    with running(vm):
        before = current_map(vm)
        assert all(s.end <= FOUR_GIB for s in before.sections), f"map before hotplug: {before}"
        mem_before = vm.mem_total_kib()
        vm.wait_for_nvme()

        mark = vm.trace_mark()
        vm.qmp_cmd("object-add", **{"qom-type": "memory-backend-memfd", "id": "hp0",
                                    "size": HOTPLUG_MIB * MIB})
        vm.qmp_cmd("device_add", driver="pc-dimm", id="hpdimm0", memdev="hp0")
        addr, size = memory_devices(vm)["hpdimm0"]
        assert size == HOTPLUG_MIB * MIB

        # The proxy sends the new map from the memory transaction that maps the
        # DIMM, i.e. before device_add returns; allow the log a moment anyway.
        cmap = None
        for _ in range(50):
            maps = committed_maps(vm.trace(mark))
            if maps and maps[-1].find(addr):
                cmap = check_map(maps[-1])
                break
            time.sleep(0.1)
        assert cmap is not None, \
            f"the remote did not map the DIMM at {addr:#x}: maps since device_add " \
            f"{committed_maps(vm.trace(mark))}"
        new = cmap.find(addr)
        assert (new.size, new.offset) == (size, 0), f"DIMM mapped as {new}"
        old = {(s.gpa, s.size, s.offset) for s in before.sections}
        kept = {(s.gpa, s.size, s.offset) for s in cmap.sections if s is not new}
        assert kept == old, f"the rest of the map changed: {before} -> {cmap}"

        online_movable(vm, addr, size)
        assert vm.mem_total_kib() - mem_before == size // 1024

        mark = vm.trace_mark()
        assert vm.read_sha256(0, READ_MIB) == sha256(data[:READ_MIB * MIB])
        reads = dma_ranges(vm.trace(mark))
        check_dma_in_map(reads, cmap)
        in_dimm = bytes_within(reads, addr, addr + size)
        assert in_dimm == READ_MIB * MIB, \
            f"only {in_dimm} bytes of the {READ_MIB} MiB read went into the DIMM: {reads[:20]}"

        mark = vm.trace_mark()
        written = vm.write_random(DEV, WRITE_OFFSET_MIB, WRITE_MIB)
        writes = dma_ranges(vm.trace(mark))
        check_dma_in_map(writes, cmap)
        assert bytes_within(writes, addr, addr + size) >= WRITE_MIB * MIB, \
            f"the {WRITE_MIB} MiB written did not come from the DIMM: {writes[:20]}"
        check_no_refused_dma(vm)

        assert vm.poweroff() == 0, "main QEMU did not exit cleanly after guest poweroff"
        start = WRITE_OFFSET_MIB * MIB
        assert file_sha256(image, start, WRITE_MIB * MIB) == written
