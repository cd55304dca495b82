"""Failures libvirt reports reach the VM's status and Events at once, and deleting such a VM leaves
nothing behind on its host (issue 12, items 2 and 3, for a domain libvirt cannot start)."""

from __future__ import annotations

import json
import subprocess

from conftest import Datacenter, wait_until

POOL = "e2e-failing"


def test_a_domain_that_cannot_start_says_why_and_is_removed_with_its_vm(datacenter: Datacenter) -> None:
    dc = datacenter
    host = dc.hosts.hosts[0].name
    dc.apply({"apiVersion": "vdc.dev/v1alpha1", "kind": "StoragePool", "metadata": {"name": POOL},
              "spec": {"type": "dir", "target": {"path": "/var/lib/libvirt/vdc-pools/failing"},
                       "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}},
                       "adoptionNamespaces": {"from": "All"}}})  # fmt: skip
    wait_until("the pool Ready", lambda: (dc.condition(dc.get("storagepool", POOL), "Ready") or {}).get("status")
               == "True", timeout=60)  # fmt: skip
    # A qcow2 whose backing file does not exist: libvirt defines the domain, QEMU cannot open the disk.
    broken = dc.hosts.state / "hosts" / host / "lib" / "vdc-pools" / "failing" / "broken.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "/nonexistent/base.raw", "-F", "raw",
                    str(broken), "64M"], check=True)  # fmt: skip
    dc.virsh(host, "pool-refresh", f"vdc-{POOL}")
    disk = {"name": "root", "source": {"volume": {"pool": POOL, "name": "broken.qcow2"}}}
    dc.apply(dc.vm_manifest("unstartable", host=host, disks=[disk]))
    try:
        body = dc.wait_vm("unstartable", lambda b: (dc.condition(b, "Ready") or {}).get("reason") == "LibvirtError",
                          "Ready=False, LibvirtError", timeout=90)  # fmt: skip
        ready = dc.condition(body, "Ready") or {}
        assert ready["status"] == "False" and ready["message"].startswith(f"host {host}: "), ready
        assert "\n" not in ready["message"] and "/nonexistent/base.raw" in ready["message"], ready
        assert (dc.condition(body, "Reconciling") or {}).get("status") == "True"
        assert body["status"]["host"] == host
        events = json.loads(dc.cp.kubectl("get", "events", "-n", dc.namespace, "-o", "json", "--field-selector",
                                          "involvedObject.name=unstartable,type=Warning"))["items"]  # fmt: skip
        assert any(e["reason"] == "LibvirtError" for e in events), events
        domain = body["status"]["domainName"]
        assert domain in dc.virsh(host, "list", "--all", "--name").split()
    finally:
        dc.cp.kubectl("delete", "vm", "unstartable", "-n", dc.namespace, "--timeout=60s")
    for h in dc.hosts.hosts:
        assert f"{dc.namespace}_unstartable" not in dc.virsh(h.name, "list", "--all", "--name").split()
    assert "broken.qcow2" in dc.virsh(host, "vol-list", f"vdc-{POOL}")  # adopted, so kept (Retain)
    dc.virsh(host, "vol-delete", "broken.qcow2", "--pool", f"vdc-{POOL}")
    dc.cp.kubectl("delete", "storagepool", POOL, "--timeout=60s")
