"""The VM watch (``vdc.kube.watch.KindWatch``) on the real API server: a LIST, then every change once and in
order, across the watches the server ends (resumed from the last resourceVersion), and a resourceVersion too
old to resume from (410 Gone) healed by listing again, a deletion in the gap included. The kind is a
throwaway CRD of the test's own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

import rig
from vdc.kube import watch as watch_module
from vdc.kube.http import ApiHttp
from vdc.kube.watch import KindWatch

pytestmark = pytest.mark.integration

NAMESPACE = "vdc-watch-it"
OTHER_NAMESPACE = "vdc-watch-it-other"
PLURAL = "watchprobes"
GROUP, VERSION = "vdc.dev", "v1alpha1"


@pytest.fixture(scope="module")
def api(controlplane: rig.ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    with rig.probe_kind(controlplane, "WatchProbe", PLURAL, NAMESPACE) as client:
        controlplane.kubectl("create", "namespace", OTHER_NAMESPACE, check=False)
        yield client


def _custom(api: kubernetes.client.ApiClient) -> Any:
    return kubernetes.client.CustomObjectsApi(api)


def _create(api: kubernetes.client.ApiClient, name: str, namespace: str = NAMESPACE) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WatchProbe", "metadata": {"name": name}, "spec": {"n": 0}}
    _custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def _set(api: kubernetes.client.ApiClient, name: str, n: int) -> None:
    _custom(api).patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name, {"spec": {"n": n}})


def _delete(api: kubernetes.client.ApiClient, name: str) -> None:
    _custom(api).delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)


Seen = list[tuple[str, str, Any]]


async def _until(seen: Seen, wanted: int) -> None:
    for _ in range(300):
        if len(seen) >= wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {seen}")


def _watch(api: kubernetes.client.ApiClient, seen: Seen, namespaces: tuple[str, ...] = (NAMESPACE,)) -> KindWatch:
    return KindWatch(
        ApiHttp(api.configuration), GROUP, VERSION, PLURAL, namespaces,
        on_event=lambda kind, body: seen.append((kind, body["metadata"]["name"], body["spec"]["n"])),
    )  # fmt: skip


def test_a_listing_then_every_change_once_in_order_across_ended_watches(
    api: kubernetes.client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_module, "SERVER_TIMEOUT_SECONDS", 1)  # the server ends each watch after 1 s
    _create(api, "listed")
    _create(api, "elsewhere", OTHER_NAMESPACE)  # not in the watched namespace
    seen: Seen = []
    watch = _watch(api, seen)

    async def scenario() -> list[str]:
        listed = await watch.list_all()
        task = asyncio.create_task(watch.run())
        try:
            await asyncio.to_thread(_create, api, "new")
            for n in (1, 2):
                await asyncio.to_thread(_set, api, "listed", n)
                await asyncio.sleep(1.5)  # past the end of a watch: the next resumes where it ended
            await asyncio.to_thread(_delete, api, "new")
            await _until(seen, 4)
            await asyncio.sleep(1.5)  # nothing delivered twice by the watches after
        finally:
            task.cancel()
            await watch.close()
        return [body["metadata"]["name"] for body in listed]

    assert asyncio.run(scenario()) == ["listed"]
    assert seen == [("ADDED", "new", 0), ("MODIFIED", "listed", 1), ("MODIFIED", "listed", 2), ("DELETED", "new", 0)]
    _delete(api, "listed")


def test_a_resource_version_too_old_lists_again_and_tells_the_deletions_in_the_gap(
    api: kubernetes.client.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    _create(api, "kept")
    _create(api, "gone")
    seen: Seen = []
    watch = _watch(api, seen)

    async def scenario() -> None:
        await watch.list_all()
        await asyncio.to_thread(_delete, api, "gone")  # while nobody watches
        await asyncio.to_thread(_set, api, "kept", 7)
        watch._scopes[0].resource_version = "1"  # older than the API server's watch cache holds: 410 Gone
        task = asyncio.create_task(watch.run())
        try:
            await _until(seen, 2)
        finally:
            task.cancel()
            await watch.close()

    with caplog.at_level("INFO", logger="vdc.kube.watch"):
        asyncio.run(scenario())
    assert "too old; listing again" in caplog.text
    assert sorted(seen) == [("DELETED", "gone", 0), ("MODIFIED", "kept", 7)]
    _delete(api, "kept")
