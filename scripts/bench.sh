#!/bin/bash
# `make bench`: lsi53c895a (+scsi-hd), nvme and virtio-blk-pci side by side, one VM
# per device and column, all in this one run: in-process; proxied through the
# shared-memory ring (x-pci-proxy-dev defaults); proxied over the socket only
# (ring=off); and "upstream", Debian's qemu-system-x86 from bookworm-backports
# (/usr/bin/qemu-system-x86_64, installed if missing) with upstream's own
# x-pci-proxy-dev, which is only tried for a few seconds under TCG (it needs KVM)
# and otherwise reported as not running, with the reason.
# Per device: MMIO read and write latency (and the LSI's PIO read latency), config
# space read latency, sequential direct-read MB/s, 4 KiB random-read IOPS at queue
# depth 1 and 16, host CPU seconds of main + remote QEMU over the run and over
# idle windows (the median of 3); ratios to in-process next to the task's targets (met / NOT met).
# See scripts/mpqemu-bench.py; arguments are passed on, e.g. --quick for a short
# run (about 4 minutes), --reps 5, --devices nvme,virtio-blk, --transport fd,
# --idle-seconds 20, --no-upstream, --pin (each VM's vCPU thread on one CPU, all
# its other threads and its remote process on another, in every column).
# Not part of `make check`. Exits non-zero if a configuration of ours could not be
# measured (upstream not running is expected and is not a failure).
#
# SPDX-License-Identifier: GPL-2.0-or-later
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MPQEMU_QEMU=${MPQEMU_QEMU:-$TOP/build/qemu-system-x86_64}
export PYTHONPATH=$TOP/build/qemu-src/python:$TOP/tests/functional${PYTHONPATH:+:$PYTHONPATH}

if [ ! -x "$MPQEMU_QEMU" ]; then
    echo "bench: $MPQEMU_QEMU not found; run 'make qemu' first (or set MPQEMU_QEMU)" >&2
    exit 1
fi
# The host's cross-CPU round trip, printed with the figures: the floor under
# every proxied access, and it changes with where the host runs our CPUs.
xcpu=$TOP/build/xcpu-rtt
if [ ! -x "$xcpu" ] || [ "$TOP/bench/host/xcpu-rtt.c" -nt "$xcpu" ]; then
    cc -O2 -pthread -o "$xcpu" "$TOP/bench/host/xcpu-rtt.c" || xcpu=
fi
export MPQEMU_XCPU_RTT=$xcpu
guest=$("$TOP/scripts/build-guest.sh")
export MPQEMU_KERNEL MPQEMU_INITRD
MPQEMU_KERNEL=$(sed -n 's/^KERNEL=//p' <<< "$guest")
MPQEMU_INITRD=$(sed -n 's/^INITRD=//p' <<< "$guest")

# --io-profile: per-thread CPU, sleeps and system calls per I/O instead
script=mpqemu-bench.py
if [ "${1:-}" = "--io-profile" ]; then
    shift
    script=mpqemu-io-profile.py
fi
exec /usr/bin/python3 "$TOP/scripts/$script" "$@"
