"""Live migration benchmark: the operator's VirtualMachineMigration and Host maintenance, next to raw libvirt.

Prints figures; asserts nothing about time. See bench/README.md for what each figure means.

    .venv/bin/python bench/migration.py [--round-trips 5] [--vms 6] [--no-policy-run] [--json out.json]

Steps: control plane + CRDs, three libvirt hosts (QEMU/TCG, hack/libvirt-hosts.sh with network namespaces)
and a shared ``dir`` StoragePool in the rig's shared directory, the operator as a subprocess.

1. Per migration: one tiny guest VM (96Mi, a blank disk on the shared pool) migrated back and forth K
   times by VirtualMachineMigrations, interleaved with K raw ``migrateToURI3`` calls (the operator's
   flags and parameters, from ``vdc.libvirt.migration.migration_call``) of a raw domain defined from the
   same domain XML.
2. Evacuation: N VMs on one host, ``spec.maintenance: true``, until ``status.evacuation.phase`` is
   Evacuated and every VM runs elsewhere; next to N raw domains (the same XML) migrated off one host
   in sequence and in parallel (threads), with the parallelism of the MigrationPolicy in force; then
   again with a MigrationPolicy raising the parallelism to N (unless --no-policy-run).

Everything started is stopped again and the temp dir removed, also on errors and Ctrl-C (unless --keep).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "bench"))

import kubernetes  # noqa: E402
import libvirt  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

import rig  # noqa: E402
import vm_scale  # noqa: E402
from vdc.libvirt.migration import MigrationRequest, migration_call  # noqa: E402
from vdc.operations.migration_policy import DEFAULT_PARALLEL_PER_CLUSTER, DEFAULT_PARALLEL_PER_HOST  # noqa: E402

log = vm_scale.log
GROUP, VERSION = "vdc.dev", "v1alpha1"
NAMESPACE = "vdc-bench-mig"
DRIVER = "bench-migration"
POOL = "bench-shared"
TINY_DIR = "/var/lib/libvirt/boot/vdc-tiny"
CMDLINE = "console=ttyS0 vdc.counter=1"
TERMINAL = ("Succeeded", "Failed", "Cancelled")
POLL = 0.1
EVACUATION_LABEL = "vdc.dev/evacuating-host"
COMPLETED = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
T = TypeVar("T")
PLURALS = {
    "Host": "hosts",
    "StoragePool": "storagepools",
    "VirtualMachine": "virtualmachines",
    "VirtualMachineMigration": "virtualmachinemigrations",
    "MigrationPolicy": "migrationpolicies",
}
FLAG_NAMES = ("LIVE", "PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE", "ABORT_ON_ERROR", "UNSAFE", "NON_SHARED_DISK",
              "NON_SHARED_INC", "AUTO_CONVERGE", "POSTCOPY")  # fmt: skip


class BenchFailed(Exception):
    """Something the benchmark needs did not happen (not a figure: the run is not valid)."""


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, interval: float = POLL) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- the rig --------------------------------------------------------------------------------------


class MigRig(vm_scale.Rig):
    """vm_scale's rig, with QEMU hosts in network namespaces (addresses for the migration stream)."""

    shared_dir: Path | None = None

    def start_hosts(self, count: int) -> None:
        log(f"{count} libvirt hosts up (prefix {self.prefix})")
        self.hosts_up = True
        hosts = rig.start_libvirt_hosts(self.state, count, self.prefix)
        self.hosts = hosts.hosts
        self.shared_dir = hosts.shared_dir

    def console(self, host: str, domain: str) -> str:
        path = self.state / "hosts" / host / "log" / "qemu" / f"{domain}.console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def counting(self, host: str, domain: str, at_least: int = 2) -> bool:
        found = re.findall(r"VDC-COUNT=(\d+)", self.console(host, domain))
        return bool(found) and int(found[-1]) >= at_least


