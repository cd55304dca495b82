"""Virtual network operations against libvirt's in-process test driver (``test:///default``).

The test driver keeps networks in memory (it makes no bridges and runs no dnsmasq) and implements
``virNetworkUpdate``, so define/start/redefine and the static DHCP host updates are all covered here.
It has no separate persistent definition to read (``VIR_NETWORK_XML_INACTIVE`` is refused), so a
running network whose live and persistent hosts differ is covered against a real libvirtd by
``tests/e2e/test_network_rig.py``, with the bridge and dnsmasq checked on the host.

``test:///default`` is shared by everything in this process: every network gets a unique name and bridge.
"""

from __future__ import annotations

import dataclasses
import typing
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from vdc.libvirt import networks
from vdc.libvirt.errors import ConfigRejected, NotFound
from vdc.libvirt.network_xml import (
    DhcpHostConfig,
    DhcpRangeConfig,
    DnsConfig,
    DnsTxtConfig,
    Ipv4Config,
    NetworkConfig,
    NetworkXmlError,
)
from vdc.libvirt.networks import NetworkFailure
from vdc.libvirt.xml_common import BandwidthConfig, BandwidthLimitConfig

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

A = DhcpHostConfig(mac="52:54:00:00:0a:01", ip="10.77.0.11", name="vm-a")
B = DhcpHostConfig(mac="52:54:00:00:0a:02", ip="10.77.0.12", name="vm-b")
C = DhcpHostConfig(mac="52:54:00:00:0a:03", ip="10.77.0.13")


@pytest.fixture(scope="module")
def conn() -> Iterator[typing.Any]:
    c = libvirt.open("test:///default")
    try:
        yield c
    finally:
        c.close()


def unique() -> str:
    return uuid.uuid4().hex[:8]


def nat_network(hosts: tuple[DhcpHostConfig, ...] = ()) -> NetworkConfig:
    tag = unique()
    return NetworkConfig(
        name=f"vdc-t-{tag}",
        bridge=f"vdcbr-{tag}",
        ipv4=Ipv4Config("10.77.0.1", 24, DhcpRangeConfig("10.77.0.100", "10.77.0.200"), hosts),
    )


def cleanup(conn: typing.Any, name: str) -> None:
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return
    if net.isActive():
        net.destroy()
    if net.isPersistent():
        net.undefine()


@pytest.fixture
def network(conn: typing.Any) -> Iterator[NetworkConfig]:
    """A running nat network without static hosts, removed afterwards."""
    config = nat_network()
    networks.ensure_network(conn, config)
    try:
        yield config
    finally:
        cleanup(conn, config.name)


def with_hosts(config: NetworkConfig, *hosts: DhcpHostConfig) -> NetworkConfig:
    assert config.ipv4 is not None
    return dataclasses.replace(config, ipv4=dataclasses.replace(config.ipv4, hosts=hosts))


def xml_hosts(conn: typing.Any, name: str) -> tuple[DhcpHostConfig, ...]:
    return NetworkConfig.from_string(conn.networkLookupByName(name).XMLDesc(0)).dhcp_hosts


class Recorder:
    """A connection whose networks record the methods called on them (``update`` with its command)."""

    def __init__(self, conn: typing.Any) -> None:
        self._conn = conn
        self.calls: list[str] = []

    def _wrap(self, net: typing.Any) -> typing.Any:
        recorder = self

        class Network:
            def __getattr__(self, name: str) -> typing.Any:
                attr = getattr(net, name)
                if not callable(attr):
                    return attr

                def call(*args: typing.Any) -> typing.Any:
                    if name == "update":
                        command = "add" if args[0] == libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST else "delete"
                        if args[1] == libvirt.VIR_NETWORK_SECTION_DNS_TXT:
                            recorder.calls.append(
                                f"update:{command}:txt:{DnsTxtConfig.from_xml(ET.fromstring(args[3])).name}"
                            )
                        else:
                            recorder.calls.append(f"update:{command}:{DhcpHostConfig.from_string(args[3]).mac}")
                    else:
                        recorder.calls.append(name)
                    return attr(*args)

                return call

        return Network()

    @property
    def changes(self) -> list[str]:
        """The calls that change something."""
        quiet = {"isActive", "isPersistent", "XMLDesc", "autostart", "UUIDString", "name", "bridgeName"}
        return [c for c in self.calls if c not in quiet]

    def networkLookupByName(self, name: str) -> typing.Any:
        return self._wrap(self._conn.networkLookupByName(name))

    def networkDefineXML(self, xml: str) -> typing.Any:
        self.calls.append("defineXML")
        return self._wrap(self._conn.networkDefineXML(xml))

    def __getattr__(self, name: str) -> typing.Any:
        return getattr(self._conn, name)


