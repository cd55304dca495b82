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


class OperatorCrashAfterHostHang(AssertionError):
    """The one violation the xfail below names; any other violation fails the test."""


@pytest.mark.timeout(600)
@pytest.mark.xfail(
    raises=OperatorCrashAfterHostHang,
    strict=False,
    reason="operator bug: after a hung host's libvirt connection is closed by keepalive, HostConnection.call "
    "never marks it lost (the libvirt layer raises already-translated LibvirtFailure 'client socket is closed', "
    "so the lost-connection check in call() is skipped); calls go on on the dead connection and the operator "
    "dies with SIGSEGV inside libvirt-python (virNetworkGetXMLDesc / virStoragePoolLookupByName) when the host "
    "resumes (host-hang of more than ~15 s)",
)
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
    )
    report = chaos.run(config)
    print(chaos.format_report(report))
    assert report.faults and all(f.converged_at is not None for f in report.faults), chaos.format_report(report)
    known = [v for v in report.violations if v.check == "operator-exited" and "Segmentation fault" in v.message]
    assert len(known) == len(report.violations), report.violation_text()
    if known:
        raise OperatorCrashAfterHostHang(report.violation_text())
