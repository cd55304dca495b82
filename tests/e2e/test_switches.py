"""VirtualSwitches on real hosts: one network everywhere, repaired, one IPAM across hosts, NICs."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess

import pytest

from conftest import Datacenter, wait_until

SWITCH = "e2e-lan"
SUBNET = "10.123.0.0/24"


def _switch(name: str, cidr: str, driver: str) -> dict:
    return {
        "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualSwitch", "metadata": {"name": name},
        "spec": {"mode": "nat", "subnet": {"cidr": cidr}, "hostSelector": {"matchLabels": {"vdc.dev/driver": driver}}},
    }  # fmt: skip


def _ready(dc: Datacenter, name: str) -> dict | None:
    body = dc.get("virtualswitch", name)
    return body if (dc.condition(body, "Ready") or {}).get("status") == "True" else None


@pytest.fixture(scope="module")
def lan(datacenter: Datacenter) -> dict:
    datacenter.apply(_switch(SWITCH, SUBNET, "qemu"))
    return wait_until("the switch Ready", lambda: _ready(datacenter, SWITCH), timeout=60)


def test_switch_is_the_same_network_on_every_host_and_is_repaired(datacenter: Datacenter, lan: dict) -> None:
    dc = datacenter
    hosts = {h["host"]: h for h in lan["status"]["hosts"]}
    assert set(hosts) == {h.name for h in dc.hosts.hosts} and all(h["state"] == "Active" for h in hosts.values())
    bridge = hosts[dc.hosts.hosts[0].name]["bridge"]
    for h in dc.hosts.hosts:
        xml = dc.virsh(h.name, "net-dumpxml", f"vdc-{SWITCH}")
        assert f"name='{bridge}'" in xml and "address='10.123.0.1'" in xml
        link = subprocess.run(["ip", "-n", h.name, "link", "show", bridge], capture_output=True, text=True)
        assert link.returncode == 0, link.stderr  # the bridge exists inside the host's network namespace
    victim = dc.hosts.hosts[1].name
    dc.virsh(victim, "net-destroy", f"vdc-{SWITCH}")
    wait_until("the network active again",
               lambda: "Active:         yes" in dc.virsh(victim, "net-info", f"vdc-{SWITCH}"), timeout=60)  # fmt: skip


def test_vms_on_different_hosts_get_distinct_addresses_served_by_every_host(datacenter: Datacenter, lan: dict) -> None:
    dc = datacenter
    names = ["nic-a", "nic-b"]
    for name, host in zip(names, dc.hosts.hosts, strict=True):
        dc.apply(dc.vm_manifest(name, host=host.name, interfaces=[{"name": "eth0", "switch": SWITCH}]))
    bodies = [dc.wait_ready(n) for n in names]
    assert {b["status"]["host"] for b in bodies} == {h.name for h in dc.hosts.hosts}
    nics = [b["status"]["interfaces"][0] for b in bodies]
    ips = [n["ipAddresses"][0] for n in nics]
    assert len(set(ips)) == 2 and all(ipaddress.ip_address(ip) in ipaddress.ip_network(SUBNET) for ip in ips)
    for body, nic in zip(bodies, nics, strict=True):
        xml = dc.virsh(body["status"]["host"], "dumpxml", body["status"]["domainName"])
        assert f"network='vdc-{SWITCH}'" in xml and nic["macAddress"] in xml
    # Every host of the switch hands out every VM's address, so a VM keeps it wherever it runs.
    for h in dc.hosts.hosts:
        xml = dc.virsh(h.name, "net-dumpxml", f"vdc-{SWITCH}")
        for nic in nics:
            assert f"mac='{nic['macAddress']}'" in xml and f"ip='{nic['ipAddresses'][0]}'" in xml
    for name in names:
        dc.cp.kubectl("delete", "vm", name, "-n", dc.namespace, "--timeout=60s")
    wait_until("addresses released", lambda: not (dc.get("virtualswitch", SWITCH) or {})["status"].get("allocations"),
               timeout=60)  # fmt: skip


def test_a_fixed_address_outside_the_subnet_or_taken_is_stalled_naming_it(datacenter: Datacenter, lan: dict) -> None:
    dc = datacenter
    dc.apply(dc.vm_manifest("fixed-ok", interfaces=[{"name": "eth0", "switch": SWITCH, "ipAddress": "10.123.0.50"}]))
    ok = dc.wait_ready("fixed-ok")
    assert ok["status"]["interfaces"][0]["ipAddresses"] == ["10.123.0.50"]
    for name, ip in (("fixed-outside", "192.0.2.7"), ("fixed-taken", "10.123.0.50")):
        dc.apply(dc.vm_manifest(name, interfaces=[{"name": "eth0", "switch": SWITCH, "ipAddress": ip}]))
        body = dc.wait_vm(name, lambda b: (dc.condition(b, "Stalled") or {}).get("status") == "True", "Stalled")
        assert ip in dc.condition(body, "Stalled")["message"]
    for name in ("fixed-ok", "fixed-outside", "fixed-taken"):
        dc.cp.kubectl("delete", "vm", name, "-n", dc.namespace, "--timeout=60s")


def test_fifty_vms_get_fifty_distinct_addresses_that_survive_an_operator_restart(datacenter: Datacenter) -> None:
    dc = datacenter
    dc.apply(_switch("e2e-many", "10.124.0.0/24", "test"))
    wait_until("switch Ready", lambda: _ready(dc, "e2e-many"), timeout=60)
    names = [f"many-{i:02d}" for i in range(50)]
    docs = [dc.vm_manifest(n, memory={"size": "32Mi"}, hostSelector={"matchLabels": {"vdc.dev/driver": "test"}},
                           interfaces=[{"name": "eth0", "switch": "e2e-many"}]) for n in names]  # fmt: skip
    dc.cp.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                  input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))  # fmt: skip
    before = {n: dc.wait_ready(n, timeout=180)["status"]["interfaces"][0]["ipAddresses"][0] for n in names}
    assert len(set(before.values())) == 50
    dc.operator.kill()
    dc.operator.start()
    dc.cp.kubectl("annotate", "vm", "-n", dc.namespace, "--all", "--overwrite", "e2e/poke=1")
    after = {n: dc.wait_ready(n, timeout=180)["status"]["interfaces"][0]["ipAddresses"][0] for n in names}
    assert after == before
    allocations = dc.get("virtualswitch", "e2e-many")["status"]["allocations"]
    assert sorted(a["ip"] for a in allocations) == sorted(before.values())
    dc.cp.kubectl("delete", "vm", *names, "-n", dc.namespace, "--timeout=120s")


def test_guests_on_one_switch_reach_each_other_and_other_switches_are_isolated(
    datacenter: Datacenter, lan: dict
) -> None:
    dc = datacenter
    host = dc.hosts.hosts[0].name
    dc.apply(_switch("e2e-other", "10.125.0.0/24", "qemu"))
    wait_until("the second switch Ready", lambda: _ready(dc, "e2e-other"), timeout=60)
    target = "10.123.0.77"

    def guest(name: str, switch: str, cmdline: str = "") -> dict:
        kernel = {
            "kernel": "/var/lib/libvirt/boot/vdc-tiny/vmlinuz",
            "initrd": "/var/lib/libvirt/boot/vdc-tiny/initrd.img",
            "cmdline": f"console=ttyS0 vdc.marker={name} {cmdline}".strip(),
        }
        nic: dict[str, str] = {"name": "eth0", "switch": switch}
        if name == "ping-target":
            nic["ipAddress"] = target
        return dc.vm_manifest(name, host=host, boot={"kernel": kernel}, interfaces=[nic])

    dc.apply(guest("ping-target", SWITCH))
    dc.apply(guest("ping-same", SWITCH, f"vdc.ping={target} vdc.pingwait=90"))
    dc.apply(guest("ping-other", "e2e-other", f"vdc.ping={target} vdc.pingwait=20"))
    consoles = {}
    for name in ("ping-target", "ping-same", "ping-other"):
        body = dc.wait_ready(name)
        ip = body["status"]["interfaces"][0]["ipAddresses"][0]

        def leased(b: dict = body, address: str = ip) -> str | None:
            text = dc.console_log(b["status"]["host"], b["status"]["domainName"])
            return text if f"VDC-IP={address}" in text else None

        consoles[name] = wait_until(f"{name} leases {ip} by DHCP", leased, timeout=120)
    same = dc.vm("ping-same")
    other = dc.vm("ping-other")
    assert same and other

    def result(body: dict) -> str | None:
        text = dc.console_log(body["status"]["host"], body["status"]["domainName"])
        found = re.search(r"VDC-PING-(OK|FAIL)=[0-9.]+", text)  # the shell's prompt may share its line
        return found.group(0) if found else None

    assert wait_until("ping-same's ping result", lambda: result(same), timeout=150) == f"VDC-PING-OK={target}"
    assert wait_until("ping-other's ping result", lambda: result(other), timeout=150) == f"VDC-PING-FAIL={target}"
    for name in ("ping-target", "ping-same", "ping-other"):
        dc.cp.kubectl("delete", "vm", name, "-n", dc.namespace, "--timeout=60s")


def _ping_result(dc: Datacenter, body: dict) -> str | None:
    text = dc.console_log(body["status"]["host"], body["status"]["domainName"])
    found = re.search(r"VDC-PING-(OK|FAIL)=[0-9.]+", text)  # the shell's prompt may share its line
    return found.group(0) if found else None


def _vxlan_packets(host: str, device: str) -> tuple[int, int]:
    out = subprocess.run(["ip", "-n", host, "-j", "-s", "link", "show", "dev", device],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    stats = json.loads(out)[0]["stats64"]
    return stats["rx"]["packets"], stats["tx"]["packets"]


def _flood_list(host: str, device: str) -> set[str]:
    out = subprocess.run(["bridge", "-n", host, "-j", "fdb", "show", "dev", device],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {e["dst"] for e in json.loads(out) if e.get("mac") == "00:00:00:00:00:00" and e.get("dst")}


def test_guests_on_different_hosts_reach_each_other_over_an_overlay_switch(datacenter: Datacenter) -> None:
    dc = datacenter
    one, two = dc.hosts.hosts[0], dc.hosts.hosts[1]
    assert one.address and two.address, "the rig's hosts need network namespaces for an overlay"
    dc.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualSwitch", "metadata": {"name": "e2e-overlay"},
        "spec": {"mode": "overlay", "overlay": {"vni": 4242}, "subnet": {"cidr": "10.126.0.0/24"},
                 "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}}},
    })  # fmt: skip
    switch = wait_until("the overlay switch Ready", lambda: _ready(dc, "e2e-overlay"), timeout=60)
    device = "vdcvx-" + switch["status"]["hosts"][0]["bridge"].removeprefix("vdcbr-")
    # Each host's side: the VXLAN device on the switch's bridge, flooding to the other host.
    assert _flood_list(one.name, device) == {two.address} and _flood_list(two.name, device) == {one.address}
    before = {h.name: _vxlan_packets(h.name, device) for h in (one, two)}

    target = "10.126.0.77"

    def guest(name: str, host: str, cmdline: str = "", **nic: str) -> dict:
        kernel = {
            "kernel": "/var/lib/libvirt/boot/vdc-tiny/vmlinuz",
            "initrd": "/var/lib/libvirt/boot/vdc-tiny/initrd.img",
            "cmdline": f"console=ttyS0 vdc.marker={name} {cmdline}".strip(),
        }
        return dc.vm_manifest(name, host=host, boot={"kernel": kernel},
                              interfaces=[{"name": "eth0", "switch": "e2e-overlay", **nic}])  # fmt: skip

    dc.apply(guest("vx-target", one.name, ipAddress=target))
    dc.apply(guest("vx-pinger", two.name, f"vdc.ping={target} vdc.pingwait=120"))
    pinger = dc.wait_ready("vx-pinger")
    assert dc.wait_ready("vx-target")["status"]["host"] == one.name and pinger["status"]["host"] == two.name
    assert (
        wait_until("vx-pinger's ping result", lambda: _ping_result(dc, pinger), timeout=180) == f"VDC-PING-OK={target}"
    )
    # The traffic crossed the VXLAN segment: both hosts' devices sent and received.
    after = {h.name: _vxlan_packets(h.name, device) for h in (one, two)}
    for h in (one, two):
        assert after[h.name][0] > before[h.name][0] and after[h.name][1] > before[h.name][1], (h.name, before, after)

    # Each NIC shows its host-side device; its link goes down and up live, without a restart.
    body = dc.vm("vx-pinger")
    assert body
    device_of_nic = body["status"]["interfaces"][0]["hostDevice"]
    domain = body["status"]["domainName"]
    assert device_of_nic in dc.virsh(two.name, "domiflist", domain)
    dc.cp.kubectl("patch", "vm", "vx-pinger", "-n", dc.namespace, "--type=json",
                  "-p", '[{"op": "add", "path": "/spec/interfaces/0/linkState", "value": "down"}]')  # fmt: skip
    wait_until(
        "the link down", lambda: "down" in dc.virsh(two.name, "domif-getlink", domain, device_of_nic), timeout=60
    )
    body = dc.wait_ready("vx-pinger")
    assert (dc.condition(body, "RestartRequired") or {}).get("status") != "True", body["status"]["conditions"]
    assert body["status"]["interfaces"][0]["hostDevice"] == device_of_nic  # the same tap: no restart

    # A host that moves (a new underlay address) is a new peer for the others, live.
    dc.cp.kubectl("patch", "host", two.name, "--type=merge", "-p", '{"spec":{"underlayAddress":"192.0.2.99"}}')
    wait_until("the moved host in the other's flood list", lambda: _flood_list(one.name, device) == {"192.0.2.99"},
               timeout=60)  # fmt: skip
    dc.cp.kubectl(
        "patch", "host", two.name, "--type=merge", "-p", json.dumps({"spec": {"underlayAddress": two.address}})
    )
    wait_until("the flood list restored", lambda: _flood_list(one.name, device) == {two.address}, timeout=60)

    for name in ("vx-target", "vx-pinger"):
        dc.cp.kubectl("delete", "vm", name, "-n", dc.namespace, "--timeout=60s")
    dc.cp.kubectl("delete", "virtualswitch", "e2e-overlay", "--timeout=60s")
    # The hook takes the VXLAN device away with the network.
    for h in (one, two):
        gone = subprocess.run(["ip", "-n", h.name, "link", "show", "dev", device], capture_output=True)
        assert gone.returncode != 0, f"{device} still on {h.name}"


def test_a_bridge_switch_is_realised_on_hosts_with_the_bridge_and_a_missing_bridge_is_reported(
    datacenter: Datacenter,
) -> None:
    dc = datacenter
    for h in dc.hosts.hosts:  # the LAN bridge an administrator made on each host
        subprocess.run(["ip", "-n", h.name, "link", "add", "br-e2e", "type", "bridge"], capture_output=True)
        subprocess.run(["ip", "-n", h.name, "link", "set", "br-e2e", "up"], check=True)
    for name, bridge in (("e2e-bridge", "br-e2e"), ("e2e-nobridge", "br-missing")):
        dc.apply({
            "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualSwitch", "metadata": {"name": name},
            "spec": {"mode": "bridge", "bridge": {"name": bridge},
                     "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}}},
        })  # fmt: skip
    switch = wait_until("the bridge switch Ready", lambda: _ready(dc, "e2e-bridge"), timeout=60)
    assert {h["bridge"] for h in switch["status"]["hosts"]} == {"br-e2e"}

    def failed() -> dict | None:
        body = dc.get("virtualswitch", "e2e-nobridge") or {}
        hosts = (body.get("status") or {}).get("hosts") or []
        return body if hosts and all(h["state"] == "Failed" for h in hosts) else None

    missing = wait_until("the switch without a bridge Failed", failed, timeout=60)
    assert all("br-missing" in h["message"] for h in missing["status"]["hosts"]), missing["status"]["hosts"]

    dc.cp.kubectl("delete", "virtualswitch", "e2e-bridge", "e2e-nobridge", "--timeout=60s")
