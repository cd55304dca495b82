"""Failover benchmark: two `vdc run --leader-elect` replicas with M VMs; the leader dies, the standby takes over.

Prints figures; asserts nothing about time. See bench/README.md for what each figure means.

    .venv/bin/python bench/failover.py [--hosts 50] [--vms 5000] [--json out.json]

Steps: the rig of vm_scale.py (control plane + CRDs, H libvirt test-driver hosts, one Host object each);
two replicas of the operator with leader election on one Lease, the chart's way (POD_NAME/POD_NAMESPACE,
--leader-elect --lease-name --lease-namespace, the chart's election timings); M VMs created at once and
a watch until all are Ready; a steady window (RSS and CPU of the leader and of the standby); then

1. SIGKILL of the leader (a crash: the Lease must expire), a new VM created right after;
2. a new standby (the killed pod restarted), then SIGTERM of the leader (a clean stop: it releases the
   Lease), a new VM created right after;

and for each the times from the signal until the standby holds the Lease, has primed its caches, has the
new VM Ready and has reconciled every VM once. Everything started is stopped again (also on Ctrl-C and
errors) unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))  # vdc
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # rig
sys.path.insert(0, str(Path(__file__).resolve().parent))  # vm_scale

import kubernetes
import libvirt

from vdc.libvirt.host_facts import read_host_facts
from vm_scale import (
    GROUP,
    MAX_CPU_OVERCOMMIT,
    MAX_MEMORY_OVERCOMMIT,
    NAMESPACE,
    REPO,
    VERSION,
    VM_MEMORY_BYTES,
    Rig,
    Watcher,
    bulk_create,
    create_hosts,
    fmt,
    free_port,
    git_version,
    kube_client,
    log,
    machine_description,
    no_nan,
    proc_cpu_seconds,
    proc_status_kib,
    summarize_log,
    vm_manifest,
    vm_names,
    vm_queue_figures,
    wait_hosts_ready,
)

LEASE_NAMESPACE = "vdc-system"
LEASE_NAME = "vdc-operator"
# The chart sets no election flags (values.yaml: extraArgs []), so `vdc run`'s defaults hold
# (vdc.leader.ElectionConfig, controller-runtime's): lease duration 15 s, renew deadline 10 s, retry 2 s.
CHART_LEASE_DURATION, CHART_RENEW_DEADLINE, CHART_RETRY_PERIOD = 15, 10.0, 2.0
MARKERS = {
    "standby": "standing by for Lease",
    "leading": "leading: holding Lease",
    "primed": "caches primed",
    "released": "released Lease",
    "lost": "leadership lost",
}


# --- the replicas ---------------------------------------------------------------------------------


@dataclass
class Replica:
    """One `vdc run --leader-elect` process, in its own session (as vm_scale's Rig starts the operator)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int
    marks: dict[str, float] = field(default_factory=dict)  # marker -> monotonic time first seen in the log
    exited_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> None:
        if not self.alive():
            return
        log(f"stopping {self.name} (pid {self.pid})")
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def rss_mib(self) -> float:
        return proc_status_kib(self.pid, "VmRSS") / 1024 if self.alive() else math.nan

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid) if self.alive() else math.nan


def start_replica(cp_env: dict[str, str], state: Path, name: str, timings: tuple[int, float, float]) -> Replica:
    """`vdc run` as the chart runs it (leader election on, POD_NAME/POD_NAMESPACE), metrics on a free port."""
    port = free_port()
    duration, deadline, retry = timings
    env = {**cp_env, "PYTHONUNBUFFERED": "1", "POD_NAME": name, "POD_NAMESPACE": LEASE_NAMESPACE}
    cmd = [
        str(REPO / ".venv/bin/vdc"), "run",
        "--metrics-address", "127.0.0.1", "--metrics-port", str(port),
        "--leader-elect", f"--lease-name={LEASE_NAME}", f"--lease-namespace={LEASE_NAMESPACE}",
        f"--lease-duration={duration}", f"--renew-deadline={deadline:g}", f"--retry-period={retry:g}",
    ]  # fmt: skip
    path = state / f"{name}.log"
    log(f"replica {name} up (log {path}, metrics port {port})")
    with path.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, not it: we stop it in order
        )
    (state / f"{name}.pid").write_text(f"{proc.pid}\n")
    return Replica(name, proc, path, port)


