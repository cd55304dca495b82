"""VirtualSwitch: the same libvirt network on every matching host, one IPAM across them all.

Networks we create are named ``vdc-<switch>`` with a bridge ``vdcbr-<hash>``. An overlay switch is an
isolated network on every host whose bridge the host's network hook (:mod:`vdc.hooks.libvirt_network`)
joins to one VXLAN segment through a device ``vdcvx-<hash>``: the network carries the hook's settings
(this host's underlay address, the VNI) and the other hosts' underlay addresses as its peers, which are
changed live as hosts come and go. Every host has the gateway address on its bridge, so DHCP and DNS
are answered by whichever host a guest is on (they all hold the same static entries). Addresses are
allocated here (pure: ``vdc.ipam``), kept in the switch's status (so they survive restarts) and
handed out by static DHCP entries on every host of the switch, so a VM keeps its address wherever
it runs. ``network_config`` and ``switch_status`` are pure; ``SwitchController`` does the I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from vdc.api.conditions import Condition, set_condition, set_kstatus
from vdc.api.virtualswitch import AddressAllocation, SwitchHostStatus, VirtualSwitch, VirtualSwitchStatus
from vdc.cluster.hosts import matching_hosts
from vdc.cluster.view import ClusterView
from vdc.cluster.watches import ObjectEvent, Watch
from vdc.controllers.errors import DeletionWaits
from vdc.controllers.vm_plan import restart_requested
from vdc.ipam import Allocation, Claim, Pool, Request, Result, allocate, mac_for, owner_of, recover
from vdc.keylocks import KeyLocks
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.kube.client import KubeWriter
from vdc.libvirt import networks
from vdc.libvirt.connection import ConnectionManager
from vdc.libvirt.errors import LibvirtFailure
from vdc.libvirt.network_xml import (
    DhcpHostConfig,
    DnsConfig,
    DnsTxtConfig,
    Ipv4Config,
    Ipv6Config,
    NetworkConfig,
    OverlayConfig,
)
from vdc.libvirt.xml_common import BandwidthConfig, BandwidthLimitConfig

log = logging.getLogger(__name__)

NETWORK_PREFIX = "vdc-"
RESYNC_SECONDS = 60.0
OVERLAY_MTU = 1450
"""Default MTU of an overlay switch: a 1500-byte underlay less the 50 bytes of VXLAN encapsulation."""
PEER_SUFFIX = ".vdc-peer"
ADDRESS_CONFLICT = "AddressConflict"
"""Condition: True while two owners hold one address (names them and what to do)."""
HOOK_HINT = "install the network hook on the host (`vdc host-hook install`, then restart libvirtd)"


class SwitchUnsupported(ValueError):
    """The switch asks for a mode this version cannot build yet."""


def libvirt_network_name(switch: str) -> str:
    return f"{NETWORK_PREFIX}{switch}"


def bridge_name(switch: str) -> str:
    """``vdcbr-`` and 8 hex digits: unique per switch and within Linux's 15 characters."""
    return "vdcbr-" + hashlib.sha256(switch.encode()).hexdigest()[:8]


def vxlan_device_name(switch: str) -> str:
    """``vdcvx-`` and the bridge's 8 hex digits."""
    return "vdcvx-" + bridge_name(switch).removeprefix("vdcbr-")


@dataclass(frozen=True)
class OverlayPeer:
    """A host of an overlay switch, as the other hosts tunnel to it."""

    host: str
    address: str


def overlay_side(
    switch: VirtualSwitch, local: str, peers: list[OverlayPeer]
) -> tuple[OverlayConfig, tuple[DnsTxtConfig, ...]]:
    """One host's side of an overlay switch: the hook's settings, and the other hosts as TXT records."""
    spec = switch.spec.overlay
    assert spec is not None  # admission requires overlay settings in overlay mode
    name = str(switch.metadata["name"])
    overlay = OverlayConfig(
        vni=spec.vni, local=local, device=vxlan_device_name(name), port=spec.port, underlay=spec.underlay_interface
    )
    records = tuple(
        DnsTxtConfig(f"{peer.host}{PEER_SUFFIX}", peer.address)
        for peer in sorted(peers, key=lambda p: p.host)
        if peer.address != local
    )
    return overlay, records


def ip_pool(switch: VirtualSwitch) -> Pool | None:
    subnet = switch.spec.subnet
    if subnet is None:
        return None
    rng = subnet.dhcp_range
    return Pool.parse(subnet.cidr, subnet.gateway, rng.start if rng else None, rng.end if rng else None)


