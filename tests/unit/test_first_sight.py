"""No object the operator has seen stays status-less (``controllers.first_sight``): after a grace period
an object without status gets observedGeneration and Reconciling=True, written only if unchanged."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import kubernetes
import pytest

from vdc import handlers
from vdc.api.virtualmachine import VirtualMachine
from vdc.controllers import first_sight
from vdc.controllers.first_sight import FirstSight
from vdc.kube.cache import ObjectCache
from vdc.workqueue import WorkQueue


class RecordingWriter:
    """Stands in for KubeWriter.patch_status only: records what would be sent."""

    def __init__(self, fail: int | None = None) -> None:
        self.sent: list[tuple[str, dict[str, Any], bool]] = []
        self.fail = fail

    async def patch_status(
        self, info: Any, body: dict[str, Any], status: dict[str, Any], *, unchanged: bool = False
    ) -> dict[str, Any] | None:
        if self.fail is not None:
            raise kubernetes.client.ApiException(status=self.fail)
        self.sent.append((body["metadata"]["name"], status, unchanged))
        return status


def vm(name: str, **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 2, "resourceVersion": "7"}
    return {"metadata": meta, **extra}


def sight(writer: RecordingWriter, cache: ObjectCache) -> FirstSight:
    return FirstSight(writer, {"virtualmachines": (VirtualMachine.KIND, cache)})  # type: ignore[arg-type]


async def test_the_controller_gets_a_grace_period_to_write_first() -> None:
    cache, writer = ObjectCache(), RecordingWriter()
    cache.upsert(vm("a"))
    again = await sight(writer, cache).reconcile(("virtualmachines", ("ns", "a")))
    assert again is not None and 0 < again <= first_sight.GRACE_SECONDS
    assert writer.sent == []


async def test_a_status_less_object_gets_generation_and_reconciling_only_if_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(first_sight, "GRACE_SECONDS", 0.0)
    cache, writer = ObjectCache(), RecordingWriter()
    cache.upsert(vm("a"))
    assert await sight(writer, cache).reconcile(("virtualmachines", ("ns", "a"))) is None
    [(name, status, unchanged)] = writer.sent
    assert name == "a" and unchanged
    assert status["observedGeneration"] == 2
    [cond] = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Reconciling", "True", "Pending")
    assert cache.get(("ns", "a"))["status"]["observedGeneration"] == 2  # type: ignore[index]


async def test_an_object_with_a_status_or_gone_or_changed_meanwhile_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(first_sight, "GRACE_SECONDS", 0.0)
    cache, writer = ObjectCache(), RecordingWriter()
    cache.upsert(vm("done", status={"phase": "Running"}))
    assert await sight(writer, cache).reconcile(("virtualmachines", ("ns", "done"))) is None
    assert await sight(writer, cache).reconcile(("virtualmachines", ("ns", "gone"))) is None
    assert writer.sent == []
    cache.upsert(vm("raced"))
    conflicting = RecordingWriter(fail=409)  # its controller wrote first: the conditional write fails
    assert await sight(conflicting, cache).reconcile(("virtualmachines", ("ns", "raced"))) is None
    with pytest.raises(kubernetes.client.ApiException):
        await sight(RecordingWriter(fail=500), cache).reconcile(("virtualmachines", ("ns", "raced")))


async def test_an_object_seen_status_less_again_before_its_check_is_checked_once() -> None:
    cache, writer = ObjectCache(), RecordingWriter()
    checker, item = sight(writer, cache), ("virtualmachines", ("ns", "a"))
    cache.upsert(vm("a"))
    assert checker.sighted(item)  # created: its check is due after the grace
    assert not checker.sighted(item)  # its finalizer's watch event: the same check
    cache.upsert(vm("a", status={"phase": "Running"}))
    assert await checker.reconcile(item) is None  # its controller wrote first
    assert checker.sighted(item)  # seen without a status once more: a check of its own


async def test_the_operator_checks_a_vm_seen_status_less_twice_once_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(first_sight, "GRACE_SECONDS", 0.05)
    monkeypatch.setattr(handlers, "GRACE_SECONDS", 0.05)
    cache, writer = ObjectCache(), RecordingWriter()
    checker, checks = sight(writer, cache), []

    async def check(item: Any) -> float | None:
        checks.append(item)
        return await checker.reconcile(item)

    queue: WorkQueue[Any] = WorkQueue("first-sight-test", check, workers=1)
    queue.start()
    runtime = SimpleNamespace(first_sight=checker, first_sight_queue=queue)
    body = vm("a")
    cache.upsert(body)
    try:
        for kind in ("ADDED", "MODIFIED"):  # created, then its finalizer: still no status
            handlers.Runtime.sighted(runtime, "virtualmachines", ("ns", "a"), {"type": kind, "object": body}, body)  # type: ignore[arg-type, typeddict-item]
        assert checks == []  # not at once: its controller may well write first
        for _ in range(100):
            if writer.sent:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
    finally:
        await queue.stop()
    assert checks == [("virtualmachines", ("ns", "a"))]
    assert [name for name, _, _ in writer.sent] == ["a"]