class Kube:
    def __init__(self, kubeconfig: Path) -> None:
        self.api = vm_scale.kube_client(kubeconfig, pool=16)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            if namespace is None:
                return dict(self.custom.get_cluster_custom_object(GROUP, VERSION, plural, name))
            return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, doc: dict[str, Any]) -> None:
        plural = PLURALS[doc["kind"]]
        ns = doc["metadata"].get("namespace")
        if ns is None:
            self.custom.create_cluster_custom_object(GROUP, VERSION, plural, doc)
        else:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, doc)

    def vms(self) -> dict[str, dict[str, Any]]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualmachines")["items"]
        return {str(v["metadata"]["name"]): v for v in items}

    def maintenance(self, host: str, on: bool) -> None:
        self.custom.patch_cluster_custom_object(GROUP, VERSION, "hosts", host, {"spec": {"maintenance": on}})

    def migration(self, name: str, vm: str, target: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"vm": vm}
        if target:
            spec["targetHost"] = target
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualMachineMigration",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec,
        }

    def delete_migrations(self, label_selector: str | None = None) -> None:
        items = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "virtualmachinemigrations", label_selector=label_selector or ""
        )["items"]
        for m in items:
            with contextlib.suppress(ApiException):
                self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "virtualmachinemigrations", m["metadata"]["name"]
                )
        names = {m["metadata"]["name"] for m in items}
        wait_for(
            "migrations deleted",
            lambda: (
                not names
                & {
                    m["metadata"]["name"]
                    for m in self.custom.list_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, "virtualmachinemigrations"
                    )["items"]
                }
            ),
            timeout=60,
            interval=0.3,
        )


def host_object(h: rig.LibvirtHost) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "uri": h.qemu_uri,
        "virtualization": "Emulated",
        "cpuOvercommit": 8,
        "hostFiles": {"allowedPaths": [TINY_DIR]},
    }
    if h.address:
        spec["underlayAddress"] = h.address
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Host",
        "metadata": {"name": h.name, "labels": {"vdc.dev/driver": DRIVER}},
        "spec": spec,
    }


def vm_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "runStrategy": "Always",
            "cpu": {"count": 1},
            "memory": {"size": "96Mi"},
            "boot": {
                "kernel": {"kernel": f"{TINY_DIR}/vmlinuz", "initrd": f"{TINY_DIR}/initrd.img", "cmdline": CMDLINE}
            },
            "hostSelector": {"matchLabels": {"vdc.dev/driver": DRIVER}},
            "disks": [{"name": "data", "source": {"blank": {"pool": POOL, "size": "16Mi"}}}],
            "terminationGracePeriodSeconds": 3,
        },
    }


def is_ready(vm: dict[str, Any] | None) -> bool:
    return bool(vm) and vm_scale.is_ready(vm or {})


# --- raw libvirt ----------------------------------------------------------------------------------


