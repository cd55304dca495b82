"""Which MigrationPolicy applies to a VM, and the tuning a migration runs with. Pure.

Precedence, highest first: the migration's own ``spec.tuning``; the one MigrationPolicy that selects
the VM (several may: the one whose selectors name the most labels wins — VM selector terms counted
first, then namespace selector terms — and a tie goes to the name first in alphabetical order, so
the choice never depends on the order policies were listed); the operator's defaults. Fields are
resolved one by one down that list; only one policy takes part (KubeVirt's model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vdc.api.common import LabelSelector
from vdc.api.migration import MigrationPolicySpec, MigrationTuning
from vdc.api.quantity import to_bytes
from vdc.scheduler.selectors import matches

DEFAULT_PARALLEL_PER_HOST = 2
DEFAULT_PARALLEL_PER_CLUSTER = 5
DEFAULT_TIMEOUT_PER_GIB = 150
DEFAULT_POST_COPY_AFTER = 30


@dataclass(frozen=True)
class Tuning:
    """What one migration runs with, every field resolved."""

    policy: str | None
    bandwidth_bytes: int | None = None
    auto_converge: bool = False
    allow_post_copy: bool = False
    post_copy_after_seconds: int = DEFAULT_POST_COPY_AFTER
    max_downtime_ms: int | None = None
    completion_timeout_per_gib: int = DEFAULT_TIMEOUT_PER_GIB
    parallel_per_host: int = DEFAULT_PARALLEL_PER_HOST
    parallel_per_cluster: int = DEFAULT_PARALLEL_PER_CLUSTER

    def completion_timeout(self, data_bytes: int) -> float:
        """Seconds the migration of ``data_bytes`` (memory and copied disks) may take."""
        return max(1.0, data_bytes / 2**30) * self.completion_timeout_per_gib


def _weight(selector: LabelSelector) -> int:
    return len(selector.match_labels) + len(selector.match_expressions)


def select_policy(
    policies: Iterable[Mapping[str, Any]], vm_labels: Mapping[str, str], namespace_labels: Mapping[str, str]
) -> tuple[str, MigrationPolicySpec] | None:
    """The policy (name, spec) that applies to a VM with these labels in a namespace with these labels."""
    best: tuple[tuple[int, int, str], str, MigrationPolicySpec] | None = None
    for body in policies:
        name = str(body["metadata"]["name"])
        spec = MigrationPolicySpec.model_validate(body.get("spec") or {})
        if not (matches(spec.vm_selector, vm_labels) and matches(spec.namespace_selector, namespace_labels)):
            continue
        rank = (-_weight(spec.vm_selector), -_weight(spec.namespace_selector), name)
        if best is None or rank < best[0]:
            best = (rank, name, spec)
    return None if best is None else (best[1], best[2])


def resolve(policy: tuple[str, MigrationPolicySpec] | None, overrides: MigrationTuning | None) -> Tuning:
    """The tuning of one migration: its overrides, else the policy's fields, else the defaults."""
    layers: list[MigrationTuning] = [t for t in (overrides, policy[1] if policy else None) if t is not None]

    def first(name: str) -> Any:
        for layer in layers:
            value = getattr(layer, name)
            if value is not None:
                return value
        return None

    bandwidth = first("bandwidth")
    spec = policy[1] if policy else None
    return Tuning(
        policy=policy[0] if policy else None,
        bandwidth_bytes=to_bytes(bandwidth) if bandwidth is not None else None,
        auto_converge=bool(first("auto_converge")),
        allow_post_copy=bool(first("allow_post_copy")),
        post_copy_after_seconds=first("post_copy_after_seconds") or DEFAULT_POST_COPY_AFTER,
        max_downtime_ms=first("max_downtime_milliseconds"),
        completion_timeout_per_gib=first("completion_timeout_per_gi_b") or DEFAULT_TIMEOUT_PER_GIB,
        parallel_per_host=(spec.parallel_migrations_per_host if spec else None) or DEFAULT_PARALLEL_PER_HOST,
        parallel_per_cluster=(spec.parallel_migrations_per_cluster if spec else None) or DEFAULT_PARALLEL_PER_CLUSTER,
    )
