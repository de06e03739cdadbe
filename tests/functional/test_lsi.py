# SPDX-License-Identifier: GPL-2.0-or-later
"""The LSI53C895A SCSI controller, in-process and proxied, as a guest sees it.

Every configuration boots one guest (class-scoped fixture) and checks, in order:
the PCI ID, the bound driver, a host-made pattern read back with O_DIRECT, 16
threads reading at random at once (the controller disconnects and reselects, and
interrupts rise and fall while the guest reads its registers) with none stuck
(a stuck one turns on the trace of the process that runs the LSI, so that the
failure shows what the controller did as the guest tried to recover),
nothing for the guest's SCSI layer to complain about and the SCRIPTS processor
never paused, and a guest-written pattern found in the image file after the VM
has shut down.
"""

import json
import os
import re
import socket
import threading

import pytest

from mpqemu_vm import MIB, MODES, VM, file_sha256, make_disk

DISK_MIB = 64
WRITE_OFFSET_MIB = 40
WRITE_MIB = 4
# Random reads in 16 threads for this long; a read that gets stuck is only
# timed out by the guest's SCSI layer after 30 s.
CONCURRENT_JOBS = 16
CONCURRENT_SECONDS = 5
STUCK_SECONDS = 20
# QEMU's LSI stops a SCRIPTS run after 500 instructions and resumes it 500 µs
# later (a guard against SCRIPTS that spin). Linux's never need that many per
# run, in-process; proxied, they must not either (posted SIGP writes that
# piled up used to trip it over and over, at a third of the speed).
SCRIPTS_PAUSED = "lsi_scripts_timer_start"
# A read stuck for STUCK_SECONDS turns these traces on in the process that
# runs the LSI (through a QMP monitor of its own), so that the guest's
# recovery (abort, device reset, bus reset) shows which requests the
# controller still held: a request it lost and one the guest lost differ.
DEVICE_TRACES = ("lsi_*", "scsi_req_*")
DEVICE_MONITOR = "device-qmp.sock"
# Trace lines shown with a stuck read: everything but register accesses and
# the SCRIPTS instructions themselves.
TRACE_NOISE = re.compile(
    r"(^|:)(lsi_reg_(read|write)|lsi_execute_script(_tc_\w+|_mm_\w+|_io_opcode|_io_clear)?) ")

CONFIGS = [(mode, machine) for mode in MODES for machine in ("pc", "q35")]


@pytest.fixture(scope="class", params=CONFIGS, ids=[f"{m}-{mach}" for m, mach in CONFIGS])
def lsi_vm(request, tmp_path_factory):
    mode, machine = request.param
    workdir = tmp_path_factory.mktemp(f"lsi-{mode}-{machine}")
    disk = os.path.join(workdir, "disk.img")
    # A different pattern per configuration, so that no run can see another's data.
    seed = 0x15a1 + CONFIGS.index(request.param)
    data = make_disk(disk, DISK_MIB, seed)
    trace = ["-trace", SCRIPTS_PAUSED]
    monitor = os.path.join(workdir, DEVICE_MONITOR)
    device_monitor = ["-qmp", f"unix:{monitor},server=on,wait=off"]
    inproc = mode == "inproc"
    vm = VM(mode, machine, disk, extra_main_args=trace + (device_monitor if inproc else []),
            extra_remote_args=trace + ([] if inproc else device_monitor))
    error = None
    try:
        vm.start()
    except Exception as exc:  # pylint: disable=broad-except
        vm.close()
        error = f"{mode}/{machine} VM did not come up: {exc}\n{vm.logs(tail=3000)}"
        vm.cleanup()
    if error:
        pytest.fail(error, pytrace=False)
    vm.host_data = data
    vm.device_monitor = monitor
    yield vm
    vm.close()
    vm.cleanup()
    os.unlink(disk)


