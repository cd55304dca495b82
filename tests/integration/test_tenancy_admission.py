"""Tenancy at admission, decided by the API server alone (issue 11): the chart's
ValidatingAdmissionPolicies keep a VM's kernel/initrd and an Appliance's hostPath under the
directories the cluster admin lists (tenancy.hostFileDirectories), the CRDs refuse `..`, and a
Kubernetes ResourceQuota counts VirtualMachines per namespace. No operator runs here."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

import helmchart
import rig

RELEASE, RELEASE_NS = "tenancy-adm", "vdc-tenancy-adm"
TENANT = "tenant-adm"
BOOT, OLD = "/var/lib/libvirt/boot", "/srv/vdc-retired"
CONFIGMAP = f"{RELEASE}-vdc-operator-host-files"
VALUES: dict[str, Any] = {"tenancy": {"hostFileDirectories": [BOOT, f"{OLD}/"]}, "userRoles": {"create": False}}


def vm(name: str, kernel: str | None = None, initrd: str | None = None, namespace: str = TENANT) -> dict[str, Any]:
    spec: dict[str, Any] = {"runStrategy": "Halted", "memory": {"size": "64Mi"}}
    if kernel is not None:
        spec["boot"] = {"kernel": {"kernel": kernel, **({"initrd": initrd} if initrd else {})}}
    return {
        "apiVersion": "vdc.dev/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def appliance(name: str, path: str) -> dict[str, Any]:
    return {
        "apiVersion": "vdc.dev/v1alpha1",
        "kind": "Appliance",
        "metadata": {"name": name, "namespace": TENANT},
        "spec": {"source": {"hostPath": {"host": "hv1", "path": path}}, "storagePool": "default"},
    }


def create(cp: rig.ControlPlane, doc: dict[str, Any], dry_run: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["create", *(["--dry-run=server"] if dry_run else []), "-f", "-"]
    return cp.kubectl_result(*args, input=json.dumps(doc))


def wait_refused(cp: rig.ControlPlane, doc: dict[str, Any], timeout: float = 30) -> str:
    """The API server's policy informers take a moment after a change: the refusal message, once it comes."""
    deadline = time.monotonic() + timeout
    while True:
        result = create(cp, doc)
        if result.returncode != 0:
            return result.stderr
        if time.monotonic() > deadline:
            raise AssertionError(f"{doc['metadata']['name']} still accepted after {timeout}s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def policy(controlplane: rig.ControlPlane) -> Iterator[rig.ControlPlane]:
    helmchart.ensure_namespace(controlplane, TENANT)
    helmchart.install(controlplane, RELEASE, RELEASE_NS, VALUES)
    wait_refused(controlplane, vm("warm-up", kernel="/etc/vmlinuz"))
    try:
        yield controlplane
    finally:
        helmchart.helm(controlplane, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait=false", check=False)
        # the namespace stays: without kube-controller-manager it would never finish terminating
        controlplane.kubectl("delete", "vm,appliance", "--all", "-n", TENANT, "--ignore-not-found", check=False)


# --- rendering ----------------------------------------------------------------------------------------


def test_no_policy_without_directories(controlplane: rig.ControlPlane) -> None:
    docs = helmchart.render(controlplane, {})
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap"}


def test_policy_and_binding_with_directories(controlplane: rig.ControlPlane) -> None:
    docs = helmchart.render(controlplane, VALUES, release="r", namespace="ns")
    [params] = helmchart.find(docs, "ConfigMap")
    assert params["metadata"] == {**params["metadata"], "name": "r-vdc-operator-host-files", "namespace": "ns"}
    assert params["data"] == {"directories": f"{BOOT}\n{OLD}/"}
    policies = helmchart.find(docs, "ValidatingAdmissionPolicy")
    bindings = helmchart.find(docs, "ValidatingAdmissionPolicyBinding")
    assert {p["spec"]["matchConstraints"]["resourceRules"][0]["resources"][0] for p in policies} == {
        "virtualmachines", "appliances",
    }  # fmt: skip
    assert all(p["spec"]["failurePolicy"] == "Fail" and p["spec"]["paramKind"]["kind"] == "ConfigMap" for p in policies)
    assert {b["spec"]["policyName"] for b in bindings} == {p["metadata"]["name"] for p in policies}
    for b in bindings:
        assert b["spec"]["validationActions"] == ["Deny"]
        assert b["spec"]["paramRef"] == {
            "name": "r-vdc-operator-host-files", "namespace": "ns", "parameterNotFoundAction": "Deny",
        }  # fmt: skip


@pytest.mark.parametrize("dirs", [["relative/dir"], ["/a/../b"], ["/"], ["/a/./b"], ["/a\nb"]], ids=repr)
def test_directories_must_be_clean_absolute_paths(controlplane: rig.ControlPlane, dirs: list[str]) -> None:
    values = {"tenancy": {"hostFileDirectories": dirs}}
    result = helmchart.helm(
        controlplane, "template", "x", str(helmchart.CHART), "-f", str(helmchart.values_file(values)), check=False
    )
    assert result.returncode != 0 and "hostFileDirectories" in result.stderr, result.stderr


def test_chart_with_policy_lints_clean(controlplane: rig.ControlPlane) -> None:
    result = helmchart.helm(
        controlplane, "lint", "--strict", str(helmchart.CHART), "-f", str(helmchart.values_file(VALUES)), check=False
    )
    assert result.returncode == 0 and "[WARNING]" not in result.stdout, result.stdout + result.stderr


# --- the policy in the API server ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "initrd", "field"),
    [
        ("/etc/vmlinuz", None, "spec.boot.kernel.kernel"),
        (f"{BOOT}/vmlinuz", "/etc/shadow", "spec.boot.kernel.initrd"),
        ("/var/lib/libvirt/bootleg/vmlinuz", None, "spec.boot.kernel.kernel"),  # a prefix is not a directory
        (BOOT, None, "spec.boot.kernel.kernel"),  # the directory itself is no file in it
    ],
)
def test_vm_host_file_outside_the_directories_is_refused(
    policy: rig.ControlPlane, kernel: str, initrd: str | None, field: str
) -> None:
    result = create(policy, vm("outside", kernel, initrd))
    assert result.returncode != 0, result.stdout
    assert "ValidatingAdmissionPolicy" in result.stderr and f"{field}: " in result.stderr, result.stderr
    assert "not under a directory the cluster admin allows" in result.stderr and BOOT in result.stderr


def test_vm_with_initrd_etc_shadow_is_refused_on_kubectl_apply(policy: rig.ControlPlane) -> None:
    result = policy.kubectl_result("apply", "-f", "-", input=json.dumps(vm("shadow", f"{BOOT}/vmlinuz", "/etc/shadow")))
    assert result.returncode != 0
    assert "spec.boot.kernel.initrd: /etc/shadow is not under" in result.stderr, result.stderr
    assert policy.kubectl("get", "vm", "shadow", "-n", TENANT, "--ignore-not-found").strip() == ""


@pytest.mark.parametrize(
    ("kernel", "initrd"),
    [(f"{BOOT}/vmlinuz", f"{BOOT}/initrd.img"), (f"{OLD}/deep/dir/vmlinuz", None), (None, None)],
    ids=["boot-dir", "trailing-slash-dir", "no-kernel"],
)
def test_vm_host_file_under_a_directory_is_admitted(
    policy: rig.ControlPlane, kernel: str | None, initrd: str | None
) -> None:
    result = create(policy, vm("inside", kernel, initrd))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", [f"{BOOT}/../../../etc/shadow", f"{BOOT}/./vmlinuz", f"{BOOT}//vmlinuz", "vmlinuz"])
def test_unclean_kernel_path_is_refused_by_the_crd(policy: rig.ControlPlane, path: str) -> None:
    """Schema validation runs before admission policies: `..`, `.`, `//` and relative paths never get that far."""
    result = create(policy, vm("unclean", kernel=f"{BOOT}/vmlinuz", initrd=path))
    assert result.returncode != 0
    assert "spec.boot.kernel.initrd" in result.stderr and "should match" in result.stderr, result.stderr
    assert "ValidatingAdmissionPolicy" not in result.stderr


def test_appliance_host_path_outside_the_directories_is_refused(policy: rig.ControlPlane) -> None:
    result = create(policy, appliance("passwd", "/etc/passwd"))
    assert result.returncode != 0
    assert "spec.source.hostPath.path: /etc/passwd is not under" in result.stderr, result.stderr
    assert create(policy, appliance("ova", f"{BOOT}/images/tiny.ova")).returncode == 0
    url = copy.deepcopy(appliance("url", "/x"))
    url["spec"]["source"] = {"url": "http://127.0.0.1:1/tiny.ova"}
    result = create(policy, url)
    assert result.returncode == 0, result.stderr


def test_unchanged_paths_are_not_checked_again(policy: rig.ControlPlane) -> None:
    """Ratcheting: a directory taken off the list refuses new paths under it, but objects that
    already name one can still be edited (labels, finalizers, other fields) and deleted."""
    cp = policy
    kept = vm("retired", kernel=f"{OLD}/vmlinuz", initrd=f"{OLD}/initrd.img")
    assert create(cp, kept, dry_run=False).returncode == 0
    try:
        patch = json.dumps({"data": {"directories": BOOT}})
        cp.kubectl("patch", "configmap", CONFIGMAP, "-n", RELEASE_NS, "--type=merge", "-p", patch)
        message = wait_refused(cp, vm("new-retired", kernel=f"{OLD}/vmlinuz"))
        assert f"{OLD}/vmlinuz is not under" in message
        cp.kubectl("label", "vm", "retired", "-n", TENANT, "kept=yes")
        edit = {"metadata": {"finalizers": ["vdc.dev/test"]}, "spec": {"cpu": {"count": 2}}}
        cp.kubectl("patch", "vm", "retired", "-n", TENANT, "--type=merge", "-p", json.dumps(edit))
        changed = cp.kubectl_result(
            "patch", "vm", "retired", "-n", TENANT, "--type=merge",
            "-p", json.dumps({"spec": {"boot": {"kernel": {"initrd": f"{OLD}/other.img"}}}}),
        )  # fmt: skip
        assert changed.returncode != 0 and f"spec.boot.kernel.initrd: {OLD}/other.img" in changed.stderr
        cp.kubectl("patch", "vm", "retired", "-n", TENANT, "--type=json",
                   "-p", json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]))  # fmt: skip
    finally:
        cp.kubectl("delete", "vm", "retired", "-n", TENANT, "--ignore-not-found")
        restore = json.dumps({"data": {"directories": f"{BOOT}\n{OLD}/"}})
        cp.kubectl("patch", "configmap", CONFIGMAP, "-n", RELEASE_NS, "--type=merge", "-p", restore)
    deadline = time.monotonic() + 30
    while create(cp, vm("back", kernel=f"{OLD}/vmlinuz")).returncode != 0:
        assert time.monotonic() < deadline, "the restored directory list never took effect"
        time.sleep(0.3)


