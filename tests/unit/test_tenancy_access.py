"""Who may use what: volumes, pools, switches, appliances, host files (vdc.tenancy.access, vm_access)."""

from __future__ import annotations

from typing import Any

import pytest

from vdc.api.common import AllowedNamespaces, LabelSelector, SharedWith
from vdc.api.host import HostFiles
from vdc.api.storagepool import PublishedVolume, StoragePoolSpec
from vdc.api.virtualmachine import VirtualMachine
from vdc.tenancy.access import (
    ApplianceGrant,
    Tenant,
    VolumeUse,
    allows,
    appliance_of_image,
    host_files_refusal,
    is_under,
    owner_namespace,
    volume_access,
)
from vdc.tenancy.vm_access import Infrastructure, check_vm

A, B = Tenant("a", {"team": "blue"}), Tenant("b", {"team": "red"})
BLUE = AllowedNamespaces(from_="Selector", selector=LabelSelector(match_labels={"team": "blue"}))


def pool(**spec: Any) -> StoragePoolSpec:
    return StoragePoolSpec.model_validate({"type": "dir", "target": {"path": "/p"}, **spec})


def test_allowed_namespaces_all_selector_none_same() -> None:
    assert allows(AllowedNamespaces(), A)
    assert allows(BLUE, A) and not allows(BLUE, B)
    assert not allows(AllowedNamespaces(from_="None"), A)
    assert not allows(None, A)
    assert allows(SharedWith(), A, own_namespace="a") and not allows(SharedWith(), B, own_namespace="a")
    assert allows(SharedWith(from_="All"), B, own_namespace="a")


def test_allowed_namespaces_reads_from_on_the_wire() -> None:
    assert AllowedNamespaces.model_validate({"from": "None"}).from_ == "None"
    assert AllowedNamespaces().to_wire() == {"from": "All"}


def test_owner_is_the_namespace_in_the_volume_name() -> None:
    assert owner_namespace("a_web_root.qcow2") == "a"
    assert owner_namespace("team-x_web.v2_seed.iso") == "team-x"
    assert owner_namespace("golden.qcow2") is None
    assert owner_namespace("appliance_a_tiny_0123abcd_disk1.qcow2") is None
    assert appliance_of_image("appliance_a_tiny_0123abcd_disk1.qcow2") == ("a", "tiny", "0123abcd")


def test_a_tenant_uses_its_own_volumes_and_not_another_namespaces() -> None:
    spec = pool()
    assert volume_access(VolumeUse("p", "a_web_root.qcow2", "attach"), spec, A, {}) == "Owned"
    refused = volume_access(VolumeUse("p", "a_web_root.qcow2", "clone"), spec, B, {})
    assert refused == "volume a_web_root.qcow2 in pool p belongs to namespace a"


def test_published_volume_is_cloned_or_read_only_by_allowed_namespaces() -> None:
    spec = pool(publishedVolumes=[PublishedVolume(name="golden.qcow2", allowed_namespaces=BLUE).to_wire()])
    assert volume_access(VolumeUse("p", "golden.qcow2", "clone"), spec, A, {}) == "Published"
    assert volume_access(VolumeUse("p", "golden.qcow2", "attach-read-only"), spec, A, {}) == "Published"
    assert "readOnly: true" in str(volume_access(VolumeUse("p", "golden.qcow2", "attach"), spec, A, {}))
    assert "owned by no namespace" in str(volume_access(VolumeUse("p", "golden.qcow2", "clone"), spec, B, {}))


def test_unowned_volume_needs_the_pools_adoption_grant_and_stays_with_one_namespace() -> None:
    use = VolumeUse("p", "legacy.img", "attach")
    assert "spec.adoptionNamespaces" in str(volume_access(use, pool(), A, {}))
    spec = pool(adoptionNamespaces={"from": "All"})
    assert volume_access(use, spec, A, {}) == "Adopted"
    assert volume_access(use, spec, A, {}, adopted_by=lambda: "a") == "Adopted"
    assert (
        volume_access(use, spec, B, {}, adopted_by=lambda: "a")
        == "volume legacy.img in pool p is already adopted by namespace a"
    )