@dataclass
class RawLibvirt:
    """One client connection per host (the bench's own, opened before any clock starts)."""

    r: MigRig
    conns: dict[str, libvirt.virConnect] = field(default_factory=dict)

    def open(self) -> None:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised; do not print them too
        for h in self.r.hosts:
            self.conns[h.name] = libvirt.open(h.qemu_uri)

    def close(self) -> None:
        for conn in self.conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self.conns.clear()

    def host(self, name: str) -> rig.LibvirtHost:
        return next(h for h in self.r.hosts if h.name == name)

    def call(self, target: str) -> tuple[dict[str, Any], int]:
        """The operator's params and flags for a migration to ``target`` of a VM with a disk on a shared pool."""
        h = self.host(target)
        return migration_call(
            MigrationRequest(
                target_uri=h.qemu_uri, data_uri=f"tcp://{h.address}" if h.address else None, shared_disks=True
            )
        )

    def define_copy(self, host: str, template_domain: str, name: str) -> None:
        """Define and start ``name`` on ``host`` from the operator's domain ``template_domain`` (see copy_xml)."""
        dom = self.conns[host].defineXML(self.copy_xml(host, template_domain, name))
        dom.create()

    def copy_xml(self, host: str, template_domain: str, name: str) -> str:
        """The XML of a copy ``name`` of the operator's domain ``template_domain`` on ``host``: same XML, its
        own name, UUID, disk (a new blank image of the same size and format in the same directory, created
        here) and log, without the operator's metadata."""
        conn = self.conns[host]
        xml = conn.lookupByName(template_domain).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        root = ET.fromstring(xml)
        root.find("name").text = name  # type: ignore[union-attr]
        for tag in ("uuid", "metadata"):
            el = root.find(tag)
            if el is not None:
                root.remove(el)
        for disk in root.iter("disk"):
            source = disk.find("source")
            if disk.get("device", "disk") != "disk" or source is None or not source.get("file"):
                continue
            old = Path(str(source.get("file")))
            new = old.with_name(f"{name}-{disk.find('target').get('dev')}{old.suffix}")  # type: ignore[union-attr]
            fmt = (disk.find("driver").get("type") if disk.find("driver") is not None else None) or "raw"  # type: ignore[union-attr]
            info = json.loads(
                subprocess.run(
                    ["qemu-img", "info", "-U", "--output=json", str(old)], capture_output=True, check=True, text=True
                ).stdout
            )
            subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(new), str(info["virtual-size"])], check=True)
            source.set("file", str(new))
        for el in root.iter():
            if el.tag == "disk":
                continue
            for attr in ("file", "path"):
                value = el.get(attr)
                if value and template_domain in value:
                    el.set(attr, value.replace(template_domain, name))
        return ET.tostring(root, encoding="unicode")

    def where(self, name: str) -> str:
        for host, conn in self.conns.items():
            with contextlib.suppress(libvirt.libvirtError):
                if conn.lookupByName(name).isActive():
                    return host
        raise BenchFailed(f"raw domain {name} runs nowhere")

    def migrate(self, name: str, source: str, target: str, conn: libvirt.virConnect | None = None) -> dict[str, float]:
        """One raw migration: wall time of migrateToURI3, and libvirt's completed-job time and downtime on the
        target (jobStats COMPLETED|KEEP_COMPLETED)."""
        dom = (conn or self.conns[source]).lookupByName(name)
        params, flags = self.call(target)
        uri = self.host(target).qemu_uri
        t0 = time.monotonic()
        dom.migrateToURI3(uri, params, flags)
        wall = time.monotonic() - t0
        stats = self.conns[target].lookupByName(name).jobStats(COMPLETED)
        return {
            "wall": wall,
            "libvirt": float(stats.get("time_elapsed", math.nan)) / 1000,
            "downtime_ms": float(stats.get("downtime", math.nan)),
        }

    def migrate_all(self, moves: list[tuple[str, str, str]], parallel: int) -> tuple[float, list[dict[str, float]]]:
        """(wall time of all, per-migration figures) for (domain, source, target) moves, ``parallel`` at once,
        each on its own connection to its source (opened before the clock starts)."""
        conns = [libvirt.open(self.host(src).qemu_uri) for _, src, _ in moves]
        try:
            t0 = time.monotonic()
            if parallel <= 1:
                out = [self.migrate(n, s, t, c) for (n, s, t), c in zip(moves, conns, strict=True)]
            else:
                with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
                    futures = [pool.submit(self.migrate, n, s, t, c) for (n, s, t), c in zip(moves, conns, strict=True)]
                    out = [f.result() for f in futures]
            return time.monotonic() - t0, out
        finally:
            for c in conns:
                with contextlib.suppress(libvirt.libvirtError):
                    c.close()


# --- figures --------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fmt_s(s: dict[str, float], unit: str = " s", digits: int = 2) -> str:
    if not s["n"]:
        return "n/a"
    return f"{s['median']:.{digits}f}{unit}  ({s['min']:.{digits}f} .. {s['max']:.{digits}f}, n={s['n']})"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "n/a"


