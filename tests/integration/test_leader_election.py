"""Two `vdc run --leader-elect` replicas against the real API server: exactly one leads (the Lease's
holderIdentity, the `vdc_operator_leader` gauge, only it starts the operator), the standby takes over
when the leader is SIGKILLed, a leader that could not renew in time (SIGSTOPped past its renew
deadline) exits when it resumes instead of acting, and a leader stopped cleanly releases the Lease.

Short timings (lease 6s, renew deadline 4s, retry 1s) and a Lease of its own per test: the control
plane is shared by the session. Takeover times are printed, not asserted (a loaded machine)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

import rig
from rig import sample

T = TypeVar("T")
NAMESPACE = "vdc-leader-it"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 6, 4, 1
STARTED = "caches primed"  # logged by the operator's startup handler (vdc.handlers.start)


until = rig.wait_until


@dataclass
class Replica:
    name: str
    process: rig.OperatorProcess
    port: int
    liveness: int

    def liveness_answer(self) -> Any:
        """What the ``--liveness`` URL answers (the standby's stand-in, then kopf's probe results)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness}/healthz", timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            return None

    def leader_gauge(self) -> float | None:
        """``vdc_operator_leader`` on /metrics (None while it does not answer yet)."""
        if self.process.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.proc.returncode}:\n{self.log()}")
        try:
            return sample(rig.scrape(self.port, timeout=2), "vdc_operator_leader")
        except OSError:
            return None

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")


class Replicas:
    def __init__(self, cp: rig.ControlPlane, tmp_path: Path) -> None:
        self.cp = cp
        self.tmp_path = tmp_path
        self.lease = f"vdc-it-{uuid.uuid4().hex[:8]}"
        self.started: list[Replica] = []

    def start(self, name: str) -> Replica:
        port, liveness = rig.free_ports(2)
        env = {**self.cp.env, "POD_NAME": name, "POD_NAMESPACE": NAMESPACE}
        args = [
            "--leader-elect", f"--lease-name={self.lease}",
            f"--lease-duration={LEASE_DURATION}", f"--renew-deadline={RENEW_DEADLINE}",
            f"--retry-period={RETRY_PERIOD}",
            "--metrics-address=127.0.0.1", f"--metrics-port={port}", "--stats-interval=5",
            f"--liveness=http://127.0.0.1:{liveness}/healthz",
        ]  # fmt: skip
        process = rig.OperatorProcess.start(*args, env=env, log=self.tmp_path / f"{name}.log")
        replica = Replica(name, process, port, liveness)
        self.started.append(replica)
        return replica

    def lease_spec(self) -> dict[str, Any]:
        out = self.cp.kubectl("get", "lease", self.lease, "-n", NAMESPACE, "-o", "json", "--ignore-not-found")
        return dict(json.loads(out)["spec"]) if out.strip() else {}

    def holder(self) -> str | None:
        return self.lease_spec().get("holderIdentity") or None

    def leader_and_standby(self) -> tuple[Replica, Replica]:
        """Once one replica holds the Lease and says so, and the other answers as a standby."""
        a, b = self.started

        def settled() -> tuple[Replica, Replica] | None:
            holder = self.holder()
            if holder not in (a.name, b.name):
                return None
            leader, standby = (a, b) if holder == a.name else (b, a)
            return (leader, standby) if (leader.leader_gauge(), standby.leader_gauge()) == (1.0, 0.0) else None

        return until("one leader and one standby", settled)

    def stop_all(self) -> None:
        for replica in self.started:
            if replica.process.proc.poll() is None:
                os.killpg(replica.process.proc.pid, signal.SIGCONT)  # a stopped one cannot handle SIGTERM
                replica.process.stop()
            print(f"--- {replica.name} (exit {replica.process.proc.returncode}):\n{rig.tail(replica.process.log)}")


