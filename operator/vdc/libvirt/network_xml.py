"""libvirt virtual network XML: one small frozen dataclass per element, to and from XML.

Like :mod:`vdc.libvirt.domain_xml` and :mod:`vdc.libvirt.storage_xml`, the classes here only translate
between Python objects and libvirt's ``<network>`` XML: no policy, no naming, no I/O, no libvirt
calls. XML is built with :mod:`xml.etree.ElementTree`'s element API, never by formatting strings, and
every text or attribute value is checked to be representable in XML 1.0.

Three forward modes are modelled:

* ``nat``: a bridge libvirt creates (``bridge``), an IPv4 (and/or IPv6) address on it, dnsmasq for
  DHCP and DNS, NAT to the host's uplink;
* ``none`` (isolated, no ``<forward>``): the same without any forwarding;
* ``bridge``: an existing host bridge (``<forward mode='bridge'/>`` + ``<bridge name=…/>``); libvirt
  only plugs guests into it, so it takes no addresses, DHCP, DNS or MTU. An Open vSwitch bridge is
  ``openvswitch=True`` (``<virtualport type='openvswitch'/>``).

What each mode accepts follows libvirt's network driver (``networkValidate`` in ``bridge_driver.c`` and
the network XML parser): ``<ip>``, ``<dns>``, ``<domain>`` and ``<mtu>`` only in nat and isolated
networks; a nat network needs an address; a network-wide ``<bandwidth>`` in every mode here (a bridge
network has its bridge name); and ``<vlan>`` only in a bridge network on an Open vSwitch bridge (the
other modes libvirt accepts it in, hostdev and passthrough, are SR-IOV modes we do not model). Some of
these libvirt checks run only in the real network driver (the test driver happily stores a ``<vlan>``
on a Linux bridge network, which the QEMU host then refuses): the dataclasses refuse them all at
construction, so a config that builds is one libvirt takes and does not silently ignore. Likewise
DHCP ranges and static hosts must lie in the subnet, and not on its network or broadcast address
(libvirt refuses the range; it accepts such a host, which dnsmasq then never serves).

An overlay (VXLAN) segment is a nat or isolated network plus what libvirt cannot make itself: a VXLAN
device on the bridge with a forwarding entry per other host. libvirt carries the settings for a
network hook script on the host (``vdc.hooks.libvirt_network``) that makes them: the static ones
(:class:`OverlayConfig`: VNI, port, local address, device) in the network's ``<metadata>``, fixed
while it runs; the other hosts' addresses as DNS TXT records (:class:`DnsTxtConfig`), which
``virNetworkUpdate`` changes on the running network, and each change runs the hook again.

Parsing reads back every field :meth:`to_xml` writes and ignores what we do not model, so the XML
libvirt returns (``virNetworkGetXMLDesc``: ``connections``, the generated ``<mac>``, ``stp``/``delay``
on the bridge, ``<nat><port …/></nat>`` of a running nat network, ``<lease>`` …) parses. What would be
misread is refused with :class:`NetworkXmlError` instead: forward modes we do not model, a second IPv4
address or DHCP range, a per-domain DNS forwarder, a VLAN trunk, another virtual port type.

What libvirt fills in or changes, so that a config read back equals the one written except for it:

* a network defined without ``uuid`` gets one;
* a DHCP host's MAC address is returned as written; it is read back in lowercase (which is also the
  only form the dataclasses accept);
* an IPv4 ``netmask`` (networks defined elsewhere) is read as the equivalent ``prefix``.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Self, get_args

from vdc.libvirt.xml_common import BandwidthConfig, XmlError, XmlHelpers

ForwardMode = Literal["nat", "none", "bridge"]
"""``nat``: NAT to the host's uplink; ``none``: isolated (no ``<forward>``); ``bridge``: an existing host bridge."""

