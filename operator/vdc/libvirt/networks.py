"""Virtual network operations on a live connection (blocking: call them through HostConnection.call).

Networks are found by name (which names are ours is decided by the caller). :func:`ensure_network`
makes a network match a :class:`~vdc.libvirt.network_xml.NetworkConfig`, restarting it only when its
running definition differs in more than its *live parts*: its static DHCP hosts and its DNS TXT
records (an overlay's peers). :func:`set_dhcp_hosts` and :func:`set_dns_txt` change only those, on the
running network and its persistent definition, through ``virNetworkUpdate``: dnsmasq is told (and the
network hook run), the network and the guests on it are not disturbed.

Errors come out as :mod:`vdc.libvirt.errors` exceptions; a network that does not exist is
:class:`~vdc.libvirt.errors.NotFound`. libvirt reports a network that fails to start for host reasons
(a bridge it cannot create, dnsmasq or the firewall failing) as a "system error", which
:func:`~vdc.libvirt.errors.translate` takes for a lost connection; here it becomes a
:class:`NetworkFailure` when the connection is fine. Static hosts that do not fit the network's subnet
are refused with :class:`~vdc.libvirt.network_xml.NetworkXmlError` before libvirt is asked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from typing import Protocol

import libvirt

from vdc.libvirt.errors import (
    ConfigRejected,
    InvalidState,
    LibvirtFailure,
    NotFound,
    translated_on,
)
from vdc.libvirt.network_xml import DhcpHostConfig, DnsTxtConfig, NetworkConfig, NetworkXmlError


class NetworkFailure(LibvirtFailure):
    """A network operation failed on a host that is otherwise fine (bridge, dnsmasq, firewall …)."""


@dataclass(frozen=True)
class NetworkObservation:
    """A virtual network as libvirt reports it.

    ``dhcp_hosts`` are the static DHCP hosts in effect: the running network's while it runs, else its
    persistent definition's. ``bridge`` is the host bridge guests are plugged into.
    """

    name: str
    active: bool
    autostart: bool
    bridge: str | None
    dhcp_hosts: tuple[DhcpHostConfig, ...]
    uuid: str
    persistent: bool
    config: NetworkConfig | None = None
    """The persistent definition; None when it is not one we can read (a forward mode we do not model …)."""


# --- helpers -------------------------------------------------------------------------------------


def _translated(conn: libvirt.virConnect) -> AbstractContextManager[None]:
    """:func:`translated`, with libvirt's "system error" from the host's networking kept apart from a lost host."""
    return translated_on(conn, NetworkFailure)


def _network(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork:
    with _translated(conn):
        return conn.networkLookupByName(name)


def _network_or_none(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork | None:
    try:
        return _network(conn, name)
    except NotFound:
        return None


def _parse(xml: str) -> NetworkConfig | None:
    try:
        return NetworkConfig.from_string(xml)
    except NetworkXmlError:
        return None  # not something we can read back: treated as differing, so it is redefined


def _persistent_xml(net: libvirt.virNetwork) -> str:
    """The definition the next start uses (the test driver has no separate inactive XML: its only one)."""
    try:
        return str(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
            raise
        return str(net.XMLDesc(0))


class _LiveItem(Protocol):
    def to_string(self) -> str: ...


@dataclass(frozen=True)
class _LivePart:
    """A section of a network that ``virNetworkUpdate`` changes on the running network."""

    section: int
    items: Callable[[NetworkConfig], tuple[_LiveItem, ...]]


_DHCP_HOSTS = _LivePart(libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, lambda c: c.dhcp_hosts)
_DNS_TXT = _LivePart(libvirt.VIR_NETWORK_SECTION_DNS_TXT, lambda c: c.dns_txt)
_LIVE_PARTS = (_DHCP_HOSTS, _DNS_TXT)


def _without_live_parts(config: NetworkConfig | None) -> NetworkConfig | None:
    """``config`` less its static DHCP hosts and TXT records: what only a restart can change."""
    if config is None:
        return config
    ipv4 = None if config.ipv4 is None else dataclasses.replace(config.ipv4, hosts=())
    return dataclasses.replace(config, ipv4=ipv4, dns_txt=())


def _same(a: NetworkConfig | None, b: NetworkConfig) -> bool:
    """The same network: equal but for the order of its live parts' items (which means nothing)."""
    return (
        a is not None
        and _without_live_parts(a) == _without_live_parts(b)
        and all(set(part.items(a)) == set(part.items(b)) for part in _LIVE_PARTS)
    )


