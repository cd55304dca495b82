"""``vdc migrate VM [--to HOST] [--wait]``, ``vdc migrate --cancel VM`` and ``vdc migrations``: live
migration through VirtualMachineMigration objects (the operator does the work; the CLI creates, follows,
deletes and lists them). The pure parts (names, which migrations run, progress lines, exit codes, the
table) come first; the commands that talk to the API server after them."""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import kubernetes
import yaml

from vdc.api.meta import GROUP, VERSION
from vdc.api.migration import VirtualMachineMigration
from vdc.api.quantity import to_bytes
from vdc.cli.context import FIELD_MANAGER, CliError, Kube, add_common_options, api_error, positive_seconds
from vdc.cli.format import human_bytes, table
from vdc.operations.plan import CANCELLED, FAILED, SUCCEEDED, TERMINAL

PLURAL = VirtualMachineMigration.KIND.plural
KIND = VirtualMachineMigration.KIND.kind
POLL_SECONDS = 1.0
DEFAULT_TIMEOUT = 1800.0

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4

SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""The characters Kubernetes' generateName uses (no vowels: no words; no 0/1/3: no look-alikes)."""
SUFFIX_LENGTH = 5
MAX_NAME = 63
BAR_WIDTH = 20

MIGRATE_HELP = (
    "Live-migrate a running VM to another host: this creates a VirtualMachineMigration (spec.vm, and "
    "spec.targetHost with --to; without --to the operator's scheduler picks a host, never the one the VM runs "
    "on) named <vm>-<random suffix> unless --name says otherwise, and prints its name. With --wait it follows "
    "the migration to its end: on a terminal, one progress line updated in place (phase, percent copied, "
    "source → target), otherwise one line per phase change, on stderr. Ctrl-C stops waiting, not the "
    "migration. --cancel deletes the VM's running migrations (those not yet Succeeded, Failed or Cancelled), "
    "or the one --name names: the operator aborts the libvirt job and undoes what the migration did, and the "
    "VM stays on its source (a migration whose guest already runs on the target completes instead). With "
    "--wait, --cancel waits until they are gone."
)
EXIT_HELP = (
    f"exit status: {EXIT_SUCCEEDED} the migration Succeeded (with --cancel: cancelled); {EXIT_FAILED} it Failed, "
    f"or any other error; {EXIT_CANCELLED} it was Cancelled (deleted) while --wait followed it; {EXIT_TIMEOUT} "
    "--timeout passed first (the migration goes on)."
)


# --- pure ----------------------------------------------------------------------------------------


def random_suffix(choose: Callable[[str], str] = secrets.choice) -> str:
    return "".join(choose(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))


def migration_name(vm: str, suffix: str) -> str:
    """``<vm>-<suffix>``, the VM's name shortened so that the whole stays a DNS label (63 characters)."""
    base = vm[: MAX_NAME - len(suffix) - 1].rstrip("-.")
    return f"{base}-{suffix}"


def dns_label(text: str) -> str:
    """argparse type: a DNS-1123 label (the names of VMs, Hosts and migrations)."""
    if len(text) > MAX_NAME or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", text):
        raise argparse.ArgumentTypeError(f"not a name (lower-case letters, digits and '-', at most 63): {text!r}")
    return text


def object_name(text: str) -> str:
    """argparse type: a Kubernetes object name (a DNS-1123 subdomain)."""
    label = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    if len(text) > 253 or not re.fullmatch(rf"{label}(\.{label})*", text):
        raise argparse.ArgumentTypeError(f"not an object name: {text!r}")
    return text


def migration_manifest(namespace: str, name: str, vm: str, target_host: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"vm": vm}
    if target_host:
        spec["targetHost"] = target_host
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def phase_of(migration: Mapping[str, Any]) -> str:
    return str((migration.get("status") or {}).get("phase") or "Pending")


def is_terminal(migration: Mapping[str, Any]) -> bool:
    return phase_of(migration) in TERMINAL


def _created(migration: Mapping[str, Any]) -> tuple[str, str]:
    meta = migration.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def running_migrations(migrations: Iterable[Mapping[str, Any]], vm: str) -> list[Mapping[str, Any]]:
    """The migrations of ``vm`` that have not ended (including those being deleted), oldest first."""
    found = [m for m in migrations if (m.get("spec") or {}).get("vm") == vm and not is_terminal(m)]
    return sorted(found, key=_created)


