"""The CRDs are generated from the models, committed, and structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from vdc.api import ALL_KINDS
from vdc.api.crdgen import crd
from vdc.cli import crds

REPO = Path(__file__).resolve().parents[2]
CRD_DIRS = [REPO / "crds", REPO / "charts" / "vdc-operator" / "crds"]


def test_committed_crds_equal_a_fresh_generation() -> None:
    assert crds.differences(CRD_DIRS) == [], "run `make crds` and commit the result"


def test_differences_reports_a_hand_edited_file(tmp_path: Path) -> None:
    crds.write([tmp_path])
    victim = next(tmp_path.glob("*.yaml"))
    victim.write_text(victim.read_text().replace("Ready", "Redy"))
    (tmp_path / "extra.vdc.dev.yaml").write_text("{}")
    problems = crds.differences([tmp_path])
    assert any(victim.name in p for p in problems)
    assert any("extra.vdc.dev.yaml" in p for p in problems)


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        nodes += _walk(sub, f"{path}.{name}")
    if "items" in schema:
        nodes += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += _walk(schema["additionalProperties"], f"{path}.*")
    return nodes


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.__name__)
def test_schema_is_structural(kind: Any) -> None:
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "$defs" not in text
    for path, node in _walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            continue
        assert "type" in node, f"{path} has no type"
        assert "anyOf" not in node and "oneOf" not in node, path
        assert node.get("additionalProperties", {}) is not False, path
        if node["type"] == "array":
            assert "maxItems" in node or path.startswith(".status"), f"{path}: unbounded list in spec"


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.__name__)
def test_every_spec_field_is_described(kind: Any) -> None:
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], ".spec"):
        if path.endswith("[]") or path.endswith(".*"):
            continue
        assert node.get("description"), f"{kind.__name__}{path} has no description"


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.__name__)
def test_named_lists_are_list_maps_with_required_keys(kind: Any) -> None:
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        if node.get("type") != "array" or node["items"].get("type") != "object":
            continue
        if path.endswith(".matchExpressions"):
            continue  # Kubernetes' own LabelSelector: an atomic list, as in every built-in API
        item_props = node["items"].get("properties", {})
        for key in ("name", "host", "type", "id", "key", "file", "ip"):
            if key in item_props and key in node["items"].get("required", []):
                assert node.get("x-kubernetes-list-type") == "map", f"{path} is a named list but not a map"
                assert key in node["x-kubernetes-list-map-keys"]
                break


def test_names_scope_and_columns_follow_the_design() -> None:
    by_kind = {k.KIND.kind: crd(k) for k in ALL_KINDS}
    expected = {
        "Host": ("Cluster", "vdchost"),
        "StoragePool": ("Cluster", "vdcpool"),
        "VirtualSwitch": ("Cluster", "vswitch"),
        "Appliance": ("Namespaced", "appliance"),
        "VirtualMachine": ("Namespaced", "vm"),
    }
    for kind, (scope, short) in expected.items():
        spec = by_kind[kind]["spec"]
        assert spec["scope"] == scope
        assert short in spec["names"]["shortNames"]
        assert spec["names"]["categories"] == ["vdc"]
        version = spec["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = {c["name"] for c in version["additionalPrinterColumns"]}
        assert {"Ready", "Age"} <= columns
    vm_columns = {c["name"] for c in by_kind["VirtualMachine"]["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Status", "Host", "IP"} <= vm_columns


def test_immutable_fields_get_transition_rules() -> None:
    schema = crd(next(k for k in ALL_KINDS if k.KIND.kind == "VirtualSwitch"))
    spec = schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {"rule": "self == oldSelf", "message": "mode is immutable"} in spec["properties"]["mode"][
        "x-kubernetes-validations"
    ]
    assert "Immutable once set." in spec["properties"]["mode"]["description"]
