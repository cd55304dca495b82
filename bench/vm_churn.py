"""VM churn benchmark: a steady stream of changes on top of M running VirtualMachines.

Prints figures; asserts nothing about time. See bench/README.md for what each figure means.

    .venv/bin/python bench/vm_churn.py [--hosts 50] [--vms 5000] [--rate 20] [--seconds 300] [--json out.json]

Steps: the rig of vm_scale.py (control plane + CRDs, H libvirt test-driver hosts, one Host object each,
the operator as a subprocess), M VMs created at once and a watch until all are Ready; a quiet window
(the background: API writes and operator CPU with nothing changing); then R changes per second for D
seconds, a mix of creates of new VMs, power changes (spec.runStrategy Always -> Halted -> Always) and
deletes; each change is converged when the watch shows it done (see ``Tracker``). Then it waits for the
backlog to drain and prints a table. Everything started is stopped again (also on Ctrl-C and errors)
unless --keep.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))  # vdc
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # rig
sys.path.insert(0, str(Path(__file__).resolve().parent))  # vm_scale

import kubernetes
import libvirt
from kubernetes.client.rest import ApiException

import rig
from vdc.libvirt.host_facts import read_host_facts
from vm_scale import (
    GROUP,
    MAX_CPU_OVERCOMMIT,
    MAX_MEMORY_OVERCOMMIT,
    NAMESPACE,
    VERSION,
    VM_MEMORY_BYTES,
    Rig,
    Watcher,
    bulk_create,
    condition,
    create_hosts,
    fmt,
    git_version,
    is_ready,
    kube_client,
    log,
    machine_description,
    no_nan,
    percentile,
    proc_cpu_seconds,
    proc_status_kib,
    summarize_log,
    vm_manifest,
    vm_names,
    wait_hosts_ready,
)

KINDS = ("create", "stop", "start", "delete")
MIX_KINDS = ("create", "power", "delete")
# The spec.runStrategy a change leaves and the status.phase it converges to (Ready=True in both).
TARGET = {"create": ("Always", "Running"), "start": ("Always", "Running"), "stop": ("Halted", "Stopped")}
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY")
# What the benchmark itself writes per change kind (apiserver_request_total key: verb, group, resource, subresource)
OWN_WRITE = {
    "create": ("POST", GROUP, "virtualmachines", ""),
    "stop": ("PATCH", GROUP, "virtualmachines", ""),
    "start": ("PATCH", GROUP, "virtualmachines", ""),
    "delete": ("DELETE", GROUP, "virtualmachines", ""),
}


# --- what is tracked ------------------------------------------------------------------------------


@dataclass
class Change:
    """One API write of the benchmark and what the watch showed of it (monotonic seconds)."""

    seq: int
    kind: str
    name: str
    issued: float  # just before the API call
    returned: float | None = None  # the call returned
    seen: float | None = None  # the watch showed the write itself
    converged: float | None = None
    error: str | None = None
    before: str = ""  # spec.runStrategy of a VM before a power change or delete
    late: float = 0.0  # the call started this long after its time in the schedule


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj.get("status") or {})


def converged_as(kind: str, type_: str, obj: dict[str, Any]) -> bool:
    """Whether a watch event shows ``kind`` done: a deleted VM is gone; otherwise the operator has observed
    the generation that has the change (``status.observedGeneration == metadata.generation`` while
    ``spec.runStrategy`` is the one written) and reports the phase it leads to with Ready=True."""
    if kind == "delete":
        return type_ == "DELETED"
    if type_ == "DELETED":
        return False
    strategy, phase = TARGET[kind]
    status = _status(obj)
    return (
        (obj.get("spec") or {}).get("runStrategy", "Always") == strategy
        and status.get("observedGeneration") == obj["metadata"].get("generation")
        and status.get("phase") == phase
        and is_ready(obj)
    )


def write_visible(kind: str, type_: str, obj: dict[str, Any]) -> bool:
    """Whether a watch event shows the benchmark's own write (the floor: API call + watch delivery)."""
    if kind == "create":
        return True
    if kind == "delete":
        return type_ == "DELETED" or bool(obj["metadata"].get("deletionTimestamp"))
    return (obj.get("spec") or {}).get("runStrategy", "Always") == TARGET[kind][0]


