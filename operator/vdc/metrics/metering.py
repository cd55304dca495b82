"""Metering for showback: resources allocated to running VMs, integrated over time (pure).

Each stats refresh of a host gives a ``Reading``: when it was taken and what every running VM of
ours held. Between two readings of the same host the allocation is integrated with the trapezoid
rule: a VM running at both readings is charged for the whole interval, one that started or stopped
in between for half of it (the expected value when the moment is unknown). An interval longer than
``max_gap`` (the host could not be read for a while) is not charged: we bill what we observed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vdc.cluster.requests import NOTHING, Requested
from vdc.metrics.vmstats import VmStats

__all__ = ["Allocation", "Reading", "Requested", "Usage", "integrate", "reading"]


@dataclass(frozen=True)
class Allocation:
    """What one running VM holds."""

    namespace: str
    vcpus: int
    memory_bytes: int
    disk_bytes: int


@dataclass(frozen=True)
class Reading:
    at: float
    """Monotonic seconds."""
    running: Mapping[str, Allocation]
    """Running VMs by uid."""


@dataclass(frozen=True)
class Usage:
    vcpu_seconds: float = 0.0
    memory_byte_seconds: float = 0.0
    disk_byte_seconds: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.vcpu_seconds + other.vcpu_seconds,
            self.memory_byte_seconds + other.memory_byte_seconds,
            self.disk_byte_seconds + other.disk_byte_seconds,
        )


def reading(at: float, stats: Iterable[VmStats], requested: Mapping[str, Requested]) -> Reading:
    """A reading from one host's VM stats: running VMs only; the domain's own figures first (what
    libvirt gave it), else the VM's spec (``requested`` by uid)."""
    running = {}
    for vm in stats:
        if not vm.running:
            continue
        asked = requested.get(vm.uid, NOTHING)
        running[vm.uid] = Allocation(
            namespace=vm.namespace,
            vcpus=vm.vcpus if vm.vcpus is not None else asked.vcpus,
            memory_bytes=vm.memory_bytes if vm.memory_bytes is not None else asked.memory_bytes,
            disk_bytes=vm.disk_capacity_bytes if vm.disk_capacity_bytes is not None else asked.disk_bytes,
        )
    return Reading(at, running)


def integrate(previous: Reading | None, current: Reading, *, max_gap: float) -> dict[str, Usage]:
    """Usage per namespace accrued between two readings of one host."""
    if previous is None:
        return {}
    elapsed = current.at - previous.at
    if elapsed <= 0 or elapsed > max_gap:
        return {}
    usage: dict[str, Usage] = {}
    for uid in previous.running.keys() | current.running.keys():
        before, now = previous.running.get(uid), current.running.get(uid)
        namespace = (now or before).namespace  # type: ignore[union-attr]  # one of them is set
        half = elapsed / 2
        accrued = Usage()
        for alloc in (before, now):
            if alloc is not None:
                accrued = accrued + Usage(alloc.vcpus * half, alloc.memory_bytes * half, alloc.disk_bytes * half)
        usage[namespace] = usage.get(namespace, Usage()) + accrued
    return usage
