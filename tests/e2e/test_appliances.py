"""Appliances on real hosts: OVAs the tests build from the tiny guest, served over HTTP on loopback,
imported into base images, and VMs made from them that boot (their serial console shows the marker)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from appliances import VAPP_SYSTEMS, ApplianceSystem, build_ova_info, build_vapp, tampered_copy
from conftest import Datacenter, wait_until
from httpserve import FileServer
from vdc.ovf.environment import read_environment, read_environment_iso

POOL = "e2e-appliances"
SWITCH = "e2e-appl-lan"


def _ready(dc: Datacenter, kind: str, name: str, namespace: str | None = None) -> dict | None:
    body = dc.get(kind, name, namespace)
    return body if (dc.condition(body, "Ready") or {}).get("status") == "True" else None


@pytest.fixture(scope="module")
def site(datacenter: Datacenter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """A pool and a switch on the qemu hosts, and an HTTP server for the OVAs."""
    dc = datacenter
    dc.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "StoragePool", "metadata": {"name": POOL},
        "spec": {"type": "dir", "target": {"path": "/var/lib/libvirt/vdc-pools/appliances"},
                 "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}}},
    })  # fmt: skip
    dc.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualSwitch", "metadata": {"name": SWITCH},
        "spec": {"mode": "nat", "subnet": {"cidr": "10.127.0.0/24"},
                 "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}}},
    })  # fmt: skip
    wait_until("the pool Ready", lambda: _ready(dc, "storagepool", POOL), timeout=60)
    wait_until("the switch Ready", lambda: _ready(dc, "virtualswitch", SWITCH), timeout=60)
    with FileServer(tmp_path_factory.mktemp("www")) as server:
        yield server


def _publish(server: FileServer, source: Path, name: str) -> str:
    target = server.directory / name
    target.unlink(missing_ok=True)
    target.symlink_to(source)
    return server.url(name)


def _appliance(dc: Datacenter, name: str, url: str) -> None:
    dc.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "Appliance", "metadata": {"name": name, "namespace": dc.namespace},
        "spec": {"source": {"url": url}, "storagePool": POOL},
    })  # fmt: skip


def _vm(dc: Datacenter, name: str, appliance: str, spec: dict | None = None, **from_appliance: object) -> None:
    dc.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": dc.namespace},
        "spec": {"fromAppliance": {"name": appliance, "networkMapping": {"VM Network": SWITCH}, **from_appliance},
                 "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}}, "terminationGracePeriodSeconds": 3,
                 **(spec or {})},
    })  # fmt: skip


def _marker(dc: Datacenter, body: dict) -> str | None:
    text = dc.console_log(body["status"]["host"], body["status"]["domainName"])
    found = re.search(r"VDC-MARKER=(\S+)", text)
    return found.group(1) if found and "VDC-GUEST-READY" in text else None


def test_an_ova_over_http_imports_and_a_vm_from_it_boots_with_its_hardware_and_properties(
    datacenter: Datacenter, site: FileServer
) -> None:
    dc = datacenter
    built = build_ova_info(systems=(ApplianceSystem("tiny", cpus=2, memory_mib=160),))
    # The first download is cut half way: the import resumes it.
    site.drop_after(built.path.stat().st_size // 2)
    _appliance(dc, "tiny", _publish(site, built.path, "tiny.ova"))
    appliance = wait_until("the appliance Ready", lambda: _ready(dc, "appliance", "tiny", dc.namespace), timeout=240)
    status = appliance["status"]
    assert any(r.range for r in site.requests if r.path.endswith("tiny.ova")), "the download was not resumed"
    [system] = status["virtualSystems"]
    assert (system["cpus"], system["memory"]) == (2, "160Mi")
    assert system["disks"][0]["volume"] and system["nics"][0]["network"] == "VM Network"
    assert {p["key"] for p in status["properties"]} >= {"hostname", "build"}
    assert {c["file"] for c in status["checksums"]} >= {built.descriptor_name, built.disk_files["tiny"]}
    assert set(status["hosts"]) == {h.name for h in dc.hosts.hosts}  # every host of the pool has the image

    _vm(dc, "from-tiny", "tiny", properties={"hostname": "appliance-vm-1"})
    body = dc.wait_ready("from-tiny", timeout=240)
    spec = body["spec"]
    assert spec["cpu"]["count"] == 2 and spec["memory"]["size"] == "160Mi"  # the appliance's hardware
    assert len(spec["disks"]) == 2 and spec["disks"][1]["name"] == "ovf-env" and spec["disks"][0]["bootOrder"] == 1
    assert spec["interfaces"][0]["switch"] == SWITCH
    assert (
        wait_until("the guest's marker", lambda: _marker(dc, dc.vm("from-tiny") or body), timeout=180)
        == (built.markers["tiny"])
    )
    # The property value is on the OVF environment ISO the guest has as a CD-ROM.
    host = body["status"]["host"]
    env_disk = next(d for d in body["status"]["disks"] if d["name"] == "ovf-env")
    local = Path(dc.hosts.state) / "hosts" / host / "lib" / Path(env_disk["path"]).relative_to("/var/lib/libvirt")
    values = read_environment(read_environment_iso(local.read_bytes()))
    assert values["hostname"] == "appliance-vm-1" and values["build"] == "vdc-test"
    # The root disk is an overlay on the appliance's base image.
    root = next(d for d in body["status"]["disks"] if d["name"] != "ovf-env")
    xml = dc.virsh(host, "vol-dumpxml", "--pool", f"vdc-{POOL}", root["volume"])
    assert system["disks"][0]["volume"] in xml

    dc.cp.kubectl("delete", "vm", "from-tiny", "-n", dc.namespace, "--timeout=60s")
    dc.cp.kubectl("delete", "appliance", "tiny", "-n", dc.namespace, "--timeout=60s")
    for h in dc.hosts.hosts:
        assert system["disks"][0]["volume"] not in dc.virsh(h.name, "vol-list", f"vdc-{POOL}")


def test_a_tampered_ova_is_stalled_naming_the_file(datacenter: Datacenter, site: FileServer, tmp_path: Path) -> None:
    dc = datacenter
    built = build_ova_info(systems=(ApplianceSystem("tiny"),))
    bad = tmp_path / "bad.ova"
    member = tampered_copy(built.path, bad)
    _appliance(dc, "tampered", _publish(site, bad, "tampered.ova"))

    def stalled() -> dict | None:
        body = dc.get("appliance", "tampered", dc.namespace)
        return body if (dc.condition(body, "Stalled") or {}).get("status") == "True" else None

    body = wait_until("the tampered appliance Stalled", stalled, timeout=180)
    assert body["status"]["phase"] == "Failed"
    assert member in dc.condition(body, "Stalled")["message"]
    # A VM from it says why it cannot be made.
    _vm(dc, "from-tampered", "tampered")
    vm = dc.wait_vm("from-tampered", lambda b: (dc.condition(b, "Stalled") or {}).get("status") == "True", "Stalled")
    assert "tampered" in dc.condition(vm, "Stalled")["message"]
    dc.cp.kubectl("delete", "vm", "from-tampered", "-n", dc.namespace, "--timeout=60s")
    dc.cp.kubectl("delete", "appliance", "tampered", "-n", dc.namespace, "--timeout=60s")


def test_a_two_vm_vapp_starts_in_startup_section_order(datacenter: Datacenter, site: FileServer) -> None:
    dc = datacenter
    built = build_vapp(start_delay=8)
    _appliance(dc, "vapp", _publish(site, built.path, "vapp.ova"))
    appliance = wait_until("the vApp Ready", lambda: _ready(dc, "appliance", "vapp", dc.namespace), timeout=300)
    startup = {s["id"]: s for s in appliance["status"]["startup"]}
    assert startup["db"]["order"] < startup["web"]["order"] and startup["db"]["startDelay"] == 8
    # Both at once, the later one first: the start order decides, not the creation order.
    _vm(dc, "vapp-web", "vapp", virtualSystem="web")
    _vm(dc, "vapp-db", "vapp", virtualSystem="db")
    web = dc.wait_ready("vapp-web", timeout=300)
    db = dc.wait_ready("vapp-db", timeout=300)

    def booted(body: dict) -> float:
        return datetime.fromisoformat(body["status"]["bootTime"].replace("Z", "+00:00")).timestamp()

    assert booted(web) - booted(db) >= 8, (db["status"]["bootTime"], web["status"]["bootTime"])
    assert web["spec"]["cpu"]["count"] == VAPP_SYSTEMS[1].cpus
    for name in ("vapp-web", "vapp-db"):
        dc.cp.kubectl("delete", "vm", name, "-n", dc.namespace, "--timeout=60s")
    dc.cp.kubectl("delete", "appliance", "vapp", "-n", dc.namespace, "--timeout=60s")


def test_appliance_deletion_waits_for_its_vms(datacenter: Datacenter, site: FileServer) -> None:
    dc = datacenter
    built = build_ova_info(systems=(ApplianceSystem("tiny"),))
    _appliance(dc, "kept", _publish(site, built.path, "kept.ova"))
    wait_until("the appliance Ready", lambda: _ready(dc, "appliance", "kept", dc.namespace), timeout=240)
    _vm(dc, "uses-kept", "kept", {"runStrategy": "Halted"})
    dc.wait_ready("uses-kept", timeout=180)
    subprocess.run([*_kubectl(dc), "delete", "appliance", "kept", "-n", dc.namespace, "--wait=false"], check=True)
    wait_until("a DeletionBlocked event", lambda: "DeletionBlocked" in dc.cp.kubectl(
        "get", "events", "-n", dc.namespace, "--field-selector", "involvedObject.name=kept"), timeout=60)  # fmt: skip
    assert dc.get("appliance", "kept", dc.namespace) is not None
    dc.cp.kubectl("delete", "vm", "uses-kept", "-n", dc.namespace, "--timeout=60s")
    wait_until("the appliance gone", lambda: dc.get("appliance", "kept", dc.namespace) is None, timeout=90)


def test_a_vm_exported_to_an_ova_imports_again_with_the_same_hardware_and_boots(
    datacenter: Datacenter, site: FileServer, tmp_path: Path
) -> None:
    dc = datacenter
    built = build_ova_info(systems=(ApplianceSystem("tiny", cpus=2, memory_mib=144, marker="vdc-roundtrip"),))
    _appliance(dc, "original", _publish(site, built.path, "original.ova"))
    wait_until("the appliance Ready", lambda: _ready(dc, "appliance", "original", dc.namespace), timeout=240)
    _vm(dc, "to-export", "original", {"runStrategy": "Halted"})
    exported = dc.wait_ready("to-export", timeout=180)
    out = tmp_path / "exported.ova"
    vdc = str(Path(sys.executable).parent / "vdc")
    subprocess.run([vdc, "export", "to-export", "-n", dc.namespace, "-o", str(out)], env=dc.cp.env, check=True,
                   capture_output=True, text=True, timeout=300)  # fmt: skip

    _appliance(dc, "reimported", _publish(site, out, "exported.ova"))
    again = wait_until("the export Ready", lambda: _ready(dc, "appliance", "reimported", dc.namespace), timeout=240)
    [system] = again["status"]["virtualSystems"]
    assert (
        (system["cpus"], system["memory"])
        == (2, "144Mi")
        == (exported["spec"]["cpu"]["count"], exported["spec"]["memory"]["size"])
    )
    data_disks = [d for d in exported["spec"]["disks"] if "ovfEnv" not in d["source"]]
    assert len(system["disks"]) == len(data_disks)
    networks = {n["name"]: SWITCH for n in again["status"]["networks"]}
    _vm(dc, "reborn", "reimported", networkMapping=networks)
    reborn = dc.wait_ready("reborn", timeout=240)
    assert wait_until("the re-imported guest's marker", lambda: _marker(dc, dc.vm("reborn") or reborn),
                      timeout=180) == "vdc-roundtrip"  # fmt: skip
    for name in ("reborn", "to-export"):
        dc.cp.kubectl("delete", "vm", name, "-n", dc.namespace, "--timeout=60s")
    for name in ("reimported", "original"):
        dc.cp.kubectl("delete", "appliance", name, "-n", dc.namespace, "--timeout=60s")


def _kubectl(dc: Datacenter) -> list[str]:
    return [str(dc.cp.bin_dir / "kubectl"), "--kubeconfig", str(dc.cp.kubeconfig)]
