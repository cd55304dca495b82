"""Tenancy over the operator's object caches (vdc.tenancy.view): appliances' refusals, adoption that
stays with one namespace, quota counting of placed VMs, host files, and parsed objects remembered per
version."""

from __future__ import annotations

from typing import Any

from vdc.api.appliance import Appliance
from vdc.api.virtualmachine import VirtualMachine
from vdc.kube.cache import ObjectCache
from vdc.tenancy.view import TenancyView

TINY = "/var/lib/vdc/boot"


def meta(name: str, namespace: str | None = None, version: str = "1", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "uid": f"{namespace}-{name}", "resourceVersion": version, **extra}
    if namespace:
        out["namespace"] = namespace
    return out


def view(**objects: list[dict[str, Any]]) -> TenancyView:
    caches = {k: ObjectCache() for k in ("namespaces", "hosts", "pools", "switches", "appliances", "vms", "quotas")}
    for kind, bodies in objects.items():
        for body in bodies:
            caches[kind].upsert(body)
    return TenancyView(**caches)


def pool(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": meta(name), "spec": {"type": "dir", "target": {"path": f"/p/{name}"}, **spec}}


def host(name: str, **files: Any) -> dict[str, Any]:
    return {"metadata": meta(name), "spec": {"uri": "test:///default", "hostFiles": files}}


def vm_body(name: str, namespace: str, placed: str | None = None, **spec: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"host": placed} if placed else {}
    return {"metadata": meta(name, namespace), "spec": {"memory": {"size": "256Mi"}, **spec}, "status": status}


def host_of(body: dict[str, Any]) -> str | None:
    return (body.get("status") or {}).get("host")


def appliance(namespace: str, **spec: Any) -> Appliance:
    return Appliance.model_validate({"metadata": meta("app", namespace), "spec": {"storagePool": "p", **spec}})


def test_an_appliance_may_not_read_host_files_volumes_or_pools_it_was_not_given() -> None:
    v = view(
        pools=[pool("p", allowedNamespaces={"from": "None"}), pool("ok")],
        hosts=[host("h1", allowedPaths=["/srv/ova"])],
    )
    refusals = v.appliance_refusals(appliance("b", source={"hostPath": {"host": "h1", "path": "/etc/shadow.ova"}}))
    assert refusals == [
        "spec.storagePool: StoragePool p does not allow namespace b (its spec.allowedNamespaces)",
        "spec.source.hostPath: Host h1: /etc/shadow.ova outside its spec.hostFiles.allowedPaths (/srv/ova)",
    ]
    stolen = appliance("b", storagePool="ok", source={"volume": {"pool": "ok", "name": "a_vm_root.qcow2"}})
    assert v.appliance_refusals(stolen) == [
        "spec.source.volume: volume a_vm_root.qcow2 in pool ok belongs to namespace a"
    ]
    own = appliance("a", storagePool="ok", source={"volume": {"pool": "ok", "name": "a_app_upload.ova"}})
    assert v.appliance_refusals(own) == []


def test_an_adopted_volume_stays_with_the_namespace_that_adopted_it() -> None:
    adopted = vm_body("old", "a", placed="h1")
    adopted["status"]["disks"] = [{"name": "d", "pool": "p", "volume": "legacy.img", "access": "Adopted"}]
    v = view(pools=[pool("p", adoptionNamespaces={"from": "All"})], vms=[adopted])
    disk = {"name": "d", "source": {"volume": {"pool": "p", "name": "legacy.img"}}}
    other = VirtualMachine.model_validate(vm_body("new", "b", disks=[disk]))
    same = VirtualMachine.model_validate(vm_body("new", "a", disks=[disk]))
    assert v.check_vm(other).refusals == ("disk d: volume legacy.img in pool p is already adopted by namespace a",)
    assert v.check_vm(same).volumes == {"d": "Adopted"}


def test_quota_counts_only_the_namespaces_placed_vms() -> None:
    quota = {"metadata": meta("q", "a"), "spec": {"hard": {"virtualMachines": 2, "memory": "512Mi"}}}
    v = view(
        quotas=[quota],
        vms=[vm_body("one", "a", placed="h1"), vm_body("waiting", "a"), vm_body("elsewhere", "b", placed="h1")],
    )
    assert v.usage("a", host_of).virtual_machines == 1
    assert v.quota_refusal(vm_body("two", "a"), host_of) is None
    big = vm_body("big", "a", memory={"size": "512Mi"})
    assert v.quota_refusal(big, host_of) == ("memory: 256Mi used + 512Mi requested > 512Mi allowed by ComputeQuota q")
    assert v.quota_refusal(vm_body("free", "b"), host_of) is None  # no quota in b


def test_hosts_serving_files_follow_each_hosts_declaration_and_namespaces() -> None:
    only_a = {"from": "Selector", "selector": {"matchLabels": {"tenant": "a"}}}
    v = view(
        namespaces=[{"metadata": meta("a", labels={"tenant": "a"})}, {"metadata": meta("b")}],
        hosts=[host("h2", allowedPaths=[TINY], allowedNamespaces=only_a), host("h3")],
    )
    assert v.any_host_serves_files("a", [f"{TINY}/vmlinuz"])  # h2, which selects namespace a
    assert not v.any_host_serves_files("b", [f"{TINY}/vmlinuz"])  # h2 does not select b; h3 declares nothing
    assert not v.any_host_serves_files("a", ["/etc/shadow"])
    assert v.host_file_dirs("h2") == (TINY,)
    v.hosts.upsert(host("h1", allowedPaths=[TINY]))
    assert v.any_host_serves_files("b", [f"{TINY}/vmlinuz"])  # h1 serves everyone


def test_a_changed_object_is_parsed_again() -> None:
    v = view(pools=[pool("p")])
    disk = {"name": "d", "source": {"blank": {"pool": "p", "size": "1Gi"}}}
    vm = VirtualMachine.model_validate(vm_body("x", "b", disks=[disk]))
    assert v.check_vm(vm).refusals == ()
    closed = pool("p", allowedNamespaces={"from": "None"})
    closed["metadata"]["resourceVersion"] = "2"
    v.pools.upsert(closed)
    assert v.check_vm(vm).refusals == ("disk d: StoragePool p does not allow namespace b (its spec.allowedNamespaces)",)
