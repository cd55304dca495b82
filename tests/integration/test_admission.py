"""The real API server accepts the examples and refuses bad manifests with a message naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import rig

EXAMPLES = sorted((rig.REPO / "examples").glob("*.yaml"))
BAD = sorted((Path(__file__).parent / "bad").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_server_side_dry_run(controlplane: rig.ControlPlane, example: Path) -> None:
    # Namespaces in the same file must exist for a dry run of the objects in them.
    for doc in yaml.safe_load_all(example.read_text()):
        if doc and doc["kind"] == "Namespace":
            controlplane.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    out = controlplane.kubectl("apply", "--dry-run=server", "-f", str(example))
    assert "(server dry run)" in out


def _expected_field(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# refused: "), f"{path.name} must start with '# refused: <field>'"
    return first.removeprefix("# refused: ").strip()


@pytest.mark.parametrize("manifest", BAD, ids=lambda p: p.name)
def test_bad_manifest_is_refused_naming_the_field(controlplane: rig.ControlPlane, manifest: Path) -> None:
    result = controlplane.kubectl_result("apply", "--dry-run=server", "-f", str(manifest))
    assert result.returncode != 0, f"{manifest.name} was accepted:\n{result.stdout}"
    assert _expected_field(manifest) in result.stderr, result.stderr


def _apply(cp: rig.ControlPlane, doc: dict[str, object]) -> None:
    cp.kubectl("apply", "--server-side", "--field-manager=test", "-f", "-", input=json.dumps(doc))


def _apply_refused(cp: rig.ControlPlane, doc: dict[str, object]) -> str:
    result = cp.kubectl_result("apply", "--server-side", "--field-manager=test", "-f", "-", input=json.dumps(doc))
    assert result.returncode != 0, f"update was accepted:\n{result.stdout}"
    return result.stderr


def test_changing_an_immutable_field_is_refused(controlplane: rig.ControlPlane) -> None:
    switch = {
        "apiVersion": "vdc.dev/v1alpha1",
        "kind": "VirtualSwitch",
        "metadata": {"name": "immutable-mode"},
        "spec": {"mode": "nat", "subnet": {"cidr": "10.99.0.0/24"}},
    }
    _apply(controlplane, switch)
    switch["spec"] = {"mode": "isolated", "subnet": {"cidr": "10.99.0.0/24"}}
    err = _apply_refused(controlplane, switch)
    assert "spec.mode" in err and "mode is immutable" in err
    switch["spec"] = {"mode": "nat", "subnet": {"cidr": "10.98.0.0/24"}}
    err = _apply_refused(controlplane, switch)
    assert "spec.subnet.cidr" in err


def test_disks_grow_but_never_shrink(controlplane: rig.ControlPlane) -> None:
    def vm(size: str) -> dict[str, object]:
        return {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "growing", "namespace": "default"},
            "spec": {
                "memory": {"size": "128Mi"},
                "disks": [{"name": "data", "source": {"blank": {"pool": "default", "size": size}}}],
            },
        }

    _apply(controlplane, vm("1Gi"))
    _apply(controlplane, vm("2Gi"))
    err = _apply_refused(controlplane, vm("1536Mi"))
    assert "spec.disks[0].source.blank.size" in err and "may only grow" in err
    stored = controlplane.get_json("vm", "growing", "-n", "default")
    assert stored["spec"]["disks"][0]["source"]["blank"]["size"] == "2Gi"


def test_adding_an_immutable_optional_field_later_is_refused(controlplane: rig.ControlPlane) -> None:
    vm = {
        "apiVersion": "vdc.dev/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "late-appliance", "namespace": "default"},
        "spec": {"memory": {"size": "128Mi"}},
    }
    _apply(controlplane, vm)
    vm["spec"] = {"memory": {"size": "128Mi"}, "fromAppliance": {"name": "something"}}
    err = _apply_refused(controlplane, vm)
    assert "spec.fromAppliance" in err


def test_defaults_are_filled_in_by_the_api_server(controlplane: rig.ControlPlane) -> None:
    _apply(
        controlplane,
        {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "defaults", "namespace": "default"},
            "spec": {"memory": {"size": "64Mi"}},
        },
    )
    spec = controlplane.get_json("vm", "defaults", "-n", "default")["spec"]
    assert spec["runStrategy"] == "Always"
    assert spec["firmware"] == "BIOS"
    assert spec["terminationGracePeriodSeconds"] == 60


def test_kubectl_get_vdc_lists_every_kind(controlplane: rig.ControlPlane) -> None:
    _apply(
        controlplane,
        {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "Host",
            "metadata": {"name": "listed-host"},
            "spec": {"uri": "test:///default"},
        },
    )
    out = controlplane.kubectl("get", "vdc", "-A")
    assert "host.vdc.dev/listed-host" in out
    assert "virtualmachine.vdc.dev/defaults" in out or "virtualmachine.vdc.dev/growing" in out
    # short names resolve
    for short in ("vdchost", "vdcpool", "vswitch", "appliance", "vm"):
        controlplane.kubectl("get", short, "-A")


def test_kubectl_explain_shows_the_models_descriptions(controlplane: rig.ControlPlane) -> None:
    out = controlplane.kubectl("explain", "virtualmachine.spec")
    assert "Desired state of a virtual machine." in out
    assert "runStrategy" in out and "RerunOnFailure: restart only after a crash" in out
    out = controlplane.kubectl("explain", "virtualmachine.spec.memory.size")
    assert "Changes are applied live." in out
