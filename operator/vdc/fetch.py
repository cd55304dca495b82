"""HTTP(S) downloads for appliances: streamed to a file, resumed where they stopped, size-limited.

Blocking (run it in a thread). A download that stops half way leaves its bytes in the file; the next
call asks for the rest (``Range: bytes=N-``) and starts over only when the server will not say where
the rest starts. No more than ``max_bytes`` is ever written, whatever the server claims.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

CHUNK = 1 << 20
Progress = Callable[[int, int | None], None]
"""Called with (bytes in the file so far, total bytes when known)."""


class FetchFailed(Exception):
    """The download cannot succeed as asked (not found, refused, too big): retrying will not help."""


class FetchInterrupted(Exception):
    """The download stopped (connection lost, server error): retrying resumes it."""


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def fetch(url: str, dest: Path, *, max_bytes: int, progress: Progress | None = None, timeout: float = 30) -> int:
    """Download ``url`` into ``dest`` (resuming what is there); the file's size when complete."""
    have = dest.stat().st_size if dest.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "vdc-operator", "Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the file is complete
            return have
        if 500 <= exc.code < 600 or exc.code in (408, 429):
            raise FetchInterrupted(f"{url}: HTTP {exc.code} {exc.reason}") from None
        raise FetchFailed(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise FetchInterrupted(f"{url}: {getattr(exc, 'reason', exc)}") from None
    with response:
        total: int | None
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != have:
                raise FetchInterrupted(f"{url}: the server resumed at another offset than {have}")
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"
        if total is not None and total > max_bytes:
            raise FetchFailed(f"{url} is {total} bytes, more than the {max_bytes} accepted (spec.maxSize)")
        with dest.open(mode) as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise FetchInterrupted(f"{url}: {exc}") from None
                if not chunk:
                    break
                if have + len(chunk) > max_bytes:
                    raise FetchFailed(f"{url} sends more than the {max_bytes} bytes accepted (spec.maxSize)")
                out.write(chunk)
                have += len(chunk)
                if progress is not None:
                    progress(have, total)
    if total is not None and have != total:
        raise FetchInterrupted(f"{url}: the connection closed after {have} of {total} bytes")
    return have
