"""Virtual network operations against a real libvirtd (one rig host, QEMU host's network driver).

The rig host runs in its own network namespace (named after the host), so the bridge libvirt makes
for a nat network is looked at there with ``ip -n <host>``; dnsmasq's files are under the host's
private ``/var/lib/libvirt`` and ``/run/libvirt``, which are directories of the rig's state here.
What is checked is what a guest would get: the bridge, its address and MTU, the static leases in
dnsmasq's hosts file, and that a host-only change neither recreates the bridge nor restarts dnsmasq.
Only the rig host this module starts is used; it is stopped after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import time
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import rig
from vdc.libvirt import networks
from vdc.libvirt.errors import ConfigRejected, LibvirtFailure
from vdc.libvirt.network_xml import (
    DhcpHostConfig,
    DhcpRangeConfig,
    DnsConfig,
    Ipv4Config,
    Ipv6Config,
    NetworkConfig,
)
from vdc.libvirt.xml_common import BandwidthConfig, BandwidthLimitConfig

if os.geteuid() != 0 or not all(shutil.which(t) for t in ("virsh", "libvirtd", "virtlogd", "dnsmasq", "ip")):
    pytest.skip(
        "needs root and libvirt-daemon-system, libvirt-clients, dnsmasq-base, iproute2", allow_module_level=True
    )

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

A = DhcpHostConfig(mac="52:54:00:e2:e0:01", ip="172.31.77.11", name="vm-a")
B = DhcpHostConfig(mac="52:54:00:e2:e0:02", ip="172.31.77.12", name="vm-b")
C = DhcpHostConfig(mac="52:54:00:e2:e0:03", ip="172.31.77.13")


@dataclasses.dataclass
class RigHost:
    host: rig.LibvirtHost
    dir: Path
    """The host's state directory: ``lib/`` is its /var/lib/libvirt, ``run/`` its /run/libvirt."""

    @property
    def netns(self) -> str:
        return self.host.name

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "-n", self.netns, *args], capture_output=True, text=True, timeout=30, check=check)

    def link(self, dev: str) -> dict[str, typing.Any] | None:
        """``ip -j link show dev`` in the host's namespace; None when there is no such device."""
        result = self.ip("-j", "link", "show", "dev", dev, check=False)
        if result.returncode != 0:
            return None
        (link,) = json.loads(result.stdout)
        return typing.cast(dict[str, typing.Any], link)

    def ipv4(self, dev: str) -> list[str]:
        out = json.loads(self.ip("-j", "-4", "addr", "show", "dev", dev).stdout)
        return [f"{a['local']}/{a['prefixlen']}" for entry in out for a in entry["addr_info"]]

    def virsh(self, *args: str) -> str:
        result = subprocess.run(
            ["virsh", "-c", self.host.qemu_uri, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"virsh {' '.join(args)}: {result.stderr}"
        return result.stdout

    def dnsmasq_hosts(self, network: str) -> list[str]:
        """The static leases libvirt gave dnsmasq ("mac,ip,name" lines)."""
        path = self.dir / "lib" / "dnsmasq" / f"{network}.hostsfile"
        return path.read_text().split() if path.exists() else []

    def dnsmasq_pid(self, network: str) -> int | None:
        path = self.dir / "run" / "network" / f"{network}.pid"
        if not path.exists():
            return None
        pid = int(path.read_text().strip())
        return pid if Path(f"/proc/{pid}").exists() else None


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RigHost]:
    state = tmp_path_factory.mktemp("network-rig")
    prefix = f"vdcn{secrets.token_hex(2)}"
    try:
        h = rig.start_libvirt_hosts(state, 1, prefix).hosts[0]
        if h.address is None:
            pytest.skip("the rig host has no network namespace (VDC_HOST_NETNS=0)")
        yield RigHost(h, state / "hosts" / h.name)
    finally:
        rig.stop_libvirt_hosts(state, prefix)


@pytest.fixture(scope="module")
def conn(host: RigHost) -> Iterator[typing.Any]:
    c = libvirt.open(host.host.qemu_uri)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def network(conn: typing.Any) -> Iterator[NetworkConfig]:
    """A nat network (not yet created) on 172.31.77.0/24; removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    config = NetworkConfig(
        name=f"vdc-e2e-{tag}",
        bridge=f"vdcbr-{tag}",
        ipv4=Ipv4Config("172.31.77.1", 24, DhcpRangeConfig("172.31.77.100", "172.31.77.200")),
    )
    try:
        yield config
    finally:
        networks.remove_network(conn, config.name)


def running(pid: int) -> bool:
    """The process exists and is not a zombie (libvirt signals dnsmasq; it exits soon after)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def with_hosts(config: NetworkConfig, *hosts: DhcpHostConfig) -> NetworkConfig:
    assert config.ipv4 is not None
    return dataclasses.replace(config, ipv4=dataclasses.replace(config.ipv4, hosts=hosts))


def lease(h: DhcpHostConfig) -> str:
    return ",".join(v for v in (h.mac, h.ip, h.name) if v)


def dumped_hosts(host: RigHost, name: str, *flags: str) -> tuple[DhcpHostConfig, ...]:
    return NetworkConfig.from_string(host.virsh("net-dumpxml", name, *flags)).dhcp_hosts


def test_a_nat_network_gets_its_bridge_address_and_dnsmasq(
    conn: typing.Any, host: RigHost, network: NetworkConfig
) -> None:
    obs = networks.ensure_network(conn, with_hosts(network, A))
    assert obs.active and obs.autostart and obs.persistent and obs.bridge == network.bridge
    assert obs.dhcp_hosts == (A,)
    assert obs.config == with_hosts(dataclasses.replace(network, uuid=obs.uuid), A)
    link = host.link(network.bridge)
    assert link is not None and "UP" in link["flags"]
    assert host.ipv4(network.bridge) == ["172.31.77.1/24"]
    assert host.dnsmasq_pid(network.name) is not None
    assert host.dnsmasq_hosts(network.name) == [lease(A)]
    # What the QEMU host's driver returns for the running network reads back as it was written:
    # a second ensure changes nothing (same bridge, same dnsmasq).
    assert networks.ensure_network(conn, with_hosts(network, A)) == obs
    assert host.link(network.bridge)["ifindex"] == link["ifindex"]  # type: ignore[index]


def test_set_dhcp_hosts_changes_leases_without_a_restart(
    conn: typing.Any, host: RigHost, network: NetworkConfig
) -> None:
    networks.ensure_network(conn, network)
    ifindex = host.link(network.bridge)["ifindex"]  # type: ignore[index]
    dnsmasq = host.dnsmasq_pid(network.name)
    assert dnsmasq is not None

    obs = networks.set_dhcp_hosts(conn, network.name, [A, B])
    assert obs.dhcp_hosts == (A, B)
    assert dumped_hosts(host, network.name) == (A, B)
    assert dumped_hosts(host, network.name, "--inactive") == (A, B)
    assert host.dnsmasq_hosts(network.name) == [lease(A), lease(B)]

    b_moved = dataclasses.replace(B, ip="172.31.77.42")
    obs = networks.set_dhcp_hosts(conn, network.name, [b_moved, C])
    assert set(obs.dhcp_hosts) == {b_moved, C}
    assert set(dumped_hosts(host, network.name)) == {b_moved, C}
    assert set(dumped_hosts(host, network.name, "--inactive")) == {b_moved, C}
    assert sorted(host.dnsmasq_hosts(network.name)) == sorted([lease(b_moved), lease(C)])

    assert networks.set_dhcp_hosts(conn, network.name, []).dhcp_hosts == ()
    assert dumped_hosts(host, network.name) == dumped_hosts(host, network.name, "--inactive") == ()
    assert host.dnsmasq_hosts(network.name) == []
    # Neither the bridge nor dnsmasq was restarted.
    assert host.link(network.bridge)["ifindex"] == ifindex  # type: ignore[index]
    assert host.dnsmasq_pid(network.name) == dnsmasq


def test_running_and_persistent_hosts_are_each_brought_to_the_list(
    conn: typing.Any, host: RigHost, network: NetworkConfig
) -> None:
    networks.ensure_network(conn, with_hosts(network, A))
    # Behind our back: C only in the persistent definition, B only on the running network.
    host.virsh("net-update", network.name, "add", "ip-dhcp-host", C.to_string(), "--config")
    host.virsh("net-update", network.name, "add", "ip-dhcp-host", B.to_string(), "--live")
    assert dumped_hosts(host, network.name) == (A, B)
    assert dumped_hosts(host, network.name, "--inactive") == (A, C)

    obs = networks.set_dhcp_hosts(conn, network.name, [A, B])
    assert obs.dhcp_hosts == (A, B)
    assert dumped_hosts(host, network.name) == (A, B)
    assert dumped_hosts(host, network.name, "--inactive") == (A, B)
    assert host.dnsmasq_hosts(network.name) == [lease(A), lease(B)]


def test_ensure_network_changes_hosts_live_and_restarts_only_for_the_rest(
    conn: typing.Any, host: RigHost, network: NetworkConfig
) -> None:
    networks.ensure_network(conn, network)
    ifindex = host.link(network.bridge)["ifindex"]  # type: ignore[index]
    obs = networks.ensure_network(conn, with_hosts(network, A, C))
    assert obs.dhcp_hosts == (A, C)
    assert dumped_hosts(host, network.name, "--inactive") == (A, C)
    assert host.dnsmasq_hosts(network.name) == [lease(A), lease(C)]
    assert host.link(network.bridge)["ifindex"] == ifindex  # type: ignore[index]

    smaller = dataclasses.replace(with_hosts(network, A, C), mtu=1400)
    obs = networks.ensure_network(conn, smaller)
    link = host.link(network.bridge)
    assert link is not None and link["mtu"] == 1400
    assert link["ifindex"] != ifindex  # recreated
    assert obs.config == dataclasses.replace(smaller, uuid=obs.uuid)
    assert host.dnsmasq_hosts(network.name) == [lease(A), lease(C)]


def test_a_network_destroyed_behind_its_back_is_brought_back(
    conn: typing.Any, host: RigHost, network: NetworkConfig
) -> None:
    networks.ensure_network(conn, with_hosts(network, A))
    host.virsh("net-destroy", network.name)
    assert host.link(network.bridge) is None
    assert networks.observe_network(conn, network.name).active is False  # type: ignore[union-attr]
    obs = networks.ensure_network(conn, with_hosts(network, A))
    assert obs.active and obs.dhcp_hosts == (A,)
    assert host.link(network.bridge) is not None
    assert host.ipv4(network.bridge) == ["172.31.77.1/24"]
    assert host.dnsmasq_hosts(network.name) == [lease(A)]


def test_ipv6_dns_and_mtu_reach_the_bridge_and_dnsmasq(conn: typing.Any, host: RigHost, network: NetworkConfig) -> None:
    config = dataclasses.replace(
        network,
        mtu=9000,
        ipv6=Ipv6Config("fd00:77::1", 64),
        dns=DnsConfig(forwarders=("192.0.2.53",), domain="e2e.vdc", local_only=True),
    )
    obs = networks.ensure_network(conn, config)
    assert obs.config == dataclasses.replace(config, uuid=obs.uuid)
    link = host.link(network.bridge)
    assert link is not None and link["mtu"] == 9000
    addrs = json.loads(host.ip("-j", "-6", "addr", "show", "dev", network.bridge).stdout)
    assert "fd00:77::1/64" in [f"{a['local']}/{a['prefixlen']}" for e in addrs for a in e["addr_info"]]
    conf = (host.dir / "lib" / "dnsmasq" / f"{network.name}.conf").read_text().splitlines()
    assert "server=192.0.2.53" in conf
    assert "domain=e2e.vdc" in conf and "local=/e2e.vdc/" in conf


def test_bandwidth_is_shaped_on_the_bridge(conn: typing.Any, host: RigHost, network: NetworkConfig) -> None:
    limits = BandwidthConfig(
        inbound=BandwidthLimitConfig(average=1000, peak=2000, burst=256),
        outbound=BandwidthLimitConfig(average=500),
    )
    try:
        obs = networks.ensure_network(conn, dataclasses.replace(network, bandwidth=limits))
    except LibvirtFailure as failure:
        if "qdisc kind is unknown" in str(failure):
            pytest.skip(f"this kernel lacks a queueing discipline libvirt uses: {failure}")
        raise
    assert obs.active and obs.config is not None and obs.config.bandwidth == limits
    tc = ["tc", "-n", host.netns, "qdisc", "show", "dev", network.bridge]
    qdiscs = subprocess.run(tc, capture_output=True, text=True, timeout=30, check=True).stdout
    assert "htb" in qdiscs and "ingress" in qdiscs


def test_remove_network_leaves_nothing(conn: typing.Any, host: RigHost, network: NetworkConfig) -> None:
    networks.ensure_network(conn, with_hosts(network, A))
    dnsmasq = host.dnsmasq_pid(network.name)
    assert networks.remove_network(conn, network.name) is True
    assert networks.observe_network(conn, network.name) is None
    assert network.name not in host.virsh("net-list", "--all", "--name").split()
    assert host.link(network.bridge) is None
    assert dnsmasq is not None
    deadline = time.monotonic() + 15
    while running(dnsmasq):
        assert time.monotonic() < deadline, f"dnsmasq {dnsmasq} of the removed network still runs"
        time.sleep(0.1)
    assert not (host.dir / "etc" / "qemu" / "networks" / f"{network.name}.xml").exists()
    assert not (host.dir / "etc" / "qemu" / "networks" / "autostart" / f"{network.name}.xml").exists()
    assert networks.remove_network(conn, network.name) is False


@pytest.mark.parametrize(
    "xml",
    [
        # A vlan on a Linux bridge network, and an MTU on a bridge network: what NetworkConfig refuses.
        "<network><name>{name}</name><forward mode='bridge'/><bridge name='br0'/><vlan><tag id='42'/></vlan></network>",
        "<network><name>{name}</name><forward mode='bridge'/><bridge name='br0'/><mtu size='9000'/></network>",
        "<network><name>{name}</name><forward mode='bridge'/><bridge name='br0'/>"
        "<ip address='172.31.78.1' prefix='24'/></network>",
    ],
    ids=["vlan-on-linux-bridge", "mtu-on-bridge", "ip-on-bridge"],
)
def test_the_host_refuses_what_the_dataclasses_refuse(conn: typing.Any, xml: str) -> None:
    name = f"vdc-e2e-refused-{uuid.uuid4().hex[:8]}"
    with pytest.raises(libvirt.libvirtError) as refused:
        conn.networkDefineXML(xml.format(name=name))
    assert refused.value.get_error_code() in (libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_XML_ERROR)
    assert networks.observe_network(conn, name) is None


def test_another_uuid_is_refused_before_anything_is_stopped(
    conn: typing.Any, host: RigHost, network: NetworkConfig
) -> None:
    obs = networks.ensure_network(conn, network)
    ifindex = host.link(network.bridge)["ifindex"]  # type: ignore[index]
    with pytest.raises(ConfigRejected):
        networks.ensure_network(conn, dataclasses.replace(network, uuid=str(uuid.uuid4()), mtu=1400))
    assert networks.observe_network(conn, network.name) == obs
    assert host.link(network.bridge)["ifindex"] == ifindex  # type: ignore[index]
