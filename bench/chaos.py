"""Fault-injection benchmark: a rollout and a teardown of VMs while the datacenter is broken on purpose.

Prints figures and invariant violations; asserts nothing about time. See bench/README.md ("chaos.py").

    .venv/bin/python bench/chaos.py [--hosts 3] [--vms 200] [--qemu-vms 4] [--faults 20] [--seed N]
                                    [--only operator-kill,libvirtd-restart,...] [--no-baseline] [--json out.json]

It starts its own local datacenter (control plane, H rig hosts, each declared as a QEMU Host and a
libvirt test-driver Host, one StoragePool, two VirtualSwitches with subnets) and the operator. The
VMs have a blank disk in the pool and a NIC on a switch; most go to test-driver Hosts, a few are
tiny real QEMU guests. The rollout and the teardown run in waves; during each wave one fault is
injected at a random moment (seeded), then healed, and the bench waits until every object has
converged (Ready=True, or Stalled=True with a message) and checks invariants against the API and
every libvirt host. The same waves without faults, run first, are the baseline.

Also a library: tests/e2e/test_chaos.py calls :func:`run` with a small :class:`Config`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

import kubernetes  # noqa: E402
import libvirt  # noqa: E402

import rig  # noqa: E402

T = TypeVar("T")
GROUP, VERSION = "vdc.dev", "v1alpha1"
OWNER_NS = "https://vdc.dev/xmlns/owner/v1"
"""The XML namespace of the operator's ownership metadata in a domain's <metadata> (DESIGN.md)."""
TINY_DIR = "/var/lib/libvirt/boot/vdc-tiny"
POOL = "chaos-pool"
LIBVIRT_POOL = f"vdc-{POOL}"
POOL_FS = "/var/lib/libvirt/vdc-chaos"
"""On every rig host, a small tmpfs mounted in the host's own mount namespace: the pool lives in it (so
a QEMU host's pool can really be filled), next to the filler file the pool-full fault writes."""
POOL_PATH = f"{POOL_FS}/pool"
POOL_FS_SIZE = "96m"
SWITCHES = ("chaos-a", "chaos-b")
DISK_SIZE = "16Mi"
FOREIGN = "chaos-foreign"
"""A domain and a volume on every QEMU host that the operator did not create: it must never touch them."""

FAULT_KINDS = ("operator-kill", "apiserver-restart", "etcd-restart", "libvirtd-restart", "host-hang", "pool-full")
WEIGHTS = {
    "operator-kill": 4,
    "apiserver-restart": 1,
    "etcd-restart": 1,
    "libvirtd-restart": 2,
    "host-hang": 1,
    "pool-full": 2,
}