def test_appliance_base_images_follow_the_appliances_sharing() -> None:
    image = "appliance_a_tiny_0123abcd_disk1.qcow2"
    private = {("a", "tiny"): ApplianceGrant("a", "tiny", "0123abcd-ffff", SharedWith())}
    shared = {("a", "tiny"): ApplianceGrant("a", "tiny", "0123abcd-ffff", SharedWith(from_="All"))}
    assert volume_access(VolumeUse("p", image, "clone"), pool(), A, private) == "Appliance"
    assert "not shared with namespace b" in str(volume_access(VolumeUse("p", image, "clone"), pool(), B, private))
    assert volume_access(VolumeUse("p", image, "clone"), pool(), B, shared) == "Appliance"
    assert "clone it or attach it readOnly" in str(volume_access(VolumeUse("p", image, "attach"), pool(), B, shared))
    recreated = {("a", "tiny"): ApplianceGrant("a", "tiny", "99999999", SharedWith(from_="All"))}
    assert "no longer exists" in str(volume_access(VolumeUse("p", image, "clone"), pool(), B, recreated))


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        ("/var/lib/vdc/boot/vmlinuz", True),
        ("/var/lib/vdc/boot", False),
        ("/var/lib/vdc/bootleg/vmlinuz", False),
        ("/var/lib/vdc/boot/../../../etc/shadow", False),
        ("/etc/shadow", False),
    ],
)
def test_is_under_is_lexical_and_strict(path: str, inside: bool) -> None:
    assert is_under(path, "/var/lib/vdc/boot") is inside


def test_host_files_need_a_declared_directory_and_the_namespace() -> None:
    files = HostFiles(allowed_paths=["/boot/vdc"], allowed_namespaces=BLUE)
    assert host_files_refusal(["/boot/vdc/k"], files, A) is None
    assert host_files_refusal([], HostFiles(), A) is None
    assert host_files_refusal(["/boot/vdc/k"], HostFiles(), A) == "it declares no spec.hostFiles.allowedPaths"
    assert "does not allow namespace b" in str(host_files_refusal(["/boot/vdc/k"], files, B))
    assert host_files_refusal(["/boot/vdc/k", "/etc/shadow"], files, A) == (
        "/etc/shadow outside its spec.hostFiles.allowedPaths (/boot/vdc)"
    )


def vm(namespace: str, **spec: Any) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {"metadata": {"name": "web", "namespace": namespace, "uid": "u1"}, "spec": {"memory": {"size": "64Mi"}, **spec}}
    )


def test_vm_check_names_every_refused_route() -> None:
    infra = Infrastructure(
        pools={"p": pool(), "private": pool(allowedNamespaces={"from": "None"})},
        switches={"lan": AllowedNamespaces(), "admin": AllowedNamespaces(from_="None")},
        appliances={("a", "tiny"): ApplianceGrant("a", "tiny", "0123abcd", SharedWith())},
    )
    hostile = vm(
        "b",
        disks=[
            {"name": "steal", "source": {"volume": {"pool": "p", "name": "a_web_root.qcow2"}}},
            {"name": "cow", "source": {"clone": {"pool": "p", "baseVolume": "a_web_root.qcow2"}}},
            {"name": "scratch", "source": {"blank": {"pool": "private", "size": "1Gi"}}},
            {"name": "os", "source": {"clone": {"pool": "p", "appliance": {"name": "tiny", "namespace": "a"}}}},
        ],
        interfaces=[{"name": "nic0", "switch": "admin"}, {"name": "nic1", "switch": "lan"}],
    )
    refusals = check_vm(hostile, B, infra).refusals
    assert refusals == (
        "disk steal: volume a_web_root.qcow2 in pool p belongs to namespace a",
        "disk cow (clone.baseVolume): volume a_web_root.qcow2 in pool p belongs to namespace a",
        "disk scratch: StoragePool private does not allow namespace b (its spec.allowedNamespaces)",
        "disk os: Appliance a/tiny is not shared with namespace b (its spec.sharedWith)",
        "interface nic0: VirtualSwitch admin does not allow namespace b (its spec.allowedNamespaces)",
    )


def test_vm_check_passes_what_the_namespace_owns_and_reports_why() -> None:
    infra = Infrastructure(pools={"p": pool()}, switches={"lan": AllowedNamespaces()})
    own = vm(
        "a",
        disks=[
            {"name": "root", "source": {"volume": {"pool": "p", "name": "a_old_root.qcow2"}}},
            {"name": "data", "source": {"blank": {"pool": "p", "size": "1Gi"}}},
        ],
        interfaces=[{"name": "nic0", "switch": "lan"}],
    )
    access = check_vm(own, A, infra)
    assert access.refusals == ()
    assert access.volumes == {"root": "Owned", "data": "Owned"}


def test_a_missing_appliance_of_another_namespace_reads_as_not_shared() -> None:
    refusals = check_vm(vm("b", fromAppliance={"name": "nope", "namespace": "a"}), B, Infrastructure()).refusals
    assert refusals == ("spec.fromAppliance: Appliance a/nope is not shared with namespace b",)


def test_objects_not_yet_known_are_left_to_the_waits() -> None:
    unknown = vm("b", disks=[{"name": "d", "source": {"blank": {"pool": "later", "size": "1Gi"}}}],
                 interfaces=[{"name": "n", "switch": "later"}])  # fmt: skip
    assert check_vm(unknown, B, Infrastructure()).refusals == ()
