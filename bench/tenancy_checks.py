"""What tenancy adds to a VM reconcile, next to the placement decision the same reconcile makes.

Prints figures; asserts nothing about time. In-process and pure (no control plane, no libvirt): the
operator's object caches are filled with N VMs in T tenant namespaces (each with a ComputeQuota),
P pools, S switches and H hosts, and then, for every VM, the three tenancy decisions a reconcile makes
before it creates anything are timed — access (``TenancyView.check_vm``), host files
(``hosts_serving_files``) and quota (``quota_refusal``, a scan of the namespace's VMs) — against the
baseline of the same run: the scheduler's ``place`` over the same hosts for the same VM.

    .venv/bin/python bench/tenancy_checks.py [--vms 1000] [--tenants 10] [--hosts 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from vdc.api.host import HostFiles
from vdc.api.virtualmachine import VirtualMachine
from vdc.kube.cache import ObjectCache
from vdc.scheduler.placement import HostCandidate, PlacementRequest, place
from vdc.tenancy.view import TenancyView

TINY = "/var/lib/libvirt/boot/vdc-tiny"


def _meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{namespace}-{name}",
        "generation": 1,
        "resourceVersion": "7",
        **extra,
    }
    if namespace:
        meta["namespace"] = namespace
    return meta


def build(vms: int, tenants: int, hosts: int, pools: int = 4, switches: int = 4) -> tuple[TenancyView, list[Any]]:
    caches = {k: ObjectCache() for k in ("namespaces", "hosts", "pools", "switches", "appliances", "vms", "quotas")}
    for t in range(tenants):
        caches["namespaces"].upsert({"metadata": _meta(f"t{t}", labels={"team": f"t{t % 3}"})})
        hard = {"virtualMachines": vms, "vcpus": 4 * vms, "memory": "1Ti"}
        caches["quotas"].upsert({"metadata": _meta("q", f"t{t}"), "spec": {"hard": hard}})
    for h in range(hosts):
        spec = {"uri": "test:///default", "hostFiles": {"allowedPaths": [TINY]}}
        caches["hosts"].upsert({"metadata": _meta(f"h{h}"), "spec": spec})
    selector = {"from": "Selector", "selector": {"matchLabels": {"team": "t0"}}}
    for p in range(pools):
        caches["pools"].upsert({"metadata": _meta(f"p{p}"), "spec": {
            "type": "dir", "target": {"path": f"/pools/{p}"}, "allowedNamespaces": selector if p else {"from": "All"},
            "publishedVolumes": [{"name": "golden.qcow2"}]}})  # fmt: skip
    for s in range(switches):
        allowed = selector if s else {"from": "All"}
        spec = {"mode": "isolated", "subnet": {"cidr": f"10.{s}.0.0/16"}, "allowedNamespaces": allowed}
        caches["switches"].upsert({"metadata": _meta(f"s{s}"), "spec": spec})
    bodies = []
    for v in range(vms):
        ns = f"t{v % tenants}"
        body = {
            "metadata": _meta(f"vm{v}", ns),
            "spec": {
                "cpu": {"count": 1}, "memory": {"size": "128Mi"},
                "boot": {"kernel": {"kernel": f"{TINY}/vmlinuz", "initrd": f"{TINY}/initrd.img"}},
                "disks": [{"name": "root", "source": {"clone": {"pool": "p0", "baseVolume": "golden.qcow2"}}},
                          {"name": "data", "source": {"blank": {"pool": "p0", "size": "1Gi"}}}],
                "interfaces": [{"name": "nic0", "switch": "s0"}],
            },
            "status": {"host": f"h{v % hosts}"} if v % 2 else {},
        }  # fmt: skip
        caches["vms"].upsert(body)
        bodies.append(body)
    view = TenancyView(**caches)
    return view, bodies


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Best-of-rounds wall time of one call of ``fn``, in microseconds."""
    best = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best.append(time.perf_counter() - start)
    return min(best) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    view, bodies = build(args.vms, args.tenants, args.hosts)
    host_of: Callable[[dict[str, Any]], str | None] = lambda b: (b.get("status") or {}).get("host")  # noqa: E731
    candidates = [
        HostCandidate(name=f"h{h}", allocatable_cpus=10_000, allocatable_memory=1 << 50, switches=frozenset({"s0"}),
                      pools={"p0": 1 << 50}, host_files=HostFiles(allowed_paths=[TINY]))
        for h in range(args.hosts)
    ]  # fmt: skip
    figures: dict[str, list[float]] = {"access": [], "host files": [], "quota": [], "placement (baseline)": []}
    sample = bodies[:: max(1, len(bodies) // 200)]  # 200 VMs spread over the tenants
    for body in sample:
        vm = VirtualMachine.model_validate(body)
        ns = body["metadata"]["namespace"]
        paths = [f"{TINY}/vmlinuz", f"{TINY}/initrd.img"]
        request = PlacementRequest(cpus=1, memory=128 << 20, pool_bytes={"p0": 1 << 30}, switches=frozenset({"s0"}),
                                   host_files=tuple(paths), tenant=view.tenant(ns))  # fmt: skip
        figures["access"].append(timed(lambda vm=vm: view.check_vm(vm), args.rounds))
        figures["host files"].append(timed(lambda ns=ns, p=paths: view.hosts_serving_files(ns, p), args.rounds))
        figures["quota"].append(timed(lambda b=body: view.quota_refusal(b, host_of), args.rounds))
        figures["placement (baseline)"].append(timed(lambda r=request: place(r, candidates), args.rounds))
    base = statistics.median(figures["placement (baseline)"])
    print(f"tenancy checks per VM reconcile: {args.vms} VMs, {args.tenants} namespaces with a ComputeQuota each, "
          f"{args.hosts} hosts, 4 pools, 4 switches; median of {len(sample)} VMs, best of {args.rounds}")  # fmt: skip
    print(f"{'check':<22}{'median µs':>12}{'p95 µs':>10}{'x placement':>14}")
    total = 0.0
    for name, values in figures.items():
        median = statistics.median(values)
        p95 = sorted(values)[int(0.95 * (len(values) - 1))]
        total += median if name != "placement (baseline)" else 0
        print(f"{name:<22}{median:>12.1f}{p95:>10.1f}{median / base:>14.2f}")
    print(f"{'all tenancy checks':<22}{total:>12.1f}{'':>10}{total / base:>14.2f}")


if __name__ == "__main__":
    main()
