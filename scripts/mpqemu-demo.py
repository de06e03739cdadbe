#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""mpqemu demo: an LSI53C895A SCSI controller served by a separate QEMU process.

Starts the remote QEMU (the controller and its disk) and the main QEMU (the
guest, with x-pci-proxy-dev), lets the guest find the disk, write a pattern
and read it back, checks the image on the host after shutdown, and tells what
happened.  Exits non-zero if anything did not match.  Run by scripts/demo.sh.
"""

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(REPO, "tests", "functional"),
                os.path.join(REPO, "build", "qemu-src", "python")]

from mpqemu_vm import MIB, VM, VMError, file_sha256, make_disk  # noqa: E402

DISK_MIB = 64
OFFSET_MIB = 16
LENGTH_MIB = 4


def say(text=""):
    print(text, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=("socket", "fd", "inproc"), default="socket",
                        help="connect the two QEMUs by a socket path (default) or by a "
                             "socketpair passed as file descriptors; 'inproc' runs the "
                             "controller inside the main QEMU instead, for comparison")
    parser.add_argument("--machine", default="pc", choices=("pc", "q35"))
    args = parser.parse_args()

    problems = []

    def check(ok, what):
        say(f"    {'ok' if ok else 'MISMATCH'}: {what}")
        if not ok:
            problems.append(what)

    with tempfile.TemporaryDirectory(prefix="mpq-demo-") as tmp:
        disk = os.path.join(tmp, "disk.img")
        make_disk(disk, DISK_MIB, seed=2024)
        say("mpqemu demo: LSI53C895A SCSI controller in its own QEMU process")
        say(f"  disk image on the host: {disk} ({DISK_MIB} MiB, pseudo-random content)")

        mode = "inproc" if args.transport == "inproc" else f"proxy-{args.transport}"
        vm = VM(mode, args.machine, disk, name="demo", workdir=tmp)
        t0 = time.monotonic()
        try:
            vm.start()
            boot = time.monotonic() - t0
            pids = vm.pids()
            if vm.remote is not None:
                link = (f"socket {os.path.join(tmp, 'remote.sock')}"
                        if args.transport == "socket" else "a socketpair (one fd per process)")
                say(f"  remote QEMU (runs the LSI53C895A + disk): pid {pids['remote']}")
                say(f"  main QEMU (runs the guest, -machine {args.machine}): pid {pids['main']}")
                say(f"  connected through {link}")
            else:
                say(f"  single QEMU (guest and LSI53C895A, -machine {args.machine}): "
                    f"pid {pids['main']} (in-process, for comparison)")
            say(f"  guest booted to its shell in {boot:.1f} s")

            bdfs = vm.lsi_pci_functions()
            if len(bdfs) != 1:
                raise VMError(f"guest sees {len(bdfs)} PCI functions 1000:0012, expected 1")
            bdf = bdfs[0]
            driver = vm.shell.check(
                f"basename $(readlink /sys/bus/pci/devices/{bdf}/driver)").split()[-1]
            dev = vm.lsi_disk()
            sectors = int(vm.shell.check(f"cat /sys/block/{dev}/size").split()[0])
            say(f"  guest sees PCI device {bdf} [1000:0012] (LSI53C895A), "
                f"driver {driver}, disk /dev/{dev} ({sectors * 512 // MIB} MiB)")
            check(driver == "sym53c8xx", "sym53c8xx drives the controller")

            host_sum = file_sha256(disk, 0, OFFSET_MIB * MIB)
            guest_sum = vm.guest_sha256(dev, 0, OFFSET_MIB)
            say(f"  first {OFFSET_MIB} MiB, host-made pattern:")
            say(f"    sha256 on the host:           {host_sum}")
            say(f"    sha256 read by the guest:     {guest_sum}")
            check(host_sum == guest_sum, "guest reads what the host wrote")

            out = vm.shell.check(
                f"dd if=/dev/urandom of=/tmp/pat bs=1M count={LENGTH_MIB} 2>/dev/null && "
                f"sha256sum /tmp/pat && dd if=/tmp/pat of=/dev/{dev} bs=1M "
                f"seek={OFFSET_MIB} oflag=direct conv=fsync 2>/dev/null && sync")
            written = out.split("/tmp/pat")[0].split()[-1]
            read_back = vm.guest_sha256(dev, OFFSET_MIB, LENGTH_MIB)
            say(f"  guest writes {LENGTH_MIB} MiB of random data at {OFFSET_MIB} MiB "
                "(O_DIRECT) and reads it back:")
            say(f"    sha256 written by the guest:  {written}")
            say(f"    sha256 read back (O_DIRECT):  {read_back}")
            check(written == read_back, "guest reads back what it wrote")

            rc = vm.poweroff()
            if vm.remote is not None:
                remote_rc = vm.remote.proc.returncode
                how = (f"was stopped by signal {-remote_rc}" if remote_rc < 0
                       else f"exited with {remote_rc}")
                say(f"  guest powered off: main QEMU exited with {rc}, remote QEMU {how}")
            else:
                say(f"  guest powered off: QEMU exited with {rc}")
            check(rc == 0, "main QEMU exited cleanly")
            on_host = file_sha256(disk, OFFSET_MIB * MIB, LENGTH_MIB * MIB)
            say(f"    sha256 in the image on the host: {on_host}")
            check(on_host == written, "the guest's write reached the image file")
        except Exception as exc:  # pylint: disable=broad-except
            vm.close()
            vm.dump_logs(sys.stdout)
            say(f"DEMO FAILED: {exc}")
            return 1
        finally:
            vm.close()

    if problems:
        say(f"DEMO FAILED: {len(problems)} check(s) did not hold: {'; '.join(problems)}")
        return 1
    say("DEMO OK: every checksum matched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
