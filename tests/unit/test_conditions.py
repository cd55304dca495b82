"""Conditions keep their transition time unless their status changes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdc.api.conditions import KstatusState, get_condition, set_condition, set_kstatus

STATUSES = st.sampled_from(["True", "False", "Unknown"])


def test_transition_time_moves_only_when_status_changes() -> None:
    conds = set_condition([], "Ready", "False", "Starting", now="2026-01-01T00:00:00Z")
    conds = set_condition(conds, "Ready", "False", "StillStarting", "msg", now="2026-01-01T00:01:00Z")
    ready = get_condition(conds, "Ready")
    assert ready is not None
    assert ready.last_transition_time == "2026-01-01T00:00:00Z"
    assert ready.reason == "StillStarting"
    conds = set_condition(conds, "Ready", "True", "Running", now="2026-01-01T00:02:00Z")
    ready = get_condition(conds, "Ready")
    assert ready is not None and ready.last_transition_time == "2026-01-01T00:02:00Z"


@given(st.lists(st.tuples(st.sampled_from(["Ready", "Stalled", "Reconciling"]), STATUSES), max_size=20))
def test_one_condition_per_type_whatever_the_sequence(updates: list[tuple[str, str]]) -> None:
    conds: list = []
    for type_, status in updates:
        conds = set_condition(conds, type_, status)  # type: ignore[arg-type]
    types = [c.type for c in conds]
    assert len(types) == len(set(types))
    for type_, status in reversed(updates):
        cond = get_condition(conds, type_)
        assert cond is not None
        if cond.status == status:
            break


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("Current", {"Ready": "True", "Reconciling": "False", "Stalled": "False"}),
        ("InProgress", {"Ready": "False", "Reconciling": "True", "Stalled": "False"}),
        ("Failed", {"Ready": "False", "Reconciling": "False", "Stalled": "True"}),
        ("NotReady", {"Ready": "False", "Reconciling": "False", "Stalled": "False"}),
    ],
)
def test_the_kstatus_triplet_is_set_together(state: KstatusState, expected: dict[str, str]) -> None:
    conds = set_kstatus([], state, "Why", "what to do", observed_generation=3)
    assert {c.type: c.status for c in conds} == expected
    assert all(c.observed_generation == 3 for c in conds)
    assert {c.type: c.message for c in conds if c.status == "True" and c.type != "Ready"} in (
        {},
        {"Reconciling": "what to do"},
        {"Stalled": "what to do"},
    )
    flipped = set_kstatus(conds, "Current", "Done", ready_message="all good")
    assert get_condition(flipped, "Ready") is not None and get_condition(flipped, "Ready").message == "all good"  # type: ignore[union-attr]
