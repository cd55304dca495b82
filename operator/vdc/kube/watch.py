"""A list-then-watch of one kind over aiohttp, for the kind with the most objects (VirtualMachines).

kopf processes every watch event through its causes, loggers, progress storage and handler registry;
for the VMs, where events come by the thousand, that was a third of the operator's CPU. This is the
informer's core and nothing more: LIST (paginated) once, then WATCH from the list's resourceVersion,
following bookmarks; a watch that ends is resumed from the last resourceVersion seen; one that is too
old (410 Gone) lists again and tells the difference as events, deleted objects included, so no change
is ever lost to a gap. Every event goes to one plain callback as ``(type, body)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import kubernetes

log = logging.getLogger(__name__)

WatchEventType = Literal["ADDED", "MODIFIED", "DELETED"]
OnEvent = Callable[[WatchEventType, dict[str, Any]], None]

PAGE = 500
SERVER_TIMEOUT_SECONDS = 300
"""The API server ends each watch after this long; it is resumed from the last resourceVersion."""
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits after a failed watch or list (the last repeats), reset once a watch delivers again."""

Key = tuple[str, str]


class StreamingHttp(Protocol):
    async def request(self, method: str, path: str, body: Any, *, content_type: str = ...) -> Any: ...

    def stream(self, path: str, params: dict[str, str], read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """The JSON objects of a streamed answer, one per line (ApiException on an HTTP error)."""
        ...


class Gone(Exception):
    """The resourceVersion to resume from is too old: list again."""


def _key(body: dict[str, Any]) -> Key:
    meta = body["metadata"]
    return meta.get("namespace") or "", meta["name"]


def relist_events(
    seen: dict[Key, dict[str, Any]], listed: Sequence[dict[str, Any]]
) -> list[tuple[WatchEventType, dict[str, Any]]]:
    """What a fresh listing says happened since ``seen`` (the last body delivered of each object in the
    same scope): every listed object as ADDED or MODIFIED, and DELETED for each one no longer listed."""
    keys = {_key(body) for body in listed}
    events: list[tuple[WatchEventType, dict[str, Any]]] = [
        ("MODIFIED" if _key(body) in seen else "ADDED", body) for body in listed
    ]
    events += [("DELETED", body) for key, body in seen.items() if key not in keys]
    return events


@dataclass
class _Scope:
    """One namespace's watch (or the cluster's: namespace None) and what it delivered."""

    namespace: str | None
    resource_version: str = ""
    seen: dict[Key, dict[str, Any]] = field(default_factory=dict)


class KindWatch:
    """List and watch ``plural`` of ``group/version`` in ``namespaces`` (none: cluster-wide), telling
    ``on_event`` of every change. :meth:`list_all` once, then :meth:`run` until cancelled."""

    def __init__(
        self, http: StreamingHttp, group: str, version: str, plural: str, namespaces: Sequence[str],
        on_event: OnEvent,
    ) -> None:  # fmt: skip
        self._http = http
        self._base = f"/apis/{group}/{version}"
        self._plural = plural
        self._on_event = on_event
        self._scopes = [_Scope(ns) for ns in namespaces] or [_Scope(None)]

    def _path(self, scope: _Scope) -> str:
        where = f"/namespaces/{scope.namespace}" if scope.namespace else ""
        return f"{self._base}{where}/{self._plural}"

    async def close(self) -> None:
        """Close the HTTP session, if the client has one (at the operator's stop)."""
        close = getattr(self._http, "close", None)
        if close is not None:
            await close()

    async def list_all(self) -> list[dict[str, Any]]:
        """Every object now (each scope paginated), remembered as delivered: :meth:`run` watches from here.
        The caller takes them in itself (they are not told to ``on_event``)."""
        bodies: list[dict[str, Any]] = []
        for scope in self._scopes:
            listed = await self._list(scope)
            scope.seen = {_key(body): body for body in listed}
            bodies += listed
        return bodies

    async def _list(self, scope: _Scope) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = f"?limit={PAGE}" + (f"&continue={token}" if token else "")
            page = await self._http.request("GET", self._path(scope) + query, None)
            kind = str(page.get("kind", "")).removesuffix("List")
            api_version = page.get("apiVersion")
            for item in page.get("items") or ():  # a LIST's items lack kind and apiVersion; a watch's have them
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)
                items.append(item)
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                scope.resource_version = str(meta.get("resourceVersion") or "")
                return items

    async def run(self) -> None:
        """Watch every scope until cancelled."""
        await asyncio.gather(*(self._run_scope(scope) for scope in self._scopes))

    async def _run_scope(self, scope: _Scope) -> None:
        failures = 0
        while True:
            try:
                if not scope.resource_version:
                    self._relist(scope, await self._list(scope))
                if await self._watch(scope):
                    failures = 0
            except asyncio.CancelledError:
                raise
            except Gone:
                log.info("%s watch: resourceVersion %s too old; listing again", self._plural, scope.resource_version)
                scope.resource_version = ""
            except Exception as exc:  # the API server restarting, a dropped connection: resume after a pause
                wait = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                failures += 1
                log.warning("%s watch failed (%s); resuming in %.0fs", self._plural, _first_line(exc), wait)
                await asyncio.sleep(wait)

    def _relist(self, scope: _Scope, listed: list[dict[str, Any]]) -> None:
        events = relist_events(scope.seen, listed)
        scope.seen = {_key(body): body for body in listed}
        for kind, body in events:
            self._on_event(kind, body)

    async def _watch(self, scope: _Scope) -> bool:
        """One watch request until the server ends it; whether it delivered anything. Raises Gone."""
        params = {
            "watch": "true", "allowWatchBookmarks": "true", "resourceVersion": scope.resource_version,
            "timeoutSeconds": str(SERVER_TIMEOUT_SECONDS),
        }  # fmt: skip
        delivered = False
        began = asyncio.get_running_loop().time()
        try:
            async for event in self._http.stream(self._path(scope), params, SERVER_TIMEOUT_SECONDS + 30):
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error: {body.get('message') or body}")
                version = (body.get("metadata") or {}).get("resourceVersion")
                if version:
                    scope.resource_version = str(version)
                if kind == "BOOKMARK":
                    continue
                if kind not in ("ADDED", "MODIFIED", "DELETED"):
                    continue
                delivered = True
                key = _key(body)
                if kind == "DELETED":
                    scope.seen.pop(key, None)
                else:
                    scope.seen[key] = body
                self._on_event(kind, body)
        except kubernetes.client.ApiException as exc:
            if exc.status == 410:
                raise Gone() from exc
            raise
        if not delivered and asyncio.get_running_loop().time() - began < 1.0:
            await asyncio.sleep(1.0)  # ended at once with nothing: not a tight loop against a closing proxy
        return delivered


def _first_line(exc: BaseException) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
