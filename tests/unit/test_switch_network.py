"""What network a VirtualSwitch becomes on each host (pure: ``vdc.controllers.virtualswitch``)."""

from __future__ import annotations

from typing import Any

import pytest

from vdc.api.virtualswitch import VirtualSwitch
from vdc.controllers.virtualswitch import (
    OVERLAY_MTU,
    OverlayPeer,
    SwitchUnsupported,
    bridge_name,
    network_config,
    overlay_side,
    vxlan_device_name,
)
from vdc.libvirt.network_xml import DnsTxtConfig


def switch(**spec: Any) -> VirtualSwitch:
    return VirtualSwitch.model_validate(
        {"metadata": {"name": "tenant-a"}, "spec": {"subnet": {"cidr": "10.50.0.0/24"}, **spec}}
    )


PEERS = [
    OverlayPeer("host-c", "192.168.77.13"),
    OverlayPeer("host-a", "192.168.77.11"),
    OverlayPeer("host-b", "192.168.77.12"),
]


def test_an_overlay_switch_tunnels_from_this_host_to_every_other() -> None:
    sw = switch(mode="overlay", overlay={"vni": 5001, "port": 4790, "underlayInterface": "eth1"})
    overlay, peers = overlay_side(sw, "192.168.77.11", PEERS)
    assert (overlay.vni, overlay.port, overlay.local, overlay.underlay) == (5001, 4790, "192.168.77.11", "eth1")
    assert overlay.device == vxlan_device_name("tenant-a") and len(overlay.device) <= 15
    assert overlay.device.removeprefix("vdcvx-") == bridge_name("tenant-a").removeprefix("vdcbr-")
    assert peers == (
        DnsTxtConfig("host-b.vdc-peer", "192.168.77.12"),
        DnsTxtConfig("host-c.vdc-peer", "192.168.77.13"),
    )
    config = network_config(sw, overlay=(overlay, peers))
    assert config.forward == "none" and config.overlay == overlay and config.dns_txt == peers
    assert config.mtu == OVERLAY_MTU  # room for the VXLAN header on a 1500-byte underlay
    assert network_config(switch(mode="overlay", overlay={"vni": 7}, mtu=8950), overlay=(overlay, peers)).mtu == 8950


def test_hosts_of_an_overlay_switch_differ_only_in_their_side_of_it() -> None:
    sw = switch(mode="overlay", overlay={"vni": 5001})
    a = network_config(sw, overlay=overlay_side(sw, "192.168.77.11", PEERS))
    b = network_config(sw, overlay=overlay_side(sw, "192.168.77.12", PEERS))
    assert a.overlay != b.overlay and a.dns_txt != b.dns_txt
    assert (a.name, a.bridge, a.ipv4, a.mtu) == (b.name, b.bridge, b.ipv4, b.mtu)


def test_nat_and_isolated_switches_carry_no_overlay() -> None:
    for mode in ("nat", "isolated"):
        config = network_config(switch(mode=mode))
        assert config.overlay is None and config.dns_txt == () and config.mtu is None


def test_a_bridge_switch_plugs_guests_into_the_lans_bridge() -> None:
    config = network_config(switch(mode="bridge", bridge={"name": "br-lan"}))
    assert (config.forward, config.bridge, config.ipv4, config.dns_txt) == ("bridge", "br-lan", None, ())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mode": "bridge", "bridge": {"name": "br0"}, "vlan": 12}, "needs an Open vSwitch bridge"),
        ({"mode": "overlay", "overlay": {"vni": 9}, "vlan": 12}, "VLAN tag on an overlay switch is not built yet"),
    ],
)
def test_what_is_not_built_says_so(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SwitchUnsupported, match=message):
        network_config(switch(**spec))
