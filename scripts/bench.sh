#!/bin/bash
# `make bench`: for lsi53c895a (+scsi-hd), nvme and virtio-blk-pci, each in-process
# and proxied (one boot each, all in this one run): MMIO read latency (and the LSI's
# PIO read latency), sequential direct-read MB/s and 4 KiB random-read IOPS at queue
# depth 1, measured in the guest and printed as one table with proxied/in-process
# ratios (see scripts/mpqemu-bench.py; arguments are passed on, e.g. --quick for a
# short run, --reps 5, --devices nvme,virtio-blk, --transport fd).
# Not part of `make check`. Exits non-zero if a configuration could not be measured.
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
guest=$("$TOP/scripts/build-guest.sh")
export MPQEMU_KERNEL MPQEMU_INITRD
MPQEMU_KERNEL=$(sed -n 's/^KERNEL=//p' <<< "$guest")
MPQEMU_INITRD=$(sed -n 's/^INITRD=//p' <<< "$guest")

exec /usr/bin/python3 "$TOP/scripts/mpqemu-bench.py" "$@"
