"""A short chaos run (bench/chaos.py as a library): every kind of fault once or twice during a small
rollout and teardown, with a fixed seed, and every invariant checked after each fault and at the end.

It starts its own control plane (it restarts kube-apiserver and etcd) and its own rig hosts (it restarts
and hangs their libvirtd), so the session's shared control plane and hosts are left alone.
"""

from __future__ import annotations

import secrets
import sys

import pytest

import rig

sys.path.insert(0, str(rig.REPO / "bench"))
import chaos

SEED = 20261203
PLAN = [
    "operator-kill",
    "operator-kill",
    "apiserver-restart",
    "etcd-restart",
    "libvirtd-restart",
    "pool-full",
    "host-hang",
]


@pytest.mark.timeout(600)
def test_a_short_rollout_and_teardown_under_faults_keeps_every_invariant(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    config = chaos.Config(
        hosts=2,
        vms=30,
        qemu_vms=2,
        seed=SEED,
        plan=PLAN,
        baseline=False,
        state=tmp_path_factory.mktemp("chaos"),  # short: libvirt socket paths have a limit
        prefix=f"vdcq-{secrets.token_hex(2)}",
        converge_timeout=120,
        settle_timeout=60,
        hang_seconds=(20.0, 25.0),  # longer than the heartbeat's 15 s: the host is found lost while hung
    )
    report = chaos.run(config)
    print(chaos.format_report(report))
    assert report.faults and all(f.converged_at is not None for f in report.faults), chaos.format_report(report)
    assert not report.violations, report.violation_text()
