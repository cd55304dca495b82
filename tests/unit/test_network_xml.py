"""libvirt network XML: golden files, libvirt's RNG schema, the test driver, round trips.

As in ``test_storage_xml.py``, the golden configs are the fixtures of every check: each is rendered
and compared with its file under ``golden/network/`` (``VDC_UPDATE_GOLDEN=1`` rewrites them),
validated with ``virt-xml-validate FILE network``, defined and started in libvirt's test driver and
read back, and a coverage test fails when a dataclass field is never given a non-default value by
some golden config.

The test driver (``test:///default``) runs the same network XML parser as the QEMU host's network
driver, but not its ``networkValidate`` (which refuses, for instance, a ``<vlan>`` on a Linux bridge
network): those refusals are checked on the dataclasses here, and against a real libvirtd in
``tests/e2e/test_network_rig.py``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import typing
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdc.libvirt.network_xml import (
    DhcpHostConfig,
    DhcpRangeConfig,
    DnsConfig,
    DnsTxtConfig,
    ForwardMode,
    Ipv4Config,
    Ipv6Config,
    NetworkConfig,
    NetworkXmlError,
    OverlayConfig,
)
from vdc.libvirt.xml_common import BandwidthConfig, BandwidthLimitConfig
from xmlconfigs import check_golden, config_classes, stale_golden_files, unexercised_fields, virt_xml_validate

GOLDEN_DIR = Path(__file__).parent / "golden" / "network"

WEB_0 = DhcpHostConfig(mac="52:54:00:6b:3c:01", ip="10.30.0.10", name="web-0")
WEB_1 = DhcpHostConfig(mac="52:54:00:6b:3c:02", ip="10.30.0.11", name="web-1")
DB_0 = DhcpHostConfig(mac="52:54:00:6b:3c:03", ip="10.30.0.20")

GOLDEN: dict[str, NetworkConfig] = {
    # The usual switch: NAT to the host's uplink, a /24, dnsmasq handing out part of it.
    "nat": NetworkConfig(
        name="vdc-frontend",
        bridge="vdcbr-2f9c41d0",
        uuid="6c0f3b8e-1d2a-4f5b-9c7d-8e9f0a1b2c3d",
        ipv4=Ipv4Config(address="10.10.0.1", prefix=24, dhcp_range=DhcpRangeConfig("10.10.0.100", "10.10.0.254")),
    ),
    # No forwarding: guests reach each other and the host only; no DHCP (static addressing).
    "isolated": NetworkConfig(
        name="vdc-backend",
        bridge="vdcbr-8a41c2e7",
        forward="none",
        ipv4=Ipv4Config(address="172.16.5.1", prefix=22),
    ),
    # An existing Linux bridge on the host (the LAN): libvirt only plugs guests into it.
    "bridge": NetworkConfig(name="vdc-lan", bridge="br0", forward="bridge"),
    # An Open vSwitch bridge, with the one access VLAN and limits libvirt honours there.
    "bridge-ovs-vlan": NetworkConfig(
        name="vdc-dmz",
        bridge="ovsbr0",
        forward="bridge",
        openvswitch=True,
        vlan=42,
        bandwidth=BandwidthConfig(inbound=BandwidthLimitConfig(average=125000)),
    ),
    # Addresses pinned by the IPAM: one static lease per NIC, next to the dynamic range.
    "static-hosts": NetworkConfig(
        name="vdc-web",
        bridge="vdcbr-0d3e5f71",
        ipv4=Ipv4Config(
            address="10.30.0.1",
            prefix=24,
            dhcp_range=DhcpRangeConfig("10.30.0.128", "10.30.0.200"),
            hosts=(WEB_0, WEB_1, DB_0),
        ),
    ),
    # One host's side of an overlay (VXLAN) segment: the hook's settings in <metadata>, the other
    # hosts' underlay addresses as TXT records, an MTU that leaves room for the VXLAN header.
    "overlay": NetworkConfig(
        name="vdc-tenant-a",
        bridge="vdcbr-5be0a913",
        forward="none",
        mtu=1450,
        ipv4=Ipv4Config(
            address="10.50.0.1", prefix=24, hosts=(DhcpHostConfig(mac="52:54:00:6b:3c:04", ip="10.50.0.2"),)
        ),
        dns_txt=(DnsTxtConfig("host-b.vdc-peer", "192.168.77.12"), DnsTxtConfig("host-c.vdc-peer", "192.168.77.13")),
        overlay=OverlayConfig(vni=5001, port=4790, local="192.168.77.11", device="vdcvx-5be0a913", underlay="eth1"),
        stp=False,
    ),
    # Dual stack, jumbo frames, DNS forwarders and a local domain, shaped both ways.
    "ipv6-dns-mtu-bandwidth": NetworkConfig(
        name="vdc-storage",
        bridge="vdcbr-c47a9e02",
        mtu=9000,
        ipv4=Ipv4Config(address="10.40.0.1", prefix=16, dhcp_range=DhcpRangeConfig("10.40.1.0", "10.40.1.255")),
        ipv6=Ipv6Config(address="fd00:40::1", prefix=64),
        dns=DnsConfig(forwarders=("192.0.2.53", "2001:db8::53"), domain="storage.vdc.internal", local_only=True),
        bandwidth=BandwidthConfig(
            inbound=BandwidthLimitConfig(average=1_250_000, peak=2_500_000, burst=262_144),
            outbound=BandwidthLimitConfig(average=625_000, peak=1_250_000, burst=131_072),
        ),
    ),
}


def render(config: NetworkConfig) -> str:
    return config.to_string() + "\n"


# --- 1. golden files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_generated_xml_matches_golden_file(name: str) -> None:
    check_golden(GOLDEN_DIR, name, render(GOLDEN[name]))


def test_every_golden_file_has_a_config() -> None:
    stale = stale_golden_files(GOLDEN_DIR, GOLDEN)
    assert not stale, f"golden files without a config in GOLDEN: {stale}"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_file_parses_back_to_its_config(name: str) -> None:
    assert NetworkConfig.from_string((GOLDEN_DIR / f"{name}.xml").read_text()) == GOLDEN[name]


def test_network_xml_has_the_shape_libvirt_documents() -> None:
    nat = ET.fromstring(GOLDEN["nat"].to_string())
    assert nat.find("forward").attrib == {"mode": "nat"}  # type: ignore[union-attr]
    assert nat.find("bridge").attrib == {"name": "vdcbr-2f9c41d0"}  # type: ignore[union-attr]
    assert nat.find("ip").attrib == {"address": "10.10.0.1", "prefix": "24"}  # type: ignore[union-attr]
    assert nat.find("ip/dhcp/range").attrib == {"start": "10.10.0.100", "end": "10.10.0.254"}  # type: ignore[union-attr]
    isolated = ET.fromstring(GOLDEN["isolated"].to_string())
    assert isolated.find("forward") is None
    assert isolated.find("ip/dhcp") is None
    bridge = ET.fromstring(GOLDEN["bridge"].to_string())
    assert [child.tag for child in bridge] == ["name", "forward", "bridge"]
    ovs = ET.fromstring(GOLDEN["bridge-ovs-vlan"].to_string())
    assert ovs.find("virtualport").attrib == {"type": "openvswitch"}  # type: ignore[union-attr]
    assert ovs.find("vlan/tag").attrib == {"id": "42"}  # type: ignore[union-attr]
    full = ET.fromstring(GOLDEN["ipv6-dns-mtu-bandwidth"].to_string())
    assert full.find("domain").attrib == {"name": "storage.vdc.internal", "localOnly": "yes"}  # type: ignore[union-attr]
    assert [f.get("addr") for f in full.findall("dns/forwarder")] == ["192.0.2.53", "2001:db8::53"]
    assert full.findall("ip")[1].attrib == {"family": "ipv6", "address": "fd00:40::1", "prefix": "64"}


def test_a_dhcp_host_on_its_own_is_what_network_update_takes() -> None:
    assert WEB_0.to_string() == '<host mac="52:54:00:6b:3c:01" name="web-0" ip="10.30.0.10" />'
    assert DB_0.to_string() == '<host mac="52:54:00:6b:3c:03" ip="10.30.0.20" />'
    assert DhcpHostConfig.from_string(WEB_0.to_string()) == WEB_0
    assert DhcpHostConfig.from_string("<host mac='52:54:00:6B:3C:01' name='web-0' ip='10.30.0.10'/>") == WEB_0


# --- 2. libvirt's RNG schema ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_generated_xml_validates_against_libvirt_schema(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.xml"
    path.write_text(render(GOLDEN[name]))
    virt_xml_validate(path, "network")


# --- 3. libvirt's test driver ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_driver() -> Iterator[typing.Any]:
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        conn.close()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_libvirt_test_driver_accepts_and_returns_the_network(name: str, test_driver: typing.Any) -> None:
    config = GOLDEN[name]
    net = test_driver.networkDefineXML(config.to_string())
    try:
        defined = NetworkConfig.from_string(net.XMLDesc(0))
        # libvirt gives a network defined without a UUID one of its own.
        assert defined == dataclasses.replace(config, uuid=config.uuid or net.UUIDString())
        net.create()
        try:
            # The running network's XML (stp, delay …) still parses the same.
            assert NetworkConfig.from_string(net.XMLDesc(0)) == defined
            assert net.bridgeName() == config.bridge
        finally:
            net.destroy()
    finally:
        net.undefine()


def test_libvirt_test_driver_adds_and_deletes_a_dhcp_host_by_its_xml(test_driver: typing.Any) -> None:
    libvirt = pytest.importorskip("libvirt")
    config = dataclasses.replace(GOLDEN["static-hosts"], name="vdc-xml-update", bridge="vdcbr-xmlupd")
    net = test_driver.networkDefineXML(config.to_string())
    try:
        net.create()
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        section = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST
        new = DhcpHostConfig(mac="52:54:00:6b:3c:04", ip="10.30.0.21", name="db-1")
        net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, section, -1, new.to_string(), flags)
        net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, section, -1, WEB_0.to_string(), flags)
        assert NetworkConfig.from_string(net.XMLDesc(0)).dhcp_hosts == (WEB_1, DB_0, new)
        net.destroy()
    finally:
        net.undefine()


# --- 4. property: any valid config round-trips ----------------------------------------------------

macs = st.builds(
    lambda first, rest: ":".join([f"{first & 0xFE:02x}", *(f"{b:02x}" for b in rest)]),
    st.integers(0, 255),
    st.lists(st.integers(0, 255), min_size=5, max_size=5),
)
host_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
ipv4_addresses = st.ip_addresses(v=4).map(str)
ip_addresses = st.ip_addresses().map(str)
limits = st.builds(
    BandwidthLimitConfig,
    average=st.integers(1, 2**32 - 1),
    peak=st.none() | st.integers(1, 2**32 - 1),
    burst=st.none() | st.integers(1, 2**32 - 1),
)
bandwidths = st.one_of(
    st.builds(BandwidthConfig, inbound=limits, outbound=st.none() | limits),
    st.builds(BandwidthConfig, outbound=limits),
)
dns_configs = st.one_of(
    st.builds(DnsConfig, forwarders=st.lists(ip_addresses, min_size=1, max_size=3, unique=True).map(tuple)),
    st.builds(
        DnsConfig,
        forwarders=st.lists(ip_addresses, max_size=3, unique=True).map(tuple),
        domain=st.from_regex(r"[A-Za-z0-9.-]{1,40}", fullmatch=True),
        local_only=st.booleans(),
    ),
)


@st.composite
def ipv4_configs(draw: st.DrawFn) -> Ipv4Config:
    prefix = draw(st.integers(8, 30))
    network = ipaddress.IPv4Network((draw(st.integers(0, 2**32 - 1)), prefix), strict=False)
    usable = network.num_addresses - 2  # not the network or broadcast address

    def host(index: int) -> str:
        return str(network.network_address + 1 + index)

    gateway = draw(st.integers(0, usable - 1))
    dhcp_range = None
    if draw(st.booleans()):
        start, end = sorted(draw(st.lists(st.integers(0, usable - 1), min_size=2, max_size=2)))
        dhcp_range = DhcpRangeConfig(host(start), host(end))
    indexes = draw(st.lists(st.integers(0, usable - 1).filter(lambda i: i != gateway), max_size=5, unique=True))
    host_macs = draw(st.lists(macs, min_size=len(indexes), max_size=len(indexes), unique=True))
    names: list[str | None] = []
    for name in draw(st.lists(st.none() | host_names, min_size=len(indexes), max_size=len(indexes))):
        names.append(None if name in names else name)  # host names are unique
    hosts = tuple(
        DhcpHostConfig(mac=mac, ip=host(i), name=name) for i, mac, name in zip(indexes, host_macs, names, strict=True)
    )
    return Ipv4Config(address=host(gateway), prefix=prefix, dhcp_range=dhcp_range, hosts=hosts)


ipv6_configs = st.builds(
    lambda address, prefix: Ipv6Config(address=str(address), prefix=prefix),
    st.ip_addresses(v=6),
    st.integers(1, 128),
)
network_names = st.text(alphabet=st.characters(categories=("L", "M", "N", "P", "S", "Zs")), min_size=1, max_size=20)
bridge_names = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}", fullmatch=True)


@st.composite
def networks(draw: st.DrawFn) -> NetworkConfig:
    forward: ForwardMode = draw(st.sampled_from(typing.get_args(ForwardMode)))
    common: dict[str, typing.Any] = {
        "name": draw(network_names.filter(lambda s: "/" not in s)),
        "bridge": draw(bridge_names),
        "forward": forward,
        "uuid": draw(st.none() | st.uuids().map(str)),
        "bandwidth": draw(st.none() | bandwidths),
    }
    if forward == "bridge":
        openvswitch = draw(st.booleans())
        vlan = draw(st.none() | st.integers(0, 4095)) if openvswitch else None
        return NetworkConfig(**common, openvswitch=openvswitch, vlan=vlan)
    ipv4 = draw(st.none() | ipv4_configs())
    ipv6 = draw(st.none() | ipv6_configs)
    if forward == "nat" and ipv4 is None and ipv6 is None:
        ipv4 = draw(ipv4_configs())
    return NetworkConfig(
        **common,
        mtu=draw(st.none() | st.integers(68, 65535)),
        ipv4=ipv4,
        ipv6=ipv6,
        dns=draw(st.none() | dns_configs),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_any_valid_network_round_trips_through_xml(config: NetworkConfig) -> None:
    assert NetworkConfig.from_string(config.to_string()) == config


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.builds(DhcpHostConfig, mac=macs, ip=ipv4_addresses, name=st.none() | host_names))
def test_any_dhcp_host_round_trips_through_xml(host: DhcpHostConfig) -> None:
    assert DhcpHostConfig.from_string(host.to_string()) == host


# --- 5. every field is exercised by the golden configs --------------------------------------------


def test_every_field_has_a_non_default_value_in_some_golden_config() -> None:
    missing = unexercised_fields((NetworkConfig,), GOLDEN.values())
    assert not missing, f"fields no golden config sets to a non-default value: {missing}"


def test_every_forward_mode_appears_in_some_golden_config() -> None:
    assert {c.forward for c in GOLDEN.values()} == set(typing.get_args(ForwardMode))


def test_coverage_walk_reaches_every_config_class() -> None:
    assert config_classes(NetworkConfig) == {
        NetworkConfig,
        Ipv4Config,
        DhcpRangeConfig,
        DhcpHostConfig,
        Ipv6Config,
        DnsConfig,
        BandwidthConfig,
        BandwidthLimitConfig,
        DnsTxtConfig,
        OverlayConfig,
    }


# --- parsing what libvirt returns, refusals -------------------------------------------------------

# What the QEMU host's network driver (libvirt 9) returns for a running nat network with a guest on it.
QEMU_NETWORK_XML = """<network connections='1'>
  <name>vdc-web</name>
  <uuid>0b7c2f14-3e5d-4a6b-8c9d-0e1f2a3b4c5d</uuid>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='vdcbr-0d3e5f71' stp='on' delay='0'/>
  <mac address='52:54:00:1f:8e:2a'/>
  <ip address='10.30.0.1' prefix='24'>
    <dhcp>
      <range start='10.30.0.128' end='10.30.0.200'/>
      <host mac='52:54:00:6b:3c:01' name='web-0' ip='10.30.0.10'/>
    </dhcp>
  </ip>