_FORWARD_MODES: tuple[ForwardMode, ...] = get_args(ForwardMode)
_FORWARD_ELEMENT_MODES: tuple[ForwardMode, ...] = ("nat", "bridge")
"""The modes written as ``<forward mode=…>`` (``none`` is the absence of ``<forward>``)."""
# Forward modes in which libvirt manages the bridge and takes addresses, DHCP, DNS and an MTU.
_ROUTED_MODES: frozenset[ForwardMode] = frozenset({"nat", "none"})
_MAC = re.compile(r"^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$")
"""A unicast MAC address in lowercase (libvirt refuses multicast addresses for DHCP hosts)."""
# Linux interface names: at most 15 bytes, no '/', ':' or whitespace; libvirt takes '%d' as a template.
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_DNS_NAME = re.compile(r"^[A-Za-z0-9.-]{1,253}$")
"""libvirt's ``dnsName`` (the ``<domain name=…>`` attribute)."""
_TXT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$")
"""A TXT record name libvirt and dnsmasq take (no spaces or commas)."""
OVERLAY_NS = "https://vdc.dev/xmlns/overlay/v1"
"""XML namespace of our overlay settings inside a network's ``<metadata>``."""
OVERLAY_TAG = f"{{{OVERLAY_NS}}}overlay"
ET.register_namespace("vdcnet", OVERLAY_NS)
VNI_MAX = 2**24 - 1
_HOST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$")
"""A DHCP host name dnsmasq takes (it lands in dnsmasq's hosts file, comma separated)."""
VLAN_TAG_MAX = 4095
MTU_MIN, MTU_MAX = 68, 65535


class NetworkXmlError(XmlError):
    """The XML is not a network we can read, or a config cannot be expressed in libvirt XML."""


# --- helpers -------------------------------------------------------------------------------------


_xml = XmlHelpers(NetworkXmlError)


def _ipv4(value: str, what: str) -> ipaddress.IPv4Address:
    """``value`` as an address; it must be written the way libvirt writes it back."""
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise NetworkXmlError(f"{what} {value!r} is not an IPv4 address") from None
    if str(address) != value:
        raise NetworkXmlError(f"{what} {value!r} must be written {str(address)!r}")
    return address


def _ip(value: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 or IPv6 address in canonical (compressed, lowercase) form."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise NetworkXmlError(f"{what} {value!r} is not an IP address") from None
    if str(address) != value:
        raise NetworkXmlError(f"{what} {value!r} must be written {str(address)!r}")
    return address


def _check_mac(value: str, what: str) -> None:
    if not _MAC.match(value):
        raise NetworkXmlError(f"{what} {value!r} is not a lowercase unicast aa:bb:cc:dd:ee:ff address")


def _check_ifname(value: str, what: str) -> None:
    if not _IFNAME.match(value) or value in (".", ".."):
        raise NetworkXmlError(f"{what} {value!r} is not an interface name (1-15 of A-Z a-z 0-9 _ . -)")


def _unique(values: Iterable[object], what: str) -> None:
    seen: set[object] = set()
    for value in values:
        if value in seen:
            raise NetworkXmlError(f"{what} {value} appears more than once")
        seen.add(value)


def _yes_no(value: str | None, what: str) -> bool:
    return _xml.pick(value or "no", ("yes", "no"), what) == "yes"


# --- DHCP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DhcpHostConfig:
    """``<host mac=… name=… ip=…/>`` in an IPv4 ``<dhcp>``: a static lease of ``ip`` to ``mac``.

    Its :meth:`to_string` is the XML ``virNetworkUpdate`` takes for the ``IP_DHCP_HOST`` section (add
    and delete); that the address lies in the network's subnet is checked by :class:`Ipv4Config`.
    """

    mac: str
    ip: str
    name: str | None = None

    def __post_init__(self) -> None:
        _check_mac(self.mac, "DHCP host mac")
        _ipv4(self.ip, "DHCP host ip")
        if self.name is not None and not _HOST_NAME.match(self.name):
            raise NetworkXmlError(
                f"DHCP host name {self.name!r} is not a host name (letters, digits, _ . -; not starting with . or -)"
            )

    def to_xml(self) -> ET.Element:
        return _xml.new("host", {"mac": self.mac, "name": self.name, "ip": self.ip})

    def to_string(self) -> str:
        """The ``<host/>`` element on one line (for ``virNetworkUpdate``)."""
        return ET.tostring(self.to_xml(), encoding="unicode")

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        """Raises :class:`NetworkXmlError` for a host without a MAC address (libvirt allows name-only hosts)."""
        _xml.expect_tag(el, "host")
        return cls(mac=_xml.attr(el, "mac").lower(), ip=_xml.attr(el, "ip"), name=el.get("name"))

    @classmethod
    def from_string(cls, text: str) -> Self:
        return cls.from_xml(_xml.parse(text))


@dataclass(frozen=True)
class DhcpRangeConfig:
    """``<range start=… end=…/>``: the addresses dnsmasq hands out dynamically (both included)."""

    start: str
    end: str

    def __post_init__(self) -> None:
        if _ipv4(self.start, "DHCP range start") > _ipv4(self.end, "DHCP range end"):
            raise NetworkXmlError(f"DHCP range {self.start} - {self.end} is reversed")

    def to_xml(self) -> ET.Element:
        return _xml.new("range", {"start": self.start, "end": self.end})

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "range")
        return cls(start=_xml.attr(el, "start"), end=_xml.attr(el, "end"))