# --- ensure / observe / remove --------------------------------------------------------------------


def test_ensure_network_defines_starts_and_autostarts_a_missing_network(conn: typing.Any) -> None:
    config = nat_network(hosts=(A,))
    assert networks.observe_network(conn, config.name) is None
    try:
        recorder = Recorder(conn)
        obs = networks.ensure_network(recorder, config)
        assert recorder.changes == ["defineXML", "create", "setAutostart"]
        assert obs == networks.NetworkObservation(
            name=config.name,
            active=True,
            autostart=True,
            bridge=config.bridge,
            dhcp_hosts=(A,),
            uuid=obs.uuid,
            persistent=True,
            config=dataclasses.replace(config, uuid=obs.uuid),
        )
        assert networks.observe_network(conn, config.name) == obs
    finally:
        cleanup(conn, config.name)


def test_ensure_network_leaves_a_network_that_is_as_wanted_alone(conn: typing.Any, network: NetworkConfig) -> None:
    first = networks.observe_network(conn, network.name)
    recorder = Recorder(conn)
    assert networks.ensure_network(recorder, network) == first
    assert recorder.changes == []


def test_ensure_network_keeps_a_given_uuid(conn: typing.Any) -> None:
    config = dataclasses.replace(nat_network(), uuid=str(uuid.uuid4()))
    try:
        obs = networks.ensure_network(conn, config)
        assert obs.uuid == config.uuid
        assert obs.config == config
        assert networks.ensure_network(conn, config) == obs
    finally:
        cleanup(conn, config.name)


def test_ensure_network_refuses_another_uuid_without_stopping_the_network(
    conn: typing.Any, network: NetworkConfig
) -> None:
    before = networks.observe_network(conn, network.name)
    recorder = Recorder(conn)
    with pytest.raises(ConfigRejected, match="exists with uuid"):
        networks.ensure_network(recorder, dataclasses.replace(network, uuid=str(uuid.uuid4())))
    assert recorder.changes == []
    assert networks.observe_network(conn, network.name) == before


def test_ensure_network_restarts_a_network_stopped_behind_its_back(conn: typing.Any, network: NetworkConfig) -> None:
    net = conn.networkLookupByName(network.name)
    net.destroy()
    net.setAutostart(0)
    assert networks.observe_network(conn, network.name).active is False  # type: ignore[union-attr]
    recorder = Recorder(conn)
    obs = networks.ensure_network(recorder, network)
    assert recorder.changes == ["create", "setAutostart"]
    assert obs.active and obs.autostart


def test_ensure_network_redefines_and_restarts_a_running_network_whose_definition_differs(
    conn: typing.Any, network: NetworkConfig
) -> None:
    before = networks.observe_network(conn, network.name)
    assert before is not None
    changed = dataclasses.replace(network, mtu=9000, dns=DnsConfig(domain="lab.vdc"))
    recorder = Recorder(conn)
    obs = networks.ensure_network(recorder, changed)
    # Stopped first, so that it starts with the new definition.
    assert recorder.changes == ["destroy", "defineXML", "create"]
    assert obs.active and obs.uuid == before.uuid  # redefined in place, not replaced
    assert obs.config == dataclasses.replace(changed, uuid=before.uuid)
    assert NetworkConfig.from_string(conn.networkLookupByName(network.name).XMLDesc(0)).mtu == 9000


