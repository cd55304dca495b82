"""Every Kubernetes API access the operator makes, in one list: the chart's RBAC is checked against it.

The Helm chart (charts/vdc-operator/templates/rbac.yaml) grants exactly these: an integration test
installs the chart and compares what its ServiceAccount may do (`kubectl auth can-i --list`) with this
list. What the operator really asks for is checked against it from behaviour: a unit test
(tests/unit/test_rbac.py) records every request the operator's own API code sends, and an integration
test (tests/integration/test_chart_operator.py) reads the API server's audit log of a run under the
chart's ServiceAccount (kopf's watches and finalizer patches included). A new API call in the code means
a new line here, then the chart.

Pure data: no I/O, no imports of kopf or the kubernetes client.
"""

from __future__ import annotations

from dataclasses import dataclass

from vdc.api.meta import GROUP


@dataclass(frozen=True)
class Access:
    """One API access: ``verbs`` on ``resource`` (``plural`` or ``plural/subresource``) in ``group``."""

    group: str  # "" is the core group
    resource: str
    verbs: tuple[str, ...]
    why: str


WATCHED = (
    "hosts",
    "storagepools",
    "virtualswitches",
    "virtualmachines",
    "appliances",
    "computequotas",
    "virtualmachinemigrations",
    "migrationpolicies",
    "computeclusters",
)
"""Our kinds the operator watches: kopf handlers (vdc.handlers), and VirtualMachines by a watch of its own
(vdc.kube.watch); it primes its caches from a LIST of each."""

WATCHED_CORE = ("namespaces",)
"""Core kinds with kopf handlers: namespace labels decide allowedNamespaces selectors."""

WITH_FINALIZER = ("storagepools", "virtualswitches", "virtualmachines", "appliances", "virtualmachinemigrations")
"""Kinds whose deletion goes through the operator: kopf's deletion handlers patch their metadata (finalizer,
progress annotations); for VirtualMachines the VM controller adds and removes the finalizer itself."""

ANNOTATED = ("hosts", "computeclusters")
"""Kinds whose annotations the operator sets or removes (KubeWriter.set_annotation / remove_annotation:
vdc.dev/remove-orphans, vdc.dev/power-action and DPM's vdc.dev/dpm-standby on a Host; vdc.dev/drs-apply on a
ComputeCluster once the moves it asked for are made)."""

WITH_STATUS = (
    "hosts",
    "storagepools",
    "virtualswitches",
    "virtualmachines",
    "appliances",
    "computequotas",
    "virtualmachinemigrations",
    "computeclusters",
)
"""Kinds whose status the operator writes (KubeWriter.patch_status): every watched kind but MigrationPolicies,
which the operator only reads."""

READ_BACK = ("virtualmachines", "virtualmachinemigrations")
"""Kinds the operator reads by name (KubeWriter.read): a migration after its conditional status write, and a
migration or its VM when a conditional write met a newer version than the cache holds."""

CREATED = ("virtualmachinemigrations",)
"""Kinds the operator creates and deletes (KubeWriter.create / KubeWriter.delete): a Host's evacuation."""

_WATCH_WHY = {
    "virtualmachines": " (by the operator's own list and watch, vdc.kube.watch: VMs come by the thousand)",
    "migrationpolicies": "; a cache of the policies, to pick a migration's tuning (the operator never writes them)",
}
_PATCH_WHY = {
    "virtualmachines": "; for VMs the VM controller's own (KubeWriter.add_finalizer / remove_finalizer); "
    "KubeWriter.patch_spec fills in a VM's spec from its Appliance",
    "virtualmachinemigrations": "; the deletion handler cancels the migration (the VM stays on its source)",
}
_STATUS_WHY = {
    "hosts": " (a Host's status.evacuation included)",
}

