"""examples/gitops: the datacenter kustomization builds (real kustomize, in the pinned kubectl), its
objects do not collide with the other examples, and the Argo CD / Flux objects point at it."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import rig
from vdc.api import ALL_KINDS

GITOPS = rig.REPO / "examples" / "gitops"
DATACENTER = rig.GITOPS_DATACENTER
MODELS = {k.KIND.kind: k for k in ALL_KINDS}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])


def _kubectl() -> Path:
    pins = dict(
        line.split("=", 1)
        for line in (rig.HACK / "versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    cache = Path(os.environ.get("VDC_CACHE", Path.home() / ".cache" / "vdc"))
    name = f"k8s-{pins['KUBERNETES_VERSION']}-etcd-{pins['ETCD_VERSION']}-helm-{pins['HELM_VERSION']}"
    path = cache / "bin" / name / "kubectl"
    if not path.is_file():
        raise AssertionError(f"{path} is missing: run `make bootstrap`")
    return path


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    """`kubectl kustomize examples/gitops/datacenter`: what Argo CD and Flux would apply."""
    out = subprocess.run(
        [str(_kubectl()), "kustomize", str(DATACENTER)], capture_output=True, text=True, check=True, timeout=60
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_gitops_kustomization_lists_every_file() -> None:
    listed = yaml.safe_load((DATACENTER / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in DATACENTER.glob("*.yaml") if p.name != "kustomization.yaml")
    assert [p.name for p in rig.example_manifests() if p.parent == DATACENTER] == listed


def test_gitops_datacenter_builds_into_valid_objects(built: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in built)
    assert kinds == ["Appliance", "Namespace", "StoragePool", "VirtualMachine", "VirtualMachine", "VirtualSwitch"]
    for doc in built:
        if doc["kind"] in MODELS:
            model = MODELS[doc["kind"]].model_validate(doc)
            assert MODELS[doc["kind"]].model_validate(model.to_wire()) == model


def test_gitops_datacenter_is_self_contained(built: list[dict[str, Any]]) -> None:
    switches = {d["metadata"]["name"] for d in built if d["kind"] == "VirtualSwitch"}
    pools = {d["metadata"]["name"] for d in built if d["kind"] == "StoragePool"}
    namespaces = {d["metadata"]["name"] for d in built if d["kind"] == "Namespace"}
    appliances = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in built if d["kind"] == "Appliance"}
    for namespace, _ in appliances:
        assert namespace in namespaces
    assert {d["spec"]["storagePool"] for d in built if d["kind"] == "Appliance"} <= pools
    vms = [d for d in built if d["kind"] == "VirtualMachine"]
    for vm in vms:
        assert vm["metadata"]["namespace"] in namespaces
        assert {i["switch"] for i in vm["spec"].get("interfaces", [])} <= switches
        assert {s["pool"] for d in vm["spec"].get("disks", []) for s in d["source"].values() if "pool" in s} <= pools
        if "fromAppliance" in vm["spec"]:
            source = vm["spec"]["fromAppliance"]
            assert (vm["metadata"]["namespace"], source["name"]) in appliances
            assert set(source.get("networkMapping", {}).values()) <= switches
    assert {vm["spec"]["runStrategy"] for vm in vms} == {"Always", "Halted"}  # one stopped by intent


def test_gitops_datacenter_does_not_collide_with_other_examples(built: list[dict[str, Any]]) -> None:
    others = [d for p in sorted((rig.REPO / "examples").glob("*.yaml")) for d in _docs(p)]
    ours = {_key(d) for d in built}
    assert not ours & {_key(d) for d in others}
    nets = {
        d["metadata"]["name"]: ipaddress.ip_network(d["spec"]["subnet"]["cidr"])
        for d in others + built
        if d["kind"] == "VirtualSwitch"
    }
    mine = {d["metadata"]["name"] for d in built if d["kind"] == "VirtualSwitch"}
    for name in mine:
        assert not any(nets[name].overlaps(net) for other, net in nets.items() if other != name), name
    paths = [d["spec"]["target"]["path"] for d in others + built if d["kind"] == "StoragePool"]
    assert len(paths) == len(set(paths))


def test_gitops_argocd_application_and_flux_point_at_the_datacenter() -> None:
    (app,) = _docs(GITOPS / "argocd-application.yaml")
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert rig.REPO / app["spec"]["source"]["path"] == DATACENTER
    flux = {d["kind"]: d for d in _docs(GITOPS / "flux-kustomization.yaml")}
    assert sorted(flux) == ["GitRepository", "Kustomization"]
    kustomization = flux["Kustomization"]["spec"]
    assert (rig.REPO / kustomization["path"]).resolve() == DATACENTER
    assert kustomization["sourceRef"] == {"kind": "GitRepository", "name": flux["GitRepository"]["metadata"]["name"]}
    assert kustomization["wait"] is True
    # The tests apply examples: these two need CRDs the tests do not install, so they are not applied.
    assert not {GITOPS / "argocd-application.yaml", GITOPS / "flux-kustomization.yaml"} & set(rig.example_manifests())
