"""VM scale benchmark: N VirtualMachines onto H libvirt test-driver hosts, next to a raw libvirt floor.

Prints figures; asserts nothing about time. See bench/README.md for what each figure means.

    .venv/bin/python bench/vm_scale.py [--hosts 10] [--vms 1000] [--steady-seconds 60] [--json out.json]

Steps: control plane + CRDs, H libvirt hosts (test+unix URIs: libvirt's test driver, instant fake
domains), one Host object per host; the baseline (raw libvirt-python define+start of N domains,
one connection and one thread per host); then the operator as a subprocess, N VMs created at once,
a watch until every VM is Ready=True, a steady-state window, and a table. Everything started is
stopped again (also on Ctrl-C and errors) unless --keep.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "operator"))

import kubernetes  # noqa: E402
import libvirt  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

import peers  # noqa: E402
import rig  # noqa: E402
from api_floor import EventWrite, VmWrites, run_api_floor  # noqa: E402
from vdc.api.quantity import to_bytes  # noqa: E402
from vdc.api.virtualmachine import VirtualMachine  # noqa: E402
from vdc.controllers.vm_domain import domain_for  # noqa: E402
from vdc.handlers import HOST_COUNTS_DELAY, VM_WORKERS  # noqa: E402
from vdc.libvirt.host_facts import read_host_facts  # noqa: E402

GROUP, VERSION = "vdc.dev", "v1alpha1"
NAMESPACE = "vdc-bench"
FLOOR_NAMESPACE = "vdc-bench-floor"
"""The operator's VM queue workers (vdc.handlers): the API floor writes with as many."""
BOOT_DIR = "/var/lib/libvirt/boot/vdc-tiny"
KERNEL = f"{BOOT_DIR}/vmlinuz"
INITRD = f"{BOOT_DIR}/initrd.img"
VM_MEMORY = "64Mi"
VM_MEMORY_BYTES = 64 * 1024 * 1024
MAX_CPU_OVERCOMMIT = 64
MAX_MEMORY_OVERCOMMIT = 4