def _observe(conn: libvirt.virConnect, net: libvirt.virNetwork) -> NetworkObservation:
    with _translated(conn):
        active = bool(net.isActive())
        persistent = bool(net.isPersistent())
        config = _parse(_persistent_xml(net)) if persistent else None
        in_effect = _parse(net.XMLDesc(0)) if active else config
        bridge = None if in_effect is None else in_effect.bridge
        if bridge is None:
            with suppress(libvirt.libvirtError):
                bridge = str(net.bridgeName())
        return NetworkObservation(
            name=str(net.name()),
            active=active,
            autostart=bool(net.autostart()),
            bridge=bridge,
            dhcp_hosts=() if in_effect is None else in_effect.dhcp_hosts,
            uuid=str(net.UUIDString()),
            persistent=persistent,
            config=config,
        )


def _update_items(
    conn: libvirt.virConnect,
    net: libvirt.virNetwork,
    part: _LivePart,
    current: Sequence[_LiveItem],
    wanted: Sequence[_LiveItem],
    flags: int,
) -> None:
    """Delete the items of ``current`` that are not in ``wanted``, then add those missing (libvirt
    refuses to add a host sharing its MAC, address or name with one still there, or a TXT record
    sharing its name)."""
    with _translated(conn):
        for item in current:
            if item not in wanted:
                net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, part.section, -1, item.to_string(), flags)
        for item in wanted:
            if item not in current:
                net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, part.section, -1, item.to_string(), flags)


def _start(conn: libvirt.virConnect, net: libvirt.virNetwork) -> None:
    """Start the network (one started meanwhile is fine)."""
    with _translated(conn):
        try:
            net.create()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and net.isActive():
                return
            raise


# --- networks ------------------------------------------------------------------------------------


def observe_network(conn: libvirt.virConnect, name: str) -> NetworkObservation | None:
    """The network with this name, or None when the host has none."""
    net = _network_or_none(conn, name)
    if net is None:
        return None
    try:
        return _observe(conn, net)
    except NotFound:
        return None  # undefined meanwhile


def ensure_network(conn: libvirt.virConnect, config: NetworkConfig) -> NetworkObservation:
    """Make the network exist as ``config`` says, running and autostarted; return it.

    ``config``'s static DHCP hosts and TXT records are the complete lists (pass them all, as for
    :func:`set_dhcp_hosts`; their order does not matter). A missing network is defined. A persistent
    definition that differs is replaced (keeping the UUID when ``config`` has none); a transient network
    is made persistent. A running network is stopped, redefined and started again only when its running
    definition differs in more than those live parts (its bridge is then recreated: guests plugged into
    it lose their link until they are plugged in again); differing live parts alone are changed on the
    running network with ``virNetworkUpdate``, no restart. A network that is not running is started.
    """
    net = _network_or_none(conn, config.name)
    if net is None:
        with _translated(conn):
            net = conn.networkDefineXML(config.to_string())
    else:
        with _translated(conn):
            existing_uuid = str(net.UUIDString())
        if config.uuid is not None and config.uuid != existing_uuid:
            # libvirt would refuse the definition; say so before stopping anything.
            raise ConfigRejected(f"network {config.name} exists with uuid {existing_uuid}, not {config.uuid}")
        wanted = dataclasses.replace(config, uuid=existing_uuid)
        with _translated(conn):
            active = bool(net.isActive())
            persistent = bool(net.isPersistent())
            running = _parse(net.XMLDesc(0)) if active else None
            stored = _parse(_persistent_xml(net)) if persistent else None
        if active and (running is None or _without_live_parts(running) != _without_live_parts(wanted)):
            # Stopped before it is redefined, so that the new definition is the one it starts with
            # (rather than one libvirt keeps aside until the network next stops). A transient network
            # is gone once stopped, and defined again below.
            with _translated(conn):
                net.destroy()
            active = False
        if not persistent or not _same(stored, wanted):
            with _translated(conn):
                # Of a running network (only its live parts differ): kept for its next start, no restart.
                net = conn.networkDefineXML(wanted.to_string())
        if active and running is not None and not _same(running, wanted):
            for part in _LIVE_PARTS:
                live = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
                _update_items(conn, net, part, part.items(running), part.items(wanted), live)
    with _translated(conn):
        active = bool(net.isActive())
    if not active:
        _start(conn, net)
    with _translated(conn):
        if not net.autostart():
            net.setAutostart(1)
    return _observe(conn, net)


