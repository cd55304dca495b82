#!/usr/bin/env python3
"""vdc-operator's libvirt network hook: the VXLAN side of overlay switches.

libvirt cannot make a VXLAN device, so each host runs this hook, installed as
``/etc/libvirt/hooks/network.d/vdc-overlay`` (``vdc host-hook install`` writes it; libvirtd looks for
hooks when it starts, so restart it once after installing). libvirt runs it as
``vdc-overlay <network> <operation> <sub-operation> -`` with ``<hookData><network>…`` on standard input.
It acts only on networks whose ``<metadata>`` carries our overlay element (see
:class:`vdc.libvirt.network_xml.OverlayConfig`); anything else passes through untouched:

* ``started``, ``updated``, ``port-created``: make the VXLAN device (VNI, local address, UDP port,
  underlay interface from the metadata), enslave it to the network's bridge, and make its flood list
  (all-zero MAC forwarding entries, head-end replication) exactly the peers: the values of the
  network's DNS TXT records named ``*.vdc-peer``, less the local address. The operator changes those
  records with ``virNetworkUpdate`` as hosts come and go, which runs this hook again.
* ``stopped``: delete the device (libvirt deletes the bridge, not what we enslaved to it).

A failure exits non-zero with the reason on standard error, which libvirt reports as the error of the
operation (a network that does not start names the failed command).

This file is deliberately standalone: the Python standard library and iproute2's ``ip`` and
``bridge`` commands are all it needs on the host. :func:`plan` is pure (what to run, given the
operation, the network and what the host has), the rest is I/O.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

OVERLAY_TAG = "{https://vdc.dev/xmlns/overlay/v1}overlay"
PEER_SUFFIX = ".vdc-peer"
FLOOD_MAC = "00:00:00:00:00:00"
SYNC_OPERATIONS = frozenset({"started", "updated", "port-created"})


@dataclass(frozen=True)
class Overlay:
    """What the network asks for on this host."""

    bridge: str
    device: str
    vni: int
    local: str
    port: int
    underlay: str | None
    mtu: int | None
    peers: frozenset[str]


@dataclass(frozen=True)
class Device:
    """The VXLAN device as the host has it (None fields: not reported)."""

    vni: int | None
    local: str | None
    port: int | None
    master: str | None
    up: bool
    mtu: int | None
    flood: frozenset[str] = field(default_factory=frozenset)


def parse_network(text: str) -> Overlay | None:
    """The overlay of the network in libvirt's hook data (or a bare ``<network>``); None when it has none."""
    root = ET.fromstring(text)
    network = root if root.tag == "network" else root.find("network")
    if network is None:
        return None
    el = network.find(f"metadata/{OVERLAY_TAG}")
    bridge = network.find("bridge")
    if el is None or bridge is None or not bridge.get("name"):
        return None
    local = el.get("local", "")
    peers = frozenset(
        value
        for txt in network.findall("dns/txt")
        if (txt.get("name") or "").endswith(PEER_SUFFIX) and (value := txt.get("value") or "") and value != local
    )
    mtu = network.find("mtu")
    return Overlay(
        bridge=str(bridge.get("name")),
        device=el.get("device", ""),
        vni=int(el.get("vni", "0")),
        local=local,
        port=int(el.get("port", "4789")),
        underlay=el.get("underlay"),
        mtu=int(mtu.get("size", "0")) or None if mtu is not None else None,
        peers=peers,
    )


def plan(operation: str, overlay: Overlay | None, device: Device | None, bridge_exists: bool) -> list[list[str]]:
    """The commands that bring the host to what ``overlay`` asks for after ``operation``."""
    if overlay is None:
        return []
    name = overlay.device
    if operation == "stopped":
        return [["ip", "link", "del", name]] if device is not None else []
    if operation not in SYNC_OPERATIONS or not bridge_exists:
        return []  # e.g. an update of a stopped network's definition: nothing on the host yet
    commands: list[list[str]] = []
    wrong = device is not None and (device.vni, device.local, device.port) != (overlay.vni, overlay.local, overlay.port)
    if device is not None and wrong:
        commands.append(["ip", "link", "del", name])
    if device is None or wrong:
        add = ["ip", "link", "add", name, "type", "vxlan", "id", str(overlay.vni), "local", overlay.local]
        add += ["dstport", str(overlay.port)]
        if overlay.underlay:
            add += ["dev", overlay.underlay]
        commands.append(add)
        device = Device(vni=overlay.vni, local=overlay.local, port=overlay.port, master=None, up=False, mtu=None)
    if overlay.mtu is not None and device.mtu != overlay.mtu:
        commands.append(["ip", "link", "set", "dev", name, "mtu", str(overlay.mtu)])
    if device.master != overlay.bridge:
        commands.append(["ip", "link", "set", "dev", name, "master", overlay.bridge])
    if not device.up:
        commands.append(["ip", "link", "set", "dev", name, "up"])
    for peer in sorted(overlay.peers - device.flood):
        commands.append(["bridge", "fdb", "append", FLOOD_MAC, "dev", name, "dst", peer])
    for peer in sorted(device.flood - overlay.peers):
        commands.append(["bridge", "fdb", "del", FLOOD_MAC, "dev", name, "dst", peer])
    return commands


# --- I/O -----------------------------------------------------------------------------------------


def _json(command: list[str]) -> list[dict[str, object]] | None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout or "[]")  # type: ignore[no-any-return]


def observe(name: str) -> Device | None:
    links = _json(["ip", "-j", "-d", "link", "show", "dev", name])
    if not links:
        return None
    link = links[0]
    info = link.get("linkinfo")
    data: dict[str, object] = {}
    if isinstance(info, dict) and isinstance(info.get("info_data"), dict):
        data = info["info_data"]
    flood = frozenset(
        str(entry["dst"])
        for entry in _json(["bridge", "-j", "fdb", "show", "dev", name]) or []
        if entry.get("mac") == FLOOD_MAC and entry.get("dst")
    )
    flags = link.get("flags")
    return Device(
        vni=int(str(data["id"])) if "id" in data else None,
        local=str(data["local"]) if "local" in data else None,
        port=int(str(data["port"])) if "port" in data else None,
        master=str(link["master"]) if link.get("master") else None,
        up=isinstance(flags, list) and "UP" in flags,
        mtu=int(str(link["mtu"])) if "mtu" in link else None,
        flood=flood,
    )


def bridge_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True, check=False).returncode == 0


def main(argv: list[str], stdin: str) -> int:
    if len(argv) < 3:
        print("usage: vdc-overlay <network> <operation> <sub-operation> - (libvirt network hook)", file=sys.stderr)
        return 2
    operation = argv[2]
    try:
        overlay = parse_network(stdin) if stdin.strip() else None
    except (ET.ParseError, ValueError) as exc:
        print(f"vdc-overlay: cannot read the network of {argv[1]}: {exc}", file=sys.stderr)
        return 1
    if overlay is None:
        return 0
    commands = plan(operation, overlay, observe(overlay.device), bridge_exists(overlay.bridge))
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            print(f"vdc-overlay: {' '.join(command)}: {result.stderr.strip()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv, sys.stdin.read()))