class Tracker:
    """The VMs the benchmark may change, and the changes under way (at most one per VM)."""

    def __init__(self, seed: int) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.pending: dict[str, Change] = {}
        self.changes: list[Change] = []
        self.area = 0.0  # integral of the backlog over time (backlog-seconds), from the last reset
        self.peak = 0  # the most changes under way at once since the last sample
        self._since = time.monotonic()
        # VMs with no change under way, by spec.runStrategy as the benchmark last wrote it
        self.idle: dict[str, list[str]] = {"Always": [], "Halted": []}

    def add_idle(self, name: str, strategy: str) -> None:
        with self.lock:
            self.idle[strategy].append(name)

    def _pick(self, strategy: str) -> str:
        pool = self.idle[strategy]
        i = self.rng.randrange(len(pool))
        pool[i], pool[-1] = pool[-1], pool[i]
        return pool.pop()

    def take(self, kind: str, now: float, new_name: str) -> Change | None:
        """Register a change before its API call: ``kind`` is create, power or delete. A power change
        starts a stopped VM half of the time (when one is free), else stops a running one; a delete takes
        any free VM. None when no VM is free for it."""
        with self.lock:
            running, stopped = self.idle["Always"], self.idle["Halted"]
            before = ""
            if kind == "create":
                name = new_name
            elif kind == "power":
                if stopped and (not running or self.rng.random() < 0.5):
                    kind, before = "start", "Halted"
                elif running:
                    kind, before = "stop", "Always"
                else:
                    return None
                name = self._pick(before)
            elif running or stopped:
                before = "Always" if self.rng.randrange(len(running) + len(stopped)) < len(running) else "Halted"
                name = self._pick(before)
            else:
                return None
            change = Change(len(self.changes), kind, name, now, before=before)
            self.changes.append(change)
            self._account(now)
            self.pending[name] = change
            self.peak = max(self.peak, len(self.pending))
            return change

    def _account(self, now: float) -> None:
        """Before the backlog changes: add the time it was at its size (under the lock)."""
        if now > self._since:
            self.area += len(self.pending) * (now - self._since)
            self._since = now

    def reset_area(self, now: float) -> None:
        with self.lock:
            self._account(now)
            self.area = 0.0

    def sample(self, now: float) -> tuple[int, int, float]:
        """(backlog now, the most since the last sample, integral of the backlog until now)."""
        with self.lock:
            self._account(now)
            peak, self.peak = self.peak, len(self.pending)
            return len(self.pending), peak, self.area

    def failed(self, change: Change, error: str) -> None:
        with self.lock:
            change.error = error
            if self.pending.get(change.name) is change:
                self._account(time.monotonic())
                del self.pending[change.name]
            if change.before:  # it stays as it was
                self.idle[change.before].append(change.name)

    def observe(self, now: float, type_: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            change = self.pending.get(name)
            if change is None:
                return
            if change.seen is None and write_visible(change.kind, type_, obj):
                change.seen = now
            if not converged_as(change.kind, type_, obj):
                return
            change.converged = now
            self._account(now)
            del self.pending[name]
            if change.kind != "delete":
                self.idle[TARGET[change.kind][0]].append(name)

    def backlog(self) -> int:
        with self.lock:
            return len(self.pending)


class ChurnWatcher(Watcher):
    """vm_scale's Watcher (every event recorded), also feeding each event to the tracker."""

    def __init__(self, tracker: Tracker, *args: Any) -> None:
        super().__init__(*args)
        self.tracker = tracker

    def _record(self, now: float, type_: str, obj: dict[str, Any]) -> None:
        super()._record(now, type_, obj)
        self.tracker.observe(now, type_, obj)


# --- the API server's own count of writes ---------------------------------------------------------

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
WriteKey = tuple[str, str, str, str]  # verb, group, resource, subresource


def apiserver_writes(cp: rig.ControlPlane) -> tuple[Counter[WriteKey], Counter[tuple[WriteKey, str]]]:
    """``apiserver_request_total`` of the write verbs by (verb, group, resource, subresource), any code; and
    those answered other than 2xx, by key and code."""
    counts: Counter[WriteKey] = Counter()
    refused: Counter[tuple[WriteKey, str]] = Counter()
    for line in cp.kubectl("get", "--raw", "/metrics", timeout=60).splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group("labels")))
        if labels.get("verb") in WRITE_VERBS and labels.get("dry_run", "") == "":
            key = (labels["verb"], labels.get("group", ""), labels.get("resource", ""), labels.get("subresource", ""))
            value = int(float(m.group("value")))
            counts[key] += value
            code = labels.get("code", "")
            if not code.startswith("2"):
                refused[(key, code)] += value
    return counts, refused


