"""The libvirt network hook that makes overlay switches' VXLAN devices: what it runs for each operation.

Its I/O (``ip``/``bridge`` on a real host, run by a real libvirtd) is covered by
``tests/e2e/test_switches.py``; here the pure parts: reading the network libvirt hands it, and planning.
"""

from __future__ import annotations

import dataclasses

import pytest

from vdc.hooks.libvirt_network import Device, Overlay, main, parse_network, plan
from vdc.libvirt.network_xml import DnsTxtConfig, Ipv4Config, NetworkConfig, OverlayConfig

NETWORK = NetworkConfig(
    name="vdc-tenant-a",
    bridge="vdcbr-5be0a913",
    forward="none",
    mtu=1450,
    ipv4=Ipv4Config(address="10.50.0.1", prefix=24),
    dns_txt=(
        DnsTxtConfig("host-a.vdc-peer", "192.168.77.11"),  # this host: not a peer of itself
        DnsTxtConfig("host-b.vdc-peer", "192.168.77.12"),
        DnsTxtConfig("host-c.vdc-peer", "192.168.77.13"),
        DnsTxtConfig("something-else", "192.168.77.99"),  # not a peer record
    ),
    overlay=OverlayConfig(vni=5001, port=4790, local="192.168.77.11", device="vdcvx-5be0a913", underlay="eth1"),
)
OVERLAY = Overlay(
    bridge="vdcbr-5be0a913",
    device="vdcvx-5be0a913",
    vni=5001,
    local="192.168.77.11",
    port=4790,
    underlay="eth1",
    mtu=1450,
    peers=frozenset({"192.168.77.12", "192.168.77.13"}),
)
READY = Device(
    vni=5001, local="192.168.77.11", port=4790, master="vdcbr-5be0a913", up=True, mtu=1450,
    flood=frozenset({"192.168.77.12", "192.168.77.13"}),
)  # fmt: skip


def hook_data(config: NetworkConfig) -> str:
    return f"<hookData>{config.to_string()}</hookData>"


def test_reads_what_the_operator_writes_into_the_network() -> None:
    assert parse_network(hook_data(NETWORK)) == OVERLAY
    assert parse_network(NETWORK.to_string()) == OVERLAY


def test_a_network_without_our_overlay_is_left_alone() -> None:
    plain = dataclasses.replace(NETWORK, overlay=None)
    assert parse_network(hook_data(plain)) is None
    for operation in ("start", "started", "updated", "port-created", "stopped"):
        assert plan(operation, None, None, True) == []
    assert main(["vdc-overlay", "vdc-tenant-a", "started", "begin", "-"], hook_data(plain)) == 0


def test_started_makes_the_device_enslaves_it_and_floods_to_every_peer() -> None:
    assert plan("started", OVERLAY, None, bridge_exists=True) == [
        ["ip", "link", "add", "vdcvx-5be0a913", "type", "vxlan", "id", "5001", "local", "192.168.77.11",
         "dstport", "4790", "dev", "eth1"],
        ["ip", "link", "set", "dev", "vdcvx-5be0a913", "mtu", "1450"],
        ["ip", "link", "set", "dev", "vdcvx-5be0a913", "master", "vdcbr-5be0a913"],
        ["ip", "link", "set", "dev", "vdcvx-5be0a913", "up"],
        ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vdcvx-5be0a913", "dst", "192.168.77.12"],
        ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vdcvx-5be0a913", "dst", "192.168.77.13"],
    ]  # fmt: skip


def test_a_device_as_wanted_needs_nothing() -> None:
    for operation in ("started", "updated", "port-created"):
        assert plan(operation, OVERLAY, READY, bridge_exists=True) == []


def test_updated_changes_only_the_flood_list_when_hosts_come_and_go() -> None:
    gone_and_new = dataclasses.replace(OVERLAY, peers=frozenset({"192.168.77.13", "192.168.77.14"}))
    assert plan("updated", gone_and_new, READY, bridge_exists=True) == [
        ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vdcvx-5be0a913", "dst", "192.168.77.14"],
        ["bridge", "fdb", "del", "00:00:00:00:00:00", "dev", "vdcvx-5be0a913", "dst", "192.168.77.12"],
    ]


def test_a_device_with_other_vxlan_settings_is_made_again() -> None:
    stale = dataclasses.replace(READY, vni=5002)
    commands = plan("started", OVERLAY, stale, bridge_exists=True)
    assert commands[0] == ["ip", "link", "del", "vdcvx-5be0a913"]
    assert commands[1][:4] == ["ip", "link", "add", "vdcvx-5be0a913"]
    assert ["ip", "link", "set", "dev", "vdcvx-5be0a913", "master", "vdcbr-5be0a913"] in commands


def test_a_detached_or_down_device_is_put_back() -> None:
    detached = dataclasses.replace(READY, master=None, up=False)
    assert plan("port-created", OVERLAY, detached, bridge_exists=True) == [
        ["ip", "link", "set", "dev", "vdcvx-5be0a913", "master", "vdcbr-5be0a913"],
        ["ip", "link", "set", "dev", "vdcvx-5be0a913", "up"],
    ]


def test_stopped_deletes_the_device_libvirt_does_not_know_about() -> None:
    assert plan("stopped", OVERLAY, READY, bridge_exists=False) == [["ip", "link", "del", "vdcvx-5be0a913"]]
    assert plan("stopped", OVERLAY, None, bridge_exists=False) == []


@pytest.mark.parametrize("operation", ["updated", "started"])
def test_nothing_is_done_while_the_bridge_does_not_exist(operation: str) -> None:
    # e.g. virNetworkUpdate of a stopped network's definition
    assert plan(operation, OVERLAY, None, bridge_exists=False) == []


def test_unreadable_hook_data_fails_with_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vdc-overlay", "vdc-x", "started", "begin", "-"], "<hookData><network>") == 1
    assert "cannot read the network of vdc-x" in capsys.readouterr().err
    assert main(["vdc-overlay"], "") == 2
