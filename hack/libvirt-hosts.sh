#!/usr/bin/env bash
# Run N independent libvirt "hosts" on this one machine, for tests and demos.
#
# Usage: hack/libvirt-hosts.sh up N | down | status | redfish up PORT | redfish down
#
#   up N     start hosts $VDC_HOST_PREFIX-1..N (running ones are left alone) and
#            wait until each libvirtd answers; prints hosts.txt on stdout
#   down     destroy their guests, stop every process they started, remove
#            their network namespaces, veths, bridge and iptables rule
#            (state and logs under $VDC_STATE/hosts stay)
#   status   one line per host: name, running|stopped, address, qemu URI;
#            exit 0 only if at least one host is known and all are running
#   redfish up PORT
#            start a Redfish endpoint for these hosts on 127.0.0.1:PORT
#            (hack/redfish-rig.py: sushy-tools' emulator, one ComputerSystem
#            per host, Id = host name) in the background and wait until it
#            answers; its ForceOff/GracefulShutdown SIGKILL everything in that
#            host's mount namespace (libvirtd, virtlogd, QEMUs) as a power loss
#            would, On runs `up N` again so only the dead host starts, and
#            ForceRestart does both. Needs .venv (uv sync). `down` stops it too.
#   redfish down
#            stop that endpoint
#
# Each host is a libvirtd plus its own virtlogd in its own mount and UTS
# namespace (and, by default, network namespace with a veth on a bridge),
# with private /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/log/libvirt, /var/cache/libvirt and its own hostname and host UUID.
# It serves qemu+unix:///system (real QEMU/TCG guests, domain type 'qemu')
# and test+unix:///default (libvirt's test driver) on the same socket.
#
# Environment:
#   VDC_STATE          state root (default: <repo>/.vdc); uses $VDC_STATE/hosts
#   VDC_HOST_PREFIX    host name prefix (default: vdc-host); all global names
#                      (netns, bridge, veths, subnet) derive from it
#   VDC_HOST_NETNS     1 (default): a network namespace per host; 0: share
#                      the machine's network namespace (no addresses)
#   VDC_HOST_TIMEOUT   seconds to wait for each libvirtd (default: 90)
#   VDC_REDFISH_PORT   if set, `up` also starts the Redfish endpoint on it
#   VDC_HOST_LOCKD     1: the hosts (of this state dir, from now on) run virtlockd and libvirt's lockd
#                      lock manager, so a QEMU holds a lease (fcntl lock) on each of its disks
#   VDC_HOST_CGROUPS   1 (default): each host's libvirtd runs in cgroups of its own,
#                      <hierarchy>/<our cgroup>/vdc-rig/<host name>, for each of the
#                      v1 controllers cpu, cpuacct, cpuset, memory, blkio the machine
#                      mounts, and qemu.conf's cgroup_controllers names them: libvirt
#                      puts each domain's cgroup under it (machine/<dom>.libvirt-qemu),
#                      so schedinfo/memtune/vcpupin apply (see "cgroups" below);
#                      0: none (cgroup_controllers = [ ])
#   VDC_REDFISH_HTPASSWD  htpasswd file (bcrypt): the endpoint asks for basic
#                      auth (default: none)
#   VDC_REDFISH_TLS_CERT, VDC_REDFISH_TLS_KEY  serve HTTPS (default: HTTP)
#   VDC_CACHE          machine-wide cache (default: $HOME/.cache/vdc); QEMU
#                      capabilities probed by one host seed the next ones
#                      from $VDC_CACHE/libvirt-qemu-caps (libvirt re-validates them)
#
# Files, per host in $VDC_STATE/hosts/<name>/: qemu.uri, test.uri, address,
# pids ("libvirtd PID", "virtlogd PID", "test-holder PID"), meta, host_uuid,
# cgroups ("controller directory mountpoint options" per cgroup the host
# runs in; `down` removes those directories), sock/ (libvirt sockets), log/ (libvirtd.log, virtlogd.log, init.log,
# qemu/<domain>.log, test-driver-events.log), etc/ lib/ run/ cache/ (what
# the host sees as /etc/libvirt, /var/lib/libvirt, /run/libvirt and
# /var/cache/libvirt). Shared: $VDC_STATE/hosts/hosts.txt ("name qemu-uri
# test-uri address" per running host, address "-" without netns), net.env
# (bridge, subnet), redfish.pid, redfish.port and redfish.log (the Redfish
# endpoint, while `redfish up` runs it), etc-hosts (the hosts' /etc/hosts: every host's name),
# shared/ and shared.path (its absolute path): one directory that every host
# sees at that same path, for a `dir` StoragePool shared by all hosts (disks
# there migrate without copying storage; it is a local ext4/tmpfs directory,
# not NFS, so libvirt calls such a migration unsafe unless it is given
# VIR_MIGRATE_UNSAFE: see hack/MIGRATION-NOTES.md). QEMU runs as root on every host
# (qemu.conf: user root, dynamic_ownership 0, no security driver), so files
# there need no particular owner; the directory is root's, mode 0755, and
# stays after `down` like the rest of the state.
#
# Notes: the test driver's state (test:///default) lives as long as the
# host: a "test-holder" client keeps a connection open, as libvirtd resets
# it when its last connection closes. Files a guest uses (kernels, disks,
# serial logs) must be outside the private directories above, e.g. under
# $VDC_STATE. The prefix must be unique among rigs running at the same time.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)

help() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SELF"
    exit 0
}

usage() {
    echo "Usage: hack/libvirt-hosts.sh up N | down | status | redfish up PORT | redfish down   (--help for details)" >&2
    exit 2
}

