"""`vdc migrate` and `vdc migrations` without a cluster: parsing, names, which migrations of a VM run,
progress lines, outcomes and exit codes, following and cancelling against a fake API server."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import kubernetes
import pytest
import yaml

from vdc.api.migration import VirtualMachineMigration
from vdc.cli import migrate
from vdc.cli.context import Kube
from vdc.cli.main import build_parser, main
from vdc.cli.migrate import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    EXIT_TIMEOUT,
    SUFFIX_ALPHABET,
    Display,
    cancel_report,
    exit_code,
    follow,
    format_migrations,
    migration_manifest,
    migration_name,
    outcome,
    phase_line,
    progress_bar,
    random_suffix,
    running_migrations,
    wait_gone,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def mig(
    name: str,
    vm: str = "web",
    phase: str | None = None,
    *,
    created: str = "2025-03-01T11:00:00Z",
    deleting: bool = False,
    namespace: str = "team-a",
    **status: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2025-03-01T11:59:00Z"
    body: dict[str, Any] = {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualMachineMigration", "metadata": meta,
                            "spec": {"vm": vm}}  # fmt: skip
    if phase is not None or status:
        body["status"] = {"phase": phase, **status} if phase is not None else dict(status)
    return body


# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["migrate", "web"], {"vm": "web", "to": None, "name": None, "cancel": False, "wait": False,
                              "timeout": 1800.0, "namespace": None}),
        (["migrate", "web", "--to", "host-2", "--wait", "--timeout", "60", "-n", "team-a"],
         {"to": "host-2", "wait": True, "timeout": 60.0, "namespace": "team-a"}),
        (["migrate", "web", "--name", "move-web"], {"name": "move-web"}),
        (["migrate", "--cancel", "web", "--wait"], {"vm": "web", "cancel": True, "wait": True}),
        (["migrate", "--cancel", "--name", "web-x7k2q"], {"vm": None, "cancel": True, "name": "web-x7k2q"}),
        (["migrations"], {"all_namespaces": False, "vm": None, "output": None}),
        (["migrations", "-A", "--vm", "web", "-o", "wide"], {"all_namespaces": True, "vm": "web", "output": "wide"}),
    ],
)  # fmt: skip
def test_arguments_parse(argv: list[str], expected: dict[str, Any]) -> None:
    args = build_parser().parse_args(argv)
    assert {k: getattr(args, k) for k in expected} == expected
    assert callable(args.func)


@pytest.mark.parametrize(
    "argv",
    [
        ["migrate", "Web"],  # not a DNS label
        ["migrate", "web", "--to", "host_2"],
        ["migrate", "web", "--timeout", "0"],
        ["migrate", "web", "--name", "-x"],
        ["migrations", "-o", "table"],
    ],
)
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["migrate"], "name the VM to migrate"),
        (["migrate", "--cancel"], "--cancel needs the VM, or --name MIGRATION"),
        (["migrate", "--cancel", "web", "--to", "h2"], "--to does not go with --cancel"),
    ],
)
def test_incomplete_commands_are_usage_errors_before_any_cluster_call(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--kubeconfig", "/nonexistent"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["migrate", "migrations"])
def test_help(command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--kubeconfig" in out and "--context" in out and "--namespace" in out
    if command == "migrate":
        assert "exit status: 0 the migration Succeeded" in out and "4 --timeout passed first" in out


# --- names and the object -------------------------------------------------------------------------


def test_names_are_the_vm_and_a_random_suffix_within_a_dns_label() -> None:
    assert migration_name("web", "x7k2q") == "web-x7k2q"
    long = migration_name("a" * 60 + "-b", "x7k2q")
    assert len(long) == 63 and long == "a" * 57 + "-x7k2q"
    assert migration_name("a" * 56 + "-bcd", "x7k2q") == "a" * 56 + "-x7k2q"  # no "--"
    suffix = random_suffix()
    assert len(suffix) == 5 and set(suffix) <= set(SUFFIX_ALPHABET)
    assert random_suffix(lambda alphabet: alphabet[0]) == "bbbbb"
    assert len({random_suffix() for _ in range(50)}) > 45


def test_the_manifest_is_what_the_model_takes() -> None:
    body = migration_manifest("team-a", "web-x7k2q", "web", "host-2")
    assert body == {
        "apiVersion": "vdc.dev/v1alpha1",
        "kind": "VirtualMachineMigration",
        "metadata": {"name": "web-x7k2q", "namespace": "team-a"},
        "spec": {"vm": "web", "targetHost": "host-2"},
    }
    assert VirtualMachineMigration.model_validate(body).spec.target_host == "host-2"
    assert migration_manifest("team-a", "m", "web")["spec"] == {"vm": "web"}
    assert migrate.PLURAL == "virtualmachinemigrations"


# --- which migrations run -------------------------------------------------------------------------


def test_running_migrations_of_a_vm_are_the_unended_ones_oldest_first() -> None:
    items = [
        mig("web-new", phase="Migrating", created="2025-03-01T11:30:00Z"),
        mig("web-done", phase="Succeeded", created="2025-03-01T10:00:00Z"),
        mig("web-failed", phase="Failed"),
        mig("web-cancelled", phase="Cancelled", deleting=True),
        mig("web-fresh", created="2025-03-01T11:45:00Z"),  # no status yet: Pending
        mig("web-old", phase="Scheduling", created="2025-03-01T09:00:00Z", deleting=True),  # being cancelled
        mig("db-1", vm="db", phase="Migrating"),
        mig("webserver-1", vm="webserver", phase="Migrating"),
    ]
    assert [m["metadata"]["name"] for m in running_migrations(items, "web")] == ["web-old", "web-new", "web-fresh"]
    assert [m["metadata"]["name"] for m in running_migrations(items, "db")] == ["db-1"]
    assert running_migrations(items, "mail") == []


def test_exit_codes() -> None:
    assert exit_code("Succeeded") == EXIT_SUCCEEDED == 0
    assert exit_code("Failed") == EXIT_FAILED == 1
    assert exit_code("Cancelled") == EXIT_CANCELLED
    assert len({EXIT_SUCCEEDED, EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT, 2}) == 5  # 2: argparse's usage errors
    for phase in ("Pending", "Scheduling", "PreparingTarget", "Migrating", None, ""):
        assert exit_code(phase) is None


# --- progress lines -------------------------------------------------------------------------------

MIGRATING = mig(
    "web-x7k2q", phase="Migrating", source="host-1", target="host-2", message="copying memory",
    progress={"percent": 42, "memory": {"processed": "860Mi", "remaining": "1188Mi", "total": "2Gi"},
              "disks": {"processed": "0", "total": "10Gi"}},
)  # fmt: skip


def test_the_progress_bar_shows_phase_percent_and_route() -> None:
    line = progress_bar(MIGRATING, 200)
    assert line == (
        "web-x7k2q  Migrating        [########------------]  42%  host-1 → host-2  mem 860.0 MiB/2.0 GiB"
        "  disk 0 B/10.0 GiB  copying memory"
    )
    early = progress_bar(mig("web-x7k2q", phase="Scheduling", source="host-1"), 200)
    assert early == "web-x7k2q  Scheduling       [--------------------]   -%  host-1 → ?"
    fresh = progress_bar(mig("web-x7k2q"), 200)
    assert "Pending" in fresh and "? → ?" in fresh
    done = progress_bar(mig("web-x7k2q", phase="Succeeded", source="h1", target="h2", progress={"percent": 97}), 200)
    assert "[####################] 100%" in done
    weird = progress_bar(mig("w", phase="Migrating", progress={"percent": 150, "memory": {"processed": "x"}}), 200)
    assert "[####################] 100%" in weird and "mem" not in weird


@pytest.mark.parametrize("width", [1, 10, 40, 80, 95])
def test_the_progress_bar_never_wraps(width: int) -> None:
    line = progress_bar(MIGRATING, width)
    assert len(line) <= max(width - 1, 1)
    assert "\n" not in line and "\r" not in line
    if width > 10:
        assert line.startswith("web-x7k2q  Migrating") and line.endswith("…")


def test_phase_lines_for_logs() -> None:
    assert phase_line(MIGRATING) == "migration team-a/web-x7k2q: Migrating host-1 → host-2 (42%): copying memory"
    assert phase_line(mig("m")) == "migration team-a/m: Pending ? → ?"
    ok = mig("m", phase="Succeeded", source="h1", target="h2", progress={"percent": 100})
    assert phase_line(ok) == "migration team-a/m: Succeeded h1 → h2"


def test_outcomes_say_why_and_where_the_vm_is() -> None:
    assert outcome(MIGRATING) is None
    assert outcome(mig("m", phase="Pending")) is None
    ok = mig("m", phase="Succeeded", source="h1", target="h2", progress={"downtimeMilliseconds": 23})
    assert outcome(ok) == (0, "migration team-a/m Succeeded: vm web moved h1 → h2 (downtime 23 ms)")
    assert outcome(mig("m", phase="Succeeded", source="h1", target="h2")) == (
        0, "migration team-a/m Succeeded: vm web moved h1 → h2")  # fmt: skip
    failed = mig("m", phase="Failed", source="h1", target="h2", message="the libvirt migration failed",
                 libvirtError="operation failed: migration out job: unexpectedly failed")  # fmt: skip
    assert outcome(failed) == (
        EXIT_FAILED,
        "migration team-a/m Failed: the libvirt migration failed (libvirt: operation failed: migration out job: "
        "unexpectedly failed); vm web stays on h1",
    )
    repeated = mig("m", phase="Failed", message="migrate: error: boom", libvirtError="boom")
    assert outcome(repeated) == (EXIT_FAILED, "migration team-a/m Failed: migrate: error: boom")
    cancelled = mig("m", phase="Cancelled", source="h1", message="the migration was deleted")
    assert outcome(cancelled) == (
        EXIT_CANCELLED, "migration team-a/m Cancelled: the migration was deleted; vm web stays on h1")  # fmt: skip
    assert outcome(mig("m", phase="Failed")) == (EXIT_FAILED, "migration team-a/m Failed")


# --- following ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _reads(bodies: list[dict[str, Any] | None]) -> Any:
    it: Iterator[dict[str, Any] | None] = iter(bodies)
    return lambda *_: next(it)


STEPS = [
    mig("m"),
    mig("m", phase="Scheduling", source="h1"),
    mig("m", phase="Scheduling", source="h1", message="waiting for a slot"),
    mig("m", phase="PreparingTarget", source="h1", target="h2"),
    mig("m", phase="Migrating", source="h1", target="h2", progress={"percent": 10}),
    mig("m", phase="Migrating", source="h1", target="h2", progress={"percent": 80}),
    mig("m", phase="Succeeded", source="h1", target="h2", progress={"percent": 100, "downtimeMilliseconds": 9}),
]


def test_following_without_a_terminal_prints_a_line_per_phase() -> None:
    out, clock = io.StringIO(), Clock()
    code, line = follow(_reads(STEPS), Display(out, tty=False), 60, clock=clock, sleep=clock.sleep)
    assert (code, line) == (0, "migration team-a/m Succeeded: vm web moved h1 → h2 (downtime 9 ms)")
    assert out.getvalue().splitlines() == [
        "migration team-a/m: Pending ? → ?",
        "migration team-a/m: Scheduling h1 → ?",
        "migration team-a/m: PreparingTarget h1 → h2",
        "migration team-a/m: Migrating h1 → h2 (10%)",
        "migration team-a/m: Succeeded h1 → h2",
    ]
    assert clock.now == 6.0


def test_following_on_a_terminal_redraws_one_line() -> None:
    out, clock = io.StringIO(), Clock()
    display = Display(out, tty=True, width=lambda: 80)
    code, _ = follow(_reads(STEPS), display, 60, clock=clock, sleep=clock.sleep)
    assert code == 0
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    frames = [f.removesuffix("\x1b[K") for f in text.rstrip("\n").split("\r")[1:]]
    assert len(frames) == 7  # each change redrawn (the message is on the bar)
    assert (
        "waiting for a slot" in frames[2] and "Migrating" in frames[4] and " 10%" in frames[4] and "100%" in frames[-1]
    )
    assert all(len(f) < 80 for f in frames)


def test_following_a_failure_and_a_cancel() -> None:
    clock = Clock()
    failed = mig("m", phase="Failed", source="h1", message="no host can take the VM: no Ready host")
    code, line = follow(_reads([STEPS[1], failed]), Display(io.StringIO(), tty=False), 60, sleep=clock.sleep)
    assert (code, line) == (1, "migration team-a/m Failed: no host can take the VM: no Ready host; vm web stays on h1")
    code, line = follow(_reads([STEPS[4], None]), Display(io.StringIO(), tty=False), 60, sleep=clock.sleep)
    assert (code, line) == (EXIT_CANCELLED, "migration m was deleted before it ended (last seen Migrating)")


def test_following_times_out_and_says_the_migration_goes_on() -> None:
    clock = Clock()
    out = io.StringIO()
    display = Display(out, tty=True, width=lambda: 100)
    code, line = follow(lambda: STEPS[5], display, 3, clock=clock, sleep=clock.sleep)
    assert code == EXIT_TIMEOUT
    assert line == (
        "timed out after 3s: migration team-a/m is Migrating (80%) and goes on; cancel it with "
        "`vdc migrate --cancel --name m -n team-a`"
    )
    assert out.getvalue().endswith("\n")  # the bar's line is ended


def test_an_interrupt_still_ends_the_bar_line() -> None:
    out = io.StringIO()

    def read() -> dict[str, Any]:
        raise KeyboardInterrupt

    display = Display(out, tty=True, width=lambda: 100)
    display.show(STEPS[4])
    with pytest.raises(KeyboardInterrupt):
        follow(read, display, 10)
    assert out.getvalue().endswith("\x1b[K\n")


def test_waiting_for_cancelled_migrations_to_go() -> None:
    clock = Clock()
    reads = {"a": iter([mig("a", phase="Migrating", deleting=True), mig("a", phase="Cancelled", source="h1"), None]),
             "b": iter([None])}  # fmt: skip
    out = io.StringIO()
    last, pending = wait_gone(lambda n: next(reads[n]), ["a", "b"], Display(out, tty=False), 30, clock=clock,
                              sleep=clock.sleep)  # fmt: skip
    assert pending == []
    assert last["b"] is None and last["a"] is not None and last["a"]["status"]["phase"] == "Cancelled"
    assert out.getvalue().splitlines() == [
        "migration team-a/a: Migrating ? → ?",
        "migration team-a/a: Cancelled h1 → ?",
    ]
    last, pending = wait_gone(lambda n: mig(n, phase="Migrating", deleting=True), ["a"], Display(io.StringIO(),
                              tty=False), 2, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert pending == ["a"]


def test_cancel_reports() -> None:
    assert cancel_report("team-a", "m", mig("m", phase="Cancelled", source="h1")) == (
        0, "migration team-a/m cancelled: vm web stays on h1")  # fmt: skip
    assert cancel_report("team-a", "m", None) == (0, "migration team-a/m cancelled")
    late = mig("m", phase="Succeeded", source="h1", target="h2")
    assert cancel_report("team-a", "m", late) == (
        EXIT_FAILED, "migration team-a/m could not be cancelled: it had Succeeded; vm web runs on h2")  # fmt: skip


# --- the listing ----------------------------------------------------------------------------------


def test_migrations_table() -> None:
    items = [
        MIGRATING,
        mig("web-aaaaa", phase="Failed", created="2025-03-01T08:00:00Z", source="host-1", message="boom"),
        mig("db-bbbbb", vm="db", created="2025-03-01T11:59:30Z"),
        mig("web-ccccc", phase="Scheduling", created="2025-02-26T12:00:00Z", deleting=True),
    ]
    assert format_migrations(items, None, NOW).splitlines() == [
        "NAME        VM    PHASE                   PROGRESS   SOURCE   TARGET   AGE",
        "web-ccccc   web   Scheduling (deleting)   <none>     <none>   <none>   3d",
        "web-aaaaa   web   Failed                  <none>     host-1   <none>   4h",
        "web-x7k2q   web   Migrating               42%        host-1   host-2   60m",
        "db-bbbbb    db    Pending                 <none>     <none>   <none>   30s",
    ]
    wide = format_migrations(items, "wide", NOW).splitlines()
    assert re.split(r"\s{3,}", wide[0])[-1] == "MESSAGE" and wide[2].endswith("boom")
    every = format_migrations(items[:1], None, NOW, all_namespaces=True).splitlines()
    assert every[0].startswith("NAMESPACE   NAME") and every[1].startswith("team-a      web-x7k2q")
    assert format_migrations([], None, NOW) == "no migrations\n"
    assert json.loads(format_migrations(items, "json", NOW))[0]["metadata"]["name"] == "web-ccccc"
    assert yaml.safe_load(format_migrations(items, "yaml", NOW))[-1]["metadata"]["name"] == "db-bbbbb"


def test_a_target_asked_for_shows_before_it_is_chosen() -> None:
    body = mig("m", phase="Pending")
    body["spec"]["targetHost"] = "host-9"
    assert "host-9" in format_migrations([body], None, NOW)


# --- the commands against a fake API server -------------------------------------------------------


class FakeCustom:
    """What the commands use of CustomObjectsApi, over a dict of migrations; ``script`` gives each read
    of a migration the next state (the operator at work)."""

    def __init__(self, vms: set[str], migrations: list[dict[str, Any]] | None = None) -> None:
        self.vms = vms
        self.migrations = {m["metadata"]["name"]: m for m in migrations or []}
        self.script: dict[str, list[dict[str, Any] | None]] = {}
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        self.taken: set[str] = set()

    def get_namespaced_custom_object(self, _g: str, _v: str, ns: str, plural: str, name: str) -> dict[str, Any]:
        if plural == "virtualmachines":
            if name not in self.vms:
                raise kubernetes.client.ApiException(status=404, reason="Not Found")
            return {"metadata": {"name": name, "namespace": ns}, "status": {"phase": "Running", "host": "h1"}}
        if self.script.get(name):
            state = self.script[name].pop(0)
            if state is None:
                self.migrations.pop(name, None)
            else:
                self.migrations[name] = state
        if name not in self.migrations:
            raise kubernetes.client.ApiException(status=404, reason="Not Found")
        return self.migrations[name]

    def list_namespaced_custom_object(self, _g: str, _v: str, ns: str, plural: str) -> dict[str, Any]:
        assert plural == "virtualmachinemigrations"
        return {"items": [m for m in self.migrations.values() if m["metadata"]["namespace"] == ns]}

    def create_namespaced_custom_object(
        self, _g: str, _v: str, ns: str, plural: str, body: dict[str, Any], field_manager: str
    ) -> dict[str, Any]:
        assert (plural, field_manager) == ("virtualmachinemigrations", "vdc-cli")
        name = body["metadata"]["name"]
        if name in self.migrations or name in self.taken:
            self.taken.discard(name)
            raise kubernetes.client.ApiException(status=409, reason="AlreadyExists")
        created = {**body, "metadata": {**body["metadata"], "uid": f"uid-{name}"}}
        self.created.append(created)
        self.migrations[name] = created
        return created

    def delete_namespaced_custom_object(
        self, _g: str, _v: str, ns: str, plural: str, name: str, body: kubernetes.client.V1DeleteOptions
    ) -> dict[str, Any]:
        if name not in self.migrations:
            raise kubernetes.client.ApiException(status=404, reason="Not Found")
        self.deleted.append((name, body.preconditions.uid))
        body = self.migrations[name]  # a new body: the tests' constants stay as they are
        self.migrations[name] = {**body, "metadata": {**body["metadata"], "deletionTimestamp": "2025-03-01T12:00:00Z"}}
        return {}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCustom:
    custom = FakeCustom({"web", "db"})
    monkeypatch.setattr(Kube, "from_args", classmethod(lambda cls, args: cls(None, args.namespace or "team-a")))
    monkeypatch.setattr(Kube, "custom", property(lambda self: custom))
    monkeypatch.setattr(migrate, "POLL_SECONDS", 0.0)
    return custom


def test_migrate_creates_and_prints_the_name(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "web", "--to", "host-2"]) == 0
    (body,) = fake.created
    name = body["metadata"]["name"]
    assert re.fullmatch(r"web-[bcdfghjklmnpqrstvwxz2456789]{5}", name)
    assert body["spec"] == {"vm": "web", "targetHost": "host-2"} and body["metadata"]["namespace"] == "team-a"
    assert capsys.readouterr().out == f"{name}\n"


def test_migrate_takes_another_name_when_one_is_taken(
    fake: FakeCustom, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suffixes = iter(["aaaaa", "bbbbb"])
    monkeypatch.setattr(migrate, "random_suffix", lambda: next(suffixes))
    fake.taken.add("web-aaaaa")
    assert main(["migrate", "web", "-n", "team-b"]) == 0
    assert capsys.readouterr().out == "web-bbbbb\n"
    fake.migrations["given"] = mig("given", vm="db", namespace="team-b", phase="Succeeded")
    assert main(["migrate", "db", "--name", "given", "-n", "team-b"]) == 1
    assert capsys.readouterr().err == "error: virtualmachinemigration team-b/given already exists\n"


def test_migrate_refuses_a_missing_vm_and_one_already_moving(
    fake: FakeCustom, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "mail"]) == 1
    assert capsys.readouterr().err == "error: virtualmachine team-a/mail not found\n"
    fake.migrations["web-x7k2q"] = MIGRATING
    assert main(["migrate", "web"]) == 1
    assert capsys.readouterr().err == (
        "error: vm team-a/web is already being migrated: web-x7k2q (Migrating); wait for it, or cancel it with "
        "`vdc migrate --cancel web -n team-a`\n"
    )
    assert fake.created == []


def test_migrate_wait_follows_to_the_end(
    fake: FakeCustom, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(migrate, "random_suffix", lambda: "q2w4e")
    fake.script["web-q2w4e"] = [{**s, "metadata": {**s["metadata"], "name": "web-q2w4e"}} for s in STEPS]
    assert main(["migrate", "web", "--wait"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "web-q2w4e\nmigration team-a/web-q2w4e Succeeded: vm web moved h1 → h2 (downtime 9 ms)\n"
    assert len(captured.err.splitlines()) == 5  # one per phase: pytest's stderr is no terminal

    failed = mig("db-q2w4e", vm="db", phase="Failed", source="h1", message="migration failed", libvirtError="E")
    fake.script["db-q2w4e"] = [mig("db-q2w4e", vm="db", phase="Migrating"), failed]
    assert main(["migrate", "db", "--wait"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert (
        err.splitlines()[-1]
        == "error: migration team-a/db-q2w4e Failed: migration failed (libvirt: E); vm db stays on h1"
    )


def test_migrate_wait_times_out_with_its_own_code(
    fake: FakeCustom, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(migrate, "POLL_SECONDS", 0.01)
    assert main(["migrate", "web", "--wait", "--timeout", "0.05"]) == EXIT_TIMEOUT
    assert "timed out after 0.05s" in capsys.readouterr().err


def test_cancel_deletes_the_running_migrations_of_the_vm(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    for body in (MIGRATING, mig("web-old", phase="Succeeded"), mig("db-1", vm="db", phase="Migrating")):
        fake.migrations[body["metadata"]["name"]] = body
    assert main(["migrate", "--cancel", "web"]) == 0
    assert fake.deleted == [("web-x7k2q", "uid-web-x7k2q")]
    assert capsys.readouterr().out == "migration team-a/web-x7k2q: cancelling (Migrating)\n"
    assert main(["migrate", "--cancel", "mail"]) == 1
    assert capsys.readouterr().err == "error: virtualmachine team-a/mail not found\n"


def test_cancel_of_nothing_is_an_error(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    fake.migrations["web-old"] = mig("web-old", phase="Succeeded")
    assert main(["migrate", "--cancel", "web"]) == 1
    assert capsys.readouterr().err == "error: vm team-a/web has no running migration: nothing to cancel\n"
    assert main(["migrate", "--cancel", "--name", "web-old"]) == 1
    assert capsys.readouterr().err == (
        "error: virtualmachinemigration team-a/web-old has ended (Succeeded): nothing to cancel\n"
    )
    assert main(["migrate", "--cancel", "--name", "nope"]) == 1
    assert capsys.readouterr().err == "error: virtualmachinemigration team-a/nope not found\n"
    assert fake.deleted == []


def test_cancel_by_name_waits_until_it_is_gone(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    fake.migrations["web-x7k2q"] = MIGRATING
    assert main(["migrate", "--cancel", "db", "--name", "web-x7k2q"]) == 1
    assert capsys.readouterr().err == "error: virtualmachinemigration team-a/web-x7k2q migrates vm web, not db\n"
    cancelled = mig("web-x7k2q", phase="Cancelled", source="host-1", deleting=True)
    fake.script["web-x7k2q"] = [MIGRATING, MIGRATING, cancelled, None]
    assert main(["migrate", "--cancel", "--name", "web-x7k2q", "--wait"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "migration team-a/web-x7k2q: cancelling (Migrating)",
        "migration team-a/web-x7k2q cancelled: vm web stays on host-1",
    ]
    assert "Cancelled" in captured.err
    assert "web-x7k2q" not in fake.migrations


def test_cancel_too_late_is_reported(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    fake.migrations["web-x7k2q"] = MIGRATING
    late = mig("web-x7k2q", phase="Succeeded", source="host-1", target="host-2")
    fake.script["web-x7k2q"] = [late, None]
    assert main(["migrate", "--cancel", "web", "--wait"]) == EXIT_FAILED
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: migration team-a/web-x7k2q could not be cancelled: it had Succeeded; vm web runs on host-2"
    )


def test_migrations_lists_the_namespace(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    fake.migrations["web-x7k2q"] = MIGRATING
    fake.migrations["db-1"] = mig("db-1", vm="db", phase="Succeeded")
    assert main(["migrations", "--vm", "web"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("web-x7k2q   web   Migrating   42%")
    assert main(["migrations", "-n", "empty"]) == 0
    assert capsys.readouterr().out == "no migrations\n"
