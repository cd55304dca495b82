"""Orphans: domains and volumes this operator made whose VirtualMachine no longer exists.

They appear when the API server forgot VMs the hosts still hold (etcd restored from an older backup,
a VM whose finalizer was removed by hand, a VM deleted with ``vdc.dev/orphan-domain`` while its host
was away). They are counted and named in the Host's status and a metric, and removed only when an
admin asks (annotation ``vdc.dev/remove-orphans`` on the Host, or ``vdc gc --host NAME``).

Pure: what the host holds (:mod:`vdc.libvirt.inventory`) and the live VMs in, orphans out.

- A **domain** is an orphan when it carries our ownership metadata and neither its UUID nor the uid
  its metadata records is a live VirtualMachine's (a VM re-created under the same name has a new uid:
  the old domain is an orphan). Domains without our metadata are never ours.
- A **volume** is an orphan when it lies in one of our pools (``vdc-<pool>``), its name is one we give
  VM volumes (``<namespace>_<vm>_<disk>.qcow2|iso``; appliance images and uploads are named otherwise),
  no live VM of that namespace/name exists, no live VM's spec or status names it (an adopted volume, a
  clone's base), no StoragePool publishes it, no domain that is not itself an orphan uses it, and no
  volume that is not itself an orphan is backed by it.
- VMs being deleted (with a deletionTimestamp) are live. With ``namespaces`` (an operator watching only
  some namespaces), what claims another namespace is not looked at: another operator may own it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vdc.api.common import DNS_LABEL, DNS_SUBDOMAIN
from vdc.api.host import (
    ORPHANS_LISTED,
    REMOVE_ORPHANS_ANNOTATION,
    HostOrphans,
    OrphanDomain,
    OrphanOwner,
    OrphanRemoval,
    OrphanVolume,
)
from vdc.api.storagepool import POOL_PREFIX as POOL_PREFIX
from vdc.api.storagepool import libvirt_pool_name
from vdc.libvirt.inventory import DomainSeen, VolumeSeen, volume_reference

VM_VOLUME_EXTENSIONS = ("qcow2", "iso")
"""What ``disk_sources.volume_name`` is called with (blank/clone disks; cloud-init and OVF environment seeds)."""

_VM_VOLUME = re.compile(
    rf"^(?P<ns>{DNS_LABEL[1:-1]})_(?P<vm>{DNS_SUBDOMAIN[1:-1]})_(?P<disk>{DNS_LABEL[1:-1]})"
    rf"\.(?:{'|'.join(VM_VOLUME_EXTENSIONS)})$"
)


@dataclass(frozen=True)
class VolumeOwner:
    namespace: str
    vm: str
    disk: str


def volume_owner(name: str) -> VolumeOwner | None:
    """The VM a volume's name says it belongs to (``<namespace>_<vm>_<disk>.<ext>``), else None.

    Namespace, VM and disk names hold no ``_``, so appliance base images
    (``appliance_<ns>_<name>_<uid8>_<disk>.qcow2``) and uploads (``<ns>_<appliance>_upload.ova``) never
    parse as a VM's."""
    found = _VM_VOLUME.match(name)
    return VolumeOwner(found["ns"], found["vm"], found["disk"]) if found else None


