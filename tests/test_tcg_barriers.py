# A guest with one vCPU still gets a full memory barrier from each atomic
# instruction (qemu/patches/0006): virtio's handshakes with a device rely on it.
# SPDX-License-Identifier: GPL-2.0-or-later
#
# With one vCPU, TCG emits an atomic instruction as a plain load and store.
# Linux's smp_mb() on x86 is a locked add, smp_store_mb() an xchg and its
# spinlocks a locked cmpxchg: without a host barrier around them the guest's
# store of virtio's "used event" can pass its next load of the used index,
# the device misses that the guest wants an interrupt, and the guest waits
# for its disk forever. The test runs those three instructions as the first
# code a machine executes and reads TCG's optimized ops for them.

import os
import re
import subprocess
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
QEMU = os.environ.get("MPQEMU_QEMU", str(TOP / "build" / "qemu-system-x86_64"))

# Real-mode code at 0xff00 of the BIOS segment; the reset vector jumps there.
GUEST_CODE = bytes.fromhex(
    "f0 66 83 06 00 70 00"      # lock add dword [0x7000], 0
    "66 87 06 04 70"            # xchg [0x7004], eax
    "f0 66 0f b1 0e 08 70"      # lock cmpxchg [0x7008], ecx
    "b0 00 e6 f4"               # mov al, 0; out 0xf4, al (isa-debug-exit)
    "f4 eb fd")                 # hlt; jmp back to the hlt
CODE_OFFSET = 0xff00
RESET_VECTOR = 0xfff0
DEBUG_EXIT_PORT = 0xf4


def bios_image(path):
    rom = bytearray(b"\xf4" * 0x10000)      # hlt everywhere else
    rom[CODE_OFFSET:CODE_OFFSET + len(GUEST_CODE)] = GUEST_CODE
    jump = CODE_OFFSET - (RESET_VECTOR + 3)
    rom[RESET_VECTOR:RESET_VECTOR + 3] = b"\xe9" + (jump & 0xffff).to_bytes(2, "little")
    path.write_bytes(rom)


def memory_ops_of_first_block(log):
    """The barriers, loads and stores of the block that starts at CODE_OFFSET."""
    ops, inside = [], False
    for line in log.splitlines():
        if line.startswith("OP after optimization"):
            if inside:
                break
            continue
        start = re.match(r"\s*---- ([0-9a-f]+) ", line)
        if start:
            inside = inside or int(start.group(1), 16) == CODE_OFFSET & 0xfff
            continue
        if not inside:
            continue
        op = line.split()[0] if line.split() else ""
        if op == "mb":
            ops.append("mb")
        elif op.startswith("qemu_ld"):
            ops.append("ld")
        elif op.startswith("qemu_st"):
            ops.append("st")
    return ops


def test_atomic_instructions_are_barriers(tmp_path):
    bios = tmp_path / "bios.bin"
    log = tmp_path / "tcg.log"
    bios_image(bios)
    proc = subprocess.run(
        [QEMU, "-machine", "pc", "-accel", "tcg", "-smp", "1", "-display", "none",
         "-nodefaults", "-bios", str(bios),
         "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=1",
         "-d", "op_opt", "-D", str(log)],
        capture_output=True, text=True, timeout=60)
    # isa-debug-exit makes the guest's 0 the exit status 1
    assert proc.returncode == 1, f"the guest code did not run to its end: {proc.stderr}"
    ops = memory_ops_of_first_block(log.read_text())
    # each atomic a load and a store, with a full barrier before and after
    # (the optimizer merges a barrier that ends one with the next's first)
    assert ops == ["mb", "ld", "st", "mb", "ld", "st", "mb", "ld", "st", "mb"], \
        f"TCG ops for lock add, xchg, lock cmpxchg: {ops}"
