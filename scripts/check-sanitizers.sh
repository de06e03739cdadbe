#!/bin/bash
# Builds QEMU a second time with AddressSanitizer and UndefinedBehaviorSanitizer
# and runs the whole mpqemu test suite against that build (`make check-sanitizers`).
#
# The sanitized build lives in build/qemu-build-san, configured from the same
# source tree (build/qemu-src) with qemu/configure-options plus
# --enable-asan --enable-ubsan. Any sanitizer report ends the process that
# made it (halt_on_error), so the test that started that process fails.
#
#   scripts/check-sanitizers.sh             configure if needed, build, test
#   scripts/check-sanitizers.sh --build     configure if needed and build only
#   scripts/check-sanitizers.sh -- ARGS     extra arguments for run-tests.sh
#
# Environment: MPQEMU_SAN_LEAKS=0 turns LeakSanitizer off (default on, with
# the suppressions in scripts/lsan-suppressions.txt).
#
# SPDX-License-Identifier: GPL-2.0-or-later
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$TOP"

QSRC=$TOP/build/qemu-src
SBUILD=$TOP/build/qemu-build-san
FIRMWARE_DIRS=(/usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu)

build_only=false
run_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --build) build_only=true ;;
        --) shift; run_args=("$@"); break ;;
        *) echo "check-sanitizers: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if [ ! -f "$TOP/build/.src-stamp" ]; then
    echo "check-sanitizers: no QEMU source tree; run 'make qemu' first" >&2
    exit 1
fi

# Reconfigure when the options changed (or configure never finished)
options=$(grep -v '^#' qemu/configure-options; echo --enable-asan; echo --enable-ubsan)
if [ ! -f "$SBUILD/.configure-stamp" ] ||
   [ "$(cat "$SBUILD/.configure-stamp")" != "$options" ]; then
    rm -rf "$SBUILD"
    mkdir -p "$SBUILD"
    # shellcheck disable=SC2086 # one option a line, none with spaces
    (cd "$SBUILD" && "$QSRC/configure" $options)
    printf '%s' "$options" > "$SBUILD/.configure-stamp"
fi

start=$(date +%s)
ninja -C "$SBUILD" qemu-system-x86_64 modules mpqemu-tests
echo "check-sanitizers: build took $(( $(date +%s) - start )) s"
for d in "${FIRMWARE_DIRS[@]}"; do
    mkdir -p "$SBUILD/qemu-bundle$(dirname "$d")"
    ln -sfn "$d" "$SBUILD/qemu-bundle$d"
done
if $build_only; then
    exit 0
fi

# A report aborts the process that made it; the test that ran it fails.
# QEMU's own qtest harness sets ASAN_OPTIONS too; ours are complete.
# fast_unwind_on_malloc=0: glib has no frame pointers, and without it a leak's
# stack ends in g_realloc, where no suppression can recognise it.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=${MPQEMU_SAN_LEAKS:-1}:print_summary=1:fast_unwind_on_malloc=0"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$TOP/scripts/lsan-suppressions.txt:print_suppressions=0"
export MPQEMU_QEMU=$SBUILD/qemu-system-x86_64
export MPQEMU_QBUILD=$SBUILD

start=$(date +%s)
status=0
scripts/run-tests.sh "${run_args[@]}" || status=$?
echo "check-sanitizers: tests took $(( $(date +%s) - start )) s (exit $status)"
exit $status