def test_ensure_network_changes_only_the_hosts_of_a_running_network_without_a_restart(
    conn: typing.Any, network: NetworkConfig
) -> None:
    recorder = Recorder(conn)
    obs = networks.ensure_network(recorder, with_hosts(network, A, B))
    assert "destroy" not in recorder.changes and "create" not in recorder.changes
    assert recorder.changes == ["defineXML", f"update:add:{A.mac}", f"update:add:{B.mac}"]
    assert obs.dhcp_hosts == (A, B)
    assert xml_hosts(conn, network.name) == (A, B)
    assert obs.config is not None and obs.config.dhcp_hosts == (A, B)


def test_ensure_network_redefines_a_stopped_network_and_starts_it_once(
    conn: typing.Any, network: NetworkConfig
) -> None:
    conn.networkLookupByName(network.name).destroy()
    changed = dataclasses.replace(network, mtu=1400)
    recorder = Recorder(conn)
    obs = networks.ensure_network(recorder, changed)
    assert recorder.changes == ["defineXML", "create"]
    assert obs.active and obs.config is not None and obs.config.mtu == 1400


def test_ensure_network_makes_a_transient_network_persistent(conn: typing.Any) -> None:
    config = nat_network()
    conn.networkCreateXML(config.to_string())
    try:
        assert networks.observe_network(conn, config.name).persistent is False  # type: ignore[union-attr]
        obs = networks.ensure_network(conn, config)
        assert obs.persistent and obs.autostart and obs.active
        assert obs.config == dataclasses.replace(config, uuid=obs.uuid)
    finally:
        cleanup(conn, config.name)


def test_ensure_network_replaces_a_transient_network_that_differs(conn: typing.Any) -> None:
    config = nat_network()
    transient = conn.networkCreateXML(dataclasses.replace(config, mtu=1280).to_string())
    try:
        obs = networks.ensure_network(conn, config)
        assert obs.persistent and obs.active and obs.uuid == transient.UUIDString()
        assert obs.config == dataclasses.replace(config, uuid=obs.uuid)
    finally:
        cleanup(conn, config.name)


@pytest.mark.parametrize(
    "config",
    [
        NetworkConfig(name="isolated", bridge="b", forward="none", ipv4=Ipv4Config("10.78.0.1", 24)),
        NetworkConfig(name="isolated-no-ip", bridge="b", forward="none"),
        NetworkConfig(
            name="bridge",
            bridge="br0",
            forward="bridge",
            bandwidth=BandwidthConfig(outbound=BandwidthLimitConfig(1000)),
        ),
        NetworkConfig(name="ovs", bridge="ovsbr0", forward="bridge", openvswitch=True, vlan=7),
    ],
    ids=lambda c: c.name,
)
def test_ensure_network_realises_every_forward_mode_in_the_test_driver(conn: typing.Any, config: NetworkConfig) -> None:
    tag = unique()
    config = dataclasses.replace(
        config,
        name=f"vdc-t-{config.name}-{tag}",
        bridge=config.bridge if config.forward == "bridge" else f"vdcbr-{tag}",
    )
    try:
        obs = networks.ensure_network(conn, config)
        assert obs.active and obs.bridge == config.bridge
        assert obs.config == dataclasses.replace(config, uuid=obs.uuid)
        assert networks.ensure_network(conn, config) == obs
    finally:
        cleanup(conn, config.name)


def test_a_network_we_cannot_read_is_observed_without_a_config_and_redefined(conn: typing.Any) -> None:
    tag = unique()
    name = f"vdc-t-route-{tag}"
    conn.networkDefineXML(
        f"<network><name>{name}</name><forward mode='route'/><bridge name='vdcbr-{tag}'/>"
        "<ip address='10.79.0.1' prefix='24'/></network>"
    )
    try:
        obs = networks.observe_network(conn, name)
        assert obs is not None and obs.config is None and obs.bridge == f"vdcbr-{tag}" and obs.dhcp_hosts == ()
        config = NetworkConfig(name=name, bridge=f"vdcbr-{tag}", ipv4=Ipv4Config("10.79.0.1", 24))
        assert networks.ensure_network(conn, config).config == dataclasses.replace(config, uuid=obs.uuid)
    finally:
        cleanup(conn, name)


