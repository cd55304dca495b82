#!/usr/bin/env bash
# Build (once, cached) a tiny bootable guest for the test rig: a Debian cloud
# kernel plus a busybox initramfs whose /init prints markers on the console.
#
# Usage: hack/build-guest.sh [--force]
#
# Output: ${VDC_CACHE:-$HOME/.cache/vdc}/guest/{vmlinuz,initrd.img,stamp}
# The output directory is printed on stdout; all logging goes to stderr.
#
# Environment:
#   VDC_CACHE          cache root (default: $HOME/.cache/vdc)
#   VDC_GUEST_MODULES  space-separated kernel modules to put into the initramfs
#                      and load at boot (default: "virtio_pci virtio_net virtio_balloon virtio_blk":
#                      a NIC, a balloon and disks)
#   VDC_GUEST_KERNEL_PKG  kernel meta package (default: linux-image-cloud-amd64)
#
# Guest kernel command line understood by /init:
#   vdc.hostname=NAME   hostname of the guest     -> prints VDC-GUEST-HOSTNAME=NAME
#   vdc.marker=XYZ      anything                  -> prints VDC-MARKER=XYZ
# With a NIC (eth0) the guest asks DHCP for an address first -> prints VDC-IP=A.B.C.D.
# Every boot prints VDC-BOOT-ID=<the kernel's random boot_id> (new on each
# boot: tells a reboot from a run that continued, e.g. across a live
# migration) and then, last, the line VDC-GUEST-READY. Use console=ttyS0.
# After that:
#   vdc.ping=IP         ping IP for up to vdc.pingwait seconds (default 60)
#                       -> prints VDC-PING-OK=IP or VDC-PING-FAIL=IP
#   vdc.counter=1       one second after VDC-GUEST-READY an empty line (ends
#                       the console shell's prompt line), then VDC-COUNT=1,
#                       VDC-COUNT=2, ... one a second (`sleep 1` each),
#                       forever: a gap shows a pause, a restart from 1 a reboot
#   vdc.diskwrite=TEXT  at boot, write the line VDC-DATA=TEXT at the start of
#                       the disk vdc.disk (default /dev/vda), synced
#   vdc.diskread=1      every 2 s, drop the page cache and print the disk's
#                       first line as VDC-DISK=<line>: what the disk holds now,
#                       wherever the guest runs (data written before a live
#                       migration reads back after it)
#   vdc.pinglog=IP      ping IP twice a second forever, each reply printed as
#                       VDC-PINGLOG <ping's line> (seq=N: gaps are lost packets)
#   vdc.watchdog=N      feed /dev/watchdog (timeout 5 s) for N seconds, printing
#                       VDC-WATCHDOG-FEEDING=N, then stop feeding without the
#                       magic close -> VDC-WATCHDOG-STOPPED: the device fires 5 s
#                       later (VDC-WATCHDOG-NONE when there is no /dev/watchdog).
#                       Needs a kernel with the i6300esb driver, which the cloud
#                       kernel lacks: VDC_GUEST_KERNEL_PKG=linux-image-amd64
#                       VDC_GUEST_MODULES="... i6300esb" (and another VDC_CACHE)
#   vdc.burn=N          right after VDC-GUEST-READY, start N busy loops in the
#                       background (each keeps one vCPU busy, forever: a
#                       measured CPU demand of ~N cores when the VM has N vCPUs
#                       or more) -> prints VDC-BURN=N (VDC-BURN-INVALID=N when N
#                       is not a whole number)
#   vdc.ioload=1        right after VDC-GUEST-READY, read the disk vdc.disk
#                       (default /dev/vda) 4 KiB at a time with O_DIRECT
#                       (busybox dd iflag=direct: no page cache, so every read
#                       is one request to QEMU), start to end, over and over,
#                       forever -> prints VDC-IOLOAD=1 (VDC-IOLOAD-NONE=<disk>
#                       when there is no such block device). Reads only: the
#                       disk's content stays as it is. QEMU's rd.reqs
#                       (`virsh domstats --block`) then grow as fast as the
#                       guest can ask (hundreds to thousands a second under
#                       TCG) unless throttled (`virsh blkdeviotune`)
set -euo pipefail

help() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
}

usage() {
    echo "Usage: hack/build-guest.sh [--force]   (--help for details)" >&2
    exit 2
}

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

FORCE=0
case "${1:-}" in
    "") ;;
    --force) FORCE=1 ;;
    -h|--help) help ;;
    *) log "unknown argument: $1"; usage ;;
esac
[ $# -le 1 ] || usage

CACHE_ROOT=${VDC_CACHE:-$HOME/.cache/vdc}
OUT=$CACHE_ROOT/guest
KERNEL_META=${VDC_GUEST_KERNEL_PKG:-linux-image-cloud-amd64}
MODULES=${VDC_GUEST_MODULES-virtio_pci virtio_net virtio_balloon virtio_blk}
BUSYBOX=/bin/busybox

# The stamp ties the cache to this recipe: the script's own content and the
# knobs above. Same stamp -> nothing to do.
STAMP="recipe=$(sha256sum "$0" | cut -c1-16) kernel=$KERNEL_META modules=${MODULES// /,}"

cached() {
    [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ -f "$OUT/stamp" ] &&
        [ "$(cat "$OUT/stamp")" = "$STAMP" ]
}

mkdir -p "$CACHE_ROOT"
if [ "$FORCE" = 0 ] && cached; then
    echo "$OUT"
    exit 0
fi

# Serialise concurrent builders (tests and the demo may start at once).
exec 9>"$CACHE_ROOT/.guest.lock"
flock 9
if [ "$FORCE" = 0 ] && cached; then
    echo "$OUT"
    exit 0
fi

for tool in apt-get apt-cache dpkg-deb cpio gzip; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found: apt-get install busybox-static"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is not static: apt-get install busybox-static"
fi

WORK=$(mktemp -d "$CACHE_ROOT/.guest-build.XXXXXX")
# apt-get download runs as _apt when that user can reach the target directory
# ($HOME may be private), so download into a world-readable temp dir.
DEBDIR=$(mktemp -d)
cleanup() { rm -rf "$WORK" "$DEBDIR"; }
trap cleanup EXIT
chmod 755 "$DEBDIR"

# ---------------------------------------------------------------- kernel --
resolve_kernel_pkg() {
    local pkg
    pkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        log "apt-cache knows no $KERNEL_META; running apt-get update"
        apt-get update >&2
        pkg=$(apt-cache depends "$KERNEL_META" |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
    fi
    [ -n "$pkg" ] || die "cannot resolve the kernel package behind $KERNEL_META"
    echo "$pkg"
}

KPKG=$(resolve_kernel_pkg)
log "downloading $KPKG"
mkdir -p "$WORK/kernel"
chown _apt "$DEBDIR" 2>/dev/null || chmod 777 "$DEBDIR"
(cd "$DEBDIR" && apt-get download "$KPKG" >&2)
dpkg-deb -x "$DEBDIR"/*.deb "$WORK/kernel"
VMLINUZ=$(find "$WORK/kernel/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
[ -n "$VMLINUZ" ] || die "no boot/vmlinuz-* in $KPKG"
KVER=${VMLINUZ##*/vmlinuz-}
log "kernel $KVER"

# ------------------------------------------------------------- initramfs --
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,lib/modules}
cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 755 "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
# A console node in case the kernel's built-in initramfs lacks one.
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true
echo "vdc-guest" >"$ROOT/etc/hostname"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"

