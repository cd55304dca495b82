"""``vdc start|stop|restart|addresses|hosts``: VM power through the spec (GitOps-friendly) and status views."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from vdc.api.virtualmachine import RESTART_ANNOTATION
from vdc.cli.context import FIELD_MANAGER, CliError, Kube, add_common_options, positive_seconds
from vdc.cli.format import format_addresses, format_hosts, rfc3339_now, vm_state_line, wait_outcome

POLL_SECONDS = 1.0
RUN_STRATEGY = {"start": "Always", "stop": "Halted"}

POWER_HELP = (
    "start and stop set spec.runStrategy (Always / Halted) by server-side apply with field manager "
    f"'{FIELD_MANAGER}' (conflicts forced): the change is visible in managedFields, and a GitOps tool that "
    "applies the VM from Git takes the field back at its next sync (change it in Git to make it stick). "
    f"restart sets the annotation {RESTART_ANNOTATION}=<now, RFC 3339>; the operator restarts the guest "
    "once if it has not booted since (graceful shutdown, forced off after terminationGracePeriodSeconds, "
    "then started). The spec is not changed by restart."
)


def wait_for(kube: Kube, name: str, action: str, timeout: float, requested_at: str | None = None) -> dict[str, Any]:
    """Poll the VM until ``action`` took effect, printing each new state on stderr."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        vm = kube.vm(name)
        line = vm_state_line(vm)
        if line != last:
            print(f"{kube.namespace}/{name}: {line}", file=sys.stderr)
            last = line
        outcome = wait_outcome(action, vm, requested_at)
        if outcome == "done":
            return vm
        if outcome is not None:
            raise CliError(f"vm {kube.namespace}/{name} {outcome}")
        if time.monotonic() >= deadline:
            raise CliError(f"timed out after {timeout:g}s waiting for vm {kube.namespace}/{name} to {action}: {line}")
        time.sleep(POLL_SECONDS)


def cmd_power(args: argparse.Namespace) -> int:
    kube = Kube.from_args(args)
    action: str = args.command
    vm = kube.vm(args.vm)  # a clear "not found" before any patch
    requested_at = None
    if action in RUN_STRATEGY:
        kube.apply_vm(args.vm, {"spec": {"runStrategy": RUN_STRATEGY[action]}})
        print(f"vm {kube.namespace}/{args.vm}: runStrategy {RUN_STRATEGY[action]}")
    else:
        status = vm.get("status") or {}
        strategy = (vm.get("spec") or {}).get("runStrategy", "Always")
        if strategy == "Halted" or status.get("phase") not in ("Running", "Starting", "Stopping"):
            raise CliError(
                f"vm {kube.namespace}/{args.vm} is not running (phase {status.get('phase') or 'unknown'}, "
                f"runStrategy {strategy}); use `vdc start {args.vm}`"
            )
        requested_at = rfc3339_now()
        kube.apply_vm(args.vm, {"metadata": {"annotations": {RESTART_ANNOTATION: requested_at}}})
        print(f"vm {kube.namespace}/{args.vm}: restart requested at {requested_at}")
    if args.wait:
        wait_for(kube, args.vm, action, args.timeout, requested_at)
        print(f"vm {kube.namespace}/{args.vm}: {'stopped' if action == 'stop' else 'running'}")
    return 0


def cmd_addresses(args: argparse.Namespace) -> int:
    kube = Kube.from_args(args)
    sys.stdout.write(format_addresses(kube.vm(args.vm), args.output))
    return 0


def cmd_hosts(args: argparse.Namespace) -> int:
    kube = Kube.from_args(args)
    sys.stdout.write(format_hosts(kube.hosts(), args.output))
    return 0


def register(sub: Any) -> None:
    for action, what in (
        ("start", "start a VM (spec.runStrategy: Always)"),
        ("stop", "stop a VM (spec.runStrategy: Halted)"),
        ("restart", "restart a running VM (annotation; graceful)"),
    ):
        p = sub.add_parser(action, help=what, description=f"{what[0].upper()}{what[1:]}. {POWER_HELP}")
        p.add_argument("vm", help="VirtualMachine name")
        add_common_options(p)
        p.add_argument("--wait", action="store_true", help="wait until it took effect, showing progress on stderr")
        p.add_argument(
            "--timeout",
            type=positive_seconds,
            default=300.0,
            help="seconds --wait waits at most (default: %(default)s)",
        )
        p.set_defaults(func=cmd_power)

    p = sub.add_parser(
        "addresses",
        help="a VM's NICs: MAC, switch, host device and IPs (from status)",
        description="Show each NIC of a VM from its status: MAC, switch, IP addresses (the switch IPAM's "
        "first, then any the guest leased), and with -o wide the host and the host-side device.",
    )
    p.add_argument("vm", help="VirtualMachine name")
    add_common_options(p)
    p.add_argument("-o", "--output", choices=("wide", "json", "yaml"), default=None, help="output format")
    p.set_defaults(func=cmd_addresses)

    p = sub.add_parser(
        "hosts",
        help="capacity table of the Hosts (from status)",
        description="Each Host: Ready, phase, CPUs and memory allocated to VMs against what is allocatable "
        "(capacity less reservations, times overcommit), and running/managed VMs.",
    )
    add_common_options(p, namespaced=False)
    p.add_argument("-o", "--output", choices=("wide", "json", "yaml"), default=None, help="output format")
    p.set_defaults(func=cmd_hosts)
