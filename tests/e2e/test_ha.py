"""Host HA with fencing, on three rig hosts with a shared pool and a Redfish endpoint per host (real QEMU).

Power a host off through its Redfish endpoint (as a power loss would: its libvirtd and QEMUs die): the
operator sees the connection go (Suspect), asks Redfish (Off: Fenced), and restarts the host's VMs on the
others, each exactly once (every QEMU process on the machine is counted). When the host is powered on again,
its stale domains are removed before it is Ready. A host whose libvirtd stops answering while its power is On
(a partition) is Suspect only: nothing is restarted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sushy
from migration_site import DRIVER, SHARED_POOL, Site, migration_site, qemu_processes, wait_counting

import rig
from conftest import Datacenter, wait_until
from vdc.controllers.vm_vapp import parse_time

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the rig needs root")


@pytest.fixture(scope="module")
def site(datacenter: Datacenter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    state = tmp_path_factory.mktemp("ha-rig")
    with migration_site(datacenter, state, disk_leases=True) as s:
        url = rig.start_redfish(state, s.prefix)
        cluster = {"apiVersion": "vdc.dev/v1alpha1", "kind": "ComputeCluster", "metadata": {"name": "e2e-ha"},
                   "spec": {"hostSelector": {"matchLabels": {"vdc.dev/driver": DRIVER}},
                            "ha": {"enabled": True, "admissionControl": {"policy": "None"}}}}  # fmt: skip
        try:
            datacenter.apply(cluster)
            wait_until("ComputeCluster e2e-ha has the three hosts", lambda: sorted(
                ((datacenter.get("computecluster", "e2e-ha") or {}).get("status") or {}).get("hosts") or []) ==
                sorted(s.names), timeout=60)  # fmt: skip
            for name in s.names:
                patch = {"spec": {"powerManagement": {"redfish": {"endpoint": url, "systemId": name}}}}
                datacenter.cp.kubectl("patch", "host", name, "--type=merge", "-p", json.dumps(patch))
            for name in s.names:
                wait_until(f"host {name} power On", lambda n=name: (
                    ((datacenter.get("host", n) or {}).get("status") or {}).get("power") or {}).get("state") == "On",
                    timeout=60)  # fmt: skip
            yield s
        finally:
            datacenter.cp.kubectl("delete", "computecluster", "e2e-ha", "--ignore-not-found", check=False)
            rig.stop_redfish(state, s.prefix)


def health(site: Site, host: str) -> dict[str, object]:
    return dict(((site.dc.get("host", host) or {}).get("status") or {}).get("ha") or {})


def system(site: Site, host: str) -> sushy.resources.system.system.System:
    return sushy.Sushy(rig.redfish_url(site.state) + "/redfish/v1/").get_system(f"/redfish/v1/Systems/{host}")


def test_a_host_that_loses_power_has_its_vms_restarted_elsewhere_exactly_once(site: Site) -> None:
    dc = site.dc
    dc.apply(site.vm("ha-web", SHARED_POOL))
    before = dc.wait_ready("ha-web", timeout=180)
    victim, domain = before["status"]["host"], before["status"]["domainName"]
    wait_counting(site, victim, domain)
    marker = before["metadata"]["annotations"]["e2e/marker"]

    started = time.monotonic()
    system(site, victim).reset_system(sushy.RESET_FORCE_OFF)  # a power loss: libvirtd and QEMUs of that host die
    wait_until("the guest gone with its host", lambda: qemu_processes(domain) == 0, timeout=30)

    def elsewhere() -> dict[str, object] | None:
        vm = dc.vm("ha-web")
        status = (vm or {}).get("status") or {}
        return vm if status.get("host") not in (None, victim) and status.get("phase") == "Running" else None

    moved: dict[str, object] = wait_until("ha-web running on another host", elsewhere, timeout=180)
    took = time.monotonic() - started
    print(f"power-off to Running elsewhere: {took:.1f}s")
    target = moved["status"]["host"]  # type: ignore[index]
    assert health(site, victim).get("state") == "Fenced", health(site, victim)
    for _ in range(10):  # exactly one copy, and it stays one
        assert site.running_on(domain) == [target] and qemu_processes(domain) == 1
        time.sleep(0.5)
    wait_until("the disk's data read on the new host",
               lambda: f"VDC-DISK=VDC-DATA={marker}" in site.console(target, domain), timeout=120)  # fmt: skip
    events = dc.cp.kubectl("get", "events", "-n", dc.namespace, "--field-selector",
                           "involvedObject.name=ha-web", "-o", "jsonpath={.items[*].reason}")  # fmt: skip
    assert "HaRestart" in events

    # The host comes back, with the old domain defined: powered on by the operator (`vdc power`, annotation).
    on = subprocess.run([str(rig.REPO / ".venv" / "bin" / "vdc"), "power", victim, "on"], env=dc.cp.env,
                        capture_output=True, text=True, timeout=180)  # fmt: skip
    assert on.returncode == 0, on.stderr
    assert "last reset: On by Annotation" in on.stdout and "Succeeded" in on.stdout, on.stdout
    back = wait_until(f"host {victim} Healthy again",
                      lambda: (h := health(site, victim)).get("state") == "Healthy" and h, timeout=240)  # fmt: skip
    assert domain in str(back.get("staleDomainsRemoved")), back
    wait_until(f"host {victim} Ready", lambda: (dc.condition(dc.get("host", victim), "Ready") or {})
               .get("status") == "True", timeout=60)  # fmt: skip
    assert site.defined_on(domain) == [target] and site.running_on(domain) == [target]
    assert qemu_processes(domain) == 1


def test_a_partitioned_host_whose_power_is_on_keeps_its_vms(site: Site) -> None:
    dc = site.dc
    dc.apply(site.vm("ha-part", SHARED_POOL))
    vm = dc.wait_ready("ha-part", timeout=180)
    host, domain = vm["status"]["host"], vm["status"]["domainName"]
    libvirtd = site.libvirtd_pid(host)
    os.kill(libvirtd, signal.SIGSTOP)  # the operator's path to the host is gone; the host and its guests live
    try:
        wait_until(f"host {host} Suspect", lambda: health(site, host).get("state") == "Suspect", timeout=120)
        wait_until("the heartbeat seen going on", lambda: "heartbeat goes on" in str(health(site, host).get("message")),
                   timeout=30)  # fmt: skip
        time.sleep(20)  # longer than a heartbeat takes to be stale, and than a restart would take
        assert health(site, host).get("state") == "Suspect", health(site, host)
        assert (dc.vm("ha-part") or {})["status"]["host"] == host
        assert qemu_processes(domain) == 1
    finally:
        os.kill(libvirtd, signal.SIGCONT)
    wait_until(f"host {host} Healthy", lambda: health(site, host).get("state") == "Healthy", timeout=120)
    assert site.running_on(domain) == [host] and qemu_processes(domain) == 1


def test_without_power_management_a_dead_hosts_vms_stay_unknown_not_doubled(site: Site) -> None:
    dc = site.dc
    dc.apply(site.vm("ha-nofence", SHARED_POOL))
    vm = dc.wait_ready("ha-nofence", timeout=180)
    host, domain = vm["status"]["host"], vm["status"]["domainName"]
    endpoint = dc.get("host", host)["spec"]["powerManagement"]  # type: ignore[index]
    dc.cp.kubectl("patch", "host", host, "--type=json", "-p", '[{"op":"remove","path":"/spec/powerManagement"}]')
    try:
        wait_until(f"host {host} without power status",
                   lambda: "power" not in ((dc.get("host", host) or {}).get("status") or {}), timeout=60)  # fmt: skip
        site.power_off(host)  # nobody can tell the operator it is off
        failed = wait_until(f"host {host} Failed", lambda: (h := health(site, host)).get("state") == "Failed" and h,
                            timeout=180)  # fmt: skip
        assert "no spec.powerManagement" in str(failed["message"])
        unknown = wait_until("ha-nofence Unknown, saying why", lambda: (v := dc.vm("ha-nofence")) and
                             "powerManagement" in str(v["status"].get("conditions")) and v, timeout=60)  # fmt: skip
        assert unknown["status"]["host"] == host and unknown["status"]["phase"] == "Unknown"
        time.sleep(10)
        assert (dc.vm("ha-nofence") or {})["status"]["host"] == host  # not restarted elsewhere
        assert qemu_processes(domain) == 0 and site.running_on(domain) == []
    finally:
        rig.start_libvirt_hosts(site.state, 3, site.prefix)  # the host comes back
    try:
        wait_until("ha-nofence running again on its host", lambda: (v := dc.vm("ha-nofence")) and
                   v["status"].get("phase") == "Running" and v["status"].get("host") == host, timeout=180)  # fmt: skip
        assert site.running_on(domain) == [host] and qemu_processes(domain) == 1
    finally:
        patch = {"spec": {"powerManagement": endpoint}}
        dc.cp.kubectl("patch", "host", host, "--type=merge", "-p", json.dumps(patch))


def test_a_hung_host_is_fenced_by_power_off_and_its_vms_restart_elsewhere(site: Site) -> None:
    dc = site.dc
    dc.apply(site.vm("ha-hung", SHARED_POOL))
    vm = dc.wait_ready("ha-hung", timeout=180)
    host, domain = vm["status"]["host"], vm["status"]["domainName"]
    wait_counting(site, host, domain)
    site.signal_host(host, signal.SIGSTOP)  # the host hangs: libvirtd, QEMUs and heartbeat; its power stays On
    started = time.monotonic()
    try:
        moved = wait_until("ha-hung running on another host", lambda: (v := dc.vm("ha-hung")) and
                           v["status"].get("host") not in (None, host) and v["status"].get("phase") == "Running" and v,
                           timeout=240)  # fmt: skip
    finally:
        site.signal_host(host, signal.SIGCONT)  # whatever is left of it (HA's ForceOff killed it)
    print(f"hang to Running elsewhere: {time.monotonic() - started:.1f}s")
    power = ((dc.get("host", host) or {}).get("status") or {}).get("power") or {}
    assert power.get("lastAction", {}).get("reason") == "Fencing", power
    assert power.get("lastAction", {}).get("action") == "ForceOff"
    assert health(site, host).get("state") == "Fenced"
    target = moved["status"]["host"]
    assert site.running_on(domain) == [target] and qemu_processes(domain) == 1
    events = dc.cp.kubectl("get", "events", "--all-namespaces", "--field-selector",
                           f"involvedObject.name={host}", "-o", "jsonpath={.items[*].reason}")  # fmt: skip
    assert "HostFencing" in events
    system(site, host).reset_system(sushy.RESET_ON)
    wait_until(f"host {host} Healthy again", lambda: health(site, host).get("state") == "Healthy", timeout=240)
    assert site.defined_on(domain) == [target] and qemu_processes(domain) == 1


def _placed_after(site: Site, offset: int, names: list[str]) -> list[str]:
    """The order in which HA placed the VMs of ``names`` on other hosts (the operator's log after ``offset``)."""
    text = site.dc.operator.log.read_bytes()[offset:].decode(errors="replace")
    order = [m.group(1) for m in re.finditer(rf"vm {site.dc.namespace}/([\w-]+): HA restart placed on", text)]
    return [n for n in order if n in names]


def test_restarts_follow_priority_and_order_and_keep_the_vms_addresses(site: Site) -> None:
    dc = site.dc
    try:
        _restarts_in_order(site)
    finally:  # unplaced VMs are not the site's to remove: they would be placed on a later module's hosts
        dc.cp.kubectl("delete", "virtualmachine", "ha-batch", "ha-app", "ha-db", "-n", dc.namespace,
                      "--ignore-not-found", "--timeout=120s", check=False)  # fmt: skip
        dc.cp.kubectl("delete", "virtualswitch", "e2e-ha-lan", "--ignore-not-found", "--timeout=60s", check=False)


def _restarts_in_order(site: Site) -> None:
    dc = site.dc
    site.clear_vms()
    victim, *others = site.names
    # A subnet no example uses (the examples stay applied for the session, on every host).
    switch = {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualSwitch", "metadata": {"name": "e2e-ha-lan"},
              "spec": {"mode": "nat", "subnet": {"cidr": "10.116.0.0/24"},
                       "hostSelector": {"matchLabels": {"vdc.dev/driver": DRIVER}}}}  # fmt: skip
    dc.apply(switch)
    nic = [{"name": "eth0", "switch": "e2e-ha-lan"}]
    wanted = {  # name -> availability
        "ha-batch": {"restartPriority": "Low"},
        "ha-app": {"restartPriority": "Medium", "restartAfter": ["ha-db"]},
        "ha-db": {"restartPriority": "Highest"},
    }
    try:
        for host in others:  # everything lands on the victim
            dc.cp.kubectl("patch", "host", host, "--type=merge", "-p", '{"spec":{"maintenance":true}}')
        for name, availability in wanted.items():
            dc.apply(site.vm(name, SHARED_POOL, availability=availability, interfaces=nic))
        before = {name: dc.wait_ready(name, timeout=180) for name in wanted}
    finally:
        for host in others:
            dc.cp.kubectl("patch", "host", host, "--type=merge", "-p", '{"spec":{"maintenance":false}}')
    assert {b["status"]["host"] for b in before.values()} == {victim}
    addresses = {n: b["status"]["interfaces"][0]["ipAddresses"] for n, b in before.items()}
    assert all(addresses.values()), addresses

    offset = dc.operator.log.stat().st_size
    system(site, victim).reset_system(sushy.RESET_FORCE_OFF)

    def all_elsewhere() -> dict[str, dict[str, object]] | None:
        now = {n: dc.vm(n) or {} for n in wanted}
        done = all((v.get("status") or {}).get("phase") == "Running" and v["status"].get("host") != victim
                   for v in now.values())  # fmt: skip
        return now if done else None

    after = wait_until("the three VMs running elsewhere", all_elsewhere, timeout=240)
    for name, vm in after.items():
        domain = vm["status"]["domainName"]  # type: ignore[index]
        assert qemu_processes(domain) == 1 and len(site.running_on(domain)) == 1, name
        assert vm["status"]["interfaces"][0]["ipAddresses"] == addresses[name], name  # type: ignore[index]
    order = _placed_after(site, offset, list(wanted))
    assert order == ["ha-db", "ha-app", "ha-batch"], order  # Highest first; ha-app once ha-db runs; Low last
    db_running = parse_time(after["ha-db"]["status"]["bootTime"])  # type: ignore[index]
    assert parse_time(after["ha-app"]["status"]["bootTime"]) >= db_running  # type: ignore[index]
    system(site, victim).reset_system(sushy.RESET_ON)
    wait_until(f"host {victim} Healthy again", lambda: health(site, victim).get("state") == "Healthy", timeout=240)


def test_with_disk_leases_an_unfenced_failed_hosts_vm_restarts_but_never_runs_twice(site: Site) -> None:
    dc = site.dc
    lease = {"spec": {"ha": {"diskLeases": True}}}
    dc.cp.kubectl("patch", "computecluster", "e2e-ha", "--type=merge", "-p", json.dumps(lease))
    dc.apply(site.vm("ha-lease", SHARED_POOL))
    vm = dc.wait_ready("ha-lease", timeout=180)
    host, domain = vm["status"]["host"], vm["status"]["domainName"]
    wait_counting(site, host, domain)
    old_qemu = subprocess.run(["pgrep", "-f", f"guest={domain},"], capture_output=True, text=True).stdout.split()
    assert len(old_qemu) == 1
    endpoint = dc.get("host", host)["spec"]["powerManagement"]  # type: ignore[index]
    dc.cp.kubectl("patch", "host", host, "--type=json", "-p", '[{"op":"remove","path":"/spec/powerManagement"}]')
    wait_until(f"host {host} without power status",
               lambda: "power" not in ((dc.get("host", host) or {}).get("status") or {}), timeout=60)  # fmt: skip
    # The host hangs but its guest runs on (it holds its disk's lease): libvirtd, virtlockd, the heartbeat stop.
    site.signal_host(host, signal.SIGSTOP, spare=("qemu-system-x86",))
    try:
        wait_until(f"host {host} Failed", lambda: health(site, host).get("state") == "Failed", timeout=180)
        moved = wait_until("ha-lease placed on another host", lambda: (v := dc.vm("ha-lease")) and
                           v["status"].get("host") not in (None, host) and v, timeout=120)  # fmt: skip
        assert "leased" in str(moved["status"].get("conditions")) or moved["status"].get("phase") != "Running"
        others = [h for h in site.names if h != host]  # the hung host's libvirtd cannot be asked
        for _ in range(20):  # the new copy cannot open the disk the old one holds: never two running
            assert Path(f"/proc/{old_qemu[0]}").exists()  # the old copy runs on
            assert not [h for h in others if domain in site.virsh(h, "list", "--name", "--state-running",
                                                                  check=False).split()]  # fmt: skip
            assert (dc.vm("ha-lease") or {})["status"].get("phase") != "Running"
            time.sleep(0.5)
    finally:
        site.signal_host(host, signal.SIGCONT)
        dc.cp.kubectl("patch", "host", host, "--type=merge", "-p", json.dumps({"spec": {"powerManagement": endpoint}}))
        dc.cp.kubectl("patch", "computecluster", "e2e-ha", "--type=merge", "-p", '{"spec":{"ha":{"diskLeases":false}}}')
    # The host answers again: its stale copy is removed, and only then does the new one start.
    wait_until(f"host {host} Healthy", lambda: health(site, host).get("state") == "Healthy", timeout=180)
    running = wait_until("ha-lease running on its new host", lambda: (v := dc.vm("ha-lease")) and
                         v["status"].get("phase") == "Running" and v, timeout=180)  # fmt: skip
    assert running["status"]["host"] != host
    assert site.running_on(domain) == [running["status"]["host"]] and qemu_processes(domain) == 1
