"""libvirt errors become our exceptions at the boundary (``libvirt.errors.translate``/``translated``).

Where libvirt's in-process test driver (``test:///default``) can produce the error for real, the
libvirtError comes from a real failing call; codes it cannot produce (authentication, RPC, a missing
kernel) are given to a libvirtError by hand.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

from vdc.libvirt.errors import (  # noqa: E402
    ConfigRejected,
    DomainNotFound,
    HostUnreachable,
    InvalidState,
    LibvirtFailure,
    NotFound,
    translate,
    translated,
)

OWN_DOMAIN = """<domain type='qemu'>
  <name>vdc-errors-probe</name>
  <uuid>6a1d3b6e-2f0c-4b8e-9a7d-5c4b3a291807</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64'>hvm</type></os>
</domain>"""


@pytest.fixture(scope="module")
def conn() -> Iterator[typing.Any]:
    connection = libvirt.open("test:///default")
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def stopped_domain(conn: typing.Any) -> Iterator[typing.Any]:
    """A domain of our own, defined and shut off (the shared default domain is left alone)."""
    domain = conn.defineXML(OWN_DOMAIN)
    try:
        yield domain
    finally:
        if domain.isActive():
            domain.destroy()
        domain.undefine()


def failure_of(call: Callable[[], object]) -> typing.Any:
    with pytest.raises(libvirt.libvirtError) as info:
        call()
    return info.value


def synthetic(code: int, message: str = "synthetic failure") -> typing.Any:
    """A libvirtError carrying ``code``, as libvirt-python builds it from virGetLastError()."""
    exc = libvirt.libvirtError(message)
    exc.err = (code, libvirt.VIR_FROM_NONE, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return exc


# --- real failures from the test driver ----------------------------------------------------------


REAL: list[tuple[str, Callable[[typing.Any], object], int, type[LibvirtFailure]]] = [
    ("domain-by-name", lambda c: c.lookupByName("vdc-no-such-domain"), libvirt.VIR_ERR_NO_DOMAIN, DomainNotFound),
    (
        "domain-by-uuid",
        lambda c: c.lookupByUUIDString("00000000-0000-4000-8000-000000000000"),
        libvirt.VIR_ERR_NO_DOMAIN,
        DomainNotFound,
    ),
    ("network", lambda c: c.networkLookupByName("vdc-no-such-net"), libvirt.VIR_ERR_NO_NETWORK, NotFound),
    ("pool", lambda c: c.storagePoolLookupByName("vdc-no-such-pool"), libvirt.VIR_ERR_NO_STORAGE_POOL, NotFound),
    (
        "volume",
        lambda c: c.storagePoolLookupByName("default-pool").storageVolLookupByName("vdc-no-such-vol"),
        libvirt.VIR_ERR_NO_STORAGE_VOL,
        NotFound,
    ),
    ("not-well-formed", lambda c: c.defineXML("<domain>"), libvirt.VIR_ERR_XML_DETAIL, ConfigRejected),
    (
        "no-os-type",
        lambda c: c.defineXML("<domain type='qemu'><name>vdc-bad</name></domain>"),
        libvirt.VIR_ERR_XML_ERROR,
        ConfigRejected,
    ),
    (
        "bad-domain-type",
        lambda c: c.defineXML(
            "<domain type='nonsense'><name>vdc-bad</name><memory>1024</memory><os><type>hvm</type></os></domain>"
        ),
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
        ConfigRejected,
    ),
]


@pytest.mark.parametrize(("call", "code", "expected"), [r[1:] for r in REAL], ids=[r[0] for r in REAL])
def test_real_failures_are_translated(
    conn: typing.Any, call: Callable[[typing.Any], object], code: int, expected: type[LibvirtFailure]
) -> None:
    exc = failure_of(lambda: call(conn))
    assert exc.get_error_code() == code
    ours = translate(exc)
    assert type(ours) is expected
    assert ours.code == code
    assert str(ours) == exc.get_error_message()


def test_domain_not_found_is_a_not_found() -> None:
    assert issubclass(DomainNotFound, NotFound)
    for cls in (HostUnreachable, NotFound, DomainNotFound, ConfigRejected, InvalidState):
        assert issubclass(cls, LibvirtFailure)
    assert not issubclass(NotFound, DomainNotFound)


def test_destroying_a_stopped_domain_is_an_invalid_state(stopped_domain: typing.Any) -> None:
    exc = failure_of(stopped_domain.destroy)
    assert exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID
    assert isinstance(translate(exc), InvalidState)


def test_memory_beyond_the_maximum_is_a_rejected_argument(stopped_domain: typing.Any) -> None:
    exc = failure_of(lambda: stopped_domain.setMemoryFlags(2**40, libvirt.VIR_DOMAIN_AFFECT_CONFIG))
    assert exc.get_error_code() == libvirt.VIR_ERR_INVALID_ARG
    assert isinstance(translate(exc), ConfigRejected)


def test_an_unreachable_daemon_is_host_unreachable(tmp_path: typing.Any) -> None:
    socket = tmp_path / "no-daemon-here.sock"
    exc = failure_of(lambda: libvirt.open(f"test+unix:///default?socket={socket}"))
    assert exc.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR
    ours = translate(exc)
    assert type(ours) is HostUnreachable
    assert str(socket) in str(ours)


def test_codes_we_do_not_map_stay_a_plain_libvirt_failure(stopped_domain: typing.Any) -> None:
    # The test driver reports "already running" as an internal error.
    stopped_domain.create()
    exc = failure_of(stopped_domain.create)
    assert exc.get_error_code() == libvirt.VIR_ERR_INTERNAL_ERROR
    ours = translate(exc)
    assert type(ours) is LibvirtFailure
    assert ours.code == libvirt.VIR_ERR_INTERNAL_ERROR


# --- codes the test driver cannot produce ----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (libvirt.VIR_ERR_NO_CONNECT, HostUnreachable),
        (libvirt.VIR_ERR_INVALID_CONN, HostUnreachable),
        (libvirt.VIR_ERR_SYSTEM_ERROR, HostUnreachable),
        (libvirt.VIR_ERR_RPC, HostUnreachable),
        (libvirt.VIR_ERR_AUTH_FAILED, HostUnreachable),
        (libvirt.VIR_ERR_AUTH_UNAVAILABLE, HostUnreachable),
        (libvirt.VIR_ERR_NO_DOMAIN, DomainNotFound),
        (libvirt.VIR_ERR_NO_NETWORK, NotFound),
        (libvirt.VIR_ERR_NO_STORAGE_POOL, NotFound),
        (libvirt.VIR_ERR_NO_STORAGE_VOL, NotFound),
        (libvirt.VIR_ERR_XML_ERROR, ConfigRejected),
        (libvirt.VIR_ERR_XML_DETAIL, ConfigRejected),
        (libvirt.VIR_ERR_CONFIG_UNSUPPORTED, ConfigRejected),
        (libvirt.VIR_ERR_INVALID_ARG, ConfigRejected),
        (libvirt.VIR_ERR_NO_KERNEL, ConfigRejected),
        (libvirt.VIR_ERR_OPERATION_INVALID, InvalidState),
        (libvirt.VIR_ERR_INTERNAL_ERROR, LibvirtFailure),
        (libvirt.VIR_ERR_OPERATION_TIMEOUT, LibvirtFailure),
        (libvirt.VIR_ERR_NO_SUPPORT, LibvirtFailure),
        (99_999, LibvirtFailure),
    ],
)
def test_every_mapped_code(code: int, expected: type[LibvirtFailure]) -> None:
    ours = translate(synthetic(code, f"failure {code}"))
    assert type(ours) is expected
    assert ours.code == code
    assert str(ours) == f"failure {code}"


def test_an_error_without_libvirt_details_keeps_its_message() -> None:
    libvirt.virResetLastError()  # libvirtError() otherwise takes the thread's last error
    exc = libvirt.libvirtError("plain")
    assert exc.err is None
    ours = translate(exc)
    assert type(ours) is LibvirtFailure
    assert ours.code is None
    assert str(ours) == "plain"


# --- translated() --------------------------------------------------------------------------------


def test_translated_raises_ours_from_the_original(conn: typing.Any) -> None:
    with pytest.raises(DomainNotFound) as info, translated():
        conn.lookupByName("vdc-no-such-domain")
    assert isinstance(info.value.__cause__, libvirt.libvirtError)
    assert info.value.code == libvirt.VIR_ERR_NO_DOMAIN


def test_translated_leaves_other_exceptions_and_success_alone(conn: typing.Any) -> None:
    with translated():
        assert conn.getType() == "TEST"
    with pytest.raises(KeyError), translated():
        raise KeyError("not libvirt")
    failure = LibvirtFailure("already ours", code=1)
    with pytest.raises(LibvirtFailure) as info, translated():
        raise failure
    assert info.value is failure
