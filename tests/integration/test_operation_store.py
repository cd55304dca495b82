"""An operation's progress on the real API server: each step's phase is written with the object's
resourceVersion, so a writer holding a stale copy (a second replica, an operator that read before a
restart) is refused with 409 instead of recording a step twice; and an operator started afresh
continues at the recorded step. The kind here is a throwaway CRD of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

import rig
from vdc.api.meta import GROUP, VERSION, KindInfo
from vdc.kube.client import KubeWriter
from vdc.operations.plan import Plan, Step, StepResult
from vdc.operations.runner import KubeOperationStore, reconcile_operation

NAMESPACE = "vdc-operations-it"
KIND = KindInfo(kind="OperationProbe", plural="operationprobes", short_names=(), scope="Namespaced")


@pytest.fixture(scope="module")
def api(controlplane: rig.ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    with rig.probe_kind(controlplane, "OperationProbe", "operationprobes", NAMESPACE) as client:
        yield client


def _get(api: kubernetes.client.ApiClient, name: str) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api)
    body: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "operationprobes", name)
    return body


def _create(api: kubernetes.client.ApiClient, name: str) -> None:
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "operationprobes",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OperationProbe", "metadata": {"name": name}, "spec": {}},
    )  # fmt: skip


class World:
    def __init__(self) -> None:
        self.made: list[str] = []
        self.runs: dict[str, int] = {}


def _step(name: str) -> Step[World]:
    async def run(world: World) -> StepResult:
        world.runs[name] = world.runs.get(name, 0) + 1
        if name not in world.made:  # idempotent: look, then act
            world.made.append(name)
        return StepResult()

    return Step(name, run)


PLAN: Plan[World] = Plan((_step("Preparing"), _step("Moving"), _step("Finishing")))


async def test_a_stale_writer_is_refused_and_a_fresh_operator_continues_at_the_recorded_step(
    controlplane: rig.ControlPlane, api: kubernetes.client.ApiClient
) -> None:
    _create(api, "probe")
    store = KubeOperationStore(KubeWriter(api), KIND)
    world = World()
    stale = _get(api, "probe")
    assert await reconcile_operation(PLAN, stale, world, store) == 0
    assert _get(api, "probe")["status"]["phase"] == "Moving"

    # A second writer with the copy read before that write: refused, nothing recorded twice.
    with pytest.raises(kubernetes.client.ApiException) as refused:
        await reconcile_operation(PLAN, stale, world, store)
    assert refused.value.status == 409
    assert _get(api, "probe")["status"]["phase"] == "Moving"

    # An operator started afresh (new client, new store) reads the server and goes on from Moving.
    fresh_api = kubernetes.config.new_client_from_config(config_file=str(controlplane.kubeconfig))
    fresh = KubeOperationStore(KubeWriter(fresh_api), KIND)
    while (again := await reconcile_operation(PLAN, _get(fresh_api, "probe"), world, fresh)) is not None:
        assert again == 0
    status = _get(api, "probe")["status"]
    assert status["phase"] == "Succeeded" and status["startTime"] and status["completionTime"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }
    assert world.made == ["Preparing", "Moving", "Finishing"]
    assert world.runs == {"Preparing": 2, "Moving": 1, "Finishing": 1}  # only the refused step ran again
