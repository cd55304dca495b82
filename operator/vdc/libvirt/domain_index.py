"""Which domains (by UUID) one host holds, kept by the host's connection so that "which hosts hold this
UUID" is not one libvirt call per host (adoption asks it for every new VM: VMs x hosts calls).

The index belongs to one opened ``virConnect``: it is made before that connection subscribes to lifecycle
events, filled by a listing taken *after* the subscription, and kept current by the events from then on.
When the connection is lost it is forgotten (a new connection gets a new index, listed afresh): nothing is
assumed about a host while it is away.

A domain exists (``lookupByUUIDString`` finds it) while it is persistent (defined) or active (running,
paused: a transient domain is always active), so two sets are kept, each moved by its own events:
DEFINED/UNDEFINED for the persistent set, STARTED/STOPPED for the active one (an incoming migration's
domain starts transient, STARTED, and is defined at its end, DEFINED; an outgoing one is STOPPED, and
UNDEFINED when the source copy is removed). A rename's UNDEFINED (the old name's) is no removal: the
UUID stays defined under the new name.

Exactness. For each (UUID, set) the index holds what the last event dispatched for it said, else what the
listing said. The listing starts after the subscription, so a change libvirt made before it is in the
listing, and every change made after the subscription has an event on its way. Events come in the order
libvirt made the changes, so the last one dispatched for a UUID tells its state as of that change; events
dispatched while the listing runs are journaled and replayed over it in order (one older than the listing
may set an older state back for a moment: the events of the newer changes are still on their way and set
it right). So the index only lags libvirt by the event latency (milliseconds): it can miss a domain only
between libvirt making it and its DEFINED/STARTED event reaching us, and name one that is gone only until
its UNDEFINED/STOPPED event does. Callers that must be exact confirm a "yes" with a lookup and skip a
host only on a "no" (``VmController._find_existing`` says why its "no" misses nothing it would have
found by asking the host).
"""

from __future__ import annotations

from collections.abc import Iterable

import libvirt

_PERSISTENT = {libvirt.VIR_DOMAIN_EVENT_DEFINED: True, libvirt.VIR_DOMAIN_EVENT_UNDEFINED: False}
_ACTIVE = {libvirt.VIR_DOMAIN_EVENT_STARTED: True, libvirt.VIR_DOMAIN_EVENT_STOPPED: False}


class DomainIndex:
    """The UUIDs of the domains of one host connection: unknown until listed, forgotten when it is lost."""

    def __init__(self) -> None:
        self._persistent: set[str] = set()
        self._active: set[str] = set()
        self._journal: list[tuple[str, int, int]] | None = []
        """Events dispatched before the listing is in (None once it is)."""
        self._forgotten = False

    @property
    def known(self) -> bool:
        """Listed, and the connection not lost since."""
        return self._journal is None and not self._forgotten

    def holds(self, uuid: str) -> bool | None:
        """Whether the host holds a domain with this UUID; None when not known (not listed yet, or lost)."""
        if not self.known:
            return None
        uuid = uuid.lower()
        return uuid in self._persistent or uuid in self._active

    def listed(self, active: Iterable[str], persistent: Iterable[str]) -> None:
        """The listing (taken after the subscription to events) is in: the journaled events go over it."""
        if self._forgotten or self._journal is None:
            return
        self._active = {u.lower() for u in active}
        self._persistent = {u.lower() for u in persistent}
        journal, self._journal = self._journal, None
        for uuid, event, detail in journal:
            self._apply(uuid, event, detail)

    def event(self, uuid: str, event: int, detail: int) -> None:
        """A lifecycle event (VIR_DOMAIN_EVENT_* and its detail) of the connection this index belongs to."""
        if self._forgotten:
            return
        if self._journal is not None:
            self._journal.append((uuid.lower(), event, detail))
        else:
            self._apply(uuid.lower(), event, detail)

    def forget(self) -> None:
        """The connection is lost: nothing is known from here on (a new connection has a new index)."""
        self._forgotten = True
        self._journal = None
        self._persistent.clear()
        self._active.clear()

    def _apply(self, uuid: str, event: int, detail: int) -> None:
        if event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED and detail == libvirt.VIR_DOMAIN_EVENT_UNDEFINED_RENAMED:
            return
        if (persistent := _PERSISTENT.get(event)) is not None:
            (self._persistent.add if persistent else self._persistent.discard)(uuid)
        elif (active := _ACTIVE.get(event)) is not None:
            (self._active.add if active else self._active.discard)(uuid)


def list_domains(conn: libvirt.virConnect) -> tuple[list[str], list[str]]:
    """(active UUIDs, persistent UUIDs) of the host: two calls (``UUIDString`` is local, not a call)."""
    active = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    persistent = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
    return [d.UUIDString() for d in active], [d.UUIDString() for d in persistent]
