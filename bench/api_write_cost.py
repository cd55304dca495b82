#!/usr/bin/env python3
"""What one API write costs the client that makes it: CPU per write through the operator's own writer.

The VM scale benchmark's operator CPU per VM has four API writes in it (the finalizer, two status patches,
an Event) and the watch events they cause. This measures the first part on its own, on a real control
plane: the same objects status-patched through the operator's writer (``vdc.kube.client.KubeWriter``:
aiohttp on the event loop, orjson), then through the kubernetes client the operator used before (the
baseline, in the same run: its thread pool, its models), and Events through the operator's writer.
Each phase makes N writes, ``--parallel`` at a time, and reports this process's CPU per write (every
thread) and the wall time. Nothing here is the operator's logic: it is what a write costs the client.

    .venv/bin/python bench/api_write_cost.py                  # 1,000 objects, 16 writes at a time
    .venv/bin/python bench/api_write_cost.py --objects 2000 --rounds 3 --json out.json

The objects are of a throwaway kind of the benchmark's own (``WriteProbe``), in a namespace of its own,
on a control plane the script starts and stops (``--state DIR`` keeps its logs).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "operator"))

import kubernetes  # noqa: E402

import rig  # noqa: E402
from vdc.api.meta import GROUP, VERSION, KindInfo  # noqa: E402
from vdc.kube.client import KubeWriter  # noqa: E402

KIND = KindInfo(kind="WriteProbe", plural="writeprobes", short_names=(), scope="Namespaced")
NAMESPACE = "vdc-write-cost"


def status_of(round_: int, name: str) -> dict[str, Any]:
    """A status the size of a VM's first one (phase, host, a condition with a message)."""
    return {
        "phase": f"Round{round_}",
        "host": "host-1",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Provisioning",
                "message": f"placed {name} on host host-1 (round {round_})",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
    }


async def timed(n: int, parallel: int, write: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) for ``write(i)`` for i < n, ``parallel`` at a time."""
    limit = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        async with limit:
            await write(i)

    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.process_time() - cpu0, time.monotonic() - t0


async def measure(client: kubernetes.client.ApiClient, n: int, parallel: int, rounds: int) -> dict[str, Any]:
    writer = KubeWriter(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    threads = concurrent.futures.ThreadPoolExecutor(parallel, thread_name_prefix="kube-client")
    loop = asyncio.get_running_loop()
    bodies: list[dict[str, Any]] = [{} for _ in range(n)]
    phases: dict[str, list[tuple[float, float]]] = {"create": [], "writer": [], "kubernetes client": [], "event": []}

    async def create(i: int) -> None:
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND.kind,
            "metadata": {"name": f"probe-{i:05d}", "namespace": NAMESPACE},
            "spec": {"cpu": {"count": 1}, "memory": {"size": "64Mi"}, "runStrategy": "Always"},
        }
        bodies[i] = await writer.create(KIND, NAMESPACE, manifest)

    phases["create"].append(await timed(n, parallel, create))
    for r in range(rounds):  # alternated, so that a drift of the machine falls on both alike

        async def through_writer(i: int, r: int = 2 * r) -> None:
            await writer.write_status(KIND, bodies[i], status_of(r, bodies[i]["metadata"]["name"]))

        async def through_client(i: int, r: int = 2 * r + 1) -> None:
            name = bodies[i]["metadata"]["name"]
            await loop.run_in_executor(
                threads, custom.patch_namespaced_custom_object_status,
                GROUP, VERSION, NAMESPACE, KIND.plural, name, {"status": status_of(r, name)},
            )  # fmt: skip

        async def event(i: int) -> None:
            await writer.event(KIND, bodies[i], "Started", f"domain {bodies[i]['metadata']['name']} started on host-1")

        phases["writer"].append(await timed(n, parallel, through_writer))
        phases["kubernetes client"].append(await timed(n, parallel, through_client))
        phases["event"].append(await timed(n, parallel, event))
    threads.shutdown()
    await writer.close()
    return {
        name: {
            "cpu_ms_per_write": statistics.median(cpu for cpu, _ in runs) * 1000 / n,
            "cpu_ms_per_write_all": [cpu * 1000 / n for cpu, _ in runs],
            "wall_seconds": statistics.median(wall for _, wall in runs),
        }
        for name, runs in phases.items()
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=1000, help="objects, so writes per phase (default %(default)s)")
    p.add_argument("--parallel", type=int, default=16, help="writes at a time (default %(default)s: the VM workers)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each write phase (default %(default)s)")
    p.add_argument("--state", type=Path, default=None, help="state dir (default: a temp dir, removed after)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = p.parse_args()
    state = args.state.resolve() if args.state else Path(tempfile.mkdtemp(prefix="vdc-write-cost-"))
    cp = rig.start_controlplane(state)
    try:
        with rig.probe_kind(cp, KIND.kind, KIND.plural, NAMESPACE) as client:
            figures = asyncio.run(measure(client, args.objects, args.parallel, args.rounds))
    finally:
        rig.stop_controlplane(state)
        if args.state is None:
            shutil.rmtree(state, ignore_errors=True)
    print(f"{args.objects} objects, {args.parallel} writes at a time, {args.rounds} rounds (median shown)")
    print(f"{'writes':<40} {'CPU per write':>14} {'wall per phase':>15}")
    rows = [
        ("create (kubernetes client, on threads)", "create"),
        ("status patch (operator's writer)", "writer"),
        ("status patch (kubernetes client)", "kubernetes client"),
        ("Event (operator's writer)", "event"),
    ]
    for label, key in rows:
        f = figures[key]
        print(f"{label:<40} {f['cpu_ms_per_write']:>11.3f} ms {f['wall_seconds']:>13.2f} s")
    ratio = figures["kubernetes client"]["cpu_ms_per_write"] / figures["writer"]["cpu_ms_per_write"]
    print(f"kubernetes client / operator's writer, CPU per status patch: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"objects": args.objects, "parallel": args.parallel, **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
