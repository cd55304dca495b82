"""What a VirtualMachine requests: the one definition the scheduler, Host status and metrics all use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vdc.api.quantity import millicores, to_bytes

__all__ = ["NOTHING", "Requested", "requested"]


@dataclass(frozen=True)
class Requested:
    """What one VM asks of the host it is assigned to. Memory and disks are bytes; CPU reservations are
    thousandths of a host CPU."""

    vcpus: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    """Capacity of the VM's disks as its status reports them (what metering charges for)."""
    cpu_reservation_millis: int = 0
    """``spec.qos.cpu.reservation``: CPU guaranteed to the VM."""
    memory_reservation_bytes: int = 0
    """``spec.qos.memory.reservation``: memory guaranteed to the VM."""

    def __add__(self, other: Requested) -> Requested:
        return Requested(*(a + b for a, b in zip(self._values(), other._values(), strict=True)))

    def __sub__(self, other: Requested) -> Requested:
        return Requested(*(a - b for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple[int, int, int, int, int]:
        return (
            self.vcpus,
            self.memory_bytes,
            self.disk_bytes,
            self.cpu_reservation_millis,
            self.memory_reservation_bytes,
        )


NOTHING = Requested()


def _bytes(value: Any) -> int:
    try:
        return to_bytes(str(value)) if value else 0
    except (ValueError, TypeError, ArithmeticError):
        return 0


def _millicores(value: Any) -> int:
    try:
        return millicores(str(value)) if value else 0
    except (ValueError, TypeError, ArithmeticError):
        return 0


def requested(vm: Mapping[str, Any]) -> Requested:
    """What a VirtualMachine body (wire form) requests: ``spec.cpu.count`` vCPUs (default 1),
    ``spec.memory.size`` bytes (the boot size: what the host commits; ``memory.max`` is a quota matter),
    the capacity of its disks from ``status.disks``, and its ``spec.qos`` reservations. A value that does
    not parse counts as 0 (a body admission let through is valid; an unreadable one must not break the
    sums of every other VM)."""
    spec, status = vm.get("spec") or {}, vm.get("status") or {}
    try:
        vcpus = int((spec.get("cpu") or {}).get("count", 1))
    except (ValueError, TypeError):
        vcpus = 0
    memory = _bytes((spec.get("memory") or {}).get("size"))
    disks = sum(_bytes(d.get("capacity")) for d in status.get("disks") or [] if isinstance(d, Mapping))
    qos = spec.get("qos") or {}
    cpu_reserved = _millicores((qos.get("cpu") or {}).get("reservation"))
    memory_reserved = _bytes((qos.get("memory") or {}).get("reservation"))
    return Requested(vcpus, memory, disks, cpu_reserved, memory_reserved)