def log(msg: str) -> None:
    print(f"[chaos {datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, interval: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    last: T | Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # the thing may be down right now
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def is_true(obj: dict[str, Any] | None, type_: str) -> bool:
    return (condition(obj, type_) or {}).get("status") == "True"


# --- configuration and results ---------------------------------------------------------------------


@dataclass
class Config:
    hosts: int = 3
    vms: int = 200
    qemu_vms: int = 4
    faults: int = 20
    seed: int | None = None
    only: tuple[str, ...] = FAULT_KINDS
    plan: list[str] | None = None
    """Exact fault kinds in order (overrides faults/only); the seed still picks moments and targets."""
    baseline: bool = True
    state: Path | None = None
    keep: bool = False
    converge_timeout: float = 300.0
    settle_timeout: float = 150.0
    """After the rollout, how long VMs Stalled by a fault may take to become Ready once everything is healed."""
    create_workers: int = 8
    prefix: str | None = None
    hang_seconds: tuple[float, float] = (8.0, 25.0)
    """How long a host-hang lasts (uniform). Over ~15-20 s, libvirt's keepalive closes the operator's
    connection; keep it under 30 s, or the rig's own test-driver connection drops as well."""


@dataclass
class Fault:
    index: int
    kind: str
    target: str
    phase: str
    detail: str = ""
    injected_at: float = 0.0
    restored_at: float = 0.0
    converged_at: float | None = None
    stalled: int = 0
    """VMs Stalled=True at convergence (with a message)."""

    @property
    def converge_seconds(self) -> float | None:
        return None if self.converged_at is None else self.converged_at - self.restored_at

    def label(self) -> str:
        return f"fault #{self.index} {self.kind} {self.target} ({self.phase})"


@dataclass(frozen=True)
class Violation:
    check: str
    obj: str
    message: str
    after: str = ""

    def key(self) -> tuple[str, str]:
        return (self.check, self.obj)

    def text(self) -> str:
        return f"[{self.check}] {self.obj}: {self.message} (after {self.after})"


@dataclass
class RunResult:
    """One rollout + teardown (the baseline, or the run with faults)."""

    namespace: str
    rollout_seconds: float = 0.0
    teardown_seconds: float = 0.0
    wave_seconds: list[float] = field(default_factory=list)
    checks: int = 0
    check_rounds: int = 0

    @property
    def total_seconds(self) -> float:
        return self.rollout_seconds + self.teardown_seconds


@dataclass
class Report:
    seed: int
    config: dict[str, Any]
    faults: list[Fault] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    chaos: RunResult | None = None
    baseline: RunResult | None = None
    operator_starts: int = 0
    notes: list[str] = field(default_factory=list)
    state: str = ""

    def violation_text(self) -> str:
        lines = [f"{len(self.violations)} violation(s), seed {self.seed}:"]
        lines += [f"  {v.text()}" for v in self.violations]
        return "\n".join(lines)

    def convergence(self) -> list[float]:
        return [s for f in self.faults if (s := f.converge_seconds) is not None]

    def to_json(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            if isinstance(v, float) and math.isnan(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        out = asdict(self)
        out["convergence_seconds"] = self.convergence()
        return dict(clean(out))


# --- the datacenter --------------------------------------------------------------------------------


@dataclass
class RigHost:
    name: str
    qemu_uri: str
    test_uri: str
    address: str | None
    dir: Path

    def pid(self, what: str) -> int:
        """The live pid of the host's libvirtd or virtlogd (from the pid file in its run dir)."""
        text = (self.dir / "run" / f"{what}.pid").read_text().strip()
        return int(text)

    def meta(self, key: str) -> str:
        for line in (self.dir / "meta").read_text().splitlines():
            if line.startswith(key + "="):
                return line.split("=", 1)[1]
        return ""


class Datacenter:
    """Control plane + rig hosts + the operator, with the means to break each of them."""

    def __init__(self, state: Path, prefix: str) -> None:
        self.state = state
        self.prefix = prefix
        self.cp: rig.ControlPlane | None = None
        self.hosts_started = False
        self.hosts: list[RigHost] = []
        self.operator: rig.OperatorProcess | None = None
        self.operator_log = state / "operator.log"
        self.operator_starts = 0
        self.metrics_port = 0
        self.children: list[subprocess.Popen[bytes]] = []
        """Processes this bench (re)started outside the rig scripts: reaped at the end."""
        self.stopped_pids: set[int] = set()
        self.links_down: set[str] = set()
        self._api: kubernetes.client.ApiClient | None = None
        self.lock = threading.Lock()

    # -- start / stop --
    def start(self, count: int) -> None:
        log(f"control plane up (VDC_STATE={self.state})")
        self.cp = rig.start_controlplane(self.state)
        rig.install_crds(self.cp)
        log(f"{count} libvirt hosts up (prefix {self.prefix})")
        self.hosts_started = True
        rig.start_libvirt_hosts(self.state, count, self.prefix)
        for line in (self.state / "hosts" / "hosts.txt").read_text().splitlines():
            parts = line.split()
            if parts:
                address = parts[3] if len(parts) > 3 and parts[3] != "-" else None
                self.hosts.append(RigHost(parts[0], parts[1], parts[2], address, self.state / "hosts" / parts[0]))
        for h in self.hosts:
            self._mount_pool_fs(h)

    def _mount_pool_fs(self, h: RigHost) -> None:
        (h.dir / "lib" / Path(POOL_FS).relative_to("/var/lib/libvirt")).mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(h.pid("libvirtd")),
                "-m",
                "--",
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={POOL_FS_SIZE},mode=0755",
                "vdc-chaos",
                POOL_FS,
            ],
            check=True,
            capture_output=True,
            text=True,
        )

    def api(self) -> kubernetes.client.ApiClient:
        if self._api is None:
            assert self.cp is not None
            cfg = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(config_file=str(self.cp.kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
            cfg.connection_pool_maxsize = 32
            cfg.retries = False
            self._api = kubernetes.client.ApiClient(cfg)
        return self._api

    def custom(self) -> Any:
        return kubernetes.client.CustomObjectsApi(self.api())

    def start_operator(self) -> None:
        assert self.cp is not None
        self.metrics_port = rig.free_ports(1)[0]
        self.operator_starts += 1
        with self.operator_log.open("ab") as out:
            out.write(f"\n===== chaos: operator start #{self.operator_starts} =====\n".encode())
        # faulthandler: a crash in a C extension (libvirt) prints every thread's Python stack to the log
        env = {**self.cp.env, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
        metrics = ["--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port)]
        proc = self.operator = rig.OperatorProcess.start(*metrics, env=env, log=self.operator_log)

        def healthy() -> bool:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"operator exited ({proc.proc.returncode}); see {self.operator_log}")
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)

        deadline = time.monotonic() + 90
        while not _quiet(healthy):
            if proc.proc.poll() is not None:
                raise RuntimeError(f"operator exited ({proc.proc.returncode}); see {self.operator_log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"operator /healthz not up within 90s; see {self.operator_log}")
            time.sleep(0.3)

    def operator_exited(self) -> int | None:
        return None if self.operator is None else self.operator.proc.poll()

    def crash_summary(self) -> str:
        """The last fatal error in the operator's log and the Python frames of the thread that crashed."""
        lines = self.operator_log.read_text(errors="replace").splitlines()
        start = max((i for i, line in enumerate(lines) if line.startswith("Fatal Python error")), default=-1)
        if start < 0:
            return "no 'Fatal Python error' in the log"
        out = [lines[start]]
        current = next((i for i in range(start, len(lines)) if lines[i].startswith("Current thread")), None)
        if current is not None:
            out += [line.strip() for line in lines[current + 1 : current + 6] if line.strip().startswith("File")]
        return " | ".join(out)

    def stop(self) -> None:
        for pid in list(self.stopped_pids):  # a hung libvirtd would stall the rig's `down`
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for link in list(self.links_down):
            subprocess.run(["ip", "link", "set", link, "up"], capture_output=True)
        if self.operator is not None:
            log("operator down")
            self.operator.stop()
            self.operator = None
        if self.hosts_started:
            log("libvirt hosts down")
            try:
                rig.stop_libvirt_hosts(self.state, self.prefix)
            except Exception as exc:
                log(f"hosts down failed: {exc}")
        if self.cp is not None:
            log("control plane down")
            try:
                rig.stop_controlplane(self.state)
            except Exception as exc:
                log(f"control plane down failed: {exc}")
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)

    def teardown_commands(self) -> list[str]:
        cmds = []
        if self.operator is not None and self.operator.proc.poll() is None:
            cmds.append(f"kill -- -{self.operator.proc.pid}")
        if self.hosts_started:
            cmds.append(f"VDC_STATE={self.state} VDC_HOST_PREFIX={self.prefix} {REPO}/hack/libvirt-hosts.sh down")
        if self.cp is not None:
            cmds.append(f"VDC_STATE={self.state} {REPO}/hack/controlplane.sh down")
        return cmds

    # -- faults: the operator --
    def kill_operator(self) -> None:
        if self.operator is not None:
            self.operator.kill()
            self.operator = None

    # -- faults: the control plane (hack/controlplane.sh keeps pid files and logs in <state>/controlplane) --
    def crash_cp_process(self, name: str) -> list[str]:
        """SIGKILL etcd or kube-apiserver; returns its command line, to start it again the same way."""
        cp_dir = self.state / "controlplane"
        pid = int((cp_dir / f"{name}.pid").read_text().strip())
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cmdline = [a.decode() for a in args if a]
        os.kill(pid, signal.SIGKILL)
        self._reap(pid)
        wait_for(f"{name} (pid {pid}) gone", lambda: not alive(pid), timeout=30, interval=0.05)
        return cmdline

    def start_cp_process(self, name: str, cmdline: list[str]) -> None:
        cp_dir = self.state / "controlplane"
        with (cp_dir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                cmdline, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.children.append(proc)
        (cp_dir / f"{name}.pid").write_text(f"{proc.pid}\n")

    def etcd_healthy(self) -> bool:
        ports = dict(
            line.split("=", 1) for line in (self.state / "controlplane" / "ports").read_text().split() if "=" in line
        )
        url = f"http://127.0.0.1:{ports['ETCD_CLIENT_PORT']}/health"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return b'"health":"true"' in resp.read()

    def apiserver_ready(self) -> bool:
        assert self.cp is not None
        return self.cp.kubectl("get", "--raw", "/readyz", check=False, timeout=10).strip() == "ok"

    # -- faults: libvirt hosts --
    def crash_libvirtd(self, h: RigHost) -> None:
        pid = h.pid("libvirtd")
        os.kill(pid, signal.SIGKILL)
        self._reap(pid)
        wait_for(f"libvirtd of {h.name} gone", lambda: not alive(pid), timeout=30, interval=0.05)

    def start_libvirtd(self, h: RigHost) -> None:
        """libvirtd again in the host's namespaces, as hack/libvirt-hosts.sh's __host-init runs it: the
        mount/UTS/network namespaces live on in its virtlogd (and QEMU processes), so guests keep running,
        the new daemon reattaches to them, and the pool's tmpfs is still mounted."""
        virtlogd = h.pid("virtlogd")
        cpus = _cpus_allowed(virtlogd)
        with (h.dir / "log" / "init.log").open("ab") as out:
            out.write(f"=== {datetime.now().isoformat()} chaos: libvirtd started again\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [
                    "nsenter",
                    "-t",
                    str(virtlogd),
                    "-m",
                    "-u",
                    "-n",
                    "--",
                    "taskset",
                    "-c",
                    cpus,
                    "libvirtd",
                    "--pid-file",
                    str(h.dir / "run" / "libvirtd.pid"),
                    "--config",
                    "/etc/libvirt/libvirtd.conf",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children.append(proc)

        def answers() -> bool:
            r = subprocess.run(["virsh", "-c", h.qemu_uri, "version"], capture_output=True, timeout=20)
            return r.returncode == 0 and alive(h.pid("libvirtd"))

        wait_for(f"libvirtd of {h.name} answering", answers, timeout=90)
        self._start_test_holder(h)

    def _start_test_holder(self, h: RigHost) -> None:
        """The rig keeps one test-driver connection open per host (libvirtd resets test:///default when its
        last connection closes): start it again after a libvirtd restart."""
        holder_file = h.dir / "run" / "test-holder.pid"
        with contextlib.suppress(OSError, ValueError):
            old = int(holder_file.read_text().strip())
            if alive(old) and os.readlink(f"/proc/{old}/exe").endswith("/virsh"):
                os.kill(old, signal.SIGTERM)
        lpid = h.pid("libvirtd")
        with (h.dir / "log" / "test-driver-events.log").open("ab") as out:
            proc = subprocess.Popen(
                [
                    "nsenter",
                    "-t",
                    str(lpid),
                    "-m",
                    "-u",
                    "-n",
                    "--",
                    "virsh",
                    "-q",
                    "-c",
                    h.test_uri,
                    "event",
                    "--all",
                    "--loop",
                    "--timestamp",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children.append(proc)
        holder_file.write_text(f"{proc.pid}\n")
        time.sleep(0.5)
        (h.dir / "pids").write_text(f"libvirtd {lpid}\nvirtlogd {h.pid('virtlogd')}\ntest-holder {proc.pid}\n")

    def test_holder_alive(self, h: RigHost) -> bool:
        with contextlib.suppress(OSError, ValueError):
            return alive(int((h.dir / "run" / "test-holder.pid").read_text().strip()))
        return False

    def hang_host(self, h: RigHost) -> None:
        """SIGSTOP the host's libvirtd (both its QEMU and test-driver Hosts hang) and take its link down."""
        pid = h.pid("libvirtd")
        self.stopped_pids.add(pid)
        os.kill(pid, signal.SIGSTOP)
        veth = h.meta("veth")
        if veth:
            self.links_down.add(veth)
            subprocess.run(["ip", "link", "set", veth, "down"], check=True, capture_output=True)

    def unhang_host(self, h: RigHost) -> None:
        veth = h.meta("veth")
        if veth:
            subprocess.run(["ip", "link", "set", veth, "up"], check=True, capture_output=True)
            self.links_down.discard(veth)
        pid = h.pid("libvirtd")
        os.kill(pid, signal.SIGCONT)
        self.stopped_pids.discard(pid)

    def _reap(self, pid: int) -> None:
        for child in self.children:
            if child.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=30)


def _cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return "0"


def _quiet(fn: Callable[[], bool]) -> bool:
    try:
        return fn()
    except Exception:
        return False


# --- manifests -------------------------------------------------------------------------------------


def host_doc(name: str, uri: str, driver: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Host",
        "metadata": {"name": name, "labels": {"vdc.dev/driver": driver, "chaos.vdc.dev/bench": "1"}},
        "spec": {"uri": uri, "hostFiles": {"allowedPaths": [TINY_DIR]}, **spec},
    }


def pool_doc() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "StoragePool",
        "metadata": {"name": POOL},
        "spec": {"type": "dir", "target": {"path": POOL_PATH}},
    }


def switch_doc(name: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualSwitch",
        "metadata": {"name": name},
        "spec": {"mode": "nat", "subnet": {"cidr": cidr}},
    }


def vm_doc(name: str, namespace: str, switch: str, qemu: bool) -> dict[str, Any]:
    driver = "qemu" if qemu else "test"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace, "labels": {"chaos.vdc.dev/driver": driver}},
        "spec": {
            "runStrategy": "Always",
            "cpu": {"count": 1},
            "memory": {"size": "96Mi" if qemu else "32Mi"},
            "boot": {
                "kernel": {
                    "kernel": f"{TINY_DIR}/vmlinuz",
                    "initrd": f"{TINY_DIR}/initrd.img",
                    "cmdline": f"console=ttyS0 vdc.marker={name}",
                }
            },
            "hostSelector": {"matchLabels": {"vdc.dev/driver": driver}},
            "terminationGracePeriodSeconds": 3,
            "disks": [{"name": "data", "source": {"blank": {"pool": POOL, "size": DISK_SIZE}}}],
            "interfaces": [{"name": "eth0", "switch": switch}],
        },
    }


# --- reading the API -------------------------------------------------------------------------------


@dataclass
class ApiView:
    vms: dict[tuple[str, str], dict[str, Any]]
    hosts: dict[str, dict[str, Any]]
    pools: dict[str, dict[str, Any]]
    switches: dict[str, dict[str, Any]]


def read_api(dc: Datacenter, namespaces: tuple[str, ...]) -> ApiView:
    custom = dc.custom()
    timeout = (5, 30)
    vms: dict[tuple[str, str], dict[str, Any]] = {}
    for ns in namespaces:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "virtualmachines", _request_timeout=timeout)[
            "items"
        ]
        vms.update({(ns, b["metadata"]["name"]): b for b in items})

    def cluster(plural: str) -> dict[str, dict[str, Any]]:
        items = custom.list_cluster_custom_object(GROUP, VERSION, plural, _request_timeout=timeout)["items"]
        return {b["metadata"]["name"]: b for b in items}

    return ApiView(vms, cluster("hosts"), cluster("storagepools"), cluster("virtualswitches"))


def read_api_retrying(dc: Datacenter, namespaces: tuple[str, ...], timeout: float = 120) -> ApiView:
    return wait_for("the API", lambda: read_api(dc, namespaces), timeout=timeout, interval=0.5)


# --- reading libvirt -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainInfo:
    host: str
    """The Host object (``<rig host>`` for QEMU, ``<rig host>-test`` for the test driver)."""
    uuid: str
    name: str
    active: bool
    owner: tuple[str, str, str] | None
    """(namespace, name, uid) from the vdc owner metadata; None for a domain we did not create."""


@dataclass
class LibvirtView:
    domains: list[DomainInfo] = field(default_factory=list)
    volumes: dict[str, list[str]] = field(default_factory=dict)
    """Host -> volume names in our pool (the pool missing or not running: absent)."""
    networks_active: set[tuple[str, str]] = field(default_factory=set)
    """(Host, switch) whose libvirt network is running."""
    dhcp_hosts: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    """(Host, switch) -> the network's static DHCP entries (mac, ip)."""
    leases: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    """(QEMU Host, switch) -> dnsmasq's leases (mac, ip)."""
    unreachable: list[str] = field(default_factory=list)

    def unreachable_hosts(self) -> set[str]:
        return {u.split(":")[0] for u in self.unreachable}


@contextlib.contextmanager
def connect(uri: str) -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(uri)
    try:
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _owner(xml: str) -> tuple[str, str, str] | None:
    if OWNER_NS not in xml:
        return None
    el = ET.fromstring(xml).find(f"metadata/{{{OWNER_NS}}}owner")
    if el is None:
        return None
    return (el.get("namespace", ""), el.get("name", ""), el.get("uid", ""))


def read_host(host: str, uri: str, qemu: bool, view: LibvirtView) -> None:
    with connect(uri) as conn:
        for dom in conn.listAllDomains(0):
            try:
                xml = dom.XMLDesc(0)
                info = DomainInfo(host, dom.UUIDString(), dom.name(), bool(dom.isActive()), _owner(xml))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # gone while we looked
                raise
            view.domains.append(info)
        try:
            pool = conn.storagePoolLookupByName(LIBVIRT_POOL)
        except libvirt.libvirtError:
            pool = None
        if pool is not None and pool.isActive():
            with contextlib.suppress(libvirt.libvirtError):  # "asynchronous jobs running": the listing still is
                pool.refresh(0)
            view.volumes[host] = sorted(v.name() for v in pool.listAllVolumes(0))
        for switch in SWITCHES:
            try:
                net = conn.networkLookupByName(f"vdc-{switch}")
            except libvirt.libvirtError:
                continue
            if net.isActive():
                view.networks_active.add((host, switch))
            root = ET.fromstring(net.XMLDesc(0))
            view.dhcp_hosts[(host, switch)] = [
                (h.get("mac", "").lower(), h.get("ip", "")) for h in root.iterfind("ip/dhcp/host")
            ]
            if qemu and net.isActive():
                with contextlib.suppress(libvirt.libvirtError):
                    view.leases[(host, switch)] = [
                        (str(lease["mac"]).lower(), str(lease["ipaddr"])) for lease in net.DHCPLeases()
                    ]


def read_libvirt(dc: Datacenter) -> LibvirtView:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are exceptions; no copy on stderr
    view = LibvirtView()
    for h in dc.hosts:
        for host, uri, qemu in ((h.name, h.qemu_uri, True), (f"{h.name}-test", h.test_uri, False)):
            try:
                read_host(host, uri, qemu, view)
            except libvirt.libvirtError as exc:
                view.unreachable.append(f"{host}: {exc.get_error_message()}")
    return view


# --- convergence -----------------------------------------------------------------------------------


def vm_converged(body: dict[str, Any]) -> str | None:
    """None when the VM has converged (Ready=True, or Stalled=True with a message, for its current
    generation); else why not."""
    status = body.get("status")
    if not status or not status.get("conditions"):
        return "no status"
    if body["metadata"].get("deletionTimestamp"):
        return "being deleted"
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return f"observedGeneration {status.get('observedGeneration')} != {body['metadata'].get('generation')}"
    if is_true(body, "Ready"):
        return None
    stalled = condition(body, "Stalled")
    if stalled and stalled.get("status") == "True" and stalled.get("message"):
        return None
    ready = condition(body, "Ready") or {}
    return f"Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}"


def pending(view: ApiView, present: set[tuple[str, str]], gone: set[tuple[str, str]], hosts: list[str]) -> list[str]:
    """What has not converged yet (empty: everything has)."""
    out = []
    for key in sorted(present):
        body = view.vms.get(key)
        if body is None:
            out.append(f"vm {key[0]}/{key[1]}: missing")
        elif (why := vm_converged(body)) is not None:
            out.append(f"vm {key[0]}/{key[1]}: {why}")
    for key in sorted(gone):
        if key in view.vms:
            out.append(f"vm {key[0]}/{key[1]}: not deleted yet")
    for name in hosts:
        if not is_true(view.hosts.get(name), "Ready"):
            out.append(f"host {name}: {_cond_text(view.hosts.get(name))}")
    if not is_true(view.pools.get(POOL), "Ready"):
        out.append(f"storagepool {POOL}: {_cond_text(view.pools.get(POOL))}")
    namespaces = {ns for ns, _ in present | gone}
    for s in SWITCHES:
        if not is_true(view.switches.get(s), "Ready"):
            out.append(f"virtualswitch {s}: {_cond_text(view.switches.get(s))}")
        # A deleted VM's addresses are released (the switch has converged too).
        for a in ((view.switches.get(s) or {}).get("status") or {}).get("allocations") or []:
            owner = str(a.get("owner", "")).split("/")
            if len(owner) == 3 and owner[0] in namespaces and (owner[0], owner[1]) not in view.vms:
                out.append(f"virtualswitch {s}: {a.get('ip')} still held by deleted VM {owner[0]}/{owner[1]}")
    return out


def _cond_text(body: dict[str, Any] | None) -> str:
    if body is None:
        return "missing"
    c = condition(body, "Ready")
    if c is None:
        return "no Ready condition"
    return f"Ready={c.get('status')} {c.get('reason')}: {c.get('message')}"


# --- invariants ------------------------------------------------------------------------------------


class Checker:
    """Every invariant over one API view and one libvirt view (read after convergence)."""

    def __init__(self, api: ApiView, virt: LibvirtView, namespaces: tuple[str, ...], qemu_hosts: set[str]) -> None:
        self.api, self.virt, self.ours, self.qemu_hosts = api, virt, set(namespaces), qemu_hosts
        self.violations: list[Violation] = []
        self.checks = 0
        self.by_uuid: dict[str, list[DomainInfo]] = defaultdict(list)
        for d in virt.domains:
            self.by_uuid[d.uuid].append(d)

    def expect(self, ok: bool, check: str, obj: str, message: str) -> bool:
        self.checks += 1
        if not ok:
            self.violations.append(Violation(check, obj, message))
        return ok

    def run(self) -> Checker:
        for problem in self.virt.unreachable:
            self.expect(False, "host-readable", problem.split(":")[0], f"cannot read libvirt: {problem}")
        self.realised()
        self.domains()
        self.volumes()
        for switch in SWITCHES:
            self.addresses(switch)
        self.foreign()
        return self

    def realised(self) -> None:
        """What the pool's and the switches' status say runs on a host runs there."""
        for entry in ((self.api.pools.get(POOL) or {}).get("status") or {}).get("hosts") or []:
            if entry.get("state") == "Running" and entry.get("host") not in self.virt.unreachable_hosts():
                self.expect(entry.get("host") in self.virt.volumes, "pool-state-mismatch",
                            f"storagepool {POOL} on {entry.get('host')}",
                            f"status says Running; libvirt's pool {LIBVIRT_POOL} there is not running")  # fmt: skip
        for switch in SWITCHES:
            for entry in ((self.api.switches.get(switch) or {}).get("status") or {}).get("hosts") or []:
                if entry.get("state") == "Active" and entry.get("host") not in self.virt.unreachable_hosts():
                    self.expect((entry.get("host"), switch) in self.virt.networks_active, "switch-state-mismatch",
                                f"virtualswitch {switch} on {entry.get('host')}",
                                f"status says Active; libvirt's network vdc-{switch} there is not running")  # fmt: skip

    def domains(self) -> None:
        """One domain per VM, on the host its status names, running when Ready; none left of deleted VMs."""
        by_name: dict[str, list[DomainInfo]] = defaultdict(list)
        for d in self.virt.domains:
            by_name[d.name].append(d)
        for what, groups in (("uuid", self.by_uuid), ("domain", by_name)):
            for key, found in groups.items():
                hosts = ", ".join(sorted(d.host for d in found))
                self.expect(len(found) < 2 or not any(d.owner for d in found), "duplicate-domain", f"{what} {key}",
                            f"defined on {len(found)} hosts: {hosts}")  # fmt: skip
        vms_by_uid = {b["metadata"]["uid"]: b for b in self.api.vms.values()}
        for d in self.virt.domains:
            if d.owner is None or d.owner[0] not in self.ours:
                continue
            vm = vms_by_uid.get(d.owner[2])
            where = f"{d.host}/{d.name}"
            if self.expect(vm is not None, "leaked-domain", where,
                           f"owner {d.owner[0]}/{d.owner[1]} (uid {d.owner[2]}) no longer exists"):  # fmt: skip
                placed = ((vm or {}).get("status") or {}).get("host")
                self.expect(not placed or placed == d.host, "stray-domain", where,
                            f"the VM's status says host {placed}; this domain is elsewhere")  # fmt: skip
        for (ns, name), body in self.api.vms.items():
            status = body.get("status") or {}
            obj = f"vm {ns}/{name}"
            if not self.expect(bool(status.get("conditions")), "status-less", obj, "no status conditions"):
                continue
            if not is_true(body, "Ready"):
                continue
            host, uid = status.get("host"), body["metadata"]["uid"]
            found = self.by_uuid.get(uid, [])
            elsewhere = ", ".join(d.host for d in found) or "none"
            if (
                self.expect(bool(host), "ready-without-host", obj, "Ready=True but status.host is empty")
                and self.expect(any(d.host == host for d in found), "ready-without-domain", obj,
                                f"Ready=True on {host}, but no domain {uid} there (found on: {elsewhere})")
            ):  # fmt: skip
                self.expect(any(d.host == host and d.active for d in found), "ready-not-running", obj,
                            f"Ready=True with runStrategy Always, but the domain on {host} is not running")  # fmt: skip

    def volumes(self) -> None:
        """Our volumes (``{namespace}_{vm}_{disk}.{ext}``) each belong to an existing VM on that host; every
        disk of a Ready VM has its volume on the VM's host."""
        for host, names in self.virt.volumes.items():
            for vol in names:
                parts = vol.split("_")
                if len(parts) != 3 or parts[0] not in self.ours:
                    continue
                body = self.api.vms.get((parts[0], parts[1]))
                where = f"{host}/{vol}"
                if self.expect(body is not None, "leaked-volume", where, f"VM {parts[0]}/{parts[1]} no longer exists"):
                    placed = ((body or {}).get("status") or {}).get("host")
                    self.expect(not placed or placed == host, "stray-volume", where,
                                f"VM {parts[0]}/{parts[1]} is on {placed}; this volume is left behind")  # fmt: skip
        for (ns, name), body in self.api.vms.items():
            if not is_true(body, "Ready"):
                continue
            status = body.get("status") or {}
            for disk in status.get("disks") or []:
                on, volume = disk.get("host") or status.get("host"), disk.get("volume")
                if on and volume:
                    obj = f"vm {ns}/{name} disk {disk.get('name')}"
                    self.expect(on in self.virt.volumes, "lost-volume", obj,
                                f"Ready=True, but pool {POOL} is not running on {on}")  # fmt: skip
                    self.expect(volume in self.virt.volumes.get(on, [volume]), "lost-volume", obj,
                                f"Ready=True, but volume {volume} is missing from {on}")  # fmt: skip

    def addresses(self, switch: str) -> None:
        """IPAM allocations unique by IP, MAC and owner and held by existing NICs; the addresses VMs report
        unique and the ones the switch gave them; no host's DHCP table binds one address to two MACs; a
        real guest's lease is its VM's address."""
        body = self.api.switches.get(switch) or {}
        allocations = (body.get("status") or {}).get("allocations") or []
        obj = f"switch {switch}"
        for what in ("ip", "mac", "owner"):
            for value, c in Counter(a.get(what) for a in allocations).items():
                self.expect(c == 1, "duplicate-allocation", obj, f"{what} {value} allocated {c} times")
        by_owner = {a.get("owner", ""): a.get("ip", "") for a in allocations}
        for a in allocations:
            owner = a.get("owner", "").split("/")
            if len(owner) != 3 or owner[0] not in self.ours:
                continue
            vm = self.api.vms.get((owner[0], owner[1]))
            where = f"{obj} {a.get('ip')}"
            if self.expect(
                vm is not None, "leaked-address", where, f"held by {a.get('owner')}, which no longer exists"
            ):
                nics = (vm or {}).get("spec", {}).get("interfaces") or []
                self.expect(any(i.get("name") == owner[2] and i.get("switch") == switch for i in nics),
                            "leaked-address", where, f"held by {a.get('owner')}, which has no such NIC")  # fmt: skip
        # status.interfaces[].ipAddresses: the IPAM's address first, then what the host says the guest
        # leased. libvirt's test driver makes the latter up (repeating across domains): only real QEMU
        # guests' leases are held to the IPAM's address.
        reported: dict[str, list[str]] = defaultdict(list)
        for (ns, name), vm in self.api.vms.items():
            qemu = ((vm.get("status") or {}).get("host") or "") in self.qemu_hosts
            for nic in (vm.get("status") or {}).get("interfaces") or []:
                ips = nic.get("ipAddresses") or []
                if nic.get("switch") != switch or not ips:
                    continue
                owner = f"{ns}/{name}/{nic.get('name')}"
                reported[ips[0]].append(owner)
                if is_true(vm, "Ready"):
                    self.expect(by_owner.get(owner) == ips[0], "address-mismatch", f"vm {owner}",
                                f"reports {ips[0]} on {switch}; the switch allocates "
                                f"{by_owner.get(owner) or 'nothing'} to it")  # fmt: skip
                for other in ips[1:] if qemu else []:
                    self.expect(other == ips[0], "lease-mismatch", f"vm {owner}",
                                f"the guest leased {other}; the switch allocates {ips[0]} to it")  # fmt: skip
        for ip, owners in reported.items():
            self.expect(len(owners) == 1, "duplicate-ip", f"{obj} {ip}",
                        f"reported by {len(owners)} VMs: {', '.join(sorted(owners))}")  # fmt: skip
        for (host, sw), entries in self.virt.dhcp_hosts.items():
            if sw == switch:
                for ip, c in Counter(ip for _mac, ip in entries).items():
                    macs = ", ".join(sorted(m for m, i in entries if i == ip))
                    self.expect(c == 1, "duplicate-dhcp-entry", f"{host} network vdc-{switch}",
                                f"{ip} is bound to {c} MACs: {macs}")  # fmt: skip
        by_mac = {a.get("mac", "").lower(): a for a in allocations}
        for (host, sw), leases in self.virt.leases.items():
            for mac, ip in leases if sw == switch else []:
                if (a := by_mac.get(mac)) is not None:
                    message = f"guest {mac} ({a.get('owner')}) leased {ip}; the switch allocates {a.get('ip')}"
                    self.expect(a.get("ip") == ip, "lease-mismatch", f"{host} network vdc-{switch}", message)

    def foreign(self) -> None:
        """What the operator did not create (a domain and a volume on every QEMU host) is never touched."""
        unreachable = " ".join(self.virt.unreachable)
        for host in sorted(self.qemu_hosts):
            if host not in unreachable:
                self.expect(any(d.host == host and d.name == FOREIGN for d in self.virt.domains), "foreign-touched",
                            f"{host}/{FOREIGN}", "a domain the operator did not create is gone")  # fmt: skip
            if host in self.virt.volumes:
                self.expect(f"{FOREIGN}.raw" in self.virt.volumes[host], "foreign-touched", f"{host}/{FOREIGN}.raw",
                            "a volume the operator did not create is gone")  # fmt: skip


# --- the run ---------------------------------------------------------------------------------------


class Chaos:
    def __init__(self, config: Config, dc: Datacenter, report: Report, rng: random.Random) -> None:
        self.config = config
        self.dc = dc
        self.report = report
        self.rng = rng
        self.setup = RunResult("setup")
        self.host_names: list[str] = []
        self.qemu_hosts: set[str] = set()
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- setup --
    def declare(self) -> None:
        dc = self.dc
        n_test = max(1, self.config.vms - self.config.qemu_vms)
        share = math.ceil(n_test / len(dc.hosts)) * 2  # room for twice a host's share (faults crowd hosts)
        cpu_oc = min(64, max(4, math.ceil(share / 16)))
        custom = dc.custom()
        for h in dc.hosts:
            for doc in (
                host_doc(
                    h.name,
                    h.qemu_uri,
                    "qemu",
                    virtualization="Emulated",
                    cpuOvercommit=8,
                    **({"underlayAddress": h.address} if h.address else {}),
                ),
                host_doc(f"{h.name}-test", h.test_uri, "test", cpuOvercommit=cpu_oc, memoryOvercommit=4),
            ):
                custom.create_cluster_custom_object(GROUP, VERSION, "hosts", doc)
                self.host_names.append(doc["metadata"]["name"])
            self.qemu_hosts.add(h.name)
        custom.create_cluster_custom_object(GROUP, VERSION, "storagepools", pool_doc())
        base = 200 + self.rng.randrange(50)
        for i, s in enumerate(SWITCHES):
            doc = switch_doc(s, f"10.{base}.{i * 4}.0/22")
            custom.create_cluster_custom_object(GROUP, VERSION, "virtualswitches", doc)
        core = kubernetes.client.CoreV1Api(dc.api())
        for ns in ("chaos", "chaos-base"):
            core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=ns)))
        dc.start_operator()
        wait_for(
            "Hosts, pool and switches Ready",
            lambda: not pending(read_api(dc, ("chaos",)), set(), set(), self.host_names),
            timeout=180,
        )
        # What the API says is Ready must run on the hosts (pool-/switch-state-mismatch otherwise).
        self.check("chaos", "setup (Hosts, pool and switches Ready)", self.setup, only_realised=True)
        # Something the operator did not create, on every QEMU host: a domain and a volume in the pool.
        for h in dc.hosts:
            with connect(h.qemu_uri) as conn:
                conn.defineXML(
                    f"<domain type='qemu'><name>{FOREIGN}</name><memory unit='MiB'>32</memory>"
                    "<os><type arch='x86_64'>hvm</type></os></domain>"
                )

            def foreign_volume(uri: str = h.qemu_uri) -> bool:
                with connect(uri) as conn:
                    conn.storagePoolLookupByName(LIBVIRT_POOL).createXML(
                        f"<volume><name>{FOREIGN}.raw</name><capacity unit='KiB'>64</capacity>"
                        "<target><format type='raw'/></target></volume>",
                        0,
                    )
                return True

            wait_for(f"a foreign volume in {LIBVIRT_POOL} on {h.name}", foreign_volume, timeout=120)

    # -- one rollout + teardown --
    def names(self, namespace: str) -> list[tuple[str, str, bool]]:
        """(name, switch, on QEMU) for every VM; QEMU VMs spread over the list."""
        n, q = self.config.vms, min(self.config.qemu_vms, self.config.vms)
        qemu_at = {round((i + 0.5) * n / q) for i in range(q)} if q else set()
        width = max(3, len(str(n)))
        return [(f"vm-{i:0{width}d}", SWITCHES[i % len(SWITCHES)], i in qemu_at) for i in range(n)]

    def run_once(
        self, namespace: str, faults: list[str | None], wave_hint: list[float] | None, rng: random.Random
    ) -> RunResult:
        """The rollout in the first half of the waves, the teardown in the rest (one wave per entry of
        ``faults``, at least 2); each wave's fault (None: none) at a random moment within it. ``rng``
        orders the deletions (the faults' moments and targets come from the run's own)."""
        result = RunResult(namespace)
        vms = self.names(namespace)
        waves = max(2, len(faults))
        rollout_waves = math.ceil(waves / 2)
        teardown_waves = waves - rollout_waves
        create_batches = _split(vms, rollout_waves)
        delete_order = list(vms)
        rng.shuffle(delete_order)
        delete_batches = _split(delete_order, teardown_waves)
        present: set[tuple[str, str]] = set()
        gone: set[tuple[str, str]] = set()
        fault_iter = iter(faults)
        wave_index = 0
        custom = self.dc.custom()

        def create(item: tuple[str, str, bool]) -> None:
            name, switch, qemu = item
            body = vm_doc(name, namespace, switch, qemu)
            _retry_api(
                lambda: custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "virtualmachines", body, _request_timeout=(5, 30)
                ),
                ok_status=(409,),
                timeout=self.config.converge_timeout,
            )

        def delete(item: tuple[str, str, bool]) -> None:
            name = item[0]
            _retry_api(
                lambda: custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, "virtualmachines", name, _request_timeout=(5, 30)
                ),
                ok_status=(404,),
                timeout=self.config.converge_timeout,
            )

        with concurrent.futures.ThreadPoolExecutor(self.config.create_workers) as pool:
            for phase, batches, action in (("rollout", create_batches, create), ("teardown", delete_batches, delete)):
                for i, batch in enumerate(batches):
                    keys = {(namespace, b[0]) for b in batch}
                    if action is create:
                        present |= keys
                    else:
                        present -= keys
                        gone |= keys
                    fault_kind = next(fault_iter, None)
                    label = f"{phase} wave {i + 1}/{len(batches)}"
                    wave_start = time.monotonic()
                    futures = [pool.submit(action, b) for b in batch]
                    fault: Fault | None = None
                    if fault_kind is not None:
                        hint = wave_hint[wave_index] if wave_hint and wave_index < len(wave_hint) else 5.0
                        time.sleep(self.rng.uniform(0, max(1.0, hint)))
                        fault = self.inject(fault_kind, label)
                    for f in futures:
                        f.result()
                    after = fault.label() if fault else f"{namespace} {label} (no fault)"
                    seconds = self.converge(namespace, present, gone, fault, after) - wave_start
                    result.wave_seconds.append(seconds)
                    if phase == "rollout":
                        result.rollout_seconds += seconds
                    else:
                        result.teardown_seconds += seconds
                    took = self.check(namespace, after, result)
                    log(f"{namespace} {label}: {len(batch)} VMs {'created' if action is create else 'deleted'}, "
                        f"converged in {seconds:.1f}s, checked in {took:.1f}s; "
                        f"{len(self.report.violations)} violations so far")  # fmt: skip
                    wave_index += 1
                if phase == "rollout":
                    self.settle(namespace, present)
        return result

    def converge(
        self,
        namespace: str,
        present: set[tuple[str, str]],
        gone: set[tuple[str, str]],
        fault: Fault | None,
        after: str,
    ) -> float:
        """Wait until every object has converged (or the timeout: violations); the time it happened."""
        start = time.monotonic()
        deadline = start + self.config.converge_timeout
        left: list[str] = []
        view: ApiView | None = None
        last_said = start
        while time.monotonic() < deadline:
            self._operator_alive(after)
            try:
                view = read_api(self.dc, (namespace,))
            except Exception:
                time.sleep(0.5)
                continue
            left = pending(view, present, gone, self.host_names)
            if not left:
                break
            if time.monotonic() - last_said > 20:
                kinds = Counter(item.split(":")[0].split()[0] for item in left)
                log(f"waiting after {after}: {len(left)} not converged ({dict(kinds)}), e.g. {left[0]}")
                last_said = time.monotonic()
            time.sleep(0.5)
        done = time.monotonic()
        if left:
            for item in left[:20]:
                self.violation(
                    Violation(
                        "not-converged",
                        item.split(":")[0],
                        f"not converged {self.config.converge_timeout:.0f}s after the wave/fault: "
                        f"{item.split(':', 1)[1].strip()}",
                        after,
                    )
                )
            if len(left) > 20:
                self.violation(Violation("not-converged", f"{len(left) - 20} more objects", "see above", after))
        elif fault is not None:
            fault.converged_at = self.now()
            assert view is not None
            fault.stalled = sum(1 for k in present if is_true(view.vms.get(k), "Stalled"))
            log(
                f"{fault.label()}: converged {fault.converge_seconds:.1f}s after it was healed"
                f"{f'; {fault.stalled} VMs Stalled' if fault.stalled else ''}"
            )
        return done

    def settle(self, namespace: str, present: set[tuple[str, str]]) -> None:
        """After the rollout, with every fault healed: a VM Stalled by a fault must become Ready."""
        deadline = time.monotonic() + self.config.settle_timeout
        stalled: list[str] = []
        while time.monotonic() < deadline:
            try:
                view = read_api(self.dc, (namespace,))
            except Exception:
                time.sleep(1)
                continue
            stalled = [
                f"{k[0]}/{k[1]}: {(condition(view.vms.get(k), 'Stalled') or {}).get('message')}"
                for k in sorted(present)
                if not is_true(view.vms.get(k), "Ready")
            ]
            if not stalled:
                return
            time.sleep(2)
        for item in stalled:
            name, message = item.split(": ", 1)
            self.violation(
                Violation(
                    "stalled-after-heal",
                    f"vm {name}",
                    f"not Ready {self.config.settle_timeout:.0f}s after the rollout with every fault healed: {message}",
                    f"{namespace} rollout",
                )
            )

    def check(
        self, namespace: str, after: str, result: RunResult, final: bool = False, only_realised: bool = False
    ) -> float:
        """Invariants; a violation counts when it is still there in a second look a few seconds later
        (the API and the hosts are read one after the other, so one look may see a step in between).
        Returns the seconds the first look took."""
        rounds = 6 if not final else 20
        started = time.monotonic()
        took = 0.0
        first: list[Violation] = []
        found: list[Violation] = []
        for attempt in range(rounds):
            try:
                api = read_api_retrying(self.dc, (namespace,))
                virt = read_libvirt(self.dc)
            except Exception as exc:
                found = [Violation("check-failed", "bench", f"could not read the datacenter: {exc!r}")]
                time.sleep(3)
                continue
            checker = Checker(api, virt, (namespace,), self.qemu_hosts)
            if only_realised:
                checker.realised()
            else:
                checker.run()
            found = checker.violations
            if attempt == 0:
                took = time.monotonic() - started
                result.checks += checker.checks
                result.check_rounds += 1
                first = found
            if not found:
                for item in first[:5]:  # seen once, gone on a later look: said, not counted
                    self.report.notes.append(
                        f"transient on the first look after {after}: [{item.check}] {item.obj}: {item.message}"
                    )
                return took
            time.sleep(3)
        for item in found:
            self.violation(Violation(item.check, item.obj, item.message, after))
        return took

    def violation(self, v: Violation) -> None:
        if any(x.key() == v.key() and x.after == v.after for x in self.report.violations):
            return
        log(f"VIOLATION {v.text()}")
        self.report.violations.append(v)

    def _operator_alive(self, after: str) -> None:
        code = self.dc.operator_exited()
        if code is not None:
            summary = self.dc.crash_summary()
            self.violation(Violation("operator-exited", "operator", f"exited by itself with status {code}: {summary}",
                                     after))  # fmt: skip
            self.dc.operator = None
            self.dc.start_operator()

    # -- faults --
    def inject(self, kind: str, phase: str) -> Fault:
        dc = self.dc
        fault = Fault(len(self.report.faults) + 1, kind, "", phase)
        self.report.faults.append(fault)
        fault.injected_at = self.now()
        if kind == "operator-kill":
            fault.target = "operator"
            delay = self.rng.choice([0.0, self.rng.uniform(0.5, 5)])
            dc.kill_operator()
            time.sleep(delay)
            dc.start_operator()
            fault.detail = f"SIGKILL, restarted after {delay:.1f}s"
        elif kind in ("apiserver-restart", "etcd-restart"):
            proc = "kube-apiserver" if kind == "apiserver-restart" else "etcd"
            fault.target = proc
            delay = self.rng.uniform(0, 3)
            cmdline = dc.crash_cp_process(proc)
            time.sleep(delay)
            dc.start_cp_process(proc, cmdline)
            ready = dc.etcd_healthy if proc == "etcd" else dc.apiserver_ready
            wait_for(f"{proc} back", lambda: _quiet(ready), timeout=120)
            fault.detail = f"SIGKILL, started again after {delay:.1f}s with the same command line"
        elif kind == "libvirtd-restart":
            h = self.rng.choice(dc.hosts)
            fault.target = h.name
            delay = self.rng.uniform(0, 3)
            dc.crash_libvirtd(h)
            time.sleep(delay)
            dc.start_libvirtd(h)
            fault.detail = f"SIGKILL, started again after {delay:.1f}s (test-driver state of {h.name}-test is reset)"
        elif kind == "host-hang":
            h = self.rng.choice(dc.hosts)
            fault.target = h.name
            hold = self.rng.uniform(*self.config.hang_seconds)
            dc.hang_host(h)
            time.sleep(hold)
            dc.unhang_host(h)
            holder = dc.test_holder_alive(h)
            if not holder:
                dc._start_test_holder(h)
            fault.detail = f"libvirtd SIGSTOP + link {h.meta('veth') or '(none)'} down for {hold:.1f}s" + (
                "" if holder else "; the rig's test-driver holder had dropped (test-driver state reset)"
            )
        elif kind == "pool-full":
            h = self.rng.choice(dc.hosts)
            qemu = self.rng.random() < 0.5
            host = h.name if qemu else f"{h.name}-test"
            fault.target = host
            hold = self.rng.uniform(5, 15)
            filled = fill_pool(h, qemu)
            time.sleep(hold)
            free_pool(h, qemu)
            fault.detail = f"filled with {filled // 2**20} MiB for {hold:.1f}s, then freed"
        else:
            raise ValueError(f"unknown fault kind {kind}")
        fault.restored_at = self.now()
        log(f"{fault.label()}: {fault.detail}")
        return fault


