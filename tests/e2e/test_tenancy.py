"""Hostile tenants on the real datacenter: two tenant namespaces whose users hold only `vdc-edit` there
(client certificates of the test CA) try every route to what is not theirs: another namespace's
volume (attach, clone), host files (/etc/shadow, `..`, a symlink out of an allowed directory), a
switch or pool not granted to them, another namespace's appliance, and quota (one big VM, many at
once). Each is refused with a Stalled condition naming what, a Warning Event, and nothing on any
host; an allowed VM next to them runs."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import helmchart
from conftest import Datacenter, wait_until
from tenants import User, make_user

A, B, C = "e2e-tenant-a", "e2e-tenant-b", "e2e-tenant-c"
SHARED_POOL = "ten-shared"
A_POOL = "ten-a-only"
A_SWITCH = "ten-a-lan"
TINY = "/var/lib/libvirt/boot/vdc-tiny"
ROLE_PREFIX = "e2e-tenancy-"


@dataclass
class Tenants:
    dc: Datacenter
    users: dict[str, User]

    def apply(self, namespace: str, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.users[namespace].kubectl_result("apply", "-f", "-", input=json.dumps(doc))

    def vm(self, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
        doc = self.dc.vm_manifest(name, **spec)
        doc["metadata"]["namespace"] = namespace
        result = self.apply(namespace, doc)
        assert result.returncode == 0, result.stderr
        return doc

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.dc.get("virtualmachine", name, namespace)

    def condition(self, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
        return self.dc.condition(self.get(namespace, name), type_)

    def stalled(self, namespace: str, name: str, reason: str = "AccessDenied") -> str:
        """Wait for Stalled=True with ``reason``; its message."""

        def check() -> str | None:
            cond = self.condition(namespace, name, "Stalled") or {}
            return cond.get("message") if cond.get("status") == "True" and cond.get("reason") == reason else None

        try:
            message: str = wait_until(f"{namespace}/{name} Stalled ({reason})", check, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{json.dumps(self.get(namespace, name), indent=1)}\n"
                                 f"{self.dc.operator.tail()}") from None  # fmt: skip
        ready = self.condition(namespace, name, "Ready") or {}
        assert ready.get("status") == "False" and ready.get("reason") == reason
        return message

    def warning_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        out = self.dc.cp.kubectl("get", "events", "-n", namespace, "-o", "json", "--field-selector",
                                 f"involvedObject.name={name},type=Warning")  # fmt: skip
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def ready(self, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            body = self.get(namespace, name)
            return body if (self.dc.condition(body, "Ready") or {}).get("status") == "True" else None

        try:
            return wait_until(f"{namespace}/{name} Ready", check, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{json.dumps(self.get(namespace, name), indent=1)}\n"
                                 f"{self.dc.operator.tail()}") from None  # fmt: skip

    def nothing_on_any_host(self, namespace: str, name: str) -> None:
        """No domain and no volume of this VM on any rig host, through either driver."""
        domain = f"{namespace}_{name}"
        for h in self.dc.hosts.hosts:
            for driver in ("qemu", "test"):
                assert domain not in self.dc.virsh(h.name, "list", "--all", "--name", driver=driver).split()
            for pool in (SHARED_POOL, A_POOL):
                volumes = self.dc.virsh(h.name, "vol-list", f"vdc-{pool}", check=False)
                assert f"{domain}_" not in volumes, volumes


def _pool(name: str, path: str, **spec: Any) -> dict[str, Any]:
    qemu_hosts = {"matchLabels": {"vdc.dev/driver": "qemu"}}
    return {"apiVersion": "vdc.dev/v1alpha1", "kind": "StoragePool", "metadata": {"name": name},
            "spec": {"type": "dir", "target": {"path": path}, "hostSelector": qemu_hosts, **spec}}  # fmt: skip


@pytest.fixture(scope="module")
def tenants(datacenter: Datacenter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    dc = datacenter
    cp = dc.cp
    # The chart's vdc-edit, under a name of this test's own: the control plane is shared with the chart
    # tests, which install the role under its real name with Helm.
    edit = f"{ROLE_PREFIX}vdc-edit"
    rendered = helmchart.render(cp, {"userRoles": {"namePrefix": ROLE_PREFIX}})
    roles = [d for d in rendered if d["kind"] == "ClusterRole" and d["metadata"]["name"] == edit]
    assert roles, f"the chart renders no {edit} ClusterRole"
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": roles}))
    users = {}
    home = tmp_path_factory.mktemp("tenant-users")
    for ns in (A, B, C):
        helmchart.ensure_namespace(cp, ns, {"vdc.dev/tenant": ns})
        user = make_user(cp, f"{ns}-user", home)
        cp.kubectl("create", "rolebinding", "vdc-edit", "-n", ns, f"--clusterrole={edit}", f"--user={user.name}")
        users[ns] = user
    dc.apply(_pool(SHARED_POOL, "/var/lib/libvirt/vdc-pools/ten-shared"))
    only_a = {"from": "Selector", "selector": {"matchLabels": {"vdc.dev/tenant": A}}}
    dc.apply(_pool(A_POOL, "/var/lib/libvirt/vdc-pools/ten-a", allowedNamespaces=only_a))
    dc.apply({"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualSwitch", "metadata": {"name": A_SWITCH},
              "spec": {"mode": "isolated", "subnet": {"cidr": "10.97.0.0/24"},
                       "hostSelector": {"matchLabels": {"vdc.dev/driver": "qemu"}},
                       "allowedNamespaces": only_a}})  # fmt: skip
    for pool in (SHARED_POOL, A_POOL):
        wait_until(f"pool {pool} Ready",
                   lambda p=pool: (dc.condition(dc.get("storagepool", p), "Ready") or {}).get("status") == "True",
                   timeout=60)  # fmt: skip
    wait_until(f"switch {A_SWITCH} Ready",
               lambda: (dc.condition(dc.get("virtualswitch", A_SWITCH), "Ready") or {}).get("status") == "True",
               timeout=60)  # fmt: skip
    try:
        yield Tenants(dc, users)
    finally:
        for ns in (A, B, C):
            cp.kubectl("delete", "vm", "--all", "-n", ns, "--timeout=120s", check=False)
            cp.kubectl("delete", "appliance,computequota", "--all", "-n", ns, "--timeout=60s", check=False)
        cp.kubectl("delete", "virtualswitch", A_SWITCH, "--timeout=60s", check=False)
        cp.kubectl("delete", "storagepool", SHARED_POOL, A_POOL, "--timeout=60s", check=False)
        cp.kubectl("delete", "clusterrole", edit, check=False)


def test_tenant_users_hold_only_vdc_edit(tenants: Tenants) -> None:
    bob = tenants.users[B]
    assert bob.can_i("create", "virtualmachines.vdc.dev", B)
    assert not bob.can_i("get", "virtualmachines.vdc.dev", A)
    assert not bob.can_i("create", "storagepools.vdc.dev")
    assert not bob.can_i("create", "computequotas.vdc.dev", B)


def test_another_namespaces_volume_is_neither_attached_nor_cloned(tenants: Tenants) -> None:
    t = tenants
    t.vm(A, "owner", disks=[{"name": "data", "source": {"blank": {"pool": SHARED_POOL, "size": "64Mi"}}}])
    owner = t.ready(A, "owner")
    [data] = owner["status"]["disks"]
    assert data["volume"] == f"{A}_owner_data.qcow2"
    assert data["access"] == "Owned" and data["owner"] == f"{A}/owner ({owner['metadata']['uid']})"

    stolen = {"volume": {"pool": SHARED_POOL, "name": data["volume"]}}
    t.vm(B, "steal", disks=[{"name": "d", "source": stolen, "deletionPolicy": "Delete"}])
    t.vm(B, "cow", disks=[{"name": "d", "source": {"clone": {"pool": SHARED_POOL, "baseVolume": data["volume"]}}}])
    t.vm(B, "peek", disks=[{"name": "d", "source": stolen, "readOnly": True}])
    t.vm(B, "neighbour", disks=[{"name": "d", "source": {"blank": {"pool": SHARED_POOL, "size": "64Mi"}}}])
    for name in ("steal", "cow", "peek"):
        message = t.stalled(B, name)
        assert f"volume {data['volume']} in pool {SHARED_POOL} belongs to namespace {A}" in message, message
        assert any(e["reason"] == "AccessDenied" for e in t.warning_events(B, name))
    assert t.ready(B, "neighbour")["status"]["disks"][0]["access"] == "Owned"  # the allowed VM runs
    for name in ("steal", "cow", "peek"):
        t.nothing_on_any_host(B, name)

    # Deleting the refused VM, whose disk said deletionPolicy: Delete, leaves the other tenant's volume.
    t.dc.cp.kubectl("delete", "vm", "steal", "-n", B, "--timeout=60s")
    host = owner["status"]["host"]
    assert data["volume"] in t.dc.virsh(host, "vol-list", f"vdc-{SHARED_POOL}")
    assert t.ready(A, "owner")


def test_host_files_outside_the_declared_directories_are_refused(tenants: Tenants) -> None:
    t = tenants
    boot = {"kernel": {"kernel": f"{TINY}/vmlinuz", "initrd": "/etc/shadow", "cmdline": "console=ttyS0"}}
    t.vm(B, "shadow", boot=boot)
    message = t.stalled(B, "shadow")
    assert f"no Host lets namespace {B} boot from {TINY}/vmlinuz, /etc/shadow" in message, message
    t.nothing_on_any_host(B, "shadow")

    # `..` never gets past the API server.
    dotdot = t.dc.vm_manifest("dotdot", boot={"kernel": {"kernel": f"{TINY}/../../../../etc/shadow"}})
    dotdot["metadata"]["namespace"] = B
    result = t.apply(B, dotdot)
    assert result.returncode != 0 and "spec.boot.kernel.kernel" in result.stderr, result.stderr

    # A symlink inside the allowed directory that points outside: the host's hook resolves it and refuses.
    for h in t.dc.hosts.hosts:
        link = t.dc.hosts.state / "hosts" / h.name / "lib" / "boot" / "vdc-tiny" / "evil-initrd"
        if not link.is_symlink():
            os.symlink("/etc/shadow", link)
    t.vm(B, "symlink", boot={"kernel": {"kernel": f"{TINY}/vmlinuz", "initrd": f"{TINY}/evil-initrd"}})
    message = t.stalled(B, "symlink", reason="HostFileRefused")
    assert "evil-initrd" in message and "/etc/shadow" in message, message
    assert any(e["reason"] == "HostFileRefused" for e in t.warning_events(B, "symlink"))
    t.nothing_on_any_host(B, "symlink")


def test_switches_and_pools_not_granted_are_refused(tenants: Tenants) -> None:
    t = tenants
    t.vm(B, "lan", interfaces=[{"name": "nic0", "switch": A_SWITCH}])
    t.vm(B, "private", disks=[{"name": "d", "source": {"blank": {"pool": A_POOL, "size": "64Mi"}}}])
    assert f"VirtualSwitch {A_SWITCH} does not allow namespace {B}" in t.stalled(B, "lan")
    assert f"StoragePool {A_POOL} does not allow namespace {B}" in t.stalled(B, "private")
    t.nothing_on_any_host(B, "lan")
    t.nothing_on_any_host(B, "private")
    # The namespace the admin granted them to uses both.
    t.vm(A, "granted", interfaces=[{"name": "nic0", "switch": A_SWITCH}],
         disks=[{"name": "d", "source": {"blank": {"pool": A_POOL, "size": "64Mi"}}}])  # fmt: skip
    body = t.ready(A, "granted")
    assert body["status"]["interfaces"][0]["ipAddresses"][0].startswith("10.97.0.")


def test_an_appliance_is_used_across_namespaces_only_once_shared(tenants: Tenants) -> None:
    t = tenants
    appliance = {"apiVersion": "vdc.dev/v1alpha1", "kind": "Appliance", "metadata": {"name": "catalog", "namespace": A},
                 "spec": {"source": {"url": "http://127.0.0.1:9/nothing.ova"}, "storagePool": SHARED_POOL}}  # fmt: skip
    assert t.apply(A, appliance).returncode == 0
    t.vm(B, "from-catalog", fromAppliance={"name": "catalog", "namespace": A})
    message = t.stalled(B, "from-catalog")
    assert f"Appliance {A}/catalog is not shared with namespace {B}" in message, message
    t.vm(B, "from-nowhere", fromAppliance={"name": "nowhere", "namespace": A})
    assert f"Appliance {A}/nowhere is not shared with namespace {B}" in t.stalled(B, "from-nowhere")

    appliance["spec"]["sharedWith"] = {"from": "Selector", "selector": {"matchLabels": {"vdc.dev/tenant": B}}}
    assert t.apply(A, appliance).returncode == 0
    wait_until("the shared appliance no longer refused",
               lambda: (t.condition(B, "from-catalog", "Ready") or {}).get("reason") not in (None, "AccessDenied"),
               timeout=60)  # fmt: skip
    t.nothing_on_any_host(B, "from-nowhere")


def _test_vm(t: Tenants, name: str, cpus: int = 1) -> dict[str, Any]:
    doc = t.dc.vm_manifest(name, cpu={"count": cpus}, hostSelector={"matchLabels": {"vdc.dev/driver": "test"}})
    doc["metadata"]["namespace"] = C
    return doc


def _placed(t: Tenants) -> list[str]:
    items = json.loads(t.dc.cp.kubectl("get", "vm", "-n", C, "-o", "json"))["items"]
    return sorted(i["metadata"]["name"] for i in items if (i.get("status") or {}).get("host"))


def test_quota_is_never_exceeded_by_one_vm_or_by_many_at_once(tenants: Tenants) -> None:
    t = tenants
    quota = {"apiVersion": "vdc.dev/v1alpha1", "kind": "ComputeQuota", "metadata": {"name": "q", "namespace": C},
             "spec": {"hard": {"virtualMachines": 3, "vcpus": 4, "memory": "1Gi"}}}  # fmt: skip
    assert t.users[C].kubectl_result("apply", "-f", "-", input=json.dumps(quota)).returncode != 0  # tenants can't
    t.dc.apply(quota)

    assert t.apply(C, _test_vm(t, "huge", cpus=5)).returncode == 0
    message = t.stalled(C, "huge", reason="QuotaExceeded")
    assert message == "vCPUs: 0 used + 5 requested > 4 allowed by ComputeQuota q", message
    scheduled = t.condition(C, "huge", "Scheduled") or {}
    assert scheduled.get("status") == "False" and scheduled.get("reason") == "QuotaExceeded"
    t.nothing_on_any_host(C, "huge")
    t.dc.cp.kubectl("delete", "vm", "huge", "-n", C, "--timeout=60s")

    many = [_test_vm(t, f"many-{i}") for i in range(6)]
    result = t.users[C].kubectl_result("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                                "items": many}))  # fmt: skip
    assert result.returncode == 0, result.stderr

    def settled() -> list[str] | None:
        items = json.loads(t.dc.cp.kubectl("get", "vm", "-n", C, "-o", "json"))["items"]
        ready = [i for i in items if (t.dc.condition(i, "Ready") or {}).get("status") == "True"]
        waiting = [i for i in items if (t.dc.condition(i, "Stalled") or {}).get("reason") == "QuotaExceeded"]
        return [i["metadata"]["name"] for i in ready] if len(ready) + len(waiting) == 6 else None

    try:
        running = wait_until("6 VMs either Ready or QuotaExceeded", settled, timeout=120)
    except AssertionError as exc:
        items = json.loads(t.dc.cp.kubectl("get", "vm", "-n", C, "-o", "json"))["items"]
        states = {i["metadata"]["name"]: (i.get("status") or {}).get("conditions") for i in items}
        raise AssertionError(f"{exc}\n{json.dumps(states, indent=1)}\n{t.dc.operator.tail()}") from None
    time.sleep(3)  # a late over-commit would show up here
    assert len(running) == 3 and _placed(t) == sorted(running)
    for name in {f"many-{i}" for i in range(6)} - set(running):
        t.nothing_on_any_host(C, name)
        assert "VMs: 3 used + 1 requested > 3 allowed by ComputeQuota q" in t.stalled(C, name, "QuotaExceeded")

    def used() -> dict[str, Any]:
        return dict(((t.dc.get("computequota", "q", C) or {}).get("status") or {}).get("used") or {})

    wait_until("the quota's status: 3 VMs, 3 vCPUs used",
               lambda: used().get("virtualMachines") == 3 and used().get("vcpus") == 3, timeout=30)  # fmt: skip

    # A freed slot goes to one of those waiting; still never more than the quota.
    t.dc.cp.kubectl("delete", "vm", running[0], "-n", C, "--timeout=60s")
    wait_until("a waiting VM placed in the freed slot", lambda: len(_placed(t)) == 3 and running[0] not in _placed(t),
               timeout=60)  # fmt: skip
    time.sleep(2)
    assert len(_placed(t)) == 3
