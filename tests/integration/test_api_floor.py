"""The scale benchmark's API floor (bench/api_floor.py) on the real API server: the creates, then for each
object the writes the operator made for its VM, in its VM worker's order (the finalizer with the operator's
own JSON patch that tests the create's resourceVersion, the statuses, the Event), all of them counted and
none refused. The objects are of a throwaway kind of the test's own: an operator another test left running
on the shared control plane would write to VirtualMachines first (its finalizer, a first status)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import kubernetes
import pytest

import rig
from vdc.api.meta import KindInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from api_floor import FINALIZER, EventWrite, VmWrites, run_api_floor

pytestmark = pytest.mark.integration

GROUP, VERSION = "vdc.dev", "v1alpha1"
PLURAL, KIND = "floorprobes", KindInfo(kind="FloorProbe", plural="floorprobes", short_names=(), scope="Namespaced")
NAMESPACE = "api-floor-it"


def _manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND.kind, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"cpu": {"count": 1}, "memory": {"size": "64Mi"}}}  # fmt: skip


def test_the_floor_writes_each_objects_finalizer_first_then_its_statuses_and_events(
    controlplane: rig.ControlPlane,
) -> None:
    names = [f"floor-{i}" for i in range(3)]
    statuses = [{"phase": "Provisioning", "host": "h1"}, {"phase": "Running", "host": "h1"}]
    plans = [VmWrites(statuses, (EventWrite("Started", f"domain {n} started on h1", False),)) for n in names]
    with rig.probe_kind(controlplane, KIND.kind, PLURAL, NAMESPACE) as api:
        custom = kubernetes.client.CustomObjectsApi(api)
        result = run_api_floor(
            api, NAMESPACE, [_manifest(n) for n in names], plans, create_workers=2, workers=2, info=KIND
        )
        # The finalizer's patch tests the create's resourceVersion: made after a status write, it is refused.
        assert result.errors == []
        assert result.writes == len(names) * (1 + len(statuses) + 1)
        for name in names:
            body: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
            assert body["metadata"]["finalizers"] == [FINALIZER]
            assert body["status"] == {"phase": "Running", "host": "h1"}
            with contextlib.suppress(kubernetes.client.ApiException):  # nobody else removes the floor's finalizer
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, name, {"metadata": {"finalizers": None}}
                )
        events = kubernetes.client.CoreV1Api(api).list_namespaced_event(NAMESPACE).items
        assert sorted(str(e.involved_object.name) for e in events if e.reason == "Started") == names
