"""A VM's plan and its read back look its domain up once (DomainHandles), on libvirt's test driver: the same
domain read back as through the plain connection, with fewer round trips to the host."""

from __future__ import annotations

import typing
from collections.abc import Iterator

import pytest

from vdc.libvirt import domains
from vdc.libvirt.domain_xml import DomainConfig, OwnerMetadata
from vdc.libvirt.errors import DomainNotFound

UID = "5d0c7a3e-1b2f-4c8d-9e6a-7f1b2c3d4e5f"
CONFIG = DomainConfig(
    name="team-a_handles",
    uuid=UID,
    owner=OwnerMetadata(namespace="team-a", name="handles", uid=UID),
    memory_kib=65536,
    current_memory_kib=65536,
    domain_type="test",
)


class CountingConnection:
    """A real connection that counts the calls made through it (by name)."""

    def __init__(self, conn: typing.Any) -> None:
        self.conn = conn
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> typing.Any:
        self.calls[name] = self.calls.get(name, 0) + 1
        return getattr(self.conn, name)


@pytest.fixture
def conn() -> Iterator[typing.Any]:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    c = libvirt.open("test:///default")
    try:
        yield c
    finally:
        domains.remove(c, UID)
        c.close()


def test_define_start_and_read_back_look_the_domain_up_no_more(conn: typing.Any) -> None:
    counted = CountingConnection(conn)
    handles = domains.DomainHandles(typing.cast(typing.Any, counted)).connection()
    domains.define(handles, CONFIG)
    domains.start(handles, UID)
    seen = domains.observe_domain(handles, UID)
    assert counted.calls.get("lookupByUUIDString", 0) == 0  # the plain connection: two lookups
    assert counted.calls["defineXML"] == 1
    assert seen is not None and seen.state == "running"
    assert seen == domains.observe_domain(conn, UID)  # the same read back as through the connection


def test_a_domain_not_defined_through_it_is_looked_up_once(conn: typing.Any) -> None:
    domains.define(conn, CONFIG)
    counted = CountingConnection(conn)
    handles = domains.DomainHandles(typing.cast(typing.Any, counted)).connection()
    domains.start(handles, UID)
    domains.observe_domain(handles, UID)
    assert counted.calls["lookupByUUIDString"] == 1


def test_a_missing_domain_is_still_not_found(conn: typing.Any) -> None:
    handles = domains.DomainHandles(conn).connection()
    assert domains.observe_domain(handles, UID) is None
    with pytest.raises(DomainNotFound):
        domains.start(handles, UID)


def test_a_handle_kept_after_the_domain_was_removed_fails_as_a_lookup_would(conn: typing.Any) -> None:
    handles = domains.DomainHandles(conn).connection()
    domains.define(handles, CONFIG)
    domains.remove(conn, UID)
    with pytest.raises(DomainNotFound):
        domains.start(handles, UID)
    assert domains.observe_domain(handles, UID) is None
