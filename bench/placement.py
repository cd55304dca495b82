"""Placement benchmark: the VM controller's scheduling step (ClusterView.candidates + scheduler.place) per VM.

Prints figures; asserts nothing. See bench/README.md ("placement") for what each figure means.

    .venv/bin/python bench/placement.py [--hosts 10,100,1000] [--pools 0,3] [--vms 300] [--json out.json]

No control plane, no libvirt: Host, StoragePool and VirtualSwitch bodies in the operator's own ObjectCaches,
every pool and switch Running/Active on every host (the most a placement reads). Per (hosts, pools):

1. N VMs placed one after another as the VM controller does: candidates for the VM, place(), then the
   reservation in the ledger (so each placement sees the ones before).
2. Baseline from the same run: place() alone, N times, on one prebuilt candidate list (the pure scheduler,
   no view), and the candidates step alone.

Figures are per placement (mean over N), in milliseconds. To measure other code with the same script:
``PYTHONPATH=<a checkout>/operator .venv/bin/python bench/placement.py``.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

from vdc.cluster.view import ClusterView
from vdc.kube.cache import ObjectCache, key_of
from vdc.scheduler.placement import PlacementRequest, place


def view_of(hosts: int, pools: int) -> ClusterView:
    host_cache, pool_cache, switch_cache = ObjectCache(), ObjectCache(), ObjectCache()
    names = [f"host-{i:04d}" for i in range(hosts)]
    for name in names:
        host_cache.upsert({
            "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"zone": name[-1]}},
            "spec": {"uri": "test:///default", "hostFiles": {"allowedPaths": ["/boot"]}},
            "status": {"allocatable": {"cpus": 208, "memory": "12Gi"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        })  # fmt: skip
    for i in range(pools):
        pool_cache.upsert({"metadata": {"name": f"pool-{i}", "uid": f"pool-{i}"}, "status": {"hosts": [
            {"host": name, "state": "Running", "available": "100Gi"} for name in names]}})  # fmt: skip
        switch_cache.upsert({"metadata": {"name": f"switch-{i}", "uid": f"switch-{i}"}, "status": {"hosts": [
            {"host": name, "state": "Active"} for name in names]}})  # fmt: skip
    return ClusterView(hosts=host_cache, vms=ObjectCache(), pools=pool_cache, switches=switch_cache)


def vm_body(n: int) -> dict[str, Any]:
    return {"metadata": {"name": f"vm-{n}", "namespace": "bench", "uid": str(uuid.uuid4())},
            "spec": {"cpu": {"count": 1}, "memory": {"size": "64Mi"}}}  # fmt: skip


REQUEST = PlacementRequest(cpus=1, memory=64 << 20, host_files=("/boot/vmlinuz",))


def connected(_host: str) -> bool:
    return True


def measure(hosts: int, pools: int, vms: int) -> dict[str, float]:
    view = view_of(hosts, pools)
    candidates_s = 0.0
    t0 = time.perf_counter()
    for n in range(vms):
        body = vm_body(n)
        view.vms.upsert(body)
        c0 = time.perf_counter()
        candidates = view.candidates(key_of(body), connected=connected)
        candidates_s += time.perf_counter() - c0
        chosen = place(REQUEST, candidates).host
        assert chosen is not None
        view.reserve(body, chosen)
    total = time.perf_counter() - t0
    prebuilt = view.candidates(None, connected=connected)
    t1 = time.perf_counter()
    for _ in range(vms):
        place(REQUEST, prebuilt)
    place_only = time.perf_counter() - t1
    per = 1000 / vms
    return {"hosts": hosts, "pools_and_switches": pools, "vms": vms, "placement_ms": total * per,
            "candidates_ms": candidates_s * per, "place_only_ms": place_only * per}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", default="10,100,1000", help="comma-separated host counts")
    p.add_argument("--pools", default="0,3", help="comma-separated counts of pools (and as many switches)")
    p.add_argument("--vms", type=int, default=300, help="placements per configuration")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = [measure(h, k, args.vms) for h in map(int, args.hosts.split(",")) for k in map(int, args.pools.split(","))]
    print(f"{'hosts':>6} {'pools+sw':>9} {'placement':>10} {'candidates':>11} {'place() only':>13}   ms per VM")
    for r in rows:
        print(f"{r['hosts']:>6} {r['pools_and_switches']:>9} {r['placement_ms']:>10.3f} {r['candidates_ms']:>11.3f}"
              f" {r['place_only_ms']:>13.3f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
