#!/bin/bash
# `make demo`: a guest uses an LSI53C895A SCSI controller that runs in a
# separate QEMU process (see scripts/mpqemu-demo.py). Exits non-zero on any mismatch.
# Arguments go to mpqemu-demo.py (--transport socket|fd, --machine pc|q35).
#
# SPDX-License-Identifier: GPL-2.0-or-later
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MPQEMU_QEMU=${MPQEMU_QEMU:-$TOP/build/qemu-system-x86_64}
export PYTHONPATH=$TOP/build/qemu-src/python:$TOP/tests/functional${PYTHONPATH:+:$PYTHONPATH}

if [ ! -x "$MPQEMU_QEMU" ]; then
    echo "demo: $MPQEMU_QEMU not found; run 'make qemu' first (or set MPQEMU_QEMU)" >&2
    exit 1
fi
guest=$("$TOP/scripts/build-guest.sh")
export MPQEMU_KERNEL MPQEMU_INITRD
MPQEMU_KERNEL=$(sed -n 's/^KERNEL=//p' <<< "$guest")
MPQEMU_INITRD=$(sed -n 's/^INITRD=//p' <<< "$guest")

exec /usr/bin/python3 "$TOP/scripts/mpqemu-demo.py" "$@"
