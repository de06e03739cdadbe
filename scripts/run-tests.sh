#!/bin/bash
# Runs the mpqemu test suite (`make check`): every pytest file under tests/.
#   tests/functional/   boots guests with in-process and proxied devices
#   tests/*.py          e.g. the wrapper that runs the C qtests (tests/qtest/)
# Extra arguments go to pytest, e.g. `scripts/run-tests.sh -k inproc`.
# Exits non-zero when a test fails (or when none ran).
#
# Environment: MPQEMU_QEMU (default build/qemu-system-x86_64), MPQEMU_CACHE,
# MPQEMU_QBUILD (the build tree whose C qtests run; default build/qemu-build).
#
# SPDX-License-Identifier: GPL-2.0-or-later
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$TOP"

export MPQEMU_QEMU=${MPQEMU_QEMU:-$TOP/build/qemu-system-x86_64}
export PYTHONPATH=$TOP/build/qemu-src/python:$TOP/tests/functional${PYTHONPATH:+:$PYTHONPATH}
# Python's own output unbuffered, so a hang shows where it is.
export PYTHONUNBUFFERED=1

if [ ! -x "$MPQEMU_QEMU" ]; then
    echo "run-tests: $MPQEMU_QEMU not found; run 'make qemu' first (or set MPQEMU_QEMU)" >&2
    exit 1
fi

# Build (or find cached) the guest image up front, so that its output is not
# mixed into the first test; the tests find it through the same script.
guest=$(scripts/build-guest.sh)
export MPQEMU_KERNEL MPQEMU_INITRD
MPQEMU_KERNEL=$(sed -n 's/^KERNEL=//p' <<< "$guest")
MPQEMU_INITRD=$(sed -n 's/^INITRD=//p' <<< "$guest")

echo "run-tests: QEMU $MPQEMU_QEMU"
echo "run-tests: guest $MPQEMU_KERNEL $MPQEMU_INITRD"

# /usr/bin/python3 on purpose: Debian's python3-pytest is installed for it.
# -rfE lists failures and errors again right above pytest's summary line.
# Ending with pytest's own exit status (0 only when tests ran and all passed).
# Test paths among the arguments replace the default of the whole tree.
targets=(tests/)
for arg in "$@"; do
    case $arg in
        -*) ;;
        *) targets=() ;;
    esac
done
exec /usr/bin/python3 -m pytest -v -rfE -p no:cacheprovider "${targets[@]}" "$@"