def is_operator_kind(key: WriteKey) -> bool:
    """Writes of the operator's kinds: vdc.dev objects and Events (not the API server's own Leases etc.)."""
    _verb, group, resource, _sub = key
    return group == GROUP or resource == "events"


def key_name(key: WriteKey) -> str:
    verb, group, resource, sub = key
    return f"{verb} {resource}{'/' + sub if sub else ''}{'' if group in ('', GROUP) else '.' + group}"


# --- main -----------------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in MIX_KINDS:
            raise argparse.ArgumentTypeError(f"unknown change {key!r} (one of {', '.join(MIX_KINDS)})")
        try:
            mix[key] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not NAME=WEIGHT") from None
        if mix[key] < 0:
            raise argparse.ArgumentTypeError(f"{part!r}: negative weight")
    if not sum(mix.values()) > 0:
        raise argparse.ArgumentTypeError("the weights add up to 0")
    return mix


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=50, help="libvirt test-driver hosts (default %(default)s)")
    p.add_argument("--vms", type=int, default=5000, help="VMs running before the churn (default %(default)s)")
    p.add_argument("--rate", type=float, default=20, help="changes per second (default %(default)s)")
    p.add_argument("--seconds", type=float, default=300, help="churn duration (default %(default)s)")
    p.add_argument(
        "--mix",
        type=parse_mix,
        default=parse_mix("create=1,power=2,delete=1"),
        help="relative weights of the changes: create (a new VM), power (runStrategy Always<->Halted of a VM), "
        "delete (a VM) (default create=1,power=2,delete=1)",
    )
    p.add_argument("--drain-timeout", type=float, default=300, help="wait this long for the backlog after the churn")
    p.add_argument("--quiet-seconds", type=float, default=10, help="background window before the churn")
    p.add_argument("--settle-seconds", type=float, default=5, help="pause after all Ready before the quiet window")
    p.add_argument("--ready-timeout", type=float, default=1800, help="give up waiting for the M VMs after this")
    p.add_argument("--create-workers", type=int, default=16, help="parallel create calls for the M VMs")
    p.add_argument("--workers", type=int, default=32, help="parallel API calls for the churn (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the change sequence (default %(default)s)")
    p.add_argument(
        "--state", type=Path, default=None, help="state dir (default: a temp dir, removed after a successful run)"
    )
    p.add_argument("--keep", action="store_true", help="leave the control plane, hosts and operator running")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    if not 1 <= args.hosts <= 240:
        p.error("--hosts must be 1..240")
    if args.vms < 1:
        p.error("--vms must be at least 1")
    if not args.rate > 0 or not args.seconds > 0:
        p.error("--rate and --seconds must be more than 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        log("must run as root (the libvirt hosts use namespaces and bind mounts)")
        return 2
    temp_state = args.state is None
    state = Path(tempfile.mkdtemp(prefix="vdc-churn-")) if temp_state else args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    r = Rig(state=state, keep=args.keep, prefix=f"vdcc-{secrets.token_hex(3)}")

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
    for line in results.get("operator_log_top", []):
        print(f"  log: {line}")
    if args.json:
        args.json.write_text(json.dumps(no_nan(results), indent=2) + "\n")
    return 0 if results["not_converged"] == 0 and results["vms_ready"] == results["vms"] else 1


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
        "rate": args.rate,
        "seconds": args.seconds,
        "mix": args.mix,
    }
    r.start_controlplane()
    r.start_hosts(h)
    assert r.cp is not None
    cp = r.cp
    api = kube_client(cp.kubeconfig, pool=max(8, args.create_workers, args.workers) + 4)
    custom = kubernetes.client.CustomObjectsApi(api)
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})

    # Overcommit as vm_scale.py: room for twice each host's share (creates and deletes keep M about level).
    with contextlib.closing(libvirt.open(r.hosts[0].test_uri)) as conn:
        facts = read_host_facts(conn)
    share = math.ceil(n / h) * 2
    cpu_oc = min(MAX_CPU_OVERCOMMIT, max(1, math.ceil(share / facts.cpus)))
    mem_oc = min(MAX_MEMORY_OVERCOMMIT, max(1, math.ceil(share * VM_MEMORY_BYTES / facts.memory_bytes)))
    results.update(cpu_overcommit=cpu_oc, memory_overcommit=mem_oc)
    create_hosts(custom, r.hosts, cpu_oc, mem_oc)

    r.start_operator()
    assert r.operator is not None
    pid = r.operator.pid
    wait_hosts_ready(custom, [x.name for x in r.hosts], 120, r.operator)
    log(f"{h} Hosts Ready")

    tracker = Tracker(args.seed)
    vm_list = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualmachines")
    watch = ChurnWatcher(
        tracker,
        "vms",
        custom.list_namespaced_custom_object,
        (GROUP, VERSION, NAMESPACE, "virtualmachines"),
        vm_list["metadata"]["resourceVersion"],
    )
    watch.start()

    # The M VMs the churn runs on.
    names = vm_names(n)
    log(f"creating {n} VirtualMachines ({args.create_workers} parallel calls)")
    t_apply = time.monotonic()
    create_seconds, create_errors = bulk_create(custom, [vm_manifest(x, NAMESPACE) for x in names], args.create_workers)
    log(f"created in {create_seconds:.2f}s; {len(create_errors)} errors {create_errors[:3]}")
    wanted = set(names)
    deadline = t_apply + args.ready_timeout
    last_report = ready = 0
    while True:
        ready = watch.ready_count(wanted)
        now = time.monotonic()
        if ready == n or now > deadline or r.operator.poll() is not None:
            break
        if now - last_report >= 10:
            log(f"{ready}/{n} Ready after {now - t_apply:.0f}s")
            last_report = int(now)
        with watch.lock:
            watch.changed.wait(timeout=1)
    results.update(vms_ready=ready, rollout_seconds=time.monotonic() - t_apply)
    log(f"{ready}/{n} Ready after {results['rollout_seconds']:.1f}s")
    if ready < n or r.operator.poll() is not None:
        raise RuntimeError(f"only {ready}/{n} VMs Ready (operator exit code {r.operator.poll()}); not churning")
    for name in names:
        tracker.add_idle(name, "Always")

    # Background: nothing changes.
    time.sleep(args.settle_seconds)
    log(f"quiet window: {args.quiet_seconds:.0f}s")
    (w0, _), c0, t0 = apiserver_writes(cp), proc_cpu_seconds(pid), time.monotonic()
    time.sleep(args.quiet_seconds)
    (w1, _), c1, t1 = apiserver_writes(cp), proc_cpu_seconds(pid), time.monotonic()
    quiet = t1 - t0
    quiet_writes = {key_name(k): v for k, v in (w1 - w0).items() if is_operator_kind(k)}
    results.update(
        quiet_seconds=quiet,
        quiet_writes_per_second=sum(quiet_writes.values()) / quiet,
        quiet_writes=quiet_writes,
        idle_cpu_percent=(c1 - c0) / quiet * 100,
        rss_before_mib=proc_status_kib(pid, "VmRSS") / 1024,
    )

    # The churn.
    total = math.floor(args.rate * args.seconds)
    kinds = list(args.mix)
    weights = [args.mix[k] for k in kinds]
    rng = random.Random(args.seed + 1)
    samples: list[dict[str, float]] = []
    stop_sampling = threading.Event()
    own: Counter[WriteKey] = Counter()
    own_lock = threading.Lock()
    substituted = 0

    def sample_loop(start: float) -> None:
        while not stop_sampling.is_set():
            now = time.monotonic()
            backlog, peak, _area = tracker.sample(now)
            with tracker.lock:
                issued = len(tracker.changes)
                done = sum(1 for c in tracker.changes if c.converged is not None)
            with contextlib.suppress(OSError):
                samples.append(
                    {
                        "t": round(now - start, 2),
                        "backlog": backlog,
                        "backlog_max": peak,
                        "issued": issued,
                        "converged": done,
                        "cpu": round(proc_cpu_seconds(pid), 2),
                        "rss_mib": round(proc_status_kib(pid, "VmRSS") / 1024, 1),
                    }
                )
            stop_sampling.wait(1.0)

    def apply(kind: str, seq: int, due: float) -> None:
        """One change, in a worker: the VM is chosen and the change registered as the call starts."""
        nonlocal substituted
        start = time.monotonic()
        change = tracker.take(kind, start, f"churn-{seq:06d}")
        if change is None:  # no VM free for a power change or a delete: a create instead
            with own_lock:
                substituted += 1
            change = tracker.take("create", start, f"churn-{seq:06d}")
            assert change is not None
        change.late = start - due
        try:
            if change.kind == "create":
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "virtualmachines", vm_manifest(change.name, NAMESPACE)
                )
            elif change.kind == "delete":
                custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualmachines", change.name)
            else:
                custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    NAMESPACE,
                    "virtualmachines",
                    change.name,
                    {"spec": {"runStrategy": TARGET[change.kind][0]}},
                    _content_type="application/merge-patch+json",
                )
            change.returned = time.monotonic()
        except ApiException as exc:
            tracker.failed(change, f"{exc.status} {exc.reason}")
        except Exception as exc:  # connection trouble: counted, the churn goes on
            tracker.failed(change, repr(exc))
        finally:
            with own_lock:
                own[OWN_WRITE[change.kind]] += 1

    log(f"churn: {total} changes at {args.rate:g}/s for {args.seconds:g}s, mix {args.mix}")
    (writes0, refused0), cpu0 = apiserver_writes(cp), proc_cpu_seconds(pid)
    t_start = time.monotonic()
    tracker.reset_area(t_start)
    sampler = threading.Thread(target=sample_loop, args=(t_start,), name="sampler", daemon=True)
    sampler.start()
    pool = concurrent.futures.ThreadPoolExecutor(args.workers, thread_name_prefix="churn")
    try:
        for i in range(total):
            due = t_start + i / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(apply, rng.choices(kinds, weights)[0], i + 1, due)
            if r.operator.poll() is not None:
                raise RuntimeError(f"operator exited ({r.operator.returncode}) during the churn")
            if i % max(1, int(args.rate * 10)) == 0 and i:
                log(f"{i}/{total} changes due; backlog {tracker.backlog()}")
        pool.shutdown(wait=True)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    t_end = time.monotonic()  # every write has returned
    backlog_end = tracker.backlog()
    log(f"churn written in {t_end - t_start:.1f}s; backlog {backlog_end}; draining (up to {args.drain_timeout:g}s)")
    drain_deadline = t_end + args.drain_timeout
    while tracker.backlog() and time.monotonic() < drain_deadline and r.operator.poll() is None:
        with watch.lock:
            watch.changed.wait(timeout=1)
    t_drained = time.monotonic()
    _, last_peak, backlog_area = tracker.sample(t_drained)
    stop_sampling.set()
    sampler.join(timeout=5)
    cpu1 = proc_cpu_seconds(pid) if r.operator.poll() is None else math.nan
    writes1, refused1 = apiserver_writes(cp)
    watch.stop()

    # Figures.
    with tracker.lock:
        changes = list(tracker.changes)
        pending = dict(tracker.pending)
    ok = [c for c in changes if c.error is None]
    done = [c for c in ok if c.converged is not None]
    last_converged = max((c.converged for c in done if c.converged is not None), default=t_end)
    drain = max(0.0, last_converged - t_end) if not pending else math.nan
    by_kind = Counter(c.kind for c in changes)
    lat = {k: [c.converged - c.issued for c in done if c.kind == k and c.converged is not None] for k in KINDS}
    every = [x for v in lat.values() for x in v]
    seen = [c.seen - c.issued for c in ok if c.seen is not None]
    call = [c.returned - c.issued for c in ok if c.returned is not None]
    after_seen = [c.converged - c.seen for c in done if c.converged is not None and c.seen is not None]
    delta = writes1 - writes0
    own_refused = sum(1 for c in changes if c.error and c.error[:1] in "345")  # the bench's calls answered 3-5xx
    refused = {
        f"{key_name(k)} {code}": v for (k, code), v in (refused1 - refused0).most_common() if is_operator_kind(k)
    }
    operator_writes: Counter[str] = Counter()
    for key, count in delta.items():
        if is_operator_kind(key):
            mine = own.get(key, 0)
            if count - mine:
                operator_writes[key_name(key)] += count - mine
    window = t_drained - t_start
    applied = len(ok)
    vm_w = sum(v for k, v in operator_writes.items() if " virtualmachines" in k and "/status" not in k)
    vm_status_w = sum(v for k, v in operator_writes.items() if " virtualmachines/status" in k)
    host_w = sum(v for k, v in operator_writes.items() if " hosts" in k)
    event_w = sum(v for k, v in operator_writes.items() if " events" in k)
    all_w = sum(operator_writes.values())
    backlogs = [s["backlog_max"] for s in samples] + [last_peak]
    cpu_used = cpu1 - cpu0
    results.update(
        changes_asked=total,
        changes_issued=len(changes),
        changes_by_kind={k: by_kind.get(k, 0) for k in KINDS},
        substituted_creates=substituted,
        api_errors=len(changes) - applied,
        api_error_sample=[f"{c.kind} {c.name}: {c.error}" for c in changes if c.error][:5],
        issue_seconds=t_end - t_start,
        achieved_rate=(len(changes) - 1) / (max(c.issued for c in changes) - min(c.issued for c in changes))
        if len(changes) > 1
        else math.nan,
        issue_late_p99_seconds=percentile([c.late for c in changes], 99),
        issue_late_max_seconds=max((c.late for c in changes), default=math.nan),
        converged=len(done),
        not_converged=len(pending),
        not_converged_by_kind=dict(Counter(c.kind for c in pending.values())),
        not_converged_sample={
            c.name: _describe(watch, c.name, c.kind) for c in sorted(pending.values(), key=lambda c: c.seq)[:5]
        },
        converge_p50_seconds=percentile(every, 50),
        converge_p90_seconds=percentile(every, 90),
        converge_p99_seconds=percentile(every, 99),
        converge_max_seconds=max(every) if every else math.nan,
        converge_by_kind={
            k: {
                "count": len(v),
                "p50": percentile(v, 50),
                "p90": percentile(v, 90),
                "p99": percentile(v, 99),
                "max": max(v) if v else math.nan,
            }
            for k, v in lat.items()
        },
        after_seen_p50_seconds=percentile(after_seen, 50),
        after_seen_p99_seconds=percentile(after_seen, 99),
        seen_p50_seconds=percentile(seen, 50),
        seen_p99_seconds=percentile(seen, 99),
        call_p50_seconds=percentile(call, 50),
        call_p99_seconds=percentile(call, 99),
        backlog_max=max(backlogs, default=0),
        backlog_end_of_churn=backlog_end,
        backlog_mean=backlog_area / (t_drained - t_start),
        drain_seconds=drain,
        window_seconds=window,
        operator_writes=dict(operator_writes.most_common()),
        operator_writes_refused=refused,
        refused_writes_per_change=(sum(refused.values()) - own_refused) / applied if applied else math.nan,
        vm_writes_until_converged=watched_writes(watch, done),
        own_writes={key_name(k): v for k, v in own.items()},
        operator_writes_per_change=all_w / applied if applied else math.nan,
        vm_writes_per_change=vm_w / applied if applied else math.nan,
        vm_status_writes_per_change=vm_status_w / applied if applied else math.nan,
        host_writes_per_change=host_w / applied if applied else math.nan,
        event_writes_per_change=event_w / applied if applied else math.nan,
        background_writes_in_window=results["quiet_writes_per_second"] * window,
        operator_cpu_seconds=cpu_used,
        operator_cpu_percent=cpu_used / window * 100,
        cpu_ms_per_change=cpu_used / applied * 1000 if applied else math.nan,
        net_cpu_ms_per_change=(cpu_used - results["idle_cpu_percent"] / 100 * window) / applied * 1000
        if applied
        else math.nan,
        rss_after_mib=proc_status_kib(pid, "VmRSS") / 1024 if r.operator.poll() is None else math.nan,
        peak_rss_mib=proc_status_kib(pid, "VmHWM") / 1024 if r.operator.poll() is None else math.nan,
        samples=samples,
        changes=[asdict(c) | _relative(c, t_start) for c in changes],
        watch_errors=watch.errors,
        loadavg_end=os.getloadavg()[0],
    )
    if r.operator_log is not None:
        levels, top = summarize_log(r.operator_log)
        results["operator_log_levels"] = dict(levels)
        results["operator_log_top"] = top
    return results


