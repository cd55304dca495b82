"""Reconcile errors reach status (``controllers.failures``): Ready=False with the first line,
Reconciling=True, observedGeneration, and the kind's own status fields kept."""

from __future__ import annotations

from vdc.controllers.errors import first_line
from vdc.controllers.failures import REASON, failed_status, ready_message


def conditions(status: dict[str, object]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c.get("message", "")) for c in status["conditions"]}  # type: ignore[attr-defined]


def test_the_first_line_of_an_error_without_its_traceback() -> None:
    assert first_line(RuntimeError("\n  conflict on x  \nTraceback (most recent call last):\n...")) == "conflict on x"
    assert first_line(TimeoutError()) == "TimeoutError"


def test_a_status_less_object_gets_generation_and_the_error() -> None:
    status = failed_status({}, 3, "boom")
    assert status["observedGeneration"] == 3
    assert conditions(status) == {
        "Ready": ("False", REASON, "boom"),
        "Reconciling": ("True", REASON, "boom"),
        "Stalled": ("False", REASON, ""),
    }
    assert ready_message(status) == "boom"


def test_the_kinds_own_fields_and_conditions_stay() -> None:
    old = {"phase": "Active", "conditions": [{"type": "Scheduled", "status": "True", "reason": "Placed"}]}
    status = failed_status(old, 1, "api down")
    assert status["phase"] == "Active"
    assert conditions(status)["Scheduled"] == ("True", "Placed", "")
    assert conditions(status)["Ready"] == ("False", REASON, "api down")
