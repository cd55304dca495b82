"""The `vdc` command (also installed as `kubectl-vdc`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_CRD_DIRS = [Path("crds"), Path("charts/vdc-operator/crds")]


def _cmd_run(args: argparse.Namespace) -> int:
    from vdc.runtime import run

    run(
        namespace=args.namespace,
        liveness=args.liveness,
        verbose=args.verbose,
        log_level="debug" if args.verbose else args.log_level,
        log_format=args.log_format,
        resync_seconds=args.resync_interval,
    )
    return 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vdc", description="vdc-operator: a virtual datacenter on Kubernetes.")
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
        default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint URL (default: %(default)s)",
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
        type=_positive_seconds,
        default=120.0,
        help="seconds between the slow, jittered safety-net resyncs of every object (default: %(default)s)",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
