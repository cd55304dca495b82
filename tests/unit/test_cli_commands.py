"""The `vdc` user commands without a cluster: argument parsing, one-line errors, kubeconfig namespaces,
VNC/console facts from domain XML, the console copy loop, import/export helpers, credentials."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import libvirt
import pytest

from vdc.cli.console import ESCAPE, ConsoleSession, has_console, vnc_endpoint, vnc_graphics
from vdc.cli.context import CliError, api_error, namespace_of_context, require_ready_host, vm_host
from vdc.cli.main import build_parser, main
from vdc.cli.transfer import _rebase, appliance_manifest, appliance_volume_name, export_hardware, pick_pool_host
from vdc.libvirt.credentials import effective_uri
from vdc.libvirt.domain_xml import DiskConfig, DomainConfig, InterfaceConfig, OwnerMetadata
from vdc.tenancy.access import owner_namespace

UID = "0b5c2f1e-4a86-4d8e-9d3a-2f6f1b0c7a11"

# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["start", "web"], {"vm": "web", "namespace": None, "wait": False, "timeout": 300.0}),
        (["stop", "web", "-n", "team-a", "--wait", "--timeout", "20"], {"namespace": "team-a", "wait": True,
                                                                        "timeout": 20.0}),
        (["restart", "web", "--context", "prod", "--kubeconfig", "/k"], {"context": "prod", "kubeconfig": "/k"}),
        (["console", "web", "--force", "--timeout", "5"], {"force": True, "timeout": 5.0}),
        (["console", "web"], {"force": False, "timeout": None}),
        (["vnc", "web", "--forward", "5901"], {"forward": 5901, "address": "127.0.0.1", "once": False}),
        (["addresses", "web", "-o", "wide"], {"output": "wide"}),
        (["hosts", "-o", "json"], {"output": "json"}),
        (["import-ova", "a.ova", "--name", "app", "--pool", "p"], {"file": "a.ova", "name": "app", "pool": "p"}),
        (["export", "web", "-o", "web.ova", "--allow-running"], {"output": "web.ova", "allow_running": True}),
    ],
)  # fmt: skip
def test_arguments_parse(argv: list[str], expected: dict[str, Any]) -> None:
    args = build_parser().parse_args(argv)
    assert {k: getattr(args, k) for k in expected} == expected
    assert callable(args.func)


@pytest.mark.parametrize(
    "argv",
    [
        ["start"],  # no VM
        ["stop", "web", "--timeout", "0"],
        ["console", "web", "--timeout", "-1"],
        ["vnc", "web", "--forward", "70000"],
        ["addresses", "web", "-o", "table"],
        ["import-ova", "a.ova", "--pool", "p"],  # no --name
        ["export", "web"],  # no -o
        ["hosts", "-n", "x"],  # hosts are cluster-scoped
    ],
)
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", ["start", "stop", "restart", "console", "vnc", "addresses", "hosts", "import-ova", "export"]
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--kubeconfig" in out and "--context" in out
    assert ("--namespace" in out) is (command != "hosts")


def test_power_help_says_how_the_spec_is_changed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside the words checked
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stop", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "server-side apply" in out and "vdc-cli" in out and "vdc.dev/restart-requested-at" in out


def test_a_missing_kubeconfig_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["addresses", "web", "--kubeconfig", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: kubeconfig: ") and err.count("\n") == 1


def test_import_of_a_missing_file_fails_before_any_cluster_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import-ova", str(tmp_path / "x.ova"), "--name", "a", "--pool", "p"]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'x.ova'}: no such file\n"


def test_export_wants_an_ova_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "web", "-o", "web.tar"]) == 1
    assert "must end in .ova" in capsys.readouterr().err


def test_export_into_a_missing_directory_fails_before_any_cluster_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "web", "-o", str(tmp_path / "nope" / "web.ova")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: no such directory\n"


# --- context --------------------------------------------------------------------------------------

CONTEXTS = [
    {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
    {"name": "prod", "context": {"cluster": "c", "user": "u"}},
]


@pytest.mark.parametrize(
    ("active", "wanted", "namespace"),
    [(CONTEXTS[0], None, "team-a"), (CONTEXTS[1], None, "default"), (CONTEXTS[1], "dev", "team-a"),
     (CONTEXTS[0], "prod", "default"), (None, None, "default"), (CONTEXTS[0], "missing", "default")],
)  # fmt: skip
def test_namespace_comes_from_the_chosen_context(active: Any, wanted: str | None, namespace: str) -> None:
    assert namespace_of_context(CONTEXTS, active, wanted) == namespace


def _api_exception(status: int, message: str) -> kubernetes.client.ApiException:
    exc = kubernetes.client.ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


def test_api_errors_become_one_line_messages() -> None:
    what = "virtualmachine a/web"
    assert str(api_error(_api_exception(404, "x"), what)) == "virtualmachine a/web not found"
    forbidden = str(api_error(_api_exception(403, 'user "bob" cannot patch resource'), what))
    assert forbidden == 'permission denied (RBAC) on virtualmachine a/web: user "bob" cannot patch resource'
    assert "not authenticated" in str(api_error(_api_exception(401, "Unauthorized"), what))
    assert str(api_error(_api_exception(422, "spec.runStrategy: Unsupported value"), what)) == (
        "virtualmachine a/web: spec.runStrategy: Unsupported value (HTTP 422)"
    )
    bare = kubernetes.client.ApiException(status=500, reason="Internal")
    assert str(api_error(bare, what)) == "virtualmachine a/web: Internal (HTTP 500)"


def test_hosts_that_are_not_ready_and_vms_without_hosts_are_errors() -> None:
    host = {"metadata": {"name": "h1"}, "status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "Unreachable", "message": "connection refused"}]}}  # fmt: skip
    with pytest.raises(CliError, match=r"^host h1 is not Ready: connection refused$"):
        require_ready_host(host)
    with pytest.raises(CliError, match="host h2 is not Ready: no status yet"):
        require_ready_host({"metadata": {"name": "h2"}})
    require_ready_host({"metadata": {"name": "h3"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    with pytest.raises(CliError, match=r"vm a/web is not placed on a host yet"):
        vm_host({"metadata": {"name": "web", "namespace": "a"}, "status": {"phase": "Scheduling"}})
    assert vm_host({"metadata": {}, "status": {"host": "h3"}}) == "h3"


def test_effective_uri_writes_credentials_where_asked(tmp_path: Path) -> None:
    uri = "qemu+ssh://root@h1/system"
    assert effective_uri("h1", uri, None, tmp_path) == uri
    assert effective_uri("h1", "qemu+unix:///system", {}, tmp_path) == "qemu+unix:///system"
    data = {"ssh-privatekey": base64.b64encode(b"KEY").decode()}
    out = effective_uri("h1", uri, data, tmp_path)
    assert out == f"qemu+ssh://root@h1/system?keyfile={tmp_path}/h1/id_key"
    assert (tmp_path / "h1" / "id_key").read_bytes() == b"KEY"
    assert (tmp_path / "h1" / "id_key").stat().st_mode & 0o777 == 0o600


# --- console and vnc ------------------------------------------------------------------------------

DOMAIN_XML = """<domain type='qemu'><name>a_web</name><devices>
  <serial type='pty'><target port='0'/></serial><console type='pty'><target type='serial' port='0'/></console>
  <graphics type='vnc' port='%s' autoport='yes' listen='%s'><listen type='address' address='%s'/></graphics>
