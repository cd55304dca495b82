"""No object the operator has seen stays status-less.

kstatus calls a custom resource without status Current, so a VM waiting in a long work queue (a
thousand applied at once) would look done to Flux or `kubectl wait`. An object seen without a status
gets ``observedGeneration`` and ``Reconciling=True`` (reason ``Pending``) if its own controller has not
written a status within :data:`GRACE_SECONDS`: in a short queue the controller's own write comes first
and this costs nothing. The write is conditional on the resourceVersion seen, so it can never
overwrite a status the controller wrote meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import kubernetes

from vdc.api.conditions import RECONCILING, Condition, set_condition
from vdc.api.meta import KindInfo
from vdc.kube.cache import Key, ObjectCache
from vdc.kube.client import KubeWriter

GRACE_SECONDS = 2.0
REASON = "Pending"

Sighting = tuple[str, Key]
"""(plural, key) of an object seen without a status."""


def pending_status(generation: int | None) -> dict[str, object]:
    conds = set_condition([], RECONCILING, "True", REASON, "waiting for the operator to reconcile it",
                          observed_generation=generation)  # fmt: skip
    return {"observedGeneration": generation, "conditions": [Condition.to_wire(c) for c in conds]}


class FirstSight:
    """The work queue's reconcile for :data:`Sighting` items."""

    def __init__(self, writer: KubeWriter, kinds: Mapping[str, tuple[KindInfo, ObjectCache]]) -> None:
        self.writer = writer
        self.kinds = kinds
        self._seen: dict[Sighting, float] = {}

    def sighted(self, item: Sighting) -> bool:
        """Note an object seen without a status: True the first time, when its check is due in
        :data:`GRACE_SECONDS` (a VM is seen status-less twice, created and then with its finalizer: one
        check, not one per sighting)."""
        if item in self._seen:
            return False
        self._seen[item] = time.monotonic()
        return True

    async def reconcile(self, item: Sighting) -> float | None:
        info, cache = self.kinds[item[0]]
        body = cache.get(item[1])
        if body is None or body.get("status") or body["metadata"].get("deletionTimestamp"):
            self._seen.pop(item, None)
            return None
        now = time.monotonic()
        waited = now - self._seen.setdefault(item, now)
        if waited < GRACE_SECONDS:
            return GRACE_SECONDS - waited  # its controller may well write first
        self._seen.pop(item, None)
        status = pending_status(body["metadata"].get("generation"))
        try:
            if sent := await self.writer.patch_status(info, body, status, unchanged=True):
                cache.note_status(item[1], sent)
        except kubernetes.client.ApiException as exc:
            if exc.status not in (404, 409):  # gone, or changed meanwhile (its controller wrote): fine
                raise
        return None
