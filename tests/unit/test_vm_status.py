"""``vm_status(old, outcome)`` and ``vm_events``: a VM's status and Events from one reconcile's outcome. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from vdc.api.conditions import Condition
from vdc.api.virtualmachine import DiskStatus, InterfaceStatus, VirtualMachineStatus
from vdc.controllers.vm_status import Converged, Event, Outcome, State, VmRef, vm_events, vm_status

REF = VmRef("shop", "web", "u-1", 3)
T0 = "2026-01-01T00:00:00Z"


def conditions(status: VirtualMachineStatus) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in status.conditions}


@pytest.mark.parametrize(
    ("state", "ready", "reconciling", "stalled"),
    [
        ("Current", "True", "False", "False"),
        ("InProgress", "False", "True", "False"),
        ("Failed", "False", "False", "True"),
        ("Unknown", "Unknown", "True", "False"),
    ],
)
def test_the_kstatus_triplet_follows_the_state(state: State, ready: str, reconciling: str, stalled: str) -> None:
    status = vm_status(None, Outcome(REF, "Running", state, "Why", "what happened"))
    got = conditions(status)
    assert (got["Ready"][0], got["Reconciling"][0], got["Stalled"][0]) == (ready, reconciling, stalled)
    assert all(c.observed_generation == 3 for c in status.conditions)
    assert status.observed_generation == 3


def test_unknown_is_the_host_unreachable_and_says_why() -> None:
    got = conditions(vm_status(None, Outcome(REF, "Unknown", "Unknown", message="host hv1: timeout", host="hv1")))
    assert got["Ready"] == ("Unknown", "HostUnreachable", "host hv1: timeout")
    assert got["Reconciling"] == ("True", "HostUnreachable", "host hv1: timeout")


def test_a_failure_says_what_to_fix_on_ready_and_stalled_only() -> None:
    got = conditions(vm_status(None, Outcome(REF, "Failed", "Failed", "UnsupportedSpec", "disk d: no pool")))
    assert got["Ready"] == ("False", "UnsupportedSpec", "disk d: no pool")
    assert got["Stalled"] == ("True", "UnsupportedSpec", "disk d: no pool")
    assert got["Reconciling"] == ("False", "UnsupportedSpec", "")
    assert "Scheduled" not in got and "RestartRequired" not in got


def test_a_host_sets_scheduled_and_the_domain_identity() -> None:
    status = vm_status(None, Outcome(REF, "Provisioning", "InProgress", "Provisioning", "placed", host="hv1"))
    assert conditions(status)["Scheduled"] == ("True", "Scheduled", "placed on host hv1")
    assert (status.host, status.domain_uuid, status.domain_name) == ("hv1", "u-1", "shop_web")


def test_without_a_host_the_old_one_and_its_domain_stay() -> None:
    old = VirtualMachineStatus(host="hv1", domain_uuid="u-1", domain_name="shop_web", phase="Running")
    status = vm_status(old, Outcome(REF, "Failed", "Failed", "AccessDenied", "no"))
    assert (status.host, status.domain_uuid, status.domain_name, status.phase) == ("hv1", "u-1", "shop_web", "Failed")


def test_unschedulable_is_scheduled_false_and_a_warning_event_once_per_reason() -> None:
    why = ("Unschedulable", "0/2 fit")
    outcome = Outcome(REF, "Scheduling", "InProgress", *why, unschedulable=why)
    status = vm_status(None, outcome)
    assert conditions(status)["Scheduled"] == ("False", "Unschedulable", "0/2 fit")
    assert conditions(status)["Reconciling"][0] == "True"
    assert vm_events(None, outcome) == [Event("FailedScheduling", "0/2 fit", warning=True)]
    assert vm_events(status, outcome) == []  # the same reason again: no new Event


def test_a_placed_vm_whose_reservation_its_host_cannot_guarantee_runs_on_scheduled_false() -> None:
    why = ("ReservationNotGuaranteed", "host hv1 cannot guarantee its VMs' reservations")
    outcome = Outcome(REF, "Running", "Current", "Running", "running", host="hv1", unschedulable=why)
    status = vm_status(None, outcome)
    assert conditions(status)["Scheduled"] == ("False", *why)
    assert (status.host, status.phase, conditions(status)["Ready"][0]) == ("hv1", "Running", "True")
    assert vm_events(None, outcome) == [Event("FailedScheduling", why[1], warning=True)]
    fits = vm_status(status, Outcome(REF, "Running", "Current", "Running", "running", host="hv1"))
    assert conditions(fits)["Scheduled"] == ("True", "Scheduled", "placed on host hv1")


def test_quota_exceeded_is_stalled_and_unscheduled() -> None:
    why = "cpu: 4 of 4 used"
    outcome = Outcome(REF, "Scheduling", "Failed", "QuotaExceeded", why, unschedulable=("QuotaExceeded", why))
    got = conditions(vm_status(None, outcome))
    assert got["Stalled"] == ("True", "QuotaExceeded", why) and got["Scheduled"][0] == "False"
    assert [e.reason for e in vm_events(None, outcome)] == ["QuotaExceeded", "FailedScheduling"]


def test_a_stall_emits_a_warning_when_the_phase_changes_only() -> None:
    outcome = Outcome(REF, "Failed", "Failed", "AddressRefused", "taken")
    assert vm_events(VirtualMachineStatus(phase="Running"), outcome) == [Event("AddressRefused", "taken", warning=True)]
    assert vm_events(VirtualMachineStatus(phase="Failed"), outcome) == []


def test_converged_sets_boot_time_and_restart_required() -> None:
    outcome = Outcome(REF, "Running", "Current", "Running", "up", host="hv1", converged=Converged(T0, ("vcpus", "os")))
    status = vm_status(None, outcome)
    assert status.boot_time == T0 and status.restart_required_fields == ["vcpus", "os"]
    assert conditions(status)["RestartRequired"] == (
        "True", "SpecChanged", "changes take effect at the next restart: vcpus, os",
    )  # fmt: skip
    assert vm_events(None, outcome) == [Event("RestartRequired", "changes take effect at the next restart: vcpus, os")]
    assert vm_events(status, outcome) == []  # the same fields: said already
    now_fine = Outcome(REF, "Running", "Current", "Running", "up", host="hv1", converged=Converged(T0))
    settled = vm_status(status, now_fine)
    assert conditions(settled)["RestartRequired"][:2] == ("False", "UpToDate") and settled.restart_required_fields == []


def test_without_converging_boot_time_and_restart_fields_stay() -> None:
    old = VirtualMachineStatus(boot_time=T0, restart_required_fields=["vcpus"])
    status = vm_status(old, Outcome(REF, "Unknown", "Unknown", message="gone", host="hv1"))
    assert status.boot_time == T0 and status.restart_required_fields == ["vcpus"]
    assert "RestartRequired" not in conditions(status)


def test_disks_and_interfaces_are_replaced_only_when_known() -> None:
    disk = DiskStatus(name="root", host="hv1", pool="p", volume="v")
    nic = InterfaceStatus(name="eth0", mac_address="52:54:00:00:00:01", ip_addresses=["10.0.0.2"], switch="lan")
    old = VirtualMachineStatus(disks=[disk], interfaces=[nic])
    kept = vm_status(old, Outcome(REF, "Provisioning", "InProgress", "WaitingForPool", "p"))
    assert kept.disks == [disk] and kept.interfaces == [nic]
    replaced = vm_status(old, Outcome(REF, "Running", "Current", disks=[], interfaces=[]))
    assert replaced.disks == [] and replaced.interfaces == []


def test_the_shutdown_request_time_is_what_the_outcome_says() -> None:
    old = VirtualMachineStatus(shutdown_requested_at=T0)
    assert vm_status(old, Outcome(REF, "Stopping", "InProgress", shutdown_requested_at=T0)).shutdown_requested_at == T0
    assert vm_status(old, Outcome(REF, "Stopped", "Current")).shutdown_requested_at is None


def test_no_state_leaves_the_triplet_alone_and_other_conditions_stay() -> None:
    old = VirtualMachineStatus(
        conditions=[
            Condition(type="Ready", status="True", reason="Running", last_transition_time=T0),
            Condition(type="Custom", status="True", reason="Mine", last_transition_time=T0),
        ]
    )
    status = vm_status(old, Outcome(REF, "Running", None))
    assert conditions(status) == {"Ready": ("True", "Running", ""), "Custom": ("True", "Mine", "")}


def test_transition_time_moves_only_when_a_condition_changes_status() -> None:
    first = vm_status(None, Outcome(REF, "Running", "Current", "Running", "up"))
    ready: Any = next(c for c in first.conditions if c.type == "Ready")
    pinned = first.model_copy(
        update={"conditions": [c.model_copy(update={"last_transition_time": T0}) for c in first.conditions]}
    )
    again = vm_status(pinned, Outcome(REF, "Running", "Current", "Running", "still up"))
    assert next(c for c in again.conditions if c.type == "Ready").last_transition_time == T0
    moved = vm_status(pinned, Outcome(REF, "Starting", "InProgress", "Starting", "starting"))
    assert next(c for c in moved.conditions if c.type == "Ready").last_transition_time != T0
    assert ready.status == "True"


def test_the_phase_is_also_the_printable_status() -> None:
    status = vm_status(None, Outcome(REF, "Stopped", "Current", "Stopped", "off"))
    assert (status.phase, status.printable_status) == ("Stopped", "Stopped")


def test_an_operation_and_other_fields_the_outcome_does_not_name_are_carried_over() -> None:
    old = VirtualMachineStatus.model_validate({"bootTime": T0, "phase": "Running"})
    volatile = {"conditions", "observed_generation"}
    new = vm_status(old, Outcome(REF, "Running", "Current"))
    assert new.model_dump(exclude=volatile) == old.model_copy(update={"printable_status": "Running"}).model_dump(
        exclude=volatile
    )
