"""Domain operations on a live connection (blocking: call them through HostConnection.call)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import libvirt

from vdc.libvirt.domain_xml import DomainConfig, DomainXmlError, InterfaceConfig, owner_from_domain_xml
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
