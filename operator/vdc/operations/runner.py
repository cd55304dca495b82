"""Read, advance and write one operation: the glue between :func:`vdc.operations.plan.advance` and
the API server. One call is one reconcile: at most one step (or undo), its result written — with the
operation's resourceVersion, so two operator replicas never both record a step — before the caller
requeues for the next."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from vdc.api.conditions import now_rfc3339, set_kstatus
from vdc.api.meta import KindInfo
from vdc.api.operation import OperationStatus
from vdc.kube.client import KubeWriter
from vdc.operations.plan import CANCELLED, FAILED, SUCCEEDED, Plan, advance

Context = TypeVar("Context")


class OperationStore(Protocol):
    """Where an operation's status and Events go (the API server; a dict in tests)."""

    async def write_status(self, body: Mapping[str, Any], status: dict[str, Any]) -> None:
        """Write ``status`` if the object is still at the body's resourceVersion, else raise."""

    async def event(self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool) -> None: ...


class KubeOperationStore:
    """An operation kind's status and Events on the API server. A status write carries the body's
    resourceVersion: if another writer (a second replica, a user) changed the object since it was read,
    the write fails with 409 and the work queue reconciles again from what the server has."""

    def __init__(self, writer: KubeWriter, info: KindInfo) -> None:
        self.writer = writer
        self.info = info

    async def write_status(self, body: Mapping[str, Any], status: dict[str, Any]) -> None:
        await self.writer.patch_status(self.info, dict(body), status, unchanged=True)

    async def event(self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool) -> None:
        await self.writer.event(self.info, dict(body), reason, message, warning=warning)


def with_conditions(status: OperationStatus, generation: int | None) -> OperationStatus:
    """Ready/Reconciling/Stalled for kstatus and Argo CD: Succeeded is Current, Failed is Failed,
    Cancelled is Current (it ended as asked), anything else is InProgress."""
    phase = status.phase or "Pending"
    if phase == SUCCEEDED:
        conds = set_kstatus(
            status.conditions, "Current", SUCCEEDED, status.message or "", observed_generation=generation
        )
    elif phase == FAILED:
        conds = set_kstatus(
            status.conditions, "Failed", FAILED, status.message or "failed", observed_generation=generation
        )
    elif phase == CANCELLED:
        conds = set_kstatus(
            status.conditions, "Current", CANCELLED, status.message or "", observed_generation=generation
        )
    else:
        reason = "RollingBack" if status.rollback is not None else phase
        conds = set_kstatus(
            status.conditions, "InProgress", reason, status.message or phase, observed_generation=generation
        )
    return status.model_copy(update={"conditions": conds, "observed_generation": generation})


async def reconcile_operation(
    plan: Plan[Context],
    body: Mapping[str, Any],
    context: Context,
    store: OperationStore,
    *,
    cancel: str | None = None,
    now: str | None = None,
) -> float | None:
    """One step of the operation ``body``; the seconds after which to call again (None: it ended)."""
    old = OperationStatus.model_validate(body.get("status") or {})
    result = await advance(plan, old, context, cancel=cancel, now=now or now_rfc3339())
    generation = (body.get("metadata") or {}).get("generation")
    new = with_conditions(result.status, generation)
    if new != old:
        await store.write_status(body, new.to_wire())
    if result.event is not None:
        reason, message = result.event
        await store.event(body, reason, message, warning=reason in ("StepFailed", FAILED))
    return result.requeue_after