def exit_code(phase: str | None) -> int | None:
    """The exit status for a migration that ended in ``phase``; None while it has not ended."""
    return {SUCCEEDED: EXIT_SUCCEEDED, FAILED: EXIT_FAILED, CANCELLED: EXIT_CANCELLED}.get(phase or "")


def _bytes(quantity: object) -> int | None:
    if quantity is None:
        return None
    try:
        return to_bytes(str(quantity))
    except (ValueError, ArithmeticError):
        return None


def _data(label: str, data: Mapping[str, Any] | None) -> str | None:
    """``mem 1.2 GiB/2.0 GiB`` (processed/total) when the status reports it."""
    data = data or {}
    processed, total = _bytes(data.get("processed")), _bytes(data.get("total"))
    if processed is None or not total:
        return None
    return f"{label} {human_bytes(processed)}/{human_bytes(total)}"


def _route(status: Mapping[str, Any]) -> str:
    return f"{status.get('source') or '?'} → {status.get('target') or '?'}"


def percent_of(migration: Mapping[str, Any]) -> int | None:
    """The percent copied as status reports it (100 once Succeeded), clamped to 0..100."""
    status = migration.get("status") or {}
    if status.get("phase") == SUCCEEDED:
        return 100
    percent = (status.get("progress") or {}).get("percent")
    if not isinstance(percent, int | float) or isinstance(percent, bool):
        return None
    return max(0, min(100, int(percent)))


def progress_bar(migration: Mapping[str, Any], width: int) -> str:
    """The single line a terminal shows while --wait follows a migration, at most ``width - 1`` characters
    (the last column would wrap on some terminals, and the line is redrawn with a carriage return)::

        web-x7k2q  Migrating        [########------------]  42%  host-1 → host-2  mem 1.2 GiB/2.0 GiB  <message>
    """
    status = migration.get("status") or {}
    progress = status.get("progress") or {}
    percent = percent_of(migration)
    filled = 0 if percent is None else percent * BAR_WIDTH // 100
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    shown = "  -%" if percent is None else f"{percent:3d}%"
    parts = [
        str((migration.get("metadata") or {}).get("name") or "?"),
        f"{phase_of(migration):<15}",
        f"[{bar}] {shown}",
        _route(status),
    ]
    parts += [p for p in (_data("mem", progress.get("memory")), _data("disk", progress.get("disks"))) if p]
    message = " ".join(str(status.get("message") or "").split())  # one line, whatever the message holds
    if message:
        parts.append(message)
    line = "  ".join(parts)
    limit = max(width - 1, 1)
    return line if len(line) <= limit else line[: max(limit - 1, 0)] + "…"


def phase_line(migration: Mapping[str, Any]) -> str:
    """One line per phase for logs: ``migration team-a/web-x7k2q: Migrating host-1 → host-2 (42%): …``."""
    meta, status = migration.get("metadata") or {}, migration.get("status") or {}
    line = f"migration {meta.get('namespace')}/{meta.get('name')}: {phase_of(migration)} {_route(status)}"
    percent = percent_of(migration)
    if percent is not None and phase_of(migration) not in (SUCCEEDED, FAILED, CANCELLED):
        line += f" ({percent}%)"
    return f"{line}: {status['message']}" if status.get("message") else line


def outcome(migration: Mapping[str, Any]) -> tuple[int, str] | None:
    """(exit status, one line) once the migration ended, else None. A failure names status.message and
    libvirt's error (when the message does not already carry it) and where the VM runs."""
    code = exit_code(phase_of(migration))
    if code is None:
        return None
    meta, spec, status = migration.get("metadata") or {}, migration.get("spec") or {}, migration.get("status") or {}
    what = f"migration {meta.get('namespace')}/{meta.get('name')}"
    if code == EXIT_SUCCEEDED:
        line = f"{what} Succeeded: vm {spec.get('vm')} moved {_route(status)}"
        downtime = (status.get("progress") or {}).get("downtimeMilliseconds")
        return code, f"{line} (downtime {downtime} ms)" if downtime is not None else line
    line = f"{what} {phase_of(migration)}"
    message, libvirt_error = status.get("message"), status.get("libvirtError")
    if message:
        line += f": {message}"
    if libvirt_error and libvirt_error not in (message or ""):
        line += f" (libvirt: {libvirt_error})"
    if status.get("source"):
        line += f"; vm {spec.get('vm')} stays on {status['source']}"
    return code, line


