"""``ClusterView``: one typed, indexed view over the object caches and the facts read from hosts.

Pure (no I/O): it reads the ``ObjectCache``s the watches keep and the host facts the Host controller
reports, and keeps its VM indexes incrementally from the VM cache's changes. Nothing here is the only
truth of anything: a VM's host is ``status.host`` (written before anything is made on a host), so the
whole view is rebuilt from the caches when the operator starts; a reservation only bridges the moment
between a placement and its status write."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vdc.api.common import LabelSelector
from vdc.api.host import HostFiles
from vdc.api.quantity import format_millicores
from vdc.cluster import hosts as _hosts
from vdc.cluster.hosts import HostInfo, host_info
from vdc.cluster.index import UsedKind, VmIndex
from vdc.cluster.requests import Requested
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.scheduler.placement import HostCandidate, format_bytes
from vdc.tenancy.view import host_files_of

if TYPE_CHECKING:
    from vdc.libvirt.host_facts import HostFacts

__all__ = ["ClusterView"]

_NO_POOLS: Mapping[str, int] = MappingProxyType({})


class ClusterView:
    def __init__(
        self,
        *,
        hosts: ObjectCache | None = None,
        vms: ObjectCache | None = None,
        pools: ObjectCache | None = None,
        switches: ObjectCache | None = None,
        appliances: ObjectCache | None = None,
        namespaces: ObjectCache | None = None,
        quotas: ObjectCache | None = None,
    ) -> None:
        self.hosts = hosts if hosts is not None else ObjectCache()
        self.vms = vms if vms is not None else ObjectCache()
        self.pools = pools if pools is not None else ObjectCache()
        self.switches = switches if switches is not None else ObjectCache()
        self.appliances = appliances if appliances is not None else ObjectCache()
        self.namespaces = namespaces if namespaces is not None else ObjectCache()
        self.quotas = quotas if quotas is not None else ObjectCache()
        self._facts: dict[str, HostFacts] = {}
        self._incoming: dict[Key, str] = {}
        """VM -> the host a migration moves it to: counted there as well as where it runs."""
        self._index = VmIndex()
        self._host_memo: dict[str, tuple[dict[str, Any], HostInfo, HostFiles]] = {}
        self._candidate_memo: dict[str, tuple[dict[str, Any], Requested, tuple[Any, ...], HostCandidate]] = {}
        """Host -> (its body, its ledger, (ready, pools, switches), the candidate made of them): frozen, so
        shared between placements while none of them changes."""
        self._pools_by_host: dict[str, dict[str, int]] | None = None
        self._switches_by_host: dict[str, frozenset[str]] | None = None
        """Per host, what runs there (every placement reads every host's): built on demand, dropped at any
        pool or switch change. Reading them off every pool's status per host grew as hosts x pools x hosts."""
        self.pools.listen(self._pools_changed)
        self.switches.listen(self._switches_changed)
        for body in self.vms:  # whatever the cache holds already; from here on, its changes
            self._index.changed(key_of(body), None, body)
        self.vms.listen(self._index.changed)

    # --- hosts ---------------------------------------------------------------------------------
    def facts(self, host: str) -> HostFacts | None:
        return self._facts.get(host)

    def note_facts(self, host: str, facts: HostFacts | None) -> None:
        """What the Host controller read from the host (None: forget it, the host is gone or unreachable)."""
        if facts is None:
            self._facts.pop(host, None)
        else:
            self._facts[host] = facts

    def host(self, name: str) -> HostInfo | None:
        body = self.hosts.get(("", name))
        return None if body is None else host_info(body, self._facts.get(name))

    def reservations_overdrawn(self, host: str) -> str | None:
        """What the VMs assigned to ``host`` reserve beyond what it can guarantee (its status.reservable),
        in words; None when it can guarantee them all (or has not said what it can). Placement never
        overdraws a host; a reservation raised on a placed VM, or a Host's spec.reserved raised, can."""
        info = self.host(host)
        if info is None:
            return None
        used = self.allocated(host)
        over = []
        if info.reservable_cpu_millis is not None and used.cpu_reservation_millis > info.reservable_cpu_millis:
            over.append(
                f"CPU {format_millicores(used.cpu_reservation_millis)} of "
                f"{format_millicores(info.reservable_cpu_millis)}"
            )
        if info.reservable_memory is not None and used.memory_reservation_bytes > info.reservable_memory:
            over.append(
                f"memory {format_bytes(used.memory_reservation_bytes)} of {format_bytes(info.reservable_memory)}"
            )
        if not over:
            return None
        return f"host {host} cannot guarantee its VMs' reservations (reserved: {', '.join(over)} it can guarantee)"

    def matching_hosts(self, selector: LabelSelector) -> list[str]:
        return _hosts.matching_hosts(self.hosts, selector)

    def pools_on(self, host: str) -> Mapping[str, int]:
        """Pool name -> bytes free for the pools Running on ``host`` (shared between calls: not to be changed)."""
        if self._pools_by_host is None:
            self._pools_by_host = _hosts.pools_by_host(self.pools)
        return self._pools_by_host.get(host, _NO_POOLS)

    def switches_on(self, host: str) -> frozenset[str]:
        if self._switches_by_host is None:
            self._switches_by_host = _hosts.switches_by_host(self.switches)
        return self._switches_by_host.get(host, frozenset())

    def _pools_changed(self, _key: Key, _old: dict[str, Any] | None, _new: dict[str, Any] | None) -> None:
        self._pools_by_host = None

    def _switches_changed(self, _key: Key, _old: dict[str, Any] | None, _new: dict[str, Any] | None) -> None:
        self._switches_by_host = None

    # --- the assignment ------------------------------------------------------------------------
    def host_of(self, vm: dict[str, Any]) -> str | None:
        """The host a VM body is assigned to: where an HA restart is moving it, else its ``status.host``, else
        its reservation."""
        uid = str(vm["metadata"].get("uid") or "")
        host = self._index.moving(uid) or (vm.get("status") or {}).get("host")
        return host or self._index.reservation(uid)

    def reserve(self, vm: dict[str, Any], host: str) -> None:
        """Placement chose ``host``: count the VM there now, before its status says so."""
        self._index.reserve(key_of(vm), str(vm["metadata"].get("uid") or ""), host)

    def move(self, vm: dict[str, Any], host: str) -> None:
        """An HA restart placed the VM on ``host`` while its status names the failed host: count it on ``host``."""
        self._index.move(key_of(vm), str(vm["metadata"].get("uid") or ""), host)

    def release(self, vm: dict[str, Any]) -> None:
        self._index.release(key_of(vm), str(vm["metadata"].get("uid") or ""))

    def forget(self, uid: str) -> None:
        """The VM is gone: drop its reservation (the cache's removal does that too)."""
        key = self.vms.key_for_uid(uid)
        if key is not None:
            self._index.release(key, uid)
        else:
            self._index.release(("", ""), uid)

    def expect(self, vm: Key, host: str) -> None:
        """A migration moves the VM to ``host``: count it there too until it has arrived or failed."""
        self._incoming[vm] = host

    def unexpect(self, vm: Key) -> None:
        self._incoming.pop(vm, None)

    def incoming(self, host: str) -> list[Key]:
        """VMs migrating to ``host``."""
        return [vm for vm, target in self._incoming.items() if target == host]

    # --- reverse indexes -----------------------------------------------------------------------
    def vms_on(self, host: str) -> list[Key]:
        return self._index.vms_on(host)

    def unplaced_vms(self) -> list[Key]:
        return self._index.unplaced()

    def vms_using(self, kind: UsedKind, name: str, namespace: str = "") -> list[Key]:
        """VMs whose spec uses the switch, pool or appliance (``namespace``: the appliance's)."""
        return self._index.vms_using(kind, (namespace, name))

    def vms_in(self, namespace: str) -> list[Key]:
        return [key_of(body) for body in self.vms.in_namespace(namespace)]

    # --- the ledger ----------------------------------------------------------------------------
    def requested(self, key: Key) -> Requested:
        """What the cached VM requests (``vdc.cluster.requested`` of its body)."""
        return self._index.requested(key)

    def allocated(self, host: str) -> Requested:
        """What the VMs assigned to ``host`` request together, reservations and incoming migrations
        included (a VM that has arrived counts once)."""
        used = self._index.allocated(host)
        for vm in self.incoming(host):
            if self._index.host_of(vm) != host:
                used = used + self._index.requested(vm)
        return used

    def ledger(self) -> dict[str, Requested]:
        """Host -> ``allocated(host)`` for every host that has VMs assigned."""
        return self._index.ledger()

    def candidates(self, exclude: Key | None = None, *, connected: Callable[[str], bool]) -> list[HostCandidate]:
        """Every Host as the scheduler sees it: allocatable from its status, allocated from the ledger
        (less ``exclude``, the VM being placed, if it counts there), pools and switches running there."""
        out = []
        excluded = self._index.host_of(exclude) if exclude is not None else None
        for body in self.hosts:
            info, files = self._host_parts(body)
            used = self.allocated(info.name)
            if excluded == info.name and exclude is not None:
                used = used - self.requested(exclude)
            ready = info.schedulable and connected(info.name)
            pools, switches = self.pools_on(info.name), self.switches_on(info.name)
            made = self._candidate_memo.get(info.name)
            if made is not None and made[0] is body and made[1] == used and made[2] == (ready, pools, switches):
                out.append(made[3])  # a placement changes one host's ledger: the others are as they were
                continue
            candidate = HostCandidate(
                name=info.name,
                labels=info.labels,
                ready=ready,
                maintenance=info.maintenance,
                allocatable_cpus=info.allocatable_cpus,
                allocatable_memory=info.allocatable_memory,
                allocated_cpus=used.vcpus,
                allocated_memory=used.memory_bytes,
                reservable_cpu_millis=info.reservable_cpu_millis,
                reservable_memory=info.reservable_memory,
                reserved_cpu_millis=used.cpu_reservation_millis,
                reserved_memory=used.memory_reservation_bytes,
                pools=pools,
                switches=switches,
                host_files=files,
            )
            self._candidate_memo[info.name] = (body, used, (ready, pools, switches), candidate)
            out.append(candidate)
        if len(self._candidate_memo) > len(out):  # a Host went: its entry with it
            current = {candidate.name for candidate in out}
            for name in [name for name in self._candidate_memo if name not in current]:
                del self._candidate_memo[name]
        return out

    def _host_parts(self, body: dict[str, Any]) -> tuple[HostInfo, HostFiles]:
        """A Host body's info and hostFiles, parsed once per body (each placement reads every Host: at
        1,000 VMs on 10 hosts that was 10,000 pydantic validations of the same few bodies). The body is
        held with its parse, so a new body (a watch event, a noted status) is never mistaken for it."""
        name = str(body["metadata"]["name"])
        cached = self._host_memo.get(name)
        if cached is not None and cached[0] is body:
            return cached[1], cached[2]
        info, files = host_info(body), host_files_of(body)
        self._host_memo[name] = (body, info, files)
        return info, files
