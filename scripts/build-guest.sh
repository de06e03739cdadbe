#!/bin/bash
# Builds the test guest: a Debian 6.1 kernel and a busybox initramfs.
#
# The result is cached outside the work tree, in ${MPQEMU_CACHE:-~/.cache/mpqemu}/guest/:
#   vmlinuz             the kernel
#   initramfs.cpio.gz   busybox, the driver modules below, /init and the benchmark helper
# It is rebuilt only when this script, the guest helper sources (bench/guest/) or the
# host's busybox binary change (a hash stamp records them). The paths are printed last,
# as "KERNEL=<path>" and "INITRD=<path>".
#
# The guest's /init mounts proc/sys/devtmpfs, installs the busybox applets, loads the
# modules (with the "<module>.<param>=<value>" words of the kernel command line), prints "MPQEMU-GUEST-READY" on the serial console and then runs an interactive
# shell on it (prompt "guest# ").
#
# Environment:
#   MPQEMU_CACHE              cache root (default ~/.cache/mpqemu)
#   MPQEMU_GUEST_KERNEL_PKG   use this kernel package instead of the newest
#                             linux-image-6.1.0-<N>-amd64 of the archive
#
# SPDX-License-Identifier: GPL-2.0-or-later
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MPQEMU_CACHE:-$HOME/.cache/mpqemu}
OUT=$CACHE/guest
DEBS=$CACHE/debs
KERNEL_OUT=$OUT/vmlinuz
INITRD_OUT=$OUT/initramfs.cpio.gz
STAMP=$OUT/stamp

# Top-level modules the guest loads; their dependencies come from modules.dep.
MODULES=(
    sd_mod sym53c8xx           # LSI53C895A (sym53c8xx_2 driver) + SCSI disks
    nvme                       # NVMe
    virtio_pci virtio_blk      # virtio block
    virtio_net                 # virtio network
    e1000 e1000e               # Intel NICs
)

log() { echo "build-guest: $*" >&2; }

print_paths() {
    echo "KERNEL=$KERNEL_OUT"
    echo "INITRD=$INITRD_OUT"
}

# Everything the image is made from, apart from the kernel package (which is cached
# in $DEBS and recorded in the stamp).
input_hash() {
    {
        sha256sum "$TOP/scripts/build-guest.sh"
        find "$TOP/bench/guest" -type f -print0 2>/dev/null | sort -z | xargs -0r sha256sum
        [ -e /bin/busybox ] && sha256sum /bin/busybox
        echo "kernel-override=${MPQEMU_GUEST_KERNEL_PKG:-}"
    } | sed "s|$TOP/||" | sha256sum | cut -d' ' -f1
}

want=$(input_hash)
if [ -f "$STAMP" ] && [ -f "$KERNEL_OUT" ] && [ -f "$INITRD_OUT" ] &&
   [ "$(head -n1 "$STAMP")" = "$want" ]; then
    print_paths
    exit 0
fi

# ---------------------------------------------------------------- host tools
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
need=()
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/include/stdio.h ] || need+=(libc6-dev)
command -v dpkg-deb >/dev/null || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q >&2
    $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >&2
    want=$(input_hash)   # busybox may just have been installed
fi

# ---------------------------------------------------------------- kernel package
mkdir -p "$OUT" "$DEBS"

newest_kernel_pkg() {
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null |
        cut -d' ' -f1 | sort -V | tail -n1
}