def test_remove_network_stops_and_undefines_and_says_when_it_was_gone(conn: typing.Any, network: NetworkConfig) -> None:
    recorder = Recorder(conn)
    assert networks.remove_network(recorder, network.name) is True
    assert recorder.changes == ["destroy", "undefine"]
    assert networks.observe_network(conn, network.name) is None
    assert networks.remove_network(conn, network.name) is False


def test_remove_network_of_a_stopped_or_transient_network(conn: typing.Any, network: NetworkConfig) -> None:
    conn.networkLookupByName(network.name).destroy()
    assert networks.remove_network(conn, network.name) is True
    assert networks.observe_network(conn, network.name) is None
    transient = nat_network()
    conn.networkCreateXML(transient.to_string())
    assert networks.remove_network(conn, transient.name) is True
    assert networks.observe_network(conn, transient.name) is None


def test_observe_network_of_a_missing_network_is_none(conn: typing.Any) -> None:
    assert networks.observe_network(conn, f"vdc-missing-{unique()}") is None


# --- static DHCP hosts ----------------------------------------------------------------------------


def test_set_dhcp_hosts_sends_only_the_differences(conn: typing.Any, network: NetworkConfig) -> None:
    recorder = Recorder(conn)
    obs = networks.set_dhcp_hosts(recorder, network.name, [A, B])
    assert recorder.changes == [f"update:add:{A.mac}", f"update:add:{B.mac}"]
    assert obs.dhcp_hosts == (A, B) and obs.active
    assert xml_hosts(conn, network.name) == (A, B)

    # B renamed and C added: B's old entry goes first (libvirt refuses a second entry for its MAC).
    b_renamed = dataclasses.replace(B, name="vm-b-renamed")
    recorder = Recorder(conn)
    obs = networks.set_dhcp_hosts(recorder, network.name, [A, b_renamed, C])
    assert recorder.changes == [f"update:delete:{B.mac}", f"update:add:{B.mac}", f"update:add:{C.mac}"]
    assert obs.dhcp_hosts == (A, b_renamed, C)

    # An address moving from one MAC to another.
    moved = DhcpHostConfig(mac="52:54:00:00:0a:04", ip=A.ip)
    obs = networks.set_dhcp_hosts(conn, network.name, [moved, C])
    assert obs.dhcp_hosts == (C, moved)

    recorder = Recorder(conn)
    assert networks.set_dhcp_hosts(recorder, network.name, [moved, C]).dhcp_hosts == (C, moved)
    assert recorder.changes == []

    assert networks.set_dhcp_hosts(conn, network.name, []).dhcp_hosts == ()
    assert xml_hosts(conn, network.name) == ()
    # Never a restart, and the definition otherwise unchanged.
    final = networks.observe_network(conn, network.name)
    assert final is not None and final.active
    assert final.config == dataclasses.replace(network, uuid=final.uuid)


PEER_B = DnsTxtConfig("host-b.vdc-peer", "192.168.77.12")
PEER_C = DnsTxtConfig("host-c.vdc-peer", "192.168.77.13")


def test_set_dns_txt_sends_only_the_differences_without_a_restart(conn: typing.Any, network: NetworkConfig) -> None:
    recorder = Recorder(conn)
    obs = networks.set_dns_txt(recorder, network.name, [PEER_B, PEER_C])
    assert recorder.changes == ["update:add:txt:host-b.vdc-peer", "update:add:txt:host-c.vdc-peer"]
    assert obs.config is not None and obs.config.dns_txt == (PEER_B, PEER_C)

    # A peer whose address changed is deleted and added again (libvirt cannot modify a TXT record).
    moved = dataclasses.replace(PEER_B, value="192.168.77.22")
    recorder = Recorder(conn)
    networks.set_dns_txt(recorder, network.name, [moved, PEER_C])
    assert recorder.changes == ["update:delete:txt:host-b.vdc-peer", "update:add:txt:host-b.vdc-peer"]

    recorder = Recorder(conn)
    networks.set_dns_txt(recorder, network.name, [PEER_C, moved])
    assert recorder.changes == []
    with pytest.raises(NetworkXmlError, match="DNS TXT record name"):
        networks.set_dns_txt(conn, network.name, [PEER_C, dataclasses.replace(PEER_C, value="192.168.77.99")])
    assert networks.set_dns_txt(conn, network.name, []).config == dataclasses.replace(network, uuid=obs.uuid)


