"""RBAC for people (issue 11, part 5): the chart's ClusterRoles vdc-view, vdc-edit, vdc-admin (and
vdc-quota-admin, vdc-infrastructure-view), aggregated into Kubernetes' view/edit/admin, tried by
users that authenticate with client certificates signed by the control plane's CA — each with its
own kubeconfig, as a person would, never `--as`. Tenants get their role in their own namespace by a
RoleBinding; the datacenter's admins get theirs by ClusterRoleBindings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import helmchart
import rig
import tenants
from tenants import User

RELEASE, RELEASE_NS = "tenancy-rbac", "vdc-tenancy-rbac"
A, B = "tenant-a", "tenant-b"
GROUP = "vdc.dev"
READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")
INFRA = ("hosts", "storagepools", "virtualswitches", "migrationpolicies", "computeclusters")  # vdc-admin's
TENANT_KINDS = ("virtualmachines", "appliances", "virtualmachinemigrations")  # namespaced, vdc-edit's
ALL_KINDS = (*INFRA, *TENANT_KINDS, "computequotas")
ANY = "*"  # `kubectl auth can-i -A`: in every namespace

# user -> (groups, [(kind, role, namespace or None for a ClusterRoleBinding)])
USERS: dict[str, tuple[tuple[str, ...], list[tuple[str, str, str | None]]]] = {
    "alice": (("tenants",), [("ClusterRole", "vdc-edit", A)]),  # the chart's role, in her namespace
    "bob": (("tenants",), [("ClusterRole", "edit", B)]),  # Kubernetes' own `edit`: aggregation
    "carol": ((), [("ClusterRole", "view", A)]),  # Kubernetes' `view` in tenant-a
    "dave": ((), [("ClusterRole", "admin", B)]),  # namespace owner: Kubernetes' `admin` in tenant-b
    "ops": (("dc-admins",), [("ClusterRole", "vdc-admin", None), ("ClusterRole", "vdc-quota-admin", None)]),
    "erin": ((), [("ClusterRole", "vdc-view", None)]),  # vdc-view cluster-wide
    "frank": (("tenants",), [("ClusterRole", "vdc-edit", A), ("ClusterRole", "vdc-infrastructure-view", None)]),
    "nobody": ((), []),
}


@pytest.fixture(scope="module")
def users(controlplane: rig.ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, User]]:
    cp = controlplane
    helmchart.install(cp, RELEASE, RELEASE_NS, {})
    tenants.aggregate_cluster_roles(cp)  # kube-controller-manager's job; the rig has none
    for ns in (A, B):
        helmchart.ensure_namespace(cp, ns)
    directory = tmp_path_factory.mktemp("tenant-users")
    made: dict[str, User] = {}
    bindings: list[tuple[str, str | None]] = []
    for name, (groups, grants) in USERS.items():
        made[name] = tenants.make_user(cp, name, directory, groups)
        for _, role, ns in grants:
            binding = f"{name}-{role}"
            if ns is None:
                cp.kubectl("create", "clusterrolebinding", binding, f"--clusterrole={role}", f"--user={name}")
            else:
                cp.kubectl("create", "rolebinding", binding, "-n", ns, f"--clusterrole={role}", f"--user={name}")
            bindings.append((binding, ns))
    try:
        yield made
    finally:
        for binding, ns in bindings:
            kind = "rolebinding" if ns else "clusterrolebinding"
            cp.kubectl("delete", kind, binding, *(["-n", ns] if ns else []), "--ignore-not-found", check=False)
        for ns in (A, B):  # namespaces stay: without kube-controller-manager one never finishes terminating
            cp.kubectl(
                "delete", "vm,appliance,computequota,virtualmachinemigrations.vdc.dev", "--all", "-n", ns,
                "--ignore-not-found", check=False,
            )  # fmt: skip
        cp.kubectl("delete", "migrationpolicies.vdc.dev", "--all", "--ignore-not-found", check=False)
        helmchart.helm(cp, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait=false", check=False)
        tenants.aggregate_cluster_roles(cp)  # drop the vdc rules from view/edit/admin again


def vm(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runStrategy": "Halted", "memory": {"size": "64Mi"}},
    }


def migration(name: str, namespace: str, vm_name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "VirtualMachineMigration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"vm": vm_name},
    }


def migration_policy(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "MigrationPolicy",
        "metadata": {"name": name},
        "spec": {"bandwidth": "64Mi", "parallelMigrationsPerHost": 1},
    }


# --- the rendered roles -------------------------------------------------------------------------------


def _roles(controlplane: rig.ControlPlane, values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    docs = helmchart.render(controlplane, values)
    return {
        d["metadata"]["name"]: d
        for d in helmchart.find(docs, "ClusterRole")
        if "vdc-operator" not in d["metadata"]["name"]
    }


def _grants(role: dict[str, Any]) -> set[tuple[str, str]]:
    out = set()
    for rule in role["rules"]:
        assert rule["apiGroups"] == [GROUP] and set(rule) == {"apiGroups", "resources", "verbs"}, rule
        out |= {(res, verb) for res in rule["resources"] for verb in rule["verbs"]}
    return out


def test_user_roles_grant_exactly_this(controlplane: rig.ControlPlane) -> None:
    roles = _roles(controlplane)
    expected = {
        "vdc-view": {(k, v) for k in ALL_KINDS for v in READ},
        "vdc-edit": {(k, v) for k in TENANT_KINDS for v in READ + WRITE} | {("computequotas", v) for v in READ},
        "vdc-admin": {(k, v) for k in INFRA for v in READ + WRITE}
        | {(k, v) for k in (*TENANT_KINDS, "computequotas") for v in READ},
        "vdc-quota-admin": {("computequotas", v) for v in READ + WRITE},
        "vdc-infrastructure-view": {(k, v) for k in ("storagepools", "virtualswitches") for v in READ},
    }
    assert {name: _grants(role) for name, role in roles.items()} == expected
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    labels = {
        name: {k.removeprefix(aggregate) for k in r["metadata"]["labels"] if k.startswith(aggregate)}
        for name, r in roles.items()
    }
    assert labels == {
        "vdc-view": {"view"},
        "vdc-edit": {"edit"},
        "vdc-admin": {"admin"},
        "vdc-quota-admin": set(),  # not in `admin`: namespace owners would raise their own quota
        "vdc-infrastructure-view": set(),
    }
    for role in roles.values():
        assert all(
            r["metadata"]["labels"][f"{aggregate}{x}"] == "true" for r in [role] for x in labels[r["metadata"]["name"]]
        )


def test_user_roles_can_be_prefixed_or_left_out(controlplane: rig.ControlPlane) -> None:
    assert set(_roles(controlplane, {"userRoles": {"namePrefix": "acme-"}})) == {
        "acme-vdc-view", "acme-vdc-edit", "acme-vdc-admin", "acme-vdc-quota-admin", "acme-vdc-infrastructure-view",
    }  # fmt: skip
    assert _roles(controlplane, {"userRoles": {"create": False}}) == {}


# --- who is who ---------------------------------------------------------------------------------------


def test_users_are_authenticated_by_their_certificates(users: dict[str, User]) -> None:
    for name, (groups, _) in USERS.items():
        info = users[name].whoami()
        assert info["username"] == name
        assert set(info["groups"]) == {*groups, "system:authenticated"}  # not system:masters


# --- kubectl auth can-i, as the user ------------------------------------------------------------------

# (user, verb, resource, namespace, subresource, allowed)
Check = tuple[str, str, str, str | None, str | None, bool]


def _checks() -> list[Check]:
    c: list[Check] = []
    # alice: vdc-edit in tenant-a. bob: Kubernetes' `edit` in tenant-b (vdc-view + vdc-edit aggregated).
    for user, own, other in (("alice", A, B), ("bob", B, A)):
        for kind in TENANT_KINDS:
            c += [(user, verb, kind, own, None, True) for verb in READ + WRITE]
            c += [(user, verb, kind, other, None, False) for verb in READ + WRITE]
            c += [(user, verb, kind, own, "status", False) for verb in ("update", "patch")]
        c += [(user, verb, "computequotas", own, None, True) for verb in READ]
        c += [(user, verb, "computequotas", own, None, False) for verb in WRITE]
        c += [(user, "patch", "computequotas", own, "status", False)]
        c += [(user, "list", "virtualmachines", ANY, None, False)]
        for kind in INFRA:
            c += [(user, verb, kind, None, None, False) for verb in ("create", "get", "list", "patch", "delete")]
            c += [(user, "create", kind, own, None, False)]  # what a namespaced can-i asks, too
    # carol: Kubernetes' `view` in tenant-a: reads tenant-a's vdc objects, writes nothing, not Hosts.
    c += [("carol", verb, kind, A, None, True) for kind in (*TENANT_KINDS, "computequotas") for verb in READ]
    c += [("carol", verb, kind, A, None, False) for kind in (*TENANT_KINDS, "computequotas") for verb in WRITE]
    c += [("carol", "list", kind, None, None, False) for kind in INFRA]  # a RoleBinding: no cluster-scoped kinds
    c += [("carol", "get", "virtualmachines", B, None, False)]
    # dave: Kubernetes' `admin` in tenant-b: everything vdc-edit gives, but not his own quota.
    c += [("dave", verb, kind, B, None, True) for kind in TENANT_KINDS for verb in ("create", "delete")]
    c += [("dave", verb, "computequotas", B, None, False) for verb in WRITE]
    c += [("dave", "create", kind, None, None, False) for kind in INFRA]
    c += [("dave", "get", "virtualmachines", A, None, False)]
    # ops: vdc-admin + vdc-quota-admin cluster-wide: the infrastructure and every quota; VMs read-only.
    c += [("ops", verb, kind, None, None, True) for kind in INFRA for verb in READ + WRITE]
    c += [("ops", verb, "computequotas", ns, None, True) for ns in (A, B) for verb in ("create", "patch", "delete")]
    c += [("ops", "list", kind, ANY, None, True) for kind in (*TENANT_KINDS, "computequotas")]
    c += [("ops", "create", kind, A, None, False) for kind in ("virtualmachines", "virtualmachinemigrations")]
    c += [("ops", "patch", kind, None, "status", False) for kind in INFRA]
    # erin: vdc-view cluster-wide reads everything, Hosts included, and writes nothing.
    c += [("erin", verb, kind, None if kind in INFRA else ANY, None, True) for kind in ALL_KINDS for verb in READ]
    c += [("erin", "create", kind, None, None, False) for kind in INFRA]
    c += [("erin", "create", "virtualmachines", A, None, False)]
    # frank: vdc-edit in tenant-a plus vdc-infrastructure-view: sees pools and switches, not Hosts.
    c += [("frank", verb, kind, None, None, True) for kind in ("storagepools", "virtualswitches") for verb in READ]
    c += [("frank", verb, kind, None, None, False) for kind in ("storagepools", "virtualswitches") for verb in WRITE]
    c += [("frank", "list", kind, None, None, False) for kind in ("hosts", "migrationpolicies")]
    c += [("frank", "list", "virtualmachines", B, None, False)]
    c += [("frank", "create", "virtualmachinemigrations", A, None, True)]
    c += [("frank", "create", "virtualmachinemigrations", B, None, False)]
    # nobody: authenticated, bound to nothing.
    c += [("nobody", verb, kind, A, None, False) for kind in ALL_KINDS for verb in ("get", "list", "create")]
    return c


CHECKS = _checks()


def _id(check: Check) -> str:
    user, verb, kind, ns, sub, allowed = check
    return f"{user}-{'may' if allowed else 'not'}-{verb}-{kind}{'/' + sub if sub else ''}-{ns or 'cluster'}"


@pytest.mark.parametrize("user", sorted(USERS))
def test_can_i(users: dict[str, User], user: str) -> None:
    """Every check of one user (one test per user: a `kubectl auth can-i` each, ~250 in all)."""
    wrong = []
    for name, verb, kind, ns, sub, allowed in CHECKS:
        if name != user:
            continue
        if users[name].can_i(verb, f"{kind}.{GROUP}", ns, sub) != allowed:
            wrong.append(_id((name, verb, kind, ns, sub, allowed)))
    assert not wrong, "\n".join(wrong)


def test_every_user_has_checks() -> None:
    assert {c[0] for c in CHECKS} == set(USERS)
    assert len(set(map(_id, CHECKS))) == len(CHECKS)


# --- real requests, not only reviews -------------------------------------------------------------------


def _forbidden(result: Any) -> None:
    assert result.returncode != 0 and "Forbidden" in result.stderr, result.stdout + result.stderr


def test_tenant_creates_its_vms_and_cannot_touch_the_other_tenants(users: dict[str, User]) -> None:
    alice, bob = users["alice"], users["bob"]
    alice.kubectl("create", "-f", "-", input=json.dumps(vm("a-vm", A)))
    bob.kubectl("create", "-f", "-", input=json.dumps(vm("b-vm", B)))
    assert json.loads(alice.kubectl("get", "vm", "-n", A, "-o", "json"))["items"][0]["metadata"]["name"] == "a-vm"
    _forbidden(alice.kubectl_result("get", "vm", "-n", B))
    _forbidden(alice.kubectl_result("get", "vm", "b-vm", "-n", B))
    _forbidden(alice.kubectl_result("get", "vm", "-A"))
    _forbidden(bob.kubectl_result("delete", "vm", "a-vm", "-n", A))
    _forbidden(alice.kubectl_result("create", "-f", "-", input=json.dumps(vm("sneaky", B))))
    # status is the operator's
    patch = json.dumps({"status": {"phase": "Running"}})
    _forbidden(
        alice.kubectl_result("patch", "vm", "a-vm", "-n", A, "--subresource=status", "--type=merge", "-p", patch)
    )
    alice.kubectl("delete", "vm", "a-vm", "-n", A)
    bob.kubectl("delete", "vm", "b-vm", "-n", B)


@pytest.mark.parametrize("user", ["alice", "bob", "dave"])
def test_tenant_cannot_create_infrastructure(users: dict[str, User], user: str) -> None:
    """Server-side dry runs of real creates: a RoleBinding (even of `admin`) never reaches cluster-scoped kinds."""
    docs = [
        {"kind": "Host", "spec": {"uri": "test:///default"}},
        {"kind": "StoragePool", "spec": {"type": "dir", "path": "/var/lib/vdc/x"}},
        {"kind": "VirtualSwitch", "spec": {"mode": "isolated"}},
        {"kind": "MigrationPolicy", "spec": {"bandwidth": "1Gi"}},
    ]
    for doc in docs:
        body = {"apiVersion": f"{GROUP}/v1alpha1", "metadata": {"name": f"{user}-x"}, **doc}
        _forbidden(users[user].kubectl_result("create", "--dry-run=server", "-f", "-", input=json.dumps(body)))


def test_tenant_migrates_its_vms_and_cannot_write_migration_policies(users: dict[str, User]) -> None:
    """vdc-edit (alice) and `edit` (bob) start and cancel migrations in their own namespace only; the
    MigrationPolicies are the datacenter's (vdc-admin: ops), readable by vdc-view (erin)."""
    alice, bob, ops, erin = users["alice"], users["bob"], users["ops"], users["erin"]
    alice.kubectl("create", "-f", "-", input=json.dumps(migration("a-mig", A, "a-vm")))
    got = json.loads(alice.kubectl("get", "virtualmachinemigrations.vdc.dev", "a-mig", "-n", A, "-o", "json"))
    assert got["spec"]["vm"] == "a-vm"
    _forbidden(alice.kubectl_result("create", "-f", "-", input=json.dumps(migration("sneaky", B, "b-vm"))))
    _forbidden(bob.kubectl_result("delete", "virtualmachinemigrations.vdc.dev", "a-mig", "-n", A))
    _forbidden(bob.kubectl_result("get", "virtualmachinemigrations.vdc.dev", "-n", A))
    # the migration's progress is the operator's
    patch = json.dumps({"status": {"phase": "Succeeded"}})
    _forbidden(
        alice.kubectl_result(
            "patch", "virtualmachinemigrations.vdc.dev", "a-mig", "-n", A, "--subresource=status", "--type=merge",
            "-p", patch,
        )
    )  # fmt: skip
    # ops sees it (vdc-admin reads migrations) but does not start or cancel them
    assert json.loads(ops.kubectl("get", "virtualmachinemigrations.vdc.dev", "-A", "-o", "json"))["items"]
    _forbidden(ops.kubectl_result("delete", "virtualmachinemigrations.vdc.dev", "a-mig", "-n", A))
    alice.kubectl("delete", "virtualmachinemigrations.vdc.dev", "a-mig", "-n", A)

    # MigrationPolicies: a tenant may neither create nor change one; ops may; erin reads it.
    for user in (alice, bob):
        _forbidden(user.kubectl_result("create", "-f", "-", input=json.dumps(migration_policy(f"{user.name}-mp"))))
    ops.kubectl("create", "-f", "-", input=json.dumps(migration_policy("slow")))
    got = json.loads(erin.kubectl("get", "migrationpolicies.vdc.dev", "slow", "-o", "json"))
    assert got["spec"]["parallelMigrationsPerHost"] == 1
    faster = json.dumps({"spec": {"parallelMigrationsPerHost": 4}})
    for user in (alice, bob):
        _forbidden(user.kubectl_result("patch", "migrationpolicies.vdc.dev", "slow", "--type=merge", "-p", faster))
        _forbidden(user.kubectl_result("delete", "migrationpolicies.vdc.dev", "slow"))
    _forbidden(erin.kubectl_result("delete", "migrationpolicies.vdc.dev", "slow"))
    ops.kubectl("delete", "migrationpolicies.vdc.dev", "slow")


