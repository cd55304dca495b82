"""``vdc power HOST [status|on|off|restart|shutdown]``: a Host's power through its Redfish service (its
``spec.powerManagement``), by the operator: this sets the annotation ``vdc.dev/power-action``, waits until
the operator has sent the reset and removed it, and prints the result and the power state."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

import kubernetes

from vdc.api.host import POWER_ACTION_ANNOTATION, Host
from vdc.api.meta import GROUP, VERSION
from vdc.cli.context import CliError, Kube, add_common_options, api_error, positive_seconds

POLL_SECONDS = 0.5

ACTIONS = {"on": "On", "off": "ForceOff", "restart": "ForceRestart", "shutdown": "GracefulShutdown"}
"""The command's words -> the Redfish ResetType sent."""


def describe(host: Mapping[str, Any]) -> str:
    """The Host's power and HA state as a few lines (from its status)."""
    name = host["metadata"]["name"]
    if not ((host.get("spec") or {}).get("powerManagement")):
        return f"host {name}: no spec.powerManagement (no Redfish service to ask)\n"
    status = host.get("status") or {}
    power = status.get("power") or {}
    lines = [f"host {name}: power {power.get('state') or 'unknown'}"
             + (f" ({power['error']})" if power.get("error") else "")]  # fmt: skip
    last = power.get("lastAction")
    if last:
        lines.append(f"last reset: {last.get('action')} by {last.get('reason')} at {last.get('time')}: "
                     f"{last.get('result')} ({last.get('message', '')})")  # fmt: skip
    ha = status.get("ha")
    if ha:
        lines.append(f"health: {ha.get('state')} since {ha.get('since')}: {ha.get('message', '')}")
    return "\n".join(lines) + "\n"


def pending(host: Mapping[str, Any]) -> str | None:
    """The reset still waiting for the operator (the annotation it removes once it has sent it)."""
    return ((host.get("metadata") or {}).get("annotations") or {}).get(POWER_ACTION_ANNOTATION)


def cmd_power(args: argparse.Namespace) -> int:
    kube = Kube.from_args(args)
    host = kube.host(args.host)
    if args.action == "status":
        sys.stdout.write(describe(host))
        return 0
    if not (host.get("spec") or {}).get("powerManagement"):
        raise CliError(f"host {args.host} has no spec.powerManagement: give it its Redfish service first")
    reset = ACTIONS[args.action]
    patch = {"metadata": {"annotations": {POWER_ACTION_ANNOTATION: reset}}}
    try:
        kube.custom.patch_cluster_custom_object(GROUP, VERSION, Host.KIND.plural, args.host, patch)
    except kubernetes.client.ApiException as exc:
        raise api_error(exc, f"host {args.host}") from exc
    print(f"host {args.host}: {POWER_ACTION_ANNOTATION}={reset} set; waiting for the operator", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    while pending(host := kube.host(args.host)) is not None:
        if time.monotonic() >= deadline:
            raise CliError(f"timed out after {args.timeout:g}s: the operator has not sent {reset} yet (the "
                           "annotation stays set and it sends it when it can)")  # fmt: skip
        time.sleep(POLL_SECONDS)
    sys.stdout.write(describe(host))
    last = ((host.get("status") or {}).get("power") or {}).get("lastAction") or {}
    return 0 if last.get("action") == reset and last.get("result") == "Succeeded" else 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "power",
        help="a Host's power (Redfish, through the operator): status, on, off, restart, shutdown",
        description="Show a Host's power and HA state, or have the operator send a Redfish reset to its "
        "spec.powerManagement service: on (On), off (ForceOff: as pulling the plug), restart "
        f"(ForceRestart), shutdown (GracefulShutdown). Sets the annotation {POWER_ACTION_ANNOTATION}, waits "
        "until the operator has sent it, and prints the result (status.power.lastAction). Exit status 1 "
        "when the service refused it. Powering a host off with running VMs is a host failure: HA restarts "
        "them elsewhere when its ComputeCluster says so.",
    )
    p.add_argument("host", help="the Host")
    p.add_argument("action", nargs="?", default="status", choices=["status", *ACTIONS])
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=120.0,
        help="seconds to wait for the operator at most (default: %(default)s)",
    )
    add_common_options(p, namespaced=False)
    p.set_defaults(func=cmd_power)
