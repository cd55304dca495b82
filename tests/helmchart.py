"""The Helm chart in tests: helm from the control plane's bin dir, rendering, installing, and what a
ServiceAccount may do according to the API server (`kubectl auth can-i --list`)."""

from __future__ import annotations

import atexit
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import rig

CHART = rig.REPO / "charts" / "vdc-operator"
_HELM_HOME = Path(tempfile.mkdtemp(prefix="vdc-helm-"))
atexit.register(shutil.rmtree, _HELM_HOME, True)


def helm(
    cp: rig.ControlPlane, *args: str, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm against ``cp`` (its own cache/config dirs: nothing of the user's is touched)."""
    env = {
        **cp.env,
        "HELM_CACHE_HOME": str(_HELM_HOME / "cache"),
        "HELM_CONFIG_HOME": str(_HELM_HOME / "config"),
        "HELM_DATA_HOME": str(_HELM_HOME / "data"),
    }
    cmd = [str(cp.bin_dir / "helm"), *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise rig.CommandFailed(cmd, result.returncode, result.stdout, result.stderr)
    return result


def values_file(values: dict[str, Any]) -> Path:
    fd, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=_HELM_HOME)
    with open(fd, "w") as out:
        yaml.safe_dump(values, out)
    return Path(name)


def template(
    cp: rig.ControlPlane,
    values: dict[str, Any] | None = None,
    *,
    release: str = "vdc",
    namespace: str = "vdc-system",
    extra: tuple[str, ...] = (),
) -> str:
    return helm(
        cp, "template", release, str(CHART), "-n", namespace, "-f", str(values_file(values or {})), *extra
    ).stdout


def render(cp: rig.ControlPlane, values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The chart's objects (templates only, not crds/) for ``values``."""
    return [doc for doc in yaml.safe_load_all(template(cp, values, **kwargs)) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def ensure_namespace(cp: rig.ControlPlane, name: str, labels: dict[str, str] | None = None) -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    cp.kubectl("apply", "-f", "-", input=json.dumps(doc))


def install(cp: rig.ControlPlane, release: str, namespace: str, values: dict[str, Any]) -> None:
    helm(cp, "install", release, str(CHART), "-n", namespace, "--create-namespace", "-f", str(values_file(values)))


# --- what a subject may do --------------------------------------------------------------------------

Grant = tuple[str, str, frozenset[str], str]
"""(apiGroup, resource[/subresource], resourceNames, verb) — one permission."""

_ROW = re.compile(r"^(?P<res>\S*)\s+\[(?P<urls>[^\]]*)\]\s+\[(?P<names>[^\]]*)\]\s+\[(?P<verbs>[^\]]*)\]\s*$")


def _split_resource(text: str) -> tuple[str, str]:
    """`hosts.vdc.dev/status` -> ("vdc.dev", "hosts/status"); `events` -> ("", "events")."""
    base, _, sub = text.partition("/")
    plural, _, group = base.partition(".")
    return group, f"{plural}/{sub}" if sub else plural


def can_i_list(cp: rig.ControlPlane, user: str, namespace: str) -> set[Grant]:
    """Resource permissions of ``user`` in ``namespace`` (cluster-wide ones included), per verb."""
    out = cp.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace, "--no-headers")
    grants: set[Grant] = set()
    for line in out.splitlines():
        match = _ROW.match(line)
        if not match:
            raise AssertionError(f"unexpected `kubectl auth can-i --list` line: {line!r}")
        if not match["res"]:
            continue  # non-resource URLs (discovery, /healthz …): granted to every authenticated user
        group, resource = _split_resource(match["res"])
        names = frozenset(match["names"].split())
        for verb in match["verbs"].split():
            grants.add((group, resource, names, verb))
    return grants


@dataclass(frozen=True)
class ServiceAccountRef:
    namespace: str
    name: str

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"