def log(msg: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- small helpers --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def is_ready(obj: dict[str, Any]) -> bool:
    cond = condition(obj, "Ready")
    return bool(cond and cond.get("status") == "True")


def git_version() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_description() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return f"{os.cpu_count()} CPUs ({cpu}), {mem_gib:.0f} GiB RAM, {platform.system()} {platform.release()}"


# --- watching -------------------------------------------------------------------------------------

_META_IGNORED = ("resourceVersion", "managedFields", "generation")


def _changed_parts(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """What a MODIFIED event changed: '+'-joined 'metadata.<key>', 'spec', 'status'."""
    if old is None:
        return "create"
    parts = []
    old_meta = {k: v for k, v in (old.get("metadata") or {}).items() if k not in _META_IGNORED}
    new_meta = {k: v for k, v in (new.get("metadata") or {}).items() if k not in _META_IGNORED}
    for key in sorted(old_meta.keys() | new_meta.keys()):
        if old_meta.get(key) != new_meta.get(key):
            parts.append(f"metadata.{key}")
    if old.get("spec") != new.get("spec"):
        parts.append("spec")
    if old.get("status") != new.get("status"):
        parts.append("status")
    return "+".join(parts) or "none"


@dataclass
class Seen:
    """What the watch saw of one object."""

    rvs: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    last: dict[str, Any] | None = None
    ready_at: float | None = None
    writes_until_ready: int | None = None
    parts_until_ready: list[str] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    """Each status it went through until Ready (the API floor replays them)."""


class Watcher(threading.Thread):
    """Watches one resource from a given resourceVersion and records every event (time, rv, what changed)."""

    def __init__(self, name: str, list_fn: Callable[..., Any], args: tuple[Any, ...], resource_version: str) -> None:
        super().__init__(name=f"watch-{name}", daemon=True)
        self.kind = name
        self._list_fn = list_fn
        self._args = args
        self._rv = resource_version
        self._stop = threading.Event()
        self.lock = threading.Lock()
        self.objects: dict[str, Seen] = {}
        self.events: list[tuple[float, str, str, str]] = []  # (time, type, name, parts)
        self.errors: list[str] = []
        self.changed = threading.Condition(self.lock)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            w = kubernetes.watch.Watch()
            try:
                for ev in w.stream(self._list_fn, *self._args, resource_version=self._rv, timeout_seconds=30):
                    now = time.monotonic()
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        raise ApiException(status=int(obj.get("code", 500)), reason=str(obj.get("message")))
                    self._rv = obj["metadata"]["resourceVersion"]
                    self._record(now, ev["type"], obj)
                    if self._stop.is_set():
                        w.stop()
                        break
            except ApiException as exc:
                if exc.status == 410:
                    self.errors.append(f"watch expired at rv {self._rv}; relisting (events in between are lost)")
                    self._rv = self._list_fn(*self._args)["metadata"]["resourceVersion"]
                else:
                    self.errors.append(f"watch error {exc.status}: {exc.reason}")
                    time.sleep(0.5)
            except Exception as exc:  # connection dropped: resume from the last rv
                if not self._stop.is_set():
                    self.errors.append(f"watch interrupted: {exc!r}")
                    time.sleep(0.5)

    def _record(self, now: float, type_: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            seen = self.objects.setdefault(name, Seen())
            parts = "delete" if type_ == "DELETED" else _changed_parts(seen.last, obj)
            seen.rvs.append(obj["metadata"]["resourceVersion"])
            seen.parts.append(parts)
            seen.times.append(now)
            if seen.ready_at is None and "status" in parts.split("+"):
                seen.statuses.append(obj.get("status") or {})
            seen.last = obj
            if seen.ready_at is None and is_ready(obj):
                seen.ready_at = now
                seen.writes_until_ready = len(set(seen.rvs)) - 1  # minus the create
                seen.parts_until_ready = list(seen.parts[1:])
            self.events.append((now, type_, name, parts))
            self.changed.notify_all()

    def ready_count(self, names: set[str]) -> int:
        with self.lock:
            return sum(1 for n in names if (s := self.objects.get(n)) is not None and s.ready_at is not None)

    def events_between(self, start: float, end: float) -> list[tuple[float, str, str, str]]:
        with self.lock:
            return [e for e in self.events if start <= e[0] < end]


# --- the rig --------------------------------------------------------------------------------------


@dataclass
class Rig:
    state: Path
    keep: bool
    prefix: str
    cp: rig.ControlPlane | None = None
    hosts_up: bool = False
    hosts: list[rig.LibvirtHost] = field(default_factory=list)
    operator: subprocess.Popen[bytes] | None = None
    operator_log: Path | None = None
    liveness_port: int = 0

    def start_controlplane(self) -> None:
        log(f"control plane up (VDC_STATE={self.state})")
        self.cp = rig.start_controlplane(self.state)
        rig.install_crds(self.cp)

    def start_hosts(self, count: int) -> None:
        log(f"{count} libvirt hosts up (prefix {self.prefix}, no netns)")
        self.hosts_up = True
        rig.run_script(
            "libvirt-hosts.sh",
            "up",
            str(count),
            state=self.state,
            env={"VDC_HOST_PREFIX": self.prefix, "VDC_HOST_NETNS": "0"},
        )
        for line in (self.state / "hosts" / "hosts.txt").read_text().splitlines():
            parts = line.split()
            if parts:
                self.hosts.append(rig.LibvirtHost(parts[0], parts[1], parts[2], None))

    def start_operator(self, profile: Path | None = None) -> None:
        assert self.cp is not None
        self.liveness_port = free_port()
        self.operator_log = self.state / "operator.log"
        env = {**self.cp.env, "PYTHONUNBUFFERED": "1"}
        # /healthz is served with /metrics: a free port, so the benchmark never collides with a demo's operator
        metrics = ["--metrics-address", "127.0.0.1", "--metrics-port", str(self.liveness_port)]
        cmd = [str(REPO / ".venv/bin/vdc"), "run", *metrics]
        if profile is not None:  # cProfile of the event-loop thread, written when the operator exits
            cmd = [str(REPO / ".venv/bin/python"), "-m", "cProfile", "-o", str(profile.resolve()), *cmd]
        log(f"operator up (log {self.operator_log}{', profiled' if profile else ''})")
        with self.operator_log.open("wb") as out:
            self.operator = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, not it: we stop it in order
            )
        (self.state / "operator.pid").write_text(f"{self.operator.pid}\n")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.operator.poll() is not None:
                raise RuntimeError(f"operator exited ({self.operator.returncode}); see {self.operator_log}")
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"operator liveness endpoint not up within 60s; see {self.operator_log}")

    def teardown_commands(self) -> list[str]:
        cmds = []
        if self.operator is not None and self.operator.poll() is None:
            cmds.append(f"kill {self.operator.pid}")
        if self.hosts_up:
            cmds.append(f"VDC_STATE={self.state} VDC_HOST_PREFIX={self.prefix} {REPO}/hack/libvirt-hosts.sh down")
        if self.cp is not None:
            cmds.append(f"VDC_STATE={self.state} {REPO}/hack/controlplane.sh down")
        return cmds

    def stop_operator(self) -> None:
        proc, self.operator = self.operator, None
        if proc is None or proc.poll() is not None:
            return
        log(f"stopping operator (pid {proc.pid})")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def teardown(self) -> None:
        self.stop_operator()
        if self.hosts_up:
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


def kube_client(kubeconfig: Path, pool: int) -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = pool
    return kubernetes.client.ApiClient(cfg)


# --- manifests ------------------------------------------------------------------------------------


def vm_manifest(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runStrategy": "Always",
            "cpu": {"count": 1},
            "memory": {"size": VM_MEMORY},
            "boot": {"kernel": {"kernel": KERNEL, "initrd": INITRD, "cmdline": "console=ttyS0"}},
        },
    }


