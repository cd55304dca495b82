"""The local control plane of hack/controlplane.sh: etcd + kube-apiserver with real authentication
and RBAC, started in a private state dir, and stopped without leaving processes behind.

Only subprocess and the standard library: the control plane is tested from the outside, the way the
other suites and the demo use it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "controlplane.sh"
# The first `up` may have to build the binaries (hack/build-controlplane.sh); later ones take seconds.
UP_TIMEOUT = 3600


@dataclass
class ControlPlane:
    state: Path  # VDC_STATE
    env: dict[str, str]
    kubeconfig: Path
    bin: Path

    @property
    def dir(self) -> Path:
        return self.state / "controlplane"

    def script(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {shlex.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def pids(self) -> dict[str, int]:
        return {name: int((self.dir / f"{name}.pid").read_text()) for name in ("etcd", "kube-apiserver")}


def export_path(stdout: str) -> Path:
    """The KUBECONFIG of the `export KUBECONFIG=...` line that `up`/`env` print last."""
    lines = stdout.strip().splitlines()
    assert lines, "no output on stdout"
    words = shlex.split(lines[-1])
    assert len(words) == 2 and words[0] == "export" and words[1].startswith("KUBECONFIG="), lines[-1]
    return Path(words[1].removeprefix("KUBECONFIG="))


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line contains text."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry.name), cmdline))
    return found


def kubeconfig_cluster(kubeconfig: Path) -> tuple[str, str]:
    """(server URL, CA PEM) from the kubeconfig written by `up` (certs are embedded)."""
    text = kubeconfig.read_text()
    server = re.search(r"^\s*server:\s*(\S+)\s*$", text, re.M)
    ca = re.search(r"^\s*certificate-authority-data:\s*(\S+)\s*$", text, re.M)
    assert server and ca, f"unexpected kubeconfig:\n{text}"
    return server.group(1), base64.b64decode(ca.group(1)).decode()


def up(state: Path) -> tuple[ControlPlane, float]:
    env = {**os.environ, "VDC_STATE": str(state)}
    env.pop("KUBECONFIG", None)
    started = time.monotonic()
    proc = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=UP_TIMEOUT)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"up failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    kubeconfig = export_path(proc.stdout)
    assert kubeconfig == state / "controlplane" / "kubeconfig"
    bin_dir = Path((state / "controlplane" / "bin").read_text().strip())
    return ControlPlane(state=state, env=env, kubeconfig=kubeconfig, bin=bin_dir), elapsed


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    state = tmp_path_factory.mktemp("vdc-state")
    try:
        plane, _ = up(state)
        yield plane
    finally:
        subprocess.run(
            [str(SCRIPT), "down"],
            env={**os.environ, "VDC_STATE": str(state)},
            capture_output=True,
            text=True,
            timeout=120,
        )


def test_usage_on_bad_arguments() -> None:
    for args in ([], ["frobnicate"], ["up", "extra"]):
        proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (args, proc.returncode)
        assert "usage:" in proc.stderr


def test_bin_dir_has_matching_tools(cp: ControlPlane) -> None:
    for tool in ("kubectl", "helm", "kube-apiserver", "etcd"):
        assert os.access(cp.bin / tool, os.X_OK), tool


def test_readyz_ok_through_kubeconfig(cp: ControlPlane) -> None:
    assert cp.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_kubeconfig_is_self_contained_and_loopback(cp: ControlPlane) -> None:
    server, ca = kubeconfig_cluster(cp.kubeconfig)
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", server), server
    assert "BEGIN CERTIFICATE" in ca
    text = cp.kubeconfig.read_text()
    assert "client-certificate-data:" in text and "client-key-data:" in text


def test_admin_identity_from_client_cert(cp: ControlPlane) -> None:
    review = json.loads(cp.kubectl("auth", "whoami", "-o", "json").stdout)
    user = review["status"]["userInfo"]
    assert user["username"] == "vdc-admin"
    assert "system:masters" in user["groups"]


def test_system_namespaces_exist(cp: ControlPlane) -> None:
    names = cp.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert {"default", "kube-system", "kube-public"} <= set(names)


def _get(url: str, ca_pem: str, headers: dict[str, str] | None = None) -> int:
    context = ssl.create_default_context(cadata=ca_pem)  # trusts the CA, presents no client cert
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_unauthenticated_access_is_refused(cp: ControlPlane) -> None:
    server, ca = kubeconfig_cluster(cp.kubeconfig)
    # anonymous: authenticated as system:anonymous at most, which RBAC does not let list namespaces
    assert _get(f"{server}/api/v1/namespaces", ca) in (401, 403)
    assert _get(f"{server}/api/v1/namespaces/default/secrets", ca) in (401, 403)
    # a made-up bearer token is rejected by authentication itself
    assert _get(f"{server}/api/v1/namespaces", ca, {"Authorization": "Bearer not-a-token"}) == 401


def test_serving_cert_is_verified_for_localhost(cp: ControlPlane) -> None:
    server, ca = kubeconfig_cluster(cp.kubeconfig)
    port = server.rsplit(":", 1)[1]
    # hostname verification on (create_default_context): the cert must carry SAN DNS:localhost
    assert _get(f"https://localhost:{port}/api/v1/namespaces", ca) in (401, 403)
    # and a client that does not trust our CA cannot talk to it at all
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server}/readyz", context=ssl.create_default_context(), timeout=10)


def test_rbac_is_enforced(cp: ControlPlane) -> None:
    nobody = cp.kubectl("auth", "can-i", "--as=system:serviceaccount:default:nobody", "list", "pods", check=False)
    assert nobody.stdout.strip() == "no", (nobody.stdout, nobody.stderr)
    assert nobody.returncode == 1
    admin = cp.kubectl("auth", "can-i", "list", "pods", "--all-namespaces", check=False)
    assert admin.stdout.strip() == "yes", (admin.stdout, admin.stderr)


def test_rbac_grant_takes_effect(cp: ControlPlane) -> None:
    ns = f"rbac-{uuid.uuid4().hex[:8]}"
    sa = f"system:serviceaccount:{ns}:reader"
    cp.kubectl("create", "namespace", ns)
    assert cp.kubectl("auth", "can-i", f"--as={sa}", "-n", ns, "list", "pods", check=False).returncode == 1
    cp.kubectl("create", "role", "pod-reader", "-n", ns, "--verb=list,get", "--resource=pods")
    cp.kubectl("create", "rolebinding", "reader", "-n", ns, "--role=pod-reader", f"--serviceaccount={ns}:reader")
    deadline = time.monotonic() + 10  # the RBAC authorizer watches bindings; allow a short lag
    while True:
        allowed = cp.kubectl("auth", "can-i", f"--as={sa}", "-n", ns, "list", "pods", check=False)
        if allowed.stdout.strip() == "yes" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert allowed.stdout.strip() == "yes"
    # only in that namespace
    assert cp.kubectl("auth", "can-i", f"--as={sa}", "-n", "default", "list", "pods", check=False).returncode == 1


def test_namespace_and_configmap(cp: ControlPlane) -> None:
    ns = f"it-{uuid.uuid4().hex[:8]}"
    cp.kubectl("create", "namespace", ns)
    cp.kubectl("create", "configmap", "settings", "-n", ns, "--from-literal=colour=blue")
    got = cp.kubectl("get", "configmap", "settings", "-n", ns, "-o", "jsonpath={.data.colour}").stdout
    assert got == "blue"
    cp.kubectl("patch", "configmap", "settings", "-n", ns, "--type=merge", "-p", '{"data":{"colour":"red"}}')
    got = cp.kubectl("get", "configmap", "settings", "-n", ns, "-o", "jsonpath={.data.colour}").stdout
    assert got == "red"


def test_status_and_env_when_up(cp: ControlPlane) -> None:
    status = cp.script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith("up")
    env = cp.script("env")
    assert env.returncode == 0
    assert export_path(env.stdout) == cp.kubeconfig


def test_up_is_idempotent_when_up(cp: ControlPlane) -> None:
    pids, kubeconfig = cp.pids(), cp.kubeconfig.read_bytes()
    started = time.monotonic()
    again = cp.script("up", timeout=60)
    elapsed = time.monotonic() - started
    assert again.returncode == 0, again.stderr
    assert export_path(again.stdout) == cp.kubeconfig
    assert elapsed < 10, f"second up took {elapsed:.1f}s"
    assert cp.pids() == pids, "second up restarted processes"
    assert cp.kubeconfig.read_bytes() == kubeconfig, "second up rewrote the kubeconfig"


def test_down_leaves_nothing_and_up_again_works(cp: ControlPlane) -> None:
    # must stay the last test of the module: it restarts the shared control plane
    assert processes_mentioning(str(cp.state)), "control plane not running before down"
    down = cp.script("down")
    assert down.returncode == 0, down.stderr
    left = processes_mentioning(str(cp.state))
    assert not left, f"processes left after down: {left}"
    assert not (cp.dir / "etcd-data").exists()
    assert cp.script("status").returncode == 1
    assert cp.script("env").returncode == 1
    # down again is harmless
    assert cp.script("down").returncode == 0

    plane, _ = up(cp.state)
    assert plane.kubeconfig == cp.kubeconfig
    assert plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    # a fresh etcd: what was created before is gone, the system namespaces are back
    assert plane.kubectl("get", "namespace", "default", check=False).returncode == 0
