"""Quantities are validated like Kubernetes does and converted exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from vdc.api.quantity import Quantity, to_bytes

ADAPTER: TypeAdapter[str] = TypeAdapter(Quantity)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9), ("1.5Ki", 1536), ("100m", 1), (1024, 1024)],
)
def test_to_bytes_converts_binary_and_decimal_suffixes(text: str | int, expected: int) -> None:
    assert to_bytes(ADAPTER.validate_python(text)) == expected


@pytest.mark.parametrize("bad", ["-1Gi", "1 Gi", "one", "1Gb", -5, True, None])
def test_invalid_or_negative_quantities_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        ADAPTER.validate_python(bad)


@given(st.integers(min_value=0, max_value=2**50), st.sampled_from(["", "Ki", "Mi", "Gi"]))
def test_any_non_negative_binary_quantity_round_trips(number: int, suffix: str) -> None:
    scale = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[suffix]
    assert to_bytes(ADAPTER.validate_python(f"{number}{suffix}")) == number * scale
