"""People in tests: users authenticated by client certificates signed by the test control plane's CA
(hack/controlplane.sh keeps ca.crt/ca.key in its pki dir), each with a kubeconfig of its own — the
API server sees them exactly as it sees a person, no `--as` impersonation. And the one step of
kube-controller-manager that RBAC aggregation needs, which the rig does not run."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import rig

_CLIENT_EXT = """basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
"""


@dataclass(frozen=True)
class User:
    """A person with a client certificate: ``kubectl`` runs with the user's own kubeconfig."""

    name: str
    groups: tuple[str, ...]
    kubeconfig: Path
    cp: rig.ControlPlane

    @property
    def env(self) -> dict[str, str]:
        return {**self.cp.env, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl_result(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.cp.bin_dir / "kubectl"), *args]
        return subprocess.run(cmd, input=input, env=self.env, capture_output=True, text=True, timeout=120)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.kubectl_result(*args, input=input)
        if result.returncode != 0:
            raise rig.CommandFailed(list(args), result.returncode, result.stdout, result.stderr)
        return result.stdout

    def can_i(self, verb: str, resource: str, namespace: str | None = None, subresource: str | None = None) -> bool:
        """`kubectl auth can-i` as this user (a SelfSubjectAccessReview the API server answers).
        ``namespace`` "*": in every namespace (`-A`); None: none given (cluster-scoped kinds)."""
        args = ["auth", "can-i", verb, resource]
        if namespace == "*":
            args.append("--all-namespaces")
        elif namespace is not None:
            args += ["-n", namespace]
        if subresource is not None:
            args.append(f"--subresource={subresource}")
        result = self.kubectl_result(*args)
        answer = result.stdout.strip().split()[:1]
        if answer == ["yes"] and result.returncode == 0:
            return True
        if answer == ["no"] and result.returncode == 1:
            return False
        raise AssertionError(
            f"kubectl {' '.join(args)} as {self.name}: {result.returncode}\n{result.stdout}{result.stderr}"
        )

    def whoami(self) -> dict[str, Any]:
        """The user info the API server authenticated (SelfSubjectReview)."""
        info: dict[str, Any] = json.loads(self.kubectl("auth", "whoami", "-o", "json"))["status"]["userInfo"]
        return info


def make_user(cp: rig.ControlPlane, name: str, directory: Path, groups: Iterable[str] = ()) -> User:
    """A client certificate for ``name`` (CN) in ``groups`` (O), signed by the control plane's CA, and
    a kubeconfig using it against the same API server."""
    pki = cp.state / "controlplane" / "pki"
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, crt, ext = (directory / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
    groups = tuple(groups)
    subject = "".join(f"/O={g}" for g in groups) + f"/CN={name}"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, timeout=60)

    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    os.chmod(key, 0o600)
    openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    ext.write_text(_CLIENT_EXT)
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
        "-set_serial", f"0x{secrets.token_hex(16)}", "-sha256", "-days", "1", "-extfile", str(ext), "-out", str(crt),
    )  # fmt: skip

    admin = yaml.safe_load(cp.kubeconfig.read_text())
    [cluster] = admin["clusters"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": name, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name}}],
        "current-context": name,
    }
    kubeconfig = directory / f"{name}.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    os.chmod(kubeconfig, 0o600)
    return User(name, groups, kubeconfig, cp)


# --- ClusterRole aggregation --------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if selector.get("matchExpressions"):
        raise NotImplementedError(f"matchExpressions in an aggregationRule: {selector}")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def aggregate_cluster_roles(cp: rig.ControlPlane) -> None:
    """Do what kube-controller-manager's clusterrole-aggregation controller does, once, to a fixed
    point: each ClusterRole with an aggregationRule gets the rules of every other ClusterRole its
    selectors match (Kubernetes' `edit` selects `view`, `admin` selects `edit`, so that is transitive).
    The rig runs no controller-manager; without this, `view`/`edit`/`admin` keep the rules they had."""
    for _ in range(10):
        roles = {r["metadata"]["name"]: r for r in cp.get_json("clusterroles")["items"]}
        changed = False
        for name, role in sorted(roles.items()):
            rule = role.get("aggregationRule")
            if not rule:
                continue
            rules: list[dict[str, Any]] = []
            for selector in rule.get("clusterRoleSelectors") or []:
                for other_name, other in sorted(roles.items()):
                    if other_name == name or not _selects(selector, other["metadata"].get("labels") or {}):
                        continue
                    rules += [r for r in other.get("rules") or [] if r not in rules]
            if rules != (role.get("rules") or []):
                cp.kubectl("patch", "clusterrole", name, "--type=merge", "-p", json.dumps({"rules": rules}))
                changed = True
        if not changed:
            return
    raise AssertionError("ClusterRole aggregation did not settle")