# --- addresses -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ipv4Config:
    """``<ip address=… prefix=…>``: the bridge's IPv4 address (the guests' gateway) in its subnet,
    with DHCP: a dynamic ``dhcp_range`` and static ``hosts`` (either, both or neither; with neither
    there is no ``<dhcp>`` and dnsmasq serves no DHCP).

    Every range and host address lies in the subnet and is neither its network nor its broadcast
    address; no host has the gateway's address; MACs, addresses and names of hosts are unique (libvirt
    refuses to add a host that shares any of them with another).
    """

    address: str
    prefix: int
    dhcp_range: DhcpRangeConfig | None = None
    hosts: tuple[DhcpHostConfig, ...] = ()

    def __post_init__(self) -> None:
        gateway = _ipv4(self.address, "IPv4 address")
        if not 0 <= self.prefix <= 32:
            raise NetworkXmlError(f"IPv4 prefix must be 0-32, got {self.prefix}")
        network = self.network
        if gateway in self._reserved():
            raise NetworkXmlError(f"IPv4 address {self.address} is the network or broadcast address of {network}")
        if self.dhcp_range is not None:
            for what, value in (("start", self.dhcp_range.start), ("end", self.dhcp_range.end)):
                self._check_in_subnet(value, f"DHCP range {what}")
        for host in self.hosts:
            self._check_in_subnet(host.ip, f"DHCP host {host.mac} ip")
            if host.ip == self.address:
                raise NetworkXmlError(f"DHCP host {host.mac} has the gateway's address {host.ip}")
        _unique((h.mac for h in self.hosts), "DHCP host mac")
        _unique((h.ip for h in self.hosts), "DHCP host ip")
        _unique((h.name for h in self.hosts if h.name is not None), "DHCP host name")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(f"{self.address}/{self.prefix}").network

    def _reserved(self) -> set[ipaddress.IPv4Address]:
        network = self.network
        return {network.network_address, network.broadcast_address} if self.prefix <= 30 else set()

    def _check_in_subnet(self, value: str, what: str) -> None:
        address = ipaddress.IPv4Address(value)
        if address not in self.network:
            raise NetworkXmlError(f"{what} {value} is not in the network {self.network}")
        if address in self._reserved():
            raise NetworkXmlError(f"{what} {value} is the network or broadcast address of {self.network}")

    def to_xml(self) -> ET.Element:
        el = _xml.new("ip", {"address": self.address, "prefix": self.prefix})
        if self.dhcp_range is not None or self.hosts:
            dhcp = _xml.sub(el, "dhcp")
            if self.dhcp_range is not None:
                dhcp.append(self.dhcp_range.to_xml())
            for host in self.hosts:
                dhcp.append(host.to_xml())
        return el

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "ip")
        address = _xml.attr(el, "address")
        prefix, netmask = el.get("prefix"), el.get("netmask")
        if prefix is not None:
            length = _xml.integer(prefix, "IPv4 prefix")
        elif netmask is not None:
            try:
                length = ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
            except ValueError:
                raise NetworkXmlError(f"IPv4 netmask {netmask!r} is not a netmask") from None
        else:
            raise NetworkXmlError(f"<ip address='{address}'> has neither prefix nor netmask")
        ranges = el.findall("dhcp/range")
        if len(ranges) > 1:
            raise NetworkXmlError(f"{len(ranges)} IPv4 DHCP ranges: only one is modelled")
        return cls(
            address=address,
            prefix=length,
            dhcp_range=DhcpRangeConfig.from_xml(ranges[0]) if ranges else None,
            hosts=tuple(DhcpHostConfig.from_xml(h) for h in el.findall("dhcp/host")),
        )


