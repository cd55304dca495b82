"""A tiny threaded HTTP/1.1 file server on 127.0.0.1 for tests of downloaders (stdlib only).

Serves the files of one directory (symlinks are followed, so a test can link a cached OVA in
without copying it; no listings, no ``..``) with ``GET`` and ``HEAD``, ``Content-Length``,
``Last-Modified``, an ``ETag``, ``Accept-Ranges: bytes`` and single byte ranges (``bytes=N-``,
``bytes=N-M``, ``bytes=-S``: 206 with ``Content-Range``; 416 past the end; ``If-Range`` honoured;
other Range headers are ignored).
Connections are kept alive. Switches, each for the next matching request only:

- ``drop_after(k)``: send the headers and ``k`` body bytes, then cut the connection (an
  interrupted download; the client sees a short body);
- ``fail_next(status)``: answer with that status and a short body instead of the file;

and ``rate`` (bytes per second) slows every body down. Every request is logged (``requests``).

    with FileServer(directory) as server:
        urllib.request.urlopen(server.url("disk.ova"))
        assert server.requests[-1].status == 200
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

CHUNK = 64 << 10
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    """One request as the server saw and answered it."""

    method: str
    path: str  # URL path, unquoted, without the query
    headers: dict[str, str]  # lower-case names
    status: int
    body_bytes: int  # body bytes actually written
    dropped: bool = False  # the connection was cut on purpose (drop_after)

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass
class _Switch:
    path: str | None  # None: any file
    value: int


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Request] = field(default_factory=list)
    drops: list[_Switch] = field(default_factory=list)
    failures: list[_Switch] = field(default_factory=list)
    rate: int | None = None

    def take(self, switches: list[_Switch], path: str) -> int | None:
        with self.lock:
            for i, switch in enumerate(switches):
                if switch.path in (None, path):
                    del switches[i]
                    return switch.value
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vdc-test-httpserve/1"
    # Set on the per-server subclass.
    root: Path
    state: _State

    def log_message(self, format: str, *args: object) -> None:
        pass  # the request log is ``FileServer.requests``

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    # The log entry is written before the client can see the answer complete (before the headers are
    # flushed, before each body write), so a test that got its answer finds it in the log.
    def _record(self, path: str, status: int) -> int:
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.state.lock:
            self.state.requests.append(Request(self.command, path, headers, status, 0))
            return len(self.state.requests) - 1

    def _update(self, entry: int, body_bytes: int, dropped: bool = False) -> None:
        with self.state.lock:
            self.state.requests[entry] = replace(self.state.requests[entry], body_bytes=body_bytes, dropped=dropped)

    def _file(self, path: str) -> Path | None:
        parts = [p for p in path.split("/") if p]
        if not parts or any(p in (".", "..") or "\0" in p for p in parts):
            return None
        candidate = self.root.joinpath(*parts)
        return candidate if candidate.is_file() else None

    def _simple(self, path: str, status: int, head: bool, extra: dict[str, str] | None = None) -> None:
        body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        entry = self._record(path, status)
        if not head:
            self._update(entry, len(body))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        file = self._file(path)
        if file is None:
            self._simple(path, 404, head)
            return
        failure = self.state.take(self.state.failures, path)
        if failure is not None:
            self._simple(path, failure, head)
            return
        stat = file.stat()
        size = stat.st_size
        etag = '"' + hashlib.sha256(f"{stat.st_ino}-{size}-{stat.st_mtime_ns}".encode()).hexdigest()[:20] + '"'
        last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        start, end = 0, size - 1
        status = 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range in (etag, last_modified)):
            match = _RANGE.match(wanted.strip())
            first, last = match.groups() if match else ("", "")
            # One valid range; anything else (several ranges, last < first, junk) is ignored: the whole file.
            if (first or last) and not (first and last and int(last) < int(first)):
                if first:
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
                else:
                    start = max(size - int(last), 0)
                if start >= size:
                    self._simple(path, 416, head, {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
        length = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        entry = self._record(path, status)
        drop = None if head else self.state.take(self.state.drops, path)
        if drop is not None and drop >= length:
            drop = None  # nothing to cut
        if drop == 0:
            self._update(entry, 0, dropped=True)
        self.end_headers()
        if head:
            return
        sent = 0
        limit = length if drop is None else min(drop, length)
        began = time.monotonic()
        with file.open("rb") as f:
            f.seek(start)
            while sent < limit:
                rate = self.state.rate
                chunk = f.read(min(CHUNK, max(1, rate // 10) if rate else CHUNK, limit - sent))
                if not chunk:
                    break
                if rate:  # no byte leaves before its time
                    due = (sent + len(chunk)) / rate - (time.monotonic() - began)
                    if due > 0:
                        time.sleep(due)
                self._update(entry, sent + len(chunk), dropped=drop is not None and sent + len(chunk) >= limit)
                try:
                    self.wfile.write(chunk)
                except OSError:  # the client went away
                    self.close_connection = True
                    self._update(entry, sent)
                    return
                sent += len(chunk)
        if drop is not None:
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


class FileServer:
    """Serve ``directory`` on 127.0.0.1 (``port`` 0: a free one) from a background thread."""

    def __init__(self, directory: Path, *, port: int = 0, rate: int | None = None) -> None:
        self.directory = Path(directory)
        self._state = _State(rate=rate)
        handler = type("Handler", (_Handler,), {"root": self.directory, "state": self._state})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        """The URL of ``name`` (a path relative to the directory)."""
        return f"{self.base_url}/{urllib.parse.quote(name.lstrip('/'))}"

    def start(self) -> FileServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="httpserve", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # --- switches and the log -------------------------------------------------------------------------

    def drop_after(self, body_bytes: int, name: str | None = None) -> None:
        """Cut the connection of the next GET (of ``name``; of any file if None) after ``body_bytes``."""
        if body_bytes < 0:
            raise ValueError("body_bytes must be >= 0")
        with self._state.lock:
            self._state.drops.append(_Switch(self._path(name), body_bytes))

    def fail_next(self, status: int, name: str | None = None) -> None:
        """Answer the next request (of ``name``; of any file if None) with ``status`` instead of the file."""
        HTTPStatus(status)  # ValueError for a status that does not exist
        with self._state.lock:
            self._state.failures.append(_Switch(self._path(name), status))

    @property
    def rate(self) -> int | None:
        return self._state.rate

    @rate.setter
    def rate(self, bytes_per_second: int | None) -> None:
        self._state.rate = bytes_per_second

    @property
    def requests(self) -> list[Request]:
        """Every request answered so far, in order (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    def clear_log(self) -> None:
        with self._state.lock:
            self._state.requests.clear()

    @staticmethod
    def _path(name: str | None) -> str | None:
        return None if name is None else "/" + name.lstrip("/")


def serve(directory: Path | str, *, rate: int | None = None) -> FileServer:
    """A started server (use as a context manager, or call ``stop``)."""
    return FileServer(Path(directory), rate=rate).start()