def test_tenant_cannot_set_its_own_quota(users: dict[str, User]) -> None:
    quota = {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "ComputeQuota",
        "metadata": {"name": "mine", "namespace": B},
        "spec": {"hard": {"virtualMachines": 100}},
    }
    for user in ("bob", "dave"):  # `edit` and `admin` of tenant-b
        _forbidden(users[user].kubectl_result("create", "-f", "-", input=json.dumps(quota)))
    users["ops"].kubectl("create", "-f", "-", input=json.dumps(quota))  # vdc-quota-admin may
    assert json.loads(users["bob"].kubectl("get", "computequota", "mine", "-n", B, "-o", "json"))["spec"]["hard"]
    _forbidden(users["dave"].kubectl_result("delete", "computequota", "mine", "-n", B))
    users["ops"].kubectl("delete", "computequota", "mine", "-n", B)


def test_aggregation_reaches_the_built_in_roles(controlplane: rig.ControlPlane, users: dict[str, User]) -> None:
    """The chart's labels are what `view`/`edit`/`admin` select (so kube-controller-manager puts our
    rules into them; here tenants.aggregate_cluster_roles did)."""
    del users  # the chart is installed

    def vdc_rules(role: str) -> set[tuple[str, str]]:
        rules = controlplane.get_json("clusterrole", role)["rules"]
        return {
            (r, v)
            for rule in rules
            if GROUP in rule.get("apiGroups", [])
            for r in rule["resources"]
            for v in rule["verbs"]
        }

    view, edit, admin = (vdc_rules(r) for r in ("view", "edit", "admin"))
    assert view == {(k, v) for k in ALL_KINDS for v in READ}
    assert view < edit < admin
    assert ("virtualmachines", "create") in edit and ("hosts", "create") not in edit
    assert ("virtualmachinemigrations", "create") in edit and ("migrationpolicies", "create") not in edit
    assert ("hosts", "create") in admin and ("computequotas", "create") not in admin
    assert ("migrationpolicies", "create") in admin


def test_install_notes_explain_the_roles(controlplane: rig.ControlPlane, users: dict[str, User]) -> None:
    del users  # the chart is installed
    notes = helmchart.helm(controlplane, "get", "notes", RELEASE, "-n", RELEASE_NS).stdout
    assert "vdc-view (in `view`), vdc-edit (in `edit`)" in notes, notes
    assert "only a ClusterRoleBinding grants them" in notes, notes
    assert "no host-file directory policy" in notes, notes