@dataclass(frozen=True)
class Ipv6Config:
    """``<ip family='ipv6' address=… prefix=…/>``: the bridge's IPv6 address; libvirt's dnsmasq sends
    router advertisements for the prefix (SLAAC). It is routed, not NATed (no ``<nat ipv6='yes'/>``)."""

    address: str
    prefix: int

    def __post_init__(self) -> None:
        address = _ip(self.address, "IPv6 address")
        if address.version != 6:
            raise NetworkXmlError(f"IPv6 address {self.address!r} is an IPv4 address")
        if not 1 <= self.prefix <= 128:
            raise NetworkXmlError(f"IPv6 prefix must be 1-128, got {self.prefix}")

    def to_xml(self) -> ET.Element:
        return _xml.new("ip", {"family": "ipv6", "address": self.address, "prefix": self.prefix})

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "ip")
        return cls(address=_xml.attr(el, "address"), prefix=_xml.integer(_xml.attr(el, "prefix"), "IPv6 prefix"))


def _is_ipv6(el: ET.Element) -> bool:
    family = el.get("family")
    if family is not None:
        return _xml.pick(family, ("ipv4", "ipv6"), "ip family") == "ipv6"
    return ":" in (el.get("address") or "")


# --- DNS -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DnsConfig:
    """What dnsmasq does for DNS: ``<dns><forwarder addr=…/></dns>`` (the upstream servers; none: the
    host's resolvers) and ``<domain name=… localOnly=…/>`` (the domain guests' names are registered
    in; ``local_only``: queries for it are never forwarded upstream). Not empty: None means defaults.

    :meth:`to_xml` gives the ``<dns>`` element (None without forwarders), :meth:`domain_xml` the
    ``<domain>`` (None without a domain); both are children of ``<network>``.
    """

    forwarders: tuple[str, ...] = ()
    domain: str | None = None
    local_only: bool = False

    def __post_init__(self) -> None:
        if not self.forwarders and self.domain is None:
            raise NetworkXmlError("dns needs forwarders or a domain (use None for dnsmasq's defaults)")
        for forwarder in self.forwarders:
            _ip(forwarder, "DNS forwarder")
        _unique(self.forwarders, "DNS forwarder")
        if self.domain is not None and not _DNS_NAME.match(self.domain):
            raise NetworkXmlError(f"DNS domain {self.domain!r} is not a domain name (A-Z a-z 0-9 . -)")
        if self.local_only and self.domain is None:
            raise NetworkXmlError("DNS local_only needs a domain")

    def to_xml(self) -> ET.Element | None:
        if not self.forwarders:
            return None
        el = _xml.new("dns")
        for forwarder in self.forwarders:
            _xml.sub(el, "forwarder", {"addr": forwarder})
        return el

    def domain_xml(self) -> ET.Element | None:
        if self.domain is None:
            return None
        return _xml.new("domain", {"name": self.domain, "localOnly": "yes" if self.local_only else None})

    @classmethod
    def from_xml(cls, dns: ET.Element | None, domain: ET.Element | None) -> Self | None:
        """From the network's ``<dns>`` and ``<domain>`` (either may be missing); None when neither
        says anything we model."""
        forwarders: list[str] = []
        if dns is not None:
            _xml.expect_tag(dns, "dns")
            for forwarder in dns.findall("forwarder"):
                if forwarder.get("domain") is not None:
                    raise NetworkXmlError("a DNS forwarder for one domain is not modelled")
                forwarders.append(_xml.attr(forwarder, "addr"))
        if domain is not None:
            _xml.expect_tag(domain, "domain")
        if not forwarders and domain is None:
            return None
        return cls(
            forwarders=tuple(forwarders),
            domain=None if domain is None else _xml.attr(domain, "name"),
            local_only=False if domain is None else _yes_no(domain.get("localOnly"), "domain localOnly"),
        )


