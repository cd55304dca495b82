"""The index of a host's domains its connection keeps (``vdc.libvirt.domain_index``), on libvirt's test driver:
listed when the connection opens, kept by the lifecycle events, forgotten when the connection is lost; and
``VmController._find_existing`` answering from it exactly what asking every host answers, with no call for
a UUID no host holds."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vdc.controllers.vm import VmController
from vdc.kube.cache import ObjectCache
from vdc.libvirt import domains
from vdc.libvirt.connection import ConnectionManager, HostConnection
from vdc.libvirt.domain_index import DomainIndex
from vdc.libvirt.errors import LibvirtFailure

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

DEFINED, UNDEFINED = libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED
STARTED, STOPPED = libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STOPPED
A, B = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"


def domain_xml(uid: str, name: str | None = None) -> str:
    return (
        f"<domain type='test'><name>{name or 'd-' + uid[:8]}</name><uuid>{uid}</uuid><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )


def new_uuid() -> str:
    return str(uuidlib.uuid4())


# --- the index alone ----------------------------------------------------------------------------
def test_nothing_is_known_before_the_listing_nor_after_the_connection_is_lost() -> None:
    index = DomainIndex()
    assert index.holds(A) is None
    index.listed([A], [])
    assert index.holds(A) is True and index.holds(B) is False
    index.forget()
    assert index.holds(A) is None
    index.event(B, DEFINED, 0)  # a lost connection's late event: ignored
    index.listed([B], [B])
    assert index.holds(B) is None


def test_events_during_the_listing_go_over_it_in_order() -> None:
    index = DomainIndex()
    index.event(A, DEFINED, 0)  # made after the subscription, missing from the listing
    index.event(B, UNDEFINED, 0)  # removed after the subscription, still in the listing
    index.event(A, UNDEFINED, 0)
    index.event(A, DEFINED, 0)  # the last word
    index.listed([], [B])
    assert index.holds(A) is True and index.holds(B) is False


def test_a_domain_exists_while_defined_or_running() -> None:
    index = DomainIndex()
    index.listed([], [])
    index.event(A, STARTED, 0)  # transient (createXML, an incoming migration)
    assert index.holds(A)
    index.event(A, DEFINED, 0)  # persisted
    index.event(A, STOPPED, 0)
    assert index.holds(A)  # defined, shut off
    index.event(A, STARTED, 0)
    index.event(A, UNDEFINED, 0)
    assert index.holds(A)  # running, transient now
    index.event(A, STOPPED, 0)
    assert index.holds(A) is False
    index.event(B, DEFINED, 0)
    index.event(B, DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_RENAMED)  # a rename: new name first ...
    index.event(B, UNDEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED_RENAMED)  # ... or old name first: same UUID
    assert index.holds(B)
    assert index.holds(B.upper())


# --- on a host connection -----------------------------------------------------------------------
# libvirt dispatches events on one asyncio loop per process: every test that connects shares the session's.
async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not so after 5s: {what}")


async def opened(manager: ConnectionManager, name: str, uri: str) -> HostConnection:
    conn = await manager.ensure(name, uri)
    await until(lambda: conn.connected and conn.holds_domain(A) is not None, f"{name} connected and listed")
    return conn


@pytest.mark.asyncio(loop_scope="session")
async def test_listed_at_open_kept_by_events_forgotten_when_lost() -> None:
    raw = libvirt.open("test:///default")  # the default test driver's state is shared while a connection holds it
    before, persistent_then_running = new_uuid(), new_uuid()
    raw.defineXML(domain_xml(before))
    manager = ConnectionManager()
    try:
        conn = await opened(manager, "idx", "test:///default")
        # Listed when it opened: the domain made before, and the test driver's own running one.
        assert conn.holds_domain(before) is True
        assert conn.holds_domain(raw.lookupByName("test").UUIDString()) is True
        assert conn.holds_domain(new_uuid()) is False

        # Kept by the events: defines and undefines through the connection or by anyone else.
        mine = new_uuid()
        await conn.call(lambda c: c.defineXML(domain_xml(mine)))
        await until(lambda: conn.holds_domain(mine) is True, "defined through the connection")
        raw.lookupByUUIDString(before).undefine()
        await until(lambda: conn.holds_domain(before) is False, "undefined by another client")
        transient = new_uuid()
        dom = raw.createXML(domain_xml(transient))
        await until(lambda: conn.holds_domain(transient) is True, "a transient domain started")
        dom.destroy()
        await until(lambda: conn.holds_domain(transient) is False, "a transient domain gone")
        dom = raw.defineXML(domain_xml(persistent_then_running))
        dom.create()
        dom.undefine()  # still running: transient now
        await asyncio.sleep(0.1)
        assert conn.holds_domain(persistent_then_running) is True
        dom.destroy()
        await until(lambda: conn.holds_domain(persistent_then_running) is False, "the transient domain stopped")

        # Lost: nothing is known (the index of the dead connection is forgotten) ...
        conn._mark_lost("test: connection lost")
        assert conn.holds_domain(mine) is None
        await until(lambda: not conn.connected and conn._domains is None, "closed")
        raw.lookupByUUIDString(mine).undefine()  # changes while it is away
        back = new_uuid()
        raw.defineXML(domain_xml(back))
        # ... and a new connection lists afresh.
        conn.retry_now()
        await until(lambda: conn.connected and conn.holds_domain(back) is not None, "reconnected and listed")
        assert conn.holds_domain(back) is True and conn.holds_domain(mine) is False
    finally:
        await manager.close_all()
        for uid in (before, persistent_then_running, mine, back):
            with contextlib.suppress(libvirt.libvirtError):
                raw.lookupByUUIDString(uid).undefine()
        raw.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_a_failed_listing_leaves_the_host_to_be_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(_conn: Any) -> tuple[list[str], list[str]]:
        raise LibvirtFailure("listing refused")

    monkeypatch.setattr("vdc.libvirt.connection.list_domains", failing)
    manager = ConnectionManager()
    try:
        conn = await manager.ensure("unlisted", "test:///default")
        await until(lambda: conn.connected, "connected")
        await asyncio.sleep(0.05)
        assert conn.holds_domain(A) is None
    finally:
        await manager.close_all()


# --- _find_existing -----------------------------------------------------------------------------
def asking_every_host(manager: ConnectionManager, uid: str) -> list[str]:
    """What ``_find_existing`` answered before the index: a lookup on every connected host."""
    found = []
    for name in sorted(manager.names()):
        conn = manager.get(name)
        if conn is None or not conn.connected or conn._conn is None:
            continue
        if domains.domain_exists(conn._conn, uid):
            found.append(name)
    return found


@pytest.mark.asyncio(loop_scope="session")
async def test_find_existing_answers_as_asking_every_host(tmp_path: Path) -> None:
    rng = random.Random(7)
    hosts = [f"hv{i}" for i in range(6)]
    uids = [new_uuid() for _ in range(40)]
    at_open = {h: [u for u in uids if rng.random() < 0.15] for h in hosts}
    at_open["hv0"].append(uids[0])
    at_open["hv3"].append(uids[0])  # on two hosts
    manager = ConnectionManager()
    calls: dict[str, int] = {}
    try:
        for h in hosts:
            node = tmp_path / f"{h}.xml"  # a private driver state per open: a host of its own
            node.write_text("<node>" + "".join(domain_xml(u) for u in at_open[h]) + "</node>")
            conn = await opened(manager, h, f"test://{node}")
            inner = conn.call

            async def counted(fn: Any, *, long_running: bool = False, _h: str = h, _inner: Any = inner) -> Any:
                calls[_h] = calls.get(_h, 0) + 1
                return await _inner(fn, long_running=long_running)

            conn.call = counted  # type: ignore[method-assign]
        controller = VmController(ObjectCache(), ObjectCache(), manager, None, None)  # type: ignore[arg-type]

        async def same_answers(what: str) -> None:
            for uid in [*uids, new_uuid()]:
                expected = asking_every_host(manager, uid)
                assert await controller._find_existing(uid) == expected, f"{what}: {uid}"
                assert await controller._find_existing(uid.upper()) == expected, f"{what}: {uid} in capitals"

        await same_answers("as listed")
        # Changes through each host's connection: defines, undefines, transient domains, starts and stops.
        for _ in range(60):
            h, uid = rng.choice(hosts), rng.choice(uids[1:])  # uids[0] stays on hv0 and hv3
            conn = manager.get(h)
            assert conn is not None
            action = rng.choice(["define", "undefine", "create", "destroy"])

            def change(c: Any, uid: str = uid, action: str = action) -> None:
                try:
                    if action == "define":
                        c.defineXML(domain_xml(uid))
                    elif action == "create":
                        c.createXML(domain_xml(uid))
                    else:
                        dom = c.lookupByUUIDString(uid)
                        dom.undefine() if action == "undefine" else dom.destroy()
                except libvirt.libvirtError:
                    pass  # not there, already running, ...

            await conn.call(change)
        await asyncio.sleep(0.2)  # the events are in
        await same_answers("after changes")

        # A lost host is skipped, as before; once back it is asked until listed, then answered by the index.
        lost = manager.get("hv3")
        assert lost is not None
        lost._mark_lost("test: connection lost")
        await same_answers("hv3 lost")
        assert "hv3" not in await controller._find_existing(uids[0])

        # Calls: a UUID no host holds costs none; one held costs one lookup per holder.
        calls.clear()
        assert await controller._find_existing(new_uuid()) == []
        assert calls == {}
        holders = asking_every_host(manager, uids[0])
        assert await controller._find_existing(uids[0]) == holders
        assert calls == dict.fromkeys(holders, 1)
    finally:
        await manager.close_all()
