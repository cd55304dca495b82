"""LIST every object of the kinds the operator watches, to prime the object caches at start-up.

kopf delivers a watch's initial listing one event at a time, and work would start on the first of
them. Deciding on a partial view is what loses state after a crash: a switch's IPAM that sees only some
of its VMs hands the unseen VMs' addresses out again. So the caches are filled from one LIST per kind
(paginated) before any work queue starts, the way controller-runtime waits for its informers to sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import kubernetes
import urllib3

from vdc.api.meta import GROUP, VERSION

log = logging.getLogger(__name__)

PAGE = 500
"""Objects per LIST page: bounded responses at 10,000 VMs."""

RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0)
"""Waits between attempts while the API server is unreachable at start-up (the last one repeats)."""


def _pages(call: Any, *args: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = call(*args, limit=PAGE, _continue=token) if token else call(*args, limit=PAGE)
        items.extend(page["items"])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


def list_custom(api: kubernetes.client.ApiClient, plural: str, namespaces: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every object of our kind ``plural`` (in ``namespaces`` only, when given, as the operator watches)."""
    custom = kubernetes.client.CustomObjectsApi(api)
    if not namespaces:
        return _pages(custom.list_cluster_custom_object, GROUP, VERSION, plural)
    items: list[dict[str, Any]] = []
    for namespace in namespaces:
        items.extend(_pages(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural))
    return items


def list_namespaces(api: kubernetes.client.ApiClient) -> list[dict[str, Any]]:
    """Every Namespace, as plain dicts shaped like the watch's bodies."""
    core = kubernetes.client.CoreV1Api(api)
    bodies: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = core.list_namespace(limit=PAGE, _continue=token) if token else core.list_namespace(limit=PAGE)
        for ns in page.items:
            bodies.append({"apiVersion": "v1", "kind": "Namespace", **api.sanitize_for_serialization(ns)})
        token = page.metadata._continue if page.metadata else None
        if not token:
            return bodies


async def with_retries(what: str, call: Any, *args: Any) -> list[dict[str, Any]]:
    """``call(*args)`` in a thread, retried while the API server cannot answer (it may be starting too)."""
    return await awaited_with_retries(what, lambda: asyncio.to_thread(call, *args))


async def awaited_with_retries(what: str, call: Callable[[], Awaitable[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """``await call()``, retried while the API server cannot answer (it may be starting too)."""
    attempt = 0
    while True:
        try:
            return await call()
        except (kubernetes.client.ApiException, OSError, urllib3.exceptions.HTTPError, aiohttp.ClientError) as exc:
            if isinstance(exc, kubernetes.client.ApiException) and exc.status in (401, 403):
                raise  # not allowed: retrying will not help, and the operator must not run blind
            wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
            attempt += 1
            log.warning("listing %s failed (%s); retrying in %.0fs", what, str(exc).splitlines()[0], wait)
            await asyncio.sleep(wait)
