"""What a namespace's VMs take, and whether one more fits its ComputeQuotas. Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from vdc.api.computequota import QuotaAmounts
from vdc.api.quantity import format_bytes_mi, to_bytes


@dataclass(frozen=True)
class Usage:
    """Amounts in plain numbers (bytes for memory and storage)."""

    virtual_machines: int = 0
    vcpus: int = 0
    memory: int = 0
    storage: int = 0
    public_addresses: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def to_amounts(self) -> QuotaAmounts:
        return QuotaAmounts(
            virtual_machines=self.virtual_machines,
            vcpus=self.vcpus,
            memory=format_bytes_mi(self.memory),
            storage=format_bytes_mi(self.storage),
            public_addresses=self.public_addresses,
        )


LABELS = {
    "virtual_machines": "VMs",
    "vcpus": "vCPUs",
    "memory": "memory",
    "storage": "storage",
    "public_addresses": "public addresses",
}


def vm_usage(spec: Mapping[str, Any], status: Mapping[str, Any] | None, public_switches: Collection[str]) -> Usage:
    """What one VM takes, from its spec as stored (wire form): vCPUs, memory (its max when set: the
    balloon may grow to it live), the virtual size of the volumes the operator creates for it (a
    clone without a size counts what status reports once it exists), NICs on public switches."""
    memory = spec.get("memory") or {}
    capacities = {d.get("name"): d.get("capacity") for d in (status or {}).get("disks") or []}
    storage = 0
    for disk in spec.get("disks") or []:
        source = disk.get("source") or {}
        made = source.get("blank") or source.get("clone")
        if made is None:
            continue
        size = made.get("size") or capacities.get(disk.get("name"))
        storage += to_bytes(size) if size else 0
    public = sum(1 for nic in spec.get("interfaces") or [] if nic.get("switch") in public_switches)
    return Usage(
        virtual_machines=1,
        vcpus=int((spec.get("cpu") or {}).get("count", 1)),
        memory=to_bytes(memory.get("max") or memory.get("size") or "0"),
        storage=storage,
        public_addresses=public,
    )


def total(usages: Iterable[Usage]) -> Usage:
    out = Usage()
    for usage in usages:
        out = out + usage
    return out


def hard_limits(hard: QuotaAmounts) -> dict[str, int]:
    """The limits a quota sets, as plain numbers by field name."""
    out: dict[str, int] = {}
    for name in LABELS:
        value = getattr(hard, name)
        if value is not None:
            out[name] = to_bytes(value) if name in ("memory", "storage") else int(value)
    return out


def exceeded(quotas: Mapping[str, QuotaAmounts], used: Usage, adding: Usage) -> str | None:
    """Why ``adding`` does not fit next to ``used`` under every quota (``quotas``: name -> hard), with
    the numbers; None when it fits."""
    problems = []
    for quota_name in sorted(quotas):
        for name, limit in hard_limits(quotas[quota_name]).items():
            have, want = getattr(used, name), getattr(adding, name)
            if want and have + want > limit:
                problems.append(
                    f"{LABELS[name]}: {_show(name, have)} used + {_show(name, want)} requested > "
                    f"{_show(name, limit)} allowed by ComputeQuota {quota_name}"
                )
    return "; ".join(problems) or None


def _show(name: str, value: int) -> str:
    return format_bytes_mi(value) if name in ("memory", "storage") else str(value)