@dataclass(frozen=True)
class DnsTxtConfig:
    """``<txt name=… value=…/>`` in ``<dns>``: a TXT record dnsmasq serves. Its :meth:`to_string` is
    what ``virNetworkUpdate`` takes for the ``DNS_TXT`` section (add and delete; libvirt cannot
    modify one in place)."""

    name: str
    value: str

    def __post_init__(self) -> None:
        if not _TXT_NAME.match(self.name):
            raise NetworkXmlError(f"DNS TXT record name {self.name!r} is not a DNS name (letters, digits, _ . -)")
        if not self.value or len(self.value) > 255:
            raise NetworkXmlError(f"DNS TXT record {self.name} needs a value of 1-255 characters")
        _xml.safe(self.value, f"DNS TXT record {self.name} value")

    def to_xml(self) -> ET.Element:
        return _xml.new("txt", {"name": self.name, "value": self.value})

    def to_string(self) -> str:
        """The ``<txt/>`` element on one line (for ``virNetworkUpdate``)."""
        return ET.tostring(self.to_xml(), encoding="unicode")

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "txt")
        return cls(name=_xml.attr(el, "name"), value=_xml.attr(el, "value"))


# --- overlay -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverlayConfig:
    """``<vdcnet:overlay vni=… port=… local=… device=… underlay=…/>`` in the network's ``<metadata>``:
    the VXLAN device the network hook makes on the host and enslaves to the network's bridge.

    ``local`` is this host's underlay address (the VXLAN source); ``underlay`` the host interface to
    send from (None: wherever the route to each peer goes); ``device`` the VXLAN device's name.
    """

    vni: int
    local: str
    device: str
    port: int = 4789
    underlay: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.vni <= VNI_MAX:
            raise NetworkXmlError(f"VXLAN VNI must be 1-{VNI_MAX}, got {self.vni}")
        if not 1 <= self.port <= 65535:
            raise NetworkXmlError(f"VXLAN port must be 1-65535, got {self.port}")
        _ipv4(self.local, "overlay local address")
        _check_ifname(self.device, "overlay device name")
        if self.underlay is not None:
            _check_ifname(self.underlay, "overlay underlay interface")

    def to_xml(self) -> ET.Element:
        return _xml.new(
            OVERLAY_TAG,
            {"vni": self.vni, "port": self.port, "local": self.local, "device": self.device, "underlay": self.underlay},
        )

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, OVERLAY_TAG)
        return cls(
            vni=_xml.integer(_xml.attr(el, "vni"), "overlay vni"),
            port=_xml.integer(_xml.attr(el, "port"), "overlay port"),
            local=_xml.attr(el, "local"),
            device=_xml.attr(el, "device"),
            underlay=el.get("underlay"),
        )