def age(created: str | None, now: datetime) -> str:
    """kubectl's age: ``45s``, ``12m``, ``5h``, ``3d``."""
    if not created:
        return ""
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


MIGRATION_HEADERS = ("name", "vm", "phase", "progress", "source", "target", "age")


def migration_row(migration: Mapping[str, Any], now: datetime, *, wide: bool = False) -> list[object]:
    meta, spec, status = migration.get("metadata") or {}, migration.get("spec") or {}, migration.get("status") or {}
    percent = percent_of(migration)
    row: list[object] = [
        meta.get("name"),
        spec.get("vm"),
        phase_of(migration) + (" (deleting)" if meta.get("deletionTimestamp") and not is_terminal(migration) else ""),
        None if percent is None else f"{percent}%",
        status.get("source"),
        status.get("target") or spec.get("targetHost"),
        age(meta.get("creationTimestamp"), now),
    ]
    if wide:
        row.append(status.get("message"))
    return row


def format_migrations(
    migrations: Sequence[Mapping[str, Any]], output: str | None, now: datetime, *, all_namespaces: bool = False
) -> str:
    """The migrations, oldest first: a table (``wide`` adds the message), or the objects as json/yaml."""
    ordered = sorted(migrations, key=_created)
    if output == "json":
        return json.dumps(list(ordered), indent=2) + "\n"
    if output == "yaml":
        return str(yaml.safe_dump(list(ordered), sort_keys=False))
    if not ordered:
        return "no migrations\n"
    headers: tuple[str, ...] = MIGRATION_HEADERS + (("message",) if output == "wide" else ())
    rows = [migration_row(m, now, wide=output == "wide") for m in ordered]
    if all_namespaces:
        headers = ("namespace", *headers)
        rows = [[(m.get("metadata") or {}).get("namespace"), *r] for m, r in zip(ordered, rows, strict=True)]
    return table(headers, rows)


# --- following a migration -----------------------------------------------------------------------


@dataclass
class Display:
    """Where progress goes: a terminal gets one line redrawn in place, anything else a line per phase."""

    out: TextIO
    tty: bool
    width: Callable[[], int] = lambda: shutil.get_terminal_size().columns
    _line: str = ""
    _drawn: bool = False
    _phases: dict[str, str] = field(default_factory=dict)

    def show(self, migration: Mapping[str, Any]) -> None:
        if self.tty:
            line = progress_bar(migration, self.width())
            if line != self._line:
                self.out.write(f"\r{line}\x1b[K")
                self.out.flush()
                self._line, self._drawn = line, True
            return
        name, phase = str((migration.get("metadata") or {}).get("name")), phase_of(migration)
        if self._phases.get(name) != phase:
            self.out.write(phase_line(migration) + "\n")
            self.out.flush()
            self._phases[name] = phase

    def end(self) -> None:
        """Leave the redrawn line as it is and go to the next one."""
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False


def follow(
    read: Callable[[], Mapping[str, Any] | None],
    display: Display,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, str]:
    """Read the migration until it ends (or is gone, or ``timeout`` passes), showing each state; the exit
    status and the line to end with."""
    deadline = clock() + timeout
    last: Mapping[str, Any] | None = None
    try:
        while True:
            body = read()
            if body is None:
                what = "the migration" if last is None else f"migration {last['metadata'].get('name')}"
                seen = f" (last seen {phase_of(last)})" if last is not None else ""
                return EXIT_CANCELLED, f"{what} was deleted before it ended{seen}"
            display.show(body)
            last = body
            ended = outcome(body)
            if ended is not None:
                return ended
            if clock() >= deadline:
                meta = body.get("metadata") or {}
                percent = percent_of(body)
                at = f" ({percent}%)" if percent is not None else ""
                return EXIT_TIMEOUT, (
                    f"timed out after {timeout:g}s: migration {meta.get('namespace')}/{meta.get('name')} is "
                    f"{phase_of(body)}{at} and goes on; cancel it with "
                    f"`vdc migrate --cancel --name {meta.get('name')} -n {meta.get('namespace')}`"
                )
            sleep(POLL_SECONDS)
    finally:
        display.end()


def wait_gone(
    read: Callable[[str], Mapping[str, Any] | None],
    names: Sequence[str],
    display: Display,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Mapping[str, Any] | None], list[str]]:
    """Read each deleted migration until it is gone: the last state seen of each (None: never seen), and
    those still there when ``timeout`` passed."""
    deadline = clock() + timeout
    last: dict[str, Mapping[str, Any] | None] = dict.fromkeys(names)
    pending = list(names)
    try:
        while True:
            for name in list(pending):
                body = read(name)
                if body is None:
                    pending.remove(name)
                    continue
                display.show(body)
                last[name] = body
            if not pending or clock() >= deadline:
                return last, pending
            sleep(POLL_SECONDS)
    finally:
        display.end()


