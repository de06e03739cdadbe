#!/bin/bash
# Installs the Debian packages mpqemu needs to build, test and benchmark.
# Idempotent: does nothing (and touches no network) when everything is already there.
# --fuzz adds what `make fuzz` needs (clang with libFuzzer and the sanitizers),
# --profile what `make bench-profile` counts system calls with (perf).
# SPDX-License-Identifier: GPL-2.0-or-later
set -euo pipefail

BACKPORTS_LIST=/etc/apt/sources.list.d/mpqemu-bookworm-backports.sources

# Packages from bookworm itself.
PKGS=(
    build-essential pkg-config ninja-build ccache flex bison python3-venv
    libglib2.0-dev libpixman-1-dev libfdt-dev libslirp-dev zlib1g-dev
    libseccomp-dev xz-utils dpkg-dev
    seabios ipxe-qemu
    busybox-static cpio python3-pytest
)
if [ "${1:-}" = --fuzz ]; then
    PKGS+=(clang libclang-rt-dev)
elif [ "${1:-}" = --profile ]; then
    PKGS+=(linux-perf)
fi
# Packages that must come from bookworm-backports (meson >= 1.5 for QEMU 10;
# QEMU 10.0.2's own option ROMs, e.g. linuxboot_dma.bin for -kernel, which
# the +ds tarball leaves out, from the package built from the same source).
BPO_PKGS=(meson python3-pycotap qemu-system-data)

missing=()
for p in "${PKGS[@]}" "${BPO_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        missing+=("$p")
    fi
done
meson_ok=false
if command -v meson >/dev/null 2>&1 &&
   dpkg --compare-versions "$(meson --version 2>/dev/null || echo 0)" ge 1.5; then
    meson_ok=true
fi
# (bookworm's own qemu-system-data is 7.2: its option ROMs are not QEMU 10's)
roms_ok=false
if dpkg --compare-versions "$(dpkg-query -W -f='${Version}' qemu-system-data 2>/dev/null ||
                               echo 0)" ge 1:10.0; then
    roms_ok=true
fi

if [ -f "$BACKPORTS_LIST" ] && [ ${#missing[@]} -eq 0 ] && $meson_ok && $roms_ok; then
    exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi

if [ ! -f "$BACKPORTS_LIST" ]; then
    echo "install-deps: adding bookworm-backports (deb and deb-src) to apt sources"
    $SUDO tee "$BACKPORTS_LIST" >/dev/null <<'SRC'
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

echo "install-deps: installing ${missing[*]:-meson and qemu-system-data from bookworm-backports}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${PKGS[@]}"
$SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports "${BPO_PKGS[@]}"
