"""The Helm chart against the real API server: lint, server-side dry run, schema refusals, install,
PodSecurity `restricted`, and least privilege measured with `kubectl auth can-i --list` against the
one list of API accesses the operator needs (vdc.rbac)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

import helmchart
import rig
from helmchart import Grant, ServiceAccountRef
from vdc import rbac

FULL_VALUES: dict[str, Any] = {
    "hostCredentialsSecrets": [{"name": "hv1-ssh"}, {"name": "hv2-tls", "namespace": "chart-creds"}],
    "tenantSecrets": {"namespaces": ["chart-tenant"]},
    "logFormat": "json",
}
# Releases installed once for this module: name -> (namespace, values)
RELEASES: dict[str, tuple[str, dict[str, Any]]] = {
    "full": ("chart-full", FULL_VALUES),
    # the people's ClusterRoles have fixed names, one set per cluster: created by "full" only
    "plain": ("chart-plain", {"userRoles": {"create": False}}),
}
OTHER_NAMESPACES = ("chart-creds", "chart-tenant", "chart-other")


@pytest.fixture(scope="module")
def installed(controlplane: rig.ControlPlane) -> Iterator[rig.ControlPlane]:
    for ns in OTHER_NAMESPACES:
        helmchart.ensure_namespace(controlplane, ns)
    for release, (ns, values) in RELEASES.items():
        helmchart.install(controlplane, release, ns, values)
    try:
        yield controlplane
    finally:
        for release, (ns, _) in RELEASES.items():
            helmchart.helm(controlplane, "uninstall", release, "-n", ns, "--wait=false", check=False)


# --- helm lint / template ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values", [{}, FULL_VALUES, {"serviceMonitor": {"enabled": True}}], ids=["defaults", "full", "sm"]
)
def test_helm_lint_is_clean(controlplane: rig.ControlPlane, values: dict[str, Any]) -> None:
    result = helmchart.helm(
        controlplane, "lint", "--strict", str(helmchart.CHART), "-f", str(helmchart.values_file(values)), check=False
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


@pytest.mark.parametrize("values", [{}, FULL_VALUES], ids=["defaults", "full"])
def test_rendered_chart_passes_server_side_dry_run(controlplane: rig.ControlPlane, values: dict[str, Any]) -> None:
    for ns in ("chart-dry", *OTHER_NAMESPACES):
        helmchart.ensure_namespace(controlplane, ns)
    manifest = helmchart.template(controlplane, values, release="dry", namespace="chart-dry")
    out = controlplane.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
    kinds = {line.split("/")[0] for line in out.splitlines()}
    assert {
        "serviceaccount",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "service",
        "deployment.apps",
    } <= kinds, out


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicaCount": -1}, "replicaCount"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"logLevel": "verbose"}, "logLevel"),
        ({"resyncInterval": 0}, "resyncInterval"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"hostCredentialsSecrets": [{"namespace": "x"}]}, "name"),
        ({"tenantSecrets": {"namespaces": ["Not_A_Namespace"]}}, "namespaces"),
        ({"replicas": 1}, "replicas"),  # a typo of replicaCount is refused, not ignored
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else v,
)
def test_wrong_values_are_refused_by_the_schema(
    controlplane: rig.ControlPlane, values: dict[str, Any], field: str
) -> None:
    result = helmchart.helm(
        controlplane, "template", "x", str(helmchart.CHART), "-f", str(helmchart.values_file(values)), check=False
    )
    assert result.returncode != 0, f"{values} was accepted:\n{result.stdout[:2000]}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr


def test_helm_install_refuses_a_wrong_value_and_creates_nothing(controlplane: rig.ControlPlane) -> None:
    result = helmchart.helm(
        controlplane, "install", "bad", str(helmchart.CHART), "-n", "chart-bad", "--create-namespace",
        "-f", str(helmchart.values_file({"replicaCount": "two"})), check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "schema" in result.stderr, result.stderr
    assert helmchart.helm(controlplane, "status", "bad", "-n", "chart-bad", check=False).returncode != 0
    assert controlplane.kubectl("get", "clusterrole", "bad-vdc-operator", "--ignore-not-found").strip() == ""


def test_metrics_and_liveness_ports_must_differ(controlplane: rig.ControlPlane) -> None:
    result = helmchart.helm(
        controlplane, "template", "x", str(helmchart.CHART),
        "-f", str(helmchart.values_file({"metrics": {"port": 9000}, "liveness": {"port": 9000}})), check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "must differ" in result.stderr, result.stderr


def test_service_monitor_only_when_enabled_and_served(controlplane: rig.ControlPlane) -> None:
    sm = {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}
    api = ("--api-versions", "monitoring.coreos.com/v1")
    assert helmchart.find(helmchart.render(controlplane, {}, extra=api), "ServiceMonitor") == []
    assert helmchart.find(helmchart.render(controlplane, sm), "ServiceMonitor") == []  # CRD not served
    [monitor] = helmchart.find(helmchart.render(controlplane, sm, extra=api), "ServiceMonitor")
    [service] = helmchart.find(helmchart.render(controlplane, sm, extra=api), "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_deployment_runs_the_operator_with_the_values_as_flags(controlplane: rig.ControlPlane) -> None:
    values = {
        "replicaCount": 2,
        "metrics": {"port": 9100},
        "liveness": {"port": 9101},
        "logLevel": "debug",
        "logFormat": "json",
        "resyncInterval": 45,
        "extraArgs": ["--namespace=a"],
        "image": {"repository": "registry.example/vdc", "tag": "1.2.3", "pullPolicy": "Always"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
    }
    [deploy] = helmchart.find(helmchart.render(controlplane, values), "Deployment")
    spec = deploy["spec"]
    # Replicas elect a leader, so a rollout may overlap them: the new pod stands by meanwhile.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "registry.example/vdc:1.2.3" and container["imagePullPolicy"] == "Always"
    assert container["args"] == [
        "--liveness=http://0.0.0.0:9101/healthz",
        "--metrics-port=9100",
        "--work-dir=/var/lib/vdc-operator",
        "--log-level=debug",
        "--log-format=json",
        "--resync-interval=45",
        "--leader-elect",
        "--lease-name=vdc-vdc-operator",
        "--lease-namespace=vdc-system",
        "--namespace=a",
    ]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert (env["POD_NAME"], env["POD_NAMESPACE"]) == ("metadata.name", "metadata.namespace")
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9100, "healthz": 9101}
    assert pod["nodeSelector"] == values["nodeSelector"] and pod["tolerations"] == values["tolerations"]


# --- install ------------------------------------------------------------------------------------------


def test_install_creates_every_object(installed: rig.ControlPlane) -> None:
    ns, _ = RELEASES["full"]
    name = "full-vdc-operator"
    deploy = installed.get_json("deployment", name, "-n", ns)
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == name
    assert installed.get_json("serviceaccount", name, "-n", ns)["metadata"]["name"] == name
    service = installed.get_json("service", f"{name}-metrics", "-n", ns)
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("metrics", 8080)]
    assert installed.get_json("clusterrole", name)["rules"]
    for role in ("vdc-view", "vdc-edit", "vdc-admin", "vdc-quota-admin", "vdc-infrastructure-view"):
        assert installed.get_json("clusterrole", role)["metadata"]["labels"]["app.kubernetes.io/instance"] == "full"
    binding = installed.get_json("clusterrolebinding", name)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    for role_ns in (ns, "chart-creds"):
        installed.get_json("role", f"{name}-host-credentials", "-n", role_ns)
        installed.get_json("rolebinding", f"{name}-host-credentials", "-n", role_ns)
    installed.get_json("role", f"{name}-tenant-secrets", "-n", "chart-tenant")
    crds = installed.get_json("crd", "-l", "app.kubernetes.io/part-of=vdc-operator")["items"]
    assert {c["spec"]["names"]["kind"] for c in crds} == {
        "Host", "StoragePool", "VirtualSwitch", "Appliance", "VirtualMachine", "ComputeQuota",
        "VirtualMachineMigration", "MigrationPolicy", "ComputeCluster",
    }  # fmt: skip
    status = json.loads(helmchart.helm(installed, "status", "full", "-n", ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"


def test_pod_template_passes_pod_security_restricted(installed: rig.ControlPlane) -> None:
    """PodSecurity admission enforces on Pods: create the Deployment's pod (dry run) in a namespace
    that enforces `restricted`; the same pod without its securityContext is refused (control)."""
    ns, _ = RELEASES["full"]
    helmchart.ensure_namespace(installed, "chart-restricted", {"pod-security.kubernetes.io/enforce": "restricted"})
    template = installed.get_json("deployment", "full-vdc-operator", "-n", ns)["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "restricted-check", "namespace": "chart-restricted"},
        "spec": {**template["spec"], "serviceAccountName": "default"},
    }
    ok = installed.kubectl_result("create", "--dry-run=server", "-f", "-", input=json.dumps(pod))
    assert ok.returncode == 0 and "Warning" not in ok.stderr, ok.stderr
    loose = copy.deepcopy(pod)
    del loose["spec"]["securityContext"]
    del loose["spec"]["containers"][0]["securityContext"]
    refused = installed.kubectl_result("create", "--dry-run=server", "-f", "-", input=json.dumps(loose))
    assert refused.returncode != 0 and "restricted" in refused.stderr, refused.stderr


# --- least privilege ----------------------------------------------------------------------------------


def _grants(accesses: tuple[rbac.Access, ...], names: frozenset[str] = frozenset()) -> set[Grant]:
    return {(a.group, a.resource, names, verb) for a in accesses for verb in a.verbs}


def expected_grants(release: str, release_ns: str, values: dict[str, Any], namespace: str) -> set[Grant]:
    """What vdc.rbac says the operator needs, placed where the values say, as seen from ``namespace``."""
    grants = _grants(rbac.CLUSTER_WIDE)
    tenant = values.get("tenantSecrets", {})
    if tenant.get("allNamespaces") or namespace in tenant.get("namespaces", []):
        grants |= _grants((rbac.SECRETS,))
    host_secrets: dict[str, set[str]] = {}
    for ref in values.get("hostCredentialsSecrets", []):
        host_secrets.setdefault(ref.get("namespace", release_ns), set()).add(ref["name"])
    if not host_secrets:
        host_secrets[release_ns] = set()  # nothing named: every Secret of the release's namespace
    if namespace in host_secrets:
        grants |= _grants((rbac.SECRETS,), frozenset(host_secrets[namespace]))
    if namespace == release_ns:  # the leader election's Lease, named after the release: get/update by name
        lease = frozenset({f"{release}-vdc-operator"})
        grants |= {(a.group, a.resource, frozenset() if a.verbs == ("create",) else lease, verb)
                   for a in rbac.LEADER_ELECTION for verb in a.verbs}  # fmt: skip
    return grants


@pytest.mark.parametrize("release", list(RELEASES))
@pytest.mark.parametrize("namespace", ["<release>", *OTHER_NAMESPACES])
def test_service_account_may_do_exactly_what_the_operator_needs(
    installed: rig.ControlPlane, release: str, namespace: str
) -> None:
    release_ns, values = RELEASES[release]
    namespace = release_ns if namespace == "<release>" else namespace
    sa = ServiceAccountRef(release_ns, f"{release}-vdc-operator")
    # What every authenticated ServiceAccount may do anyway (self reviews), measured, not assumed.
    baseline = helmchart.can_i_list(installed, ServiceAccountRef(release_ns, "nobody").user, namespace)
    actual = helmchart.can_i_list(installed, sa.user, namespace) - baseline
    expected = expected_grants(release, release_ns, values, namespace)
    assert actual == expected, f"more: {sorted(actual - expected)}\nless: {sorted(expected - actual)}"


@pytest.mark.parametrize("all_namespaces", [False, True])
def test_chart_cluster_role_is_the_operator_access_list(controlplane: rig.ControlPlane, all_namespaces: bool) -> None:
    """The rendered ClusterRole, rule by rule, against vdc.rbac (no wildcards, nothing extra)."""
    docs = helmchart.render(controlplane, {"tenantSecrets": {"allNamespaces": all_namespaces}})
    [role] = helmchart.find(docs, "ClusterRole", "vdc-vdc-operator")  # not the people's roles (user-roles.yaml)
    rendered: set[Grant] = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames/nonResourceURLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rendered |= {(group, resource, frozenset(), verb) for verb in rule["verbs"]}
    expected = _grants(rbac.CLUSTER_WIDE) | (_grants((rbac.SECRETS,)) if all_namespaces else set())
    assert rendered == expected
    # and no Role grants secrets in tenant namespaces then (the ClusterRole already does)
    assert not any(d["metadata"]["name"].endswith("tenant-secrets") for d in helmchart.find(docs, "Role"))