class LogTail(threading.Thread):
    """Notes when each of MARKERS first appears in each replica's log (polled every 0.1 s), and when a
    replica exits."""

    def __init__(self) -> None:
        super().__init__(name="logtail", daemon=True)
        self.replicas: list[Replica] = []
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}
        self._stop = threading.Event()
        self.lock = threading.Lock()

    def add(self, replica: Replica) -> None:
        with self.lock:
            self.replicas.append(replica)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def poll(self) -> None:
        with self.lock:
            replicas = list(self.replicas)
        for r in replicas:
            now = time.monotonic()
            if r.exited_at is None and r.proc.poll() is not None:
                r.exited_at = now
            with contextlib.suppress(OSError), r.log.open("rb") as f:
                f.seek(self._offsets.get(r.name, 0))
                data = self._partial.get(r.name, b"") + f.read()
                self._offsets[r.name] = f.tell()
            lines = data.split(b"\n")
            self._partial[r.name] = lines.pop()
            for line in lines:
                text = line.decode(errors="replace")
                for key, marker in MARKERS.items():
                    if key not in r.marks and marker in text:
                        r.marks[key] = now


@dataclass
class LeaseSeen:
    t: float
    holder: str
    transitions: int
    resource_version: str


class LeaseWatch(threading.Thread):
    """Every version of the Lease, from a watch (time seen, holder, leaseTransitions)."""

    def __init__(self, coordination: Any) -> None:
        super().__init__(name="lease-watch", daemon=True)
        self._api = coordination
        self._stop = threading.Event()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.seen: list[LeaseSeen] = []
        self.errors: list[str] = []

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        selector = f"metadata.name={LEASE_NAME}"
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    listing = self._api.list_namespaced_lease(LEASE_NAMESPACE, field_selector=selector)
                    rv = listing.metadata.resource_version
                    for lease in listing.items:
                        self._record(lease)
                w = kubernetes.watch.Watch()
                for ev in w.stream(
                    self._api.list_namespaced_lease,
                    LEASE_NAMESPACE,
                    field_selector=selector,
                    resource_version=rv,
                    timeout_seconds=30,
                ):
                    if ev["type"] == "ERROR":
                        rv = ""  # expired: list again
                        break
                    rv = ev["object"].metadata.resource_version
                    self._record(ev["object"])
                    if self._stop.is_set():
                        w.stop()
                        break
            except Exception as exc:
                if not self._stop.is_set():
                    self.errors.append(f"lease watch: {exc!r}")
                    rv = ""
                    time.sleep(0.5)

    def _record(self, lease: Any) -> None:
        spec = lease.spec
        seen = LeaseSeen(
            time.monotonic(),
            (spec.holder_identity or "") if spec else "",
            (spec.lease_transitions or 0) if spec else 0,
            str(lease.metadata.resource_version),
        )
        with self.lock:
            if not self.seen or self.seen[-1].resource_version != seen.resource_version:
                self.seen.append(seen)
                self.changed.notify_all()

    def holder(self) -> str:
        with self.lock:
            return self.seen[-1].holder if self.seen else ""

    def first(self, after: float, holder: str) -> LeaseSeen | None:
        """The first version seen after ``after`` with this holder ('' = released)."""
        with self.lock:
            return next((s for s in self.seen if s.t >= after and s.holder == holder), None)

    def last_before(self, before: float) -> LeaseSeen | None:
        with self.lock:
            return next((s for s in reversed(self.seen) if s.t < before), None)


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=50, help="libvirt test-driver hosts (default %(default)s)")
    p.add_argument("--vms", type=int, default=5000, help="VirtualMachines (default %(default)s)")
    p.add_argument("--steady-seconds", type=float, default=30, help="window for leader/standby CPU (default 30)")
    p.add_argument("--settle-seconds", type=float, default=5, help="pause after all Ready before the window")
    p.add_argument("--ready-timeout", type=float, default=1800, help="give up waiting for the M VMs after this")
    p.add_argument("--takeover-timeout", type=float, default=900, help="give up on a takeover step after this")
    p.add_argument("--create-workers", type=int, default=16, help="parallel create calls (default %(default)s)")
    p.add_argument(
        "--scrape-interval",
        type=float,
        default=2.0,
        help="least seconds between scrapes of the new leader's /metrics while it resyncs (at least 10x the "
        "last scrape's time, so the scrapes cost the operator under 10%%; default %(default)s)",
    )
    p.add_argument("--lease-duration", type=int, default=CHART_LEASE_DURATION, help="default: the chart's, 15")
    p.add_argument("--renew-deadline", type=float, default=CHART_RENEW_DEADLINE, help="default: the chart's, 10")
    p.add_argument("--retry-period", type=float, default=CHART_RETRY_PERIOD, help="default: the chart's, 2")
    p.add_argument(
        "--state", type=Path, default=None, help="state dir (default: a temp dir, removed after a successful run)"
    )
    p.add_argument("--keep", action="store_true", help="leave the control plane, hosts and replicas running")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    if not 1 <= args.hosts <= 240:
        p.error("--hosts must be 1..240")
    if args.vms < 1:
        p.error("--vms must be at least 1")
    return args


