#!/bin/bash
# Puts the pinned QEMU source tarball in the cache (outside the work tree) and prints its path.
# Falls back, loudly, to the newest 10.0.x the archive offers if the pinned version is gone.
# SPDX-License-Identifier: GPL-2.0-or-later
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/qemu/pin"
cache=${MPQEMU_CACHE:-$HOME/.cache/mpqemu}
mkdir -p "$cache"

if [ -f "$cache/$QEMU_TARBALL" ] &&
   echo "$QEMU_SHA256  $cache/$QEMU_TARBALL" | sha256sum -c --status; then
    echo "$cache/$QEMU_TARBALL"
    exit 0
fi

cd "$cache"
if apt-get source --download-only "qemu=$QEMU_DEB_VERSION" >&2 ||
   [ -f "$QEMU_TARBALL" ]; then
    if echo "$QEMU_SHA256  $QEMU_TARBALL" | sha256sum -c --status; then
        echo "$cache/$QEMU_TARBALL"
        exit 0
    fi
    echo "fetch-qemu: checksum mismatch for $QEMU_TARBALL" >&2
    exit 1
fi

# The pinned version left the archive: take the newest 10.0.x there is.
newest=$(apt-cache showsrc qemu | sed -n 's/^Version: //p' |
         grep -E '^1:10\.0\.' | sort -V | tail -n 1)
if [ -z "$newest" ]; then
    echo "fetch-qemu: neither $QEMU_DEB_VERSION nor any 10.0.x is in the archive" >&2
    exit 1
fi
echo "fetch-qemu: WARNING: pinned QEMU $QEMU_DEB_VERSION is gone;" \
     "falling back to $newest (unverified checksum)" >&2
apt-get source --download-only "qemu=$newest" >&2
upstream=${newest#1:}
upstream=${upstream%%-*}
echo "$cache/qemu_${upstream}.orig.tar.xz"
