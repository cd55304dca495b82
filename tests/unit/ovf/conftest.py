"""Fixtures for the OVF library tests: the sample descriptors and a tar builder for hostile OVAs."""

from __future__ import annotations

import io
import itertools
import tarfile
from pathlib import Path

import pytest
from ovf_testlib import Member, TarBuilder

SAMPLES = Path(__file__).parent / "samples"


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def make_tar(tmp_path: Path) -> TarBuilder:
    """Write a tar of the members, in order, to a new file under tmp_path and return its path."""
    counter = itertools.count()

    def build(members: list[Member]) -> Path:
        path = tmp_path / f"package{next(counter)}.ova"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for member in members:
                if isinstance(member, tarfile.TarInfo):
                    tar.addfile(member)
                else:
                    name, data = member
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return path

    return build
