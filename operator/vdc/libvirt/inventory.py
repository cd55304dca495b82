"""What a host holds, read in bulk: its domains (with our ownership metadata) and the volumes of our
pools. Blocking: call these through HostConnection.call. Policy (what is an orphan) lives in
:mod:`vdc.controllers.orphans`.

Cheap by construction: one ``listAllDomains`` (plus one for the active ones), one metadata read per
domain whose UUID is not already known to be a live VM's, one ``listAllStoragePools`` and one
``listAllVolumes`` per pool of ours. Disk sources (one XML read per domain) and volume details (one
per volume) are read only when asked for.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Collection
from dataclasses import dataclass

import libvirt

from vdc.libvirt.domain_xml import OWNER_NS, OWNER_TAG, DomainXmlError, OwnerMetadata
from vdc.libvirt.errors import InvalidState, NotFound, translated


@dataclass(frozen=True)
class DomainSeen:
    uuid: str
    name: str
    active: bool
    owner: OwnerMetadata | None = None
    """Our ownership metadata; None for a domain we did not make (or whose owner was not read)."""
    disks: frozenset[str] = frozenset()
    """What its disks use (:func:`disk_references`); empty unless asked for."""


@dataclass(frozen=True)
class VolumeSeen:
    pool: str
    """The libvirt pool's name."""
    name: str
    path: str | None = None
    """Where it is on the host; None unless details were asked for."""
    backing: str | None = None
    """The path of its backing file (a qcow2 overlay's base), if any."""


def volume_reference(pool: str, name: str) -> str:
    """How a ``<disk type='volume'><source pool=… volume=…/>`` names a volume in :attr:`DomainSeen.disks`."""
    return f"volume:{pool}/{name}"


def disk_references(xml: str) -> frozenset[str]:
    """Every file, block device and pool volume a domain's disks use, backing chains included."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return frozenset()
    found: set[str] = set()
    for source in root.iterfind("devices/disk//source"):
        for attr in ("file", "dev"):
            if source.get(attr):
                found.add(str(source.get(attr)))
        if source.get("pool") and source.get("volume"):
            found.add(volume_reference(str(source.get("pool")), str(source.get("volume"))))
    return frozenset(found)


def _owner(dom: libvirt.virDomain) -> OwnerMetadata | None:
    """Our owner element (libvirt keeps one element per namespace in ``<metadata>``), None when absent
    or unreadable (a domain whose owner we cannot read is treated as not ours: never touched)."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OWNER_NS, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return None
        raise
    try:
        el = ET.fromstring(text)
        for child in el.iter():  # libvirt hands the element back without its namespace
            if not child.tag.startswith("{"):
                child.tag = f"{{{OWNER_NS}}}{child.tag}"
        return OwnerMetadata.from_xml(el) if el.tag == OWNER_TAG else None
    except (ET.ParseError, DomainXmlError):
        return None


def owner_of(conn: libvirt.virConnect, uuid: str) -> OwnerMetadata | None:
    """The owner recorded in the domain with this UUID now (DomainNotFound when it is gone)."""
    with translated():
        return _owner(conn.lookupByUUIDString(uuid))


def list_domains(conn: libvirt.virConnect, *, known: Collection[str] = (), disks: bool = False) -> list[DomainSeen]:
    """Every domain of the host. The owner is read for domains whose UUID is not in ``known`` (the
    UUIDs of live VMs, whose owner we know); ``disks``: also read what each domain's disks use (the
    persistent and, when running, the live definition)."""
    with translated():
        domains = conn.listAllDomains(0)
        active = {d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
    seen = []
    for dom in domains:
        uuid = dom.UUIDString()
        try:
            with translated():
                owner = None if uuid in known else _owner(dom)
                refs: frozenset[str] = frozenset()
                if disks:
                    refs = disk_references(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                    if uuid in active:
                        refs |= disk_references(dom.XMLDesc(0))
                seen.append(DomainSeen(uuid, dom.name(), uuid in active, owner, refs))
        except NotFound:
            continue  # undefined meanwhile
    return seen


def all_disk_references(conn: libvirt.virConnect) -> frozenset[str]:
    """What every domain of the host uses (for a volume that another host's domain may use: shared pools)."""
    refs: frozenset[str] = frozenset()
    for dom in list_domains(conn, known=(), disks=True):
        refs |= dom.disks
    return refs


def our_pools(conn: libvirt.virConnect, prefix: str) -> list[str]:
    """Names of the host's active pools that start with ``prefix`` (inactive ones list no volumes)."""
    with translated():
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        return sorted(name for p in pools if (name := p.name()).startswith(prefix))


def list_volumes(
    conn: libvirt.virConnect, pools: Collection[str], *, detailed: Collection[str] = ()
) -> list[VolumeSeen]:
    """The volumes of ``pools``, by name (one listing per pool); those in ``detailed`` pools with their
    path and backing file (one XML read per volume). A pool gone meanwhile lists nothing."""
    seen: list[VolumeSeen] = []
    for name in pools:
        try:
            with translated():
                vols = conn.storagePoolLookupByName(name).listAllVolumes(0)
        except (NotFound, InvalidState):
            continue  # undefined or stopped meanwhile
        for vol in vols:
            if name not in detailed:
                seen.append(VolumeSeen(name, vol.name()))
                continue
            try:
                with translated():
                    seen.append(_detailed(name, vol))
            except NotFound:
                continue  # deleted meanwhile
    return sorted(seen, key=lambda v: (v.pool, v.name))


def _detailed(pool: str, vol: libvirt.virStorageVol) -> VolumeSeen:
    root = ET.fromstring(vol.XMLDesc(0))
    path = root.findtext("target/path") or vol.path()
    backing = root.findtext("backingStore/path")
    return VolumeSeen(pool, vol.name(), path, backing or None)


__all__ = [
    "DomainSeen",
    "VolumeSeen",
    "all_disk_references",
    "disk_references",
    "list_domains",
    "list_volumes",
    "our_pools",
    "owner_of",
    "volume_reference",
]
