"""A host's libvirt connection (``libvirt.connection.HostConnection``) on libvirt's test driver: an
error on a dead connection marks it lost however it was translated, and a lost connection is never
closed under a call still running on it (libvirt-python crashes when it is)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from vdc.libvirt import connection as connection_module
from vdc.libvirt.connection import ConnectionManager, HostConnection
from vdc.libvirt.errors import HostUnreachable, LibvirtFailure

# libvirt dispatches events on one asyncio loop per process: every test that connects shares the session's.
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def connected(name: str) -> tuple[ConnectionManager, HostConnection]:
    connections = ConnectionManager()
    conn = await connections.ensure(name, "test:///default")
    for _ in range(500):
        if conn.connected:
            break
        await asyncio.sleep(0.01)
    assert conn.connected
    return connections, conn


async def test_an_error_translated_by_the_call_itself_on_a_dead_connection_marks_it_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connections, conn = await connected("dead-conn")
    try:

        def translated(_: object) -> None:
            raise LibvirtFailure("internal error: client socket is closed")

        monkeypatch.setattr(connection_module, "connection_alive", lambda _conn: False)
        with pytest.raises(HostUnreachable, match="client socket is closed"):
            await conn.call(translated)
        for _ in range(500):
            if not conn.connected:
                break
            await asyncio.sleep(0.01)
        assert not conn.connected  # lost: it reconnects, and meanwhile calls say the host is unreachable
    finally:
        await connections.close_all()


async def test_an_error_on_a_live_connection_stays_the_calls_own(monkeypatch: pytest.MonkeyPatch) -> None:
    connections, conn = await connected("live-conn")
    try:

        def translated(_: object) -> None:
            raise LibvirtFailure("volume is in use")

        with pytest.raises(LibvirtFailure, match="in use") as info:
            await conn.call(translated)
        assert not isinstance(info.value, HostUnreachable)
        assert conn.connected
    finally:
        await connections.close_all()


async def test_a_lost_connection_is_closed_only_after_the_calls_running_on_it_return() -> None:
    connections, conn = await connected("busy-conn")
    release = threading.Event()
    order: list[str] = []

    def slow(c: object) -> str:
        release.wait(5)
        order.append("call returned")
        return str(c.getHostname())  # type: ignore[attr-defined]  # still usable: not closed under us

    try:
        running = asyncio.create_task(conn.call(slow))
        await asyncio.sleep(0.05)
        closing = asyncio.create_task(conn._close())  # as after a lost connection
        await asyncio.sleep(0.05)
        assert not closing.done()  # waits for the call
        assert not conn.connected  # but no new call gets the connection
        with pytest.raises(HostUnreachable):
            await conn.call(lambda c: c.getHostname())
        release.set()
        assert await running
        await closing
        assert order == ["call returned"]
    finally:
        release.set()
        await connections.close_all()


async def test_a_host_that_does_not_answer_the_heartbeat_in_time_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    connections, conn = await connected("silent-host")
    try:
        # As a hung host: the heartbeat's answer never comes within the (here tiny) timeout.
        monkeypatch.setattr(connection_module, "HEARTBEAT_SECONDS", 0.01)
        monkeypatch.setattr(connection_module, "HEARTBEAT_TIMEOUT_SECONDS", 0.0)
        conn._lost.set()  # reconnect now, with the settings above
        for _ in range(500):
            if conn.last_error and "no answer" in conn.last_error:
                break
            await asyncio.sleep(0.01)
        assert conn.last_error is not None and "no answer for 0s" in conn.last_error
    finally:
        await connections.close_all()
