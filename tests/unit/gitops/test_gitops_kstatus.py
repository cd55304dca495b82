"""What Flux sees: kstatus (sigs.k8s.io/cli-utils, the real Go library, built by hack/build-kstatus.sh)
computed for samples of every kind in each of its states, and agreement with our Argo CD health Lua.

The binary is built by `make bootstrap`; when it is missing these tests fail (they do not skip).
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
import yaml
from gitops_samples import GENERATION, WITHOUT_STATUS, Sample, samples
from gitops_tools import argo_health, kstatus, kstatus_stream

# kstatus status -> the Argo CD health that means the same.
SAME_MEANING = {"Current": "Healthy", "InProgress": "Progressing", "Failed": "Degraded", "Terminating": "Progressing"}


@pytest.fixture(scope="module")
def verdicts() -> dict[str, dict[str, str]]:
    all_samples = samples()
    return {s.id: v for s, v in zip(all_samples, kstatus([s.body for s in all_samples]), strict=True)}


@pytest.mark.parametrize("sample", samples(), ids=lambda s: s.id)
def test_gitops_kstatus_of_each_state(sample: Sample, verdicts: dict[str, dict[str, str]]) -> None:
    verdict = verdicts[sample.id]
    assert (verdict["kind"], verdict["name"]) == (sample.kind, sample.body["metadata"]["name"])
    assert verdict["status"] == sample.kstatus, verdict
    if sample.message:
        assert sample.message in verdict["message"], verdict


@pytest.mark.parametrize("sample", [s for s in samples() if s.category != "no-status"], ids=lambda s: s.id)
def test_gitops_argo_and_kstatus_agree(sample: Sample, verdicts: dict[str, dict[str, str]]) -> None:
    assert SAME_MEANING[verdicts[sample.id]["status"]] == argo_health(sample.body)[0]


def test_gitops_kstatus_reads_lists_and_yaml_streams() -> None:
    ready = next(s for s in samples() if s.id == "VirtualMachine-running").body
    stalled = next(s for s in samples() if s.id == "VirtualMachine-invalid-spec").body
    listed = kstatus_stream(json.dumps({"apiVersion": "v1", "kind": "List", "items": [ready, stalled]}))
    assert [v["status"] for v in listed] == ["Current", "Failed"]
    deleting = next(s for s in samples() if s.id == "Host-deleting").body
    docs = [ready, {"apiVersion": "v1", "kind": "List", "items": [stalled]}, deleting]
    stream = "---\n".join(yaml.safe_dump(d) for d in docs).replace("---\n", "---\n---\n", 1)  # with an empty one
    assert [v["status"] for v in kstatus_stream(stream)] == ["Current", "Failed", "Terminating"]


def _random_body(rng: random.Random, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with a random mix of the states kstatus and the Lua both look at."""
    body = copy.deepcopy(base)
    body["metadata"]["generation"] = GENERATION
    if rng.random() < 0.1:
        body["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    status = body.setdefault("status", {})  # a kind without status (WITHOUT_STATUS) gets one here
    status["observedGeneration"] = rng.choice([GENERATION, GENERATION, GENERATION, GENERATION - 1])
    conditions = []
    for type_ in ("Ready", "Reconciling", "Stalled", "Scheduled"):
        if rng.random() < 0.85:
            value = rng.choice(["True", "False", "Unknown"])
            conditions.append({"type": type_, "status": value, "reason": f"R{type_}", "message": f"{type_} {value}"})
    # kstatus takes the first of Reconciling/Stalled that is True; our operator never sets both.
    if sum(c["type"] in ("Reconciling", "Stalled") and c["status"] == "True" for c in conditions) > 1:
        conditions = [c for c in conditions if c["type"] != "Reconciling"]
    rng.shuffle(conditions)
    status["conditions"] = conditions
    return body


def test_gitops_argo_and_kstatus_agree_on_random_condition_mixes() -> None:
    """Hundreds of random combinations of deletion, observedGeneration and conditions for every kind:
    the Lua follows kstatus's rules exactly wherever the object has a Ready condition."""
    rng = random.Random(20260102)
    bases = [s.body for s in samples() if s.category == "ready"]
    bodies = [_random_body(rng, base) for base in bases for _ in range(80)]
    for body, verdict in zip(bodies, kstatus(bodies), strict=True):
        has_ready = any(c["type"] == "Ready" for c in body["status"]["conditions"])
        argo = argo_health(body)
        if not has_ready and verdict["status"] == "Current" and body["kind"] not in WITHOUT_STATUS:
            # kstatus: no known condition at all means Current; the Lua waits for Ready (but for a
            # kind without status, where it agrees with kstatus: checked below).
            assert argo[0] == "Progressing", (body, argo)
            continue
        assert SAME_MEANING[verdict["status"]] == argo[0], (body["status"], body["metadata"], verdict, argo)
