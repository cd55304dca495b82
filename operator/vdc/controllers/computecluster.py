"""ComputeCluster: report a cluster's members, their capacity and use, and whether HA admission control holds.

The math is the pure :func:`cluster_status` over :class:`HostSummary` values; :class:`ComputeClusterController`
reads the caches and writes the status when it changed. The same admission-control math refuses placements
(:func:`admission_refusals`: the scheduler's hook, wired in vdc.handlers); nothing is moved because of a
cluster (no DRS).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pydantic import ValidationError

from vdc.api.common import LabelSelector
from vdc.api.computecluster import (
    MAX_HOSTS_LISTED,
    ClusterResources,
    ComputeCluster,
    ComputeClusterSpec,
    ComputeClusterStatus,
    DpmStatus,
    DrsStatus,
    HAStatus,
    HostConflict,
)
from vdc.api.conditions import READY, Condition, KstatusState, get_condition, now_rfc3339, set_kstatus
from vdc.api.host import evacuating
from vdc.api.quantity import format_bytes_mi, to_bytes
from vdc.cluster.view import ClusterView
from vdc.cluster.watches import ObjectEvent, Watch
from vdc.kube.cache import Key, ObjectCache, key_of
from vdc.kube.client import KubeWriter
from vdc.scheduler.placement import format_bytes
from vdc.scheduler.selectors import matches

CONFLICT_REASON = "HostInTwoClusters"


@dataclass(frozen=True)
class Resources:
    """CPUs and memory in bytes (plain numbers for the math; the status writes quantities)."""

    cpus: int = 0
    memory: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpus - other.cpus, self.memory - other.memory)

    def clamped(self) -> Resources:
        return Resources(max(self.cpus, 0), max(self.memory, 0))

    def to_api(self) -> ClusterResources:
        return ClusterResources(cpus=self.cpus, memory=format_bytes_mi(self.memory))

    def text(self) -> str:
        return f"{self.cpus} CPUs, {format_bytes_mi(self.memory)} memory"


def _total(items: Iterable[Resources]) -> Resources:
    total = Resources()
    for item in items:
        total += item
    return total


@dataclass(frozen=True)
class HostSummary:
    """What the cluster math needs of one Host."""

    name: str
    labels: Mapping[str, str]
    ready: bool = False
    maintenance: bool = False
    allocatable: Resources = Resources()
    allocated: Resources = Resources()

    @property
    def available(self) -> bool:
        """Ready and out of maintenance: a host that VMs can be restarted on."""
        return self.ready and not self.maintenance


def _resources(value: Any) -> Resources:
    if not isinstance(value, dict):
        return Resources()
    try:
        return Resources(int(value.get("cpus") or 0), to_bytes(value.get("memory") or "0"))
    except (TypeError, ValueError, ArithmeticError):
        return Resources()


def host_summary(body: Mapping[str, Any]) -> HostSummary:
    """A Host object as the cluster math sees it (what it cannot read counts as nothing)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    ready = any(c.get("type") == READY and c.get("status") == "True" for c in status.get("conditions") or ())
    return HostSummary(
        name=str(meta.get("name")),
        labels=dict(meta.get("labels") or {}),
        ready=ready,
        maintenance=evacuating(body),
        allocatable=_resources(status.get("allocatable")),
        allocated=_resources(status.get("allocated")),
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _names(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class _Admission:
    """What an admission-control policy makes of the members: the capacity it leaves, against what runs."""

    policy: str
    what: str
    """The policy in words ("1 host failure tolerated")."""
    after: str
    needed: int
    """Hosts Ready and out of maintenance it needs to protect anything."""
    available: int
    left: Resources
    usage: Resources

    @property
    def free(self) -> Resources:
        """What may still be placed (negative where what runs exceeds what the policy leaves)."""
        return self.left - self.usage


def _admission(spec: ComputeClusterSpec, members: Sequence[HostSummary]) -> _Admission:
    ha = spec.ha
    control = ha.admission_control
    available = [h for h in members if h.available]
    usage = _total(h.allocated for h in members)
    capacity = _total(h.allocatable for h in available)
    policy = control.policy if ha.enabled else "None"
    if policy == "HostFailuresTolerated":
        failures = control.host_failures_tolerated
        largest_first = sorted(available, key=lambda h: (-h.allocatable.memory, -h.allocatable.cpus, h.name))
        return _Admission(
            policy,
            f"{_plural(failures, 'host failure')} tolerated",
            f"after {_plural(failures, 'host failure')} (the largest hosts)",
            failures + 1,
            len(available),
            _total(h.allocatable for h in largest_first[failures:]),
            usage,
        )
    if policy == "PercentageReserved":
        cpu_pct, mem_pct = control.cpu_percent_reserved, control.memory_percent_reserved
        left = Resources(capacity.cpus * (100 - cpu_pct) // 100, capacity.memory * (100 - mem_pct) // 100)
        what = f"{cpu_pct}% of CPUs and {mem_pct}% of memory reserved"
        return _Admission(policy, what, "after the reserve", 2, len(available), left, usage)
    return _Admission(policy, "no admission control", "on the available hosts", 2, len(available), capacity, usage)


def ha_status(spec: ComputeClusterSpec, members: Sequence[HostSummary]) -> HAStatus:
    """HA admission control over the members: the capacity the policy leaves, against what runs.

    Only members that are Ready and out of maintenance offer capacity; usage counts every member (the VMs of
    a failed host are the ones to restart). HostFailuresTolerated N: the capacity left once the N largest
    hosts (by allocatable memory, then CPUs) fail; it needs N+1 such hosts. PercentageReserved: the capacity
    less the reserved percentages (rounded down). None: all of it. With HA on, None and PercentageReserved
    need 2 such hosts (something to restart on). Headroom: what is left of it after usage, never negative."""
    adm = _admission(spec, members)
    what, usage, left = adm.what, adm.usage, adm.left
    headroom = adm.free.clamped()
    if not spec.ha.enabled:
        return HAStatus(state="Disabled", message="HA is not enabled", headroom=headroom.to_api())
    ready_text = f"{_plural(adm.available, 'host')} Ready and out of maintenance"
    if adm.available < adm.needed:
        message = f"{what}: needs at least {adm.needed} hosts Ready and out of maintenance, {adm.available} are"
        return HAStatus(state="NotProtected", message=message, headroom=headroom.to_api())
    short = (usage - left).clamped()
    if short.cpus or short.memory:
        parts = ([f"{short.cpus} CPUs"] if short.cpus else []) + (
            [f"{format_bytes_mi(short.memory)} memory"] if short.memory else []
        )
        message = (
            f"{what}: short of {' and '.join(parts)}: what runs ({usage.text()}) exceeds what is left {adm.after} "
            f"({left.text()})"
        )
        return HAStatus(state="NotProtected", message=message, headroom=headroom.to_api())
    message = f"{what}, {ready_text}: room for {headroom.text()} more"
    return HAStatus(state="Protected", message=message, headroom=headroom.to_api())


# --- admission control refusing placements ---------------------------------------------------------
_PARSED: dict[tuple[str, int], ComputeClusterSpec | None] = {}
"""(uid, generation) -> the spec read (None: unreadable): every placement asks (admission control, the rule
filter, demand placement), and a spec only changes with its generation."""
_PARSED_MAX = 4096


def _parsed(body: Mapping[str, Any]) -> ComputeClusterSpec | None:
    meta = body.get("metadata") or {}
    uid, generation = meta.get("uid"), meta.get("generation")
    key = (str(uid), generation) if uid and isinstance(generation, int) else None
    if key is not None and key in _PARSED:
        return _PARSED[key]
    try:
        spec: ComputeClusterSpec | None = ComputeClusterSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        spec = None  # unreadable: it claims no host (its own status says why)
    if key is not None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = spec
    return spec


def cluster_specs(clusters: Iterable[Mapping[str, Any]]) -> dict[str, ComputeClusterSpec]:
    """The clusters that claim hosts, by name: not being deleted, with a readable spec (as :meth:`others`)."""
    out: dict[str, ComputeClusterSpec] = {}
    for body in clusters:
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        spec = _parsed(body)
        if spec is not None:
            out[str(meta.get("name"))] = spec
    return out


def _memory(count: int) -> str:
    return format_bytes(count) if count > 0 else "0Mi"


def _refusal(name: str, adm: _Admission, asked: Resources) -> str | None:
    free = adm.free
    if asked.cpus <= free.cpus and asked.memory <= free.memory:
        return None
    shown = free.clamped()
    short = (asked - shown).clamped()
    short_parts = ([_plural(short.cpus, "vCPU")] if short.cpus else []) + (
        [_memory(short.memory)] if short.memory else []
    )
    return (
        f"ComputeCluster {name}: admission control ({adm.what}) leaves {_plural(shown.cpus, 'vCPU')} and "
        f"{_memory(shown.memory)} free; the VM asks {_plural(asked.cpus, 'vCPU')} and {_memory(asked.memory)} "
        f"({' and '.join(short_parts)} short)"
    )


def admission_refusals(
    clusters: Iterable[Mapping[str, Any]],
    hosts: Iterable[Mapping[str, Any]],
    host_names: Iterable[str],
    cpus: int,
    memory: int,
    source: str | None = None,
    *,
    allocated: Callable[[str], Resources] | None = None,
) -> dict[str, str]:
    """Which of ``host_names`` HA admission control refuses a VM asking ``cpus`` vCPUs and ``memory`` bytes,
    and why: host -> message. Pure, over the ComputeCluster and Host bodies.

    A host is refused when it is a member of a cluster (selected by it and by no other) with HA enabled and a
    policy other than None, and the policy's headroom (:func:`ha_status`'s math) is less than the request in
    CPUs or memory: placing the VM there would leave too little to restart the VMs of failed hosts. Each
    cluster is judged once. ``source``: the host the VM moves from (a migration): a move within one cluster
    changes nothing it counts, so that cluster refuses nothing. ``allocated``: what each host has allocated
    (the scheduler's ledger, fresher than the Hosts' status.allocated, which is what counts without it)."""
    specs = cluster_specs(clusters)
    guarded = {n for n, s in specs.items() if s.ha.enabled and s.ha.admission_control.policy != "None"}
    if not guarded:
        return {}
    summaries = [host_summary(body) for body in hosts]
    if allocated is not None:
        summaries = [replace(h, allocated=allocated(h.name)) for h in summaries]
    cluster_of: dict[str, str] = {}
    members: dict[str, list[HostSummary]] = {}
    for summary in summaries:
        claimed = [n for n, s in specs.items() if matches(s.host_selector, summary.labels)]
        if len(claimed) == 1:  # a host in two clusters is a member of none
            cluster_of[summary.name] = claimed[0]
            members.setdefault(claimed[0], []).append(summary)
    asked = Resources(cpus, memory)
    judged: dict[str, str | None] = {}
    out: dict[str, str] = {}
    for host in host_names:
        cluster = cluster_of.get(host)
        if cluster is None or cluster not in guarded or (source is not None and cluster_of.get(source) == cluster):
            continue
        if cluster not in judged:
            judged[cluster] = _refusal(cluster, _admission(specs[cluster], members[cluster]), asked)
        refused = judged[cluster]
        if refused is not None:
            out[host] = refused
    return out


def admission_refusal(
    clusters: Iterable[Mapping[str, Any]],
    hosts: Iterable[Mapping[str, Any]],
    host_name: str,
    cpus: int,
    memory: int,
    source: str | None = None,
    *,
    allocated: Callable[[str], Resources] | None = None,
) -> str | None:
    """Why HA admission control refuses placing the VM on ``host_name``, or None (:func:`admission_refusals`)."""
    refused = admission_refusals(clusters, hosts, (host_name,), cpus, memory, source, allocated=allocated)
    return refused.get(host_name)


def admission_hook(
    clusters: ObjectCache, hosts: ObjectCache, view: ClusterView
) -> Callable[[list[str], int, int, str | None], dict[str, str]]:
    """:func:`admission_refusals` over the caches, with the view's ledger for what each host has allocated
    (reservations too: VMs placed a moment ago count): the VM controller's ``admission_refusals`` hook."""

    def allocated(host: str) -> Resources:
        used = view.allocated(host)
        return Resources(used.vcpus, used.memory_bytes)

    def refusals(host_names: list[str], cpus: int, memory: int, source: str | None) -> dict[str, str]:
        return admission_refusals(clusters, hosts, host_names, cpus, memory, source, allocated=allocated)

    return refusals


def cluster_status(
    name: str,
    spec: ComputeClusterSpec,
    hosts: Sequence[HostSummary],
    others: Mapping[str, LabelSelector],
    *,
    generation: int | None = None,
    conditions: list[Condition] | None = None,
    now: str | None = None,
) -> ComputeClusterStatus:
    """The status of cluster ``name`` with ``spec``, over every Host and the other clusters' selectors.

    Members: the hosts its selector matches that no other cluster's selector matches. A host matched by
    others too is a conflict, in the status of every cluster involved: a member of none, and the cluster
    Stalled (reason HostInTwoClusters) until the selectors are disjoint."""
    selected = sorted((h for h in hosts if matches(spec.host_selector, h.labels)), key=lambda h: h.name)
    conflicts: list[HostConflict] = []
    members: list[HostSummary] = []
    for host in selected:
        claimed = sorted(
            other for other, selector in others.items() if other != name and matches(selector, host.labels)
        )
        if claimed:
            conflicts.append(HostConflict(host=host.name, other_clusters=claimed))
        else:
            members.append(host)
    ha = ha_status(spec, members)
    ready_hosts = sum(1 for h in members if h.ready)
    state: KstatusState
    if conflicts:
        state, reason = "Failed", CONFLICT_REASON
        named = _names([f"{c.host} (also in {', '.join(c.other_clusters)})" for c in conflicts])
        message = (
            f"{_plural(len(conflicts), 'host')} selected by other ComputeClusters too, a member of none: {named}; "
            "make the hostSelectors disjoint"
        )
    elif not members:
        state, reason, message = "NotReady", "NoHosts", "no Host matches hostSelector"
    elif ha.state == "NotProtected":
        state, reason, message = "NotReady", "NotProtected", f"HA not protected: {ha.message}"
    else:
        state, reason = "Current", "Counted"
        message = f"{_plural(len(members), 'host')}, {ready_hosts} Ready"
        message += f"; HA protected: {ha.message}" if ha.state == "Protected" else ""
    conds = set_kstatus(conditions or [], state, reason, message, observed_generation=generation, now=now)
    return ComputeClusterStatus(
        observed_generation=generation,
        conditions=conds,
        hosts=[h.name for h in members][:MAX_HOSTS_LISTED],
        host_count=len(members),
        ready_hosts=ready_hosts,
        capacity=_total(h.allocatable for h in members).to_api(),
        usage=_total(h.allocated for h in members).to_api(),
        conflicts=conflicts[:100],
        ha=ha,
    )


def _selector_of(body: Mapping[str, Any]) -> LabelSelector | None:
    try:
        return ComputeClusterSpec.model_validate(body.get("spec") or {}).host_selector
    except ValidationError:
        return None  # unreadable: it claims no host (its own status says why)


class DrsLook(Protocol):
    """DRS and DPM (vdc.controllers.drs.DrsController): when to look next, and a look."""

    def due(self, name: str, spec: ComputeClusterSpec, body: Mapping[str, Any]) -> float: ...

    async def look(
        self, body: dict[str, Any], spec: ComputeClusterSpec, members: Sequence[str],
        summaries: Mapping[str, HostSummary],
    ) -> tuple[DrsStatus | None, DpmStatus | None]: ...  # fmt: skip


class ComputeClusterController:
    def __init__(
        self, clusters: ObjectCache, hosts: ObjectCache, writer: KubeWriter, drs: DrsLook | None = None
    ) -> None:
        self.clusters = clusters
        self.hosts = hosts
        self.writer = writer
        self.drs = drs

    def others(self, name: str) -> dict[str, LabelSelector]:
        """The other clusters' host selectors, by name (those being deleted claim no host any more)."""
        out: dict[str, LabelSelector] = {}
        for body in self.clusters:
            meta = body["metadata"]
            if meta["name"] != name and not meta.get("deletionTimestamp"):
                selector = _selector_of(body)
                if selector is not None:
                    out[meta["name"]] = selector
        return out

    async def reconcile(self, key: Key) -> float | None:
        body = self.clusters.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        name = key[1]
        generation = body["metadata"].get("generation")
        try:
            old = ComputeClusterStatus.model_validate(body.get("status") or {})
        except ValidationError:
            old = ComputeClusterStatus()  # unreadable (an older schema): written afresh
        try:
            cluster = ComputeCluster.model_validate({**body, "status": None})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            conds = set_kstatus(
                old.conditions, "Failed", "InvalidSpec", f"invalid spec: {problems}", observed_generation=generation
            )
            await self._write(body, old, ComputeClusterStatus(observed_generation=generation, conditions=conds))
            return None
        summaries = [host_summary(h) for h in self.hosts]
        status = cluster_status(
            name, cluster.spec, summaries, self.others(name), generation=generation, conditions=old.conditions
        )
        spec = cluster.spec
        if self.drs is None or not (spec.drs.enabled or spec.dpm.automation != "Off"):
            await self._write(body, old, status)
            return None
        wait = self.drs.due(name, spec, body)
        if wait > 0:
            status = status.model_copy(update={"drs": old.drs if spec.drs.enabled else None,
                                               "dpm": old.dpm if spec.dpm.automation != "Off" else None})  # fmt: skip
            await self._write(body, old, status)
            return wait
        by_name = {h.name: h for h in summaries}
        drs, dpm = await self.drs.look(body, spec, status.hosts, by_name)
        if drs is not None:
            unchanged = old.drs is not None and old.drs.model_copy(update={"last_run": None}) == drs
            drs = drs.model_copy(update={"last_run": old.drs.last_run if unchanged and old.drs else now_rfc3339()})
        status = status.model_copy(update={"drs": drs, "dpm": dpm})
        await self._write(body, old, status)
        return float(spec.drs.interval_seconds)

    async def _write(self, body: dict[str, Any], old: ComputeClusterStatus, status: ComputeClusterStatus) -> None:
        wire = status.to_wire()
        if wire == (body.get("status") or {}):
            return
        sent = await self.writer.patch_status(ComputeCluster.KIND, body, wire)
        if not sent:
            return
        self.clusters.note_status(key_of(body), sent)
        for reason, message, warning in state_changes(old, status):
            await self.writer.event(ComputeCluster.KIND, body, reason, message, warning=warning)


def state_changes(old: ComputeClusterStatus, new: ComputeClusterStatus) -> list[tuple[str, str, bool]]:
    """The Events a status change is worth: (reason, message, warning), only when a state changed (the Ready
    reason, or the HA state), never for counts moving."""
    said: list[tuple[str, str, bool]] = []
    before, after = get_condition(old.conditions, READY), get_condition(new.conditions, READY)
    turned = after is not None and (before is None or (before.status, before.reason) != (after.status, after.reason))
    if turned and after is not None and after.reason in (CONFLICT_REASON, "InvalidSpec", "NoHosts"):
        said.append((after.reason, after.message, True))
    old_ha = old.ha.state if old.ha else None
    new_ha = new.ha.state if new.ha else None
    if new.ha is not None and new_ha != old_ha and not (old_ha is None and new_ha == "Disabled"):
        said.append((f"HA{new_ha}", new.ha.message, new_ha == "NotProtected"))
    return said


# --- what makes a cluster count again ---------------------------------------------------------------
_HOST_STATUS_FIELDS = ("allocatable", "allocated")


def host_may_change_clusters(event: ObjectEvent) -> bool:
    """Whether a Host event may change a cluster's status: the host came or went, its labels or spec
    (maintenance) changed, it turned Ready or not, or its allocatable or allocated amounts moved (a Host's
    own status writes otherwise change nothing a cluster counts: lastSeen, domain counts)."""
    if event.deleted or event.old is None or event.changed or event.labels_changed:
        return True
    new, old = event.body.get("status") or {}, event.old.get("status") or {}
    if any(new.get(f) != old.get(f) for f in _HOST_STATUS_FIELDS):
        return True
    return host_summary(event.body).ready != host_summary(event.old).ready


def watches(clusters: ObjectCache) -> tuple[Watch, ...]:
    """A Host change requeues every cluster (membership is by label; conflicts span clusters); a cluster's
    spec change or deletion requeues every other cluster (its selector may free or claim their hosts)."""

    def every_cluster(_: ClusterView, event: ObjectEvent) -> list[Key]:
        return [key_of(b) for b in clusters] if host_may_change_clusters(event) else []

    def other_clusters(_: ClusterView, event: ObjectEvent) -> list[Key]:
        if not (event.deleted or event.changed):
            return []  # our own status write coming back
        return [key for key in (key_of(b) for b in clusters) if key != event.key]

    return (Watch(kind="Host", map=every_cluster), Watch(kind="ComputeCluster", map=other_clusters))
