"""The scale benchmark's API floor (bench/api_floor.py) on the real API server: the creates, then for each VM
the writes the operator made for it, in its VM worker's order (the finalizer with the operator's own JSON
patch that tests the create's resourceVersion, the statuses, the Event), all of them counted and none
refused."""

from __future__ import annotations

import contextlib
import sys
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest

import rig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from api_floor import FINALIZER, EventWrite, VmWrites, run_api_floor

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "vdc.dev", "v1alpha1", "virtualmachines"


def _manifest(name: str, namespace: str) -> dict[str, Any]:
    spec = {"cpu": {"count": 1}, "memory": {"size": "64Mi"},
            "boot": {"kernel": {"kernel": "/boot/vmlinuz", "cmdline": "console=ttyS0"}}}  # fmt: skip
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


def test_the_floor_writes_each_vms_finalizer_first_then_its_statuses_and_events(
    controlplane: rig.ControlPlane,
) -> None:
    namespace = f"api-floor-it-{uuid.uuid4().hex[:6]}"  # the floor makes its namespace itself
    api = kubernetes.config.new_client_from_config(config_file=str(controlplane.kubeconfig))
    custom = kubernetes.client.CustomObjectsApi(api)
    names = [f"floor-{i}" for i in range(3)]
    statuses = [{"phase": "Provisioning", "host": "h1"}, {"phase": "Running", "host": "h1"}]
    plans = [VmWrites(statuses, (EventWrite("Started", f"domain {n} started on h1", False),)) for n in names]
    try:
        result = run_api_floor(
            api, namespace, [_manifest(n, namespace) for n in names], plans, create_workers=2, workers=2
        )
        # The finalizer's patch tests the create's resourceVersion: made after a status write, it is refused.
        assert result.errors == []
        assert result.writes == len(names) * (1 + len(statuses) + 1)
        for name in names:
            body: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            assert body["metadata"]["finalizers"] == [FINALIZER]
            assert body["status"] == {"phase": "Running", "host": "h1"}
        events = kubernetes.client.CoreV1Api(api).list_namespaced_event(namespace).items
        assert sorted(str(e.involved_object.name) for e in events if e.reason == "Started") == names
    finally:  # nobody else removes the floor's finalizer: an operator of another test would see the VMs
        for name in names:
            patch = {"metadata": {"finalizers": None}}
            with contextlib.suppress(kubernetes.client.ApiException):
                custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
        controlplane.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=60s", check=False)
