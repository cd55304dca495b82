"""The test HTTP file server (tests/httpserve.py): whole files, HEAD, byte ranges, drops, failures, log."""

from __future__ import annotations

import http.client
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from httpserve import FileServer, serve

DATA = os.urandom(300_000)  # several 64 KiB chunks, not a multiple of one


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    (tmp_path / "disk.ova").write_bytes(DATA)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a b.txt").write_bytes(b"spaced")
    with FileServer(tmp_path) as s:
        yield s


def request(
    server: FileServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_get_serves_the_whole_file_with_validators(server: FileServer) -> None:
    with urllib.request.urlopen(server.url("disk.ova"), timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(DATA))
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["ETag"] and response.headers["Last-Modified"]
        assert response.read() == DATA
    (logged,) = server.requests
    assert (logged.method, logged.path, logged.status, logged.body_bytes, logged.dropped) == (
        "GET",
        "/disk.ova",
        200,
        len(DATA),
        False,
    )


def test_head_gives_the_headers_without_a_body(server: FileServer) -> None:
    status, headers, body = request(server, "/disk.ova", "HEAD")
    assert (status, headers["content-length"], body) == (200, str(len(DATA)), b"")
    assert server.requests[-1].method == "HEAD" and server.requests[-1].body_bytes == 0


def test_quoted_names_and_subdirectories(server: FileServer) -> None:
    assert server.url("sub/a b.txt").endswith("/sub/a%20b.txt")
    with urllib.request.urlopen(server.url("sub/a b.txt"), timeout=10) as response:
        assert response.read() == b"spaced"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=1000-", 1000, len(DATA) - 1),
        ("bytes=0-0", 0, 0),
        ("bytes=70000-140000", 70000, 140000),
        ("bytes=299990-999999", 299990, len(DATA) - 1),  # an end past the file is cut to it
        ("bytes=-500", len(DATA) - 500, len(DATA) - 1),
        ("bytes=-999999", 0, len(DATA) - 1),
    ],
)
def test_byte_ranges(server: FileServer, header: str, start: int, end: int) -> None:
    status, headers, body = request(server, "/disk.ova", headers={"Range": header})
    assert status == 206
    assert headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert headers["content-length"] == str(end - start + 1)
    assert body == DATA[start : end + 1]
    assert server.requests[-1].range == header


@pytest.mark.parametrize("header", ["bytes=300000-", "bytes=-0"])
def test_unsatisfiable_ranges_get_416(server: FileServer, header: str) -> None:
    status, headers, _ = request(server, "/disk.ova", headers={"Range": header})
    assert (status, headers["content-range"]) == (416, f"bytes */{len(DATA)}")


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-3", "items=0-5", "bytes=-"])
def test_other_range_headers_are_ignored(server: FileServer, header: str) -> None:
    status, headers, body = request(server, "/disk.ova", headers={"Range": header})
    assert (status, body) == (200, DATA) and "content-range" not in headers


def test_if_range_resumes_only_the_same_file(server: FileServer, tmp_path: Path) -> None:
    _, headers, _ = request(server, "/disk.ova", "HEAD")
    status, _, body = request(server, "/disk.ova", headers={"Range": "bytes=10-", "If-Range": headers["etag"]})
    assert (status, body) == (206, DATA[10:])
    (tmp_path / "disk.ova").write_bytes(DATA[::-1])  # changed: the old ETag no longer matches
    status, _, body = request(server, "/disk.ova", headers={"Range": "bytes=10-", "If-Range": headers["etag"]})
    assert (status, body) == (200, DATA[::-1])


@pytest.mark.parametrize("path", ["/missing", "/sub", "/", "/../disk.ova", "/sub/../../etc/passwd", "/%2e%2e/x"])
def test_not_found(server: FileServer, path: str) -> None:
    status, _, _ = request(server, path)
    assert status == 404


def test_empty_file(server: FileServer) -> None:
    status, headers, body = request(server, "/empty")
    assert (status, headers["content-length"], body) == (200, "0", b"")


def test_drop_after_cuts_one_download_which_then_resumes(server: FileServer) -> None:
    server.drop_after(100_000, "disk.ova")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/disk.ova")
    response = conn.getresponse()
    assert response.status == 200 and response.headers["Content-Length"] == str(len(DATA))
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    conn.close()
    got = cut.value.partial
    assert got == DATA[:100_000]
    assert server.requests[-1].dropped and server.requests[-1].body_bytes == 100_000

    status, _, rest = request(server, "/disk.ova", headers={"Range": f"bytes={len(got)}-"})
    assert status == 206 and got + rest == DATA
    status, _, body = request(server, "/disk.ova")  # once: the next download is whole
    assert (status, body) == (200, DATA)
    assert [r.dropped for r in server.requests] == [True, False, False]


def test_drop_after_names_a_file_and_spares_the_others(server: FileServer) -> None:
    server.drop_after(0, "disk.ova")
    assert request(server, "/sub/a%20b.txt")[2] == b"spaced"
    with pytest.raises(http.client.IncompleteRead):
        request(server, "/disk.ova")
    assert request(server, "/disk.ova")[2] == DATA


def test_fail_next_answers_once_with_the_status(server: FileServer) -> None:
    server.fail_next(503)
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(server.url("disk.ova"), timeout=10)
    assert failed.value.code == 503
    failed.value.close()
    assert request(server, "/disk.ova")[0] == 200
    assert [r.status for r in server.requests] == [503, 200]
    with pytest.raises(ValueError):
        server.fail_next(999)


def test_connections_are_kept_alive(server: FileServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for header in ("bytes=0-9", "bytes=10-19"):
            conn.request("GET", "/disk.ova", headers={"Range": header})
            response = conn.getresponse()
            assert response.status == 206
            response.read()
        conn.request("HEAD", "/disk.ova")
        conn.getresponse().read()
        sock = conn.sock
        conn.request("GET", "/empty")
        conn.getresponse().read()
        assert conn.sock is sock  # same socket throughout
    finally:
        conn.close()


def test_concurrent_downloads(server: FileServer) -> None:
    results: list[bytes] = []

    def fetch() -> None:
        results.append(request(server, "/disk.ova")[2])

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [DATA] * 4


def test_rate_slows_the_body_down(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(DATA[:50_000])
    with serve(tmp_path, rate=200_000) as server:
        began = time.monotonic()
        assert request(server, "/f")[2] == DATA[:50_000]
        assert time.monotonic() - began >= 0.2  # 50 kB at 200 kB/s: at least 0.25 s
        server.rate = None
        assert server.rate is None


def test_stop_frees_the_port(tmp_path: Path) -> None:
    server = serve(tmp_path)
    port = server.port
    server.stop()
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
