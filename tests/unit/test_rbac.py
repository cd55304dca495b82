"""vdc.rbac (the list the chart's RBAC is checked against, tests/integration/test_chart_install.py) against
what the operator's own code sends to the API server: every entry point that talks to Kubernetes (the
KubeWriter, the cache primer, the leader election's Lease calls) is driven here through a recording
kubernetes client, and each request it makes must be granted by vdc.rbac. A new entry point fails
until it is driven here; a new request inside one fails until vdc.rbac (and so the chart) grants it.

What kopf itself requests for the handlers vdc.handlers registers (list/watch per kind, finalizer
patches, its Events) is not readable from kopf's public API (``OperatorRegistry`` has no public
accessors); it is recorded from a real run under the chart's ServiceAccount, in the API server's audit
log, by tests/integration/test_chart_operator.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes
import pytest

from vdc import leader, rbac
from vdc.api import ALL_KINDS, Host, MigrationPolicy, VirtualMachine, VirtualMachineMigration
from vdc.api.meta import GROUP, VERSION
from vdc.kube import lister
from vdc.kube.client import KubeWriter

pytestmark = pytest.mark.unit

Access = tuple[str, str, str]
"""(API group, resource or resource/subresource, verb)."""

VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class _Response:
    """What the kubernetes client's REST layer returns (``rest.RESTResponse``'s surface)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.status, self.reason = 200, "OK"
        self.data = json.dumps(data).encode()
        self.headers = {"content-type": "application/json"}

    def read(self) -> bytes:
        return self.data

    def getheaders(self) -> dict[str, str]:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


@dataclass
class Recorder:
    """Stands in for ``ApiClient.rest_client``: records each request and answers 200 as an API server would
    in shape: the object written for a create or update, an empty list for a list, else an empty object."""

    requests: list[tuple[str, str]] = field(default_factory=list)

    def request(self, method: str, url: str, body: Any = None, **_: Any) -> _Response:
        self.requests.append((method, url))
        if method in ("POST", "PUT") and isinstance(body, dict):
            return _Response(body)
        return _Response({"items": [], "metadata": {}} if access(method, url)[2] == "list" else {})

    def accesses(self) -> set[Access]:
        return {access(method, url) for method, url in self.requests}


def access(method: str, url: str) -> Access:
    """The RBAC access a request needs, as the API server's request info resolves it."""
    split = urlsplit(url)
    parts = split.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]  # /namespaces/<ns>/<resource>...
    resource = "/".join([rest[0], *rest[2:3]])
    if method in VERBS:
        return group, resource, VERBS[method]
    if len(rest) > 1:
        return group, resource, "get"
    return group, resource, "watch" if parse_qs(split.query).get("watch") == ["true"] else "list"


@dataclass
class RecordingHttp:
    """Stands in for ``vdc.kube.http.ApiHttp`` (the writes made on the event loop) into the same recorder."""

    recorder: Recorder
    host: str = "https://api.invalid"

    async def request(self, method: str, path: str, body: Any, *, content_type: str = "application/json") -> Any:
        self.recorder.requests.append((method, self.host + path))
        return body if method == "POST" else {}


def recording_client() -> tuple[kubernetes.client.ApiClient, Recorder]:
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host="https://api.invalid"))
    recorder = Recorder()
    client.rest_client = recorder
    return client, recorder


def granted() -> set[Access]:
    accesses = (*rbac.CLUSTER_WIDE, rbac.SECRETS, *rbac.LEADER_ELECTION)
    return {(a.group, a.resource, verb) for a in accesses for verb in a.verbs}


def body(kind: Any, name: str = "x") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": "u", "resourceVersion": "7", "generation": 1}
    if kind.KIND.scope == "Namespaced":
        meta["namespace"] = "tenant"
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind.KIND.kind, "metadata": meta, "status": {}}


def _finalized(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "metadata": {**body["metadata"], "finalizers": ["vdc.dev/finalizer"]}}


STATUS_KINDS = tuple(k for k in ALL_KINDS if k is not MigrationPolicy)
"""The kinds whose status the operator writes: all but MigrationPolicy, which it only reads."""

MIGRATION = VirtualMachineMigration

