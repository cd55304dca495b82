from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdc.ovf.errors import InvalidDescriptor
from vdc.ovf.units import MAX_BYTES, allocation_unit_bytes, parse_count, to_bytes, units_for


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("byte", 1),
        ("bytes", 1),
        ("byte * 2^30", 1 << 30),
        ("byte*2^20", 1 << 20),
        ("  byte  *  2 ^ 10 ", 1 << 10),
        ("byte * 10^6", 10**6),
        ("byte * 1024", 1024),
        ("byte * 2^10 * 2^10", 1 << 20),
        ("MegaBytes", 1 << 20),
        ("KB", 1 << 10),
        ("GB", 1 << 30),
        ("GiB", 1 << 30),
    ],
)
def test_allocation_units(units: str, expected: int) -> None:
    assert allocation_unit_bytes(units, "<Disk>") == expected


@pytest.mark.parametrize(
    "units", ["hertz * 10^6", "byte * 2^-3", "byte * 2^70", "byte / 2", "byte * x", "", "byte * 0", "byte * 2^9999"]
)
def test_bad_allocation_units_name_the_element(units: str) -> None:
    with pytest.raises(InvalidDescriptor, match="<Disk diskId='d1'>"):
        allocation_unit_bytes(units, "<Disk diskId='d1'>")


@pytest.mark.parametrize("value", ["-1", "1.5", "ten", "", "1e3", "0x10", "99999999999999999999999"])
def test_counts_are_non_negative_integers(value: str) -> None:
    with pytest.raises(InvalidDescriptor, match="capacity"):
        parse_count(value, "capacity")


def test_sizes_beyond_the_sanity_limit_are_refused() -> None:
    with pytest.raises(InvalidDescriptor, match="more than"):
        to_bytes(str(1 << 30), "byte * 2^30", "<Disk>")


@given(exponent=st.integers(0, 56), spaces=st.sampled_from(["", " ", "  "]))
def test_power_of_two_units_with_any_spacing(exponent: int, spaces: str) -> None:
    units = f"byte{spaces}*{spaces}2{spaces}^{spaces}{exponent}"
    assert allocation_unit_bytes(units, "x") == 2**exponent


@given(quantity=st.integers(0, 1 << 40), shift=st.sampled_from([0, 10, 20, 30]))
def test_to_bytes_multiplies_or_refuses(quantity: int, shift: int) -> None:
    units = f"byte * 2^{shift}"
    expected = quantity << shift
    if expected > MAX_BYTES:
        with pytest.raises(InvalidDescriptor):
            to_bytes(str(quantity), units, "x")
    else:
        assert to_bytes(str(quantity), units, "x") == expected


@given(size=st.integers(0, MAX_BYTES))
def test_units_for_round_trips(size: int) -> None:
    quantity, units = units_for(size)
    assert to_bytes(str(quantity), units, "x") == size
