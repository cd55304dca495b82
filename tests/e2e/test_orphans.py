"""Orphans: a VM the API server forgot (as after an etcd restore from an older backup) leaves its domain
and volume on the host. They are counted and named in the Host's status, an Event and a metric, left
alone until an admin asks, and then removed by `vdc gc --host` — and nothing else is: not a live VM's
domain or volume, not volumes we did not name, not appliance images or uploads.

Runs on a libvirt test-driver Host (instant fake domains, in-memory pools)."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

import rig
from conftest import Datacenter, wait_until
from rig import sample

VDC = str(rig.REPO / ".venv" / "bin" / "vdc")
SUFFIX = secrets.token_hex(3)
NS = f"e2e-orphans-{SUFFIX}"
POOL = f"orphans-{SUFFIX}"
LIBVIRT_POOL = f"vdc-{POOL}"
ANNOTATION = "vdc.dev/remove-orphans"


@pytest.fixture(scope="module")
def host(datacenter: Datacenter) -> Iterator[str]:
    """The test-driver Host of the first rig host, with a pool of this test's own on it."""
    dc = datacenter
    name = f"{dc.hosts.hosts[0].name}-test"
    dc.cp.kubectl("create", "namespace", NS)
    dc.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "StoragePool", "metadata": {"name": POOL},
        "spec": {"type": "dir", "target": {"path": f"/var/lib/libvirt/vdc-pools/{POOL}"},
                 "hostSelector": {"matchLabels": {"vdc.dev/driver": "test"}}},
    })  # fmt: skip
    wait_until(f"pool {POOL} Ready",
               lambda: (dc.condition(dc.get("storagepool", POOL), "Ready") or {}).get("status") == "True",
               timeout=60)  # fmt: skip
    try:
        yield name
    finally:
        dc.cp.kubectl("delete", "vm", "--all", "-n", NS, "--timeout=60s", check=False)
        # What this test made by hand, and the orphan should the test have failed before removing it.
        dc.virsh(name, "destroy", f"{NS}_ghost", driver="test", check=False)
        dc.virsh(name, "undefine", f"{NS}_ghost", driver="test", check=False)
        for volume in ("handmade.qcow2", f"appliance_{NS}_tiny_1a2b3c4d_disk1.qcow2", f"{NS}_tiny_upload.ova",
                       f"{NS}_ghost_data.qcow2"):  # fmt: skip
            dc.virsh(name, "vol-delete", volume, "--pool", LIBVIRT_POOL, driver="test", check=False)
        dc.cp.kubectl("delete", "storagepool", POOL, "--timeout=60s", check=False)
        dc.cp.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def vm(dc: Datacenter, name: str, host: str) -> dict[str, Any]:
    manifest = dc.vm_manifest(
        name,
        memory={"size": "64Mi"},
        host=host,
        hostSelector={"matchLabels": {"vdc.dev/driver": "test"}},
        disks=[{"name": "data", "source": {"blank": {"pool": POOL, "size": "16Mi"}}}],
    )
    manifest["metadata"]["namespace"] = NS
    return manifest


def orphans(dc: Datacenter, host: str) -> dict[str, Any]:
    return ((dc.get("host", host) or {}).get("status") or {}).get("orphans") or {}


def domains(dc: Datacenter, host: str) -> list[str]:
    return dc.virsh(host, "list", "--all", "--name", driver="test").split()


def volumes(dc: Datacenter, host: str) -> str:
    return dc.virsh(host, "vol-list", LIBVIRT_POOL, driver="test")


def metrics_say(dc: Datacenter, host: str, domains: float, volumes: float) -> bool:
    text = rig.scrape(dc.operator.metrics_port)
    got = [sample(text, "vdc_host_orphans", host=host, kind=kind) for kind in ("domain", "volume")]
    return got == [domains, volumes]


def events(dc: Datacenter, host: str, reason: str) -> list[dict[str, Any]]:
    selector = f"--field-selector=involvedObject.name={host},reason={reason}"
    found: dict[str, Any] = json.loads(dc.cp.kubectl("get", "events", "-n", "default", "-o", "json", selector))
    return list(found["items"])


def the_vm(dc: Datacenter, name: str) -> dict[str, Any] | None:
    return dc.get("virtualmachine", name, NS)


def ready(dc: Datacenter, name: str) -> bool:
    return (dc.condition(the_vm(dc, name), "Ready") or {}).get("status") == "True"