def vm_names(n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"vm-{i:0{width}d}" for i in range(1, n + 1)]


# --- baseline -------------------------------------------------------------------------------------


@dataclass
class Baseline:
    seconds: float
    per_host_seconds: list[float]
    domain_type: str
    cleanup_seconds: float


def guest_domain_type(facts: Any) -> str:
    """The domain type the operator would use on this host (the HostFacts API has had two shapes)."""
    chooser = getattr(facts, "domain_type", None)
    if callable(chooser):
        return str(chooser())
    preferred = getattr(facts, "preferred_domain_type", None)
    if isinstance(preferred, str):
        return preferred
    return next((t for t in ("kvm", "qemu", "test") if t in facts.domain_types), "qemu")


def run_baseline(uris: list[str], n: int) -> Baseline:
    """Raw libvirt-python: define+start the same N domains round-robin over the hosts, one connection
    and one thread per host (connections opened before the clock starts, as the operator's are)."""
    conns = [libvirt.open(uri) for uri in uris]
    try:
        domain_type = guest_domain_type(read_host_facts(conns[0]))
        xmls: list[list[tuple[str, str]]] = [[] for _ in conns]
        for i, name in enumerate(vm_names(n)):
            body = vm_manifest(name, "bench-raw")
            body["metadata"]["uid"] = str(uuid.uuid4())  # fresh UUIDs: never the operator's
            vm = VirtualMachine.model_validate(body)
            config = domain_for(vm, domain_type=domain_type, host_file_dirs=(BOOT_DIR,))
            xmls[i % len(conns)].append((config.uuid, config.to_string()))
        barrier = threading.Barrier(len(conns) + 1)
        per_host = [0.0] * len(conns)
        errors: list[BaseException] = []

        def work(idx: int) -> None:
            conn = conns[idx]
            barrier.wait()
            t0 = time.monotonic()
            try:
                for _uuid, xml in xmls[idx]:
                    conn.defineXML(xml).create()
            except BaseException as exc:
                errors.append(exc)
            per_host[idx] = time.monotonic() - t0

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(conns))]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.monotonic()
        for t in threads:
            t.join()
        total = time.monotonic() - t0
        if errors:
            raise RuntimeError(f"baseline define+start failed: {errors[0]!r}")

        t1 = time.monotonic()

        def clean(idx: int) -> None:
            for dom_uuid, _xml in xmls[idx]:
                with contextlib.suppress(libvirt.libvirtError):
                    dom = conns[idx].lookupByUUIDString(dom_uuid)
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()

        with concurrent.futures.ThreadPoolExecutor(len(conns)) as pool:
            list(pool.map(clean, range(len(conns))))
        return Baseline(total, per_host, domain_type, time.monotonic() - t1)
    finally:
        for conn in conns:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()


# --- operator run ---------------------------------------------------------------------------------


def create_hosts(custom: Any, hosts: list[rig.LibvirtHost], cpu_oc: float, mem_oc: float) -> None:
    for h in hosts:
        custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "hosts",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Host",
                "metadata": {"name": h.name},
                "spec": {
                    "uri": h.test_uri,
                    "cpuOvercommit": cpu_oc,
                    "memoryOvercommit": mem_oc,
                    "hostFiles": {"allowedPaths": [BOOT_DIR]},
                },
            },
        )


def wait_hosts_ready(custom: Any, names: list[str], timeout: float, operator: subprocess.Popen[bytes]) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        items = custom.list_cluster_custom_object(GROUP, VERSION, "hosts")["items"]
        ours = [h for h in items if h["metadata"]["name"] in names]
        if len(ours) == len(names) and all(is_ready(h) for h in ours):
            return ours
        if operator.poll() is not None:
            raise RuntimeError(f"operator exited ({operator.returncode}) before the Hosts were Ready")
        if time.monotonic() > deadline:
            states = {h["metadata"]["name"]: (condition(h, "Ready") or {}).get("message") for h in ours}
            raise RuntimeError(f"Hosts not Ready within {timeout:.0f}s: {states}")
        time.sleep(0.5)


def count_events(core: Any, namespace: str) -> Counter[tuple[str, str]]:
    """(involved kind, reason) -> count of Event objects in the namespace."""
    counts: Counter[tuple[str, str]] = Counter()
    cont = None
    while True:
        resp = core.list_namespaced_event(namespace, limit=500, _continue=cont)
        for ev in resp.items:
            counts[(ev.involved_object.kind or "?", ev.reason or "?")] += 1
        cont = resp.metadata._continue
        if not cont:
            return counts