# Every KubeWriter method that talks to the API server, driven for every kind it is used for.
WRITER_CALLS: dict[str, Callable[[KubeWriter], list[Awaitable[object]]]] = {
    "patch_status": lambda w: [
        call
        for k in STATUS_KINDS
        for call in (
            w.patch_status(k.KIND, body(k), {"phase": "X"}),
            w.patch_status(k.KIND, body(k), {"phase": "X"}, unchanged=True),
        )
    ],
    "write_status": lambda w: [w.write_status(VirtualMachine.KIND, body(VirtualMachine), {"phase": "X"})],
    "patch_spec": lambda w: [w.patch_spec(VirtualMachine.KIND, body(VirtualMachine), {"cpu": {"count": 1}})],
    "remove_annotation": lambda w: [w.remove_annotation(Host.KIND, body(Host), "vdc.dev/remove-orphans", "t")],
    "set_annotation": lambda w: [w.set_annotation(Host.KIND, body(Host), "vdc.dev/dpm-standby", "c")],
    "read": lambda w: [w.read(MIGRATION.KIND, body(MIGRATION))],
    "close": lambda w: [w.close()],  # sends nothing
    "add_finalizer": lambda w: [w.add_finalizer(VirtualMachine.KIND, body(VirtualMachine), "vdc.dev/finalizer")],
    "remove_finalizer": lambda w: [
        w.remove_finalizer(VirtualMachine.KIND, _finalized(body(VirtualMachine)), "vdc.dev/finalizer")
    ],
    "create": lambda w: [w.create(MIGRATION.KIND, "tenant", body(MIGRATION))],
    "delete": lambda w: [w.delete(MIGRATION.KIND, "tenant", "x")],
    "secret_data": lambda w: [w.secret_data("tenant", "creds")],
    "configmap_data": lambda w: [w.configmap_data("tenant", "cas")],
    "event": lambda w: [w.event(k.KIND, body(k), "Why", "what") for k in ALL_KINDS],
}
"""``patch_spec``, ``remove_annotation``, ``read``, ``create`` and ``delete`` for the kinds the operator uses
them on (a VM's spec from its Appliance; a Host's vdc.dev/remove-orphans; a migration read back after its
conditional status write, and created and deleted by a Host's evacuation): those are the grants vdc.rbac
must hold."""


def test_every_kube_writer_method_is_driven_here() -> None:
    methods = {
        name for name, fn in inspect.getmembers(KubeWriter, inspect.iscoroutinefunction) if not name.startswith("_")
    }
    assert methods == set(WRITER_CALLS)


def test_what_the_kube_writer_sends_is_granted() -> None:
    client, recorder = recording_client()
    writer = KubeWriter(client, http=RecordingHttp(recorder))

    async def drive() -> None:
        for calls in WRITER_CALLS.values():
            for call in calls(writer):
                await call

    asyncio.run(drive())
    sent = recorder.accesses()
    assert not sent - granted(), f"requests vdc.rbac does not grant: {sorted(sent - granted())}"
    # and the grants for writes are all used by them (status of every kind that has it, Events, Secrets,
    # ConfigMaps, a migration's read, create and delete)
    assert {(GROUP, f"{k.KIND.plural}/status", "patch") for k in STATUS_KINDS} <= sent
    assert {("", "events", "create"), ("", "secrets", "get"), ("", "configmaps", "get")} <= sent
    assert {(GROUP, MIGRATION.KIND.plural, verb) for verb in ("get", "create", "delete")} <= sent
    # a migration is created in the namespace it is given (the VM's), not the one in its body
    assert ("POST", f"https://api.invalid/apis/{GROUP}/{VERSION}/namespaces/tenant/{MIGRATION.KIND.plural}") in (
        recorder.requests
    )


def test_status_is_granted_exactly_on_the_kinds_the_operator_writes_it() -> None:
    granted_status = {r.removesuffix("/status") for g, r, v in granted() if g == GROUP and r.endswith("/status")}
    assert granted_status == set(rbac.WITH_STATUS) == {k.KIND.plural for k in STATUS_KINDS}


def test_our_kinds_are_granted_exactly_this() -> None:
    """Each vdc.dev kind's verbs, as the chart's ClusterRole must hold them (reasons in vdc.rbac)."""
    ours = {r["resources"][0]: r["verbs"] for r in rbac.cluster_rules() if r["apiGroups"] == [GROUP]}
    watch, finalizer = ["list", "watch"], ["list", "patch", "watch"]
    assert ours == {
        "hosts": finalizer,  # remove_annotation, not a finalizer
        "storagepools": finalizer,
        "virtualswitches": finalizer,
        "virtualmachines": ["get", "list", "patch", "watch"],  # read back by a migration after a conflict
        "appliances": finalizer,
        "computequotas": watch,
        "virtualmachinemigrations": ["create", "delete", "get", "list", "patch", "watch"],
        "migrationpolicies": watch,  # read only: a cache; no finalizer, no status
        "computeclusters": finalizer,  # remove_annotation (vdc.dev/drs-apply), not a finalizer
        **{f"{k.KIND.plural}/status": ["patch"] for k in STATUS_KINDS},
    }
    assert {k.KIND.plural for k in ALL_KINDS} == set(rbac.WATCHED)


