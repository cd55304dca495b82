"""A Host's Standby (spec.powerState Standby, or DPM's annotation): evacuated as for maintenance, then
powered off through its Redfish service; powered on again when neither asks for it any more. The step to
take at one look is the pure :func:`standby_step`; the Host controller sends the reset it names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from vdc.api.host import evacuating, standby_intended

__all__ = ["LastReset", "StandbyStep", "evacuating", "last_reset", "standby_intended", "standby_step"]

StandbyPhase = Literal["EnteringStandby", "Standby", "Waking"]
RESEND_SECONDS = 120.0
"""A GracefulShutdown (or On) that has not taken effect after this long is followed by ForceOff (or sent
again)."""
REASON = "Standby"
"""status.power.lastAction.reason of the resets sent for Standby."""


@dataclass(frozen=True)
class LastReset:
    action: str
    reason: str
    age: float
    """Seconds since it was sent."""


@dataclass(frozen=True)
class StandbyStep:
    phase: StandbyPhase | None
    """None: not in Standby, nor entering or leaving it."""
    reset: Literal["GracefulShutdown", "ForceOff", "On"] | None
    message: str


def standby_step(
    *,
    intended: bool,
    power_managed: bool,
    connected: bool,
    power: str | None,
    vms_here: int,
    previous_phase: str | None,
    last: LastReset | None,
) -> StandbyStep:
    """What to do now. Entering: wait until no VM is placed here, then GracefulShutdown (ForceOff when it
    has not worked in :data:`RESEND_SECONDS`, again every such period); Off is Standby. Leaving (asked no
    more, the host was in Standby or on its way): Redfish On, Waking until libvirt answers."""
    ours = last is not None and last.reason == REASON
    if intended:
        if not power_managed:
            return StandbyStep("EnteringStandby", None, "Standby needs spec.powerManagement (Redfish) to power off")
        if vms_here:
            return StandbyStep("EnteringStandby", None, f"evacuating: {vms_here} VM(s) placed here still")
        if power == "Off":
            return StandbyStep("Standby", None, "powered off (Redfish Off)")
        if power is None:
            return StandbyStep("EnteringStandby", None, "evacuated; the Redfish service cannot be read")
        if ours and last is not None and last.action in ("GracefulShutdown", "ForceOff") and last.age < RESEND_SECONDS:
            return StandbyStep("EnteringStandby", None, f"evacuated; Redfish {last.action} sent, waiting for Off")
        tried = ours and last is not None and last.action in ("GracefulShutdown", "ForceOff")
        reset: Literal["GracefulShutdown", "ForceOff"] = "ForceOff" if tried else "GracefulShutdown"
        return StandbyStep("EnteringStandby", reset, f"evacuated; powering off (Redfish {reset})")
    if previous_phase not in ("EnteringStandby", "Standby", "Waking"):
        return StandbyStep(None, None, "")
    if connected:
        return StandbyStep(None, None, "awake: libvirt answers")
    if not power_managed or power is None:
        return StandbyStep("Waking", None, "leaving Standby: the Redfish service cannot be asked to power on")
    if power == "Off" and not (ours and last is not None and last.action == "On" and last.age < RESEND_SECONDS):
        return StandbyStep("Waking", "On", "leaving Standby: powering on (Redfish On)")
    return StandbyStep("Waking", None, f"leaving Standby: power {power}, waiting for libvirt to answer")


def last_reset(power: Mapping[str, Any] | None, now: datetime | None = None) -> LastReset | None:
    """status.power.lastAction as a :class:`LastReset` (None when there is none or its time is unreadable)."""
    action = (power or {}).get("lastAction") or {}
    if not action.get("time"):
        return None
    try:
        sent = datetime.fromisoformat(str(action["time"]).replace("Z", "+00:00"))
    except ValueError:
        return None
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)  # written without a zone: UTC, as the operator writes it
    age = ((now or datetime.now(UTC)) - sent).total_seconds()
    return LastReset(str(action.get("action")), str(action.get("reason")), age)