</devices></domain>"""


def test_vnc_graphics_from_the_live_and_the_inactive_xml() -> None:
    assert vnc_graphics(DOMAIN_XML % (5907, "127.0.0.1", "127.0.0.1")) == ("127.0.0.1", 5907)
    assert vnc_graphics(DOMAIN_XML % (-1, "0.0.0.0", "0.0.0.0")) == ("0.0.0.0", None)  # off: no port yet
    assert vnc_graphics("<domain><devices><serial type='pty'/></devices></domain>") is None
    assert has_console(DOMAIN_XML % (1, "a", "a"))
    assert not has_console("<domain><devices><disk/></devices></domain>")


@pytest.mark.parametrize(
    ("uri", "hostname", "listen", "endpoint", "note"),
    [
        ("qemu+unix:///system?socket=/run/s", "node1", "127.0.0.1", "127.0.0.1:5900", False),
        ("qemu+ssh://root@10.0.0.9/system", "node9", "0.0.0.0", "10.0.0.9:5900", False),
        ("qemu+ssh://root@10.0.0.9/system", "node9", "127.0.0.1", "127.0.0.1:5900", True),
        ("qemu:///system", "node1", "0.0.0.0", "node1:5900", False),
        ("qemu+tls://node2.example/system", None, "192.168.1.20", "192.168.1.20:5900", False),
        ("qemu+tls://node2.example/system", None, "::", "node2.example:5900", False),
    ],
)
def test_vnc_endpoint(uri: str, hostname: str | None, listen: str, endpoint: str, note: bool) -> None:
    got, why = vnc_endpoint(uri, hostname, listen, 5900)
    assert got == endpoint
    assert (why is not None) is note
    if note:
        assert "--forward" in str(why)


class FakeStream:
    """What ConsoleSession uses of a non-blocking virStream: recv (bytes, -2 for "nothing now", b"" at the
    end) and send."""

    def __init__(self, incoming: list[bytes | int]) -> None:
        self.incoming = incoming
        self.sent = b""

    def recv(self, _n: int) -> bytes | int:
        return self.incoming.pop(0) if self.incoming else -2

    def send(self, data: bytes) -> int:
        take = min(len(data), 3)  # partial sends must be continued
        self.sent += data[:take]
        return take


def _session(incoming: list[bytes | int]) -> tuple[ConsoleSession, FakeStream, int, int, int]:
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    stream = FakeStream(incoming)
    return ConsoleSession(stream, stdin_r, out_w), stream, stdin_w, out_r, out_w  # type: ignore[arg-type]


def test_console_copies_input_until_the_escape_key_and_output_to_stdout() -> None:
    session, stream, stdin_w, out_r, _ = _session([b"login: ", -2])
    os.write(stdin_w, b"root\r" + b"ls" + ESCAPE + b"never sent")
    session.on_event(stream, libvirt.VIR_STREAM_EVENT_READABLE, None)  # type: ignore[arg-type]
    assert session.run(timeout=5) == "escape"
    assert stream.sent == b"root\rls"
    assert os.read(out_r, 100) == b"login: "


def test_console_ends_when_the_stream_hangs_up() -> None:
    session, stream, _stdin_w, out_r, _ = _session([b"bye", b""])
    threading.Timer(
        0.2, session.on_event, (stream, libvirt.VIR_STREAM_EVENT_READABLE, None)
    ).start()  # libvirt's event thread
    assert session.run(timeout=5) == "closed"
    assert os.read(out_r, 100) == b"bye"


def test_console_after_stdin_eof_waits_for_the_guest_to_be_quiet_then_ends() -> None:
    session, _stream, stdin_w, _out_r, _ = _session([])
    os.close(stdin_w)
    started = time.monotonic()
    assert session.run(timeout=10) == "eof"
    assert 0.9 <= time.monotonic() - started < 5


def test_console_timeout() -> None:
    session, _stream, _stdin_w, _out_r, _ = _session([])
    started = time.monotonic()
    assert session.run(timeout=0.3) == "timeout"
    assert time.monotonic() - started < 2


# --- import and export ----------------------------------------------------------------------------


def _ready_host(name: str, ready: str = "True") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def test_import_picks_a_ready_host_where_the_pool_runs() -> None:
    states = [{"host": "c", "state": "Running"}, {"host": "a", "state": "Failed"}, {"host": "b", "state": "Running"}]
    pool = {"metadata": {"name": "images"}, "status": {"hosts": states}}
    hosts = {"a": _ready_host("a"), "b": _ready_host("b", "False"), "c": _ready_host("c")}
    assert pick_pool_host(pool, hosts) == "c"
    hosts["b"] = _ready_host("b")
    assert pick_pool_host(pool, hosts) == "b"
    with pytest.raises(CliError, match=r"storagepool images runs on no Ready host \(it runs on b, c, none"):
        pick_pool_host(pool, {"b": _ready_host("b", "False")})
    with pytest.raises(CliError, match=r"^storagepool images runs on no Ready host$"):
        pick_pool_host({"metadata": {"name": "images"}}, hosts)


def test_the_appliance_object_points_at_the_uploaded_volume() -> None:
    assert appliance_volume_name("team-a", "router") == "team-a_router_upload.ova"
    assert owner_namespace(appliance_volume_name("team-a", "router")) == "team-a"
    body = appliance_manifest("team-a", "router", "images", "appliance-team-a-router.ova", "ab" * 32)
    assert body == {
        "apiVersion": "vdc.dev/v1alpha1",
        "kind": "Appliance",
        "metadata": {"name": "router", "namespace": "team-a"},
        "spec": {
            "source": {"volume": {"pool": "images", "name": "appliance-team-a-router.ova"}, "sha256": "ab" * 32},
            "storagePool": "images",
        },
    }
    from vdc.api.appliance import Appliance

    Appliance.model_validate(body)  # what the API server's schema also takes


def test_export_hardware_from_the_domain() -> None:
    config = DomainConfig(
        name="a_web",
        uuid=UID,
        owner=OwnerMetadata(namespace="a", name="web", uid=UID),
        memory_kib=512 * 1024,
        current_memory_kib=256 * 1024,
        vcpus=3,
        disks=(
            DiskConfig("vda", "virtio", "/p/root.qcow2", "qcow2"),
            DiskConfig("sda", "sata", "/p/seed.iso", "raw", device="cdrom", readonly=True),
            DiskConfig("sdb", "scsi", "/p/data.raw", "raw"),
        ),
        interfaces=(
            InterfaceConfig("vdc-lan", "52:54:00:00:00:01", "virtio"),
            InterfaceConfig("vdc-other", "52:54:00:00:00:02", "e1000"),
        ),
    )
    hw = export_hardware(config, [("web-disk1.vmdk", 10 << 30), ("web-disk2.vmdk", 1 << 30)],
                         {"52:54:00:00:00:01": "lan"})  # fmt: skip
    assert (hw.cpus, hw.memory_bytes) == (3, 512 << 20)
    assert [(d.file, d.capacity_bytes, d.bus) for d in hw.disks] == [
        ("web-disk1.vmdk", 10 << 30, "virtio"),
        ("web-disk2.vmdk", 1 << 30, "scsi"),
    ]
    assert [(n.network, n.model) for n in hw.nics] == [("lan", "virtio"), ("vdc-other", "e1000")]
    with pytest.raises(ValueError):
        export_hardware(config, [("one.vmdk", 1)], {})


def test_a_failing_rebase_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"^qemu-img rebase overlay: .+"):
        _rebase(tmp_path / "overlay", "qcow2", tmp_path / "base", "qcow2")  # no such files
