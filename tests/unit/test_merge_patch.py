"""JSON merge patches (RFC 7386): ``merge_patch`` computes the fewest changes, ``apply_merge_patch``
applies them; together they round-trip any JSON document whose objects hold no nulls."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdc.kube.patch import apply_merge_patch, merge_patch

keys = st.text(alphabet="abcdé", max_size=2)  # few keys, so old and new share many
scalars = (
    st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
)


def json_values(*, nulls: bool) -> st.SearchStrategy[Any]:
    """JSON-like values; ``nulls=False`` leaves None out everywhere (a null in a patch means delete)."""
    leaves = st.none() | scalars if nulls else scalars
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
        max_leaves=8,
    )


VALUES = json_values(nulls=False)
VALUES_WITH_NULLS = json_values(nulls=True)


def documents(*, nulls: bool) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(keys, VALUES_WITH_NULLS if nulls else VALUES, max_size=5)


OLD_DOCUMENTS = documents(nulls=True)
ADDED = st.dictionaries(keys, VALUES, max_size=2)
EDITS = st.integers(0, 3)


@st.composite
def related_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """An old document and a new one made from it by edits, so that nested objects are shared."""
    old = draw(OLD_DOCUMENTS)

    def edit(value: Any, depth: int) -> Any:
        if isinstance(value, dict) and depth < 4:
            out: dict[str, Any] = {}
            for k, v in value.items():
                choice = draw(EDITS)
                if choice == 0:
                    continue  # removed
                if choice == 1 or v is None:
                    out[k] = draw(VALUES)  # replaced
                else:
                    out[k] = edit(v, depth + 1)  # kept or edited further
            out.update(draw(ADDED))  # added
            return out
        return value if value is not None else draw(scalars)

    return old, edit(old, 0)


@settings(max_examples=100)
@given(old=documents(nulls=True), new=documents(nulls=False))
def test_round_trip_of_unrelated_documents(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert apply_merge_patch(old, merge_patch(old, new)) == new


@settings(max_examples=150)
@given(pair=related_pairs())
def test_round_trip_of_edited_documents(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    old, new = pair
    assert all(v is not None for v in new.values())
    patch = merge_patch(old, new)
    assert apply_merge_patch(old, patch) == new
    # It also survives the wire.
    assert apply_merge_patch(old, json.loads(json.dumps(patch))) == new


@settings(max_examples=50)
@given(doc=documents(nulls=True))
def test_no_change_is_an_empty_patch(doc: dict[str, Any]) -> None:
    assert merge_patch(doc, doc) == {}
    assert merge_patch(doc, json.loads(json.dumps(doc))) == {}


@settings(max_examples=80)
@given(pair=related_pairs())
def test_the_patch_names_only_what_changed(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    old, new = pair

    def check(old: Any, new: Any, patch: Any) -> None:
        assert isinstance(patch, dict)
        for key, value in patch.items():
            if value is None:
                assert key in old
                assert key not in new
            else:
                changed = json.dumps(old.get(key), sort_keys=True) != json.dumps(new[key], sort_keys=True)
                assert changed or key not in old
                if isinstance(old.get(key), dict) and isinstance(new[key], dict):
                    check(old[key], new[key], value)
                else:
                    assert value == new[key]
        for key in new:
            if key in old and json.dumps(old[key], sort_keys=True) == json.dumps(new[key], sort_keys=True):
                assert key not in patch

    check(old, new, merge_patch(old, new))


@settings(max_examples=50)
@given(old=documents(nulls=True), new=documents(nulls=False))
def test_merge_patch_does_not_modify_its_inputs(old: dict[str, Any], new: dict[str, Any]) -> None:
    old_copy, new_copy = json.dumps(old, sort_keys=True), json.dumps(new, sort_keys=True)
    patch = merge_patch(old, new)
    apply_merge_patch(old, patch)
    assert (json.dumps(old, sort_keys=True), json.dumps(new, sort_keys=True)) == (old_copy, new_copy)


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({}, {}, {}),
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1}, {}, {"a": None}),
        ({}, {"a": {"b": 1}}, {"a": {"b": 1}}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, {"a": {"c": 3}}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}, {"a": {"c": None}}),
        ({"a": {"b": 1}}, {"a": {}}, {"a": {"b": None}}),
        ({"a": {"b": 1}}, {"a": 5}, {"a": 5}),
        ({"a": 5}, {"a": {"b": 1}}, {"a": {"b": 1}}),
        # Lists are replaced whole (RFC 7386), even a list of objects.
        ({"l": [1, 2, 3]}, {"l": [1, 2]}, {"l": [1, 2]}),
        ({"c": [{"type": "Ready", "status": "False"}]}, {"c": [{"type": "Ready", "status": "True"}]},
         {"c": [{"type": "Ready", "status": "True"}]}),
        ({"phase": "Running", "host": "h1"}, {"phase": "Stopped", "host": "h1"}, {"phase": "Stopped"}),
    ],
)  # fmt: skip
def test_examples(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch
    assert apply_merge_patch(old, patch) == new


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    # The examples of RFC 7386, appendix A (those whose target and result hold no nulls).
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_apply_follows_rfc_7386(target: Any, patch: Any, result: Any) -> None:
    assert apply_merge_patch(target, patch) == result


def test_a_non_object_replaces_the_whole_document() -> None:
    assert merge_patch({"a": 1}, [1]) == [1]
    assert merge_patch([1], {"a": 1}) == {"a": 1}
    assert merge_patch(1, 2) == 2


@pytest.mark.parametrize(("old", "new"), [(1, True), (0, False), (True, 1), ([1, 0], [True, False])])
def test_a_number_turning_into_a_boolean_is_a_change(old: Any, new: Any) -> None:
    patch = merge_patch({"a": old}, {"a": new})
    assert json.dumps(patch) == json.dumps({"a": new})