def network_config(
    switch: VirtualSwitch, hosts: tuple[DhcpHostConfig, ...] = (),
    overlay: tuple[OverlayConfig, tuple[DnsTxtConfig, ...]] | None = None,
) -> NetworkConfig:  # fmt: skip
    """The libvirt network of a switch; ``hosts`` are its static DHCP entries. The same on every host but
    for an overlay switch's ``overlay`` side (:func:`overlay_side`), which that mode needs."""
    spec = switch.spec
    name = str(switch.metadata["name"])
    if spec.mode == "overlay" and spec.vlan is not None:
        raise SwitchUnsupported("a VLAN tag on an overlay switch is not built yet; the VNI already separates segments")
    bandwidth = None
    if spec.bandwidth is not None and (spec.bandwidth.inbound or spec.bandwidth.outbound):

        def limit(value: Any) -> BandwidthLimitConfig | None:
            return None if value is None else BandwidthLimitConfig(value.average, value.peak, value.burst)

        bandwidth = BandwidthConfig(limit(spec.bandwidth.inbound), limit(spec.bandwidth.outbound))
    if spec.mode == "bridge":
        assert spec.bridge is not None  # admission: bridge mode needs bridge.name
        if spec.vlan is not None:
            raise SwitchUnsupported(
                "a VLAN tag on a bridge switch needs an Open vSwitch bridge, which is not built yet"
            )
        # The LAN's own bridge: libvirt only plugs guests into it (addresses, DHCP and DNS are the LAN's).
        return NetworkConfig(name=libvirt_network_name(name), bridge=spec.bridge.name, forward="bridge",
                             bandwidth=bandwidth)  # fmt: skip
    pool = ip_pool(switch)
    assert pool is not None  # admission requires a subnet for nat and isolated
    ipv4 = Ipv4Config(address=str(pool.gateway), prefix=pool.network.prefixlen, hosts=hosts)
    ipv6 = None
    if spec.ipv6 is not None:
        net6 = ipaddress.IPv6Network(spec.ipv6.cidr, strict=False)
        ipv6 = Ipv6Config(address=str(next(net6.hosts())), prefix=net6.prefixlen)
    dns = None
    if spec.dns is not None and (spec.dns.servers or spec.dns.domain):
        dns = DnsConfig(forwarders=tuple(spec.dns.servers), domain=spec.dns.domain)
    overlay_config, peers = overlay if overlay is not None and spec.mode == "overlay" else (None, ())
    mtu = spec.mtu if spec.mtu is not None or spec.mode != "overlay" else OVERLAY_MTU
    return NetworkConfig(
        name=libvirt_network_name(name),
        bridge=bridge_name(name),
        forward="nat" if spec.mode == "nat" else "none",
        mtu=mtu,
        ipv4=ipv4,
        ipv6=ipv6,
        dns=dns,
        bandwidth=bandwidth,
        dns_txt=peers,
        overlay=overlay_config,
        stp=False,  # one host's bridge cannot loop; STP's forwarding delay would drop a migrated guest's packets
    )


