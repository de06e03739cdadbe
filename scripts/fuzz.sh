#!/bin/bash
# Builds the mpqemu fuzz targets (fuzz/) with clang's libFuzzer, ASan and
# UBSan into build/fuzz, and runs each for a bounded time (`make fuzz`).
#
#   scripts/fuzz.sh                  build, then run every target
#   scripts/fuzz.sh --build          build only
#   scripts/fuzz.sh TARGET...        build, then run these targets
#
# Environment:
#   FUZZ_SECONDS   how long each target runs (default 60)
#   FUZZ_JOBS      parallel libFuzzer workers per target (default 1)
#   FUZZ_REMOTE_QEMU  the QEMU that remote-process runs as its remote
#                  (default: the sanitizer build, else build/qemu-system-x86_64)
#
# The link/ sources, the two hw-proxy sources the proxy target exercises and
# the harnesses are compiled with clang; QEMU's utility library comes from
# the gcc build in build/qemu-build (copied, so that a rebuild there does not
# pull it from under a run). Crashes, the working corpus and logs go to
# build/fuzz/<target>/; the seed corpus in fuzz/corpus/ is only read.
#
# SPDX-License-Identifier: GPL-2.0-or-later
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$TOP"

QSRC=$TOP/build/qemu-src
QBUILD=$TOP/build/qemu-build
OUT=$TOP/build/fuzz
TARGETS=(proxy-link remote-link remote-process)
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_JOBS=${FUZZ_JOBS:-1}

build_only=false
run=()
for arg in "$@"; do
    case $arg in
        --build) build_only=true ;;
        proxy-link|remote-link|remote-process) run+=("$arg") ;;
        *) echo "fuzz: unknown argument $arg (targets: ${TARGETS[*]})" >&2
           exit 2 ;;
    esac
done
[ ${#run[@]} -gt 0 ] || run=("${TARGETS[@]}")

if ! command -v clang >/dev/null 2>&1; then
    scripts/install-deps.sh --fuzz
fi
if [ ! -f "$QBUILD/libqemuutil.a" ]; then
    echo "fuzz: $QBUILD/libqemuutil.a is missing; run 'make qemu' first" >&2
    exit 1
fi

mkdir -p "$OUT/obj"
# Snapshots of QEMU's utility and QOM libraries (meson's are thin archives
# of objects that ninja may be rewriting right now): real archives of copies
QLIBS=(libqemuutil.a libqom.a libevent-loop-base.a)
for lib in "${QLIBS[@]}"; do
    for try in 1 2 3 4 5; do
        rm -f "$OUT/obj/$lib.tmp"
        # meson keeps some static libraries only as their objects
        if members=$(cd "$QBUILD" && { ar t "$lib" 2>/dev/null ||
                                       ls "$lib.p"/*.o; }) &&
           (cd "$QBUILD" && ar rcs "$OUT/obj/$lib.tmp" $members); then
            mv "$OUT/obj/$lib.tmp" "$OUT/obj/$lib"
            break
        fi
        [ "$try" = 5 ] && { echo "fuzz: cannot copy $lib" >&2; exit 1; }
        sleep 10
    done
done

# QEMU's include flags for a module source (see compile_commands.json)
CFLAGS=(
    -m64 -std=gnu11 -g -O1 -fno-omit-frame-pointer
    -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
    -I"$QBUILD" -I"$QSRC" -I"$QSRC/include" -I"$TOP/include" -I"$QBUILD/qapi"
    -I"$QBUILD/trace" -I"$TOP/hw-proxy" -I"$TOP/fuzz"
    $(pkg-config --cflags glib-2.0)
    -isystem "$QSRC/linux-headers" -isystem "$QBUILD/linux-headers"
    -iquote "$QBUILD" -iquote "$QSRC" -iquote "$QSRC/include"
    -iquote "$QSRC/host/include/x86_64" -iquote "$QSRC/host/include/generic"
    -pthread -mcx16 -msse2 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64
    -D_LARGEFILE_SOURCE -fno-strict-aliasing -fno-common -fwrapv
    -Wall -Werror=implicit-function-declaration -Wno-missing-braces
)
LIBS=(
    -Wl,--start-group "${QLIBS[@]/#/$OUT/obj/}" -Wl,--end-group
    $(pkg-config --libs gio-2.0 gobject-2.0 glib-2.0 gmodule-2.0)
    -lgnutls -lrt -lm -pthread
)

compile() {     # compile SOURCE OBJECT
    clang "${CFLAGS[@]}" -c "$1" -o "$2"
}

objs() {        # objs NAME SOURCE... : compile, print the objects
    local name=$1 src o
    shift
    for src in "$@"; do
        o=$OUT/obj/$name-$(basename "${src%.c}").o
        compile "$src" "$o"
        echo "$o"
    done
}

build_target() {    # build_target NAME SOURCE...
    local name=$1 list
    shift
    echo "fuzz: building $name"
    list=$(objs "$name" "$@")
    # shellcheck disable=SC2086 # object paths have no spaces
    clang -fsanitize=fuzzer,address,undefined $list "${LIBS[@]}" \
        -o "$OUT/$name-fuzz"
}

LINK_SRC=(link/channel.c link/message.c fuzz/fuzz-input.c)
build_target proxy-link fuzz/proxy-link-fuzz.c "${LINK_SRC[@]}" \
    hw-proxy/proxy-rpc.c hw-proxy/proxy-ring.c hw-proxy/proxy-link-watch.c
build_target remote-link fuzz/remote-link-fuzz.c "${LINK_SRC[@]}"
build_target remote-process fuzz/remote-process-fuzz.c "${LINK_SRC[@]}"

if $build_only; then
    exit 0
fi

# A report stops the target and makes it exit non-zero with a crash file
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

# The remote that remote-process talks to: sanitized when there is one
if [ -z "${FUZZ_REMOTE_QEMU:-}" ]; then
    FUZZ_REMOTE_QEMU=$TOP/build/qemu-system-x86_64
    if [ -x "$TOP/build/qemu-build-san/qemu-system-x86_64" ]; then
        FUZZ_REMOTE_QEMU=$TOP/build/qemu-build-san/qemu-system-x86_64
    fi
fi
export FUZZ_REMOTE_QEMU FUZZ_REMOTE_DIR=$OUT/remote-process/remote

status=0
for t in "${run[@]}"; do
    dir=$OUT/$t
    mkdir -p "$dir/corpus" "$dir/crashes"
    echo "fuzz: running $t for ${FUZZ_SECONDS}s (corpus $dir/corpus," \
         "crashes in $dir/crashes)"
    extra=()
    if [ "$FUZZ_JOBS" -gt 1 ]; then
        extra=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
    fi
    # New inputs go to the working corpus; fuzz/corpus/$t seeds it.
    if ! (cd "$dir" && "$OUT/$t-fuzz" -max_total_time="$FUZZ_SECONDS" \
            -timeout=20 -rss_limit_mb=4096 -max_len=4096 -print_final_stats=1 \
            -artifact_prefix="$dir/crashes/" "${extra[@]}" \
            "$dir/corpus" "$TOP/fuzz/corpus/$t" 2>&1 | tee "$dir/last-run.log" |
            grep -E '^#[0-9]+.*(pulse|DONE)|ERROR|SUMMARY|Test unit written|stat::' ;
          exit "${PIPESTATUS[0]}"); then
        echo "fuzz: $t FAILED; see $dir/last-run.log and $dir/crashes/" >&2
        status=1
    fi
done
exit $status
