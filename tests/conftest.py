"""Shared fixtures. Tiers are marked by directory: tests/unit, tests/integration, tests/e2e."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import rig


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).relative_to(rig.REPO / "tests").parts[0]
        if tier in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rig.ControlPlane]:
    """A real kube-apiserver + etcd on loopback with the vdc CRDs installed, for the whole session."""
    state = tmp_path_factory.mktemp("vdc-state")
    try:
        cp = rig.start_controlplane(state)
        rig.install_crds(cp)
        yield cp
    finally:
        rig.stop_controlplane(state)
