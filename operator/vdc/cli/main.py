"""The `vdc` command (also installed as `kubectl-vdc`)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vdc.leader import ElectionConfig

DEFAULT_CRD_DIRS = [Path("crds"), Path("charts/vdc-operator/crds")]


def _election(args: argparse.Namespace) -> ElectionConfig | None:
    """The leader election ``vdc run`` was asked for (``--leader-elect``), validated."""
    if not args.leader_elect:
        return None
    from vdc.cli.context import CliError
    from vdc.leader import ElectionConfig, default_identity, default_namespace

    try:
        return ElectionConfig(
            lease_name=args.lease_name,
            lease_namespace=args.lease_namespace or default_namespace(),
            identity=default_identity(),
            lease_duration=args.lease_duration,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
        )
    except ValueError as exc:
        raise CliError(f"leader election: {exc}") from None


def _cmd_run(args: argparse.Namespace) -> int:
    from vdc.runtime import run

    election = _election(args)
    run(
        namespace=args.namespace,
        liveness=args.liveness,
        verbose=args.verbose,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        stats_interval=args.stats_interval,
        demand_half_life=args.demand_half_life,
        log_level="debug" if args.verbose else args.log_level,
        log_format=args.log_format,
        resync_seconds=args.resync_interval,
        work_dir=args.work_dir,
        election=election,
        appliance_trust_configmap=args.appliance_trust_configmap,
    )
    return 0


def _cmd_crds(args: argparse.Namespace) -> int:
    from vdc.cli import crds

    dirs = [Path(d) for d in args.dir] or DEFAULT_CRD_DIRS
    if args.check:
        problems = crds.differences(dirs)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `make crds` and commit the result", file=sys.stderr)
        return 1 if problems else 0
    for path in crds.write(dirs):
        print(path)
    return 0


HOOK_ROOT = Path("/etc/libvirt/hooks")
HOOKS = {
    # name: (module file in vdc.hooks, where it goes under the hook directory)
    "network": ("libvirt_network.py", "network.d/vdc-overlay"),
    "qemu": ("libvirt_qemu.py", "qemu.d/vdc-host-files"),
}


def _cmd_host_hook(args: argparse.Namespace) -> int:
    from importlib import resources

    names = list(HOOKS) if args.hook == "all" else [args.hook]
    if args.action == "print":
        if len(names) != 1:
            print("vdc host-hook print: name the hook (network or qemu)", file=sys.stderr)
            return 2
        sys.stdout.write(resources.files("vdc.hooks").joinpath(HOOKS[names[0]][0]).read_text())
        return 0
    for name in names:
        source, relative = HOOKS[name]
        target = Path(args.dir) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(resources.files("vdc.hooks").joinpath(source).read_text())
        target.chmod(0o755)
        print(f"{target} installed")
    print("restart libvirtd (it looks for hooks when it starts)")
    return 0


def whole_seconds(text: str) -> int:
    """argparse type: a whole number of seconds, at least 1 (a Lease's duration is an integer)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 second: {text!r}")
    return value


def namespaced_name(text: str) -> tuple[str, str]:
    """argparse type: ``namespace/name`` of a namespaced object."""
    namespace, _, name = text.partition("/")
    label = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    if not (re.fullmatch(label, namespace) and re.fullmatch(rf"{label}(\.{label})*", name)):
        raise argparse.ArgumentTypeError(f"not namespace/name: {text!r}")
    return namespace, name


def build_parser() -> argparse.ArgumentParser:
    from vdc.cli import console, drs, migrate, power, transfer, vmcommands
    from vdc.cli import gc as gc_command
    from vdc.cli.context import port, positive_seconds

    parser = argparse.ArgumentParser(
        prog="vdc",
        description="vdc-operator: a virtual datacenter on Kubernetes. Also a kubectl plugin: `kubectl vdc …`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    run.add_argument(
        "--liveness",
        default=None,
        help="kopf's own liveness endpoint URL, e.g. http://0.0.0.0:8081/healthz (default: none; "
        "/healthz is served on the metrics port)",
    )
    run.add_argument(
        "--metrics-port",
        type=port,
        default=8080,
        help="serve /metrics and /healthz on this port; 0 disables both and the VM stats refresh "
        "(default: %(default)s)",
    )
    run.add_argument("--metrics-address", default="0.0.0.0", help="address to serve metrics on (default: %(default)s)")
    run.add_argument(
        "--stats-interval",
        type=positive_seconds,
        default=15.0,
        help="seconds between VM stats refreshes (one getAllDomainStats per host; default: %(default)s)",
    )
    run.add_argument(
        "--demand-half-life",
        type=positive_seconds,
        default=60.0,
        help="half-life of the smoothing of measured CPU demand (DRS and the demand metrics), in seconds "
        "(default: %(default)s)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging (same as --log-level debug)")
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="log level (default: %(default)s)",
    )
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="log lines as text or one JSON object per line (default: %(default)s)",
    )
    run.add_argument(
        "--resync-interval",
        type=positive_seconds,
        default=120.0,
        help="seconds between the slow, jittered safety-net resyncs of every object (default: %(default)s)",
    )
    run.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where Appliance imports download and convert packages (default: $TMPDIR/vdc-appliances)",
    )
    run.add_argument(
        "--appliance-trust-configmap",
        type=namespaced_name,
        default=os.environ.get("VDC_APPLIANCE_TRUST_CONFIGMAP") or None,
        metavar="NAMESPACE/NAME",
        help="ConfigMap whose PEM values are the CA certificates trusted to sign every Appliance's package "
        "(cluster-wide; each Appliance may add its own with spec.trustBundle). Default: "
        "$VDC_APPLIANCE_TRUST_CONFIGMAP, else none",
    )
    elect = run.add_argument_group(
        "leader election",
        "Run several replicas: the one that holds a coordination.k8s.io Lease runs the operator, the others "
        "stand by (serving /metrics and /healthz) and take over when it stops renewing. A leader that cannot "
        "renew within the renew deadline exits (code 1). Identity: $POD_NAME, else hostname_pid.",
    )
    elect.add_argument(
        "--leader-elect", action="store_true", help="run only while holding the Lease (default: off; the chart: on)"
    )
    elect.add_argument("--lease-name", default="vdc-operator", help="the Lease's name (default: %(default)s)")
    elect.add_argument(
        "--lease-namespace", default=None, help="the Lease's namespace (default: $POD_NAMESPACE, else default)"
    )
    elect.add_argument(
        "--lease-duration",
        type=whole_seconds,
        default=15,
        help="seconds a standby waits for an unrenewed Lease before taking it (default: %(default)s)",
    )
    elect.add_argument(
        "--renew-deadline",
        type=positive_seconds,
        default=10.0,
        help="seconds the leader keeps trying to renew before it exits; less than --lease-duration "
        "(default: %(default)s)",
    )
    elect.add_argument(
        "--retry-period",
        type=positive_seconds,
        default=2.0,
        help="seconds between attempts to take or renew the Lease (default: %(default)s)",
    )
    run.set_defaults(func=_cmd_run)

    gen = sub.add_parser("crds", help="write the CRDs generated from the API models")
    gen.add_argument(
        "--dir",
        action="append",
        default=[],
        help="output directory (repeatable; default: crds/ and charts/vdc-operator/crds/)",
    )
    gen.add_argument("--check", action="store_true", help="only check the files are up to date")
    gen.set_defaults(func=_cmd_crds)

    hook = sub.add_parser(
        "host-hook",
        help="the libvirt hooks each host needs (overlay switches, host-file checks)",
        description="Print or install vdc's libvirt hooks: the network hook that makes overlay (VXLAN) switches' "
        "devices (network.d/vdc-overlay) and the qemu hook that refuses to start a VM whose kernel, initrd or "
        "dtb resolves (symlinks, ..) outside the Host's spec.hostFiles.allowedPaths (qemu.d/vdc-host-files). "
        "Run `vdc host-hook install` as root on every libvirt host (the hooks need python3, the network hook "
        "also iproute2), then restart libvirtd.",
    )
    hook.add_argument("action", choices=("print", "install"))
    hook.add_argument(
        "hook", nargs="?", default="all", choices=("all", *HOOKS), help="which hook (default: %(default)s)"
    )
    hook.add_argument("--dir", default=str(HOOK_ROOT), help="libvirt's hook directory (default: %(default)s)")
    hook.set_defaults(func=_cmd_host_hook)

    vmcommands.register(sub)
    console.register(sub)
    transfer.register(sub)
    gc_command.register(sub)
    migrate.register(sub)
    power.register(sub)
    drs.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import kubernetes
    import urllib3

    from vdc.cli.context import CliError, api_error

    try:
        result: int = args.func(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except kubernetes.client.ApiException as exc:
        print(f"error: {api_error(exc, 'the API server')}", file=sys.stderr)
        return 1
    except urllib3.exceptions.HTTPError as exc:
        print(f"error: cannot reach the API server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