# --- the network ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkConfig:
    """``<network>``: a whole libvirt virtual network definition.

    ``bridge`` is the bridge libvirt creates for a nat or isolated network (given, so that libvirt
    does not pick a ``virbrN`` of its own), or the existing host bridge of a bridge network. What
    each ``forward`` mode takes:

    ========================  ===========  ===========  ==============================
    field                     nat          none         bridge
    ========================  ===========  ===========  ==============================
    ``ipv4`` / ``ipv6``       one needed   optional     refused
    ``dns``, ``mtu``          optional     optional     refused
    ``bandwidth``             optional     optional     optional
    ``openvswitch``           refused      refused      optional
    ``vlan``                  refused      refused      only with ``openvswitch``
    ========================  ===========  ===========  ==============================

    ``vlan`` (a single access tag, 0-4095) is honoured by libvirt only for Open vSwitch bridges (and
    for SR-IOV hostdev/passthrough networks, not modelled): on a Linux bridge, nat or isolated network
    libvirt would refuse it or leave it without effect, so it is refused here.
    """

    name: str
    bridge: str
    forward: ForwardMode = "nat"
    uuid: str | None = None
    mtu: int | None = None
    ipv4: Ipv4Config | None = None
    ipv6: Ipv6Config | None = None
    dns: DnsConfig | None = None
    bandwidth: BandwidthConfig | None = None
    openvswitch: bool = False
    vlan: int | None = None
    dns_txt: tuple[DnsTxtConfig, ...] = ()
    overlay: OverlayConfig | None = None
    stp: bool | None = field(default=None, compare=False)
    """Spanning tree on the bridge libvirt makes (None: libvirt's default, on). Off, a guest's new port
    forwards at once, so the announcements QEMU sends after a live migration are not dropped in STP's
    listening/learning delay. Not compared: a running network is not restarted (its guests losing their
    link) for this alone; it applies when the network is next defined afresh."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "\n" in self.name:
            raise NetworkXmlError(f"network name {self.name!r} must be non-empty and contain no '/' or newline")
        _xml.check_uuid(self.uuid, "network uuid")
        if self.forward not in _FORWARD_MODES:
            raise NetworkXmlError(f"forward mode {self.forward!r} is not one of {', '.join(_FORWARD_MODES)}")
        _check_ifname(self.bridge, "bridge name")
        if self.mtu is not None and not MTU_MIN <= self.mtu <= MTU_MAX:
            raise NetworkXmlError(f"mtu must be {MTU_MIN}-{MTU_MAX}, got {self.mtu}")
        if self.vlan is not None and not 0 <= self.vlan <= VLAN_TAG_MAX:
            raise NetworkXmlError(f"vlan tag must be 0-{VLAN_TAG_MAX}, got {self.vlan}")
        if self.forward in _ROUTED_MODES:
            what = "a nat" if self.forward == "nat" else "an isolated"
            if self.openvswitch:
                raise NetworkXmlError(f"{what} network is a bridge libvirt makes: it cannot be openvswitch")
            if self.vlan is not None:
                raise NetworkXmlError(
                    f"{what} network cannot carry a vlan tag (libvirt honours vlan only on openvswitch bridges)"
                )
            if self.forward == "nat" and self.ipv4 is None and self.ipv6 is None:
                raise NetworkXmlError("a nat network needs an IPv4 or IPv6 address")
        else:
            given = [
                field
                for field, value in (
                    ("ipv4", self.ipv4),
                    ("ipv6", self.ipv6),
                    ("dns", self.dns),
                    ("mtu", self.mtu),
                    ("dns_txt", self.dns_txt or None),
                    ("overlay", self.overlay),
                )
                if value is not None
            ]
            if given:
                raise NetworkXmlError(
                    f"a bridge network does not take {', '.join(given)}: libvirt only plugs guests into the "
                    "existing bridge (addresses, DHCP, DNS and MTU are the bridge's own)"
                )
            if self.vlan is not None and not self.openvswitch:
                raise NetworkXmlError(
                    "a vlan tag needs an openvswitch bridge (libvirt refuses vlan on a Linux bridge network)"
                )

        _unique((txt.name for txt in self.dns_txt), "DNS TXT record name")

    @property
    def dhcp_hosts(self) -> tuple[DhcpHostConfig, ...]:
        """The static DHCP hosts (none without IPv4)."""
        return () if self.ipv4 is None else self.ipv4.hosts

    def to_xml(self) -> ET.Element:
        """The elements in the order libvirt writes them (``virNetworkDefFormatBuf``)."""
        root = _xml.new("network")
        _xml.sub(root, "name", text=self.name)
        if self.uuid is not None:
            _xml.sub(root, "uuid", text=self.uuid)
        if self.overlay is not None:
            _xml.sub(root, "metadata").append(self.overlay.to_xml())
        if self.forward != "none":
            _xml.sub(root, "forward", {"mode": self.forward})
        bridge: dict[str, str | int | None] = {"name": self.bridge}
        if self.stp is not None and self.forward in _ROUTED_MODES:
            bridge.update(stp="on" if self.stp else "off", delay="0")
        _xml.sub(root, "bridge", bridge)
        if self.mtu is not None:
            _xml.sub(root, "mtu", {"size": self.mtu})
        dns = None
        if self.dns is not None:
            for el in (self.dns.domain_xml(), self.dns.to_xml()):
                if el is not None:
                    root.append(el)
            dns = root.find("dns")
        if self.dns_txt:
            if dns is None:
                dns = _xml.sub(root, "dns")
            for txt in self.dns_txt:
                dns.append(txt.to_xml())
        if self.vlan is not None:
            _xml.sub(_xml.sub(root, "vlan"), "tag", {"id": self.vlan})
        if self.bandwidth is not None:
            root.append(self.bandwidth.to_xml())
        if self.ipv4 is not None:
            root.append(self.ipv4.to_xml())
        if self.ipv6 is not None:
            root.append(self.ipv6.to_xml())
        if self.openvswitch:
            _xml.sub(root, "virtualport", {"type": "openvswitch"})
        return root

    def to_string(self) -> str:
        """The network XML, indented two spaces, without a trailing newline."""
        return _xml.to_string(self.to_xml())

    @classmethod
    def from_xml(cls, el: ET.Element) -> Self:
        _xml.expect_tag(el, "network")
        forward = el.find("forward")
        mode: ForwardMode = "none"
        if forward is not None:
            # <forward/> without a mode is nat.
            mode = _xml.pick(forward.get("mode", "nat"), _FORWARD_ELEMENT_MODES, "forward mode")
        bridge = _xml.child(el, "bridge")
        mtu = el.find("mtu")
        ipv4s = [ip for ip in el.findall("ip") if not _is_ipv6(ip)]
        ipv6s = [ip for ip in el.findall("ip") if _is_ipv6(ip)]
        for family, found in (("IPv4", ipv4s), ("IPv6", ipv6s)):
            if len(found) > 1:
                raise NetworkXmlError(f"{len(found)} {family} addresses: only one is modelled")
        bandwidth = el.find("bandwidth")
        vlan = el.find("vlan")
        tags = [] if vlan is None else vlan.findall("tag")
        if vlan is not None and (len(tags) != 1 or vlan.get("trunk") == "yes"):
            raise NetworkXmlError("a vlan trunk is not modelled (only one access tag)")
        virtualport = el.find("virtualport")
        if virtualport is not None:
            _xml.pick(virtualport.get("type"), ("openvswitch",), "virtualport type")
        uuid = _xml.text(el.find("uuid"))
        overlay = el.find(f"metadata/{OVERLAY_TAG}")
        return cls(
            name=_xml.text(_xml.child(el, "name")) or "",
            bridge=_xml.attr(bridge, "name"),
            forward=mode,
            uuid=None if uuid is None else uuid.strip(),
            mtu=None if mtu is None else _xml.integer(mtu.get("size"), "mtu size"),
            ipv4=Ipv4Config.from_xml(ipv4s[0]) if ipv4s else None,
            ipv6=Ipv6Config.from_xml(ipv6s[0]) if ipv6s else None,
            dns=DnsConfig.from_xml(el.find("dns"), el.find("domain")),
            bandwidth=None if bandwidth is None else _xml.read(BandwidthConfig.from_xml, bandwidth),
            openvswitch=virtualport is not None,
            vlan=_xml.integer(_xml.attr(tags[0], "id"), "vlan tag id") if tags else None,
            dns_txt=tuple(DnsTxtConfig.from_xml(txt) for txt in el.findall("dns/txt")),
            overlay=None if overlay is None else OverlayConfig.from_xml(overlay),
            stp={"on": True, "off": False}.get(bridge.get("stp") or ""),
        )

    @classmethod
    def from_string(cls, text: str) -> Self:
        return cls.from_xml(_xml.parse(text))


__all__ = [
    "MTU_MAX",
    "MTU_MIN",
    "OVERLAY_NS",
    "VLAN_TAG_MAX",
    "VNI_MAX",
    "DhcpHostConfig",
    "DhcpRangeConfig",
    "DnsConfig",
    "DnsTxtConfig",
    "ForwardMode",
    "Ipv4Config",
    "Ipv6Config",
    "NetworkConfig",
    "NetworkXmlError",
    "OverlayConfig",
]
