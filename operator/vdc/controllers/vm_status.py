"""A VirtualMachine's status from what one reconcile found (an ``Outcome``). Pure: no I/O, no clock but
the conditions' transition times.

The orchestration (``controllers.vm``) gathers facts into an ``Outcome``; ``vm_status`` turns it into the
status to write and ``vm_events`` into the Events that go with a written change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vdc.api.conditions import READY, STALLED, Condition, set_condition, set_kstatus
from vdc.api.virtualmachine import DiskStatus, InterfaceStatus, Phase, QosStatus, VirtualMachineStatus
from vdc.controllers.vm_domain import domain_name

SCHEDULED = "Scheduled"
RESERVATION_NOT_GUARANTEED = "ReservationNotGuaranteed"
"""Reason (Scheduled=False) of a placed VM whose host reserves more than it can guarantee: the VM keeps
running there; lowering a reservation, or moving a VM away, clears it."""
RESTART_REQUIRED = "RestartRequired"
HOST_UNREACHABLE = "HostUnreachable"

State = Literal["Current", "InProgress", "Failed", "Unknown"]
"""kstatus of the VM: Current (Ready), InProgress (Reconciling), Failed (Stalled); Unknown: its host
cannot be reached (Ready=Unknown, Reconciling=True)."""


@dataclass(frozen=True)
class VmRef:
    namespace: str
    name: str
    uid: str
    generation: int | None


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Converged:
    """What converging the domain on its host established (only then are these rewritten)."""

    boot_time: str | None
    restart_required: tuple[str, ...] = ()
    qos: QosStatus | None = None
    """The tunables in force on the running domain (read back)."""


@dataclass(frozen=True)
class Outcome:
    """Everything a reconcile decided about the VM's status."""

    vm: VmRef
    phase: Phase
    state: State | None
    """None: Ready/Reconciling/Stalled stay as they are (only Scheduled may change)."""
    reason: str = ""
    message: str = ""
    host: str | None = None
    """The host the VM is placed on (also sets Scheduled=True and the domain's identity)."""
    unschedulable: tuple[str, str] | None = None
    """(reason, message) of Scheduled=False."""
    converged: Converged | None = None
    disks: list[DiskStatus] | None = None
    """None: as they were."""
    interfaces: list[InterfaceStatus] | None = None
    shutdown_requested_at: str | None = None
    events: tuple[Event, ...] = field(default=())
    """Events to emit whatever the status write does."""


def vm_status(old: VirtualMachineStatus | None, outcome: Outcome) -> VirtualMachineStatus:
    old = old or VirtualMachineStatus()
    gen = outcome.vm.generation
    conds: list[Condition] = list(old.conditions)
    if outcome.host is not None and outcome.unschedulable is None:
        conds = set_condition(conds, SCHEDULED, "True", "Scheduled", f"placed on host {outcome.host}",
                              observed_generation=gen)  # fmt: skip
    elif outcome.unschedulable is not None:  # not placed, or placed where it no longer fits (it keeps running)
        conds = set_condition(conds, SCHEDULED, "False", *outcome.unschedulable, observed_generation=gen)
    if outcome.state == "Unknown":
        conds = set_kstatus(conds, "InProgress", HOST_UNREACHABLE, outcome.message, observed_generation=gen)
        conds = set_condition(conds, READY, "Unknown", HOST_UNREACHABLE, outcome.message, observed_generation=gen)
    elif outcome.state is not None:
        conds = set_kstatus(conds, outcome.state, outcome.reason, outcome.message, observed_generation=gen)
    if outcome.converged is not None:
        if outcome.converged.restart_required:
            message = "changes take effect at the next restart: " + ", ".join(outcome.converged.restart_required)
            conds = set_condition(conds, RESTART_REQUIRED, "True", "SpecChanged", message, observed_generation=gen)
        else:
            conds = set_condition(conds, RESTART_REQUIRED, "False", "UpToDate", observed_generation=gen)
    host = outcome.host
    converged = outcome.converged
    return old.model_copy(
        update={
            "observed_generation": gen,
            "conditions": conds,
            "phase": outcome.phase,
            "printable_status": outcome.phase,
            "host": host or old.host,
            "domain_uuid": outcome.vm.uid if host else old.domain_uuid,
            "domain_name": domain_name(outcome.vm.namespace, outcome.vm.name) if host else old.domain_name,
            "boot_time": converged.boot_time if converged is not None else old.boot_time,
            "shutdown_requested_at": outcome.shutdown_requested_at,
            "restart_required_fields": list(converged.restart_required)
            if converged is not None
            else old.restart_required_fields,
            "qos": converged.qos if converged is not None else old.qos,
            "disks": outcome.disks if outcome.disks is not None else old.disks,
            "interfaces": outcome.interfaces if outcome.interfaces is not None else old.interfaces,
        }
    )


def vm_events(old: VirtualMachineStatus | None, outcome: Outcome) -> list[Event]:
    """The Events that go with writing ``vm_status(old, outcome)``: entering a stalled phase, fields that
    newly need a restart, a new reason the VM cannot be scheduled."""
    old = old or VirtualMachineStatus()
    events = []
    if outcome.state == "Failed" and old.phase != outcome.phase:
        events.append(Event(outcome.reason, outcome.message, warning=True))
    converged = outcome.converged
    if (
        converged is not None
        and converged.restart_required
        and list(converged.restart_required) != (old.restart_required_fields)
    ):
        fields = ", ".join(converged.restart_required)
        events.append(Event(RESTART_REQUIRED, f"changes take effect at the next restart: {fields}"))
    if outcome.unschedulable is not None and condition_message(old, SCHEDULED) != outcome.unschedulable[1]:
        events.append(Event("FailedScheduling", outcome.unschedulable[1], warning=True))
    return events


def condition_message(status: VirtualMachineStatus | None, type_: str) -> str | None:
    return next((c.message for c in (status.conditions if status else []) if c.type == type_), None)


def stalled_reason(status: VirtualMachineStatus) -> str | None:
    return next((c.reason for c in status.conditions if c.type == STALLED and c.status == "True"), None)
