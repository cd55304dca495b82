"""``vdc power``: what it prints of a Host's power and HA state, and when the operator has acted."""

from __future__ import annotations

import pytest

from vdc.cli.main import build_parser
from vdc.cli.power import ACTIONS, describe, pending

pytestmark = pytest.mark.unit

HOST = {
    "metadata": {"name": "hv1", "annotations": {"vdc.dev/power-action": "ForceOff"}},
    "spec": {"powerManagement": {"redfish": {"endpoint": "https://bmc"}}},
    "status": {
        "power": {"state": "Off", "lastAction": {"action": "ForceOff", "reason": "Annotation", "result": "Succeeded",
                                                 "time": "2026-12-06T10:00:00Z", "message": "accepted"}},
        "ha": {"state": "Fenced", "since": "2026-12-06T10:00:01Z", "message": "powered off"},
    },
}  # fmt: skip


def test_describe_says_the_power_the_last_reset_and_the_health() -> None:
    text = describe(HOST)
    assert "host hv1: power Off" in text
    assert "last reset: ForceOff by Annotation at 2026-12-06T10:00:00Z: Succeeded (accepted)" in text
    assert "health: Fenced since 2026-12-06T10:00:01Z: powered off" in text
    assert "no spec.powerManagement" in describe({"metadata": {"name": "hv2"}, "spec": {}})


def test_a_reset_is_pending_until_the_operator_removes_the_annotation() -> None:
    assert pending(HOST) == "ForceOff"
    assert pending({"metadata": {"name": "hv1"}}) is None


def test_the_words_map_to_redfish_resets_and_status_is_the_default() -> None:
    assert ACTIONS == {"on": "On", "off": "ForceOff", "restart": "ForceRestart", "shutdown": "GracefulShutdown"}
    args = build_parser().parse_args(["power", "hv1"])
    assert args.action == "status" and args.host == "hv1"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["power", "hv1", "explode"])
