"""What a controller watches besides its own kind, and which of its objects a change there concerns.

The model is controller-runtime's ``Watches(&OtherKind{}, handler.EnqueueRequestsFromMapFunc(fn))``:
each controller module declares ``WATCHES = (Watch(kind=..., map=...), ...)`` next to its own code; the
handlers register them generically (every event of ``kind`` runs ``map`` and puts the keys it returns
on that controller's queue). ``map`` runs after the caches and the cluster view took the event in."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from vdc.cluster.view import ClusterView
from vdc.kube.cache import Key

__all__ = ["EventType", "MapFunc", "ObjectEvent", "Watch"]

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class ObjectEvent:
    """One watch event of any kind, as the map functions see it."""

    type: EventType
    key: Key
    body: dict[str, Any]
    old: dict[str, Any] | None
    """The body before this event as the watch delivered it, without the statuses the operator noted in its
    cache since (None: not cached): our own status write coming back is a change (ObjectCache.delivered)."""
    own_status: bool
    """Our own write coming back: a MODIFIED whose spec generation was already acted on (our status write), or
    the version our own finalizer patch made (``ObjectCache.own_write``)."""

    @property
    def deleted(self) -> bool:
        return self.type == "DELETED"

    @property
    def changed(self) -> bool:
        """Anything but our own write coming back (a deletion included)."""
        return not self.own_status

    @property
    def labels_changed(self) -> bool:
        """An object seen before whose labels are different now (not a deletion)."""
        if self.deleted or self.old is None:
            return False
        return bool((self.old.get("metadata") or {}).get("labels") != self.body["metadata"].get("labels"))


MapFunc = Callable[[ClusterView, ObjectEvent], Iterable[Key]]


@dataclass(frozen=True)
class Watch:
    """``kind``: the watched kind's name (``Host``, ``VirtualMachine``, … ``Namespace``)."""

    kind: str
    map: MapFunc