# Fetches package $1 into $DEBS unless a .deb of it is already there; prints its path.
fetch_deb() {
    local pkg=$1 deb
    deb=$(ls -1 "$DEBS/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$deb" ]; then
        log "downloading $pkg"
        (cd "$DEBS" && apt-get download "$pkg" >&2) || return 1
        deb=$(ls -1 "$DEBS/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)
    fi
    [ -n "$deb" ] && echo "$deb"
}

if [ -n "${MPQEMU_GUEST_KERNEL_PKG:-}" ]; then
    kpkg=$MPQEMU_GUEST_KERNEL_PKG
else
    # Prefer a kernel already cached, so that a rebuild does not depend on the archive.
    kpkg=$(ls -1 "$DEBS" 2>/dev/null | sed -n 's/^\(linux-image-6\.1\.0-[0-9]*-amd64\)_.*\.deb$/\1/p' |
           sort -V | tail -n1 || true)
    if [ -z "$kpkg" ]; then
        kpkg=$(newest_kernel_pkg)
        if [ -z "$kpkg" ]; then
            log "no linux-image-6.1.0-*-amd64 in the apt lists; running apt-get update"
            $SUDO apt-get update -q >&2
            kpkg=$(newest_kernel_pkg)
        fi
    fi
fi
[ -n "$kpkg" ] || { log "cannot find a linux-image-6.1.0-<N>-amd64 package"; exit 1; }
if ! kdeb=$(fetch_deb "$kpkg"); then
    log "download of $kpkg failed; refreshing the apt lists and retrying"
    $SUDO apt-get update -q >&2
    [ -z "${MPQEMU_GUEST_KERNEL_PKG:-}" ] && kpkg=$(newest_kernel_pkg)
    kdeb=$(fetch_deb "$kpkg")
fi
log "kernel package: $(basename "$kdeb")"

# ---------------------------------------------------------------- staging
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mpqemu-guest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
dpkg-deb -x "$kdeb" "$WORK/kpkg"
kver=$(ls -1 "$WORK/kpkg/lib/modules" | head -n1)
[ -n "$kver" ] && [ -f "$WORK/kpkg/boot/vmlinuz-$kver" ] ||
    { log "unexpected layout in $kdeb"; exit 1; }
KMOD=$WORK/kpkg/lib/modules/$kver
# The package ships no modules.dep (depmod runs at install time); make one.
busybox depmod -b "$WORK/kpkg" "$kver"

# Module name -> path relative to $KMOD (names use '_' and '-' interchangeably).
declare -A MODPATH DEPS
while IFS= read -r line; do
    mod=${line%%:*}
    name=$(basename "$mod"); name=${name%%.ko*}; name=${name//-/_}
    MODPATH[$name]=$mod
    deps=${line#*:}
    DEPS[$mod]=$deps
done < "$KMOD/modules.dep"

is_builtin() {
    grep -q "/${1}.ko\$" "$KMOD/modules.builtin" 2>/dev/null ||
        grep -q "/${1//_/-}.ko\$" "$KMOD/modules.builtin" 2>/dev/null
}

# Depth-first: a module's dependencies are loaded before it.
declare -A SEEN
ORDER=()
visit() {
    local mod=$1 dep
    [ -n "${SEEN[$mod]:-}" ] && return 0
    SEEN[$mod]=1
    for dep in ${DEPS[$mod]:-}; do
        visit "$dep"
    done
    ORDER+=("$mod")
}
for m in "${MODULES[@]}"; do
    key=${m//-/_}
    if [ -n "${MODPATH[$key]:-}" ]; then
        visit "${MODPATH[$key]}"
    elif is_builtin "$key"; then
        log "$m is built into the kernel"
    else
        log "module $m not found in $kver"
        exit 1
    fi
done

ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,lib/modules/"$kver"}
cp /bin/busybox "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$ROOT/dev/null" c 1 3 2>/dev/null || true

: > "$ROOT/etc/mpqemu-modules"
for mod in "${ORDER[@]}"; do
    src=$KMOD/$mod
    dst_rel=${mod%.xz}; dst_rel=${dst_rel%.zst}; dst_rel=${dst_rel%.gz}
    mkdir -p "$ROOT/lib/modules/$kver/$(dirname "$dst_rel")"
    case $mod in
        *.ko.xz)  xz -dc "$src" > "$ROOT/lib/modules/$kver/$dst_rel" ;;
        *.ko.zst) zstd -qdc "$src" > "$ROOT/lib/modules/$kver/$dst_rel" ;;
        *.ko.gz)  gzip -dc "$src" > "$ROOT/lib/modules/$kver/$dst_rel" ;;
        *)        cp "$src" "$ROOT/lib/modules/$kver/$dst_rel" ;;
    esac
    echo "$dst_rel" >> "$ROOT/etc/mpqemu-modules"
done
log "modules: $(sed 's|.*/||; s|\.ko$||' "$ROOT/etc/mpqemu-modules" | tr '\n' ' ')"

# Guest helpers (benchmark).
for src in "$TOP"/bench/guest/*.c; do
    [ -e "$src" ] || continue
    gcc -static -O2 -Wall -o "$ROOT/usr/bin/$(basename "$src" .c)" "$src"
done

cat > "$ROOT/init" <<'INIT'
#!/bin/sh
# mpqemu test guest init (generated by scripts/build-guest.sh)
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
exec </dev/console >/dev/console 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
kver=$(uname -r)
# Like modprobe, pass "<module>.<param>=<value>" words of the kernel command line
# to the module (e.g. sym53c8xx.settle=0).
cmdline=$(cat /proc/cmdline)
while read -r mod; do
    name=$(basename "$mod" .ko | tr - _)
    params=
    for word in $cmdline; do
        case $word in
            "$name".*=*) params="$params ${word#"$name".}" ;;
        esac
    done
    insmod "/lib/modules/$kver/$mod" $params || echo "init: insmod $mod failed"
done < /etc/mpqemu-modules
hostname guest
echo "MPQEMU-GUEST-READY (uptime $(cut -d' ' -f1 /proc/uptime) s)"
export PS1='guest# '
cd /root
while true; do
    setsid cttyhack sh -i
done
INIT
chmod 755 "$ROOT/init"

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --quiet --owner 0:0 --reproducible) | gzip -6n > "$WORK/initramfs.cpio.gz"
cp "$WORK/kpkg/boot/vmlinuz-$kver" "$WORK/vmlinuz"
mv -f "$WORK/vmlinuz" "$KERNEL_OUT"
mv -f "$WORK/initramfs.cpio.gz" "$INITRD_OUT"
{ echo "$want"; echo "kernel=$kver"; echo "package=$(basename "$kdeb")"; } > "$STAMP"
log "built guest for kernel $kver in $OUT"
print_paths