def test_ensure_network_changes_only_the_txt_records_of_a_running_network_without_a_restart(
    conn: typing.Any, network: NetworkConfig
) -> None:
    recorder = Recorder(conn)
    obs = networks.ensure_network(recorder, dataclasses.replace(network, dns_txt=(PEER_B,)))
    assert recorder.changes == ["defineXML", "update:add:txt:host-b.vdc-peer"]
    assert obs.active and obs.config is not None and obs.config.dns_txt == (PEER_B,)


def test_set_dhcp_hosts_on_a_stopped_network_changes_its_definition(conn: typing.Any, network: NetworkConfig) -> None:
    conn.networkLookupByName(network.name).destroy()
    obs = networks.set_dhcp_hosts(conn, network.name, [A])
    assert not obs.active and obs.dhcp_hosts == (A,)
    conn.networkLookupByName(network.name).create()
    assert xml_hosts(conn, network.name) == (A,)


def test_ensure_network_then_set_dhcp_hosts_keeps_them_in_step(conn: typing.Any, network: NetworkConfig) -> None:
    networks.set_dhcp_hosts(conn, network.name, [A, B])
    # ensure_network takes the hosts as part of the definition: the same list is no change at all.
    recorder = Recorder(conn)
    networks.ensure_network(recorder, with_hosts(network, A, B))
    assert recorder.changes == []
    # Nor is another order of the same hosts.
    networks.ensure_network(recorder, with_hosts(network, B, A))
    assert recorder.changes == []
    # A restart brings back the same hosts (the persistent definition has them too).
    net = conn.networkLookupByName(network.name)
    net.destroy()
    net.create()
    assert xml_hosts(conn, network.name) == (A, B)


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([DhcpHostConfig("52:54:00:00:0b:01", "10.78.0.5")], "not in the network 10.77.0.0/24"),
        ([DhcpHostConfig("52:54:00:00:0b:01", "10.77.0.1")], "gateway"),
        ([DhcpHostConfig("52:54:00:00:0b:01", "10.77.0.255")], "broadcast"),
        ([A, dataclasses.replace(B, mac=A.mac)], "appears more than once"),
        ([A, dataclasses.replace(B, ip=A.ip)], "appears more than once"),
    ],
)
def test_set_dhcp_hosts_refuses_hosts_that_do_not_fit_and_changes_nothing(
    conn: typing.Any, network: NetworkConfig, hosts: list[DhcpHostConfig], message: str
) -> None:
    networks.set_dhcp_hosts(conn, network.name, [C])
    recorder = Recorder(conn)
    with pytest.raises(NetworkXmlError, match=message):
        networks.set_dhcp_hosts(recorder, network.name, hosts)
    assert recorder.changes == []
    assert xml_hosts(conn, network.name) == (C,)


def test_set_dhcp_hosts_needs_an_existing_network_with_ipv4(conn: typing.Any) -> None:
    with pytest.raises(NotFound):
        networks.set_dhcp_hosts(conn, f"vdc-missing-{unique()}", [A])
    bridge = NetworkConfig(name=f"vdc-t-br-{unique()}", bridge="br0", forward="bridge")
    networks.ensure_network(conn, bridge)
    try:
        with pytest.raises(NetworkXmlError, match="no IPv4 address"):
            networks.set_dhcp_hosts(conn, bridge.name, [A])
        # No hosts is what it has: nothing to do.
        assert networks.set_dhcp_hosts(conn, bridge.name, []).dhcp_hosts == ()
    finally:
        cleanup(conn, bridge.name)


# --- errors --------------------------------------------------------------------------------------


def test_host_networking_errors_on_a_live_connection_are_not_host_loss(conn: typing.Any) -> None:
    exc = libvirt.libvirtError("Cannot create bridge 'vdcbr-x': Operation not permitted")
    exc.err = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_NETWORK, str(exc), 2, None, None, None, 1, 0)

    class FailingNetwork:
        def create(self) -> None:
            raise exc

        def isActive(self) -> bool:
            return False

    with pytest.raises(NetworkFailure, match="Cannot create bridge"):
        networks._start(conn, FailingNetwork())
