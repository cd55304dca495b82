"""Every example parses into its model: the models and the CRDs describe the same API."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import rig
from vdc.api import ALL_KINDS

EXAMPLES = rig.example_manifests()
MODELS = {k.KIND.kind: k for k in ALL_KINDS}


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_into_its_model(example: Path) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    ours = [d for d in docs if d["apiVersion"] == "vdc.dev/v1alpha1"]
    assert ours or all(d["kind"] == "Namespace" for d in docs), f"{example.name} has no vdc.dev object"
    for doc in ours:
        model = MODELS[doc["kind"]].model_validate(doc)
        assert MODELS[doc["kind"]].model_validate(model.to_wire()) == model
