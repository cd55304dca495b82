"""The Argo CD health checks (charts/vdc-operator/argocd/health/vdc.dev/<Kind>/health.lua), run for
real (Lua 5.1 via lupa) against samples of every kind in each of its states, and their rendering into
argocd-cm (charts/vdc-operator/argocd/argocd-cm-health.yaml), which must not be stale."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from gitops_samples import GENERATION, Sample, samples
from gitops_tools import GROUP, HEALTH_DIR, argo_health, health_script

import rig
from vdc import gitops
from vdc.api import ALL_KINDS

KINDS = [k.KIND.kind for k in ALL_KINDS]
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing"}


@pytest.mark.parametrize("sample", samples(), ids=lambda s: s.id)
def test_gitops_argo_health_of_each_state(sample: Sample) -> None:
    status, message = argo_health(sample.body)
    assert status in ARGO_STATUSES
    assert status == sample.argo, message
    assert message, "a health message says why"
    if sample.message:
        assert sample.message in message


def test_gitops_every_kind_has_samples_in_every_common_state() -> None:
    seen = {(s.kind, s.category) for s in samples()}
    for kind in KINDS:
        for category in ("ready", "working", "stalled", "deleting", "not-observed", "no-status"):
            assert (kind, category) in seen, f"no {category} sample for {kind}"
    assert ("VirtualMachine", "stopped") in seen


def test_gitops_there_is_one_health_check_per_kind_and_no_other() -> None:
    found = sorted(p.relative_to(HEALTH_DIR).as_posix() for p in HEALTH_DIR.rglob("*.lua"))
    assert found == sorted(f"{GROUP}/{kind}/health.lua" for kind in KINDS)


def test_gitops_shared_part_is_identical_in_every_script() -> None:
    def common(kind: str) -> str:
        match = re.search(r"-- BEGIN vdc-common.*?-- END vdc-common\n", health_script(kind).read_text(), re.S)
        assert match, f"{kind}: no vdc-common section"
        return match.group(0)

    assert len({common(kind) for kind in KINDS}) == 1


def test_gitops_vm_messages_name_the_phase() -> None:
    by_id = {s.id: s for s in samples()}
    assert argo_health(by_id["VirtualMachine-halted-stopped"].body)[1].startswith("Stopped: ")
    assert argo_health(by_id["VirtualMachine-running"].body)[1].startswith("Running: ")


def test_gitops_appliance_download_shows_progress() -> None:
    body = next(s for s in samples() if s.id == "Appliance-downloading").body
    assert argo_health(body)[1].startswith("Downloading 45%: ")
    body = copy.deepcopy(body)
    body["status"]["progress"] = {"bytesDone": 0}  # size not known yet: no percentage
    assert argo_health(body)[1].startswith("Downloading: ")


def test_gitops_stalled_wins_over_reconciling_and_ready() -> None:
    body = copy.deepcopy(next(s for s in samples() if s.id == "VirtualMachine-running").body)
    for cond in body["status"]["conditions"]:
        if cond["type"] in ("Stalled", "Reconciling"):
            cond["status"] = "True"
            cond["message"] = f"{cond['type']} says so"
    assert argo_health(body) == ("Degraded", "Running: Stalled says so")


def test_gitops_missing_observed_generation_counts_as_not_observed() -> None:
    body = copy.deepcopy(next(s for s in samples() if s.id == "Host-connected").body)
    del body["status"]["observedGeneration"]
    status, message = argo_health(body)
    assert (status, message) == (
        "Progressing",
        f"Waiting for the operator: generation is {GENERATION}, but the latest observed generation is none",
    )


def test_gitops_ready_missing_is_progressing() -> None:
    body = copy.deepcopy(next(s for s in samples() if s.id == "StoragePool-running").body)
    body["status"]["conditions"] = [c for c in body["status"]["conditions"] if c["type"] != "Ready"]
    assert argo_health(body) == ("Progressing", "Waiting for the Ready condition")


# --- argocd-cm rendering ----------------------------------------------------------------------
def test_gitops_committed_argocd_cm_is_fresh() -> None:
    fresh = gitops.render_argocd_cm(gitops.read_health_scripts(rig.REPO / gitops.HEALTH_DIR))
    committed = rig.REPO / gitops.RENDERED
    assert gitops.differences(committed.read_text() if committed.exists() else None, fresh) == [], (
        "run `make argocd-health` and commit the result"
    )


def test_gitops_argocd_cm_carries_each_script_verbatim() -> None:
    doc = yaml.safe_load((rig.REPO / gitops.RENDERED).read_text())
    assert (doc["kind"], doc["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert sorted(doc["data"]) == sorted(f"resource.customizations.health.vdc.dev_{kind}" for kind in KINDS)
    for kind in KINDS:
        assert doc["data"][gitops.config_key(GROUP, kind)] == health_script(kind).read_text()


def test_gitops_argocd_cm_scripts_run() -> None:
    """The scripts as Argo CD reads them from argocd-cm give the same verdicts as the files."""
    data = yaml.safe_load((rig.REPO / gitops.RENDERED).read_text())["data"]
    for sample in samples():
        assert argo_health(sample.body, data[gitops.config_key(GROUP, sample.kind)]) == argo_health(sample.body)


def test_gitops_differences_reports_stale_and_missing() -> None:
    scripts = {(GROUP, "Host"): "return {status = 'Healthy'}\n"}
    fresh = gitops.render_argocd_cm(scripts)
    assert gitops.differences(fresh, fresh) == []
    assert gitops.differences(None, fresh) and "missing" in gitops.differences(None, fresh)[0]
    stale = gitops.render_argocd_cm({(GROUP, "Host"): "return {status = 'Degraded'}\n"})
    assert gitops.differences(stale, fresh)


def test_gitops_render_refuses_what_a_block_scalar_would_mangle() -> None:
    for bad in ("x = 1  \n", "x = 1\n\n", "x = 1", "\tx = 1\n", "  x = 1\n"):
        with pytest.raises(ValueError):
            gitops.render_argocd_cm({(GROUP, "Host"): bad})
    with pytest.raises(ValueError):
        gitops.render_argocd_cm({})


def test_gitops_cli_check_and_write(tmp_path: Path) -> None:
    (tmp_path / gitops.HEALTH_DIR / GROUP / "Host").mkdir(parents=True)
    (tmp_path / gitops.HEALTH_DIR / GROUP / "Host" / "health.lua").write_text("return {status = 'Healthy'}\n")
    (tmp_path / gitops.RENDERED).parent.mkdir(parents=True, exist_ok=True)
    assert gitops.main(["--repo", str(tmp_path), "--check"]) == 1
    assert gitops.main(["--repo", str(tmp_path)]) == 0
    assert gitops.main(["--repo", str(tmp_path), "--check"]) == 0
    data = yaml.safe_load((tmp_path / gitops.RENDERED).read_text())["data"]
    assert data == {"resource.customizations.health.vdc.dev_Host": "return {status = 'Healthy'}\n"}
