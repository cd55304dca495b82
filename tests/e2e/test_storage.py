"""StoragePools on real hosts and VM disks: volumes, copy-on-write clones, cloud-init, growth, deletion."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import Datacenter, wait_until
from vdc.cloudinit import read_seed_iso

POOL = "e2e-pool"
LIBVIRT_POOL = f"vdc-{POOL}"


def _pool_ready(dc: Datacenter) -> dict | None:
    body = dc.get("storagepool", POOL)
    return body if (dc.condition(body, "Ready") or {}).get("status") == "True" else None


@pytest.fixture(scope="module")
def pool(datacenter: Datacenter) -> dict:
    datacenter.apply({
        "apiVersion": "vdc.dev/v1alpha1", "kind": "StoragePool", "metadata": {"name": POOL},
        "spec": {"type": "dir", "target": {"path": "/var/lib/libvirt/vdc-pools/e2e"},
                 "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}},
                 # base.qcow2 is made by hand below (virsh): published for clones, as an admin would.
                 "publishedVolumes": [{"name": "base.qcow2"}]},
    })  # fmt: skip
    return wait_until("the pool Ready", lambda: _pool_ready(datacenter), timeout=60)


def _host_path(dc: Datacenter, host: str, path: str) -> Path:
    """A path inside a rig host's private /var/lib/libvirt, seen from the root namespace."""
    return dc.hosts.state / "hosts" / host / "lib" / Path(path).relative_to("/var/lib/libvirt")


def _qemu_img_info(dc: Datacenter, host: str, path: str) -> list[dict]:
    """`qemu-img info --backing-chain` run inside the host's mount namespace (backing paths are the host's)."""
    pids = (dc.hosts.state / "hosts" / host / "pids").read_text().split()
    libvirtd = pids[pids.index("libvirtd") + 1]
    out = subprocess.run(
        ["nsenter", "-t", libvirtd, "-m", "--", "qemu-img", "info", "--force-share", "--output=json",
         "--backing-chain", path],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    chain: list[dict] = json.loads(out)
    return chain


def test_dir_pool_runs_on_every_matching_host_and_is_repaired(datacenter: Datacenter, pool: dict) -> None:
    dc = datacenter
    hosts = {h["host"]: h for h in pool["status"]["hosts"]}
    assert set(hosts) == {h.name for h in dc.hosts.hosts}
    for entry in hosts.values():
        assert entry["state"] == "Running" and entry["capacity"].endswith("Mi") and entry["available"]
    victim = dc.hosts.hosts[0].name
    dc.virsh(victim, "pool-destroy", LIBVIRT_POOL)
    wait_until("the pool active again", lambda: "running" in dc.virsh(victim, "pool-info", LIBVIRT_POOL).split(),
               timeout=60)  # fmt: skip
    assert "yes" in dc.virsh(victim, "pool-info", LIBVIRT_POOL).split("Autostart:")[1].split()[0]


def test_vm_disks_blank_clone_seed_grow_and_delete(datacenter: Datacenter, pool: dict) -> None:
    dc = datacenter
    host = dc.hosts.hosts[0].name
    dc.virsh(host, "vol-create-as", LIBVIRT_POOL, "base.qcow2", "64M", "--format", "qcow2")

    def vm(size: str) -> dict:
        return dc.vm_manifest("disky", host=host, disks=[
            {"name": "data", "source": {"blank": {"pool": POOL, "size": size}}},
            {"name": "root", "source": {"clone": {"pool": POOL, "baseVolume": "base.qcow2"}},
             "deletionPolicy": "Retain"},
            {"name": "seed", "source": {"cloudInit": {"pool": POOL}}},
        ], cloudInit={"userData": "#cloud-config\nruncmd: [echo VDC-USERDATA-MARKER]\n"})  # fmt: skip

    dc.apply(vm("1Gi"))
    body = dc.wait_ready("disky")
    disks = {d["name"]: d for d in body["status"]["disks"]}
    assert disks["data"]["capacity"] == "1024Mi" and disks["data"]["pool"] == POOL
    chain = _qemu_img_info(dc, host, disks["root"]["path"])
    assert chain[0]["format"] == "qcow2"
    assert chain[0]["backing-filename"].endswith("/base.qcow2"), chain
    assert len(chain) == 2
    seed = read_seed_iso(_host_path(dc, host, disks["seed"]["path"]).read_bytes())
    assert b"VDC-USERDATA-MARKER" in seed["user-data"]
    assert body["metadata"]["uid"].encode() in seed["meta-data"]
    xml = dc.virsh(host, "dumpxml", body["status"]["domainName"])
    assert disks["data"]["path"] in xml and disks["seed"]["path"] in xml and "device='cdrom'" in xml

    # Growing the disk in the spec grows the volume, live.
    dc.apply(vm("2Gi"))
    dc.wait_vm("disky", lambda b: {d["name"]: d for d in b["status"]["disks"]}["data"]["capacity"] == "2048Mi",
               "data disk at 2Gi", timeout=60)  # fmt: skip
    info = _qemu_img_info(dc, host, disks["data"]["path"])[0]
    assert info["virtual-size"] == 2 * 1024**3

    # Deleting the VM deletes its Delete volumes and keeps the Retain one.
    dc.cp.kubectl("delete", "vm", "disky", "-n", dc.namespace, "--timeout=60s")
    volumes = dc.virsh(host, "vol-list", LIBVIRT_POOL)
    assert "e2e_disky_data.qcow2" not in volumes and "e2e_disky_seed.iso" not in volumes
    assert "e2e_disky_root.qcow2" in volumes

    # The pool cannot go while it holds that volume; once it is gone, it can (its directory stays).
    dc.cp.kubectl("delete", "storagepool", POOL, "--wait=false")
    wait_until("DeletionBlocked", lambda: "DeletionBlocked" in dc.cp.kubectl(
        "get", "events", "-A", "--field-selector", f"involvedObject.name={POOL}"), timeout=60)  # fmt: skip
    assert dc.get("storagepool", POOL) is not None
    dc.virsh(host, "vol-delete", "e2e_disky_root.qcow2", "--pool", LIBVIRT_POOL)
    dc.virsh(host, "vol-delete", "base.qcow2", "--pool", LIBVIRT_POOL)
    wait_until("the pool deleted", lambda: dc.get("storagepool", POOL) is None, timeout=60)
    assert _host_path(dc, host, "/var/lib/libvirt/vdc-pools/e2e").is_dir()


def test_vm_asking_for_a_pool_no_host_has_is_unschedulable_naming_it(datacenter: Datacenter) -> None:
    dc = datacenter
    dc.apply(dc.vm_manifest("poolless", disks=[{"name": "d", "source": {"blank": {"pool": "nowhere", "size": "1Gi"}}}]))
    body = dc.wait_vm("poolless", lambda b: (dc.condition(b, "Scheduled") or {}).get("status") == "False",
                      "Scheduled=False")  # fmt: skip
    assert "'nowhere'" in dc.condition(body, "Scheduled")["message"]
    dc.cp.kubectl("delete", "vm", "poolless", "-n", dc.namespace, "--timeout=60s")