@pytest.fixture
def replicas(controlplane: rig.ControlPlane, tmp_path: Path) -> Iterator[Replicas]:
    controlplane.kubectl("create", "namespace", NAMESPACE, check=False)
    group = Replicas(controlplane, tmp_path)
    try:
        yield group
    finally:
        group.stop_all()
        controlplane.kubectl("delete", "lease", group.lease, "-n", NAMESPACE, "--ignore-not-found")


def test_one_leads_and_the_standby_takes_over_when_the_leader_is_killed(replicas: Replicas) -> None:
    replicas.start("replica-a")
    replicas.start("replica-b")
    leader, standby = replicas.leader_and_standby()
    until("the leader's operator started", lambda: STARTED in leader.log())
    time.sleep(3 * RETRY_PERIOD)  # renewals: nothing moves
    assert replicas.holder() == leader.name
    assert (leader.leader_gauge(), standby.leader_gauge()) == (1.0, 0.0)
    assert STARTED not in standby.log() and "leading:" not in standby.log()  # nothing of the operator runs
    assert "standing by for Lease" in standby.log()
    # kopf's liveness endpoint (the chart's livenessProbe) answers on the standby too, from a stand-in
    assert standby.liveness_answer() == {"leader": False}
    until("the leader's kopf liveness endpoint", lambda: leader.liveness_answer() == {})
    transitions = replicas.lease_spec().get("leaseTransitions", 0)

    killed = time.monotonic()
    leader.process.kill()  # SIGKILL: no release, the Lease must expire
    until("the standby holding the Lease", lambda: replicas.holder() == standby.name)
    takeover = time.monotonic() - killed
    until("the new leader's gauge", lambda: standby.leader_gauge() == 1.0)
    until("the new leader's operator started", lambda: STARTED in standby.log())
    until("the new leader's kopf liveness endpoint", lambda: standby.liveness_answer() == {})
    started = time.monotonic() - killed
    print(
        f"takeover after SIGKILL: Lease held by the standby {takeover:.1f}s after the kill, operator started"
        f" {started:.1f}s after (lease duration {LEASE_DURATION}s, retry period {RETRY_PERIOD}s)"
    )
    assert replicas.lease_spec().get("leaseTransitions", 0) == transitions + 1

    # A clean stop (SIGTERM) releases the Lease: a standby would not have to wait for it to expire.
    standby.process.stop()
    assert standby.process.proc.returncode == 0, standby.log()
    spec = replicas.lease_spec()
    assert not spec.get("holderIdentity") and spec["leaseDurationSeconds"] == 1, spec


def _without_renewal(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "renewTime"}


def test_a_leader_that_cannot_renew_exits_when_it_resumes(replicas: Replicas) -> None:
    replicas.start("replica-c")
    replicas.start("replica-d")
    leader, standby = replicas.leader_and_standby()
    until("the leader's operator started", lambda: STARTED in leader.log())

    stopped = time.monotonic()
    os.killpg(leader.process.proc.pid, signal.SIGSTOP)  # as a stall or a lost network: no renewal
    until("the standby holding the Lease", lambda: replicas.holder() == standby.name)
    print(f"takeover from a SIGSTOPped leader: {time.monotonic() - stopped:.1f}s")
    until("the new leader's gauge", lambda: standby.leader_gauge() == 1.0)
    spec = replicas.lease_spec()

    before = len(leader.log())
    os.killpg(leader.process.proc.pid, signal.SIGCONT)
    resumed = time.monotonic()
    code = leader.process.proc.wait(timeout=30)
    print(f"the deposed leader exited {time.monotonic() - resumed:.2f}s after SIGCONT with code {code}")
    after = leader.log()[before:]
    assert code == 1, after
    assert "leadership lost" in after, after
    # it did not take the Lease back (nor write anything first: the SIGCONT handler ran before the loop);
    # renewTime moves on: the new leader renews it
    assert _without_renewal(replicas.lease_spec()) == _without_renewal(spec)
    assert standby.leader_gauge() == 1.0
