"""Hosts as placement and realisation see them: labels, schedulable, facts, what pools and switches
run there, and which hosts a selector matches. Pure functions over cached bodies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vdc.api.common import LabelSelector
from vdc.api.conditions import READY
from vdc.api.host import evacuating
from vdc.api.quantity import millicores, to_bytes
from vdc.scheduler.selectors import matches

if TYPE_CHECKING:
    from vdc.libvirt.host_facts import HostFacts

__all__ = ["HostInfo", "host_info", "matching_hosts", "pools_by_host", "schedulable", "switches_by_host"]

Body = Mapping[str, Any]


def schedulable(body: Body) -> bool:
    """Whether the Host's status says Ready=True (its libvirt answered at its last reconcile)."""
    status = body.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == READY), None)
    return bool(ready and ready.get("status") == "True")


@dataclass(frozen=True, kw_only=True)
class HostInfo:
    """One Host: what its object says and what was read from it (``facts``: None until connected)."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    schedulable: bool = False
    maintenance: bool = False
    deleting: bool = False
    allocatable_cpus: int = 0
    allocatable_memory: int = 0
    reservable_cpu_millis: int | None = None
    """What VMs' reservations may guarantee here (status.reservable); None: the Host has not said yet."""
    reservable_memory: int | None = None
    facts: HostFacts | None = None


def host_info(body: Body, facts: HostFacts | None = None) -> HostInfo:
    meta, status = body["metadata"], body.get("status") or {}
    alloc = status.get("allocatable") or {}
    try:
        memory = to_bytes(str(alloc.get("memory", "0")))
    except (ValueError, TypeError, ArithmeticError):
        memory = 0
    reservable = status.get("reservable")
    cpu_millis = memory_reservable = None
    if isinstance(reservable, Mapping):
        try:
            cpu_millis = millicores(str(reservable.get("cpu", "0")))
            memory_reservable = to_bytes(str(reservable.get("memory", "0")))
        except (ValueError, TypeError, ArithmeticError):
            cpu_millis = memory_reservable = None
    return HostInfo(
        name=str(meta["name"]),
        labels=meta.get("labels") or {},
        schedulable=schedulable(body),
        maintenance=evacuating(body),
        deleting=bool(meta.get("deletionTimestamp")),
        allocatable_cpus=int(alloc.get("cpus", 0)),
        allocatable_memory=memory,
        reservable_cpu_millis=cpu_millis,
        reservable_memory=memory_reservable,
        facts=facts,
    )


def matching_hosts(hosts: Iterable[Body], selector: LabelSelector) -> list[str]:
    """Hosts a pool or switch is realised on: not being deleted, labels matching ``selector``, Ready. Sorted."""
    return sorted(
        str(body["metadata"]["name"])
        for body in hosts
        if not body["metadata"].get("deletionTimestamp")
        and matches(selector, body["metadata"].get("labels") or {})
        and schedulable(body)
    )


def pools_by_host(pools: Iterable[Body]) -> dict[str, dict[str, int]]:
    """Host -> pool name -> bytes free (less reserved), for pools Running there: what the scheduler sees."""
    free: dict[str, dict[str, int]] = {}
    for body in pools:
        for entry in (body.get("status") or {}).get("hosts", []):
            if entry.get("state") == "Running" and entry.get("host"):
                free.setdefault(str(entry["host"]), {})[body["metadata"]["name"]] = to_bytes(
                    entry.get("available") or "0"
                )
    return free


def switches_by_host(switches: Iterable[Body]) -> dict[str, frozenset[str]]:
    """Host -> the switches Active there: what the scheduler sees."""
    active: dict[str, set[str]] = {}
    for body in switches:
        for entry in (body.get("status") or {}).get("hosts", []):
            if entry.get("state") == "Active" and entry.get("host"):
                active.setdefault(str(entry["host"]), set()).add(body["metadata"]["name"])
    return {host: frozenset(names) for host, names in active.items()}
