"""The writes made for every object, over aiohttp (``vdc.kube.http``), on the real API server: a status merge
patch, an Event, and the finalizer the VM controller adds before anything is made (a JSON patch testing the
resourceVersion: refused when the object changed, unless the change was the same finalizer). The kind is a
throwaway CRD of the test's own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

import rig
from vdc.api.meta import FINALIZER, GROUP, VERSION, KindInfo
from vdc.kube.client import KubeWriter, StatusWritten

pytestmark = pytest.mark.integration

NAMESPACE = "vdc-writer-it"
PLURAL = "writerprobes"
KIND = KindInfo(kind="WriterProbe", plural=PLURAL, short_names=(), scope="Namespaced")


@pytest.fixture(scope="module")
def api(controlplane: rig.ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    with rig.probe_kind(controlplane, "WriterProbe", "writerprobes", NAMESPACE) as client:
        yield client


def _custom(api: kubernetes.client.ApiClient) -> Any:
    return kubernetes.client.CustomObjectsApi(api)


def _create(api: kubernetes.client.ApiClient, name: str) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WriterProbe", "metadata": {"name": name}, "spec": {"a": 1}}
    made: dict[str, Any] = _custom(api).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
    return made


def _get(api: kubernetes.client.ApiClient, name: str) -> dict[str, Any]:
    got: dict[str, Any] = _custom(api).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    return got


def _release(api: kubernetes.client.ApiClient, name: str) -> None:
    _custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, name, {"metadata": {"finalizers": None}}
    )


def test_a_status_patch_and_an_event_go_over_aiohttp(api: kubernetes.client.ApiClient) -> None:
    writer = KubeWriter(api)
    body = _create(api, "status-and-event")

    async def write() -> dict[str, Any] | None:
        try:
            sent = await writer.patch_status(KIND, body, {"phase": "Running", "host": "h1"})
            await writer.event(KIND, body, "Started", "started on h1")
            return sent
        finally:
            await writer.close()

    assert asyncio.run(write()) == {"phase": "Running", "host": "h1"}
    assert _get(api, "status-and-event")["status"] == {"phase": "Running", "host": "h1"}
    events = kubernetes.client.CoreV1Api(api).list_namespaced_event(
        NAMESPACE, field_selector="involvedObject.name=status-and-event"
    )
    assert [(e.reason, e.message, e.type, e.involved_object.kind) for e in events.items] == [
        ("Started", "started on h1", "Normal", "WriterProbe")
    ]


def test_a_status_write_gives_the_version_its_watch_event_carries(api: kubernetes.client.ApiClient) -> None:
    """The VM controller settles a VM on this version (VmController.verify): it must be the object's own."""
    writer = KubeWriter(api)
    body = _create(api, "status-version")

    async def write() -> tuple[StatusWritten | None, StatusWritten | None]:
        try:
            first = await writer.write_status(KIND, body, {"phase": "Running"})
            again = await writer.write_status(KIND, {**body, "status": {"phase": "Running"}}, {"phase": "Running"})
            return first, again
        finally:
            await writer.close()

    first, again = asyncio.run(write())
    after = _get(api, "status-version")["metadata"]["resourceVersion"]
    assert first is not None and first.patch == {"phase": "Running"}
    assert first.resource_version == after != body["metadata"]["resourceVersion"]
    assert again is None  # nothing to write, nothing written


def test_the_finalizer_is_added_once_and_never_over_a_change(api: kubernetes.client.ApiClient) -> None:
    writer = KubeWriter(api)
    fresh, stale = _create(api, "finalizer-fresh"), _create(api, "finalizer-stale")
    raced = _create(api, "finalizer-raced")
    # someone else changed one (a label) and added ours to another (as kopf does) since we read them
    _custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, "finalizer-stale", {"metadata": {"labels": {"x": "y"}}}
    )
    _custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, "finalizer-raced", {"metadata": {"finalizers": ["other/one", FINALIZER]}}
    )

    async def add() -> list[dict[str, Any] | None]:
        try:
            return [await writer.add_finalizer(KIND, body, FINALIZER) for body in (fresh, stale, raced)]
        finally:
            await writer.close()

    try:
        added, refused, found = asyncio.run(add())
        assert added is not None and added["metadata"]["finalizers"] == [FINALIZER]
        assert _get(api, "finalizer-fresh")["metadata"]["finalizers"] == [FINALIZER]
        assert refused is None and "finalizers" not in _get(api, "finalizer-stale")["metadata"]
        assert found is not None and found["metadata"]["finalizers"] == ["other/one", FINALIZER]  # not twice
    finally:
        for name in ("finalizer-fresh", "finalizer-raced"):
            _release(api, name)
