"""``vdc drs CLUSTER [list|apply ID...|apply --all]``: a ComputeCluster's DRS (and DPM) as the operator
reports it (``status.drs``, ``status.dpm``), and applying DRS recommendations by the operator: this sets the
annotation ``vdc.dev/drs-apply``, waits until the operator has made the migrations and removed it, and
prints the VirtualMachineMigrations the recommendations became."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes

from vdc.api.computecluster import DRS_APPLY_ANNOTATION, ComputeCluster
from vdc.api.meta import GROUP, VERSION
from vdc.cli.context import CliError, Kube, add_common_options, api_error, positive_seconds
from vdc.cli.format import table

POLL_SECONDS = 0.5
SETTLE_SECONDS = 5.0
"""After the operator removed the annotation: how long to wait for the status to name the migrations."""


def drs_of(cluster: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return (cluster.get("status") or {}).get("drs")


def recommendations(cluster: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((drs_of(cluster) or {}).get("recommendations") or [])


def pending(cluster: Mapping[str, Any]) -> str | None:
    """The apply still waiting for the operator (the annotation it removes once it has made the moves)."""
    return ((cluster.get("metadata") or {}).get("annotations") or {}).get(DRS_APPLY_ANNOTATION)


def recommendation_rows(recs: Sequence[Mapping[str, Any]]) -> list[list[object]]:
    return [
        [
            r.get("id"),
            f"{r.get('namespace')}/{r.get('vm')}",
            f"{r.get('source')} -> {r.get('target')}",
            r.get("reason") if not r.get("rule") else f"{r.get('reason')}/{r.get('rule')}",
            f"{r.get('imbalanceBefore')}->{r.get('imbalanceAfter')}",
            r.get("migration"),
        ]
        for r in recs
    ]


def describe(cluster: Mapping[str, Any]) -> str:
    """DRS and DPM of the cluster as text: summaries, host loads, recommendations, violations."""
    name = cluster["metadata"]["name"]
    status = cluster.get("status") or {}
    out: list[str] = []
    drs = status.get("drs")
    if not drs:
        out.append(f"cluster {name}: DRS not enabled (no status.drs; set spec.drs.enabled)\n")
    else:
        out.append(
            f"cluster {name}: DRS {drs.get('automation')}, imbalance {drs.get('imbalance')} "
            f"(target {drs.get('target')}), {drs.get('moving') or 0} moving"
            + (f": {drs['message']}" if drs.get("message") else "")
            + "\n"
        )
        hosts = drs.get("hosts") or []
        if hosts:
            out.append("\n" + table(
                ["host", "power", "cpu demand", "memory demand", "load", "vms"],
                [[h.get("host"), h.get("power"), f"{(h.get('cpuDemandMilli') or 0) / 1000:.2f}/{h.get('cpus') or 0}",
                  f"{h.get('memoryDemand') or '0'}/{h.get('memory') or '0'}", f"{h.get('loadPercent') or 0}%",
                  h.get("vms") or 0] for h in hosts],
            ))  # fmt: skip
        recs = drs.get("recommendations") or []
        if recs:
            out.append("\nrecommendations:\n")
            out.append(table(
                ["id", "vm", "source -> target", "reason/rule", "imbalance", "migration"], recommendation_rows(recs)
            ))  # fmt: skip
        else:
            out.append("\nrecommendations: none\n")
        violations = drs.get("violations") or []
        if violations:
            out.append("\nrule violations:\n")
            out.extend(f"  {v.get('rule')}: {v.get('message')}\n" for v in violations)
    dpm = status.get("dpm")
    if not dpm:
        out.append("\nDPM: off (no status.dpm)\n")
    else:
        standby = ", ".join(dpm.get("standby") or []) or "none"
        out.append(
            f"\nDPM {dpm.get('automation')}: utilization {dpm.get('utilizationPercent') or 0}%, "
            f"{dpm.get('hostsOn') or 0} host(s) on, standby: {standby}"
            + (f": {dpm['message']}" if dpm.get("message") else "")
            + "\n"
        )
        dpm_recs = dpm.get("recommendations") or []
        if dpm_recs:
            out.append(
                table(
                    ["host", "action", "message"],
                    [[r.get("host"), r.get("action"), r.get("message")] for r in dpm_recs],
                )
            )
    return "".join(out)


def applied(cluster: Mapping[str, Any], ids: Sequence[str]) -> str:
    """What became of the recommendations asked for: their migrations, or why there is none."""
    by_id = {r.get("id"): r for r in recommendations(cluster)}
    lines = []
    for rid in ids:
        r = by_id.get(rid)
        if r is None:
            lines.append(f"{rid}: no longer recommended (nothing made)")
        elif not r.get("migration"):
            lines.append(f"{rid}: {r.get('namespace')}/{r.get('vm')} not moved yet (maxConcurrentMoves reached?)")
        else:
            lines.append(f"{rid}: {r.get('namespace')}/{r.get('vm')} {r.get('source')} -> {r.get('target')}: "
                         f"migration {r['migration']}\n  kubectl get virtualmachinemigrations -n {r.get('namespace')} "
                         f"{r['migration']}")  # fmt: skip
    return "\n".join(lines) + "\n"


def all_made(cluster: Mapping[str, Any], ids: Sequence[str]) -> bool:
    by_id = {r.get("id"): r for r in recommendations(cluster)}
    return all(rid in by_id and by_id[rid].get("migration") for rid in ids)


def get_cluster(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get(ComputeCluster.KIND.plural, name, namespaced=False, what=f"computecluster {name}")


def cmd_drs(args: argparse.Namespace) -> int:
    if args.action == "list" and (args.ids or args.all):
        raise CliError("list takes no recommendation ids (did you mean `apply`?)")
    if args.action == "apply" and not (args.ids or args.all):
        raise CliError("apply: name the recommendation ids or pass --all")
    if args.ids and args.all:
        raise CliError("apply: give recommendation ids or --all, not both")
    kube = Kube.from_args(args)
    cluster = get_cluster(kube, args.cluster)
    if args.action == "list":
        sys.stdout.write(describe(cluster))
        return 0
    if drs_of(cluster) is None:
        raise CliError(f"cluster {args.cluster}: DRS not enabled (no status.drs)")
    known = [str(r.get("id")) for r in recommendations(cluster)]
    if args.all:
        if not known:
            raise CliError(f"cluster {args.cluster}: no DRS recommendations to apply")
        ids, token = known, "all"
    else:
        ids = list(dict.fromkeys(args.ids))
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise CliError(f"cluster {args.cluster}: unknown recommendation id(s): {', '.join(unknown)} "
                           f"(known: {', '.join(known) or 'none'})")  # fmt: skip
        token = ",".join(ids)
    patch = {"metadata": {"annotations": {DRS_APPLY_ANNOTATION: token}}}
    try:
        kube.custom.patch_cluster_custom_object(GROUP, VERSION, ComputeCluster.KIND.plural, args.cluster, patch)
    except kubernetes.client.ApiException as exc:
        raise api_error(exc, f"computecluster {args.cluster}") from exc
    print(f"cluster {args.cluster}: {DRS_APPLY_ANNOTATION}={token} set; waiting for the operator", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    while pending(cluster := get_cluster(kube, args.cluster)) is not None:
        if time.monotonic() >= deadline:
            raise CliError(f"timed out after {args.timeout:g}s: the operator has not applied {token} yet (the "
                           "annotation stays set and DRS applies it at its next look)")  # fmt: skip
        time.sleep(POLL_SECONDS)
    settle = time.monotonic() + SETTLE_SECONDS  # the status may be written just after the annotation goes
    while not all_made(cluster, ids) and time.monotonic() < settle:
        time.sleep(POLL_SECONDS)
        cluster = get_cluster(kube, args.cluster)
    sys.stdout.write(applied(cluster, ids))
    return 0 if all_made(cluster, ids) else 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "drs",
        help="a ComputeCluster's DRS and DPM: list the loads and recommendations, apply recommendations",
        description="List a ComputeCluster's DRS state (imbalance, host loads, recommended migrations, rule "
        "violations) and its DPM state, or have the operator make DRS recommendations: `apply ID...` or "
        f"`apply --all` sets the annotation {DRS_APPLY_ANNOTATION}, waits until the operator has removed it, "
        "and prints the VirtualMachineMigrations made. Exit status 1 when one was not made.",
    )
    p.add_argument("cluster", help="the ComputeCluster")
    p.add_argument("action", nargs="?", default="list", choices=["list", "apply"])
    p.add_argument("ids", nargs="*", metavar="ID", help="recommendation ids to apply (see `list`)")
    p.add_argument("--all", action="store_true", help="apply every recommendation")
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=60.0,
        help="seconds to wait for the operator at most (default: %(default)s)",
    )
    add_common_options(p, namespaced=False)
    p.set_defaults(func=cmd_drs)
