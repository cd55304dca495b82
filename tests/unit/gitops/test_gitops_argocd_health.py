"""The Argo CD health checks (charts/vdc-operator/argocd/health/vdc.dev/<Kind>/health.lua), run for
real (Lua 5.1 via lupa) against samples of every kind in each of its states, and their generation
(by vdc.gitops, from charts/vdc-operator/argocd/health-src/) together with the argocd-cm snippet
(charts/vdc-operator/argocd/argocd-cm-health.yaml): the committed files must not be stale."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from gitops_samples import COMMON_STATES, GENERATION, MIGRATED, STATES_OF_KIND, Sample, samples
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
        if kind in STATES_OF_KIND:  # its own states, exactly: no category it cannot be in
            assert {c for k, c in seen if k == kind} == set(STATES_OF_KIND[kind]), kind
            continue
        for category in COMMON_STATES:
            assert (kind, category) in seen, f"no {category} sample for {kind}"
    assert set(STATES_OF_KIND) <= set(KINDS)
    assert ("VirtualMachine", "stopped") in seen


def test_gitops_there_is_one_health_check_per_kind_and_no_other() -> None:
    found = sorted(p.relative_to(HEALTH_DIR).as_posix() for p in HEALTH_DIR.rglob("*.lua"))
    assert found == sorted(f"{GROUP}/{kind}/health.lua" for kind in KINDS)


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


def test_gitops_quota_messages_show_use_against_each_limit() -> None:
    by_id = {s.id: s for s in samples()}
    assert argo_health(by_id["ComputeQuota-within-limits"].body) == (
        "Healthy",
        "2/10 VMs, 6/16 vCPUs, 2560Mi/32Gi memory, 1/2 public addresses: within limits",
    )
    status, message = argo_health(by_id["ComputeQuota-over-a-lowered-limit"].body)
    assert status == "Healthy"  # nothing is stopped; the message says no new VM is placed
    assert message.startswith("2/10 VMs, 6/4 vCPUs, ") and "no new VM is placed" in message
    body = copy.deepcopy(by_id["ComputeQuota-within-limits"].body)
    body["status"]["hard"] = {}  # no limit set: only the condition's message
    assert argo_health(body) == ("Healthy", "within limits")


def test_gitops_migration_messages_show_phase_and_percent() -> None:
    by_id = {s.id: s.body for s in samples() if s.kind == "VirtualMachineMigration"}
    migrating = by_id["VirtualMachineMigration-migrating"]
    assert argo_health(migrating) == ("Progressing", "Migrating 50%: migrating: 50% copied")
    body = copy.deepcopy(migrating)
    del body["status"]["progress"]["percent"]  # libvirt reported no totals: no percentage
    assert argo_health(body) == ("Progressing", "Migrating: migrating: 50% copied")
    assert argo_health(by_id["VirtualMachineMigration-migration-starting"]) == (
        "Progressing",
        "Migrating: migrating memory and disks root from hv1 to hv2",
    )
    assert argo_health(by_id["VirtualMachineMigration-preparing-target"])[1].startswith("PreparingTarget: recorded ")
    assert argo_health(by_id["VirtualMachineMigration-scheduling-waiting-for-a-slot"])[1].startswith(
        "Scheduling: waiting for a slot: "
    )
    # Rolling back: the phase it failed in, not the stale percentage.
    assert argo_health(by_id["VirtualMachineMigration-rolling-back"]) == (
        "Progressing",
        f"Rolling back from Migrating: failed: libvirt: {MIGRATED}",
    )
    assert argo_health(by_id["VirtualMachineMigration-undoing"])[1] == "Rolling back from Migrating: undid Migrating"
    # Ended: the phase and the message, no percentage (progress.percent is 100).
    assert argo_health(by_id["VirtualMachineMigration-succeeded"]) == (
        "Healthy",
        "Succeeded: moved from hv1 to hv2 in 12.3s, downtime 41 ms",
    )
    cancelled = by_id["VirtualMachineMigration-cancelled"]
    assert argo_health(cancelled) == ("Healthy", "Cancelled: the migration was deleted")
    assert argo_health(by_id["VirtualMachineMigration-cancelling"])[0] == "Progressing"


def test_gitops_failed_migration_names_the_phase_and_libvirts_error() -> None:
    by_id = {s.id: s.body for s in samples() if s.kind == "VirtualMachineMigration"}
    failed = by_id["VirtualMachineMigration-failed"]
    # libvirt's first line is the message already: not said twice (the other lines stay in status).
    assert argo_health(failed) == ("Degraded", f"Failed in Migrating: libvirt: {MIGRATED}")
    body = copy.deepcopy(failed)
    body["status"]["libvirtError"] = "\n  aborted after 312s: over the completion timeout  \ndetails"
    assert argo_health(body) == (
        "Degraded",
        f"Failed in Migrating: libvirt: {MIGRATED} (libvirt: aborted after 312s: over the completion timeout)",
    )
    assert argo_health(by_id["VirtualMachineMigration-refused"]) == (
        "Degraded",
        "Failed in Pending: VM web is not running (phase Stopped): only a running VM can be live-migrated",
    )
    status, message = argo_health(by_id["VirtualMachineMigration-invalid-spec"])
    assert (status, message.split(":")[0:2]) == ("Degraded", ["Failed", " invalid spec"])


def test_gitops_migration_policy_is_healthy_without_status() -> None:
    by_id = {s.id: s.body for s in samples() if s.kind == "MigrationPolicy"}
    for state in ("created", "edited"):  # no status, ever; an edit leaves nothing to observe
        assert argo_health(by_id[f"MigrationPolicy-{state}"])[0] == "Healthy"
    # A status some later operator writes goes by the common rules, as kstatus does.
    body = copy.deepcopy(by_id["MigrationPolicy-created"])
    body["status"] = {"observedGeneration": GENERATION - 1}
    assert argo_health(body)[0] == "Progressing"
    body["status"] = {"observedGeneration": GENERATION, "conditions": [{"type": "Stalled", "status": "True"}]}
    assert argo_health(body) == ("Degraded", "Stalled")
    body["status"]["conditions"] = [{"type": "Ready", "status": "False", "message": "bad selector"}]
    assert argo_health(body) == ("Progressing", "bad selector")
    body["status"]["conditions"] = [{"type": "Reconciling", "status": "False"}]
    assert argo_health(body)[0] == "Healthy"


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


# --- generation: health.lua per kind and argocd-cm, from health-src/ ----------------------------
def test_gitops_committed_generated_files_are_fresh() -> None:
    files = gitops.generate(*gitops.read_sources(rig.REPO))
    assert sorted(files) == sorted([gitops.RENDERED, *(health_script(kind).relative_to(rig.REPO) for kind in KINDS)])
    assert gitops.stale(rig.REPO, files) == [], "run `make argocd-health` and commit the result"


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


def test_gitops_render_refuses_what_a_block_scalar_would_mangle() -> None:
    for bad in ("x = 1\n\n", "x = 1", "  x = 1\n", "\n  x = 1\n", "x = 1\r\n"):
        with pytest.raises(ValueError):
            gitops.render_argocd_cm({(GROUP, "Host"): bad})
    with pytest.raises(ValueError):
        gitops.render_argocd_cm({})
    good = "x = 1  \n\n\ty = '\t'\n  \n-- end\n"  # trailing blanks, tabs, a blank line: all carried
    assert yaml.safe_load(gitops.render_argocd_cm({(GROUP, "Host"): good}))["data"] == {
        gitops.config_key(GROUP, "Host"): good
    }


def test_gitops_a_kind_part_must_define_detail() -> None:
    with pytest.raises(ValueError, match="detail"):
        gitops.health_script(GROUP, "Host", "local function details(status)\nend\n", "return {}\n")


def test_gitops_cli_generates_checks_and_cleans_up(tmp_path: Path) -> None:
    source = tmp_path / gitops.SOURCE_DIR
    (source / GROUP).mkdir(parents=True)
    (source / gitops.COMMON).write_text('return {status = "Healthy", message = detail(obj.status)}\n')
    (source / GROUP / "Host.lua").write_text("local function detail(status)\n  return status.phase\nend\n")
    generated = tmp_path / gitops.HEALTH_DIR / GROUP / "Host" / "health.lua"
    assert gitops.main(["--repo", str(tmp_path), "--check"]) == 1  # nothing generated yet
    assert gitops.main(["--repo", str(tmp_path)]) == 0
    assert gitops.main(["--repo", str(tmp_path), "--check"]) == 0
    # One self-contained script: the kind's part, then the common part.
    assert argo_health({"kind": "Host", "status": {"phase": "Connected"}}, generated.read_text()) == (
        "Healthy",
        "Connected",
    )
    data = yaml.safe_load((tmp_path / gitops.RENDERED).read_text())["data"]
    assert data == {gitops.config_key(GROUP, "Host"): generated.read_text()}

    (source / GROUP / "Host.lua").write_text("local function detail(status)\n  return 'changed'\nend\n")
    assert gitops.main(["--repo", str(tmp_path), "--check"]) == 1  # both generated files are stale now
    assert [p.split(":")[0] for p in gitops.stale(tmp_path, gitops.generate(*gitops.read_sources(tmp_path)))] == [
        str(gitops.RENDERED),
        str(generated.relative_to(tmp_path)),
    ]
    assert gitops.main(["--repo", str(tmp_path)]) == 0

    orphan = tmp_path / gitops.HEALTH_DIR / GROUP / "Gone" / "health.lua"
    orphan.parent.mkdir()
    orphan.write_text("-- a kind whose source was removed\n")
    assert gitops.main(["--repo", str(tmp_path), "--check"]) == 1
    assert gitops.main(["--repo", str(tmp_path)]) == 0
    assert not orphan.exists()
    assert gitops.main(["--repo", str(tmp_path), "--check"]) == 0