@dataclass
class Run:
    rig: Rig
    replicas: list[Replica] = field(default_factory=list)

    def teardown(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self.rig.teardown()

    def teardown_commands(self) -> list[str]:
        return [f"kill {r.pid}" for r in self.replicas if r.alive()] + self.rig.teardown_commands()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        log("must run as root (the libvirt hosts use namespaces and bind mounts)")
        return 2
    temp_state = args.state is None
    state = Path(tempfile.mkdtemp(prefix="vdc-failover-")) if temp_state else args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    run = Run(Rig(state=state, keep=args.keep, prefix=f"vdcf-{secrets.token_hex(3)}"))

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ok = False
    try:
        results = bench(run, args)
        ok = True
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if args.keep:
            log(f"--keep: left running; state {state}")
            if run.rig.cp is not None:
                log(f"use it:  export KUBECONFIG={run.rig.cp.kubeconfig} PATH={run.rig.cp.bin_dir}:$PATH")
            log("stop it: " + "; ".join(run.teardown_commands()))
        else:
            run.teardown()
            if temp_state and ok:
                shutil.rmtree(state, ignore_errors=True)
            else:
                log(f"state (logs) kept in {state}")
    print(table(results))
    for name, lines in results.get("replica_log_top", {}).items():
        for line in lines:
            print(f"  {name} log: {line}")
    if args.json:
        args.json.write_text(json.dumps(no_nan(results), indent=2) + "\n")
    complete = all(s.get("probe_ready_seconds") is not None for s in results["scenarios"].values())
    return 0 if complete and results["vms_ready"] == results["vms"] else 1


def wait_for(what: str, fn: Any, timeout: float, cond: threading.Condition | None = None, every: float = 0.1) -> Any:
    """Wait until ``fn()`` is not None (woken by ``cond`` or every ``every`` seconds); None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            log(f"gave up waiting for {what} after {timeout:.0f}s")
            return None
        if cond is not None:
            with cond:
                cond.wait(timeout=every)
        else:
            time.sleep(every)


def bench(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    n, h = args.vms, args.hosts
    r = run.rig
    timings = (args.lease_duration, args.renew_deadline, args.retry_period)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "command": " ".join([sys.executable, *sys.argv]),
        "git": git_version(),
        "loadavg_start": os.getloadavg()[0],
        "hosts": h,
        "vms": n,
        "lease_duration": args.lease_duration,
        "renew_deadline": args.renew_deadline,
        "retry_period": args.retry_period,
        "scenarios": {},
    }
    log(
        f"election timings: lease duration {args.lease_duration}s, renew deadline {args.renew_deadline:g}s, "
        f"retry period {args.retry_period:g}s (the chart's: {CHART_LEASE_DURATION}/{CHART_RENEW_DEADLINE:g}/"
        f"{CHART_RETRY_PERIOD:g})"
    )
    r.start_controlplane()
    r.start_hosts(h)
    assert r.cp is not None
    cp_env = r.cp.env
    api = kube_client(r.cp.kubeconfig, pool=max(8, args.create_workers + 4))
    custom = kubernetes.client.CustomObjectsApi(api)
    core = kubernetes.client.CoreV1Api(api)
    coordination = kubernetes.client.CoordinationV1Api(api)
    for ns in (NAMESPACE, LEASE_NAMESPACE):
        core.create_namespace({"metadata": {"name": ns}})

    with contextlib.closing(libvirt.open(r.hosts[0].test_uri)) as conn:
        facts = read_host_facts(conn)
    share = math.ceil((n + 2) / h) * 2
    cpu_oc = min(MAX_CPU_OVERCOMMIT, max(1, math.ceil(share / facts.cpus)))
    mem_oc = min(MAX_MEMORY_OVERCOMMIT, max(1, math.ceil(share * VM_MEMORY_BYTES / facts.memory_bytes)))
    create_hosts(custom, r.hosts, cpu_oc, mem_oc)

    lease_watch = LeaseWatch(coordination)
    lease_watch.start()
    tail = LogTail()
    tail.start()

    def replica(name: str) -> Replica:
        rep = start_replica(cp_env, r.state, name, timings)
        run.replicas.append(rep)
        tail.add(rep)
        return rep

    # The first replica leads (started alone, so which one leads is known), then the standby.
    a = replica("vdc-operator-a")
    if wait_for("replica a holding the Lease", lambda: True if lease_watch.holder() == a.name else None, 120) is None:
        raise RuntimeError(f"{a.name} did not take the Lease (exit code {a.proc.poll()}); see {a.log}")
    b = replica("vdc-operator-b")
    if wait_for("replica b standing by", lambda: b.marks.get("standby"), 120) is None:
        raise RuntimeError(f"{b.name} did not stand by (exit code {b.proc.poll()}); see {b.log}")
    wait_hosts_ready(custom, [x.name for x in r.hosts], 120, a.proc)
    log(f"{h} Hosts Ready; {a.name} leads, {b.name} stands by")

    vm_list = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualmachines")
    watch = Watcher(
        "vms",
        custom.list_namespaced_custom_object,
        (GROUP, VERSION, NAMESPACE, "virtualmachines"),
        vm_list["metadata"]["resourceVersion"],
    )
    watch.start()
    names = vm_names(n)
    log(f"creating {n} VirtualMachines ({args.create_workers} parallel calls)")
    t_apply = time.monotonic()
    _secs, errors = bulk_create(custom, [vm_manifest(x, NAMESPACE) for x in names], args.create_workers)
    if errors:
        log(f"{len(errors)} create errors: {errors[:3]}")
    wanted = set(names)
    deadline = t_apply + args.ready_timeout
    last_report = 0.0
    while (ready := watch.ready_count(wanted)) < n and time.monotonic() < deadline and a.alive():
        if time.monotonic() - last_report >= 10:
            log(f"{ready}/{n} Ready after {time.monotonic() - t_apply:.0f}s")
            last_report = time.monotonic()
        with watch.lock:
            watch.changed.wait(timeout=1)
    results.update(vms_ready=ready, rollout_seconds=time.monotonic() - t_apply)
    log(f"{ready}/{n} Ready after {results['rollout_seconds']:.1f}s")
    if ready < n or not a.alive() or not b.alive():
        raise RuntimeError(f"only {ready}/{n} VMs Ready (replica exit codes {a.proc.poll()}, {b.proc.poll()})")

    # Steady state: the leader and the standby side by side.
    time.sleep(args.settle_seconds)
    log(f"steady window: {args.steady_seconds:.0f}s")
    ca0, cb0, t0 = a.cpu(), b.cpu(), time.monotonic()
    time.sleep(args.steady_seconds)
    ca1, cb1, t1 = a.cpu(), b.cpu(), time.monotonic()
    results.update(
        steady_seconds=t1 - t0,
        leader_rss_mib=a.rss_mib(),
        leader_peak_rss_mib=proc_status_kib(a.pid, "VmHWM") / 1024,
        leader_cpu_percent=(ca1 - ca0) / (t1 - t0) * 100,
        standby_rss_mib=b.rss_mib(),
        standby_cpu_percent=(cb1 - cb0) / (t1 - t0) * 100,
        leader_threads=proc_status_kib(a.pid, "Threads"),
        standby_threads=proc_status_kib(b.pid, "Threads"),
    )

    scenario = takeover_measure(args, custom, watch, lease_watch, n)
    results["scenarios"]["SIGKILL"] = scenario(a, b, signal.SIGKILL, "probe-after-kill")
    c = replica("vdc-operator-c")  # the killed pod, restarted
    if wait_for("replica c standing by", lambda: c.marks.get("standby"), 120) is None:
        raise RuntimeError(f"{c.name} did not stand by (exit code {c.proc.poll()}); see {c.log}")
    time.sleep(max(args.settle_seconds, 2 * args.retry_period))  # c has looked at the Lease
    results["scenarios"]["SIGTERM"] = scenario(b, c, signal.SIGTERM, "probe-after-term")

    watch.stop()
    lease_watch.stop()
    tail.stop()
    results["watch_errors"] = watch.errors + lease_watch.errors
    results["lease_versions"] = len(lease_watch.seen)
    results["replica_log_top"] = {}
    for rep in run.replicas:
        levels, top = summarize_log(rep.log)
        results.setdefault("replica_log_levels", {})[rep.name] = dict(levels)
        results["replica_log_top"][rep.name] = top
    results["loadavg_end"] = os.getloadavg()[0]
    return results


def takeover_measure(args: argparse.Namespace, custom: Any, watch: Watcher, lease_watch: LeaseWatch, n: int) -> Any:
    """The takeover measurement, with what every scenario shares bound."""
    vms = [n]  # VMs in the namespace (each scenario adds its probe)

    def takeover(leader: Replica, standby: Replica, sig: signal.Signals, probe: str) -> dict[str, Any]:
        timeout = args.takeover_timeout
        out: dict[str, Any] = {"leader": leader.name, "standby": standby.name, "signal": sig.name}
        if lease_watch.holder() != leader.name or not standby.alive():
            raise RuntimeError(f"not as expected before {sig.name}: holder {lease_watch.holder()!r}")
        transitions0 = lease_watch.seen[-1].transitions
        rss_standby0 = standby.rss_mib()
        cpu0 = standby.cpu()
        stamps: dict[str, float] = {}
        resync: dict[str, float] = {"scrapes": 0, "scrape_seconds": 0.0, "reconciles": math.nan}
        give_up = threading.Event()

        def wait_exit() -> None:
            leader.proc.wait()
            stamps["exited"] = time.monotonic()

        def watch_resync() -> None:
            """Every VM reconciled once by the new leader: once its caches are primed, its VM reconciles
            (vdc_reconcile_total) reach the VM count and its VM work queue is empty."""
            while "primed" not in standby.marks:
                if give_up.wait(0.1):
                    return
            interval = args.scrape_interval
            while not give_up.is_set() and standby.alive():
                with contextlib.suppress(OSError, ValueError):
                    reconciles, depth, took_s = vm_queue_figures(standby.port)
                    resync["scrapes"] += 1
                    resync["scrape_seconds"] += took_s
                    resync["reconciles"] = reconciles
                    interval = max(args.scrape_interval, 10 * took_s)
                    if reconciles >= vms[0] and depth == 0:
                        stamps["resynced"] = time.monotonic()
                        return
                give_up.wait(interval)

        log(f"{sig.name} to the leader {leader.name} (pid {leader.pid}); {standby.name} stands by")
        t0 = time.monotonic()
        leader.signal(sig)
        exit_waiter = threading.Thread(target=wait_exit, name="exit-waiter", daemon=True)
        exit_waiter.start()
        resync_thread = threading.Thread(target=watch_resync, name="resync-watch", daemon=True)
        resync_thread.start()
        custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "virtualmachines", vm_manifest(probe, NAMESPACE)
        )
        t_probe = time.monotonic()
        vms[0] += 1
        renewed = lease_watch.last_before(t0)

        def rel(t: float | None) -> float:
            return t - t0 if t is not None else math.nan

        def probe_ready() -> float | None:
            with watch.lock:
                seen = watch.objects.get(probe)
                return seen.ready_at if seen is not None else None

        try:
            took = wait_for(
                "the standby holding the Lease",
                lambda: lease_watch.first(t0, standby.name),
                timeout,
                lease_watch.changed,
            )
            leading = wait_for("'leading' in the new leader's log", lambda: standby.marks.get("leading"), timeout)
            primed = wait_for("'caches primed' in the new leader's log", lambda: standby.marks.get("primed"), timeout)
            ready = wait_for(f"{probe} Ready", probe_ready, timeout, watch.changed)
            exit_waiter.join(timeout=max(0.0, t0 + timeout - time.monotonic()))
            resync_thread.join(timeout=max(0.0, t0 + timeout - time.monotonic()))
        finally:
            give_up.set()
        released = lease_watch.first(t0, "")
        cpu1 = standby.cpu()
        out.update(
            last_renewal_age_seconds=t0 - renewed.t if renewed is not None else math.nan,
            leader_exited_seconds=rel(stamps.get("exited")),
            leader_exit_code=leader.proc.poll(),
            lease_released_seconds=rel(released.t) if released is not None else math.nan,
            lease_taken_seconds=rel(took.t) if took is not None else math.nan,
            lease_transitions=(took.transitions - transitions0) if took is not None else None,
            leading_logged_seconds=rel(leading),
            caches_primed_seconds=rel(primed),
            probe_create_seconds=t_probe - t0,
            probe_ready_seconds=rel(ready),
            resynced_seconds=rel(stamps.get("resynced")),
            resync_vm_reconciles=resync["reconciles"],
            resync_vms=vms[0],
            resync_scrapes=resync["scrapes"],
            resync_scrape_seconds=resync["scrape_seconds"],
            new_leader_cpu_seconds=cpu1 - cpu0,
            new_leader_rss_before_mib=rss_standby0,
            new_leader_rss_after_mib=standby.rss_mib(),
        )
        log(
            f"{sig.name}: Lease taken {out['lease_taken_seconds']:.1f}s, caches primed "
            f"{out['caches_primed_seconds']:.1f}s, {probe} Ready {out['probe_ready_seconds']:.1f}s, every VM "
            f"reconciled {out['resynced_seconds']:.1f}s after the signal"
        )
        return out

    return takeover


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [
        ("hosts / VMs", f"{r['hosts']} / {r['vms']}"),
        (
            "Lease duration / renew deadline / retry",
            f"{r['lease_duration']} s / {r['renew_deadline']:g} s / {r['retry_period']:g} s",
        ),
        ("VMs Ready (one leader)", f"{r.get('vms_ready', 0)}/{r['vms']} in {fmt(r.get('rollout_seconds'), ' s', 1)}"),
    ]
    if "leader_rss_mib" in r:
        rows += [
            ("steady window", fmt(r["steady_seconds"], " s", 0)),
            ("leader RSS (peak)", f"{fmt(r['leader_rss_mib'], '', 1)} ({fmt(r['leader_peak_rss_mib'], '', 1)}) MiB"),
            ("standby RSS", fmt(r["standby_rss_mib"], " MiB", 1)),
            (
                "leader / standby CPU (1 core=100%)",
                f"{fmt(r['leader_cpu_percent'], '', 2)} / {fmt(r['standby_cpu_percent'], '', 2)} %",
            ),
        ]
    scenarios = r.get("scenarios", {})
    if scenarios:
        names = list(scenarios)
        rows.append(("after the signal to the leader:", "   ".join(f"{x:>10}" for x in names)))

        def row(label: str, key: str, unit: str = " s", digits: int = 2) -> None:
            rows.append((label, "   ".join(f"{fmt(scenarios[x].get(key), unit, digits):>10}" for x in names)))

        row("  last renewal before the signal", "last_renewal_age_seconds")
        row("  old leader exited", "leader_exited_seconds")
        row("  Lease released (holder cleared)", "lease_released_seconds")
        row("  standby holds the Lease", "lease_taken_seconds")
        row("  'leading' logged", "leading_logged_seconds")
        row("  caches primed", "caches_primed_seconds")
        row("  new VM Ready", "probe_ready_seconds")
        row("  every VM reconciled once", "resynced_seconds")
        row("    VM reconciles then", "resync_vm_reconciles", "", 0)
        row("  new leader CPU until then", "new_leader_cpu_seconds", " s", 1)
        row("  new leader RSS as standby", "new_leader_rss_before_mib", " MiB", 1)
        row("  new leader RSS after resync", "new_leader_rss_after_mib", " MiB", 1)
        row("  leaseTransitions +", "lease_transitions", "", 0)
        row("  old leader's exit code", "leader_exit_code", "", 0)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


if __name__ == "__main__":
    sys.exit(main())
