#!/bin/bash
# `make bench`: LSI53C895A MMIO/PIO read latency and sequential direct-read
# throughput, in-process vs proxied, measured in the guest and printed as a table
# (see scripts/mpqemu-bench.py; arguments are passed on, e.g. --reps 5).
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
