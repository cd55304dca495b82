"""Kubernetes quantities (``512Mi``, ``2Gi``, ``1.5``), parsed with the kubernetes client's utility."""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from typing import Annotated

from kubernetes.utils.quantity import parse_quantity
from pydantic import BeforeValidator, WithJsonSchema

# Non-negative quantities only: a sign is never valid for sizes in this API.
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


def _normalise(value: object) -> str:
    if isinstance(value, bool):
        raise ValueError("a quantity must be a number or a string such as 512Mi")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a quantity must not be negative")
        return str(value)
    if not isinstance(value, str):
        raise ValueError("a quantity must be a number or a string such as 512Mi")
    if not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a non-negative Kubernetes quantity (e.g. 512Mi, 2Gi)")
    try:
        parsed = parse_quantity(value)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 512Mi, 2Gi)") from exc
    if parsed < 0:
        raise ValueError("a quantity must not be negative")
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_normalise),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
            "x-kubernetes-validations": [
                {"rule": "type(self) == string || self >= 0", "message": "must not be negative"}
            ],
        }
    ),
]
"""A non-negative Kubernetes quantity, kept as written (str) and converted with ``to_bytes``/``to_decimal``."""


def to_decimal(quantity: str | int) -> Decimal:
    return Decimal(parse_quantity(quantity))  # type: ignore[no-untyped-call]


@functools.lru_cache(maxsize=4096)
def to_bytes(quantity: str | int) -> int:
    """A byte count, rounded up (``1.5Ki`` is 1536; ``100m`` of a byte is 1)."""
    value = to_decimal(quantity)
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def format_bytes_mi(count: int) -> str:
    """A byte count as a quantity in whole MiB (rounded down), e.g. ``12247Mi``; exact below 1Mi."""
    if count % 2**20 == 0 or count >= 2**20:
        return f"{count // 2**20}Mi"
    return str(count)


def millicores(quantity: str | int) -> int:
    """A CPU amount in thousandths of a host CPU, rounded up (``500m`` is 500, ``1.5`` is 1,500)."""
    return int((to_decimal(quantity) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def format_millicores(millis: int) -> str:
    """Thousandths of a host CPU as a CPU quantity: 1500 is ``1500m``, 2000 is ``2``."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