OWN_PART = {"create": "create", "stop": "spec", "start": "spec", "delete": "metadata.deletionTimestamp"}


def watched_writes(watch: Watcher, changes: list[Change]) -> dict[str, dict[str, Any]]:
    """Per change kind: the writes to the VM the watch saw from the benchmark's write until converged,
    less that write itself (what changed in each, as vm_scale.py names it; 'delete' = the finalizer's
    removal let the object go)."""
    parts: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    counts: dict[str, list[int]] = {k: [] for k in KINDS}
    with watch.lock:
        for c in changes:
            seen = watch.objects.get(c.name)
            if c.converged is None or seen is None:
                continue
            window = [p for t, p in zip(seen.times, seen.parts, strict=True) if c.issued <= t <= c.converged]
            own = next((i for i, p in enumerate(window) if OWN_PART[c.kind] in p.split("+")), None)
            if own is not None:
                del window[own]
            parts[c.kind].update(window)
            counts[c.kind].append(len(window))
    return {
        k: {"mean": sum(v) / len(v) if v else math.nan, "max": max(v, default=0), "by_change": dict(parts[k])}
        for k, v in counts.items()
    }


def _relative(c: Change, start: float) -> dict[str, Any]:
    """A change's times relative to the start of the churn (for the JSON)."""
    return {
        k: (round(v - start, 4) if isinstance(v, float) else v)
        for k, v in (("issued", c.issued), ("returned", c.returned), ("seen", c.seen), ("converged", c.converged))
    }


