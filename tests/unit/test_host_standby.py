"""A Host's Standby (vdc.controllers.host_standby): the pure step taken at one look when entering and
leaving Standby, the last reset read from status.power, and what asks for Standby (vdc.api.host)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vdc.api.host import DPM_STANDBY_ANNOTATION, evacuating, standby_intended
from vdc.controllers.host_standby import RESEND_SECONDS, LastReset, StandbyStep, last_reset, standby_step

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def step(
    *,
    intended: bool = True,
    power_managed: bool = True,
    connected: bool = True,
    power: str | None = "On",
    vms_here: int = 0,
    previous_phase: str | None = None,
    last: LastReset | None = None,
) -> StandbyStep:
    return standby_step(
        intended=intended,
        power_managed=power_managed,
        connected=connected,
        power=power,
        vms_here=vms_here,
        previous_phase=previous_phase,
        last=last,
    )


def ours(action: str, age: float) -> LastReset:
    return LastReset(action, "Standby", age)


# --- entering ---------------------------------------------------------------------------------------------
def test_entering_without_power_management_waits_with_no_reset() -> None:
    got = step(power_managed=False, power=None)
    assert (got.phase, got.reset) == ("EnteringStandby", None)
    assert "powerManagement" in got.message


def test_entering_waits_for_the_vms_placed_here_to_leave() -> None:
    got = step(vms_here=3, power="On")
    assert (got.phase, got.reset) == ("EnteringStandby", None)
    assert "3 VM(s)" in got.message


def test_vms_still_placed_keep_it_entering_even_when_powered_off() -> None:
    assert step(vms_here=1, power="Off").phase == "EnteringStandby"


def test_power_off_is_standby() -> None:
    got = step(power="Off", connected=False, last=ours("GracefulShutdown", 30.0))
    assert got == StandbyStep("Standby", None, got.message)


def test_unreadable_power_sends_nothing() -> None:
    got = step(power=None)
    assert (got.phase, got.reset) == ("EnteringStandby", None)
    assert "cannot be read" in got.message


def test_evacuated_host_gets_a_graceful_shutdown_first() -> None:
    got = step(power="On", last=None)
    assert (got.phase, got.reset) == ("EnteringStandby", "GracefulShutdown")


@pytest.mark.parametrize("action", ["GracefulShutdown", "ForceOff"])
def test_no_resend_within_resend_seconds(action: str) -> None:
    got = step(power="On", last=ours(action, RESEND_SECONDS - 1))
    assert (got.phase, got.reset) == ("EnteringStandby", None)
    assert action in got.message


def test_graceful_shutdown_that_did_not_work_is_followed_by_force_off() -> None:
    assert step(power="On", last=ours("GracefulShutdown", RESEND_SECONDS)).reset == "ForceOff"
    assert step(power="On", last=ours("ForceOff", RESEND_SECONDS)).reset == "ForceOff"  # never back to graceful
    assert step(power="PoweringOff", last=ours("GracefulShutdown", RESEND_SECONDS + 60)).reset == "ForceOff"


@pytest.mark.parametrize("reason", ["Annotation", "Fencing"])
def test_a_reset_sent_for_another_reason_is_not_ours(reason: str) -> None:
    # Recent: not waited for. Old: not taken for a failed GracefulShutdown of ours (no ForceOff).
    assert step(power="On", last=LastReset("GracefulShutdown", reason, 5.0)).reset == "GracefulShutdown"
    assert step(power="On", last=LastReset("GracefulShutdown", reason, 1000.0)).reset == "GracefulShutdown"
    assert step(power="On", last=LastReset("ForceOff", reason, 5.0)).reset == "GracefulShutdown"


def test_an_earlier_power_on_of_ours_is_no_reason_to_wait_or_force() -> None:
    assert step(power="On", last=ours("On", 5.0)).reset == "GracefulShutdown"


# --- leaving ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("previous", [None, "Ready", "NotReady", "Maintenance", "Connecting"])
def test_not_previously_in_a_standby_phase_is_no_phase(previous: str | None) -> None:
    got = step(intended=False, previous_phase=previous, connected=False, power="Off")
    assert got == StandbyStep(None, None, "")


@pytest.mark.parametrize("previous", ["EnteringStandby", "Standby", "Waking"])
def test_connected_again_ends_standby(previous: str) -> None:
    got = step(intended=False, previous_phase=previous, connected=True, power="On")
    assert (got.phase, got.reset) == (None, None)
    assert "libvirt answers" in got.message


def test_leaving_powers_an_off_host_on_once() -> None:
    first = step(intended=False, previous_phase="Standby", connected=False, power="Off", last=None)
    assert (first.phase, first.reset) == ("Waking", "On")
    after = step(intended=False, previous_phase="Waking", connected=False, power="Off", last=ours("On", 10.0))
    assert (after.phase, after.reset) == ("Waking", None)


def test_power_on_is_resent_after_resend_seconds() -> None:
    got = step(intended=False, previous_phase="Waking", connected=False, power="Off", last=ours("On", RESEND_SECONDS))
    assert (got.phase, got.reset) == ("Waking", "On")


def test_leaving_after_our_shutdown_powers_on() -> None:
    got = step(
        intended=False, previous_phase="Standby", connected=False, power="Off", last=ours("GracefulShutdown", 5.0)
    )
    assert got.reset == "On"


def test_a_recent_power_on_for_another_reason_does_not_stop_ours() -> None:
    got = step(
        intended=False, previous_phase="Standby", connected=False, power="Off", last=LastReset("On", "Annotation", 5)
    )
    assert got.reset == "On"


@pytest.mark.parametrize("power", ["On", "PoweringOn"])
def test_powered_host_waits_for_libvirt_without_a_reset(power: str) -> None:
    got = step(intended=False, previous_phase="Waking", connected=False, power=power)
    assert (got.phase, got.reset) == ("Waking", None)
    assert power in got.message


def test_leaving_without_power_management_is_waking_without_a_reset() -> None:
    got = step(intended=False, power_managed=False, previous_phase="Standby", connected=False, power=None)
    assert (got.phase, got.reset) == ("Waking", None)
    assert "cannot be asked" in got.message


def test_leaving_with_unreadable_power_is_waking_without_a_reset() -> None:
    got = step(intended=False, previous_phase="Standby", connected=False, power=None)
    assert (got.phase, got.reset) == ("Waking", None)


# --- last_reset -------------------------------------------------------------------------------------------
def test_last_reset_reads_action_reason_and_age_from_a_z_time() -> None:
    power = {
        "lastAction": {"action": "ForceOff", "reason": "Standby", "result": "Succeeded", "time": "2026-01-02T03:02:05Z"}
    }
    assert last_reset(power, NOW) == LastReset("ForceOff", "Standby", 120.0)


def test_last_reset_takes_an_explicit_offset() -> None:
    sent = (NOW - timedelta(seconds=30)).astimezone(UTC).isoformat()  # "+00:00"
    got = last_reset({"lastAction": {"action": "On", "reason": "Annotation", "time": sent}}, NOW)
    assert got == LastReset("On", "Annotation", 30.0)
    other_zone = "2026-01-02T05:03:05+02:00"  # 03:03:05 UTC
    got = last_reset({"lastAction": {"action": "On", "reason": "Standby", "time": other_zone}}, NOW)
    assert got is not None and got.age == 60.0


def test_last_reset_defaults_to_the_current_time() -> None:
    sent = (datetime.now(UTC) - timedelta(seconds=10)).isoformat()
    got = last_reset({"lastAction": {"action": "On", "reason": "Standby", "time": sent}})
    assert got is not None and 9.0 <= got.age < 70.0


@pytest.mark.parametrize(
    "power",
    [
        None,
        {},
        {"state": "On"},
        {"lastAction": None},
        {"lastAction": {"action": "On", "reason": "Standby"}},
        {"lastAction": {"action": "On", "reason": "Standby", "time": ""}},
        {"lastAction": {"action": "On", "reason": "Standby", "time": "yesterday"}},
    ],
)
def test_last_reset_without_a_readable_time_is_none(power: dict[str, Any] | None) -> None:
    assert last_reset(power, NOW) is None


def test_last_reset_with_a_time_without_offset_does_not_raise() -> None:
    got = last_reset({"lastAction": {"action": "On", "reason": "Standby", "time": "2026-01-02T03:02:05"}}, NOW)
    assert got is None or got.age == 120.0


# --- what asks for Standby --------------------------------------------------------------------------------
def host(
    *, power_state: str | None = None, maintenance: bool | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"uri": "test:///default"}
    if power_state is not None:
        spec["powerState"] = power_state
    if maintenance is not None:
        spec["maintenance"] = maintenance
    return {"metadata": {"name": "hv1", "annotations": annotations or {}}, "spec": spec}


def test_standby_is_intended_by_spec_power_state() -> None:
    assert standby_intended(host(power_state="Standby"))
    assert not standby_intended(host(power_state="On"))
    assert not standby_intended(host())


def test_standby_is_intended_by_the_dpm_annotation_whatever_its_value() -> None:
    assert standby_intended(host(annotations={DPM_STANDBY_ANNOTATION: "prod"}))
    assert standby_intended(host(power_state="On", annotations={DPM_STANDBY_ANNOTATION: ""}))
    assert not standby_intended(host(annotations={"vdc.dev/other": "x"}))


def test_standby_intended_tolerates_missing_and_null_parts() -> None:
    assert not standby_intended({})
    assert not standby_intended({"metadata": None, "spec": None})
    assert not standby_intended({"metadata": {"annotations": None}, "spec": {}})


def test_evacuating_for_maintenance_or_standby() -> None:
    assert evacuating(host(maintenance=True))
    assert evacuating(host(power_state="Standby"))
    assert evacuating(host(annotations={DPM_STANDBY_ANNOTATION: "prod"}))
    assert not evacuating(host(maintenance=False, power_state="On"))
    assert not evacuating({})
