"""`vdc run` flags the Helm chart passes: log level/format and the resync interval."""

from __future__ import annotations

import kopf
import pytest

from vdc import handlers, runtime
from vdc.cli.main import build_parser


def test_defaults() -> None:
    args = build_parser().parse_args(["run"])
    assert (args.log_level, args.log_format, args.resync_interval) == ("info", "text", 120.0)


def test_values_are_parsed() -> None:
    args = build_parser().parse_args(["run", "--log-level=warning", "--log-format=json", "--resync-interval=2.5"])
    assert (args.log_level, args.log_format, args.resync_interval) == ("warning", "json", 2.5)


@pytest.mark.parametrize(
    "flag",
    [
        "--log-level=verbose",
        "--log-format=xml",
        "--resync-interval=0",
        "--resync-interval=-3",
        "--resync-interval=soon",
    ],
)
def test_bad_values_are_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", flag])
    assert exc.value.code == 2
    assert flag.split("=")[0] in capsys.readouterr().err


def test_resync_interval_reaches_the_resync_loop() -> None:
    """Through kopf's memo (no module global): ``run`` puts it there, ``start`` gives it to the runtime."""
    assert handlers.resync_interval(runtime.operator_memo(namespace=[], resync_seconds=7.0)) == 7.0
    assert handlers.resync_interval(runtime.operator_memo(namespace=[])) == handlers.RESYNC_SECONDS
    with pytest.raises(ValueError):
        handlers.resync_interval(kopf.Memo(resync_seconds=0))
    with pytest.raises(ValueError):
        runtime.run(namespace=[], liveness=None, resync_seconds=0)


def test_the_handlers_find_the_runtime_in_the_memo() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        handlers.runtime(kopf.Memo())


def test_appliance_trust_configmap(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("VDC_APPLIANCE_TRUST_CONFIGMAP", raising=False)
    assert build_parser().parse_args(["run"]).appliance_trust_configmap is None
    args = build_parser().parse_args(["run", "--appliance-trust-configmap=vdc-system/appliance-cas"])
    assert args.appliance_trust_configmap == ("vdc-system", "appliance-cas")
    monkeypatch.setenv("VDC_APPLIANCE_TRUST_CONFIGMAP", "trust/ca.bundle")
    assert build_parser().parse_args(["run"]).appliance_trust_configmap == ("trust", "ca.bundle")
    for bad in ("just-a-name", "ns/", "/name", "NS/name"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", f"--appliance-trust-configmap={bad}"])
        assert "not namespace/name" in capsys.readouterr().err