log() { printf 'libvirt-hosts: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------ settings --
init_settings() {
    STATE=$(realpath -m "${VDC_STATE:-$REPO/.vdc}")
    HOSTS_DIR=$STATE/hosts
    PREFIX=${VDC_HOST_PREFIX:-vdc-host}
    USE_NETNS=${VDC_HOST_NETNS:-1}
    TIMEOUT=${VDC_HOST_TIMEOUT:-90}
    [[ $PREFIX =~ ^[a-z0-9][a-z0-9-]{0,39}$ ]] ||
        die "VDC_HOST_PREFIX must be 1-40 chars of [a-z0-9-], starting alphanumeric: '$PREFIX'"
    [[ $USE_NETNS =~ ^[01]$ ]] || die "VDC_HOST_NETNS must be 0 or 1"
    [[ $TIMEOUT =~ ^[0-9]+$ ]] || die "VDC_HOST_TIMEOUT must be a number of seconds"
    [[ $STATE != *[[:space:]\"\'\\]* ]] || die "VDC_STATE must not contain spaces or quotes: $STATE"
    # Short id for names the kernel limits to 15 characters.
    NET_ID=$(printf '%s' "$PREFIX" | sha256sum | cut -c1-6)
    BRIDGE=vdcb$NET_ID
    IPT_COMMENT=vdc-rig:$NET_ID
    CAPS_SEED=${VDC_CACHE:-$HOME/.cache/vdc}/libvirt-qemu-caps
    PIN_CPU=$(taskset -pc $$ | sed 's/.*: *//; s/[-,].*//')
}

veth_name() { echo "vdcv${NET_ID}n$1"; }

require_root_tools() {
    [ "$(id -u)" = 0 ] || die "must run as root (namespaces, mounts, veths)"
    local t
    for t in libvirtd virtlogd virsh virt-admin unshare nsenter setsid taskset flock timeout ip mount; do
        command -v "$t" >/dev/null || die "$t not found (apt-get install libvirt-daemon-system libvirt-clients qemu-system-x86 iproute2 util-linux)"
    done
}

lock_state() {
    mkdir -p "$HOSTS_DIR"
    exec 9>"$HOSTS_DIR/.lock"
    flock 9
}

uri_qemu() { echo "qemu+unix:///system?socket=$HOSTS_DIR/$1/sock/libvirt-sock"; }
uri_test() { echo "test+unix:///default?socket=$HOSTS_DIR/$1/sock/libvirt-sock"; }

# meta_get FILE KEY
meta_get() { sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n1; }

# The directory all hosts share (outside their private bind mounts).
setup_shared_dir() {
    mkdir -p "$HOSTS_DIR/shared"
    chmod 0755 "$HOSTS_DIR/shared"
    echo "$HOSTS_DIR/shared" >"$HOSTS_DIR/shared.path"
}

# ------------------------------------------------------------- network --
write_net_env() {
    cat >"$HOSTS_DIR/net.env" <<EOF
VDC_HOST_PREFIX=$PREFIX
VDC_NET_ID=$NET_ID
VDC_BRIDGE=$BRIDGE
VDC_SUBNET=$1
VDC_BRIDGE_ADDR=${1%.0/24}.1
VDC_IPT_COMMENT=$IPT_COMMENT
EOF
}

# The subnet 10.X.Y.0/24 derives from the prefix; it is chosen once (moving
# on if the machine already routes it) and kept in net.env.
setup_network() {
    local envf=$HOSTS_DIR/net.env subnet h x y try
    if [ -f "$envf" ]; then
        subnet=$(meta_get "$envf" VDC_SUBNET)
    elif subnet=$(ip -4 -o addr show dev "$BRIDGE" 2>/dev/null | awk '{print $4; exit}') &&
        [[ $subnet =~ ^10\.[0-9]+\.[0-9]+\.1/24$ ]]; then
        # The bridge outlived its state directory: keep using its subnet.
        subnet=${subnet%.1/24}.0/24
        write_net_env "$subnet"
    else
        h=$(printf '%s' "$PREFIX" | sha256sum)
        x=$((100 + 0x${h:6:2} % 100))
        y=$((0x${h:8:2}))
        for try in $(seq 0 255); do
            subnet=10.$x.$(((y + try) % 256))
            if ! ip -4 route show | grep -q "^$subnet\\." &&
                ! ip -4 addr show | grep -q "inet $subnet\\."; then
                break
            fi
            subnet=
        done
        [ -n "$subnet" ] || die "no free 10.$x.*.0/24 subnet"
        subnet=$subnet.0/24
        write_net_env "$subnet"
    fi
    SUBNET_BASE=${subnet%.0/24}
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        log "bridge $BRIDGE ${SUBNET_BASE}.1/24"
        ip link add "$BRIDGE" type bridge
        ip addr add "$SUBNET_BASE.1/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    fi
    # With br_netfilter, bridged frames go through iptables FORWARD: let
    # traffic between the hosts pass whatever the policy is.
    if [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0)" = 1 ] &&
        command -v iptables >/dev/null; then
        if ! iptables -w -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$IPT_COMMENT" -j ACCEPT 2>/dev/null; then
            iptables -w -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$IPT_COMMENT" -j ACCEPT ||
                log "warning: could not add the iptables FORWARD rule for $BRIDGE"
        fi
    fi
}

teardown_network() {
    local br=$BRIDGE comment=$IPT_COMMENT envf=$HOSTS_DIR/net.env
    if [ -f "$envf" ]; then
        br=$(meta_get "$envf" VDC_BRIDGE)
        comment=$(meta_get "$envf" VDC_IPT_COMMENT)
    fi
    if command -v iptables >/dev/null; then
        while iptables -w -D FORWARD -i "$br" -o "$br" -m comment --comment "$comment" -j ACCEPT 2>/dev/null; do :; done
    fi
    if ip link show "$br" >/dev/null 2>&1; then
        ip link del "$br"
        log "removed bridge $br"
    fi
}

# Shared /etc/hosts for all hosts: the machine's plus every host's address,
# so hostnames resolve at once (and migration can find its peers). Written
# in place: the hosts bind-mount this very inode.
write_etc_hosts() {
    local f=$HOSTS_DIR/etc-hosts tmp d name addr
    tmp=$(mktemp)
    cat /etc/hosts >"$tmp"
    echo "# vdc libvirt hosts ($PREFIX)" >>"$tmp"
    for d in "$HOSTS_DIR"/*/; do
        [ -f "$d/meta" ] || continue
        name=$(meta_get "$d/meta" name)
        addr=$(meta_get "$d/meta" address)
        echo "${addr:-127.0.1.1} $name" >>"$tmp"
    done
    touch "$f"
    cat "$tmp" >"$f"
    rm -f "$tmp"
}

# ------------------------------------------------------------- cgroups --
# Each host's libvirtd (and so its QEMUs) runs in a cgroup subtree of its own, one per v1 hierarchy
# of CG_CONTROLLERS that the machine mounts: <mount><our own placement>/vdc-rig/<host name>, e.g.
# /sys/fs/cgroup/cpu/vdc-rig/vdc-host-1 (our placement: /proc/self/cgroup, e.g. /process_api/<id>
# in a sandbox's memory hierarchy). libvirt (no systemd: its cgroupfs backend) puts its /machine
# partition at the root of each hierarchy, whatever its own cgroup: so libvirtd runs in a cgroup
# namespace rooted at the host's subtree, with the hierarchies mounted afresh inside it (host_init),
# and each domain's cgroup is .../vdc-rig/<host>/machine/<domain>.libvirt-qemu/ on the machine, so
# schedinfo (cpu_shares, global_period/global_quota, vcpu_*), memtune and cpuset pinning take effect
# per host as on a real one. blkdeviotune is QEMU's own throttling (no cgroup needed). The blkio
# hierarchy here offers only blkio.throttle.* (no bfq/cfq): blkiotune --weight fails ("blkio device
# weight is valid only for bfq or cfq scheduler"). A controller that is not mounted or whose
# directory cannot be made is left out of qemu.conf's cgroup_controllers (logged); the others apply.
#
# CPU contention on the rig (this machine: 2 CPUs). Two 1-vCPU guests burning (vdc.burn=1) on one
# host each get a CPU of their own, so cpu_shares changes nothing. Measured over 20 s (cpu.time of
# `virsh domstats --cpu-total`), shares 2048 vs 1024 set with `virsh schedinfo D --live --set
# cpu_shares=N`:
#   - both guests pinned to one CPU (`virsh vcpupin D 0 1 --live; virsh emulatorpin D 1 --live`,
#     or <vcpu cpuset='1'> in the XML; libvirt writes cpuset.cpus of the domain's vcpuN/emulator
#     cgroups): 66.5% vs 33.2%, ratio 2.00. The clean way: per test, per domain.
#   - the host's subtree confined to one CPU (cpuset.cpus of .../vdc-rig/<host>): also 2.00, but
#     only when written before its first guest starts (a v1 cpuset cannot shrink below its
#     children's: EBUSY) and it confines the host's libvirtd as well.
#   - two 2-vCPU guests with vdc.burn=2, unpinned: ratios 1.65, 1.13 (and 0.98 at equal shares):
#     not usable, the machine's two CPUs are not steadily ours.
#   global_period=100000 global_quota=25000 (`virsh schedinfo D --live --set global_quota=25000`)
#   holds a burning guest at 25.0% of a CPU (100.8% with quota -1).
CG_CONTROLLERS="cpu cpuacct cpuset memory blkio"
CG_DIR=vdc-rig

# cg_hierarchy CTRL: "MOUNTPOINT OPTIONS BASE" of the cgroup v1 hierarchy holding CTRL, BASE being
# our own cgroup in it (the mount point plus our placement); fails when it is not mounted.
cg_hierarchy() {
    local ctrl=$1 mp opts place
    read -r mp opts < <(awk -v c="$ctrl" '$3 == "cgroup" { n = split($4, o, ","); for (i = 1; i <= n; i++)
        if (o[i] == c) { print $2, $4; exit } }' /proc/self/mounts) || return 1
    [ -n "$mp" ] && [ -d "$mp" ] || return 1
    place=$(awk -F: -v c="$ctrl" '{ n = split($2, o, ","); for (i = 1; i <= n; i++)
        if (o[i] == c) { print $3; exit } }' /proc/self/cgroup)
    place=${place%/}
    echo "$mp $opts $mp$place"
}

# cg_cpuset_inherit PARENT CHILD: a new cpuset cgroup is empty (no task may join it) until it has
# CPUs and memory nodes: copy the parent's.
cg_cpuset_inherit() {
    local f
    for f in cpuset.cpus cpuset.mems; do
        [ -n "$(cat "$2/$f" 2>/dev/null)" ] || cat "$1/$f" >"$2/$f" || return 1
    done
}

# cg_rmtree DIR [keep]: remove a cgroup directory and everything below it, leaf first (a cgroup
# directory can be removed once it has no tasks and no children, whatever control files it shows);
# with "keep", DIR itself stays. Retries for a moment while processes finish exiting.
cg_rmtree() {
    local dir=$1 keep=${2:-} i sub
    [ -d "$dir" ] || return 0
    for i in $(seq 25); do
        while read -r sub; do
            [ "$keep" = keep ] && [ "$sub" = "$dir" ] && continue
            rmdir "$sub" 2>/dev/null || true
        done < <(find "$dir" -depth -mindepth 0 -type d 2>/dev/null)
        if [ "$keep" = keep ]; then
            [ -z "$(find "$dir" -mindepth 1 -type d 2>/dev/null | head -n1)" ] && return 0
        else
            [ -d "$dir" ] || return 0
        fi
        sleep 0.2
    done
    return 1
}

# setup_host_cgroups NAME: make the host's subtrees (emptying what a dead run left there) and list
# them in <host>/cgroups ("CONTROLLER DIR MOUNTPOINT OPTIONS" a line), which host_init joins and
# `down` removes; prints the controllers for qemu.conf's cgroup_controllers.
setup_host_cgroups() {
    local name=$1 d=$HOSTS_DIR/$1 ctrl mp opts base dir
    local -a used=() skipped=()
    : >"$d/cgroups"
    if [ "${VDC_HOST_CGROUPS:-1}" = 0 ]; then
        log "$name: no cgroup controllers (VDC_HOST_CGROUPS=0)"
        return 0
    fi
    for ctrl in $CG_CONTROLLERS; do
        if ! read -r mp opts base < <(cg_hierarchy "$ctrl"); then
            skipped+=("$ctrl (no cgroup v1 hierarchy mounted)")
            continue
        fi
        dir=$base/$CG_DIR/$name
        cg_rmtree "$dir" keep || log "$name: warning: stale cgroups under $dir could not be removed"
        if ! mkdir -p "$dir" 2>/dev/null; then
            skipped+=("$ctrl (cannot mkdir $dir)")
            continue
        fi
        if [ "$ctrl" = cpuset ] && ! { cg_cpuset_inherit "$base" "$base/$CG_DIR" 2>/dev/null &&
            cg_cpuset_inherit "$base/$CG_DIR" "$dir" 2>/dev/null; }; then
            skipped+=("$ctrl (cannot set cpuset.cpus/mems in $dir)")
            rmdir "$dir" 2>/dev/null || true
            continue
        fi
        if [ ! -w "$dir/cgroup.procs" ]; then
            skipped+=("$ctrl ($dir/cgroup.procs not writable)")
            rmdir "$dir" 2>/dev/null || true
            continue
        fi
        echo "$ctrl $dir $mp $opts" >>"$d/cgroups"
        used+=("$ctrl")
    done
    if [ ${#skipped[@]} -gt 0 ]; then
        log "$name: cgroup controllers left out: ${skipped[*]}"
    fi
    echo "${used[*]}"
}

# join_host_cgroups DIR: move this (sub)shell into the host's cgroups.
join_host_cgroups() {
    local d=$1 ctrl dir rest
    while read -r ctrl dir rest; do
        echo "$BASHPID" >"$dir/cgroup.procs" || echo "warning: could not join the $ctrl cgroup $dir"
    done < <(cat "$d/cgroups" 2>/dev/null)
    echo "cgroups: $(cut -d: -f2- "/proc/$BASHPID/cgroup" | tr '\n' ' ')"
}

# remove_host_cgroups DIR: after the host's processes are gone.
remove_host_cgroups() {
    local d=$1 ctrl dir rest
    [ -f "$d/cgroups" ] || return 0
    while read -r ctrl dir rest; do
        [ -n "$dir" ] || continue
        if cg_rmtree "$dir"; then
            rmdir "$(dirname "$dir")" 2>/dev/null || true # vdc-rig, once no rig uses it
        else
            log "warning: could not remove the $ctrl cgroup $dir (processes left in it?)"
        fi
    done <"$d/cgroups"
    rm -f "$d/cgroups"
}

# --------------------------------------------------------------- hosts --
# alive PID: the process exists and is not a zombie.
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

host_pid() { # host_pid DIR libvirtd|virtlogd|test-holder: the live process
    local p exe=$2
    [ "$exe" != test-holder ] || exe=virsh
    p=$(cat "$1/run/$2.pid" 2>/dev/null || true)
    [[ $p =~ ^[0-9]+$ ]] && alive "$p" && [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$(command -v "$exe")" ] || return 1
    echo "$p"
}

host_running() {
    local d=$HOSTS_DIR/$1 pid
    pid=$(host_pid "$d" libvirtd) || return 1
    [ "$(readlink "/proc/$pid/ns/mnt")" = "$(cat "$d/mntns" 2>/dev/null)" ] || return 1
    timeout 15 virsh -c "$(uri_qemu "$1")" version >/dev/null 2>&1
}

# Prepare the host's directories and configuration (root namespace).
prepare_host() {
    local name=$1 idx=$2 d=$HOSTS_DIR/$1 sock uuid addr="" ns="" veth="" sub
    sock=$d/sock/libvirt-admin-sock
    [ ${#sock} -le 107 ] || die "socket path too long (${#sock} > 107 chars): $sock; use a shorter VDC_STATE"
    mkdir -p "$d"/{sock,run,lib,etc,log,cache}
    # Runtime state from an earlier run is stale now.
    find "$d/run" "$d/sock" -mindepth 1 -delete
    rm -f "$d/pids" "$d/mntns"
    [ -s "$d/host_uuid" ] || cat /proc/sys/kernel/random/uuid >"$d/host_uuid"
    uuid=$(cat "$d/host_uuid")

    if [ ! -f "$d/etc/libvirtd.conf" ]; then
        cp -a /etc/libvirt/. "$d/etc/"
        # No default network autostart: no dnsmasq or firewall rules per host.
        rm -f "$d/etc/qemu/networks/autostart/"*.xml
    fi
    # vdc's hooks, as `vdc host-hook install` puts them on a real host: the network hook overlay
    # (VXLAN) switches need, and the qemu hook that refuses host files (kernel, initrd) resolving
    # outside the Host's spec.hostFiles.allowedPaths. Refreshed on every start (libvirtd looks for
    # hooks when it starts).
    mkdir -p "$d/etc/hooks/network.d" "$d/etc/hooks/qemu.d"
    install -m 0755 "$REPO/operator/vdc/hooks/libvirt_network.py" "$d/etc/hooks/network.d/vdc-overlay"
    install -m 0755 "$REPO/operator/vdc/hooks/libvirt_qemu.py" "$d/etc/hooks/qemu.d/vdc-host-files"
    for sub in lib:/var/lib/libvirt cache:/var/cache/libvirt log:/var/log/libvirt; do
        (cd "${sub#*:}" && find . -mindepth 1 -type d) | (cd "$d/${sub%%:*}" && xargs -r mkdir -p)
    done
    # The tiny guest, where a host's own files would be: /var/lib/libvirt/boot/vdc-tiny (examples use it).
    local guest_dir; guest_dir=$("$REPO/hack/build-guest.sh")
    mkdir -p "$d/lib/boot/vdc-tiny"
    cp -p "$guest_dir/vmlinuz" "$guest_dir/initrd.img" "$d/lib/boot/vdc-tiny/"
    # Probing QEMU's capabilities under TCG takes seconds per binary; start
    # from what another host found (libvirt re-probes if it is stale).
    if [ -d "$CAPS_SEED" ]; then
        mkdir -p "$d/cache/qemu/capabilities"
        cp -p "$CAPS_SEED"/*.xml "$d/cache/qemu/capabilities/" 2>/dev/null || true
    fi

    local ctrls cg_list="" c
    ctrls=$(setup_host_cgroups "$name")
    for c in $ctrls; do cg_list="$cg_list${cg_list:+, }\"$c\""; done

    # The stock files are all comments: append our settings to fresh copies.
    { cat /etc/libvirt/libvirtd.conf; cat <<EOF

# --- vdc libvirt host $name ---
unix_sock_dir = "$d/sock"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
host_uuid = "$uuid"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
    } >"$d/etc/libvirtd.conf"
    { cat /etc/libvirt/qemu.conf; cat <<EOF

# --- vdc libvirt host $name ---
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ $cg_list ]
namespaces = [ ]
stdio_handler = "logd"
EOF
        if [ -f "$HOSTS_DIR/lockd" ]; then echo 'lock_manager = "lockd"'; fi
    } >"$d/etc/qemu.conf"
    # Disk leases (VDC_HOST_LOCKD=1 at the first `up`): libvirt's lockd plugin with virtlockd takes an
    # fcntl lock on every disk a QEMU opens (shared read-only disks a shared lock): a second QEMU on
    # another host cannot open a disk a live QEMU holds; a dead host's locks die with its virtlockd.
    { cat /etc/libvirt/qemu-lockd.conf; cat <<EOF

# --- vdc libvirt host $name ---
auto_disk_leases = 1
require_lease_for_disks = 1
EOF
    } >"$d/etc/qemu-lockd.conf"
    { cat /etc/libvirt/virtlockd.conf; cat <<EOF

# --- vdc libvirt host $name ---
log_outputs = "3:file:/var/log/libvirt/virtlockd.log"
EOF
    } >"$d/etc/virtlockd.conf"
    { cat /etc/libvirt/virtlogd.conf; cat <<EOF

# --- vdc libvirt host $name ---
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
EOF
    } >"$d/etc/virtlogd.conf"

    if [ "$USE_NETNS" = 1 ]; then
        ns=$name
        veth=$(veth_name "$idx")
        addr=$SUBNET_BASE.$((10 + idx))
    fi
    cat >"$d/meta" <<EOF
name=$name
index=$idx
prefix=$PREFIX
netns=$ns
veth=$veth
address=$addr
EOF
    uri_qemu "$name" >"$d/qemu.uri"
    uri_test "$name" >"$d/test.uri"
    if [ -n "$addr" ]; then echo "$addr" >"$d/address"; else rm -f "$d/address"; fi
}

setup_host_netns() {
    local d=$HOSTS_DIR/$1 ns veth addr
    ns=$(meta_get "$d/meta" netns)
    veth=$(meta_get "$d/meta" veth)
    addr=$(meta_get "$d/meta" address)
    [ -n "$ns" ] || return 0
    if [ -e "/run/netns/$ns" ]; then
        if [ -n "$(ip netns pids "$ns" 2>/dev/null)" ]; then
            log "ERROR: network namespace $ns exists and is in use: another rig with VDC_HOST_PREFIX=$PREFIX? (its own 'down' removes it)"
            return 1
        fi
        ip netns del "$ns" || return 1
    fi
    ip link del "$veth" 2>/dev/null || true
    ip netns add "$ns" || return 1
    if ! { ip link add "$veth" type veth peer name eth0 netns "$ns" &&
        ip link set "$veth" master "$BRIDGE" up &&
        ip -n "$ns" link set lo up &&
        ip -n "$ns" addr add "$addr/24" dev eth0 &&
        ip -n "$ns" link set eth0 up; }; then
        ip netns del "$ns" || true
        ip link del "$veth" 2>/dev/null || true
        return 1
    fi
}

launch_host() {
    local name=$1 d=$HOSTS_DIR/$1 ns
    ns=$(meta_get "$d/meta" netns)
    [ -d /run/libvirt ] || mkdir -p /run/libvirt   # mount point
    local -a enter=()
    [ -z "$ns" ] || enter=(nsenter "--net=/run/netns/$ns")
    # setsid: own session, so the caller's Ctrl-C or process group kill does
    # not reach the daemons. 9>&-: do not leak the state lock into them.
    # taskset: libvirt keeps the host's CPUID in its QEMU capabilities cache,
    # and one leaf holds the APIC id of the CPU the thread ran on; pinning the
    # daemons to one CPU keeps the cache valid across hosts and restarts
    # (libvirt gives each QEMU all CPUs again).
    # The subshell joins the host's cgroups, then execs into a cgroup namespace rooted there (the
    # PID stays the launcher's, and ends as libvirtd's): see host_init.
    (
        join_host_cgroups "$d"
        exec setsid taskset -c "$PIN_CPU" "${enter[@]}" unshare --cgroup --mount --uts --propagation private -- \
            "$SELF" __host-init "$d"
    ) </dev/null >>"$d/log/init.log" 2>&1 9>&- &
}

# Runs inside the host's namespaces; ends as its libvirtd.
host_init() {
    local d=$1 name ns
    name=$(meta_get "$d/meta" name)
    ns=$(meta_get "$d/meta" netns)
    echo "=== $(date -Is) starting $name (pid $$)"
    # Drop our copies of the machine's netns mounts (they would pin other
    # hosts' network namespaces) and see this netns in /sys.
    umount -l /run/netns 2>/dev/null || true
    if [ -n "$ns" ]; then
        umount -l /sys
        mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
    fi
    # We run in a cgroup namespace whose root is the host's own cgroup (launch_host): mount the
    # hierarchies libvirt is to use afresh, over the machine's, so that they show that root. A
    # v1 mount with the same controllers attaches to the existing hierarchy; made inside the
    # namespace, it is rooted at the namespace's cgroup. libvirt (cgroupfs backend, no systemd)
    # puts its /machine partition at the root of what it sees: <host's cgroup>/machine/<domain>.
    local ctrl dir mp opts
    local -A remount=()
    while read -r ctrl dir mp opts; do remount[$mp]=$opts; done < <(cat "$d/cgroups" 2>/dev/null)
    if [ ${#remount[@]} -gt 0 ]; then
        mount -t tmpfs -o nosuid,nodev,noexec,mode=755 cgroup /sys/fs/cgroup
        for mp in "${!remount[@]}"; do
            mkdir -p "$mp"
            mount -t cgroup -o "${remount[$mp]}" cgroup "$mp" || echo "warning: could not mount $mp"
        done
    fi
    mount --bind "$d/etc" /etc/libvirt
    mount --bind "$d/run" /run/libvirt
    mount --bind "$d/lib" /var/lib/libvirt
    mount --bind "$d/log" /var/log/libvirt
    mount --bind "$d/cache" /var/cache/libvirt
    mount --bind "$(dirname "$d")/etc-hosts" /etc/hosts
    echo "$name" >/proc/sys/kernel/hostname
    # The host's datastore heartbeat (as vSphere HA's): every 2 s, into each directory of the shared dir
    # (the shared StoragePools' targets), by a process of the host's own: it stops with the host's power
    # or a hung host, not with its libvirtd. The operator reads it through the other hosts' libvirtds.
    (
        exec >/dev/null 2>&1
        while :; do
            for dir in "$(dirname "$d")"/shared/*/; do
                [ -d "$dir" ] && date +%s.%N >"$dir/vdc-heartbeat-$name"
            done
            sleep 2
        done
    ) &
    virtlogd --daemon --pid-file "$d/run/virtlogd.pid"
    if [ -f "$(dirname "$d")/lockd" ]; then virtlockd --daemon --pid-file "$d/run/virtlockd.pid"; fi
    exec libvirtd --pid-file "$d/run/libvirtd.pid" --config /etc/libvirt/libvirtd.conf
}

log_tail() {
    local d=$HOSTS_DIR/$1 f
    for f in "$d/log/init.log" "$d/log/libvirtd.log" "$d/log/virtlogd.log"; do
        [ -s "$f" ] || continue
        echo "----- $f (last 30 lines)" >&2
        tail -n 30 "$f" >&2
    done
}

wait_host() {
    local name=$1 d=$HOSTS_DIR/$1 launcher=$2 uri deadline pid err
    uri=$(uri_qemu "$name")
    deadline=$((SECONDS + TIMEOUT))
    while :; do
        if err=$(timeout 20 virsh -c "$uri" version 2>&1 >/dev/null) &&
            pid=$(host_pid "$d" libvirtd); then
            break
        fi
        if ! alive "$launcher" && ! host_pid "$d" libvirtd >/dev/null; then
            log "ERROR: libvirtd of $name exited; last virsh error: $err"
            log_tail "$name"
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            log "ERROR: libvirtd of $name did not answer within ${TIMEOUT}s: $err"
            log_tail "$name"
            return 1
        fi
        sleep 0.3
    done
    readlink "/proc/$pid/ns/mnt" >"$d/mntns"
    save_caps_seed "$d"
    # The test driver is served by the same daemon; check it as well.
    if ! err=$(timeout 20 virsh -c "$(uri_test "$name")" version 2>&1 >/dev/null); then
        log "ERROR: $name does not serve the test driver: $err"
        log_tail "$name"
        return 1
    fi
    start_test_holder "$name" || return 1
    write_pids "$name"
}

write_pids() {
    local d=$HOSTS_DIR/$1 what pid
    for what in libvirtd virtlogd test-holder; do
        if pid=$(host_pid "$d" "$what"); then echo "$what $pid"; fi
    done >"$d/pids"
}

# libvirtd keeps the state of test:///default only while some connection to
# it is open: the last one to close resets it. A long-lived client in the
# host's namespaces ("virsh event --loop", which also logs the test driver's
# domain events) makes it live as long as the host, so that any two clients
# see the same fake domains.
start_test_holder() {
    local name=$1 d=$HOSTS_DIR/$1 lpid hpid admin i n0 n
    lpid=$(host_pid "$d" libvirtd) || return 1
    if host_pid "$d" test-holder >/dev/null; then return 0; fi
    admin="libvirtd:///system?socket=$d/sock/libvirt-admin-sock"
    n0=$(admin_clients "$admin")
    setsid nsenter --target "$lpid" --mount --uts --net -- \
        virsh -q -c "$(uri_test "$name")" event --all --loop --timestamp \
        </dev/null >>"$d/log/test-driver-events.log" 2>&1 9>&- &
    hpid=$!
    for i in $(seq 100); do
        n=$(admin_clients "$admin")
        if [ "$n" -gt "$n0" ] && alive "$hpid"; then
            echo "$hpid" >"$d/run/test-holder.pid"
            return 0
        fi
        alive "$hpid" || break
        sleep 0.1
    done
    log "ERROR: $name: the test driver connection holder did not connect (after $((i / 10))s)"
    cat "$d/log/test-driver-events.log" >&2 || true
    return 1
}

save_caps_seed() {
    local d=$1 f tmp
    mkdir -p "$CAPS_SEED" 2>/dev/null || return 0
    for f in "$d"/cache/qemu/capabilities/*.xml; do
        [ -f "$f" ] || continue
        cmp -s "$f" "$CAPS_SEED/${f##*/}" && continue
        tmp=$(mktemp "$CAPS_SEED/.tmp.XXXXXX") && cp -p "$f" "$tmp" && mv -f "$tmp" "$CAPS_SEED/${f##*/}"
    done
    return 0
}

admin_clients() {
    timeout 10 virt-admin -q -c "$1" srv-clients-list libvirtd 2>/dev/null | grep -c unix || true
}

# Every process of a host: its daemons, their QEMUs, and anything else in
# its mount namespace or network namespace. PIDs from files count only if
# they still are one of ours (a PID file can outlive its process).
host_procs() {
    local d=$1 ns mntns self p f exe
    ns=$(meta_get "$d/meta" netns)
    mntns=$(cat "$d/mntns" 2>/dev/null || true)
    self=$(readlink /proc/self/ns/mnt)
    {
        {
            awk '{print $2}' "$d/pids" 2>/dev/null || true
            for f in "$d"/run/*.pid "$d"/run/qemu/*.pid; do
                if [ -f "$f" ]; then cat "$f" && echo; fi
            done
        } | { grep -E '^[0-9]+$' || true; } | while read -r p; do
            exe=$(readlink "/proc/$p/exe" 2>/dev/null || true)
            case "${exe##*/}" in
                libvirtd | virtlogd | virsh | qemu-system-*) echo "$p" ;;
            esac
        done
        if [ -n "$mntns" ] && [ "$mntns" != "$self" ]; then
            for p in /proc/[0-9]*; do
                [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$mntns" ] && echo "${p#/proc/}"
            done
        fi
        if [ -n "$ns" ] && [ -e "/run/netns/$ns" ]; then
            ip netns pids "$ns" 2>/dev/null || true
        fi
    } | grep -E '^[0-9]+$' | sort -un | while read -r p; do
        [ "$p" != $$ ] && [ "$p" != 1 ] && alive "$p" && echo "$p"
    done
}

kill_procs() { # kill_procs PID...: TERM, wait up to 10 s, then KILL
    local p i
    local -a alive
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for i in $(seq 50); do
        alive=()
        for p in "$@"; do
            # A zombie is gone for our purposes (its parent reaps it).
            if alive "$p"; then alive+=("$p"); fi
        done
        [ ${#alive[@]} -gt 0 ] || return 0
        sleep 0.2
    done
    log "killing ${alive[*]} with SIGKILL"
    kill -KILL "${alive[@]}" 2>/dev/null || true
    sleep 0.5
}

stop_host() {
    local d=$1 name uri ns veth dom
    name=$(meta_get "$d/meta" name)
    ns=$(meta_get "$d/meta" netns)
    veth=$(meta_get "$d/meta" veth)
    uri=$(uri_qemu "$name")
    if [ -S "$d/sock/libvirt-sock" ] && host_pid "$d" libvirtd >/dev/null; then
        for dom in $(timeout 20 virsh -c "$uri" list --name 2>/dev/null || true); do
            log "$name: destroying guest $dom"
            timeout 30 virsh -c "$uri" destroy "$dom" >/dev/null 2>&1 || true
        done
    fi
    local -a procs
    mapfile -t procs < <(host_procs "$d")
    if [ ${#procs[@]} -gt 0 ]; then
        log "$name: stopping processes ${procs[*]}"
        kill_procs "${procs[@]}"
    fi
    if [ -n "$ns" ] && [ -e "/run/netns/$ns" ]; then
        ip netns del "$ns" || log "warning: ip netns del $ns failed"
    fi
    if [ -n "$veth" ] && ip link show "$veth" >/dev/null 2>&1; then
        ip link del "$veth" 2>/dev/null || true
    fi
    find "$d/sock" "$d/run" -mindepth 1 -delete 2>/dev/null || true
    rm -f "$d/pids" "$d/mntns"
    remove_host_cgroups "$d"
}

write_hosts_txt() {
    local tmp d name addr i
    tmp=$(mktemp "$HOSTS_DIR/.hosts.txt.XXXXXX")
    for d in "$HOSTS_DIR"/*/; do
        [ -f "$d/meta" ] || continue
        i=$(meta_get "$d/meta" index)
        name=$(meta_get "$d/meta" name)
        [ -f "$d/pids" ] || continue
        addr=$(meta_get "$d/meta" address)
        printf '%s %s %s %s %s\n' "$i" "$name" "$(uri_qemu "$name")" "$(uri_test "$name")" "${addr:--}"
    done | sort -n | cut -d' ' -f2- >"$tmp"
    chmod 644 "$tmp"
    mv "$tmp" "$HOSTS_DIR/hosts.txt"
}

# ------------------------------------------------------------ commands --
cmd_up() {
    local n=$1 i name rc=0 t0=$SECONDS
    require_root_tools
    lock_state
    setup_shared_dir
    if [ "${VDC_HOST_LOCKD:-}" = 1 ]; then touch "$HOSTS_DIR/lockd"; fi
    [ "$USE_NETNS" = 0 ] || setup_network
    local -a started=() launchers=()
    for i in $(seq 1 "$n"); do
        name=$PREFIX-$i
        if host_running "$name"; then
            log "$name already running"
            start_test_holder "$name" || die "$name: cannot connect the test driver holder"
            write_pids "$name"
            continue
        fi
        if [ -f "$HOSTS_DIR/$name/meta" ]; then stop_host "$HOSTS_DIR/$name"; fi
        prepare_host "$name" "$i"
        started+=("$name")
    done
    write_etc_hosts
    for name in "${started[@]}"; do
        if setup_host_netns "$name"; then
            launch_host "$name"
            launchers+=("$!")
        else
            launchers+=("")
        fi
    done
    for i in "${!started[@]}"; do
        name=${started[$i]}
        if [ -z "${launchers[$i]}" ]; then
            rc=1 # its network could not be set up: nothing started
        elif wait_host "$name" "${launchers[$i]}"; then
            log "$name up: $(uri_qemu "$name")"
        else
            rc=1
            stop_host "$HOSTS_DIR/$name"
        fi
    done
    write_hosts_txt
    cat "$HOSTS_DIR/hosts.txt"
    [ $rc = 0 ] || die "some hosts failed to start (logs above)"
    log "${#started[@]} host(s) started in $((SECONDS - t0))s"
}

# Processes of this prefix that no state file knows any more (the state dir
# was removed under running hosts): daemons whose command line names a host
# directory, everything in their mount namespaces, everything in the hosts'
# network namespaces.
stray_procs() {
    local p cmd self mntns=" "
    self=$(readlink /proc/self/ns/mnt)
    {
        for p in /proc/[0-9]*; do
            cmd=$({ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null || true)
            case "$cmd" in
                *"$HOSTS_DIR/$PREFIX-"[0-9]*)
                    echo "${p#/proc/}"
                    mntns="$mntns$(readlink "$p/ns/mnt" 2>/dev/null) "
                    ;;
            esac
        done
        mntns=${mntns// $self / }
        if [ -n "${mntns// /}" ]; then
            for p in /proc/[0-9]*; do
                case "$mntns" in *" $(readlink "$p/ns/mnt" 2>/dev/null) "*) echo "${p#/proc/}" ;; esac
            done
        fi
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-[0-9]+$" || true); do
            ip netns pids "$ns" 2>/dev/null || true
        done
    } | grep -E '^[0-9]+$' | sort -un | while read -r p; do
        [ "$p" != $$ ] && [ "$p" != 1 ] && alive "$p" && echo "$p"
    done
}

redfish_pid() { # the live Redfish endpoint of this state, if any
    local p
    p=$(cat "$HOSTS_DIR/redfish.pid" 2>/dev/null || true)
    [[ $p =~ ^[0-9]+$ ]] && alive "$p" && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q 'redfish-rig\.py' || return 1
    echo "$p"
}

cmd_redfish_up() {
    local port=$1 py=${VDC_PYTHON:-$REPO/.venv/bin/python} pid i
    local -a extra=()
    if pid=$(redfish_pid); then
        [ "$(cat "$HOSTS_DIR/redfish.port" 2>/dev/null)" = "$port" ] ||
            die "a Redfish endpoint already runs (pid $pid) on port $(cat "$HOSTS_DIR/redfish.port" 2>/dev/null)"
        log "Redfish endpoint already running (pid $pid): http://127.0.0.1:$port"
        return 0
    fi
    [ -x "$py" ] || die "$py not found: run uv sync (hack/bootstrap.sh)"
    mkdir -p "$HOSTS_DIR"
    [ -z "${VDC_REDFISH_HTPASSWD:-}" ] || extra+=(--htpasswd "$(realpath "$VDC_REDFISH_HTPASSWD")")
    local scheme=http
    if [ -n "${VDC_REDFISH_TLS_CERT:-}" ]; then
        extra+=(--tls-cert "$(realpath "$VDC_REDFISH_TLS_CERT")" --tls-key "$(realpath "$VDC_REDFISH_TLS_KEY")")
        scheme=https
    fi
    setsid "$py" "$REPO/hack/redfish-rig.py" --port "$port" --listen 127.0.0.1 --state "$STATE" \
        --prefix "$PREFIX" "${extra[@]}" </dev/null >>"$HOSTS_DIR/redfish.log" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$HOSTS_DIR/redfish.pid"
    echo "$port" >"$HOSTS_DIR/redfish.port"
    for i in $(seq 150); do
        if curl -ksf -o /dev/null "$scheme://127.0.0.1:$port/redfish/v1/"; then
            log "Redfish endpoint up (pid $pid): $scheme://127.0.0.1:$port"
            return 0
        fi
        alive "$pid" || break
        sleep 0.2
    done
    tail -n 30 "$HOSTS_DIR/redfish.log" >&2 || true
    kill_procs "$pid"
    rm -f "$HOSTS_DIR/redfish.pid" "$HOSTS_DIR/redfish.port"
    die "the Redfish endpoint did not answer on port $port (log: $HOSTS_DIR/redfish.log)"
}

cmd_redfish_down() {
    local pid
    if pid=$(redfish_pid); then
        log "stopping the Redfish endpoint (pid $pid)"
        kill_procs "$pid"
    fi
    rm -f "$HOSTS_DIR/redfish.pid" "$HOSTS_DIR/redfish.port"
}

cmd_down() {
    local d n=0 ns l
    require_root_tools
    cmd_redfish_down
    if [ -d "$HOSTS_DIR" ]; then
        lock_state
        for d in "$HOSTS_DIR"/*/; do
            [ -f "$d/meta" ] || continue
            stop_host "${d%/}"
            n=$((n + 1))
        done
    fi
    # Leftovers of this prefix whose state is gone.
    mapfile -t l < <(stray_procs)
    if [ ${#l[@]} -gt 0 ]; then
        log "stopping stray processes ${l[*]}"
        kill_procs "${l[@]}"
    fi
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-[0-9]+$" || true); do
        log "removing stray netns $ns"
        ip netns del "$ns" || true
    done
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^vdcv${NET_ID}n[0-9]+$" || true); do
        ip link del "$l" 2>/dev/null || true
    done
    teardown_network
    # Cgroup subtrees of this prefix whose state is gone.
    local ctrl mp opts base
    for ctrl in $CG_CONTROLLERS; do
        read -r mp opts base < <(cg_hierarchy "$ctrl") || continue
        for l in "$base/$CG_DIR/$PREFIX"-[0-9]*; do
            [[ -d $l && ${l##*/} =~ ^$PREFIX-[0-9]+$ ]] || continue
            cg_rmtree "$l" || log "warning: could not remove the stray cgroup $l"
        done
        rmdir "$base/$CG_DIR" 2>/dev/null || true
    done
    if [ -d "$HOSTS_DIR" ]; then write_hosts_txt; fi
    log "stopped $n host(s)"
}

cmd_status() {
    local d name addr state all=0 n=0
    for d in "$HOSTS_DIR"/*/; do
        [ -f "$d/meta" ] || continue
        name=$(meta_get "$d/meta" name)
        addr=$(meta_get "$d/meta" address)
        n=$((n + 1))
        if host_running "$name"; then state=running; else state=stopped; all=1; fi
        printf '%-24s %-8s %-15s %s\n' "$name" "$state" "${addr:--}" "$(uri_qemu "$name")"
    done
    [ $n -gt 0 ] || { log "no hosts in $HOSTS_DIR"; return 1; }
    return $all
}

main() {
    case "${1:-}" in
        up)
            if [ $# != 2 ] || ! [[ $2 =~ ^[1-9][0-9]{0,2}$ ]] || [ "$2" -gt 240 ]; then
                log "up needs a host count N (1-240)"
                usage
            fi
            init_settings
            cmd_up "$2"
            if [ -n "${VDC_REDFISH_PORT:-}" ]; then cmd_redfish_up "$VDC_REDFISH_PORT"; fi
            ;;
        redfish)
            init_settings
            case "${2:-} $#" in
                "up 3")
                    [[ $3 =~ ^[1-9][0-9]{0,4}$ ]] || { log "redfish up needs a TCP port"; usage; }
                    cmd_redfish_up "$3"
                    ;;
                "down 2") cmd_redfish_down ;;
                *) usage ;;
            esac
            ;;
        down)
            [ $# = 1 ] || usage
            init_settings
            cmd_down
            ;;
        status)
            [ $# = 1 ] || usage
            init_settings
            cmd_status
            ;;
        __host-init)
            [ $# = 2 ] || usage
            host_init "$2"
            ;;
        -h | --help) help ;;
        *) usage ;;
    esac
}

main "$@"
