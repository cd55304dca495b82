"""A Host's power through its Redfish service: the state read at every reconcile, the reset an admin asks
for by annotation (sent once), and HA's fencing ForceOff, each result in status and an Event."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import tempfile
from typing import Any

import kubernetes

from vdc.api.conditions import now_rfc3339
from vdc.api.host import POWER_ACTION_ANNOTATION, Host, HostPower, PowerAction
from vdc.kube.client import KubeWriter
from vdc.power.redfish import RESET_ACTIONS, PowerFailure, RedfishTarget, ResetAction, power_state, reset

log = logging.getLogger(__name__)


class HostPowerManager:
    """Redfish calls for the Host controller (blocking sushy calls in threads)."""

    def __init__(self, writer: KubeWriter) -> None:
        self.writer = writer
        self._ca_dir: str | None = None
        self._done: dict[str, tuple[str, PowerAction]] = {}
        """host -> (the annotation's value, the reset's result) until :meth:`finish` (after the status write)."""

    async def _redfish_target(self, name: str, host: Host) -> RedfishTarget:
        """The host's Redfish service with its credentials (raises PowerFailure naming what is wrong)."""
        assert host.spec.power_management is not None
        redfish = host.spec.power_management.redfish
        username = password = None
        verify: bool | str = redfish.verify_tls
        ref = redfish.credentials_secret_ref
        if ref is not None:
            try:
                data = await self.writer.secret_data(ref.namespace, ref.name)
            except kubernetes.client.ApiException as exc:
                raise PowerFailure(f"Secret {ref.namespace}/{ref.name}: {exc.reason}") from exc
            decoded = {k: base64.b64decode(v).decode() for k, v in data.items()}
            username, password = decoded.get("username"), decoded.get("password")
            if username is None or password is None:
                raise PowerFailure(f"Secret {ref.namespace}/{ref.name} needs keys username and password")
            if redfish.verify_tls and decoded.get("ca.crt"):
                verify = self._ca_file(name, decoded["ca.crt"])
        return RedfishTarget(redfish.endpoint, redfish.system_id, username, password, verify)

    def _ca_file(self, name: str, pem: str) -> str:
        if self._ca_dir is None:
            self._ca_dir = tempfile.mkdtemp(prefix="vdc-redfish-")
        path = os.path.join(self._ca_dir, f"{name}.crt")
        with open(path, "w") as f:
            f.write(pem)
        return path

    async def observe(self, name: str, host: Host, body: dict[str, Any]) -> HostPower | None:
        """The power state read now, after the reset an admin asked for by annotation (sent once)."""
        if host.spec.power_management is None:
            return None
        old = host.status.power if host.status else None
        last_action = old.last_action if old else None
        now = now_rfc3339()
        action = (body["metadata"].get("annotations") or {}).get(POWER_ACTION_ANNOTATION)
        try:
            target = await self._redfish_target(name, host)
        except PowerFailure as exc:
            if action is not None:
                failed = PowerAction(
                    action=action[:100], reason="Annotation", result="Failed", time=now or "", message=str(exc)
                )
                self._done[name] = (action, failed)
            return HostPower(state=None, checked_at=now, error=str(exc), last_action=last_action)
        if action is not None:
            if action in RESET_ACTIONS:
                last_action = await self._reset(target, action, "Annotation")
            else:
                last_action = PowerAction(action=action[:100], reason="Annotation", result="Failed", time=now or "",
                                          message=f"unknown action: use one of {', '.join(RESET_ACTIONS)}")  # fmt: skip
            self._done[name] = (action, last_action)
        try:
            state = await asyncio.to_thread(power_state, target)
        except PowerFailure as exc:
            return HostPower(state=None, checked_at=now, error=str(exc), last_action=last_action)
        return HostPower(state=state, checked_at=now, last_action=last_action)

    async def _reset(self, target: RedfishTarget, action: ResetAction, reason: str) -> PowerAction:
        now = now_rfc3339()
        try:
            await asyncio.to_thread(reset, target, action)
        except PowerFailure as exc:
            return PowerAction(action=action, reason=reason, result="Failed", time=now, message=str(exc))
        return PowerAction(action=action, reason=reason, result="Succeeded", time=now, message="accepted")

    async def finish(self, name: str, body: dict[str, Any]) -> None:
        """Once the status holding the reset's result is written: its Event, then the annotation removed (a
        client that waits for the annotation to go finds the result in status)."""
        done = self._done.pop(name, None)
        if done is not None:
            await self._power_action_done(body, *done)

    async def _power_action_done(self, body: dict[str, Any], token: str, done: PowerAction) -> None:
        ok = done.result == "Succeeded"
        message = f"Redfish {done.action}: {done.message}"
        await self.writer.event(Host.KIND, body, "PowerAction" if ok else "PowerActionFailed", message, warning=not ok)
        await self.writer.remove_annotation(Host.KIND, body, POWER_ACTION_ANNOTATION, token)

    async def send(
        self, name: str, host: Host, body: dict[str, Any], power: HostPower, action: ResetAction, reason: str
    ) -> HostPower:
        """Send one reset for ``reason`` (Standby: entering or leaving it); its result in the returned power
        status and an Event."""
        try:
            target = await self._redfish_target(name, host)
        except PowerFailure as exc:
            done = PowerAction(action=action, reason=reason, result="Failed", time=now_rfc3339(), message=str(exc))
        else:
            done = await self._reset(target, action, reason)
        ok = done.result == "Succeeded"
        message = f"{reason}: Redfish {action} {'sent' if ok else 'failed'}: {done.message}"
        log.info("host %s: %s", name, message)
        await self.writer.event(Host.KIND, body, "PowerAction" if ok else "PowerActionFailed", message, warning=not ok)
        return power.model_copy(update={"last_action": done})

    async def fence(self, name: str, host: Host, body: dict[str, Any], power: HostPower) -> HostPower:
        """Power the failed host off (Redfish ForceOff): the next look finds it Off, Fenced."""
        try:
            target = await self._redfish_target(name, host)
        except PowerFailure as exc:
            done = PowerAction(action="ForceOff", reason="Fencing", result="Failed",
                               time=now_rfc3339(), message=str(exc))  # fmt: skip
        else:
            done = await self._reset(target, "ForceOff", "Fencing")
        ok = done.result == "Succeeded"
        message = f"fencing: Redfish ForceOff {'sent' if ok else 'failed'}: {done.message}"
        log.warning("host %s: %s", name, message)
        await self.writer.event(Host.KIND, body, "HostFencing" if ok else "HostFencingFailed", message, warning=True)
        return power.model_copy(update={"last_action": done})
