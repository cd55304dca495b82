"""Writes to the API server: status patches (only when something changed) and Events.

Status patches and Events, written for every object, go over aiohttp on the event loop
(``vdc.kube.http``); the rarer calls use the synchronous kubernetes client, each in a thread so the
event loop never blocks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import kubernetes

from vdc.api.meta import GROUP, VERSION, KindInfo
from vdc.instruments import API_WRITES, child
from vdc.kube.http import JSON_PATCH, MERGE_PATCH, ApiHttp, Http
from vdc.kube.patch import merge_patch

log = logging.getLogger(__name__)

COMPONENT = "vdc-operator"


def load_config() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


@dataclasses.dataclass(frozen=True)
class StatusWritten:
    """A status patch the API server took: the merge patch sent, and the object's resourceVersion after it
    (None if the answer did not say)."""

    patch: dict[str, Any]
    resource_version: str | None


class KubeWriter:
    """Status patches and Events for our kinds."""

    def __init__(self, api_client: kubernetes.client.ApiClient | None = None, http: Http | None = None) -> None:
        self._client = api_client or load_config()
        self._custom = kubernetes.client.CustomObjectsApi(self._client)
        self._core = kubernetes.client.CoreV1Api(self._client)
        self._http: Http = http or ApiHttp(self._client.configuration)
        self._host = socket.gethostname()

    async def close(self) -> None:
        """Close the event loop's connections (at the operator's stop)."""
        close = getattr(self._http, "close", None)
        if close is not None:
            await close()

    @property
    def api_client(self) -> kubernetes.client.ApiClient:
        return self._client

    async def patch_status(
        self, info: KindInfo, body: dict[str, Any], status: dict[str, Any], *, unchanged: bool = False
    ) -> dict[str, Any] | None:
        """Patch ``status`` if it differs from the body's; the merge patch sent (for the object cache's
        ``note_status``), None when nothing was written. ``unchanged``: only if the object is still at the
        body's resourceVersion (else ApiException 409)."""
        written = await self.write_status(info, body, status, unchanged=unchanged)
        return None if written is None else written.patch

    async def write_status(
        self, info: KindInfo, body: dict[str, Any], status: dict[str, Any], *, unchanged: bool = False
    ) -> StatusWritten | None:
        """:meth:`patch_status`, with the resourceVersion the object has after the patch (what its watch
        event will carry)."""
        patch: dict[str, Any] = merge_patch(body.get("status") or {}, status)
        if not patch:
            return None
        meta = body["metadata"]
        payload: dict[str, Any] = {"status": patch}
        if unchanged:
            payload["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        scope = f"/namespaces/{meta['namespace']}" if info.scope == "Namespaced" else ""
        path = f"/apis/{GROUP}/{VERSION}{scope}/{info.plural}/{meta['name']}/status"
        answer = await self._http.request("PATCH", path, payload, content_type=MERGE_PATCH)
        child(API_WRITES, info.kind, "patch-status").inc()
        return StatusWritten(patch, _resource_version(answer))

    async def read(self, info: KindInfo, body: dict[str, Any]) -> dict[str, Any] | None:
        """The object as the server has it now (None: gone)."""
        meta = body["metadata"]
        try:
            if info.scope == "Namespaced":
                found = await asyncio.to_thread(
                    self._custom.get_namespaced_custom_object,
                    GROUP, VERSION, meta["namespace"], info.plural, meta["name"],
                )  # fmt: skip
            else:
                found = await asyncio.to_thread(
                    self._custom.get_cluster_custom_object, GROUP, VERSION, info.plural, meta["name"]
                )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], found)

    async def create(self, info: KindInfo, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object of ``info``'s kind."""
        if info.scope == "Namespaced":
            made = await asyncio.to_thread(
                self._custom.create_namespaced_custom_object, GROUP, VERSION, namespace, info.plural, body
            )
        else:
            made = await asyncio.to_thread(self._custom.create_cluster_custom_object, GROUP, VERSION, info.plural, body)
        child(API_WRITES, info.kind, "create").inc()
        return cast(dict[str, Any], made)

    async def delete(self, info: KindInfo, namespace: str, name: str) -> bool:
        """Delete an object; False when it was gone already."""
        try:
            if info.scope == "Namespaced":
                await asyncio.to_thread(
                    self._custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, info.plural, name
                )
            else:
                await asyncio.to_thread(self._custom.delete_cluster_custom_object, GROUP, VERSION, info.plural, name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        child(API_WRITES, info.kind, "delete").inc()
        return True

    async def add_finalizer(self, info: KindInfo, body: dict[str, Any], finalizer: str) -> dict[str, Any] | None:
        """Add ``finalizer`` to a namespaced object unless it changed since ``body`` (a JSON patch that tests
        its resourceVersion): the object as it is now with the finalizer, or None when it had
        changed and still lacks it."""
        meta = body["metadata"]
        test = {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
        add = (
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}
            if meta.get("finalizers")
            else {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}
        )
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/{info.plural}/{meta['name']}"
        try:
            patched = await self._http.request("PATCH", path, [test, add], content_type=JSON_PATCH)
        except kubernetes.client.ApiException as exc:
            if exc.status not in (409, 422):
                raise
            # Changed meanwhile (a user's edit, our own status write): as it is now.
            current = cast(dict[str, Any], await self._http.request("GET", path, None))
            return current if finalizer in (current["metadata"].get("finalizers") or ()) else None
        child(API_WRITES, info.kind, "patch").inc()
        return cast(dict[str, Any], patched)

    async def remove_finalizer(self, info: KindInfo, body: dict[str, Any], finalizer: str) -> bool:
        """Remove ``finalizer`` from a namespaced object: a JSON patch that tests the finalizers are still
        the body's (another controller may be removing its own). False when they were not (look again);
        True when it is gone, or the object is."""
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or ())
        if finalizer not in finalizers:
            return True
        patch = [
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in finalizers if f != finalizer]},
        ]
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/{info.plural}/{meta['name']}"
        try:
            await self._http.request("PATCH", path, patch, content_type=JSON_PATCH)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return True
            if exc.status in (409, 422):
                return False
            raise
        child(API_WRITES, info.kind, "patch").inc()
        return True

    async def patch_spec(self, info: KindInfo, body: dict[str, Any], spec: dict[str, Any]) -> None:
        """Merge-patch a namespaced object's ``spec`` (defaults the operator fills in), conditional on the
        resourceVersion it was computed from: a concurrent change makes it fail (ApiException 409)."""
        meta = body["metadata"]
        payload = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "spec": spec}
        await asyncio.to_thread(
            self._custom.patch_namespaced_custom_object,
            GROUP, VERSION, meta["namespace"], info.plural, meta["name"], payload,
        )  # fmt: skip
        child(API_WRITES, info.kind, "patch").inc()

    async def set_annotation(self, info: KindInfo, body: dict[str, Any], key: str, value: str) -> None:
        """Set annotation ``key`` of a cluster-scoped object to ``value`` (a merge patch)."""
        patch = {"metadata": {"annotations": {key: value}}}
        await asyncio.to_thread(
            self._custom.patch_cluster_custom_object, GROUP, VERSION, info.plural, body["metadata"]["name"], patch
        )
        child(API_WRITES, info.kind, "patch").inc()

    async def remove_annotation(self, info: KindInfo, body: dict[str, Any], key: str, value: str) -> bool:
        """Remove annotation ``key`` from a cluster-scoped object if it still has ``value`` (a JSON patch
        whose ``test`` fails when someone changed it meanwhile). False when it did not (changed, gone)."""
        pointer = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        patch = [{"op": "test", "path": pointer, "value": value}, {"op": "remove", "path": pointer}]
        try:
            await asyncio.to_thread(
                self._custom.patch_cluster_custom_object, GROUP, VERSION, info.plural, body["metadata"]["name"], patch,
                _content_type="application/json-patch+json",
            )  # fmt: skip
        except kubernetes.client.ApiException as exc:
            if exc.status in (404, 409, 422):
                log.info("annotation %s of %s %s left: %s", key, info.kind, body["metadata"]["name"], exc.reason)
                return False
            raise
        child(API_WRITES, info.kind, "patch").inc()
        return True

    async def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's base64 ``data`` (raises kubernetes ApiException, e.g. 404)."""
        secret = await asyncio.to_thread(self._core.read_namespaced_secret, name, namespace)
        return {k: str(v) for k, v in (secret.data or {}).items()}

    async def configmap_data(self, namespace: str, name: str) -> dict[str, str]:
        """A ConfigMap's ``data`` (raises kubernetes ApiException, e.g. 404)."""
        configmap = await asyncio.to_thread(self._core.read_namespaced_config_map, name, namespace)
        return {k: str(v) for k, v in (configmap.data or {}).items()}

    async def event(
        self, info: KindInfo, body: dict[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Post a Kubernetes Event about the object; failures are logged, never raised."""
        meta = body["metadata"]
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": info.kind,
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v is not None},
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT, "host": self._host},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._host,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._http.request("POST", f"/api/v1/namespaces/{namespace}/events", event)
            child(API_WRITES, info.kind, "event").inc()
        except kubernetes.client.ApiException as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, meta["name"], exc.reason)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, meta["name"], exc)


def _resource_version(answer: object) -> str | None:
    """The resourceVersion in an API server's answer (None: an answer without one)."""
    version = (answer.get("metadata") or {}).get("resourceVersion") if isinstance(answer, dict) else None
    return None if version is None else str(version)