def _describe(watch: Watcher, name: str, kind: str) -> dict[str, Any]:
    with watch.lock:
        seen = watch.objects.get(name)
        obj = seen.last if seen is not None else None
    if obj is None:
        return {"kind": kind, "seen": False}
    status = _status(obj)
    return {
        "kind": kind,
        "generation": obj["metadata"].get("generation"),
        "deleting": bool(obj["metadata"].get("deletionTimestamp")),
        "runStrategy": (obj.get("spec") or {}).get("runStrategy"),
        "observedGeneration": status.get("observedGeneration"),
        "phase": status.get("phase"),
        "ready": condition(obj, "Ready"),
    }


def table(r: dict[str, Any]) -> str:
    def quad(d: dict[str, Any]) -> str:
        return " / ".join(fmt(d[k], "", 2) for k in ("p50", "p90", "p99", "max")) + " s"

    kinds = r.get("changes_by_kind", {})
    rows = [
        ("hosts", fmt(r["hosts"])),
        ("VMs at the start (Ready)", f"{r.get('vms_ready', 0)}/{r['vms']}"),
        ("  rollout until all Ready", fmt(r.get("rollout_seconds"), " s", 1)),
        ("churn asked", f"{r['rate']:g}/s for {r['seconds']:g} s = {r.get('changes_asked', 'n/a')} changes"),
    ]
    if "changes_issued" in r:
        rows += [
            ("changes issued, achieved rate", f"{r['changes_issued']} at {fmt(r['achieved_rate'], '/s', 2)}"),
            ("  create / stop / start / delete", " / ".join(str(kinds.get(k, 0)) for k in KINDS)),
            ("  API errors (bench's calls)", fmt(r["api_errors"])),
            (
                "  bench's call late p99/max",
                f"{fmt(r['issue_late_p99_seconds'], '', 3)} / {fmt(r['issue_late_max_seconds'], '', 3)} s",
            ),
            (
                "  bench's API call p50/p99",
                f"{fmt(r['call_p50_seconds'], '', 3)} / {fmt(r['call_p99_seconds'], '', 3)} s",
            ),
            ("converged / not converged", f"{r['converged']} / {r['not_converged']}"),
            (
                "time to converged p50/p90/p99/max",
                " / ".join(fmt(r[f"converge_{p}_seconds"], "", 2) for p in ("p50", "p90", "p99", "max")) + " s",
            ),
        ]
        rows += [(f"  {k}", quad(v)) for k, v in r["converge_by_kind"].items() if v["count"]]
        seen = r["vm_writes_until_converged"]
        rows.append(
            (
                "VM writes until converged c/s/s/d",
                " / ".join(fmt(seen[k]["mean"], "", 2) for k in KINDS) + " (watch, mean)",
            )
        )
        rows += [
            (
                "floor: write seen by watch p50/p99",
                f"{fmt(r['seen_p50_seconds'], '', 3)} / {fmt(r['seen_p99_seconds'], '', 3)} s",
            ),
            (
                "  from then to converged p50/p99",
                f"{fmt(r['after_seen_p50_seconds'], '', 3)} / {fmt(r['after_seen_p99_seconds'], '', 3)} s",
            ),
            ("backlog max / mean", f"{r['backlog_max']} / {fmt(r['backlog_mean'], '', 1)}"),
            ("backlog at the end of the churn", fmt(r["backlog_end_of_churn"])),
            ("drain after the churn", fmt(r["drain_seconds"], " s", 2)),
            ("operator API writes per change", fmt(r["operator_writes_per_change"], "", 2)),
            (
                "  VM / VM status / Host / Event",
                " / ".join(
                    fmt(r[k], "", 2)
                    for k in (
                        "vm_writes_per_change",
                        "vm_status_writes_per_change",
                        "host_writes_per_change",
                        "event_writes_per_change",
                    )
                ),
            ),
            ("  of which refused (not 2xx)", fmt(r["refused_writes_per_change"], "", 2)),
            ("background writes/s (quiet window)", fmt(r["quiet_writes_per_second"], "", 2)),
            ("operator CPU per change", fmt(r["cpu_ms_per_change"], " ms", 1)),
            ("  net of idle CPU", fmt(r["net_cpu_ms_per_change"], " ms", 1)),
            ("operator CPU during churn+drain", fmt(r["operator_cpu_percent"], " % of a core", 1)),
            ("operator idle CPU (quiet window)", fmt(r["idle_cpu_percent"], " % of a core", 2)),
            (
                "operator RSS before / after / peak",
                f"{fmt(r['rss_before_mib'], '', 1)} / {fmt(r['rss_after_mib'], '', 1)} / "
                f"{fmt(r['peak_rss_mib'], '', 1)} MiB",
            ),
        ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


if __name__ == "__main__":
    sys.exit(main())
