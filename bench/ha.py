"""Host HA benchmark: from a host's power-off to every one of its VMs Running elsewhere, next to raw libvirt.

Prints figures; asserts nothing about time. See bench/README.md for what each figure means.

    .venv/bin/python bench/ha.py [--vms 6] [--rounds 3] [--json out.json]

Steps: control plane + CRDs, three libvirt hosts (QEMU/TCG, hack/libvirt-hosts.sh with network namespaces),
the rig's Redfish endpoint for them (hack/redfish-rig.py) in every Host's spec.powerManagement, a shared
``dir`` StoragePool in the rig's shared directory, the operator as a subprocess (all as bench/migration.py).

Per round:

1. N tiny guest VMs (96Mi, a blank disk on the shared pool, not pinned) placed on the first host (the other
   two in maintenance while they are created), each booted (its counter runs on the console).
2. Raw floor: N copies of their domain XML (own name, UUID, disk, no operator metadata) defined and started
   by libvirt-python on the two other hosts (round-robin), timed, then removed again: once in sequence on
   each host (a thread per host), once all at once (a thread and connection per domain: the floor).
3. The first host powered off through Redfish (ForceOff: its libvirtd and QEMUs are killed), then a poll
   every 0.1 s of the Host (status.ha.state) and the VMs until every VM is Running on another host; each
   guest is then checked to run exactly once (its QEMU processes on this machine, and every libvirtd).
4. The host powered on again (Redfish On) and waited for until Healthy (its stale domains removed) and Ready;
   the VMs are deleted before the next round.

Everything started is stopped again and the temp dir removed, also on errors and Ctrl-C (unless --keep).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "bench"))

import kubernetes  # noqa: E402
import libvirt  # noqa: E402
import sushy  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

import migration  # noqa: E402
import rig  # noqa: E402
import vm_scale  # noqa: E402
from migration import GROUP, POLL, VERSION, BenchFailed, Kube, MigRig, RawLibvirt, fmt_s, summary, wait_for  # noqa: E402

log = vm_scale.log
NAMESPACE = "vdc-bench-ha"
CLUSTER = "bench-ha"


# --- the rig --------------------------------------------------------------------------------------


class HaRig(MigRig):
    """bench/migration.py's rig, with the rig's Redfish endpoint (stopped by ``hack/libvirt-hosts.sh down``)."""

    redfish: str | None = None

    def start_redfish(self) -> str:
        log("Redfish endpoint up (hack/redfish-rig.py)")
        self.redfish = rig.start_redfish(self.state, self.prefix)
        return self.redfish

    def system(self, host: str) -> Any:
        """The sushy ComputerSystem of ``host`` (a new client each time: the emulator is cheap to ask)."""
        assert self.redfish is not None
        return sushy.Sushy(self.redfish + "/redfish/v1/").get_system(f"/redfish/v1/Systems/{host}")


def vm_manifest(name: str) -> dict[str, Any]:
    """bench/migration.py's VM (tiny guest, disk on the shared pool), in this bench's namespace, not pinned."""
    doc = migration.vm_manifest(name)
    doc["metadata"]["namespace"] = NAMESPACE
    return doc


def list_vms(k: Kube) -> dict[str, dict[str, Any]]:
    listing: Any = k.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualmachines")
    return {str(v["metadata"]["name"]): v for v in listing["items"]}


def ha_of(k: Kube, host: str) -> dict[str, Any]:
    return dict(((k.get("hosts", host) or {}).get("status") or {}).get("ha") or {})


def out_of_maintenance(k: Kube, host: str) -> bool:
    return "evacuation" not in ((k.get("hosts", host) or {}).get("status") or {})


def ready_and_on(k: Kube, host: str) -> bool:
    body = k.get("hosts", host) or {}
    return vm_scale.is_ready(body) and ((body.get("status") or {}).get("power") or {}).get("state") == "On"


def cluster_holds(k: Kube, count: int) -> bool:
    return bool(((k.get("computeclusters", CLUSTER) or {}).get("status") or {}).get("hostCount") == count)


def qemu_processes(domain: str) -> int:
    """QEMU processes of the domain on this machine, whatever any libvirtd says (tests/e2e/migration_site.py's
    check; that module needs the e2e fixtures, so it is not imported)."""
    found = subprocess.run(["pgrep", "-f", f"guest={domain},"], capture_output=True, text=True, check=False)
    return len(found.stdout.split())


def _epoch(text: str | None) -> float:
    if not text:
        return math.nan
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- one round ------------------------------------------------------------------------------------


def place_on(r: HaRig, k: Kube, victim: str, names: list[str]) -> dict[str, str]:
    """The N VMs created with every other host in maintenance, so that they all land on ``victim``; waits
    until they are Ready and booted. Returns VM name -> domain name."""
    others = [h.name for h in r.hosts if h.name != victim]
    for h in others:
        k.maintenance(h, True)
    try:
        for name in names:
            k.create(vm_manifest(name))
        wait_for(f"{len(names)} VMs Ready", lambda: len(vms := list_vms(k)) == len(names)
                 and all(migration.is_ready(v) for v in vms.values()), timeout=600, interval=1)  # fmt: skip
    finally:
        for h in others:
            k.maintenance(h, False)
    for h in others:
        wait_for(f"{h} out of maintenance", functools.partial(out_of_maintenance, k, h), timeout=120, interval=0.3)
    vms = list_vms(k)
    placed = {str(vms[n]["status"]["host"]) for n in names}
    if placed != {victim}:
        raise BenchFailed(f"the VMs were placed on {placed}, not only on {victim}")
    domains = {n: str(vms[n]["status"]["domainName"]) for n in names}
    for d in domains.values():
        wait_for(f"{d} counting", functools.partial(r.counting, victim, d), timeout=300, interval=0.5)
    return domains


def raw_floor(
    raw: RawLibvirt, victim: str, survivors: list[str], domains: list[str], tag: str, parallel: bool
) -> dict[str, Any]:
    """Define and start a copy of each of ``domains`` (their XML on ``victim``) on ``survivors``, round-robin;
    ``parallel``: all at once, a thread and a connection each; else one thread per host on the bench's
    connection to it, its domains in sequence. Connections are opened before the clock starts; the copies
    are removed afterwards (untimed)."""
    plan: list[tuple[str, str, str]] = []  # (host, name, xml)
    disks: list[Path] = []
    for i, domain in enumerate(domains):
        name = f"ha-raw-{tag}-{i + 1}"
        xml = raw.copy_xml(victim, domain, name)  # untimed: the XML and a new blank disk
        plan.append((survivors[i % len(survivors)], name, xml))
        disks += [Path(str(s.get("file"))) for s in ET.fromstring(xml).iterfind("devices/disk/source")
                  if s.get("file") and name in str(s.get("file"))]  # fmt: skip
    if parallel:
        conns = [libvirt.open(raw.host(h).qemu_uri) for h, _, _ in plan]
        jobs: list[list[tuple[libvirt.virConnect, str]]] = [
            [(c, xml)] for c, (_, _, xml) in zip(conns, plan, strict=True)
        ]
    else:
        conns = []
        jobs = [[(raw.conns[h], xml) for host, _, xml in plan if host == h] for h in survivors]

    def run(job: list[tuple[libvirt.virConnect, str]]) -> None:
        for conn, xml in job:
            conn.defineXML(xml).create()

    how = f"{len(plan)} in parallel" if parallel else f"in sequence on each of {len(survivors)} hosts"
    log(f"raw floor: {len(domains)} domains defined and started on {', '.join(survivors)}, {how}")
    try:
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            list(pool.map(run, jobs))
        wall = time.monotonic() - t0
    finally:
        for c in conns:
            with contextlib.suppress(libvirt.libvirtError):
                c.close()
        for host, name, _ in plan:  # gone before the power-off, so the hosts are as they were
            with contextlib.suppress(libvirt.libvirtError):
                dom = raw.conns[host].lookupByName(name)
                dom.destroy()
                dom.undefine()
        for disk in disks:
            disk.unlink(missing_ok=True)
    log(f"raw floor, {how}: {wall:.2f}s")
    return {"wall": wall, "how": how, "placement": dict(Counter(h for h, _, _ in plan))}


def copies(raw: RawLibvirt, survivors: list[str], domains: dict[str, str], vms: dict[str, Any]) -> list[str]:
    """What is wrong with "each guest runs exactly once, on the host its status names" (empty: nothing)."""
    wrong = []
    for name, domain in domains.items():
        running = []
        for host in survivors:
            with contextlib.suppress(libvirt.libvirtError):
                if raw.conns[host].lookupByName(domain).isActive():
                    running.append(host)
        processes = qemu_processes(domain)
        there = (vms[name].get("status") or {}).get("host")
        if processes != 1 or running != [there]:
            wrong.append(f"{name} ({domain}): {processes} QEMU process(es), running on {running}, status.host {there}")
    return wrong


def failover(r: HaRig, k: Kube, raw: RawLibvirt, victim: str, domains: dict[str, str]) -> dict[str, Any]:
    """Power ``victim`` off and poll until every VM runs elsewhere; the figures, in seconds after the call."""
    names = list(domains)
    states: dict[str, float] = {}  # HA state -> first seen
    since: dict[str, str] = {}  # HA state -> its status.ha.since
    placed: dict[str, float] = {}  # VM -> first seen with status.host another host
    running: dict[str, float] = {}  # VM -> first seen Running on another host
    before = str(ha_of(k, victim).get("state") or "")
    log(f"power-off of {victim} (Redfish ForceOff)")
    wall0 = time.time()
    t0 = time.monotonic()
    r.system(victim).reset_system(sushy.RESET_FORCE_OFF)  # returns once its libvirtd and QEMUs are gone
    off = time.monotonic() - t0
    deadline = t0 + 300
    vms: dict[str, Any] = {}
    while len(running) < len(names) or "Fenced" not in states:
        if time.monotonic() > deadline:
            why = {n: (vm_scale.condition(v, "Ready") or {}).get("message") for n, v in vms.items() if n not in running}
            raise BenchFailed(f"not every VM Running elsewhere 300s after the power-off: HA {ha_of(k, victim)}; "
                              f"not yet: {why}")  # fmt: skip
        ha = ha_of(k, victim)
        now = time.monotonic() - t0
        state = str(ha.get("state") or "")
        if state and state != before and state not in states:
            states[state] = now
            since[state] = str(ha.get("since") or "")
            log(f"{victim}: {state} at {now:.2f}s")
        vms = list_vms(k)
        now = time.monotonic() - t0
        for n in names:
            status = vms.get(n, {}).get("status") or {}
            if status.get("host") not in (None, victim):
                placed.setdefault(n, now)
                if status.get("phase") == "Running" and n not in running:
                    running[n] = now
        time.sleep(POLL)
    log(f"every VM Running elsewhere at {max(running.values()):.2f}s")
    survivors = [h.name for h in r.hosts if h.name != victim]
    wrong = copies(raw, survivors, domains, vms)
    time.sleep(3)  # and it stays so
    wrong += copies(raw, survivors, domains, list_vms(k))
    uids = {str(v["metadata"]["uid"]) for v in vms.values()}
    events = k.core.list_namespaced_event(NAMESPACE, field_selector="reason=HaRestart").items
    fenced = states["Fenced"]
    return {
        "power_off_call": off,
        "states_seen": states,
        "ha_since_after_power_off": {s: _epoch(v) - wall0 for s, v in since.items()},
        "suspect_seen": states.get("Suspect", math.nan),
        "fenced_seen": fenced,
        "first_running": min(running.values()),
        "all_running": max(running.values()),
        "restart": max(running.values()) - fenced,
        "first_restart": min(running.values()) - fenced,
        "per_vm_running": sorted(running.values()),
        "per_vm_placed": sorted(placed.values()),
        "placed_to_running": [running[n] - placed[n] for n in names],
        "targets": dict(Counter(str((vms[n].get("status") or {}).get("host")) for n in names)),
        "ha_restart_events": sum(1 for e in events if e.involved_object.uid in uids),
        "ha_restart_messages": [str(e.message) for e in events if e.involved_object.uid in uids],
        "wrong": wrong,
    }


def power_on(r: HaRig, k: Kube, victim: str) -> dict[str, Any]:
    log(f"power-on of {victim} (Redfish On)")
    t0 = time.monotonic()
    r.system(victim).reset_system(sushy.RESET_ON)
    healthy = wait_for(f"{victim} Healthy again", lambda: (h := ha_of(k, victim)).get("state") == "Healthy" and h,
                       timeout=300, interval=0.3)  # fmt: skip
    took = time.monotonic() - t0
    wait_for(f"{victim} Ready", lambda: vm_scale.is_ready(k.get("hosts", victim) or {}), timeout=120, interval=0.3)
    return {"healthy": took, "stale_removed": len(healthy.get("staleDomainsRemoved") or [])}


def delete_vms(k: Kube, names: list[str]) -> None:
    for n in names:
        with contextlib.suppress(ApiException):
            k.custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualmachines", n)
    wait_for("VMs deleted", lambda: not list_vms(k), timeout=300, interval=0.5)


def one_round(r: HaRig, k: Kube, i: int, args: argparse.Namespace) -> dict[str, Any]:
    victim = r.hosts[0].name
    survivors = [h.name for h in r.hosts[1:]]
    names = [f"ha-{i}-{j}" for j in range(1, args.vms + 1)]
    log(f"round {i}/{args.rounds}: {args.vms} VMs on {victim}")
    domains = place_on(r, k, victim, names)
    raw = RawLibvirt(r)
    raw.open()
    try:
        sequence = raw_floor(raw, victim, survivors, list(domains.values()), f"{i}s", parallel=False)
        time.sleep(2)
        floor = raw_floor(raw, victim, survivors, list(domains.values()), f"{i}p", parallel=True)
        time.sleep(2)
        result = failover(r, k, raw, victim, domains)
    finally:
        raw.close()
    result["raw"] = floor
    result["raw_per_host_sequence"] = sequence
    result["ratio_restart"] = result["restart"] / floor["wall"]
    result["ratio_total"] = result["all_running"] / floor["wall"]
    result["recovery"] = power_on(r, k, victim)
    log(
        f"round {i}: Fenced {result['fenced_seen']:.2f}s, all Running elsewhere {result['all_running']:.2f}s, raw "
        f"floor {floor['wall']:.2f}s; {victim} Healthy {result['recovery']['healthy']:.1f}s after power-on"
    )
    if i < args.rounds:
        delete_vms(k, names)
    return result


# --- figures --------------------------------------------------------------------------------------


def table(res: dict[str, Any]) -> str:
    rounds = res["rounds"]

    def s(key: str, sub: str | None = None) -> dict[str, float]:
        return summary([float(r[key][sub] if sub else r[key]) for r in rounds])

    def flat(key: str) -> dict[str, float]:
        return summary([float(v) for r in rounds for v in r[key]])

    rows: list[tuple[str, str]] = [
        ("hosts", "3 QEMU/TCG rig hosts, Redfish (sushy-tools emulator), disks on a shared dir pool"),
        ("guest", "tiny guest, 1 vCPU, 96Mi, 16Mi blank qcow2 disk; restartPriority Medium, not pinned"),
        ("VMs on the powered-off host", str(res["vms"])),
        ("rounds", str(len(rounds))),
        ("", ""),
        ("seconds after the power-off call", "median  (min .. max, n)"),
        ("Redfish ForceOff call (processes gone)", fmt_s(s("power_off_call"))),
        ("Suspect seen", fmt_s(s("suspect_seen"))),
        ("detection+fencing: Fenced seen", fmt_s(s("fenced_seen"))),
        ("first VM Running elsewhere", fmt_s(s("first_running"))),
        ("total: all VMs Running elsewhere", fmt_s(s("all_running"))),
        ("restart: Fenced -> first VM Running", fmt_s(s("first_restart"))),
        ("restart: Fenced -> all VMs Running", fmt_s(s("restart"))),
        ("per VM: placed elsewhere seen", fmt_s(flat("per_vm_placed"))),
        ("per VM: placed -> Running", fmt_s(flat("placed_to_running"))),
        ("raw floor: define+start N, all parallel", fmt_s(s("raw", "wall"))),
        ("raw: the same, in sequence per host", fmt_s(s("raw_per_host_sequence", "wall"))),
        ("ratio restart / raw", fmt_s(s("ratio_restart"), "x")),
        ("ratio total / raw", fmt_s(s("ratio_total"), "x")),
        ("", ""),
        ("each guest runs once (QEMU + libvirt)", "yes" if not any(r["wrong"] for r in rounds) else "NO"),
        ("HaRestart Events per round", " ".join(str(r["ha_restart_events"]) for r in rounds)),
        ("targets", "; ".join(", ".join(f"{h} {c}" for h, c in sorted(r["targets"].items())) for r in rounds)),
        ("power-on -> Healthy again", fmt_s(s("recovery", "healthy"))),
        ("stale domains removed per round", " ".join(str(r["recovery"]["stale_removed"]) for r in rounds)),
    ]
    for r in rounds:
        rows += [("  WRONG", w) for w in r["wrong"]]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in rows)


# --- the benchmark --------------------------------------------------------------------------------


def bench(r: HaRig, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": vm_scale.machine_description(),
        "command": " ".join([sys.executable, *sys.argv]),
        "git": vm_scale.git_version(),
        "loadavg_start": os.getloadavg()[0],
        "hosts": 3,
        "vms": args.vms,
    }
    r.start_controlplane()
    r.start_hosts(3)
    url = r.start_redfish()
    assert r.cp is not None and r.shared_dir is not None
    k = Kube(r.cp.kubeconfig)
    k.core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=NAMESPACE)))
    for h in r.hosts:
        doc = migration.host_object(h)
        doc["spec"]["powerManagement"] = {"redfish": {"endpoint": url, "systemId": h.name}}
        k.create(doc)
    k.create({"apiVersion": f"{GROUP}/{VERSION}", "kind": "StoragePool", "metadata": {"name": migration.POOL},
              "spec": {"type": "dir", "target": {"path": str(r.shared_dir / "bench-pool")}, "shared": True,
                       "hostSelector": {"matchLabels": {"vdc.dev/driver": migration.DRIVER}}}})  # fmt: skip
    # HA restarts the VMs of a fenced host only when a ComputeCluster with ha.enabled holds it. Admission
    # control None: nothing is refused while the other two hosts are in maintenance (the VMs land on one).
    k.custom.create_cluster_custom_object(GROUP, VERSION, "computeclusters", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ComputeCluster", "metadata": {"name": CLUSTER},
        "spec": {"hostSelector": {"matchLabels": {"vdc.dev/driver": migration.DRIVER}},
                 "ha": {"enabled": True, "admissionControl": {"policy": "None"}}}})  # fmt: skip
    r.start_operator()
    wait_for(f"ComputeCluster {CLUSTER} holding the 3 hosts", functools.partial(cluster_holds, k, 3), 120, 0.5)
    for h in r.hosts:
        wait_for(f"Host {h.name} Ready, power On", functools.partial(ready_and_on, k, h.name), 120, 0.5)
    wait_for("pool Ready", lambda: vm_scale.is_ready(k.get("storagepools", migration.POOL) or {}), 120, 0.5)
    results["rounds"] = []
    for i in range(1, args.rounds + 1):
        results["rounds"].append(one_round(r, k, i, args))
    results["loadavg_end"] = os.getloadavg()[0]
    if r.operator_log is not None:
        levels, top = vm_scale.summarize_log(r.operator_log)
        results["operator_log_levels"] = dict(levels)
        results["operator_log_top"] = top
        results["operator_log_errors"] = migration.log_errors(r.operator_log)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vms", type=int, default=6, help="N: VMs on the host that is powered off (default %(default)s)")
    p.add_argument(
        "--rounds", type=int, default=3, help="R: power-offs, the host back on in between (default %(default)s)"
    )
    p.add_argument("--state", type=Path, default=None, help="state dir (default: a temp dir, always removed)")
    p.add_argument("--keep", action="store_true", help="leave the control plane, hosts and operator running")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    if args.rounds < 1 or not 1 <= args.vms <= 64:
        p.error("--rounds must be at least 1, --vms 1..64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        log("must run as root (the libvirt hosts use namespaces and bind mounts)")
        return 2
    temp_state = args.state is None
    state = Path(tempfile.mkdtemp(prefix="vdc-bench-ha-")) if temp_state else args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    r = HaRig(state=state, keep=args.keep, prefix=f"vdch{secrets.token_hex(2)}")

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
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the teardown short
            signal.signal(sig, signal.SIG_IGN)
        if args.keep:
            log(f"--keep: left running; state {state}")
            log("stop it: " + "; ".join(r.teardown_commands()))
        else:
            r.teardown()  # hack/libvirt-hosts.sh down also stops the Redfish endpoint
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
    return 1 if any(r["wrong"] for r in results["rounds"]) else 0


if __name__ == "__main__":
    sys.exit(main())