def address_requests(switch_name: str, vms: ObjectCache) -> list[Request]:
    """One request per NIC of a live VM on this switch."""
    requests = []
    for vm in vms:
        meta = vm["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        for nic in vm.get("spec", {}).get("interfaces", []):
            if nic.get("switch") != switch_name:
                continue
            mac = nic.get("macAddress") or mac_for(meta["uid"], nic["name"])
            requests.append(Request(owner_of(meta["namespace"], meta["name"], nic["name"]), mac, nic.get("ipAddress")))
    return requests


def address_claims(switch_name: str, vms: ObjectCache) -> list[Claim]:
    """The addresses live VMs' statuses show on this switch's NICs (the IPAM's is each NIC's first)."""
    claims = []
    for vm in vms:
        meta = vm["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        for nic in (vm.get("status") or {}).get("interfaces") or []:
            if nic.get("switch") == switch_name and nic.get("macAddress") and nic.get("ipAddresses"):
                owner = owner_of(meta["namespace"], meta["name"], nic["name"])
                claims.append(Claim(nic["ipAddresses"][0], nic["macAddress"], "the VM's status", owner))
    return claims


def lease_claims(host: str, entries: tuple[DhcpHostConfig, ...]) -> list[Claim]:
    """A host's static DHCP entries of the switch's network: what its guests' leases came from."""
    return [Claim(e.ip, e.mac, f"host {host}'s DHCP entries") for e in entries if e.ip]


def conflict_message(conflicts: dict[str, str]) -> str:
    return "; ".join(f"{owner}: {why}" for owner, why in sorted(conflicts.items()))


@dataclass(frozen=True)
class SwitchOnHost:
    host: str
    state: str | None  # "Active", "Inactive", "Failed"; None: unreachable
    message: str = ""


def switch_status(
    switch: VirtualSwitch, results: list[SwitchOnHost], ipam: Result | None, generation: int | None,
    old: VirtualSwitchStatus | None, problem: str | None = None, conflicts: dict[str, str] | None = None,
) -> VirtualSwitchStatus:  # fmt: skip
    name = str(switch.metadata["name"])
    bridge = switch.spec.bridge.name if switch.spec.mode == "bridge" and switch.spec.bridge else bridge_name(name)
    hosts = [
        SwitchHostStatus(host=r.host, state=r.state or "Unknown", bridge=bridge, message=r.message)
        for r in sorted(results, key=lambda r: r.host)
    ]
    conds: list[Condition] = list(old.conditions) if old else []
    failing = [h for h in hosts if h.state != "Active"]
    if problem:
        conds = set_kstatus(conds, "Failed", "Unsupported", problem, observed_generation=generation)
    elif not hosts:
        conds = set_kstatus(conds, "NotReady", "NoHosts", "no Ready host matches hostSelector",
                            observed_generation=generation)  # fmt: skip
    elif failing:
        message = "; ".join(f"{h.host}: {h.state}{' - ' + h.message if h.message else ''}" for h in failing)
        conds = set_kstatus(conds, "InProgress", "Realising", message, ready_reason="NotActiveEverywhere",
                            observed_generation=generation)  # fmt: skip
    else:
        conds = set_kstatus(conds, "Current", "Active", f"active on {len(hosts)} host(s)",
                            observed_generation=generation)  # fmt: skip
    if conflicts:  # the switch works; the owners in conflict are refused (their VMs say so too)
        conds = set_condition(conds, ADDRESS_CONFLICT, "True", "AddressConflict", conflict_message(conflicts),
                              observed_generation=generation)  # fmt: skip
    elif any(c.type == ADDRESS_CONFLICT for c in conds):
        conds = set_condition(conds, ADDRESS_CONFLICT, "False", "NoConflict", observed_generation=generation)
    allocations = [a.to_api() for a in ipam.allocations] if ipam else list(old.allocations if old else [])
    return VirtualSwitchStatus(
        observed_generation=generation,
        conditions=conds,
        hosts=hosts,
        ready_hosts=sum(1 for h in hosts if h.state == "Active"),
        allocations=allocations,
        free_addresses=ipam.free if ipam else (old.free_addresses if old else None),
    )


def _dhcp_entries(conn: Any, name: str) -> tuple[DhcpHostConfig, ...] | None:
    """The static DHCP entries the network ``name`` has on the host (None: no such network there)."""
    observed = networks.observe_network(conn, name)
    return None if observed is None else tuple(observed.dhcp_hosts)


def _realise(
    conn: Any, config: NetworkConfig, dhcp: tuple[DhcpHostConfig, ...], present: tuple[DhcpHostConfig, ...] | None
) -> str | None:
    """Define/start the network (keeping the DHCP entries it has, ``present``, so that alone is no reason
    to redefine and restart it), then make its static DHCP entries exactly ``dhcp``, live. Returns what
    is wrong on the host that libvirt did not report (an overlay's VXLAN device missing), if anything."""
    if config.forward == "bridge" and networks.host_interface_exists(conn, config.bridge) is False:
        # libvirt starts a bridge-mode network whatever the host has; guests would then fail to start.
        return f"the host has no bridge {config.bridge}: create it there, or fix bridge.name"
    present = present if present is not None else dhcp
    ipv4 = dataclasses.replace(config.ipv4, hosts=present) if config.ipv4 else None
    networks.ensure_network(conn, dataclasses.replace(config, ipv4=ipv4))
    networks.set_dhcp_hosts(conn, config.name, dhcp)
    if config.overlay is None:
        return None
    if networks.host_interface_exists(conn, config.overlay.device) is False:
        return f"VXLAN device {config.overlay.device} is missing: {HOOK_HINT}"
    return None


class SwitchDeletionBlocked(DeletionWaits):
    """VMs still have NICs on the switch."""


class SwitchController:
    def __init__(
        self, switches: ObjectCache, hosts: ObjectCache, vms: ObjectCache, connections: ConnectionManager,
        writer: KubeWriter,
    ) -> None:  # fmt: skip
        self.switches = switches
        self.hosts = hosts
        self.vms = vms
        self.connections = connections
        self.writer = writer
        self.errors: dict[str, dict[str, str]] = {}
        self._locks: KeyLocks[str] = KeyLocks()
        """switch -> owner -> why it got no address (read by the VM controller)."""

    def overlay_peers(self, hosts: list[str]) -> list[OverlayPeer]:
        """The hosts among ``hosts`` with an underlay address: each one's peers are the others."""
        peers = []
        for host in hosts:
            body = self.hosts.get(("", host))
            address = ((body or {}).get("spec") or {}).get("underlayAddress")
            if address:
                peers.append(OverlayPeer(host, str(address)))
        return peers

    async def reconcile(self, key: Key) -> float | None:
        async with self._locks.hold(key[1]):  # never alongside the switch's deletion
            return await self._reconcile(key)

    async def _reconcile(self, key: Key) -> float | None:
        body = self.switches.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        switch = VirtualSwitch.model_validate(body)
        name = key[1]
        generation = body["metadata"].get("generation")
        current = [Allocation.from_api(a) for a in (switch.status.allocations if switch.status else [])]
        try:
            pool = ip_pool(switch)
            config = network_config(switch)
        except (SwitchUnsupported, ValueError) as exc:
            status = switch_status(switch, [], None, generation, switch.status, problem=str(exc))
            await self._write(key, body, status)
            return None
        hosts = matching_hosts(self.hosts, switch.spec.host_selector)
        # A bridge switch's addresses are handed out by the LAN (or cloud-init), not by libvirt.
        served = pool is not None and switch.spec.mode != "bridge"
        present = await self._present_entries(name, hosts) if served else {}
        ipam, conflicts = None, {}
        if pool is not None:
            # One truth for addresses: the status, completed from what VMs and hosts show (an address the
            # status lost is taken back, not handed out again); an address two owners hold is a conflict.
            requests = address_requests(name, self.vms)
            claims = address_claims(name, self.vms)
            claims += [c for host, entries in sorted(present.items()) if entries for c in lease_claims(host, entries)]
            recovery = recover(pool, current, requests, claims)
            conflicts = dict(recovery.conflicts)
            ipam = allocate(pool, recovery.current, [r for r in requests if r.owner not in conflicts])
            self.errors[name] = {**ipam.errors, **conflicts}
            await self._persist_allocations(key, body, switch, ipam, conflicts)
            await self._note_conflicts(body, switch, conflicts)
        else:
            self.errors[name] = {}
        dhcp = tuple(DhcpHostConfig(mac=a.mac, ip=a.ip) for a in ipam.allocations) if ipam and served else ()
        body = self.switches.get(key) or body
        peers = self.overlay_peers(hosts) if switch.spec.mode == "overlay" else []

        async def on_host(host: str) -> SwitchOnHost:
            host_config = config
            if switch.spec.mode == "overlay":
                local = next((p.address for p in peers if p.host == host), None)
                if local is None:
                    message = (
                        "spec.underlayAddress is not set: an overlay switch tunnels between hosts' underlay addresses"
                    )
                    return SwitchOnHost(host, "Failed", message)
                host_config = network_config(switch, overlay=overlay_side(switch, local, peers))
            conn = self.connections.get(host)
            if conn is None or not conn.connected:
                return SwitchOnHost(host, None, "host unreachable")
            try:
                problem = await conn.call(
                    functools.partial(_realise, config=host_config, dhcp=dhcp, present=present.get(host))
                )
            except LibvirtFailure as exc:
                return SwitchOnHost(host, "Failed", str(exc))
            return SwitchOnHost(host, "Failed", problem) if problem else SwitchOnHost(host, "Active")

        # Every host at once: one slow host (each DHCP entry is a virNetworkUpdate that runs the network
        # hook on a QEMU host) no longer holds back the others, nor the status of them all.
        results = list(await asyncio.gather(*(on_host(host) for host in hosts)))
        status = switch_status(switch, results, ipam, generation, switch.status, conflicts=conflicts)
        await self._write(key, body, status)
        return RESYNC_SECONDS

    async def _present_entries(self, name: str, hosts: list[str]) -> dict[str, tuple[DhcpHostConfig, ...] | None]:
        """Each reachable host's static DHCP entries of the switch's network (None: not defined there)."""

        async def entries(host: str) -> tuple[str, tuple[DhcpHostConfig, ...] | None] | None:
            conn = self.connections.get(host)
            if conn is None or not conn.connected:
                return None
            try:
                return host, await conn.call(functools.partial(_dhcp_entries, name=libvirt_network_name(name)))
            except LibvirtFailure as exc:
                log.info("switch %s on %s: %s", name, host, exc)
                return None

        return dict(found for found in await asyncio.gather(*(entries(h) for h in hosts)) if found is not None)

    async def _persist_allocations(
        self, key: Key, body: dict[str, Any], switch: VirtualSwitch, ipam: Result, conflicts: dict[str, str]
    ) -> None:
        """Write new allocations to status before any host hands them out (a crash in between must not
        leave a lease the status does not know), marked ``pending`` until the hosts have them: their VMs
        wait, so no guest asks for a lease its host cannot give yet. Raises when the write fails: nothing
        is realised then."""
        old = switch.status or VirtualSwitchStatus()
        served = {(a.owner, str(a.ip), a.mac) for a in old.allocations if not a.pending}
        allocations = [
            a.to_api().model_copy(update={"pending": None if (a.owner, a.ip, a.mac) in served else True})
            for a in ipam.allocations
        ]
        if allocations == list(old.allocations):
            return
        status = old.model_copy(update={"allocations": allocations, "free_addresses": ipam.free})
        await self._write(key, body, status)

    async def _note_conflicts(self, body: dict[str, Any], switch: VirtualSwitch, conflicts: dict[str, str]) -> None:
        """A Warning Event when the switch's address conflicts change (not on every reconcile)."""
        message = conflict_message(conflicts)
        conds = switch.status.conditions if switch.status else []
        previous = next((c.message for c in conds if c.type == ADDRESS_CONFLICT and c.status == "True"), "")
        if message and message != previous:
            await self.writer.event(VirtualSwitch.KIND, body, "AddressConflict", message, warning=True)

    async def _write(self, key: Key, body: dict[str, Any], status: VirtualSwitchStatus) -> None:
        wire = status.to_wire()
        if wire != (body.get("status") or {}) and (
            sent := await self.writer.patch_status(VirtualSwitch.KIND, body, wire)
        ):
            self.switches.note_status(key, sent)

    async def delete(self, body: dict[str, Any]) -> str:
        async with self._locks.hold(str(body["metadata"]["name"])):  # a reconcile in flight finishes first
            return await self._delete(body)

    async def _delete(self, body: dict[str, Any]) -> str:
        name = body["metadata"]["name"]
        users = sorted({r.owner.rsplit("/", 1)[0] for r in address_requests(name, self.vms)})
        if users:
            raise SwitchDeletionBlocked(
                f"VMs still have interfaces on switch {name}: {', '.join(users[:5])}{' …' if len(users) > 5 else ''}"
            )
        for host in self.connections.names():
            conn = self.connections.get(host)
            if conn is not None and conn.connected:
                try:
                    await conn.call(functools.partial(networks.remove_network, name=libvirt_network_name(name)))
                except LibvirtFailure as exc:
                    log.info("switch %s on %s: %s", name, host, exc)
        return f"network {libvirt_network_name(name)} removed from its hosts"


def allocation_for(switch_body: dict[str, Any] | None, owner: str) -> AddressAllocation | None:
    for entry in ((switch_body or {}).get("status") or {}).get("allocations", []):
        if entry.get("owner") == owner:
            return AddressAllocation.model_validate(entry)
    return None


def _every_switch(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """A Host that turned Ready, changed labels or went: switches realised on it (or now to be) look again."""
    return [key_of(body) for body in view.switches]


def _switches_of_vm(view: ClusterView, event: ObjectEvent) -> list[Key]:
    """A VM that changed or went: the switches its NICs are on (their IPAM serves it, or frees its addresses)."""
    if not (event.deleted or event.changed or restart_requested(event.body)):
        return []
    nics = (event.body.get("spec") or {}).get("interfaces") or []
    return sorted({("", str(nic["switch"])) for nic in nics if nic.get("switch")})


WATCHES = (
    Watch(kind="Host", map=_every_switch),
    Watch(kind="VirtualMachine", map=_switches_of_vm),
)
