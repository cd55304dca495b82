"""The API floor of the VM scale benchmark: the operator's own API writes, replayed by a minimal client.

What a controller must write per VM, it cannot write faster than this: the same N creates (same
parallel calls), and for each VM as soon as its create returns, the writes the operator made for that
VM in the same run, in the order its VM worker makes them: the finalizer (the operator's own JSON patch
that tests the resourceVersion), then each status merge patch in order (the same diffs, so the same
sizes) and each Event (same reason and message), through the operator's own writer
(``vdc.kube.client.KubeWriter``) by as many workers as the operator's VM queue has. No libvirt, no
logic, and no watch of its own (the benchmark's, which also runs during the operator's rollout, runs
here too).

Used by ``bench/vm_scale.py`` after the operator's run (the operator stopped), in a namespace of its
own; the objects are left for the control plane's teardown (their finalizer is nobody's).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import kubernetes

from vdc.api.meta import KindInfo
from vdc.api.virtualmachine import VirtualMachine
from vdc.kube.client import KubeWriter

GROUP, VERSION = "vdc.dev", "v1alpha1"
FINALIZER = "vdc.dev/api-floor"
"""As long as the operator's own (``vdc.dev/finalizer``), but nobody removes it."""


@dataclass(frozen=True)
class EventWrite:
    reason: str
    message: str
    warning: bool


@dataclass(frozen=True)
class VmWrites:
    """What the operator wrote for one VM until it was Ready: the statuses it went through (each one a
    status patch: the diff from the one before) and its Events."""

    statuses: Sequence[dict[str, Any]]
    events: Sequence[EventWrite] = ()
    finalizer: bool = True


@dataclass
class FloorResult:
    seconds: float
    """From the first create to the last write of the last VM."""
    create_seconds: float
    writes: int
    """Writes after the creates (finalizers, status patches, Events)."""
    client_cpu_seconds: float
    """CPU of this process (all threads) over the run: what the minimal client itself costs."""
    errors: list[str] = field(default_factory=list)


async def _replay(
    writer: KubeWriter,
    info: KindInfo,
    custom: Any,
    namespace: str,
    manifests: Sequence[dict[str, Any]],
    plans: Sequence[VmWrites],
    create_workers: int,
    workers: int,
) -> tuple[float, int, list[str]]:
    created: asyncio.Queue[tuple[dict[str, Any], VmWrites] | None] = asyncio.Queue()
    errors: list[str] = []
    # Creates on threads of their own, as the benchmark's bulk create; the writes on the loop's default
    # executor, as the operator's writer makes them.
    creators = concurrent.futures.ThreadPoolExecutor(create_workers, thread_name_prefix="floor-create")
    loop = asyncio.get_running_loop()
    writes = 0

    async def create(manifest: dict[str, Any], plan: VmWrites) -> None:
        try:
            body = await loop.run_in_executor(
                creators, custom.create_namespaced_custom_object, GROUP, VERSION, namespace, info.plural, manifest
            )
        except kubernetes.client.ApiException as exc:
            errors.append(f"create {manifest['metadata']['name']}: {exc.status} {exc.reason}")
            return
        await created.put((body, plan))

    async def write(body: dict[str, Any], plan: VmWrites) -> int:
        made = 0
        current = body
        if plan.finalizer:  # as the operator's VM worker: first, before anything else for the VM
            added = await writer.add_finalizer(info, body, FINALIZER)
            if added is None:
                raise RuntimeError(f"the finalizer of {body['metadata']['name']} was refused")
            current = added
            made += 1
        for status in plan.statuses:
            if await writer.patch_status(info, current, status):
                made += 1
            current = {**current, "status": status}
        for event in plan.events:
            await writer.event(info, body, event.reason, event.message, warning=event.warning)
            made += 1
        return made

    async def worker() -> None:
        nonlocal writes
        while (item := await created.get()) is not None:
            try:
                made = await write(*item)  # not `writes += await …`: that reads `writes` before the await
                writes += made
            except kubernetes.client.ApiException as exc:
                errors.append(f"write {item[0]['metadata']['name']}: {exc.status} {exc.reason}")
            except RuntimeError as exc:
                errors.append(str(exc))

    t0 = time.monotonic()
    consumers = [asyncio.create_task(worker()) for _ in range(workers)]
    await asyncio.gather(*(create(m, p) for m, p in zip(manifests, plans, strict=True)))
    create_seconds = time.monotonic() - t0
    creators.shutdown()
    for _ in consumers:
        await created.put(None)
    await asyncio.gather(*consumers)
    await writer.close()
    return create_seconds, writes, errors


def run_api_floor(
    api: kubernetes.client.ApiClient,
    namespace: str,
    manifests: Sequence[dict[str, Any]],
    plans: Sequence[VmWrites],
    *,
    create_workers: int,
    workers: int,
    info: KindInfo = VirtualMachine.KIND,
) -> FloorResult:
    """Create ``manifests`` (objects of ``info``'s kind) in ``namespace`` (made here unless it exists) and
    replay ``plans`` (one per manifest)."""
    try:
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise
    custom = kubernetes.client.CustomObjectsApi(api)
    writer = KubeWriter(api)
    cpu0, t0 = time.process_time(), time.monotonic()
    create_seconds, writes, errors = asyncio.run(
        _replay(writer, info, custom, namespace, manifests, plans, create_workers, workers)
    )
    return FloorResult(time.monotonic() - t0, create_seconds, writes, time.process_time() - cpu0, errors)
