"""``vdc drs``: what it prints of a ComputeCluster's DRS and DPM, and applying recommendations."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vdc.api.computecluster import DRS_APPLY_ANNOTATION
from vdc.cli import drs
from vdc.cli.context import Kube
from vdc.cli.main import build_parser, main

pytestmark = pytest.mark.unit

REC_A = {
    "id": "r-web",
    "namespace": "team-a",
    "vm": "web",
    "source": "hv1",
    "target": "hv2",
    "reason": "Balance",
    "message": "hv1 at 90%",
    "imbalanceBefore": "0.300",
    "imbalanceAfter": "0.100",
}
REC_B = {
    "id": "r-db",
    "namespace": "team-b",
    "vm": "db",
    "source": "hv1",
    "target": "hv3",
    "reason": "RuleViolation",
    "rule": "keep-apart",
    "message": "apart from web",
    "imbalanceBefore": "0.100",
    "imbalanceAfter": "0.050",
}
CLUSTER = {
    "metadata": {"name": "c1"},
    "status": {
        "drs": {
            "automation": "Manual", "imbalance": "0.300", "target": "0.150", "message": "2 moves recommended",
            "moving": 0, "recommendations": [REC_A, REC_B],
            "violations": [{"rule": "keep-apart", "message": "web and db both on hv1"}],
            "hosts": [{"host": "hv1", "power": "On", "cpuDemandMilli": 3500, "cpus": 4, "memoryDemand": "6Gi",
                       "memory": "8Gi", "loadPercent": 88, "vms": 2},
                      {"host": "hv2", "power": "On", "cpuDemandMilli": 500, "cpus": 4, "memoryDemand": "1Gi",
                       "memory": "8Gi", "loadPercent": 13, "vms": 1}],
        },
        "dpm": {"automation": "Manual", "utilizationPercent": 40, "hostsOn": 3, "standby": ["hv4"],
                "message": "hv3 could sleep", "recommendations": [{"host": "hv3", "action": "Standby",
                                                                   "message": "idle for 40 min"}]},
    },
}  # fmt: skip


def test_describe_prints_the_summary_the_loads_the_recommendations_and_dpm() -> None:
    text = drs.describe(CLUSTER)
    assert "cluster c1: DRS Manual, imbalance 0.300 (target 0.150), 0 moving: 2 moves recommended" in text
    assert any(line.split() == ["hv1", "On", "3.50/4", "6Gi/8Gi", "88%", "2"] for line in text.splitlines())
    assert any(
        line.split() == ["r-db", "team-b/db", "hv1", "->", "hv3", "RuleViolation/keep-apart", "0.100->0.050", "<none>"]
        for line in text.splitlines()
    )
    assert "r-web   team-a/web   hv1 -> hv2" in text
    assert "keep-apart: web and db both on hv1" in text
    assert "DPM Manual: utilization 40%, 3 host(s) on, standby: hv4: hv3 could sleep" in text
    assert any(line.split()[:2] == ["hv3", "Standby"] for line in text.splitlines())


def test_describe_says_when_drs_and_dpm_are_off() -> None:
    text = drs.describe({"metadata": {"name": "c2"}, "status": {}})
    assert "cluster c2: DRS not enabled" in text and "DPM: off" in text


def test_list_is_the_default_and_apply_takes_ids_or_all() -> None:
    args = build_parser().parse_args(["drs", "c1"])
    assert (args.cluster, args.action, args.ids, args.all, args.timeout) == ("c1", "list", [], False, 60.0)
    args = build_parser().parse_args(["drs", "c1", "apply", "a", "b"])
    assert (args.action, args.ids) == ("apply", ["a", "b"])
    assert build_parser().parse_args(["drs", "c1", "apply", "--all"]).all


# --- the commands against a fake API server -------------------------------------------------------


class FakeCustom:
    """What ``vdc drs`` uses of CustomObjectsApi over one cluster; the operator acts after ``reads_until_done``
    reads following the patch (None: never)."""

    def __init__(self, cluster: dict[str, Any], reads_until_done: int | None = 2) -> None:
        self.cluster = copy.deepcopy(cluster)
        self.reads_until_done = reads_until_done
        self.patches: list[dict[str, Any]] = []
        self.makes = True

    def get_cluster_custom_object(self, _g: str, _v: str, plural: str, name: str) -> dict[str, Any]:
        assert (plural, name) == ("computeclusters", "c1")
        if self.patches and self.reads_until_done is not None:
            self.reads_until_done -= 1
            if self.reads_until_done == 0:  # the operator: make the migrations, remove the annotation
                token = self.cluster["metadata"]["annotations"].pop(DRS_APPLY_ANNOTATION)
                for rec in self.cluster["status"]["drs"]["recommendations"]:
                    if self.makes and (token == "all" or rec["id"] in token.split(",")):
                        rec["migration"] = f"drs-{rec['vm']}"
        return copy.deepcopy(self.cluster)

    def patch_cluster_custom_object(
        self, _g: str, _v: str, plural: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        assert (plural, name) == ("computeclusters", "c1")
        self.patches.append(body)
        self.cluster["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        return self.cluster


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCustom:
    custom = FakeCustom(CLUSTER)
    monkeypatch.setattr(Kube, "from_args", classmethod(lambda cls, args: cls(None, "default")))
    monkeypatch.setattr(Kube, "custom", property(lambda self: custom))
    monkeypatch.setattr(drs, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(drs, "SETTLE_SECONDS", 0.0)
    return custom


def test_list_prints_the_cluster(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drs", "c1"]) == 0
    assert "imbalance 0.300 (target 0.150)" in capsys.readouterr().out
    assert not fake.patches


def test_apply_sets_the_annotation_waits_and_prints_the_migrations(
    fake: FakeCustom, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drs", "c1", "apply", "r-db"]) == 0
    assert fake.patches == [{"metadata": {"annotations": {DRS_APPLY_ANNOTATION: "r-db"}}}]
    out = capsys.readouterr().out
    assert "r-db: team-b/db hv1 -> hv3: migration drs-db" in out
    assert "kubectl get virtualmachinemigrations -n team-b drs-db" in out
    assert "r-web" not in out


def test_apply_all(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drs", "c1", "apply", "--all"]) == 0
    assert fake.patches == [{"metadata": {"annotations": {DRS_APPLY_ANNOTATION: "all"}}}]
    out = capsys.readouterr().out
    assert "migration drs-web" in out and "migration drs-db" in out


def test_apply_of_unknown_ids_is_an_error(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drs", "c1", "apply", "r-web", "nope"]) == 1
    assert "unknown recommendation id(s): nope" in capsys.readouterr().err
    assert not fake.patches


@pytest.mark.parametrize("argv", [["apply"], ["apply", "r-web", "--all"], ["list", "r-web"]])
def test_bad_arguments_are_errors(argv: list[str], fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drs", "c1", *argv]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert not fake.patches


def test_apply_without_drs_is_an_error(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    del fake.cluster["status"]["drs"]
    assert main(["drs", "c1", "apply", "--all"]) == 1
    assert "DRS not enabled" in capsys.readouterr().err


def test_apply_times_out_when_the_operator_does_not_act(fake: FakeCustom, capsys: pytest.CaptureFixture[str]) -> None:
    fake.reads_until_done = None
    assert main(["drs", "c1", "apply", "r-web", "--timeout", "0.01"]) == 1
    assert "timed out after 0.01s" in capsys.readouterr().err


def test_apply_is_exit_1_when_a_recommendation_was_not_made(
    fake: FakeCustom, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.makes = False  # the operator removes the annotation but makes nothing (maxConcurrentMoves)
    assert main(["drs", "c1", "apply", "r-web"]) == 1
    assert "r-web: team-a/web not moved yet (maxConcurrentMoves reached?)" in capsys.readouterr().out
    fake.cluster["status"]["drs"]["recommendations"] = [REC_B]  # no longer recommended
    assert drs.applied(fake.cluster, ["r-web"]) == "r-web: no longer recommended (nothing made)\n"
