"""Label selectors match host labels with Kubernetes semantics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdc.api.common import LabelSelector, LabelSelectorRequirement
from vdc.scheduler.selectors import matches, requirement_matches

LABELS = {"zone": "a", "tier": "gold", "gpu": ""}


def selector(**wire: Any) -> LabelSelector:
    return LabelSelector.model_validate(wire)


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


def test_empty_selector_matches_everything() -> None:
    assert matches(LabelSelector(), {})
    assert matches(LabelSelector(), LABELS)


@pytest.mark.parametrize(
    ("match_labels", "expected"),
    [
        ({"zone": "a"}, True),
        ({"zone": "a", "tier": "gold"}, True),
        ({"gpu": ""}, True),
        ({"zone": "b"}, False),
        ({"zone": "a", "tier": "silver"}, False),
        ({"rack": "1"}, False),
        ({"rack": ""}, False),  # an absent key is not the empty value
    ],
)
def test_match_labels_requires_every_pair(match_labels: dict[str, str], expected: bool) -> None:
    assert matches(selector(matchLabels=match_labels), LABELS) is expected


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        (expr("zone", "In", "a", "b"), True),
        (expr("zone", "In", "b", "c"), False),
        (expr("rack", "In", "1"), False),  # absent key never satisfies In
        (expr("zone", "In"), False),  # In with no values matches nothing
        (expr("zone", "NotIn", "b"), True),
        (expr("zone", "NotIn", "a", "b"), False),
        (expr("rack", "NotIn", "1"), True),  # absent key satisfies NotIn
        (expr("zone", "NotIn"), True),
        (expr("zone", "Exists"), True),
        (expr("gpu", "Exists"), True),  # empty value still exists
        (expr("rack", "Exists"), False),
        (expr("rack", "DoesNotExist"), True),
        (expr("zone", "DoesNotExist"), False),
        (expr("gpu", "DoesNotExist"), False),
    ],
)
def test_each_operator(requirement: dict[str, Any], expected: bool) -> None:
    assert requirement_matches(LabelSelectorRequirement.model_validate(requirement), LABELS) is expected
    assert matches(selector(matchExpressions=[requirement]), LABELS) is expected


def test_labels_and_expressions_are_anded() -> None:
    both = selector(matchLabels={"zone": "a"}, matchExpressions=[expr("tier", "In", "gold")])
    assert matches(both, LABELS)
    assert not matches(both, {"zone": "a", "tier": "silver"})
    assert not matches(both, {"zone": "b", "tier": "gold"})
    many = selector(matchExpressions=[expr("zone", "Exists"), expr("rack", "DoesNotExist"), expr("tier", "NotIn", "x")])
    assert matches(many, LABELS)
    assert not matches(many, {**LABELS, "rack": "1"})


# --- property: agrees with a naive reference implementation ------------------------------------

KEYS = st.sampled_from(["zone", "tier", "rack", "gpu"])
VALUES = st.sampled_from(["", "a", "b", "c"])
LABEL_SETS = st.dictionaries(KEYS, VALUES, max_size=4)
REQUIREMENTS = st.builds(
    lambda key, op, values: {"key": key, "operator": op, "values": values},
    KEYS,
    st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
    st.lists(VALUES, max_size=3),
)
SELECTORS = st.builds(
    lambda labels, exprs: {"matchLabels": labels, "matchExpressions": exprs},
    st.dictionaries(KEYS, VALUES, max_size=3),
    st.lists(REQUIREMENTS, max_size=4),
)


def reference(wire: dict[str, Any], labels: Mapping[str, str]) -> bool:
    """Straight from the Kubernetes docs, on the wire form."""
    for key, value in wire["matchLabels"].items():
        if key not in labels or labels[key] != value:
            return False
    for requirement in wire["matchExpressions"]:
        key, op, values = requirement["key"], requirement["operator"], requirement["values"]
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


@given(SELECTORS, LABEL_SETS)
def test_matches_agrees_with_reference(wire: dict[str, Any], labels: dict[str, str]) -> None:
    assert matches(LabelSelector.model_validate(wire), labels) is reference(wire, labels)


@given(SELECTORS, LABEL_SETS)
def test_dropping_a_requirement_never_excludes_a_match(wire: dict[str, Any], labels: dict[str, str]) -> None:
    looser = {"matchLabels": wire["matchLabels"], "matchExpressions": wire["matchExpressions"][:-1]}
    if matches(LabelSelector.model_validate(wire), labels):
        assert matches(LabelSelector.model_validate(looser), labels)