def _views(conn: libvirt.virConnect, net: libvirt.virNetwork) -> list[tuple[NetworkConfig, int]]:
    """The running definition and the persistent one, each with the update flag that reaches it."""
    with _translated(conn):
        active = bool(net.isActive())
        persistent = bool(net.isPersistent())
        views: list[tuple[NetworkConfig, int]] = []
        if active:
            views.append((NetworkConfig.from_string(net.XMLDesc(0)), libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE))
        if persistent:
            views.append((NetworkConfig.from_string(_persistent_xml(net)), libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG))
    return views


def _set_items(
    conn: libvirt.virConnect, net: libvirt.virNetwork, part: _LivePart, views: list[tuple[NetworkConfig, int]],
    wanted: Sequence[_LiveItem],
) -> NetworkObservation:  # fmt: skip
    if len(views) == 2 and set(part.items(views[0][0])) == set(part.items(views[1][0])):
        # The usual case: one update of both.
        views = [(views[0][0], views[0][1] | views[1][1])]
    for view, flags in views:
        if set(part.items(view)) != set(wanted):
            _update_items(conn, net, part, part.items(view), wanted, flags)
    return _observe(conn, net)


def set_dhcp_hosts(conn: libvirt.virConnect, name: str, hosts: Sequence[DhcpHostConfig]) -> NetworkObservation:
    """Make the network's static DHCP hosts exactly ``hosts`` (in this order for new ones), without a restart.

    Only the differences are sent (``virNetworkUpdate`` of the ``IP_DHCP_HOST`` section: deletions,
    then additions; a host whose address or name changed is deleted and added again), to the running
    network and to its persistent definition, each from its own current list. ``hosts`` must fit the
    network's IPv4 subnet, with unique MACs, addresses and names (else :class:`NetworkXmlError`, and
    nothing is changed). The network must exist (else :class:`NotFound`) and be one whose definition
    we can read, with an IPv4 address unless ``hosts`` is empty (else :class:`NetworkXmlError`).
    """
    wanted = tuple(hosts)
    net = _network(conn, name)
    views = _views(conn, net)
    for view, _flag in views:
        if view.ipv4 is not None:
            dataclasses.replace(view.ipv4, hosts=wanted)  # checks them against the subnet
        elif wanted:
            raise NetworkXmlError(f"network {name} has no IPv4 address: it cannot have static DHCP hosts")
    return _set_items(conn, net, _DHCP_HOSTS, views, wanted)


def set_dns_txt(conn: libvirt.virConnect, name: str, records: Sequence[DnsTxtConfig]) -> NetworkObservation:
    """Make the network's DNS TXT records exactly ``records``, without a restart (as :func:`set_dhcp_hosts`:
    a record whose value changed is deleted and added again). Each update runs the host's network hook,
    which is how an overlay learns its peers. Names must be unique (else :class:`NetworkXmlError`)."""
    wanted = tuple(records)
    net = _network(conn, name)
    views = _views(conn, net)
    for view, _flag in views:
        dataclasses.replace(view, dns_txt=wanted)  # checks them against the network
    return _set_items(conn, net, _DNS_TXT, views, wanted)


def host_interface_exists(conn: libvirt.virConnect, name: str) -> bool | None:
    """Whether the host has a network interface of this name (a device libvirt did not make, such as an
    overlay's VXLAN device); None when the host's libvirt cannot tell (no interface driver)."""
    try:
        with _translated(conn):
            conn.interfaceLookupByName(name)
    except NotFound:
        return False
    except LibvirtFailure as exc:
        if exc.code == libvirt.VIR_ERR_NO_SUPPORT:
            return None
        raise
    return True


def remove_network(conn: libvirt.virConnect, name: str) -> bool:
    """Stop and undefine the network (its bridge goes with it); False when it was already gone."""
    net = _network_or_none(conn, name)
    if net is None:
        return False
    try:
        with _translated(conn):
            active, persistent = bool(net.isActive()), bool(net.isPersistent())
            if active:
                net.destroy()
            if persistent:
                net.undefine()
    except NotFound:
        return False
    except InvalidState:
        # Stopped meanwhile (a transient network is gone once stopped).
        if _network_or_none(conn, name) is not None:
            raise
    return True


__all__ = [
    "NetworkFailure",
    "NetworkObservation",
    "ensure_network",
    "host_interface_exists",
    "observe_network",
    "remove_network",
    "set_dhcp_hosts",
    "set_dns_txt",
]