@dataclass(frozen=True)
class LiveVms:
    """What the API server holds that orphans are judged against. Volumes are (libvirt pool, volume)."""

    uids: frozenset[str] = frozenset()
    names: frozenset[tuple[str, str]] = frozenset()
    volumes: frozenset[tuple[str, str]] = frozenset()
    """Volumes live VMs name (adopted volumes, clone bases, status) and StoragePools publish."""
    namespaces: frozenset[str] | None = None
    """The namespaces the operator watches; None: all."""

    @classmethod
    def of(
        cls,
        vms: Iterable[Mapping[str, Any]],
        pools: Iterable[Mapping[str, Any]] = (),
        namespaces: Sequence[str] = (),
    ) -> LiveVms:
        """From VirtualMachine and StoragePool bodies (the operator's caches)."""
        uids, names, volumes = set(), set(), set()
        for vm in vms:
            meta = vm["metadata"]
            uids.add(str(meta.get("uid") or ""))
            names.add((str(meta.get("namespace") or ""), str(meta["name"])))
            for disk in (vm.get("spec") or {}).get("disks") or []:
                source = disk.get("source") or {}
                for kind, key in (("volume", "name"), ("clone", "baseVolume")):
                    src = source.get(kind) or {}
                    if src.get("pool") and src.get(key):
                        volumes.add((libvirt_pool_name(src["pool"]), str(src[key])))
            for disk in (vm.get("status") or {}).get("disks") or []:
                if disk.get("pool") and disk.get("volume"):
                    volumes.add((libvirt_pool_name(disk["pool"]), str(disk["volume"])))
        for pool in pools:
            for published in (pool.get("spec") or {}).get("publishedVolumes") or []:
                volumes.add((libvirt_pool_name(pool["metadata"]["name"]), str(published["name"])))
        uids.discard("")
        return cls(frozenset(uids), frozenset(names), frozenset(volumes), frozenset(namespaces) or None)

    def watches(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


@dataclass(frozen=True)
class Orphans:
    domains: tuple[DomainSeen, ...] = ()
    volumes: tuple[VolumeSeen, ...] = ()


def is_orphan_domain(domain: DomainSeen, live: LiveVms) -> bool:
    owner = domain.owner
    if owner is None or not live.watches(owner.namespace):
        return False
    return domain.uuid not in live.uids and owner.uid not in live.uids


def volume_candidates(volumes: Iterable[VolumeSeen], live: LiveVms) -> list[VolumeSeen]:
    """Volumes that are orphans by their name alone (whether something still uses them is not known yet)."""
    found = []
    for vol in volumes:
        owner = volume_owner(vol.name)
        if owner is None or not vol.pool.startswith(POOL_PREFIX) or not live.watches(owner.namespace):
            continue
        if (owner.namespace, owner.vm) in live.names or (vol.pool, vol.name) in live.volumes:
            continue
        found.append(vol)
    return found


def find_orphans(
    domains: Sequence[DomainSeen],
    volumes: Sequence[VolumeSeen],
    live: LiveVms,
    in_use: frozenset[str] = frozenset(),
) -> Orphans:
    """The orphans among what a host holds.

    ``domains`` should carry their disk references (``DomainSeen.disks``) and the candidate volumes
    their path and backing file, or a volume a domain uses may be taken for an orphan. ``in_use``:
    more references that keep a volume (what domains on other hosts use, for shared pools)."""
    orphan_domains = tuple(sorted((d for d in domains if is_orphan_domain(d, live)), key=lambda d: d.name))
    gone = {d.uuid for d in orphan_domains}
    used = set(in_use)
    for domain in domains:
        if domain.uuid not in gone:
            used |= domain.disks

    def is_used(vol: VolumeSeen) -> bool:
        return (vol.path is not None and vol.path in used) or volume_reference(vol.pool, vol.name) in used

    orphans = {(v.pool, v.name): v for v in volume_candidates(volumes, live) if not is_used(v)}
    # A base whose overlay is kept is kept too, and so on down the chain.
    changed = True
    while changed:
        kept_backings = {v.backing for v in volumes if (v.pool, v.name) not in orphans and v.backing}
        keep = [key for key, v in orphans.items() if v.path is not None and v.path in kept_backings]
        for key in keep:
            del orphans[key]
        changed = bool(keep)
    return Orphans(orphan_domains, tuple(sorted(orphans.values(), key=lambda v: (v.pool, v.name))))


def _pool(libvirt_pool: str) -> str:
    return libvirt_pool.removeprefix(POOL_PREFIX)


def volume_label(vol: VolumeSeen) -> str:
    """``<StoragePool>/<volume>``: how messages and status name a volume."""
    return f"{_pool(vol.pool)}/{vol.name}"


def domain_label(domain: DomainSeen) -> str:
    return f"{domain.name} ({domain.uuid})"


def orphans_status(found: Orphans, last_removal: OrphanRemoval | None = None) -> HostOrphans:
    """What the Host's status says: both counts, the first ORPHANS_LISTED of each by name."""
    domains = []
    for d in found.domains[:ORPHANS_LISTED]:
        assert d.owner is not None
        owner = OrphanOwner(namespace=d.owner.namespace, name=d.owner.name, uid=d.owner.uid)
        domains.append(OrphanDomain(name=d.name, uuid=d.uuid, owner=owner, running=d.active))
    volumes = []
    for v in found.volumes[:ORPHANS_LISTED]:
        vo = volume_owner(v.name)
        assert vo is not None
        owner = OrphanOwner(namespace=vo.namespace, name=vo.vm)
        volumes.append(OrphanVolume(pool=_pool(v.pool), name=v.name, owner=owner))
    return HostOrphans(
        domain_count=len(found.domains),
        volume_count=len(found.volumes),
        domains=domains,
        volumes=volumes,
        last_removal=last_removal,
    )


def _listed(names: Sequence[str], limit: int = 5) -> str:
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def describe(orphans: HostOrphans) -> str:
    """One line naming the orphans (as far as the status lists them)."""
    parts = []
    if orphans.domain_count:
        names = [f"{d.name} (claims VM {d.owner.namespace}/{d.owner.name} uid {d.owner.uid})" for d in orphans.domains]
        names += ["…"] * (orphans.domain_count - len(names) > 0)
        parts.append(f"{orphans.domain_count} orphan domain(s): {_listed(names)}")
    if orphans.volume_count:
        names = [f"{v.pool}/{v.name}" for v in orphans.volumes]
        names += ["…"] * (orphans.volume_count - len(names) > 0)
        parts.append(f"{orphans.volume_count} orphan volume(s): {_listed(names)}")
    return "; ".join(parts) if parts else "no orphans"


def orphans_event(old: HostOrphans | None, new: HostOrphans, host: str) -> tuple[str, str, bool] | None:
    """(reason, message, warning) when the orphan counts changed, else None (nothing to say)."""
    before = (old.domain_count, old.volume_count) if old is not None else (0, 0)
    after = (new.domain_count, new.volume_count)
    if before == after:
        return None
    if after == (0, 0):
        return "OrphansGone", "no orphan domains or volumes left on the host", False
    how = f"nothing is removed unless asked: `vdc gc --host {host}` (annotation {REMOVE_ORPHANS_ANNOTATION})"
    return "OrphansFound", f"{describe(new)}; {how}", True


@dataclass(frozen=True)
class Removal:
    """What one removal did on a host."""

    domains: tuple[str, ...] = ()
    """Domains removed, as ``name (uuid)``."""
    volumes: tuple[str, ...] = ()
    """Volumes deleted, as ``<pool>/<volume>``."""
    kept: tuple[str, ...] = ()
    """Orphans seen before that were no longer orphans when re-checked (left alone), with why."""
    failed: tuple[str, ...] = ()
    """What could not be removed, with libvirt's message."""

    def message(self) -> str:
        parts = [f"removed {len(self.domains)} orphan domain(s)" + (f": {_listed(self.domains)}" * bool(self.domains))]
        parts.append(f"{len(self.volumes)} orphan volume(s)" + (f": {_listed(self.volumes)}" * bool(self.volumes)))
        if self.kept:
            parts.append(f"left alone (no longer orphans): {_listed(self.kept)}")
        if self.failed:
            parts.append(f"failed: {_listed(self.failed)}")
        return "; ".join(parts)[:1024]

    def status(self, token: str, time: str) -> OrphanRemoval:
        return OrphanRemoval(
            token=token[:256],
            time=time,
            domains=[d[:256] for d in self.domains[:ORPHANS_LISTED]],
            volumes=[v[:256] for v in self.volumes[:ORPHANS_LISTED]],
            failed=[f[:256] for f in self.failed[:ORPHANS_LISTED]],
            message=self.message(),
        )