def cancel_report(namespace: str, name: str, last: Mapping[str, Any] | None) -> tuple[int, str]:
    """What a cancelled migration that is gone ended as: it may have succeeded before the cancel arrived."""
    what = f"migration {namespace}/{name}"
    status = (last or {}).get("status") or {}
    vm = ((last or {}).get("spec") or {}).get("vm")
    if status.get("phase") == SUCCEEDED:
        return EXIT_FAILED, f"{what} could not be cancelled: it had Succeeded; vm {vm} runs on {status.get('target')}"
    where = f": vm {vm} stays on {status['source']}" if status.get("source") else ""
    return EXIT_SUCCEEDED, f"{what} cancelled{where}"


# --- the API server ------------------------------------------------------------------------------


def _mapping(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise CliError(f"unexpected answer from the API server: {type(body).__name__}")
    return body


def _what(namespace: str, name: str) -> str:
    return f"virtualmachinemigration {namespace}/{name}"


def read_migration(kube: Kube, name: str) -> dict[str, Any] | None:
    try:
        body = kube.custom.get_namespaced_custom_object(GROUP, VERSION, kube.namespace, PLURAL, name)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise api_error(exc, _what(kube.namespace, name)) from exc
    return _mapping(body)


def list_migrations(kube: Kube, *, all_namespaces: bool = False) -> list[dict[str, Any]]:
    try:
        if all_namespaces:
            body = kube.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            body = kube.custom.list_namespaced_custom_object(GROUP, VERSION, kube.namespace, PLURAL)
    except kubernetes.client.ApiException as exc:
        raise api_error(exc, "virtualmachinemigrations") from exc
    return [_mapping(item) for item in _mapping(body).get("items") or []]


def create_migration(kube: Kube, vm: str, target: str | None, name: str | None) -> dict[str, Any]:
    """Create the migration; a generated name that is taken is generated again (a given one is an error)."""
    for _ in range(3 if name is None else 1):
        chosen = name or migration_name(vm, random_suffix())
        body = migration_manifest(kube.namespace, chosen, vm, target)
        try:
            created = kube.custom.create_namespaced_custom_object(
                GROUP, VERSION, kube.namespace, PLURAL, body, field_manager=FIELD_MANAGER
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 409 and name is None:
                continue
            if exc.status == 409:
                raise CliError(f"{_what(kube.namespace, chosen)} already exists") from exc
            raise api_error(exc, _what(kube.namespace, chosen)) from exc
        return _mapping(created)
    raise CliError(f"could not find a free name for a migration of vm {kube.namespace}/{vm}")


def delete_migration(kube: Kube, body: Mapping[str, Any]) -> None:
    """Delete (cancel) this very migration (uid precondition); one already gone is fine."""
    meta = body["metadata"]
    try:
        kube.custom.delete_namespaced_custom_object(
            GROUP, VERSION, kube.namespace, PLURAL, meta["name"],
            body=kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(uid=meta["uid"])),
        )  # fmt: skip
    except kubernetes.client.ApiException as exc:
        if exc.status in (404, 409):  # gone, or gone and made again under the same name: not ours to delete
            return
        raise api_error(exc, _what(kube.namespace, str(meta["name"]))) from exc


def _display() -> Display:
    return Display(sys.stderr, tty=sys.stderr.isatty())


def _finish(code: int, line: str) -> int:
    print(line, file=sys.stdout if code == EXIT_SUCCEEDED else sys.stderr)
    return code


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.cancel:
        return cmd_cancel(args)
    if args.vm is None:
        args.parser.error("name the VM to migrate")
    kube = Kube.from_args(args)
    kube.vm(args.vm)  # a clear "not found" before anything is created
    running = running_migrations(list_migrations(kube), args.vm)
    if running:
        names = ", ".join(f"{m['metadata']['name']} ({phase_of(m)})" for m in running)
        raise CliError(
            f"vm {kube.namespace}/{args.vm} is already being migrated: {names}; wait for it, or cancel it with "
            f"`vdc migrate --cancel {args.vm} -n {kube.namespace}`"
        )
    created = create_migration(kube, args.vm, args.to, args.name)
    name = str(created["metadata"]["name"])
    print(name)
    if not args.wait:
        return 0
    code, line = follow(lambda: read_migration(kube, name), _display(), args.timeout)
    if code != EXIT_SUCCEEDED:
        line = f"error: {line}"
    return _finish(code, line)


def cmd_cancel(args: argparse.Namespace) -> int:
    if args.to:
        args.parser.error("--to does not go with --cancel")
    if args.vm is None and args.name is None:
        args.parser.error("--cancel needs the VM, or --name MIGRATION")
    kube = Kube.from_args(args)
    if args.name is not None:
        body = read_migration(kube, args.name)
        if body is None:
            raise CliError(f"{_what(kube.namespace, args.name)} not found")
        vm = (body.get("spec") or {}).get("vm")
        if args.vm is not None and vm != args.vm:
            raise CliError(f"{_what(kube.namespace, args.name)} migrates vm {vm}, not {args.vm}")
        if is_terminal(body):
            raise CliError(f"{_what(kube.namespace, args.name)} has ended ({phase_of(body)}): nothing to cancel")
        targets: list[Mapping[str, Any]] = [body]
    else:
        kube.vm(args.vm)  # "not found" rather than "nothing to cancel" for a misspelt VM
        targets = running_migrations(list_migrations(kube), args.vm)
        if not targets:
            raise CliError(f"vm {kube.namespace}/{args.vm} has no running migration: nothing to cancel")
    for target in targets:
        delete_migration(kube, target)
        print(f"migration {kube.namespace}/{target['metadata']['name']}: cancelling ({phase_of(target)})")
    if not args.wait:
        return 0
    names = [str(b["metadata"]["name"]) for b in targets]
    before = {str(b["metadata"]["name"]): b for b in targets}
    last, pending = wait_gone(lambda n: read_migration(kube, n), names, _display(), args.timeout)
    code = EXIT_SUCCEEDED
    for name in names:
        if name in pending:
            continue
        result, line = cancel_report(kube.namespace, name, last[name] or before[name])
        code = max(code, result)
        if result == EXIT_SUCCEEDED:
            print(line)
        else:
            print(f"error: {line}", file=sys.stderr)
    if pending:
        print(
            f"error: timed out after {args.timeout:g}s: still cancelling {', '.join(pending)} (the operator goes on)",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    return code


def cmd_migrations(args: argparse.Namespace) -> int:
    kube = Kube.from_args(args)
    items = list_migrations(kube, all_namespaces=args.all_namespaces)
    if args.vm:
        items = [m for m in items if (m.get("spec") or {}).get("vm") == args.vm]
    sys.stdout.write(format_migrations(items, args.output, datetime.now(UTC), all_namespaces=args.all_namespaces))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "migrate",
        help="live-migrate a VM to another host (or cancel its migration)",
        description=MIGRATE_HELP,
        epilog=EXIT_HELP,
    )
    p.add_argument(
        "vm", nargs="?", type=dns_label, metavar="VM", help="VirtualMachine name (optional with --cancel --name)"
    )
    p.add_argument("--to", type=dns_label, metavar="HOST", help="the Host to move it to (default: the scheduler picks)")
    p.add_argument(
        "--name",
        type=object_name,
        metavar="MIGRATION",
        help="the VirtualMachineMigration's name (default: <vm>-<random suffix>); with --cancel, the one to cancel",
    )
    p.add_argument("--cancel", action="store_true", help="cancel (delete) the VM's running migrations instead")
    p.add_argument(
        "--wait", action="store_true", help="follow it until it ends (with --cancel: until it is gone), on stderr"
    )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="seconds --wait waits at most (default: %(default)g)",
    )
    add_common_options(p)
    p.set_defaults(func=cmd_migrate, parser=p)

    p = sub.add_parser(
        "migrations",
        help="list VirtualMachineMigrations: VM, phase, progress, source and target",
        description="The VirtualMachineMigrations of a namespace (or all, -A), oldest first: the VM, the phase "
        "(Pending, Scheduling, PreparingTarget, Migrating, then Succeeded, Failed or Cancelled), percent copied, "
        "source and target host; -o wide adds the message.",
    )
    add_common_options(p)
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("--vm", type=dns_label, default=None, help="only this VM's migrations")
    p.add_argument("-o", "--output", choices=("wide", "json", "yaml"), default=None, help="output format")
    p.set_defaults(func=cmd_migrations)