def fill_pool(h: RigHost, qemu: bool) -> int:
    """Make the host's pool full: on QEMU a file filling the pool's tmpfs; on the test driver (pools in
    the daemon's memory, 100 GiB each) a volume taking all that is free. Returns the bytes taken."""
    if qemu:
        fs = Path(f"/proc/{h.pid('libvirtd')}/root{POOL_FS}")
        st = os.statvfs(fs)
        free = st.f_bavail * st.f_frsize
        fd = os.open(fs / "filler", os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            with contextlib.suppress(OSError):
                os.posix_fallocate(fd, 0, free)
        finally:
            os.close(fd)
        return free
    with connect(h.test_uri) as conn:
        pool = conn.storagePoolLookupByName(LIBVIRT_POOL)
        pool.refresh(0)
        free = int(pool.info()[3])
        pool.createXML(
            f"<volume><name>chaos-filler.raw</name><capacity unit='bytes'>{free}</capacity>"
            f"<allocation unit='bytes'>{free}</allocation><target><format type='raw'/></target></volume>",
            0,
        )
        return free


def free_pool(h: RigHost, qemu: bool) -> None:
    if qemu:
        Path(f"/proc/{h.pid('libvirtd')}/root{POOL_FS}/filler").unlink(missing_ok=True)
        return
    with connect(h.test_uri) as conn, contextlib.suppress(libvirt.libvirtError):
        conn.storagePoolLookupByName(LIBVIRT_POOL).storageVolLookupByName("chaos-filler.raw").delete(0)


def _retry_api(fn: Callable[[], Any], ok_status: tuple[int, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fn()
            return
        except kubernetes.client.ApiException as exc:
            if exc.status in ok_status:
                return
            if time.monotonic() > deadline or exc.status in (400, 403, 422):
                raise
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _split(items: list[T], parts: int) -> list[list[T]]:
    parts = max(1, parts)
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def fault_plan(config: Config, rng: random.Random) -> list[str]:
    if config.plan is not None:
        plan = list(config.plan)
        rng.shuffle(plan)
        return plan
    kinds = [k for k in FAULT_KINDS if k in config.only]
    return rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds], k=config.faults)


def run(config: Config) -> Report:
    """The whole benchmark on a datacenter of its own; everything started is stopped again (unless keep)."""
    seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    rng = random.Random(seed)
    temp_state = config.state is None
    state = Path(tempfile.mkdtemp(prefix="vdc-chaos-")) if temp_state else Path(config.state or ".").resolve()
    state.mkdir(parents=True, exist_ok=True)
    prefix = config.prefix or f"vdcc-{secrets.token_hex(2)}"
    report = Report(seed=seed, config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()})
    report.state = str(state)
    log(f"seed {seed} (re-run with --seed {seed})")
    dc = Datacenter(state, prefix)
    ok = False
    try:
        dc.start(config.hosts)
        chaos = Chaos(config, dc, report, rng)
        chaos.declare()
        plan = fault_plan(config, rng)
        log(f"faults planned: {dict(Counter(plan))}")
        hint = None
        if config.baseline:
            log(f"baseline: {config.vms} VMs rolled out and torn down in {max(2, len(plan))} waves, no faults")
            # its own random stream: the faulty run is the same with or without the baseline
            report.baseline = chaos.run_once("chaos-base", [None] * len(plan), None, random.Random(seed + 1))
            chaos.check("chaos-base", "baseline teardown", report.baseline, final=True)
            hint = report.baseline.wave_seconds
            log(
                f"baseline: rollout {report.baseline.rollout_seconds:.1f}s, teardown "
                f"{report.baseline.teardown_seconds:.1f}s"
            )
        log(f"chaos: {config.vms} VMs rolled out and torn down with {len(plan)} faults")
        report.chaos = chaos.run_once("chaos", list(plan), hint, random.Random(seed + 1))
        chaos.check("chaos", "the end of the run (everything deleted)", report.chaos, final=True)
        report.operator_starts = dc.operator_starts
        ok = True
    finally:
        if config.keep:
            log(f"--keep: left running; state {state}")
            if dc.cp is not None:
                log(f"use it:  export KUBECONFIG={dc.cp.kubeconfig} PATH={dc.cp.bin_dir}:$PATH")
            log("stop it: " + "; ".join(dc.teardown_commands()))
        else:
            dc.stop()
            if temp_state and ok and not report.violations:
                shutil.rmtree(state, ignore_errors=True)
                report.state = ""
            else:
                log(f"state (logs) kept in {state}")
    return report