_RECONCILES = re.compile(
    r'^vdc_reconcile_total\{(?=[^}]*controller="vms")(?=[^}]*result="success")[^}]*\} (\S+)$', re.M
)
"""Completed VM reconciles: not one that asked to look again later (a host whose connection is still opening,
a guest still starting), which would count a VM as reconciled before it was compared with its domain."""
_DEPTH = re.compile(r'^vdc_workqueue_depth\{name="vms"\} (\S+)$', re.M)


def vm_queue_figures(port: int) -> tuple[float, float, float]:
    """(VM reconciles completed so far, VMs waiting in the work queue, seconds the scrape took) from /metrics."""
    t0 = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    took = time.monotonic() - t0
    depth = _DEPTH.search(text)
    return sum(float(x) for x in _RECONCILES.findall(text)), float(depth.group(1)) if depth else math.nan, took


def events_by_object(core: Any, namespace: str) -> dict[str, list[EventWrite]]:
    """VirtualMachine name -> its Events in the namespace, oldest first."""
    found: dict[str, list[tuple[Any, EventWrite]]] = {}
    cont = None
    while True:
        resp = core.list_namespaced_event(namespace, limit=500, _continue=cont)
        for ev in resp.items:
            if ev.involved_object.kind == "VirtualMachine":
                write = EventWrite(ev.reason or "", ev.message or "", ev.type == "Warning")
                found.setdefault(ev.involved_object.name, []).append((ev.first_timestamp, write))
        cont = resp.metadata._continue
        if not cont:
            return {name: [w for _, w in sorted(evs, key=lambda e: str(e[0]))] for name, evs in found.items()}


def bulk_create(custom: Any, manifests: list[dict[str, Any]], workers: int) -> tuple[float, list[str]]:
    """Create all VMs with parallel API calls; (seconds taken, errors)."""
    errors: list[str] = []

    def create(body: dict[str, Any]) -> None:
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualmachines", body)
        except ApiException as exc:
            errors.append(f"{body['metadata']['name']}: {exc.status} {exc.reason}")

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, manifests))
    return time.monotonic() - t0, errors


LOG_LEVEL = re.compile(r"\b(ERROR|WARNING|CRITICAL|Traceback)\b")


def summarize_log(path: Path, limit: int = 8) -> tuple[Counter[str], list[str]]:
    """Counts of ERROR/WARNING lines and the most frequent distinct messages (numbers masked)."""
    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            m = LOG_LEVEL.search(line)
            if not m:
                continue
            levels[m.group(1)] += 1
            text = line[m.start() :]
            text = re.sub(r"vm-\d+", "vm-N", text)
            text = re.sub(r"\b\d+(\.\d+)?\b", "N", text)
            messages[text[:200]] += 1
    return levels, [f"{count}x {msg}" for msg, count in messages.most_common(limit)]


# --- report ---------------------------------------------------------------------------------------


def fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def table(r: dict[str, Any]) -> str:
    rows = [
        ("hosts", fmt(r["hosts"])),
        ("VMs", fmt(r["vms"])),
        ("VMs Ready", f"{r['vms_ready']}/{r['vms']}"),
        ("bulk create (API calls)", fmt(r["create_seconds"], " s", 2)),
        ("operator: all Ready", fmt(r["all_ready_seconds"], " s", 2)),
        ("per-VM time to Ready p50", fmt(r["ready_p50_seconds"], " s", 2)),
        ("per-VM time to Ready p99", fmt(r["ready_p99_seconds"], " s", 2)),
        ("per-VM time to Ready max", fmt(r["ready_max_seconds"], " s", 2)),
        (
            "per-VM first write (any) p50/p99",
            f"{fmt(r['first_write_p50_seconds'], ' s', 2)} / {fmt(r['first_write_p99_seconds'], ' s', 2)}",
        ),
        ("VM writes until Ready, mean", fmt(r["writes_per_vm_mean"], "", 2)),
        ("VM writes until Ready, max", fmt(r["writes_per_vm_max"])),
        (
            "  of which status / metadata",
            f"{fmt(r['status_writes_per_vm'], '', 2)} / {fmt(r['metadata_writes_per_vm'], '', 2)}",
        ),
        ("Events per VM (rollout)", fmt(r["events_per_vm"], "", 2)),
        ("API writes per VM (VM + Events)", fmt(r["api_writes_per_vm"], "", 2)),
        ("Host writes during rollout", fmt(r["host_writes_rollout"])),
        ("steady state window", fmt(r["steady_seconds"], " s", 0)),
        ("steady writes/min (VM+Host+Event)", fmt(r["steady_writes_per_min"], "", 1)),
        ("  VM / Host / Event", f"{r['steady_vm_writes']} / {r['steady_host_writes']} / {r['steady_events']}"),
        ("operator peak RSS", fmt(r["operator_peak_rss_mib"], " MiB", 1)),
        ("operator RSS at rest", fmt(r["operator_rss_mib"], " MiB", 1)),
        ("operator CPU during rollout", fmt(r["operator_rollout_cpu_seconds"], " s", 1)),
        ("operator idle CPU (1 core = 100%)", fmt(r["operator_idle_cpu_percent"], " %", 2)),
        ("full resync (new process, every VM)", fmt(r.get("resync_seconds"), " s", 2)),
        (
            "  its VM writes / RSS after",
            f"{fmt(r.get('resync_vm_writes'))} / {fmt(r.get('resync_rss_mib'), ' MiB', 1)}",
        ),
        ("time per VM (all Ready / N)", fmt(r["all_ready_seconds"] * 1000 / r["vms"], " ms", 2)),
        ("RSS before the VMs", fmt(r.get("operator_rss_before_vms_mib"), " MiB", 1)),
        ("RSS per 1,000 VMs (at rest - before)", fmt(r.get("rss_per_1000_vms_mib"), " MiB", 1)),
        ("operator CPU per VM (rollout)", fmt(r["operator_cpu_ms_per_vm"], " ms", 1)),
        ("VM reconciles per VM (rollout)", fmt(r.get("reconciles_per_vm_rollout"), "", 2)),
        ("raw libvirt define+start (floor)", fmt(r["raw_seconds"], " s", 2)),
        ("API floor: same creates + writes", fmt(r.get("api_floor_seconds"), " s", 2)),
        ("  its writes per VM", fmt(r.get("api_floor_writes_per_vm"), "", 2)),
        ("  its client CPU per VM", fmt(r.get("api_floor_client_cpu_ms_per_vm"), " ms", 1)),
        ("ratio operator / raw libvirt", fmt(r["ratio"], "x", 1)),
        ("HEADLINE operator / max(floors)", fmt(r.get("headline_ratio"), "x", 2)),
        *((f"peer: {name}", text) for name, text in r.get("peer_rows", [])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=10, help="libvirt hosts (default %(default)s)")
    p.add_argument("--vms", type=int, default=1000, help="VirtualMachines (default %(default)s)")
    p.add_argument(
        "--state", type=Path, default=None, help="state dir (default: a temp dir, removed after a successful run)"
    )
    p.add_argument("--keep", action="store_true", help="leave the control plane, hosts and operator running")
    p.add_argument("--steady-seconds", type=float, default=60, help="steady-state window (default %(default)s)")
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=HOST_COUNTS_DELAY + 5,
        help="pause after all Ready before the window (default %(default)s: the Hosts' domain counts are written "
        "up to vdc.handlers.HOST_COUNTS_DELAY after the rollout's last domain event)",
    )
    p.add_argument("--ready-timeout", type=float, default=1800, help="give up waiting for Ready after this")
    p.add_argument(
        "--peers",
        default="ansible,terraform",
        help="tools people use today, on the same hosts and domains: ansible, terraform, none (default %(default)s)",
    )
    p.add_argument("--forks", type=int, default=10, help="ansible forks / terraform parallelism (default %(default)s)")
    p.add_argument("--no-resync", action="store_true", help="skip the full resync (the operator restarted)")
    p.add_argument("--no-api-floor", action="store_true", help="skip the API floor (the operator's writes replayed)")
    p.add_argument("--create-workers", type=int, default=16, help="parallel create calls (default %(default)s)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    p.add_argument(
        "--profile-operator",
        type=Path,
        default=None,
        metavar="PATH",
        help="run the operator under cProfile and write its stats here (slows it down: diagnosis only)",
    )
    args = p.parse_args(argv)
    if not 1 <= args.hosts <= 240:
        p.error("--hosts must be 1..240")
    if args.vms < 1:
        p.error("--vms must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        log("must run as root (the libvirt hosts use namespaces and bind mounts)")
        return 2
    temp_state = args.state is None
    state = Path(tempfile.mkdtemp(prefix="vdc-bench-")) if temp_state else args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    r = Rig(state=state, keep=args.keep, prefix=f"vdcb-{secrets.token_hex(3)}")

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    ok = False
    try:
        results = bench(r, args)
        ok = True
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if args.keep:
            log(f"--keep: left running; state {state}, operator log {r.operator_log}")
            if r.cp is not None:
                log(f"use it:  export KUBECONFIG={r.cp.kubeconfig} PATH={r.cp.bin_dir}:$PATH")
            log("stop it: " + "; ".join(r.teardown_commands()))
        else:
            r.teardown()
            if temp_state and ok:
                shutil.rmtree(state, ignore_errors=True)
            else:
                log(f"state (logs) kept in {state}")
    print(table(results))
    for line in results["operator_log_top"]:
        print(f"  log: {line}")
    if args.json:
        args.json.write_text(json.dumps(no_nan(results), indent=2) + "\n")
    return 0 if results["vms_ready"] == results["vms"] else 1


def bench(r: Rig, args: argparse.Namespace) -> dict[str, Any]:
    n, h = args.vms, args.hosts
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "command": " ".join([sys.executable, *sys.argv]),
        "git": git_version(),
        "loadavg_start": os.getloadavg()[0],
        "hosts": h,
        "vms": n,
    }
    r.start_controlplane()
    r.start_hosts(h)
    assert r.cp is not None

    # Baseline first, on the empty hosts, with no operator running: the floor for the same work.
    log(f"baseline: raw libvirt define+start of {n} domains over {h} hosts")
    base = run_baseline([x.test_uri for x in r.hosts], n)
    log(f"baseline: {base.seconds:.2f}s (domain type {base.domain_type}; cleanup {base.cleanup_seconds:.2f}s)")
    results.update(raw_seconds=base.seconds, raw_per_host_seconds=base.per_host_seconds, domain_type=base.domain_type)

    # Peers people use today, on the same empty hosts, the same N domains.
    chosen = [p for p in args.peers.split(",") if p and p != "none"]
    if chosen:
        jobs = peers.vm_scale_jobs([x.test_uri for x in r.hosts], n)
        ran = []
        for name in chosen:
            log(f"peer {name}: the same {n} domains over {h} hosts")
            if name == "ansible":
                ran.append(peers.run_ansible(jobs, forks=args.forks, work_dir=r.state / "ansible"))
            elif name == "terraform":
                ran.append(peers.run_terraform(jobs, parallelism=args.forks, work_dir=r.state / "terraform"))
            else:
                raise SystemExit(f"unknown peer {name!r} (ansible, terraform)")
            log(f"peer {name}: {ran[-1].not_run or f'{ran[-1].seconds:.2f}s'}")
        results["peers"] = [x.as_dict() for x in ran]
        results["peer_rows"] = [
            (x.name, f"not run: {x.not_run}" if x.not_run else (
                f"{fmt(x.seconds, ' s', 2)}, {fmt(x.cpu_seconds, ' s CPU', 1)}, running {x.running}/{n}, {x.settings}"
            ))
            for x in ran
        ]  # fmt: skip

    api = kube_client(r.cp.kubeconfig, pool=max(8, args.create_workers + 4))
    custom = kubernetes.client.CustomObjectsApi(api)
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})

    # Overcommit: enough that every host could hold twice its share of VMs (within the API's maxima).
    with contextlib.closing(libvirt.open(r.hosts[0].test_uri)) as conn:
        facts = read_host_facts(conn)
    share = math.ceil(n / h) * 2
    cpu_oc = min(MAX_CPU_OVERCOMMIT, max(1, math.ceil(share / facts.cpus)))
    mem_oc = min(MAX_MEMORY_OVERCOMMIT, max(1, math.ceil(share * VM_MEMORY_BYTES / facts.memory_bytes)))
    results.update(
        host_cpus=facts.cpus,
        host_memory_mib=facts.memory_bytes // 2**20,
        cpu_overcommit=cpu_oc,
        memory_overcommit=mem_oc,
    )
    create_hosts(custom, r.hosts, cpu_oc, mem_oc)

    host_list = custom.list_cluster_custom_object(GROUP, VERSION, "hosts")
    host_watch = Watcher(
        "hosts", custom.list_cluster_custom_object, (GROUP, VERSION, "hosts"), host_list["metadata"]["resourceVersion"]
    )
    host_watch.start()

    r.start_operator(args.profile_operator)
    assert r.operator is not None
    pid = r.operator.pid
    ready_hosts = wait_hosts_ready(custom, [x.name for x in r.hosts], 120, r.operator)
    alloc = [(x["status"].get("allocatable") or {}) for x in ready_hosts]
    cap_vms = sum(min(int(a.get("cpus", 0)), int(_mib(a.get("memory", "0")) // 64)) for a in alloc)
    log(f"{h} Hosts Ready; allocatable per host {alloc[0]} -> room for {cap_vms} VMs of 1 vCPU/64Mi in all")
    results.update(host_allocatable=alloc[0], room_for_vms=cap_vms)
    if cap_vms < n:
        log(f"WARNING: the Hosts only offer room for {cap_vms} VMs; some will stay unschedulable")

    events_before = count_events(core, NAMESPACE)
    vm_list = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualmachines")
    vm_watch = Watcher(
        "vms",
        custom.list_namespaced_custom_object,
        (GROUP, VERSION, NAMESPACE, "virtualmachines"),
        vm_list["metadata"]["resourceVersion"],
    )
    vm_watch.start()
    names = vm_names(n)
    manifests = [vm_manifest(name, NAMESPACE) for name in names]
    wanted = set(names)

    cpu0 = proc_cpu_seconds(pid)
    results["operator_rss_before_vms_mib"] = proc_status_kib(pid, "VmRSS") / 1024
    host_events0 = len(host_watch.events)
    log(f"creating {n} VirtualMachines ({args.create_workers} parallel calls)")
    t_apply = time.monotonic()
    create_seconds, create_errors = bulk_create(custom, manifests, args.create_workers)
    log(f"created in {create_seconds:.2f}s; {len(create_errors)} errors {create_errors[:3]}")
    results.update(create_seconds=create_seconds, create_errors=len(create_errors))

    deadline = t_apply + args.ready_timeout
    last_report = 0.0
    ready = 0
    while True:
        ready = vm_watch.ready_count(wanted)
        now = time.monotonic()
        if ready == n or now > deadline:
            break
        if r.operator.poll() is not None:
            log(f"operator exited ({r.operator.returncode}) with {ready}/{n} Ready")
            break
        if now - last_report >= 10:
            log(
                f"{ready}/{n} Ready after {now - t_apply:.0f}s; operator RSS "
                f"{proc_status_kib(pid, 'VmRSS') / 1024:.0f} MiB"
            )
            last_report = now
        with vm_watch.lock:
            vm_watch.changed.wait(timeout=1)
    t_ready = time.monotonic()
    operator_alive = r.operator.poll() is None
    log(f"{ready}/{n} Ready after {t_ready - t_apply:.2f}s")
    results["loadavg_rollout_end"] = os.getloadavg()[0]
    rollout_cpu = proc_cpu_seconds(pid) - cpu0 if operator_alive else math.nan
    reconciles = vm_queue_figures(r.liveness_port)[0] if operator_alive else math.nan

    with vm_watch.lock:
        seen = {name: vm_watch.objects.get(name) for name in names}
    times = [s.ready_at - t_apply for s in seen.values() if s is not None and s.ready_at is not None]
    first_write = [s.times[1] - t_apply for s in seen.values() if s is not None and len(s.times) > 1]
    writes = [s.writes_until_ready for s in seen.values() if s is not None and s.writes_until_ready is not None]
    part_counts: Counter[str] = Counter()
    status_writes = metadata_writes = 0
    for s in seen.values():
        if s is not None:
            for parts in s.parts_until_ready:
                part_counts[parts] += 1
                if "status" in parts.split("+"):
                    status_writes += 1
                if "metadata." in parts:
                    metadata_writes += 1
    events_after = count_events(core, NAMESPACE)
    rollout_events = events_after - events_before
    n_ready = max(1, len(writes))
    results.update(
        vms_ready=ready,
        all_ready_seconds=(t_ready - t_apply) if ready == n else math.nan,
        ready_p50_seconds=percentile(times, 50),
        ready_p99_seconds=percentile(times, 99),
        ready_max_seconds=max(times) if times else math.nan,
        first_write_p50_seconds=percentile(first_write, 50),
        first_write_p99_seconds=percentile(first_write, 99),
        writes_per_vm_mean=sum(writes) / n_ready if writes else math.nan,
        writes_per_vm_max=max(writes) if writes else None,
        status_writes_per_vm=status_writes / n_ready,
        metadata_writes_per_vm=metadata_writes / n_ready,
        vm_writes_until_ready_by_change=dict(part_counts.most_common()),
        events_rollout={f"{k}/{reason}": c for (k, reason), c in sorted(rollout_events.items())},
        events_per_vm=sum(c for (k, _), c in rollout_events.items() if k == "VirtualMachine") / n,
        host_writes_rollout=len(host_watch.events) - host_events0,
        operator_rollout_cpu_seconds=rollout_cpu,
        reconciles_per_vm_rollout=reconciles / n,
    )
    results["api_writes_per_vm"] = results["writes_per_vm_mean"] + results["events_per_vm"] if writes else math.nan
    results["vm_writes_histogram"] = dict(sorted(Counter(writes).items()))

    # Steady state.
    if operator_alive:
        time.sleep(args.settle_seconds)
        events0 = count_events(core, NAMESPACE) + count_events(core, "default")
        t0, cpu_t0 = time.monotonic(), proc_cpu_seconds(pid)
        log(f"steady state: watching writes for {args.steady_seconds:.0f}s")
        time.sleep(args.steady_seconds)
        t1, cpu_t1 = time.monotonic(), proc_cpu_seconds(pid)
        events1 = count_events(core, NAMESPACE) + count_events(core, "default")
        vm_ev = vm_watch.events_between(t0, t1)
        host_ev = host_watch.events_between(t0, t1)
        steady_events = sum((events1 - events0).values())
        window = t1 - t0
        results.update(
            steady_seconds=window,
            steady_vm_writes=len(vm_ev),
            steady_host_writes=len(host_ev),
            steady_events=steady_events,
            steady_writes_per_min=(len(vm_ev) + len(host_ev) + steady_events) * 60 / window,
            steady_write_parts=dict(Counter(f"{p}" for _, _, _, p in vm_ev + host_ev)),
            operator_idle_cpu_percent=(cpu_t1 - cpu_t0) / window * 100,
            operator_rss_mib=proc_status_kib(pid, "VmRSS") / 1024,
            operator_peak_rss_mib=proc_status_kib(pid, "VmHWM") / 1024,
            operator_threads=proc_status_kib(pid, "Threads"),
        )
    else:
        results.update(
            steady_seconds=math.nan,
            steady_vm_writes=None,
            steady_host_writes=None,
            steady_events=None,
            steady_writes_per_min=math.nan,
            operator_idle_cpu_percent=math.nan,
            operator_rss_mib=math.nan,
            operator_peak_rss_mib=math.nan,
        )
    if operator_alive and not args.no_resync:
        # A full resync: a new operator process lists everything and reconciles every VM once.
        r.stop_operator()
        writes0 = len(vm_watch.events)
        t0 = time.monotonic()
        r.start_operator()
        assert r.operator is not None
        reconciled, depth = 0.0, math.nan
        while time.monotonic() - t0 < args.ready_timeout and r.operator.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                reconciled, depth, _ = vm_queue_figures(r.liveness_port)
                if reconciled >= n and depth == 0:
                    break
            time.sleep(0.5)
        resync = time.monotonic() - t0
        log(f"full resync: {n} VMs reconciled in {resync:.2f}s from the operator's start ({reconciled:.0f} reconciles)")
        results.update(
            resync_seconds=resync if reconciled >= n else math.nan,
            resync_vm_writes=len(vm_watch.events) - writes0,
            resync_write_parts=dict(Counter(e[3] for e in vm_watch.events[writes0:])),
            resync_rss_mib=proc_status_kib(r.operator.pid, "VmRSS") / 1024,
        )
    vm_watch.stop()
    host_watch.stop()
    results["watch_errors"] = vm_watch.errors + host_watch.errors
    results["ratio"] = results["all_ready_seconds"] / base.seconds if base.seconds > 0 else math.nan
    results["operator_cpu_ms_per_vm"] = rollout_cpu * 1000 / n
    rss_vms = results.get("operator_rss_mib", math.nan) - results["operator_rss_before_vms_mib"]
    results["rss_per_1000_vms_mib"] = rss_vms * 1000 / n

    if not args.no_api_floor:
        # The operator stopped, nothing else writes: the same creates and the operator's own writes per VM.
        r.stop_operator()
        events = events_by_object(core, NAMESPACE)
        plans = [VmWrites(s.statuses if s is not None else (), events.get(name, ())) for name, s in seen.items()]
        log(f"API floor: {n} creates and the operator's {sum(len(p.statuses) + len(p.events) + 1 for p in plans)}"
            f" writes, {VM_WORKERS} writers")  # fmt: skip
        # The benchmark's own watch ran through the operator's rollout (the API server sent it every
        # event, this process parsed them): it runs through the floor's too.
        floor_args = (GROUP, VERSION, FLOOR_NAMESPACE, "virtualmachines")
        floor_rv = custom.list_namespaced_custom_object(*floor_args)["metadata"]["resourceVersion"]
        floor_watch = Watcher("floor-vms", custom.list_namespaced_custom_object, floor_args, floor_rv)
        floor_watch.start()
        try:
            floor = run_api_floor(
                kube_client(r.cp.kubeconfig, pool=max(8, args.create_workers + 4)),
                FLOOR_NAMESPACE,
                [vm_manifest(name, FLOOR_NAMESPACE) for name in names],
                plans,
                create_workers=args.create_workers,
                workers=VM_WORKERS,
            )
        finally:
            floor_watch.stop()
        log(f"API floor: {floor.seconds:.2f}s (creates {floor.create_seconds:.2f}s); {len(floor.errors)} errors"
            f" {floor.errors[:3]}")  # fmt: skip
        results.update(
            api_floor_seconds=floor.seconds,
            api_floor_create_seconds=floor.create_seconds,
            api_floor_writes_per_vm=floor.writes / n,
            api_floor_client_cpu_ms_per_vm=floor.client_cpu_seconds * 1000 / n,
            api_floor_errors=len(floor.errors),
            api_floor_watch_events=len(floor_watch.events),
        )
        best = max(floor.seconds, base.seconds)
        results["headline_ratio"] = results["all_ready_seconds"] / best if best > 0 else math.nan
    if r.operator_log is not None:
        levels, top = summarize_log(r.operator_log)
        results["operator_log_levels"] = dict(levels)
        results["operator_log_top"] = top
        results["operator_log"] = str(r.operator_log)
        with contextlib.suppress(OSError), r.operator_log.open("rb") as f:
            results["operator_log_lines"] = sum(1 for _ in f)
    not_ready = [name for name, s in seen.items() if s is None or s.ready_at is None]
    if not_ready:
        results["not_ready_sample"] = {
            name: (condition(s.last, "Ready") if s is not None and s.last is not None else None)
            for name in not_ready[:5]
            for s in [seen[name]]
        }
    return results


def _mib(quantity: str) -> float:
    return to_bytes(quantity) / 2**20


def no_nan(value: Any) -> Any:
    """JSON has no NaN: n/a figures become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [no_nan(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
