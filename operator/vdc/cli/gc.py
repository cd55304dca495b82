"""``vdc gc --host NAME [--dry-run]``: show a Host's orphans (from its status) and have the operator
remove them (annotation ``vdc.dev/remove-orphans``), printing what it removed."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Mapping
from typing import Any

import kubernetes

from vdc.api.host import REMOVE_ORPHANS_ANNOTATION, Host
from vdc.api.meta import GROUP, VERSION
from vdc.cli.context import CliError, Kube, add_common_options, api_error, positive_seconds
from vdc.cli.format import condition, rfc3339_now, table

POLL_SECONDS = 1.0

GC_HELP = (
    "Orphans are domains and volumes the operator made whose VirtualMachine no longer exists (say, after "
    "etcd was restored from an older backup): the Host's status.orphans counts and names them, and the "
    "metric vdc_host_orphans{host,kind} counts them. Nothing removes them unless asked. Without --dry-run "
    f"this sets the annotation {REMOVE_ORPHANS_ANNOTATION}=<token> on the Host; the operator then destroys "
    "and undefines the orphan domains and deletes the orphan volumes it sees at that moment (each checked "
    "again just before, never a volume a defined domain uses), records what it removed in "
    "status.orphans.lastRemoval and an OrphansRemoved Event, and clears the annotation. This waits for that "
    "and prints the outcome. A volume kept on purpose (deletionPolicy: Retain of a deleted VM) looks the "
    "same as an orphan: check the list (--dry-run) first, and publish it in its StoragePool "
    "(spec.publishedVolumes) or use it from a VM to keep it."
)


def orphans_of(host: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return (host.get("status") or {}).get("orphans")


def format_orphans(host: Mapping[str, Any]) -> str:
    """What the Host's status says about its orphans: counts, then the listed domains and volumes."""
    name = host["metadata"]["name"]
    orphans = orphans_of(host)
    if orphans is None:
        return f"host {name}: no orphan report in its status yet (is the operator running and the host Ready?)\n"
    domains, volumes = int(orphans.get("domainCount") or 0), int(orphans.get("volumeCount") or 0)
    out = [f"host {name}: {domains} orphan domain(s), {volumes} orphan volume(s)\n"]
    if orphans.get("domains"):
        rows = [
            (d["name"], d["uuid"], "yes" if d.get("running") else "no", _claims(d.get("owner") or {}))
            for d in orphans["domains"]
        ]
        out.append(table(("domain", "uuid", "running", "claims vm"), rows))
        if domains > len(rows):
            out.append(f"… and {domains - len(rows)} more domain(s)\n")
    if orphans.get("volumes"):
        volume_rows = [(v["pool"], v["name"], _claims(v.get("owner") or {})) for v in orphans["volumes"]]
        out.append(table(("pool", "volume", "claims vm"), volume_rows))
        if volumes > len(volume_rows):
            out.append(f"… and {volumes - len(volume_rows)} more volume(s)\n")
    return "".join(out)


def _claims(owner: Mapping[str, Any]) -> str:
    claim = f"{owner.get('namespace')}/{owner.get('name')}"
    return f"{claim} (uid {owner['uid']})" if owner.get("uid") else claim


def format_removal(removal: Mapping[str, Any]) -> str:
    out = [f"{removal.get('message') or 'done'}\n"]
    out += [f"removed domain {d}\n" for d in removal.get("domains") or []]
    out += [f"removed volume {v}\n" for v in removal.get("volumes") or []]
    out += [f"failed: {f}\n" for f in removal.get("failed") or []]
    return "".join(out)


def removal_outcome(host: Mapping[str, Any], token: str) -> Mapping[str, Any] | str | None:
    """The operator's report of request ``token`` once it cleared the annotation; a message when the
    annotation went without a report of ours (someone else removed it or asked again); None: not yet."""
    annotations = host["metadata"].get("annotations") or {}
    if annotations.get(REMOVE_ORPHANS_ANNOTATION) == token:
        return None
    removal = (orphans_of(host) or {}).get("lastRemoval") or {}
    if removal.get("token") == token:
        return removal
    newer = annotations.get(REMOVE_ORPHANS_ANNOTATION)
    if newer is not None:
        return f"another removal was asked meanwhile ({REMOVE_ORPHANS_ANNOTATION}={newer})"
    return f"the annotation {REMOVE_ORPHANS_ANNOTATION} was removed, but not by the operator acting on it"


def request_token() -> str:
    return f"{rfc3339_now()}-{secrets.token_hex(3)}"


def cmd_gc(args: argparse.Namespace) -> int:
    kube = Kube.from_args(args)
    host = kube.host(args.host)
    sys.stdout.write(format_orphans(host))
    if args.dry_run:
        return 0
    orphans = orphans_of(host)
    if orphans is not None and not orphans.get("domainCount") and not orphans.get("volumeCount"):
        print(f"host {args.host}: nothing to remove")
        return 0
    token = request_token()
    patch = {"metadata": {"annotations": {REMOVE_ORPHANS_ANNOTATION: token}}}
    try:
        kube.custom.patch_cluster_custom_object(GROUP, VERSION, Host.KIND.plural, args.host, patch)
    except kubernetes.client.ApiException as exc:
        raise api_error(exc, f"host {args.host}") from exc
    print(f"host {args.host}: {REMOVE_ORPHANS_ANNOTATION}={token} set; waiting for the operator", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    while True:
        host = kube.host(args.host)
        outcome = removal_outcome(host, token)
        if isinstance(outcome, str):
            raise CliError(f"host {args.host}: {outcome}")
        if outcome is not None:
            sys.stdout.write(format_removal(outcome))
            return 1 if outcome.get("failed") else 0
        if time.monotonic() >= deadline:
            ready = condition(host, "Ready") or {}
            raise CliError(
                f"timed out after {args.timeout:g}s: the operator has not acted on {REMOVE_ORPHANS_ANNOTATION}"
                f"={token} yet (host Ready={ready.get('status', 'unknown')}: {ready.get('message', '')}); the "
                "annotation stays set and the operator removes the orphans when it can"
            )
        time.sleep(POLL_SECONDS)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "gc",
        help="show a Host's orphan domains and volumes and remove them",
        description=f"Show a Host's orphan domains and volumes and have the operator remove them. {GC_HELP}",
    )
    p.add_argument("--host", required=True, help="the Host")
    p.add_argument("--dry-run", action="store_true", help="only show the orphans (from the Host's status)")
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=300.0,
        help="seconds to wait for the operator at most (default: %(default)s)",
    )
    add_common_options(p, namespaced=False)
    p.set_defaults(func=cmd_gc)
