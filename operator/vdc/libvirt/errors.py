"""Our own exceptions for libvirt failures, translated at the boundary (callers never see libvirtError)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt


class LibvirtFailure(Exception):
    """A libvirt call failed. ``code`` is libvirt's error code (VIR_ERR_*)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class HostUnreachable(LibvirtFailure):
    """The host's libvirt daemon cannot be reached (connection refused, closed, timed out)."""


class NotFound(LibvirtFailure):
    """The object (domain, network, pool, volume) does not exist on the host."""


class DomainNotFound(NotFound):
    pass


class ConfigRejected(LibvirtFailure):
    """libvirt refused the XML we gave it (a bug in our builder or an unsupported host)."""


class InvalidState(LibvirtFailure):
    """The operation does not fit the object's state (e.g. starting a running domain)."""


class HookRefused(LibvirtFailure):
    """A libvirt hook script on the host refused the operation (e.g. the vdc qemu hook refusing a
    kernel outside the host's allowed directories). ``refusal`` is what the hook said."""

    @property
    def refusal(self) -> str:
        text = str(self)
        start = text.find("vdc: ")
        return text[start:].strip() if start >= 0 else text


_UNREACHABLE = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
}
_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN: DomainNotFound,
    libvirt.VIR_ERR_NO_NETWORK: NotFound,
    libvirt.VIR_ERR_NO_INTERFACE: NotFound,
    libvirt.VIR_ERR_NO_STORAGE_POOL: NotFound,
    libvirt.VIR_ERR_NO_STORAGE_VOL: NotFound,
}
_REJECTED = {
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    libvirt.VIR_ERR_INVALID_ARG,
    libvirt.VIR_ERR_NO_KERNEL,
}
_INVALID_STATE = {libvirt.VIR_ERR_OPERATION_INVALID}


def translate(exc: libvirt.libvirtError) -> LibvirtFailure:
    """The exception of ours that says what went wrong."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code in _NOT_FOUND:
        return _NOT_FOUND[code](message, code=code)
    if code in _UNREACHABLE:
        return HostUnreachable(message, code=code)
    if code in _REJECTED:
        return ConfigRejected(message, code=code)
    if code in _INVALID_STATE:
        return InvalidState(message, code=code)
    if code == libvirt.VIR_ERR_HOOK_SCRIPT_FAILED:
        return HookRefused(message, code=code)
    return LibvirtFailure(message, code=code)


@contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc) from exc


def connection_alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


@contextmanager
def translated_on(conn: libvirt.virConnect, local: type[LibvirtFailure]) -> Iterator[None]:
    """:func:`translated`, keeping libvirt's "system error" on a connection that is still alive (a
    storage I/O or host networking failure) apart from a lost host: raised as ``local``."""
    try:
        with translated():
            yield
    except HostUnreachable as failure:
        if failure.code == libvirt.VIR_ERR_SYSTEM_ERROR and connection_alive(conn):
            raise local(str(failure), code=failure.code) from failure
        raise