def gc(dc: Datacenter, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([VDC, "gc", *args], env=dc.cp.env, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise AssertionError(f"vdc gc {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                             f"{result.stderr}\n{dc.operator.tail()}")  # fmt: skip
    return result


def test_orphans_are_named_counted_and_removed_only_when_asked(datacenter: Datacenter, host: str) -> None:
    dc = datacenter
    for name in ("keeper", "ghost"):
        dc.apply(vm(dc, name, host))
    for name in ("keeper", "ghost"):
        wait_until(f"vm {name} Ready", lambda n=name: ready(dc, n), timeout=120)
    ghost_uid = (the_vm(dc, "ghost") or {})["metadata"]["uid"]
    ghost_domain, ghost_volume = f"{NS}_ghost", f"{NS}_ghost_data.qcow2"
    keeper_domain, keeper_volume = f"{NS}_keeper", f"{NS}_keeper_data.qcow2"
    # Look-alikes that are not a VM's volumes: never counted, never removed.
    lookalikes = ["handmade.qcow2", f"appliance_{NS}_tiny_1a2b3c4d_disk1.qcow2", f"{NS}_tiny_upload.ova"]
    for volume in lookalikes:
        dc.virsh(host, "vol-create-as", LIBVIRT_POOL, volume, "1M", driver="test")

    # The API server forgets "ghost" while the operator is away: no finalizer runs, nothing is cleaned up.
    dc.operator.stop()
    try:
        dc.cp.kubectl("patch", "vm", "ghost", "-n", NS, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
        dc.cp.kubectl("delete", "vm", "ghost", "-n", NS, "--timeout=30s")
    finally:
        dc.operator.start()
    assert the_vm(dc, "ghost") is None

    # Named and counted in the Host's status, with what they claim; nothing else is.
    found = wait_until(
        "the orphans in the Host's status",
        lambda: (o := orphans(dc, host)).get("domainCount") and o.get("volumeCount") and o,
        timeout=90,
    )
    assert [(d["name"], d["uuid"], d["owner"]) for d in found["domains"]] == [
        (ghost_domain, ghost_uid, {"namespace": NS, "name": "ghost", "uid": ghost_uid})
    ], found
    assert [(v["pool"], v["name"], v["owner"]) for v in found["volumes"]] == [
        (POOL, ghost_volume, {"namespace": NS, "name": "ghost"})
    ], found
    assert (found["domainCount"], found["volumeCount"]) == (1, 1)
    # ... in the metric ...
    wait_until("vdc_host_orphans 1 domain, 1 volume", lambda: metrics_say(dc, host, 1.0, 1.0), timeout=30)
    # ... and in a Warning Event naming them.
    found_events = events(dc, host, "OrphansFound")
    assert any(ghost_domain in e["message"] and ghost_volume in e["message"] and e["type"] == "Warning"
               for e in found_events), found_events  # fmt: skip

    # Nothing is removed unless asked: still there after another look, and after a dry run.
    dry = gc(dc, "--host", host, "--dry-run")
    assert ghost_domain in dry.stdout and ghost_volume in dry.stdout and "1 orphan domain(s)" in dry.stdout
    assert ghost_domain in domains(dc, host) and ghost_volume in volumes(dc, host)
    assert ANNOTATION not in ((dc.get("host", host) or {})["metadata"].get("annotations") or {})

    # Asked: `vdc gc` sets the annotation, waits for the operator and prints what it removed.
    done = gc(dc, "--host", host)
    assert f"removed domain {ghost_domain} ({ghost_uid})" in done.stdout, done.stdout
    assert f"removed volume {POOL}/{ghost_volume}" in done.stdout, done.stdout
    assert ghost_domain not in domains(dc, host)
    left = volumes(dc, host)
    assert ghost_volume not in left
    # The live VM and the look-alikes are untouched.
    assert keeper_domain in domains(dc, host) and keeper_volume in left
    assert all(v in left for v in lookalikes), left
    assert dc.virsh(host, "domstate", keeper_domain, driver="test").strip() == "running"
    assert ready(dc, "keeper")

    body = dc.get("host", host) or {}
    assert ANNOTATION not in (body["metadata"].get("annotations") or {})
    report = body["status"]["orphans"]["lastRemoval"]
    assert report["domains"] == [f"{ghost_domain} ({ghost_uid})"] and report["volumes"] == [f"{POOL}/{ghost_volume}"]
    assert (body["status"]["orphans"]["domainCount"], body["status"]["orphans"]["volumeCount"]) == (0, 0)
    wait_until("vdc_host_orphans back to 0", lambda: metrics_say(dc, host, 0.0, 0.0), timeout=30)
    removed = events(dc, host, "OrphansRemoved")
    assert any(ghost_domain in e["message"] for e in removed), removed
