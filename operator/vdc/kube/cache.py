"""The latest body of every object of a kind, as the watch delivered it (kept by kopf's on.event)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from vdc.kube.patch import apply_merge_patch

Key = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped objects."""


Listener = Callable[[Key, dict[str, Any] | None, dict[str, Any] | None], None]
"""Told ``(key, old body, new body)`` after every change to a cache (None: absent before / removed)."""


def key_of(body: dict[str, Any]) -> Key:
    meta = body["metadata"]
    return meta.get("namespace") or "", meta["name"]


_WRITE_BOOKKEEPING = ("resourceVersion", "managedFields", "finalizers")
"""What a finalizer patch changes in metadata besides the finalizers' list."""


def _without(mapping: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}


class ObjectCache:
    def __init__(self) -> None:
        self._bodies: dict[Key, dict[str, Any]] = {}
        self._by_uid: dict[str, Key] = {}
        self._by_namespace: dict[str, dict[Key, None]] = {}
        self._unconfirmed: set[Key] = set()
        """Keys primed from a LIST that no watch event has delivered since (see :meth:`prime`)."""
        self._listeners: list[Listener] = []
        self._delivered: dict[Key, dict[str, Any]] = {}
        """The body as the watch last delivered it, for keys whose status we noted since (:meth:`delivered`)."""
        self._own_finalizers: dict[Key, tuple[str, str]] = {}
        """(the resourceVersion it is made on, the finalizer) of our own finalizer patch, per key, until the
        key's next watch event (:meth:`own_write`)."""

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` after every upsert, removal and noted status (indexes kept incrementally)."""
        self._listeners.append(listener)

    def _told(self, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for listener in self._listeners:
            listener(key, old, new)

    def prime(self, bodies: list[dict[str, Any]]) -> None:
        """Fill the cache from a LIST before the watch starts, so that nothing is decided on a partial view
        (an IPAM that sees only some of a switch's VMs hands their addresses out again). The watch then
        delivers every object that still exists; what it never delivers was deleted in between and goes
        at :meth:`drop_unconfirmed`."""
        for body in bodies:
            self._unconfirmed.add(self.upsert(body))

    def drop_unconfirmed(self) -> list[Key]:
        """Remove the primed objects no watch event confirmed (deleted between the LIST and the watch)."""
        dropped = [key for key in self._unconfirmed if key in self._bodies]
        for key in dropped:
            self.remove(self._bodies[key])
        self._unconfirmed.clear()
        return dropped

    def upsert(self, body: dict[str, Any]) -> Key:
        key = key_of(body)
        self._unconfirmed.discard(key)
        self._delivered.pop(key, None)
        old = self._bodies.get(key)
        if old is not None and old["metadata"].get("uid") != body["metadata"].get("uid"):
            self._by_uid.pop(old["metadata"].get("uid", ""), None)
        self._bodies[key] = body
        self._by_namespace.setdefault(key[0], {})[key] = None
        if body["metadata"].get("uid"):
            self._by_uid[body["metadata"]["uid"]] = key
        self._told(key, old, body)
        return key

    def remove(self, body: dict[str, Any]) -> Key:
        key = key_of(body)
        self._delivered.pop(key, None)
        self._own_finalizers.pop(key, None)
        old = self._bodies.pop(key, None)
        if old is not None:
            self._by_uid.pop(old["metadata"].get("uid", ""), None)
            keys = self._by_namespace.get(key[0], {})
            keys.pop(key, None)
            if not keys:
                self._by_namespace.pop(key[0], None)
            self._told(key, old, None)
        return key

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._bodies.get(key)

    def delivered(self, key: Key) -> dict[str, Any] | None:
        """The body as the watch (or the LIST) last delivered it: without the statuses noted since. What a
        watch event is compared with, so that our own status write coming back is seen as the change it
        is (a Host turning Ready lets unplaced VMs fit) and not as no change against its noted copy."""
        return self._delivered.get(key) or self._bodies.get(key)

    def status_pending(self, key: Key) -> bool:
        """Whether a status we noted for ``key`` has not come back from the watch yet: its body keeps the
        resourceVersion from before that write until then."""
        return key in self._delivered

    def key_for_uid(self, uid: str) -> Key | None:
        return self._by_uid.get(uid)

    def expect_own_finalizer(self, key: Key, resource_version: str, finalizer: str) -> None:
        """We are about to add ``finalizer`` to the object at ``resource_version`` (a patch that tests that
        version): its watch event brings nothing to act on. Said before the patch is sent, since the watch
        can deliver the event before the patch's answer is read."""
        self._own_finalizers[key] = (resource_version, finalizer)

    def own_write(self, body: dict[str, Any]) -> bool:
        """Whether a watch event's ``body`` is our own finalizer patch coming back (see
        :meth:`expect_own_finalizer`): the version after the one the patch was made on, as the watch
        delivered that one, with nothing else changed but the finalizer added. Asked once per event, before
        it is taken in; any event for the key ends the expectation (a refused patch leaves nothing waiting)."""
        key = key_of(body)
        expected = self._own_finalizers.pop(key, None) if self._own_finalizers else None
        if expected is None:  # every watch event of every kind asks: nothing else done when none is expected
            return False
        before = self.delivered(key)
        if before is None:
            return False
        version, finalizer = expected
        old_meta, new_meta = before["metadata"], body["metadata"]
        if str(old_meta.get("resourceVersion")) != version:
            return False
        if list(new_meta.get("finalizers") or ()) != [*(old_meta.get("finalizers") or ()), finalizer]:
            return False
        if _without(old_meta, _WRITE_BOOKKEEPING) != _without(new_meta, _WRITE_BOOKKEEPING):
            return False
        return _without(before, ("metadata",)) == _without(body, ("metadata",))

    def note_status(self, key: Key, status_patch: dict[str, Any]) -> None:
        """Apply our own status patch locally so the next reconcile does not write it again."""
        body = self._bodies.get(key)
        if body is not None:
            self._delivered.setdefault(key, body)
            new = self._bodies[key] = {**body, "status": apply_merge_patch(body.get("status") or {}, status_patch)}
            self._told(key, body, new)

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        """The objects of one namespace (without walking the others)."""
        return [self._bodies[key] for key in self._by_namespace.get(namespace, {})]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._bodies.values()))

    def __len__(self) -> int:
        return len(self._bodies)
