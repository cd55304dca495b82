"""Domain operations on a live connection (blocking: call them through HostConnection.call)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import libvirt

from vdc.libvirt.domain_xml import (
    IOTUNE_LIMITS,
    CpuTuneConfig,
    DiskConfig,
    DomainConfig,
    DomainXmlError,
    InterfaceConfig,
    IoTuneConfig,
    MemTuneConfig,
    owner_from_domain_xml,
)
from vdc.libvirt.errors import DomainNotFound, LibvirtFailure, NotFound, translated, translated_on

DomainState = Literal["running", "paused", "shutoff", "crashed", "other"]
ShutoffCause = Literal["guest", "destroyed", "crashed", "failed", "other"]
PausedReason = Literal["ioerror", "watchdog", "crashed", "other"]
"""Why a paused domain is paused: the ones that mean the guest stopped making progress, else other."""


@dataclass(frozen=True)
class DomainObservation:
    """A domain as libvirt reports it."""

    state: DomainState
    cause: ShutoffCause = "other"
    """Why a shut-off domain is off (libvirt's VIR_DOMAIN_SHUTOFF_* reason)."""
    defined: DomainConfig | None = None
    """The persistent definition (what the next boot uses)."""
    live: DomainConfig | None = None
    """The running configuration, when running."""
    paused_reason: PausedReason | None = None
    """Why a paused domain is paused (libvirt's VIR_DOMAIN_PAUSED_* reason); None unless paused."""
    fingerprint: int = 0
    """What was read (state, reason, both XMLs), hashed: equal to :func:`domain_fingerprint` while nothing of
    the domain changed (within one process: Python's string hash)."""


_STATES: dict[int, DomainState] = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_SHUTDOWN: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
}
_SHUTOFF_CAUSES: dict[int, ShutoffCause] = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "guest",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
}

_PAUSED_REASONS: dict[int, PausedReason] = {
    libvirt.VIR_DOMAIN_PAUSED_IOERROR: "ioerror",
    libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: "watchdog",
    libvirt.VIR_DOMAIN_PAUSED_CRASHED: "crashed",
}


def state_of(state: int, reason: int) -> tuple[DomainState, ShutoffCause, PausedReason | None]:
    """libvirt's (state, reason) of ``virDomainGetState``: the state, why a shut-off domain is off, and why
    a paused one is paused (None when it is not paused; a PMSUSPENDED domain is paused for another reason)."""
    kind = _STATES.get(state, "other")
    cause = _SHUTOFF_CAUSES.get(reason, "other") if kind == "shutoff" else "other"
    paused: PausedReason | None = None
    if state == libvirt.VIR_DOMAIN_PAUSED:
        paused = _PAUSED_REASONS.get(reason, "other")
    elif kind == "paused":
        paused = "other"
    return kind, cause, paused


def _parse(xml: str) -> DomainConfig | None:
    try:
        return DomainConfig.from_string(xml)
    except DomainXmlError:
        return None  # not something we can read back: treated as differing, so it is redefined