# --- VM count by ResourceQuota ------------------------------------------------------------------------

QUOTA_NS, TENANT_FREE = "tenant-quota", "default"
COUNT = "count/virtualmachines.vdc.dev"


@pytest.fixture
def quota_ns(controlplane: rig.ControlPlane) -> Iterator[str]:
    helmchart.ensure_namespace(controlplane, QUOTA_NS)
    try:
        yield QUOTA_NS
    finally:
        controlplane.kubectl("delete", "vm", "--all", "-n", QUOTA_NS, "--ignore-not-found", check=False)
        controlplane.kubectl("delete", "resourcequota", "--all", "-n", QUOTA_NS, "--ignore-not-found", check=False)


def test_resource_quota_counts_virtual_machines(controlplane: rig.ControlPlane, quota_ns: str) -> None:
    """`count/virtualmachines.vdc.dev` in a ResourceQuota: the API server's quota admission counts
    VMs per namespace with no lookup of ours, and refuses the one over the limit.

    Quota admission enforces what the quota's *status* says: status.hard (copied from spec.hard) and
    status.used, both written by kube-controller-manager's resourcequota controller within seconds of
    a change. The rig runs no controller-manager, so the test writes the status the controller would;
    from then on admission itself keeps status.used up to date on every create."""
    cp = controlplane
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "vms", "namespace": quota_ns},
        "spec": {"hard": {COUNT: "2"}},
    }
    cp.kubectl("create", "-f", "-", input=json.dumps(quota))
    # No status.hard yet: the quota limits nothing (in a cluster, for the seconds before the controller syncs).
    assert create(cp, vm("vm-0", namespace=quota_ns), dry_run=False).returncode == 0

    def set_status(status: dict[str, Any]) -> None:
        patch = json.dumps({"status": status})
        cp.kubectl("patch", "resourcequota", "vms", "-n", quota_ns, "--subresource=status", "--type=merge", "-p", patch)

    # Limits known but no usage counted: every VM create is refused until the usage is known.
    set_status({"hard": {COUNT: "2"}})
    message = wait_refused(cp, vm("vm-x", namespace=quota_ns))
    assert "status unknown for quota: vms" in message, message

    set_status({"hard": {COUNT: "2"}, "used": {COUNT: "1"}})  # what the controller counts: vm-0
    deadline = time.monotonic() + 30
    while (result := create(cp, vm("vm-1", namespace=quota_ns), dry_run=False)).returncode != 0:
        assert "status unknown" in result.stderr and time.monotonic() < deadline, result.stderr
        time.sleep(0.3)  # quota admission's informer has not seen the status yet
    used = cp.get_json("resourcequota", "vms", "-n", quota_ns)["status"]["used"]
    assert used == {COUNT: "2"}  # counted by admission itself

    third = create(cp, vm("vm-2", namespace=quota_ns), dry_run=False)
    assert third.returncode != 0, third.stdout
    assert "exceeded quota: vms" in third.stderr and f"limited: {COUNT}=2" in third.stderr, third.stderr
    assert sorted(v["metadata"]["name"] for v in cp.get_json("vm", "-n", quota_ns)["items"]) == ["vm-0", "vm-1"]
    # another namespace is not counted against this one
    other = create(cp, vm("vm-2", namespace=TENANT_FREE), dry_run=True)
    assert other.returncode == 0, other.stderr


def test_install_notes_name_the_directories(policy: rig.ControlPlane) -> None:
    notes = helmchart.helm(policy, "get", "notes", RELEASE, "-n", RELEASE_NS).stdout
    assert f"must lie under {BOOT}, {OLD}/" in notes, notes
    assert "vdc-view" not in notes  # userRoles.create: false
