"""vdc.rbac (the list the chart's RBAC is checked against) against the code: the kopf handlers that
are registered and the Kubernetes client calls the operator makes. A new watch, deletion handler or
API call without its line in vdc.rbac fails here."""

from __future__ import annotations

import re
from pathlib import Path

import kopf

import vdc.handlers  # noqa: F401  (registers the handlers)
from vdc import rbac
from vdc.api import ALL_KINDS
from vdc.api.meta import GROUP

SOURCE = Path(rbac.__file__).parent


def _names(handlers: object) -> set[tuple[str, str]]:
    return {(h.selector.group, h.selector.any_name) for h in handlers}  # type: ignore[attr-defined]


def _granted(resource: str, group: str = GROUP) -> set[str]:
    return {v for a in rbac.CLUSTER_WIDE if a.group == group and a.resource == resource for v in a.verbs}


def test_watched_kinds_are_the_ones_with_kopf_handlers() -> None:
    registry = kopf.get_default_registry()
    resource_handlers = [
        *registry._watching.get_all_handlers(),
        *registry._changing.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
        *registry._indexing.get_all_handlers(),
        *registry._webhooks.get_all_handlers(),
    ]
    assert _names(resource_handlers) == {(GROUP, plural) for plural in rbac.WATCHED} | {
        ("", plural) for plural in rbac.WATCHED_CORE
    }
    for plural in rbac.WATCHED:
        assert {"list", "watch"} <= _granted(plural), plural


def test_finalizer_patch_exactly_where_kopf_has_changing_handlers() -> None:
    changing = _names(kopf.get_default_registry()._changing.get_all_handlers())
    assert changing == {(GROUP, plural) for plural in rbac.WITH_FINALIZER}
    for plural in rbac.WATCHED:
        assert ("patch" in _granted(plural)) == (plural in rbac.WITH_FINALIZER + rbac.ANNOTATED), plural


def test_annotation_patch_exactly_where_an_annotation_is_removed() -> None:
    source = "\n".join(p.read_text() for p in (SOURCE / "controllers").glob("*.py"))
    kinds = set(re.findall(r"remove_annotation\(\s*(\w+)\.KIND", source))
    assert {info.plural for info in (k.KIND for k in ALL_KINDS) if info.kind in kinds} == set(rbac.ANNOTATED)


def test_status_patch_for_every_kind_whose_controller_writes_status() -> None:
    source = "\n".join(p.read_text() for p in (SOURCE / "controllers").glob("*.py"))
    kinds = set(re.findall(r"patch_status\(\s*(\w+)\.KIND", source))
    plurals = {info.plural for info in (k.KIND for k in ALL_KINDS) if info.kind in kinds}
    assert plurals, "no patch_status calls found: the pattern no longer matches the code"
    status_resources = {a.resource for a in rbac.CLUSTER_WIDE if a.resource.endswith("/status")}
    assert status_resources == {f"{p}/status" for p in plurals}
    assert all(_granted(r) == {"patch"} for r in status_resources)


# Every kubernetes-client call in the operator, and the access it needs. A new call fails the test
# below until it is added here and to vdc.rbac (and so to the chart).
CLIENT_CALLS = {
    "patch_namespaced_custom_object_status": "status patch",
    "patch_cluster_custom_object_status": "status patch",
    "read_namespaced_secret": ("", "secrets", "get"),
    "read_namespaced_config_map": ("", "configmaps", "get"),  # Appliance trust bundles
    "create_namespaced_event": ("", "events", "create"),
    "patch_namespaced_custom_object": (GROUP, "virtualmachines", "patch"),  # a VM's spec from its Appliance
    "patch_cluster_custom_object": (GROUP, "hosts", "patch"),  # vdc.dev/remove-orphans cleared
    # vdc.leader.LeaseApi: the calls kubernetes.leaderelection's LeaseLock makes, through it
    "read_namespaced_lease": (rbac.LEASE_GROUP, "leases", "get"),
    "create_namespaced_lease": (rbac.LEASE_GROUP, "leases", "create"),
    "replace_namespaced_lease": (rbac.LEASE_GROUP, "leases", "update"),
}


def test_every_kubernetes_client_call_is_accounted_for() -> None:
    source = "\n".join(p.read_text() for p in SOURCE.rglob("*.py"))
    calls = set(re.findall(r"self\._(?:core|custom|apps|rbac|coordination)\.(\w+)", source))
    assert calls == set(CLIENT_CALLS)
    # only these API classes are instantiated (as self._core / self._custom / the Lease's
    # self._coordination), so the calls above are all
    assert set(re.findall(r"kubernetes\.client\.(\w+Api)\(", source)) == {
        "CoreV1Api",
        "CustomObjectsApi",
        "CoordinationV1Api",
    }
    listed = (*rbac.CLUSTER_WIDE, rbac.SECRETS, *rbac.LEADER_ELECTION)
    for access in CLIENT_CALLS.values():
        if isinstance(access, tuple):
            group, resource, verb = access
            found = [a for a in listed if (a.group, a.resource) == (group, resource)]
            assert any(verb in a.verbs for a in found), access


def test_leader_election_needs_exactly_get_create_update_on_leases() -> None:
    """LeaseLock reads, creates and replaces; nothing else (no list/watch/patch/delete), and only in
    the Lease's namespace (the list is not part of the cluster-wide rules)."""
    verbs = sorted(v for a in rbac.LEADER_ELECTION for v in a.verbs)
    assert verbs == ["create", "get", "update"]
    assert {(a.group, a.resource) for a in rbac.LEADER_ELECTION} == {("coordination.k8s.io", "leases")}
    assert not [a for a in rbac.CLUSTER_WIDE if a.resource == "leases"]
    assert not any("one replica" in why for why in rbac.NOT_NEEDED)


def test_cluster_rules_merge_verbs_per_resource_without_wildcards() -> None:
    rules = rbac.cluster_rules()
    keys = [(r["apiGroups"][0], r["resources"][0]) for r in rules]
    assert len(keys) == len(set(keys))
    assert {(GROUP, "storagepools"): ["list", "patch", "watch"]}.items() <= {
        (r["apiGroups"][0], r["resources"][0]): r["verbs"] for r in rules
    }.items()
    assert not any("*" in v for r in rules for values in r.values() for v in values)
    assert rbac.SECRETS.verbs == ("get",)
