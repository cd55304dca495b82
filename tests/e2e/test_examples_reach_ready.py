"""Every manifest in examples/ is applied to the running datacenter and reaches Ready."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import rig
from conftest import Datacenter, wait_until

EXAMPLES = rig.example_manifests()  # examples/*.yaml and examples/gitops/datacenter (not Argo CD/Flux objects)


def _objects() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in EXAMPLES for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def appliance_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The OVA examples/appliance-tiny.yaml downloads, on the loopback port it names (as `make demo` does)."""
    state = tmp_path_factory.mktemp("appliance-www")
    rig.run_script("example-appliance.sh", "serve", state=state, timeout=600)
    try:
        yield
    finally:
        rig.run_script("example-appliance.sh", "stop", state=state)


@pytest.fixture(scope="module")
def applied(datacenter: Datacenter, appliance_served: None) -> list[tuple[Path, dict]]:
    # Pools first: VMs need them to be placed (GitOps tools apply everything at once; so could we,
    # it would only take longer).
    objects = sorted(_objects(), key=lambda o: {"Namespace": 0, "StoragePool": 1}.get(o[1]["kind"], 2))
    for _, doc in objects:
        datacenter.cp.kubectl("apply", "--server-side", "--field-manager=examples", "-f", "-", input=json.dumps(doc))
    return objects


@pytest.mark.parametrize("obj", [f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in _objects()])
def test_example_reaches_ready(datacenter: Datacenter, applied: list[tuple[Path, dict]], obj: str) -> None:
    _, doc = next((p, d) for p, d in applied if f"{p.name}:{d['kind']}/{d['metadata']['name']}" == obj)
    if doc["kind"] == "Namespace":
        return
    meta = doc["metadata"]

    def ready() -> dict | None:
        body = datacenter.get(doc["kind"].lower(), meta["name"], meta.get("namespace"))
        return body if (datacenter.condition(body, "Ready") or {}).get("status") == "True" else None

    try:
        wait_until(f"{obj} Ready", ready, timeout=180)
    except AssertionError:
        body = datacenter.get(doc["kind"].lower(), meta["name"], meta.get("namespace"))
        raise AssertionError(f"{obj} not Ready: {json.dumps((body or {}).get('status'), indent=1)}\n"
                             f"{datacenter.operator.tail()}") from None  # fmt: skip