def test_not_needed_does_not_contradict_the_grants() -> None:
    """NOT_NEEDED's "<verbs> on our kinds [but <kinds>]" entries: exactly the kinds named after "but" hold
    those verbs."""
    merged = {r["resources"][0]: set(r["verbs"]) for r in rbac.cluster_rules() if r["apiGroups"] == [GROUP]}
    heads = [why.split(":")[0] for why in rbac.NOT_NEEDED if "on our kinds" in why.split(":")[0]]
    said: dict[str, set[str]] = {}
    for head in heads:
        verbs, _, rest = head.partition(" on our kinds")
        excepted = set(rest.removeprefix(" but ").split(", ")) if rest else set()
        said |= {verb: excepted for verb in verbs.split("/")}
    assert set(said) == {"get", "update", "create", "delete"}
    assert {verb: {k for k, verbs in merged.items() if verb in verbs} for verb in said} == said
    assert said["get"] == {"virtualmachines", "virtualmachinemigrations"}
    assert merged["migrationpolicies"] == {"list", "watch"}


def test_what_priming_the_caches_sends_is_granted() -> None:
    """vdc.handlers.start lists every watched kind (cluster-wide, or per watched namespace) and the
    namespaces before kopf's watches start."""
    client, recorder = recording_client()
    for plural in rbac.WATCHED:
        lister.list_custom(client, plural)
        lister.list_custom(client, plural, ("tenant-a", "tenant-b"))
    lister.list_namespaces(client)
    sent = recorder.accesses()
    assert sent == {(GROUP, plural, "list") for plural in rbac.WATCHED} | {("", "namespaces", "list")}
    assert sent <= granted()
    assert {name for name, fn in inspect.getmembers(lister, inspect.isfunction) if fn.__module__ == lister.__name__
            and not name.startswith("_") and "api" in inspect.signature(fn).parameters} == {
        "list_custom",
        "list_namespaces",
    }  # fmt: skip


def test_leader_election_sends_exactly_get_create_update_on_its_lease() -> None:
    client, recorder = recording_client()
    config = leader.ElectionConfig(lease_name="vdc", lease_namespace="vdc-system", identity="me")
    api = leader.LeaseApi(kubernetes.client.CoordinationV1Api(client), config)
    lease = kubernetes.client.V1Lease(
        metadata=kubernetes.client.V1ObjectMeta(name="vdc"), spec=kubernetes.client.V1LeaseSpec(holder_identity="me")
    )
    api.read_namespaced_lease("vdc", "vdc-system")
    api.create_namespaced_lease("vdc-system", lease)
    api.replace_namespaced_lease("vdc", "vdc-system", lease)
    api.release()
    sent = recorder.accesses()
    assert sent == {(rbac.LEASE_GROUP, "leases", verb) for verb in ("get", "create", "update")}
    assert sent <= {(a.group, a.resource, v) for a in rbac.LEADER_ELECTION for v in a.verbs}
    assert all("/namespaces/vdc-system/leases" in url for _, url in recorder.requests)


def test_the_request_mapping_follows_the_api_servers_request_info() -> None:
    base = "https://api.invalid"
    assert access("GET", f"{base}/apis/{GROUP}/{VERSION}/hosts?watch=true") == (GROUP, "hosts", "watch")
    assert access("GET", f"{base}/apis/{GROUP}/{VERSION}/namespaces/t/virtualmachines") == (
        GROUP,
        "virtualmachines",
        "list",
    )
    assert access("PATCH", f"{base}/apis/{GROUP}/{VERSION}/namespaces/t/virtualmachines/v/status") == (
        GROUP,
        "virtualmachines/status",
        "patch",
    )
    assert access("GET", f"{base}/api/v1/namespaces") == ("", "namespaces", "list")
    assert access("GET", f"{base}/api/v1/namespaces/t") == ("", "namespaces", "get")
    assert access("GET", f"{base}/api/v1/namespaces/t/secrets/s") == ("", "secrets", "get")
    assert access("POST", f"{base}/api/v1/namespaces/t/events") == ("", "events", "create")


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