</network>
"""


def test_parses_what_the_qemu_driver_returns_for_a_running_network() -> None:
    assert NetworkConfig.from_string(QEMU_NETWORK_XML) == NetworkConfig(
        name="vdc-web",
        bridge="vdcbr-0d3e5f71",
        uuid="0b7c2f14-3e5d-4a6b-8c9d-0e1f2a3b4c5d",
        ipv4=Ipv4Config(
            address="10.30.0.1", prefix=24, dhcp_range=DhcpRangeConfig("10.30.0.128", "10.30.0.200"), hosts=(WEB_0,)
        ),
    )


def test_libvirt_shorthands_are_read_as_what_they_mean() -> None:
    # <forward/> is nat; a netmask is a prefix; DHCP host MACs are compared in lowercase.
    text = """<network><name>n</name><forward/><bridge name='virbr7'/>
      <ip address='192.168.7.1' netmask='255.255.255.0'><dhcp>
        <host mac='52:54:00:AB:CD:EF' ip='192.168.7.9'/></dhcp></ip></network>"""
    assert NetworkConfig.from_string(text) == NetworkConfig(
        name="n",
        bridge="virbr7",
        ipv4=Ipv4Config("192.168.7.1", 24, hosts=(DhcpHostConfig("52:54:00:ab:cd:ef", "192.168.7.9"),)),
    )
    # An empty <bandwidth> and a <domain localOnly='no'> are the defaults.
    text = """<network><name>n</name><bridge name='virbr8'/><domain name='lab' localOnly='no'/>
      <bandwidth/><ip address='192.168.8.1' prefix='24'/></network>"""
    config = NetworkConfig.from_string(text)
    assert config.bandwidth is None
    assert config.dns == DnsConfig(domain="lab")


def test_overlay_settings_and_peers_libvirt_cannot_carry_are_refused() -> None:
    overlay = OverlayConfig(vni=7, local="192.168.77.11", device="vdcvx-1")
    with pytest.raises(NetworkXmlError, match="VNI must be 1-16777215"):
        OverlayConfig(vni=2**24, local="192.168.77.11", device="vdcvx-1")
    with pytest.raises(NetworkXmlError, match="overlay local address"):
        OverlayConfig(vni=7, local="not-an-ip", device="vdcvx-1")
    with pytest.raises(NetworkXmlError, match="DNS TXT record name"):
        DnsTxtConfig("has space", "192.168.77.12")
    with pytest.raises(NetworkXmlError, match="DNS TXT record name"):
        NetworkConfig(
            name="n", bridge="b", forward="none",
            dns_txt=(DnsTxtConfig("a.vdc-peer", "192.168.77.12"), DnsTxtConfig("a.vdc-peer", "192.168.77.13")),
        )  # fmt: skip
    with pytest.raises(NetworkXmlError, match="does not take dns_txt, overlay"):
        NetworkConfig(name="n", bridge="br0", forward="bridge", dns_txt=(DnsTxtConfig("a", "b"),), overlay=overlay)


def test_a_txt_record_on_its_own_is_what_network_update_takes(test_driver: typing.Any) -> None:
    import libvirt

    config = dataclasses.replace(GOLDEN["overlay"], name="vdc-txt-updates")
    net = test_driver.networkDefineXML(dataclasses.replace(config, dns_txt=()).to_string())
    net.create()
    both = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    section = libvirt.VIR_NETWORK_SECTION_DNS_TXT
    for txt in config.dns_txt:
        net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, section, -1, txt.to_string(), both)
    assert NetworkConfig.from_string(net.XMLDesc(0)).dns_txt == config.dns_txt
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, section, -1, config.dns_txt[0].to_string(), both)
    assert NetworkConfig.from_string(net.XMLDesc(0)).dns_txt == config.dns_txt[1:]
    net.destroy()
    net.undefine()


def test_user_input_cannot_inject_xml() -> None:
    evil = "x]]><forward mode='route'><![CDATA[&amp;"  # a network name cannot hold a '/'
    config = dataclasses.replace(GOLDEN["nat"], name=f"a'b\"c<d>&e{evil}")
    text = config.to_string()
    assert [f.get("mode") for f in ET.fromstring(text).iter("forward")] == ["nat"]
    assert NetworkConfig.from_string(text) == config


@pytest.mark.parametrize("bad", ["\x00", "\x1b[31m", "\r", "\ufffe"])
def test_characters_xml_cannot_carry_are_refused(bad: str) -> None:
    with pytest.raises(NetworkXmlError, match="cannot be represented in XML"):
        dataclasses.replace(GOLDEN["nat"], name=f"net{bad}").to_string()


V4 = Ipv4Config("10.0.0.1", 24)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: NetworkConfig(name="", bridge="b", ipv4=V4), "non-empty"),
        (lambda: NetworkConfig(name="a/b", bridge="b", ipv4=V4), "no '/'"),
        (lambda: NetworkConfig(name="n", bridge="b", ipv4=V4, uuid="nope"), "not a UUID"),
        (
            lambda: NetworkConfig(name="n", bridge="b", ipv4=V4, uuid="6C0F3B8E-1D2A-4F5B-9C7D-8E9F0A1B2C3D"),
            "canonical",
        ),
        (lambda: NetworkConfig(name="n", bridge="b", forward="route", ipv4=V4), "not one of"),  # type: ignore[arg-type]
        (lambda: NetworkConfig(name="n", bridge="virbr%d", ipv4=V4), "interface name"),
        (lambda: NetworkConfig(name="n", bridge="a-bridge-name-too-long", ipv4=V4), "interface name"),
        (lambda: NetworkConfig(name="n", bridge="br:0", ipv4=V4), "interface name"),
        (lambda: NetworkConfig(name="n", bridge=""), "interface name"),
        (lambda: NetworkConfig(name="n", bridge="b"), "nat network needs an IPv4 or IPv6 address"),
        (lambda: NetworkConfig(name="n", bridge="b", ipv4=V4, mtu=67), "mtu"),
        (lambda: NetworkConfig(name="n", bridge="b", ipv4=V4, mtu=65536), "mtu"),
        (lambda: NetworkConfig(name="n", bridge="b", ipv4=V4, vlan=42), "cannot carry a vlan"),
        (lambda: NetworkConfig(name="n", bridge="b", forward="none", vlan=42), "cannot carry a vlan"),
        (lambda: NetworkConfig(name="n", bridge="b", ipv4=V4, openvswitch=True), "cannot be openvswitch"),
        (lambda: NetworkConfig(name="n", bridge="br0", forward="bridge", vlan=42), "needs an openvswitch bridge"),
        (lambda: NetworkConfig(name="n", bridge="br0", forward="bridge", openvswitch=True, vlan=4096), "0-4095"),
        (lambda: NetworkConfig(name="n", bridge="br0", forward="bridge", ipv4=V4), "does not take ipv4"),
        (
            lambda: NetworkConfig(name="n", bridge="br0", forward="bridge", ipv6=Ipv6Config("fd00::1", 64)),
            "does not take ipv6",
        ),
        (lambda: NetworkConfig(name="n", bridge="br0", forward="bridge", mtu=9000), "does not take mtu"),
        (
            lambda: NetworkConfig(name="n", bridge="br0", forward="bridge", dns=DnsConfig(domain="x")),
            "does not take dns",
        ),
        (lambda: Ipv4Config("10.0.0.256", 24), "not an IPv4 address"),
        (lambda: Ipv4Config("010.0.0.1", 24), "not an IPv4 address"),
        (lambda: Ipv4Config("10.0.0.1", 33), "0-32"),
        (lambda: Ipv4Config("10.0.0.0", 24), "network or broadcast"),
        (lambda: Ipv4Config("10.0.0.255", 24), "network or broadcast"),
        (lambda: Ipv4Config("10.0.0.1", 24, DhcpRangeConfig("10.0.1.2", "10.0.1.9")), "not in the network"),
        (lambda: Ipv4Config("10.0.0.1", 24, DhcpRangeConfig("10.0.0.0", "10.0.0.9")), "network or broadcast"),
        (lambda: Ipv4Config("10.0.0.1", 24, DhcpRangeConfig("10.0.0.2", "10.0.0.255")), "network or broadcast"),
        (lambda: DhcpRangeConfig("10.0.0.9", "10.0.0.2"), "reversed"),
        (
            lambda: Ipv4Config("10.0.0.1", 24, hosts=(DhcpHostConfig("52:54:00:00:00:01", "10.0.1.5"),)),
            "not in the network",
        ),
        (
            lambda: Ipv4Config("10.0.0.1", 24, hosts=(DhcpHostConfig("52:54:00:00:00:01", "10.0.0.1"),)),
            "gateway",
        ),
        (
            lambda: Ipv4Config(
                "10.0.0.1",
                24,
                hosts=(
                    DhcpHostConfig("52:54:00:00:00:01", "10.0.0.5"),
                    DhcpHostConfig("52:54:00:00:00:01", "10.0.0.6"),
                ),
            ),
            "mac 52:54:00:00:00:01 appears more than once",
        ),
        (
            lambda: Ipv4Config(
                "10.0.0.1",
                24,
                hosts=(
                    DhcpHostConfig("52:54:00:00:00:01", "10.0.0.5"),
                    DhcpHostConfig("52:54:00:00:00:02", "10.0.0.5"),
                ),
            ),
            "ip 10.0.0.5 appears more than once",
        ),
        (
            lambda: Ipv4Config(
                "10.0.0.1",
                24,
                hosts=(
                    DhcpHostConfig("52:54:00:00:00:01", "10.0.0.5", "vm"),
                    DhcpHostConfig("52:54:00:00:00:02", "10.0.0.6", "vm"),
                ),
            ),
            "name vm appears more than once",
        ),
        (lambda: DhcpHostConfig("52:54:00:AB:CD:EF", "10.0.0.5"), "lowercase"),
        (lambda: DhcpHostConfig("01:00:5e:00:00:01", "10.0.0.5"), "unicast"),
        (lambda: DhcpHostConfig("52-54-00-00-00-01", "10.0.0.5"), "aa:bb:cc:dd:ee:ff"),
        (lambda: DhcpHostConfig("52:54:00:00:00:01", "fd00::5"), "not an IPv4 address"),
        (lambda: DhcpHostConfig("52:54:00:00:00:01", "10.0.0.5", "web 0"), "not a host name"),
        (lambda: DhcpHostConfig("52:54:00:00:00:01", "10.0.0.5", "a,b"), "not a host name"),
        (lambda: DhcpHostConfig("52:54:00:00:00:01", "10.0.0.5", "-x"), "not a host name"),
        (lambda: Ipv6Config("10.0.0.1", 64), "IPv4 address"),
        (lambda: Ipv6Config("fd00:0::1", 64), "must be written 'fd00::1'"),
        (lambda: Ipv6Config("FD00::1", 64), "must be written 'fd00::1'"),
        (lambda: Ipv6Config("fd00::1", 129), "1-128"),
        (lambda: DnsConfig(), "forwarders or a domain"),
        (lambda: DnsConfig(forwarders=("dns.example.com",)), "not an IP address"),
        (lambda: DnsConfig(forwarders=("192.0.2.1", "192.0.2.1")), "more than once"),
        (lambda: DnsConfig(domain="under_score"), "not a domain name"),
        (lambda: DnsConfig(forwarders=("192.0.2.1",), local_only=True), "local_only needs a domain"),
    ],
)
def test_configs_libvirt_would_refuse_or_silently_ignore_are_refused(
    build: typing.Callable[[], object], message: str
) -> None:
    with pytest.raises(NetworkXmlError, match=message):
        build()


@pytest.mark.parametrize(
    ("name", "old", "new", "message"),
    [
        ("nat", '<forward mode="nat" />', "<forward mode='route'/>", "forward mode"),
        ("nat", '<forward mode="nat" />', "<forward mode='hostdev'/>", "forward mode"),
        ("nat", '<bridge name="vdcbr-2f9c41d0" />', "<bridge stp='on'/>", "no name attribute"),
        ("nat", '<bridge name="vdcbr-2f9c41d0" />', "", "has no <bridge>"),
        ("nat", 'prefix="24"', "", "neither prefix nor netmask"),
        ("nat", 'prefix="24"', "netmask='255.0.255.0'", "not a netmask"),
        ("nat", 'prefix="24"', "prefix='twenty'", "IPv4 prefix"),
        (
            "nat",
            "</dhcp>",
            "<range start='10.10.0.10' end='10.10.0.20'/></dhcp>",
            "2 IPv4 DHCP ranges",
        ),
        ("nat", "</network>", "<ip address='10.11.0.1' prefix='24'/></network>", "2 IPv4 addresses"),
        ("isolated", 'prefix="22" />', "prefix='22'><dhcp><host name='x' ip='172.16.5.9'/></dhcp></ip>", "no mac"),
        ("isolated", "</network>", "<ip family='ipx' address='1.2.3.4' prefix='8'/></network>", "ip family"),
        (
            "ipv6-dns-mtu-bandwidth",
            "</network>",
            "<ip family='ipv6' address='fd00:41::1' prefix='64'/></network>",
            "2 IPv6 addresses",
        ),
        ("ipv6-dns-mtu-bandwidth", 'prefix="64" />', "/>", "no prefix attribute"),
        ("ipv6-dns-mtu-bandwidth", '<mtu size="9000" />', "<mtu size='big'/>", "mtu size"),
        (
            "ipv6-dns-mtu-bandwidth",
            '<forwarder addr="192.0.2.53" />',
            "<forwarder domain='corp.example' addr='192.0.2.53'/>",
            "forwarder for one domain",
        ),
        ("ipv6-dns-mtu-bandwidth", 'localOnly="yes"', "localOnly='maybe'", "localOnly"),
        ("ipv6-dns-mtu-bandwidth", 'average="625000"', "average='fast'", "outbound average"),
        ("bridge-ovs-vlan", '<tag id="42" />', "<tag id='42'/><tag id='43'/>", "vlan trunk"),
        ("bridge-ovs-vlan", "<vlan>", "<vlan trunk='yes'>", "vlan trunk"),
        ("bridge-ovs-vlan", '<virtualport type="openvswitch" />', "<virtualport type='802.1Qbh'/>", "virtualport"),
        ("bridge-ovs-vlan", '<virtualport type="openvswitch" />', "", "needs an openvswitch bridge"),
    ],
)
def test_values_we_do_not_model_are_reported_with_the_element(name: str, old: str, new: str, message: str) -> None:
    text = render(GOLDEN[name])
    assert old in text
    with pytest.raises(NetworkXmlError, match=message):
        NetworkConfig.from_string(text.replace(old, new))


def test_not_xml_or_another_element_is_a_network_xml_error() -> None:
    with pytest.raises(NetworkXmlError, match="well-formed"):
        NetworkConfig.from_string("<network>")
    with pytest.raises(NetworkXmlError, match="expected <network>"):
        NetworkConfig.from_string("<pool type='dir'><name>p</name></pool>")
    with pytest.raises(NetworkXmlError, match="expected <host>"):
        DhcpHostConfig.from_string("<range start='10.0.0.1' end='10.0.0.2'/>")


def test_stp_is_written_and_read_back_but_a_difference_in_it_alone_restarts_nothing() -> None:
    overlay = GOLDEN["overlay"]
    assert 'stp="off" delay="0"' in overlay.to_string()
    assert NetworkConfig.from_string(overlay.to_string()).stp is False
    running = overlay.to_string().replace('stp="off"', 'stp="on"')
    assert NetworkConfig.from_string(running).stp is True
    assert NetworkConfig.from_string(running) == overlay  # not compared (see NetworkConfig.stp)
    assert "stp" not in GOLDEN["bridge"].to_string()  # libvirt's own bridge only