# add_modules NAME...: copy modules (and their dependencies) from the kernel
# package into the initramfs and list them in /etc/vdc-modules for /init,
# which loads them with modprobe. busybox's depmod makes the modules.dep files.
add_modules() {
    local src=$WORK/kernel/lib/modules/$KVER dst=$ROOT/lib/modules/$KVER rel m queue deps seen=" "
    "$BUSYBOX" depmod -b "$WORK/kernel" "$KVER"
    queue=()
    for m in "$@"; do
        m=${m//-/_}
        if grep -Eq "/${m//_/[-_]}\.ko" "$src/modules.builtin"; then
            log "module $m is built into the kernel; skipping"
            continue
        fi
        rel=$(awk -F: -v m="$m" '{ n = $1; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); gsub(/-/, "_", n);
                                  if (n == m) { print $1; exit } }' "$src/modules.dep")
        [ -n "$rel" ] || die "module $m not found in $KPKG"
        queue+=("$rel")
        echo "$m" >>"$ROOT/etc/vdc-modules"
    done
    while [ ${#queue[@]} -gt 0 ]; do
        rel=${queue[0]}
        queue=("${queue[@]:1}")
        case "$seen" in *" $rel "*) continue ;; esac
        seen="$seen$rel "
        mkdir -p "$dst/$(dirname "$rel")"
        case "$rel" in
            *.ko.xz) xz -dc "$src/$rel" >"$dst/${rel%.xz}" ;;
            *.ko.zst) zstd -qdc "$src/$rel" >"$dst/${rel%.zst}" ;;
            *) cp "$src/$rel" "$dst/$rel" ;;
        esac
        read -r -a deps < <(awk -F': *' -v r="$rel" '$1 == r { print $2; exit }' "$src/modules.dep")
        queue+=("${deps[@]}")
    done
    cp "$src/modules.builtin" "$src/modules.order" "$dst/"
    "$BUSYBOX" depmod -b "$ROOT" "$KVER"
    log "modules: $* ($(find "$dst" -name '*.ko' | wc -l) files)"
}

if [ -n "$MODULES" ]; then
    # shellcheck disable=SC2086  # word splitting intended
    add_modules $MODULES
fi

mkdir -p "$ROOT/etc"
cat >"$ROOT/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# busybox udhcpc hook: apply the lease.
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
        echo "VDC-IP=$ip" >/dev/console
        ;;
esac
EOF
chmod 755 "$ROOT/etc/udhcpc.script"

cat >"$ROOT/init" <<'EOF'
#!/bin/busybox sh
# vdc test guest: PID 1. Must never exit (that panics the kernel).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
exec </dev/console >/dev/console 2>&1
# Keep kernel messages from interleaving with the marker lines.
echo 1 >/proc/sys/kernel/printk

host=vdc-guest
marker=
ping_ip=
ping_wait=60
counter=
disk=/dev/vda
disk_write=
disk_read=
ping_log=
watchdog_for=
burn=
io_load=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vdc.hostname=*) host=${arg#vdc.hostname=} ;;
        vdc.marker=*) marker=${arg#vdc.marker=} ;;
        vdc.ping=*) ping_ip=${arg#vdc.ping=} ;;
        vdc.pingwait=*) ping_wait=${arg#vdc.pingwait=} ;;
        vdc.counter=*) counter=${arg#vdc.counter=} ;;
        vdc.disk=*) disk=${arg#vdc.disk=} ;;
        vdc.diskwrite=*) disk_write=${arg#vdc.diskwrite=} ;;
        vdc.diskread=*) disk_read=${arg#vdc.diskread=} ;;
        vdc.pinglog=*) ping_log=${arg#vdc.pinglog=} ;;
        vdc.watchdog=*) watchdog_for=${arg#vdc.watchdog=} ;;
        vdc.burn=*) burn=${arg#vdc.burn=} ;;
        vdc.ioload=*) io_load=${arg#vdc.ioload=} ;;
    esac
done
hostname "$host"
ip link set lo up 2>/dev/null

if [ -f /etc/vdc-modules ]; then
    for m in $(cat /etc/vdc-modules); do
        modprobe "$m" || echo "VDC-GUEST-MODULE-FAILED=$m"
    done
fi

if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    udhcpc -i eth0 -n -q -t 10 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1 || echo "VDC-IP-NONE"
fi

echo "VDC-GUEST-HOSTNAME=$host"
[ -n "$marker" ] && echo "VDC-MARKER=$marker"
if [ -n "$disk_write" ]; then
    if [ -b "$disk" ] && printf 'VDC-DATA=%s\n' "$disk_write" | dd of="$disk" conv=fsync 2>/dev/null; then
        echo "VDC-DISK-WRITTEN=$disk_write"
    else
        echo "VDC-DISK-WRITE-FAILED=$disk"
    fi
fi
echo "VDC-BOOT-ID=$(cat /proc/sys/kernel/random/boot_id)"
echo "VDC-GUEST-READY"

if [ -n "$burn" ]; then
    case "$burn" in
        *[!0-9]*) echo "VDC-BURN-INVALID=$burn" ;;
        *)
            i=0
            while [ "$i" -lt "$burn" ]; do
                while :; do :; done &
                i=$((i + 1))
            done
            echo "VDC-BURN=$burn"
            ;;
    esac
