"""bench/api_write_cost.py on the real API server: every phase's writes are made (the operator's writer's
status patch, then the kubernetes client's over it, each object's Event) and each phase gets a figure."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import kubernetes
import pytest

import rig
from vdc.api.meta import GROUP, VERSION

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from api_write_cost import KIND, NAMESPACE, measure, status_of

pytestmark = pytest.mark.integration

OBJECTS = 5


def test_each_phase_makes_its_writes_and_gets_a_figure(controlplane: rig.ControlPlane) -> None:
    with rig.probe_kind(controlplane, KIND.kind, KIND.plural, NAMESPACE) as api:
        figures = asyncio.run(measure(api, OBJECTS, parallel=2, rounds=1))
        custom = kubernetes.client.CustomObjectsApi(api)
        for i in range(OBJECTS):
            name = f"probe-{i:05d}"
            body: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, KIND.plural, name)
            assert body["status"] == status_of(1, name)  # the kubernetes client's patch, over the writer's
            assert body["metadata"]["generation"] == 1  # status writes only
        events = kubernetes.client.CoreV1Api(api).list_namespaced_event(NAMESPACE).items
        assert sorted(str(e.involved_object.name) for e in events if e.reason == "Started") == [
            f"probe-{i:05d}" for i in range(OBJECTS)
        ]
    assert set(figures) == {"create", "writer", "kubernetes client", "event"}
    assert all(f["cpu_ms_per_write"] > 0 and f["wall_seconds"] > 0 for f in figures.values())
