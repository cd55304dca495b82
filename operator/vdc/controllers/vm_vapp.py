"""A vApp member's start and stop order (its appliance's StartupSection) read from the VMs and appliances
the operator caches, and what it does to a VM's plan. No I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from vdc.api.appliance import ApplianceStatus
from vdc.api.virtualmachine import VirtualMachine
from vdc.controllers.vm_appliance import (
    Sibling,
    StopBehaviour,
    StopSibling,
    chosen_system,
    startup_wait,
    stop_behaviour,
    stop_wait,
)
from vdc.controllers.vm_plan import VmPlan
from vdc.kube.cache import ObjectCache

Body = dict[str, Any]
WAITING_FOR_STOP_ORDER = "WaitingForStopOrder"
"""Ready/Reconciling reason of a vApp member held back from stopping until the members after it stopped."""
GUEST_MAY_RUN = ("Running", "Starting", "Stopping", "Migrating", "Unknown")
"""Phases in which a VM's guest may be on (any other: it is off, or was never started)."""


def start_order_wait(vm: VirtualMachine, appliances: ObjectCache, vms: Iterable[Body], now: float) -> str | None:
    """Why a vApp member may not start yet (StartupSection order of its appliance), or None."""
    source = vm.spec.from_appliance
    if source is None:
        return None
    ns = str(vm.metadata["namespace"])
    body = appliances.get((source.namespace or ns, source.name))
    if body is None:
        return None
    status = ApplianceStatus.model_validate(body.get("status") or {})
    if not status.startup:
        return None
    mine = chosen_system(status, source.virtual_system).id
    siblings = []
    ages: dict[str, float] = {}
    for other in vms:
        spec = other.get("spec") or {}
        other_source = spec.get("fromAppliance") or {}
        other_ns = other["metadata"].get("namespace")
        if (
            other_ns != ns
            or other_source.get("name") != source.name
            or other_source.get("namespace", ns) != (source.namespace or ns)
        ):
            continue
        other_status = other.get("status") or {}
        system = other_source.get("virtualSystem") or status.virtual_systems[0].id
        boot = other_status.get("bootTime")
        siblings.append(Sibling(system, other_status.get("phase"), boot))
        if boot:
            ages[boot] = now - parse_time(boot)
    return startup_wait(status.startup, mine, siblings, ages)


def stop_order(body: Body, appliances: ObjectCache, vms: Iterable[Body]) -> tuple[str | None, StopBehaviour] | None:
    """For a vApp member (fromAppliance, a StartupSection): why it may not stop yet (None: it may) and
    how it stops (stopAction, stopDelay). None for any other VM. Read from the raw body: a VM being
    deleted need not be valid."""
    source = (body.get("spec") or {}).get("fromAppliance") or {}
    if not source.get("name"):
        return None
    meta = body["metadata"]
    ns = str(meta.get("namespace"))
    where = source.get("namespace") or ns
    appliance = appliances.get((where, source["name"]))
    if appliance is None:
        return None
    status = ApplianceStatus.model_validate(appliance.get("status") or {})
    if not status.startup or not status.virtual_systems:
        return None
    first = status.virtual_systems[0].id
    siblings = []
    for other in vms:
        other_meta, other_spec = other["metadata"], other.get("spec") or {}
        other_source = other_spec.get("fromAppliance") or {}
        if (
            other_meta.get("uid") == meta.get("uid")
            or other_meta.get("namespace") != ns
            or other_source.get("name") != source["name"]
            or (other_source.get("namespace") or ns) != where
        ):
            continue
        siblings.append(
            StopSibling(
                name=str(other_meta.get("name")),
                virtual_system=other_source.get("virtualSystem") or first,
                stopping=bool(other_meta.get("deletionTimestamp")) or other_spec.get("runStrategy") == "Halted",
                stopped=(other.get("status") or {}).get("phase") not in GUEST_MAY_RUN,
            )
        )
    mine = source.get("virtualSystem") or first
    return stop_wait(status.startup, mine, siblings), stop_behaviour(status.startup, mine)


def held_back(plan: VmPlan, start_wait: str | None) -> VmPlan:
    """``plan`` without its start while a vApp member before it has not started (StartupSection order)."""
    if start_wait is None or "start" not in plan.actions:
        return plan
    actions = tuple(a for a in plan.actions if a != "start")
    return dataclasses.replace(
        plan, actions=actions, phase="Starting", ready=False, reason="WaitingForStartOrder", message=start_wait
    )


def stop_ordered(plan: VmPlan, stop: tuple[str | None, StopBehaviour] | None) -> VmPlan:
    """``plan`` for a vApp member being stopped (``stop``: see ``stop_order``): without its
    shutdown or destroy while a member after it in the start order has not stopped; with stopAction
    powerOff, forced off at once instead of asked to shut down."""
    if stop is None or not {"shutdown", "destroy"} & set(plan.actions):
        return plan
    wait, behaviour = stop
    if wait is not None:
        actions = tuple(a for a in plan.actions if a not in ("shutdown", "destroy"))
        return dataclasses.replace(
            plan, actions=actions, phase="Stopping", ready=False, reason=WAITING_FOR_STOP_ORDER, message=wait
        )
    if behaviour.power_off and "shutdown" in plan.actions:
        actions = tuple("destroy" if a == "shutdown" else a for a in plan.actions)
        return dataclasses.replace(plan, actions=actions, message="forcing the domain off (vApp stopAction powerOff)")
    return plan


def parse_time(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
