"""Reverse indexes over the VirtualMachine cache, kept incrementally from its changes (never a scan per
query: the scale benchmark has thousands of VMs): the VM -> host assignment (``status.host``, else a
reservation made at placement before that status is written), ``vms_on(host)``, the unplaced VMs,
``vms_using(kind, name)`` for switches, pools and appliances, and the allocation ledger per host."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from vdc.cluster.requests import NOTHING, Requested, requested
from vdc.kube.cache import Key

__all__ = ["UsedKind", "VmEntry", "VmIndex", "entry_of", "references"]

UsedKind = Literal["VirtualSwitch", "StoragePool", "Appliance"]
Ref = tuple[UsedKind, Key]
"""A kind and the (namespace, name) key of an object of it ("" namespace: cluster-scoped)."""


def references(vm: Mapping[str, Any]) -> frozenset[Ref]:
    """The switches (``spec.interfaces[].switch``), pools (any disk source's ``pool``) and appliances
    (``spec.fromAppliance``, clone disks' ``appliance``; namespace defaults to the VM's) a VM body uses."""
    meta, spec = vm["metadata"], vm.get("spec") or {}
    own = str(meta.get("namespace") or "")
    refs: set[Ref] = set()
    for nic in spec.get("interfaces") or []:
        if isinstance(nic, Mapping) and nic.get("switch"):
            refs.add(("VirtualSwitch", ("", str(nic["switch"]))))
    appliances = [spec.get("fromAppliance") or {}]
    for disk in spec.get("disks") or []:
        for source in ((disk.get("source") or {}) if isinstance(disk, Mapping) else {}).values():
            if not isinstance(source, Mapping):
                continue
            if source.get("pool"):
                refs.add(("StoragePool", ("", str(source["pool"]))))
            appliances.append(source.get("appliance") or {})
    for ref in appliances:
        if isinstance(ref, Mapping) and ref.get("name"):
            refs.add(("Appliance", (str(ref.get("namespace") or own), str(ref["name"]))))
    return frozenset(refs)


@dataclass(frozen=True)
class VmEntry:
    """What the indexes hold about one VM."""

    uid: str
    host: str | None
    """Its assignment: ``status.host``, else its reservation, else None (unplaced)."""
    requested: Requested
    refs: frozenset[Ref]


def entry_of(vm: Mapping[str, Any], reserved: str | None) -> VmEntry:
    host = (vm.get("status") or {}).get("host") or reserved
    return VmEntry(str(vm["metadata"].get("uid") or ""), host or None, requested(vm), references(vm))


def _entry_inputs(vm: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What :func:`entry_of` reads of a body: its spec through ``metadata.generation`` (None: a body without
    one, compared in full)."""
    meta, status = vm["metadata"], vm.get("status") or {}
    if meta.get("generation") is None:
        return None
    return meta.get("uid"), meta.get("namespace"), meta["generation"], status.get("host"), status.get("disks")


class VmIndex:
    """Fed ``(key, old, new)`` by the VM cache (see ``ObjectCache.listen``); reservations by uid."""

    def __init__(self) -> None:
        self._entries: dict[Key, VmEntry] = {}
        self._on: dict[str, dict[Key, None]] = {}
        self._unplaced: dict[Key, None] = {}
        self._using: dict[Ref, dict[Key, None]] = {}
        self._ledger: dict[str, Requested] = {}
        self._reserved: dict[str, str] = {}
        """uid -> host chosen at placement (``status.host`` wins when both are there), until the VM goes."""
        self._bodies: dict[Key, Mapping[str, Any]] = {}
        self._moving: dict[str, str] = {}
        """uid -> the host an HA restart placed the VM on while its status.host still names the failed host:
        it wins over status.host until the status names it (see :meth:`move`)."""

    # --- feeding -------------------------------------------------------------------------------
    def changed(self, key: Key, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        if new is None:
            self._bodies.pop(key, None)
            entry = self._entries.get(key)
            if entry is not None:
                self._reserved.pop(entry.uid, None)
                self._moving.pop(entry.uid, None)
            self._set(key, None)
            return
        self._bodies[key] = new
        inputs = _entry_inputs(new)
        if inputs is not None and old is not None and key in self._entries and _entry_inputs(old) == inputs:
            return  # a status write, say: the same entry (4 watch events per new VM, 1 changes it)
        # The reservation stays while the VM lives, even once its status says the host: a watch event
        # older than our own status write (no status.host yet) can still arrive, and the VM must not
        # count as unplaced then (the quota and the capacity would admit one VM too many).
        self._set(key, self._entry(new))

    def _entry(self, body: Mapping[str, Any]) -> VmEntry:
        uid = str(body["metadata"].get("uid") or "")
        moving = self._moving.get(uid)
        if moving is not None:
            if (body.get("status") or {}).get("host") != moving:
                return VmEntry(uid, moving, requested(body), references(body))
            del self._moving[uid]  # its status says so now
        return entry_of(body, self._reserved.get(uid))

    def move(self, key: Key, uid: str, host: str) -> None:
        """An HA restart placed the VM on ``host``: count it there at once, although its status.host names
        the failed host until the restart's status write comes back (the next restart placed meanwhile sees
        it there, not on the dead host)."""
        self._moving[uid] = host
        self.reserve(key, uid, host)

    def moving(self, uid: str) -> str | None:
        return self._moving.get(uid)

    def reserve(self, key: Key, uid: str, host: str) -> None:
        """Count the VM on ``host`` from now on, before its status says so (the quota, the capacity and the
        next placement see it at once); dropped when the VM goes or the placement is undone."""
        self._reserved[uid] = host
        body = self._bodies.get(key)
        if body is not None and str(body["metadata"].get("uid")) == uid:
            self._set(key, self._entry(body))

    def release(self, key: Key, uid: str) -> None:
        """Drop a reservation (the VM's deletion ran, or its placement was undone)."""
        self._moving.pop(uid, None)
        if self._reserved.pop(uid, None) is not None:
            body = self._bodies.get(key)
            if body is not None and str(body["metadata"].get("uid")) == uid:
                self._set(key, self._entry(body))

    def _set(self, key: Key, entry: VmEntry | None) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            if old.host is None:
                self._unplaced.pop(key, None)
            else:
                _discard(self._on, old.host, key)
                self._ledger[old.host] = self._ledger.get(old.host, NOTHING) - old.requested
                if self._ledger[old.host] == NOTHING and old.host not in self._on:
                    del self._ledger[old.host]
            for ref in old.refs:
                _discard(self._using, ref, key)
        if entry is None:
            return
        self._entries[key] = entry
        if entry.host is None:
            self._unplaced[key] = None
        else:
            self._on.setdefault(entry.host, {})[key] = None
            self._ledger[entry.host] = self._ledger.get(entry.host, NOTHING) + entry.requested
        for ref in entry.refs:
            self._using.setdefault(ref, {})[key] = None

    # --- queries -------------------------------------------------------------------------------
    def host_of(self, key: Key) -> str | None:
        entry = self._entries.get(key)
        return entry.host if entry is not None else None

    def reservation(self, uid: str) -> str | None:
        return self._reserved.get(uid)

    def vms_on(self, host: str) -> list[Key]:
        return list(self._on.get(host, {}))

    def unplaced(self) -> list[Key]:
        return list(self._unplaced)

    def vms_using(self, kind: UsedKind, key: Key) -> list[Key]:
        return list(self._using.get((kind, key), {}))

    def allocated(self, host: str) -> Requested:
        """What the VMs assigned to ``host`` (reservations included) request together."""
        return self._ledger.get(host, NOTHING)

    def ledger(self) -> dict[str, Requested]:
        return dict(self._ledger)

    def requested(self, key: Key) -> Requested:
        entry = self._entries.get(key)
        return entry.requested if entry is not None else NOTHING

    def keys(self) -> Iterable[Key]:
        return list(self._entries)


def _discard(index: dict[Any, dict[Key, None]], where: Any, key: Key) -> None:
    keys = index.get(where)
    if keys is not None:
        keys.pop(key, None)
        if not keys:
            del index[where]
