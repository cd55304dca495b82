"""Appliance downloads (``vdc.fetch``) against a real HTTP server on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from httpserve import FileServer
from vdc.fetch import FetchFailed, FetchInterrupted, fetch

PAYLOAD = os.urandom(300_000)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    www = tmp_path / "www"
    www.mkdir()
    (www / "a.ova").write_bytes(PAYLOAD)
    with FileServer(www) as s:
        yield s


def test_a_download_lands_whole_with_progress(server: FileServer, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    assert fetch(
        server.url("a.ova"), tmp_path / "a", max_bytes=1 << 20, progress=lambda d, t: seen.append((d, t))
    ) == len(PAYLOAD)
    assert (tmp_path / "a").read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_an_interrupted_download_resumes_where_it_stopped(server: FileServer, tmp_path: Path) -> None:
    server.drop_after(100_000)
    with pytest.raises(FetchInterrupted):
        fetch(server.url("a.ova"), tmp_path / "a", max_bytes=1 << 20)
    partial = (tmp_path / "a").stat().st_size
    assert 0 < partial < len(PAYLOAD)
    assert fetch(server.url("a.ova"), tmp_path / "a", max_bytes=1 << 20) == len(PAYLOAD)
    assert (tmp_path / "a").read_bytes() == PAYLOAD
    assert server.requests[-1].range == f"bytes={partial}-"
    # A complete file asks for nothing more (the server says 416) and stays as it is.
    assert fetch(server.url("a.ova"), tmp_path / "a", max_bytes=1 << 20) == len(PAYLOAD)


def test_sizes_over_the_limit_are_refused(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(FetchFailed, match="more than the 1000 accepted"):
        fetch(server.url("a.ova"), tmp_path / "a", max_bytes=1000)


def test_server_errors_are_retried_and_client_errors_are_not(server: FileServer, tmp_path: Path) -> None:
    server.fail_next(503)
    with pytest.raises(FetchInterrupted, match="503"):
        fetch(server.url("a.ova"), tmp_path / "a", max_bytes=1 << 20)
    with pytest.raises(FetchFailed, match="404"):
        fetch(server.url("missing.ova"), tmp_path / "b", max_bytes=1 << 20)
    with pytest.raises(FetchInterrupted):
        fetch("http://127.0.0.1:1/none.ova", tmp_path / "c", max_bytes=1 << 20, timeout=2)