# --- output ----------------------------------------------------------------------------------------


def format_report(report: Report) -> str:
    def s(x: float | None) -> str:
        return "n/a" if x is None or math.isnan(x) else f"{x:.1f} s"

    conv = report.convergence()
    kinds = Counter(f.kind for f in report.faults)
    chaos, base = report.chaos, report.baseline
    rows = [
        ("seed", str(report.seed)),
        (
            "datacenter",
            f"{report.config['hosts']} rig hosts (each a QEMU Host + a test-driver Host), "
            f"1 StoragePool, {len(SWITCHES)} VirtualSwitches",
        ),
        (
            "VMs",
            f"{report.config['vms']} ({min(report.config['qemu_vms'], report.config['vms'])} real QEMU guests), "
            "each with a blank disk and a NIC",
        ),
        ("faults injected", f"{len(report.faults)}: " + ", ".join(f"{k} {c}" for k, c in sorted(kinds.items()))),
        ("operator starts", str(report.operator_starts)),
        (
            "invariant checks",
            f"{chaos.checks if chaos else 0} in {chaos.check_rounds if chaos else 0} rounds"
            + (f" (+{base.checks} in {base.check_rounds} baseline rounds)" if base else ""),
        ),
        ("violations", str(len(report.violations))),
        ("converged after fault p50/p90", f"{s(percentile(conv, 50))} / {s(percentile(conv, 90))}"),
        ("converged after fault p99/max", f"{s(percentile(conv, 99))} / {s(max(conv) if conv else None)}"),
        ("faults not converged", str(sum(1 for f in report.faults if f.converged_at is None))),
        (
            "chaos rollout + teardown",
            f"{s(chaos.rollout_seconds if chaos else None)} + "
            f"{s(chaos.teardown_seconds if chaos else None)} = "
            f"{s(chaos.total_seconds if chaos else None)}",
        ),
        (
            "baseline rollout + teardown",
            f"{s(base.rollout_seconds)} + {s(base.teardown_seconds)} = {s(base.total_seconds)}"
            if base
            else "not run (--no-baseline)",
        ),
    ]
    if base and chaos and base.total_seconds > 0:
        rows.append(("ratio chaos / baseline", f"{chaos.total_seconds / base.total_seconds:.1f}x"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("")
    lines.append("faults:")
    for f in report.faults:
        conv_text = f"converged in {f.converge_seconds:.1f}s" if f.converge_seconds is not None else "NOT converged"
        stalled = f", {f.stalled} Stalled" if f.stalled else ""
        lines.append(
            f"  #{f.index:<3} +{f.injected_at:6.1f}s  {f.kind:<17} {f.target:<16} {f.phase:<20} "
            f"{conv_text}{stalled}  ({f.detail})"
        )
    if report.violations:
        lines.append("")
        lines.append(report.violation_text())
    for note in report.notes:
        lines.append(f"note: {note}")
    if report.state:
        lines.append(f"state and logs: {report.state}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Config, Path | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=3, help="rig hosts (default %(default)s)")
    p.add_argument("--vms", type=int, default=200, help="VirtualMachines (default %(default)s)")
    p.add_argument("--qemu-vms", type=int, default=4, help="of which real QEMU guests (default %(default)s)")
    p.add_argument("--faults", type=int, default=20, help="faults to inject, one per wave (default %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument(
        "--only",
        default=",".join(FAULT_KINDS),
        help=f"fault kinds to choose from, comma separated (default: all of {', '.join(FAULT_KINDS)})",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the rollout+teardown without faults")
    p.add_argument("--converge-timeout", type=float, default=300, help="per wave/fault (default %(default)s s)")
    p.add_argument("--settle-timeout", type=float, default=150, help="for Stalled VMs after the rollout")
    p.add_argument(
        "--state", type=Path, default=None, help="state dir (default: a temp dir, removed after a clean run)"
    )
    p.add_argument("--keep", action="store_true", help="leave everything running at the end")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    args = p.parse_args(argv)
    only = tuple(k.strip() for k in args.only.split(",") if k.strip())
    unknown = [k for k in only if k not in FAULT_KINDS]
    if unknown:
        p.error(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
    if not 1 <= args.hosts <= 40 or args.vms < 1 or args.faults < 0 or not only:
        p.error("need 1..40 hosts, at least one VM, faults >= 0 and at least one fault kind")
    config = Config(
        hosts=args.hosts,
        vms=args.vms,
        qemu_vms=args.qemu_vms,
        faults=args.faults,
        seed=args.seed,
        only=only,
        baseline=not args.no_baseline,
        state=args.state,
        keep=args.keep,
        converge_timeout=args.converge_timeout,
        settle_timeout=args.settle_timeout,
    )
    return config, args.json


def main(argv: list[str] | None = None) -> int:
    config, json_path = parse_args(argv)
    if os.geteuid() != 0:
        log("must run as root (the libvirt hosts use namespaces and bind mounts)")
        return 2

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        report = run(config)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    print(format_report(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