fi

if [ "$io_load" = 1 ]; then
    if [ -b "$disk" ]; then
        (
            while :; do
                dd if="$disk" of=/dev/null bs=4096 iflag=direct 2>/dev/null || sleep 1
            done
        ) &
        echo "VDC-IOLOAD=1"
    else
        echo "VDC-IOLOAD-NONE=$disk"
    fi
fi

if [ "$counter" = 1 ]; then
    (
        n=0
        sleep 1
        echo # ends the line of the console shell's prompt
        while :; do
            n=$((n + 1))
            echo "VDC-COUNT=$n"
            sleep 1
        done
    ) &
fi

if [ "$disk_read" = 1 ]; then
    (
        while :; do
            sleep 2
            sync
            echo 3 >/proc/sys/vm/drop_caches
            echo "VDC-DISK=$(dd if="$disk" bs=512 count=1 2>/dev/null | head -n 1 | tr -cd 'A-Za-z0-9=._-')"
        done
    ) &
fi

if [ -n "$ping_log" ]; then
    ( ping -i 0.5 "$ping_log" 2>&1 | while read -r line; do echo "VDC-PINGLOG $line"; done ) &
fi

if [ -n "$watchdog_for" ]; then
    (
        if [ -c /dev/watchdog ]; then
            watchdog -F -T 5 -t 1 /dev/watchdog &
            feeder=$!
            echo "VDC-WATCHDOG-FEEDING=$watchdog_for"
            sleep "$watchdog_for"
            kill -9 "$feeder" # no magic close: the watchdog stays armed
            echo "VDC-WATCHDOG-STOPPED"
        else
            echo "VDC-WATCHDOG-NONE"
        fi
    ) &
fi

if [ -n "$ping_ip" ]; then
    (
        i=0
        while [ "$i" -lt "$ping_wait" ]; do
            if ping -c 1 -W 1 "$ping_ip" >/dev/null 2>&1; then echo "VDC-PING-OK=$ping_ip"; exit 0; fi
            i=$((i + 1))
        done
        echo "VDC-PING-FAIL=$ping_ip"
    ) &
fi

# An interactive shell on the console (virsh console / -nographic), forever.
while :; do
    setsid cttyhack sh -l || sh
    sleep 1
done
EOF
chmod 755 "$ROOT/init"

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --quiet) | gzip -9n >"$WORK/initrd.img"

# -------------------------------------------------------------- publish --
NEW=$WORK/out
mkdir -p "$NEW"
cp "$VMLINUZ" "$NEW/vmlinuz"
mv "$WORK/initrd.img" "$NEW/initrd.img"
echo "$KVER" >"$NEW/kernel-version"
echo "$STAMP" >"$NEW/stamp"
chmod 755 "$NEW"
chmod 644 "$NEW"/*
rm -rf "$OUT.old"
if [ -e "$OUT" ]; then mv "$OUT" "$OUT.old"; fi
mv "$NEW" "$OUT"
rm -rf "$OUT.old"
log "built $OUT: vmlinuz $(du -h "$OUT/vmlinuz" | cut -f1), initrd.img $(du -h "$OUT/initrd.img" | cut -f1)"
echo "$OUT"
