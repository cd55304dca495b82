"""Placement of a VM on a host: filters, then scoring. Pure: no I/O, no Kubernetes, no libvirt.

``place`` runs every host through ``FILTERS`` in order; the first filter that rejects a host gives
the reason it was rejected. The feasible hosts are ranked by the policy's ``Scorer``s (lexicographic,
lower key is better; the last one is always the host name, so the result is deterministic whatever
the order of the input). Add a filter by appending a function to ``FILTERS``; add a policy by adding
an entry to ``POLICIES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from vdc.api.common import LabelSelector
from vdc.api.host import HostFiles
from vdc.api.quantity import format_millicores
from vdc.scheduler.selectors import matches
from vdc.tenancy.access import Tenant, host_files_refusal

__all__ = [
    "DEFAULT_POLICY",
    "FILTERS",
    "POLICIES",
    "Filter",
    "HostCandidate",
    "Placement",
    "PlacementRequest",
    "Policy",
    "Rejection",
    "Scorer",
    "Shortfall",
    "check",
    "format_bytes",
    "format_cpus",
    "place",
]

Policy = Literal["Spread", "Pack", "Demand"]
"""Spread: the host with the most free memory after placement. Pack: the least that still fits. Demand: the
host with the least measured load (DRS's initial placement), then as Spread."""

DEFAULT_POLICY: Policy = "Spread"
"""The policy used when none is given; the one place it is chosen."""


# --------------------------------------------------------------------------------------------------
# Inputs and result


@dataclass(frozen=True, kw_only=True)
class HostCandidate:
    """What the scheduler knows about one host. Memory and pool sizes are bytes."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ready: bool = True
    maintenance: bool = False
    allocatable_cpus: int
    allocatable_memory: int
    allocated_cpus: int = 0
    allocated_memory: int = 0
    reservable_cpu_millis: int | None = None
    """CPU (thousandths of a host CPU) VMs' reservations may guarantee here: its CPUs less its own
    reservation, never overcommitted. None: not known yet (a VM with a reservation cannot go there)."""
    reservable_memory: int | None = None
    reserved_cpu_millis: int = 0
    """What the VMs assigned here reserve together."""
    reserved_memory: int = 0
    pools: Mapping[str, int] = field(default_factory=dict)
    """Ready storage pools on this host: pool name -> free bytes."""
    switches: frozenset[str] = frozenset()
    """Virtual switches realised on this host."""
    host_files: HostFiles = field(default_factory=HostFiles)
    """Directories whose files tenants may name (spec.hostFiles)."""
    admission_refusal: str | None = None
    """Why the host's ComputeCluster's HA admission control refuses this VM (judged by the caller for the
    request at hand: vdc.controllers.computecluster.admission_refusals), None when it does not."""
    demand_load: float | None = None
    """The host's measured load (the higher of CPU demand over its CPUs and memory over its memory) when its
    ComputeCluster places by demand (DRS PartiallyAutomated or FullyAutomated), else None (policy Demand)."""
    rule_refusal: str | None = None
    """Why a must rule of a ComputeCluster (affinity, anti-affinity, VM-Host) forbids this VM on this host
    (judged by the caller: vdc.controllers.drs.rules_hook), None when none does."""

    @property
    def free_cpus(self) -> int:
        return self.allocatable_cpus - self.allocated_cpus

    @property
    def free_memory(self) -> int:
        return self.allocatable_memory - self.allocated_memory


@dataclass(frozen=True, kw_only=True)
class PlacementRequest:
    """What one VM needs. Memory and pool sizes are bytes."""

    cpus: int
    memory: int
    cpu_reservation_millis: int = 0
    """spec.qos.cpu.reservation in thousandths of a host CPU."""
    memory_reservation: int = 0
    pinned_host: str | None = None
    """spec.host: only this host may be chosen (it must still pass every filter)."""
    selector: LabelSelector = field(default_factory=LabelSelector)
    pool_bytes: Mapping[str, int] = field(default_factory=dict)
    """Pool name -> bytes the VM needs there (0: the pool must be present, nothing is allocated)."""
    switches: frozenset[str] = frozenset()
    images: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Base images the VM's disks start from (an appliance's name) -> the hosts that hold them."""
    host_files: tuple[str, ...] = ()
    """Host files the VM names (kernel, initrd): the host must allow them to ``tenant``."""
    tenant: Tenant = field(default_factory=lambda: Tenant(""))


@dataclass(frozen=True)
class Placement:
    """The outcome of ``place``.

    ``host`` is None when nothing fits; ``reason`` is a human message either way. ``rejected`` maps
    every rejected host to why; ``feasible`` lists the hosts that passed every filter, best first.
    """

    host: str | None
    reason: str
    rejected: Mapping[str, str]
    feasible: tuple[str, ...]


# --------------------------------------------------------------------------------------------------
# Formatting

_BINARY_SUFFIXES = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def format_bytes(count: int) -> str:
    """A byte count as a Kubernetes-style binary quantity: ``4Gi``, ``512Mi``, ``1.5Gi``, ``100``.

    Exact multiples print without decimals; anything else is rounded *down* to one decimal (so a
    free amount is never overstated: 4Gi less one byte is ``3.9Gi``), and a kept ``.0`` means
    "not exact".
    """
    if count < 0:
        return "-" + format_bytes(-count)
    for suffix, unit in _BINARY_SUFFIXES:
        if count >= unit:
            if count % unit == 0:
                return f"{count // unit}{suffix}"
            tenths = count * 10 // unit
            return f"{tenths // 10}.{tenths % 10}{suffix}"
    return str(count)


def format_cpus(count: int) -> str:
    return f"{count} CPU" if count == 1 else f"{count} CPUs"


# --------------------------------------------------------------------------------------------------
# Filters


@dataclass(frozen=True)
class Shortfall:
    """A resource that did not fit: what was needed and what was free (bytes or CPUs)."""

    need: int
    free: int
    unit: Literal["bytes", "cpus", "millicores"]

    def format(self, amount: int) -> str:
        if self.unit == "millicores":
            return format_millicores(amount)
        return format_bytes(amount) if self.unit == "bytes" else str(amount)


@dataclass(frozen=True)
class Rejection:
    """Why a filter rejected a host.

    ``singular``/``plural`` are the phrase used in the aggregated message ("1 lacks pool 'fast'",
    "2 lack pool 'fast'") and together identify the group; ``detail`` is the per-host message.
    """

    singular: str
    plural: str
    detail: str
    shortfall: Shortfall | None = None
    said: bool = False
    """The detail is said in the aggregated message too (once for the hosts that share it)."""


Filter = Callable[[PlacementRequest, HostCandidate], Rejection | None]
"""A filter returns None when the host passes, else why it does not."""


def _same(phrase: str, detail: str | None = None) -> Rejection:
    return Rejection(phrase, phrase, detail or phrase)


def pinned_host(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """Only the pinned host (spec.host) may be chosen."""
    if request.pinned_host is None or host.name == request.pinned_host:
        return None
    return Rejection(
        f"is not the pinned host '{request.pinned_host}'",
        f"are not the pinned host '{request.pinned_host}'",
        f"not the pinned host '{request.pinned_host}'",
    )


def host_selector(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """The host's labels must match the VM's host selector."""
    if matches(request.selector, host.labels):
        return None
    return Rejection(
        "does not match the host selector",
        "do not match the host selector",
        "labels do not match the host selector",
    )


def host_files_allowed(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """The host must let the VM's namespace name the files it boots from (spec.hostFiles)."""
    refused = host_files_refusal(request.host_files, host.host_files, request.tenant)
    if refused is None:
        return None
    return Rejection("does not allow the VM's host files", "do not allow the VM's host files", refused)


def host_ready(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """The host must be Ready."""
    return None if host.ready else _same("not ready")


def not_in_maintenance(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """A host in maintenance takes no new VMs."""
    return _same("in maintenance") if host.maintenance else None


def cpu_fits(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """The VM's vCPUs must fit in the host's unallocated CPUs."""
    if request.cpus <= host.free_cpus:
        return None
    return Rejection(
        "has too little CPU",
        "have too little CPU",
        f"too little CPU: needs {request.cpus}, {max(host.free_cpus, 0)} free "
        f"({host.allocated_cpus} of {host.allocatable_cpus} allocated)",
        Shortfall(request.cpus, host.free_cpus, "cpus"),
    )


def memory_fits(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """The VM's memory must fit in the host's unallocated memory."""
    if request.memory <= host.free_memory:
        return None
    return Rejection(
        "has too little memory",
        "have too little memory",
        f"too little memory: needs {format_bytes(request.memory)}, {format_bytes(max(host.free_memory, 0))} free "
        f"({format_bytes(host.allocated_memory)} of {format_bytes(host.allocatable_memory)} allocated)",
        Shortfall(request.memory, host.free_memory, "bytes"),
    )


def reservations_fit(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """The VM's CPU and memory reservations must fit in what the host can still guarantee."""
    cpu = ("CPU", request.cpu_reservation_millis, host.reservable_cpu_millis, host.reserved_cpu_millis)
    memory = ("memory", request.memory_reservation, host.reservable_memory, host.reserved_memory)
    for what, asked, reservable, reserved in (cpu, memory):
        if asked <= 0:
            continue
        fmt = format_millicores if what == "CPU" else format_bytes
        if reservable is None:
            return Rejection(
                "has not reported what it can reserve yet",
                "have not reported what they can reserve yet",
                "has not reported what it can reserve yet (status.reservable)",
            )
        if reserved + asked > reservable:
            free = max(reservable - reserved, 0)
            return Rejection(
                f"cannot guarantee the {what} reservation",
                f"cannot guarantee the {what} reservation",
                f"cannot guarantee the {what} reservation: needs {fmt(asked)}, {fmt(free)} unreserved "
                f"({fmt(reserved)} of {fmt(reservable)} reserved)",
                Shortfall(asked, free, "millicores" if what == "CPU" else "bytes"),
            )
    return None


def pools_fit(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """Every pool the VM uses must be ready on the host with enough free space (checked by pool name)."""
    for pool in sorted(request.pool_bytes):
        need = request.pool_bytes[pool]
        if pool not in host.pools:
            return Rejection(f"lacks pool '{pool}'", f"lack pool '{pool}'", f"lacks pool '{pool}'")
        free = host.pools[pool]
        if need > free:
            return Rejection(
                f"has too little space in pool '{pool}'",
                f"have too little space in pool '{pool}'",
                f"too little space in pool '{pool}': needs {format_bytes(need)}, {format_bytes(max(free, 0))} free",
                Shortfall(need, free, "bytes"),
            )
    return None


def switches_present(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """Every switch the VM's NICs use must be realised on the host (checked by switch name)."""
    for switch in sorted(request.switches):
        if switch not in host.switches:
            return Rejection(f"lacks switch '{switch}'", f"lack switch '{switch}'", f"lacks switch '{switch}'")
    return None


def images_present(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """The base images the VM's disks are overlays on must be on the host."""
    for image, hosts in sorted(request.images.items()):
        if host.name not in hosts:
            return Rejection(
                f"lacks the images of appliance '{image}'",
                f"lack the images of appliance '{image}'",
                f"lacks the images of appliance '{image}'",
            )
    return None


def admission_control(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """A host whose ComputeCluster's HA admission control would break with the VM takes no new VM."""
    if host.admission_refusal is None:
        return None
    return Rejection(
        "would break its ComputeCluster's admission control",
        "would break their ComputeCluster's admission control",
        host.admission_refusal,
        said=True,
    )


def cluster_rules(request: PlacementRequest, host: HostCandidate) -> Rejection | None:
    """A ComputeCluster's must rule that forbids the VM on the host."""
    if host.rule_refusal is None:
        return None
    return Rejection("is forbidden by a must rule", "are forbidden by must rules", host.rule_refusal, said=True)


FILTERS: tuple[Filter, ...] = (
    pinned_host,
    host_selector,
    host_files_allowed,
    host_ready,
    not_in_maintenance,
    cpu_fits,
    memory_fits,
    reservations_fit,
    pools_fit,
    switches_present,
    images_present,
    cluster_rules,
    admission_control,
)
"""Run in this order; the first rejection is the host's reason. The VM's own constraints come first,
then the host's state, then capacity, then what the host's cluster keeps free."""


def check(request: PlacementRequest, host: HostCandidate, filters: Sequence[Filter] = FILTERS) -> Rejection | None:
    """The first filter's rejection of ``host``, or None when it passes them all."""
    return _first_rejection(request, host, filters)[1]


def _first_rejection(
    request: PlacementRequest, host: HostCandidate, filters: Sequence[Filter]
) -> tuple[int, Rejection | None]:
    for index, host_filter in enumerate(filters):
        rejection = host_filter(request, host)
        if rejection is not None:
            return index, rejection
    return len(filters), None


# --------------------------------------------------------------------------------------------------
# Scoring


def free_memory_after(request: PlacementRequest, host: HostCandidate) -> int:
    return host.free_memory - request.memory


@dataclass(frozen=True)
class Scorer:
    """One ranking criterion: ``key`` (lower is better) and how to say that a host won on it."""

    description: str
    key: Callable[[PlacementRequest, HostCandidate], int | str]


def most_free_memory(request: PlacementRequest, host: HostCandidate) -> int:
    return -free_memory_after(request, host)


def least_free_memory(request: PlacementRequest, host: HostCandidate) -> int:
    return free_memory_after(request, host)


def fewest_allocated_cpus(request: PlacementRequest, host: HostCandidate) -> int:
    return host.allocated_cpus


def least_demand(request: PlacementRequest, host: HostCandidate) -> int:
    return round((host.demand_load or 0.0) * 1000)  # per mille: a load that differs by less ties


def by_name(request: PlacementRequest, host: HostCandidate) -> str:
    return host.name


_BY_NAME = Scorer("name", by_name)

POLICIES: Mapping[Policy, tuple[Scorer, ...]] = {
    "Spread": (
        Scorer("the most free memory", most_free_memory),
        Scorer("the fewest allocated CPUs", fewest_allocated_cpus),
        _BY_NAME,
    ),
    "Pack": (
        Scorer("the least free memory that still fits", least_free_memory),
        _BY_NAME,
    ),
    "Demand": (
        Scorer("the least measured load", least_demand),
        Scorer("the most free memory", most_free_memory),
        Scorer("the fewest allocated CPUs", fewest_allocated_cpus),
        _BY_NAME,
    ),
}
"""Each policy's criteria, most important first; the last is always the name (determinism)."""


# --------------------------------------------------------------------------------------------------
# Placement


def place(request: PlacementRequest, hosts: Sequence[HostCandidate], policy: Policy = DEFAULT_POLICY) -> Placement:
    """Choose a host for ``request`` among ``hosts`` under ``policy``.

    Deterministic: the result does not depend on the order of ``hosts``. Host names must be unique.
    """
    names = [host.name for host in hosts]
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"duplicate host names: {', '.join(duplicates)}")
    scorers = POLICIES[policy]

    rejections: dict[str, tuple[int, Rejection]] = {}
    feasible: list[HostCandidate] = []
    for host in sorted(hosts, key=lambda h: h.name):
        index, rejection = _first_rejection(request, host, FILTERS)
        if rejection is None:
            feasible.append(host)
        else:
            rejections[host.name] = (index, rejection)

    def rank(host: HostCandidate) -> tuple[int | str, ...]:
        return tuple(scorer.key(request, host) for scorer in scorers)

    feasible.sort(key=rank)
    rejected = {name: rejection.detail for name, (_, rejection) in rejections.items()}
    ranked = tuple(host.name for host in feasible)
    if not feasible:
        return Placement(None, _failure_reason(request, len(hosts), rejections), rejected, ranked)
    return Placement(ranked[0], _success_reason(request, feasible, scorers, rank), rejected, ranked)


def _success_reason(
    request: PlacementRequest,
    ranked: Sequence[HostCandidate],
    scorers: Sequence[Scorer],
    rank: Callable[[HostCandidate], tuple[int | str, ...]],
) -> str:
    best = ranked[0]
    after = f"{format_bytes(free_memory_after(request, best))} free after placement"
    if request.pinned_host is not None:
        return f"pinned to {best.name}, which fits ({after})"
    if len(ranked) == 1:
        return f"{best.name} is the only feasible host ({after})"
    best_key = rank(best)
    decided_by = next(i for i, (a, b) in enumerate(zip(best_key, rank(ranked[1]), strict=True)) if a != b)
    reason = f"{best.name} has {scorers[0].description} ({after}) among {len(ranked)} feasible hosts"
    if decided_by > 0:
        tied = [host.name for host in ranked[1:] if rank(host)[:decided_by] == best_key[:decided_by]]
        reason += f"; tied with {', '.join(tied)}, chosen by {scorers[decided_by].description}"
    return reason


def _failure_reason(request: PlacementRequest, total: int, rejections: Mapping[str, tuple[int, Rejection]]) -> str:
    if total == 0:
        return "0/0 hosts fit: there are no hosts"
    pinned = request.pinned_host
    if pinned is not None:
        if pinned not in rejections:
            return f"0/{total} hosts fit: pinned host '{pinned}' does not exist"
        return f"0/{total} hosts fit: pinned host '{pinned}' does not fit: {rejections[pinned][1].detail}"

    # Group by phrase; biggest group first, then in filter order. Members stay in name order.
    groups: dict[tuple[str, str], list[tuple[str, Rejection]]] = {}
    first_filter: dict[tuple[str, str], int] = {}
    for name, (index, rejection) in rejections.items():
        group = (rejection.singular, rejection.plural)
        groups.setdefault(group, []).append((name, rejection))
        first_filter[group] = min(index, first_filter.get(group, index))
    ordered = sorted(groups, key=lambda group: (-len(groups[group]), first_filter[group], group[0]))

    parts = []
    for group in ordered:
        members = groups[group]
        count = len(members)
        part = f"{count} {group[0] if count == 1 else group[1]}"
        shortfalls = [(name, r.shortfall) for name, r in members if r.shortfall is not None]
        if shortfalls:
            # Where the most was free; ties go to the first name.
            name, most = min(shortfalls, key=lambda item: (-item[1].free, item[0]))
            need, free = most.format(most.need), most.format(max(most.free, 0))
            part += (
                f" (need {need}, most free {free} on {name})" if count > 1 else f" (need {need}, {free} free on {name})"
            )
        parts.append(part)
    said = dict.fromkeys(r.detail for _, r in sorted(rejections.values(), key=lambda item: item[0]) if r.said)
    return f"0/{total} hosts fit: {', '.join(parts)}" + "".join(f"; {detail}" for detail in said)
