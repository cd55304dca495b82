"""Sizes with DMTF programmatic units (DSP0004 Annex C): ``byte * 2^30``, ``byte*10^6``, ``byte * 1024``,
and the legacy names exporters write (``MegaBytes``, ``MB``, ``GB`` — binary multiples, as VMware and
VirtualBox mean them)."""

from __future__ import annotations

import re

from vdc.ovf.errors import InvalidDescriptor

# Larger than any real disk or memory (64 PiB): anything beyond is a lie or a typo.
MAX_BYTES = 1 << 56

_BASE_UNITS = {"byte": 1, "bytes": 1, "octet": 1, "octets": 1}
_LEGACY_UNITS = {
    "kb": 1 << 10,
    "kib": 1 << 10,
    "kilobytes": 1 << 10,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "megabytes": 1 << 20,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "gigabytes": 1 << 30,
    "tb": 1 << 40,
    "tib": 1 << 40,
    "terabytes": 1 << 40,
}
_POWER = re.compile(r"^(2|10)\s*\^\s*(\d{1,3})$")
_INTEGER = re.compile(r"^\d{1,20}$")


def allocation_unit_bytes(units: str, what: str) -> int:
    """How many bytes one unit of ``units`` is. ``what`` names the element for the error message."""
    text = units.strip()
    legacy = _LEGACY_UNITS.get(text.lower())
    if legacy is not None:
        return legacy
    base, *modifiers = (part.strip() for part in text.split("*"))
    if base.lower() not in _BASE_UNITS:
        raise InvalidDescriptor(f"{what}: unit {units!r} is not a byte unit")
    multiplier = _BASE_UNITS[base.lower()]
    for modifier in modifiers:
        power = _POWER.match(modifier)
        if power:
            factor = int(power.group(1)) ** int(power.group(2))
        elif _INTEGER.match(modifier):
            factor = int(modifier)
        else:
            raise InvalidDescriptor(f"{what}: unit {units!r}: cannot read multiplier {modifier!r}")
        multiplier *= factor
        if multiplier == 0 or multiplier > MAX_BYTES:
            raise InvalidDescriptor(f"{what}: unit {units!r} is absurd")
    return multiplier


def parse_count(value: str | None, what: str) -> int:
    """A non-negative decimal integer (OVF's xs:unsignedLong and friends)."""
    if value is None:
        raise InvalidDescriptor(f"{what} is missing")
    text = value.strip()
    if not _INTEGER.match(text):
        raise InvalidDescriptor(f"{what}: {value!r} is not a non-negative integer")
    return int(text)


def to_bytes(quantity: str | None, units: str | None, what: str, *, default_units: str = "byte") -> int:
    """``quantity`` (a non-negative integer) times ``units`` in bytes, refused beyond ``MAX_BYTES``."""
    count = parse_count(quantity, what)
    size = count * allocation_unit_bytes(units if units else default_units, what)
    if size > MAX_BYTES:
        raise InvalidDescriptor(f"{what}: {quantity} x ({units or default_units}) is more than {MAX_BYTES} bytes")
    return size


def units_for(size: int) -> tuple[int, str]:
    """The largest of GiB, MiB, KiB or bytes that divides ``size`` exactly: (quantity, units), for writing."""
    for shift in (30, 20, 10):
        if size and size % (1 << shift) == 0:
            return size >> shift, f"byte * 2^{shift}"
    return size, "byte"
