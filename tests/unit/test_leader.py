"""vdc.leader without an API server: the election's configuration and flags, and the guards around the
kubernetes client's leader election (LeaseApi, the watchdog), against an in-memory Lease API."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest
import urllib3

from vdc import leader
from vdc.cli.context import CliError
from vdc.cli.main import _election, build_parser
from vdc.leader import ElectionConfig, Elector, LeaseApi

V1Lease = kubernetes.client.V1Lease
ApiException = kubernetes.client.ApiException


def config(**kwargs: Any) -> ElectionConfig:
    return ElectionConfig(**{"lease_name": "vdc-operator", "lease_namespace": "vdc-system", "identity": "a", **kwargs})


# --- configuration ------------------------------------------------------------------------------------


def test_defaults_are_controller_runtimes() -> None:
    c = config()
    assert (c.lease_duration, c.renew_deadline, c.retry_period) == (15, 10.0, 2.0)


@pytest.mark.parametrize(
    ("timings", "problem"),
    [
        ({"lease_duration": 10, "renew_deadline": 10}, "shorter than the lease duration"),
        ({"lease_duration": 8, "renew_deadline": 10}, "shorter than the lease duration"),
        ({"lease_duration": 10, "renew_deadline": 9.5}, "shorter than the lease duration"),  # no time to exit
        ({"renew_deadline": 2.4, "retry_period": 2}, "1.2 x the retry period"),
        ({"retry_period": 0.5, "renew_deadline": 3}, "less than 1s"),
        ({"lease_duration": 15.5}, "whole seconds"),
        ({"lease_duration": True}, "whole seconds"),
    ],
)
def test_timings_that_cannot_fence_are_refused(timings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        config(**timings)


def test_short_timings_for_tests_are_accepted() -> None:
    config(lease_duration=4, renew_deadline=3, retry_period=1)


@pytest.mark.parametrize(
    "fields", [{"lease_name": "Not_A_Name"}, {"lease_name": ""}, {"lease_namespace": "a.b"}, {"identity": ""}]
)
def test_names_are_checked(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        config(**fields)


def test_identity_and_namespace_come_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "vdc-operator-5d9c-x2x4q")
    monkeypatch.setenv("POD_NAMESPACE", "vdc-system")
    assert (leader.default_identity(), leader.default_namespace()) == ("vdc-operator-5d9c-x2x4q", "vdc-system")
    monkeypatch.delenv("POD_NAME")
    monkeypatch.delenv("POD_NAMESPACE")
    assert leader.default_identity().endswith(f"_{leader.os.getpid()}")
    assert leader.default_namespace() == "default"


# --- flags ----------------------------------------------------------------------------------------------


def test_leader_election_is_off_by_default() -> None:
    assert _election(build_parser().parse_args(["run"])) is None


def test_flags_make_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "pod-a")
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    args = build_parser().parse_args(["run", "--leader-elect"])
    assert _election(args) == ElectionConfig("vdc-operator", "ops", "pod-a", 15, 10.0, 2.0)
    args = build_parser().parse_args(
        ["run", "--leader-elect", "--lease-name=x", "--lease-namespace=y", "--lease-duration=6",
         "--renew-deadline=4", "--retry-period=1"]
    )  # fmt: skip
    assert _election(args) == ElectionConfig("x", "y", "pod-a", 6, 4.0, 1.0)


def test_a_renew_deadline_past_the_lease_is_a_cli_error() -> None:
    args = build_parser().parse_args(["run", "--leader-elect", "--lease-duration=10", "--renew-deadline=12"])
    with pytest.raises(CliError, match="renew deadline"):
        _election(args)


@pytest.mark.parametrize("flag", ["--lease-duration=0", "--lease-duration=1.5", "--renew-deadline=0"])
def test_bad_timing_flags_are_refused(flag: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--leader-elect", flag])


# --- LeaseApi and the watchdog, on an in-memory Lease API ---------------------------------------------------


class FakeLeases:
    """read/create/replace of Leases with resourceVersion conflicts, as the API server does them."""

    def __init__(self) -> None:
        self.leases: dict[str, V1Lease] = {}
        self.version = 0
        self.fail: Exception | None = None
        self.calls: list[tuple[str, Any]] = []

    def _check(self, what: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((what, kwargs.get("_request_timeout")))
        if self.fail is not None:
            raise self.fail

    def _stored(self, body: V1Lease, name: str) -> V1Lease:
        self.version += 1
        lease = copy.deepcopy(body)
        meta = lease.metadata if isinstance(lease.metadata, kubernetes.client.V1ObjectMeta) else None
        lease.metadata = meta or kubernetes.client.V1ObjectMeta(name=name)
        lease.metadata.resource_version = str(self.version)
        self.leases[name] = lease
        return copy.deepcopy(lease)

    def read_namespaced_lease(self, name: str, namespace: str, **kwargs: Any) -> V1Lease:
        self._check("read", kwargs)
        if name not in self.leases:
            raise ApiException(status=404, reason="Not Found", body=json.dumps({"code": 404}))
        return copy.deepcopy(self.leases[name])

    def create_namespaced_lease(self, namespace: str, body: V1Lease, **kwargs: Any) -> V1Lease:
        self._check("create", kwargs)
        name = body.metadata["name"] if isinstance(body.metadata, dict) else body.metadata.name
        if name in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._stored(body, name)

    def replace_namespaced_lease(self, name: str, namespace: str, body: V1Lease, **kwargs: Any) -> V1Lease:
        self._check("replace", kwargs)
        if self.leases[name].metadata.resource_version != body.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._stored(body, name)

    def holder(self, name: str = "vdc-operator") -> str | None:
        spec = self.leases[name].spec
        return str(spec.holder_identity) if spec.holder_identity else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def held_by(api: FakeLeases, holder: str, duration: int = 15) -> None:
    spec = kubernetes.client.V1LeaseSpec(holder_identity=holder, lease_duration_seconds=duration)
    api._stored(V1Lease(metadata=kubernetes.client.V1ObjectMeta(name="vdc-operator"), spec=spec), "vdc-operator")


def take_over(lease: LeaseApi, api: FakeLeases) -> V1Lease:
    body = lease.read_namespaced_lease("vdc-operator", "vdc-system")
    body.spec.holder_identity = "a"
    return lease.replace_namespaced_lease(name="vdc-operator", namespace="vdc-system", body=body)


def test_a_takeover_waits_for_the_lease_unchanged_on_the_monotonic_clock() -> None:
    """Whatever the wall clock says (the library's judgement), a Lease is taken only once it has not
    changed for the lease duration on our monotonic clock."""
    api, clock = FakeLeases(), Clock()
    lease = LeaseApi(api, config(), clock=clock)
    held_by(api, "b")
    with pytest.raises(ApiException, match=r"unchanged for 0\.0s of 15s"):
        take_over(lease, api)
    clock.now += 14.9
    with pytest.raises(ApiException):
        take_over(lease, api)
    held_by(api, "b")  # b renews: seen on the next read, the count starts again
    clock.now += 1
    with pytest.raises(ApiException, match=r"unchanged for 0\.0s"):
        take_over(lease, api)
    clock.now += 15
    taken = take_over(lease, api)
    assert api.holder() == "a" and taken.spec.lease_transitions == 1
    assert lease.renewed_at == clock.now


def test_a_takeover_waits_for_the_holders_longer_lease_duration() -> None:
    api, clock = FakeLeases(), Clock()
    lease = LeaseApi(api, config(), clock=clock)
    held_by(api, "b", duration=40)  # a replica started with --lease-duration=40
    lease.read_namespaced_lease("vdc-operator", "vdc-system")
    clock.now += 20
    with pytest.raises(ApiException, match="of 40s"):
        take_over(lease, api)
    clock.now += 20
    take_over(lease, api)


def test_a_released_lease_is_taken_at_once() -> None:
    api, clock = FakeLeases(), Clock()
    held_by(api, "")
    take_over(LeaseApi(api, config(), clock=clock), api)
    assert api.holder() == "a"


def test_renewed_at_is_when_the_successful_write_started() -> None:
    api = FakeLeases()
    times = iter([10.0, 11.0, 12.0, 13.0])
    lease = LeaseApi(api, config(), clock=lambda: next(times))
    body = V1Lease(metadata={"name": "vdc-operator"}, spec=kubernetes.client.V1LeaseSpec(holder_identity="a"))
    lease.create_namespaced_lease("vdc-system", body)
    assert lease.renewed_at == 10.0
    assert {timeout for _, timeout in api.calls} == {5.0}  # every call has a timeout: renew deadline / 2


def test_errors_other_than_api_exceptions_become_failed_attempts() -> None:
    """The library catches only ApiException: a connection error would end its thread (and, for a
    leader, its renewals without ever telling it)."""
    api = FakeLeases()
    api.fail = urllib3.exceptions.MaxRetryError(None, "/apis/coordination.k8s.io", "Connection refused")  # type: ignore[arg-type]
    lease = LeaseApi(api, config(), clock=Clock())
    with pytest.raises(ApiException) as exc:
        lease.read_namespaced_lease("vdc-operator", "vdc-system")
    assert exc.value.status == 0 and "MaxRetryError" in str(exc.value.reason)


def test_release_clears_the_holder_and_stops_renewals() -> None:
    api = FakeLeases()
    lease = LeaseApi(api, config(), clock=Clock())
    held_by(api, "")
    take_over(lease, api)
    lease.release()
    stored = api.leases["vdc-operator"].spec
    assert stored.holder_identity is None and stored.lease_duration_seconds == 1
    with pytest.raises(ApiException, match="released"):
        take_over(lease, api)


def test_release_leaves_a_lease_someone_else_holds() -> None:
    api = FakeLeases()
    lease = LeaseApi(api, config(), clock=Clock())
    held_by(api, "")
    take_over(lease, api)
    held_by(api, "b")
    lease.release()
    assert api.holder() == "b"


def test_the_watchdog_fences_a_leader_past_its_renew_deadline() -> None:
    api, clock, fenced = FakeLeases(), Clock(), []
    elector = Elector(config(), api, fence=fenced.append, clock=clock)
    elector.check()
    assert not fenced  # not leading: nothing to fence
    held_by(api, "")
    take_over(elector.lease, api)
    elector._leading.set()
    clock.now += 10
    elector.check()
    assert not fenced
    clock.now += 0.1
    elector.check()
    assert fenced and "renew deadline 10.0s" in fenced[0]


# --- the library's election with the guards, in threads (a few seconds) --------------------------------------


def wait_for(what: str, fn: Callable[[], object], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


FAST = {"lease_duration": 3, "renew_deadline": 2.0, "retry_period": 1.0}


class Stop(BaseException):
    """Ends an election thread (LeaseApi turns only Exceptions into failed attempts)."""


def test_one_of_two_leads_and_a_leader_without_the_api_server_fences() -> None:
    api = FakeLeases()
    fenced: dict[str, str] = {}
    leading: list[str] = []
    electors = {
        name: Elector(config(identity=name, **FAST), api, fence=lambda why, name=name: fenced.setdefault(name, why))
        for name in ("a", "b")
    }
    try:
        for name, elector in electors.items():
            elector.start(lambda name=name: leading.append(name))
        wait_for("a leader", lambda: leading)
        time.sleep(2.5)  # several renewals
        assert len(leading) == 1 and api.holder() == leading[0] and not fenced
        api.fail = urllib3.exceptions.ProtocolError("Connection aborted.")  # the network goes, for both
        wait_for("the leader fenced", lambda: leading[0] in fenced)
        # by the watchdog, a renew deadline after the last renewal started (the library alone would
        # give up a retry period later, and its thread would have died at the first ProtocolError)
        assert "the last renewal started" in fenced[leading[0]], fenced
        time.sleep(1.5)
        assert len(leading) == 1 and list(fenced) == leading  # the standby's thread lives on, not leading
    finally:
        for elector in electors.values():
            elector.lease.release()  # ends the watchdog
        api.fail = Stop()  # ends the election threads