def table(res: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [
        ("hosts", f"{res['hosts']} QEMU/TCG rig hosts, disks on a shared dir pool"),
        ("guest", "tiny guest, 1 vCPU, 96Mi, 16Mi blank qcow2 disk (not copied: UNSAFE)"),
        ("flags", res["flags"]),
        ("", ""),
        (f"1. one VM back and forth, K={res['round_trips']}", "median  (min .. max, n)"),
    ]
    p = res["per_migration"]
    rows += [
        ("operator: create -> Succeeded", fmt_s(p["op_wall"])),
        ("  create -> Migrating seen", fmt_s(p["op_to_migrating"])),
        ("  Migrating step (status.message)", fmt_s(p["op_step"])),
        ("  libvirt elapsed (status.progress)", fmt_s(p["op_progress_elapsed"])),
        ("  libvirt time (target jobStats)", fmt_s(p["op_libvirt"])),
        ("  downtime (status.progress)", fmt_s(p["op_downtime"], " ms", 0)),
        ("raw: migrateToURI3 call", fmt_s(p["raw_wall"])),
        ("  libvirt time (target jobStats)", fmt_s(p["raw_libvirt"])),
        ("  downtime (target jobStats)", fmt_s(p["raw_downtime"], " ms", 0)),
        ("ratio operator / raw (medians)", ratio(p["op_wall"]["median"], p["raw_wall"]["median"])),
        ("", ""),
        (f"2. evacuation of N={res['vms']} VMs from one host", ""),
    ]
    for run in res["evacuations"]:
        rows += [
            (f"operator, {run['policy']}", f"{run['evacuated_and_running']:.2f} s"),
            ("  phase Evacuated seen", f"{run['evacuated']:.2f} s"),
            ("  all VMs Running elsewhere seen", f"{run['all_running_elsewhere']:.2f} s"),
            ("  first migration seen", f"{run['first_migration_seen']:.2f} s"),
            ("  Migrating began at (s)", " ".join(f"{b:.1f}" for b in run["migrating_began"])),
            ("  per VM: wait before Migrating", fmt_s(run["waited_before_migrating"])),
            ("  per VM: Migrating -> Succeeded", fmt_s(run["in_migrating"])),
            ("  most in PreparingTarget/Migrating", str(run["max_in_flight"])),
            ("  targets", ", ".join(f"{k} {v}" for k, v in sorted(run["targets"].items()))),
        ]
    for raw in res["raw_evacuations"]:
        rows += [
            (f"raw, {raw['label']}", f"{raw['wall']:.2f} s"),
            ("  per migration call", fmt_s(raw["per_migration"])),
        ]
    for op_label, raw_label in res["ratio_pairs"]:
        op = next(r for r in res["evacuations"] if r["policy"] == op_label)
        raw = next(r for r in res["raw_evacuations"] if r["label"] == raw_label)
        rows.append((f"ratio operator / raw {raw_label}", ratio(op["evacuated_and_running"], raw["wall"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in rows)


# --- the benchmark --------------------------------------------------------------------------------


def watch_migration(k: Kube, name: str, timeout: float = 300) -> tuple[dict[str, Any], dict[str, float]]:
    """Poll a migration until it ends: (its last body, monotonic time each phase was first seen)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        body = k.get("virtualmachinemigrations", name, NAMESPACE)
        now = time.monotonic()
        phase = ((body or {}).get("status") or {}).get("phase")
        if phase and phase not in seen:
            seen[phase] = now
        if phase in TERMINAL:
            assert body is not None
            return body, seen
        if now > deadline:
            raise BenchFailed(f"migration {name} not done after {timeout:.0f}s: {json.dumps(body)[-1500:]}")
        time.sleep(POLL)


def step_seconds(message: str) -> float:
    found = re.search(r" in ([0-9.]+)s", message or "")
    return float(found.group(1)) if found else math.nan


def per_migration(r: MigRig, k: Kube, raw: RawLibvirt, args: argparse.Namespace) -> dict[str, Any]:
    log("part 1: one VM, back and forth")
    k.create(vm_manifest("mig-1"))
    vm = wait_for("VM mig-1 Ready", lambda: (b := k.get("virtualmachines", "mig-1", NAMESPACE)) and is_ready(b) and b,
                  timeout=240, interval=0.5)  # fmt: skip
    a, domain = vm["status"]["host"], vm["status"]["domainName"]
    b = next(h.name for h in r.hosts if h.name != a)
    wait_for(f"{domain} counting", lambda: r.counting(a, domain), timeout=120, interval=0.5)
    raw.define_copy(a, domain, "bench-raw-1")
    wait_for("bench-raw-1 counting", lambda: r.counting(a, "bench-raw-1"), timeout=120, interval=0.5)
    log(f"mig-1 ({domain}) and bench-raw-1 run on {a}; moving both between {a} and {b}")
    out: dict[str, list[float]] = {key: [] for key in (
        "op_wall", "op_to_migrating", "op_step", "op_progress_elapsed", "op_libvirt", "op_downtime",
        "raw_wall", "raw_libvirt", "raw_downtime")}  # fmt: skip
    here, there = a, b
    for i in range(1, args.round_trips + 1):
        name = f"mig-1-{i}"
        t0 = time.monotonic()
        k.create(k.migration(name, "mig-1", there))
        body, seen = watch_migration(k, name)
        status = body.get("status") or {}
        if status.get("phase") != "Succeeded":
            raise BenchFailed(f"migration {name}: {status.get('phase')}: {status.get('message')}")
        progress = status.get("progress") or {}
        stats = raw.conns[there].lookupByName(domain).jobStats(COMPLETED)
        out["op_wall"].append(seen["Succeeded"] - t0)
        out["op_to_migrating"].append(seen.get("Migrating", math.nan) - t0)
        out["op_step"].append(step_seconds(str(status.get("message"))))
        out["op_progress_elapsed"].append((progress.get("elapsedMilliseconds") or math.nan) / 1000)
        out["op_downtime"].append(float(progress.get("downtimeMilliseconds", math.nan)))
        out["op_libvirt"].append(float(stats.get("time_elapsed", math.nan)) / 1000)
        time.sleep(1)
        fig = raw.migrate("bench-raw-1", here, there)
        out["raw_wall"].append(fig["wall"])
        out["raw_libvirt"].append(fig["libvirt"])
        out["raw_downtime"].append(fig["downtime_ms"])
        log(
            f"{i}/{args.round_trips} {here} -> {there}: operator {out['op_wall'][-1]:.2f}s "
            f"(libvirt {out['op_libvirt'][-1]:.2f}s, downtime {out['op_downtime'][-1]:.0f} ms), "
            f"raw {fig['wall']:.2f}s (libvirt {fig['libvirt']:.2f}s, downtime {fig['downtime_ms']:.0f} ms)"
        )
        here, there = there, here
        time.sleep(1)
    # The guest went on (no reboot) on the host it ended on.
    if not r.counting(here, domain, 3) or "VDC-BOOT-ID" in r.console(here, domain):
        log(f"WARNING: {domain}'s console on {here} does not show the counter going on")
    k.custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualmachines", "mig-1")
    with contextlib.suppress(libvirt.libvirtError):
        dom = raw.conns[here].lookupByName("bench-raw-1")
        dom.destroy()
        dom.undefine()
    wait_for("mig-1 deleted", lambda: k.get("virtualmachines", "mig-1", NAMESPACE) is None, timeout=120, interval=0.5)
    return {key: summary(values) for key, values in out.items()} | {"raw_values": out}


def operator_evacuation(r: MigRig, k: Kube, source: str, names: list[str], policy: str) -> dict[str, Any]:
    log(f"operator evacuation of {source} ({policy})")
    in_flight = 0
    phases: dict[str, dict[str, float]] = {}  # migration -> phase -> first seen (seconds after the patch)
    t0 = time.monotonic()
    k.maintenance(source, True)
    evacuated = elsewhere = None
    deadline = t0 + 600
    while evacuated is None or elsewhere is None:
        now = time.monotonic()
        if now > deadline:
            raise BenchFailed(f"evacuation of {source} not done after 600s: {k.get('hosts', source)}")
        host = k.get("hosts", source) or {}
        evac = (host.get("status") or {}).get("evacuation") or {}
        if evacuated is None and evac.get("phase") == "Evacuated":
            evacuated = now - t0
        migrations = k.custom.list_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "virtualmachinemigrations", label_selector=f"{EVACUATION_LABEL}={source}"
        )["items"]
        now = time.monotonic()
        running = 0
        for m in migrations:
            phase = str((m.get("status") or {}).get("phase") or "(none)")
            phases.setdefault(m["metadata"]["name"], {}).setdefault(phase, now - t0)
            running += phase in ("PreparingTarget", "Migrating")
        in_flight = max(in_flight, running)
        vms = k.vms()
        now = time.monotonic()
        if elsewhere is None and all(
            (vms.get(n, {}).get("status") or {}).get("phase") == "Running"
            and (vms.get(n, {}).get("status") or {}).get("host") not in (None, source)
            for n in names
        ):
            elsewhere = now - t0
        if evac.get("phase") == "Blocked":
            raise BenchFailed(f"evacuation of {source} Blocked: {evac}")
        time.sleep(POLL)
    vms = k.vms()
    first = [min(p.values()) for p in phases.values()]
    began = sorted(p["Migrating"] for p in phases.values() if "Migrating" in p)
    waited = [p["Migrating"] - min(p.values()) for p in phases.values() if "Migrating" in p]
    moving = [p["Succeeded"] - p["Migrating"] for p in phases.values() if "Migrating" in p and "Succeeded" in p]
    result = {
        "policy": policy,
        "evacuated": evacuated,
        "all_running_elsewhere": elsewhere,
        "evacuated_and_running": max(evacuated, elsewhere),
        "migrations": len(phases),
        "first_migration_seen": min(first) if first else math.nan,
        "migrating_began": began,
        "waited_before_migrating": summary(waited),
        "in_migrating": summary(moving),
        "max_in_flight": in_flight,
        "phases_seen": phases,
        "targets": dict(Counter(str((vms[n].get("status") or {}).get("host")) for n in names)),
    }
    log(f"evacuated in {result['evacuated_and_running']:.2f}s; Migrating began at {[round(b, 1) for b in began]}")
    k.maintenance(source, False)
    wait_for(
        f"{source} out of maintenance",
        lambda: "evacuation" not in ((k.get("hosts", source) or {}).get("status") or {}),
        timeout=120,
        interval=0.3,
    )
    k.delete_migrations(f"{EVACUATION_LABEL}={source}")
    return result


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def evacuation(r: MigRig, k: Kube, raw: RawLibvirt, args: argparse.Namespace) -> dict[str, Any]:
    n = args.vms
    a, *others = [h.name for h in r.hosts]
    log(f"part 2: {n} VMs on {a}")
    for h in others:  # everything lands on the first host
        k.maintenance(h, True)
    names = [f"evac-{i}" for i in range(1, n + 1)]
    try:
        for name in names:
            k.create(vm_manifest(name))
        wait_for(f"{n} VMs Ready", lambda: all(is_ready(v) for v in k.vms().values()) and len(k.vms()) == n,
                 timeout=600, interval=1)  # fmt: skip
    finally:
        for h in others:
            k.maintenance(h, False)
    vms = k.vms()
    placed = {str(vms[x]["status"]["host"]) for x in names}
    if placed != {a}:
        raise BenchFailed(f"the VMs were placed on {placed}, not only on {a}")
    for h in others:
        wait_for(f"{h} out of maintenance", lambda h=h: "evacuation" not in ((k.get("hosts", h) or {}).get("status")
                 or {}), timeout=120, interval=0.3)  # fmt: skip
    domains = [str(vms[x]["status"]["domainName"]) for x in names]
    for d in domains:
        wait_for(f"{d} counting", lambda d=d: r.counting(a, d), timeout=180, interval=0.5)
    raws = [f"bench-raw-evac-{i}" for i in range(1, n + 1)]
    for name in raws:
        raw.define_copy(a, domains[0], name)
    for name in raws:
        wait_for(f"{name} counting", lambda name=name: r.counting(a, name), timeout=180, interval=0.5)

    default_p = min(DEFAULT_PARALLEL_PER_HOST, DEFAULT_PARALLEL_PER_CLUSTER)
    raw_runs: list[dict[str, Any]] = []

    def raw_run(label: str, parallel: int) -> None:
        moves = [(name, a, others[i % len(others)]) for i, name in enumerate(raws)]
        log(f"raw: {n} migrations off {a}, {label}")
        wall, figs = raw.migrate_all(moves, parallel)
        raw_runs.append({"label": label, "parallel": parallel, "wall": wall,
                         "per_migration": summary([f["wall"] for f in figs]),
                         "downtime_ms": summary([f["downtime_ms"] for f in figs])})  # fmt: skip
        log(f"raw {label}: {wall:.2f}s")
        back = [(name, raw.where(name), a) for name in raws]
        raw.migrate_all(back, n)  # untimed: back onto the source for the next run

    raw_run("in sequence", 1)
    raw_run(f"{default_p} in parallel", default_p)
    if n != default_p:
        raw_run(f"{n} in parallel", n)

    policy_default = (
        f"default policy ({DEFAULT_PARALLEL_PER_HOST} per host, {DEFAULT_PARALLEL_PER_CLUSTER} per cluster)"
    )
    runs = [operator_evacuation(r, k, a, names, policy_default)]
    pairs = [(policy_default, f"{default_p} in parallel"), (policy_default, "in sequence")]
    if not args.no_policy_run:
        policy = f"MigrationPolicy ({n} per host, {max(n, DEFAULT_PARALLEL_PER_CLUSTER)} per cluster)"
        k.create({"apiVersion": f"{GROUP}/{VERSION}", "kind": "MigrationPolicy", "metadata": {"name": "bench-wide"},
                  "spec": {"parallelMigrationsPerHost": n,
                           "parallelMigrationsPerCluster": max(n, DEFAULT_PARALLEL_PER_CLUSTER)}})  # fmt: skip
        log(f"moving the {n} VMs back onto {a} (untimed)")
        for name in names:
            k.create(k.migration(f"back-{name}", name, a))
        for name in names:
            body, _ = watch_migration(k, f"back-{name}")
            if (body.get("status") or {}).get("phase") != "Succeeded":
                raise BenchFailed(f"moving {name} back: {body.get('status')}")
        k.delete_migrations()
        time.sleep(2)
        runs.append(operator_evacuation(r, k, a, names, policy))
        pairs.append((policy, f"{n} in parallel" if n != default_p else f"{default_p} in parallel"))
        k.custom.delete_cluster_custom_object(GROUP, VERSION, "migrationpolicies", "bench-wide")
    return {"evacuations": runs, "raw_evacuations": raw_runs, "ratio_pairs": pairs}


def bench(r: MigRig, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": vm_scale.machine_description(),
        "command": " ".join([sys.executable, *sys.argv]),
        "git": vm_scale.git_version(),
        "loadavg_start": os.getloadavg()[0],
        "hosts": 3,
        "vms": args.vms,
        "round_trips": args.round_trips,
    }
    _, flags = migration_call(MigrationRequest(target_uri="x", shared_disks=True))
    results["flags"] = "|".join(x for x in FLAG_NAMES if flags & getattr(libvirt, f"VIR_MIGRATE_{x}"))
    r.start_controlplane()
    r.start_hosts(3)
    assert r.cp is not None and r.shared_dir is not None
    k = Kube(r.cp.kubeconfig)
    k.core.create_namespace({"metadata": {"name": NAMESPACE}})
    for h in r.hosts:
        k.create(host_object(h))
    k.create({"apiVersion": f"{GROUP}/{VERSION}", "kind": "StoragePool", "metadata": {"name": POOL},
              "spec": {"type": "dir", "target": {"path": str(r.shared_dir / "bench-pool")}, "shared": True,
                       "hostSelector": {"matchLabels": {"vdc.dev/driver": DRIVER}}}})  # fmt: skip
    r.start_operator()
    for h in r.hosts:
        wait_for(f"Host {h.name} Ready", lambda h=h: vm_scale.is_ready(k.get("hosts", h.name) or {}), 120, 0.5)
    wait_for("pool Ready", lambda: vm_scale.is_ready(k.get("storagepools", POOL) or {}), 120, 0.5)
    raw = RawLibvirt(r)
    raw.open()
    try:
        results["per_migration"] = per_migration(r, k, raw, args)
        results.update(evacuation(r, k, raw, args))
    finally:
        raw.close()
    results["loadavg_end"] = os.getloadavg()[0]
    if r.operator_log is not None:
        levels, top = vm_scale.summarize_log(r.operator_log)
        results["operator_log_levels"] = dict(levels)
        results["operator_log_top"] = top
        results["operator_log_errors"] = log_errors(r.operator_log)
    return results


def log_errors(path: Path, limit: int = 5) -> list[str]:
    """The operator log's ERROR records, each with its traceback (the lines up to the next record; a long
    traceback is cut to its first and last lines), at most ``limit``."""
    records: list[list[str]] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("[") or not records:
            records.append([line])
        else:
            records[-1].append(line)
    out = []
    for rec in records:
        if "[ERROR" in rec[0] or any(x.startswith("Traceback") for x in rec[1:]):
            out.append("\n".join(rec if len(rec) <= 14 else [*rec[:3], "  ...", *rec[-10:]]))
    return out[:limit]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--round-trips", type=int, default=5, help="K: migrations of the one VM (default %(default)s)")
    p.add_argument("--vms", type=int, default=6, help="N: VMs evacuated from one host (default %(default)s)")
    p.add_argument("--no-policy-run", action="store_true", help="skip the evacuation with a MigrationPolicy")
    p.add_argument("--state", type=Path, default=None, help="state dir (default: a temp dir, always removed)")
    p.add_argument("--keep", action="store_true", help="leave the control plane, hosts and operator running")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    if args.round_trips < 1 or not 1 <= args.vms <= 64:
        p.error("--round-trips must be at least 1, --vms 1..64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        log("must run as root (the libvirt hosts use namespaces and bind mounts)")
        return 2
    temp_state = args.state is None
    state = Path(tempfile.mkdtemp(prefix="vdc-bench-mig-")) if temp_state else args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    r = MigRig(state=state, keep=args.keep, prefix=f"vdcm{secrets.token_hex(2)}")

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    results: dict[str, Any] | None = None
    try:
        results = bench(r, args)
    except KeyboardInterrupt:
        log("interrupted")
    except Exception as exc:
        log(f"FAILED: {exc!r}")
        if r.operator_log is not None and r.operator_log.exists():
            log("operator log, last lines:\n" + rig.tail(r.operator_log, 40))
    finally:
        if args.keep:
            log(f"--keep: left running; state {state}")
            log("stop it: " + "; ".join(r.teardown_commands()))
        else:
            r.teardown()
            if temp_state:
                shutil.rmtree(state, ignore_errors=True)
                log(f"removed {state}")
    if results is None:
        return 1
    print(table(results))
    for line in results.get("operator_log_top") or []:
        print(f"  log: {line}")
    for block in results.get("operator_log_errors") or []:
        log("operator log:\n" + block)
    if args.json:
        args.json.write_text(json.dumps(vm_scale.no_nan(results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
