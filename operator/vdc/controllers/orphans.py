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
from dataclasses import dataclass, replace
from typing import Any, TypeVar

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
from vdc.kube.cache import Key, ObjectCache, key_of
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


Volume = tuple[str, str]
"""(libvirt pool, volume)."""


def vm_volumes(vm: Mapping[str, Any]) -> frozenset[Volume]:
    """The volumes a VirtualMachine body names: adopted volumes and clone bases in its spec, its status's disks."""
    volumes: set[Volume] = set()
    for disk in (vm.get("spec") or {}).get("disks") or []:
        source = disk.get("source") or {}
        for kind, key in (("volume", "name"), ("clone", "baseVolume")):
            src = source.get(kind) or {}
            if src.get("pool") and src.get(key):
                volumes.add((libvirt_pool_name(src["pool"]), str(src[key])))
    for disk in (vm.get("status") or {}).get("disks") or []:
        if disk.get("pool") and disk.get("volume"):
            volumes.add((libvirt_pool_name(disk["pool"]), str(disk["volume"])))
    return frozenset(volumes)


def published_volumes(pool: Mapping[str, Any]) -> frozenset[Volume]:
    """The volumes a StoragePool body publishes."""
    name = libvirt_pool_name(pool["metadata"]["name"])
    return frozenset((name, str(p["name"])) for p in (pool.get("spec") or {}).get("publishedVolumes") or [])


@dataclass(frozen=True)
class LiveVms:
    """What the API server holds that orphans are judged against. Volumes are (libvirt pool, volume)."""

    uids: frozenset[str] = frozenset()
    names: frozenset[tuple[str, str]] = frozenset()
    volumes: frozenset[Volume] = frozenset()
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
        """From VirtualMachine and StoragePool bodies (the operator's caches), walking them all: the reference
        :class:`LiveVmIndex` keeps incrementally."""
        uids: set[str] = set()
        names: set[tuple[str, str]] = set()
        volumes: set[Volume] = set()
        for vm in vms:
            meta = vm["metadata"]
            uids.add(str(meta.get("uid") or ""))
            names.add((str(meta.get("namespace") or ""), str(meta["name"])))
            volumes |= vm_volumes(vm)
        for pool in pools:
            volumes |= published_volumes(pool)
        uids.discard("")
        return cls(frozenset(uids), frozenset(names), frozenset(volumes), frozenset(namespaces) or None)

    def watches(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


@dataclass(frozen=True)
class _VmClaims:
    """What one VM body contributes to :class:`LiveVms`."""

    uids: frozenset[str]
    """Its uid (none when the body has none)."""
    names: frozenset[tuple[str, str]]
    volumes: frozenset[Volume]


_NO_CLAIMS = _VmClaims(frozenset(), frozenset(), frozenset())


def _vm_claims(vm: Mapping[str, Any]) -> _VmClaims:
    meta = vm["metadata"]
    uid = str(meta.get("uid") or "")
    name = (str(meta.get("namespace") or ""), str(meta["name"]))
    return _VmClaims(frozenset((uid,)) if uid else frozenset(), frozenset((name,)), vm_volumes(vm))


_T = TypeVar("_T")


def _recount(counts: dict[_T, int], before: frozenset[_T], after: frozenset[_T]) -> bool:
    """One holder named ``before`` and names ``after`` now; True when what is counted at all changed."""
    changed = False
    for item in before - after:
        n = counts[item] - 1
        if n:
            counts[item] = n
        else:
            del counts[item]
            changed = True
    for item in after - before:
        n = counts.get(item, 0)
        counts[item] = n + 1
        changed = changed or n == 0
    return changed


class LiveVmIndex:
    """:class:`LiveVms` kept from the VirtualMachine and StoragePool caches' changes (``ObjectCache.listen``),
    so that :meth:`live` costs nothing per VM: the Host controller asks at every Host reconcile, and walking
    every VM body then costs hosts x VMs. Each change costs what the one body names.

    Counted, not just collected: two VMs (or a VM and a StoragePool) may name the same volume, and it stays
    live until the last one lets go. The snapshot :meth:`live` returns is rebuilt only when a set changed
    (most VM changes, status writes among them, change none)."""

    def __init__(self, namespaces: Sequence[str] = ()) -> None:
        self._vms: dict[Key, _VmClaims] = {}
        self._pools: dict[Key, frozenset[Volume]] = {}
        self._uids: dict[str, int] = {}
        self._names: dict[tuple[str, str], int] = {}
        self._volumes: dict[Volume, int] = {}
        """Counted once per VM and per StoragePool that names it."""
        self._live = LiveVms(namespaces=frozenset(namespaces) or None)
        self._stale_uids = self._stale_names = self._stale_volumes = False

    def follow(self, vms: ObjectCache, pools: ObjectCache) -> None:
        """What the caches hold now, then their changes."""
        for body in vms:
            self.vm_changed(key_of(body), None, body)
        for body in pools:
            self.pool_changed(key_of(body), None, body)
        vms.listen(self.vm_changed)
        pools.listen(self.pool_changed)

    def vm_changed(self, key: Key, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        """A VirtualMachine's body changed (None: absent before / removed). ``old`` is not read: what the key
        contributed is kept."""
        before = self._vms.pop(key, _NO_CLAIMS)
        after = _vm_claims(new) if new is not None else _NO_CLAIMS
        if new is not None:
            self._vms[key] = after
        if after == before:
            return
        self._stale_uids |= _recount(self._uids, before.uids, after.uids)
        self._stale_names |= _recount(self._names, before.names, after.names)
        self._stale_volumes |= _recount(self._volumes, before.volumes, after.volumes)

    def pool_changed(self, key: Key, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        """A StoragePool's body changed (None: absent before / removed)."""
        before = self._pools.pop(key, frozenset())
        after = published_volumes(new) if new is not None else frozenset()
        if after:
            self._pools[key] = after
        self._stale_volumes |= _recount(self._volumes, before, after)

    def live(self) -> LiveVms:
        """The same as ``LiveVms.of`` over the bodies the caches hold now (an immutable snapshot)."""
        if self._stale_uids:
            self._live = replace(self._live, uids=frozenset(self._uids))
            self._stale_uids = False
        if self._stale_names:
            self._live = replace(self._live, names=frozenset(self._names))
            self._stale_names = False
        if self._stale_volumes:
            self._live = replace(self._live, volumes=frozenset(self._volumes))
            self._stale_volumes = False
        return self._live


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