CLUSTER_WIDE: tuple[Access, ...] = (
    *(
        Access(GROUP, plural, ("list", "watch"), "every object of the kind is watched" + _WATCH_WHY.get(plural, ""))
        for plural in WATCHED
    ),
    *(
        Access(
            GROUP,
            plural,
            ("patch",),
            "the vdc.dev/finalizer added and removed (kopf's deletion handlers, with their progress annotations)"
            + _PATCH_WHY.get(plural, ""),
        )
        for plural in WITH_FINALIZER
    ),
    *(
        Access(
            GROUP,
            plural,
            ("patch",),
            "KubeWriter.remove_annotation clears an annotation once what it asked is done (vdc.dev/remove-orphans,"
            " vdc.dev/power-action, vdc.dev/drs-apply); KubeWriter.set_annotation sets DPM's vdc.dev/dpm-standby",
        )
        for plural in ANNOTATED
    ),
    *(
        Access(
            GROUP,
            f"{plural}/status",
            ("patch",),
            "KubeWriter.patch_status: a merge patch of what changed" + _STATUS_WHY.get(plural, ""),
        )
        for plural in WITH_STATUS
    ),
    *(
        Access(
            GROUP,
            plural,
            ("get",),
            "KubeWriter.read: a migration is read again after its conditional status write, for the new"
            " resourceVersion the next write is conditional on, and a migration or the VM it moves when such a"
            " write met a newer version than the cache held; by name only",
        )
        for plural in READ_BACK
    ),
    *(
        Access(
            GROUP,
            plural,
            ("create", "delete"),
            "KubeWriter.create / KubeWriter.delete: a Host in maintenance creates one migration per VM it"
            " evacuates, in the VM's namespace (any tenant namespace), and deletes the failed ones it retries",
        )
        for plural in CREATED
    ),
    Access(
        "",
        "events",
        ("create",),
        "KubeWriter.event and kopf's warnings, in the object's namespace (any tenant namespace; cluster-scoped"
        " objects: `default` for ours, the operator's namespace for kopf's)",
    ),
    Access(
        "",
        "namespaces",
        ("list", "watch"),
        "tenancy: allowedNamespaces selectors match namespace labels (vdc.handlers.namespace_event)",
    ),
    Access(
        "",
        "configmaps",
        ("get",),
        "Appliance trust bundles (KubeWriter.configmap_data): the ConfigMap `vdc run --appliance-trust-configmap`"
        " names, and an Appliance's spec.trustBundle.configMap in its own namespace (any tenant namespace);"
        " by name only, no list/watch",
    ),
    Access(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("list", "watch"),
        "kopf notices CRDs installed or upgraded after it started (without it: warning, restart needed)",
    ),
)
"""Granted cluster-wide (ClusterRole): cluster-scoped kinds, and namespaced ones in every tenant namespace."""

SECRETS = Access(
    "",
    "secrets",
    ("get",),
    "Host spec.credentialsSecretRef (SSH key / TLS client certificate), VM spec.cloudInit.*SecretRef and"
    " Appliance spec.trustBundle.secret, read by KubeWriter.secret_data; granted only where the chart is told"
    " they live",
)
"""Granted per namespace (Role), restricted by resourceNames when the Secrets are named."""

LEASE_GROUP = "coordination.k8s.io"

LEADER_ELECTION: tuple[Access, ...] = (
    Access(
        LEASE_GROUP,
        "leases",
        ("create",),
        "vdc.leader: the first replica creates the Lease (kubernetes.leaderelection LeaseLock,"
        " create_namespaced_lease); a create cannot be limited to a name",
    ),
    Access(
        LEASE_GROUP,
        "leases",
        ("get", "update"),
        "vdc.leader: every replica reads the Lease (read_namespaced_lease); the leader renews it, a standby"
        " takes over an expired one and a leader that stops releases it (replace_namespaced_lease);"
        " granted on the Lease's name only",
    ),
)
"""Granted in the Lease's namespace only (Role; the chart: the release's namespace and the Lease named
after the release), for `vdc run --leader-elect`."""

NOT_NEEDED = (
    "peering (kopfpeerings): kopf runs standalone; replicas elect their leader with a Lease (vdc.leader)",
    "list/watch/patch/delete on leases: the election reads and writes one Lease by name",
    "get on our kinds but virtualmachines, virtualmachinemigrations: kopf lists and watches, and the operator's"
    " caches answer every read; only a migration, or the VM it moves, is read by name (KubeWriter.read, after"
    " a conditional write)",
    "update on our kinds: the operator writes by merge patch only (status, a VM's spec defaults, kopf's"
    " finalizers), never a whole object",
    "create/delete on our kinds but virtualmachinemigrations: the operator creates and deletes nothing else"
    " (a Host's evacuation creates migrations and deletes failed ones it retries)",
    "anything but list/watch on migrationpolicies: the operator only reads them (no finalizer, no status)",
)
"""What the operator does not need, and why (for reviewers of the chart)."""


def cluster_rules() -> list[dict[str, list[str]]]:
    """CLUSTER_WIDE as RBAC PolicyRules, one per (group, resource), verbs sorted."""
    merged: dict[tuple[str, str], set[str]] = {}
    for access in CLUSTER_WIDE:
        merged.setdefault((access.group, access.resource), set()).update(access.verbs)
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
        for (group, resource), verbs in sorted(merged.items())
    ]