class DomainHandles:
    """A connection for one batch of calls on one thread (a VM's plan, then its read back) that looks each
    domain up once: a lookup is a round trip to the host, and a new VM's define, start and read back looked
    it up twice more. The domain ``defineXML`` returns is kept too. Everything else goes to the connection.

    A handle names the domain by UUID, so it stays good across a redefinition; one kept after the domain
    was undefined fails as a lookup would (no such domain)."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self._conn = conn
        self._domains: dict[str, libvirt.virDomain] = {}

    def lookupByUUIDString(self, uuid: str) -> libvirt.virDomain:
        dom = self._domains.get(uuid)
        if dom is None:
            dom = self._domains[uuid] = self._conn.lookupByUUIDString(uuid)
        return dom

    def defineXML(self, xml: str) -> libvirt.virDomain:
        dom = self._conn.defineXML(xml)
        self._domains[dom.UUIDString()] = dom  # read from the handle, no round trip
        return dom

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def connection(self) -> libvirt.virConnect:
        """This, typed as the connection the domain operations take."""
        return cast(libvirt.virConnect, self)


def _lookup(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain:
    with translated():
        return conn.lookupByUUIDString(uuid)


def _read(conn: libvirt.virConnect, uuid: str) -> tuple[int, int, str, str | None] | None:
    """(state, reason, the persistent XML, the live XML when running or paused), or None: no such domain."""
    try:
        dom = _lookup(conn, uuid)
        with translated():
            state, reason = dom.state()
            defined = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            live = dom.XMLDesc(0) if _STATES.get(state) in ("running", "paused") else None
    except DomainNotFound:
        return None
    return state, reason, defined, live


def observe_domain(conn: libvirt.virConnect, uuid: str) -> DomainObservation | None:
    """The domain with this UUID, or None when the host has none."""
    read = _read(conn, uuid)
    if read is None:
        return None
    state, reason, defined, live = read
    kind, cause, paused = state_of(state, reason)
    return DomainObservation(
        state=kind, cause=cause, defined=_parse(defined), live=None if live is None else _parse(live),
        paused_reason=paused, fingerprint=hash(read),
    )  # fmt: skip


def domain_fingerprint(conn: libvirt.virConnect, uuid: str) -> int | None:
    """The :attr:`DomainObservation.fingerprint` the domain would be observed with now, without parsing
    anything (None: no such domain). The safety-net resync compares it with the last settled observation."""
    read = _read(conn, uuid)
    return None if read is None else hash(read)


def domain_exists(conn: libvirt.virConnect, uuid: str) -> bool:
    try:
        _lookup(conn, uuid)
    except DomainNotFound:
        return False
    return True


class NameTaken(LibvirtFailure):
    """Another domain, not one we made for this object, already has the name."""


def define(conn: libvirt.virConnect, config: DomainConfig) -> None:
    """Define (or redefine) the domain. A domain of the same name left by an earlier object of the
    same namespace/name (another uid: deleted while its host was away) is removed first."""
    try:
        with translated():
            conn.defineXML(config.to_string())
        return
    except LibvirtFailure as failure:
        try:
            with translated():
                existing = conn.lookupByName(config.name)
                existing_uuid = existing.UUIDString()
                existing_xml = existing.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        except NotFound:
            raise failure from None
        if existing_uuid == config.uuid:
            raise
        owner = owner_from_domain_xml(existing_xml)
        if owner is None or (owner.namespace, owner.name) != (config.owner.namespace, config.owner.name):
            raise NameTaken(
                f"a domain named {config.name} that vdc-operator did not create for this VM exists "
                f"(uuid {existing_uuid}); rename or remove it"
            ) from failure
    remove(conn, existing_uuid)
    with translated():
        conn.defineXML(config.to_string())


def start(conn: libvirt.virConnect, uuid: str) -> None:
    """Start the domain. libvirt reports a file QEMU cannot open as a "system error", the code it also
    uses for a lost connection: on a live connection that is a failure of this domain, not of the host."""
    dom = _lookup(conn, uuid)
    with translated_on(conn, LibvirtFailure):
        dom.create()


def shutdown(conn: libvirt.virConnect, uuid: str) -> None:
    dom = _lookup(conn, uuid)
    with translated():
        dom.shutdown()


def destroy(conn: libvirt.virConnect, uuid: str) -> None:
    dom = _lookup(conn, uuid)
    with translated():
        if dom.isActive():
            dom.destroy()


def set_memory(conn: libvirt.virConnect, uuid: str, kib: int) -> None:
    dom = _lookup(conn, uuid)
    with translated():
        dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)


DEFAULT_CPU_SHARES = 1024
"""What a domain gets back when its shares are no longer set (cgroup v1's default)."""
MEMORY_UNLIMITED_KIB = 9007199254740991
"""libvirt's VIR_DOMAIN_MEMORY_PARAM_UNLIMITED (a C macro the Python binding lacks): no memory limit."""


def set_cpu_tune(conn: libvirt.virConnect, uuid: str, tune: CpuTuneConfig | None) -> None:
    """Set the running domain's CPU shares and quotas (a quota of -1 is none; None: the defaults)."""
    dom = _lookup(conn, uuid)
    tune = tune or CpuTuneConfig(shares=DEFAULT_CPU_SHARES)
    params: dict[str, int] = {"cpu_shares": tune.shares or DEFAULT_CPU_SHARES}
    if tune.global_period is not None:
        params["global_period"] = tune.global_period
    params["global_quota"] = tune.global_quota if tune.global_quota is not None else -1
    if tune.period is not None:
        params["vcpu_period"] = tune.period
    params["vcpu_quota"] = tune.quota if tune.quota is not None else -1
    with translated():
        dom.setSchedulerParametersFlags(params, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def set_memory_tune(conn: libvirt.virConnect, uuid: str, tune: MemTuneConfig | None) -> None:
    """Set the running domain's hard and soft memory limits (KiB; None: unlimited)."""
    dom = _lookup(conn, uuid)
    unlimited = MEMORY_UNLIMITED_KIB
    params = {
        "hard_limit": tune.hard_limit if tune is not None and tune.hard_limit is not None else unlimited,
        "soft_limit": tune.soft_limit if tune is not None and tune.soft_limit is not None else unlimited,
    }
    with translated():
        dom.setMemoryParameters(params, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def io_tune_parameters(tune: IoTuneConfig | None, current: IoTuneConfig | None = None) -> dict[str, int]:
    """``virDomainSetBlockIoTune``'s parameters that turn the ``current`` limits into these: every limit
    (0 removes one); a burst and its length only where one is set or one is to be removed, the length
    then 1, QEMU's default (QEMU refuses a longer one without a burst; libvirt's test driver reads a
    burst of 0 as a ceiling)."""
    want = dataclasses.asdict(tune) if tune is not None else {}
    have = dataclasses.asdict(current) if current is not None else {}
    params: dict[str, int] = {}
    for name in IOTUNE_LIMITS:
        params[name] = want.get(name) or 0
        peak = f"{name}_max"
        if want.get(peak) or have.get(peak):
            params[peak] = want.get(peak) or 0
            params[f"{peak}_length"] = (want.get(f"{peak}_length") or 1) if want.get(peak) else 1
    return params


def set_io_tune(
    conn: libvirt.virConnect, uuid: str, disks: Sequence[DiskConfig], current: Sequence[DiskConfig]
) -> None:
    """Set each disk's I/O limits on the running domain where they differ from ``current`` (its live ones)."""
    dom = _lookup(conn, uuid)
    now = {d.target_dev: d.iotune for d in current}
    with translated():
        for disk in disks:
            if disk.target_dev in now and now[disk.target_dev] != disk.iotune:
                params = io_tune_parameters(disk.iotune, now[disk.target_dev])
                dom.setBlockIoTune(disk.target_dev, params, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def set_bandwidth(conn: libvirt.virConnect, uuid: str, interfaces: Sequence[InterfaceConfig]) -> None:
    """Set each NIC's bandwidth on the running domain (found by MAC; 0 removes a limit)."""
    dom = _lookup(conn, uuid)
    with translated():
        for nic in interfaces:
            params: dict[str, int] = {}
            for direction in ("inbound", "outbound"):
                limit = getattr(nic.bandwidth, direction) if nic.bandwidth is not None else None
                for key in ("average", "peak", "burst"):
                    params[f"{direction}.{key}"] = (getattr(limit, key) or 0) if limit is not None else 0
            dom.setInterfaceParameters(nic.mac, params, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def remove(conn: libvirt.virConnect, uuid: str) -> bool:
    """Stop and undefine the domain; False when it was already gone."""
    try:
        dom = _lookup(conn, uuid)
    except DomainNotFound:
        return False
    with translated():
        if dom.isActive():
            dom.destroy()
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
        try:
            dom.undefineFlags(flags)
        except libvirt.libvirtError:
            dom.undefine()
    return True


def set_link_states(conn: libvirt.virConnect, uuid: str, interfaces: Sequence[InterfaceConfig]) -> None:
    """Set each NIC's link state on the running domain (found by MAC; the definition is not touched)."""
    dom = _lookup(conn, uuid)
    with translated():
        for interface in interfaces:
            dom.updateDeviceFlags(interface.to_string(), libvirt.VIR_DOMAIN_AFFECT_LIVE)


def lease_addresses(conn: libvirt.virConnect, uuid: str) -> dict[str, tuple[str, ...]]:
    """MAC -> the addresses the guest leased by DHCP on its libvirt networks (read from the host's
    dnsmasq leases: no guest agent needed); empty when the host's libvirt cannot tell."""
    dom = _lookup(conn, uuid)
    try:
        with translated():
            found = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
    except LibvirtFailure as exc:
        if exc.code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_INVALID):
            return {}
        raise
    out: dict[str, tuple[str, ...]] = {}
    for entry in (found or {}).values():
        mac = str(entry.get("hwaddr") or "").lower()
        if mac:
            out[mac] = out.get(mac, ()) + tuple(str(a["addr"]) for a in entry.get("addrs") or [] if a.get("addr"))
    return out


def block_resize(conn: libvirt.virConnect, uuid: str, target_dev: str, capacity_bytes: int) -> None:
    """Grow a disk of a running domain (QEMU resizes the image; the guest sees the new size)."""
    dom = _lookup(conn, uuid)
    with translated():
        dom.blockResize(target_dev, capacity_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