class TestLSI:
    def test_guest_sees_lsi53c895a(self, lsi_vm):
        """Exactly one PCI function with vendor 0x1000, device 0x0012."""
        bdfs = lsi_vm.lsi_pci_functions()
        assert len(bdfs) == 1, f"expected one 1000:0012 function, found {bdfs}"

    def test_sym53c8xx_driver_bound(self, lsi_vm):
        bdf = lsi_vm.lsi_pci_functions()[0]
        out = lsi_vm.shell.check(f"basename $(readlink /sys/bus/pci/devices/{bdf}/driver); "
                                 "ls /sys/bus/pci/drivers/sym53c8xx/")
        lines = out.split()
        assert lines and lines[0] == "sym53c8xx", f"driver of {bdf}: {out!r}"
        assert bdf in lines[1:], f"{bdf} not listed in /sys/bus/pci/drivers/sym53c8xx/: {out!r}"

    def test_host_pattern_reads_back(self, lsi_vm):
        dev = lsi_vm.lsi_disk()
        sectors = int(lsi_vm.shell.check(f"cat /sys/block/{dev}/size").split()[0])
        assert sectors * 512 == DISK_MIB * MIB
        # The pattern the host generated (not whatever the image holds now).
        host = file_sha256_bytes(lsi_vm.host_data)
        assert lsi_vm.guest_sha256(dev, 0, DISK_MIB) == host

    def test_concurrent_reads(self, lsi_vm):
        dev = lsi_vm.lsi_disk()
        log_before = lsi_vm.shell.check("dmesg | wc -l").split()[-1]
        device_process = lsi_vm.remote or lsi_vm.main
        output_before = len(device_process.output())
        tracer = threading.Timer(STUCK_SECONDS, trace_device, [lsi_vm.device_monitor])
        tracer.start()
        try:
            out = lsi_vm.shell.check(
                f"randread -t {CONCURRENT_SECONDS} -b 4096 -s 1 -j {CONCURRENT_JOBS} /dev/{dev}",
                timeout=120)
        finally:
            tracer.cancel()
            tracer.join()
        fields = dict(re.findall(r"(\w+)=(\S+)", out))
        new_log = lsi_vm.shell.check(f"dmesg | tail -n +{int(log_before) + 1}")
        assert int(fields["jobs"]) == CONCURRENT_JOBS
        assert int(fields["ios"]) > CONCURRENT_JOBS, out
        # Every thread finished in time: none waited for a lost interrupt.
        # (The guest's log says whether its SCSI layer timed a command out;
        # the device's trace, what the controller did about it.)
        assert int(fields["elapsed_ns"]) < STUCK_SECONDS * 10**9, \
            f"{out}\n{new_log}\n{device_trace(device_process.output()[output_before:])}"
        assert not re.search(r"abort|reset|timeout|error", new_log, re.I), new_log
        # The controller kept up: its SCRIPTS were never paused.
        paused = device_process.output().count(SCRIPTS_PAUSED)
        assert paused == 0, f"SCRIPTS paused {paused} times for 500 µs ({out.strip()})"
        # Still consistent afterwards.
        assert lsi_vm.guest_sha256(dev, 0, 8) == file_sha256_bytes(lsi_vm.host_data[:8 * MIB])

    def test_guest_write_persists(self, lsi_vm):
        dev = lsi_vm.lsi_disk()
        out = lsi_vm.shell.check(
            f"dd if=/dev/urandom of=/tmp/pat bs=1M count={WRITE_MIB} 2>/dev/null && "
            f"sha256sum /tmp/pat && "
            f"dd if=/tmp/pat of=/dev/{dev} bs=1M seek={WRITE_OFFSET_MIB} oflag=direct "
            f"conv=fsync && sync")
        written = out.split("/tmp/pat")[0].split()[-1]
        assert len(written) == 64
        region = (WRITE_OFFSET_MIB * MIB, (WRITE_OFFSET_MIB + WRITE_MIB) * MIB)
        original = lsi_vm.host_data[region[0]:region[1]]
        assert written != file_sha256_bytes(original), "guest pattern equals the original data"
        # The guest reads its own write back from the device.
        assert lsi_vm.guest_sha256(dev, WRITE_OFFSET_MIB, WRITE_MIB) == written

        assert lsi_vm.poweroff() == 0, "main QEMU did not exit cleanly after guest poweroff"

        # On the host: the range holds the guest's pattern, the rest is untouched.
        assert file_sha256(lsi_vm.disk, region[0], WRITE_MIB * MIB) == written
        with open(lsi_vm.disk, "rb") as f:
            image = f.read()
        assert len(image) == DISK_MIB * MIB
        assert image[:region[0]] == lsi_vm.host_data[:region[0]]
        assert image[region[1]:] == lsi_vm.host_data[region[1]:]


def trace_device(monitor_path):
    """Turn DEVICE_TRACES on through the QMP monitor at monitor_path."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(monitor_path)
        stream = sock.makefile("rw")
        stream.readline()  # the greeting
        commands = [{"execute": "qmp_capabilities"}]
        commands += [{"execute": "trace-event-set-state",
                      "arguments": {"name": name, "enable": True}} for name in DEVICE_TRACES]
        for command in commands:
            stream.write(json.dumps(command) + "\n")
            stream.flush()
            while True:
                reply = json.loads(stream.readline())
                if "return" in reply or "error" in reply:
                    break
            assert "return" in reply, f"{command}: {reply}"


def device_trace(output, lines=300):
    """What the LSI's process traced once a read was stuck, less the noise."""
    trace = [line for line in output.splitlines() if not TRACE_NOISE.search(line)]
    if not trace:
        return "(the device process traced nothing)"
    return "device trace:\n" + "\n".join(trace[-lines:])


def file_sha256_bytes(data):
    import hashlib  # pylint: disable=import-outside-toplevel
    return hashlib.sha256(data).hexdigest()
