"""Any reconcile error of any kind reaches the object's status within the attempt that met it.

A controller reports the failures it knows how to name itself (a VM's libvirt error, a switch's bad
subnet). Everything else that escapes a reconcile — an API error, a bug — lands here through the work
queue: ``Ready=False`` with the error's first line, ``Reconciling=True`` (the queue retries with backoff),
``observedGeneration`` set, so kstatus (and Flux, Argo CD) never calls such an object Current. One Warning
Event per distinct message, not one per retry: the message already in the Ready condition (which
survives restarts) is the rate limit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from vdc.api.conditions import READY, Condition, set_kstatus
from vdc.api.meta import KindInfo
from vdc.controllers.errors import ReportedFailure, first_line
from vdc.kube.cache import Key, ObjectCache
from vdc.kube.client import KubeWriter

log = logging.getLogger(__name__)

REASON = "ReconcileError"


def failed_status(status: dict[str, Any], generation: int | None, message: str) -> dict[str, Any]:
    """``status`` (wire form) with the failure's conditions set; the kind's other fields untouched."""
    conds = [Condition.model_validate(c) for c in status.get("conditions") or []]
    conds = set_kstatus(conds, "InProgress", REASON, message, observed_generation=generation)
    return {**status, "observedGeneration": generation, "conditions": [c.to_wire() for c in conds]}


def ready_message(status: dict[str, Any]) -> str | None:
    return next((c.get("message") for c in status.get("conditions") or [] if c.get("type") == READY), None)


FailureReporter = Callable[[Key, Exception], Awaitable[None]]


def failure_reporter(info: KindInfo, cache: ObjectCache, writer: KubeWriter) -> FailureReporter:
    """The work queue's ``on_error`` for kind ``info``."""

    async def report(key: Key, exc: Exception) -> None:
        if isinstance(exc, ReportedFailure):
            return
        body = cache.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        old: dict[str, Any] = body.get("status") or {}
        message = first_line(exc)
        status = failed_status(old, body["metadata"].get("generation"), message)
        try:
            if sent := await writer.patch_status(info, body, status):
                cache.note_status(key, sent)
            if ready_message(old) != message:
                await writer.event(info, body, REASON, message, warning=True)
        except Exception as report_error:  # the API may be what failed: the queue retries anyway
            log.info("%s %s: could not report %r: %s", info.kind, "/".join(key), message, report_error)

    return report
