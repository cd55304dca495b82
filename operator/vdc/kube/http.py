"""Requests to the API server on the event loop (aiohttp), for the writes made per object at scale.

The kubernetes client is synchronous: each call takes a thread, validates its arguments, serializes
through its models and parses the answer into them. For the status patches and Events written for
every VM that was most of the operator's own CPU at 1,000 VMs; here a write is one aiohttp request
with a JSON body. Connection and credentials come from the kubernetes client's configuration (the
same kubeconfig or in-cluster service account, its token re-read as that client does), so both
clients act as the same identity. Errors come out as the kubernetes client's ``ApiException``.

JSON goes through orjson: every watch event and every write's answer is a whole object to parse, and
the standard library's parser was the largest single entry in a profile of the operator at 1,000 VMs.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any, Protocol, cast

import aiohttp
import kubernetes
import orjson

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
TIMEOUT_SECONDS = 60.0


class Http(Protocol):
    async def request(self, method: str, path: str, body: Any, *, content_type: str = "application/json") -> Any:
        """Send ``body`` as JSON to ``path`` (from /api or /apis on); the answer parsed, or ApiException."""
        ...


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def to_json(body: Any) -> bytes:
    """``body`` as compact JSON (dates as ISO 8601, as the kubernetes client sends them)."""
    return orjson.dumps(body, default=_json_default, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME)


async def json_lines(content: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The JSON object on each line of a streamed answer, however the chunks fall (no line-length limit)."""
    buffer = bytearray()
    async for chunk in content.iter_any():
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end]).strip()
            start = end + 1
            if line:
                yield orjson.loads(line)
        del buffer[:start]
    if bytes(buffer).strip():
        yield orjson.loads(bytes(buffer))


class ApiHttp:
    """An aiohttp session to the API server that ``configuration`` names, opened on first use (per loop)."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self._config = configuration
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        cfg = self._config
        if not cfg.host.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "Accept": "application/json", "User-Agent": "vdc-operator"}
        settings = cast(dict[str, dict[str, Any]], self._config.auth_settings())
        for setting in settings.values():  # a bearer token, re-read when it expires
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"])] = str(setting["value"])
        return headers

    def _session_for_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=64)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                json_serialize=lambda value: to_json(value).decode(),
            )
            self._loop = loop
        return self._session

    async def request(self, method: str, path: str, body: Any, *, content_type: str = "application/json") -> Any:
        session = self._session_for_loop()
        data = None if body is None else to_json(body)
        url = self._config.host.rstrip("/") + path  # the host may have a path of its own (a proxy's)
        async with session.request(method, url, data=data, headers=self._headers(content_type)) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                exc = kubernetes.client.ApiException(status=resp.status, reason=resp.reason)
                exc.body = raw.decode(errors="replace")
                raise exc
            return orjson.loads(raw) if raw else None

    async def stream(self, path: str, params: dict[str, str], read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """The JSON objects of a streamed answer (a watch), one per line, until the server ends it."""
        session = self._session_for_loop()
        url = self._config.host.rstrip("/") + path
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT_SECONDS, sock_read=read_timeout)
        async with session.get(url, params=params, headers=self._headers("application/json"), timeout=timeout) as resp:
            if resp.status >= 400:
                exc = kubernetes.client.ApiException(status=resp.status, reason=resp.reason)
                exc.body = await resp.text()
                raise exc
            async for event in json_lines(resp.content):
                yield event

    async def close(self) -> None:
        if self._session is not None and not self._session.closed and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None
